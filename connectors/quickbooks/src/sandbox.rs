//! A stateful stand-in for QuickBooks Online and Intuit's OAuth2 server, for tests and demos.
//!
//! It follows the contract a client (rollcall's, or Intuit's own SDKs) depends on: OAuth
//! discovery, consent, tokens that expire and refresh tokens that rotate, the query language
//! subset clients send (`select *|count(*) from X where F = 'v' [and …] ORDERBY f [DESC]
//! STARTPOSITION n MAXRESULTS m`, by GET or by `POST /query` with `application/text`; an empty
//! answer is an empty `QueryResponse`), change data capture (`/cdc`), `SyncToken` optimistic
//! concurrency (5010),
//! `requestid` replay, `minorversion`, the fault bodies, 500 requests a minute and 10 at once per
//! company (429 `ThrottleExceeded`). Money and quantities are accepted as JSON numbers or strings.
//!
//! Knowingly simpler than QuickBooks: no sales tax calculation (`TaxCodeRef` is stored as
//! sent), no multi-currency, no sub-customers, no discount or group lines, invoice numbering
//! is left to the client, and consent is approved at once (a seed can make it refuse). Like
//! QuickBooks, it lets a sent or paid invoice be edited: refusing that is rollcall's rule.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use rollcall_core::Secret;
use rollcall_core::json_number as number;
use rollcall_core::oauth::TokenSet;
use rollcall_core::sandbox::{Controls, OAuthIssuer, RequestWindow, SandboxServer, TokenRefusal};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::Config;
use crate::model::{decimal, text};

/// What a sandbox starts with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    pub realm_id: String,
    pub client_id: String,
    pub client_secret: String,
    /// Items (products and services) by name with their price.
    pub items: Vec<(String, Decimal)>,
    /// Customers by display name, with an email.
    #[serde(default)]
    pub customers: Vec<(String, Option<String>)>,
    #[serde(default = "default_per_minute")]
    pub requests_per_minute: u32,
    #[serde(default = "default_concurrent")]
    pub max_concurrent: usize,
    #[serde(default = "default_access_ttl")]
    pub access_token_seconds: u64,
}

fn default_per_minute() -> u32 {
    500
}
fn default_concurrent() -> usize {
    10
}
fn default_access_ttl() -> u64 {
    3600
}

impl Seed {
    /// A company with the demo pipeline's items.
    pub fn demo() -> Seed {
        let price = |s: &str| s.parse::<Decimal>().unwrap_or_default();
        Seed {
            realm_id: "9130350000000001".into(),
            client_id: "demo-qbo-client".into(),
            client_secret: "demo-qbo-secret".into(),
            items: vec![
                ("HELPDESK-USER".into(), price("35.00")),
                ("M365-BP".into(), price("22.00")),
                ("SEC-AWARE".into(), price("3.50")),
                ("PROJECT".into(), price("120.00")),
            ],
            customers: vec![("Globex Corporation".into(), Some("ap@globex.test".into()))],
            requests_per_minute: default_per_minute(),
            max_concurrent: default_concurrent(),
            access_token_seconds: default_access_ttl(),
        }
    }
}

#[derive(Debug, Default)]
struct Db {
    next_id: u64,
    customers: Vec<Value>,
    items: Vec<Value>,
    invoices: Vec<Value>,
}

