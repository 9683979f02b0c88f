//! rollcall's end-to-end tests: one binary, real HTTP against the vendor sandboxes, the real
//! `rollcall` executable for exit codes and logs.

mod approvals;
mod autotask;
mod boundaries;
mod browser;
mod cli;
mod config_errors;
mod console;
mod deploy;
mod edges;
mod files;
mod first_steps;
mod graph;
mod halopsa;
mod invoices;
mod ldap;
mod leases;
mod limits;
mod markdown;
mod notify;
mod periods;
mod postgres;
mod queue;
mod readme;
mod receivers;
mod report;
mod support;
mod sync;
mod webhooks;
mod xero;
