//! `rollcall runs`: the recent runs with their ids, so `rollcall report RUN_ID` can be
//! reached from the terminal without reading JSON.
//!
//! The figures are the run report's own (built from the recorded plan and outcomes), so the
//! list and the report never disagree about seats or money.

use rust_decimal::Decimal;
use serde::Serialize;

use crate::engine::RecordedRun;
use crate::report::run_report;
use crate::store::{RunRow, Store, StoreError};

/// One run, summed over its clients.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RunSummary {
    pub run_id: String,
    pub pipeline: String,
    /// What started it: `run`, `apply`, `worker` (a queued job) or `demo`.
    pub trigger: String,
    pub started_at: String,
    /// `ok`, `refused`, `remote`, …; `unfinished` for a run that never recorded its end
    /// (killed, or still going).
    pub outcome: String,
    pub clients: usize,
    pub seats_before: u64,
    pub seats_after: u64,
    pub amount_before: Decimal,
    pub amount_after: Decimal,
    pub currency: String,
}

/// The `limit` most recent runs, newest first.
pub async fn recent(store: &Store, limit: u32) -> Result<Vec<RunSummary>, StoreError> {
    Ok(store.runs(limit).await?.into_iter().map(summary).collect())
}

fn summary(row: RunRow) -> RunSummary {
    let recorded = match (&row.plan, &row.outcomes) {
        (Some(plan), Some(outcomes)) => serde_json::from_str(plan)
            .ok()
            .zip(serde_json::from_str(outcomes).ok())
            .map(|(plan, outcomes)| RecordedRun {
                run_id: row.id.clone(),
                at: row.started_at.clone(),
                plan,
                outcomes,
            }),
        _ => None,
    };
    let report = recorded.as_ref().map(|r| run_report::build(r, &[]));
    let sum = |f: fn(&run_report::ClientReport) -> Decimal| -> Decimal {
        report
            .iter()
            .flat_map(|r| &r.clients)
            .map(f)
            .sum::<Decimal>()
    };
    let seats = |f: fn(&run_report::ClientReport) -> u64| -> u64 {
        report.iter().flat_map(|r| &r.clients).map(f).sum()
    };
    RunSummary {
        clients: report.as_ref().map_or(0, |r| r.clients.len()),
        seats_before: seats(|c| c.seats_before),
        seats_after: seats(|c| c.seats_after),
        amount_before: sum(|c| c.amount_before),
        amount_after: sum(|c| c.amount_after),
        currency: report.map(|r| r.currency).unwrap_or_default(),
        outcome: row.outcome.unwrap_or_else(|| "unfinished".into()),
        run_id: row.id,
        pipeline: row.pipeline,
        trigger: row.command,
        started_at: row.started_at,
    }
}

/// The runs as a table for a terminal.
pub fn text(runs: &[RunSummary]) -> String {
    if runs.is_empty() {
        return "No runs recorded yet (hint: `rollcall run FILE` or `rollcall apply FILE`).\n"
            .into();
    }
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header([
        "run id", "started", "pipeline", "trigger", "outcome", "clients", "seats", "monthly",
    ]);
    for r in runs {
        let money = format!(
            "{} → {}{}",
            r.amount_before,
            r.amount_after,
            if r.currency.is_empty() {
                String::new()
            } else {
                format!(" {}", r.currency)
            }
        );
        t.add_row([
            r.run_id.clone(),
            r.started_at
                .get(..19)
                .unwrap_or(&r.started_at)
                .replace('T', " "),
            r.pipeline.clone(),
            r.trigger.clone(),
            r.outcome.clone(),
            r.clients.to_string(),
            format!("{} → {}", r.seats_before, r.seats_after),
            money,
        ]);
    }
    format!("{t}\nSee one: rollcall report RUN_ID --format html|csv|json\n")
}
