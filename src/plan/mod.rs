//! The planner: a pure function from (desired, actual) to the changes that make them agree.
//!
//! No I/O, no clock, no randomness: the same inputs give the same plan, in the same order, so
//! a plan can be shown to a person, saved, reviewed, and applied later exactly. Guards
//! ([`guard`]) then decide whether a plan may be applied at all.

pub mod fit;
pub mod guard;
pub mod proration;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use rollcall_core::{
    ActualAddition, ActualContact, AdditionFields, Change, ClientState, Completeness,
    ContactFields, ContactKey, InvoiceFields, InvoiceLine, InvoiceTarget,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// What a client should be billed for, as mapped from its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Whether the directory read behind this state saw everything.
    pub completeness: Completeness,
    /// The contacts the client should have, by match key; `None` when contacts are not managed.
    pub contacts: Option<BTreeMap<ContactKey, ContactFields>>,
    /// One addition per billed product, by catalogue identifier, quantity 0 included (so a
    /// product nobody takes any more is cancelled).
    pub additions: BTreeMap<String, DesiredAddition>,
    /// People left out by an exclusion rule, with the rule's name, for the run report.
    pub excluded: Vec<Excluded>,
    /// What rollcall may change: only objects it made or adopted. `None` means everything
    /// it finds is its own (`adopt: true`).
    pub ownership: Option<Ownership>,
    /// For billing systems that bill by invoice: the period's invoice the additions become
    /// lines of. `None` for agreement (PSA) targets.
    pub invoice: Option<DesiredInvoice>,
}

/// The invoice a client's seats go on, and the customer to make if there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredInvoice {
    pub target: InvoiceTarget,
    /// The customer's name when it must be created: the client's `company`, or its `bill_to`
    /// parent when sites are billed together.
    pub customer: String,
    pub email: Option<String>,
    /// Set when seats are charged by the day ([`proration`]).
    pub proration: Option<proration::Proration>,
    /// The billing system's longest line text, for the lines proration writes itself.
    pub text_limit: Option<usize>,
}

/// Ids of the contacts and additions rollcall made or adopted for a client, as its store
/// remembers them. Anything else in the billing system was put there by people and is left
/// alone, and reported where it is in the way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ownership {
    pub contacts: std::collections::BTreeSet<String>,
    pub additions: std::collections::BTreeSet<String>,
}

/// A person an exclusion rule kept off the bill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Excluded {
    pub person_id: String,
    pub name: String,
    pub rule: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredAddition {
    /// The pipeline's product id.
    pub product: String,
    /// The product's name on invoices and reports.
    pub name: String,
    /// The seat rule, as written (CEL), for explanations.
    pub rule: String,
    pub fields: AdditionFields,
    /// Seats the people take before `included` and `minimum` apply.
    pub counted: u32,
    /// The people behind the seats, for the run report and explanations.
    pub people: Vec<SeatHolder>,
}

/// What a seat holder's rules read, by variable name: the small name-to-text map a person's
/// attributes are, with names shared. A plan holds one per seat, so a `BTreeMap` each (whose
/// node reserves room for eleven entries) was most of a large client's plan in memory.
pub type Evidence = rollcall_core::Attributes;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatHolder {
    // Shared text: a person holding seats of several products is one id, name and contact key
    // (and, with the people who read the same, one evidence), not a copy per seat.
    pub person_id: Arc<str>,
    pub name: Arc<str>,
    /// The values the counting and seat rules read for this person (`enabled = true`,
    /// `groups = [...]`): why they hold the seat, in the rules' own terms.
    #[serde(default)]
    pub evidence: Arc<Evidence>,
    /// Set when the person no longer matches and keeps the seat only through the grace
    /// period, until this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_until: Option<String>,
    /// The key of the person's contact in the billing system, where contacts are managed:
    /// how the service desk's tickets are matched to people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<Arc<str>>,
}

/// What the planner found for one client.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Planned {
    pub changes: Vec<Change>,
    /// Things a person should know that are not changes (e.g. duplicates left alone).
    pub notes: Vec<String>,
    /// Differences rollcall must not settle itself: the bill the directory asks for differs
    /// from an invoice that is already final. A person decides (a credit note, next period).
    pub conflicts: Vec<String>,
}

/// Plans the changes that turn `actual` into `desired`.
///
/// Order: contacts are created and updated first, additions next, and removals last
/// (cancellations, then deactivations), so a run cut short removes nothing before it has added.
pub fn plan(desired: &Desired, actual: &ClientState) -> Planned {
    plan_with(
        desired,
        desired.contacts.as_ref().map(Cow::Borrowed),
        actual,
    )
}

