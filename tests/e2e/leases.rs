//! Several `rollcall run` processes started at once for one client, on one store: with no
//! queue (the plain cron set-up), with the SQLite queue and with the Redis queue. Every sync
//! takes the client's lease before it plans, so exactly one writes the client's first bill;
//! the others either wait and find nothing left to do (exit 0, nothing written) or give up
//! after `--lock-wait-seconds` (exit 3, saying so, with nothing written or recorded).
//!
//! One ConnectWise sandbox per mode holds 300 people of each size of race (10 clients of 30):
//! each trial races on a client nobody has synced, so its first bill is what is at stake.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use rollcall::queue::{Liveness, Queue, QueueLocation};
use rollcall_connectwise::{Sandbox, Seed};
use rollcall_harness::RedisServer;
use rollcall_harness::fleet::{self, client_id};

const TRIALS: usize = 10;
const PEOPLE: usize = 30;
/// Two products per client (`fleet`): M365 for everyone in the group, helpdesk for all.
const PRODUCTS: usize = 2;
/// What `rollcall run` says, on stderr, when it gave up waiting for a client.
const BUSY: &str = "is being synced by a worker or another rollcall run";

/// Where the racing runs find a queue, if anywhere.
enum Mode {
    NoQueue,
    Sqlite,
    Redis(RedisServer),
    /// No queue, the store on PostgreSQL: the lease is a row locked `FOR UPDATE`.
    Postgres(rollcall_harness::PgDatabase),
}

struct Race {
    sandbox: Sandbox,
    dir: tempfile::TempDir,
    queue: Option<String>,
    _mode: Mode,
}

impl Race {
    async fn new(mode: Mode) -> Race {
        let clients = 2 * TRIALS;
        let mut seed = serde_json::to_value(Seed::demo()).expect("seed as json");
        fleet::add_clients(&mut seed, clients);
        let seed = Seed::from_json(&seed.to_string()).unwrap_or_else(|e| panic!("{e}"));
        let sandbox = Sandbox::start(seed).await;
        let dir = tempfile::tempdir().expect("tempdir");
        fleet::write_pipeline(dir.path(), &sandbox.url(), clients, PEOPLE, "", 1000)
            .expect("pipeline");
        let queue = match &mode {
            Mode::NoQueue | Mode::Postgres(_) => None,
            Mode::Sqlite => Some(dir.path().join("queue.db").display().to_string()),
            Mode::Redis(r) => Some(r.url()),
        };
        if let Some(q) = &queue {
            // As a deployment has it: the queue made by the workers' first start.
            let location: QueueLocation = q.parse().expect("location");
            Queue::open(&location, Liveness::default())
                .await
                .expect("queue");
        }
        Race {
            sandbox,
            dir,
            queue,
            _mode: mode,
        }
    }

    fn store(&self) -> PathBuf {
        match &self._mode {
            Mode::Postgres(db) => PathBuf::from(db.url()),
            _ => self.dir.path().join("state.db"),
        }
    }

