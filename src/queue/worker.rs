//! The worker: takes sync jobs off the queue and runs each as `rollcall run --client` would,
//! under the client's lock.
//!
//! apalis drives the loop (fetching, heartbeats, giving a dead worker's jobs to another,
//! retries with backoff); each job is one sync by the engine ([`crate::engine`]), which takes
//! the client's lease in the store and in the queue's lock store (sister sites invoiced to one
//! `bill_to` share one, [`Client::write_scope`](crate::config::Client::write_scope)) and checks
//! it before every write, so two workers — or a worker and a `rollcall run` — never write for
//! one client, or one shared invoice, at once, and a worker that lost its lease stops. A job
//! killed half way is simply run again: the plan is made from what the billing system holds
//! now, so what the first attempt wrote is not written twice.
//!
//! Every worker also ticks the pipelines' schedules; a tick's jobs carry an idempotency key
//! (pipeline, client, time), so however many workers tick, each scheduled run is queued once.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis::layers::retry::RetryPolicy;
use apalis::prelude::*;
use futures::StreamExt;
use tracing::{Instrument, info, info_span, warn};

use super::{Queue, SyncJob, Trigger};
use crate::config::Pipeline;
use crate::engine::{Engine, Verdict};
use crate::metrics::Metrics;
use crate::store::Store;

/// How often an idle worker asks the queue for work: the most a queued job waits for an idle
/// worker (apalis would otherwise only look on its heartbeat).
const POLL: Duration = Duration::from_millis(200);

/// How a worker runs its jobs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Unique per process: apalis refuses a name still alive (host, pid and a random part).
    pub name: String,
    /// Jobs run at once by this worker.
    pub concurrency: usize,
    /// Attempts per job before it is left failed (`rollcall jobs --failed`).
    pub attempts: usize,
    /// A client lease's time: a killed worker's client is free again after this.
    pub lock_ttl: Duration,
    /// How long a job waits for a client another worker is syncing before it fails (and is
    /// retried).
    pub lock_wait: Duration,
    /// The first retry's wait; later ones wait longer (up to 30 times this).
    pub retry_backoff: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            name: unique_name("worker"),
            concurrency: 2,
            attempts: 3,
            lock_ttl: Duration::from_secs(30),
            lock_wait: Duration::from_secs(60),
            retry_backoff: Duration::from_secs(2),
        }
    }
}

/// `role-host-pid-random`.
pub fn unique_name(role: &str) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{role}-{host}-{}-{}", std::process::id(), &random[..8])
}

/// Why a job failed (its attempts are retried; the last error is kept for `rollcall jobs`).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(
        "no pipeline named `{0}` is served by this worker (hint: start the worker with that pipeline's file)"
    )]
    UnknownPipeline(String),
    #[error("pipeline `{pipeline}` has no client `{client}`")]
    UnknownClient { pipeline: String, client: String },
    #[error("client `{0}` stayed locked by another worker; the job is retried")]
    Busy(String),
    #[error(transparent)]
    Lock(#[from] super::locks::LockError),
    #[error("{0}")]
    Sync(String),
    #[error("the job's task stopped: {0}")]
    Join(String),
}

/// How a job that ran ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// Planned and applied (possibly nothing to change).
    Done,
    /// A guard refused the plan: nothing written, not retried (an engineer must look).
    Refused,
}

