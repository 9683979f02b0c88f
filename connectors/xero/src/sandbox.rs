//! A stateful stand-in for Xero's Accounting API and identity server, for tests and demos.
//!
//! It follows what clients (rollcall's, or Xero's own SDKs) depend on: case-insensitive paths,
//! `/connections`, consent (the scope granted is the scope asked for) and single-use refresh
//! tokens (client auth by Basic or form), the client-credentials grant of custom connections,
//! `xero-tenant-id` on every call, `Contacts` and `Invoices` with `page`/`pageSize` and Xero's
//! `pagination` metadata, `where` (`==`, `!=`, `StartsWith`/`EndsWith`/`Contains`, and
//! `DateTime(y,m,d)` comparisons joined by `&&`), `order`, `IDs` and `If-Modified-Since`, `Idempotency-Key`
//! replay, invoice status rules (a paid, voided or deleted invoice refuses edits), dates in
//! Microsoft JSON form with ISO `…String` twins, Xero's error bodies, and its limits per
//! organisation — 60 calls a minute, 5 at once, 5,000 a day — with the `X-MinLimit-Remaining`,
//! `X-DayLimit-Remaining` and `X-AppMinLimit-Remaining` headers, and 429 with `Retry-After` and
//! `X-Rate-Limit-Problem`.
//!
//! Knowingly simpler than Xero: no tax calculation (`TaxType` is stored as sent, totals are
//! the lines' sum), no currencies, no payments API (a test hook marks an invoice paid), one
//! organisation per sandbox, and consent is approved at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use rollcall_core::oauth::TokenSet;
use rollcall_core::sandbox::{Controls, OAuthIssuer, RequestWindow, SandboxServer, TokenRefusal};
use rollcall_core::{Secret, json_number as number};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::{Config, LineAmountTypes};
use crate::model::{decimal, ms_date, text};

/// What a sandbox starts with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    pub tenant_id: String,
    pub tenant_name: String,
    pub client_id: String,
    pub client_secret: String,
    /// Items by code with their sale price.
    pub items: Vec<(String, Decimal)>,
    /// Contacts by name, with an email.
    #[serde(default)]
    pub contacts: Vec<(String, Option<String>)>,
    #[serde(default = "default_per_minute")]
    pub requests_per_minute: u32,
    #[serde(default = "default_per_day")]
    pub requests_per_day: u32,
    #[serde(default = "default_concurrent")]
    pub max_concurrent: usize,
    #[serde(default = "default_access_ttl")]
    pub access_token_seconds: u64,
}

fn default_per_minute() -> u32 {
    60
}
fn default_per_day() -> u32 {
    5000
}
fn default_concurrent() -> usize {
    5
}
fn default_access_ttl() -> u64 {
    1800
}

impl Seed {
    /// An organisation with the example pipeline's items.
    pub fn demo() -> Seed {
        let price = |s: &str| s.parse::<Decimal>().unwrap_or_default();
        Seed {
            tenant_id: "5c4f5f0e-7a0b-4c5d-9a38-6d1e2c0f9a01".into(),
            tenant_name: "Demo MSP Ltd".into(),
            client_id: "demo-xero-client".into(),
            client_secret: "demo-xero-secret".into(),
            items: vec![
                ("M365-BP".into(), price("22.00")),
                ("M365-E3".into(), price("36.00")),
                ("HELPDESK-USER".into(), price("35.00")),
                ("PROJECT".into(), price("120.00")),
            ],
            contacts: vec![("Contoso Ltd".into(), Some("accounts@contoso.test".into()))],
            requests_per_minute: default_per_minute(),
            requests_per_day: default_per_day(),
            max_concurrent: default_concurrent(),
            access_token_seconds: default_access_ttl(),
        }
    }
}

#[derive(Debug, Default)]
struct Db {
    contacts: Vec<Value>,
    items: Vec<Value>,
    invoices: Vec<Value>,
    numbers: u64,
}

