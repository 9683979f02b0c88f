//! Ordinary bad data and a lost store, through the `rollcall` executable against the
//! ConnectWise sandbox: a name longer than ConnectWise stores, a record ConnectWise refuses,
//! and a store deleted or replaced after a run. None of them may stop or freeze a client's
//! billing (docs/limits.md).

use std::path::Path;
use std::process::{Command, Output};

use crate::support::{World, people_csv, printed, rollcall_bin};

/// `rollcall ARGS PIPELINE` with the store at `store`; its exit code and everything it printed.
fn rollcall(w: &World, store: &Path, args: &[&str]) -> (Option<i32>, String) {
    rollcall_on(&w.pipeline_path(), store, args)
}

/// [`rollcall`] with another pipeline file.
fn rollcall_on(pipeline: &Path, store: &Path, args: &[&str]) -> (Option<i32>, String) {
    let o: Output = Command::new(rollcall_bin())
        .args(args)
        .arg(pipeline)
        .env("ROLLCALL_STORE", store)
        .env_remove("RUST_LOG")
        .output()
        .expect("run rollcall");
    (o.status.code(), printed(&o))
}

async fn contact(w: &World, email: &str) -> Option<rollcall_core::ActualContact> {
    w.state()
        .await
        .contacts
        .into_iter()
        .find(|c| c.fields.email.as_deref() == Some(email))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forty_character_first_name_is_shortened_and_every_seat_is_billed() {
    let long = "Alexandrina-Konstantina Maximiliana Wolf";
    assert_eq!(long.chars().count(), 40);
    let w = World::new(&people_csv(6, 4).replace("Given1,", &format!("{long},"))).await;
    let store = w.store();

    let (code, out) = rollcall(&w, &store, &["plan"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("first name") && out.contains("shortened"),
        "the plan says what it cut: {out}"
    );
    let (code, out) = rollcall(&w, &store, &["run"]);
    assert_eq!(code, Some(0), "{out}");

    assert_eq!(w.quantity("M365-BP").await, Some(4));
    assert_eq!(w.quantity("HELPDESK-USER").await, Some(6));
    let written = contact(&w, "user1@acme.example").await.expect("contact");
    assert_eq!(written.fields.first_name, &long[..30]);
    assert_eq!(w.state().await.contacts.len(), 6);

    // What ConnectWise holds is what was planned: nothing to change next time.
    let (code, out) = rollcall(&w, &store, &["plan"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("No changes"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_connectwise_refuses_is_skipped_and_the_client_is_still_billed() {
    // ConnectWise refuses an email address with a space in it: a 400 for that one contact.
    let bad = "bad address@acme.example";
    let people = |n, m365| people_csv(n, m365).replace("user2@acme.example", bad);
    let w = World::new(&people(6, 4)).await;
    let store = w.store();

    let (code, out) = rollcall(&w, &store, &["run"]);
    assert_eq!(
        code,
        Some(3),
        "a partial failure is a remote failure: {out}"
    );
    assert!(out.contains(bad), "the refused contact is named: {out}");
    // Seats come from the directory: the person whose contact failed is billed too.
    assert_eq!(w.quantity("M365-BP").await, Some(4));
    assert_eq!(w.quantity("HELPDESK-USER").await, Some(6));
    assert_eq!(w.state().await.contacts.len(), 5, "the others are written");

    // The next run is not stuck behind it: a newcomer is billed and gets a contact.
    w.set_people(&people(7, 5));
    let (code, out) = rollcall(&w, &store, &["run"]);
    assert_eq!(code, Some(3), "{out}");
    assert_eq!(w.quantity("M365-BP").await, Some(5));
    assert_eq!(w.quantity("HELPDESK-USER").await, Some(7));
    assert!(contact(&w, "user6@acme.example").await.is_some());

    // Fixed in the directory, it is written and the run is clean again.
    w.set_people(&people_csv(7, 5));
    let (code, out) = rollcall(&w, &store, &["run"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(w.state().await.contacts.len(), 7);
    assert_eq!(w.quantity("HELPDESK-USER").await, Some(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_or_new_store_still_removes_a_leavers_seat() {
    let w = World::new(&people_csv(6, 6)).await;
    // A contact someone at the MSP keeps by hand: no store ever knew it, no mark is on it.
    let company: i64 = w
        .state()
        .await
        .account
        .company_id
        .parse()
        .expect("company id");
    let kim = w
        .by_hand(
            "company/contacts",
            serde_json::json!({
                "firstName": "Kim", "lastName": "Vendor", "company": { "id": company },
                "communicationItems": [{ "type": { "name": "Email" }, "value": "kim@vendor.example" }],
            }),
        )
        .await;
    let store = w.store();
    let (code, out) = rollcall(&w, &store, &["run"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(w.quantity("M365-BP").await, Some(6));

    // The store is deleted (with SQLite's journal files), then one person leaves.
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", store.display()));
    }
    w.set_people(&people_csv(5, 5));
    let (code, out) = rollcall(&w, &store, &["run"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        w.quantity("M365-BP").await,
        Some(5),
        "billing did not freeze"
    );
    assert_eq!(w.quantity("HELPDESK-USER").await, Some(5));
    let gone = contact(&w, "user5@acme.example").await.expect("kept");
    assert!(!gone.active, "the leaver's contact is deactivated");

    // Another store altogether (a new machine), and another leaver.
    let fresh = w.dir.path().join("fresh.db");
    w.set_people(&people_csv(4, 4));
    let (code, out) = rollcall(&w, &fresh, &["run"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(w.quantity("M365-BP").await, Some(4));
    let (code, out) = rollcall(&w, &fresh, &["plan"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("No changes"), "{out}");

    // Invariant 8 holds without a store: what was made by hand is never touched.
    let state = w.state().await;
    let kim = state
        .contacts
        .iter()
        .find(|c| c.id == kim.to_string())
        .expect("kim");
    assert!(kim.active && !kim.marked, "{kim:?}");
    assert_eq!(kim.fields.first_name, "Kim");
}

/// Two pipelines bill one ConnectWise company (seats in one, a licence in the other), as the
/// README's walk-through does: each marks what it makes with its own mark, so neither takes the
/// other's contacts or additions for its own, with the store or without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pipelines_billing_one_company_never_take_each_others_objects() {
    let w = World::new(&people_csv(4, 4)).await;
    let store = w.store();
    let (code, out) = rollcall(&w, &store, &["run"]);
    assert_eq!(code, Some(0), "{out}");

    let licences = w.dir.path().join("licences.yaml");
    std::fs::write(
        &licences,
        crate::support::PIPELINE
            .replace("name: e2e", "name: e2e-licences")
            .replace("SANDBOX_URL", &w.sandbox.url())
            .replace("identifier: M365-BP", "identifier: M365-E3")
            .replace(
                "  - id: helpdesk\n    identifier: HELPDESK-USER\n    unit_price: 35\n",
                "",
            )
            .replace("acme.csv", "licensed.csv"),
    )
    .expect("write the second pipeline");
    std::fs::write(
        w.dir.path().join("licensed.csv"),
        "id,given_name,surname,email,enabled,groups\n\
         lic-1,Lee,One,lee.one@acme.example,true,M365 Users\n\
         lic-2,Lou,Two,lou.two@acme.example,true,M365 Users\n",
    )
    .expect("write its people");
    let run_licences = |store: &Path| rollcall_on(&licences, store, &["run"]);
    let first_pipelines_contacts_stand = |state: &rollcall_core::ClientState| {
        for i in 0..4 {
            let email = format!("user{i}@acme.example");
            let c = state
                .contacts
                .iter()
                .find(|c| c.fields.email.as_deref() == Some(email.as_str()))
                .unwrap_or_else(|| panic!("{email} is gone"));
            assert!(c.active, "{email} was deactivated by the other pipeline");
        }
    };

    let (code, out) = run_licences(&store);
    assert_eq!(code, Some(0), "{out}");
    first_pipelines_contacts_stand(&w.state().await);
    assert_eq!(w.quantity("M365-E3").await, Some(2));
    assert_eq!(w.quantity("M365-BP").await, Some(4));

    // Without the store, the marks alone tell each pipeline's objects apart.
    let fresh = w.dir.path().join("fresh.db");
    let (code, out) = run_licences(&fresh);
    assert_eq!(code, Some(0), "{out}");
    first_pipelines_contacts_stand(&w.state().await);
    assert_eq!(w.quantity("M365-BP").await, Some(4));
    let (code, out) = rollcall(&w, &fresh, &["plan"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("No changes"), "{out}");
}
