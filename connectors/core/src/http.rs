//! HTTP plumbing shared by every REST connector: one place for the client-side rate limit,
//! retries with exponential backoff and jitter, `Retry-After`, and reconcile-before-retry for
//! creates that carry no idempotency key.
//!
//! A connector builds requests and decodes bodies; whether and when to try again is decided
//! here, from [`RemoteErrorKind`], so every vendor gets the same behaviour and no connector grows
//! a retry loop of its own.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use reqwest::{RequestBuilder, StatusCode};
use tracing::{Instrument, debug, warn};

use crate::error::{RemoteError, RemoteErrorKind};

/// How often and how patiently to retry a transient failure.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The first backoff; each later one doubles, up to `max_delay`, with jitter.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// A `Retry-After` longer than this is not waited for: the call fails instead.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(20),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1`, after `attempt` (1-based) failed with `error`.
    /// A server's `Retry-After` wins over our own backoff; otherwise "equal jitter": half the
    /// exponential step fixed, half random, so workers that failed together do not retry together.
    pub fn delay(&self, attempt: u32, error: &RemoteError) -> Option<Duration> {
        if attempt >= self.max_attempts || !error.is_transient() {
            return None;
        }
        if let Some(after) = error.retry_after() {
            return (after <= self.max_retry_after).then_some(after);
        }
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let step = exp.min(self.max_delay);
        let half = step / 2;
        let jitter = rand::rng().random_range(0..=half.as_millis() as u64);
        Some(half + Duration::from_millis(jitter))
    }
}

/// A client-side request budget, so the vendor's limiter is respected rather than discovered:
/// `requests` per `per`, of which at most `burst` back to back. A vendor that counts over a
/// rolling window (Xero's 60 a minute) needs a small burst, or a burst at the window's start
/// plus the steady rate would overrun it.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub requests: NonZeroU32,
    pub per: Duration,
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// `n` a second, in bursts of up to `n`.
    pub fn per_second(n: NonZeroU32) -> Self {
        RateLimit {
            requests: n,
            per: Duration::from_secs(1),
            burst: n,
        }
    }

    /// `n` a minute, evenly spaced, in bursts of up to `burst`.
    pub fn per_minute(n: NonZeroU32, burst: NonZeroU32) -> Self {
        RateLimit {
            requests: n,
            per: Duration::from_secs(60),
            burst,
        }
    }

    fn quota(&self) -> Quota {
        let spacing = self.per / self.requests.get();
        Quota::with_period(spacing.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(self.requests))
            .allow_burst(self.burst)
    }
}

/// A request budget kept beyond this process, so that every worker syncing one vendor tenant
/// shares the vendor's limit instead of each spending all of it (rollcall's queue keeps it in
/// Redis). Installed once per process with [`share_rate_limits`]; without one, each client
/// limits itself in memory.
#[async_trait::async_trait]
pub trait SharedRateLimiter: Send + Sync + std::fmt::Debug {
    /// Waits until one more request under `scope` fits `limit`.
    async fn until_ready(&self, scope: &str, limit: &RateLimit);
}

static SHARED_LIMITER: std::sync::OnceLock<Arc<dyn SharedRateLimiter>> = std::sync::OnceLock::new();

/// Makes every HTTP client built from now on in this process wait on `limiter` rather than on
/// its own in-memory budget. `false` when one was installed already (the first one stays).
pub fn share_rate_limits(limiter: Arc<dyn SharedRateLimiter>) -> bool {
    SHARED_LIMITER.set(limiter).is_ok()
}

/// Requests sent and throttled answers (429, or 503 with Retry-After), per vendor, across
/// every client in this process: for `/metrics`.
static API_COUNTS: std::sync::Mutex<std::collections::BTreeMap<&'static str, (u64, u64)>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// `(vendor, requests, throttled)` for every vendor called so far in this process.
pub fn api_counts() -> Vec<(&'static str, u64, u64)> {
    API_COUNTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|(v, (calls, throttled))| (*v, *calls, *throttled))
        .collect()
}

fn count_api(vendor: &'static str, throttled: bool) {
    let mut counts = API_COUNTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let entry = counts.entry(vendor).or_default();
    if throttled {
        entry.1 += 1;
    } else {
        entry.0 += 1;
    }
}

