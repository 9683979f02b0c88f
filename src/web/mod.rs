//! `rollcall serve`: resyncs within seconds of a change, triggered by signed notifications.
//!
//! A client adds an employee; their HR system (or their directory, or the billing system) tells
//! rollcall; rollcall resyncs **that client only**. Notifications come in bursts (a new starter
//! touches many objects), so each client's resyncs are debounced: every notification inside the
//! window joins the one resync already scheduled, and a notification that arrives while the client is being
//! synced schedules exactly one more. A client is never synced twice at once.
//!
//! Nothing unsigned, forged or stale is ever acted on: it is refused (401), counted in
//! `/metrics`, and logged without its body.
//!
//! An accepted notification becomes a job on the queue ([`crate::queue`]): the service's own
//! workers take it (`--workers`), or `rollcall worker` processes elsewhere do, on the same
//! Redis. The service also ticks the pipelines' schedules.
//!
//! Clients' own systems sign with a key derived from the service's secret
//! (`/hooks/clients/…`). A vendor's webhook is its connector's (`rollcall_core::inbound`):
//! the routes under `/hooks/{segment}`, their secrets and the warnings about unset ones all
//! come from the registry, and this module only counts, answers and resyncs.

pub mod console;
pub mod signature;
pub mod subscribe;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, RawPathParams, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rollcall_core::Secret;
use rollcall_core::inbound::{
    Answer, Concerns, Inbound, InboundContext, InboundRequest, SERVICE_SECRET, SecretSetting,
    WebhookSecrets,
};
use tracing::{info, warn};

use crate::config::Pipeline;
use crate::metrics::Metrics;
use crate::queue::{Queue, SyncJob, Trigger};
use crate::store::Store;

/// Largest notification body accepted; the vendors' are a few KiB.
const BODY_LIMIT: usize = 256 * 1024;

/// The secrets notifications are checked with, from the environment: the service's own
/// (`ROLLCALL_WEBHOOK_SECRET`, for clients' systems) and those each connector's webhook
/// declares ([`rollcall_core::inbound::Inbound::secrets`]).
#[derive(Debug, Clone, Default)]
pub struct Secrets(WebhookSecrets);

impl Secrets {
    pub fn from_env() -> Secrets {
        Secrets(WebhookSecrets::from_env(
            std::iter::once(&SERVICE_SECRET).chain(hook_settings()),
        ))
    }

    /// These secrets with the setting named `env` set to `value`.
    pub fn with(self, env: &str, value: Secret) -> Secrets {
        Secrets(self.0.with(env, value))
    }

    /// The service's secret, from which each client's webhook key is derived.
    pub fn generic(&self) -> Option<&Secret> {
        self.0.get(SERVICE_SECRET.env)
    }

    /// The secret change subscriptions carry, if set.
    pub fn subscription_state(&self) -> Option<&Secret> {
        subscription_settings()
            .iter()
            .find_map(|s| self.0.get(s.env))
    }

    /// Whether no secret at all is set (every notification would be refused).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Every secret setting of the connectors' webhooks.
fn hook_settings() -> impl Iterator<Item = &'static SecretSetting> {
    crate::config::connectors::inbound_hooks()
        .into_iter()
        .flat_map(|(_, hook)| hook.secrets())
}

/// The settings change subscriptions take their secret from (`rollcall subscribe`).
pub fn subscription_settings() -> Vec<&'static SecretSetting> {
    crate::config::connectors::inbound_hooks()
        .into_iter()
        .filter_map(|(_, hook)| hook.subscription_secret())
        .collect()
}

