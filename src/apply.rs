//! Apply: make a plan real, one change at a time, each recorded before and after.
//!
//! Retries, rate limits and reconcile-before-retry live in the connectors' HTTP plumbing; this
//! module decides order and bookkeeping. A client whose change fails stops there (later
//! changes may depend on it) and the other clients go on — except a contact's change: one
//! person's contact is not what the seats, the other contacts or the invoice depend on (seats
//! are counted from the directory), so it is reported and skipped and the client's billing
//! is still written. A saved plan is applied only to a
//! billing state that still matches the one it was made from.

use std::sync::Arc;

use rollcall_core::{BillingSystem, RemoteError};
use serde::Serialize;
use tracing::{Instrument, info, info_span, warn};

use crate::run::{ClientPlan, PipelinePlan, fingerprint};
use crate::store::{LedgerHolder, LedgerSeats, Store, StoreError};

/// What happened to one client's changes.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ClientOutcome {
    pub client: String,
    pub applied: usize,
    /// Creates that found their object already there (an earlier attempt had landed).
    pub reconciled: usize,
    pub state: OutcomeState,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum OutcomeState {
    /// Every change applied (or there were none).
    Done,
    /// Not attempted: the plan was refused or could not be made for this client.
    Skipped { reason: String },
    /// The billing state changed after the saved plan was made.
    Stale { reason: String },
    /// A change failed; the ones before it were applied.
    Failed { error: String, hint: String },
}

/// Asked before every write when a sync runs under a client lock (the queue's workers): a
/// lock that was lost stops the client before its next write.
#[async_trait::async_trait]
pub trait WriteFence: Send + Sync {
    /// `Err` with why, when writing must stop.
    async fn check(&self) -> Result<(), String>;
}

tokio::task_local! {
    static FENCE: Arc<dyn WriteFence>;
}

