//! Change-notification subscriptions: Graph tells rollcall when users or groups change.
//!
//! **Why.** A delta read is cheap, but it only happens when rollcall runs. With a subscription
//! on `users` (and `groups`) Graph POSTs a small notification to rollcall's webhook whenever an
//! account is created, changed, disabled or deleted, so a sync can be started within minutes of
//! a hire or a leaver instead of at the next scheduled run. The notification only names the
//! object (`resourceData.id`); the sync itself still reads through delta, so a missed or
//! duplicated notification costs latency, never correctness.
//!
//! **What Graph demands** (Microsoft's "change notifications" documentation):
//! - creating a subscription makes Graph POST `notificationUrl?validationToken=…` (and the
//!   lifecycle URL's) and wait up to 10 s for a 200 `text/plain` echoing the token; until the
//!   receiver does, the create fails (400, `ValidationError`). So the receiver must be
//!   reachable from Microsoft *before* [`GraphDirectory::subscribe`] is called;
//! - subscriptions on directory resources live at most [`MAX_DIRECTORY_LIFETIME`] (41,760
//!   minutes, about 29 days) and must be renewed with a `PATCH` of `expirationDateTime` before
//!   they expire; an expired one is gone (renewal answers 404) and must be created again;
//! - every notification carries the subscription's `clientState`: the receiver compares it
//!   ([`crate::model::ChangeNotification::client_state_matches`]) and drops any that does not
//!   match. It is a shared secret, so it is held as a [`Secret`] and never logged.
//! - lifecycle events (`reauthorizationRequired`, `subscriptionRemoved`, `missed`) go to
//!   `lifecycleNotificationUrl`; the answer to each is to run [`GraphDirectory::ensure_subscriptions`]
//!   (and, for `missed`, a sync).
//!
//! **The receiver** (rollcall's webhook) answers two kinds of POST. One with a
//! `validationToken` query parameter is the handshake: answer 200, `Content-Type: text/plain`,
//! with the token URL-decoded as the body, within 10 s. Any other carries a
//! [`crate::model::ChangeNotificationCollection`]: answer 202 at once, drop every notification
//! whose `clientState` does not match, and only then start the work (a delta sync; a
//! `lifecycleEvent` calls for `ensure_subscriptions`). Graph gives up on a receiver that is slow
//! to acknowledge.
//!
//! **Permissions.** The app permissions the directory read already needs cover `users`
//! (User.Read.All); Graph's documentation asks for Group.Read.All for `groups` subscriptions.
//! A missing one is a 403, reported as `Unauthorized`.
//!
//! **Keeping them alive.** [`GraphDirectory::ensure_subscriptions`] is meant to run on a
//! schedule (daily is plenty against a 29-day lifetime): for each resource it finds this
//! webhook's subscription, leaves it alone while it has more than `renew_before` to live, renews
//! it when it has less, creates it when it is missing, and replaces it when it is gone or was
//! made with another change type, lifecycle URL or client state. Duplicates (two subscriptions
//! for the same webhook and resource, from a crash between create and bookkeeping) are deleted,
//! so each change is notified once. A second run right after the first writes nothing.
//!
//! Creates go through the core plumbing's reconcile-before-retry: after a lost answer the
//! subscriptions are listed, and one for the same webhook and resource with the exact expiry
//! that was asked for is adopted instead of creating a second.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, TimeDelta, Utc};
use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION};
use rollcall_core::http::Created;
use rollcall_core::{RemoteError, RemoteErrorKind, Secret};
use tracing::{info, warn};

use crate::client::{GraphDirectory, VENDOR, decode};
use crate::model::{ChangeSubscription, Page};

/// The longest a subscription on users or groups may live: 41,760 minutes (29 days).
pub const MAX_DIRECTORY_LIFETIME: Duration = Duration::from_secs(41_760 * 60);

/// What [`SubscriptionPlan::new`] asks for: the longest lifetime less a quarter of an hour, so
/// a clock a few minutes ahead of Microsoft's does not make Graph refuse the expiry.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs((41_760 - 15) * 60);

/// The changes rollcall cares about. Graph reports a new user or group as `updated`, and a
/// disabled or licence-changed one too, so `created` adds nothing.
pub const DEFAULT_CHANGE_TYPE: &str = "updated,deleted";

