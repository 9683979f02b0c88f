//! The pipeline reference in Markdown, generated from the JSON Schema, which is generated from
//! the config types: one source for serde, editors and the docs. `docs/reference.md` is this
//! output, and a test fails when it drifts.

use serde_json::Value;

/// Renders the reference of pipeline files from `schema` (as `config::schema()` makes it).
pub fn markdown(schema: &Value) -> String {
    let mut out = String::from(
        "# Pipeline reference\n\n\
         Generated from rollcall's JSON Schema (`rollcall schema`), which is generated from the \
         types that read pipelines — so it is what rollcall accepts, key for key. Regenerate \
         with `rollcall schema --format markdown > docs/reference.md`.\n\n",
    );
    out.push_str(&limits());
    section(&mut out, "Pipeline file", schema);
    if let Some(defs) = schema.get("$defs").and_then(Value::as_object) {
        for (name, def) in defs {
            section(&mut out, name, def);
        }
    }
    out
}

/// What no schema says: how large a rule may be, and what happens to directory text.
fn limits() -> String {
    use super::bounds::{CEL_MAX_BYTES, CEL_MAX_DEPTH, TEMPLATE_MAX_BYTES, TEMPLATE_MAX_DEPTH};
    format!(
        "## Limits and text\n\n\
         **Rule size.** A CEL expression may be up to {CEL_MAX_BYTES} bytes and hold up to \
         {CEL_MAX_DEPTH} operators, `.` selections, calls and brackets in all (a bound on its \
         depth); a handlebars template may be up to {TEMPLATE_MAX_BYTES} bytes and nest blocks \
         (`{{{{#if}}}}`, `{{{{#each}}}}`, `{{{{^x}}}}`) and subexpressions up to {TEMPLATE_MAX_DEPTH} \
         deep. A larger rule is refused by `rollcall validate` (exit 1, FILE:LINE:COLUMN of the \
         rule) before any parser sees it, so no rule can overflow the stack or run for seconds. \
         Split a long rule into several, or test a list with `in [...]`.\n\n\
         **Directory text.** Control characters (C0 other than tab and line feed, DEL, C1: ESC, \
         BEL, CSI …) and bidirectional controls (U+202A–U+202E, U+2066–U+2069, U+200E, U+200F, \
         U+061C) are removed from every text rollcall makes from a directory before it is planned, \
         sent to a billing system or shown: contact fields, product names, invoice lines, the \
         names behind seats. Terminal tables, `explain`, `history`, logs and reports (HTML, CSV, \
         JSON) are cleaned the same way on output. In every CSV rollcall writes, a cell that starts \
         with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'` so a spreadsheet \
         shows it as text; a plain number (`-12.50`) is left as a number. The saved-plan JSON of \
         `rollcall plan --output json` keeps billing-system values exactly (JSON escapes control \
         characters), because `apply` compares them.\n\n"
    )
}

fn section(out: &mut String, name: &str, def: &Value) {
    out.push_str(&format!("## {name}\n\n"));
    if let Some(d) = def.get("description").and_then(Value::as_str) {
        out.push_str(&format!("{}\n\n", one_paragraph(d)));
    }
    if let Some(props) = def.get("properties").and_then(Value::as_object) {
        let required: Vec<&str> = def
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        out.push_str("| key | type | required | meaning |\n|---|---|---|---|\n");
        for (key, p) in props {
            let meaning = p
                .get("description")
                .and_then(Value::as_str)
                .map(one_paragraph)
                .unwrap_or_default();
            out.push_str(&format!(
                "| `{key}` | {} | {} | {} |\n",
                type_of(p),
                if required.contains(&key.as_str()) {
                    "yes"
                } else {
                    "no"
                },
                meaning.replace('|', "\\|")
            ));
        }
        out.push('\n');
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(variants) = def.get(key).and_then(Value::as_array) {
            out.push_str("One of:\n\n");
            for v in variants {
                let text = v
                    .get("description")
                    .and_then(Value::as_str)
                    .map(one_paragraph)
                    .unwrap_or_default();
                out.push_str(&format!(
                    "- {}{}\n",
                    type_of(v),
                    if text.is_empty() {
                        String::new()
                    } else {
                        format!(": {text}")
                    }
                ));
            }
            out.push('\n');
        }
    }
    if let Some(values) = def.get("enum").and_then(Value::as_array) {
        let list: Vec<String> = values
            .iter()
            .map(|v| format!("`{}`", v.as_str().unwrap_or_default()))
            .collect();
        out.push_str(&format!("Values: {}\n\n", list.join(", ")));
    }
    if let Some(examples) = def.get("examples").and_then(Value::as_array) {
        let list: Vec<String> = examples
            .iter()
            .map(|v| {
                format!(
                    "`{}`",
                    v.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string())
                )
            })
            .collect();
        out.push_str(&format!("Examples: {}\n\n", list.join(", ")));
    }
}

fn one_paragraph(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn type_of(p: &Value) -> String {
    if let Some(r) = p.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        return format!("[{name}](#{})", name.to_lowercase());
    }
    if let Some(any) = p.get("anyOf").and_then(Value::as_array) {
        let kinds: Vec<String> = any
            .iter()
            .filter(|v| v.get("type").and_then(Value::as_str) != Some("null"))
            .map(type_of)
            .collect();
        return kinds.join(" or ");
    }
    if let Some(props) = p.get("properties").and_then(Value::as_object)
        && p.get("type").and_then(Value::as_str) == Some("object")
        && props.len() == 1
    {
        // An externally tagged variant: `{ kind: {...} }`.
        let (key, inner) = props
            .iter()
            .next()
            .map(|(k, v)| (k.clone(), v.clone()))
            .unwrap_or_default();
        return format!("`{key}:` {}", type_of(&inner));
    }
    let kind = match p.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect::<Vec<_>>()
            .join(" or "),
        _ => String::new(),
    };
    match kind.as_str() {
        "array" => format!(
            "list of {}",
            p.get("items")
                .map(type_of)
                .unwrap_or_else(|| "values".into())
        ),
        "object" => match p.get("additionalProperties") {
            Some(v @ Value::Object(_)) => format!("map of product id → {}", type_of(v)),
            _ => "mapping".into(),
        },
        "" if p.get("enum").is_some() => "one of the values below".into(),
        "" => "value".into(),
        other => other.to_owned(),
    }
}
