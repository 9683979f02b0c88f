//! Pending approvals in the console: the list, one approval with its plan's difference, and
//! the Approve and Reject buttons.
//!
//! A plan a guard refused waits for a person (`crate::approvals`); until now that person had to
//! be at a terminal with the store. Here they see what the plan would do (people and seats
//! added and removed, each invoice line's quantity and amount before and after) and decide
//! through the same functions `rollcall approve` and `rollcall reject` call, so a stale
//! approval is superseded and planned again, never applied blind.
//!
//! Decisions on one approval are taken one at a time in this process: a double click or a
//! second tab waits for the first decision and is then told the approval was already decided,
//! rather than starting a second apply. (Across replicas, the client's lease and the plan's
//! billing-state fingerprint keep a second apply from writing anything.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Extension;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use rollcall_core::Change;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Digest;
use tracing::{info, warn};

use super::Console;
use super::auth::{SignedIn, encode_component};
use super::views::client_href;
use crate::approvals::{Approval, ApprovalError, ApprovalState, Approvals, Decided};
use crate::engine::{Engine, EngineError, Options, RecordedRun, Verdict};
use crate::report::run_report::{self, ContactCounts, ProductLine};
use crate::run::PipelinePlan;

/// How long an Approve waits for a sync of the same client that is running: a browser waits
/// this long for the answer.
const LOCK_WAIT: Duration = Duration::from_secs(20);

/// Approvals listed on one page.
const LIST_LIMIT: u32 = 200;

/// The console page of approval `id`.
pub fn href(id: &str) -> String {
    format!("/console/approvals/{}", encode_component(id))
}

/// Decisions under way, one lock per approval id.
#[derive(Default)]
pub(super) struct Deciding(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl Deciding {
    /// The lock that decisions on approval `id` take in turn.
    fn of(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Locks nobody holds or waits for are dropped: the map stays as small as the decisions
        // under way.
        map.retain(|_, lock| Arc::strong_count(lock) > 1);
        map.entry(id.to_owned()).or_default().clone()
    }
}

/// Who decided, as the approval records it: the console has one shared token, so a session is
/// named by a digest of its nonce (never the nonce, which with its signature is the cookie).
fn decided_by(who: &SignedIn) -> String {
    match who {
        SignedIn::Bearer => "the console (bearer token)".to_owned(),
        SignedIn::Session {
            user: Some(user), ..
        } => format!("{user} (console, single sign-on)"),
        SignedIn::Session { nonce, user: None } => {
            let digest = sha2::Sha256::digest(nonce.as_bytes());
            let short: String = digest.iter().take(3).map(|b| format!("{b:02x}")).collect();
            format!("the console (session {short})")
        }
    }
}

fn moment(at: &str) -> String {
    at.get(..16).unwrap_or(at).replace('T', " ")
}

fn signed(d: Decimal) -> (String, &'static str) {
    if d > Decimal::ZERO {
        (format!("+{d}"), "up")
    } else if d < Decimal::ZERO {
        (d.to_string(), "down")
    } else {
        ("0".into(), "")
    }
}

/// An approval as a row of the list.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalRow {
    pub id: String,
    pub href: String,
    pub pipeline: String,
    pub client: String,
    /// The client's page, when this service serves the client.
    pub client_href: Option<String>,
    pub state: ApprovalState,
    /// Approved to take effect on a later day, not applied yet.
    pub scheduled: Option<String>,
    pub reason: String,
    pub trigger: String,
    pub created: String,
    pub seats_before: u64,
    pub seats_after: u64,
    pub amount_before: Decimal,
    pub amount_after: Decimal,
    pub currency: String,
    pub delta: String,
    pub delta_class: &'static str,
}