/// A subscription to create (`POST /subscriptions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRequest {
    /// `users`, `groups` or `groups/{id}/members`.
    pub resource: String,
    /// Comma-separated `created`, `updated`, `deleted`.
    pub change_type: String,
    /// Where Graph POSTs notifications (https in production; it must answer the validation).
    pub notification_url: String,
    /// Where Graph POSTs lifecycle events; validated like `notification_url` when given.
    pub lifecycle_notification_url: Option<String>,
    /// When it expires: in the future, at most [`MAX_DIRECTORY_LIFETIME`] from now.
    pub expiration: DateTime<Utc>,
    /// Echoed in every notification (at most 128 characters). Never logged.
    pub client_state: Secret,
}

/// A subscription as Graph reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphSubscription {
    pub id: String,
    pub resource: String,
    pub change_type: String,
    pub notification_url: String,
    pub lifecycle_notification_url: Option<String>,
    pub expiration: DateTime<Utc>,
    /// Graph may leave it out of listings.
    pub client_state: Option<Secret>,
    pub application_id: Option<String>,
    pub creator_id: Option<String>,
}

/// What [`GraphDirectory::ensure_subscriptions`] keeps alive: one subscription per resource,
/// all to the same webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionPlan {
    pub notification_url: String,
    pub lifecycle_notification_url: Option<String>,
    pub client_state: Secret,
    /// `users`, `groups`, `groups/{id}/members`; each is ensured on its own.
    pub resources: Vec<String>,
    /// Renew a subscription that expires within this long.
    pub renew_before: Duration,
    /// [`DEFAULT_CHANGE_TYPE`] unless changed.
    pub change_type: String,
    /// How long created and renewed subscriptions live; [`DEFAULT_LIFETIME`] unless changed,
    /// and never more than [`MAX_DIRECTORY_LIFETIME`].
    pub lifetime: Duration,
}

impl SubscriptionPlan {
    /// A plan with [`DEFAULT_CHANGE_TYPE`] and [`DEFAULT_LIFETIME`].
    pub fn new(
        notification_url: impl Into<String>,
        lifecycle_notification_url: Option<String>,
        client_state: Secret,
        resources: impl IntoIterator<Item = impl Into<String>>,
        renew_before: Duration,
    ) -> SubscriptionPlan {
        SubscriptionPlan {
            notification_url: notification_url.into(),
            lifecycle_notification_url,
            client_state,
            resources: resources.into_iter().map(Into::into).collect(),
            renew_before,
            change_type: DEFAULT_CHANGE_TYPE.to_owned(),
            lifetime: DEFAULT_LIFETIME,
        }
    }
}

/// What [`GraphDirectory::ensure_subscriptions`] did for one resource.
#[derive(Debug, Clone)]
pub struct SubscriptionOutcome {
    /// The resource as the plan names it.
    pub resource: String,
    pub result: Result<Ensured, RemoteError>,
}

/// A resource's subscription after [`GraphDirectory::ensure_subscriptions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ensured {
    pub action: SubscriptionAction,
    /// The live subscription's id.
    pub id: String,
    /// When it expires now.
    pub expires: DateTime<Utc>,
    /// Other subscriptions for the same webhook and resource that were deleted (duplicates,
    /// or the one a replacement replaced).
    pub removed: Vec<String>,
}

/// What was done to keep a resource subscribed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionAction {
    /// There was none: one was created.
    Created,
    /// The one there was could not be kept (gone when renewed, or made with another change
    /// type, lifecycle URL or client state): a new one was created.
    Recreated { previous_id: String },
    /// It was due to expire within `renew_before`: its expiry was moved (`PATCH`).
    Renewed,
    /// It had long enough to live: nothing was sent.
    Fresh,
}

