//! AD's attribute names and value forms, and how one search entry becomes a [`Person`].
//!
//! This is the only place that names AD attributes, so the attribute list a search asks for and
//! the mapping that reads the answer cannot drift apart. Values are decoded by
//! [`rollcall_core::ad`], shared with the LDIF reader, so a person read live and the same person
//! read from an export get the same id and the same enabled state.

use std::borrow::Cow;
use std::sync::LazyLock;

use crate::ber::{self, Malformed, Reader, Tag};
use chrono::{DateTime, Utc};
use rollcall_core::ad::{self, UserAccountControl};
pub(crate) use rollcall_core::groups::{dn_key, dn_key_into, group_name};
use rollcall_core::{AttributeName, Attributes, Person};

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

/// The names of the attributes every person may carry, shared rather than looked up per entry.
struct Names {
    dn: AttributeName,
    plain: Vec<AttributeName>,
    uac_flags: AttributeName,
    expires_at: AttributeName,
}

static PLAIN_NAMES: LazyLock<Names> = LazyLock::new(|| Names {
    dn: "dn".into(),
    plain: PLAIN.iter().map(|n| AttributeName::new(n)).collect(),
    uac_flags: "userAccountControlFlags".into(),
    expires_at: "accountExpiresAt".into(),
});

/// The attributes a people search asks for: the ones mapped to fields, then the pipeline's.
pub(crate) fn person_attributes(extra: &[String]) -> Vec<String> {
    let mut attrs: Vec<String> = MAPPED
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

/// One entry as returned, with text and binary values together: an attribute is binary when
/// some value is not UTF-8, as ldap3's `SearchEntry` files it, so an objectGUID whose 16 bytes
/// happen to be valid UTF-8 arrives as text. Lookups ignore the case of
/// names, as LDAP does.
///
/// Decoded straight from the read buffer ([`Entry::from_wire`]): values are copied once, and
/// the dozen or so attributes of a person are a short list, searched in order, not a hash map.
pub(crate) struct Entry {
    pub dn: String,
    /// Names as the server wrote them; those rollcall asks for are not copied for every entry
    /// (see [`attribute_name`]).
    attrs: Vec<(Cow<'static, str>, Values)>,
}

/// Read into a person's own fields.
const MAPPED: &[&str] = &[
    OBJECT_GUID,
    ENTRY_UUID,
    SAM_ACCOUNT_NAME,
    UPN,
    MAIL,
    GIVEN_NAME,
    SURNAME,
    DISPLAY_NAME,
    MEMBER_OF,
];

/// `name` as a static string when a people or group search asks for it by that spelling, so
/// that the name the server sends with every entry is recognised rather than allocated once per
/// attribute per entry.
fn attribute_name(name: &str) -> Cow<'static, str> {
    let mut known = MAPPED.iter().chain(PLAIN).chain(&[MEMBER, CN]);
    match known.find(|k| **k == name) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(name.to_owned()),
    }
}

/// An attribute's values: all text, or (if any value is not UTF-8) all bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Values {
    /// One text value, as nearly every attribute of a person has: no list to allocate.
    One(String),
    Text(Vec<String>),
    /// In ldap3's order: the values that are not UTF-8 first, then those that are.
    Binary(Vec<Vec<u8>>),
}

impl Values {
    /// Moves out a single value, leaving no values behind (as taking from a list does).
    fn take_one(&mut self) -> Option<String> {
        let Values::One(v) = self else { return None };
        let v = std::mem::take(v);
        *self = Values::Text(Vec::new());
        Some(v)
    }

    /// Sorts raw values into text or binary, as ldap3's `SearchEntry::construct` does. Text
    /// values keep their buffers (the common case costs no allocation).
    fn from_raw(raw: Vec<Vec<u8>>) -> Values {
        if raw.iter().all(|v| std::str::from_utf8(v).is_ok()) {
            return Values::Text(
                raw.into_iter()
                    .filter_map(|v| String::from_utf8(v).ok())
                    .collect(),
            );
        }
        let (text, mut binary): (Vec<Vec<u8>>, Vec<Vec<u8>>) = raw
            .into_iter()
            .partition(|v| std::str::from_utf8(v).is_ok());
        binary.extend(text);
        Values::Binary(binary)
    }
}