struct Shared {
    realm: String,
    client_id: String,
    db: Mutex<Db>,
    issuer: Mutex<OAuthIssuer>,
    window: Mutex<RequestWindow>,
    max_concurrent: usize,
    controls: Controls,
    deny_consent: std::sync::atomic::AtomicBool,
    /// Answers to writes by `requestid`, replayed when the id comes again.
    replays: Mutex<HashMap<String, Value>>,
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
            Err(e) => panic!("the QuickBooks sandbox could not start: {e}"),
        }
    }

    pub async fn start_on(addr: SocketAddr, seed: Seed) -> std::io::Result<Sandbox> {
        let shared = Arc::new(Shared::new(seed));
        let server = SandboxServer::start(addr, router(shared.clone()), "quickbooks").await?;
        Ok(Sandbox { server, shared })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    pub fn realm_id(&self) -> String {
        self.shared.realm.clone()
    }

    /// A target section that reaches this sandbox, its tokens under `connection`.
    pub fn config(&self, connection: &str) -> Config {
        let url = self.url();
        Config {
            url: url.clone(),
            client_id: self.shared.client_id.clone(),
            client_secret: Secret::new(lock(&self.shared.issuer).client_secret().to_owned()),
            authorize_url: format!("{url}/connect/oauth2"),
            token_url: format!("{url}/oauth2/v1/tokens/bearer"),
            connection: connection.into(),
            realm_id: None,
            minor_version: 75,
            tax_code: None,
            requests_per_minute: 500,
            max_concurrent: 10,
        }
    }

    /// Tokens as a completed consent would give them (what `rollcall connect` stores).
    pub fn connect(&self) -> TokenSet {
        let mut issuer = lock(&self.shared.issuer);
        let code = issuer.authorize(&self.shared.realm);
        let issued = issuer
            .exchange(&code, "com.intuit.quickbooks.accounting")
            .unwrap_or_else(|_| unreachable!("a fresh code is always accepted"));
        TokenSet {
            access_token: issued.access_token,
            refresh_token: issued.refresh_token,
            expires_at: chrono::Utc::now() + chrono::Duration::seconds(issued.expires_in as i64),
            scope: Some(issued.scope),
            tenant: Some(self.shared.realm.clone()),
        }
    }

    /// Fault injection and counters (requests, writes, 429s answered).
    pub fn controls(&self) -> &Controls {
        &self.shared.controls
    }
    /// Refresh-token grants answered.
    pub fn refreshes(&self) -> u64 {
        lock(&self.shared.issuer).refreshes
    }
    pub fn invoices(&self) -> Vec<Value> {
        lock(&self.shared.db).invoices.clone()
    }
    pub fn customers(&self) -> Vec<Value> {
        lock(&self.shared.db).customers.clone()
    }
    /// The user disconnects the app: every token stops working.
    pub fn revoke_all(&self) {
        lock(&self.shared.issuer).revoke_all();
    }
    /// Access tokens expire now; the next call must refresh.
    pub fn expire_access_tokens(&self) {
        lock(&self.shared.issuer).expire_access_tokens();
    }
    /// Consent is refused (`error=access_denied`).
    pub fn deny_consent(&self, deny: bool) {
        self.shared
            .deny_consent
            .store(deny, std::sync::atomic::Ordering::SeqCst);
    }
    /// The per-minute limit (for tests that must reach it quickly).
    pub fn limit_rate(&self, per_window: u32, window: Duration) {
        *lock(&self.shared.window) = RequestWindow::new(per_window, window);
    }
    /// Marks an invoice as emailed to the customer, as a person sending it would.
    pub fn send_invoice(&self, doc_number: &str) {
        self.edit_invoice(doc_number, |i| i["EmailStatus"] = json!("EmailSent"));
    }
    /// Records a payment against an invoice.
    pub fn pay_invoice(&self, doc_number: &str, amount: Decimal) {
        self.edit_invoice(doc_number, |i| {
            let balance = decimal(i.get("Balance")).unwrap_or_default() - amount;
            i["Balance"] = number(balance);
        });
    }
    /// A person adds a line to a draft by hand (a one-off charge).
    pub fn add_line(&self, doc_number: &str, item: &str, quantity: Decimal, description: &str) {
        let item = lock(&self.shared.db)
            .items
            .iter()
            .find(|i| text(i, "Name") == Some(item))
            .cloned();
        let Some(item) = item else { return };
        let price = decimal(item.get("UnitPrice")).unwrap_or_default();
        self.edit_invoice(doc_number, |i| {
            if let Some(lines) = i.get_mut("Line").and_then(Value::as_array_mut) {
                lines.retain(|l| text(l, "DetailType") != Some("SubTotalLineDetail"));
                lines.push(json!({
                    "DetailType": "SalesItemLineDetail",
                    "Amount": number(quantity * price),
                    "Description": description,
                    "SalesItemLineDetail": {
                        "ItemRef": { "value": item["Id"], "name": item["Name"] },
                        "Qty": number(quantity),
                        "UnitPrice": number(price),
                    }
                }));
            }
            finish_invoice(i, Decimal::ZERO);
        });
    }

    fn edit_invoice(&self, doc_number: &str, edit: impl FnOnce(&mut Value)) {
        let mut db = lock(&self.shared.db);
        if let Some(invoice) = db
            .invoices
            .iter_mut()
            .find(|i| text(i, "DocNumber") == Some(doc_number) || text(i, "Id") == Some(doc_number))
        {
            edit(invoice);
            bump_sync_token(invoice);
        }
    }
}

/// Serves a sandbox on `addr` until Ctrl-C, for `rollcall sandbox quickbooks`.
pub async fn run_standalone(addr: SocketAddr, seed: Seed) -> std::io::Result<()> {
    let shared = Arc::new(Shared::new(seed));
    rollcall_core::sandbox::serve_until(addr, router(shared), async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}

impl Shared {
    fn new(seed: Seed) -> Shared {
        let mut db = Db::default();
        for (name, price) in &seed.items {
            db.next_id += 1;
            db.items.push(json!({
                "Id": db.next_id.to_string(), "SyncToken": "0", "Name": name, "Type": "Service",
                "Active": true, "UnitPrice": number(*price),
                "IncomeAccountRef": { "value": "1", "name": "Services" },
            }));
        }
        for (name, email) in &seed.customers {
            db.next_id += 1;
            let mut c = json!({
                "Id": db.next_id.to_string(), "SyncToken": "0", "DisplayName": name,
                "Active": true, "Balance": 0,
            });
            if let Some(e) = email {
                c["PrimaryEmailAddr"] = json!({ "Address": e });
            }
            db.customers.push(c);
        }
        Shared {
            realm: seed.realm_id,
            client_id: seed.client_id.clone(),
            db: Mutex::new(db),
            issuer: Mutex::new(OAuthIssuer::new(
                "qbo",
                seed.client_id,
                seed.client_secret,
                Duration::from_secs(seed.access_token_seconds),
            )),
            window: Mutex::new(RequestWindow::new(
                seed.requests_per_minute,
                Duration::from_secs(60),
            )),
            max_concurrent: seed.max_concurrent,
            controls: Controls::default(),
            deny_consent: std::sync::atomic::AtomicBool::new(false),
            replays: Mutex::new(HashMap::new()),
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/.well-known/openid_sandbox_configuration", get(discovery))
        .route("/.well-known/openid_configuration", get(discovery))
        .route("/connect/oauth2", get(authorize))
        .route("/oauth2/v1/tokens/bearer", post(token))
        .route("/oauth2/v1/tokens/revoke", post(revoke))
        .route("/v3/company/{realm}/{*rest}", any(api))
        .with_state(shared)
}

fn fault(status: StatusCode, kind: &str, code: &str, message: &str, detail: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "Fault": { "Error": [{ "Message": message, "Detail": detail, "code": code, "element": "" }], "type": kind },
            "time": chrono::Utc::now().to_rfc3339(),
        })),
    )
        .into_response()
}

