//! HaloPSA as a [`BillingSystem`]: reads a client's users and the lines of its recurring
//! invoice, and writes one change at a time.
//!
//! Everything about retrying lives in [`rollcall_core::http`]. This module gets and renews the
//! OAuth2 client-credentials token, builds Halo's requests (`pageinate=true` with `page_size`
//! and `page_no` on every list, `search` and `client_id` to narrow it) and converts between
//! Halo's objects ([`crate::model`]) and the engine's. Halo has no idempotency key, so each
//! create first looks for what it would make, and a create whose answer was lost is reconciled
//! by reading before it is sent again.
//!
//! Seats are the quantities of lines on one recurring invoice of the client (the pipeline's
//! `agreement:` names it by its reference). Halo writes an invoice's lines as a whole: a `POST`
//! of the invoice with `lines` makes those its lines. So every line write starts from the
//! invoice as Halo holds it now and sends all of its lines, changed or not: a line someone added
//! by hand since rollcall's read survives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::header::{ACCEPT, AUTHORIZATION};
use reqwest::{Method, RequestBuilder, StatusCode};
use rollcall_core::http::{Created, HttpClient, HttpSettings, RateLimit, Reply, RetryPolicy};
use rollcall_core::{
    AccountRef, ActualAddition, ActualContact, AdditionFields, Applied, BillingAccount,
    BillingSystem, Change, ClientState, ContactFields, ContactKey, RemoteError, RemoteErrorKind,
    Secret,
};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{Config, ConfigError, MAX_PAGE_SIZE};
use crate::model::{Client, InvoiceLine, Item, RecurringInvoice, Site, TokenAnswer, User};

/// The connector's kind, as pipelines name it and errors report it.
pub const VENDOR: &str = "halopsa";

/// A look-up run before a create, and again to reconcile one whose answer was lost.
type Lookup = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Option<i64>, RemoteError>> + Send + 'static>,
>;

/// An access token and when to stop using it: a minute before it expires (half its life, for
/// a token that lives less than two), so no request arrives with a token that just died.
#[derive(Clone)]
struct Token {
    access: Secret,
    renew_at: DateTime<Utc>,
}

/// A HaloPSA instance, reached with one API application's client credentials. Clones share
/// the HTTP client (its rate limit and call count), the token, and the item and site caches.
#[derive(Clone)]
pub struct HaloPsa {
    http: HttpClient,
    api: String,
    token_url: String,
    tenant: Option<String>,
    client_id: String,
    client_secret: Secret,
    page_size: u32,
    token: Arc<tokio::sync::Mutex<Option<Token>>>,
    /// Item ids by lower-cased item name: the catalogue does not move while a run lasts.
    items: Arc<Mutex<HashMap<String, i64>>>,
    /// The site new users of a client go to, by client id.
    sites: Arc<Mutex<HashMap<i64, i64>>>,
    /// The mark on what this client makes (a user's `other5`, a line's `comment_1`): the
    /// pipeline's, so two pipelines billing one client keep apart.
    mark: String,
}

impl std::fmt::Debug for HaloPsa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HaloPsa")
            .field("api", &self.api)
            .field("tenant", &self.tenant)
            .field("page_size", &self.page_size)
            .field("calls", &self.http.calls())
            .finish_non_exhaustive()
    }
}

fn base_url(field: &'static str, value: &str) -> Result<String, ConfigError> {
    let base = value.trim().trim_end_matches('/').to_owned();
    let parsed = reqwest::Url::parse(&base).map_err(|e| ConfigError::Url {
        field,
        url: base.clone(),
        reason: e.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ConfigError::Url {
            field,
            url: base,
            reason: "the scheme must be https (or http for the sandbox)".to_owned(),
        });
    }
    Ok(base)
}

impl HaloPsa {
    /// A client for the configured instance, retrying by [`RetryPolicy::default`].
    pub fn new(config: &Config) -> Result<Self, RemoteError> {
        Self::with_retry(config, RetryPolicy::default())
    }

    /// A client with its own retry policy (tests use millisecond backoffs).
    pub fn with_retry(config: &Config, retry: RetryPolicy) -> Result<Self, RemoteError> {
        let base = base_url("url", &config.url)?;
        // A resource server address copied with its `/api` would make every path `/api/api`.
        let base = base.strip_suffix("/api").unwrap_or(&base).to_owned();
        let auth = match &config.auth_url {
            Some(url) => base_url("auth_url", url)?,
            None => format!("{base}/auth"),
        };
        let auth = auth.strip_suffix("/token").unwrap_or(&auth).to_owned();
        if !(1..=MAX_PAGE_SIZE).contains(&config.page_size) {
            return Err(ConfigError::PageSize(config.page_size).into());
        }
        let per_minute = std::num::NonZeroU32::new(config.rate_limit_per_minute)
            .ok_or(ConfigError::RateLimit)?;
        if config.client_id.trim().is_empty() {
            return Err(ConfigError::Empty { field: "client_id" }.into());
        }
        let tenant = config
            .tenant
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        let mut settings = HttpSettings::new(VENDOR, describe_error);
        // Halo counts requests per calling address against the instance.
        settings.limit_scope = format!("{VENDOR}:{base}");
        settings.retry = retry;
        // Bursts of a tenth of the minute's budget: a burst at the window's start plus the
        // steady rate stays within Halo's minute.
        let burst = std::num::NonZeroU32::new((per_minute.get() / 10).max(1)).unwrap_or(per_minute);
        settings.rate_limit = Some(RateLimit::per_minute(per_minute, burst));
        Ok(HaloPsa {
            http: HttpClient::new(settings)?,
            api: format!("{base}/api"),
            token_url: format!("{auth}/token"),
            tenant,
            client_id: config.client_id.trim().to_owned(),
            client_secret: config.client_secret.clone(),
            page_size: config.page_size,
            token: Arc::new(tokio::sync::Mutex::new(None)),
            items: Arc::new(Mutex::new(HashMap::new())),
            sites: Arc::new(Mutex::new(HashMap::new())),
            mark: crate::model::MARK.to_owned(),
        })
    }