impl GraphDirectory {
    /// Every subscription this app holds (`GET /subscriptions`, all pages).
    pub async fn subscriptions(&self) -> Result<Vec<GraphSubscription>, RemoteError> {
        let operation = "list subscriptions";
        let client = self.client(operation)?;
        let mut url = format!("{}/subscriptions", client.graph);
        let mut all = Vec::new();
        loop {
            let reply = client
                .authorized(async |auth| {
                    client
                        .http
                        .send(operation, || {
                            client
                                .http
                                .request(Method::GET, &url)
                                .header(AUTHORIZATION, auth.clone())
                                .header(ACCEPT, "application/json")
                        })
                        .await
                })
                .await?;
            let page: Page<ChangeSubscription> = decode(operation, &reply.body)?;
            for item in page.value {
                all.push(from_wire(operation, item)?);
            }
            match page.next_link {
                Some(next) => url = next,
                None => return Ok(all),
            }
        }
    }

    /// Creates a subscription (`POST /subscriptions`). Graph validates the notification URL
    /// (and the lifecycle URL) before answering, so this takes as long as the receiver does to
    /// echo the token; a receiver that does not is a `Rejected` error naming the validation.
    pub async fn subscribe(
        &self,
        request: &SubscriptionRequest,
    ) -> Result<GraphSubscription, RemoteError> {
        let operation = format!("subscribe to {}", request.resource);
        let client = self.client(&operation)?;
        // Whole milliseconds, so the expiry Graph echoes identifies this create (reconcile).
        let expiration = to_millis(request.expiration);
        let body = ChangeSubscription {
            resource: request.resource.clone(),
            change_type: request.change_type.clone(),
            notification_url: request.notification_url.clone(),
            lifecycle_notification_url: request.lifecycle_notification_url.clone(),
            expiration_date_time: expiration.to_rfc3339_opts(SecondsFormat::Millis, true),
            client_state: Some(request.client_state.expose().to_owned()),
            ..ChangeSubscription::default()
        };
        let url = format!("{}/subscriptions", client.graph);
        let created = client
            .authorized(async |auth| {
                client
                    .http
                    .send_create(
                        &operation,
                        || {
                            client
                                .http
                                .request(Method::POST, &url)
                                .header(AUTHORIZATION, auth.clone())
                                .header(ACCEPT, "application/json")
                                .json(&body)
                        },
                        async || {
                            let found = self.subscriptions().await?.into_iter().find(|s| {
                                same_target(s, &request.notification_url, &request.resource)
                                    && (s.expiration - expiration).abs() < TimeDelta::seconds(1)
                            });
                            Ok(found)
                        },
                    )
                    .await
            })
            .await
            .map_err(|error| explain_refusal(error, request))?;
        match created {
            Created::Sent(reply) => from_wire(
                &operation,
                decode::<ChangeSubscription>(&operation, &reply.body)?,
            ),
            Created::Found(found) => Ok(found),
        }
    }

    /// Moves a subscription's expiry (`PATCH /subscriptions/{id}`). A subscription that has
    /// expired or was removed answers `NotFound`: create it again.
    pub async fn renew(
        &self,
        id: &str,
        expiration: DateTime<Utc>,
    ) -> Result<GraphSubscription, RemoteError> {
        let operation = format!("renew subscription {id}");
        let client = self.client(&operation)?;
        let url = format!("{}/subscriptions/{}", client.graph, path_segment(id));
        let body = serde_json::json!({
            "expirationDateTime": to_millis(expiration).to_rfc3339_opts(SecondsFormat::Millis, true)
        });
        let reply = client
            .authorized(async |auth| {
                client
                    .http
                    .send(&operation, || {
                        client
                            .http
                            .request(Method::PATCH, &url)
                            .header(AUTHORIZATION, auth.clone())
                            .header(ACCEPT, "application/json")
                            .json(&body)
                    })
                    .await
            })
            .await?;
        from_wire(&operation, decode(&operation, &reply.body)?)
    }

