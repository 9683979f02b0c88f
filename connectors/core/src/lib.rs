//! The roles a rollcall connector plays, and the plumbing every REST connector shares.
//!
//! rollcall's engine knows connectors only through the two traits here: a [`Directory`] yields
//! the people of one client, a [`BillingSystem`] reads what a client is billed for and applies
//! one [`Change`] at a time. Keeping the traits in their own small crate means a connector
//! depends on this crate alone, never on the engine, and the engine never names a vendor.
//!
//! The types that cross the boundary speak the billing domain: [`Person`], [`ContactFields`],
//! [`AdditionFields`], [`ClientState`], [`Change`]. Vendor field names stay inside each
//! connector's `model.rs`.
//!
//! Two more roles are optional: a connector whose vendor pushes notifications owns its webhook
//! ([`inbound::Inbound`]), and one with a sandbox of its vendor runs it standalone
//! ([`standalone::SandboxRole`]); both are reached through the config traits, so the registry
//! line that names a connector is all the engine needs.
//!
//! HTTP plumbing ([`http`]) lives here once — rate limiting, retries with backoff and jitter,
//! `Retry-After`, reconcile-before-retry for creates that have no idempotency key, redaction —
//! so no connector writes its own retry loop.

pub mod accounting;
pub mod ad;
pub mod billing;
pub mod connector;
pub mod directory;
pub mod error;
pub mod groups;
pub mod http;
pub mod inbound;
pub mod invoice;
pub mod limits;
pub mod money;
pub mod notify;
pub mod oauth;
pub mod person;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod secret;
pub mod standalone;
pub mod text;

pub use billing::{
    AccountRef, ActualAddition, ActualContact, AdditionFields, Applied, BillingAccount,
    BillingModel, BillingSystem, Change, ClientState, ContactFields, ContactKey, NewTicket,
    ServiceDesk, Ticket,
};
pub use connector::{BillingConfig, BuildContext, DirectoryConfig, owner_mark};
pub use directory::{
    Completeness, Cursor, Directory, DirectoryContext, DirectoryError, DirectoryRead, GroupsWanted,
    RunShare, Subscription,
};
pub use error::{RemoteError, RemoteErrorKind};
pub use invoice::{
    ActualInvoice, BillingPeriod, InvoiceFields, InvoiceLine, InvoiceStatus, InvoiceTarget,
};
pub use limits::{FieldLimits, fit_text, text_length};
pub use money::{Currency, json_decimal, json_number, round_money};
pub use person::{AttributeName, Attributes, License, Person};
pub use secret::Secret;
