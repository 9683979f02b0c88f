//! Client locks: two workers never sync the same client at once.
//!
//! A lock is a lease: it expires unless its holder renews it, so a killed worker's client is
//! free again after one lease time. Every lease carries a fence, a number that only grows per
//! client; the holder checks, before each write, that its lease is still the current one and
//! extends it in the same step. A worker that stalled past its lease (a long GC-like pause, a
//! partition from Redis) finds a newer fence there and stops before writing anything more.
//!
//! On Redis the lease is a key set with `NX PX` and checked by a Lua script; on the SQLite
//! queue file it is a row, taken and checked inside `BEGIN IMMEDIATE` transactions; on a
//! PostgreSQL store it is the same row, read `FOR UPDATE` and timed by the server's clock, so
//! machines whose clocks disagree still agree on when a lease ran out.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::SqlitePool;

/// A held lock on one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: String,
    pub holder: String,
    /// Grows with every new lease on this key.
    pub fence: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("client lock (Redis): {0}")]
    Redis(#[from] redis::RedisError),
    #[error("client lock (SQLite): {0}")]
    Sqlite(#[from] sqlx::Error),
    #[error("client lock (PostgreSQL): {0}")]
    Postgres(sqlx::Error),
}

/// The leases kept in the store itself, whichever database it is on.
pub async fn store_locks(db: &crate::db::Db) -> Result<Arc<dyn ClientLocks>, LockError> {
    Ok(match db {
        crate::db::Db::Sqlite(pool) => Arc::new(SqliteLocks::new(pool.clone()).await?),
        crate::db::Db::Postgres(pool) => Arc::new(PgLocks { pool: pool.clone() }),
    })
}

/// Where client leases are kept.
#[async_trait::async_trait]
pub trait ClientLocks: Send + Sync {
    /// Takes the lease on `key` if nobody holds it; `None` when somebody does.
    async fn try_acquire(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError>;

    /// Extends `lease` if it is still the current one; `false` when it was lost.
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, LockError>;

    /// Gives the lease up (only if still held).
    async fn release(&self, lease: &Lease) -> Result<(), LockError>;
}

/// Leases in Redis: `lock` holds `holder:fence`, `fence` counts leases.
#[derive(Clone)]
pub struct RedisLocks {
    conn: redis::aio::ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for RedisLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLocks")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

const ACQUIRE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. fence, 'PX', ARGV[2])
return fence";

const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

impl RedisLocks {
    pub fn new(conn: redis::aio::ConnectionManager) -> RedisLocks {
        RedisLocks {
            conn,
            prefix: "rollcall:lock:".into(),
        }
    }

    fn keys(&self, key: &str) -> (String, String) {
        (
            format!("{}{key}", self.prefix),
            format!("{}{key}:fence", self.prefix),
        )
    }
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait::async_trait]
impl ClientLocks for RedisLocks {
    async fn try_acquire(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError> {
        let (lock, fence) = self.keys(key);
        let mut conn = self.conn.clone();
        let got: i64 = redis::Script::new(ACQUIRE)
            .key(lock)
            .key(fence)
            .arg(holder)
            .arg(millis(ttl))
            .invoke_async(&mut conn)
            .await?;
        Ok(u64::try_from(got).ok().map(|fence| Lease {
            key: key.to_owned(),
            holder: holder.to_owned(),
            fence,
        }))
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, LockError> {
        let (lock, _) = self.keys(&lease.key);
        let mut conn = self.conn.clone();
        let held: i64 = redis::Script::new(RENEW)
            .key(lock)
            .arg(format!("{}:{}", lease.holder, lease.fence))
            .arg(millis(ttl))
            .invoke_async(&mut conn)
            .await?;
        Ok(held == 1)
    }

    async fn release(&self, lease: &Lease) -> Result<(), LockError> {
        let (lock, _) = self.keys(&lease.key);
        let mut conn = self.conn.clone();
        let _: i64 = redis::Script::new(RELEASE)
            .key(lock)
            .arg(format!("{}:{}", lease.holder, lease.fence))
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }
}

/// Leases in the SQLite queue file, for workers on one machine.
#[derive(Debug, Clone)]
pub struct SqliteLocks {
    pool: SqlitePool,
}

const LOCKS_TABLE: &str = "CREATE TABLE IF NOT EXISTS rollcall_client_locks (
    key TEXT PRIMARY KEY,
    holder TEXT,
    fence INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
)";

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl SqliteLocks {
    pub async fn new(pool: SqlitePool) -> Result<SqliteLocks, LockError> {
        sqlx::query(LOCKS_TABLE).execute(&pool).await?;
        Ok(SqliteLocks { pool })
    }

    /// Runs `f` inside `BEGIN IMMEDIATE`: SQLite's write lock makes check-then-set atomic
    /// across processes sharing the file.
    async fn immediate<T>(
        &self,
        f: impl for<'c> FnOnce(
            &'c mut sqlx::SqliteConnection,
        ) -> futures::future::BoxFuture<'c, Result<T, sqlx::Error>>,
    ) -> Result<T, LockError> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        match f(&mut conn).await {
            Ok(v) => {
                sqlx::query("COMMIT").execute(&mut *conn).await?;
                Ok(v)
            }
            Err(e) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                Err(e.into())
            }
        }
    }
}

