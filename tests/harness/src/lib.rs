//! Real directory servers for rollcall's tests, started on loopback and stopped by the test.
//!
//! rollcall's LDAP connector is only as good as the servers it was tried against, so its tests
//! run against real ones rather than mocks (STYLE.md, "Real servers"): OpenLDAP's `slapd` with an
//! AD-like schema for volume and breadth, and Samba's AD domain controller as the real-AD
//! conformance target (in-chain rule, ranged retrieval, binary GUIDs, AD's bind diagnostics).
//!
//! - [`Slapd`] and [`SambaDc`] each own a temp directory and a process; a server is handed over
//!   only once a real bind answers, and `Drop` kills it by PID and removes its directory.
//! - [`data::generate`] writes the directory both servers load, with the facts a test asserts.
//! - [`TestCa`] issues the certificates for ldaps and StartTLS.
//! - [`RedisServer`] is an empty `redis-server` for the job queue's many-worker tests.
//! - [`PgDatabase`] is a database of its own on the shared PostgreSQL server, dropped after.
//! - [`ChromeDriver`] drives Debian's headless Chromium for the console's browser tests.
//! - [`servers_available`] is cargo's `requires`: a missing server binary skips the test with
//!   the reason printed, unless `ROLLCALL_REQUIRE_SERVERS=1` (CI), where it fails.

mod chromedriver;
pub mod data;
pub mod fleet;
mod postgres;
mod process;
mod redis;
mod samba;
mod slapd;
mod tls;

pub use chromedriver::ChromeDriver;
pub use postgres::PgDatabase;
pub use process::{require_servers, servers_available};
pub use redis::RedisServer;
pub use samba::SambaDc;

/// The Samba DC's administrator account and password (UPN form), for tools outside the tests.
pub fn samba_admin() -> (&'static str, &'static str) {
    (samba::ADMIN_UPN, samba::ADMIN_PASSWORD)
}
pub use slapd::Slapd;
pub use tls::TestCa;
