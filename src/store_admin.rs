//! `rollcall store copy` and `rollcall store check`: moving a store from its SQLite file to
//! PostgreSQL, and saying whether a store is one this rollcall can use.
//!
//! A copy is all or nothing: every table is written in one PostgreSQL transaction, then both
//! sides are counted again and must agree, so a copy that stopped half way leaves an empty
//! target, never a store that forgot part of what rollcall made (which would make it leave those
//! billing objects alone). A target that already holds rows is refused unless `--force`: two
//! stores' histories mixed would be worse than either. Client leases are not copied: they last
//! seconds and name processes of the old deployment.
//!
//! `check` reads and never writes: it opens SQLite read-only, and only counts on PostgreSQL.

use std::collections::BTreeMap;
use std::path::Path;

use sqlx::{Column as _, Row as _};

use crate::store::{SCHEMA_VERSION, Store, StoreError, TABLES};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The command cannot do what was asked as things are; the message says what to do.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("store: {0}")]
    Query(#[from] sqlx::Error),
}

/// Rows per table, in [`TABLES`] order.
pub type Counts = Vec<(&'static str, i64)>;

/// Copies every table of the SQLite store at `from` into the PostgreSQL store at `to` (made
/// and migrated if new), then checks both hold the same number of rows per table.
pub async fn copy(from: &Path, to: &Path, force: bool) -> Result<Counts, AdminError> {
    if crate::db::is_postgres(from) {
        return Err(AdminError::Refused(
            "--from must be an SQLite store file; the copy goes from SQLite to PostgreSQL \
             (hint: to move a PostgreSQL store, use pg_dump and pg_restore)"
                .into(),
        ));
    }
    if !crate::db::is_postgres(to) {
        return Err(AdminError::Refused(format!(
            "--to must be a PostgreSQL URL (postgres://user@host/db), not {} (hint: to copy an \
             SQLite store to another file, use sqlite3's `.backup`)",
            to.display()
        )));
    }
    if !from.is_file() {
        return Err(AdminError::Refused(format!(
            "there is no store at {} (hint: --from is the SQLite file rollcall used, by default \
             .rollcall/state.db)",
            from.display()
        )));
    }
    // Opening brings the source to this rollcall's schema, so both sides have the same columns.
    let source = Store::open(from).await?;
    let target = Store::open(to).await?;
    let (crate::db::Db::Sqlite(src), crate::db::Db::Postgres(dst)) = (source.db(), target.db())
    else {
        unreachable!("checked above: SQLite to PostgreSQL");
    };
    let before = pg_counts(dst).await?;
    let held: i64 = before.iter().map(|(_, n)| n).sum();
    if held > 0 && !force {
        return Err(AdminError::Refused(format!(
            "{} already holds {held} row(s) ({}): copying into it would mix two stores' \
             histories (hint: copy into a new, empty database — `createdb rollcall` — or pass \
             --force to replace everything it holds)",
            target.location(),
            describe(&before)
        )));
    }
    let present = sqlite_tables(src).await?;
    let mut tx = dst.begin().await?;
    for table in TABLES.iter().rev() {
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
            .execute(&mut *tx)
            .await?;
    }
    for &table in TABLES {
        if !present.contains_key(table) {
            continue;
        }
        let columns = pg_columns(&mut tx, table).await?;
        let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
        let select = format!("SELECT {} FROM {table}", names.join(", "));
        let marks: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
        let insert = format!(
            "INSERT INTO {table} ({}) VALUES ({})",
            names.join(", "),
            marks.join(", ")
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(select))
            .fetch_all(src)
            .await?;
        for row in rows {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(insert.clone()));
            for (i, (name, kind)) in columns.iter().enumerate() {
                q = match kind.as_str() {
                    "bigint" | "integer" => q.bind(row.try_get::<Option<i64>, _>(i)?),
                    "boolean" => q.bind(row.try_get::<Option<bool>, _>(i)?),
                    "text" => q.bind(row.try_get::<Option<String>, _>(i)?),
                    other => {
                        return Err(AdminError::Refused(format!(
                            "{table}.{name} has type {other}, which the copy does not know"
                        )));
                    }
                };
            }
            q.execute(&mut *tx).await?;
        }
    }
    tx.commit().await?;
    let copied = pg_counts(dst).await?;
    let mut expected = Vec::new();
    for &table in TABLES {
        let n = if present.contains_key(table) {
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(src)
                .await?
        } else {
            0
        };
        expected.push((table, n));
    }
    if copied != expected {
        return Err(AdminError::Refused(format!(
            "the copy does not match its source: {} in {}, {} in {} (hint: run it again with \
             --force; if it still differs, keep using the SQLite store and report this)",
            describe(&expected),
            from.display(),
            describe(&copied),
            target.location()
        )));
    }
    source.db().close().await;
    target.db().close().await;
    Ok(copied)
}

