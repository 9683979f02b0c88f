//! The planner's examples and properties. Every example goes through [`check`], so a change to
//! the planner's API touches one function.

use proptest::prelude::*;
use rollcall_core::{
    AccountRef, ActualAddition, ActualContact, AdditionFields, Change, ClientState, Completeness,
    ContactFields,
};
use rust_decimal::Decimal;

use super::Ownership;
use super::guard::{self, GuardPolicy};
use super::*;

fn person(first: &str, email: Option<&str>) -> ContactFields {
    ContactFields {
        first_name: first.into(),
        last_name: "X".into(),
        email: email.map(str::to_owned),
        title: None,
        phone: None,
    }
}

fn line(quantity: u32, price: &str, text: &str) -> AdditionFields {
    AdditionFields {
        quantity,
        unit_price: price.parse().expect("price"),
        invoice_description: text.into(),
    }
}

fn desired(contacts: &[ContactFields], additions: &[(&str, AdditionFields)]) -> Desired {
    Desired {
        completeness: Completeness::Complete,
        contacts: Some(contacts.iter().map(|c| (c.key(), c.clone())).collect()),
        additions: additions
            .iter()
            .map(|(id, f)| {
                (
                    (*id).to_owned(),
                    DesiredAddition {
                        product: id.to_lowercase(),
                        name: id.to_string(),
                        rule: "true".into(),
                        fields: f.clone(),
                        counted: f.quantity,
                        people: vec![],
                    },
                )
            })
            .collect(),
        excluded: vec![],
        ownership: None,
        invoice: None,
    }
}

fn actual(
    contacts: &[(&str, ContactFields, bool)],
    additions: &[(&str, &str, AdditionFields)],
) -> ClientState {
    ClientState {
        account: AccountRef {
            company_id: "1".into(),
            agreement_id: Some("7".into()),
        },
        invoice: None,
        contacts: contacts
            .iter()
            .map(|(id, f, active)| ActualContact {
                id: (*id).into(),
                fields: f.clone(),
                active: *active,
                marked: false,
            })
            .collect(),
        additions: additions
            .iter()
            .map(|(id, product, f)| ActualAddition {
                id: (*id).into(),
                product: (*product).into(),
                fields: f.clone(),
                marked: false,
            })
            .collect(),
    }
}

/// One line per change: `kind subject`.
#[track_caller]
fn check(d: &Desired, a: &ClientState) -> Vec<String> {
    plan(d, a)
        .changes
        .iter()
        .map(|c| format!("{} {}", c.kind(), c.subject()))
        .collect()
}

#[test]
fn a_new_client_gets_contacts_then_additions() {
    let d = desired(
        &[person("Ada", Some("ada@x")), person("Bob", None)],
        &[("M365", line(2, "22.00", "Ada, Bob"))],
    );
    let a = actual(&[], &[]);
    assert_eq!(
        check(&d, &a),
        [
            "create_contact ada@x",
            "create_contact bob x",
            "create_addition M365"
        ]
    );
}

#[test]
fn a_resync_with_nothing_changed_plans_nothing() {
    let ada = person("Ada", Some("ada@x"));
    let d = desired(
        std::slice::from_ref(&ada),
        &[("M365", line(1, "22.00", "Ada"))],
    );
    let a = actual(
        &[("10", ada, true)],
        &[("20", "M365", line(1, "22.00", "Ada"))],
    );
    assert!(check(&d, &a).is_empty());
}

#[test]
fn a_leaver_lowers_the_count_and_is_deactivated_last() {
    let (ada, bob) = (person("Ada", Some("ada@x")), person("Bob", Some("bob@x")));
    let d = desired(
        std::slice::from_ref(&ada),
        &[("M365", line(1, "22.00", "Ada"))],
    );
    let a = actual(
        &[("10", ada, true), ("11", bob, true)],
        &[("20", "M365", line(2, "22.00", "Ada, Bob"))],
    );
    assert_eq!(
        check(&d, &a),
        ["update_addition M365", "deactivate_contact bob@x"]
    );
    let p = plan(&d, &a);
    let Change::UpdateAddition { before, after, .. } = &p.changes[0] else {
        panic!("not an update: {:?}", p.changes[0])
    };
    assert_eq!((before.quantity, after.quantity), (2, 1));
}

#[test]
fn a_product_nobody_takes_is_cancelled_and_one_never_billed_is_not_created() {
    let d = desired(
        &[],
        &[("M365", line(0, "22.00", "")), ("SEC", line(0, "3.50", ""))],
    );
    let a = actual(&[], &[("20", "m365", line(3, "22.00", "a, b, c"))]);
    assert_eq!(check(&d, &a), ["cancel_addition m365"]);
}

#[test]
fn a_returning_person_reactivates_their_contact_instead_of_a_second_one() {
    let ada = person("Ada", Some("ADA@x"));
    let d = desired(&[person("Ada", Some("ada@x"))], &[]);
    let a = actual(&[("10", ada, false)], &[]);
    assert_eq!(check(&d, &a), ["reactivate_contact ada@x"]);
}

#[test]
fn unmanaged_fields_keep_what_the_billing_system_has() {
    let mut held = person("Ada", Some("ada@x"));
    held.title = Some("CEO".into());
    held.phone = Some("+1 555".into());
    let d = desired(&[person("Ada", Some("ada@x"))], &[]);
    let a = actual(&[("10", held, true)], &[]);
    assert!(check(&d, &a).is_empty());
}

