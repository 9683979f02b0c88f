//! The Autotask client against the stateful sandbox over real HTTP: zone discovery, header
//! auth, paging, the threshold, unit adjustments, and writes whose answers are lost.

use std::time::Duration;

use rollcall_autotask::model::Contact;
use rollcall_autotask::{Autotask, Sandbox, Seed};
use rollcall_core::http::RetryPolicy;
use rollcall_core::{
    AccountRef, AdditionFields, BillingAccount, BillingSystem, Change, ContactFields,
    RemoteErrorKind,
};
use rust_decimal::Decimal;

const M365: &str = "Microsoft 365 Business Premium";

fn fast(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts: attempts,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(2),
    }
}

fn client(sandbox: &Sandbox) -> Autotask {
    Autotask::with_retry(&sandbox.config(), fast(4)).expect("client")
}

fn acme() -> BillingAccount {
    BillingAccount {
        company: "Acme Corporation".into(),
        agreement: Some("Managed Services".into()),
        invoice: None,
    }
}

fn fields(quantity: u32) -> AdditionFields {
    AdditionFields {
        quantity,
        unit_price: Decimal::new(2200, 2),
        invoice_description: "M365 for everyone".into(),
    }
}

async fn account(at: &Autotask) -> AccountRef {
    at.read(&acme(), &[M365.to_owned()])
        .await
        .expect("read")
        .account
}

#[tokio::test]
async fn the_zone_is_found_and_a_wrong_secret_is_refused() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let at = client(&sandbox);
    let zone = at.zone().await.expect("zone");
    assert_eq!(
        zone,
        format!("http://{}/ATServicesRest/V1.0", sandbox.addr())
    );
    let state = at.read(&acme(), &[]).await.expect("read");
    assert_eq!(state.account.company_id, "101");
    assert_eq!(state.account.agreement_id.as_deref(), Some("201"));

    let mut wrong = sandbox.config();
    wrong.secret = rollcall_core::Secret::new("not-the-secret");
    let err = Autotask::with_retry(&wrong, fast(2))
        .expect("client")
        .read(&acme(), &[])
        .await
        .expect_err("401");
    assert_eq!(err.kind, RemoteErrorKind::Unauthorized, "{err}");
    assert!(!err.to_string().contains("not-the-secret"), "{err}");
}

#[tokio::test]
async fn every_page_is_read_through_next_page_urls() {
    let mut seed = Seed::demo();
    seed.contacts = (0..1203)
        .map(|i| Contact {
            id: 10_000 + i,
            company_id: 101,
            first_name: format!("Given{i}"),
            last_name: format!("Sur{i}"),
            email_address: Some(format!("user{i}@acme.example")),
            is_active: 1,
            ..Contact::default()
        })
        .collect();
    let sandbox = Sandbox::start(seed).await;
    let at = client(&sandbox);
    let state = at.read(&acme(), &[]).await.expect("read");
    assert_eq!(state.contacts.len(), 1203);
    let mut ids: Vec<&str> = state.contacts.iter().map(|c| c.id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 1203, "no contact read twice");
    // Zone, company, contract, and three pages of contacts.
    assert_eq!(sandbox.requests(), 6);
}

#[tokio::test]
async fn units_change_only_by_adjustments_and_a_replayed_change_adjusts_nothing() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let at = client(&sandbox);
    let account = account(&at).await;
    let created = at
        .apply(
            &account,
            &Change::CreateAddition {
                product: M365.into(),
                after: Box::new(fields(5)),
            },
        )
        .await
        .expect("create");
    let state = at.read(&acme(), &[M365.to_owned()]).await.expect("read");
    assert_eq!(state.additions.len(), 1);
    assert_eq!(state.additions[0].id, created.remote_id);
    assert_eq!(state.additions[0].fields, fields(5));
    assert!(state.additions[0].marked);

    let leaver = Change::UpdateAddition {
        id: created.remote_id.clone(),
        product: M365.into(),
        before: Box::new(fields(5)),
        after: Box::new(fields(4)),
    };
    at.apply(&account, &leaver).await.expect("update");
    at.apply(&account, &leaver).await.expect("replayed");
    let adjustments = sandbox.state().adjustments;
    let changes: Vec<i64> = adjustments.iter().map(|a| a.unit_change).collect();
    assert_eq!(
        changes,
        [5, -1],
        "one adjustment of -1 for the leaver, none for the replay"
    );
    let state = at.read(&acme(), &[M365.to_owned()]).await.expect("read");
    assert_eq!(state.additions[0].fields.quantity, 4);

    // Cancelled: 0 units from today, and no longer a billed line.
    at.apply(
        &account,
        &Change::CancelAddition {
            id: created.remote_id.clone(),
            product: M365.into(),
            before: Box::new(fields(4)),
        },
    )
    .await
    .expect("cancel");
    let state = at.read(&acme(), &[M365.to_owned()]).await.expect("read");
    assert!(state.additions.is_empty(), "{:?}", state.additions);
    // Billed again: the same contract service is taken up, never a second one.
    let again = at
        .apply(
            &account,
            &Change::CreateAddition {
                product: M365.into(),
                after: Box::new(fields(2)),
            },
        )
        .await
        .expect("again");
    assert_eq!(again.remote_id, created.remote_id);
    assert_eq!(sandbox.state().contract_services.len(), 1);
}

