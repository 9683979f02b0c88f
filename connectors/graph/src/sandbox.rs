//! A stateful Microsoft Graph and identity platform, for tests, demos and `rollcall sandbox graph`.
//!
//! rollcall cannot test against a real tenant, and a mock that answers anything would let the
//! client's mistakes through. This sandbox keeps one tenant's users, groups (nested) and
//! subscribed SKUs in memory and enforces what Microsoft's Graph v1.0 documentation and the Graph OpenAPI description
//! require:
//!
//! - the client-credentials token endpoint (`/{tenant}/oauth2/v2.0/token`, secret in the form or
//!   as HTTP Basic), its OpenID discovery document, and OAuth error bodies (`invalid_client` …);
//!   the delegated grants too (`/authorize` approves at once; codes work once; refresh tokens
//!   come back new with every refresh), as Microsoft's own libraries use them;
//! - `$filter` on users (`eq`, `startsWith`, and `endsWith` and `$count` only with
//!   `ConsistencyLevel: eventual`), and `PATCH /users/{id}`, a change that reaches delta and
//!   subscriptions like an admin's;
//! - a Bearer token on every Graph call, checked against the tokens issued and their lifetime
//!   (401 `InvalidAuthenticationToken` otherwise);
//! - `$select` (unknown properties refused), `$top` (1–999) and `$skiptoken` paging with
//!   absolute `@odata.nextLink`s, `@odata.context`, and `@odata.type` on every item;
//! - `/users/delta` (also `/users/delta()`) with real delta semantics: state is versioned, a
//!   deltaLink returns exactly the users changed (or `@removed`) since it was issued, and
//!   [`Sandbox::expire_delta_links`] makes old links answer 410 `syncStateNotFound`;
//! - `/subscriptions` (change notifications): a create is validated as Graph validates it
//!   (resource `users`, `groups`, `users/{id}`, `groups/{id}`, `groups/{id}/members`; change
//!   types `created`/`updated`/`deleted`; an expiry in the future and at most 41,760 minutes
//!   ahead; `clientState` up to 128 characters), then the validation handshake is made — a POST
//!   to `notificationUrl?validationToken=…` (and to the lifecycle URL) that must answer 200
//!   `text/plain` with the token within 10 s ([`Sandbox::set_validation_timeout`]), else 400
//!   `ValidationError` — and only then is the subscription stored (201). `PATCH` renews within
//!   the same bounds, `DELETE` answers 204; a lapsed subscription is gone (404, not listed,
//!   not notified);
//! - notifications: every change made through the hooks below ([`Sandbox::add_user`],
//!   [`Sandbox::update_user`], [`Sandbox::delete_user`], licences, groups and members) is POSTed
//!   as a `changeNotificationCollection` (`subscriptionId`, `clientState`, `changeType`,
//!   `resource: "Users/{id}"`, `resourceData {id, @odata.type, @odata.id}`, `tenantId`) to each
//!   matching live subscription, on a task of its own; failures are counted
//!   ([`Sandbox::notification_failures`]), never fatal. As in Graph, a new user or group is
//!   reported as `updated`. Lifecycle events are sent on demand
//!   ([`Sandbox::lifecycle_notification`]), and [`Sandbox::expire_subscription`],
//!   [`Sandbox::set_subscription_expiry`] and [`Sandbox::remove_subscription`] stand in for time
//!   passing and for Graph dropping a subscription;
//! - errors in OData's `{"error":{"code","message","innerError":{"request-id","date"}}}` shape.
//!
//! Faults are injected per path prefix, relative to `/v1.0` (`/users`, `/groups`, and
//! `/{tenant}/oauth2` for the token endpoint): [`Sandbox::throttle`] (429 with `Retry-After`),
//! [`Sandbox::fail`] (503), [`Sandbox::cut_after`] (the connection drops mid-answer),
//! [`Sandbox::revoke_tokens_after`] (tokens die mid-run). The server stops when its handle is
//! dropped. Paging is keyset paging on object ids, so a user added or removed between pages
//! neither shifts nor repeats the others, as with Graph's own skip tokens.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, OriginalUri, Path, Query, Request, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::Config;
use crate::model::{
    AssignedLicense, ChangeNotification, ChangeNotificationCollection, ChangeSubscription,
    DirectoryObject, GROUP_TYPE, InnerError, LicenseUnitsDetail, MainError, OAuthError, ODataError,
    OpenIdConfiguration, ResourceData, SKU_TYPE, SubscribedSku, TokenResponse, USER_SELECT,
    USER_TYPE, User,
};

/// Graph's default page when a request names no `$top`.
const DEFAULT_PAGE_SIZE: usize = 100;
/// Graph's largest page.
const MAX_PAGE_SIZE: usize = 999;
/// The lifetime of tokens when a seed names none: Entra's usual hour, less a second.
const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 3599;

/// A group in a seed: members are user or group ids (nested groups count transitively).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedGroup {
    pub id: String,
    pub display_name: String,
    #[serde(default)]
    pub members: Vec<String>,
}

/// What the sandbox holds when it starts, as JSON. Users and SKUs are written in Graph's own
/// shape (`displayName`, `assignedLicenses: [{"skuId": …}]`, `skuPartNumber`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Seed {
    /// The tenant the token endpoint answers for (a GUID or a domain).
    pub tenant_id: String,
    /// The one app registration that may sign in.
    pub client_id: String,
    /// Its client secret. Written in the seed in the clear: it is a test value.
    pub client_secret: String,
    #[serde(default = "default_token_lifetime")]
    pub token_lifetime_secs: u64,
    #[serde(default)]
    pub skus: Vec<SubscribedSku>,
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub groups: Vec<SeedGroup>,
}

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seed")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &"..")
            .field("users", &self.users.len())
            .field("groups", &self.groups.len())
            .finish_non_exhaustive()
    }
}

fn default_token_lifetime() -> u64 {
    DEFAULT_TOKEN_LIFETIME_SECS
}

/// Well-known SKU ids (the same in every tenant) and their part numbers.
pub const SKU_SPB: (&str, &str) = ("cbdc14ab-d96c-4c30-b9f4-6ada7cdc1d46", "SPB");
pub const SKU_BUSINESS_BASIC: (&str, &str) = (
    "3b555118-da6a-4418-894f-7df1e2096870",
    "O365_BUSINESS_ESSENTIALS",
);
pub const SKU_E3: (&str, &str) = ("6fd2c87f-b296-42f0-b197-1e91e994b900", "ENTERPRISEPACK");
pub const SKU_EXCHANGE: (&str, &str) = ("4b9405b0-7788-4568-add1-99614e613b69", "EXCHANGESTANDARD");
pub const SKU_FLOW_FREE: (&str, &str) = ("f30db892-07e9-47e9-837c-80727f46fd3d", "FLOW_FREE");

fn sku(tenant: &str, (id, part): (&str, &str), units: i32) -> SubscribedSku {
    SubscribedSku {
        odata_type: None,
        id: Some(format!("{tenant}_{id}")),
        sku_id: Some(id.to_owned()),
        sku_part_number: Some(part.to_owned()),
        capability_status: Some("Enabled".to_owned()),
        consumed_units: Some(0),
        prepaid_units: Some(LicenseUnitsDetail {
            enabled: Some(units),
            suspended: Some(0),
            warning: Some(0),
            locked_out: Some(0),
        }),
        applies_to: Some("User".to_owned()),
    }
}

/// A user as seeds and tests write them: every selected property present.
pub fn user(id: &str, given: &str, surname: &str, domain: &str, skus: &[&str]) -> User {
    let login = format!(
        "{}.{}",
        given.to_ascii_lowercase(),
        surname.to_ascii_lowercase()
    );
    User {
        odata_type: None,
        id: id.to_owned(),
        display_name: Some(Some(format!("{given} {surname}"))),
        given_name: Some(Some(given.to_owned())),
        surname: Some(Some(surname.to_owned())),
        mail: Some(Some(format!("{login}@{domain}"))),
        user_principal_name: Some(Some(format!("{login}@{domain}"))),
        account_enabled: Some(Some(true)),
        assigned_licenses: Some(Some(
            skus.iter()
                .map(|s| AssignedLicense {
                    sku_id: Some((*s).to_owned()),
                    disabled_plans: Vec::new(),
                })
                .collect(),
        )),
        job_title: Some(None),
        department: Some(None),
        removed: None,
    }
}

impl Seed {
    /// One small tenant (`demo.onmicrosoft.com`) shared by three clients of the demo MSP, each
    /// in its own staff group (`Acme Staff`, `Globex Staff`, `Initech Staff`, all nested in
    /// `All Staff`), with Business Premium, Business Basic, Exchange and free Power Automate
    /// licences, one disabled user and one service account. App: client id
    /// `00000000-0000-4000-8000-000000000001`, secret `demo-graph-secret`.
    pub fn demo() -> Seed {
        let tenant = "demo.onmicrosoft.com";
        let (spb, basic, exchange, flow) = (
            SKU_SPB.0,
            SKU_BUSINESS_BASIC.0,
            SKU_EXCHANGE.0,
            SKU_FLOW_FREE.0,
        );
        let id = |n: u32| format!("00000000-0000-4000-a000-{n:012}");
        let people: &[(&str, &str, &str, &[&str])] = &[
            ("Ada", "Lovelace", "acme.example", &[spb]),
            ("Alan", "Turing", "acme.example", &[spb, flow]),
            ("Grace", "Hopper", "acme.example", &[spb]),
            ("Edsger", "Dijkstra", "acme.example", &[basic]),
            ("Barbara", "Liskov", "acme.example", &[spb]),
            ("Hank", "Scorpio", "globex.example", &[spb]),
            ("Frank", "Grimes", "globex.example", &[spb]),
            ("Lenny", "Leonard", "globex.example", &[basic]),
            ("Carl", "Carlson", "globex.example", &[spb]),
            ("Peter", "Gibbons", "initech.example", &[spb]),
            ("Milton", "Waddams", "initech.example", &[spb]),
            ("Samir", "Nagheenanajar", "initech.example", &[]),
            ("Scan", "Service", "acme.example", &[exchange]),
        ];
        let mut users: Vec<User> = people
            .iter()
            .enumerate()
            .map(|(i, (given, surname, domain, skus))| {
                user(&id(i as u32 + 1), given, surname, domain, skus)
            })
            .collect();
        // Milton left Initech: disabled, still licensed (the licence should be reclaimed).
        if let Some(milton) = users.get_mut(10) {
            milton.account_enabled = Some(Some(false));
        }
        if let Some(scanner) = users.get_mut(12) {
            scanner.display_name = Some(Some("Scanner (service)".to_owned()));
            scanner.given_name = Some(None);
            scanner.surname = Some(None);
        }
        let ids = |range: std::ops::Range<u32>| range.map(&id).collect::<Vec<_>>();
        let group = |n: u32, name: &str, members: Vec<String>| SeedGroup {
            id: format!("00000000-0000-4000-b000-{n:012}"),
            display_name: name.to_owned(),
            members,
        };
        let groups = vec![
            group(1, "Acme Staff", ids(1..6)),
            group(2, "Globex Staff", ids(6..10)),
            group(3, "Initech Staff", ids(10..13)),
            group(4, "Service Accounts", ids(13..14)),
            // Nested: the three clients' staff groups, not their people.
            group(
                5,
                "All Staff",
                (1..=3)
                    .map(|n| format!("00000000-0000-4000-b000-{n:012}"))
                    .collect(),
            ),
        ];
        Seed {
            tenant_id: tenant.to_owned(),
            client_id: "00000000-0000-4000-8000-000000000001".to_owned(),
            client_secret: "demo-graph-secret".to_owned(),
            token_lifetime_secs: DEFAULT_TOKEN_LIFETIME_SECS,
            skus: vec![
                sku(tenant, SKU_SPB, 25),
                sku(tenant, SKU_BUSINESS_BASIC, 5),
                sku(tenant, SKU_EXCHANGE, 2),
                sku(tenant, SKU_FLOW_FREE, 10000),
            ],
            users,
            groups,
        }
    }

