//! Entra ID as a [`Directory`]: the people of one tenant, read through Microsoft Graph v1.0.
//!
//! Everything about retrying lives in [`rollcall_core::http`]; this module signs in, walks
//! Graph's pages and turns Graph's objects ([`crate::model`]) into [`Person`]s.
//!
//! **Signing in.** OAuth2 client credentials against `{login_url}/{tenant}/oauth2/v2.0/token`.
//! The token is cached until shortly before it expires and refreshed under a tokio mutex, so
//! concurrent page reads wait for one refresh rather than each asking for a token. A token
//! Graph refuses mid-run (401: revoked, or expired earlier than announced) is dropped and the
//! call repeated once with a fresh one.
//!
//! **Requests for N users and G groups.** Users come from one collection, `ceil(N / 999)`
//! pages. Group membership could be read per user (`/users/{id}/transitiveMemberOf`: at least N
//! requests, 50,000 for a large tenant) or per group (`/groups/{id}/transitiveMembers`, inverted
//! here: `ceil(G / 999)` pages of groups plus, per group, `ceil(members / 999)` pages, at least
//! G). Tenants have far fewer groups than users, so groups it is; membership pages of different
//! groups are read a few at a time. Licences need one `/subscribedSkus` call for the whole
//! tenant, which turns each `skuId` into its part number (and [`crate::skus`] into a name).
//!
//! **Only the groups the rules name, once per tenant per run.** Inside a run the engine tells
//! each client's directory which groups its rules can tell apart
//! ([`GroupsWanted`]), and hands every directory the run's [`RunShare`](rollcall_core::RunShare):
//! the clients of one tenant and app then share one HTTP client and token and a
//! [`TenantRun`], which reads the users, the group list and the SKUs once, and each group's
//! transitive members once, only for groups some client names (or scopes by, with `group`).
//! Three clients of one tenant cost the paging lower bound of the groups they name, not three
//! times every group's members (BENCHMARKS.md). A person's `groups` then lists only those
//! groups; a rule that looks at groups other than by name (`size(groups)`) reads them all.
//!
//! **Delta.** With `delta: true` the users are read through `/users/delta`: the first run
//! enumerates everyone and returns a [`Cursor`] holding the round's `@odata.deltaLink` and a
//! compact snapshot of the users; a later run follows that link, receives only the users
//! changed since (`@removed` ones leave, changed ones are patched property by property, since
//! Graph reports "at least the changed properties"), and merges them into the snapshot. A link
//! Graph no longer knows (410 Gone, `syncStateNotFound`, `resyncRequired`) or a cursor written
//! for another tenant, app or format means a full read, with a warning.
//!
//! User delta does not report membership changes. Following `/groups/delta` with
//! `members@delta` would, but it reports *direct* members only, so rollcall would have to keep
//! every group's direct members and compute nesting itself — state that can drift from what
//! Graph computes. Memberships are instead re-read on every run, which stays exact but is not
//! free: `ceil(G / 999) + Σ ceil(members / 999)` pages, so a tenant whose groups hold everyone
//! once or twice (an "All Staff" group, departments) pays one to two full user reads' worth of
//! pages per run, delta or not (`benches/read.rs`: 108 membership pages beside 51 user pages
//! for 50,000 users). A delta run saves the user pages and the snapshot keeps them exact; group
//! delta with a local closure is the way to make membership incremental too.
//!
//! **Partial reads.** A page that still fails after the core plumbing's retries ends that walk:
//! what was read is returned as [`Completeness::Incomplete`], so the planner may add seats but
//! never remove them. Only when nothing at all could be read (sign-in refused, the first page
//! unreachable) is the read an error.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use reqwest::{Method, StatusCode};
use rollcall_core::http::{HttpClient, HttpSettings, RateLimit, Reply, RetryPolicy};
use rollcall_core::{
    Attributes, Completeness, Cursor, Directory, DirectoryContext, DirectoryError, DirectoryRead,
    GroupsWanted, License, Person, RemoteError, RemoteErrorKind, Secret, Subscription,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::debug;

use crate::config::{Config, MAX_PAGE_SIZE};
use crate::error::ConfigError;
use crate::model::{
    DirectoryObject, GROUP_SELECT, Group, MEMBER_SELECT, OAuthError, ODataError, Page, SKU_SELECT,
    SubscribedSku, TokenResponse, USER_SELECT, USER_TYPE, User,
};
use crate::skus::friendly_name;

/// The connector's kind, as pipelines name it and errors report it.
pub const VENDOR: &str = "graph";

/// The scope of a client-credentials token for Graph: the app's granted application permissions.
const SCOPE: &str = "https://graph.microsoft.com/.default";

/// Membership lists read at once: enough to hide latency, few enough not to provoke throttling.
const MEMBER_READS_IN_FLIGHT: usize = 4;

/// Refresh a token this long before Graph says it expires (at most half its lifetime), so a
/// page is never sent with a token that dies in flight.
const TOKEN_MARGIN: Duration = Duration::from_secs(300);

/// The cursor format; a cursor of another version is ignored (full read).
const CURSOR_VERSION: u64 = 1;

/// A tenant's people, read through Microsoft Graph. Clones share the HTTP client, its rate limit
/// and call count, and the token; so do the directories one run builds for clients of the same
/// tenant and app ([`DirectoryConfig::build_in`](rollcall_core::DirectoryConfig::build_in)),
/// which also share what the run reads of the tenant.
#[derive(Clone)]
pub struct GraphDirectory {
    source: String,
    client: Result<Arc<Client>, ConfigError>,
    /// The configured `group`: whose members this client's people are.
    group: Option<String>,
    /// The groups this client's rules name: the only memberships it needs read.
    wanted: GroupsWanted,
    /// What this run has read of the tenant, shared by its clients; `None` outside a run,
    /// where every read reads afresh.
    run: Option<Arc<TenantRun>>,
}

/// What one run reads of one tenant, once, whichever of its clients asks first: the users, the
/// group list, each group's transitive members, the SKUs. Only the groups some client's rules
/// name (or scope by) are ever read.
#[derive(Default)]
pub(crate) struct TenantRun {
    users: tokio::sync::OnceCell<Result<Arc<UsersRead>, RemoteError>>,
    groups: tokio::sync::OnceCell<Arc<Walk<Group>>>,
    members: std::sync::Mutex<HashMap<String, Arc<MembersRead>>>,
    skus: tokio::sync::OnceCell<SkusRead>,
}

/// One group's transitive members, read once per run by whichever client asks first.
type MembersRead = tokio::sync::OnceCell<Arc<Walk<DirectoryObject>>>;

/// The users part of a run, with the warnings reading them gave.
struct UsersRead {
    users: Users,
    warnings: Vec<String>,
}

/// skuId (lower case) → part number and the tenant's subscriptions, or why they are unknown.
type SkusRead = Result<(HashMap<String, String>, Vec<Subscription>), String>;

/// The tenant and app a client's directory reads as: directories that agree on all of it share
/// one HTTP client, token and run. Kept in memory only; holds a digest of the secret, so two
/// clients with different secrets for one app never share a sign-in.
fn share_key(config: &Config) -> String {
    use std::hash::{Hash, Hasher};
    let mut secret = std::collections::hash_map::DefaultHasher::new();
    config.client_secret.expose().hash(&mut secret);
    format!(
        "graph|{}|{}|{}|{}|{}|{}|{}|{:x}",
        config.login_url.trim().trim_end_matches('/'),
        config.tenant_id.trim(),
        config.client_id.trim(),
        config.graph_url.trim().trim_end_matches('/'),
        config.page_size,
        config.delta,
        config.rate_limit_per_second,
        secret.finish()
    )
}

/// What the directories of one run built for one tenant and app share.
struct Shared {
    client: Result<Arc<Client>, ConfigError>,
    run: Arc<TenantRun>,
}

impl std::fmt::Debug for GraphDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphDirectory")
            .field("source", &self.source)
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Client {
    pub(crate) http: HttpClient,
    token_url: String,
    /// Graph's versioned base, `{graph_url}/v1.0`.
    pub(crate) graph: String,
    client_id: String,
    secret: Secret,
    page_size: u32,
    delta: bool,
    /// What a cursor must have been written for: tenant, app, endpoints and the properties read.
    cursor_scope: String,
    token: Mutex<TokenCache>,
}

#[derive(Default)]
struct TokenCache {
    current: Option<Token>,
    issued: u64,
}

/// A cached access token. Not `Debug`: it is a credential.
#[derive(Clone)]
struct Token {
    header: HeaderValue,
    refresh_at: Instant,
    generation: u64,
}

impl GraphDirectory {
    /// A directory for the configured tenant, retrying by [`RetryPolicy::default`].
    pub fn new(config: &Config) -> Result<Self, ConfigError> {
        Self::with_retry(config, RetryPolicy::default())
    }

    /// A directory with its own retry policy (tests use millisecond backoffs).
    pub fn with_retry(config: &Config, retry: RetryPolicy) -> Result<Self, ConfigError> {
        let source = describe(config);
        let client = Client::new(config, retry)?;
        Ok(GraphDirectory {
            source,
            client: Ok(Arc::new(client)),
            group: scope_group(config),
            wanted: GroupsWanted::All,
            run: None,
        })
    }

    /// The directory of one client of a run: it reads only the groups `context` says its
    /// rules name, and shares the HTTP client, token and everything read of the tenant with
    /// the run's other clients of the same tenant and app (`retry` as in [`Self::with_retry`]).
    pub fn in_run(config: &Config, context: &DirectoryContext, retry: RetryPolicy) -> Self {
        let shared = context.share.get_or_insert(&share_key(config), || Shared {
            client: Client::new(config, retry).map(Arc::new),
            run: Arc::default(),
        });
        GraphDirectory {
            source: describe(config),
            client: shared.client.clone(),
            group: scope_group(config),
            wanted: context.groups.clone(),
            run: Some(shared.run.clone()),
        }
    }

    /// `DirectoryConfig::build` cannot fail, so a configuration mistake is kept and reported
    /// by the first read, naming the setting.
    pub fn from_config(config: &Config) -> Self {
        match Self::new(config) {
            Ok(directory) => directory,
            Err(error) => GraphDirectory {
                source: describe(config),
                client: Err(error),
                group: scope_group(config),
                wanted: GroupsWanted::All,
                run: None,
            },
        }
    }

    /// Requests sent so far (token requests and retries included).
    pub fn calls(&self) -> u64 {
        self.client.as_ref().map_or(0, |c| c.http.calls())
    }

    /// The signed-in client, or the configuration mistake that keeps it from being built, as
    /// the error of the operation that needed it.
    pub(crate) fn client(&self, operation: &str) -> Result<&Client, RemoteError> {
        self.client.as_deref().map_err(|error| {
            RemoteError::new(
                VENDOR,
                operation,
                RemoteErrorKind::Rejected,
                format!("the Graph connection is misconfigured: {error}"),
            )
        })
    }
}

fn scope_group(config: &Config) -> Option<String> {
    config
        .group
        .as_deref()
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
}

fn describe(config: &Config) -> String {
    match &config.group {
        Some(group) => format!("graph {} (group {group})", config.tenant_id.trim()),
        None => format!("graph {}", config.tenant_id.trim()),
    }
}

#[async_trait]
impl Directory for GraphDirectory {
    fn describe(&self) -> String {
        self.source.clone()
    }

    async fn read(&self, cursor: Option<&Cursor>) -> Result<DirectoryRead, DirectoryError> {
        let client = self
            .client
            .as_ref()
            .map_err(|error| DirectoryError::Unavailable {
                source_name: self.source.clone(),
                message: error.to_string(),
            })?;
        let run = self.run.clone().unwrap_or_default();
        let scope = Scope {
            group: self.group.as_deref(),
            wanted: &self.wanted,
        };
        client
            .read(&run, cursor, scope)
            .await
            .map_err(|failure| match failure {
                Failure::Remote(error) => DirectoryError::Unavailable {
                    source_name: self.source.clone(),
                    message: format!("{error} (hint: {})", hint(&error)),
                },
                Failure::Scope(message) => DirectoryError::Malformed {
                    source_name: self.source.clone(),
                    message,
                },
            })
    }
}

/// Whose people one client's read keeps, and which memberships it needs.
#[derive(Clone, Copy)]
struct Scope<'a> {
    group: Option<&'a str>,
    wanted: &'a GroupsWanted,
}

