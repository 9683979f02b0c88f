//! The store: remembers every run and every change applied, on one SQLite file (embedded, the
//! default) or on a PostgreSQL server many machines share ([`crate::db`]).
//!
//! Each change is written here before it is sent (`pending`) and again after (`applied` with
//! the id the billing system gave, or `failed` with the error), so `rollcall history` can say
//! what happened even when a run was killed half way, and a person can audit who was billed
//! from when. Amounts are kept as text inside the JSON on both backends: SQLite has no exact
//! decimal type, and one representation keeps a copied store reading the same.
//! Directories that read incrementally keep their cursor here between runs.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rollcall_core::{Applied, Change, Cursor};
use serde::Serialize;
use sqlx::SqliteConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

use crate::db::Db;
use crate::on_db;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("store: {0}")]
    Query(#[from] sqlx::Error),
    #[error("store: cannot encode a change: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Schema versions, applied in order; `PRAGMA user_version` says how many have run.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE runs (
    id          TEXT PRIMARY KEY,
    pipeline    TEXT NOT NULL,
    command     TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    outcome     TEXT
);
CREATE TABLE changes (
    run_id      TEXT NOT NULL REFERENCES runs(id),
    seq         INTEGER NOT NULL,
    client      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    subject     TEXT NOT NULL,
    change      TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'applied', 'failed')),
    remote_id   TEXT,
    reconciled  INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    recorded_at TEXT NOT NULL,
    settled_at  TEXT,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX changes_by_client ON changes (client, recorded_at);
"#,
    r#"
CREATE TABLE directory_cursors (
    pipeline   TEXT NOT NULL,
    client     TEXT NOT NULL,
    directory  TEXT NOT NULL,
    cursor     TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (pipeline, client)
);
"#,
    r#"
CREATE TABLE seat_ledger (
    pipeline    TEXT NOT NULL,
    client      TEXT NOT NULL,
    product     TEXT NOT NULL,
    person_id   TEXT NOT NULL,
    person_name TEXT NOT NULL,
    rule        TEXT NOT NULL,
    evidence    TEXT NOT NULL,
    since       TEXT NOT NULL,
    last_seen   TEXT NOT NULL,
    until       TEXT,
    run_id      TEXT NOT NULL,
    PRIMARY KEY (pipeline, client, product, person_id, since)
);
CREATE INDEX seat_ledger_open ON seat_ledger (pipeline, client, product) WHERE until IS NULL;
"#,
    r#"
CREATE TABLE run_reports (
    run_id     TEXT PRIMARY KEY REFERENCES runs(id),
    pipeline   TEXT NOT NULL,
    plan       TEXT NOT NULL,
    outcomes   TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"#,
    r#"
ALTER TABLE seat_ledger ADD COLUMN contact_key TEXT;
"#,
    r#"
CREATE TABLE oauth_connections (
    name       TEXT PRIMARY KEY,
    tokens     TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"#,
];

/// The same schema versions on PostgreSQL, numbered alike (`rollcall_schema` records how many
/// have run). Times stay RFC 3339 text, as on SQLite, and text compares byte by byte
/// (`COLLATE "C"`, whatever the database's locale), so rows sort and compare as they do on
/// SQLite and a copied store reads back unchanged; JSON stays text, so amounts keep every digit.
/// PostgreSQL stores began at this schema, so the first version also makes the tables other
/// modules keep in the store (approvals, client leases), under the migration lock rather than
/// racing `CREATE TABLE IF NOT EXISTS` between processes.
const PG_MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE runs (
    id          TEXT COLLATE "C" PRIMARY KEY,
    pipeline    TEXT COLLATE "C" NOT NULL,
    command     TEXT COLLATE "C" NOT NULL,
    started_at  TEXT COLLATE "C" NOT NULL,
    finished_at TEXT COLLATE "C",
    outcome     TEXT COLLATE "C"
);
CREATE TABLE changes (
    run_id      TEXT COLLATE "C" NOT NULL REFERENCES runs(id),
    seq         BIGINT NOT NULL,
    client      TEXT COLLATE "C" NOT NULL,
    kind        TEXT COLLATE "C" NOT NULL,
    subject     TEXT COLLATE "C" NOT NULL,
    change      TEXT COLLATE "C" NOT NULL,
    state       TEXT COLLATE "C" NOT NULL CHECK (state IN ('pending', 'applied', 'failed')),
    remote_id   TEXT COLLATE "C",
    reconciled  BOOLEAN NOT NULL DEFAULT FALSE,
    error       TEXT COLLATE "C",
    recorded_at TEXT COLLATE "C" NOT NULL,
    settled_at  TEXT COLLATE "C",
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX changes_by_client ON changes (client, recorded_at);
CREATE TABLE approvals (
    id            TEXT COLLATE "C" PRIMARY KEY,
    pipeline      TEXT COLLATE "C" NOT NULL,
    pipeline_file TEXT COLLATE "C" NOT NULL,
    client        TEXT COLLATE "C" NOT NULL,
    state         TEXT COLLATE "C" NOT NULL,
    reason        TEXT COLLATE "C" NOT NULL,
    trigger       TEXT COLLATE "C" NOT NULL,
    plan          TEXT COLLATE "C" NOT NULL,
    fingerprint   TEXT COLLATE "C",
    seats_before  BIGINT NOT NULL,
    seats_after   BIGINT NOT NULL,
    currency      TEXT COLLATE "C" NOT NULL,
    amount_before TEXT COLLATE "C" NOT NULL,
    amount_after  TEXT COLLATE "C" NOT NULL,
    refused_run   TEXT COLLATE "C",
    created_at    TEXT COLLATE "C" NOT NULL,
    expires_at    TEXT COLLATE "C" NOT NULL,
    effective     TEXT COLLATE "C",
    decided_at    TEXT COLLATE "C",
    decided_by    TEXT COLLATE "C",
    note          TEXT COLLATE "C",
    applied_run   TEXT COLLATE "C",
    superseded_by TEXT COLLATE "C"
);
CREATE INDEX approvals_by_client ON approvals (pipeline, client, state);
CREATE TABLE rollcall_client_locks (
    key        TEXT COLLATE "C" PRIMARY KEY,
    holder     TEXT COLLATE "C",
    fence      BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
"#,
    r#"
CREATE TABLE directory_cursors (
    pipeline   TEXT COLLATE "C" NOT NULL,
    client     TEXT COLLATE "C" NOT NULL,
    directory  TEXT COLLATE "C" NOT NULL,
    cursor     TEXT COLLATE "C" NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (pipeline, client)
);
"#,
    r#"
CREATE TABLE seat_ledger (
    pipeline    TEXT COLLATE "C" NOT NULL,
    client      TEXT COLLATE "C" NOT NULL,
    product     TEXT COLLATE "C" NOT NULL,
    person_id   TEXT COLLATE "C" NOT NULL,
    person_name TEXT COLLATE "C" NOT NULL,
    rule        TEXT COLLATE "C" NOT NULL,
    evidence    TEXT COLLATE "C" NOT NULL,
    since       TEXT COLLATE "C" NOT NULL,
    last_seen   TEXT COLLATE "C" NOT NULL,
    until       TEXT COLLATE "C",
    run_id      TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (pipeline, client, product, person_id, since)
);
CREATE INDEX seat_ledger_open ON seat_ledger (pipeline, client, product) WHERE until IS NULL;
"#,
    r#"
CREATE TABLE run_reports (
    run_id     TEXT COLLATE "C" PRIMARY KEY REFERENCES runs(id),
    pipeline   TEXT COLLATE "C" NOT NULL,
    plan       TEXT COLLATE "C" NOT NULL,
    outcomes   TEXT COLLATE "C" NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL
);
"#,
    r#"
ALTER TABLE seat_ledger ADD COLUMN contact_key TEXT COLLATE "C";
"#,
    r#"
CREATE TABLE oauth_connections (
    name       TEXT COLLATE "C" PRIMARY KEY,
    tokens     TEXT COLLATE "C" NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL
);
"#,
];

/// The schema version this rollcall writes (the same number on both backends).
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Every table a store holds, in an order rows can be copied in (referenced tables first).
/// `rollcall_client_locks` is left out: leases are held for seconds and mean nothing elsewhere.
pub const TABLES: &[&str] = &[
    "runs",
    "changes",
    "directory_cursors",
    "seat_ledger",
    "run_reports",
    "oauth_connections",
    "approvals",
];

/// Serialises migrations between processes opening one new PostgreSQL store at once.
const PG_MIGRATION_LOCK: i64 = 0x726f_6c6c_6361_6c6c;

#[derive(Clone)]
pub struct Store {
    db: Db,
    /// The SQLite file, or the PostgreSQL URL (shown only without its password).
    path: PathBuf,
    /// Where billing systems keep OAuth tokens when not here (Redis, for many machines).
    tokens: Option<std::sync::Arc<dyn rollcall_core::oauth::TokenVault>>,
    /// Encrypts OAuth tokens at rest when the operator set one (`crate::seal`).
    key: Option<std::sync::Arc<crate::seal::StoreKey>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &crate::db::display(&self.path))
            .field("shared_tokens", &self.tokens.is_some())
            .field("encrypted_tokens", &self.key.is_some())
            .finish_non_exhaustive()
    }
}

