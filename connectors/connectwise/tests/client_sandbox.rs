//! The ConnectWise client against the sandbox, over real HTTP on 127.0.0.1: paging, every kind
//! of change, auth, throttling, server errors, lost answers, and the sandbox's own refusals.

use std::str::FromStr;
use std::time::Duration;

use rollcall_connectwise::model::{
    Addition, BillCustomer, CatalogItem, CommunicationItem, CommunicationType, Company, Contact,
    ErrorResponse, Reference,
};
use rollcall_connectwise::sandbox::{API_BASE, serve};
use rollcall_connectwise::{ConnectWise, Sandbox, Seed};
use rollcall_core::http::RetryPolicy;
use rollcall_core::{
    AccountRef, ActualAddition, ActualContact, AdditionFields, Applied, BillingAccount,
    BillingSystem, Change, ContactFields, RemoteErrorKind, Secret,
};
use rust_decimal::Decimal;

fn dec(text: &str) -> Decimal {
    Decimal::from_str(text).expect("decimal")
}

/// Millisecond backoffs, so retries do not slow the suite; `Retry-After` is still honoured.
fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(5),
    }
}

fn client(sandbox: &Sandbox) -> ConnectWise {
    ConnectWise::with_retry(&sandbox.config(), fast_retry()).expect("client")
}

fn client_with_page_size(sandbox: &Sandbox, page_size: u32) -> ConnectWise {
    let mut config = sandbox.config();
    config.page_size = page_size;
    ConnectWise::with_retry(&config, fast_retry()).expect("client")
}

fn account(company: &str) -> BillingAccount {
    BillingAccount {
        company: company.to_owned(),
        agreement: Some("Managed Services".to_owned()),
        invoice: None,
    }
}

fn products() -> Vec<String> {
    ["M365-BP", "SEC-AWARE", "HELPDESK-USER"]
        .map(str::to_owned)
        .to_vec()
}

fn by_identifier(identifier: &str) -> Option<Reference> {
    Some(Reference {
        identifier: Some(identifier.to_owned()),
        ..Reference::default()
    })
}

fn email_item(value: &str) -> CommunicationItem {
    CommunicationItem {
        kind: Some(Reference::named("Email")),
        value: Some(value.to_owned()),
        default_flag: true,
        ..CommunicationItem::default()
    }
}

fn seed_contact(company: &str, first: &str, last: &str, email: &str) -> Contact {
    Contact {
        first_name: first.to_owned(),
        last_name: Some(last.to_owned()),
        company: by_identifier(company),
        communication_items: vec![email_item(email)],
        ..Contact::default()
    }
}

fn seed_addition(agreement_id: i64, product: &str, quantity: &str, price: &str) -> Addition {
    Addition {
        agreement_id: Some(agreement_id),
        product: by_identifier(product),
        quantity: Some(dec(quantity)),
        unit_price: Some(dec(price)),
        bill_customer: Some(BillCustomer::Billable),
        invoice_description: Some(format!("{product} seats")),
        ..Addition::default()
    }
}

fn fields(first: &str, last: &str, email: Option<&str>) -> ContactFields {
    ContactFields {
        first_name: first.to_owned(),
        last_name: last.to_owned(),
        email: email.map(str::to_owned),
        title: None,
        phone: None,
    }
}

fn seats(quantity: u32, price: &str, description: &str) -> AdditionFields {
    AdditionFields {
        quantity,
        unit_price: dec(price),
        invoice_description: description.to_owned(),
    }
}

fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%dT00:00:00Z").to_string()
}