    /// A deterministic tenant of `n_users` users and `n_groups` groups, for paging tests and
    /// benchmarks. Group 0 is `All Staff`, whose members are the other groups (nested); user
    /// `i` is a direct member of department `i mod (n_groups - 1)`. Seven users in ten hold
    /// Business Premium, two Office 365 E3, one none; every fourth also Exchange Online; one in
    /// twenty is disabled. Ids are GUID-shaped and sort in creation order.
    pub fn generated(n_users: usize, n_groups: usize) -> Seed {
        const GIVEN: &[&str] = &[
            "Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Ken", "Margaret", "Dennis",
            "Frances", "John", "Radia", "Tim", "Shafi", "Leslie", "Niklaus",
        ];
        const SURNAMES: &[&str] = &[
            "Lovelace",
            "Turing",
            "Hopper",
            "Dijkstra",
            "Liskov",
            "Knuth",
            "Thompson",
            "Hamilton",
            "Ritchie",
            "Allen",
            "McCarthy",
            "Perlman",
            "Berners-Lee",
            "Goldwasser",
            "Lamport",
            "Wirth",
            "Kay",
        ];
        let tenant = "generated.onmicrosoft.com";
        let users: Vec<User> = (0..n_users)
            .map(|i| {
                let given = GIVEN[i % GIVEN.len()];
                let surname = SURNAMES[(i / GIVEN.len()) % SURNAMES.len()];
                let mut skus = match i % 10 {
                    0..=6 => vec![SKU_SPB.0],
                    7 | 8 => vec![SKU_E3.0],
                    _ => vec![],
                };
                if i % 4 == 0 {
                    skus.push(SKU_EXCHANGE.0);
                }
                let mut u = user(
                    &generated_user_id(i),
                    given,
                    &format!("{surname}{i}"),
                    "generated.example",
                    &skus,
                );
                u.department = Some(Some(format!(
                    "Department {}",
                    i % n_groups.max(2).saturating_sub(1).max(1)
                )));
                if i % 20 == 19 {
                    u.account_enabled = Some(Some(false));
                }
                u
            })
            .collect();
        let group_id = |g: usize| format!("00000000-0000-4000-9000-{g:012x}");
        let mut groups = Vec::new();
        if n_groups > 0 {
            let departments = n_groups - 1;
            groups.push(SeedGroup {
                id: group_id(0),
                display_name: "All Staff".to_owned(),
                members: if departments == 0 {
                    users.iter().map(|u| u.id.clone()).collect()
                } else {
                    (1..=departments).map(group_id).collect()
                },
            });
            for d in 0..departments {
                groups.push(SeedGroup {
                    id: group_id(d + 1),
                    display_name: format!("Department {d}"),
                    members: users
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| i % departments == d)
                        .map(|(_, u)| u.id.clone())
                        .collect(),
                });
            }
        }
        Seed {
            tenant_id: tenant.to_owned(),
            client_id: "00000000-0000-4000-8000-000000000002".to_owned(),
            client_secret: "generated-graph-secret".to_owned(),
            token_lifetime_secs: DEFAULT_TOKEN_LIFETIME_SECS,
            skus: vec![
                sku(tenant, SKU_SPB, n_users as i32),
                sku(tenant, SKU_E3, n_users as i32),
                sku(tenant, SKU_EXCHANGE, n_users as i32),
            ],
            users,
            groups,
        }
    }

    /// Reads a seed file's text.
    pub fn from_json(text: &str) -> Result<Seed, SandboxError> {
        serde_json::from_str(text).map_err(|e| SandboxError::Seed(e.to_string()))
    }
}

/// The id [`Seed::generated`] gives its `i`-th user.
pub fn generated_user_id(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012x}")
}

/// Why a sandbox could not start.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("invalid sandbox seed: {0}")]
    Seed(String),
    #[error("sandbox server: {0}")]
    Io(#[from] std::io::Error),
}

// ---------------------------------------------------------------------------------------------
// The handle