struct Shared {
    tenant_id: String,
    tenant_name: String,
    client_id: String,
    db: Mutex<Db>,
    issuer: Mutex<OAuthIssuer>,
    minute: Mutex<RequestWindow>,
    day: Mutex<RequestWindow>,
    max_concurrent: usize,
    controls: Controls,
    replays: Mutex<HashMap<String, Value>>,
    /// The scope consented to, by authorization code and then by refresh token: Xero grants
    /// what was asked for and keeps it through refreshes.
    scopes: Mutex<HashMap<String, String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running sandbox; dropping it stops the server.
pub struct Sandbox {
    server: SandboxServer,
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
    /// Starts on a free port of 127.0.0.1.
    ///
    /// # Panics
    /// When no port can be bound: this is test support, and a test cannot go on without it.
    pub async fn start(seed: Seed) -> Sandbox {
        match Sandbox::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), seed).await {
            Ok(s) => s,
            Err(e) => panic!("the Xero sandbox could not start: {e}"),
        }
    }

    pub async fn start_on(addr: SocketAddr, seed: Seed) -> std::io::Result<Sandbox> {
        let shared = Arc::new(Shared::new(seed));
        let server = SandboxServer::start(addr, router(shared.clone()), "xero").await?;
        Ok(Sandbox { server, shared })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    pub fn tenant_id(&self) -> String {
        self.shared.tenant_id.clone()
    }

    /// A target section that reaches this sandbox, its tokens under `connection`.
    pub fn config(&self, connection: &str) -> Config {
        let url = self.url();
        Config {
            url: url.clone(),
            client_id: self.shared.client_id.clone(),
            client_secret: Secret::new(lock(&self.shared.issuer).client_secret().to_owned()),
            authorize_url: format!("{url}/identity/connect/authorize"),
            token_url: format!("{url}/connect/token"),
            connection: connection.into(),
            tenant: None,
            line_amount_types: LineAmountTypes::Exclusive,
            account_code: Some("200".into()),
            tax_type: None,
            requests_per_minute: 55,
        }
    }

    /// Tokens as a completed consent gives them (what `rollcall connect` stores).
    pub fn connect(&self) -> TokenSet {
        let mut issuer = lock(&self.shared.issuer);
        let code = issuer.authorize(&self.shared.tenant_id);
        let issued = issuer
            .exchange(&code, "offline_access accounting.transactions")
            .unwrap_or_else(|_| unreachable!("a fresh code is always accepted"));
        TokenSet {
            access_token: issued.access_token,
            refresh_token: issued.refresh_token,
            expires_at: chrono::Utc::now() + chrono::Duration::seconds(issued.expires_in as i64),
            scope: Some(issued.scope),
            tenant: Some(self.shared.tenant_id.clone()),
        }
    }

    /// Fault injection and counters (requests, writes, 429s answered).
    pub fn controls(&self) -> &Controls {
        &self.shared.controls
    }
    pub fn refreshes(&self) -> u64 {
        lock(&self.shared.issuer).refreshes
    }
    pub fn invoices(&self) -> Vec<Value> {
        lock(&self.shared.db).invoices.clone()
    }
    pub fn contacts(&self) -> Vec<Value> {
        lock(&self.shared.db).contacts.clone()
    }
    pub fn revoke_all(&self) {
        lock(&self.shared.issuer).revoke_all();
    }
    pub fn expire_access_tokens(&self) {
        lock(&self.shared.issuer).expire_access_tokens();
    }
    /// The minute limit, with a shorter window for tests that must reach it quickly.
    pub fn limit_rate(&self, per_window: u32, window: Duration) {
        *lock(&self.shared.minute) = RequestWindow::new(per_window, window);
    }
    /// A person approves the invoice with this reference.
    pub fn authorise_invoice(&self, reference: &str) {
        self.edit(reference, |i| i["Status"] = json!("AUTHORISED"));
    }
    /// The invoice with this reference is paid in full.
    pub fn pay_invoice(&self, reference: &str) {
        self.edit(reference, |i| {
            i["Status"] = json!("PAID");
            i["AmountPaid"] = i["Total"].clone();
            i["AmountDue"] = json!(0);
        });
    }
    /// A person adds a line to the invoice with this reference.
    pub fn add_line(&self, reference: &str, item: &str, quantity: Decimal, description: &str) {
        let price = lock(&self.shared.db)
            .items
            .iter()
            .find(|i| text(i, "Code") == Some(item))
            .and_then(|i| decimal(i["SalesDetails"].get("UnitPrice")))
            .unwrap_or_default();
        self.edit(reference, |i| {
            if let Some(lines) = i["LineItems"].as_array_mut() {
                lines.push(json!({
                    "LineItemID": uuid::Uuid::new_v4().to_string(),
                    "Description": description, "Quantity": number(quantity),
                    "UnitAmount": number(price), "ItemCode": item,
                    "LineAmount": number(quantity * price),
                }));
            }
            totals(i);
        });
    }

    fn edit(&self, reference: &str, edit: impl FnOnce(&mut Value)) {
        let mut db = lock(&self.shared.db);
        if let Some(i) = db
            .invoices
            .iter_mut()
            .find(|i| text(i, "Reference") == Some(reference))
        {
            edit(i);
            i["UpdatedDateUTC"] = json!(now_ms());
        }
    }
}