/// The demo seed plus a few people and seats at ACME (agreement 1).
fn acme_seed() -> Seed {
    let mut seed = Seed::demo();
    let mut bob = seed_contact("ACME", "Bob", "Smith", "bob@acme.test");
    bob.communication_items.push(CommunicationItem {
        kind: Some(Reference::named("Fax")),
        value: Some("555-0199".to_owned()),
        default_flag: true,
        ..CommunicationItem::default()
    });
    seed.contacts = vec![
        bob,
        seed_contact("ACME", "Carol", "Jones", "carol@acme.test"),
        seed_contact("GLOBEX", "Hank", "Scorpio", "hank@globex.test"),
    ];
    let mut cancelled = seed_addition(1, "HELPDESK-USER", "5", "45.00");
    cancelled.effective_date = Some("2025-01-01T00:00:00Z".to_owned());
    cancelled.cancelled_date = Some("2025-06-30T00:00:00Z".to_owned());
    seed.additions = vec![
        seed_addition(1, "M365-BP", "3", "22.00"),
        seed_addition(1, "SEC-AWARE", "3", "3.50"),
        cancelled,
        // Not a product the pipeline bills: read must leave it out.
        seed_addition(1, "M365-E3", "1", "36.00"),
        seed_addition(2, "M365-BP", "9", "22.00"),
    ];
    seed
}

/// A raw, authenticated request to the sandbox, for what the client never sends.
fn raw(sandbox: &Sandbox, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    let credentials = sandbox.credentials();
    reqwest::Client::new()
        .request(method, format!("{}/{path}", sandbox.url()))
        .basic_auth(
            format!("{}+{}", credentials.company_id, credentials.public_key),
            Some(credentials.private_key),
        )
        .header("clientId", credentials.client_id)
}

async fn error_body(response: reqwest::Response) -> ErrorResponse {
    let text = response.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not a ConnectWise error ({e}): {text}"))
}

#[tokio::test]
async fn reads_every_page_with_the_fewest_requests() {
    let mut seed = Seed::demo();
    for identifier in ["BIG", "EVEN"] {
        seed.companies.push(Company {
            id: 0,
            identifier: identifier.to_owned(),
            name: format!("{identifier} Ltd"),
            status: None,
            deleted_flag: false,
            info: None,
        });
    }
    for i in 0..2600 {
        let mut c = seed_contact("BIG", &format!("P{i}"), "Big", &format!("p{i}@big.test"));
        c.inactive_flag = i % 7 == 0;
        seed.contacts.push(c);
    }
    for i in 0..2000 {
        seed.contacts.push(seed_contact(
            "EVEN",
            &format!("E{i}"),
            "Even",
            &format!("e{i}@even.test"),
        ));
    }
    let sandbox = Sandbox::start(seed).await;
    let no_agreement = |company: &str| BillingAccount {
        company: company.to_owned(),
        agreement: None,
        invoice: None,
    };

    // One call finds the company, then ⌈2600 / 1000⌉ = 3 pages.
    let cw = client(&sandbox);
    let before = sandbox.requests();
    let state = cw.read(&no_agreement("BIG"), &[]).await.expect("read");
    assert_eq!(state.contacts.len(), 2600);
    let mut ids: Vec<&str> = state.contacts.iter().map(|c| c.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 2600, "a row was read twice");
    assert_eq!(state.contacts.iter().filter(|c| !c.active).count(), 372);
    assert_eq!(
        state.contacts[2599].fields.email.as_deref(),
        Some("p2599@big.test")
    );
    assert_eq!(sandbox.requests() - before, 1 + 3);
    assert_eq!(cw.calls(), 1 + 3);

    // With 100 rows a page: 26 pages, and no empty 27th.
    let cw = client_with_page_size(&sandbox, 100);
    let before = sandbox.requests();
    let state = cw.read(&no_agreement("BIG"), &[]).await.expect("read");
    assert_eq!(state.contacts.len(), 2600);
    assert_eq!(sandbox.requests() - before, 1 + 26);

    // An exact multiple of the page size: the Link header says there is no third page.
    let cw = client(&sandbox);
    let before = sandbox.requests();
    let state = cw.read(&no_agreement("EVEN"), &[]).await.expect("read");
    assert_eq!(state.contacts.len(), 2000);
    assert_eq!(sandbox.requests() - before, 1 + 2);
}