#[async_trait::async_trait]
impl ClientLocks for SqliteLocks {
    async fn try_acquire(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError> {
        let (key, holder) = (key.to_owned(), holder.to_owned());
        let ttl = i64::try_from(millis(ttl)).unwrap_or(i64::MAX);
        self.immediate(move |conn| {
            Box::pin(async move {
                let row: Option<(Option<String>, i64, i64)> = sqlx::query_as(
                    "SELECT holder, fence, expires_ms FROM rollcall_client_locks WHERE key = ?1",
                )
                .bind(&key)
                .fetch_optional(&mut *conn)
                .await?;
                let now = now_ms();
                let fence = match row {
                    Some((Some(_), _, expires)) if expires > now => return Ok(None),
                    Some((_, fence, _)) => fence + 1,
                    None => 1,
                };
                sqlx::query(
                    "INSERT INTO rollcall_client_locks (key, holder, fence, expires_ms)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(key) DO UPDATE SET holder = excluded.holder,
                       fence = excluded.fence, expires_ms = excluded.expires_ms",
                )
                .bind(&key)
                .bind(&holder)
                .bind(fence)
                .bind(now.saturating_add(ttl))
                .execute(&mut *conn)
                .await?;
                Ok(Some(Lease {
                    key,
                    holder,
                    fence: u64::try_from(fence).unwrap_or_default(),
                }))
            })
        })
        .await
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, LockError> {
        let ttl = i64::try_from(millis(ttl)).unwrap_or(i64::MAX);
        let done = sqlx::query(
            "UPDATE rollcall_client_locks SET expires_ms = ?1
             WHERE key = ?2 AND holder = ?3 AND fence = ?4 AND expires_ms > ?5",
        )
        .bind(now_ms().saturating_add(ttl))
        .bind(&lease.key)
        .bind(&lease.holder)
        .bind(i64::try_from(lease.fence).unwrap_or(i64::MAX))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release(&self, lease: &Lease) -> Result<(), LockError> {
        sqlx::query(
            "UPDATE rollcall_client_locks SET holder = NULL, expires_ms = 0
             WHERE key = ?1 AND holder = ?2 AND fence = ?3",
        )
        .bind(&lease.key)
        .bind(&lease.holder)
        .bind(i64::try_from(lease.fence).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Leases in a PostgreSQL store, for workers on many machines sharing it. The table is made by
/// the store's migrations. Each step is one transaction that locks the key's row
/// (`SELECT … FOR UPDATE`), so check-then-set is atomic between machines; the fence only grows.
#[derive(Debug, Clone)]
pub struct PgLocks {
    pool: sqlx::PgPool,
}

/// The server's clock in milliseconds: one clock for every machine.
const PG_NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

#[async_trait::async_trait]
impl ClientLocks for PgLocks {
    async fn try_acquire(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError> {
        let ttl = i64::try_from(millis(ttl)).unwrap_or(i64::MAX);
        let pg = LockError::Postgres;
        let mut tx = self.pool.begin().await.map_err(pg)?;
        // The row is made free once, so there is always a row to lock.
        sqlx::query(
            "INSERT INTO rollcall_client_locks (key, holder, fence, expires_ms)
             VALUES ($1, NULL, 0, 0) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .execute(&mut *tx)
        .await
        .map_err(pg)?;
        let (held, fence, live): (Option<String>, i64, bool) =
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT holder, fence, expires_ms > {PG_NOW_MS} FROM rollcall_client_locks
                 WHERE key = $1 FOR UPDATE"
            )))
            .bind(key)
            .fetch_one(&mut *tx)
            .await
            .map_err(pg)?;
        if held.is_some() && live {
            tx.rollback().await.map_err(pg)?;
            return Ok(None);
        }
        let fence = fence + 1;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE rollcall_client_locks SET holder = $2, fence = $3, expires_ms = {PG_NOW_MS} + $4
             WHERE key = $1"
        )))
        .bind(key)
        .bind(holder)
        .bind(fence)
        .bind(ttl)
        .execute(&mut *tx)
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(Some(Lease {
            key: key.to_owned(),
            holder: holder.to_owned(),
            fence: u64::try_from(fence).unwrap_or_default(),
        }))
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, LockError> {
        let ttl = i64::try_from(millis(ttl)).unwrap_or(i64::MAX);
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE rollcall_client_locks SET expires_ms = {PG_NOW_MS} + $1
             WHERE key = $2 AND holder = $3 AND fence = $4 AND expires_ms > {PG_NOW_MS}"
        )))
        .bind(ttl)
        .bind(&lease.key)
        .bind(&lease.holder)
        .bind(i64::try_from(lease.fence).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await
        .map_err(LockError::Postgres)?;
        Ok(done.rows_affected() == 1)
    }

    async fn release(&self, lease: &Lease) -> Result<(), LockError> {
        sqlx::query(
            "UPDATE rollcall_client_locks SET holder = NULL, expires_ms = 0
             WHERE key = $1 AND holder = $2 AND fence = $3",
        )
        .bind(&lease.key)
        .bind(&lease.holder)
        .bind(i64::try_from(lease.fence).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await
        .map_err(LockError::Postgres)?;
        Ok(())
    }
}

/// A lease being kept alive while its client syncs. The write path asks it, before each
/// write, whether the lease still holds (and extends it); once lost it stays lost.
pub struct HeldLease {
    locks: Arc<dyn ClientLocks>,
    lease: Lease,
    ttl: Duration,
    lost: AtomicBool,
}

impl std::fmt::Debug for HeldLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldLease")
            .field("lease", &self.lease)
            .field("lost", &self.lost)
            .finish_non_exhaustive()
    }
}

