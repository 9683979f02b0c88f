//! Notifications: telling people when one is needed — a plan waits for approval, a sync
//! failed, a connection needs consent again, an approval was decided.
//!
//! A pipeline names its channels (`notify:`, `crate::config::notify`); each event goes to each
//! channel through one trait, [`Channel`]: an incoming webhook (Slack, Teams), email over SMTP,
//! or a service ticket on the client's company in a PSA. A delivery that fails for a reason
//! that may pass (a 5xx, a refused connection, a 429) is tried again with a growing wait; one
//! that cannot succeed (a 4xx, a bad address) is not. Nothing here ever fails a sync: an
//! undelivered notification is logged, named by channel kind, never by its address (a
//! webhook's address is its credential).
//!
//! Messages are made from what plans and errors already say, which by rollcall's rules hold no
//! secret; each carries a link to the approval in the console when `console_url` is set, or
//! the command to run.

mod email;
mod ticket;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rollcall_core::AccountRef;
use tracing::{info, warn};

use crate::config::Pipeline;
use crate::config::notify::{self as cfg, EventKind};
use crate::store::Store;

pub use email::Email;
pub use ticket::TicketChannel;
pub use webhook::{Webhook, WebhookStyle};

/// Something a person should know about one client of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub pipeline: String,
    pub client: String,
    /// One line.
    pub title: String,
    /// A paragraph: why, the numbers, what was decided.
    pub detail: String,
    /// The approval it is about.
    pub approval: Option<String>,
    /// The client's company in the billing system, when known (a ticket goes there).
    pub account: Option<AccountRef>,
    /// Where the client is billed, as the pipeline says: a ticket finds the company by it when
    /// the sync failed before the billing system was read.
    pub billed_as: Option<rollcall_core::BillingAccount>,
}

/// An event as sent: with where to act on it.
#[derive(Debug, Clone)]
pub struct Message {
    pub event: Event,
    /// The console page of the approval, when the pipeline says where the console is.
    pub link: Option<String>,
    /// What to do next, in words (a command to run).
    pub action: Option<String>,
}

impl Message {
    pub fn new(event: Event, console_url: Option<&str>) -> Message {
        let link = match (&event.approval, console_url) {
            // The console's own address (`…/console`) is taken for the service's, as people
            // copy it from the browser.
            (Some(id), Some(url)) => {
                let url = url.trim_end_matches('/');
                let base = url.strip_suffix("/console").unwrap_or(url);
                Some(format!("{base}/console/approvals/{id}"))
            }
            _ => None,
        };
        let action = match (event.kind, &event.approval) {
            (EventKind::Refused, Some(id)) => Some(format!(
                "Review it with `rollcall approvals`, then `rollcall approve {id}` or `rollcall reject {id} --reason …`."
            )),
            (EventKind::Reconnect, _) => Some(format!(
                "Run `rollcall connect` with pipeline `{}` and approve access again.",
                event.pipeline
            )),
            _ => None,
        };
        Message {
            event,
            link,
            action,
        }
    }

    /// The message as plain text: the title, the detail, the action and the link.
    pub fn text(&self) -> String {
        let mut out = format!("{}\n\n{}", self.event.title, self.event.detail);
        if let Some(a) = &self.action {
            out.push_str("\n\n");
            out.push_str(a);
        }
        if let Some(l) = &self.link {
            out.push_str("\n\nOpen: ");
            out.push_str(l);
        }
        out.push_str(&format!(
            "\n\n— rollcall, pipeline {}, client {}",
            self.event.pipeline, self.event.client
        ));
        out
    }

    /// Unique to this message: tickets are found again by it after a lost answer.
    pub fn reference(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(
            format!(
                "{}\n{}\n{}",
                self.event.title, self.event.detail, self.event.client
            )
            .as_bytes(),
        );
        let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
        match &self.event.approval {
            Some(id) => format!("rollcall {id} {hex}"),
            None => format!("rollcall {hex}"),
        }
    }
}

/// Why a delivery failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Undelivered {
    pub message: String,
    /// Worth trying again.
    pub transient: bool,
}

impl Undelivered {
    pub fn transient(message: impl Into<String>) -> Self {
        Undelivered {
            message: message.into(),
            transient: true,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Undelivered {
            message: message.into(),
            transient: false,
        }
    }
}

/// One place messages go.
#[async_trait]
pub trait Channel: Send + Sync {
    /// The channel's kind for logs (`slack`, `email`): never its address.
    fn kind(&self) -> &'static str;

    async fn deliver(&self, message: &Message) -> Result<(), Undelivered>;
}

/// How often and how patiently a message is tried.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    pub first_wait: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 4,
            first_wait: Duration::from_millis(500),
        }
    }
}

/// Delivers `message` through `channel`, trying again after transient failures with a wait
/// that doubles each time.
pub async fn deliver(
    channel: &dyn Channel,
    message: &Message,
    retry: Retry,
) -> Result<(), Undelivered> {
    let mut wait = retry.first_wait;
    let mut attempt = 1;
    loop {
        match channel.deliver(message).await {
            Ok(()) => return Ok(()),
            Err(e) if e.transient && attempt < retry.attempts => {
                warn!(channel = channel.kind(), attempt, error = %e, wait_ms = wait.as_millis() as u64, "A notification was not delivered; trying again.");
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The channels a pipeline names, ready to deliver.
pub fn channels(pipeline: &Pipeline, store: &Store) -> Vec<Arc<dyn Channel>> {
    pipeline
        .notify
        .channels
        .iter()
        .map(|c| -> Arc<dyn Channel> {
            match c {
                cfg::Channel::Slack { webhook } => {
                    Arc::new(Webhook::new(WebhookStyle::Slack, webhook.clone()))
                }
                cfg::Channel::Teams { webhook } => {
                    Arc::new(Webhook::new(WebhookStyle::Teams, webhook.clone()))
                }
                cfg::Channel::Email(e) => Arc::new(Email::new(e.clone())),
                cfg::Channel::Ticket { board } => {
                    Arc::new(TicketChannel::new(pipeline, store, board.clone()))
                }
            }
        })
        .collect()
}

/// Sends `event` to every channel of `pipeline` that wants its kind, each on its own: one
/// channel's failure does not keep the message from the others. Never fails; what could not
/// be delivered is logged.
pub async fn send(pipeline: &Pipeline, store: &Store, event: Event) {
    if !pipeline.notify.wants(event.kind) {
        return;
    }
    let message = Message::new(event, pipeline.notify.console_url.as_deref());
    let channels = channels(pipeline, store);
    let deliveries = channels.iter().map(|c| {
        let message = &message;
        async move {
            match deliver(c.as_ref(), message, Retry::default()).await {
                Ok(()) => {
                    info!(channel = c.kind(), client = %message.event.client, kind = ?message.event.kind, "Sent a notification.");
                }
                Err(e) => {
                    warn!(channel = c.kind(), client = %message.event.client, error = %e, "Could not deliver a notification.");
                }
            }
        }
    });
    futures::future::join_all(deliveries).await;
}
