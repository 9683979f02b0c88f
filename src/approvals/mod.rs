//! Pending approvals: a plan a guard refused (or the pipeline's `policy: approve:` held back),
//! kept until a person approves or rejects it.
//!
//! Without this a refused plan ended as an exit code or a failed job and the only way on was
//! `rollcall apply --allow-drop` at the right terminal, with a plan made afresh that nobody had
//! looked at. Here the engine keeps the exact plan a person is asked about — who or what
//! triggered it, why it was refused, the money before and after — and approving it applies
//! *that* plan through the engine (lease, write fence, recorded run, report), never a new one.
//!
//! A plan is made from the billing state read at that moment; the plan carries a fingerprint
//! of it. Approving reads the state again under the client's lease and applies only if it is
//! unchanged: otherwise the approval is superseded and the client planned again, and the new
//! plan waits for its own approval. A newer refused plan for the same client supersedes an
//! older pending one (the same plan again keeps its approval, so a schedule does not make a
//! new one every run); a run that changes the client's bill without needing approval
//! supersedes what was pending; pending approvals expire after the pipeline's
//! `approval_expires_days`.
//!
//! The public API ([`Approvals`], [`approve`]) is what the CLI and the web console share.

pub mod cli;
mod queries;

use std::str::FromStr;

use chrono::{NaiveDate, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use tracing::{info, warn};

use crate::config::Pipeline;
use crate::config::approval::ApproveWhen;
use crate::config::notify::EventKind;
use crate::engine::{Engine, EngineError, Options, Synced, Verdict};
use crate::notify::{self, Event};
use crate::plan::guard::Refusal;
use crate::run::{ClientPlan, PipelinePlan};
use crate::store::Store;

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    /// Waits for a person.
    Pending,
    /// Approved and applied (see `applied_run`).
    Approved,
    /// A person said no.
    Rejected,
    /// The billing system or the directory moved on: a newer plan (or none) replaces it.
    Superseded,
    /// Nobody decided in time.
    Expired,
}

impl ApprovalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Rejected => "rejected",
            ApprovalState::Superseded => "superseded",
            ApprovalState::Expired => "expired",
        }
    }
}

impl std::fmt::Display for ApprovalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ApprovalState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "pending" => ApprovalState::Pending,
            "approved" => ApprovalState::Approved,
            "rejected" => ApprovalState::Rejected,
            "superseded" => ApprovalState::Superseded,
            "expired" => ApprovalState::Expired,
            other => {
                return Err(format!(
                    "`{other}` is not an approval state (pending, approved, rejected, superseded, expired)"
                ));
            }
        })
    }
}

/// One approval, as listed (its plan is fetched with [`Approvals::get`]).
#[derive(Debug, Clone, Serialize)]
pub struct Approval {
    pub id: String,
    pub pipeline: String,
    /// The pipeline file the plan was made from: what `rollcall approve` loads.
    pub pipeline_file: String,
    pub client: String,
    pub state: ApprovalState,
    /// Why the plan was refused or held.
    pub reason: String,
    /// Who or what made the plan: `rollcall run by alice`, `schedule …`, `webhook (client)`.
    pub trigger: String,
    /// When it was kept (RFC 3339, UTC).
    pub created: String,
    /// When a pending approval expires.
    pub expires: String,
    /// The digest of the billing state the plan was made from.
    pub fingerprint: Option<String>,
    pub seats_before: u64,
    pub seats_after: u64,
    /// ISO 4217, or empty when the plan did not say.
    pub currency: String,
    /// What the client is billed per period now, and after the plan.
    pub amount_before: Decimal,
    pub amount_after: Decimal,
    /// The run that refused the plan (its report shows the plan in full).
    pub refused_run: Option<String>,
    /// The day an approved plan was to take effect, when the person approving said one.
    pub effective: Option<String>,
    pub decided_at: Option<String>,
    pub decided_by: Option<String>,
    /// A rejection's reason, or why it was superseded.
    pub note: Option<String>,
    /// The run that applied an approved plan.
    pub applied_run: Option<String>,
    /// The approval that replaced this one.
    pub superseded_by: Option<String>,
}

