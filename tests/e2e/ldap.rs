//! A pipeline whose people come from a real directory server (slapd) over LDAP, planned and
//! applied against the ConnectWise sandbox: joiners billed, a disabled account's seat removed,
//! and a read cut short by the server dying never lowering anything.

use std::sync::{Arc, Mutex};

use rollcall::apply::OutcomeState;
use rollcall_harness::Slapd;
use rollcall_harness::data::{self, READER_DN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::World;

const USERS: usize = 60;

fn pipeline(url: &str) -> String {
    format!(
        r#"name: e2e-ldap
target:
  connectwise:
    url: SANDBOX_URL
    company_id: demo
    public_key: ${{ROLLCALL_E2E_PUBLIC:-demo-public}}
    private_key: ${{ROLLCALL_E2E_PRIVATE:-demo-private}}
    client_id: 00000000-0000-4000-8000-000000000000
    rate_limit_per_second: 200
products:
  - id: m365
    identifier: M365-BP
    unit_price: 22.00
    seats: "enabled && 'GRP-Sales' in groups"
  - id: helpdesk
    identifier: HELPDESK-USER
    unit_price: 35
    seats: "enabled"
clients:
  - name: Acme
    directory:
      ldap:
        url: {url}
        allow_plaintext: true
        bind_dn: "{READER_DN}"
        password: "${{ROLLCALL_E2E_LDAP_PASSWORD:-{pw}}}"
        base_dns: ["{staff}"]
        group_base_dns: ["{groups}"]
        page_size: 10
        operation_timeout_secs: 10
    company: ACME
    agreement: Managed Services
"#,
        pw = data::READER_PASSWORD,
        staff = data::STAFF,
        groups = data::GROUPS,
    )
}

/// Whether the one client's directory read was complete (`None`: no read was made).
fn read_complete(plan: &rollcall::run::PipelinePlan) -> Option<bool> {
    plan.clients[0]
        .completeness
        .as_ref()
        .map(|c| c.is_complete())
}

fn assert_none_failed(outcomes: &[rollcall::apply::ClientOutcome]) {
    assert!(
        outcomes
            .iter()
            .all(|o| !matches!(o.state, OutcomeState::Failed { .. })),
        "{outcomes:?}"
    );
}

/// A TCP relay in front of slapd that, once armed, kills the server after `cut_after` bytes
/// of answers have passed on one connection: the server dies mid-paging at the same point on
/// every run, which a timer could not promise.
struct Relay {
    url: String,
    armed: Arc<Mutex<Option<usize>>>,
}

async fn relay(upstream: String, server: Arc<Mutex<Option<Slapd>>>) -> Relay {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("ldap://{}", listener.local_addr().expect("addr"));
    let armed: Arc<Mutex<Option<usize>>> = Arc::new(Mutex::new(None));
    let armed2 = armed.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(up) = tokio::net::TcpStream::connect(&upstream).await else {
                continue;
            };
            let cut_after = *armed2.lock().expect("lock");
            let server = server.clone();
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut ur, mut uw) = up.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut uw).await;
                });
                let mut sent = 0usize;
                let mut buf = vec![0u8; 4096];
                loop {
                    let n = match ur.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let n = match cut_after {
                        Some(limit) if sent + n >= limit => {
                            let part = limit - sent;
                            let _ = cw.write_all(&buf[..part]).await;
                            if let Some(mut s) = server.lock().expect("lock").take() {
                                s.kill();
                            }
                            break;
                        }
                        _ => n,
                    };
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    sent += n;
                }
            });
        }
    });
    Relay { url, armed }
}

