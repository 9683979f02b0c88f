//! LDIF exports: ldifde against AD, ldapsearch against OpenLDAP, and broken ones.

use rollcall_core::Completeness;
use rollcall_file::parse_ldif;

use crate::{fixture, now, person, reason, usernames, utf16le_with_bom};

fn parse(name: &str) -> rollcall_core::DirectoryRead {
    parse_ldif(&fixture(name), name, now()).expect("LDIF never fails as a whole")
}

#[test]
fn ldifde_export_of_an_ad_domain() {
    let read = parse("ldifde-export.ldf");
    assert_eq!(
        read.completeness,
        Completeness::Complete,
        "{:?}",
        read.warnings
    );
    assert!(read.warnings.is_empty());
    // The computer, the group and the mail contact are not people.
    assert_eq!(usernames(&read), vec!["ann", "zoe", "bob", "eve"]);

    let ann = person(&read, "ann");
    assert_eq!(
        ann.id, "35918bc9-196d-40ea-9779-889d79b753f0",
        "binary objectGUID, AD byte order"
    );
    assert_eq!(ann.given_name, "Ann");
    assert_eq!(ann.surname, "Lee");
    assert_eq!(ann.display_name, "Ann Lee");
    assert_eq!(ann.email.as_deref(), Some("ann@acme.example"));
    assert_eq!(ann.upn.as_deref(), Some("ann@acme.example"));
    assert!(
        ann.enabled,
        "UAC 66048 = NORMAL_ACCOUNT | DONT_EXPIRE_PASSWORD"
    );
    // The first memberOf is folded across two lines.
    assert_eq!(ann.groups, vec!["Billable Users", "Sales, EMEA"]);
    let attr = |k: &str| ann.attributes.get(k).map(String::as_str);
    assert_eq!(attr("title"), Some("Engineer"));
    assert_eq!(attr("department"), Some("Engineering"));
    assert_eq!(attr("company"), Some("Acme"));
    assert_eq!(attr("employeeID"), Some("E1001"));
    assert_eq!(attr("whenCreated"), Some("20240101120000.0Z"));
    assert_eq!(
        attr("objectSid"),
        Some("S-1-5-21-1004336348-1177238915-682003330-1105")
    );
    assert_eq!(
        attr("objectClass"),
        Some("top; person; organizationalPerson; user")
    );
    assert_eq!(attr("dn"), Some("CN=Ann Lee,OU=Staff,DC=acme,DC=local"));
    assert_eq!(attr("cn"), Some("Ann Lee"));
    assert_eq!(attr("userAccountControl"), Some("66048"));
    assert_eq!(attr("thumbnailPhoto"), None, "binary values are left out");
    assert_eq!(attr("objectGUID"), None, "the id is not repeated");
    assert_eq!(attr("changetype"), None);

    let zoe = person(&read, "zoe");
    assert_eq!(zoe.id, "0a1b2c3d-4e5f-4061-8273-8495a6b7c8d9");
    assert_eq!(zoe.given_name, "Zoë");
    assert_eq!(zoe.surname, "Müller-Ångström");
    assert_eq!(
        zoe.display_name, "Zoë Müller-Ångström (Finance & Operations, Zürich office)",
        "base64 displayName:: folded mid-value"
    );
    assert_eq!(
        zoe.attributes.get("dn").map(String::as_str),
        Some("CN=Zoë Müller-Ångström,OU=Staff,DC=acme,DC=local"),
        "dn:: in base64"
    );
    assert_eq!(zoe.groups, vec!["Billable Users"], "folded inside a word");
    assert!(zoe.enabled, "accountExpires 0 is never");

    assert!(!person(&read, "bob").enabled, "UAC 514 has ACCOUNTDISABLE");
    assert!(
        !person(&read, "eve").enabled,
        "accountExpires in 2020 is expired by 2025"
    );
}

#[test]
fn ldifde_unicode_export_reads_the_same() {
    let utf8 = parse("ldifde-export.ldf");
    let utf16 = parse_ldif(
        &utf16le_with_bom(&fixture("ldifde-export.ldf")),
        "u.ldf",
        now(),
    )
    .expect("decodes");
    assert_eq!(utf16.completeness, Completeness::Complete);
    assert_eq!(utf16.people, utf8.people);
}

#[test]
fn ldapsearch_against_openldap() {
    let read = parse("ldapsearch-openldap.ldif");
    assert_eq!(
        read.completeness,
        Completeness::Complete,
        "{:?}",
        read.warnings
    );
    assert_eq!(
        usernames(&read),
        vec!["ann", "bjorn"],
        "the OU is not a person"
    );

    let ann = person(&read, "ann");
    assert_eq!(
        ann.id, "1c2d3e4f-9c2d-103e-8a5b-3f1d6c2e7a90",
        "entryUUID, made canonical"
    );
    assert_eq!(ann.display_name, "Ann Lee", "no displayName: cn");
    assert_eq!(
        ann.email.as_deref(),
        Some("ann@acme.example"),
        "the first mail"
    );
    assert!(ann.enabled, "no userAccountControl: enabled");
    assert_eq!(
        ann.attributes.get("description").map(String::as_str),
        Some(
            "first line of a long description that ldapsearch folds at seventy-six columns, continued here"
        )
    );
    assert_eq!(ann.attributes.get("uid").map(String::as_str), Some("ann"));
    assert_eq!(
        ann.attributes.get("homeDirectory").map(String::as_str),
        Some("/home/ann")
    );

    let bjorn = person(&read, "bjorn");
    assert_eq!(bjorn.display_name, "Bjørn Åsen — 東京");
    assert_eq!(bjorn.surname, "Åsen");
    assert_eq!(
        bjorn.attributes.get("cn").map(String::as_str),
        Some("Bjørn Åsen")
    );
    assert_eq!(bjorn.groups, vec!["billable"], "a lower-case cn= DN");
}

