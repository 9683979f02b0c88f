//! Pipeline files: the YAML an ops engineer writes, read into typed Rust once.
//!
//! Reading happens in two steps, as ripgrep does with its flags: the raw types below mirror the
//! YAML exactly (serde with `deny_unknown_fields`, a JSON Schema derived from the same types),
//! then [`compile`] checks what serde cannot — CEL predicates, handlebars templates, product
//! references, duplicate clients — and produces the [`Pipeline`] the engine runs. Nothing past
//! this module sees the raw form, and every problem found is reported with FILE:LINE:COLUMN
//! and a hint, all of them at once.

pub mod approval;
mod at;
pub mod bounds;
pub mod connectors;
mod error;
#[cfg(test)]
mod fuzz;
pub mod invoice;
pub mod named_groups;
pub mod notify;
pub mod reference;
pub mod variables;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rollcall_core::{BillingAccount, Currency};
use rust_decimal::Decimal;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};

pub use at::{At, Pos};
pub use connectors::{DirectorySource, TargetConfig};
pub use error::{ConfigError, ConfigErrors};
pub use invoice::{InvoicePolicy, Invoicing};

use crate::mapping::{self, ContactTemplates, Predicate, Rules, TemplateSet};

/// A rollcall pipeline: where an MSP's clients' people come from, which of them are billed for
/// which product, and the billing system that holds the bill.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "rollcall pipeline")]
pub struct RawPipeline {
    /// Names the pipeline in history, plans, reports and logs.
    pub name: At<String>,
    /// The currency prices are written in; every amount is rounded once, at its minor unit.
    #[serde(default = "defaults::currency")]
    pub currency: Currency,
    /// The billing system clients are billed in.
    pub target: TargetConfig,
    /// The products rollcall bills, each with the rule that decides who takes a seat.
    pub products: Vec<RawProduct>,
    /// Rules every client follows unless its `overrides` say otherwise.
    #[serde(default)]
    pub defaults: Policy,
    /// The MSP's clients: each one's directory and where it is billed.
    pub clients: Vec<RawClient>,
    /// When `rollcall serve` resyncs every client of this pipeline on its own, besides the
    /// resyncs notifications ask for.
    #[serde(default)]
    pub schedule: Option<SchedulePolicy>,
    /// How accounting targets (those that bill by invoice) invoice: period, dates, reference. Ignored by
    /// PSA targets, whose agreements bill themselves.
    #[serde(default)]
    pub invoice: Option<InvoicePolicy>,
    /// Which plans wait for a person's approval besides those a guard refuses
    /// (docs/approvals.md).
    #[serde(default)]
    pub policy: approval::RawPolicy,
    /// Whom rollcall tells about refusals, failures, lost connections and approvals
    /// (docs/approvals.md).
    #[serde(default)]
    pub notify: notify::RawNotify,
    /// Test cases for the rules: people in, expected seats, contacts and lines out. Run them
    /// with `rollcall test FILE`; more can live in a sibling `NAME.tests.yaml`.
    #[serde(default)]
    pub tests: Vec<crate::pipeline_tests::TestCase>,
}

/// A pipeline's schedule.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SchedulePolicy {
    /// A cron expression with seconds first: `sec min hour day-of-month month day-of-week
    /// [year]`, e.g. `0 0 6 * * Mon-Fri` for 06:00 on weekdays, in `timezone`.
    pub cron: At<String>,
    /// The IANA time zone the cron expression is read in (e.g. `Europe/London`, which
    /// follows daylight saving time). Default: `UTC`.
    #[serde(default)]
    pub timezone: Option<At<String>>,
}

/// A pipeline's schedule, checked: when every client is queued for a sync.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The cron expression, known to parse.
    pub cron: String,
    pub timezone: chrono_tz::Tz,
}

/// A billable product.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Product")]
pub struct RawProduct {
    /// The name rules and overrides use for this product (e.g. `m365-bp`).
    pub id: At<String>,
    /// The product's identifier in the billing system's catalogue (e.g. `M365-BP`).
    pub identifier: At<String>,
    /// The product's name on invoices (`{{product}}` in descriptions). Default: `identifier`.
    #[serde(default)]
    pub name: Option<String>,
    /// Price per seat per billing period, in the pipeline's currency (e.g. `22.50`). Give
    /// either this or `unit_cost` (with `markup_percent`).
    #[serde(default)]
    pub unit_price: Option<At<Price>>,
    /// What a seat costs the MSP; the price is `unit_cost × (1 + markup_percent / 100)`,
    /// rounded once to the currency's minor unit, half away from zero.
    #[serde(default)]
    pub unit_cost: Option<At<Price>>,
    /// Markup over `unit_cost`, in percent (e.g. `15` or `12.5`). Default: 0.
    #[serde(default)]
    pub markup_percent: Option<At<Price>>,
    /// What one seat is: `people` (default: each person who matches `seats` takes one),
    /// `licenses` (each assigned licence whose SKU is in `licenses` is one seat) or
    /// `purchased` (each licence of those SKUs the tenant bought, assigned or not; needs a
    /// directory that knows purchases, such as a cloud tenant's).
    #[serde(default)]
    pub count: Counting,
    /// SKU part numbers counted when `count: licenses` (e.g. `[SPB, O365_BUSINESS_PREMIUM]`).
    #[serde(default)]
    pub licenses: Vec<At<String>>,
    /// CEL predicate over a person: who takes a seat of this product. Only people the client
    /// counts (`counted`) are considered. Default: `true` (every counted person).
    /// Example: `'M365 Users' in groups`.
    #[serde(default)]
    pub seats: Option<At<String>>,
    /// Handlebars template of the invoice line's text, over `product` (the name), `identifier`,
    /// `quantity`, `unit_price`, `names` (the people billed, comma-separated) and `people`.
    /// Text longer than the billing system takes is cut after the last whole name.
    /// Default: `{{quantity}} × {{product}}: {{names}}`.
    #[serde(default)]
    pub description: Option<At<String>>,
}

