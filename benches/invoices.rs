//! 500 clients invoiced in QuickBooks Online and in Xero, through the whole engine (plan and
//! apply) against each vendor's sandbox with its rate limit enforced: requests made, 429s
//! received (the target is none: the client's own limiter keeps inside the vendor's), and wall
//! time against the rate-limit lower bound (requests ÷ allowed rate).
//!
//! The first run creates 500 customers and 500 invoices; at the vendors' real limits that takes
//! minutes (Xero's 60 a minute: over half an hour), so it runs with the limit's window scaled
//! down by `SCALE` on both sides, sandbox and client — the ratio to the lower bound does not
//! depend on the scale. The no-change resync then runs at the real limits.
//!
//! `cargo bench --bench invoices`

use std::sync::Arc;
use std::time::{Duration, Instant};

use rollcall::run::Quiet;
use rollcall::store::Store;
use rollcall_core::oauth::TokenVault;
use rollcall_core::{BillingConfig, BillingSystem};

const CLIENTS: usize = 500;
const SCALE: u32 = 10;

/// The client's `requests_per_minute` that, with the window scaled, keeps it as far inside the
/// vendor's window as the real setting keeps it in the real one: the steady rate scales, the
/// burst (the client's own, `burst`) does not.
fn scaled(limit: u32, burst: u32) -> u32 {
    (limit - burst) * SCALE + burst
}

fn pipeline_yaml(target: &str) -> String {
    let mut yaml = format!(
        "name: bench\ntarget:\n{target}\nproducts:\n  - {{ id: m365, identifier: M365-BP, unit_price: 22.00, seats: \"'M365 Users' in groups\" }}\n  - {{ id: helpdesk, identifier: HELPDESK-USER, unit_price: 35 }}\nclients:\n"
    );
    for c in 0..CLIENTS {
        yaml.push_str(&format!(
            "  - {{ name: client{c:03}, directory: {{ file: {{ path: c{c:03}.csv }} }}, company: Bench Client {c:03} }}\n"
        ));
    }
    yaml
}

fn people(dir: &std::path::Path) {
    for c in 0..CLIENTS {
        let mut csv = String::from("id,given_name,surname,email,enabled,groups\n");
        for i in 0..(3 + c % 5) {
            let groups = if i % 2 == 0 {
                "M365 Users;Staff"
            } else {
                "Staff"
            };
            csv.push_str(&format!(
                "c{c}-{i},Given{i},Sur{i},u{i}@c{c}.example,true,{groups}\n"
            ));
        }
        std::fs::write(dir.join(format!("c{c:03}.csv")), csv).expect("people");
    }
}

struct Figures {
    requests: u64,
    throttled: u64,
    wall: Duration,
    per_minute: u32,
}

impl Figures {
    fn print(&self, what: &str) {
        let bound =
            Duration::from_secs_f64(self.requests as f64 * 60.0 / f64::from(self.per_minute));
        println!(
            "{what:<58} {:>5} requests  {:>3} × 429  {:>8.1?} wall  {:>8.1?} lower bound  {:.2}×",
            self.requests,
            self.throttled,
            self.wall,
            bound,
            self.wall.as_secs_f64() / bound.as_secs_f64().max(1e-9)
        );
    }
}

async fn run(
    pipeline: &rollcall::config::Pipeline,
    billing: Arc<dyn BillingSystem>,
    store: &Store,
    id: &str,
) -> usize {
    let plan =
        rollcall::run::plan_pipeline(pipeline, billing.clone(), store, None, false, &Quiet).await;
    for c in &plan.clients {
        assert!(c.failure.is_none(), "{}: {:?}", c.client, c.failure);
    }
    store
        .begin_run(id, &pipeline.name, "bench")
        .await
        .expect("run");
    let outcomes = rollcall::apply::apply_plan(&plan, billing, store, id, false, &Quiet)
        .await
        .expect("apply");
    for o in &outcomes {
        assert_eq!(o.state, rollcall::apply::OutcomeState::Done, "{}", o.client);
    }
    plan.changes.len()
}