#[test]
fn duplicate_additions_are_reported_and_only_the_oldest_is_managed() {
    let d = desired(&[], &[("M365", line(2, "22.00", "x"))]);
    let a = actual(
        &[],
        &[
            ("9", "M365", line(5, "22.00", "x")),
            ("30", "M365", line(1, "22.00", "x")),
        ],
    );
    let p = plan(&d, &a);
    assert_eq!(p.changes.len(), 1);
    let Change::UpdateAddition { id, .. } = &p.changes[0] else {
        panic!("{:?}", p.changes)
    };
    assert_eq!(id, "9");
    assert!(
        p.notes.iter().any(|n| n.contains("9") && n.contains("30")),
        "{:?}",
        p.notes
    );
}

#[test]
fn what_rollcall_did_not_make_is_left_alone_and_reported() {
    let ada = person("Ada", Some("ada@x"));
    let mut d = desired(
        std::slice::from_ref(&ada),
        &[("M365", line(2, "22.00", "x"))],
    );
    d.ownership = Some(Ownership::default());
    let a = actual(
        &[
            ("10", ada, true),
            ("11", person("Kim", Some("kim@vendor")), true),
        ],
        &[("20", "M365", line(5, "20.00", "by hand"))],
    );
    let p = plan(&d, &a);
    assert!(p.changes.is_empty(), "{:?}", p.changes);
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains("contact ada@x (#10) was not made by rollcall")),
        "{:?}",
        p.notes
    );
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains("addition #20 bills M365 but was not made by rollcall")),
        "{:?}",
        p.notes
    );
    // With adopt (no ownership limit), the same state is managed.
    d.ownership = None;
    assert_eq!(
        check(&d, &a),
        ["update_addition M365", "deactivate_contact kim@vendor"]
    );
}

#[test]
fn unmanaged_contacts_are_left_alone() {
    let mut d = desired(&[], &[]);
    d.contacts = None;
    let a = actual(&[("10", person("Ada", Some("ada@x")), true)], &[]);
    assert!(check(&d, &a).is_empty());
}

fn policy(max: u32) -> GuardPolicy {
    GuardPolicy {
        max_seat_drop_percent: max,
        max_seat_drop: None,
        allow_drop: false,
    }
}

#[test]
fn the_guard_refuses_a_drop_above_the_limit_and_allow_drop_lets_it_through() {
    let d = desired(&[], &[("M365", line(4, "22.00", "x"))]);
    let a = actual(&[], &[("20", "M365", line(10, "22.00", "x"))]);
    let g = guard::check("acme", plan(&d, &a), &d, &a, policy(50));
    let r = g.refusal.expect("refused");
    assert_eq!((r.seats_before, r.seats_after, r.seats_removed), (10, 4, 6));
    assert!(r.to_string().contains("removes 6 of 10 seats (60%)"), "{r}");
    let g = guard::check(
        "acme",
        plan(&d, &a),
        &d,
        &a,
        GuardPolicy {
            allow_drop: true,
            ..policy(50)
        },
    );
    assert!(g.refusal.is_none());
    let g = guard::check("acme", plan(&d, &a), &d, &a, policy(60));
    assert!(g.refusal.is_none(), "exactly at the limit passes");
}

#[test]
fn a_count_limit_refuses_a_drop_the_share_lets_through() {
    // The cut export: 400 → 240 stays under a 50% share.
    let d = desired(&[], &[("M365", line(240, "22.00", "x"))]);
    let a = actual(&[], &[("20", "M365", line(400, "22.00", "x"))]);
    let counted = |max| GuardPolicy {
        max_seat_drop: Some(max),
        ..policy(50)
    };
    assert!(
        guard::check("acme", plan(&d, &a), &d, &a, policy(50))
            .refusal
            .is_none()
    );
    let r = guard::check("acme", plan(&d, &a), &d, &a, counted(25))
        .refusal
        .expect("refused");
    assert_eq!(r.seats_removed, 160);
    assert!(
        r.to_string()
            .contains("removes 160 of 400 seats, more than max_seat_drop 25"),
        "{r}"
    );
    let g = guard::check("acme", plan(&d, &a), &d, &a, counted(160));
    assert!(g.refusal.is_none(), "exactly at the limit passes");
    let g = guard::check(
        "acme",
        plan(&d, &a),
        &d,
        &a,
        GuardPolicy {
            allow_drop: true,
            ..counted(0)
        },
    );
    assert!(g.refusal.is_none());
}

#[test]
fn a_count_limit_counts_contacts_deactivated() {
    let people: Vec<(String, ContactFields, bool)> = (0..40)
        .map(|n| (n.to_string(), person(&format!("P{n}"), None), true))
        .collect();
    let refs: Vec<(&str, ContactFields, bool)> = people
        .iter()
        .map(|(id, c, active)| (id.as_str(), c.clone(), *active))
        .collect();
    let a = actual(&refs, &[]);
    let staying: Vec<ContactFields> = people.iter().take(10).map(|(_, c, _)| c.clone()).collect();
    let d = desired(&staying, &[]);
    let g = guard::check(
        "acme",
        plan(&d, &a),
        &d,
        &a,
        GuardPolicy {
            max_seat_drop: Some(25),
            ..policy(100)
        },
    );
    let r = g.refusal.expect("refused");
    assert_eq!(
        r.reason,
        "the plan deactivates 30 of 40 contacts, more than max_seat_drop 25"
    );
}