/// Every webhook secret setting's name, for hints: `A, B or C`.
pub fn secret_names() -> String {
    let mut names: Vec<&str> = std::iter::once(&SERVICE_SECRET)
        .chain(hook_settings())
        .map(|s| s.env)
        .collect();
    let mut seen = Vec::new();
    names.retain(|n| {
        let fresh = !seen.contains(n);
        seen.push(*n);
        fresh
    });
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.join(""),
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
    /// Which clients each change subscription (by id) is about, as last ensured: a
    /// directory's notifications may name the tenant by an id pipelines do not use.
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
    /// Where directories reach this service: with it (and the subscriptions' secret), the
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
        .merge(hooks())
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
        service.secrets.subscription_state().cloned(),
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
    warn_of_missing_secrets(&service);
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
    let Some(secret) = service.secrets.generic() else {
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

/// Each connector's webhook at `/hooks/{segment}{params}`, from the registry.
fn hooks() -> Router<Arc<Service>> {
    let mut router = Router::new();
    for (_, hook) in crate::config::connectors::inbound_hooks() {
        let path = format!("/hooks/{}{}", hook.segment(), hook.params());
        router = router.route(
            &path,
            post(
                move |State(service): State<Arc<Service>>,
                      params: RawPathParams,
                      Query(query): Query<Vec<(String, String)>>,
                      headers: HeaderMap,
                      body: Bytes| async move {
                    let params: Vec<(String, String)> = params
                        .iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect();
                    let request = InboundRequest {
                        params: &params,
                        query: &query,
                        headers: &headers,
                        body: &body,
                        now: chrono::Utc::now().timestamp(),
                    };
                    inbound(&service, hook, &request).await
                },
            ),
        );
    }
    router
}

impl InboundContext for Service {
    fn secret(&self, setting: &SecretSetting) -> Option<&Secret> {
        self.secrets.0.get(setting.env)
    }

    fn client(&self, pipeline: &str, client: &str) -> Option<String> {
        self.find(pipeline, client).map(|(_, name)| name)
    }
}

/// A connector's webhook: its verdict answered and counted, what it concerns resynced.
async fn inbound(
    service: &Arc<Service>,
    hook: &'static dyn Inbound,
    request: &InboundRequest<'_>,
) -> Response {
    let source = hook.segment();
    let received = hook.receive(request, &**service);
    for why in &received.rejected {
        service.count(
            "rollcall_webhooks_total",
            &[("source", source), ("outcome", *why)],
        );
    }
    let status = match received.answer {
        Answer::Refused(why) => return service.refused(source, why),
        Answer::Reply { content_type, body } => {
            return ([(header::CONTENT_TYPE, content_type)], body).into_response();
        }
        Answer::Accepted(status) => StatusCode::from_u16(status).unwrap_or(StatusCode::ACCEPTED),
    };
    let lifecycle = format!("rollcall_{source}_lifecycle_total");
    for (event, renew) in &received.lifecycle {
        service.count(&lifecycle, &[("event", event.as_str())]);
        if *renew {
            info!(source, event = %event, "A webhook asks for its subscriptions to be renewed.");
            if service.public_url.is_none() {
                warn!(
                    event = %event,
                    "No --public-url: run `rollcall subscribe` to renew the subscription."
                );
            }
            service.renew.notify_one();
        }
    }
    for _ in 0..received.accepted {
        service.count(
            "rollcall_webhooks_total",
            &[("source", source), ("outcome", "accepted")],
        );
    }
    let mut target_tenants = Vec::new();
    for concerns in received.concerns {
        match concerns {
            Concerns::Client { pipeline, client } => {
                if let Some((index, name)) = service.find(&pipeline, &client) {
                    service.request_resync(index, &name, source);
                }
            }
            Concerns::TargetTenant(tenant) => target_tenants.push(tenant.to_lowercase()),
            Concerns::Directory {
                subscription,
                tenant,
            } => resync_directory(service, subscription.as_deref(), &tenant, source),
        }
    }
    if !target_tenants.is_empty() {
        resync_target_tenants(service, &target_tenants, source).await;
    }
    status.into_response()
}

/// Every client of the pipelines whose target's OAuth connection is on one of `tenants`.
async fn resync_target_tenants(service: &Arc<Service>, tenants: &[String], source: &str) {
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
                service.request_resync(i, &c.name, source);
            }
        }
    }
}

/// The clients of a change subscription as last ensured, else those whose directory notifies
/// for `tenant`.
fn resync_directory(
    service: &Arc<Service>,
    subscription: Option<&str>,
    tenant: &str,
    source: &str,
) {
    let by_subscription = subscription.and_then(|id| {
        service
            .subscribed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    });
    if let Some(clients) = by_subscription {
        for (i, client) in clients {
            service.request_resync(i, &client, source);
        }
        return;
    }
    for (i, pipeline) in service.pipelines.iter().enumerate() {
        for c in &pipeline.clients {
            if c.directory
                .notifying_tenant()
                .is_some_and(|t| t.eq_ignore_ascii_case(tenant))
            {
                service.request_resync(i, &c.name, source);
            }
        }
    }
}

/// Warns, at start, of each webhook secret unset while a pipeline uses its connector: those
/// notifications would all be refused.
fn warn_of_missing_secrets(service: &Service) {
    for (kind, hook) in crate::config::connectors::inbound_hooks() {
        let used = service.pipelines.iter().any(|p| {
            p.target.kind() == kind || p.clients.iter().any(|c| c.directory.kind() == kind)
        });
        for setting in hook.secrets() {
            if used && service.secrets.0.get(setting.env).is_none() {
                warn!(
                    setting = setting.env,
                    webhook = %format!("/hooks/{}", hook.segment()),
                    "{} is not set ({}): these notifications will be refused.",
                    setting.env,
                    setting.what
                );
            }
        }
    }
}
