//! A stateful HaloPSA server, for tests, demos and `rollcall sandbox halopsa`.
//!
//! rollcall cannot test against a real Halo instance, and a mock that accepts anything would let
//! the client's mistakes through. This sandbox keeps clients, sites, users, items and recurring
//! invoices with their lines in memory and enforces what Halo documents (docs/halopsa.md lists
//! the sources):
//!
//! - an authorisation server at `/auth/token`: the client-credentials grant only, `401
//!   invalid_client` for a wrong id or secret, the `tenant` query parameter checked when the
//!   seed names one, bearer tokens that expire ([`Seed::token_lifetime_secs`],
//!   [`Sandbox::expire_tokens`]) and are then answered 401;
//! - the resource server at `/api/...`, its paths matched ignoring case as Halo's are: lists
//!   wrapped as `{record_count, <resource>: [...]}`, paged with `pageinate=true`, `page_size`
//!   and `page_no` (everything without `pageinate`), narrowed by `search`, `client_id`,
//!   `site_id`, `includeinactive` (inactive rows are left out without it) and `includelines`;
//! - writes by `POST` of an array of objects: an object with an `id` updates the fields it
//!   names and keeps the others, one without creates; a user needs a `name` and a valid
//!   `site_id`; a recurring invoice's `lines`, when sent, become its lines (a line sent with its
//!   `id` keeps it, one without gets a new id, one not sent is removed), each line's
//!   `item_code` filled in from its `_itemid`;
//! - values longer than [`crate::model::LIMITS`] refused with 400 naming the field;
//! - about 500 requests a minute per caller, then 429 with `Retry-After` ([`Sandbox::limit_rate`]).
//!
//! Faults are injected per path prefix (relative to `/api/`, ignoring case, e.g. `users`):
//! [`Sandbox::throttle`] (429 with `Retry-After`), [`Sandbox::fail`] (500) and
//! [`Sandbox::drop_response_after_commit`] (the write lands, its answer is cut off). The server
//! stops when its handle is dropped.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State as AxumState};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{Config, MAX_PAGE_SIZE};
use crate::model::{
    Client, EMAIL_MAX, FULL_NAME_MAX, InvoiceLine, Item, LINE_DESCRIPTION_MAX, NAME_PART_MAX,
    PHONE_MAX, RecurringInvoice, Site, TITLE_MAX, TokenAnswer, TokenError, User,
};

/// Halo's page size when a paginated request names none.
const DEFAULT_PAGE_SIZE: usize = 50;

/// What the sandbox holds when it starts, as JSON in Halo's own field names. Ids may be left
/// out and are then assigned in sequence; a user's `client_id` follows from its site, a line's
/// `item_code` from its `_itemid`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    /// The API application's client id and secret. Written in the seed in the clear: they are
    /// test values.
    pub client_id: String,
    pub client_secret: String,
    /// The tenant the token endpoint requires, as a hosted Halo does; `None` for a
    /// self-hosted instance, which takes none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// How long an access token lives.
    #[serde(default = "default_token_lifetime")]
    pub token_lifetime_secs: u64,
    #[serde(default)]
    pub clients: Vec<Client>,
    #[serde(default)]
    pub sites: Vec<Site>,
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub items: Vec<Item>,
    #[serde(default)]
    pub invoices: Vec<RecurringInvoice>,
}

fn default_token_lifetime() -> u64 {
    3600
}

