//! The connector registry: the only file in the engine that names a vendor.
//!
//! A connector joins rollcall with one line here. The macros expand to an enum of the
//! connectors' own config types, keyed by the connector's name in YAML (`target: {connectwise:
//! {...}}`), and a `build` that hands back the role as a trait object. The enum is externally
//! tagged on purpose: an internally tagged one (`kind: connectwise`) makes serde buffer the
//! section, and every error inside it would lose its line and column. Nothing else in `src/`
//! matches on a connector's name: the `serve` webhooks, `rollcall sandbox` and the demo find a
//! connector's optional roles (its webhook, its sandbox) through its config type here.

use std::path::Path;
use std::sync::Arc;

use rollcall_core::inbound::Inbound;
use rollcall_core::oauth::ConnectApp;
use rollcall_core::standalone::SandboxRole;
use rollcall_core::{
    BillingConfig, BillingSystem, BuildContext, Directory, DirectoryConfig, RemoteError,
};

/// A kind of connector and its optional roles (sandbox, webhook), as its config type has them.
type Roles = (
    &'static str,
    fn() -> Option<&'static dyn SandboxRole>,
    fn() -> Option<&'static dyn Inbound>,
);

macro_rules! billing_systems {
    ($($variant:ident($kind:literal) => $config:ty,)+) => {
        /// Where clients are billed: a PSA or an accounting system, named by its key.
        #[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
        pub enum TargetConfig {
            $( #[serde(rename = $kind)] $variant($config), )+
        }

        impl TargetConfig {
            pub fn kind(&self) -> &'static str {
                match self { $( TargetConfig::$variant(_) => $kind, )+ }
            }

            pub fn build(&self, context: &BuildContext) -> Result<Arc<dyn BillingSystem>, RemoteError> {
                match self { $( TargetConfig::$variant(c) => c.build(context), )+ }
            }

            /// The OAuth app `rollcall connect` signs in with, for targets that use one.
            pub fn oauth(&self) -> Option<ConnectApp> {
                match self { $( TargetConfig::$variant(c) => c.oauth(), )+ }
            }
        }

        /// Kinds of billing system and the `target:` section `rollcall init` writes for each.
        pub const TARGET_STARTERS: &[(&str, &str)] = &[$( ($kind, <$config as BillingConfig>::STARTER), )+];

        /// Kinds of billing system with their optional roles.
        const BILLING_KINDS: &[Roles] = &[$( ($kind, <$config as BillingConfig>::sandbox, <$config as BillingConfig>::inbound), )+];
    };
}

macro_rules! directories {
    ($($variant:ident($kind:literal) => $config:ty,)+) => {
        /// Where a client's people come from, named by its key.
        #[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
        pub enum DirectorySource {
            $( #[serde(rename = $kind)] $variant($config), )+
        }

        impl DirectorySource {
            pub fn kind(&self) -> &'static str {
                match self { $( DirectorySource::$variant(_) => $kind, )+ }
            }

            pub fn build(&self, pipeline_dir: &Path) -> Arc<dyn Directory> {
                match self { $( DirectorySource::$variant(c) => c.build(pipeline_dir), )+ }
            }

            /// The directory of one client of a run (the groups its rules name, what the run's
            /// directories share).
            pub fn build_in(&self, pipeline_dir: &Path, context: &rollcall_core::DirectoryContext) -> Arc<dyn Directory> {
                match self { $( DirectorySource::$variant(c) => c.build_in(pipeline_dir, context), )+ }
            }

            /// The tenant whose change notifications concern this directory, if it sends any.
            pub fn notifying_tenant(&self) -> Option<&str> {
                match self { $( DirectorySource::$variant(c) => c.notifying_tenant(), )+ }
            }

            /// The subscriptions that make this directory notify rollcall, if it can.
            pub fn change_notifications(&self) -> Option<Arc<dyn rollcall_core::notify::ChangeNotifications>> {
                match self { $( DirectorySource::$variant(c) => c.change_notifications(), )+ }
            }
        }

        /// Kinds of directory and the `directory:` section `rollcall init` writes for each.
        pub const DIRECTORY_STARTERS: &[(&str, &str)] = &[$( ($kind, <$config as DirectoryConfig>::STARTER), )+];

        /// Kinds of directory with their optional roles.
        const DIRECTORY_KINDS: &[Roles] = &[$( ($kind, <$config as DirectoryConfig>::sandbox, <$config as DirectoryConfig>::inbound), )+];
    };
}

billing_systems! {
    ConnectWise("connectwise") => rollcall_connectwise::Config,
    Autotask("autotask") => rollcall_autotask::Config,
    QuickBooks("quickbooks") => rollcall_quickbooks::Config,
    Xero("xero") => rollcall_xero::Config,
    HaloPsa("halopsa") => rollcall_halopsa::Config,
}

directories! {
    File("file") => rollcall_file::Config,
    Ldap("ldap") => rollcall_ldap::Config,
    Graph("graph") => rollcall_graph::Config,
}

/// The kind of billing system `rollcall init` writes a pipeline for when none is named.
pub const DEFAULT_TARGET: &str = "connectwise";

/// Every connector's webhook, with the kind of connector it belongs to (`rollcall serve`
/// mounts each at `/hooks/{segment}`).
pub fn inbound_hooks() -> Vec<(&'static str, &'static dyn Inbound)> {
    let mut out: Vec<_> = BILLING_KINDS
        .iter()
        .chain(DIRECTORY_KINDS)
        .filter_map(|(kind, _, hook)| hook().map(|h| (*kind, h)))
        .collect();
    out.sort_by_key(|(kind, _)| *kind);
    out
}

/// The sandbox of a kind of connector, if it has one.
pub fn sandbox(kind: &str) -> Option<&'static dyn SandboxRole> {
    BILLING_KINDS
        .iter()
        .chain(DIRECTORY_KINDS)
        .find(|(k, _, _)| *k == kind)
        .and_then(|(_, sandbox, _)| sandbox())
}

/// Vendor sandboxes `rollcall sandbox KIND` can run, by name.
pub static SANDBOXES: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    let mut kinds: Vec<_> = BILLING_KINDS
        .iter()
        .chain(DIRECTORY_KINDS)
        .filter(|(_, sandbox, _)| sandbox().is_some())
        .map(|(kind, _, _)| *kind)
        .collect();
    kinds.sort_unstable();
    kinds
});

/// `rollcall sandbox --help`'s words for its argument: the kinds this build can run.
pub fn sandbox_help() -> String {
    format!("Which vendor's sandbox: {}.", SANDBOXES.join(", "))
}

type SandboxRun = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>>>>;

/// Runs the named sandbox on `addr` until interrupted; `None` if there is no such sandbox.
pub fn run_sandbox(
    kind: &str,
    addr: std::net::SocketAddr,
    seed: Option<&Path>,
) -> Option<SandboxRun> {
    sandbox(kind).map(|s| s.run(addr, seed))
}