impl Entry {
    /// An entry from its parts, as the tests and the ranged-attribute reads build one.
    #[cfg(test)]
    pub fn new(
        dn: impl Into<String>,
        text: Vec<(String, Vec<String>)>,
        binary: Vec<(String, Vec<Vec<u8>>)>,
    ) -> Entry {
        let attrs = text
            .into_iter()
            .map(|(k, v)| (Cow::Owned(k), Values::Text(v)))
            .chain(
                binary
                    .into_iter()
                    .map(|(k, v)| (Cow::Owned(k), Values::Binary(v))),
            )
            .collect();
        Entry {
            dn: dn.into(),
            attrs,
        }
    }

    /// Decodes a SearchResultEntry's contents (`objectName`, `attributes`) where they lie in
    /// the read buffer: each name and value is copied once, into the buffer the entry keeps.
    pub fn from_wire(contents: &[u8]) -> Result<Entry, Malformed> {
        let text = |b: &[u8], what: &'static str| {
            std::str::from_utf8(b)
                .map(str::to_owned)
                .map_err(|_| Malformed(what))
        };
        let string = Tag::universal(ber::OCTET_STRING);
        let mut r = Reader::new(contents);
        let dn = text(
            r.expect(string, "an entry without a DN")?,
            "a DN that is not UTF-8",
        )?;
        let mut list = Reader::new(r.expect(
            Tag::universal(ber::SEQUENCE),
            "an entry without its attribute list",
        )?);
        // Sized exactly: a guess too large (past 1 KiB) costs glibc a consolidation of its
        // small free chunks on every entry.
        let mut count = 0;
        let mut scan = list;
        while !scan.is_empty() {
            scan.next()?;
            count += 1;
        }
        let mut attrs = Vec::with_capacity(count);
        while !list.is_empty() {
            let mut pair = Reader::new(list.expect(
                Tag::universal(ber::SEQUENCE),
                "an attribute that is not a SEQUENCE",
            )?);
            let name = std::str::from_utf8(pair.expect(string, "an attribute without a name")?)
                .map(attribute_name)
                .map_err(|_| Malformed("an attribute name that is not UTF-8"))?;
            let set = pair.expect(Tag::universal(ber::SET), "an attribute without values")?;
            // Nearly every attribute is text: each value is checked and copied in one pass, and
            // only an attribute with a value that is not UTF-8 is read again as bytes.
            // A single value needs no list; a second one starts one.
            let mut one: Option<String> = None;
            let mut texts: Vec<String> = Vec::new();
            let mut values = Reader::new(set);
            let mut binary = false;
            while !values.is_empty() {
                let v = values.expect(string, "a value that is not an OCTET STRING")?;
                match std::str::from_utf8(v) {
                    Ok(t) => match one.take() {
                        None if texts.is_empty() => one = Some(t.to_owned()),
                        first => {
                            texts.extend(first);
                            texts.push(t.to_owned());
                        }
                    },
                    Err(_) => {
                        binary = true;
                        break;
                    }
                }
            }
            let values = if binary {
                let mut raw = Vec::new();
                let mut values = Reader::new(set);
                while !values.is_empty() {
                    raw.push(
                        values
                            .expect(string, "a value that is not an OCTET STRING")?
                            .to_vec(),
                    );
                }
                Values::from_raw(raw)
            } else if let Some(v) = one {
                Values::One(v)
            } else {
                Values::Text(texts)
            };
            attrs.push((name, values));
        }
        Ok(Entry { dn, attrs })
    }

    fn find(&self, name: &str) -> Option<&Values> {
        self.attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The attribute names as the server wrote them.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.attrs.iter().map(|(k, _)| k.as_ref())
    }

    /// The first text value of `name`.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.texts(name).first().map(String::as_str)
    }

    /// Every text value of `name` (none if its values are binary).
    pub fn texts(&self, name: &str) -> &[String] {
        match self.find(name) {
            Some(Values::Text(v)) => v,
            Some(Values::One(v)) => std::slice::from_ref(v),
            _ => &[],
        }
    }

    /// Every binary value of `name` (none if its values are all text).
    fn binaries(&self, name: &str) -> &[Vec<u8>] {
        match self.find(name) {
            Some(Values::Binary(v)) => v,
            _ => &[],
        }
    }

    /// The first value of `name` as bytes, whichever way it was filed.
    pub fn bytes(&self, name: &str) -> Option<&[u8]> {
        match self.find(name)? {
            Values::Binary(v) => v.first().map(Vec::as_slice),
            Values::Text(v) => v.first().map(String::as_bytes),
            Values::One(v) => Some(v.as_bytes()),
        }
    }

    /// Removes every attribute whose name `pick` accepts, with its values (text and binary
    /// alike, as text where they are UTF-8), in the order the server sent them.
    pub fn take_where(&mut self, mut pick: impl FnMut(&str) -> bool) -> Vec<(String, Vec<String>)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.attrs.len() {
            if pick(&self.attrs[i].0) {
                let (k, v) = self.attrs.remove(i);
                let texts = match v {
                    Values::Text(t) => t,
                    Values::One(t) => vec![t],
                    // ldap3 kept binary values apart, out of reach of text lookups.
                    Values::Binary(_) => Vec::new(),
                };
                out.push((k.into_owned(), texts));
            } else {
                i += 1;
            }
        }
        out
    }

    /// Sets `name`'s text values, replacing any it had.
    pub fn set_texts(&mut self, name: &str, values: Vec<String>) {
        self.attrs.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.attrs
            .push((attribute_name(name), Values::Text(values)));
    }

    /// Moves out `name`'s first text value.
    fn take_first(&mut self, name: &str) -> Option<String> {
        let slot = self
            .attrs
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))?;
        match &mut slot.1 {
            Values::Text(v) if !v.is_empty() => Some(v.swap_remove(0)),
            Values::One(_) => slot.1.take_one(),
            _ => None,
        }
    }

    /// Moves out `name`'s text values joined with "; ", leaving none.
    fn take_joined(&mut self, name: &str) -> Option<String> {
        let slot = self
            .attrs
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))?;
        match &mut slot.1 {
            Values::One(_) => slot.1.take_one(),
            Values::Text(v) if v.len() == 1 => v.pop(),
            Values::Text(v) if !v.is_empty() => {
                let joined = v.join("; ");
                v.clear();
                Some(joined)
            }
            _ => None,
        }
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

