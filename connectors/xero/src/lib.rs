//! Xero as a billing system.
//!
//! Like QuickBooks, Xero bills by invoice: each client is a Xero `Contact` (found by id, email
//! or name, created when missing) and has one `ACCREC` invoice per billing period, found again
//! by its `Reference` and kept up to date while it is a `DRAFT`. Xero's limits are tight (60
//! calls a minute per organisation), so a run reads every client's contact and invoice in a few
//! pages first ([`rollcall_core::BillingSystem::prepare`]). `client.rs` is the API client,
//! `sandbox.rs` (feature `sandbox`) a stateful stand-in for the Accounting API and Xero's
//! identity server, `model.rs` the wire shapes.

mod client;
mod config;
mod model;
#[cfg(test)]
mod recorded_tests;
#[cfg(feature = "sandbox")]
pub mod sandbox;
#[cfg(feature = "sandbox")]
mod standalone;
pub mod webhook;

pub use client::Xero;
pub use config::Config;
#[cfg(feature = "sandbox")]
pub use sandbox::{Sandbox, Seed, run_standalone};
