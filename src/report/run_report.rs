//! The run report: what a run billed, client by client, as a self-contained HTML page, CSV or
//! JSON — the page an account manager can send a client.
//!
//! It is built from a recorded run (the plan and its outcomes, kept in the store) and the
//! pipeline's earlier runs (for the seats-over-time chart), so `rollcall report RUN_ID` makes
//! the same page again at any time. The HTML comes from a handlebars template shipped with
//! rollcall (`templates/run-report.hbs`) that an operator may replace; it escapes everything
//! it is given except the chart, which this module draws itself.

use std::collections::BTreeMap;

use rollcall_core::Change;
use rust_decimal::Decimal;
use serde::Serialize;

use crate::apply::OutcomeState;
use crate::engine::RecordedRun;
use crate::run::ClientPlan;

/// The template shipped with rollcall.
pub const TEMPLATE: &str = include_str!("../../templates/run-report.hbs");

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub at: String,
    pub pipeline: String,
    pub target: String,
    /// The currency every amount is in (ISO 4217), or empty for a run recorded before it was.
    pub currency: String,
    pub client_count: usize,
    pub clients: Vec<ClientReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClientReport {
    pub client: String,
    pub status: String,
    /// `done`, `refused`, `stale`, `shadow`, `skipped` or `failed`, for styling.
    pub status_class: String,
    pub status_detail: String,
    pub hint: String,
    pub seats_before: u64,
    pub seats_after: u64,
    pub amount_before: Decimal,
    pub amount_after: Decimal,
    pub amount_delta: String,
    pub delta_class: String,
    pub products: Vec<ProductLine>,
    pub contacts: ContactCounts,
    /// The people whose contacts this run deactivated (they left, or stopped counting), by name.
    pub leavers: Vec<String>,
    pub guards: Vec<String>,
    pub excluded: Vec<String>,
    pub notes: Vec<String>,
    /// Inline SVG, drawn here from the recorded runs.
    pub chart: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProductLine {
    pub product: String,
    pub identifier: String,
    pub before: u32,
    pub after: u32,
    pub unit_price: Decimal,
    pub amount_before: Decimal,
    pub amount_after: Decimal,
    pub amount_delta: String,
    pub delta_class: String,
    /// The people billed, by name.
    pub people: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ContactCounts {
    pub created: usize,
    pub updated: usize,
    pub reactivated: usize,
    pub deactivated: usize,
}

fn signed(d: Decimal) -> (String, String) {
    if d > Decimal::ZERO {
        (format!("+{d}"), "up".into())
    } else if d < Decimal::ZERO {
        (d.to_string(), "down".into())
    } else {
        ("0".into(), String::new())
    }
}

/// Builds the report of `run`, with `history` (the pipeline's recorded runs, oldest first)
/// for the charts. Runs recorded after `run` are left out, so the report made again later is
/// the page written when it ran.
pub fn build(run: &RecordedRun, history: &[RecordedRun]) -> RunReport {
    let upto = history
        .iter()
        .position(|r| r.run_id == run.run_id)
        .map_or_else(
            || history.iter().take_while(|r| r.at <= run.at).count(),
            |i| i + 1,
        );
    let history = &history[..upto];
    let clients: Vec<ClientReport> = run
        .plan
        .clients
        .iter()
        .map(|c| client_report(run, c, history))
        .collect();
    RunReport {
        run_id: run.run_id.clone(),
        at: run.at.get(..19).unwrap_or(&run.at).replace('T', " ") + " UTC",
        pipeline: run.plan.pipeline.clone(),
        target: run.plan.target.clone(),
        currency: run
            .plan
            .currency
            .map(|c| {
                serde_json::to_value(c)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            })
            .unwrap_or_default(),
        client_count: clients.len(),
        clients,
    }
}

fn client_report(run: &RecordedRun, c: &ClientPlan, history: &[RecordedRun]) -> ClientReport {
    let changes: Vec<&Change> = run.plan.changes_for(&c.client).collect();
    let outcome = run.outcomes.iter().find(|o| o.client == c.client);
    let (status, status_class, status_detail, hint) =
        match (&c.failure, &c.refusal, outcome.map(|o| &o.state)) {
            (Some(f), _, _) => (
                "failed".to_owned(),
                "failed",
                f.message.clone(),
                f.hint.clone(),
            ),
            (None, Some(r), _) => (
                "refused by a guard".to_owned(),
                "refused",
                r.reason.clone(),
                "if the drop is real, run again with --allow-drop".to_owned(),
            ),
            (None, None, _) if c.shadow => (
                "shadow mode".to_owned(),
                "shadow",
                format!("{} change(s) planned, none written", changes.len()),
                String::new(),
            ),
            (None, None, Some(OutcomeState::Failed { error, hint })) => {
                ("failed".to_owned(), "failed", error.clone(), hint.clone())
            }
            (None, None, Some(OutcomeState::Stale { reason })) => (
                "not applied".to_owned(),
                "stale",
                reason.clone(),
                "make a new plan and review it".to_owned(),
            ),
            (None, None, Some(OutcomeState::Skipped { reason })) => (
                "skipped".to_owned(),
                "skipped",
                reason.clone(),
                String::new(),
            ),
            // Nothing to write is not "billed": the bill stands as it was.
            (None, None, _) if changes.is_empty() => (
                "unchanged".to_owned(),
                "done",
                "nothing to change".to_owned(),
                String::new(),
            ),
            (None, None, _) => (
                "billed".to_owned(),
                "done",
                format!(
                    "{} change(s) applied",
                    outcome.map(|o| o.applied).unwrap_or(0)
                ),
                String::new(),
            ),
        };

    // Each product before and after: from its change if it has one, else unchanged.
    let mut lines: BTreeMap<String, ProductLine> = BTreeMap::new();
    for seats in &c.seats {
        let people = seats
            .people
            .iter()
            .map(|h| &*h.name)
            .collect::<Vec<_>>()
            .join(", ");
        lines.insert(
            seats.identifier.to_lowercase(),
            line(
                if seats.name.is_empty() {
                    &seats.product
                } else {
                    &seats.name
                },
                &seats.identifier,
                seats.quantity,
                seats.quantity,
                seats.unit_price,
                seats.unit_price,
                people,
            ),
        );
    }
    let mut contacts = ContactCounts::default();
    let mut leavers = Vec::new();
    for change in &changes {
        match change {
            Change::CreateContact { .. } => contacts.created += 1,
            Change::UpdateContact { .. } => contacts.updated += 1,
            Change::ReactivateContact { .. } => contacts.reactivated += 1,
            Change::DeactivateContact { before, key, .. } => {
                contacts.deactivated += 1;
                leavers.push(contact_name(before, &key.0));
            }
            Change::CreateAddition { product, after } => {
                if let Some(l) = lines.get_mut(&product.to_lowercase()) {
                    *l = line(
                        &l.product,
                        &l.identifier,
                        0,
                        after.quantity,
                        after.unit_price,
                        after.unit_price,
                        l.people.clone(),
                    );
                }
            }
            Change::UpdateAddition {
                product,
                before,
                after,
                ..
            } => {
                if let Some(l) = lines.get_mut(&product.to_lowercase()) {
                    *l = line(
                        &l.product,
                        &l.identifier,
                        before.quantity,
                        after.quantity,
                        before.unit_price,
                        after.unit_price,
                        l.people.clone(),
                    );
                }
            }
            Change::CancelAddition {
                product, before, ..
            } => {
                if let Some(l) = lines.get_mut(&product.to_lowercase()) {
                    *l = line(
                        &l.product,
                        &l.identifier,
                        before.quantity,
                        0,
                        before.unit_price,
                        before.unit_price,
                        l.people.clone(),
                    );
                }
            }
            Change::CreateCustomer { .. } => {}
            Change::CreateInvoice { after, .. } => {
                invoice_lines(&mut lines, None, after);
            }
            Change::UpdateInvoice { before, after, .. } => {
                invoice_lines(&mut lines, Some(before), after);
            }
        }
    }
    let products: Vec<ProductLine> = lines.into_values().collect();
    let amount_before: Decimal = products.iter().map(|p| p.amount_before).sum();
    let amount_after: Decimal = products.iter().map(|p| p.amount_after).sum();
    let (amount_delta, delta_class) = signed(amount_after - amount_before);

    let mut guards = Vec::new();
    if let Some(r) = &c.refusal {
        guards.push(format!("Refused: {}.", r.reason));
    }
    for w in &c.withheld {
        guards.push(format!(
            "Withheld {} {}: {}.",
            w.change.kind().replace('_', " "),
            w.change.subject(),
            w.reason
        ));
    }
    let excluded = c
        .excluded
        .iter()
        .map(|e| format!("{} ({})", e.name, e.rule))
        .collect();
    ClientReport {
        client: c.client.clone(),
        status,
        status_class: status_class.to_owned(),
        status_detail,
        hint,
        seats_before: products.iter().map(|p| u64::from(p.before)).sum(),
        seats_after: products.iter().map(|p| u64::from(p.after)).sum(),
        amount_before,
        amount_after,
        amount_delta,
        delta_class,
        products,
        contacts,
        leavers,
        guards,
        excluded,
        notes: c.notes.clone(),
        chart: chart(&c.client, history),
    }
}

/// An invoice change read as seats per product, for the same table an agreement's additions
/// fill. Prorated lines count whole seats only (their fractions show on the invoice itself).
fn invoice_lines(
    lines: &mut BTreeMap<String, ProductLine>,
    before: Option<&rollcall_core::InvoiceFields>,
    after: &rollcall_core::InvoiceFields,
) {
    use rust_decimal::prelude::ToPrimitive;
    let seats = |fields: Option<&rollcall_core::InvoiceFields>, product: &str| {
        fields.map_or((0, None), |f| {
            let price = f
                .lines
                .iter()
                .find(|l| l.product.eq_ignore_ascii_case(product))
                .map(|l| l.unit_price);
            (f.quantity_of(product).trunc().to_u32().unwrap_or(0), price)
        })
    };
    for l in lines.values_mut() {
        let (was, price_was) = seats(before, &l.identifier);
        let (now, price_now) = seats(Some(after), &l.identifier);
        let price_now = price_now.or(price_was).unwrap_or(l.unit_price);
        *l = line(
            &l.product,
            &l.identifier,
            was,
            now,
            price_was.unwrap_or(price_now),
            price_now,
            l.people.clone(),
        );
    }
}

fn line(
    product: &str,
    identifier: &str,
    before: u32,
    after: u32,
    price_before: Decimal,
    price_after: Decimal,
    people: String,
) -> ProductLine {
    let amount_before = price_before * Decimal::from(before);
    let amount_after = price_after * Decimal::from(after);
    let (amount_delta, delta_class) = signed(amount_after - amount_before);
    ProductLine {
        product: product.to_owned(),
        identifier: identifier.to_owned(),
        before,
        after,
        unit_price: price_after,
        amount_before,
        amount_after,
        amount_delta,
        delta_class,
        people,
    }
}

/// Seats billed to `client` after each recorded run, as an inline SVG line chart.
pub fn chart(client: &str, history: &[RecordedRun]) -> String {
    let points: Vec<(&str, u64)> = history
        .iter()
        .filter_map(|r| {
            let c = r.plan.clients.iter().find(|c| c.client == client)?;
            let applied = r
                .outcomes
                .iter()
                .find(|o| o.client == client)
                .is_some_and(|o| matches!(o.state, OutcomeState::Done));
            let seats = if applied && c.failure.is_none() {
                c.seats_after
            } else {
                c.seats_before
            };
            Some((r.at.as_str(), seats))
        })
        .collect();
    // Runs on one day are told apart by the time: an axis from 2026-11-30 to 2026-11-30
    // says nothing.
    let same_day = points
        .first()
        .zip(points.last())
        .is_some_and(|((a, _), (b, _))| a.get(..10) == b.get(..10));
    let label = |at: &str| -> String {
        let upto = if same_day { 16 } else { 10 };
        at.get(..upto).unwrap_or(at).replace('T', " ")
    };
    let points: Vec<(String, u64)> = points.into_iter().map(|(at, s)| (label(at), s)).collect();
    let (w, h, pad) = (640.0_f64, 160.0_f64, 32.0_f64);
    let max = points.iter().map(|(_, s)| *s).max().unwrap_or(0).max(1) as f64;
    let n = points.len().max(1);
    let x = |i: usize| {
        if n == 1 {
            w / 2.0
        } else {
            pad + (w - 2.0 * pad) * i as f64 / (n - 1) as f64
        }
    };
    let y = |s: u64| h - pad - (h - 2.0 * pad) * s as f64 / max;
    let coords: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, (_, s))| format!("{:.1},{:.1}", x(i), y(*s)))
        .collect();
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="Seats billed to {} over time">"##,
        escape(client)
    );
    svg.push_str(&format!(
        r##"<line x1="{pad}" y1="{b}" x2="{r}" y2="{b}" stroke="#d9e0e7"/><text x="4" y="{t}" font-size="11" fill="#5b6b7c">{max}</text><text x="4" y="{b}" font-size="11" fill="#5b6b7c">0</text>"##,
        b = h - pad,
        r = w - pad,
        t = pad + 4.0,
    ));
    if !coords.is_empty() {
        svg.push_str(&format!(
            r##"<polyline fill="none" stroke="#2857a4" stroke-width="2" points="{}"/>"##,
            coords.join(" ")
        ));
    }
    for (i, (day, seats)) in points.iter().enumerate() {
        svg.push_str(&format!(
            r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="#2857a4"><title>{day}: {seats} seats</title></circle>"##,
            x(i),
            y(*seats)
        ));
    }
    // One label when both ends would read the same (runs within one minute).
    if let Some((only, _)) = points
        .first()
        .filter(|(first, _)| points.last().is_some_and(|(last, _)| last == first))
    {
        svg.push_str(&format!(
            r##"<text x="{pad}" y="{}" font-size="11" fill="#5b6b7c">{only}</text>"##,
            h - 8.0
        ));
    } else if let (Some((first, _)), Some((last, _))) = (points.first(), points.last()) {
        svg.push_str(&format!(
            r##"<text x="{pad}" y="{}" font-size="11" fill="#5b6b7c">{first}</text><text x="{}" y="{}" font-size="11" fill="#5b6b7c" text-anchor="end">{last}</text>"##,
            h - 8.0,
            w - pad,
            h - 8.0
        ));
    }
    svg.push_str("</svg>");
    svg
}

