//! The Graph directory against the Graph sandbox, over real HTTP on 127.0.0.1: paging, group
//! membership and licences, delta rounds, token expiry, throttling, cut-off reads, refused
//! credentials, and the sandbox's own contract.

use std::time::{Duration, Instant};

use rollcall_core::http::RetryPolicy;
use rollcall_core::{
    Completeness, Cursor, Directory, DirectoryError, DirectoryRead, Person, Secret,
};
use rollcall_graph::sandbox::{generated_user_id, user};
use rollcall_graph::{Config, GraphDirectory, Sandbox, Seed};

/// Millisecond backoffs, so retries do not slow the suite; `Retry-After` is still honoured.
fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(5),
    }
}

fn directory(config: &Config) -> GraphDirectory {
    GraphDirectory::with_retry(config, fast_retry()).expect("directory")
}

fn config(sandbox: &Sandbox, page_size: u32, delta: bool) -> Config {
    Config {
        page_size,
        delta,
        ..sandbox.config()
    }
}

async fn read(directory: &GraphDirectory, cursor: Option<&Cursor>) -> DirectoryRead {
    directory.read(cursor).await.expect("read")
}

fn person<'a>(read: &'a DirectoryRead, display_name: &str) -> &'a Person {
    read.people
        .iter()
        .find(|p| p.display_name == display_name)
        .unwrap_or_else(|| panic!("{display_name} not read"))
}

fn skus(person: &Person) -> Vec<(&str, &str)> {
    person
        .licenses
        .iter()
        .map(|l| (l.sku.as_str(), l.name.as_str()))
        .collect()
}

fn pages(items: usize, page: usize) -> usize {
    items.div_ceil(page).max(1)
}

/// The fewest membership requests the sandbox's groups allow at this page size.
fn membership_pages(sandbox: &Sandbox, page: usize) -> usize {
    let sizes = sandbox.group_sizes();
    pages(sizes.len(), page) + sizes.iter().map(|(_, n)| pages(*n, page)).sum::<usize>()
}

#[tokio::test]
async fn a_full_read_pages_through_every_user_in_the_fewest_requests() {
    let sandbox = Sandbox::start(Seed::generated(2_500, 4)).await;
    let graph = directory(&config(&sandbox, 999, false));
    let read = read(&graph, None).await;

    assert_eq!(read.completeness, Completeness::Complete);
    assert_eq!(read.people.len(), 2_500);
    assert!(read.cursor.is_none(), "no cursor without delta");
    assert_eq!(sandbox.requests("/users"), pages(2_500, 999));
    assert_eq!(sandbox.requests("/groups"), membership_pages(&sandbox, 999));
    assert_eq!(sandbox.requests("/subscribedSkus"), 1);
    assert_eq!(
        sandbox.token_requests(),
        1,
        "one token serves the whole read"
    );
    assert_eq!(graph.calls() as usize, sandbox.requests(""));

    let first = read
        .people
        .iter()
        .find(|p| p.id == generated_user_id(0))
        .expect("user 0");
    assert_eq!(first.groups, vec!["All Staff", "Department 0"]);
    assert_eq!(
        skus(first),
        vec![
            ("EXCHANGESTANDARD", "Exchange Online (Plan 1)"),
            ("SPB", "Microsoft 365 Business Premium")
        ]
    );
    assert!(first.enabled);
    assert_eq!(first.username, "ada.lovelace0");
    let disabled = read
        .people
        .iter()
        .find(|p| p.id == generated_user_id(19))
        .expect("user 19");
    assert!(!disabled.enabled);
}

#[tokio::test]
async fn small_pages_are_all_followed_through_next_links() {
    let sandbox = Sandbox::start(Seed::generated(1_050, 2)).await;
    let graph = directory(&config(&sandbox, 100, true));
    let read = read(&graph, None).await;
    assert_eq!(read.completeness, Completeness::Complete);
    assert_eq!(read.people.len(), 1_050);
    let mut ids: Vec<&str> = read.people.iter().map(|p| p.id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 1_050, "no user twice");
    assert_eq!(sandbox.requests("/users/delta"), 11);
    assert_eq!(sandbox.requests("/groups"), membership_pages(&sandbox, 100));
}

