//! Entra ID licences invoiced in Xero, end to end over HTTP against both sandboxes:
//! `mappings/examples/xero-graph.yaml` itself, with its OAuth tokens in rollcall's store.

use rollcall::engine::{self, Verdict};
use rollcall::store::Store;
use rollcall_core::oauth::TokenVault;

const ADA: &str = "00000000-0000-4000-a000-000000000001";

struct Both {
    graph: rollcall_graph::Sandbox,
    xero: rollcall_xero::Sandbox,
    _dir: tempfile::TempDir,
    pipeline: rollcall::config::Pipeline,
    store: Store,
}

async fn both() -> Both {
    let graph = rollcall_graph::Sandbox::start(rollcall_graph::Seed::demo()).await;
    let xero = rollcall_xero::Sandbox::start(rollcall_xero::Seed::demo()).await;
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/mappings/examples/xero-graph.yaml"
    ))
    .expect("example");
    let yaml = example
        .replace("http://127.0.0.1:8424", &xero.url())
        .replace(
            "login_url: http://127.0.0.1:8431",
            &format!("login_url: {}", graph.login_url()),
        )
        .replace(
            "graph_url: http://127.0.0.1:8431",
            &format!("graph_url: {}", graph.url()),
        );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m365-xero.yaml");
    std::fs::write(&path, yaml).expect("write");
    let mut pipeline = rollcall::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    pipeline.bill_day = chrono::NaiveDate::from_ymd_opt(2026, 11, 20);
    let store = Store::open(&dir.path().join("state.db"))
        .await
        .expect("store");
    store
        .save("m365-xero", &xero.connect())
        .await
        .expect("tokens");
    Both {
        graph,
        xero,
        _dir: dir,
        pipeline,
        store,
    }
}

async fn sync(b: &Both) -> rollcall::run::PipelinePlan {
    let plan = engine::plan(&b.pipeline, &b.store, None, false)
        .await
        .expect("plan");
    let outcomes = rollcall::engine::apply(&b.store, &b.pipeline, &plan, "test", false)
        .await
        .expect("apply");
    for o in &outcomes {
        assert_eq!(
            o.state,
            rollcall::apply::OutcomeState::Done,
            "{o:?}\n{}",
            rollcall::report::plan_text(&plan)
        );
    }
    plan
}

fn invoice(b: &Both, customer: &str) -> serde_json::Value {
    let reference = format!("rollcall {customer} 2026-11");
    let found: Vec<_> = b
        .xero
        .invoices()
        .into_iter()
        .filter(|i| i["Reference"] == reference.as_str())
        .collect();
    assert_eq!(found.len(), 1, "one invoice for {reference}: {found:?}");
    found.into_iter().next().expect("one")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn licences_become_draft_invoices_that_follow_the_directory_and_stop_at_approval() {
    let b = both().await;
    let first = sync(&b).await;
    assert!(
        first
            .changes
            .iter()
            .any(|c| c.change.kind() == "create_customer")
    );
    let acme = invoice(&b, "Acme Corporation");
    assert_eq!(acme["Status"], "DRAFT");
    assert_eq!(acme["Type"], "ACCREC");
    assert_eq!(acme["DateString"], "2026-11-01T00:00:00");
    assert!(
        acme["Date"].as_str().expect("date").starts_with("/Date("),
        "Microsoft JSON dates"
    );
    let line = &acme["LineItems"][0];
    assert_eq!(line["ItemCode"], "M365-BP");
    assert_eq!(line["UnitAmount"].to_string(), "23");
    assert_eq!(line["AccountCode"], "200");
    assert!(
        line["Description"]
            .as_str()
            .expect("text")
            .contains("Ada Lovelace")
    );
    let contact = b
        .xero
        .contacts()
        .into_iter()
        .find(|c| c["Name"] == "Acme Corporation")
        .expect("contact");
    assert_eq!(contact["EmailAddress"], "accounts@acme.example");

    // Nothing changed: nothing written.
    let writes = b.xero.controls().writes();
    assert!(sync(&b).await.changes.is_empty());
    assert_eq!(b.xero.controls().writes(), writes);

    // A licence removed in Entra ID lowers the draft in place.
    let before_qty = acme["LineItems"][0]["Quantity"].clone();
    assert!(b.graph.remove_license(ADA, "SPB"));
    let plan = sync(&b).await;
    assert!(
        plan.changes
            .iter()
            .all(|c| c.change.kind() == "update_invoice"),
        "{}",
        rollcall::report::plan_text(&plan)
    );
    let after = invoice(&b, "Acme Corporation");
    assert_eq!(after["InvoiceID"], acme["InvoiceID"]);
    assert_ne!(after["LineItems"][0]["Quantity"], before_qty);

    // Approved in Xero: left alone, reported.
    b.xero
        .authorise_invoice("rollcall Acme Corporation 2026-11");
    assert!(b.graph.assign_license(ADA, "SPB"));
    let writes = b.xero.controls().writes();
    let plan = engine::plan(&b.pipeline, &b.store, None, false)
        .await
        .expect("plan");
    assert_eq!(Verdict::of_plan(&plan), Verdict::Refused);
    let acme_plan = plan
        .clients
        .iter()
        .find(|c| c.client == "Acme")
        .expect("acme");
    assert!(
        acme_plan.conflicts[0].contains("AUTHORISED"),
        "{:?}",
        acme_plan.conflicts
    );
    rollcall::engine::apply(&b.store, &b.pipeline, &plan, "test", false)
        .await
        .expect("apply");
    assert_eq!(b.xero.controls().writes(), writes);
    assert_eq!(
        b.xero.controls().throttled(),
        0,
        "the client's own limiter keeps Xero from answering 429"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_replayed_by_its_idempotency_key_and_a_revoked_connection_asks_to_reconnect()
 {
    let b = both().await;
    b.xero.controls().drop_response_after_commit(10);
    let plan = engine::plan(&b.pipeline, &b.store, None, false)
        .await
        .expect("plan");
    let _ = rollcall::engine::apply(&b.store, &b.pipeline, &plan, "test", false)
        .await
        .expect("apply");
    sync(&b).await;
    for customer in ["Acme Corporation", "Globex Corporation", "Initech"] {
        invoice(&b, customer);
        assert_eq!(
            b.xero
                .contacts()
                .iter()
                .filter(|c| c["Name"] == customer)
                .count(),
            1,
            "{customer}"
        );
    }

    b.xero.expire_access_tokens();
    assert!(sync(&b).await.changes.is_empty());
    assert_eq!(b.xero.refreshes(), 1, "one refresh for the whole run");

    b.xero.revoke_all();
    let plan = engine::plan(&b.pipeline, &b.store, None, false)
        .await
        .expect("plan");
    assert_eq!(Verdict::of_plan(&plan), Verdict::Remote);
    for c in &plan.clients {
        let failure = c.failure.as_ref().expect("failed");
        assert!(
            failure.message.contains("rollcall connect"),
            "{}",
            failure.message
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_picks_the_organisation_from_connections_and_stores_the_tokens() {
    let b = both().await;
    let fresh = b._dir.path().join("fresh.db");
    let (consent, _) =
        crate::support::connect_through_cli(&b._dir.path().join("m365-xero.yaml"), &fresh).await;
    assert!(consent.contains("offline_access"), "{consent}");
    let store = Store::open(&fresh).await.expect("store");
    let tokens = store
        .load("m365-xero")
        .await
        .expect("load")
        .expect("stored");
    assert_eq!(tokens.tenant.as_deref(), Some(b.xero.tenant_id().as_str()));
    assert_eq!(b.xero.controls().throttled(), 0);
}