/// [`plan`], moving the desired contacts into the changes rather than copying them, and
/// leaving `desired.contacts` empty: a large client's first run creates every contact, and a
/// copy of each beside the original was a 100,000-person plan's peak memory (issue 18).
pub fn plan_taking(desired: &mut Desired, actual: &ClientState) -> Planned {
    let contacts = desired.contacts.take();
    plan_with(desired, contacts.map(Cow::Owned), actual)
}

type WantedContacts = BTreeMap<ContactKey, ContactFields>;

fn plan_with(
    desired: &Desired,
    wanted: Option<Cow<'_, WantedContacts>>,
    actual: &ClientState,
) -> Planned {
    if let Some(invoice) = &desired.invoice {
        return plan_invoice(desired, invoice, actual);
    }
    let mut out = Planned::default();
    // The mark on the object itself counts as much as the store's record, so a lost or new
    // store does not freeze billing.
    let ours_contact = |c: &ActualContact| ours_contact(desired, c);
    let ours_addition = |a: &ActualAddition| ours_addition(desired, a);
    let mut cancellations = Vec::new();
    let mut deactivations = Vec::new();

    if let Some(wanted) = wanted {
        let by_key = index_contacts(&actual.contacts, &ours_contact, &mut out.notes);
        // A person who is gone takes every active contact under their key with them,
        // duplicates included; otherwise the next run would find the next duplicate.
        let mut leaving: Vec<&ActualContact> = actual
            .contacts
            .iter()
            .filter(|c| {
                c.active
                    && ours_contact(c)
                    && by_key.contains_key(&c.fields.key())
                    && !wanted.contains_key(&c.fields.key())
            })
            .collect();
        leaving.sort_by(|a, b| {
            a.fields
                .key()
                .cmp(&b.fields.key())
                .then_with(|| id_order(&a.id, &b.id))
        });
        deactivations.extend(leaving.into_iter().map(|c| Change::DeactivateContact {
            id: c.id.clone(),
            key: c.fields.key(),
            before: Box::new(c.fields.clone()),
        }));
        let wanted: Box<dyn Iterator<Item = (Cow<'_, ContactKey>, Cow<'_, ContactFields>)>> =
            match wanted {
                Cow::Borrowed(w) => {
                    Box::new(w.iter().map(|(k, f)| (Cow::Borrowed(k), Cow::Borrowed(f))))
                }
                Cow::Owned(w) => {
                    Box::new(w.into_iter().map(|(k, f)| (Cow::Owned(k), Cow::Owned(f))))
                }
            };
        for (key, fields) in wanted {
            match by_key.get(&*key) {
                // Someone else's contact for this person: creating a second would duplicate
                // it, changing it is not ours to do.
                Some(have) if !ours_contact(have) => out.notes.push(format!(
                    "contact {key} (#{}) was not made by rollcall and is left as it is; `adopt: true` lets rollcall manage it",
                    have.id
                )),
                None => out.changes.push(Change::CreateContact {
                    key: key.into_owned(),
                    after: Box::new(fields.into_owned()),
                }),
                Some(have) if !have.active => out.changes.push(Change::ReactivateContact {
                    id: have.id.clone(),
                    key: key.into_owned(),
                    before: Box::new(have.fields.clone()),
                    after: Box::new(merge_unmanaged(&fields, &have.fields)),
                }),
                Some(have) => {
                    let after = merge_unmanaged(&fields, &have.fields);
                    if after != have.fields {
                        out.changes.push(Change::UpdateContact {
                            id: have.id.clone(),
                            key: key.into_owned(),
                            before: Box::new(have.fields.clone()),
                            after: Box::new(after),
                        });
                    }
                }
            }
        }
    }

    let additions = index_additions(&actual.additions, &ours_addition, &mut out.notes);
    for (identifier, want) in &desired.additions {
        match additions.get(&identifier.to_lowercase()) {
            // Someone else's addition bills this product: rollcall neither changes it nor
            // adds a second line beside it, which would bill the client twice.
            Some(have) if !ours_addition(have) => out.notes.push(format!(
                "addition #{} bills {} but was not made by rollcall; it is left as it is and nothing is added beside it; `adopt: true` lets rollcall manage it",
                have.id, have.product
            )),
            None if want.fields.quantity > 0 => out.changes.push(Change::CreateAddition {
                product: identifier.clone(),
                after: Box::new(want.fields.clone()),
            }),
            None => {}
            // Nobody takes the product any more: every addition billing it goes, duplicates
            // included, or the client would keep paying through the one left.
            Some(_) if want.fields.quantity == 0 => {
                let mut billing_it: Vec<&ActualAddition> = actual
                    .additions
                    .iter()
                    .filter(|a| a.product.eq_ignore_ascii_case(identifier) && ours_addition(a))
                    .collect();
                billing_it.sort_by(|a, b| id_order(&a.id, &b.id));
                cancellations.extend(billing_it.into_iter().map(|a| Change::CancelAddition {
                    id: a.id.clone(),
                    product: a.product.clone(),
                    before: Box::new(a.fields.clone()),
                }));
            }
            Some(have) if have.fields != want.fields => out.changes.push(Change::UpdateAddition {
                id: have.id.clone(),
                product: have.product.clone(),
                before: Box::new(have.fields.clone()),
                after: Box::new(want.fields.clone()),
            }),
            Some(_) => {}
        }
    }
    out.changes.extend(cancellations);
    out.changes.extend(deactivations);
    out
}

