//! Pipelines billing Autotask PSA end to end against its sandbox over real HTTP: seats are
//! units of services on a recurring service contract, changed only by adjustments.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use rollcall::config::{self, Pipeline};
use rollcall::engine::Verdict;
use rollcall::run::PipelinePlan;
use rollcall_autotask::model::{Company, Contract, RECURRING_SERVICE};
use rollcall_autotask::{Sandbox, Seed};

use crate::support::{people_csv, printed, rollcall_bin};

const M365: &str = "Microsoft 365 Business Premium";
const HELPDESK: &str = "Helpdesk Per User";

const TARGET: &str = r#"name: e2e-autotask
target:
  autotask:
    username: api@demo.example
    secret: ${ROLLCALL_E2E_AT_SECRET:-demo-secret}
    integration_code: ${ROLLCALL_E2E_AT_CODE:-DEMO-INTEGRATION-CODE}
    zone_lookup_url: SANDBOX_URL
    rate_limit_per_hour: 10000
products:
  - id: m365
    identifier: Microsoft 365 Business Premium
    unit_price: 22.00
    seats: "'M365 Users' in groups"
    description: "M365 for {{names}}"
  - id: helpdesk
    identifier: Helpdesk Per User
    unit_price: 45
clients:
"#;

fn client_yaml(i: usize, company: &str) -> String {
    format!(
        "  - name: Client{i}\n    directory: {{ file: {{ path: client{i}.csv }} }}\n    company: {company}\n    agreement: Managed Services\n"
    )
}

struct World {
    sandbox: Sandbox,
    dir: tempfile::TempDir,
    pipeline: Pipeline,
}

impl World {
    /// Acme alone, with `csv` as its people.
    async fn new(csv: &str) -> World {
        World::with_clients(Seed::demo(), &[("Acme Corporation", csv.to_owned())]).await
    }

    async fn with_clients(seed: Seed, clients: &[(&str, String)]) -> World {
        let sandbox = Sandbox::start(seed).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut yaml = TARGET.replace("SANDBOX_URL", &sandbox.url());
        for (i, (company, csv)) in clients.iter().enumerate() {
            yaml.push_str(&client_yaml(i, company));
            std::fs::write(dir.path().join(format!("client{i}.csv")), csv).expect("people");
        }
        let path = dir.path().join("pipeline.yaml");
        std::fs::write(&path, yaml).expect("write pipeline");
        let pipeline = config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        World {
            sandbox,
            dir,
            pipeline,
        }
    }

    fn set_people(&self, csv: &str) {
        std::fs::write(self.dir.path().join("client0.csv"), csv).expect("people");
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }

    async fn open_store(&self) -> rollcall::store::Store {
        rollcall::store::Store::open(&self.store())
            .await
            .expect("store")
    }

    async fn plan(&self) -> PipelinePlan {
        rollcall::engine::plan(&self.pipeline, &self.open_store().await, None, false)
            .await
            .expect("plan")
    }

    async fn apply(&self, plan: &PipelinePlan) -> Vec<rollcall::apply::ClientOutcome> {
        rollcall::engine::apply(
            &self.open_store().await,
            &self.pipeline,
            plan,
            "test",
            false,
        )
        .await
        .expect("apply")
    }

    /// `rollcall run` as a schedule runs it.
    fn run(&self) -> Command {
        let mut command = Command::new(rollcall_bin());
        command
            .arg("run")
            .arg(self.dir.path().join("pipeline.yaml"))
            .env("ROLLCALL_STORE", self.store())
            .env_remove("RUST_LOG");
        command
    }

    /// Units of `service` on Acme's contract today, as rollcall reads them.
    async fn units(&self, service: &str) -> Option<u32> {
        let billing = self
            .pipeline
            .target
            .build(&rollcall_core::BuildContext::in_memory())
            .expect("client");
        let state = billing
            .read(&self.pipeline.clients[0].account, &[service.to_owned()])
            .await
            .expect("read");
        assert!(state.additions.len() <= 1, "{:?}", state.additions);
        state.additions.first().map(|a| a.fields.quantity)
    }

    /// The unit changes sent for `service`, in order.
    fn adjustments(&self, service_id: i64) -> Vec<i64> {
        self.sandbox
            .state()
            .adjustments
            .iter()
            .filter(|a| a.service_id == service_id)
            .map(|a| a.unit_change)
            .collect()
    }
}

const M365_ID: i64 = 301;
const HELPDESK_ID: i64 = 304;

