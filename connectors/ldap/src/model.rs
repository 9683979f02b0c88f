//! AD's attribute names and value forms, and how one search entry becomes a [`Person`].
//!
//! This is the only place that names AD attributes, so the attribute list a search asks for and
//! the mapping that reads the answer cannot drift apart. Values are decoded by
//! [`rollcall_core::ad`], shared with the LDIF reader, so a person read live and the same person
//! read from an export get the same id and the same enabled state.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use rollcall_core::Person;
use rollcall_core::ad::{self, UserAccountControl};

pub(crate) const OBJECT_GUID: &str = "objectGUID";
pub(crate) const SAM_ACCOUNT_NAME: &str = "sAMAccountName";
pub(crate) const UPN: &str = "userPrincipalName";
pub(crate) const MAIL: &str = "mail";
pub(crate) const GIVEN_NAME: &str = "givenName";
pub(crate) const SURNAME: &str = "sn";
pub(crate) const DISPLAY_NAME: &str = "displayName";
pub(crate) const UAC: &str = "userAccountControl";
pub(crate) const ACCOUNT_EXPIRES: &str = "accountExpires";
pub(crate) const MEMBER: &str = "member";
pub(crate) const MEMBER_OF: &str = "memberOf";
pub(crate) const CN: &str = "cn";
pub(crate) const ENTRY_UUID: &str = "entryUUID";

/// Read as they are into [`Person::attributes`].
const PLAIN: &[&str] = &[
    "title",
    "department",
    "telephoneNumber",
    "whenCreated",
    "whenChanged",
    UAC,
    ACCOUNT_EXPIRES,
];

/// The attributes a people search asks for: the ones mapped to fields, then the pipeline's.
pub(crate) fn person_attributes(extra: &[String]) -> Vec<String> {
    let mut attrs: Vec<String> = [
        OBJECT_GUID,
        ENTRY_UUID,
        SAM_ACCOUNT_NAME,
        UPN,
        MAIL,
        GIVEN_NAME,
        SURNAME,
        DISPLAY_NAME,
        MEMBER_OF,
    ]
    .iter()
    .chain(PLAIN)
    .map(|s| (*s).to_owned())
    .collect();
    for e in extra {
        if !attrs.iter().any(|a| a.eq_ignore_ascii_case(e)) {
            attrs.push(e.clone());
        }
    }
    attrs
}

/// One entry as returned, with text and binary values together: ldap3 files an attribute under
/// `bin_attrs` only when some value is not UTF-8, so an objectGUID whose 16 bytes happen to be
/// valid UTF-8 arrives as text (CRATES.md pitfall 9). Lookups ignore the case of names, as LDAP does.
pub(crate) struct Entry {
    pub dn: String,
    pub attrs: HashMap<String, Vec<String>>,
    pub bin_attrs: HashMap<String, Vec<Vec<u8>>>,
}

impl Entry {
    fn key<'a, V>(map: &'a HashMap<String, V>, name: &str) -> Option<&'a V> {
        map.get(name).or_else(|| {
            map.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })
    }

    /// The first text value of `name`.
    pub fn text(&self, name: &str) -> Option<&str> {
        Self::key(&self.attrs, name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    /// Every text value of `name`.
    pub fn texts(&self, name: &str) -> &[String] {
        Self::key(&self.attrs, name).map_or(&[], Vec::as_slice)
    }

    /// The first value of `name` as bytes, wherever ldap3 filed it.
    pub fn bytes(&self, name: &str) -> Option<&[u8]> {
        Self::key(&self.bin_attrs, name)
            .and_then(|v| v.first())
            .map(Vec::as_slice)
            .or_else(|| self.text(name).map(str::as_bytes))
    }
}

/// Why an entry could not become a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Skip {
    /// A computer or trust account, which AD also files as `objectClass: user`.
    Machine,
    /// Not a person we can identify: no usable objectGUID or entryUUID.
    NoId(String),
}

