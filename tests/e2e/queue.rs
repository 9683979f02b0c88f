//! The job queue with real worker processes (`rollcall worker`), on the embedded SQLite queue
//! and on a real `redis-server`: every client synced exactly once by three workers, a worker
//! killed mid-job taken over without a write made twice, scheduled runs queued once however
//! many workers tick, failed jobs kept visible and retried by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rollcall::queue::{JobRow, Liveness, Queue, QueueLocation};
use rollcall_connectwise::{Sandbox, Seed};
use rollcall_harness::RedisServer;
use rollcall_harness::fleet::{self, client_id};

/// Where the queue lives for one test.
enum Backend {
    Sqlite,
    Redis(RedisServer),
}

impl Backend {
    /// `None` when Redis is wanted but cannot run here (and CI did not require it).
    fn redis(test: &str) -> Option<Backend> {
        if !rollcall_harness::servers_available(test, &["redis-server"]) {
            return None;
        }
        Some(Backend::Redis(
            RedisServer::start().unwrap_or_else(|e| panic!("{e}")),
        ))
    }
}

/// Many clients in one pipeline against one ConnectWise sandbox, with workers as processes.
struct Fleet {
    sandbox: Sandbox,
    dir: tempfile::TempDir,
    queue: String,
    /// `ROLLCALL_STORE`: the SQLite file in `dir`, or a PostgreSQL URL.
    store: String,
    /// Where each worker was started (its working directory).
    worker_dirs: Vec<PathBuf>,
    workers: Vec<Child>,
    _backend: Backend,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

async fn fleet(backend: Backend, clients: usize, per_client: usize, schedule: &str) -> Fleet {
    let mut seed = serde_json::to_value(Seed::demo()).expect("seed as json");
    fleet::add_clients(&mut seed, clients);
    let seed = Seed::from_json(&seed.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let sandbox = Sandbox::start(seed).await;
    let dir = tempfile::tempdir().expect("tempdir");
    fleet::write_pipeline(
        dir.path(),
        &sandbox.url(),
        clients,
        per_client,
        schedule,
        400,
    )
    .expect("pipeline");
    let queue = match &backend {
        Backend::Sqlite => dir.path().join("queue.db").display().to_string(),
        Backend::Redis(r) => r.url(),
    };
    let store = dir.path().join("state.db").display().to_string();
    Fleet {
        sandbox,
        dir,
        queue,
        store,
        worker_dirs: Vec::new(),
        workers: Vec::new(),
        _backend: backend,
    }
}

impl Fleet {
    fn pipeline(&self) -> PathBuf {
        self.dir.path().join("fleet.yaml")
    }

    fn rollcall(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rollcall"));
        cmd.env("ROLLCALL_STORE", &self.store)
            .env("ROLLCALL_QUEUE", &self.queue)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        cmd
    }

    /// Starts one `rollcall worker` process; its log goes to `worker-N.log`. A worker that
    /// misses three heartbeats is taken for dead and its jobs handed on.
    fn start_worker(&mut self, heartbeat_seconds: u32) {
        let here = self.dir.path().to_owned();
        self.start_worker_in(&here, heartbeat_seconds);
    }

    /// As [`Fleet::start_worker`], with `dir` as the worker's working directory.
    fn start_worker_in(&mut self, dir: &std::path::Path, heartbeat_seconds: u32) {
        let n = self.workers.len();
        let log = std::fs::File::create(self.dir.path().join(format!("worker-{n}.log")))
            .expect("log file");
        let child = self
            .rollcall()
            .args(["worker", &self.pipeline().display().to_string()])
            .args(["--concurrency", "2"])
            .args(["--heartbeat-seconds", &heartbeat_seconds.to_string()])
            .args(["--lock-ttl-seconds", "3", "--retry-backoff-seconds", "1"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn a worker");
        self.workers.push(child);
        self.worker_dirs.push(dir.to_owned());
    }

    fn logs(&self) -> String {
        (0..self.workers.len())
            .map(|n| {
                std::fs::read_to_string(self.dir.path().join(format!("worker-{n}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    fn enqueue(&self, client: Option<&str>) {
        let mut cmd = self.rollcall();
        cmd.args(["enqueue", &self.pipeline().display().to_string()]);
        if let Some(c) = client {
            cmd.args(["--client", c]);
        }
        let out = cmd.output().expect("rollcall enqueue");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn open_queue(&self) -> Queue {
        let location: QueueLocation = self.queue.parse().expect("location");
        Queue::open(&location, Liveness::default())
            .await
            .expect("queue")
    }

    /// Waits until `n` jobs are done (or one fails), up to `limit`.
    async fn wait_done(&self, n: usize, limit: Duration) -> Vec<JobRow> {
        self.wait_done_among(n, limit, &[]).await
    }

    /// As [`Fleet::wait_done`], except that the jobs `failed_before` may be failed.
    async fn wait_done_among(
        &self,
        n: usize,
        limit: Duration,
        failed_before: &[&str],
    ) -> Vec<JobRow> {
        let queue = self.open_queue().await;
        let start = Instant::now();
        loop {
            let rows = queue.list(false, 10_000).await.expect("list");
            let done = rows.iter().filter(|r| r.status == "done").count();
            if done >= n {
                return rows;
            }
            if let Some(failed) = rows
                .iter()
                .find(|r| r.status == "failed" && !failed_before.contains(&r.id.as_str()))
            {
                panic!("a job failed: {failed:?}\n{}", self.logs());
            }
            assert!(
                start.elapsed() < limit,
                "{done} of {n} jobs done after {limit:?}: {:?}\n{}",
                rows.iter().take(3).collect::<Vec<_>>(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn runs(&self) -> usize {
        let store = rollcall::store::Store::open(std::path::Path::new(&self.store))
            .await
            .expect("store");
        store.reports("fleet").await.expect("runs").len()
    }
}

/// Every contact and addition is in the sandbox once, and nothing else was written.
fn assert_written_once(sandbox: &Sandbox, clients: usize, per_client: usize) {
    let state = sandbox.state();
    let mut contacts = BTreeMap::<String, usize>::new();
    for c in &state.contacts {
        let key = format!(
            "{}/{}/{}",
            c.company
                .as_ref()
                .and_then(|r| r.identifier.clone())
                .unwrap_or_default(),
            c.first_name,
            c.last_name.clone().unwrap_or_default()
        );
        *contacts.entry(key).or_default() += 1;
    }
    let twice: Vec<_> = contacts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "contacts written twice: {twice:?}");
    assert_eq!(state.contacts.len(), clients * per_client);
    assert_eq!(
        state.additions.len(),
        clients * 2,
        "two products per client"
    );
    assert_eq!(
        sandbox.writes(),
        (clients * per_client + clients * 2) as u64,
        "every write made once"
    );
}

async fn three_workers_sync_each_client_once(backend: Backend) {
    let clients = 200;
    let mut fleet = fleet(backend, clients, 2, "").await;
    fleet.enqueue(None);
    // Generous liveness: three debug-build workers and the sandbox share two cores here, and
    // a worker taken for dead while alive would have its jobs run again (writing nothing, but
    // running twice).
    for _ in 0..3 {
        fleet.start_worker(5);
    }
    let rows = fleet.wait_done(clients, Duration::from_secs(240)).await;
    assert_eq!(rows.len(), clients, "one job per client");
    let synced: BTreeSet<_> = rows
        .iter()
        .filter_map(|r| r.job.as_ref().map(|j| j.client.clone()))
        .collect();
    assert_eq!(synced.len(), clients, "every client's job ran");
    assert_written_once(&fleet.sandbox, clients, 2);
    assert_eq!(
        fleet.runs().await,
        clients,
        "each job ran once\n{}",
        fleet
            .logs()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_sync_two_hundred_clients_exactly_once_on_sqlite() {
    three_workers_sync_each_client_once(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_sync_two_hundred_clients_exactly_once_on_redis() {
    let Some(redis) = Backend::redis("queue on redis") else {
        return;
    };
    three_workers_sync_each_client_once(redis).await;
}

/// Three workers in two working directories (two machines), one Redis queue, one PostgreSQL
/// store: every client synced once, every run in the one store with its ledger, and no store
/// file made on either machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_on_two_machines_share_one_postgres_store_and_sync_each_client_once() {
    let Some(redis) = Backend::redis("queue on redis, store on postgres") else {
        return;
    };
    let Some(db) = rollcall_harness::PgDatabase::create("workers sharing a postgres store") else {
        return;
    };
    let clients = 200;
    let mut fleet = fleet(redis, clients, 2, "").await;
    fleet.store = db.url();
    let machines = [
        fleet.dir.path().join("machine-a"),
        fleet.dir.path().join("machine-b"),
    ];
    for m in &machines {
        std::fs::create_dir(m).expect("machine dir");
    }
    fleet.enqueue(None);
    for m in [&machines[0], &machines[1], &machines[0]] {
        fleet.start_worker_in(m, 5);
    }
    let rows = fleet.wait_done(clients, Duration::from_secs(240)).await;
    assert_eq!(rows.len(), clients, "one job per client");
    assert_written_once(&fleet.sandbox, clients, 2);
    assert_eq!(
        fleet.runs().await,
        clients,
        "each job ran once\n{}",
        fleet.logs()
    );
    let store = rollcall::store::Store::open(std::path::Path::new(&fleet.store))
        .await
        .expect("store");
    for n in 0..clients {
        let held = store
            .held_seats("fleet", &client_id(n))
            .await
            .expect("ledger");
        assert_eq!(
            held.values().map(Vec::len).sum::<usize>(),
            4,
            "{}: two people on two products, once each in the one ledger",
            client_id(n)
        );
    }
    for m in &machines {
        let files: Vec<_> = std::fs::read_dir(m)
            .expect("machine dir")
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().ends_with(".db"))
            .collect();
        assert!(files.is_empty(), "no store file on a machine: {files:?}");
    }
    assert!(!fleet.dir.path().join("state.db").exists());
    store.db().close().await;
}

async fn killed_worker_is_taken_over(backend: Backend) {
    let per_client = 40;
    let mut fleet = fleet(backend, 1, per_client, "").await;
    // Slow enough that the worker is surely killed with writes still to make.
    fleet.sandbox.latency(Duration::from_millis(40));
    fleet.start_worker(1);
    fleet.enqueue(Some(&client_id(0)));
    let start = Instant::now();
    while fleet.sandbox.writes() < 5 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the first worker never wrote\n{}",
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fleet.workers[0].kill().expect("SIGKILL the worker");
    fleet.workers[0].wait().expect("reaped");
    let at_kill = fleet.sandbox.writes();
    assert!(
        at_kill < (per_client + 2) as u64,
        "killed before it finished ({at_kill} writes)"
    );
    fleet.start_worker(1);
    let rows = fleet.wait_done(1, Duration::from_secs(90)).await;
    assert_eq!(rows.len(), 1);
    assert_written_once(&fleet.sandbox, 1, per_client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_is_taken_over_and_nothing_is_written_twice_on_sqlite() {
    killed_worker_is_taken_over(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_is_taken_over_and_nothing_is_written_twice_on_redis() {
    let Some(redis) = Backend::redis("queue on redis") else {
        return;
    };
    killed_worker_is_taken_over(redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_ticking_one_schedule_queue_each_run_once() {
    let Some(redis) = Backend::redis("schedule on redis") else {
        return;
    };
    let mut fleet = fleet(
        redis,
        3,
        1,
        "schedule: { cron: \"* * * * * *\", timezone: Europe/London }\n",
    )
    .await;
    fleet.start_worker(1);
    fleet.start_worker(1);
    tokio::time::sleep(Duration::from_secs(5)).await;
    for w in &mut fleet.workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    let rows = fleet
        .open_queue()
        .await
        .list(false, 10_000)
        .await
        .expect("list");
    let mut runs = BTreeMap::<(String, String), usize>::new();
    for r in &rows {
        let job = r.job.as_ref().expect("a sync job");
        *runs
            .entry((job.client.clone(), job.trigger.to_string()))
            .or_default() += 1;
    }
    assert!(runs.len() >= 6, "a few ticks for three clients: {runs:?}");
    assert!(
        runs.values().all(|n| *n == 1),
        "a scheduled run queued twice: {runs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_keeps_failing_is_left_failed_with_its_error_and_retried_by_hand() {
    let mut fleet = fleet(Backend::Sqlite, 1, 2, "").await;
    // Every agreement read fails until the sandbox is told otherwise.
    fleet.sandbox.fail("/finance/agreements", 1_000);
    fleet.start_worker(1);
    fleet.enqueue(None);
    let queue = fleet.open_queue().await;
    let start = Instant::now();
    let failed = loop {
        let rows = queue.list(true, 100).await.expect("list");
        if let Some(r) = rows.into_iter().next() {
            break r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the job never ended failed\n{}",
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let error = failed.error.clone().unwrap_or_default();
    assert!(
        error.contains("agreement") || error.contains("500"),
        "{error}"
    );
    assert_eq!(fleet.sandbox.writes(), 0);

    let listed = fleet
        .rollcall()
        .args(["jobs", "--failed"])
        .output()
        .expect("rollcall jobs");
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.contains(&failed.id) && text.contains("C0000"),
        "{text}"
    );

    fleet.sandbox.clear_faults();
    let retried = fleet
        .rollcall()
        .args(["jobs", "retry", &failed.id])
        .output()
        .expect("rollcall jobs retry");
    assert!(
        retried.status.success(),
        "{}",
        String::from_utf8_lossy(&retried.stderr)
    );
    fleet
        .wait_done_among(1, Duration::from_secs(60), &[&failed.id])
        .await;
    assert_written_once(&fleet.sandbox, 1, 2);
    let again = fleet
        .rollcall()
        .args(["jobs", "retry", "no-such-job"])
        .output()
        .expect("rollcall jobs retry");
    assert_eq!(again.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_on_many_machines_refresh_a_rotating_token_once_through_redis() {
    use rollcall::queue::vault::RedisVault;
    use rollcall_core::oauth::{MemoryVault, TokenSet, TokenVault};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    if !rollcall_harness::servers_available("oauth on redis", &["redis-server"]) {
        return;
    }
    let redis = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let tokens = |n: usize| TokenSet {
        access_token: format!("access-{n}"),
        refresh_token: format!("refresh-{n}"),
        expires_at: chrono::Utc::now(),
        scope: None,
        tenant: Some("realm-1".into()),
    };
    // Connected before the queue moved to Redis: the tokens are in one machine's store.
    let local = Arc::new(MemoryVault::default());
    local.save("qbo", &tokens(0)).await.expect("save");
    let connect = || async {
        redis::aio::ConnectionManager::new(redis::Client::open(redis.url()).expect("redis url"))
            .await
            .expect("redis")
    };
    let first = Arc::new(RedisVault::new(connect().await, Some(local.clone())));
    let second = Arc::new(RedisVault::new(connect().await, None));
    assert_eq!(
        first
            .load("qbo")
            .await
            .expect("load")
            .map(|t| t.access_token),
        Some("access-0".into()),
        "copied from the local store"
    );

    let refreshes = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for vault in [first.clone(), second.clone(), first, second] {
        let refreshes = refreshes.clone();
        tasks.push(tokio::spawn(async move {
            vault
                .rotate(
                    "qbo",
                    "access-0",
                    Box::new(move |old: TokenSet| {
                        Box::pin(async move {
                            assert_eq!(
                                old.refresh_token, "refresh-0",
                                "refreshed with a dead token"
                            );
                            refreshes.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            Ok(TokenSet {
                                access_token: "access-1".into(),
                                refresh_token: "refresh-1".into(),
                                ..old
                            })
                        })
                    }),
                )
                .await
                .expect("rotate")
                .access_token
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), "access-1");
    }
    assert_eq!(
        refreshes.load(Ordering::SeqCst),
        1,
        "one refresh for everyone"
    );
}

/// `rollcall run` by hand while a worker holds one client: that client waits (and, past
/// `--lock-wait-seconds`, is refused with nothing written); another client goes ahead; once
/// the worker lets go, the hand run writes once.
async fn a_run_by_hand_waits_for_the_worker_holding_its_client(backend: Backend) {
    let fleet = fleet(backend, 2, 2, "").await;
    let queue = fleet.open_queue().await;
    let pipeline = rollcall::config::load(&fleet.pipeline()).unwrap_or_else(|e| panic!("{e}"));
    let busy = pipeline.client(&client_id(0)).expect("client 0");
    let locks = queue.locks().await.expect("locks");
    let key = rollcall::queue::worker::lease_key(&pipeline, busy);
    let lease = locks
        .try_acquire(&key, "worker-elsewhere", Duration::from_secs(60))
        .await
        .expect("lock store")
        .expect("free");
    let run = |client: &str| {
        fleet
            .rollcall()
            .args(["run", &fleet.pipeline().display().to_string()])
            .args(["--client", client, "--lock-wait-seconds", "1"])
            .output()
            .expect("rollcall run")
    };

    let refused = run(&client_id(0));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("is being synced by a worker"), "{stderr}");
    assert_eq!(fleet.sandbox.writes(), 0);

    let other = run(&client_id(1));
    assert!(
        other.status.success(),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    let written = fleet.sandbox.writes();
    assert!(written > 0);

    locks.release(&lease).await.expect("release");
    let after = run(&client_id(0));
    assert!(
        after.status.success(),
        "{}",
        String::from_utf8_lossy(&after.stderr)
    );
    assert_written_once(&fleet.sandbox, 2, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_by_hand_waits_for_the_worker_holding_its_client_on_sqlite() {
    a_run_by_hand_waits_for_the_worker_holding_its_client(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_by_hand_waits_for_the_worker_holding_its_client_on_redis() {
    let Some(backend) = Backend::redis("a run by hand on redis") else {
        return;
    };
    a_run_by_hand_waits_for_the_worker_holding_its_client(backend).await;
}
