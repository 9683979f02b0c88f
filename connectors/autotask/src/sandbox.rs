//! A stateful Autotask server, for tests, demos and `rollcall sandbox autotask`.
//!
//! rollcall cannot test against a real Autotask database, and a mock that accepts anything
//! would let the client's mistakes through. This sandbox keeps companies, contacts, recurring
//! service contracts, the service catalogue, contract services and their unit periods in memory
//! and enforces what Autotask's REST API v1.0 documents (`docs/autotask.md` lists it):
//!
//! - zone discovery: `GET /ATServicesRest/V1.0/zoneInformation?user=` (no credentials) answers
//!   the zone's REST root on this server;
//! - API-user header auth: `ApiIntegrationCode`, `UserName` and `Secret` on every other call, a
//!   401 when any is wrong;
//! - queries: `POST {Entity}/query` with `{"filter": [...], "MaxRecords": n}` or `GET
//!   {Entity}/query?search=` with the same JSON, the filter language of [`filter`], at most 500
//!   records a page in id order, and `pageDetails.nextPageUrl` to the next page;
//! - writes on the parent entity's URL (`Companies/{id}/Contacts`, `Contracts/{id}/Services`,
//!   `Contracts/{id}/ServiceAdjustments`), creates answering `{"itemId": n}`, updates by PATCH
//!   with the id in the body; only `adjustedPrice` and `invoiceDescription` of a contract
//!   service can change, and its units change only through adjustments, which start a new unit
//!   period on their effective date and can never leave fewer than 0 units;
//! - refusals as `{"errors": [...]}` with status 500, as Autotask answers business-rule errors;
//!   field lengths from [`crate::model::LIMITS`];
//! - the threshold: 10,000 requests an hour per database (the seed may set fewer), answers
//!   slowed by half a second from half of it and a second from three quarters, then 429.
//!
//! Faults are injected per path fragment (relative to the API root, e.g. `ServiceAdjustments`):
//! [`Sandbox::throttle`] (429), [`Sandbox::fail`] (500 with Autotask's "unexpected error"),
//! [`Sandbox::fail_with_page`] (500 with an HTML page), [`Sandbox::drop_response_after_commit`]
//! (the write lands, its answer is cut off). The server stops when its handle is dropped.

pub mod filter;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query as UrlQuery, Request, State as AxumState};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{Datelike, NaiveDate};
use rollcall_core::sandbox::RequestWindow;
use rollcall_core::text_length;
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::{Config, HOURLY_THRESHOLD, MAX_PAGE_SIZE};
use crate::model::{
    Company, Contact, Contract, ContractService, ContractServiceAdjustment, ContractServiceUnit,
    ErrorBody, ItemId, LIMITS, PageDetails, Query, RECURRING_SERVICE, Service, ZoneInformation,
};

/// Where the REST API lives on every Autotask zone, and on the sandbox.
pub const API_ROOT: &str = "/ATServicesRest/V1.0";

/// The longest `externalID` Autotask stores on a contact, and the longest descriptions on a
/// contract service.
const EXTERNAL_ID_MAX: usize = 50;
const DESCRIPTION_MAX: usize = 1000;

/// The API user the sandbox accepts. Written in the seed in the clear: they are test values.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub username: String,
    pub secret: String,
    pub integration_code: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("secret", &"..")
            .field("integration_code", &"..")
            .finish()
    }
}

fn threshold() -> u32 {
    HOURLY_THRESHOLD
}

/// What the sandbox holds when it starts, as JSON, in Autotask's own shape (camelCase, `ID` in
/// capitals). Every object names its id, and references are by id (`companyID`, `contractID`,
/// `serviceID`). Contract services start with 0 units; give them units with adjustments.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    pub credentials: Credentials,
    /// Requests per hour before 429 (Autotask's is 10,000 per database).
    #[serde(default = "threshold")]
    pub requests_per_hour: u32,
    #[serde(default)]
    pub companies: Vec<Company>,
    #[serde(default)]
    pub contracts: Vec<Contract>,
    #[serde(default)]
    pub services: Vec<Service>,
    #[serde(default)]
    pub contacts: Vec<Contact>,
    #[serde(default)]
    pub contract_services: Vec<ContractService>,
}

