//! Exports cut short: every prefix of a real export, as a copy or download stopped part way
//! leaves it. A cut must never give a person with a field cut (a group list, a title), and a cut
//! anywhere but a record's end must make the read incomplete, so nothing is lowered from it.

use rollcall_core::{Completeness, DirectoryRead, Person};
use rollcall_file::{parse_csv, parse_ldif};

use crate::{fixture, now, reason};

type Parse = fn(&[u8], &str, chrono::DateTime<chrono::Utc>) -> DirectoryRead;

/// A read that failed as a whole (a header cut before its id column) is refused, which lowers
/// nothing either: here it counts as an incomplete read of nobody.
fn refused(e: rollcall_core::DirectoryError) -> DirectoryRead {
    DirectoryRead {
        people: Vec::new(),
        completeness: Completeness::Incomplete {
            reason: e.to_string(),
        },
        warnings: Vec::new(),
        cursor: None,
        subscriptions: Vec::new(),
    }
}

fn csv(bytes: &[u8], name: &str, now: chrono::DateTime<chrono::Utc>) -> DirectoryRead {
    parse_csv(bytes, name, now).unwrap_or_else(refused)
}

fn ldif(bytes: &[u8], name: &str, now: chrono::DateTime<chrono::Utc>) -> DirectoryRead {
    parse_ldif(bytes, name, now).unwrap_or_else(refused)
}

/// Reads every prefix of `name` and checks what any cut may and may not do. `whole_at` says
/// whether a prefix ends where the format lets a whole record end; there a cut may look
/// complete (that is what a line-boundary cut cannot be told from), anywhere else it must not.
fn every_prefix(name: &str, parse: Parse, whole_at: fn(&[u8]) -> bool) {
    let bytes = fixture(name);
    let full = parse(&bytes, name, now());
    assert_eq!(
        full.completeness,
        Completeness::Complete,
        "{name}: {:?}",
        full.warnings
    );
    let same = |p: &Person| full.people.iter().any(|f| f == p);
    for cut in 0..bytes.len() {
        let prefix = &bytes[..cut];
        let read = parse(prefix, name, now());
        for p in &read.people {
            assert!(
                same(p),
                "{name} cut at byte {cut}: a person read differently: {p:#?}"
            );
        }
        if read.completeness.is_complete() {
            assert!(
                whole_at(prefix),
                "{name} cut at byte {cut} (…{:?}) read as complete",
                String::from_utf8_lossy(&prefix[cut.saturating_sub(30)..])
            );
        }
    }
}

/// After a line end, or inside a trailing row of separators only (a spreadsheet's empty row,
/// which carries nobody).
fn ends_a_line(prefix: &[u8]) -> bool {
    let last = prefix.rsplit(|&b| b == b'\n').next().unwrap_or_default();
    prefix.ends_with(b"\r") || last.iter().all(|b| matches!(b, b',' | b'\r'))
}

fn ends_an_entry(prefix: &[u8]) -> bool {
    prefix.ends_with(b"\n\n") || prefix.ends_with(b"\r\n\r\n") || prefix.ends_with(b"\n\r\n")
}

#[test]
fn a_csv_cut_anywhere_but_a_line_end_is_incomplete_and_never_cuts_a_person() {
    for name in ["powershell-adusers.csv", "entra-users.csv", "msp-sheet.csv"] {
        every_prefix(name, csv, ends_a_line);
    }
}

#[test]
fn an_ldif_cut_anywhere_but_an_entry_end_is_incomplete_and_never_cuts_a_person() {
    every_prefix("ldifde-export.ldf", ldif, ends_an_entry);
}

#[test]
fn an_ldapsearch_export_cut_anywhere_before_its_last_entry_is_incomplete() {
    // ldapsearch's trailer (`result:`, `# numEntries`) makes even a cut between entries show.
    let name = "ldapsearch-openldap.ldif";
    let bytes = fixture(name);
    let full = ldif(&bytes, name, now());
    for cut in 0..bytes.len() {
        let read = ldif(&bytes[..cut], name, now());
        if read.people.len() < full.people.len() {
            assert!(
                !read.completeness.is_complete(),
                "cut at byte {cut} read as complete"
            );
        }
    }
}

#[test]
fn a_csv_row_without_a_line_end_is_skipped_at_its_line() {
    let read = csv(
        b"id,GivenName,Title\n1,Ann,Engineer\n2,Bob,Eng",
        "cut.csv",
        now(),
    );
    assert_eq!(read.people.len(), 1);
    assert!(
        reason(&read).contains("cut.csv:3: the file ends inside this row (it has no line end)"),
        "{}",
        reason(&read)
    );
    // A trailing row of empty cells without a line end carries nobody.
    let read = csv(b"id,GivenName\n1,Ann\n,", "sheet.csv", now());
    assert_eq!(read.completeness, Completeness::Complete);
}

