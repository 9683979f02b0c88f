//! The connector registry: the only file in the engine that names a vendor.
//!
//! A connector joins rollcall with one line here. The macros expand to an enum of the
//! connectors' own config types, keyed by the connector's name in YAML (`target: {connectwise:
//! {...}}`), and a `build` that hands back the role as a trait object. The enum is externally
//! tagged on purpose: an internally tagged one (`kind: connectwise`) makes serde buffer the
//! section, and every error inside it would lose its line and column. Nothing else in `src/`
//! matches on a connector's name.

use std::path::Path;
use std::sync::Arc;

use rollcall_core::oauth::ConnectApp;
use rollcall_core::{
    BillingConfig, BillingSystem, BuildContext, Directory, DirectoryConfig, RemoteError,
};

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

/// Vendor sandboxes `rollcall sandbox KIND` can run.
pub const SANDBOXES: &[&str] = &[
    "autotask",
    "connectwise",
    "graph",
    "halopsa",
    "quickbooks",
    "xero",
];

type SandboxRun = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>>>>;

/// Runs the named sandbox on `addr` until interrupted; `None` if there is no such sandbox.
pub fn run_sandbox(
    kind: &str,
    addr: std::net::SocketAddr,
    seed: Option<&Path>,
) -> Option<SandboxRun> {
    let seed = seed.map(Path::to_owned);
    match kind {
        "connectwise" => Some(Box::pin(async move {
            let seed = match seed {
                Some(path) => read_seed(&path)?,
                None => rollcall_connectwise::Seed::demo(),
            };
            println!(
                "ConnectWise Manage sandbox at http://{addr}{} (company id `{}`; keys as in the seed); Ctrl-C stops it",
                rollcall_connectwise::sandbox::API_BASE,
                seed.credentials.company_id
            );
            rollcall_connectwise::run_standalone(addr, seed)
                .await
                .map_err(|e| e.to_string())
        })),
        "autotask" => Some(Box::pin(async move {
            let seed = match seed {
                Some(path) => read_seed(&path)?,
                None => rollcall_autotask::Seed::demo(),
            };
            println!(
                "Autotask sandbox: zone lookup at http://{addr}{} (API user `{}`; secret and integration code as in the seed); Ctrl-C stops it",
                rollcall_autotask::sandbox::API_ROOT,
                seed.credentials.username
            );
            rollcall_autotask::run_standalone(addr, seed)
                .await
                .map_err(|e| e.to_string())
        })),
        "graph" => Some(Box::pin(async move {
            let seed = match seed {
                Some(path) => read_seed(&path)?,
                None => rollcall_graph::Seed::demo(),
            };
            println!(
                "Microsoft Graph sandbox at http://{addr} (login_url and graph_url; tenant `{}`, client id `{}`; secret as in the seed); Ctrl-C stops it",
                seed.tenant_id, seed.client_id
            );
            rollcall_graph::run_standalone(addr, seed)
                .await
                .map_err(|e| e.to_string())
        })),
        "quickbooks" => Some(Box::pin(async move {
            let seed = match seed {
                Some(path) => read_seed(&path)?,
                None => rollcall_quickbooks::Seed::demo(),
            };
            println!(
                "QuickBooks Online sandbox at http://{addr} (realm `{}`, client id `{}`; consent is approved at once); Ctrl-C stops it",
                seed.realm_id, seed.client_id
            );
            rollcall_quickbooks::run_standalone(addr, seed)
                .await
                .map_err(|e| e.to_string())
        })),
        "xero" => Some(Box::pin(async move {
            let seed = match seed {
                Some(path) => read_seed(&path)?,
                None => rollcall_xero::Seed::demo(),
            };
            println!(
                "Xero sandbox at http://{addr} (organisation `{}` {}, client id `{}`; consent is approved at once); Ctrl-C stops it",
                seed.tenant_name, seed.tenant_id, seed.client_id
            );
            rollcall_xero::run_standalone(addr, seed)
                .await
                .map_err(|e| e.to_string())
        })),
        "halopsa" => Some(Box::pin(async move {
            let seed = match seed {
                Some(path) => read_seed(&path)?,
                None => rollcall_halopsa::Seed::demo(),
            };
            println!(
                "HaloPSA sandbox at http://{addr} (url; token at /auth/token, client id `{}`, secret as in the seed); Ctrl-C stops it",
                seed.client_id
            );
            rollcall_halopsa::run_standalone(addr, seed)
                .await
                .map_err(|e| e.to_string())
        })),
        _ => None,
    }
}

/// A sandbox seed from a JSON file, with the file and position in the error.
fn read_seed<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("{}:{}:{}: {e}", path.display(), e.line(), e.column()))
}
