//! Microsoft Graph's wire format: the JSON objects of Graph v1.0 and of the Microsoft identity
//! platform's token endpoint, as Microsoft names them.
//!
//! The client and the sandbox both speak these types, so a field the client reads is a field the
//! sandbox writes, and this is the only file where Graph's field names appear. Names, casing and
//! the `@odata.*` annotations follow Microsoft's Graph OpenAPI description.
//!
//! A user's properties are [`Patch`]es: a delta query reports an updated user with "at least the
//! properties that changed", so a property that is absent must be told apart from one that is
//! present and `null` (a mail address removed). Full reads carry every selected property.

use serde::{Deserialize, Deserializer, Serialize};

/// The `@odata.type` of users in collections.
pub const USER_TYPE: &str = "#microsoft.graph.user";
/// The `@odata.type` of groups in collections.
pub const GROUP_TYPE: &str = "#microsoft.graph.group";
/// The `@odata.type` of subscribed SKUs.
pub const SKU_TYPE: &str = "#microsoft.graph.subscribedSku";

/// The user properties rollcall reads, in the order it asks for them (`$select`): only what
/// becomes part of a [`rollcall_core::Person`], since Graph's full user is large.
pub const USER_SELECT: &[&str] = &[
    "id",
    "displayName",
    "givenName",
    "surname",
    "mail",
    "userPrincipalName",
    "accountEnabled",
    "assignedLicenses",
    "jobTitle",
    "department",
];

/// The group properties rollcall reads.
pub const GROUP_SELECT: &[&str] = &["id", "displayName"];

/// The subscribed-SKU properties rollcall reads.
pub const SKU_SELECT: &[&str] = &["skuId", "skuPartNumber", "consumedUnits", "prepaidUnits"];

/// The `$select` that asks a membership list for ids and types only.
pub const MEMBER_SELECT: &[&str] = &["id"];

/// A property that may be absent (not reported), present and `null`, or present with a value.
pub type Patch<T> = Option<Option<T>>;

/// Reads a [`Patch`]: serde calls this only when the key is present, so `null` becomes
/// `Some(None)` and an absent key stays `None` through `#[serde(default)]`.
fn present<'de, D, T>(deserializer: D) -> Result<Patch<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// `microsoft.graph.user`, restricted to the properties rollcall selects.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct User {
    #[serde(
        rename = "@odata.type",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub odata_type: Option<String>,
    pub id: String,
    #[serde(
        rename = "displayName",
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub display_name: Patch<String>,
    #[serde(
        rename = "givenName",
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub given_name: Patch<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub surname: Patch<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub mail: Patch<String>,
    #[serde(
        rename = "userPrincipalName",
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub user_principal_name: Patch<String>,
    #[serde(
        rename = "accountEnabled",
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub account_enabled: Patch<bool>,
    #[serde(
        rename = "assignedLicenses",
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub assigned_licenses: Patch<Vec<AssignedLicense>>,
    #[serde(
        rename = "jobTitle",
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub job_title: Patch<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub department: Patch<String>,
    /// On a delta item: the user left the set (`reason` `deleted` or `changed`).
    #[serde(rename = "@removed", default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<Removed>,
}

/// `@removed` on a delta item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    pub reason: String,
}

/// `microsoft.graph.assignedLicense`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AssignedLicense {
    #[serde(rename = "skuId", default)]
    pub sku_id: Option<String>,
    #[serde(rename = "disabledPlans", default)]
    pub disabled_plans: Vec<String>,
}

/// `microsoft.graph.group`, restricted to what rollcall selects.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Group {
    #[serde(
        rename = "@odata.type",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub odata_type: Option<String>,
    pub id: String,
    #[serde(rename = "displayName", default)]
    pub display_name: Option<String>,
}

/// `microsoft.graph.directoryObject` as a membership list returns it with `$select=id`: a typed
/// reference (user, group, device, service principal, contact).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryObject {
    #[serde(rename = "@odata.type", default)]
    pub odata_type: Option<String>,
    pub id: String,
    #[serde(
        rename = "displayName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub display_name: Option<String>,
}

/// `microsoft.graph.subscribedSku`: a licence the tenant holds.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SubscribedSku {
    #[serde(
        rename = "@odata.type",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub odata_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "skuId", default)]
    pub sku_id: Option<String>,
    #[serde(rename = "skuPartNumber", default)]
    pub sku_part_number: Option<String>,
    #[serde(
        rename = "capabilityStatus",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub capability_status: Option<String>,
    #[serde(
        rename = "consumedUnits",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub consumed_units: Option<i32>,
    #[serde(
        rename = "prepaidUnits",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub prepaid_units: Option<LicenseUnitsDetail>,
    #[serde(rename = "appliesTo", default, skip_serializing_if = "Option::is_none")]
    pub applies_to: Option<String>,
}

/// `microsoft.graph.licenseUnitsDetail`: purchased units by state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LicenseUnitsDetail {
    #[serde(default)]
    pub enabled: Option<i32>,
    #[serde(default)]
    pub suspended: Option<i32>,
    #[serde(default)]
    pub warning: Option<i32>,
    #[serde(default)]
    pub locked_out: Option<i32>,
}

/// One page of a collection or of a delta function: `value`, and `@odata.nextLink` while more
/// pages follow; a delta round's last page carries `@odata.deltaLink` instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    #[serde(
        rename = "@odata.context",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub context: Option<String>,
    pub value: Vec<T>,
    #[serde(
        rename = "@odata.nextLink",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub next_link: Option<String>,
    #[serde(
        rename = "@odata.deltaLink",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub delta_link: Option<String>,
}

