//! OAuth2 connections to accounting systems, made so a rotated refresh token is never lost.
//!
//! QuickBooks and Xero hand out a new refresh token on every refresh and retire the old one.
//! Two things would then break a customer's connection for good (a person must reconnect by
//! hand): two runs refreshing the same connection at once, or a process that dies after the
//! vendor rotated the token but before it wrote the new one down. So a refresh happens only
//! through [`TokenVault::rotate`], which holds the connection's lock (across processes, for the
//! store behind it), re-reads the stored tokens — another run may have refreshed already — and
//! saves the new pair before anyone uses the new access token.
//!
//! The token endpoint itself is the same standard form POST for every vendor
//! ([`TokenEndpoint`]); only the vendor's URLs and client authentication differ.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{RemoteError, RemoteErrorKind};
use crate::secret::Secret;

/// An access token with the refresh token that renews it, as stored for one connection.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSet {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The organisation the connection reaches: Xero's tenant id, QuickBooks' realm id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .field("tenant", &self.tenant)
            .finish()
    }
}

impl TokenSet {
    /// Whether the access token should be renewed before use: it expires within a minute, so
    /// a request sent now could arrive with a dead token.
    pub fn expires_soon(&self, now: DateTime<Utc>) -> bool {
        // Checked: a stored time at the edge of chrono's range would panic on `-`.
        self.expires_at
            .checked_sub_signed(chrono::TimeDelta::seconds(60))
            .is_none_or(|renew_at| renew_at <= now)
    }
}

/// When a token the vendor says lives `expires_in` seconds from `now` expires. A negative or
/// absurd lifetime (past chrono's range) is no reason to panic: negative is already expired,
/// too large is as far as time goes.
pub fn expiry(now: DateTime<Utc>, expires_in: i64) -> DateTime<Utc> {
    chrono::TimeDelta::try_seconds(expires_in.max(0))
        .and_then(|lifetime| now.checked_add_signed(lifetime))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A failure of the token store itself (not of the vendor).
#[derive(Debug, Clone, thiserror::Error)]
pub enum VaultError {
    #[error("no OAuth connection named `{0}` is stored; run `rollcall connect` for it first")]
    Missing(String),
    #[error("token store: {0}")]
    Store(String),
}

impl From<VaultError> for RemoteError {
    fn from(e: VaultError) -> Self {
        let kind = match e {
            VaultError::Missing(_) => RemoteErrorKind::ConnectionExpired,
            VaultError::Store(_) => RemoteErrorKind::Transport,
        };
        RemoteError::new("token store", "oauth connection", kind, e.to_string())
    }
}

/// A boxed future, for the refresh callback handed to [`TokenVault::rotate`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The vendor call that turns the stored tokens into new ones.
pub type Refresh<'a> =
    Box<dyn FnOnce(TokenSet) -> BoxFuture<'a, Result<TokenSet, RemoteError>> + Send + 'a>;

/// Where OAuth tokens live: rollcall's store on one machine, Redis-locked across many.
#[async_trait]
pub trait TokenVault: Send + Sync {
    async fn load(&self, connection: &str) -> Result<Option<TokenSet>, VaultError>;

    /// Stores a connection's tokens as they are (after `rollcall connect`).
    async fn save(&self, connection: &str, tokens: &TokenSet) -> Result<(), VaultError>;

    /// Refreshes the connection once, however many ask at the same time. Under the connection's
    /// exclusive lock: reads the stored tokens; if their access token is no longer `stale_access`
    /// someone else refreshed meanwhile, and the stored tokens are returned as they are;
    /// otherwise `refresh` is called with them and its answer is saved before it is returned.
    /// A failed refresh saves nothing.
    async fn rotate(
        &self,
        connection: &str,
        stale_access: &str,
        refresh: Refresh<'_>,
    ) -> Result<TokenSet, RemoteError>;
}

/// A vault in memory, for tests, sandboxes and one-shot runs with tokens from the environment.
#[derive(Debug, Default)]
pub struct MemoryVault {
    tokens: tokio::sync::Mutex<std::collections::HashMap<String, TokenSet>>,
}

#[async_trait]
impl TokenVault for MemoryVault {
    async fn load(&self, connection: &str) -> Result<Option<TokenSet>, VaultError> {
        Ok(self.tokens.lock().await.get(connection).cloned())
    }

    async fn save(&self, connection: &str, tokens: &TokenSet) -> Result<(), VaultError> {
        self.tokens
            .lock()
            .await
            .insert(connection.to_owned(), tokens.clone());
        Ok(())
    }

    async fn rotate(
        &self,
        connection: &str,
        stale_access: &str,
        refresh: Refresh<'_>,
    ) -> Result<TokenSet, RemoteError> {
        // The map's lock is held across the vendor call on purpose: it is the connection lock.
        let mut tokens = self.tokens.lock().await;
        let stored = tokens
            .get(connection)
            .cloned()
            .ok_or_else(|| VaultError::Missing(connection.to_owned()))?;
        if stored.access_token != stale_access {
            return Ok(stored);
        }
        let fresh = refresh(stored).await?;
        tokens.insert(connection.to_owned(), fresh.clone());
        Ok(fresh)
    }
}

/// How a vendor wants the app's own credentials at its token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// HTTP Basic with client id and secret (QuickBooks; Xero accepts it too).
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Form,
}

