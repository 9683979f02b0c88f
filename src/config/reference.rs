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
    section(&mut out, "Pipeline file", schema);
    if let Some(defs) = schema.get("$defs").and_then(Value::as_object) {
        for (name, def) in defs {
            section(&mut out, name, def);
        }
    }
    out
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