impl Seed {
    /// Three clients (`Acme Corporation`, `Globex Corporation`, `Initech`), each with an
    /// active "Managed Services" recurring service contract and no contacts or services yet,
    /// and four per-user services. The API user is `api@demo.example` with secret
    /// `demo-secret` and integration code `DEMO-INTEGRATION-CODE`.
    pub fn demo() -> Seed {
        let company = |id: i64, name: &str| Company {
            id,
            company_name: name.to_owned(),
            company_type: 1,
            is_active: true,
        };
        let contract = |id: i64, company_id: i64| Contract {
            id,
            company_id,
            contract_name: "Managed Services".to_owned(),
            contract_type: RECURRING_SERVICE,
            status: 1,
            start_date: "2025-01-01T00:00:00Z".to_owned(),
            end_date: "2030-12-31T00:00:00Z".to_owned(),
        };
        let service = |id: i64, name: &str, price: i64| Service {
            id,
            name: name.to_owned(),
            unit_price: Decimal::new(price, 2),
            invoice_description: None,
            is_active: true,
        };
        Seed {
            credentials: Credentials {
                username: "api@demo.example".to_owned(),
                secret: "demo-secret".to_owned(),
                integration_code: "DEMO-INTEGRATION-CODE".to_owned(),
            },
            requests_per_hour: HOURLY_THRESHOLD,
            companies: vec![
                company(101, "Acme Corporation"),
                company(102, "Globex Corporation"),
                company(103, "Initech"),
            ],
            contracts: vec![contract(201, 101), contract(202, 102), contract(203, 103)],
            services: vec![
                service(301, "Microsoft 365 Business Premium", 2200),
                service(302, "Microsoft 365 E3", 3600),
                service(303, "Security Awareness Training", 350),
                service(304, "Helpdesk Per User", 4500),
            ],
            contacts: Vec::new(),
            contract_services: Vec::new(),
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
    pub contracts: Vec<Contract>,
    pub services: Vec<Service>,
    pub contract_services: Vec<ContractService>,
    pub units: Vec<ContractServiceUnit>,
    pub adjustments: Vec<ContractServiceAdjustment>,
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
            Err(error) => panic!("the Autotask sandbox could not start: {error}"),
        }
    }

