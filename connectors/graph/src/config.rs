//! The `directory: { graph: … }` section of a pipeline for a client whose people live in
//! Entra ID (Microsoft 365).
//!
//! Every field's doc comment is user documentation: it is generated into the configuration
//! reference and the JSON Schema. Values are checked while the pipeline is read, so a mistake is
//! reported at its line and column rather than at the first call.

use std::path::Path;
use std::sync::Arc;

use rollcall_core::{Directory, DirectoryConfig, Secret};
use serde::Deserializer;

use crate::client::GraphDirectory;

/// People read from a Microsoft 365 tenant's Entra ID through Microsoft Graph, with an app
/// registration's client credentials (application permissions `User.Read.All`,
/// `GroupMember.Read.All` and `Organization.Read.All`, or `Directory.Read.All`). After the first
/// run only changes are read (delta queries).
#[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "GraphDirectory")]
pub struct Config {
    /// The client's tenant: its directory (tenant) id, a GUID, or a verified domain such as
    /// `contoso.onmicrosoft.com`.
    pub tenant_id: String,
    /// The application (client) id of the app registration rollcall signs in as, a GUID.
    pub client_id: String,
    /// The app registration's client secret, as a reference: `${GRAPH_CLIENT_SECRET}`.
    pub client_secret: Secret,
    /// The Microsoft identity platform's address (no path). The default is the worldwide cloud;
    /// national clouds differ (`https://login.microsoftonline.us`). For the sandbox:
    /// `http://127.0.0.1:PORT`.
    #[serde(default = "default_login_url")]
    pub login_url: String,
    /// Microsoft Graph's address (no path, no `/v1.0`). For the sandbox: `http://127.0.0.1:PORT`.
    #[serde(default = "default_graph_url")]
    pub graph_url: String,
    /// Read only the members of this group, nested groups included: its display name or its
    /// object id. Useful when one tenant holds several billed clients, or to leave out
    /// guests and rooms. When absent, every user of the tenant is read.
    #[serde(default)]
    pub group: Option<String>,
    /// Objects asked for per page (1 to 999, Graph's largest page of users). Fewer, larger pages
    /// mean fewer requests against Graph's throttling budget.
    #[serde(default = "default_page_size", deserialize_with = "page_size_in_range")]
    #[schemars(range(min = 1, max = 999))]
    pub page_size: u32,
    /// Read incrementally: the first run reads everything and keeps a delta link in rollcall's
    /// store; later runs ask Graph only for the users changed since. Set `false` to read every
    /// user on every run.
    #[serde(default = "default_delta")]
    pub delta: bool,
    /// Requests per second rollcall allows itself against this tenant (at least 1). Graph
    /// throttles per app and tenant; rollcall also waits whenever Graph answers 429 or 503 with
    /// `Retry-After`.
    #[serde(
        default = "default_rate_limit",
        deserialize_with = "positive_rate_limit"
    )]
    #[schemars(range(min = 1))]
    pub rate_limit_per_second: u32,
}

/// Graph's largest page of users (`$top`).
pub const MAX_PAGE_SIZE: u32 = 999;

pub fn default_login_url() -> String {
    "https://login.microsoftonline.com".to_owned()
}

pub fn default_graph_url() -> String {
    "https://graph.microsoft.com".to_owned()
}

fn default_page_size() -> u32 {
    MAX_PAGE_SIZE
}

fn default_delta() -> bool {
    true
}

fn default_rate_limit() -> u32 {
    20
}

fn positive_rate_limit<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    rollcall_core::connector::u32_within(deserializer, 1..=u32::MAX, |_| {
        crate::error::ConfigError::RateLimit
    })
}

fn page_size_in_range<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    rollcall_core::connector::u32_within(deserializer, 1..=MAX_PAGE_SIZE, |value| {
        crate::error::ConfigError::PageSize(value)
    })
}

impl DirectoryConfig for Config {
    const STARTER: &'static str = STARTER;