impl Approval {
    /// The money the plan moves, signed (`-44.00`).
    pub fn amount_change(&self) -> Decimal {
        self.amount_after - self.amount_before
    }
}

impl TryFrom<queries::Row> for Approval {
    type Error = ApprovalError;

    fn try_from(r: queries::Row) -> Result<Self, Self::Error> {
        let unreadable = |what: &str| ApprovalError::Unreadable {
            id: r.id.clone(),
            what: what.to_owned(),
        };
        Ok(Approval {
            state: r.state.parse().map_err(|_| unreadable("state"))?,
            amount_before: r
                .amount_before
                .parse()
                .map_err(|_| unreadable("amount_before"))?,
            amount_after: r
                .amount_after
                .parse()
                .map_err(|_| unreadable("amount_after"))?,
            seats_before: u64::try_from(r.seats_before).unwrap_or(0),
            seats_after: u64::try_from(r.seats_after).unwrap_or(0),
            id: r.id,
            pipeline: r.pipeline,
            pipeline_file: r.pipeline_file,
            client: r.client,
            reason: r.reason,
            trigger: r.trigger,
            created: r.created_at,
            expires: r.expires_at,
            fingerprint: r.fingerprint,
            currency: r.currency,
            refused_run: r.refused_run,
            effective: r.effective,
            decided_at: r.decided_at,
            decided_by: r.decided_by,
            note: r.note,
            applied_run: r.applied_run,
            superseded_by: r.superseded_by,
        })
    }
}

