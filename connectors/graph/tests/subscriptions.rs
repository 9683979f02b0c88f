//! Change-notification subscriptions against the Graph sandbox, with a real receiver on
//! 127.0.0.1: the validation handshake (echoed, refused, too slow), expiry bounds,
//! `ensure_subscriptions` (create, idempotent, renew, recreate, replace, deduplicate), change
//! notifications from user and group changes, and lifecycle events.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{TimeDelta, Utc};
use rollcall_core::http::RetryPolicy;
use rollcall_core::{RemoteErrorKind, Secret};
use rollcall_graph::model::{ChangeNotification, ChangeNotificationCollection};
use rollcall_graph::sandbox::user;
use rollcall_graph::subscriptions::{DEFAULT_CHANGE_TYPE, MAX_DIRECTORY_LIFETIME};
use rollcall_graph::{
    Ensured, GraphDirectory, Sandbox, Seed, SubscriptionAction, SubscriptionOutcome,
    SubscriptionPlan, SubscriptionRequest,
};
use tokio::sync::mpsc;

const STATE: &str = "client-state-7f3a9c";

// ---------------------------------------------------------------------------------------------
// A webhook receiver

/// How the receiver answers the validation handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handshake {
    /// 200 text/plain with the token: what Graph requires.
    Echo,
    /// 200 with something else as the body.
    WrongBody,
    /// 200 and the token, but as JSON.
    Json,
    /// 404, as an endpoint that does not exist.
    Missing,
    /// Echoes, but only after this long.
    Slow(Duration),
}

struct Receiver {
    url: String,
    handshake: Arc<Mutex<Handshake>>,
    /// Validation requests received, per path.
    validations: Arc<Mutex<Vec<String>>>,
    /// Notifications answered with this status.
    notification_status: Arc<Mutex<StatusCode>>,
    received: mpsc::UnboundedReceiver<(String, ChangeNotification)>,
    posts: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct ReceiverState {
    handshake: Arc<Mutex<Handshake>>,
    validations: Arc<Mutex<Vec<String>>>,
    notification_status: Arc<Mutex<StatusCode>>,
    sender: mpsc::UnboundedSender<(String, ChangeNotification)>,
    posts: Arc<AtomicUsize>,
}

async fn receive(
    State(state): State<ReceiverState>,
    OriginalUri(uri): OriginalUri,
    Query(query): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    state.posts.fetch_add(1, Ordering::SeqCst);
    let path = uri.path().to_owned();
    if let Some((_, token)) = query.iter().find(|(k, _)| k == "validationToken") {
        state
            .validations
            .lock()
            .expect("validations")
            .push(path.clone());
        let mode = *state.handshake.lock().expect("mode");
        return match mode {
            Handshake::Echo => {
                ([(header::CONTENT_TYPE, "text/plain")], token.clone()).into_response()
            }
            Handshake::WrongBody => {
                ([(header::CONTENT_TYPE, "text/plain")], "hello").into_response()
            }
            Handshake::Json => axum::Json(token.clone()).into_response(),
            Handshake::Missing => StatusCode::NOT_FOUND.into_response(),
            Handshake::Slow(wait) => {
                tokio::time::sleep(wait).await;
                ([(header::CONTENT_TYPE, "text/plain")], token.clone()).into_response()
            }
        };
    }
    let Ok(collection) = serde_json::from_slice::<ChangeNotificationCollection>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    for notification in collection.value {
        let _ = state.sender.send((path.clone(), notification));
    }
    let status = *state.notification_status.lock().expect("status");
    status.into_response()
}

impl Receiver {
    async fn start() -> Receiver {
        let (sender, received) = mpsc::unbounded_channel();
        let state = ReceiverState {
            handshake: Arc::new(Mutex::new(Handshake::Echo)),
            validations: Arc::new(Mutex::new(Vec::new())),
            notification_status: Arc::new(Mutex::new(StatusCode::ACCEPTED)),
            sender,
            posts: Arc::new(AtomicUsize::new(0)),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().fallback(receive).with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url: format!("http://{addr}"),
            handshake: state.handshake,
            validations: state.validations,
            notification_status: state.notification_status,
            received,
            posts: state.posts,
        }
    }

    fn hook(&self) -> String {
        format!("{}/graph/notify", self.url)
    }

