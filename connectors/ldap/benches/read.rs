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

/// CPU seconds (user + system) of a process from `/proc/<pid>/stat`: its own, and its waited-for
/// children's. Clock ticks are 1/100 s on Linux.
fn cpu_secs(pid: &str) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    let tick = |i: usize| f.get(i).copied().unwrap_or(0.0) / 100.0;
    // utime, stime, cutime, cstime are fields 14–17; `rest` starts at field 3.
    (tick(11) + tick(12), tick(13) + tick(14))
}

/// Wall time, the reading client's CPU and slapd's CPU of one run of `f`.
#[derive(Clone, Copy, Default)]
struct Run {
    wall: f64,
    client_cpu: f64,
    server_cpu: f64,
}

fn measure(slapd: &Slapd, child: bool, f: impl FnOnce()) -> Run {
    let server = slapd.pid().map(|p| p.to_string()).unwrap_or_default();
    let pick = |(own, children): (f64, f64)| if child { children } else { own };
    let (c0, s0) = (pick(cpu_secs("self")), cpu_secs(&server).0);
    let t = Instant::now();
    f();
    let wall = t.elapsed().as_secs_f64();
    Run {
        wall,
        client_cpu: pick(cpu_secs("self")) - c0,
        server_cpu: cpu_secs(&server).0 - s0,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// ldapsearch and rollcall's two reads in turn, `rounds` times, so a change in the machine's
/// load hits all three alike: the ratios compare runs made moments apart.
fn interleaved(slapd: &Slapd, rt: &tokio::runtime::Runtime, n: usize, rounds: usize) {
    let names = [
        "ldapsearch -E pr=1000/noprompt",
        "rollcall read_each (streamed)",
        "rollcall read (Vec<Person>, nested groups)",
    ];
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); names.len()];
    // `ROLLCALL_BENCH_ONLY=1` (or 0, 2): that read alone, e.g. to count its instructions with
    // `perf stat` whatever else the machine is doing.
    if let Some(only) = std::env::var("ROLLCALL_BENCH_ONLY")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        for _ in 0..rounds {
            match only {
                0 => ldapsearch(slapd),
                1 => rt.block_on(async {
                    LdapDirectory::new(config(slapd, false))
                        .read_each(&mut |_p| {})
                        .await
                        .expect("read");
                }),
                _ => rt.block_on(async {
                    LdapDirectory::new(config(slapd, true))
                        .read(None)
                        .await
                        .expect("read");
                }),
            }
        }
        return;
    }
    for _ in 0..rounds {
        runs[0].push(measure(slapd, true, || ldapsearch(slapd)));
        runs[1].push(measure(slapd, false, || {
            rt.block_on(async {
                let mut count = 0usize;
                LdapDirectory::new(config(slapd, false))
                    .read_each(&mut |_p| count += 1)
                    .await
                    .expect("read");
                assert_eq!(count, n);
            })
        }));
        runs[2].push(measure(slapd, false, || {
            rt.block_on(async {
                let read = LdapDirectory::new(config(slapd, true))
                    .read(None)
                    .await
                    .expect("read");
                assert_eq!(read.people.len(), n);
            })
        }));
    }
    eprintln!(
        "{n} users, {rounds} interleaved rounds: wall median [min–max], ratio of medians to ldapsearch (median of per-round ratios), CPU medians"
    );
    let base = median(runs[0].iter().map(|r| r.wall).collect());
    for (i, name) in names.iter().enumerate() {
        let walls: Vec<f64> = runs[i].iter().map(|r| r.wall).collect();
        let (lo, hi) = walls
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), &w| (lo.min(w), hi.max(w)));
        let per_round = median(
            runs[i]
                .iter()
                .zip(&runs[0])
                .map(|(r, b)| r.wall / b.wall)
                .collect(),
        );
        let m = median(walls);
        eprintln!(
            "  {name:44} {m:.3} s [{lo:.3}–{hi:.3}]  {:.2}× ({per_round:.2}×)  client CPU {:.2} s, slapd CPU {:.2} s",
            m / base,
            median(runs[i].iter().map(|r| r.client_cpu).collect()),
            median(runs[i].iter().map(|r| r.server_cpu).collect()),
        );
    }
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

    let rounds = std::env::var("ROLLCALL_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if std::env::args().any(|a| a == "--bench") {
            11
        } else {
            1
        });
    interleaved(&slapd, &rt, n, rounds);
    if std::env::var_os("ROLLCALL_BENCH_NO_CRITERION").is_some() {
        return;
    }

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
