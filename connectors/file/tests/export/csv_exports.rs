//! CSV exports: PowerShell, Entra, a hand-kept sheet, csvde, and broken ones.

use rollcall_core::{Completeness, DirectoryError, License};
use rollcall_file::parse_csv;

use crate::{fixture, now, person, reason, usernames, utf16le_with_bom};

fn parse(name: &str) -> rollcall_core::DirectoryRead {
    parse_csv(&fixture(name), name, now()).expect("the CSV has an id column")
}

#[test]
fn powershell_get_aduser_export() {
    let read = parse("powershell-adusers.csv");
    assert_eq!(
        read.completeness,
        Completeness::Complete,
        "{:?}",
        read.warnings
    );
    assert!(read.warnings.is_empty());
    assert_eq!(usernames(&read), vec!["ann", "zoe", "bob", "eve", "raj"]);

    let ann = person(&read, "ann");
    assert_eq!(ann.id, "35918bc9-196d-40ea-9779-889d79b753f0");
    assert_eq!(ann.given_name, "Ann");
    assert_eq!(ann.surname, "Lee");
    assert_eq!(ann.display_name, "Ann Lee");
    assert_eq!(ann.email.as_deref(), Some("ann@acme.example"));
    assert_eq!(ann.upn.as_deref(), Some("ann@acme.example"));
    assert!(ann.enabled);
    assert_eq!(ann.groups, vec!["Billable Users", "Sales, EMEA"]);
    let attr = |k: &str| ann.attributes.get(k).map(String::as_str);
    // A quoted cell keeps its comma and its newline.
    assert_eq!(attr("Title"), Some("Head of Sales,\nEMEA"));
    assert_eq!(attr("Department"), Some("Sales"));
    assert_eq!(
        attr("DistinguishedName"),
        Some("CN=Ann Lee,OU=Staff,DC=acme,DC=local")
    );
    assert_eq!(
        attr("SID"),
        Some("S-1-5-21-1004336348-1177238915-682003330-1105")
    );
    // Name is AD's CN, kept as written besides serving as a fallback display name.
    assert_eq!(attr("Name"), Some("Ann Lee"));
    assert_eq!(attr("userAccountControl"), Some("66048"));
    assert_eq!(attr("accountExpires"), Some("9223372036854775807"));
    for consumed in [
        "ObjectGUID",
        "SamAccountName",
        "GivenName",
        "Enabled",
        "MemberOf",
        "EmailAddress",
    ] {
        assert_eq!(
            attr(consumed),
            None,
            "{consumed} is a field, not an attribute"
        );
    }

    let zoe = person(&read, "zoe");
    // Upper-case GUID text is made canonical, to match the same person read over LDAP.
    assert_eq!(zoe.id, "0a1b2c3d-4e5f-4061-8273-8495a6b7c8d9");
    assert_eq!(zoe.given_name, "Zoë");
    assert_eq!(zoe.surname, "Müller-Ångström");
    assert_eq!(
        zoe.display_name, "Zoë Müller-Ångström",
        "empty DisplayName falls back to Name"
    );
    assert!(zoe.enabled);

    assert!(!person(&read, "bob").enabled, "Enabled False");
    let eve = person(&read, "eve");
    assert!(!eve.enabled, "accountExpires in 2020 is expired by 2025");
    assert_eq!(eve.email, None, "an empty cell is no email");
    assert!(eve.groups.is_empty());
    assert!(
        person(&read, "raj").enabled,
        "accountExpires in 2099 is not yet"
    );
}

#[test]
fn powershell_rows_are_numbered_as_the_file_is() {
    // Line 1 is #TYPE, 2 the header, 3-4 Ann (a quoted newline), 5 Zoë.
    let text = String::from_utf8(fixture("powershell-adusers.csv")).expect("UTF-8");
    let broken = text.replacen(
        "\"CN=Zoë Müller-Ångström,OU=Staff,DC=acme,DC=local\",\"True\"",
        "\"CN=Zoë Müller-Ångström,OU=Staff,DC=acme,DC=local\",\"Ture\"",
        1,
    );
    let read = parse_csv(broken.as_bytes(), "acme.csv", now()).expect("parses");
    assert_eq!(
        read.warnings,
        vec![
            "acme.csv:5: Enabled: \"Ture\" is not a boolean (expected true/false, yes/no or 1/0); row skipped"
        ]
    );
    assert_eq!(
        reason(&read),
        "1 of 5 rows could not be read; first: acme.csv:5: Enabled: \"Ture\" is not a boolean (expected true/false, yes/no or 1/0); row skipped"
    );
    assert_eq!(usernames(&read), vec!["ann", "bob", "eve", "raj"]);
}

