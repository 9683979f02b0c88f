//! QuickBooks Online's wire shapes, read loosely on purpose.
//!
//! An invoice is kept as the JSON QuickBooks sent (`serde_json::Value`) and changed in place:
//! a sparse update must carry back every line rollcall does not manage exactly as it came, with
//! fields rollcall has never heard of (tracking classes, discounts, custom fields). Only the
//! fields rollcall reads are named here.

use rollcall_core::InvoiceStatus;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::Value;

/// `{"Fault":{"Error":[{"Message","Detail","code","element"}],"type"}}`; Intuit's gateway
/// writes the same in lower case for authentication faults.
#[derive(Debug, Deserialize)]
pub struct FaultBody {
    #[serde(alias = "fault")]
    #[serde(rename = "Fault")]
    pub fault: Fault,
}

#[derive(Debug, Deserialize)]
pub struct Fault {
    #[serde(rename = "Error", alias = "error", default)]
    pub errors: Vec<FaultError>,
    #[serde(rename = "type", default)]
    pub kind: String,
}

#[derive(Debug, Deserialize)]
pub struct FaultError {
    #[serde(rename = "Message", alias = "message", default)]
    pub message: String,
    #[serde(rename = "Detail", alias = "detail", default)]
    pub detail: String,
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub element: String,
}

/// QuickBooks' code for an update sent with an old `SyncToken`.
pub const STALE_OBJECT: &str = "5010";

pub use rollcall_core::json_decimal as decimal;

/// `v[key]` as text.
pub fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The rows of a query answer: `{"QueryResponse": {"Invoice": [...]}}`.
pub fn rows(answer: &Value, entity: &str) -> Vec<Value> {
    answer
        .get("QueryResponse")
        .and_then(|q| q.get(entity))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Whether a query page came back full, so another may follow, by the answer's own paging
/// metadata. QuickBooks has no next link: its `QueryResponse` says where the page starts
/// (`startPosition`) and how many rows it holds (`maxResults`), and a page holding fewer rows
/// than asked for is the last. A page that starts elsewhere than asked, or whose count
/// disagrees with its rows, is refused: read as the end, it would hide customers or invoices.
pub fn page_is_full(
    answer: &Value,
    start: usize,
    rows: usize,
    asked: usize,
) -> Result<bool, String> {
    let Some(meta) = answer.get("QueryResponse") else {
        return Err("the answer has no QueryResponse".into());
    };
    let number = |key: &str| meta.get(key).and_then(Value::as_u64);
    if rows > 0
        && let Some(at) = number("startPosition")
        && at != start as u64
    {
        return Err(format!(
            "rows from position {start} were asked for but the page starts at {at}"
        ));
    }
    if let Some(count) = number("maxResults")
        && count != rows as u64
    {
        return Err(format!(
            "the page says it holds {count} rows but holds {rows}"
        ));
    }
    Ok(rows >= asked)
}

/// A sales line's item (by name, else id), description, quantity and unit price; `None` for
/// subtotal, discount and other non-item lines.
pub fn sales_line(line: &Value) -> Option<(String, String, Decimal, Decimal)> {
    if text(line, "DetailType") != Some("SalesItemLineDetail") {
        return None;
    }
    let detail = line.get("SalesItemLineDetail")?;
    let item = detail.get("ItemRef")?;
    let product = text(item, "name")
        .or_else(|| text(item, "value"))?
        .to_owned();
    let description = text(line, "Description").unwrap_or_default().to_owned();
    let quantity = decimal(detail.get("Qty")).unwrap_or(Decimal::ONE);
    let price = decimal(detail.get("UnitPrice")).unwrap_or_default();
    Some((product, description, quantity, price))
}

/// Whether an invoice is still rollcall's to edit. QuickBooks has no status field: an invoice
/// emailed to the customer, paid in part or in full, or voided is final.
pub fn status(invoice: &Value) -> InvoiceStatus {
    let total = decimal(invoice.get("TotalAmt")).unwrap_or_default();
    let balance = decimal(invoice.get("Balance")).unwrap_or(total);
    if text(invoice, "EmailStatus") == Some("EmailSent") {
        InvoiceStatus::Final("EmailSent".into())
    } else if text(invoice, "PrivateNote").is_some_and(|n| n.starts_with("Voided")) {
        InvoiceStatus::Final("Voided".into())
    } else if balance < total {
        InvoiceStatus::Final(
            if balance.is_zero() {
                "Paid"
            } else {
                "PartiallyPaid"
            }
            .into(),
        )
    } else {
        InvoiceStatus::Draft
    }
}

/// Quotes a value for the query language: `'` is escaped with a backslash.
pub fn quoted(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}