/// What one seat of a product is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Counting {
    #[default]
    People,
    /// Each assigned licence of `licenses` held by a person who matches `seats`.
    Licenses,
    /// The licences of `licenses` the tenant bought (as its directory reports them), assigned
    /// or not.
    Purchased,
}

/// One of the MSP's clients.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Client")]
pub struct RawClient {
    /// Names the client in plans and history; unique within the pipeline.
    pub name: At<String>,
    /// Where the client's people come from.
    pub directory: DirectorySource,
    /// The client's company (or customer) identifier in the billing system (e.g. `ACME`).
    pub company: String,
    /// The agreement that carries the seats (PSA targets, e.g. `Managed Services`).
    #[serde(default)]
    pub agreement: Option<String>,
    /// Accounting targets: the parent customer this client is invoiced to, together with its
    /// sister sites (one consolidated invoice per period, each site's lines labelled). Default:
    /// the client's own `company`.
    #[serde(default)]
    pub bill_to: Option<At<String>>,
    /// Accounting targets with `bill_to`: the label of this client's lines on the shared
    /// invoice. Default: the client's name.
    #[serde(default)]
    pub site: Option<At<String>>,
    /// Accounting targets: the billing email a customer created by rollcall gets.
    #[serde(default)]
    pub email: Option<At<String>>,
    /// Rules that differ for this client; anything left out comes from `defaults`.
    #[serde(default)]
    pub overrides: Policy,
}

/// Billing rules, set in `defaults` and overridden per client.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// CEL predicate over a person: who the client is billed for at all (becomes a contact,
    /// may take seats). Default: `enabled`.
    #[serde(default)]
    pub counted: Option<At<String>>,
    /// Which products this client is billed for, by product id. Default: every product.
    #[serde(default)]
    pub products: Option<Vec<At<String>>>,
    /// Per-product seat rules (CEL) replacing the product's own `seats`.
    #[serde(default)]
    pub seats: BTreeMap<String, At<String>>,
    /// Per-product prices replacing the product's `unit_price`.
    #[serde(default)]
    pub prices: BTreeMap<String, At<Price>>,
    /// How people become contacts in the billing system.
    #[serde(default)]
    pub contacts: Option<ContactPolicy>,
    /// Limits that stop a run before it removes too much.
    #[serde(default)]
    pub guard: Option<GuardPolicy>,
    /// Seats the contract already includes, per product: they are not billed
    /// (billed = max(seats − included, minimum)).
    #[serde(default)]
    pub included: BTreeMap<String, At<u32>>,
    /// The least quantity billed per product, whatever the count (e.g. a 5-seat minimum).
    #[serde(default)]
    pub minimum: BTreeMap<String, At<u32>>,
    /// People never billed, by named CEL rule, checked before `counted`; e.g.
    /// `{ name: kiosks, when: "'Kiosks' in groups" }`. Client rules add to the defaults'.
    #[serde(default)]
    pub exclude: Vec<ExclusionRule>,
    /// Apply the built-in exclusions (service and machine accounts, shared mailboxes, rooms
    /// and equipment, test users). Default: true.
    #[serde(default)]
    pub exclude_builtin: Option<bool>,
    /// A person who stops matching a seat rule (disabled, unlicensed) keeps the seat this
    /// many days after they last matched, so a weekend lock-out does not churn the bill.
    /// Default: 0 (no grace).
    #[serde(default)]
    pub grace_days: Option<At<u32>>,
    /// Let rollcall manage contacts and additions it did not make (e.g. the ones an MSP kept
    /// by hand before rollcall). Without it rollcall changes only what it made, and reports
    /// the rest where it is in the way. Default: false.
    #[serde(default)]
    pub adopt: Option<bool>,
    /// Clients that name the same group here bill each person once: the first of them in the
    /// file that bills a person keeps them; the later ones leave them out ("counted under …").
    /// For sister companies or sites whose directories overlap. Matched by person id or email.
    #[serde(default)]
    pub count_once_in: Option<String>,
    /// The person's attribute holding the date they start counting (e.g. `employeeHireDate`,
    /// `whenCreated`): before that date a new person is not billed yet. ISO 8601 dates and
    /// AD's generalized time are read. A person without the attribute counts at once.
    #[serde(default)]
    pub count_from: Option<String>,
    /// Shadow mode: plan and report every run, never write. For a new pipeline until its
    /// plans have been reviewed. Default: false.
    #[serde(default)]
    pub shadow: Option<bool>,
}

/// A named rule for people who are never billed.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExclusionRule {
    /// Why these people are excluded, as the run report says it (e.g. `service accounts`).
    pub name: String,
    /// CEL predicate over a person; true means excluded.
    pub when: At<String>,
}

