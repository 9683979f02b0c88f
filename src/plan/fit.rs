//! Fitting the desired state to the billing system's field limits, before anything is planned.
//!
//! A value longer than the system stores is answered with a 400 for that record, run after
//! run. Shortening it here, where the plan is made, means the plan shows exactly what will be
//! written and says why; and since the shortened value is what the system then holds, planning
//! again finds nothing to change. Names, titles, phone numbers and billed text are cut on a
//! character boundary ([`rollcall_core::fit_text`]). An email address is never cut — a shorter
//! address is someone else's — so a contact whose address is too long is left out, with a note,
//! and the seats are billed all the same.

use std::collections::BTreeMap;

use rollcall_core::{ContactFields, ContactKey, FieldLimits, fit_text, text_length};

use super::Desired;

/// Fits `desired` to `limits`; returns a note for each value shortened or contact left out.
pub fn fit(desired: &mut Desired, limits: &FieldLimits) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(contacts) = desired.contacts.take() {
        let (fitted, renamed) = fit_contacts(contacts, limits, &mut notes);
        desired.contacts = Some(fitted);
        // Seat holders name their contact by key, for matching tickets to people.
        for holder in desired
            .additions
            .values_mut()
            .flat_map(|a| a.people.iter_mut())
        {
            if let Some(key) = holder.contact.as_mut()
                && let Some(new) = renamed.get(&**key)
            {
                *key = new.as_str().into();
            }
        }
    }
    if let Some(limit) = limits.line_description {
        for (identifier, addition) in &mut desired.additions {
            let text = &mut addition.fields.invoice_description;
            if let Some(short) = shortened(text, limit) {
                notes.push(format!(
                    "the invoice text of {identifier} is {} characters, longer than the billing system stores; it is cut to {limit}",
                    text_length(text)
                ));
                *text = short;
            }
        }
    }
    notes
}

type Fitted = (
    BTreeMap<ContactKey, ContactFields>,
    BTreeMap<String, String>,
);

/// The contacts fitted, and the keys that changed with them (a contact without an email is
/// matched by its name, so a shortened name is a new key).
fn fit_contacts(
    contacts: BTreeMap<ContactKey, ContactFields>,
    limits: &FieldLimits,
    notes: &mut Vec<String>,
) -> Fitted {
    // Nearly always every contact fits: then the map is kept as it is rather than built again
    // contact by contact (a large client's first run has a contact per person).
    let fits = |value: &str, limit: Option<usize>| {
        limit.is_none_or(|limit| matches!(fit_text(value, limit), std::borrow::Cow::Borrowed(_)))
    };
    let all_fit = contacts.values().all(|f| {
        f.email
            .as_deref()
            .zip(limits.contact_email)
            .is_none_or(|(email, limit)| text_length(email) <= limit)
            && fits(&f.first_name, limits.contact_first_name)
            && fits(&f.last_name, limits.contact_last_name)
            && f.title
                .as_deref()
                .is_none_or(|t| fits(t, limits.contact_title))
            && f.phone
                .as_deref()
                .is_none_or(|t| fits(t, limits.contact_phone))
    });
    if all_fit {
        return (contacts, BTreeMap::new());
    }
    let mut fitted = BTreeMap::new();
    let mut renamed = BTreeMap::new();
    for (key, mut fields) in contacts {
        if let (Some(email), Some(limit)) = (&fields.email, limits.contact_email)
            && text_length(email) > limit
        {
            notes.push(format!(
                "contact {key} is left out: the email address is {} characters and the billing system stores {limit}; an address cannot be shortened, so correct it in the directory (the seats are billed all the same)",
                text_length(email)
            ));
            continue;
        }
        let mut cut = Vec::new();
        fit_field(
            "first name",
            &mut fields.first_name,
            limits.contact_first_name,
            &mut cut,
        );
        fit_field(
            "last name",
            &mut fields.last_name,
            limits.contact_last_name,
            &mut cut,
        );
        for (name, value, limit) in [
            ("title", &mut fields.title, limits.contact_title),
            ("phone", &mut fields.phone, limits.contact_phone),
        ] {
            if let Some(value) = value {
                fit_field(name, value, limit, &mut cut);
            }
        }
        if !cut.is_empty() {
            notes.push(format!(
                "contact {key}: {} longer than the billing system stores, so shortened",
                cut.join(", ")
            ));
        }
        let new_key = fields.key();
        if fitted.contains_key(&new_key) {
            notes.push(format!(
                "contact {key} is left out: shortened to fit, it has the same name as another contact ({new_key}); give one of them an email address in the directory"
            ));
            continue;
        }
        if new_key != key {
            renamed.insert(key.0, new_key.0.clone());
        }
        fitted.insert(new_key, fields);
    }
    (fitted, renamed)
}

