//! The run report, rendered from recorded runs: HTML, CSV and JSON.

use rollcall::cli::{ReportFormat, render_report};

use crate::support::{World, people_csv};

#[tokio::test]
async fn a_run_report_shows_who_is_billed_what_changed_and_the_money() {
    let w = World::new(&people_csv(4, 4)).await;
    w.apply(&w.plan(false).await, false).await;
    w.set_people(&people_csv(3, 3));
    w.apply(&w.plan(false).await, false).await;
    let store = w.open_store().await;
    let runs = store.reports("e2e").await.expect("runs");
    assert_eq!(runs.len(), 2);
    let run_id = &runs[1].run_id;

    let html = render_report(&store, run_id, ReportFormat::Html, None)
        .await
        .expect("html");
    assert!(html.starts_with("<!doctype html>"));
    for external in [
        "<script",
        "src=\"http",
        "href=\"http",
        "@import",
        "url(http",
    ] {
        assert!(!html.contains(external), "not self-contained: {external}");
    }
    assert!(
        html.contains("<td><a href=\"#client-0\">Acme</a></td>"),
        "summary row"
    );
    assert!(
        html.contains("-57.00"),
        "4 → 3 people: 22.00 + 35.00 less a month"
    );
    assert!(
        html.contains("Given0 Sur0, Given1 Sur1, Given2 Sur2"),
        "the people billed, by name"
    );
    assert!(html.contains("1 deactivated"));
    assert_eq!(
        html.matches("<circle").count(),
        2,
        "one point per recorded run"
    );

    let csv = render_report(&store, run_id, ReportFormat::Csv, None)
        .await
        .expect("csv");
    let m365 = csv
        .lines()
        .find(|l| l.contains("\"M365-BP\""))
        .expect("m365 row");
    assert!(
        m365.contains(",4,3,22.00,88.00,66.00,\"-22.00\",\"billed\","),
        "{m365}"
    );

    let json: serde_json::Value = serde_json::from_str(
        &render_report(&store, run_id, ReportFormat::Json, None)
            .await
            .expect("json"),
    )
    .expect("valid");
    assert_eq!(json["clients"][0]["seats_before"], 8);
    assert_eq!(json["clients"][0]["seats_after"], 6);

    // The report was also written beside the store when the run applied.
    assert!(store.report_path(run_id).exists());
    let custom = render_report(
        &store,
        run_id,
        ReportFormat::Html,
        Some("{{pipeline}}: {{#each clients}}{{client}}={{amount_after}}{{/each}}"),
    )
    .await
    .expect("custom template");
    assert_eq!(custom, "e2e: Acme=171.00");
    let err = render_report(&store, "no-such-run", ReportFormat::Html, None)
        .await
        .expect_err("unknown run");
    assert!(
        err.to_string().contains("no recorded run `no-such-run`"),
        "{err}"
    );
}