impl Seed {
    /// Three clients (`Acme`, `Globex`, `Initech`), each with a main site and a recurring
    /// invoice `Managed Services` without lines, and four per-user items. The application is
    /// `rollcall-demo` with the secret `demo-secret`.
    pub fn demo() -> Seed {
        let names = ["Acme", "Globex", "Initech"];
        let item = |id: i64, name: &str, description: &str, price: i64| Item {
            id,
            name: name.to_owned(),
            description: Some(description.to_owned()),
            baseprice: Some(Decimal::new(price, 2)),
            isrecurringitem: true,
        };
        Seed {
            client_id: "rollcall-demo".to_owned(),
            client_secret: "demo-secret".to_owned(),
            tenant: None,
            token_lifetime_secs: default_token_lifetime(),
            clients: (1..=3)
                .map(|id| Client {
                    id,
                    name: names[id as usize - 1].to_owned(),
                    inactive: false,
                    main_site_id: Some(id),
                })
                .collect(),
            sites: (1..=3)
                .map(|id| Site {
                    id,
                    name: "Main".to_owned(),
                    client_id: id,
                    inactive: false,
                })
                .collect(),
            users: Vec::new(),
            items: vec![
                item(1, "M365-BP", "Microsoft 365 Business Premium", 2200),
                item(2, "M365-E3", "Microsoft 365 E3", 3600),
                item(
                    3,
                    "SEC-AWARE",
                    "Security awareness training (per user)",
                    350,
                ),
                item(4, "HELPDESK-USER", "Helpdesk support (per user)", 4500),
            ],
            invoices: (1..=3)
                .map(|id| RecurringInvoice {
                    id,
                    client_id: Some(id),
                    site_id: Some(id),
                    invoicenumber: Some("Managed Services".to_owned()),
                    lines: Some(Vec::new()),
                })
                .collect(),
        }
    }

    /// Reads a seed file's text.
    pub fn from_json(text: &str) -> Result<Seed, SandboxError> {
        serde_json::from_str(text).map_err(|e| SandboxError::Seed(e.to_string()))
    }
}

/// Everything the sandbox holds now, for assertions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct State {
    pub clients: Vec<Client>,
    pub sites: Vec<Site>,
    pub users: Vec<User>,
    pub items: Vec<Item>,
    pub invoices: Vec<RecurringInvoice>,
}

/// Why a sandbox could not start.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("invalid sandbox seed: {0}")]
    Seed(String),
    #[error("sandbox server: {0}")]
    Io(#[from] std::io::Error),
}

