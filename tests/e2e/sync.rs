//! Pipelines run end to end against the ConnectWise sandbox over real HTTP.

use rollcall::apply::OutcomeState;
use rollcall::engine::Verdict;
use rollcall::run::PipelinePlan;

use crate::support::{World, people_csv};

#[tokio::test]
async fn first_run_bills_everyone_and_a_resync_writes_nothing() {
    let w = World::new(&people_csv(12, 5)).await;
    let plan = w.plan(false).await;
    assert_eq!(Verdict::of_plan(&plan), Verdict::Ok);
    let kinds: Vec<&str> = plan.changes.iter().map(|c| c.change.kind()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "create_contact").count(), 12);
    assert_eq!(kinds.iter().filter(|k| **k == "create_addition").count(), 2);
    let outcomes = w.apply(&plan, false).await;
    assert_eq!(Verdict::of_outcomes(&outcomes), Verdict::Ok, "{outcomes:?}");
    assert_eq!(w.quantity("M365-BP").await, Some(5));
    assert_eq!(w.quantity("HELPDESK-USER").await, Some(12));

    let state = w.state().await;
    let m365 = state
        .additions
        .iter()
        .find(|a| a.product == "M365-BP")
        .expect("m365");
    assert_eq!(
        m365.fields.invoice_description,
        "M365 for Given0 Sur0, Given1 Sur1, Given2 Sur2, Given3 Sur3, Given4 Sur4"
    );
    assert_eq!(m365.fields.unit_price.to_string(), "22.00");

    let writes = w.sandbox.write_requests();
    let again = w.plan(false).await;
    assert!(again.is_empty(), "resync planned {:?}", again.changes);
    w.apply(&again, false).await;
    assert_eq!(
        w.sandbox.write_requests(),
        writes,
        "a no-change resync must write nothing"
    );
}

#[tokio::test]
async fn a_leaver_lowers_seats_and_deactivates_the_contact() {
    let w = World::new(&people_csv(10, 10)).await;
    w.apply(&w.plan(false).await, false).await;
    w.set_people(&people_csv(9, 9));
    let plan = w.plan(false).await;
    let kinds: Vec<&str> = plan.changes.iter().map(|c| c.change.kind()).collect();
    assert_eq!(
        kinds,
        ["update_addition", "update_addition", "deactivate_contact"]
    );
    w.apply(&plan, false).await;
    assert_eq!(w.quantity("M365-BP").await, Some(9));
    let state = w.state().await;
    let gone = state
        .contacts
        .iter()
        .find(|c| c.fields.email.as_deref() == Some("user9@acme.example"))
        .expect("kept");
    assert!(!gone.active, "deactivated, never deleted");
    assert!(w.plan(false).await.is_empty());

    // They come back: the old contact is reactivated, not a second one made.
    w.set_people(&people_csv(10, 10));
    let plan = w.plan(false).await;
    let kinds: Vec<&str> = plan.changes.iter().map(|c| c.change.kind()).collect();
    assert_eq!(
        kinds,
        ["reactivate_contact", "update_addition", "update_addition"]
    );
    w.apply(&plan, false).await;
    let state = w.state().await;
    assert_eq!(state.contacts.len(), 10);
    assert!(state.contacts.iter().all(|c| c.active));
    assert!(w.plan(false).await.is_empty());
}

#[tokio::test]
async fn a_large_drop_is_refused_and_nothing_is_written() {
    let w = World::new(&people_csv(10, 10)).await;
    w.apply(&w.plan(false).await, false).await;
    w.set_people(&people_csv(3, 3));
    let writes = w.sandbox.write_requests();
    let plan = w.plan(false).await;
    assert_eq!(Verdict::of_plan(&plan), Verdict::Refused);
    let refusal = plan.clients[0].refusal.as_ref().expect("refused");
    assert_eq!((refusal.seats_before, refusal.seats_after), (20, 6));
    let outcomes = w.apply(&plan, false).await;
    assert!(matches!(outcomes[0].state, OutcomeState::Skipped { .. }));
    assert_eq!(w.sandbox.write_requests(), writes);
    assert_eq!(w.quantity("M365-BP").await, Some(10));

    let allowed = w.plan(true).await;
    assert_eq!(Verdict::of_plan(&allowed), Verdict::Ok);
    w.apply(&allowed, false).await;
    assert_eq!(w.quantity("M365-BP").await, Some(3));
}