/// What a connector decides about its HTTP client.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub vendor: &'static str,
    pub retry: RetryPolicy,
    pub rate_limit: Option<RateLimit>,
    /// Whose budget `rate_limit` is, when shared across processes: the vendor's tenant (a
    /// ConnectWise company, a QuickBooks realm's connection, a Xero organisation's).
    pub limit_scope: String,
    /// Requests in flight at once, for vendors that cap concurrency per tenant (QuickBooks 10,
    /// Xero 5); `None` for no cap.
    pub max_concurrent: Option<usize>,
    pub timeout: Duration,
    /// Turns an error response's body into a readable message, in the vendor's own shape.
    pub describe_error: fn(StatusCode, &[u8]) -> String,
    /// The kind of an error answer whose status misleads, read from its body in the vendor's
    /// own shape: a vendor that answers some refusals of the request's content with a 5xx
    /// would otherwise have them retried as outages. `None` keeps the status's kind.
    pub classify_error: fn(StatusCode, &[u8]) -> Option<RemoteErrorKind>,
}

/// [`HttpSettings::classify_error`] for a vendor whose statuses say it all.
pub fn by_status(_: StatusCode, _: &[u8]) -> Option<RemoteErrorKind> {
    None
}

impl HttpSettings {
    pub fn new(vendor: &'static str, describe_error: fn(StatusCode, &[u8]) -> String) -> Self {
        HttpSettings {
            vendor,
            retry: RetryPolicy::default(),
            rate_limit: None,
            limit_scope: vendor.to_owned(),
            max_concurrent: None,
            timeout: Duration::from_secs(30),
            describe_error,
            classify_error: by_status,
        }
    }
}

/// A successful answer: status and body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

/// How a create without an idempotency key ended.
#[derive(Debug)]
pub enum Created<T> {
    /// The create was answered.
    Sent(Reply),
    /// An earlier attempt had landed though its answer was lost; this is what it made.
    Found(T),
}

