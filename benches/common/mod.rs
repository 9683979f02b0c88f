//! What the benchmarks share: the pipeline they map with and the people and exports they read,
//! so `sync` (criterion, wall time) and `instructions` (the CI guard's counts) measure the same
//! work.

#![allow(dead_code)] // each bench uses its own part

use rollcall::config::{self, Pipeline};
use rollcall::mapping::desired_state;
use rollcall::plan::{
    self,
    guard::{self, GuardPolicy},
};
use rollcall_core::{AccountRef, ClientState, DirectoryRead, License, Person};

pub const PIPELINE: &str = r#"name: bench
target: { connectwise: { url: "http://127.0.0.1:9", company_id: x, public_key: "${X:-x}", private_key: "${Y:-y}", client_id: z } }
defaults:
  counted: "enabled && !('Service Accounts' in groups)"
products:
  - { id: helpdesk, identifier: HELPDESK-USER, unit_price: 35.00 }
  - { id: m365, identifier: M365-BP, unit_price: 22.00, seats: "'M365 Users' in groups" }
  - { id: e3, identifier: M365-E3, unit_price: 36.00, seats: "'SPE_E3' in licenses" }
clients:
  - { name: bench, directory: { file: { path: x.csv } }, company: X, agreement: A }
"#;

pub fn person(client: usize, i: usize) -> Person {
    let mut groups = vec!["Staff".to_owned()];
    if !i.is_multiple_of(3) {
        groups.push("M365 Users".into());
    }
    if i % 50 == 49 {
        groups.push("Service Accounts".into());
    }
    Person {
        id: format!("{client:04}-{i:06}"),
        username: format!("user{i}"),
        given_name: format!("Given{i}"),
        surname: format!("Sur{i}"),
        display_name: format!("Given{i} Sur{i}"),
        email: Some(format!("user{i}@client{client}.example")),
        upn: Some(format!("user{i}@client{client}.local")),
        enabled: !i.is_multiple_of(17),
        groups,
        licenses: if i.is_multiple_of(4) {
            vec![License {
                sku: "SPE_E3".into(),
                name: "Microsoft 365 E3".into(),
            }]
        } else {
            vec![]
        },
        attributes: [("title".to_owned(), "Engineer".to_owned())].into(),
    }
}

pub fn pipeline() -> Pipeline {
    config::load_str(PIPELINE, std::path::Path::new("bench.yaml")).expect("bench pipeline")
}

/// `n` people of client 0 as a `Get-ADUser | Export-Csv`-shaped file (10 columns, memberOf DNs).
pub fn csv_export(n: usize) -> Vec<u8> {
    let mut csv = String::from(
        "ObjectGUID,SamAccountName,GivenName,Surname,DisplayName,EmailAddress,UserPrincipalName,Enabled,MemberOf,Title\n",
    );
    for i in 0..n {
        let p = person(0, i);
        let member_of: Vec<String> = p
            .groups
            .iter()
            .map(|g| format!("CN={g},OU=Groups,DC=acme,DC=local"))
            .collect();
        csv.push_str(&format!(
            "{:08x}-0000-4000-8000-{:012x},{},{},{},\"{}\",{},{},{},\"{}\",Engineer\n",
            i,
            i,
            p.username,
            p.given_name,
            p.surname,
            p.display_name,
            p.email.unwrap_or_default(),
            p.upn.unwrap_or_default(),
            if p.enabled { "True" } else { "False" },
            member_of.join(";")
        ));
    }
    csv.into_bytes()
}

/// Maps one client's people, plans against `actual` and guards: the changes planned.
pub fn map_and_plan(p: &Pipeline, read: &DirectoryRead, actual: &ClientState) -> usize {
    let client = &p.clients[0];
    let desired = desired_state(
        &client.name,
        &client.rules,
        &p.templates,
        p.currency,
        None,
        read,
        &rollcall::mapping::Grace::default(),
    )
    .expect("map");
    let planned = plan::plan(&desired, actual);
    let policy = GuardPolicy {
        max_seat_drop_percent: 50,
        max_seat_drop: None,
        allow_drop: false,
    };
    guard::check(&client.name, planned, &desired, actual, policy)
        .changes
        .len()
}

/// A client the billing system knows nothing about yet: a first run creates everything.
pub fn nothing_billed() -> ClientState {
    ClientState {
        account: AccountRef {
            company_id: "1".into(),
            agreement_id: None,
        },
        invoice: None,
        contacts: vec![],
        additions: vec![],
    }
}
