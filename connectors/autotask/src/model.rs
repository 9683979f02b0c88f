//! Autotask's JSON entities and query language, as the REST API v1.0 writes them, shared by the
//! client and the sandbox so both speak one shape.
//!
//! Field names are Autotask's: camelCase with `ID` in capitals (`companyID`, `contractID`).
//! Money and units are [`Decimal`] and travel as exact JSON numbers. Dates are the API's ISO
//! form (`2025-01-01T00:00:00Z`); only their date part matters to billing.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `GET …/zoneInformation?user=`: where a user's database lives. `url` is the zone's REST root
/// (ending in `/ATServicesRest/`), to which `V1.0/` is added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZoneInformation {
    #[serde(default)]
    pub zone_name: String,
    pub url: String,
    #[serde(default)]
    pub web_url: String,
    #[serde(default)]
    pub ci: i64,
}

/// One condition of the query language: a comparison (`field`, `op`, `value`) or a group
/// (`op` `and`/`or` with `items`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Filter {
    pub op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<Filter>,
    /// The field is a user-defined field.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub udf: bool,
}

impl Filter {
    pub fn eq(field: &str, value: impl Into<Value>) -> Filter {
        Filter::compare("eq", field, value)
    }

    pub fn compare(op: &str, field: &str, value: impl Into<Value>) -> Filter {
        Filter {
            op: op.to_owned(),
            field: Some(field.to_owned()),
            value: Some(value.into()),
            ..Filter::default()
        }
    }

    pub fn any(items: Vec<Filter>) -> Filter {
        Filter {
            op: "or".to_owned(),
            items,
            ..Filter::default()
        }
    }
}

/// The body of `POST {Entity}/query` (and the `search=` of `GET {Entity}/query`). The API
/// itself spells the page size `MaxRecords`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Query {
    #[serde(default, alias = "Filter")]
    pub filter: Vec<Filter>,
    #[serde(
        rename = "MaxRecords",
        alias = "maxRecords",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_records: Option<u32>,
}

/// One page of a query's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryPage<T> {
    pub items: Vec<T>,
    pub page_details: PageDetails,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageDetails {
    pub count: usize,
    pub request_count: u32,
    #[serde(default)]
    pub prev_page_url: Option<String>,
    /// The whole URL of the next page, or `null` on the last.
    #[serde(default)]
    pub next_page_url: Option<String>,
}

/// What a create answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemId {
    pub item_id: i64,
}

/// What a refused request answers: one sentence per problem.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub errors: Vec<String>,
}

/// A client organisation (`Companies`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Company {
    #[serde(default)]
    pub id: i64,
    pub company_name: String,
    /// 1 is a customer.
    #[serde(default = "customer")]
    pub company_type: i64,
    #[serde(default = "yes")]
    pub is_active: bool,
}

fn customer() -> i64 {
    1
}

fn yes() -> bool {
    true
}

fn one() -> i64 {
    1
}

/// A person at a company (`Contacts`, a child of `Companies`). `isActive` is a number: 1 or 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    #[serde(default)]
    pub id: i64,
    #[serde(rename = "companyID", default)]
    pub company_id: i64,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default = "one")]
    pub is_active: i64,
    /// An identifier for an outside system: rollcall's mark ([`MARK`]) on what it makes.
    #[serde(
        rename = "externalID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub external_id: Option<String>,
}

/// `contractType` of a recurring service contract.
pub const RECURRING_SERVICE: i64 = 7;

/// A billing arrangement with a company (`Contracts`). Seats live on recurring service
/// contracts (type 7); `status` 1 is active.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Contract {
    #[serde(default)]
    pub id: i64,
    #[serde(rename = "companyID", default)]
    pub company_id: i64,
    pub contract_name: String,
    #[serde(default = "recurring")]
    pub contract_type: i64,
    #[serde(default = "one")]
    pub status: i64,
    #[serde(default)]
    pub start_date: String,
    #[serde(default)]
    pub end_date: String,
}

fn recurring() -> i64 {
    RECURRING_SERVICE
}

/// A service in the MSP's catalogue (`Services`): what a pipeline's product identifier names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    #[serde(default)]
    pub id: i64,
    pub name: String,
    #[serde(default)]
    pub unit_price: Decimal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_description: Option<String>,
    #[serde(default = "yes")]
    pub is_active: bool,
}

