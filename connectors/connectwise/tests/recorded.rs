//! Objects in the shapes ConnectWise's REST API documentation shows (kept under
//! `tests/fixtures/`: every field a real site sends, `_info` links, nested references with their
//! own `_info`), read by the model types the client and the sandbox share. Because both sides
//! share these types, a serde mistake would be mirrored in both and pass every sandbox test;
//! these payloads carry fields the sandbox never writes.

use rollcall_connectwise::client::describe_error;
use rollcall_connectwise::model::{
    Addition, Agreement, AgreementStatus, BillCustomer, CatalogItem, CommunicationType, Company,
    CompanyInfo, Contact, ErrorResponse,
};
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;

fn fixture<T: DeserializeOwned>(name: &str) -> T {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{path}:{}:{}: {e}", e.line(), e.column()))
}

fn money(text: &str) -> Decimal {
    text.parse().expect("a decimal")
}

#[test]
fn a_company_with_every_field_a_site_sends() {
    let company: Company = fixture("company");
    assert_eq!(
        (company.id, company.identifier.as_str()),
        (250, "XYZTestCompany")
    );
    assert_eq!(
        company.status.and_then(|s| s.name).as_deref(),
        Some("Active")
    );
    assert!(!company.deleted_flag);
    let info = company.info.expect("_info");
    assert_eq!(
        info.get("lastUpdated").map(String::as_str),
        Some("2023-07-13T18:44:26Z")
    );
}

#[test]
fn a_contacts_email_is_a_communication_item() {
    let contact: Contact = fixture("contact");
    assert_eq!(contact.company.as_ref().map(|c| c.id), Some(250));
    let email = contact
        .communication_items
        .iter()
        .find(|c| c.communication_type == Some(CommunicationType::Email))
        .expect("an email item");
    assert_eq!(email.value.as_deref(), Some("jane.doe@xyztest.com"));
    assert_eq!(
        email.kind.as_ref().and_then(|k| k.name.as_deref()),
        Some("Email")
    );
    assert!(email.default_flag);
}

#[test]
fn an_agreement_and_its_addition_read_exact_decimals() {
    let agreement: Agreement = fixture("agreement");
    assert_eq!(agreement.agreement_status, Some(AgreementStatus::Active));
    assert!(agreement.no_ending_date_flag && !agreement.cancelled_flag);
    let addition: Addition = fixture("addition");
    assert_eq!(addition.quantity, Some(money("17.50")));
    assert_eq!(addition.unit_price, Some(money("22.1")));
    assert_eq!(addition.less_included, Some(Decimal::ZERO));
    assert_eq!(addition.bill_customer, Some(BillCustomer::Billable));
    assert_eq!(addition.agreement_id, Some(57));
    assert_eq!(
        addition.product.and_then(|p| p.identifier).as_deref(),
        Some("M365-BP")
    );
    // What the addition bills, exactly: 17.5 × 22.1.
    assert_eq!(
        addition
            .quantity
            .zip(addition.unit_price)
            .map(|(q, p)| q * p),
        Some(money("386.75"))
    );
    let product: CatalogItem = fixture("catalog-item");
    assert_eq!(
        (product.price, product.cost),
        (Some(money("22.1")), Some(money("19.8")))
    );
}

#[test]
fn the_company_info_names_the_codebase() {
    let info: CompanyInfo = fixture("company-info");
    assert_eq!(info.codebase, "v2025_1/");
    assert!(info.is_cloud);
}

#[test]
fn a_validation_error_names_the_field() {
    let error: ErrorResponse = fixture("error-invalid");
    assert_eq!(error.code, "InvalidObject");
    assert_eq!(error.errors[0].field, "product");
    let body = std::fs::read(format!(
        "{}/tests/fixtures/error-invalid.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture");
    let said = describe_error(reqwest::StatusCode::BAD_REQUEST, &body);
    assert!(said.contains("The product field is required"), "{said}");
}