/// A running sandbox. Dropping it stops the server.
pub struct Sandbox {
    server: rollcall_core::sandbox::SandboxServer,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Starts a sandbox on a free port of 127.0.0.1.
    ///
    /// # Panics
    /// When the seed is inconsistent or no port can be bound: this is test support, and a test
    /// cannot go on without its server.
    pub async fn start(seed: Seed) -> Sandbox {
        match Sandbox::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), seed).await {
            Ok(sandbox) => sandbox,
            Err(error) => panic!("the Graph sandbox could not start: {error}"),
        }
    }

    /// Starts a sandbox on the given address.
    pub async fn start_on(addr: SocketAddr, seed: Seed) -> Result<Sandbox, SandboxError> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(seed, format!("http://{addr}"))?);
        let server = rollcall_core::sandbox::SandboxServer::serve(
            listener,
            router(shared.clone()),
            "graph",
        )?;
        Ok(Sandbox { server, shared })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Graph's base URL, as a pipeline's `graph_url:` takes it.
    pub fn url(&self) -> String {
        self.shared.base.clone()
    }

    /// The identity platform's base URL, as a pipeline's `login_url:` takes it (the same
    /// server: one sandbox plays both).
    pub fn login_url(&self) -> String {
        self.shared.base.clone()
    }

    pub fn tenant_id(&self) -> String {
        self.shared.tenant_id.clone()
    }

    pub fn client_id(&self) -> String {
        self.shared.client_id.clone()
    }

    pub fn client_secret(&self) -> String {
        self.shared.client_secret.clone()
    }

    /// A directory configuration that reaches this sandbox with its app's credentials.
    pub fn config(&self) -> Config {
        Config {
            tenant_id: self.tenant_id(),
            client_id: self.client_id(),
            client_secret: rollcall_core::Secret::new(self.client_secret()),
            login_url: self.login_url(),
            graph_url: self.url(),
            group: None,
            page_size: crate::config::MAX_PAGE_SIZE,
            delta: true,
            rate_limit_per_second: 10_000,
        }
    }

    // --- What the sandbox holds -----------------------------------------------------------------

    /// Every user, in id order, as Graph would return them with every property selected.
    pub fn users(&self) -> Vec<User> {
        self.shared
            .db()
            .users
            .values()
            .map(|s| s.user.clone())
            .collect()
    }

    pub fn user(&self, id: &str) -> Option<User> {
        self.shared.db().users.get(id).map(|s| s.user.clone())
    }

    /// The id of the group with this display name.
    pub fn group_id(&self, name: &str) -> Option<String> {
        let db = self.shared.db();
        db.groups
            .iter()
            .find(|(_, g)| g.display_name == name)
            .map(|(id, _)| id.clone())
    }

    /// Each group's display name and its number of transitive members (users and groups), as
    /// `/groups/{id}/transitiveMembers` lists them: what a membership read must page through.
    pub fn group_sizes(&self) -> Vec<(String, usize)> {
        let db = self.shared.db();
        db.groups
            .iter()
            .map(|(id, g)| (g.display_name.clone(), db.transitive_members(id).len()))
            .collect()
    }

    // --- Changes, as an admin would make them ----------------------------------------------------

    /// Adds a user (an empty id is assigned) and returns its id. Properties left absent become
    /// `null`; `accountEnabled` defaults to true.
    pub fn add_user(&self, mut user: User) -> String {
        let mut db = self.shared.db();
        if user.id.is_empty() {
            db.next_id += 1;
            user.id = format!("00000000-0000-4000-c000-{:012}", db.next_id);
        }
        let id = user.id.clone();
        db.put_user(normalize(user));
        drop(db);
        // Graph reports a new user as `updated`, not `created`.
        self.shared.notify(&[Change::user(&id, "updated")]);
        id
    }

    /// Changes a user with `change`; false when there is no such user.
    pub fn update_user(&self, id: &str, change: impl FnOnce(&mut User)) -> bool {
        let mut db = self.shared.db();
        let Some(stored) = db.users.get(id) else {
            return false;
        };
        let mut user = stored.user.clone();
        change(&mut user);
        user.id = id.to_owned();
        db.put_user(normalize(user));
        drop(db);
        self.shared.notify(&[Change::user(id, "updated")]);
        true
    }

    /// Blocks sign-in (`accountEnabled: false`).
    pub fn disable_user(&self, id: &str) -> bool {
        self.update_user(id, |u| u.account_enabled = Some(Some(false)))
    }

    /// Deletes a user: gone from `/users` and from every group, and reported by the next delta
    /// round as `@removed` (`deleted`).
    pub fn delete_user(&self, id: &str) -> bool {
        let mut db = self.shared.db();
        if db.users.remove(id).is_none() {
            return false;
        }
        db.version += 1;
        let version = db.version;
        db.deleted.insert(id.to_owned(), version);
        let mut changes = vec![Change::user(id, "deleted")];
        for (group_id, group) in db.groups.iter_mut() {
            if group.members.remove(id) {
                changes.push(Change::members(group_id));
            }
        }
        drop(db);
        self.shared.notify(&changes);
        true
    }

    /// Assigns the SKU with this part number (`SPB`) to a user; false when either is unknown.
    pub fn assign_license(&self, id: &str, part_number: &str) -> bool {
        let Some(sku_id) = self.sku_id(part_number) else {
            return false;
        };
        self.update_user(id, |u| {
            let mut licenses = u.assigned_licenses.clone().flatten().unwrap_or_default();
            if !licenses
                .iter()
                .any(|l| l.sku_id.as_deref() == Some(&sku_id))
            {
                licenses.push(AssignedLicense {
                    sku_id: Some(sku_id.clone()),
                    disabled_plans: Vec::new(),
                });
            }
            u.assigned_licenses = Some(Some(licenses));
        })
    }

    /// Removes the SKU with this part number from a user.
    pub fn remove_license(&self, id: &str, part_number: &str) -> bool {
        let Some(sku_id) = self.sku_id(part_number) else {
            return false;
        };
        self.update_user(id, |u| {
            let mut licenses = u.assigned_licenses.clone().flatten().unwrap_or_default();
            licenses.retain(|l| l.sku_id.as_deref() != Some(&sku_id));
            u.assigned_licenses = Some(Some(licenses));
        })
    }

    fn sku_id(&self, part_number: &str) -> Option<String> {
        let db = self.shared.db();
        db.skus
            .iter()
            .find(|s| s.sku_part_number.as_deref() == Some(part_number))
            .and_then(|s| s.sku_id.clone())
    }

    /// Adds a group and returns its id.
    pub fn add_group(&self, display_name: &str) -> String {
        let mut db = self.shared.db();
        db.next_id += 1;
        let id = format!("00000000-0000-4000-d000-{:012}", db.next_id);
        db.groups.insert(
            id.clone(),
            StoredGroup {
                display_name: display_name.to_owned(),
                members: BTreeSet::new(),
            },
        );
        drop(db);
        self.shared.notify(&[Change::group(&id)]);
        id
    }

    /// Makes a user or group a direct member of a group. Membership is not a user property, so
    /// users' delta does not report it (as in Graph).
    pub fn add_member(&self, group_id: &str, member_id: &str) -> bool {
        let mut db = self.shared.db();
        let known = db.users.contains_key(member_id) || db.groups.contains_key(member_id);
        let added = match db.groups.get_mut(group_id) {
            Some(group) if known => {
                group.members.insert(member_id.to_owned());
                true
            }
            _ => false,
        };
        drop(db);
        if added {
            self.shared.notify(&[Change::members(group_id)]);
        }
        added
    }

    pub fn remove_member(&self, group_id: &str, member_id: &str) -> bool {
        let removed = self
            .shared
            .db()
            .groups
            .get_mut(group_id)
            .is_some_and(|g| g.members.remove(member_id));
        if removed {
            self.shared.notify(&[Change::members(group_id)]);
        }
        removed
    }

    // --- Tokens and delta state ------------------------------------------------------------------

    /// How long tokens issued from now on live (and the `expires_in` they announce).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.shared.db().token_lifetime = lifetime;
    }

    /// Every token issued so far stops working now, as when an admin revokes the app's
    /// sessions; clients get 401 `InvalidAuthenticationToken` until they sign in again.
    pub fn revoke_tokens(&self) {
        let mut db = self.shared.db();
        db.tokens.clear();
        db.refresh_tokens.clear();
    }

    /// After the next `n` answered requests whose path starts with `path_prefix`, every token
    /// issued so far is revoked: a token dying in the middle of a paged read.
    pub fn revoke_tokens_after(&self, path_prefix: &str, n: u32) {
        self.shared.faults().revocations.push(Fault {
            prefix: normalize_path(path_prefix),
            remaining: n,
            value: 0,
        });
    }

    /// Every delta link and skip token issued so far answers 410 Gone (`syncStateNotFound`),
    /// as when Graph has dropped a sync state that was not used for too long.
    pub fn expire_delta_links(&self) {
        let mut db = self.shared.db();
        db.version += 1;
        db.delta_valid_from = db.version;
    }

    // --- Faults ----------------------------------------------------------------------------------

    /// The next `n` requests whose path starts with `path_prefix` get 429 with
    /// `Retry-After: retry_after_secs`, as Graph's throttling answers.
    pub fn throttle(&self, path_prefix: &str, n: u32, retry_after_secs: u64) {
        self.shared.faults().throttles.push(Fault {
            prefix: normalize_path(path_prefix),
            remaining: n,
            value: retry_after_secs,
        });
    }

    /// The next `n` requests whose path starts with `path_prefix` get 503 Service Unavailable
    /// (without `Retry-After`).
    pub fn fail(&self, path_prefix: &str, n: u32) {
        self.fail_with(path_prefix, n, 503);
    }

    /// The next `n` requests whose path starts with `path_prefix` get `status` (a 5xx, or a
    /// 404 `Request_ResourceNotFound`: an object that vanished between a list and a write).
    pub fn fail_with(&self, path_prefix: &str, n: u32, status: u16) {
        self.shared.faults().failures.push(Fault {
            prefix: normalize_path(path_prefix),
            remaining: n,
            value: u64::from(status),
        });
    }

    /// The next `n` requests whose path starts with `path_prefix` are carried out, but their
    /// answers are cut off mid-way: a create that landed though the client never heard so.
    pub fn lose_answers(&self, path_prefix: &str, n: u32) {
        self.shared.faults().losses.push(Fault {
            prefix: normalize_path(path_prefix),
            remaining: n,
            value: 0,
        });
    }

    /// After `pages` more answered requests whose path starts with `path_prefix`, every later
    /// one is cut off mid-answer (the connection drops after the headers and part of the body),
    /// until [`Sandbox::clear_faults`].
    pub fn cut_after(&self, path_prefix: &str, pages: u32) {
        self.shared.faults().cuts.push(Fault {
            prefix: normalize_path(path_prefix),
            remaining: pages,
            value: 0,
        });
    }

    /// Disarms every injected fault.
    pub fn clear_faults(&self) {
        *self.shared.faults() = Faults::default();
    }

    // --- Change-notification subscriptions ------------------------------------------------------

    /// Every live (unexpired) subscription, `clientState` included, in id order.
    pub fn subscriptions(&self) -> Vec<ChangeSubscription> {
        let now = Utc::now();
        self.shared
            .db()
            .subscriptions
            .values()
            .filter(|s| s.expires > now)
            .map(|s| s.wire.clone())
            .collect()
    }

    /// Moves a subscription's expiry, as if time had passed: a subscription set a day from
    /// expiring is due for renewal. False when there is no such subscription.
    pub fn set_subscription_expiry(&self, id: &str, expires: DateTime<Utc>) -> bool {
        match self.shared.db().subscriptions.get_mut(id) {
            Some(stored) => {
                stored.set_expiry(expires);
                true
            }
            None => false,
        }
    }

    /// Lets a subscription expire now: it is no longer listed or notified, and renewing it
    /// answers 404, as Graph does once a subscription has lapsed.
    pub fn expire_subscription(&self, id: &str) -> bool {
        self.set_subscription_expiry(id, Utc::now() - TimeDelta::seconds(1))
    }

    /// Removes a subscription without telling anyone, as when Graph drops one on its side
    /// (send [`Sandbox::lifecycle_notification`] with `subscriptionRemoved` to tell too).
    pub fn remove_subscription(&self, id: &str) -> bool {
        self.shared.db().subscriptions.remove(id).is_some()
    }

    /// Sends a lifecycle event (`reauthorizationRequired`, `subscriptionRemoved` or `missed`)
    /// for a subscription to its `lifecycleNotificationUrl` (its `notificationUrl` when it has
    /// none), and waits for the answer: its status, or why there was none. After
    /// `subscriptionRemoved` the subscription is gone.
    pub async fn lifecycle_notification(&self, id: &str, event: &str) -> Result<u16, String> {
        if !LIFECYCLE_EVENTS.contains(&event) {
            return Err(format!(
                "{event:?} is not a lifecycle event; use one of {LIFECYCLE_EVENTS:?}"
            ));
        }
        let (url, body) = {
            let mut db = self.shared.db();
            let stored = db
                .subscriptions
                .get(id)
                .ok_or_else(|| format!("no subscription {id}"))?;
            let wire = &stored.wire;
            let notification = ChangeNotification {
                subscription_id: wire.id.clone(),
                subscription_expiration_date_time: Some(wire.expiration_date_time.clone()),
                tenant_id: Some(self.shared.tenant_guid.clone()),
                client_state: wire.client_state.clone(),
                lifecycle_event: Some(event.to_owned()),
                ..ChangeNotification::default()
            };
            let url = wire
                .lifecycle_notification_url
                .clone()
                .unwrap_or_else(|| wire.notification_url.clone());
            if event == "subscriptionRemoved" {
                db.subscriptions.remove(id);
            }
            (
                url,
                ChangeNotificationCollection {
                    value: vec![notification],
                    validation_tokens: None,
                },
            )
        };
        let delivered = deliver(&self.shared, &url, &body).await;
        self.shared.count_delivery(delivered.is_ok());
        delivered
    }

    /// How long the validation handshake waits for the receiver (Graph: 10 s).
    pub fn set_validation_timeout(&self, timeout: Duration) {
        self.shared.db().validation_timeout = timeout;
    }

    /// Change and lifecycle notifications answered with a 2xx so far.
    pub fn notifications_delivered(&self) -> u64 {
        self.shared.delivered.load(Ordering::SeqCst)
    }

    /// Change and lifecycle notifications that failed so far (refused, unreachable, slow).
    pub fn notification_failures(&self) -> u64 {
        self.shared.undelivered.load(Ordering::SeqCst)
    }

    // --- Counters --------------------------------------------------------------------------------

    /// Requests received so far whose path (relative to `/v1.0`) starts with `path_prefix`,
    /// refused and faulted ones included. `""` counts everything.
    pub fn requests(&self, path_prefix: &str) -> usize {
        let prefix = normalize_path(path_prefix);
        self.shared
            .log()
            .iter()
            .filter(|p| p.starts_with(&prefix))
            .count()
    }

    /// Every request's path so far, in order (relative to `/v1.0`).
    pub fn request_log(&self) -> Vec<String> {
        self.shared.log().clone()
    }

    /// Token requests received so far.
    pub fn token_requests(&self) -> usize {
        self.shared
            .log()
            .iter()
            .filter(|p| p.ends_with("/oauth2/v2.0/token"))
            .count()
    }

    /// Tokens issued so far.
    pub fn tokens_issued(&self) -> u64 {
        self.shared.issued.load(Ordering::SeqCst)
    }

    /// Forgets the request log (counters start again from zero).
    pub fn reset_counters(&self) {
        self.shared.log().clear();
    }
}

/// Serves a sandbox on `addr` until Ctrl-C, for `rollcall sandbox graph`.
pub async fn run_standalone(addr: SocketAddr, seed: Seed) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let shared = Shared::new(seed, format!("http://{local}"))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    tracing::info!(url = %format!("http://{local}"), "Graph sandbox listening.");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    axum::serve(listener, router(Arc::new(shared)))
        .with_graceful_shutdown(shutdown)
        .await
}

// ---------------------------------------------------------------------------------------------
// Shared state

struct Shared {
    base: String,
    tenant_id: String,
    client_id: String,
    client_secret: String,
    db: Mutex<Db>,
    faults: Mutex<Faults>,
    log: Mutex<Vec<String>>,
    issued: AtomicU64,
    /// The tenant's GUID, as notifications carry it (seeds may name the tenant by domain).
    tenant_guid: String,
    /// Sends validation requests and notifications to subscribers.
    notifier: reqwest::Client,
    delivered: AtomicU64,
    undelivered: AtomicU64,
}

struct StoredUser {
    user: User,
    /// The state version at which the user last changed.
    changed: u64,
}

struct StoredGroup {
    display_name: String,
    members: BTreeSet<String>,
}

