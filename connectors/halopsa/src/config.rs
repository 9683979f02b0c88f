//! The `target:` section of a pipeline that bills through HaloPSA.
//!
//! Every field's doc comment is user documentation: it is generated into the configuration
//! reference and the JSON Schema. Values are checked while the pipeline is read, so a mistake is
//! reported at its line and column rather than at the first call.

use std::sync::Arc;

use rollcall_core::{
    BillingConfig, BillingSystem, BuildContext, RemoteError, RemoteErrorKind, Secret,
};
use serde::Deserializer;

use crate::client::{HaloPsa, VENDOR};

/// Bills clients through HaloPSA: users on the client, seats as the quantities of lines on one
/// of the client's recurring invoices. Signs in with an API application's client credentials.
#[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "HaloPsaTarget")]
pub struct Config {
    /// The resource server's address, as Halo shows it under Configuration > Integrations >
    /// Halo API > API Details, without `/api`: `https://yourcompany.halopsa.com`. For the
    /// sandbox: `http://127.0.0.1:PORT`.
    pub url: String,
    /// The authorisation server's address (same page), without `/token`. Defaults to the
    /// resource server's `/auth`, which is where Halo serves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_url: Option<String>,
    /// Your tenant name, for instances Halo hosts (same page); sent to the token endpoint.
    /// Leave it out for an instance you host yourself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The client id of the API application (Configuration > Integrations > Halo API >
    /// Applications), whose authentication method is Client ID and Secret.
    pub client_id: String,
    /// The application's client secret, as a reference: `${HALO_CLIENT_SECRET}`.
    pub client_secret: Secret,
    /// Requests per minute rollcall allows itself against this instance (at least 1). Halo
    /// documents about 500 a minute per address; rollcall also waits whenever Halo answers 429.
    #[serde(
        default = "default_rate_limit",
        deserialize_with = "positive_rate_limit"
    )]
    #[schemars(range(min = 1))]
    pub rate_limit_per_minute: u32,
    /// Rows asked for per page when listing (1 to 1000); rollcall reads every page.
    #[serde(default = "default_page_size", deserialize_with = "page_size_in_range")]
    #[schemars(range(min = 1, max = 1000))]
    pub page_size: u32,
}

/// The largest page rollcall asks Halo for.
pub const MAX_PAGE_SIZE: u32 = 1000;

fn default_rate_limit() -> u32 {
    400
}

fn default_page_size() -> u32 {
    100
}

fn positive_rate_limit<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    rollcall_core::connector::u32_within(deserializer, 1..=u32::MAX, |_| ConfigError::RateLimit)
}

fn page_size_in_range<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    rollcall_core::connector::u32_within(deserializer, 1..=MAX_PAGE_SIZE, ConfigError::PageSize)
}

impl BillingConfig for Config {
    const STARTER: &'static str = STARTER;

    #[cfg(feature = "sandbox")]
    fn sandbox() -> Option<&'static dyn rollcall_core::standalone::SandboxRole> {
        Some(&crate::standalone::Standalone)
    }

    fn build(&self, context: &BuildContext) -> Result<Arc<dyn BillingSystem>, RemoteError> {
        Ok(Arc::new(HaloPsa::new(self)?.with_mark(&context.mark)))
    }
}

/// The `target:` section `rollcall init` writes for HaloPSA, commented for a first setup.
const STARTER: &str = r#"  halopsa:
    # Configuration > Integrations > Halo API > API Details shows both servers.
    # `rollcall sandbox halopsa` serves this one:
    url: http://127.0.0.1:8425
    # tenant: yourcompany           # for instances Halo hosts
    client_id: rollcall-demo        # an API application using Client ID and Secret
    client_secret: ${HALO_CLIENT_SECRET}   # secrets are references, never values
    # rate_limit_per_minute: 400
"#;

/// A HaloPSA target that cannot be used as configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("rate_limit_per_minute must be at least 1")]
    RateLimit,
    #[error("page_size must be between 1 and 1000, not {0}")]
    PageSize(u32),
    #[error(
        "{field} {url:?} is not a valid URL ({reason}); write the server's address as Halo's \
         API Details page shows it, e.g. https://yourcompany.halopsa.com"
    )]
    Url {
        field: &'static str,
        url: String,
        reason: String,
    },
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
}

impl From<ConfigError> for RemoteError {
    /// `BillingConfig::build` can only return a `RemoteError`; a configuration mistake is the
    /// operator's to fix, like a refused request, so it is classified as `Rejected`.
    fn from(error: ConfigError) -> Self {
        RemoteError::new(
            VENDOR,
            "configure",
            RemoteErrorKind::Rejected,
            error.to_string(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Config, serde_json::Error> {
        serde_json::from_str(json)
    }

    const BASE: &str = r#""url": "http://127.0.0.1:1", "client_id": "rollcall",
        "client_secret": "${ROLLCALL_HALO_TEST_UNSET:-secret-value}""#;

    #[test]
    fn defaults_apply_and_the_secret_stays_hidden() {
        let config = parse(&format!("{{{BASE}}}")).expect("config");
        assert_eq!(config.rate_limit_per_minute, 400);
        assert_eq!(config.page_size, 100);
        assert_eq!(config.client_secret.expose(), "secret-value");
        assert!(!format!("{config:?}").contains("secret-value"));
    }

    #[test]
    fn out_of_range_values_and_unknown_fields_are_refused() {
        let err = parse(&format!("{{{BASE}, \"rate_limit_per_minute\": 0}}")).expect_err("zero");
        assert!(err.to_string().contains("at least 1"), "{err}");
        let err = parse(&format!("{{{BASE}, \"page_size\": 1001}}")).expect_err("page too big");
        assert!(err.to_string().contains("between 1 and 1000"), "{err}");
        let err = parse(&format!("{{{BASE}, \"pagesize\": 10}}")).expect_err("unknown field");
        assert!(
            err.to_string().contains("unknown field `pagesize`"),
            "{err}"
        );
        let literal = BASE.replace("${ROLLCALL_HALO_TEST_UNSET:-secret-value}", "literal");
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
    }
}