/// Why a read produced nothing usable.
enum Failure {
    Remote(RemoteError),
    /// The configured `group` does not name exactly one group.
    Scope(String),
}

impl From<RemoteError> for Failure {
    fn from(error: RemoteError) -> Self {
        Failure::Remote(error)
    }
}

fn hint(error: &RemoteError) -> &'static str {
    match error.kind {
        RemoteErrorKind::Unauthorized => {
            "check tenant_id, client_id and client_secret, and that the app registration has the \
             User.Read.All, GroupMember.Read.All and Organization.Read.All application permissions \
             with admin consent"
        }
        RemoteErrorKind::NotFound | RemoteErrorKind::Rejected => {
            "check tenant_id, login_url and graph_url; Graph's message says what it refused"
        }
        RemoteErrorKind::Throttled { .. } => {
            "Graph kept throttling this app; run again later or lower rate_limit_per_second"
        }
        RemoteErrorKind::Server { .. }
        | RemoteErrorKind::Transport
        | RemoteErrorKind::ResponseLost => {
            "Graph is unreachable or failing; run again later (nothing was planned from this read)"
        }
        RemoteErrorKind::Decode => {
            "Graph answered in an unexpected shape; report this with the log"
        }
        // Graph signs in with client credentials: there is no connection to lose, and rollcall
        // only reads from it.
        RemoteErrorKind::ConnectionExpired | RemoteErrorKind::Conflict => error.hint(),
    }
}

