//! `rollcall serve`: resyncs within seconds of a change, triggered by signed notifications.
//!
//! A client adds an employee; their HR system (or Entra ID, or Xero) tells rollcall; rollcall
//! resyncs **that client only**. Notifications come in bursts (a new starter touches many
//! objects), so each client's resyncs are debounced: every notification inside the window joins
//! the one resync already scheduled, and a notification that arrives while the client is being
//! synced schedules exactly one more. A client is never synced twice at once.
//!
//! Nothing unsigned, forged or stale is ever acted on: it is refused (401), counted in
//! `/metrics`, and logged without its body.
//!
//! Pipelines with a `schedule:` are also resynced at the times their cron expression names.
//!
//! This service runs the resyncs itself, in this process. The job queue shared by many
//! workers (apalis on SQLite or Redis, locks and rate limits shared across machines) is not
//! built yet; until it is, run one `rollcall serve` per store.

pub mod signature;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rollcall_core::Secret;
use serde_json::Value;
use tracing::{info, warn};

use crate::config::Pipeline;
use crate::store::Store;

/// Largest notification body accepted; the vendors' are a few KiB.
const BODY_LIMIT: usize = 256 * 1024;

/// The secrets notifications are checked with, from the environment.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// `ROLLCALL_WEBHOOK_SECRET`: the service secret each client's key is derived from.
    pub generic: Option<Secret>,
    /// `XERO_WEBHOOK_KEY`: the key Xero signs its webhooks with.
    pub xero: Option<Secret>,
    /// `ROLLCALL_GRAPH_CLIENT_STATE`: the `clientState` given to Graph subscriptions.
    pub graph_client_state: Option<Secret>,
}

impl Secrets {
    pub fn from_env() -> Secrets {
        let read = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .map(Secret::new)
        };
        Secrets {
            generic: read("ROLLCALL_WEBHOOK_SECRET"),
            xero: read("XERO_WEBHOOK_KEY"),
            graph_client_state: read("ROLLCALL_GRAPH_CLIENT_STATE"),
        }
    }
}

/// Where a client's resync stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resync {
    /// Waiting out the debounce window; notifications now join it.
    Scheduled,
    /// Syncing; `again` when a notification arrived meanwhile.
    Running { again: bool },
}

/// Counters and gauges for `/metrics`, by metric name and labels.
#[derive(Debug, Default)]
struct Metrics {
    counters: BTreeMap<(String, String), f64>,
    gauges: BTreeMap<(String, String), f64>,
}

impl Metrics {
    fn add(&mut self, name: &str, labels: String, by: f64) {
        *self.counters.entry((name.to_owned(), labels)).or_default() += by;
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let mut last = "";
        for (map, kind) in [(&self.counters, "counter"), (&self.gauges, "gauge")] {
            for ((name, labels), value) in map {
                if name != last {
                    out.push_str(&format!("# TYPE {name} {kind}\n"));
                    last = name;
                }
                out.push_str(&format!("{name}{labels} {value}\n"));
            }
        }
        out
    }
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// The running service: the pipelines it serves, the store, and each client's resync.
pub struct Service {
    pipelines: Vec<Arc<Pipeline>>,
    store: Store,
    secrets: Secrets,
    debounce: Duration,
    resyncs: Mutex<HashMap<(usize, String), Resync>>,
    metrics: Mutex<Metrics>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("pipelines", &self.pipelines.len())
            .field("debounce", &self.debounce)
            .finish_non_exhaustive()
    }
}

impl Service {
    pub fn new(
        pipelines: Vec<Pipeline>,
        store: Store,
        secrets: Secrets,
        debounce: Duration,
    ) -> Arc<Service> {
        Arc::new(Service {
            pipelines: pipelines.into_iter().map(Arc::new).collect(),
            store,
            secrets,
            debounce,
            resyncs: Mutex::new(HashMap::new()),
            metrics: Mutex::new(Metrics::default()),
        })
    }

    fn count(&self, name: &str, pairs: &[(&str, &str)]) {
        self.metrics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add(name, labels(pairs), 1.0);
    }

