//! The names exports give a person's fields, and how their values are written.
//!
//! A CSV from `Get-ADUser | Export-Csv`, one from the Entra or Microsoft 365 admin centre, a
//! `csvde` dump and an LDIF from `ldifde` or `ldapsearch` all name the same few fields
//! differently (`SamAccountName`, `sAMAccountName`, `User principal name`…). One table maps every
//! name we accept to a [`Field`], as lldap's `map_user_field` does, so the CSV and LDIF readers
//! agree on what each name means and the list a user reads in an error is the list we use.
//! Names not in the table are not guessed at: they become free attributes.

use chrono::{DateTime, Utc};
use rollcall_core::License;
use rollcall_core::ad::{self, UserAccountControl};

/// A field of [`rollcall_core::Person`], or evidence about whether the person is enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Id,
    Username,
    GivenName,
    Surname,
    DisplayName,
    Email,
    Upn,
    /// `Enabled` / `accountEnabled`: true when the account may sign in.
    Enabled,
    /// The Microsoft 365 admin centre's `Block credential`: the opposite of `Enabled`.
    Blocked,
    UserAccountControl,
    AccountExpires,
    Groups,
    Licenses,
}

/// One accepted name. Names are compared after [`normalise`], so `first_name`, `First name` and
/// `FirstName` are one entry. Within a field, earlier entries win when several are present.
struct Alias {
    name: &'static str,
    field: Field,
    /// Also kept as a free attribute, under the export's own name: its meaning is not quite the
    /// field's (`Name` is AD's CN, not the display name) or rules may want the raw value.
    keep: bool,
}

const fn alias(name: &'static str, field: Field, keep: bool) -> Alias {
    Alias { name, field, keep }
}

#[rustfmt::skip]
const ALIASES: &[Alias] = &[
    alias("id", Field::Id, false),
    alias("objectguid", Field::Id, false),
    alias("objectid", Field::Id, false),
    alias("guid", Field::Id, false),
    alias("entryuuid", Field::Id, false),
    alias("username", Field::Username, false),
    alias("samaccountname", Field::Username, false),
    alias("uid", Field::Username, true),
    alias("givenname", Field::GivenName, false),
    alias("firstname", Field::GivenName, false),
    alias("surname", Field::Surname, false),
    alias("sn", Field::Surname, false),
    alias("lastname", Field::Surname, false),
    alias("displayname", Field::DisplayName, false),
    alias("fullname", Field::DisplayName, false),
    alias("name", Field::DisplayName, true),
    alias("cn", Field::DisplayName, true),
    alias("email", Field::Email, false),
    alias("mail", Field::Email, false),
    alias("emailaddress", Field::Email, false),
    alias("upn", Field::Upn, false),
    alias("userprincipalname", Field::Upn, false),
    alias("enabled", Field::Enabled, false),
    alias("accountenabled", Field::Enabled, false),
    alias("blockcredential", Field::Blocked, true),
    alias("blocksignin", Field::Blocked, true),
    alias("useraccountcontrol", Field::UserAccountControl, true),
    alias("accountexpires", Field::AccountExpires, true),
    alias("groups", Field::Groups, false),
    alias("memberof", Field::Groups, false),
    alias("licenses", Field::Licenses, false),
    alias("licences", Field::Licenses, false),
    alias("assignedlicenses", Field::Licenses, false),
    alias("skus", Field::Licenses, false),
];

/// The id column names a CSV may use, as a user would write them, for error messages.
pub(crate) const ID_NAMES: &str = "id, ObjectGUID, objectId, guid, entryUUID";

/// What an export's column or attribute name means to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meaning {
    pub field: Field,
    /// Lower is preferred when several names for one field are present.
    pub rank: usize,
    pub keep_as_attribute: bool,
}

/// Looks a column or attribute name up, ignoring case, spaces, `_`, `-` and `.`.
pub(crate) fn meaning_of(name: &str) -> Option<Meaning> {
    ALIASES
        .iter()
        .enumerate()
        .find(|(_, a)| normalised_eq(name, a.name))
        .map(|(rank, a)| Meaning {
            field: a.field,
            rank,
            keep_as_attribute: a.keep,
        })
}