#[test]
fn the_guard_refuses_removing_every_seat_even_with_a_high_limit() {
    let d = desired(&[], &[("M365", line(0, "22.00", ""))]);
    let a = actual(&[], &[("20", "M365", line(3, "22.00", "x"))]);
    let g = guard::check("acme", plan(&d, &a), &d, &a, policy(100));
    assert!(g.refusal.expect("refused").reason.contains("every seat"));
}

#[test]
fn deactivating_most_contacts_is_refused_even_without_seats() {
    let people: Vec<ContactFields> = (0..4)
        .map(|i| person(&format!("P{i}"), Some(&format!("p{i}@x"))))
        .collect();
    let d = desired(&people[..1], &[]);
    let a = actual(
        &people
            .iter()
            .enumerate()
            .map(|(i, p)| (["1", "2", "3", "4"][i], p.clone(), true))
            .collect::<Vec<_>>(),
        &[],
    );
    let g = guard::check("acme", plan(&d, &a), &d, &a, policy(50));
    let r = g.refusal.expect("refused");
    assert!(
        r.reason.contains("deactivates 3 of 4 contacts (75%)"),
        "{}",
        r.reason
    );
    let g = guard::check(
        "acme",
        plan(&d, &a),
        &d,
        &a,
        GuardPolicy {
            allow_drop: true,
            ..policy(50)
        },
    );
    assert!(g.refusal.is_none());
    let d = desired(&[], &[]);
    let g = guard::check("acme", plan(&d, &a), &d, &a, policy(100));
    assert!(g.refusal.expect("refused").reason.contains("every contact"));
}

#[test]
fn moving_seats_between_products_counts_what_was_removed() {
    let d = desired(&[], &[("A", line(0, "1", "")), ("B", line(10, "1", "x"))]);
    let a = actual(&[], &[("1", "A", line(10, "1", "x"))]);
    let g = guard::check("acme", plan(&d, &a), &d, &a, policy(50));
    assert_eq!(g.refusal.expect("refused").seats_removed, 10);
}

#[test]
fn an_incomplete_read_adds_but_never_lowers_or_deactivates() {
    let (ada, bob) = (person("Ada", Some("ada@x")), person("Cy", Some("cy@x")));
    let mut d = desired(
        &[ada.clone(), bob],
        &[
            ("M365", line(1, "25.00", "Ada")),
            ("NEW", line(1, "1", "Ada")),
            ("OLD", line(0, "1", "")),
        ],
    );
    d.completeness = Completeness::Incomplete {
        reason: "line 7 unreadable".into(),
    };
    let a = actual(
        &[
            ("10", ada, true),
            ("11", person("Bob", Some("bob@x")), true),
        ],
        &[
            ("20", "M365", line(3, "22.00", "Ada, Bob, Cy")),
            ("21", "OLD", line(2, "1", "x")),
        ],
    );
    let g = guard::check("acme", plan(&d, &a), &d, &a, policy(0));
    assert!(
        g.refusal.is_none(),
        "nothing is lowered, so nothing to refuse"
    );
    let kinds: Vec<String> = g
        .changes
        .iter()
        .map(|c| format!("{} {}", c.kind(), c.subject()))
        .collect();
    assert_eq!(
        kinds,
        [
            "create_contact cy@x",
            "update_addition M365",
            "create_addition NEW"
        ]
    );
    let Change::UpdateAddition { after, .. } = &g.changes[1] else {
        panic!()
    };
    assert_eq!(after.quantity, 3, "the count stays; only the price moves");
    assert_eq!(after.unit_price, Decimal::new(2500, 2));
    let withheld: Vec<&str> = g.withheld.iter().map(|w| w.change.kind()).collect();
    assert_eq!(withheld, ["cancel_addition", "deactivate_contact"]);
    assert_eq!(g.seats_after, g.seats_before + 1);
}

/// The test model of apply: what the billing system holds after the changes.
fn after(mut state: ClientState, changes: &[Change]) -> ClientState {
    let mut next_id = 1000;
    let mut fresh = || {
        next_id += 1;
        next_id.to_string()
    };
    for change in changes {
        match change {
            Change::CreateContact { after, .. } => state.contacts.push(ActualContact {
                id: fresh(),
                fields: (**after).clone(),
                active: true,
                marked: true,
            }),
            Change::UpdateContact { id, after, .. }
            | Change::ReactivateContact { id, after, .. } => {
                let c = state
                    .contacts
                    .iter_mut()
                    .find(|c| &c.id == id)
                    .expect("contact");
                c.fields = (**after).clone();
                c.active = true;
            }
            Change::DeactivateContact { id, .. } => {
                state
                    .contacts
                    .iter_mut()
                    .find(|c| &c.id == id)
                    .expect("contact")
                    .active = false;
            }
            Change::CreateAddition { product, after } => state.additions.push(ActualAddition {
                id: fresh(),
                product: product.clone(),
                fields: (**after).clone(),
                marked: true,
            }),
            Change::UpdateAddition { id, after, .. } => {
                state
                    .additions
                    .iter_mut()
                    .find(|a| &a.id == id)
                    .expect("addition")
                    .fields = (**after).clone();
            }
            Change::CancelAddition { id, .. } => state.additions.retain(|a| &a.id != id),
            Change::CreateCustomer { .. } => state.account.company_id = fresh(),
            Change::CreateInvoice { after, .. } => {
                state.invoice = Some(rollcall_core::ActualInvoice {
                    id: fresh(),
                    number: None,
                    status: rollcall_core::InvoiceStatus::Draft,
                    fields: (**after).clone(),
                })
            }
            Change::UpdateInvoice { after, .. } => {
                state.invoice.as_mut().expect("invoice").fields = (**after).clone();
            }
        }
    }
    state
}

