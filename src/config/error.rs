//! Errors a user can make in a pipeline file, each with where, what, and what to do.

use std::fmt;
use std::path::{Path, PathBuf};

use super::at::Pos;

/// One problem in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub pos: Pos,
    pub message: String,
    pub hint: String,
    /// The source line the error points at, for the caret display.
    pub line_text: Option<String>,
}

impl ConfigError {
    pub fn new(file: &Path, pos: Pos, message: impl Into<String>, hint: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_owned(),
            pos,
            message: message.into(),
            hint: hint.into(),
            line_text: None,
        }
    }

    pub(crate) fn with_source(mut self, source: &str) -> Self {
        if self.pos.line > 0 {
            self.line_text = source
                .lines()
                .nth(self.pos.line as usize - 1)
                .map(str::to_owned);
        }
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.pos.line,
            self.pos.column,
            self.message
        )?;
        if let Some(line) = &self.line_text {
            let gutter = self.pos.line.to_string();
            write!(f, "\n {gutter} | {line}")?;
            let pad = " ".repeat(gutter.len());
            let col = (self.pos.column as usize).saturating_sub(1);
            let lead: String = line
                .chars()
                .take(col)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            write!(f, "\n {pad} | {lead}^")?;
        }
        if !self.hint.is_empty() {
            write!(f, "\n  hint: {}", self.hint)?;
        }
        Ok(())
    }
}

/// Every problem found in one pipeline file (validation reports them all at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

impl ConfigErrors {
    /// In file order, each problem once: a rule written in `defaults` and broken is broken for
    /// every client that inherits it, but it is one mistake on one line.
    pub(crate) fn settle(mut errors: Vec<ConfigError>) -> ConfigErrors {
        errors.sort_by_key(|e| (e.pos.line, e.pos.column));
        let mut seen = std::collections::HashSet::new();
        errors.retain(|e| {
            seen.insert((
                e.pos.line,
                e.pos.column,
                without_client(&e.message).to_owned(),
            ))
        });
        ConfigErrors(errors)
    }
}

/// A message without its leading "client `Acme`: ", which differs between clients that
/// inherit the same broken default.
fn without_client(message: &str) -> &str {
    message
        .strip_prefix("client `")
        .and_then(|rest| rest.split_once("`: "))
        .map_or(message, |(_, m)| m)
}

/// The name serde quotes after `marker` ("unknown field `x`", "missing field `x`").
pub(crate) fn quoted_after<'a>(message: &'a str, marker: &str) -> Option<&'a str> {
    let rest = &message[message.find(marker)? + marker.len()..];
    let rest = rest.trim_start().strip_prefix('`')?;
    Some(&rest[..rest.find('`')?])
}

/// The text with the mistake `e` points at taken out, so parsing can go on and report the
/// next one; line numbers stay as they were. `None` when the mistake cannot be stepped over
/// safely (then the errors found so far are reported).
pub(crate) fn step_over(text: &str, e: &ConfigError) -> Option<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let at = (e.pos.line as usize).checked_sub(1)?;
    if let Some(field) = quoted_after(&e.message, "unknown field") {
        // A misspelled key in block style: blank it and everything nested under it.
        let line = lines.get(at)?;
        let indent = (e.pos.column as usize).checked_sub(1)?;
        let (lead, key) = (line.get(..indent)?, line.get(indent..)?);
        let is_key = lead.chars().all(char::is_whitespace)
            && key
                .strip_prefix(field)
                .is_some_and(|r| r.trim_start().starts_with(':'));
        if !is_key {
            return None;
        }
        lines[at].clear();
        for line in lines.iter_mut().skip(at + 1) {
            let trimmed = line.trim_start();
            let depth = line.len() - trimmed.len();
            let nested = trimmed.is_empty()
                || trimmed.starts_with('#')
                || depth > indent
                || (depth == indent && trimmed.starts_with("- "));
            if !nested {
                break;
            }
            line.clear();
        }
    } else if let Some(name) = e
        .message
        .split("environment variable ")
        .nth(1)
        .and_then(|r| {
            r.strip_suffix(" is not set")
                .or_else(|| r.split(" is not set").next())
        })
    {
        // An unset variable: read on as if it were set, to find the other unset ones.
        let reference = format!("${{{name}}}");
        if !lines.iter().any(|l| l.contains(&reference)) {
            return None;
        }
        for line in &mut lines {
            *line = line.replace(&reference, &format!("${{{name}:-unset}}"));
        }
    } else {
        return None;
    }
    let mut out = lines.join("\n");
    out.push('\n');
    Some(out)
}

/// A hint that fits what is actually written: a required key that is missing from its
/// mapping but present a few lines away at another indentation was mis-indented, not left
/// out; a target written as `kind: KIND` needs the kind as the key.
pub(crate) fn fitting_hint(text: &str, message: &str) -> Option<String> {
    if let Some(field) = quoted_after(message, "missing field") {
        let found = text.lines().enumerate().find(|(_, l)| {
            let t = l.trim_start().trim_start_matches("- ");
            t.strip_prefix(field)
                .is_some_and(|r| r.trim_start().starts_with(':'))
        });
        return Some(match found {
            Some((i, l)) => format!(
                "`{field}:` on line {} (column {}) is not inside this mapping: indent it to line up with the other keys of the same item",
                i + 1,
                l.len() - l.trim_start().len() + 1
            ),
            None => format!("add `{field}:` here; `rollcall schema` shows what each section needs"),
        });
    }
    if quoted_after(message, "unknown variant") == Some("kind") {
        let kinds: Vec<String> = super::connectors::TARGET_STARTERS
            .iter()
            .map(|(kind, _)| format!("`{kind}:`"))
            .collect();
        return Some(format!(
            "the kind of target is the key itself: write `target:` and under it the kind ({}) with that system's settings indented below",
            kinds.join(", ")
        ));
    }
    None
}

/// How far apart two short names are (insertions, deletions, substitutions).
pub(crate) fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
}
