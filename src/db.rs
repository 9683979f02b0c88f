//! The database under the store: one embedded SQLite file (the default, nothing to install), or
//! a PostgreSQL server that workers on many machines share.
//!
//! Statements are written once, with SQLite's `?` / `?N` placeholders, and [`Db::sql`] gives
//! PostgreSQL its `$N` form; where the dialects differ in more than placeholders (`max` against
//! `GREATEST`, how a transaction takes its lock, JSON read back from text) each backend has its
//! own statement beside the other's. Values cross as text and integers only — amounts stay
//! decimal text, never floats — so a store copied from one backend to the other reads the same.
//! [`on_db!`] runs one body against whichever pool is there: the body is compiled once per
//! backend, so a bind or a column type one of them does not support fails the build, not a run.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;

/// Where the store is: an SQLite file, or a PostgreSQL server.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Which kind of database a store is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs `$body` with `$pool` bound to the store's pool, whichever backend it is.
#[macro_export]
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($pool) => $body,
            $crate::db::Db::Postgres($pool) => $body,
        }
    };
}

impl Db {
    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// `sql` (written with `?` / `?N` placeholders) as this backend reads it.
    pub fn sql(&self, sql: &str) -> &'static str {
        match self {
            Db::Sqlite(_) => interned(sql, |s| s.to_owned()),
            Db::Postgres(_) => interned(sql, numbered),
        }
    }

    /// The statement for this backend, when the dialects differ in more than placeholders.
    pub fn pick(&self, sqlite: &'static str, postgres: &'static str) -> &'static str {
        match self {
            Db::Sqlite(_) => sqlite,
            Db::Postgres(_) => self.sql(postgres),
        }
    }

    pub async fn close(&self) {
        on_db!(self, p => p.close().await)
    }
}

/// Whether a store location names a PostgreSQL server rather than an SQLite file.
pub fn is_postgres(location: &Path) -> bool {
    let s = location.to_string_lossy();
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// A store location as it may be shown: a PostgreSQL URL without its password.
pub fn display(location: &Path) -> String {
    let s = location.to_string_lossy();
    if !is_postgres(location) {
        return location.display().to_string();
    }
    redact(&s)
}

/// `url` with the password in its user info replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some(scheme) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) if rest[..at].contains(':') => {
            let user = rest[..at].split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &rest[at..])
        }
        _ => url.to_owned(),
    }
}

/// Statements are few and fixed (literals, or built from constant column lists), so each
/// translation is kept for the life of the process and handed out as `'static`.
fn interned(sql: &str, translate: fn(&str) -> String) -> &'static str {
    static CACHE: OnceLock<Mutex<HashMap<(String, usize), &'static str>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (sql.to_owned(), translate as usize);
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = map.get(&key) {
        return s;
    }
    let out: &'static str = Box::leak(translate(sql).into_boxed_str());
    map.insert(key, out);
    out
}

/// `?` → `$1, $2, …` in order and `?N` → `$N`, outside quoted text.
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut next = 0;
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
            out.push(c);
        } else if c == '?' && !quoted {
            let mut digits = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                digits.push(*d);
                chars.next();
            }
            if digits.is_empty() {
                next += 1;
                digits = next.to_string();
            }
            out.push('$');
            out.push_str(&digits);
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
pub mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_outside_quotes() {
        assert_eq!(
            numbered("SELECT a FROM t WHERE b = ? AND c LIKE '%?%' AND d = ?"),
            "SELECT a FROM t WHERE b = $1 AND c LIKE '%?%' AND d = $2"
        );
        assert_eq!(
            numbered("WHERE (?1 IS NULL OR x = ?1) LIMIT ?2"),
            "WHERE ($1 IS NULL OR x = $1) LIMIT $2"
        );
    }

    #[test]
    fn a_password_is_never_shown() {
        assert_eq!(
            redact("postgres://rollcall:s3cret@db:5432/rollcall"),
            "postgres://rollcall:***@db:5432/rollcall"
        );
        assert_eq!(redact("postgres://root@db/x"), "postgres://root@db/x");
        assert!(is_postgres(Path::new("postgresql://h/db")));
        assert!(!is_postgres(Path::new(".rollcall/state.db")));
    }
}
