//! A stateful ConnectWise Manage server, for tests, demos and `rollcall sandbox connectwise`.
//!
//! rollcall cannot test against a real ConnectWise site, and a mock that accepts anything would
//! let the client's mistakes through. This sandbox keeps companies, contacts, agreements,
//! additions and the catalogue in memory and enforces what ConnectWise's
//! REST API 3.0 documents: Basic auth with `company+public:private`
//! plus the `clientId` header, `page`/`pageSize` paging (default 25, at most 1000) with a `Link`
//! header, a real `conditions=` parser ([`conditions`]), JSON-Patch bodies whose paths have no
//! leading slash, validation errors in ConnectWise's `{code, message, errors[]}` shape, and exact
//! decimal quantities and prices. Ids are integers assigned in sequence, per object type.
//! Service tickets can be listed and opened (on one of the site's service boards, which a seed
//! names or which default to `Help Desk` and `Billing`).
//!
//! Faults are injected per path prefix (relative to the API base, e.g. `company/contacts`):
//! [`Sandbox::throttle`] (429 with `Retry-After`), [`Sandbox::fail`] (500),
//! [`Sandbox::drop_response_after_commit`] (the write lands, its answer is cut off),
//! [`Sandbox::latency`] and [`Sandbox::limit_rate`]. The server stops when its handle is dropped.

pub mod conditions;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, Path, Query, Request, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use base64::Engine as _;
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{Config, MAX_PAGE_SIZE};
use crate::model::{
    Addition, Agreement, AgreementStatus, Board, CatalogItem, CommunicationType, Company,
    CompanyInfo, Contact, Count, ErrorResponse, Info, LIMITS, PatchOperation, Reference,
    SystemInfo, TICKET_SUMMARY_MAX, Ticket, ValidationError,
};
use conditions::Expr;

/// Where the REST API lives on every ConnectWise server, and on the sandbox.
pub const API_BASE: &str = "/v4_6_release/apis/3.0";

/// ConnectWise's default page size, when a request names none.
const DEFAULT_PAGE_SIZE: usize = 25;

/// Who the sandbox records as having entered and updated objects (`_info`).
const MEMBER: &str = "APIMember";

/// The API keys the sandbox accepts. Written in the seed in the clear: they are test values.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub company_id: String,
    pub public_key: String,
    pub private_key: String,
    pub client_id: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("company_id", &self.company_id)
            .field("public_key", &"..")
            .field("private_key", &"..")
            .field("client_id", &self.client_id)
            .finish()
    }
}

/// What the sandbox holds when it starts, as JSON. Objects are written in ConnectWise's own
/// shape (camelCase); ids may be left out and are then assigned in sequence. References may name
/// their target by id or by identifier: a contact's `"company": {"identifier": "ACME"}`, an
/// agreement's `company` likewise, an addition's `"product": {"identifier": "M365-BP"}`; an
/// addition names its agreement with `agreementId`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    pub credentials: Credentials,
    #[serde(default)]
    pub companies: Vec<Company>,
    #[serde(default)]
    pub agreements: Vec<Agreement>,
    #[serde(default)]
    pub catalog: Vec<CatalogItem>,
    #[serde(default)]
    pub contacts: Vec<Contact>,
    #[serde(default)]
    pub additions: Vec<Addition>,
    #[serde(default)]
    pub tickets: Vec<Ticket>,
    /// The service boards tickets may be opened on. Default: `Help Desk` and `Billing`.
    #[serde(default = "standard_boards")]
    pub boards: Vec<Board>,
}

/// The boards a site starts with when its seed names none.
fn standard_boards() -> Vec<Board> {
    ["Help Desk", "Billing"]
        .into_iter()
        .enumerate()
        .map(|(i, name)| Board {
            id: i as i64 + 1,
            name: name.to_owned(),
        })
        .collect()
}

impl Seed {
    /// Three clients (`ACME`, `GLOBEX`, `INITECH`), each with a "Managed Services" agreement and
    /// no contacts or additions yet, and four per-user products. The keys are `demo` /
    /// `demo-public` / `demo-private` with client id `00000000-0000-4000-8000-000000000000`.
    pub fn demo() -> Seed {
        let company = |identifier: &str, name: &str| Company {
            id: 0,
            identifier: identifier.to_owned(),
            name: name.to_owned(),
            status: None,
            deleted_flag: false,
            info: None,
        };
        let agreement = |identifier: &str| Agreement {
            name: "Managed Services".to_owned(),
            kind: Some(Reference::named("Managed Services")),
            company: Some(Reference {
                identifier: Some(identifier.to_owned()),
                ..Reference::default()
            }),
            agreement_status: Some(AgreementStatus::Active),
            start_date: Some("2025-01-01T00:00:00Z".to_owned()),
            no_ending_date_flag: true,
            billing_cycle: Some(Reference::named("Monthly")),
            ..Agreement::default()
        };
        let product = |identifier: &str, description: &str, price: i64, cost: i64| CatalogItem {
            id: 0,
            identifier: identifier.to_owned(),
            description: description.to_owned(),
            price: Some(Decimal::new(price, 2)),
            cost: Some(Decimal::new(cost, 2)),
            inactive_flag: false,
            taxable_flag: false,
            info: None,
        };
        Seed {
            credentials: Credentials {
                company_id: "demo".to_owned(),
                public_key: "demo-public".to_owned(),
                private_key: "demo-private".to_owned(),
                client_id: "00000000-0000-4000-8000-000000000000".to_owned(),
            },
            companies: vec![
                company("ACME", "Acme Corporation"),
                company("GLOBEX", "Globex Corporation"),
                company("INITECH", "Initech"),
            ],
            agreements: vec![agreement("ACME"), agreement("GLOBEX"), agreement("INITECH")],
            catalog: vec![
                product("M365-BP", "Microsoft 365 Business Premium", 2200, 1980),
                product("M365-E3", "Microsoft 365 E3", 3600, 3240),
                product(
                    "SEC-AWARE",
                    "Security awareness training (per user)",
                    350,
                    120,
                ),
                product("HELPDESK-USER", "Helpdesk support (per user)", 4500, 0),
            ],
            contacts: Vec::new(),
            additions: Vec::new(),
            tickets: Vec::new(),
            boards: standard_boards(),
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
    pub companies: Vec<Company>,
    pub contacts: Vec<Contact>,
    pub agreements: Vec<Agreement>,
    pub additions: Vec<Addition>,
    pub catalog: Vec<CatalogItem>,
    pub tickets: Vec<Ticket>,
    pub boards: Vec<Board>,
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
            Err(error) => panic!("the ConnectWise sandbox could not start: {error}"),
        }
    }

