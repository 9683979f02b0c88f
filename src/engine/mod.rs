//! The sync engine: one sync of a pipeline (or of one client of it), end to end. It is the
//! only way anything syncs: `rollcall run` and `apply`, the queue's workers (and so `serve`),
//! the demo and the tests all come here.
//!
//! A sync takes its clients' leases before anything else, always: a row per client in the
//! store itself (taken inside an immediate transaction, with a fence that grows with every
//! lease) and, when a queue is there, the queue's lease too. Only then does it read and plan,
//! so the plan is made from what the billing system holds once any earlier writer is done;
//! every write is preceded by a check that renews the leases (the write fence). Two cron
//! entries, two people at two terminals, or a run by hand beside a worker therefore never
//! write for one client at once: the second waits and then plans from what the first wrote,
//! or gives up after `--lock-wait-seconds` having written nothing. Planning before the lease
//! is what once let two runs each create every contact of a client.
//!
//! What came of a sync is a typed [`Synced`] with a [`Verdict`] per client; the CLI maps
//! verdicts to exit codes and the queue to job results. Run options are passed in
//! ([`Options`]), never kept in statics, so one process (the demo, a worker, a test) can run
//! many syncs each with its own.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rollcall_core::BillingSystem;
use serde::Serialize;

use crate::apply::{self, ClientOutcome, OutcomeState, WriteFence};
use crate::config::{Client, Pipeline};
use crate::queue::locks::{ClientLocks, LeaseSet, LeaseSetError, LockError};
use crate::report::run_report::{self, RunReport};
use crate::run::{self, FailureClass, PipelinePlan, Progress};
use crate::store::{RunRecord, Store, StoreError};

/// A lease's time when nobody says otherwise: a killed run's clients are free again after it.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// How one sync runs.
#[derive(Clone, Copy)]
pub struct Options<'a> {
    /// What the run is recorded as (`run`, `apply`, `worker`, `demo`, `test`).
    pub command: &'a str,
    /// Let plans through that remove more seats or contacts than the guard allows.
    pub allow_drop: bool,
    /// How long to wait for a client another sync holds before giving up.
    pub lock_wait: Duration,
    /// Read each client's billing state again under the lease and apply only if it is still
    /// the one the plan was made from (a saved plan, or one a person took time to confirm).
    pub verify: bool,
    /// The id to record the run under (the invocation's, shared with its logs); a new one
    /// when absent or already taken by an earlier run.
    pub run_id: Option<&'a str>,
    /// Who watches the run: the CLI's progress bars, or nobody.
    pub progress: &'a dyn Progress,
    /// Who or what started the sync, as a pending approval records it (a queued job's
    /// trigger); by default the command and the user running it.
    pub trigger: Option<&'a str>,
    /// The approval whose plan this is: applied as it stands, neither held by the pipeline's
    /// approval policy nor kept as a new approval (`crate::approvals`).
    pub approval: Option<&'a str>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            command: "run",
            allow_drop: false,
            lock_wait: Duration::from_secs(60),
            verify: false,
            run_id: None,
            progress: &run::Quiet,
            trigger: None,
            approval: None,
        }
    }
}

impl std::fmt::Debug for Options<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("command", &self.command)
            .field("allow_drop", &self.allow_drop)
            .field("lock_wait", &self.lock_wait)
            .field("verify", &self.verify)
            .field("run_id", &self.run_id)
            .field("trigger", &self.trigger)
            .field("approval", &self.approval)
            .finish_non_exhaustive()
    }
}

/// How a sync, or one client of it, ended: the CLI's exit code, the queue's job result.
/// Ordered by what a command reports when clients ended differently: a remote failure
/// outranks a refusal, which outranks bad input, which outranks success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Planned and applied (or nothing to do, or shadow mode).
    Ok,
    /// The pipeline's rules could not be evaluated on the data: the user's to fix.
    Invalid,
    /// A guard refused, a final invoice differs, or a saved plan went stale: a person decides.
    Refused,
    /// A directory, a billing system, the store or a lease failed.
    Remote,
}

impl Verdict {
    /// What a plan calls for on its own, before anything is applied.
    pub fn of_plan(plan: &PipelinePlan) -> Verdict {
        plan.clients
            .iter()
            .map(|c| plan_verdict(c).0)
            .max()
            .unwrap_or(Verdict::Ok)
    }

    /// What applying came to.
    pub fn of_outcomes(outcomes: &[ClientOutcome]) -> Verdict {
        outcomes
            .iter()
            .map(|o| outcome_verdict(o).0)
            .max()
            .unwrap_or(Verdict::Ok)
    }
}

