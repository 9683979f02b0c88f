//! What can be wrong with a Graph directory before any call is made.
//!
//! Remote failures are [`rollcall_core::RemoteError`]s, classified once by the core HTTP
//! plumbing. These are configuration mistakes found while building the client, kept apart so
//! the message names the setting to fix.

/// A Graph directory that cannot be used as configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("rate_limit_per_second must be at least 1")]
    RateLimit,
    #[error("page_size must be between 1 and 999 (Graph's largest page of users), not {0}")]
    PageSize(u32),
    #[error(
        "{field} {url:?} is not a valid URL ({reason}); write e.g. https://login.microsoftonline.com \
         and https://graph.microsoft.com (no path)"
    )]
    Url {
        field: &'static str,
        url: String,
        reason: String,
    },
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
}
