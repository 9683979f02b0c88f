//! Microsoft's own example payloads (the response examples of the Graph and identity platform
//! reference pages, kept under `tests/fixtures/`), read by the model types the client reads live
//! answers with. The sandbox is written by the same hands as the client, so a misread field
//! would be mirrored in both and pass every sandbox test; these payloads were written by
//! Microsoft.

use rollcall_graph::model::{
    DirectoryObject, OAuthError, ODataError, Page, SubscribedSku, TokenResponse, User,
};
use serde::de::DeserializeOwned;

fn fixture<T: DeserializeOwned>(name: &str) -> T {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{path}:{}:{}: {e}", e.line(), e.column()))
}

#[test]
fn a_users_page_reads_nulls_as_present_and_keeps_its_next_link() {
    let page: Page<User> = fixture("list-users");
    assert_eq!(page.value.len(), 2);
    assert!(
        page.next_link
            .as_deref()
            .is_some_and(|l| l.contains("$skiptoken="))
    );
    assert_eq!(page.delta_link, None);
    let room = &page.value[0];
    // `"givenName": null` is present and empty, not absent: a delta can clear a name.
    assert_eq!(room.given_name, Some(None));
    assert_eq!(room.mail, Some(Some("Adams@contoso.com".to_owned())));
    // Not selected, so not reported: absent, never read as "disabled" or "no licences".
    assert_eq!(room.account_enabled, None);
    assert_eq!(room.assigned_licenses, None);
    assert_eq!(
        page.value[1].surname,
        Some(Some("Administrator".to_owned()))
    );
}

#[test]
fn a_users_licences_and_sign_in_state() {
    let user: User = fixture("user-licences");
    assert_eq!(user.account_enabled, Some(Some(true)));
    let licences = user.assigned_licenses.flatten().expect("licences");
    assert_eq!(
        licences[0].sku_id.as_deref(),
        Some("c7df2760-2c81-4ef7-b578-5b5392b571df")
    );
    assert_eq!(licences[0].disabled_plans.len(), 1);
}

#[test]
fn a_delta_round_pages_then_ends_with_a_delta_link_and_removals() {
    let first: Page<User> = fixture("users-delta-page");
    assert!(first.next_link.is_some() && first.delta_link.is_none());
    let last: Page<User> = fixture("users-delta-last");
    assert!(last.next_link.is_none());
    assert!(
        last.delta_link
            .as_deref()
            .is_some_and(|l| l.contains("$deltatoken="))
    );
    let removed = &last.value[0];
    assert_eq!(
        removed.removed.as_ref().map(|r| r.reason.as_str()),
        Some("changed")
    );
    // A removed item carries only its id: nothing else may be read as cleared.
    assert_eq!(removed.display_name, None);
    assert_eq!(last.value[1].removed, None);
    assert_eq!(last.value[1].job_title, Some(None));
}

#[test]
fn subscribed_skus_read_bought_and_used_seats() {
    let page: Page<SubscribedSku> = fixture("subscribed-skus");
    let sku = &page.value[0];
    assert_eq!(sku.sku_part_number.as_deref(), Some("ENTERPRISEPREMIUM"));
    assert_eq!(sku.consumed_units, Some(14));
    let prepaid = sku.prepaid_units.as_ref().expect("prepaidUnits");
    assert_eq!((prepaid.enabled, prepaid.locked_out), (Some(25), Some(0)));
}

#[test]
fn transitive_members_keep_their_types() {
    let page: Page<DirectoryObject> = fixture("transitive-members");
    let types: Vec<_> = page.value.iter().map(|m| m.odata_type.as_deref()).collect();
    assert_eq!(
        types,
        [
            Some("#microsoft.graph.user"),
            Some("#microsoft.graph.group"),
            Some("#microsoft.graph.device")
        ]
    );
}

#[test]
fn errors_and_tokens_in_microsofts_shapes() {
    let error: ODataError = fixture("error-not-found");
    assert_eq!(error.error.code, "Request_ResourceNotFound");
    let inner = error.error.inner_error.expect("innerError");
    assert_eq!(
        inner.request_id.as_deref(),
        Some("2c1b5a32-5e6b-4b2b-a7a4-2a4e0ef1b0c2")
    );
    let token: TokenResponse = fixture("token");
    assert_eq!(
        (token.token_type.as_str(), token.expires_in),
        ("Bearer", 3599)
    );
    let refused: OAuthError = fixture("token-error");
    assert_eq!(refused.error, "invalid_client");
    assert_eq!(refused.error_codes, [7000215]);
}
