//! The `target:` section of a pipeline that bills through ConnectWise Manage.
//!
//! Every field's doc comment is user documentation: it is generated into the configuration
//! reference and the JSON Schema. Values are checked while the pipeline is read, so a mistake is
//! reported at its line and column rather than at the first call.

use std::sync::Arc;

use rollcall_core::{BillingConfig, BillingSystem, BuildContext, RemoteError, Secret};
use serde::Deserializer;

use crate::client::ConnectWise;

/// Bills clients through ConnectWise Manage (ConnectWise PSA): contacts on the client's company,
/// seats as additions on one of its agreements.
#[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ConnectWiseTarget")]
pub struct Config {
    /// The REST API's base URL, up to and including `/v4_6_release/apis/3.0`, e.g.
    /// `https://api-na.myconnectwise.net/v4_6_release/apis/3.0` (or `api-eu…`, `api-au…`, or
    /// your own server's). For the sandbox: `http://127.0.0.1:PORT/v4_6_release/apis/3.0`.
    pub url: String,
    /// The company id you log in to ConnectWise with (not a client's identifier).
    pub company_id: String,
    /// The public key of the API member's key pair, as a reference: `${CW_PUBLIC_KEY}`.
    pub public_key: Secret,
    /// The private key of the API member's key pair, as a reference: `${CW_PRIVATE_KEY}`.
    pub private_key: Secret,
    /// Your integrator client id (a GUID from developer.connectwise.com), sent as the `clientId`
    /// header on every request.
    pub client_id: String,
    /// Requests per second rollcall allows itself against this server (at least 1). ConnectWise
    /// publishes no fixed limit; rollcall also backs off whenever the server answers 429.
    #[serde(
        default = "default_rate_limit",
        deserialize_with = "positive_rate_limit"
    )]
    #[schemars(range(min = 1))]
    pub rate_limit_per_second: u32,
    /// Rows asked for per page when listing (1 to 1000). ConnectWise's default page is only 25
    /// rows; rollcall always asks for this many and reads every page.
    #[serde(default = "default_page_size", deserialize_with = "page_size_in_range")]
    #[schemars(range(min = 1, max = 1000))]
    pub page_size: u32,
}

/// ConnectWise's largest page.
pub const MAX_PAGE_SIZE: u32 = 1000;

fn default_rate_limit() -> u32 {
    10
}

fn default_page_size() -> u32 {
    MAX_PAGE_SIZE
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
        Ok(Arc::new(ConnectWise::new(self)?.with_mark(&context.mark)))
    }
}

/// The `target:` section `rollcall init` writes for ConnectWise, commented for a first setup.
const STARTER: &str = r#"  connectwise:
    # Your site's API base: https://api-na.myconnectwise.net/v4_6_release/apis/3.0
    # (api-eu…, api-au…, or your own server). `rollcall sandbox connectwise` serves this one:
    url: http://127.0.0.1:8421/v4_6_release/apis/3.0
    company_id: demo                 # the company id you log in with
    public_key: ${CW_PUBLIC_KEY}     # an API member's keys; secrets are references, never values
    private_key: ${CW_PRIVATE_KEY}
    client_id: 00000000-0000-4000-8000-000000000000   # your integrator GUID (developer.connectwise.com)
    # rate_limit_per_second: 10
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Config, serde_json::Error> {
        serde_json::from_str(json)
    }

    const BASE: &str = r#""url": "http://127.0.0.1:1/v4_6_release/apis/3.0",
        "company_id": "demo", "client_id": "00000000-0000-4000-8000-000000000000",
        "public_key": "${ROLLCALL_CW_TEST_UNSET_PUB:-pub-value}",
        "private_key": "${ROLLCALL_CW_TEST_UNSET_PRIV:-priv-value}""#;

    #[test]
    fn defaults_apply_and_keys_stay_hidden() {
        let config = parse(&format!("{{{BASE}}}")).expect("config");
        assert_eq!(config.rate_limit_per_second, 10);
        assert_eq!(config.page_size, 1000);
        assert_eq!(config.private_key.expose(), "priv-value");
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("priv-value") && !debug.contains("pub-value"),
            "{debug}"
        );
    }

    #[test]
    fn out_of_range_values_and_unknown_fields_are_refused() {
        let err =
            parse(&format!("{{{BASE}, \"rate_limit_per_second\": 0}}")).expect_err("zero rate");
        assert!(err.to_string().contains("at least 1"), "{err}");
        let err = parse(&format!("{{{BASE}, \"page_size\": 1001}}")).expect_err("page too big");
        assert!(err.to_string().contains("between 1 and 1000"), "{err}");
        let err = parse(&format!("{{{BASE}, \"pagesize\": 10}}")).expect_err("unknown field");
        assert!(
            err.to_string().contains("unknown field `pagesize`"),
            "{err}"
        );
        let literal = BASE.replace("${ROLLCALL_CW_TEST_UNSET_PRIV:-priv-value}", "literal");
        let err = parse(&format!("{{{literal}}}")).expect_err("literal key");
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
        assert_eq!(schema["properties"]["page_size"]["maximum"], 1000);
    }
}
