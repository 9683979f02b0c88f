//! Answers in the shapes of Intuit's own API reference examples (kept under `tests/fixtures/`),
//! read by the helpers the client reads live answers with. The sandbox is written by the same
//! hands as the client, so a misread field would be mirrored in both and pass every sandbox
//! test; these payloads follow Intuit's documentation, not the sandbox.

use rollcall_core::InvoiceStatus;
use rust_decimal::Decimal;
use serde_json::Value;

use crate::model::{
    FaultBody, STALE_OBJECT, decimal, page_is_full, rows, sales_line, status, text,
};

fn fixture(name: &str) -> Value {
    let raw = match name {
        "read-invoice" => include_str!("../tests/fixtures/read-invoice.json"),
        "query-invoices" => include_str!("../tests/fixtures/query-invoices.json"),
        "query-empty" => include_str!("../tests/fixtures/query-empty.json"),
        "query-count" => include_str!("../tests/fixtures/query-count.json"),
        "fault-stale" => include_str!("../tests/fixtures/fault-stale.json"),
        "fault-auth" => include_str!("../tests/fixtures/fault-auth.json"),
        other => panic!("no fixture {other}"),
    };
    serde_json::from_str(raw).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn money(text: &str) -> Decimal {
    text.parse().expect("a decimal")
}

#[test]
fn a_read_invoice_is_a_draft_with_one_item_line() {
    let answer = fixture("read-invoice");
    let invoice = &answer["Invoice"];
    assert_eq!(status(invoice), InvoiceStatus::Draft);
    let lines: Vec<_> = invoice["Line"]
        .as_array()
        .expect("Line")
        .iter()
        .filter_map(sales_line)
        .collect();
    // The subtotal line is QuickBooks' own, never an item line; Qty and UnitPrice are absent
    // in Intuit's example, so the quantity is one and the price unknown (zero).
    assert_eq!(
        lines,
        [(
            "Services".to_owned(),
            String::new(),
            Decimal::ONE,
            Decimal::ZERO
        )]
    );
    assert_eq!(decimal(invoice.get("TotalAmt")), Some(money("150")));
    assert_eq!(text(invoice, "SyncToken"), Some("0"));
}

#[test]
fn a_query_page_reads_rows_money_and_final_invoices() {
    let answer = fixture("query-invoices");
    let invoices = rows(&answer, "Invoice");
    assert_eq!(invoices.len(), 2);
    // Paid in full (balance 0), and emailed: both are final to rollcall.
    assert_eq!(status(&invoices[0]), InvoiceStatus::Final("Paid".into()));
    assert_eq!(
        status(&invoices[1]),
        InvoiceStatus::Final("EmailSent".into())
    );
    let pump = invoices[1]["Line"]
        .as_array()
        .expect("Line")
        .iter()
        .filter_map(sales_line)
        .find(|l| l.0 == "Pump")
        .expect("the pump line");
    assert_eq!((pump.2, pump.3), (Decimal::ONE, money("12.75")));
    assert_eq!(decimal(invoices[1].get("TotalAmt")), Some(money("310.77")));
    // Two rows asked for, two came from position 1: another page may follow.
    assert_eq!(page_is_full(&answer, 1, 2, 2), Ok(true));
    assert_eq!(page_is_full(&answer, 1, 2, 1000), Ok(false));
    assert!(
        page_is_full(&answer, 3, 2, 2).is_err(),
        "the page starts elsewhere"
    );
    assert!(
        page_is_full(&answer, 1, 1, 2).is_err(),
        "the count disagrees"
    );
}

#[test]
fn an_empty_answer_has_no_rows_and_ends_the_list() {
    let empty = fixture("query-empty");
    assert!(rows(&empty, "Invoice").is_empty());
    assert_eq!(page_is_full(&empty, 1, 0, 1000), Ok(false));
    assert_eq!(fixture("query-count")["QueryResponse"]["totalCount"], 5);
    assert!(page_is_full(&serde_json::json!({ "time": "x" }), 1, 0, 1000).is_err());
}

#[test]
fn faults_parse_in_both_spellings() {
    let stale: FaultBody = serde_json::from_value(fixture("fault-stale")).expect("Fault");
    assert_eq!(stale.fault.kind, "ValidationFault");
    assert_eq!(stale.fault.errors[0].code, STALE_OBJECT);
    assert!(
        stale.fault.errors[0]
            .detail
            .starts_with("Stale Object Error")
    );
    let auth: FaultBody = serde_json::from_value(fixture("fault-auth")).expect("fault");
    assert_eq!(auth.fault.kind, "AUTHENTICATION");
    assert_eq!(auth.fault.errors[0].code, "3200");
    assert!(
        auth.fault.errors[0]
            .message
            .contains("AuthenticationFailed")
    );
}
