//! What the console's pages show, read from the store, the queue and the pipelines: each
//! function gathers one page's facts into plain serialisable rows for its template.
//!
//! Seats and money come from the recorded runs (the run reports' own figures, so the console,
//! `rollcall runs` and the report pages never disagree); the people holding seats now come from
//! the seat ledger. What a client is billed after a run is the plan's "after" when the run
//! wrote it, else its "before": a refused, failed or shadow run left the bill as it was.

use std::collections::BTreeMap;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::Serialize;

use super::chart::{self, Point};
use crate::config::Pipeline;
use crate::engine::RecordedRun;
use crate::report::run_report::{self, ClientReport, ProductLine};
use crate::web::Service;

/// Runs per pipeline the charts go back over: enough for months of daily runs, and a page
/// that stays quick however long the store has run.
const HISTORY_RUNS: usize = 180;

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
}

/// One run of a client, as billed after it.
#[derive(Debug, Clone, Serialize)]
pub struct ClientRun {
    pub run_id: String,
    pub at: String,
    pub status: String,
    pub status_class: String,
    pub status_detail: String,
    pub seats_before: u64,
    pub seats_after: u64,
    pub amount_before: Decimal,
    pub amount_after: Decimal,
    /// What the client is billed after this run.
    pub seats_now: u64,
    pub amount_now: Decimal,
    #[serde(skip)]
    pub products: Vec<ProductLine>,
    #[serde(skip)]
    applied: bool,
}

/// A client on the overview.
#[derive(Debug, Clone, Serialize)]
pub struct ClientRow {
    pub pipeline: String,
    pub client: String,
    pub href: String,
    pub currency: String,
    /// `None` before the client's first recorded run.
    pub last: Option<ClientRun>,
    pub runs: usize,
    pub spark: String,
    /// The pending approval the client waits on (filled in by the page's handler).
    pub approval: Option<PendingLink>,
}

/// A client's pending approval, linked from its rows and page.
#[derive(Debug, Clone, Serialize)]
pub struct PendingLink {
    pub id: String,
    pub href: String,
}

/// The recorded runs of one pipeline, oldest first, per client.
pub struct PipelineHistory {
    pub currency: String,
    pub clients: BTreeMap<String, Vec<ClientRun>>,
}

fn moment(at: &str) -> String {
    at.get(..16).unwrap_or(at).replace('T', " ")
}

fn client_run(run: &RecordedRun, c: &ClientReport) -> ClientRun {
    // "done" is billed or unchanged: what the run planned is what the client has.
    let applied = c.status_class == "done";
    ClientRun {
        run_id: run.run_id.clone(),
        at: moment(&run.at),
        status: c.status.clone(),
        status_class: c.status_class.clone(),
        status_detail: c.status_detail.clone(),
        seats_before: c.seats_before,
        seats_after: c.seats_after,
        amount_before: c.amount_before,
        amount_after: c.amount_after,
        seats_now: if applied {
            c.seats_after
        } else {
            c.seats_before
        },
        amount_now: if applied {
            c.amount_after
        } else {
            c.amount_before
        },
        products: c.products.clone(),
        applied,
    }
}

/// What a pipeline's recorded runs say about each of its clients.
pub async fn history(service: &Service, pipeline: &str) -> Result<PipelineHistory, ViewError> {
    let records = service.store.reports(pipeline).await?;
    let skip = records.len().saturating_sub(HISTORY_RUNS);
    let mut out = PipelineHistory {
        currency: String::new(),
        clients: BTreeMap::new(),
    };
    for record in records.into_iter().skip(skip) {
        let id = record.run_id.clone();
        let Ok(run) = RecordedRun::try_from(record) else {
            tracing::warn!(run = %id, "The console left out a run it cannot read.");
            continue;
        };
        let report = run_report::build(&run, &[]);
        if !report.currency.is_empty() {
            out.currency = report.currency.clone();
        }
        for c in &report.clients {
            out.clients
                .entry(c.client.clone())
                .or_default()
                .push(client_run(&run, c));
        }
    }
    Ok(out)
}

fn seat_points(runs: &[ClientRun]) -> Vec<Point> {
    runs.iter()
        .map(|r| Point {
            label: r.at.clone(),
            value: Decimal::from(r.seats_now),
        })
        .collect()
}

fn money_points(runs: &[ClientRun]) -> Vec<Point> {
    runs.iter()
        .map(|r| Point {
            label: r.at.clone(),
            value: r.amount_now,
        })
        .collect()
}

pub fn client_href(pipeline: &str, client: &str) -> String {
    format!(
        "/console/clients/{}/{}",
        super::auth::encode_component(pipeline).replace('/', "%2F"),
        super::auth::encode_component(client).replace('/', "%2F")
    )
}

