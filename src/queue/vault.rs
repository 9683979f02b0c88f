//! OAuth tokens in Redis, for workers on many machines.
//!
//! Accounting systems rotate refresh tokens: each refresh returns a new one and the old one
//! dies. Workers with a token copy each would race and lock each other out, so with the queue
//! on Redis the tokens live there, and a refresh happens under a Redis lock: the first worker
//! to find the access token stale refreshes; the others, once the lock is theirs, find a newer
//! access token stored and use it.
//!
//! A connection made with `rollcall connect` before the queue moved to Redis is still in the
//! local store: it is copied over the first time it is asked for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rollcall_core::RemoteError;
use rollcall_core::oauth::{Refresh, TokenSet, TokenVault, VaultError};

/// How long one refresh may hold the lock: a token endpoint answers in seconds.
const REFRESH_LEASE: Duration = Duration::from_secs(30);

pub struct RedisVault {
    conn: redis::aio::ConnectionManager,
    /// The machine's own store, read when Redis has no tokens for a connection yet.
    local: Option<Arc<dyn TokenVault>>,
    /// Encrypts the tokens in Redis as in the store (`crate::seal`).
    key: Option<Arc<crate::seal::StoreKey>>,
}

impl std::fmt::Debug for RedisVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisVault")
    }
}

fn key(connection: &str) -> String {
    format!("rollcall:oauth:{connection}")
}

fn store_err(e: impl std::fmt::Display) -> VaultError {
    VaultError::Store(e.to_string())
}

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

impl RedisVault {
    pub fn new(
        conn: redis::aio::ConnectionManager,
        local: Option<Arc<dyn TokenVault>>,
    ) -> RedisVault {
        RedisVault {
            conn,
            local,
            key: None,
        }
    }

    /// This vault, writing tokens encrypted under `key` (none: in clear).
    pub fn with_key(mut self, key: Option<Arc<crate::seal::StoreKey>>) -> RedisVault {
        self.key = key;
        self
    }

    async fn read(&self, connection: &str) -> Result<Option<TokenSet>, VaultError> {
        let mut conn = self.conn.clone();
        let text: Option<String> = redis::cmd("GET")
            .arg(key(connection))
            .query_async(&mut conn)
            .await
            .map_err(store_err)?;
        text.map(|t| crate::seal::unseal(self.key.as_deref(), connection, &t))
            .transpose()
    }

    async fn write(&self, connection: &str, tokens: &TokenSet) -> Result<(), VaultError> {
        let text = crate::seal::seal(self.key.as_deref(), connection, tokens)?;
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(key(connection))
            .arg(text)
            .query_async::<()>(&mut conn)
            .await
            .map_err(store_err)
    }

    /// Takes the connection's refresh lock, waiting for another holder up to twice its lease.
    async fn lock(&self, connection: &str) -> Result<String, VaultError> {
        let token = uuid::Uuid::new_v4().to_string();
        let deadline = Instant::now() + REFRESH_LEASE * 2;
        let mut conn = self.conn.clone();
        loop {
            let set: Option<String> = redis::cmd("SET")
                .arg(format!("{}:lock", key(connection)))
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(REFRESH_LEASE.as_millis() as u64)
                .query_async(&mut conn)
                .await
                .map_err(store_err)?;
            if set.is_some() {
                return Ok(token);
            }
            if Instant::now() >= deadline {
                return Err(VaultError::Store(format!(
                    "another worker has been refreshing `{connection}` for over a minute"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn unlock(&self, connection: &str, token: &str) {
        let mut conn = self.conn.clone();
        let released: Result<i64, _> = redis::Script::new(RELEASE)
            .key(format!("{}:lock", key(connection)))
            .arg(token)
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = released {
            tracing::warn!(error = %e, "Could not release an OAuth refresh lock; it expires on its own.");
        }
    }
}

#[async_trait::async_trait]
impl TokenVault for RedisVault {
    async fn load(&self, connection: &str) -> Result<Option<TokenSet>, VaultError> {
        if let Some(tokens) = self.read(connection).await? {
            return Ok(Some(tokens));
        }
        let Some(local) = &self.local else {
            return Ok(None);
        };
        let Some(tokens) = local.load(connection).await? else {
            return Ok(None);
        };
        // Copied only if still absent: another machine may have moved newer tokens already.
        let text = crate::seal::seal(self.key.as_deref(), connection, &tokens)?;
        let mut conn = self.conn.clone();
        let _: Option<String> = redis::cmd("SET")
            .arg(key(connection))
            .arg(text)
            .arg("NX")
            .query_async(&mut conn)
            .await
            .map_err(store_err)?;
        self.read(connection).await
    }

    async fn save(&self, connection: &str, tokens: &TokenSet) -> Result<(), VaultError> {
        self.write(connection, tokens).await
    }

    async fn rotate(
        &self,
        connection: &str,
        stale_access: &str,
        refresh: Refresh<'_>,
    ) -> Result<TokenSet, RemoteError> {
        let lock = self.lock(connection).await?;
        let outcome = async {
            let stored = self
                .load(connection)
                .await?
                .ok_or_else(|| VaultError::Missing(connection.to_owned()))?;
            if stored.access_token != stale_access {
                return Ok(stored);
            }
            let fresh = refresh(stored).await?;
            self.write(connection, &fresh).await?;
            Ok(fresh)
        }
        .await;
        self.unlock(connection, &lock).await;
        outcome
    }
}