#[tokio::test]
async fn licences_resolve_to_part_numbers_and_names_and_disabled_users_are_read() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let read = read(&directory(&sandbox.config()), None).await;
    assert_eq!(read.people.len(), 13);
    assert_eq!(
        skus(person(&read, "Ada Lovelace")),
        vec![("SPB", "Microsoft 365 Business Premium")]
    );
    assert_eq!(
        skus(person(&read, "Alan Turing")),
        vec![
            ("FLOW_FREE", "Microsoft Power Automate Free"),
            ("SPB", "Microsoft 365 Business Premium")
        ]
    );
    assert_eq!(
        skus(person(&read, "Scanner (service)")),
        vec![("EXCHANGESTANDARD", "Exchange Online (Plan 1)")]
    );
    assert!(person(&read, "Samir Nagheenanajar").licenses.is_empty());
    let milton = person(&read, "Milton Waddams");
    assert!(!milton.enabled);
    assert_eq!(
        milton.groups,
        vec!["All Staff", "Initech Staff"],
        "nested membership is transitive"
    );
    assert_eq!(
        milton.email.as_deref(),
        Some("milton.waddams@initech.example")
    );
    assert_eq!(
        milton.upn.as_deref(),
        Some("milton.waddams@initech.example")
    );
    assert!(read.warnings.is_empty(), "{:?}", read.warnings);
}

#[tokio::test]
async fn a_group_scopes_the_read_to_its_transitive_members() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let scoped = |group: &str| Config {
        group: Some(group.to_owned()),
        ..sandbox.config()
    };
    let acme = read(&directory(&scoped("Acme Staff")), None).await;
    assert_eq!(acme.people.len(), 5);
    assert!(
        acme.people
            .iter()
            .all(|p| p.groups.contains(&"Acme Staff".to_owned()))
    );
    let all = read(&directory(&scoped("all staff")), None).await;
    assert_eq!(all.people.len(), 12, "nested groups' members count");
    let by_id = sandbox.group_id("Globex Staff").expect("group");
    assert_eq!(
        read(&directory(&scoped(&by_id)), None).await.people.len(),
        4
    );

    let error = directory(&scoped("Nobody"))
        .read(None)
        .await
        .expect_err("unknown group");
    assert!(matches!(error, DirectoryError::Malformed { .. }), "{error}");
    assert!(
        error.to_string().contains("no group is named \"Nobody\""),
        "{error}"
    );
}

/// What a delta run must produce: the same people as a fresh full read.
async fn full_read(sandbox: &Sandbox) -> Vec<Person> {
    read(&directory(&config(sandbox, 999, false)), None)
        .await
        .people
}

#[tokio::test]
async fn a_delta_run_reads_only_changes_and_merges_them() {
    let sandbox = Sandbox::start(Seed::generated(3_000, 3)).await;
    let graph = directory(&sandbox.config());
    let first = read(&graph, None).await;
    assert_eq!(first.people.len(), 3_000);
    let cursor = first.cursor.expect("a delta read leaves a cursor");

    // An admin's day: a hire, a rename, a leaver blocked, one deleted, a licence added.
    let hire = sandbox.add_user(user(
        "",
        "Katherine",
        "Johnson",
        "generated.example",
        &[rollcall_graph::sandbox::SKU_SPB.0],
    ));
    let dept = sandbox.group_id("Department 1").expect("group");
    assert!(sandbox.add_member(&dept, &hire));
    assert!(sandbox.update_user(&generated_user_id(1), |u| {
        u.display_name = Some(Some("Alan M. Turing".to_owned()));
    }));
    assert!(sandbox.disable_user(&generated_user_id(2)));
    assert!(sandbox.delete_user(&generated_user_id(3)));
    assert!(sandbox.assign_license(&generated_user_id(9), "SPB"));
    sandbox.reset_counters();

    let second = read(&graph, Some(&cursor)).await;
    assert_eq!(second.completeness, Completeness::Complete);
    assert_eq!(
        sandbox.requests("/users"),
        1,
        "one delta page holds five changes"
    );
    assert_eq!(sandbox.token_requests(), 0, "the token is still cached");
    assert_eq!(second.people, full_read(&sandbox).await);
    assert_eq!(second.people.len(), 3_000);
    let katherine = person(&second, "Katherine Johnson");
    assert!(katherine.groups.contains(&"Department 1".to_owned()));
    assert!(katherine.groups.contains(&"All Staff".to_owned()));
    assert_eq!(person(&second, "Alan M. Turing").id, generated_user_id(1));
    assert!(!second.people.iter().any(|p| p.id == generated_user_id(3)));
    let nine = second
        .people
        .iter()
        .find(|p| p.id == generated_user_id(9))
        .expect("user 9");
    assert_eq!(skus(nine), vec![("SPB", "Microsoft 365 Business Premium")]);

    // A round without changes reads one empty page.
    let third_cursor = second.cursor.expect("cursor");
    sandbox.reset_counters();
    let third = read(&graph, Some(&third_cursor)).await;
    assert_eq!(third.people, second.people);
    assert_eq!(sandbox.requests("/users"), 1);
}

