//! People from a CSV export: `Get-ADUser | Export-Csv`, `csvde`, the Entra and Microsoft 365
//! admin centres' "download users", or a spreadsheet an MSP keeps by hand.
//!
//! The header decides everything once: [`Columns`] maps each column to a person's field (by the
//! names in [`crate::model`]) before the first row is read, so a row costs a pass over its cells
//! and the strings a [`Person`] owns, and nothing else. Rows are read as bytes into one reused
//! record; UTF-8 is checked per cell, so an undecodable cell names its row instead of ending the
//! read.

use chrono::{DateTime, Utc};
use rollcall_core::ad::{self, UserAccountControl};
use rollcall_core::{AttributeName, Attributes, DirectoryError, DirectoryRead, Person};

use crate::error::RecordError;
use crate::groups::{self, GroupEntry};
use crate::model::{self, Evidence, Field};
use crate::read::{self, Collector, Unit};

/// Reads people from CSV text (bytes as they are on disk: UTF-8, or UTF-16 with a BOM).
///
/// `source_name` names the file in warnings (`acme.csv:17: …`); `now` decides whether an
/// `accountExpires` date has passed. A malformed row is skipped with a warning and makes the read
/// [`Completeness::Incomplete`](rollcall_core::Completeness::Incomplete); so does an empty file.
/// A header with no rows is a complete read of nobody.
///
/// # Errors
/// [`DirectoryError::Malformed`] when the header has no id column or is not text.
pub fn parse_csv(
    input: &[u8],
    source_name: &str,
    now: DateTime<Utc>,
) -> Result<DirectoryRead, DirectoryError> {
    read_csv(input, source_name, now, Beside::default())
}

/// What a group export beside the people file said: its groups, and why its read was
/// incomplete, if it was.
#[derive(Debug, Default)]
pub(crate) struct Beside {
    pub groups: Vec<GroupEntry>,
    pub notes: Vec<String>,
}

/// [`parse_csv`] with the groups of a group export, nesting expanded through them.
pub(crate) fn read_csv(
    input: &[u8],
    source_name: &str,
    now: DateTime<Utc>,
    beside: Beside,
) -> Result<DirectoryRead, DirectoryError> {
    let text = read::decode(input, source_name)?;
    let mut body: &[u8] = &text;
    let mut lines_before = 0;
    // Windows PowerShell's Export-Csv writes `#TYPE Microsoft.ActiveDirectory…` above the header
    // unless given -NoTypeInformation.
    if body.starts_with(b"#TYPE") {
        let end = body
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |n| n + 1);
        body = &body[end..];
        lines_before = 1;
    }
    if read::is_blank(body) {
        return Ok(read::empty_export(
            source_name,
            "a CSV export always has at least a header row",
        ));
    }

    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        // Rows of the wrong length are reported one by one rather than ending the read.
        .flexible(true)
        .from_reader(body);
    let mut record = csv::ByteRecord::new();
    let malformed = |message: String| DirectoryError::Malformed {
        source_name: source_name.to_owned(),
        message,
    };
    match reader.read_byte_record(&mut record) {
        Ok(true) => {}
        Ok(false) => {
            return Ok(read::empty_export(
                source_name,
                "a CSV export always has at least a header row",
            ));
        }
        Err(e) => return Err(malformed(format!("cannot read the header: {e}"))),
    }
    let mut lines = Lines {
        body,
        byte: 0,
        line: 1 + lines_before,
    };
    let header_line = lines.at(&record);
    let columns = Columns::from_header(&record)
        .map_err(|problem| malformed(format!("line {header_line}: {problem}")))?;

    let mut collector = Collector::new(source_name, Unit::Row);
    for note in beside.notes {
        collector.incomplete(note);
    }
    let mut type_name_reported = vec![false; columns.names.len()];
    // A cut export keeps every row before the cut intact and the last one partial: its groups or
    // title may be half there, so that row is nobody rather than a person with wrong fields.
    let mut cut = ending(body);
    loop {
        match lines.next_record(&mut reader, &mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(past) => {
                collector.incomplete(format!("{source_name}:{past}"));
                break;
            }
        }
        // Spreadsheets save trailing rows of empty cells; they are nobody, not a broken row.
        if record.iter().all(read::is_blank) {
            continue;
        }
        let line = lines.at(&record);
        collector.count_record();
        let last = reader.position().byte() >= body.len() as u64;
        if last && let Some(cut) = cut.take() {
            collector.skip(line, cut);
            continue;
        }
        match columns.person(&record, now) {
            Ok(row) => {
                if let Some(col) = row.type_name_in
                    && !type_name_reported[col]
                {
                    type_name_reported[col] = true;
                    let name = &columns.names[col];
                    collector.incomplete(format!(
                        "{source_name}:{line}: column {name} holds PowerShell's type name instead of its values, so these people's {name} is unknown; export it joined, e.g. Select-Object @{{n='{name}';e={{$_.{name} -join ';'}}}}"
                    ));
                }
                collector.person(line, row.person);
            }
            Err(e) => collector.skip(line, e),
        }
    }
    if let Some(cut) = cut {
        // The header itself was the last line: no row is whole, not even an empty file's.
        collector.incomplete(format!("{source_name}:{header_line}: {cut}"));
    }
    groups::resolve(collector.people_mut(), &beside.groups, groups::csv_dn);
    Ok(collector.finish())
}

