//! A pipeline on disk against a fresh ConnectWise sandbox, for each test.

use std::path::{Path, PathBuf};

use rollcall::config::{self, Pipeline};
use rollcall::run::PipelinePlan;
use rollcall_connectwise::{Sandbox, Seed};

pub const PIPELINE: &str = r#"name: e2e
target:
  connectwise:
    url: SANDBOX_URL
    company_id: demo
    public_key: ${ROLLCALL_E2E_PUBLIC:-demo-public}
    private_key: ${ROLLCALL_E2E_PRIVATE:-demo-private}
    client_id: 00000000-0000-4000-8000-000000000000
    rate_limit_per_second: 200
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
    company: ACME
    agreement: Managed Services
"#;

/// `n` people, the first `m365` of them in the M365 group.
pub fn people_csv(n: usize, m365: usize) -> String {
    let mut s = String::from("id,given_name,surname,email,enabled,groups\n");
    for i in 0..n {
        let groups = if i < m365 {
            "M365 Users;Staff"
        } else {
            "Staff"
        };
        s.push_str(&format!(
            "id-{i:04},Given{i},Sur{i},user{i}@acme.example,true,{groups}\n"
        ));
    }
    s
}

pub struct World {
    pub sandbox: Sandbox,
    pub dir: tempfile::TempDir,
    pub pipeline: Pipeline,
}

impl World {
    pub async fn new(csv: &str) -> World {
        Self::with_pipeline(PIPELINE, csv).await
    }

    pub async fn with_pipeline(yaml: &str, csv: &str) -> World {
        let sandbox = Sandbox::start(Seed::demo()).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pipeline.yaml");
        std::fs::write(&path, yaml.replace("SANDBOX_URL", &sandbox.url())).expect("write pipeline");
        std::fs::write(dir.path().join("acme.csv"), csv).expect("write people");
        let pipeline = config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        World {
            sandbox,
            dir,
            pipeline,
        }
    }

    pub fn set_people(&self, csv: &str) {
        std::fs::write(self.dir.path().join("acme.csv"), csv).expect("write people");
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }

    pub async fn open_store(&self) -> rollcall::store::Store {
        rollcall::store::Store::open(&self.store())
            .await
            .expect("store")
    }

    pub fn pipeline_path(&self) -> PathBuf {
        self.dir.path().join("pipeline.yaml")
    }

    pub async fn plan(&self, allow_drop: bool) -> PipelinePlan {
        rollcall::engine::plan(&self.pipeline, &self.open_store().await, None, allow_drop)
            .await
            .expect("plan")
    }

    pub async fn apply(
        &self,
        plan: &PipelinePlan,
        verify: bool,
    ) -> Vec<rollcall::apply::ClientOutcome> {
        rollcall::engine::apply(
            &self.open_store().await,
            &self.pipeline,
            plan,
            "test",
            verify,
        )
        .await
        .expect("apply")
    }

    /// Quantity of the non-cancelled addition for `product` on ACME's agreement.
    pub async fn quantity(&self, product: &str) -> Option<u32> {
        let billing = self
            .pipeline
            .target
            .build(&rollcall_core::BuildContext::in_memory())
            .expect("client");
        let account = &self.pipeline.clients[0].account;
        let state = billing
            .read(account, &[product.to_owned()])
            .await
            .expect("read");
        assert!(
            state.additions.len() <= 1,
            "duplicate additions: {:?}",
            state.additions
        );
        state.additions.first().map(|a| a.fields.quantity)
    }

    /// Everything ACME holds in the billing system, as rollcall reads it.
    pub async fn state(&self) -> rollcall_core::ClientState {
        let billing = self
            .pipeline
            .target
            .build(&rollcall_core::BuildContext::in_memory())
            .expect("client");
        let products = ["M365-BP".to_owned(), "HELPDESK-USER".to_owned()];
        billing
            .read(&self.pipeline.clients[0].account, &products)
            .await
            .expect("read")
    }
}

/// Plans every client and applies the plan, each client required to end done; the plan.
pub async fn plan_and_apply(pipeline: &Pipeline, store: &rollcall::store::Store) -> PipelinePlan {
    let plan = rollcall::engine::plan(pipeline, store, None, false)
        .await
        .expect("plan");
    let outcomes = rollcall::engine::apply(store, pipeline, &plan, "test", false)
        .await
        .expect("apply");
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

impl World {
    /// Writes `body` to ConnectWise as a person at the MSP would (a POST to `path`, under
    /// ACME's company or agreement), not through rollcall: the object carries no mark of
    /// rollcall's. Returns the new object's id.
    pub async fn by_hand(&self, path: &str, body: serde_json::Value) -> i64 {
        let keys = self.sandbox.credentials();
        let reply = reqwest::Client::new()
            .post(format!("{}/{path}", self.sandbox.url()))
            .basic_auth(
                format!("{}+{}", keys.company_id, keys.public_key),
                Some(&keys.private_key),
            )
            .header("clientId", &keys.client_id)
            .json(&body)
            .send()
            .await
            .expect("by hand");
        assert!(reply.status().is_success(), "{path}: {}", reply.status());
        let made: serde_json::Value = reply.json().await.expect("json");
        made["id"].as_i64().expect("id")
    }
}

/// What a command printed, standard output then standard error.
pub fn printed(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn rollcall_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rollcall"))
}

/// Runs `rollcall connect` as an operator would, the browser played by an HTTP client that
/// follows the sandbox's consent redirect; returns the consent address and the redirect. Panics
/// unless the command ends well.
pub async fn connect_through_cli(pipeline: &Path, store: &Path) -> (String, String) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(rollcall_bin())
        .args(["connect", "--port", "0", "--wait", "30"])
        .arg(pipeline)
        .env("ROLLCALL_STORE", store)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn connect");
    let stdout = child.stdout.take().expect("stdout");
    // Every line is read on a thread of its own, so `connect` can go on printing after the
    // address is found.
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let consent = tokio::task::spawn_blocking(move || {
        lines_rx
            .iter()
            .find_map(|l| l.trim().starts_with("http").then(|| l.trim().to_owned()))
    })
    .await
    .expect("join")
    .expect("a consent address");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let answer = http.get(&consent).send().await.expect("consent");
    let back = answer.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let page = http
        .get(&back)
        .send()
        .await
        .expect("redirect")
        .text()
        .await
        .expect("page");
    assert!(page.contains("access granted"), "{page}");
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (consent, back)
}

/// Serves `service` on a free loopback port until the test ends; its base URL.
pub async fn serve_on_loopback(service: &std::sync::Arc<rollcall::web::Service>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(rollcall::web::serve(
        service.clone(),
        listener,
        std::future::pending(),
    ));
    url
}