/// Serves a sandbox on `addr` until Ctrl-C, for `rollcall sandbox xero`.
pub async fn run_standalone(addr: SocketAddr, seed: Seed) -> std::io::Result<()> {
    rollcall_core::sandbox::serve_until(addr, router(Arc::new(Shared::new(seed))), async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}

fn now_ms() -> String {
    format!("/Date({}+0000)/", chrono::Utc::now().timestamp_millis())
}

impl Shared {
    fn new(seed: Seed) -> Shared {
        let mut db = Db::default();
        for (code, price) in &seed.items {
            db.items.push(json!({
                "ItemID": uuid::Uuid::new_v4().to_string(), "Code": code, "Name": code,
                "IsSold": true, "SalesDetails": { "UnitPrice": number(*price), "AccountCode": "200" },
            }));
        }
        for (name, email) in &seed.contacts {
            db.contacts.push(new_contact(name, email.as_deref()));
        }
        Shared {
            tenant_id: seed.tenant_id,
            tenant_name: seed.tenant_name,
            client_id: seed.client_id.clone(),
            db: Mutex::new(db),
            issuer: Mutex::new(OAuthIssuer::new(
                "xero",
                seed.client_id,
                seed.client_secret,
                Duration::from_secs(seed.access_token_seconds),
            )),
            minute: Mutex::new(RequestWindow::new(
                seed.requests_per_minute,
                Duration::from_secs(60),
            )),
            day: Mutex::new(RequestWindow::new(
                seed.requests_per_day,
                Duration::from_secs(86_400),
            )),
            max_concurrent: seed.max_concurrent,
            controls: Controls::default(),
            replays: Mutex::new(HashMap::new()),
            scopes: Mutex::new(HashMap::new()),
        }
    }
}

fn new_contact(name: &str, email: Option<&str>) -> Value {
    let mut c = json!({
        "ContactID": uuid::Uuid::new_v4().to_string(), "Name": name, "ContactStatus": "ACTIVE",
        "IsCustomer": true, "UpdatedDateUTC": now_ms(),
    });
    if let Some(e) = email {
        c["EmailAddress"] = json!(e);
    }
    c
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(dispatch).with_state(shared)
}

/// Xero's error body.
fn error(status: StatusCode, kind: &str, message: &str, validation: &[String]) -> Response {
    let mut body = json!({ "ErrorNumber": if status == StatusCode::NOT_FOUND { 17 } else { 10 }, "Type": kind, "Message": message });
    if !validation.is_empty() {
        body["Elements"] = json!([{ "ValidationErrors": validation.iter().map(|m| json!({ "Message": m })).collect::<Vec<_>>() }]);
    }
    (status, axum::Json(body)).into_response()
}

/// A write Xero refuses: a validation error, or an object that is not there.
struct Refused {
    status: StatusCode,
    validation: Vec<String>,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        if self.status == StatusCode::NOT_FOUND {
            return error(
                self.status,
                "NotFound",
                "The resource you're looking for cannot be found",
                &[],
            );
        }
        error(
            self.status,
            "ValidationException",
            "A validation exception occurred",
            &self.validation,
        )
    }
}

fn invalid(message: &str) -> Refused {
    Refused {
        status: StatusCode::BAD_REQUEST,
        validation: vec![message.to_owned()],
    }
}

fn not_found() -> Refused {
    Refused {
        status: StatusCode::NOT_FOUND,
        validation: vec![],
    }
}

async fn dispatch(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Paths are case-insensitive at Xero.
    let path = uri.path().to_ascii_lowercase();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (method.clone(), segments.as_slice()) {
        (Method::GET, ["identity", "connect", "authorize"]) => authorize(&shared, &params),
        (Method::POST, ["connect", "token"]) => token(&shared, &headers, &body),
        (Method::POST, ["connect", "revocation"]) => {
            let form = form(&body);
            lock(&shared.issuer).revoke(form.get("token").map(String::as_str).unwrap_or_default());
            StatusCode::OK.into_response()
        }
        (Method::GET, ["connections"]) => match bearer_tenant(&shared, &headers) {
            Some(_) => axum::Json(json!([{
                "id": uuid::Uuid::new_v4().to_string(), "authEventId": uuid::Uuid::new_v4().to_string(),
                "tenantId": shared.tenant_id, "tenantType": "ORGANISATION", "tenantName": shared.tenant_name,
                "createdDateUtc": chrono::Utc::now().to_rfc3339(), "updatedDateUtc": chrono::Utc::now().to_rfc3339(),
            }]))
            .into_response(),
            None => error(StatusCode::UNAUTHORIZED, "Unauthorized", "AuthenticationUnsuccessful", &[]),
        },
        (_, ["api.xro", "2.0", rest @ ..]) => api(&shared, method, rest, &params, &headers, &body).await,
        _ => error(StatusCode::NOT_FOUND, "NotFound", &format!("{} {} is not an endpoint of this sandbox", method, uri.path()), &[]),
    }
}

