//! The parsers against what the world writes by accident: real exports with bytes deleted,
//! inserted, swapped and cut, and plain noise. Bounded so it stays a few seconds in CI; what it
//! proves is that no input panics, and that a read is the same every time.

use proptest::prelude::*;
use rollcall_file::{parse_csv, parse_ldif};

use crate::{fixture, now};

/// Pieces that change how a CSV or LDIF is read, more likely to reach odd states than noise.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b",",
    b"\n",
    b"\r\n",
    b"\r",
    b";",
    b"\\",
    b"dn: ",
    b"dn:: ",
    b":: ",
    b":< ",
    b"\n ",
    b"\n\n",
    b"#",
    b"version: 1\n",
    b"changetype: modify\n",
    b"objectClass: group\n",
    b"member: CN=x,DC=y\n",
    b"memberOf: CN=x,DC=y\n",
    b"\xEF\xBB\xBF",
    b"\xFF\xFE",
    b"\x00",
    b"\xC3",
    b"\xE2\x80\xAE",
    b"\x1B]0;x\x07",
    b"=HYPERLINK(\"x\")",
    b"#TYPE x\n",
    b"# numEntries: 9\n",
    b"result: 4 Size limit exceeded\n",
    b"objectGUID:: AAAA\n",
];

#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    Replace(usize, u8),
    Cut(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), prop::sample::select(TOKENS))
            .prop_map(|(at, t)| Edit::Insert(at, t.to_vec())),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, b)| Edit::Insert(at, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Replace(at, b)),
        any::<usize>().prop_map(Edit::Cut),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = bytes.len().max(1);
        match e {
            Edit::Delete(at, n) => {
                let at = at % len;
                let end = (at + n).min(bytes.len());
                if at < end {
                    bytes.drain(at..end);
                }
            }
            Edit::Insert(at, b) => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            Edit::Replace(at, b) => {
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] = *b;
                }
            }
            Edit::Cut(at) => bytes.truncate(at % (bytes.len() + 1)),
        }
    }
    bytes
}

const CSVS: &[&str] = &[
    "powershell-adusers.csv",
    "entra-users.csv",
    "msp-sheet.csv",
    "malformed.csv",
];
const LDIFS: &[&str] = &[
    "ldifde-export.ldf",
    "ldapsearch-openldap.ldif",
    "malformed.ldif",
];

/// Both readers over `bytes`: no panic, and the same answer twice.
fn read_both(bytes: &[u8]) -> Result<(), TestCaseError> {
    let csv =
        |b: &[u8]| parse_csv(b, "f.csv", now()).map(|r| (r.people, r.completeness, r.warnings));
    let ldif =
        |b: &[u8]| parse_ldif(b, "f.ldif", now()).map(|r| (r.people, r.completeness, r.warnings));
    prop_assert_eq!(format!("{:?}", csv(bytes)), format!("{:?}", csv(bytes)));
    prop_assert_eq!(format!("{:?}", ldif(bytes)), format!("{:?}", ldif(bytes)));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn edited_csv_exports_never_panic(which in 0..CSVS.len(), edits in prop::collection::vec(edit(), 1..6)) {
        read_both(&apply(fixture(CSVS[which]), &edits))?;
    }

    #[test]
    fn edited_ldif_exports_never_panic(which in 0..LDIFS.len(), edits in prop::collection::vec(edit(), 1..6)) {
        read_both(&apply(fixture(LDIFS[which]), &edits))?;
    }

    #[test]
    fn noise_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        read_both(&bytes)?;
    }

    #[test]
    fn token_soup_never_panics(tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..60)) {
        read_both(&tokens.concat())?;
    }
}
