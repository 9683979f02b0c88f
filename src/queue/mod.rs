//! The job queue: syncs of one client at a time, run by any number of workers.
//!
//! A sync job is (pipeline, client, trigger). Schedules, webhooks and the command line push
//! jobs; `rollcall worker` (and `rollcall serve`'s own workers) take them. The queue is apalis
//! on SQLite by default (a file beside the store: nothing to install, one machine) or on Redis
//! (`--queue redis://…`: many workers on many machines). Both behave the same and the same
//! tests run against both.
//!
//! apalis keeps each job's status and attempts; the last error of a failed job is kept here,
//! beside the queue (a table in the SQLite file, a hash in Redis), so `rollcall jobs --failed`
//! can say why without reading worker logs.

pub mod limiter;
pub mod locks;
pub mod vault;
pub mod worker;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use apalis_redis::RedisStorage;
use apalis_sqlite::SqliteStorage;
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

/// The name of rollcall's queue in either backend.
pub const QUEUE_NAME: &str = "rollcall-sync";

/// One client's sync, as queued.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SyncJob {
    /// The pipeline's `name:`.
    pub pipeline: String,
    pub client: String,
    pub trigger: Trigger,
}

/// Why a sync was asked for: shown by `rollcall jobs`, and part of a scheduled job's
/// idempotency key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// The pipeline's `schedule:` named this time.
    Schedule { at: chrono::DateTime<chrono::Utc> },
    /// A signed notification (after its debounce window).
    Webhook { source: String },
    /// `rollcall enqueue`.
    Manual,
    /// `rollcall jobs retry ID` of a job that had failed.
    Retry { of: String },
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Schedule { at } => write!(f, "schedule {}", at.format("%Y-%m-%d %H:%M:%SZ")),
            Trigger::Webhook { source } => write!(f, "webhook ({source})"),
            Trigger::Manual => f.write_str("manual"),
            Trigger::Retry { of } => write!(f, "retry of {of}"),
        }
    }
}

/// Where the queue lives, from `--queue`.
#[derive(Clone, PartialEq, Eq)]
pub enum QueueLocation {
    Sqlite(PathBuf),
    Redis(String),
}

impl fmt::Debug for QueueLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueLocation::Sqlite(p) => write!(f, "Sqlite({})", p.display()),
            // A Redis URL may carry a password.
            QueueLocation::Redis(url) => write!(f, "Redis({})", redact_url(url)),
        }
    }
}

impl fmt::Display for QueueLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueLocation::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            QueueLocation::Redis(url) => f.write_str(&redact_url(url)),
        }
    }
}

/// `redis://user:secret@host` → `redis://user:***@host`.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

impl QueueLocation {
    /// The default: a `queue.db` beside the store.
    pub fn beside(store: &Path) -> QueueLocation {
        let dir = store.parent().unwrap_or(Path::new("."));
        QueueLocation::Sqlite(dir.join("queue.db"))
    }
}

impl FromStr for QueueLocation {
    type Err = QueueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with("redis://") || s.starts_with("rediss://") {
            Ok(QueueLocation::Redis(s.to_owned()))
        } else if let Some(path) = s.strip_prefix("sqlite:") {
            Ok(QueueLocation::Sqlite(PathBuf::from(
                path.trim_start_matches("//"),
            )))
        } else if s.contains("://") {
            Err(QueueError::Location(format!(
                "`{}` is neither a Redis URL nor an SQLite file (hint: `redis://host:6379` or `sqlite:PATH`)",
                redact_url(s)
            )))
        } else {
            Ok(QueueLocation::Sqlite(PathBuf::from(s)))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("{0}")]
    Location(String),
    #[error("the queue's SQLite file cannot be used: {0}")]
    Sqlite(#[from] sqlx::Error),
    #[error("the queue's SQLite schema cannot be set up: {0}")]
    Migrate(String),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the queue refused the job: {0}")]
    Push(String),
    #[error("the queue cannot be listed: {0}")]
    List(String),
    #[error("no job {0} in the queue (hint: `rollcall jobs` lists them)")]
    NoSuchJob(String),
    #[error("job {id} is {status}, not failed: only failed jobs are retried by hand")]
    NotFailed { id: String, status: String },
    #[error("job {id} holds no readable sync job: {message}")]
    Undecodable { id: String, message: String },
}

/// One line of `rollcall jobs`.
#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    pub id: String,
    pub status: String,
    /// Runs started by workers (a worker's own retries count as one; a run cut short by a
    /// dead worker counts too).
    pub attempts: usize,
    pub job: Option<SyncJob>,
    /// The last attempt's error, for failed jobs.
    pub error: Option<String>,
    /// When the job was due (seconds since the epoch).
    pub run_at: Option<u64>,
}