/// A service on a recurring service contract (`ContractServices`, a child of `Contracts`). It
/// carries the price; the units are in [`ContractServiceUnit`]s and change only through
/// [`ContractServiceAdjustment`]s. After creation only `adjustedPrice` and
/// `invoiceDescription` can be changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContractService {
    #[serde(default)]
    pub id: i64,
    #[serde(rename = "contractID", default)]
    pub contract_id: i64,
    #[serde(rename = "serviceID", default)]
    pub service_id: i64,
    #[serde(default)]
    pub unit_price: Decimal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adjusted_price: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_description: Option<String>,
    /// Seen by the MSP only: rollcall's mark ([`MARK`]) on the contract services it adds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_description: Option<String>,
}

impl ContractService {
    /// What the client pays per unit: the adjusted price where there is one.
    pub fn price(&self) -> Decimal {
        self.adjusted_price.unwrap_or(self.unit_price)
    }
}

/// The units of one contract service over a date range (`ContractServiceUnits`, read only).
/// Each billing period has one; an adjustment starts a new one on its effective date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContractServiceUnit {
    #[serde(default)]
    pub id: i64,
    #[serde(rename = "contractID", default)]
    pub contract_id: i64,
    #[serde(rename = "contractServiceID", default)]
    pub contract_service_id: i64,
    #[serde(rename = "serviceID", default)]
    pub service_id: i64,
    pub start_date: String,
    pub end_date: String,
    pub units: Decimal,
    #[serde(default)]
    pub price: Decimal,
}

/// A change of a contract service's units from a date (`ContractServiceAdjustments`, a child
/// of `Contracts`): create only — it can be neither read back nor changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContractServiceAdjustment {
    #[serde(default)]
    pub id: i64,
    #[serde(rename = "contractID", default)]
    pub contract_id: i64,
    #[serde(rename = "contractServiceID", default)]
    pub contract_service_id: i64,
    #[serde(rename = "serviceID", default)]
    pub service_id: i64,
    pub unit_change: i64,
    pub effective_date: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adjusted_unit_price: Option<Decimal>,
}

/// The longest values Autotask stores in the fields rollcall writes (the entity reference's
/// string lengths), read by the planner and enforced by the sandbox.
pub const LIMITS: rollcall_core::FieldLimits = rollcall_core::FieldLimits {
    contact_first_name: Some(50),
    contact_last_name: Some(50),
    contact_title: Some(50),
    contact_email: Some(254),
    contact_phone: Some(25),
    line_description: Some(INVOICE_DESCRIPTION_MAX),
    // Companies are the MSP's to make; rollcall only finds them.
    customer_name: None,
};

/// The longest invoice description rollcall writes on a contract service.
pub const INVOICE_DESCRIPTION_MAX: usize = 1000;

/// The mark of a client built without a pipeline (tests); pipelines mark with their own
/// ([`rollcall_core::owner_mark`]).
pub const MARK: &str = "rollcall";

/// The date part (`YYYY-MM-DD`) of an API date.
pub fn day(date: &str) -> &str {
    date.get(..10).unwrap_or(date)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn ids_keep_autotask_capitals_and_money_stays_exact() {
        let text = r#"{"id":7,"contractID":3,"serviceID":9,"unitPrice":1234567890.123456789,
            "adjustedPrice":21.50,"internalDescription":"rollcall:1"}"#;
        let service: ContractService = serde_json::from_str(text).expect("contract service");
        assert_eq!(service.contract_id, 3);
        assert_eq!(
            service.unit_price,
            Decimal::from_str("1234567890.123456789").expect("decimal")
        );
        assert_eq!(service.price().to_string(), "21.50");
        let back = serde_json::to_string(&service).expect("json");
        assert!(back.contains("\"contractID\":3") && back.contains("1234567890.123456789"));
    }

    #[test]
    fn queries_name_their_page_size_as_autotask_does() {
        let query = Query {
            filter: vec![Filter::eq("companyID", 4)],
            max_records: Some(500),
        };
        assert_eq!(
            serde_json::to_string(&query).expect("json"),
            r#"{"filter":[{"op":"eq","field":"companyID","value":4}],"MaxRecords":500}"#
        );
    }
}
