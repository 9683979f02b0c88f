//! `rollcall explain`: why a person is billed, and why a product's seats moved.
//!
//! Answers come from two places: the rules evaluated now on the client's directory (which
//! rule matched, on which of the person's values) and the seat ledger in the store (who held
//! which seat from when to when, and on what evidence). Sentences, not tables: this is what an
//! account manager reads to a client.

use rollcall_core::Person;

use crate::config::{Client, Pipeline};
use crate::mapping::{self, PersonVars, Predicate};
use crate::store::{SeatSpan, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Directory(String),
    #[error(
        "client `{client}`: nobody matches `{person}` (hint: give an id, an email, a username or a display name)"
    )]
    NoSuchPerson { client: String, person: String },
    #[error("client `{client}` is not billed for a product `{product}` (hint: one of {known})")]
    NoSuchProduct {
        client: String,
        product: String,
        known: String,
    },
}

fn when(ts: &str) -> &str {
    ts.get(..10).unwrap_or(ts)
}

fn values(rule: &Predicate, p: &Person) -> String {
    let e = mapping::evidence(p, &[rule]);
    if e.is_empty() {
        return "it reads no field of the person".into();
    }
    e.iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn truth(rule: &Predicate, vars: &PersonVars) -> Result<bool, String> {
    rule.eval(vars)
}

/// Explains one person's billing for one client.
pub async fn person(
    pipeline: &Pipeline,
    client: &Client,
    store: &Store,
    who: &str,
) -> Result<String, ExplainError> {
    let read = client
        .directory
        .build(pipeline.dir())
        .read(None)
        .await
        .map_err(|e| ExplainError::Directory(e.to_string()))?;
    let needle = who.to_lowercase();
    let found = read.people.iter().find(|p| {
        p.id.to_lowercase() == needle
            || p.username.to_lowercase() == needle
            || p.email
                .as_deref()
                .is_some_and(|e| e.to_lowercase() == needle)
            || p.upn.as_deref().is_some_and(|e| e.to_lowercase() == needle)
            || p.billing_name().to_lowercase() == needle
    });
    let history = store
        .seat_history(
            &pipeline.name,
            &client.name,
            None,
            Some(found.map(|p| p.id.as_str()).unwrap_or(who)),
        )
        .await?;
    let mut out = String::new();
    match found {
        None if history.is_empty() => {
            return Err(ExplainError::NoSuchPerson {
                client: client.name.clone(),
                person: who.to_owned(),
            });
        }
        None => out.push_str(&format!(
            "{who} is not in {}'s directory now, so {who} is billed for nothing.\n",
            client.name
        )),
        Some(p) => {
            if let Some(sister) = counted_by_sister(pipeline, client, store, p).await? {
                out.push_str(&format!(
                    "{} is billed under {sister}, not here: the clients share `count_once_in: {}` and {sister} comes first.\n",
                    p.billing_name(),
                    client.count_once_in.as_deref().unwrap_or_default()
                ));
            } else {
                let billed_now = explain_now(&mut out, client, p);
                explain_grace(&mut out, client, &history, &billed_now);
            }
        }
    }
    if !history.is_empty() {
        out.push_str("\nFrom the seat ledger:\n");
        for span in &history {
            out.push_str(&format!("- {}\n", span_sentence(span)));
        }
    }
    Ok(out)
}

/// An elder sister client (same `count_once_in`, earlier in the file) that holds a seat for
/// this person, matched by id or by contact (email).
async fn counted_by_sister(
    pipeline: &Pipeline,
    client: &Client,
    store: &Store,
    p: &Person,
) -> Result<Option<String>, ExplainError> {
    let Some(group) = client.count_once_in.as_deref() else {
        return Ok(None);
    };
    let email = p.email.as_deref().map(str::to_lowercase);
    for sister in &pipeline.clients {
        if sister.name == client.name {
            break;
        }
        if sister.count_once_in.as_deref() != Some(group) {
            continue;
        }
        let spans = store
            .seat_history(&pipeline.name, &sister.name, None, None)
            .await?;
        if spans.iter().any(|s| {
            s.until.is_none()
                && (s.person_id == p.id || (email.is_some() && s.contact_key == email))
        }) {
            return Ok(Some(sister.name.clone()));
        }
    }
    Ok(None)
}

/// Seats the ledger holds open for products the person no longer matches: kept by the grace
/// period until it runs out, or given up at the next run.
fn explain_grace(out: &mut String, client: &Client, history: &[SeatSpan], billed_now: &[String]) {
    for span in history
        .iter()
        .filter(|s| s.until.is_none() && !billed_now.contains(&s.product))
    {
        let until = chrono::DateTime::parse_from_rfc3339(&span.last_seen)
            .ok()
            .map(|d| d.to_utc() + chrono::Duration::days(i64::from(client.rules.grace_days)));
        match until {
            Some(until) if client.rules.grace_days > 0 && until > chrono::Utc::now() => out.push_str(&format!(
                "- keeps the {} seat in the grace period ({} days after last matching on {}), until {}.\n",
                span.product,
                client.rules.grace_days,
                when(&span.last_seen),
                until.format("%Y-%m-%d")
            )),
            _ => out.push_str(&format!("- the {} seat ends at the next applied run.\n", span.product)),
        }
    }
}

/// Explains the person's billing now; returns the product ids they are billed for.
fn explain_now(out: &mut String, client: &Client, p: &Person) -> Vec<String> {
    let mut billed = Vec::new();
    let name = p.billing_name();
    let vars = PersonVars::new(p);
    for rule in &client.rules.exclusions {
        if truth(&rule.when, &vars).unwrap_or(false) {
            out.push_str(&format!(
                "{name} is not billed: the exclusion `{}` applies (`{}` is true: {}).\n",
                rule.name,
                rule.when.source(),
                values(&rule.when, p)
            ));
            return billed;
        }
    }
    if let Some(attr) = &client.rules.count_from
        && let Some(day) = p.attributes.get(attr)
        && mapping::starts_later(Some(attr), p, chrono::Utc::now()).is_some()
    {
        out.push_str(&format!(
            "{name} is not billed yet: they count from {attr} = {day}.\n"
        ));
        return billed;
    }
    match truth(&client.rules.counted, &vars) {
        Ok(true) => out.push_str(&format!(
            "{name} is counted for {}: `{}` is true ({}).\n",
            client.name,
            client.rules.counted.source(),
            values(&client.rules.counted, p)
        )),
        Ok(false) => {
            out.push_str(&format!(
                "{name} is not billed: `{}` is false ({}).\n",
                client.rules.counted.source(),
                values(&client.rules.counted, p)
            ));
            return billed;
        }
        Err(e) => {
            out.push_str(&format!(
                "{name}: the rule `{}` fails on this person: {e}\n",
                client.rules.counted.source()
            ));
            return billed;
        }
    }
    for seat in &client.rules.seats {
        let verdict = truth(&seat.predicate, &vars);
        let seats = seat.counting.seats_of_person(p);
        match verdict {
            Ok(true) if seats > 0 => {
                billed.push(seat.product.clone());
                out.push_str(&format!(
                "- billed for {} ({}): `{}` is true ({}){}.\n",
                seat.name,
                seat.identifier,
                seat.predicate.source(),
                values(&seat.predicate, p),
                if seats > 1 { format!(", {seats} seats (one per licence)") } else { String::new() }
            ));
            }
            Ok(true) => out.push_str(&format!(
                "- not billed for {} ({}): the rule is true, but none of the counted licences is assigned.\n",
                seat.name, seat.identifier
            )),
            Ok(false) => out.push_str(&format!(
                "- not billed for {} ({}): `{}` is false ({}).\n",
                seat.name,
                seat.identifier,
                seat.predicate.source(),
                values(&seat.predicate, p)
            )),
            Err(e) => out.push_str(&format!("- {}: the rule fails on this person: {e}\n", seat.name)),
        }
    }
    billed
}

fn span_sentence(s: &SeatSpan) -> String {
    let evidence = if s.evidence.is_empty() {
        String::new()
    } else {
        format!(
            " on {}",
            s.evidence
                .iter()
                .map(|(k, v)| format!("{k} = {v}"))
                .collect::<Vec<_>>()
                .join("; ")
        )
    };
    match &s.until {
        None => format!(
            "{} has held a {} seat since {} (last billed {}), by `{}`{evidence}.",
            s.person_name,
            s.product,
            when(&s.since),
            when(&s.last_seen),
            s.rule
        ),
        Some(until) => format!(
            "{} held a {} seat from {} to {}, by `{}`{evidence}.",
            s.person_name,
            s.product,
            when(&s.since),
            when(until),
            s.rule
        ),
    }
}

/// Explains a product's seats for one client: who holds them and what changed.
pub async fn product(
    pipeline: &Pipeline,
    client: &Client,
    store: &Store,
    product: &str,
) -> Result<String, ExplainError> {
    let Some(seat) = client.rules.seats.iter().find(|s| {
        s.product.eq_ignore_ascii_case(product) || s.identifier.eq_ignore_ascii_case(product)
    }) else {
        return Err(ExplainError::NoSuchProduct {
            client: client.name.clone(),
            product: product.to_owned(),
            known: client
                .rules
                .seats
                .iter()
                .map(|s| s.product.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let history = store
        .seat_history(&pipeline.name, &client.name, Some(&seat.product), None)
        .await?;
    let holding: Vec<&SeatSpan> = history.iter().filter(|s| s.until.is_none()).collect();
    let mut out = format!(
        "{} ({}) for {}: {} seat(s) held now by the ledger, chosen by `{}`{}.\n",
        seat.name,
        seat.identifier,
        client.name,
        holding.len(),
        seat.predicate.source(),
        match (seat.included, seat.minimum) {
            (0, 0) => String::new(),
            (i, 0) => format!("; {i} included in the contract"),
            (0, m) => format!("; at least {m} billed"),
            (i, m) => format!("; {i} included, at least {m} billed"),
        }
    );
    let ended: Vec<&SeatSpan> = history.iter().filter(|s| s.until.is_some()).collect();
    let started: Vec<&&SeatSpan> = holding
        .iter()
        .filter(|s| {
            s.since
                != history
                    .iter()
                    .map(|h| h.since.as_str())
                    .min()
                    .unwrap_or_default()
        })
        .collect();
    if ended.is_empty() && started.is_empty() {
        out.push_str("Nobody has joined or left since the ledger began.\n");
    }
    if !ended.is_empty() {
        out.push_str(&format!("{} seat(s) ended:\n", ended.len()));
        for s in ended.iter().take(20) {
            out.push_str(&format!("- {}\n", span_sentence(s)));
        }
    }
    if !started.is_empty() {
        out.push_str(&format!(
            "{} seat(s) started after the first recorded run:\n",
            started.len()
        ));
        for s in started.iter().take(20) {
            out.push_str(&format!("- {}\n", span_sentence(s)));
        }
    }
    Ok(out)
}
