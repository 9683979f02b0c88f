//! Proration: a seat taken or given up part way through a billing period is charged for the
//! days it was held, on a line of its own that says whose seat and which days.
//!
//! Who held a seat from when comes from the seat ledger the store keeps (the run passes it in,
//! so this stays a pure function). The rule, stated once:
//! - days are calendar days in the pipeline's zone; the ledger records moments, and a seat
//!   taken at a run on day d is held from d, a seat given up at a run on day d was last held
//!   on d − 1 (taken and given up on one day: no day held);
//! - this run's own changes count as the ledger will record them: a holder the ledger lacks
//!   takes the seat today, an open span whose person no longer holds the seat ends today. So
//!   planning the same period again after applying, on any later day, bills the same days;
//! - a person who held the seat every day of the period is billed the whole period, on the
//!   product's main line; a current holder is counted to the period's last day;
//! - anyone else is billed each unbroken stretch of days held: `days ÷ days in the period`,
//!   the fraction rounded to four decimal places (half away from zero, as the accounting
//!   systems keep quantities), at the full unit price; the line's amount is then rounded once
//!   at the currency's minor unit, as every line is;
//! - seats rollcall's first run for the client found count as held since before any period,
//!   so a period before the ledger began bills them whole; seats taken after a period ended
//!   are not billed for it, seats given up after it ended are billed whole for it;
//! - products whose bill is not one seat per person (`included` or `minimum` changed the
//!   count) are not prorated: the contract's own numbers stay whole.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use rollcall_core::{BillingPeriod, InvoiceLine};
use rust_decimal::{Decimal, RoundingStrategy};

use super::{Desired, DesiredAddition};

/// One person's hold on one product's seat, in days: `from` the first day held, `to` the last
/// day held, `None` while it is still held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenure {
    pub person_id: String,
    pub name: String,
    pub from: NaiveDate,
    pub to: Option<NaiveDate>,
}

/// One span of the seat ledger as the store keeps it: moments, not days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub product: String,
    pub person_id: String,
    pub name: String,
    /// The run that found the person holding the seat.
    pub since: DateTime<Utc>,
    /// The run that found the seat given up; `None` while it is held.
    pub until: Option<DateTime<Utc>>,
}

/// What proration needs beside the desired seats: the ledger, by pipeline product id, and
/// today, the day this run's own changes take effect (`None` before the client's first run:
/// then everyone is billed whole).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Proration {
    pub tenures: BTreeMap<String, Vec<Tenure>>,
    pub today: Option<NaiveDate>,
}

/// The calendar day a moment falls on in `zone`.
pub fn day_of(moment: DateTime<Utc>, zone: Tz) -> NaiveDate {
    moment.with_timezone(&zone).date_naive()
}

