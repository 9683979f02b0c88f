//! A database of its own on the PostgreSQL server the tests share (127.0.0.1:5432, trust auth).
//!
//! Unlike Redis, PostgreSQL is not started per test: one server runs beside the suite, and each
//! test creates a uniquely named database (`rollcall_test_<pid>_<n>`) and drops it when done,
//! so tests running at once never see each other's rows. `psql` does the creating and dropping,
//! so the harness needs no database driver of its own.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::process::require_servers;

/// A database made for one test; dropped (with any connections still open) on `Drop`.
pub struct PgDatabase {
    name: String,
    user: String,
    host: String,
    port: u16,
}

impl std::fmt::Debug for PgDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDatabase")
            .field("name", &self.name)
            .finish()
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn psql(host: &str, port: u16, user: &str, sql: &str) -> Result<(), String> {
    let out = Command::new("psql")
        .args([
            "-h",
            host,
            "-p",
            &port.to_string(),
            "-U",
            user,
            "-d",
            "postgres",
        ])
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

impl PgDatabase {
    /// A new empty database; `None` (with the reason printed) when no PostgreSQL answers, or a
    /// panic under `ROLLCALL_REQUIRE_SERVERS=1`: a skipped server test in CI cannot fail.
    /// `ROLLCALL_TEST_PG` (`host:port`) points at another server than 127.0.0.1:5432.
    pub fn create(test: &str) -> Option<PgDatabase> {
        let server = std::env::var("ROLLCALL_TEST_PG").unwrap_or_else(|_| "127.0.0.1:5432".into());
        let (host, port) = server.rsplit_once(':').unwrap_or((server.as_str(), "5432"));
        let port: u16 = port.parse().unwrap_or(5432);
        let name = format!(
            "rollcall_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let mut errors = Vec::new();
        for user in ["postgres", "root"] {
            match psql(host, port, user, &format!("CREATE DATABASE {name}")) {
                Ok(()) => {
                    return Some(PgDatabase {
                        name,
                        user: user.to_owned(),
                        host: host.to_owned(),
                        port,
                    });
                }
                Err(e) => errors.push(format!("as {user}: {e}")),
            }
        }
        let why = format!(
            "{test}: skipped: no PostgreSQL at {host}:{port} that user postgres or root may \
             create a database on ({}) (hint: apt-get install postgresql, trust auth on loopback)",
            errors.join("; ")
        );
        if require_servers() {
            panic!("{why}; ROLLCALL_REQUIRE_SERVERS=1 makes this a failure");
        }
        eprintln!("{why}");
        None
    }

    /// The store URL rollcall is given.
    pub fn url(&self) -> String {
        format!(
            "postgres://{}@{}:{}/{}",
            self.user, self.host, self.port, self.name
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = psql(&self.host, self.port, &self.user, &sql) {
            eprintln!("cannot drop the test database {}: {e}", self.name);
        }
    }
}