/// A pending approval a sync just kept (or found already kept for the same plan).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Held {
    pub id: String,
    pub client: String,
    pub reason: String,
    /// False when the same plan was already waiting (a schedule refused it again): nobody is
    /// told twice.
    pub new: bool,
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "approval {} pending for client `{}`: review with `rollcall approvals`, then `rollcall approve {}` or `rollcall reject {} --reason …`",
            self.id, self.client, self.id, self.id
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("no approval has the id `{0}` (hint: `rollcall approvals` lists them)")]
    NotFound(String),
    #[error("`{0}` starts more than one approval's id (hint: give more of the id)")]
    Ambiguous(String),
    #[error("approval {id} is {state}, not pending: {hint}")]
    NotPending {
        id: String,
        state: ApprovalState,
        hint: String,
    },
    #[error(
        "approval {id} was made for pipeline `{made_for}`, not `{given}` (hint: approve it with the pipeline it was made from)"
    )]
    WrongPipeline {
        id: String,
        made_for: String,
        given: String,
    },
    #[error(
        "approval {id} is for client `{client}`, which the pipeline no longer has (hint: reject it)"
    )]
    ClientGone { id: String, client: String },
    #[error(
        "approval {id} was kept in a form this rollcall cannot read ({what}) (hint: a newer rollcall may have written it)"
    )]
    Unreadable { id: String, what: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Approvals in a store: list, look at, reject. Approving needs the engine ([`approve`]).
#[derive(Debug, Clone)]
pub struct Approvals {
    store: Store,
}

/// The moment now, as approvals store it.
fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl Approvals {
    /// Approvals kept in `store` (their table is made on first use).
    pub async fn open(store: &Store) -> Result<Approvals, ApprovalError> {
        queries::create(store.db()).await?;
        Ok(Approvals {
            store: store.clone(),
        })
    }

    /// Pending approvals past their time become expired (each told to the pipeline's channels
    /// when `pipelines` holds it).
    async fn expire(&self, pipelines: &[&Pipeline]) -> Result<(), ApprovalError> {
        let expired = queries::expire(self.store.db(), &now()).await?;
        for id in expired {
            info!(approval = %id, "A pending approval expired.");
            if let Some(a) = self.find(&id).await.ok().flatten()
                && let Some(p) = pipelines.iter().find(|p| p.name == a.pipeline)
            {
                self.tell(p, &a, "expired before anyone decided").await;
            }
        }
        Ok(())
    }

    /// The newest approvals first (`state` to pick one kind), at most `limit`.
    pub async fn list(
        &self,
        state: Option<ApprovalState>,
        limit: u32,
    ) -> Result<Vec<Approval>, ApprovalError> {
        self.expire(&[]).await?;
        queries::list(self.store.db(), state, limit)
            .await?
            .into_iter()
            .map(Approval::try_from)
            .collect()
    }

    async fn find(&self, id: &str) -> Result<Option<Approval>, ApprovalError> {
        let id = id.trim();
        if id.is_empty() {
            return Err(ApprovalError::NotFound(id.to_owned()));
        }
        let mut rows = queries::find(self.store.db(), id).await?;
        match rows.len() {
            0 => Ok(None),
            1 => Ok(rows.pop().map(Approval::try_from).transpose()?),
            _ => match rows.into_iter().find(|r| r.id == id) {
                Some(exact) => Ok(Some(Approval::try_from(exact)?)),
                None => Err(ApprovalError::Ambiguous(id.to_owned())),
            },
        }
    }

    /// One approval (by its id or the id's first characters) and the exact plan it holds.
    pub async fn get(&self, id: &str) -> Result<(Approval, PipelinePlan), ApprovalError> {
        self.expire(&[]).await?;
        self.load(id).await
    }

    /// [`Approvals::get`] without expiring anything first.
    async fn load(&self, id: &str) -> Result<(Approval, PipelinePlan), ApprovalError> {
        let approval = self
            .find(id)
            .await?
            .ok_or_else(|| ApprovalError::NotFound(id.to_owned()))?;
        let text = queries::plan(self.store.db(), &approval.id)
            .await?
            .unwrap_or_default();
        let plan = serde_json::from_str(&text).map_err(|_| ApprovalError::Unreadable {
            id: approval.id.clone(),
            what: "plan".into(),
        })?;
        Ok((approval, plan))
    }

    /// Rejects a pending approval: nothing is written, and the plan is not made again until a
    /// later run. `pipeline`, when given, is told through its channels.
    pub async fn reject(
        &self,
        id: &str,
        by: &str,
        reason: &str,
        pipeline: Option<&Pipeline>,
    ) -> Result<Approval, ApprovalError> {
        let (approval, _) = self.get(id).await?;
        pending(&approval)?;
        let at = now();
        let decided = queries::decide(
            self.store.db(),
            &queries::Decision {
                id: &approval.id,
                state: ApprovalState::Rejected,
                at: &at,
                by,
                note: Some(reason),
                effective: None,
                applied_run: None,
                superseded_by: None,
            },
        )
        .await?;
        let (approval, _) = self.get(&approval.id).await?;
        if !decided {
            return Err(not_pending(&approval));
        }
        info!(approval = %approval.id, client = %approval.client, by, "Rejected.");
        if let Some(p) = pipeline {
            self.tell(p, &approval, &format!("rejected by {by}: {reason}"))
                .await;
        }
        Ok(approval)
    }

    /// Tells the pipeline's channels about a decision on `approval`.
    async fn tell(&self, pipeline: &Pipeline, approval: &Approval, what: &str) {
        if !pipeline.notify.wants(EventKind::Approval) {
            return;
        }
        let account = self
            .load(&approval.id)
            .await
            .ok()
            .and_then(|(_, plan)| plan.clients.first().and_then(|c| c.resolved.clone()));
        notify::send(
            pipeline,
            &self.store,
            Event {
                kind: EventKind::Approval,
                pipeline: approval.pipeline.clone(),
                client: approval.client.clone(),
                title: format!("{}: approval {} {what}", approval.client, approval.id),
                detail: format!(
                    "The plan ({} → {} seats, {} → {} {}) was held because {}.",
                    approval.seats_before,
                    approval.seats_after,
                    approval.amount_before,
                    approval.amount_after,
                    approval.currency,
                    approval.reason
                ),
                approval: Some(approval.id.clone()),
                account,
                billed_as: None,
            },
        )
        .await;
    }
}

fn pending(a: &Approval) -> Result<(), ApprovalError> {
    if a.state == ApprovalState::Pending {
        Ok(())
    } else {
        Err(not_pending(a))
    }
}

fn not_pending(a: &Approval) -> ApprovalError {
    let hint = match (a.state, &a.superseded_by) {
        (ApprovalState::Superseded, Some(next)) => {
            format!("it was replaced by approval {next}; review that one")
        }
        (ApprovalState::Approved, _) => format!(
            "it was applied in run {}",
            a.applied_run.as_deref().unwrap_or("?")
        ),
        (ApprovalState::Rejected, _) => "a later run plans the client again".to_owned(),
        _ => "a later run plans the client again; approve what it keeps".to_owned(),
    };
    ApprovalError::NotPending {
        id: a.id.clone(),
        state: a.state,
        hint,
    }
}

/// What approving came to.
#[derive(Debug)]
pub enum Decided {
    /// The plan was applied under the client's lease (the run's outcome may still be a
    /// failure: see its verdict).
    Applied { approval: Approval, synced: Synced },
    /// The billing state moved since the plan was made: nothing was written, the approval is
    /// superseded, and the client's new plan waits as `replaced_by` (or needed no approval
    /// and `synced` is absent; see the docs).
    Superseded {
        approval: Approval,
        replaced_by: Option<Held>,
    },
    /// Approved to take effect on a later day: nothing is written now; the first sync of the
    /// client on or after that day that finds the same plan applies it.
    Scheduled { approval: Approval },
}

impl Decided {
    /// The command's verdict: an applied plan's own, a superseded approval is refused.
    pub fn verdict(&self) -> Verdict {
        match self {
            Decided::Applied { synced, .. } => synced.verdict(),
            Decided::Superseded { .. } => Verdict::Refused,
            Decided::Scheduled { .. } => Verdict::Ok,
        }
    }
}

/// The day it is for `pipeline` (its schedule's zone; the moment it plans as of).
fn today(pipeline: &Pipeline) -> NaiveDate {
    pipeline
        .planned_at()
        .with_timezone(&pipeline.zone())
        .date_naive()
}

/// Approves a pending approval by `by`: applies exactly its plan through `engine` (the
/// client's lease, its billing state read again and compared with the plan's, every write
/// fenced, the run recorded with its report) — or, when the state moved, supersedes it and
/// plans the client again. With an `effective` day after today, the decision is recorded and
/// the plan left for the first sync of the client on or after that day.
pub async fn approve(
    engine: &Engine,
    pipeline: &Pipeline,
    id: &str,
    by: &str,
    effective: Option<NaiveDate>,
    options: &Options<'_>,
) -> Result<Decided, ApprovalError> {
    let approvals = Approvals::open(engine.store()).await?;
    approvals.expire(&[pipeline]).await?;
    let (approval, mut plan) = approvals.get(id).await?;
    pending(&approval)?;
    if let Some(day) = effective
        && day > today(pipeline)
    {
        let day = day.format("%Y-%m-%d").to_string();
        let scheduled =
            queries::schedule(engine.store().db(), &approval.id, by, &now(), &day).await?;
        let (approval, _) = approvals.get(&approval.id).await?;
        if !scheduled {
            return Err(not_pending(&approval));
        }
        approvals
            .tell(
                pipeline,
                &approval,
                &format!("was approved by {by}, to take effect on {day}"),
            )
            .await;
        return Ok(Decided::Scheduled { approval });
    }
    if approval.pipeline != pipeline.name {
        return Err(ApprovalError::WrongPipeline {
            id: approval.id,
            made_for: approval.pipeline,
            given: pipeline.name.clone(),
        });
    }
    let Some(client) = pipeline.client(&approval.client) else {
        return Err(ApprovalError::ClientGone {
            id: approval.id,
            client: approval.client,
        });
    };
    // Approved: the refusal no longer stands. Shadow mode is the pipeline's to say now.
    for c in &mut plan.clients {
        c.refusal = None;
        c.shadow = client.shadow;
    }
    let trigger = format!("approval {} by {by}", approval.id);
    let options = Options {
        command: "approve",
        verify: true,
        trigger: Some(&trigger),
        approval: Some(&approval.id),
        ..*options
    };
    let synced = engine.apply(pipeline, plan, &options).await?;
    let stale = synced
        .outcomes
        .iter()
        .any(|o| matches!(o.state, crate::apply::OutcomeState::Stale { .. }));
    let at = now();
    if stale {
        // Someone else decided while this waited for the client's lease (another replica's
        // console, a second terminal): the state moved because of them. Nothing was written.
        let (now_kept, _) = approvals.load(&approval.id).await?;
        pending(&now_kept)?;
        info!(approval = %approval.id, client = %approval.client, "The billing system changed since the plan was made; planning again.");
        // Planned again as a run would, without applying: the new plan is for a person too.
        let replan_options = Options {
            command: "approve",
            trigger: Some(&trigger),
            ..Options::default()
        };
        let fresh = engine
            .plan(pipeline, Some(&approval.client), &replan_options)
            .await?;
        let replaced_by = keep(
            engine.store(),
            pipeline,
            &fresh,
            &approval.client,
            &format!(
                "re-planned after approval {} went stale: the billing system changed since it was made",
                approval.id
            ),
            &trigger,
            None,
        )
        .await?;
        queries::decide(
            engine.store().db(),
            &queries::Decision {
                id: &approval.id,
                state: ApprovalState::Superseded,
                at: &at,
                by,
                note: Some("the billing system changed after the plan was made; not applied"),
                effective: None,
                applied_run: None,
                superseded_by: Some(&replaced_by.id),
            },
        )
        .await?;
        let (approval, _) = approvals.get(&approval.id).await?;
        approvals
            .tell(
                pipeline,
                &approval,
                &format!(
                    "was superseded: the billing system changed since the plan was made; the new plan waits as approval {}",
                    replaced_by.id
                ),
            )
            .await;
        return Ok(Decided::Superseded {
            approval,
            replaced_by: Some(replaced_by),
        });
    }
    let decided = queries::decide(
        engine.store().db(),
        &queries::Decision {
            id: &approval.id,
            state: ApprovalState::Approved,
            at: &at,
            by,
            note: None,
            effective: effective
                .map(|d| d.format("%Y-%m-%d").to_string())
                .as_deref(),
            applied_run: Some(&synced.run_id),
            superseded_by: None,
        },
    )
    .await?;
    if !decided {
        warn!(approval = %approval.id, "The approval was decided by someone else while its plan was applied.");
    }
    let (approval, _) = approvals.get(&approval.id).await?;
    let how = match synced.verdict() {
        Verdict::Ok => format!("approved by {by} and applied (run {})", synced.run_id),
        _ => format!(
            "approved by {by}; applying it failed part way (run {}): see its report",
            synced.run_id
        ),
    };
    approvals.tell(pipeline, &approval, &how).await;
    Ok(Decided::Applied { approval, synced })
}

/// The one-client plan of `client` out of `plan`.
fn client_plan(plan: &PipelinePlan, client: &ClientPlan) -> PipelinePlan {
    PipelinePlan {
        format: plan.format,
        pipeline: plan.pipeline.clone(),
        target: plan.target.clone(),
        currency: plan.currency,
        clients: vec![client.clone()],
        changes: plan
            .changes
            .iter()
            .filter(|c| *c.client == *client.client)
            .cloned()
            .collect(),
    }
}

/// What the client is billed per period before and after its plan, as the run report counts
/// it, with the currency's code.
pub fn money(plan: &PipelinePlan, client: &ClientPlan) -> (Decimal, Decimal, String) {
    let run = crate::engine::RecordedRun {
        run_id: String::new(),
        at: String::new(),
        plan: client_plan(plan, client),
        outcomes: Vec::new(),
    };
    let report = crate::report::run_report::build(&run, &[]);
    let (before, after) = report
        .clients
        .first()
        .map_or((Decimal::ZERO, Decimal::ZERO), |c| {
            (c.amount_before, c.amount_after)
        });
    (before, after, report.currency)
}

/// Why the pipeline's policy holds `client`'s plan for approval, if it does.
fn held_by_policy(pipeline: &Pipeline, plan: &PipelinePlan, client: &ClientPlan) -> Option<String> {
    let changes: Vec<_> = plan.changes_for(&client.client).collect();
    if changes.is_empty() {
        return None;
    }
    match pipeline.approval.approve {
        ApproveWhen::None => None,
        ApproveWhen::All => Some(format!(
            "the pipeline's policy asks for approval of every change ({} change(s) planned)",
            changes.len()
        )),
        ApproveWhen::Reductions => {
            let (before, after, currency) = money(plan, client);
            let deactivated = changes
                .iter()
                .filter(|c| matches!(c, rollcall_core::Change::DeactivateContact { .. }))
                .count();
            let mut lowers = Vec::new();
            if client.seats_after < client.seats_before {
                lowers.push(format!(
                    "seats {} → {}",
                    client.seats_before, client.seats_after
                ));
            }
            if after < before {
                lowers.push(format!("money {before} → {after} {currency}"));
            }
            if deactivated > 0 {
                lowers.push(format!("{deactivated} contact(s) deactivated"));
            }
            (!lowers.is_empty()).then(|| {
                format!(
                    "the pipeline's policy asks for approval of every reduction ({})",
                    lowers.join(", ")
                )
            })
        }
    }
}

/// Holds back, as refused, every client plan the pipeline's `policy: approve:` says a person
/// must approve first. The engine calls it between planning and applying.
pub fn hold(pipeline: &Pipeline, plan: &mut PipelinePlan) {
    let reasons: Vec<(usize, String)> = plan
        .clients
        .iter()
        .enumerate()
        .filter(|(_, c)| c.may_apply())
        .filter_map(|(i, c)| held_by_policy(pipeline, plan, c).map(|r| (i, r)))
        .collect();
    for (i, reason) in reasons {
        let c = &mut plan.clients[i];
        info!(client = %c.client, %reason, "Held for approval.");
        c.refusal = Some(Refusal {
            client: c.client.clone(),
            seats_before: c.seats_before,
            seats_after: c.seats_after,
            seats_removed: c.seats_before.saturating_sub(c.seats_after),
            reason,
        });
    }
}

/// Who or what a sync was started by, as an approval records it.
fn trigger_of(options: &Options<'_>) -> String {
    match options.trigger {
        Some(t) => t.to_owned(),
        None => format!("rollcall {} by {}", options.command, cli::who()),
    }
}

/// Keeps `client`'s plan out of `plan` as a pending approval; the same plan (same changes,
/// same billing state) already pending keeps its approval. Superseded approvals are told.
async fn keep(
    store: &Store,
    pipeline: &Pipeline,
    plan: &PipelinePlan,
    client: &str,
    reason: &str,
    trigger: &str,
    run_id: Option<&str>,
) -> Result<Held, ApprovalError> {
    let approvals = Approvals::open(store).await?;
    let Some(c) = plan.clients.iter().find(|c| c.client == client) else {
        return Err(ApprovalError::ClientGone {
            id: String::new(),
            client: client.to_owned(),
        });
    };
    let one = client_plan(plan, c);
    if let Some((row, text)) = queries::pending_of(store.db(), &pipeline.name, client).await? {
        let same = serde_json::from_str::<PipelinePlan>(&text).is_ok_and(|kept| {
            kept.changes == one.changes
                && kept.clients.first().and_then(|k| k.fingerprint.clone()) == c.fingerprint
        });
        if same {
            return Ok(Held {
                id: row.id,
                client: client.to_owned(),
                reason: row.reason,
                new: false,
            });
        }
    }
    let (amount_before, amount_after, currency) = money(plan, c);
    let created = Utc::now();
    let file = std::path::absolute(&pipeline.file).unwrap_or_else(|_| pipeline.file.clone());
    let approval = Approval {
        id: new_id(),
        pipeline: pipeline.name.clone(),
        pipeline_file: file.display().to_string(),
        client: client.to_owned(),
        state: ApprovalState::Pending,
        reason: reason.to_owned(),
        trigger: trigger.to_owned(),
        created: created.to_rfc3339_opts(SecondsFormat::Secs, true),
        expires: (created + pipeline.approval.expires_after)
            .to_rfc3339_opts(SecondsFormat::Secs, true),
        fingerprint: c.fingerprint.clone(),
        seats_before: c.seats_before,
        seats_after: c.seats_after,
        currency,
        amount_before,
        amount_after,
        refused_run: run_id.map(str::to_owned),
        effective: None,
        decided_at: None,
        decided_by: None,
        note: None,
        applied_run: None,
        superseded_by: None,
    };
    let text = serde_json::to_string(&one).map_err(|_| ApprovalError::Unreadable {
        id: approval.id.clone(),
        what: "plan".into(),
    })?;
    let superseded = queries::insert(store.db(), &approval, &text).await?;
    info!(approval = %approval.id, client, "Kept the plan as a pending approval.");
    for old in superseded {
        if let Some(a) = approvals.find(&old).await? {
            approvals
                .tell(
                    pipeline,
                    &a,
                    &format!("was superseded by a newer plan, approval {}", approval.id),
                )
                .await;
        }
    }
    Ok(Held {
        id: approval.id,
        client: client.to_owned(),
        reason: reason.to_owned(),
        new: true,
    })
}

/// A short id people can type: 12 hex digits of a random UUID.
fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// After a sync: each client refused by a guard or held by the policy becomes a pending
/// approval (its id on `synced.approvals`), a client whose bill changed without one
/// supersedes what was pending, and the pipeline's channels hear about refusals, failures
/// and lost connections. Nothing here fails the sync: what cannot be kept is logged, and the
/// refusal stands.
pub async fn after_sync(
    engine: &Engine,
    pipeline: &Pipeline,
    mut synced: Synced,
    options: &Options<'_>,
) -> Synced {
    let store = engine.store();
    if let Err(e) = Approvals::open(store).await {
        warn!(error = %e, "Cannot open the approvals; refused plans are not kept for approval.");
        return synced;
    }
    let trigger = trigger_of(options);
    let verdicts = synced.clients();
    for (c, verdict) in synced.plan.clients.iter().zip(&verdicts) {
        match (&c.failure, &c.refusal) {
            (None, Some(refusal)) if options.approval.is_none() => {
                match keep(
                    store,
                    pipeline,
                    &synced.plan,
                    &c.client,
                    &refusal.reason,
                    &trigger,
                    Some(&synced.run_id),
                )
                .await
                {
                    Ok(held) => synced.approvals.push(held),
                    Err(e) => {
                        warn!(client = %c.client, error = %e, "Cannot keep the refused plan for approval.");
                    }
                }
            }
            (Some(failure), _) => {
                let reconnect = failure.hint
                    == rollcall_core::RemoteError::new(
                        "",
                        "",
                        rollcall_core::RemoteErrorKind::ConnectionExpired,
                        "",
                    )
                    .hint();
                let (kind, title) = if reconnect {
                    (
                        EventKind::Reconnect,
                        format!(
                            "{}: the connection to the billing system needs consent again",
                            c.client
                        ),
                    )
                } else {
                    (EventKind::Failed, format!("{}: the sync failed", c.client))
                };
                notify::send(
                    pipeline,
                    store,
                    Event {
                        kind,
                        pipeline: pipeline.name.clone(),
                        client: c.client.clone(),
                        title,
                        detail: format!("{} (hint: {})", failure.message, failure.hint),
                        approval: None,
                        account: c.resolved.clone(),
                        billed_as: Some(c.account.clone()),
                    },
                )
                .await;
            }
            (None, None) => {
                let outcome = synced.outcomes.iter().find(|o| o.client == c.client);
                if let Some(o) = outcome
                    && o.applied > 0
                    && options.approval.is_none()
                {
                    match queries::supersede_pending(
                        store.db(),
                        &pipeline.name,
                        &c.client,
                        &now(),
                        &format!(
                            "run {} changed the client's bill after this plan was made",
                            synced.run_id
                        ),
                    )
                    .await
                    {
                        Ok(ids) if !ids.is_empty() => {
                            info!(client = %c.client, superseded = ?ids, "A later run superseded pending approvals.");
                        }
                        Ok(_) => {}
                        Err(e) => {
                            warn!(client = %c.client, error = %e, "Cannot supersede pending approvals.")
                        }
                    }
                }
                if verdict.verdict == Verdict::Remote {
                    notify::send(
                        pipeline,
                        store,
                        Event {
                            kind: EventKind::Failed,
                            pipeline: pipeline.name.clone(),
                            client: c.client.clone(),
                            title: format!("{}: applying the plan failed", c.client),
                            detail: verdict.detail.clone().unwrap_or_default(),
                            approval: None,
                            account: c.resolved.clone(),
                            billed_as: Some(c.account.clone()),
                        },
                    )
                    .await;
                }
            }
            _ => {}
        }
    }
    if options.approval.is_none() {
        synced = apply_due(engine, pipeline, synced, options).await;
    }
    for held in synced.approvals.iter().filter(|h| h.new) {
        let c = synced.plan.clients.iter().find(|c| c.client == held.client);
        let (before, after, currency) = c.map_or_else(
            || (Decimal::ZERO, Decimal::ZERO, String::new()),
            |c| money(&synced.plan, c),
        );
        notify::send(
            pipeline,
            store,
            Event {
                kind: EventKind::Refused,
                pipeline: pipeline.name.clone(),
                client: held.client.clone(),
                title: format!(
                    "{}: a plan waits for approval ({})",
                    held.client, held.id
                ),
                detail: format!(
                    "Refused because {}. Seats {} → {}, money {before} → {after} {currency}. Triggered by {trigger}.",
                    held.reason,
                    c.map_or(0, |c| c.seats_before),
                    c.map_or(0, |c| c.seats_after),
                ),
                approval: Some(held.id.clone()),
                account: c.and_then(|c| c.resolved.clone()),
                billed_as: c.map(|c| c.account.clone()),
            },
        )
        .await;
    }
    synced
}

/// Applies each plan this sync found still waiting that a person approved to take effect on a
/// day now come, and folds what came of it into `synced` for that client.
async fn apply_due(
    engine: &Engine,
    pipeline: &Pipeline,
    mut synced: Synced,
    options: &Options<'_>,
) -> Synced {
    let Ok(approvals) = Approvals::open(engine.store()).await else {
        return synced;
    };
    let today = today(pipeline).format("%Y-%m-%d").to_string();
    let mut due = Vec::new();
    for held in synced.approvals.iter().filter(|h| !h.new) {
        if let Ok((a, _)) = approvals.load(&held.id).await
            && let (Some(day), Some(by)) = (&a.effective, &a.decided_by)
            && *day <= today
        {
            due.push((a.id.clone(), by.clone()));
        }
    }
    for (id, by) in due {
        let options = Options {
            run_id: None,
            ..*options
        };
        // Approving applies through the engine, which comes back here: boxed, once.
        let decided = Box::pin(approve(engine, pipeline, &id, &by, None, &options)).await;
        match decided {
            Ok(Decided::Applied {
                synced: applied, ..
            }) => {
                info!(approval = %id, run = %applied.run_id, "Applied an approval whose day has come.");
                synced.approvals.retain(|h| h.id != id);
                for c in applied.plan.clients {
                    synced.plan.changes.retain(|ch| *ch.client != *c.client);
                    synced.outcomes.retain(|o| o.client != c.client);
                    if let Some(slot) = synced
                        .plan
                        .clients
                        .iter_mut()
                        .find(|p| p.client == c.client)
                    {
                        *slot = c;
                    }
                }
                synced.plan.changes.extend(applied.plan.changes);
                synced.outcomes.extend(applied.outcomes);
            }
            Ok(Decided::Superseded { replaced_by, .. }) => {
                synced.approvals.retain(|h| h.id != id);
                synced.approvals.extend(replaced_by);
            }
            Ok(Decided::Scheduled { .. }) => {}
            Err(e) => {
                warn!(approval = %id, error = %e, "Cannot apply an approval whose day has come.")
            }
        }
    }
    synced
}

/// Parses an effective date (`YYYY-MM-DD`).
pub fn parse_day(text: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|_| format!("`{text}` is not a day (hint: write it as YYYY-MM-DD)"))
}