/// Every client of every pipeline the service serves, with what it is billed now.
pub async fn clients(service: &Service) -> Result<Vec<ClientRow>, ViewError> {
    let mut rows = Vec::new();
    for pipeline in &service.pipelines {
        let history = history(service, &pipeline.name).await?;
        for client in &pipeline.clients {
            let runs = history
                .clients
                .get(&client.name)
                .cloned()
                .unwrap_or_default();
            rows.push(ClientRow {
                pipeline: pipeline.name.clone(),
                client: client.name.clone(),
                href: client_href(&pipeline.name, &client.name),
                currency: history.currency.clone(),
                spark: chart::spark("seats", &seat_points(&runs)),
                runs: runs.len(),
                last: runs.last().cloned(),
                approval: None,
            });
        }
    }
    Ok(rows)
}

/// A person holding a seat now, from the ledger.
#[derive(Debug, Clone, Serialize)]
pub struct Holder {
    pub product: String,
    pub person: String,
    pub since: String,
    pub last_seen: String,
}

/// A product of the client as billed after its last run.
#[derive(Debug, Clone, Serialize)]
pub struct ProductNow {
    pub product: String,
    pub identifier: String,
    pub seats: u32,
    pub unit_price: Decimal,
    pub amount: Decimal,
}

/// One client's page.
#[derive(Debug, Clone, Serialize)]
pub struct ClientPage {
    pub pipeline: String,
    pub client: String,
    pub currency: String,
    pub last: Option<ClientRun>,
    pub products: Vec<ProductNow>,
    pub seats_chart: String,
    pub money_chart: String,
    pub holders: Vec<Holder>,
    /// Newest first.
    pub runs: Vec<ClientRun>,
    /// The pending approval the client waits on (filled in by the page's handler).
    pub approval: Option<PendingLink>,
}

/// The pipeline and client named in a console address, as the service knows them.
pub fn find<'s>(service: &'s Service, pipeline: &str, client: &str) -> Option<&'s Arc<Pipeline>> {
    service
        .pipelines
        .iter()
        .find(|p| p.name == pipeline && p.clients.iter().any(|c| c.name == client))
}