/// One line of `rollcall history`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct HistoryRow {
    pub run_id: String,
    pub pipeline: String,
    pub client: String,
    pub kind: String,
    pub subject: String,
    pub state: String,
    pub remote_id: Option<String>,
    pub reconciled: bool,
    pub error: Option<String>,
    pub recorded_at: String,
    #[sqlx(json)]
    pub change: Change,
}

impl Store {
    /// What billing systems are built with: this store as their OAuth token vault.
    pub fn build_context(&self) -> rollcall_core::BuildContext {
        rollcall_core::BuildContext {
            tokens: self.token_vault(),
            mark: rollcall_core::owner_mark(""),
        }
    }

    /// Where OAuth tokens are kept: this store, unless [`Store::with_token_vault`] moved them.
    pub fn token_vault(&self) -> std::sync::Arc<dyn rollcall_core::oauth::TokenVault> {
        match &self.tokens {
            Some(vault) => vault.clone(),
            None => {
                let mut local = self.clone();
                local.tokens = None;
                std::sync::Arc::new(local)
            }
        }
    }

    /// This store, with OAuth tokens encrypted under `key` (none: written in clear).
    pub fn with_key(mut self, key: Option<std::sync::Arc<crate::seal::StoreKey>>) -> Store {
        self.key = key;
        self
    }

    /// The key OAuth tokens are encrypted with, for vaults beside the store (Redis).
    pub fn key(&self) -> Option<std::sync::Arc<crate::seal::StoreKey>> {
        self.key.clone()
    }

    /// This store, with OAuth tokens kept in `vault` instead (shared by every worker).
    pub fn with_token_vault(
        mut self,
        vault: std::sync::Arc<dyn rollcall_core::oauth::TokenVault>,
    ) -> Store {
        self.tokens = Some(vault);
        self
    }