async fn discovery(State(_): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let base = format!("http://{host}");
    axum::Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/connect/oauth2"),
        "token_endpoint": format!("{base}/oauth2/v1/tokens/bearer"),
        "revocation_endpoint": format!("{base}/oauth2/v1/tokens/revoke"),
        "userinfo_endpoint": format!("{base}/v1/openid_connect/userinfo"),
        "jwks_uri": format!("{base}/oauth2/v1/keys"),
        "response_types_supported": ["code"],
        "scopes_supported": ["openid", "email", "profile", "address", "phone", "com.intuit.quickbooks.accounting"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
    }))
    .into_response()
}

async fn authorize(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(redirect) = q.get("redirect_uri") else {
        return (StatusCode::BAD_REQUEST, "redirect_uri is required").into_response();
    };
    if q.get("client_id") != Some(&shared.client_id) {
        return (StatusCode::BAD_REQUEST, "unknown client_id").into_response();
    }
    let state = q.get("state").cloned().unwrap_or_default();
    let mut url = match reqwest::Url::parse(redirect) {
        Ok(u) => u,
        Err(_) => return (StatusCode::BAD_REQUEST, "redirect_uri is not a URL").into_response(),
    };
    if shared
        .deny_consent
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        url.query_pairs_mut()
            .append_pair("error", "access_denied")
            .append_pair("state", &state);
    } else {
        let code = lock(&shared.issuer).authorize(&shared.realm);
        url.query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", &state)
            .append_pair("realmId", &shared.realm);
    }
    (StatusCode::FOUND, [(header::LOCATION, url.to_string())]).into_response()
}

/// The client's credentials from HTTP Basic, else from the form.
fn client_credentials(headers: &HeaderMap, form: &HashMap<String, String>) -> (String, String) {
    let decode_basic = |encoded: &str| {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (id, secret) = text.split_once(':')?;
        Some((id.to_owned(), secret.to_owned()))
    };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(decode_basic)
        .unwrap_or_else(|| {
            (
                form.get("client_id").cloned().unwrap_or_default(),
                form.get("client_secret").cloned().unwrap_or_default(),
            )
        })
}

async fn token(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let form: HashMap<String, String> =
        reqwest::Url::parse(&format!("http://x/?{}", String::from_utf8_lossy(&body)))
            .map(|u| u.query_pairs().into_owned().collect())
            .unwrap_or_default();
    let (id, secret) = client_credentials(&headers, &form);
    let mut issuer = lock(&shared.issuer);
    let refused = |e: TokenRefusal| {
        let (status, code) = match e {
            TokenRefusal::InvalidGrant => (StatusCode::BAD_REQUEST, "invalid_grant"),
            TokenRefusal::InvalidClient => (StatusCode::UNAUTHORIZED, "invalid_client"),
        };
        (status, axum::Json(json!({ "error": code }))).into_response()
    };
    if let Err(e) = issuer.check_client(&id, &secret) {
        return refused(e);
    }
    let scope = "com.intuit.quickbooks.accounting";
    let issued = match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => issuer.exchange(
            form.get("code").map(String::as_str).unwrap_or_default(),
            scope,
        ),
        Some("refresh_token") => issuer.refresh(
            form.get("refresh_token")
                .map(String::as_str)
                .unwrap_or_default(),
            scope,
        ),
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({ "error": "unsupported_grant_type" })),
            )
                .into_response();
        }
    };
    match issued {
        Ok(t) => axum::Json(json!({
            "access_token": t.access_token,
            "refresh_token": t.refresh_token,
            "expires_in": t.expires_in,
            "x_refresh_token_expires_in": 8_640_000,
            "token_type": "bearer",
        }))
        .into_response(),
        Err(e) => refused(e),
    }
}

async fn revoke(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let token = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("token").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default();
    lock(&shared.issuer).revoke(&token);
    StatusCode::OK.into_response()
}

