//! Pending approvals through the `rollcall` executable against the ConnectWise sandbox: a
//! refused run keeps its exact plan for a person; approving applies that plan and no other; a
//! plan whose billing state moved is superseded, never applied blind; a rejection writes
//! nothing; the pipeline's `policy: approve:` holds reductions; expiry (docs/approvals.md).

use std::process::Command;

use serde_json::Value;

use crate::support::{World, people_csv, printed, rollcall_bin};

/// `yaml` with a tighter guard than the default 50 %: a fifth of the seats at most.
pub fn guarded(yaml: &str) -> String {
    yaml.replace(
        "clients:",
        "defaults:\n  guard:\n    max_seat_drop_percent: 20\nclients:",
    )
}

/// `rollcall ARGS` with the world's store; its exit code and everything it printed.
pub fn rollcall(w: &World, args: &[&str]) -> (Option<i32>, String) {
    let o = Command::new(rollcall_bin())
        .args(args)
        .env("ROLLCALL_STORE", w.store())
        .env("USER", "alice")
        .env_remove("RUST_LOG")
        .output()
        .expect("run rollcall");
    (o.status.code(), printed(&o))
}

/// `rollcall run PIPELINE`.
pub fn run(w: &World) -> (Option<i32>, String) {
    let file = w.pipeline_path();
    rollcall(w, &["run", file.to_str().expect("utf-8")])
}

/// Every approval, as `rollcall approvals --output json` lists them (newest first).
pub fn approvals(w: &World) -> Vec<Value> {
    let o = Command::new(rollcall_bin())
        .args(["approvals", "--output", "json"])
        .env("ROLLCALL_STORE", w.store())
        .env_remove("RUST_LOG")
        .output()
        .expect("run rollcall");
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    serde_json::from_slice::<Value>(&o.stdout)
        .expect("json")
        .as_array()
        .expect("array")
        .clone()
}

/// The id a refused run printed.
pub fn printed_id(out: &str) -> String {
    out.lines()
        .find_map(|l| {
            l.strip_prefix("approval ")
                .filter(|rest| rest.contains(" pending for client "))
                .and_then(|rest| rest.split_whitespace().next())
        })
        .unwrap_or_else(|| panic!("no approval id printed: {out}"))
        .to_owned()
}