impl HeldLease {
    pub fn new(locks: Arc<dyn ClientLocks>, lease: Lease, ttl: Duration) -> Arc<HeldLease> {
        Arc::new(HeldLease {
            locks,
            lease,
            ttl,
            lost: AtomicBool::new(false),
        })
    }

    /// Extends the lease; `false` (and lost for good) when another holder has it now or
    /// the lock store cannot be reached.
    pub async fn still_held(&self) -> bool {
        if self.lost.load(Ordering::SeqCst) {
            return false;
        }
        let held = matches!(self.locks.renew(&self.lease, self.ttl).await, Ok(true));
        if !held {
            self.lost.store(true, Ordering::SeqCst);
        }
        held
    }

    /// Keeps the lease alive every third of its time until `self` is dropped by everyone else.
    pub fn keep_alive(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let every = self.ttl / 3;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(held) = weak.upgrade() else { return };
                if !held.still_held().await {
                    tracing::warn!(key = %held.lease.key, fence = held.lease.fence, "Lost the client's lock: the sync stops before its next write.");
                    return;
                }
            }
        })
    }

    pub async fn release(&self) {
        if let Err(e) = self.locks.release(&self.lease).await {
            tracing::warn!(error = %e, "Could not release a client lock; it expires on its own.");
        }
    }
}