#[tokio::test]
async fn first_run_bills_everyone_and_a_resync_writes_nothing() {
    let w = World::new(&people_csv(12, 5)).await;
    let plan = w.plan().await;
    assert_eq!(Verdict::of_plan(&plan), Verdict::Ok);
    let kinds: Vec<&str> = plan.changes.iter().map(|c| c.change.kind()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "create_contact").count(), 12);
    assert_eq!(kinds.iter().filter(|k| **k == "create_addition").count(), 2);
    let outcomes = w.apply(&plan).await;
    assert_eq!(Verdict::of_outcomes(&outcomes), Verdict::Ok, "{outcomes:?}");
    assert_eq!(w.units(M365).await, Some(5));
    assert_eq!(w.units(HELPDESK).await, Some(12));
    assert_eq!(w.adjustments(M365_ID), [5]);
    let state = w.sandbox.state();
    assert_eq!(state.contacts.len(), 12);
    assert!(
        state
            .contacts
            .iter()
            .all(|c| c.external_id == Some(rollcall_core::owner_mark("e2e-autotask"))),
        "every contact carries the pipeline's mark"
    );
    let m365 = state
        .contract_services
        .iter()
        .find(|s| s.service_id == M365_ID)
        .expect("m365 on the contract");
    assert_eq!(
        m365.invoice_description.as_deref(),
        Some("M365 for Given0 Sur0, Given1 Sur1, Given2 Sur2, Given3 Sur3, Given4 Sur4")
    );
    assert_eq!(m365.price().to_string(), "22.00");

    let writes = w.sandbox.write_requests();
    let again = w.plan().await;
    assert!(again.is_empty(), "resync planned {:?}", again.changes);
    w.apply(&again).await;
    assert_eq!(
        w.sandbox.write_requests(),
        writes,
        "a no-change resync must write nothing"
    );
}

#[tokio::test]
async fn a_leaver_lowers_one_unit_with_one_adjustment_and_deactivates_the_contact() {
    let w = World::new(&people_csv(10, 10)).await;
    w.apply(&w.plan().await).await;
    w.set_people(&people_csv(9, 9));
    let plan = w.plan().await;
    let kinds: Vec<&str> = plan.changes.iter().map(|c| c.change.kind()).collect();
    assert_eq!(
        kinds,
        ["update_addition", "update_addition", "deactivate_contact"]
    );
    let outcomes = w.apply(&plan).await;
    assert_eq!(Verdict::of_outcomes(&outcomes), Verdict::Ok, "{outcomes:?}");
    assert_eq!(w.adjustments(M365_ID), [10, -1]);
    assert_eq!(w.adjustments(HELPDESK_ID), [10, -1]);
    assert_eq!(w.units(M365).await, Some(9));
    let gone = w
        .sandbox
        .state()
        .contacts
        .into_iter()
        .find(|c| c.email_address.as_deref() == Some("user9@acme.example"))
        .expect("the leaver's contact is kept");
    assert_eq!(gone.is_active, 0);
    assert!(w.plan().await.is_empty());
}

#[tokio::test]
async fn a_lost_answer_after_autotask_committed_is_reconciled_not_repeated() {
    let w = World::new(&people_csv(3, 3)).await;
    w.sandbox.drop_response_after_commit("/Contacts", 1);
    w.sandbox.drop_response_after_commit("/Services", 1);
    w.sandbox
        .drop_response_after_commit("ServiceAdjustments", 1);
    let outcomes = w.apply(&w.plan().await).await;
    assert_eq!(Verdict::of_outcomes(&outcomes), Verdict::Ok, "{outcomes:?}");
    assert_eq!(
        outcomes[0].reconciled, 2,
        "a contact and a service: {outcomes:?}"
    );
    let state = w.sandbox.state();
    assert_eq!(state.contacts.len(), 3, "{:?}", state.contacts);
    assert_eq!(state.contract_services.len(), 2);
    assert_eq!(
        w.adjustments(M365_ID),
        [3],
        "the lost adjustment is not sent again"
    );
    assert_eq!(w.adjustments(HELPDESK_ID), [3]);
    assert!(w.plan().await.is_empty());
}

