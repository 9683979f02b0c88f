//! What a person reads: plans, apply outcomes and history as terminal tables.
//!
//! JSON output is the serde form of the same values (`run::PipelinePlan`); this module only
//! renders for eyes. Secrets cannot appear here: nothing it renders holds one. Directory and
//! vendor text is hostile, so every cell and line passes `rollcall_core::text::clean` on its
//! way out: no escape sequence or bidi override reaches a terminal or a report.

pub mod markdown;
pub mod run_report;
pub mod value_report;

use comfy_table::{Cell, ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use rollcall_core::text::clean;
use rollcall_core::{AdditionFields, Change, ContactFields};

use crate::apply::{ClientOutcome, OutcomeState};
use crate::run::PipelinePlan;
use crate::store::HistoryRow;

/// A table cell of directory or vendor text, cleaned of control and bidi characters.
fn cell(text: impl std::fmt::Display) -> Cell {
    Cell::new(clean(&text.to_string()))
}

/// `value` as JSON with every string cleaned (see `rollcall_core::text::clean_json`): for
/// reports and listings, whose JSON is read by people and tools alike.
pub fn clean_json_value<T: serde::Serialize>(value: &T) -> serde_json::Result<serde_json::Value> {
    let mut value = serde_json::to_value(value)?;
    rollcall_core::text::clean_json(&mut value);
    Ok(value)
}

/// `value` as pretty JSON, cleaned (see [`clean_json_value`]), with a final line end.
pub fn json<T: serde::Serialize>(value: &T) -> serde_json::Result<String> {
    Ok(serde_json::to_string_pretty(&clean_json_value(value)?)? + "\n")
}

fn table(headers: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(140);
    t.set_header(headers.iter().map(Cell::new));
    t
}

fn contact(c: &ContactFields) -> String {
    let mut s = String::with_capacity(
        c.first_name.len() + c.last_name.len() + c.email.as_ref().map_or(0, |e| e.len() + 3) + 1,
    );
    s.push_str(&c.first_name);
    s.push(' ');
    s.push_str(&c.last_name);
    if s.trim().len() != s.len() {
        s = s.trim().to_owned();
    }
    let mut part = |before: &str, text: &Option<String>, after: &str| {
        if let Some(text) = text {
            s.push_str(before);
            s.push_str(text);
            s.push_str(after);
        }
    };
    part(" <", &c.email, ">");
    part(", ", &c.title, "");
    part(", ", &c.phone, "");
    s
}

fn addition(a: &AdditionFields) -> String {
    format!(
        "{} × {}\n{}",
        a.quantity,
        a.unit_price,
        shorten(&a.invoice_description, 90)
    )
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let cut: String = s.chars().take(max - 1).collect();
    format!("{cut}…")
}

fn change_colour(change: &Change) -> comfy_table::Color {
    use comfy_table::Color;
    match change {
        Change::CreateContact { .. }
        | Change::CreateAddition { .. }
        | Change::ReactivateContact { .. } => Color::Green,
        Change::DeactivateContact { .. } | Change::CancelAddition { .. } => Color::Red,
        Change::UpdateAddition { before, after, .. } if after.quantity < before.quantity => {
            Color::Red
        }
        Change::UpdateAddition { .. } | Change::UpdateContact { .. } => Color::Yellow,
        Change::CreateCustomer { .. } | Change::CreateInvoice { .. } => Color::Green,
        Change::UpdateInvoice { before, after, .. }
            if after.total_seats() < before.total_seats() =>
        {
            Color::Red
        }
        Change::UpdateInvoice { .. } => Color::Yellow,
    }
}

/// Before and after, as short text for a table cell.
pub fn describe(change: &Change) -> (String, String) {
    match change {
        Change::CreateContact { after, .. } => ("—".into(), contact(after)),
        Change::UpdateContact { before, after, .. } => (contact(before), contact(after)),
        Change::ReactivateContact { before, after, .. } => {
            (format!("{} (inactive)", contact(before)), contact(after))
        }
        Change::DeactivateContact { before, .. } => (contact(before), "inactive".into()),
        Change::CreateAddition { after, .. } => ("—".into(), addition(after)),
        Change::UpdateAddition { before, after, .. } => (addition(before), addition(after)),
        Change::CancelAddition { before, .. } => (addition(before), "cancelled".into()),
        Change::CreateCustomer { name, email } => (
            "—".into(),
            match email {
                Some(e) => format!("customer {name} <{e}>"),
                None => format!("customer {name}"),
            },
        ),
        Change::CreateInvoice { after, .. } => ("—".into(), invoice(after)),
        Change::UpdateInvoice { before, after, .. } => (invoice(before), invoice(after)),
    }
}

fn invoice(i: &rollcall_core::InvoiceFields) -> String {
    let mut text = format!("invoice dated {}", i.date);
    for l in &i.lines {
        text.push_str(&format!(
            "\n{} {} × {}: {}",
            l.product,
            l.quantity.normalize(),
            l.unit_price,
            shorten(&l.description, 70)
        ));
    }
    if i.lines.is_empty() {
        text.push_str("\n(no lines)");
    }
    text
}

/// Above this many changes the plan is listed a line per change instead of as a table: a
/// table lays out every cell before it prints the first, which for a first run of 100,000
/// people was a third of `rollcall plan`'s time and 100 MB of its memory, for a grid nobody
/// reads row by row. Every change is still printed; `--output json` has all their fields.
pub const TABLE_ROWS: usize = 1_000;

/// Widest a column of [`change_lines`] grows (in characters); longer text ends in `…`.
const LINE_COLUMNS: [usize; 3] = [24, 20, 40];

/// Every change of a big plan on one line: client, change, subject in columns as wide as
/// their text (up to [`LINE_COLUMNS`]), then before → after with its lines joined by ` · `.
fn change_lines<W: std::fmt::Write>(
    plan: &PipelinePlan,
    colour: bool,
    out: &mut W,
) -> std::fmt::Result {
    // Two passes: the widths first, then each line written as it is made. Nothing is held for
    // all the changes at once, and a cell is copied only when it must be cleaned or cut: a
    // big plan's text cost as much memory as its changes, and a tenth of its instructions.
    let width = |text: &str, cap: usize| text.chars().count().min(cap);
    let mut widths = [0usize; 3];
    for c in &plan.changes {
        let cells = [
            width(&clean(&c.client), LINE_COLUMNS[0]),
            width(c.change.kind(), LINE_COLUMNS[1]),
            width(&clean(c.change.subject_text()), LINE_COLUMNS[2]),
        ];
        for (w, cell) in widths.iter_mut().zip(cells) {
            *w = (*w).max(cell);
        }
    }
    writeln!(
        out,
        "{} changes, one a line (more than {TABLE_ROWS} make no table; `--output json` has every field):",
        plan.changes.len()
    )?;
    for c in &plan.changes {
        let (before, after) = describe(&c.change);
        write_padded(out, &clean(&c.client), widths[0])?;
        out.write_str("  ")?;
        let kind = c.change.kind().replace('_', " ");
        match (colour, change_colour(&c.change)) {
            (false, _) => write_padded(out, &kind, widths[1])?,
            (true, colour) => {
                out.write_str(match colour {
                    comfy_table::Color::Green => "\x1b[32m",
                    comfy_table::Color::Red => "\x1b[31m",
                    _ => "\x1b[33m",
                })?;
                write_padded(out, &kind, widths[1])?;
                out.write_str("\x1b[0m")?;
            }
        }
        out.write_str("  ")?;
        write_padded(out, &clean(c.change.subject_text()), widths[2])?;
        out.write_str("  ")?;
        write_joined(out, &before)?;
        out.write_str(" → ")?;
        write_joined(out, &after)?;
        out.write_char('\n')?;
    }
    Ok(())
}

/// `text` cleaned, its lines joined by ` · `.
fn write_joined<W: std::fmt::Write>(out: &mut W, text: &str) -> std::fmt::Result {
    for (i, line) in clean(text).split('\n').enumerate() {
        if i > 0 {
            out.write_str(" · ")?;
        }
        out.write_str(line)?;
    }
    Ok(())
}

/// `text` cut to `width` characters as [`shorten`] cuts, then padded with spaces to it.
fn write_padded<W: std::fmt::Write>(out: &mut W, text: &str, width: usize) -> std::fmt::Result {
    let length = text.chars().count();
    if length > width {
        out.write_str(&shorten(text, width))?;
    } else {
        out.write_str(text)?;
        for _ in length..width {
            out.write_char(' ')?;
        }
    }
    Ok(())
}

/// The plan as a table grouped by client, followed by each client's guard verdicts and notes.
pub fn plan_text(plan: &PipelinePlan) -> String {
    plan_text_styled(plan, false)
}

/// The plan as [`plan_text`], with colour when `colour` (the CLI decides: a terminal, no
/// `NO_COLOR`): additions green, lowering and removals red, updates yellow.
pub fn plan_text_styled(plan: &PipelinePlan, colour: bool) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_plan(plan, colour, &mut out);
    out
}

