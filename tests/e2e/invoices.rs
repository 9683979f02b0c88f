//! Billing by invoice end to end: pipelines planned and applied against the QuickBooks Online
//! sandbox over HTTP, with OAuth tokens in rollcall's store.

use std::path::PathBuf;
use std::process::Command;

use rollcall::config::{self, Pipeline};
use rollcall::run::PipelinePlan;
use rollcall_core::Change;
use rollcall_core::oauth::TokenVault;
use rollcall_quickbooks::{Sandbox, Seed, doc_number};
use serde_json::Value;

use crate::support::{people_csv, rollcall_bin};

const PIPELINE: &str = r#"name: books
target:
  quickbooks:
    url: SANDBOX_URL
    client_id: demo-qbo-client
    client_secret: ${ROLLCALL_E2E_QBO_SECRET:-demo-qbo-secret}
    authorize_url: SANDBOX_URL/connect/oauth2
    token_url: SANDBOX_URL/oauth2/v1/tokens/bearer
    connection: books
invoice:
  due_days: 14
products:
  - id: m365
    identifier: M365-BP
    unit_price: 22.00
    seats: "'M365 Users' in groups"
    description: "M365 for {{names}}"
  - id: helpdesk
    identifier: HELPDESK-USER
    unit_price: 35
clients:
  - name: Acme HQ
    directory: { file: { path: hq.csv } }
    company: Acme HQ
    bill_to: Acme Group
    site: Head office
  - name: Acme Branch
    directory: { file: { path: branch.csv } }
    company: Acme Branch
    bill_to: Acme Group
  - name: Globex
    directory: { file: { path: globex.csv } }
    company: Globex Corporation
"#;

const GROUP_REFERENCE: &str = "rollcall Acme Group 2026-11";
const GLOBEX_REFERENCE: &str = "rollcall Globex Corporation 2026-11";

struct Books {
    sandbox: Sandbox,
    dir: tempfile::TempDir,
    pipeline: Pipeline,
}

impl Books {
    async fn new() -> Books {
        let sandbox = Sandbox::start(Seed::demo()).await;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("pipeline.yaml"),
            PIPELINE.replace("SANDBOX_URL", &sandbox.url()),
        )
        .expect("write pipeline");
        let books = Books {
            pipeline: load_pipeline(&dir.path().join("pipeline.yaml")),
            sandbox,
            dir,
        };
        books.people("hq.csv", 4, 2);
        books.people("branch.csv", 2, 1);
        books.people("globex.csv", 3, 3);
        // What `rollcall connect` leaves in the store.
        let store = books.store().await;
        store
            .save("books", &books.sandbox.connect())
            .await
            .expect("save tokens");
        books
    }

    fn people(&self, file: &str, n: usize, m365: usize) {
        let csv = people_csv(n, m365).replace("acme.example", &file.replace(".csv", ".example"));
        std::fs::write(self.dir.path().join(file), csv).expect("write people");
    }

    fn store_path(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }

    async fn store(&self) -> rollcall::store::Store {
        rollcall::store::Store::open(&self.store_path())
            .await
            .expect("store")
    }

    async fn plan(&self) -> PipelinePlan {
        rollcall::engine::plan(&self.pipeline, &self.store().await, None, false)
            .await
            .expect("plan")
    }

    async fn apply(&self, plan: &PipelinePlan) -> Vec<rollcall::apply::ClientOutcome> {
        rollcall::engine::apply(&self.store().await, &self.pipeline, plan, "test", false)
            .await
            .expect("apply")
    }

    async fn sync(&self) -> PipelinePlan {
        let plan = self.plan().await;
        let outcomes = self.apply(&plan).await;
        for o in &outcomes {
            assert_eq!(
                o.state,
                rollcall::apply::OutcomeState::Done,
                "{o:?}\n{}",
                rollcall::report::plan_text(&plan)
            );
        }
        plan
    }

    fn invoice(&self, reference: &str) -> Value {
        let number = doc_number(reference);
        let found: Vec<Value> = self
            .sandbox
            .invoices()
            .into_iter()
            .filter(|i| i["DocNumber"] == number.as_str())
            .collect();
        assert_eq!(found.len(), 1, "exactly one invoice for {reference}");
        found.into_iter().next().expect("one")
    }

    fn rollcall(&self, args: &[&str]) -> std::process::Output {
        Command::new(rollcall_bin())
            .args(args)
            .arg(self.dir.path().join("pipeline.yaml"))
            .args(["--period", "2026-11-17"])
            .env("ROLLCALL_STORE", self.store_path())
            .env_remove("RUST_LOG")
            .output()
            .expect("run rollcall")
    }
}

