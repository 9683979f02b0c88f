//! rollcall's LDAP read against real servers: slapd for volume and breadth, Samba's AD DC for
//! real-AD behaviour. The same cases run against both wherever the servers should agree.
//!
//! One binary, and one server of each kind shared by its tests (started on first use, killed
//! when the binary exits); a test that changes data or kills its server starts its own.

mod common;
mod samba;
mod silent;
mod slapd;