    /// Starts a sandbox on the given address.
    pub async fn start_on(addr: SocketAddr, seed: Seed) -> Result<Sandbox, SandboxError> {
        let shared = Arc::new(Shared::new(seed)?);
        let server = rollcall_core::sandbox::SandboxServer::start(
            addr,
            router(shared.clone()),
            "connectwise",
        )
        .await?;
        Ok(Sandbox { server, shared })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The REST API's base URL, as a pipeline's `url:` takes it.
    pub fn url(&self) -> String {
        format!("http://{}{API_BASE}", self.server.addr())
    }

    /// The keys the sandbox accepts.
    pub fn credentials(&self) -> Credentials {
        self.shared.credentials.clone()
    }

    /// A client configuration that reaches this sandbox with its keys.
    pub fn config(&self) -> Config {
        let credentials = &self.shared.credentials;
        Config {
            url: self.url(),
            company_id: credentials.company_id.clone(),
            public_key: rollcall_core::Secret::new(credentials.public_key.clone()),
            private_key: rollcall_core::Secret::new(credentials.private_key.clone()),
            client_id: credentials.client_id.clone(),
            rate_limit_per_second: 1000,
            page_size: MAX_PAGE_SIZE,
        }
    }

    /// What the sandbox holds now.
    pub fn state(&self) -> State {
        self.shared.db().state.clone()
    }

    /// Requests received so far, refused and faulted ones included.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Write requests received (POST, PATCH, PUT, DELETE), whatever their outcome: what a
    /// vendor bills against the API budget, and what a no-change resync must not send.
    pub fn write_requests(&self) -> u64 {
        self.shared.write_requests.load(Ordering::SeqCst)
    }

    /// Writes (POST, PATCH, PUT) that changed what the sandbox holds.
    pub fn writes(&self) -> u64 {
        self.shared.writes.load(Ordering::SeqCst)
    }

    /// The next `n` requests whose path starts with `path_prefix` get 429 with
    /// `Retry-After: retry_after_secs`, as ConnectWise's limiter answers.
    pub fn throttle(&self, path_prefix: &str, n: u32, retry_after_secs: u64) {
        self.shared.faults().throttles.push(Fault {
            prefix: normalize_prefix(path_prefix),
            remaining: n,
            retry_after: retry_after_secs,
        });
    }

    /// The next `n` requests whose path starts with `path_prefix` get 500, before they are
    /// carried out.
    pub fn fail(&self, path_prefix: &str, n: u32) {
        self.shared.faults().failures.push(Fault {
            prefix: normalize_prefix(path_prefix),
            remaining: n,
            retry_after: 0,
        });
    }

    /// The next `n` successful writes (POST, PATCH, PUT) whose path starts with `path_prefix`
    /// are committed, then their answer is cut off mid-response, as when a connection drops: the
    /// client cannot know whether the write landed.
    pub fn drop_response_after_commit(&self, path_prefix: &str, n: u32) {
        self.shared.faults().drops.push(Fault {
            prefix: normalize_prefix(path_prefix),
            remaining: n,
            retry_after: 0,
        });
    }

    /// Opens a service ticket on a company (by identifier) for a contact, as the service desk
    /// would; `entered` and `closed` are ISO dates. Returns the ticket's id.
    pub fn add_ticket(
        &self,
        company: &str,
        contact_id: Option<i64>,
        summary: &str,
        entered: &str,
        closed: Option<&str>,
    ) -> Option<i64> {
        let mut db = self.shared.db();
        let company_id = db
            .state
            .companies
            .iter()
            .find(|c| c.identifier.eq_ignore_ascii_case(company))?
            .id;
        let id = take(&mut db.ids.ticket);
        let info: Info = [("dateEntered".to_owned(), entered.to_owned())].into();
        db.state.tickets.push(Ticket {
            id,
            summary: summary.to_owned(),
            company: Some(Reference::id(company_id)),
            contact: contact_id.map(Reference::id),
            status: Some(Reference {
                id: 0,
                identifier: None,
                name: Some(if closed.is_some() { "Closed" } else { "New" }.to_owned()),
            }),
            closed_date: closed.map(str::to_owned),
            board: None,
            initial_description: None,
            info: Some(info),
        });
        Some(id)
    }

    /// Forgets every fault set with [`Sandbox::throttle`], [`Sandbox::fail`] and
    /// [`Sandbox::drop_response_after_commit`]: the API recovers.
    pub fn clear_faults(&self) {
        let mut faults = self.shared.faults();
        faults.throttles.clear();
        faults.failures.clear();
        faults.drops.clear();
    }

    /// Delays every answer by `delay`.
    pub fn latency(&self, delay: Duration) {
        self.shared.faults().latency = delay;
    }

    /// Answers 429 (`Retry-After: 1`) to requests beyond `per_second` in any one-second window;
    /// `None` lifts the limit. ConnectWise publishes no fixed rate, so there is none by default.
    pub fn limit_rate(&self, per_second: Option<u32>) {
        self.shared.faults().rate = per_second.map(|limit| RateWindow {
            limit,
            started: Instant::now(),
            used: 0,
        });
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

/// Serves a sandbox on `addr` until Ctrl-C, for `rollcall sandbox connectwise`.
pub async fn run_standalone(addr: SocketAddr, seed: Seed) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(url = %format!("http://{local}{API_BASE}"), "ConnectWise sandbox listening.");
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

struct Shared {
    credentials: Credentials,
    db: Mutex<Db>,
    faults: Mutex<Faults>,
    requests: AtomicU64,
    write_requests: AtomicU64,
    writes: AtomicU64,
}

struct Db {
    state: State,
    ids: Ids,
}

/// The next id per object type; ConnectWise numbers each table on its own.
#[derive(Default)]
struct Ids {
    company: i64,
    contact: i64,
    agreement: i64,
    addition: i64,
    catalog: i64,
    communication_item: i64,
    ticket: i64,
}

fn take(counter: &mut i64) -> i64 {
    *counter += 1;
    *counter
}

#[derive(Default)]
struct Faults {
    throttles: Vec<Fault>,
    failures: Vec<Fault>,
    drops: Vec<Fault>,
    latency: Duration,
    rate: Option<RateWindow>,
}

struct Fault {
    prefix: String,
    remaining: u32,
    retry_after: u64,
}

struct RateWindow {
    limit: u32,
    started: Instant,
    used: u32,
}

/// Takes one use of the first armed fault matching `path`.
fn take_fault(faults: &mut [Fault], path: &str) -> Option<u64> {
    let fault = faults
        .iter_mut()
        .find(|f| f.remaining > 0 && path.starts_with(&f.prefix))?;
    fault.remaining -= 1;
    Some(fault.retry_after)
}

fn normalize_prefix(prefix: &str) -> String {
    let prefix = prefix.trim_start_matches('/');
    prefix
        .strip_prefix(API_BASE.trim_start_matches('/'))
        .map(|p| p.trim_start_matches('/'))
        .unwrap_or(prefix)
        .to_owned()
}

impl Shared {
    fn new(seed: Seed) -> Result<Shared, SandboxError> {
        let credentials = seed.credentials.clone();
        let db = load(seed).map_err(SandboxError::Seed)?;
        Ok(Shared {
            credentials,
            db: Mutex::new(db),
            faults: Mutex::new(Faults::default()),
            requests: AtomicU64::new(0),
            write_requests: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        })
    }

    // A panic while holding a lock leaves the data as consistent as any single write left it,
    // so a poisoned lock is still used.
    fn db(&self) -> MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::SeqCst);
    }
}

/// Builds the initial state from a seed, checking it as the API would check the same objects.
fn load(seed: Seed) -> Result<Db, String> {
    let mut db = Db {
        state: State::default(),
        ids: Ids::default(),
    };
    let max = |ids: &mut dyn Iterator<Item = i64>| ids.max().unwrap_or(0).max(0);
    db.ids.company = max(&mut seed.companies.iter().map(|c| c.id));
    db.ids.contact = max(&mut seed.contacts.iter().map(|c| c.id));
    db.ids.agreement = max(&mut seed.agreements.iter().map(|a| a.id));
    db.ids.addition = max(&mut seed.additions.iter().map(|a| a.id));
    db.ids.catalog = max(&mut seed.catalog.iter().map(|c| c.id));
    db.ids.ticket = max(&mut seed.tickets.iter().map(|t| t.id));
    db.ids.communication_item = max(&mut seed
        .contacts
        .iter()
        .flat_map(|c| c.communication_items.iter().map(|i| i.id)));
    unique_ids("company", seed.companies.iter().map(|c| c.id))?;
    unique_ids("contact", seed.contacts.iter().map(|c| c.id))?;
    unique_ids("agreement", seed.agreements.iter().map(|a| a.id))?;
    unique_ids("addition", seed.additions.iter().map(|a| a.id))?;
    unique_ids("catalog item", seed.catalog.iter().map(|c| c.id))?;
    unique_ids(
        "communication item",
        seed.contacts
            .iter()
            .flat_map(|c| c.communication_items.iter().map(|i| i.id)),
    )?;
    let now = now();
    let fail = |what: &str, i: usize, errors: Vec<ValidationError>| {
        let reasons: Vec<String> = errors.iter().map(|e| e.message.clone()).collect();
        format!("{what} #{}: {}", i + 1, reasons.join("; "))
    };

    for (i, mut company) in seed.companies.into_iter().enumerate() {
        if company.identifier.trim().is_empty() {
            return Err(format!("company #{}: identifier is empty", i + 1));
        }
        if db
            .state
            .companies
            .iter()
            .any(|c| c.identifier.eq_ignore_ascii_case(&company.identifier))
        {
            return Err(format!(
                "company #{}: identifier {:?} is used twice",
                i + 1,
                company.identifier
            ));
        }
        if company.id == 0 {
            company.id = take(&mut db.ids.company);
        }
        company.status.get_or_insert_with(|| Reference {
            id: 1,
            identifier: None,
            name: Some("Active".to_owned()),
        });
        stamp_created(&mut company.info, &now);
        db.state.companies.push(company);
    }
    for (i, mut item) in seed.catalog.into_iter().enumerate() {
        if db
            .state
            .catalog
            .iter()
            .any(|c| c.identifier.eq_ignore_ascii_case(&item.identifier))
        {
            return Err(format!(
                "catalog item #{}: identifier {:?} is used twice",
                i + 1,
                item.identifier
            ));
        }
        if item.id == 0 {
            item.id = take(&mut db.ids.catalog);
        }
        stamp_created(&mut item.info, &now);
        db.state.catalog.push(item);
    }
    for (i, mut agreement) in seed.agreements.into_iter().enumerate() {
        let company = resolve_company(&db.state, agreement.company.as_ref())
            .map_err(|e| fail("agreement", i, vec![e]))?;
        agreement.company = Some(company);
        if agreement.name.trim().is_empty() {
            return Err(format!("agreement #{}: name is empty", i + 1));
        }
        if agreement.id == 0 {
            agreement.id = take(&mut db.ids.agreement);
        }
        agreement
            .agreement_status
            .get_or_insert(if agreement.cancelled_flag {
                AgreementStatus::Cancelled
            } else {
                AgreementStatus::Active
            });
        agreement
            .kind
            .get_or_insert_with(|| Reference::named("Managed Services"));
        stamp_created(&mut agreement.info, &now);
        db.state.agreements.push(agreement);
    }
    for (i, contact) in seed.contacts.into_iter().enumerate() {
        let id = contact.id;
        let mut contact = normalize_contact(&db.state, &mut db.ids, contact)
            .map_err(|e| fail("contact", i, e))?;
        contact.id = if id == 0 {
            take(&mut db.ids.contact)
        } else {
            id
        };
        stamp_created(&mut contact.info, &now);
        db.state.contacts.push(contact);
    }
    for (i, addition) in seed.additions.into_iter().enumerate() {
        let id = addition.id;
        let agreement = addition
            .agreement_id
            .and_then(|a| db.state.agreements.iter().find(|x| x.id == a))
            .cloned()
            .ok_or_else(|| format!("addition #{}: agreementId names no agreement", i + 1))?;
        let mut addition = normalize_addition(&db.state, &agreement, addition)
            .map_err(|e| fail("addition", i, e))?;
        addition.id = if id == 0 {
            take(&mut db.ids.addition)
        } else {
            id
        };
        stamp_created(&mut addition.info, &now);
        db.state.additions.push(addition);
    }
    for (i, mut ticket) in seed.tickets.into_iter().enumerate() {
        let company = ticket.company.as_ref().map(|c| c.id).unwrap_or(0);
        if !db.state.companies.iter().any(|c| c.id == company) {
            return Err(format!("ticket #{}: no company with id {company}", i + 1));
        }
        if ticket.id == 0 {
            ticket.id = take(&mut db.ids.ticket);
        }
        stamp_created(&mut ticket.info, &now);
        db.state.tickets.push(ticket);
    }
    db.state.boards = seed.boards;
    Ok(db)
}

/// Ids a seed gives explicitly must differ; left out (0), they are assigned.
fn unique_ids(what: &str, ids: impl Iterator<Item = i64>) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for id in ids.filter(|id| *id != 0) {
        if id < 0 {
            return Err(format!("{what} id {id} is negative"));
        }
        if !seen.insert(id) {
            return Err(format!("{what} id {id} is used twice"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Errors in ConnectWise's shape

#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    body: ErrorResponse,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorResponse {
                code: code.to_owned(),
                message: message.into(),
                errors: Vec::new(),
            },
            retry_after: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    fn invalid(kind: Kind, errors: Vec<ValidationError>) -> Self {
        let first = errors
            .first()
            .map(|e| e.message.clone())
            .unwrap_or_default();
        let mut error = ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidObject",
            format!("{} object is invalid: {first}", kind.resource()),
        );
        error.body.errors = errors;
        error
    }

    fn not_found(kind: Kind, id: impl std::fmt::Display) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{} with id {id} was not found.", kind.title()),
        )
    }

