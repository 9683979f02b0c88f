//! People from an LDIF export (RFC 2849): what `ldifde -f` writes on Windows and `ldapsearch`
//! writes against AD, OpenLDAP or 389 DS.
//!
//! The file is read as a sequence of paragraphs (records separated by blank lines), each a list
//! of logical lines after unfolding. Only entries for people become [`Person`]s: an export taken
//! with a broad filter also holds groups, OUs, contacts and computers, which are passed over
//! quietly. Values are decoded the way AD writes them ([`rollcall_core::ad`]): `objectGUID` as
//! 16 raw bytes, `userAccountControl` as flags, `accountExpires` as a FILETIME.
//!
//! Exporters differ in ways that matter here:
//! - `ldifde` writes `changetype: add` in every entry, so that record type is read as an entry;
//!   any other change type (`modify`, `delete`, `modrdn`) is not an export and is reported.
//! - `ldapsearch` (without `-LLL`) ends with `search: N` / `result: 0 Success`; any other result
//!   (`4 Size limit exceeded`) means the export stopped early, so the read is incomplete.
//! - `ldapsearch -t` writes binary values to files and puts `attr:< file://…` in the LDIF; we do
//!   not follow URLs, so such an entry is reported and skipped.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use chrono::{DateTime, Utc};
use rollcall_core::ad::{self, UserAccountControl};
use rollcall_core::{AttributeName, Attributes, DirectoryError, DirectoryRead, License, Person};

use crate::csv_export::Beside;
use crate::error::RecordError;
use crate::groups::{self, GroupEntry};
use crate::model::{self, Evidence, Field};
use crate::read::{self, Collector, Unit};

/// RFC 2849 asks for padding; some scripted exports leave it off, and the value is no less clear.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Reads people from LDIF text (bytes as they are on disk: UTF-8, or UTF-16 with a BOM, as
/// `ldifde -u` writes).
///
/// `source_name` names the file in warnings (`acme.ldif:42: …`); `now` decides whether an
/// `accountExpires` date has passed. A malformed entry is skipped with a warning and makes the
/// read [`Completeness::Incomplete`](rollcall_core::Completeness::Incomplete); so does a file
/// with no entries at all, unless `ldapsearch` wrote that its search succeeded and matched nobody.
///
/// # Errors
/// [`DirectoryError::Malformed`] only when the bytes are UTF-16 that does not decode.
pub fn parse_ldif(
    input: &[u8],
    source_name: &str,
    now: DateTime<Utc>,
) -> Result<DirectoryRead, DirectoryError> {
    read_ldif(input, source_name, now, Beside::default())
}

/// [`parse_ldif`] with the groups of a group export beside it, as well as its own.
pub(crate) fn read_ldif(
    input: &[u8],
    source_name: &str,
    now: DateTime<Utc>,
    beside: Beside,
) -> Result<DirectoryRead, DirectoryError> {
    let text = read::decode(input, source_name)?;
    if read::is_blank(&text) {
        return Ok(read::empty_export(
            source_name,
            "an LDIF export always has at least one entry",
        ));
    }

    let mut reader = Reader {
        collector: Collector::new(source_name, Unit::Entry),
        now,
        first_paragraph: true,
        entries: 0,
        dn_entries: 0,
        search_succeeded: false,
        search_seen: false,
        groups: beside.groups,
        trailer: Trailer::default(),
    };
    for note in beside.notes {
        reader.collector.incomplete(note);
    }
    let mut paragraph: Vec<Line<'_>> = Vec::new();
    let mut in_comment = false;
    // The line break ending the last line is not a blank line after it.
    let whole_last_line = text.ends_with(b"\n");
    let body = text.strip_suffix(b"\n").unwrap_or(&text);
    let mut lines = body.split(|&b| b == b'\n').enumerate().peekable();
    while let Some((index, raw)) = lines.next() {
        let number = index as u64 + 1;
        // Spaces the file ends on, without a line end, are the start of a fold that was cut.
        if lines.peek().is_none() && !whole_last_line && read::is_blank(raw) {
            break;
        }
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        // A line of spaces is read as a separator, not a fold: RFC 2849 has values that end in
        // spaces base64-encoded, so no real fold leaves a line of only spaces.
        if read::is_blank(raw) {
            reader.paragraph(&paragraph);
            paragraph.clear();
            in_comment = false;
            continue;
        }
        match raw[0] {
            b' ' if in_comment => {}
            b' ' => match paragraph.last_mut() {
                Some(last) => last.text.to_mut().extend_from_slice(&raw[1..]),
                // A fold with nothing to continue; it will fail to parse and be reported.
                None => paragraph.push(Line {
                    number,
                    text: Cow::Borrowed(raw),
                }),
            },
            b'#' => {
                in_comment = true;
                reader.trailer.comment(raw, number);
            }
            _ => {
                in_comment = false;
                paragraph.push(Line {
                    number,
                    text: Cow::Borrowed(raw),
                });
            }
        }
    }
    // Exporters end every entry with a blank line: an entry at the very end without one may have
    // been cut at any of its lines, its `memberOf` values among them.
    reader.last_paragraph(&paragraph);
    Ok(reader.finish())
}

