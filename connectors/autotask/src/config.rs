//! The `target:` section of a pipeline that bills through Autotask PSA.
//!
//! Every field's doc comment is user documentation: it is generated into the configuration
//! reference and the JSON Schema. Values are checked while the pipeline is read, so a mistake is
//! reported at its line and column rather than at the first call.

use std::sync::Arc;

use rollcall_core::{BillingConfig, BillingSystem, BuildContext, RemoteError, Secret};
use serde::Deserializer;

use crate::client::Autotask;

/// Bills clients through Autotask PSA: contacts on the client's company, seats as units of
/// services on its recurring service contract.
#[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "AutotaskTarget")]
pub struct Config {
    /// The API-only user's name (an email address), sent as the `UserName` header and used to
    /// find the user's zone.
    pub username: String,
    /// The API user's secret, as a reference: `${AUTOTASK_SECRET}`.
    pub secret: Secret,
    /// The API tracking identifier of your integration (Admin > API Users > the user's API
    /// Tracking Identifier), as a reference: `${AUTOTASK_INTEGRATION_CODE}`.
    pub integration_code: Secret,
    /// Where the user's zone is looked up (`GET …/zoneInformation?user=`); the answer names the
    /// zone's API, which every other call uses. Autotask's own is the default; point it at
    /// `rollcall sandbox autotask` with `http://127.0.0.1:PORT/ATServicesRest/V1.0`.
    #[serde(default = "default_zone_lookup")]
    pub zone_lookup_url: String,
    /// Requests per hour rollcall allows itself (1 to 10000). Autotask allows 10,000 an hour
    /// per database, shared by every integration, and slows answers from half of that; rollcall
    /// also backs off whenever Autotask answers 429.
    #[serde(
        default = "default_rate_limit",
        deserialize_with = "rate_limit_in_range"
    )]
    #[schemars(range(min = 1, max = 10000))]
    pub rate_limit_per_hour: u32,
    /// Records asked for per page when querying (1 to 500, Autotask's largest page); every
    /// page is read.
    #[serde(default = "default_page_size", deserialize_with = "page_size_in_range")]
    #[schemars(range(min = 1, max = 500))]
    pub page_size: u32,
}

/// Autotask's largest page.
pub const MAX_PAGE_SIZE: u32 = 500;

/// Autotask's request threshold per database and hour.
pub const HOURLY_THRESHOLD: u32 = 10_000;

/// Where Autotask answers which zone a user lives in.
pub const ZONE_LOOKUP: &str = "https://webservices.autotask.net/ATServicesRest/V1.0";

fn default_zone_lookup() -> String {
    ZONE_LOOKUP.to_owned()
}

/// Half the threshold: Autotask starts slowing answers beyond it, and other integrations of
/// the same database need the rest.
fn default_rate_limit() -> u32 {
    HOURLY_THRESHOLD / 2
}

fn default_page_size() -> u32 {
    MAX_PAGE_SIZE
}

fn rate_limit_in_range<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    rollcall_core::connector::u32_within(deserializer, 1..=HOURLY_THRESHOLD, |value| {
        crate::error::ConfigError::RateLimit(value)
    })
}

fn page_size_in_range<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    rollcall_core::connector::u32_within(deserializer, 1..=MAX_PAGE_SIZE, |value| {
        crate::error::ConfigError::PageSize(value)
    })
}

impl BillingConfig for Config {
    const STARTER: &'static str = STARTER;

    #[cfg(feature = "sandbox")]
    fn sandbox() -> Option<&'static dyn rollcall_core::standalone::SandboxRole> {
        Some(&crate::standalone::Standalone)
    }

    fn build(&self, context: &BuildContext) -> Result<Arc<dyn BillingSystem>, RemoteError> {
        Ok(Arc::new(Autotask::new(self)?.with_mark(&context.mark)))
    }
}

/// The `target:` section `rollcall init` writes for Autotask, commented for a first setup.
const STARTER: &str = r#"  autotask:
    username: api-user@example.com           # an API-only user (Admin > API Users)
    secret: ${AUTOTASK_SECRET}               # secrets are references, never values
    integration_code: ${AUTOTASK_INTEGRATION_CODE}   # the user's API tracking identifier
    # The zone is found from the user name; `rollcall sandbox autotask` serves this one:
    zone_lookup_url: http://127.0.0.1:8426/ATServicesRest/V1.0
    # rate_limit_per_hour: 5000                # Autotask allows 10000 per database
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Config, serde_json::Error> {
        serde_json::from_str(json)
    }

    const BASE: &str = r#""username": "api@example.com",
        "secret": "${ROLLCALL_AT_TEST_UNSET_SECRET:-secret-value}",
        "integration_code": "${ROLLCALL_AT_TEST_UNSET_CODE:-code-value}""#;

    #[test]
    fn defaults_apply_and_secrets_stay_hidden() {
        let config = parse(&format!("{{{BASE}}}")).expect("config");
        assert_eq!(config.rate_limit_per_hour, 5000);
        assert_eq!(config.page_size, 500);
        assert_eq!(config.zone_lookup_url, ZONE_LOOKUP);
        assert_eq!(config.secret.expose(), "secret-value");
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("secret-value") && !debug.contains("code-value"),
            "{debug}"
        );
    }

    #[test]
    fn out_of_range_values_literal_secrets_and_unknown_fields_are_refused() {
        let err = parse(&format!("{{{BASE}, \"rate_limit_per_hour\": 20000}}"))
            .expect_err("over the threshold");
        assert!(err.to_string().contains("between 1 and 10000"), "{err}");
        let err = parse(&format!("{{{BASE}, \"page_size\": 501}}")).expect_err("page too big");
        assert!(err.to_string().contains("between 1 and 500"), "{err}");
        let err = parse(&format!("{{{BASE}, \"pagesize\": 10}}")).expect_err("unknown field");
        assert!(
            err.to_string().contains("unknown field `pagesize`"),
            "{err}"
        );
        let literal = BASE.replace("${ROLLCALL_AT_TEST_UNSET_SECRET:-secret-value}", "literal");
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
        assert_eq!(schema["properties"]["page_size"]["maximum"], 500);
    }
}