fn fit_field(name: &str, value: &mut String, limit: Option<usize>, cut: &mut Vec<String>) {
    if let Some(limit) = limit
        && let Some(short) = shortened(value, limit)
    {
        cut.push(format!("{name} {value:?} → {short:?} ({limit})"));
        *value = short;
    }
}

fn shortened(value: &str, limit: usize) -> Option<String> {
    match fit_text(value, limit) {
        std::borrow::Cow::Borrowed(_) => None,
        std::borrow::Cow::Owned(short) => Some(short),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{DesiredAddition, SeatHolder, plan};
    use proptest::prelude::*;
    use rollcall_core::{AccountRef, ActualContact, AdditionFields, ClientState, Completeness};
    use rust_decimal::Decimal;

    const LIMITS: FieldLimits = FieldLimits {
        contact_first_name: Some(30),
        contact_last_name: Some(30),
        contact_title: Some(50),
        contact_email: Some(250),
        contact_phone: Some(250),
        line_description: Some(40),
        customer_name: None,
    };

    fn person(first: &str, last: &str, email: Option<&str>) -> ContactFields {
        ContactFields {
            first_name: first.to_owned(),
            last_name: last.to_owned(),
            email: email.map(str::to_owned),
            ..ContactFields::default()
        }
    }

    fn desired(contacts: Vec<ContactFields>, description: &str) -> Desired {
        let holders = contacts
            .iter()
            .map(|c| SeatHolder {
                person_id: c.first_name.clone().into(),
                name: c.first_name.clone().into(),
                evidence: Default::default(),
                grace_until: None,
                contact: Some(c.key().0.into()),
            })
            .collect::<Vec<_>>();
        Desired {
            completeness: Completeness::Complete,
            contacts: Some(contacts.into_iter().map(|c| (c.key(), c)).collect()),
            additions: BTreeMap::from([(
                "SEAT".to_owned(),
                DesiredAddition {
                    product: "SEAT".into(),
                    name: "Seat".into(),
                    rule: "true".into(),
                    fields: AdditionFields {
                        quantity: u32::try_from(holders.len()).unwrap_or(u32::MAX),
                        unit_price: Decimal::TEN,
                        invoice_description: description.to_owned(),
                    },
                    counted: 0,
                    people: holders,
                },
            )]),
            excluded: vec![],
            ownership: None,
            invoice: None,
        }
    }

    #[test]
    fn a_forty_character_first_name_is_shortened_with_a_note() {
        let long = "Maximiliana Konstantina Aurelia Wolfe";
        let mut d = desired(vec![person(long, "Ng", Some("max@example.com"))], "Seats");
        let notes = fit(&mut d, &LIMITS);
        let contacts = d.contacts.as_ref().expect("contacts");
        let fitted = &contacts[&ContactKey("max@example.com".into())];
        assert_eq!(fitted.first_name, "Maximiliana Konstantina Aureli");
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("first name"), "{notes:?}");
        // The seat is still billed.
        assert_eq!(d.additions["SEAT"].fields.quantity, 1);
    }

    #[test]
    fn a_name_key_follows_the_shortened_name_and_seat_holders_follow_it() {
        let long = "Bartholomew-Maximilian Fitzgeraldson";
        let mut d = desired(vec![person(long, "Ng", None)], "Seats");
        fit(&mut d, &LIMITS);
        let contacts = d.contacts.as_ref().expect("contacts");
        let key = contacts.keys().next().expect("one contact").clone();
        assert_eq!(key.0, "bartholomew-maximilian fitzger ng");
        assert_eq!(
            d.additions["SEAT"].people[0].contact.as_deref(),
            Some(key.0.as_str())
        );
    }

    #[test]
    fn two_names_that_become_one_keep_the_first_and_say_so() {
        let a = "Alexandria-Konstantinopolous Aa";
        let b = "Alexandria-Konstantinopolous Ab";
        let mut d = desired(vec![person(a, "Ng", None), person(b, "Ng", None)], "x");
        let notes = fit(&mut d, &LIMITS);
        assert_eq!(d.contacts.as_ref().map(BTreeMap::len), Some(1));
        assert!(notes.iter().any(|n| n.contains("same name")), "{notes:?}");
        assert_eq!(d.additions["SEAT"].fields.quantity, 2, "both seats billed");
    }

    #[test]
    fn an_email_too_long_leaves_the_contact_out_never_cut() {
        let email = format!("{}@example.com", "a".repeat(245));
        let mut d = desired(
            vec![
                person("Ada", "L", Some(&email)),
                person("Bo", "K", Some("bo@x.io")),
            ],
            "x",
        );
        let notes = fit(&mut d, &LIMITS);
        let contacts = d.contacts.as_ref().expect("contacts");
        assert_eq!(contacts.len(), 1);
        assert!(contacts.contains_key(&ContactKey("bo@x.io".into())));
        assert!(notes[0].contains("cannot be shortened"), "{notes:?}");
        assert_eq!(d.additions["SEAT"].fields.quantity, 2);
    }

    #[test]
    fn billed_text_is_cut_to_the_line_limit_counting_utf16() {
        let mut d = desired(vec![], &"😀".repeat(30));
        let notes = fit(&mut d, &LIMITS);
        let text = &d.additions["SEAT"].fields.invoice_description;
        assert_eq!(text_length(text), 40);
        assert_eq!(notes.len(), 1);
    }

    #[test]
    fn no_limits_change_nothing() {
        let mut d = desired(vec![person(&"x".repeat(99), "y", None)], "z");
        let before = d.clone();
        assert!(fit(&mut d, &FieldLimits::default()).is_empty());
        assert_eq!(d, before);
    }

    proptest! {
        /// Whatever the directory holds, the fitted contacts fit, and applying the plan then
        /// planning again changes nothing (the shortened values are what the system keeps).
        #[test]
        fn fitted_contacts_fit_and_settle(
            people in proptest::collection::vec(
                ("\\PC{1,45}", "\\PC{0,45}", proptest::option::of("[a-z]{1,8}@[a-z]{1,5}\\.io"), proptest::option::of("\\PC{0,70}")),
                0..6,
            )
        ) {
            let contacts: Vec<ContactFields> = people
                .into_iter()
                .map(|(first, last, email, title)| ContactFields {
                    first_name: first,
                    last_name: last,
                    email,
                    title,
                    phone: None,
                })
                .collect();
            let mut d = desired(contacts, "Seats");
            fit(&mut d, &LIMITS);
            let wanted = d.contacts.clone().unwrap_or_default();
            for (key, c) in &wanted {
                prop_assert_eq!(&c.key(), key);
                prop_assert!(text_length(&c.first_name) <= 30);
                prop_assert!(text_length(&c.last_name) <= 30);
                prop_assert!(c.title.as_deref().is_none_or(|t| text_length(t) <= 50));
            }
            // The system then holds exactly the fitted contacts.
            let actual = ClientState {
                account: AccountRef { company_id: "1".into(), agreement_id: Some("1".into()) },
                contacts: wanted
                    .values()
                    .enumerate()
                    .map(|(i, f)| ActualContact { id: i.to_string(), fields: f.clone(), active: true, marked: true })
                    .collect(),
                additions: vec![],
                invoice: None,
            };
            let mut again = d.clone();
            fit(&mut again, &LIMITS);
            prop_assert_eq!(&again, &d);
            let planned = plan(&again, &actual);
            prop_assert!(
                planned.changes.iter().all(|c| !c.kind().ends_with("_contact")),
                "{:?}", planned.changes
            );
        }
    }
}