#[test]
fn entra_admin_centre_download() {
    let read = parse("entra-users.csv");
    assert_eq!(read.completeness, Completeness::Complete);
    assert_eq!(read.people.len(), 3);
    let ann = &read.people[0];
    assert_eq!(ann.id, "3f2504e0-4f89-11d3-9a0c-0305e82c3301");
    assert_eq!(ann.upn.as_deref(), Some("ann@acme.onmicrosoft.com"));
    assert_eq!(ann.display_name, "Ann Lee");
    assert_eq!(ann.username, "", "Entra has no account name column");
    assert!(ann.enabled);
    assert_eq!(
        ann.attributes.get("jobTitle").map(String::as_str),
        Some("Engineer")
    );
    assert_eq!(
        ann.attributes.get("userType").map(String::as_str),
        Some("Member")
    );
    let guest = &read.people[1];
    assert_eq!(guest.surname, "");
    assert_eq!(
        guest.attributes.get("userType").map(String::as_str),
        Some("Guest")
    );
    assert!(
        !guest.attributes.contains_key("usageLocation"),
        "empty cells are absent"
    );
    assert!(!read.people[2].enabled, "accountEnabled False");
}

#[test]
fn a_hand_kept_sheet_with_licences() {
    let read = parse("msp-sheet.csv");
    // The trailing row of empty cells is nobody, not a broken row.
    assert_eq!(
        read.completeness,
        Completeness::Complete,
        "{:?}",
        read.warnings
    );
    assert_eq!(read.people.len(), 3);
    let ann = &read.people[0];
    assert_eq!(ann.id, "E1001");
    assert_eq!(ann.groups, vec!["Billable Users", "Sales"]);
    assert_eq!(
        ann.licenses,
        vec![
            License {
                sku: "SPB".into(),
                name: "Microsoft 365 Business Premium".into()
            },
            License {
                sku: "EXCHANGESTANDARD".into(),
                name: String::new()
            },
        ]
    );
    assert_eq!(
        ann.attributes.get("cost centre").map(String::as_str),
        Some("CC-10")
    );
    let jose = &read.people[1];
    assert_eq!(
        (jose.given_name.as_str(), jose.surname.as_str()),
        ("José", "Núñez")
    );
    assert!(!jose.enabled, "NO");
    let third = &read.people[2];
    assert_eq!(third.given_name, "O'Brien, Jr.");
    assert!(third.enabled, "1");
    assert_eq!(third.email, None);
    assert!(third.licenses.is_empty());
}

#[test]
fn malformed_rows_are_skipped_and_make_the_read_incomplete() {
    let read = parse("malformed.csv");
    assert_eq!(
        read.warnings,
        vec![
            "malformed.csv:3: no id: column id is empty; row skipped",
            "malformed.csv:4: enabled: \"maybe\" is not a boolean (expected true/false, yes/no or 1/0); row skipped",
            "malformed.csv:5: 3 fields where the header has 5; row skipped",
            "malformed.csv:6: userAccountControl: \"abc\" is not an integer; row skipped",
            "malformed.csv:7: id \"1\" was already read at line 2; row skipped",
        ]
    );
    assert_eq!(
        reason(&read),
        "5 of 7 rows could not be read; first: malformed.csv:3: no id: column id is empty; row skipped"
    );
    assert_eq!(usernames(&read), vec!["ann", "fay"]);
    assert!(!person(&read, "fay").enabled, "UAC 514 and enabled no");
}

#[test]
fn an_undecodable_cell_names_its_row_and_column() {
    let mut bytes = b"id,DisplayName\n1,Ann\n2,Ren\xE9e\n3,Carl\n".to_vec();
    let read = parse_csv(&bytes, "latin1.csv", now()).expect("parses");
    assert_eq!(
        read.warnings,
        vec![
            "latin1.csv:3: DisplayName: not valid UTF-8 (save the export as UTF-8 or UTF-16 with a byte order mark); row skipped"
        ]
    );
    assert_eq!(read.people.len(), 2);
    assert!(!read.completeness.is_complete());

    // The same file saved as UTF-16, as Windows tools do, reads cleanly.
    bytes = utf16le_with_bom("id,DisplayName\r\n1,Ann\r\n2,Renée\r\n".as_bytes());
    let read = parse_csv(&bytes, "utf16.csv", now()).expect("parses");
    assert_eq!(read.completeness, Completeness::Complete);
    assert_eq!(read.people[1].display_name, "Renée");
}