async fn api(
    State(shared): State<Arc<Shared>>,
    Path((realm, rest)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    if lock(&shared.issuer).tenant_of(&bearer) != Some(realm.as_str()) || realm != shared.realm {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "fault": { "error": [{ "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401", "detail": "Token expired or invalid", "code": "3200" }], "type": "AUTHENTICATION" } })),
        )
            .into_response();
    }
    let throttle = |shared: &Shared, detail: &str| {
        shared.controls.count_throttled();
        fault(
            StatusCode::TOO_MANY_REQUESTS,
            "SERVICE",
            "003001",
            "message=ThrottleExceeded; errorCode=003001; statusCode=429",
            detail,
        )
    };
    if lock(&shared.window).admit(&realm).is_err() {
        return throttle(&shared, "The request limit was reached.");
    }
    let Some(_place) = shared.controls.enter(shared.max_concurrent) else {
        return throttle(&shared, "Too many concurrent requests.");
    };
    if shared.controls.delay_or_fail().await {
        return fault(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SystemFault",
            "10000",
            "An application error has occurred while processing your request",
            "injected by the sandbox",
        );
    }
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match (method.clone(), segments.as_slice()) {
        (Method::GET, ["query"]) => query(
            &shared,
            params.get("query").map(String::as_str).unwrap_or_default(),
        ),
        (Method::POST, ["query"]) => query(&shared, &String::from_utf8_lossy(&body)),
        (Method::GET, ["cdc"]) => change_data_capture(&shared, &params),
        (Method::GET, [entity, id]) => read_one(&shared, entity, id),
        (Method::POST, [entity]) => {
            let request_id = params.get("requestid").cloned();
            if let Some(rid) = &request_id
                && let Some(answer) = lock(&shared.replays).get(rid).cloned()
            {
                return axum::Json(answer).into_response();
            }
            let result = write(&shared, entity, &body);
            match result {
                Ok(answer) => {
                    shared.controls.count_write();
                    if let Some(rid) = request_id {
                        lock(&shared.replays).insert(rid, answer.clone());
                    }
                    shared
                        .controls
                        .answer_write(axum::Json(answer).into_response())
                }
                Err(refused) => refused.into_response(),
            }
        }
        _ => fault(
            StatusCode::BAD_REQUEST,
            "ValidationFault",
            "4000",
            "Unsupported operation",
            &format!("{method} {rest} is not an operation of this sandbox"),
        ),
    }
}

fn collection<'a>(db: &'a mut Db, entity: &str) -> Option<(&'a mut Vec<Value>, &'static str)> {
    match entity.to_ascii_lowercase().as_str() {
        "customer" => Some((&mut db.customers, "Customer")),
        "item" => Some((&mut db.items, "Item")),
        "invoice" => Some((&mut db.invoices, "Invoice")),
        _ => None,
    }
}

fn read_one(shared: &Shared, entity: &str, id: &str) -> Response {
    let mut db = lock(&shared.db);
    let Some((rows, name)) = collection(&mut db, entity) else {
        return fault(
            StatusCode::BAD_REQUEST,
            "ValidationFault",
            "4000",
            "Unsupported entity",
            entity,
        );
    };
    match rows.iter().find(|r| text(r, "Id") == Some(id)) {
        Some(row) => axum::Json(keyed(name, row.clone())).into_response(),
        None => fault(
            StatusCode::BAD_REQUEST,
            "ValidationFault",
            "610",
            "Object Not Found",
            &format!(
                "Object Not Found : Something you're trying to use has been made inactive. Check the fields with accounts, customers, items, vendors or employees. ({name} {id})"
            ),
        ),
    }
}

/// One condition of a query's `where`: `Field = 'value'`, `Field LIKE 'a%'`, `Field IN ('a','b')`.
#[derive(Debug)]
enum Condition {
    Equals(String, String),
    /// `>=` (true) or `<=` (false), compared as text: dates are ISO.
    Bound(String, String, bool),
    Like(String, String),
    In(String, Vec<String>),
}

/// A parsed query: what to read, which rows, in which order, which page.
#[derive(Debug)]
struct Select {
    entity: String,
    /// `select count(*)`: the answer is `totalCount` alone.
    count: bool,
    conditions: Vec<Condition>,
    /// The field and whether descending.
    order: Option<(String, bool)>,
    start: usize,
    max: usize,
}