    fn lifecycle(&self) -> String {
        format!("{}/graph/lifecycle", self.url)
    }

    fn set_handshake(&self, mode: Handshake) {
        *self.handshake.lock().expect("mode") = mode;
    }

    fn validations(&self) -> Vec<String> {
        self.validations.lock().expect("validations").clone()
    }

    /// The next notification, or a panic after a few seconds.
    async fn next(&mut self) -> (String, ChangeNotification) {
        tokio::time::timeout(Duration::from_secs(5), self.received.recv())
            .await
            .expect("a notification within 5 s")
            .expect("receiver open")
    }

    /// Nothing more arrives within a moment.
    async fn assert_quiet(&mut self) {
        if let Ok(Some((path, n))) =
            tokio::time::timeout(Duration::from_millis(400), self.received.recv()).await
        {
            panic!("unexpected notification to {path}: {n:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(5),
    }
}

fn directory(sandbox: &Sandbox) -> GraphDirectory {
    GraphDirectory::with_retry(&sandbox.config(), fast_retry()).expect("directory")
}

fn request(receiver: &Receiver, resource: &str, expires_in: TimeDelta) -> SubscriptionRequest {
    SubscriptionRequest {
        resource: resource.to_owned(),
        change_type: DEFAULT_CHANGE_TYPE.to_owned(),
        notification_url: receiver.hook(),
        lifecycle_notification_url: None,
        expiration: Utc::now() + expires_in,
        client_state: Secret::new(STATE),
    }
}

fn plan(receiver: &Receiver, resources: &[&str]) -> SubscriptionPlan {
    SubscriptionPlan::new(
        receiver.hook(),
        None,
        Secret::new(STATE),
        resources.iter().copied(),
        Duration::from_secs(3 * 24 * 3600),
    )
}

fn ensured(outcomes: &[SubscriptionOutcome], resource: &str) -> Ensured {
    let outcome = outcomes
        .iter()
        .find(|o| o.resource == resource)
        .unwrap_or_else(|| panic!("no outcome for {resource}"));
    match &outcome.result {
        Ok(ensured) => ensured.clone(),
        Err(error) => panic!("{resource} not ensured: {error}"),
    }
}

fn close_to(actual: chrono::DateTime<Utc>, expected: chrono::DateTime<Utc>) -> bool {
    (actual - expected).abs() < TimeDelta::seconds(30)
}

// ---------------------------------------------------------------------------------------------
// Create, read, renew, delete

#[tokio::test]
async fn a_subscription_is_created_once_the_receiver_echoes_the_validation_token() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let receiver = Receiver::start().await;
    let graph = directory(&sandbox);
    let mut asked = request(&receiver, "users", TimeDelta::days(2));
    asked.lifecycle_notification_url = Some(receiver.lifecycle());

    let made = graph.subscribe(&asked).await.expect("subscribe");
    assert_eq!(made.resource, "users");
    assert_eq!(made.change_type, DEFAULT_CHANGE_TYPE);
    assert_eq!(made.notification_url, receiver.hook());
    assert_eq!(
        made.lifecycle_notification_url.as_deref(),
        Some(receiver.lifecycle().as_str())
    );
    assert!(close_to(made.expiration, asked.expiration));
    assert_eq!(made.client_state, Some(Secret::new(STATE)));
    assert_eq!(made.application_id, Some(sandbox.client_id()));
    assert!(made.creator_id.is_some());
    assert_eq!(
        receiver.validations(),
        vec!["/graph/notify".to_owned(), "/graph/lifecycle".to_owned()],
        "both URLs are validated before the create is answered"
    );

    let listed = graph.subscriptions().await.expect("list");
    assert_eq!(listed, vec![made.clone()]);
    assert_eq!(sandbox.subscriptions().len(), 1);

    let later = Utc::now() + TimeDelta::days(20);
    let renewed = graph.renew(&made.id, later).await.expect("renew");
    assert!(close_to(renewed.expiration, later));
    assert_eq!(renewed.id, made.id);

    assert!(graph.delete_subscription(&made.id).await.expect("delete"));
    assert!(!graph.delete_subscription(&made.id).await.expect("again"));
    assert!(graph.subscriptions().await.expect("list").is_empty());
    let gone = graph
        .renew(&made.id, later)
        .await
        .expect_err("renewing a deleted subscription");
    assert_eq!(gone.kind, RemoteErrorKind::NotFound);
}

#[tokio::test]
async fn a_receiver_that_does_not_echo_the_token_fails_the_create_clearly() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let receiver = Receiver::start().await;
    let graph = directory(&sandbox);
    sandbox.set_validation_timeout(Duration::from_millis(300));