/// What walking one collection gave: its items, the delta link a delta round ends with, and the
/// error that cut it short, if one did.
struct Walk<T> {
    items: Vec<T>,
    pages: u32,
    delta_link: Option<String>,
    error: Option<RemoteError>,
}

/// The users part of a read.
struct Users {
    users: BTreeMap<String, Known>,
    delta_link: Option<String>,
    /// Why the users read is not whole, if it is not.
    cut: Option<String>,
}

impl Client {
    fn new(config: &Config, retry: RetryPolicy) -> Result<Client, ConfigError> {
        let login = base_url("login_url", &config.login_url)?;
        let graph = base_url("graph_url", &config.graph_url)?;
        for (field, value) in [
            ("tenant_id", &config.tenant_id),
            ("client_id", &config.client_id),
        ] {
            if value.trim().is_empty() {
                return Err(ConfigError::Empty { field });
            }
        }
        if config.client_secret.expose().is_empty() {
            return Err(ConfigError::Empty {
                field: "client_secret",
            });
        }
        if !(1..=MAX_PAGE_SIZE).contains(&config.page_size) {
            return Err(ConfigError::PageSize(config.page_size));
        }
        let per_second = std::num::NonZeroU32::new(config.rate_limit_per_second)
            .ok_or(ConfigError::RateLimit)?;
        let tenant = config.tenant_id.trim();
        let mut settings = HttpSettings::new(VENDOR, describe_error);
        settings.retry = retry;
        settings.rate_limit = Some(RateLimit::per_second(per_second));
        let http = HttpClient::new(settings).map_err(|e| ConfigError::Url {
            field: "graph_url",
            url: graph.clone(),
            reason: e.message,
        })?;
        Ok(Client {
            http,
            token_url: format!("{login}/{tenant}/oauth2/v2.0/token"),
            cursor_scope: format!(
                "{login}|{tenant}|{}|{graph}|{}",
                config.client_id.trim(),
                USER_SELECT.join(",")
            ),
            graph: format!("{graph}/v1.0"),
            client_id: config.client_id.trim().to_owned(),
            secret: config.client_secret.clone(),
            page_size: config.page_size,
            delta: config.delta,
            token: Mutex::new(TokenCache::default()),
        })
    }