/// How counted people become contacts. Each field is a handlebars template over the person
/// (`{{given_name}}`, `{{surname}}`, `{{display_name}}`, `{{email}}`, `{{upn}}`,
/// `{{username}}`, `{{attributes.title}}` …). A field that renders empty is left unset.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactPolicy {
    /// Keep contacts in step with the directory (create, update, deactivate). Default: true.
    #[serde(default)]
    pub manage: Option<bool>,
    /// Default: `{{given_name}}`.
    #[serde(default)]
    pub first_name: Option<At<String>>,
    /// Default: `{{surname}}`.
    #[serde(default)]
    pub last_name: Option<At<String>>,
    /// Default: `{{email}}`.
    #[serde(default)]
    pub email: Option<At<String>>,
    /// Not managed unless set (e.g. `{{attributes.title}}`).
    #[serde(default)]
    pub title: Option<At<String>>,
    /// Not managed unless set.
    #[serde(default)]
    pub phone: Option<At<String>>,
}

/// Guards stand between a plan and the billing system.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GuardPolicy {
    /// Refuse a plan that removes more than this share of a client's seats, in percent
    /// (0–100). Removing every seat is always refused. Default: 50. `--allow-drop` overrides.
    #[serde(default)]
    pub max_seat_drop_percent: Option<At<u32>>,
    /// Refuse a plan that removes more than this many seats (or deactivates more than this many
    /// contacts) at once, as a count of people. Checked besides `max_seat_drop_percent`, so a
    /// large client cannot lose hundreds of seats while staying under the share. Default: no
    /// count limit. `--allow-drop` overrides.
    #[serde(default)]
    pub max_seat_drop: Option<At<u32>>,
}

/// A price: an exact decimal, written as a number (`22.50`) or a string (`"22.50"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price(pub Decimal);

impl<'de> Deserialize<'de> for Price {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Read as text so `12.50` never passes through a float (a float cannot hold most cents exactly).
        rust_decimal::serde::str::deserialize(deserializer).map(Price)
    }
}

impl JsonSchema for Price {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Price".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "An exact decimal amount, e.g. 22.50",
            "anyOf": [
                { "type": "number", "minimum": 0 },
                { "type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$" }
            ]
        })
    }
}

/// Built-in defaults, in one place.
pub(crate) mod defaults {
    use super::*;

    pub fn currency() -> Currency {
        Currency::Usd
    }
    pub const COUNTED: &str = "enabled";
    pub const SEATS: &str = "true";
    pub const DESCRIPTION: &str = "{{quantity}} × {{product}}: {{names}}";
    pub const FIRST_NAME: &str = "{{given_name}}";
    pub const LAST_NAME: &str = "{{surname}}";
    pub const EMAIL: &str = "{{email}}";
    pub const MAX_SEAT_DROP_PERCENT: u32 = 50;
    /// People an MSP never bills per user, recognised the way directories mark them.
    pub const EXCLUSIONS: &[(&str, &str)] = &[
        (
            "service accounts",
            "'Service Accounts' in groups || username.matches('^(?i)(svc|srv|service)[-_.]') || username.endsWith('$')",
        ),
        (
            "shared mailboxes, rooms and equipment",
            "'msExchRecipientTypeDetails' in attributes && attributes.msExchRecipientTypeDetails in ['4', '16', '32', '8589934592']",
        ),
        (
            "test users",
            "display_name.matches('^(?i)test[ _-]') || username.matches('^(?i)test[-_.]')",
        ),
    ];
}

/// What a product contributes to every client's rules.
#[derive(Debug)]
struct ProductRule {
    seats: Option<Predicate>,
    unit_price: Decimal,
    counting: mapping::Counting,
    /// Template name of the invoice line text.
    description: String,
    name: String,
}

/// A pipeline ready to run: predicates and templates compiled, overrides merged.
#[derive(Debug)]
pub struct Pipeline {
    pub name: String,
    pub file: PathBuf,
    pub currency: Currency,
    /// How accounting targets invoice.
    pub invoicing: Invoicing,
    /// The day the run bills for (`--period`); `None` is the day the run plans.
    pub bill_day: Option<chrono::NaiveDate>,
    /// The moment the run plans as of; `None` is the clock's. The CLI never sets it: tests do,
    /// to plan on the days a scenario needs.
    pub as_of: Option<chrono::DateTime<chrono::Utc>>,
    /// When workers queue every client for a sync on their own.
    pub schedule: Option<Schedule>,
    pub target: TargetConfig,
    pub products: Vec<Product>,
    pub clients: Vec<Client>,
    pub templates: TemplateSet,
    /// Which plans wait for a person (`policy:`).
    pub approval: approval::ApprovalPolicy,
    /// Whom rollcall tells (`notify:`).
    pub notify: notify::Notify,
}

/// A product as the engine uses it.
#[derive(Debug, Clone)]
pub struct Product {
    pub id: String,
    pub identifier: String,
}

/// A client as the engine uses it.
#[derive(Debug)]
pub struct Client {
    pub name: String,
    pub directory: DirectorySource,
    pub account: BillingAccount,
    pub rules: Rules,
    pub max_seat_drop_percent: u32,
    /// Seats (people) a plan may remove at once; `None` for no count limit.
    pub max_seat_drop: Option<u32>,
    /// Plans and reports, never writes.
    pub shadow: bool,
    /// Manages what it finds, made by rollcall or not.
    pub adopt: bool,
    /// The group of sister clients that bill each person once.
    pub count_once_in: Option<String>,
    /// Accounting targets: the parent customer sites are invoiced to together, this site's
    /// label on that invoice, and the email of a customer rollcall creates.
    pub bill_to: Option<String>,
    pub site: Option<String>,
    pub email: Option<String>,
}

impl Client {
    /// The customer the client's invoice goes to: its `bill_to` parent, or its own company.
    pub fn invoiced_customer(&self) -> &str {
        self.bill_to.as_deref().unwrap_or(&self.account.company)
    }

