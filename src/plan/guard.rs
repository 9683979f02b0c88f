//! Guards: the checks between a plan and the billing system.
//!
//! A directory that answers empty or half must never zero a client's billing. Two rules hold:
//! a plan built from an incomplete read may add but never lowers a seat count or deactivates a
//! contact (those changes are withheld and reported), and a plan that removes more than the
//! client's allowed share of seats — or all of them — is refused unless the operator says
//! `--allow-drop`.

use std::collections::BTreeMap;

use rollcall_core::{Change, ClientState, Completeness};
use serde::{Deserialize, Serialize};

use super::{Desired, Planned, seats_by_product};

/// The guard settings for one client and one run.
#[derive(Debug, Clone, Copy)]
pub struct GuardPolicy {
    pub max_seat_drop_percent: u32,
    /// The most seats (and contacts) one plan may remove, in people; `None` for no count limit.
    ///
    /// A share alone lets a 400-seat client lose 199 seats to an export cut at a line boundary,
    /// which no parser can tell from 199 leavers; a count bounds what such a cut can cost.
    pub max_seat_drop: Option<u32>,
    pub allow_drop: bool,
}

/// A plan the guards would not let through, with the numbers that explain why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error(
    "client `{client}`: refused: {reason}. Nothing was written for this client. \
     If the drop is real (the client let people go), run again with --allow-drop"
)]
pub struct Refusal {
    pub client: String,
    pub seats_before: u64,
    pub seats_after: u64,
    pub seats_removed: u64,
    pub reason: String,
}

/// A change the guard kept back, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withheld {
    #[serde(flatten)]
    pub change: Change,
    pub reason: String,
}

/// A plan after the guards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guarded {
    pub changes: Vec<Change>,
    pub withheld: Vec<Withheld>,
    pub refusal: Option<Refusal>,
    pub seats_before: u64,
    pub seats_after: u64,
}

/// Applies the guards to a client's plan.
pub fn check(
    client: &str,
    planned: Planned,
    desired: &Desired,
    actual: &ClientState,
    policy: GuardPolicy,
) -> Guarded {
    let mut withheld = Vec::new();
    let changes = match &desired.completeness {
        Completeness::Complete => planned.changes,
        Completeness::Incomplete { reason } => {
            let mut changes = Vec::with_capacity(planned.changes.len());
            let why = format!(
                "the directory read was incomplete ({reason}); nothing is lowered until a complete read"
            );
            for change in planned.changes {
                match hold_back_lowering(change) {
                    Verdict::Keep(kept) => changes.push(kept),
                    Verdict::Withhold(change) => withheld.push(Withheld {
                        change,
                        reason: why.clone(),
                    }),
                }
            }
            changes
        }
    };

    let before = seats_by_product(desired, actual);
    let mut after = before.clone();
    for change in &changes {
        match change {
            Change::CreateAddition {
                product,
                after: fields,
            }
            | Change::UpdateAddition {
                product,
                after: fields,
                ..
            } => {
                after.insert(product.to_lowercase(), fields.quantity);
            }
            Change::CancelAddition { product, .. } => {
                after.insert(product.to_lowercase(), 0);
            }
            Change::CreateInvoice { after: fields, .. }
            | Change::UpdateInvoice { after: fields, .. } => {
                for (product, seats) in after.iter_mut() {
                    *seats = whole_seats(fields.quantity_of(product));
                }
            }
            _ => {}
        }
    }
    let total = |m: &BTreeMap<String, u32>| m.values().map(|&q| u64::from(q)).sum::<u64>();
    let (seats_before, seats_after) = (total(&before), total(&after));
    let removed: u64 = before
        .iter()
        .map(|(product, &was)| {
            u64::from(was.saturating_sub(after.get(product).copied().unwrap_or(0)))
        })
        .sum();

    let reason = if policy.allow_drop || removed == 0 {
        None
    } else if seats_after == 0 {
        Some(format!("the plan removes every seat ({seats_before} → 0)"))
    } else if removed * 100 > seats_before * u64::from(policy.max_seat_drop_percent) {
        Some(format!(
            "the plan removes {removed} of {seats_before} seats ({}%), more than max_seat_drop_percent {}%",
            removed * 100 / seats_before.max(1),
            policy.max_seat_drop_percent
        ))
    } else {
        over_count(policy, removed, "removes", seats_before, "seats")
    };
    // People leaving shows in contacts as much as in seats: a client that bills no seats,
    // or only minimums, must not lose every contact to one bad read either.
    let reason = reason.or_else(|| {
        let ours = |c: &&rollcall_core::ActualContact| {
            c.active && super::ours_contact(desired, c)
        };
        let active = actual.contacts.iter().filter(ours).count() as u64;
        let leaving = changes.iter().filter(|c| matches!(c, Change::DeactivateContact { .. })).count() as u64;
        if policy.allow_drop || leaving == 0 {
            None
        } else if leaving == active {
            Some(format!("the plan deactivates every contact ({active} → 0)"))
        } else if leaving * 100 > active * u64::from(policy.max_seat_drop_percent) {
            Some(format!(
                "the plan deactivates {leaving} of {active} contacts ({}%), more than max_seat_drop_percent {}%",
                leaving * 100 / active.max(1),
                policy.max_seat_drop_percent
            ))
        } else {
            over_count(policy, leaving, "deactivates", active, "contacts")
        }
    });
    let refusal = reason.map(|reason| Refusal {
        client: client.to_owned(),
        seats_before,
        seats_after,
        seats_removed: removed,
        reason,
    });
    Guarded {
        changes,
        withheld,
        refusal,
        seats_before,
        seats_after,
    }
}