#[tokio::test]
async fn an_export_that_breaks_never_lowers_anything() {
    let w = World::new(&people_csv(10, 10)).await;
    w.apply(&w.plan(false).await, false).await;
    for broken in [
        "",
        "id,given_name,surname,email,enabled,groups\nid-0000,A,B,a@x,maybe,M365 Users\n",
    ] {
        w.set_people(broken);
        let writes = w.sandbox.write_requests();
        let plan = w.plan(true).await;
        assert!(
            plan.clients[0]
                .completeness
                .as_ref()
                .is_some_and(|c| !c.is_complete()),
            "{broken:?} read as complete"
        );
        w.apply(&plan, false).await;
        assert_eq!(
            w.quantity("M365-BP").await,
            Some(10),
            "{broken:?} lowered seats"
        );
        assert!(
            w.state().await.contacts.iter().all(|c| c.active),
            "{broken:?} deactivated contacts"
        );
        assert!(w.sandbox.write_requests() - writes <= plan.changes.len() as u64);
    }
}

#[tokio::test]
async fn a_saved_plan_applies_exactly_and_refuses_when_the_target_changed() {
    let w = World::new(&people_csv(4, 2)).await;
    let plan = w.plan(false).await;
    let saved = serde_json::to_string(&plan).expect("json");
    let json: serde_json::Value = serde_json::from_str(&saved).expect("json");
    let first = &json["changes"][0];
    assert_eq!(first["client"], "Acme");
    assert_eq!(first["kind"], "create_contact");
    assert!(first["after"]["email"].is_string());
    let reread: PipelinePlan = serde_json::from_str(&saved).expect("round trip");
    let outcomes = w.apply(&reread, true).await;
    assert_eq!(Verdict::of_outcomes(&outcomes), Verdict::Ok, "{outcomes:?}");
    assert_eq!(w.quantity("M365-BP").await, Some(2));

    // Someone edits the agreement after the next plan is saved: that plan must not be applied.
    w.set_people(&people_csv(5, 3));
    let stale: PipelinePlan =
        serde_json::from_str(&serde_json::to_string(&w.plan(false).await).expect("json"))
            .expect("json");
    w.set_people(&people_csv(6, 4));
    w.apply(&w.plan(false).await, false).await;
    let writes = w.sandbox.write_requests();
    let outcomes = w.apply(&stale, true).await;
    assert!(
        matches!(outcomes[0].state, OutcomeState::Stale { .. }),
        "{outcomes:?}"
    );
    assert_eq!(Verdict::of_outcomes(&outcomes), Verdict::Refused);
    assert_eq!(w.sandbox.write_requests(), writes);
}

