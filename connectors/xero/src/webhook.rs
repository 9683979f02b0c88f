//! Xero's webhooks (`POST /hooks/xero`): the intent-to-receive handshake is just the signature
//! check (200 when `x-xero-signature` is right, 401 when not). Xero's events name invoices and
//! contacts of the MSP's own organisation, so every client billed in that organisation is
//! resynced (each debounced; a resync with nothing to change writes nothing).

use base64::Engine as _;
use rollcall_core::inbound::{
    Concerns, Inbound, InboundContext, InboundRequest, Received, SecretSetting, hmac_sha256_matches,
};

/// `XERO_WEBHOOK_KEY`: the key Xero signs its webhooks with (the app's webhook settings).
pub const WEBHOOK_KEY: SecretSetting = SecretSetting {
    env: "XERO_WEBHOOK_KEY",
    what: "the key Xero signs its webhooks with",
};

/// Xero's webhook, as `rollcall serve` mounts it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Webhook;

/// Xero's `x-xero-signature`: base64 of HMAC-SHA256 of the raw body under the webhook key.
pub fn signed(key: &str, body: &[u8], header: &str) -> bool {
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(header.trim()) else {
        return false;
    };
    hmac_sha256_matches(key.as_bytes(), body, &given)
}

impl Inbound for Webhook {
    fn segment(&self) -> &'static str {
        "xero"
    }

    fn secrets(&self) -> &'static [SecretSetting] {
        &[WEBHOOK_KEY]
    }

    fn receive(&self, request: &InboundRequest<'_>, context: &dyn InboundContext) -> Received {
        let Some(key) = context.secret(&WEBHOOK_KEY) else {
            return Received::refused("not_configured");
        };
        let given = request.header("x-xero-signature").unwrap_or_default();
        if !signed(key.expose(), request.body, given) {
            return Received::refused("forged");
        }
        let tenants = serde_json::from_slice::<serde_json::Value>(request.body)
            .ok()
            .and_then(|v| {
                v.get("events")
                    .and_then(serde_json::Value::as_array)
                    .cloned()
            })
            .unwrap_or_default()
            .iter()
            .filter_map(|e| e.get("tenantId").and_then(serde_json::Value::as_str))
            .map(|t| Concerns::TargetTenant(t.to_lowercase()))
            .collect();
        Received::accepted(200, tenants)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_base64_hmac_of_the_raw_body() {
        let body =
            br#"{"events":[],"firstEventSequence":0,"lastEventSequence":0,"entropy":"S0M3"}"#;
        let digest = rollcall_core::inbound::hmac_sha256(b"webhook-key", &[body]);
        let header = base64::engine::general_purpose::STANDARD.encode(digest);
        assert!(signed("webhook-key", body, &header));
        assert!(!signed("other-key", body, &header));
        assert!(!signed("webhook-key", body, "not base64!"));
    }
}