/// The queue, on one backend or the other.
#[derive(Clone)]
pub enum Queue {
    Sqlite {
        storage: SqliteStorage<SyncJob>,
        pool: SqlitePool,
    },
    Redis {
        storage: RedisStorage<SyncJob>,
        conn: redis::aio::ConnectionManager,
    },
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Queue::Sqlite { .. } => f.write_str("Queue::Sqlite"),
            Queue::Redis { .. } => f.write_str("Queue::Redis"),
        }
    }
}

/// How often a worker proves it is alive, and how many proofs it may miss before its jobs
/// are given to another worker: a killed worker's job is taken over after about their product.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    pub heartbeat: Duration,
    pub missed: usize,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            heartbeat: Duration::from_secs(5),
            missed: 3,
        }
    }
}

const ERRORS_TABLE: &str = "CREATE TABLE IF NOT EXISTS rollcall_job_errors (
    id TEXT PRIMARY KEY,
    error TEXT NOT NULL,
    at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
)";

const KEYS_TABLE: &str = "CREATE TABLE IF NOT EXISTS rollcall_job_keys (
    key TEXT PRIMARY KEY,
    at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
)";

fn errors_key() -> String {
    format!("{QUEUE_NAME}:rollcall:errors")
}

impl Queue {
    /// Opens (creating if needed) the queue.
    pub async fn open(location: &QueueLocation, liveness: Liveness) -> Result<Queue, QueueError> {
        match location {
            QueueLocation::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        QueueError::Location(format!("cannot create {}: {e}", dir.display()))
                    })?;
                }
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(10));
                let pool = SqlitePoolOptions::new()
                    .max_connections(4)
                    .connect_with(options)
                    .await?;
                // Workers started together race to create the schema; the loser finds it made.
                let mut tries = 0;
                while let Err(e) = SqliteStorage::setup(&pool).await {
                    tries += 1;
                    if tries >= 20 {
                        return Err(QueueError::Migrate(e.to_string()));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                sqlx::query(ERRORS_TABLE).execute(&pool).await?;
                sqlx::query(KEYS_TABLE).execute(&pool).await?;
                let config = apalis_sqlite::Config::default()
                    .queue(QUEUE_NAME)
                    .heartbeat_interval(liveness.heartbeat)
                    .missed_heartbeats(liveness.missed);
                let storage = SqliteStorage::new(&pool).with_config(config);
                Ok(Queue::Sqlite { storage, pool })
            }
            QueueLocation::Redis(url) => {
                let conn = apalis_redis::connect(url.as_str()).await?;
                let config = apalis_redis::Config::default()
                    .queue(QUEUE_NAME)
                    .heartbeat_interval(liveness.heartbeat)
                    .missed_heartbeats(liveness.missed);
                let storage = RedisStorage::new(conn.clone()).with_config(config);
                Ok(Queue::Redis { storage, conn })
            }
        }
    }

    /// Queues `job`. A job pushed again with the same `key` is dropped: that is how two
    /// workers ticking the same schedule enqueue its run once.
    ///
    /// The queue itself runs a job once (or again only when its worker died): the worker
    /// retries a failing job itself, with backoff (`--attempts`), then leaves it failed.
    pub async fn push(&self, job: SyncJob, key: Option<&str>) -> Result<(), QueueError> {
        let mut task = TaskBuilder::new(job).max_attempts(1);
        if let Some(key) = key {
            // Claimed here rather than through apalis's idempotency keys, which its Redis
            // backend's single-task push does not honour.
            if !self.claim(key).await? {
                return Ok(());
            }
            task = task.idempotency_key(key);
        }
        let task = task.build();
        match self.clone() {
            Queue::Sqlite { mut storage, .. } => storage.push_task(task).await.map_err(push_err),
            Queue::Redis { mut storage, .. } => storage.push_task(task).await.map_err(push_err),
        }
    }

    /// Jobs, newest first; only failed ones with `failed_only`.
    pub async fn list(&self, failed_only: bool, limit: u32) -> Result<Vec<JobRow>, QueueError> {
        let mut rows = match self {
            Queue::Sqlite { storage, .. } => sqlite_rows(storage, failed_only, limit).await?,
            Queue::Redis { conn, .. } => redis_rows(conn.clone(), failed_only).await?,
        };
        // Task ids are ULIDs: they sort by the time the job was queued.
        rows.sort_by(|a, b| b.id.cmp(&a.id));
        rows.truncate(limit as usize);
        for row in &mut rows {
            if row.status == "failed" || row.status == "killed" {
                row.error = self.error_of(&row.id).await?;
            }
        }
        Ok(rows)
    }

    /// Queues a failed job again, as a new job; returns it.
    pub async fn retry(&self, id: &str) -> Result<SyncJob, QueueError> {
        let rows = self.list(true, 10_000).await?;
        let Some(row) = rows.into_iter().find(|r| r.id == id) else {
            let all = self.list(false, 10_000).await?;
            return Err(match all.into_iter().find(|r| r.id == id) {
                Some(r) => QueueError::NotFailed {
                    id: id.to_owned(),
                    status: r.status,
                },
                None => QueueError::NoSuchJob(id.to_owned()),
            });
        };
        let Some(old) = row.job else {
            return Err(QueueError::Undecodable {
                id: id.to_owned(),
                message: "its arguments are not a rollcall sync job".into(),
            });
        };
        let job = SyncJob {
            trigger: Trigger::Retry { of: id.to_owned() },
            ..old
        };
        // Retrying the same failed job twice queues it once.
        self.push(job.clone(), Some(&format!("retry:{id}"))).await?;
        Ok(job)
    }

    /// Takes `key` for good; `false` when someone took it first. Keys are kept a week (longer
    /// than any schedule's retry could care about).
    async fn claim(&self, key: &str) -> Result<bool, QueueError> {
        match self {
            Queue::Sqlite { pool, .. } => {
                let done = sqlx::query(
                    "INSERT INTO rollcall_job_keys (key) VALUES (?1) ON CONFLICT(key) DO NOTHING",
                )
                .bind(key)
                .execute(pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }
            Queue::Redis { conn, .. } => {
                let mut conn = conn.clone();
                let set: Option<String> = redis::cmd("SET")
                    .arg(format!("{QUEUE_NAME}:rollcall:key:{key}"))
                    .arg(1)
                    .arg("NX")
                    .arg("EX")
                    .arg(7 * 24 * 3600)
                    .query_async(&mut conn)
                    .await?;
                Ok(set.is_some())
            }
        }
    }

    /// Keeps why a job's last attempt failed.
    pub async fn record_error(&self, id: &str, error: &str) -> Result<(), QueueError> {
        match self {
            Queue::Sqlite { pool, .. } => {
                sqlx::query(
                    "INSERT INTO rollcall_job_errors (id, error) VALUES (?1, ?2)
                     ON CONFLICT(id) DO UPDATE SET error = excluded.error, at = excluded.at",
                )
                .bind(id)
                .bind(error)
                .execute(pool)
                .await?;
            }
            Queue::Redis { conn, .. } => {
                let mut conn = conn.clone();
                redis::cmd("HSET")
                    .arg(errors_key())
                    .arg(id)
                    .arg(error)
                    .query_async::<()>(&mut conn)
                    .await?;
            }
        }
        Ok(())
    }

    async fn error_of(&self, id: &str) -> Result<Option<String>, QueueError> {
        Ok(match self {
            Queue::Sqlite { pool, .. } => {
                sqlx::query_scalar("SELECT error FROM rollcall_job_errors WHERE id = ?1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await?
            }
            Queue::Redis { conn, .. } => {
                let mut conn = conn.clone();
                redis::cmd("HGET")
                    .arg(errors_key())
                    .arg(id)
                    .query_async(&mut conn)
                    .await?
            }
        })
    }

    /// For `/readyz`: the queue answers.
    pub async fn ping(&self) -> Result<(), QueueError> {
        match self {
            Queue::Sqlite { pool, .. } => {
                sqlx::query("SELECT 1").execute(pool).await?;
            }
            Queue::Redis { conn, .. } => {
                let mut conn = conn.clone();
                redis::cmd("PING").query_async::<String>(&mut conn).await?;
            }
        }
        Ok(())
    }

    /// The Redis connection, when the queue is on Redis: locks and shared rate limits use it.
    pub fn redis(&self) -> Option<redis::aio::ConnectionManager> {
        match self {
            Queue::Sqlite { .. } => None,
            Queue::Redis { conn, .. } => Some(conn.clone()),
        }
    }

    /// The client leases kept beside this queue (a table in its SQLite file, keys in Redis).
    pub async fn locks(&self) -> Result<Arc<dyn locks::ClientLocks>, locks::LockError> {
        Ok(match self {
            Queue::Sqlite { pool, .. } => Arc::new(locks::SqliteLocks::new(pool.clone()).await?),
            Queue::Redis { conn, .. } => Arc::new(locks::RedisLocks::new(conn.clone())),
        })
    }
}

/// apalis-sqlite lists one status at a time.
async fn sqlite_rows(
    storage: &SqliteStorage<SyncJob>,
    failed_only: bool,
    limit: u32,
) -> Result<Vec<JobRow>, QueueError> {
    let statuses: &[Status] = if failed_only {
        &[Status::Failed, Status::Killed]
    } else {
        &[
            Status::Pending,
            Status::Queued,
            Status::Running,
            Status::Done,
            Status::Failed,
            Status::Killed,
        ]
    };
    let mut rows = Vec::new();
    for status in statuses {
        let filter = Filter {
            status: Some(status.clone()),
            page: 1,
            page_size: Some(limit),
        };
        let tasks = storage
            .list_tasks(&filter)
            .await
            .map_err(|e| QueueError::List(e.to_string()))?;
        for task in tasks {
            let ctx = task.ctx();
            rows.push(JobRow {
                id: ctx.task_id().map(ToString::to_string).unwrap_or_default(),
                status: format!("{:?}", ctx.status()).to_lowercase(),
                attempts: ctx.attempt(),
                job: serde_json::from_slice(&task.args).ok(),
                error: None,
                run_at: ctx.run_at(),
            });
        }
    }
    Ok(rows)
}

/// apalis-redis 1.0's own listing reads a key it never writes, so jobs are read from its task
/// hashes: `{queue}:data` (id → arguments) and `{queue}:meta:{id}` (status, attempts).
async fn redis_rows(
    mut conn: redis::aio::ConnectionManager,
    failed_only: bool,
) -> Result<Vec<JobRow>, QueueError> {
    let ids: Vec<String> = redis::cmd("HKEYS")
        .arg(format!("{QUEUE_NAME}:data"))
        .query_async(&mut conn)
        .await?;
    let mut rows = Vec::new();
    for id in ids {
        let meta: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(format!("{QUEUE_NAME}:meta:{id}"))
            .query_async(&mut conn)
            .await?;
        let status = meta
            .get("status")
            .map(|s| s.to_lowercase())
            .unwrap_or_else(|| "unknown".into());
        if failed_only && status != "failed" && status != "killed" {
            continue;
        }
        let data: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(format!("{QUEUE_NAME}:data"))
            .arg(&id)
            .query_async(&mut conn)
            .await?;
        rows.push(JobRow {
            status,
            attempts: meta
                .get("attempts")
                .and_then(|a| a.parse().ok())
                .unwrap_or_default(),
            job: data.and_then(|d| serde_json::from_slice(&d).ok()),
            error: None,
            run_at: meta.get("run_at").and_then(|a| a.parse().ok()),
            id,
        });
    }
    Ok(rows)
}

fn push_err(e: impl fmt::Display) -> QueueError {
    QueueError::Push(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_hide_passwords() {
        assert_eq!(
            "redis://127.0.0.1:6379".parse::<QueueLocation>().ok(),
            Some(QueueLocation::Redis("redis://127.0.0.1:6379".into()))
        );
        assert_eq!(
            "sqlite:/tmp/q.db".parse::<QueueLocation>().ok(),
            Some(QueueLocation::Sqlite("/tmp/q.db".into()))
        );
        assert_eq!(
            "q.db".parse::<QueueLocation>().ok(),
            Some(QueueLocation::Sqlite("q.db".into()))
        );
        assert!("amqp://x".parse::<QueueLocation>().is_err());
        let secret = "redis://default:hunter2@cache:6379/0"
            .parse::<QueueLocation>()
            .expect("a redis url");
        assert!(!format!("{secret:?} {secret}").contains("hunter2"));
    }

    #[test]
    fn triggers_round_trip_as_tagged_json() {
        let job = SyncJob {
            pipeline: "acme".into(),
            client: "Contoso".into(),
            trigger: Trigger::Webhook {
                source: "graph".into(),
            },
        };
        let text = serde_json::to_string(&job).expect("serialises");
        assert!(text.contains(r#""kind":"webhook""#));
        assert_eq!(serde_json::from_str::<SyncJob>(&text).expect("parses"), job);
    }
}
