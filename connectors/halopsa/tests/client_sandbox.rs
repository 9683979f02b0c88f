//! The HaloPSA client against the stateful sandbox, over real HTTP.

use std::time::Duration;

use rollcall_core::http::RetryPolicy;
use rollcall_core::{
    AccountRef, AdditionFields, BillingAccount, BillingSystem, Change, ContactFields,
    RemoteErrorKind, Secret,
};
use rollcall_halopsa::model::{InvoiceLine, User};
use rollcall_halopsa::{Config, HaloPsa, Sandbox, Seed};
use rust_decimal::Decimal;

fn quick() -> RetryPolicy {
    RetryPolicy {
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        ..RetryPolicy::default()
    }
}

fn client(config: &Config) -> HaloPsa {
    HaloPsa::with_retry(config, quick()).expect("client")
}

fn acme() -> BillingAccount {
    BillingAccount {
        company: "acme".into(),
        agreement: Some("Managed Services".into()),
        invoice: None,
    }
}

fn products() -> Vec<String> {
    vec!["M365-BP".into(), "HELPDESK-USER".into()]
}

fn person(i: usize) -> ContactFields {
    ContactFields {
        first_name: format!("Given{i}"),
        last_name: format!("Sur{i}"),
        email: Some(format!("user{i}@acme.example")),
        ..ContactFields::default()
    }
}

fn seats(quantity: u32) -> AdditionFields {
    AdditionFields {
        quantity,
        unit_price: Decimal::new(2200, 2),
        invoice_description: format!("M365, {quantity} users"),
    }
}

async fn account(halo: &HaloPsa) -> AccountRef {
    halo.read(&acme(), &products()).await.expect("read").account
}

#[tokio::test]
async fn a_wrong_secret_is_refused_and_named_without_showing_it() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let mut config = sandbox.config();
    config.client_secret = Secret::new("not-the-secret");
    let err = client(&config)
        .read(&acme(), &products())
        .await
        .expect_err("refused");
    assert_eq!(err.kind, RemoteErrorKind::Unauthorized, "{err}");
    assert!(err.message.contains("client_secret"), "{err}");
    assert!(err.message.contains("invalid_client"), "{err}");
    assert!(!err.to_string().contains("not-the-secret"), "{err}");
    assert_eq!(sandbox.requests(), 0, "no API call without a token");
}

#[tokio::test]
async fn a_hosted_instance_needs_its_tenant() {
    let seed = Seed {
        tenant: Some("acmemsp".into()),
        ..Seed::demo()
    };
    let sandbox = Sandbox::start(seed).await;
    let mut config = sandbox.config();
    assert!(client(&config).read(&acme(), &products()).await.is_ok());
    config.tenant = None;
    let err = client(&config)
        .read(&acme(), &products())
        .await
        .expect_err("no tenant");
    assert_eq!(err.kind, RemoteErrorKind::Unauthorized, "{err}");
    assert!(err.message.contains("tenant"), "{err}");
}

#[tokio::test]
async fn an_expired_token_is_renewed_once_and_the_call_goes_through() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let halo = client(&sandbox.config());
    halo.read(&acme(), &products()).await.expect("first read");
    assert_eq!(sandbox.token_requests(), 1);
    halo.read(&acme(), &products()).await.expect("same token");
    assert_eq!(sandbox.token_requests(), 1, "the token is reused");
    sandbox.expire_tokens();
    halo.read(&acme(), &products()).await.expect("renewed");
    assert_eq!(sandbox.token_requests(), 2);
}

#[tokio::test]
async fn every_page_is_read() {
    let mut seed = Seed::demo();
    for i in 0..7 {
        seed.users.push(User {
            name: Some(format!("Given{i} Sur{i}")),
            firstname: Some(format!("Given{i}")),
            surname: Some(format!("Sur{i}")),
            emailaddress: Some(format!("user{i}@acme.example")),
            site_id: Some(1),
            inactive: Some(i == 6),
            ..User::default()
        });
    }
    // Another client's user is not Acme's.
    seed.users.push(User {
        name: Some("Hank Scorpio".into()),
        site_id: Some(2),
        ..User::default()
    });
    let sandbox = Sandbox::start(seed).await;
    let mut config = sandbox.config();
    config.page_size = 3;
    let halo = client(&config);
    let state = halo.read(&acme(), &products()).await.expect("read");
    assert_eq!(state.contacts.len(), 7, "{:?}", state.contacts);
    assert_eq!(state.contacts.iter().filter(|c| !c.active).count(), 1);
    // Client search (1 page) + users (3 pages of 3) + recurring invoices (1 page).
    assert_eq!(sandbox.requests(), 5);
}

#[tokio::test]
async fn throttling_and_server_errors_are_waited_out() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let halo = client(&sandbox.config());
    sandbox.throttle("users", 2, 0);
    sandbox.fail("recurringinvoice", 1);
    let state = halo.read(&acme(), &products()).await.expect("read");
    assert_eq!(state.account.agreement_id.as_deref(), Some("1"));
}