    fn refused(&self, source: &str, why: &str) -> Response {
        warn!(source, why, "Refused a notification.");
        self.count(
            "rollcall_webhooks_total",
            &[("source", source), ("outcome", why)],
        );
        StatusCode::UNAUTHORIZED.into_response()
    }

    /// Asks for a resync of one client: joins the one already scheduled, or schedules one
    /// after the sync in progress, or schedules a new one after the debounce window.
    pub fn request_resync(self: &Arc<Self>, pipeline: usize, client: &str) {
        let key = (pipeline, client.to_owned());
        let mut resyncs = self.resyncs.lock().unwrap_or_else(PoisonError::into_inner);
        match resyncs.get_mut(&key) {
            Some(Resync::Scheduled) => {
                self.count("rollcall_resyncs_coalesced_total", &[("client", client)]);
            }
            Some(Resync::Running { again }) => *again = true,
            None => {
                resyncs.insert(key.clone(), Resync::Scheduled);
                let service = self.clone();
                // The planner's stream of clients is not provably `Send` to the compiler, so a
                // client's resyncs run on a blocking thread driving this runtime.
                let runtime = tokio::runtime::Handle::current();
                tokio::task::spawn_blocking(move || runtime.block_on(service.run_resyncs(key)));
            }
        }
    }

    async fn run_resyncs(self: Arc<Self>, key: (usize, String)) {
        loop {
            tokio::time::sleep(self.debounce).await;
            self.resyncs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key.clone(), Resync::Running { again: false });
            self.sync(key.0, &key.1).await;
            let mut resyncs = self.resyncs.lock().unwrap_or_else(PoisonError::into_inner);
            if resyncs.get(&key) == Some(&Resync::Running { again: true }) {
                resyncs.insert(key.clone(), Resync::Scheduled);
            } else {
                resyncs.remove(&key);
                return;
            }
        }
    }

    /// One client's plan and apply, exactly as `rollcall run --client` does it.
    async fn sync(&self, pipeline: usize, client: &str) {
        let pipeline = &self.pipelines[pipeline];
        let started = Instant::now();
        info!(pipeline = %pipeline.name, client, "Resyncing after a notification.");
        let outcome = async {
            let plan = crate::cli::quiet_plan(pipeline, &self.store, Some(client)).await?;
            let outcomes =
                crate::cli::apply_now(&self.store, pipeline, &plan, "webhook", false).await?;
            let mut metrics = self.metrics.lock().unwrap_or_else(PoisonError::into_inner);
            for c in &plan.clients {
                metrics.gauges.insert(
                    (
                        "rollcall_seats".into(),
                        labels(&[("pipeline", &pipeline.name), ("client", &c.client)]),
                    ),
                    c.seats_after as f64,
                );
            }
            let exit = crate::cli::plan_exit(&plan).max(crate::cli::outcome_exit(&outcomes));
            anyhow::Ok(exit)
        }
        .await;
        let name = match outcome {
            Ok(crate::cli::Exit::Ok) => "done",
            Ok(crate::cli::Exit::Refused) => "refused",
            Ok(_) => "failed",
            Err(e) => {
                warn!(error = %e, client, "The resync failed.");
                "failed"
            }
        };
        let mut metrics = self.metrics.lock().unwrap_or_else(PoisonError::into_inner);
        metrics.add(
            "rollcall_syncs_total",
            labels(&[("client", client), ("outcome", name)]),
            1.0,
        );
        metrics.add(
            "rollcall_sync_seconds_sum",
            String::new(),
            started.elapsed().as_secs_f64(),
        );
        metrics.add("rollcall_sync_seconds_count", String::new(), 1.0);
    }

    /// Syncs started or done so far, by outcome label set: for tests and `/metrics`.
    pub fn syncs(&self) -> f64 {
        self.metrics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .counters
            .iter()
            .filter(|((name, _), _)| name == "rollcall_syncs_total")
            .map(|(_, v)| v)
            .sum()
    }

    fn find(&self, pipeline: &str, client: &str) -> Option<(usize, String)> {
        self.pipelines
            .iter()
            .enumerate()
            .filter(|(_, p)| p.name == pipeline)
            .find_map(|(i, p)| p.client(client).map(|c| (i, c.name.clone())))
    }
}