impl ApprovalRow {
    fn new(console: &Console, a: &Approval) -> ApprovalRow {
        let (delta, delta_class) = signed(a.amount_change());
        ApprovalRow {
            id: a.id.clone(),
            href: href(&a.id),
            pipeline: a.pipeline.clone(),
            client: a.client.clone(),
            client_href: super::views::find(&console.service, &a.pipeline, &a.client)
                .map(|_| client_href(&a.pipeline, &a.client)),
            state: a.state,
            scheduled: a
                .effective
                .clone()
                .filter(|_| a.state == ApprovalState::Pending && a.decided_by.is_some()),
            reason: a.reason.clone(),
            trigger: a.trigger.clone(),
            created: moment(&a.created),
            seats_before: a.seats_before,
            seats_after: a.seats_after,
            amount_before: a.amount_before,
            amount_after: a.amount_after,
            currency: a.currency.clone(),
            delta,
            delta_class,
        }
    }
}

/// One change of the plan, as the page lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeRow {
    pub kind: String,
    pub subject: String,
}

/// What a plan would change for its client: the run report's figures (so the page, the run
/// report and `rollcall approvals ID` agree), with the people whose contacts come and go.
#[derive(Debug, Clone, Serialize)]
pub struct PlanDiff {
    pub products: Vec<ProductLine>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub contacts: ContactCounts,
    pub changes: Vec<ChangeRow>,
    /// Changes the guard withheld, conflicts with final invoices, notes.
    pub notes: Vec<String>,
}

fn contact_name(fields: &rollcall_core::ContactFields, key: &str) -> String {
    let name = format!("{} {}", fields.first_name.trim(), fields.last_name.trim());
    match name.trim() {
        "" => key.to_owned(),
        n => n.to_owned(),
    }
}

/// The difference `plan` (an approval's one-client plan) would make.
pub fn diff(plan: &PipelinePlan) -> PlanDiff {
    let report = run_report::build(
        &RecordedRun {
            run_id: String::new(),
            at: String::new(),
            plan: plan.clone(),
            outcomes: Vec::new(),
        },
        &[],
    );
    let mut added = Vec::new();
    let mut removed = Vec::new();
    let mut changes = Vec::new();
    for planned in &plan.changes {
        match &planned.change {
            Change::CreateContact { key, after } | Change::ReactivateContact { key, after, .. } => {
                added.push(contact_name(after, &key.0));
            }
            Change::DeactivateContact { key, before, .. } => {
                removed.push(contact_name(before, &key.0));
            }
            _ => {}
        }
        changes.push(ChangeRow {
            kind: planned.change.kind().replace('_', " "),
            subject: planned.change.subject(),
        });
    }
    let (products, contacts, mut notes) = report
        .clients
        .into_iter()
        .next()
        .map(|c| {
            // The refusal is the approval's reason, shown above the plan already.
            let guards = c.guards.into_iter().filter(|g| !g.starts_with("Refused: "));
            (
                c.products,
                c.contacts,
                guards.chain(c.notes).collect::<Vec<String>>(),
            )
        })
        .unwrap_or_default();
    for c in &plan.clients {
        notes.extend(
            c.conflicts
                .iter()
                .map(|x| format!("Differs from a final invoice: {x}")),
        );
    }
    PlanDiff {
        products,
        added,
        removed,
        contacts,
        changes,
        notes,
    }
}

/// One approval's page.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalPage {
    pub title: String,
    pub row: ApprovalRow,
    pub approval: Approval,
    pub expires: String,
    pub decided_at: Option<String>,
    pub pending: bool,
    pub refused_run_href: Option<String>,
    pub applied_run_href: Option<String>,
    pub superseded_by_href: Option<String>,
    pub diff: PlanDiff,
    /// The earliest effective day the form offers (today, UTC).
    pub today: String,
    /// Whether this service serves the approval's pipeline (else only the CLI can approve).
    pub served: bool,
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    state: Option<String>,
}

