//! Pipeline tests: billing policy tested like code.
//!
//! A pipeline carries test cases — a handful of people in, the seats, contacts and invoice lines
//! expected out — in its own `tests:` section or in a sibling `NAME.tests.yaml`. `rollcall test
//! FILE` maps each case's people through the real compiled rules (no directory, no billing
//! system) and prints a readable diff of what differs, so a change to a rule is reviewed with
//! its effect, and CI fails when a rule stops meaning what its tests say.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rollcall_core::{DirectoryRead, License, Person};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::config::{At, ConfigError, ConfigErrors, Pipeline, Pos, Price};
use crate::mapping;

/// One test case: people in, expected billing out.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// What the case checks, in a sentence.
    pub name: At<String>,
    /// Whose rules to use; may be left out when the pipeline has one client.
    #[serde(default)]
    pub client: Option<At<String>>,
    /// The people the directory would return.
    #[serde(default)]
    pub people: Vec<TestPerson>,
    /// The day the case is evaluated on (`YYYY-MM-DD`), for rules that depend on dates such as
    /// `count_from`. Default: today.
    #[serde(default)]
    pub today: Option<At<String>>,
    pub expect: Expectation,
}

/// A person for a test; everything but a name is optional (`enabled` defaults to true).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestPerson {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub given_name: String,
    #[serde(default)]
    pub surname: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub upn: Option<String>,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// SKU part numbers, or `SKU=Friendly name`.
    #[serde(default)]
    pub licenses: Vec<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// What the case expects. Only what is written is checked.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// Billed quantity per product id; a product left out is not checked.
    #[serde(default)]
    pub seats: BTreeMap<String, At<u32>>,
    /// The contacts' match keys (emails, lower-case), exactly.
    #[serde(default)]
    pub contacts: Option<Vec<String>>,
    /// Invoice lines per product id.
    #[serde(default)]
    pub lines: BTreeMap<String, At<ExpectedLine>>,
    /// Who is excluded, by display name, and the rule's name: `{ "Backup Service": service accounts }`.
    #[serde(default)]
    pub excluded: Option<BTreeMap<String, String>>,
}

/// An expected invoice line.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectedLine {
    #[serde(default)]
    pub quantity: Option<u32>,
    #[serde(default)]
    pub unit_price: Option<Price>,
    /// The whole invoice text, exactly.
    #[serde(default)]
    pub description: Option<String>,
    /// The people billed, by name, in any order.
    #[serde(default)]
    pub names: Option<Vec<String>>,
}

/// A sibling `NAME.tests.yaml`: just the cases.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    tests: Vec<TestCase>,
}

/// The outcome of one case.
#[derive(Debug)]
pub struct CaseResult {
    pub name: String,
    pub file: String,
    pub line: u32,
    /// Empty when the case passed; otherwise one line per difference.
    pub differences: Vec<String>,
}

/// Reads the test cases of a pipeline file: its own `tests:` and its sibling `*.tests.yaml`.
pub fn load_cases(
    pipeline_text: &str,
    path: &Path,
) -> Result<Vec<(String, TestCase)>, ConfigErrors> {
    let raw = crate::config::parse(pipeline_text, path)?;
    let mut cases: Vec<(String, TestCase)> = raw
        .tests
        .into_iter()
        .map(|t| (path.display().to_string(), t))
        .collect();
    let sibling = path.with_extension("tests.yaml");
    if sibling.exists() {
        let text = std::fs::read_to_string(&sibling).map_err(|e| {
            ConfigError::new(
                &sibling,
                Pos::default(),
                format!("cannot read: {e}"),
                "check the file's permissions",
            )
        })?;
        let file: TestFile = serde_saphyr::from_str(&text).map_err(|e| {
            let pos = e
                .location()
                .map(|l| Pos { line: l.line() as u32, column: l.column() as u32 })
                .unwrap_or_default();
            ConfigErrors::from(ConfigError::new(
                &sibling,
                pos,
                e.without_snippet().to_string(),
                "a tests file holds `tests:` with a list of cases; `rollcall schema` shows their keys",
            ))
        })?;
        cases.extend(
            file.tests
                .into_iter()
                .map(|t| (sibling.display().to_string(), t)),
        );
    }
    Ok(cases)
}

