//! Jobs per second with 1, 2 and 4 `rollcall worker` processes on one Redis, against a
//! ConnectWise sandbox whose tenant allows `LIMIT` requests a second. The limit is shared by
//! every worker (GCRA in Redis), so more workers go faster only until the vendor's limit is
//! the bottleneck, and the sandbox never sees more than the limit in any one second.
//!
//! `cargo bench --bench queue` (a small run under `cargo test --all-targets`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rollcall::queue::{Liveness, Queue, QueueLocation};
use rollcall_connectwise::{Sandbox, Seed};
use rollcall_harness::{RedisServer, fleet};

const LIMIT: u32 = 40;

struct Measured {
    workers: usize,
    jobs: usize,
    elapsed: Duration,
    requests: u64,
    peak_per_second: u64,
}

async fn run(workers: usize, clients: usize) -> Measured {
    let redis = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let mut seed = serde_json::to_value(Seed::demo()).expect("seed");
    fleet::add_clients(&mut seed, clients);
    let sandbox = Sandbox::start(Seed::from_json(&seed.to_string()).expect("seed")).await;
    // A vendor's round trip, roughly.
    sandbox.latency(Duration::from_millis(20));
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline =
        fleet::write_pipeline(dir.path(), &sandbox.url(), clients, 2, "", LIMIT).expect("pipeline");
    let rollcall = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rollcall"));
        cmd.env("ROLLCALL_STORE", dir.path().join("state.db"))
            .env("ROLLCALL_QUEUE", redis.url())
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        cmd
    };
    let enqueued = rollcall()
        .arg("enqueue")
        .arg(&pipeline)
        .status()
        .expect("enqueue");
    assert!(enqueued.success());
    let queue = Queue::open(
        &QueueLocation::Redis(redis.url()),
        Liveness {
            heartbeat: Duration::from_secs(5),
            missed: 3,
        },
    )
    .await
    .expect("queue");
    let started = Instant::now();
    let before = sandbox.requests();
    let mut children: Vec<Child> = (0..workers)
        .map(|_| {
            rollcall()
                .arg("worker")
                .arg(&pipeline)
                .args(["--concurrency", "1"])
                .spawn()
                .expect("worker")
        })
        .collect();
    let mut samples = vec![(Instant::now(), sandbox.requests())];
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        samples.push((Instant::now(), sandbox.requests()));
        let rows = queue.list(false, 10_000).await.expect("list");
        if rows.iter().filter(|r| r.status == "done").count() >= clients {
            break;
        }
        assert!(
            rows.iter().all(|r| r.status != "failed"),
            "a job failed: {rows:?}"
        );
    }
    let elapsed = started.elapsed();
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    // The most requests the sandbox saw in any one-second window.
    let mut peak = 0;
    for (i, (t0, n0)) in samples.iter().enumerate() {
        if let Some((_, n1)) = samples[i..]
            .iter()
            .take_while(|(t, _)| t.duration_since(*t0) <= Duration::from_secs(1))
            .last()
        {
            peak = peak.max(n1 - n0);
        }
    }
    Measured {
        workers,
        jobs: clients,
        elapsed,
        requests: sandbox.requests() - before,
        peak_per_second: peak,
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    if !rollcall_harness::servers_available("queue bench", &["redis-server"]) {
        return;
    }
    let (clients, counts): (usize, &[usize]) = if full {
        (120, &[1, 2, 4])
    } else {
        (6, &[1, 2])
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    println!(
        "{clients} client syncs, workers at --concurrency 1, tenant limit {LIMIT} requests/s shared in Redis, 20 ms latency"
    );
    let mut first = None;
    for &workers in counts {
        let m = runtime.block_on(run(workers, clients));
        let rate = m.jobs as f64 / m.elapsed.as_secs_f64();
        let base = *first.get_or_insert(rate);
        println!(
            "{} worker(s): {} jobs in {:.1?} = {:.2} jobs/s ({:.2}x), {} requests, peak {} requests in one second (limit {LIMIT})",
            m.workers,
            m.jobs,
            m.elapsed,
            rate,
            rate / base,
            m.requests,
            m.peak_per_second
        );
        // GCRA lets a burst of LIMIT through, then LIMIT a second: at most twice the limit in
        // the first second, whatever the number of workers (each with its own budget, four
        // workers could send eight times).
        assert!(
            m.peak_per_second <= 2 * u64::from(LIMIT) + 2,
            "the shared limit was overrun"
        );
    }
}