    for mode in [
        Handshake::WrongBody,
        Handshake::Json,
        Handshake::Missing,
        Handshake::Slow(Duration::from_secs(2)),
    ] {
        receiver.set_handshake(mode);
        let error = graph
            .subscribe(&request(&receiver, "users", TimeDelta::days(1)))
            .await
            .expect_err("the handshake must fail");
        assert_eq!(error.kind, RemoteErrorKind::Rejected, "{mode:?}: {error}");
        assert!(error.message.starts_with("400"), "{mode:?}: {error}");
        assert!(
            error.message.contains("ValidationError"),
            "{mode:?}: {error}"
        );
        assert!(
            error.message.contains("validationToken") && error.message.contains(&receiver.hook()),
            "the hint says what the receiver must do: {error}"
        );
        assert!(
            !error.to_string().contains(STATE),
            "no client state in errors"
        );
    }
    assert!(sandbox.subscriptions().is_empty(), "nothing was stored");

    // A lifecycle URL that does not answer fails the create too.
    receiver.set_handshake(Handshake::Echo);
    let mut asked = request(&receiver, "users", TimeDelta::days(1));
    asked.lifecycle_notification_url = Some("http://127.0.0.1:9/nothing-here".to_owned());
    let error = graph.subscribe(&asked).await.expect_err("lifecycle URL");
    assert!(error.message.contains("ValidationError"), "{error}");
    assert!(sandbox.subscriptions().is_empty());

    receiver.set_handshake(Handshake::Echo);
    graph
        .subscribe(&request(&receiver, "users", TimeDelta::days(1)))
        .await
        .expect("an echoing receiver is accepted");
}

#[tokio::test]
async fn expiry_bounds_and_bad_requests_are_refused_with_400() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let receiver = Receiver::start().await;
    let graph = directory(&sandbox);
    let max = TimeDelta::from_std(MAX_DIRECTORY_LIFETIME).expect("delta");

    for (what, expires_in) in [
        ("in the past", TimeDelta::minutes(-5)),
        ("beyond 41,760 minutes", max + TimeDelta::minutes(5)),
    ] {
        let error = graph
            .subscribe(&request(&receiver, "users", expires_in))
            .await
            .expect_err(what);
        assert_eq!(error.kind, RemoteErrorKind::Rejected, "{what}: {error}");
        assert!(error.message.starts_with("400"), "{what}: {error}");
        assert!(error.message.contains("expiration"), "{what}: {error}");
        assert!(error.message.contains("41,760 minutes"), "hint: {error}");
    }
    assert!(
        receiver.validations().is_empty(),
        "a refused request is not validated"
    );

    let mut bad_type = request(&receiver, "users", TimeDelta::days(1));
    bad_type.change_type = "updated,renamed".to_owned();
    let error = graph.subscribe(&bad_type).await.expect_err("change type");
    assert!(error.message.contains("changeType"), "{error}");

    let error = graph
        .subscribe(&request(&receiver, "devices", TimeDelta::days(1)))
        .await
        .expect_err("resource");
    assert!(error.message.starts_with("400"), "{error}");

    let error = graph
        .subscribe(&request(
            &receiver,
            "groups/no-such-group/members",
            TimeDelta::days(1),
        ))
        .await
        .expect_err("unknown group");
    assert!(error.message.starts_with("400"), "{error}");

    // Just inside the bound is accepted; a renewal beyond it is refused and changes nothing.
    let made = graph
        .subscribe(&request(&receiver, "users", max - TimeDelta::minutes(1)))
        .await
        .expect("the longest lifetime is accepted");
    let error = graph
        .renew(&made.id, Utc::now() + max + TimeDelta::hours(1))
        .await
        .expect_err("renewal beyond the bound");
    assert_eq!(error.kind, RemoteErrorKind::Rejected);
    assert!(error.message.contains("41760 minutes"), "{error}");
    let error = graph
        .renew(&made.id, Utc::now() - TimeDelta::hours(1))
        .await
        .expect_err("renewal into the past");
    assert_eq!(error.kind, RemoteErrorKind::Rejected);
    assert!(close_to(
        graph.subscriptions().await.expect("list")[0].expiration,
        made.expiration
    ));
}

