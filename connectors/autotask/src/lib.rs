//! Autotask PSA (Datto / Kaseya) as a rollcall billing system.
//!
//! MSPs that run Autotask bill per-user services as *units* of a *service* on a client's
//! *recurring service contract*, and keep the client's people as *contacts* of its *company*.
//! Units are never written directly: Autotask changes them through a contract service
//! *adjustment* (a unit change from an effective date), and keeps the result per period as
//! contract service units. This crate reads those and applies rollcall's planned changes through
//! the Autotask REST API v1.0, so the engine never sees an Autotask field name. The facts it
//! relies on are listed in `docs/autotask.md`, and the sandbox (`sandbox`) enforces them.
//!
//! - [`config`]: the pipeline's `target:` section ([`Config`]), which builds the client.
//! - [`client`]: [`Autotask`], the [`rollcall_core::BillingSystem`] implementation.
//! - [`model`]: Autotask's JSON entities and query language, shared by client and sandbox.
//! - `sandbox` (feature `sandbox`): a stateful Autotask server (`Sandbox`, started from a
//!   `Seed`) for tests and for `rollcall sandbox autotask`.

pub mod client;
pub mod config;
mod error;
pub mod model;
#[cfg(feature = "sandbox")]
pub mod sandbox;
#[cfg(feature = "sandbox")]
mod standalone;

pub use client::Autotask;
pub use config::Config;
pub use error::ConfigError;
#[cfg(feature = "sandbox")]
pub use sandbox::{Sandbox, SandboxError, Seed, run_standalone};