/// The refusal for a plan that takes away more people than `max_seat_drop`, if it does.
fn over_count(
    policy: GuardPolicy,
    removed: u64,
    verb: &str,
    of: u64,
    what: &str,
) -> Option<String> {
    let max = policy.max_seat_drop?;
    (removed > u64::from(max))
        .then(|| format!("the plan {verb} {removed} of {of} {what}, more than max_seat_drop {max}"))
}

/// For an incomplete read: keeps what only adds, trims what lowers. An addition whose seat
/// count would fall keeps its count and its text (the names listed are the partial read's);
/// a price change on it still goes through.
fn hold_back_lowering(change: Change) -> Verdict {
    match change {
        Change::CancelAddition { .. } | Change::DeactivateContact { .. } => {
            Verdict::Withhold(change)
        }
        Change::UpdateAddition {
            id,
            product,
            before,
            after,
        } if after.quantity < before.quantity => {
            if after.unit_price == before.unit_price {
                return Verdict::Withhold(Change::UpdateAddition {
                    id,
                    product,
                    before,
                    after,
                });
            }
            let mut kept = before.clone();
            kept.unit_price = after.unit_price;
            Verdict::Keep(Change::UpdateAddition {
                id,
                product,
                before,
                after: kept,
            })
        }
        Change::UpdateInvoice {
            id,
            reference,
            site,
            before,
            after,
        } => {
            // Per product: a line that would bill fewer seats keeps what it billed; the
            // lines that do not lower go through.
            let mut kept = after.clone();
            let lowered: Vec<String> = before
                .lines
                .iter()
                .map(|l| l.product.clone())
                .filter(|p| after.quantity_of(p) < before.quantity_of(p))
                .collect();
            kept.lines.retain(|l| !lowered.contains(&l.product));
            kept.lines.extend(
                before
                    .lines
                    .iter()
                    .filter(|l| lowered.contains(&l.product))
                    .cloned(),
            );
            kept.lines.sort();
            let change = |after| Change::UpdateInvoice {
                id: id.clone(),
                reference: reference.clone(),
                site: site.clone(),
                before: before.clone(),
                after,
            };
            if lowered.is_empty() {
                Verdict::Keep(change(after))
            } else if kept == before {
                Verdict::Withhold(change(after))
            } else {
                Verdict::Keep(change(kept))
            }
        }
        other => Verdict::Keep(other),
    }
}

/// Seats as whole numbers for the guard's arithmetic; a prorated fraction counts down.
fn whole_seats(quantity: rust_decimal::Decimal) -> u32 {
    use rust_decimal::prelude::ToPrimitive;
    quantity.trunc().to_u32().unwrap_or(0)
}

/// What the guard does with one change of a plan built from an incomplete read.
enum Verdict {
    Keep(Change),
    Withhold(Change),
}
