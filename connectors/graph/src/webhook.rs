//! Microsoft Graph change notifications (`POST /hooks/graph`): the subscription handshake
//! echoes `validationToken`; each notification must carry the subscriptions' `clientState`,
//! and concerns the clients of its subscription (or, for one the service does not know, the
//! clients whose directory is the notifying tenant). Lifecycle events ask for the
//! subscriptions to be renewed; `missed` means changes were dropped, so the tenant's clients
//! are synced as after any change.

use rollcall_core::inbound::{
    Answer, Concerns, Inbound, InboundContext, InboundRequest, Received, SecretSetting, same_secret,
};
use serde_json::Value;

/// `ROLLCALL_GRAPH_CLIENT_STATE`: the `clientState` given to Graph subscriptions.
pub const CLIENT_STATE: SecretSetting = SecretSetting {
    env: "ROLLCALL_GRAPH_CLIENT_STATE",
    what: "the clientState every Graph change notification must carry",
};

/// The path segment of the webhook (`/hooks/graph`), also where subscriptions point.
pub const SEGMENT: &str = "graph";

/// Graph's webhook, as `rollcall serve` mounts it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Webhook;

impl Inbound for Webhook {
    fn segment(&self) -> &'static str {
        SEGMENT
    }

    fn secrets(&self) -> &'static [SecretSetting] {
        &[CLIENT_STATE]
    }

    fn subscription_secret(&self) -> Option<&'static SecretSetting> {
        Some(&CLIENT_STATE)
    }

    fn receive(&self, request: &InboundRequest<'_>, context: &dyn InboundContext) -> Received {
        if let Some(token) = request.query("validationToken") {
            return Received::reply("text/plain", token.to_owned());
        }
        let Some(expected) = context.secret(&CLIENT_STATE) else {
            return Received::refused("not_configured");
        };
        let Ok(payload) = serde_json::from_slice::<Value>(request.body) else {
            return Received::refused("malformed");
        };
        let mut out = Received::accepted(202, Vec::new());
        out.accepted = 0;
        let mut passed = 0;
        for n in payload
            .get("value")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let state = n
                .get("clientState")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !same_secret(state, expected.expose()) {
                out.rejected.push("forged");
                continue;
            }
            passed += 1;
            let lifecycle = n.get("lifecycleEvent").and_then(Value::as_str);
            if let Some(event @ ("reauthorizationRequired" | "subscriptionRemoved")) = lifecycle {
                out.lifecycle.push((event.to_owned(), true));
                continue;
            }
            if let Some(event) = lifecycle {
                out.lifecycle.push((event.to_owned(), false));
            }
            out.accepted += 1;
            out.concerns.push(Concerns::Directory {
                subscription: n
                    .get("subscriptionId")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                tenant: n
                    .get("tenantId")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            });
        }
        if passed == 0 {
            out.answer = Answer::Refused("forged");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollcall_core::Secret;

    struct Context(Option<Secret>);

    impl InboundContext for Context {
        fn secret(&self, _: &SecretSetting) -> Option<&Secret> {
            self.0.as_ref()
        }
        fn client(&self, _: &str, _: &str) -> Option<String> {
            None
        }
    }

    fn receive(body: &Value, query: &[(String, String)]) -> Received {
        let body = body.to_string();
        let headers = reqwest::header::HeaderMap::new();
        let request = InboundRequest {
            params: &[],
            query,
            headers: &headers,
            body: body.as_bytes(),
            now: 0,
        };
        Webhook.receive(&request, &Context(Some(Secret::new("state"))))
    }

    #[test]
    fn only_notifications_with_the_client_state_count() {
        let body = serde_json::json!({ "value": [
            { "subscriptionId": "s1", "clientState": "guess", "tenantId": "t" },
            { "subscriptionId": "s2", "clientState": "state", "tenantId": "T2" },
            { "subscriptionId": "s3", "clientState": "state", "lifecycleEvent": "reauthorizationRequired" },
            { "subscriptionId": "s4", "clientState": "state", "lifecycleEvent": "missed", "tenantId": "t4" },
        ]});
        let r = receive(&body, &[]);
        assert_eq!(r.answer, Answer::Accepted(202));
        assert_eq!(r.rejected, ["forged"]);
        assert_eq!(r.accepted, 2);
        assert_eq!(
            r.lifecycle,
            [
                ("reauthorizationRequired".to_owned(), true),
                ("missed".to_owned(), false)
            ]
        );
        assert_eq!(
            r.concerns[0],
            Concerns::Directory {
                subscription: Some("s2".into()),
                tenant: "T2".into()
            }
        );
        let forged = serde_json::json!({ "value": [{ "clientState": "guess" }] });
        assert_eq!(receive(&forged, &[]).answer, Answer::Refused("forged"));
        let echo = receive(
            &Value::Null,
            &[("validationToken".to_owned(), "V: t".to_owned())],
        );
        assert_eq!(
            echo.answer,
            Answer::Reply {
                content_type: "text/plain",
                body: "V: t".into()
            }
        );
    }
}