impl Proration {
    /// The ledger as days held, for a run at `now` in the pipeline's `zone`.
    pub fn from_ledger(spans: &[Held], now: DateTime<Utc>, zone: Tz) -> Proration {
        // Whoever rollcall's first run for the client found was already there: their seats
        // are as old as the client's billing, not as the day rollcall met them.
        let first_run = spans.iter().map(|s| s.since).min();
        let mut tenures: BTreeMap<String, Vec<Tenure>> = BTreeMap::new();
        for span in spans {
            let from = if Some(span.since) == first_run {
                NaiveDate::MIN
            } else {
                day_of(span.since, zone)
            };
            let to = span
                .until
                .map(|until| day_of(until, zone).pred_opt().unwrap_or(NaiveDate::MIN));
            tenures
                .entry(span.product.clone())
                .or_default()
                .push(Tenure {
                    person_id: span.person_id.clone(),
                    name: span.name.clone(),
                    from,
                    to,
                });
        }
        Proration {
            today: (!tenures.is_empty()).then(|| day_of(now, zone)),
            tenures,
        }
    }
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
    let mut full = Vec::new();
    let mut partial: Vec<(String, NaiveDate, NaiveDate)> = Vec::new();
    for (name, stretches) in days_held(addition, period, proration).into_values() {
        match stretches.as_slice() {
            [(from, to)] if (*from, *to) == (period.start, period.end) => full.push(name),
            _ => partial.extend(stretches.into_iter().map(|(f, t)| (name.clone(), f, t))),
        }
    }
    full.sort();
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

/// First and last day of an unbroken stretch of days a seat was held.
type Stretch = (NaiveDate, NaiveDate);

/// Each person's unbroken stretches of days holding the product's seat within the period, by
/// person id, with the name to print; people who held it no day of the period are left out.
fn days_held(
    addition: &DesiredAddition,
    period: BillingPeriod,
    proration: &Proration,
) -> BTreeMap<String, (String, Vec<Stretch>)> {
    let ledger = proration
        .tenures
        .get(&addition.product)
        .map(Vec::as_slice)
        .unwrap_or_default();
    // By id: a large client's ledger and holders are each a person per seat, so searching the
    // holders for every span was quadratic.
    let holders: std::collections::HashMap<&str, &str> = addition
        .people
        .iter()
        .map(|h| (&*h.person_id, &*h.name))
        .collect();
    let open_spans: std::collections::HashSet<&str> = ledger
        .iter()
        .filter(|t| t.to.is_none())
        .map(|t| t.person_id.as_str())
        .collect();
    let holds_now = |id: &str| holders.contains_key(id);
    // Per person id: the name of their newest span, when it began, and every span's days.
    let mut spans: BTreeMap<String, (String, NaiveDate, Vec<Stretch>)> = BTreeMap::new();
    let mut add = |id: &str, name: &str, from: NaiveDate, to: NaiveDate| {
        let entry = spans
            .entry(id.to_owned())
            .or_insert_with(|| (name.to_owned(), from, Vec::new()));
        // The newest span's name is the person's name now.
        if from >= entry.1 {
            (entry.0, entry.1) = (name.to_owned(), from);
        }
        entry.2.push((from, to));
    };
    for t in ledger {
        let to = match t.to {
            Some(to) => to,
            None if holds_now(&t.person_id) => NaiveDate::MAX,
            // Given up at this run: last held yesterday.
            None => proration
                .today
                .and_then(|d| d.pred_opt())
                .unwrap_or(NaiveDate::MAX),
        };
        add(&t.person_id, &t.name, t.from, to);
    }
    for h in &addition.people {
        if !open_spans.contains(&*h.person_id) {
            // Taken at this run: from today, or from always at the client's first run.
            add(
                &h.person_id,
                &h.name,
                proration.today.unwrap_or(NaiveDate::MIN),
                NaiveDate::MAX,
            );
        }
    }
    let mut out = BTreeMap::new();
    for (id, (name, _, mut held)) in spans {
        let name = holders
            .get(id.as_str())
            .map_or(name, |now| (*now).to_owned());
        held.sort();
        let mut stretches: Vec<Stretch> = Vec::new();
        for (from, to) in held {
            let (from, to) = (from.max(period.start), to.min(period.end));
            if from > to {
                continue;
            }
            match stretches.last_mut() {
                Some(last) if last.1.succ_opt().is_none_or(|next| from <= next) => {
                    last.1 = last.1.max(to);
                }
                _ => stretches.push((from, to)),
            }
        }
        if !stretches.is_empty() {
            out.insert(id, (name, stretches));
        }
    }
    out
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
    use chrono::DateTime;
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
            name: format!("Person {id}").into(),
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

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("moment")
            .with_timezone(&Utc)
    }

    fn span(id: &str, since: &str, until: Option<&str>) -> Held {
        Held {
            product: "m365".into(),
            person_id: id.into(),
            name: format!("Person {id}"),
            since: at(since),
            until: until.map(at),
        }
    }

    /// (quantity, description) of each line.
    fn billed(
        holders: &[&str],
        period: BillingPeriod,
        spans: &[Held],
        now: &str,
        zone: Tz,
    ) -> Vec<(String, String)> {
        let proration = Proration::from_ledger(spans, at(now), zone);
        let (lines, _) = product_lines(
            "M365",
            &addition(holders, holders.len() as u32),
            period,
            &proration,
            None,
        );
        lines
            .into_iter()
            .map(|l| (l.quantity.to_string(), l.description))
            .collect()
    }