    /// Starts a sandbox on the given address.
    pub async fn start_on(addr: SocketAddr, seed: Seed) -> Result<Sandbox, SandboxError> {
        let shared = Arc::new(Shared::new(seed)?);
        let server =
            rollcall_core::sandbox::SandboxServer::start(addr, router(shared.clone()), "autotask")
                .await?;
        Ok(Sandbox { server, shared })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The zone lookup's base, as a pipeline's `zone_lookup_url:` takes it.
    pub fn url(&self) -> String {
        format!("http://{}{API_ROOT}", self.server.addr())
    }

    pub fn credentials(&self) -> Credentials {
        self.shared.credentials.clone()
    }

    /// A client configuration that reaches this sandbox as its API user.
    pub fn config(&self) -> Config {
        let credentials = &self.shared.credentials;
        Config {
            username: credentials.username.clone(),
            secret: rollcall_core::Secret::new(credentials.secret.clone()),
            integration_code: rollcall_core::Secret::new(credentials.integration_code.clone()),
            zone_lookup_url: self.url(),
            rate_limit_per_hour: HOURLY_THRESHOLD,
            page_size: MAX_PAGE_SIZE,
        }
    }

    /// What the sandbox holds now.
    pub fn state(&self) -> State {
        let db = self.shared.db();
        State {
            companies: db.companies.clone(),
            contacts: db.contacts.clone(),
            contracts: db.contracts.clone(),
            services: db.services.clone(),
            contract_services: db.contract_services.clone(),
            units: db.units.clone(),
            adjustments: db.adjustments.clone(),
        }
    }

    /// The units of a contract service in force on `date` (`YYYY-MM-DD`).
    pub fn units_on(&self, contract_service_id: i64, date: &str) -> Option<Decimal> {
        let date = parse_day(date).ok()?;
        self.shared
            .db()
            .units
            .iter()
            .find(|u| {
                u.contract_service_id == contract_service_id
                    && parse_day(&u.start_date).is_ok_and(|s| s <= date)
                    && parse_day(&u.end_date).is_ok_and(|e| date <= e)
            })
            .map(|u| u.units)
    }

    /// API requests seen (zone look-ups included).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Write requests received (creates and updates, whether or not they changed anything).
    pub fn write_requests(&self) -> u64 {
        self.shared.write_requests.load(Ordering::SeqCst)
    }

    /// Writes that changed something.
    pub fn writes(&self) -> u64 {
        self.shared.writes.load(Ordering::SeqCst)
    }

    /// 429s answered.
    pub fn throttled(&self) -> u64 {
        self.shared.throttled.load(Ordering::SeqCst)
    }

    /// Every API request waits this long first (so a test can stop a run part way).
    pub fn latency(&self, delay: Duration) {
        self.shared.faults().latency = delay;
    }

    /// The next `n` requests whose path contains `fragment` are answered 429.
    pub fn throttle(&self, fragment: &str, n: u32) {
        self.shared.faults().throttles.push(Fault::new(fragment, n));
    }

    /// The next `n` requests whose path contains `fragment` fail with a 500 and Autotask's own
    /// "unexpected error" in its `errors` shape.
    pub fn fail(&self, fragment: &str, n: u32) {
        self.shared.faults().failures.push(Fault::new(fragment, n));
    }

    /// The next `n` requests whose path contains `fragment` fail with a 500 whose body is an
    /// HTML page, as a web server or proxy in front of Autotask answers when it breaks.
    pub fn fail_with_page(&self, fragment: &str, n: u32) {
        self.shared.faults().pages.push(Fault::new(fragment, n));
    }

    /// The next `n` successful writes whose path contains `fragment` are committed, but their
    /// answers are cut off mid-body.
    pub fn drop_response_after_commit(&self, fragment: &str, n: u32) {
        self.shared.faults().drops.push(Fault::new(fragment, n));
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

/// Serves a sandbox on `addr` until Ctrl-C, for `rollcall sandbox autotask`.
pub async fn run_standalone(addr: SocketAddr, seed: Seed) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(url = %format!("http://{local}{API_ROOT}"), "Autotask sandbox listening.");
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
    window: Mutex<RequestWindow>,
    requests: AtomicU64,
    write_requests: AtomicU64,
    writes: AtomicU64,
    throttled: AtomicU64,
}

#[derive(Default)]
struct Db {
    companies: Vec<Company>,
    contacts: Vec<Contact>,
    contracts: Vec<Contract>,
    services: Vec<Service>,
    contract_services: Vec<ContractService>,
    units: Vec<ContractServiceUnit>,
    adjustments: Vec<ContractServiceAdjustment>,
    last_id: i64,
}

impl Db {
    fn next_id(&mut self) -> i64 {
        self.last_id += 1;
        self.last_id
    }
}

#[derive(Default)]
struct Faults {
    latency: Duration,
    throttles: Vec<Fault>,
    failures: Vec<Fault>,
    pages: Vec<Fault>,
    drops: Vec<Fault>,
}

struct Fault {
    fragment: String,
    left: u32,
}

impl Fault {
    fn new(fragment: &str, n: u32) -> Fault {
        Fault {
            fragment: fragment.to_ascii_lowercase(),
            left: n,
        }
    }
}

fn take_fault(faults: &mut [Fault], path: &str) -> bool {
    let path = path.to_ascii_lowercase();
    match faults
        .iter_mut()
        .find(|f| f.left > 0 && path.contains(&f.fragment))
    {
        Some(fault) => {
            fault.left -= 1;
            true
        }
        None => false,
    }
}

impl Shared {
    fn new(seed: Seed) -> Result<Shared, SandboxError> {
        let db = load(&seed).map_err(SandboxError::Seed)?;
        Ok(Shared {
            window: Mutex::new(RequestWindow::new(
                seed.requests_per_hour.max(1),
                Duration::from_secs(3600),
            )),
            credentials: seed.credentials,
            db: Mutex::new(db),
            faults: Mutex::new(Faults::default()),
            requests: AtomicU64::new(0),
            write_requests: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
        })
    }

    fn db(&self) -> MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn load(seed: &Seed) -> Result<Db, String> {
    let mut db = Db {
        companies: seed.companies.clone(),
        contracts: seed.contracts.clone(),
        services: seed.services.clone(),
        contacts: seed.contacts.clone(),
        ..Db::default()
    };
    let all_ids = db
        .companies
        .iter()
        .map(|c| c.id)
        .chain(db.contracts.iter().map(|c| c.id))
        .chain(db.services.iter().map(|s| s.id))
        .chain(db.contacts.iter().map(|c| c.id))
        .chain(seed.contract_services.iter().map(|c| c.id));
    let mut seen = std::collections::HashSet::new();
    for id in all_ids {
        if id <= 0 || !seen.insert(id) {
            return Err(format!(
                "id {id} is missing or used twice; give every object its own id"
            ));
        }
        db.last_id = db.last_id.max(id);
    }
    for contract in &mut db.contracts {
        if !seed.companies.iter().any(|c| c.id == contract.company_id) {
            return Err(format!(
                "contract {} names companyID {}, which is not in the seed",
                contract.id, contract.company_id
            ));
        }
        let start = parse_day(&contract.start_date)
            .map_err(|e| format!("contract {}: startDate: {e}", contract.id))?;
        let end = parse_day(&contract.end_date)
            .map_err(|e| format!("contract {}: endDate: {e}", contract.id))?;
        if end < start {
            return Err(format!("contract {} ends before it starts", contract.id));
        }
        contract.start_date = stamp(start);
        contract.end_date = stamp(end);
    }
    for contact in &db.contacts {
        if !seed.companies.iter().any(|c| c.id == contact.company_id) {
            return Err(format!(
                "contact {} names companyID {}, which is not in the seed",
                contact.id, contact.company_id
            ));
        }
        check_contact(contact).map_err(|e| format!("contact {}: {e}", contact.id))?;
    }
    for service in &seed.contract_services {
        let contract = db
            .contracts
            .iter()
            .find(|c| c.id == service.contract_id)
            .cloned()
            .ok_or_else(|| {
                format!(
                    "contract service {} names an unknown contractID",
                    service.id
                )
            })?;
        if !db.services.iter().any(|s| s.id == service.service_id) {
            return Err(format!(
                "contract service {} names an unknown serviceID",
                service.id
            ));
        }
        db.contract_services.push(service.clone());
        add_periods(&mut db, &contract, service);
    }
    Ok(db)
}

// ---------------------------------------------------------------------------------------------
// Dates and unit periods

fn parse_day(text: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(crate::model::day(text.trim()), "%Y-%m-%d")
        .map_err(|_| format!("{text:?} is not a valid date (YYYY-MM-DDT00:00:00Z)"))
}

fn stamp(day: NaiveDate) -> String {
    format!("{}T00:00:00Z", day.format("%Y-%m-%d"))
}

fn month_end(day: NaiveDate) -> NaiveDate {
    let (year, month) = if day.month() == 12 {
        (day.year() + 1, 1)
    } else {
        (day.year(), day.month() + 1)
    };
    NaiveDate::from_ymd_opt(year, month, 1)
        .and_then(|d| d.pred_opt())
        .unwrap_or(day)
}

/// One unit period per month of the contract, with 0 units, as Autotask bills monthly
/// recurring services.
fn add_periods(db: &mut Db, contract: &Contract, service: &ContractService) {
    let (Ok(mut start), Ok(end)) = (
        parse_day(&contract.start_date),
        parse_day(&contract.end_date),
    ) else {
        return;
    };
    while start <= end {
        let period_end = month_end(start).min(end);
        let id = db.next_id();
        db.units.push(ContractServiceUnit {
            id,
            contract_id: contract.id,
            contract_service_id: service.id,
            service_id: service.service_id,
            start_date: stamp(start),
            end_date: stamp(period_end),
            units: Decimal::ZERO,
            price: service.price(),
        });
        let Some(next) = period_end.succ_opt() else {
            break;
        };
        start = next;
    }
}

/// Changes the units of a contract service by `change` from `from`: the period covering `from`
/// is split there, and it and every later period carry the change.
fn adjust(db: &mut Db, service_id: i64, from: NaiveDate, change: Decimal) -> Result<(), String> {
    let periods: Vec<usize> = (0..db.units.len())
        .filter(|&i| db.units[i].contract_service_id == service_id)
        .collect();
    let ends_after = |u: &ContractServiceUnit| parse_day(&u.end_date).is_ok_and(|e| e >= from);
    if periods
        .iter()
        .any(|&i| ends_after(&db.units[i]) && db.units[i].units + change < Decimal::ZERO)
    {
        return Err("An adjustment cannot leave the service with fewer than 0 units.".to_owned());
    }
    let mut split = None;
    for &i in &periods {
        let unit = &mut db.units[i];
        let (Ok(start), Ok(end)) = (parse_day(&unit.start_date), parse_day(&unit.end_date)) else {
            continue;
        };
        if end < from {
            continue;
        }
        if start < from {
            // This period ends the day before the adjustment; the rest is a new period.
            let mut rest = unit.clone();
            rest.start_date = stamp(from);
            rest.units += change;
            unit.end_date = stamp(from.pred_opt().unwrap_or(from));
            split = Some(rest);
        } else {
            unit.units += change;
        }
    }
    if let Some(mut rest) = split {
        rest.id = db.next_id();
        db.units.push(rest);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Errors

struct ApiError {
    status: StatusCode,
    errors: Vec<String>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            errors: vec![message.into()],
        }
    }

    /// A refused write or query: Autotask answers these 500 with the reason.
    fn refused(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                errors: self.errors,
            }),
        )
            .into_response()
    }
}

