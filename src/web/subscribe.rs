//! Keeping directories' change notifications pointed at this service (`rollcall subscribe`,
//! and `serve --public-url` every twelve hours and on a lifecycle event).
//!
//! A directory that can push its changes does so only through subscriptions that must be
//! created against a webhook its vendor can reach, and renewed before they expire (some last
//! under 30 days). One set per directory tenant, however many clients share it.

use std::sync::Arc;
use std::time::Duration;

use rollcall_core::Secret;
use rollcall_core::notify::{NotificationTarget, SubscriptionState};

use crate::config::Pipeline;

/// Renew subscriptions that expire within this long: three days leaves room for a service
/// that was down for a weekend.
pub const RENEW_BEFORE: Duration = Duration::from_secs(72 * 3600);

/// One directory's subscriptions after [`ensure_all`].
#[derive(Debug, Clone)]
pub struct Subscribed {
    pub pipeline: String,
    /// The first client whose directory this is.
    pub client: String,
    /// Every (pipeline index, client) whose directory this is: a notification on one of
    /// these subscriptions concerns them all.
    pub clients: Vec<(usize, String)>,
    pub states: Result<Vec<SubscriptionState>, String>,
}

/// Ensures the subscriptions of every directory that can notify, pointed at
/// `public_url/hooks/KIND`.
pub async fn ensure_all(
    pipelines: &[Arc<Pipeline>],
    public_url: &str,
    client_state: &Secret,
    renew_before: Duration,
) -> Vec<Subscribed> {
    let base = public_url.trim_end_matches('/');
    let mut done = std::collections::BTreeMap::new();
    let mut out: Vec<Subscribed> = Vec::new();
    for (index, pipeline) in pipelines.iter().enumerate() {
        for client in &pipeline.clients {
            let Some(feed) = client.directory.change_notifications() else {
                continue;
            };
            let tenant = client
                .directory
                .notifying_tenant()
                .unwrap_or(&client.name)
                .to_lowercase();
            if let Some(&at) = done.get(&(feed.webhook(), tenant.clone())) {
                let shared: &mut Subscribed = &mut out[at];
                shared.clients.push((index, client.name.clone()));
                continue;
            }
            done.insert((feed.webhook(), tenant), out.len());
            let url = format!("{base}/hooks/{}", feed.webhook());
            let target = NotificationTarget {
                notification_url: url.clone(),
                lifecycle_url: Some(url),
                client_state: client_state.clone(),
                renew_before,
            };
            let states = feed.ensure(&target).await.map_err(|e| e.to_string());
            out.push(Subscribed {
                pipeline: pipeline.name.clone(),
                client: client.name.clone(),
                clients: vec![(index, client.name.clone())],
                states,
            });
        }
    }
    out
}

/// Whether every subscription is in place.
pub fn all_ok(results: &[Subscribed]) -> bool {
    results.iter().all(|r| {
        r.states
            .as_ref()
            .is_ok_and(|s| s.iter().all(|s| s.error.is_none()))
    })
}