/// Debian's Chromium, where the test machine has it.
fn chromium() -> Option<std::path::PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_renders_in_a_real_browser_without_console_errors() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var("ROLLCALL_REQUIRE_SERVERS").as_deref() != Ok("1"),
            "chromium is required (ROLLCALL_REQUIRE_SERVERS=1) but not installed: apt-get install chromium"
        );
        eprintln!("skipped: chromium is not installed (scripts/test installs it)");
        return;
    };
    let w = World::new(&people_csv(5, 3)).await;
    w.apply(&w.plan(false).await, false).await;
    w.set_people(&people_csv(4, 3));
    w.apply(&w.plan(false).await, false).await;
    let store = w.open_store().await;
    let run_id = store
        .reports("e2e")
        .await
        .expect("runs")
        .pop()
        .expect("a run")
        .run_id;
    let page = store.report_path(&run_id);
    assert!(page.exists(), "the run wrote its report");

    let artefacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("artefacts");
    std::fs::create_dir_all(&artefacts).expect("artefacts dir");
    let shot = artefacts.join("run-report.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().expect("profile");
    let browse = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(&browser);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("file://{}", page.display()));
        cmd.output().expect("chromium runs")
    };
    let dom = browse(&["--dump-dom"]);
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    assert!(dom_text.contains("<table id=\"summary\">"), "{dom_text}");
    assert_eq!(
        dom_text.matches("<tr data-client=").count(),
        1,
        "one row per client"
    );
    assert!(dom_text.contains("Given0 Sur0, Given1 Sur1, Given2 Sur2"));
    // What the page says once a browser has laid it out: the currency, who left, and the
    // status of a client whose bill changed.
    assert!(dom_text.contains("amounts in USD"), "{dom_text}");
    assert!(
        dom_text.contains("No longer billed: Given4 Sur4"),
        "{dom_text}"
    );
    assert!(dom_text.contains(">billed</span>"), "{dom_text}");
    let console = String::from_utf8_lossy(&dom.stderr);
    for line in console.lines() {
        assert!(
            !(line.contains("CONSOLE") && (line.contains("ERROR") || line.contains("Uncaught"))),
            "console error: {line}"
        );
    }
    let shot_arg = format!("--screenshot={}", shot.display());
    let out = browse(&[
        shot_arg.as_str(),
        "--window-size=1280,1600",
        "--hide-scrollbars",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "the screenshot ({}) is {size} bytes",
        shot.display()
    );
    eprintln!("screenshot: {}", shot.display());
}

#[tokio::test]
async fn the_client_value_report_lists_each_billed_person_with_their_tickets() {
    use rollcall::report::value_report;
    let w = World::new(&people_csv(3, 2)).await;
    w.apply(&w.plan(false).await, false).await;
    let store = w.open_store().await;
    let state = w.state().await;
    let contact = |email: &str| -> i64 {
        state
            .contacts
            .iter()
            .find(|c| c.fields.email.as_deref() == Some(email))
            .and_then(|c| c.id.parse().ok())
            .expect("contact")
    };
    let today = chrono::Utc::now().date_naive();
    let day = |offset: i64| (today + chrono::Duration::days(offset)).to_string();
    w.sandbox
        .add_ticket(
            "ACME",
            Some(contact("user0@acme.example")),
            "Laptop will not boot",
            &day(-3),
            Some(&day(-1)),
        )
        .expect("ticket");
    w.sandbox
        .add_ticket(
            "ACME",
            Some(contact("user0@acme.example")),
            "New starter: mailbox",
            &day(-2),
            None,
        )
        .expect("ticket");
    w.sandbox
        .add_ticket(
            "ACME",
            Some(contact("user1@acme.example")),
            "Printer",
            "2020-01-01",
            Some("2020-01-02"),
        )
        .expect("old ticket");
    w.sandbox
        .add_ticket("GLOBEX", None, "Another client's ticket", &day(-1), None)
        .expect("ticket");

    let billing = w
        .pipeline
        .target
        .build(&rollcall_core::BuildContext::in_memory())
        .expect("client");
    let client = &w.pipeline.clients[0];
    let report = value_report::build(
        &w.pipeline,
        client,
        &store,
        billing.as_ref(),
        today - chrono::Duration::days(30),
        today,
    )
    .await
    .expect("report");
    assert_eq!(report.people.len(), 3, "everyone billed in the period");
    assert_eq!(
        (report.opened, report.closed),
        (2, 1),
        "the 2020 ticket and Globex's are outside"
    );
    let first = &report.people[0];
    assert_eq!(first.name, "Given0 Sur0");
    assert_eq!((first.opened, first.closed), (2, 1));
    assert_eq!(first.products, "helpdesk, m365");
    let html = value_report::html(&report, value_report::TEMPLATE).expect("html");
    assert!(
        html.contains("Laptop will not boot") && html.contains("<tr data-person=\"Given2 Sur2\">"),
        "{html}"
    );
    let csv = value_report::csv(&report);
    assert_eq!(
        csv.lines().count(),
        1 + 2 + 2,
        "header, Given0's two tickets, two people without"
    );

    let err = value_report::build(
        &w.pipeline,
        client,
        &store,
        billing.as_ref(),
        today,
        today - chrono::Duration::days(1),
    )
    .await
    .expect_err("empty period");
    assert!(err.to_string().contains("the period is empty"), "{err}");
}