#[tokio::test]
async fn an_expired_delta_link_falls_back_to_a_full_read() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let graph = directory(&sandbox.config());
    let cursor = read(&graph, None).await.cursor.expect("cursor");
    sandbox.disable_user("00000000-0000-4000-a000-000000000001");
    sandbox.expire_delta_links();
    let again = read(&graph, Some(&cursor)).await;
    assert_eq!(again.completeness, Completeness::Complete);
    assert!(
        again
            .warnings
            .iter()
            .any(|w| w.contains("syncStateNotFound")),
        "{:?}",
        again.warnings
    );
    assert_eq!(again.people, full_read(&sandbox).await);
    assert!(!person(&again, "Ada Lovelace").enabled);
    assert!(again.cursor.is_some(), "a new round starts");
}

#[tokio::test]
async fn a_cursor_from_another_tenant_is_ignored() {
    let demo = Sandbox::start(Seed::demo()).await;
    let cursor = read(&directory(&demo.config()), None)
        .await
        .cursor
        .expect("cursor");
    let other = Sandbox::start(Seed::generated(20, 2)).await;
    let read = read(&directory(&other.config()), Some(&cursor)).await;
    assert_eq!(read.people.len(), 20);
    assert!(
        read.warnings.iter().any(|w| w.contains("another tenant")),
        "{:?}",
        read.warnings
    );
}

#[tokio::test]
async fn a_token_revoked_mid_read_is_renewed_once_and_the_read_completes() {
    let sandbox = Sandbox::start(Seed::generated(3_000, 0)).await;
    let graph = directory(&config(&sandbox, 500, false));
    sandbox.revoke_tokens_after("/users", 2);
    let read = read(&graph, None).await;
    assert_eq!(read.completeness, Completeness::Complete);
    assert_eq!(read.people.len(), 3_000);
    assert_eq!(sandbox.token_requests(), 2);
    // Six pages, and page three sent twice: once refused, once with the new token.
    assert_eq!(sandbox.requests("/users"), 7);
}

#[tokio::test]
async fn a_token_is_renewed_before_it_expires() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    sandbox.set_token_lifetime(Duration::from_secs(2));
    let graph = directory(&sandbox.config());
    read(&graph, None).await;
    assert_eq!(sandbox.token_requests(), 1);
    // Refreshed at half its life, never sent expired: no 401 is met.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let again = read(&graph, None).await;
    assert_eq!(again.completeness, Completeness::Complete);
    assert_eq!(sandbox.token_requests(), 2);
}

#[tokio::test]
async fn throttling_is_waited_out_as_retry_after_asks() {
    let sandbox = Sandbox::start(Seed::generated(1_500, 2)).await;
    let graph = directory(&config(&sandbox, 999, false));
    sandbox.throttle("/users", 2, 1);
    sandbox.fail("/groups", 1);
    let started = Instant::now();
    let read = read(&graph, None).await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "two Retry-After: 1 answers were not waited for: {:?}",
        started.elapsed()
    );
    assert_eq!(read.completeness, Completeness::Complete);
    assert_eq!(read.people.len(), 1_500);
    assert_eq!(sandbox.requests("/users"), pages(1_500, 999) + 2);
}