    /// Opens the store at `path` and brings its schema up to date: a PostgreSQL server when
    /// `path` is a `postgres://` URL, else an SQLite file. A missing SQLite store is made (file
    /// 0600, new directories 0700: it holds OAuth tokens); an empty, foreign or newer file is
    /// refused ([`crate::store_file`]), never taken for a new store. A PostgreSQL store touches
    /// no local file.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        if crate::db::is_postgres(path) {
            return Self::open_postgres(path).await;
        }
        let open_err = |message: String| StoreError::Open {
            path: path.to_owned(),
            message,
        };
        crate::store_file::prepare(path, |p| async move {
            let store = Self::connect(&p).await?;
            store.migrate().await?;
            store.db.close().await;
            Ok(())
        })
        .await
        .map_err(|e| match e {
            crate::store_file::Prepare::Refused(message) => open_err(message),
            crate::store_file::Prepare::Store(e) => e,
        })?;
        let store = Self::connect(path).await?;
        let Db::Sqlite(pool) = &store.db else {
            unreachable!("connect opens SQLite")
        };
        crate::store_file::check_schema(pool, MIGRATIONS.len())
            .await
            .map_err(open_err)?;
        store.migrate().await?;
        Ok(store)
    }

    async fn open_postgres(url: &Path) -> Result<Store, StoreError> {
        let shown = PathBuf::from(crate::db::display(url));
        let open_err = |message: String| StoreError::Open {
            path: shown.clone(),
            message,
        };
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(std::time::Duration::from_secs(30))
            .connect(&url.to_string_lossy())
            .await
            .map_err(|e| {
                open_err(format!(
                    "cannot connect: {e} (hint: is the server up, does the database exist, may this user connect?)"
                ))
            })?;
        let store = Store {
            db: Db::Postgres(pool),
            path: url.to_owned(),
            tokens: None,
            key: None,
        };
        store.migrate().await.map_err(|e| match e {
            StoreError::Open { message, .. } => open_err(message),
            e => e,
        })?;
        Ok(store)
    }

    async fn connect(path: &Path) -> Result<Store, StoreError> {
        // A file name, not a URL: `%` and `?` in a path are just characters.
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(false)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Open {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        Ok(Store {
            db: Db::Sqlite(pool),
            path: path.to_owned(),
            tokens: None,
            key: None,
        })
    }

    /// The store's database, for what keeps a table of its own in it: the client leases every
    /// sync takes (`queue::locks`) and approvals, so runs sharing a store exclude each other
    /// with no queue or server beside it.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Where the store is, as it may be shown (no password).
    pub fn location(&self) -> String {
        crate::db::display(&self.path)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        match &self.db {
            Db::Sqlite(pool) => {
                let mut conn = pool.acquire().await?;
                for (i, sql) in MIGRATIONS.iter().enumerate() {
                    apply_migration(&mut conn, sql, i as i64 + 1).await?;
                }
                Ok(())
            }
            Db::Postgres(pool) => migrate_postgres(pool).await,
        }
    }

    /// Keeps what a run planned and what came of it, so its report can be made again. The
    /// store keeps them as the engine wrote them (JSON) and does not read them.
    pub async fn save_report(
        &self,
        run_id: &str,
        pipeline: &str,
        plan: &impl Serialize,
        outcomes: &impl Serialize,
    ) -> Result<(), StoreError> {
        on_db!(&self.db, p => sqlx::query(self.db.sql(
            "INSERT INTO run_reports (run_id, pipeline, plan, outcomes, created_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (run_id) DO UPDATE SET pipeline = excluded.pipeline, plan = excluded.plan,
               outcomes = excluded.outcomes, created_at = excluded.created_at",
        ))
        .bind(run_id)
        .bind(pipeline)
        .bind(serde_json::to_string(plan)?)
        .bind(serde_json::to_string(outcomes)?)
        .bind(now())
        .execute(p)
        .await.map(|_| ()))?;
        Ok(())
    }

    /// A recorded run: when, its plan and its outcomes. `None` if there is no such run.
    pub async fn report(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        Ok(
            on_db!(&self.db, p => sqlx::query_as(self.db.sql("SELECT run_id, created_at, plan, outcomes FROM run_reports WHERE run_id = ?"))
        .bind(run_id)
        .fetch_optional(p)
        .await)?,
        )
    }

    /// Every recorded run of a pipeline, oldest first: the history behind the seat charts.
    pub async fn reports(&self, pipeline: &str) -> Result<Vec<RunRecord>, StoreError> {
        Ok(
            on_db!(&self.db, p => sqlx::query_as(self.db.sql("SELECT run_id, created_at, plan, outcomes FROM run_reports WHERE pipeline = ? ORDER BY created_at"))
        .bind(pipeline)
        .fetch_all(p)
        .await)?,
        )
    }

    /// Where a run's HTML report is written: beside the store, in `reports/`; with the store
    /// on PostgreSQL, in `.rollcall/reports/` under the working directory.
    pub fn report_path(&self, run_id: &str) -> PathBuf {
        if self.db.backend() == crate::db::Backend::Postgres {
            return Path::new(".rollcall")
                .join("reports")
                .join(format!("{run_id}.html"));
        }
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        dir.join("reports").join(format!("{run_id}.html"))
    }

    /// The most recent runs, newest first, with what each planned and came to when it was
    /// recorded (`rollcall runs`).
    pub async fn runs(&self, limit: u32) -> Result<Vec<RunRow>, StoreError> {
        Ok(
            on_db!(&self.db, p => sqlx::query_as(self.db.sql("SELECT r.id, r.pipeline, r.command, r.started_at, r.finished_at, r.outcome,
                    p.plan, p.outcomes
             FROM runs r LEFT JOIN run_reports p ON p.run_id = r.id
             ORDER BY r.started_at DESC, r.id DESC
             LIMIT ?"))
        .bind(i64::from(limit))
        .fetch_all(p)
        .await)?,
        )
    }

    pub async fn has_run(&self, id: &str) -> Result<bool, StoreError> {
        let n: i64 = on_db!(&self.db, p => sqlx::query_scalar(self.db.sql("SELECT count(*) FROM runs WHERE id = ?"))
            .bind(id)
            .fetch_one(p)
            .await)?;
        Ok(n > 0)
    }

    pub async fn begin_run(
        &self,
        id: &str,
        pipeline: &str,
        command: &str,
    ) -> Result<(), StoreError> {
        on_db!(&self.db, p => sqlx::query(self.db.sql("INSERT INTO runs (id, pipeline, command, started_at) VALUES (?, ?, ?, ?)"))
            .bind(id)
            .bind(pipeline)
            .bind(command)
            .bind(now())
            .execute(p)
            .await.map(|_| ()))?;
        Ok(())
    }

    pub async fn finish_run(&self, id: &str, outcome: &str) -> Result<(), StoreError> {
        on_db!(&self.db, p => sqlx::query(self.db.sql("UPDATE runs SET finished_at = ?, outcome = ? WHERE id = ?"))
            .bind(now())
            .bind(outcome)
            .bind(id)
            .execute(p)
            .await.map(|_| ()))?;
        Ok(())
    }

    /// Records a change about to be sent.
    pub async fn record_pending(
        &self,
        run: &str,
        seq: u32,
        client: &str,
        change: &Change,
    ) -> Result<(), StoreError> {
        on_db!(&self.db, p => sqlx::query(self.db.sql("INSERT INTO changes (run_id, seq, client, kind, subject, change, state, recorded_at)
             VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)"))
        .bind(run)
        .bind(i64::from(seq))
        .bind(client)
        .bind(change.kind())
        .bind(change.subject())
        .bind(serde_json::to_string(change)?)
        .bind(now())
        .execute(p)
        .await.map(|_| ()))?;
        Ok(())
    }

    pub async fn record_applied(
        &self,
        run: &str,
        seq: u32,
        applied: &Applied,
    ) -> Result<(), StoreError> {
        on_db!(&self.db, p => sqlx::query(self.db.sql("UPDATE changes SET state = 'applied', remote_id = ?, reconciled = ?, settled_at = ? WHERE run_id = ? AND seq = ?"))
            .bind(&applied.remote_id)
            .bind(applied.reconciled)
            .bind(now())
            .bind(run)
            .bind(i64::from(seq))
            .execute(p)
            .await.map(|_| ()))?;
        Ok(())
    }

    pub async fn record_failed(&self, run: &str, seq: u32, error: &str) -> Result<(), StoreError> {
        on_db!(&self.db, p => sqlx::query(self.db.sql("UPDATE changes SET state = 'failed', error = ?, settled_at = ? WHERE run_id = ? AND seq = ?"))
            .bind(error)
            .bind(now())
            .bind(run)
            .bind(i64::from(seq))
            .execute(p)
            .await.map(|_| ()))?;
        Ok(())
    }

    /// The most recent changes, newest first, optionally for one client.
    pub async fn history(
        &self,
        client: Option<&str>,
        limit: u32,
    ) -> Result<Vec<HistoryRow>, StoreError> {
        // JSON is kept as text; PostgreSQL hands it back typed `json` (which keeps the text as
        // written) for the row's JSON field to decode.
        let sql = self.db.pick(
            "SELECT c.run_id, r.pipeline, c.client, c.kind, c.subject, c.state, c.remote_id, c.reconciled,
                    c.error, c.recorded_at, c.change
             FROM changes c JOIN runs r ON r.id = c.run_id
             WHERE (?1 IS NULL OR lower(c.client) = lower(?1))
             ORDER BY c.recorded_at DESC, c.seq DESC
             LIMIT ?2",
            "SELECT c.run_id, r.pipeline, c.client, c.kind, c.subject, c.state, c.remote_id, c.reconciled,
                    c.error, c.recorded_at, c.change::json AS change
             FROM changes c JOIN runs r ON r.id = c.run_id
             WHERE (?1::text IS NULL OR lower(c.client) = lower(?1))
             ORDER BY c.recorded_at DESC, c.seq DESC
             LIMIT ?2",
        );
        let rows = on_db!(&self.db, p => sqlx::query_as(sql)
        .bind(client)
        .bind(i64::from(limit))
        .fetch_all(p)
        .await)?;
        Ok(rows)
    }
}

impl Store {
    /// The cursor a client's directory left on its last complete read, if it was the same
    /// directory (a pipeline that now points elsewhere starts over with a full read).
    pub async fn cursor(
        &self,
        pipeline: &str,
        client: &str,
        directory: &str,
    ) -> Result<Option<Cursor>, StoreError> {
        let row: Option<(String, String)> = on_db!(&self.db, p => sqlx::query_as(self.db.sql("SELECT directory, cursor FROM directory_cursors WHERE pipeline = ? AND client = ?"))
        .bind(pipeline)
        .bind(client)
        .fetch_optional(p)
        .await)?;
        match row {
            Some((d, text)) if d == directory => Ok(Some(serde_json::from_str(&text)?)),
            _ => Ok(None),
        }
    }

    pub async fn save_cursor(
        &self,
        pipeline: &str,
        client: &str,
        directory: &str,
        cursor: &Cursor,
    ) -> Result<(), StoreError> {
        on_db!(&self.db, p => sqlx::query(self.db.sql("INSERT INTO directory_cursors (pipeline, client, directory, cursor, updated_at)
             VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (pipeline, client) DO UPDATE
             SET directory = excluded.directory, cursor = excluded.cursor, updated_at = excluded.updated_at"))
        .bind(pipeline)
        .bind(client)
        .bind(directory)
        .bind(serde_json::to_string(cursor)?)
        .bind(now())
        .execute(p)
        .await.map(|_| ()))?;
        Ok(())
    }
}

/// A run as recorded: what it planned and what came of it, as the engine wrote them (JSON;
/// `engine::RecordedRun` reads them).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRecord {
    pub run_id: String,
    #[sqlx(rename = "created_at")]
    pub at: String,
    pub plan: String,
    pub outcomes: String,
}

/// One product's seats as a run billed them: what [`Store::record_seats`] brings the ledger
/// up to.
#[derive(Debug, Clone)]
pub struct LedgerSeats<'a> {
    /// The product's id in the pipeline.
    pub product: &'a str,
    /// The seat rule (CEL) that chose the people.
    pub rule: &'a str,
    pub people: Vec<LedgerHolder<'a>>,
}

/// A person holding a seat, as the ledger records them.
#[derive(Debug, Clone)]
pub struct LedgerHolder<'a> {
    pub person_id: &'a str,
    pub name: &'a str,
    /// Why they hold it, in the rules' own terms.
    pub evidence: &'a std::collections::BTreeMap<String, String>,
    /// The key of their contact in the billing system, where contacts are managed.
    pub contact: Option<&'a str>,
    /// Held only through the grace period: the span stays open and is not marked seen.
    pub by_grace: bool,
}

/// The ids of the contacts and additions rollcall made or changed for a client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnedObjects {
    pub contacts: std::collections::BTreeSet<String>,
    pub additions: std::collections::BTreeSet<String>,
}

/// A seat held now, with when its holder last matched: what the grace period counts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldSeat {
    pub person_id: String,
    pub name: String,
    pub last_seen: DateTime<Utc>,
}

