//! Pipelines billing in HaloPSA, end to end over HTTP against the HaloPSA sandbox: the example
//! `mappings/examples/halopsa.yaml` itself, and a pipeline whose people each test sets.

use rollcall::apply::OutcomeState;
use rollcall::config::Pipeline;
use rollcall::engine::Verdict;
use rollcall::store::Store;
use rollcall_halopsa::{Sandbox, Seed};
use rust_decimal::prelude::ToPrimitive;

use crate::support::{people_csv, plan_and_apply};

const PIPELINE: &str = r#"name: e2e-halo
target:
  halopsa:
    url: SANDBOX_URL
    client_id: rollcall-demo
    client_secret: ${ROLLCALL_E2E_HALO_SECRET:-demo-secret}
    rate_limit_per_minute: 100000
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
  - name: Acme
    directory: { file: { path: acme.csv } }
    company: Acme
    agreement: Managed Services
"#;

struct Halo {
    sandbox: Sandbox,
    dir: tempfile::TempDir,
    pipeline: Pipeline,
}

impl Halo {
    async fn new(csv: &str) -> Halo {
        let sandbox = Sandbox::start(Seed::demo()).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pipeline.yaml");
        std::fs::write(&path, PIPELINE.replace("SANDBOX_URL", &sandbox.url())).expect("write");
        std::fs::write(dir.path().join("acme.csv"), csv).expect("people");
        let pipeline = rollcall::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        Halo {
            sandbox,
            dir,
            pipeline,
        }
    }

    fn set_people(&self, csv: &str) {
        std::fs::write(self.dir.path().join("acme.csv"), csv).expect("people");
    }

    async fn store(&self) -> Store {
        Store::open(&self.dir.path().join("state.db"))
            .await
            .expect("store")
    }

    async fn plan(&self, allow_drop: bool) -> rollcall::run::PipelinePlan {
        rollcall::engine::plan(&self.pipeline, &self.store().await, None, allow_drop)
            .await
            .expect("plan")
    }

    async fn apply(
        &self,
        plan: &rollcall::run::PipelinePlan,
    ) -> Vec<rollcall::apply::ClientOutcome> {
        rollcall::engine::apply(&self.store().await, &self.pipeline, plan, "test", false)
            .await
            .expect("apply")
    }

    /// Acme's lines on its recurring invoice, as Halo holds them: (item, quantity).
    fn lines(&self) -> Vec<(String, u32)> {
        let invoice = self
            .sandbox
            .state()
            .invoices
            .into_iter()
            .find(|i| i.id == 1)
            .expect("Acme's invoice");
        let mut lines: Vec<(String, u32)> = invoice
            .lines
            .unwrap_or_default()
            .into_iter()
            .map(|l| {
                let quantity = l.qty_order.and_then(|q| q.to_u32()).expect("whole seats");
                (l.item_code.unwrap_or_default(), quantity)
            })
            .collect();
        lines.sort();
        lines
    }
}

fn kinds(plan: &rollcall::run::PipelinePlan) -> Vec<&'static str> {
    plan.changes.iter().map(|c| c.change.kind()).collect()
}

#[tokio::test]
async fn the_example_pipeline_converges_against_the_sandbox() {
    let sandbox = Sandbox::start(Seed::demo()).await;
    let root = env!("CARGO_MANIFEST_DIR");
    let example =
        std::fs::read_to_string(format!("{root}/mappings/examples/halopsa.yaml")).expect("example");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("halopsa.yaml");
    std::fs::write(
        &path,
        example
            .replace("http://127.0.0.1:8425", &sandbox.url())
            .replace(
                "path: people/",
                &format!("path: {root}/mappings/examples/people/"),
            ),
    )
    .expect("write");
    let pipeline = rollcall::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(&dir.path().join("state.db"))
        .await
        .expect("store");
    let first = plan_and_apply(&pipeline, &store).await;
    assert!(!first.is_empty());
    let state = sandbox.state();
    assert!(state.users.len() >= 3, "{:?}", state.users);
    assert!(
        state
            .invoices
            .iter()
            .all(|i| !i.lines.clone().unwrap_or_default().is_empty()),
        "every client billed: {:?}",
        state.invoices
    );
    let writes = sandbox.write_requests();
    let again = rollcall::engine::plan(&pipeline, &store, None, false)
        .await
        .expect("plan");
    assert!(again.is_empty(), "{:?}", again.changes);
    assert_eq!(sandbox.write_requests(), writes);
}