    /// What a sync of this client writes that no other sync may write at the same moment: the
    /// client's own records, or — for sites invoiced together — their parent's invoice, which
    /// every sister site's sync rewrites. Workers hold one lease per scope, so sister sites are
    /// applied one after another even on different machines: an accounting target's invoice
    /// may carry no concurrency token that would catch two writers otherwise.
    pub fn write_scope(&self) -> String {
        match &self.bill_to {
            Some(parent) => format!("invoice of {}", parent.trim().to_lowercase()),
            None => format!("client {}", self.name),
        }
    }
}

impl Pipeline {
    /// The zone the pipeline's days are counted in: its schedule's, else UTC. A billing
    /// period's days, and the day a seat was taken or given up, are days here.
    pub fn zone(&self) -> chrono_tz::Tz {
        self.schedule
            .as_ref()
            .map_or(chrono_tz::Tz::UTC, |s| s.timezone)
    }

    /// The moment a run plans as of: [`Pipeline::as_of`], else now.
    pub fn planned_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.as_of.unwrap_or_else(chrono::Utc::now)
    }

    /// The folder the pipeline file lives in; relative paths in it are resolved from here.
    pub fn dir(&self) -> &Path {
        self.file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    }

    pub fn client(&self, name: &str) -> Option<&Client> {
        self.clients
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }
}

/// Reads and compiles a pipeline file.
pub fn load(path: &Path) -> Result<Pipeline, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            path,
            Pos::default(),
            format!("cannot read the pipeline: {e}"),
            "check the path",
        )
    })?;
    load_str(&text, path)
}

/// Compiles a pipeline from text; `path` names it in errors and anchors relative paths.
/// Every mistake is reported at once: the shape's and, when the shape could be read past its
/// mistakes, the rules'.
pub fn load_str(text: &str, path: &Path) -> Result<Pipeline, ConfigErrors> {
    let (raw, mut errors) = parse_collecting(text, path);
    let Some(raw) = raw else {
        return Err(ConfigErrors::settle(errors));
    };
    match compile(raw, path) {
        Ok(pipeline) if errors.is_empty() => Ok(pipeline),
        Ok(_) => Err(ConfigErrors::settle(errors)),
        Err(more) => {
            errors.extend(more.0.into_iter().map(|e| e.with_source(text)));
            Err(ConfigErrors::settle(errors))
        }
    }
}

/// Step one: YAML into the raw types, with serde's position on failure.
pub fn parse(text: &str, path: &Path) -> Result<RawPipeline, ConfigErrors> {
    match parse_collecting(text, path) {
        (Some(raw), errors) if errors.is_empty() => Ok(raw),
        (_, errors) => Err(ConfigErrors::settle(errors)),
    }
}

/// Parses, stepping over each mistake that can be stepped over (a misspelled key, an unset
/// variable) to find the next: the raw pipeline as if those were fixed, and every mistake.
fn parse_collecting(text: &str, path: &Path) -> (Option<RawPipeline>, Vec<ConfigError>) {
    // Enough for any file a person wrote by hand; a bound so a pathological one ends.
    const MOST: usize = 100;
    let mut errors: Vec<ConfigError> = Vec::new();
    let mut working = std::borrow::Cow::Borrowed(text);
    for _ in 0..MOST {
        let e = match serde_saphyr::from_str::<RawPipeline>(&working) {
            Ok(raw) => return (Some(raw), errors),
            Err(e) => parse_error(&e, text, path),
        };
        // A required key "missing" where a misspelling of it was just stepped over is the
        // same mistake.
        let echo = error::quoted_after(&e.message, "missing field").is_some_and(|field| {
            errors.iter().any(|prior| {
                error::quoted_after(&prior.message, "unknown field")
                    .is_some_and(|typo| error::distance(typo, field) <= 2)
            })
        });
        let next = error::step_over(&working, &e);
        if !echo {
            errors.push(e);
        }
        match next {
            Some(t) => working = std::borrow::Cow::Owned(t),
            None => break,
        }
    }
    (None, errors)
}

/// One serde error as the user's mistake: where, what, a hint, the line (unless it holds a
/// secret).
fn parse_error(e: &serde_saphyr::Error, text: &str, path: &Path) -> ConfigError {
    {
        let pos = e
            .location()
            .map(|l| Pos {
                line: l.line() as u32,
                column: l.column() as u32,
            })
            .unwrap_or_default();
        let message = strip_location(&e.without_snippet().to_string());
        let hint = error::fitting_hint(text, &message).unwrap_or_else(|| hint_for(&message));
        let error = ConfigError::new(path, pos, message, hint);
        // An error on a secret's line must not print the line, nor a value quoted in the
        // message: a key written in by mistake would end up in CI logs.
        let on_secret = text
            .lines()
            .nth((pos.line as usize).saturating_sub(1))
            .is_some_and(is_secret_line);
        if on_secret {
            ConfigError {
                message: redact_quoted(&error.message),
                ..error
            }
        } else {
            error.with_source(text)
        }
    }
}

/// A line that sets a credential (`private_key: …`, `client_secret: …`, `password: …`).
fn is_secret_line(line: &str) -> bool {
    let key = line
        .trim_start()
        .trim_start_matches("- ")
        .split(':')
        .next()
        .unwrap_or("")
        .trim();
    let key = key.to_ascii_lowercase();
    key.ends_with("_key")
        || key.contains("secret")
        || key.contains("password")
        || key.contains("token")
}

/// Hides what serde quotes in backticks (`12345`), which may be the secret itself.
fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for (i, part) in message.split('`').enumerate() {
        if i % 2 == 1 {
            out.push_str("`…`");
        } else {
            out.push_str(part);
        }
    }
    out
}