fn form(body: &[u8]) -> HashMap<String, String> {
    reqwest::Url::parse(&format!("http://x/?{}", String::from_utf8_lossy(body)))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

fn authorize(shared: &Shared, q: &HashMap<String, String>) -> Response {
    let (Some(redirect), Some(client)) = (q.get("redirect_uri"), q.get("client_id")) else {
        return (
            StatusCode::BAD_REQUEST,
            "redirect_uri and client_id are required",
        )
            .into_response();
    };
    if client != &shared.client_id {
        return (StatusCode::BAD_REQUEST, "unauthorized_client").into_response();
    }
    let Ok(mut url) = reqwest::Url::parse(redirect) else {
        return (StatusCode::BAD_REQUEST, "redirect_uri is not a URL").into_response();
    };
    let code = lock(&shared.issuer).authorize(&shared.tenant_id);
    if let Some(scope) = q.get("scope") {
        lock(&shared.scopes).insert(code.clone(), scope.clone());
    }
    url.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair(
            "scope",
            q.get("scope").map(String::as_str).unwrap_or_default(),
        )
        .append_pair(
            "state",
            q.get("state").map(String::as_str).unwrap_or_default(),
        );
    (StatusCode::FOUND, [(header::LOCATION, url.to_string())]).into_response()
}

fn token(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    use base64::Engine as _;
    let form = form(body);
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| t.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned())));
    let (id, secret) = basic.unwrap_or_else(|| {
        (
            form.get("client_id").cloned().unwrap_or_default(),
            form.get("client_secret").cloned().unwrap_or_default(),
        )
    });
    let mut issuer = lock(&shared.issuer);
    let refused = |e: TokenRefusal| {
        let code = match e {
            TokenRefusal::InvalidGrant => "invalid_grant",
            TokenRefusal::InvalidClient => "invalid_client",
        };
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": code })),
        )
            .into_response()
    };
    if let Err(e) = issuer.check_client(&id, &secret) {
        return refused(e);
    }
    const DEFAULT_SCOPE: &str =
        "offline_access accounting.transactions accounting.contacts accounting.settings.read";
    // The scope granted is the one consented to (kept by code, then by refresh token).
    let granted = |key: &str| {
        lock(&shared.scopes)
            .remove(key)
            .unwrap_or_else(|| DEFAULT_SCOPE.to_owned())
    };
    let issued = match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let code = form.get("code").map(String::as_str).unwrap_or_default();
            issuer.exchange(code, &granted(code))
        }
        // A custom connection: the app's own credentials reach its one organisation, with
        // no refresh token (a new access token is asked for the same way).
        Some("client_credentials") => {
            let code = issuer.authorize(&shared.tenant_id);
            return match issuer.exchange(&code, "accounting.transactions accounting.contacts") {
                Ok(t) => axum::Json(json!({
                    "access_token": t.access_token, "expires_in": t.expires_in,
                    "token_type": t.token_type, "scope": t.scope,
                }))
                .into_response(),
                Err(e) => refused(e),
            };
        }
        Some("refresh_token") => {
            let token = form
                .get("refresh_token")
                .map(String::as_str)
                .unwrap_or_default();
            issuer.refresh(token, &granted(token))
        }
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({ "error": "unsupported_grant_type" })),
            )
                .into_response();
        }
    };
    match issued {
        // Exactly the standard keys, as Xero answers.
        Ok(t) => {
            lock(&shared.scopes).insert(t.refresh_token.clone(), t.scope.clone());
            axum::Json(json!({
            "access_token": t.access_token, "expires_in": t.expires_in, "token_type": t.token_type,
            "refresh_token": t.refresh_token, "scope": t.scope,
            }))
            .into_response()
        }
        Err(e) => refused(e),
    }
}

fn bearer_tenant(shared: &Shared, headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    lock(&shared.issuer).tenant_of(bearer).map(str::to_owned)
}

fn with_limits(mut response: Response, minute: u32, day: u32) -> Response {
    let h = response.headers_mut();
    h.insert("x-minlimit-remaining", HeaderValue::from(minute));
    h.insert("x-daylimit-remaining", HeaderValue::from(day));
    h.insert("x-appminlimit-remaining", HeaderValue::from(9_999u32));
    response
}

fn throttled(shared: &Shared, problem: &'static str, wait: Duration) -> Response {
    shared.controls.count_throttled();
    let mut r = (StatusCode::TOO_MANY_REQUESTS, "").into_response();
    let h = r.headers_mut();
    h.insert(
        header::RETRY_AFTER,
        HeaderValue::from(wait.as_secs().max(1)),
    );
    h.insert("x-rate-limit-problem", HeaderValue::from_static(problem));
    r
}

async fn api(
    shared: &Shared,
    method: Method,
    rest: &[&str],
    params: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let Some(tenant) = bearer_tenant(shared, headers) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "AuthenticationUnsuccessful",
            &[],
        );
    };
    let asked = headers
        .get("xero-tenant-id")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if !asked.eq_ignore_ascii_case(&tenant) {
        return error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "AuthorizationUnsuccessful: the xero-tenant-id is missing or not connected to this token",
            &[],
        );
    }
    let minute = match lock(&shared.minute).admit(&tenant) {
        Ok(left) => left,
        Err(wait) => return throttled(shared, "minute", wait),
    };
    let day = match lock(&shared.day).admit(&tenant) {
        Ok(left) => left,
        Err(wait) => return throttled(shared, "day", wait),
    };
    let Some(_place) = shared.controls.enter(shared.max_concurrent) else {
        return throttled(shared, "concurrent", Duration::from_secs(1));
    };
    if shared.controls.delay_or_fail().await {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "injected by the sandbox",
            &[],
        );
    }
    let response = match (method.clone(), rest) {
        (Method::GET, [collection]) => list(shared, collection, params, headers),
        (Method::GET, [collection, id]) => one(shared, collection, id),
        (Method::PUT | Method::POST, [collection, id @ ..]) => {
            let key = headers
                .get("idempotency-key")
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned);
            if let Some(k) = &key {
                if k.len() > 128 {
                    return invalid("Idempotency-Key is longer than 128 characters")
                        .into_response();
                }
                if let Some(answer) = lock(&shared.replays).get(k).cloned() {
                    return with_limits(axum::Json(answer).into_response(), minute, day);
                }
            }
            match write(shared, &method, collection, id.first().copied(), body) {
                Ok(answer) => {
                    shared.controls.count_write();
                    if let Some(k) = key {
                        lock(&shared.replays).insert(k, answer.clone());
                    }
                    shared
                        .controls
                        .answer_write(axum::Json(answer).into_response())
                }
                Err(r) => r.into_response(),
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "The resource you're looking for cannot be found",
            &[],
        ),
    };
    with_limits(response, minute, day)
}

