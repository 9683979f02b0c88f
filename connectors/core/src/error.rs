//! The one error every remote system's client returns, classified for retry and exit codes.

use std::time::Duration;

/// What kind of failure a remote call met. The engine decides retries and exit codes from this
/// alone, so a connector maps its vendor's error shapes onto it once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteErrorKind {
    /// Credentials refused (401/403). Retrying will not help; the operator must fix the keys.
    Unauthorized,
    /// The object or account does not exist (404, or a lookup that found nothing).
    NotFound,
    /// The system refused the request's content (400/409/422); its message says why.
    Rejected,
    /// Rate limited; `retry_after` is what the server asked for, if it said.
    Throttled { retry_after: Option<Duration> },
    /// The server failed (5xx).
    Server { status: u16 },
    /// The request may not have reached the server (connect, DNS, timeout before sending).
    Transport,
    /// The request was sent but its answer was lost: a write may or may not have happened.
    ResponseLost,
    /// The server answered with something we could not read.
    Decode,
    /// The OAuth connection is gone: its refresh token was spent, expired or revoked, or it
    /// was never made. Only a person can fix it, by connecting again.
    ConnectionExpired,
    /// The object is no longer rollcall's to change (an invoice already sent, approved, paid
    /// or voided); the difference is for a person to settle.
    Conflict,
}

/// A failed call to a remote system, naming the system, the operation and what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{vendor}: {operation}: {message}")]
pub struct RemoteError {
    pub vendor: &'static str,
    pub operation: String,
    pub kind: RemoteErrorKind,
    pub message: String,
}

impl RemoteError {
    pub fn new(
        vendor: &'static str,
        operation: impl Into<String>,
        kind: RemoteErrorKind,
        message: impl Into<String>,
    ) -> Self {
        RemoteError {
            vendor,
            operation: operation.into(),
            kind,
            message: message.into(),
        }
    }

    /// Worth retrying: the same request may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            RemoteErrorKind::Throttled { .. }
                | RemoteErrorKind::Server { .. }
                | RemoteErrorKind::Transport
                | RemoteErrorKind::ResponseLost
        )
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self.kind {
            RemoteErrorKind::Throttled { retry_after } => retry_after,
            _ => None,
        }
    }

    /// A sentence telling the operator what to do next.
    pub fn hint(&self) -> &'static str {
        match self.kind {
            RemoteErrorKind::Unauthorized => {
                "check the API keys in the pipeline's target section (and that the member has access)"
            }
            RemoteErrorKind::NotFound => {
                "check the company identifier, agreement name and product identifiers in the pipeline"
            }
            RemoteErrorKind::Rejected => {
                "the billing system refused the data; its message says which field"
            }
            RemoteErrorKind::Throttled { .. } => {
                "the billing system kept rate-limiting us; run again later or lower the target's rate_limit"
            }
            RemoteErrorKind::Server { .. }
            | RemoteErrorKind::Transport
            | RemoteErrorKind::ResponseLost => {
                "the billing system is unreachable or failing; run again later: applied changes are not repeated"
            }
            RemoteErrorKind::Decode => {
                "the billing system answered in an unexpected shape; report this with the log"
            }
            RemoteErrorKind::ConnectionExpired => {
                "reconnect: run `rollcall connect PIPELINE` and approve access again; other clients are not affected"
            }
            RemoteErrorKind::Conflict => {
                "the object was finalised in the billing system; settle the difference by hand (a credit note or the next period)"
            }
        }
    }
}
