//! Vendor rate limits shared by every worker: GCRA in a Lua script, on Redis's clock.
//!
//! Each vendor tenant has one limit (per company, realm or organisation, as the connector keys
//! it), however many workers call it. In one process the connectors' own limiter
//! does; with workers on several machines, each would spend the whole budget, so the queue on
//! Redis installs this one instead ([`rollcall_core::http::share_rate_limits`]). One key per
//! tenant holds the theoretical arrival time of the next request; a request that would come
//! earlier than its burst allows is told how long to wait. Redis's `TIME` is the clock, so the
//! workers' own clocks need not agree.

use std::time::Duration;

use rollcall_core::http::{RateLimit, SharedRateLimiter};

const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat + interval - interval * burst
if now < allow_at then return allow_at - now end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return 0";

/// The shared limiter, on the queue's Redis.
#[derive(Clone)]
pub struct RedisRateLimiter {
    conn: redis::aio::ConnectionManager,
}

impl std::fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisRateLimiter")
    }
}

impl RedisRateLimiter {
    pub fn new(conn: redis::aio::ConnectionManager) -> RedisRateLimiter {
        RedisRateLimiter { conn }
    }

    /// One try: `None` when the request may go now, else how long to wait.
    pub async fn try_take(
        &self,
        scope: &str,
        limit: &RateLimit,
    ) -> Result<Option<Duration>, redis::RedisError> {
        let interval = (limit.per / limit.requests.get()).as_micros().max(1);
        let mut conn = self.conn.clone();
        let wait_us: i64 = redis::Script::new(GCRA)
            .key(format!("rollcall:rate:{scope}"))
            .arg(u64::try_from(interval).unwrap_or(u64::MAX))
            .arg(limit.burst.get())
            .invoke_async(&mut conn)
            .await?;
        Ok(u64::try_from(wait_us)
            .ok()
            .filter(|us| *us > 0)
            .map(Duration::from_micros))
    }
}

#[async_trait::async_trait]
impl SharedRateLimiter for RedisRateLimiter {
    async fn until_ready(&self, scope: &str, limit: &RateLimit) {
        loop {
            match self.try_take(scope, limit).await {
                Ok(None) => return,
                Ok(Some(wait)) => tokio::time::sleep(wait).await,
                Err(e) => {
                    // Redis gone: spacing requests by the limit alone keeps this worker within
                    // it; the vendor's 429s (retried) cover the rest until Redis is back.
                    tracing::warn!(error = %e, "Shared rate limit unavailable; spacing requests locally.");
                    tokio::time::sleep(limit.per / limit.requests.get()).await;
                    return;
                }
            }
        }
    }
}