/// One clause of a `where` filter.
enum Clause {
    Equals(String, String, bool),
    Date(String, std::cmp::Ordering, bool, NaiveDate),
    /// `Field.StartsWith("x")`, `.EndsWith`, `.Contains` (the SDKs' text searches).
    Text(String, &'static str, String),
}

/// `Name.StartsWith("Acme")` as its field, method and value.
fn text_call(part: &str) -> Option<Result<Clause, String>> {
    ["StartsWith", "EndsWith", "Contains"]
        .iter()
        .find_map(|method| {
            let (field, rest) = part.split_once(&format!(".{method}("))?;
            let value = rest
                .trim_end()
                .strip_suffix(')')?
                .trim()
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .map(|v| v.replace("\\\"", "\""))
                .ok_or_else(|| format!("`{part}`: values are quoted with \""));
            Some(value.map(|v| Clause::Text(field.trim().to_owned(), method, v)))
        })
}

fn parse_where(filter: &str) -> Result<Vec<Clause>, String> {
    let mut out = Vec::new();
    for part in filter.split("&&").map(str::trim).filter(|p| !p.is_empty()) {
        if let Some(clause) = text_call(part) {
            out.push(clause?);
        } else if let Some((field, value)) = part.split_once("==").or_else(|| part.split_once("!="))
        {
            let negate = part.contains("!=");
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .ok_or_else(|| format!("`{part}`: values are quoted with \""))?
                .replace("\\\"", "\"");
            out.push(Clause::Equals(field.trim().to_owned(), value, negate));
        } else if let Some((field, rest, ord, or_equal)) = [
            (">=", std::cmp::Ordering::Greater, true),
            ("<=", std::cmp::Ordering::Less, true),
            (">", std::cmp::Ordering::Greater, false),
            ("<", std::cmp::Ordering::Less, false),
        ]
        .iter()
        .find_map(|(op, ord, eq)| part.split_once(op).map(|(f, r)| (f, r, *ord, *eq)))
        {
            let inner = rest
                .trim()
                .strip_prefix("DateTime(")
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| format!("`{part}`: compare dates with DateTime(y,m,d)"))?;
            let n: Vec<u32> = inner
                .split(',')
                .filter_map(|x| x.trim().parse().ok())
                .collect();
            let day = match n.as_slice() {
                [y, m, d, ..] => NaiveDate::from_ymd_opt(*y as i32, *m, *d),
                _ => None,
            }
            .ok_or_else(|| format!("`{part}`: not a date"))?;
            out.push(Clause::Date(field.trim().to_owned(), ord, or_equal, day));
        } else {
            return Err(format!("`{part}` is not a filter this sandbox understands"));
        }
    }
    Ok(out)
}

fn field<'a>(row: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(row, |v, k| v.get(k))
}

fn keep(row: &Value, clauses: &[Clause]) -> bool {
    clauses.iter().all(|c| match c {
        Clause::Equals(f, v, negate) => {
            let found = field(row, f).map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| x.to_string())
            });
            found.is_some_and(|x| x.eq_ignore_ascii_case(v)) != *negate
        }
        Clause::Text(f, method, v) => field(row, f).and_then(Value::as_str).is_some_and(|x| {
            let (x, v) = (x.to_lowercase(), v.to_lowercase());
            match *method {
                "StartsWith" => x.starts_with(&v),
                "EndsWith" => x.ends_with(&v),
                _ => x.contains(&v),
            }
        }),
        Clause::Date(f, ord, or_equal, day) => {
            let stored = field(row, &format!("{f}String"))
                .and_then(Value::as_str)
                .and_then(|s| crate::model::date(Some(s)));
            stored.is_some_and(|d| d.cmp(day) == *ord || (*or_equal && d == *day))
        }
    })
}

