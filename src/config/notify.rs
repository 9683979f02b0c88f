//! Whom a pipeline tells when a person is needed (`notify:` in a pipeline): a refused plan
//! waiting for approval, a failed sync, a connection that needs consent again, a decision.
//!
//! Channels are written here and delivered by `src/notify`. Webhook addresses and SMTP
//! passwords are credentials (anyone holding a Slack or Teams incoming-webhook address can post
//! to the channel), so they are `Secret` references like the target's keys.

use rollcall_core::Secret;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::At;

/// Where a pipeline's notifications go.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    /// The address `rollcall serve` is reached at by people (e.g.
    /// `https://rollcall.example.net`): notifications about an approval link to
    /// `CONSOLE_URL/console/approvals/ID`. Without it they name the command to run.
    #[serde(default)]
    pub console_url: Option<At<String>>,
    /// Which events are sent. Default: all of them.
    #[serde(default)]
    pub events: Option<Vec<EventKind>>,
    /// Where they are sent; each event goes to every channel.
    #[serde(default)]
    pub channels: Vec<RawChannel>,
}

/// What happened that a person should know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A plan was refused (by a guard or the approval policy) and waits for approval.
    Refused,
    /// A client's sync failed: its directory or billing system, or its rules.
    Failed,
    /// An OAuth connection is gone and only `rollcall connect` can bring it back.
    Reconnect,
    /// An approval was approved, rejected, superseded or expired.
    Approval,
}

/// One place notifications go.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RawChannel {
    /// A Slack incoming webhook.
    Slack {
        /// The webhook's address, as a secret reference (`${SLACK_WEBHOOK_URL}`).
        webhook: Secret,
    },
    /// A Microsoft Teams incoming webhook (a Workflows "post to a channel when a webhook
    /// request is received" address).
    Teams {
        /// The webhook's address, as a secret reference (`${TEAMS_WEBHOOK_URL}`).
        webhook: Secret,
    },
    /// Email through an SMTP server.
    Email(EmailChannel),
    /// A service ticket on the client's company in the billing system (a PSA's service desk), on the
    /// board named.
    Ticket {
        /// The service board tickets are opened on (e.g. `Billing`).
        board: String,
    },
}

/// Email through an SMTP server.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailChannel {
    /// The SMTP server's host name.
    pub host: String,
    /// Its port. Default: 587 for `starttls`, 465 for `tls`, 25 for `none`.
    #[serde(default)]
    pub port: Option<u16>,
    /// How the connection is protected: `starttls` (the default), `tls` (implicit TLS) or
    /// `none` (only for a relay on the same host or a test server).
    #[serde(default)]
    pub security: SmtpSecurity,
    /// The user to sign in as, if the server asks.
    #[serde(default)]
    pub username: Option<String>,
    /// Its password, as a secret reference.
    #[serde(default)]
    pub password: Option<Secret>,
    /// The sender (`rollcall <billing@msp.example>`).
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    #[default]
    Starttls,
    Tls,
    None,
}

/// The channels as the engine uses them.
#[derive(Debug, Clone, Default)]
pub struct Notify {
    pub console_url: Option<String>,
    /// The events sent; empty means all.
    pub events: Vec<EventKind>,
    pub channels: Vec<Channel>,
}

/// A channel, checked.
#[derive(Debug, Clone)]
pub enum Channel {
    Slack { webhook: Secret },
    Teams { webhook: Secret },
    Email(EmailChannel),
    Ticket { board: String },
}

impl Notify {
    /// Whether `kind` is sent at all.
    pub fn wants(&self, kind: EventKind) -> bool {
        !self.channels.is_empty() && (self.events.is_empty() || self.events.contains(&kind))
    }
}

impl From<RawNotify> for Notify {
    fn from(raw: RawNotify) -> Self {
        Notify {
            console_url: raw
                .console_url
                .map(|u| u.value.trim().trim_end_matches('/').to_owned())
                .filter(|u| !u.is_empty()),
            events: raw.events.unwrap_or_default(),
            channels: raw
                .channels
                .into_iter()
                .map(|c| match c {
                    RawChannel::Slack { webhook } => Channel::Slack { webhook },
                    RawChannel::Teams { webhook } => Channel::Teams { webhook },
                    RawChannel::Email(e) => Channel::Email(e),
                    RawChannel::Ticket { board } => Channel::Ticket { board },
                })
                .collect(),
        }
    }
}

/// What serde cannot check: a console address a link can be made from, an email with
/// somewhere to go, a board with a name.
pub(super) fn check(path: &std::path::Path, raw: &RawNotify) -> Vec<super::ConfigError> {
    let mut errors = Vec::new();
    if let Some(url) = &raw.console_url {
        let u = url.value.trim();
        if !(u.starts_with("https://") || u.starts_with("http://")) {
            errors.push(super::ConfigError::new(
                path,
                url.pos,
                format!("notify.console_url `{u}` is not an http(s) address"),
                "write the address people open rollcall's console at, e.g. https://rollcall.example.net",
            ));
        }
    }
    for channel in &raw.channels {
        match channel {
            RawChannel::Email(e) if e.to.is_empty() || e.from.trim().is_empty() => {
                errors.push(super::ConfigError::new(
                    path,
                    super::Pos::default(),
                    format!(
                        "notify: the email channel through {} has no sender or no recipient",
                        e.host
                    ),
                    "give `from:` and at least one address in `to:`",
                ));
            }
            RawChannel::Ticket { board } if board.trim().is_empty() => {
                errors.push(super::ConfigError::new(
                    path,
                    super::Pos::default(),
                    "notify: a ticket channel names no board",
                    "write the service board tickets are opened on, e.g. `ticket: { board: Billing }`",
                ));
            }
            _ => {}
        }
    }
    errors
}