/// What `ldapsearch` (without `-LLL`) writes around its entries: a `# extended LDIF` header, and
/// at the end `# search result`, `result: …` and `# numEntries: N`. These let a cut made exactly
/// between two entries be told from a whole export, which the entries alone cannot.
#[derive(Default)]
struct Trailer {
    /// The first line is `# extended LDIF`, so the closing lines are owed.
    expected: bool,
    /// `# numEntries: N` and its line.
    entries: Option<(u64, u64)>,
}

impl Trailer {
    fn comment(&mut self, line: &[u8], number: u64) {
        let text = line[1..].trim_ascii();
        if number == 1 && text.eq_ignore_ascii_case(b"extended LDIF") {
            self.expected = true;
        }
        if let Some(n) = text
            .strip_prefix(b"numEntries:")
            .and_then(|n| std::str::from_utf8(n).ok())
            .and_then(|n| n.trim().parse().ok())
        {
            self.entries = Some((n, number));
        }
    }
}

/// One logical line: folds joined, `number` the physical line it starts on.
struct Line<'a> {
    number: u64,
    text: Cow<'a, [u8]>,
}

enum Value<'a> {
    Text(&'a str),
    /// From `attr:: base64`: text or binary, depending on the attribute.
    Bytes(Vec<u8>),
}

impl Value<'_> {
    /// The value as text, or `None` for binary data (a photo, a certificate, a SID).
    fn text(&self) -> Option<Cow<'_, str>> {
        match self {
            Value::Text(t) => Some(Cow::Borrowed(t)),
            Value::Bytes(b) => {
                let s = std::str::from_utf8(b).ok()?;
                let printable = s
                    .chars()
                    .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r'));
                printable.then_some(Cow::Borrowed(s))
            }
        }
    }
}

/// Splits `attr: value`, `attr:: base64` and `attr:< url`.
fn parse_line<'a>(line: &'a Line<'_>) -> Result<(&'a str, Value<'a>), RecordError> {
    let bytes: &[u8] = &line.text;
    let colon = bytes
        .iter()
        .position(|&b| b == b':')
        .ok_or(RecordError::NotAnAttribute)?;
    let name = std::str::from_utf8(&bytes[..colon]).map_err(|_| RecordError::NotAnAttribute)?;
    // An attribute description: a name or OID, then options such as `;binary` or AD's
    // `;range=0-1499`.
    let valid_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b';' | b'.' | b'=' | b'_'));
    if !valid_name {
        return Err(RecordError::NotAnAttribute);
    }
    let rest = &bytes[colon + 1..];
    let value = match rest.first() {
        Some(b':') => {
            let encoded = rest[1..].trim_ascii();
            let decoded = BASE64.decode(encoded).map_err(|e| RecordError::BadBase64 {
                attribute: name.to_owned(),
                detail: e.to_string(),
            })?;
            Value::Bytes(decoded)
        }
        Some(b'<') => {
            return Err(RecordError::UrlValue {
                attribute: name.to_owned(),
                url: String::from_utf8_lossy(rest[1..].trim_ascii()).into_owned(),
            });
        }
        _ => {
            let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
            let text = std::str::from_utf8(&rest[start..]).map_err(|_| RecordError::NotUtf8 {
                field: name.to_owned(),
            })?;
            Value::Text(text)
        }
    };
    Ok((name, value))
}

struct Reader<'s> {
    collector: Collector<'s>,
    now: DateTime<Utc>,
    first_paragraph: bool,
    entries: usize,
    /// Paragraphs starting with `dn:`, as `ldapsearch` counts them in `# numEntries`.
    dn_entries: u64,
    /// `ldapsearch` wrote `result: 0 Success`: a file without entries then really is empty.
    search_succeeded: bool,
    /// The group entries met, for nesting once every entry is read.
    groups: Vec<GroupEntry>,
    /// `ldapsearch`'s closing `result:` line was read, whatever it said.
    search_seen: bool,
    trailer: Trailer,
}