/// The pipeline as the CLI loads it with `--period 2026-11-17`.
fn load_pipeline(path: &std::path::Path) -> Pipeline {
    let mut p = config::load(path).unwrap_or_else(|e| panic!("{e}"));
    p.bill_day = chrono::NaiveDate::from_ymd_opt(2026, 11, 17);
    p
}

/// Lines of an invoice as (item, quantity, description), subtotals left out.
fn lines(invoice: &Value) -> Vec<(String, String, String)> {
    invoice["Line"]
        .as_array()
        .expect("lines")
        .iter()
        .filter(|l| l["DetailType"] == "SalesItemLineDetail")
        .map(|l| {
            (
                l["SalesItemLineDetail"]["ItemRef"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                l["SalesItemLineDetail"]["Qty"].to_string(),
                l["Description"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn sister_sites_share_one_lease_since_they_rewrite_one_invoice() {
    let b = Books::new().await;
    let key = |name: &str| {
        rollcall::queue::worker::lease_key(&b.pipeline, b.pipeline.client(name).expect(name))
    };
    assert_eq!(key("Acme HQ"), key("Acme Branch"));
    assert_ne!(key("Acme HQ"), key("Globex"));
    // Sister sites on two machines wait for each other.
    use rollcall::queue::locks::{ClientLocks as _, SqliteLocks};
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .expect("in-memory sqlite");
    let locks = SqliteLocks::new(pool).await.expect("lock table");
    let ttl = std::time::Duration::from_secs(30);
    let held = locks.try_acquire(&key("Acme HQ"), "a", ttl).await.unwrap();
    assert!(held.is_some());
    let sister = locks
        .try_acquire(&key("Acme Branch"), "b", ttl)
        .await
        .unwrap();
    assert!(
        sister.is_none(),
        "a sister site's sync must wait for the shared invoice"
    );
    let other = locks.try_acquire(&key("Globex"), "b", ttl).await.unwrap();
    assert!(other.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_creates_customer_and_invoices_and_a_second_run_writes_nothing() {
    let b = Books::new().await;
    let plan = b.sync().await;
    let kinds: Vec<&str> = plan.changes.iter().map(|c| c.change.kind()).collect();
    assert_eq!(
        kinds,
        [
            "create_customer",
            "create_invoice",
            "create_customer",
            "create_invoice",
            "create_invoice"
        ],
        "both sites see no parent customer yet; Globex exists"
    );

    let group = b.invoice(GROUP_REFERENCE);
    assert_eq!(group["PrivateNote"], GROUP_REFERENCE);
    assert_eq!(group["TxnDate"], "2026-11-01");
    assert_eq!(group["DueDate"], "2026-11-15");
    let group_lines = lines(&group);
    assert_eq!(
        group_lines.len(),
        4,
        "two sites × two products: {group_lines:?}"
    );
    assert!(group_lines.iter().any(|(item, q, d)| item == "M365-BP"
        && q == "2"
        && d.starts_with("Head office: M365 for Given0 Sur0, Given1 Sur1")));
    assert!(
        group_lines
            .iter()
            .any(|(item, q, d)| item == "HELPDESK-USER"
                && q == "2"
                && d.starts_with("Acme Branch: "))
    );
    let customers = b.sandbox.customers();
    assert_eq!(
        customers
            .iter()
            .filter(|c| c["DisplayName"] == "Acme Group")
            .count(),
        1,
        "one parent customer for both sites"
    );
    assert_eq!(
        group["CustomerRef"]["value"],
        customers
            .iter()
            .find(|c| c["DisplayName"] == "Acme Group")
            .expect("group")["Id"]
    );
    let globex = b.invoice(GLOBEX_REFERENCE);
    assert_eq!(lines(&globex).len(), 2);
    assert_ne!(globex["Id"], group["Id"], "every invoice has its own id");

    let writes = b.sandbox.controls().writes();
    let again = b.sync().await;
    assert!(
        again.changes.is_empty(),
        "{}",
        rollcall::report::plan_text(&again)
    );
    assert_eq!(
        b.sandbox.controls().writes(),
        writes,
        "a no-change resync writes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seat_change_updates_the_draft_in_place_and_keeps_every_other_line() {
    let b = Books::new().await;
    b.sync().await;
    let before = b.invoice(GROUP_REFERENCE);
    b.sandbox.add_line(
        before["DocNumber"].as_str().expect("number"),
        "PROJECT",
        "3".parse().expect("d"),
        "Cabling, 3 hours",
    );

    b.people("branch.csv", 5, 4);
    let plan = b.sync().await;
    assert_eq!(
        plan.changes.len(),
        1,
        "{}",
        rollcall::report::plan_text(&plan)
    );
    assert!(
        matches!(&plan.changes[0].change, Change::UpdateInvoice { site: Some(s), .. } if s == "Acme Branch")
    );

    let after = b.invoice(GROUP_REFERENCE);
    assert_eq!(after["Id"], before["Id"], "updated in place");
    let l = lines(&after);
    assert!(
        l.iter().any(|(item, q, _)| item == "PROJECT" && q == "3"),
        "the hand-typed line is kept: {l:?}"
    );
    assert!(
        l.iter()
            .any(|(item, q, d)| item == "M365-BP" && q == "2" && d.starts_with("Head office: ")),
        "the other site's lines are kept: {l:?}"
    );
    assert!(
        l.iter()
            .any(|(item, q, d)| item == "M365-BP" && q == "4" && d.starts_with("Acme Branch: ")),
        "{l:?}"
    );
    assert!(
        l.iter().any(|(item, q, d)| item == "HELPDESK-USER"
            && q == "5"
            && d.starts_with("Acme Branch: ")),
        "{l:?}"
    );
    assert_eq!(l.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sent_invoice_is_left_alone_and_reported_as_a_conflict() {
    let b = Books::new().await;
    b.sync().await;
    b.sandbox.send_invoice(&doc_number(GLOBEX_REFERENCE));
    let sent = b.invoice(GLOBEX_REFERENCE);
    b.people("globex.csv", 5, 5);
    let writes = b.sandbox.controls().writes();

    let out = b.rollcall(&["run"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "a conflict waits for a person:\n{text}"
    );
    assert!(
        text.contains("CONFLICT") && text.contains("EmailSent"),
        "{text}"
    );
    assert_eq!(b.invoice(GLOBEX_REFERENCE), sent, "not touched");
    assert_eq!(b.sandbox.controls().writes(), writes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_create_and_answer_makes_no_second_invoice_or_customer() {
    let b = Books::new().await;
    // Every create's answer is lost after the write lands: the client retries (same
    // requestid) or looks the reference up, never creating twice.
    b.sandbox.controls().drop_response_after_commit(5);
    let plan = b.plan().await;
    let _ = b.apply(&plan).await;
    b.sync().await;
    assert_eq!(
        b.sandbox
            .customers()
            .iter()
            .filter(|c| c["DisplayName"] == "Acme Group")
            .count(),
        1
    );
    b.invoice(GROUP_REFERENCE);
    b.invoice(GLOBEX_REFERENCE);
    assert_eq!(b.sandbox.invoices().len(), 2);
    assert!(b.plan().await.changes.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_survives_a_restart_and_a_revoked_one_asks_to_reconnect() {
    let b = Books::new().await;
    b.sandbox.expire_access_tokens();
    let out = b.rollcall(&["plan"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(b.sandbox.refreshes(), 1);
    let rotated = b
        .store()
        .await
        .load("books")
        .await
        .expect("load")
        .expect("tokens");

    // A new process, with the access token dead again: only the rotated refresh token works.
    b.sandbox.expire_access_tokens();
    let out = b.rollcall(&["plan"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(b.sandbox.refreshes(), 2);
    let again = b
        .store()
        .await
        .load("books")
        .await
        .expect("load")
        .expect("tokens");
    assert_ne!(
        again.refresh_token, rotated.refresh_token,
        "rotated again and kept"
    );

    b.sandbox.revoke_all();
    let out = b.rollcall(&["plan"]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains("invalid_grant") && text.contains("rollcall connect"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_takes_the_consent_redirect_and_stores_the_tokens() {
    let b = Books::new().await;
    let (consent, back) = crate::support::connect_through_cli(
        &b.dir.path().join("pipeline.yaml"),
        &b.dir.path().join("fresh.db"),
    )
    .await;
    assert!(
        consent.contains("scope=com.intuit.quickbooks.accounting"),
        "{consent}"
    );
    assert!(back.contains("realmId="), "{back}");
    let store = rollcall::store::Store::open(&b.dir.path().join("fresh.db"))
        .await
        .expect("store");
    let tokens = store.load("books").await.expect("load").expect("stored");
    assert_eq!(
        tokens.tenant.as_deref(),
        Some(b.sandbox.realm_id().as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_proration_a_newcomer_is_charged_by_the_day_on_a_line_of_their_own() {
    let b = Books::new().await;
    let yaml = std::fs::read_to_string(b.dir.path().join("pipeline.yaml")).expect("read");
    std::fs::write(
        b.dir.path().join("pipeline.yaml"),
        yaml.replace("invoice:\n", "invoice:\n  prorate: true\n"),
    )
    .expect("write");
    // Proration counts days from the ledger, which records real days: bill this month.
    let today = chrono::Utc::now().date_naive();
    let mut b = b;
    b.pipeline = load_pipeline(&b.dir.path().join("pipeline.yaml"));
    b.pipeline.bill_day = Some(today);
    b.sync().await;
    let reference = format!("rollcall Globex Corporation {}", today.format("%Y-%m"));
    let first = lines(&b.invoice(&reference));
    assert_eq!(
        first.len(),
        2,
        "everyone the first run finds is billed whole: {first:?}"
    );

    b.people("globex.csv", 4, 4);
    let second = b.sync().await;
    assert_eq!(
        second.changes.len(),
        1,
        "{}",
        rollcall::report::plan_text(&second)
    );
    let period = rollcall::config::invoice::month_of(today);
    let days = (period.end - today).num_days() + 1;
    let after = lines(&b.invoice(&reference));
    if today == period.start {
        assert_eq!(
            after.iter().filter(|(_, q, _)| q == "4").count(),
            2,
            "{after:?}"
        );
    } else {
        let fraction = rollcall::plan::proration::fraction(days, period.days());
        let partial: Vec<_> = after
            .iter()
            .filter(|(_, _, d)| d.contains("Given3 Sur3:"))
            .collect();
        assert_eq!(
            partial.len(),
            2,
            "a line per product for the newcomer: {after:?}"
        );
        for (_, q, d) in partial {
            assert_eq!(q, &fraction.to_string(), "{d}");
            assert!(
                d.contains(&format!("({days} of {} days)", period.days())),
                "{d}"
            );
        }
        assert!(
            after
                .iter()
                .any(|(item, q, d)| item == "M365-BP" && q == "3" && d.contains("whole period"))
        );
    }
    assert!(b.plan().await.changes.is_empty(), "prorated lines converge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_store_key_tokens_are_encrypted_at_rest_and_a_wrong_key_is_a_clear_error() {
    let b = Books::new().await;
    // A plain row, as saved before a key was set, whose access token has expired: the next
    // plan refreshes it and writes the new pair under the key.
    let mut old = b.sandbox.connect();
    old.expires_at = chrono::Utc::now() - chrono::Duration::hours(1);
    b.store().await.save("books", &old).await.expect("save");
    let key = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    let other = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
    let plan = |key: Option<&str>| {
        let mut cmd = Command::new(rollcall_bin());
        cmd.arg("plan")
            .arg(b.dir.path().join("pipeline.yaml"))
            .args(["--period", "2026-11-17"])
            .env("ROLLCALL_STORE", b.store_path())
            .env_remove("ROLLCALL_STORE_KEY")
            .env_remove("RUST_LOG");
        if let Some(key) = key {
            cmd.env("ROLLCALL_STORE_KEY", key);
        }
        let o = cmd.output().expect("run rollcall");
        let text =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        (o.status.code(), text)
    };
    let (code, text) = plan(Some(key));
    assert_eq!(code, Some(0), "a plain row reads with a key set: {text}");

    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(b.store_path());
    let pool = sqlx::SqlitePool::connect_with(options)
        .await
        .expect("sqlite");
    let row: String =
        sqlx::query_scalar("SELECT tokens FROM oauth_connections WHERE name = 'books'")
            .fetch_one(&pool)
            .await
            .expect("row");
    pool.close().await;
    assert!(row.starts_with("rcv1:"), "{row}");
    assert!(
        !row.contains(&old.refresh_token) && !row.contains("refresh_token"),
        "{row}"
    );

    let (code, text) = plan(Some(key));
    assert_eq!(code, Some(0), "the sealed row opens with its key: {text}");
    let (code, text) = plan(Some(other));
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("do not open with this store key"), "{text}");
    let (code, text) = plan(None);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("no store key is set"), "{text}");
    let (code, text) = plan(Some("not a key"));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("openssl rand -base64 32"), "{text}");
    assert!(
        !text.contains("not a key"),
        "the key is never printed: {text}"
    );
}