#[tokio::test]
async fn subscription_calls_sign_in_again_after_a_revoked_token_and_retry_throttling() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let receiver = Receiver::start().await;
    let graph = directory(&sandbox);
    graph.subscriptions().await.expect("first list");
    sandbox.revoke_tokens();
    sandbox.throttle("/subscriptions", 1, 0);
    let made = graph
        .subscribe(&request(&receiver, "users", TimeDelta::days(1)))
        .await
        .expect("subscribe after a revoked token and a 429");
    assert_eq!(sandbox.tokens_issued(), 2);
    assert_eq!(sandbox.subscriptions().len(), 1);
    assert_eq!(sandbox.subscriptions()[0].id, made.id);
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_is_adopted_not_repeated() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let receiver = Receiver::start().await;
    let graph = directory(&sandbox);
    sandbox.lose_answers("/subscriptions", 1);
    let made = graph
        .subscribe(&request(&receiver, "users", TimeDelta::days(1)))
        .await
        .expect("the landed create is found");
    let stored = sandbox.subscriptions();
    assert_eq!(stored.len(), 1, "created once");
    assert_eq!(stored[0].id, made.id);
    assert_eq!(receiver.validations().len(), 1, "validated once");
}

#[tokio::test]
async fn subscriptions_need_a_valid_token_like_every_graph_call() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let url = format!("{}/v1.0/subscriptions", sandbox.url());
    for request in [
        http.get(&url),
        http.post(&url).json(&serde_json::json!({})),
        http.patch(format!("{url}/x")).bearer_auth("forged"),
        http.delete(format!("{url}/x")).bearer_auth("forged"),
    ] {
        let answer = request.send().await.expect("answer");
        assert_eq!(answer.status(), 401);
        let body: serde_json::Value = answer.json().await.expect("json");
        assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    }
}

// ---------------------------------------------------------------------------------------------
// ensure_subscriptions

#[tokio::test]
async fn ensure_creates_then_a_second_run_writes_nothing() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let receiver = Receiver::start().await;
    let graph = directory(&sandbox);
    let plan = plan(&receiver, &["users", "groups"]);

    let first = graph.ensure_subscriptions(&plan).await.expect("ensure");
    assert_eq!(first.len(), 2);
    let users = ensured(&first, "users");
    let groups = ensured(&first, "groups");
    assert_eq!(users.action, SubscriptionAction::Created);
    assert_eq!(groups.action, SubscriptionAction::Created);
    let lifetime = TimeDelta::from_std(plan.lifetime).expect("delta");
    assert!(close_to(users.expires, Utc::now() + lifetime));
    assert!(users.expires <= Utc::now() + TimeDelta::from_std(MAX_DIRECTORY_LIFETIME).expect("d"));
    assert_eq!(sandbox.subscriptions().len(), 2);

    sandbox.reset_counters();
    let validations = receiver.validations().len();
    let second = graph.ensure_subscriptions(&plan).await.expect("again");
    for (resource, before) in [("users", &users), ("groups", &groups)] {
        let now = ensured(&second, resource);
        assert_eq!(now.action, SubscriptionAction::Fresh, "{resource}");
        assert_eq!(now.id, before.id);
        assert_eq!(now.expires, before.expires);
        assert!(now.removed.is_empty());
    }
    assert_eq!(
        sandbox.request_log(),
        vec!["/subscriptions".to_owned()],
        "one list, no writes"
    );
    assert_eq!(receiver.validations().len(), validations);
}

