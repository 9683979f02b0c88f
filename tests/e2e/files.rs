//! Export files end to end: an export cut short never lowers a bill (through the real
//! `rollcall` executable against the ConnectWise sandbox), and an LDIF export of a directory
//! with nested groups bills the same people as the live LDAP read of that directory.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use rollcall_harness::Slapd;
use rollcall_harness::data::{self, READER_DN};

use crate::support::{PIPELINE, World, people_csv, printed, rollcall_bin};

fn rollcall(w: &World, args: &[&str]) -> Output {
    Command::new(rollcall_bin())
        .args(args)
        .env("ROLLCALL_STORE", w.store())
        .env_remove("RUST_LOG")
        .output()
        .expect("run rollcall")
}

/// `n` people as an ldapsearch -LLL export, every one in the M365 group.
fn people_ldif(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!(
            "dn: CN=Given{i} Sur{i},OU=Staff,DC=acme,DC=example\nobjectClass: inetOrgPerson\n\
             entryUUID: id-{i:04}\nuid: user{i}\ngivenName: Given{i}\nsn: Sur{i}\n\
             mail: user{i}@acme.example\ntitle: Engineer\nmemberOf: CN=M365 Users,OU=Groups,DC=acme,DC=example\n\n"
        ));
    }
    s
}