mod arb {
    use super::*;

    pub fn contact() -> impl Strategy<Value = ContactFields> {
        (
            0..6usize,
            prop::option::of(0..6usize),
            prop::option::of("[A-C]"),
            prop::bool::ANY,
        )
            .prop_map(|(n, e, title, upper)| {
                let email = e.map(|e| {
                    if upper {
                        format!("P{e}@X")
                    } else {
                        format!("p{e}@x")
                    }
                });
                ContactFields {
                    first_name: format!("N{n}"),
                    last_name: "L".into(),
                    email,
                    title,
                    phone: None,
                }
            })
    }

    pub fn fields() -> impl Strategy<Value = AdditionFields> {
        (
            0..6u32,
            prop::sample::select(vec!["1.00", "22.50", "3.5"]),
            "[ab]{0,2}",
        )
            .prop_map(|(quantity, p, text)| line(quantity, p, &text))
    }

    pub fn desired() -> impl Strategy<Value = Desired> {
        (
            prop::collection::vec(contact(), 0..6),
            prop::collection::btree_map(
                prop::sample::select(vec!["P1", "P2", "P3"]),
                fields(),
                0..3,
            ),
            prop::bool::ANY,
        )
            .prop_map(|(contacts, additions, manage)| Desired {
                completeness: Completeness::Complete,
                contacts: manage.then(|| {
                    contacts
                        .into_iter()
                        .filter(|c| !c.key().0.is_empty())
                        .map(|c| (c.key(), c))
                        .collect()
                }),
                additions: additions
                    .into_iter()
                    .map(|(k, f)| {
                        (
                            k.to_owned(),
                            DesiredAddition {
                                product: k.to_lowercase(),
                                name: k.to_string(),
                                rule: "true".into(),
                                counted: f.quantity,
                                fields: f,
                                people: vec![],
                            },
                        )
                    })
                    .collect(),
                excluded: vec![],
                ownership: None,
                invoice: None,
            })
    }

    pub fn actual() -> impl Strategy<Value = ClientState> {
        (
            prop::collection::vec((contact(), prop::bool::ANY), 0..6),
            prop::collection::vec(
                (prop::sample::select(vec!["P1", "p2", "P3", "P4"]), fields()),
                0..4,
            ),
        )
            .prop_map(|(contacts, additions)| ClientState {
                account: AccountRef {
                    company_id: "1".into(),
                    agreement_id: None,
                },
                invoice: None,
                contacts: contacts
                    .into_iter()
                    .enumerate()
                    .map(|(i, (fields, active))| ActualContact {
                        id: i.to_string(),
                        fields,
                        active,
                        marked: false,
                    })
                    .collect(),
                additions: additions
                    .into_iter()
                    .enumerate()
                    .map(|(i, (p, fields))| ActualAddition {
                        id: (100 + i).to_string(),
                        product: p.to_owned(),
                        fields,
                        marked: false,
                    })
                    .collect(),
            })
    }
}

