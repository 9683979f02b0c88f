//! ConnectWise Manage's wire format: the JSON objects of REST API 3.0, as ConnectWise names them.
//!
//! The client and the sandbox both speak these types, so a field the client reads is a field the
//! sandbox writes, and this is the only file where ConnectWise's field names appear.
//!
//! Most fields are optional on purpose. ConnectWise omits nulls and fields cut by `fields=`, and
//! a create body carries only what the caller sets; the sandbox, not serde, decides which fields
//! are required and answers with ConnectWise's validation error naming the field. An `id` of 0
//! means "not assigned yet" (ConnectWise ids start at 1) and is never sent.
//!
//! Money and quantities are [`Decimal`] and travel as JSON numbers, exactly (serde_json's
//! `arbitrary_precision` is on), never through `f64`.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The `_info` map every object carries (`lastUpdated`, `updatedBy`, `dateEntered`, …). It is a
/// map of strings in ConnectWise's description, not an object with fixed fields.
pub type Info = BTreeMap<String, String>;

pub(crate) fn is_unset(id: &i64) -> bool {
    *id == 0
}

/// A reference to another object: `company`, `product`, `type`, `status`, `billingCycle`.
/// ConnectWise resolves a reference by `id`, or by `identifier`/`name` where the object has one,
/// and fills in the rest when it answers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reference {
    #[serde(default, skip_serializing_if = "is_unset")]
    pub id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Reference {
    pub fn id(id: i64) -> Self {
        Reference {
            id,
            ..Reference::default()
        }
    }

    pub fn named(name: impl Into<String>) -> Self {
        Reference {
            name: Some(name.into()),
            ..Reference::default()
        }
    }
}

/// `company/companies`: a client of the MSP. `identifier` is the short unique code
/// (`ACME`) pipelines name a client by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Company {
    #[serde(default, skip_serializing_if = "is_unset")]
    pub id: i64,
    pub identifier: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Reference>,
    #[serde(default)]
    pub deleted_flag: bool,
    #[serde(rename = "_info", default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Info>,
}

/// `company/contacts`: a person at a client. Email addresses and phone numbers are not fields of
/// the contact but entries of `communicationItems`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    #[serde(default, skip_serializing_if = "is_unset")]
    pub id: i64,
    #[serde(default)]
    pub first_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<Reference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default)]
    pub inactive_flag: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communication_items: Vec<CommunicationItem>,
    /// Tags an integration puts on the contacts it makes; people do not see or edit them in
    /// ConnectWise's screens, so rollcall's mark ([`MARK`]) lives here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub integrator_tags: Vec<String>,
    #[serde(rename = "_info", default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Info>,
}

/// One email address, phone or fax number of a contact. `type` is the site's communication type
/// (`Email`, `Direct`, `Mobile`, …); `communicationType` is its category.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommunicationItem {
    #[serde(default, skip_serializing_if = "is_unset")]
    pub id: i64,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Reference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<String>,
    #[serde(default)]
    pub default_flag: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub communication_type: Option<CommunicationType>,
}

/// The category of a communication item (ConnectWise's enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommunicationType {
    Email,
    Fax,
    Phone,
}

/// The state of an agreement, and of each addition on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgreementStatus {
    Active,
    Cancelled,
    Expired,
    Inactive,
}

/// `finance/agreements`: the contract a client is billed under; seats are its additions.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Agreement {
    #[serde(default, skip_serializing_if = "is_unset")]
    pub id: i64,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Reference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<Reference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement_status: Option<AgreementStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_date: Option<String>,
    #[serde(default)]
    pub no_ending_date_flag: bool,
    #[serde(default)]
    pub cancelled_flag: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_cycle: Option<Reference>,
    #[serde(rename = "_info", default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Info>,
}

/// Whether an addition is invoiced (ConnectWise's enum; required on every addition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BillCustomer {
    Billable,
    DoNotBill,
    NoCharge,
}

/// `finance/agreements/{id}/additions`: one billed product on an agreement, with a quantity.
/// A cancelled addition keeps existing with a `cancelledDate`; it is never deleted.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Addition {
    #[serde(default, skip_serializing_if = "is_unset")]
    pub id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<Reference>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::arbitrary_precision_option"
    )]
    pub quantity: Option<Decimal>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::arbitrary_precision_option"
    )]
    pub less_included: Option<Decimal>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::arbitrary_precision_option"
    )]
    pub unit_price: Option<Decimal>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::arbitrary_precision_option"
    )]
    pub unit_cost: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bill_customer: Option<BillCustomer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taxable_flag: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement_status: Option<AgreementStatus>,
    #[serde(rename = "_info", default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Info>,
}

/// `procurement/catalog`: a product the MSP sells, found by its `identifier` (`M365-BP`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CatalogItem {
    #[serde(default, skip_serializing_if = "is_unset")]
    pub id: i64,
    pub identifier: String,
    #[serde(default)]
    pub description: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::arbitrary_precision_option"
    )]
    pub price: Option<Decimal>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::arbitrary_precision_option"
    )]
    pub cost: Option<Decimal>,
    #[serde(default)]
    pub inactive_flag: bool,
    #[serde(default)]
    pub taxable_flag: bool,
    #[serde(rename = "_info", default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Info>,
}

