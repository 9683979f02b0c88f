//! HaloPSA as a rollcall billing system.
//!
//! MSPs that run HaloPSA keep a client's people as *users* of the client's *sites*, and bill a
//! monthly per-user service as lines of the client's *recurring invoice*, whose quantities Halo
//! copies onto every invoice it raises. This crate reads those and applies rollcall's planned
//! changes to them through Halo's REST API, signing in with an API application's OAuth2 client
//! credentials, so the engine never sees a Halo field name. docs/halopsa.md says what the
//! connector relies on and why recurring invoice lines rather than contract quantities.
//!
//! - [`config`]: the pipeline's `target:` section ([`Config`]), which builds the client.
//! - [`client`]: [`HaloPsa`], the [`rollcall_core::BillingSystem`] implementation.
//! - [`model`]: Halo's JSON objects, shared by the client and the sandbox.
//! - `sandbox` (feature `sandbox`): a stateful Halo server (`Sandbox`, started from a `Seed`)
//!   with its authorisation server, for tests and for `rollcall sandbox halopsa`.

pub mod client;
pub mod config;
pub mod model;
#[cfg(feature = "sandbox")]
pub mod sandbox;
#[cfg(feature = "sandbox")]
mod standalone;

pub use client::HaloPsa;
pub use config::{Config, ConfigError};
#[cfg(feature = "sandbox")]
pub use sandbox::{Sandbox, SandboxError, Seed, run_standalone};
