//! A run over a pipeline: read each client's directory and billing state, map, plan, guard.
//!
//! This is where the I/O around the pure planner happens. Clients are independent: one
//! client's unreadable directory or refused plan never stops the others, and each outcome is
//! kept on that client's [`ClientPlan`] for the operator to read.

use std::sync::Arc;

use futures::StreamExt;
use rollcall_core::{
    AccountRef, BillingAccount, BillingModel, BillingSystem, Change, ClientState, Completeness,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{Instrument, info, info_span, warn};

use crate::config::{Client, Pipeline};
use crate::mapping;
use crate::plan::guard::{self, GuardPolicy, Refusal, Withheld};
use crate::plan::{self, Excluded, SeatHolder};
use crate::store::Store;

/// Where a run is, for whoever shows progress (the CLI's bars); the engine only reports.
pub trait Progress: Send + Sync {
    /// `client` entered `phase` ("reading the directory", "reading the billing system", …).
    fn phase(&self, client: &str, phase: &str);
    /// `client` is planned (or failed to be).
    fn done(&self, client: &str);
    /// The run moved on to its next stage ("applying"): every client is at work again.
    fn stage(&self, _stage: &str) {}
}

/// No progress shown: scripts, services, tests.
pub struct Quiet;

impl Progress for Quiet {
    fn phase(&self, _: &str, _: &str) {}
    fn done(&self, _: &str) {}
}

/// Version of the saved-plan format.
pub const PLAN_FORMAT: u32 = 1;

/// A whole pipeline's plan, as shown to a person and as saved with `plan --output json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelinePlan {
    pub format: u32,
    pub pipeline: String,
    pub target: String,
    /// The currency the pipeline's prices are in, for reports (absent in plans saved before
    /// it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<rollcall_core::Currency>,
    pub clients: Vec<ClientPlan>,
    /// Every change, in the order it will be applied.
    pub changes: Vec<PlannedChange>,
}

/// One change, tagged with its client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedChange {
    pub client: std::sync::Arc<str>,
    #[serde(flatten)]
    pub change: Change,
}

/// What planning found for one client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientPlan {
    pub client: String,
    pub account: BillingAccount,
    /// The billing system's ids for the account, when it was read.
    #[serde(default)]
    pub resolved: Option<AccountRef>,
    /// A digest of the billing state the plan was made from; applying a saved plan refuses
    /// when the state has changed since.
    #[serde(default)]
    pub fingerprint: Option<String>,
    pub completeness: Option<Completeness>,
    pub people_read: usize,
    pub seats_before: u64,
    pub seats_after: u64,
    /// Who takes each product's seats after the plan, for reports.
    #[serde(default)]
    pub seats: Vec<ProductSeats>,
    #[serde(default)]
    pub refusal: Option<Refusal>,
    #[serde(default)]
    pub withheld: Vec<Withheld>,
    #[serde(default)]
    pub notes: Vec<String>,
    /// Differences with an invoice that is already final: left alone, for a person to settle.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<String>,
    /// People an exclusion rule kept off the bill, and which rule.
    #[serde(default)]
    pub excluded: Vec<Excluded>,
    /// Shadow mode: the plan is shown and recorded, never applied.
    #[serde(default)]
    pub shadow: bool,
    #[serde(default)]
    pub failure: Option<ClientFailure>,
    /// The moment the plan was made: what the seat ledger records applying it, so the days
    /// the plan prorated are the days the ledger then says (a plan applied after midnight
    /// bills what it showed).
    #[serde(default)]
    pub planned_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProductSeats {
    pub product: String,
    /// The product's name on invoices and reports.
    #[serde(default)]
    pub name: String,
    pub identifier: String,
    /// The seat rule (CEL) that chose the people.
    #[serde(default)]
    pub rule: String,
    pub quantity: u32,
    /// The price per seat the plan bills at (rounded).
    #[serde(default)]
    pub unit_price: rust_decimal::Decimal,
    pub people: Vec<SeatHolder>,
}

/// Why a client could not be planned.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientFailure {
    pub class: FailureClass,
    pub message: String,
    pub hint: String,
}

/// What kind of failure, which decides the exit code.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The pipeline's rules could not be evaluated on the data (exit 1).
    Invalid,
    /// The directory or the billing system failed (exit 3).
    Remote,
}