/// `microsoft.graph.subscription`: a change-notification subscription, as `/subscriptions`
/// answers and takes it. Dates stay text here (Graph writes up to seven fractional digits);
/// the client parses them. `clientState` is the shared secret notifications carry back, so
/// `Debug` does not print it.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeSubscription {
    #[serde(
        rename = "@odata.type",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub odata_type: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    pub resource: String,
    /// Comma-separated `created`, `updated`, `deleted`.
    pub change_type: String,
    pub notification_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_notification_url: Option<String>,
    pub expiration_date_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_resource_data: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_supported_tls_version: Option<String>,
}

impl std::fmt::Debug for ChangeSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeSubscription")
            .field("id", &self.id)
            .field("resource", &self.resource)
            .field("change_type", &self.change_type)
            .field("notification_url", &self.notification_url)
            .field(
                "lifecycle_notification_url",
                &self.lifecycle_notification_url,
            )
            .field("expiration_date_time", &self.expiration_date_time)
            .field("client_state", &self.client_state.as_ref().map(|_| ".."))
            .finish_non_exhaustive()
    }
}

/// `microsoft.graph.changeNotificationCollection`: what Graph POSTs to a notification or
/// lifecycle URL. Acknowledge it with 202 at once and do the work afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeNotificationCollection {
    pub value: Vec<ChangeNotification>,
    /// Only with rich notifications (resource data included), which rollcall does not ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_tokens: Option<Vec<String>>,
}

/// `microsoft.graph.changeNotification`: one change (`changeType`, `resource`,
/// `resourceData`) or one lifecycle event (`lifecycleEvent`). `Debug` hides `clientState`.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeNotification {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub subscription_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_expiration_date_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_state: Option<String>,
    /// `created`, `updated` or `deleted`; absent on lifecycle events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_type: Option<String>,
    /// The changed object's path, as Graph writes it (`Users/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_data: Option<ResourceData>,
    /// `reauthorizationRequired`, `subscriptionRemoved` or `missed`; only on lifecycle events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_event: Option<String>,
}

impl std::fmt::Debug for ChangeNotification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeNotification")
            .field("subscription_id", &self.subscription_id)
            .field("change_type", &self.change_type)
            .field("resource", &self.resource)
            .field("resource_data", &self.resource_data)
            .field("lifecycle_event", &self.lifecycle_event)
            .field("client_state", &self.client_state.as_ref().map(|_| ".."))
            .finish_non_exhaustive()
    }
}

impl ChangeNotification {
    /// Whether the notification carries this `clientState`, compared in constant time: a
    /// notification that does not is not from Graph (or not for this subscription) and must be
    /// ignored.
    pub fn client_state_matches(&self, expected: &str) -> bool {
        let Some(got) = self.client_state.as_deref() else {
            return false;
        };
        let (a, b) = (got.as_bytes(), expected.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// `microsoft.graph.resourceData` of a basic notification: the changed object's id and type.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResourceData {
    #[serde(
        rename = "@odata.type",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub odata_type: Option<String>,
    #[serde(rename = "@odata.id", default, skip_serializing_if = "Option::is_none")]
    pub odata_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(
        rename = "organizationId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub organization_id: Option<String>,
}

/// The token endpoint's answer to a client-credentials grant.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_expires_in: Option<u64>,
    pub access_token: String,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("access_token", &"..")
            .finish_non_exhaustive()
    }
}

/// The token endpoint's error body (RFC 6749 §5.2 plus Entra's extras).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OAuthError {
    pub error: String,
    #[serde(default)]
    pub error_description: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_codes: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

/// `microsoft.graph.ODataErrors.ODataError`: every Graph error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ODataError {
    pub error: MainError,
}

/// `microsoft.graph.ODataErrors.MainError`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MainError {
    pub code: String,
    pub message: String,
    #[serde(
        rename = "innerError",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub inner_error: Option<InnerError>,
}

/// `microsoft.graph.ODataErrors.InnerError`: what Microsoft support asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InnerError {
    #[serde(
        rename = "request-id",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub request_id: Option<String>,
    #[serde(
        rename = "client-request-id",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub client_request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
}

/// The parts of a tenant's OpenID Connect discovery document clients read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenIdConfiguration {
    pub issuer: String,
    pub token_endpoint: String,
    pub authorization_endpoint: String,
    pub jwks_uri: String,
    pub token_endpoint_auth_methods_supported: Vec<String>,
    pub response_types_supported: Vec<String>,
    pub tenant_region_scope: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_null_and_present_properties_differ() {
        let user: User =
            serde_json::from_str(r#"{"id":"1","mail":null,"displayName":"Ann"}"#).expect("user");
        assert_eq!(user.mail, Some(None));
        assert_eq!(user.display_name, Some(Some("Ann".to_owned())));
        assert_eq!(user.surname, None);
        let back = serde_json::to_value(&user).expect("json");
        assert_eq!(
            back,
            serde_json::json!({"id":"1","mail":null,"displayName":"Ann"})
        );
    }

    #[test]
    fn odata_errors_parse() {
        let body = r#"{"error":{"code":"Request_ResourceNotFound","message":"gone",
            "innerError":{"request-id":"r1","date":"2026-01-01T00:00:00"}}}"#;
        let error: ODataError = serde_json::from_str(body).expect("error");
        assert_eq!(error.error.code, "Request_ResourceNotFound");
        assert_eq!(
            error
                .error
                .inner_error
                .and_then(|i| i.request_id)
                .as_deref(),
            Some("r1")
        );
    }
}
