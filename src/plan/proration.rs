//! Proration: a seat taken or given up part way through a billing period is charged for the
//! days it was held, on a line of its own that says whose seat and which days.
//!
//! Who held a seat from when comes from the seat ledger the store keeps (the run passes it in,
//! so this stays a pure function). The rule, stated once:
//! - a person holding the seat on the period's first day and still holding it is billed the
//!   whole period, on the product's main line;
//! - anyone else is billed `days held ÷ days in the period`, the fraction rounded to four
//!   decimal places (half away from zero), at the full unit price; the line's amount is then
//!   rounded once at the currency's minor unit, as every line is;
//! - a current holder is counted to the period's last day (the draft is brought up to date if
//!   they leave before it ends);
//! - seats rollcall's first run for the client found count as held before the period began;
//!   a ledger that starts after the period (billing a past month) bills the seat whole;
//! - products whose bill is not one seat per person (`included` or `minimum` changed the
//!   count) are not prorated: the contract's own numbers stay whole.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rollcall_core::{BillingPeriod, InvoiceLine};
use rust_decimal::{Decimal, RoundingStrategy};

use super::{Desired, DesiredAddition};

/// One person's hold on one product's seat, from the ledger: `to` is the last day held, `None`
/// while it is still held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenure {
    pub person_id: String,
    pub name: String,
    pub from: NaiveDate,
    pub to: Option<NaiveDate>,
}

/// What proration needs beside the desired seats: the ledger, by pipeline product id, and the
/// day a newcomer not yet in the ledger holds their seat from (`None` before the client's
/// first run: then everyone is billed whole).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Proration {
    pub tenures: BTreeMap<String, Vec<Tenure>>,
    pub today: Option<NaiveDate>,
}

/// Decimal places of a prorated quantity; both accounting systems keep four.
pub const QUANTITY_PLACES: u32 = 4;

/// The invoice lines for one product under proration, and a note when it could not apply.
pub fn product_lines(
    identifier: &str,
    addition: &DesiredAddition,
    period: BillingPeriod,
    proration: &Proration,
    text_limit: Option<usize>,
) -> (Vec<InvoiceLine>, Option<String>) {
    let whole = |quantity: u32| InvoiceLine {
        product: identifier.to_owned(),
        quantity: Decimal::from(quantity),
        unit_price: addition.fields.unit_price,
        description: addition.fields.invoice_description.clone(),
    };
    let holders = addition.people.len() as u32;
    if addition.fields.quantity != holders {
        let note = (addition.fields.quantity > 0).then(|| {
            format!(
                "{} is billed {} seat(s) for {} holder(s) (included or minimum seats), so it is not prorated",
                addition.name, addition.fields.quantity, holders
            )
        });
        return (
            (addition.fields.quantity > 0)
                .then(|| whole(addition.fields.quantity))
                .into_iter()
                .collect(),
            note,
        );
    }
    let today = proration.today.unwrap_or(period.start);
    let ledger = proration
        .tenures
        .get(&addition.product)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut full = Vec::new();
    let mut partial: Vec<(String, NaiveDate, NaiveDate)> = Vec::new();
    for holder in &addition.people {
        let since = ledger
            .iter()
            .filter(|t| t.person_id == holder.person_id && t.to.is_none())
            .map(|t| t.from)
            .min()
            .unwrap_or(today);
        // A ledger that starts after the period (billing a past month) says nothing about it:
        // the seat is billed whole.
        if since <= period.start || since > period.end {
            full.push(holder.name.clone());
        } else {
            partial.push((holder.name.clone(), since.min(period.end), period.end));
        }
    }
    // People who gave their seat up during the period, and hold none now.
    for t in ledger {
        let Some(to) = t.to else { continue };
        let holds_now = addition.people.iter().any(|h| h.person_id == t.person_id);
        if holds_now || to < period.start || t.from > period.end {
            continue;
        }
        partial.push((t.name.clone(), t.from.max(period.start), to.min(period.end)));
    }
    partial.sort();

    let mut lines = Vec::new();
    if !full.is_empty() {
        let names = full.join(", ");
        let text = format!("{}, whole period: {names}", addition.name);
        let text = match text_limit {
            Some(limit) => crate::mapping::shorten_list(text, limit, &full),
            None => text,
        };
        lines.push(InvoiceLine {
            description: text,
            ..whole(full.len() as u32)
        });
    }
    for (name, from, to) in partial {
        let days = (to - from).num_days() + 1;
        if days <= 0 {
            continue;
        }
        lines.push(InvoiceLine {
            product: identifier.to_owned(),
            quantity: fraction(days, period.days()),
            unit_price: addition.fields.unit_price,
            description: format!(
                "{}, {name}: {} to {} ({days} of {} days)",
                addition.name,
                from.format("%-d %b"),
                to.format("%-d %b %Y"),
                period.days()
            ),
        });
    }
    (lines, None)
}

/// `days ÷ period_days` to [`QUANTITY_PLACES`], half away from zero.
pub fn fraction(days: i64, period_days: i64) -> Decimal {
    (Decimal::from(days) / Decimal::from(period_days.max(1)))
        .round_dp_with_strategy(QUANTITY_PLACES, RoundingStrategy::MidpointAwayFromZero)
        .normalize()
}