/// Prints the plan as [`plan_text_styled`] to standard output as it is made: a plan of a
/// large client is 100,000 lines, which need not be held whole before the first is shown.
pub fn print_plan(plan: &PipelinePlan, colour: bool) -> std::io::Result<()> {
    let stdout = std::io::stdout();
    let mut out = IoText {
        out: std::io::BufWriter::new(stdout.lock()),
        error: None,
    };
    let written = write_plan(plan, colour, &mut out);
    match (written, out.error.take()) {
        (_, Some(e)) => Err(e),
        (Err(_), None) => Err(std::io::Error::other("formatting the plan failed")),
        (Ok(()), None) => std::io::Write::flush(&mut out.out),
    }
}

/// Text written to a byte stream, keeping the stream's own error (`fmt::Error` carries none).
struct IoText<W: std::io::Write> {
    out: W,
    error: Option<std::io::Error>,
}

impl<W: std::io::Write> std::fmt::Write for IoText<W> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.out.write_all(s.as_bytes()).map_err(|e| {
            self.error = Some(e);
            std::fmt::Error
        })
    }
}

fn write_plan<W: std::fmt::Write>(
    plan: &PipelinePlan,
    colour: bool,
    out: &mut W,
) -> std::fmt::Result {
    let all_clear = plan
        .clients
        .iter()
        .all(|c| c.failure.is_none() && c.withheld.is_empty() && c.conflicts.is_empty());
    if plan.changes.is_empty() && all_clear {
        out.write_str("No changes: the billing system already matches the directories.\n")?;
    } else if plan.changes.is_empty() {
        out.write_str("No changes to apply.\n")?;
    } else if plan.changes.len() > TABLE_ROWS {
        change_lines(plan, colour, out)?;
    } else {
        let mut t = table(&["client", "change", "subject", "before", "after"]);
        if colour {
            t.enforce_styling();
        }
        for c in &plan.changes {
            let (before, after) = describe(&c.change);
            let kind = cell(c.change.kind().replace('_', " "));
            let kind = if colour {
                kind.fg(change_colour(&c.change))
            } else {
                kind
            };
            t.add_row(vec![
                cell(&c.client),
                kind,
                cell(c.change.subject()),
                cell(before),
                cell(after),
            ]);
        }
        out.write_str(&t.to_string())?;
        out.write_char('\n')?;
    }
    let mut t = table(&["client", "people read", "seats", "status"]);
    for c in &plan.clients {
        let status = if let Some(f) = &c.failure {
            format!("FAILED: {}\n  hint: {}", f.message, f.hint)
        } else if let Some(r) = &c.refusal {
            format!("REFUSED: {}", r.reason)
        } else if c.shadow {
            format!(
                "shadow mode: {} change(s) planned, none written",
                plan.changes_for(&c.client).count()
            )
        } else {
            let n = plan.changes_for(&c.client).count();
            match (n, c.completeness.as_ref().is_some_and(|x| !x.is_complete())) {
                _ if !c.conflicts.is_empty() => {
                    format!("{n} change(s); CONFLICT with a final invoice (see below)")
                }
                (0, false) => "up to date".to_owned(),
                (n, false) => format!("{n} change(s)"),
                (n, true) => format!(
                    "{n} change(s); incomplete read: {} change(s) withheld",
                    c.withheld.len()
                ),
            }
        };
        t.add_row(vec![
            cell(&c.client),
            cell(c.people_read),
            cell(format!("{} → {}", c.seats_before, c.seats_after)),
            cell(status),
        ]);
    }
    out.write_str(&t.to_string())?;
    out.write_char('\n')?;
    for c in &plan.clients {
        if let Some(r) = &c.refusal {
            out.write_str(&clean(&format!("\n{r}\n")))?;
        }
        // Withheld changes share one reason per client: say it once, then list them.
        let mut reasons: Vec<&str> = c.withheld.iter().map(|w| w.reason.as_str()).collect();
        reasons.dedup();
        for reason in reasons {
            let list: Vec<String> = c
                .withheld
                .iter()
                .filter(|w| w.reason == reason)
                .map(|w| {
                    format!(
                        "{} {}",
                        w.change.kind().replace('_', " "),
                        w.change.subject()
                    )
                })
                .collect();
            out.write_str(&clean(&format!(
                "\n{}: withheld {} change(s): {reason}:\n  {}",
                c.client,
                list.len(),
                list.join("\n  ")
            )))?;
        }
        if !c.excluded.is_empty() {
            let mut by_rule: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
            for e in &c.excluded {
                by_rule
                    .entry(e.rule.as_str())
                    .or_default()
                    .push(e.name.as_str());
            }
            for (rule, names) in by_rule {
                out.write_str(&clean(&format!(
                    "\n{}: not billed ({rule}): {}",
                    c.client,
                    names.join(", ")
                )))?;
            }
        }
        for conflict in &c.conflicts {
            out.write_str(&clean(&format!(
                "\n{}: CONFLICT: {conflict} (hint: settle it by hand, e.g. a credit note or an extra line next period)",
                c.client
            )))?;
        }
        for n in &c.notes {
            out.write_str(&clean(&format!("\n{}: note: {n}", c.client)))?;
        }
    }
    if plan.clients.iter().any(|c| {
        !c.withheld.is_empty()
            || !c.notes.is_empty()
            || !c.excluded.is_empty()
            || !c.conflicts.is_empty()
    }) {
        out.write_char('\n')?;
    }
    Ok(())
}

