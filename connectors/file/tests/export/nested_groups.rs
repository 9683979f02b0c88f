//! One small domain written as an LDIF with its group entries and as a Get-ADUser CSV with a
//! group-member CSV beside it: both read the same groups for everyone, nesting expanded, a
//! diamond counted once, a cycle stopped.

use std::collections::BTreeMap;

use rollcall_core::{Completeness, DirectoryConfig};
use rollcall_file::Config;

/// Groups: Billing ⊃ {Staff, Sales}, Staff ⊃ Sales (a diamond), Sales ∋ ann; Loop-A ⇄ Loop-B ∋
/// bob; Empty has nobody. Ann's memberOf names Sales only, bob's nothing: as AD writes it.
const LDIF: &str = "dn: CN=Ann Lee,OU=Staff,DC=acme,DC=local
objectClass: user
objectGUID:: yYuRNW0Z6kCXeYidebdT8A==
sAMAccountName: ann
memberOf: CN=Sales,OU=Groups,DC=acme,DC=local

dn: CN=Bob Stone,OU=Staff,DC=acme,DC=local
objectClass: user
objectGUID:: AAAAAAAAAAAAAAAAAAAAAQ==
sAMAccountName: bob

dn: CN=Billing,OU=Groups,DC=acme,DC=local
objectClass: group
cn: Billing
member: CN=Staff,OU=Groups,DC=acme,DC=local
member: CN=Sales,OU=Groups,DC=acme,DC=local

dn: CN=Staff,OU=Groups,DC=acme,DC=local
objectClass: group
cn: Staff
member: CN=Sales,OU=Groups,DC=acme,DC=local

dn: CN=Sales,OU=Groups,DC=acme,DC=local
objectClass: group
cn: Sales
member: cn=ann lee, ou=staff, dc=acme, dc=local

dn: CN=Loop-A,OU=Groups,DC=acme,DC=local
objectClass: group
cn: Loop-A
member: CN=Loop-B,OU=Groups,DC=acme,DC=local

dn: CN=Loop-B,OU=Groups,DC=acme,DC=local
objectClass: group
cn: Loop-B
member: CN=Loop-A,OU=Groups,DC=acme,DC=local
member: CN=Bob Stone,OU=Staff,DC=acme,DC=local

dn: CN=Empty,OU=Groups,DC=acme,DC=local
objectClass: group
cn: Empty

";

const PEOPLE_CSV: &str = "ObjectGUID,SamAccountName,DistinguishedName,MemberOf
35918bc9-196d-40ea-9779-889d79b753f0,ann,\"CN=Ann Lee,OU=Staff,DC=acme,DC=local\",\"CN=Sales,OU=Groups,DC=acme,DC=local\"
00000000-0000-0000-0000-000000000001,bob,\"CN=Bob Stone,OU=Staff,DC=acme,DC=local\",
";

const GROUPS_CSV: &str = "GroupDN,GroupName,MemberDN
\"CN=Billing,OU=Groups,DC=acme,DC=local\",Billing,\"CN=Staff,OU=Groups,DC=acme,DC=local\"
\"CN=Billing,OU=Groups,DC=acme,DC=local\",Billing,\"CN=Sales,OU=Groups,DC=acme,DC=local\"
\"CN=Staff,OU=Groups,DC=acme,DC=local\",Staff,\"CN=Sales,OU=Groups,DC=acme,DC=local\"
\"CN=Sales,OU=Groups,DC=acme,DC=local\",Sales,\"CN=Ann Lee,OU=Staff,DC=acme,DC=local\"
\"CN=Loop-A,OU=Groups,DC=acme,DC=local\",Loop-A,\"CN=Loop-B,OU=Groups,DC=acme,DC=local\"
\"CN=Loop-B,OU=Groups,DC=acme,DC=local\",Loop-B,\"CN=Loop-A,OU=Groups,DC=acme,DC=local\"
\"CN=Loop-B,OU=Groups,DC=acme,DC=local\",Loop-B,\"CN=Bob Stone,OU=Staff,DC=acme,DC=local\"
\"CN=Empty,OU=Groups,DC=acme,DC=local\",Empty,
";

async fn read(files: &[(&str, &str)], config: serde_json::Value) -> rollcall_core::DirectoryRead {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    let config: Config = serde_json::from_value(config).expect("valid");
    config.build(dir.path()).read(None).await.expect("reads")
}

fn groups(read: &rollcall_core::DirectoryRead) -> BTreeMap<&str, Vec<&str>> {
    read.people
        .iter()
        .map(|p| {
            (
                p.username.as_str(),
                p.groups.iter().map(String::as_str).collect(),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_ldif_and_a_csv_with_its_group_export_read_the_same_nesting() {
    let ldif = read(
        &[("acme.ldif", LDIF)],
        serde_json::json!({"path": "acme.ldif"}),
    )
    .await;
    assert_eq!(
        ldif.completeness,
        Completeness::Complete,
        "{:?}",
        ldif.warnings
    );
    let expected = BTreeMap::from([
        ("ann", vec!["Billing", "Sales", "Staff"]),
        ("bob", vec!["Loop-A", "Loop-B"]),
    ]);
    assert_eq!(groups(&ldif), expected);

    let csv = read(
        &[("acme.csv", PEOPLE_CSV), ("groups.csv", GROUPS_CSV)],
        serde_json::json!({"path": "acme.csv", "groups": "groups.csv"}),
    )
    .await;
    assert_eq!(
        csv.completeness,
        Completeness::Complete,
        "{:?}",
        csv.warnings
    );
    assert_eq!(groups(&csv), expected);
    let ids = |r: &rollcall_core::DirectoryRead| {
        r.people.iter().map(|p| p.id.clone()).collect::<Vec<_>>()
    };
    assert_eq!(ids(&csv), ids(&ldif));

    // Without the group export, the CSV has direct groups only, as AD's memberOf does.
    let direct = read(
        &[("acme.csv", PEOPLE_CSV)],
        serde_json::json!({"path": "acme.csv"}),
    )
    .await;
    assert_eq!(groups(&direct)["ann"], vec!["Sales"]);
}

#[tokio::test]
async fn a_cut_or_missing_group_export_never_passes_as_complete() {
    let cut = &GROUPS_CSV[..GROUPS_CSV.find("Loop-B,\"CN=Bob").expect("row") + 10];
    let read_cut = read(
        &[("acme.csv", PEOPLE_CSV), ("groups.csv", cut)],
        serde_json::json!({"path": "acme.csv", "groups": "groups.csv"}),
    )
    .await;
    let Completeness::Incomplete { reason } = &read_cut.completeness else {
        panic!("a cut group export read as complete");
    };
    assert!(
        reason.contains("groups.csv:8: the file ends inside"),
        "{reason}"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("acme.csv"), PEOPLE_CSV).expect("write");
    let config: Config =
        serde_json::from_value(serde_json::json!({"path": "acme.csv", "groups": "gone.csv"}))
            .expect("valid");
    let err = config
        .build(dir.path())
        .read(None)
        .await
        .expect_err("missing");
    assert!(err.to_string().contains("check `groups`"), "{err}");
}