/// The service's routes.
pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/hooks/clients/{pipeline}/{client}", post(generic))
        .route("/hooks/xero", post(xero))
        .route(
            "/hooks/connectwise/{pipeline}/{client}/{key}",
            post(connectwise),
        )
        .route("/hooks/graph", post(graph))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(service)
}

/// Serves until `shutdown` completes.
pub async fn serve(
    service: Arc<Service>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(service))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Resyncs every client of each pipeline that has a `schedule:`, at each time it names, for
/// as long as the service runs. A scheduled resync joins one a notification already asked for.
pub fn start_schedules(service: &Arc<Service>) {
    for (index, pipeline) in service.pipelines.iter().enumerate() {
        let Some(schedule) = pipeline.schedule.clone() else {
            continue;
        };
        let service = service.clone();
        tokio::spawn(async move {
            for next in schedule.upcoming(chrono::Utc) {
                let wait = (next - chrono::Utc::now()).to_std().unwrap_or_default();
                tokio::time::sleep(wait).await;
                let pipeline = &service.pipelines[index];
                info!(pipeline = %pipeline.name, at = %next, "Scheduled resync of every client.");
                service.count(
                    "rollcall_scheduled_runs_total",
                    &[("pipeline", &pipeline.name)],
                );
                for c in &pipeline.clients {
                    service.request_resync(index, &c.name);
                }
            }
        });
    }
}

/// Binds `addr`, starts the schedules and serves until Ctrl-C.
pub async fn run(service: Arc<Service>, addr: SocketAddr) -> std::io::Result<()> {
    start_schedules(&service);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    info!(addr = %listener.local_addr()?, "Listening for notifications.");
    serve(service, listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}

async fn ready(State(service): State<Arc<Service>>) -> Response {
    match service.store.has_run("readiness-probe").await {
        Ok(_) => "ready".into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unreachable: {e}"),
        )
            .into_response(),
    }
}

