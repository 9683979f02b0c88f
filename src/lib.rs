//! rollcall: bill a managed-service provider's clients per user.
//!
//! The flow runs one way: a client's directory yields people ([`rollcall_core::Directory`]),
//! [`mapping`] turns them into the billing the client should have, [`plan`] compares that with
//! what the billing system holds ([`rollcall_core::BillingSystem`]) and guards the result,
//! [`apply`] makes it real one change at a time, and [`store`] remembers every change.
//! [`config`] reads the pipeline files that drive all of it; [`run`] does the I/O around the
//! pure planner; [`engine`] owns one sync end to end (leases, plan, apply, record) and is the
//! only way anything syncs; [`report`] renders for people; [`cli`] is the command line.
//!
//! See ARCHITECTURE.md for the code map and the invariants the tests hold.

pub mod apply;
pub mod approvals;
pub mod cli;
pub mod config;
pub mod connect;
pub mod db;
pub mod demo;
pub mod engine;
pub mod explain;
pub mod mapping;
pub mod metrics;
pub mod notify;
pub mod pipeline_tests;
pub mod plan;
pub mod queue;
pub mod report;
pub mod run;
pub mod runs;
pub mod sanitise;
pub mod seal;
pub mod store;
pub mod store_admin;
pub mod store_file;
pub mod web;
