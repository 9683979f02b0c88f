//! A table of broken pipelines and the message each gets: where (file:line:col), what, and a hint.

use std::path::Path;

use rollcall::config;

/// A valid pipeline; each case below breaks one thing in it.
const BASE: &str = r#"name: test-msp
target:
  connectwise:
    url: http://127.0.0.1:9/v4_6_release/apis/3.0
    company_id: demo
    public_key: ${ROLLCALL_TEST_PUBLIC:-pub}
    private_key: ${ROLLCALL_TEST_PRIVATE:-priv}
    client_id: cid
products:
  - id: m365
    identifier: M365-BP
    unit_price: 22.00
    seats: "'M365 Users' in groups"
  - id: helpdesk
    identifier: HELPDESK
    unit_price: 35
defaults:
  counted: enabled
clients:
  - name: Acme
    directory: { file: { path: acme.csv } }
    company: ACME
    agreement: Managed Services
"#;

struct Case {
    name: &'static str,
    from: &'static str,
    to: &'static str,
    /// Every one of these must appear in the error text.
    expect: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        name: "a schedule that is not a cron expression",
        from: "defaults:",
        to: "schedule:\n  cron: every morning\ndefaults:",
        expect: &["p.yaml:18:9", "not a cron expression", "hint:"],
    },
    Case {
        name: "bill_to on a PSA target",
        from: "    agreement: Managed Services\n",
        to: "    agreement: Managed Services\n    bill_to: Acme Group\n",
        expect: &["p.yaml:24:14", "only accounting targets", "hint:"],
    },
    Case {
        name: "a site without bill_to",
        from: "    agreement: Managed Services\n",
        to: "    agreement: Managed Services\n    site: Branch\n",
        expect: &["p.yaml:24:11", "`site` but no `bill_to`", "hint:"],
    },
    Case {
        name: "an invoice reference without the period",
        from: "defaults:",
        to: "invoice:\n  reference: \"rollcall {{customer}}\"\ndefaults:",
        expect: &["p.yaml:18:14", "{{period}}", "hint:"],
    },
    Case {
        name: "an unknown invoice date rule",
        from: "defaults:",
        to: "invoice:\n  date: middle\ndefaults:",
        expect: &["p.yaml:18:9", "middle", "first_day"],
    },
    Case {
        name: "unknown top-level key",
        from: "defaults:",
        to: "defaultz:",
        expect: &["p.yaml:17:1", "unknown field `defaultz`", "hint:"],
    },
    Case {
        name: "unknown key in a product",
        from: "    unit_price: 35\n",
        to: "    unit_price: 35\n    colour: red\n",
        expect: &["p.yaml:17:5", "unknown field `colour`"],
    },
    Case {
        name: "unknown key in the target",
        from: "    client_id: cid",
        to: "    client_id: cid\n    site: x",
        expect: &["p.yaml:9:5", "unknown field `site`"],
    },
    Case {
        name: "unknown target kind",
        from: "  connectwise:",
        to: "  syncro:",
        expect: &["p.yaml:3:", "syncro", "connectwise"],
    },
    Case {
        name: "unknown directory kind",
        from: "{ file: {",
        to: "{ ftp: {",
        expect: &["p.yaml:21:", "ftp", "file"],
    },
    Case {
        name: "missing required key",
        from: "    company: ACME\n",
        to: "",
        expect: &[
            "p.yaml:",
            "missing field `company`",
            "hint: add `company:` here",
        ],
    },
    Case {
        name: "wrong type for a price",
        from: "unit_price: 35",
        to: "unit_price: [35]",
        expect: &["p.yaml:16:17", "unit_price"],
    },
    Case {
        name: "price that is not a number",
        from: "unit_price: 35",
        to: "unit_price: thirty",
        expect: &["p.yaml:16:", "\"thirty\"", "Decimal"],
    },
    Case {
        name: "negative price",
        from: "unit_price: 35",
        to: "unit_price: -35",
        expect: &["p.yaml:16:17", "negative unit_price"],
    },
    Case {
        name: "bad CEL syntax",
        from: "counted: enabled",
        to: "counted: \"enabled &&\"",
        expect: &[
            "p.yaml:18:12",
            "bad CEL expression",
            "hint: predicates are CEL",
        ],
    },
    Case {
        name: "unknown CEL variable",
        from: "'M365 Users' in groups",
        to: "'M365 Users' in grups",
        expect: &["p.yaml:13:12", "unknown variable `grups`"],
    },
    Case {
        name: "CEL that is not a boolean",
        from: "counted: enabled",
        to: "counted: \"given_name\"",
        expect: &["p.yaml:18:12", "not true or false"],
    },
    Case {
        name: "bad template syntax",
        from: "    unit_price: 35\n",
        to: "    unit_price: 35\n    description: \"{{#each people}}{{name}}\"\n",
        expect: &["p.yaml:17:18", "bad description template"],
    },
    Case {
        name: "template with an unknown field",
        from: "  counted: enabled\n",
        to: "  counted: enabled\n  contacts:\n    first_name: \"{{givn_name}}\"\n",
        expect: &["p.yaml:20:17", "givn_name", "hint: contact templates"],
    },
    Case {
        name: "unknown product in overrides",
        from: "    agreement: Managed Services\n",
        to: "    agreement: Managed Services\n    overrides:\n      prices: { m356: 20 }\n",
        expect: &[
            "p.yaml:25:",
            "unknown product `m356`",
            "known products: helpdesk, m365",
        ],
    },
    Case {
        name: "unknown product in a product list",
        from: "  counted: enabled\n",
        to: "  counted: enabled\n  products: [m365, sec]\n",
        expect: &["p.yaml:19:20", "unknown product `sec`"],
    },
    Case {
        name: "duplicate client",
        from: "    agreement: Managed Services\n",
        to: "    agreement: Managed Services\n  - name: ACME\n    directory: { file: { path: b.csv } }\n    company: ACME2\n",
        expect: &["p.yaml:24:11", "client `ACME` appears twice"],
    },
    Case {
        name: "duplicate product id",
        from: "  - id: helpdesk",
        to: "  - id: m365",
        expect: &["p.yaml:14:9", "product `m365` is defined twice"],
    },
    Case {
        name: "duplicate YAML key",
        from: "    company_id: demo\n",
        to: "    company_id: demo\n    company_id: other\n",
        expect: &["p.yaml:6:", "duplicate"],
    },
    Case {
        name: "literal secret",
        from: "${ROLLCALL_TEST_PRIVATE:-priv}",
        to: "hunter2",
        expect: &["p.yaml:7:18", "must be a reference", "${ENV_VAR}"],
    },
    Case {
        name: "unset secret variable",
        from: "${ROLLCALL_TEST_PRIVATE:-priv}",
        to: "${ROLLCALL_TEST_SURELY_UNSET}",
        expect: &["p.yaml:7:18", "ROLLCALL_TEST_SURELY_UNSET is not set"],
    },
    Case {
        name: "guard above 100%",
        from: "  counted: enabled\n",
        to: "  counted: enabled\n  guard: { max_seat_drop_percent: 150 }\n",
        expect: &["p.yaml:19:", "above 100"],
    },
    Case {
        name: "no clients",
        from: "clients:\n  - name: Acme\n    directory: { file: { path: acme.csv } }\n    company: ACME\n    agreement: Managed Services\n",
        to: "clients: []\n",
        expect: &["p.yaml:1:7", "no clients"],
    },
    Case {
        name: "bad currency",
        from: "name: test-msp\n",
        to: "name: test-msp\ncurrency: DOGE\n",
        expect: &["p.yaml:2:11", "DOGE"],
    },
    Case {
        name: "tab-indented YAML",
        from: "    company_id: demo",
        to: "\tcompany_id: demo",
        expect: &["p.yaml:", "tab"],
    },
    Case {
        name: "a price and a cost",
        from: "unit_price: 35",
        to: "unit_price: 35\n    unit_cost: 30",
        expect: &[
            "p.yaml:16:17",
            "both unit_price and unit_cost",
            "hint: give either",
        ],
    },
    Case {
        name: "no price at all",
        from: "    unit_price: 35\n",
        to: "",
        expect: &[
            "p.yaml:14:9",
            "product `helpdesk` has no price",
            "markup_percent",
        ],
    },
    Case {
        name: "counting licences without naming any",
        from: "    unit_price: 35\n",
        to: "    unit_price: 35\n    count: licenses\n",
        expect: &["p.yaml:14:9", "counts licenses but names none"],
    },
    Case {
        name: "licences listed but people counted",
        from: "    unit_price: 35\n",
        to: "    unit_price: 35\n    licenses: [SPB]\n",
        expect: &[
            "p.yaml:17:16",
            "lists licenses but counts people",
            "count: licenses",
        ],
    },
    Case {
        name: "an LDAP base DN split by YAML at its commas",
        from: "    directory: { file: { path: acme.csv } }\n",
        to: "    directory:\n      ldap:\n        url: ldaps://dc1.acme.local\n        bind_dn: svc@acme.local\n        password: ${ROLLCALL_TEST_LDAP:-x}\n        base_dns: [OU=Staff,DC=acme,DC=local]\n",
        expect: &[
            "p.yaml:26:",
            "read as 3 separate ones",
            "[\"OU=Staff,DC=acme,DC=local\"]",
        ],
    },
    Case {
        name: "unknown counting mode",
        from: "    unit_price: 35\n",
        to: "    unit_price: 35\n    count: devices\n",
        expect: &["p.yaml:17:", "devices", "licenses"],
    },
];