#[tokio::test]
async fn a_lost_answer_after_autotask_committed_is_never_written_twice() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let at = client(&sandbox);
    let account = account(&at).await;
    sandbox.drop_response_after_commit("/Contacts", 1);
    sandbox.drop_response_after_commit("/Services", 1);
    sandbox.drop_response_after_commit("ServiceAdjustments", 1);
    let person = ContactFields {
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        email: Some("ada@acme.example".into()),
        ..ContactFields::default()
    };
    let contact = at
        .apply(
            &account,
            &Change::CreateContact {
                key: person.key(),
                after: Box::new(person.clone()),
            },
        )
        .await
        .expect("contact");
    assert!(contact.reconciled, "found by reading, not made again");
    let addition = at
        .apply(
            &account,
            &Change::CreateAddition {
                product: M365.into(),
                after: Box::new(fields(3)),
            },
        )
        .await
        .expect("addition");
    assert!(addition.reconciled);
    let state = sandbox.state();
    assert_eq!(state.contacts.len(), 1);
    assert_eq!(state.contract_services.len(), 1);
    assert_eq!(state.adjustments.len(), 1, "{:?}", state.adjustments);
    let read = at.read(&acme(), &[M365.to_owned()]).await.expect("read");
    assert_eq!(read.additions[0].fields.quantity, 3);
}

#[tokio::test]
async fn throttled_requests_are_retried_and_the_hourly_threshold_is_reported() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    sandbox.throttle("Contacts", 2);
    let at = client(&sandbox);
    at.read(&acme(), &[]).await.expect("read after two 429s");
    assert_eq!(sandbox.throttled(), 2);

    let mut seed = Seed::demo();
    seed.requests_per_hour = 2;
    let sandbox = Sandbox::start(seed).await;
    let err = client(&sandbox)
        .read(&acme(), &[])
        .await
        .expect_err("over the threshold");
    assert!(
        matches!(err.kind, RemoteErrorKind::Throttled { .. }),
        "{err:?}"
    );
    assert!(
        err.message.contains("threshold of 2 requests per hour"),
        "{err}"
    );
}

fn create(person: &ContactFields) -> Change {
    Change::CreateContact {
        key: person.key(),
        after: Box::new(person.clone()),
    }
}

fn person(first: &str, last: &str, email: Option<&str>) -> ContactFields {
    ContactFields {
        first_name: first.into(),
        last_name: last.into(),
        email: email.map(Into::into),
        ..ContactFields::default()
    }
}

#[tokio::test]
async fn values_longer_than_autotask_stores_are_refused_naming_the_field() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let at = client(&sandbox);
    let account = account(&at).await;
    let writes = sandbox.write_requests();
    let err = at
        .apply(
            &account,
            &create(&person(&"x".repeat(51), "Lovelace", None)),
        )
        .await
        .expect_err("too long");
    assert_eq!(err.kind, RemoteErrorKind::Rejected, "{err}");
    assert!(err.message.contains("firstName"), "{err}");
    assert_eq!(sandbox.write_requests() - writes, 1, "sent once: {err}");
    assert!(sandbox.state().contacts.is_empty());
}

#[tokio::test]
async fn a_business_rule_refusal_answered_500_is_reported_at_once_naming_the_change() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let at = client(&sandbox);
    let account = account(&at).await;
    // A shared mailbox with no surname: Autotask requires a contact's lastName.
    let reception = person("Reception", "", Some("reception@acme.example"));
    let (requests, writes) = (sandbox.requests(), sandbox.write_requests());
    let err = at
        .apply(&account, &create(&reception))
        .await
        .expect_err("refused");
    assert_eq!(err.kind, RemoteErrorKind::Rejected, "{err}");
    assert!(!err.is_transient());
    assert_eq!(
        (
            sandbox.requests() - requests,
            sandbox.write_requests() - writes
        ),
        (2, 1),
        "one look-up, one create, no retry and no reconciling look-up: {err}"
    );
    let text = err.to_string();
    for part in [
        "lastName is required",
        "create contact in company 101",
        "\"reception@acme.example\"",
        "not retried",
        "correct the value Autotask names",
        "run again",
    ] {
        assert!(text.contains(part), "{part:?} missing from {text}");
    }
    assert!(err.hint().contains("refused"), "{}", err.hint());

    // The refusal is of that one change: the client's next one goes through.
    let ada = person("Ada", "Lovelace", Some("ada@acme.example"));
    let made = at.apply(&account, &create(&ada)).await.expect("ada");
    assert_eq!(sandbox.state().contacts.len(), 1);

    // An update Autotask refuses is sent once too, and names the contact.
    let writes = sandbox.write_requests();
    let err = at
        .apply(
            &account,
            &Change::UpdateContact {
                id: made.remote_id.clone(),
                key: ada.key(),
                before: Box::new(ada.clone()),
                after: Box::new(person("Ada", "", Some("ada@acme.example"))),
            },
        )
        .await
        .expect_err("refused");
    assert_eq!(err.kind, RemoteErrorKind::Rejected, "{err}");
    assert_eq!(sandbox.write_requests() - writes, 1, "{err}");
    assert!(
        err.to_string().contains(&format!(
            "update contact {}, for \"ada@acme.example\"",
            made.remote_id
        )),
        "{err}"
    );
    assert_eq!(sandbox.state().contacts[0].last_name, "Lovelace");
}