/// Every product's lines under proration, in the planner's line order, with notes.
pub fn invoice_lines(
    desired: &Desired,
    period: BillingPeriod,
    proration: &Proration,
    text_limit: Option<usize>,
) -> (Vec<InvoiceLine>, Vec<String>) {
    let mut lines = Vec::new();
    let mut notes = Vec::new();
    for (identifier, addition) in &desired.additions {
        let (product_lines, note) =
            product_lines(identifier, addition, period, proration, text_limit);
        lines.extend(product_lines);
        notes.extend(note);
    }
    lines.sort();
    (lines, notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::SeatHolder;
    use rollcall_core::{AdditionFields, Currency, round_money};

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).expect("date")
    }

    const NOVEMBER: BillingPeriod = BillingPeriod {
        start: NaiveDate::from_ymd_opt(2026, 11, 1).expect("date"),
        end: NaiveDate::from_ymd_opt(2026, 11, 30).expect("date"),
    };

    fn holder(id: &str) -> SeatHolder {
        SeatHolder {
            person_id: id.into(),
            name: format!("Person {id}"),
            evidence: Default::default(),
            grace_until: None,
            contact: None,
        }
    }

    fn addition(holders: &[&str], quantity: u32) -> DesiredAddition {
        DesiredAddition {
            product: "m365".into(),
            name: "Microsoft 365".into(),
            rule: "true".into(),
            fields: AdditionFields {
                quantity,
                unit_price: "22.00".parse().expect("price"),
                invoice_description: "template text".into(),
            },
            counted: holders.len() as u32,
            people: holders.iter().map(|h| holder(h)).collect(),
        }
    }

    fn tenure(id: &str, from: NaiveDate, to: Option<NaiveDate>) -> Tenure {
        Tenure {
            person_id: id.into(),
            name: format!("Person {id}"),
            from,
            to,
        }
    }

    #[test]
    fn whole_period_holders_share_a_line_and_a_newcomer_pays_by_day() {
        let proration = Proration {
            tenures: [(
                "m365".to_owned(),
                vec![
                    tenure("a", NaiveDate::from_ymd_opt(2026, 10, 3).expect("d"), None),
                    tenure("b", day(1), None),
                    tenure("c", day(17), None),
                ],
            )]
            .into(),
            today: Some(day(20)),
        };
        let (lines, note) = product_lines(
            "M365",
            &addition(&["a", "b", "c"], 3),
            NOVEMBER,
            &proration,
            None,
        );
        assert!(note.is_none());
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].quantity, Decimal::from(2));
        assert!(lines[0].description.contains("Person a, Person b"));
        // 17–30 November: 14 of 30 days = 0.4667 (0.46666… rounded half away from zero).
        assert_eq!(lines[1].quantity.to_string(), "0.4667");
        assert!(
            lines[1]
                .description
                .contains("Person c: 17 Nov to 30 Nov 2026 (14 of 30 days)")
        );
        assert_eq!(
            round_money(lines[1].quantity * lines[1].unit_price, Currency::Usd).to_string(),
            "10.27"
        );
    }

    #[test]
    fn a_leaver_pays_for_the_days_held_and_a_new_face_from_today() {
        let proration = Proration {
            tenures: [(
                "m365".to_owned(),
                vec![
                    tenure("a", day(1), None),
                    tenure(
                        "gone",
                        NaiveDate::from_ymd_opt(2026, 9, 1).expect("d"),
                        Some(day(10)),
                    ),
                    tenure(
                        "long-gone",
                        NaiveDate::from_ymd_opt(2026, 9, 1).expect("d"),
                        Some(NaiveDate::from_ymd_opt(2026, 10, 31).expect("d")),
                    ),
                ],
            )]
            .into(),
            today: Some(day(25)),
        };
        let (lines, _) = product_lines(
            "M365",
            &addition(&["a", "new"], 2),
            NOVEMBER,
            &proration,
            None,
        );
        let described: Vec<(String, String)> = lines
            .iter()
            .map(|l| (l.quantity.to_string(), l.description.clone()))
            .collect();
        assert_eq!(described.len(), 3, "{described:?}");
        assert_eq!(described[0].0, "1");
        assert!(described.iter().any(|(q, d)| q == "0.3333"
            && d.contains("Person gone: 1 Nov to 10 Nov 2026 (10 of 30 days)")));
        assert!(
            described.iter().any(|(q, d)| q == "0.2"
                && d.contains("Person new: 25 Nov to 30 Nov 2026 (6 of 30 days)"))
        );
    }

    #[test]
    fn a_ledger_that_starts_after_the_period_bills_whole_seats() {
        let december = NaiveDate::from_ymd_opt(2026, 12, 3).expect("d");
        let proration = Proration {
            tenures: [("m365".to_owned(), vec![tenure("a", december, None)])].into(),
            today: Some(day(1)),
        };
        let (lines, _) = product_lines("M365", &addition(&["a"], 1), NOVEMBER, &proration, None);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].quantity, Decimal::ONE);
    }

    #[test]
    fn included_or_minimum_seats_are_not_prorated() {
        let (lines, note) = product_lines(
            "M365",
            &addition(&["a"], 5),
            NOVEMBER,
            &Proration::default(),
            None,
        );
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].quantity, Decimal::from(5));
        assert_eq!(lines[0].description, "template text");
        assert!(note.expect("note").contains("not prorated"));
    }

    #[test]
    fn fractions_round_half_away_from_zero_at_four_places() {
        assert_eq!(fraction(1, 30).to_string(), "0.0333");
        assert_eq!(fraction(2, 3).to_string(), "0.6667");
        assert_eq!(fraction(1, 16).to_string(), "0.0625");
        assert_eq!(fraction(1, 32).to_string(), "0.0313", "0.03125 rounds up");
        assert_eq!(fraction(31, 31), Decimal::ONE);
    }
}
