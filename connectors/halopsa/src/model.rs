//! HaloPSA's wire format: the JSON objects of its REST API (`/api/...`), as Halo names them.
//!
//! The client and the sandbox both speak these types, so a field the client reads is a field the
//! sandbox writes, and this is the only file where Halo's field names appear. Halo's names are
//! lower case without separators (`emailaddress`, `qty_order`); the few with a leading
//! underscore (`_itemid`) are Halo's own.
//!
//! Most fields are optional on purpose: Halo omits what is not set, and an update body carries
//! only what the caller changes (Halo updates by `POST` of the object with its `id`, and leaves
//! fields the body does not name as they were). An `id` of 0 means "not assigned yet" and is
//! never sent.
//!
//! Money and quantities are [`Decimal`] and travel as JSON numbers, exactly (serde_json's
//! `arbitrary_precision` is on), never through `f64`.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub(crate) fn is_unset(id: &i64) -> bool {
    *id == 0
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// A customer of the MSP (`/api/Client`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Client {
    #[serde(default, skip_serializing_if = "is_unset")]
    pub id: i64,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub inactive: bool,
    /// The site new users go to unless told otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_site_id: Option<i64>,
}

/// One of a client's sites (`/api/Site`): every user belongs to exactly one.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Site {
    #[serde(default, skip_serializing_if = "is_unset")]
    pub id: i64,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub client_id: i64,
    #[serde(default, skip_serializing_if = "is_false")]
    pub inactive: bool,
}

/// An end user of a client (`/api/Users`): rollcall's contact.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct User {
    #[serde(default, skip_serializing_if = "is_unset")]
    pub id: i64,
    /// The full name Halo shows; required on create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_id: Option<i64>,
    /// Set by Halo from the site; filtering by it is how a client's users are listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firstname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emailaddress: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phonenumber: Option<String>,
    /// Users are deactivated, never deleted: tickets point at them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactive: Option<bool>,
    /// The fifth user-defined field. rollcall writes its owner mark here, so a user it made is
    /// known as its own without its store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other5: Option<String>,
}

/// An item of Halo's product catalogue (`/api/Item`): what a per-user line bills.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Item {
    #[serde(default, skip_serializing_if = "is_unset")]
    pub id: i64,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::arbitrary_precision_option"
    )]
    pub baseprice: Option<Decimal>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub isrecurringitem: bool,
}

/// A recurring invoice (`/api/RecurringInvoice`): the invoice Halo raises for a client every
/// period, and the lines it copies onto each one. Per-user seats are its lines' quantities.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RecurringInvoice {
    #[serde(default, skip_serializing_if = "is_unset")]
    pub id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_id: Option<i64>,
    /// The recurring invoice's reference, as Halo lists it: how a pipeline names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoicenumber: Option<String>,
    /// Left out of a list unless `includelines=true` is asked for. On a write, the lines sent
    /// are the invoice's lines from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<Vec<InvoiceLine>>,
}

/// One line of a recurring invoice.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InvoiceLine {
    #[serde(default, skip_serializing_if = "is_unset")]
    pub id: i64,
    /// The invoice the line belongs to.
    #[serde(default, skip_serializing_if = "is_unset")]
    pub ihid: i64,
    /// The catalogue item the line bills.
    #[serde(rename = "_itemid", default, skip_serializing_if = "Option::is_none")]
    pub item_id: Option<i64>,
    /// The item's name, filled in by Halo from `_itemid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_code: Option<String>,
    /// The text the client reads on the invoice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_shortdescription: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::arbitrary_precision_option"
    )]
    pub qty_order: Option<Decimal>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::arbitrary_precision_option"
    )]
    pub unit_price: Option<Decimal>,
    /// An internal comment on the line, not printed by Halo's standard invoice layout. rollcall
    /// writes its owner mark here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment_1: Option<String>,
}

/// The standard OAuth2 token answer (RFC 6749 §5.1) of Halo's authorisation server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenAnswer {
    pub access_token: String,
    #[serde(default)]
    pub token_type: String,
    pub expires_in: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// An OAuth2 error answer (`{"error": "invalid_client", ...}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenError {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

/// The longest values rollcall writes to Halo, in UTF-16 code units. Halo's API documentation
/// publishes no field lengths, so these are rollcall's own conservative limits (docs/halopsa.md
/// says so): short enough for any Halo column we know of, long enough for real names. The
/// planner fits values to them before anything is sent, and the sandbox refuses longer values
/// with a 400, as Halo answers a value its column cannot hold.
pub const LIMITS: rollcall_core::FieldLimits = rollcall_core::FieldLimits {
    contact_first_name: Some(NAME_PART_MAX),
    contact_last_name: Some(NAME_PART_MAX),
    contact_title: Some(TITLE_MAX),
    contact_email: Some(EMAIL_MAX),
    contact_phone: Some(PHONE_MAX),
    line_description: Some(LINE_DESCRIPTION_MAX),
    // Clients are the MSP's to make; rollcall only finds them.
    customer_name: None,
};

/// The mark of a client built without a pipeline (tests, `BuildContext::in_memory` uses the
/// empty pipeline's): what a pipeline makes carries [`rollcall_core::owner_mark`] instead.
pub const MARK: &str = "rollcall";

pub const NAME_PART_MAX: usize = 50;
pub const TITLE_MAX: usize = 50;
pub const EMAIL_MAX: usize = 80;
pub const PHONE_MAX: usize = 50;
/// A user's full name (`name`): first and last name with a space between.
pub const FULL_NAME_MAX: usize = 2 * NAME_PART_MAX + 1;
pub const LINE_DESCRIPTION_MAX: usize = 2000;

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn money_travels_as_exact_json_numbers() {
        let text = r#"{"id":7,"ihid":3,"_itemid":2,"qty_order":12,
            "unit_price":1234567890.123456789,"item_shortdescription":"M365"}"#;
        let line: InvoiceLine = serde_json::from_str(text).expect("line");
        assert_eq!(
            line.unit_price,
            Some(Decimal::from_str("1234567890.123456789").expect("decimal"))
        );
        let back = serde_json::to_string(&line).expect("json");
        assert!(
            back.contains("\"unit_price\":1234567890.123456789"),
            "{back}"
        );
        assert!(back.contains("\"_itemid\":2"), "{back}");
    }

    #[test]
    fn unset_fields_are_not_sent() {
        let user = User {
            id: 0,
            inactive: Some(true),
            ..User::default()
        };
        assert_eq!(
            serde_json::to_string(&user).expect("json"),
            r#"{"inactive":true}"#
        );
    }
}