    fn unauthorized(message: &str) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", message)
    }

    fn internal(error: impl std::fmt::Display) -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UnexpectedServerError",
            format!("An unexpected server error has occurred: {error}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

fn field_error(kind: Kind, code: &str, field: &str, message: impl Into<String>) -> ValidationError {
    ValidationError {
        code: code.to_owned(),
        message: message.into(),
        resource: kind.resource().to_owned(),
        field: field.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Object kinds

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Company,
    Contact,
    Agreement,
    Addition,
    Catalog,
    Ticket,
}

impl Kind {
    fn resource(self) -> &'static str {
        match self {
            Kind::Company => "company",
            Kind::Contact => "contact",
            Kind::Agreement => "agreement",
            Kind::Addition => "addition",
            Kind::Catalog => "catalogItem",
            Kind::Ticket => "ticket",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Kind::Company => "Company",
            Kind::Contact => "Contact",
            Kind::Agreement => "Agreement",
            Kind::Addition => "Addition",
            Kind::Catalog => "Catalog item",
            Kind::Ticket => "Ticket",
        }
    }

    /// The paths `conditions=` and `orderBy=` may name (`_info/…` is always allowed).
    fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::Company => &[
                "id",
                "identifier",
                "name",
                "status/id",
                "status/name",
                "deletedFlag",
            ],
            Kind::Contact => &[
                "id",
                "firstName",
                "lastName",
                "title",
                "inactiveFlag",
                "company/id",
                "company/identifier",
                "company/name",
            ],
            Kind::Agreement => &[
                "id",
                "name",
                "type/id",
                "type/name",
                "company/id",
                "company/identifier",
                "company/name",
                "agreementStatus",
                "startDate",
                "endDate",
                "noEndingDateFlag",
                "cancelledFlag",
                "billingCycle/id",
                "billingCycle/name",
            ],
            Kind::Addition => &[
                "id",
                "product/id",
                "product/identifier",
                "quantity",
                "lessIncluded",
                "unitPrice",
                "unitCost",
                "billCustomer",
                "effectiveDate",
                "cancelledDate",
                "invoiceDescription",
                "description",
                "taxableFlag",
                "agreementId",
                "agreementStatus",
            ],
            Kind::Catalog => &[
                "id",
                "identifier",
                "description",
                "price",
                "cost",
                "inactiveFlag",
                "taxableFlag",
            ],
            Kind::Ticket => &[
                "id",
                "summary",
                "company/id",
                "company/identifier",
                "contact/id",
                "status/name",
                "closedDate",
            ],
        }
    }

    /// The paths `childConditions=` may name: fields of an object's child lists.
    fn child_fields(self) -> &'static [&'static str] {
        match self {
            Kind::Contact => &[
                "communicationItems/value",
                "communicationItems/type/id",
                "communicationItems/type/name",
                "communicationItems/communicationType",
                "communicationItems/defaultFlag",
            ],
            _ => &[],
        }
    }

    /// The fields a PATCH may set.
    fn patchable(self) -> &'static [&'static str] {
        match self {
            Kind::Contact => &[
                "firstName",
                "lastName",
                "title",
                "inactiveFlag",
                "company",
                "communicationItems",
            ],
            Kind::Addition => &[
                "product",
                "quantity",
                "lessIncluded",
                "unitPrice",
                "unitCost",
                "billCustomer",
                "effectiveDate",
                "cancelledDate",
                "invoiceDescription",
                "description",
                "taxableFlag",
            ],
            _ => &[],
        }
    }

    fn rows(self, state: &State, parent: Option<i64>) -> Result<Vec<Value>, ApiError> {
        fn all<'a, T: Serialize + 'a>(
            items: impl Iterator<Item = &'a T>,
        ) -> Result<Vec<Value>, ApiError> {
            items
                .map(|item| serde_json::to_value(item).map_err(ApiError::internal))
                .collect()
        }
        match self {
            Kind::Company => all(state.companies.iter()),
            Kind::Contact => all(state.contacts.iter()),
            Kind::Agreement => all(state.agreements.iter()),
            Kind::Addition => all(state
                .additions
                .iter()
                .filter(|a| parent.is_none() || a.agreement_id == parent)),
            // `customerDescription` is required on a catalog item (ConnectWise's schema, and
            // the SDKs' models); the sandbox's items have one description, shown for both.
            Kind::Catalog => all(state.catalog.iter()).map(|rows| {
                rows.into_iter()
                    .map(|mut row| {
                        if row.get("customerDescription").is_none() {
                            row["customerDescription"] = row["description"].clone();
                        }
                        row
                    })
                    .collect()
            }),
            Kind::Ticket => all(state.tickets.iter()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Routing, auth and faults

/// `GET` of a top-level collection (companies, contacts, agreements, catalog): one handler for
/// all, told which by `kind`, since they differ only in the rows they list.
fn list_of(kind: Kind) -> MethodRouter<Arc<Shared>> {
    get(
        move |AxumState(s): AxumState<Arc<Shared>>,
              Query(p): Params,
              OriginalUri(uri): OriginalUri,
              headers: HeaderMap| async move { list(&s, kind, None, &p, &uri, &headers) },
    )
}

/// `GET …/count` of a top-level collection.
fn count_of(kind: Kind) -> MethodRouter<Arc<Shared>> {
    get(
        move |AxumState(s): AxumState<Arc<Shared>>, Query(p): Params| async move {
            count(&s, kind, None, &p)
        },
    )
}

/// `GET …/{id}` of a top-level collection.
fn one_of(kind: Kind) -> MethodRouter<Arc<Shared>> {
    get(
        move |AxumState(s): AxumState<Arc<Shared>>, Path(id): Path<String>| async move {
            get_one(&s, kind, None, &id)
        },
    )
}

fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/system/info", get(system_info))
        .route("/company/companies", list_of(Kind::Company))
        .route("/company/companies/count", count_of(Kind::Company))
        .route("/company/companies/{id}", one_of(Kind::Company))
        .route(
            "/company/contacts",
            list_of(Kind::Contact).post(create_contact),
        )
        .route("/company/contacts/count", count_of(Kind::Contact))
        .route(
            "/company/contacts/{id}",
            one_of(Kind::Contact).patch(patch_contact).put(put_contact),
        )
        .route("/finance/agreements", list_of(Kind::Agreement))
        .route("/finance/agreements/count", count_of(Kind::Agreement))
        .route("/finance/agreements/{id}", one_of(Kind::Agreement))
        .route(
            "/finance/agreements/{id}/additions",
            get(list_additions).post(create_addition),
        )
        .route(
            "/finance/agreements/{id}/additions/count",
            get(count_additions),
        )
        .route(
            "/finance/agreements/{id}/additions/{addition}",
            get(get_addition).patch(patch_addition).put(put_addition),
        )
        .route("/procurement/catalog", list_of(Kind::Catalog))
        .route("/procurement/catalog/count", count_of(Kind::Catalog))
        .route("/procurement/catalog/{id}", one_of(Kind::Catalog))
        .route(
            "/service/tickets",
            list_of(Kind::Ticket).post(create_ticket),
        )
        .route("/service/tickets/count", count_of(Kind::Ticket))
        .route("/service/tickets/{id}", one_of(Kind::Ticket))
        .route_layer(middleware::from_fn_with_state(shared.clone(), authenticate));
    Router::new()
        .route("/login/companyinfo/{company}", get(company_info))
        .nest(API_BASE, api)
        .fallback(unknown_path)
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            inject_faults,
        ))
        .with_state(shared)
}

