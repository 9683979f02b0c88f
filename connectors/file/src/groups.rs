//! Groups an export lists, and each person's groups with nesting expanded.
//!
//! AD's `memberOf` holds a person's direct groups only. An export that stopped there would bill
//! nobody reached through a nested group (`Billable Users` ⊃ `Sales` ⊃ Ann), where the live LDAP
//! read of the same domain bills them. So when the export has the groups too (group entries in an
//! LDIF, or a group-member CSV named by `groups:` beside a people CSV), the readers hand them to
//! [`rollcall_core::groups::Groups`], the same expansion the LDAP source uses: cycles end the
//! walk and a group reached twice counts once. Without group entries a person's groups are their
//! `memberOf` names, as before.
//!
//! The group-member CSV is what this PowerShell writes (one row per direct member, groups
//! included as members of their parents):
//!
//! ```powershell
//! Get-ADGroup -Filter * | ForEach-Object { $g = $_; Get-ADGroupMember $g |
//!   Select-Object @{n='GroupDN';e={$g.DistinguishedName}}, @{n='GroupName';e={$g.Name}},
//!                 @{n='MemberDN';e={$_.distinguishedName}} } |
//!   Export-Csv groups.csv -NoTypeInformation -Encoding UTF8
//! ```

use std::collections::HashMap;

use rollcall_core::groups::{Groups, dn_key, dn_key_into, group_name};
use rollcall_core::{DirectoryError, Person};

use crate::csv_export;
use crate::model;
use crate::read;

/// One group as an export lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupEntry {
    pub dn: String,
    pub name: String,
    /// Direct members' DNs: people and groups.
    pub members: Vec<String>,
}

/// Turns each person's `groups`, which the readers leave as the `memberOf` values written,
/// into group names; with group entries, nesting included. `dn_of` finds a person's own DN,
/// which group entries list as a member.
pub(crate) fn resolve(
    people: &mut [Person],
    entries: &[GroupEntry],
    dn_of: impl Fn(&Person) -> Option<&str>,
) {
    if entries.is_empty() {
        for p in people {
            for g in &mut p.groups {
                *g = model::group_name(g);
            }
        }
        return;
    }
    let mut groups = Groups::default();
    let mut ids: HashMap<String, u32> = HashMap::new();
    for e in entries {
        let key = dn_key(&e.dn);
        // A group listed twice (two blocks of rows for one DN) keeps its first name; its
        // members from every listing count.
        if let Some(id) = groups.add(key.clone(), e.name.clone()) {
            ids.insert(key, id);
        }
    }
    let mut key = String::new();
    for e in entries {
        let Some(&id) = ids.get(&dn_key(&e.dn)) else {
            continue;
        };
        for m in &e.members {
            dn_key_into(m, &mut key);
            groups.add_member(&key, id);
        }
    }
    for p in people {
        let own = dn_of(p).map(dn_key);
        let member_of = std::mem::take(&mut p.groups);
        p.groups = groups.of(own.as_deref(), &member_of);
    }
}

/// A person's DN in a CSV: the column Get-ADUser names `DistinguishedName` (or `dn`).
pub(crate) fn csv_dn(person: &Person) -> Option<&str> {
    person
        .attributes
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("DistinguishedName") || k.eq_ignore_ascii_case("dn"))
        .map(|(_, v)| v.as_str())
}

/// The column names a group-member CSV may use, any case, spaces and `_` ignored.
const GROUP_DN: &[&str] = &["groupdn", "groupdistinguishedname", "group"];
const GROUP_NAME: &[&str] = &["groupname", "groupcn"];
const MEMBER_DN: &[&str] = &["memberdn", "memberdistinguishedname", "member"];