#[tokio::test]
async fn first_run_bills_everyone_and_a_resync_writes_nothing() {
    let h = Halo::new(&people_csv(12, 5)).await;
    let plan = h.plan(false).await;
    assert_eq!(Verdict::of_plan(&plan), Verdict::Ok);
    let kinds = kinds(&plan);
    assert_eq!(kinds.iter().filter(|k| **k == "create_contact").count(), 12);
    assert_eq!(kinds.iter().filter(|k| **k == "create_addition").count(), 2);
    let outcomes = h.apply(&plan).await;
    assert_eq!(Verdict::of_outcomes(&outcomes), Verdict::Ok, "{outcomes:?}");
    assert_eq!(
        h.lines(),
        [("HELPDESK-USER".to_owned(), 12), ("M365-BP".to_owned(), 5)]
    );
    let users = h.sandbox.state().users;
    assert_eq!(users.len(), 12);
    let mark = rollcall_core::owner_mark("e2e-halo");
    assert!(
        users
            .iter()
            .all(|u| u.other5.as_deref() == Some(mark.as_str()))
    );

    let writes = h.sandbox.write_requests();
    let again = h.plan(false).await;
    assert!(again.is_empty(), "resync planned {:?}", again.changes);
    h.apply(&again).await;
    assert_eq!(
        h.sandbox.write_requests(),
        writes,
        "a no-change resync must write nothing"
    );
}

#[tokio::test]
async fn a_leaver_lowers_one_unit_and_deactivates_the_user() {
    let h = Halo::new(&people_csv(10, 10)).await;
    h.apply(&h.plan(false).await).await;
    h.set_people(&people_csv(9, 9));
    let plan = h.plan(false).await;
    assert_eq!(
        kinds(&plan),
        ["update_addition", "update_addition", "deactivate_contact"]
    );
    h.apply(&plan).await;
    assert_eq!(
        h.lines(),
        [("HELPDESK-USER".to_owned(), 9), ("M365-BP".to_owned(), 9)]
    );
    let users = h.sandbox.state().users;
    let gone = users
        .iter()
        .find(|u| u.emailaddress.as_deref() == Some("user9@acme.example"))
        .expect("kept");
    assert_eq!(gone.inactive, Some(true), "deactivated, never deleted");
    assert!(h.plan(false).await.is_empty());
}

#[tokio::test]
async fn answers_lost_after_halo_committed_never_make_a_second_user_or_line() {
    let h = Halo::new(&people_csv(2, 2)).await;
    h.sandbox.drop_response_after_commit("users", 1);
    h.sandbox.drop_response_after_commit("recurringinvoice", 1);
    let outcomes = h.apply(&h.plan(false).await).await;
    assert_eq!(Verdict::of_outcomes(&outcomes), Verdict::Ok, "{outcomes:?}");
    assert_eq!(outcomes[0].state, OutcomeState::Done);
    assert_eq!(outcomes[0].reconciled, 2, "{outcomes:?}");
    assert_eq!(h.sandbox.state().users.len(), 2);
    assert_eq!(
        h.lines(),
        [("HELPDESK-USER".to_owned(), 2), ("M365-BP".to_owned(), 2)]
    );
    assert!(h.plan(false).await.is_empty());
}

#[tokio::test]
async fn creates_sent_by_a_crashed_run_are_claimed_and_never_duplicated() {
    let h = Halo::new(&people_csv(2, 2)).await;
    let billing = h
        .pipeline
        .target
        .build(&rollcall_core::BuildContext::in_memory())
        .expect("client");
    let account = billing
        .read(&h.pipeline.clients[0].account, &["M365-BP".to_owned()])
        .await
        .expect("read")
        .account;
    let fields = rollcall_core::ContactFields {
        first_name: "Given0".into(),
        last_name: "Sur0".into(),
        email: Some("user0@acme.example".into()),
        ..Default::default()
    };
    let contact = rollcall_core::Change::CreateContact {
        key: fields.key(),
        after: Box::new(fields),
    };
    let line = rollcall_core::Change::CreateAddition {
        product: "M365-BP".into(),
        after: Box::new(rollcall_core::AdditionFields {
            quantity: 2,
            unit_price: rust_decimal::Decimal::new(2200, 2),
            invoice_description: "M365 for Given0 Sur0, Given1 Sur1".into(),
        }),
    };
    // The run recorded both creates as pending, sent them, and was killed before hearing back.
    let store = h.store().await;
    store
        .begin_run("crashed-run", "e2e-halo", "run")
        .await
        .expect("run");
    for (seq, change) in [(1, &contact), (2, &line)] {
        store
            .record_pending("crashed-run", seq, "Acme", change)
            .await
            .expect("pending");
        billing.apply(&account, change).await.expect("landed");
    }

    let plan = h.plan(false).await;
    let planned: Vec<(&str, String)> = plan
        .changes
        .iter()
        .map(|c| (c.change.kind(), c.change.subject()))
        .collect();
    assert!(
        !planned.contains(&("create_contact", "user0@acme.example".into())),
        "no second user: {planned:?}"
    );
    assert!(
        !planned.contains(&("create_addition", "M365-BP".into())),
        "no second line: {planned:?}"
    );
    h.apply(&plan).await;
    assert_eq!(h.sandbox.state().users.len(), 2);
    assert_eq!(
        h.lines(),
        [("HELPDESK-USER".to_owned(), 2), ("M365-BP".to_owned(), 2)]
    );
    assert!(h.plan(false).await.is_empty());
}