/// serde-saphyr appends " at line L column C" to its messages; we print the position first.
fn strip_location(message: &str) -> String {
    let m = message.trim();
    match m.rfind(" at line ") {
        Some(i) if m[i..].contains("column") => m[..i].trim_end_matches(',').to_owned(),
        _ => m.to_owned(),
    }
}

fn hint_for(message: &str) -> String {
    if message.contains("unknown field") {
        "remove or rename the key; `rollcall schema` lists every key (mappings/rollcall.schema.json gives editors autocompletion)".into()
    } else if message.contains("missing field") {
        "add the key; `rollcall schema` shows what each section needs".into()
    } else if message.contains("unknown variant") {
        "use one of the kinds listed".into()
    } else if message.contains("secret") || message.contains("environment variable") {
        String::new() // the secret resolver's message carries its own hint
    } else if message.contains("invalid type") {
        "check the value's type against `rollcall schema` (quote text that looks like a number)"
            .into()
    } else if message.contains("duplicate") {
        "each key may appear once in a mapping".into()
    } else {
        "see `rollcall schema` for the expected shape".into()
    }
}

/// Step two: everything serde cannot check, and the merge of defaults and overrides.
pub fn compile(raw: RawPipeline, path: &Path) -> Result<Pipeline, ConfigErrors> {
    let mut errors = Vec::new();
    let err = |errors: &mut Vec<ConfigError>, pos: Pos, msg: String, hint: &str| {
        errors.push(ConfigError::new(path, pos, msg, hint));
    };
    let mut templates = TemplateSet::new();

    if raw.name.value.trim().is_empty() {
        err(
            &mut errors,
            raw.name.pos,
            "the pipeline's name is empty".into(),
            "give it a short name, e.g. `acme-msp`",
        );
    }

    // Products: ids unique, identifiers unique, prices non-negative, rules compiled.
    let mut products = Vec::new();
    let mut product_rules: BTreeMap<String, ProductRule> = BTreeMap::new();
    let mut seen_identifiers = BTreeSet::new();
    for p in &raw.products {
        let id = p.id.value.trim().to_owned();
        if id.is_empty() {
            err(
                &mut errors,
                p.id.pos,
                "a product's id is empty".into(),
                "use a short name such as `m365-bp`",
            );
            continue;
        }
        if product_rules.contains_key(&id) {
            err(
                &mut errors,
                p.id.pos,
                format!("product `{id}` is defined twice"),
                "product ids must be unique; rename or merge one",
            );
            continue;
        }
        if !seen_identifiers.insert(p.identifier.value.to_lowercase()) {
            err(
                &mut errors,
                p.identifier.pos,
                format!(
                    "catalogue identifier `{}` is used by two products",
                    p.identifier.value
                ),
                "each product bills one catalogue item; two would fight over the same addition",
            );
        }
        let unit_price = product_price(p, &id, path, &mut errors);
        let counting = match (p.count, p.licenses.as_slice()) {
            (Counting::People, []) => mapping::Counting::People,
            (Counting::People, [first, ..]) => {
                err(
                    &mut errors,
                    first.pos,
                    format!("product `{id}` lists licenses but counts people"),
                    "add `count: licenses` to count each assigned licence, or drop the list and test licences in `seats` (`'SPB' in licenses`)",
                );
                mapping::Counting::People
            }
            (Counting::Licenses, []) => {
                err(
                    &mut errors,
                    p.id.pos,
                    format!("product `{id}` counts licenses but names none"),
                    "add `licenses: [SKU, …]` with the SKU part numbers to count (e.g. SPB)",
                );
                mapping::Counting::People
            }
            (Counting::Licenses, skus) => mapping::Counting::Licenses(
                skus.iter().map(|s| s.value.trim().to_owned()).collect(),
            ),
            (Counting::Purchased, []) => {
                err(
                    &mut errors,
                    p.id.pos,
                    format!("product `{id}` counts purchased licences but names none"),
                    "add `licenses: [SKU, …]` with the SKU part numbers to count (e.g. SPB)",
                );
                mapping::Counting::People
            }
            (Counting::Purchased, skus) => mapping::Counting::Purchased(
                skus.iter().map(|s| s.value.trim().to_owned()).collect(),
            ),
        };
        let seats = match &p.seats {
            Some(src) => compile_predicate(src, path, &mut errors),
            None => Predicate::compile(defaults::SEATS).ok(),
        };
        let desc_src = p
            .description
            .as_ref()
            .map(|d| d.value.as_str())
            .unwrap_or(defaults::DESCRIPTION);
        let desc_pos = p.description.as_ref().map(|d| d.pos).unwrap_or(p.id.pos);
        let desc_name = format!("product/{id}/description");
        if let Err(e) = templates.add(&desc_name, desc_src, mapping::TemplateKind::Line) {
            err(
                &mut errors,
                desc_pos,
                format!("product `{id}`: bad description template: {e}"),
                mapping::TEMPLATE_HINT_LINE,
            );
        }
        let identifier = p.identifier.value.trim().to_owned();
        let name = p
            .name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| identifier.clone());
        product_rules.insert(
            id.clone(),
            ProductRule {
                seats,
                unit_price,
                counting,
                description: desc_name,
                name,
            },
        );
        products.push(Product { id, identifier });
    }
    if raw.products.is_empty() {
        err(
            &mut errors,
            raw.name.pos,
            "the pipeline bills no products".into(),
            "add at least one entry under `products:`",
        );
    }

    check_policy_products(&raw.defaults, &product_rules, path, &mut errors);

    let invoicing =
        match Invoicing::from_policy(raw.invoice.as_ref().unwrap_or(&InvoicePolicy::default())) {
            Ok(i) => Some(i),
            Err((message, hint, pos)) => {
                err(&mut errors, pos.unwrap_or(raw.name.pos), message, hint);
                None
            }
        };
    // Whether the target bills by invoice decides which client keys make sense. Settings the
    // target refuses are reported by whoever builds it for real, with the target's own words.
    let invoice_target = raw
        .target
        .build(&rollcall_core::BuildContext::in_memory())
        .is_ok_and(|b| b.billing_model() == rollcall_core::BillingModel::Invoice);

    // Clients: names unique, overrides refer to known products.
    let mut clients = Vec::new();
    let mut names = BTreeSet::new();
    if raw.clients.is_empty() {
        err(
            &mut errors,
            raw.name.pos,
            "the pipeline has no clients".into(),
            "add at least one entry under `clients:`",
        );
    }
    for (index, c) in raw.clients.iter().enumerate() {
        let name = c.name.value.trim().to_owned();
        if name.is_empty() {
            err(
                &mut errors,
                c.name.pos,
                "a client's name is empty".into(),
                "name the client as people call it, e.g. `Acme`",
            );
            continue;
        }
        if !names.insert(name.to_lowercase()) {
            err(
                &mut errors,
                c.name.pos,
                format!("client `{name}` appears twice"),
                "client names must be unique (compared without case); merge the two entries or rename one",
            );
            continue;
        }
        if c.company.trim().is_empty() {
            err(
                &mut errors,
                c.name.pos,
                format!("client `{name}` has an empty company"),
                "set `company:` to the company identifier in the billing system",
            );
        }
        check_policy_products(&c.overrides, &product_rules, path, &mut errors);
        let rules = merge_rules(
            index,
            &name,
            &raw.defaults,
            &c.overrides,
            &products,
            &product_rules,
            &mut templates,
            path,
            &mut errors,
        );
        let guard = |get: fn(&GuardPolicy) -> Option<&At<u32>>| {
            (c.overrides.guard.as_ref().and_then(get))
                .or_else(|| raw.defaults.guard.as_ref().and_then(get))
        };
        let max_drop = guard(|g| g.max_seat_drop_percent.as_ref());
        let max_drop_count = guard(|g| g.max_seat_drop.as_ref());
        let grace = c
            .overrides
            .grace_days
            .as_ref()
            .or(raw.defaults.grace_days.as_ref());
        if let Some(g) = grace
            && g.value > 3650
        {
            err(
                &mut errors,
                g.pos,
                format!("grace_days is {}, more than ten years", g.value),
                "a grace period is for lock-outs and leave: a few days or weeks",
            );
        }
        if let Some(m) = max_drop
            && m.value > 100
        {
            err(
                &mut errors,
                m.pos,
                format!("max_seat_drop_percent is {}, above 100", m.value),
                "write a percentage between 0 and 100",
            );
        }
        let bill_to = c
            .bill_to
            .as_ref()
            .map(|b| b.value.trim())
            .filter(|b| !b.is_empty())
            .map(str::to_owned);
        if let Some(site) = &c.site
            && bill_to.is_none()
        {
            err(
                &mut errors,
                site.pos,
                format!("client `{name}` has a `site` but no `bill_to`"),
                "a site labels a client's lines on an invoice shared with its sister sites: set `bill_to` to the parent customer, or remove `site`",
            );
        }
        if let Some(key) = c.bill_to.as_ref().or(c.email.as_ref())
            && !invoice_target
        {
            err(
                &mut errors,
                key.pos,
                format!(
                    "client `{name}` sets `bill_to` or `email`, which only accounting targets read; `{}` bills through agreements",
                    raw.target.kind()
                ),
                "remove them, or bill this pipeline to an accounting system (a target that bills by invoice)",
            );
        }
        if let Some(rules) = rules {
            clients.push(Client {
                name: name.clone(),
                directory: c.directory.clone(),
                account: BillingAccount {
                    company: c.company.trim().to_owned(),
                    agreement: c.agreement.as_ref().map(|a| a.trim().to_owned()),
                    invoice: None,
                },
                rules,
                max_seat_drop_percent: max_drop
                    .map(|m| m.value)
                    .unwrap_or(defaults::MAX_SEAT_DROP_PERCENT),
                max_seat_drop: max_drop_count.map(|m| m.value),
                shadow: c.overrides.shadow.or(raw.defaults.shadow).unwrap_or(false),
                adopt: c.overrides.adopt.or(raw.defaults.adopt).unwrap_or(false),
                count_once_in: c
                    .overrides
                    .count_once_in
                    .clone()
                    .or_else(|| raw.defaults.count_once_in.clone()),
                bill_to: bill_to.clone(),
                site: bill_to.as_ref().map(|_| {
                    c.site
                        .as_ref()
                        .map(|s| s.value.trim())
                        .filter(|s| !s.is_empty())
                        .unwrap_or(&name)
                        .to_owned()
                }),
                email: c
                    .email
                    .as_ref()
                    .map(|e| e.value.trim())
                    .filter(|e| !e.is_empty())
                    .map(str::to_owned),
            });
        }
    }

    if !errors.is_empty() {
        return Err(ConfigErrors::settle(errors));
    }
    let Some(invoicing) = invoicing else {
        return Err(ConfigErrors(errors));
    };
    let schedule = match &raw.schedule {
        None => None,
        Some(s) => Some(check_schedule(path, s).map_err(|e| ConfigErrors(vec![e]))?),
    };
    let notify_errors = notify::check(path, &raw.notify);
    if !notify_errors.is_empty() {
        return Err(ConfigErrors(notify_errors));
    }
    Ok(Pipeline {
        name: raw.name.value,
        file: path.to_owned(),
        currency: raw.currency,
        invoicing,
        bill_day: None,
        as_of: None,
        schedule,
        target: raw.target,
        products,
        clients,
        templates,
        approval: approval::ApprovalPolicy::from(&raw.policy),
        notify: notify::Notify::from(raw.notify),
    })
}

