//! rollcall's LDAP read against `ldapsearch -E pr=1000/noprompt`, the same entries on the same
//! slapd, side by side; and how much peak memory a read adds (it streams page by page, so the
//! streaming read's growth must not follow the directory's size).
//!
//! `cargo bench -p rollcall-ldap --bench read` (100,000 users; `ROLLCALL_BENCH_USERS=n` for
//! another size). Needs slapd and ldap-utils; skipped with a message when they are missing.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use rollcall_core::{Directory, Secret};
use rollcall_harness::Slapd;
use rollcall_harness::data::{self, READER_DN, READER_PASSWORD, STAFF};
use rollcall_ldap::{Config, DEFAULT_FILTER, LdapDirectory, NestedGroups};

fn users() -> usize {
    std::env::var("ROLLCALL_BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        // `cargo test --all-targets` runs each benchmark once to see it works: a small
        // directory is enough for that.
        .unwrap_or(if std::env::args().any(|a| a == "--bench") {
            100_000
        } else {
            2_000
        })
}

fn config(s: &Slapd, groups: bool) -> Config {
    let mut c = Config::new(s.url(), READER_DN, Secret::new(READER_PASSWORD));
    c.allow_plaintext = true;
    c.base_dns = vec![STAFF.to_owned()];
    c.page_size = 1000;
    c.nested_groups = NestedGroups::Client;
    // Without groups, the read asks for exactly what ldapsearch is asked for below.
    c.group_base_dns = vec![if groups {
        data::GROUPS.to_owned()
    } else {
        format!("OU=Service,{}", data::BASE)
    }];
    c
}

/// The attributes rollcall's people search asks for (model.rs), for ldapsearch.
const ATTRS: &[&str] = &[
    "objectGUID",
    "entryUUID",
    "sAMAccountName",
    "userPrincipalName",
    "mail",
    "givenName",
    "sn",
    "displayName",
    "memberOf",
    "title",
    "department",
    "telephoneNumber",
    "whenCreated",
    "whenChanged",
    "userAccountControl",
    "accountExpires",
];

fn ldapsearch(s: &Slapd) {
    let status = Command::new("ldapsearch")
        .args([
            "-x",
            "-H",
            &s.url(),
            "-D",
            READER_DN,
            "-w",
            READER_PASSWORD,
            "-b",
            STAFF,
        ])
        .args(["-LLL", "-E", "pr=1000/noprompt", DEFAULT_FILTER])
        .args(ATTRS)
        .stdout(Stdio::null())
        .status()
        .expect("ldapsearch");
    assert!(status.success());
}

/// Peak resident memory so far (VmHWM), in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn bench(c: &mut Criterion) {
    if !rollcall_harness::servers_available("bench read", Slapd::PROGRAMS) {
        return;
    }
    let n = users();
    let t = Instant::now();
    let slapd = Slapd::start(n).expect("slapd");
    eprintln!(
        "slapd with {n} users ready in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");

    // Memory first, before criterion's own allocations muddy the peak.
    let before = peak_rss_kib();
    let streamed = rt.block_on(async {
        let mut count = 0usize;
        LdapDirectory::new(config(&slapd, true))
            .read_each(&mut |_p| count += 1)
            .await
            .expect("read");
        count
    });
    let after_stream = peak_rss_kib();
    let collected = rt.block_on(async {
        LdapDirectory::new(config(&slapd, true))
            .read(None)
            .await
            .expect("read")
            .people
            .len()
    });
    let after_collect = peak_rss_kib();
    eprintln!(
        "peak RSS: start {} MiB; +{} MiB streaming {streamed} people with groups (read_each); \
         +{} MiB more collecting {collected} into Vec<Person> (Directory::read)",
        before / 1024,
        after_stream.saturating_sub(before) / 1024,
        after_collect.saturating_sub(after_stream) / 1024,
    );

    let mut g = c.benchmark_group(format!("ldap read {n} users"));
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("ldapsearch -E pr=1000/noprompt", |b| {
        b.iter(|| ldapsearch(&slapd))
    });
    g.bench_function("rollcall read_each (streamed)", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut count = 0usize;
                LdapDirectory::new(config(&slapd, false))
                    .read_each(&mut |_p| count += 1)
                    .await
                    .expect("read");
                assert_eq!(count, n);
            })
        })
    });
    g.bench_function("rollcall read (Vec<Person>, nested groups)", |b| {
        b.iter(|| {
            rt.block_on(async {
                let read = LdapDirectory::new(config(&slapd, true))
                    .read(None)
                    .await
                    .expect("read");
                assert_eq!(read.people.len(), n);
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