#[tokio::test]
async fn ensure_renews_only_the_subscription_near_expiry() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let receiver = Receiver::start().await;
    let graph = directory(&sandbox);
    let plan = plan(&receiver, &["users", "groups"]);
    let first = graph.ensure_subscriptions(&plan).await.expect("ensure");
    let users = ensured(&first, "users");
    let groups = ensured(&first, "groups");

    // A day left, with renew_before three days: due.
    assert!(sandbox.set_subscription_expiry(&users.id, Utc::now() + TimeDelta::days(1)));
    let second = graph.ensure_subscriptions(&plan).await.expect("ensure");
    let renewed = ensured(&second, "users");
    assert_eq!(renewed.action, SubscriptionAction::Renewed);
    assert_eq!(renewed.id, users.id, "renewed in place");
    let lifetime = TimeDelta::from_std(plan.lifetime).expect("delta");
    assert!(close_to(renewed.expires, Utc::now() + lifetime));
    let stored = sandbox
        .subscriptions()
        .into_iter()
        .find(|s| s.id == users.id)
        .expect("still there");
    assert!(
        stored
            .expiration_date_time
            .starts_with(&renewed.expires.format("%Y-%m-%dT%H:%M").to_string())
    );
    assert_eq!(ensured(&second, "groups").action, SubscriptionAction::Fresh);
    assert_eq!(ensured(&second, "groups").id, groups.id);
}

#[tokio::test]
async fn ensure_recreates_subscriptions_that_are_gone() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let receiver = Receiver::start().await;
    let graph = directory(&sandbox);
    let plan = plan(&receiver, &["users"]);
    let first = ensured(
        &graph.ensure_subscriptions(&plan).await.expect("1"),
        "users",
    );

    // Removed on Graph's side: not listed any more, so created again.
    assert!(sandbox.remove_subscription(&first.id));
    let second = ensured(
        &graph.ensure_subscriptions(&plan).await.expect("2"),
        "users",
    );
    assert_eq!(second.action, SubscriptionAction::Created);
    assert_ne!(second.id, first.id);

    // Expired: gone as well.
    assert!(sandbox.expire_subscription(&second.id));
    let third = ensured(
        &graph.ensure_subscriptions(&plan).await.expect("3"),
        "users",
    );
    assert_eq!(third.action, SubscriptionAction::Created);
    assert_ne!(third.id, second.id);
    assert_eq!(sandbox.subscriptions().len(), 1);

    // Listed, but gone by the time it is renewed (404 on the PATCH): replaced.
    assert!(sandbox.set_subscription_expiry(&third.id, Utc::now() + TimeDelta::hours(2)));
    sandbox.fail_with(&format!("/subscriptions/{}", third.id), 1, 404);
    let fourth = ensured(
        &graph.ensure_subscriptions(&plan).await.expect("4"),
        "users",
    );
    assert_eq!(
        fourth.action,
        SubscriptionAction::Recreated {
            previous_id: third.id.clone()
        }
    );
    assert_ne!(fourth.id, third.id);

    // The sandbox still held the old one (only its renewal was refused): a duplicate, which
    // the next run deletes, keeping the longer-lived one.
    assert_eq!(sandbox.subscriptions().len(), 2);
    let fifth = ensured(
        &graph.ensure_subscriptions(&plan).await.expect("5"),
        "users",
    );
    assert_eq!(fifth.action, SubscriptionAction::Fresh);
    assert_eq!(fifth.id, fourth.id);
    assert_eq!(fifth.removed, vec![third.id.clone()]);
    assert_eq!(sandbox.subscriptions().len(), 1);
}

#[tokio::test]
async fn ensure_replaces_a_subscription_made_with_another_client_state() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let receiver = Receiver::start().await;
    let graph = directory(&sandbox);
    let old = ensured(
        &graph
            .ensure_subscriptions(&plan(&receiver, &["users"]))
            .await
            .expect("1"),
        "users",
    );
    let rotated = SubscriptionPlan {
        client_state: Secret::new("rotated-state"),
        ..plan(&receiver, &["users"])
    };
    let new = ensured(
        &graph.ensure_subscriptions(&rotated).await.expect("2"),
        "users",
    );
    assert_eq!(
        new.action,
        SubscriptionAction::Recreated {
            previous_id: old.id.clone()
        }
    );
    assert_eq!(new.removed, vec![old.id.clone()]);
    let left = sandbox.subscriptions();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].client_state.as_deref(), Some("rotated-state"));
}

#[tokio::test]
async fn a_resource_named_twice_is_subscribed_once() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let receiver = Receiver::start().await;
    let graph = directory(&sandbox);
    let outcomes = graph
        .ensure_subscriptions(&plan(&receiver, &["users", "/Users"]))
        .await
        .expect("ensure");
    assert_eq!(outcomes.len(), 1);
    assert_eq!(sandbox.subscriptions().len(), 1);
}

