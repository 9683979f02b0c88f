//! Benchmarks of rollcall's own work, beside a baseline run side by side (see BENCHMARKS.md):
//! - mapping + planning 1,000 clients × 100 people (first run and no-change resync), against a
//!   baseline that only walks the same people once;
//! - pulling and mapping 100,000 people from a CSV export, against the `csv` crate reading the
//!   same file into raw records.
//!
//! - a no-change resync of one client with 1,000 people over real HTTP against the ConnectWise
//!   sandbox, against a naive full push that rewrites every contact and addition each run; the
//!   requests and writes each makes are printed (the vendors' API budget is the real limit).
//!
//! `cargo bench --bench sync`

use std::hint::black_box;

use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rollcall::config;
use rollcall::mapping::desired_state;
use rollcall::plan::Desired;
use rollcall_core::{AccountRef, ActualAddition, ActualContact, ClientState, DirectoryRead};

mod common;

use common::{PIPELINE, csv_export, map_and_plan, nothing_billed, person, pipeline};

/// The billing state a perfect apply of `desired` leaves behind.
fn state_matching(desired: &Desired) -> ClientState {
    ClientState {
        account: AccountRef {
            company_id: "1".into(),
            agreement_id: Some("1".into()),
        },
        invoice: None,
        contacts: desired
            .contacts
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, (_, f))| ActualContact {
                id: i.to_string(),
                fields: f.clone(),
                active: true,
                marked: true,
            })
            .collect(),
        additions: desired
            .additions
            .iter()
            .enumerate()
            .map(|(i, (id, a))| ActualAddition {
                id: i.to_string(),
                product: id.clone(),
                fields: a.fields.clone(),
                marked: true,
            })
            .collect(),
    }
}

/// The full sizes under `cargo bench`; a fiftieth under `cargo test --all-targets`, which only
/// checks that each benchmark still runs (in a debug build the full sizes take minutes).
fn size(full: usize) -> usize {
    if std::env::args().any(|a| a == "--bench") {
        full
    } else {
        (full / 50).max(1)
    }
}

fn plan_1000_clients(c: &mut Criterion) {
    let p = pipeline();
    let client = &p.clients[0];
    let reads: Vec<DirectoryRead> = (0..size(1000))
        .map(|k| DirectoryRead::complete((0..100).map(|i| person(k, i)).collect()))
        .collect();
    let empty = nothing_billed();
    let matching: Vec<ClientState> = reads
        .iter()
        .map(|r| {
            state_matching(
                &desired_state(
                    &client.name,
                    &client.rules,
                    &p.templates,
                    p.currency,
                    None,
                    r,
                    &rollcall::mapping::Grace::default(),
                )
                .expect("map"),
            )
        })
        .collect();

    let mut g = c.benchmark_group("plan 1000 clients x 100 people");
    g.sample_size(10).throughput(Throughput::Elements(100_000));
    g.bench_function("baseline: walk every person once", |b| {
        b.iter(|| {
            reads
                .iter()
                .flat_map(|r| &r.people)
                .filter(|p| black_box(p).enabled)
                .count()
        })
    });
    g.bench_function("map + plan + guard, first run", |b| {
        b.iter(|| {
            reads
                .iter()
                .map(|r| map_and_plan(&p, r, &empty))
                .sum::<usize>()
        })
    });
    g.bench_function("map + plan + guard, no-change resync", |b| {
        b.iter(|| {
            let n: usize = reads
                .iter()
                .zip(&matching)
                .map(|(r, a)| map_and_plan(&p, r, a))
                .sum();
            assert_eq!(n, 0, "a no-change resync plans nothing");
            n
        })
    });
    g.finish();
}

fn pull_100k_from_csv(c: &mut Criterion) {
    let bytes = csv_export(size(100_000));
    let p = pipeline();
    let client = &p.clients[0];
    let now = Utc::now();

    let mut g = c.benchmark_group("pull 100k people from a CSV export");
    g.sample_size(10).throughput(Throughput::Elements(100_000));
    g.bench_function("baseline: csv crate, raw records", |b| {
        b.iter(|| {
            let mut r = ::csv::Reader::from_reader(bytes.as_slice());
            let mut rec = ::csv::ByteRecord::new();
            let mut n = 0;
            while r.read_byte_record(&mut rec).expect("csv") {
                n += rec.len();
            }
            n
        })
    });
    g.bench_function("rollcall: parse into people", |b| {
        b.iter(|| {
            rollcall_file::parse_csv(&bytes, "bench.csv", now)
                .expect("parse")
                .people
                .len()
        })
    });
    g.bench_function("rollcall: parse + map to desired state", |b| {
        b.iter(|| {
            let read = rollcall_file::parse_csv(&bytes, "bench.csv", now).expect("parse");
            desired_state(
                &client.name,
                &client.rules,
                &p.templates,
                p.currency,
                None,
                &read,
                &rollcall::mapping::Grace::default(),
            )
            .expect("map")
            .additions
            .len()
        })
    });
    g.finish();
}

