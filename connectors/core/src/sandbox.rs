//! What every vendor sandbox needs, once: a server handle that stops when dropped, an OAuth2
//! authorization server with the vendors' rotation rules, and a per-tenant request window.
//!
//! The sandboxes are rollcall's stand-ins for SaaS APIs that cannot be reached from tests or
//! demos. Each connector's sandbox keeps its vendor's own routes and payloads; the parts that
//! are the same protocol everywhere live here so they behave the same everywhere.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use tokio::sync::oneshot;

/// A sandbox server running on a tokio task. Dropping the handle stops it.
pub struct SandboxServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for SandboxServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl SandboxServer {
    /// Serves `app` on `addr` (port 0 picks a free one) until the handle is dropped.
    pub async fn start(
        addr: SocketAddr,
        app: axum::Router,
        name: &'static str,
    ) -> std::io::Result<SandboxServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        SandboxServer::serve(listener, app, name)
    }

    /// Serves `app` on a bound listener (for sandboxes whose state needs their own address)
    /// until the handle is dropped.
    pub fn serve(
        listener: tokio::net::TcpListener,
        app: axum::Router,
        name: &'static str,
    ) -> std::io::Result<SandboxServer> {
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::warn!(%error, sandbox = name, "A sandbox stopped with an error.");
            }
        });
        Ok(SandboxServer {
            addr,
            stop: Some(stop),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for SandboxServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves `app` on `addr` until `shutdown` completes (for `rollcall sandbox KIND`).
pub async fn serve_until(
    addr: SocketAddr,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// What a test may break in a sandbox, and what it may count: the same knobs in every vendor's
/// sandbox, so a test of one connector reads like a test of another.
#[derive(Debug, Default)]
pub struct Controls {
    faults: Mutex<Faults>,
    requests: AtomicU64,
    writes: AtomicU64,
    throttled: AtomicU64,
    in_flight: AtomicUsize,
}

#[derive(Debug, Default)]
struct Faults {
    fail: u32,
    drop_after_commit: u32,
    latency: Duration,
}

/// A request's place among those in flight; dropping it frees the place.
pub struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Takes one from a fault's count; true when there was one.
fn take(count: &mut u32) -> bool {
    let had = *count > 0;
    *count = count.saturating_sub(1);
    had
}

impl Controls {
    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next `n` API requests fail with the vendor's 5xx.
    pub fn fail(&self, n: u32) {
        self.faults().fail = n;
    }

    /// The next `n` writes are committed, but their answers are cut off mid-body.
    pub fn drop_response_after_commit(&self, n: u32) {
        self.faults().drop_after_commit = n;
    }

    /// Every API request waits this long first.
    pub fn latency(&self, delay: Duration) {
        self.faults().latency = delay;
    }

    /// API requests seen.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Writes that changed something (replays and refusals not counted).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// 429s answered.
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::SeqCst)
    }

    /// Counts a 429 about to be answered.
    pub fn count_throttled(&self) {
        self.throttled.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts a write that changed something.
    pub fn count_write(&self) {
        self.writes.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts an API request; `None` when more than `max` are already in flight (the caller
    /// answers 429), else the request's place, held until it is answered.
    pub fn enter(&self, max: usize) -> Option<InFlight<'_>> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let place = InFlight(&self.in_flight);
        (self.in_flight.fetch_add(1, Ordering::SeqCst) < max).then_some(place)
    }

    /// Waits out the injected latency; true when this request must fail.
    pub async fn delay_or_fail(&self) -> bool {
        let (latency, fail) = {
            let mut f = self.faults();
            let fail = take(&mut f.fail);
            (f.latency, fail)
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        fail
    }

    /// The answer to a committed write: as given, or cut off mid-body when a drop is pending.
    pub fn answer_write(&self, answer: axum::response::Response) -> axum::response::Response {
        if !take(&mut self.faults().drop_after_commit) {
            return answer;
        }
        let (parts, _) = answer.into_parts();
        let cut = futures::stream::once(async {
            Err::<axum::body::Bytes, std::io::Error>(std::io::Error::other(
                "the sandbox dropped this answer after committing the write",
            ))
        });
        axum::response::Response::from_parts(parts, axum::body::Body::from_stream(cut))
    }
}

/// A token the issuer handed out.
#[derive(Debug, Clone)]
struct Grant {
    tenant: String,
    expires: Instant,
}

/// Why the token endpoint refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRefusal {
    /// `invalid_grant`: an unknown, spent, expired or revoked code or refresh token.
    InvalidGrant,
    /// `invalid_client`: wrong client id or secret.
    InvalidClient,
}

/// Tokens as the issuer answers them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IssuedTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
    pub token_type: &'static str,
    pub scope: String,
}

/// An OAuth2 authorization server as QuickBooks and Xero run theirs: authorization codes
/// used once, access tokens that expire, and refresh tokens that **rotate on every use** — the
/// old one is refused from then on — and can be revoked.
#[derive(Debug)]
pub struct OAuthIssuer {
    client_id: String,
    client_secret: String,
    access_ttl: Duration,
    codes: HashMap<String, Grant>,
    access: HashMap<String, Grant>,
    refresh: HashMap<String, Grant>,
    counter: u64,
    prefix: &'static str,
    /// Refreshes answered, for tests that count them.
    pub refreshes: u64,
}

impl OAuthIssuer {
    pub fn new(
        prefix: &'static str,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        access_ttl: Duration,
    ) -> Self {
        OAuthIssuer {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            access_ttl,
            codes: HashMap::new(),
            access: HashMap::new(),
            refresh: HashMap::new(),
            counter: 0,
            prefix,
            refreshes: 0,
        }
    }

    fn fresh(&mut self, kind: &str) -> String {
        self.counter += 1;
        format!(
            "{}-{kind}-{}-{}",
            self.prefix,
            self.counter,
            uuid::Uuid::new_v4().simple()
        )
    }

    /// The code a consent for `tenant` redirects with.
    pub fn authorize(&mut self, tenant: &str) -> String {
        let code = self.fresh("code");
        self.codes.insert(
            code.clone(),
            Grant {
                tenant: tenant.to_owned(),
                expires: Instant::now() + Duration::from_secs(600),
            },
        );
        code
    }

    /// The app's secret, for a sandbox that hands out a config reaching it.
    pub fn client_secret(&self) -> &str {
        &self.client_secret
    }

    pub fn check_client(&self, id: &str, secret: &str) -> Result<(), TokenRefusal> {
        if id == self.client_id && secret == self.client_secret {
            Ok(())
        } else {
            Err(TokenRefusal::InvalidClient)
        }
    }

    fn issue(&mut self, tenant: &str, scope: &str) -> IssuedTokens {
        let access = self.fresh("access");
        let refresh = self.fresh("refresh");
        let grant = Grant {
            tenant: tenant.to_owned(),
            expires: Instant::now() + self.access_ttl,
        };
        self.access.insert(access.clone(), grant.clone());
        self.refresh.insert(
            refresh.clone(),
            Grant {
                expires: Instant::now() + Duration::from_secs(60 * 60 * 24 * 100),
                ..grant
            },
        );
        IssuedTokens {
            access_token: access,
            refresh_token: refresh,
            expires_in: self.access_ttl.as_secs(),
            token_type: "Bearer",
            scope: scope.to_owned(),
        }
    }

    /// The `authorization_code` grant: each code works once.
    pub fn exchange(&mut self, code: &str, scope: &str) -> Result<IssuedTokens, TokenRefusal> {
        let grant = self
            .codes
            .remove(code)
            .filter(|g| g.expires > Instant::now())
            .ok_or(TokenRefusal::InvalidGrant)?;
        Ok(self.issue(&grant.tenant, scope))
    }

    /// The `refresh_token` grant: the token is spent and a new pair issued.
    pub fn refresh(&mut self, token: &str, scope: &str) -> Result<IssuedTokens, TokenRefusal> {
        let grant = self
            .refresh
            .remove(token)
            .filter(|g| g.expires > Instant::now())
            .ok_or(TokenRefusal::InvalidGrant)?;
        self.refreshes += 1;
        Ok(self.issue(&grant.tenant, scope))
    }

    /// Revokes every token of every tenant (a user disconnecting the app).
    pub fn revoke_all(&mut self) {
        self.access.clear();
        self.refresh.clear();
    }

    /// Revokes one token (the vendors' revocation endpoint): a refresh token takes its access
    /// tokens' tenant's grants with it.
    pub fn revoke(&mut self, token: &str) {
        let tenant = self
            .refresh
            .remove(token)
            .or_else(|| self.access.remove(token))
            .map(|g| g.tenant);
        if let Some(tenant) = tenant {
            self.access.retain(|_, g| g.tenant != tenant);
            self.refresh.retain(|_, g| g.tenant != tenant);
        }
    }

    /// Expires every access token now, so the next call needs a refresh.
    pub fn expire_access_tokens(&mut self) {
        self.access.clear();
    }

    /// The tenant a bearer token reaches, if it is live.
    pub fn tenant_of(&self, access_token: &str) -> Option<&str> {
        self.access
            .get(access_token)
            .filter(|g| g.expires > Instant::now())
            .map(|g| g.tenant.as_str())
    }
}

/// Counts requests per tenant in fixed windows, as the vendors' minute limits do.
#[derive(Debug)]
pub struct RequestWindow {
    pub limit: u32,
    pub window: Duration,
    counts: HashMap<String, (Instant, u32)>,
}

impl RequestWindow {
    pub fn new(limit: u32, window: Duration) -> Self {
        RequestWindow {
            limit,
            window,
            counts: HashMap::new(),
        }
    }

    /// Counts one request; `Err(wait)` when the tenant is over its limit for this window.
    pub fn admit(&mut self, tenant: &str) -> Result<u32, Duration> {
        let now = Instant::now();
        let (start, count) = self.counts.entry(tenant.to_owned()).or_insert((now, 0));
        if now.duration_since(*start) >= self.window {
            *start = now;
            *count = 0;
        }
        if *count >= self.limit {
            return Err(self.window.saturating_sub(now.duration_since(*start)));
        }
        *count += 1;
        Ok(self.limit - *count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refresh_token_works_once_and_revocation_ends_the_tenant() {
        let mut issuer = OAuthIssuer::new("t", "id", "secret", Duration::from_secs(60));
        let code = issuer.authorize("realm-1");
        let first = issuer.exchange(&code, "s").expect("code");
        assert_eq!(
            issuer.exchange(&code, "s").err(),
            Some(TokenRefusal::InvalidGrant)
        );
        let second = issuer.refresh(&first.refresh_token, "s").expect("refresh");
        assert_eq!(
            issuer.refresh(&first.refresh_token, "s").err(),
            Some(TokenRefusal::InvalidGrant),
            "rotated"
        );
        assert_eq!(issuer.tenant_of(&second.access_token), Some("realm-1"));
        issuer.revoke(&second.refresh_token);
        assert_eq!(issuer.tenant_of(&second.access_token), None);
    }

    #[test]
    fn the_window_admits_its_limit_then_says_how_long_to_wait() {
        let mut w = RequestWindow::new(2, Duration::from_secs(60));
        assert!(w.admit("a").is_ok());
        assert!(w.admit("a").is_ok());
        assert!(w.admit("a").is_err());
        assert!(w.admit("b").is_ok(), "per tenant");
    }
}