    /// Deletes a subscription (`DELETE /subscriptions/{id}`): true when it was deleted, false
    /// when there was none by that id (already gone, or expired).
    pub async fn delete_subscription(&self, id: &str) -> Result<bool, RemoteError> {
        let operation = format!("delete subscription {id}");
        let client = self.client(&operation)?;
        let url = format!("{}/subscriptions/{}", client.graph, path_segment(id));
        let sent = client
            .authorized(async |auth| {
                client
                    .http
                    .send(&operation, || {
                        client
                            .http
                            .request(Method::DELETE, &url)
                            .header(AUTHORIZATION, auth.clone())
                    })
                    .await
            })
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(error) if error.kind == RemoteErrorKind::NotFound => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Keeps one subscription per resource of `plan` alive for `plan.notification_url` (see the
    /// module documentation): creates missing ones, renews those expiring within
    /// `plan.renew_before`, replaces gone or mismatched ones, deletes duplicates, and leaves
    /// the rest alone. Fails as a whole only when the subscriptions cannot be listed; each
    /// resource otherwise has its own result, so one refused resource does not stop the others.
    pub async fn ensure_subscriptions(
        &self,
        plan: &SubscriptionPlan,
    ) -> Result<Vec<SubscriptionOutcome>, RemoteError> {
        let existing = self.subscriptions().await?;
        let mut outcomes = Vec::with_capacity(plan.resources.len());
        let mut seen = BTreeSet::new();
        for resource in &plan.resources {
            // `users` and `/users` are one subscription, ensured once.
            if !seen.insert(normalize_resource(resource)) {
                continue;
            }
            let result = self.ensure_one(plan, resource, &existing).await;
            match &result {
                Ok(ensured) => info!(
                    resource = %resource,
                    id = %ensured.id,
                    action = ?ensured.action,
                    expires = %ensured.expires,
                    "Graph subscription ensured."
                ),
                Err(error) => {
                    warn!(resource = %resource, %error, "Graph subscription not ensured.")
                }
            }
            outcomes.push(SubscriptionOutcome {
                resource: resource.clone(),
                result,
            });
        }
        Ok(outcomes)
    }

    async fn ensure_one(
        &self,
        plan: &SubscriptionPlan,
        resource: &str,
        existing: &[GraphSubscription],
    ) -> Result<Ensured, RemoteError> {
        let now = Utc::now();
        let lifetime = TimeDelta::from_std(plan.lifetime.min(MAX_DIRECTORY_LIFETIME))
            .unwrap_or(TimeDelta::zero());
        let renew_before = TimeDelta::from_std(plan.renew_before).unwrap_or(TimeDelta::MAX);
        let mut candidates: Vec<&GraphSubscription> = existing
            .iter()
            .filter(|s| same_target(s, &plan.notification_url, resource))
            .collect();
        // The longest-lived compatible one is kept; the others go.
        candidates.sort_by_key(|s| std::cmp::Reverse(s.expiration));
        let keep = candidates
            .iter()
            .position(|s| compatible(s, plan))
            .map(|i| candidates.remove(i));
        let request = || SubscriptionRequest {
            resource: resource.to_owned(),
            change_type: plan.change_type.clone(),
            notification_url: plan.notification_url.clone(),
            lifecycle_notification_url: plan.lifecycle_notification_url.clone(),
            expiration: now + lifetime,
            client_state: plan.client_state.clone(),
        };
        let (action, live) = match keep {
            Some(current) if current.expiration - now > renew_before => {
                (SubscriptionAction::Fresh, (*current).clone())
            }
            Some(current) => match self.renew(&current.id, now + lifetime).await {
                Ok(renewed) => (SubscriptionAction::Renewed, renewed),
                Err(error) if error.kind == RemoteErrorKind::NotFound => (
                    SubscriptionAction::Recreated {
                        previous_id: current.id.clone(),
                    },
                    self.subscribe(&request()).await?,
                ),
                Err(error) => return Err(error),
            },
            None => {
                let created = self.subscribe(&request()).await?;
                match candidates.first() {
                    Some(previous) => (
                        SubscriptionAction::Recreated {
                            previous_id: previous.id.clone(),
                        },
                        created,
                    ),
                    None => (SubscriptionAction::Created, created),
                }
            }
        };
        let mut removed = Vec::new();
        for other in candidates {
            match self.delete_subscription(&other.id).await {
                Ok(_) => removed.push(other.id.clone()),
                // The live subscription is in place; a leftover only costs duplicate
                // notifications until the next run deletes it.
                Err(error) => {
                    warn!(id = %other.id, %error, "Could not delete a superseded Graph subscription.")
                }
            }
        }
        Ok(Ensured {
            action,
            id: live.id,
            expires: live.expiration,
            removed,
        })
    }
}

/// `users`, `/users` and `Users` name one resource.
fn normalize_resource(resource: &str) -> String {
    resource.trim().trim_start_matches('/').to_ascii_lowercase()
}

fn normalize_url(url: &str) -> &str {
    url.trim().trim_end_matches('/')
}

fn same_target(subscription: &GraphSubscription, notification_url: &str, resource: &str) -> bool {
    normalize_url(&subscription.notification_url) == normalize_url(notification_url)
        && normalize_resource(&subscription.resource) == normalize_resource(resource)
}

fn change_types(text: &str) -> BTreeSet<String> {
    text.split(',')
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Whether a subscription delivers what the plan asks for, where the plan asks for it, with
/// its client state (when Graph reports one).
fn compatible(subscription: &GraphSubscription, plan: &SubscriptionPlan) -> bool {
    change_types(&subscription.change_type) == change_types(&plan.change_type)
        && subscription
            .lifecycle_notification_url
            .as_deref()
            .map(normalize_url)
            == plan
                .lifecycle_notification_url
                .as_deref()
                .map(normalize_url)
        && subscription
            .client_state
            .as_ref()
            .is_none_or(|state| state == &plan.client_state)
}

fn to_millis(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or(at)
}

/// Graph writes `2026-01-01T00:00:00.1234567Z`; an offset-less time is taken as UTC.
fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|at| at.and_utc())
}

fn from_wire(operation: &str, wire: ChangeSubscription) -> Result<GraphSubscription, RemoteError> {
    let expiration = parse_time(&wire.expiration_date_time).ok_or_else(|| {
        RemoteError::new(
            VENDOR,
            operation,
            RemoteErrorKind::Decode,
            format!(
                "subscription {} has an unreadable expirationDateTime {:?}",
                wire.id, wire.expiration_date_time
            ),
        )
    })?;
    Ok(GraphSubscription {
        id: wire.id,
        resource: wire.resource,
        change_type: wire.change_type,
        notification_url: wire.notification_url,
        lifecycle_notification_url: wire.lifecycle_notification_url,
        expiration,
        client_state: wire.client_state.map(Secret::new),
        application_id: wire.application_id,
        creator_id: wire.creator_id,
    })
}

/// A subscription id is a GUID; anything else is escaped rather than trusted into the path.
fn path_segment(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Adds what to do to Graph's refusal of a create: the validation handshake and the expiry
/// bounds are the two ways a well-formed request is refused.
fn explain_refusal(mut error: RemoteError, request: &SubscriptionRequest) -> RemoteError {
    if error.kind == RemoteErrorKind::Rejected {
        if error.message.contains("ValidationError") || error.message.contains("validation") {
            error.message = format!(
                "{} (hint: {} must be reachable by Graph and answer POST ?validationToken=… \
                 within 10 s with 200, Content-Type text/plain and the token, URL-decoded, as \
                 the body)",
                error.message, request.notification_url
            );
        } else if error.message.contains("expiration") {
            error.message = format!(
                "{} (hint: expirationDateTime must be in the future and at most 41,760 minutes \
                 ahead for users and groups)",
                error.message
            );
        }
    }
    error
}

/// What rollcall's engine keeps alive for a Graph directory: one subscription on `users` and
/// one on `groups` (membership changes move seats too), both to the same webhook.
pub struct GraphChangeNotifications {
    directory: GraphDirectory,
}

impl std::fmt::Debug for GraphChangeNotifications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GraphChangeNotifications")
    }
}