#[tokio::test]
async fn reads_contacts_and_only_the_billed_open_additions() {
    let sandbox = Sandbox::start(acme_seed()).await;
    let cw = client(&sandbox);
    let state = cw.read(&account("ACME"), &products()).await.expect("read");
    assert_eq!(
        state.account,
        AccountRef {
            company_id: "1".to_owned(),
            agreement_id: Some("1".to_owned()),
        }
    );
    assert_eq!(
        state.contacts,
        vec![
            ActualContact {
                id: "1".to_owned(),
                fields: fields("Bob", "Smith", Some("bob@acme.test")),
                active: true,
                marked: false,
            },
            ActualContact {
                id: "2".to_owned(),
                fields: fields("Carol", "Jones", Some("carol@acme.test")),
                active: true,
                marked: false,
            },
        ]
    );
    assert_eq!(
        state.additions,
        vec![
            ActualAddition {
                id: "1".to_owned(),
                product: "M365-BP".to_owned(),
                fields: seats(3, "22.00", "M365-BP seats"),
                marked: false,
            },
            ActualAddition {
                id: "2".to_owned(),
                product: "SEC-AWARE".to_owned(),
                fields: seats(3, "3.50", "SEC-AWARE seats"),
                marked: false,
            },
        ]
    );
    // Identifiers ignore case; the pipeline's spelling is reported back.
    let state = cw
        .read(&account("acme"), &["m365-bp".to_owned()])
        .await
        .expect("read");
    assert_eq!(state.additions.len(), 1);
    assert_eq!(state.additions[0].product, "m365-bp");
}