fn collection_of<'a>(
    db: &'a mut Db,
    name: &str,
) -> Option<(&'a mut Vec<Value>, &'static str, &'static str)> {
    match name {
        "contacts" => Some((&mut db.contacts, "Contacts", "ContactID")),
        "invoices" => Some((&mut db.invoices, "Invoices", "InvoiceID")),
        "items" => Some((&mut db.items, "Items", "ItemID")),
        _ => None,
    }
}

/// Milliseconds since the epoch of a `/Date(…)/` value.
fn ms_of(value: Option<&Value>) -> Option<i64> {
    let inner = value?
        .as_str()?
        .strip_prefix("/Date(")?
        .strip_suffix(")/")?;
    inner.split(['+', '-']).next()?.parse().ok()
}

/// `If-Modified-Since` as the SDKs send it: ISO 8601 (with or without an offset; UTC when
/// without) or an HTTP date.
fn modified_since(headers: &HeaderMap) -> Result<Option<i64>, String> {
    let Some(raw) = headers.get(header::IF_MODIFIED_SINCE) else {
        return Ok(None);
    };
    let raw = raw
        .to_str()
        .map_err(|_| "If-Modified-Since is not text".to_owned())?
        .trim();
    chrono::DateTime::parse_from_rfc3339(raw)
        .or_else(|_| chrono::DateTime::parse_from_rfc2822(raw))
        .map(|t| t.timestamp_millis())
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f")
                .map(|t| t.and_utc().timestamp_millis())
        })
        .map(Some)
        .map_err(|_| format!("If-Modified-Since `{raw}` is not a date"))
}

/// `order=Name DESC` (one field; ASC when no direction is given).
fn order_rows(rows: &mut [Value], order: &str) -> Result<(), String> {
    let mut words = order.split_whitespace();
    let key = words.next().ok_or("order names no field")?.to_owned();
    let descending = match words.next().map(str::to_ascii_uppercase).as_deref() {
        None | Some("ASC") => false,
        Some("DESC") => true,
        Some(other) => return Err(format!("order direction `{other}` is not ASC or DESC")),
    };
    let sort_key = |r: &Value| {
        field(r, &key).map(|v| {
            v.as_str()
                .map(str::to_lowercase)
                .unwrap_or_else(|| v.to_string())
        })
    };
    rows.sort_by(|a, b| {
        let ord = sort_key(a).cmp(&sort_key(b));
        if descending { ord.reverse() } else { ord }
    });
    Ok(())
}

fn list(
    shared: &Shared,
    collection: &str,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    let since = match modified_since(headers) {
        Ok(s) => s,
        Err(e) => return invalid(&e).into_response(),
    };
    let clauses = match params.get("where").map(|w| parse_where(w)).transpose() {
        Ok(c) => c.unwrap_or_default(),
        Err(e) => return invalid(&e).into_response(),
    };
    let ids: Option<Vec<String>> = params.get("ids").or_else(|| params.get("IDs")).map(|s| {
        s.split(',')
            .map(|x| x.trim().to_ascii_lowercase())
            .collect()
    });
    // Xero pages only when `page` is asked for; without it a list comes whole.
    let page: Option<usize> = params
        .get("page")
        .and_then(|p| p.parse().ok())
        .map(|p: usize| p.max(1));
    let size: usize = params
        .get("pageSize")
        .and_then(|p| p.parse().ok())
        .unwrap_or(100)
        .clamp(1, 1000);
    let mut db = lock(&shared.db);
    let Some((rows, name, id_field)) = collection_of(&mut db, collection) else {
        return error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "The resource you're looking for cannot be found",
            &[],
        );
    };
    let mut found: Vec<Value> = rows
        .iter()
        .filter(|r| keep(r, &clauses))
        .filter(|r| {
            ids.as_ref().is_none_or(|ids| {
                text(r, id_field).is_some_and(|id| ids.contains(&id.to_ascii_lowercase()))
            })
        })
        .filter(|r| since.is_none_or(|t| ms_of(r.get("UpdatedDateUTC")).is_some_and(|u| u > t)))
        .cloned()
        .collect();
    if let Some(order) = params.get("order")
        && let Err(e) = order_rows(&mut found, order)
    {
        return invalid(&e).into_response();
    }
    let mut answer =
        json!({ "Id": uuid::Uuid::new_v4().to_string(), "Status": "OK", "DateTimeUTC": now_ms() });
    if let Some(page) = page {
        let item_count = found.len();
        answer["pagination"] = json!({
            "page": page, "pageSize": size, "pageCount": item_count.div_ceil(size), "itemCount": item_count,
        });
        found = found
            .into_iter()
            .skip((page - 1) * size)
            .take(size)
            .collect();
    }
    answer[name] = Value::Array(found);
    axum::Json(answer).into_response()
}

fn one(shared: &Shared, collection: &str, id: &str) -> Response {
    let mut db = lock(&shared.db);
    let Some((rows, name, id_field)) = collection_of(&mut db, collection) else {
        return error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "The resource you're looking for cannot be found",
            &[],
        );
    };
    match rows
        .iter()
        .find(|r| text(r, id_field).is_some_and(|x| x.eq_ignore_ascii_case(id)))
    {
        Some(row) => axum::Json(json!({ "Status": "OK", name: [row] })).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "The resource you're looking for cannot be found",
            &[],
        ),
    }
}