#[test]
fn an_empty_file_is_never_an_empty_directory() {
    for (name, bytes) in [
        ("empty.csv", fixture("empty.csv")),
        ("blank.csv", b" \r\n\n\t".to_vec()),
        ("bom.csv", b"\xEF\xBB\xBF".to_vec()),
        (
            "type-only.csv",
            b"#TYPE Microsoft.ActiveDirectory.Management.ADUser\r\n".to_vec(),
        ),
    ] {
        let read = parse_csv(&bytes, name, now()).expect("empty is not an error");
        assert!(read.people.is_empty());
        assert_eq!(
            reason(&read),
            format!("{name}: the export is empty: a CSV export always has at least a header row"),
        );
    }
}

#[test]
fn a_header_without_rows_is_a_complete_read_of_nobody() {
    let read = parse("header-only.csv");
    assert_eq!(read.completeness, Completeness::Complete);
    assert!(read.people.is_empty());
    assert!(read.warnings.is_empty());
}

#[test]
fn no_id_column_is_malformed_and_lists_the_accepted_names() {
    let err = parse_csv(&fixture("no-id-column.csv"), "acme.csv", now()).expect_err("no id column");
    assert!(matches!(err, DirectoryError::Malformed { .. }));
    assert_eq!(
        err.to_string(),
        "acme.csv: line 1: no id column in the header (SamAccountName, DisplayName, mail, Department); \
         expected one of: id, ObjectGUID, objectId, guid, entryUUID (any case), holding each person's \
         stable identifier such as AD's ObjectGUID"
    );
}

#[test]
fn memberof_exported_without_join_is_flagged_once() {
    let csv = "ObjectGUID,SamAccountName,MemberOf\n\
               35918bc9-196d-40ea-9779-889d79b753f0,ann,Microsoft.ActiveDirectory.Management.ADPropertyValueCollection\n\
               0a1b2c3d-4e5f-4061-8273-8495a6b7c8d9,zoe,Microsoft.ActiveDirectory.Management.ADPropertyValueCollection\n";
    let read = parse_csv(csv.as_bytes(), "ps.csv", now()).expect("parses");
    assert_eq!(read.people.len(), 2, "the people are still read");
    assert!(read.people.iter().all(|p| p.groups.is_empty()));
    assert_eq!(read.warnings.len(), 1);
    assert_eq!(
        reason(&read),
        "ps.csv:2: column MemberOf holds PowerShell's type name instead of its values, so these \
         people's MemberOf is unknown; export it joined, e.g. Select-Object \
         @{n='MemberOf';e={$_.MemberOf -join ';'}}"
    );
}

#[test]
fn csvde_hex_guids_and_dn_groups() {
    let csv = "DN,objectClass,objectGUID,sAMAccountName,memberOf,userAccountControl\n\
               \"CN=Ann Lee,OU=Staff,DC=acme,DC=local\",user,X'c98b91356d19ea409779889d79b753f0',ann,\
               \"CN=Billable Users,OU=Groups,DC=acme,DC=local;CN=VPN,OU=Groups,DC=acme,DC=local\",514\n";
    let read = parse_csv(csv.as_bytes(), "csvde.csv", now()).expect("parses");
    let ann = &read.people[0];
    assert_eq!(ann.id, "35918bc9-196d-40ea-9779-889d79b753f0");
    assert_eq!(ann.groups, vec!["Billable Users", "VPN"]);
    assert!(!ann.enabled, "UAC 514 has ACCOUNTDISABLE");
    assert_eq!(
        ann.attributes.get("DN").map(String::as_str),
        Some("CN=Ann Lee,OU=Staff,DC=acme,DC=local")
    );
}

#[test]
fn the_first_id_column_wins_and_the_others_are_attributes() {
    let csv = "objectId,id,mail\nentra-1,hr-1,a@x.example\n";
    let read = parse_csv(csv.as_bytes(), "two-ids.csv", now()).expect("parses");
    let p = &read.people[0];
    assert_eq!(p.id, "hr-1", "`id` ranks above `objectId`");
    assert_eq!(
        p.attributes.get("objectId").map(String::as_str),
        Some("entra-1")
    );
}