proptest! {
    /// DESIGN invariant 2: planning again after applying a plan yields an empty plan.
    #[test]
    fn planning_after_applying_plans_nothing(d in arb::desired(), a in arb::actual()) {
        let first = plan(&d, &a);
        let applied = after(a, &first.changes);
        let second = plan(&d, &applied);
        prop_assert!(second.changes.is_empty(), "second plan: {:?}", second.changes);
    }

    /// The same, with ownership: rollcall touches only what it made (learning the ids of what
    /// it creates, as its store does), never another's contact or addition.
    #[test]
    fn planning_converges_and_never_touches_what_is_not_ours(
        d in arb::desired(),
        a in arb::actual(),
        owned_contacts in prop::collection::btree_set(prop::sample::select(vec!["0", "1", "2", "3", "4", "5"]), 0..6),
        owned_additions in prop::collection::btree_set(prop::sample::select(vec!["100", "101", "102", "103"]), 0..4),
    ) {
        let mut d = d;
        d.ownership = Some(Ownership {
            contacts: owned_contacts.iter().map(|s| (*s).to_owned()).collect(),
            additions: owned_additions.iter().map(|s| (*s).to_owned()).collect(),
        });
        let first = plan(&d, &a);
        for change in &first.changes {
            let touched = match change {
                Change::UpdateContact { id, .. } | Change::ReactivateContact { id, .. } | Change::DeactivateContact { id, .. } => Some(("c", id)),
                Change::UpdateAddition { id, .. } | Change::CancelAddition { id, .. } => Some(("a", id)),
                _ => None,
            };
            if let Some((kind, id)) = touched {
                let o = d.ownership.as_ref().expect("set");
                prop_assert!(if kind == "c" { o.contacts.contains(id) } else { o.additions.contains(id) }, "touched {id}, not ours");
            }
        }
        let before_ids: std::collections::BTreeSet<String> =
            a.contacts.iter().map(|c| c.id.clone()).chain(a.additions.iter().map(|x| x.id.clone())).collect();
        let applied = after(a, &first.changes);
        if let Some(o) = d.ownership.as_mut() {
            o.contacts.extend(applied.contacts.iter().filter(|c| !before_ids.contains(&c.id)).map(|c| c.id.clone()));
            o.additions.extend(applied.additions.iter().filter(|x| !before_ids.contains(&x.id)).map(|x| x.id.clone()));
        }
        let second = plan(&d, &applied);
        prop_assert!(second.changes.is_empty(), "second plan: {:?}", second.changes);
    }

    /// After applying, each billed product holds exactly the desired count.
    #[test]
    fn applied_quantities_equal_the_desired_ones(d in arb::desired(), a in arb::actual()) {
        let changes = plan(&d, &a).changes;
        let applied = after(a, &changes);
        let mut notes = Vec::new();
        let held = super::index_additions(&applied.additions, &|_| true, &mut notes);
        for (id, want) in &d.additions {
            let have = held.get(&id.to_lowercase()).map(|a| a.fields.quantity).unwrap_or(0);
            prop_assert_eq!(have, want.fields.quantity);
        }
    }

    /// Planning that moves the desired contacts into the changes (what a run does, issue 18)
    /// plans exactly what planning over a borrowed desired state does.
    #[test]
    fn planning_that_takes_the_contacts_plans_the_same(d in arb::desired(), a in arb::actual()) {
        let borrowed = plan(&d, &a);
        let mut taken_from = d.clone();
        let taken = super::plan_taking(&mut taken_from, &a);
        prop_assert_eq!(&taken, &borrowed);
        prop_assert!(taken_from.contacts.is_none(), "the contacts were taken");
        prop_assert_eq!(taken_from.additions, d.additions);
    }

    /// The planner is deterministic: the actual state's order does not matter.
    #[test]
    fn the_plan_does_not_depend_on_listing_order(d in arb::desired(), a in arb::actual()) {
        let mut reversed = a.clone();
        reversed.contacts.reverse();
        reversed.additions.reverse();
        prop_assert_eq!(plan(&d, &a), plan(&d, &reversed));
    }

    /// DESIGN invariant 3: an incomplete read never lowers a seat count or deactivates.
    #[test]
    fn an_incomplete_read_never_lowers(mut d in arb::desired(), a in arb::actual()) {
        d.completeness = Completeness::Incomplete { reason: "cut short".into() };
        let g = guard::check("c", plan(&d, &a), &d, &a, GuardPolicy { max_seat_drop_percent: 100, max_seat_drop: None, allow_drop: true });
        let before = seats_by_product(&d, &a);
        let applied = after(a, &g.changes);
        let now = seats_by_product(&d, &applied);
        for (product, was) in before {
            prop_assert!(now.get(&product).copied().unwrap_or(0) >= was, "{product} lowered");
        }
        let removes = g.changes.iter().any(|c| matches!(c, Change::DeactivateContact { .. } | Change::CancelAddition { .. }));
        prop_assert!(!removes, "a removal went through");
    }

    /// `max_seat_drop`: a plan the guard lets through removes at most that many seats.
    #[test]
    fn a_count_limit_bounds_what_goes_through(d in arb::desired(), a in arb::actual(), max in 0u32..6) {
        let policy = GuardPolicy { max_seat_drop_percent: 100, max_seat_drop: Some(max), allow_drop: false };
        let g = guard::check("c", plan(&d, &a), &d, &a, policy);
        if g.refusal.is_none() {
            let before = seats_by_product(&d, &a);
            let now = seats_by_product(&d, &after(a, &g.changes));
            let removed: u64 = before.iter().map(|(p, &was)| u64::from(was.saturating_sub(now.get(p).copied().unwrap_or(0)))).sum();
            prop_assert!(removed <= u64::from(max), "{removed} removed past max_seat_drop {max}");
        }
    }
}