pub async fn client_page(
    service: &Service,
    pipeline: &Pipeline,
    client: &str,
) -> Result<ClientPage, ViewError> {
    let history = history(service, &pipeline.name).await?;
    let runs = history.clients.get(client).cloned().unwrap_or_default();
    let what_money = if history.currency.is_empty() {
        "a month".to_owned()
    } else {
        format!("{} a month", history.currency)
    };
    let holders = service
        .store
        .seat_history(&pipeline.name, client, None, None)
        .await?
        .into_iter()
        .filter(|s| s.until.is_none())
        .map(|s| Holder {
            product: s.product,
            person: s.person_name,
            since: moment(&s.since),
            last_seen: moment(&s.last_seen),
        })
        .collect::<Vec<_>>();
    let mut holders = holders;
    holders.sort_by(|a, b| (&a.product, &a.person).cmp(&(&b.product, &b.person)));
    let products = runs
        .last()
        .map(|r| {
            r.products
                .iter()
                .map(|p| {
                    let (seats, amount) = if r.applied {
                        (p.after, p.amount_after)
                    } else {
                        (p.before, p.amount_before)
                    };
                    ProductNow {
                        product: p.product.clone(),
                        identifier: p.identifier.clone(),
                        seats,
                        unit_price: p.unit_price,
                        amount,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(ClientPage {
        pipeline: pipeline.name.clone(),
        client: client.to_owned(),
        currency: history.currency.clone(),
        last: runs.last().cloned(),
        products,
        seats_chart: chart::line(
            &format!("Seats billed to {client} over time"),
            "seats",
            &seat_points(&runs),
        ),
        money_chart: chart::line(
            &format!("Monthly amount billed to {client} over time"),
            &what_money,
            &money_points(&runs),
        ),
        holders,
        runs: runs.into_iter().rev().take(30).collect(),
        approval: None,
    })
}

/// A job on the jobs page.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: String,
    pub status: String,
    pub failed: bool,
    pub attempts: usize,
    pub pipeline: String,
    pub client: String,
    pub trigger: String,
    pub due: String,
    pub error: Option<String>,
}

pub async fn jobs(service: &Service, failed_only: bool) -> Result<Vec<JobView>, ViewError> {
    let rows = service.queue.list(failed_only, 200).await?;
    Ok(rows
        .into_iter()
        .map(|r| JobView {
            failed: r.status == "failed" || r.status == "killed",
            due: r
                .run_at
                .and_then(|s| chrono::DateTime::from_timestamp(i64::try_from(s).ok()?, 0))
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default(),
            pipeline: r
                .job
                .as_ref()
                .map(|j| j.pipeline.clone())
                .unwrap_or_default(),
            client: r.job.as_ref().map(|j| j.client.clone()).unwrap_or_default(),
            trigger: r
                .job
                .as_ref()
                .map(|j| j.trigger.to_string())
                .unwrap_or_else(|| "(not a sync job)".into()),
            id: r.id,
            status: r.status,
            attempts: r.attempts,
            error: r.error,
        })
        .collect())
}

/// An OAuth connection a pipeline bills through.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionView {
    pub connection: String,
    pub pipeline: String,
    pub file: String,
    /// `connected`, `never connected`, `expired` (the last sync said to reconnect) or
    /// `unreadable`.
    pub state: String,
    pub needs_consent: bool,
    pub tenant: Option<String>,
    pub detail: String,
}

pub async fn connections(service: &Service) -> Vec<ConnectionView> {
    let failed = service.queue.list(true, 200).await.unwrap_or_default();
    let mut out = Vec::new();
    for pipeline in &service.pipelines {
        let Some(app) = pipeline.target.oauth() else {
            continue;
        };
        let loaded = service.store.token_vault().load(&app.connection).await;
        // The engine's hint for an expired or revoked connection names `rollcall connect`;
        // a failed job of this pipeline saying so means a person must consent again.
        let expired = failed.iter().find(|j| {
            j.job.as_ref().is_some_and(|s| s.pipeline == pipeline.name)
                && j.error
                    .as_deref()
                    .is_some_and(|e| e.contains("rollcall connect"))
        });
        let (state, tenant, detail) = match (&loaded, expired) {
            (Ok(None), _) => (
                "never connected",
                None,
                "no tokens are stored for this connection".to_owned(),
            ),
            (Err(e), _) => ("unreadable", None, e.to_string()),
            (Ok(Some(tokens)), Some(job)) => (
                "expired",
                tokens.tenant.clone(),
                format!(
                    "job {} failed: {}",
                    job.id,
                    job.error.clone().unwrap_or_default()
                ),
            ),
            (Ok(Some(tokens)), None) => (
                "connected",
                tokens.tenant.clone(),
                format!(
                    "access token renewed automatically; the current one expires {}",
                    tokens.expires_at.format("%Y-%m-%d %H:%M UTC")
                ),
            ),
        };
        out.push(ConnectionView {
            connection: app.connection.clone(),
            pipeline: pipeline.name.clone(),
            file: pipeline.file.display().to_string(),
            needs_consent: state != "connected",
            state: state.to_owned(),
            tenant,
            detail,
        });
    }
    out
}

/// One line of the health page.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// A pipeline's last run, for the health page.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineHealth {
    pub pipeline: String,
    pub clients: usize,
    pub schedule: String,
    pub last_run: String,
    pub last_outcome: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub checks: Vec<Check>,
    pub pipelines: Vec<PipelineHealth>,
    pub jobs_total: f64,
    pub webhooks_total: f64,
    pub version: &'static str,
}

pub async fn health(service: &Service) -> Health {
    let mut checks = Vec::new();
    let store = service.store.has_run("readiness-probe").await;
    checks.push(Check {
        name: "store".into(),
        ok: store.is_ok(),
        detail: match store {
            Ok(_) => "answers".into(),
            Err(e) => e.to_string(),
        },
    });
    let queue = service.queue.ping().await;
    checks.push(Check {
        name: "queue".into(),
        ok: queue.is_ok(),
        detail: match queue {
            Ok(()) => "answers".into(),
            Err(e) => e.to_string(),
        },
    });
    let failed = service.queue.list(true, 1000).await.map(|j| j.len());
    checks.push(Check {
        name: "failed jobs".into(),
        ok: failed.as_ref().is_ok_and(|n| *n == 0),
        detail: match failed {
            Ok(0) => "none".into(),
            Ok(n) => format!("{n} failed job(s): see Jobs"),
            Err(e) => e.to_string(),
        },
    });
    let connections = connections(service).await;
    let waiting = connections.iter().filter(|c| c.needs_consent).count();
    checks.push(Check {
        name: "connections".into(),
        ok: waiting == 0,
        detail: if connections.is_empty() {
            "no pipeline bills through an OAuth connection".into()
        } else if waiting == 0 {
            format!("{} connected", connections.len())
        } else {
            format!("{waiting} need consent: see Connections")
        },
    });
    let recent = crate::runs::recent(&service.store, 500)
        .await
        .unwrap_or_default();
    let pipelines = service
        .pipelines
        .iter()
        .map(|p| {
            let last = recent.iter().find(|r| r.pipeline == p.name);
            PipelineHealth {
                pipeline: p.name.clone(),
                clients: p.clients.len(),
                schedule: p
                    .schedule
                    .as_ref()
                    .map(|s| format!("{} ({})", s.cron, s.timezone))
                    .unwrap_or_else(|| "none (webhooks and hand runs only)".into()),
                last_run: last.map(|r| moment(&r.started_at)).unwrap_or_default(),
                last_outcome: last.map(|r| r.outcome.clone()).unwrap_or_default(),
            }
        })
        .collect();
    let metrics = service.metrics();
    Health {
        checks,
        pipelines,
        jobs_total: metrics.total("rollcall_jobs_total"),
        webhooks_total: metrics.total("rollcall_webhooks_total"),
        version: env!("CARGO_PKG_VERSION"),
    }
}