#[tokio::test]
async fn a_read_cut_off_part_way_is_incomplete_with_what_was_read() {
    let sandbox = Sandbox::start(Seed::generated(3_000, 2)).await;
    sandbox.cut_after("/users", 2);
    let graph = directory(&config(&sandbox, 500, true));
    let read = read(&graph, None).await;
    let Completeness::Incomplete { reason } = &read.completeness else {
        panic!("a cut-off read claimed to be complete");
    };
    assert!(reason.contains("stopped after 2 pages"), "{reason}");
    assert_eq!(read.people.len(), 1_000, "the pages read are kept");
    assert!(read.cursor.is_none(), "no delta link from a broken round");
    // Every attempt at the third page was cut: the retry policy's four.
    assert_eq!(sandbox.requests("/users"), 2 + 4);
}

#[tokio::test]
async fn a_delta_round_cut_off_keeps_the_snapshot_and_is_incomplete() {
    let sandbox = Sandbox::start(Seed::generated(300, 0)).await;
    let graph = directory(&config(&sandbox, 100, true));
    let cursor = read(&graph, None).await.cursor.expect("cursor");
    for i in 0..250 {
        sandbox.disable_user(&generated_user_id(i));
    }
    sandbox.cut_after("/users/delta", 1);
    let read = read(&graph, Some(&cursor)).await;
    assert!(!read.completeness.is_complete());
    assert_eq!(read.people.len(), 300);
    let disabled = read.people.iter().filter(|p| !p.enabled).count();
    let seeded_beyond = (100..300).filter(|i| i % 20 == 19).count();
    assert_eq!(
        disabled,
        100 + seeded_beyond,
        "the first page's changes, and the seed's own disabled users"
    );
}