struct Db {
    /// Bumped by every change to a user; delta tokens name a version.
    version: u64,
    /// Delta tokens older than this answer 410.
    delta_valid_from: u64,
    users: BTreeMap<String, StoredUser>,
    /// Deleted user ids and the version of their deletion.
    deleted: BTreeMap<String, u64>,
    groups: BTreeMap<String, StoredGroup>,
    skus: Vec<SubscribedSku>,
    /// Access tokens issued and when each expires.
    tokens: HashMap<String, Instant>,
    /// Authorization codes (used once) and refresh tokens of the delegated grants, with the
    /// scope consented to.
    codes: HashMap<String, String>,
    refresh_tokens: HashMap<String, String>,
    token_lifetime: Duration,
    next_id: u64,
    subscriptions: BTreeMap<String, StoredSubscription>,
    validation_timeout: Duration,
}

impl Db {
    fn put_user(&mut self, user: User) {
        self.version += 1;
        self.deleted.remove(&user.id);
        let changed = self.version;
        self.users
            .insert(user.id.clone(), StoredUser { user, changed });
    }

    /// A group's members, nested groups' members included (and the nested groups themselves).
    fn transitive_members(&self, group_id: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut queue = vec![group_id.to_owned()];
        let mut visited_groups = BTreeSet::new();
        while let Some(g) = queue.pop() {
            if !visited_groups.insert(g.clone()) {
                continue;
            }
            if let Some(group) = self.groups.get(&g) {
                for member in &group.members {
                    if seen.insert(member.clone()) && self.groups.contains_key(member) {
                        queue.push(member.clone());
                    }
                }
            }
        }
        seen.remove(group_id);
        seen
    }
}

/// Fills absent properties with `null` (and `accountEnabled` with true, licences with none), so
/// every user answers every selected property, as Graph does.
fn normalize(mut user: User) -> User {
    user.odata_type = None;
    user.removed = None;
    for slot in [
        &mut user.display_name,
        &mut user.given_name,
        &mut user.surname,
        &mut user.mail,
        &mut user.user_principal_name,
        &mut user.job_title,
        &mut user.department,
    ] {
        slot.get_or_insert(None);
    }
    user.account_enabled.get_or_insert(Some(true));
    if !matches!(user.assigned_licenses, Some(Some(_))) {
        user.assigned_licenses = Some(Some(Vec::new()));
    }
    user
}

#[derive(Default)]
struct Faults {
    throttles: Vec<Fault>,
    failures: Vec<Fault>,
    cuts: Vec<Fault>,
    losses: Vec<Fault>,
    revocations: Vec<Fault>,
}

struct Fault {
    prefix: String,
    remaining: u32,
    value: u64,
}

/// Takes one use of the first armed fault matching `path`.
fn take_fault(faults: &mut [Fault], path: &str) -> Option<u64> {
    let fault = faults
        .iter_mut()
        .find(|f| f.remaining > 0 && path.starts_with(&f.prefix))?;
    fault.remaining -= 1;
    Some(fault.value)
}

/// A path relative to `/v1.0`, with `()` after `delta` dropped, so `/users/delta` and
/// `/users/delta()` count as one.
fn normalize_path(path: &str) -> String {
    let path = format!("/{}", path.trim_start_matches('/'));
    let path = path.strip_prefix("/v1.0").unwrap_or(&path);
    let path = if path.is_empty() { "/" } else { path };
    path.replace("delta()", "delta")
}

impl Shared {
    fn new(seed: Seed, base: String) -> Result<Shared, SandboxError> {
        let mut db = Db {
            version: 0,
            delta_valid_from: 0,
            users: BTreeMap::new(),
            deleted: BTreeMap::new(),
            groups: BTreeMap::new(),
            skus: Vec::new(),
            tokens: HashMap::new(),
            codes: HashMap::new(),
            refresh_tokens: HashMap::new(),
            token_lifetime: Duration::from_secs(seed.token_lifetime_secs),
            next_id: 0,
            subscriptions: BTreeMap::new(),
            validation_timeout: VALIDATION_TIMEOUT,
        };
        for user in seed.users {
            if user.id.trim().is_empty() {
                return Err(SandboxError::Seed("a user has no id".to_owned()));
            }
            if db.users.contains_key(&user.id) {
                return Err(SandboxError::Seed(format!(
                    "user id {} is used twice",
                    user.id
                )));
            }
            db.put_user(normalize(user));
        }
        for group in &seed.groups {
            if db.groups.contains_key(&group.id) || db.users.contains_key(&group.id) {
                return Err(SandboxError::Seed(format!("id {} is used twice", group.id)));
            }
            db.groups.insert(
                group.id.clone(),
                StoredGroup {
                    display_name: group.display_name.clone(),
                    members: BTreeSet::new(),
                },
            );
        }
        for group in seed.groups {
            for member in group.members {
                if !db.users.contains_key(&member) && !db.groups.contains_key(&member) {
                    return Err(SandboxError::Seed(format!(
                        "group {:?} names member {member}, which is neither a user nor a group",
                        group.display_name
                    )));
                }
                if let Some(g) = db.groups.get_mut(&group.id) {
                    g.members.insert(member);
                }
            }
        }
        for sku in &seed.skus {
            if sku.sku_id.is_none() || sku.sku_part_number.is_none() {
                return Err(SandboxError::Seed(
                    "every SKU needs a skuId and a skuPartNumber".to_owned(),
                ));
            }
        }
        db.skus = seed.skus;
        let notifier = reqwest::Client::builder()
            .no_proxy()
            .user_agent("Microsoft-Graph-ChangeTracking-Sandbox")
            .build()
            .map_err(|e| SandboxError::Io(std::io::Error::other(e)))?;
        let tenant_guid = if is_guid(&seed.tenant_id) {
            seed.tenant_id.to_ascii_lowercase()
        } else {
            "00000000-0000-4000-f000-000000000001".to_owned()
        };
        Ok(Shared {
            tenant_guid,
            notifier,
            delivered: AtomicU64::new(0),
            undelivered: AtomicU64::new(0),
            base,
            tenant_id: seed.tenant_id,
            client_id: seed.client_id,
            client_secret: seed.client_secret,
            db: Mutex::new(db),
            faults: Mutex::new(Faults::default()),
            log: Mutex::new(Vec::new()),
            issued: AtomicU64::new(0),
        })
    }

    // A panic while holding a lock leaves the data as consistent as any single change left it,
    // so a poisoned lock is still used.
    fn db(&self) -> MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn log(&self) -> MutexGuard<'_, Vec<String>> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// ---------------------------------------------------------------------------------------------
// Errors in Graph's and the identity platform's shapes

#[derive(Debug)]
struct GraphError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl GraphError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        GraphError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        GraphError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    fn not_found(id: &str) -> Self {
        GraphError::new(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            format!(
                "Resource '{id}' does not exist or one of its queried reference-property objects \
                 are not present."
            ),
        )
    }
}

static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(0);

impl IntoResponse for GraphError {
    fn into_response(self) -> Response {
        let n = REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed);
        let body = ODataError {
            error: MainError {
                code: self.code.to_owned(),
                message: self.message,
                inner_error: Some(InnerError {
                    request_id: Some(format!("00000000-0000-4000-8000-{n:012x}")),
                    client_request_id: None,
                    date: Some(now_iso()),
                }),
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// The time as Graph writes it in errors (`2026-01-01T00:00:00`), without a date library: the
/// sandbox only needs it to be well-formed and current.
fn now_iso() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// An identity-platform error: `{"error", "error_description", "error_codes", …}`.
fn oauth_error(status: StatusCode, error: &str, code: u64, description: String) -> Response {
    let body = OAuthError {
        error: error.to_owned(),
        error_description: format!(
            "AADSTS{code}: {description}\r\nTrace ID: 00000000-0000-4000-8000-000000000000\r\n\
             Correlation ID: 00000000-0000-4000-8000-000000000000\r\nTimestamp: {}Z",
            now_iso()
        ),
        error_codes: vec![code],
        timestamp: Some(format!("{}Z", now_iso())),
        trace_id: Some("00000000-0000-4000-8000-000000000000".to_owned()),
        correlation_id: Some("00000000-0000-4000-8000-000000000000".to_owned()),
    };
    (status, Json(body)).into_response()
}

// ---------------------------------------------------------------------------------------------
// Routing and middleware

fn router(shared: Arc<Shared>) -> Router {
    let graph = Router::new()
        .route("/users", get(list_users))
        .route("/users/{id}", get(get_user).patch(patch_user))
        .route("/users/{id}/transitiveMemberOf", get(user_groups))
        .route("/groups", get(list_groups))
        .route("/groups/{id}/transitiveMembers", get(group_members))
        .route("/subscribedSkus", get(list_skus))
        .route(
            "/subscriptions",
            get(list_subscriptions).post(create_subscription),
        )
        .route(
            "/subscriptions/{id}",
            get(get_subscription)
                .patch(renew_subscription)
                .delete(delete_subscription),
        )
        .route_layer(middleware::from_fn_with_state(shared.clone(), authenticate));
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(issue_token))
        .route("/{tenant}/oauth2/v2.0/authorize", get(authorize))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .nest("/v1.0", graph)
        .fallback(unknown_path)
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            inject_faults,
        ))
        .with_state(shared)
}

async fn unknown_path(uri: axum::http::Uri) -> GraphError {
    GraphError::bad_request(format!(
        "Resource not found for the segment '{}'.",
        uri.path().rsplit('/').next().unwrap_or_default()
    ))
}

/// A Bearer token the token endpoint issued and that has not expired or been revoked.
async fn authenticate(
    AxumState(shared): AxumState<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    let refused = if token.is_empty() {
        Some("Access token is empty.")
    } else {
        match shared.db().tokens.get(token) {
            Some(expires) if Instant::now() < *expires => None,
            _ => Some("Access token has expired or is not yet valid."),
        }
    };
    match refused {
        None => next.run(request).await,
        Some(message) => {
            let mut response = GraphError::new(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                message,
            )
            .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"\", error=\"invalid_token\""),
            );
            response
        }
    }
}