#[tokio::test]
async fn every_change_round_trips() {
    let sandbox = Sandbox::start(acme_seed()).await;
    let cw = client(&sandbox);
    let state = cw.read(&account("ACME"), &products()).await.expect("read");
    let acme = state.account.clone();
    let bob = state.contacts[0].clone();
    let carol = state.contacts[1].clone();
    let m365 = state.additions[0].clone();
    let aware = state.additions[1].clone();

    let ann = ContactFields {
        title: Some("CFO".to_owned()),
        phone: Some("555-0100".to_owned()),
        ..fields("Ann", "Lee", Some("ann@acme.test"))
    };
    let bob_after = ContactFields {
        title: Some("CTO".to_owned()),
        ..fields("Bob", "Smith", Some("bob.smith@acme.test"))
    };
    // More exact than an f64 can carry.
    let helpdesk = seats(2, "1234567890.123456789", "Helpdesk, per user");
    let changes = vec![
        Change::CreateContact {
            key: ann.key(),
            after: Box::new(ann.clone()),
        },
        Change::UpdateContact {
            id: bob.id.clone(),
            key: bob.fields.key(),
            before: Box::new(bob.fields.clone()),
            after: Box::new(bob_after.clone()),
        },
        Change::DeactivateContact {
            id: carol.id.clone(),
            key: carol.fields.key(),
            before: Box::new(carol.fields.clone()),
        },
        Change::CreateAddition {
            product: "HELPDESK-USER".to_owned(),
            after: Box::new(helpdesk.clone()),
        },
        Change::UpdateAddition {
            id: m365.id.clone(),
            product: m365.product.clone(),
            before: Box::new(m365.fields.clone()),
            after: Box::new(seats(4, "22.00", "M365-BP seats")),
        },
        Change::CancelAddition {
            id: aware.id.clone(),
            product: aware.product.clone(),
            before: Box::new(aware.fields.clone()),
        },
    ];
    let mut applied = Vec::new();
    for change in &changes {
        let done = cw.apply(&acme, change).await;
        applied.push(done.unwrap_or_else(|e| panic!("{}: {e}", change.kind())));
    }
    assert!(applied.iter().all(|a| !a.reconciled), "{applied:?}");
    assert_eq!(sandbox.writes(), 6);
    let ann_id = applied[0].remote_id.clone();
    let helpdesk_id = applied[3].remote_id.clone();

    let after = cw.read(&account("ACME"), &products()).await.expect("read");
    assert_eq!(
        after.contacts,
        vec![
            ActualContact {
                id: bob.id.clone(),
                fields: bob_after,
                active: true,
                marked: false,
            },
            ActualContact {
                active: false,
                ..carol
            },
            ActualContact {
                id: ann_id.clone(),
                fields: ann,
                active: true,
                marked: true,
            },
        ]
    );
    assert_eq!(
        after.additions,
        vec![
            ActualAddition {
                fields: seats(4, "22.00", "M365-BP seats"),
                ..m365.clone()
            },
            ActualAddition {
                id: helpdesk_id.clone(),
                product: "HELPDESK-USER".to_owned(),
                fields: helpdesk,
                marked: true,
            },
        ]
    );

    // What ConnectWise holds beyond what rollcall compares.
    let held = sandbox.state();
    let bob_held = held
        .contacts
        .iter()
        .find(|c| c.id.to_string() == bob.id)
        .expect("bob");
    assert!(
        bob_held
            .communication_items
            .iter()
            .any(|i| i.communication_type == Some(CommunicationType::Fax)
                && i.value.as_deref() == Some("555-0199")),
        "the fax number rollcall does not manage was lost: {bob_held:?}"
    );
    let ann_held = held
        .contacts
        .iter()
        .find(|c| c.id.to_string() == ann_id)
        .expect("ann");
    assert_eq!(ann_held.company.as_ref().map(|c| c.id), Some(1));
    let new = held
        .additions
        .iter()
        .find(|a| a.id.to_string() == helpdesk_id)
        .expect("addition");
    assert_eq!(new.bill_customer, Some(BillCustomer::Billable));
    assert_eq!(new.effective_date, Some(today()));
    assert_eq!(new.agreement_id, Some(1));
    assert_eq!(new.quantity.map(|q| q.to_string()), Some("2".to_owned()));
    let cancelled = held
        .additions
        .iter()
        .find(|a| a.id.to_string() == aware.id)
        .expect("cancelled addition");
    assert_eq!(cancelled.cancelled_date, Some(today()));

    // The exact price crossed the wire as a JSON number, not a string or an f64.
    let body = raw(
        &sandbox,
        reqwest::Method::GET,
        &format!("finance/agreements/1/additions/{helpdesk_id}"),
    )
    .send()
    .await
    .expect("get")
    .text()
    .await
    .expect("text");
    assert!(
        body.contains(r#""unitPrice":1234567890.123456789"#),
        "{body}"
    );

    // Updates that change nothing send nothing.
    let writes = sandbox.writes();
    let calls = cw.calls();
    let same = seats(4, "22.00", "M365-BP seats");
    cw.apply(
        &acme,
        &Change::UpdateAddition {
            id: m365.id.clone(),
            product: "M365-BP".to_owned(),
            before: Box::new(same.clone()),
            after: Box::new(same),
        },
    )
    .await
    .expect("no-op update");
    assert_eq!((sandbox.writes(), cw.calls()), (writes, calls));
}

#[tokio::test]
async fn a_replayed_create_adopts_what_the_first_made() {
    let sandbox = Sandbox::start(acme_seed()).await;
    let cw = client(&sandbox);
    let acme = cw
        .read(&account("ACME"), &products())
        .await
        .expect("read")
        .account;
    let dan = fields("Dan", "Ode", Some("dan@acme.test"));
    let create = Change::CreateContact {
        key: dan.key(),
        after: Box::new(dan),
    };
    let first = cw.apply(&acme, &create).await.expect("first");
    let again = cw.apply(&acme, &create).await.expect("again");
    assert!(!first.reconciled);
    assert_eq!(
        again,
        Applied {
            remote_id: first.remote_id,
            reconciled: true,
        }
    );
    assert_eq!(sandbox.writes(), 1);
}

#[tokio::test]
async fn a_lost_create_answer_is_reconciled_without_a_duplicate() {
    let sandbox = Sandbox::start(acme_seed()).await;
    let cw = client(&sandbox);
    let acme = cw
        .read(&account("ACME"), &products())
        .await
        .expect("read")
        .account;

    sandbox.drop_response_after_commit("company/contacts", 1);
    let erin = fields("Erin", "Vale", Some("erin@acme.test"));
    let calls = cw.calls();
    let applied = cw
        .apply(
            &acme,
            &Change::CreateContact {
                key: erin.key(),
                after: Box::new(erin),
            },
        )
        .await
        .expect("create contact");
    assert!(applied.reconciled, "{applied:?}");
    // Look first, POST (answer lost), look again and adopt: no second POST.
    assert_eq!(cw.calls() - calls, 3);
    let held = sandbox_contacts(&sandbox, "erin@acme.test");
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].id.to_string(), applied.remote_id);

    sandbox.drop_response_after_commit("finance/agreements", 1);
    let applied = cw
        .apply(
            &acme,
            &Change::CreateAddition {
                product: "HELPDESK-USER".to_owned(),
                after: Box::new(seats(7, "45.00", "Helpdesk")),
            },
        )
        .await
        .expect("create addition");
    assert!(applied.reconciled, "{applied:?}");
    let open: Vec<Addition> = sandbox
        .state()
        .additions
        .into_iter()
        .filter(|a| {
            a.cancelled_date.is_none()
                && a.product.as_ref().and_then(|p| p.identifier.as_deref()) == Some("HELPDESK-USER")
        })
        .collect();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].id.to_string(), applied.remote_id);
    assert_eq!(sandbox.writes(), 2);
}

