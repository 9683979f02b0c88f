//! From an accepted webhook to the change applied in the billing system: a client's HR system
//! posts a signed notification to `rollcall serve`, which resyncs that client (debounced) and
//! writes the new seat to the ConnectWise sandbox. The figure is the time from the 202 to the
//! sandbox's write, less the debounce window (the target: under 2 s).
//!
//! `cargo bench --bench webhooks`

use std::time::{Duration, Instant};

use rollcall::queue::worker::WorkerOptions;
use rollcall::queue::{Liveness, Queue, QueueLocation};
use rollcall::web::{Secrets, Service, ServiceParts, signature};
use rollcall_core::Secret;

const DEBOUNCE: Duration = Duration::from_millis(500);
const ROUNDS: usize = 10;

fn people(n: usize) -> String {
    let mut csv = String::from("id,given_name,surname,email,enabled,groups\n");
    for i in 0..n {
        csv.push_str(&format!(
            "p{i},Given{i},Sur{i},u{i}@acme.example,true,M365 Users\n"
        ));
    }
    csv
}

async fn bench() {
    let sandbox = rollcall_connectwise::Sandbox::start(rollcall_connectwise::Seed::demo()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "name: hooks\ntarget:\n  connectwise: {{ url: \"{}\", company_id: demo, public_key: \"${{X:-demo-public}}\", private_key: \"${{Y:-demo-private}}\", client_id: 00000000-0000-4000-8000-000000000000, rate_limit_per_second: 100 }}\nproducts:\n  - {{ id: m365, identifier: M365-BP, unit_price: 22.00 }}\nclients:\n  - {{ name: Acme, directory: {{ file: {{ path: acme.csv }} }}, company: ACME, agreement: Managed Services }}\n",
        sandbox.url()
    );
    std::fs::write(dir.path().join("p.yaml"), yaml).expect("pipeline");
    std::fs::write(dir.path().join("acme.csv"), people(20)).expect("people");
    let pipeline =
        rollcall::config::load(&dir.path().join("p.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let store = rollcall::store::Store::open(&dir.path().join("s.db"))
        .await
        .expect("store");
    let secrets = Secrets::default().with("ROLLCALL_WEBHOOK_SECRET", Secret::new("bench-secret"));
    let parts = ServiceParts {
        pipelines: vec![std::sync::Arc::new(pipeline)],
        store,
        queue: Queue::open(
            &QueueLocation::Sqlite(dir.path().join("queue.db")),
            Liveness::default(),
        )
        .await
        .expect("queue"),
        secrets,
        debounce: DEBOUNCE,
        metrics: Default::default(),
        public_url: None,
    };
    let service = Service::start(parts, Some(WorkerOptions::default()))
        .await
        .expect("service");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/hooks/clients/hooks/Acme",
        listener.local_addr().expect("addr")
    );
    tokio::spawn(rollcall::web::serve(
        service.clone(),
        listener,
        std::future::pending(),
    ));
    let key = signature::client_key("bench-secret", "hooks", "Acme");
    let http = reqwest::Client::new();

    let mut latencies = Vec::new();
    for round in 0..=ROUNDS {
        // Someone joins: the next resync has one seat to add.
        std::fs::write(dir.path().join("acme.csv"), people(21 + round)).expect("people");
        let writes = sandbox.writes();
        let body = format!("{{\"event\":\"employee.created\",\"n\":{round}}}").into_bytes();
        let header = signature::sign(&key, chrono::Utc::now().timestamp(), &body);
        let accepted = http
            .post(&url)
            .header("X-Rollcall-Signature", header)
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(accepted.status(), reqwest::StatusCode::ACCEPTED);
        let started = Instant::now();
        while sandbox.writes() == writes {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Round 0 makes the client's contacts and addition: not a one-seat change.
        if round > 0 {
            latencies.push(started.elapsed());
        }
        // Let the resync finish before the next notification.
        while service.syncs() < (round + 1) as f64 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    let worst = latencies[latencies.len() - 1];
    println!(
        "webhook accepted → seat written: median {:.0?} (debounce {:.0?} + {:.0?}), worst {:.0?}, {ROUNDS} rounds",
        median,
        DEBOUNCE,
        median.saturating_sub(DEBOUNCE),
        worst
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(bench());
}