/// An HTTP client with the shared limit, retry and classification rules.
#[derive(Clone)]
pub struct HttpClient {
    settings: HttpSettings,
    client: reqwest::Client,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    in_flight: Option<Arc<tokio::sync::Semaphore>>,
    calls: Arc<AtomicU64>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("vendor", &self.settings.vendor)
            .field("calls", &self.calls.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    pub fn new(settings: HttpSettings) -> Result<Self, RemoteError> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("rollcall/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                RemoteError::new(
                    settings.vendor,
                    "build http client",
                    RemoteErrorKind::Transport,
                    e.to_string(),
                )
            })?;
        let limiter = settings
            .rate_limit
            .map(|r| Arc::new(RateLimiter::direct(r.quota())));
        let in_flight = settings
            .max_concurrent
            .map(|n| Arc::new(tokio::sync::Semaphore::new(n.max(1))));
        Ok(HttpClient {
            settings,
            client,
            limiter,
            in_flight,
            calls: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The underlying client, to build requests with.
    pub fn request(&self, method: reqwest::Method, url: &str) -> RequestBuilder {
        self.client.request(method, url)
    }

    /// Requests sent so far (every attempt counts), for reports and benchmarks.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// One attempt: waits for the rate limit, sends, and classifies the answer.
    pub async fn send_once(
        &self,
        operation: &str,
        request: RequestBuilder,
    ) -> Result<Reply, RemoteError> {
        // The slot is taken before the rate limit is waited for, so a request holding a slot
        // is one about to be sent, and held until its whole answer is read.
        let _slot = match &self.in_flight {
            Some(semaphore) => Some(semaphore.acquire().await.map_err(|_| {
                RemoteError::new(
                    self.settings.vendor,
                    operation,
                    RemoteErrorKind::Transport,
                    "the HTTP client was shut down",
                )
            })?),
            None => None,
        };
        match (
            SHARED_LIMITER.get(),
            &self.settings.rate_limit,
            &self.limiter,
        ) {
            (Some(shared), Some(limit), _) => {
                shared.until_ready(&self.settings.limit_scope, limit).await;
            }
            (_, _, Some(limiter)) => limiter.until_ready().await,
            _ => {}
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        let vendor = self.settings.vendor;
        count_api(vendor, false);
        let fail = |kind, message: String| RemoteError::new(vendor, operation, kind, message);
        let response = request.send().await.map_err(|e| {
            // A connect error means nothing was sent; anything later may have reached the server.
            let kind = if e.is_connect() {
                RemoteErrorKind::Transport
            } else {
                RemoteErrorKind::ResponseLost
            };
            fail(kind, format!("request failed: {}", redact_url(&e)))
        })?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| {
                fail(
                    RemoteErrorKind::ResponseLost,
                    format!("answer lost after status {status}: {}", redact_url(&e)),
                )
            })?
            .to_vec();
        if status.is_success() {
            return Ok(Reply {
                status,
                headers,
                body,
            });
        }
        let message = (self.settings.describe_error)(status, &body);
        if status.as_u16() == 429
            || (status.as_u16() == 503 && headers.contains_key(reqwest::header::RETRY_AFTER))
        {
            count_api(vendor, true);
        }
        let from_status = match status.as_u16() {
            401 | 403 => RemoteErrorKind::Unauthorized,
            404 => RemoteErrorKind::NotFound,
            429 => RemoteErrorKind::Throttled {
                retry_after: retry_after(&headers),
            },
            503 if headers.contains_key(reqwest::header::RETRY_AFTER) => {
                RemoteErrorKind::Throttled {
                    retry_after: retry_after(&headers),
                }
            }
            s if s >= 500 => RemoteErrorKind::Server { status: s },
            _ => RemoteErrorKind::Rejected,
        };
        let kind = (self.settings.classify_error)(status, &body).unwrap_or(from_status);
        Err(fail(kind, format!("{status}: {message}")))
    }

    /// Sends a request that is safe to repeat (a read, a PATCH that sets values), retrying
    /// transient failures by the policy.
    pub async fn send(
        &self,
        operation: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Reply, RemoteError> {
        match self
            .send_create(operation, build, async || {
                Ok(None::<std::convert::Infallible>)
            })
            .await?
        {
            Created::Sent(reply) => Ok(reply),
            Created::Found(never) => match never {},
        }
    }

    /// Sends a create the vendor cannot deduplicate. After a failure that may have landed (a
    /// lost answer, a 5xx), `reconcile` reads the system and returns the object if the earlier
    /// attempt did create it; only when it finds nothing is the create sent again.
    pub async fn send_create<T>(
        &self,
        operation: &str,
        build: impl Fn() -> RequestBuilder,
        reconcile: impl AsyncFn() -> Result<Option<T>, RemoteError>,
    ) -> Result<Created<T>, RemoteError> {
        let mut attempt = 1;
        loop {
            let span =
                tracing::debug_span!("call", vendor = self.settings.vendor, operation, attempt);
            let error = match self.send_once(operation, build()).instrument(span).await {
                Ok(reply) => return Ok(Created::Sent(reply)),
                Err(error) => error,
            };
            let landed_maybe = matches!(
                error.kind,
                RemoteErrorKind::ResponseLost | RemoteErrorKind::Server { .. }
            );
            let Some(wait) = self.settings.retry.delay(attempt, &error) else {
                // Out of attempts: the last one may still have landed; look once more so a
                // run that gives up still knows what it made.
                if landed_maybe && let Some(found) = reconcile().await? {
                    return Ok(Created::Found(found));
                }
                return Err(error);
            };
            warn!(
                vendor = self.settings.vendor,
                operation,
                attempt,
                wait_ms = wait.as_millis() as u64,
                error = %error.message,
                "Transient failure; will retry."
            );
            tokio::time::sleep(wait).await;
            if landed_maybe && let Some(found) = reconcile().await? {
                debug!(
                    vendor = self.settings.vendor,
                    operation, "The earlier attempt had landed; adopting it."
                );
                return Ok(Created::Found(found));
            }
            attempt += 1;
        }
    }
}

/// reqwest errors print the URL, which may carry query secrets; keep only the cause.
fn redact_url(error: &reqwest::Error) -> String {
    {
        let mut parts = Vec::new();
        let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
        while let Some(s) = source {
            parts.push(s.to_string());
            source = s.source();
        }
        let head = if error.is_timeout() {
            "timed out"
        } else if error.is_connect() {
            "could not connect"
        } else if error.is_body() || error.is_decode() {
            "the answer's body was cut off"
        } else {
            "transport error"
        };
        if parts.is_empty() {
            head.to_owned()
        } else {
            format!("{head}: {}", parts.join(": "))
        }
    }
}

/// `Retry-After` as seconds or as an HTTP date.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(kind: RemoteErrorKind) -> RemoteError {
        RemoteError::new("test", "op", kind, "x")
    }

    #[test]
    fn retry_after_wins_and_is_capped() {
        let p = RetryPolicy::default();
        let e = err(RemoteErrorKind::Throttled {
            retry_after: Some(Duration::from_secs(3)),
        });
        assert_eq!(p.delay(1, &e), Some(Duration::from_secs(3)));
        let e = err(RemoteErrorKind::Throttled {
            retry_after: Some(Duration::from_secs(3600)),
        });
        assert_eq!(p.delay(1, &e), None);
    }

    #[test]
    fn user_errors_are_not_retried_and_attempts_are_bounded() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1, &err(RemoteErrorKind::Rejected)), None);
        assert_eq!(p.delay(1, &err(RemoteErrorKind::Unauthorized)), None);
        assert!(
            p.delay(1, &err(RemoteErrorKind::Server { status: 500 }))
                .is_some()
        );
        assert_eq!(
            p.delay(
                p.max_attempts,
                &err(RemoteErrorKind::Server { status: 500 })
            ),
            None
        );
    }

    #[test]
    fn backoff_grows_within_bounds() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            ..RetryPolicy::default()
        };
        let e = err(RemoteErrorKind::Transport);
        for attempt in 1..p.max_attempts {
            let step = (p.base_delay * (1 << (attempt - 1))).min(p.max_delay);
            let d = p.delay(attempt, &e).expect("retry");
            assert!(
                d >= step / 2 && d <= step,
                "attempt {attempt}: {d:?} not in [{:?}, {step:?}]",
                step / 2
            );
        }
    }

    /// Answers every request 500 with `body`, counting them.
    async fn failing_server(body: &'static str) -> (crate::sandbox::SandboxServer, Arc<AtomicU64>) {
        let hits = Arc::new(AtomicU64::new(0));
        let counted = hits.clone();
        let app = axum::Router::new().fallback(move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                (StatusCode::INTERNAL_SERVER_ERROR, body)
            }
        });
        let server = crate::sandbox::SandboxServer::start(
            "127.0.0.1:0".parse().expect("address"),
            app,
            "failing",
        )
        .await
        .expect("server");
        (server, hits)
    }

    fn settings(classify_error: fn(StatusCode, &[u8]) -> Option<RemoteErrorKind>) -> HttpSettings {
        let mut settings =
            HttpSettings::new("test", |_, body| String::from_utf8_lossy(body).into_owned());
        settings.classify_error = classify_error;
        settings.retry = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            ..RetryPolicy::default()
        };
        settings
    }

    /// The vendor's classifier of these tests: a body naming a rule is the caller's fault.
    fn rule_is_a_refusal(_: StatusCode, body: &[u8]) -> Option<RemoteErrorKind> {
        body.starts_with(b"rule:")
            .then_some(RemoteErrorKind::Rejected)
    }

    #[tokio::test]
    async fn a_5xx_the_vendor_classifies_as_a_refusal_is_sent_once_and_not_reconciled() {
        let (server, hits) = failing_server("rule: name too long").await;
        let http = HttpClient::new(settings(rule_is_a_refusal)).expect("client");
        let url = format!("http://{}/x", server.addr());
        let looked = AtomicU64::new(0);
        let err = http
            .send_create(
                "create x",
                || http.request(reqwest::Method::POST, &url),
                async || {
                    looked.fetch_add(1, Ordering::SeqCst);
                    Ok(None::<()>)
                },
            )
            .await
            .expect_err("refused");
        assert_eq!(err.kind, RemoteErrorKind::Rejected);
        assert!(err.message.contains("rule: name too long"), "{err}");
        assert_eq!(hits.load(Ordering::SeqCst), 1, "not retried");
        assert_eq!(looked.load(Ordering::SeqCst), 0, "a refusal landed nothing");
    }

    #[tokio::test]
    async fn a_5xx_the_classifier_does_not_claim_is_still_an_outage() {
        // A body the classifier does not claim, and without a classifier even a rule's text:
        // judged by the status, every attempt used.
        for (body, classify) in [
            (
                "<html>upstream failed</html>",
                rule_is_a_refusal as fn(_, &[u8]) -> _,
            ),
            ("rule: name too long", by_status),
        ] {
            let (server, hits) = failing_server(body).await;
            let http = HttpClient::new(settings(classify)).expect("client");
            let url = format!("http://{}/x", server.addr());
            let err = http
                .send("read x", || http.request(reqwest::Method::GET, &url))
                .await
                .expect_err("outage");
            assert_eq!(err.kind, RemoteErrorKind::Server { status: 500 }, "{body}");
            assert_eq!(hits.load(Ordering::SeqCst), 3, "every attempt used: {body}");
        }
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().expect("header"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("header"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
    }
}
