//! QuickBooks Online as a billing system.
//!
//! Small MSPs bill from their books, not a PSA: there is no agreement to adjust, so rollcall
//! keeps each client's invoice for the billing period — a `Customer` found by id, email or
//! name (created when missing) and one `Invoice` per period, found again by its reference and
//! updated in place while it is a draft. `client.rs` implements [`rollcall_core::BillingSystem`]
//! over the Accounting API v3; `sandbox.rs` (feature `sandbox`) is a stateful stand-in for that
//! API and Intuit's OAuth2 server, for tests and demos; `model.rs` holds the wire shapes.

mod client;
mod config;
mod model;
#[cfg(test)]
mod recorded_tests;
#[cfg(feature = "sandbox")]
pub mod sandbox;
#[cfg(feature = "sandbox")]
mod standalone;

pub use client::{QuickBooks, doc_number};
pub use config::Config;
#[cfg(feature = "sandbox")]
pub use sandbox::{Sandbox, Seed, run_standalone};
