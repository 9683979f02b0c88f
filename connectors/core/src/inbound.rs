//! The inbound-notification role: a vendor that pushes changes to `rollcall serve` owns its
//! webhook here — the path under `/hooks/`, the handshake, the signature check, the secret
//! settings it is checked with, and which clients a notification concerns.
//!
//! The service (`src/web`) generates a `POST /hooks/{segment}{params}` route per registered
//! [`Inbound`], answers with what [`Inbound::receive`] decides, counts it in `/metrics`, and
//! turns each [`Concerns`] into debounced syncs. It never reads a vendor's payload itself, so a
//! new vendor's webhook is its crate's business alone. Nothing here depends on a web framework:
//! a connector sees the request as plain parts.
//!
//! Refusals say nothing to the sender beyond 401 (the reason goes to metrics and the log, never
//! the body), and every comparison of a secret is constant-time.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::Secret;

type HmacSha256 = Hmac<Sha256>;

/// A secret a webhook is checked with, read from the service's environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretSetting {
    /// The environment variable (`ROLLCALL_WEBHOOK_SECRET`).
    pub env: &'static str,
    /// What it is, for the startup warning: "the key … signs its webhooks with".
    pub what: &'static str,
}

/// The service's own secret, from which each client's key is derived ([`client_key`]): the
/// generic client webhook uses it, and so may any vendor whose callbacks carry no signature of
/// their own.
pub const SERVICE_SECRET: SecretSetting = SecretSetting {
    env: "ROLLCALL_WEBHOOK_SECRET",
    what: "the service's secret each client's webhook key is derived from",
};

/// The webhook secrets the service runs with, by environment variable. `Debug` shows names only.
#[derive(Clone, Default)]
pub struct WebhookSecrets(BTreeMap<String, Secret>);

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl WebhookSecrets {
    /// The settings named, read from the environment; empty values count as unset.
    pub fn from_env<'a>(settings: impl IntoIterator<Item = &'a SecretSetting>) -> Self {
        let mut out = WebhookSecrets::default();
        for s in settings {
            if let Some(v) = std::env::var(s.env).ok().filter(|v| !v.is_empty()) {
                out.0.insert(s.env.to_owned(), Secret::new(v));
            }
        }
        out
    }

    /// These secrets and `setting` set to `value` (tests, and callers that hold secrets already).
    pub fn with(mut self, setting: &str, value: Secret) -> Self {
        self.0.insert(setting.to_owned(), value);
        self
    }

    pub fn get(&self, setting: &str) -> Option<&Secret> {
        self.0.get(setting)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One request to a connector's webhook, as the service received it.
#[derive(Debug, Clone, Copy)]
pub struct InboundRequest<'a> {
    /// The route's parameters ([`Inbound::params`]) by name, in order.
    pub params: &'a [(String, String)],
    /// The query string's pairs, decoded.
    pub query: &'a [(String, String)],
    pub headers: &'a reqwest::header::HeaderMap,
    pub body: &'a [u8],
    /// Unix seconds, for replay windows.
    pub now: i64,
}

impl<'a> InboundRequest<'a> {
    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn query(&self, name: &str) -> Option<&'a str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.get(name).and_then(|h| h.to_str().ok())
    }
}

/// What the service lends a webhook while it checks a request.
pub trait InboundContext {
    /// A secret setting's value, if the service has it.
    fn secret(&self, setting: &SecretSetting) -> Option<&Secret>;

    /// The client's name as its pipeline spells it, if the pipeline has such a client.
    fn client(&self, pipeline: &str, client: &str) -> Option<String>;
}

/// Which clients a notification is about: the service resyncs each (debounced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Concerns {
    /// One client of one pipeline, as the request named it (names as the pipeline spells them).
    Client { pipeline: String, client: String },
    /// Every client of every pipeline whose target's OAuth connection is on this tenant
    /// (organisation); compared without case.
    TargetTenant(String),
    /// The clients of the change subscription `subscription` as last ensured; if the service
    /// does not know it, the clients whose directory notifies for `tenant` (without case).
    Directory {
        subscription: Option<String>,
        tenant: String,
    },
}

