//! Every statement approvals make, in one place and in plain SQL, on the store's database
//! (SQLite or PostgreSQL: the statements are the same but for placeholders, [`Db::sql`]).
//!
//! On SQLite the table is created here (`CREATE TABLE IF NOT EXISTS`, like the lease table)
//! rather than in the store's numbered migrations, so approvals stay a module of their own; a
//! PostgreSQL store is made with it by its first migration (`store::PG_MIGRATIONS`). Times are RFC 3339 text in UTC with whole seconds
//! (`2026-12-07T05:20:53Z`), which sort as they compare; money is decimal text.

use crate::db::Db;
use crate::on_db;

use super::{Approval, ApprovalState};

const TABLE: &str = "CREATE TABLE IF NOT EXISTS approvals (
    id            TEXT PRIMARY KEY,
    pipeline      TEXT NOT NULL,
    pipeline_file TEXT NOT NULL,
    client        TEXT NOT NULL,
    state         TEXT NOT NULL,
    reason        TEXT NOT NULL,
    trigger       TEXT NOT NULL,
    plan          TEXT NOT NULL,
    fingerprint   TEXT,
    seats_before  INTEGER NOT NULL,
    seats_after   INTEGER NOT NULL,
    currency      TEXT NOT NULL,
    amount_before TEXT NOT NULL,
    amount_after  TEXT NOT NULL,
    refused_run   TEXT,
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    effective     TEXT,
    decided_at    TEXT,
    decided_by    TEXT,
    note          TEXT,
    applied_run   TEXT,
    superseded_by TEXT
)";

const INDEX: &str =
    "CREATE INDEX IF NOT EXISTS approvals_by_client ON approvals (pipeline, client, state)";

/// A constant list, so the statements built from it are as safe as literals.
const COLUMNS: &str = "id, pipeline, pipeline_file, client, state, reason, trigger, fingerprint, \
    seats_before, seats_after, currency, amount_before, amount_after, refused_run, created_at, \
    expires_at, effective, decided_at, decided_by, note, applied_run, superseded_by";

pub async fn create(db: &Db) -> Result<(), sqlx::Error> {
    if let Db::Sqlite(pool) = db {
        sqlx::query(TABLE).execute(pool).await?;
        sqlx::query(INDEX).execute(pool).await?;
    }
    Ok(())
}

/// A row as stored: the approval's fields as text and numbers.
#[derive(sqlx::FromRow)]
pub struct Row {
    pub id: String,
    pub pipeline: String,
    pub pipeline_file: String,
    pub client: String,
    pub state: String,
    pub reason: String,
    pub trigger: String,
    pub fingerprint: Option<String>,
    pub seats_before: i64,
    pub seats_after: i64,
    pub currency: String,
    pub amount_before: String,
    pub amount_after: String,
    pub refused_run: Option<String>,
    pub created_at: String,
    pub expires_at: String,
    pub effective: Option<String>,
    pub decided_at: Option<String>,
    pub decided_by: Option<String>,
    pub note: Option<String>,
    pub applied_run: Option<String>,
    pub superseded_by: Option<String>,
}

/// Pending approvals whose time has passed become expired; the ids that did.
pub async fn expire(pool: &Db, now: &str) -> Result<Vec<String>, sqlx::Error> {
    on_db!(pool, p => sqlx::query_scalar(pool.sql("UPDATE approvals SET state = 'expired', decided_at = ? \
         WHERE state = 'pending' AND expires_at <= ? RETURNING id"))
    .bind(now)
    .bind(now)
    .fetch_all(p)
    .await)
}

pub async fn list(
    pool: &Db,
    state: Option<ApprovalState>,
    limit: u32,
) -> Result<Vec<Row>, sqlx::Error> {
    on_db!(pool, p => sqlx::query_as(pool.sql(&format!(
        "SELECT {COLUMNS} FROM approvals WHERE (CAST(?1 AS TEXT) IS NULL OR state = ?1) \
         ORDER BY created_at DESC, id DESC LIMIT ?2"
    )))
    .bind(state.map(ApprovalState::as_str))
    .bind(i64::from(limit))
    .fetch_all(p)
    .await)
}

/// The approvals whose id is `id` or starts with it (people type the first characters).
pub async fn find(pool: &Db, id: &str) -> Result<Vec<Row>, sqlx::Error> {
    on_db!(pool, p => sqlx::query_as(pool.sql(&format!(
        "SELECT {COLUMNS} FROM approvals WHERE id = ?1 OR substr(id, 1, length(?1)) = ?1 LIMIT 2"
    )))
    .bind(id)
    .fetch_all(p)
    .await)
}

pub async fn plan(pool: &Db, id: &str) -> Result<Option<String>, sqlx::Error> {
    on_db!(pool, p => sqlx::query_scalar(pool.sql("SELECT plan FROM approvals WHERE id = ?"))
        .bind(id)
        .fetch_optional(p)
        .await)
}