impl ClientPlan {
    fn new(client: &Client) -> Self {
        ClientPlan {
            client: client.name.clone(),
            account: client.account.clone(),
            resolved: None,
            fingerprint: None,
            completeness: None,
            people_read: 0,
            seats_before: 0,
            seats_after: 0,
            seats: Vec::new(),
            refusal: None,
            withheld: Vec::new(),
            notes: Vec::new(),
            conflicts: Vec::new(),
            excluded: Vec::new(),
            shadow: client.shadow,
            failure: None,
            planned_at: None,
        }
    }

    fn failed(mut self, class: FailureClass, message: String, hint: &str) -> (Self, Vec<Change>) {
        self.failure = Some(ClientFailure {
            class,
            message,
            hint: hint.to_owned(),
        });
        (self, Vec::new())
    }

    /// Whether this client's changes may be applied.
    pub fn may_apply(&self) -> bool {
        self.failure.is_none() && self.refusal.is_none() && !self.shadow
    }
}

impl PipelinePlan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    pub fn changes_for<'a>(&'a self, client: &'a str) -> impl Iterator<Item = &'a Change> + 'a {
        self.changes
            .iter()
            .filter(move |c| &*c.client == client)
            .map(|c| &c.change)
    }
}

/// A create that crashed or lost its answer may have landed: what it made is rollcall's, found
/// by what it was about (a contact's key; the newest addition of a product not otherwise owned).
fn claim_unsettled(
    owned: &mut plan::Ownership,
    unsettled: &[(String, String)],
    actual: &ClientState,
) -> Vec<String> {
    let mut notes = Vec::new();
    for (kind, subject) in unsettled {
        let found = match kind.as_str() {
            "create_contact" => actual
                .contacts
                .iter()
                .find(|c| c.fields.key().0 == *subject && !owned.contacts.contains(&c.id))
                .map(|c| ("contact", c.id.clone(), &mut owned.contacts)),
            "create_addition" => actual
                .additions
                .iter()
                .filter(|a| {
                    a.product.eq_ignore_ascii_case(subject) && !owned.additions.contains(&a.id)
                })
                .max_by_key(|a| a.id.parse::<u64>().unwrap_or(0))
                .map(|a| ("addition", a.id.clone(), &mut owned.additions)),
            // Customers and invoices are found again by name and period reference, not by
            // the id a run remembers: there is nothing to claim.
            _ => None,
        };
        if let Some((what, id, set)) = found {
            notes.push(format!(
                "{what} #{id} ({subject}) was made by an earlier run that was interrupted; rollcall manages it"
            ));
            set.insert(id);
        }
    }
    notes
}

/// Who has been billed by an elder sister client, by person id and by email.
#[derive(Debug, Default)]
pub struct CountedBy {
    by_key: std::collections::HashMap<String, String>,
    /// Set when an elder sister could not be read in full: the younger ones wait.
    blocked: Option<String>,
}

impl CountedBy {
    /// Takes out of `people` those an elder sister already bills, returning them as excluded.
    fn take_counted(&self, people: &mut Vec<rollcall_core::Person>) -> Vec<Excluded> {
        if self.by_key.is_empty() {
            return Vec::new();
        }
        let mut excluded = Vec::new();
        people.retain(|p| {
            let by = std::iter::once(p.id.to_lowercase())
                .chain(p.email.as_deref().map(str::to_lowercase))
                .find_map(|k| self.by_key.get(&k));
            match by {
                Some(client) => {
                    excluded.push(Excluded {
                        person_id: p.id.clone(),
                        name: p.billing_name(),
                        rule: format!("counted under {client}"),
                    });
                    false
                }
                None => true,
            }
        });
        excluded
    }

    /// Remembers everyone `client` bills a seat for.
    fn record(&mut self, client: &str, desired: &plan::Desired, people: &[rollcall_core::Person]) {
        let billed: std::collections::HashSet<&str> = desired
            .additions
            .values()
            .flat_map(|a| a.people.iter().map(|h| &*h.person_id))
            .collect();
        for p in people.iter().filter(|p| billed.contains(p.id.as_str())) {
            self.by_key.insert(p.id.to_lowercase(), client.to_owned());
            if let Some(email) = &p.email {
                self.by_key.insert(email.to_lowercase(), client.to_owned());
            }
        }
    }
}

