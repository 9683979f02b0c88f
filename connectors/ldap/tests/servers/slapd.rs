//! Against OpenLDAP's slapd: volume, paging, TLS, limits, and the client-side fallbacks for
//! what slapd lacks (in-chain rule, ranged retrieval).

use rollcall_core::Completeness;
use rollcall_harness::Slapd;
use rollcall_harness::data::{self, READER_DN, READER_PASSWORD, STAFF};
use rollcall_ldap::NestedGroups;

use crate::common::{by_username, config, read, read_err};
use crate::shared_server;

const USERS: usize = 2_500;

shared_server!(slapd: Slapd = Slapd::start(USERS), requires Slapd::PROGRAMS);

fn plain(s: &Slapd) -> rollcall_ldap::Config {
    let mut c = config(&s.url(), READER_DN, READER_PASSWORD, STAFF);
    c.allow_plaintext = true;
    c.group_base_dns = vec![data::GROUPS.to_owned()];
    c
}

#[tokio::test]
async fn pages_through_everyone_with_exact_counts() {
    let Some(s) = slapd() else { return };
    let d = s.directory();
    let mut c = plain(s);
    c.page_size = 100;
    let read = read(c).await;
    assert_eq!(
        read.completeness,
        Completeness::Complete,
        "{:?}",
        read.warnings
    );
    assert_eq!(
        read.people.len(),
        USERS,
        "the computer account is not a person"
    );
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
        assert_eq!(Some(&p.id), u.guid.as_ref(), "{}", u.sam);
        assert_eq!(p.groups, u.groups, "{}", u.sam);
    }
    assert_eq!(people["u000001"].id, data::KNOWN_GUID);
}

#[tokio::test]
async fn ldaps_and_starttls_verify_against_the_test_ca() {
    let Some(s) = slapd() else { return };
    let mut ldaps = plain(s);
    ldaps.url = s.ldaps_url();
    ldaps.allow_plaintext = false;
    ldaps.ca_file = Some(s.ca_file().to_owned());
    assert_eq!(read(ldaps.clone()).await.people.len(), USERS);

    let mut starttls = plain(s);
    starttls.allow_plaintext = false;
    starttls.starttls = true;
    starttls.ca_file = Some(s.ca_file().to_owned());
    assert_eq!(read(starttls).await.people.len(), USERS);

    // The system's roots do not know the test CA.
    let mut untrusted = ldaps.clone();
    untrusted.ca_file = None;
    let err = read_err(untrusted).await;
    assert!(err.contains("TLS with") && err.contains("ca_file"), "{err}");

    let mut skip = ldaps;
    skip.ca_file = None;
    skip.insecure_skip_verify = true;
    assert_eq!(read(skip).await.people.len(), USERS);
}

#[tokio::test]
async fn a_plaintext_bind_is_refused_unless_allowed() {
    let Some(s) = slapd() else { return };
    let mut c = plain(s);
    c.allow_plaintext = false;
    let err = read_err(c).await;
    assert!(
        err.contains("refusing a simple bind in clear text"),
        "{err}"
    );
    assert!(err.contains("allow_plaintext"), "{err}");
}

#[tokio::test]
async fn wrong_base_dn_and_wrong_password_are_distinct_errors() {
    let Some(s) = slapd() else { return };
    let mut c = plain(s);
    c.base_dns = vec!["OU=Nowhere,DC=example,DC=test".to_owned()];
    let err = read_err(c).await;
    assert!(
        err.contains("base DN OU=Nowhere,DC=example,DC=test does not exist"),
        "{err}"
    );

    let mut c = plain(s);
    c.password = rollcall_core::Secret::new("wrong-password");
    let err = read_err(c).await;
    assert!(err.contains("refused the bind as CN=svc-reader"), "{err}");
    assert!(
        !err.contains("wrong-password"),
        "the password leaked: {err}"
    );

    let mut c = plain(s);
    c.url = "ldap://127.0.0.1:1".to_owned();
    let err = read_err(c).await;
    assert!(err.contains("unreachable"), "{err}");
}

#[tokio::test]
async fn a_server_size_limit_makes_the_read_incomplete() {
    let Some(s) = slapd() else { return };
    let mut c = plain(s);
    c.bind_dn = data::LIMITED_DN.to_owned();
    c.group_base_dns = vec![data::GROUPS.to_owned()];
    c.page_size = 20;
    let read = read(c).await;
    match &read.completeness {
        Completeness::Incomplete { reason } => assert!(reason.contains("size limit"), "{reason}"),
        Completeness::Complete => panic!("a size-limited read was complete"),
    }
    assert!(
        read.people.len() <= data::LIMITED_SIZE,
        "{}",
        read.people.len()
    );
    assert!(!read.people.is_empty());
}

#[tokio::test]
async fn excluded_ous_are_left_out() {
    let Some(s) = slapd() else { return };
    let mut c = plain(s);
    c.exclude_ous = vec![data::CONTRACTORS.to_owned()];
    c.attributes = vec!["employeeID".to_owned(), "objectSid".to_owned()];
    let read = read(c).await;
    assert_eq!(read.completeness, Completeness::Complete);
    assert_eq!(read.people.len(), s.directory().outside_contractors());
    assert!(read.people.iter().all(|p| {
        !p.attributes["dn"]
            .to_ascii_lowercase()
            .contains("ou=contractors")
    }));
}

#[tokio::test]
async fn groups_nest_through_levels_and_cycles_on_the_client() {
    let Some(s) = slapd() else { return };
    let mut c = plain(s);
    c.nested_groups = NestedGroups::Auto;
    let read = read(c).await;
    let people = by_username(&read.people);
    // GRP-Sales ⊂ All Staff ⊂ Billable; u000001 is also in Cycle-A ⇄ Cycle-B.
    assert_eq!(
        people["u000001"].groups,
        ["All Staff", "Billable", "Cycle-A", "Cycle-B", "GRP-Sales"]
    );
    let billable = read
        .people
        .iter()
        .filter(|p| p.groups.iter().any(|g| g == "Billable"))
        .count();
    assert_eq!(billable, s.directory().in_group("Billable"));
}

#[tokio::test]
async fn a_server_killed_mid_read_gives_an_incomplete_read_of_what_came() {
    if !rollcall_harness::servers_available("killed_mid_read", Slapd::PROGRAMS) {
        return;
    }
    let server = std::sync::Mutex::new(Some(Slapd::start(1_000).expect("slapd")));
    let (url, ca) = {
        let guard = server.lock().expect("lock");
        let s = guard.as_ref().expect("slapd");
        (s.url(), s.ca_file().to_owned())
    };
    let _ = ca;
    let mut c = config(&url, READER_DN, READER_PASSWORD, STAFF);
    c.allow_plaintext = true;
    c.page_size = 100;
    c.group_base_dns = vec![data::GROUPS.to_owned()];
    let directory = rollcall_ldap::LdapDirectory::new(c);
    let mut seen = 0;
    let summary = directory
        .read_each(&mut |_| {
            seen += 1;
            if seen == 150 {
                // Killed between pages or mid-page: either way the read must stop short.
                if let Some(mut s) = server.lock().expect("lock").take() {
                    s.kill();
                }
            }
        })
        .await
        .expect("people were read before the server died, so this is not an error");
    assert!(
        summary.people >= 150 && summary.people < 1_000,
        "{}",
        summary.people
    );
    match &summary.completeness {
        Completeness::Incomplete { reason } => assert!(
            reason.contains("connection") || reason.contains("no answer"),
            "{reason}"
        ),
        Completeness::Complete => panic!("a read cut short was complete"),
    }
}
