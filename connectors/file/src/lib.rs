//! A client's people read from an export file, for directories rollcall cannot reach.
//!
//! Many of an MSP's clients run an Active Directory with no route in from outside, or keep their
//! staff in a spreadsheet. What they can do is export: `Get-ADUser | Export-Csv`, `csvde`,
//! `ldifde`, `ldapsearch`, the Entra admin centre's "download users". This crate turns such a
//! file into [`Person`](rollcall_core::Person)s, so billing by user works the same for them as
//! for a directory read live.
//!
//! Its main concern is the product's key safety rule: a file that could not be read must never
//! look like a client with fewer people. A malformed row, a duplicate id, an empty file, an
//! `ldapsearch` that stopped at a size limit: each makes the read
//! [`Incomplete`](rollcall_core::Completeness::Incomplete), with warnings naming `file:line`, so
//! the planner may add seats but never remove them. A file that cannot be opened, or a CSV without
//! an id column, is an error.
//!
//! - [`Config`] is the pipeline's `directory:` section; it builds a [`FileDirectory`].
//! - [`parse_csv`] and [`parse_ldif`] are the pure readers, usable without a runtime or a file.
//!
//! AD's value formats (objectGUID, userAccountControl, accountExpires) are decoded by
//! [`rollcall_core::ad`], shared with live LDAP reads.
//!
//! ```
//! use rollcall_core::Completeness;
//!
//! let csv = "ObjectGUID,SamAccountName,DisplayName,Enabled,MemberOf\n\
//!            35918bc9-196d-40ea-9779-889d79b753f0,ann,Ann Lee,True,\"CN=Billable Users,OU=Groups,DC=acme,DC=local\"\n";
//! let read = rollcall_file::parse_csv(csv.as_bytes(), "acme.csv", chrono::Utc::now())?;
//! assert_eq!(read.completeness, Completeness::Complete);
//! assert_eq!(read.people[0].username, "ann");
//! assert_eq!(read.people[0].groups, vec!["Billable Users"]);
//! # Ok::<(), rollcall_core::DirectoryError>(())
//! ```

mod client;
mod config;
mod csv_export;
mod error;
mod groups;
mod ldif;
mod model;
mod read;

pub use client::FileDirectory;
pub use config::{Config, Format};
pub use csv_export::parse_csv;
pub use ldif::parse_ldif;