/// The lines the desired seats make on an invoice: one per billed product with seats, in
/// product order (as a connector reports a read invoice's lines).
pub fn invoice_lines(desired: &Desired) -> Vec<InvoiceLine> {
    let mut lines: Vec<InvoiceLine> = desired
        .additions
        .iter()
        .filter(|(_, a)| a.fields.quantity > 0)
        .map(|(identifier, a)| InvoiceLine {
            product: identifier.clone(),
            quantity: Decimal::from(a.fields.quantity),
            unit_price: a.fields.unit_price,
            description: a.fields.invoice_description.clone(),
        })
        .collect();
    lines.sort();
    lines
}

/// Billing by invoice: the client's customer first, then the period's invoice, created or
/// brought up to date while it is a draft. A final invoice is never changed; a difference
/// against it is a conflict for a person.
fn plan_invoice(desired: &Desired, invoice: &DesiredInvoice, actual: &ClientState) -> Planned {
    let mut out = Planned::default();
    let lines = match &invoice.proration {
        Some(p) => {
            let (lines, notes) =
                proration::invoice_lines(desired, invoice.target.period, p, invoice.text_limit);
            out.notes.extend(notes);
            lines
        }
        None => invoice_lines(desired),
    };
    let after = InvoiceFields {
        reference: invoice.target.reference.clone(),
        date: invoice.target.date,
        due_date: invoice.target.due_date,
        lines,
    };
    if actual.account.company_id.is_empty() {
        if after.lines.is_empty() {
            return out;
        }
        out.changes.push(Change::CreateCustomer {
            name: invoice.customer.clone(),
            email: invoice.email.clone(),
        });
    }
    // Item codes compare without case, as the systems treat them; spelled as the pipeline does,
    // a case difference alone is not a change.
    let canonical = |mut fields: InvoiceFields| {
        for line in &mut fields.lines {
            if let Some(id) = desired
                .additions
                .keys()
                .find(|id| id.eq_ignore_ascii_case(&line.product))
            {
                line.product = id.clone();
            }
        }
        fields.lines.sort();
        fields
    };
    match &actual.invoice {
        None if after.lines.is_empty() => {}
        None => out.changes.push(Change::CreateInvoice {
            reference: after.reference.clone(),
            site: invoice.target.site.clone(),
            after: Box::new(after),
        }),
        Some(have) if !have.status.is_draft() => {
            if canonical(have.fields.clone()).lines != after.lines {
                let label = have.number.as_deref().unwrap_or(&have.id);
                let status = match &have.status {
                    rollcall_core::InvoiceStatus::Final(s) => s.as_str(),
                    rollcall_core::InvoiceStatus::Draft => "draft",
                };
                out.conflicts.push(format!(
                    "invoice {label} for {} is {status}, so it is left as it is: it bills {} seat(s), the directory now says {}",
                    invoice.target.period,
                    have.fields.total_seats().normalize(),
                    after.total_seats().normalize()
                ));
            }
        }
        Some(have) => {
            let before = canonical(have.fields.clone());
            if before != after {
                out.changes.push(Change::UpdateInvoice {
                    id: have.id.clone(),
                    reference: after.reference.clone(),
                    site: invoice.target.site.clone(),
                    before: Box::new(before),
                    after: Box::new(after),
                });
            }
        }
    }
    out
}