/// A running sandbox. Dropping it stops the server.
pub struct Sandbox {
    server: rollcall_core::sandbox::SandboxServer,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Starts a sandbox on a free port of 127.0.0.1.
    ///
    /// # Panics
    /// When the seed is inconsistent or no port can be bound: this is test support, and a test
    /// cannot go on without its server.
    pub async fn start(seed: Seed) -> Sandbox {
        match Sandbox::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), seed).await {
            Ok(sandbox) => sandbox,
            Err(error) => panic!("the HaloPSA sandbox could not start: {error}"),
        }
    }

    /// Starts a sandbox on the given address.
    pub async fn start_on(addr: SocketAddr, seed: Seed) -> Result<Sandbox, SandboxError> {
        let shared = Arc::new(Shared::new(seed)?);
        let server =
            rollcall_core::sandbox::SandboxServer::start(addr, router(shared.clone()), "halopsa")
                .await?;
        Ok(Sandbox { server, shared })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The resource server's address, as a pipeline's `url:` takes it.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// A client configuration that reaches this sandbox with its application's credentials.
    pub fn config(&self) -> Config {
        Config {
            url: self.url(),
            auth_url: None,
            tenant: self.shared.seed.tenant.clone(),
            client_id: self.shared.seed.client_id.clone(),
            client_secret: rollcall_core::Secret::new(self.shared.seed.client_secret.clone()),
            rate_limit_per_minute: 100_000,
            page_size: MAX_PAGE_SIZE,
        }
    }

    /// A live access token, for tests that write as a person at the MSP would.
    pub fn access_token(&self) -> String {
        self.shared.issue()
    }

    /// What the sandbox holds now.
    pub fn state(&self) -> State {
        self.shared.db().state.clone()
    }

    /// Requests seen by the resource server (`/api/...`).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Requests to the token endpoint.
    pub fn token_requests(&self) -> u64 {
        self.shared.token_requests.load(Ordering::SeqCst)
    }

    /// `POST`s to the resource server, whether or not they changed anything.
    pub fn write_requests(&self) -> u64 {
        self.shared.write_requests.load(Ordering::SeqCst)
    }

    /// Writes that changed something.
    pub fn writes(&self) -> u64 {
        self.shared.writes.load(Ordering::SeqCst)
    }

    /// The next `n` requests under `path_prefix` get 429 with `Retry-After: retry_after_secs`.
    pub fn throttle(&self, path_prefix: &str, n: u32, retry_after_secs: u64) {
        self.shared
            .add_fault(path_prefix, FaultKind::Throttle(retry_after_secs), n);
    }

    /// The next `n` requests under `path_prefix` fail with 500.
    pub fn fail(&self, path_prefix: &str, n: u32) {
        self.shared.add_fault(path_prefix, FaultKind::Fail, n);
    }

    /// The next `n` writes under `path_prefix` are committed, but their answers are cut off.
    pub fn drop_response_after_commit(&self, path_prefix: &str, n: u32) {
        self.shared.add_fault(path_prefix, FaultKind::Drop, n);
    }

    /// Every access token handed out so far stops working now.
    pub fn expire_tokens(&self) {
        self.shared
            .tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Halo's per-caller limit, in requests a minute; `None` for no limit.
    pub fn limit_rate(&self, per_minute: Option<u32>) {
        *self
            .shared
            .window
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = per_minute
            .map(|n| rollcall_core::sandbox::RequestWindow::new(n, Duration::from_secs(60)));
    }
}

/// Serves a sandbox on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    seed: Seed,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SandboxError> {
    let shared = Arc::new(Shared::new(seed)?);
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// Serves a sandbox on `addr` until Ctrl-C, for `rollcall sandbox halopsa`.
pub async fn run_standalone(addr: SocketAddr, seed: Seed) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(url = %format!("http://{local}"), "HaloPSA sandbox listening.");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    serve(listener, seed, shutdown).await.map_err(|e| match e {
        SandboxError::Io(io) => io,
        seed @ SandboxError::Seed(_) => {
            std::io::Error::new(std::io::ErrorKind::InvalidData, seed.to_string())
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Shared state

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultKind {
    Throttle(u64),
    Fail,
    Drop,
}

struct Fault {
    prefix: String,
    kind: FaultKind,
    remaining: u32,
}

struct Shared {
    seed: Seed,
    db: Mutex<Db>,
    tokens: Mutex<HashMap<String, Instant>>,
    faults: Mutex<Vec<Fault>>,
    window: Mutex<Option<rollcall_core::sandbox::RequestWindow>>,
    requests: AtomicU64,
    token_requests: AtomicU64,
    write_requests: AtomicU64,
    writes: AtomicU64,
}

#[derive(Default)]
struct Db {
    state: State,
    next_id: BTreeMap<&'static str, i64>,
}

impl Db {
    fn take(&mut self, table: &'static str) -> i64 {
        let next = self.next_id.entry(table).or_insert(0);
        *next += 1;
        *next
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn new(seed: Seed) -> Result<Shared, SandboxError> {
        let db = load(&seed).map_err(SandboxError::Seed)?;
        Ok(Shared {
            seed,
            db: Mutex::new(db),
            tokens: Mutex::new(HashMap::new()),
            faults: Mutex::new(Vec::new()),
            window: Mutex::new(Some(rollcall_core::sandbox::RequestWindow::new(
                500,
                Duration::from_secs(60),
            ))),
            requests: AtomicU64::new(0),
            token_requests: AtomicU64::new(0),
            write_requests: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        })
    }

    fn db(&self) -> MutexGuard<'_, Db> {
        lock(&self.db)
    }

    fn issue(&self) -> String {
        let token = format!("halo-access-{}", uuid::Uuid::new_v4().simple());
        lock(&self.tokens).insert(
            token.clone(),
            Instant::now() + Duration::from_secs(self.seed.token_lifetime_secs),
        );
        token
    }

    fn add_fault(&self, prefix: &str, kind: FaultKind, n: u32) {
        lock(&self.faults).push(Fault {
            prefix: prefix.trim_matches('/').to_lowercase(),
            kind,
            remaining: n,
        });
    }

    /// Takes one fault of `kinds` matching `path`, if any is pending.
    fn take_fault(&self, path: &str, kinds: &[FaultKind]) -> Option<FaultKind> {
        let mut faults = lock(&self.faults);
        let fault = faults.iter_mut().find(|f| {
            f.remaining > 0
                && path.starts_with(&f.prefix)
                && kinds
                    .iter()
                    .any(|k| std::mem::discriminant(k) == std::mem::discriminant(&f.kind))
        })?;
        fault.remaining -= 1;
        Some(fault.kind)
    }
}

/// The seed as the database, ids assigned and references checked.
fn load(seed: &Seed) -> Result<Db, String> {
    let mut db = Db::default();
    let mut max = |table: &'static str, ids: &mut dyn Iterator<Item = i64>| {
        let top = ids.max().unwrap_or(0);
        let next = db.next_id.entry(table).or_insert(0);
        *next = (*next).max(top);
    };
    max("client", &mut seed.clients.iter().map(|c| c.id));
    max("site", &mut seed.sites.iter().map(|s| s.id));
    max("user", &mut seed.users.iter().map(|u| u.id));
    max("item", &mut seed.items.iter().map(|i| i.id));
    max("invoice", &mut seed.invoices.iter().map(|i| i.id));
    max(
        "line",
        &mut seed
            .invoices
            .iter()
            .flat_map(|i| i.lines.iter().flatten().map(|l| l.id)),
    );
    for client in &seed.clients {
        let mut client = client.clone();
        if client.id == 0 {
            client.id = db.take("client");
        }
        db.state.clients.push(client);
    }
    for site in &seed.sites {
        let mut site = site.clone();
        if site.id == 0 {
            site.id = db.take("site");
        }
        if !db.state.clients.iter().any(|c| c.id == site.client_id) {
            return Err(format!(
                "site {} names client {}, which the seed has not",
                site.id, site.client_id
            ));
        }
        db.state.sites.push(site);
    }
    for item in &seed.items {
        let mut item = item.clone();
        if item.id == 0 {
            item.id = db.take("item");
        }
        db.state.items.push(item);
    }
    for user in &seed.users {
        let mut user = user.clone();
        if user.id == 0 {
            user.id = db.take("user");
        }
        let site = user
            .site_id
            .and_then(|s| db.state.sites.iter().find(|x| x.id == s))
            .ok_or_else(|| format!("user {} has no site of the seed", user.id))?;
        user.client_id = Some(site.client_id);
        user.inactive = Some(user.inactive.unwrap_or(false));
        db.state.users.push(user);
    }
    for invoice in &seed.invoices {
        let mut invoice = invoice.clone();
        if invoice.id == 0 {
            invoice.id = db.take("invoice");
        }
        if !invoice
            .client_id
            .is_some_and(|c| db.state.clients.iter().any(|x| x.id == c))
        {
            return Err(format!(
                "recurring invoice {} has no client of the seed",
                invoice.id
            ));
        }
        let mut lines = invoice.lines.take().unwrap_or_default();
        for line in &mut lines {
            if line.id == 0 {
                line.id = db.take("line");
            }
            line.ihid = invoice.id;
            fill_item_code(&db.state.items, line).map_err(|e| e.1)?;
        }
        invoice.lines = Some(lines);
        db.state.invoices.push(invoice);
    }
    Ok(db)
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// An error answer: Halo answers a refused request with a JSON string naming the problem.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(Value::String(self.1))).into_response()
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

fn not_found(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, message.into())
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/auth/token", post(token))
        .route("/api/{*path}", any(api))
        .with_state(shared)
}

fn token_refusal(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(TokenError {
            error: error.to_owned(),
            error_description: Some(description.to_owned()),
        }),
    )
        .into_response()
}

async fn token(
    AxumState(shared): AxumState<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    shared.token_requests.fetch_add(1, Ordering::SeqCst);
    let form: HashMap<String, String> = match form_pairs(&body) {
        Some(form) => form,
        None => {
            return token_refusal(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the body must be application/x-www-form-urlencoded",
            );
        }
    };
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return token_refusal(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "this application signs in with client_credentials",
        );
    }
    if let Some(tenant) = &shared.seed.tenant
        && query
            .get("tenant")
            .is_none_or(|t| !t.eq_ignore_ascii_case(tenant))
    {
        return token_refusal(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "unknown or missing tenant",
        );
    }
    let id_ok = form.get("client_id") == Some(&shared.seed.client_id);
    let secret_ok = form.get("client_secret") == Some(&shared.seed.client_secret);
    if !(id_ok && secret_ok) {
        return token_refusal(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "the client id or secret is wrong",
        );
    }
    let scope = form
        .get("scope")
        .cloned()
        .unwrap_or_else(|| "all".to_owned());
    let answer = TokenAnswer {
        access_token: shared.issue(),
        token_type: "Bearer".to_owned(),
        expires_in: i64::try_from(shared.seed.token_lifetime_secs).unwrap_or(i64::MAX),
        scope: Some(scope),
    };
    axum::Json(answer).into_response()
}

/// A form body (`application/x-www-form-urlencoded`) as pairs; `None` when it is not text.
fn form_pairs(body: &[u8]) -> Option<HashMap<String, String>> {
    let text = std::str::from_utf8(body).ok()?;
    // A form body is a query string: the URL parser decodes it as a form (`+` is a space).
    let url = reqwest::Url::parse(&format!("http://form.invalid/?{text}")).ok()?;
    Some(url.query_pairs().into_owned().collect())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

async fn api(
    AxumState(shared): AxumState<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let live = bearer(&headers).is_some_and(|token| {
        lock(&shared.tokens)
            .get(token)
            .is_some_and(|expires| *expires > Instant::now())
    });
    if !live {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "",
        )
            .into_response();
    }
    if let Some(window) = lock(&shared.window).as_mut()
        && let Err(wait) = window.admit("caller")
    {
        return throttled(wait.as_secs().max(1));
    }
    let path = uri
        .path()
        .trim_start_matches("/api/")
        .trim_matches('/')
        .to_lowercase();
    match shared.take_fault(&path, &[FaultKind::Throttle(0), FaultKind::Fail]) {
        Some(FaultKind::Throttle(secs)) => return throttled(secs),
        Some(FaultKind::Fail) => {
            return ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "An error occurred".into(),
            )
            .into_response();
        }
        _ => {}
    }
    let query: HashMap<String, String> = query
        .into_iter()
        .map(|(k, v)| (k.to_lowercase(), v))
        .collect();
    let segments: Vec<&str> = path.split('/').collect();
    let answer = match (&method, segments.as_slice()) {
        (&Method::GET, [resource]) => list(&shared, resource, &query),
        (&Method::GET, [resource, id]) => get_one(&shared, resource, id),
        (&Method::POST, [resource]) => {
            shared.write_requests.fetch_add(1, Ordering::SeqCst);
            let answer = write(&shared, resource, &body);
            if answer.is_ok() && shared.take_fault(&path, &[FaultKind::Drop]).is_some() {
                return cut_off();
            }
            answer
        }
        _ => Err(not_found(format!("no such endpoint: {method} /api/{path}"))),
    };
    match answer {
        Ok(value) => axum::Json(value).into_response(),
        Err(error) => error.into_response(),
    }
}