/// `/console/approvals`: pending ones by default, `?state=all` or one state.
pub async fn list(
    State(console): State<Arc<Console>>,
    Extension(who): Extension<SignedIn>,
    Query(q): Query<ListQuery>,
) -> Response {
    let wanted = q.state.as_deref().unwrap_or("pending").trim();
    let state = match wanted {
        "all" => None,
        s => match s.parse::<ApprovalState>() {
            Ok(s) => Some(s),
            Err(e) => {
                return console.message(
                    StatusCode::BAD_REQUEST,
                    "No such state",
                    &format!("{e}, or all. Pick one from the Approvals page's filter."),
                    Some(&who),
                );
            }
        },
    };
    let listed = match Approvals::open(&console.service.store).await {
        Ok(approvals) => approvals.list(state, LIST_LIMIT).await,
        Err(e) => Err(e),
    };
    match listed {
        Ok(found) => {
            let rows: Vec<ApprovalRow> = found
                .iter()
                .map(|a| ApprovalRow::new(&console, a))
                .collect();
            let filters: Vec<_> = [
                "pending",
                "approved",
                "rejected",
                "superseded",
                "expired",
                "all",
            ]
            .iter()
            .map(|s| {
                json!({
                    "state": s,
                    "href": format!("/console/approvals?state={s}"),
                    "here": *s == state.map_or("all", ApprovalState::as_str),
                })
            })
            .collect();
            console.render(
                "approvals",
                "approvals",
                Some(&who),
                json!({
                    "title": "Approvals",
                    "approvals": rows,
                    "state": state.map_or("all", ApprovalState::as_str),
                    "filters": filters,
                }),
            )
        }
        Err(e) => console.failed("the approvals", &e, &who),
    }
}

/// `/console/approvals/{id}`: who or what made it, why it was refused, the money, the plan.
pub async fn show(
    State(console): State<Arc<Console>>,
    Extension(who): Extension<SignedIn>,
    Path(id): Path<String>,
) -> Response {
    let found = match Approvals::open(&console.service.store).await {
        Ok(approvals) => approvals.get(&id).await,
        Err(e) => Err(e),
    };
    let (approval, plan) = match found {
        Ok(found) => found,
        Err(e) => return console.approval_error(&id, &e, &who),
    };
    let served = console
        .service
        .pipelines
        .iter()
        .any(|p| p.name == approval.pipeline);
    let page = ApprovalPage {
        title: format!("Approval {}", approval.id),
        row: ApprovalRow::new(&console, &approval),
        expires: moment(&approval.expires),
        decided_at: approval.decided_at.as_deref().map(moment),
        pending: approval.state == ApprovalState::Pending,
        refused_run_href: approval
            .refused_run
            .as_deref()
            .map(|r| format!("/console/runs/{}", encode_component(r))),
        applied_run_href: approval
            .applied_run
            .as_deref()
            .map(|r| format!("/console/runs/{}", encode_component(r))),
        superseded_by_href: approval.superseded_by.as_deref().map(href),
        diff: diff(&plan),
        today: chrono::Utc::now().format("%Y-%m-%d").to_string(),
        served,
        approval,
    };
    console.render("approval", "approvals", Some(&who), page)
}