/// Maps an entry to a person, with `groups` already worked out by the caller.
pub(crate) fn person(
    entry: &Entry,
    extra: &[String],
    groups: Vec<String>,
    now: DateTime<Utc>,
) -> Result<Person, Skip> {
    let uac = entry.text(UAC).and_then(UserAccountControl::parse);
    if uac.is_some_and(UserAccountControl::is_machine) {
        return Err(Skip::Machine);
    }
    let id = match entry.bytes(OBJECT_GUID) {
        Some(bytes) => ad::guid_to_string(bytes).ok_or_else(|| {
            Skip::NoId(format!(
                "objectGUID has {} bytes, not 16; the entry is skipped",
                bytes.len()
            ))
        })?,
        // Servers other than AD (slapd) give every entry an entryUUID instead.
        None => match entry.text(ENTRY_UUID) {
            Some(uuid) => uuid.trim().to_ascii_lowercase(),
            None => {
                return Err(Skip::NoId(
                    "no objectGUID or entryUUID (the account may not read it); the entry is skipped"
                        .to_owned(),
                ));
            }
        },
    };
    let expires = entry
        .text(ACCOUNT_EXPIRES)
        .and_then(|t| t.trim().parse::<i64>().ok())
        .and_then(ad::account_expires);
    // An expired account cannot sign in, though AD leaves it "enabled" (CONTRACTS.md).
    let enabled =
        !uac.is_some_and(UserAccountControl::is_disabled) && expires.is_none_or(|at| at > now);

    let mut attributes = BTreeMap::new();
    attributes.insert("dn".to_owned(), entry.dn.clone());
    for name in PLAIN
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
    {
        let values = entry.texts(name);
        if !values.is_empty() {
            attributes.insert(name.to_owned(), values.join("; "));
        } else if let Some(bytes) = binary_text(entry, name) {
            attributes.insert(name.to_owned(), bytes);
        }
    }
    if let Some(uac) = uac {
        attributes.insert(
            "userAccountControlFlags".to_owned(),
            uac.flag_names().join(" "),
        );
    }
    if let Some(at) = expires {
        attributes.insert("accountExpiresAt".to_owned(), at.to_rfc3339());
    }
    let text = |name: &str| {
        entry
            .text(name)
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    let opt = |name: &str| {
        entry
            .text(name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    Ok(Person {
        id,
        username: text(SAM_ACCOUNT_NAME),
        given_name: text(GIVEN_NAME),
        surname: text(SURNAME),
        display_name: text(DISPLAY_NAME),
        email: opt(MAIL),
        upn: opt(UPN),
        enabled,
        groups,
        licenses: Vec::new(),
        attributes,
    })
}

/// Binary values of extra attributes (objectSid and the like) as AD's tools print them.
fn binary_text(entry: &Entry, name: &str) -> Option<String> {
    let bytes = Entry::key(&entry.bin_attrs, name)?.first()?;
    if name.eq_ignore_ascii_case("objectSid") {
        return ad::sid_to_string(bytes);
    }
    ad::guid_to_string(bytes)
}

/// A DN in a form two spellings of the same DN share: servers return DNs as they store them
/// (slapd lowercases `cn=…,ou=…`; AD keeps the case written), and `member` values may differ in
/// case and spacing from the entry's own DN.
pub(crate) fn dn_key(dn: &str) -> String {
    let mut out = String::with_capacity(dn.len());
    let mut chars = dn.trim().chars().peekable();
    let mut escaped = false;
    while let Some(c) = chars.next() {
        if escaped {
            out.extend(c.to_lowercase());
            escaped = false;
            continue;
        }
        match c {
            '\\' => {
                out.push(c);
                escaped = true;
            }
            ',' | '=' | '+' => {
                while out.ends_with(' ') {
                    out.pop();
                }
                out.push(c);
                while chars.peek() == Some(&' ') {
                    chars.next();
                }
            }
            c => out.extend(c.to_lowercase()),
        }
    }
    out
}

/// Whether `dn` is `ancestor` or lies below it.
pub(crate) fn is_under(dn_key: &str, ancestor_key: &str) -> bool {
    dn_key == ancestor_key
        || (dn_key.len() > ancestor_key.len()
            && dn_key.ends_with(ancestor_key)
            && dn_key.as_bytes()[dn_key.len() - ancestor_key.len() - 1] == b',')
}

/// A group's name as rules see it: its CN, else the DN as written.
pub(crate) fn group_name(dn: &str, cn: Option<&str>) -> String {
    cn.map(str::to_owned)
        .or_else(|| ad::cn_of_dn(dn))
        .unwrap_or_else(|| dn.to_owned())
}

/// A ranged attribute description as AD returns it: `member;range=0-1499` is the first 1,500
/// values with more to come, `member;range=1500-*` the last batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Range {
    pub low: u32,
    /// `None` for `*`: this was the last batch.
    pub high: Option<u32>,
}

/// Parses the range option of `description` if it names `attribute`: `Some` for
/// `member;range=0-1499`, `None` for `member` or another attribute.
pub(crate) fn parse_range(description: &str, attribute: &str) -> Option<Range> {
    let mut parts = description.split(';');
    if !parts.next()?.eq_ignore_ascii_case(attribute) {
        return None;
    }
    let range = parts.find_map(|p| {
        p.get(..6)
            .filter(|k| k.eq_ignore_ascii_case("range="))
            .map(|_| &p[6..])
    })?;
    let (low, high) = range.split_once('-')?;
    let low = low.parse().ok()?;
    let high = if high == "*" {
        None
    } else {
        Some(high.parse().ok()?)
    };
    Some(Range { low, high })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(attrs: &[(&str, &[&str])], bin: &[(&str, Vec<u8>)]) -> Entry {
        Entry {
            dn: "CN=Zoë Müller,OU=Staff,DC=example,DC=test".into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.iter().map(|s| (*s).to_owned()).collect()))
                .collect(),
            bin_attrs: bin
                .iter()
                .map(|(k, v)| ((*k).to_owned(), vec![v.clone()]))
                .collect(),
        }
    }

    const GUID: [u8; 16] = [
        0xC9, 0x8B, 0x91, 0x35, 0x6D, 0x19, 0xEA, 0x40, 0x97, 0x79, 0x88, 0x9D, 0x79, 0xB7, 0x53,
        0xF0,
    ];

    #[test]
    fn an_ad_user_becomes_a_person() {
        let e = entry(
            &[
                ("sAMAccountName", &["zmuller"]),
                ("givenName", &["Zoë"]),
                ("sn", &["Müller"]),
                ("displayName", &["Zoë Müller"]),
                ("userAccountControl", &["66048"]),
                ("accountExpires", &["9223372036854775807"]),
                ("department", &["Sales"]),
            ],
            &[("objectGUID", GUID.to_vec())],
        );
        let p = person(&e, &[], vec!["Staff".into()], Utc::now()).expect("person");
        assert_eq!(p.id, "35918bc9-196d-40ea-9779-889d79b753f0");
        assert_eq!(p.username, "zmuller");
        assert_eq!(p.display_name, "Zoë Müller");
        assert_eq!(p.email, None);
        assert!(p.enabled);
        assert_eq!(p.attributes["department"], "Sales");
        assert_eq!(
            p.attributes["userAccountControlFlags"],
            "NORMAL_ACCOUNT DONT_EXPIRE_PASSWORD"
        );
    }

    #[test]
    fn a_guid_that_is_valid_utf8_is_read_from_text() {
        // 16 ASCII bytes: ldap3 files these under `attrs`, not `bin_attrs`.
        let e = entry(&[("objectGUID", &["ABCDEFGHIJKLMNOP"])], &[]);
        let p = person(&e, &[], vec![], Utc::now()).expect("person");
        assert_eq!(p.id, "44434241-4645-4847-494a-4b4c4d4e4f50");
    }

    #[test]
    fn disabled_expired_and_machine_accounts() {
        let now = Utc::now();
        let g = || ("objectGUID", GUID.to_vec());
        let disabled = entry(&[("userAccountControl", &["514"])], &[g()]);
        assert!(!person(&disabled, &[], vec![], now).expect("p").enabled);
        // 2024-01-01: in the past.
        let expired = entry(
            &[
                ("userAccountControl", &["512"]),
                ("accountExpires", &["133485408000000000"]),
            ],
            &[g()],
        );
        let p = person(&expired, &[], vec![], now).expect("p");
        assert!(!p.enabled);
        assert_eq!(
            p.attributes["accountExpiresAt"],
            "2024-01-01T00:00:00+00:00"
        );
        let never = entry(&[("accountExpires", &["0"])], &[g()]);
        assert!(person(&never, &[], vec![], now).expect("p").enabled);
        let machine = entry(&[("userAccountControl", &["4096"])], &[g()]);
        assert_eq!(person(&machine, &[], vec![], now), Err(Skip::Machine));
        let no_guid = entry(&[], &[]);
        assert!(matches!(
            person(&no_guid, &[], vec![], now),
            Err(Skip::NoId(_))
        ));
    }

    #[test]
    fn dns_compare_whatever_their_case_and_spacing() {
        assert_eq!(
            dn_key("CN=Ann Lee, OU=Staff ,DC=Example,DC=Test"),
            dn_key("cn=ann lee,ou=staff,dc=example,dc=test")
        );
        assert_ne!(dn_key("CN=a\\,b,DC=x"), dn_key("CN=a,b,DC=x"));
        let staff = dn_key("OU=Staff,DC=x");
        assert!(is_under(&dn_key("CN=a,OU=Staff,DC=x"), &staff));
        assert!(is_under(&staff, &staff));
        assert!(!is_under(&dn_key("CN=a,OU=NotStaff,DC=x"), &staff));
    }

    #[test]
    fn ranges() {
        assert_eq!(
            parse_range("member;range=0-1499", "member"),
            Some(Range {
                low: 0,
                high: Some(1499)
            })
        );
        assert_eq!(
            parse_range("Member;Range=1500-*", "member"),
            Some(Range {
                low: 1500,
                high: None
            })
        );
        assert_eq!(parse_range("member", "member"), None);
        assert_eq!(parse_range("memberOf;range=0-1", "member"), None);
        assert_eq!(parse_range("member;range=x-1", "member"), None);
    }
}