/// What apply did, per client.
pub fn outcome_text(outcomes: &[ClientOutcome]) -> String {
    let mut t = table(&["client", "applied", "result"]);
    for o in outcomes {
        let result = match &o.state {
            OutcomeState::Done if o.reconciled > 0 => format!(
                "done ({} found already made by an earlier attempt)",
                o.reconciled
            ),
            OutcomeState::Done => "done".to_owned(),
            OutcomeState::Skipped { reason } => format!("skipped: {reason}"),
            OutcomeState::Stale { reason } => format!("not applied: {reason}"),
            OutcomeState::Failed { error, hint } => format!("FAILED: {error}\n  hint: {hint}"),
        };
        t.add_row(vec![cell(&o.client), cell(o.applied), cell(result)]);
    }
    format!("{t}\n")
}

/// `rollcall history` as a table.
pub fn history_text(rows: &[HistoryRow]) -> String {
    if rows.is_empty() {
        return "No changes recorded yet.\n".into();
    }
    let mut t = table(&[
        "when", "run", "client", "change", "subject", "state", "id", "after",
    ]);
    for r in rows {
        let (_, after) = describe(&r.change);
        let state = match (&r.error, r.reconciled) {
            (Some(e), _) => format!("{}: {}", r.state, shorten(e, 60)),
            (None, true) => format!("{} (reconciled)", r.state),
            (None, false) => r.state.clone(),
        };
        t.add_row(vec![
            cell(
                r.recorded_at
                    .get(..19)
                    .unwrap_or(&r.recorded_at)
                    .replace('T', " "),
            ),
            cell(&r.run_id),
            cell(&r.client),
            cell(r.kind.replace('_', " ")),
            cell(&r.subject),
            cell(state),
            cell(r.remote_id.as_deref().unwrap_or("")),
            cell(shorten(&after, 60)),
        ]);
    }
    // The run id whole on one line: it is copied into `rollcall report`.
    if let Some(run) = t.column_mut(1) {
        run.set_constraint(comfy_table::ColumnConstraint::ContentWidth);
    }
    format!("{t}\n")
}

