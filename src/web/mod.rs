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
//! An accepted notification becomes a job on the queue ([`crate::queue`]): the service's own
//! workers take it (`--workers`), or `rollcall worker` processes elsewhere do, on the same
//! Redis. The service also ticks the pipelines' schedules.

pub mod console;
pub mod signature;
pub mod subscribe;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

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
use crate::metrics::Metrics;
use crate::queue::{Queue, SyncJob, Trigger};
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

/// The running service: the pipelines it serves, where it queues syncs, and which clients are
/// inside their debounce window.
pub struct Service {
    pipelines: Vec<Arc<Pipeline>>,
    store: Store,
    queue: Queue,
    secrets: Secrets,
    debounce: Duration,
    waiting: Mutex<HashSet<(usize, String)>>,
    metrics: Arc<Metrics>,
    /// Where directories reach this service (`--public-url`), for their subscriptions.
    public_url: Option<String>,
    /// Wakes the subscription renewal (a lifecycle event asked for it).
    renew: tokio::sync::Notify,
    /// Which clients each change subscription (by id) is about, as last ensured: Graph's
    /// notifications name the tenant by its GUID, which pipelines may not use.
    subscribed: Mutex<HashMap<String, Vec<(usize, String)>>>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("pipelines", &self.pipelines.len())
            .field("queue", &self.queue)
            .field("debounce", &self.debounce)
            .finish_non_exhaustive()
    }
}

/// What `rollcall serve` is made of.
#[derive(Debug)]
pub struct ServiceParts {
    pub pipelines: Vec<Arc<Pipeline>>,
    pub store: Store,
    pub queue: Queue,
    pub secrets: Secrets,
    /// Notifications for one client within this window make one job.
    pub debounce: Duration,
    /// Shared with the process's workers, so `/metrics` shows their jobs too.
    pub metrics: Arc<Metrics>,
    /// Where directories reach this service: with it (and `ROLLCALL_GRAPH_CLIENT_STATE`), the
    /// service keeps their change subscriptions alive.
    pub public_url: Option<String>,
}

impl Service {
    pub fn new(parts: ServiceParts) -> Arc<Service> {
        Arc::new(Service {
            pipelines: parts.pipelines,
            store: parts.store,
            queue: parts.queue,
            secrets: parts.secrets,
            debounce: parts.debounce,
            waiting: Mutex::new(HashSet::new()),
            metrics: parts.metrics,
            public_url: parts.public_url,
            renew: tokio::sync::Notify::new(),
            subscribed: Mutex::new(HashMap::new()),
        })
    }

    /// The service as `rollcall serve` runs it: schedules ticking and, with `workers`, this
    /// process's own workers taking the jobs (until the process ends).
    pub async fn start(
        parts: ServiceParts,
        workers: Option<crate::queue::worker::WorkerOptions>,
    ) -> Result<Arc<Service>, crate::queue::locks::LockError> {
        crate::queue::worker::start_schedules(&parts.pipelines, &parts.queue, &parts.metrics);
        if let Some(options) = workers {
            let runner = crate::queue::worker::JobRunner::new(
                parts.pipelines.clone(),
                parts.store.clone(),
                parts.queue.clone(),
                options,
                parts.metrics.clone(),
            )
            .await?;
            tokio::spawn(async move {
                if let Err(e) = crate::queue::worker::run(runner, std::future::pending()).await {
                    tracing::error!(error = %e, "The service's worker stopped.");
                }
            });
        }
        Ok(Service::new(parts))
    }

    fn count(&self, name: &str, pairs: &[(&str, &str)]) {
        self.metrics.count(name, pairs);
    }

    fn refused(&self, source: &str, why: &str) -> Response {
        warn!(source, why, "Refused a notification.");
        self.count(
            "rollcall_webhooks_total",
            &[("source", source), ("outcome", why)],
        );
        StatusCode::UNAUTHORIZED.into_response()
    }

    /// Asks for a sync of one client: joins the job already waiting out its debounce window,
    /// or opens a window that ends in one queued job.
    pub fn request_resync(self: &Arc<Self>, pipeline: usize, client: &str, source: &str) {
        let key = (pipeline, client.to_owned());
        let fresh = self
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone());
        if !fresh {
            self.count("rollcall_resyncs_coalesced_total", &[("client", client)]);
            return;
        }
        let service = self.clone();
        let source = source.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(service.debounce).await;
            // Out of the window before queuing: a notification from now on asks for the
            // next sync, which will see its change.
            service
                .waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key);
            let job = SyncJob {
                pipeline: service.pipelines[key.0].name.clone(),
                client: key.1.clone(),
                trigger: Trigger::Webhook { source },
            };
            match service.queue.push(job, None).await {
                Ok(()) => {
                    info!(client = %key.1, "Queued a sync after notifications.");
                    service.count("rollcall_jobs_queued_total", &[("client", &key.1)]);
                }
                Err(e) => {
                    warn!(client = %key.1, error = %e, "Could not queue a sync.");
                    service.count("rollcall_jobs_queue_errors_total", &[]);
                }
            }
        });
    }

    /// Notes which clients each ensured subscription is about.
    pub fn remember_subscriptions(&self, results: &[subscribe::Subscribed]) {
        let mut map = self
            .subscribed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for r in results {
            for s in r.states.iter().flatten() {
                if let Some(id) = &s.id {
                    map.insert(id.clone(), r.clients.clone());
                }
            }
        }
    }

    /// Jobs this service has queued after notifications.
    pub fn jobs_queued(&self) -> f64 {
        self.metrics.total("rollcall_jobs_queued_total")
    }

    /// Jobs run by this process's workers, whatever their outcome.
    pub fn syncs(&self) -> f64 {
        self.metrics.total("rollcall_jobs_total")
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
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
        .nest("/console", console::router(service.clone()))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(service)
}

