//! Credentials that must never reach a log, a plan, an error or `Debug` output.

use std::fmt;

/// A secret value (API key, password, token). `Debug` and `Display` print a placeholder;
/// reading the value takes a deliberate [`Secret::expose`]. It is never serialized.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The real value, for the one place that must send it (an auth header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("********")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(..)");
        assert_eq!(format!("{s}"), "********");
        assert!(!format!("{:?}", Some(&s)).contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }
}

/// Secrets are written in pipelines as references, never as values:
/// `${ENV_VAR}`, `${ENV_VAR:-default}` or `${file:/path/to/file}` (trailing newline dropped).
/// The reference is resolved while the pipeline is read, so a missing variable is reported at
/// the line and column where it is written.
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        resolve_reference(&text).map_err(serde::de::Error::custom)
    }
}

/// Resolves a secret reference (see [`Secret`]'s `Deserialize`). The error names the reference,
/// never a value.
pub fn resolve_reference(text: &str) -> Result<Secret, String> {
    let inner = text
        .trim()
        .strip_prefix("${")
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(|| {
            "a secret must be a reference, not a value: write ${ENV_VAR} or ${file:/path} \
             (hint: keep keys out of pipeline files so they never reach version control)"
                .to_owned()
        })?;
    if let Some(path) = inner.strip_prefix("file:") {
        let content = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read secret file {path}: {e} (hint: check the path and its permissions)"
            )
        })?;
        return Ok(Secret::new(content.trim_end_matches(['\r', '\n'])));
    }
    let (name, default) = match inner.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (inner, None),
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "`${{{name}}}` is not a valid environment variable name (hint: letters, digits and _ only)"
        ));
    }
    match (std::env::var(name), default) {
        (Ok(value), _) if !value.is_empty() => Ok(Secret::new(value)),
        (_, Some(default)) => Ok(Secret::new(default)),
        _ => Err(format!(
            "environment variable {name} is not set (hint: export {name}=… before running, or use ${{file:/path}})"
        )),
    }
}

impl schemars::JsonSchema for Secret {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Secret".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^\\$\\{.+\\}$",
            "description": "A reference to a secret: ${ENV_VAR}, ${ENV_VAR:-default} or ${file:/path}.",
            "examples": ["${CW_PRIVATE_KEY}", "${file:/run/secrets/cw_private_key}"]
        })
    }
}

#[cfg(test)]
mod reference_tests {
    use super::*;

    #[test]
    fn literals_are_refused_and_references_resolve() {
        assert!(
            resolve_reference("hunter2")
                .unwrap_err()
                .contains("must be a reference")
        );
        assert_eq!(
            resolve_reference("${ROLLCALL_SURELY_UNSET_VAR:-dflt}")
                .expect("default")
                .expose(),
            "dflt"
        );
        let err = resolve_reference("${ROLLCALL_SURELY_UNSET_VAR}").unwrap_err();
        assert!(
            err.contains("ROLLCALL_SURELY_UNSET_VAR is not set"),
            "{err}"
        );
        let dir = std::env::temp_dir().join(format!("rollcall-secret-{}", std::process::id()));
        std::fs::write(&dir, "s3cret\n").expect("write");
        let s = resolve_reference(&format!("${{file:{}}}", dir.display())).expect("file");
        assert_eq!(s.expose(), "s3cret");
        let _ = std::fs::remove_file(dir);
    }
}