#[tokio::test]
async fn a_contact_autotask_refuses_is_reported_at_once_and_the_client_is_still_billed() {
    // A shared mailbox with no surname: Autotask requires a contact's lastName, and refuses
    // with a 500, the status it gives its own failures.
    let people = |n, m365| people_csv(n, m365).replace("Given2,Sur2,", "Given2,,");
    let w = World::new(&people(6, 4)).await;
    let plan = w.plan().await;
    let outcomes = w.apply(&plan).await;
    assert_eq!(
        Verdict::of_outcomes(&outcomes),
        Verdict::Remote,
        "{outcomes:?}"
    );
    let rollcall::apply::OutcomeState::Failed { error, .. } = &outcomes[0].state else {
        panic!("{outcomes:?}");
    };
    for part in ["user2@acme.example", "lastName is required", "not retried"] {
        assert!(error.contains(part), "{part:?} missing from {error}");
    }
    // Seats come from the directory: the person whose contact was refused is billed too.
    assert_eq!(w.units(M365).await, Some(4));
    assert_eq!(w.units(HELPDESK).await, Some(6));
    assert_eq!(
        w.sandbox.state().contacts.len(),
        5,
        "the others are written"
    );
    // Six contact creates (the refused one sent once), two services, two adjustments.
    assert_eq!(w.sandbox.write_requests(), 10);

    // Given a surname in the directory, the contact is written and the run is clean again.
    w.set_people(&people_csv(6, 4));
    let outcomes = w.apply(&w.plan().await).await;
    assert_eq!(Verdict::of_outcomes(&outcomes), Verdict::Ok, "{outcomes:?}");
    assert_eq!(w.sandbox.state().contacts.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_mid_apply_never_makes_anything_twice() {
    let w = World::new(&people_csv(8, 4)).await;
    // Slow enough that the run is surely killed with writes still to make.
    w.sandbox.latency(Duration::from_millis(40));
    let mut child = w.run().spawn().expect("rollcall run");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while w.sandbox.writes() < 3 {
        assert!(std::time::Instant::now() < deadline, "the run never wrote");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().expect("kill the run");
    let _ = child.wait();
    let at_kill = w.sandbox.writes();
    assert!(
        at_kill < 8 + 4,
        "killed before it finished ({at_kill} writes)"
    );

    w.sandbox.latency(Duration::ZERO);
    let finished = w.run().output().expect("rollcall run again");
    assert_eq!(finished.status.code(), Some(0), "{}", printed(&finished));
    let state = w.sandbox.state();
    let mut emails: Vec<_> = state
        .contacts
        .iter()
        .filter_map(|c| c.email_address.clone())
        .collect();
    emails.sort();
    emails.dedup();
    assert_eq!(state.contacts.len(), 8, "{:?}", state.contacts);
    assert_eq!(emails.len(), 8);
    assert_eq!(state.contract_services.len(), 2);
    assert_eq!(w.units(M365).await, Some(4));
    assert_eq!(w.units(HELPDESK).await, Some(8));
    assert_eq!(w.adjustments(M365_ID).iter().sum::<i64>(), 4);
    assert!(w.plan().await.is_empty());
}

/// Requests of a first run and of a no-change resync for `clients` clients of 10 people each,
/// printed for BENCHMARKS.md: `cargo test --test e2e autotask::requests -- --nocapture`.
/// Asserted too, so a change that adds calls per client is seen.
#[tokio::test]
async fn requests_of_a_first_run_and_a_resync_against_the_paging_lower_bound() {
    for clients in [1usize, 20] {
        let mut seed = Seed::demo();
        seed.companies = (0..clients)
            .map(|i| Company {
                id: 1000 + i as i64,
                company_name: format!("Client {i}"),
                company_type: 1,
                is_active: true,
            })
            .collect();
        seed.contracts = (0..clients)
            .map(|i| Contract {
                id: 5000 + i as i64,
                company_id: 1000 + i as i64,
                contract_name: "Managed Services".into(),
                contract_type: RECURRING_SERVICE,
                status: 1,
                start_date: "2025-01-01T00:00:00Z".into(),
                end_date: "2030-12-31T00:00:00Z".into(),
            })
            .collect();
        let names: Vec<String> = (0..clients).map(|i| format!("Client {i}")).collect();
        let people: Vec<(&str, String)> = names
            .iter()
            .map(|n| (n.as_str(), people_csv(10, 5)))
            .collect();
        let w = World::with_clients(seed, &people).await;
        let before = w.sandbox.requests();
        let plan = w.plan().await;
        w.apply(&plan).await;
        let first = w.sandbox.requests() - before;
        let before = w.sandbox.requests();
        assert!(w.plan().await.is_empty());
        let resync = w.sandbox.requests() - before;
        // Reading needs the zone and the catalogue, then companies, contracts, contacts,
        // contract services and units at up to 500 records a page: one page each here, read
        // for all clients together (a single client is read on its own, at the same cost).
        let lower_bound = 7;
        println!(
            "autotask requests, {clients} clients x 10 people: first run {first}, resync {resync}, paging lower bound for a read {lower_bound}"
        );
        assert_eq!(
            resync, lower_bound,
            "a resync reads each entity once, page by page"
        );
    }
}
