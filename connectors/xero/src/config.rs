//! The `target:` section of a pipeline that invoices through Xero.
//!
//! Every field's doc comment is user documentation: it is generated into the configuration
//! reference and the JSON Schema. Values are checked while the pipeline is read.

use std::sync::Arc;

use rollcall_core::oauth::{ClientAuth, ConnectApp, TenantPick, TokenEndpoint};
use rollcall_core::{BillingConfig, BillingSystem, BuildContext, RemoteError, Secret};
use serde::Deserializer;

use crate::client::{VENDOR, Xero};

/// Invoices clients in Xero: each client is a `Contact`, its seats the lines of the period's
/// sales invoice (`ACCREC`). Sign in once with `rollcall connect`.
#[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "XeroTarget")]
pub struct Config {
    /// The API host: `https://api.xero.com`; for `rollcall sandbox xero`,
    /// `http://127.0.0.1:PORT`. The Accounting API is under `/api.xro/2.0/` and the
    /// organisations a connection reaches under `/connections`.
    pub url: String,
    /// Your app's client id (developer.xero.com → My Apps).
    pub client_id: String,
    /// Your app's client secret, as a reference: `${XERO_CLIENT_SECRET}`.
    pub client_secret: Secret,
    /// Xero's consent page. Default: `https://login.xero.com/identity/connect/authorize`.
    #[serde(default = "default_authorize_url")]
    pub authorize_url: String,
    /// Xero's token endpoint. Default: `https://identity.xero.com/connect/token`.
    #[serde(default = "default_token_url")]
    pub token_url: String,
    /// The name the connection's tokens are kept under in rollcall's store. Default: `xero`.
    #[serde(default = "default_connection")]
    pub connection: String,
    /// The organisation to bill in, by name or tenant id, when the connection reaches several.
    /// Default: the one chosen when connecting.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Whether prices are `Exclusive` of tax (the default), `Inclusive`, or `NoTax`.
    #[serde(default = "default_line_amounts")]
    pub line_amount_types: LineAmountTypes,
    /// The revenue account code lines are posted to (e.g. `200`). Default: the item's own.
    #[serde(default)]
    pub account_code: Option<String>,
    /// The tax type put on every line (e.g. `OUTPUT2`). Default: the account's own.
    #[serde(default)]
    pub tax_type: Option<String>,
    /// Requests a minute rollcall allows itself per organisation (1 to 60, Xero's limit; the
    /// default 55 leaves room for a person working in Xero at the same time).
    #[serde(default = "default_per_minute", deserialize_with = "per_minute")]
    #[schemars(range(min = 1, max = 60))]
    pub requests_per_minute: u32,
}

/// How line amounts relate to tax, as Xero names it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, schemars::JsonSchema,
)]
pub enum LineAmountTypes {
    Exclusive,
    Inclusive,
    NoTax,
}

fn default_authorize_url() -> String {
    "https://login.xero.com/identity/connect/authorize".into()
}
fn default_token_url() -> String {
    "https://identity.xero.com/connect/token".into()
}
fn default_connection() -> String {
    "xero".into()
}
fn default_line_amounts() -> LineAmountTypes {
    LineAmountTypes::Exclusive
}
fn default_per_minute() -> u32 {
    55
}

fn per_minute<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    rollcall_core::connector::u32_within(deserializer, 1..=60, |v| {
        format!("requests_per_minute is {v}; Xero allows 1 to 60 a minute per organisation")
    })
}

impl Config {
    pub(crate) fn token_endpoint(&self) -> TokenEndpoint {
        TokenEndpoint {
            vendor: VENDOR,
            url: self.token_url.clone(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            auth: ClientAuth::Basic,
        }
    }
}

impl BillingConfig for Config {
    const STARTER: &'static str = STARTER;

    fn inbound() -> Option<&'static dyn rollcall_core::inbound::Inbound> {
        Some(&crate::webhook::Webhook)
    }

    #[cfg(feature = "sandbox")]
    fn sandbox() -> Option<&'static dyn rollcall_core::standalone::SandboxRole> {
        Some(&crate::standalone::Standalone)
    }

    fn build(&self, context: &BuildContext) -> Result<Arc<dyn BillingSystem>, RemoteError> {
        Ok(Arc::new(Xero::new(self, context.tokens.clone())?))
    }

    fn oauth(&self) -> Option<ConnectApp> {
        Some(ConnectApp {
            connection: self.connection.clone(),
            authorize_url: self.authorize_url.clone(),
            scopes: [
                "openid",
                "offline_access",
                "accounting.transactions",
                "accounting.contacts",
                "accounting.settings.read",
            ]
            .map(str::to_owned)
            .to_vec(),
            token: self.token_endpoint(),
            tenant: TenantPick::Connections {
                url: format!("{}/connections", self.url.trim_end_matches('/')),
                wanted: self.tenant.clone(),
            },
        })
    }
}

/// The `target:` section `rollcall init` writes for Xero.
const STARTER: &str = r#"  xero:
    # https://api.xero.com, or `rollcall sandbox xero`'s address:
    url: http://127.0.0.1:8424
    client_id: demo-xero-client
    client_secret: ${XERO_CLIENT_SECRET:-demo-xero-secret}
    # For the sandbox; leave both out for Xero's own:
    authorize_url: http://127.0.0.1:8424/identity/connect/authorize
    token_url: http://127.0.0.1:8424/connect/token
    # then: rollcall connect THIS-FILE
"#;
