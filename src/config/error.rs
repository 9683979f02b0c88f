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
