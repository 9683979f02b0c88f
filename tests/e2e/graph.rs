//! An Entra ID (Microsoft Graph) pipeline billing licences into ConnectWise, end to end over
//! real HTTP against both sandboxes: `mappings/examples/m365-licences.yaml` itself.

use rollcall::engine::{self, Verdict};
use rollcall::store::Store;

const ADA: &str = "00000000-0000-4000-a000-000000000001";
const ALAN: &str = "00000000-0000-4000-a000-000000000002";

struct Both {
    graph: rollcall_graph::Sandbox,
    cw: rollcall_connectwise::Sandbox,
    _dir: tempfile::TempDir,
    pipeline: rollcall::config::Pipeline,
    store: Store,
}

async fn both() -> Both {
    let graph = rollcall_graph::Sandbox::start(rollcall_graph::Seed::demo()).await;
    let cw = rollcall_connectwise::Sandbox::start(rollcall_connectwise::Seed::demo()).await;
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/mappings/examples/m365-licences.yaml"
    ))
    .expect("example");
    let yaml = example
        .replace("http://127.0.0.1:8421/v4_6_release/apis/3.0", &cw.url())
        .replace(
            "login_url: http://127.0.0.1:8431",
            &format!("login_url: {}", graph.login_url()),
        )
        .replace(
            "graph_url: http://127.0.0.1:8431",
            &format!("graph_url: {}\n        page_size: 2", graph.url()),
        );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m365.yaml");
    std::fs::write(&path, yaml).expect("write");
    let pipeline = rollcall::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(&dir.path().join("state.db"))
        .await
        .expect("store");
    Both {
        graph,
        cw,
        _dir: dir,
        pipeline,
        store,
    }
}

async fn seats(b: &Both, client: &str) -> u32 {
    let billing = b
        .pipeline
        .target
        .build(&rollcall_core::BuildContext::in_memory())
        .expect("client");
    let account = &b.pipeline.client(client).expect("client").account;
    let state = billing
        .read(account, &["M365-BP".to_owned()])
        .await
        .expect("read");
    state
        .additions
        .first()
        .map(|a| a.fields.quantity)
        .unwrap_or(0)
}

#[tokio::test]
async fn licences_from_entra_id_are_billed_per_seat_and_follow_changes_by_delta() {
    let b = both().await;
    let plan = engine::plan(&b.pipeline, &b.store, None, false)
        .await
        .expect("plan");
    assert_eq!(Verdict::of_plan(&plan), Verdict::Ok, "{:?}", plan.clients);
    let outcomes = rollcall::engine::apply(&b.store, &b.pipeline, &plan, "test", false)
        .await
        .expect("apply");
    assert_eq!(Verdict::of_outcomes(&outcomes), Verdict::Ok, "{outcomes:?}");
    assert_eq!(
        seats(&b, "Acme").await,
        4,
        "Ada, Alan, Grace and Barbara hold SPB"
    );
    assert_eq!(seats(&b, "Globex").await, 3);
    let state = b.cw.state();
    let acme_line = state
        .additions
        .iter()
        .find(|a| {
            a.invoice_description
                .as_deref()
                .is_some_and(|d| d.contains("Ada Lovelace"))
        })
        .expect("acme line");
    assert_eq!(
        acme_line.unit_price.map(|p| p.to_string()).as_deref(),
        Some("23.00"),
        "20.00 + 15%"
    );

    // Ada's licence is removed in Entra: the next run reads only the change.
    assert!(b.graph.remove_license(ADA, "SPB"));
    b.graph.reset_counters();
    let plan = engine::plan(&b.pipeline, &b.store, Some("Acme"), false)
        .await
        .expect("plan");
    assert_eq!(
        b.graph.requests("/v1.0/users/delta"),
        1,
        "one delta request, not a full read: {:?}",
        b.graph.request_log()
    );
    assert_eq!(b.graph.requests("/v1.0/users?"), 0, "no full user read");
    rollcall::engine::apply(&b.store, &b.pipeline, &plan, "test", false)
        .await
        .expect("apply");
    assert_eq!(seats(&b, "Acme").await, 3);
    let run = b
        .store
        .reports("m365-licences")
        .await
        .expect("runs")
        .pop()
        .expect("recorded");
    let html = rollcall::cli::render_report(
        &b.store,
        &run.run_id,
        rollcall::cli::ReportFormat::Html,
        None,
    )
    .await
    .expect("the example's run renders");
    assert!(
        html.contains("(M365-BP)") && html.contains("Grace Hopper"),
        "the product and the people billed"
    );
}

