//! The console, served by the real `rollcall serve` against the ConnectWise sandbox: refused
//! without sign-in, and driven by a real headless Chromium (through chromedriver) that signs in,
//! reads the clients' seats and money, follows a run to its report and retries a failed job.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rollcall_harness::ChromeDriver;

use crate::browser::Browser;
use crate::support::{World, people_csv, printed, rollcall_bin};

const TOKEN: &str = "console-token-for-the-e2e-tests-0123456789";

/// `rollcall serve` on a free loopback port, with the console on; killed when dropped.
struct Served {
    child: Child,
    url: String,
    log: std::path::PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    async fn start(w: &World, token: Option<&str>) -> Served {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let log = w.dir.path().join("serve.log");
        let mut cmd = Command::new(rollcall_bin());
        cmd.arg("serve")
            .arg(w.pipeline_path())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--workers", "1", "--attempts", "1"])
            .env("ROLLCALL_STORE", w.store())
            .env(
                "ROLLCALL_WEBHOOK_SECRET",
                "webhook-secret-for-the-console-test",
            )
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        match token {
            Some(t) => cmd.env("ROLLCALL_CONSOLE_TOKEN", t),
            None => cmd.env_remove("ROLLCALL_CONSOLE_TOKEN"),
        };
        let child = cmd.spawn().expect("serve");
        let served = Served {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        let start = Instant::now();
        loop {
            if let Ok(r) = reqwest::get(format!("{}/healthz", served.url)).await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "serve did not answer:\n{}",
                served.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        served
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A console page as a script reads it, with the bearer token.
    async fn page(&self, path: &str) -> String {
        let r = reqwest::Client::new()
            .get(format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), reqwest::StatusCode::OK, "{path}");
        r.text().await.expect("text")
    }
}

/// Whether the browser tests can run here; panics under `ROLLCALL_REQUIRE_SERVERS=1` if not.
fn browser_available(test: &str) -> bool {
    rollcall_harness::servers_available(test, &["chromium", "chromedriver"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_sign_in_the_console_answers_401_or_sends_a_browser_to_the_login_page() {
    let w = World::new(&people_csv(3, 2)).await;
    w.apply(&w.plan(false).await, false).await;
    let s = Served::start(&w, Some(TOKEN)).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    for path in [
        "/console",
        "/console/runs",
        "/console/jobs",
        "/console/health",
    ] {
        let api = http
            .get(format!("{}{path}", s.url))
            .send()
            .await
            .expect("get");
        assert_eq!(api.status(), reqwest::StatusCode::UNAUTHORIZED, "{path}");
        let body = api.text().await.expect("text");
        assert!(!body.contains("Acme"), "nothing leaks: {body}");
        let wrong = http
            .get(format!("{}{path}", s.url))
            .bearer_auth("a-wrong-token-of-some-length")
            .send()
            .await
            .expect("get");
        assert_eq!(wrong.status(), reqwest::StatusCode::UNAUTHORIZED, "{path}");
        let browser = http
            .get(format!("{}{path}", s.url))
            .header("accept", "text/html")
            .send()
            .await
            .expect("get");
        assert_eq!(browser.status(), reqwest::StatusCode::SEE_OTHER, "{path}");
        assert!(
            browser.headers()["location"]
                .to_str()
                .expect("location")
                .starts_with("/console/login?next=")
        );
    }
    assert!(s.page("/console").await.contains("data-client=\"Acme\""));
    let logs = s.logs();
    assert!(logs.contains("The console is on"), "{logs}");
    assert!(!logs.contains(TOKEN), "the token is never logged");

    // Without a token the console is off, and `serve` still serves its webhooks.
    drop(s);
    let off = Served::start(&w, None).await;
    let login = reqwest::get(format!("{}/console/login", off.url))
        .await
        .expect("login")
        .text()
        .await
        .expect("text");
    assert!(login.contains("The console is off"), "{login}");
    let api = reqwest::get(format!("{}/console", off.url))
        .await
        .expect("get");
    assert_eq!(api.status(), reqwest::StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_in_sees_the_clients_follows_a_run_to_its_report_and_retries_a_failed_job()
{
    if !browser_available("console in a browser") {
        return;
    }
    let w = World::new(&people_csv(5, 3)).await;
    w.apply(&w.plan(false).await, false).await;
    let store = w.open_store().await;
    let first = rollcall::runs::recent(&store, 1).await.expect("runs")[0].clone();
    let s = Served::start(&w, Some(TOKEN)).await;
    let driver = ChromeDriver::start().unwrap_or_else(|e| panic!("{e}"));
    let b = Browser::open(&driver).await;

    // Refused, then sent to the login page; a wrong token is refused there too.
    b.goto(&format!("{}/console", s.url)).await;
    assert_eq!(
        b.url().await,
        format!("{}/console/login?next=/console", s.url)
    );
    b.type_into(&b.find("#token").await, "not-the-token-but-long")
        .await;
    b.click(&b.find("#sign-in").await).await;
    assert!(
        b.text(&b.find("#login-error").await)
            .await
            .contains("not the console's token")
    );
    assert!(b.cookies().await.is_empty(), "no session for a wrong token");
    b.type_into(&b.find("#token").await, TOKEN).await;
    b.click(&b.find("#sign-in").await).await;
    b.find("tr[data-client]").await;
    assert_eq!(b.url().await, format!("{}/console", s.url));
    let cookies = b.cookies().await;
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert_eq!(cookies[0]["name"], "rollcall_console");
    assert_eq!(cookies[0]["httpOnly"], true, "{cookies:?}");
    assert_eq!(cookies[0]["sameSite"], "Strict", "{cookies:?}");
    assert_eq!(cookies[0]["secure"], false, "plain http on loopback");
    assert!(
        !cookies[0]["value"]
            .as_str()
            .unwrap_or_default()
            .contains(TOKEN)
    );

    // The clients, with what the run billed.
    let seats = b
        .text(&b.find("tr[data-client='Acme'] td.seats").await)
        .await;
    assert_eq!(seats, first.seats_after.to_string());
    let money = b
        .text(&b.find("tr[data-client='Acme'] td.money").await)
        .await;
    assert_eq!(money, format!("{} USD", first.amount_after));
    b.click(&b.find("tr[data-client='Acme'] a").await).await;
    assert!(b.url().await.ends_with("/console/clients/e2e/Acme"));
    assert_eq!(
        b.text(&b.find("#seats-now").await).await,
        first.seats_after.to_string()
    );
    assert_eq!(
        b.find_all("svg.chart circle").await.len(),
        2,
        "one run, two charts"
    );
    assert_eq!(
        b.find_all("#holders tbody tr").await.len(),
        8,
        "3 M365 and 5 helpdesk seats in the ledger"
    );

    // A run, followed to the report it wrote.
    b.goto(&format!("{}/console/runs", s.url)).await;
    b.click(&b.find(&format!("tr[data-run='{}'] a", first.run_id)).await)
        .await;
    b.until_source_contains("Billing run for e2e").await;

    // A job that fails (every agreement read does), shown with its error; retried once the
    // billing system is back, it bills the new person.
    w.set_people(&people_csv(6, 4));
    w.sandbox.fail("/finance/agreements", 1_000);
    let queued = Command::new(rollcall_bin())
        .args(["enqueue"])
        .arg(w.pipeline_path())
        .args(["--client", "Acme"])
        .env("ROLLCALL_STORE", w.store())
        .output()
        .expect("enqueue");
    assert!(queued.status.success(), "{}", printed(&queued));
    let start = Instant::now();
    while !s.page("/console/jobs?failed=1").await.contains("data-job=") {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the job never failed:\n{}",
            s.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    b.goto(&format!("{}/console/jobs?failed=1", s.url)).await;
    let error = b.text(&b.find("tr.job-error td.error").await).await;
    assert!(
        error.contains("agreement") || error.contains("500"),
        "{error}"
    );
    w.sandbox.clear_faults();
    b.click(&b.find("button.retry").await).await;
    b.find("#retried").await;
    assert!(b.url().await.contains("/console/jobs?retried="));
    let start = Instant::now();
    while w.quantity("M365-BP").await != Some(4) {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the retried job never billed:\n{}",
            s.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let latest = rollcall::runs::recent(&store, 1).await.expect("runs")[0].clone();
    b.goto(&format!("{}/console", s.url)).await;
    assert_eq!(
        b.text(&b.find("tr[data-client='Acme'] td.seats").await)
            .await,
        latest.seats_after.to_string()
    );
    assert_eq!(latest.seats_after, first.seats_after + 2);

    // Signed out, the console is closed again.
    b.click(&b.find("header form button").await).await;
    b.until_url_contains("/console/login?signed_out=1").await;
    b.goto(&format!("{}/console/jobs", s.url)).await;
    b.until_url_contains("/console/login?next=").await;
    b.close().await;
    assert!(!s.logs().contains(TOKEN), "the token is never logged");
}
