//! `rollcall serve` over real HTTP: signed notifications resync one client, bursts are
//! coalesced, and nothing unsigned, forged or stale is ever acted on.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use hmac::Mac;
use rollcall::queue::worker::WorkerOptions;
use rollcall::queue::{Liveness, Queue, QueueLocation};
use rollcall::web::{Secrets, Service, ServiceParts, signature};
use rollcall_core::Secret;

use crate::support::{World, people_csv};

const SECRET: &str = "service-secret-for-tests";
const XERO_KEY: &str = "xero-webhook-key";
const CLIENT_STATE: &str = "graph-client-state";

struct Served {
    world: World,
    service: Arc<Service>,
    url: String,
    http: reqwest::Client,
}

async fn served(debounce: Duration) -> Served {
    let world = World::new(&people_csv(6, 3)).await;
    let pipeline = rollcall::config::load(&world.pipeline_path()).unwrap_or_else(|e| panic!("{e}"));
    let secrets = Secrets::default()
        .with("ROLLCALL_WEBHOOK_SECRET", Secret::new(SECRET))
        .with("XERO_WEBHOOK_KEY", Secret::new(XERO_KEY))
        .with("ROLLCALL_GRAPH_CLIENT_STATE", Secret::new(CLIENT_STATE));
    let service = service_with_worker(&world, pipeline, secrets, debounce).await;
    let url = crate::support::serve_on_loopback(&service).await;
    Served {
        world,
        service,
        url,
        http: reqwest::Client::new(),
    }
}

/// The service as `rollcall serve` runs it on one machine: the SQLite queue beside the store
/// and a worker in the same process.
async fn service_with_worker(
    world: &World,
    pipeline: rollcall::config::Pipeline,
    secrets: Secrets,
    debounce: Duration,
) -> Arc<Service> {
    let location = QueueLocation::beside(&world.store());
    let parts = ServiceParts {
        pipelines: vec![Arc::new(pipeline)],
        store: world.open_store().await,
        queue: Queue::open(&location, Liveness::default())
            .await
            .expect("queue"),
        secrets,
        debounce,
        metrics: Arc::default(),
        public_url: None,
    };
    Service::start(parts, Some(WorkerOptions::default()))
        .await
        .expect("service")
}

impl Served {
    async fn post_signed(
        &self,
        client: &str,
        key_for: &str,
        timestamp: i64,
    ) -> reqwest::StatusCode {
        let body = br#"{"event":"employee.created","id":"E-1"}"#.to_vec();
        let key = signature::client_key(SECRET, "e2e", key_for);
        self.http
            .post(format!("{}/hooks/clients/e2e/{client}", self.url))
            .header(
                "X-Rollcall-Signature",
                signature::sign(&key, timestamp, &body),
            )
            .body(body)
            .send()
            .await
            .expect("post")
            .status()
    }

    async fn settle(&self, debounce: Duration) {
        tokio::time::sleep(debounce + Duration::from_millis(1500)).await;
    }

