//! Every period resyncs to a fixed point: with proration on, a past, current or next month's
//! invoice planned again on any later day, nothing having changed, plans nothing, and bills a
//! leaver to the day before they left and a joiner from the day they joined. QuickBooks and
//! Xero over HTTP against their sandboxes; ConnectWise, whose agreements bill themselves,
//! never depends on the period.

use chrono::{DateTime, NaiveDate, Utc};
use rollcall::config::Pipeline;
use rollcall::run::PipelinePlan;
use rollcall::store::Store;
use rollcall_core::oauth::TokenVault;
use rust_decimal::Decimal;
use serde_json::Value;

const PRODUCTS: &str = r#"invoice:
  prorate: true
products:
  - id: m365
    identifier: M365-BP
    name: M365
    unit_price: 22.00
    seats: "'M365 Users' in groups"
clients:
  - name: Globex
    directory: { file: { path: people.csv } }
    company: Globex Corporation
"#;

enum Books {
    QuickBooks(rollcall_quickbooks::Sandbox),
    Xero(rollcall_xero::Sandbox),
}

struct World {
    books: Books,
    dir: tempfile::TempDir,
    pipeline: Pipeline,
    store: Store,
}

impl World {
    async fn quickbooks() -> World {
        let sandbox = rollcall_quickbooks::Sandbox::start(rollcall_quickbooks::Seed::demo()).await;
        let target = format!(
            "target:
  quickbooks:
    url: {url}
    client_id: demo-qbo-client
    client_secret: ${{ROLLCALL_E2E_QBO_SECRET:-demo-qbo-secret}}
    authorize_url: {url}/connect/oauth2
    token_url: {url}/oauth2/v1/tokens/bearer
    connection: books
",
            url = sandbox.url()
        );
        let tokens = sandbox.connect();
        World::new(Books::QuickBooks(sandbox), &target, tokens).await
    }

    async fn xero() -> World {
        let sandbox = rollcall_xero::Sandbox::start(rollcall_xero::Seed::demo()).await;
        let target = format!(
            "target:
  xero:
    url: {url}
    client_id: demo-xero-client
    client_secret: ${{XERO_CLIENT_SECRET:-demo-xero-secret}}
    authorize_url: {url}/identity/connect/authorize
    token_url: {url}/connect/token
    connection: books
    account_code: \"200\"
",
            url = sandbox.url()
        );
        let tokens = sandbox.connect();
        World::new(Books::Xero(sandbox), &target, tokens).await
    }