async fn inject_faults(
    AxumState(shared): AxumState<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let path = normalize_path(request.uri().path());
    shared.log().push(path.clone());
    let (throttled, failed) = {
        let mut faults = shared.faults();
        let throttled = take_fault(&mut faults.throttles, &path);
        // A throttled request never reaches the service, so it uses up no injected failure.
        let failed = match throttled {
            None => take_fault(&mut faults.failures, &path),
            Some(_) => None,
        };
        (throttled, failed)
    };
    if let Some(secs) = throttled {
        let mut error = GraphError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "Too many requests.",
        );
        error.retry_after = Some(secs);
        return error.into_response();
    }
    if let Some(status) = failed {
        let status = u16::try_from(status)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let (code, message) = match status.as_u16() {
            404 => (
                "Request_ResourceNotFound",
                "The resource does not exist (injected by the sandbox).",
            ),
            _ => (
                "serviceNotAvailable",
                "The service is temporarily unavailable (injected by the sandbox).",
            ),
        };
        return GraphError::new(status, code, message).into_response();
    }
    let response = next.run(request).await;
    let (cut, revoke) = {
        let mut faults = shared.faults();
        // A lost answer: the request was carried out, its answer never arrives.
        let lost = take_fault(&mut faults.losses, &path).is_some();
        // A cut fault lets `remaining` answers through, then cuts every later one.
        let cut = lost
            || faults
                .cuts
                .iter_mut()
                .find(|f| path.starts_with(&f.prefix))
                .is_some_and(|f| {
                    if f.remaining > 0 {
                        f.remaining -= 1;
                        false
                    } else {
                        true
                    }
                });
        let revoke = response.status().is_success()
            && faults
                .revocations
                .iter_mut()
                .find(|f| f.remaining > 0 && path.starts_with(&f.prefix))
                .is_some_and(|f| {
                    f.remaining -= 1;
                    f.remaining == 0
                });
        (cut, revoke)
    };
    if revoke {
        shared.db().tokens.clear();
    }
    if cut {
        let (mut parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        parts.headers.remove(header::CONTENT_LENGTH);
        let half = bytes.slice(..bytes.len() / 2);
        let stream = futures::stream::iter([
            Ok::<Bytes, std::io::Error>(half),
            Err(std::io::Error::other("the sandbox cut this answer off")),
        ]);
        return Response::from_parts(parts, Body::from_stream(stream));
    }
    response
}

// ---------------------------------------------------------------------------------------------
// The identity platform

async fn openid_configuration(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(tenant): Path<String>,
) -> Result<Json<OpenIdConfiguration>, GraphError> {
    if !tenant.eq_ignore_ascii_case(&shared.tenant_id) {
        return Err(GraphError::bad_request(format!(
            "AADSTS90002: Tenant '{tenant}' not found."
        )));
    }
    let base = &shared.base;
    Ok(Json(OpenIdConfiguration {
        issuer: format!("{base}/{tenant}/v2.0"),
        token_endpoint: format!("{base}/{tenant}/oauth2/v2.0/token"),
        authorization_endpoint: format!("{base}/{tenant}/oauth2/v2.0/authorize"),
        jwks_uri: format!("{base}/{tenant}/discovery/v2.0/keys"),
        token_endpoint_auth_methods_supported: vec![
            "client_secret_post".to_owned(),
            "private_key_jwt".to_owned(),
            "client_secret_basic".to_owned(),
        ],
        response_types_supported: vec!["code".to_owned(), "id_token".to_owned()],
        tenant_region_scope: Some("NA".to_owned()),
    }))
}

async fn issue_token(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must be application/x-www-form-urlencoded.".to_owned(),
        );
    };
    if !tenant.eq_ignore_ascii_case(&shared.tenant_id) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID."
            ),
        );
    }
    let grant = form
        .get("grant_type")
        .map(String::as_str)
        .unwrap_or_default();
    if !matches!(
        grant,
        "client_credentials" | "authorization_code" | "refresh_token"
    ) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.".to_owned(),
        );
    }
    if grant == "client_credentials"
        && !form
            .get("scope")
            .is_some_and(|s| s.split(' ').any(|s| s.ends_with("/.default")))
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            "The provided value for scope is not valid. Client credential flows must have a scope \
             value with /.default suffixed to the resource identifier (application ID URI)."
                .to_owned(),
        );
    }
    // The secret travels in the form (client_secret_post) or as HTTP Basic.
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| {
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned())));
    let (client_id, secret) = match basic {
        Some(pair) => pair,
        None => (
            form.get("client_id").cloned().unwrap_or_default(),
            form.get("client_secret").cloned().unwrap_or_default(),
        ),
    };
    if client_id != shared.client_id {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'.",
                shared.tenant_id
            ),
        );
    }
    // Never echo what was sent.
    if secret != shared.client_secret {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is \
                 the client secret value, not the client secret ID, for a secret added to app \
                 '{client_id}'."
            ),
        );
    }
    if grant != "client_credentials" {
        return delegated_token(&shared, grant, &form);
    }
    let (access_token, lifetime) = new_access_token(&shared);
    Json(TokenResponse {
        token_type: "Bearer".to_owned(),
        expires_in: lifetime.as_secs(),
        ext_expires_in: Some(lifetime.as_secs()),
        access_token,
    })
    .into_response()
}

/// A token unlike any issued before it (the issue count and the clock's nanos).
fn fresh_token(shared: &Shared, kind: &str) -> String {
    let n = shared.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("sandbox-{kind}-{n}-{nanos:08x}")
}

/// A fresh access token, recorded with its expiry, and its lifetime.
fn new_access_token(shared: &Shared) -> (String, Duration) {
    let access_token = format!(
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.{}.",
        fresh_token(shared, "access")
    );
    let mut db = shared.db();
    let lifetime = db.token_lifetime;
    db.tokens
        .insert(access_token.clone(), Instant::now() + lifetime);
    (access_token, lifetime)
}

/// `GET /{tenant}/oauth2/v2.0/authorize`: a user's consent to delegated permissions,
/// approved at once, redirecting with a code (and the `state` the app sent).
async fn authorize(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(tenant): Path<String>,
    Query(params): Params,
) -> Response {
    let refuse = |code: u64, message: &str| {
        oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            code,
            message.to_owned(),
        )
    };
    if !tenant.eq_ignore_ascii_case(&shared.tenant_id) {
        return refuse(90002, "Tenant not found.");
    }
    if param(&params, "client_id") != Some(shared.client_id.as_str()) {
        return refuse(700016, "The application was not found in the directory.");
    }
    if param(&params, "response_type") != Some("code") {
        return refuse(900144, "The request must have response_type=code.");
    }
    let Some(mut redirect) =
        param(&params, "redirect_uri").and_then(|r| reqwest::Url::parse(r).ok())
    else {
        return refuse(
            900144,
            "The request must have a redirect_uri that is a URL.",
        );
    };
    let code = fresh_token(&shared, "code");
    let scope = param(&params, "scope").unwrap_or_default().to_owned();
    shared.db().codes.insert(code.clone(), scope);
    redirect.query_pairs_mut().append_pair("code", &code);
    if let Some(state) = param(&params, "state") {
        redirect.query_pairs_mut().append_pair("state", state);
    }
    (
        StatusCode::FOUND,
        [(header::LOCATION, redirect.to_string())],
    )
        .into_response()
}

/// The delegated grants: an authorization code (used once) or a refresh token. Each answer
/// carries a new refresh token when `offline_access` was consented to; as at Entra, a refresh
/// token stays valid after use until it is revoked, and the app keeps the newest.
fn delegated_token(shared: &Shared, grant: &str, form: &HashMap<String, String>) -> Response {
    let given = |key: &str| form.get(key).map(String::as_str).unwrap_or_default();
    let scope = {
        let mut db = shared.db();
        if grant == "authorization_code" {
            db.codes.remove(given("code"))
        } else {
            db.refresh_tokens.get(given("refresh_token")).cloned()
        }
    };
    let Some(scope) = scope else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            if grant == "authorization_code" {
                70008
            } else {
                700082
            },
            format!("The provided {grant} is invalid, spent or expired."),
        );
    };
    let (access_token, lifetime) = new_access_token(shared);
    let mut answer = serde_json::json!({
        "token_type": "Bearer", "scope": scope, "expires_in": lifetime.as_secs(),
        "ext_expires_in": lifetime.as_secs(), "access_token": access_token,
    });
    if scope.split(' ').any(|s| s == "offline_access") {
        let refresh = fresh_token(shared, "refresh");
        shared.db().refresh_tokens.insert(refresh.clone(), scope);
        answer["refresh_token"] = Value::String(refresh);
    }
    Json(answer).into_response()
}

// ---------------------------------------------------------------------------------------------
// Query options and paging

type Params = Query<Vec<(String, String)>>;

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// `$select`, checked against the properties the sandbox knows for the type.
fn select(
    params: &[(String, String)],
    known: &[&str],
    type_name: &str,
) -> Result<Option<Vec<String>>, GraphError> {
    let Some(text) = param(params, "$select") else {
        return Ok(None);
    };
    let mut fields = Vec::new();
    for field in text.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let Some(name) = known.iter().find(|k| k.eq_ignore_ascii_case(field)) else {
            return Err(GraphError::bad_request(format!(
                "Could not find a property named '{field}' on type 'microsoft.graph.{type_name}'."
            )));
        };
        fields.push((*name).to_owned());
    }
    Ok(Some(fields))
}

/// `$top` (or, for delta, the `odata.maxpagesize` preference), 1 to 999.
fn page_size(params: &[(String, String)], headers: &HeaderMap) -> Result<usize, GraphError> {
    let preferred = headers
        .get_all("Prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix("odata.maxpagesize="))
        .map(str::to_owned);
    let Some(text) = param(params, "$top").map(str::to_owned).or(preferred) else {
        return Ok(DEFAULT_PAGE_SIZE);
    };
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => Ok(n),
        _ => Err(GraphError::bad_request(format!(
            "Invalid page size specified: '{text}'. Must be between 1 and {MAX_PAGE_SIZE} inclusive."
        ))),
    }
}

fn encode_token<T: Serialize>(value: &T) -> String {
    let json = serde_json::to_vec(value).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_token<T: for<'de> Deserialize<'de>>(text: &str) -> Option<T> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim())
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// One page of the objects with these `keys` (sorted) after the key in `$skiptoken`, with a
/// `nextLink` that repeats the request's own query with a new skip token. Only the page's
/// objects are rendered, so reading a large collection costs linear, not quadratic, time.
fn page_of(
    shared: &Shared,
    uri: &axum::http::Uri,
    params: &[(String, String)],
    context: String,
    keys: impl IntoIterator<Item = String>,
    render: impl Fn(&str) -> Value,
    top: usize,
) -> Result<Json<Value>, GraphError> {
    let after = match param(params, "$skiptoken") {
        None => None,
        Some(token) => Some(
            decode_token::<String>(token)
                .ok_or_else(|| GraphError::bad_request("The $skiptoken is not valid."))?,
        ),
    };
    let mut rest = keys
        .into_iter()
        .filter(|key| after.as_ref().is_none_or(|a| key > a))
        .peekable();
    let mut value = Vec::new();
    let mut last = None;
    while value.len() < top {
        let Some(key) = rest.next() else {
            break;
        };
        value.push(render(&key));
        last = Some(key);
    }
    let mut body = Map::new();
    body.insert("@odata.context".to_owned(), Value::String(context));
    if rest.peek().is_some()
        && let Some(last) = last
    {
        let mut query: Vec<String> = uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty() && !p.to_ascii_lowercase().starts_with("$skiptoken="))
            .map(str::to_owned)
            .collect();
        query.push(format!("$skiptoken={}", encode_token(&last)));
        body.insert(
            "@odata.nextLink".to_owned(),
            Value::String(format!("{}{}?{}", shared.base, uri.path(), query.join("&"))),
        );
    }
    body.insert("value".to_owned(), Value::Array(value));
    Ok(Json(Value::Object(body)))
}