async fn metrics(State(service): State<Arc<Service>>) -> Response {
    let text = service
        .metrics
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// A client's own system (HR, PSA) signed with the client's key.
async fn generic(
    State(service): State<Arc<Service>>,
    Path((pipeline, client)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(secret) = &service.secrets.generic else {
        return service.refused("client", "not_configured");
    };
    let Some(header) = headers
        .get("x-rollcall-signature")
        .and_then(|h| h.to_str().ok())
    else {
        return service.refused("client", "unsigned");
    };
    let Some((index, name)) = service.find(&pipeline, &client) else {
        // Unknown clients are refused like bad signatures: which clients exist is no stranger's business.
        return service.refused("client", "unknown_client");
    };
    let key = signature::client_key(secret.expose(), &pipeline, &name);
    match signature::generic(&key, &body, header, chrono::Utc::now().timestamp()) {
        Ok(()) => {
            service.count(
                "rollcall_webhooks_total",
                &[("source", "client"), ("outcome", "accepted")],
            );
            service.request_resync(index, &name);
            StatusCode::ACCEPTED.into_response()
        }
        Err(signature::Refused::Stale) => service.refused("client", "stale"),
        Err(signature::Refused::Malformed) => service.refused("client", "malformed"),
        Err(signature::Refused::Forged) => service.refused("client", "forged"),
    }
}

/// ConnectWise callbacks (`system/callbacks`): ConnectWise signs nothing, so the callback URL
/// registered for a client carries that client's key (`rollcall webhook-key`) as its secret.
/// The body (`{Action, Type, ID, Entity}`) is not trusted for anything but logging.
async fn connectwise(
    State(service): State<Arc<Service>>,
    Path((pipeline, client, key)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let Some(secret) = &service.secrets.generic else {
        return service.refused("connectwise", "not_configured");
    };
    let Some((index, name)) = service.find(&pipeline, &client) else {
        return service.refused("connectwise", "unknown_client");
    };
    let expected = signature::client_key(secret.expose(), &pipeline, &name);
    if !signature::same_secret(&key, &expected) {
        return service.refused("connectwise", "forged");
    }
    let what = serde_json::from_slice::<Value>(&body).unwrap_or_default();
    let field = |k: &str| {
        what.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_owned()
    };
    let (action, object) = (field("Action"), field("Type"));
    info!(client = %name, %action, %object, "ConnectWise callback.");
    service.count(
        "rollcall_webhooks_total",
        &[("source", "connectwise"), ("outcome", "accepted")],
    );
    service.request_resync(index, &name);
    StatusCode::OK.into_response()
}

/// Xero webhooks: the intent-to-receive handshake is just this check (200 when the signature
/// is right, 401 when not). Xero's events name invoices and contacts of the MSP's own
/// organisation, so every client billed in that organisation is resynced (each debounced; a
/// resync with nothing to change writes nothing).
async fn xero(State(service): State<Arc<Service>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(key) = &service.secrets.xero else {
        return service.refused("xero", "not_configured");
    };
    let given = headers
        .get("x-xero-signature")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if !signature::xero(key.expose(), &body, given) {
        return service.refused("xero", "forged");
    }
    service.count(
        "rollcall_webhooks_total",
        &[("source", "xero"), ("outcome", "accepted")],
    );
    let tenants: Vec<String> = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("events").and_then(Value::as_array).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| {
            e.get("tenantId")
                .and_then(Value::as_str)
                .map(str::to_lowercase)
        })
        .collect();
    for (i, pipeline) in service.pipelines.iter().enumerate() {
        let Some(app) = pipeline.target.oauth() else {
            continue;
        };
        let tenant = rollcall_core::oauth::TokenVault::load(&service.store, &app.connection)
            .await
            .ok()
            .flatten()
            .and_then(|t| t.tenant)
            .map(|t| t.to_lowercase());
        if tenant.is_some_and(|t| tenants.contains(&t)) {
            for c in &pipeline.clients {
                service.request_resync(i, &c.name);
            }
        }
    }
    StatusCode::OK.into_response()
}

/// Microsoft Graph change notifications: the subscription handshake echoes `validationToken`;
/// each notification must carry the subscription's `clientState`, and resyncs the clients whose
/// directory is the notifying tenant.
async fn graph(
    State(service): State<Arc<Service>>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Some(token) = query.get("validationToken") {
        return ([(header::CONTENT_TYPE, "text/plain")], token.clone()).into_response();
    }
    let Some(expected) = &service.secrets.graph_client_state else {
        return service.refused("graph", "not_configured");
    };
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        return service.refused("graph", "malformed");
    };
    let mut accepted = 0;
    for n in payload
        .get("value")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let state = n
            .get("clientState")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !signature::same_secret(state, expected.expose()) {
            service.count(
                "rollcall_webhooks_total",
                &[("source", "graph"), ("outcome", "forged")],
            );
            continue;
        }
        accepted += 1;
        let lifecycle = n.get("lifecycleEvent").and_then(Value::as_str);
        if let Some(event @ ("reauthorizationRequired" | "subscriptionRemoved")) = lifecycle {
            warn!(
                event,
                "Graph subscription needs attention: renew it (subscriptions are not renewed by rollcall yet)."
            );
            service.count("rollcall_graph_lifecycle_total", &[("event", event)]);
            continue;
        }
        service.count(
            "rollcall_webhooks_total",
            &[("source", "graph"), ("outcome", "accepted")],
        );
        let tenant = n
            .get("tenantId")
            .and_then(Value::as_str)
            .unwrap_or_default();
        for (i, pipeline) in service.pipelines.iter().enumerate() {
            for c in &pipeline.clients {
                if c.directory
                    .notifying_tenant()
                    .is_some_and(|t| t.eq_ignore_ascii_case(tenant))
                {
                    service.request_resync(i, &c.name);
                }
            }
        }
    }
    if accepted == 0 {
        return service.refused("graph", "forged");
    }
    StatusCode::ACCEPTED.into_response()
}