/// A vendor's OAuth2 token endpoint and the app registered with it.
#[derive(Debug, Clone)]
pub struct TokenEndpoint {
    pub vendor: &'static str,
    pub url: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub auth: ClientAuth,
}

/// The standard token response (RFC 6749 §5.1).
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    expires_in: i64,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Deserialize)]
struct TokenErrorBody {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

impl TokenEndpoint {
    /// Trades an authorization code from the consent redirect for the first token pair.
    pub async fn exchange_code(
        &self,
        http: &reqwest::Client,
        code: &str,
        redirect_uri: &str,
    ) -> Result<TokenSet, RemoteError> {
        self.post(
            http,
            "exchange authorization code",
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
            ],
            None,
        )
        .await
    }

    /// Uses the refresh token once. The answer carries the rotated refresh token (or, from a
    /// vendor that does not rotate, none, and the old one stays valid).
    pub async fn refresh(
        &self,
        http: &reqwest::Client,
        tokens: &TokenSet,
    ) -> Result<TokenSet, RemoteError> {
        let mut fresh = self
            .post(
                http,
                "refresh access token",
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &tokens.refresh_token),
                ],
                Some(&tokens.refresh_token),
            )
            .await?;
        fresh.tenant = tokens.tenant.clone();
        Ok(fresh)
    }

    async fn post(
        &self,
        http: &reqwest::Client,
        operation: &str,
        form: &[(&str, &str)],
        old_refresh: Option<&str>,
    ) -> Result<TokenSet, RemoteError> {
        let fail = |kind, message: String| RemoteError::new(self.vendor, operation, kind, message);
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        let mut request = http.post(&self.url).timeout(Duration::from_secs(30));
        match self.auth {
            ClientAuth::Basic => {
                request = request.basic_auth(&self.client_id, Some(self.client_secret.expose()));
            }
            ClientAuth::Form => {
                fields.push(("client_id", &self.client_id));
                fields.push(("client_secret", self.client_secret.expose()));
            }
        }
        let response = request
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&fields)
            .send()
            .await
            .map_err(|e| {
                // A refresh whose answer is lost may have rotated the token at the vendor: the
                // operator must know, since the stored refresh token may now be spent.
                let kind = if e.is_connect() {
                    RemoteErrorKind::Transport
                } else {
                    RemoteErrorKind::ResponseLost
                };
                fail(
                    kind,
                    format!("token endpoint unreachable: {}", e.without_url()),
                )
            })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| {
            fail(
                RemoteErrorKind::ResponseLost,
                format!("token answer lost: {}", e.without_url()),
            )
        })?;
        if !status.is_success() {
            let (code, detail) = match serde_json::from_slice::<TokenErrorBody>(&body) {
                Ok(b) => (b.error, b.error_description.unwrap_or_default()),
                Err(_) => (status.to_string(), String::new()),
            };
            let kind = match (status.as_u16(), code.as_str()) {
                // A spent, expired or revoked refresh token: only a person can reconnect.
                (_, "invalid_grant") | (401, _) => RemoteErrorKind::ConnectionExpired,
                (429, _) => RemoteErrorKind::Throttled { retry_after: None },
                (s, _) if s >= 500 => RemoteErrorKind::Server { status: s },
                _ => RemoteErrorKind::Rejected,
            };
            return Err(fail(
                kind,
                format!("{status} {code} {detail}").trim().to_owned(),
            ));
        }
        let answer: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            fail(
                RemoteErrorKind::Decode,
                format!("token answer is not a standard token response: {e}"),
            )
        })?;
        Ok(TokenSet {
            access_token: answer.access_token,
            refresh_token: answer
                .refresh_token
                .or_else(|| old_refresh.map(str::to_owned))
                .ok_or_else(|| {
                    fail(
                        RemoteErrorKind::Decode,
                        "the token answer has no refresh_token; was the offline_access scope asked for?"
                            .into(),
                    )
                })?,
            expires_at: expiry(Utc::now(), answer.expires_in),
            scope: answer.scope,
            tenant: None,
        })
    }
}

/// One connection's tokens in use by a connector: hands out a live access token, refreshing
/// through the vault (once across runs) when it is about to expire or was refused.
pub struct OAuthSession {
    vault: Arc<dyn TokenVault>,
    connection: String,
    endpoint: TokenEndpoint,
    http: reqwest::Client,
    current: tokio::sync::Mutex<Option<TokenSet>>,
}