    fn inbound() -> Option<&'static dyn rollcall_core::inbound::Inbound> {
        Some(&crate::webhook::Webhook)
    }

    #[cfg(feature = "sandbox")]
    fn sandbox() -> Option<&'static dyn rollcall_core::standalone::SandboxRole> {
        Some(&crate::standalone::Standalone)
    }

    fn notifying_tenant(&self) -> Option<&str> {
        Some(&self.tenant_id)
    }

    fn build(&self, _pipeline_dir: &Path) -> Arc<dyn Directory> {
        Arc::new(GraphDirectory::from_config(self))
    }

    fn build_in(
        &self,
        _pipeline_dir: &Path,
        context: &rollcall_core::DirectoryContext,
    ) -> Arc<dyn Directory> {
        Arc::new(GraphDirectory::in_run(
            self,
            context,
            rollcall_core::http::RetryPolicy::default(),
        ))
    }

    fn change_notifications(&self) -> Option<Arc<dyn rollcall_core::notify::ChangeNotifications>> {
        Some(Arc::new(
            crate::subscriptions::GraphChangeNotifications::new(GraphDirectory::from_config(self)),
        ))
    }
}

/// The `directory:` body `rollcall init` writes for Graph, commented for a first setup.
const STARTER: &str = r#"graph:
        tenant_id: contoso.onmicrosoft.com   # the client's tenant id or domain
        client_id: 00000000-0000-0000-0000-000000000000   # your app registration
        client_secret: ${GRAPH_CLIENT_SECRET}   # a reference, never the value
        # group: Billable Staff   # only this group's members (nested groups included)
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Config, serde_json::Error> {
        serde_json::from_str(json)
    }

    const BASE: &str = r#""tenant_id": "contoso.onmicrosoft.com",
        "client_id": "00000000-0000-4000-8000-000000000001",
        "client_secret": "${ROLLCALL_GRAPH_TEST_UNSET:-s3cret-value}""#;

    #[test]
    fn defaults_apply_and_the_secret_stays_hidden() {
        let config = parse(&format!("{{{BASE}}}")).expect("config");
        assert_eq!(config.login_url, "https://login.microsoftonline.com");
        assert_eq!(config.graph_url, "https://graph.microsoft.com");
        assert_eq!(config.page_size, 999);
        assert!(config.delta);
        assert_eq!(config.group, None);
        assert_eq!(config.client_secret.expose(), "s3cret-value");
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret-value"), "{debug}");
    }

    #[test]
    fn out_of_range_values_and_unknown_fields_are_refused() {
        let err = parse(&format!("{{{BASE}, \"page_size\": 1000}}")).expect_err("page too big");
        assert!(err.to_string().contains("between 1 and 999"), "{err}");
        let err =
            parse(&format!("{{{BASE}, \"rate_limit_per_second\": 0}}")).expect_err("zero rate");
        assert!(err.to_string().contains("at least 1"), "{err}");
        let err = parse(&format!("{{{BASE}, \"tenant\": \"x\"}}")).expect_err("unknown field");
        assert!(err.to_string().contains("unknown field `tenant`"), "{err}");
        let literal = BASE.replace("${ROLLCALL_GRAPH_TEST_UNSET:-s3cret-value}", "literal");
        let err = parse(&format!("{{{literal}}}")).expect_err("literal secret");
        assert!(err.to_string().contains("must be a reference"), "{err}");
    }

    #[test]
    fn schema_documents_every_field() {
        let schema = serde_json::to_value(schemars::schema_for!(Config)).expect("schema");
        let properties = schema["properties"].as_object().expect("properties");
        for (name, property) in properties {
            assert!(
                property.get("description").is_some(),
                "{name} has no description: {property}"
            );
        }
        assert_eq!(schema["additionalProperties"], serde_json::json!(false));
        assert_eq!(schema["properties"]["page_size"]["maximum"], 999);
        assert_eq!(schema["title"], "GraphDirectory");
    }
}