fn plan_verdict(c: &run::ClientPlan) -> (Verdict, Option<String>) {
    match (&c.failure, &c.refusal) {
        (Some(f), _) => (
            match f.class {
                FailureClass::Invalid => Verdict::Invalid,
                FailureClass::Remote => Verdict::Remote,
            },
            Some(format!("{} (hint: {})", f.message, f.hint)),
        ),
        (None, Some(r)) => (Verdict::Refused, Some(r.to_string())),
        // A final invoice the bill no longer matches waits for a person, like a refusal.
        (None, None) if !c.conflicts.is_empty() => (Verdict::Refused, Some(c.conflicts.join("; "))),
        (None, None) => (Verdict::Ok, None),
    }
}

fn outcome_verdict(o: &ClientOutcome) -> (Verdict, Option<String>) {
    match &o.state {
        OutcomeState::Done | OutcomeState::Skipped { .. } => (Verdict::Ok, None),
        OutcomeState::Stale { reason } => (Verdict::Refused, Some(reason.clone())),
        OutcomeState::Failed { error, hint } => {
            (Verdict::Remote, Some(format!("{error} (hint: {hint})")))
        }
    }
}

/// One client's verdict and, unless it is ok, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientVerdict {
    pub client: String,
    pub verdict: Verdict,
    pub detail: Option<String>,
}

/// What a sync (or the apply of a plan made earlier) came to.
#[derive(Debug, Clone)]
pub struct Synced {
    /// The id the run is recorded under (`rollcall report ID`, `rollcall history`).
    pub run_id: String,
    pub plan: PipelinePlan,
    pub outcomes: Vec<ClientOutcome>,
    /// The run's HTML report beside the store, when it could be written.
    pub report: Option<PathBuf>,
    /// The clients whose plans wait for a person, each with its approval's id.
    pub approvals: Vec<crate::approvals::Held>,
}

impl Synced {
    /// The worst of every client's verdict.
    pub fn verdict(&self) -> Verdict {
        Verdict::of_plan(&self.plan).max(Verdict::of_outcomes(&self.outcomes))
    }

    /// Each client's verdict, in the plan's order: what planning said, or else what applying
    /// came to.
    pub fn clients(&self) -> Vec<ClientVerdict> {
        self.plan
            .clients
            .iter()
            .map(|c| {
                let planned = plan_verdict(c);
                let applied = self
                    .outcomes
                    .iter()
                    .find(|o| o.client == c.client)
                    .map_or((Verdict::Ok, None), outcome_verdict);
                let (verdict, detail) = if applied.0 > planned.0 {
                    applied
                } else {
                    planned
                };
                ClientVerdict {
                    client: c.client.clone(),
                    verdict,
                    detail,
                }
            })
            .collect()
    }
}

/// Why a sync could not run at all (a client's own failures are in its [`Verdict`]).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Another sync held a client past the wait; nothing was written.
    #[error(transparent)]
    Busy(LeaseSetError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot set up the billing system's client: {0}")]
    Billing(String),
}

impl From<LeaseSetError> for EngineError {
    fn from(e: LeaseSetError) -> Self {
        match e {
            LeaseSetError::Lock(e) => EngineError::Lock(e),
            busy => EngineError::Busy(busy),
        }
    }
}

impl From<apply::ApplyError> for EngineError {
    fn from(e: apply::ApplyError) -> Self {
        match e {
            apply::ApplyError::Store(e) => EngineError::Store(e),
        }
    }
}

/// Runs syncs on one store, under leases kept in the store and, optionally, beside a queue.
#[derive(Clone)]
pub struct Engine {
    store: Store,
    /// Where leases are taken, in this order: the store's, then the queue's.
    locks: Vec<Arc<dyn ClientLocks>>,
    holder: String,
    lease: Duration,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("store", &self.store)
            .field("lock_stores", &self.locks.len())
            .field("holder", &self.holder)
            .field("lease", &self.lease)
            .finish()
    }
}

impl Engine {
    /// An engine on `store`, its leases kept in the store (its file, or its PostgreSQL server).
    pub async fn new(store: Store) -> Result<Engine, LockError> {
        let in_store = crate::queue::locks::store_locks(store.db()).await?;
        Ok(Engine {
            store,
            locks: vec![in_store],
            holder: format!("rollcall (pid {})", std::process::id()),
            lease: DEFAULT_LEASE,
        })
    }

    /// Also takes every lease in `locks` (the queue's), after the store's: workers on other
    /// machines share the queue, not the store.
    pub fn with_locks(mut self, locks: Arc<dyn ClientLocks>) -> Engine {
        self.locks.push(locks);
        self
    }

    /// Who holds this engine's leases, as a lease store shows it (a worker's name).
    pub fn holder(mut self, holder: impl Into<String>) -> Engine {
        self.holder = holder.into();
        self
    }