    async fn new(books: Books, target: &str, tokens: rollcall_core::oauth::TokenSet) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("periods.yaml");
        std::fs::write(&path, format!("name: periods\n{target}{PRODUCTS}")).expect("write");
        let pipeline = rollcall::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(&dir.path().join("state.db"))
            .await
            .expect("store");
        store.save("books", &tokens).await.expect("tokens");
        let world = World {
            books,
            dir,
            pipeline,
            store,
        };
        world.people(&["Ada", "Grace"]);
        world
    }

    fn people(&self, names: &[&str]) {
        let mut csv = String::from("id,given_name,surname,email,enabled,groups\n");
        for name in names {
            let id = name.to_lowercase();
            csv.push_str(&format!(
                "{id},{name},Lee,{id}@globex.example,true,M365 Users\n"
            ));
        }
        std::fs::write(self.dir.path().join("people.csv"), csv).expect("write people");
    }

    /// Plans as of `at` (`None`: now) for the period holding `period` (`None`: the run's own).
    fn at(&mut self, at: Option<&str>, period: Option<NaiveDate>) -> &mut Self {
        self.pipeline.as_of = at.map(|t| {
            DateTime::parse_from_rfc3339(t)
                .expect("moment")
                .with_timezone(&Utc)
        });
        self.pipeline.bill_day = period;
        self
    }

    async fn plan(&self) -> PipelinePlan {
        rollcall::engine::plan(&self.pipeline, &self.store, None, false)
            .await
            .expect("plan")
    }

    async fn sync(&self) -> PipelinePlan {
        crate::support::plan_and_apply(&self.pipeline, &self.store).await
    }

    /// Planning again, nothing having changed, plans nothing.
    async fn resyncs_to_nothing(&self, when: &str) {
        let plan = self.plan().await;
        assert!(
            plan.changes.is_empty(),
            "{when}: {}",
            rollcall::report::plan_text(&plan)
        );
    }

    /// The period's invoice lines as (quantity, description, amount), sorted.
    fn lines(&self, month: &str) -> Vec<(Decimal, String, Decimal)> {
        let reference = format!("rollcall Globex Corporation {month}");
        let number = |v: &Value| -> Decimal { v.to_string().parse().expect("number") };
        let mut lines: Vec<(Decimal, String, Decimal)> = match &self.books {
            Books::QuickBooks(s) => {
                let doc = rollcall_quickbooks::doc_number(&reference);
                let invoices: Vec<Value> = s
                    .invoices()
                    .into_iter()
                    .filter(|i| i["DocNumber"] == doc.as_str())
                    .collect();
                assert_eq!(invoices.len(), 1, "one invoice for {reference}");
                invoices[0]["Line"]
                    .as_array()
                    .expect("lines")
                    .iter()
                    .filter(|l| l["DetailType"] == "SalesItemLineDetail")
                    .map(|l| {
                        (
                            number(&l["SalesItemLineDetail"]["Qty"]),
                            l["Description"].as_str().unwrap_or_default().to_owned(),
                            number(&l["Amount"]),
                        )
                    })
                    .collect()
            }
            Books::Xero(s) => {
                let invoices: Vec<Value> = s
                    .invoices()
                    .into_iter()
                    .filter(|i| i["Reference"] == reference.as_str())
                    .collect();
                assert_eq!(invoices.len(), 1, "one invoice for {reference}");
                invoices[0]["LineItems"]
                    .as_array()
                    .expect("lines")
                    .iter()
                    .map(|l| {
                        (
                            number(&l["Quantity"]),
                            l["Description"].as_str().unwrap_or_default().to_owned(),
                            number(&l["LineAmount"]),
                        )
                    })
                    .collect()
            }
        };
        lines.sort();
        lines
    }
}

fn day(y: i32, m: u32, d: u32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(y, m, d)
}

fn line(quantity: &str, description: &str, amount: &str) -> (Decimal, String, Decimal) {
    (
        quantity.parse().expect("quantity"),
        description.to_owned(),
        amount.parse().expect("amount"),
    )
}