/// Runs the cases against the compiled pipeline.
pub fn run_cases(pipeline: &Pipeline, cases: &[(String, TestCase)]) -> Vec<CaseResult> {
    cases
        .iter()
        .map(|(file, case)| run_case(pipeline, file, case))
        .collect()
}

fn run_case(pipeline: &Pipeline, file: &str, case: &TestCase) -> CaseResult {
    let mut result = CaseResult {
        name: case.name.value.clone(),
        file: file.to_owned(),
        line: case.name.pos.line,
        differences: Vec::new(),
    };
    let diff = &mut result.differences;
    let client = match (&case.client, pipeline.clients.as_slice()) {
        (Some(name), _) => match pipeline.client(&name.value) {
            Some(c) => c,
            None => {
                diff.push(format!(
                    "line {}: no client named `{}` in the pipeline",
                    name.pos.line, name.value
                ));
                return result;
            }
        },
        (None, [only]) => only,
        (None, _) => {
            diff.push("the pipeline has several clients: say which with `client:`".into());
            return result;
        }
    };
    let people: Vec<Person> = case
        .people
        .iter()
        .enumerate()
        .map(|(i, p)| person(i, p))
        .collect();
    let now = match &case.today {
        None => chrono::Utc::now(),
        Some(day) => match chrono::NaiveDate::parse_from_str(day.value.trim(), "%Y-%m-%d") {
            Ok(d) => d
                .and_hms_opt(12, 0, 0)
                .map(|t| t.and_utc())
                .unwrap_or_else(chrono::Utc::now),
            Err(e) => {
                diff.push(format!(
                    "line {}: today: `{}` is not a date (YYYY-MM-DD): {e}",
                    day.pos.line, day.value
                ));
                return result;
            }
        },
    };
    let desired = match mapping::desired_state(
        &client.name,
        &client.rules,
        &pipeline.templates,
        pipeline.currency,
        None,
        &DirectoryRead::complete(people),
        &crate::mapping::Grace {
            now,
            held: Default::default(),
        },
    ) {
        Ok(d) => d,
        Err(e) => {
            diff.push(format!("the rules failed: {e}"));
            return result;
        }
    };
    let by_product: BTreeMap<&str, &crate::plan::DesiredAddition> = desired
        .additions
        .values()
        .map(|a| (a.product.as_str(), a))
        .collect();
    let known = || {
        pipeline
            .products
            .iter()
            .map(|p| p.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };

    for (product, want) in &case.expect.seats {
        match by_product.get(product.as_str()) {
            Some(a) if a.fields.quantity == want.value => {}
            Some(a) => diff.push(format!(
                "line {}: seats of {product}: expected {}, got {} ({})",
                want.pos.line,
                want.value,
                a.fields.quantity,
                names(a)
            )),
            None => diff.push(format!(
                "line {}: seats of {product}: this client is not billed for `{product}` (products: {})",
                want.pos.line,
                known()
            )),
        }
    }
    for (product, want) in &case.expect.lines {
        let Some(a) = by_product.get(product.as_str()) else {
            diff.push(format!(
                "line {}: line {product}: not billed to this client",
                want.pos.line
            ));
            continue;
        };
        let line = want.pos.line;
        let w = &want.value;
        if let Some(q) = w.quantity
            && q != a.fields.quantity
        {
            diff.push(format!(
                "line {line}: {product} quantity: expected {q}, got {}",
                a.fields.quantity
            ));
        }
        if let Some(p) = w.unit_price
            && p.0 != a.fields.unit_price
        {
            diff.push(format!(
                "line {line}: {product} unit price: expected {}, got {}",
                p.0, a.fields.unit_price
            ));
        }
        if let Some(d) = &w.description
            && d != &a.fields.invoice_description
        {
            diff.push(format!(
                "line {line}: {product} description:\n      expected: {d}\n      got:      {}",
                a.fields.invoice_description
            ));
        }
        if let Some(want_names) = &w.names {
            let want: BTreeSet<&str> = want_names.iter().map(String::as_str).collect();
            let got: BTreeSet<&str> = a.people.iter().map(|h| &*h.name).collect();
            set_diff(diff, &format!("line {line}: {product} people"), &want, &got);
        }
    }
    if let Some(want) = &case.expect.contacts {
        let want: BTreeSet<String> = want.iter().map(|k| k.to_lowercase()).collect();
        let got: BTreeSet<String> = desired
            .contacts
            .iter()
            .flatten()
            .map(|(k, _)| k.0.clone())
            .collect();
        let want: BTreeSet<&str> = want.iter().map(String::as_str).collect();
        let got: BTreeSet<&str> = got.iter().map(String::as_str).collect();
        set_diff(diff, "contacts", &want, &got);
    }
    if let Some(want) = &case.expect.excluded {
        let got: BTreeMap<&str, &str> = desired
            .excluded
            .iter()
            .map(|e| (e.name.as_str(), e.rule.as_str()))
            .collect();
        let want: BTreeMap<&str, &str> =
            want.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        if got != want {
            diff.push(format!("excluded: expected {want:?}, got {got:?}"));
        }
    }
    result
}

fn names(a: &crate::plan::DesiredAddition) -> String {
    if a.people.is_empty() {
        "nobody".into()
    } else {
        a.people
            .iter()
            .map(|h| &*h.name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn set_diff(diff: &mut Vec<String>, what: &str, want: &BTreeSet<&str>, got: &BTreeSet<&str>) {
    let missing: Vec<&str> = want.difference(got).copied().collect();
    let extra: Vec<&str> = got.difference(want).copied().collect();
    if !missing.is_empty() || !extra.is_empty() {
        let mut parts = Vec::new();
        if !missing.is_empty() {
            parts.push(format!("missing {}", missing.join(", ")));
        }
        if !extra.is_empty() {
            parts.push(format!("unexpected {}", extra.join(", ")));
        }
        diff.push(format!("{what}: {}", parts.join("; ")));
    }
}

fn person(i: usize, p: &TestPerson) -> Person {
    Person {
        id: p.id.clone().unwrap_or_else(|| format!("test-{i}")),
        username: p.username.clone(),
        given_name: p.given_name.clone(),
        surname: p.surname.clone(),
        display_name: p.display_name.clone(),
        email: p.email.clone(),
        upn: p.upn.clone(),
        enabled: p.enabled.unwrap_or(true),
        groups: p.groups.clone(),
        licenses: p
            .licenses
            .iter()
            .map(|l| match l.split_once('=') {
                Some((sku, name)) => License {
                    sku: sku.trim().into(),
                    name: name.trim().into(),
                },
                None => License {
                    sku: l.trim().into(),
                    name: String::new(),
                },
            })
            .collect(),
        attributes: p
            .attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect(),
    }
}

/// The report of a test run, as printed.
pub fn report(results: &[CaseResult]) -> String {
    let mut out = String::new();
    for r in results {
        if r.differences.is_empty() {
            out.push_str(&format!("PASS  {}\n", r.name));
        } else {
            out.push_str(&format!("FAIL  {}  ({}:{})\n", r.name, r.file, r.line));
            for d in &r.differences {
                out.push_str(&format!("  - {d}\n"));
            }
        }
    }
    let failed = results.iter().filter(|r| !r.differences.is_empty()).count();
    out.push_str(&format!(
        "\n{} case(s), {} passed, {failed} failed\n",
        results.len(),
        results.len() - failed
    ));
    out
}