mod invoices {
    //! Billing by invoice: the same planner, with the period's invoice in place of additions.
    use super::*;
    use chrono::NaiveDate;
    use rollcall_core::{
        ActualInvoice, BillingPeriod, InvoiceFields, InvoiceLine, InvoiceStatus, InvoiceTarget,
    };

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).expect("date")
    }

    fn target() -> InvoiceTarget {
        InvoiceTarget {
            period: BillingPeriod {
                start: day(1),
                end: day(30),
            },
            reference: "rollcall Acme 2026-11".into(),
            date: day(1),
            due_date: Some(day(30)),
            bill_to: None,
            site: None,
        }
    }

    fn invoiced(additions: &[(&str, AdditionFields)]) -> Desired {
        let mut d = desired(&[], additions);
        d.contacts = None;
        d.invoice = Some(DesiredInvoice {
            target: target(),
            customer: "Acme".into(),
            email: Some("billing@acme.test".into()),
            proration: None,
            text_limit: None,
        });
        d
    }

    fn state(customer: &str, invoice: Option<ActualInvoice>) -> ClientState {
        ClientState {
            account: AccountRef {
                company_id: customer.into(),
                agreement_id: None,
            },
            contacts: vec![],
            additions: vec![],
            invoice,
        }
    }

    fn inv_line(product: &str, quantity: u32, text: &str) -> InvoiceLine {
        InvoiceLine {
            product: product.into(),
            quantity: Decimal::from(quantity),
            unit_price: "22.00".parse().expect("price"),
            description: text.into(),
        }
    }

    fn invoice(status: InvoiceStatus, lines: Vec<InvoiceLine>) -> ActualInvoice {
        ActualInvoice {
            id: "INV-9".into(),
            number: Some("1042".into()),
            status,
            fields: InvoiceFields {
                reference: "rollcall Acme 2026-11".into(),
                date: day(1),
                due_date: Some(day(30)),
                lines,
            },
        }
    }

    #[test]
    fn a_new_client_gets_its_customer_then_its_invoice() {
        let d = invoiced(&[
            ("M365", line(3, "22.00", "Ann, Bob, Cy")),
            ("BACKUP", line(0, "5.00", "")),
        ]);
        let p = plan(&d, &state("", None));
        assert_eq!(p.changes.len(), 2);
        assert!(matches!(&p.changes[0], Change::CreateCustomer { name, .. } if name == "Acme"));
        let Change::CreateInvoice { after, .. } = &p.changes[1] else {
            panic!("second change: {:?}", p.changes[1]);
        };
        assert_eq!(
            after.lines,
            vec![inv_line("M365", 3, "Ann, Bob, Cy")],
            "no zero lines"
        );
        assert_eq!(after.due_date, Some(day(30)));
    }

    #[test]
    fn nobody_billed_and_no_customer_writes_nothing() {
        let d = invoiced(&[("M365", line(0, "22.00", ""))]);
        assert!(plan(&d, &state("", None)).changes.is_empty());
    }

    #[test]
    fn a_draft_is_updated_in_place_and_case_alone_is_no_change() {
        let d = invoiced(&[("M365", line(4, "22.00", "Ann, Bob, Cy, Di"))]);
        let draft = invoice(
            InvoiceStatus::Draft,
            vec![inv_line("m365", 3, "Ann, Bob, Cy")],
        );
        let p = plan(&d, &state("C1", Some(draft)));
        let [
            Change::UpdateInvoice {
                id, before, after, ..
            },
        ] = p.changes.as_slice()
        else {
            panic!("{:?}", p.changes);
        };
        assert_eq!(id, "INV-9");
        assert_eq!(before.lines[0].product, "M365");
        assert_eq!(after.lines[0].quantity, Decimal::from(4));

        let same = invoice(
            InvoiceStatus::Draft,
            vec![inv_line("m365", 4, "Ann, Bob, Cy, Di")],
        );
        assert!(plan(&d, &state("C1", Some(same))).changes.is_empty());
    }

    #[test]
    fn a_final_invoice_is_never_changed_and_a_difference_is_a_conflict() {
        let d = invoiced(&[("M365", line(4, "22.00", "Ann, Bob, Cy, Di"))]);
        let sent = invoice(
            InvoiceStatus::Final("EmailSent".into()),
            vec![inv_line("M365", 3, "Ann, Bob, Cy")],
        );
        let p = plan(&d, &state("C1", Some(sent)));
        assert!(p.changes.is_empty());
        assert_eq!(p.conflicts.len(), 1);
        assert!(p.conflicts[0].contains("1042") && p.conflicts[0].contains("EmailSent"));

        let agreeing = invoice(
            InvoiceStatus::Final("PAID".into()),
            vec![inv_line("M365", 4, "Ann, Bob, Cy, Di")],
        );
        assert!(plan(&d, &state("C1", Some(agreeing))).conflicts.is_empty());
    }

    #[test]
    fn an_incomplete_read_never_lowers_an_invoice_line() {
        let mut d = invoiced(&[
            ("M365", line(1, "22.00", "Ann")),
            ("BACKUP", line(5, "5.00", "5 users")),
        ]);
        d.completeness = Completeness::Incomplete {
            reason: "connection dropped".into(),
        };
        let draft = invoice(
            InvoiceStatus::Draft,
            vec![inv_line("M365", 3, "Ann, Bob, Cy")],
        );
        let a = state("C1", Some(draft));
        let planned = plan(&d, &a);
        let g = guard::check("Acme", planned, &d, &a, policy(20));
        let [Change::UpdateInvoice { after, .. }] = g.changes.as_slice() else {
            panic!("{:?}", g.changes);
        };
        assert_eq!(
            after.quantity_of("M365"),
            Decimal::from(3),
            "kept, not lowered"
        );
        assert_eq!(
            after.quantity_of("BACKUP"),
            Decimal::from(5),
            "raising goes through"
        );
    }

    #[test]
    fn the_guard_refuses_an_invoice_emptied_by_a_read_that_found_nobody() {
        let d = invoiced(&[("M365", line(0, "22.00", ""))]);
        let draft = invoice(InvoiceStatus::Draft, vec![inv_line("M365", 30, "…")]);
        let a = state("C1", Some(draft));
        let g = guard::check("Acme", plan(&d, &a), &d, &a, policy(20));
        assert!(g.refusal.is_some(), "30 → 0 must be refused");
        assert_eq!((g.seats_before, g.seats_after), (30, 0));
    }

    proptest! {
        /// Planning again after applying an invoice plan plans nothing, whatever was there.
        #[test]
        fn invoice_planning_converges(
            d in arb::desired(),
            customer in prop::bool::ANY,
            existing in prop::option::of((prop::bool::ANY, prop::collection::vec((prop::sample::select(vec!["P1", "p2", "P4"]), 0..5u32), 0..3))),
        ) {
            let mut d = d;
            d.contacts = None;
            d.invoice = Some(DesiredInvoice { target: target(), customer: "Acme".into(), email: None, proration: None, text_limit: None });
            let invoice = existing.map(|(draft, lines)| invoice(
                if draft { InvoiceStatus::Draft } else { InvoiceStatus::Final("PAID".into()) },
                lines.into_iter().map(|(p, q)| inv_line(p, q, "x")).collect(),
            ));
            let a = state(if customer { "C1" } else { "" }, invoice);
            let first = plan(&d, &a);
            let final_before = a.invoice.as_ref().is_some_and(|i| !i.status.is_draft());
            if final_before {
                let touches_final = first.changes.iter().any(|c| matches!(c, Change::UpdateInvoice { .. }));
                prop_assert!(!touches_final, "a final invoice was changed");
            }
            let applied = after(a, &first.changes);
            let second = plan(&d, &applied);
            prop_assert!(second.changes.is_empty(), "second plan: {:?}", second.changes);
        }
    }
}