/// Compares without allocating: LDIF looks up every attribute line of every entry.
fn normalised_eq(name: &str, canonical: &str) -> bool {
    let mut chars = name
        .bytes()
        .filter(|b| !matches!(b, b' ' | b'_' | b'-' | b'.'))
        .map(|b| b.to_ascii_lowercase());
    let mut want = canonical.bytes();
    loop {
        match (chars.next(), want.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// `true/false`, `yes/no`, `1/0`, any case: what PowerShell, Graph and spreadsheets write.
pub(crate) fn parse_bool(value: &str) -> Option<bool> {
    const TRUE: [&str; 3] = ["true", "yes", "1"];
    const FALSE: [&str; 3] = ["false", "no", "0"];
    let v = value.trim();
    if TRUE.iter().any(|t| v.eq_ignore_ascii_case(t)) {
        Some(true)
    } else if FALSE.iter().any(|f| v.eq_ignore_ascii_case(f)) {
        Some(false)
    } else {
        None
    }
}

/// The items of a multi-valued cell: separated by `;` (csvde, `-join ';'`) or `|`, with a
/// backslash-escaped separator (`\;`, as inside a DN) left alone. Empty items are dropped.
pub(crate) fn split_multi(value: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(value);
    std::iter::from_fn(move || {
        loop {
            let s = rest?;
            let bytes = s.as_bytes();
            let mut i = 0;
            let mut end = None;
            while i < bytes.len() {
                match bytes[i] {
                    b'\\' => i += 2,
                    b';' | b'|' => {
                        end = Some(i);
                        break;
                    }
                    _ => i += 1,
                }
            }
            let item = match end {
                Some(e) => {
                    rest = Some(&s[e + 1..]);
                    &s[..e]
                }
                None => {
                    rest = None;
                    s
                }
            };
            let item = item.trim();
            if !item.is_empty() {
                return Some(item);
            }
        }
    })
}

/// A group as rules name it: `memberOf` holds DNs, and `CN=Billable Users,OU=Groups,…` is the
/// group "Billable Users". A value that is not a CN-first DN is kept as written.
pub(crate) fn group_name(value: &str) -> String {
    ad::cn_of_dn(value).unwrap_or_else(|| value.trim().to_owned())
}

/// `SPB` or `SPB=Microsoft 365 Business Premium`.
pub(crate) fn license(value: &str) -> License {
    match value.split_once('=') {
        Some((sku, name)) => License {
            sku: sku.trim().to_owned(),
            name: name.trim().to_owned(),
        },
        None => License {
            sku: value.trim().to_owned(),
            name: String::new(),
        },
    }
}

/// An id in the form every reader of the same directory produces: a GUID, whether written as
/// text in any case or as csvde's hex of the raw bytes (`X'c98b…'`), becomes AD's canonical
/// lowercase form; anything else is kept as written.
pub(crate) fn normalise_id(value: &str) -> String {
    let v = value.trim();
    if let Some(hex) = v
        .strip_prefix("X'")
        .or_else(|| v.strip_prefix("x'"))
        .and_then(|h| h.strip_suffix('\''))
        && let Some(bytes) = decode_hex(hex)
        && let Some(guid) = ad::guid_to_string(&bytes)
    {
        return guid;
    }
    ad::canonical_guid(v).unwrap_or_else(|| v.to_owned())
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What PowerShell writes when a multi-valued property is exported without `-join`: the type's
/// name instead of the values. Groups read from such a column would silently be empty.
pub(crate) fn is_powershell_type_name(value: &str) -> bool {
    value.starts_with("Microsoft.ActiveDirectory.Management.")
        || value.starts_with("System.Collections.")
        || matches!(value, "System.Object[]" | "System.String[]")
}

/// Everything an export says about whether a person may sign in. A person is enabled unless
/// some evidence says otherwise: exports of directories without these fields (a plain HR list)
/// list the people who work there.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Evidence {
    pub stated: Option<bool>,
    pub blocked: Option<bool>,
    pub uac: Option<UserAccountControl>,
    pub expires: Option<DateTime<Utc>>,
}

impl Evidence {
    pub fn enabled(&self, now: DateTime<Utc>) -> bool {
        self.stated != Some(false)
            && self.blocked != Some(true)
            && !self.uac.is_some_and(UserAccountControl::is_disabled)
            // An expired account cannot sign in, though AD leaves it "enabled".
            && self.expires.is_none_or(|at| at > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_whatever_the_export_calls_them() {
        let field = |n: &str| meaning_of(n).map(|m| m.field);
        assert_eq!(field("SamAccountName"), Some(Field::Username));
        assert_eq!(field("sAMAccountName"), Some(Field::Username));
        assert_eq!(field("first_name"), Some(Field::GivenName));
        assert_eq!(field("First name"), Some(Field::GivenName));
        assert_eq!(field("User principal name"), Some(Field::Upn));
        assert_eq!(field("Object ID"), Some(Field::Id));
        assert_eq!(field("EmailAddress"), Some(Field::Email));
        assert_eq!(field("Block credential"), Some(Field::Blocked));
        assert_eq!(field("department"), None);
        assert_eq!(field("names"), None);
        assert_eq!(field(""), None);
    }

    #[test]
    fn earlier_names_rank_first() {
        let rank = |n: &str| meaning_of(n).map(|m| m.rank).unwrap_or(usize::MAX);
        assert!(rank("DisplayName") < rank("Name"));
        assert!(rank("Name") < rank("cn"));
        assert!(rank("id") < rank("ObjectGUID"));
        assert!(rank("SamAccountName") < rank("uid"));
    }

    #[test]
    fn booleans() {
        for t in ["true", "TRUE", "True", "yes", "Yes", "1", " true "] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["false", "False", "no", "NO", "0"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        assert_eq!(parse_bool("maybe"), None);
        assert_eq!(parse_bool(""), None);
    }

    #[test]
    fn multi_values_split_on_unescaped_separators() {
        let items: Vec<_> = split_multi("a; b|c;;  ;CN=x\\;y,DC=z").collect();
        assert_eq!(items, vec!["a", "b", "c", "CN=x\\;y,DC=z"]);
        assert_eq!(split_multi("").count(), 0);
        assert_eq!(split_multi(" ; ").count(), 0);
    }

    #[test]
    fn groups_from_dns_or_names() {
        assert_eq!(
            group_name("CN=Billable Users,OU=Groups,DC=acme,DC=local"),
            "Billable Users"
        );
        assert_eq!(group_name(" Billable Users "), "Billable Users");
        assert_eq!(group_name("OU=Groups,DC=acme"), "OU=Groups,DC=acme");
    }

    #[test]
    fn licences_with_and_without_names() {
        assert_eq!(
            license("SPB=Microsoft 365 Business Premium"),
            License {
                sku: "SPB".into(),
                name: "Microsoft 365 Business Premium".into()
            }
        );
        assert_eq!(
            license(" O365_BUSINESS_PREMIUM "),
            License {
                sku: "O365_BUSINESS_PREMIUM".into(),
                name: String::new()
            }
        );
    }

    #[test]
    fn ids_are_normalised_only_when_they_are_guids() {
        assert_eq!(
            normalise_id("{35918BC9-196D-40EA-9779-889D79B753F0}"),
            "35918bc9-196d-40ea-9779-889d79b753f0"
        );
        assert_eq!(
            normalise_id("X'c98b91356d19ea409779889d79b753f0'"),
            "35918bc9-196d-40ea-9779-889d79b753f0"
        );
        assert_eq!(normalise_id("X'c98b'"), "X'c98b'");
        assert_eq!(normalise_id(" E1234 "), "E1234");
    }

    #[test]
    fn evidence_decides_enabled() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let e = |f: fn(&mut Evidence)| {
            let mut ev = Evidence::default();
            f(&mut ev);
            ev.enabled(now)
        };
        assert!(e(|_| {}));
        assert!(!e(|ev| ev.stated = Some(false)));
        assert!(!e(|ev| ev.blocked = Some(true)));
        assert!(!e(|ev| ev.uac = Some(UserAccountControl(514))));
        assert!(e(|ev| ev.uac = Some(UserAccountControl(512))));
        assert!(!e(
            |ev| ev.expires = DateTime::from_timestamp(1_600_000_000, 0)
        ));
        assert!(e(
            |ev| ev.expires = DateTime::from_timestamp(1_800_000_000, 0)
        ));
        // Every piece of evidence must agree: "Enabled: true" does not undo a disabled UAC.
        assert!(!e(|ev| {
            ev.stated = Some(true);
            ev.uac = Some(UserAccountControl(514));
        }));
    }
}