/// The contacts the sandbox holds with this email address.
fn sandbox_contacts(sandbox: &Sandbox, email: &str) -> Vec<Contact> {
    sandbox
        .state()
        .contacts
        .into_iter()
        .filter(|c| {
            c.communication_items
                .iter()
                .any(|i| i.value.as_deref() == Some(email))
        })
        .collect()
}

#[tokio::test]
async fn a_bad_key_is_unauthorized_and_never_echoed() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let mut config = sandbox.config();
    config.private_key = Secret::new("wrong-key-5bd1f0");
    let cw = ConnectWise::with_retry(&config, fast_retry()).expect("client");
    let err = cw
        .read(&account("ACME"), &products())
        .await
        .expect_err("bad key");
    assert_eq!(err.kind, RemoteErrorKind::Unauthorized);
    assert_eq!(cw.calls(), 1, "a refused key is not retried");
    for text in [
        err.to_string(),
        format!("{err:?}"),
        format!("{cw:?}"),
        format!("{config:?}"),
    ] {
        for secret in ["wrong-key-5bd1f0", "demo-private", "demo-public"] {
            assert!(!text.contains(secret), "{secret} leaked into {text}");
        }
    }

    // The integrator's clientId is required as well.
    let credentials = sandbox.credentials();
    let response = reqwest::Client::new()
        .get(format!("{}/system/info", sandbox.url()))
        .basic_auth(
            format!("{}+{}", credentials.company_id, credentials.public_key),
            Some(credentials.private_key),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 401);
    assert!(error_body(response).await.message.contains("clientId"));
    let info = client(&sandbox).system_info().await.expect("system info");
    assert!(!info.version.is_empty());
}

#[tokio::test]
async fn a_throttled_call_waits_for_retry_after_then_succeeds() {
    let sandbox = Sandbox::start(acme_seed()).await;
    let cw = client(&sandbox);
    sandbox.throttle("company/companies", 1, 1);
    let started = tokio::time::Instant::now();
    let state = cw.read(&account("ACME"), &products()).await.expect("read");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "retried after {:?}, before Retry-After",
        started.elapsed()
    );
    assert_eq!(state.contacts.len(), 2);
    // company (429, then 200), agreement, contacts, additions.
    assert_eq!(cw.calls(), 5);
}

#[tokio::test]
async fn server_errors_are_retried_within_the_policy() {
    let sandbox = Sandbox::start(acme_seed()).await;
    let cw = client(&sandbox);
    sandbox.fail("company/contacts", 2);
    let state = cw.read(&account("ACME"), &products()).await.expect("read");
    assert_eq!(state.contacts.len(), 2);
    assert_eq!(cw.calls(), 4 + 2);

    sandbox.fail("finance/agreements", 10);
    let err = cw
        .read(&account("ACME"), &products())
        .await
        .expect_err("more failures than attempts");
    assert_eq!(err.kind, RemoteErrorKind::Server { status: 500 });
    assert!(err.message.contains("UnexpectedServerError"), "{err}");
}