    #[test]
    fn a_period_before_the_ledger_began_bills_the_first_run_whole() {
        // The first run was in December; November is billed afterwards.
        let spans = [
            span("a", "2026-12-03T09:00:00Z", None),
            span("b", "2026-12-03T09:00:00Z", Some("2026-12-05T09:00:00Z")),
            span("late", "2026-12-05T09:00:00Z", None),
        ];
        let lines = billed(
            &["a", "late"],
            NOVEMBER,
            &spans,
            "2026-12-07T09:00:00Z",
            Tz::UTC,
        );
        assert_eq!(
            lines,
            [(
                "2".to_owned(),
                "Microsoft 365, whole period: Person a, Person b".to_owned()
            )],
            "b gave the seat up after November, late took it after: {lines:?}"
        );
    }

    #[test]
    fn this_runs_changes_count_as_the_ledger_will_record_them() {
        let spans = [
            span("a", "2026-11-02T09:00:00Z", None),
            span("grace", "2026-11-02T09:00:00Z", None),
        ];
        // Planned on the 17th: grace gives the seat up (last held the 16th), linus takes it.
        let planned = billed(
            &["a", "linus"],
            NOVEMBER,
            &spans,
            "2026-11-17T10:00:00Z",
            Tz::UTC,
        );
        assert!(planned.iter().any(|(q, d)| q == "0.5333"
            && d.ends_with("Person grace: 1 Nov to 16 Nov 2026 (16 of 30 days)")));
        assert!(planned.iter().any(|(q, d)| q == "0.4667"
            && d.ends_with("Person linus: 17 Nov to 30 Nov 2026 (14 of 30 days)")));
        // Recorded at the plan's moment, then planned again a month later: the same lines.
        let recorded = [
            span("a", "2026-11-02T09:00:00Z", None),
            span(
                "grace",
                "2026-11-02T09:00:00Z",
                Some("2026-11-17T10:00:00Z"),
            ),
            span("linus", "2026-11-17T10:00:00Z", None),
        ];
        let later = billed(
            &["a", "linus"],
            NOVEMBER,
            &recorded,
            "2026-12-20T10:00:00Z",
            Tz::UTC,
        );
        assert_eq!(planned, later);
    }

    #[test]
    fn days_are_the_pipelines_zone_days() {
        // 23:30 UTC on 30 November is already 1 December in Auckland, still 30 November in
        // Los Angeles.
        let spans = [span("a", "2026-11-02T09:00:00Z", None)];
        let now = "2026-11-30T23:30:00Z";
        let auckland = billed(&["a", "n"], NOVEMBER, &spans, now, Tz::Pacific__Auckland);
        assert_eq!(
            auckland.len(),
            1,
            "n starts in December there: {auckland:?}"
        );
        let la = billed(&["a", "n"], NOVEMBER, &spans, now, Tz::America__Los_Angeles);
        assert!(
            la.iter()
                .any(|(q, d)| q == "0.0333" && d.contains("Person n: 30 Nov to 30 Nov 2026")),
            "{la:?}"
        );
    }

    #[test]
    fn taken_and_given_up_on_one_day_bills_nothing_and_a_return_bills_each_stretch() {
        let february = BillingPeriod {
            start: NaiveDate::from_ymd_opt(2028, 2, 1).expect("d"),
            end: NaiveDate::from_ymd_opt(2028, 2, 29).expect("d"),
        };
        let spans = [
            span("first", "2028-01-10T09:00:00Z", None),
            span(
                "blink",
                "2028-02-10T09:00:00Z",
                Some("2028-02-10T15:00:00Z"),
            ),
            span("back", "2028-01-20T09:00:00Z", Some("2028-02-05T09:00:00Z")),
            span("back", "2028-02-20T09:00:00Z", None),
        ];
        let lines = billed(
            &["first", "back"],
            february,
            &spans,
            "2028-02-29T12:00:00Z",
            Tz::UTC,
        );
        let texts: Vec<&str> = lines.iter().map(|(_, d)| d.as_str()).collect();
        assert_eq!(
            texts,
            [
                "Microsoft 365, whole period: Person first",
                "Microsoft 365, Person back: 1 Feb to 4 Feb 2028 (4 of 29 days)",
                "Microsoft 365, Person back: 20 Feb to 29 Feb 2028 (10 of 29 days)",
            ],
            "{lines:?}"
        );
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