/// A product's price before rounding: `unit_price`, or `unit_cost` with its markup.
fn product_price(p: &RawProduct, id: &str, path: &Path, errors: &mut Vec<ConfigError>) -> Decimal {
    let negative = |at: &At<Price>, what: &str, errors: &mut Vec<ConfigError>| {
        if at.value.0.is_sign_negative() {
            errors.push(ConfigError::new(
                path,
                at.pos,
                format!("product `{id}` has a negative {what}"),
                "amounts are ≥ 0; credit notes are out of scope",
            ));
        }
    };
    match (&p.unit_price, &p.unit_cost, &p.markup_percent) {
        (Some(price), None, None) => {
            negative(price, "unit_price", errors);
            price.value.0
        }
        (None, Some(cost), markup) => {
            negative(cost, "unit_cost", errors);
            let markup = markup.as_ref().map(|m| {
                negative(m, "markup_percent", errors);
                m.value.0
            });
            let factor = Decimal::ONE + markup.unwrap_or_default() / Decimal::ONE_HUNDRED;
            cost.value.0.checked_mul(factor).unwrap_or_else(|| {
                errors.push(ConfigError::new(
                    path,
                    cost.pos,
                    format!("product `{id}`: unit_cost × markup is too large to compute"),
                    "check the unit_cost and markup_percent",
                ));
                Decimal::ZERO
            })
        }
        (Some(price), Some(_), _) | (Some(price), None, Some(_)) => {
            errors.push(ConfigError::new(
                path,
                price.pos,
                format!("product `{id}` has both unit_price and unit_cost/markup_percent"),
                "give either a unit_price, or a unit_cost with a markup_percent",
            ));
            price.value.0
        }
        (None, None, _) => {
            errors.push(ConfigError::new(
                path,
                p.id.pos,
                format!("product `{id}` has no price"),
                "add `unit_price: 22.00`, or `unit_cost: 20.00` with `markup_percent: 10`",
            ));
            Decimal::ZERO
        }
    }
}

