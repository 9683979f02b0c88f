//! The console, served by the real `rollcall serve` against the ConnectWise sandbox: refused
//! without sign-in, and driven by a real headless Chromium (through chromedriver) that signs in,
//! reads the clients' seats and money, follows a run to its report, retries a failed job, and
//! approves a plan a guard refused. Approving the same plan twice at once applies it once.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rollcall_harness::ChromeDriver;

use crate::approvals::{guarded, printed_id, run};
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
        Served::start_with(w, token, &[]).await
    }

    /// With more environment: `{PORT}` in a value is the port serve listens on.
    async fn start_with(w: &World, token: Option<&str>, env: &[(&str, &str)]) -> Served {
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
        for (k, v) in env {
            cmd.env(k, v.replace("{PORT}", &port.to_string()));
        }
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

/// A person whose name is hostile text: markup, a spreadsheet formula, a bidi override.
const HOSTILE_GIVEN: &str = "<img src=x onerror=alert(1)>";
const HOSTILE_SURNAME: &str = "=HYPERLINK(\"http://evil.example\")\u{202E}gpj";

/// `n` people in the M365 group (the first `m365` of them); with `hostile`, a fourth person
/// with the hostile name, in the M365 group too.
fn people_with_hostile(n: usize, m365: usize, hostile: bool) -> String {
    let mut csv = people_csv(n, m365);
    if hostile {
        csv.push_str(&format!(
            "id-0999,\"{HOSTILE_GIVEN}\",\"{}\",evil@acme.example,true,M365 Users;Staff\n",
            HOSTILE_SURNAME.replace('"', "\"\"")
        ));
    }
    csv
}

/// Billed for four people (three plus the hostile one, all with M365); then the hostile one
/// leaves and two more lose M365: a drop of 8 seats to 4 the guard refuses. The approval's id.
async fn refused_with_a_hostile_leaver() -> (World, String) {
    let w = World::with_pipeline(
        &guarded(crate::support::PIPELINE),
        &people_with_hostile(3, 3, true),
    )
    .await;
    let (code, out) = run(&w);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(w.quantity("M365-BP").await, Some(4));
    w.set_people(&people_with_hostile(3, 1, false));
    let (code, out) = run(&w);
    assert_eq!(code, Some(2), "the guard refuses: {out}");
    let id = printed_id(&out);
    assert_eq!(w.quantity("M365-BP").await, Some(4), "nothing written");
    (w, id)
}

/// POSTs a console form with the bearer token (no CSRF token needed); status and page.
async fn post_bearer(s: &Served, path: &str, form: &str) -> (reqwest::StatusCode, String) {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", s.url))
        .bearer_auth(TOKEN)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_owned())
        .send()
        .await
        .expect("post");
    (r.status(), r.text().await.expect("text"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_is_shown_escaped_refused_to_strangers_and_forged_forms_and_applied_once_when_approved_twice_at_once()
 {
    let (w, id) = refused_with_a_hostile_leaver().await;
    let s = Served::start(&w, Some(TOKEN)).await;
    let page = format!("/console/approvals/{id}");

    // Listed as pending, and linked from the client's rows.
    let list = s.page("/console/approvals").await;
    assert!(
        list.contains(&format!("data-approval=\"{id}\""))
            && list.contains("data-state=\"pending\""),
        "{list}"
    );
    assert!(s.page("/console").await.contains(&page));
    assert!(s.page("/console/clients/e2e/Acme").await.contains(&page));

    // The page: why, the money, the plan's difference; every name escaped.
    let shown = s.page(&page).await;
    for expected in [
        "removes 4 of 8 seats",
        "rollcall run by alice",
        "228.00 → 127.00 USD",
        "data-product=\"M365-BP\"",
        "4 → 1",
        "deactivate contact",
        // Handlebars escapes `=` too.
        "&lt;img src&#x3D;x onerror&#x3D;alert(1)&gt;",
        "id=\"approve\"",
        "id=\"reject\"",
    ] {
        assert!(shown.contains(expected), "{expected}:\n{shown}");
    }
    assert!(
        !shown.contains("<img"),
        "markup from a name is text: {shown}"
    );
    assert!(
        !shown.contains('\u{202E}'),
        "no bidi override reaches the page"
    );
    assert!(
        shown.contains("HYPERLINK"),
        "the formula is shown as text: {shown}"
    );

    // A stranger's POST, and a signed-in browser's POST without its CSRF token, write nothing.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let approve = format!("{}{page}/approve", s.url);
    let stranger = http
        .post(&approve)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("effective=")
        .send()
        .await
        .expect("post");
    assert_eq!(stranger.status(), reqwest::StatusCode::UNAUTHORIZED);
    let login = http
        .post(format!("{}/console/login", s.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", s.url.as_str())
        .body(format!("token={TOKEN}"))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), reqwest::StatusCode::SEE_OTHER);
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_owned();
    for form in ["effective=", "csrf=0123abcd&effective="] {
        let forged = http
            .post(&approve)
            .header("cookie", &cookie)
            .header("origin", s.url.as_str())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .expect("post");
        assert_eq!(forged.status(), reqwest::StatusCode::FORBIDDEN, "{form}");
    }
    assert_eq!(w.quantity("M365-BP").await, Some(4), "nothing written");
    assert!(
        s.page(&page)
            .await
            .contains("id=\"approval-state\">pending<")
    );

    // Two tabs, or a double click: both POSTs at once. One applies; the other is told the
    // approval was already decided, and nothing is written twice.
    let path = format!("{page}/approve");
    let (a, b) = tokio::join!(
        post_bearer(&s, &path, "effective="),
        post_bearer(&s, &path, "effective=")
    );
    let mut answers = [a, b];
    answers.sort_by_key(|(status, _)| *status);
    let [(first, applied), (second, refused)] = answers;
    assert_eq!(first, reqwest::StatusCode::OK, "{applied}\n{}", s.logs());
    assert!(applied.contains("data-outcome=\"applied\""), "{applied}");
    assert_eq!(second, reqwest::StatusCode::CONFLICT, "{refused}");
    assert!(
        refused.contains("data-outcome=\"already_decided\""),
        "{refused}"
    );
    assert!(refused.contains("is approved, not pending"), "{refused}");
    assert_eq!(w.quantity("M365-BP").await, Some(1));
    assert_eq!(w.quantity("HELPDESK-USER").await, Some(3));
    let store = w.open_store().await;
    let approve_runs = rollcall::runs::recent(&store, 20)
        .await
        .expect("runs")
        .into_iter()
        .filter(|r| r.trigger == "approve")
        .count();
    assert_eq!(approve_runs, 1, "one run applied the approval");
    let approvals = rollcall::approvals::Approvals::open(&store)
        .await
        .expect("approvals")
        .list(None, 10)
        .await
        .expect("list");
    assert_eq!(
        approvals.len(),
        1,
        "no second approval was planned: {approvals:?}"
    );
    assert_eq!(
        approvals[0].state,
        rollcall::approvals::ApprovalState::Approved
    );
    assert_eq!(
        approvals[0].decided_by.as_deref(),
        Some("the console (bearer token)")
    );

    // Decided: the page shows it, with no buttons; a third POST is told so too.
    let decided = s.page(&page).await;
    assert!(decided.contains("id=\"applied-run\""), "{decided}");
    assert!(!decided.contains("id=\"approve\""), "{decided}");
    let (status, again) = post_bearer(&s, &format!("{page}/reject"), "reason=too+late").await;
    assert_eq!(status, reqwest::StatusCode::CONFLICT, "{again}");
    assert!(
        !s.page("/console").await.contains(&page),
        "no pending link left"
    );
    assert!(!s.logs().contains(TOKEN), "the token is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_opens_a_refused_plan_approves_it_and_sees_the_seats_change() {
    if !browser_available("console approvals in a browser") {
        return;
    }
    let w = World::with_pipeline(&guarded(crate::support::PIPELINE), &people_csv(4, 4)).await;
    let (code, out) = run(&w);
    assert_eq!(code, Some(0), "{out}");
    let s = Served::start(&w, Some(TOKEN)).await;
    let driver = ChromeDriver::start().unwrap_or_else(|e| panic!("{e}"));
    let b = Browser::open(&driver).await;
    b.goto(&format!("{}/console", s.url)).await;
    b.type_into(&b.find("#token").await, TOKEN).await;
    b.click(&b.find("#sign-in").await).await;
    assert_eq!(
        b.text(&b.find("tr[data-client='Acme'] td.seats").await)
            .await,
        "8"
    );
    assert!(
        b.find_all("tr[data-client='Acme'] a.approval-link")
            .await
            .is_empty()
    );

    // Three people lose M365: 8 seats to 5, more than the guard's 20 %.
    w.set_people(&people_csv(4, 1));
    let (code, out) = run(&w);
    assert_eq!(code, Some(2), "{out}");
    let id = printed_id(&out);

    // The client links to its approval; the approvals page lists it.
    b.goto(&format!("{}/console", s.url)).await;
    b.find("tr[data-client='Acme'] a.approval-link").await;
    b.click(&b.find("#nav-approvals").await).await;
    b.find("#approvals").await;
    assert!(b.url().await.ends_with("/console/approvals"));
    let row = format!("tr[data-approval='{id}']");
    assert_eq!(
        b.text(&b.find(&format!("{row} td.seats")).await).await,
        "8 → 5"
    );
    b.click(&b.find(&format!("{row} a")).await).await;
    assert_eq!(b.text(&b.find("#approval-state").await).await, "pending");
    assert!(b.url().await.ends_with(&format!("/console/approvals/{id}")));
    assert!(
        b.text(&b.find("#reason").await)
            .await
            .contains("removes 3 of 8 seats")
    );
    assert_eq!(
        b.text(
            &b.find("#plan-products tr[data-product='M365-BP'] td.seats")
                .await
        )
        .await,
        "4 → 1"
    );

    // Approved in the browser (the form carries the session's CSRF token): applied.
    b.click(&b.find("#approve").await).await;
    let outcome = b.find("#outcome").await;
    assert_eq!(b.text(&outcome).await, "Applied", "{}", b.source().await);
    assert!(
        b.url()
            .await
            .ends_with(&format!("/console/approvals/{id}/approve"))
    );
    assert!(
        b.text(&b.find("#decided").await)
            .await
            .contains("now has 5 seat(s)")
    );
    assert_eq!(
        w.quantity("M365-BP").await,
        Some(1),
        "the sandbox holds the new quantity"
    );
    assert_eq!(w.quantity("HELPDESK-USER").await, Some(4));

    // The clients page shows the seats the approval billed, and no pending approval.
    b.click(&b.find("header nav a").await).await;
    assert_eq!(
        b.text(&b.find("#clients tr[data-client='Acme'] td.seats").await)
            .await,
        "5"
    );
    assert!(
        b.find_all("tr[data-client='Acme'] a.approval-link")
            .await
            .is_empty()
    );
    b.goto(&format!("{}/console/approvals/{id}", s.url)).await;
    assert_eq!(b.text(&b.find("#approval-state").await).await, "approved");
    assert!(
        b.find_all("#approve").await.is_empty(),
        "decided: no buttons"
    );

    // Listed among all approvals as approved.
    b.goto(&format!("{}/console/approvals?state=all", s.url))
        .await;
    b.find(&format!("tr[data-approval='{id}'][data-state='approved']"))
        .await;
    b.close().await;
    assert!(!s.logs().contains(TOKEN), "the token is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_the_console_a_stale_approval_is_superseded_a_later_day_is_scheduled_and_a_rejection_writes_nothing()
 {
    let w = World::with_pipeline(&guarded(crate::support::PIPELINE), &people_csv(4, 4)).await;
    let (code, out) = run(&w);
    assert_eq!(code, Some(0), "{out}");
    w.set_people(&people_csv(4, 1));
    let (code, out) = run(&w);
    assert_eq!(code, Some(2), "{out}");
    let id = printed_id(&out);
    let s = Served::start(&w, Some(TOKEN)).await;

    // Someone at the MSP changes the client in ConnectWise: the plan is stale. Approving it
    // writes nothing and links to the plan made again from what is there now.
    w.by_hand(
        "company/contacts",
        serde_json::json!({
            "firstName": "Walk", "lastName": "In",
            "company": { "identifier": "ACME" }
        }),
    )
    .await;
    let writes = w.sandbox.write_requests();
    let (status, page) = post_bearer(
        &s,
        &format!("/console/approvals/{id}/approve"),
        "effective=",
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::CONFLICT, "{page}");
    assert!(page.contains("data-outcome=\"superseded\""), "{page}");
    assert_eq!(w.sandbox.write_requests(), writes, "nothing written");
    assert_eq!(w.quantity("M365-BP").await, Some(4));
    let store = w.open_store().await;
    let approvals = rollcall::approvals::Approvals::open(&store)
        .await
        .expect("approvals");
    let pending = approvals
        .list(Some(rollcall::approvals::ApprovalState::Pending), 10)
        .await
        .expect("list");
    assert_eq!(pending.len(), 1, "{pending:?}");
    let next = pending[0].id.clone();
    assert_ne!(next, id);
    assert!(
        page.contains(&format!(
            "id=\"next-approval\" href=\"/console/approvals/{next}\""
        )),
        "{page}"
    );
    let old = s.page(&format!("/console/approvals/{id}")).await;
    assert!(old.contains("id=\"approval-state\">superseded<"), "{old}");
    assert!(
        old.contains(&format!(
            "id=\"superseded-by\" href=\"/console/approvals/{next}\""
        )),
        "{old}"
    );

    // Approved to take effect in three days: nothing is written now.
    let day = (chrono::Utc::now().date_naive() + chrono::Days::new(3)).to_string();
    let (status, page) = post_bearer(
        &s,
        &format!("/console/approvals/{next}/approve"),
        &format!("effective={day}"),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{page}");
    assert!(page.contains("data-outcome=\"scheduled\""), "{page}");
    assert!(page.contains(&day), "{page}");
    assert_eq!(
        w.quantity("M365-BP").await,
        Some(4),
        "nothing written before the day"
    );
    let shown = s.page(&format!("/console/approvals/{next}")).await;
    assert!(shown.contains("id=\"scheduled\""), "{shown}");
    assert!(
        shown.contains(&format!("id=\"effective\">{day}<")),
        "{shown}"
    );

    // Rejected with a reason instead: nothing is written, the reason is kept.
    let (status, page) = post_bearer(
        &s,
        &format!("/console/approvals/{next}/reject"),
        "reason=the+export+was+cut+%3Cshort%3E",
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{page}");
    assert!(page.contains("data-outcome=\"rejected\""), "{page}");
    assert_eq!(w.sandbox.write_requests(), writes, "nothing written");
    let (rejected, _) = approvals.get(&next).await.expect("get");
    assert_eq!(rejected.state, rollcall::approvals::ApprovalState::Rejected);
    assert_eq!(rejected.note.as_deref(), Some("the export was cut <short>"));
    let shown = s.page(&format!("/console/approvals/{next}")).await;
    assert!(
        shown.contains("the export was cut &lt;short&gt;"),
        "{shown}"
    );
    let listed = s.page("/console/approvals?state=all").await;
    assert!(
        listed.contains(&format!(
            "data-approval=\"{id}\" data-client=\"Acme\" data-state=\"superseded\""
        )),
        "{listed}"
    );
    assert!(
        listed.contains(&format!(
            "data-approval=\"{next}\" data-client=\"Acme\" data-state=\"rejected\""
        )),
        "{listed}"
    );
    assert!(
        !s.page("/console/approvals")
            .await
            .contains("data-approval="),
        "none pending"
    );
}

/// A stand-in OpenID Connect provider at `http://localhost:PORT` (another site than the
/// console's `127.0.0.1`): its authorize endpoint signs in `user` at once and sends the
/// browser back with a code; its token endpoint answers that code with an ID token, once the
/// PKCE verifier and the client secret are right. Its address.
async fn identity_provider(user: &'static str) -> String {
    use axum::extract::{Form, Query};
    use axum::response::{IntoResponse, Redirect};
    use axum::routing::{get, post};
    use base64::Engine as _;
    use sha2::Digest as _;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://localhost:{}",
        listener.local_addr().expect("addr").port()
    );
    // code → (challenge, nonce)
    let codes: Arc<Mutex<HashMap<String, (String, String)>>> = Arc::default();
    let (issued, redeemed) = (codes.clone(), codes);
    let discovery = serde_json::json!({
        "issuer": url,
        "authorization_endpoint": format!("{url}/authorize"),
        "token_endpoint": format!("{url}/token"),
    });
    let issuer = url.clone();
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { axum::Json(discovery) }),
        )
        .route(
            "/authorize",
            get(move |Query(q): Query<HashMap<String, String>>| async move {
                let code = uuid::Uuid::new_v4().simple().to_string();
                issued.lock().expect("codes").insert(
                    code.clone(),
                    (q["code_challenge"].clone(), q["nonce"].clone()),
                );
                Redirect::to(&format!(
                    "{}?code={code}&state={}",
                    q["redirect_uri"], q["state"]
                ))
            }),
        )
        .route(
            "/token",
            post(move |Form(f): Form<HashMap<String, String>>| async move {
                let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
                let found = redeemed.lock().expect("codes").remove(&f["code"]);
                match found {
                    Some((challenge, nonce))
                        if b64.encode(sha2::Sha256::digest(f["code_verifier"].as_bytes()))
                            == challenge
                            && f["client_secret"] == "sso-secret-of-the-test" =>
                    {
                        let claims = serde_json::json!({
                            "iss": issuer, "aud": "rollcall-console", "nonce": nonce,
                            "exp": chrono::Utc::now().timestamp() + 300, "email": user,
                        });
                        let token = format!(
                            "{}.{}.sig",
                            b64.encode(br#"{"alg":"RS256"}"#),
                            b64.encode(claims.to_string())
                        );
                        axum::Json(serde_json::json!({ "id_token": token })).into_response()
                    }
                    _ => (
                        reqwest::StatusCode::BAD_REQUEST,
                        axum::Json(serde_json::json!({ "error": "invalid_grant" })),
                    )
                        .into_response(),
                }
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_in_through_single_sign_on_and_the_approval_records_who_approved() {
    if !browser_available("console single sign-on in a browser") {
        return;
    }
    let w = World::with_pipeline(&guarded(crate::support::PIPELINE), &people_csv(4, 4)).await;
    let (code, out) = run(&w);
    assert_eq!(code, Some(0), "{out}");
    w.set_people(&people_csv(4, 1));
    let (code, out) = run(&w);
    assert_eq!(code, Some(2), "{out}");
    let id = printed_id(&out);
    let issuer = identity_provider("alice@msp.example").await;
    let s = Served::start_with(
        &w,
        Some(TOKEN),
        &[
            ("ROLLCALL_CONSOLE_OIDC_ISSUER", &issuer),
            ("ROLLCALL_CONSOLE_OIDC_CLIENT_ID", "rollcall-console"),
            (
                "ROLLCALL_CONSOLE_OIDC_CLIENT_SECRET",
                "sso-secret-of-the-test",
            ),
            (
                "ROLLCALL_CONSOLE_OIDC_REDIRECT_URL",
                "http://127.0.0.1:{PORT}/console/sso/callback",
            ),
            ("ROLLCALL_CONSOLE_OIDC_ALLOW", "@msp.example"),
        ],
    )
    .await;
    let driver = ChromeDriver::start().unwrap_or_else(|e| panic!("{e}"));
    let b = Browser::open(&driver).await;

    // From the approval's link to the login page, through the provider and back.
    b.goto(&format!("{}/console/approvals/{id}", s.url)).await;
    b.click(&b.find("#sso").await).await;
    assert_eq!(b.text(&b.find("#user").await).await, "alice@msp.example");
    b.click(&b.find("#continue").await).await;
    assert_eq!(b.text(&b.find("#approval-state").await).await, "pending");
    assert!(b.url().await.ends_with(&format!("/console/approvals/{id}")));

    // Approved by alice, by name.
    b.click(&b.find("#approve").await).await;
    assert_eq!(b.text(&b.find("#outcome").await).await, "Applied");
    assert_eq!(w.quantity("M365-BP").await, Some(1));
    let (approval, _) = rollcall::approvals::Approvals::open(&w.open_store().await)
        .await
        .expect("approvals")
        .get(&id)
        .await
        .expect("get");
    assert_eq!(
        approval.decided_by.as_deref(),
        Some("alice@msp.example (console, single sign-on)")
    );
    b.close().await;
    let logs = s.logs();
    assert!(
        logs.contains("Single sign-on to the console is on"),
        "{logs}"
    );
    assert!(
        !logs.contains("sso-secret-of-the-test"),
        "the client secret is never logged"
    );
    assert!(!logs.contains(TOKEN), "the token is never logged");
}