fn throttled(retry_after_secs: u64) -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, retry_after_secs.to_string())],
        axum::Json(Value::String("Too many requests".into())),
    )
        .into_response()
}

/// An answer whose body breaks off after the write was committed.
fn cut_off() -> Response {
    let cut = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other(
            "the sandbox dropped this answer after committing the write",
        ))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(cut))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

// ---------------------------------------------------------------------------------------------
// Reads

fn flag(query: &HashMap<String, String>, name: &str) -> bool {
    query
        .get(name)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn number(query: &HashMap<String, String>, name: &str) -> Result<Option<i64>, ApiError> {
    query
        .get(name)
        .map(|v| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| bad_request(format!("{name} must be a whole number, not {v:?}")))
        })
        .transpose()
}

fn contains(haystack: Option<&str>, needle: &str) -> bool {
    haystack.is_some_and(|h| h.to_lowercase().contains(needle))
}

fn list(
    shared: &Shared,
    resource: &str,
    query: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    let search = query.get("search").map(|s| s.trim().to_lowercase());
    let search = search.as_deref().filter(|s| !s.is_empty());
    let inactive_too = flag(query, "includeinactive");
    let client_id = number(query, "client_id")?;
    let site_id = number(query, "site_id")?;
    let db = shared.db();
    let state = &db.state;
    let (key, rows): (&str, Vec<Value>) = match resource {
        "client" => (
            "clients",
            state
                .clients
                .iter()
                .filter(|c| inactive_too || !c.inactive)
                .filter(|c| search.is_none_or(|s| contains(Some(&c.name), s)))
                .map(to_value)
                .collect(),
        ),
        "site" => (
            "sites",
            state
                .sites
                .iter()
                .filter(|s| inactive_too || !s.inactive)
                .filter(|s| client_id.is_none_or(|c| s.client_id == c))
                .filter(|s| search.is_none_or(|q| contains(Some(&s.name), q)))
                .map(to_value)
                .collect(),
        ),
        "users" => (
            "users",
            state
                .users
                .iter()
                .filter(|u| inactive_too || u.inactive != Some(true))
                .filter(|u| client_id.is_none_or(|c| u.client_id == Some(c)))
                .filter(|u| site_id.is_none_or(|s| u.site_id == Some(s)))
                .filter(|u| {
                    search.is_none_or(|q| {
                        contains(u.name.as_deref(), q)
                            || contains(u.emailaddress.as_deref(), q)
                            || contains(u.firstname.as_deref(), q)
                            || contains(u.surname.as_deref(), q)
                    })
                })
                .map(to_value)
                .collect(),
        ),
        "item" => (
            "items",
            state
                .items
                .iter()
                .filter(|i| search.is_none_or(|q| contains(Some(&i.name), q)))
                .map(to_value)
                .collect(),
        ),
        "recurringinvoice" => {
            let with_lines = flag(query, "includelines");
            (
                "invoices",
                state
                    .invoices
                    .iter()
                    .filter(|i| client_id.is_none_or(|c| i.client_id == Some(c)))
                    .filter(|i| search.is_none_or(|q| contains(i.invoicenumber.as_deref(), q)))
                    .map(|i| {
                        let mut i = i.clone();
                        if !with_lines {
                            i.lines = None;
                        }
                        to_value(&i)
                    })
                    .collect(),
            )
        }
        other => return Err(not_found(format!("no such endpoint: /api/{other}"))),
    };
    let record_count = rows.len();
    let mut answer = serde_json::Map::new();
    answer.insert("record_count".into(), Value::from(record_count));
    let rows = if flag(query, "pageinate") {
        let page_size = number(query, "page_size")?
            .map(|n| usize::try_from(n).unwrap_or(0))
            .unwrap_or(DEFAULT_PAGE_SIZE);
        let page_no = number(query, "page_no")?
            .map(|n| usize::try_from(n).unwrap_or(0))
            .unwrap_or(1);
        if page_size == 0 || page_no == 0 {
            return Err(bad_request("page_size and page_no start at 1"));
        }
        answer.insert("page_no".into(), Value::from(page_no));
        answer.insert("page_size".into(), Value::from(page_size));
        rows.into_iter()
            .skip((page_no - 1).saturating_mul(page_size))
            .take(page_size)
            .collect()
    } else {
        let count = number(query, "count")?.map(|n| usize::try_from(n).unwrap_or(0));
        rows.into_iter().take(count.unwrap_or(usize::MAX)).collect()
    };
    answer.insert(key.into(), Value::Array(rows));
    Ok(Value::Object(answer))
}