fn describe(counts: &Counts) -> String {
    counts
        .iter()
        .map(|(t, n)| format!("{t} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn pg_counts(pool: &sqlx::PgPool) -> Result<Counts, sqlx::Error> {
    let mut out = Vec::new();
    for &table in TABLES {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(pool)
                .await?;
        out.push((table, n));
    }
    Ok(out)
}

/// A table's columns on PostgreSQL with their types, in table order.
async fn pg_columns(
    conn: &mut sqlx::PgConnection,
    table: &str,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(conn)
    .await
}

/// The tables of an SQLite store, with their columns.
async fn sqlite_tables(
    pool: &sqlx::SqlitePool,
) -> Result<BTreeMap<String, Vec<String>>, sqlx::Error> {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(pool)
            .await?;
    let mut out = BTreeMap::new();
    for name in names {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM \"{name}\" LIMIT 0"
        )))
        .fetch_optional(pool)
        .await?;
        let columns = row
            .map(|r| r.columns().iter().map(|c| c.name().to_owned()).collect())
            .unwrap_or_default();
        out.insert(name, columns);
    }
    Ok(out)
}

/// What `rollcall store check` found.
#[derive(Debug, Clone)]
pub struct Checked {
    /// `SQLite` or `PostgreSQL`.
    pub backend: &'static str,
    pub location: String,
    /// The schema version the store records (`None`: none recorded).
    pub version: Option<i64>,
    /// Rows per table, where the table is there.
    pub counts: Counts,
    /// What is wrong, each with what to do; empty when the store is usable.
    pub problems: Vec<String>,
}