/// A contact's name as the billing system held it, else its matching key (an email).
fn contact_name(fields: &rollcall_core::ContactFields, key: &str) -> String {
    let name = format!("{} {}", fields.first_name.trim(), fields.last_name.trim());
    match name.trim() {
        "" => key.to_owned(),
        n => n.to_owned(),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders the report as HTML with `template` (the shipped one unless an operator gives theirs).
pub fn html(report: &RunReport, template: &str) -> Result<String, String> {
    crate::config::bounds::template(template).map_err(|e| e.to_string())?;
    let mut hb = handlebars::Handlebars::new();
    hb.set_strict_mode(false);
    let report = super::clean_json_value(report).map_err(|e| e.to_string())?;
    hb.render_template(template, &report)
        .map_err(|e| e.to_string())
}

/// One row per client and product.
pub fn csv(report: &RunReport) -> String {
    let mut out = String::from(
        "run_id,client,product,identifier,seats_before,seats_after,unit_price,amount_before,amount_after,amount_change,status,people,currency\n",
    );
    // Directory and vendor text: cleaned, and never a formula (rollcall_core::text).
    let q = rollcall_core::text::csv_cell;
    for c in &report.clients {
        for p in &c.products {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
                q(&report.run_id),
                q(&c.client),
                q(&p.product),
                q(&p.identifier),
                p.before,
                p.after,
                p.unit_price,
                p.amount_before,
                p.amount_after,
                q(&p.amount_delta),
                q(&c.status),
                q(&p.people),
                q(&report.currency)
            ));
        }
    }
    out
}