#[tokio::test]
async fn users_are_made_once_even_when_the_answer_is_lost() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let halo = client(&sandbox.config());
    let account = account(&halo).await;
    sandbox.drop_response_after_commit("users", 1);
    let fields = person(0);
    let made = halo
        .apply(
            &account,
            &Change::CreateContact {
                key: fields.key(),
                after: Box::new(fields.clone()),
            },
        )
        .await
        .expect("create");
    assert!(made.reconciled, "{made:?}");
    // A second create (a rerun) adopts it too.
    let again = halo
        .apply(
            &account,
            &Change::CreateContact {
                key: fields.key(),
                after: Box::new(fields),
            },
        )
        .await
        .expect("create again");
    assert_eq!(again.remote_id, made.remote_id);
    let users = sandbox.state().users;
    assert_eq!(users.len(), 1, "{users:?}");
    assert_eq!(users[0].site_id, Some(1), "the client's main site");
    assert_eq!(users[0].other5.as_deref(), Some("rollcall"), "marked");
}

#[tokio::test]
async fn a_leaver_is_deactivated_and_comes_back() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let halo = client(&sandbox.config());
    let account = account(&halo).await;
    let fields = person(1);
    let made = halo
        .apply(
            &account,
            &Change::CreateContact {
                key: fields.key(),
                after: Box::new(fields.clone()),
            },
        )
        .await
        .expect("create");
    halo.apply(
        &account,
        &Change::DeactivateContact {
            id: made.remote_id.clone(),
            key: fields.key(),
            before: Box::new(fields.clone()),
        },
    )
    .await
    .expect("deactivate");
    let state = halo.read(&acme(), &products()).await.expect("read");
    assert!(!state.contacts[0].active);
    let mut after = fields.clone();
    after.title = Some("Engineer".into());
    halo.apply(
        &account,
        &Change::ReactivateContact {
            id: made.remote_id,
            key: fields.key(),
            before: Box::new(fields),
            after: Box::new(after.clone()),
        },
    )
    .await
    .expect("reactivate");
    let state = halo.read(&acme(), &products()).await.expect("read");
    assert!(state.contacts[0].active);
    assert_eq!(state.contacts[0].fields, after);
}

#[tokio::test]
async fn lines_are_added_changed_and_removed_and_a_hand_made_line_survives() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let halo = client(&sandbox.config());
    let account = account(&halo).await;
    let made = halo
        .apply(
            &account,
            &Change::CreateAddition {
                product: "M365-BP".into(),
                after: Box::new(seats(5)),
            },
        )
        .await
        .expect("add line");
    assert!(!made.reconciled);

    // A person adds a line of their own between rollcall's writes.
    let token = sandbox.access_token();
    let invoice = &sandbox.state().invoices[0];
    let mut lines = invoice.lines.clone().unwrap_or_default();
    lines.push(InvoiceLine {
        item_id: Some(2),
        qty_order: Some(Decimal::from(3)),
        unit_price: Some(Decimal::new(3600, 2)),
        item_shortdescription: Some("E3 for the board".into()),
        ..InvoiceLine::default()
    });
    let reply = reqwest::Client::new()
        .post(format!("{}/api/recurringinvoice", sandbox.url()))
        .bearer_auth(token)
        .json(&serde_json::json!([{ "id": invoice.id, "lines": lines }]))
        .send()
        .await
        .expect("by hand");
    assert!(reply.status().is_success(), "{}", reply.status());

    halo.apply(
        &account,
        &Change::UpdateAddition {
            id: made.remote_id.clone(),
            product: "M365-BP".into(),
            before: Box::new(seats(5)),
            after: Box::new(seats(4)),
        },
    )
    .await
    .expect("one seat fewer");
    let state = halo.read(&acme(), &products()).await.expect("read");
    assert_eq!(state.additions.len(), 1, "{:?}", state.additions);
    assert_eq!(state.additions[0].fields, seats(4));
    assert!(state.additions[0].marked);

    halo.apply(
        &account,
        &Change::CancelAddition {
            id: made.remote_id,
            product: "M365-BP".into(),
            before: Box::new(seats(4)),
        },
    )
    .await
    .expect("remove");
    let lines = sandbox.state().invoices[0]
        .lines
        .clone()
        .unwrap_or_default();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].item_code.as_deref(), Some("M365-E3"), "kept");
}

#[tokio::test]
async fn a_line_whose_answer_is_lost_is_not_added_twice() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let halo = client(&sandbox.config());
    let account = account(&halo).await;
    sandbox.drop_response_after_commit("recurringinvoice", 1);
    let made = halo
        .apply(
            &account,
            &Change::CreateAddition {
                product: "HELPDESK-USER".into(),
                after: Box::new(seats(2)),
            },
        )
        .await
        .expect("add line");
    assert!(made.reconciled, "{made:?}");
    assert_eq!(
        sandbox.state().invoices[0].lines.as_ref().map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn a_client_or_invoice_that_is_not_there_is_named() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let halo = client(&sandbox.config());
    let mut account = acme();
    account.company = "Umbrella".into();
    let err = halo
        .read(&account, &products())
        .await
        .expect_err("no client");
    assert_eq!(err.kind, RemoteErrorKind::NotFound);
    assert!(err.message.contains("Umbrella"), "{err}");
    let mut account = acme();
    account.agreement = Some("Gold".into());
    let err = halo
        .read(&account, &products())
        .await
        .expect_err("no invoice");
    assert_eq!(err.kind, RemoteErrorKind::NotFound);
    assert!(err.message.contains("\"Gold\""), "{err}");
    let mut account = acme();
    account.company = "id:2".into();
    let state = halo.read(&account, &products()).await.expect("by id");
    assert_eq!(state.account.company_id, "2");
}