/// Four people with M365 and helpdesk seats, billed; then three of them leave the M365 group,
/// a drop (3 of 8 seats) the default guard refuses.
async fn billed_then_refused() -> (World, String) {
    let w = World::with_pipeline(&guarded(crate::support::PIPELINE), &people_csv(4, 4)).await;
    let (code, out) = run(&w);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(w.quantity("M365-BP").await, Some(4));
    w.set_people(&people_csv(4, 1));
    let (code, out) = run(&w);
    assert_eq!(code, Some(2), "a refused run still exits 2: {out}");
    let id = printed_id(&out);
    assert_eq!(w.quantity("M365-BP").await, Some(4), "nothing written");
    (w, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_run_keeps_one_pending_approval_and_approving_applies_exactly_that_plan() {
    let (w, id) = billed_then_refused().await;
    let listed = approvals(&w);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let a = &listed[0];
    assert_eq!(a["id"], id.as_str());
    assert_eq!(a["client"], "Acme");
    assert_eq!(a["state"], "pending");
    assert_eq!(a["pipeline"], "e2e");
    assert!(
        a["reason"]
            .as_str()
            .expect("reason")
            .contains("removes 3 of 8 seats"),
        "{a}"
    );
    assert_eq!(a["trigger"], "rollcall run by alice");
    assert!(
        a["created"].as_str().expect("created").ends_with('Z'),
        "{a}"
    );
    assert_eq!(
        (a["seats_before"].as_u64(), a["seats_after"].as_u64()),
        (Some(8), Some(5))
    );
    // Four M365 seats at 22.00 and four helpdesk seats at 35 before; one M365 seat after.
    assert_eq!(a["amount_before"].as_str(), Some("228.00"), "{a}");
    assert_eq!(a["amount_after"].as_str(), Some("162.00"), "{a}");
    assert_eq!(a["currency"], "USD");

    // The same refused plan again (a schedule, a second run) keeps its one approval.
    let (code, out) = run(&w);
    assert_eq!(code, Some(2), "{out}");
    assert_eq!(printed_id(&out), id);
    assert_eq!(approvals(&w).len(), 1);

    // The directory moves on before anyone approves; the billing system does not. What is
    // approved is the plan the person saw (one M365 seat), not a new one (two).
    w.set_people(&people_csv(4, 2));
    let (code, out) = rollcall(&w, &["approve", &id[..8], "--yes"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("approved and applied"), "{out}");
    assert_eq!(w.quantity("M365-BP").await, Some(1));
    assert_eq!(w.quantity("HELPDESK-USER").await, Some(4));
    let a = &approvals(&w)[0];
    assert_eq!(a["state"], "approved");
    assert_eq!(a["decided_by"], "alice");
    let run_id = a["applied_run"].as_str().expect("applied run");
    let (code, report) = rollcall(&w, &["report", run_id, "--format", "json"]);
    assert_eq!(code, Some(0), "{report}");

    // Approved once: never again.
    let (code, out) = rollcall(&w, &["approve", &id, "--yes"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("not pending"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_whose_billing_state_moved_is_superseded_and_not_applied() {
    let (w, id) = billed_then_refused().await;
    // Someone at the MSP adds a contact by hand: the plan was made from another state.
    w.by_hand(
        "company/contacts",
        serde_json::json!({
            "firstName": "Walk", "lastName": "In",
            "company": { "identifier": "ACME" }
        }),
    )
    .await;
    let writes = w.sandbox.write_requests();
    let (code, out) = rollcall(&w, &["approve", &id, "--yes"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("superseded"), "{out}");
    assert_eq!(w.sandbox.write_requests(), writes, "nothing written: {out}");
    assert_eq!(w.quantity("M365-BP").await, Some(4));

    let listed = approvals(&w);
    assert_eq!(listed.len(), 2, "{listed:?}");
    let old = listed.iter().find(|a| a["id"] == id.as_str()).expect("old");
    let new = listed.iter().find(|a| a["id"] != id.as_str()).expect("new");
    assert_eq!(old["state"], "superseded");
    assert_eq!(old["superseded_by"], new["id"]);
    assert_eq!(new["state"], "pending");
    assert!(
        new["reason"]
            .as_str()
            .expect("reason")
            .contains("went stale"),
        "{new}"
    );

    // The new plan is made from the state as it is now, and applies.
    let new_id = new["id"].as_str().expect("id").to_owned();
    let (code, out) = rollcall(&w, &["approve", &new_id, "--yes"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(w.quantity("M365-BP").await, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_approval_writes_nothing_and_cannot_be_approved() {
    let (w, id) = billed_then_refused().await;
    let (code, out) = rollcall(&w, &["reject", &id, "--reason", "the export was cut"]);
    assert_eq!(code, Some(0), "{out}");
    let a = &approvals(&w)[0];
    assert_eq!(a["state"], "rejected");
    assert_eq!(a["note"], "the export was cut");
    assert_eq!(a["decided_by"], "alice");
    let (code, out) = rollcall(&w, &["approve", &id, "--yes"]);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(w.quantity("M365-BP").await, Some(4));
    let (code, out) = rollcall(&w, &["reject", "nosuchid", "--reason", "x"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no approval has the id"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_refused_plan_supersedes_the_older_pending_one() {
    let (w, first) = billed_then_refused().await;
    w.set_people(&people_csv(4, 0));
    let (code, out) = run(&w);
    assert_eq!(code, Some(2), "{out}");
    let second = printed_id(&out);
    assert_ne!(first, second);
    let listed = approvals(&w);
    let old = listed
        .iter()
        .find(|a| a["id"] == first.as_str())
        .expect("old");
    assert_eq!(old["state"], "superseded");
    assert_eq!(old["superseded_by"], second.as_str());
    let (code, out) = rollcall(&w, &["approve", &first, "--yes"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&second), "points at the newer one: {out}");
    assert_eq!(w.quantity("M365-BP").await, Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reductions_policy_holds_every_reduction_and_lets_additions_through() {
    let yaml = guarded(crate::support::PIPELINE).replace(
        "clients:",
        "policy:\n  approve: reductions\n  approval_expires_days: 3\nclients:",
    );
    let w = World::with_pipeline(&yaml, &people_csv(4, 3)).await;
    let (code, out) = run(&w);
    assert_eq!(code, Some(0), "additions need no approval: {out}");
    assert_eq!(w.quantity("M365-BP").await, Some(3));
    assert!(approvals(&w).is_empty());

    // One seat of seven is within the guard, but it is a reduction.
    w.set_people(&people_csv(4, 2));
    let file = w.pipeline_path();
    let (code, out) = rollcall(&w, &["plan", file.to_str().expect("utf-8")]);
    assert_eq!(code, Some(2), "the plan shows the hold: {out}");
    let (code, out) = run(&w);
    assert_eq!(code, Some(2), "{out}");
    let id = printed_id(&out);
    assert_eq!(w.quantity("M365-BP").await, Some(3));
    let a = &approvals(&w)[0];
    assert!(
        a["reason"]
            .as_str()
            .expect("reason")
            .contains("every reduction"),
        "{a}"
    );
    let created =
        chrono::DateTime::parse_from_rfc3339(a["created"].as_str().expect("c")).expect("created");
    let expires =
        chrono::DateTime::parse_from_rfc3339(a["expires"].as_str().expect("e")).expect("expires");
    assert_eq!(expires - created, chrono::Duration::days(3));
    let (code, out) = rollcall(&w, &["approve", &id, "--yes"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(w.quantity("M365-BP").await, Some(2));

    // --allow-drop is about the guard, not the policy: a person still approves.
    w.set_people(&people_csv(4, 1));
    let (code, out) = rollcall(&w, &["run", "--allow-drop", file.to_str().expect("utf-8")]);
    assert_eq!(code, Some(2), "{out}");
    assert_eq!(w.quantity("M365-BP").await, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_approval_expires_and_then_cannot_be_approved() {
    let yaml = guarded(crate::support::PIPELINE)
        .replace("clients:", "policy:\n  approval_expires_days: 0\nclients:");
    let w = World::with_pipeline(&yaml, &people_csv(4, 4)).await;
    assert_eq!(run(&w).0, Some(0));
    w.set_people(&people_csv(4, 1));
    let (code, out) = run(&w);
    assert_eq!(code, Some(2), "{out}");
    let id = printed_id(&out);
    let a = &approvals(&w)[0];
    assert_eq!(a["state"], "expired", "{a}");
    let (code, out) = rollcall(&w, &["approve", &id, "--yes"]);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(w.quantity("M365-BP").await, Some(4));
}

/// A sync a queued job starts (a schedule's tick, a webhook) keeps its refusal the same way,
/// recording what triggered it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_from_a_webhook_job_is_kept_with_its_trigger() {
    let w = World::with_pipeline(&guarded(crate::support::PIPELINE), &people_csv(4, 4)).await;
    assert_eq!(run(&w).0, Some(0));
    w.set_people(&people_csv(4, 1));
    let engine = rollcall::engine::Engine::new(w.open_store().await)
        .await
        .expect("engine");
    let options = rollcall::engine::Options {
        command: "worker",
        trigger: Some("webhook (graph)"),
        ..Default::default()
    };
    let synced = engine
        .sync(&w.pipeline, Some("Acme"), &options)
        .await
        .expect("sync");
    assert_eq!(synced.verdict(), rollcall::engine::Verdict::Refused);
    assert_eq!(synced.approvals.len(), 1);
    let a = &approvals(&w)[0];
    assert_eq!(a["id"], synced.approvals[0].id.as_str());
    assert_eq!(a["trigger"], "webhook (graph)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_with_a_later_effective_day_is_applied_by_the_first_sync_on_that_day() {
    use rollcall::approvals::{Decided, approve};
    use rollcall::engine::{Engine, Options, Verdict};
    let (mut w, id) = billed_then_refused().await;
    let day = chrono::Utc::now().date_naive() + chrono::Days::new(3);
    let (code, out) = rollcall(&w, &["approve", &id, "--yes", "--effective", "31-12-2026"]);
    assert_eq!(code, Some(1), "{out}");
    let (code, out) = rollcall(
        &w,
        &["approve", &id, "--yes", "--effective", &day.to_string()],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("approved to take effect on"), "{out}");
    assert_eq!(
        w.quantity("M365-BP").await,
        Some(4),
        "nothing written before the day"
    );
    let a = &approvals(&w)[0];
    assert_eq!(a["state"], "pending");
    assert_eq!(a["effective"], day.to_string().as_str());
    assert_eq!(a["decided_by"], "alice");

    // A sync before the day finds the same plan and leaves it waiting.
    let engine = Engine::new(w.open_store().await).await.expect("engine");
    let synced = engine
        .sync(&w.pipeline, None, &Options::default())
        .await
        .expect("sync");
    assert_eq!(synced.verdict(), Verdict::Refused);
    assert_eq!(synced.approvals[0].id, id);
    assert_eq!(w.quantity("M365-BP").await, Some(4));

    // The first sync on the day applies it, as approved.
    w.pipeline.as_of = Some(chrono::Utc::now() + chrono::Duration::days(3));
    let synced = engine
        .sync(&w.pipeline, None, &Options::default())
        .await
        .expect("sync");
    assert_eq!(synced.verdict(), Verdict::Ok, "{:?}", synced.outcomes);
    assert!(synced.approvals.is_empty());
    assert_eq!(w.quantity("M365-BP").await, Some(1));
    let a = &approvals(&w)[0];
    assert_eq!(a["state"], "approved");
    assert!(a["applied_run"].is_string());

    // Through the library, as the console calls it: approved, nothing pending is left.
    let again = approve(&engine, &w.pipeline, &id, "bob", None, &Options::default()).await;
    assert!(
        matches!(
            again,
            Err(rollcall::approvals::ApprovalError::NotPending { .. })
        ),
        "{again:?}"
    );
    let (approval, plan) = rollcall::approvals::Approvals::open(&w.open_store().await)
        .await
        .expect("open")
        .get(&id)
        .await
        .expect("get");
    assert_eq!(approval.decided_by.as_deref(), Some("alice"));
    assert_eq!(plan.clients.len(), 1);
    assert!(plan.changes.iter().all(|c| &*c.client == "Acme"));
    assert!(!matches!(
        approve(&engine, &w.pipeline, "", "bob", None, &Options::default()).await,
        Ok(Decided::Applied { .. })
    ));
}