/// Checks the store at `location` without changing it: its schema version against this
/// rollcall's, that every table is there, and on SQLite the file's own integrity check.
pub async fn check(location: &Path) -> Result<Checked, AdminError> {
    let known = i64::try_from(SCHEMA_VERSION).unwrap_or(i64::MAX);
    let mut problems = Vec::new();
    let mut counts = Vec::new();
    let (backend, version) = if crate::db::is_postgres(location) {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&location.to_string_lossy())
            .await
            .map_err(|e| {
                AdminError::Refused(format!(
                    "cannot connect to {}: {e} (hint: is the server up, does the database \
                     exist, may this user connect?)",
                    crate::db::display(location)
                ))
            })?;
        let mut conn = pool.acquire().await?;
        let version = crate::store::postgres_version(&mut conn).await?;
        let present: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = current_schema()",
        )
        .fetch_all(&mut *conn)
        .await?;
        for &table in TABLES.iter().chain(&["rollcall_client_locks"]) {
            if present.iter().any(|t| t == table) {
                if table != "rollcall_client_locks" {
                    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                        "SELECT count(*) FROM {table}"
                    )))
                    .fetch_one(&mut *conn)
                    .await?;
                    counts.push((table, n));
                }
            } else if version.is_some() {
                problems.push(format!(
                    "table {table} is missing (hint: restore the database from a backup \
                     (pg_restore), or copy the store again with `rollcall store copy --force`)"
                ));
            }
        }
        drop(conn);
        pool.close().await;
        ("PostgreSQL", version)
    } else {
        if !location.is_file() {
            return Err(AdminError::Refused(format!(
                "there is no store at {} (hint: --store / ROLLCALL_STORE names it; rollcall \
                 makes it on its first run)",
                location.display()
            )));
        }
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(location)
            .read_only(true);
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|e| {
                AdminError::Refused(format!(
                    "cannot open {}: {e} (hint: is it rollcall's store file?)",
                    location.display()
                ))
            })?;
        let integrity: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_all(&pool)
            .await
            .unwrap_or_else(|e| vec![e.to_string()]);
        if integrity != ["ok"] {
            problems.push(format!(
                "the file is damaged: {} (hint: stop rollcall and restore the store from a backup \
                 made with sqlite3 `.backup`)",
                integrity.join("; ")
            ));
        }
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&pool)
            .await
            .unwrap_or(0);
        let tables = sqlite_tables(&pool).await.unwrap_or_default();
        for &table in TABLES {
            if tables.contains_key(table) {
                let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT count(*) FROM {table}"
                )))
                .fetch_one(&pool)
                .await?;
                counts.push((table, n));
            } else if table != "approvals" && version > 0 {
                // Approvals are made on first use; every other table by the migrations.
                problems.push(format!(
                    "table {table} is missing (hint: restore the store from a backup)"
                ));
            }
        }
        pool.close().await;
        ("SQLite", (version > 0).then_some(version))
    };
    match version {
        None => problems.push(
            "no rollcall schema version is recorded: this is not a rollcall store, or one never \
             used (hint: point --store at rollcall's store; any rollcall command makes a new one)"
                .into(),
        ),
        Some(v) if v > known => problems.push(format!(
            "schema version {v} was written by a newer rollcall (this one knows up to {known}) \
             (hint: run the newer rollcall, or restore a backup this version made)"
        )),
        Some(v) if v < known => problems.push(format!(
            "schema version {v} is older than this rollcall's {known} (hint: any rollcall \
             command that opens the store, e.g. `rollcall history`, brings it up to date)"
        )),
        Some(_) => {}
    }
    Ok(Checked {
        backend,
        location: crate::db::display(location),
        version,
        counts,
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn check_passes_a_good_sqlite_store_and_names_what_is_wrong_with_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        let store = Store::open(&path).await.expect("store");
        store.begin_run("r1", "p", "run").await.expect("run");
        let good = check(&path).await.expect("check");
        assert!(good.problems.is_empty(), "{:?}", good.problems);
        assert_eq!(good.version, i64::try_from(SCHEMA_VERSION).ok());
        assert!(good.counts.contains(&("runs", 1)), "{:?}", good.counts);
        let crate::db::Db::Sqlite(pool) = store.db() else {
            panic!("a path opens SQLite")
        };
        sqlx::raw_sql("PRAGMA user_version = 999")
            .execute(pool)
            .await
            .expect("bump");
        let newer = check(&path).await.expect("check");
        assert!(
            newer.problems.iter().any(|p| p.contains("newer rollcall")),
            "{:?}",
            newer.problems
        );
        store.db().close().await;
        let missing = check(&dir.path().join("nothing.db")).await;
        assert!(
            matches!(&missing, Err(AdminError::Refused(m)) if m.contains("no store at")),
            "{missing:?}"
        );
        assert!(
            !dir.path().join("nothing.db").exists(),
            "check makes no store"
        );
    }

    #[tokio::test]
    async fn copy_refuses_the_wrong_way_round_and_a_missing_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("state.db");
        let pg = Path::new("postgres://nobody@127.0.0.1:1/none");
        let e = copy(pg, &file, false).await.expect_err("pg as source");
        assert!(e.to_string().contains("--from must be an SQLite"), "{e}");
        let e = copy(&file, &dir.path().join("b.db"), false)
            .await
            .expect_err("sqlite as target");
        assert!(
            e.to_string().contains("--to must be a PostgreSQL URL"),
            "{e}"
        );
        let e = copy(&file, pg, false).await.expect_err("no source");
        assert!(e.to_string().contains("there is no store at"), "{e}");
        assert!(!file.exists(), "a missing source is not made");
    }
}
