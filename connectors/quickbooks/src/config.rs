//! The `target:` section of a pipeline that invoices through QuickBooks Online.
//!
//! Every field's doc comment is user documentation: it is generated into the configuration
//! reference and the JSON Schema. Values are checked while the pipeline is read.

use std::sync::Arc;

use rollcall_core::oauth::{ClientAuth, ConnectApp, TenantPick, TokenEndpoint};
use rollcall_core::{BillingConfig, BillingSystem, BuildContext, RemoteError, Secret};
use serde::Deserializer;

use crate::client::{QuickBooks, VENDOR};

/// Invoices clients in QuickBooks Online: each client is a `Customer`, its seats the lines of
/// the period's `Invoice`. Sign in once with `rollcall connect`.
#[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "QuickBooksTarget")]
pub struct Config {
    /// The Accounting API's host: `https://quickbooks.api.intuit.com`, or Intuit's developer
    /// sandbox `https://sandbox-quickbooks.api.intuit.com`; for `rollcall sandbox quickbooks`,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Your app's client id (developer.intuit.com → Keys & credentials).
    pub client_id: String,
    /// Your app's client secret, as a reference: `${QBO_CLIENT_SECRET}`.
    pub client_secret: Secret,
    /// Intuit's consent page. Default: `https://appcenter.intuit.com/connect/oauth2`.
    #[serde(default = "default_authorize_url")]
    pub authorize_url: String,
    /// Intuit's token endpoint. Default:
    /// `https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer`.
    #[serde(default = "default_token_url")]
    pub token_url: String,
    /// The name the connection's tokens are kept under in rollcall's store (`rollcall connect`
    /// makes it). Default: `quickbooks`.
    #[serde(default = "default_connection")]
    pub connection: String,
    /// The company (realm) id. Default: the one chosen when connecting.
    #[serde(default)]
    pub realm_id: Option<String>,
    /// The API's `minorversion`, sent on every call. Default: 75.
    #[serde(default = "default_minor_version")]
    pub minor_version: u32,
    /// The sales tax code put on every line (`TaxCodeRef`), e.g. `TAX` or `NON` in US companies,
    /// or a tax code id elsewhere. Default: none (QuickBooks applies the item's own).
    #[serde(default)]
    pub tax_code: Option<String>,
    /// Requests a minute rollcall allows itself per company (1 to 500, Intuit's limit).
    #[serde(
        default = "default_requests_per_minute",
        deserialize_with = "requests_per_minute"
    )]
    #[schemars(range(min = 1, max = 500))]
    pub requests_per_minute: u32,
    /// Requests in flight at once per company (1 to 10, Intuit's limit).
    #[serde(default = "default_concurrency", deserialize_with = "concurrency")]
    #[schemars(range(min = 1, max = 10))]
    pub max_concurrent: u32,
}

fn default_authorize_url() -> String {
    "https://appcenter.intuit.com/connect/oauth2".into()
}
fn default_token_url() -> String {
    "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer".into()
}
fn default_connection() -> String {
    "quickbooks".into()
}
fn default_minor_version() -> u32 {
    75
}
fn default_requests_per_minute() -> u32 {
    500
}
fn default_concurrency() -> u32 {
    10
}

fn requests_per_minute<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    rollcall_core::connector::u32_within(deserializer, 1..=500, |v| {
        format!("requests_per_minute is {v}; QuickBooks allows 1 to 500 a minute per company")
    })
}

fn concurrency<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    rollcall_core::connector::u32_within(deserializer, 1..=10, |v| {
        format!("max_concurrent is {v}; QuickBooks allows 1 to 10 requests at once per company")
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

    #[cfg(feature = "sandbox")]
    fn sandbox() -> Option<&'static dyn rollcall_core::standalone::SandboxRole> {
        Some(&crate::standalone::Standalone)
    }

    fn build(&self, context: &BuildContext) -> Result<Arc<dyn BillingSystem>, RemoteError> {
        Ok(Arc::new(QuickBooks::new(self, context.tokens.clone())?))
    }

    fn oauth(&self) -> Option<ConnectApp> {
        Some(ConnectApp {
            connection: self.connection.clone(),
            authorize_url: self.authorize_url.clone(),
            scopes: vec!["com.intuit.quickbooks.accounting".into()],
            token: self.token_endpoint(),
            tenant: TenantPick::FromRedirect("realmId"),
        })
    }
}

/// The `target:` section `rollcall init` writes for QuickBooks Online.
const STARTER: &str = r#"  quickbooks:
    # https://quickbooks.api.intuit.com, or `rollcall sandbox quickbooks`'s address:
    url: http://127.0.0.1:8423
    client_id: demo-qbo-client
    client_secret: ${QBO_CLIENT_SECRET:-demo-qbo-secret}
    # For the sandbox; leave both out for Intuit's own:
    authorize_url: http://127.0.0.1:8423/connect/oauth2
    token_url: http://127.0.0.1:8423/oauth2/v1/tokens/bearer
    # then: rollcall connect THIS-FILE
"#;