#[test]
fn ldapsearch_that_hit_a_size_limit_is_incomplete() {
    let read = parse("ldapsearch-sizelimit.ldif");
    assert_eq!(read.people.len(), 1);
    assert_eq!(
        reason(&read),
        "ldapsearch-sizelimit.ldif:11: the export ends with `result: 4 Size limit exceeded`: the \
         search stopped before writing every entry"
    );
}

#[test]
fn ldapsearch_that_matched_nobody_is_a_complete_empty_read() {
    let read = parse("ldapsearch-no-match.ldif");
    assert_eq!(read.completeness, Completeness::Complete);
    assert!(read.people.is_empty());
}

#[test]
fn an_empty_export_is_never_an_empty_directory() {
    let read = parse("whitespace.ldif");
    assert_eq!(
        reason(&read),
        "whitespace.ldif: the export is empty: an LDIF export always has at least one entry"
    );
    let read = parse_ldif(b"version: 1\n# nothing else\n", "v.ldif", now()).expect("parses");
    assert!(read.people.is_empty());
    assert!(reason(&read).starts_with("v.ldif: the export has no entries"));
}

#[test]
fn malformed_entries_are_skipped_with_their_line() {
    let read = parse("malformed.ldif");
    assert_eq!(
        read.warnings,
        vec![
            "malformed.ldif:11: displayName: invalid base64: Invalid symbol 33, offset 0.; entry skipped",
            "malformed.ldif:16: objectGUID: 8 bytes, but an objectGUID has 16; entry skipped",
            "malformed.ldif:21: jpegPhoto: the value is given by URL (file:///tmp/ldapsearch-jpegPhoto-Xy12), \
             which is not supported: export values inline (ldapsearch without -t); entry skipped",
            "malformed.ldif:24: `changetype: modify` is a change record, not an exported entry; entry skipped",
            "malformed.ldif:29: the entry does not start with `dn:`; entry skipped",
            "malformed.ldif:35: userAccountControl: \"lots\" is not an integer; entry skipped",
            "malformed.ldif:37: id \"35918bc9-196d-40ea-9779-889d79b753f0\" was already read at line 3; entry skipped",
            "malformed.ldif:44: the line is not `attribute: value`; entry skipped",
        ]
    );
    assert_eq!(
        reason(&read),
        "8 of 9 entries could not be read; first: malformed.ldif:11: displayName: invalid base64: \
         Invalid symbol 33, offset 0.; entry skipped"
    );
    assert_eq!(usernames(&read), vec!["ann"]);
}

#[test]
fn an_export_without_object_classes_recognises_accounts() {
    // `ldifde -l "sAMAccountName,mail"` writes only the attributes asked for.
    let ldif = "dn: CN=Ann Lee,OU=Staff,DC=acme,DC=local\nchangetype: add\nsAMAccountName: ann\n\n\
                dn: CN=PC-0042,OU=Computers,DC=acme,DC=local\nchangetype: add\nsAMAccountName: PC-0042$\n\n\
                dn: OU=Staff,DC=acme,DC=local\nchangetype: add\n\n";
    let read = parse_ldif(ldif.as_bytes(), "l.ldf", now()).expect("parses");
    assert_eq!(read.completeness, Completeness::Complete);
    assert_eq!(usernames(&read), vec!["ann"]);
    assert_eq!(
        read.people[0].id, "CN=Ann Lee,OU=Staff,DC=acme,DC=local",
        "no GUID: the dn"
    );
}

#[test]
fn comments_and_folds_inside_an_entry() {
    let ldif = "version: 1\n\
                # a comment that is\n  folded too\n\
                dn: uid=ann,ou=people,dc=x\n\
                objectClass: inetOrgPerson\n\
                # a comment between attributes\n\
                uid: an\n n\n\
                sn:\n\
                mail:   ann@x.example  \n\n";
    let read = parse_ldif(ldif.as_bytes(), "c.ldif", now()).expect("parses");
    assert_eq!(
        read.completeness,
        Completeness::Complete,
        "{:?}",
        read.warnings
    );
    let ann = &read.people[0];
    assert_eq!(ann.username, "ann");
    assert_eq!(ann.surname, "", "an empty value");
    assert_eq!(ann.email.as_deref(), Some("ann@x.example"));
    assert_eq!(ann.id, "uid=ann,ou=people,dc=x");
}