// ---------------------------------------------------------------------------------------------
// Routing, credentials, threshold and faults

fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/{entity}/query", get(query_get).post(query_post))
        .route(
            "/Companies/{id}/Contacts",
            post(create_contact).patch(patch_contact),
        )
        .route(
            "/Contracts/{id}/Services",
            post(create_contract_service).patch(patch_contract_service),
        )
        .route(
            "/Contracts/{id}/ServiceAdjustments",
            post(create_adjustment),
        )
        .route_layer(middleware::from_fn_with_state(shared.clone(), authenticate));
    let open = Router::new().route("/zoneInformation", get(zone_information));
    Router::new()
        .nest(API_ROOT, open.merge(api))
        .fallback(unknown_path)
        .layer(middleware::from_fn_with_state(shared.clone(), gatekeep))
        .with_state(shared)
}

async fn unknown_path(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("No resource was found at {}.", uri.path()),
    )
}

/// The three credential headers of an API-only user. The answer never says which was wrong.
async fn authenticate(
    AxumState(shared): AxumState<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let credentials = &shared.credentials;
    let valid = value("UserName").is_some_and(|u| u.eq_ignore_ascii_case(&credentials.username))
        && value("Secret") == Some(credentials.secret.as_str())
        && value("ApiIntegrationCode") == Some(credentials.integration_code.as_str());
    if valid {
        next.run(request).await
    } else {
        StatusCode::UNAUTHORIZED.into_response()
    }
}