/// Runs the pipeline with `--allow-drop` over a cut export and checks that nothing went down.
async fn nothing_lowered(w: &World, file: &str, cut_at: &str) {
    let o = rollcall(w, &["run", file, "--allow-drop"]);
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    assert!(
        printed(&o).contains(cut_at),
        "the cut is named: {}",
        printed(&o)
    );
    assert_eq!(w.quantity("M365-BP").await, Some(40), "{}", printed(&o));
    assert_eq!(w.quantity("HELPDESK-USER").await, Some(40));
    let state = w.state().await;
    assert!(
        state.contacts.iter().all(|c| c.active),
        "a contact was deactivated"
    );
    // The person cut in half keeps their title: a cut value is never sent.
    assert!(
        state
            .contacts
            .iter()
            .all(|c| c.fields.title.as_deref().is_none_or(|t| t == "Engineer")),
        "{:?}",
        state.contacts
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_cut_mid_row_and_an_ldif_cut_mid_entry_lower_nothing() {
    let yaml = PIPELINE.replace(
        "clients:",
        "defaults:\n  contacts:\n    title: \"{{attributes.title}}\"\nclients:",
    );
    let full: String = people_csv(40, 40)
        .lines()
        .enumerate()
        .map(|(i, l)| format!("{l},{}\n", if i == 0 { "title" } else { "Engineer" }))
        .collect();
    let w = World::with_pipeline(&yaml, &full).await;
    let pipeline = w.pipeline_path();
    let file = pipeline.to_str().expect("utf-8 path");
    let o = rollcall(&w, &["run", file]);
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    assert_eq!(w.quantity("M365-BP").await, Some(40));

    // Cut inside row 26 (line 27), in the middle of its title.
    let at = full.find("user25@").expect("row 25")
        + "user25@acme.example,true,M365 Users;Staff,Eng".len();
    w.set_people(&full[..at]);
    nothing_lowered(&w, file, "acme.csv:27").await;
    // Cut inside a quoted cell, with the row's line end swallowed into it.
    let quoted = full.replacen("Engineer\nid-0030", "\"Eng\nid-0030", 1);
    w.set_people(&quoted[..quoted.find("id-0030").expect("row 30") + 3]);
    nothing_lowered(&w, file, "acme.csv:31").await;

    // The same people from an LDIF export, cut inside an entry.
    std::fs::write(w.dir.path().join("acme.ldif"), people_ldif(40)).expect("write");
    std::fs::write(
        &pipeline,
        std::fs::read_to_string(&pipeline)
            .expect("read")
            .replace("acme.csv", "acme.ldif"),
    )
    .expect("write pipeline");
    let o = rollcall(&w, &["plan", file]);
    assert!(
        printed(&o).contains("No changes"),
        "the LDIF reads as the CSV did: {}",
        printed(&o)
    );
    let ldif = people_ldif(40);
    let entry = ldif.find("dn: CN=Given24 ").expect("entry 24");
    let at = entry + ldif[entry..].find("title: Eng").expect("title") + "title: Eng".len();
    std::fs::write(w.dir.path().join("acme.ldif"), &ldif[..at]).expect("write");
    let line = ldif[..entry].lines().count() + 1;
    nothing_lowered(&w, file, &format!("acme.ldif:{line}")).await;
}

/// People by id: whether enabled, and their groups sorted.
async fn read(
    directory: &std::sync::Arc<dyn rollcall_core::Directory>,
) -> BTreeMap<String, (bool, Vec<String>)> {
    let read = directory.read(None).await.expect("read");
    assert!(read.completeness.is_complete(), "{:?}", read.warnings);
    read.people
        .into_iter()
        .map(|p| {
            let mut groups = p.groups;
            groups.sort();
            (p.id, (p.enabled, groups))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ldif_export_with_nested_groups_bills_as_the_live_ldap_read_does() {
    if !rollcall_harness::servers_available("e2e ldif export", Slapd::PROGRAMS) {
        return;
    }
    let slapd = Slapd::start(60).expect("slapd");
    let dir = tempfile::tempdir().expect("tempdir");
    // What an operator would run: ldapsearch over the people and the groups, into one file.
    let mut export = Vec::new();
    for base in [data::STAFF, data::GROUPS] {
        let o = Command::new("ldapsearch")
            .args(["-x", "-LLL", "-H", &slapd.url(), "-D", READER_DN])
            .args([
                "-w",
                data::READER_PASSWORD,
                "-b",
                base,
                "(objectClass=*)",
                "*",
            ])
            .output()
            .expect("ldapsearch");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        export.extend_from_slice(&o.stdout);
    }
    std::fs::write(dir.path().join("acme.ldif"), &export).expect("write export");
    let yaml = format!(
        r#"name: parity
target:
  connectwise:
    url: http://127.0.0.1:9/unused
    company_id: demo
    public_key: ${{ROLLCALL_E2E_PUBLIC:-demo-public}}
    private_key: ${{ROLLCALL_E2E_PRIVATE:-demo-private}}
    client_id: 00000000-0000-4000-8000-000000000000
products:
  - {{ id: billable, identifier: M365-BP, unit_price: 22.00, seats: "enabled && 'Billable' in groups" }}
clients:
  - name: Live
    directory:
      ldap:
        url: {url}
        allow_plaintext: true
        bind_dn: "{READER_DN}"
        password: "${{ROLLCALL_E2E_LDAP_PASSWORD:-{pw}}}"
        base_dns: ["{staff}"]
        group_base_dns: ["{groups}"]
    company: ACME
  - name: Export
    directory: {{ file: {{ path: acme.ldif }} }}
    company: ACME
"#,
        url = slapd.url(),
        pw = data::READER_PASSWORD,
        staff = data::STAFF,
        groups = data::GROUPS,
    );
    let path = dir.path().join("pipeline.yaml");
    std::fs::write(&path, yaml).expect("write pipeline");
    let pipeline = rollcall::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let live = read(&pipeline.clients[0].directory.build(pipeline.dir())).await;
    let file = read(&pipeline.clients[1].directory.build(pipeline.dir())).await;
    assert_eq!(live.len(), 60);
    assert_eq!(
        live, file,
        "the export reads the people and groups the server does"
    );

    // The facts of the generated directory: three levels of nesting, the diamond counted once,
    // the cycle stopped.
    let facts = slapd.directory();
    let billed = |people: &BTreeMap<String, (bool, Vec<String>)>, group: &str| {
        people
            .values()
            .filter(|(on, g)| *on && g.iter().any(|x| x == group))
            .count()
    };
    let expected = facts
        .users
        .iter()
        .filter(|u| u.enabled && u.groups.iter().any(|g| g == "Billable"))
        .count();
    assert_eq!(billed(&file, "Billable"), expected);
    let u1 = facts.user("u000001");
    let (_, groups) = &file[u1.guid.as_deref().expect("guid")];
    assert_eq!(groups, &u1.groups, "user 1 is in the cycle");
    assert_eq!(groups.iter().filter(|g| *g == "Billable").count(), 1);
}