#[tokio::test]
async fn a_read_that_reads_nothing_is_an_error_not_zero_people() {
    let sandbox = Sandbox::start(Seed::generated(50, 0)).await;
    sandbox.cut_after("/users", 0);
    let error = directory(&config(&sandbox, 999, false))
        .read(None)
        .await
        .expect_err("nothing read");
    assert!(
        matches!(error, DirectoryError::Unavailable { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("list users"), "{error}");
}

#[tokio::test]
async fn a_wrong_secret_is_a_clear_error_that_does_not_quote_it() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let config = Config {
        client_secret: Secret::new("wrong-s3cret-value"),
        ..sandbox.config()
    };
    let graph = directory(&config);
    let error = graph.read(None).await.expect_err("refused");
    let text = error.to_string();
    assert!(text.contains("invalid_client"), "{text}");
    assert!(text.contains("AADSTS7000215"), "{text}");
    assert!(
        text.contains("client_secret"),
        "the hint names the setting: {text}"
    );
    assert!(!text.contains("wrong-s3cret-value"), "{text}");
    assert!(!format!("{graph:?} {config:?} {error:?}").contains("wrong-s3cret-value"));
    assert_eq!(
        sandbox.requests("/users"),
        0,
        "nothing is read without a token"
    );
}

#[tokio::test]
async fn the_sandbox_speaks_graphs_contract() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let http = reqwest::Client::new();
    let base = sandbox.url();
    let tenant = sandbox.tenant_id();

    let discovery: serde_json::Value = http
        .get(format!(
            "{base}/{tenant}/v2.0/.well-known/openid-configuration"
        ))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let token_endpoint = discovery["token_endpoint"]
        .as_str()
        .expect("endpoint")
        .to_owned();
    assert_eq!(token_endpoint, format!("{base}/{tenant}/oauth2/v2.0/token"));

    let unauthenticated = http
        .get(format!("{base}/v1.0/users"))
        .send()
        .await
        .expect("send");
    assert_eq!(unauthenticated.status(), 401);
    let body: serde_json::Value = unauthenticated.json().await.expect("json");
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    assert!(body["error"]["innerError"]["request-id"].is_string());

    let token: serde_json::Value = http
        .post(&token_endpoint)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &sandbox.client_id()),
            ("client_secret", &sandbox.client_secret()),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(token["token_type"], "Bearer");
    let bearer = format!("Bearer {}", token["access_token"].as_str().expect("token"));
    let get = |url: String| http.get(url).header("Authorization", bearer.clone()).send();

    let page: serde_json::Value = get(format!("{base}/v1.0/users?$select=id,displayName&$top=5"))
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(
        page["@odata.context"],
        format!("{base}/v1.0/$metadata#users(id,displayName)")
    );
    let items = page["value"].as_array().expect("value");
    assert_eq!(items.len(), 5);
    assert_eq!(items[0]["@odata.type"], "#microsoft.graph.user");
    assert!(items[0].get("mail").is_none(), "only selected properties");
    let next = page["@odata.nextLink"].as_str().expect("next").to_owned();
    assert!(next.starts_with(&format!("{base}/v1.0/users?")), "{next}");
    let second: serde_json::Value = get(next).await.expect("send").json().await.expect("json");
    assert_eq!(second["value"].as_array().expect("value").len(), 5);
    let next = second["@odata.nextLink"].as_str().expect("next").to_owned();
    let last: serde_json::Value = get(next).await.expect("send").json().await.expect("json");
    assert_eq!(last["value"].as_array().expect("value").len(), 3);
    assert!(last.get("@odata.nextLink").is_none());

    let too_big = get(format!("{base}/v1.0/users?$top=1000"))
        .await
        .expect("send");
    assert_eq!(too_big.status(), 400);
    let unknown = get(format!("{base}/v1.0/users?$select=shoeSize"))
        .await
        .expect("send");
    assert_eq!(unknown.status(), 400);
    let body: serde_json::Value = unknown.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("shoeSize"),
        "{body}"
    );
    let missing = get(format!("{base}/v1.0/users/no-such-id"))
        .await
        .expect("send");
    assert_eq!(missing.status(), 404);

    // The delta function answers under both spellings, and its last page carries a deltaLink.
    for path in ["users/delta", "users/delta()"] {
        let delta: serde_json::Value = get(format!("{base}/v1.0/{path}?$select=id"))
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert_eq!(delta["value"].as_array().expect("value").len(), 13);
        let link = delta["@odata.deltaLink"].as_str().expect("deltaLink");
        assert!(link.starts_with(&format!("{base}/v1.0/users/delta()?$deltatoken=")));
    }
    let member_of: serde_json::Value = get(format!(
        "{base}/v1.0/users/00000000-0000-4000-a000-000000000001/transitiveMemberOf"
    ))
    .await
    .expect("send")
    .json()
    .await
    .expect("json");
    let names: Vec<&str> = member_of["value"]
        .as_array()
        .expect("value")
        .iter()
        .map(|g| g["displayName"].as_str().expect("name"))
        .collect();
    assert_eq!(names, vec!["Acme Staff", "All Staff"]);
    let skus: serde_json::Value = get(format!("{base}/v1.0/subscribedSkus"))
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let spb = skus["value"]
        .as_array()
        .expect("value")
        .iter()
        .find(|s| s["skuPartNumber"] == "SPB")
        .expect("SPB");
    assert_eq!(spb["consumedUnits"], 9);
    assert_eq!(spb["@odata.type"], "#microsoft.graph.subscribedSku");

    let wrong: serde_json::Value = http
        .post(&token_endpoint)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &sandbox.client_id()),
            ("client_secret", "nope"),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(wrong["error"], "invalid_client");
}

#[tokio::test]
async fn a_delta_link_from_an_empty_tenant_reports_the_first_hire() {
    let sandbox = Sandbox::start(Seed::generated(0, 0)).await;
    let graph = directory(&sandbox.config());
    let empty = read(&graph, None).await;
    assert!(empty.people.is_empty());
    assert_eq!(empty.completeness, Completeness::Complete);
    let cursor = empty.cursor.expect("cursor");
    sandbox.add_user(user("", "Mary", "Jackson", "generated.example", &[]));
    let next = read(&graph, Some(&cursor)).await;
    assert_eq!(next.people.len(), 1);
    assert_eq!(next.people[0].display_name, "Mary Jackson");
}
