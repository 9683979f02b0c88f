//! What a new user meets first, through the real executable: `validate` naming every mistake
//! at once, `init` naming every variable, help for every option, `runs` and `history` giving
//! the ids `report` takes, `serve` saying what it serves, and reports that explain themselves.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use crate::support::{World, people_csv, printed, rollcall_bin};

fn validate(yaml: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("p.yaml");
    std::fs::write(&file, yaml).expect("write");
    let o = Command::new(rollcall_bin())
        .arg("validate")
        .arg(&file)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .output()
        .expect("rollcall");
    (o.status.code(), printed(&o))
}

const THREE_CLIENTS: &str = r#"name: t
target:
  connectwise:
    url: http://127.0.0.1:1/v4_6_release/apis/3.0
    company_id: demo
    public_key: ${ROLLCALL_T_UNSET_PUBLIC}
    private_key: ${ROLLCALL_T_UNSET_PRIVATE}
    client_id: 00000000-0000-4000-8000-000000000000
products:
  - id: helpdesk
    identifier: HELPDESK-USER
    unit_price: 35.00
    descripton: "{{names}}"
defaults:
  counted: "enabled &&"
  contact:
    title: x
clients:
  - name: A
    directory: { file: { path: a.csv } }
    company: A
    agreemnt: Managed Services
  - name: B
    directory: { file: { path: b.csv } }
    company: B
    agreement: Managed Services
  - name: C
    directory: { file: { path: c.csv } }
    company: C
    agreement: Managed Services
"#;

#[test]
fn validate_names_every_mistake_once_each_with_its_line() {
    let (code, out) = validate(THREE_CLIENTS, &[]);
    assert_eq!(code, Some(1), "{out}");
    // Three misspelled keys, two unset variables, one broken rule every client inherits.
    for (line, what) in [
        (6, "ROLLCALL_T_UNSET_PUBLIC"),
        (7, "ROLLCALL_T_UNSET_PRIVATE"),
        (13, "unknown field `descripton`"),
        (15, "bad CEL expression `enabled &&`"),
        (16, "unknown field `contact`"),
        (22, "unknown field `agreemnt`"),
    ] {
        assert!(
            out.contains(&format!("p.yaml:{line}:")) && out.contains(what),
            "line {line}, {what}:\n{out}"
        );
    }
    let errors = out.lines().filter(|l| l.starts_with("error: ")).count();
    assert_eq!(errors, 6, "{out}");
    assert_eq!(
        out.matches("bad CEL expression").count(),
        1,
        "the broken default once, not once per client:\n{out}"
    );
    assert!(
        !out.contains("missing field `agreement`"),
        "a misspelling is one mistake:\n{out}"
    );
    // Each error in file order.
    let lines: Vec<u32> = out
        .lines()
        .filter_map(|l| l.strip_prefix("error: "))
        .filter_map(|l| l.split(':').nth(1)?.parse().ok())
        .collect();
    let mut sorted = lines.clone();
    sorted.sort_unstable();
    assert_eq!(lines, sorted, "{out}");
}

#[test]
fn a_mis_indented_key_is_not_called_missing_without_saying_where_it_is() {
    let yaml = "name: t\ntarget:\n  connectwise:\n    url: http://127.0.0.1:1/x\n    company_id: demo\n    public_key: ${X:-a}\n    private_key: ${Y:-b}\n    client_id: 00000000-0000-4000-8000-000000000000\nproducts:\n  - id: helpdesk\n  identifier: HELPDESK-USER\n    unit_price: 35.00\nclients: []\n";
    let (code, out) = validate(yaml, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(!out.contains("hint: add the key"), "{out}");
    assert!(
        out.contains("line 11") || out.contains("p.yaml:11:"),
        "points at the key where it is:\n{out}"
    );
}

#[test]
fn a_target_written_with_a_kind_key_is_told_the_kind_is_the_key() {
    let yaml = "name: t\ntarget:\n  kind: connectwise\n  url: http://127.0.0.1:1/x\nproducts: []\nclients: []\n";
    let (code, out) = validate(yaml, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("p.yaml:3:"), "{out}");
    assert!(out.contains("`connectwise:`"), "{out}");
}

#[test]
fn validate_stops_on_a_file_that_is_nothing_but_mistakes() {
    // Hundreds of misspelled keys: the report ends, and names the first of them.
    let mut yaml = String::from("name: t\n");
    for i in 0..300 {
        yaml.push_str(&format!("typo{i}: x\n"));
    }
    let (code, out) = validate(&yaml, &[]);
    assert_eq!(code, Some(1));
    assert!(out.contains("unknown field `typo0`"), "{out}");
    assert!(out.matches("error:").count() <= 100, "bounded");
}

#[test]
fn init_names_every_variable_to_export_and_validate_names_them_all_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("new.yaml");
    let run = |args: &[&str]| {
        Command::new(rollcall_bin())
            .args(args)
            .arg(&file)
            .env_remove("CW_PUBLIC_KEY")
            .env_remove("CW_PRIVATE_KEY")
            .output()
            .expect("rollcall")
    };
    let o = run(&["init"]);
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    assert!(
        printed(&o).contains("export CW_PUBLIC_KEY=… CW_PRIVATE_KEY=…"),
        "{}",
        printed(&o)
    );
    let o = run(&["validate"]);
    assert_eq!(o.status.code(), Some(1));
    let out = printed(&o);
    assert!(
        out.contains("CW_PUBLIC_KEY is not set") && out.contains("CW_PRIVATE_KEY is not set"),
        "both at once:\n{out}"
    );
}