#[tokio::test]
async fn a_graph_read_cut_off_part_way_lowers_nothing() {
    let b = both().await;
    let plan = engine::plan(&b.pipeline, &b.store, None, false)
        .await
        .expect("plan");
    rollcall::engine::apply(&b.store, &b.pipeline, &plan, "test", false)
        .await
        .expect("apply");
    assert_eq!(seats(&b, "Acme").await, 4);

    // Ada and Alan lose their licences, and Graph drops the connection before the changes arrive.
    assert!(b.graph.remove_license(ALAN, "SPB"));
    assert!(b.graph.remove_license(ADA, "SPB"));
    b.graph.cut_after("/v1.0/users", 0);
    let writes = b.cw.write_requests();
    let plan = engine::plan(&b.pipeline, &b.store, Some("Acme"), false)
        .await
        .expect("plan");
    let acme = &plan.clients[0];
    assert!(
        acme.completeness.as_ref().is_some_and(|c| !c.is_complete()) || acme.failure.is_some(),
        "a cut-off read is never complete: {acme:?}"
    );
    rollcall::engine::apply(&b.store, &b.pipeline, &plan, "test", false)
        .await
        .expect("apply");
    assert_eq!(
        seats(&b, "Acme").await,
        4,
        "nothing lowered on a cut-off read"
    );
    assert_eq!(b.cw.write_requests(), writes, "nothing written");

    // Once Graph answers in full again, the drop goes through.
    b.graph.clear_faults();
    let plan = engine::plan(&b.pipeline, &b.store, Some("Acme"), true)
        .await
        .expect("plan");
    rollcall::engine::apply(&b.store, &b.pipeline, &plan, "test", false)
        .await
        .expect("apply");
    assert_eq!(seats(&b, "Acme").await, 2);
}

#[tokio::test]
async fn purchased_licences_are_billed_from_subscribed_skus() {
    let b = both().await;
    let path = b._dir.path().join("purchased.yaml");
    let yaml = std::fs::read_to_string(b._dir.path().join("m365.yaml"))
        .expect("read")
        .replace("count: licenses", "count: purchased");
    std::fs::write(&path, yaml).expect("write");
    let pipeline = rollcall::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let plan = engine::plan(&pipeline, &b.store, Some("Acme"), false)
        .await
        .expect("plan");
    let seats = plan.clients[0]
        .seats
        .iter()
        .find(|s| s.identifier == "M365-BP")
        .expect("m365");
    assert_eq!(
        seats.quantity, 25,
        "the demo tenant bought 25 SPB, 4 of them assigned in Acme Staff"
    );
    assert_eq!(seats.people.len(), 4);
}