#[tokio::test]
async fn every_example_pipeline_renders_a_report_from_a_recorded_run() {
    // demo.yaml here; m365-licences.yaml in graph.rs, which needs the Graph sandbox too.
    let sandbox = rollcall_connectwise::Sandbox::start(rollcall_connectwise::Seed::demo()).await;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/examples/demo.yaml");
    let text = std::fs::read_to_string(&path).expect("demo").replace(
        "http://127.0.0.1:8421/v4_6_release/apis/3.0",
        &sandbox.url(),
    );
    let pipeline = rollcall::config::load_str(&text, &path).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let store = rollcall::store::Store::open(&dir.path().join("state.db"))
        .await
        .expect("store");
    let plan = rollcall::engine::plan(&pipeline, &store, None, false)
        .await
        .expect("plan");
    rollcall::engine::apply(&store, &pipeline, &plan, "test", false)
        .await
        .expect("apply");
    let run = store
        .reports("demo-msp")
        .await
        .expect("runs")
        .pop()
        .expect("recorded");
    let html = render_report(&store, &run.run_id, ReportFormat::Html, None)
        .await
        .expect("html");
    for client in ["Acme", "Globex", "Initech"] {
        assert!(
            html.contains(&format!("<tr data-client=\"{client}\">")),
            "{client} missing"
        );
    }
    assert!(html.contains("Seán Ó Briain"), "non-ASCII names survive");
}

/// The axis labels under a report's seat chart.
fn axis_labels(html: &str) -> Vec<String> {
    html.split("text-anchor=\"end\">")
        .skip(1)
        .chain(
            html.split("<text x=\"32\" y=\"152\" font-size=\"11\" fill=\"#5b6b7c\">")
                .skip(1),
        )
        .filter_map(|rest| rest.split("</text>").next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_run_report_names_its_currency_and_leavers_tells_unchanged_from_billed_and_is_the_same_made_again()
 {
    let w = World::new(&people_csv(4, 2)).await;
    w.apply(&w.plan(false).await, false).await;
    w.set_people(&people_csv(3, 2));
    w.apply(&w.plan(false).await, false).await;
    w.apply(&w.plan(false).await, false).await; // nothing to change
    let store = w.open_store().await;
    let runs = store.reports("e2e").await.expect("runs");
    assert_eq!(runs.len(), 3);
    let (left, unchanged) = (&runs[1].run_id, &runs[2].run_id);

    let html = render_report(&store, left, ReportFormat::Html, None)
        .await
        .expect("html");
    assert!(html.contains("amounts in USD"), "the currency is named");
    assert!(html.contains("Monthly before (USD)"));
    assert!(
        html.contains("No longer billed: Given3 Sur3"),
        "the leaver by name"
    );
    assert!(html.contains(">billed</span>"));
    // Made again after a later run, the report is the page written when it ran.
    let written = std::fs::read_to_string(store.report_path(left)).expect("written");
    assert_eq!(html, written, "regenerated report differs from the run's");
    let labels = axis_labels(&html);
    assert!(!labels.is_empty(), "the chart has an axis");
    let mut distinct = labels.clone();
    distinct.dedup();
    assert_eq!(labels, distinct, "an axis from a date to the same date");

    let html = render_report(&store, unchanged, ReportFormat::Html, None)
        .await
        .expect("html");
    assert!(html.contains(">unchanged</span>"), "nothing changed");
    assert!(!html.contains(">billed</span>"));
    assert!(!html.contains("No longer billed"));
    let csv = render_report(&store, left, ReportFormat::Csv, None)
        .await
        .expect("csv");
    assert!(csv.lines().next().expect("header").ends_with(",currency"));
    assert!(
        csv.lines().nth(1).expect("row").ends_with(",\"USD\""),
        "{csv}"
    );
}
