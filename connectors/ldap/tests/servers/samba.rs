//! Against Samba's AD DC: AD's own behaviour (in-chain rule, ranged retrieval, binary GUIDs,
//! bind diagnostics, referrals from the domain root).

use rollcall_core::Completeness;
use rollcall_harness::SambaDc;
use rollcall_harness::data::{self, STAFF};
use rollcall_ldap::NestedGroups;

use crate::common::{by_username, config, read};
use crate::shared_server;

const USERS: usize = 600;
const ADMIN: &str = "Administrator@example.test";
const PASSWORD: &str = "Admin123!Passw0rd";

shared_server!(dc: SambaDc = SambaDc::start(USERS), requires SambaDc::PROGRAMS);

fn starttls(dc: &SambaDc) -> rollcall_ldap::Config {
    let mut c = config(&dc.url(), ADMIN, PASSWORD, STAFF);
    c.starttls = true;
    c.ca_file = Some(dc.ca_file().to_owned());
    c.group_base_dns = vec![data::GROUPS.to_owned()];
    c
}

#[tokio::test]
async fn pages_through_everyone_with_exact_counts() {
    let Some(dc) = dc() else { return };
    let d = dc.directory();
    let mut c = starttls(dc);
    c.page_size = 100;
    let read = read(c).await;
    assert_eq!(
        read.completeness,
        Completeness::Complete,
        "{:?}",
        read.warnings
    );
    assert_eq!(read.people.len(), USERS);
    assert_eq!(
        read.people.iter().filter(|p| p.enabled).count(),
        d.enabled()
    );
    let people = by_username(&read.people);
    for u in &d.users {
        let p = people
            .get(u.sam.as_str())
            .unwrap_or_else(|| panic!("{} missing", u.sam));
        assert_eq!(p.enabled, u.enabled, "{}", u.sam);
        assert_eq!(p.email, u.mail, "{}", u.sam);
        assert_eq!(p.display_name, u.display_name, "{}", u.sam);
        assert_eq!(p.groups, u.groups, "{}", u.sam);
    }
}

/// The default (`auto`) on AD works nesting out in one search of the groups, whatever their
/// number: the root DSE, one page of groups and one of people. One search per group (in-chain)
/// made a plan against a 1,600-entry DC take 24–34 s. Also with the groups searched from the
/// domain root, where Samba's built-in groups add dozens more.
#[tokio::test]
async fn auto_nesting_costs_one_search_of_the_groups_not_one_per_group() {
    let Some(dc) = dc() else { return };
    let d = dc.directory();
    for group_base in [data::GROUPS, data::BASE] {
        let mut c = starttls(dc);
        c.group_base_dns = vec![group_base.to_owned()];
        assert_eq!(c.nested_groups, NestedGroups::Auto);
        let mut people = Vec::new();
        let summary = rollcall_ldap::LdapDirectory::new(c)
            .read_each(&mut |p| people.push(p))
            .await
            .unwrap_or_else(|e| panic!("{group_base}: {e}"));
        assert_eq!(
            (summary.searches, summary.pages),
            (3, 2),
            "{group_base}: root DSE, groups, people"
        );
        assert_eq!(summary.completeness, Completeness::Complete, "{group_base}");
        assert_eq!(summary.nested_groups, NestedGroups::Client, "{group_base}");
        let people = by_username(&people);
        assert_eq!(people.len(), USERS);
        for u in &d.users {
            assert_eq!(
                people[u.sam.as_str()].groups,
                u.groups,
                "{group_base}: {}",
                u.sam
            );
        }
        assert_eq!(
            people
                .values()
                .filter(|p| p.groups.iter().any(|g| g == "Billable"))
                .count(),
            d.in_group("Billable"),
            "{group_base}"
        );
    }
}

#[tokio::test]
async fn client_expansion_with_ranged_retrieval_agrees_with_in_chain() {
    let Some(dc) = dc() else { return };
    let mut client = starttls(dc);
    client.nested_groups = NestedGroups::Client;
    // GRP-<dept> hold 120 members: read in ranges of 50 (`member;range=0-49`, 50-99, 100-*).
    client.range_size = 50;
    let by_client = read(client).await;
    let mut chain = starttls(dc);
    chain.nested_groups = NestedGroups::InChain;
    let by_chain = read(chain).await;
    assert_eq!(by_client.completeness, Completeness::Complete);
    let a = by_username(&by_client.people);
    let b = by_username(&by_chain.people);
    assert_eq!(a.len(), USERS);
    for u in &dc.directory().users {
        assert_eq!(a[u.sam.as_str()].groups, u.groups, "client: {}", u.sam);
        assert_eq!(b[u.sam.as_str()].groups, u.groups, "in-chain: {}", u.sam);
    }
}

#[tokio::test]
async fn the_guid_is_ads_canonical_form() {
    let Some(dc) = dc() else { return };
    let read = read(starttls(dc)).await;
    let people = by_username(&read.people);
    let p = people["u000001"];
    // Samba resolves `<GUID=…>` as AD does: only the canonical (byte-swapped) text finds it.
    let out = std::process::Command::new("ldapsearch")
        .args([
            "-x",
            "-H",
            &dc.url(),
            "-D",
            ADMIN,
            "-w",
            PASSWORD,
            "-LLL",
            "-s",
            "base",
            "-b",
        ])
        .arg(format!("<GUID={}>", p.id))
        .arg("sAMAccountName")
        .output()
        .expect("ldapsearch");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("sAMAccountName: u000001"), "{text}");
}

#[tokio::test]
async fn a_wrong_password_names_ads_data_code() {
    let Some(dc) = dc() else { return };
    let mut c = starttls(dc);
    c.password = rollcall_core::Secret::new("not-the-password");
    let err = crate::common::read_err(c).await;
    assert!(err.contains("52e"), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");
}

#[tokio::test]
async fn ldaps_and_the_domain_root_with_its_referrals() {
    let Some(dc) = dc() else { return };
    let mut c = starttls(dc);
    c.url = dc.ldaps_url();
    c.starttls = false;
    // The domain root: Samba answers with references into the Configuration partition too.
    c.base_dns = vec![data::BASE.to_owned()];
    c.group_base_dns = vec![];
    let read = read(c).await;
    assert_eq!(
        read.completeness,
        Completeness::Complete,
        "{:?}",
        read.warnings
    );
    // Administrator, Guest and krbtgt besides the generated users.
    assert!(read.people.len() >= USERS + 3, "{}", read.people.len());
    let people = by_username(&read.people);
    assert!(!people["krbtgt"].enabled);
}