#[derive(Debug, Deserialize)]
pub struct ApproveForm {
    #[serde(default)]
    effective: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RejectForm {
    #[serde(default)]
    reason: Option<String>,
}

/// What a decision came to, for the result page.
struct Outcome {
    status: StatusCode,
    /// `applied`, `not_completed`, `superseded`, `scheduled`, `rejected`, `already_decided`,
    /// or another refusal's name: what the page's `data-outcome` says.
    outcome: &'static str,
    title: String,
    text: String,
    /// The replacing approval, for a superseded one.
    next: Option<String>,
    links: Vec<(String, String)>,
}

/// The Approve button: applies the approval's plan as `rollcall approve` does.
pub async fn approve(
    State(console): State<Arc<Console>>,
    Extension(who): Extension<SignedIn>,
    Path(id): Path<String>,
    Form(form): Form<ApproveForm>,
) -> Response {
    let effective = match form.effective.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(day) => match crate::approvals::parse_day(day) {
            Ok(day) => Some(day),
            Err(e) => {
                return console.decided(
                    Outcome {
                        status: StatusCode::BAD_REQUEST,
                        outcome: "bad_day",
                        title: "Not approved".into(),
                        text: format!(
                            "The effective date {e}. Go back, pick the day in the date field (or leave it empty to apply now), and approve again."
                        ),
                        next: None,
                        links: vec![(href(&id), "Back to the approval".into())],
                    },
                    &who,
                );
            }
        },
    };
    let store = &console.service.store;
    let approvals = match Approvals::open(store).await {
        Ok(a) => a,
        Err(e) => return console.approval_error(&id, &e, &who),
    };
    let approval = match approvals.get(&id).await {
        Ok((a, _)) => a,
        Err(e) => return console.approval_error(&id, &e, &who),
    };
    let Some(pipeline) = console
        .service
        .pipelines
        .iter()
        .find(|p| p.name == approval.pipeline)
        .cloned()
    else {
        return console.decided(
            Outcome {
                status: StatusCode::CONFLICT,
                outcome: "not_served",
                title: "Not approved here".into(),
                text: format!(
                    "This service does not run pipeline `{}`, which approval {} was made for. Approve it where that pipeline runs: `rollcall approve {} --pipeline FILE`.",
                    approval.pipeline, approval.id, approval.id
                ),
                next: None,
                links: vec![(href(&approval.id), "Back to the approval".into())],
            },
            &who,
        );
    };
    // Held until the apply ends, even when the browser goes away meanwhile (axum then drops
    // this handler, not the blocking task below).
    let turn = console.deciding.of(&approval.id).lock_owned().await;
    let engine = match console_engine(&console).await {
        Ok(engine) => engine,
        Err(e) => return console.failed("the client leases", &e, &who),
    };
    let by = decided_by(&who);
    let decided = {
        let (id, by) = (approval.id.clone(), by.clone());
        // Driven on a blocking thread of this runtime: the compiler cannot prove the approval's
        // future `Send` for every lifetime at once (a known limit of its reasoning about async
        // code), which axum asks of a handler's future; `block_on` asks nothing of it.
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let options = Options {
                lock_wait: LOCK_WAIT,
                ..Options::default()
            };
            handle.block_on(crate::approvals::approve(
                &engine, &pipeline, &id, &by, effective, &options,
            ))
        })
        .await
    };
    let decided = match decided {
        Ok(decided) => decided,
        Err(e) => return console.failed("what approving came to", &e, &who),
    };
    let outcome = match decided {
        Ok(Decided::Applied { approval, synced }) => {
            let run = synced.run_id.clone();
            let ok = synced.verdict() == Verdict::Ok;
            info!(approval = %approval.id, client = %approval.client, run = %run, by = %by, "Approved from the console.");
            let mut links = vec![
                (
                    format!("/console/runs/{}", encode_component(&run)),
                    format!("Report of run {run}"),
                ),
                (href(&approval.id), "The approval".into()),
            ];
            if let Some(c) =
                super::views::find(&console.service, &approval.pipeline, &approval.client)
            {
                links.push((
                    client_href(&c.name, &approval.client),
                    format!("Client {}", approval.client),
                ));
            }
            if ok {
                Outcome {
                    status: StatusCode::OK,
                    outcome: "applied",
                    title: "Applied".into(),
                    text: format!(
                        "Approval {} was approved and its plan applied in run {run}: client {} now has {} seat(s) (was {}), {} {} a month (was {}).",
                        approval.id,
                        approval.client,
                        approval.seats_after,
                        approval.seats_before,
                        approval.amount_after,
                        approval.currency,
                        approval.amount_before
                    ),
                    next: None,
                    links,
                }
            } else {
                Outcome {
                    status: StatusCode::BAD_GATEWAY,
                    outcome: "not_completed",
                    title: "Approved; applying it did not complete".into(),
                    text: format!(
                        "Approval {} was approved, but applying its plan failed part way (run {run}). {}The run's report says what was written; the next sync of the client plans the rest.",
                        approval.id,
                        crate::report::outcome_text(&synced.outcomes)
                    ),
                    next: None,
                    links,
                }
            }
        }
        Ok(Decided::Superseded {
            approval,
            replaced_by,
        }) => {
            info!(approval = %approval.id, client = %approval.client, by = %by, "An approval from the console was stale and superseded.");
            Outcome {
                status: StatusCode::CONFLICT,
                outcome: "superseded",
                title: "Superseded: nothing was written".into(),
                text: match &replaced_by {
                    Some(next) => format!(
                        "The billing system changed after approval {} was made, so its plan was not applied. Client {} was planned again from what the billing system holds now; the new plan waits as approval {}. Review it before approving.",
                        approval.id, approval.client, next.id
                    ),
                    None => format!(
                        "The billing system changed after approval {} was made, so its plan was not applied. The client's next sync plans it again.",
                        approval.id
                    ),
                },
                links: vec![(href(&approval.id), "The superseded approval".into())],
                next: replaced_by.map(|h| h.id),
            }
        }
        Ok(Decided::Scheduled { approval }) => {
            let day = approval.effective.clone().unwrap_or_default();
            info!(approval = %approval.id, client = %approval.client, day = %day, by = %by, "Approved from the console for a later day.");
            Outcome {
                status: StatusCode::OK,
                outcome: "scheduled",
                title: "Scheduled".into(),
                text: format!(
                    "Approval {} is approved to take effect on {day}. Nothing is written now: the client's first sync on or after that day applies the plan, if the billing system has not changed by then.",
                    approval.id
                ),
                next: None,
                links: vec![(href(&approval.id), "The approval".into())],
            }
        }
        Err(ApprovalError::Engine(EngineError::Busy(e))) => {
            warn!(approval = %approval.id, error = %e, "An approval from the console waited too long for the client.");
            Outcome {
                status: StatusCode::SERVICE_UNAVAILABLE,
                outcome: "busy",
                title: "Not approved yet".into(),
                text: format!(
                    "Another sync of client {} is running, and it did not end within {} seconds. Nothing was written. Wait until it ends (see Jobs), then open the approval again and approve it: if that sync changed the billing system, the approval will be superseded by a new plan.",
                    approval.client,
                    LOCK_WAIT.as_secs()
                ),
                next: None,
                links: vec![
                    (href(&approval.id), "Back to the approval".into()),
                    ("/console/jobs".into(), "Jobs".into()),
                ],
            }
        }
        Err(e @ (ApprovalError::Engine(_) | ApprovalError::Store(_))) => {
            return console.failed("or write what approving needs", &e, &who);
        }
        Err(e) => return console.approval_error(&approval.id, &e, &who),
    };
    console.decided(outcome, &who)
}