async fn quickbooks() {
    let sandbox = rollcall_quickbooks::Sandbox::start(rollcall_quickbooks::Seed::demo()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    people(dir.path());
    let target = format!(
        "  quickbooks: {{ url: \"{0}\", client_id: demo-qbo-client, client_secret: \"${{X:-demo-qbo-secret}}\", token_url: \"{0}/oauth2/v1/tokens/bearer\", connection: bench }}",
        sandbox.url()
    );
    std::fs::write(dir.path().join("p.yaml"), pipeline_yaml(&target)).expect("pipeline");
    let mut pipeline =
        rollcall::config::load(&dir.path().join("p.yaml")).unwrap_or_else(|e| panic!("{e}"));
    pipeline.bill_day = chrono::NaiveDate::from_ymd_opt(2026, 11, 1);
    let store = Store::open(&dir.path().join("s.db")).await.expect("store");
    store
        .save("bench", &sandbox.connect())
        .await
        .expect("tokens");

    // First run, window scaled: 500 a minute becomes 500 per 6 s.
    sandbox.limit_rate(500, Duration::from_secs(60 / u64::from(SCALE)));
    let mut config = sandbox.config("bench");
    config.requests_per_minute = scaled(500, 10);
    let billing = config.build(&store.build_context()).expect("client");
    let started = Instant::now();
    let changes = run(&pipeline, billing, &store, "qbo-1").await;
    Figures {
        requests: sandbox.controls().requests(),
        throttled: sandbox.controls().throttled(),
        wall: started.elapsed(),
        per_minute: 500 * SCALE,
    }
    .print(&format!(
        "QuickBooks first run ({changes} changes, limit ÷{SCALE} window)"
    ));

    // No-change resync at the real limit.
    sandbox.limit_rate(500, Duration::from_secs(60));
    let (requests, throttled, writes) = (
        sandbox.controls().requests(),
        sandbox.controls().throttled(),
        sandbox.controls().writes(),
    );
    let billing = sandbox
        .config("bench")
        .build(&store.build_context())
        .expect("client");
    let started = Instant::now();
    let changes = run(&pipeline, billing, &store, "qbo-2").await;
    assert_eq!(changes, 0);
    assert_eq!(
        sandbox.controls().writes(),
        writes,
        "a no-change resync writes nothing"
    );
    Figures {
        requests: sandbox.controls().requests() - requests,
        throttled: sandbox.controls().throttled() - throttled,
        wall: started.elapsed(),
        per_minute: 500,
    }
    .print("QuickBooks no-change resync (real limit, 500/min)");
}

async fn xero() {
    let sandbox = rollcall_xero::Sandbox::start(rollcall_xero::Seed::demo()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    people(dir.path());
    let target = format!(
        "  xero: {{ url: \"{0}\", client_id: demo-xero-client, client_secret: \"${{X:-demo-xero-secret}}\", token_url: \"{0}/connect/token\", connection: bench }}",
        sandbox.url()
    );
    std::fs::write(dir.path().join("p.yaml"), pipeline_yaml(&target)).expect("pipeline");
    let mut pipeline =
        rollcall::config::load(&dir.path().join("p.yaml")).unwrap_or_else(|e| panic!("{e}"));
    pipeline.bill_day = chrono::NaiveDate::from_ymd_opt(2026, 11, 1);
    let store = Store::open(&dir.path().join("s.db")).await.expect("store");
    store
        .save("bench", &sandbox.connect())
        .await
        .expect("tokens");

    // First run, window scaled: 60 a minute becomes 60 per 6 s, on both sides.
    sandbox.limit_rate(60, Duration::from_secs(60 / u64::from(SCALE)));
    let mut config = sandbox.config("bench");
    config.requests_per_minute = scaled(60, 5);
    let billing = config.build(&store.build_context()).expect("client");
    let started = Instant::now();
    let changes = run(&pipeline, billing, &store, "xero-1").await;
    Figures {
        requests: sandbox.controls().requests(),
        throttled: sandbox.controls().throttled(),
        wall: started.elapsed(),
        per_minute: 60 * SCALE,
    }
    .print(&format!(
        "Xero first run ({changes} changes, limit ÷{SCALE} window)"
    ));

    sandbox.limit_rate(60, Duration::from_secs(60));
    let (requests, throttled, writes) = (
        sandbox.controls().requests(),
        sandbox.controls().throttled(),
        sandbox.controls().writes(),
    );
    let billing = sandbox
        .config("bench")
        .build(&store.build_context())
        .expect("client");
    let started = Instant::now();
    let changes = run(&pipeline, billing, &store, "xero-2").await;
    assert_eq!(changes, 0);
    assert_eq!(
        sandbox.controls().writes(),
        writes,
        "a no-change resync writes nothing"
    );
    Figures {
        requests: sandbox.controls().requests() - requests,
        throttled: sandbox.controls().throttled() - throttled,
        wall: started.elapsed(),
        per_minute: 60,
    }
    .print("Xero no-change resync (real limit, 60/min)");
}

fn main() {
    // `cargo test --all-targets` builds benches; `cargo bench` passes `--bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        println!("{CLIENTS} clients, 2 products, 3–7 people each\n");
        quickbooks().await;
        xero().await;
    });
}