fn compile_predicate(
    src: &At<String>,
    path: &Path,
    errors: &mut Vec<ConfigError>,
) -> Option<Predicate> {
    match Predicate::compile(&src.value) {
        Ok(p) => Some(p.written_at(format!(
            "{}:{}:{}",
            path.display(),
            src.pos.line,
            src.pos.column
        ))),
        Err(e) => {
            errors.push(ConfigError::new(
                path,
                src.pos,
                format!("bad CEL expression `{}`: {e}", bounds::excerpt(&src.value)),
                mapping::PREDICATE_HINT,
            ));
            None
        }
    }
}

fn check_policy_products(
    policy: &Policy,
    products: &BTreeMap<String, ProductRule>,
    path: &Path,
    errors: &mut Vec<ConfigError>,
) {
    let known = || products.keys().cloned().collect::<Vec<_>>().join(", ");
    let mut unknown = |section: &str, id: &str, pos: Pos| {
        if !products.contains_key(id) {
            errors.push(ConfigError::new(
                path,
                pos,
                format!("{section}: unknown product `{id}`"),
                format!("known products: {}", known()),
            ));
        }
    };
    policy
        .seats
        .iter()
        .for_each(|(id, at)| unknown("seats", id, at.pos));
    policy
        .prices
        .iter()
        .for_each(|(id, at)| unknown("prices", id, at.pos));
    policy
        .included
        .iter()
        .for_each(|(id, at)| unknown("included", id, at.pos));
    policy
        .minimum
        .iter()
        .for_each(|(id, at)| unknown("minimum", id, at.pos));
    for (id, at) in &policy.prices {
        if at.value.0.is_sign_negative() {
            errors.push(ConfigError::new(
                path,
                at.pos,
                format!("prices: `{id}` is negative"),
                "prices are ≥ 0",
            ));
        }
    }
    for at in policy.products.iter().flatten() {
        if !products.contains_key(&at.value) {
            errors.push(ConfigError::new(
                path,
                at.pos,
                format!("products: unknown product `{}`", at.value),
                format!("known products: {}", known()),
            ));
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn merge_rules(
    index: usize,
    client: &str,
    defaults: &Policy,
    overrides: &Policy,
    products: &[Product],
    product_rules: &BTreeMap<String, ProductRule>,
    templates: &mut TemplateSet,
    path: &Path,
    errors: &mut Vec<ConfigError>,
) -> Option<Rules> {
    let before = errors.len();
    let counted_src = overrides.counted.as_ref().or(defaults.counted.as_ref());
    let counted = match counted_src {
        Some(src) => compile_predicate(src, path, errors),
        None => Predicate::compile(defaults::COUNTED).ok(),
    };

    let chosen: Option<BTreeSet<&str>> = overrides
        .products
        .as_ref()
        .or(defaults.products.as_ref())
        .map(|list| list.iter().map(|a| a.value.as_str()).collect());
    let mut seat_rules = Vec::new();
    for product in products {
        if chosen
            .as_ref()
            .is_some_and(|c| !c.contains(product.id.as_str()))
        {
            continue;
        }
        let Some(rule) = product_rules.get(&product.id) else {
            continue;
        };
        let seat_src = overrides
            .seats
            .get(&product.id)
            .or(defaults.seats.get(&product.id));
        let predicate = match seat_src {
            Some(src) => compile_predicate(src, path, errors),
            None => rule.seats.clone(),
        };
        let price = overrides
            .prices
            .get(&product.id)
            .or(defaults.prices.get(&product.id))
            .map(|p| p.value.0)
            .unwrap_or(rule.unit_price);
        let per_product = |f: fn(&Policy) -> &BTreeMap<String, At<u32>>| {
            f(overrides)
                .get(&product.id)
                .or(f(defaults).get(&product.id))
                .map(|a| a.value)
                .unwrap_or(0)
        };
        if let Some(predicate) = predicate {
            seat_rules.push(mapping::SeatRule {
                included: per_product(|p| &p.included),
                minimum: per_product(|p| &p.minimum),
                product: product.id.clone(),
                name: rule.name.clone(),
                identifier: product.identifier.clone(),
                predicate,
                unit_price: price,
                counting: rule.counting.clone(),
                description: rule.description.clone(),
            });
        }
    }

    let pick = |f: fn(&ContactPolicy) -> &Option<At<String>>| -> Option<&At<String>> {
        overrides
            .contacts
            .as_ref()
            .and_then(|c| f(c).as_ref())
            .or(defaults.contacts.as_ref().and_then(|c| f(c).as_ref()))
    };
    let manage_contacts = overrides
        .contacts
        .as_ref()
        .and_then(|c| c.manage)
        .or(defaults.contacts.as_ref().and_then(|c| c.manage))
        .unwrap_or(true);
    let mut field =
        |name: &str, src: Option<&At<String>>, fallback: Option<&str>| -> Option<String> {
            let (text, pos) = match (src, fallback) {
                (Some(at), _) => (at.value.as_str(), at.pos),
                (None, Some(text)) => (text, Pos::default()),
                (None, None) => return None,
            };
            let template = format!("client/{index}/contact/{name}");
            match templates.add(&template, text, mapping::TemplateKind::Person) {
                Ok(()) => Some(template),
                Err(e) => {
                    errors.push(ConfigError::new(
                        path,
                        pos,
                        format!("client `{client}`: bad {name} template: {e}"),
                        mapping::TEMPLATE_HINT_PERSON,
                    ));
                    None
                }
            }
        };
    let contact = ContactTemplates {
        first_name: field(
            "first_name",
            pick(|c| &c.first_name),
            Some(defaults::FIRST_NAME),
        ),
        last_name: field(
            "last_name",
            pick(|c| &c.last_name),
            Some(defaults::LAST_NAME),
        ),
        email: field("email", pick(|c| &c.email), Some(defaults::EMAIL)),
        title: field("title", pick(|c| &c.title), None),
        phone: field("phone", pick(|c| &c.phone), None),
    };
    let builtin = overrides
        .exclude_builtin
        .or(defaults.exclude_builtin)
        .unwrap_or(true);
    let mut exclusions = Vec::new();
    if builtin {
        for (name, source) in defaults::EXCLUSIONS {
            match Predicate::compile(source) {
                Ok(when) => exclusions.push(mapping::Exclusion {
                    name: (*name).to_owned(),
                    when,
                }),
                Err(e) => errors.push(ConfigError::new(
                    path,
                    Pos::default(),
                    format!("built-in exclusion `{name}`: {e}"),
                    "a bug in rollcall: please report it",
                )),
            }
        }
    }
    for rule in defaults.exclude.iter().chain(&overrides.exclude) {
        if let Some(when) = compile_predicate(&rule.when, path, errors) {
            exclusions.push(mapping::Exclusion {
                name: rule.name.clone(),
                when,
            });
        }
    }
    if errors.len() > before {
        return None;
    }
    let grace_days = overrides
        .grace_days
        .as_ref()
        .or(defaults.grace_days.as_ref())
        .map(|g| g.value)
        .unwrap_or(0);
    let count_from = overrides
        .count_from
        .clone()
        .or_else(|| defaults.count_from.clone())
        .filter(|a| !a.trim().is_empty());
    Some(Rules {
        counted: counted?,
        exclusions,
        grace_days,
        count_from,
        seats: seat_rules,
        contact,
        manage_contacts,
    })
}

impl FromStr for Price {
    type Err = rust_decimal::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Decimal::from_str(s).map(Price)
    }
}

/// The JSON Schema of pipeline files, generated from the same types serde reads.
pub fn schema() -> serde_json::Value {
    let schema = schemars::schema_for!(RawPipeline);
    serde_json::to_value(schema).unwrap_or_default()
}

fn check_schedule(path: &Path, s: &SchedulePolicy) -> Result<Schedule, ConfigError> {
    let cron = s.cron.value.trim();
    if let Err(e) = cron::Schedule::from_str(cron) {
        return Err(ConfigError::new(
            path,
            s.cron.pos,
            format!("`{}` is not a cron expression: {e}", s.cron.value),
            "write six fields, seconds first: e.g. `0 0 6 * * Mon-Fri`",
        ));
    }
    let timezone = match &s.timezone {
        None => chrono_tz::Tz::UTC,
        Some(tz) => chrono_tz::Tz::from_str(tz.value.trim()).map_err(|_| {
            ConfigError::new(
                path,
                tz.pos,
                format!("`{}` is not an IANA time zone", tz.value),
                "write a zone name such as `UTC`, `Europe/London` or `America/New_York`",
            )
        })?,
    };
    Ok(Schedule {
        cron: cron.to_owned(),
        timezone,
    })
}