/// The Reject button: nothing is written; the reason is kept and told.
pub async fn reject(
    State(console): State<Arc<Console>>,
    Extension(who): Extension<SignedIn>,
    Path(id): Path<String>,
    Form(form): Form<RejectForm>,
) -> Response {
    let reason = form.reason.as_deref().map(str::trim).unwrap_or_default();
    if reason.is_empty() {
        return console.decided(
            Outcome {
                status: StatusCode::BAD_REQUEST,
                outcome: "no_reason",
                title: "Not rejected".into(),
                text: "A rejection needs a reason: go back, say why in the reason field (it is kept with the approval and told to the people notified), and reject again.".into(),
                next: None,
                links: vec![(href(&id), "Back to the approval".into())],
            },
            &who,
        );
    }
    let approvals = match Approvals::open(&console.service.store).await {
        Ok(a) => a,
        Err(e) => return console.approval_error(&id, &e, &who),
    };
    let approval = match approvals.get(&id).await {
        Ok((a, _)) => a,
        Err(e) => return console.approval_error(&id, &e, &who),
    };
    let pipeline = console
        .service
        .pipelines
        .iter()
        .find(|p| p.name == approval.pipeline)
        .cloned();
    let lock = console.deciding.of(&approval.id);
    let _turn = lock.lock().await;
    let by = decided_by(&who);
    match approvals
        .reject(&approval.id, &by, reason, pipeline.as_deref())
        .await
    {
        Ok(a) => {
            info!(approval = %a.id, client = %a.client, by = %by, "Rejected from the console.");
            console.decided(
                Outcome {
                    status: StatusCode::OK,
                    outcome: "rejected",
                    title: "Rejected".into(),
                    text: format!(
                        "Approval {} was rejected; nothing was written for client {}. The next sync of the client plans it again.",
                        a.id, a.client
                    ),
                    next: None,
                    links: vec![(href(&a.id), "The approval".into())],
                },
                &who,
            )
        }
        Err(e) => console.approval_error(&approval.id, &e, &who),
    }
}

