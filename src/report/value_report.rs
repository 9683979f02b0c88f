//! The client value report: for one client and period, the people billed and, for each, the
//! service tickets opened and closed for them — the list an account manager walks a client
//! through at a quarterly review.
//!
//! Who was billed comes from the seat ledger (every span that overlaps the period), what was
//! done from the billing system's service desk (a PSA's tickets), joined through the
//! person's contact. Billing systems without a service desk cannot make one, and say so.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use rollcall_core::{BillingSystem, Ticket};
use serde::Serialize;

use crate::config::{Client, Pipeline};
use crate::store::{Store, StoreError};

/// The template shipped with rollcall.
pub const TEMPLATE: &str = include_str!("../../templates/value-report.hbs");

#[derive(Debug, thiserror::Error)]
pub enum ValueReportError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Remote(#[from] rollcall_core::RemoteError),
    #[error(
        "the billing system `{0}` has no service desk, so there are no tickets to report \
         (hint: the client value report needs a PSA, a billing system with a service desk)"
    )]
    NoServiceDesk(&'static str),
    #[error("the period is empty: --from {from} is after --to {to}")]
    Period { from: NaiveDate, to: NaiveDate },
}

#[derive(Debug, Clone, Serialize)]
pub struct ValueReport {
    pub pipeline: String,
    pub client: String,
    pub from: String,
    pub to: String,
    pub people: Vec<PersonValue>,
    pub opened: usize,
    pub closed: usize,
    /// Why nobody is listed, when nobody is: an empty table alone reads as "nobody was billed".
    pub note: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PersonValue {
    pub name: String,
    /// The products they were billed for in the period.
    pub products: String,
    pub opened: usize,
    pub closed: usize,
    pub tickets: Vec<TicketLine>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TicketLine {
    pub id: String,
    pub summary: String,
    pub opened: String,
    pub closed: String,
}

fn day(ts: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(ts.get(..10)?, "%Y-%m-%d").ok()
}

fn within(ts: Option<&str>, from: NaiveDate, to: NaiveDate) -> bool {
    ts.and_then(day).is_some_and(|d| d >= from && d <= to)
}

/// Builds the value report of `client` for the days `from..=to`.
pub async fn build(
    pipeline: &Pipeline,
    client: &Client,
    store: &Store,
    billing: &dyn BillingSystem,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<ValueReport, ValueReportError> {
    if from > to {
        return Err(ValueReportError::Period { from, to });
    }
    let desk = billing
        .service_desk()
        .ok_or(ValueReportError::NoServiceDesk(billing.kind()))?;
    let products: Vec<String> = client
        .rules
        .seats
        .iter()
        .map(|s| s.identifier.clone())
        .collect();
    let state = billing.read(&client.account, &products).await?;
    let contact_id: BTreeMap<String, String> = state
        .contacts
        .iter()
        .map(|c| (c.fields.key().0, c.id.clone()))
        .collect();
    let tickets = desk.tickets(&state.account).await?;

    // Everyone who held a seat at some point in the period, with what they held.
    let spans = store
        .seat_history(&pipeline.name, &client.name, None, None)
        .await?;
    let ledger_began = spans.iter().filter_map(|s| day(&s.since)).min();
    let mut held: BTreeMap<String, (String, BTreeSet<String>, Option<String>)> = BTreeMap::new();
    for s in spans {
        let started = day(&s.since).is_some_and(|d| d <= to);
        let not_ended = s.until.as_deref().and_then(day).is_none_or(|d| d >= from);
        if started && not_ended {
            let entry = held.entry(s.person_id.clone()).or_insert_with(|| {
                (
                    s.person_name.clone(),
                    BTreeSet::new(),
                    s.contact_key.clone(),
                )
            });
            entry.1.insert(s.product.clone());
            if entry.2.is_none() {
                entry.2 = s.contact_key.clone();
            }
        }
    }
    let mut people: Vec<PersonValue> = held
        .into_values()
        .map(|(name, products, contact)| {
            let id = contact.as_ref().and_then(|k| contact_id.get(k));
            let theirs: Vec<&Ticket> = tickets
                .iter()
                .filter(|t| id.is_some() && t.contact_id.as_ref() == id)
                .filter(|t| {
                    within(t.opened.as_deref(), from, to) || within(t.closed.as_deref(), from, to)
                })
                .collect();
            PersonValue {
                name,
                products: products.into_iter().collect::<Vec<_>>().join(", "),
                opened: theirs
                    .iter()
                    .filter(|t| within(t.opened.as_deref(), from, to))
                    .count(),
                closed: theirs
                    .iter()
                    .filter(|t| within(t.closed.as_deref(), from, to))
                    .count(),
                tickets: theirs
                    .iter()
                    .map(|t| TicketLine {
                        id: t.id.clone(),
                        summary: t.summary.clone(),
                        opened: t
                            .opened
                            .as_deref()
                            .and_then(|o| o.get(..10))
                            .unwrap_or("")
                            .to_owned(),
                        closed: t
                            .closed
                            .as_deref()
                            .and_then(|c| c.get(..10))
                            .unwrap_or("")
                            .to_owned(),
                    })
                    .collect(),
            }
        })
        .collect();
    people.sort_by(|a, b| b.opened.cmp(&a.opened).then_with(|| a.name.cmp(&b.name)));
    let note = match ledger_began {
        _ if !people.is_empty() => String::new(),
        None => format!(
            "No seat of {} has been recorded yet: the seat ledger starts with the first applied run (`rollcall run`).",
            client.name
        ),
        Some(began) if began > to => format!(
            "The seat ledger of {} begins on {began}, after this period: rollcall cannot tell who was billed before it (hint: --from {began} or later).",
            client.name
        ),
        Some(_) => "Nobody held a seat in this period.".to_owned(),
    };
    Ok(ValueReport {
        note,
        pipeline: pipeline.name.clone(),
        client: client.name.clone(),
        from: from.to_string(),
        to: to.to_string(),
        opened: people.iter().map(|p| p.opened).sum(),
        closed: people.iter().map(|p| p.closed).sum(),
        people,
    })
}

pub fn html(report: &ValueReport, template: &str) -> Result<String, String> {
    let report = super::clean_json_value(report).map_err(|e| e.to_string())?;
    handlebars::Handlebars::new()
        .render_template(template, &report)
        .map_err(|e| e.to_string())
}

/// One row per person and ticket (a person without tickets gets one row of their own).
pub fn csv(report: &ValueReport) -> String {
    // Directory and vendor text: cleaned, and never a formula (rollcall_core::text).
    let q = rollcall_core::text::csv_cell;
    let mut out = String::from("client,person,products,ticket,summary,opened,closed\n");
    for p in &report.people {
        if p.tickets.is_empty() {
            out.push_str(&format!(
                "{},{},{},,,,\n",
                q(&report.client),
                q(&p.name),
                q(&p.products)
            ));
        }
        for t in &p.tickets {
            out.push_str(&format!(
                "{},{},{},{},{},{},{}\n",
                q(&report.client),
                q(&p.name),
                q(&p.products),
                q(&t.id),
                q(&t.summary),
                q(&t.opened),
                q(&t.closed)
            ));
        }
    }
    out
}

/// Where an HTML report goes when it would otherwise be printed to a terminal: a page of
/// markup there helps no one.
pub fn file_name(report: &ValueReport) -> std::path::PathBuf {
    let safe: String = report
        .client
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    std::path::PathBuf::from(format!(
        "value-report-{safe}-{}-{}.html",
        report.from, report.to
    ))
}