impl Reader<'_> {
    /// The file's last paragraph when no blank line follows it: an entry there is taken as cut.
    fn last_paragraph(&mut self, lines: &[Line<'_>]) {
        let version = self.first_paragraph
            && lines
                .first()
                .is_some_and(|l| starts_with_ignore_case(&l.text, b"version:"));
        let entry = &lines[usize::from(version).min(lines.len())..];
        match entry.first() {
            Some(first) if starts_with_ignore_case(&first.text, b"dn:") => {
                self.first_paragraph = false;
                self.entries += 1;
                self.dn_entries += 1;
                self.collector.count_record();
                self.collector.skip(first.number, RecordError::EntryCut);
            }
            _ => self.paragraph(lines),
        }
    }

    fn paragraph(&mut self, lines: &[Line<'_>]) {
        let mut lines = lines;
        if lines.is_empty() {
            return;
        }
        if std::mem::take(&mut self.first_paragraph)
            && starts_with_ignore_case(&lines[0].text, b"version:")
        {
            lines = &lines[1..];
            if lines.is_empty() {
                return;
            }
        }
        let first = &lines[0];
        let name = match parse_line(first) {
            Ok((name, _)) => name,
            Err(e) => {
                self.entries += 1;
                self.collector.count_record();
                self.collector.skip(first.number, e);
                return;
            }
        };
        if name.eq_ignore_ascii_case("dn") {
            self.entries += 1;
            self.dn_entries += 1;
            self.collector.count_record();
            if let Err((line, e)) = self.entry(lines) {
                self.collector.skip(line, e);
            }
        } else if name.eq_ignore_ascii_case("search") {
            self.search_result(lines);
        } else if name.eq_ignore_ascii_case("ref") {
            // ldapsearch's search reference (a referral, such as AD's DomainDnsZones): it
            // points at another naming context, which holds no users of this one.
        } else {
            self.entries += 1;
            self.collector.count_record();
            self.collector.skip(first.number, RecordError::NoDn);
        }
    }

    /// ldapsearch's closing `search: 2` / `result: 0 Success` paragraph.
    fn search_result(&mut self, lines: &[Line<'_>]) {
        for line in lines {
            let Ok((name, value)) = parse_line(line) else {
                continue;
            };
            if !name.eq_ignore_ascii_case("result") {
                continue;
            }
            self.search_seen = true;
            let text = value.text().unwrap_or_default();
            let code = text.split_whitespace().next().unwrap_or_default();
            if code == "0" {
                self.search_succeeded = true;
            } else {
                self.collector.incomplete(format!(
                    "{}:{}: the export ends with `result: {text}`: the search stopped before writing every entry",
                    self.collector.source(),
                    line.number
                ));
            }
        }
    }

    /// Reads one entry, adding its person if it is one. An error names the line at fault.
    fn entry(&mut self, lines: &[Line<'_>]) -> Result<(), (u64, RecordError)> {
        let dn_line = lines[0].number;
        let mut draft = Draft::default();
        let (_, dn_value) = parse_line(&lines[0]).map_err(|e| (dn_line, e))?;
        draft.dn = dn_value
            .text()
            .ok_or_else(|| {
                let e = RecordError::NotUtf8 {
                    field: "dn".to_owned(),
                };
                (dn_line, e)
            })?
            .into_owned();

        for line in &lines[1..] {
            let (name, value) = parse_line(line).map_err(|e| (line.number, e))?;
            draft.add(name, value).map_err(|e| (line.number, e))?;
        }

        if draft.is_group() {
            let cn = draft
                .attributes
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("cn"))
                .map(|(_, v)| v.as_str());
            self.groups.push(GroupEntry {
                name: rollcall_core::groups::group_name(&draft.dn, cn),
                dn: draft.dn,
                members: draft.members,
            });
            return Ok(());
        }
        if !draft.is_person() {
            return Ok(());
        }
        let person = draft.into_person(self.now);
        self.collector.person(dn_line, person);
        Ok(())
    }

    fn finish(mut self) -> DirectoryRead {
        let source = self.collector.source();
        if self.trailer.expected && !self.search_seen {
            self.collector.incomplete(format!(
                "{source}: the export starts as ldapsearch writes one (`# extended LDIF`) but ends without its `result:` line: it was cut short; export it again"
            ));
        }
        if let Some((said, line)) = self.trailer.entries
            && said != self.dn_entries
        {
            self.collector.incomplete(format!(
                "{source}:{line}: ldapsearch counted {said} entries but the file holds {}: it was cut or edited; export it again",
                self.dn_entries
            ));
        }
        groups::resolve(self.collector.people_mut(), &self.groups, |p| {
            p.attributes.get("dn").map(String::as_str)
        });
        if self.entries == 0 && !self.search_succeeded {
            let source = self.collector.source();
            self.collector.incomplete(format!(
                "{source}: the export has no entries: an LDIF export always has at least one (ldapsearch writes `result: 0 Success` when its search matched nobody)"
            ));
        }
        self.collector.finish()
    }
}

fn starts_with_ignore_case(text: &[u8], prefix: &[u8]) -> bool {
    text.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// What one entry said, gathered line by line.
#[derive(Default)]
struct Draft {
    dn: String,
    /// From binary `objectGUID`, the only id AD guarantees never changes.
    guid: Option<String>,
    /// OpenLDAP's and 389 DS's stable id.
    entry_uuid: Option<String>,
    /// `objectGUID` written as text by a tool that decoded it already.
    guid_text: Option<String>,
    /// Lowercased `objectClass` values.
    classes: Vec<String>,
    username: Best,
    given_name: Best,
    surname: Best,
    display_name: Best,
    email: Best,
    upn: Best,
    evidence: Evidence,
    /// `memberOf` values, as written (DNs).
    groups: Vec<String>,
    /// A group's `member` (or `uniqueMember`) values, as written (DNs).
    members: Vec<String>,
    licenses: Vec<License>,
    /// Values by attribute, in the order first met; names compare case-insensitively, as LDAP's do.
    attributes: Vec<(AttributeName, String)>,
}

/// The value from the best-ranked name seen so far for one field, e.g. `displayName` over `cn`.
#[derive(Default)]
struct Best(Option<(usize, String)>);

impl Best {
    fn offer(&mut self, rank: usize, value: &str) {
        if value.is_empty() || self.0.as_ref().is_some_and(|(r, _)| *r <= rank) {
            return;
        }
        self.0 = Some((rank, value.to_owned()));
    }
    fn take(&mut self) -> Option<String> {
        self.0.take().map(|(_, v)| v)
    }
}

impl Draft {
    fn add(&mut self, name: &str, value: Value<'_>) -> Result<(), RecordError> {
        let base = name.split(';').next().unwrap_or(name);
        let not_text = || RecordError::NotUtf8 {
            field: name.to_owned(),
        };
        let is = |n: &str| base.eq_ignore_ascii_case(n);

        if is("changetype") {
            let kind = value.text().ok_or_else(not_text)?;
            // ldifde writes every exported entry as `changetype: add`.
            if kind.trim().eq_ignore_ascii_case("add") {
                return Ok(());
            }
            return Err(RecordError::ChangeRecord {
                changetype: kind.trim().to_owned(),
            });
        }
        if is("control") {
            // Belongs to change records; the `changetype` line that must follow decides.
            return Ok(());
        }
        if is("objectGUID") {
            match value {
                Value::Bytes(bytes) => {
                    let guid = ad::guid_to_string(&bytes).ok_or(RecordError::BadGuid {
                        attribute: name.to_owned(),
                        length: bytes.len(),
                    })?;
                    self.guid = Some(guid);
                }
                Value::Text(t) => self.guid_text = Some(model::normalise_id(t)),
            }
            return Ok(());
        }
        if is("entryUUID") {
            let t = value.text().ok_or_else(not_text)?;
            self.entry_uuid = Some(model::normalise_id(&t));
            return Ok(());
        }
        if is("objectSid") {
            let sid = match &value {
                Value::Bytes(bytes) => ad::sid_to_string(bytes),
                Value::Text(t) => Some((*t).to_owned()),
            };
            if let Some(sid) = sid {
                self.attribute(name, &sid);
            }
            return Ok(());
        }
        if is("member") || is("uniqueMember") {
            let t = value.text().ok_or_else(not_text)?;
            if !t.trim().is_empty() {
                self.members.push(t.trim().to_owned());
            }
            return Ok(());
        }
        if is("objectClass") {
            let t = value.text().ok_or_else(not_text)?;
            self.classes.push(t.trim().to_ascii_lowercase());
            self.attribute(name, &t);
            return Ok(());
        }

        let Some(meaning) = model::meaning_of(base) else {
            // Binary attributes nobody bills by (thumbnailPhoto, logonHours, certificates) are
            // left out rather than turned into unreadable text.
            if let Some(t) = value.text() {
                self.attribute(name, &t);
            }
            return Ok(());
        };
        let t = value.text().ok_or_else(not_text)?;
        let t = t.trim();
        let rank = meaning.rank;
        match meaning.field {
            // LDIF ids come from objectGUID, entryUUID or the dn; an `id` attribute is just data.
            Field::Id => self.attribute(name, t),
            Field::Username => self.username.offer(rank, t),
            Field::GivenName => self.given_name.offer(rank, t),
            Field::Surname => self.surname.offer(rank, t),
            Field::DisplayName => self.display_name.offer(rank, t),
            Field::Email => self.email.offer(rank, t),
            Field::Upn => self.upn.offer(rank, t),
            Field::Enabled | Field::Blocked => {
                let b = model::parse_bool(t).ok_or_else(|| RecordError::BadBoolean {
                    field: name.to_owned(),
                    value: t.to_owned(),
                })?;
                if meaning.field == Field::Enabled {
                    self.evidence.stated = Some(b);
                } else {
                    self.evidence.blocked = Some(b);
                }
            }
            Field::UserAccountControl => {
                let uac = UserAccountControl::parse(t).ok_or_else(|| bad_int(name, t))?;
                self.evidence.uac = Some(uac);
            }
            Field::AccountExpires => {
                let filetime: i64 = t.parse().map_err(|_| bad_int(name, t))?;
                self.evidence.expires = ad::account_expires(filetime);
            }
            // Kept as written: the DN finds the group among the export's group entries.
            Field::Groups => {
                if !t.is_empty() {
                    self.groups.push(t.to_owned());
                }
            }
            Field::Licenses => self
                .licenses
                .extend(model::split_multi(t).map(model::license)),
        }
        if meaning.keep_as_attribute {
            self.attribute(name, t);
        }
        Ok(())
    }

    /// Multi-valued attributes are joined with "; ", since `Person::attributes` holds one string.
    fn attribute(&mut self, name: &str, value: &str) {
        if value.is_empty() {
            return;
        }
        match self
            .attributes
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some((_, joined)) => {
                joined.push_str("; ");
                joined.push_str(value);
            }
            None => self
                .attributes
                .push((AttributeName::new(name), value.to_owned())),
        }
    }

    /// Whether the entry is a group whose members the export lists: AD's `group`, or
    /// `groupOfNames` / `groupOfUniqueNames` elsewhere.
    fn is_group(&self) -> bool {
        self.classes
            .iter()
            .any(|c| matches!(c.as_str(), "group" | "groupofnames" | "groupofuniquenames"))
    }

    /// Whether the entry is a person who could hold a seat.
    ///
    /// In AD a computer is also `objectClass: user` (and a managed service account too), and a
    /// mail contact is a `person`: both are excluded. An export limited to a few attributes
    /// (`ldifde -l`) may have no objectClass at all; then an account name marks a person, and
    /// AD's machine accounts are recognised by their flags or the `$` ending their name.
    fn is_person(&self) -> bool {
        if self
            .evidence
            .uac
            .is_some_and(UserAccountControl::is_machine)
        {
            return false;
        }
        if self.classes.is_empty() {
            let account = self.username.0.as_ref().map(|(_, v)| v.as_str());
            return account.is_some_and(|a| !a.ends_with('$')) || self.upn.0.is_some();
        }
        let has = |c: &str| self.classes.iter().any(|k| k == c);
        let personal = ["user", "person", "inetorgperson", "organizationalperson"]
            .iter()
            .any(|c| has(c));
        personal && !has("computer") && !has("contact")
    }

    fn into_person(mut self, now: DateTime<Utc>) -> Person {
        let mut attributes: Attributes = self.attributes.drain(..).collect();
        attributes.insert("dn".into(), self.dn.clone());
        let id = self
            .guid
            .take()
            .or(self.entry_uuid.take())
            .or(self.guid_text.take())
            .unwrap_or_else(|| self.dn.clone());
        Person {
            id,
            username: self.username.take().unwrap_or_default(),
            given_name: self.given_name.take().unwrap_or_default(),
            surname: self.surname.take().unwrap_or_default(),
            display_name: self.display_name.take().unwrap_or_default(),
            email: self.email.take(),
            upn: self.upn.take(),
            enabled: self.evidence.enabled(now),
            groups: self.groups,
            licenses: self.licenses,
            attributes,
        }
    }
}

fn bad_int(name: &str, value: &str) -> RecordError {
    RecordError::BadInteger {
        field: name.to_owned(),
        value: value.to_owned(),
    }
}
