//! What both formats share once records are parsed: text encodings, skipped records, duplicate
//! ids, and the one rule that matters most here.
//!
//! That rule (DESIGN.md invariant 3): a file that could not be read, in whole or in part, must
//! never look like a directory with fewer people. So every problem lands in one [`Collector`],
//! which turns any of them into [`Completeness::Incomplete`] with a reason that counts them and
//! quotes the first, and never lets an empty file pass as an empty directory.

use std::borrow::Cow;

use rollcall_core::{Completeness, DirectoryError, DirectoryRead, Person};

use crate::error::RecordError;

/// What a record is called in messages: a CSV has rows, an LDIF has entries.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Unit {
    Row,
    Entry,
}

impl Unit {
    fn one(self) -> &'static str {
        match self {
            Unit::Row => "row",
            Unit::Entry => "entry",
        }
    }
    fn many(self) -> &'static str {
        match self {
            Unit::Row => "rows",
            Unit::Entry => "entries",
        }
    }
}

/// Gathers the people of one file and everything that went wrong reading it.
pub(crate) struct Collector<'a> {
    source: &'a str,
    unit: Unit,
    people: Vec<Person>,
    /// The line each person starts on, parallel to `people`, for duplicate reports.
    lines: Vec<u64>,
    skipped: Vec<(u64, RecordError)>,
    /// Problems with the file as a whole, already worded with their location.
    notes: Vec<String>,
    records: usize,
}

impl<'a> Collector<'a> {
    pub fn new(source: &'a str, unit: Unit) -> Self {
        Collector {
            source,
            unit,
            people: Vec::new(),
            lines: Vec::new(),
            skipped: Vec::new(),
            notes: Vec::new(),
            records: 0,
        }
    }

    pub fn source(&self) -> &'a str {
        self.source
    }

    /// One more record was met, whether it yields a person, is skipped, or is not a person.
    pub fn count_record(&mut self) {
        self.records += 1;
    }

    pub fn person(&mut self, line: u64, person: Person) {
        self.people.push(person);
        self.lines.push(line);
    }

    /// The people read so far, for work that needs all of them (group nesting).
    pub fn people_mut(&mut self) -> &mut [Person] {
        &mut self.people
    }

    pub fn skip(&mut self, line: u64, error: RecordError) {
        self.skipped.push((line, error));
    }

    /// A problem that is not one record's: the read becomes incomplete and this is the reason.
    pub fn incomplete(&mut self, note: String) {
        self.notes.push(note);
    }

    pub fn finish(mut self) -> DirectoryRead {
        self.drop_duplicates();
        for person in &mut self.people {
            person.shrink_to_fit();
        }
        self.people.shrink_to_fit();
        self.skipped.sort_by_key(|(line, _)| *line);

        let mut warnings = self.notes.clone();
        warnings.extend(self.skipped.iter().map(|(line, error)| {
            format!(
                "{}:{line}: {error}; {} skipped",
                self.source,
                self.unit.one()
            )
        }));

        let mut reasons = self.notes;
        if let Some(first) = warnings.get(reasons.len()) {
            reasons.push(format!(
                "{} of {} {} could not be read; first: {first}",
                self.skipped.len(),
                self.records,
                self.unit.many(),
            ));
        }
        let completeness = if reasons.is_empty() {
            Completeness::Complete
        } else {
            Completeness::Incomplete {
                reason: reasons.join("; "),
            }
        };
        DirectoryRead {
            people: self.people,
            completeness,
            warnings,
            cursor: None,
            subscriptions: Vec::new(),
        }
    }

    /// Keeps the first person with each id. Two people with one id means the export is wrong
    /// (a mis-mapped id column, a join gone bad), and which of the two is right is unknowable.
    ///
    /// Sorting indices instead of hashing ids keeps a 100,000-row read free of a second copy of
    /// every id.
    fn drop_duplicates(&mut self) {
        let mut order: Vec<usize> = (0..self.people.len()).collect();
        order.sort_by(|&a, &b| {
            self.people[a]
                .id
                .cmp(&self.people[b].id)
                .then(self.lines[a].cmp(&self.lines[b]))
        });
        let mut duplicate = vec![false; self.people.len()];
        let mut any = false;
        // Equal ids are adjacent in `order`, earliest line first: that one is the original.
        let mut original: Option<usize> = None;
        for &i in &order {
            match original {
                Some(o) if self.people[o].id == self.people[i].id => {
                    duplicate[i] = true;
                    any = true;
                    self.skipped.push((
                        self.lines[i],
                        RecordError::DuplicateId {
                            id: self.people[i].id.clone(),
                            first_line: self.lines[o],
                        },
                    ));
                }
                _ => original = Some(i),
            }
        }
        if !any {
            return;
        }
        let mut keep = duplicate.iter().map(|d| !d);
        self.people.retain(|_| keep.next().unwrap_or(true));
        let mut keep = duplicate.iter().map(|d| !d);
        self.lines.retain(|_| keep.next().unwrap_or(true));
    }
}

