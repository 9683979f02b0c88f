//! Reading a large tenant through Graph, against the sandbox over real HTTP on 127.0.0.1:
//! a full read of 50,000 users (a delta round's first, enumerating pass) and a delta read of
//! 100 changes. Before timing, each prints the requests it made against the fewest Graph's
//! paging allows: `ceil(users / 999)` user pages, `ceil(groups / 999)` group pages plus
//! `ceil(members / 999)` per group, one `/subscribedSkus`, and one token.
//!
//! Run: `cargo bench -p rollcall-graph --bench read`. Times include the sandbox's own work
//! (it serializes every page), so they bound the client's cost from above.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use rollcall_core::http::RetryPolicy;
use rollcall_core::{Cursor, Directory, DirectoryRead};
use rollcall_graph::sandbox::generated_user_id;
use rollcall_graph::{GraphDirectory, Sandbox, Seed};

/// 50,000 under `cargo bench`; a small tenant when `cargo test --all-targets` only checks that
/// the benchmark runs.
fn users() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        50_000
    } else {
        2_000
    }
}
/// `All Staff` (holding the departments, nested) and eight departments.
const GROUPS: usize = 9;
const CHANGES: usize = 100;
const PAGE: usize = 999;

fn pages(items: usize) -> usize {
    items.div_ceil(PAGE).max(1)
}

fn minimum_membership_requests(sandbox: &Sandbox) -> usize {
    let sizes = sandbox.group_sizes();
    pages(sizes.len()) + sizes.iter().map(|(_, n)| pages(*n)).sum::<usize>()
}

async fn read(directory: &GraphDirectory, cursor: Option<&Cursor>) -> DirectoryRead {
    match directory.read(cursor).await {
        Ok(read) => read,
        Err(error) => panic!("the read failed: {error}"),
    }
}

fn bench(c: &mut Criterion) {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => panic!("no tokio runtime: {error}"),
    };
    let n_users = users();
    let sandbox = runtime.block_on(Sandbox::start(Seed::generated(n_users, GROUPS)));
    let directory = match GraphDirectory::with_retry(&sandbox.config(), RetryPolicy::default()) {
        Ok(directory) => directory,
        Err(error) => panic!("no directory: {error}"),
    };

    // --- Full read: requests made versus the minimum.
    sandbox.reset_counters();
    let first = runtime.block_on(read(&directory, None));
    assert_eq!(first.people.len(), users());
    let membership = minimum_membership_requests(&sandbox);
    let minimum = 1 + pages(users()) + membership + 1;
    println!(
        "full read of {n_users} users, {GROUPS} groups: {} requests (token {}, users {}, groups {}, \
         skus {}); minimum {minimum} (token 1, users {}, groups {membership}, skus 1)",
        sandbox.requests(""),
        sandbox.token_requests(),
        sandbox.requests("/users"),
        sandbox.requests("/groups"),
        sandbox.requests("/subscribedSkus"),
        pages(users()),
    );
    let Some(cursor) = first.cursor else {
        panic!("a delta read leaves a cursor");
    };
    let snapshot_bytes = serde_json::to_vec(&cursor).map_or(0, |v| v.len());
    println!("cursor (delta link + snapshot of {n_users} users): {snapshot_bytes} bytes of JSON");

    let mut group = c.benchmark_group("graph");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    group.bench_function("full read, 50k users", |b| {
        b.iter(|| runtime.block_on(read(&directory, None)));
    });

    // --- Delta read of 100 changes: the same round is replayed from the same cursor.
    for i in 0..CHANGES {
        let id = generated_user_id(i * (users() / CHANGES));
        sandbox.update_user(&id, |u| {
            u.job_title = Some(Some("Promoted".to_owned()));
        });
    }
    sandbox.reset_counters();
    let delta = runtime.block_on(read(&directory, Some(&cursor)));
    assert_eq!(delta.people.len(), users());
    assert_eq!(
        delta
            .people
            .iter()
            .filter(|p| p.attributes.get("jobTitle").map(String::as_str) == Some("Promoted"))
            .count(),
        CHANGES
    );
    let minimum = pages(CHANGES) + membership + 1;
    println!(
        "delta read of {CHANGES} changes: {} requests (token {}, user changes {}, groups {}, \
         skus {}); minimum {minimum} with a cached token (user changes {}, groups {membership}, \
         skus 1)",
        sandbox.requests(""),
        sandbox.token_requests(),
        sandbox.requests("/users"),
        sandbox.requests("/groups"),
        sandbox.requests("/subscribedSkus"),
        pages(CHANGES),
    );
    group.bench_function("delta read, 100 changes of 50k", |b| {
        b.iter(|| runtime.block_on(read(&directory, Some(&cursor))));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
