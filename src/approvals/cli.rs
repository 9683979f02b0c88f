//! What `rollcall approvals`, `approve` and `reject` print: the command table in `src/cli.rs`
//! parses and dispatches, this turns approvals into text.

use super::{Approval, Decided};

/// Who is deciding at this terminal (or running this process).
pub fn who() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "an unknown user".into())
}

fn money(a: &Approval) -> String {
    let currency = if a.currency.is_empty() {
        String::new()
    } else {
        format!(" {}", a.currency)
    };
    format!("{} → {}{currency}", a.amount_before, a.amount_after)
}

fn moment(text: &str) -> String {
    text.get(..19).unwrap_or(text).replace('T', " ")
}

/// The approvals as a table.
pub fn table(approvals: &[Approval]) -> String {
    if approvals.is_empty() {
        return "No approvals (a plan a guard refuses, or the pipeline's policy holds, waits here).\n"
            .into();
    }
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header([
        "id", "created", "pipeline", "client", "state", "seats", "monthly", "reason", "trigger",
    ]);
    for a in approvals {
        t.add_row([
            a.id.clone(),
            moment(&a.created),
            a.pipeline.clone(),
            a.client.clone(),
            a.state.to_string(),
            format!("{} → {}", a.seats_before, a.seats_after),
            money(a),
            a.reason.clone(),
            a.trigger.clone(),
        ]);
    }
    format!("{t}\n")
}

/// One approval in full, before its plan is shown.
pub fn detail(a: &Approval) -> String {
    let mut out = format!(
        "approval {} · pipeline {} · client {} · {}\n  reason:  {}\n  trigger: {}\n  created: {} UTC (expires {} UTC)\n  seats:   {} → {}\n  monthly: {}\n",
        a.id,
        a.pipeline,
        a.client,
        a.state,
        a.reason,
        a.trigger,
        moment(&a.created),
        moment(&a.expires),
        a.seats_before,
        a.seats_after,
        money(a),
    );
    if let Some(day) = &a.effective {
        out.push_str(&format!("  effective: {day}\n"));
    }
    if let Some(by) = &a.decided_by {
        out.push_str(&format!(
            "  decided: {} by {by}\n",
            a.decided_at.as_deref().map(moment).unwrap_or_default()
        ));
    }
    if let Some(note) = &a.note {
        out.push_str(&format!("  note:    {note}\n"));
    }
    if let Some(run) = &a.applied_run {
        out.push_str(&format!("  applied: run {run}\n"));
    }
    if let Some(next) = &a.superseded_by {
        out.push_str(&format!("  replaced by approval {next}\n"));
    }
    out
}

/// What approving came to, in words.
pub fn decided(d: &Decided) -> String {
    match d {
        Decided::Applied { approval, synced } => {
            let mut out = crate::report::outcome_text(&synced.outcomes);
            out.push_str(&format!(
                "approval {} {} (run {})\n",
                approval.id,
                match synced.verdict() {
                    crate::engine::Verdict::Ok => "approved and applied",
                    _ => "approved; applying it did not complete",
                },
                synced.run_id
            ));
            if let Some(path) = &synced.report {
                out.push_str(&format!("report: {}\n", path.display()));
            }
            out
        }
        Decided::Scheduled { approval } => format!(
            "approval {} approved to take effect on {}: nothing is written now; the client's first sync on or after that day applies it (if the billing system has not changed by then)\n",
            approval.id,
            approval.effective.as_deref().unwrap_or("?")
        ),
        Decided::Superseded {
            approval,
            replaced_by,
        } => {
            let mut out = format!(
                "approval {} superseded: the billing system changed since the plan was made, so it was not applied\n",
                approval.id
            );
            if let Some(next) = replaced_by {
                out.push_str(&format!("{next}\n"));
            }
            out
        }
    }
}
