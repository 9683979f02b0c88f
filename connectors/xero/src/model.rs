//! Xero's wire shapes, read loosely on purpose: an invoice is kept as the JSON Xero sent and
//! changed in place, so lines rollcall does not manage go back with every field they came with
//! (tracking categories, discounts, tax amounts).

use chrono::NaiveDate;
use rollcall_core::InvoiceStatus;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::Value;

pub use rollcall_core::json_decimal as decimal;

/// Xero's paging metadata, sent beside a paged list (`Contacts`, `Invoices`, …) when `page`
/// is asked for. It is what says where a list ends: a short page only suggests it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pagination {
    pub page: u32,
    pub page_size: u32,
    pub page_count: u32,
    pub item_count: u64,
}

/// Whether another page follows `page` of `answer`, which held `rows` rows.
///
/// Xero's `pagination` decides where it is sent. A page that comes back empty while
/// `pagination` promises more is refused rather than taken as the end: a list cut short would
/// read as people or invoices that are gone. Without `pagination` (an endpoint that does not
/// send it) the list ends at a page shorter than `page_size`.
pub fn more_pages(
    answer: &Value,
    page: u32,
    rows: usize,
    page_size: usize,
) -> Result<bool, String> {
    let Some(raw) = answer.get("pagination") else {
        return Ok(rows == page_size);
    };
    let meta = Pagination::deserialize(raw)
        .map_err(|e| format!("the answer's `pagination` is not Xero's paging metadata: {e}"))?;
    if meta.page != page {
        return Err(format!(
            "page {page} was asked for but `pagination` says page {}",
            meta.page
        ));
    }
    if rows == 0 && page < meta.page_count {
        return Err(format!(
            "page {page} is empty but `pagination` says there are {} pages of {} rows",
            meta.page_count, meta.item_count
        ));
    }
    Ok(page < meta.page_count)
}

/// `v[key]` as text.
pub fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// A date as Xero writes it: Microsoft JSON (`/Date(1573755038314+0000)/`) or ISO 8601.
pub fn date(value: Option<&str>) -> Option<NaiveDate> {
    let value = value?.trim();
    if let Some(inner) = value
        .strip_prefix("/Date(")
        .and_then(|v| v.strip_suffix(")/"))
    {
        let millis: i64 = inner
            .split(['+', '-'])
            .next()
            .filter(|m| !m.is_empty())?
            .parse()
            .ok()?;
        return chrono::DateTime::from_timestamp_millis(millis).map(|t| t.date_naive());
    }
    NaiveDate::parse_from_str(value.get(..10).unwrap_or(value), "%Y-%m-%d").ok()
}

/// A date in Microsoft JSON form, as Xero answers.
#[cfg(any(test, feature = "sandbox"))]
pub fn ms_date(day: NaiveDate) -> String {
    let millis = day
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
        .unwrap_or_default();
    format!("/Date({millis}+0000)/")
}

/// An item line's code, description, quantity and unit amount.
pub fn line_item(line: &Value) -> Option<(String, String, Decimal, Decimal)> {
    let code = text(line, "ItemCode")?.to_owned();
    Some((
        code,
        text(line, "Description").unwrap_or_default().to_owned(),
        decimal(line.get("Quantity")).unwrap_or(Decimal::ONE),
        decimal(line.get("UnitAmount")).unwrap_or_default(),
    ))
}

/// Only a draft is rollcall's to change. `SUBMITTED` means a person sent it for approval, so
/// it is treated as theirs too.
pub fn status(invoice: &Value) -> InvoiceStatus {
    match text(invoice, "Status").unwrap_or("DRAFT") {
        "DRAFT" => InvoiceStatus::Draft,
        other => InvoiceStatus::Final(other.to_owned()),
    }
}

/// A value in a `where` filter: Xero's expressions quote with `"`.
pub fn quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Turns a Xero error body into one line: the message and every validation error.
pub fn describe_error(status: reqwest::StatusCode, body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        let mut parts: Vec<String> = Vec::new();
        if let Some(m) = text(&v, "Message")
            .or_else(|| text(&v, "Detail"))
            .or_else(|| text(&v, "Title"))
        {
            parts.push(m.to_owned());
        }
        for element in v
            .get("Elements")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for e in element
                .get("ValidationErrors")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(m) = text(e, "Message") {
                    parts.push(m.to_owned());
                }
            }
        }
        if !parts.is_empty() {
            return format!("{} ({status})", parts.join("; "));
        }
    }
    format!(
        "{status}: {}",
        String::from_utf8_lossy(body)
            .chars()
            .take(300)
            .collect::<String>()
    )
}

/// What Xero stores in the fields rollcall writes (docs/limits.md): one table, read by the
/// client to fit values and by the sandbox to refuse longer ones as Xero does.
pub const LIMITS: rollcall_core::FieldLimits = rollcall_core::FieldLimits {
    contact_first_name: None,
    contact_last_name: None,
    contact_title: None,
    contact_email: Some(255),
    contact_phone: None,
    line_description: Some(4000),
    customer_name: Some(255),
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_in_both_forms_and_write_in_microsoft_form() {
        let day = NaiveDate::from_ymd_opt(2019, 11, 14).expect("d");
        assert_eq!(date(Some("/Date(1573689600000+0000)/")), Some(day));
        assert_eq!(date(Some("2019-11-14T00:00:00")), Some(day));
        assert_eq!(date(Some(&ms_date(day))), Some(day));
    }

    #[test]
    fn the_end_of_a_list_is_where_pagination_says() {
        let meta = |page: u32, count: u32| serde_json::json!({ "pagination": { "page": page, "pageSize": 2, "pageCount": count, "itemCount": 3 } });
        // A short page that is not the last (Xero may return fewer rows than asked).
        assert_eq!(more_pages(&meta(1, 2), 1, 1, 2), Ok(true));
        // A full page that is the last.
        assert_eq!(more_pages(&meta(2, 2), 2, 2, 2), Ok(false));
        assert!(
            more_pages(&meta(1, 3), 1, 0, 2).is_err(),
            "empty before the last page"
        );
        assert!(
            more_pages(&meta(2, 3), 1, 2, 2).is_err(),
            "the wrong page came back"
        );
        let odd = serde_json::json!({ "pagination": { "page": "one" } });
        assert!(more_pages(&odd, 1, 2, 2).is_err());
        // Without metadata, a short page ends the list.
        let bare = serde_json::json!({ "Contacts": [] });
        assert_eq!(more_pages(&bare, 1, 2, 2), Ok(true));
        assert_eq!(more_pages(&bare, 1, 1, 2), Ok(false));
    }

    #[test]
    fn validation_errors_are_listed() {
        let body = br#"{"ErrorNumber":10,"Type":"ValidationException","Message":"A validation exception occurred","Elements":[{"ValidationErrors":[{"Message":"Item code 'X' is not valid"}]}]}"#;
        let text = describe_error(reqwest::StatusCode::BAD_REQUEST, body);
        assert!(text.contains("Item code 'X' is not valid"), "{text}");
    }
}
