//! Incoming webhooks: Slack's and Microsoft Teams'. Each takes a JSON payload POSTed to the
//! webhook's secret address; the payload shapes are the vendors' (Slack: `text` with Block Kit
//! `blocks`; Teams Workflows: a `message` carrying an Adaptive Card).

use std::time::Duration;

use async_trait::async_trait;
use rollcall_core::Secret;
use serde_json::{Value, json};

use super::{Channel, Message, Undelivered};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookStyle {
    Slack,
    Teams,
}

/// An incoming webhook; its address is a secret and never leaves this struct but in the request.
pub struct Webhook {
    style: WebhookStyle,
    url: Secret,
    http: reqwest::Client,
}

impl Webhook {
    pub fn new(style: WebhookStyle, url: Secret) -> Webhook {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap_or_default();
        Webhook { style, url, http }
    }

    /// The JSON body the vendor expects.
    pub fn payload(&self, message: &Message) -> Value {
        match self.style {
            WebhookStyle::Slack => slack(message),
            WebhookStyle::Teams => teams(message),
        }
    }
}

/// Slack escapes only `&`, `<` and `>` in message text.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn slack(m: &Message) -> Value {
    let mut body = format!(
        "*{}*\n{}",
        slack_escape(&m.event.title),
        slack_escape(&m.event.detail)
    );
    if let Some(a) = &m.action {
        body.push_str(&format!("\n{}", slack_escape(a)));
    }
    let mut blocks = vec![json!({
        "type": "section",
        "text": { "type": "mrkdwn", "text": body }
    })];
    if let Some(link) = &m.link {
        blocks.push(json!({
            "type": "actions",
            "elements": [{
                "type": "button",
                "text": { "type": "plain_text", "text": "Review the approval" },
                "url": link
            }]
        }));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{
            "type": "mrkdwn",
            "text": slack_escape(&format!("rollcall · pipeline {} · client {}", m.event.pipeline, m.event.client))
        }]
    }));
    // `text` is what notifications and clients without blocks show.
    json!({ "text": slack_escape(&m.event.title), "blocks": blocks })
}

fn teams(m: &Message) -> Value {
    let mut body = vec![
        json!({ "type": "TextBlock", "text": m.event.title, "weight": "Bolder", "size": "Medium", "wrap": true }),
        json!({ "type": "TextBlock", "text": m.event.detail, "wrap": true }),
    ];
    if let Some(a) = &m.action {
        body.push(json!({ "type": "TextBlock", "text": a, "wrap": true }));
    }
    body.push(json!({
        "type": "FactSet",
        "facts": [
            { "title": "Pipeline", "value": m.event.pipeline },
            { "title": "Client", "value": m.event.client }
        ]
    }));
    let actions: Vec<Value> = m
        .link
        .iter()
        .map(|l| json!({ "type": "Action.OpenUrl", "title": "Review the approval", "url": l }))
        .collect();
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
                "actions": actions
            }
        }]
    })
}

#[async_trait]
impl Channel for Webhook {
    fn kind(&self) -> &'static str {
        match self.style {
            WebhookStyle::Slack => "slack",
            WebhookStyle::Teams => "teams",
        }
    }

    async fn deliver(&self, message: &Message) -> Result<(), Undelivered> {
        let reply = self
            .http
            .post(self.url.expose())
            .json(&self.payload(message))
            .send()
            .await
            // The address is the webhook's credential: errors never carry it.
            .map_err(|e| {
                Undelivered::transient(format!("{} webhook: {}", self.kind(), e.without_url()))
            })?;
        let status = reply.status();
        if status.is_success() {
            return Ok(());
        }
        let what = format!("{} webhook answered {status}", self.kind());
        if status.as_u16() == 429 || status.is_server_error() {
            Err(Undelivered::transient(what))
        } else {
            Err(Undelivered::permanent(format!(
                "{what} (hint: check the webhook address the pipeline's secret holds)"
            )))
        }
    }
}