impl GraphChangeNotifications {
    pub fn new(directory: GraphDirectory) -> Self {
        GraphChangeNotifications { directory }
    }
}

#[async_trait::async_trait(?Send)]
impl rollcall_core::notify::ChangeNotifications for GraphChangeNotifications {
    fn webhook(&self) -> &'static str {
        crate::webhook::SEGMENT
    }

    async fn ensure(
        &self,
        target: &rollcall_core::notify::NotificationTarget,
    ) -> Result<Vec<rollcall_core::notify::SubscriptionState>, RemoteError> {
        let plan = SubscriptionPlan::new(
            target.notification_url.clone(),
            target.lifecycle_url.clone(),
            target.client_state.clone(),
            ["users", "groups"],
            target.renew_before,
        );
        let outcomes = self.directory.ensure_subscriptions(&plan).await?;
        Ok(outcomes
            .into_iter()
            .map(|o| match o.result {
                Ok(ensured) => rollcall_core::notify::SubscriptionState {
                    resource: o.resource,
                    id: Some(ensured.id.clone()),
                    action: match ensured.action {
                        SubscriptionAction::Created => "created",
                        SubscriptionAction::Recreated { .. } => "recreated",
                        SubscriptionAction::Renewed => "renewed",
                        SubscriptionAction::Fresh => "fresh",
                    }
                    .to_owned(),
                    expires: Some(ensured.expires),
                    error: None,
                },
                Err(e) => rollcall_core::notify::SubscriptionState {
                    resource: o.resource,
                    id: None,
                    action: "failed".into(),
                    expires: None,
                    error: Some(e.to_string()),
                },
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscription(id: &str, resource: &str, expires: DateTime<Utc>) -> GraphSubscription {
        GraphSubscription {
            id: id.to_owned(),
            resource: resource.to_owned(),
            change_type: "deleted,updated".to_owned(),
            notification_url: "https://hook.example/graph/".to_owned(),
            lifecycle_notification_url: None,
            expiration: expires,
            client_state: Some(Secret::new("s3cret")),
            application_id: None,
            creator_id: None,
        }
    }

    #[test]
    fn graph_times_parse_with_seven_digits_or_no_offset() {
        let at = parse_time("2026-01-02T03:04:05.1234567Z").expect("time");
        assert_eq!(at.timestamp(), 1_767_323_045);
        assert_eq!(
            parse_time("2026-01-02T03:04:05").map(|t| t.timestamp()),
            Some(1_767_323_045)
        );
        assert!(parse_time("tomorrow").is_none());
    }

    #[test]
    fn targets_and_compatibility_ignore_spelling_but_not_meaning() {
        let plan = SubscriptionPlan::new(
            "https://hook.example/graph",
            None,
            Secret::new("s3cret"),
            ["users"],
            Duration::from_secs(3600),
        );
        let s = subscription("1", "/Users", Utc::now());
        assert!(same_target(&s, &plan.notification_url, "users"));
        assert!(!same_target(&s, &plan.notification_url, "groups"));
        assert!(compatible(&s, &plan), "change types compare as sets");
        let other_secret = SubscriptionPlan {
            client_state: Secret::new("rotated"),
            ..plan.clone()
        };
        assert!(!compatible(&s, &other_secret));
        let unreported = GraphSubscription {
            client_state: None,
            ..s.clone()
        };
        assert!(compatible(&unreported, &other_secret));
        let with_lifecycle = SubscriptionPlan {
            lifecycle_notification_url: Some("https://hook.example/life".to_owned()),
            ..plan
        };
        assert!(!compatible(&s, &with_lifecycle));
    }

    #[test]
    fn client_state_never_reaches_debug_output() {
        let request = SubscriptionRequest {
            resource: "users".to_owned(),
            change_type: DEFAULT_CHANGE_TYPE.to_owned(),
            notification_url: "https://hook.example".to_owned(),
            lifecycle_notification_url: None,
            expiration: Utc::now(),
            client_state: Secret::new("s3cret-state"),
        };
        let plan = SubscriptionPlan::new(
            "https://hook.example",
            None,
            Secret::new("s3cret-state"),
            ["users"],
            Duration::ZERO,
        );
        let mut s = subscription("1", "users", Utc::now());
        s.client_state = Some(Secret::new("s3cret-state"));
        let wire = ChangeSubscription {
            client_state: Some("s3cret-state".to_owned()),
            ..ChangeSubscription::default()
        };
        for text in [
            format!("{request:?}"),
            format!("{plan:?}"),
            format!("{s:?}"),
            format!("{wire:?}"),
        ] {
            assert!(!text.contains("s3cret-state"), "{text}");
        }
    }

    #[test]
    fn ids_are_escaped_into_the_path() {
        assert_eq!(
            path_segment("0000-abcd-../x"),
            "0000-abcd-%2E%2E%2Fx".to_owned()
        );
    }
}