async fn unknown_path(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("No resource was found at {}.", uri.path()),
    )
}

/// Basic auth with `companyId+publicKey:privateKey`, plus the integrator's `clientId` header.
async fn authenticate(
    AxumState(shared): AxumState<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    match check_credentials(&shared.credentials, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(message) => ApiError::unauthorized(message).into_response(),
    }
}

fn check_credentials(credentials: &Credentials, headers: &HeaderMap) -> Result<(), &'static str> {
    // The answer never says which part was wrong, nor echoes what was sent.
    const REFUSED: &str =
        "The company id, public key or private key in the Authorization header is not valid.";
    let encoded = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .ok_or("Basic authentication (companyId+publicKey:privateKey) is required.")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or(REFUSED)?;
    let (user, password) = decoded.split_once(':').ok_or(REFUSED)?;
    // Company ids are matched ignoring case, as at ConnectWise's login; keys exactly.
    let (company, public_key) = user.rsplit_once('+').ok_or(REFUSED)?;
    if !company.eq_ignore_ascii_case(&credentials.company_id)
        || public_key != credentials.public_key
        || password != credentials.private_key
    {
        return Err(REFUSED);
    }
    match headers.get("clientId").and_then(|v| v.to_str().ok()) {
        None => Err("A clientId header is required on every request."),
        Some(id) if id != credentials.client_id => Err("The clientId header is not recognised."),
        Some(_) => Ok(()),
    }
}

async fn inject_faults(
    AxumState(shared): AxumState<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let path = normalize_prefix(request.uri().path());
    let write = matches!(
        *request.method(),
        Method::POST | Method::PATCH | Method::PUT | Method::DELETE
    );
    if write {
        shared.write_requests.fetch_add(1, Ordering::SeqCst);
    }
    let (delay, throttled, failed) = {
        let mut faults = shared.faults();
        let throttled = take_fault(&mut faults.throttles, &path).or_else(|| {
            let window = faults.rate.as_mut()?;
            if window.started.elapsed() >= Duration::from_secs(1) {
                window.started = Instant::now();
                window.used = 0;
            }
            window.used += 1;
            (window.used > window.limit).then_some(1)
        });
        // A throttled request never reaches the server, so it uses up no injected failure.
        let failed = throttled.is_none() && take_fault(&mut faults.failures, &path).is_some();
        (faults.latency, throttled, failed)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(secs) = throttled {
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            format!("Too many requests; retry after {secs} seconds."),
        );
        error.retry_after = Some(secs);
        return error.into_response();
    }
    if failed {
        return ApiError::internal("injected by the sandbox").into_response();
    }
    let response = next.run(request).await;
    if write
        && response.status().is_success()
        && take_fault(&mut shared.faults().drops, &path).is_some()
    {
        let (mut parts, _) = response.into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        let cut = futures::stream::once(async {
            Err::<Bytes, std::io::Error>(std::io::Error::other(
                "the sandbox dropped this answer after committing the write",
            ))
        });
        return Response::from_parts(parts, Body::from_stream(cut));
    }
    response
}

// ---------------------------------------------------------------------------------------------
// Reads

async fn company_info(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(company): Path<String>,
    headers: HeaderMap,
) -> Result<Json<CompanyInfo>, ApiError> {
    if !company.eq_ignore_ascii_case(&shared.credentials.company_id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("No company {company:?} is hosted here."),
        ));
    }
    Ok(Json(CompanyInfo {
        company_name: "rollcall ConnectWise sandbox".to_owned(),
        codebase: "v4_6_release/".to_owned(),
        version_code: "v2025.1".to_owned(),
        version_number: "v4.6".to_owned(),
        company_id: shared.credentials.company_id.clone(),
        is_cloud: false,
        site_url: host(&headers),
    }))
}

async fn system_info() -> Json<SystemInfo> {
    Json(SystemInfo {
        version: "v2025.1.sandbox".to_owned(),
        is_cloud: false,
        server_time_zone: Some("UTC".to_owned()),
        cloud_region: None,
    })
}

type Params = Query<Vec<(String, String)>>;

/// What a list request asks for, read from its query string.
struct ListQuery {
    conditions: Option<Expr>,
    child_conditions: Option<Expr>,
    order_by: Vec<(Vec<String>, bool)>,
    fields: Option<Vec<Vec<String>>>,
    page: usize,
    page_size: usize,
    page_id: Option<i64>,
}

impl ListQuery {
    fn parse(kind: Kind, params: &[(String, String)]) -> Result<ListQuery, ApiError> {
        let mut query = ListQuery {
            conditions: None,
            child_conditions: None,
            order_by: Vec::new(),
            fields: None,
            page: 1,
            page_size: DEFAULT_PAGE_SIZE,
            page_id: None,
        };
        let known =
            |path: &str, allowed: &[&str]| path.starts_with("_info/") || allowed.contains(&path);
        for (name, value) in params {
            match name.to_ascii_lowercase().as_str() {
                "conditions" => {
                    let expr = parse_condition(kind, "conditions", value, kind.fields())?;
                    query.conditions = Some(expr);
                }
                "childconditions" => {
                    let expr =
                        parse_condition(kind, "childConditions", value, kind.child_fields())?;
                    query.child_conditions = Some(expr);
                }
                "customfieldconditions" => {
                    return Err(ApiError::bad_request(
                        "customFieldConditions: the sandbox holds no custom fields.",
                    ));
                }
                "orderby" => {
                    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                        let mut words = part.split_whitespace();
                        let field = words.next().unwrap_or_default();
                        let descending = match words.next().map(str::to_ascii_lowercase) {
                            None => false,
                            Some(d) if d == "asc" => false,
                            Some(d) if d == "desc" => true,
                            Some(other) => {
                                return Err(ApiError::bad_request(format!(
                                    "orderBy: expected asc or desc after {field}, not {other}."
                                )));
                            }
                        };
                        if !known(field, kind.fields()) {
                            return Err(ApiError::bad_request(format!(
                                "orderBy: {field} is not a field of {}.",
                                kind.resource()
                            )));
                        }
                        query
                            .order_by
                            .push((field.split('/').map(str::to_owned).collect(), descending));
                    }
                }
                "fields" => {
                    query.fields = Some(
                        value
                            .split(',')
                            .map(str::trim)
                            .filter(|f| !f.is_empty())
                            .map(|f| f.split('/').map(str::to_owned).collect())
                            .collect(),
                    );
                }
                "page" => {
                    query.page =
                        value
                            .trim()
                            .parse()
                            .ok()
                            .filter(|p| *p >= 1)
                            .ok_or_else(|| {
                                ApiError::bad_request(format!(
                                    "page must be 1 or more, not {value:?}."
                                ))
                            })?;
                }
                "pagesize" => {
                    query.page_size = value
                        .trim()
                        .parse()
                        .ok()
                        .filter(|s| (1..=MAX_PAGE_SIZE as usize).contains(s))
                        .ok_or_else(|| {
                            ApiError::bad_request(format!(
                                "pageSize must be between 1 and {MAX_PAGE_SIZE}, not {value:?}."
                            ))
                        })?;
                }
                "pageid" => {
                    query.page_id = Some(value.trim().parse().map_err(|_| {
                        ApiError::bad_request(format!("pageId must be an id, not {value:?}."))
                    })?);
                }
                // ConnectWise ignores parameters it does not know.
                _ => {}
            }
        }
        Ok(query)
    }
}