/// Reads a group-member CSV: one row per (group, direct member). Returns the groups and what
/// made the read of this file incomplete (rows that could not be read, a cut end), each naming
/// `file:line`.
///
/// # Errors
/// [`DirectoryError::Malformed`] when the header lacks a group DN or member DN column.
pub(crate) fn parse_group_members(
    input: &[u8],
    source_name: &str,
) -> Result<(Vec<GroupEntry>, Vec<String>), DirectoryError> {
    let text = read::decode(input, source_name)?;
    let body: &[u8] = &text;
    let mut notes = Vec::new();
    if read::is_blank(body) {
        notes.push(format!(
            "{source_name}: the group export is empty: it always has at least a header row"
        ));
        return Ok((Vec::new(), notes));
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(body);
    let mut record = csv::ByteRecord::new();
    let malformed = |message: String| DirectoryError::Malformed {
        source_name: source_name.to_owned(),
        message,
    };
    if !reader
        .read_byte_record(&mut record)
        .map_err(|e| malformed(format!("cannot read the header: {e}")))?
    {
        return Ok((Vec::new(), notes));
    }
    let names: Vec<String> = record
        .iter()
        .map(|c| {
            String::from_utf8_lossy(c)
                .chars()
                .filter(|c| !matches!(c, ' ' | '_' | '-' | '.'))
                .collect::<String>()
                .to_ascii_lowercase()
        })
        .collect();
    let column = |accepted: &[&str]| names.iter().position(|n| accepted.contains(&n.as_str()));
    let (Some(group_col), Some(member_col)) = (column(GROUP_DN), column(MEMBER_DN)) else {
        return Err(malformed(
            "line 1: a group export needs a group DN column (GroupDN) and a member DN column (MemberDN); see the `groups` setting in the reference for the PowerShell that writes one".to_owned(),
        ));
    };
    let name_col = column(GROUP_NAME);
    let cut = csv_export::ending(body);

    let mut entries: Vec<GroupEntry> = Vec::new();
    let mut by_key: HashMap<String, usize> = HashMap::new();
    let mut lines = csv_export::Lines::new(body);
    lines.at(&record);
    loop {
        match lines.next_record(&mut reader, &mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(past) => {
                notes.push(format!("{source_name}:{past}"));
                break;
            }
        }
        let line = lines.at(&record);
        if record.iter().all(read::is_blank) {
            continue;
        }
        let last = reader.position().byte() >= body.len() as u64;
        if last && let Some(cut) = &cut {
            notes.push(format!("{source_name}:{line}: {cut}; row skipped"));
            continue;
        }
        let cell = |i: usize| {
            record
                .get(i)
                .and_then(|c| std::str::from_utf8(c).ok())
                .map(str::trim)
        };
        let (Some(group), Some(member)) = (cell(group_col), cell(member_col)) else {
            notes.push(format!(
                "{source_name}:{line}: the group or member DN is missing or not UTF-8; row skipped"
            ));
            continue;
        };
        if group.is_empty() {
            notes.push(format!("{source_name}:{line}: no group DN; row skipped"));
            continue;
        }
        let key = dn_key(group);
        let at = *by_key.entry(key).or_insert_with(|| {
            let name = name_col.and_then(cell).filter(|n| !n.is_empty());
            entries.push(GroupEntry {
                dn: group.to_owned(),
                name: group_name(group, name),
                members: Vec::new(),
            });
            entries.len() - 1
        });
        // An empty group is written as one row with no member.
        if !member.is_empty() {
            entries[at].members.push(member.to_owned());
        }
    }
    Ok((entries, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(dn: &str, member_of: &[&str]) -> Person {
        let mut p = Person {
            id: dn.to_owned(),
            groups: member_of.iter().map(|g| (*g).to_owned()).collect(),
            ..Person::default()
        };
        p.attributes.insert("dn".into(), dn.into());
        p
    }

    fn entry(dn: &str, members: &[&str]) -> GroupEntry {
        GroupEntry {
            dn: dn.into(),
            name: group_name(dn, None),
            members: members.iter().map(|m| (*m).to_owned()).collect(),
        }
    }

    #[test]
    fn without_group_entries_memberof_is_named_as_written() {
        let mut people = vec![person("CN=a,DC=x", &["CN=Sales,OU=G,DC=x", "Plain"])];
        resolve(&mut people, &[], |p| {
            p.attributes.get("dn").map(String::as_str)
        });
        assert_eq!(people[0].groups, vec!["Sales", "Plain"]);
    }

    #[test]
    fn group_entries_expand_nesting() {
        let mut people = vec![
            person("CN=Ann,DC=x", &[]),
            person("CN=Bob,DC=x", &["CN=Sales,DC=x"]),
        ];
        let entries = [
            entry("CN=Billing,DC=x", &["CN=Sales,DC=x"]),
            entry("CN=Sales,DC=x", &["cn=ann,dc=x"]),
        ];
        resolve(&mut people, &entries, |p| {
            p.attributes.get("dn").map(String::as_str)
        });
        assert_eq!(people[0].groups, vec!["Billing", "Sales"]);
        assert_eq!(people[1].groups, vec!["Billing", "Sales"]);
    }

    #[test]
    fn a_group_member_csv_is_read_by_group() {
        let csv = "GroupDN,GroupName,MemberDN\n\
                   \"CN=Billing,DC=x\",Billing Users,\"CN=Sales,DC=x\"\n\
                   \"CN=Sales,DC=x\",Sales,\"CN=Ann,DC=x\"\n\
                   \"cn=billing, dc=x\",,\"CN=Bob,DC=x\"\n\
                   \"CN=Empty,DC=x\",Empty,\n";
        let (entries, notes) = parse_group_members(csv.as_bytes(), "g.csv").expect("header");
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].name, "Billing Users");
        assert_eq!(entries[0].members, vec!["CN=Sales,DC=x", "CN=Bob,DC=x"]);
        assert!(entries[2].members.is_empty());
    }

    #[test]
    fn a_cut_group_member_csv_is_noted_at_its_line() {
        let csv = "GroupDN,MemberDN\n\"CN=A,DC=x\",\"CN=Ann,DC=x\"\n\"CN=A,DC=x\",\"CN=Bo";
        let (entries, notes) = parse_group_members(csv.as_bytes(), "g.csv").expect("header");
        assert_eq!(entries[0].members, vec!["CN=Ann,DC=x"]);
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].starts_with("g.csv:3: the file ends inside"),
            "{notes:?}"
        );
        let err = parse_group_members(b"Group,Name\n", "g.csv").expect_err("no member column");
        assert!(err.to_string().contains("MemberDN"), "{err}");
    }
}