impl std::fmt::Debug for OAuthSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthSession")
            .field("connection", &self.connection)
            .field("endpoint", &self.endpoint.url)
            .finish_non_exhaustive()
    }
}

impl OAuthSession {
    pub fn new(
        vault: Arc<dyn TokenVault>,
        connection: impl Into<String>,
        endpoint: TokenEndpoint,
    ) -> Self {
        OAuthSession {
            vault,
            connection: connection.into(),
            endpoint,
            http: reqwest::Client::new(),
            current: tokio::sync::Mutex::new(None),
        }
    }

    pub fn connection(&self) -> &str {
        &self.connection
    }

    /// Tokens whose access token is good for at least a minute.
    pub async fn tokens(&self) -> Result<TokenSet, RemoteError> {
        let mut current = self.current.lock().await;
        let tokens = match current.take() {
            Some(t) => t,
            None => self
                .vault
                .load(&self.connection)
                .await?
                .ok_or_else(|| VaultError::Missing(self.connection.clone()))?,
        };
        let tokens = if tokens.expires_soon(Utc::now()) {
            self.rotate(&tokens.access_token).await?
        } else {
            tokens
        };
        *current = Some(tokens.clone());
        Ok(tokens)
    }

    /// Sends a request with a live access token through `http` (rate limit, retries); a 401
    /// refreshes the token — once across runs, through the vault — and sends it once more.
    /// `build` makes the request for the tokens it is given.
    pub async fn send(
        &self,
        http: &crate::http::HttpClient,
        operation: &str,
        build: impl Fn(&TokenSet) -> reqwest::RequestBuilder,
    ) -> Result<crate::http::Reply, RemoteError> {
        let tokens = self.tokens().await?;
        match http.send(operation, || build(&tokens)).await {
            Err(e) if e.kind == RemoteErrorKind::Unauthorized => {
                let fresh = self.refused(&tokens.access_token).await?;
                http.send(operation, || build(&fresh)).await
            }
            other => other,
        }
    }

    /// The vendor refused `used` (401): refresh unless someone already did, and hand back the
    /// tokens to retry with.
    pub async fn refused(&self, used: &str) -> Result<TokenSet, RemoteError> {
        let mut current = self.current.lock().await;
        let tokens = self.rotate(used).await?;
        *current = Some(tokens.clone());
        Ok(tokens)
    }

    async fn rotate(&self, stale_access: &str) -> Result<TokenSet, RemoteError> {
        let endpoint = self.endpoint.clone();
        let http = self.http.clone();
        let connection = self.connection.clone();
        self.vault
            .rotate(
                &self.connection,
                stale_access,
                Box::new(move |stored| {
                    Box::pin(async move {
                        tracing::info!(connection = %connection, "Refreshing the OAuth access token.");
                        endpoint.refresh(&http, &stored).await
                    })
                }),
            )
            .await
            .map_err(|mut e| {
                if e.kind == RemoteErrorKind::ConnectionExpired {
                    e.message = format!(
                        "{}; the connection `{}` must be reconnected: `rollcall connect` with this pipeline",
                        e.message, self.connection
                    );
                }
                e
            })
    }
}

/// How the organisation a connection reaches is chosen after consent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantPick {
    /// The redirect names it in this query parameter (QuickBooks' `realmId`).
    FromRedirect(&'static str),
    /// The vendor lists the tenants the token reaches at `url` (Xero's `/connections`); the one
    /// named `wanted` (by name or id) is taken, or the only one when there is just one.
    Connections { url: String, wanted: Option<String> },
}

/// An OAuth app as `rollcall connect` drives it: the consent page, the token endpoint, and how
/// the tenant is picked. Built by a connector from its `target:` settings.
#[derive(Debug, Clone)]
pub struct ConnectApp {
    /// The name the tokens are stored under (the target's `connection`).
    pub connection: String,
    pub authorize_url: String,
    pub scopes: Vec<String>,
    pub token: TokenEndpoint,
    pub tenant: TenantPick,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TenantConnection {
    tenant_id: String,
    #[serde(default)]
    tenant_name: Option<String>,
}

impl ConnectApp {
    /// The consent page to open, with `state` tying the redirect to this attempt.
    pub fn consent_url(&self, redirect_uri: &str, state: &str) -> Result<String, String> {
        let mut url = reqwest::Url::parse(&self.authorize_url)
            .map_err(|e| format!("authorize_url `{}`: {e}", self.authorize_url))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.token.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &self.scopes.join(" "))
            .append_pair("state", state);
        Ok(url.into())
    }