/// Digest of a billing state, independent of the order the system listed things in.
pub fn fingerprint(state: &ClientState) -> String {
    let mut state = state.clone();
    state.contacts.sort_by(|a, b| a.id.cmp(&b.id));
    state.additions.sort_by(|a, b| a.id.cmp(&b.id));
    let bytes = serde_json::to_vec(&state).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Plans every client of the pipeline (or the one named), reading up to `concurrency` clients
/// at a time.
pub async fn plan_pipeline(
    pipeline: &Pipeline,
    billing: Arc<dyn BillingSystem>,
    store: &Store,
    only: Option<&str>,
    allow_drop: bool,
    progress: &dyn Progress,
) -> PipelinePlan {
    const CONCURRENCY: usize = 4;
    let selected = |c: &Client| only.is_none_or(|o| c.name.eq_ignore_ascii_case(o));
    // Sister clients that count each person once are planned one after another, in file
    // order, sharing who has been counted; every other client is a unit of its own. A sister
    // asked for alone still needs its elder sisters read, so whole groups are planned.
    let mut units: Vec<Vec<(usize, &Client)>> = Vec::new();
    let mut group_unit: std::collections::HashMap<&str, usize> = Default::default();
    for (i, c) in pipeline.clients.iter().enumerate() {
        match c.count_once_in.as_deref() {
            Some(group) => match group_unit.get(group) {
                Some(&u) => units[u].push((i, c)),
                None => {
                    group_unit.insert(group, units.len());
                    units.push(vec![(i, c)]);
                }
            },
            None => units.push(vec![(i, c)]),
        }
    }
    units.retain(|unit| unit.iter().any(|(_, c)| selected(c)));
    let accounts = BillingAccounts::new(pipeline, billing.as_ref());
    let wanted: Vec<BillingAccount> = units
        .iter()
        .flatten()
        .map(|(_, c)| accounts.of(c))
        .collect();
    let identifiers: Vec<String> = pipeline
        .products
        .iter()
        .map(|p| p.identifier.clone())
        .collect();
    if let Err(e) = billing.prepare(&wanted, &identifiers).await {
        // Only an optimisation: each client is then read on its own.
        warn!(error = %e, "Cannot read the billing system ahead for every client; reading client by client.");
    }
    let accounts = &accounts;
    // Directories of one run share what they read in common (one tenant's users and groups
    // for all its clients).
    let share = rollcall_core::RunShare::default();
    let share = &share;
    let planned: Vec<Vec<(usize, ClientPlan, Vec<Change>)>> = futures::stream::iter(units)
        .map(|unit| {
            let billing = billing.clone();
            async move {
                let mut counted_by = CountedBy::default();
                let mut out = Vec::with_capacity(unit.len());
                for (i, client) in unit {
                    // An elder sister read in part (or not at all) leaves unknown whom it
                    // bills; a younger one planned now could bill those people twice.
                    if let Some(why) = &counted_by.blocked {
                        let (plan, changes) = ClientPlan::new(client).failed(
                            FailureClass::Remote,
                            why.clone(),
                            "plan again once the elder sister's directory reads in full",
                        );
                        progress.done(&client.name);
                        out.push((i, plan, changes));
                        continue;
                    }
                    let span =
                        info_span!("client", pipeline = %pipeline.name, client = %client.name);
                    let (plan, changes) = plan_client(
                        pipeline,
                        client,
                        accounts.of(client),
                        billing.as_ref(),
                        store,
                        allow_drop,
                        &mut counted_by,
                        progress,
                        share,
                    )
                    .instrument(span)
                    .await;
                    let partial = plan.failure.is_some()
                        || plan.completeness.as_ref().is_some_and(|c| !c.is_complete());
                    if client.count_once_in.is_some() && partial {
                        counted_by.blocked = Some(format!(
                            "sister client `{}` (count_once_in) was not read in full, so whom it bills is unknown; nothing is planned for the sisters after it",
                            client.name
                        ));
                    }
                    progress.done(&client.name);
                    out.push((i, plan, changes));
                }
                out
            }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let mut results: Vec<(usize, ClientPlan, Vec<Change>)> = planned
        .into_iter()
        .flatten()
        .filter(|(i, _, _)| selected(&pipeline.clients[*i]))
        .collect();
    results.sort_by_key(|(i, _, _)| *i);
    let mut plan = PipelinePlan {
        format: PLAN_FORMAT,
        pipeline: pipeline.name.clone(),
        target: pipeline.target.kind().to_owned(),
        currency: Some(pipeline.currency),
        clients: Vec::new(),
        changes: Vec::new(),
    };
    for (_, client_plan, changes) in results {
        // One name shared by all a client's changes: a first run of a big client is 100,000.
        let client: std::sync::Arc<str> = client_plan.client.as_str().into();
        plan.changes
            .extend(changes.into_iter().map(|change| PlannedChange {
                client: client.clone(),
                change,
            }));
        plan.clients.push(client_plan);
    }
    plan
}

/// The day a run bills: `--period`'s, else today in the pipeline's zone.
fn bill_today(pipeline: &Pipeline) -> chrono::NaiveDate {
    pipeline
        .bill_day
        .unwrap_or_else(|| plan::proration::day_of(pipeline.planned_at(), pipeline.zone()))
}

/// The seat ledger as the proration reads it. A moment that does not parse is taken as the
/// client's first run for `since` and as not given up for `until`: a damaged row may bill a
/// seat longer, never shorter.
fn held(spans: Vec<crate::store::SeatSpan>) -> Vec<plan::proration::Held> {
    let moment = |text: &str| {
        chrono::DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc))
    };
    let first_run = spans
        .iter()
        .filter_map(|s| moment(&s.since))
        .min()
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    spans
        .into_iter()
        .map(|span| plan::proration::Held {
            since: moment(&span.since).unwrap_or(first_run),
            until: span.until.as_deref().and_then(moment),
            product: span.product,
            person_id: span.person_id,
            name: span.person_name,
        })
        .collect()
}

/// Where each client is billed for this run: as its pipeline entry says, plus, for billing
/// systems that bill by invoice, the invoice of the period the run bills.
struct BillingAccounts {
    bill_day: Option<chrono::NaiveDate>,
    invoicing: crate::config::Invoicing,
}

impl BillingAccounts {
    fn new(pipeline: &Pipeline, billing: &dyn BillingSystem) -> Self {
        let by_invoice = billing.billing_model() == BillingModel::Invoice;
        BillingAccounts {
            bill_day: by_invoice.then(|| bill_today(pipeline)),
            invoicing: pipeline.invoicing.clone(),
        }
    }

    fn of(&self, client: &Client) -> BillingAccount {
        let mut account = client.account.clone();
        account.invoice = self.bill_day.map(|day| {
            self.invoicing.target(
                day,
                client.invoiced_customer(),
                client.bill_to.as_deref(),
                client.site.as_deref(),
            )
        });
        account
    }
}

// Each argument is a separate input of one client's plan; bundling them would only hide that.
#[allow(clippy::too_many_arguments)]
async fn plan_client(
    pipeline: &Pipeline,
    client: &Client,
    account: BillingAccount,
    billing: &dyn BillingSystem,
    store: &Store,
    allow_drop: bool,
    counted_by: &mut CountedBy,
    progress: &dyn Progress,
    share: &rollcall_core::RunShare,
) -> (ClientPlan, Vec<Change>) {
    let mut out = ClientPlan::new(client);
    let now = pipeline.planned_at();
    out.planned_at = Some(now);
    out.account = account.clone();
    progress.phase(&client.name, "reading the directory");
    let context = rollcall_core::DirectoryContext {
        groups: crate::config::named_groups::wanted(
            &client.rules,
            pipeline.templates.mentions_groups(),
        ),
        share: share.clone(),
    };
    let directory = client.directory.build_in(pipeline.dir(), &context);
    let source = directory.describe();
    // A store that cannot be read costs an incremental read, not the run.
    let cursor = match store.cursor(&pipeline.name, &client.name, &source).await {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "Cannot read the directory's cursor; reading everything.");
            None
        }
    };
    let read = match directory.read(cursor.as_ref()).await {
        Ok(read) => read,
        Err(e) => {
            return out.failed(
                FailureClass::Remote,
                e.to_string(),
                "the directory could not be read; nothing was planned for this client",
            );
        }
    };
    for w in &read.warnings {
        // Shown to the operator as the plan's notes; logged for services.
        info!(directory = %directory.describe(), "{w}");
    }
    info!(
        people = read.people.len(),
        complete = read.completeness.is_complete(),
        "Read the directory."
    );
    if let (Some(next), true) = (&read.cursor, read.completeness.is_complete())
        && let Err(e) = store
            .save_cursor(&pipeline.name, &client.name, &source, next)
            .await
    {
        warn!(error = %e, "Cannot save the directory's cursor; the next read will be a full one.");
    }
    out.people_read = read.people.len();
    // Nobody read says nothing about groups; the empty read has its own warning.
    let unseen = if read.people.is_empty() {
        Vec::new()
    } else {
        crate::config::named_groups::unseen(&client.rules, &read.people, &directory.describe())
    };
    let mut read = read;
    let counted_elsewhere = counted_by.take_counted(&mut read.people);
    out.completeness = Some(read.completeness.clone());
    out.notes.extend(read.warnings.iter().cloned());
    for note in unseen {
        warn!("{note}");
        out.notes.push(note);
    }

    let grace = if client.rules.grace_days > 0 {
        match store.held_seats(&pipeline.name, &client.name).await {
            Ok(held) => mapping::Grace {
                now,
                held: held
                    .into_iter()
                    .map(|(product, seats)| {
                        let seats = seats
                            .into_iter()
                            .map(|s| mapping::HeldSeat {
                                person_id: s.person_id,
                                name: s.name,
                                last_seen: s.last_seen,
                            })
                            .collect();
                        (product, seats)
                    })
                    .collect(),
            },
            Err(e) => {
                return out.failed(
                    FailureClass::Remote,
                    format!("cannot read the seat ledger for the grace period: {e}"),
                    "check that the store file is readable; without it the grace period cannot be honoured",
                );
            }
        }
    } else {
        mapping::Grace {
            now,
            held: Default::default(),
        }
    };
    // Mapped, the people are needed again only by sister clients that count each person once;
    // for everyone else each goes as soon as it is mapped, not after the billing system's read
    // and the plan, which hold as much again (issue 18: the peak memory of a large client).
    let mapped = if client.count_once_in.is_none() {
        mapping::desired_state_taking(
            &client.name,
            &client.rules,
            &pipeline.templates,
            pipeline.currency,
            billing.invoice_text_limit(),
            &mut read,
            &grace,
        )
    } else {
        mapping::desired_state(
            &client.name,
            &client.rules,
            &pipeline.templates,
            pipeline.currency,
            billing.invoice_text_limit(),
            &read,
            &grace,
        )
    };
    let mut desired = match mapped {
        Ok(d) => d,
        Err(e) => {
            let hint = e.hint();
            return out.failed(FailureClass::Invalid, e.to_string(), hint);
        }
    };
    // Accounting systems keep customers, not a contact per person (docs/invoicing.md).
    if !billing.manages_contacts() {
        desired.contacts = None;
    }
    out.notes
        .extend(plan::fit::fit(&mut desired, &billing.field_limits()));
    let proration = match &account.invoice {
        Some(_) if pipeline.invoicing.prorate => {
            match store
                .seat_history(&pipeline.name, &client.name, None, None)
                .await
            {
                // This run's changes count from the moment the ledger will record for them.
                Ok(spans) => Some(plan::proration::Proration::from_ledger(
                    &held(spans),
                    now,
                    pipeline.zone(),
                )),
                Err(e) => {
                    return out.failed(
                        FailureClass::Remote,
                        format!("cannot read the seat ledger to prorate: {e}"),
                        "check that the store file is readable; proration charges by the days the ledger records",
                    );
                }
            }
        }
        _ => None,
    };
    desired.invoice = account.invoice.clone().map(|target| plan::DesiredInvoice {
        target,
        customer: client.invoiced_customer().to_owned(),
        email: client.email.clone(),
        proration,
        text_limit: billing.invoice_text_limit(),
    });
    // Directory text is hostile: no control or bidi character reaches a vendor or a plan.
    crate::sanitise::desired(&mut desired);
    progress.phase(&client.name, "reading the billing system");
    let identifiers: Vec<String> = desired.additions.keys().cloned().collect();
    let actual = match billing.read(&account, &identifiers).await {
        Ok(a) => a,
        Err(e) => {
            let hint = e.hint();
            return out.failed(FailureClass::Remote, e.to_string(), hint);
        }
    };
    if !client.adopt {
        let owned = async {
            let owned = store.owned(&pipeline.name, &client.name).await?;
            let mut owned = plan::Ownership {
                contacts: owned.contacts,
                additions: owned.additions,
            };
            let unsettled = store
                .unsettled_creates(&pipeline.name, &client.name)
                .await?;
            out.notes
                .extend(claim_unsettled(&mut owned, &unsettled, &actual));
            Ok::<_, crate::store::StoreError>(owned)
        };
        desired.ownership = match owned.await {
            Ok(o) => Some(o),
            Err(e) => {
                return out.failed(
                    FailureClass::Remote,
                    format!("cannot read which objects rollcall owns: {e}"),
                    "check that the store file is readable; without it rollcall cannot tell its objects from people's",
                );
            }
        };
    }
    out.resolved = Some(actual.account.clone());
    out.fingerprint = Some(fingerprint(&actual));

    let planned = plan::plan_taking(&mut desired, &actual);
    out.notes.extend(planned.notes.iter().cloned());
    out.conflicts.extend(planned.conflicts.iter().cloned());
    for c in &out.conflicts {
        warn!(conflict = %c, "The bill differs from a final invoice; left for a person.");
    }
    let policy = GuardPolicy {
        max_seat_drop_percent: client.max_seat_drop_percent,
        max_seat_drop: client.max_seat_drop,
        allow_drop,
    };
    let guarded = guard::check(&client.name, planned, &desired, &actual, policy);
    out.seats_before = guarded.seats_before;
    out.seats_after = guarded.seats_after;
    out.withheld = guarded.withheld;
    out.excluded = std::mem::take(&mut desired.excluded);
    out.excluded.extend(counted_elsewhere);
    if client.count_once_in.is_some() {
        counted_by.record(&client.name, &desired, &read.people);
    }
    for a in desired.additions.values() {
        for h in a.people.iter().filter(|h| h.grace_until.is_some()) {
            out.notes.push(format!(
                "{} keeps a {} seat in the grace period, until {}",
                h.name,
                a.product,
                h.grace_until.as_deref().unwrap_or_default()
            ));
        }
    }
    // Moved, not copied: the seat holders of a large client are most of what its plan holds.
    out.seats = std::mem::take(&mut desired.additions)
        .into_iter()
        .map(|(identifier, a)| ProductSeats {
            product: a.product,
            name: a.name,
            identifier,
            rule: a.rule,
            quantity: a.fields.quantity,
            unit_price: a.fields.unit_price,
            people: a.people,
        })
        .collect();
    if let Some(refusal) = guarded.refusal {
        warn!(reason = %refusal.reason, "Guard refused the plan.");
        out.refusal = Some(refusal);
    }
    (out, guarded.changes)
}