#[tokio::test]
async fn ensure_reports_each_resource_on_its_own() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let receiver = Receiver::start().await;
    let graph = directory(&sandbox);
    let outcomes = graph
        .ensure_subscriptions(&plan(&receiver, &["users", "printers"]))
        .await
        .expect("ensure");
    assert_eq!(
        ensured(&outcomes, "users").action,
        SubscriptionAction::Created
    );
    let printers = outcomes
        .iter()
        .find(|o| o.resource == "printers")
        .expect("printers");
    let error = printers.result.as_ref().expect_err("unsupported resource");
    assert_eq!(error.kind, RemoteErrorKind::Rejected);

    // A receiver that stops validating fails the creates, not the listing.
    receiver.set_handshake(Handshake::Missing);
    let outcomes = graph
        .ensure_subscriptions(&plan(&receiver, &["users", "groups"]))
        .await
        .expect("ensure");
    assert_eq!(
        ensured(&outcomes, "users").action,
        SubscriptionAction::Fresh
    );
    let groups = outcomes.iter().find(|o| o.resource == "groups").expect("g");
    let error = groups.result.as_ref().expect_err("validation fails");
    assert!(error.message.contains("ValidationError"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// Notifications

#[tokio::test]
async fn user_changes_are_notified_with_the_client_state_and_resource() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let mut receiver = Receiver::start().await;
    let graph = directory(&sandbox);
    let users = ensured(
        &graph
            .ensure_subscriptions(&plan(&receiver, &["users"]))
            .await
            .expect("ensure"),
        "users",
    );
    let ada = sandbox.users()[0].id.clone();

    assert!(sandbox.disable_user(&ada));
    let (path, n) = receiver.next().await;
    assert_eq!(path, "/graph/notify");
    assert_eq!(n.subscription_id, users.id);
    assert!(n.client_state_matches(STATE));
    assert!(!n.client_state_matches("something else"));
    assert_eq!(n.change_type.as_deref(), Some("updated"));
    assert_eq!(n.resource, Some(format!("Users/{ada}")));
    let data = n.resource_data.clone().expect("resourceData");
    assert_eq!(data.id.as_deref(), Some(ada.as_str()));
    assert_eq!(data.odata_type.as_deref(), Some("#Microsoft.Graph.User"));
    assert_eq!(data.odata_id, Some(format!("Users/{ada}")));
    assert!(n.tenant_id.is_some());
    assert!(n.subscription_expiration_date_time.is_some());
    assert!(n.lifecycle_event.is_none());
    assert!(
        !format!("{n:?}").contains(STATE),
        "Debug hides the client state"
    );

    // A hire is reported as `updated`, as Graph does; a deletion as `deleted`.
    let hire = sandbox.add_user(user("", "Katherine", "Johnson", "acme.example", &[]));
    let (_, n) = receiver.next().await;
    assert_eq!(n.change_type.as_deref(), Some("updated"));
    assert_eq!(n.resource_data.and_then(|d| d.id), Some(hire.clone()));
    assert!(sandbox.delete_user(&hire));
    let (_, n) = receiver.next().await;
    assert_eq!(n.change_type.as_deref(), Some("deleted"));
    assert_eq!(n.resource, Some(format!("Users/{hire}")));

    // Group changes do not reach a users subscription.
    let group = sandbox.group_id("Acme Staff").expect("group");
    assert!(sandbox.remove_member(&group, &ada));
    receiver.assert_quiet().await;
    assert_eq!(sandbox.notifications_delivered(), 3);
    assert_eq!(sandbox.notification_failures(), 0);

    // An expired subscription is told nothing.
    assert!(sandbox.expire_subscription(&users.id));
    assert!(sandbox.assign_license(&ada, "SPB"));
    receiver.assert_quiet().await;
    assert_eq!(sandbox.notifications_delivered(), 3);
}

#[tokio::test]
async fn only_the_subscribed_change_types_and_resources_are_notified() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let mut receiver = Receiver::start().await;
    let graph = directory(&sandbox);
    let group = sandbox.group_id("Globex Staff").expect("group");
    let mut deletions = request(&receiver, "users", TimeDelta::days(1));
    deletions.change_type = "deleted".to_owned();
    let deletions = graph.subscribe(&deletions).await.expect("users");
    let members = graph
        .subscribe(&request(
            &receiver,
            &format!("groups/{group}/members"),
            TimeDelta::days(1),
        ))
        .await
        .expect("members");
    let hank = sandbox.users()[5].id.clone();

    assert!(sandbox.update_user(&hank, |u| u.job_title = Some(Some("CEO".to_owned()))));
    receiver.assert_quiet().await;

    let other = sandbox.group_id("Acme Staff").expect("other group");
    assert!(sandbox.remove_member(&other, &sandbox.users()[0].id));
    receiver.assert_quiet().await;

    assert!(sandbox.remove_member(&group, &hank));
    let (_, n) = receiver.next().await;
    assert_eq!(n.subscription_id, members.id);
    assert_eq!(n.resource, Some(format!("Groups/{group}")));
    assert_eq!(n.change_type.as_deref(), Some("updated"));

    assert!(sandbox.delete_user(&hank));
    let (_, n) = receiver.next().await;
    assert_eq!(n.subscription_id, deletions.id);
    assert_eq!(n.change_type.as_deref(), Some("deleted"));
    receiver.assert_quiet().await;
}