fn parse_condition(
    kind: Kind,
    parameter: &str,
    text: &str,
    allowed: &[&str],
) -> Result<Expr, ApiError> {
    let mut expr = conditions::parse(text)
        .map_err(|e| ApiError::bad_request(format!("{parameter}: {e}: {text}")))?;
    for info in ["lastUpdated", "dateEntered"] {
        expr.alias(info, &["_info", info]);
    }
    for path in expr.paths() {
        if !path.starts_with("_info/") && !allowed.contains(&path.as_str()) {
            return Err(ApiError::bad_request(format!(
                "{parameter}: {path} is not a field of {} that can be searched.",
                kind.resource()
            )));
        }
    }
    Ok(expr)
}

fn host(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned()
}

/// Filters, sorts and pages `rows` as the query asks; returns the page and the `Link` header.
fn select(
    rows: Vec<Value>,
    query: &ListQuery,
    uri: &Uri,
    headers: &HeaderMap,
) -> (Vec<Value>, Option<HeaderValue>) {
    let mut rows: Vec<Value> = rows
        .into_iter()
        .filter(|row| query.conditions.as_ref().is_none_or(|c| c.matches(row)))
        .filter(|row| {
            query
                .child_conditions
                .as_ref()
                .is_none_or(|c| c.matches(row))
        })
        .filter(|row| {
            query
                .page_id
                .is_none_or(|after| row.get("id").and_then(Value::as_i64) > Some(after))
        })
        .collect();
    if !query.order_by.is_empty() {
        rows.sort_by(|a, b| {
            for (path, descending) in &query.order_by {
                let ord = order(value_at(a, path), value_at(b, path));
                let ord = if *descending { ord.reverse() } else { ord };
                if ord.is_ne() {
                    return ord;
                }
            }
            std::cmp::Ordering::Equal
        });
    }
    let total = rows.len();
    let last = total.div_ceil(query.page_size).max(1);
    let page: Vec<Value> = rows
        .into_iter()
        .skip((query.page - 1).saturating_mul(query.page_size))
        .take(query.page_size)
        .map(|row| match &query.fields {
            Some(fields) => project(&row, fields),
            None => row,
        })
        .collect();
    (page, link_header(uri, headers, query.page, last))
}

fn value_at<'a>(row: &'a Value, path: &[String]) -> &'a Value {
    path.iter()
        .try_fold(row, |v, key| v.get(key.as_str()))
        .unwrap_or(&Value::Null)
}

/// Orders two field values as SQL Server would: nulls first, numbers by value, text ignoring case.
fn order(a: &Value, b: &Value) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Number(_), Value::Number(_)) => {
            conditions::number_of(a).cmp(&conditions::number_of(b))
        }
        (Value::String(x), Value::String(y)) => x.to_lowercase().cmp(&y.to_lowercase()),
        _ => a.to_string().cmp(&b.to_string()),
    }
}

/// Keeps only the `fields=` paths of a row (a sparse fieldset).
fn project(row: &Value, fields: &[Vec<String>]) -> Value {
    let mut out = Map::new();
    for path in fields {
        let value = value_at(row, path);
        if value.is_null() {
            continue;
        }
        let mut target = &mut out;
        for (i, key) in path.iter().enumerate() {
            if i + 1 == path.len() {
                target.insert(key.clone(), value.clone());
            } else {
                let entry = target
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                match entry.as_object_mut() {
                    Some(map) => target = map,
                    None => break,
                }
            }
        }
    }
    Value::Object(out)
}

/// `<…&page=N>; rel="next"` and friends, with `page` as the URL's last parameter, as
/// ConnectWise writes them.
fn link_header(uri: &Uri, headers: &HeaderMap, page: usize, last: usize) -> Option<HeaderValue> {
    let base = reqwest::Url::parse(&format!("http://{}{}", host(headers), uri.path())).ok()?;
    let kept: Vec<(String, String)> = uri
        .query()
        .map(|q| {
            reqwest::Url::parse(&format!("http://x/?{q}"))
                .map(|u| {
                    u.query_pairs()
                        .filter(|(k, _)| !k.eq_ignore_ascii_case("page"))
                        .map(|(k, v)| (k.into_owned(), v.into_owned()))
                        .collect()
                })
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let link = |n: usize, rel: &str| {
        let mut url = base.clone();
        url.query_pairs_mut()
            .extend_pairs(kept.iter())
            .append_pair("page", &n.to_string());
        format!("<{url}>; rel=\"{rel}\"")
    };
    let mut parts = Vec::new();
    if page > 1 {
        parts.push(link(1, "first"));
        parts.push(link((page - 1).min(last), "prev"));
    }
    if page < last {
        parts.push(link(page + 1, "next"));
        parts.push(link(last, "last"));
    }
    if parts.is_empty() {
        return None;
    }
    HeaderValue::from_str(&parts.join(", ")).ok()
}

fn list(
    shared: &Shared,
    kind: Kind,
    parent: Option<i64>,
    params: &[(String, String)],
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let query = ListQuery::parse(kind, params)?;
    let rows = {
        let db = shared.db();
        check_parent(&db.state, parent)?;
        kind.rows(&db.state, parent)?
    };
    let (page, link) = select(rows, &query, uri, headers);
    let mut response = Json(page).into_response();
    if let Some(link) = link {
        response.headers_mut().insert(header::LINK, link);
    }
    Ok(response)
}

fn count(
    shared: &Shared,
    kind: Kind,
    parent: Option<i64>,
    params: &[(String, String)],
) -> Result<Json<Count>, ApiError> {
    let query = ListQuery::parse(kind, params)?;
    let db = shared.db();
    check_parent(&db.state, parent)?;
    let rows = kind.rows(&db.state, parent)?;
    let count = rows
        .iter()
        .filter(|row| query.conditions.as_ref().is_none_or(|c| c.matches(row)))
        .filter(|row| {
            query
                .child_conditions
                .as_ref()
                .is_none_or(|c| c.matches(row))
        })
        .count();
    Ok(Json(Count {
        count: count as u64,
    }))
}

fn get_one(
    shared: &Shared,
    kind: Kind,
    parent: Option<i64>,
    id: &str,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(kind, id)?;
    let db = shared.db();
    check_parent(&db.state, parent)?;
    kind.rows(&db.state, parent)?
        .into_iter()
        .find(|row| row.get("id").and_then(Value::as_i64) == Some(id))
        .map(Json)
        .ok_or_else(|| ApiError::not_found(kind, id))
}

fn check_parent(state: &State, parent: Option<i64>) -> Result<(), ApiError> {
    match parent {
        Some(id) if !state.agreements.iter().any(|a| a.id == id) => {
            Err(ApiError::not_found(Kind::Agreement, id))
        }
        _ => Ok(()),
    }
}

fn parse_id(kind: Kind, id: &str) -> Result<i64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::bad_request(format!("{id:?} is not a {} id.", kind.resource())))
}

async fn list_additions(
    AxumState(s): AxumState<Arc<Shared>>,
    Path(parent): Path<String>,
    Query(p): Params,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let parent = parse_id(Kind::Agreement, &parent)?;
    list(&s, Kind::Addition, Some(parent), &p, &uri, &headers)
}