/// Optional fields the pipeline does not manage (no template, or a person without that value)
/// keep whatever the billing system holds.
fn merge_unmanaged(want: &ContactFields, have: &ContactFields) -> ContactFields {
    ContactFields {
        first_name: want.first_name.clone(),
        last_name: want.last_name.clone(),
        email: want.email.clone().or_else(|| have.email.clone()),
        title: want.title.clone().or_else(|| have.title.clone()),
        phone: want.phone.clone().or_else(|| have.phone.clone()),
    }
}

/// One contact per key: rollcall's own is preferred, then an active one, then the lowest id,
/// so the choice is stable. Others are left alone and reported.
fn index_contacts<'a>(
    contacts: &'a [ActualContact],
    ours: &dyn Fn(&ActualContact) -> bool,
    notes: &mut Vec<String>,
) -> BTreeMap<ContactKey, &'a ActualContact> {
    let mut by_key: BTreeMap<ContactKey, &ActualContact> = BTreeMap::new();
    let mut sorted: Vec<&ActualContact> = contacts.iter().collect();
    sorted.sort_by(|a, b| {
        ours(b)
            .cmp(&ours(a))
            .then_with(|| b.active.cmp(&a.active))
            .then_with(|| id_order(&a.id, &b.id))
    });
    for c in sorted {
        let key = c.fields.key();
        if key.0.is_empty() {
            continue;
        }
        if let Some(kept) = by_key.get(&key) {
            if c.active {
                notes.push(format!(
                    "contacts {} and {} share the key {key}; only {} is managed",
                    kept.id, c.id, kept.id
                ));
            }
            continue;
        }
        by_key.insert(key, c);
    }
    by_key
}

fn index_additions<'a>(
    additions: &'a [ActualAddition],
    ours: &dyn Fn(&ActualAddition) -> bool,
    notes: &mut Vec<String>,
) -> BTreeMap<String, &'a ActualAddition> {
    let mut by_product: BTreeMap<String, &ActualAddition> = BTreeMap::new();
    let mut sorted: Vec<&ActualAddition> = additions.iter().collect();
    sorted.sort_by(|a, b| ours(b).cmp(&ours(a)).then_with(|| id_order(&a.id, &b.id)));
    for a in sorted {
        let key = a.product.to_lowercase();
        if let Some(kept) = by_product.get(&key) {
            notes.push(format!(
                "additions {} and {} both bill {}; only {} is managed, the other is left as it is",
                kept.id, a.id, a.product, kept.id
            ));
            continue;
        }
        by_product.insert(key, a);
    }
    by_product
}

/// Whether rollcall may change a contact: it carries rollcall's mark, or the store records it
/// as made or adopted, or the client adopts everything.
fn ours_contact(desired: &Desired, c: &ActualContact) -> bool {
    c.marked
        || desired
            .ownership
            .as_ref()
            .is_none_or(|o| o.contacts.contains(&c.id))
}

/// Whether rollcall may change an addition, as [`ours_contact`].
fn ours_addition(desired: &Desired, a: &ActualAddition) -> bool {
    a.marked
        || desired
            .ownership
            .as_ref()
            .is_none_or(|o| o.additions.contains(&a.id))
}

/// Ids compare as numbers when both are numbers (a PSA's record ids), else as text.
fn id_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

/// Seats billed per product identifier (lower-cased) in a state, for the products in `desired`.
/// For invoice targets these are the seats on the period's invoice.
pub fn seats_by_product(desired: &Desired, actual: &ClientState) -> BTreeMap<String, u32> {
    if desired.invoice.is_some() {
        use rust_decimal::prelude::ToPrimitive;
        return desired
            .additions
            .keys()
            .map(|id| {
                let seats = actual
                    .invoice
                    .as_ref()
                    .map(|i| i.fields.quantity_of(id))
                    .unwrap_or_default();
                (id.to_lowercase(), seats.trunc().to_u32().unwrap_or(0))
            })
            .collect();
    }
    let mut notes = Vec::new();
    let ours = |a: &ActualAddition| ours_addition(desired, a);
    let index = index_additions(&actual.additions, &ours, &mut notes);
    desired
        .additions
        .keys()
        .map(|id| {
            let key = id.to_lowercase();
            let q = index.get(&key).map(|a| a.fields.quantity).unwrap_or(0);
            (key, q)
        })
        .collect()
}

#[cfg(test)]
mod tests;