#[test]
fn a_csv_cut_inside_quotes_skips_the_row_it_began() {
    let read = csv(
        b"id,Title,MemberOf\n1,x,\"CN=A,DC=x\"\n2,\"multi\nline\",\"CN=Billable Users,OU=G",
        "q.csv",
        now(),
    );
    assert_eq!(read.people.len(), 1);
    assert!(
        reason(&read).contains("q.csv:3: the file ends inside this row's quoted cell"),
        "{}",
        reason(&read)
    );
}

#[test]
fn a_ragged_last_row_is_skipped() {
    let read = csv(b"id,a,b\n1,x,y\n2,x\n", "r.csv", now());
    assert_eq!(read.people.len(), 1);
    assert!(
        reason(&read).contains("r.csv:3: 2 fields where the header has 3"),
        "{}",
        reason(&read)
    );
}

#[test]
fn an_ldif_entry_without_its_blank_line_end_is_skipped() {
    let text = "dn: CN=Ann,DC=x\nobjectClass: user\nsAMAccountName: ann\n\n\
                dn: CN=Bob,DC=x\nobjectClass: user\nsAMAccountName: bob\nmemberOf: CN=Bill";
    let read = ldif(text.as_bytes(), "cut.ldif", now());
    assert_eq!(read.people.len(), 1);
    assert!(
        reason(&read).contains("cut.ldif:5: the file ends inside this entry"),
        "{}",
        reason(&read)
    );
    // Cut inside a folded (continued) line: the same.
    let folded = "dn: CN=Ann,DC=x\nobjectClass: user\nsAMAccountName: ann\nmemberOf: CN=Billable U\n sers,DC=x\n";
    assert!(
        !ldif(folded.as_bytes(), "f.ldif", now())
            .completeness
            .is_complete()
    );
    // A cut that leaves only attribute lines (the dn line lost) is no entry at all.
    let read = ldif(
        b"sAMAccountName: x\nobjectClass: user\n\n",
        "nodn.ldif",
        now(),
    );
    assert!(!read.completeness.is_complete());
}

#[test]
fn ldapsearch_counts_must_match() {
    let text = "# extended LDIF\n#\n\ndn: cn=a,dc=x\nobjectClass: inetOrgPerson\nuid: a\n\n\
                # search result\nsearch: 2\nresult: 0 Success\n\n# numEntries: 2\n";
    let read = ldif(text.as_bytes(), "n.ldif", now());
    assert!(
        reason(&read).contains("n.ldif:12: ldapsearch counted 2 entries but the file holds 1"),
        "{}",
        reason(&read)
    );
    let cut = "# extended LDIF\n#\n\ndn: cn=a,dc=x\nobjectClass: inetOrgPerson\nuid: a\n\n";
    let read = ldif(cut.as_bytes(), "t.ldif", now());
    assert!(
        reason(&read).contains("ends without its `result:` line"),
        "{}",
        reason(&read)
    );
}

#[test]
fn utf16_without_a_byte_order_mark_is_read() {
    let text = "id,GivenName\n1,Zoë\n";
    let le: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let read = csv(&le, "u.csv", now());
    assert_eq!(
        read.completeness,
        Completeness::Complete,
        "{:?}",
        read.warnings
    );
    assert_eq!(read.people[0].given_name, "Zoë");
    let be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
    assert_eq!(csv(&be, "u.csv", now()).people[0].given_name, "Zoë");
}

#[test]
fn a_latin1_export_names_each_row_it_cannot_read() {
    // Windows PowerShell 5's Export-Csv -Encoding Default: Windows-1252, ë as 0xEB.
    let read = csv(b"id,GivenName\n1,Zo\xEB\n2,Ann\n", "l.csv", now());
    assert_eq!(read.people.len(), 1);
    assert!(
        reason(&read).contains("l.csv:2: GivenName: not valid UTF-8"),
        "{}",
        reason(&read)
    );
}

#[test]
fn a_huge_line_is_read_whole() {
    let mut text = b"id,Notes\n1,".to_vec();
    text.extend(std::iter::repeat_n(b'x', 4 << 20));
    text.extend_from_slice(b"\n2,y\n");
    let read = csv(&text, "big.csv", now());
    assert_eq!(read.completeness, Completeness::Complete);
    assert_eq!(read.people[0].attributes["Notes"].len(), 4 << 20);
    let mut entry = b"dn: CN=a,DC=x\nobjectClass: user\nsAMAccountName: a\ndescription: ".to_vec();
    entry.extend(std::iter::repeat_n(b'y', 4 << 20));
    entry.extend_from_slice(b"\n\n");
    let read = ldif(&entry, "big.ldif", now());
    assert_eq!(
        read.completeness,
        Completeness::Complete,
        "{:?}",
        read.warnings
    );
}