/// The pending approval of a client, if there is one, with its plan.
pub async fn pending_of(
    pool: &Db,
    pipeline: &str,
    client: &str,
) -> Result<Option<(Row, String)>, sqlx::Error> {
    let row: Option<Row> = on_db!(pool, p => sqlx::query_as(pool.sql(&format!(
        "SELECT {COLUMNS} FROM approvals WHERE pipeline = ? AND client = ? AND state = 'pending' \
         ORDER BY created_at DESC LIMIT 1"
    )))
    .bind(pipeline)
    .bind(client)
    .fetch_optional(p)
    .await)?;
    match row {
        Some(row) => {
            let plan = plan(pool, &row.id).await?.unwrap_or_default();
            Ok(Some((row, plan)))
        }
        None => Ok(None),
    }
}

/// Keeps a new pending approval; in the same transaction, the client's older pending ones are
/// superseded by it. The ids superseded.
pub async fn insert(pool: &Db, a: &Approval, plan: &str) -> Result<Vec<String>, sqlx::Error> {
    let supersede = pool.sql(
        "UPDATE approvals SET state = 'superseded', superseded_by = ?, decided_at = ? \
         WHERE pipeline = ? AND client = ? AND state = 'pending' RETURNING id",
    );
    let add = pool.sql(
        "INSERT INTO approvals (id, pipeline, pipeline_file, client, state, reason, trigger, plan, \
         fingerprint, seats_before, seats_after, currency, amount_before, amount_after, \
         refused_run, created_at, expires_at) \
         VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    );
    on_db!(pool, p => {
        let mut tx = p.begin().await?;
        let superseded: Vec<String> = sqlx::query_scalar(supersede)
            .bind(&a.id)
            .bind(&a.created)
            .bind(&a.pipeline)
            .bind(&a.client)
            .fetch_all(&mut *tx)
            .await?;
        sqlx::query(add)
            .bind(&a.id)
            .bind(&a.pipeline)
            .bind(&a.pipeline_file)
            .bind(&a.client)
            .bind(&a.reason)
            .bind(&a.trigger)
            .bind(plan)
            .bind(&a.fingerprint)
            .bind(i64::try_from(a.seats_before).unwrap_or(i64::MAX))
            .bind(i64::try_from(a.seats_after).unwrap_or(i64::MAX))
            .bind(&a.currency)
            .bind(a.amount_before.to_string())
            .bind(a.amount_after.to_string())
            .bind(&a.refused_run)
            .bind(&a.created)
            .bind(&a.expires)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(superseded)
    })
}

/// Supersedes a client's pending approvals without a successor (its bill was since changed by
/// a run that needed none). The ids superseded.
pub async fn supersede_pending(
    pool: &Db,
    pipeline: &str,
    client: &str,
    now: &str,
    note: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let sql = pool.sql(
        "UPDATE approvals SET state = 'superseded', decided_at = ?, note = ? \
         WHERE pipeline = ? AND client = ? AND state = 'pending' RETURNING id",
    );
    on_db!(pool, p => sqlx::query_scalar(sql)
        .bind(now)
        .bind(note)
        .bind(pipeline)
        .bind(client)
        .fetch_all(p)
        .await)
}

/// A decision on a pending approval.
pub struct Decision<'a> {
    pub id: &'a str,
    pub state: ApprovalState,
    pub at: &'a str,
    pub by: &'a str,
    pub note: Option<&'a str>,
    pub effective: Option<&'a str>,
    pub applied_run: Option<&'a str>,
    pub superseded_by: Option<&'a str>,
}

/// Records a decision; false when the approval was no longer pending (someone else decided
/// first, or it expired): the first decision stands.
pub async fn decide(pool: &Db, d: &Decision<'_>) -> Result<bool, sqlx::Error> {
    let done = on_db!(pool, p => sqlx::query(pool.sql("UPDATE approvals SET state = ?, decided_at = ?, decided_by = ?, note = ?, \
         effective = COALESCE(?, effective), applied_run = ?, superseded_by = ? \
         WHERE id = ? AND state = 'pending'"))
    .bind(d.state.as_str())
    .bind(d.at)
    .bind(d.by)
    .bind(d.note)
    .bind(d.effective)
    .bind(d.applied_run)
    .bind(d.superseded_by)
    .bind(d.id)
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Records that a pending approval is approved to take effect on `day`; it stays pending
/// until then. False when it was no longer pending.
pub async fn schedule(
    pool: &Db,
    id: &str,
    by: &str,
    at: &str,
    day: &str,
) -> Result<bool, sqlx::Error> {
    let done = on_db!(pool, p => sqlx::query(pool.sql("UPDATE approvals SET effective = ?, decided_by = ?, decided_at = ?, \
         note = 'approved to take effect on ' || ? WHERE id = ? AND state = 'pending'"))
    .bind(day)
    .bind(by)
    .bind(at)
    .bind(day)
    .bind(id)
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}