/// A user as JSON with only the selected properties (`id` always), typed.
fn render_user(user: &User, fields: Option<&[String]>) -> Value {
    let mut object = match serde_json::to_value(user) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    match fields {
        Some(fields) => object.retain(|k, _| k == "id" || fields.iter().any(|f| f == k)),
        // Graph's default set leaves out licences and sign-in state: they must be asked for.
        None => object.retain(|k, _| {
            !["accountEnabled", "assignedLicenses", "department"].contains(&k.as_str())
        }),
    }
    object.insert(
        "@odata.type".to_owned(),
        Value::String(USER_TYPE.to_owned()),
    );
    Value::Object(object)
}

fn context(shared: &Shared, set: &str, fields: Option<&[String]>) -> String {
    match fields {
        Some(fields) => format!("{}/v1.0/$metadata#{set}({})", shared.base, fields.join(",")),
        None => format!("{}/v1.0/$metadata#{set}", shared.base),
    }
}

// ---------------------------------------------------------------------------------------------
// Users

async fn list_users(
    AxumState(shared): AxumState<Arc<Shared>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Query(params): Params,
) -> Result<Json<Value>, GraphError> {
    let fields = select(&params, USER_SELECT, "user")?;
    let top = page_size(&params, &HeaderMap::new())?;
    let filter = user_filter(&params, &headers)?;
    let counted = param(&params, "$count").is_some_and(|c| c.eq_ignore_ascii_case("true"));
    let context = context(&shared, "users", fields.as_deref());
    let db = shared.db();
    let render = |id: &str| {
        db.users
            .get(id)
            .map_or(Value::Null, |s| render_user(&s.user, fields.as_deref()))
    };
    let keys: Vec<String> = db
        .users
        .iter()
        .filter(|(_, s)| {
            let full = serde_json::to_value(&s.user).unwrap_or_default();
            filter.iter().all(|c| c.holds(&full))
        })
        .map(|(k, _)| k.clone())
        .collect();
    let count = keys.len();
    let Json(mut page) = page_of(&shared, &uri, &params, context, keys, render, top)?;
    if counted && let Value::Object(map) = &mut page {
        map.insert("@odata.count".to_owned(), Value::from(count));
    }
    Ok(Json(page))
}

/// One clause of a users `$filter`: `prop eq 'v'` (or `true`/`false`), `startsWith(prop,'v')`,
/// `endsWith(prop,'v')`; clauses are joined by `and`.
enum UserClause {
    Eq(String, Value),
    StartsWith(String, String),
    EndsWith(String, String),
}

impl UserClause {
    fn holds(&self, user: &Value) -> bool {
        let text = |p: &str| user.get(p).and_then(Value::as_str).map(str::to_lowercase);
        match self {
            UserClause::Eq(p, v) => match (user.get(p), v) {
                (Some(Value::String(a)), Value::String(b)) => a.eq_ignore_ascii_case(b),
                (Some(a), b) => a == b,
                (None, _) => false,
            },
            UserClause::StartsWith(p, v) => {
                text(p).is_some_and(|t| t.starts_with(&v.to_lowercase()))
            }
            UserClause::EndsWith(p, v) => text(p).is_some_and(|t| t.ends_with(&v.to_lowercase())),
        }
    }
}

/// Parses `$filter` on users. `endsWith` and `$count` are advanced queries: Graph answers them
/// only with `ConsistencyLevel: eventual`, and refuses them otherwise.
fn user_filter(
    params: &[(String, String)],
    headers: &HeaderMap,
) -> Result<Vec<UserClause>, GraphError> {
    let eventual = headers
        .get("ConsistencyLevel")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("eventual"));
    let unsupported = || {
        GraphError::new(
            StatusCode::BAD_REQUEST,
            "Request_UnsupportedQuery",
            "Unsupported Query. Advanced queries need the ConsistencyLevel header set to \
             'eventual' and $count=true.",
        )
    };
    if param(params, "$count").is_some() && !eventual {
        return Err(unsupported());
    }
    let Some(filter) = param(params, "$filter") else {
        return Ok(Vec::new());
    };
    let property = |p: &str| {
        USER_SELECT
            .iter()
            .find(|k| k.eq_ignore_ascii_case(p.trim()))
            .map(|k| (*k).to_owned())
            .ok_or_else(|| {
                GraphError::bad_request(format!(
                    "Could not find a property named '{}' on type 'microsoft.graph.user'.",
                    p.trim()
                ))
            })
    };
    let quoted = |v: &str| -> Result<String, GraphError> {
        v.trim()
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .map(|v| v.replace("''", "'"))
            .ok_or_else(|| GraphError::bad_request(format!("Invalid filter value {v}.")))
    };
    let mut clauses = Vec::new();
    for part in filter.split(" and ").map(str::trim) {
        let call = |name: &str| {
            part.get(..name.len())
                .filter(|p| p.eq_ignore_ascii_case(name))
                .and_then(|_| part[name.len()..].strip_suffix(')'))
                .and_then(|args| args.split_once(','))
        };
        if let Some((p, v)) = call("startsWith(") {
            clauses.push(UserClause::StartsWith(property(p)?, quoted(v)?));
        } else if let Some((p, v)) = call("endsWith(") {
            if !eventual {
                return Err(unsupported());
            }
            clauses.push(UserClause::EndsWith(property(p)?, quoted(v)?));
        } else if let Some((p, v)) = part.split_once(" eq ") {
            let value = match v.trim() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                other => Value::String(quoted(other)?),
            };
            clauses.push(UserClause::Eq(property(p)?, value));
        } else {
            return Err(GraphError::bad_request(format!(
                "Invalid filter clause: '{part}' is not a filter this sandbox understands."
            )));
        }
    }
    Ok(clauses)
}