/// Grace leaves and Linus joins on 17 November; November is then resynced in December as a
/// past month, December as the current one, January ahead of time; Ada's leaving in December
/// changes December and nothing of November.
async fn leavers_and_joiners_bill_the_same_days_in_every_later_resync(mut w: World) {
    w.at(Some("2026-11-03T09:00:00Z"), None).sync().await;
    assert_eq!(
        w.lines("2026-11"),
        [line("2", "M365, whole period: Ada Lee, Grace Lee", "44.00")]
    );

    w.people(&["Ada", "Linus"]);
    w.at(Some("2026-11-17T09:00:00Z"), None).sync().await;
    let november = [
        line(
            "0.4667",
            "M365, Linus Lee: 17 Nov to 30 Nov 2026 (14 of 30 days)",
            "10.27",
        ),
        line(
            "0.5333",
            "M365, Grace Lee: 1 Nov to 16 Nov 2026 (16 of 30 days)",
            "11.73",
        ),
        line("1", "M365, whole period: Ada Lee", "22.00"),
    ];
    assert_eq!(w.lines("2026-11"), november);
    w.resyncs_to_nothing("November, planned again the same day")
        .await;

    w.at(Some("2026-12-07T09:00:00Z"), day(2026, 11, 1));
    w.resyncs_to_nothing("November, a past month").await;
    w.at(Some("2026-12-07T09:00:00Z"), None).sync().await;
    assert_eq!(
        w.lines("2026-12"),
        [line("2", "M365, whole period: Ada Lee, Linus Lee", "44.00")]
    );
    w.at(Some("2026-12-07T09:00:00Z"), day(2027, 1, 1))
        .sync()
        .await;
    assert_eq!(
        w.lines("2027-01"),
        [line("2", "M365, whole period: Ada Lee, Linus Lee", "44.00")]
    );

    w.people(&["Linus"]);
    w.at(Some("2026-12-09T09:00:00Z"), None).sync().await;
    assert_eq!(
        w.lines("2026-12"),
        [
            line(
                "0.2581",
                "M365, Ada Lee: 1 Dec to 8 Dec 2026 (8 of 31 days)",
                "5.68"
            ),
            line("1", "M365, whole period: Linus Lee", "22.00"),
        ]
    );
    for (period, what) in [
        (day(2026, 11, 17), "November, after Ada left in December"),
        (day(2026, 12, 1), "December, the day Ada left"),
    ] {
        w.at(Some("2026-12-09T18:00:00Z"), period);
        w.resyncs_to_nothing(what).await;
    }
    // January was billed ahead: the next run for it brings it up to date once, then rests.
    w.at(Some("2027-01-02T09:00:00Z"), None).sync().await;
    assert_eq!(
        w.lines("2027-01"),
        [line("1", "M365, whole period: Linus Lee", "22.00")]
    );
    w.resyncs_to_nothing("January").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickbooks_bills_the_same_days_in_every_later_resync_of_a_period() {
    leavers_and_joiners_bill_the_same_days_in_every_later_resync(World::quickbooks().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xero_bills_the_same_days_in_every_later_resync_of_a_period() {
    leavers_and_joiners_bill_the_same_days_in_every_later_resync(World::xero().await).await;
}

/// The report as it came in: last month billed on the clock's own day, Grace leaving and
/// Linus joining, then a plan with nothing changed. Both changes are seen after the month
/// ended, so the month bills Grace whole and Linus not at all, the same on every resync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_past_month_resynced_on_the_clock_plans_nothing_the_second_time() {
    let mut w = World::quickbooks().await;
    let today = Utc::now().date_naive();
    let last_month = rollcall::config::invoice::month_of(today)
        .start
        .pred_opt()
        .expect("day");
    let month = last_month.format("%Y-%m").to_string();
    w.at(None, Some(last_month)).sync().await;
    w.people(&["Ada", "Linus"]);
    w.sync().await;
    assert_eq!(
        w.lines(&month),
        [line("2", "M365, whole period: Ada Lee, Grace Lee", "44.00")]
    );
    w.resyncs_to_nothing("last month, resynced").await;
}

/// ConnectWise agreements bill themselves every month: the period a run names changes
/// nothing, and a resync of a past one after a seat change plans nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectwise_resyncs_a_past_period_to_nothing() {
    let mut w = crate::support::World::new(&crate::support::people_csv(4, 2)).await;
    w.pipeline.invoicing.prorate = true;
    w.pipeline.bill_day = day(2026, 10, 1);
    w.pipeline.as_of = DateTime::parse_from_rfc3339("2026-11-17T09:00:00Z")
        .ok()
        .map(|t| t.with_timezone(&Utc));
    let first = w.plan(false).await;
    w.apply(&first, false).await;
    w.set_people(&crate::support::people_csv(4, 3));
    let second = w.plan(false).await;
    assert_eq!(second.changes.len(), 1, "one quantity update");
    w.apply(&second, false).await;
    assert_eq!(w.quantity("M365-BP").await, Some(3));
    let again = w.plan(false).await;
    assert!(
        again.changes.is_empty(),
        "{}",
        rollcall::report::plan_text(&again)
    );
}
