//! Xero's own example payloads (the examples of its published OpenAPI description, kept under
//! `tests/fixtures/`), read by the same helpers the client reads live answers with. The sandbox
//! is written by the same hands as the client, so a misread field would be mirrored in both and
//! pass every sandbox test; these payloads were written by Xero.

use chrono::NaiveDate;
use rollcall_core::InvoiceStatus;
use rust_decimal::Decimal;
use serde_json::Value;

use crate::model::{Pagination, date, decimal, describe_error, more_pages, status, text};

fn fixture(name: &str) -> Value {
    let raw = match name {
        "get-contacts" => include_str!("../tests/fixtures/get-contacts.json"),
        "get-invoices" => include_str!("../tests/fixtures/get-invoices.json"),
        "get-items" => include_str!("../tests/fixtures/get-items.json"),
        "put-invoices" => include_str!("../tests/fixtures/put-invoices.json"),
        "put-contacts" => include_str!("../tests/fixtures/put-contacts.json"),
        "error-400" => include_str!("../tests/fixtures/error-400.json"),
        other => panic!("no fixture {other}"),
    };
    serde_json::from_str(raw).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("a real day")
}

#[test]
fn a_contacts_page_carries_pagination_that_ends_the_list() {
    let page = fixture("get-contacts");
    let meta: Pagination = serde_json::from_value(page["pagination"].clone()).expect("pagination");
    assert_eq!(
        meta,
        Pagination {
            page: 1,
            page_size: 100,
            page_count: 1,
            item_count: 2
        }
    );
    let contacts = page["Contacts"].as_array().expect("Contacts");
    assert_eq!(contacts.len(), 2);
    // The example's page is short and the last: pagination, not the count, says so.
    assert_eq!(more_pages(&page, 1, contacts.len(), 100), Ok(false));
    assert_eq!(more_pages(&page, 1, contacts.len(), 2), Ok(false));
    assert_eq!(text(&contacts[0], "Name"), Some("Katherine Warren"));
    assert_eq!(
        text(&contacts[0], "EmailAddress"),
        Some("kat.warren@clampett.com")
    );
    assert!(date(text(&contacts[0], "UpdatedDateUTC")).is_some());
}

#[test]
fn invoices_read_dates_statuses_and_money_exactly() {
    let page = fixture("get-invoices");
    let invoices = page["Invoices"].as_array().expect("Invoices");
    assert_eq!(more_pages(&page, 1, invoices.len(), 100), Ok(false));
    for invoice in invoices {
        // The Microsoft JSON date and its ISO twin are the same day.
        assert_eq!(
            date(text(invoice, "Date")),
            date(text(invoice, "DateString")),
            "{invoice}"
        );
        assert_eq!(
            date(text(invoice, "DueDate")),
            date(text(invoice, "DueDateString"))
        );
        // None of the example's invoices is a draft: every one is final to rollcall.
        assert!(
            matches!(status(invoice), InvoiceStatus::Final(_)),
            "{invoice}"
        );
    }
    let first = &invoices[0];
    assert_eq!(date(text(first, "Date")), Some(day(2018, 10, 20)));
    assert_eq!(status(first), InvoiceStatus::Final("VOIDED".into()));
    let totals: Vec<Decimal> = invoices
        .iter()
        .map(|i| decimal(i.get("Total")).expect("Total"))
        .collect();
    assert_eq!(
        totals,
        ["40", "46", "115"].map(|t| t.parse::<Decimal>().expect("d"))
    );
}

#[test]
fn a_created_invoice_line_reads_back_exactly() {
    let answer = fixture("put-invoices");
    let invoice = &answer["Invoices"][0];
    assert_eq!(date(text(invoice, "Date")), Some(day(2019, 3, 11)));
    let line = &invoice["LineItems"][0];
    let (qty, unit, amount) = (
        decimal(line.get("Quantity")),
        decimal(line.get("UnitAmount")),
        decimal(line.get("LineAmount")),
    );
    assert_eq!(
        (qty, unit, amount),
        (
            Some(Decimal::TWO),
            Some(Decimal::from(20)),
            Some(Decimal::from(40))
        )
    );
    // A line without an item code is a person's line, never one rollcall manages.
    assert_eq!(crate::model::line_item(line), None);
}

#[test]
fn items_and_contacts_as_created() {
    let items = fixture("get-items");
    for item in items["Items"].as_array().expect("Items") {
        assert!(text(item, "Code").is_some(), "{item}");
    }
    // Items are not paged: no pagination, and a short list ends.
    assert_eq!(more_pages(&items, 1, 1, 100), Ok(false));
    let contacts = fixture("put-contacts");
    assert!(text(&contacts["Contacts"][0], "ContactID").is_some());
}

#[test]
fn a_validation_error_names_what_to_fix() {
    let body = serde_json::to_vec(&fixture("error-400")).expect("bytes");
    let said = describe_error(reqwest::StatusCode::BAD_REQUEST, &body);
    assert!(said.contains("A validation exception occurred"), "{said}");
    assert!(
        said.contains("The contact name Buzz Lightyear is already assigned to another contact"),
        "{said}"
    );
}