/// Counts requests against the hour's threshold (slowing answers past half of it), and
/// injects the faults a test asked for.
async fn gatekeep(
    AxumState(shared): AxumState<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let path = request
        .uri()
        .path()
        .strip_prefix(API_ROOT)
        .unwrap_or(request.uri().path())
        .to_owned();
    let query = path.to_ascii_lowercase().ends_with("/query");
    let write = !query && matches!(*request.method(), Method::POST | Method::PATCH);
    if write {
        shared.write_requests.fetch_add(1, Ordering::SeqCst);
    }
    // Zone look-ups are outside the threshold.
    if !path.eq_ignore_ascii_case("/zoneInformation") {
        let admitted = {
            let mut window = shared.window.lock().unwrap_or_else(PoisonError::into_inner);
            window.admit("database").map(|left| (window.limit, left))
        };
        match admitted {
            Err(_) => {
                shared.throttled.fetch_add(1, Ordering::SeqCst);
                return ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "API request threshold of {} requests per hour exceeded for this \
                         database; requests are refused until usage falls below it.",
                        shared
                            .window
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .limit
                    ),
                )
                .into_response();
            }
            Ok((limit, left)) => {
                let used = limit - left;
                let delay = if used * 4 >= limit * 3 {
                    Duration::from_millis(1000)
                } else if used * 2 >= limit {
                    Duration::from_millis(500)
                } else {
                    Duration::ZERO
                };
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
    let (latency, throttled, failed, paged) = {
        let mut faults = shared.faults();
        let throttled = take_fault(&mut faults.throttles, &path);
        // A throttled request never reaches the server, so it uses up no injected failure.
        let failed = !throttled && take_fault(&mut faults.failures, &path);
        let paged = !throttled && !failed && take_fault(&mut faults.pages, &path);
        (faults.latency, throttled, failed, paged)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if throttled {
        shared.throttled.fetch_add(1, Ordering::SeqCst);
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests (injected).",
        )
        .into_response();
    }
    if failed {
        return ApiError::refused("An unexpected error occurred (injected by the sandbox).")
            .into_response();
    }
    if paged {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><head><title>500 - Internal server error.</title></head><body><h2>500 - \
             Internal server error.</h2><p>(injected by the sandbox)</p></body></html>",
        )
            .into_response();
    }
    let response = next.run(request).await;
    if write && response.status().is_success() && take_fault(&mut shared.faults().drops, &path) {
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

fn host(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned()
}

async fn zone_information(
    AxumState(shared): AxumState<Arc<Shared>>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<ZoneInformation>, ApiError> {
    let user = params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("user"))
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    if !user.eq_ignore_ascii_case(&shared.credentials.username) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("No zone was found for the user {user:?}."),
        ));
    }
    let host = host(&headers);
    Ok(Json(ZoneInformation {
        zone_name: "Sandbox".to_owned(),
        url: format!("http://{host}/ATServicesRest/"),
        web_url: format!("http://{host}/"),
        ci: 1,
    }))
}

// ---------------------------------------------------------------------------------------------
// Queries

/// An entity as the query language sees it: every field present, unset ones as `null`.
fn row<T: Serialize>(entity: &T, optional: &[&str]) -> Value {
    let mut value = serde_json::to_value(entity).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        for field in optional {
            map.entry((*field).to_owned()).or_insert(Value::Null);
        }
    }
    value
}

fn rows(db: &Db, entity: &str) -> Result<(&'static str, Vec<Value>, Value), ApiError> {
    const CONTACT: &[&str] = &["emailAddress", "phone", "title", "externalID"];
    const SERVICE: &[&str] = &["invoiceDescription"];
    const CONTRACT_SERVICE: &[&str] =
        &["adjustedPrice", "invoiceDescription", "internalDescription"];
    fn all<T: Serialize + Default>(
        name: &'static str,
        items: &[T],
        optional: &[&str],
    ) -> (&'static str, Vec<Value>, Value) {
        (
            name,
            items.iter().map(|i| row(i, optional)).collect(),
            row(&T::default(), optional),
        )
    }
    Ok(match entity.to_ascii_lowercase().as_str() {
        "companies" => all("Company", &db.companies, &[]),
        "contacts" => all("Contact", &db.contacts, CONTACT),
        "contracts" => all("Contract", &db.contracts, &[]),
        "services" => all("Service", &db.services, SERVICE),
        "contractservices" => all("ContractService", &db.contract_services, CONTRACT_SERVICE),
        "contractserviceunits" => all("ContractServiceUnit", &db.units, &[]),
        "contractserviceadjustments" => {
            return Err(ApiError::refused(
                "ContractServiceAdjustments can only be created; they cannot be queried.",
            ));
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("The entity {entity} does not exist."),
            ));
        }
    })
}