#[tokio::test]
async fn a_receiver_that_refuses_notifications_is_counted_not_fatal() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let mut receiver = Receiver::start().await;
    let graph = directory(&sandbox);
    graph
        .subscribe(&request(&receiver, "users", TimeDelta::days(1)))
        .await
        .expect("subscribe");
    *receiver.notification_status.lock().expect("status") = StatusCode::INTERNAL_SERVER_ERROR;
    let ada = sandbox.users()[0].id.clone();
    assert!(sandbox.disable_user(&ada));
    receiver.next().await;
    for _ in 0..50 {
        if sandbox.notification_failures() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sandbox.notification_failures(), 1);
    assert_eq!(sandbox.notifications_delivered(), 0);
    // The change itself was made, and the sandbox goes on answering.
    assert_eq!(
        sandbox.user(&ada).and_then(|u| u.account_enabled),
        Some(Some(false))
    );
    assert_eq!(graph.subscriptions().await.expect("list").len(), 1);
    assert!(receiver.posts.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn lifecycle_events_go_to_the_lifecycle_url_and_ensure_recovers() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let mut receiver = Receiver::start().await;
    let graph = directory(&sandbox);
    let plan = SubscriptionPlan {
        lifecycle_notification_url: Some(receiver.lifecycle()),
        ..plan(&receiver, &["users"])
    };
    let users = ensured(
        &graph.ensure_subscriptions(&plan).await.expect("1"),
        "users",
    );

    for event in ["reauthorizationRequired", "missed"] {
        assert_eq!(
            sandbox.lifecycle_notification(&users.id, event).await,
            Ok(202)
        );
        let (path, n) = receiver.next().await;
        assert_eq!(path, "/graph/lifecycle");
        assert_eq!(n.lifecycle_event.as_deref(), Some(event));
        assert_eq!(n.subscription_id, users.id);
        assert!(n.client_state_matches(STATE));
        assert!(n.change_type.is_none());
    }

    assert_eq!(
        sandbox
            .lifecycle_notification(&users.id, "subscriptionRemoved")
            .await,
        Ok(202)
    );
    let (_, n) = receiver.next().await;
    assert_eq!(n.lifecycle_event.as_deref(), Some("subscriptionRemoved"));
    assert!(sandbox.subscriptions().is_empty(), "removed");
    let again = ensured(
        &graph.ensure_subscriptions(&plan).await.expect("2"),
        "users",
    );
    assert_eq!(again.action, SubscriptionAction::Created);

    assert!(
        sandbox
            .lifecycle_notification(&again.id, "somethingElse")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn without_a_lifecycle_url_lifecycle_events_go_to_the_notification_url() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let mut receiver = Receiver::start().await;
    let graph = directory(&sandbox);
    let made = graph
        .subscribe(&request(&receiver, "groups", TimeDelta::days(1)))
        .await
        .expect("subscribe");
    assert_eq!(
        sandbox.lifecycle_notification(&made.id, "missed").await,
        Ok(202)
    );
    let (path, n) = receiver.next().await;
    assert_eq!(path, "/graph/notify");
    assert_eq!(n.lifecycle_event.as_deref(), Some("missed"));
}