/// Maps an entry to a person, with `groups` already worked out by the caller. Values the person
/// keeps are moved out of `entry`; when the entry is skipped, nothing was taken from it.
pub(crate) fn person(
    entry: &mut Entry,
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
    // An expired account cannot sign in, though AD leaves it "enabled".
    let enabled =
        !uac.is_some_and(UserAccountControl::is_disabled) && expires.is_none_or(|at| at > now);

    let names = &*PLAIN_NAMES;
    let mut attributes = Attributes::with_capacity(PLAIN.len() + 3 + extra.len());
    attributes.insert(names.dn.clone(), std::mem::take(&mut entry.dn));
    for (name, shared) in PLAIN.iter().zip(&names.plain) {
        // Moved out unless the pipeline's own attributes name it again (read below).
        let value = if extra.iter().any(|e| e.eq_ignore_ascii_case(name)) {
            joined(entry, name)
        } else {
            entry.take_joined(name).or_else(|| binary_text(entry, name))
        };
        if let Some(v) = value {
            attributes.insert(shared.clone(), v);
        }
    }
    for name in extra {
        if let Some(v) = joined(entry, name) {
            attributes.insert(name.into(), v);
        }
    }
    if let Some(uac) = uac {
        attributes.insert(names.uac_flags.clone(), uac.flag_names().join(" "));
    }
    if let Some(at) = expires {
        attributes.insert(names.expires_at.clone(), at.to_rfc3339());
    }
    let opt = |entry: &mut Entry, name: &str| {
        let v = entry.take_first(name)?;
        let t = v.trim();
        if t.is_empty() {
            None
        } else if t.len() == v.len() {
            Some(v)
        } else {
            Some(t.to_owned())
        }
    };
    Ok(Person {
        id,
        username: opt(entry, SAM_ACCOUNT_NAME).unwrap_or_default(),
        given_name: opt(entry, GIVEN_NAME).unwrap_or_default(),
        surname: opt(entry, SURNAME).unwrap_or_default(),
        display_name: opt(entry, DISPLAY_NAME).unwrap_or_default(),
        email: opt(entry, MAIL),
        upn: opt(entry, UPN),
        enabled,
        groups,
        licenses: Vec::new(),
        attributes,
    })
}