async fn query_post(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(entity): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let query: crate::model::Query = parse_body(&body)?;
    run_query(&shared, &entity, query, &headers)
}

async fn query_get(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(entity): Path<String>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let search = params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("search"))
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| ApiError::refused("A query needs a search parameter with a filter."))?;
    let query: crate::model::Query = parse_body(search.as_bytes())?;
    run_query(&shared, &entity, query, &headers)
}

fn run_query(
    shared: &Shared,
    entity: &str,
    query: Query,
    headers: &HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let max = query.max_records.unwrap_or(MAX_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&max) {
        return Err(ApiError::refused(format!(
            "MaxRecords must be between 1 and {MAX_PAGE_SIZE}, not {max}."
        )));
    }
    if query.filter.is_empty() {
        return Err(ApiError::refused(
            "A query needs at least one filter condition.",
        ));
    }
    let db = shared.db();
    let (name, all, template) = rows(&db, entity)?;
    filter::check(name, &template, &query.filter).map_err(ApiError::refused)?;
    let mut found = Vec::new();
    for candidate in all {
        if filter::matches(name, &candidate, &query.filter).map_err(ApiError::refused)? {
            found.push(candidate);
        }
    }
    found.sort_by_key(|r| r["id"].as_i64().unwrap_or_default());
    let more = found.len() > max as usize;
    found.truncate(max as usize);
    let next_page_url = match (more, found.last()) {
        (true, Some(last)) => {
            let mut next = query.clone();
            next.filter.push(crate::model::Filter::compare(
                "gt",
                "id",
                last["id"].clone(),
            ));
            let search =
                serde_json::to_string(&next).map_err(|e| ApiError::refused(e.to_string()))?;
            let mut url = reqwest::Url::parse(&format!(
                "http://{}{API_ROOT}/{entity}/query",
                host(headers)
            ))
            .map_err(|e| ApiError::refused(e.to_string()))?;
            url.query_pairs_mut().append_pair("search", &search);
            Some(url.to_string())
        }
        _ => None,
    };
    let page = json!({
        "items": found,
        "pageDetails": PageDetails {
            count: found.len(),
            request_count: max,
            prev_page_url: None,
            next_page_url,
        },
    });
    Ok(Json(page))
}

// ---------------------------------------------------------------------------------------------
// Writes

fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("The request body is not valid: {e}"),
        )
    })
}

fn too_long(field: &str, value: Option<&str>, max: usize) -> Result<(), String> {
    match value {
        Some(v) if text_length(v) > max => Err(format!(
            "{field}: the value is {} characters long; the longest allowed is {max}.",
            text_length(v)
        )),
        _ => Ok(()),
    }
}

fn check_contact(contact: &Contact) -> Result<(), String> {
    if contact.first_name.trim().is_empty() {
        return Err("firstName is required.".to_owned());
    }
    if contact.last_name.trim().is_empty() {
        return Err("lastName is required.".to_owned());
    }
    if !matches!(contact.is_active, 0 | 1) {
        return Err("isActive must be 0 or 1.".to_owned());
    }
    let limit = |l: Option<usize>| l.unwrap_or(usize::MAX);
    too_long(
        "firstName",
        Some(&contact.first_name),
        limit(LIMITS.contact_first_name),
    )?;
    too_long(
        "lastName",
        Some(&contact.last_name),
        limit(LIMITS.contact_last_name),
    )?;
    too_long(
        "title",
        contact.title.as_deref(),
        limit(LIMITS.contact_title),
    )?;
    too_long(
        "emailAddress",
        contact.email_address.as_deref(),
        limit(LIMITS.contact_email),
    )?;
    too_long(
        "phone",
        contact.phone.as_deref(),
        limit(LIMITS.contact_phone),
    )?;
    too_long(
        "externalID",
        contact.external_id.as_deref(),
        EXTERNAL_ID_MAX,
    )?;
    Ok(())
}

fn created(shared: &Shared, id: i64) -> Response {
    shared.writes.fetch_add(1, Ordering::SeqCst);
    Json(ItemId { item_id: id }).into_response()
}

async fn create_contact(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(company_id): Path<i64>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut contact: Contact = parse_body(&body)?;
    let mut db = shared.db();
    if !db.companies.iter().any(|c| c.id == company_id) {
        return Err(ApiError::refused(format!(
            "Company {company_id} does not exist."
        )));
    }
    if contact.company_id != 0 && contact.company_id != company_id {
        return Err(ApiError::refused(
            "companyID does not match the parent company.",
        ));
    }
    contact.company_id = company_id;
    check_contact(&contact).map_err(ApiError::refused)?;
    contact.id = db.next_id();
    let id = contact.id;
    db.contacts.push(contact);
    Ok(created(&shared, id))
}