    /// Finishes a consent: trades the redirect's code for tokens and picks the tenant.
    /// `redirect_query` is every parameter the redirect carried.
    pub async fn finish(
        &self,
        http: &reqwest::Client,
        redirect_uri: &str,
        redirect_query: &std::collections::HashMap<String, String>,
    ) -> Result<TokenSet, RemoteError> {
        let fail =
            |kind, message: String| RemoteError::new(self.token.vendor, "connect", kind, message);
        if let Some(error) = redirect_query.get("error") {
            return Err(fail(
                RemoteErrorKind::Unauthorized,
                format!("consent was not given: {error}"),
            ));
        }
        let code = redirect_query.get("code").ok_or_else(|| {
            fail(
                RemoteErrorKind::Rejected,
                "the redirect carried no `code`".into(),
            )
        })?;
        let mut tokens = self.token.exchange_code(http, code, redirect_uri).await?;
        tokens.tenant = Some(match &self.tenant {
            TenantPick::FromRedirect(param) => {
                redirect_query.get(*param).cloned().ok_or_else(|| {
                    fail(
                        RemoteErrorKind::Rejected,
                        format!("the redirect carried no `{param}`"),
                    )
                })?
            }
            TenantPick::Connections { url, wanted } => {
                let response = http
                    .get(url)
                    .bearer_auth(&tokens.access_token)
                    .header(reqwest::header::ACCEPT, "application/json")
                    .send()
                    .await
                    .map_err(|e| fail(RemoteErrorKind::Transport, e.without_url().to_string()))?;
                let status = response.status();
                if !status.is_success() {
                    return Err(fail(
                        RemoteErrorKind::Unauthorized,
                        format!("listing the connected organisations: {status}"),
                    ));
                }
                let listed: Vec<TenantConnection> = response
                    .json()
                    .await
                    .map_err(|e| fail(RemoteErrorKind::Decode, format!("connections: {e}")))?;
                pick_tenant(&listed, wanted.as_deref())
                    .map_err(|m| fail(RemoteErrorKind::Rejected, m))?
            }
        });
        Ok(tokens)
    }
}

fn pick_tenant(listed: &[TenantConnection], wanted: Option<&str>) -> Result<String, String> {
    let names = || {
        listed
            .iter()
            .map(|t| {
                format!(
                    "`{}` ({})",
                    t.tenant_name.as_deref().unwrap_or("?"),
                    t.tenant_id
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    match wanted {
        Some(w) => listed
            .iter()
            .find(|t| {
                t.tenant_id.eq_ignore_ascii_case(w)
                    || t.tenant_name
                        .as_deref()
                        .is_some_and(|n| n.eq_ignore_ascii_case(w))
            })
            .map(|t| t.tenant_id.clone())
            .ok_or_else(|| format!("no organisation `{w}` among those approved: {}", names())),
        None => match listed {
            [one] => Ok(one.tenant_id.clone()),
            [] => Err("the consent approved no organisation".into()),
            _ => Err(format!(
                "several organisations were approved ({}); name one with the target's `tenant`",
                names()
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn set(access: &str) -> TokenSet {
        TokenSet {
            access_token: access.into(),
            refresh_token: format!("r-{access}"),
            expires_at: Utc::now(),
            scope: None,
            tenant: Some("t1".into()),
        }
    }

    #[tokio::test]
    async fn concurrent_rotations_refresh_once() {
        let vault = Arc::new(MemoryVault::default());
        vault.save("c", &set("a0")).await.expect("save");
        let calls = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let vault = vault.clone();
            let calls = calls.clone();
            tasks.push(tokio::spawn(async move {
                vault
                    .rotate(
                        "c",
                        "a0",
                        Box::new(move |old| {
                            Box::pin(async move {
                                calls.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                Ok(TokenSet {
                                    access_token: "a1".into(),
                                    ..old
                                })
                            })
                        }),
                    )
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.expect("join").expect("rotate").access_token, "a1");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn token_lifetimes_at_the_limits_of_i64_neither_panic_nor_wrap() {
        let now = Utc::now();
        assert_eq!(expiry(now, 3600), now + chrono::TimeDelta::seconds(3600));
        assert_eq!(
            expiry(now, -5),
            now,
            "a negative lifetime is already expired"
        );
        assert_eq!(expiry(now, i64::MIN), now);
        assert_eq!(expiry(now, i64::MAX), DateTime::<Utc>::MAX_UTC);
        let mut tokens = set("a");
        tokens.expires_at = expiry(now, i64::MAX);
        assert!(!tokens.expires_soon(now));
        tokens.expires_at = DateTime::<Utc>::MIN_UTC;
        assert!(tokens.expires_soon(now));
    }

    #[test]
    fn debug_hides_tokens() {
        let shown = format!("{:?}", set("secret-access"));
        assert!(!shown.contains("secret-access"));
    }
}