/// What every job of one worker process shares.
pub struct JobRunner {
    pipelines: Vec<Arc<Pipeline>>,
    queue: Queue,
    /// Syncs under the store's lease and the queue's.
    engine: Engine,
    options: WorkerOptions,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for JobRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRunner")
            .field("pipelines", &self.pipelines.len())
            .field("queue", &self.queue)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl JobRunner {
    pub async fn new(
        pipelines: Vec<Arc<Pipeline>>,
        store: Store,
        queue: Queue,
        options: WorkerOptions,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<JobRunner>, super::locks::LockError> {
        let engine = Engine::new(store)
            .await?
            .with_locks(queue.locks().await?)
            .holder(options.name.clone())
            .lease(options.lock_ttl);
        Ok(Arc::new(JobRunner {
            pipelines,
            queue,
            engine,
            options,
            metrics,
        }))
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// One job, start to end: the lease, the plan, the apply, the bookkeeping.
    pub async fn sync(&self, job: &SyncJob, id: &str) -> Result<JobOutcome, JobError> {
        let started = Instant::now();
        let result = self.sync_locked(job).await;
        let outcome = match &result {
            Ok(JobOutcome::Done) => "done",
            Ok(JobOutcome::Refused) => "refused",
            Err(JobError::Busy(_)) => "busy",
            Err(_) => "failed",
        };
        self.metrics.count(
            "rollcall_jobs_total",
            &[("pipeline", &job.pipeline), ("outcome", outcome)],
        );
        self.metrics.add(
            "rollcall_sync_seconds_sum",
            &[("pipeline", &job.pipeline)],
            started.elapsed().as_secs_f64(),
        );
        self.metrics.count(
            "rollcall_sync_seconds_count",
            &[("pipeline", &job.pipeline)],
        );
        if let Err(e) = &result {
            warn!(job = id, pipeline = %job.pipeline, client = %job.client, error = %e, "The job failed.");
            if let Err(record) = self.queue.record_error(id, &e.to_string()).await {
                warn!(error = %record, "Could not keep the job's error beside the queue.");
            }
        }
        result
    }

    async fn sync_locked(&self, job: &SyncJob) -> Result<JobOutcome, JobError> {
        let pipeline = self
            .pipelines
            .iter()
            .find(|p| p.name == job.pipeline)
            .ok_or_else(|| JobError::UnknownPipeline(job.pipeline.clone()))?;
        let client = pipeline
            .client(&job.client)
            .ok_or_else(|| JobError::UnknownClient {
                pipeline: job.pipeline.clone(),
                client: job.client.clone(),
            })?
            .name
            .clone();
        let trigger = job.trigger.to_string();
        let options = crate::engine::Options {
            command: "worker",
            lock_wait: self.options.lock_wait,
            trigger: Some(&trigger),
            ..Default::default()
        };
        let synced = match self.engine.sync(pipeline, Some(&client), &options).await {
            Ok(synced) => synced,
            Err(crate::engine::EngineError::Busy(_)) => return Err(JobError::Busy(client)),
            Err(crate::engine::EngineError::Lock(e)) => return Err(JobError::Lock(e)),
            Err(e) => return Err(JobError::Sync(e.to_string())),
        };
        for c in &synced.plan.clients {
            self.metrics.set(
                "rollcall_seats",
                &[("pipeline", &pipeline.name), ("client", &c.client)],
                c.seats_after as f64,
            );
        }
        let clients = synced.clients();
        let failed = clients
            .iter()
            .filter(|c| matches!(c.verdict, Verdict::Remote | Verdict::Invalid))
            .max_by_key(|c| c.verdict);
        if let Some(c) = failed {
            return Err(JobError::Sync(c.detail.clone().unwrap_or_default()));
        }
        Ok(match synced.verdict() {
            Verdict::Refused => JobOutcome::Refused,
            _ => JobOutcome::Done,
        })
    }
}

/// The lease a sync of `client` holds (the engine's).
pub use crate::engine::lease_key;

/// The apalis handler: the sync runs on a blocking thread driving this runtime, because the
/// planner's future is not `Send` (its directory streams are not), and apalis's are.
async fn run_job(
    job: SyncJob,
    id: TaskId,
    runner: Data<Arc<JobRunner>>,
) -> Result<(), BoxDynError> {
    let runner: Arc<JobRunner> = (*runner).clone();
    let id = id.to_string();
    let span = info_span!("job", job = %id, pipeline = %job.pipeline, client = %job.client, trigger = %job.trigger);
    let handle = tokio::runtime::Handle::current();
    let outcome = tokio::task::spawn_blocking(move || {
        handle.block_on(async move { runner.sync(&job, &id).await }.instrument(span))
    })
    .await
    .map_err(|e| JobError::Join(e.to_string()))?;
    outcome?;
    Ok(())
}

/// Runs the worker until `shutdown` completes.
pub async fn run(
    runner: Arc<JobRunner>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let options = runner.options.clone();
    let retries = options.attempts.saturating_sub(1);
    // Remote failures are mostly transient (a vendor's bad minute): wait longer each time.
    let backoff = tower::retry::backoff::ExponentialBackoffMaker::new(
        options.retry_backoff,
        options.retry_backoff * 30,
        0.5,
        tower::util::rng::HasherRng::default(),
    )
    .map(|mut maker| tower::retry::backoff::MakeBackoff::make_backoff(&mut maker))
    .map_err(|e| WorkerError::from(std::io::Error::other(e.to_string())))?;
    // One shutdown for every incarnation of the apalis worker below.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let mut incarnation = 0u32;
    loop {
        // A restarted worker registers under a new name: apalis refuses a name seen alive.
        let name = if incarnation == 0 {
            options.name.clone()
        } else {
            format!("{}-{incarnation}", options.name)
        };
        let mut waiting = stopped.clone();
        let until = async move {
            let _ = waiting.wait_for(|s| *s).await;
            Ok::<(), std::io::Error>(())
        };
        info!(worker = %name, concurrency = options.concurrency, queue = ?runner.queue, "Worker started.");
        // The two backends are different types behind one builder chain.
        macro_rules! run_on {
            ($storage:expr) => {
                WorkerBuilder::new(name.as_str())
                    .backend($storage.poll_with_interval(POLL))
                    .concurrency(options.concurrency.max(1))
                    .retry(RetryPolicy::retries(retries).with_backoff(backoff.clone()))
                    .data(runner.clone())
                    .build(run_job)
                    .run_until(until)
                    .await
            };
        }
        let ended = match runner.queue.clone() {
            Queue::Sqlite { storage, .. } => run_on!(storage),
            Queue::Redis { storage, .. } => run_on!(storage),
        };
        if *stopped.borrow() {
            return ended;
        }
        // The queue dropped this worker (taken for dead after missed heartbeats on an
        // overloaded machine, or Redis restarted): its jobs went back to the queue, and this
        // process joins again rather than exiting.
        match ended {
            Ok(()) => warn!(worker = %name, "The worker stopped on its own; starting it again."),
            Err(e) => {
                warn!(worker = %name, error = %e, "The worker lost the queue; starting it again.")
            }
        }
        runner.metrics.count("rollcall_worker_restarts_total", &[]);
        incarnation += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The idempotency key of one client's run at one scheduled time.
pub fn schedule_key(pipeline: &str, client: &str, at: chrono::DateTime<chrono::Utc>) -> String {
    format!("schedule:{pipeline}:{client}:{}", at.timestamp())
}

/// Ticks every pipeline's schedule for as long as the process runs, queuing one job per
/// client per tick (once, however many processes tick).
pub fn start_schedules(pipelines: &[Arc<Pipeline>], queue: &Queue, metrics: &Arc<Metrics>) {
    for pipeline in pipelines {
        let Some(schedule) = pipeline.schedule.clone() else {
            continue;
        };
        let (pipeline, queue, metrics) = (pipeline.clone(), queue.clone(), metrics.clone());
        tokio::spawn(async move {
            let Ok(cron) = cron::Schedule::from_str(&schedule.cron) else {
                return;
            };
            let mut ticks = Box::pin(
                apalis_cron::CronScheduler::new(cron)
                    .with_timezone(schedule.timezone)
                    .into_stream(),
            );
            while let Some(tick) = ticks.next().await {
                let Ok(tick) = tick else { continue };
                let secs = i64::try_from(tick.get_timestamp()).unwrap_or_default();
                let Some(at) = chrono::DateTime::from_timestamp(secs, 0) else {
                    continue;
                };
                info!(pipeline = %pipeline.name, %at, "Scheduled run: queuing every client.");
                metrics.count(
                    "rollcall_scheduled_runs_total",
                    &[("pipeline", &pipeline.name)],
                );
                enqueue_tick(&pipeline, &queue, at).await;
            }
        });
    }
}

/// Queues one scheduled run's jobs.
pub async fn enqueue_tick(pipeline: &Pipeline, queue: &Queue, at: chrono::DateTime<chrono::Utc>) {
    for c in &pipeline.clients {
        let job = SyncJob {
            pipeline: pipeline.name.clone(),
            client: c.name.clone(),
            trigger: Trigger::Schedule { at },
        };
        let key = schedule_key(&pipeline.name, &c.name, at);
        if let Err(e) = queue.push(job, Some(&key)).await {
            warn!(client = %c.name, error = %e, "Could not queue a scheduled sync.");
        }
    }
}