/// Entra ID tells `rollcall serve` about a change through the subscription `subscribe` made,
/// and the tenant's clients are synced: no schedule, no hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_in_entra_id_reaches_serve_through_its_subscription_and_is_synced() {
    use rollcall::queue::worker::WorkerOptions;
    use rollcall::queue::{Liveness, Queue, QueueLocation};
    use rollcall::web::{Secrets, Service, ServiceParts, subscribe};
    use rollcall_core::Secret;
    use std::sync::Arc;
    use std::time::Duration;

    const STATE: &str = "client-state-for-tests";
    let b = both().await;
    let pipelines = vec![Arc::new(
        rollcall::config::load(&b._dir.path().join("m365.yaml")).unwrap_or_else(|e| panic!("{e}")),
    )];
    let parts = ServiceParts {
        pipelines: pipelines.clone(),
        store: b.store.clone(),
        queue: Queue::open(
            &QueueLocation::Sqlite(b._dir.path().join("queue.db")),
            Liveness::default(),
        )
        .await
        .expect("queue"),
        secrets: Secrets::default().with("ROLLCALL_GRAPH_CLIENT_STATE", Secret::new(STATE)),
        debounce: Duration::from_millis(300),
        metrics: Arc::default(),
        public_url: None,
    };
    let service = Service::start(parts, Some(WorkerOptions::default()))
        .await
        .expect("service");
    let url = crate::support::serve_on_loopback(&service).await;

    // Three clients share one tenant: one subscription on users and one on groups, made
    // through the handshake against the running service.
    let results = subscribe::ensure_all(
        &pipelines,
        &url,
        &Secret::new(STATE),
        subscribe::RENEW_BEFORE,
    )
    .await;
    assert!(subscribe::all_ok(&results), "{results:?}");
    assert_eq!(results.len(), 1, "one tenant");
    assert_eq!(results[0].clients.len(), 3);
    assert_eq!(b.graph.subscriptions().len(), 2);
    service.remember_subscriptions(&results);
    let again = subscribe::ensure_all(
        &pipelines,
        &url,
        &Secret::new(STATE),
        subscribe::RENEW_BEFORE,
    )
    .await;
    let actions: Vec<String> = again[0]
        .states
        .as_ref()
        .expect("listed")
        .iter()
        .map(|s| s.action.clone())
        .collect();
    assert_eq!(actions, ["fresh", "fresh"], "a second run writes nothing");

    // Ada loses her licence in Entra: Graph notifies, the service syncs the tenant's clients.
    assert!(b.graph.remove_license(ADA, "SPB"));
    for _ in 0..300 {
        if service.syncs() >= 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        b.graph.notifications_delivered() >= 1,
        "the sandbox notified the service"
    );
    assert_eq!(
        service.syncs(),
        3.0,
        "the tenant's three clients, once each"
    );
    assert_eq!(seats(&b, "Acme").await, 3, "Ada's seat is gone");
}

/// Three clients of one tenant are read as one: the users, the group list and the SKUs once per
/// run, and only the groups their rules name (`Service Accounts`) or scope by (each client's
/// staff group), each once — the paging lower bound. Before, each client read every group's
/// members, the tenant's users and its SKUs again: about three times as many requests.
#[tokio::test]
async fn three_clients_of_one_tenant_cost_the_paging_lower_bound_of_graph_requests() {
    let b = both().await;
    b.graph.reset_counters();
    let plan = engine::plan(&b.pipeline, &b.store, None, false)
        .await
        .expect("plan");
    assert_eq!(Verdict::of_plan(&plan), Verdict::Ok, "{:?}", plan.clients);
    assert_eq!(plan.clients.len(), 3);

    // The example's page size is set to 2 above, so every collection pages.
    let pages = |items: usize| items.div_ceil(2).max(1);
    let sizes = b.graph.group_sizes();
    let read: usize = sizes
        .iter()
        .filter(|(name, _)| {
            [
                "Acme Staff",
                "Globex Staff",
                "Initech Staff",
                "Service Accounts",
            ]
            .contains(&name.as_str())
        })
        .map(|(_, n)| pages(*n))
        .sum();
    let lower_bound = 1 // token
        + pages(b.graph.users().len()) // users, by delta
        + pages(sizes.len()) // the group list
        + read // the named groups' transitive members
        + 1; // subscribed SKUs
    let log = b.graph.request_log();
    let sent = b.graph.requests("");
    assert!(
        sent * 100 <= lower_bound * 105,
        "{sent} Graph requests for three clients of one tenant, against a lower bound of \
         {lower_bound}: {log:#?}"
    );
    assert_eq!(b.graph.token_requests(), 1, "{log:#?}");
    let all_staff = b.graph.group_id("All Staff").expect("group");
    assert_eq!(
        b.graph.requests(&format!("/v1.0/groups/{all_staff}")),
        0,
        "no rule names All Staff: {log:#?}"
    );
    println!("graph requests for three clients of one tenant: {sent} (lower bound {lower_bound})");
}