#[tokio::test]
async fn missing_companies_agreements_and_products_are_named() {
    let mut seed = acme_seed();
    let mut second = seed.agreements[1].clone();
    second.company = by_identifier("GLOBEX");
    seed.agreements.push(second);
    let mut cancelled = seed.agreements[2].clone();
    cancelled.name = "Legacy".to_owned();
    cancelled.cancelled_flag = true;
    seed.agreements.push(cancelled);
    let sandbox = Sandbox::start(seed).await;
    let cw = client(&sandbox);

    let err = cw
        .read(&account("NOPE-CO"), &products())
        .await
        .expect_err("no company");
    assert_eq!(err.kind, RemoteErrorKind::NotFound);
    assert!(err.message.contains("\"NOPE-CO\""), "{err}");

    let mut other = account("ACME");
    other.agreement = Some("Break/Fix".to_owned());
    let err = cw
        .read(&other, &products())
        .await
        .expect_err("no agreement");
    assert_eq!(err.kind, RemoteErrorKind::NotFound);
    assert!(
        err.message.contains("\"Break/Fix\"") && err.message.contains("\"ACME\""),
        "{err}"
    );

    let err = cw
        .read(&account("GLOBEX"), &products())
        .await
        .expect_err("two agreements");
    assert_eq!(err.kind, RemoteErrorKind::Rejected);
    assert!(err.message.contains("2 open agreements"), "{err}");

    let mut legacy = account("INITECH");
    legacy.agreement = Some("Legacy".to_owned());
    let err = cw
        .read(&legacy, &products())
        .await
        .expect_err("cancelled agreement");
    assert_eq!(err.kind, RemoteErrorKind::NotFound);
    assert!(err.message.contains("cancelled"), "{err}");

    let acme = cw
        .read(&account("ACME"), &products())
        .await
        .expect("read")
        .account;
    let err = cw
        .apply(
            &acme,
            &Change::CreateAddition {
                product: "NOPE-PRODUCT".to_owned(),
                after: Box::new(seats(1, "1.00", "x")),
            },
        )
        .await
        .expect_err("unknown product");
    assert_eq!(err.kind, RemoteErrorKind::NotFound);
    assert!(err.message.contains("\"NOPE-PRODUCT\""), "{err}");
    assert_eq!(sandbox.writes(), 0);
}

#[tokio::test]
async fn the_sandbox_refuses_what_connectwise_refuses() {
    let mut seed = acme_seed();
    seed.catalog.push(CatalogItem {
        id: 0,
        identifier: "OLD-PLAN".to_owned(),
        description: "Retired plan".to_owned(),
        price: None,
        cost: None,
        inactive_flag: true,
        taxable_flag: false,
        info: None,
    });
    let sandbox = Sandbox::start(seed).await;
    let cw = client(&sandbox);
    let acme = cw
        .read(&account("ACME"), &products())
        .await
        .expect("read")
        .account;

    // A refusal of the content reaches the engine as Rejected, naming the field and product.
    let err = cw
        .apply(
            &acme,
            &Change::CreateAddition {
                product: "OLD-PLAN".to_owned(),
                after: Box::new(seats(1, "1.00", "x")),
            },
        )
        .await
        .expect_err("inactive product");
    assert_eq!(err.kind, RemoteErrorKind::Rejected);
    assert!(
        err.message
            .contains("product: product \"OLD-PLAN\" is inactive"),
        "{err}"
    );

    let post = |body: serde_json::Value| {
        raw(
            &sandbox,
            reqwest::Method::POST,
            "finance/agreements/1/additions",
        )
        .json(&body)
    };
    let response = post(serde_json::json!({"product": {"id": 999}, "quantity": 1}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 400);
    let body = error_body(response).await;
    let refused: Vec<&str> = body.errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(refused, ["product", "billCustomer"], "{body:?}");
    assert!(body.errors[0].message.contains("id 999"), "{body:?}");
    assert_eq!(body.errors[0].resource, "addition");

    let response = post(serde_json::json!({
        "product": {"identifier": "M365-BP"}, "billCustomer": "Billable", "quantity": -1
    }))
    .send()
    .await
    .expect("send");
    assert_eq!(error_body(response).await.errors[0].field, "quantity");

    let response = raw(
        &sandbox,
        reqwest::Method::PATCH,
        "finance/agreements/1/additions/1",
    )
    .json(&serde_json::json!([
        {"op": "replace", "path": "effectiveDate", "value": "2030-01-01T00:00:00Z"},
        {"op": "replace", "path": "cancelledDate", "value": "2029-12-31T00:00:00Z"}
    ]))
    .send()
    .await
    .expect("send");
    assert_eq!(error_body(response).await.errors[0].field, "cancelledDate");

    let response = raw(&sandbox, reqwest::Method::POST, "company/contacts")
        .json(&serde_json::json!({"lastName": "Nofirst", "company": {"id": 1}}))
        .send()
        .await
        .expect("send");
    assert_eq!(error_body(response).await.errors[0].field, "firstName");

    let response = raw(&sandbox, reqwest::Method::PATCH, "company/contacts/1")
        .json(&serde_json::json!([{"op": "replace", "path": "nickName", "value": "B"}]))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 400);
    assert_eq!(error_body(response).await.errors[0].field, "nickName");

    let response = raw(&sandbox, reqwest::Method::DELETE, "company/contacts/1")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 405, "contacts are never deleted");

    let response = raw(&sandbox, reqwest::Method::GET, "company/contacts")
        .query(&[("conditions", "company/identifier = ACME")])
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 400);
    let body = error_body(response).await;
    assert!(body.message.contains("double quotes"), "{body:?}");

    let response = raw(&sandbox, reqwest::Method::GET, "company/contacts")
        .query(&[("pageSize", "1001")])
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 400);
    assert_eq!(sandbox.writes(), 0);
}