/// How a CSV ends, when that shows it was cut: inside a quoted cell, or part way along a row.
///
/// Every exporter ends each row with a line break, so a last row without one was cut (or saved by
/// hand); a trailing row of separators alone is a spreadsheet's empty row and carries nobody.
/// The quote state follows RFC 4180 as the csv crate reads it: a quote opens a quoted cell only
/// at a cell's start, and `""` inside one is a literal quote.
pub(crate) fn ending(body: &[u8]) -> Option<RecordError> {
    // Only quotes change the state, so the scan jumps from one to the next (memchr) instead of
    // looking at every byte: outside a quoted cell, a quote opens one when it starts the cell,
    // i.e. it is the first byte or follows a separator (after a closing quote the cell has
    // started already, and that byte is the quote itself).
    let mut quoted = false;
    let mut at = 0;
    while let Some(i) = memchr::memchr(b'"', &body[at..]) {
        let q = at + i;
        at = q + 1;
        if quoted {
            if body.get(at) == Some(&b'"') {
                at += 1;
            } else {
                quoted = false;
            }
        } else if q == 0 || matches!(body[q - 1], b',' | b'\n' | b'\r') {
            quoted = true;
        }
    }
    if quoted {
        return Some(RecordError::EndsInsideQuotes);
    }
    let end = body
        .iter()
        .rposition(|b| matches!(b, b'\n' | b'\r'))
        .map_or(0, |at| at + 1);
    let carries_data = body[end..]
        .iter()
        .any(|b| !matches!(b, b',' | b' ' | b'\t' | b'\r'));
    carries_data.then_some(RecordError::NoLineEnd)
}

/// The line a record starts on, counted here because csv-core does not count the newlines
/// inside a quoted cell: after a multi-line `Title` or `Notes`, its numbers would point at the
/// wrong row. Records come in order, so counting from the previous one keeps this linear.
pub(crate) struct Lines<'a> {
    body: &'a [u8],
    byte: usize,
    line: u64,
}

impl<'a> Lines<'a> {
    /// Lines of `body`, whose first line is line 1.
    pub(crate) fn new(body: &'a [u8]) -> Self {
        Lines {
            body,
            byte: 0,
            line: 1,
        }
    }

    /// The next record into `record`; `Err` names the line past which the CSV cannot be read.
    /// Reading from memory fails only on input the csv crate cannot resynchronise after, so
    /// what follows is unknown.
    pub(crate) fn next_record(
        &mut self,
        reader: &mut csv::Reader<&[u8]>,
        record: &mut csv::ByteRecord,
    ) -> Result<bool, String> {
        reader.read_byte_record(record).map_err(|e| {
            let line = self.at_byte(e.position().map_or(0, |p| p.byte()));
            format!("{line}: the CSV cannot be read past this line: {e}")
        })
    }

    pub(crate) fn at(&mut self, record: &csv::ByteRecord) -> u64 {
        self.at_byte(record.position().map_or(0, |p| p.byte()))
    }

    pub(crate) fn at_byte(&mut self, byte: u64) -> u64 {
        let mut target = usize::try_from(byte)
            .unwrap_or(usize::MAX)
            .clamp(self.byte, self.body.len());
        // A record's position is where the reader began looking, before any empty lines it
        // passed over; the record itself starts after them.
        while self
            .body
            .get(target)
            .is_some_and(|b| matches!(b, b'\r' | b'\n'))
        {
            target += 1;
        }
        let newlines = memchr::memchr_iter(b'\n', &self.body[self.byte..target]).count();
        self.line += newlines as u64;
        self.byte = target;
        self.line
    }
}

