//! `rollcall plan --output markdown`: a plan as a Markdown summary, for a pull-request comment
//! when pipelines are reviewed in Git (CI plans the changed pipeline and posts this).
//!
//! Per client: seats and money before and after (the run report's own figures, so the comment
//! and the report agree), each product's line, the people whose contacts are added or removed,
//! and why anything is held back. Directory text is hostile and Markdown renders it, so every
//! name passes `clean` and has Markdown's active characters escaped: a person named
//! `[click](http://…)` shows as written, not as a link.

use rollcall_core::Change;
use rollcall_core::text::clean;

use crate::engine::RecordedRun;
use crate::report::run_report;
use crate::run::PipelinePlan;

/// Escapes what Markdown (GitHub's, GitLab's) would interpret, and keeps a table cell one line.
pub fn escape(text: &str) -> String {
    let text = clean(text);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            // `@` would mention a GitHub user; `[` starts a link or an image; the rest emphasise,
            // quote code, break a table cell or open HTML.
            '\\' | '`' | '*' | '_' | '{' | '}' | '[' | ']' | '|' | '<' | '>' | '~' | '@' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn names(list: &[String]) -> String {
    list.iter()
        .map(|n| escape(n))
        .collect::<Vec<_>>()
        .join(", ")
}

fn signed(d: rust_decimal::Decimal) -> String {
    if d > rust_decimal::Decimal::ZERO {
        format!("+{d}")
    } else {
        d.to_string()
    }
}

fn contact_name(fields: &rollcall_core::ContactFields, key: &str) -> String {
    let name = format!("{} {}", fields.first_name.trim(), fields.last_name.trim());
    match name.trim() {
        "" => key.to_owned(),
        n => n.to_owned(),
    }
}

/// The plan as Markdown.
pub fn plan(plan: &PipelinePlan) -> String {
    let report = run_report::build(
        &RecordedRun {
            run_id: String::new(),
            at: String::new(),
            plan: plan.clone(),
            outcomes: Vec::new(),
        },
        &[],
    );
    let currency = if report.currency.is_empty() {
        String::new()
    } else {
        format!(" {}", report.currency)
    };
    let mut out = format!(
        "## rollcall plan: `{}` → {}\n\n",
        escape(&plan.pipeline),
        escape(&plan.target)
    );
    if plan.clients.is_empty() {
        out.push_str("No clients planned.\n");
        return out;
    }
    out.push_str("| client | seats | monthly | change | status |\n|---|---:|---:|---:|---|\n");
    for (c, r) in plan.clients.iter().zip(&report.clients) {
        let n = plan.changes_for(&c.client).count();
        let status = match (&c.failure, &c.refusal) {
            (Some(_), _) => "⚠️ not planned".to_owned(),
            (None, Some(_)) => "⛔ refused: waits for approval".to_owned(),
            _ if c.shadow => format!("shadow: {n} change(s), none written"),
            _ if !c.conflicts.is_empty() => "⛔ differs from a final invoice".to_owned(),
            _ if n == 0 => "no change".to_owned(),
            _ => format!("{n} change(s)"),
        };
        out.push_str(&format!(
            "| {} | {} → {} | {} → {}{currency} | {} | {status} |\n",
            escape(&c.client),
            r.seats_before,
            r.seats_after,
            r.amount_before,
            r.amount_after,
            signed(r.amount_after - r.amount_before),
        ));
    }
    for (c, r) in plan.clients.iter().zip(&report.clients) {
        out.push_str(&format!("\n### {}\n\n", escape(&c.client)));
        if let Some(f) = &c.failure {
            out.push_str(&format!(
                "**Not planned:** {} (hint: {})\n",
                escape(&f.message),
                escape(&f.hint)
            ));
            continue;
        }
        if let Some(refusal) = &c.refusal {
            out.push_str(&format!(
                "**Refused:** {}. Nothing is written until it is approved.\n\n",
                escape(&refusal.reason)
            ));
        }
        for conflict in &c.conflicts {
            out.push_str(&format!(
                "**Final invoice differs:** {}\n\n",
                escape(conflict)
            ));
        }
        out.push_str(&format!(
            "- **Seats:** {} → {}\n- **Monthly:** {} → {}{currency} ({})\n",
            r.seats_before,
            r.seats_after,
            r.amount_before,
            r.amount_after,
            signed(r.amount_after - r.amount_before)
        ));
        let mut added = Vec::new();
        let mut removed = Vec::new();
        for change in plan.changes_for(&c.client) {
            match change {
                Change::CreateContact { key, after }
                | Change::ReactivateContact { key, after, .. } => {
                    added.push(contact_name(after, &key.0));
                }
                Change::DeactivateContact { key, before, .. } => {
                    removed.push(contact_name(before, &key.0));
                }
                _ => {}
            }
        }
        if !added.is_empty() {
            out.push_str(&format!(
                "- **People added ({}):** {}\n",
                added.len(),
                names(&added)
            ));
        }
        if !removed.is_empty() {
            out.push_str(&format!(
                "- **People removed ({}):** {}\n",
                removed.len(),
                names(&removed)
            ));
        }
        if !r.products.is_empty() {
            out.push_str("\n| product | seats | unit price | monthly |\n|---|---:|---:|---:|\n");
            for p in &r.products {
                out.push_str(&format!(
                    "| {} | {} → {} | {} | {} → {} |\n",
                    escape(&p.product),
                    p.before,
                    p.after,
                    p.unit_price,
                    p.amount_before,
                    p.amount_after
                ));
            }
        }
        let held: Vec<String> = c
            .withheld
            .iter()
            .map(|w| {
                format!(
                    "{} {}: {}",
                    w.change.kind().replace('_', " "),
                    w.change.subject(),
                    w.reason
                )
            })
            .collect();
        if !held.is_empty() {
            out.push_str(&format!("\n**Withheld:** {}\n", names(&held)));
        }
    }
    out
}
