//! rollcall's end-to-end tests: one binary, real HTTP against the vendor sandboxes, the real
//! `rollcall` executable for exit codes and logs.

mod cli;
mod config_errors;
mod deploy;
mod files;
mod graph;
mod invoices;
mod ldap;
mod queue;
mod report;
mod support;
mod sync;
mod webhooks;
mod xero;