/// Totals as Xero keeps them (without tax: the sandbox does not compute tax).
fn totals(invoice: &mut Value) {
    let total: Decimal = invoice["LineItems"]
        .as_array()
        .map(|ls| ls.iter().filter_map(|l| decimal(l.get("LineAmount"))).sum())
        .unwrap_or_default();
    let paid = decimal(invoice.get("AmountPaid")).unwrap_or_default();
    invoice["SubTotal"] = number(total);
    invoice["TotalTax"] = json!(0);
    invoice["Total"] = number(total);
    invoice["AmountDue"] = number(total - paid);
}

/// Dates are sent as ISO text and kept both ways, as Xero answers them.
fn set_date(invoice: &mut Value, key: &str) -> Result<(), Refused> {
    let Some(raw) = invoice.get(key).and_then(Value::as_str).map(str::to_owned) else {
        return Ok(());
    };
    let day = crate::model::date(Some(&raw))
        .ok_or_else(|| invalid(&format!("{key} `{raw}` is not a date")))?;
    invoice[key] = json!(ms_date(day));
    invoice[format!("{key}String")] = json!(format!("{day}T00:00:00"));
    Ok(())
}

fn check_lines(db: &Db, invoice: &mut Value) -> Result<(), Refused> {
    let Some(lines) = invoice.get_mut("LineItems").and_then(Value::as_array_mut) else {
        return Ok(());
    };
    for line in lines.iter_mut() {
        if let Some(code) = text(line, "ItemCode")
            && !db
                .items
                .iter()
                .any(|i| text(i, "Code").is_some_and(|c| c.eq_ignore_ascii_case(code)))
        {
            return Err(invalid(&format!("Item code '{code}' is not valid")));
        }
        let qty = decimal(line.get("Quantity")).unwrap_or(Decimal::ONE);
        let price = decimal(line.get("UnitAmount")).unwrap_or_default();
        let expected =
            (qty * price).round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
        if let Some(given) = decimal(line.get("LineAmount"))
            && given != expected
        {
            return Err(invalid(&format!(
                "The line total {given} does not match the expected line total {expected}"
            )));
        }
        line["LineAmount"] = number(expected);
        line["Quantity"] = number(qty);
        line["UnitAmount"] = number(price);
        if line.get("LineItemID").is_none() {
            line["LineItemID"] = json!(uuid::Uuid::new_v4().to_string());
        }
    }
    Ok(())
}

fn write(
    shared: &Shared,
    method: &Method,
    collection: &str,
    id: Option<&str>,
    body: &[u8],
) -> Result<Value, Refused> {
    let incoming: Value =
        serde_json::from_slice(body).map_err(|e| invalid(&format!("the body is not JSON: {e}")))?;
    let (name, id_field) = match collection {
        "contacts" => ("Contacts", "ContactID"),
        "invoices" => ("Invoices", "InvoiceID"),
        _ => {
            return Err(not_found());
        }
    };
    // `{"Invoices": [..]}` or one object.
    let items: Vec<Value> = match incoming.get(name).and_then(Value::as_array) {
        Some(a) => a.clone(),
        None => vec![incoming],
    };
    let mut db = lock(&shared.db);
    let mut saved = Vec::new();
    for mut item in items {
        if let Some(id) = id {
            item[id_field] = json!(id);
        }
        let existing = text(&item, id_field).map(str::to_owned);
        if existing.is_some() && *method == Method::PUT {
            return Err(invalid("PUT creates; update an existing object with POST"));
        }
        saved.push(if name == "Contacts" {
            write_contact(&mut db, item, existing)?
        } else {
            write_invoice(&mut db, item, existing)?
        });
    }
    Ok(
        json!({ "Id": uuid::Uuid::new_v4().to_string(), "Status": "OK", "DateTimeUTC": now_ms(), name: saved }),
    )
}

fn write_contact(db: &mut Db, item: Value, existing: Option<String>) -> Result<Value, Refused> {
    let name = text(&item, "Name").map(str::to_owned);
    if let Some(n) = &name
        && db.contacts.iter().any(|c| {
            text(c, "Name").is_some_and(|x| x.eq_ignore_ascii_case(n))
                && text(c, "ContactID") != existing.as_deref()
        })
    {
        return Err(invalid(&format!(
            "The contact name {n} is already assigned to another contact. The contact name must be unique across all active contacts."
        )));
    }
    match existing {
        None => {
            let n = name.ok_or_else(|| invalid("The contact name must be specified"))?;
            let c = new_contact(&n, text(&item, "EmailAddress"));
            db.contacts.push(c.clone());
            Ok(c)
        }
        Some(id) => {
            let c = db
                .contacts
                .iter_mut()
                .find(|c| text(c, "ContactID") == Some(id.as_str()))
                .ok_or_else(|| invalid(&format!("contact {id} does not exist")))?;
            if let (Some(t), Some(f)) = (c.as_object_mut(), item.as_object()) {
                t.extend(f.clone());
            }
            c["UpdatedDateUTC"] = json!(now_ms());
            Ok(c.clone())
        }
    }
}