#[test]
fn every_broken_pipeline_gets_a_positioned_message_with_a_hint() {
    let mut failures = Vec::new();
    for case in CASES {
        assert!(
            BASE.contains(case.from),
            "case `{}`: its `from` text is not in BASE",
            case.name
        );
        let yaml = BASE.replacen(case.from, case.to, 1);
        let text = match config::load_str(&yaml, Path::new("p.yaml")) {
            Ok(_) => format!("(no error for case `{}`)", case.name),
            Err(e) => e.to_string(),
        };
        let missing: Vec<&&str> = case.expect.iter().filter(|x| !text.contains(**x)).collect();
        if !missing.is_empty() {
            failures.push(format!("── {}: missing {missing:?} in:\n{text}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn the_base_pipeline_is_valid() {
    let p = config::load_str(BASE, Path::new("p.yaml")).expect("valid");
    assert_eq!(p.clients.len(), 1);
    assert_eq!(p.products.len(), 2);
}

#[test]
fn all_problems_are_reported_at_once() {
    let yaml = BASE
        .replace("counted: enabled", "counted: \"enabled &&\"")
        .replace("unit_price: 35", "unit_price: -1");
    let e = config::load_str(&yaml, Path::new("p.yaml")).expect_err("two errors");
    assert_eq!(e.0.len(), 2, "{e}");
}

#[test]
fn every_example_pipeline_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("mappings/examples") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml")
            && !path.to_string_lossy().ends_with(".tests.yaml")
        {
            config::load(&path).unwrap_or_else(|e| panic!("{}:\n{e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 1, "no example pipelines found in {}", dir.display());
}

#[test]
fn the_committed_schema_matches_the_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/rollcall.schema.json");
    let generated = serde_json::to_string_pretty(&config::schema()).expect("schema") + "\n";
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "mappings/rollcall.schema.json is out of date: run `cargo run -- schema > mappings/rollcall.schema.json`"
    );
}

#[test]
fn the_committed_reference_matches_the_schema() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reference.md");
    let generated = config::reference::markdown(&config::schema());
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/reference.md is out of date: run `cargo run -- schema --format markdown > docs/reference.md`"
    );
}

#[test]
fn a_secret_written_into_the_pipeline_is_never_echoed() {
    for (value, expect) in [
        ("SuperSecretKey123", "must be a reference"),
        ("12345", "must be a reference"),
    ] {
        let yaml = BASE.replace("${ROLLCALL_TEST_PRIVATE:-priv}", value);
        let text = config::load_str(&yaml, Path::new("p.yaml"))
            .expect_err("refused")
            .to_string();
        assert!(text.contains("p.yaml:7:"), "{text}");
        assert!(text.contains(expect), "{text}");
        assert!(!text.contains(value), "the value leaked: {text}");
    }
}