mod periods {
    //! Proration over any period: runs on arbitrary days and hours, each billing the month
    //! before, of or after its own, with people taking and giving up the seat between runs.
    //! Every plan applied leaves nothing to plan; at the end every period resynced later plans
    //! nothing; and every invoice's money is what a day count says, in integer cents.
    use super::proration::{Held, Proration};
    use super::*;
    use crate::config::invoice::{InvoicePolicy, Invoicing, month_of};
    use chrono::{DateTime, Months, NaiveDate, TimeZone, Utc};
    use chrono_tz::Tz;
    use rollcall_core::{BillingPeriod, Currency, round_money};
    use rust_decimal::prelude::ToPrimitive;

    const PEOPLE: [&str; 5] = ["ada", "bob", "cy", "di", "ed"];

    /// A run: when (minutes after the previous one), who holds the seat (a bit per person),
    /// and which month it bills beside its own (−1, 0, +1).
    type Run = (i64, u8, i32);

    fn period_of(now: DateTime<Utc>, zone: Tz, offset: i32) -> BillingPeriod {
        let own = month_of(now.with_timezone(&zone).date_naive()).start;
        let start = if offset < 0 {
            own - Months::new(offset.unsigned_abs())
        } else {
            own + Months::new(offset.unsigned_abs())
        };
        month_of(start)
    }

    fn invoiced(
        period: BillingPeriod,
        holders: u8,
        price_cents: i64,
        proration: Proration,
    ) -> Desired {
        let people: Vec<SeatHolder> = PEOPLE
            .iter()
            .enumerate()
            .filter(|(i, _)| holders & (1 << i) != 0)
            .map(|(_, p)| SeatHolder {
                person_id: (*p).into(),
                name: (*p).into(),
                evidence: Default::default(),
                grace_until: None,
                contact: None,
            })
            .collect();
        let fields = AdditionFields {
            quantity: people.len() as u32,
            unit_price: Decimal::new(price_cents, 2),
            invoice_description: "M365".into(),
        };
        let mut d = desired(&[], &[("M365", fields)]);
        d.contacts = None;
        d.additions.get_mut("M365").expect("product").people = people;
        let invoicing = Invoicing::from_policy(&InvoicePolicy::default()).expect("policy");
        d.invoice = Some(DesiredInvoice {
            target: invoicing.target(period.start, "Acme", None, None),
            customer: "Acme".into(),
            email: None,
            proration: Some(proration),
            text_limit: None,
        });
        d
    }

    /// What the store's `record_seats` does with a client's applied plan.
    fn record(ledger: &mut Vec<Held>, now: DateTime<Utc>, holders: u8) {
        for (i, p) in PEOPLE.iter().enumerate() {
            let holds = holders & (1 << i) != 0;
            let open = ledger
                .iter_mut()
                .find(|h| h.person_id == *p && h.until.is_none());
            match (open, holds) {
                (Some(span), false) => span.until = Some(now),
                (None, true) => ledger.push(Held {
                    product: "m365".into(),
                    person_id: (*p).into(),
                    name: (*p).into(),
                    since: now,
                    until: None,
                }),
                _ => {}
            }
        }
    }

    /// The invoice's money in cents, each line rounded once as the accounting systems do.
    fn cents(state: &ClientState) -> i64 {
        state.invoice.as_ref().map_or(0, |i| {
            i.fields
                .lines
                .iter()
                .map(|l| {
                    let amount = round_money(l.quantity * l.unit_price, Currency::Usd);
                    (amount * Decimal::ONE_HUNDRED).to_i64().expect("cents")
                })
                .sum()
        })
    }

