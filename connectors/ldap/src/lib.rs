//! A client's people read live from their Active Directory over LDAP.
//!
//! Most of an MSP's clients keep their staff in an on-premises AD, and the domain controller is
//! the one record of who works there today. Reading it directly, on every run, is what makes
//! billing follow joiners and leavers without anyone exporting a file. This crate is that read,
//! done the way an ops engineer would point a tool at a real DC: TLS with the domain's own CA,
//! a read-only service account, paged searches, AD's value formats and nested groups.
//!
//! Its main concern is the product's key safety rule: a read that was cut short — a connection
//! dropped mid-paging, a size or time limit, a referral elsewhere — must never look like a client
//! with fewer people. Such a read returns what it saw, marked
//! [`Incomplete`](rollcall_core::Completeness::Incomplete), so the planner may add seats but never
//! remove them. Failures that leave nothing to read (unreachable, TLS, credentials, a wrong base
//! DN) are distinct [`LdapError`]s saying what to fix.
//!
//! - [`Config`] is the pipeline's `directory: { ldap: … }` section; it builds an [`LdapDirectory`].
//! - [`LdapDirectory::read_each`] streams people page by page, for callers that need not hold
//!   the whole directory; [`Directory::read`](rollcall_core::Directory::read) collects them.
//! - Inside, ldap3 opens and binds the first connection (its errors are the ones worded here)
//!   and does the small operations; the paged searches, where nearly all the bytes are, run on
//!   a connection of this crate's own (`wire`), whose answers are decoded in place (`ber`), so
//!   the read keeps up with `ldapsearch` on the same server (BENCHMARKS.md).

#[doc(hidden)]
pub mod bench;
mod ber;
mod client;
mod config;
mod error;
mod model;
mod tls;
mod wire;

pub use client::{LdapDirectory, ReadSummary};
pub use config::{Config, DEFAULT_FILTER, NestedGroups, Scope};
pub use error::{AdBindCode, LdapError};