    // -----------------------------------------------------------------------------------------
    // Tokens

    /// A valid token: the cached one, or a fresh one. The lock is held across the request so
    /// that one refresh is in flight at a time.
    async fn token(&self) -> Result<Token, RemoteError> {
        let mut cache = self.token.lock().await;
        if let Some(token) = &cache.current
            && Instant::now() < token.refresh_at
        {
            return Ok(token.clone());
        }
        let operation = "sign in (client credentials)";
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.secret.expose()),
            ("scope", SCOPE),
        ];
        let reply = self
            .http
            .send(operation, || {
                self.http
                    .request(Method::POST, &self.token_url)
                    .header(ACCEPT, "application/json")
                    .form(&form)
            })
            .await?;
        let answer: TokenResponse = decode(operation, &reply.body)?;
        let bad = || {
            RemoteError::new(
                VENDOR,
                operation,
                RemoteErrorKind::Decode,
                "the token endpoint answered without a usable bearer token",
            )
        };
        if !answer.token_type.eq_ignore_ascii_case("bearer") || answer.access_token.is_empty() {
            return Err(bad());
        }
        let mut header =
            HeaderValue::from_str(&format!("Bearer {}", answer.access_token)).map_err(|_| bad())?;
        header.set_sensitive(true);
        let lifetime = Duration::from_secs(answer.expires_in);
        cache.issued += 1;
        let token = Token {
            header,
            // Checked: an absurd `expires_in` would overflow `Instant` and panic.
            refresh_at: Instant::now()
                .checked_add(lifetime - TOKEN_MARGIN.min(lifetime / 2))
                .unwrap_or_else(|| Instant::now() + TOKEN_MARGIN),
            generation: cache.issued,
        };
        cache.current = Some(token.clone());
        debug!(expires_in = answer.expires_in, "Signed in to Graph.");
        Ok(token)
    }

    /// Drops a token Graph refused, unless another task has already replaced it.
    async fn forget(&self, generation: u64) {
        let mut cache = self.token.lock().await;
        if cache
            .current
            .as_ref()
            .is_some_and(|t| t.generation == generation)
        {
            cache.current = None;
        }
    }

    // -----------------------------------------------------------------------------------------
    // Requests

    /// Runs `attempt` with a bearer token (the `Authorization` header's value); a 401 costs
    /// one fresh token and one repeat, never more. Writes go through here; retries of
    /// transient failures are the core plumbing's, inside `attempt`.
    pub(crate) async fn authorized<R>(
        &self,
        mut attempt: impl AsyncFnMut(HeaderValue) -> Result<R, RemoteError>,
    ) -> Result<R, RemoteError> {
        let token = self.token().await?;
        match attempt(token.header.clone()).await {
            Err(error) if status_of(&error) == Some(401) => {
                debug!("Graph refused the token; signing in again.");
                self.forget(token.generation).await;
                let token = self.token().await?;
                attempt(token.header.clone()).await
            }
            other => other,
        }
    }

    /// A GET against Graph with a bearer token; a 401 (a token revoked or expired early) costs
    /// one fresh token and one repeat, never more.
    async fn get(&self, operation: &str, url: &str, delta: bool) -> Result<Reply, RemoteError> {
        let token = self.token().await?;
        match self.send_get(operation, url, delta, &token).await {
            Err(error) if status_of(&error) == Some(401) => {
                debug!(operation, "Graph refused the token; signing in again.");
                self.forget(token.generation).await;
                let token = self.token().await?;
                self.send_get(operation, url, delta, &token).await
            }
            other => other,
        }
    }

    async fn send_get(
        &self,
        operation: &str,
        url: &str,
        delta: bool,
        token: &Token,
    ) -> Result<Reply, RemoteError> {
        self.http
            .send(operation, || {
                let request = self
                    .http
                    .request(Method::GET, url)
                    .header(AUTHORIZATION, token.header.clone())
                    .header(ACCEPT, "application/json");
                // Delta functions page by preference rather than `$top`.
                if delta {
                    request.header("Prefer", format!("odata.maxpagesize={}", self.page_size))
                } else {
                    request
                }
            })
            .await
    }

    /// Every page of a collection, following `@odata.nextLink` verbatim until it is absent.
    async fn walk<T: DeserializeOwned>(
        &self,
        operation: &str,
        first: String,
        delta: bool,
    ) -> Walk<T> {
        let mut walk = Walk {
            items: Vec::new(),
            pages: 0,
            delta_link: None,
            error: None,
        };
        let mut url = first;
        loop {
            let page: Page<T> = match self
                .get(operation, &url, delta)
                .await
                .and_then(|reply| decode(operation, &reply.body))
            {
                Ok(page) => page,
                Err(error) => {
                    walk.error = Some(error);
                    return walk;
                }
            };
            walk.pages += 1;
            walk.items.extend(page.value);
            match page.next_link {
                Some(next) => url = next,
                None => {
                    walk.delta_link = page.delta_link;
                    return walk;
                }
            }
        }
    }

    fn select(fields: &[&str]) -> String {
        fields.join(",")
    }

    // -----------------------------------------------------------------------------------------
    // The read

    async fn read(
        &self,
        run: &TenantRun,
        cursor: Option<&Cursor>,
        need: Scope<'_>,
    ) -> Result<DirectoryRead, Failure> {
        let mut warnings = Vec::new();
        let mut cut: Vec<String> = Vec::new();
        // Sign in first: refused credentials are an error, not an empty tenant.
        self.token().await?;

        let read = run
            .users
            .get_or_init(|| async {
                let mut warnings = Vec::new();
                let users = self.read_users(cursor, &mut warnings).await?;
                Ok(Arc::new(UsersRead { users, warnings }))
            })
            .await
            .clone()?;
        warnings.extend(read.warnings.iter().cloned());
        let users = &read.users;
        cut.extend(users.cut.clone());

        let (memberships, scope) = self.read_memberships(run, need, &mut cut).await?;
        let skus = run.skus.get_or_init(|| self.read_skus()).await;
        let (skus, subscriptions) = match skus {
            Ok((ids, subscriptions)) => (Some(ids), subscriptions.clone()),
            Err(why) => {
                cut.push(why.clone());
                (None, Vec::new())
            }
        };

        let mut unknown_skus = BTreeSet::new();
        let mut people = Vec::with_capacity(users.users.len());
        for known in users.users.values() {
            if let Some(scope) = &scope
                && !scope.contains(&known.id)
            {
                continue;
            }
            let groups = memberships.get(&known.id).cloned().unwrap_or_default();
            people.push(known.person(groups, skus, &mut unknown_skus));
        }
        if skus.is_some() {
            for sku in unknown_skus {
                warnings.push(format!(
                    "licence {sku} is assigned but /subscribedSkus does not list it; it is \
                     reported by its id"
                ));
            }
        }
        let completeness = if cut.is_empty() {
            Completeness::Complete
        } else {
            warnings.extend(cut.iter().cloned());
            Completeness::Incomplete {
                reason: cut.join("; "),
            }
        };
        let cursor = match (&users.delta_link, &users.cut) {
            (Some(link), None) if self.delta => Some(
                Snapshot {
                    v: CURSOR_VERSION,
                    scope: self.cursor_scope.clone(),
                    delta_link: link.clone(),
                    users: users.users.values().cloned().collect(),
                }
                .into_cursor(),
            ),
            _ => None,
        };
        Ok(DirectoryRead {
            people,
            completeness,
            warnings,
            cursor,
            subscriptions,
        })
    }

    async fn read_users(
        &self,
        cursor: Option<&Cursor>,
        warnings: &mut Vec<String>,
    ) -> Result<Users, RemoteError> {
        let select = Self::select(USER_SELECT);
        if !self.delta {
            let url = format!(
                "{}/users?$select={select}&$top={}",
                self.graph, self.page_size
            );
            let walk: Walk<User> = self.walk("list users", url, false).await;
            return users_from_full(walk);
        }
        let snapshot = cursor.and_then(|c| Snapshot::from_cursor(c, &self.cursor_scope));
        if cursor.is_some() && snapshot.is_none() {
            warnings.push(
                "the stored delta state was written for another tenant, app or version; \
                 reading every user"
                    .to_owned(),
            );
        }
        let full = format!("{}/users/delta?$select={select}", self.graph);
        let Some(snapshot) = snapshot else {
            let walk: Walk<User> = self.walk("read users (delta, full)", full, true).await;
            return users_from_full(walk);
        };
        let walk: Walk<User> = self
            .walk(
                "read user changes (delta)",
                snapshot.delta_link.clone(),
                true,
            )
            .await;
        if let Some(error) = &walk.error {
            if needs_resync(error) {
                warnings.push(format!(
                    "Graph no longer knows the stored delta link ({}); reading every user again",
                    error.message
                ));
                let walk: Walk<User> = self.walk("read users (delta, full)", full, true).await;
                return users_from_full(walk);
            }
            if walk.pages == 0 {
                return Err(error.clone());
            }
        }
        let mut users: BTreeMap<String, Known> = snapshot
            .users
            .into_iter()
            .map(|k| (k.id.clone(), k))
            .collect();
        let changes = walk.items.len();
        for change in walk.items {
            if change.removed.is_some() {
                users.remove(&change.id);
            } else {
                users
                    .entry(change.id.clone())
                    .or_insert_with(|| Known::new(&change.id))
                    .apply(&change);
            }
        }
        debug!(changes, pages = walk.pages, "Merged Graph user changes.");
        Ok(Users {
            users,
            delta_link: walk.delta_link,
            cut: walk.error.map(|e| {
                format!(
                    "reading user changes stopped after {} pages: {e}",
                    walk.pages
                )
            }),
        })
    }

    /// The transitive members of every group the client's rules name (all groups when they
    /// look at groups otherwise), inverted to user id → group names; and, with `group`
    /// configured, the ids of that group's members. Each group is read once per run, whichever
    /// client of the tenant needs it first.
    async fn read_memberships(
        &self,
        run: &TenantRun,
        need: Scope<'_>,
        cut: &mut Vec<String>,
    ) -> Result<(HashMap<String, Vec<String>>, Option<BTreeSet<String>>), Failure> {
        let walk = run
            .groups
            .get_or_init(|| async {
                let url = format!(
                    "{}/groups?$select={}&$top={}",
                    self.graph,
                    Self::select(GROUP_SELECT),
                    self.page_size
                );
                Arc::new(self.walk("list groups", url, false).await)
            })
            .await
            .clone();
        if let Some(error) = &walk.error {
            cut.push(format!(
                "listing groups stopped after {} pages: {error}",
                walk.pages
            ));
        }
        let groups = &walk.items;
        let scope_id = match need.group {
            None => None,
            Some(wanted) => {
                let matches: Vec<&Group> = groups
                    .iter()
                    .filter(|g| {
                        g.id.eq_ignore_ascii_case(wanted)
                            || g.display_name
                                .as_deref()
                                .is_some_and(|n| n.eq_ignore_ascii_case(wanted))
                    })
                    .collect();
                match matches.as_slice() {
                    [one] => Some(one.id.clone()),
                    [] => {
                        // The group may be on a page never read: nothing can be scoped.
                        if let Some(error) = &walk.error {
                            return Err(Failure::Remote(error.clone()));
                        }
                        return Err(Failure::Scope(format!(
                            "no group is named {wanted:?} or has that id (hint: write the group's \
                             display name or object id as Entra shows it)"
                        )));
                    }
                    _ => {
                        return Err(Failure::Scope(format!(
                            "{} groups are named {wanted:?} (hint: write the group's object id \
                             instead)",
                            matches.len()
                        )));
                    }
                }
            }
        };
        let select = Self::select(MEMBER_SELECT);
        // Built as a list first: a stream over a borrowing closure trips the `Send` check of
        // the async trait's future (rust-lang/rust#64552).
        let mut pending = Vec::with_capacity(groups.len());
        for group in groups {
            let name = group.display_name.as_deref().unwrap_or(&group.id);
            if !need.wanted.wants(name) && scope_id.as_deref() != Some(group.id.as_str()) {
                continue;
            }
            let url = format!(
                "{}/groups/{}/transitiveMembers?$select={select}&$top={}",
                self.graph, group.id, self.page_size
            );
            let cell = run
                .members
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .entry(group.id.clone())
                .or_default()
                .clone();
            pending.push(async move {
                let walk = cell
                    .get_or_init(|| async {
                        Arc::new(self.walk("list a group's members", url, false).await)
                    })
                    .await
                    .clone();
                (group, walk)
            });
        }
        let reads = futures::stream::iter(pending)
            .buffer_unordered(MEMBER_READS_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await;
        let mut memberships: HashMap<String, Vec<String>> = HashMap::new();
        let mut scope = None;
        for (group, walk) in reads {
            let name = group
                .display_name
                .clone()
                .unwrap_or_else(|| group.id.clone());
            if let Some(error) = &walk.error {
                cut.push(format!(
                    "reading the members of group {name:?} stopped after {} pages: {error}",
                    walk.pages
                ));
            }
            let users = walk
                .items
                .iter()
                .filter(|m| m.odata_type.as_deref().is_none_or(|t| t == USER_TYPE))
                .map(|m| m.id.clone());
            if scope_id.as_deref() == Some(group.id.as_str()) {
                let ids: BTreeSet<String> = users.collect();
                for id in &ids {
                    memberships
                        .entry(id.clone())
                        .or_default()
                        .push(name.clone());
                }
                scope = Some(ids);
            } else {
                for id in users {
                    memberships.entry(id).or_default().push(name.clone());
                }
            }
        }
        for names in memberships.values_mut() {
            names.sort();
            names.dedup();
        }
        Ok((memberships, scope))
    }

    /// skuId (lower case) → part number, and the tenant's subscriptions (bought and
    /// assigned), or why the list could not be read.
    async fn read_skus(&self) -> SkusRead {
        let url = format!(
            "{}/subscribedSkus?$select={}",
            self.graph,
            Self::select(SKU_SELECT)
        );
        let walk: Walk<SubscribedSku> = self.walk("list subscribed SKUs", url, false).await;
        if let Some(error) = walk.error {
            return Err(format!(
                "licences could not be resolved to SKU part numbers: {error}"
            ));
        }
        let subscriptions = walk
            .items
            .iter()
            .filter_map(|sku| {
                let part = sku.sku_part_number.clone()?;
                Some(Subscription {
                    name: friendly_name(&part).to_owned(),
                    sku: part,
                    purchased: sku
                        .prepaid_units
                        .as_ref()
                        .and_then(|u| u.enabled)
                        .unwrap_or(0)
                        .max(0) as u32,
                    assigned: sku.consumed_units.unwrap_or(0).max(0) as u32,
                })
            })
            .collect();
        let ids = walk
            .items
            .into_iter()
            .filter_map(|sku| Some((sku.sku_id?.to_ascii_lowercase(), sku.sku_part_number?)))
            .collect();
        Ok((ids, subscriptions))
    }
}