/// An engine like the workers': leases in the store, and in the queue's lock store too, so a
/// decision waits for a job syncing the same client.
async fn console_engine(console: &Console) -> Result<Engine, crate::queue::locks::LockError> {
    let service = &console.service;
    Ok(Engine::new(service.store.clone())
        .await?
        .with_locks(service.queue.locks().await?)
        .holder("rollcall console"))
}

impl Console {
    fn decided(&self, o: Outcome, who: &SignedIn) -> Response {
        let links: Vec<_> = o
            .links
            .into_iter()
            .map(|(href, text)| json!({ "href": href, "text": text }))
            .collect();
        self.render_status(
            o.status,
            "decided",
            "approvals",
            Some(who),
            json!({
                "title": o.title,
                "outcome": o.outcome,
                "text": o.text,
                "next": o.next.map(|id| json!({ "id": id, "href": href(&id) })),
                "links": links,
            }),
        )
    }

    /// What cannot be done with approval `id`, and what to do instead.
    fn approval_error(&self, id: &str, e: &ApprovalError, who: &SignedIn) -> Response {
        let (status, outcome, title) = match e {
            ApprovalError::NotFound(_) | ApprovalError::Ambiguous(_) => {
                (StatusCode::NOT_FOUND, "not_found", "No such approval")
            }
            ApprovalError::NotPending { .. } => {
                (StatusCode::CONFLICT, "already_decided", "Already decided")
            }
            ApprovalError::WrongPipeline { .. } | ApprovalError::ClientGone { .. } => {
                (StatusCode::CONFLICT, "cannot_apply", "Cannot be applied")
            }
            ApprovalError::Unreadable { .. } => {
                (StatusCode::CONFLICT, "unreadable", "Cannot be read")
            }
            ApprovalError::Store(_) | ApprovalError::Engine(_) => {
                return self.failed("the approvals", e, who);
            }
        };
        let text = match e {
            // The CLI's hint names the command; here the list is one click away.
            ApprovalError::NotFound(_) => format!(
                "No approval has the id `{id}`. The Approvals page lists them (choose \"all\" to see decided ones)."
            ),
            ApprovalError::NotPending { .. } => format!(
                "{e}. Nothing more was done; the approval's page shows who decided and when."
            ),
            _ => e.to_string(),
        };
        let mut links = Vec::new();
        if !matches!(e, ApprovalError::NotFound(_) | ApprovalError::Ambiguous(_)) {
            links.push((href(id), "The approval".to_owned()));
        }
        links.push((
            "/console/approvals?state=all".to_owned(),
            "All approvals".to_owned(),
        ));
        self.decided(
            Outcome {
                status,
                outcome,
                title: title.into(),
                text,
                next: None,
                links,
            },
            who,
        )
    }
}

/// The approval a client waits on, if any: for the clients' and the client's pages.
pub async fn pending_of(
    console: &Console,
) -> Result<HashMap<(String, String), String>, ApprovalError> {
    let approvals = Approvals::open(&console.service.store).await?;
    let mut out = HashMap::new();
    // Newest first: the first one seen for a client is the one to review.
    for a in approvals
        .list(Some(ApprovalState::Pending), LIST_LIMIT)
        .await?
    {
        out.entry((a.pipeline, a.client)).or_insert(a.id);
    }
    Ok(out)
}