/// `PATCH /users/{id}`: an application with `User.ReadWrite.All` changes a user. The change
/// reaches the next delta round and the subscriptions, as one made by an admin does.
async fn patch_user(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, GraphError> {
    let change: Map<String, Value> = serde_json::from_slice(&body).map_err(|e| {
        GraphError::bad_request(format!("The request body is not a JSON object: {e}"))
    })?;
    let mut db = shared.db();
    let stored = db
        .users
        .get(&id)
        .ok_or_else(|| GraphError::not_found(&id))?;
    let Value::Object(mut user) = serde_json::to_value(&stored.user).unwrap_or_default() else {
        return Err(GraphError::not_found(&id));
    };
    for (key, value) in change {
        if key == "@odata.type" {
            continue;
        }
        let Some(name) = USER_SELECT
            .iter()
            .find(|k| k.eq_ignore_ascii_case(&key) && **k != "id")
        else {
            return Err(GraphError::bad_request(format!(
                "Property '{key}' does not exist as a declared property or extension property, or \
                 cannot be written."
            )));
        };
        user.insert((*name).to_owned(), value);
    }
    let user: User = serde_json::from_value(Value::Object(user))
        .map_err(|e| GraphError::bad_request(format!("Invalid property value: {e}")))?;
    db.put_user(normalize(user));
    drop(db);
    shared.notify(&[Change::user(&id, "updated")]);
    Ok(StatusCode::NO_CONTENT)
}

async fn get_user(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Params,
) -> Result<Json<Value>, GraphError> {
    // `delta` and `delta()` are functions on the collection, not user ids.
    if id == "delta" || id == "delta()" {
        return users_delta(&shared, &headers, &params);
    }
    let fields = select(&params, USER_SELECT, "user")?;
    let db = shared.db();
    let stored = db
        .users
        .get(&id)
        .or_else(|| {
            // Users may also be addressed by their userPrincipalName.
            db.users.values().find(|s| {
                s.user
                    .user_principal_name
                    .clone()
                    .flatten()
                    .is_some_and(|upn| upn.eq_ignore_ascii_case(&id))
            })
        })
        .ok_or_else(|| GraphError::not_found(&id))?;
    let mut value = render_user(&stored.user, fields.as_deref());
    if let Value::Object(map) = &mut value {
        map.remove("@odata.type");
        map.insert(
            "@odata.context".to_owned(),
            Value::String(format!(
                "{}/$entity",
                context(&shared, "users", fields.as_deref())
            )),
        );
    }
    Ok(Json(value))
}

/// Where a delta round stands, carried in skip tokens: changes after version `since` (`None`: every
/// user), the version the round's delta link will name, the last id returned, the selection.
#[derive(Serialize, Deserialize)]
struct DeltaPosition {
    since: Option<u64>,
    upto: u64,
    after: String,
    select: Option<Vec<String>>,
}

/// A delta link's state: the version it was issued at and the selection of its round.
#[derive(Serialize, Deserialize)]
struct DeltaState {
    version: u64,
    select: Option<Vec<String>>,
}

fn gone() -> GraphError {
    GraphError::new(
        StatusCode::GONE,
        "syncStateNotFound",
        "The sync state of this delta link was not found or has expired. Restart the sync with a \
         request without a delta token.",
    )
}

fn users_delta(
    shared: &Shared,
    headers: &HeaderMap,
    params: &[(String, String)],
) -> Result<Json<Value>, GraphError> {
    let top = page_size(params, headers)?;
    let db = shared.db();
    let position = if let Some(token) = param(params, "$skiptoken") {
        decode_token::<DeltaPosition>(token)
            .ok_or_else(|| GraphError::bad_request("The $skiptoken is not valid."))?
    } else if let Some(token) = param(params, "$deltatoken") {
        let state = decode_token::<DeltaState>(token)
            .ok_or_else(|| GraphError::bad_request("The $deltatoken is not valid."))?;
        DeltaPosition {
            since: Some(state.version),
            upto: db.version,
            after: String::new(),
            select: state.select,
        }
    } else {
        DeltaPosition {
            since: None,
            upto: db.version,
            after: String::new(),
            select: select(params, USER_SELECT, "user")?,
        }
    };
    if position
        .since
        .is_some_and(|since| since < db.delta_valid_from)
    {
        return Err(gone());
    }
    let fields = position.select.as_deref();
    // Users changed since the link was issued, and users deleted since; the first round lists
    // everyone there is.
    let mut items: BTreeMap<&str, Value> = BTreeMap::new();
    for (id, stored) in db.users.range::<str, _>((
        std::ops::Bound::Excluded(position.after.as_str()),
        std::ops::Bound::Unbounded,
    )) {
        if position.since.is_none_or(|since| stored.changed > since) {
            items.insert(id, render_user(&stored.user, fields));
        }
        if items.len() > top {
            break;
        }
    }
    if let Some(since) = position.since {
        for (id, deleted) in db.deleted.range::<str, _>((
            std::ops::Bound::Excluded(position.after.as_str()),
            std::ops::Bound::Unbounded,
        )) {
            if *deleted > since {
                let removed = DirectoryObject {
                    odata_type: Some(USER_TYPE.to_owned()),
                    id: id.clone(),
                    display_name: None,
                };
                let mut value = serde_json::to_value(removed).unwrap_or(Value::Null);
                if let Value::Object(map) = &mut value {
                    map.remove("displayName");
                    map.insert(
                        "@removed".to_owned(),
                        serde_json::json!({ "reason": "deleted" }),
                    );
                }
                items.insert(id, value);
            }
        }
    }
    let more = items.len() > top;
    let page: Vec<(&str, Value)> = items.into_iter().take(top).collect();
    let mut body = Map::new();
    body.insert(
        "@odata.context".to_owned(),
        Value::String(context(shared, "users", fields)),
    );
    let delta_base = format!("{}/v1.0/users/delta()", shared.base);
    match page.last() {
        Some((last, _)) if more => {
            let next = DeltaPosition {
                after: (*last).to_owned(),
                ..position
            };
            body.insert(
                "@odata.nextLink".to_owned(),
                Value::String(format!("{delta_base}?$skiptoken={}", encode_token(&next))),
            );
        }
        _ => {
            let state = DeltaState {
                version: position.upto,
                select: position.select,
            };
            body.insert(
                "@odata.deltaLink".to_owned(),
                Value::String(format!("{delta_base}?$deltatoken={}", encode_token(&state))),
            );
        }
    }
    body.insert(
        "value".to_owned(),
        Value::Array(page.into_iter().map(|(_, v)| v).collect()),
    );
    Ok(Json(Value::Object(body)))
}

// ---------------------------------------------------------------------------------------------
// Groups and licences

const GROUP_PROPERTIES: &[&str] = &["id", "displayName"];

fn render_member(db: &Db, id: &str, fields: Option<&[String]>) -> Value {
    let (odata_type, name) = match db.groups.get(id) {
        Some(g) => (GROUP_TYPE, Some(g.display_name.clone())),
        None => (
            USER_TYPE,
            db.users
                .get(id)
                .and_then(|u| u.user.display_name.clone().flatten()),
        ),
    };
    let wants_name = fields.is_none_or(|f| f.iter().any(|f| f == "displayName"));
    let object = DirectoryObject {
        odata_type: Some(odata_type.to_owned()),
        id: id.to_owned(),
        display_name: if wants_name { name } else { None },
    };
    serde_json::to_value(object).unwrap_or(Value::Null)
}

async fn list_groups(
    AxumState(shared): AxumState<Arc<Shared>>,
    OriginalUri(uri): OriginalUri,
    Query(params): Params,
) -> Result<Json<Value>, GraphError> {
    let fields = select(&params, GROUP_PROPERTIES, "group")?;
    let top = page_size(&params, &HeaderMap::new())?;
    let context = context(&shared, "groups", fields.as_deref());
    let db = shared.db();
    let render = |id: &str| render_member(&db, id, fields.as_deref());
    page_of(
        &shared,
        &uri,
        &params,
        context,
        db.groups.keys().cloned(),
        render,
        top,
    )
}

async fn group_members(
    AxumState(shared): AxumState<Arc<Shared>>,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    Query(params): Params,
) -> Result<Json<Value>, GraphError> {
    let fields = select(&params, GROUP_PROPERTIES, "directoryObject")?;
    let top = page_size(&params, &HeaderMap::new())?;
    let context = context(&shared, "directoryObjects", fields.as_deref());
    let db = shared.db();
    if !db.groups.contains_key(&id) {
        return Err(GraphError::not_found(&id));
    }
    let render = |member: &str| render_member(&db, member, fields.as_deref());
    page_of(
        &shared,
        &uri,
        &params,
        context,
        db.transitive_members(&id),
        render,
        top,
    )
}

async fn user_groups(
    AxumState(shared): AxumState<Arc<Shared>>,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    Query(params): Params,
) -> Result<Json<Value>, GraphError> {
    let fields = select(&params, GROUP_PROPERTIES, "directoryObject")?;
    let top = page_size(&params, &HeaderMap::new())?;
    let context = context(&shared, "directoryObjects", fields.as_deref());
    let db = shared.db();
    if !db.users.contains_key(&id) {
        return Err(GraphError::not_found(&id));
    }
    let groups: Vec<String> = db
        .groups
        .keys()
        .filter(|g| db.transitive_members(g).contains(&id))
        .cloned()
        .collect();
    let render = |g: &str| render_member(&db, g, fields.as_deref());
    page_of(&shared, &uri, &params, context, groups, render, top)
}

const SKU_PROPERTIES: &[&str] = &[
    "id",
    "skuId",
    "skuPartNumber",
    "capabilityStatus",
    "consumedUnits",
    "prepaidUnits",
    "appliesTo",
];

async fn list_skus(
    AxumState(shared): AxumState<Arc<Shared>>,
    Query(params): Params,
) -> Result<Json<Value>, GraphError> {
    let fields = select(&params, SKU_PROPERTIES, "subscribedSku")?;
    let db = shared.db();
    let value: Vec<Value> = db
        .skus
        .iter()
        .map(|sku| {
            // Consumed units are counted from the users, as Graph reports them.
            let consumed = db
                .users
                .values()
                .filter(|u| {
                    u.user
                        .assigned_licenses
                        .clone()
                        .flatten()
                        .unwrap_or_default()
                        .iter()
                        .any(|l| l.sku_id == sku.sku_id)
                })
                .count();
            let sku = SubscribedSku {
                odata_type: Some(SKU_TYPE.to_owned()),
                consumed_units: Some(i32::try_from(consumed).unwrap_or(i32::MAX)),
                ..sku.clone()
            };
            let mut object = match serde_json::to_value(sku) {
                Ok(Value::Object(map)) => map,
                _ => Map::new(),
            };
            if let Some(fields) = &fields {
                object.retain(|k, _| k == "@odata.type" || fields.iter().any(|f| f == k));
            }
            Value::Object(object)
        })
        .collect();
    Ok(Json(serde_json::json!({
        "@odata.context": context(&shared, "subscribedSkus", fields.as_deref()),
        "value": value,
    })))
}

// ---------------------------------------------------------------------------------------------
// Change-notification subscriptions

/// How long the validation handshake waits for the receiver, as Graph does.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a notification POST may take before it counts as failed: Graph expects the
/// receiver to acknowledge within a few seconds and do its work afterwards. (Graph retries
/// failed deliveries for a while; the sandbox does not.)
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest a subscription on a directory resource may live, in minutes.
const MAX_DIRECTORY_MINUTES: i64 = 41_760;
/// Graph's limit on `clientState`.
const MAX_CLIENT_STATE: usize = 128;
const CHANGE_TYPES: &[&str] = &["created", "updated", "deleted"];
const LIFECYCLE_EVENTS: &[&str] = &["reauthorizationRequired", "subscriptionRemoved", "missed"];

struct StoredSubscription {
    wire: ChangeSubscription,
    expires: DateTime<Utc>,
    /// The resource, normalized: `users`, `groups`, `groups/{id}/members`.
    target: String,
    change_types: BTreeSet<String>,
}

impl StoredSubscription {
    fn set_expiry(&mut self, expires: DateTime<Utc>) {
        self.expires = expires;
        self.wire.expiration_date_time = graph_time(expires);
    }
}

fn graph_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn is_guid(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A change a subscription may be told about.
struct Change {
    /// `Users/{id}` or `Groups/{id}`, as Graph writes notification resources.
    resource: String,
    /// The subscription resources it matches (normalized).
    targets: Vec<String>,
    change_type: &'static str,
    odata_type: &'static str,
    id: String,
}

impl Change {
    fn user(id: &str, change_type: &'static str) -> Change {
        Change {
            resource: format!("Users/{id}"),
            targets: vec![
                "users".to_owned(),
                format!("users/{}", id.to_ascii_lowercase()),
            ],
            change_type,
            odata_type: "#Microsoft.Graph.User",
            id: id.to_owned(),
        }
    }

    /// A group created or changed (Graph reports new groups as `updated` too).
    fn group(id: &str) -> Change {
        Change {
            resource: format!("Groups/{id}"),
            targets: vec![
                "groups".to_owned(),
                format!("groups/{}", id.to_ascii_lowercase()),
            ],
            change_type: "updated",
            odata_type: "#Microsoft.Graph.Group",
            id: id.to_owned(),
        }
    }

    /// A group's membership changed: the group is `updated`, and its members collection too.
    fn members(id: &str) -> Change {
        let mut change = Change::group(id);
        change
            .targets
            .push(format!("groups/{}/members", id.to_ascii_lowercase()));
        change
    }
}

impl Shared {
    /// Tells every live subscription that matches a change about it, each on a task of its own:
    /// the change that caused it never waits for a subscriber, and a subscriber that fails is
    /// counted, not fatal.
    fn notify(self: &Arc<Shared>, changes: &[Change]) {
        let now = Utc::now();
        let mut deliveries: Vec<(String, ChangeNotificationCollection)> = Vec::new();
        {
            let db = self.db();
            for stored in db.subscriptions.values() {
                if stored.expires <= now {
                    continue;
                }
                let value: Vec<ChangeNotification> = changes
                    .iter()
                    .filter(|c| {
                        c.targets.contains(&stored.target)
                            && stored.change_types.contains(c.change_type)
                    })
                    .map(|c| ChangeNotification {
                        id: None,
                        subscription_id: stored.wire.id.clone(),
                        subscription_expiration_date_time: Some(
                            stored.wire.expiration_date_time.clone(),
                        ),
                        tenant_id: Some(self.tenant_guid.clone()),
                        client_state: stored.wire.client_state.clone(),
                        change_type: Some(c.change_type.to_owned()),
                        resource: Some(c.resource.clone()),
                        resource_data: Some(ResourceData {
                            odata_type: Some(c.odata_type.to_owned()),
                            odata_id: Some(c.resource.clone()),
                            id: Some(c.id.clone()),
                            organization_id: Some(self.tenant_guid.clone()),
                        }),
                        lifecycle_event: None,
                    })
                    .collect();
                if !value.is_empty() {
                    deliveries.push((
                        stored.wire.notification_url.clone(),
                        ChangeNotificationCollection {
                            value,
                            validation_tokens: None,
                        },
                    ));
                }
            }
        }
        if deliveries.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to deliver on (a change made outside tokio): counted as failed.
            self.undelivered
                .fetch_add(deliveries.len() as u64, Ordering::SeqCst);
            return;
        };
        for (url, body) in deliveries {
            let shared = self.clone();
            runtime.spawn(async move {
                let delivered = deliver(&shared, &url, &body).await;
                if let Err(error) = &delivered {
                    tracing::debug!(%url, %error, "Sandbox notification not delivered.");
                }
                shared.count_delivery(delivered.is_ok());
            });
        }
    }

    fn count_delivery(&self, ok: bool) {
        let counter = if ok {
            &self.delivered
        } else {
            &self.undelivered
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

/// POSTs a notification collection; a 2xx within the delivery timeout is delivered.
async fn deliver(
    shared: &Shared,
    url: &str,
    body: &ChangeNotificationCollection,
) -> Result<u16, String> {
    let response = shared
        .notifier
        .post(url)
        .timeout(DELIVERY_TIMEOUT)
        .json(body)
        .send()
        .await
        .map_err(|e| format!("could not deliver: {e}"))?;
    let status = response.status();
    if status.is_success() {
        Ok(status.as_u16())
    } else {
        Err(format!("the receiver answered {status}"))
    }
}

/// The validation handshake: POST `url?validationToken=…` and expect, within the timeout, a 200
/// `text/plain` whose body is the token.
async fn validate_endpoint(shared: &Shared, url: &str, timeout: Duration) -> Result<(), String> {
    let n = REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed);
    // Graph's tokens hold spaces and colons, so a receiver that does not URL-decode fails here
    // as it would against Graph.
    let token = format!(
        "Validation: Testing client application reachability for subscription Request-Id: \
         00000000-0000-4000-8000-{n:012x}"
    );
    let mut target = reqwest::Url::parse(url).map_err(|e| format!("{url} is not a URL: {e}"))?;
    target
        .query_pairs_mut()
        .append_pair("validationToken", &token);
    let response = shared
        .notifier
        .post(target)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .timeout(timeout)
        .body("")
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                format!("{url} did not answer within {} s", timeout.as_secs_f32())
            } else {
                format!("{url} could not be reached")
            }
        })?;
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let body = response
        .text()
        .await
        .map_err(|_| format!("{url}'s answer was cut off"))?;
    if status != StatusCode::OK {
        return Err(format!("{url} answered {status}, not 200 OK"));
    }
    if !content_type.starts_with("text/plain") {
        return Err(format!(
            "{url} answered with Content-Type {content_type:?}, not text/plain"
        ));
    }
    if body != token {
        return Err(format!(
            "{url} did not echo the validation token (the body must be the token, URL-decoded)"
        ));
    }
    Ok(())
}