fn to_value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn get_one(shared: &Shared, resource: &str, id: &str) -> Result<Value, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| bad_request(format!("{id:?} is not an id")))?;
    let db = shared.db();
    let state = &db.state;
    let found = match resource {
        "client" => state.clients.iter().find(|x| x.id == id).map(to_value),
        "site" => state.sites.iter().find(|x| x.id == id).map(to_value),
        "users" => state.users.iter().find(|x| x.id == id).map(to_value),
        "item" => state.items.iter().find(|x| x.id == id).map(to_value),
        "recurringinvoice" => state.invoices.iter().find(|x| x.id == id).map(to_value),
        other => return Err(not_found(format!("no such endpoint: /api/{other}/{id}"))),
    };
    found.ok_or_else(|| not_found(format!("{resource} {id} not found")))
}

// ---------------------------------------------------------------------------------------------
// Writes

fn write(shared: &Shared, resource: &str, body: &[u8]) -> Result<Value, ApiError> {
    let objects: Vec<Value> = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(objects)) => objects,
        Ok(_) => return Err(bad_request("the body must be an array of objects")),
        Err(e) => return Err(bad_request(format!("the body is not JSON: {e}"))),
    };
    if objects.is_empty() {
        return Err(bad_request("the body holds no objects"));
    }
    let mut db = shared.db();
    // All or nothing: a refused object leaves the others unwritten, as Halo's one transaction.
    let mut working = Db {
        state: db.state.clone(),
        next_id: db.next_id.clone(),
    };
    let mut answers = Vec::new();
    let mut changed = false;
    for object in objects {
        let (answer, did) = match resource {
            "users" => write_user(&mut working, object)?,
            "recurringinvoice" => write_invoice(&mut working, object)?,
            other => return Err(not_found(format!("no such endpoint: POST /api/{other}"))),
        };
        changed |= did;
        answers.push(answer);
    }
    *db = working;
    if changed {
        shared.writes.fetch_add(1, Ordering::SeqCst);
    }
    Ok(if answers.len() == 1 {
        answers.swap_remove(0)
    } else {
        Value::Array(answers)
    })
}

