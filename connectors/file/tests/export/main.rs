//! Exports as real tools write them, read end to end. One test binary for the crate, so the
//! slow link happens once.

mod csv_exports;
mod directory;
mod fuzz;
mod ldif_exports;
mod nested_groups;
mod truncation;

use chrono::{DateTime, TimeZone, Utc};
use rollcall_core::{Completeness, DirectoryRead, Person};

/// A fixed "now" between the fixtures' expired (2020) and future (2099) account expiries.
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0)
        .single()
        .expect("a valid date")
}

pub fn fixture_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).expect("fixture exists")
}

#[track_caller]
pub fn person<'a>(read: &'a DirectoryRead, username: &str) -> &'a Person {
    read.people
        .iter()
        .find(|p| p.username == username)
        .unwrap_or_else(|| panic!("no person {username:?} in {:#?}", read.people))
}

#[track_caller]
pub fn reason(read: &DirectoryRead) -> &str {
    match &read.completeness {
        Completeness::Incomplete { reason } => reason,
        Completeness::Complete => panic!("expected an incomplete read, got {read:#?}"),
    }
}

pub fn usernames(read: &DirectoryRead) -> Vec<&str> {
    read.people.iter().map(|p| p.username.as_str()).collect()
}

pub fn utf16le_with_bom(bytes: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(bytes).expect("fixture is UTF-8");
    [0xFF, 0xFE]
        .into_iter()
        .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
        .collect()
}
