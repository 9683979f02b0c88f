//! Hostile text and state at rollcall's edges, through the real executable: directory names
//! carrying terminal escapes, bidi overrides and spreadsheet formulas; rules deep enough to
//! overflow a parser; a store file that is empty, foreign or too open.

use std::process::{Command, Output};

use crate::support::{PIPELINE, World, printed, rollcall_bin};

fn rollcall(w: &World, args: &[&str]) -> Output {
    Command::new(rollcall_bin())
        .args(args)
        .env("ROLLCALL_STORE", w.store())
        .env("RUST_LOG", "info")
        .env_remove("ROLLCALL_STORE_KEY")
        .output()
        .expect("run rollcall")
}

/// Control and bidi characters a hostile directory entry carries.
const HOSTILE: [char; 5] = ['\u{1b}', '\u{7}', '\u{202e}', '\u{9b}', '\u{2066}'];

fn assert_clean(what: &str, out: &str) {
    for c in HOSTILE {
        assert!(!out.contains(c), "{what} holds {c:?}: {out:?}");
    }
    // JSON writes control characters as escapes.
    for escaped in ["\\u001b", "\\u0007", "\\u009b"] {
        assert!(!out.contains(escaped), "{what} holds {escaped}: {out}");
    }
}

/// Three people: one with a window-title escape and a bell, one with a bidi override and a
/// C1 CSI, one whose name is a spreadsheet formula.
const PEOPLE: &str = "id,given_name,surname,email,enabled,groups\n\
    id-1,\"Ann\u{1b}]0;owned\u{7}\",\"Lee\u{1b}[2J\",ann@acme.example,true,M365 Users\n\
    id-2,\"Bob\u{202e}gpj.exe\",\"Ray\u{9b}31m\u{2066}\",bob@acme.example,true,M365 Users\n\
    id-3,\"=HYPERLINK(\"\"http://x.example\"\")\",@SUM(A1),cy@acme.example,true,Staff\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_reach_no_terminal_report_log_or_billing_system() {
    let w = World::new(PEOPLE).await;
    let file = w.pipeline_path();
    let file = file.to_str().expect("utf-8 path");

    let plan = rollcall(&w, &["plan", file]);
    assert_eq!(plan.status.code(), Some(0), "{}", printed(&plan));
    assert!(printed(&plan).contains("Ann]0;owned"), "{}", printed(&plan));
    assert_clean("plan", &printed(&plan));

    let run = rollcall(&w, &["run", file]);
    assert_eq!(run.status.code(), Some(0), "{}", printed(&run));
    assert_clean("run and its logs", &printed(&run));

    // What ConnectWise received, as its sandbox keeps it (contacts, additions' descriptions).
    let received = serde_json::to_string(&w.sandbox.state()).expect("state");
    assert!(received.contains("Bobgpj.exe"), "{received}");
    assert_clean("ConnectWise", &received);

    let again = rollcall(&w, &["plan", file]);
    assert!(
        printed(&again).contains("No changes"),
        "cleaned names read back equal: {}",
        printed(&again)
    );

    for args in [
        &["history"][..],
        &["history", "--output", "json"],
        &["explain", file, "--client", "Acme", "--person", "id-1"],
        &["explain", file, "--client", "Acme", "--product", "m365"],
    ] {
        let o = rollcall(&w, args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", printed(&o));
        assert_clean(&format!("{args:?}"), &printed(&o));
    }
    let history = rollcall(&w, &["history", "--output", "json"]);
    let rows: serde_json::Value = serde_json::from_slice(&history.stdout).expect("json");
    let run_id = rows[0]["run_id"].as_str().expect("run id").to_owned();
    for format in ["html", "csv", "json"] {
        let o = rollcall(&w, &["report", &run_id, "--format", format]);
        assert_eq!(o.status.code(), Some(0), "{format}: {}", printed(&o));
        assert_clean(format, &printed(&o));
    }
    let csv = rollcall(&w, &["report", &run_id, "--format", "csv"]);
    assert_formulas_neutralised(&String::from_utf8_lossy(&csv.stdout));

    // The run report written beside the store is the owner's alone.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let reports: Vec<_> = walk(w.dir.path())
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "html"))
            .collect();
        assert!(!reports.is_empty(), "a run report was written");
        for report in reports {
            let mode = std::fs::metadata(&report)
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{}", report.display());
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// No cell of `csv` starts a formula: every field is read back with a real CSV reader.
fn assert_formulas_neutralised(csv: &str) {
    let mut reader = csv::ReaderBuilder::new().from_reader(csv.as_bytes());
    let mut cells = 0;
    for record in reader.records() {
        for cell in record.expect("a well-formed CSV").iter() {
            cells += 1;
            let number = cell.trim_start_matches(['-', '+']).parse::<f64>().is_ok();
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']) || number,
                "formula cell {cell:?} in {csv}"
            );
        }
    }
    assert!(cells > 0, "{csv}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_value_report_csv_neutralises_formulas_from_names_and_tickets() {
    let w = World::new(PEOPLE).await;
    let file = w.pipeline_path();
    let file = file.to_str().expect("utf-8 path");
    let run = rollcall(&w, &["run", file]);
    assert_eq!(run.status.code(), Some(0), "{}", printed(&run));
    let today = chrono::Utc::now().date_naive();
    let contact = w
        .state()
        .await
        .contacts
        .iter()
        .find(|c| c.fields.email.as_deref() == Some("cy@acme.example"))
        .and_then(|c| c.id.parse().ok())
        .expect("contact");
    w.sandbox
        .add_ticket(
            "ACME",
            Some(contact),
            "+cmd|' /C calc'!A0",
            &today.to_string(),
            None,
        )
        .expect("ticket");
    let from = (today - chrono::Duration::days(30)).to_string();
    let to = today.to_string();
    for format in ["csv", "html", "json"] {
        let o = rollcall(
            &w,
            &[
                "value-report",
                file,
                "--client",
                "Acme",
                "--from",
                &from,
                "--to",
                &to,
                "--format",
                format,
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{format}: {}", printed(&o));
        assert_clean(format, &printed(&o));
        if format == "csv" {
            let csv = String::from_utf8_lossy(&o.stdout);
            assert!(csv.contains("'+cmd"), "{csv}");
            assert_formulas_neutralised(&csv);
        }
    }
}

#[test]
fn rules_twenty_thousand_deep_are_refused_at_their_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = format!("attributes{}", ".b".repeat(20_000));
    let blocks = format!(
        "{}x{}",
        "{{#if first_name}}".repeat(5_000),
        "{{/if}}".repeat(5_000)
    );
    let seats_line = PIPELINE
        .lines()
        .position(|l| l.contains("seats:"))
        .expect("seats line")
        + 1;
    let description_line = PIPELINE
        .lines()
        .position(|l| l.contains("description:"))
        .expect("description line")
        + 1;
    for (what, yaml, line) in [
        (
            "cel",
            PIPELINE.replace("\"'M365 Users' in groups\"", &format!("\"{chain}\"")),
            seats_line,
        ),
        (
            "handlebars",
            PIPELINE.replace("\"M365 for {{names}}\"", &format!("\"{blocks}\"")),
            description_line,
        ),
    ] {
        let path = dir.path().join(format!("{what}.yaml"));
        std::fs::write(&path, yaml.replace("SANDBOX_URL", "http://127.0.0.1:9")).expect("write");
        let o = Command::new(rollcall_bin())
            .args(["validate", path.to_str().expect("path")])
            .output()
            .expect("run rollcall");
        let out = printed(&o);
        let head: String = out.chars().take(2000).collect();
        assert_eq!(o.status.code(), Some(1), "{what}: {head}");
        assert!(
            out.contains(&format!("{what}.yaml:{line}:")),
            "{what} at line {line}: {head}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_foreign_store_is_refused_and_a_new_one_is_private() {
    let w = World::new(PEOPLE).await;
    let file = w.pipeline_path();
    let file = file.to_str().expect("utf-8 path");
    for (what, contents, says) in [
        ("empty", &b""[..], "empty file (0 bytes)"),
        ("text", b"name,seats\nAcme,4\n", "not an SQLite database"),
    ] {
        std::fs::write(w.store(), contents).expect("write");
        let o = rollcall(&w, &["plan", file]);
        assert_eq!(o.status.code(), Some(2), "{what}: {}", printed(&o));
        assert!(printed(&o).contains(says), "{what}: {}", printed(&o));
        assert_eq!(
            std::fs::read(w.store()).expect("read"),
            contents,
            "{what}: the file is left as it was"
        );
    }
    std::fs::remove_file(w.store()).expect("remove");
    let store = w.dir.path().join("new/dir/state.db");
    let o = Command::new(rollcall_bin())
        .args(["plan", file])
        .env("ROLLCALL_STORE", &store)
        .env_remove("ROLLCALL_STORE_KEY")
        .output()
        .expect("run rollcall");
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&store), 0o600);
        assert_eq!(mode(&w.dir.path().join("new/dir")), 0o700);
        assert_eq!(mode(&w.dir.path().join("new")), 0o700);
    }
    let leftovers: Vec<_> = std::fs::read_dir(w.dir.path().join("new/dir"))
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".new"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