/// Requests a first run and a no-change resync of `clients` clients make, against what paging
/// alone needs (BENCHMARKS.md). Counts, not timings: they are the same on every machine.
#[tokio::test]
async fn request_counts_of_a_first_run_and_a_resync_stay_near_the_paging_bound() {
    const CLIENTS: usize = 20;
    const PEOPLE: usize = 25;
    let mut seed = Seed::demo();
    seed.clients.clear();
    seed.sites.clear();
    seed.invoices.clear();
    let mut yaml = PIPELINE
        .split("clients:\n")
        .next()
        .expect("head")
        .to_owned()
        + "clients:\n";
    let dir = tempfile::tempdir().expect("tempdir");
    for n in 1..=CLIENTS {
        let id = n as i64;
        seed.clients.push(rollcall_halopsa::model::Client {
            id,
            name: format!("Client {n:02}"),
            inactive: false,
            main_site_id: Some(id),
        });
        seed.sites.push(rollcall_halopsa::model::Site {
            id,
            name: "Main".into(),
            client_id: id,
            inactive: false,
        });
        seed.invoices
            .push(rollcall_halopsa::model::RecurringInvoice {
                id,
                client_id: Some(id),
                site_id: Some(id),
                invoicenumber: Some("Managed Services".into()),
                lines: Some(Vec::new()),
            });
        std::fs::write(
            dir.path().join(format!("c{n}.csv")),
            people_csv(PEOPLE, PEOPLE / 2).replace("@acme.", &format!("@c{n}.")),
        )
        .expect("people");
        yaml.push_str(&format!(
            "  - name: Client {n:02}\n    directory: {{ file: {{ path: c{n}.csv }} }}\n    \
             company: Client {n:02}\n    agreement: Managed Services\n"
        ));
    }
    let sandbox = Sandbox::start(seed).await;
    // Counted without Halo's minute limit, so every request counted is one the sync needs
    // (a 429 and its retry would count twice).
    sandbox.limit_rate(None);
    let path = dir.path().join("pipeline.yaml");
    std::fs::write(&path, yaml.replace("SANDBOX_URL", &sandbox.url())).expect("write");
    let pipeline = rollcall::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(&dir.path().join("state.db"))
        .await
        .expect("store");

    let before = sandbox.requests();
    plan_and_apply(&pipeline, &store).await;
    let first = sandbox.requests() - before;
    let before = sandbox.requests();
    let again = rollcall::engine::plan(&pipeline, &store, None, false)
        .await
        .expect("plan");
    assert!(again.is_empty());
    rollcall::engine::apply(&store, &pipeline, &again, "test", false)
        .await
        .expect("apply");
    let resync = sandbox.requests() - before;
    // Paging's lower bound for one read of a client: its client search, its users, its
    // recurring invoices — one page each at page_size 1000.
    let read_bound = 3 * CLIENTS as u64;
    // Writes: each person's user is created once (a look-up first, then the POST), each
    // product's line once (the invoice read, then the POST).
    let writes_bound = (CLIENTS * (PEOPLE * 2 + 2 * 2)) as u64;
    println!(
        "halopsa requests, {CLIENTS} clients x {PEOPLE} people: first run {first} \
         (paging bound {read_bound} reads + {writes_bound} for the writes), \
         no-change resync {resync} (bound {read_bound})"
    );
    assert!(resync <= read_bound, "resync made {resync} requests");
    assert!(
        first <= 2 * read_bound + writes_bound + 2 * CLIENTS as u64 + 2,
        "first run made {first} requests"
    );
}