fn users_from_full(walk: Walk<User>) -> Result<Users, RemoteError> {
    if let Some(error) = &walk.error
        && walk.pages == 0
    {
        return Err(error.clone());
    }
    let mut users = BTreeMap::new();
    for user in walk.items {
        // A first delta round lists no removals, but a full read must not keep one either.
        if user.removed.is_some() {
            continue;
        }
        let mut known = Known::new(&user.id);
        known.apply(&user);
        users.insert(user.id.clone(), known);
    }
    Ok(Users {
        users,
        delta_link: walk.delta_link,
        cut: walk
            .error
            .map(|e| format!("reading users stopped after {} pages: {e}", walk.pages)),
    })
}

/// Graph wants a full resync: the delta link expired or is unknown.
fn needs_resync(error: &RemoteError) -> bool {
    status_of(error) == Some(410)
        || ["syncStateNotFound", "resyncRequired", "syncStateInvalid"]
            .iter()
            .any(|code| error.message.contains(code))
}

/// The HTTP status of a refused call: the core plumbing starts the message with it
/// (`"410 Gone: …"`).
fn status_of(error: &RemoteError) -> Option<u16> {
    error.message.get(..3)?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// The snapshot kept in the cursor

/// What rollcall remembers of a user between delta rounds: the selected properties, with short
/// keys because a large tenant's snapshot is tens of thousands of these. Groups and licence
/// names are not kept: they are read afresh every run.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
struct Known {
    #[serde(rename = "i")]
    id: String,
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    display_name: Option<String>,
    #[serde(rename = "g", default, skip_serializing_if = "Option::is_none")]
    given_name: Option<String>,
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    surname: Option<String>,
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    mail: Option<String>,
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    upn: Option<String>,
    #[serde(rename = "e", default)]
    enabled: bool,
    #[serde(rename = "l", default, skip_serializing_if = "Vec::is_empty")]
    skus: Vec<String>,
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    job_title: Option<String>,
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    department: Option<String>,
}

impl Known {
    fn new(id: &str) -> Known {
        Known {
            id: id.to_owned(),
            ..Known::default()
        }
    }

    /// Applies the properties a user object carries; absent ones keep their value.
    fn apply(&mut self, user: &User) {
        let set = |slot: &mut Option<String>, value: &Option<Option<String>>| {
            if let Some(value) = value {
                slot.clone_from(value);
            }
        };
        set(&mut self.display_name, &user.display_name);
        set(&mut self.given_name, &user.given_name);
        set(&mut self.surname, &user.surname);
        set(&mut self.mail, &user.mail);
        set(&mut self.upn, &user.user_principal_name);
        set(&mut self.job_title, &user.job_title);
        set(&mut self.department, &user.department);
        if let Some(enabled) = user.account_enabled {
            // Graph never reports a user without `accountEnabled`; unknown counts as disabled,
            // so a doubtful account is not billed.
            self.enabled = enabled.unwrap_or(false);
        }
        if let Some(licenses) = &user.assigned_licenses {
            self.skus = licenses
                .iter()
                .flatten()
                .filter_map(|l| l.sku_id.as_deref())
                .map(str::to_ascii_lowercase)
                .collect();
            self.skus.sort();
            self.skus.dedup();
        }
    }

    fn person(
        &self,
        groups: Vec<String>,
        skus: Option<&HashMap<String, String>>,
        unknown: &mut BTreeSet<String>,
    ) -> Person {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let mut licenses: Vec<License> = self
            .skus
            .iter()
            .map(|id| match skus.and_then(|s| s.get(id)) {
                Some(part) => License {
                    sku: part.clone(),
                    name: friendly_name(part).to_owned(),
                },
                None => {
                    unknown.insert(id.clone());
                    License {
                        sku: id.clone(),
                        name: String::new(),
                    }
                }
            })
            .collect();
        licenses.sort();
        let mut attributes = Attributes::new();
        for (key, value) in [
            ("jobTitle", &self.job_title),
            ("department", &self.department),
        ] {
            if let Some(value) = value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
                attributes.insert(key.into(), value.to_owned());
            }
        }
        Person {
            id: self.id.clone(),
            // Entra has no sAMAccountName for cloud users: the UPN's local part is the login.
            username: self
                .upn
                .as_deref()
                .map(|u| u.split('@').next().unwrap_or(u).to_owned())
                .unwrap_or_default(),
            given_name: text(&self.given_name),
            surname: text(&self.surname),
            display_name: text(&self.display_name),
            email: self.mail.clone().filter(|m| !m.is_empty()),
            upn: self.upn.clone(),
            enabled: self.enabled,
            groups,
            licenses,
            attributes,
        }
    }
}