/// What a webhook made of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Checked and accepted: answered with this status (2xx); [`Received::concerns`] are
    /// resynced.
    Accepted(u16),
    /// A handshake answered as the vendor expects (status 200), acting on nothing.
    Reply {
        content_type: &'static str,
        body: String,
    },
    /// Refused with 401; the reason (`not_configured`, `unsigned`, `forged`, `stale`,
    /// `malformed`, `unknown_client`) is counted and logged, never sent.
    Refused(&'static str),
}

/// The verdict on one request, and what the service is to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub answer: Answer,
    /// Notifications of the request that passed the check (each counted as `accepted`).
    pub accepted: usize,
    /// Notifications of a batch refused on their own (each reason counted), the rest acted on.
    pub rejected: Vec<&'static str>,
    /// Subscription lifecycle events (counted by name); `renew` asks the service to renew its
    /// subscriptions now.
    pub lifecycle: Vec<(String, bool)>,
    pub concerns: Vec<Concerns>,
}

impl Received {
    /// A refusal of the whole request.
    pub fn refused(why: &'static str) -> Self {
        Received {
            answer: Answer::Refused(why),
            accepted: 0,
            rejected: Vec::new(),
            lifecycle: Vec::new(),
            concerns: Vec::new(),
        }
    }

    /// One accepted notification, answered with `status`, about `concerns`.
    pub fn accepted(status: u16, concerns: Vec<Concerns>) -> Self {
        Received {
            answer: Answer::Accepted(status),
            accepted: 1,
            concerns,
            ..Received::refused("")
        }
    }

    /// A handshake's answer.
    pub fn reply(content_type: &'static str, body: String) -> Self {
        Received {
            answer: Answer::Reply { content_type, body },
            ..Received::refused("")
        }
    }
}

/// A connector's webhook. One value per kind, registered beside its config type
/// (`BillingConfig::inbound`, `DirectoryConfig::inbound`).
pub trait Inbound: Send + Sync {
    /// The route's segment: requests come to `/hooks/{segment}`.
    fn segment(&self) -> &'static str;

    /// Further path segments the route takes, in the router's syntax (`/{pipeline}/{client}`),
    /// empty for none; they reach [`receive`](Self::receive) by name.
    fn params(&self) -> &'static str {
        ""
    }

    /// The secrets this webhook is checked with. The service reads them at start and warns
    /// when one is unset while a pipeline uses this kind.
    fn secrets(&self) -> &'static [SecretSetting];

    /// The secret change subscriptions made for this webhook carry (echoed in every
    /// notification), if the vendor's notifications work that way.
    fn subscription_secret(&self) -> Option<&'static SecretSetting> {
        None
    }

    /// Checks one request and says what it concerns. Must not block: the service is serving.
    fn receive(&self, request: &InboundRequest<'_>, context: &dyn InboundContext) -> Received;
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
}

/// Whether `given` is HMAC-SHA256 of `body` under `key` (constant-time).
pub fn hmac_sha256_matches(key: &[u8], body: &[u8], given: &[u8]) -> bool {
    let mut m = mac(key);
    m.update(body);
    m.verify_slice(given).is_ok()
}

/// HMAC-SHA256 of `parts` (concatenated) under `key`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = mac(key);
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

/// The key a client's system signs its webhooks with: derived from the service's secret and
/// the client, so no per-client key has to be stored, and one client's key opens nothing else.
pub fn client_key(secret: &str, pipeline: &str, client: &str) -> String {
    let digest = hmac_sha256(
        secret.as_bytes(),
        &[format!("rollcall-client-key\0{pipeline}\0{}", client.to_lowercase()).as_bytes()],
    );
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two secrets without leaking where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole_and_keys_differ_by_client_but_not_case() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert_eq!(client_key("s", "p", "ACME"), client_key("s", "p", "acme"));
        assert_ne!(client_key("s", "p", "Acme"), client_key("s", "p", "Globex"));
        assert_ne!(client_key("s", "p", "Acme"), client_key("t", "p", "Acme"));
    }

    #[test]
    fn debug_of_secrets_shows_names_only() {
        let s = WebhookSecrets::default().with("K", Secret::new("hunter2"));
        assert_eq!(format!("{s:?}"), r#"{"K"}"#);
    }
}