    /// Waits (up to 30 s) until the service's workers have run `n` syncs, then a little longer
    /// so that a sync too many would show.
    async fn synced(&self, n: f64) {
        for _ in 0..300 {
            if self.service.syncs() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_fifty_signed_notifications_makes_one_resync_of_that_client() {
    let debounce = Duration::from_millis(800);
    let s = served(debounce).await;
    let now = chrono::Utc::now().timestamp();
    for _ in 0..50 {
        assert_eq!(
            s.post_signed("Acme", "Acme", now).await,
            reqwest::StatusCode::ACCEPTED
        );
    }
    s.synced(1.0).await;
    assert_eq!(s.service.jobs_queued(), 1.0, "fifty notifications, one job");
    assert_eq!(s.service.syncs(), 1.0, "fifty notifications, one resync");
    assert!(
        s.world.sandbox.writes() > 0,
        "the resync applied the client's plan"
    );
    assert_eq!(s.world.quantity("M365-BP").await, Some(3));

    let metrics = s
        .http
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(r#"rollcall_webhooks_total{source="client",outcome="accepted"} 50"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"rollcall_resyncs_coalesced_total{client="Acme"} 49"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"rollcall_seats{pipeline="e2e",client="Acme"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"rollcall_api_requests_total{target="connectwise"}"#)
            && metrics.contains(r#"rollcall_jobs_total{pipeline="e2e",outcome="done"} 1"#),
        "{metrics}"
    );

    // A later change, a later notification: one more resync, which finds the new person.
    s.world.set_people(&people_csv(7, 4));
    assert_eq!(
        s.post_signed("acme", "Acme", chrono::Utc::now().timestamp())
            .await,
        reqwest::StatusCode::ACCEPTED
    );
    s.synced(2.0).await;
    assert_eq!(s.service.syncs(), 2.0);
    assert_eq!(s.world.quantity("M365-BP").await, Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stale_unsigned_and_unknown_notifications_are_refused_and_never_synced() {
    let debounce = Duration::from_millis(300);
    let s = served(debounce).await;
    let now = chrono::Utc::now().timestamp();
    assert_eq!(
        s.post_signed("Acme", "Globex", now).await,
        reqwest::StatusCode::UNAUTHORIZED,
        "another client's key"
    );
    assert_eq!(
        s.post_signed("Acme", "Acme", now - 3600).await,
        reqwest::StatusCode::UNAUTHORIZED,
        "an hour old"
    );
    // Ages past the range of i64: `now - t` would wrap to a fresh-looking age.
    for t in [now + i64::MIN, i64::MAX] {
        assert_eq!(
            s.post_signed("Acme", "Acme", t).await,
            reqwest::StatusCode::UNAUTHORIZED,
            "t = {t}"
        );
    }
    assert_eq!(
        s.post_signed("Nobody", "Nobody", now).await,
        reqwest::StatusCode::UNAUTHORIZED,
        "no such client"
    );
    let unsigned = s
        .http
        .post(format!("{}/hooks/clients/e2e/Acme", s.url))
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(unsigned.status(), reqwest::StatusCode::UNAUTHORIZED);
    let huge = s
        .http
        .post(format!("{}/hooks/clients/e2e/Acme", s.url))
        .header("X-Rollcall-Signature", "t=1,v1=00")
        .body(vec![b'x'; 1024 * 1024])
        .send()
        .await
        .expect("post");
    assert_eq!(huge.status(), reqwest::StatusCode::PAYLOAD_TOO_LARGE);
    s.settle(debounce).await;
    assert_eq!(s.service.jobs_queued(), 0.0, "nothing refused is queued");
    assert_eq!(s.service.syncs(), 0.0);
    assert_eq!(s.world.sandbox.writes(), 0);
    let metrics = s
        .http
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for (why, n) in [
        ("forged", 1),
        ("stale", 3),
        ("unknown_client", 1),
        ("unsigned", 1),
    ] {
        assert!(
            metrics.contains(&format!(
                r#"rollcall_webhooks_total{{source="client",outcome="{why}"}} {n}"#
            )),
            "{why}: {metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xero_intent_to_receive_and_graph_validation_handshakes() {
    let s = served(Duration::from_millis(200)).await;
    let body = br#"{"events":[],"firstEventSequence":0,"lastEventSequence":0,"entropy":"RANDOM"}"#;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(XERO_KEY.as_bytes()).expect("key");
    mac.update(body);
    let good = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let post = |sig: String| {
        s.http
            .post(format!("{}/hooks/xero", s.url))
            .header("x-xero-signature", sig)
            .body(body.to_vec())
            .send()
    };
    assert_eq!(
        post(good).await.expect("xero").status(),
        reqwest::StatusCode::OK
    );
    assert_eq!(
        post("AAAA".into()).await.expect("xero").status(),
        reqwest::StatusCode::UNAUTHORIZED
    );

    let echo = s
        .http
        .post(format!(
            "{}/hooks/graph?validationToken=Validation%3A+Testing+client+application",
            s.url
        ))
        .send()
        .await
        .expect("graph");
    assert_eq!(echo.status(), reqwest::StatusCode::OK);
    assert_eq!(echo.headers()["content-type"], "text/plain");
    assert_eq!(
        echo.text().await.expect("text"),
        "Validation: Testing client application"
    );
    let forged = serde_json::json!({ "value": [{ "subscriptionId": "s", "clientState": "guess", "changeType": "updated", "resource": "users/1", "tenantId": "t" }] });
    let answer = s
        .http
        .post(format!("{}/hooks/graph", s.url))
        .json(&forged)
        .send()
        .await
        .expect("graph");
    assert_eq!(answer.status(), reqwest::StatusCode::UNAUTHORIZED);
    let health = s
        .http
        .get(format!("{}/readyz", s.url))
        .send()
        .await
        .expect("readyz");
    assert_eq!(health.status(), reqwest::StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_schedule_resyncs_its_clients_without_a_notification() {
    let world = World::new(&people_csv(4, 2)).await;
    let yaml = std::fs::read_to_string(world.pipeline_path()).expect("read");
    std::fs::write(
        world.pipeline_path(),
        format!("schedule:\n  cron: \"* * * * * *\"\n{yaml}"),
    )
    .expect("write");
    let pipeline = rollcall::config::load(&world.pipeline_path()).unwrap_or_else(|e| panic!("{e}"));
    let service = service_with_worker(
        &world,
        pipeline,
        Secrets::default(),
        Duration::from_millis(100),
    )
    .await;
    for _ in 0..50 {
        if world.sandbox.writes() > 0 && service.syncs() >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(service.syncs() >= 1.0, "the schedule ran a resync");
    assert_eq!(world.quantity("M365-BP").await, Some(2));
}