fn write_invoice(db: &mut Db, mut item: Value, existing: Option<String>) -> Result<Value, Refused> {
    check_lines(db, &mut item)?;
    set_date(&mut item, "Date")?;
    set_date(&mut item, "DueDate")?;
    match existing {
        None => {
            let contact = item["Contact"]["ContactID"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if !db
                .contacts
                .iter()
                .any(|c| text(c, "ContactID") == Some(contact.as_str()))
            {
                return Err(invalid("Contact: a valid ContactID must be given"));
            }
            if !matches!(text(&item, "Type"), Some("ACCREC" | "ACCPAY")) {
                return Err(invalid("Type must be ACCREC or ACCPAY"));
            }
            db.numbers += 1;
            item["InvoiceID"] = json!(uuid::Uuid::new_v4().to_string());
            item["InvoiceNumber"] = json!(format!("INV-{:04}", db.numbers));
            if item.get("Status").is_none() {
                item["Status"] = json!("DRAFT");
            }
            if item.get("LineAmountTypes").is_none() {
                item["LineAmountTypes"] = json!("Exclusive");
            }
            item["AmountPaid"] = json!(0);
            item["UpdatedDateUTC"] = json!(now_ms());
            if item.get("LineItems").is_none() {
                item["LineItems"] = json!([]);
            }
            totals(&mut item);
            db.invoices.push(item.clone());
            Ok(item)
        }
        Some(id) => {
            let current = db
                .invoices
                .iter_mut()
                .find(|i| text(i, "InvoiceID").is_some_and(|x| x.eq_ignore_ascii_case(&id)))
                .ok_or_else(not_found)?;
            if matches!(text(current, "Status"), Some("PAID" | "VOIDED" | "DELETED")) {
                return Err(invalid(
                    "This document cannot be edited as it has a payment or credit note allocated to it, or it is voided or deleted.",
                ));
            }
            if let (Some(t), Some(f)) = (current.as_object_mut(), item.as_object()) {
                for (k, v) in f {
                    if !matches!(
                        k.as_str(),
                        "InvoiceNumber" | "AmountPaid" | "Total" | "SubTotal" | "AmountDue"
                    ) {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
            current["UpdatedDateUTC"] = json!(now_ms());
            totals(current);
            Ok(current.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_filters_parse_equality_and_dates() {
        let clauses = parse_where(
            r#"Type=="ACCREC"&&Reference=="rollcall \"Acme\" 2026-11"&&Date>=DateTime(2026,11,01)"#,
        )
        .expect("parse");
        assert_eq!(clauses.len(), 3);
        assert!(
            matches!(&clauses[1], Clause::Equals(f, v, false) if f == "Reference" && v == "rollcall \"Acme\" 2026-11")
        );
        let text = parse_where(r#"Name.StartsWith("Acme \"Q\"")&&EmailAddress.Contains("@")"#)
            .expect("text calls");
        assert!(
            matches!(&text[0], Clause::Text(f, "StartsWith", v) if f == "Name" && v == "Acme \"Q\"")
        );
        let row = json!({ "Name": "ACME \"q\" Ltd", "EmailAddress": "a@b" });
        assert!(text.iter().all(|c| keep(&row, std::slice::from_ref(c))));
        assert!(parse_where("Name.StartsWith(Acme)").is_err(), "unquoted");
        assert!(parse_where("Name.Matches(\"x\")").is_err());
    }

    #[test]
    fn if_modified_since_reads_the_forms_sdks_send() {
        let at = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::IF_MODIFIED_SINCE,
                HeaderValue::from_str(v).expect("header"),
            );
            modified_since(&h)
        };
        let utc = Ok(Some(1_709_164_800_000));
        assert_eq!(at("2024-02-29T00:00:00"), utc, "naive is UTC");
        assert_eq!(at("2024-02-29T00:00:00Z"), utc);
        assert_eq!(at("2024-02-29T01:00:00+01:00"), utc);
        assert_eq!(at("Thu, 29 Feb 2024 00:00:00 GMT"), utc);
        assert!(at("yesterday").is_err());
        assert_eq!(modified_since(&HeaderMap::new()), Ok(None));
    }

    #[test]
    fn order_sorts_text_without_case_and_refuses_odd_directions() {
        let mut rows = vec![
            json!({ "Name": "b" }),
            json!({ "Name": "A" }),
            json!({ "Name": "c" }),
        ];
        order_rows(&mut rows, "Name DESC").expect("order");
        let names: Vec<_> = rows.iter().filter_map(|r| text(r, "Name")).collect();
        assert_eq!(names, ["c", "b", "A"]);
        assert!(order_rows(&mut rows, "Name SIDEWAYS").is_err());
        assert!(order_rows(&mut rows, "").is_err());
    }
}