/// The cursor's content: which source it belongs to, where the next delta round starts, and
/// everyone known after the last round.
#[derive(Debug, Serialize, Deserialize)]
struct Snapshot {
    v: u64,
    scope: String,
    #[serde(rename = "deltaLink")]
    delta_link: String,
    users: Vec<Known>,
}

impl Snapshot {
    fn into_cursor(self) -> Cursor {
        // Serializing plain strings and booleans cannot fail; if it somehow did, no cursor only
        // costs the next run a full read.
        Cursor(serde_json::to_value(self).unwrap_or(serde_json::Value::Null))
    }

    /// The snapshot in a cursor, if it was written by this version for this same source.
    fn from_cursor(cursor: &Cursor, scope: &str) -> Option<Snapshot> {
        // Read in place: a large tenant's snapshot is megabytes, not worth a copy.
        let snapshot = Snapshot::deserialize(&cursor.0).ok()?;
        (snapshot.v == CURSOR_VERSION && snapshot.scope == scope).then_some(snapshot)
    }
}

// ---------------------------------------------------------------------------------------------
// Plumbing

/// A login or Graph address as given, without a trailing slash; it must be http(s) and carry no
/// path, since rollcall appends `/{tenant}/oauth2/…` and `/v1.0/…` itself.
fn base_url(field: &'static str, url: &str) -> Result<String, ConfigError> {
    let base = url.trim().trim_end_matches('/').to_owned();
    let invalid = |reason: &str| ConfigError::Url {
        field,
        url: base.clone(),
        reason: reason.to_owned(),
    };
    let parsed = reqwest::Url::parse(&base).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(
            "the scheme must be https (or http for the sandbox)",
        ));
    }
    if parsed.path() != "/" && !parsed.path().is_empty() {
        return Err(invalid("it must not have a path"));
    }
    Ok(base)
}