fn body_object(body: &[u8]) -> Result<(i64, serde_json::Map<String, Value>), ApiError> {
    let Value::Object(map) = parse_body::<Value>(body)? else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "The body must be an object.",
        ));
    };
    let id = map
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("id"))
        .and_then(|(_, v)| v.as_i64())
        .ok_or_else(|| ApiError::refused("An update needs the id of the entity to update."))?;
    Ok((id, map))
}

fn text_value(field: &str, value: &Value) -> Result<Option<String>, ApiError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone()).filter(|s| !s.is_empty())),
        _ => Err(ApiError::refused(format!("{field} must be text."))),
    }
}

async fn patch_contact(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(company_id): Path<i64>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (id, fields) = body_object(&body)?;
    let mut db = shared.db();
    let Some(index) = db
        .contacts
        .iter()
        .position(|c| c.id == id && c.company_id == company_id)
    else {
        return Err(ApiError::refused(format!(
            "Contact {id} does not exist in company {company_id}."
        )));
    };
    let mut contact = db.contacts[index].clone();
    for (field, value) in &fields {
        match field.to_ascii_lowercase().as_str() {
            "id" => {}
            "firstname" => contact.first_name = text_value(field, value)?.unwrap_or_default(),
            "lastname" => contact.last_name = text_value(field, value)?.unwrap_or_default(),
            "emailaddress" => contact.email_address = text_value(field, value)?,
            "phone" => contact.phone = text_value(field, value)?,
            "title" => contact.title = text_value(field, value)?,
            "externalid" => contact.external_id = text_value(field, value)?,
            "isactive" => {
                contact.is_active = value
                    .as_i64()
                    .or_else(|| value.as_bool().map(i64::from))
                    .ok_or_else(|| ApiError::refused("isActive must be 0 or 1."))?;
            }
            "companyid" if value.as_i64() == Some(company_id) => {}
            _ => {
                return Err(ApiError::refused(format!(
                    "Unable to find {field} in the Contact Entity, or it cannot be updated."
                )));
            }
        }
    }
    check_contact(&contact).map_err(ApiError::refused)?;
    if contact != db.contacts[index] {
        db.contacts[index] = contact;
        shared.writes.fetch_add(1, Ordering::SeqCst);
    }
    Ok(Json(ItemId { item_id: id }).into_response())
}

fn recurring_contract(db: &Db, contract_id: i64) -> Result<Contract, ApiError> {
    let contract = db
        .contracts
        .iter()
        .find(|c| c.id == contract_id)
        .ok_or_else(|| ApiError::refused(format!("Contract {contract_id} does not exist.")))?;
    if contract.contract_type != RECURRING_SERVICE {
        return Err(ApiError::refused(
            "contractID must reference a Recurring Service type Contract.",
        ));
    }
    Ok(contract.clone())
}

async fn create_contract_service(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(contract_id): Path<i64>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut service: ContractService = parse_body(&body)?;
    let mut db = shared.db();
    let contract = recurring_contract(&db, contract_id)?;
    if service.contract_id != 0 && service.contract_id != contract_id {
        return Err(ApiError::refused(
            "contractID does not match the parent contract.",
        ));
    }
    service.contract_id = contract_id;
    if !db.services.iter().any(|s| s.id == service.service_id) {
        return Err(ApiError::refused(format!(
            "serviceID {} does not exist.",
            service.service_id
        )));
    }
    if db
        .contract_services
        .iter()
        .any(|s| s.contract_id == contract_id && s.service_id == service.service_id)
    {
        return Err(ApiError::refused(
            "This service has already been added to the contract.",
        ));
    }
    too_long(
        "invoiceDescription",
        service.invoice_description.as_deref(),
        DESCRIPTION_MAX,
    )
    .and_then(|()| {
        too_long(
            "internalDescription",
            service.internal_description.as_deref(),
            DESCRIPTION_MAX,
        )
    })
    .map_err(ApiError::refused)?;
    service.id = db.next_id();
    let id = service.id;
    db.contract_services.push(service.clone());
    add_periods(&mut db, &contract, &service);
    Ok(created(&shared, id))
}

async fn patch_contract_service(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(contract_id): Path<i64>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (id, fields) = body_object(&body)?;
    let mut db = shared.db();
    let Some(index) = db
        .contract_services
        .iter()
        .position(|s| s.id == id && s.contract_id == contract_id)
    else {
        return Err(ApiError::refused(format!(
            "Contract service {id} does not exist on contract {contract_id}."
        )));
    };
    let mut service = db.contract_services[index].clone();
    for (field, value) in &fields {
        match field.to_ascii_lowercase().as_str() {
            "id" => {}
            "adjustedprice" => {
                service.adjusted_price = match value {
                    Value::Null => None,
                    v => Some(
                        serde_json::from_value::<Decimal>(v.clone())
                            .map_err(|_| ApiError::refused("adjustedPrice must be a number."))?,
                    ),
                }
            }
            "invoicedescription" => service.invoice_description = text_value(field, value)?,
            _ => {
                return Err(ApiError::refused(format!(
                    "{field} is read-only: only adjustedPrice and invoiceDescription of a \
                     contract service can be updated."
                )));
            }
        }
    }
    too_long(
        "invoiceDescription",
        service.invoice_description.as_deref(),
        DESCRIPTION_MAX,
    )
    .map_err(ApiError::refused)?;
    if service != db.contract_services[index] {
        db.contract_services[index] = service;
        shared.writes.fetch_add(1, Ordering::SeqCst);
    }
    Ok(Json(ItemId { item_id: id }).into_response())
}