/// Runs `work` with every write it makes checked by `fence` first.
pub async fn fenced<F: std::future::Future>(fence: Arc<dyn WriteFence>, work: F) -> F::Output {
    FENCE.scope(fence, work).await
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Applies `plan`. With `verify`, each client's billing state is read again first and must
/// match the plan's fingerprint (for saved plans).
pub async fn apply_plan(
    plan: &PipelinePlan,
    billing: Arc<dyn BillingSystem>,
    store: &Store,
    run_id: &str,
    verify: bool,
    progress: &dyn crate::run::Progress,
) -> Result<Vec<ClientOutcome>, ApplyError> {
    let mut outcomes = Vec::new();
    let mut seq = 0u32;
    for client in &plan.clients {
        let n = plan.changes_for(&client.client).count();
        progress.phase(&client.client, &format!("applying {n} change(s)"));
        let span =
            info_span!("apply", run = %run_id, pipeline = %plan.pipeline, client = %client.client);
        let outcome = apply_client(
            plan,
            client,
            billing.as_ref(),
            store,
            run_id,
            verify,
            &mut seq,
        )
        .instrument(span)
        .await?;
        progress.done(&client.client);
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

async fn apply_client(
    plan: &PipelinePlan,
    client: &ClientPlan,
    billing: &dyn BillingSystem,
    store: &Store,
    run_id: &str,
    verify: bool,
    seq: &mut u32,
) -> Result<ClientOutcome, ApplyError> {
    let mut outcome = ClientOutcome {
        client: client.client.clone(),
        applied: 0,
        reconciled: 0,
        state: OutcomeState::Done,
    };
    if let Some(f) = &client.failure {
        outcome.state = OutcomeState::Skipped {
            reason: f.message.clone(),
        };
        return Ok(outcome);
    }
    if let Some(r) = &client.refusal {
        outcome.state = OutcomeState::Skipped {
            reason: r.to_string(),
        };
        return Ok(outcome);
    }
    if client.shadow {
        outcome.state = OutcomeState::Skipped {
            reason: "shadow mode: planned and reported, not written (set `shadow: false` to apply)"
                .into(),
        };
        return Ok(outcome);
    }
    let changes: Vec<_> = plan.changes_for(&client.client).collect();
    if changes.is_empty() {
        record_seats(plan, client, store, run_id).await?;
        return Ok(outcome);
    }
    let Some(account) = &client.resolved else {
        outcome.state = OutcomeState::Skipped {
            reason: "the plan holds no billing account for this client".into(),
        };
        return Ok(outcome);
    };
    if verify {
        let products: Vec<String> = client.seats.iter().map(|s| s.identifier.clone()).collect();
        match billing.read(&client.account, &products).await {
            Ok(now) if Some(fingerprint(&now)) == client.fingerprint && &now.account == account => {
            }
            Ok(_) => {
                outcome.state = OutcomeState::Stale {
                    reason: "the billing system changed since this plan was made; make a new plan and review it".into(),
                };
                return Ok(outcome);
            }
            Err(e) => {
                outcome.state = failed(&e);
                return Ok(outcome);
            }
        }
    }
    // A customer made by this plan is where the changes after it are written.
    let mut account = account.clone();
    let mut skipped: Vec<(String, RemoteError)> = Vec::new();
    for change in changes {
        if let Ok(fence) = FENCE.try_with(Arc::clone)
            && let Err(why) = fence.check().await
        {
            warn!(kind = change.kind(), subject = %change.subject(), %why, "Stopped before a write.");
            outcome.state = OutcomeState::Failed {
                error: why,
                hint: "the job is retried under a new lock; what was written is read back first, so nothing is written twice".into(),
            };
            return Ok(outcome);
        }
        *seq += 1;
        store
            .record_pending(run_id, *seq, &client.client, change)
            .await?;
        match billing.apply(&account, change).await {
            Ok(applied) => {
                if let rollcall_core::Change::CreateCustomer { .. } = change {
                    account.company_id = applied.remote_id.clone();
                }
                store.record_applied(run_id, *seq, &applied).await?;
                info!(kind = change.kind(), subject = %change.subject(), remote_id = %applied.remote_id, reconciled = applied.reconciled, "Applied.");
                outcome.applied += 1;
                outcome.reconciled += usize::from(applied.reconciled);
            }
            Err(e) => {
                store.record_failed(run_id, *seq, &e.to_string()).await?;
                if stands_alone(change) {
                    warn!(kind = change.kind(), subject = %change.subject(), error = %e, "A contact change failed; it is skipped and the client's other changes go on.");
                    skipped.push((change.subject(), e));
                    continue;
                }
                warn!(kind = change.kind(), subject = %change.subject(), error = %e, "A change failed; the client's remaining changes are not sent.");
                outcome.state = failed(&e);
                return Ok(outcome);
            }
        }
    }
    record_seats(plan, client, store, run_id).await?;
    if let Some((_, first)) = skipped.first() {
        let people: Vec<String> = skipped
            .iter()
            .map(|(subject, e)| format!("{subject}: {e}"))
            .collect();
        outcome.state = OutcomeState::Failed {
            error: format!(
                "{} contact change(s) failed and were skipped; the client's other changes were written: {}",
                skipped.len(),
                people.join("; ")
            ),
            hint: first.hint().to_owned(),
        };
    }
    Ok(outcome)
}

/// A change nothing after it depends on: a contact's. Seats, additions and invoices are
/// counted from the directory, not from contacts, and contacts are independent of each
/// other, so a failed one is skipped rather than stopping the client.
fn stands_alone(change: &rollcall_core::Change) -> bool {
    use rollcall_core::Change;
    matches!(
        change,
        Change::CreateContact { .. }
            | Change::UpdateContact { .. }
            | Change::ReactivateContact { .. }
            | Change::DeactivateContact { .. }
    )
}

/// After a client's bill is what the plan said, the ledger says who holds its seats. A read
/// that was incomplete proves nothing about who left, so it leaves the ledger alone.
async fn record_seats(
    plan: &PipelinePlan,
    client: &ClientPlan,
    store: &Store,
    run_id: &str,
) -> Result<(), ApplyError> {
    if client
        .completeness
        .as_ref()
        .is_some_and(|c| c.is_complete())
    {
        // The ledger takes evidence as a map: made here, for the seats being recorded only.
        let evidence: Vec<Vec<std::collections::BTreeMap<String, String>>> = client
            .seats
            .iter()
            .map(|s| {
                s.people
                    .iter()
                    .map(|h| {
                        h.evidence
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.clone()))
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let seats: Vec<LedgerSeats<'_>> = client
            .seats
            .iter()
            .zip(&evidence)
            .map(|(s, evidence)| LedgerSeats {
                product: &s.product,
                rule: &s.rule,
                people: s
                    .people
                    .iter()
                    .zip(evidence)
                    .map(|(h, evidence)| LedgerHolder {
                        person_id: &h.person_id,
                        name: &h.name,
                        evidence,
                        contact: h.contact.as_deref(),
                        by_grace: h.grace_until.is_some(),
                    })
                    .collect(),
            })
            .collect();
        store
            .record_seats(
                &plan.pipeline,
                &client.client,
                run_id,
                client.planned_at.unwrap_or_else(chrono::Utc::now),
                &seats,
            )
            .await?;
    }
    Ok(())
}

fn failed(e: &RemoteError) -> OutcomeState {
    OutcomeState::Failed {
        error: e.to_string(),
        hint: e.hint().to_owned(),
    }
}