#[cfg(test)]
mod tests {
    use rollcall_core::Person;

    use super::*;

    fn person(id: &str, email: &str) -> Person {
        Person {
            id: id.into(),
            email: Some(email.into()),
            given_name: id.into(),
            enabled: true,
            ..Person::default()
        }
    }

    #[test]
    fn a_sister_leaves_out_whom_an_elder_sister_bills_by_id_or_email() {
        let mut counted = CountedBy::default();
        let desired = plan::Desired {
            completeness: Completeness::Complete,
            contacts: None,
            additions: [(
                "X".to_owned(),
                plan::DesiredAddition {
                    product: "x".into(),
                    name: "X".into(),
                    rule: "true".into(),
                    fields: rollcall_core::AdditionFields {
                        quantity: 1,
                        unit_price: Default::default(),
                        invoice_description: String::new(),
                    },
                    counted: 1,
                    people: vec![SeatHolder {
                        person_id: "a1".into(),
                        name: "A".into(),
                        evidence: Default::default(),
                        grace_until: None,
                        contact: None,
                    }],
                },
            )]
            .into(),
            excluded: vec![],
            ownership: None,
            invoice: None,
        };
        counted.record(
            "Elder",
            &desired,
            &[person("a1", "ann@x"), person("b1", "bob@x")],
        );
        let mut younger = vec![
            person("a2", "ANN@x"),
            person("b2", "bob@x"),
            person("a1", "other@x"),
        ];
        let left_out = counted.take_counted(&mut younger);
        assert_eq!(
            younger.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            ["b2"],
            "Bob held no seat at Elder"
        );
        assert_eq!(left_out.len(), 2);
        assert!(left_out.iter().all(|e| e.rule == "counted under Elder"));
    }

    #[test]
    fn shadow_refused_and_failed_clients_are_never_applied() {
        let client = ClientPlan {
            client: "c".into(),
            account: BillingAccount {
                company: "C".into(),
                agreement: None,
                invoice: None,
            },
            resolved: None,
            fingerprint: None,
            completeness: None,
            people_read: 0,
            seats_before: 0,
            seats_after: 0,
            seats: vec![],
            refusal: None,
            withheld: vec![],
            notes: vec![],
            conflicts: vec![],
            excluded: vec![],
            shadow: false,
            failure: None,
            planned_at: None,
        };
        assert!(client.may_apply());
        assert!(
            !ClientPlan {
                shadow: true,
                ..client.clone()
            }
            .may_apply()
        );
        let failure = ClientFailure {
            class: FailureClass::Remote,
            message: "x".into(),
            hint: "y".into(),
        };
        assert!(
            !ClientPlan {
                failure: Some(failure),
                ..client.clone()
            }
            .may_apply()
        );
    }
}
