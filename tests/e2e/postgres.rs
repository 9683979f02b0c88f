//! The store on PostgreSQL, through the real executable against the ConnectWise sandbox: two
//! rollcall processes in different working directories share one store (what one billed, the
//! other lowers; both explain it alike; neither makes a local store file), and an SQLite store
//! copied with `rollcall store copy` reads the same from PostgreSQL; `rollcall store check`.
//! Each test makes a database of its own on the test server (`rollcall_harness::PgDatabase`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rollcall_harness::PgDatabase;

use crate::approvals::{guarded, printed_id};
use crate::support::{PIPELINE, World, people_csv, printed, rollcall_bin};

/// `rollcall ARGS` started in `dir` with `store`; no queue, no store key.
fn rollcall_in(dir: &Path, store: &str, args: &[&str]) -> Output {
    Command::new(rollcall_bin())
        .current_dir(dir)
        .args(args)
        .env("ROLLCALL_STORE", store)
        .env("USER", "alice")
        .env_remove("ROLLCALL_QUEUE")
        .env_remove("ROLLCALL_STORE_KEY")
        .env_remove("RUST_LOG")
        .output()
        .expect("run rollcall")
}

fn ok(out: &Output, what: &str) -> String {
    assert_eq!(out.status.code(), Some(0), "{what}: {}", printed(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every file under `dir` whose name ends in `.db` (or `-wal`, `-shm`).
fn sqlite_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(sqlite_files(&path));
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".db") || n.ends_with("-wal") || n.ends_with("-shm"))
        {
            found.push(path);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_in_two_directories_share_one_postgres_store() {
    let Some(db) = PgDatabase::create("store shared on postgres") else {
        return;
    };
    let store = db.url();
    let w = World::new(&people_csv(4, 4)).await;
    let (first, second) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let file = w.pipeline_path();
    let file = file.to_str().expect("utf-8");

    ok(
        &rollcall_in(first.path(), &store, &["run", file]),
        "first run",
    );
    assert_eq!(w.quantity("M365-BP").await, Some(4));

    // A leaver, synced from the other machine: it lowers the seat the first one billed.
    w.set_people(&people_csv(3, 3));
    ok(
        &rollcall_in(second.path(), &store, &["run", file]),
        "second run",
    );
    assert_eq!(w.quantity("M365-BP").await, Some(3), "the seat was lowered");
    assert_eq!(
        w.state().await.additions.len(),
        2,
        "one addition per product: the second machine changed the first one's, made none"
    );
    let again = ok(&rollcall_in(first.path(), &store, &["run", file]), "resync");
    assert!(again.contains("No changes"), "{again}");

    // One ledger: both tell the same story of the leaver and of the product.
    for args in [
        &["explain", file, "--client", "Acme", "--person", "id-0003"][..],
        &["explain", file, "--client", "Acme", "--product", "m365"],
    ] {
        let from_first = ok(&rollcall_in(first.path(), &store, args), "explain");
        let from_second = ok(&rollcall_in(second.path(), &store, args), "explain");
        assert_eq!(from_first, from_second, "{args:?}");
        assert!(
            from_first.contains("held a m365 seat from") || from_first.contains("seat(s) ended"),
            "{from_first}"
        );
    }
    let history = ok(
        &rollcall_in(first.path(), &store, &["history", "--output", "json"]),
        "history",
    );
    let rows: serde_json::Value = serde_json::from_str(&history).expect("json");
    let runs: std::collections::BTreeSet<&str> = rows
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["run_id"].as_str())
        .collect();
    assert_eq!(
        runs.len(),
        2,
        "both machines' runs in one history: {history}"
    );

    let check = ok(
        &rollcall_in(second.path(), &store, &["store", "check"]),
        "check",
    );
    assert!(
        check.contains("PostgreSQL") && check.contains("ok"),
        "{check}"
    );

    for dir in [first.path(), second.path(), w.dir.path()] {
        assert_eq!(
            sqlite_files(dir),
            Vec::<PathBuf>::new(),
            "no local store file with the store on PostgreSQL"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqlite_store_copied_to_postgres_reads_the_same() {
    let Some(db) = PgDatabase::create("store copy to postgres") else {
        return;
    };
    let url = db.url();
    let w = World::with_pipeline(&guarded(PIPELINE), &people_csv(4, 4)).await;
    let sqlite = w.store();
    let sqlite = sqlite.to_str().expect("utf-8");
    let here = w.dir.path();
    let file = w.pipeline_path();
    let file = file.to_str().expect("utf-8");
    // Runs, changes and a ledger; then a leaver; then a drop the guard holds for approval.
    ok(&rollcall_in(here, sqlite, &["run", file]), "first run");
    w.set_people(&people_csv(4, 3));
    ok(&rollcall_in(here, sqlite, &["run", file]), "leaver");
    w.set_people(&people_csv(4, 1));
    let refused = rollcall_in(here, sqlite, &["run", file]);
    assert_eq!(refused.status.code(), Some(2), "{}", printed(&refused));
    let approval = printed_id(&printed(&refused));

    let copied = rollcall_in(
        here,
        sqlite,
        &["store", "copy", "--from", sqlite, "--to", &url],
    );
    let said = ok(&copied, "store copy");
    assert!(said.contains("row counts match"), "{said}");
    assert!(
        said.contains("approvals") && said.contains("seat_ledger"),
        "{said}"
    );

    let read = |args: &[&str]| {
        let from_sqlite = ok(&rollcall_in(here, sqlite, args), "on sqlite");
        let from_pg = ok(&rollcall_in(here, &url, args), "on postgres");
        assert_eq!(from_sqlite, from_pg, "{args:?} reads the same");
        from_pg
    };
    let history = read(&["history", "--output", "json"]);
    assert!(history.contains("update_addition"), "{history}");
    read(&["runs", "--output", "json"]);
    let explained = read(&["explain", file, "--client", "Acme", "--person", "id-0003"]);
    assert!(explained.contains("held a m365 seat from"), "{explained}");
    read(&["explain", file, "--client", "Acme", "--product", "m365"]);
    let approvals = read(&["approvals", "--output", "json"]);
    assert!(approvals.contains(&approval), "{approvals}");
    read(&["approvals", &approval]);

    // A target that holds rows is refused with what to do; --force replaces them.
    let again = rollcall_in(
        here,
        sqlite,
        &["store", "copy", "--from", sqlite, "--to", &url],
    );
    assert_eq!(again.status.code(), Some(2), "{}", printed(&again));
    assert!(
        printed(&again).contains("already holds") && printed(&again).contains("--force"),
        "{}",
        printed(&again)
    );
    ok(
        &rollcall_in(
            here,
            sqlite,
            &["store", "copy", "--from", sqlite, "--to", &url, "--force"],
        ),
        "forced copy",
    );
    read(&["history", "--output", "json"]);

    // Both stores check out; a database rollcall never used does not, and says why.
    for store in [sqlite, url.as_str()] {
        let check = ok(&rollcall_in(here, store, &["store", "check"]), "check");
        assert!(
            check.contains(&format!(
                "schema version: {0} (this rollcall: {0})",
                rollcall::store::SCHEMA_VERSION
            )),
            "{check}"
        );
    }
    let Some(empty) = PgDatabase::create("store check on an empty database") else {
        return;
    };
    let bad = rollcall_in(here, &empty.url(), &["store", "check"]);
    assert_eq!(bad.status.code(), Some(2), "{}", printed(&bad));
    assert!(
        printed(&bad).contains("no rollcall schema version"),
        "{}",
        printed(&bad)
    );
}
