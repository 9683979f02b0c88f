//! Microsoft Graph (Entra ID) as a rollcall directory.
//!
//! Many MSP clients have no on-premises Active Directory: their people live in Entra ID and they
//! pay per Microsoft 365 licence. This crate reads those people — enabled or not, their groups
//! (transitively) and their licences resolved to SKU part numbers and names — through Graph
//! v1.0, incrementally with delta queries, so the engine never sees a Graph field name. What the
//! API guarantees and demands is enforced by the sandbox (`sandbox.rs`), which says it in its
//! module docs.
//!
//! - [`config`]: the pipeline's `directory: { graph: … }` section ([`Config`]).
//! - [`client`]: [`GraphDirectory`], the [`rollcall_core::Directory`] implementation.
//! - [`model`]: Graph's JSON objects, shared by the client and the sandbox.
//! - [`skus`]: friendly names for common Microsoft 365 SKU part numbers.
//! - [`subscriptions`]: change-notification subscriptions (create, renew, delete, and
//!   [`GraphDirectory::ensure_subscriptions`] to keep them alive), so a change in Entra can
//!   start a sync instead of waiting for the next scheduled one.
//! - `sandbox` (feature `sandbox`): a stateful Graph and token endpoint (`Sandbox`, started from
//!   a `Seed`) that enforces the same contract, for tests and for `rollcall sandbox graph`.

pub mod client;
pub mod config;
mod error;
pub mod model;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod skus;
#[cfg(feature = "sandbox")]
mod standalone;
pub mod subscriptions;
pub mod webhook;

pub use client::GraphDirectory;
pub use config::Config;
pub use error::ConfigError;
#[cfg(feature = "sandbox")]
pub use sandbox::{Sandbox, SandboxError, Seed, run_standalone};
pub use subscriptions::{
    Ensured, GraphSubscription, SubscriptionAction, SubscriptionOutcome, SubscriptionPlan,
    SubscriptionRequest,
};