async fn count_additions(
    AxumState(s): AxumState<Arc<Shared>>,
    Path(parent): Path<String>,
    Query(p): Params,
) -> Result<Json<Count>, ApiError> {
    let parent = parse_id(Kind::Agreement, &parent)?;
    count(&s, Kind::Addition, Some(parent), &p)
}

async fn get_addition(
    AxumState(s): AxumState<Arc<Shared>>,
    Path((parent, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let parent = parse_id(Kind::Agreement, &parent)?;
    get_one(&s, Kind::Addition, Some(parent), &id)
}

// ---------------------------------------------------------------------------------------------
// Writes

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%dT00:00:00Z").to_string()
}

fn stamp_created(info: &mut Option<Info>, now: &str) {
    let info = info.get_or_insert_with(Info::new);
    for key in ["dateEntered", "lastUpdated"] {
        info.entry(key.to_owned()).or_insert_with(|| now.to_owned());
    }
    for key in ["enteredBy", "updatedBy"] {
        info.entry(key.to_owned())
            .or_insert_with(|| MEMBER.to_owned());
    }
}

fn stamp_updated(info: &mut Option<Info>) {
    let info = info.get_or_insert_with(Info::new);
    info.insert("lastUpdated".to_owned(), now());
    info.insert("updatedBy".to_owned(), MEMBER.to_owned());
}

fn parse_body<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("The request body is not {what}: {e}.")))
}

/// Applies ConnectWise's JSON Patch (`replace`, `add`, `remove`; paths without a leading slash,
/// though one is tolerated) to a copy of `current`.
fn apply_patch<T: Serialize + DeserializeOwned>(
    kind: Kind,
    current: &T,
    operations: &[PatchOperation],
) -> Result<T, ApiError> {
    let mut object = match serde_json::to_value(current).map_err(ApiError::internal)? {
        Value::Object(map) => map,
        _ => return Err(ApiError::internal("an object did not serialize as a map")),
    };
    for operation in operations {
        let path = operation.path.strip_prefix('/').unwrap_or(&operation.path);
        let Some(field) = kind
            .patchable()
            .iter()
            .find(|f| f.eq_ignore_ascii_case(path))
        else {
            return Err(ApiError::invalid(
                kind,
                vec![field_error(
                    kind,
                    "InvalidField",
                    path,
                    format!(
                        "{path} is not a field of {} that can be changed",
                        kind.resource()
                    ),
                )],
            ));
        };
        match operation.op.to_ascii_lowercase().as_str() {
            "replace" | "add" => {
                object.insert((*field).to_owned(), operation.value.clone());
            }
            "remove" => {
                object.remove(*field);
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "Patch operation {other:?} is not supported; use replace, add or remove."
                )));
            }
        }
    }
    serde_json::from_value(Value::Object(object)).map_err(|e| {
        ApiError::bad_request(format!(
            "The patched {} is not valid: {e}.",
            kind.resource()
        ))
    })
}

/// Communication types every site has: (id, name, category).
const COMMUNICATION_TYPES: &[(i64, &str, CommunicationType)] = &[
    (1, "Email", CommunicationType::Email),
    (2, "Direct", CommunicationType::Phone),
    (3, "Fax", CommunicationType::Fax),
    (4, "Mobile", CommunicationType::Phone),
    (5, "Home", CommunicationType::Phone),
    (6, "Pager", CommunicationType::Phone),
];

fn resolve_company(
    state: &State,
    reference: Option<&Reference>,
) -> Result<Reference, ValidationError> {
    let kind = Kind::Contact;
    let Some(reference) = reference else {
        return Err(field_error(
            kind,
            "NullValue",
            "company",
            "company is required",
        ));
    };
    let found = state.companies.iter().find(|c| {
        if reference.id != 0 {
            c.id == reference.id
        } else {
            reference
                .identifier
                .as_deref()
                .is_some_and(|i| c.identifier.eq_ignore_ascii_case(i))
        }
    });
    found
        .map(|c| Reference {
            id: c.id,
            identifier: Some(c.identifier.clone()),
            name: Some(c.name.clone()),
        })
        .ok_or_else(|| {
            field_error(
                kind,
                "InvalidField",
                "company",
                format!("company {} does not exist", describe_reference(reference)),
            )
        })
}

fn describe_reference(reference: &Reference) -> String {
    match (&reference.identifier, &reference.name) {
        _ if reference.id != 0 => format!("id {}", reference.id),
        (Some(identifier), _) => format!("{identifier:?}"),
        (None, Some(name)) => format!("{name:?}"),
        (None, None) => "(no id)".to_owned(),
    }
}