/// `name`'s text values joined with "; ", else its binary value as AD's tools print it.
fn joined(entry: &Entry, name: &str) -> Option<String> {
    let values = entry.texts(name);
    if values.is_empty() {
        binary_text(entry, name)
    } else {
        Some(values.join("; "))
    }
}

/// Binary values of extra attributes (objectSid and the like) as AD's tools print them.
fn binary_text(entry: &Entry, name: &str) -> Option<String> {
    let bytes = entry.binaries(name).first()?;
    if name.eq_ignore_ascii_case("objectSid") {
        return ad::sid_to_string(bytes);
    }
    ad::guid_to_string(bytes)
}

/// Whether `dn` is `ancestor` or lies below it.
pub(crate) fn is_under(dn_key: &str, ancestor_key: &str) -> bool {
    dn_key == ancestor_key
        || (dn_key.len() > ancestor_key.len()
            && dn_key.ends_with(ancestor_key)
            && dn_key.as_bytes()[dn_key.len() - ancestor_key.len() - 1] == b',')
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
    // Asked of every attribute of every entry: most are not `attribute;…` at all, which the
    // prefix tells without splitting anything.
    let options = description
        .get(..attribute.len())
        .filter(|name| name.eq_ignore_ascii_case(attribute))
        .and_then(|_| description[attribute.len()..].strip_prefix(';'))?;
    let range = options.split(';').find_map(|p| {
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
        Entry::new(
            "CN=Zoë Müller,OU=Staff,DC=example,DC=test",
            attrs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.iter().map(|s| (*s).to_owned()).collect()))
                .collect(),
            bin.iter()
                .map(|(k, v)| ((*k).to_owned(), vec![v.clone()]))
                .collect(),
        )
    }

    const GUID: [u8; 16] = [
        0xC9, 0x8B, 0x91, 0x35, 0x6D, 0x19, 0xEA, 0x40, 0x97, 0x79, 0x88, 0x9D, 0x79, 0xB7, 0x53,
        0xF0,
    ];

    /// A SearchResultEntry's contents as a server writes them.
    fn wire_entry(dn: &str, attrs: &[(&str, &[&[u8]])]) -> Vec<u8> {
        use crate::ber::Writer;
        let mut w = Writer::default();
        w.octets(dn.as_bytes());
        let list = w.mark();
        for (name, values) in attrs {
            let pair = w.mark();
            w.octets(name.as_bytes());
            let set = w.mark();
            for v in *values {
                w.octets(v);
            }
            w.wrap(set, Tag::universal(ber::SET));
            w.wrap(pair, Tag::universal(ber::SEQUENCE));
        }
        w.wrap(list, Tag::universal(ber::SEQUENCE));
        w.buf
    }

    #[test]
    fn an_entry_is_decoded_from_the_wire_with_text_and_binary_values() {
        let bytes = wire_entry(
            "CN=Zoë Müller,OU=Staff,DC=example,DC=test",
            &[
                ("objectGUID", &[&GUID]),
                ("sAMAccountName", &[b"zmuller"]),
                ("memberOf", &[b"CN=A,DC=x", b"CN=B,DC=x"]),
                ("mail", &[]),
            ],
        );
        let e = Entry::from_wire(&bytes).unwrap();
        assert_eq!(e.dn, "CN=Zoë Müller,OU=Staff,DC=example,DC=test");
        assert_eq!(e.bytes("objectguid"), Some(&GUID[..]));
        assert_eq!(e.text("SAMACCOUNTNAME"), Some("zmuller"));
        assert_eq!(e.texts("memberOf"), ["CN=A,DC=x", "CN=B,DC=x"]);
        assert!(e.texts("mail").is_empty());
        let names: Vec<&str> = e.names().collect();
        assert_eq!(names, ["objectGUID", "sAMAccountName", "memberOf", "mail"]);
        // Taking a value leaves none behind, whether the attribute held one value or several.
        let mut e = e;
        assert_eq!(e.take_first("samaccountname").as_deref(), Some("zmuller"));
        assert_eq!(e.take_first("sAMAccountName"), None);
        assert!(e.texts("sAMAccountName").is_empty());
        assert_eq!(
            e.take_joined("memberOf").as_deref(),
            Some("CN=A,DC=x; CN=B,DC=x")
        );
        assert_eq!(e.take_joined("memberOf"), None);
        // An attribute rollcall does not know by name keeps the server's spelling.
        let other = Entry::from_wire(&wire_entry("CN=x", &[("extensionAttribute1", &[b"7"])]));
        assert_eq!(
            other.unwrap().names().collect::<Vec<_>>(),
            ["extensionAttribute1"]
        );
    }

    #[test]
    fn a_malformed_wire_entry_is_an_error_at_every_cut() {
        let bytes = wire_entry("CN=x", &[("cn", &[b"x"]), ("sn", &[b"y"])]);
        assert!(Entry::from_wire(&bytes).is_ok());
        for cut in 0..bytes.len() {
            assert!(Entry::from_wire(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // A DN that is not UTF-8.
        let mut bad = wire_entry("ab", &[]);
        bad[2] = 0xff;
        assert!(Entry::from_wire(&bad).is_err());
    }

    #[test]
    fn an_ad_user_becomes_a_person() {
        let mut e = entry(
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
        let p = person(&mut e, &[], vec!["Staff".into()], Utc::now()).expect("person");
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
        let mut e = entry(&[("objectGUID", &["ABCDEFGHIJKLMNOP"])], &[]);
        let p = person(&mut e, &[], vec![], Utc::now()).expect("person");
        assert_eq!(p.id, "44434241-4645-4847-494a-4b4c4d4e4f50");
    }

    #[test]
    fn disabled_expired_and_machine_accounts() {
        let now = Utc::now();
        let g = || ("objectGUID", GUID.to_vec());
        let mut disabled = entry(&[("userAccountControl", &["514"])], &[g()]);
        assert!(!person(&mut disabled, &[], vec![], now).expect("p").enabled);
        // 2024-01-01: in the past.
        let mut expired = entry(
            &[
                ("userAccountControl", &["512"]),
                ("accountExpires", &["133485408000000000"]),
            ],
            &[g()],
        );
        let p = person(&mut expired, &[], vec![], now).expect("p");
        assert!(!p.enabled);
        assert_eq!(
            p.attributes["accountExpiresAt"],
            "2024-01-01T00:00:00+00:00"
        );
        let mut never = entry(&[("accountExpires", &["0"])], &[g()]);
        assert!(person(&mut never, &[], vec![], now).expect("p").enabled);
        let mut machine = entry(&[("userAccountControl", &["4096"])], &[g()]);
        assert_eq!(person(&mut machine, &[], vec![], now), Err(Skip::Machine));
        let mut no_guid = entry(&[], &[]);
        assert!(matches!(
            person(&mut no_guid, &[], vec![], now),
            Err(Skip::NoId(_))
        ));
    }

    #[test]
    fn dns_under_an_ou() {
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
        assert_eq!(parse_range("memberX;range=0-1", "member"), None);
        assert_eq!(parse_range("mé;range=0-1", "member"), None);
        assert_eq!(
            parse_range("member;x-tag;range=0-5", "member"),
            Some(Range {
                low: 0,
                high: Some(5)
            })
        );
    }
}