#[tokio::test]
async fn throttling_and_server_errors_during_apply_are_retried() {
    let w = World::new(&people_csv(3, 3)).await;
    w.sandbox.throttle("company/contacts", 2, 1);
    w.sandbox.fail("finance/agreements", 2);
    let outcomes = w.apply(&w.plan(false).await, false).await;
    assert_eq!(Verdict::of_outcomes(&outcomes), Verdict::Ok, "{outcomes:?}");
    assert_eq!(w.quantity("M365-BP").await, Some(3));
    assert!(w.plan(false).await.is_empty());
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_is_not_made_twice() {
    let w = World::new(&people_csv(2, 2)).await;
    w.sandbox.drop_response_after_commit("company/contacts", 1);
    w.sandbox
        .drop_response_after_commit("finance/agreements", 1);
    let outcomes = w.apply(&w.plan(false).await, false).await;
    assert_eq!(Verdict::of_outcomes(&outcomes), Verdict::Ok, "{outcomes:?}");
    assert_eq!(outcomes[0].reconciled, 2, "{outcomes:?}");
    let state = w.state().await;
    assert_eq!(state.contacts.len(), 2, "{:?}", state.contacts);
    assert_eq!(state.additions.len(), 2, "{:?}", state.additions);
    assert!(w.plan(false).await.is_empty());
    let history = rollcall::store::Store::open(&w.store())
        .await
        .expect("store")
        .history(None, 50)
        .await
        .expect("history");
    assert_eq!(history.iter().filter(|r| r.reconciled).count(), 2);
    assert!(history.iter().all(|r| r.state == "applied"));
}

#[tokio::test]
async fn a_long_list_of_names_is_cut_to_what_connectwise_stores() {
    let yaml = crate::support::PIPELINE.replace(
        "clients:",
        "defaults:\n  contacts: { manage: false }\nclients:",
    );
    let w = World::with_pipeline(&yaml, &people_csv(600, 600)).await;
    let outcomes = w.apply(&w.plan(false).await, false).await;
    assert_eq!(Verdict::of_outcomes(&outcomes), Verdict::Ok, "{outcomes:?}");
    let state = w.state().await;
    let m365 = state
        .additions
        .iter()
        .find(|a| a.product == "M365-BP")
        .expect("m365");
    assert_eq!(m365.fields.quantity, 600);
    let text = &m365.fields.invoice_description;
    assert!(
        text.chars().count() <= 6000,
        "{} characters",
        text.chars().count()
    );
    assert!(text.ends_with(" more"), "{}", &text[text.len() - 40..]);
    assert!(
        w.plan(false).await.is_empty(),
        "the shortened text is stable"
    );
}

#[tokio::test]
async fn shadow_mode_plans_and_reports_but_never_writes() {
    let yaml = crate::support::PIPELINE.replace("clients:", "defaults:\n  shadow: true\nclients:");
    let w = World::with_pipeline(&yaml, &people_csv(3, 2)).await;
    let plan = w.plan(false).await;
    assert_eq!(
        plan.changes.len(),
        3 + 2,
        "shadow mode still plans everything"
    );
    let text = rollcall::report::plan_text(&plan);
    assert!(
        text.contains("shadow mode: 5 change(s) planned, none written"),
        "{text}"
    );
    let writes = w.sandbox.write_requests();
    let outcomes = w.apply(&plan, false).await;
    assert!(
        matches!(&outcomes[0].state, OutcomeState::Skipped { reason } if reason.contains("shadow")),
        "{outcomes:?}"
    );
    assert_eq!(Verdict::of_outcomes(&outcomes), Verdict::Ok);
    assert_eq!(w.sandbox.write_requests(), writes);
}

#[tokio::test]
async fn included_seats_are_not_billed_and_a_minimum_is() {
    let yaml = crate::support::PIPELINE.replace(
        "clients:",
        "defaults:\n  included: { helpdesk: 5 }\n  minimum: { m365: 4 }\nclients:",
    );
    let w = World::with_pipeline(&yaml, &people_csv(7, 2)).await;
    w.apply(&w.plan(false).await, false).await;
    assert_eq!(
        w.quantity("HELPDESK-USER").await,
        Some(2),
        "7 people, 5 included"
    );
    assert_eq!(
        w.quantity("M365-BP").await,
        Some(4),
        "2 people, at least 4 billed"
    );
    assert!(w.plan(false).await.is_empty());
}

#[tokio::test]
async fn explain_answers_from_the_rules_and_the_seat_ledger() {
    let w = World::new(&people_csv(4, 4)).await;
    w.apply(&w.plan(false).await, false).await;
    w.set_people(&people_csv(3, 3)); // Given3 leaves
    w.apply(&w.plan(false).await, false).await;
    let store = w.open_store().await;
    let client = &w.pipeline.clients[0];

    let ada = rollcall::explain::person(&w.pipeline, client, &store, "user0@acme.example")
        .await
        .expect("explain");
    assert!(
        ada.contains("Given0 Sur0 is counted for Acme: `enabled` is true (enabled = true)"),
        "{ada}"
    );
    assert!(ada.contains("billed for M365-BP (M365-BP): `'M365 Users' in groups` is true (groups = [M365 Users, Staff])"), "{ada}");
    assert!(
        ada.contains("Given0 Sur0 has held a m365 seat since"),
        "{ada}"
    );

    let gone = rollcall::explain::person(&w.pipeline, client, &store, "id-0003")
        .await
        .expect("explain");
    assert!(gone.contains("is not in Acme's directory now"), "{gone}");
    assert!(gone.contains("Given3 Sur3 held a m365 seat from"), "{gone}");

    let m365 = rollcall::explain::product(&w.pipeline, client, &store, "M365-BP")
        .await
        .expect("explain");
    assert!(m365.contains("3 seat(s) held now"), "{m365}");
    assert!(
        m365.contains("1 seat(s) ended:\n- Given3 Sur3 held a m365 seat"),
        "{m365}"
    );

    let err = rollcall::explain::person(&w.pipeline, client, &store, "nobody@x")
        .await
        .expect_err("unknown");
    assert!(
        err.to_string().contains("nobody matches `nobody@x`"),
        "{err}"
    );
}

#[tokio::test]
async fn a_weekend_lock_out_does_not_churn_the_bill_within_the_grace_period() {
    let yaml = crate::support::PIPELINE.replace("clients:", "defaults:\n  grace_days: 3\nclients:");
    let w = World::with_pipeline(&yaml, &people_csv(3, 3)).await;
    w.apply(&w.plan(false).await, false).await;
    // Given2 is locked out (disabled) on Friday.
    w.set_people(&people_csv(3, 3).replace("user2@acme.example,true", "user2@acme.example,false"));
    let plan = w.plan(false).await;
    assert!(
        plan.is_empty(),
        "no churn within the grace period: {:?}",
        plan.changes
    );
    assert!(
        plan.clients[0]
            .notes
            .iter()
            .any(|n| n.contains("Given2 Sur2 keeps a m365 seat in the grace period")),
        "{:?}",
        plan.clients[0].notes
    );
    w.apply(&plan, false).await;
    assert_eq!(w.quantity("M365-BP").await, Some(3));
    // The ledger still holds the seat open, with the last time Given2 matched.
    let held = w
        .open_store()
        .await
        .held_seats("e2e", "Acme")
        .await
        .expect("ledger");
    assert_eq!(held["m365"].len(), 3);
    let why = rollcall::explain::person(
        &w.pipeline,
        &w.pipeline.clients[0],
        &w.open_store().await,
        "user2@acme.example",
    )
    .await
    .expect("explain");
    assert!(
        why.contains("is not billed: `enabled` is false (enabled = false)"),
        "{why}"
    );
    assert!(
        why.contains("- keeps the m365 seat in the grace period (3 days after last matching on"),
        "{why}"
    );
}

#[tokio::test]
async fn what_people_made_by_hand_is_never_changed_unless_adopted() {
    let w = World::new(&people_csv(2, 2)).await;
    // Before rollcall: the MSP keeps a vendor contact and an M365 addition by hand (straight
    // in ConnectWise, so they carry no mark of rollcall's).
    let state = w.state().await;
    let company: i64 = state.account.company_id.parse().expect("company id");
    let agreement = state.account.agreement_id.clone().expect("agreement");
    w.by_hand(
        "company/contacts",
        serde_json::json!({
            "firstName": "Kim", "lastName": "Vendor", "company": { "id": company },
            "communicationItems": [{ "type": { "name": "Email" }, "value": "kim@vendor.example" }],
        }),
    )
    .await;
    w.by_hand(
        &format!("finance/agreements/{agreement}/additions"),
        serde_json::json!({
            "product": { "identifier": "M365-BP" }, "quantity": 9, "unitPrice": 20.00,
            "billCustomer": "Billable", "invoiceDescription": "kept by hand",
        }),
    )
    .await;

    let plan = w.plan(false).await;
    let kinds: Vec<&str> = plan.changes.iter().map(|c| c.change.kind()).collect();
    assert_eq!(
        kinds,
        ["create_contact", "create_contact", "create_addition"],
        "only helpdesk is created; the hand-made M365 line blocks a second"
    );
    assert!(
        plan.clients[0]
            .notes
            .iter()
            .any(|n| n.contains("bills M365-BP but was not made by rollcall")),
        "{:?}",
        plan.clients[0].notes
    );
    w.apply(&plan, false).await;
    let state = w.state().await;
    assert!(
        state
            .contacts
            .iter()
            .any(|c| c.fields.first_name == "Kim" && c.active),
        "the vendor contact is untouched"
    );
    assert_eq!(
        w.quantity("M365-BP").await,
        Some(9),
        "the hand-made line is untouched"
    );

    // Adopting: rollcall takes the line over (and the vendor contact, which is not in the directory).
    let adopted =
        crate::support::PIPELINE.replace("clients:", "defaults:\n  adopt: true\nclients:");
    std::fs::write(
        w.pipeline_path(),
        adopted.replace("SANDBOX_URL", &w.sandbox.url()),
    )
    .expect("write");
    let pipeline = rollcall::config::load(&w.pipeline_path()).expect("pipeline");
    let store = w.open_store().await;
    let plan = rollcall::engine::plan(&pipeline, &store, None, true)
        .await
        .expect("plan");
    let kinds: Vec<&str> = plan.changes.iter().map(|c| c.change.kind()).collect();
    assert_eq!(
        kinds,
        ["update_addition", "deactivate_contact"],
        "{:?}",
        plan.changes
    );
}

#[tokio::test]
async fn sister_clients_bill_a_shared_person_once() {
    let yaml = crate::support::PIPELINE.replace(
        "clients:",
        "defaults:\n  count_once_in: acme-group\nclients:\n  - name: Globex\n    directory: { file: { path: globex.csv } }\n    company: GLOBEX\n    agreement: Managed Services",
    );
    let w = World::with_pipeline(&yaml, &people_csv(3, 3)).await;
    // Globex (first in the file) shares Given1 with Acme, by email.
    std::fs::write(
        w.dir.path().join("globex.csv"),
        "id,given_name,surname,email,enabled,groups\ng-1,Given1,Sur1,USER1@acme.example,true,M365 Users\ng-2,Gus,Globex,gus@globex.example,true,M365 Users\n",
    )
    .expect("globex people");
    let plan = w.plan(false).await;
    let acme = plan
        .clients
        .iter()
        .find(|c| c.client == "Acme")
        .expect("acme");
    let m365 = acme
        .seats
        .iter()
        .find(|s| s.identifier == "M365-BP")
        .expect("m365");
    assert_eq!(m365.quantity, 2, "Given1 is billed under Globex");
    assert!(
        acme.excluded
            .iter()
            .any(|e| e.name == "Given1 Sur1" && e.rule == "counted under Globex"),
        "{:?}",
        acme.excluded
    );

    w.apply(&plan, false).await;
    let why = rollcall::explain::person(
        &w.pipeline,
        w.pipeline.client("Acme").expect("acme"),
        &w.open_store().await,
        "user1@acme.example",
    )
    .await
    .expect("explain");
    assert!(
        why.contains(
            "is billed under Globex, not here: the clients share `count_once_in: acme-group`"
        ),
        "{why}"
    );

    // Asked for alone, Acme still leaves Given1 to Globex.
    let only = rollcall::engine::plan(&w.pipeline, &w.open_store().await, Some("Acme"), false)
        .await
        .expect("plan");
    assert_eq!(only.clients.len(), 1);
    assert_eq!(
        only.clients[0]
            .seats
            .iter()
            .find(|s| s.identifier == "M365-BP")
            .map(|s| s.quantity),
        Some(2)
    );

    // Globex's export breaks: whom it bills is unknown, so Acme waits rather than bill twice.
    std::fs::write(w.dir.path().join("globex.csv"), "").expect("break globex");
    let plan = w.plan(false).await;
    let acme = plan
        .clients
        .iter()
        .find(|c| c.client == "Acme")
        .expect("acme");
    let failure = acme.failure.as_ref().expect("acme waits");
    assert!(
        failure
            .message
            .contains("sister client `Globex` (count_once_in) was not read in full"),
        "{failure:?}"
    );
    assert!(plan.changes.iter().all(|c| &*c.client != "Acme"));
}

#[tokio::test]
async fn exclusions_and_start_dates_keep_people_off_the_bill_and_say_why() {
    let yaml = crate::support::PIPELINE.replace(
        "clients:",
        "defaults:\n  count_from: start\n  exclude:\n    - { name: contractors, when: \"'Contractors' in groups\" }\nclients:",
    );
    let csv = "id,given_name,surname,email,enabled,groups,start\n\
               a,Ann,Staff,ann@acme.example,true,M365 Users,2020-01-01\n\
               b,Bob,Contractor,bob@acme.example,true,M365 Users;Contractors,2020-01-01\n\
               c,Cat,Starter,cat@acme.example,true,M365 Users,2999-01-01\n\
               d,Dan,Undated,dan@acme.example,true,M365 Users,\n\
               s,Scan,Service,,true,Service Accounts,\n";
    let w = World::with_pipeline(&yaml, csv).await;
    let plan = w.plan(false).await;
    let excluded: Vec<(String, String)> = plan.clients[0]
        .excluded
        .iter()
        .map(|e| (e.name.clone(), e.rule.clone()))
        .collect();
    assert!(
        excluded.contains(&("Bob Contractor".into(), "contractors".into())),
        "{excluded:?}"
    );
    assert!(
        excluded.contains(&("Cat Starter".into(), "counts from 2999-01-01".into())),
        "{excluded:?}"
    );
    assert!(
        excluded.contains(&("Scan Service".into(), "service accounts".into())),
        "built-in: {excluded:?}"
    );
    let text = rollcall::report::plan_text(&plan);
    assert!(
        text.contains("Acme: not billed (contractors): Bob Contractor"),
        "{text}"
    );
    w.apply(&plan, false).await;
    assert_eq!(w.quantity("M365-BP").await, Some(2), "Ann and Dan");
    let why = rollcall::explain::person(
        &w.pipeline,
        &w.pipeline.clients[0],
        &w.open_store().await,
        "cat@acme.example",
    )
    .await
    .expect("explain");
    assert!(
        why.contains("Cat Starter is not billed yet: they count from start = 2999-01-01"),
        "{why}"
    );
    let why = rollcall::explain::person(
        &w.pipeline,
        &w.pipeline.clients[0],
        &w.open_store().await,
        "bob@acme.example",
    )
    .await
    .expect("explain");
    assert!(why.contains("the exclusion `contractors` applies"), "{why}");
}

#[tokio::test]
async fn a_create_sent_by_a_crashed_run_is_recognised_as_rollcalls_own() {
    let w = World::new(&people_csv(2, 2)).await;
    let billing = w
        .pipeline
        .target
        .build(&rollcall_core::BuildContext::in_memory())
        .expect("client");
    let account = w.state().await.account;
    let fields = rollcall_core::ContactFields {
        first_name: "Given0".into(),
        last_name: "Sur0".into(),
        email: Some("user0@acme.example".into()),
        ..Default::default()
    };
    let change = rollcall_core::Change::CreateContact {
        key: fields.key(),
        after: Box::new(fields),
    };
    // The run recorded the create as pending, sent it, and was killed before hearing back.
    let store = w.open_store().await;
    store
        .begin_run("crashed-run", "e2e", "run")
        .await
        .expect("run");
    store
        .record_pending("crashed-run", 1, "Acme", &change)
        .await
        .expect("pending");
    billing
        .apply(&account, &change)
        .await
        .expect("the create landed");

    let plan = w.plan(false).await;
    let kinds: Vec<(&str, String)> = plan
        .changes
        .iter()
        .map(|c| (c.change.kind(), c.change.subject()))
        .collect();
    assert!(
        !kinds.contains(&("create_contact", "user0@acme.example".into())),
        "no second contact: {kinds:?}"
    );
    assert!(
        plan.clients[0]
            .notes
            .iter()
            .any(|n| n.contains("was made by an earlier run that was interrupted")),
        "{:?}",
        plan.clients[0].notes
    );
    w.apply(&plan, false).await;
    // Once Given0 leaves, the claimed contact is rollcall's to deactivate.
    w.set_people(&people_csv(2, 2).replace(
        "id-0000,Given0,Sur0,user0@acme.example,true",
        "id-0000,Given0,Sur0,user0@acme.example,false",
    ));
    let plan = w.plan(true).await;
    assert!(
        plan.changes
            .iter()
            .any(|c| c.change.kind() == "deactivate_contact"),
        "{:?}",
        plan.changes
    );
}