    /// How long a lease lasts unless renewed (renewed every third of it, and before every write).
    pub fn lease(mut self, lease: Duration) -> Engine {
        self.lease = lease.max(Duration::from_millis(300));
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The billing system's client, built once per run.
    fn billing(&self, pipeline: &Pipeline) -> Result<Arc<dyn BillingSystem>, EngineError> {
        pipeline
            .target
            .build(&self.store.build_context().for_pipeline(&pipeline.name))
            .map_err(|e| EngineError::Billing(e.message))
    }

    /// A plan to show, writing nothing and taking no lease (a plan applied later is verified
    /// under the lease first).
    pub async fn plan(
        &self,
        pipeline: &Pipeline,
        only: Option<&str>,
        options: &Options<'_>,
    ) -> Result<PipelinePlan, EngineError> {
        let billing = self.billing(pipeline)?;
        let mut plan = self.plan_with(billing, pipeline, only, options).await;
        if options.approval.is_none() {
            crate::approvals::hold(pipeline, &mut plan);
        }
        Ok(plan)
    }

    async fn plan_with(
        &self,
        billing: Arc<dyn BillingSystem>,
        pipeline: &Pipeline,
        only: Option<&str>,
        options: &Options<'_>,
    ) -> PipelinePlan {
        run::plan_pipeline(
            pipeline,
            billing,
            &self.store,
            only,
            options.allow_drop,
            options.progress,
        )
        .await
    }

    /// One sync: the leases of every client (or of `only`), then plan, guard and apply under
    /// them, recorded, with its report written.
    pub async fn sync(
        &self,
        pipeline: &Pipeline,
        only: Option<&str>,
        options: &Options<'_>,
    ) -> Result<Synced, EngineError> {
        let billing = self.billing(pipeline)?;
        let clients: Vec<&Client> = match only {
            Some(name) => pipeline.client(name).into_iter().collect(),
            None => pipeline.clients.iter().collect(),
        };
        let synced = self
            .leased(pipeline, &clients, options, async {
                let mut plan = self
                    .plan_with(billing.clone(), pipeline, only, options)
                    .await;
                crate::approvals::hold(pipeline, &mut plan);
                self.apply_recorded(plan, billing, options).await
            })
            .await?;
        Ok(crate::approvals::after_sync(self, pipeline, synced, options).await)
    }

    /// Applies a plan made earlier (saved, or shown and confirmed) under its clients' leases.
    pub async fn apply(
        &self,
        pipeline: &Pipeline,
        mut plan: PipelinePlan,
        options: &Options<'_>,
    ) -> Result<Synced, EngineError> {
        let billing = self.billing(pipeline)?;
        if options.approval.is_none() {
            crate::approvals::hold(pipeline, &mut plan);
        }
        let clients: Vec<&Client> = plan
            .clients
            .iter()
            .filter_map(|c| pipeline.client(&c.client))
            .collect();
        let synced = self
            .leased(
                pipeline,
                &clients,
                options,
                self.apply_recorded(plan, billing, options),
            )
            .await?;
        Ok(crate::approvals::after_sync(self, pipeline, synced, options).await)
    }

    /// Runs `work` holding every lease `clients` need, each write it makes checked first.
    async fn leased<T>(
        &self,
        pipeline: &Pipeline,
        clients: &[&Client],
        options: &Options<'_>,
        work: impl std::future::Future<Output = Result<T, EngineError>>,
    ) -> Result<T, EngineError> {
        let keys = clients.iter().map(|c| lease_key(pipeline, c)).collect();
        let set = Arc::new(
            LeaseSet::acquire(
                &self.locks,
                keys,
                &self.holder,
                self.lease,
                options.lock_wait,
            )
            .await?,
        );
        let fence: Arc<dyn WriteFence> = set.clone();
        let result = apply::fenced(fence, work).await;
        set.release().await;
        result
    }

    /// Applies `plan` as a recorded run: the run, every change before and after, the plan and
    /// its outcomes for the report, the report itself beside the store.
    async fn apply_recorded(
        &self,
        plan: PipelinePlan,
        billing: Arc<dyn BillingSystem>,
        options: &Options<'_>,
    ) -> Result<Synced, EngineError> {
        let store = &self.store;
        // The invocation's id names its first run; another run in one invocation (the demo,
        // a test) is a run of its own.
        let run_id = match options.run_id {
            Some(id) if !store.has_run(id).await? => id.to_owned(),
            _ => uuid::Uuid::now_v7().to_string(),
        };
        store
            .begin_run(&run_id, &plan.pipeline, options.command)
            .await?;
        options.progress.stage("applying");
        let outcomes = apply::apply_plan(
            &plan,
            billing,
            store,
            &run_id,
            options.verify,
            options.progress,
        )
        .await?;
        store
            .save_report(&run_id, &plan.pipeline, &plan, &outcomes)
            .await?;
        let report = write_report(store, &run_id).await;
        let synced = Synced {
            run_id,
            plan,
            outcomes,
            report,
            approvals: Vec::new(),
        };
        let verdict = format!("{:?}", synced.verdict()).to_lowercase();
        store.finish_run(&synced.run_id, &verdict).await?;
        Ok(synced)
    }
}

/// The lease a sync of `client` holds: one per pipeline and write scope (sites invoiced
/// together share their `bill_to` invoice's).
pub fn lease_key(pipeline: &Pipeline, client: &Client) -> String {
    format!("{}/{}", pipeline.name, client.write_scope())
}

/// A run as recorded: what it planned and what came of it (what reports are made from).
#[derive(Debug, Clone)]
pub struct RecordedRun {
    pub run_id: String,
    /// When it was recorded (RFC 3339).
    pub at: String,
    pub plan: PipelinePlan,
    pub outcomes: Vec<ClientOutcome>,
}

impl TryFrom<RunRecord> for RecordedRun {
    type Error = serde_json::Error;

