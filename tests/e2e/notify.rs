//! Notifications delivered to local receivers: Slack and Teams incoming webhooks (an HTTP
//! receiver), email (an SMTP server speaking the real dialogue over TCP) and a ConnectWise
//! service ticket (the sandbox) — with retries, a link to the approval, and no secret in any
//! message or log (docs/approvals.md).

use serde_json::Value;

use crate::approvals::{approvals, guarded, printed_id, rollcall, run};
use crate::receivers::{HttpReceiver, SmtpSink};
use crate::support::{PIPELINE, World, people_csv};

const SLACK_PATH: &str = "/services/T0001/B0001/slack-secret-token";
const TEAMS_PATH: &str = "/workflows/teams-secret-signature";

struct Receivers {
    slack: HttpReceiver,
    teams: HttpReceiver,
    smtp: SmtpSink,
}

/// The e2e pipeline with every channel, its webhook addresses kept in secret files.
async fn world(csv: &str) -> (World, Receivers) {
    let r = Receivers {
        slack: HttpReceiver::start().await,
        teams: HttpReceiver::start().await,
        smtp: SmtpSink::start().await,
    };
    let secrets = tempfile::tempdir().expect("tempdir").keep();
    let slack = secrets.join("slack");
    let teams = secrets.join("teams");
    std::fs::write(&slack, format!("{}{SLACK_PATH}\n", r.slack.url)).expect("write");
    std::fs::write(&teams, format!("{}{TEAMS_PATH}\n", r.teams.url)).expect("write");
    let notify = format!(
        r#"notify:
  console_url: https://rollcall.example.net/
  channels:
    - slack: {{ webhook: "${{file:{}}}" }}
    - teams: {{ webhook: "${{file:{}}}" }}
    - email:
        host: 127.0.0.1
        port: {}
        security: none
        from: "rollcall <billing@msp.example>"
        to: [ops@msp.example, lead@msp.example]
    - ticket: {{ board: Billing }}
clients:"#,
        slack.display(),
        teams.display(),
        r.smtp.port
    );
    let w = World::with_pipeline(&guarded(PIPELINE).replace("clients:", &notify), csv).await;
    (w, r)
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// No message and no log carries a credential: the webhooks' addresses, the ConnectWise keys.
fn assert_no_secret(text: &str) {
    for secret in [
        "slack-secret-token",
        "teams-secret-signature",
        "demo-private",
    ] {
        assert!(!text.contains(secret), "`{secret}` leaked into: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_reaches_slack_teams_email_and_a_connectwise_ticket_with_a_link() {
    let (w, r) = world(&people_csv(4, 4)).await;
    let (code, out) = run(&w);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        r.slack.received().is_empty(),
        "a sync that went well tells nobody"
    );
    w.set_people(&people_csv(4, 1));
    let (code, out) = run(&w);
    assert_eq!(code, Some(2), "{out}");
    assert_no_secret(&out);
    let id = printed_id(&out);
    let link = format!("https://rollcall.example.net/console/approvals/{id}");

    let slack = r.slack.to(SLACK_PATH);
    assert_eq!(slack.len(), 1, "{slack:?}");
    assert_eq!(slack[0].content_type, "application/json");
    let s = json(&slack[0].body);
    assert!(s["text"].as_str().expect("text").contains("Acme"), "{s}");
    let blocks = s["blocks"].as_array().expect("blocks");
    assert_eq!(blocks[0]["type"], "section");
    assert!(
        blocks[0]["text"]["text"]
            .as_str()
            .expect("mrkdwn")
            .contains("removes 3 of 8 seats"),
        "{s}"
    );
    let button = &blocks[1]["elements"][0];
    assert_eq!(button["type"], "button");
    assert_eq!(button["url"], link.as_str());

    let teams = r.teams.to(TEAMS_PATH);
    assert_eq!(teams.len(), 1, "{teams:?}");
    let t = json(&teams[0].body);
    assert_eq!(t["type"], "message");
    let card = &t["attachments"][0];
    assert_eq!(
        card["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(card["content"]["type"], "AdaptiveCard");
    assert_eq!(card["content"]["actions"][0]["type"], "Action.OpenUrl");
    assert_eq!(card["content"]["actions"][0]["url"], link.as_str());

    let mails = r.smtp.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0].from, "billing@msp.example");
    assert_eq!(mails[0].to, ["ops@msp.example", "lead@msp.example"]);
    assert!(
        mails[0].data.contains(&format!(
            "Subject: [rollcall] Acme: a plan waits for approval ({id})"
        )),
        "{}",
        mails[0].data
    );
    assert!(mails[0].data.contains(&link), "{}", mails[0].data);
    assert!(
        mails[0].data.contains(&format!("rollcall approve {id}")),
        "{}",
        mails[0].data
    );

    let tickets = w.sandbox.state().tickets;
    assert_eq!(tickets.len(), 1, "{tickets:?}");
    let ticket = &tickets[0];
    assert!(ticket.summary.contains(&id), "{ticket:?}");
    assert!(ticket.summary.chars().count() <= 100);
    assert_eq!(
        ticket.board.as_ref().and_then(|b| b.name.as_deref()),
        Some("Billing")
    );
    let acme = w
        .sandbox
        .state()
        .companies
        .iter()
        .find(|c| c.identifier == "ACME")
        .map(|c| c.id);
    assert_eq!(ticket.company.as_ref().map(|c| c.id), acme);
    assert!(
        ticket
            .initial_description
            .as_deref()
            .is_some_and(|d| d.contains(&link)),
        "{ticket:?}"
    );

    for text in r
        .slack
        .received()
        .iter()
        .chain(r.teams.received().iter())
        .map(|m| m.body.clone())
        .chain(mails.iter().map(|m| m.data.clone()))
        .chain(tickets.iter().map(|t| format!("{t:?}")))
    {
        assert_no_secret(&text);
    }

    // The same refusal again is no news; the decision is.
    let (code, _) = run(&w);
    assert_eq!(code, Some(2));
    assert_eq!(r.slack.to(SLACK_PATH).len(), 1);
    let (code, out) = rollcall(&w, &["approve", &id, "--yes"]);
    assert_eq!(code, Some(0), "{out}");
    let slack = r.slack.to(SLACK_PATH);
    assert_eq!(slack.len(), 2, "{slack:?}");
    assert!(
        slack[1].body.contains("approved by alice and applied"),
        "{}",
        slack[1].body
    );
    assert_eq!(r.smtp.mails().len(), 2);
    assert_eq!(w.sandbox.state().tickets.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_receivers_are_retried_and_their_addresses_never_logged() {
    let (w, r) = world(&people_csv(4, 4)).await;
    assert_eq!(run(&w).0, Some(0));
    // Slack fails twice, then takes it; Teams refuses for good (a deleted webhook).
    r.slack.fail_next(2, 503);
    r.teams.fail_next(10, 404);
    w.set_people(&people_csv(4, 1));
    let (code, out) = run(&w);
    assert_eq!(code, Some(2), "{out}");
    assert_no_secret(&out);
    assert_eq!(
        r.slack.to(SLACK_PATH).len(),
        3,
        "tried again after each 503"
    );
    assert_eq!(r.teams.to(TEAMS_PATH).len(), 1, "a 404 is not tried again");
    assert!(out.contains("Could not deliver a notification"), "{out}");
    assert!(out.contains("teams webhook answered 404"), "{out}");
    // The other channels were not held up by the failing one.
    assert_eq!(r.smtp.mails().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_and_a_rejection_are_told() {
    let (w, r) = world(&people_csv(4, 4)).await;
    assert_eq!(run(&w).0, Some(0));
    std::fs::remove_file(w.dir.path().join("acme.csv")).expect("remove");
    let (code, out) = run(&w);
    assert_eq!(code, Some(3), "{out}");
    let slack = r.slack.to(SLACK_PATH);
    assert_eq!(slack.len(), 1, "{slack:?}");
    assert!(
        slack[0].body.contains("Acme: the sync failed"),
        "{}",
        slack[0].body
    );
    assert_eq!(
        w.sandbox.state().tickets.len(),
        1,
        "a ticket for the failure too"
    );

    w.set_people(&people_csv(4, 1));
    let (code, out) = run(&w);
    assert_eq!(code, Some(2), "{out}");
    let id = printed_id(&out);
    let (code, out) = rollcall(&w, &["reject", &id, "--reason", "a cut export"]);
    assert_eq!(code, Some(0), "{out}");
    let slack = r.slack.to(SLACK_PATH);
    assert_eq!(slack.len(), 3, "{slack:?}");
    assert!(
        slack[2].body.contains("rejected by alice: a cut export"),
        "{}",
        slack[2].body
    );
    assert_eq!(approvals(&w)[0]["state"], "rejected");
}