async fn create_adjustment(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(contract_id): Path<i64>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut adjustment: ContractServiceAdjustment = parse_body(&body)?;
    let mut db = shared.db();
    let contract = recurring_contract(&db, contract_id)?;
    adjustment.contract_id = contract_id;
    if adjustment.unit_change == 0 {
        return Err(ApiError::refused("unitChange must not be 0."));
    }
    let from = parse_day(&adjustment.effective_date).map_err(ApiError::refused)?;
    let (start, end) = (
        parse_day(&contract.start_date).map_err(ApiError::refused)?,
        parse_day(&contract.end_date).map_err(ApiError::refused)?,
    );
    if from < start || from > end {
        return Err(ApiError::refused(format!(
            "effectiveDate {} is outside the contract's dates ({} to {}).",
            stamp(from),
            stamp(start),
            stamp(end)
        )));
    }
    // Named by contract service, or by service: one that is not on the contract yet is added.
    let existing = db
        .contract_services
        .iter()
        .find(|s| {
            s.contract_id == contract_id
                && if adjustment.contract_service_id != 0 {
                    s.id == adjustment.contract_service_id
                } else {
                    s.service_id == adjustment.service_id
                }
        })
        .cloned();
    let service = match existing {
        Some(service) => service,
        None if adjustment.contract_service_id != 0 => {
            return Err(ApiError::refused(format!(
                "Contract service {} does not exist on contract {contract_id}.",
                adjustment.contract_service_id
            )));
        }
        None => {
            let catalogue = db
                .services
                .iter()
                .find(|s| s.id == adjustment.service_id)
                .cloned()
                .ok_or_else(|| {
                    ApiError::refused(format!(
                        "serviceID {} does not exist.",
                        adjustment.service_id
                    ))
                })?;
            let service = ContractService {
                id: db.next_id(),
                contract_id,
                service_id: catalogue.id,
                unit_price: catalogue.unit_price,
                invoice_description: catalogue.invoice_description.clone(),
                ..ContractService::default()
            };
            db.contract_services.push(service.clone());
            add_periods(&mut db, &contract, &service);
            service
        }
    };
    adjust(
        &mut db,
        service.id,
        from,
        Decimal::from(adjustment.unit_change),
    )
    .map_err(ApiError::refused)?;
    adjustment.contract_service_id = service.id;
    adjustment.service_id = service.service_id;
    adjustment.effective_date = stamp(from);
    adjustment.id = db.next_id();
    let id = adjustment.id;
    db.adjustments.push(adjustment);
    Ok(created(&shared, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adjustment_splits_the_period_it_falls_in_and_carries_to_later_ones() {
        let mut db = load(&Seed::demo()).expect("demo seed");
        let contract = db.contracts[0].clone();
        let service = ContractService {
            id: db.next_id(),
            contract_id: contract.id,
            service_id: 301,
            ..ContractService::default()
        };
        db.contract_services.push(service.clone());
        add_periods(&mut db, &contract, &service);
        assert_eq!(db.units.len(), 72, "one period a month for six years");
        let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date");
        adjust(&mut db, service.id, day("2026-03-10"), Decimal::from(5)).expect("adjust");
        adjust(&mut db, service.id, day("2026-03-10"), Decimal::from(-2)).expect("same day");
        let units_on = |db: &Db, d: &str| {
            db.units
                .iter()
                .find(|u| {
                    parse_day(&u.start_date).expect("start") <= day(d)
                        && day(d) <= parse_day(&u.end_date).expect("end")
                })
                .map(|u| u.units)
        };
        assert_eq!(units_on(&db, "2026-03-09"), Some(Decimal::ZERO));
        assert_eq!(units_on(&db, "2026-03-10"), Some(Decimal::from(3)));
        assert_eq!(units_on(&db, "2027-07-01"), Some(Decimal::from(3)));
        let err = adjust(&mut db, service.id, day("2026-04-01"), Decimal::from(-4))
            .expect_err("below zero");
        assert!(err.contains("fewer than 0"), "{err}");
    }

    #[test]
    fn a_seed_with_a_dangling_reference_is_refused() {
        let mut seed = Seed::demo();
        seed.contracts[0].company_id = 999;
        let err = load(&seed).err().expect("refused");
        assert!(err.contains("companyID 999"), "{err}");
    }
}