fn too_long(field: &str, value: Option<&str>, max: usize) -> Result<(), ApiError> {
    match value {
        Some(v) if rollcall_core::text_length(v) > max => Err(bad_request(format!(
            "{field} is too long: at most {max} characters"
        ))),
        _ => Ok(()),
    }
}

/// `Some("")` clears a field; `None` leaves it.
fn merge(target: &mut Option<String>, sent: Option<String>) {
    if let Some(value) = sent {
        *target = Some(value).filter(|v| !v.trim().is_empty());
    }
}

fn write_user(db: &mut Db, object: Value) -> Result<(Value, bool), ApiError> {
    let sent: User =
        serde_json::from_value(object).map_err(|e| bad_request(format!("not a user: {e}")))?;
    too_long("name", sent.name.as_deref(), FULL_NAME_MAX)?;
    too_long("firstname", sent.firstname.as_deref(), NAME_PART_MAX)?;
    too_long("surname", sent.surname.as_deref(), NAME_PART_MAX)?;
    too_long("emailaddress", sent.emailaddress.as_deref(), EMAIL_MAX)?;
    too_long("title", sent.title.as_deref(), TITLE_MAX)?;
    too_long("phonenumber", sent.phonenumber.as_deref(), PHONE_MAX)?;
    let site_client = |db: &Db, site: Option<i64>| {
        site.and_then(|s| db.state.sites.iter().find(|x| x.id == s && !x.inactive))
            .map(|s| s.client_id)
    };
    if sent.id == 0 {
        if sent.name.as_deref().is_none_or(|n| n.trim().is_empty()) {
            return Err(bad_request("Please enter a name for the user"));
        }
        let client_id = site_client(&*db, sent.site_id)
            .ok_or_else(|| bad_request("Please enter a valid Site"))?;
        let user = User {
            id: db.take("user"),
            client_id: Some(client_id),
            inactive: Some(sent.inactive.unwrap_or(false)),
            ..sent
        };
        db.state.users.push(user.clone());
        return Ok((to_value(&user), true));
    }
    let moved_to = match sent.site_id {
        Some(_) => Some(
            site_client(&*db, sent.site_id)
                .ok_or_else(|| bad_request("Please enter a valid Site"))?,
        ),
        None => None,
    };
    let user = db
        .state
        .users
        .iter_mut()
        .find(|u| u.id == sent.id)
        .ok_or_else(|| not_found(format!("user {} not found", sent.id)))?;
    let before = user.clone();
    merge(&mut user.name, sent.name);
    merge(&mut user.firstname, sent.firstname);
    merge(&mut user.surname, sent.surname);
    merge(&mut user.emailaddress, sent.emailaddress);
    merge(&mut user.title, sent.title);
    merge(&mut user.phonenumber, sent.phonenumber);
    merge(&mut user.other5, sent.other5);
    if let Some(inactive) = sent.inactive {
        user.inactive = Some(inactive);
    }
    if let Some(client) = moved_to {
        user.site_id = sent.site_id;
        user.client_id = Some(client);
    }
    if user.name.as_deref().is_none_or(|n| n.trim().is_empty()) {
        return Err(bad_request("Please enter a name for the user"));
    }
    let changed = *user != before;
    Ok((to_value(&*user), changed))
}

