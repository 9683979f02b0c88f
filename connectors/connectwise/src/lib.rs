//! ConnectWise Manage (ConnectWise PSA) as a rollcall billing system.
//!
//! MSPs that run ConnectWise bill per-user services as *additions* on a client's *agreement*, and
//! keep the client's people as *contacts* of its *company*. This crate reads those and applies
//! rollcall's planned changes to them through ConnectWise's REST API 3.0, so the engine never
//! sees a ConnectWise field name. What the API guarantees and demands is enforced by the sandbox
//! (`sandbox/`), which lists it in its module docs.
//!
//! - [`config`]: the pipeline's `target:` section ([`Config`]), which builds the client.
//! - [`client`]: [`ConnectWise`], the [`rollcall_core::BillingSystem`] implementation.
//! - [`model`]: ConnectWise's JSON objects, shared by the client and the sandbox.
//! - `sandbox` (feature `sandbox`): a stateful ConnectWise server (`Sandbox`, started from a
//!   `Seed`) that enforces the same contract, for tests and for `rollcall sandbox connectwise`.

pub mod client;
pub mod config;
mod error;
pub mod model;
#[cfg(feature = "sandbox")]
pub mod sandbox;
#[cfg(feature = "sandbox")]
mod standalone;
pub mod webhook;

pub use client::ConnectWise;
pub use config::Config;
pub use error::ConfigError;
#[cfg(feature = "sandbox")]
pub use sandbox::{Credentials, Sandbox, SandboxError, Seed, run_standalone};