/// A worker's own routes (`rollcall worker --metrics-listen`): liveness, queue readiness, and
/// its jobs' metrics.
pub fn worker_router(metrics: Arc<Metrics>, queue: Queue) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let queue = queue.clone();
                async move {
                    match queue.ping().await {
                        Ok(()) => "ready".into_response(),
                        Err(e) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("queue unreachable: {e}"),
                        )
                            .into_response(),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || async move { render_metrics(&metrics) }),
        )
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

/// Keeps the directories' change subscriptions alive while the service runs: once it listens
/// (the subscriptions' handshake calls it back), then every twelve hours, and whenever a
/// lifecycle event says one needs it.
pub fn start_subscription_renewal(service: &Arc<Service>) {
    let (Some(url), Some(state)) = (
        service.public_url.clone(),
        service.secrets.graph_client_state.clone(),
    ) else {
        return;
    };
    let service = service.clone();
    // The directories' clients are not `Send`: the loop runs on a blocking thread of its own.
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        runtime.block_on(async move {
            loop {
                let results = subscribe::ensure_all(
                    &service.pipelines,
                    &url,
                    &state,
                    subscribe::RENEW_BEFORE,
                )
                .await;
                service.remember_subscriptions(&results);
                for r in &results {
                    match &r.states {
                        Ok(states) => {
                            for s in states {
                                service.count(
                                    "rollcall_subscriptions_total",
                                    &[("resource", &s.resource), ("action", &s.action)],
                                );
                                if let Some(e) = &s.error {
                                    warn!(client = %r.client, resource = %s.resource, error = %e, "A change subscription could not be kept.");
                                }
                            }
                        }
                        Err(e) => {
                            warn!(client = %r.client, error = %e, "Change subscriptions could not be listed.");
                            service.count(
                                "rollcall_subscriptions_total",
                                &[("resource", "*"), ("action", "failed")],
                            );
                        }
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(12 * 3600)) => {}
                    () = service.renew.notified() => {}
                }
            }
        });
    });
}

/// Binds `addr` and serves until Ctrl-C.
pub async fn run(service: Arc<Service>, addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    info!(addr = %listener.local_addr()?, "Listening for notifications.");
    start_subscription_renewal(&service);
    serve(service, listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}

async fn ready(State(service): State<Arc<Service>>) -> Response {
    if let Err(e) = service.store.has_run("readiness-probe").await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unreachable: {e}"),
        )
            .into_response();
    }
    if let Err(e) = service.queue.ping().await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("queue unreachable: {e}"),
        )
            .into_response();
    }
    "ready".into_response()
}

async fn metrics(State(service): State<Arc<Service>>) -> Response {
    render_metrics(&service.metrics)
}

/// `/metrics` of a registry, in Prometheus's text format.
pub fn render_metrics(metrics: &Metrics) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
        .into_response()
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
            service.request_resync(index, &name, "client");
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
    service.request_resync(index, &name, "connectwise");
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
        let tenant = service
            .store
            .token_vault()
            .load(&app.connection)
            .await
            .ok()
            .flatten()
            .and_then(|t| t.tenant)
            .map(|t| t.to_lowercase());
        if tenant.is_some_and(|t| tenants.contains(&t)) {
            for c in &pipeline.clients {
                service.request_resync(i, &c.name, "xero");
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
            info!(event, "Graph asks for its subscription to be renewed.");
            service.count("rollcall_graph_lifecycle_total", &[("event", event)]);
            if service.public_url.is_none() {
                warn!(
                    event,
                    "No --public-url: run `rollcall subscribe` to renew the subscription."
                );
            }
            service.renew.notify_one();
            continue;
        }
        // `missed`: changes were dropped, so the tenant's clients are synced like after any.
        if let Some(event) = lifecycle {
            service.count("rollcall_graph_lifecycle_total", &[("event", event)]);
        }
        service.count(
            "rollcall_webhooks_total",
            &[("source", "graph"), ("outcome", "accepted")],
        );
        let by_subscription = n
            .get("subscriptionId")
            .and_then(Value::as_str)
            .and_then(|id| {
                service
                    .subscribed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(id)
                    .cloned()
            });
        if let Some(clients) = by_subscription {
            for (i, client) in clients {
                service.request_resync(i, &client, "graph");
            }
            continue;
        }
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
                    service.request_resync(i, &c.name, "graph");
                }
            }
        }
    }
    if accepted == 0 {
        return service.refused("graph", "forged");
    }
    StatusCode::ACCEPTED.into_response()
}