/// A cell's text without the white space around it, as `str::trim` leaves it. ASCII spaces
/// go first, a word at a time; only a cell that then ends in a byte that may be part of other
/// white space (a vertical tab, a non-ASCII character) is trimmed again by `str::trim`. Every
/// cell of an export passes here, and `str::trim` alone was a tenth of reading it.
fn trimmed_cell(text: &str) -> &str {
    let text = text.trim_ascii();
    let plain = |b: Option<&u8>| b.is_none_or(|b| b.is_ascii() && *b != 0x0b);
    if plain(text.as_bytes().first()) && plain(text.as_bytes().last()) {
        text
    } else {
        text.trim()
    }
}

/// Which columns feed which field, decided once from the header.
#[derive(Debug)]
struct Columns {
    /// The header as written (trimmed), for attribute keys and messages.
    names: Vec<String>,
    id: usize,
    /// For each field, its columns best first: a row takes the first non-empty one, so
    /// `DisplayName` wins over `Name` but an empty `DisplayName` falls back to it.
    username: Vec<usize>,
    given_name: Vec<usize>,
    surname: Vec<usize>,
    display_name: Vec<usize>,
    email: Vec<usize>,
    upn: Vec<usize>,
    enabled: Vec<usize>,
    blocked: Vec<usize>,
    uac: Vec<usize>,
    expires: Vec<usize>,
    groups: Vec<usize>,
    licenses: Vec<usize>,
    /// Columns copied into `attributes`: every column that is not a field, and those that are
    /// but whose raw value rules may want (see `model`); in the order of their names, each with
    /// its name shared by every row's person, so a row appends its attributes in order.
    attributes: Vec<(usize, AttributeName)>,
}

/// A person read from a row, and a column found holding a PowerShell type name, if any.
struct Row {
    person: Person,
    type_name_in: Option<usize>,
}

impl Columns {
    fn from_header(header: &csv::ByteRecord) -> Result<Columns, String> {
        let mut names = Vec::with_capacity(header.len());
        for (i, cell) in header.iter().enumerate() {
            let name = std::str::from_utf8(cell)
                .map_err(|_| format!("column {} of the header is not valid UTF-8", i + 1))?
                .trim();
            names.push(if name.is_empty() {
                format!("column {}", i + 1)
            } else {
                name.to_owned()
            });
        }

        let mut ranked: Vec<(Field, usize, usize)> = Vec::new();
        let mut attributes = Vec::new();
        for (i, name) in names.iter().enumerate() {
            match model::meaning_of(name) {
                Some(m) => {
                    ranked.push((m.field, m.rank, i));
                    if m.keep_as_attribute {
                        attributes.push(i);
                    }
                }
                None => attributes.push(i),
            }
        }
        ranked.sort_by_key(|&(_, rank, i)| (rank, i));
        let of = |field: Field| -> Vec<usize> {
            ranked
                .iter()
                .filter(|(f, _, _)| *f == field)
                .map(|&(_, _, i)| i)
                .collect()
        };

        // The id alone has no fallback: a row whose id came from another column would be a
        // different person to the planner on every read where that column was used.
        let ids = of(Field::Id);
        let Some((&id, other_ids)) = ids.split_first() else {
            return Err(format!(
                "no id column in the header ({}); expected one of: {} (any case), holding each person's stable identifier such as AD's ObjectGUID",
                summarise(&names),
                model::ID_NAMES
            ));
        };
        attributes.extend_from_slice(other_ids);
        let mut attributes: Vec<(usize, AttributeName)> = attributes
            .into_iter()
            .map(|i| (i, AttributeName::new(&names[i])))
            .collect();
        // A name written twice keeps its later column's value, as inserting in column order does.
        attributes.sort_unstable_by(|(i, a), (j, b)| a.cmp(b).then(i.cmp(j)));

        Ok(Columns {
            id,
            username: of(Field::Username),
            given_name: of(Field::GivenName),
            surname: of(Field::Surname),
            display_name: of(Field::DisplayName),
            email: of(Field::Email),
            upn: of(Field::Upn),
            enabled: of(Field::Enabled),
            blocked: of(Field::Blocked),
            uac: of(Field::UserAccountControl),
            expires: of(Field::AccountExpires),
            groups: of(Field::Groups),
            licenses: of(Field::Licenses),
            attributes,
            names,
        })
    }