#[test]
fn every_argument_and_option_is_described_and_sandbox_names_every_kind() {
    use clap::CommandFactory;
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} {id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_about().is_none() && sub.get_name() != "help" {
                missing.push(format!("{path} {}", sub.get_name()));
            }
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut missing = Vec::new();
    walk(&rollcall::cli::Cli::command(), "rollcall", &mut missing);
    assert!(missing.is_empty(), "undescribed: {missing:?}");

    let o = Command::new(rollcall_bin())
        .args(["sandbox", "--help"])
        .output()
        .expect("rollcall");
    let help = printed(&o);
    for kind in rollcall::config::connectors::SANDBOXES.iter() {
        assert!(
            help.contains(kind),
            "`sandbox --help` omits {kind}:\n{help}"
        );
    }
}

fn rollcall(w: &World, args: &[&str]) -> Output {
    Command::new(rollcall_bin())
        .args(args)
        .env("ROLLCALL_STORE", w.store())
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .output()
        .expect("rollcall")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_and_history_give_the_ids_report_takes() {
    let w = World::new(&people_csv(4, 2)).await;
    let file = w.pipeline_path();
    let file = file.to_str().expect("path");
    let o = rollcall(&w, &["runs"]);
    assert!(
        printed(&o).contains("No runs recorded yet"),
        "{}",
        printed(&o)
    );
    let o = rollcall(&w, &["run", file]);
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    w.set_people(&people_csv(3, 2));
    let o = rollcall(&w, &["run", file]);
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));

    let o = rollcall(&w, &["runs", "--output", "json"]);
    let runs: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let runs = runs.as_array().expect("a list");
    assert_eq!(runs.len(), 2, "{runs:?}");
    // Newest first: the second run took Acme from 6 seats (4 helpdesk, 2 M365) to 5.
    assert_eq!(runs[0]["trigger"], "run");
    assert_eq!(runs[0]["outcome"], "ok");
    assert_eq!(runs[0]["seats_before"], 6);
    assert_eq!(runs[0]["seats_after"], 5);
    assert_eq!(runs[0]["amount_before"], "184.00");
    assert_eq!(runs[0]["amount_after"], "149.00");
    let newest = runs[0]["run_id"].as_str().expect("id").to_owned();

    let table = printed(&rollcall(&w, &["runs"]));
    assert!(table.contains(&newest), "{table}");
    assert!(table.contains("184.00 → 149.00 USD"), "{table}");
    let history = printed(&rollcall(&w, &["history"]));
    assert!(
        history.contains(&newest),
        "history shows run ids:\n{history}"
    );
    let o = rollcall(&w, &["report", &newest, "--format", "csv"]);
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    assert!(printed(&o).contains("HELPDESK-USER"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_says_what_it_serves_and_metrics_describe_themselves_before_any_event() {
    let w = World::new(&people_csv(2, 1)).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut child = Command::new(rollcall_bin())
        .arg("serve")
        .arg(w.pipeline_path())
        .args(["--listen", &format!("127.0.0.1:{port}"), "--workers", "0"])
        .env("ROLLCALL_STORE", w.store())
        .env("ROLLCALL_WEBHOOK_SECRET", "s3cret-for-the-test")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = std::iter::from_fn(|| rx.recv_timeout(std::time::Duration::from_secs(30)).ok())
        .find(|l| l.contains("listening on"))
        .expect("a startup line");
    let store = w.store().display().to_string();
    for part in [
        format!("listening on http://127.0.0.1:{port}"),
        "queue sqlite:".to_owned(),
        format!("store {store}"),
        "pipelines e2e (1 client(s))".to_owned(),
    ] {
        assert!(first.contains(&part), "{part} in: {first}");
    }
    let url = format!("http://127.0.0.1:{port}/metrics");
    let mut metrics = String::new();
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(&url).await {
            metrics = r.text().await.expect("body");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        metrics.contains("# TYPE rollcall_jobs_total counter"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rollcall_build_info{version="),
        "{metrics}"
    );
    let logged: Vec<String> = rx.try_iter().collect();
    assert!(
        !logged.iter().any(|l| l.contains('\u{1b}')),
        "no colour codes in logs that are not a terminal: {logged:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_report_for_a_period_before_the_ledger_says_why_it_is_empty() {
    let w = World::new(&people_csv(2, 1)).await;
    let file = w.pipeline_path();
    let file = file.to_str().expect("path");
    let args = |from: &'static str, to: &'static str| {
        [
            "value-report",
            file,
            "--client",
            "Acme",
            "--from",
            from,
            "--to",
            to,
            "--format",
            "json",
        ]
    };
    let o = rollcall(&w, &args("2020-01-01", "2020-03-31"));
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    assert!(
        printed(&o).contains("No seat of Acme has been recorded yet"),
        "{}",
        printed(&o)
    );
    let o = rollcall(&w, &["run", file]);
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    let o = rollcall(&w, &args("2020-01-01", "2020-03-31"));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let note = report["note"].as_str().expect("note");
    assert!(note.contains("begins on"), "{note}");
    assert!(note.contains("after this period"), "{note}");
}
