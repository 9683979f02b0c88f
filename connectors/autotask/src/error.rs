//! What can be wrong with an Autotask target before any call is made, and how to tell
//! Autotask's refusals from its failures.
//!
//! Remote failures are [`rollcall_core::RemoteError`]s, classified once by the core HTTP
//! plumbing. The configuration mistakes found while building the client are kept apart so the
//! message names the setting to fix.
//!
//! Autotask answers a request that breaks one of its business rules (a required field missing,
//! a value too long, a duplicate, a picklist value it does not allow, an inactive entity) with
//! HTTP 500 and `{"errors": ["…"]}`, the status it also gives its own failures. Retried as an
//! outage, such a refusal costs every attempt, then reports "failing; run again later", which
//! no later run can cure. [`business_rule`] reads the reason instead: an answer whose words say
//! a rule was broken is the caller's to fix and is reported at once; anything else answered 500
//! (no body, an HTML page, words it does not know, or Autotask's own "unexpected error") is
//! still an outage and retried, so a refusal it fails to recognise only costs time.

use reqwest::StatusCode;
use rollcall_core::{RemoteError, RemoteErrorKind};

use crate::client::VENDOR;
use crate::model::ErrorBody;

/// An Autotask target that cannot be used as configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "rate_limit_per_hour must be between 1 and 10000 (Autotask's threshold per database), not {0}"
    )]
    RateLimit(u32),
    #[error("page_size must be between 1 and 500 (Autotask's largest page), not {0}")]
    PageSize(u32),
    #[error(
        "{field} {url:?} is not a valid URL ({reason}); write e.g. \
         https://webservices.autotask.net/ATServicesRest/V1.0"
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

/// Words of Autotask's refusals of the request's content (lower case).
const RULE_WORDS: &[&str] = &[
    "required",
    "exceed",
    "maximum length",
    "too long",
    "longest allowed",
    "duplicate",
    "already exist",
    "already been",
    "picklist",
    "not a valid",
    "invalid",
    "inactive",
    "does not exist",
    "unable to find",
    "does not match",
    "needs",
    "must",
    "cannot",
    "can not",
    "not allowed",
    "read-only",
    "read only",
    "outside",
];

/// Words of Autotask failing on its own: these win over [`RULE_WORDS`] ("an unexpected error
/// occurred; the request must be sent again" is an outage).
const OUTAGE_WORDS: &[&str] = &[
    "unexpected error",
    "try again",
    "timeout",
    "timed out",
    "deadlock",
    "unavailable",
    "object reference not set",
    "internal server error",
    "transport-level",
    "cannot open database",
    "database error",
];

/// What the person reading a refusal should do: the same request would be refused again.
pub const REFUSAL_HINT: &str = "correct the value Autotask names in the directory or the \
     pipeline's mapping (or the record in Autotask), then run again; sent unchanged it would be \
     refused again";

/// Autotask's reasons, when a 500 answer is its refusal of the request's content rather than
/// its own failure.
pub fn business_rule(status: StatusCode, body: &[u8]) -> Option<Vec<String>> {
    if status != StatusCode::INTERNAL_SERVER_ERROR {
        return None;
    }
    let errors: Vec<String> = serde_json::from_slice::<ErrorBody>(body)
        .ok()?
        .errors
        .iter()
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .collect();
    let said = errors.join(" ").to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| said.contains(w));
    (!errors.is_empty() && !has(OUTAGE_WORDS) && has(RULE_WORDS)).then_some(errors)
}

/// [`rollcall_core::http::HttpSettings::classify_error`] for Autotask: a business-rule refusal
/// is `Rejected`, so it is neither retried nor reconciled.
pub fn classify_error(status: StatusCode, body: &[u8]) -> Option<RemoteErrorKind> {
    business_rule(status, body).map(|_| RemoteErrorKind::Rejected)
}