fn fill_item_code(items: &[Item], line: &mut InvoiceLine) -> Result<(), ApiError> {
    if let Some(item_id) = line.item_id {
        let item = items
            .iter()
            .find(|i| i.id == item_id)
            .ok_or_else(|| bad_request(format!("item {item_id} not found")))?;
        line.item_code = Some(item.name.clone());
    }
    Ok(())
}

fn write_invoice(db: &mut Db, object: Value) -> Result<(Value, bool), ApiError> {
    let sent: RecurringInvoice = serde_json::from_value(object)
        .map_err(|e| bad_request(format!("not a recurring invoice: {e}")))?;
    let id = if sent.id == 0 {
        let client_id = sent
            .client_id
            .filter(|c| db.state.clients.iter().any(|x| x.id == *c))
            .ok_or_else(|| bad_request("Please enter a valid Client"))?;
        let id = db.take("invoice");
        db.state.invoices.push(RecurringInvoice {
            id,
            client_id: Some(client_id),
            site_id: sent.site_id,
            invoicenumber: sent.invoicenumber.clone(),
            lines: Some(Vec::new()),
        });
        id
    } else {
        sent.id
    };
    let index = db
        .state
        .invoices
        .iter()
        .position(|i| i.id == id)
        .ok_or_else(|| not_found(format!("recurring invoice {id} not found")))?;
    let before = db.state.invoices[index].clone();
    if sent.id != 0 && sent.invoicenumber.is_some() {
        db.state.invoices[index].invoicenumber = sent.invoicenumber;
    }
    if let Some(lines) = sent.lines {
        let old = before.lines.clone().unwrap_or_default();
        let mut new = Vec::with_capacity(lines.len());
        for mut line in lines {
            too_long(
                "item_shortdescription",
                line.item_shortdescription.as_deref(),
                LINE_DESCRIPTION_MAX,
            )?;
            if line.id != 0 && !old.iter().any(|l| l.id == line.id) {
                return Err(bad_request(format!(
                    "line {} is not a line of recurring invoice {id}",
                    line.id
                )));
            }
            if line.id == 0 {
                line.id = db.take("line");
            }
            line.ihid = id;
            line.qty_order = Some(line.qty_order.unwrap_or(Decimal::ZERO));
            fill_item_code(&db.state.items, &mut line)?;
            new.push(line);
        }
        db.state.invoices[index].lines = Some(new);
    }
    let after = db.state.invoices[index].clone();
    let changed = after != before || sent.id == 0;
    Ok((to_value(&after), changed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_percent_escapes_and_plus() {
        let form = form_pairs(b"a=b%20c&scope=all+more&empty=&x%3Dy=1").expect("form");
        assert_eq!(form["a"], "b c");
        assert_eq!(form["scope"], "all more");
        assert_eq!(form["empty"], "");
        assert_eq!(form["x=y"], "1");
    }

    #[test]
    fn the_demo_seed_loads() {
        let db = load(&Seed::demo()).expect("demo seed");
        assert_eq!(db.state.clients.len(), 3);
        assert_eq!(db.state.invoices.len(), 3);
    }
}