/// Every lease one sync needs, held together: its clients' keys (one, for a queued job; all of
/// a pipeline's, for `rollcall run`) in every place leases are kept (the store, and the queue
/// when there is one), so no other run, cron entry or worker writes for those clients, or a
/// shared invoice, until this one lets go.
#[derive(Debug)]
pub struct LeaseSet {
    held: Vec<Arc<HeldLease>>,
    keep_alive: Vec<tokio::task::JoinHandle<()>>,
}

/// Why a sync could not take its leases.
#[derive(Debug, thiserror::Error)]
pub enum LeaseSetError {
    #[error(
        "`{key}` is being synced by a worker or another rollcall run and was not free within \
         {waited_secs} s; nothing was written (try again when it is done, or give it longer with \
         --lock-wait-seconds)"
    )]
    Busy { key: String, waited_secs: u64 },
    #[error(transparent)]
    Lock(#[from] LockError),
}

impl LeaseSet {
    /// Takes a lease on every key in every lock store, in one global order (the stores in
    /// the order given, the keys sorted within each), so two syncs can never each hold what
    /// the other waits for; waits up to `wait` for each lease somebody else holds.
    pub async fn acquire(
        stores: &[Arc<dyn ClientLocks>],
        mut keys: Vec<String>,
        holder: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<LeaseSet, LeaseSetError> {
        keys.sort();
        keys.dedup();
        let mut set = LeaseSet {
            held: Vec::new(),
            keep_alive: Vec::new(),
        };
        for locks in stores {
            for key in &keys {
                match take(locks.as_ref(), key, holder, ttl, wait).await {
                    Ok(lease) => {
                        let held = HeldLease::new(locks.clone(), lease, ttl);
                        set.keep_alive.push(held.keep_alive());
                        set.held.push(held);
                    }
                    Err(e) => {
                        set.release().await;
                        return Err(e);
                    }
                }
            }
        }
        Ok(set)
    }

    /// Gives every lease up.
    pub async fn release(&self) {
        for k in &self.keep_alive {
            k.abort();
        }
        for h in &self.held {
            h.release().await;
        }
    }
}

/// One lease, waited for up to `wait` (polling: a lease is freed by its holder or by time).
async fn take(
    locks: &dyn ClientLocks,
    key: &str,
    holder: &str,
    ttl: Duration,
    wait: Duration,
) -> Result<Lease, LeaseSetError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(lease) = locks.try_acquire(key, holder, ttl).await? {
            return Ok(lease);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(LeaseSetError::Busy {
                key: key.to_owned(),
                waited_secs: wait.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[async_trait::async_trait]
impl crate::apply::WriteFence for LeaseSet {
    async fn check(&self) -> Result<(), String> {
        for h in &self.held {
            crate::apply::WriteFence::check(h.as_ref()).await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl crate::apply::WriteFence for HeldLease {
    async fn check(&self) -> Result<(), String> {
        if self.still_held().await {
            Ok(())
        } else {
            Err(format!(
                "lost the lock on {} (fence {}): another worker may be syncing this client, so nothing more is written",
                self.lease.key, self.lease.fence
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sqlite() -> SqliteLocks {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .expect("in-memory sqlite");
        SqliteLocks::new(pool).await.expect("table")
    }

    /// The lease stores both backends of the store keep: SQLite, then a PostgreSQL store of
    /// its own (when the test server is there; required under `ROLLCALL_REQUIRE_SERVERS=1`).
    async fn on_both<F, Fut>(name: &str, test: F)
    where
        F: Fn(Arc<dyn ClientLocks>) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        test(Arc::new(sqlite().await)).await;
        if let Some(db) = rollcall_harness::PgDatabase::create(name) {
            let store = crate::store::Store::open(std::path::Path::new(&db.url()))
                .await
                .expect("postgres store");
            test(store_locks(store.db()).await.expect("locks")).await;
            store.db().close().await;
        }
    }

    #[tokio::test]
    async fn a_held_lock_is_refused_and_fences_grow() {
        on_both("lease fences", held_and_fenced).await;
    }

    async fn held_and_fenced(locks: Arc<dyn ClientLocks>) {
        let ttl = Duration::from_secs(30);
        let a = locks
            .try_acquire("p/c", "a", ttl)
            .await
            .expect("query")
            .expect("free");
        assert!(
            locks
                .try_acquire("p/c", "b", ttl)
                .await
                .expect("query")
                .is_none()
        );
        assert!(locks.renew(&a, ttl).await.expect("query"));
        locks.release(&a).await.expect("query");
        let b = locks
            .try_acquire("p/c", "b", ttl)
            .await
            .expect("query")
            .expect("free again");
        assert!(b.fence > a.fence);
        assert!(
            !locks.renew(&a, ttl).await.expect("query"),
            "the old holder's lease is gone"
        );
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_and_the_old_holder_is_fenced_out() {
        on_both("lease expiry", expired_taken_over).await;
    }

    async fn expired_taken_over(locks: Arc<dyn ClientLocks>) {
        let a = locks
            .try_acquire("p/c", "a", Duration::from_millis(50))
            .await
            .expect("query")
            .expect("free");
        tokio::time::sleep(Duration::from_millis(80)).await;
        let b = locks
            .try_acquire("p/c", "b", Duration::from_secs(30))
            .await
            .expect("query")
            .expect("expired, so free");
        assert_eq!(b.fence, a.fence + 1);
        let held = HeldLease::new(locks, a, Duration::from_secs(30));
        assert!(!held.still_held().await);
        assert!(
            crate::apply::WriteFence::check(held.as_ref())
                .await
                .is_err()
        );
    }
}

#[cfg(test)]
mod contention {
    use super::*;

    /// Many tasks on many pools race for one PostgreSQL lease: exactly one holds it at a time,
    /// and every lease taken has a fence no other lease had.
    #[tokio::test]
    async fn racing_machines_get_one_lease_each_time_on_postgres() {
        let Some(db) = rollcall_harness::PgDatabase::create("lease contention") else {
            return;
        };
        let url = db.url();
        let first = crate::store::Store::open(std::path::Path::new(&url))
            .await
            .expect("store");
        let mut tasks = Vec::new();
        for machine in 0..4 {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let store = crate::store::Store::open(std::path::Path::new(&url))
                    .await
                    .expect("store");
                let locks = store_locks(store.db()).await.expect("locks");
                let mut fences = Vec::new();
                while fences.len() < 5 {
                    let holder = format!("m{machine}");
                    if let Some(lease) = locks
                        .try_acquire("p/acme", &holder, Duration::from_secs(30))
                        .await
                        .expect("acquire")
                    {
                        fences.push(lease.fence);
                        tokio::task::yield_now().await;
                        assert!(
                            locks
                                .renew(&lease, Duration::from_secs(30))
                                .await
                                .expect("renew")
                        );
                        locks.release(&lease).await.expect("release");
                    }
                }
                store.db().close().await;
                fences
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("join"));
        }
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "no fence was handed out twice");
        first.db().close().await;
    }
}
