//! The engine's edges for hostile text: what the mapping made (sent to billing systems and
//! shown in plans) and what the logs print. The character rules are `rollcall_core::text`'s.
//!
//! The desired state is cleaned once, after mapping and before planning, rather than in each
//! connector: the planner then compares clean text with clean text read back, so a name with
//! an escape sequence neither reaches a vendor nor makes every resync an update.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use rollcall_core::text::{clean, clean_in_place, has_hostile};

use crate::plan::{Desired, Evidence};

/// Removes control and bidi characters from every text of `desired` that a billing system or
/// a person reads: contact fields, product names, invoice descriptions, the names and evidence
/// behind seats, the invoice's customer. Contacts are keyed again by their cleaned fields, as
/// the contacts read back from the billing system will be.
pub fn desired(desired: &mut Desired) {
    // Old key → cleaned key, for the seat holders that name their contact by key.
    let mut rekeyed = std::collections::BTreeMap::new();
    // Contacts are keyed by their fields, so only a contact with something to clean can change
    // key; when none has, the map is kept rather than built again contact by contact.
    if let Some(contacts) = desired.contacts.as_mut().filter(|contacts| {
        contacts.values().any(|f| {
            has_hostile(&f.first_name)
                || has_hostile(&f.last_name)
                || [&f.email, &f.title, &f.phone]
                    .into_iter()
                    .flatten()
                    .any(|t| has_hostile(t))
        })
    }) {
        let dirty = std::mem::take(contacts);
        for (old, mut fields) in dirty {
            clean_in_place(&mut fields.first_name);
            clean_in_place(&mut fields.last_name);
            for text in [&mut fields.email, &mut fields.title, &mut fields.phone]
                .into_iter()
                .flatten()
            {
                clean_in_place(text);
            }
            if fields.key() != old {
                rekeyed.insert(old.0, fields.key().0);
            }
            contacts.entry(fields.key()).or_insert(fields);
        }
    }
    let mut cleaned_evidence: HashMap<
        *const Evidence,
        (Arc<Evidence>, Arc<Evidence>),
        foldhash::fast::RandomState,
    > = HashMap::default();
    for addition in desired.additions.values_mut() {
        clean_in_place(&mut addition.name);
        clean_in_place(&mut addition.fields.invoice_description);
        for holder in &mut addition.people {
            if let Cow::Owned(name) = clean(&holder.name) {
                holder.name = name.into();
            }
            if let Some(key) = holder.contact.as_mut() {
                match rekeyed.get(&**key) {
                    Some(cleaned) => *key = cleaned.as_str().into(),
                    None => {
                        if let Cow::Owned(cleaned) = clean(key) {
                            *key = cleaned.into();
                        }
                    }
                }
            }
            // Holders share evidence: each one is cleaned once. The originals are kept in the
            // map, so an address seen cannot be reused by another evidence meanwhile.
            let seen = cleaned_evidence
                .entry(Arc::as_ptr(&holder.evidence))
                .or_insert_with(|| {
                    let original = Arc::clone(&holder.evidence);
                    let cleaned =
                        clean_evidence(&original).map_or_else(|| Arc::clone(&original), Arc::new);
                    (original, cleaned)
                });
            holder.evidence = Arc::clone(&seen.1);
        }
    }
    for excluded in &mut desired.excluded {
        clean_in_place(&mut excluded.name);
    }
    if let Some(invoice) = desired.invoice.as_mut() {
        clean_in_place(&mut invoice.customer);
        if let Some(email) = invoice.email.as_mut() {
            clean_in_place(email);
        }
    }
}

/// Standard error with control and bidi characters removed from each log event: a person's
/// name in a warning cannot retitle the terminal or hide the lines around it. (Log colours are
/// off for the same reason: an escape sequence is never let through, whoever wrote it.)
#[derive(Debug, Clone, Copy, Default)]
pub struct CleanStderr;

