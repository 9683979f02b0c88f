//! What can be wrong with an Autotask target before any call is made.
//!
//! Remote failures are [`rollcall_core::RemoteError`]s, classified once by the core HTTP
//! plumbing. These are the configuration mistakes found while building the client, kept apart so
//! the message names the setting to fix.

use rollcall_core::{RemoteError, RemoteErrorKind};

use crate::client::VENDOR;

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