    /// This client, marking what it makes with `mark` ([`rollcall_core::owner_mark`]).
    pub fn with_mark(self, mark: &str) -> Self {
        HaloPsa {
            mark: mark.to_owned(),
            ..self
        }
    }

    /// Requests sent so far (token requests and retries included).
    pub fn calls(&self) -> u64 {
        self.http.calls()
    }

    // -----------------------------------------------------------------------------------------
    // The token

    /// A token good for at least another minute: the one held, or a new one.
    async fn access(&self) -> Result<Secret, RemoteError> {
        let mut held = self.token.lock().await;
        if let Some(token) = held.as_ref()
            && token.renew_at > Utc::now()
        {
            return Ok(token.access.clone());
        }
        let token = self.fetch_token().await?;
        let access = token.access.clone();
        *held = Some(token);
        Ok(access)
    }

    /// Halo refused `used` (it expired early, or was revoked): forget it unless another request
    /// already replaced it, and hand back a token to try once more with.
    async fn refused(&self, used: &Secret) -> Result<Secret, RemoteError> {
        {
            let mut held = self.token.lock().await;
            if held.as_ref().is_some_and(|t| t.access == *used) {
                *held = None;
            }
        }
        self.access().await
    }

    /// The client-credentials grant. Nothing is stored: there is no refresh token, and a new
    /// access token costs one request whenever one is needed.
    async fn fetch_token(&self) -> Result<Token, RemoteError> {
        let operation = "get access token";
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose()),
            ("scope", "all"),
        ];
        // Hosted instances name the tenant on the token request (as a query parameter, which
        // is how Halo's own API Details page writes the token URL).
        let query: Vec<(&str, &str)> = self
            .tenant
            .as_deref()
            .map(|t| vec![("tenant", t)])
            .unwrap_or_default();
        let reply = self
            .http
            .send(operation, || {
                self.http
                    .request(Method::POST, &self.token_url)
                    .query(&query)
                    .header(ACCEPT, "application/json")
                    .form(&form)
            })
            .await
            .map_err(|mut e| {
                if e.kind == RemoteErrorKind::Unauthorized || e.kind == RemoteErrorKind::Rejected {
                    e.kind = RemoteErrorKind::Unauthorized;
                    e.message = format!(
                        "{}; check client_id, client_secret and tenant in the target section \
                         (the application must use Client ID and Secret, with the `all` scope)",
                        e.message
                    );
                }
                e
            })?;
        let answer: TokenAnswer = decode(operation, &reply.body)?;
        let margin = (answer.expires_in / 2).clamp(0, 60);
        Ok(Token {
            access: Secret::new(answer.access_token),
            renew_at: rollcall_core::oauth::expiry(Utc::now(), answer.expires_in - margin),
        })
    }

    // -----------------------------------------------------------------------------------------
    // Requests

    fn request(&self, method: Method, path: &str, token: &Secret) -> RequestBuilder {
        let mut bearer =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static("Bearer -"));
        bearer.set_sensitive(true);
        self.http
            .request(method, &format!("{}/{path}", self.api))
            .header(AUTHORIZATION, bearer)
            .header(ACCEPT, "application/json")
    }

    /// Sends a request that is safe to repeat; a 401 gets a new token and one more try.
    async fn send(
        &self,
        operation: &str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<Reply, RemoteError> {
        // Requests are built by a method, not a closure taking the token: a closure generic
        // over a borrow's lifetime, held across an await, makes `apply`'s future not `Send`.
        let token = self.access().await?;
        match self
            .http
            .send(operation, || {
                self.prepared(&method, path, query, body, &token)
            })
            .await
        {
            Err(e) if e.kind == RemoteErrorKind::Unauthorized => {
                let fresh = self.refused(&token).await?;
                self.http
                    .send(operation, || {
                        self.prepared(&method, path, query, body, &fresh)
                    })
                    .await
            }
            other => other,
        }
    }

    fn prepared(
        &self,
        method: &Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
        token: &Secret,
    ) -> RequestBuilder {
        let request = self.request(method.clone(), path, token).query(query);
        match body {
            Some(body) => request.json(body),
            None => request,
        }
    }

    /// Every row of a list, page by page (`pageinate=true`, `page_size`, `page_no`). A walk
    /// that ends with fewer rows than Halo's `record_count` is an incomplete read and an error:
    /// a missing line must never read as a seat to take away.
    async fn list<T: DeserializeOwned>(
        &self,
        operation: &str,
        path: &str,
        key: &str,
        params: &[(&str, String)],
    ) -> Result<Vec<T>, RemoteError> {
        let mut rows: Vec<T> = Vec::new();
        let mut page_no: u32 = 1;
        loop {
            let mut query: Vec<(&str, String)> = params.to_vec();
            query.push(("pageinate", "true".to_owned()));
            query.push(("page_size", self.page_size.to_string()));
            query.push(("page_no", page_no.to_string()));
            let reply = self
                .send(operation, Method::GET, path, &query, None)
                .await?;
            // Read as a map, not a struct with a flattened rest: serde's flatten cannot read
            // numbers that serde_json keeps exact (`arbitrary_precision`).
            let mut page: serde_json::Map<String, serde_json::Value> =
                decode(operation, &reply.body)?;
            let record_count = page
                .get("record_count")
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| {
                    RemoteError::new(
                        VENDOR,
                        operation,
                        RemoteErrorKind::Decode,
                        "the answer has no record_count; is `url` the resource server?",
                    )
                })?;
            let batch: Vec<T> = match page.remove(key) {
                Some(value) => serde_json::from_value(value).map_err(|e| {
                    RemoteError::new(
                        VENDOR,
                        operation,
                        RemoteErrorKind::Decode,
                        format!("unexpected `{key}` in the answer: {e}"),
                    )
                })?,
                None => Vec::new(),
            };
            let got = batch.len();
            rows.extend(batch);
            let total = usize::try_from(record_count).unwrap_or(usize::MAX);
            if rows.len() >= total {
                return Ok(rows);
            }
            if got == 0 {
                return Err(RemoteError::new(
                    VENDOR,
                    operation,
                    RemoteErrorKind::Decode,
                    format!(
                        "Halo counted {total} rows but its pages ended after {}; the list \
                         changed while it was read or a page was lost: run again",
                        rows.len()
                    ),
                ));
            }
            page_no += 1;
        }
    }

    /// Posts `objects` (Halo creates and updates by `POST` of an array) as a write that is
    /// safe to repeat: it names the object's id and sets values.
    async fn post_update<T: Serialize>(
        &self,
        operation: &str,
        path: &str,
        object: &T,
    ) -> Result<Reply, RemoteError> {
        let body = as_array(operation, object)?;
        self.send(operation, Method::POST, path, &[], Some(&body))
            .await
    }

    // -----------------------------------------------------------------------------------------
    // Reads

    /// The client a pipeline names: `id:123`, or its name (Halo's `search`, then an exact match
    /// ignoring case among active clients).
    async fn find_client(&self, wanted: &str) -> Result<Client, RemoteError> {
        let operation = "find client";
        if let Some(id) = wanted.trim().strip_prefix("id:") {
            let id = numeric_id("client", id)?;
            let reply = self
                .send(operation, Method::GET, &format!("Client/{id}"), &[], None)
                .await?;
            return decode(operation, &reply.body);
        }
        let name = wanted.trim();
        let clients: Vec<Client> = self
            .list(
                operation,
                "Client",
                "clients",
                &[("search", name.to_owned())],
            )
            .await?;
        let mut named: Vec<Client> = clients
            .into_iter()
            .filter(|c| !c.inactive && c.name.trim().eq_ignore_ascii_case(name))
            .collect();
        match named.len() {
            1 => Ok(named.remove(0)),
            0 => Err(RemoteError::new(
                VENDOR,
                operation,
                RemoteErrorKind::NotFound,
                format!("no active client named {name:?} exists in HaloPSA"),
            )),
            n => Err(RemoteError::new(
                VENDOR,
                operation,
                RemoteErrorKind::Rejected,
                format!(
                    "{n} active clients are named {name:?} (ids {}); name the client as `id:N`",
                    named
                        .iter()
                        .map(|c| c.id.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    async fn users_of(
        &self,
        operation: &str,
        client_id: i64,
        search: Option<&str>,
        include_inactive: bool,
    ) -> Result<Vec<User>, RemoteError> {
        let mut params = vec![("client_id", client_id.to_string())];
        if include_inactive {
            params.push(("includeinactive", "true".to_owned()));
        }
        if let Some(search) = search {
            params.push(("search", search.to_owned()));
        }
        let users: Vec<User> = self.list(operation, "Users", "users", &params).await?;
        // The filter is Halo's; a user of another client is never ours to compare.
        Ok(users
            .into_iter()
            .filter(|u| u.client_id.is_none_or(|c| c == client_id))
            .collect())
    }

    /// The recurring invoice of `client_id` with the reference `reference`, lines included.
    async fn find_invoice(
        &self,
        client_id: i64,
        client_name: &str,
        reference: &str,
    ) -> Result<RecurringInvoice, RemoteError> {
        let operation = "find recurring invoice";
        let invoices: Vec<RecurringInvoice> = self
            .list(
                operation,
                "RecurringInvoice",
                "invoices",
                &[
                    ("client_id", client_id.to_string()),
                    ("includelines", "true".to_owned()),
                ],
            )
            .await?;
        let mut named: Vec<RecurringInvoice> = invoices
            .into_iter()
            .filter(|i| {
                i.client_id.is_none_or(|c| c == client_id)
                    && i.invoicenumber
                        .as_deref()
                        .is_some_and(|n| n.trim().eq_ignore_ascii_case(reference.trim()))
            })
            .collect();
        match named.len() {
            1 => Ok(named.remove(0)),
            0 => Err(RemoteError::new(
                VENDOR,
                operation,
                RemoteErrorKind::NotFound,
                format!(
                    "client {client_name:?} has no recurring invoice with the reference \
                     {reference:?}; make one in Halo (Billing > Recurring Invoices) or name \
                     an existing one as the client's agreement"
                ),
            )),
            n => Err(RemoteError::new(
                VENDOR,
                operation,
                RemoteErrorKind::Rejected,
                format!(
                    "client {client_name:?} has {n} recurring invoices with the reference \
                     {reference:?} (ids {}); rename all but one so rollcall knows which \
                     carries the seats",
                    named
                        .iter()
                        .map(|i| i.id.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    /// A recurring invoice as Halo holds it now, lines included.
    async fn invoice(&self, operation: &str, id: i64) -> Result<RecurringInvoice, RemoteError> {
        let reply = self
            .send(
                operation,
                Method::GET,
                &format!("RecurringInvoice/{id}"),
                &[("includelines", "true".to_owned())],
                None,
            )
            .await?;
        decode(operation, &reply.body)
    }

    /// The catalogue id of an item, by its name, read once per run.
    async fn item_id(&self, product: &str) -> Result<i64, RemoteError> {
        let key = product.trim().to_lowercase();
        if let Some(id) = self
            .items
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .copied()
        {
            return Ok(id);
        }
        let items: Vec<Item> = self
            .list(
                "find item",
                "Item",
                "items",
                &[("search", product.trim().to_owned())],
            )
            .await?;
        let item = items
            .into_iter()
            .find(|i| i.name.trim().eq_ignore_ascii_case(product.trim()))
            .ok_or_else(|| {
                RemoteError::new(
                    VENDOR,
                    "find item",
                    RemoteErrorKind::NotFound,
                    format!(
                        "product {product:?} is not an item in HaloPSA (Configuration > \
                         Billing > Items); the product's identifier must be the item's name"
                    ),
                )
            })?;
        self.items
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, item.id);
        Ok(item.id)
    }

    /// The site new users of the client go to: its main site, else its first active site.
    async fn site_for_users(&self, client_id: i64) -> Result<i64, RemoteError> {
        if let Some(id) = self
            .sites
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&client_id)
            .copied()
        {
            return Ok(id);
        }
        let operation = "find the client's site";
        let reply = self
            .send(
                operation,
                Method::GET,
                &format!("Client/{client_id}"),
                &[],
                None,
            )
            .await?;
        let client: Client = decode(operation, &reply.body)?;
        let site = match client.main_site_id.filter(|id| *id > 0) {
            Some(id) => id,
            None => {
                let sites: Vec<Site> = self
                    .list(
                        operation,
                        "Site",
                        "sites",
                        &[("client_id", client_id.to_string())],
                    )
                    .await?;
                sites
                    .into_iter()
                    .filter(|s| !s.inactive && s.client_id == client_id)
                    .map(|s| s.id)
                    .min()
                    .ok_or_else(|| {
                        RemoteError::new(
                            VENDOR,
                            operation,
                            RemoteErrorKind::Rejected,
                            format!(
                                "client {:?} has no active site, and every Halo user belongs \
                                 to a site; add one in Halo",
                                client.name
                            ),
                        )
                    })?
            }
        };
        self.sites
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(client_id, site);
        Ok(site)
    }

    /// The active user of `client_id` with `key`, made by an earlier attempt or run. Inactive
    /// users are not adopted: a create means the person must be active.
    async fn find_user(
        &self,
        client_id: i64,
        key: &ContactKey,
        fields: &ContactFields,
    ) -> Result<Option<i64>, RemoteError> {
        // Narrowed on the server by what the user a create makes carries.
        let search = fields
            .email
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .unwrap_or(fields.first_name.trim());
        let users = self
            .users_of("look for user", client_id, Some(search), false)
            .await?;
        Ok(users
            .into_iter()
            .find(|u| u.inactive != Some(true) && contact_fields(u).key() == *key)
            .map(|u| u.id))
    }

    /// The line billing `product` on the invoice, made by an earlier attempt or run.
    async fn find_line(&self, invoice_id: i64, product: &str) -> Result<Option<i64>, RemoteError> {
        let invoice = self.invoice("look for invoice line", invoice_id).await?;
        Ok(invoice
            .lines
            .unwrap_or_default()
            .into_iter()
            .find(|l| line_product(l).is_some_and(|p| p.eq_ignore_ascii_case(product)))
            .map(|l| l.id))
    }

    // -----------------------------------------------------------------------------------------
    // Writes

    async fn create_user(
        &self,
        account: &AccountRef,
        key: &ContactKey,
        after: &ContactFields,
    ) -> Result<Applied, RemoteError> {
        let client_id = numeric_id("client", &account.company_id)?;
        let operation = format!("create user in client {client_id}");
        // The look-up owns what it reads (cloning the client is cheap): `apply`'s future must
        // be `Send`, which rustc cannot prove for a borrowing look-up behind `AsyncFn`.
        let find = {
            let (this, key, after) = (self.clone(), key.clone(), after.clone());
            move || -> Lookup {
                let (this, key, after) = (this.clone(), key.clone(), after.clone());
                Box::pin(async move { this.find_user(client_id, &key, &after).await })
            }
        };
        if let Some(id) = find().await? {
            return Ok(adopted(id));
        }
        let site_id = self.site_for_users(client_id).await?;
        let user = new_user(site_id, after, &self.mark);
        let body = as_array(&operation, &user)?;
        // A 401 is a refusal, so sending again with a new token is safe. The look-up is
        // handed to the plumbing as the closure itself (not behind a generic): only then can
        // rustc prove `apply`'s future `Send`.
        let token = self.access().await?;
        let created = match self
            .http
            .send_create(
                &operation,
                || self.prepared(&Method::POST, "Users", &[], Some(&body), &token),
                find.clone(),
            )
            .await
        {
            Err(e) if e.kind == RemoteErrorKind::Unauthorized => {
                let fresh = self.refused(&token).await?;
                self.http
                    .send_create(
                        &operation,
                        || self.prepared(&Method::POST, "Users", &[], Some(&body), &fresh),
                        find,
                    )
                    .await?
            }
            other => other?,
        };
        match created {
            Created::Sent(reply) => Ok(written(created_id(&operation, &reply.body)?)),
            Created::Found(id) => Ok(adopted(id)),
        }
    }

    async fn update_user(
        &self,
        id: &str,
        before: &ContactFields,
        after: &ContactFields,
        reactivate: bool,
    ) -> Result<Applied, RemoteError> {
        let user_id = numeric_id("user", id)?;
        let operation = format!("update user {user_id}");
        let mut user = User {
            id: user_id,
            ..User::default()
        };
        if reactivate {
            user.inactive = Some(false);
        }
        if before.first_name != after.first_name || before.last_name != after.last_name {
            user.firstname = Some(after.first_name.trim().to_owned());
            user.surname = Some(after.last_name.trim().to_owned());
            user.name = Some(full_name(after));
        }
        // Halo keeps a field the body leaves out, so a value taken away is sent as empty.
        if before.email != after.email {
            user.emailaddress = Some(after.email.clone().unwrap_or_default());
        }
        if before.title != after.title {
            user.title = Some(after.title.clone().unwrap_or_default());
        }
        if before.phone != after.phone {
            user.phonenumber = Some(after.phone.clone().unwrap_or_default());
        }
        if user
            != (User {
                id: user_id,
                ..User::default()
            })
        {
            self.post_update(&operation, "Users", &user).await?;
        }
        Ok(written(user_id))
    }

    async fn deactivate_user(&self, id: &str) -> Result<Applied, RemoteError> {
        let user_id = numeric_id("user", id)?;
        let user = User {
            id: user_id,
            inactive: Some(true),
            ..User::default()
        };
        self.post_update(&format!("deactivate user {user_id}"), "Users", &user)
            .await?;
        Ok(written(user_id))
    }

    /// Writes the invoice's lines as `edit` leaves them, starting from what Halo holds now.
    async fn rewrite_lines(
        &self,
        operation: &str,
        invoice_id: i64,
        edit: LineEdit<'_>,
    ) -> Result<(), RemoteError> {
        let current = self.invoice(operation, invoice_id).await?;
        let mut lines = current.lines.unwrap_or_default();
        if !edit.apply(&mut lines, operation, invoice_id)? {
            return Ok(());
        }
        let body = RecurringInvoice {
            id: invoice_id,
            lines: Some(lines),
            ..RecurringInvoice::default()
        };
        self.post_update(operation, "RecurringInvoice", &body)
            .await?;
        Ok(())
    }

    async fn create_line(
        &self,
        account: &AccountRef,
        product: &str,
        after: &AdditionFields,
    ) -> Result<Applied, RemoteError> {
        let invoice_id = invoice_of(account, "create invoice line")?;
        let item_id = self.item_id(product).await?;
        let operation = format!("add line {product} to recurring invoice {invoice_id}");
        let find = {
            let (this, product) = (self.clone(), product.to_owned());
            move || -> Lookup {
                let (this, product) = (this.clone(), product.clone());
                Box::pin(async move { this.find_line(invoice_id, &product).await })
            }
        };
        // The look-up is the invoice itself, which the write needs anyway.
        let current = self.invoice(&operation, invoice_id).await?;
        let mut lines = current.lines.unwrap_or_default();
        if let Some(line) = lines
            .iter()
            .find(|l| line_product(l).is_some_and(|p| p.eq_ignore_ascii_case(product)))
        {
            return Ok(adopted(line.id));
        }
        lines.push(InvoiceLine {
            item_id: Some(item_id),
            item_shortdescription: Some(after.invoice_description.clone()),
            qty_order: Some(Decimal::from(after.quantity)),
            unit_price: Some(after.unit_price),
            comment_1: Some(self.mark.clone()),
            ..InvoiceLine::default()
        });
        let invoice = RecurringInvoice {
            id: invoice_id,
            lines: Some(lines),
            ..RecurringInvoice::default()
        };
        let body = as_array(&operation, &invoice)?;
        let token = self.access().await?;
        let created = match self
            .http
            .send_create(
                &operation,
                || self.prepared(&Method::POST, "RecurringInvoice", &[], Some(&body), &token),
                find.clone(),
            )
            .await
        {
            Err(e) if e.kind == RemoteErrorKind::Unauthorized => {
                let fresh = self.refused(&token).await?;
                self.http
                    .send_create(
                        &operation,
                        || {
                            self.prepared(
                                &Method::POST,
                                "RecurringInvoice",
                                &[],
                                Some(&body),
                                &fresh,
                            )
                        },
                        find.clone(),
                    )
                    .await?
            }
            other => other?,
        };
        match created {
            Created::Sent(reply) => {
                let written_invoice: RecurringInvoice = decode_one(&operation, &reply.body)?;
                let id = match written_invoice.lines.as_ref().and_then(|lines| {
                    lines
                        .iter()
                        .find(|l| l.item_id == Some(item_id) || line_product(l).is_some_and(|p| p.eq_ignore_ascii_case(product)))
                        .map(|l| l.id)
                }) {
                    Some(id) => id,
                    // An answer without its lines: read them.
                    None => find().await?.ok_or_else(|| {
                        RemoteError::new(
                            VENDOR,
                            &operation,
                            RemoteErrorKind::Decode,
                            "Halo accepted the line but the invoice read back has none for the product",
                        )
                    })?,
                };
                Ok(written(id))
            }
            Created::Found(id) => Ok(adopted(id)),
        }
    }

    async fn update_line(
        &self,
        account: &AccountRef,
        id: &str,
        after: &AdditionFields,
    ) -> Result<Applied, RemoteError> {
        let line_id = numeric_id("invoice line", id)?;
        let operation = format!("update invoice line {line_id}");
        let invoice_id = invoice_of(account, &operation)?;
        self.rewrite_lines(&operation, invoice_id, LineEdit::Update { line_id, after })
            .await?;
        Ok(written(line_id))
    }

    async fn remove_line(&self, account: &AccountRef, id: &str) -> Result<Applied, RemoteError> {
        let line_id = numeric_id("invoice line", id)?;
        let operation = format!("remove invoice line {line_id}");
        let invoice_id = invoice_of(account, &operation)?;
        self.rewrite_lines(&operation, invoice_id, LineEdit::Remove { line_id })
            .await?;
        Ok(written(line_id))
    }
}

#[async_trait]
impl BillingSystem for HaloPsa {
    fn kind(&self) -> &'static str {
        VENDOR
    }

    fn field_limits(&self) -> rollcall_core::FieldLimits {
        crate::model::LIMITS
    }

    #[tracing::instrument(skip_all, fields(vendor = VENDOR, company = %account.company))]
    async fn read(
        &self,
        account: &BillingAccount,
        products: &[String],
    ) -> Result<ClientState, RemoteError> {
        let client = self.find_client(&account.company).await?;
        let contacts = self
            .users_of("list users", client.id, None, true)
            .await?
            .iter()
            .map(|u| ActualContact {
                id: u.id.to_string(),
                fields: contact_fields(u),
                active: u.inactive != Some(true),
                marked: u.other5.as_deref() == Some(self.mark.as_str()),
            })
            .collect();
        let invoice = match &account.agreement {
            Some(reference) => Some(
                self.find_invoice(client.id, &client.name, reference)
                    .await?,
            ),
            None => None,
        };
        let mut additions = Vec::new();
        if let Some(invoice) = invoice.as_ref().filter(|_| !products.is_empty()) {
            for line in invoice.lines.iter().flatten() {
                // Report the product as the pipeline spells it: item names ignore case.
                let Some(product) = line_product(line)
                    .and_then(|p| products.iter().find(|want| want.eq_ignore_ascii_case(p)))
                else {
                    continue;
                };
                additions.push(actual_addition(line, product, &self.mark)?);
            }
        }
        Ok(ClientState {
            account: AccountRef {
                company_id: client.id.to_string(),
                agreement_id: invoice.map(|i| i.id.to_string()),
            },
            contacts,
            additions,
            invoice: None,
        })
    }

    #[tracing::instrument(skip_all, fields(vendor = VENDOR, change = change.kind()))]
    async fn apply(&self, account: &AccountRef, change: &Change) -> Result<Applied, RemoteError> {
        match change {
            Change::CreateContact { key, after } => self.create_user(account, key, after).await,
            Change::UpdateContact {
                id, before, after, ..
            } => self.update_user(id, before, after, false).await,
            Change::ReactivateContact {
                id, before, after, ..
            } => self.update_user(id, before, after, true).await,
            Change::DeactivateContact { id, .. } => self.deactivate_user(id).await,
            Change::CreateAddition { product, after } => {
                self.create_line(account, product, after).await
            }
            Change::UpdateAddition { id, after, .. } => self.update_line(account, id, after).await,
            Change::CancelAddition { id, .. } => self.remove_line(account, id).await,
            // The planner makes these only for invoice-model systems.
            Change::CreateCustomer { .. }
            | Change::CreateInvoice { .. }
            | Change::UpdateInvoice { .. } => Err(RemoteError::new(
                VENDOR,
                change.kind(),
                RemoteErrorKind::Rejected,
                "HaloPSA bills seats on recurring invoice lines; Halo raises the invoices itself",
            )),
        }
    }
}

/// One change to an invoice's lines, made to the lines as Halo holds them.
enum LineEdit<'a> {
    Update {
        line_id: i64,
        after: &'a AdditionFields,
    },
    Remove {
        line_id: i64,
    },
}

impl LineEdit<'_> {
    /// Edits `lines`; false when they already were as wanted (nothing to write).
    fn apply(
        &self,
        lines: &mut Vec<InvoiceLine>,
        operation: &str,
        invoice_id: i64,
    ) -> Result<bool, RemoteError> {
        match *self {
            LineEdit::Update { line_id, after } => {
                let line = lines.iter_mut().find(|l| l.id == line_id).ok_or_else(|| {
                    RemoteError::new(
                        VENDOR,
                        operation,
                        RemoteErrorKind::NotFound,
                        format!(
                            "recurring invoice {invoice_id} no longer has line {line_id}; \
                             plan again"
                        ),
                    )
                })?;
                let quantity = Decimal::from(after.quantity);
                let changed = line.qty_order != Some(quantity)
                    || line.unit_price != Some(after.unit_price)
                    || line.item_shortdescription.as_deref()
                        != Some(after.invoice_description.as_str());
                line.qty_order = Some(quantity);
                line.unit_price = Some(after.unit_price);
                line.item_shortdescription = Some(after.invoice_description.clone());
                Ok(changed)
            }
            // A line already gone (a retry, or a person removed it) is the end wanted.
            LineEdit::Remove { line_id } => {
                let before = lines.len();
                lines.retain(|l| l.id != line_id);
                Ok(lines.len() != before)
            }
        }
    }
}

/// Turns a Halo error body into one line: Halo answers a refused write with a JSON string or
/// plain text naming the problem, the token endpoint with OAuth's `{error, error_description}`.
pub fn describe_error(status: StatusCode, body: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        let text = match &value {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Object(map) => {
                let field = |k: &str| map.get(k).and_then(|v| v.as_str()).map(str::to_owned);
                match (field("error"), field("error_description")) {
                    (Some(e), Some(d)) => Some(format!("{e}: {d}")),
                    (Some(e), None) => Some(e),
                    _ => field("message").or_else(|| field("Message")),
                }
            }
            _ => None,
        };
        if let Some(text) = text.filter(|t| !t.trim().is_empty()) {
            return text.trim().to_owned();
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return status
            .canonical_reason()
            .unwrap_or("no details given")
            .to_owned();
    }
    let mut short: String = text.chars().take(300).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

fn decode<T: DeserializeOwned>(operation: &str, body: &[u8]) -> Result<T, RemoteError> {
    serde_json::from_slice(body).map_err(|e| {
        RemoteError::new(
            VENDOR,
            operation,
            RemoteErrorKind::Decode,
            format!("unexpected answer: {e}"),
        )
    })
}

/// Halo answers a `POST` of one object with that object, and of several with an array; either
/// is read as the first (only) object.
fn decode_one<T: DeserializeOwned>(operation: &str, body: &[u8]) -> Result<T, RemoteError> {
    let value: serde_json::Value = decode(operation, body)?;
    let one = match value {
        serde_json::Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
        other => other,
    };
    serde_json::from_value(one).map_err(|e| {
        RemoteError::new(
            VENDOR,
            operation,
            RemoteErrorKind::Decode,
            format!("unexpected answer: {e}"),
        )
    })
}

fn created_id(operation: &str, body: &[u8]) -> Result<i64, RemoteError> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: i64,
    }
    let made: Id = decode_one(operation, body)?;
    Ok(made.id)
}

/// Halo's writes take an array of objects.
fn as_array<T: Serialize>(operation: &str, object: &T) -> Result<serde_json::Value, RemoteError> {
    serde_json::to_value([object])
        .map_err(|e| RemoteError::new(VENDOR, operation, RemoteErrorKind::Decode, e.to_string()))
}

fn numeric_id(what: &str, id: &str) -> Result<i64, RemoteError> {
    id.trim().parse().map_err(|_| {
        RemoteError::new(
            VENDOR,
            format!("parse {what} id"),
            RemoteErrorKind::Rejected,
            format!("{what} id {id:?} is not a HaloPSA id (a whole number)"),
        )
    })
}

fn invoice_of(account: &AccountRef, operation: &str) -> Result<i64, RemoteError> {
    let Some(id) = account.agreement_id.as_deref() else {
        return Err(RemoteError::new(
            VENDOR,
            operation,
            RemoteErrorKind::Rejected,
            format!(
                "client {} has no recurring invoice configured, and HaloPSA bills seats as \
                 lines of one: name its reference as the client's `agreement`",
                account.company_id
            ),
        ));
    };
    numeric_id("recurring invoice", id)
}

fn written(id: i64) -> Applied {
    Applied {
        remote_id: id.to_string(),
        reconciled: false,
    }
}

fn adopted(id: i64) -> Applied {
    Applied {
        remote_id: id.to_string(),
        reconciled: true,
    }
}

fn non_empty(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn full_name(fields: &ContactFields) -> String {
    format!("{} {}", fields.first_name.trim(), fields.last_name.trim())
        .trim()
        .to_owned()
}

fn new_user(site_id: i64, fields: &ContactFields, mark: &str) -> User {
    User {
        name: Some(full_name(fields)),
        site_id: Some(site_id),
        firstname: Some(fields.first_name.trim().to_owned()),
        surname: non_empty(Some(&fields.last_name)),
        emailaddress: non_empty(fields.email.as_deref()),
        title: non_empty(fields.title.as_deref()),
        phonenumber: non_empty(fields.phone.as_deref()),
        other5: Some(mark.to_owned()),
        ..User::default()
    }
}

fn contact_fields(user: &User) -> ContactFields {
    // A user made in Halo's screens may carry only `name`: split it as Halo shows it.
    let (first, last) = match (&user.firstname, &user.surname) {
        (None, None) => {
            let name = user.name.as_deref().unwrap_or_default().trim();
            match name.rsplit_once(' ') {
                Some((first, last)) => (first.trim().to_owned(), last.trim().to_owned()),
                None => (name.to_owned(), String::new()),
            }
        }
        (first, last) => (
            first.as_deref().unwrap_or_default().trim().to_owned(),
            last.as_deref().unwrap_or_default().trim().to_owned(),
        ),
    };
    ContactFields {
        first_name: first,
        last_name: last,
        email: non_empty(user.emailaddress.as_deref()),
        title: non_empty(user.title.as_deref()),
        phone: non_empty(user.phonenumber.as_deref()),
    }
}

fn line_product(line: &InvoiceLine) -> Option<&str> {
    line.item_code
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
}

fn actual_addition(
    line: &InvoiceLine,
    product: &str,
    mark: &str,
) -> Result<ActualAddition, RemoteError> {
    let quantity = line.qty_order.unwrap_or(Decimal::ZERO);
    let seats = Some(quantity)
        .filter(|q| q.fract().is_zero())
        .and_then(|q| q.to_u32())
        .ok_or_else(|| {
            RemoteError::new(
                VENDOR,
                "list invoice lines",
                RemoteErrorKind::Decode,
                format!(
                    "recurring invoice line {} ({product}) has quantity {quantity}, which is \
                     not a whole number of seats; correct it in HaloPSA",
                    line.id
                ),
            )
        })?;
    Ok(ActualAddition {
        id: line.id.to_string(),
        product: product.to_owned(),
        fields: AdditionFields {
            quantity: seats,
            unit_price: line.unit_price.unwrap_or(Decimal::ZERO),
            invoice_description: line.item_shortdescription.clone().unwrap_or_default(),
        },
        marked: line.comment_1.as_deref() == Some(mark),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_error_reads_halos_shapes() {
        assert_eq!(
            describe_error(StatusCode::BAD_REQUEST, br#""Please enter a valid Site""#),
            "Please enter a valid Site"
        );
        assert_eq!(
            describe_error(
                StatusCode::UNAUTHORIZED,
                br#"{"error":"invalid_client","error_description":"bad secret"}"#
            ),
            "invalid_client: bad secret"
        );
        assert_eq!(describe_error(StatusCode::BAD_GATEWAY, b""), "Bad Gateway");
    }

    #[test]
    fn a_user_with_only_a_full_name_is_split_as_halo_shows_it() {
        let user = User {
            name: Some("Ada King Lovelace".into()),
            ..User::default()
        };
        let fields = contact_fields(&user);
        assert_eq!(
            (fields.first_name.as_str(), fields.last_name.as_str()),
            ("Ada King", "Lovelace")
        );
    }

    #[test]
    fn fractional_quantities_are_refused_naming_the_line() {
        let line = InvoiceLine {
            id: 41,
            qty_order: Some(Decimal::new(25, 1)),
            ..InvoiceLine::default()
        };
        let err = actual_addition(&line, "M365-BP", "rollcall").expect_err("2.5 seats");
        assert_eq!(err.kind, RemoteErrorKind::Decode);
        assert!(err.message.contains("line 41 (M365-BP)"), "{err}");
    }

    #[test]
    fn one_object_or_an_array_of_one_reads_the_same() {
        let one: User = decode_one("t", br#"{"id":3}"#).expect("object");
        let many: User = decode_one("t", br#"[{"id":3}]"#).expect("array");
        assert_eq!(one, many);
    }
}