impl Write for CleanStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr()
            .lock()
            .write_all(clean(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// `evidence` with its names and values cleaned, or `None` when nothing needed cleaning.
///
/// Names are the rules' variable names, which need no cleaning unless a saved plan says
/// otherwise; values are the directory's text.
fn clean_evidence(evidence: &Evidence) -> Option<Evidence> {
    let dirty = |t: &str| matches!(clean(t), Cow::Owned(_));
    if !evidence.iter().any(|(k, v)| dirty(k) || dirty(v)) {
        return None;
    }
    Some(
        evidence
            .iter()
            .map(|(k, v)| (clean(k).into_owned(), clean(v).into_owned()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rollcall_core::{AdditionFields, Completeness, ContactFields};

    use super::*;
    use crate::plan::{DesiredAddition, SeatHolder};

    const HOSTILE: &str = "\u{1b}]0;owned\u{7}\u{1b}[2J\u{202e}\u{9b}";

    #[test]
    fn every_text_of_the_desired_state_is_cleaned_and_contacts_rekeyed() {
        let dirty = |s: &str| format!("{s}{HOSTILE}");
        let contact = ContactFields {
            first_name: dirty("Ann"),
            last_name: dirty("Lee"),
            email: None,
            title: Some(dirty("Eng")),
            phone: Some(dirty("555")),
        };
        let contact_key = contact.key();
        let shared: Arc<Evidence> = Arc::new([(dirty("title"), dirty("Eng"))].into());
        let clean_already: Arc<Evidence> =
            Arc::new([("title".to_owned(), "Eng".to_owned())].into());
        let mut state = Desired {
            completeness: Completeness::Complete,
            contacts: Some(BTreeMap::from([(contact.key(), contact)])),
            additions: BTreeMap::from([(
                "M365".to_owned(),
                DesiredAddition {
                    product: "M365".into(),
                    name: dirty("Microsoft 365"),
                    rule: "true".into(),
                    fields: AdditionFields {
                        quantity: 1,
                        unit_price: "1.00".parse().expect("price"),
                        invoice_description: dirty("Ann Lee"),
                    },
                    counted: 1,
                    people: vec![
                        SeatHolder {
                            person_id: "1".into(),
                            name: dirty("Ann Lee").into(),
                            evidence: Arc::clone(&shared),
                            grace_until: None,
                            contact: Some(contact_key.0.as_str().into()),
                        },
                        // Holders share evidence: cleaning the one must clean the other.
                        SeatHolder {
                            person_id: "2".into(),
                            name: "Bo Ek".into(),
                            evidence: Arc::clone(&shared),
                            grace_until: None,
                            contact: None,
                        },
                        SeatHolder {
                            person_id: "3".into(),
                            name: "Cy Oh".into(),
                            evidence: Arc::clone(&clean_already),
                            grace_until: None,
                            contact: None,
                        },
                    ],
                },
            )]),
            excluded: vec![],
            ownership: None,
            invoice: None,
        };
        desired(&mut state);
        let shown = format!("{state:?}");
        // Debug escapes what it would not print: none of these may be left to escape.
        for escaped in ["\\u{1b}", "\\u{7}", "\\u{202e}", "\\u{9b}"] {
            assert!(!shown.contains(escaped), "{escaped} in {shown}");
        }
        let contacts = state.contacts.expect("contacts");
        let (key, fields) = contacts.iter().next().expect("one contact");
        assert_eq!(key, &fields.key(), "keyed as the contact reads back");
        assert_eq!(fields.first_name, "Ann]0;owned[2J");
        let holder = &state.additions["M365"].people[0];
        assert_eq!(
            holder.contact.as_deref(),
            Some(key.0.as_str()),
            "the seat still finds its contact"
        );
        let people = &state.additions["M365"].people;
        assert_eq!(
            people[1].evidence.values().next().map(String::as_str),
            Some("Eng]0;owned[2J")
        );
        assert!(
            Arc::ptr_eq(&people[0].evidence, &people[1].evidence),
            "cleaned once, still shared"
        );
        assert!(
            Arc::ptr_eq(&people[2].evidence, &clean_already),
            "evidence with nothing to clean is kept as it is"
        );
    }
}