    /// The reference: who held the seat on each day of the period, by the last run on or
    /// before that day (before the first run that found anyone: that run's holders, who were
    /// already there), each unbroken stretch short of the whole period billed
    /// `days ÷ period days` rounded to ten-thousandths, times the price, rounded to the cent;
    /// halves away from zero. Integers only.
    fn reference_cents(
        runs: &[(DateTime<Utc>, u8)],
        zone: Tz,
        period: BillingPeriod,
        price_cents: i64,
    ) -> i64 {
        let runs: Vec<(NaiveDate, u8)> = runs
            .iter()
            .skip_while(|(_, h)| *h == 0)
            .map(|(t, h)| (t.with_timezone(&zone).date_naive(), *h))
            .collect();
        let Some(first) = runs.first() else {
            return 0;
        };
        let period_days = (period.end - period.start).num_days() + 1;
        let holders_on = |day: NaiveDate| {
            runs.iter()
                .rev()
                .find(|(d, _)| *d <= day)
                .unwrap_or(first)
                .1
        };
        let mut total = 0;
        for i in 0..PEOPLE.len() {
            let mut stretches: Vec<i64> = Vec::new();
            let mut held_yesterday = false;
            for day in period.start.iter_days().take_while(|d| *d <= period.end) {
                let held = holders_on(day) & (1 << i) != 0;
                if held && held_yesterday {
                    *stretches.last_mut().expect("stretch") += 1;
                } else if held {
                    stretches.push(1);
                }
                held_yesterday = held;
            }
            if stretches == [period_days] {
                total += price_cents;
                continue;
            }
            for days in stretches {
                let ten_thousandths = (days * 20_000 + period_days) / (2 * period_days);
                total += (ten_thousandths * price_cents * 2 + 10_000) / 20_000;
            }
        }
        total
    }

    fn scenario() -> impl Strategy<Value = (DateTime<Utc>, Tz, i64, Vec<Run>, i64)> {
        let starts = prop::sample::select(vec![
            (2026, 11, 1),
            (2026, 12, 20),
            (2028, 1, 25),
            (2028, 2, 27),
            (2027, 2, 1),
            (2027, 3, 30),
        ]);
        let zones = prop::sample::select(vec![
            Tz::UTC,
            Tz::Pacific__Auckland,
            Tz::America__Los_Angeles,
            Tz::Asia__Kolkata,
        ]);
        // Runs from minutes to three weeks apart, so some share a day and some a period.
        let run = (
            prop_oneof![0..600i64, 0..30_240i64],
            0..32u8,
            prop::sample::select(vec![-1, 0, 1]),
        );
        (
            starts,
            0..24 * 60i64,
            zones,
            1..100_000i64,
            prop::collection::vec(run, 1..8),
            0..90 * 24 * 60i64,
        )
            .prop_map(|((y, m, d), minute, zone, price, runs, later)| {
                let start = Utc
                    .with_ymd_and_hms(y, m, d, 0, 0, 0)
                    .single()
                    .expect("start")
                    + chrono::Duration::minutes(minute);
                (start, zone, price, runs, later)
            })
    }

    proptest! {
        #[test]
        fn every_period_resyncs_to_a_fixed_point_and_bills_the_days_held(
            (start, zone, price, runs, later) in scenario(),
        ) {
            let mut ledger: Vec<Held> = Vec::new();
            // Each period's invoice, and the last run that billed it.
            let mut invoices: BTreeMap<NaiveDate, (BillingPeriod, ClientState, usize)> = BTreeMap::new();
            let mut history: Vec<(DateTime<Utc>, u8)> = Vec::new();
            let mut now = start;
            let empty = ClientState {
                account: AccountRef { company_id: "C1".into(), agreement_id: None },
                contacts: vec![],
                additions: vec![],
                invoice: None,
            };
            for (gap, holders, offset) in &runs {
                // Runs are never at the same moment: the ledger keys spans by their start.
                now += chrono::Duration::minutes(gap + 1);
                let period = period_of(now, zone, *offset);
                let d = invoiced(period, *holders, price, Proration::from_ledger(&ledger, now, zone));
                let (_, state, last) = invoices.entry(period.start).or_insert((period, empty.clone(), 0));
                *last = history.len();
                let planned = plan(&d, state);
                *state = after(state.clone(), &planned.changes);
                let again = plan(&d, state);
                prop_assert!(again.changes.is_empty(), "planned again at {now}: {:?}", again.changes);
                history.push((now, *holders));
                record(&mut ledger, now, *holders);
                let reference = reference_cents(&history, zone, period, price);
                prop_assert_eq!(cents(state), reference, "{} at {}: {:?}", period, now, state.invoice);
            }
            // Later, nobody having changed: a period billed after the last change plans
            // nothing; every period, and one before the ledger began, ends as the day count
            // says, and stays so on any later day.
            let holders = history.last().expect("a run").1;
            let before = period_of(start, zone, -2);
            invoices.entry(before.start).or_insert((before, empty.clone(), usize::MAX));
            for resync in [now + chrono::Duration::minutes(later), now + chrono::Duration::days(200)] {
                for (period, state, last) in invoices.values_mut() {
                    let d = invoiced(*period, holders, price, Proration::from_ledger(&ledger, resync, zone));
                    let planned = plan(&d, state);
                    let changed_since = history.get(*last..).is_none_or(|h| h.iter().any(|(_, held)| *held != holders));
                    if !changed_since {
                        prop_assert!(planned.changes.is_empty(), "{} resynced at {resync}: {:?}", period, planned.changes);
                    }
                    *state = after(state.clone(), &planned.changes);
                    *last = history.len() - 1;
                    prop_assert!(plan(&d, state).changes.is_empty());
                    prop_assert_eq!(cents(state), reference_cents(&history, zone, *period, price), "{}", period);
                }
            }
        }
    }
}