/// The file's text as UTF-8 bytes, whatever Windows wrote.
///
/// `ldifde -u` and PowerShell's `Out-File` write UTF-16LE with a byte order mark; Excel and
/// PowerShell 7 write UTF-8 with one. Without this, a UTF-16 export would fail on every row.
/// UTF-16 without a BOM is recognised by the zero bytes of its first (ASCII) characters. Other
/// bytes are passed on as they are: each row's UTF-8 is checked where it is read, so one bad
/// row (Latin-1 or Windows-1252 text) names its own line.
pub(crate) fn decode<'b>(input: &'b [u8], source: &str) -> Result<Cow<'b, [u8]>, DirectoryError> {
    if let Some(rest) = input.strip_prefix(b"\xEF\xBB\xBF") {
        return Ok(Cow::Borrowed(rest));
    }
    let utf16 = |rest: &[u8], from: fn([u8; 2]) -> u16| {
        if !rest.len().is_multiple_of(2) {
            return Err(malformed(source, "UTF-16 text with an odd number of bytes"));
        }
        let units = rest.chunks_exact(2).map(|c| from([c[0], c[1]]));
        let mut out = String::with_capacity(rest.len() / 2);
        for (n, c) in char::decode_utf16(units).enumerate() {
            match c {
                Ok(c) => out.push(c),
                Err(_) => {
                    return Err(malformed(
                        source,
                        &format!("not valid UTF-16 at byte {}", 2 + n * 2),
                    ));
                }
            }
        }
        Ok(Cow::Owned(out.into_bytes()))
    };
    if let Some(rest) = input.strip_prefix(b"\xFF\xFE") {
        return utf16(rest, u16::from_le_bytes);
    }
    if let Some(rest) = input.strip_prefix(b"\xFE\xFF") {
        return utf16(rest, u16::from_be_bytes);
    }
    // UTF-16 saved without a BOM (PowerShell's `Set-Content -Encoding Unicode` via some tools,
    // a re-save): a header or `dn:` is ASCII, so every other byte of its first characters is
    // zero, which UTF-8 text never has.
    match input {
        [a, 0, b, 0, ..] if *a != 0 && *b != 0 => return utf16(input, u16::from_le_bytes),
        [0, a, 0, b, ..] if *a != 0 && *b != 0 => return utf16(input, u16::from_be_bytes),
        _ => {}
    }
    Ok(Cow::Borrowed(input))
}

fn malformed(source: &str, message: &str) -> DirectoryError {
    DirectoryError::Malformed {
        source_name: source.to_owned(),
        message: message.to_owned(),
    }
}

pub(crate) fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_whitespace)
}

/// An export with nothing in it. Every exporter writes at least a header or one entry, so this is
/// a failed or truncated export, never a client without people.
pub(crate) fn empty_export(source: &str, what: &str) -> DirectoryRead {
    let note = format!("{source}: the export is empty: {what}");
    DirectoryRead {
        people: Vec::new(),
        completeness: Completeness::Incomplete {
            reason: note.clone(),
        },
        warnings: vec![note],
        cursor: None,
        subscriptions: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(id: &str) -> Person {
        Person {
            id: id.to_owned(),
            enabled: true,
            ..Person::default()
        }
    }

    #[test]
    fn a_clean_read_is_complete() {
        let mut c = Collector::new("a.csv", Unit::Row);
        c.count_record();
        c.person(2, person("x"));
        let read = c.finish();
        assert_eq!(read.completeness, Completeness::Complete);
        assert!(read.warnings.is_empty());
        assert_eq!(read.people.len(), 1);
    }

    #[test]
    fn skipped_rows_are_counted_and_the_first_is_quoted() {
        let mut c = Collector::new("a.csv", Unit::Row);
        for line in 2..=5 {
            c.count_record();
            if line == 3 || line == 5 {
                c.skip(
                    line,
                    RecordError::MissingId {
                        column: "id".into(),
                    },
                );
            } else {
                c.person(line, person(&line.to_string()));
            }
        }
        let read = c.finish();
        assert_eq!(
            read.completeness,
            Completeness::Incomplete {
                reason: "2 of 4 rows could not be read; first: a.csv:3: no id: column id is empty; row skipped"
                    .into()
            }
        );
        assert_eq!(read.warnings.len(), 2);
        assert_eq!(read.people.len(), 2);
    }

    #[test]
    fn duplicates_keep_the_first_and_name_its_line() {
        let mut c = Collector::new("a.ldif", Unit::Entry);
        for (line, id) in [(1, "b"), (5, "a"), (9, "b"), (13, "b"), (17, "c")] {
            c.count_record();
            c.person(line, person(id));
        }
        let read = c.finish();
        let ids: Vec<_> = read.people.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, vec!["b", "a", "c"]);
        assert_eq!(
            read.warnings,
            vec![
                "a.ldif:9: id \"b\" was already read at line 1; entry skipped",
                "a.ldif:13: id \"b\" was already read at line 1; entry skipped",
            ]
        );
        assert!(!read.completeness.is_complete());
    }

    #[test]
    fn notes_come_first_in_the_reason() {
        let mut c = Collector::new("a.csv", Unit::Row);
        c.incomplete("a.csv:1: something about the file".into());
        let read = c.finish();
        assert_eq!(
            read.completeness,
            Completeness::Incomplete {
                reason: "a.csv:1: something about the file".into()
            }
        );
    }

    #[test]
    fn decoding_boms() {
        assert_eq!(
            &*decode(b"\xEF\xBB\xBFid", "f").ok().unwrap_or_default(),
            b"id"
        );
        let le: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("ïd".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert_eq!(&*decode(&le, "f").ok().unwrap_or_default(), "ïd".as_bytes());
        let be: Vec<u8> = [0xFE, 0xFF]
            .into_iter()
            .chain("ïd".encode_utf16().flat_map(u16::to_be_bytes))
            .collect();
        assert_eq!(&*decode(&be, "f").ok().unwrap_or_default(), "ïd".as_bytes());
        assert!(decode(b"\xFF\xFEa", "f").is_err());
        // A lone surrogate.
        assert!(decode(b"\xFF\xFE\x00\xD8", "f").is_err());
        assert_eq!(&*decode(b"plain", "f").ok().unwrap_or_default(), b"plain");
    }
}