    fn person(&self, record: &csv::ByteRecord, now: DateTime<Utc>) -> Result<Row, RecordError> {
        if record.len() != self.names.len() {
            return Err(RecordError::ColumnCount {
                expected: self.names.len(),
                found: record.len(),
            });
        }
        // The record is checked as UTF-8 once, not cell by cell: its cells are then cut from
        // it at their bounds (`get` fails only off a character boundary, which a delimiter
        // never is). A record that is not UTF-8 is checked cell by cell, to name the cell.
        let whole = std::str::from_utf8(record.as_slice()).ok();
        let cell = |i: usize| -> Result<&str, RecordError> {
            let text = match whole.and_then(|w| w.get(record.range(i)?)) {
                Some(text) => text,
                None => std::str::from_utf8(record.get(i).unwrap_or_default()).map_err(|_| {
                    RecordError::NotUtf8 {
                        field: self.names[i].clone(),
                    }
                })?,
            };
            Ok(trimmed_cell(text))
        };
        let first = |cols: &[usize]| -> Result<Option<(usize, &str)>, RecordError> {
            for &i in cols {
                let v = cell(i)?;
                if !v.is_empty() {
                    return Ok(Some((i, v)));
                }
            }
            Ok(None)
        };
        let text = |cols: &[usize]| -> Result<String, RecordError> {
            Ok(first(cols)?.map(|(_, v)| v.to_owned()).unwrap_or_default())
        };

        let id = cell(self.id)?;
        if id.is_empty() {
            return Err(RecordError::MissingId {
                column: self.names[self.id].clone(),
            });
        }

        let mut evidence = Evidence::default();
        if let Some((i, v)) = first(&self.enabled)? {
            evidence.stated = Some(model::parse_bool(v).ok_or_else(|| self.bad_bool(i, v))?);
        }
        if let Some((i, v)) = first(&self.blocked)? {
            evidence.blocked = Some(model::parse_bool(v).ok_or_else(|| self.bad_bool(i, v))?);
        }
        if let Some((i, v)) = first(&self.uac)? {
            evidence.uac = Some(UserAccountControl::parse(v).ok_or_else(|| self.bad_int(i, v))?);
        }
        if let Some((i, v)) = first(&self.expires)? {
            let filetime: i64 = v.parse().map_err(|_| self.bad_int(i, v))?;
            evidence.expires = ad::account_expires(filetime);
        }

        let mut type_name_in = None;
        let mut groups = Vec::new();
        if let Some((i, v)) = first(&self.groups)? {
            if model::is_powershell_type_name(v) {
                type_name_in = Some(i);
            } else {
                // Named once every row is read: a group export may nest them.
                groups.extend(model::split_multi(v).map(str::to_owned));
            }
        }
        let mut licenses = Vec::new();
        if let Some((i, v)) = first(&self.licenses)? {
            if model::is_powershell_type_name(v) {
                type_name_in = Some(i);
            } else {
                licenses.extend(model::split_multi(v).map(model::license));
            }
        }

        let mut attributes = Attributes::new();
        for (i, name) in &self.attributes {
            let v = cell(*i)?;
            // An empty cell is an absent attribute, as LDAP has no empty values.
            if !v.is_empty() {
                attributes.insert(name.clone(), v.to_owned());
            }
        }

        let non_empty = |v: String| (!v.is_empty()).then_some(v);
        let person = Person {
            id: model::normalise_id(id),
            username: text(&self.username)?,
            given_name: text(&self.given_name)?,
            surname: text(&self.surname)?,
            display_name: text(&self.display_name)?,
            email: non_empty(text(&self.email)?),
            upn: non_empty(text(&self.upn)?),
            enabled: evidence.enabled(now),
            groups,
            licenses,
            attributes,
        };
        Ok(Row {
            person,
            type_name_in,
        })
    }

    fn bad_bool(&self, column: usize, value: &str) -> RecordError {
        RecordError::BadBoolean {
            field: self.names[column].clone(),
            value: value.to_owned(),
        }
    }

    fn bad_int(&self, column: usize, value: &str) -> RecordError {
        RecordError::BadInteger {
            field: self.names[column].clone(),
            value: value.to_owned(),
        }
    }
}