fn resync_over_http(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let sandbox = rt.block_on(rollcall_connectwise::Sandbox::start(
        rollcall_connectwise::Seed::demo(),
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = PIPELINE
        .replace("http://127.0.0.1:9", &sandbox.url())
        .replace("company_id: x,", "company_id: demo,")
        .replace("${X:-x}", "${X:-demo-public}")
        .replace("${Y:-y}", "${Y:-demo-private}")
        .replace(
            "client_id: z",
            "client_id: 00000000-0000-4000-8000-000000000000, rate_limit_per_second: 100000",
        )
        .replace(
            "company: X, agreement: A",
            "company: ACME, agreement: Managed Services",
        );
    let mut csv = String::from("id,given_name,surname,email,enabled,groups\n");
    for i in 0..size(1000) {
        csv.push_str(&format!(
            "id-{i},Given{i},Sur{i},user{i}@acme.example,true,M365 Users\n"
        ));
    }
    std::fs::write(dir.path().join("x.csv"), csv).expect("people");
    let path = dir.path().join("bench.yaml");
    std::fs::write(&path, yaml).expect("pipeline");
    let p = config::load(&path).expect("pipeline");
    let store = rt
        .block_on(rollcall::store::Store::open(&dir.path().join("state.db")))
        .expect("store");
    let sync = || async {
        let plan = rollcall::engine::plan(&p, &store, None, false)
            .await
            .expect("plan");
        assert!(
            plan.clients.iter().all(|c| c.failure.is_none()),
            "{:?}",
            plan.clients
        );
        rollcall::engine::apply(&store, &p, &plan, "bench", false)
            .await
            .expect("apply");
        plan.changes.len()
    };
    let (r0, w0) = (sandbox.requests(), sandbox.write_requests());
    let first = rt.block_on(sync());
    let (r1, w1) = (sandbox.requests(), sandbox.write_requests());
    rt.block_on(sync());
    let (r2, w2) = (sandbox.requests(), sandbox.write_requests());
    let billing = p
        .target
        .build(&rollcall_core::BuildContext::in_memory())
        .expect("client");
    let account = p.clients[0].account.clone();
    let products: Vec<String> = p.products.iter().map(|x| x.identifier.clone()).collect();
    // The baseline: read once, then rewrite everything, as a sync without a planner would.
    let naive = || async {
        let state = billing.read(&account, &products).await.expect("read");
        for contact in &state.contacts {
            let change = rollcall_core::Change::UpdateContact {
                id: contact.id.clone(),
                key: contact.fields.key(),
                before: Box::new(rollcall_core::ContactFields::default()),
                after: Box::new(contact.fields.clone()),
            };
            billing
                .apply(&state.account, &change)
                .await
                .expect("push contact");
        }
        for addition in &state.additions {
            let mut before = addition.fields.clone();
            before.quantity += 1;
            before.invoice_description.clear();
            let change = rollcall_core::Change::UpdateAddition {
                id: addition.id.clone(),
                product: addition.product.clone(),
                before: Box::new(before),
                after: Box::new(addition.fields.clone()),
            };
            billing
                .apply(&state.account, &change)
                .await
                .expect("push addition");
        }
    };
    rt.block_on(naive());
    let (r3, w3) = (sandbox.requests(), sandbox.write_requests());
    eprintln!(
        "api budget, 1 client x 1000 people: first run {first} changes, {} requests, {} writes; \
         no-change resync {} requests, {} writes; naive full push {} requests, {} writes",
        r1 - r0,
        w1 - w0,
        r2 - r1,
        w2 - w1,
        r3 - r2,
        w3 - w2
    );

    let mut g = c.benchmark_group("resync 1 client x 1000 people over HTTP");
    g.sample_size(10);
    g.bench_function("baseline: naive full push", |b| {
        b.iter(|| rt.block_on(naive()))
    });
    g.bench_function("rollcall: no-change resync (read, plan, apply)", |b| {
        b.iter(|| assert_eq!(rt.block_on(sync()), 0))
    });
    g.finish();
}

criterion_group!(
    benches,
    plan_1000_clients,
    pull_100k_from_csv,
    resync_over_http
);
criterion_main!(benches);