fn too_long(
    errors: &mut Vec<ValidationError>,
    kind: Kind,
    field: &str,
    value: Option<&str>,
    max: Option<usize>,
) {
    if let (Some(value), Some(max)) = (value, max)
        && rollcall_core::text_length(value) > max
    {
        errors.push(field_error(
            kind,
            "InvalidField",
            field,
            format!("{field} is longer than {max} characters"),
        ));
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

/// Checks a contact as ConnectWise does and fills in what it fills in (references, item ids).
fn normalize_contact(
    state: &State,
    ids: &mut Ids,
    mut contact: Contact,
) -> Result<Contact, Vec<ValidationError>> {
    let kind = Kind::Contact;
    let mut errors = Vec::new();
    contact.first_name = contact.first_name.trim().to_owned();
    if contact.first_name.is_empty() {
        errors.push(field_error(
            kind,
            "NullValue",
            "firstName",
            "firstName is required",
        ));
    }
    too_long(
        &mut errors,
        kind,
        "firstName",
        Some(&contact.first_name),
        LIMITS.contact_first_name,
    );
    contact.last_name = non_empty(contact.last_name);
    too_long(
        &mut errors,
        kind,
        "lastName",
        contact.last_name.as_deref(),
        LIMITS.contact_last_name,
    );
    contact.title = non_empty(contact.title);
    too_long(
        &mut errors,
        kind,
        "title",
        contact.title.as_deref(),
        LIMITS.contact_title,
    );
    match resolve_company(state, contact.company.as_ref()) {
        Ok(company) => contact.company = Some(company),
        Err(error) => errors.push(error),
    }
    for (i, item) in contact.communication_items.iter_mut().enumerate() {
        let field = format!("communicationItems[{i}]");
        let found = item.kind.as_ref().and_then(|t| {
            COMMUNICATION_TYPES.iter().find(|(id, name, _)| {
                (t.id != 0 && t.id == *id)
                    || (t.id == 0
                        && t.name
                            .as_deref()
                            .is_some_and(|n| n.eq_ignore_ascii_case(name)))
            })
        });
        let Some(&(type_id, type_name, category)) = found else {
            errors.push(field_error(
                kind,
                "InvalidField",
                &format!("{field}.type"),
                format!(
                    "communication type {} does not exist",
                    item.kind
                        .as_ref()
                        .map(describe_reference)
                        .unwrap_or_else(|| "(none given)".to_owned())
                ),
            ));
            continue;
        };
        if item.communication_type.is_some_and(|c| c != category) {
            errors.push(field_error(
                kind,
                "InvalidField",
                &format!("{field}.communicationType"),
                format!("communication type {type_name} is not a {category:?} type"),
            ));
        }
        item.kind = Some(Reference {
            id: type_id,
            identifier: None,
            name: Some(type_name.to_owned()),
        });
        item.communication_type = Some(category);
        let value = item.value.as_deref().map(str::trim).unwrap_or_default();
        if value.is_empty() {
            errors.push(field_error(
                kind,
                "NullValue",
                &format!("{field}.value"),
                format!("{field}.value is required"),
            ));
        } else if category == CommunicationType::Email
            && (!value.contains('@') || value.contains(char::is_whitespace))
        {
            errors.push(field_error(
                kind,
                "InvalidField",
                &format!("{field}.value"),
                format!("{value:?} is not an email address"),
            ));
        }
        too_long(
            &mut errors,
            kind,
            &format!("{field}.value"),
            Some(value),
            Some(crate::model::COMMUNICATION_VALUE_MAX),
        );
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    for item in &mut contact.communication_items {
        if item.id == 0 {
            item.id = take(&mut ids.communication_item);
        }
    }
    Ok(contact)
}

/// Checks an addition as ConnectWise does and fills in its defaults from the catalogue.
fn normalize_addition(
    state: &State,
    agreement: &Agreement,
    mut addition: Addition,
) -> Result<Addition, Vec<ValidationError>> {
    let kind = Kind::Addition;
    let mut errors = Vec::new();
    let product = match &addition.product {
        None => {
            errors.push(field_error(
                kind,
                "NullValue",
                "product",
                "product is required",
            ));
            None
        }
        Some(reference) => {
            let found = state.catalog.iter().find(|p| {
                if reference.id != 0 {
                    p.id == reference.id
                } else {
                    reference
                        .identifier
                        .as_deref()
                        .is_some_and(|i| p.identifier.eq_ignore_ascii_case(i))
                }
            });
            match found {
                None => {
                    errors.push(field_error(
                        kind,
                        "InvalidField",
                        "product",
                        format!(
                            "product {} is not in the catalog",
                            describe_reference(reference)
                        ),
                    ));
                    None
                }
                Some(p) if p.inactive_flag => {
                    errors.push(field_error(
                        kind,
                        "InvalidField",
                        "product",
                        format!("product {:?} is inactive", p.identifier),
                    ));
                    None
                }
                Some(p) => Some(p),
            }
        }
    };
    if addition.bill_customer.is_none() {
        errors.push(field_error(
            kind,
            "NullValue",
            "billCustomer",
            "billCustomer is required (Billable, DoNotBill or NoCharge)",
        ));
    }
    for (field, value) in [
        ("quantity", addition.quantity),
        ("lessIncluded", addition.less_included),
    ] {
        if value.is_some_and(|v| v.is_sign_negative() && !v.is_zero()) {
            errors.push(field_error(
                kind,
                "InvalidField",
                field,
                format!("{field} must be 0 or more"),
            ));
        }
    }
    too_long(
        &mut errors,
        kind,
        "invoiceDescription",
        addition.invoice_description.as_deref(),
        LIMITS.line_description,
    );
    for (field, value) in [
        ("effectiveDate", &addition.effective_date),
        ("cancelledDate", &addition.cancelled_date),
    ] {
        if let Some(text) = value
            && conditions::parse_date(text).is_none()
        {
            errors.push(field_error(
                kind,
                "InvalidField",
                field,
                format!("{field} {text:?} is not a date (write 2024-01-31T00:00:00Z)"),
            ));
        }
    }
    let effective = addition
        .effective_date
        .as_deref()
        .and_then(conditions::parse_date);
    let cancelled = addition
        .cancelled_date
        .as_deref()
        .and_then(conditions::parse_date);
    if let (Some(effective), Some(cancelled)) = (effective, cancelled)
        && cancelled < effective
    {
        errors.push(field_error(
            kind,
            "InvalidField",
            "cancelledDate",
            "cancelledDate must not be before effectiveDate",
        ));
    }
    let Some(product) = product.filter(|_| errors.is_empty()) else {
        return Err(errors);
    };
    addition.product = Some(Reference {
        id: product.id,
        identifier: Some(product.identifier.clone()),
        name: None,
    });
    addition.quantity.get_or_insert(Decimal::ZERO);
    addition.less_included.get_or_insert(Decimal::ZERO);
    addition
        .unit_price
        .get_or_insert(product.price.unwrap_or_default());
    addition
        .unit_cost
        .get_or_insert(product.cost.unwrap_or_default());
    addition
        .description
        .get_or_insert_with(|| product.description.clone());
    addition.taxable_flag.get_or_insert(product.taxable_flag);
    addition.effective_date.get_or_insert_with(today);
    addition.agreement_id = Some(agreement.id);
    addition.agreement_status = Some(if addition.cancelled_date.is_some() {
        AgreementStatus::Cancelled
    } else {
        agreement
            .agreement_status
            .unwrap_or(AgreementStatus::Active)
    });
    Ok(addition)
}

/// Opens a service ticket: a summary of at most 100 characters, an existing company, and a
/// board of the site named by id or name (ConnectWise refuses a ticket on a board it does not
/// have).
async fn create_ticket(
    AxumState(s): AxumState<Arc<Shared>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let kind = Kind::Ticket;
    let mut ticket: Ticket = parse_body(&body, "a ticket")?;
    let mut db = s.db();
    let db = &mut *db;
    let mut errors = Vec::new();
    ticket.summary = ticket.summary.trim().to_owned();
    if ticket.summary.is_empty() {
        errors.push(field_error(
            kind,
            "NullValue",
            "summary",
            "summary is required",
        ));
    }
    too_long(
        &mut errors,
        kind,
        "summary",
        Some(&ticket.summary),
        Some(TICKET_SUMMARY_MAX),
    );
    match resolve_company(&db.state, ticket.company.as_ref()) {
        Ok(company) => ticket.company = Some(company),
        Err(mut error) => {
            error.resource = kind.resource().to_owned();
            errors.push(error);
        }
    }
    let board = ticket.board.as_ref().and_then(|r| {
        db.state.boards.iter().find(|b| {
            (r.id != 0 && b.id == r.id)
                || (r.id == 0
                    && r.name
                        .as_deref()
                        .is_some_and(|n| n.trim().eq_ignore_ascii_case(&b.name)))
        })
    });
    match board {
        Some(b) => {
            ticket.board = Some(Reference {
                id: b.id,
                identifier: None,
                name: Some(b.name.clone()),
            })
        }
        None => errors.push(field_error(
            kind,
            "InvalidObject",
            "board",
            "board is required and must be one of the site's service boards",
        )),
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(kind, errors));
    }
    ticket.id = take(&mut db.ids.ticket);
    ticket.contact = None;
    ticket.closed_date = None;
    ticket.status = Some(Reference::named("New"));
    ticket.info = None;
    stamp_created(&mut ticket.info, &now());
    db.state.tickets.push(ticket.clone());
    s.wrote();
    Ok((StatusCode::CREATED, Json(ticket)).into_response())
}

async fn create_contact(
    AxumState(s): AxumState<Arc<Shared>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut contact: Contact = parse_body(&body, "a contact")?;
    contact.id = 0;
    contact.info = None;
    let mut db = s.db();
    let db = &mut *db;
    let mut contact = normalize_contact(&db.state, &mut db.ids, contact)
        .map_err(|e| ApiError::invalid(Kind::Contact, e))?;
    contact.id = take(&mut db.ids.contact);
    stamp_created(&mut contact.info, &now());
    db.state.contacts.push(contact.clone());
    s.wrote();
    Ok((StatusCode::CREATED, Json(contact)).into_response())
}

/// Replaces a contact (PUT) or patches it (PATCH); a write that changes nothing is no write.
fn update_contact(
    s: &Shared,
    id: &str,
    change: impl FnOnce(&Contact) -> Result<Contact, ApiError>,
) -> Result<Json<Contact>, ApiError> {
    let id = parse_id(Kind::Contact, id)?;
    let mut db = s.db();
    let db = &mut *db;
    let index = db
        .state
        .contacts
        .iter()
        .position(|c| c.id == id)
        .ok_or_else(|| ApiError::not_found(Kind::Contact, id))?;
    let current = db.state.contacts[index].clone();
    let mut updated = normalize_contact(&db.state, &mut db.ids, change(&current)?)
        .map_err(|e| ApiError::invalid(Kind::Contact, e))?;
    updated.id = id;
    updated.info = current.info.clone();
    if updated != current {
        stamp_updated(&mut updated.info);
        db.state.contacts[index] = updated.clone();
        s.wrote();
    }
    Ok(Json(updated))
}

async fn patch_contact(
    AxumState(s): AxumState<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Contact>, ApiError> {
    let operations: Vec<PatchOperation> = parse_body(&body, "a JSON Patch array")?;
    update_contact(&s, &id, |current| {
        apply_patch(Kind::Contact, current, &operations)
    })
}

async fn put_contact(
    AxumState(s): AxumState<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Contact>, ApiError> {
    let replacement: Contact = parse_body(&body, "a contact")?;
    update_contact(&s, &id, |_| Ok(replacement))
}

async fn create_addition(
    AxumState(s): AxumState<Arc<Shared>>,
    Path(parent): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let parent = parse_id(Kind::Agreement, &parent)?;
    let mut addition: Addition = parse_body(&body, "an addition")?;
    addition.id = 0;
    addition.info = None;
    let mut db = s.db();
    let db = &mut *db;
    let agreement = db
        .state
        .agreements
        .iter()
        .find(|a| a.id == parent)
        .cloned()
        .ok_or_else(|| ApiError::not_found(Kind::Agreement, parent))?;
    if agreement.cancelled_flag {
        return Err(ApiError::invalid(
            Kind::Addition,
            vec![field_error(
                Kind::Addition,
                "InvalidField",
                "agreementId",
                format!("agreement {parent} is cancelled; no additions can be added"),
            )],
        ));
    }
    let mut addition = normalize_addition(&db.state, &agreement, addition)
        .map_err(|e| ApiError::invalid(Kind::Addition, e))?;
    addition.id = take(&mut db.ids.addition);
    stamp_created(&mut addition.info, &now());
    db.state.additions.push(addition.clone());
    s.wrote();
    Ok((StatusCode::CREATED, Json(addition)).into_response())
}

fn update_addition(
    s: &Shared,
    parent: &str,
    id: &str,
    change: impl FnOnce(&Addition) -> Result<Addition, ApiError>,
) -> Result<Json<Addition>, ApiError> {
    let parent = parse_id(Kind::Agreement, parent)?;
    let id = parse_id(Kind::Addition, id)?;
    let mut db = s.db();
    let db = &mut *db;
    let agreement = db
        .state
        .agreements
        .iter()
        .find(|a| a.id == parent)
        .cloned()
        .ok_or_else(|| ApiError::not_found(Kind::Agreement, parent))?;
    let index = db
        .state
        .additions
        .iter()
        .position(|a| a.id == id && a.agreement_id == Some(parent))
        .ok_or_else(|| ApiError::not_found(Kind::Addition, id))?;
    let current = db.state.additions[index].clone();
    let mut updated = normalize_addition(&db.state, &agreement, change(&current)?)
        .map_err(|e| ApiError::invalid(Kind::Addition, e))?;
    updated.id = id;
    updated.info = current.info.clone();
    if updated != current {
        stamp_updated(&mut updated.info);
        db.state.additions[index] = updated.clone();
        s.wrote();
    }
    Ok(Json(updated))
}

async fn patch_addition(
    AxumState(s): AxumState<Arc<Shared>>,
    Path((parent, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Addition>, ApiError> {
    let operations: Vec<PatchOperation> = parse_body(&body, "a JSON Patch array")?;
    update_addition(&s, &parent, &id, |current| {
        apply_patch(Kind::Addition, current, &operations)
    })
}

async fn put_addition(
    AxumState(s): AxumState<Arc<Shared>>,
    Path((parent, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Addition>, ApiError> {
    let replacement: Addition = parse_body(&body, "an addition")?;
    update_addition(&s, &parent, &id, |_| Ok(replacement))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_seed_loads() {
        let db = load(Seed::demo()).expect("demo seed");
        let identifiers: Vec<&str> = db
            .state
            .companies
            .iter()
            .map(|c| c.identifier.as_str())
            .collect();
        assert_eq!(identifiers, ["ACME", "GLOBEX", "INITECH"]);
        assert_eq!(db.state.agreements.len(), 3);
        assert!(
            db.state
                .agreements
                .iter()
                .all(|a| a.name == "Managed Services"
                    && a.company.as_ref().is_some_and(|c| c.id != 0))
        );
        let products: Vec<&str> = db
            .state
            .catalog
            .iter()
            .map(|c| c.identifier.as_str())
            .collect();
        assert_eq!(
            products,
            ["M365-BP", "M365-E3", "SEC-AWARE", "HELPDESK-USER"]
        );
        assert_eq!(
            db.state.catalog.iter().map(|c| c.id).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
    }

    #[test]
    fn inconsistent_seeds_are_refused_with_the_reason() {
        let mut seed = Seed::demo();
        seed.contacts.push(Contact {
            first_name: "Ann".to_owned(),
            company: Some(Reference {
                identifier: Some("NOPE".to_owned()),
                ..Reference::default()
            }),
            ..Contact::default()
        });
        let err = load(seed).err().expect("refused");
        assert!(
            err.contains("contact #1") && err.contains("\"NOPE\""),
            "{err}"
        );

        let mut seed = Seed::demo();
        seed.additions.push(Addition {
            agreement_id: Some(1),
            product: Some(Reference {
                identifier: Some("M365-BP".to_owned()),
                ..Reference::default()
            }),
            ..Addition::default()
        });
        let err = load(seed).err().expect("refused");
        assert!(err.contains("billCustomer is required"), "{err}");

        let mut seed = Seed::demo();
        seed.companies[2].id = 7;
        seed.companies[0].id = 7;
        let err = load(seed).err().expect("refused");
        assert_eq!(err, "company id 7 is used twice");
    }

    #[test]
    fn keys_are_checked_exactly_and_the_company_id_ignoring_case() {
        let credentials = Seed::demo().credentials;
        let headers = |user: &str, password: &str, client_id: Option<&str>| {
            let mut headers = HeaderMap::new();
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            headers.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Basic {token}")).expect("header"),
            );
            if let Some(id) = client_id {
                headers.insert("clientId", HeaderValue::from_str(id).expect("header"));
            }
            headers
        };
        let client = Some(credentials.client_id.as_str());
        assert_eq!(
            check_credentials(
                &credentials,
                &headers("DEMO+demo-public", "demo-private", client)
            ),
            Ok(())
        );
        for (user, password) in [
            ("demo+DEMO-PUBLIC", "demo-private"),
            ("demo+demo-public", "DEMO-PRIVATE"),
            ("demo-public", "demo-private"),
            ("other+demo-public", "demo-private"),
        ] {
            let refused = check_credentials(&credentials, &headers(user, password, client));
            assert!(refused.is_err(), "{user}:{password} was accepted");
        }
        let refused = check_credentials(
            &credentials,
            &headers("demo+demo-public", "demo-private", None),
        );
        assert!(refused.is_err_and(|m| m.contains("clientId")));
    }

    #[test]
    fn patch_paths_are_checked_and_need_no_leading_slash() {
        let contact = Contact {
            id: 3,
            first_name: "Ann".to_owned(),
            ..Contact::default()
        };
        let patched: Contact = apply_patch(
            Kind::Contact,
            &contact,
            &[
                PatchOperation::replace("lastName", Value::from("Lee")),
                PatchOperation::replace("/inactiveFlag", Value::from(true)),
            ],
        )
        .expect("patch");
        assert_eq!(patched.last_name.as_deref(), Some("Lee"));
        assert!(patched.inactive_flag);
        let err = apply_patch(
            Kind::Contact,
            &contact,
            &[PatchOperation::replace("id", Value::from(9))],
        )
        .expect_err("id is read-only");
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.body.errors[0].field, "id");
    }

    #[test]
    fn link_header_puts_page_last_and_keeps_other_parameters() {
        let uri: Uri =
            "/v4_6_release/apis/3.0/company/contacts?conditions=id%3E1&page=2&pageSize=10"
                .parse()
                .expect("uri");
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:9"));
        let link = link_header(&uri, &headers, 2, 3).expect("link");
        let link = link.to_str().expect("ascii");
        assert!(
            link.contains(
                "<http://127.0.0.1:9/v4_6_release/apis/3.0/company/contacts?conditions=id%3E1&pageSize=10&page=3>; rel=\"next\""
            ),
            "{link}"
        );
        assert!(link.contains("page=1>; rel=\"first\""), "{link}");
        assert!(link.contains("page=3>; rel=\"last\""), "{link}");
        assert!(link_header(&uri, &headers, 1, 1).is_none());
    }

    #[test]
    fn ordering_and_sparse_fieldsets() {
        let rows = vec![
            serde_json::json!({"id": 1, "lastName": "b", "company": {"id": 2, "name": "x"}}),
            serde_json::json!({"id": 2, "lastName": "A", "company": {"id": 1, "name": "y"}}),
            serde_json::json!({"id": 3, "company": {"id": 1, "name": "z"}}),
        ];
        let params = vec![
            ("orderBy".to_owned(), "lastName asc".to_owned()),
            ("fields".to_owned(), "id,company/id".to_owned()),
        ];
        let query = ListQuery::parse(Kind::Contact, &params).expect("query");
        let uri: Uri = "/x".parse().expect("uri");
        let (page, link) = select(rows, &query, &uri, &HeaderMap::new());
        assert!(link.is_none());
        assert_eq!(
            page,
            vec![
                serde_json::json!({"id": 3, "company": {"id": 1}}),
                serde_json::json!({"id": 2, "company": {"id": 1}}),
                serde_json::json!({"id": 1, "company": {"id": 2}}),
            ]
        );
        let bad = vec![("orderBy".to_owned(), "nickName".to_owned())];
        assert!(ListQuery::parse(Kind::Contact, &bad).is_err());
        let bad = vec![("conditions".to_owned(), "nickName = \"x\"".to_owned())];
        let err = ListQuery::parse(Kind::Contact, &bad)
            .err()
            .expect("unknown field");
        assert!(
            err.body.message.contains("nickName is not a field"),
            "{err:?}"
        );
        let bad = vec![("pageSize".to_owned(), "1001".to_owned())];
        assert!(ListQuery::parse(Kind::Contact, &bad).is_err());
    }
}
