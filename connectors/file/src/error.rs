//! Why one row of a CSV or one entry of an LDIF could not be read.
//!
//! A bad record never stops the read: it is skipped, reported as a warning naming `file:line`,
//! and the read is marked incomplete so the planner cannot lower a seat count because of it.
//! Whole-file failures (cannot open, no id column) are [`rollcall_core::DirectoryError`]s instead.
//! Each message says what is wrong with the value, so the operator can fix the export.

/// What is wrong with one record. Shown after `file:line:`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("{found} fields where the header has {expected}")]
    ColumnCount { expected: usize, found: usize },

    #[error("no id: column {column} is empty")]
    MissingId { column: String },

    #[error("{field}: {value:?} is not a boolean (expected true/false, yes/no or 1/0)")]
    BadBoolean { field: String, value: String },

    #[error("{field}: {value:?} is not an integer")]
    BadInteger { field: String, value: String },

    #[error("{field}: not valid UTF-8 (save the export as UTF-8 or UTF-16 with a byte order mark)")]
    NotUtf8 { field: String },

    #[error("id {id:?} was already read at line {first_line}")]
    DuplicateId { id: String, first_line: u64 },

    #[error("{attribute}: invalid base64: {detail}")]
    BadBase64 { attribute: String, detail: String },

    #[error("{attribute}: {length} bytes, but an objectGUID has 16")]
    BadGuid { attribute: String, length: usize },

    #[error(
        "{attribute}: the value is given by URL ({url}), which is not supported: export values inline (ldapsearch without -t)"
    )]
    UrlValue { attribute: String, url: String },

    #[error("`changetype: {changetype}` is a change record, not an exported entry")]
    ChangeRecord { changetype: String },

    #[error("the entry does not start with `dn:`")]
    NoDn,

    #[error("the line is not `attribute: value`")]
    NotAnAttribute,

    #[error(
        "the file ends inside this row's quoted cell (its closing quote is missing): the export was cut short; export it again"
    )]
    EndsInsideQuotes,

    #[error(
        "the file ends inside this row (it has no line end): the export may have been cut short; export it again, or end the file with a line break if it is whole"
    )]
    NoLineEnd,

    #[error(
        "the file ends inside this entry (no blank line follows it, as ldifde, ldapsearch and slapcat write after every entry): the export may have been cut short; export it again"
    )]
    EntryCut,
}
