//! The `rollcall` executable: exit codes, JSON output, and what reaches stdout and stderr.

use std::process::{Command, Output};

use crate::support::{World, people_csv, printed, rollcall_bin};

fn rollcall(w: &World, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(rollcall_bin());
    cmd.args(args)
        .env("ROLLCALL_STORE", w.store())
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run rollcall")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_plan_and_run_exit_codes() {
    let w = World::new(&people_csv(6, 3)).await;
    let file = w.pipeline_path();
    let file = file.to_str().expect("utf-8 path");

    let o = rollcall(&w, &["validate", file], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    assert!(printed(&o).contains("ok:"));

    let o = rollcall(&w, &["plan", file, "--output", "json"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    let plan: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("one JSON object on stdout");
    let changes = plan["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 6 + 2);
    assert!(
        changes
            .iter()
            .all(|c| c["client"] == "Acme" && c["kind"].is_string() && c.get("after").is_some())
    );

    let o = rollcall(&w, &["run", file], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    let o = rollcall(&w, &["plan", file], &[]);
    assert!(printed(&o).contains("No changes"), "{}", printed(&o));

    let o = rollcall(&w, &["history"], &[]);
    assert_eq!(o.status.code(), Some(0));
    assert!(printed(&o).contains("create addition"), "{}", printed(&o));

    w.set_people(&people_csv(1, 1));
    let o = rollcall(&w, &["run", file], &[]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "a guard refusal exits 2: {}",
        printed(&o)
    );
    assert!(printed(&o).contains("--allow-drop"), "{}", printed(&o));

    let o = rollcall(&w, &["apply", file, "--allow-drop"], &[]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "no --yes off a terminal: {}",
        printed(&o)
    );
    assert!(printed(&o).contains("--yes"));
    let o = rollcall(&w, &["apply", file, "--allow-drop", "--yes"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_plan_is_applied_with_apply_dash_dash_plan() {
    let w = World::new(&people_csv(3, 1)).await;
    let file = w.pipeline_path();
    let file = file.to_str().expect("utf-8 path");
    let o = rollcall(&w, &["plan", file, "--output", "json"], &[]);
    let saved = w.dir.path().join("plan.json");
    std::fs::write(&saved, &o.stdout).expect("save plan");
    let o = rollcall(
        &w,
        &[
            "apply",
            file,
            "--plan",
            saved.to_str().expect("path"),
            "--yes",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    assert_eq!(w.quantity("HELPDESK-USER").await, Some(3));

    std::fs::write(&saved, "{\"format\": 1,\n \"pipeline\": 3}").expect("write");
    let o = rollcall(
        &w,
        &[
            "apply",
            file,
            "--plan",
            saved.to_str().expect("path"),
            "--yes",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", printed(&o));
    assert!(printed(&o).contains("plan.json:2:"), "{}", printed(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_exits_1_and_an_unreachable_target_exits_3() {
    let w = World::new(&people_csv(2, 1)).await;
    let broken = w.dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "name: x\ntarget: {connectwise: {}}\nproducts: []\nclients: []\nextra: 1\n",
    )
    .expect("write");
    let o = rollcall(&w, &["validate", broken.to_str().expect("path")], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(printed(&o).contains("broken.yaml:"), "{}", printed(&o));

    let unreachable = w.dir.path().join("unreachable.yaml");
    let yaml = std::fs::read_to_string(w.pipeline_path())
        .expect("read")
        .replace(&w.sandbox.url(), "http://127.0.0.1:9/v4_6_release/apis/3.0");
    std::fs::write(&unreachable, yaml).expect("write");
    let o = rollcall(&w, &["plan", unreachable.to_str().expect("path")], &[]);
    assert_eq!(o.status.code(), Some(3), "{}", printed(&o));
    assert!(printed(&o).contains("hint:"), "{}", printed(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_output_logs_or_debug() {
    let secret = "Zq9-very-secret-private-key-4711";
    let w = World::new(&people_csv(2, 1)).await;
    let file = w.pipeline_path();
    let file = file.to_str().expect("utf-8 path");
    // A wrong key: the sandbox answers 401, and the error must not quote the key.
    for format in ["text", "json"] {
        let o = rollcall(
            &w,
            &["plan", file, "--log-format", format],
            &[("ROLLCALL_E2E_PRIVATE", secret), ("RUST_LOG", "trace")],
        );
        assert_eq!(o.status.code(), Some(3), "{}", printed(&o));
        assert!(printed(&o).contains("401"), "{}", printed(&o));
        assert!(
            !printed(&o).contains(secret),
            "the secret leaked:\n{}",
            printed(&o)
        );
        assert!(
            !printed(&o).contains("Authorization: Basic"),
            "an auth header leaked"
        );
    }
    let debug = format!("{:?}", w.pipeline);
    assert!(
        !debug.contains("demo-private"),
        "Debug shows the key: {debug}"
    );
    assert!(debug.contains("Secret(..)"));
}

#[test]
fn the_demo_runs_end_to_end() {
    let o = Command::new(rollcall_bin())
        .arg("demo")
        .env_remove("RUST_LOG")
        .output()
        .expect("demo");
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    let out = printed(&o);
    assert!(out.contains("Writes since the first run: 0."), "{out}");
    assert!(out.contains("Grace Hopper"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_tests_pass_and_a_wrong_expectation_fails_with_a_diff() {
    let w = World::new(&people_csv(1, 1)).await;
    let ok = std::fs::read_to_string(w.pipeline_path()).expect("read")
        + r#"tests:
  - name: the M365 group takes M365 seats
    people:
      - { given_name: Ada, surname: L, email: ada@x, groups: [M365 Users] }
      - { given_name: Bob, surname: M, email: bob@x }
    expect:
      seats: { m365: 1, helpdesk: 2 }
      contacts: [ada@x, bob@x]
"#;
    let file = w.dir.path().join("tested.yaml");
    std::fs::write(&file, &ok).expect("write");
    let o = rollcall(&w, &["test", file.to_str().expect("path")], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    assert!(
        printed(&o).contains("1 case(s), 1 passed, 0 failed"),
        "{}",
        printed(&o)
    );

    let wrong = ok
        .replace(
            "seats: { m365: 1, helpdesk: 2 }",
            "seats: { m365: 2, helpdesk: 2 }",
        )
        .replace("[ada@x, bob@x]", "[ada@x, carol@x]");
    std::fs::write(&file, wrong).expect("write");
    let o = rollcall(&w, &["test", file.to_str().expect("path")], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", printed(&o));
    let out = printed(&o);
    assert!(
        out.contains("FAIL  the M365 group takes M365 seats"),
        "{out}"
    );
    assert!(
        out.contains("seats of m365: expected 2, got 1 (Ada L)"),
        "{out}"
    );
    assert!(
        out.contains("contacts: missing carol@x; unexpected bob@x"),
        "{out}"
    );
}

#[test]
fn every_example_pipeline_passes_its_tests() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/examples");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("examples")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "yaml")
                && !p.to_string_lossy().ends_with(".tests.yaml")
        })
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let o = Command::new(rollcall_bin())
        .arg("test")
        .args(&files)
        .output()
        .expect("rollcall test");
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
}

/// A new connector's one registration line brings `rollcall init --source/--target` with it, so
/// each must bring a starter that is valid once its secrets are set, never an empty `{}`.
#[test]
fn every_registered_connector_writes_a_starter_that_validates() {
    use rollcall::config::connectors::{DIRECTORY_STARTERS, TARGET_STARTERS};
    let dir = tempfile::tempdir().expect("tempdir");
    let kinds = DIRECTORY_STARTERS
        .iter()
        .map(|(k, _)| ("--source", *k))
        .chain(TARGET_STARTERS.iter().map(|(k, _)| ("--target", *k)));
    for (flag, kind) in kinds {
        let file = dir.path().join(format!("{kind}.yaml"));
        let path = file.to_str().expect("path");
        let o = Command::new(rollcall_bin())
            .args(["init", path, flag, kind])
            .output()
            .expect("rollcall");
        assert_eq!(o.status.code(), Some(0), "{kind}: {}", printed(&o));
        let written = std::fs::read_to_string(&file).expect("starter");
        assert!(
            !written.contains(": {}"),
            "{kind} has no starter of its own:\n{written}"
        );
        // Every secret reference the starter makes, set as an operator would.
        let secrets: Vec<&str> = written
            .split("${")
            .skip(1)
            .filter_map(|rest| rest.split(['}', ':']).next())
            .collect();
        let o = Command::new(rollcall_bin())
            .args(["validate", path])
            .envs(secrets.iter().map(|name| (*name, "set-by-test")))
            .output()
            .expect("rollcall");
        assert_eq!(o.status.code(), Some(0), "{kind}: {}", printed(&o));
    }
}

#[test]
fn init_writes_a_starter_that_validates_and_passes_its_tests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("new.yaml");
    let run = |args: &[&str]| {
        Command::new(rollcall_bin())
            .args(args)
            .env("CW_PUBLIC_KEY", "p")
            .env("CW_PRIVATE_KEY", "k")
            .output()
            .expect("rollcall")
    };
    let path = file.to_str().expect("path");
    let o = run(&["init", path]);
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    for cmd in ["validate", "test"] {
        let o = run(&[cmd, path]);
        assert_eq!(o.status.code(), Some(0), "{cmd}: {}", printed(&o));
    }
    let o = run(&["init", path]);
    assert_eq!(o.status.code(), Some(1), "never overwrites");
    let o = run(&[
        "init",
        dir.path().join("x.yaml").to_str().expect("path"),
        "--source",
        "ftp",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        printed(&o).contains("no directory named `ftp` (hint: one of file"),
        "{}",
        printed(&o)
    );
}
