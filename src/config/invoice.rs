//! How accounting targets invoice: the period an invoice covers, its dates and the reference it
//! is found again by. Lives apart from the rest of the config because only invoice-model
//! targets (those that bill by invoice) read it; for a PSA the agreement bills itself.

use chrono::{Datelike, Days, NaiveDate};
use rollcall_core::{BillingPeriod, InvoiceTarget};
use schemars::JsonSchema;
use serde::Deserialize;

use super::At;

/// How clients billed in an accounting system are invoiced: one invoice per client (or per
/// `bill_to` parent) per period, kept as a draft rollcall updates until someone sends it.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InvoicePolicy {
    /// How long a billing period is. Calendar months are the only period for now.
    #[serde(default)]
    pub period: Option<PeriodLength>,
    /// The day an invoice is dated: `first_day` of the period (per-user services billed in
    /// advance, the default) or `last_day` (in arrears).
    #[serde(default)]
    pub date: Option<InvoiceDate>,
    /// Days from the invoice date to its due date. Default: 30.
    #[serde(default)]
    pub due_days: Option<At<u32>>,
    /// The period reference written on each invoice, by which a run finds the invoice again:
    /// `{{customer}}` is the invoiced customer, `{{period}}` the period as `YYYY-MM`. It must
    /// name both, or two clients or two months would share an invoice. Default:
    /// `rollcall {{customer}} {{period}}`.
    #[serde(default)]
    pub reference: Option<At<String>>,
    /// Charge seats taken or given up during the period by the day, each on a line of its own
    /// naming the person and the days (from rollcall's seat ledger). Default: false, every
    /// seat held at the run is billed the whole period.
    #[serde(default)]
    pub prorate: Option<bool>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PeriodLength {
    #[default]
    Monthly,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceDate {
    #[default]
    FirstDay,
    LastDay,
}

/// The invoice policy as the engine uses it, checked.
#[derive(Debug, Clone)]
pub struct Invoicing {
    pub prorate: bool,
    pub date: InvoiceDate,
    pub due_days: u32,
    pub reference: String,
}

pub const DEFAULT_REFERENCE: &str = "rollcall {{customer}} {{period}}";
const DEFAULT_DUE_DAYS: u32 = 30;

impl Invoicing {
    /// Checks a policy; an error is the message, hint and position of the offending key.
    pub fn from_policy(
        policy: &InvoicePolicy,
    ) -> Result<Invoicing, (String, &'static str, Option<super::Pos>)> {
        let reference = policy
            .reference
            .as_ref()
            .map(|r| r.value.trim().to_owned())
            .unwrap_or_else(|| DEFAULT_REFERENCE.to_owned());
        let pos = policy.reference.as_ref().map(|r| r.pos);
        for needed in ["{{customer}}", "{{period}}"] {
            if !reference.contains(needed) {
                return Err((
                    format!("invoice reference `{reference}` does not contain {needed}"),
                    "the reference finds each client's invoice for each period again: it must name both, e.g. `rollcall {{customer}} {{period}}`",
                    pos,
                ));
            }
        }
        let due_days = policy
            .due_days
            .as_ref()
            .map_or(DEFAULT_DUE_DAYS, |d| d.value);
        if due_days > 366 {
            return Err((
                format!("due_days is {due_days}, more than a year"),
                "write the payment term in days, e.g. 14 or 30",
                policy.due_days.as_ref().map(|d| d.pos),
            ));
        }
        Ok(Invoicing {
            prorate: policy.prorate.unwrap_or(false),
            date: policy.date.unwrap_or_default(),
            due_days,
            reference,
        })
    }

    /// The invoice for the period holding `day`, billed to `customer`.
    pub fn target(
        &self,
        day: NaiveDate,
        customer: &str,
        bill_to: Option<&str>,
        site: Option<&str>,
    ) -> InvoiceTarget {
        let period = month_of(day);
        let date = match self.date {
            InvoiceDate::FirstDay => period.start,
            InvoiceDate::LastDay => period.end,
        };
        let reference = self.reference.replace("{{customer}}", customer).replace(
            "{{period}}",
            &format!("{:04}-{:02}", day.year(), day.month()),
        );
        InvoiceTarget {
            period,
            reference,
            date,
            due_date: date.checked_add_days(Days::new(u64::from(self.due_days))),
            bill_to: bill_to.map(str::to_owned),
            site: site.map(str::to_owned),
        }
    }
}

/// The calendar month holding `day`.
pub fn month_of(day: NaiveDate) -> BillingPeriod {
    let start = day.with_day(1).unwrap_or(day);
    let next = start
        .checked_add_months(chrono::Months::new(1))
        .unwrap_or(start);
    BillingPeriod {
        start,
        end: next.pred_opt().unwrap_or(start),
    }
}

/// Reads `--period`: a month (`2026-11`, billed as of its first day) or a day (`2026-11-17`).
pub fn parse_bill_day(text: &str) -> Result<NaiveDate, String> {
    let text = text.trim();
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d"))
        .map_err(|_| format!("`{text}` is not a month (YYYY-MM) or a day (YYYY-MM-DD)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("date")
    }

    #[test]
    fn months_end_on_their_last_day_leap_years_included() {
        assert_eq!(month_of(day(2028, 2, 17)).end, day(2028, 2, 29));
        assert_eq!(month_of(day(2026, 12, 31)).end, day(2026, 12, 31));
        assert_eq!(month_of(day(2026, 11, 5)).days(), 30);
    }

    #[test]
    fn a_target_names_customer_and_month_and_dates_by_policy() {
        let policy = Invoicing::from_policy(&InvoicePolicy {
            date: Some(InvoiceDate::LastDay),
            ..InvoicePolicy::default()
        })
        .expect("policy");
        let t = policy.target(
            day(2026, 11, 17),
            "Acme Group",
            Some("Acme Group"),
            Some("Branch"),
        );
        assert_eq!(t.reference, "rollcall Acme Group 2026-11");
        assert_eq!(t.date, day(2026, 11, 30));
        assert_eq!(t.due_date, Some(day(2026, 12, 30)));
        assert_eq!(t.site.as_deref(), Some("Branch"));
    }

    #[test]
    fn a_reference_without_the_period_is_refused() {
        let policy = InvoicePolicy {
            reference: Some(At::new(
                "rollcall {{customer}}".into(),
                super::super::Pos::default(),
            )),
            ..InvoicePolicy::default()
        };
        let (message, _, _) = Invoicing::from_policy(&policy).expect_err("refused");
        assert!(message.contains("{{period}}"));
    }

    #[test]
    fn periods_parse_as_months_or_days() {
        assert_eq!(parse_bill_day("2026-11").expect("month"), day(2026, 11, 1));
        assert_eq!(
            parse_bill_day("2026-11-17").expect("day"),
            day(2026, 11, 17)
        );
        assert!(parse_bill_day("November").is_err());
    }
}
