//! Many clients in one pipeline against one ConnectWise sandbox: what the job-queue tests and
//! the queue benchmark run their workers on.
//!
//! Client `i` is company `C000i` with a "Managed Services" agreement and its own CSV of people
//! (all in the M365 group), billed for two products: each client's first sync writes one
//! contact per person and two additions.

use std::path::{Path, PathBuf};

/// The identifier (and client name) of client `i`.
pub fn client_id(i: usize) -> String {
    format!("C{i:04}")
}

/// `n` people of client `client`, all in the M365 group.
pub fn people_csv(client: usize, n: usize) -> String {
    let mut csv = String::from("id,given_name,surname,email,enabled,groups\n");
    for p in 0..n {
        csv.push_str(&format!(
            "c{client}-p{p},Given{p},Sur{client},p{p}@c{client}.example,true,M365 Users\n"
        ));
    }
    csv
}

/// Adds `clients` companies and their agreements to a ConnectWise sandbox seed (as JSON).
pub fn add_clients(seed: &mut serde_json::Value, clients: usize) {
    for i in 0..clients {
        let id = client_id(i);
        if let Some(companies) = seed["companies"].as_array_mut() {
            companies.push(serde_json::json!({ "identifier": id, "name": format!("Client {i}") }));
        }
        if let Some(agreements) = seed["agreements"].as_array_mut() {
            agreements.push(serde_json::json!({
                "name": "Managed Services",
                "type": { "name": "Managed Services" },
                "company": { "identifier": id },
                "agreementStatus": "Active",
                "startDate": "2025-01-01T00:00:00Z",
                "noEndingDateFlag": true,
                "billingCycle": { "name": "Monthly" }
            }));
        }
    }
}

/// Writes `dir/fleet.yaml` (pipeline `fleet`, with `head` — e.g. a `schedule:` — on top) and
/// each client's CSV; returns the pipeline's path.
pub fn write_pipeline(
    dir: &Path,
    sandbox_url: &str,
    clients: usize,
    per_client: usize,
    head: &str,
    requests_per_second: u32,
) -> std::io::Result<PathBuf> {
    let mut yaml = format!(
        "name: fleet\n{head}target:\n  connectwise:\n    url: {sandbox_url}\n    company_id: demo\n    public_key: \"${{CW_PUBLIC:-demo-public}}\"\n    private_key: \"${{CW_PRIVATE:-demo-private}}\"\n    client_id: 00000000-0000-4000-8000-000000000000\n    rate_limit_per_second: {requests_per_second}\nproducts:\n  - {{ id: m365, identifier: M365-BP, unit_price: 22.00, seats: \"'M365 Users' in groups\" }}\n  - {{ id: helpdesk, identifier: HELPDESK-USER, unit_price: 35 }}\nclients:\n"
    );
    for i in 0..clients {
        let id = client_id(i);
        std::fs::write(dir.join(format!("{id}.csv")), people_csv(i, per_client))?;
        yaml.push_str(&format!(
            "  - {{ name: {id}, directory: {{ file: {{ path: {id}.csv }} }}, company: {id}, agreement: Managed Services }}\n"
        ));
    }
    let path = dir.join("fleet.yaml");
    std::fs::write(&path, yaml)?;
    Ok(path)
}