#[tokio::test]
async fn lists_default_to_25_rows_with_a_link_to_the_next_page() {
    let mut seed = Seed::demo();
    for i in 0..30 {
        seed.contacts.push(seed_contact(
            "ACME",
            &format!("N{i}"),
            "Many",
            &format!("n{i}@acme.test"),
        ));
    }
    let sandbox = Sandbox::start(seed).await;
    let response = raw(&sandbox, reqwest::Method::GET, "company/contacts")
        .query(&[(
            "conditions",
            "company/identifier=\"ACME\" and inactiveFlag=false",
        )])
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let link = response
        .headers()
        .get("link")
        .and_then(|v| v.to_str().ok())
        .expect("link header")
        .to_owned();
    assert!(link.contains("&page=2>; rel=\"next\""), "{link}");
    assert!(link.starts_with(&format!(
        "<http://{}{API_BASE}/company/contacts?",
        sandbox.addr()
    )));
    let rows: Vec<Contact> = response.json().await.expect("rows");
    assert_eq!(rows.len(), 25);

    let count: serde_json::Value = raw(&sandbox, reqwest::Method::GET, "company/contacts/count")
        .query(&[("conditions", "lastName like \"M%\"")])
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("count");
    assert_eq!(count, serde_json::json!({"count": 30}));

    // Outside apis/3.0 and without auth, as vendor SDKs call it first.
    let info: serde_json::Value =
        reqwest::get(format!("http://{}/login/companyinfo/demo", sandbox.addr()))
            .await
            .expect("send")
            .json()
            .await
            .expect("company info");
    assert_eq!(info["Codebase"], "v4_6_release/");
    assert_eq!(info["CompanyID"], "demo");
}

#[tokio::test]
async fn fractional_seat_counts_are_refused_naming_the_addition() {
    let mut seed = acme_seed();
    seed.additions = vec![seed_addition(1, "M365-BP", "2.5", "22.00")];
    let sandbox = Sandbox::start(seed).await;
    let err = client(&sandbox)
        .read(&account("ACME"), &products())
        .await
        .expect_err("2.5 seats");
    assert_eq!(err.kind, RemoteErrorKind::Decode);
    assert!(
        err.message
            .contains("addition 1 (M365-BP) has quantity 2.5"),
        "{err}"
    );
}

