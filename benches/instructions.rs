//! Fixed workloads for the CI guard against performance regressions (`scripts/bench-guard`).
//!
//! Wall time on a shared 2-core machine moves by tens of percent from one run to the next, so
//! the guard counts instructions instead: `valgrind --tool=callgrind` runs this binary with one
//! workload's name and collects only inside that workload's `measure_*` function (the input is
//! made outside it). The same code on the same input executes the same instructions, so a
//! figure that grows more than 10 % over `benches/budgets.toml` is a regression, not noise.
//!
//! - `map_plan`: 100 clients × 100 people mapped (CEL rules, built-in exclusions, templates),
//!   planned and guarded, as a first run;
//! - `csv_parse`, `ldif_parse`: 2,000 people from an AD export (`rollcall-file`);
//! - `ldap_decode`: 2,000 LDAP search entries decoded into people (`rollcall-ldap`).
//!
//! (The reads are a fifth of the mapping's size: per person they cost about as much in the
//! debug build the guard counts, and callgrind runs some 50× slower than the code.)
//!
//! `instructions NAME` runs one workload; with no name (as `cargo test --all-targets` runs it)
//! every workload runs once at a tenth of the size, which only checks that they still work.

use std::hint::black_box;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use rollcall::config::Pipeline;
use rollcall_core::DirectoryRead;

mod common;

use common::{csv_export, map_and_plan, nothing_billed, person, pipeline};

const WORKLOADS: &[&str] = &["map_plan", "csv_parse", "ldif_parse", "ldap_decode"];

fn main() {
    let name = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let (names, people) = match &name {
        Some(n) if WORKLOADS.contains(&n.as_str()) => (vec![n.as_str()], 10_000),
        Some(n) => {
            eprintln!("unknown workload `{n}` (one of {})", WORKLOADS.join(", "));
            std::process::exit(2);
        }
        None => (WORKLOADS.to_vec(), 1_000),
    };
    // A fixed clock: dates decide who is enabled, and the count must not depend on the day.
    let now = DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
        .expect("date")
        .to_utc();
    for name in names {
        let made = match name {
            "map_plan" => {
                let p = pipeline();
                let reads: Vec<DirectoryRead> = (0..people / 100)
                    .map(|k| DirectoryRead::complete((0..100).map(|i| person(k, i)).collect()))
                    .collect();
                measure_map_plan(&p, &reads)
            }
            "csv_parse" => measure_csv_parse(&csv_export(people / 5), now),
            "ldif_parse" => measure_ldif_parse(&ldif_export(people / 5), now),
            "ldap_decode" => {
                measure_ldap_decode(&rollcall_ldap::bench::sample_entries(people / 5), now)
            }
            _ => unreachable!("names are checked above"),
        };
        assert!(made > 0, "{name} did no work");
        println!("{name}: {made}");
    }
}

#[inline(never)]
fn measure_map_plan(p: &Pipeline, reads: &[DirectoryRead]) -> usize {
    let nothing_billed = nothing_billed();
    // A loop, not an iterator chain: callgrind's toggle would also match a closure named
    // after this function and stop counting inside it.
    let mut changes = 0;
    for read in reads {
        changes += map_and_plan(p, black_box(read), &nothing_billed);
    }
    changes
}

#[inline(never)]
fn measure_csv_parse(bytes: &[u8], now: DateTime<Utc>) -> usize {
    rollcall_file::parse_csv(black_box(bytes), "bench.csv", now)
        .expect("csv")
        .people
        .len()
}

#[inline(never)]
fn measure_ldif_parse(bytes: &[u8], now: DateTime<Utc>) -> usize {
    rollcall_file::parse_ldif(black_box(bytes), "bench.ldif", now)
        .expect("ldif")
        .people
        .len()
}

#[inline(never)]
fn measure_ldap_decode(entries: &[Vec<u8>], now: DateTime<Utc>) -> usize {
    rollcall_ldap::bench::decode_people(black_box(entries), now).len()
}

/// The people of [`person`] as an `ldifde` export: binary GUIDs, a folded line, memberOf DNs.
fn ldif_export(n: usize) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut ldif = String::new();
    for i in 0..n {
        let p = person(0, i);
        let mut guid = [0u8; 16];
        guid[..8].copy_from_slice(&(i as u64).to_le_bytes());
        ldif.push_str(&format!(
            "\ndn: CN={name},OU=Staff,DC=acme,DC=local\nchangetype: add\nobjectClass: top\n\
             objectClass: person\nobjectClass: organizationalPerson\nobjectClass: user\n\
             cn: {name}\nsn: {sn}\ngivenName: {given}\ndisplayName: {name}\ntitle: Engineer\n\
             userAccountControl: {uac}\nobjectGUID:: {guid}\nsAMAccountName: {user}\n\
             userPrincipalName: {user}@acme.example\nmail: {user}@acme.example\n\
             whenCreated: 20240101120000.0Z\n",
            name = p.display_name,
            sn = p.surname,
            given = p.given_name,
            user = p.username,
            uac = if p.enabled { 512 } else { 514 },
            guid = b64.encode(guid),
        ));
        for g in &p.groups {
            // Long values fold onto a continuation line, as ldifde writes them.
            let dn = format!("memberOf: CN={g},OU=Groups,DC=acme,DC=local");
            let (head, tail) = dn.split_at(dn.len().min(40));
            ldif.push_str(&format!("{head}\n {tail}\n"));
        }
    }
    ldif.into_bytes()
}
