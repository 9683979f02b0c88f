//! Fixed work for the instruction-count guard (`benches/instructions.rs`, `scripts/bench-guard`):
//! the decode of search answers into people, without a server, so the count measures rollcall's
//! decoding alone and does not move with slapd or the network. Not part of the crate's API.

use chrono::{DateTime, Utc};

use crate::ber::{self, Tag, Writer};
use crate::model::{self, Entry};

/// The contents of `n` SearchResultEntry answers for AD-like users, as a DC sends them: a
/// binary objectGUID, the names, flags, two group DNs and a title.
pub fn sample_entries(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut w = Writer::default();
            w.octets(format!("CN=User {i},OU=Staff,DC=corp,DC=example").as_bytes());
            let list = w.mark();
            let mut guid = [0u8; 16];
            guid[..8].copy_from_slice(&(i as u64).to_le_bytes());
            guid[8] = 0x80;
            guid[15] = 0xff; // not UTF-8, as most GUIDs are not
            let groups = [
                "CN=Staff,OU=Groups,DC=corp,DC=example".to_owned(),
                format!("CN=Team {},OU=Groups,DC=corp,DC=example", i % 20),
            ];
            let text = [
                ("sAMAccountName", vec![format!("user{i}")]),
                ("givenName", vec![format!("Given{i}")]),
                ("sn", vec![format!("Sur{i}")]),
                ("displayName", vec![format!("Given{i} Sur{i}")]),
                ("mail", vec![format!("user{i}@corp.example")]),
                ("userPrincipalName", vec![format!("user{i}@corp.local")]),
                (
                    "userAccountControl",
                    vec![if i % 17 == 0 { "514" } else { "512" }.to_owned()],
                ),
                ("title", vec!["Engineer".to_owned()]),
                ("memberOf", groups.to_vec()),
            ];
            attribute(&mut w, "objectGUID", &[&guid[..]]);
            for (name, values) in &text {
                let values: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
                attribute(&mut w, name, &values);
            }
            w.wrap(list, Tag::universal(ber::SEQUENCE));
            w.buf
        })
        .collect()
}

fn attribute(w: &mut Writer, name: &str, values: &[&[u8]]) {
    let pair = w.mark();
    w.octets(name.as_bytes());
    let set = w.mark();
    for v in values {
        w.octets(v);
    }
    w.wrap(set, Tag::universal(ber::SET));
    w.wrap(pair, Tag::universal(ber::SEQUENCE));
}

/// Decodes every entry and maps it to a person as the read does; the people made.
pub fn decode_people(entries: &[Vec<u8>], now: DateTime<Utc>) -> Vec<rollcall_core::Person> {
    entries
        .iter()
        .filter_map(|contents| {
            let mut entry = Entry::from_wire(contents).ok()?;
            let groups = entry
                .texts(model::MEMBER_OF)
                .iter()
                .map(|dn| model::group_name(dn, None))
                .collect();
            model::person(&mut entry, &[], groups, now).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_sample_decodes_into_as_many_people_with_their_groups() {
        let people = super::decode_people(&super::sample_entries(20), chrono::Utc::now());
        assert_eq!(people.len(), 20);
        assert_eq!(people[3].username, "user3");
        assert_eq!(people[3].groups, ["Staff", "Team 3"]);
        assert!(!people[0].enabled && people[1].enabled, "514 is disabled");
        assert_eq!(people[1].id.len(), 36, "a GUID's text form");
    }
}