/// A header for an error message: long AD exports have over a hundred columns.
fn summarise(names: &[String]) -> String {
    const SHOWN: usize = 12;
    let mut out = names
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        out.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte-by-byte quote scan `ending` replaced, as the oracle of the quote-to-quote one.
    fn ends_quoted_byte_by_byte(body: &[u8]) -> bool {
        let mut quoted = false;
        let mut cell_start = true;
        let mut bytes = body.iter().peekable();
        while let Some(&b) = bytes.next() {
            if quoted {
                if b == b'"' {
                    if bytes.peek() == Some(&&b'"') {
                        bytes.next();
                    } else {
                        quoted = false;
                    }
                }
                continue;
            }
            match b {
                b'"' if cell_start => quoted = true,
                b',' | b'\n' | b'\r' => {
                    cell_start = true;
                    continue;
                }
                _ => {}
            }
            cell_start = false;
        }
        quoted
    }

    proptest::proptest! {
        #[test]
        fn the_quote_state_at_the_end_is_the_byte_by_byte_one(
            body in proptest::collection::vec(
                proptest::sample::select(b"\",,\n\rab \"".to_vec()),
                0..40,
            )
        ) {
            proptest::prop_assert_eq!(
                matches!(ending(&body), Some(RecordError::EndsInsideQuotes)),
                ends_quoted_byte_by_byte(&body)
            );
        }
    }

    fn read(text: &str) -> DirectoryRead {
        parse_csv(text.as_bytes(), "t.csv", Utc::now()).expect("has an id column")
    }

    #[test]
    fn line_numbers_survive_quoted_newlines_and_blank_lines() {
        let read = read(
            "id,Notes,Enabled\r\n\
             1,\"two\r\nlines\",true\r\n\
             \r\n\
             \r\n\
             2,x,nope\r\n\
             3,\"a\nb\nc\",true\n\
             4,y,nah\n",
        );
        let lines: Vec<_> = read
            .warnings
            .iter()
            .map(|w| w.split(": ").next().unwrap_or_default())
            .collect();
        assert_eq!(lines, vec!["t.csv:6", "t.csv:10"]);
        assert_eq!(read.people.len(), 2);
        assert_eq!(read.people[1].attributes["Notes"], "a\nb\nc");
    }

    /// Cells are cut from the record's text at their bounds: characters of several bytes next to
    /// a delimiter or a doubled quote, and white space that is not ASCII, come out whole.
    #[test]
    fn cells_of_several_byte_characters_are_cut_whole() {
        let read = read(
            "id,GivenName,Surname,DisplayName\n\
             1,José,Müller,\"Ren\"\"ée\"\"\u{3000}\"\n\
             2,山田,\u{a0}é,\u{2066}x\n",
        );
        let p = &read.people;
        assert_eq!(
            (&*p[0].given_name, &*p[0].surname, &*p[0].display_name),
            ("José", "Müller", "Ren\"ée\"")
        );
        assert_eq!(
            (&*p[1].given_name, &*p[1].surname, &*p[1].display_name),
            ("山田", "é", "\u{2066}x")
        );
    }

    #[test]
    fn a_field_falls_back_to_its_next_column_row_by_row() {
        let read = read("id,Name,DisplayName\n1,ann.lee,Ann Lee\n2,bob.s,\n");
        assert_eq!(read.people[0].display_name, "Ann Lee");
        assert_eq!(read.people[1].display_name, "bob.s");
        // Name is kept as an attribute either way.
        assert_eq!(read.people[0].attributes["Name"], "ann.lee");
    }

    proptest::proptest! {
        /// Cells are trimmed exactly as `str::trim` trims them.
        #[test]
        fn cells_are_trimmed_as_str_trim_does(cell in "[ \t\n\x0b\x0c\ra\"\u{85}\u{a0}\u{3000}\u{2028}é]{0,12}") {
            proptest::prop_assert_eq!(trimmed_cell(&cell), cell.trim());
        }
    }

    #[test]
    fn header_names_are_trimmed_and_blank_ones_numbered() {
        let read = read(" id , ,Dept\n1,x,Sales\n");
        let attributes = &read.people[0].attributes;
        assert_eq!(attributes["column 2"], "x");
        assert_eq!(attributes["Dept"], "Sales");
    }

    #[test]
    fn a_long_header_is_summarised_in_the_error() {
        let header: Vec<String> = (1..=20).map(|n| format!("c{n}")).collect();
        let err = parse_csv(header.join(",").as_bytes(), "wide.csv", Utc::now())
            .expect_err("no id column");
        let text = err.to_string();
        assert!(
            text.contains("c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12 and 8 more"),
            "{text}"
        );
    }
}