    fn try_from(r: RunRecord) -> Result<Self, Self::Error> {
        Ok(RecordedRun {
            plan: serde_json::from_str(&r.plan)?,
            outcomes: serde_json::from_str(&r.outcomes)?,
            run_id: r.run_id,
            at: r.at,
        })
    }
}

/// Why a recorded run's report cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "run `{run_id}` was recorded in a form this rollcall cannot read: {error} (hint: a newer rollcall may have written it)"
    )]
    Unreadable {
        run_id: String,
        error: serde_json::Error,
    },
}

/// A recorded run's report, with the pipeline's earlier runs behind its seat charts; `None`
/// when no run has that id. An earlier run this rollcall cannot read is left out of the
/// charts rather than failing the report.
pub async fn recorded_report(
    store: &Store,
    run_id: &str,
) -> Result<Option<RunReport>, RecordError> {
    let Some(record) = store.report(run_id).await? else {
        return Ok(None);
    };
    let run = RecordedRun::try_from(record).map_err(|error| RecordError::Unreadable {
        run_id: run_id.to_owned(),
        error,
    })?;
    let history: Vec<RecordedRun> = store
        .reports(&run.plan.pipeline)
        .await?
        .into_iter()
        .filter_map(|r| {
            let id = r.run_id.clone();
            RecordedRun::try_from(r)
                .inspect_err(|e| tracing::warn!(run = %id, error = %e, "Left an unreadable run out of the report's history."))
                .ok()
        })
        .collect();
    Ok(Some(run_report::build(&run, &history)))
}

/// Every run leaves its HTML report beside the store; a failure to write it is not the run's.
async fn write_report(store: &Store, run_id: &str) -> Option<PathBuf> {
    let html = match recorded_report(store, run_id).await {
        Ok(Some(report)) => run_report::html(&report, run_report::TEMPLATE),
        Ok(None) => Err("the run was not recorded".to_owned()),
        Err(e) => Err(e.to_string()),
    };
    let path = store.report_path(run_id);
    let written = html.and_then(|html| {
        crate::store_file::write_private(&path, html.as_bytes()).map_err(|e| e.to_string())
    });
    match written {
        Ok(()) => {
            tracing::info!(report = %path.display(), "Wrote the run report.");
            Some(path)
        }
        Err(e) => {
            tracing::warn!(error = %e, "Cannot write the run report.");
            None
        }
    }
}

/// A plan of `pipeline` on `store`, shown to nobody (tests, benchmarks, scripts).
pub async fn plan(
    pipeline: &Pipeline,
    store: &Store,
    only: Option<&str>,
    allow_drop: bool,
) -> Result<PipelinePlan, EngineError> {
    let options = Options {
        allow_drop,
        ..Options::default()
    };
    Engine::new(store.clone())
        .await?
        .plan(pipeline, only, &options)
        .await
}

/// Applies `plan` on `store` under its clients' leases, recorded as `command`; with `verify`,
/// only to billing states that still match the plan's.
pub async fn apply(
    store: &Store,
    pipeline: &Pipeline,
    plan: &PipelinePlan,
    command: &str,
    verify: bool,
) -> Result<Vec<ClientOutcome>, EngineError> {
    let options = Options {
        command,
        verify,
        ..Options::default()
    };
    let synced = Engine::new(store.clone())
        .await?
        .apply(pipeline, plan.clone(), &options)
        .await?;
    Ok(synced.outcomes)
}
