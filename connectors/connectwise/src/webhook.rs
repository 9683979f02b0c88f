//! ConnectWise callbacks (`system/callbacks`, `POST /hooks/connectwise/PIPELINE/CLIENT/KEY`):
//! ConnectWise signs nothing, so the callback URL registered for a client carries that client's
//! key (`rollcall webhook-key`) as its secret. The body (`{Action, Type, ID, Entity}`) is not
//! trusted for anything but logging.

use rollcall_core::inbound::{
    Concerns, Inbound, InboundContext, InboundRequest, Received, SERVICE_SECRET, SecretSetting,
    client_key, same_secret,
};

/// ConnectWise's callback webhook, as `rollcall serve` mounts it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Webhook;

impl Inbound for Webhook {
    fn segment(&self) -> &'static str {
        "connectwise"
    }

    fn params(&self) -> &'static str {
        "/{pipeline}/{client}/{key}"
    }

    fn secrets(&self) -> &'static [SecretSetting] {
        &[SERVICE_SECRET]
    }

    fn receive(&self, request: &InboundRequest<'_>, context: &dyn InboundContext) -> Received {
        let Some(secret) = context.secret(&SERVICE_SECRET) else {
            return Received::refused("not_configured");
        };
        let (Some(pipeline), Some(client), Some(key)) = (
            request.param("pipeline"),
            request.param("client"),
            request.param("key"),
        ) else {
            return Received::refused("malformed");
        };
        let Some(name) = context.client(pipeline, client) else {
            return Received::refused("unknown_client");
        };
        if !same_secret(key, &client_key(secret.expose(), pipeline, &name)) {
            return Received::refused("forged");
        }
        let what = serde_json::from_slice::<serde_json::Value>(request.body).unwrap_or_default();
        let field = |k: &str| {
            what.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("?")
                .to_owned()
        };
        let (action, object) = (field("Action"), field("Type"));
        tracing::info!(client = %name, %action, %object, "ConnectWise callback.");
        Received::accepted(
            200,
            vec![Concerns::Client {
                pipeline: pipeline.to_owned(),
                client: name,
            }],
        )
    }
}