/// Turns Graph's and the token endpoint's error bodies into one readable line: Graph's
/// `{"error":{"code","message","innerError":{"request-id","date"}}}` keeps the code and the
/// request id Microsoft support asks for; the token endpoint's `{"error","error_description"}`
/// keeps the first line of the description (the rest is trace ids and a timestamp).
pub fn describe_error(status: StatusCode, body: &[u8]) -> String {
    if let Ok(odata) = serde_json::from_slice::<ODataError>(body) {
        let error = odata.error;
        let mut text = format!("{} ({})", error.message.trim(), error.code);
        if let Some(inner) = error.inner_error {
            match (inner.request_id, inner.date) {
                (Some(id), Some(date)) => text.push_str(&format!(" [request-id {id}, {date}]")),
                (Some(id), None) => text.push_str(&format!(" [request-id {id}]")),
                _ => {}
            }
        }
        return text;
    }
    if let Ok(oauth) = serde_json::from_slice::<OAuthError>(body) {
        let first = oauth
            .error_description
            .lines()
            .next()
            .unwrap_or_default()
            .trim();
        return if first.is_empty() {
            oauth.error
        } else {
            format!("{first} ({})", oauth.error)
        };
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return status
            .canonical_reason()
            .unwrap_or("no details given")
            .to_owned();
    }
    // An HTML error page or a proxy's text: keep enough to recognise it.
    let mut short: String = text.chars().take(300).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

pub(crate) fn decode<T: DeserializeOwned>(operation: &str, body: &[u8]) -> Result<T, RemoteError> {
    serde_json::from_slice(body).map_err(|e| {
        RemoteError::new(
            VENDOR,
            operation,
            RemoteErrorKind::Decode,
            format!("unexpected answer: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_error_reads_both_error_shapes() {
        let graph = br#"{"error":{"code":"Request_ResourceNotFound","message":"Resource 'x' does not exist.",
            "innerError":{"request-id":"r-1","date":"2026-01-01T00:00:00"}}}"#;
        assert_eq!(
            describe_error(StatusCode::NOT_FOUND, graph),
            "Resource 'x' does not exist. (Request_ResourceNotFound) [request-id r-1, 2026-01-01T00:00:00]"
        );
        let oauth = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 1\r\nCorrelation ID: 2"}"#;
        assert_eq!(
            describe_error(StatusCode::UNAUTHORIZED, oauth),
            "AADSTS7000215: Invalid client secret provided. (invalid_client)"
        );
        assert_eq!(describe_error(StatusCode::BAD_GATEWAY, b""), "Bad Gateway");
    }

    #[test]
    fn a_patch_changes_only_the_properties_it_carries() {
        let mut known = Known::new("1");
        known.apply(
            &serde_json::from_str::<User>(
                r#"{"id":"1","displayName":"Ann","mail":"ann@x.test","accountEnabled":true,
                    "assignedLicenses":[{"skuId":"AAAA","disabledPlans":[]}]}"#,
            )
            .expect("user"),
        );
        known.apply(
            &serde_json::from_str::<User>(r#"{"id":"1","mail":null,"accountEnabled":false}"#)
                .expect("patch"),
        );
        assert_eq!(known.display_name.as_deref(), Some("Ann"));
        assert_eq!(known.mail, None);
        assert!(!known.enabled);
        assert_eq!(known.skus, vec!["aaaa".to_owned()]);
    }

    #[test]
    fn a_cursor_for_another_source_or_version_is_not_used() {
        let snapshot = Snapshot {
            v: CURSOR_VERSION,
            scope: "a".to_owned(),
            delta_link: "https://graph/delta?$deltatoken=1".to_owned(),
            users: vec![Known::new("1")],
        };
        let cursor = snapshot.into_cursor();
        assert!(Snapshot::from_cursor(&cursor, "a").is_some());
        assert!(Snapshot::from_cursor(&cursor, "b").is_none());
        assert!(Snapshot::from_cursor(&Cursor(serde_json::json!({"v": 99})), "a").is_none());
        assert!(!format!("{cursor:?}").contains("deltatoken"));
    }

    #[test]
    fn addresses_must_be_bare_http_urls() {
        assert_eq!(
            base_url("graph_url", "https://graph.microsoft.com/").as_deref(),
            Ok("https://graph.microsoft.com")
        );
        assert!(base_url("graph_url", "https://graph.microsoft.com/v1.0").is_err());
        assert!(base_url("graph_url", "ftp://x").is_err());
        assert!(base_url("graph_url", "not a url").is_err());
    }
}