fn invalid_request(message: impl Into<String>) -> GraphError {
    GraphError::new(StatusCode::BAD_REQUEST, "InvalidRequest", message)
}

/// An expiry within the bounds Graph sets for directory resources.
fn check_expiry(text: &str) -> Result<DateTime<Utc>, GraphError> {
    let at = DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%dT%H:%M:%S%.f")
                .map(|t| t.and_utc())
        })
        .map_err(|_| {
            invalid_request(format!(
                "The expirationDateTime '{text}' is not a valid date and time."
            ))
        })?;
    let now = Utc::now();
    if at <= now {
        return Err(invalid_request(
            "Subscription expiration can only be in the future.",
        ));
    }
    if at > now + TimeDelta::minutes(MAX_DIRECTORY_MINUTES) {
        return Err(invalid_request(format!(
            "Subscription expiration can only be {MAX_DIRECTORY_MINUTES} minutes in the future."
        )));
    }
    Ok(at)
}

fn check_url(field: &str, url: &str) -> Result<(), GraphError> {
    match reqwest::Url::parse(url) {
        // Graph demands https; the sandbox also takes http, for receivers on 127.0.0.1.
        Ok(parsed) if matches!(parsed.scheme(), "https" | "http") && parsed.host().is_some() => {
            Ok(())
        }
        _ => Err(invalid_request(format!(
            "The {field} '{url}' is not a valid absolute https URL."
        ))),
    }
}

fn render_subscription(stored: &StoredSubscription) -> Value {
    serde_json::to_value(&stored.wire).unwrap_or(Value::Null)
}

/// One subscription as Graph answers a GET or a create: with its `@odata.context`.
fn subscription_entity(base: &str, stored: &StoredSubscription) -> Value {
    let mut value = render_subscription(stored);
    if let Value::Object(map) = &mut value {
        map.insert(
            "@odata.context".to_owned(),
            Value::String(format!("{base}/v1.0/$metadata#subscriptions/$entity")),
        );
    }
    value
}

async fn list_subscriptions(
    AxumState(shared): AxumState<Arc<Shared>>,
) -> Result<Json<Value>, GraphError> {
    let now = Utc::now();
    let mut db = shared.db();
    // Graph deletes lapsed subscriptions.
    db.subscriptions.retain(|_, s| s.expires > now);
    let value: Vec<Value> = db.subscriptions.values().map(render_subscription).collect();
    Ok(Json(serde_json::json!({
        "@odata.context": format!("{}/v1.0/$metadata#subscriptions", shared.base),
        "value": value,
    })))
}

fn live_subscription<'a>(
    db: &'a mut Db,
    id: &str,
) -> Result<&'a mut StoredSubscription, GraphError> {
    let now = Utc::now();
    match db.subscriptions.get_mut(id) {
        Some(stored) if stored.expires > now => Ok(stored),
        _ => Err(GraphError::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("The object was not found. Subscription '{id}' does not exist or has expired."),
        )),
    }
}

async fn get_subscription(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, GraphError> {
    let mut db = shared.db();
    let stored = live_subscription(&mut db, &id)?;
    let value = subscription_entity(&shared.base, stored);
    Ok(Json(value))
}

fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, GraphError> {
    serde_json::from_slice(body)
        .map_err(|e| GraphError::bad_request(format!("The request body is not valid: {e}")))
}

async fn create_subscription(
    AxumState(shared): AxumState<Arc<Shared>>,
    body: Bytes,
) -> Result<Response, GraphError> {
    let mut wire: ChangeSubscription = parse_body(&body)?;
    let target = wire
        .resource
        .trim()
        .trim_start_matches('/')
        .to_ascii_lowercase();
    let known_resource = match target.split('/').collect::<Vec<_>>().as_slice() {
        ["users"] | ["groups"] => true,
        ["users", id] => shared.db().users.keys().any(|u| u.eq_ignore_ascii_case(id)),
        ["groups", id] | ["groups", id, "members"] => shared
            .db()
            .groups
            .keys()
            .any(|g| g.eq_ignore_ascii_case(id)),
        _ => false,
    };
    if !known_resource {
        return Err(GraphError::new(
            StatusCode::BAD_REQUEST,
            "ExtensionError",
            format!(
                "Operation: Create; Exception: [Status Code: BadRequest; Reason: The resource \
                 '{}' is not supported or does not exist.]",
                wire.resource
            ),
        ));
    }
    let requested: Vec<String> = wire
        .change_type
        .split(',')
        .map(|t| t.trim().to_owned())
        .collect();
    let change_types: BTreeSet<String> = requested.iter().cloned().collect();
    if requested
        .iter()
        .any(|t| !CHANGE_TYPES.contains(&t.as_str()))
        || change_types.len() != requested.len()
    {
        return Err(invalid_request(format!(
            "The changeType '{}' is not valid: name one or more of created, updated, deleted, \
             separated by commas, each once.",
            wire.change_type
        )));
    }
    check_url("notificationUrl", &wire.notification_url)?;
    if let Some(url) = &wire.lifecycle_notification_url {
        check_url("lifecycleNotificationUrl", url)?;
    }
    if wire
        .client_state
        .as_ref()
        .is_some_and(|s| s.chars().count() > MAX_CLIENT_STATE)
    {
        return Err(invalid_request(format!(
            "The clientState may be at most {MAX_CLIENT_STATE} characters."
        )));
    }
    let expires = check_expiry(&wire.expiration_date_time)?;
    // The handshake, before anything is stored: every URL must echo its token.
    let timeout = shared.db().validation_timeout;
    let mut urls = vec![wire.notification_url.clone()];
    urls.extend(wire.lifecycle_notification_url.clone());
    for url in &urls {
        if let Err(reason) = validate_endpoint(&shared, url, timeout).await {
            return Err(GraphError::new(
                StatusCode::BAD_REQUEST,
                "ValidationError",
                format!(
                    "Subscription validation request failed. Notification endpoint must respond \
                     with 200 OK to validation request. ({reason})"
                ),
            ));
        }
    }
    let n = REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    wire.id = format!("{nanos:08x}-{:04x}-4000-8000-{n:012x}", n & 0xffff);
    wire.odata_type = None;
    wire.application_id = Some(shared.client_id.clone());
    wire.creator_id = Some("00000000-0000-4000-e000-000000000001".to_owned());
    wire.include_resource_data = Some(false);
    wire.latest_supported_tls_version = Some("v1_2".to_owned());
    wire.expiration_date_time = graph_time(expires);
    let stored = StoredSubscription {
        wire,
        expires,
        target,
        change_types,
    };
    let value = subscription_entity(&shared.base, &stored);
    shared
        .db()
        .subscriptions
        .insert(stored.wire.id.clone(), stored);
    Ok((StatusCode::CREATED, Json(value)).into_response())
}

/// A renewal: only `expirationDateTime` may change.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Renewal {
    expiration_date_time: String,
}

async fn renew_subscription(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, GraphError> {
    let renewal: Renewal = parse_body(&body)?;
    let mut db = shared.db();
    let stored = live_subscription(&mut db, &id)?;
    let expires = check_expiry(&renewal.expiration_date_time)?;
    stored.set_expiry(expires);
    Ok(Json(render_subscription(stored)))
}

async fn delete_subscription(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<StatusCode, GraphError> {
    let mut db = shared.db();
    live_subscription(&mut db, &id)?;
    db.subscriptions.remove(&id);
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(filter: &str) -> Vec<(String, String)> {
        vec![("$filter".to_owned(), filter.to_owned())]
    }

    fn eventual() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("ConsistencyLevel", HeaderValue::from_static("eventual"));
        h
    }

    #[test]
    fn user_filters_parse_what_the_sdks_send_and_refuse_the_rest() {
        let user = serde_json::json!({ "mail": "Ada@Acme.example", "accountEnabled": true, "jobTitle": "O'Neil" });
        let holds = |filter: &str, headers: &HeaderMap| {
            user_filter(&params(filter), headers).map(|cs| cs.iter().all(|c| c.holds(&user)))
        };
        assert!(matches!(
            holds("endsWith(mail,'@acme.example')", &eventual()),
            Ok(true)
        ));
        assert!(matches!(
            holds(
                "startsWith(mail,'ada') and accountEnabled eq true",
                &HeaderMap::new()
            ),
            Ok(true)
        ));
        assert!(
            matches!(holds("jobTitle eq 'O''Neil'", &HeaderMap::new()), Ok(true)),
            "'' escapes '"
        );
        assert!(matches!(
            holds("accountEnabled eq false", &HeaderMap::new()),
            Ok(false)
        ));
        // Advanced queries without ConsistencyLevel, unknown properties, odd forms: 400.
        assert!(holds("endsWith(mail,'@acme.example')", &HeaderMap::new()).is_err());
        assert!(holds("noSuch eq 'x'", &HeaderMap::new()).is_err());
        assert!(holds("mail eq unquoted", &HeaderMap::new()).is_err());
        assert!(holds("mail gt 'a'", &HeaderMap::new()).is_err());
        let counted = vec![("$count".to_owned(), "true".to_owned())];
        assert!(user_filter(&counted, &HeaderMap::new()).is_err());
        assert!(user_filter(&counted, &eventual()).is_ok());
    }
}
