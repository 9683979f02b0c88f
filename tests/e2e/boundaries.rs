//! The engine never names a vendor (ARCHITECTURE.md, invariant 11): everything vendor-shaped is
//! its connector's, reached through the registry. This test holds `src/` to the rule exactly as
//! ARCHITECTURE.md words it.

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The registry: the only files of `src/` that name connectors.
const REGISTRY: &[&str] = &["src/config/connectors.rs"];

/// The connectors' vendors and products, as words. `ldap` and Active Directory are not on it:
/// LDAP is a protocol rollcall speaks to any directory server. Nor are the notification
/// channels of `src/notify` (Slack, Teams): they are not connectors.
const VENDORS: &[&str] = &[
    "connectwise",
    "autotask",
    "halopsa",
    "halo",
    "quickbooks",
    "xero",
    "graph",
    "entra",
];

/// Whether `line` names a vendor: one of [`VENDORS`], in any case, not inside a longer word
/// (`paragraph` is fine; `rollcall_graph`, `XERO_WEBHOOK_KEY` and `/hooks/graph` are not).
fn vendor_in(line: &str) -> Option<&'static str> {
    let lower = line.to_ascii_lowercase();
    VENDORS.iter().copied().find(|v| {
        lower.match_indices(v).any(|(at, _)| {
            let before = lower[..at].chars().next_back();
            let after = lower[at + v.len()..].chars().next();
            !before.is_some_and(|c| c.is_ascii_alphabetic())
                && !after.is_some_and(|c| c.is_ascii_alphabetic())
        })
    })
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The files `file` declares as test-only modules (`#[cfg(test)] mod name;`).
fn test_module_files(file: &Path, text: &str) -> Vec<PathBuf> {
    let lines: Vec<&str> = text.lines().collect();
    let dir = if file
        .file_name()
        .is_some_and(|n| n == "mod.rs" || n == "lib.rs" || n == "main.rs")
    {
        file.parent().expect("dir").to_owned()
    } else {
        file.with_extension("")
    };
    lines
        .windows(2)
        .filter(|w| w[0].trim() == "#[cfg(test)]")
        .filter_map(|w| {
            let name = w[1]
                .trim()
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub ")
                .strip_prefix("mod ")?
                .strip_suffix(';')?;
            Some(name.to_owned())
        })
        .flat_map(|name| {
            [
                dir.join(format!("{name}.rs")),
                dir.join(&name).join("mod.rs"),
            ]
        })
        .collect()
}

/// Lines of `text` outside inline test modules (`#[cfg(test)] mod name { … }`), by number.
fn non_test_lines(text: &str) -> Vec<(usize, &str)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let inline_tests = lines[i].trim() == "#[cfg(test)]"
            && lines.get(i + 1).is_some_and(|l| {
                let l = l.trim();
                l.starts_with("mod ") && l.ends_with('{')
            });
        if inline_tests {
            let mut depth = 0i64;
            let mut j = i + 1;
            while j < lines.len() {
                depth += lines[j].matches('{').count() as i64;
                depth -= lines[j].matches('}').count() as i64;
                if depth <= 0 {
                    break;
                }
                j += 1;
            }
            i = j + 1;
            continue;
        }
        out.push((i + 1, lines[i]));
        i += 1;
    }
    out
}

#[test]
fn src_outside_the_registry_names_no_vendor() {
    let root = Path::new(ROOT);
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    let mut tests_only = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        tests_only.extend(test_module_files(file, &text));
    }
    let mut named = Vec::new();
    for file in &files {
        let relative = file
            .strip_prefix(root)
            .expect("under the root")
            .to_string_lossy()
            .replace('\\', "/");
        if REGISTRY.contains(&relative.as_str()) || tests_only.contains(file) {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read");
        for (n, line) in non_test_lines(&text) {
            if let Some(vendor) = vendor_in(line) {
                named.push(format!("{relative}:{n}: `{vendor}` in: {}", line.trim()));
            }
        }
    }
    assert!(
        named.is_empty(),
        "src/ names a vendor outside the registry (ARCHITECTURE.md, invariant 11; move it into \
         the connector's crate, or reach it through the registry):\n{}",
        named.join("\n")
    );
}

#[test]
fn the_check_sees_vendors_in_identifiers_and_paths_but_not_inside_words() {
    assert_eq!(vendor_in("use rollcall_graph::Seed;"), Some("graph"));
    assert_eq!(vendor_in("env XERO_WEBHOOK_KEY"), Some("xero"));
    assert_eq!(
        vendor_in(r#"route("/hooks/connectwise/{p}")"#),
        Some("connectwise")
    );
    assert_eq!(vendor_in("/// Entra ID tenants"), Some("entra"));
    assert_eq!(vendor_in("one_paragraph(central)"), None);
    let text = "fn a() {}\n#[cfg(test)]\nmod tests {\n    fn b() { \"xero\" }\n}\nfn c() {}\n";
    let kept: Vec<usize> = non_test_lines(text).iter().map(|(n, _)| *n).collect();
    assert_eq!(kept, [1, 6]);
}
