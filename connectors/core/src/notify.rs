//! Change notifications a directory can send: what `rollcall subscribe` keeps alive.
//!
//! Some directories (Entra ID through Microsoft Graph) can tell rollcall when a person changes,
//! but only through a subscription that must be created against a reachable webhook and
//! renewed before it expires. The engine keeps them alive through this trait without knowing
//! whose they are; a directory that sends no notifications does not implement it.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::{RemoteError, Secret};

/// Where a directory's notifications are to be sent, and the secret they must carry.
#[derive(Debug, Clone)]
pub struct NotificationTarget {
    /// rollcall's webhook for this kind of directory (`https://…/hooks/graph`).
    pub notification_url: String,
    /// Where subscription lifecycle events go (usually the same webhook).
    pub lifecycle_url: Option<String>,
    /// Echoed in every notification; the webhook drops any without it.
    pub client_state: Secret,
    /// A subscription expiring within this long is renewed now.
    pub renew_before: Duration,
}

/// One resource's subscription after [`ChangeNotifications::ensure`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionState {
    /// What is watched (`users`, `groups`).
    pub resource: String,
    /// The subscription's id: notifications name it (`subscriptionId`).
    pub id: Option<String>,
    /// What was done: `created`, `recreated`, `renewed`, `fresh` (nothing needed), `failed`.
    pub action: String,
    pub expires: Option<DateTime<Utc>>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// A directory whose changes can be pushed to rollcall. Its future need not be `Send` (a
/// vendor client's paging rarely is): run it on the caller's task.
#[async_trait::async_trait(?Send)]
pub trait ChangeNotifications: Send + Sync {
    /// The last part of the webhook path notifications are sent to (`/hooks/{this}`).
    fn webhook(&self) -> &'static str;

    /// Creates, renews or replaces this directory's subscriptions so that they point at
    /// `target` and outlive `target.renew_before`. Writes nothing when all are fresh.
    async fn ensure(
        &self,
        target: &NotificationTarget,
    ) -> Result<Vec<SubscriptionState>, RemoteError>;
}