#[tokio::test]
async fn latency_rate_limits_and_shutdown() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    sandbox.latency(Duration::from_millis(150));
    let started = tokio::time::Instant::now();
    client(&sandbox).system_info().await.expect("info");
    assert!(started.elapsed() >= Duration::from_millis(150));
    sandbox.latency(Duration::ZERO);

    sandbox.limit_rate(Some(2));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = raw(&sandbox, reqwest::Method::GET, "system/info")
            .send()
            .await
            .expect("send");
        statuses.push((
            response.status().as_u16(),
            response.headers().get("retry-after").cloned(),
        ));
    }
    assert_eq!(statuses[0].0, 200);
    assert_eq!(statuses[1].0, 200);
    assert_eq!(statuses[2].0, 429);
    assert_eq!(
        statuses[2].1.as_ref().and_then(|v| v.to_str().ok()),
        Some("1")
    );
    sandbox.limit_rate(None);

    // `serve` stops when its shutdown future completes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, Seed::demo(), async {
        let _ = stopped.await;
    }));
    let url = format!("http://{addr}/login/companyinfo/demo");
    assert_eq!(reqwest::get(&url).await.expect("served").status(), 200);
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serve stopped")
        .expect("task")
        .expect("serve");

    // Dropping the handle stops the sandbox: new connections are refused.
    let addr = sandbox.addr();
    drop(sandbox);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still listening on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_sandbox_enforces_the_limits_table_counting_utf16() {
    use rollcall_connectwise::model::LIMITS;
    let sandbox = Sandbox::start(acme_seed()).await;
    let first_max = LIMITS.contact_first_name.expect("a first-name limit");
    let post = |first: String, email: String| {
        raw(&sandbox, reqwest::Method::POST, "company/contacts").json(&serde_json::json!({
            "firstName": first, "lastName": "Ng", "company": {"identifier": "ACME"},
            "communicationItems": [{"type": {"name": "Email"}, "value": email}],
        }))
    };
    // At the limit it is stored; one over is ConnectWise's 400 naming the field.
    let fits = post("a".repeat(first_max), "a@acme.test".into())
        .send()
        .await
        .expect("send");
    assert_eq!(fits.status(), 201);
    for (first, email, field) in [
        (
            "a".repeat(first_max + 1),
            "b@acme.test".to_owned(),
            "firstName",
        ),
        // Each emoji is two UTF-16 units: half the limit in emoji plus one is over.
        (
            "😀".repeat(first_max / 2 + 1),
            "c@acme.test".to_owned(),
            "firstName",
        ),
        (
            "Dee".to_owned(),
            format!("{}@acme.test", "d".repeat(250)),
            "communicationItems[0].value",
        ),
    ] {
        let response = post(first, email).send().await.expect("send");
        assert_eq!(response.status(), 400);
        let body = error_body(response).await;
        assert_eq!(body.errors[0].field, field, "{body:?}");
        assert!(body.errors[0].message.contains("longer than"), "{body:?}");
    }
}

#[tokio::test]
async fn what_the_client_makes_carries_rollcalls_mark_and_nothing_else_does() {
    let sandbox = Sandbox::start(acme_seed()).await;
    let cw = client(&sandbox);
    let acme = cw.read(&account("ACME"), &products()).await.expect("read");
    assert!(
        acme.contacts.iter().all(|c| !c.marked) && acme.additions.iter().all(|a| !a.marked),
        "seeded (hand-made) objects are not marked"
    );
    let made = fields("Ann", "Lee", Some("ann@acme.test"));
    cw.apply(
        &acme.account,
        &Change::CreateContact {
            key: made.key(),
            after: Box::new(made),
        },
    )
    .await
    .expect("contact");
    cw.apply(
        &acme.account,
        &Change::CreateAddition {
            product: "HELPDESK-USER".to_owned(),
            after: Box::new(seats(1, "35.00", "Helpdesk")),
        },
    )
    .await
    .expect("addition");
    let after = cw.read(&account("ACME"), &products()).await.expect("read");
    let marked: Vec<(bool, String)> = after
        .contacts
        .iter()
        .map(|c| (c.marked, c.fields.first_name.clone()))
        .filter(|(m, _)| *m)
        .collect();
    assert_eq!(marked, [(true, "Ann".to_owned())]);
    let marked: Vec<&str> = after
        .additions
        .iter()
        .filter(|a| a.marked)
        .map(|a| a.product.as_str())
        .collect();
    assert_eq!(marked, ["HELPDESK-USER"]);
    // The client's invoice text is untouched by the mark.
    assert!(
        after
            .additions
            .iter()
            .any(|a| a.fields.invoice_description == "Helpdesk")
    );
}
