//! Xero's wire shapes, read loosely on purpose: an invoice is kept as the JSON Xero sent and
//! changed in place, so lines rollcall does not manage go back with every field they came with
//! (tracking categories, discounts, tax amounts).

use chrono::NaiveDate;
use rollcall_core::InvoiceStatus;
use rust_decimal::Decimal;
use serde_json::Value;

pub use rollcall_core::json_decimal as decimal;

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
    fn validation_errors_are_listed() {
        let body = br#"{"ErrorNumber":10,"Type":"ValidationException","Message":"A validation exception occurred","Elements":[{"ValidationErrors":[{"Message":"Item code 'X' is not valid"}]}]}"#;
        let text = describe_error(reqwest::StatusCode::BAD_REQUEST, body);
        assert!(text.contains("Item code 'X' is not valid"), "{text}");
    }
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