/// One operation of a PATCH body. ConnectWise's `path` has no leading slash (`"quantity"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchOperation {
    pub op: String,
    pub path: String,
    #[serde(default)]
    pub value: serde_json::Value,
}

impl PatchOperation {
    pub fn replace(path: &str, value: serde_json::Value) -> Self {
        PatchOperation {
            op: "replace".to_owned(),
            path: path.to_owned(),
            value,
        }
    }
}

/// The body of every error ConnectWise answers (`ErrorResponseMessage`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ErrorResponse {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ValidationError>,
}

/// One refused field of a request (`ValidationError`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ValidationError {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub field: String,
}

/// `GET /login/companyinfo/{companyId}`, outside `apis/3.0`: what vendor SDKs read first to
/// learn the codebase path (`v4_6_release/`) and version. Its keys are PascalCase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompanyInfo {
    #[serde(rename = "CompanyName")]
    pub company_name: String,
    #[serde(rename = "Codebase")]
    pub codebase: String,
    #[serde(rename = "VersionCode")]
    pub version_code: String,
    #[serde(rename = "VersionNumber")]
    pub version_number: String,
    #[serde(rename = "CompanyID")]
    pub company_id: String,
    #[serde(rename = "IsCloud")]
    pub is_cloud: bool,
    #[serde(rename = "SiteUrl", default)]
    pub site_url: String,
}

/// `system/info`: the server's version, a cheap authenticated call to check keys with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemInfo {
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub is_cloud: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_time_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_region: Option<String>,
}

/// The answer of every `/count` endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub count: u64,
}

/// A service ticket (`service/tickets`): what was done for a client's people. The entry date is
/// `_info.dateEntered`; there is no top-level `dateEntered` (ConnectWise's API reference).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ticket {
    #[serde(default)]
    pub id: i64,
    pub summary: String,
    pub company: Option<Reference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<Reference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Reference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_date: Option<String>,
    /// The service board it is on (by id or name when created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board: Option<Reference>,
    /// The text a ticket is opened with (its first note).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_description: Option<String>,
    #[serde(rename = "_info", default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Info>,
}

/// A service board (`service/boards`): the queue a ticket is worked from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Board {
    #[serde(default)]
    pub id: i64,
    pub name: String,
}

/// The longest ticket `summary` ConnectWise stores.
pub const TICKET_SUMMARY_MAX: usize = 100;

/// What ConnectWise stores in the fields rollcall writes (docs/limits.md): one table, read by
/// the client to fit values and by the sandbox to refuse longer ones as ConnectWise does.
pub const LIMITS: rollcall_core::FieldLimits = rollcall_core::FieldLimits {
    contact_first_name: Some(30),
    contact_last_name: Some(30),
    contact_title: Some(50),
    contact_email: Some(COMMUNICATION_VALUE_MAX),
    contact_phone: Some(COMMUNICATION_VALUE_MAX),
    line_description: Some(INVOICE_DESCRIPTION_MAX),
    // Companies are the MSP's to make; rollcall only finds them.
    customer_name: None,
};

/// The longest `invoiceDescription` ConnectWise stores on an addition.
pub const INVOICE_DESCRIPTION_MAX: usize = 6000;

/// The longest `value` of a communication item (an email address, a phone number).
pub const COMMUNICATION_VALUE_MAX: usize = 250;

/// rollcall's mark on what it makes: the integrator tag on a contact, and the `description`
/// of an addition (the internal text; clients read `invoiceDescription`). A store that lost
/// its records still knows these objects as rollcall's, and never takes one without it.
/// Built by the engine, each pipeline marks with its own ([`rollcall_core::owner_mark`]);
/// this plain mark is a client's made outside a pipeline (tests, tools).
pub const MARK: &str = "rollcall";

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn money_travels_as_exact_json_numbers() {
        let text = r#"{"id":7,"product":{"id":3,"identifier":"M365-BP"},"quantity":12,
            "unitPrice":1234567890.123456789,"unitCost":12.50,"billCustomer":"Billable"}"#;
        let a: Addition = serde_json::from_str(text).expect("addition");
        assert_eq!(
            a.unit_price,
            Some(Decimal::from_str("1234567890.123456789").expect("decimal"))
        );
        assert_eq!(a.unit_cost.map(|c| c.to_string()), Some("12.50".to_owned()));
        let out = serde_json::to_string(&a).expect("serialize");
        assert!(out.contains(r#""unitPrice":1234567890.123456789"#), "{out}");
        assert!(out.contains(r#""quantity":12"#), "{out}");
        // Through a `Value`, as the sandbox applies patches, nothing is lost either.
        let value = serde_json::to_value(&a).expect("value");
        let back: Addition = serde_json::from_value(value).expect("back");
        assert_eq!(back, a);
    }

    #[test]
    fn unassigned_ids_and_nulls_are_not_sent() {
        let c = Contact {
            first_name: "Ann".to_owned(),
            company: Some(Reference::id(4)),
            ..Contact::default()
        };
        let out = serde_json::to_string(&c).expect("serialize");
        assert_eq!(
            out,
            r#"{"firstName":"Ann","company":{"id":4},"inactiveFlag":false}"#
        );
    }
}