#[tokio::test]
async fn an_ldap_pipeline_bills_disables_and_never_lowers_on_a_cut_read() {
    if !rollcall_harness::servers_available("e2e ldap", Slapd::PROGRAMS) {
        return;
    }
    let slapd = Slapd::start(USERS).expect("slapd");
    let d = slapd.directory().clone();
    let upstream = slapd.url().trim_start_matches("ldap://").to_owned();
    let server = Arc::new(Mutex::new(Some(slapd)));
    let relay = relay(upstream, server.clone()).await;
    let w = World::with_pipeline(&pipeline(&relay.url), "").await;

    // First run: everyone enabled is billed.
    let plan = w.plan(false).await;
    assert_eq!(read_complete(&plan), Some(true), "{:?}", plan.clients[0]);
    w.apply(&plan, false).await;
    let helpdesk = d.enabled() as u32;
    assert_eq!(w.quantity("HELPDESK-USER").await, Some(helpdesk));
    assert!(w.plan(false).await.is_empty(), "a resync plans nothing");

    // An enabled user in Sales is disabled in the directory.
    let leaver = d
        .users
        .iter()
        .find(|u| u.enabled && u.groups.iter().any(|g| g == "GRP-Sales") && u.mail.is_some())
        .expect("an enabled Sales user");
    let m365 = w.quantity("M365-BP").await.expect("m365 billed");
    {
        let guard = server.lock().expect("lock");
        let s = guard.as_ref().expect("slapd");
        s.modify(&format!(
            "dn: {}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 514\n",
            leaver.dn
        ))
        .expect("disable");
    }
    let plan = w.plan(false).await;
    let kinds: Vec<&str> = plan.changes.iter().map(|c| c.change.kind()).collect();
    assert!(kinds.contains(&"deactivate_contact"), "{kinds:?}");
    w.apply(&plan, false).await;
    assert_eq!(w.quantity("HELPDESK-USER").await, Some(helpdesk - 1));
    assert_eq!(w.quantity("M365-BP").await, Some(m365 - 1));
    let state = w.state().await;
    let contact = state
        .contacts
        .iter()
        .find(|c| c.fields.email == leaver.mail)
        .expect("the leaver's contact is kept");
    assert!(!contact.active, "deactivated, never deleted");

    // The server dies mid-paging: the read is incomplete, and the guard lowers nothing.
    *relay.armed.lock().expect("lock") = Some(12_000);
    let writes = w.sandbox.write_requests();
    let plan = w.plan(true).await;
    let client = &plan.clients[0];
    assert_eq!(
        read_complete(&plan),
        Some(false),
        "a read cut short must be incomplete: {client:?}"
    );
    assert!(
        client.people_read > 0 && client.people_read < USERS,
        "{}",
        client.people_read
    );
    assert!(
        !client.withheld.is_empty(),
        "the lowering changes are withheld and shown"
    );
    let lowering = plan
        .changes
        .iter()
        .filter(|c| matches!(c.change.kind(), "deactivate_contact" | "update_addition"))
        .count();
    assert_eq!(lowering, 0, "{:?}", plan.changes);
    assert_none_failed(&w.apply(&plan, false).await);
    assert_eq!(w.sandbox.write_requests(), writes, "nothing written");
    assert_eq!(w.quantity("HELPDESK-USER").await, Some(helpdesk - 1));
    assert_eq!(w.quantity("M365-BP").await, Some(m365 - 1));
}

/// `mappings/examples/active-directory.yaml` itself, pointed at a lab directory over ldaps with
/// its CA: what the README's walk-through shows is what is tested, seat for seat.
#[tokio::test]
async fn the_active_directory_example_bills_a_lab_directory_over_ldaps() {
    if !rollcall_harness::servers_available("e2e ldap example", Slapd::PROGRAMS) {
        return;
    }
    let slapd = Slapd::start(USERS).expect("slapd");
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/mappings/examples/active-directory.yaml"
    ))
    .expect("example");
    let ca = slapd.ca_file().display().to_string();
    let yaml = example
        .replace("http://127.0.0.1:8421/v4_6_release/apis/3.0", "SANDBOX_URL")
        .replace(
            "client_id: 00000000-0000-4000-8000-000000000000",
            "client_id: 00000000-0000-4000-8000-000000000000\n    rate_limit_per_second: 200",
        )
        .replace("ldaps://127.0.0.1:6636", &slapd.ldaps_url())
        .replace("/tmp/rollcall-lab/ca.pem", &ca);
    let settings: Vec<&str> = yaml
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    for lab in ["8421", "6636", "/tmp/rollcall-lab"] {
        assert!(
            !settings.iter().any(|l| l.contains(lab)),
            "the example moved away from {lab}"
        );
    }
    let w = World::with_pipeline(&yaml, "").await;

    // What the generator put there, worked out from its own facts: enabled people outside the
    // contractors' OU, in Billable through two levels of nesting, and Sales among them.
    let d = slapd.directory();
    let count = |group| d.billed(group) as u32;
    let (everyone, billable, sales) = (
        count(None),
        count(Some("Billable")),
        count(Some("GRP-Sales")),
    );
    assert!(
        sales > 0 && sales < billable && billable <= everyone,
        "{sales} {billable} {everyone}"
    );

    let plan = w.plan(false).await;
    assert_eq!(read_complete(&plan), Some(true), "{:?}", plan.clients[0]);
    assert_none_failed(&w.apply(&plan, false).await);
    assert_eq!(w.quantity("HELPDESK-USER").await, Some(billable));
    assert_eq!(w.quantity("M365-E3").await, Some(sales));
    assert_eq!(w.quantity("SEC-AWARE").await, Some(everyone));
    let writes = w.sandbox.write_requests();
    assert!(w.plan(false).await.is_empty(), "a resync plans nothing");
    assert_eq!(w.sandbox.write_requests(), writes);
}