    fn run(&self, client: &str, lock_wait_seconds: u32) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rollcall"));
        // In the test's directory: with the store on PostgreSQL, run reports are written under
        // the working directory.
        cmd.current_dir(self.dir.path())
            .env("ROLLCALL_STORE", self.store())
            .env_remove("ROLLCALL_QUEUE")
            .env("RUST_LOG", "warn")
            .args([
                "run",
                &self.dir.path().join("fleet.yaml").display().to_string(),
            ])
            .args(["--client", client])
            .args(["--lock-wait-seconds", &lock_wait_seconds.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(q) = &self.queue {
            cmd.env("ROLLCALL_QUEUE", q);
        }
        cmd
    }

    /// `n` runs of `client` started together; their outputs in start order.
    fn race(&self, client: &str, n: usize, lock_wait_seconds: u32) -> Vec<Output> {
        let children: Vec<_> = (0..n)
            .map(|_| {
                self.run(client, lock_wait_seconds)
                    .spawn()
                    .expect("spawn rollcall run")
            })
            .collect();
        children
            .into_iter()
            .map(|c| c.wait_with_output().expect("rollcall run"))
            .collect()
    }

    /// Every trial of `n` racing runs; returns how many runs gave up waiting.
    async fn trials(&self, n: usize, first_client: usize) -> usize {
        let mut gave_up = 0;
        for trial in 0..TRIALS {
            let client = client_id(first_client + trial);
            // Half the trials wait for the lease long enough for everyone to get it in turn;
            // the other half give up at once.
            let wait = if trial % 2 == 0 { 0 } else { 120 };
            let runs_before = recorded_runs(&self.store()).await;
            let outputs = self.race(&client, n, wait);
            let mut ok = 0;
            for out in &outputs {
                let stderr = String::from_utf8_lossy(&out.stderr);
                match out.status.code() {
                    Some(0) => ok += 1,
                    Some(3) if wait == 0 => {
                        assert!(stderr.contains(BUSY), "{client}: {stderr}");
                        assert!(stderr.contains("nothing was written"), "{stderr}");
                        gave_up += 1;
                    }
                    other => panic!(
                        "{client}, {n} runs, wait {wait}: exit {other:?}\n{stderr}\n{}",
                        String::from_utf8_lossy(&out.stdout)
                    ),
                }
            }
            assert!(ok >= 1, "{client}: somebody synced");
            assert_eq!(
                recorded_runs(&self.store()).await - runs_before,
                ok,
                "{client}: a run that gave up recorded nothing"
            );
            assert_billed_once(&self.sandbox, &client);
        }
        gave_up
    }
}

async fn recorded_runs(store: &Path) -> usize {
    let store = rollcall::store::Store::open(store).await.expect("store");
    store.reports("fleet").await.expect("runs").len()
}

/// `client`'s contacts each once, its two additions each once with every person's seat.
fn assert_billed_once(sandbox: &Sandbox, client: &str) {
    let state = sandbox.state();
    let of_client = |r: &Option<rollcall_connectwise::model::Reference>| {
        r.as_ref().and_then(|r| r.identifier.as_deref()) == Some(client)
    };
    let mut contacts = BTreeMap::<String, usize>::new();
    for c in state.contacts.iter().filter(|c| of_client(&c.company)) {
        let name = format!(
            "{} {}",
            c.first_name,
            c.last_name.clone().unwrap_or_default()
        );
        *contacts.entry(name).or_default() += 1;
    }
    let twice: Vec<_> = contacts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{client}: contacts written twice: {twice:?}"
    );
    assert_eq!(contacts.len(), PEOPLE, "{client}: one contact per person");
    let agreements: Vec<i64> = state
        .agreements
        .iter()
        .filter(|a| of_client(&a.company))
        .map(|a| a.id)
        .collect();
    let additions: Vec<_> = state
        .additions
        .iter()
        .filter(|a| a.agreement_id.is_some_and(|id| agreements.contains(&id)))
        .collect();
    assert_eq!(additions.len(), PRODUCTS, "{client}: {additions:?}");
    for a in additions {
        assert_eq!(
            a.quantity,
            Some(rust_decimal::Decimal::from(PEOPLE)),
            "{client}: seats of {:?}",
            a.product
        );
    }
}

async fn race_in(mode: Mode) {
    let race = Race::new(mode).await;
    for (n, first_client) in [(2, 0), (5, TRIALS)] {
        let gave_up = race.trials(n, first_client).await;
        // Races that never met would prove nothing: with runs started together, some of those
        // that may not wait find the lease taken.
        assert!(gave_up > 0, "{n} runs at once never contended");
    }
    let clients = 2 * TRIALS;
    assert_eq!(
        race.sandbox.writes(),
        (clients * (PEOPLE + PRODUCTS)) as u64,
        "every write made once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_started_together_on_one_store_bill_a_client_once_with_no_queue() {
    race_in(Mode::NoQueue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_started_together_bill_a_client_once_beside_a_sqlite_queue() {
    race_in(Mode::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_started_together_bill_a_client_once_beside_a_redis_queue() {
    if !rollcall_harness::servers_available("runs racing beside redis", &["redis-server"]) {
        return;
    }
    race_in(Mode::Redis(
        RedisServer::start().unwrap_or_else(|e| panic!("{e}")),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_started_together_on_one_postgres_store_bill_a_client_once() {
    let Some(db) = rollcall_harness::PgDatabase::create("runs racing on a postgres store") else {
        return;
    };
    race_in(Mode::Postgres(db)).await;
}