/// One run as `rollcall runs` lists it; `plan` and `outcomes` are absent for a run that
/// stopped before its report was kept.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRow {
    pub id: String,
    pub pipeline: String,
    pub command: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub outcome: Option<String>,
    pub plan: Option<String>,
    pub outcomes: Option<String>,
}

/// One stretch of time a person held a seat: the seat ledger behind `rollcall explain`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, sqlx::FromRow)]
pub struct SeatSpan {
    pub client: String,
    pub product: String,
    pub person_id: String,
    pub person_name: String,
    pub rule: String,
    #[sqlx(json)]
    pub evidence: std::collections::BTreeMap<String, String>,
    pub since: String,
    pub last_seen: String,
    /// When the seat ended; `None` while it is held.
    pub until: Option<String>,
    /// The key of the person's contact in the billing system, when contacts are managed.
    pub contact_key: Option<String>,
}

impl Store {
    /// Brings the ledger up to what a client was just billed, as of `at` (the moment the plan
    /// was made, whose proration counted its changes from then): new holders open a span,
    /// people who no longer hold a seat close theirs, the rest are marked seen. One
    /// transaction, so a crash leaves the ledger as it was before the run, never half-updated.
    /// An older plan applied late never ends a span before it began nor moves `last_seen` back.
    pub async fn record_seats(
        &self,
        pipeline: &str,
        client: &str,
        run_id: &str,
        at: DateTime<Utc>,
        seats: &[LedgerSeats<'_>],
    ) -> Result<(), StoreError> {
        let at = at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let db = &self.db;
        let select_open = db.sql(
            "SELECT person_id FROM seat_ledger
             WHERE pipeline = ? AND client = ? AND product = ? AND until IS NULL",
        );
        let close = db.pick(
            "UPDATE seat_ledger SET until = max(since, ?)
             WHERE pipeline = ? AND client = ? AND product = ? AND person_id = ? AND until IS NULL",
            "UPDATE seat_ledger SET until = GREATEST(since, ?)
             WHERE pipeline = ? AND client = ? AND product = ? AND person_id = ? AND until IS NULL",
        );
        let seen = db.pick(
            "UPDATE seat_ledger SET last_seen = max(last_seen, ?), person_name = ?, evidence = ?, rule = ?, contact_key = ?
             WHERE pipeline = ? AND client = ? AND product = ? AND person_id = ? AND until IS NULL",
            "UPDATE seat_ledger SET last_seen = GREATEST(last_seen, ?), person_name = ?, evidence = ?, rule = ?, contact_key = ?
             WHERE pipeline = ? AND client = ? AND product = ? AND person_id = ? AND until IS NULL",
        );
        // The same plan applied again opens the same span: it is reopened, never doubled.
        let open_span = db.pick(
            "INSERT INTO seat_ledger
             (pipeline, client, product, person_id, person_name, rule, evidence, since, last_seen, run_id, contact_key)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (pipeline, client, product, person_id, since)
             DO UPDATE SET until = NULL, last_seen = max(seat_ledger.last_seen, excluded.last_seen)",
            "INSERT INTO seat_ledger
             (pipeline, client, product, person_id, person_name, rule, evidence, since, last_seen, run_id, contact_key)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (pipeline, client, product, person_id, since)
             DO UPDATE SET until = NULL, last_seen = GREATEST(seat_ledger.last_seen, excluded.last_seen)",
        );
        // Read then written in one transaction, holding the client's ledger from the start: on
        // SQLite the write lock (or another process's write in between would fail it,
        // SQLITE_BUSY_SNAPSHOT); on PostgreSQL an advisory lock per pipeline and client, so two
        // machines recording one client's seats take turns instead of both opening a span.
        let (begin, lock) = match db.backend() {
            crate::db::Backend::Sqlite => ("BEGIN IMMEDIATE", None),
            crate::db::Backend::Postgres => (
                "BEGIN",
                Some("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"),
            ),
        };
        let ledger_key = format!("rollcall seat_ledger {pipeline}\u{1f}{client}");
        on_db!(db, p => {
            let mut tx = p.begin_with(begin).await?;
            if let Some(lock) = lock {
                sqlx::query(lock).bind(&ledger_key).execute(&mut *tx).await?;
            }
            for product in seats {
                let open: Vec<(String,)> = sqlx::query_as(select_open)
                    .bind(pipeline)
                    .bind(client)
                    .bind(product.product)
                    .fetch_all(&mut *tx)
                    .await?;
                let open: std::collections::BTreeSet<String> =
                    open.into_iter().map(|(id,)| id).collect();
                let holding: std::collections::BTreeSet<&str> =
                    product.people.iter().map(|h| h.person_id).collect();
                for gone in open.iter().filter(|id| !holding.contains(id.as_str())) {
                    sqlx::query(close)
                        .bind(&at)
                        .bind(pipeline)
                        .bind(client)
                        .bind(product.product)
                        .bind(gone)
                        .execute(&mut *tx)
                        .await?;
                }
                for h in &product.people {
                    if h.by_grace {
                        // Held by grace only: the span stays open, and `last_seen` keeps the
                        // last time the person matched, which is when the grace runs out from.
                        continue;
                    }
                    let evidence = serde_json::to_string(&h.evidence)?;
                    if open.contains(h.person_id) {
                        sqlx::query(seen)
                            .bind(&at)
                            .bind(h.name)
                            .bind(evidence)
                            .bind(product.rule)
                            .bind(h.contact)
                            .bind(pipeline)
                            .bind(client)
                            .bind(product.product)
                            .bind(h.person_id)
                            .execute(&mut *tx)
                            .await?;
                    } else {
                        sqlx::query(open_span)
                            .bind(pipeline)
                            .bind(client)
                            .bind(product.product)
                            .bind(h.person_id)
                            .bind(h.name)
                            .bind(product.rule)
                            .bind(evidence)
                            .bind(&at)
                            .bind(&at)
                            .bind(run_id)
                            .bind(h.contact)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The contacts and additions rollcall made or changed for a client: the objects it owns.
    pub async fn owned(&self, pipeline: &str, client: &str) -> Result<OwnedObjects, StoreError> {
        let rows: Vec<(String, String)> = on_db!(&self.db, p => sqlx::query_as(self.db.sql("SELECT DISTINCT c.kind, c.remote_id FROM changes c JOIN runs r ON r.id = c.run_id
             WHERE r.pipeline = ? AND lower(c.client) = lower(?) AND c.state = 'applied' AND c.remote_id IS NOT NULL"))
        .bind(pipeline)
        .bind(client)
        .fetch_all(p)
        .await)?;
        let mut owned = OwnedObjects::default();
        for (kind, id) in rows {
            if kind.ends_with("_contact") {
                owned.contacts.insert(id);
            } else if kind.ends_with("_addition") {
                owned.additions.insert(id);
            }
        }
        Ok(owned)
    }

    /// Creates of a client that may have landed without rollcall learning the id: sent by a
    /// run that crashed (`pending`) or whose answer was lost. `(kind, subject)` pairs.
    pub async fn unsettled_creates(
        &self,
        pipeline: &str,
        client: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        Ok(
            on_db!(&self.db, p => sqlx::query_as(self.db.sql("SELECT DISTINCT c.kind, c.subject FROM changes c JOIN runs r ON r.id = c.run_id
             WHERE r.pipeline = ? AND lower(c.client) = lower(?) AND c.remote_id IS NULL
               AND c.kind IN ('create_contact', 'create_addition')
               AND (c.state = 'pending'
                    OR (c.state = 'failed' AND (c.error LIKE '%request failed%' OR c.error LIKE '%answer lost%' OR c.error LIKE '%: 5__ %')))"))
        .bind(pipeline)
        .bind(client)
        .fetch_all(p)
        .await)?,
        )
    }

    /// The seats held now, per product id, with when each holder last matched: the input of
    /// the grace period.
    pub async fn held_seats(
        &self,
        pipeline: &str,
        client: &str,
    ) -> Result<std::collections::BTreeMap<String, Vec<HeldSeat>>, StoreError> {
        let rows: Vec<(String, String, String, String)> = on_db!(&self.db, p => sqlx::query_as(self.db.sql("SELECT product, person_id, person_name, last_seen FROM seat_ledger
             WHERE pipeline = ? AND client = ? AND until IS NULL"))
        .bind(pipeline)
        .bind(client)
        .fetch_all(p)
        .await)?;
        let mut out: std::collections::BTreeMap<String, Vec<HeldSeat>> = Default::default();
        for (product, person_id, name, last_seen) in rows {
            let Ok(last_seen) = DateTime::parse_from_rfc3339(&last_seen) else {
                continue;
            };
            out.entry(product).or_default().push(HeldSeat {
                person_id,
                name,
                last_seen: last_seen.with_timezone(&Utc),
            });
        }
        Ok(out)
    }

    /// The ledger of one client, newest first, optionally for one product or one person
    /// (matched by id or by name, without case).
    pub async fn seat_history(
        &self,
        pipeline: &str,
        client: &str,
        product: Option<&str>,
        person: Option<&str>,
    ) -> Result<Vec<SeatSpan>, StoreError> {
        let sql = self.db.pick(
            "SELECT client, product, person_id, person_name, rule, evidence, since, last_seen, until, contact_key
             FROM seat_ledger
             WHERE pipeline = ?1 AND lower(client) = lower(?2)
               AND (?3 IS NULL OR product = ?3)
               AND (?4 IS NULL OR person_id = ?4 OR lower(person_name) = lower(?4))
             ORDER BY coalesce(until, last_seen) DESC, since DESC",
            "SELECT client, product, person_id, person_name, rule, evidence::json AS evidence, since,
                    last_seen, until, contact_key
             FROM seat_ledger
             WHERE pipeline = ?1 AND lower(client) = lower(?2)
               AND (?3::text IS NULL OR product = ?3)
               AND (?4::text IS NULL OR person_id = ?4 OR lower(person_name) = lower(?4))
             ORDER BY coalesce(until, last_seen) DESC, since DESC",
        );
        let rows = on_db!(&self.db, p => sqlx::query_as(sql)
        .bind(pipeline)
        .bind(client)
        .bind(product)
        .bind(person)
        .fetch_all(p)
        .await)?;
        Ok(rows)
    }
}

async fn apply_migration(
    conn: &mut SqliteConnection,
    sql: &'static str,
    version: i64,
) -> Result<(), StoreError> {
    // Several processes (workers) may open a new store at once: the version is read inside
    // the write lock, so each migration runs once.
    let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
    let current: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *tx)
        .await?;
    if current >= version {
        tx.commit().await?;
        return Ok(());
    }
    sqlx::raw_sql(sql).execute(&mut *tx).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "PRAGMA user_version = {version}"
    )))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Brings a PostgreSQL store up to date in one transaction under an advisory lock, so
/// processes opening one new store at once run each migration once; a store a newer rollcall
/// wrote, or a database holding another program's `runs` table, is refused untouched.
async fn migrate_postgres(pool: &sqlx::PgPool) -> Result<(), StoreError> {
    let refused = |message: String| StoreError::Open {
        path: PathBuf::new(),
        message,
    };
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PG_MIGRATION_LOCK)
        .execute(&mut *tx)
        .await?;
    let current = postgres_version(&mut tx).await?;
    let known = i64::try_from(PG_MIGRATIONS.len()).unwrap_or(i64::MAX);
    match current {
        Some(v) if v > known => {
            return Err(refused(format!(
                "it was written by a newer rollcall (schema version {v}; this rollcall knows up to {known}) (hint: run the newer rollcall, or restore a backup this version made)"
            )));
        }
        Some(v) if v == known => return Ok(tx.commit().await?),
        None => {
            let foreign: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_name = 'runs')",
            )
            .fetch_one(&mut *tx)
            .await?;
            if foreign {
                return Err(refused(
                    "the database has a `runs` table but no rollcall schema version: it is not a rollcall store (hint: give rollcall a database of its own)"
                        .into(),
                ));
            }
            sqlx::query("CREATE TABLE rollcall_schema (version BIGINT NOT NULL)")
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO rollcall_schema (version) VALUES (0)")
                .execute(&mut *tx)
                .await?;
        }
        Some(_) => {}
    }
    let from = usize::try_from(current.unwrap_or(0)).unwrap_or(0);
    for sql in &PG_MIGRATIONS[from..] {
        sqlx::raw_sql(*sql).execute(&mut *tx).await?;
    }
    sqlx::query("UPDATE rollcall_schema SET version = $1")
        .bind(known)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// The schema version a PostgreSQL store records; `None` for a database rollcall never used.
pub(crate) async fn postgres_version(
    conn: &mut sqlx::PgConnection,
) -> Result<Option<i64>, sqlx::Error> {
    let has: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.tables
         WHERE table_schema = current_schema() AND table_name = 'rollcall_schema')",
    )
    .fetch_one(&mut *conn)
    .await?;
    if !has {
        return Ok(None);
    }
    sqlx::query_scalar("SELECT max(version) FROM rollcall_schema")
        .fetch_one(&mut *conn)
        .await
}

fn now() -> String {
    let t: DateTime<Utc> = Utc::now();
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// OAuth connections live in the store, so a rotated refresh token survives a restart and every
/// process sharing the store sees the newest one.
///
/// The lock that keeps two runs from refreshing one connection at once is the store's: on
/// SQLite its write lock (`rotate` opens its transaction with `BEGIN IMMEDIATE`, so a second
/// process or task waits on the busy timeout), on PostgreSQL the connection's row, read
/// `FOR UPDATE` (a second machine's `rotate` waits on it). Either way the second one then reads
/// the tokens the first committed and finds nothing left to do.
#[async_trait::async_trait]
impl rollcall_core::oauth::TokenVault for Store {
    async fn load(
        &self,
        connection: &str,
    ) -> Result<Option<rollcall_core::oauth::TokenSet>, rollcall_core::oauth::VaultError> {
        let sql = self
            .db
            .sql("SELECT tokens FROM oauth_connections WHERE name = ?");
        let text: Option<String> = on_db!(&self.db, p => sqlx::query_scalar(sql)
            .bind(connection)
            .fetch_optional(p)
            .await)
        .map_err(vault_error)?;
        text.map(|t| crate::seal::unseal(self.key.as_deref(), connection, &t))
            .transpose()
    }

    async fn save(
        &self,
        connection: &str,
        tokens: &rollcall_core::oauth::TokenSet,
    ) -> Result<(), rollcall_core::oauth::VaultError> {
        let row = crate::seal::seal(self.key.as_deref(), connection, tokens)?;
        let sql = self.db.sql(WRITE_TOKENS);
        on_db!(&self.db, p => sqlx::query(sql)
            .bind(connection)
            .bind(row)
            .bind(Utc::now().to_rfc3339())
            .execute(p)
            .await
            .map(|_| ()))
        .map_err(vault_error)
    }

    async fn rotate(
        &self,
        connection: &str,
        stale_access: &str,
        refresh: rollcall_core::oauth::Refresh<'_>,
    ) -> Result<rollcall_core::oauth::TokenSet, rollcall_core::RemoteError> {
        use rollcall_core::oauth::VaultError;
        let (begin, read) = match self.db.backend() {
            crate::db::Backend::Sqlite => (
                "BEGIN IMMEDIATE",
                "SELECT tokens FROM oauth_connections WHERE name = ?",
            ),
            crate::db::Backend::Postgres => (
                "BEGIN",
                "SELECT tokens FROM oauth_connections WHERE name = $1 FOR UPDATE",
            ),
        };
        let write = self.db.sql(WRITE_TOKENS);
        on_db!(&self.db, p => {
            let mut conn = p.acquire().await.map_err(vault_error)?;
            sqlx::query(begin)
                .execute(&mut *conn)
                .await
                .map_err(vault_error)?;
            let outcome = async {
                let text: Option<String> = sqlx::query_scalar(read)
                    .bind(connection)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(vault_error)?;
                let stored: rollcall_core::oauth::TokenSet = match text {
                    Some(t) => crate::seal::unseal(self.key.as_deref(), connection, &t)?,
                    None => return Err(VaultError::Missing(connection.to_owned()).into()),
                };
                if stored.access_token != stale_access {
                    return Ok(stored);
                }
                let fresh = refresh(stored).await?;
                let row = crate::seal::seal(self.key.as_deref(), connection, &fresh)?;
                sqlx::query(write)
                    .bind(connection)
                    .bind(row)
                    .bind(Utc::now().to_rfc3339())
                    .execute(&mut *conn)
                    .await
                    .map_err(vault_error)?;
                Ok(fresh)
            }
            .await;
            let end = if outcome.is_ok() {
                "COMMIT"
            } else {
                "ROLLBACK"
            };
            sqlx::query(end)
                .execute(&mut *conn)
                .await
                .map_err(vault_error)?;
            outcome
        })
    }
}

const WRITE_TOKENS: &str =
    "INSERT INTO oauth_connections (name, tokens, updated_at) VALUES (?, ?, ?)
     ON CONFLICT (name) DO UPDATE SET tokens = excluded.tokens, updated_at = excluded.updated_at";

fn vault_error(e: impl std::fmt::Display) -> rollcall_core::oauth::VaultError {
    rollcall_core::oauth::VaultError::Store(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `test` on both backends: an SQLite file, then a database of its own on the test
    /// PostgreSQL server (skipped with a message when there is none, failed under
    /// `ROLLCALL_REQUIRE_SERVERS=1`).
    async fn on_both<F, Fut>(name: &str, test: F)
    where
        F: Fn(PathBuf) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let dir = tempfile::tempdir().expect("tempdir");
        test(dir.path().join("s.db")).await;
        if let Some(db) = rollcall_harness::PgDatabase::create(name) {
            test(PathBuf::from(db.url())).await;
        }
    }

    #[tokio::test]
    async fn a_cursor_is_kept_per_client_and_only_for_the_same_directory() {
        on_both("store cursors", cursors).await;
    }

    async fn cursors(at: PathBuf) {
        let store = Store::open(&at).await.expect("open");
        let cursor = Cursor(serde_json::json!({"deltaLink": "https://x/delta?token=1"}));
        assert_eq!(
            store.cursor("p", "acme", "graph t1").await.expect("read"),
            None
        );
        store
            .save_cursor("p", "acme", "graph t1", &cursor)
            .await
            .expect("save");
        assert_eq!(
            store.cursor("p", "acme", "graph t1").await.expect("read"),
            Some(cursor.clone())
        );
        assert_eq!(
            store.cursor("p", "acme", "graph t2").await.expect("read"),
            None,
            "another directory"
        );
        assert_eq!(
            store.cursor("p", "globex", "graph t1").await.expect("read"),
            None,
            "another client"
        );
        let newer = Cursor(serde_json::json!({"deltaLink": "https://x/delta?token=2"}));
        store
            .save_cursor("p", "acme", "graph t1", &newer)
            .await
            .expect("save");
        assert_eq!(
            store.cursor("p", "acme", "graph t1").await.expect("read"),
            Some(newer)
        );
        // Reopening runs no migration twice.
        store.db().close().await;
        Store::open(&at).await.expect("reopen").db().close().await;
    }

    #[tokio::test]
    async fn the_ledger_records_the_plans_moment_and_a_late_old_plan_never_runs_it_backwards() {
        on_both("store ledger", ledger).await;
    }

    async fn ledger(location: PathBuf) {
        let store = Store::open(&location).await.expect("open");
        let at = |t: &str| {
            DateTime::parse_from_rfc3339(t)
                .expect("moment")
                .with_timezone(&Utc)
        };
        let evidence = std::collections::BTreeMap::new();
        let record = |t: &'static str, ids: &'static [&'static str]| {
            let (store, evidence) = (store.clone(), &evidence);
            async move {
                let seats = [LedgerSeats {
                    product: "m365",
                    rule: "true",
                    people: ids
                        .iter()
                        .map(|id| LedgerHolder {
                            person_id: id,
                            name: id,
                            evidence,
                            contact: None,
                            by_grace: false,
                        })
                        .collect(),
                }];
                store
                    .record_seats("p", "acme", "run", at(t), &seats)
                    .await
                    .expect("record")
            }
        };
        record("2026-11-03T09:00:00Z", &["ada"]).await;
        record("2026-11-17T09:00:00Z", &["ada", "grace"]).await;
        let spans = || async {
            let history = store
                .seat_history("p", "acme", None, None)
                .await
                .expect("history");
            let mut spans: Vec<(String, String, String, Option<String>)> = history
                .into_iter()
                .map(|s| (s.person_id, s.since, s.last_seen, s.until))
                .collect();
            spans.sort();
            spans
        };
        let (third, seventeenth) = (
            "2026-11-03T09:00:00.000000Z".to_owned(),
            "2026-11-17T09:00:00.000000Z".to_owned(),
        );
        // A plan made on the 10th, applied after the 17th's: grace's span ends no earlier
        // than it began, and ada's last sighting stays the 17th.
        record("2026-11-10T09:00:00Z", &["ada"]).await;
        assert_eq!(
            spans().await,
            [
                ("ada".into(), third.clone(), seventeenth.clone(), None),
                (
                    "grace".into(),
                    seventeenth.clone(),
                    seventeenth.clone(),
                    Some(seventeenth.clone())
                ),
            ]
        );
        // The 17th's plan applied once more: grace's span is reopened, not written twice.
        record("2026-11-17T09:00:00Z", &["ada", "grace"]).await;
        assert_eq!(
            spans().await,
            [
                ("ada".into(), third.clone(), seventeenth.clone(), None),
                ("grace".into(), seventeenth.clone(), seventeenth, None),
            ]
        );
    }

    #[tokio::test]
    async fn two_stores_on_one_file_refresh_a_connection_once() {
        on_both("store token rotation", rotation).await;
    }

    async fn rotation(path: PathBuf) {
        use rollcall_core::oauth::{TokenSet, TokenVault};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU32, Ordering};
        let a = Store::open(&path).await.expect("open");
        let b = Store::open(&path).await.expect("open again");
        let first = TokenSet {
            access_token: "a0".into(),
            refresh_token: "r0".into(),
            expires_at: Utc::now(),
            scope: None,
            tenant: Some("realm".into()),
        };
        a.save("books", &first).await.expect("save");
        let calls = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for store in [a.clone(), b.clone(), a.clone(), b.clone()] {
            let calls = calls.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .rotate(
                        "books",
                        "a0",
                        Box::new(move |old| {
                            Box::pin(async move {
                                calls.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                                Ok(TokenSet {
                                    access_token: "a1".into(),
                                    refresh_token: "r1".into(),
                                    ..old
                                })
                            })
                        }),
                    )
                    .await
            }));
        }
        for t in tasks {
            let tokens = t.await.expect("join").expect("rotate");
            assert_eq!(tokens.refresh_token, "r1");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one refresh for all");
        let reopened = Store::open(&path).await.expect("reopen");
        let kept = reopened.load("books").await.expect("load").expect("stored");
        assert_eq!(
            kept.refresh_token, "r1",
            "the rotated token survives a restart"
        );
        assert_eq!(kept.tenant.as_deref(), Some("realm"));
    }

    #[tokio::test]
    async fn a_postgres_store_from_a_newer_rollcall_or_another_program_is_refused() {
        let Some(db) = rollcall_harness::PgDatabase::create("store refusals on postgres") else {
            return;
        };
        let url = PathBuf::from(db.url());
        let store = Store::open(&url).await.expect("new store");
        let Db::Postgres(pool) = store.db() else {
            panic!("a postgres url opens postgres")
        };
        sqlx::query("UPDATE rollcall_schema SET version = 999")
            .execute(pool)
            .await
            .expect("bump");
        let e = Store::open(&url).await.expect_err("newer");
        assert!(e.to_string().contains("newer rollcall"), "{e}");
        sqlx::raw_sql("DROP TABLE rollcall_schema")
            .execute(pool)
            .await
            .expect("drop");
        let e = Store::open(&url).await.expect_err("foreign");
        assert!(e.to_string().contains("not a rollcall store"), "{e}");
        store.db().close().await;
    }
}