#[cfg(test)]
mod tests {
    use rollcall_core::{AdditionFields, Change};

    use super::*;
    use crate::run::{PLAN_FORMAT, PlannedChange};

    fn plan() -> PipelinePlan {
        let fields = |q| AdditionFields {
            quantity: q,
            unit_price: "1.00".parse().expect("price"),
            invoice_description: "x".into(),
        };
        PipelinePlan {
            format: PLAN_FORMAT,
            pipeline: "p".into(),
            target: "connectwise".into(),
            currency: None,
            clients: vec![],
            changes: vec![PlannedChange {
                client: "Acme".into(),
                change: Change::UpdateAddition {
                    id: "1".into(),
                    product: "M365".into(),
                    before: Box::new(fields(3)),
                    after: Box::new(fields(2)),
                },
            }],
        }
    }

    #[test]
    fn colour_only_when_asked_for() {
        let plain = plan_text_styled(&plan(), false);
        assert!(
            !plain.contains('\u{1b}'),
            "no escape codes when piped or NO_COLOR"
        );
        let coloured = plan_text_styled(&plan(), true);
        assert!(coloured.contains("\u{1b}["), "escape codes at a terminal");
        assert!(coloured.contains("update addition"));
    }

    #[test]
    fn a_plan_too_big_for_a_table_lists_every_change_on_a_line_cleaned_and_shortened() {
        let mut big = plan();
        let one = big.changes.pop().expect("a change");
        for i in 0..=TABLE_ROWS {
            let mut c = one.clone();
            if let Change::UpdateAddition { product, .. } = &mut c.change {
                *product = match i {
                    0 => "Evil\u{202e}gnp.exe\u{1b}[31m".into(),
                    1 => format!("Very {} long product", "very ".repeat(30)),
                    _ => format!("P{i}"),
                };
            }
            big.changes.push(c);
        }
        let text = plan_text_styled(&big, false);
        assert!(text.starts_with(&format!("{} changes, one a line", TABLE_ROWS + 1)));
        for i in 2..=TABLE_ROWS {
            assert!(text.contains(&format!("P{i} ")), "P{i} is listed");
        }
        assert_eq!(text.matches("update addition").count(), TABLE_ROWS + 1);
        assert!(
            !text.contains('\u{202e}') && !text.contains('\u{1b}'),
            "cleaned"
        );
        assert!(
            text.contains("Very very"),
            "a long subject is shortened, not dropped"
        );
        assert!(!text.contains(&"very ".repeat(30)));
        assert!(
            text.contains("3 × 1.00 · x → 2 × 1.00 · x"),
            "before → after on the line"
        );
        let changes = text.split('┌').next().expect("the changes part");
        assert!(
            !changes.contains('│') && !changes.contains('┆'),
            "no table for the changes (the clients' summary stays one)"
        );
        let coloured = plan_text_styled(&big, true);
        assert!(
            coloured.contains("\u{1b}[31mupdate addition"),
            "a lowering is red"
        );
        // One change fewer and it is a table again.
        big.changes.truncate(TABLE_ROWS);
        assert!(!plan_text_styled(&big, false).contains("one a line"));
    }
}