#[tokio::test]
async fn a_unit_change_autotask_refuses_names_the_product_and_is_sent_once() {
    // The contract ran out, though nobody closed it: Autotask takes no adjustment from today.
    let mut seed = Seed::demo();
    seed.contracts[0].end_date = "2025-06-30T00:00:00Z".into();
    let sandbox = Sandbox::start(seed).await;
    let at = client(&sandbox);
    let account = account(&at).await;
    let writes = sandbox.write_requests();
    let err = at
        .apply(
            &account,
            &Change::CreateAddition {
                product: M365.into(),
                after: Box::new(fields(3)),
            },
        )
        .await
        .expect_err("refused");
    assert_eq!(err.kind, RemoteErrorKind::Rejected, "{err}");
    let text = err.to_string();
    assert!(text.contains("outside the contract's dates"), "{text}");
    assert!(text.contains(&format!("for \"{M365}\"")), "{text}");
    // The contract service, then the one adjustment.
    assert_eq!(sandbox.write_requests() - writes, 2, "{text}");
    assert!(sandbox.state().adjustments.is_empty());
}

#[tokio::test]
async fn a_500_that_names_no_broken_rule_is_still_retried_as_an_outage() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let at = client(&sandbox);
    let account = account(&at).await;

    // Autotask's own "unexpected error", then a web server's HTML page: both pass.
    sandbox.fail("Companies/", 2);
    let writes = sandbox.write_requests();
    let ada = person("Ada", "Lovelace", Some("ada@acme.example"));
    at.apply(&account, &create(&ada))
        .await
        .expect("after two 500s");
    assert_eq!(sandbox.write_requests() - writes, 3);

    sandbox.fail_with_page("Companies/", 2);
    let writes = sandbox.write_requests();
    let grace = person("Grace", "Hopper", Some("grace@acme.example"));
    at.apply(&account, &create(&grace))
        .await
        .expect("after two pages");
    assert_eq!(sandbox.write_requests() - writes, 3);
    assert_eq!(sandbox.state().contacts.len(), 2, "each made once");

    // An outage that outlasts every attempt is reported as one.
    sandbox.fail_with_page("Companies/", 10);
    let writes = sandbox.write_requests();
    let alan = person("Alan", "Turing", Some("alan@acme.example"));
    let err = at
        .apply(&account, &create(&alan))
        .await
        .expect_err("outage");
    assert_eq!(err.kind, RemoteErrorKind::Server { status: 500 }, "{err}");
    assert!(err.is_transient());
    assert_eq!(sandbox.write_requests() - writes, 4, "every attempt used");
    assert!(!err.to_string().contains("not retried"), "{err}");
}

#[tokio::test]
async fn a_read_ahead_answers_one_read_and_later_reads_see_what_was_applied() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let at = client(&sandbox);
    let globex = BillingAccount {
        company: "Globex Corporation".into(),
        ..acme()
    };
    let products = [M365.to_owned()];
    at.prepare(&[acme(), globex.clone()], &products)
        .await
        .expect("prepare");
    // Zone, catalogue, then companies, contracts, contacts, contract services and units once
    // for both clients.
    assert_eq!(sandbox.requests(), 7);
    let state = at.read(&acme(), &products).await.expect("read ahead");
    assert_eq!(sandbox.requests(), 7, "answered from the read ahead");
    assert_eq!(state.account.company_id, "101");
    let person = ContactFields {
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        email: Some("ada@acme.example".into()),
        ..ContactFields::default()
    };
    at.apply(
        &state.account,
        &Change::CreateContact {
            key: person.key(),
            after: Box::new(person),
        },
    )
    .await
    .expect("contact");
    let again = at.read(&acme(), &products).await.expect("read again");
    assert_eq!(again.contacts.len(), 1, "a second read goes to Autotask");
    let globex_state = at.read(&globex, &products).await.expect("globex");
    assert_eq!(globex_state.account.company_id, "102");
}