/// Parses the subset of Intuit's query language clients send.
fn parse_query(q: &str) -> Result<Select, String> {
    let tokens = tokenize(q)?;
    let mut tokens = tokens.into_iter().peekable();
    let word = |t: Option<String>, want: &str| match t {
        Some(t) if t.eq_ignore_ascii_case(want) => Ok(()),
        other => Err(format!("expected `{want}`, found {other:?}")),
    };
    word(tokens.next(), "select")?;
    let count = match tokens.next().as_deref() {
        Some("*") => {
            // `select *, Sku from Item`: fields named beside `*` are in `*` already.
            while tokens.next_if(|t| t == ",").is_some() {
                tokens.next();
            }
            false
        }
        Some(c) if c.eq_ignore_ascii_case("count") => {
            for want in ["(", "*", ")"] {
                word(tokens.next(), want)?;
            }
            true
        }
        _ => return Err("only `select *` and `select count(*)` are supported".into()),
    };
    word(tokens.next(), "from")?;
    let mut order = None;
    let entity = tokens.next().ok_or("no entity after `from`")?;
    let mut conditions = Vec::new();
    let (mut start, mut max) = (1usize, 100usize);
    while let Some(t) = tokens.next() {
        match t.to_ascii_lowercase().as_str() {
            "where" | "and" => {
                let field = tokens.next().ok_or("no field")?;
                let op = tokens.next().ok_or("no operator")?;
                match op.to_ascii_lowercase().as_str() {
                    "=" => conditions.push(Condition::Equals(
                        field,
                        unquote(&tokens.next().ok_or("no value")?)?,
                    )),
                    ">=" | "<=" => conditions.push(Condition::Bound(
                        field,
                        unquote(&tokens.next().ok_or("no value")?)?,
                        op == ">=",
                    )),
                    "like" => conditions.push(Condition::Like(
                        field,
                        unquote(&tokens.next().ok_or("no value")?)?,
                    )),
                    "in" => {
                        let mut values = Vec::new();
                        if tokens.next().as_deref() != Some("(") {
                            return Err("expected `(` after IN".into());
                        }
                        loop {
                            match tokens.next() {
                                Some(t) if t == ")" => break,
                                Some(t) if t == "," => continue,
                                Some(t) => values.push(unquote(&t)?),
                                None => return Err("unclosed IN list".into()),
                            }
                        }
                        conditions.push(Condition::In(field, values));
                    }
                    other => {
                        return Err(format!(
                            "operator `{other}` is not supported by the sandbox"
                        ));
                    }
                }
            }
            "startposition" => {
                start = tokens
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("STARTPOSITION needs a number")?
            }
            "maxresults" => {
                max = tokens
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("MAXRESULTS needs a number")?;
                if max > 1000 {
                    return Err("MAXRESULTS is at most 1000".into());
                }
            }
            // `ORDERBY f [ASC|DESC]`, also written `ORDER BY`.
            "orderby" | "order" => {
                let mut f = tokens.next().ok_or("ORDERBY needs a field")?;
                if t.eq_ignore_ascii_case("order") {
                    word(Some(f), "by")?;
                    f = tokens.next().ok_or("ORDER BY needs a field")?;
                }
                let mut descending = false;
                if let Some(dir) = tokens
                    .next_if(|d| d.eq_ignore_ascii_case("asc") || d.eq_ignore_ascii_case("desc"))
                {
                    descending = dir.eq_ignore_ascii_case("desc");
                }
                order = Some((f, descending));
            }
            other => return Err(format!("unexpected `{other}`")),
        }
    }
    Ok(Select {
        entity,
        count,
        conditions,
        order,
        start: start.max(1),
        max,
    })
}

fn tokenize(q: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = q.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '\'' {
            chars.next();
            let mut s = String::from("'");
            loop {
                match chars.next() {
                    Some('\\') => s.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => s.push(c),
                    None => return Err("unterminated string".into()),
                }
            }
            out.push(s);
        } else if c == '>' || c == '<' {
            chars.next();
            let mut op = c.to_string();
            if chars.peek() == Some(&'=') {
                chars.next();
                op.push('=');
            }
            out.push(op);
        } else if "(),=*".contains(c) {
            out.push(c.to_string());
            chars.next();
        } else {
            let mut s = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || "(),='<>".contains(c) {
                    break;
                }
                s.push(c);
                chars.next();
            }
            out.push(s);
        }
    }
    Ok(out)
}

/// A value: quoted text, or a bare `true`, `false` or number.
fn unquote(t: &str) -> Result<String, String> {
    if let Some(text) = t.strip_prefix('\'') {
        return Ok(text.to_owned());
    }
    if t.eq_ignore_ascii_case("true") || t.eq_ignore_ascii_case("false") {
        return Ok(t.to_ascii_lowercase());
    }
    t.parse::<Decimal>()
        .map(|_| t.to_owned())
        .map_err(|_| format!("expected a quoted value, found `{t}`"))
}

/// A row's field as text: a reference compares by its `value`, an address by `Address`.
fn field_text(row: &Value, field: &str) -> Option<String> {
    let v = row.get(field)?;
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o
            .get("value")
            .or_else(|| o.get("Address"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        other => Some(other.to_string()),
    }
}

fn matches(row: &Value, c: &Condition) -> bool {
    match c {
        Condition::Equals(f, v) => field_text(row, f).is_some_and(|t| t.eq_ignore_ascii_case(v)),
        Condition::Bound(f, v, lower) => field_text(row, f).is_some_and(|t| {
            if *lower {
                t.as_str() >= v.as_str()
            } else {
                t.as_str() <= v.as_str()
            }
        }),
        Condition::In(f, vs) => {
            field_text(row, f).is_some_and(|t| vs.iter().any(|v| t.eq_ignore_ascii_case(v)))
        }
        Condition::Like(f, pattern) => field_text(row, f).is_some_and(|t| {
            let t = t.to_lowercase();
            let p = pattern.to_lowercase();
            match (p.strip_prefix('%'), p.strip_suffix('%')) {
                (Some(rest), _) if rest.ends_with('%') => t.contains(rest.trim_end_matches('%')),
                (Some(rest), _) => t.ends_with(rest),
                (None, Some(rest)) => t.starts_with(rest),
                (None, None) => t == p,
            }
        }),
    }
}

fn query(shared: &Shared, q: &str) -> Response {
    let select = match parse_query(q) {
        Ok(p) => p,
        Err(e) => {
            return fault(
                StatusCode::BAD_REQUEST,
                "ValidationFault",
                "4000",
                "Error parsing query",
                &format!("QueryParserError: {e}"),
            );
        }
    };
    let mut db = lock(&shared.db);
    let Some((rows, name)) = collection(&mut db, &select.entity) else {
        return fault(
            StatusCode::BAD_REQUEST,
            "ValidationFault",
            "4001",
            "Invalid query",
            &format!("unknown entity {}", select.entity),
        );
    };
    let mut found: Vec<&Value> = rows
        .iter()
        .filter(|r| select.conditions.iter().all(|c| matches(r, c)))
        .collect();
    let response = if select.count {
        json!({ "totalCount": found.len() })
    } else {
        if let Some((key, descending)) = &select.order {
            found.sort_by(|a, b| {
                let ord = order_key(a, key).cmp(&order_key(b, key));
                if *descending { ord.reverse() } else { ord }
            });
        }
        let page: Vec<Value> = found
            .into_iter()
            .skip(select.start - 1)
            .take(select.max)
            .cloned()
            .collect();
        // An empty page is an empty `QueryResponse`, without paging metadata, as QuickBooks
        // answers it.
        if page.is_empty() {
            json!({})
        } else {
            json!({ "startPosition": select.start, "maxResults": page.len(), name: page })
        }
    };
    axum::Json(json!({ "QueryResponse": response, "time": chrono::Utc::now().to_rfc3339() }))
        .into_response()
}

/// What ORDERBY sorts on: numbers as numbers, text without case.
fn order_key(row: &Value, field: &str) -> (Option<Decimal>, Option<String>) {
    let text = field_text(row, field);
    (
        text.as_deref().and_then(|t| t.parse().ok()),
        text.map(|t| t.to_lowercase()),
    )
}

/// Change data capture: `GET /cdc?entities=Customer,Invoice&changedSince=…` answers every
/// object of those entities changed at or after the instant, as QuickBooks lists them.
fn change_data_capture(shared: &Shared, params: &HashMap<String, String>) -> Response {
    let since = params.get("changedSince").and_then(|raw| {
        chrono::DateTime::parse_from_rfc3339(raw)
            .map(|t| t.to_utc())
            .or_else(|_| {
                chrono::NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f")
                    .map(|t| t.and_utc())
            })
            .ok()
    });
    let (Some(entities), Some(since)) = (params.get("entities"), since) else {
        return fault(
            StatusCode::BAD_REQUEST,
            "ValidationFault",
            "2020",
            "Required param missing, need to supply the required value for the API",
            "cdc needs entities and changedSince (an ISO 8601 instant)",
        );
    };
    let mut db = lock(&shared.db);
    let mut answers = Vec::new();
    for entity in entities.split(',').map(str::trim) {
        let Some((rows, name)) = collection(&mut db, entity) else {
            return fault(
                StatusCode::BAD_REQUEST,
                "ValidationFault",
                "4001",
                "Invalid query",
                &format!("unknown entity {entity}"),
            );
        };
        let changed: Vec<Value> = rows
            .iter()
            .filter(|r| {
                r["MetaData"]["LastUpdatedTime"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .is_some_and(|t| t >= since)
            })
            .cloned()
            .collect();
        let mut answer =
            json!({ "startPosition": 1, "maxResults": changed.len(), "totalCount": changed.len() });
        if !changed.is_empty() {
            answer[name] = Value::Array(changed);
        }
        answers.push(answer);
    }
    axum::Json(json!({
        "CDCResponse": [{ "QueryResponse": answers }],
        "time": chrono::Utc::now().to_rfc3339(),
    }))
    .into_response()
}

/// `{"Invoice": {...}, "time": …}`: how QuickBooks answers for one entity.
fn keyed(name: &str, row: Value) -> Value {
    let mut answer = serde_json::Map::new();
    answer.insert(name.to_owned(), row);
    answer.insert("time".into(), json!(chrono::Utc::now().to_rfc3339()));
    Value::Object(answer)
}

fn bump_sync_token(row: &mut Value) {
    let next = text(row, "SyncToken")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    row["SyncToken"] = json!(next.to_string());
    row["MetaData"]["LastUpdatedTime"] = json!(chrono::Utc::now().to_rfc3339());
}

/// Recomputes an invoice's totals the way QuickBooks does: subtotal line last, balance less
/// what was paid.
fn finish_invoice(invoice: &mut Value, paid: Decimal) {
    let mut total = Decimal::ZERO;
    if let Some(lines) = invoice.get_mut("Line").and_then(Value::as_array_mut) {
        lines.retain(|l| text(l, "DetailType") != Some("SubTotalLineDetail"));
        for (n, line) in lines.iter_mut().enumerate() {
            total += decimal(line.get("Amount")).unwrap_or_default();
            if line.get("Id").is_none() {
                line["Id"] = json!((n + 1).to_string());
            }
            line["LineNum"] = json!(n + 1);
        }
        lines.push(json!({ "Amount": number(total), "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {} }));
    }
    invoice["TotalAmt"] = number(total);
    invoice["Balance"] = number(total - paid);
}

/// A write QuickBooks would refuse with a `ValidationFault`.
struct Invalid {
    code: &'static str,
    message: &'static str,
    detail: String,
}

impl IntoResponse for Invalid {
    fn into_response(self) -> Response {
        fault(
            StatusCode::BAD_REQUEST,
            "ValidationFault",
            self.code,
            self.message,
            &self.detail,
        )
    }
}

fn invalid(code: &'static str, message: &'static str, detail: String) -> Invalid {
    Invalid {
        code,
        message,
        detail,
    }
}

fn write(shared: &Shared, entity: &str, body: &[u8]) -> Result<Value, Invalid> {
    let mut incoming: Value = serde_json::from_slice(body).map_err(|e| {
        invalid(
            "2020",
            "Required param missing, need to supply the required value for the API",
            format!("the body is not JSON: {e}"),
        )
    })?;
    let mut db = lock(&shared.db);
    let db = &mut *db;
    let name = match entity.to_ascii_lowercase().as_str() {
        "customer" => "Customer",
        "item" => "Item",
        "invoice" => "Invoice",
        other => return Err(invalid("4000", "Unsupported entity", other.to_owned())),
    };
    if name == "Invoice" {
        check_invoice(db, &mut incoming)?;
    }
    if name == "Customer" {
        let display = text(&incoming, "DisplayName").map(str::to_owned);
        let id = text(&incoming, "Id").map(str::to_owned);
        if let Some(display) = &display {
            let taken = db.customers.iter().any(|c| {
                text(c, "DisplayName").is_some_and(|n| n.eq_ignore_ascii_case(display))
                    && text(c, "Id") != id.as_deref()
            });
            if taken {
                return Err(invalid(
                    "6240",
                    "Duplicate Name Exists Error",
                    format!("The name supplied already exists. : {display}"),
                ));
            }
        } else if id.is_none() {
            return Err(invalid(
                "2020",
                "Required param missing, need to supply the required value for the API",
                "Required parameter DisplayName is missing in the request".into(),
            ));
        }
    }
    let now = chrono::Utc::now().to_rfc3339();
    db.next_id += 1;
    let next_id = db.next_id;
    let (rows, _) = collection(db, entity)
        .ok_or_else(|| invalid("4000", "Unsupported entity", entity.to_owned()))?;
    let saved = match text(&incoming, "Id").map(str::to_owned) {
        None => {
            let mut row = incoming;
            // Read-only fields a create may carry (`"Balance": 0`, empty strings) are the
            // service's to set.
            row["Id"] = json!(next_id.to_string());
            row["SyncToken"] = json!("0");
            row["MetaData"] = json!({ "CreateTime": now, "LastUpdatedTime": now });
            if name == "Invoice" {
                row["EmailStatus"] = json!("NotSet");
                finish_invoice(&mut row, Decimal::ZERO);
            }
            if name == "Customer" {
                row["Active"] = json!(true);
                row["Balance"] = json!(0);
            }
            rows.push(row.clone());
            row
        }
        Some(id) => {
            let Some(current) = rows.iter_mut().find(|r| text(r, "Id") == Some(id.as_str())) else {
                return Err(invalid("610", "Object Not Found", format!("{name} {id}")));
            };
            if text(&incoming, "SyncToken") != text(current, "SyncToken") {
                return Err(invalid(
                    "5010",
                    "Stale Object Error",
                    format!(
                        "Stale Object Error : You and another user were working on the same thing. ({name} {id}, SyncToken {:?} is not the current {:?})",
                        text(&incoming, "SyncToken"),
                        text(current, "SyncToken")
                    ),
                ));
            }
            let paid = decimal(current.get("TotalAmt")).unwrap_or_default()
                - decimal(current.get("Balance")).unwrap_or_default();
            let sparse = incoming
                .get("sparse")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let mut row = if sparse {
                current.clone()
            } else {
                json!({ "Id": id, "MetaData": current["MetaData"].clone() })
            };
            if let (Some(target), Some(fields)) = (row.as_object_mut(), incoming.as_object()) {
                for (k, v) in fields {
                    if !matches!(
                        k.as_str(),
                        "sparse" | "SyncToken" | "MetaData" | "TotalAmt" | "Balance"
                    ) {
                        target.insert(k.clone(), v.clone());
                    }
                }
            }
            row["SyncToken"] = current["SyncToken"].clone();
            bump_sync_token(&mut row);
            if name == "Invoice" {
                if row.get("EmailStatus").is_none() {
                    row["EmailStatus"] = current["EmailStatus"].clone();
                }
                finish_invoice(&mut row, paid);
            }
            *current = row.clone();
            row
        }
    };
    Ok(keyed(name, saved))
}

/// An invoice's references must exist and each line's amount must be its quantity × price,
/// as QuickBooks checks; money may come as numbers or strings and is stored as numbers.
fn check_invoice(db: &Db, invoice: &mut Value) -> Result<(), Invalid> {
    if let Some(customer) = invoice.get("CustomerRef").and_then(|c| text(c, "value")) {
        if !db.customers.iter().any(|c| text(c, "Id") == Some(customer)) {
            return Err(invalid(
                "2500",
                "Invalid Reference Id",
                format!(
                    "Invalid Reference Id : Customer assigned to this transaction has been deleted or does not exist ({customer})"
                ),
            ));
        }
    } else if invoice.get("Id").is_none() {
        return Err(invalid(
            "2020",
            "Required param missing, need to supply the required value for the API",
            "Required parameter CustomerRef is missing in the request".into(),
        ));
    }
    let Some(lines) = invoice.get_mut("Line").and_then(Value::as_array_mut) else {
        return if invoice.get("Id").is_some() {
            Ok(())
        } else {
            Err(invalid(
                "2020",
                "Required param missing, need to supply the required value for the API",
                "Required parameter Line is missing in the request".into(),
            ))
        };
    };
    for (n, line) in lines.iter_mut().enumerate() {
        if text(line, "DetailType") != Some("SalesItemLineDetail") {
            continue;
        }
        let item = line["SalesItemLineDetail"]["ItemRef"]["value"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let Some(found) = db
            .items
            .iter()
            .find(|i| text(i, "Id") == Some(item.as_str()))
        else {
            return Err(invalid(
                "2500",
                "Invalid Reference Id",
                format!(
                    "Invalid Reference Id : Line {} item {item} does not exist",
                    n + 1
                ),
            ));
        };
        line["SalesItemLineDetail"]["ItemRef"]["name"] = found["Name"].clone();
        let detail = &line["SalesItemLineDetail"];
        let qty = decimal(detail.get("Qty")).unwrap_or(Decimal::ONE);
        let price = decimal(detail.get("UnitPrice")).unwrap_or_default();
        let amount = decimal(line.get("Amount")).ok_or_else(|| {
            invalid(
                "2020",
                "Required param missing, need to supply the required value for the API",
                format!("Required parameter Line.Amount is missing (line {})", n + 1),
            )
        })?;
        let expected =
            (qty * price).round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
        if amount != expected {
            return Err(invalid(
                "6070",
                "Amount is not equal to UnitPrice * Qty",
                format!(
                    "Line {}: Amount {amount} is not {price} × {qty} = {expected}",
                    n + 1
                ),
            ));
        }
        line["Amount"] = number(amount);
        line["SalesItemLineDetail"]["Qty"] = number(qty);
        line["SalesItemLineDetail"]["UnitPrice"] = number(price);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_the_forms_clients_send() {
        let q = parse_query("select * from Customer where DisplayName = 'O\\'Brien & Sons' and Active = 'true' STARTPOSITION 11 MAXRESULTS 10").expect("parse");
        assert_eq!((q.entity.as_str(), q.start, q.max), ("Customer", 11, 10));
        assert!(
            matches!(&q.conditions[0], Condition::Equals(f, v) if f == "DisplayName" && v == "O'Brien & Sons")
        );
        assert!(parse_query("select Id from Customer").is_err());
        let range = parse_query(
            "select * from Invoice where TxnDate >= '2026-11-01' and TxnDate <= '2026-11-30'",
        )
        .expect("range")
        .conditions;
        let row = json!({ "TxnDate": "2026-11-17" });
        assert!(range.iter().all(|c| matches(&row, c)));
        assert!(!matches(&json!({ "TxnDate": "2026-12-01" }), &range[1]));
        assert!(parse_query("select * from Invoice MAXRESULTS 5000").is_err());
        // The forms python-quickbooks sends: count, both spellings of ORDERBY, bare booleans,
        // a field named beside `*`.
        assert_eq!(
            parse_query("SELECT *, Sku FROM Item MAXRESULTS 100")
                .expect("sku")
                .entity,
            "Item"
        );
        let count =
            parse_query("SELECT COUNT(*) FROM Customer WHERE Active = true").expect("count");
        assert!(count.count);
        assert!(matches!(&count.conditions[0], Condition::Equals(_, v) if v == "true"));
        let ordered = parse_query("SELECT * FROM Customer ORDER BY DisplayName DESC MAXRESULTS 2")
            .expect("order by");
        assert_eq!(ordered.order, Some(("DisplayName".to_owned(), true)));
        let ordered = parse_query("SELECT * FROM Customer WHERE Id IN ('1','2') ORDERBY Id")
            .expect("orderby");
        assert_eq!(ordered.order, Some(("Id".to_owned(), false)));
        assert!(parse_query("select * from Customer where Active = yes").is_err());
    }
}
