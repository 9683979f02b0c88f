//! Mapping: from the people a directory returned to what a client should be billed for.
//!
//! Rules are compiled once per pipeline (CEL predicates, handlebars templates) and evaluated
//! per person. The output is a [`Desired`] state — contacts and one addition per product with
//! the people behind its seats — which the planner compares with the billing system.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use cel::common::types::{CelBool, CelList, CelMap, CelMapKey as MapKey, CelString};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Program, Value};
use handlebars::Handlebars;
use rollcall_core::{
    AdditionFields, AttributeName, ContactFields, Currency, DirectoryRead, Person, round_money,
};
use rust_decimal::Decimal;
use serde_json::json;

use crate::plan::{Desired, DesiredAddition, Evidence, Excluded, SeatHolder};

mod native;

/// The variables a predicate may use, each a field of the person.
pub const PREDICATE_VARIABLES: &[&str] = &[
    "id",
    "username",
    "given_name",
    "surname",
    "display_name",
    "name",
    "email",
    "upn",
    "enabled",
    "groups",
    "licenses",
    "license_names",
    "attributes",
];

pub const PREDICATE_HINT: &str = "predicates are CEL over the person, e.g. `enabled && 'Billable Users' in groups`; \
     variables: id, username, given_name, surname, display_name, name, email, upn, enabled, groups, licenses, \
     license_names, attributes (a map: `'title' in attributes && attributes.title == 'CEO'`)";
pub const TEMPLATE_HINT_PERSON: &str = "contact templates are handlebars over the person: {{given_name}}, {{surname}}, \
     {{display_name}}, {{name}}, {{email}}, {{upn}}, {{username}}, {{attributes.title}}";
pub const TEMPLATE_HINT_LINE: &str = "line descriptions are handlebars over {{product}}, {{identifier}}, {{quantity}}, \
     {{unit_price}}, {{names}} and {{#each people}}{{name}}{{/each}}";

/// A compiled CEL predicate over a person.
#[derive(Clone)]
pub struct Predicate {
    source: String,
    program: Arc<Program>,
    /// The same rule as direct tests of the person's fields, when it is made only of shapes
    /// those cover: it answers wherever CEL would not fail (see [`native`]).
    native: Option<Arc<native::Test>>,
    /// The person variables the rule reads, found once: they name each seat's evidence.
    variables: Arc<[AttributeName]>,
    /// Where the pipeline wrote it (`file:line:col`), for warnings about what it names.
    at: Option<Arc<str>>,
}

impl std::fmt::Debug for Predicate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Predicate({:?})", self.source)
    }
}

impl Predicate {
    /// Compiles and checks a predicate: it must parse, use only known variables, and yield a
    /// boolean for a typical person.
    pub fn compile(source: &str) -> Result<Predicate, String> {
        crate::config::bounds::cel(source).map_err(|e| e.to_string())?;
        let program = Program::compile(source).map_err(|e| one_line(&e.to_string()))?;
        regexes::precompile(program.expression())?;
        let references = program.references();
        let unknown: Vec<&str> = references
            .variables()
            .into_iter()
            .filter(|v| !PREDICATE_VARIABLES.contains(v) && !is_comprehension_variable(source, v))
            .collect();
        if let Some(first) = unknown.first() {
            return Err(format!("unknown variable `{first}`"));
        }
        let variables = references
            .variables()
            .into_iter()
            .filter(|v| PREDICATE_VARIABLES.contains(v))
            .map(AttributeName::new)
            .collect();
        let native = native::Test::compile(program.expression(), &|pattern| {
            regexes::regex(pattern, true).ok()
        })
        .map(Arc::new);
        let predicate = Predicate {
            source: source.to_owned(),
            native,
            program: Arc::new(program),
            variables,
            at: None,
        };
        match predicate.eval(&PersonVars::new(&sample_person())) {
            Ok(_) => Ok(predicate),
            // A typical person need not carry every attribute; a missing key is not a mistake.
            Err(e) if e.contains("No such key") || e.contains("no such key") => Ok(predicate),
            Err(e) => Err(e),
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The predicate, remembering where the pipeline wrote it.
    pub fn written_at(mut self, at: String) -> Self {
        self.at = Some(at.into());
        self
    }

    /// Where the pipeline wrote it, `file:line:col`, when known.
    pub fn at(&self) -> Option<&str> {
        self.at.as_deref()
    }

    /// The parsed expression, for checks over what the rule names.
    pub fn expression(&self) -> &cel::IdedExpr {
        self.program.expression()
    }

    /// True when the person matches.
    pub fn eval(&self, vars: &PersonVars) -> Result<bool, String> {
        if let Some(answer) = self.native.as_ref().and_then(|test| test.eval(vars.person)) {
            return Ok(answer);
        }
        self.eval_cel(vars)
    }

    /// True when the person matches, by CEL's interpreter alone.
    fn eval_cel(&self, vars: &PersonVars) -> Result<bool, String> {
        let mut context = Context::with_env(Arc::clone(&CEL_ENV));
        context.set_variable_resolver(vars);
        match self.program.execute(&context) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("yields {other:?}, not true or false")),
            Err(e) => Err(missing_key_hint(e.to_string())),
        }
    }
}

/// CEL's "No such key: title", said of a person whose directory did not return that attribute
/// (LDAP leaves empty attributes out), with how to write the rule so it holds for everyone.
fn missing_key_hint(message: String) -> String {
    let Some(key) = message.strip_prefix("No such key: ").map(str::trim) else {
        return message;
    };
    format!(
        "{message}: this person has no `{key}` (write `'{key}' in attributes && …` to test for it first)"
    )
}

/// `groups.exists(g, g == 'x')` binds `g`; CEL reports it as a variable reference.
fn is_comprehension_variable(source: &str, name: &str) -> bool {
    ["exists", "all", "exists_one", "map", "filter"]
        .iter()
        .any(|m| {
            source.contains(&format!("{m}({name},")) || source.contains(&format!("{m}({name} ,"))
        })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A person's fields as CEL variables, shared by every rule evaluated on them.
///
/// Each variable is made when a rule first reads it, borrowing the person's text rather than
/// copying it: binding all thirteen up front, as copies, cost more than the rules themselves.
pub struct PersonVars<'p> {
    person: &'p Person,
    name: OnceLock<CelString<'static>>,
    groups: OnceLock<Box<dyn Val + 'p>>,
    licenses: OnceLock<Box<dyn Val + 'p>>,
    license_names: OnceLock<Box<dyn Val + 'p>>,
    attributes: OnceLock<Box<dyn Val + 'p>>,
}

/// CEL's standard environment with rollcall's `matches`, built once: building it per person
/// would cost more than every predicate evaluated on them.
static CEL_ENV: std::sync::LazyLock<Arc<cel::Env>> =
    std::sync::LazyLock::new(|| Arc::new(regexes::with_matches(cel::Env::stdlib())));

/// CEL's `matches`, with each pattern compiled once.
///
/// The cel crate's own `matches` compiles its pattern on every call; the built-in exclusions
/// call it three times per person, and that was three quarters of a plan's CPU (issue 18). Here
/// a pattern written as a literal is compiled when its predicate is (so a bad one is an error at
/// validation, with the predicate's position), and every call looks the compiled regex up by
/// its text. A pattern computed per person (`name.matches(attributes.pattern)`) is compiled on
/// first use and kept too, up to a bound, so a directory cannot grow the cache without limit.
mod regexes {
    use std::collections::HashMap;
    use std::sync::{Arc, LazyLock, RwLock};

    use cel::ExecutionError;
    use cel::common::ast::{EntryExpr, Expr, IdedExpr};
    use cel::common::types::{CelBool, CelString};
    use regex::Regex;

    /// Patterns computed per person that are kept; past this, they are compiled per call.
    pub(super) const MAX_COMPUTED: usize = 1024;

    static COMPILED: LazyLock<RwLock<HashMap<Box<str>, Arc<Regex>>>> =
        LazyLock::new(Default::default);

    pub(super) fn with_matches(mut env: cel::Env) -> cel::Env {
        // The stdlib's `matches` is compiled out (the `regex` feature is off), so these are the
        // only overloads of the name: a clash is a programming error caught by every test.
        cel::add_overload!(env, fn matches: (CelString, CelString) -> Result<CelBool>, id = "matches")
            .expect("`matches` is declared once");
        cel::add_member_overload!(env, fn matches: (CelString, CelString) -> Result<CelBool>)
            .expect("`string.matches` is declared once");
        env
    }

    fn matches(text: &CelString<'_>, pattern: &CelString<'_>) -> Result<CelBool, ExecutionError> {
        let regex =
            regex(pattern.inner(), false).map_err(|message| ExecutionError::FunctionError {
                function: "matches".to_owned(),
                message,
            })?;
        Ok(CelBool::from(regex.is_match(text.inner())))
    }

    /// The compiled `pattern`, compiling and keeping it when new. `constant`: written in a
    /// predicate, so always kept.
    pub(super) fn regex(pattern: &str, constant: bool) -> Result<Arc<Regex>, String> {
        let cache = COMPILED.read().unwrap_or_else(|e| e.into_inner());
        if let Some(regex) = cache.get(pattern) {
            return Ok(Arc::clone(regex));
        }
        let full = cache.len() >= MAX_COMPUTED;
        drop(cache);
        let regex = Arc::new(
            Regex::new(pattern).map_err(|e| format!("'{pattern}' is not a valid regex: {e}"))?,
        );
        if constant || !full {
            COMPILED
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .entry(pattern.into())
                .or_insert_with(|| Arc::clone(&regex));
        }
        Ok(regex)
    }

    /// Compiles every literal pattern `matches` is called with in `expr`.
    pub(super) fn precompile(expr: &IdedExpr) -> Result<(), String> {
        let mut result = Ok(());
        visit(expr, &mut |e| {
            if let Expr::Call(call) = &e.expr
                && call.func_name == "matches"
                && let Some(IdedExpr {
                    expr: Expr::Literal(cel::common::ast::LiteralValue::String(p)),
                    ..
                }) = call.args.last()
                && result.is_ok()
            {
                result = regex(p.inner(), true).map(|_| ());
            }
        });
        result
    }

    fn visit(e: &IdedExpr, f: &mut impl FnMut(&IdedExpr)) {
        f(e);
        match &e.expr {
            Expr::Call(call) => {
                call.target.iter().for_each(|t| visit(t, f));
                call.args.iter().for_each(|a| visit(a, f));
            }
            Expr::Comprehension(c) => {
                for part in [
                    &c.iter_range,
                    &c.accu_init,
                    &c.loop_cond,
                    &c.loop_step,
                    &c.result,
                ] {
                    visit(part, f);
                }
            }
            Expr::List(list) => list.elements.iter().for_each(|x| visit(x, f)),
            Expr::Map(map) => map.entries.iter().for_each(|x| visit_entry(&x.expr, f)),
            Expr::Struct(s) => s.entries.iter().for_each(|x| visit_entry(&x.expr, f)),
            Expr::Select(s) => visit(&s.operand, f),
            Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => {}
        }
    }

    fn visit_entry(entry: &EntryExpr, f: &mut impl FnMut(&IdedExpr)) {
        match entry {
            EntryExpr::StructField(field) => visit(&field.value, f),
            EntryExpr::MapEntry(m) => {
                visit(&m.key, f);
                visit(&m.value, f);
            }
        }
    }
}

impl<'p> PersonVars<'p> {
    pub fn new(person: &'p Person) -> Self {
        PersonVars {
            person,
            name: OnceLock::new(),
            groups: OnceLock::new(),
            licenses: OnceLock::new(),
            license_names: OnceLock::new(),
            attributes: OnceLock::new(),
        }
    }
}

/// A list of the texts `items` yields, borrowed.
fn text_list<'p>(items: impl Iterator<Item = &'p str>) -> Box<dyn Val + 'p> {
    let items: Vec<Box<dyn Val + 'p>> = items
        .map(|s| Box::new(CelString::from(s)) as Box<dyn Val + 'p>)
        .collect();
    Box::new(CelList::from(items))
}

impl VariableResolver for PersonVars<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let p = self.person;
        let text = |s: &'b str| CowVal::owned(CelString::from(s));
        Some(match variable {
            "id" => text(&p.id),
            "username" => text(&p.username),
            "given_name" => text(&p.given_name),
            "surname" => text(&p.surname),
            "display_name" => text(&p.display_name),
            "email" => text(p.email.as_deref().unwrap_or_default()),
            "upn" => text(p.upn.as_deref().unwrap_or_default()),
            "enabled" => CowVal::owned(CelBool::from(p.enabled)),
            "name" => CowVal::Borrowed(self.name.get_or_init(|| CelString::from(p.billing_name()))),
            "groups" => CowVal::Borrowed(
                self.groups
                    .get_or_init(|| text_list(p.groups.iter().map(String::as_str)))
                    .as_ref(),
            ),
            "licenses" => CowVal::Borrowed(
                self.licenses
                    .get_or_init(|| text_list(p.licenses.iter().map(|l| l.sku.as_str())))
                    .as_ref(),
            ),
            "license_names" => CowVal::Borrowed(
                self.license_names
                    .get_or_init(|| text_list(p.licenses.iter().map(|l| l.name.as_str())))
                    .as_ref(),
            ),
            "attributes" => CowVal::Borrowed(
                self.attributes
                    .get_or_init(|| {
                        let map: HashMap<MapKey<'_>, Box<dyn Val + '_>> = p
                            .attributes
                            .iter()
                            .map(|(k, v)| {
                                (
                                    MapKey::String(CelString::from(k.as_str())),
                                    Box::new(CelString::from(v.as_str())) as Box<dyn Val>,
                                )
                            })
                            .collect();
                        Box::new(CelMap::from(map))
                    })
                    .as_ref(),
            ),
            _ => return None,
        })
    }
}

fn sample_person() -> Person {
    Person {
        id: "00000000-0000-0000-0000-000000000001".into(),
        username: "asample".into(),
        given_name: "Ada".into(),
        surname: "Sample".into(),
        display_name: "Ada Sample".into(),
        email: Some("ada@example.com".into()),
        upn: Some("ada@example.com".into()),
        enabled: true,
        groups: vec!["Staff".into()],
        licenses: vec![rollcall_core::License {
            sku: "SPB".into(),
            name: "Microsoft 365 Business Premium".into(),
        }],
        attributes: rollcall_core::Attributes::from([("title", "Engineer".to_owned())]),
    }
}

/// What a template renders over, which decides how it is checked.
#[derive(Debug, Clone, Copy)]
pub enum TemplateKind {
    Person,
    Line,
}

/// Every handlebars template of a pipeline, compiled once.
pub struct TemplateSet {
    registry: Handlebars<'static>,
    /// Line templates that iterate `people`: only they get each person's fields, which
    /// would otherwise be built for every seat holder of every product on every run.
    uses_people: std::collections::HashSet<String>,
    /// Whether any template mentions `groups`: a person's groups may then be printed, so a
    /// directory must read every group, not only those the rules name.
    mentions_groups: bool,
    /// The person fields any template names: what each person's JSON is made of.
    person_fields: PersonFields,
    /// Person templates that are one text field alone (`{{given_name}}`, as the defaults are),
    /// by template name: their text is the field's, so they are not rendered by handlebars,
    /// which with its context was most of a contact's cost.
    field_alone: HashMap<String, TextField, foldhash::fast::RandomState>,
}

impl std::fmt::Debug for TemplateSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateSet")
            .field("templates", &self.registry.get_templates().len())
            .finish()
    }
}

impl Default for TemplateSet {
    fn default() -> Self {
        Self::new()
    }
}

impl TemplateSet {
    pub fn new() -> Self {
        let mut registry = Handlebars::new();
        // Contact fields and invoice lines are plain text, not HTML: "O'Brien & Sons" stays as is.
        registry.register_escape_fn(handlebars::no_escape);
        TemplateSet {
            registry,
            uses_people: Default::default(),
            mentions_groups: false,
            person_fields: PersonFields::NONE,
            field_alone: HashMap::default(),
        }
    }

    /// Compiles a template and renders it once, strictly, over a typical context so a
    /// misspelled field (`{{givn_name}}`) is an error at validation, not an empty contact field.
    pub fn add(&mut self, name: &str, source: &str, kind: TemplateKind) -> Result<(), String> {
        crate::config::bounds::template(source).map_err(|e| e.to_string())?;
        self.registry
            .register_template_string(name, source)
            .map_err(|e| one_line(&e.to_string()))?;
        if matches!(kind, TemplateKind::Line) && source.contains("people") {
            self.uses_people.insert(name.to_owned());
        }
        self.mentions_groups |= source.contains("groups");
        self.person_fields.0 |= PersonFields::named_in(source).0;
        if matches!(kind, TemplateKind::Person)
            && let Some(field) = source
                .trim()
                .strip_prefix("{{")
                .and_then(|s| s.strip_suffix("}}"))
                .and_then(TextField::named)
        {
            self.field_alone.insert(name.to_owned(), field);
        } else {
            self.field_alone.remove(name);
        }
        let mut strict = Handlebars::new();
        strict.set_strict_mode(true);
        strict.register_escape_fn(handlebars::no_escape);
        let sample = match kind {
            TemplateKind::Person => {
                let mut p = sample_person();
                for attr in referenced_attributes(source) {
                    p.attributes.insert(attr.into(), "x".into());
                }
                person_json(&p, PersonFields::ALL)
            }
            TemplateKind::Line => {
                let p = sample_person();
                line_json(
                    "product",
                    "PRODUCT",
                    1,
                    Decimal::ONE,
                    std::iter::once(p.billing_name().as_str()),
                    vec![person_json(&p, PersonFields::ALL)],
                )
            }
        };
        strict
            .render_template(source, &sample)
            .map(|_| ())
            .map_err(|e| {
                let text = one_line(&e.to_string());
                match text.find("Variable \"") {
                    Some(i) => format!("unknown field in {}", &text[i..]),
                    None => text,
                }
            })
    }

    /// Whether any template mentions a person's `groups`.
    pub fn mentions_groups(&self) -> bool {
        self.mentions_groups
    }

    /// Renders over `data`, which a template set may render several templates over: handlebars'
    /// own `render` copies its data for every template, and a contact has three.
    fn render(&self, name: &str, data: &handlebars::Context) -> Result<String, String> {
        self.registry
            .render_with_context(name, data)
            .map(|s| s.trim().to_owned())
            .map_err(|e| one_line(&e.to_string()))
    }
}

/// Attributes are free-form, so `{{attributes.title}}` is checked against a person who has one.
fn referenced_attributes(source: &str) -> Vec<String> {
    source
        .match_indices("attributes.")
        .map(|(i, m)| {
            source[i + m.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '-')
                .collect::<String>()
        })
        .filter(|a| !a.is_empty())
        .collect()
}

/// The fields of a person a template may name, in the order of [`person_json`]'s object.
const PERSON_FIELDS: &[&str] = &[
    "id",
    "username",
    "given_name",
    "surname",
    "display_name",
    "email",
    "upn",
    "enabled",
    "groups",
    "licenses",
    "attributes",
    "name",
];

/// Which of [`PERSON_FIELDS`] the templates name: only those are put in each person's JSON.
///
/// Serialising every field of every person (groups, licences, attributes) for templates that
/// print a first name was the largest part of mapping after the rules (issue 18: 603 M of
/// 2,183 M instructions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PersonFields(u16);

impl PersonFields {
    const NONE: PersonFields = PersonFields(0);
    const ALL: PersonFields = PersonFields((1 << PERSON_FIELDS.len()) - 1);

    /// The fields `source` names, as whole words. A template that can reach a field without
    /// naming it (`this`, `@root`, a `.`/`..` path, a partial) gets every field.
    fn named_in(source: &str) -> PersonFields {
        let bare_dot = source.char_indices().any(|(i, c)| {
            c == '.'
                && !source[..i].ends_with(|p: char| p.is_alphanumeric() || p == '_' || p == ']')
        });
        if source.contains("this") || source.contains("@root") || source.contains('>') || bare_dot {
            return PersonFields::ALL;
        }
        let mut fields = PersonFields::NONE;
        for word in source.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
            if let Some(i) = PERSON_FIELDS.iter().position(|f| *f == word) {
                fields.0 |= 1 << i;
            }
        }
        fields
    }
}

/// A person as templates see them: every field, with `name` (the billing name) and `email` and
/// `upn` as text, or only `fields`.
fn person_json(p: &Person, fields: PersonFields) -> serde_json::Value {
    use serde_json::Value;
    let mut map = serde_json::Map::new();
    let text = |s: &str| Value::String(s.to_owned());
    for (i, field) in PERSON_FIELDS.iter().enumerate() {
        if fields.0 & (1 << i) == 0 {
            continue;
        }
        let value = match *field {
            "id" => text(&p.id),
            "username" => text(&p.username),
            "given_name" => text(&p.given_name),
            "surname" => text(&p.surname),
            "display_name" => text(&p.display_name),
            "email" => text(p.email.as_deref().unwrap_or_default()),
            "upn" => text(p.upn.as_deref().unwrap_or_default()),
            "enabled" => Value::Bool(p.enabled),
            "groups" => Value::Array(p.groups.iter().map(|g| text(g)).collect()),
            "licenses" => Value::Array(
                p.licenses
                    .iter()
                    .map(|l| json!({ "sku": l.sku, "name": l.name }))
                    .collect(),
            ),
            "attributes" => Value::Object(
                p.attributes
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), text(v)))
                    .collect(),
            ),
            "name" => Value::String(p.billing_name()),
            _ => continue,
        };
        map.insert((*field).to_owned(), value);
    }
    Value::Object(map)
}

/// What a line template renders over: the product, and its seat holders' names and, for
/// templates that list `people`, each holder as [`person_json`] made them.
fn line_json<'n>(
    product: &str,
    identifier: &str,
    quantity: usize,
    unit_price: Decimal,
    names: impl Iterator<Item = &'n str>,
    people: Vec<serde_json::Value>,
) -> serde_json::Value {
    let mut joined = String::new();
    push_joined(&mut joined, names);
    json!({
        "product": product,
        "identifier": identifier,
        "quantity": quantity,
        "unit_price": unit_price.to_string(),
        "names": joined,
        "people": people,
    })
}

/// Contact field templates (names in the [`TemplateSet`]); `None` leaves the field unmanaged.
#[derive(Debug, Clone)]
pub struct ContactTemplates {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub title: Option<String>,
    pub phone: Option<String>,
}

/// What one seat is, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Counting {
    /// A person who matches the product's predicate.
    People,
    /// Each licence a matching person holds whose SKU is listed (compared without case).
    Licenses(Vec<String>),
    /// The licences of the listed SKUs the tenant bought, whoever holds them; the matching
    /// holders are listed by name.
    Purchased(Vec<String>),
}

impl Counting {
    /// How many seats this person takes.
    pub fn seats_of_person(&self, p: &Person) -> u32 {
        self.seats_of(p)
    }

    fn seats_of(&self, p: &Person) -> u32 {
        match self {
            Counting::People => 1,
            Counting::Licenses(skus) | Counting::Purchased(skus) => p
                .licenses
                .iter()
                .filter(|l| skus.iter().any(|s| s.eq_ignore_ascii_case(&l.sku)))
                .count() as u32,
        }
    }
}

/// A named rule for people who are never billed.
#[derive(Debug, Clone)]
pub struct Exclusion {
    pub name: String,
    pub when: Predicate,
}

/// One product's seat rule for one client, overrides applied.
#[derive(Debug, Clone)]
pub struct SeatRule {
    pub product: String,
    /// The product's name on invoices.
    pub name: String,
    pub identifier: String,
    pub predicate: Predicate,
    pub counting: Counting,
    /// Seats the contract includes: not billed.
    pub included: u32,
    /// The least quantity billed.
    pub minimum: u32,
    pub unit_price: Decimal,
    /// Template name of the invoice line text.
    pub description: String,
}

/// A client's rules, defaults and overrides merged.
#[derive(Debug, Clone)]
pub struct Rules {
    /// People never billed, checked first; the first rule that matches is the reason reported.
    pub exclusions: Vec<Exclusion>,
    /// A seat holder who stops matching keeps the seat for this many days (0: none).
    pub grace_days: u32,
    /// The attribute with the date a new person starts counting from.
    pub count_from: Option<String>,
    pub counted: Predicate,
    pub seats: Vec<SeatRule>,
    pub contact: ContactTemplates,
    pub manage_contacts: bool,
}

/// A rule that could not be evaluated for a person: the client's run stops, because silently
/// skipping the person would lower their seats.
#[derive(Debug, thiserror::Error)]
#[error("client `{client}`, person `{person}`: rule `{rule}`: {message}")]
pub struct MappingError {
    pub client: String,
    pub person: String,
    pub rule: String,
    pub message: String,
}

impl MappingError {
    pub fn hint(&self) -> &'static str {
        "a rule failed on this person's data; guard optional attributes with `'x' in attributes && …`"
    }
}

/// Seats the ledger says are held, for the grace period: per product id, who held a seat and
/// when they last matched its rule. Passed in, so mapping stays free of I/O and clocks.
#[derive(Debug, Clone, Default)]
pub struct Grace {
    pub now: chrono::DateTime<chrono::Utc>,
    pub held: BTreeMap<String, Vec<HeldSeat>>,
}

#[derive(Debug, Clone)]
pub struct HeldSeat {
    pub person_id: String,
    pub name: String,
    pub last_seen: chrono::DateTime<chrono::Utc>,
}
/// Maps one directory read to the client's desired billing state, borrowing the people (for
/// callers that need them afterwards: sister clients that count each person once, tests).
pub fn desired_state(
    client: &str,
    rules: &Rules,
    templates: &TemplateSet,
    currency: Currency,
    text_limit: Option<usize>,
    read: &DirectoryRead,
    grace: &Grace,
) -> Result<Desired, MappingError> {
    let people = read.people.iter().collect();
    map_people(
        client, rules, templates, currency, text_limit, people, read, grace,
    )
}

/// [`desired_state`], taking the people out of `read`: each is dropped as soon as it is mapped,
/// so a large client never holds its people and its mapped state at once (issue 18: the two
/// together were a 100,000-person plan's peak memory).
pub fn desired_state_taking(
    client: &str,
    rules: &Rules,
    templates: &TemplateSet,
    currency: Currency,
    text_limit: Option<usize>,
    read: &mut DirectoryRead,
    grace: &Grace,
) -> Result<Desired, MappingError> {
    let people = std::mem::take(&mut read.people);
    map_people(
        client, rules, templates, currency, text_limit, people, read, grace,
    )
}

/// One person's seats of one product, gathered while people are mapped; what a
/// [`SeatHolder`] is made of once every person has been seen.
struct Holding {
    person_id: Arc<str>,
    name: Arc<str>,
    seats: u32,
    evidence: Arc<Evidence>,
    contact: Option<Arc<str>>,
    /// The person as the line template sees them, for templates that list `people`.
    json: Option<serde_json::Value>,
}

#[allow(clippy::too_many_arguments)] // the two public entry points above name them
fn map_people<P: std::borrow::Borrow<Person>>(
    client: &str,
    rules: &Rules,
    templates: &TemplateSet,
    currency: Currency,
    text_limit: Option<usize>,
    mut people: Vec<P>,
    read: &DirectoryRead,
    grace: &Grace,
) -> Result<Desired, MappingError> {
    let fail = |p: &Person, rule: &str, message: String| MappingError {
        client: client.to_owned(),
        person: format!("{} ({})", p.billing_name(), p.id),
        rule: rule.to_owned(),
        message,
    };
    // Sorted by id so the plan does not depend on the directory's order; reversed, to be
    // taken from the end.
    people.sort_by(|a, b| a.borrow().id.cmp(&b.borrow().id));
    people.reverse();

    // Who the ledger says holds a seat: a person among them who does not take every seat they
    // hold is kept aside (with their contact key), as the grace period may keep their seat.
    let held: std::collections::HashSet<&str> = if rules.grace_days == 0 {
        Default::default()
    } else {
        rules
            .seats
            .iter()
            .filter_map(|s| grace.held.get(&s.product))
            .flatten()
            .map(|h| h.person_id.as_str())
            .collect()
    };
    let mut kept: HashMap<String, (P, Option<Arc<str>>)> = HashMap::new();
    let evidence_names = EvidenceNames::of(rules);
    let mut shared = SharedEvidence::default();

    let mut contacts = BTreeMap::new();
    let mut excluded = Vec::new();
    let mut holdings: Vec<Vec<Holding>> = (0..rules.seats.len()).map(|_| Vec::new()).collect();
    let mut taken = Vec::with_capacity(rules.seats.len());
    // This person's evidence per product, made once for products whose rules read the same.
    let mut made: Vec<Option<Arc<Evidence>>> = Vec::with_capacity(rules.seats.len());
    while let Some(person) = people.pop() {
        // The list gives its room back as it empties: 100,000 people are 25 MB of it alone.
        if people.len() < people.capacity() / 2 {
            people.shrink_to_fit();
        }
        // Set when the person is to be kept aside for the grace period, with their contact key.
        let keep: Option<Option<Arc<str>>> = 'person: {
            let p = person.borrow();
            let is_held = held.contains(p.id.as_str());
            let vars = PersonVars::new(p);
            let mut exclusion = None;
            for rule in &rules.exclusions {
                if rule
                    .when
                    .eval(&vars)
                    .map_err(|e| fail(p, rule.when.source(), e))?
                {
                    exclusion = Some(rule);
                    break;
                }
            }
            if let Some(rule) = exclusion {
                excluded.push(Excluded {
                    person_id: p.id.clone(),
                    name: p.billing_name(),
                    rule: rule.name.clone(),
                });
            } else if let Some(starts) = starts_later(rules.count_from.as_deref(), p, grace.now) {
                excluded.push(Excluded {
                    person_id: p.id.clone(),
                    name: p.billing_name(),
                    rule: format!("counts from {starts}"),
                });
            } else if rules
                .counted
                .eval(&vars)
                .map_err(|e| fail(p, rules.counted.source(), e))?
            {
                taken.clear();
                for (i, seat) in rules.seats.iter().enumerate() {
                    if seat
                        .predicate
                        .eval(&vars)
                        .map_err(|e| fail(p, seat.predicate.source(), e))?
                    {
                        let seats = seat.counting.seats_of(p);
                        if seats > 0 {
                            taken.push((i, seats));
                        }
                    }
                }
                let mut contact = None;
                if rules.manage_contacts {
                    let fields = contact_fields(&rules.contact, templates, p)
                        .map_err(|e| fail(p, "contact template", e))?;
                    let key = fields.key();
                    // Nothing to match a contact by (no email and no name) leaves it out.
                    if !key.0.is_empty() {
                        contact = Some(Arc::<str>::from(key.0.as_str()));
                        contacts.entry(key).or_insert(fields);
                    }
                }
                if !taken.is_empty() {
                    let person_id = Arc::<str>::from(p.id.as_str());
                    let name = Arc::<str>::from(p.billing_name());
                    made.clear();
                    made.resize(rules.seats.len(), None);
                    for &(i, seats) in &taken {
                        let first = evidence_names.same_as[i];
                        let evidence = match &made[first] {
                            Some(e) => Arc::clone(e),
                            None => {
                                let names = &evidence_names.of_seat[first];
                                let e = shared.intern(evidence_named(p, names));
                                made[first] = Some(Arc::clone(&e));
                                e
                            }
                        };
                        holdings[i].push(Holding {
                            person_id: person_id.clone(),
                            name: name.clone(),
                            seats,
                            evidence,
                            contact: contact.clone(),
                            json: templates
                                .uses_people
                                .contains(&rules.seats[i].description)
                                .then(|| person_json(p, templates.person_fields)),
                        });
                    }
                }
                break 'person (is_held && taken.len() < rules.seats.len()).then_some(contact);
            }
            is_held.then_some(None)
        };
        if let Some(contact) = keep {
            kept.insert(person.borrow().id.clone(), (person, contact));
        }
    }

    let mut additions = BTreeMap::new();
    for ((i, seat), mut holders) in rules.seats.iter().enumerate().zip(holdings) {
        let in_grace = grace_holders(rules.grace_days, grace, seat, &holders, &kept);
        let mut grace_until: HashMap<Arc<str>, String> = HashMap::new();
        for (p, until, contact) in in_grace {
            // A weekend lock-out keeps the person's contact too, when the directory still has them.
            if rules.manage_contacts && kept.contains_key(p.id.as_str()) {
                let fields = contact_fields(&rules.contact, templates, &p)
                    .map_err(|e| fail(&p, "contact template", e))?;
                if !fields.key().0.is_empty() {
                    contacts.entry(fields.key()).or_insert(fields);
                }
            }
            let person_id = Arc::<str>::from(p.id.as_str());
            grace_until.insert(
                person_id.clone(),
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            );
            holders.push(Holding {
                person_id,
                name: p.billing_name().into(),
                seats: seat.counting.seats_of(&p).max(1),
                evidence: shared.intern(evidence_named(&p, &evidence_names.of_seat[i])),
                contact,
                json: templates
                    .uses_people
                    .contains(&seat.description)
                    .then(|| person_json(&p, templates.person_fields)),
            });
        }
        let counted: u32 = match &seat.counting {
            Counting::Purchased(skus) => purchased(client, seat, skus, read)?,
            _ => holders.iter().map(|h| h.seats).sum(),
        };
        let quantity = counted.saturating_sub(seat.included).max(seat.minimum);
        holders.sort_by_cached_key(|h| h.name.to_lowercase());
        let unit_price = round_money(seat.unit_price, currency);
        let listed = holders.iter_mut().filter_map(|h| h.json.take()).collect();
        let data = line_json(
            &seat.name,
            &seat.identifier,
            quantity as usize,
            unit_price,
            holders.iter().map(|h| &*h.name),
            listed,
        );
        let invoice_description = templates
            .render(&seat.description, &handlebars::Context::from(data))
            .map_err(|e| MappingError {
                client: client.to_owned(),
                person: "-".into(),
                rule: format!("description of {}", seat.product),
                message: e,
            })?;
        let invoice_description = match text_limit {
            Some(limit) => {
                let names: Vec<&str> = holders.iter().map(|h| &*h.name).collect();
                shorten_list(invoice_description, limit, &names)
            }
            None => invoice_description,
        };
        additions.insert(
            seat.identifier.clone(),
            DesiredAddition {
                product: seat.product.clone(),
                name: seat.name.clone(),
                rule: seat.predicate.source().to_owned(),
                fields: AdditionFields {
                    quantity,
                    unit_price,
                    invoice_description,
                },
                counted,
                people: holders
                    .into_iter()
                    .map(|h| SeatHolder {
                        grace_until: grace_until.get(&h.person_id).cloned(),
                        person_id: h.person_id,
                        name: h.name,
                        evidence: h.evidence,
                        contact: h.contact,
                    })
                    .collect(),
            },
        );
    }
    Ok(Desired {
        completeness: read.completeness.clone(),
        contacts: rules.manage_contacts.then_some(contacts),
        additions,
        excluded,
        ownership: None,
        invoice: None,
    })
}

/// The licences of `skus` the tenant bought, from the directory's subscriptions. A complete
/// read that knows no subscriptions comes from a directory that cannot tell purchases (an
/// export, LDAP): that is a pipeline mistake, not zero licences.
fn purchased(
    client: &str,
    seat: &SeatRule,
    skus: &[String],
    read: &DirectoryRead,
) -> Result<u32, MappingError> {
    if read.subscriptions.is_empty() && read.completeness.is_complete() {
        return Err(MappingError {
            client: client.to_owned(),
            person: "-".into(),
            rule: format!("count: purchased of {}", seat.product),
            message: "this directory does not report purchased licences; count `licenses` \
                      (assigned) instead, or read the client from a directory that reports purchases"
                .into(),
        });
    }
    Ok(read
        .subscriptions
        .iter()
        .filter(|s| skus.iter().any(|k| k.eq_ignore_ascii_case(&s.sku)))
        .map(|s| s.purchased)
        .sum())
}

/// The date a new person starts counting, when it is still to come.
pub fn starts_later(
    attribute: Option<&str>,
    p: &Person,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<String> {
    let text = p.attributes.get(attribute?)?.trim();
    let starts = chrono::DateTime::parse_from_rfc3339(text)
        .map(|d| d.to_utc())
        .ok()
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(text.get(..10)?, "%Y-%m-%d")
                .ok()?
                .and_hms_opt(0, 0, 0)
                .map(|d| d.and_utc())
        })
        .or_else(|| rollcall_core::ad::generalized_time(text))?;
    (starts > now).then(|| starts.format("%Y-%m-%d").to_string())
}
/// Who keeps a seat of `seat` only through the grace period: held in the ledger, not matching
/// now, and last matching fewer than `days` days ago. With the date their grace ends and, for
/// someone the directory still has, their contact key.
fn grace_holders<P: std::borrow::Borrow<Person>>(
    days: u32,
    grace: &Grace,
    seat: &SeatRule,
    matching: &[Holding],
    kept: &HashMap<String, (P, Option<Arc<str>>)>,
) -> Vec<(Person, chrono::DateTime<chrono::Utc>, Option<Arc<str>>)> {
    if days == 0 {
        return Vec::new();
    }
    let Some(held) = grace.held.get(&seat.product) else {
        return Vec::new();
    };
    let matched: std::collections::HashSet<&str> = matching.iter().map(|h| &*h.person_id).collect();
    held.iter()
        .filter(|h| !matched.contains(h.person_id.as_str()))
        .filter_map(|h| {
            let until = h.last_seen + chrono::Duration::days(i64::from(days));
            (grace.now < until).then(|| match kept.get(h.person_id.as_str()) {
                Some((p, contact)) => (p.borrow().clone(), until, contact.clone()),
                None => (
                    Person {
                        id: h.person_id.clone(),
                        display_name: h.name.clone(),
                        ..Person::default()
                    },
                    until,
                    None,
                ),
            })
        })
        .collect()
}

/// The names each product's seat evidence is made of: the variables its counting and seat rules
/// read. Products whose rules read the same names share one evidence per person.
struct EvidenceNames {
    of_seat: Vec<Vec<AttributeName>>,
    /// For each product, the first product whose rules read the same names.
    same_as: Vec<usize>,
}

impl EvidenceNames {
    fn of(rules: &Rules) -> Self {
        let of_seat: Vec<Vec<AttributeName>> = rules
            .seats
            .iter()
            .map(|s| names_read(&[&rules.counted, &s.predicate]))
            .collect();
        let same_as = (0..of_seat.len())
            .map(|i| (0..i).find(|&j| of_seat[j] == of_seat[i]).unwrap_or(i))
            .collect();
        EvidenceNames { of_seat, same_as }
    }
}

/// Seat evidence made so far, one of each: people who share the values a product's rules read
/// (`enabled = true`, `groups = [Staff]`) share one evidence, as a plan holds one per seat and a
/// directory's people mostly repeat a few.
#[derive(Default)]
struct SharedEvidence(std::collections::HashSet<Arc<Evidence>, foldhash::fast::RandomState>);

impl SharedEvidence {
    fn intern(&mut self, evidence: Evidence) -> Arc<Evidence> {
        if let Some(shared) = self.0.get(&evidence) {
            return shared.clone();
        }
        let shared = Arc::new(evidence);
        self.0.insert(shared.clone());
        shared
    }
}

/// The variables `rules` read, once each.
fn names_read(rules: &[&Predicate]) -> Vec<AttributeName> {
    let mut names: Vec<AttributeName> = Vec::new();
    for var in rules.iter().flat_map(|r| r.variables.iter()) {
        if !names.contains(var) {
            names.push(var.clone());
        }
    }
    names
}

/// The values of the person's fields that `rules` read, as text: the evidence for a seat.
pub fn evidence(p: &Person, rules: &[&Predicate]) -> Evidence {
    evidence_named(p, &names_read(rules))
}

/// A list as evidence shows it: `[a, b]`.
fn listed<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::from("[");
    push_joined(&mut out, items);
    out.push(']');
    out
}

/// `items` appended to `out`, separated by `, `, with no list of them made first.
fn push_joined<'a>(out: &mut String, items: impl Iterator<Item = &'a str>) {
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(item);
    }
}

/// The values of the person's fields named, as text.
fn evidence_named(p: &Person, names: &[AttributeName]) -> Evidence {
    let mut out = Evidence::with_capacity(names.len());
    for var in names {
        let value = match var.as_str() {
            "enabled" => p.enabled.to_string(),
            "groups" => listed(p.groups.iter().map(String::as_str)),
            "licenses" => listed(p.licenses.iter().map(|l| l.sku.as_str())),
            "license_names" => listed(p.licenses.iter().map(|l| l.name.as_str())),
            "attributes" => format!(
                "{{{}}}",
                p.attributes
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            other => match TextField::named(other) {
                Some(field) => field.of(p).into_owned(),
                None => continue,
            },
        };
        out.insert(var.clone(), value);
    }
    out
}

/// Fits invoice text into the billing system's limit. The text is usually a list of names, so it
/// is cut after the last whole name that fits and says how many were left out.
pub fn shorten_list<N: AsRef<str>>(text: String, limit: usize, names: &[N]) -> String {
    if text.chars().count() <= limit {
        return text;
    }
    // Room for the longest suffix we might add.
    let budget = text
        .char_indices()
        .nth(limit.saturating_sub(24))
        .map_or(text.len(), |(i, _)| i);
    // Cut after the last whole name that fits, finding the names in order, so a name written
    // "Lovelace, Ada" is never split and the count of the rest is exact.
    let (mut cursor, mut kept) = (0, 0);
    for name in names.iter().map(AsRef::as_ref).filter(|n| !n.is_empty()) {
        match text[cursor..].find(name) {
            Some(i) if cursor + i + name.len() <= budget => {
                cursor += i + name.len();
                kept += 1;
            }
            _ => break,
        }
    }
    if kept > 0 && kept < names.len() {
        return format!("{} and {} more", &text[..cursor], names.len() - kept);
    }
    // The text does not list the names: cut at the last separator instead.
    let keep = &text[..budget];
    let cut = keep.rfind(", ").unwrap_or(keep.len());
    let omitted = text[cut..].matches(", ").count().max(1);
    format!("{} and {omitted} more", &text[..cut])
}

fn contact_fields(
    t: &ContactTemplates,
    templates: &TemplateSet,
    p: &Person,
) -> Result<ContactFields, String> {
    // Made only for a template that is more than one field (the defaults are one each).
    let data = std::cell::OnceCell::new();
    let render = |name: &Option<String>| -> Result<Option<String>, String> {
        let Some(n) = name else {
            return Ok(None);
        };
        let text = match templates.field_alone.get(n) {
            Some(field) => field.of(p).trim().to_owned(),
            None => templates.render(
                n,
                data.get_or_init(|| {
                    handlebars::Context::from(person_json(p, templates.person_fields))
                }),
            )?,
        };
        Ok((!text.is_empty()).then_some(text))
    };
    Ok(ContactFields {
        first_name: render(&t.first_name)?.unwrap_or_default(),
        last_name: render(&t.last_name)?.unwrap_or_default(),
        email: render(&t.email)?,
        title: render(&t.title)?,
        phone: render(&t.phone)?,
    })
}

/// A person's text fields, by the name rules and templates call them (`{{given_name}}`,
/// `username.endsWith('$')`): found once when a rule or template is compiled, then read per
/// person without matching the name again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextField {
    Id,
    Username,
    GivenName,
    Surname,
    DisplayName,
    Email,
    Upn,
    Name,
}

impl TextField {
    pub(crate) fn named(name: &str) -> Option<TextField> {
        Some(match name {
            "id" => TextField::Id,
            "username" => TextField::Username,
            "given_name" => TextField::GivenName,
            "surname" => TextField::Surname,
            "display_name" => TextField::DisplayName,
            "email" => TextField::Email,
            "upn" => TextField::Upn,
            "name" => TextField::Name,
            _ => return None,
        })
    }

    /// The field's text, as [`person_json`] and the CEL variable of the same name have it:
    /// `name` is made, the rest borrowed; an absent email or UPN is empty.
    pub(crate) fn of(self, p: &Person) -> std::borrow::Cow<'_, str> {
        use std::borrow::Cow::Borrowed;
        match self {
            TextField::Id => Borrowed(&p.id),
            TextField::Username => Borrowed(&p.username),
            TextField::GivenName => Borrowed(&p.given_name),
            TextField::Surname => Borrowed(&p.surname),
            TextField::DisplayName => Borrowed(&p.display_name),
            TextField::Email => Borrowed(p.email.as_deref().unwrap_or_default()),
            TextField::Upn => Borrowed(p.upn.as_deref().unwrap_or_default()),
            TextField::Name => p.billing_name().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use std::sync::Arc;

    use proptest::prelude::*;
    use rollcall_core::{DirectoryRead, License, Person};

    use crate::config;

    #[test]
    fn a_rule_on_an_attribute_a_person_lacks_says_how_to_guard_it() {
        let rule = super::Predicate::compile("attributes.department == 'Sales'").expect("rule");
        let without = Person {
            id: "p1".to_owned(),
            ..Person::default()
        };
        let err = rule
            .eval(&super::PersonVars::new(&without))
            .expect_err("no department");
        assert!(
            err.contains("No such key: department")
                && err.contains("'department' in attributes && …"),
            "{err}"
        );
        let guarded = super::Predicate::compile(
            "'department' in attributes && attributes.department == 'Sales'",
        )
        .expect("rule");
        assert_eq!(guarded.eval(&super::PersonVars::new(&without)), Ok(false));
    }

    fn holds(rule: &str, p: &Person) -> Result<bool, String> {
        super::Predicate::compile(rule)?.eval(&super::PersonVars::new(p))
    }

    #[test]
    fn matches_compiles_a_literal_pattern_once_at_validation_and_refuses_a_bad_one() {
        let err = super::Predicate::compile("username.matches('^(svc')").expect_err("bad regex");
        assert!(err.contains("'^(svc' is not a valid regex"), "{err}");
        // A pattern too large to compile is refused the same way, not a panic at run time.
        let huge = format!("username.matches('{}')", "(a{1000}){1000}");
        assert!(super::Predicate::compile(&huge).is_err());
        let who = |username: &str| Person {
            id: "p1".to_owned(),
            username: username.to_owned(),
            display_name: "\u{202e}Test user".to_owned(),
            ..Person::default()
        };
        let rule = "username.matches('^(?i)(svc|srv|service)[-_.]')";
        assert_eq!(holds(rule, &who("SVC-backup")), Ok(true));
        assert_eq!(holds(rule, &who("svcbackup")), Ok(false));
        assert_eq!(
            holds(rule, &who("\u{202e}svc-x")),
            Ok(false),
            "a bidi mark is a character"
        );
        assert_eq!(
            holds("matches(username, '^a')", &who("ada")),
            Ok(true),
            "the global form"
        );
        assert_eq!(
            holds("display_name.matches('^(?i)test[ _-]')", &who("x")),
            Ok(false),
            "anchored at the start, which the bidi mark holds"
        );
    }

    #[test]
    fn matches_with_a_pattern_computed_per_person_compiles_it_then_and_says_when_it_is_bad() {
        let mut p = Person {
            id: "p1".to_owned(),
            username: "ada".to_owned(),
            ..Person::default()
        };
        let rule = "'pattern' in attributes && username.matches(attributes.pattern)";
        p.attributes.insert("pattern".into(), "^a.a$".into());
        assert_eq!(holds(rule, &p), Ok(true));
        p.attributes.insert("pattern".into(), "^b".into());
        assert_eq!(holds(rule, &p), Ok(false));
        p.attributes.insert("pattern".into(), "[".into());
        let err = holds(rule, &p).expect_err("bad regex from the directory");
        assert!(err.contains("'[' is not a valid regex"), "{err}");
        // Many distinct patterns (one per person) stay correct past the cache's bound.
        for i in 0..(super::regexes::MAX_COMPUTED + 10) {
            p.attributes
                .insert("pattern".into(), format!("^ada$|^x{i}$"));
            assert_eq!(holds(rule, &p), Ok(true), "{i}");
        }
    }

    #[test]
    fn every_variable_reads_the_person_it_is_made_for() {
        let p = Person {
            id: "p1".to_owned(),
            username: "ada".to_owned(),
            given_name: "Ada".to_owned(),
            surname: "Lovelace".to_owned(),
            email: Some("ada@x".to_owned()),
            enabled: true,
            groups: vec!["Staff".to_owned(), "Ünïcode grp".to_owned()],
            licenses: vec![License {
                sku: "SPB".to_owned(),
                name: "Business Premium".to_owned(),
            }],
            attributes: [("title".to_owned(), "CEO".to_owned())].into(),
            ..Person::default()
        };
        for rule in [
            "id == 'p1' && username == 'ada' && given_name == 'Ada' && surname == 'Lovelace'",
            "name == 'Ada Lovelace' && display_name == '' && email == 'ada@x' && upn == ''",
            "enabled && 'Ünïcode grp' in groups && size(groups) == 2",
            "'SPB' in licenses && license_names == ['Business Premium']",
            "attributes.title == 'CEO' && !('department' in attributes)",
            "groups.exists(g, g.startsWith('Staff')) && groups.all(g, size(g) > 0)",
        ] {
            assert_eq!(holds(rule, &p), Ok(true), "{rule}");
        }
        assert_eq!(holds("'Staff' in groups", &Person::default()), Ok(false));
    }

    const PIPELINE: &str = r#"name: t
target: { connectwise: { url: "http://127.0.0.1:9", company_id: x, public_key: "${A:-a}", private_key: "${B:-b}", client_id: c } }
products:
  - { id: staff, identifier: STAFF, unit_price: 10, seats: "'G1' in groups" }
  - { id: bp, identifier: M365-BP, unit_cost: "20.00", markup_percent: "12.5", count: licenses, licenses: [SPB, spb_trial] }
clients:
  - { name: c, directory: { file: { path: x.csv } }, company: C }
"#;

    #[test]
    fn a_person_json_holds_the_fields_templates_name_and_renders_as_the_whole_one() {
        let named = |source: &str| {
            let fields = super::PersonFields::named_in(source);
            super::PERSON_FIELDS
                .iter()
                .enumerate()
                .filter(|(i, _)| fields.0 & (1 << i) != 0)
                .map(|(_, f)| *f)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            named("{{given_name}} {{surname}}"),
            ["given_name", "surname"]
        );
        assert_eq!(named("{{attributes.title}}"), ["attributes"]);
        assert_eq!(named("{{display_name}}"), ["display_name"]);
        assert_eq!(
            named("{{#each groups}}{{name}}{{/each}}"),
            ["groups", "name"]
        );
        for whole in [
            "{{#each this}}{{@key}}{{/each}}",
            "{{@root.email}}",
            "{{.}}",
            "{{> x}}",
        ] {
            assert_eq!(named(whole).len(), super::PERSON_FIELDS.len(), "{whole}");
        }

        let mut p = super::sample_person();
        p.display_name = String::new();
        p.groups.push("Sales".into());
        p.attributes.insert("department".into(), "Ops".into());
        let templates = [
            "{{given_name}} {{surname}}",
            "{{name}} <{{email}}>",
            "{{upn}}{{username}}{{id}}",
            "{{#if enabled}}on{{/if}}{{#unless display_name}}no display name{{/unless}}",
            "{{#each groups}}{{this}};{{/each}}",
            "{{#each licenses}}{{sku}}={{name}} {{/each}}",
            "{{attributes.title}}/{{lookup attributes \"department\"}}",
            "{{#each attributes}}{{@key}}={{this}} {{/each}}",
            "{{#with attributes}}{{title}}{{/with}} {{missing}}",
            "{{#each this}}{{@key}} {{/each}}",
        ];
        let mut hb = handlebars::Handlebars::new();
        hb.register_escape_fn(handlebars::no_escape);
        for source in templates {
            let all = hb
                .render_template(source, &super::person_json(&p, super::PersonFields::ALL))
                .expect("render");
            let named = hb
                .render_template(
                    source,
                    &super::person_json(&p, super::PersonFields::named_in(source)),
                )
                .expect("render");
            assert_eq!(named, all, "{source}");
            assert!(!all.trim().is_empty(), "{source} renders something");
        }
        // The whole person is what `serde_json` makes of it, with `name` and text for email/upn.
        let mut whole = serde_json::to_value(&p).expect("json");
        whole["name"] = p.billing_name().into();
        assert_eq!(super::person_json(&p, super::PersonFields::ALL), whole);
    }

    fn person(i: usize, groups: &[&str], skus: &[&str], enabled: bool) -> Person {
        Person {
            id: format!("p{i:03}"),
            given_name: format!("G{i}"),
            surname: format!("S{i}"),
            email: Some(format!("p{i}@x")),
            enabled,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            licenses: skus
                .iter()
                .map(|s| License {
                    sku: (*s).to_owned(),
                    name: String::new(),
                })
                .collect(),
            ..Person::default()
        }
    }

    fn desired(people: Vec<Person>) -> crate::plan::Desired {
        let p = config::load_str(PIPELINE, Path::new("t.yaml")).expect("pipeline");
        let c = &p.clients[0];
        super::desired_state(
            &c.name,
            &c.rules,
            &p.templates,
            p.currency,
            None,
            &DirectoryRead::complete(people),
            &crate::mapping::Grace::default(),
        )
        .expect("map")
    }

    #[test]
    fn licences_are_counted_per_assignment_and_priced_with_markup() {
        let d = desired(vec![
            person(1, &[], &["SPB", "SPB_TRIAL"], true),
            person(2, &[], &["SPB"], true),
            person(3, &[], &["ENTERPRISEPACK"], true),
            person(4, &[], &["SPB"], false),
        ]);
        let bp = &d.additions["M365-BP"];
        assert_eq!(
            bp.fields.quantity, 3,
            "two licences for p1, one for p2, none for the others"
        );
        assert_eq!(bp.people.len(), 2);
        assert_eq!(bp.fields.unit_price.to_string(), "22.50", "20.00 × 1.125");
    }

    #[test]
    fn markup_is_rounded_once_half_away_from_zero() {
        let yaml = PIPELINE.replace(
            r#"unit_cost: "20.00", markup_percent: "12.5""#,
            r#"unit_cost: "0.10", markup_percent: "5""#,
        );
        let p = config::load_str(&yaml, Path::new("t.yaml")).expect("pipeline");
        let c = &p.clients[0];
        let d = super::desired_state(
            &c.name,
            &c.rules,
            &p.templates,
            p.currency,
            None,
            &DirectoryRead::complete(vec![]),
            &crate::mapping::Grace::default(),
        )
        .expect("map");
        assert_eq!(
            d.additions["M365-BP"].fields.unit_price.to_string(),
            "0.11",
            "0.105 rounds up"
        );
    }

    #[test]
    fn long_lists_are_cut_after_a_whole_name() {
        let names: Vec<String> = (0..100).map(|i| format!("Person Number{i}")).collect();
        let text = super::shorten_list(names.join(", "), 200, &names);
        assert!(text.chars().count() <= 200, "{text}");
        assert!(text.ends_with(" more"), "{text}");
        let kept = text
            .split(" and ")
            .next()
            .unwrap_or_default()
            .split(", ")
            .count();
        let more: usize = text
            .rsplit(" and ")
            .next()
            .unwrap_or_default()
            .trim_end_matches(" more")
            .parse()
            .expect("n");
        assert_eq!(kept + more, 100, "{text}");
        assert_eq!(
            super::shorten_list::<&str>("short".into(), 200, &[]),
            "short"
        );
        // Names written "Last, First" are never split, and the rest is counted by name.
        let formal: Vec<String> = (0..100).map(|i| format!("Number{i}, Person")).collect();
        let text = super::shorten_list(format!("Seats: {}", formal.join("; ")), 200, &formal);
        assert!(text.chars().count() <= 200, "{text}");
        let (head, more) = text.rsplit_once(" and ").expect("shortened");
        assert!(head.ends_with(", Person"), "cut after a whole name: {head}");
        let kept = head.matches(", Person").count();
        assert_eq!(more, format!("{} more", 100 - kept));
    }

    #[test]
    fn a_holder_who_stops_matching_keeps_the_seat_for_the_grace_period_only() {
        let yaml = PIPELINE.replace("clients:", "defaults:\n  grace_days: 3\nclients:");
        let p = config::load_str(&yaml, Path::new("t.yaml")).expect("pipeline");
        let c = &p.clients[0];
        let last_seen = chrono::DateTime::parse_from_rfc3339("2026-11-20T08:00:00Z")
            .expect("date")
            .to_utc();
        let held = [(
            "staff".to_owned(),
            vec![super::HeldSeat {
                person_id: "p001".into(),
                name: "G1 S1".into(),
                last_seen,
            }],
        )];
        let locked_out = vec![
            person(1, &["G1"], &[], false),
            person(2, &["G1"], &[], true),
        ];
        let at = |now: &str| super::Grace {
            now: chrono::DateTime::parse_from_rfc3339(now)
                .expect("date")
                .to_utc(),
            held: held.clone().into(),
        };
        let map = |grace: &super::Grace| {
            super::desired_state(
                &c.name,
                &c.rules,
                &p.templates,
                p.currency,
                None,
                &DirectoryRead::complete(locked_out.clone()),
                grace,
            )
            .expect("map")
        };
        let during = map(&at("2026-11-22T08:00:00Z"));
        let staff = &during.additions["STAFF"];
        assert_eq!(
            staff.fields.quantity, 2,
            "p001 is disabled but within 3 days"
        );
        let kept = staff
            .people
            .iter()
            .find(|h| &*h.person_id == "p001")
            .expect("kept");
        assert_eq!(kept.grace_until.as_deref(), Some("2026-11-23T08:00:00Z"));
        assert!(
            during.contacts.as_ref().is_some_and(|c| c.len() == 2),
            "their contact stays too"
        );
        let after = map(&at("2026-11-23T08:00:01Z"));
        assert_eq!(after.additions["STAFF"].fields.quantity, 1, "grace is over");
    }

    #[test]
    fn a_new_person_counts_from_their_start_date() {
        let yaml = PIPELINE.replace(
            "clients:",
            "defaults:\n  count_from: employeeHireDate\nclients:",
        );
        let p = config::load_str(&yaml, Path::new("t.yaml")).expect("pipeline");
        let c = &p.clients[0];
        let mut starter = person(1, &["G1"], &[], true);
        starter
            .attributes
            .insert("employeeHireDate".into(), "2026-12-01".into());
        let mut veteran = person(2, &["G1"], &[], true);
        veteran
            .attributes
            .insert("employeeHireDate".into(), "20190301000000.0Z".into());
        let undated = person(3, &["G1"], &[], true);
        let at = |day: &str| super::Grace {
            now: chrono::DateTime::parse_from_rfc3339(day)
                .expect("date")
                .to_utc(),
            held: Default::default(),
        };
        let read = DirectoryRead::complete(vec![starter, veteran, undated]);
        let before = super::desired_state(
            &c.name,
            &c.rules,
            &p.templates,
            p.currency,
            None,
            &read,
            &at("2026-11-25T00:00:00Z"),
        )
        .expect("map");
        assert_eq!(before.additions["STAFF"].fields.quantity, 2);
        assert_eq!(before.excluded.len(), 1);
        assert_eq!(before.excluded[0].rule, "counts from 2026-12-01");
        let after = super::desired_state(
            &c.name,
            &c.rules,
            &p.templates,
            p.currency,
            None,
            &read,
            &at("2026-12-01T09:00:00Z"),
        )
        .expect("map");
        assert_eq!(after.additions["STAFF"].fields.quantity, 3);
    }

    #[test]
    fn purchased_licences_come_from_the_subscriptions_not_the_people() {
        let yaml = PIPELINE.replace("count: licenses", "count: purchased");
        let p = config::load_str(&yaml, Path::new("t.yaml")).expect("pipeline");
        let c = &p.clients[0];
        let mut read = DirectoryRead::complete(vec![person(1, &[], &["SPB"], true)]);
        let map = |read: &DirectoryRead| {
            super::desired_state(
                &c.name,
                &c.rules,
                &p.templates,
                p.currency,
                None,
                read,
                &super::Grace::default(),
            )
        };
        let err = map(&read).expect_err("a file directory knows no purchases");
        assert!(
            err.to_string()
                .contains("does not report purchased licences"),
            "{err}"
        );
        read.subscriptions = vec![
            rollcall_core::Subscription {
                sku: "SPB".into(),
                name: "Business Premium".into(),
                purchased: 25,
                assigned: 9,
            },
            rollcall_core::Subscription {
                sku: "SPB_TRIAL".into(),
                name: String::new(),
                purchased: 5,
                assigned: 0,
            },
            rollcall_core::Subscription {
                sku: "OTHER".into(),
                name: String::new(),
                purchased: 100,
                assigned: 1,
            },
        ];
        let d = map(&read).expect("map");
        assert_eq!(
            d.additions["M365-BP"].fields.quantity, 30,
            "25 + 5 bought, whoever holds them"
        );
        assert_eq!(
            d.additions["M365-BP"].people.len(),
            1,
            "the holders are still named"
        );
    }

    #[test]
    fn included_seats_are_not_billed_and_a_minimum_always_is() {
        let yaml = PIPELINE.replace(
            "clients:",
            "defaults:\n  included: { staff: 2 }\n  minimum: { bp: 3 }\nclients:",
        );
        let p = config::load_str(&yaml, Path::new("t.yaml")).expect("pipeline");
        let c = &p.clients[0];
        let map = |n: usize| {
            let people = (0..n).map(|i| person(i, &["G1"], &["SPB"], true)).collect();
            super::desired_state(
                &c.name,
                &c.rules,
                &p.templates,
                p.currency,
                None,
                &DirectoryRead::complete(people),
                &super::Grace::default(),
            )
            .expect("map")
        };
        let five = map(5);
        assert_eq!(
            (
                five.additions["STAFF"].fields.quantity,
                five.additions["STAFF"].counted
            ),
            (3, 5),
            "5 - 2 included"
        );
        assert_eq!(
            five.additions["M365-BP"].fields.quantity, 5,
            "above the minimum"
        );
        let one = map(1);
        assert_eq!(
            one.additions["STAFF"].fields.quantity, 0,
            "fewer than included: nothing billed"
        );
        assert_eq!(one.additions["M365-BP"].fields.quantity, 3, "the minimum");
    }

    proptest! {
        /// Mapping people one at a time, each dropped once mapped (what a run does, issue 18),
        /// against a model of the rules: the quantity is the counted people who match plus the
        /// ledger's holders who stopped matching fewer than `grace_days` ago, whether the
        /// directory still has them or not, and borrowing the people maps the same.
        #[test]
        fn mapping_taken_people_bills_matches_and_grace_as_the_rules_say(
            people in prop::collection::vec((prop::bool::ANY, prop::bool::ANY, 0..3usize), 0..30),
            held in prop::collection::btree_map(0..40usize, 0..6i64, 0..20),
        ) {
            let yaml = PIPELINE.replace(
                "clients:",
                "defaults:\n  grace_days: 3\n  exclude: [{ name: service, when: \"username.startsWith('svc')\" }]\nclients:",
            );
            let p = config::load_str(&yaml, Path::new("t.yaml")).expect("pipeline");
            let c = &p.clients[0];
            let now = chrono::DateTime::parse_from_rfc3339("2026-12-07T12:00:00Z").expect("date").to_utc();
            let people: Vec<Person> = people
                .iter()
                .enumerate()
                .map(|(i, (enabled, g1, spb))| {
                    let groups: &[&str] = if *g1 { &["G1"] } else { &["G2"] };
                    let mut p = person(i, groups, &["SPB", "SPB"][..*spb], *enabled);
                    if i % 7 == 6 {
                        p.username = format!("svc{i}");
                    }
                    p
                })
                .collect();
            let grace = super::Grace {
                now,
                held: [(
                    "staff".to_owned(),
                    held.iter()
                        .map(|(i, days)| super::HeldSeat {
                            person_id: format!("p{i:03}"),
                            name: format!("G{i} S{i}"),
                            last_seen: now - chrono::Duration::days(*days),
                        })
                        .collect(),
                )]
                .into(),
            };
            let counted = |p: &Person| p.enabled && !p.username.starts_with("svc");
            let matching: std::collections::BTreeSet<String> = people
                .iter()
                .filter(|p| counted(p) && p.groups.iter().any(|g| g == "G1"))
                .map(|p| p.id.clone())
                .collect();
            let in_grace = held
                .iter()
                .filter(|(i, days)| **days < 3 && !matching.contains(&format!("p{i:03}")))
                .count();
            let borrowed = super::desired_state(
                &c.name, &c.rules, &p.templates, p.currency, None,
                &DirectoryRead::complete(people.clone()), &grace,
            )
            .expect("map");
            let mut read = DirectoryRead::complete(people.clone());
            let taken = super::desired_state_taking(
                &c.name, &c.rules, &p.templates, p.currency, None, &mut read, &grace,
            )
            .expect("map");
            prop_assert!(read.people.is_empty(), "the people were taken");
            prop_assert_eq!(&taken, &borrowed);
            let staff = &taken.additions["STAFF"];
            prop_assert_eq!(staff.fields.quantity as usize, matching.len() + in_grace);
            prop_assert_eq!(
                staff.people.iter().filter(|h| h.grace_until.is_some()).count(),
                in_grace
            );
            // A weekend lock-out keeps the person's contact too, when the directory has them.
            let kept_uncounted = held
                .iter()
                .filter(|(i, days)| **days < 3 && people.get(**i).is_some_and(|p| !counted(p)))
                .count();
            prop_assert_eq!(
                taken.contacts.as_ref().map_or(0, |c| c.len()),
                people.iter().filter(|p| counted(p)).count() + kept_uncounted
            );
            let expected_bp: usize = people.iter().filter(|p| counted(p)).map(|p| p.licenses.len()).sum();
            prop_assert_eq!(taken.additions["M365-BP"].fields.quantity as usize, expected_bp);
            // A person holding both products is one id and one name, not a copy per seat.
            for h in staff.people.iter().filter(|h| h.grace_until.is_none()) {
                if let Some(other) = taken.additions["M365-BP"].people.iter().find(|o| o.person_id == h.person_id) {
                    prop_assert!(Arc::ptr_eq(&h.person_id, &other.person_id));
                    prop_assert!(Arc::ptr_eq(&h.name, &other.name));
                }
            }
        }

        /// The issue's property: a product's quantity is the number of counted people who match.
        #[test]
        fn quantities_equal_the_number_of_matching_people(
            people in prop::collection::vec((prop::bool::ANY, prop::bool::ANY, 0..3usize), 0..40)
        ) {
            let people: Vec<Person> = people
                .iter()
                .enumerate()
                .map(|(i, (enabled, g1, spb))| {
                    let groups: &[&str] = if *g1 { &["G1", "G2"] } else { &["G2"] };
                    let skus = ["SPB"; 2];
                    person(i, groups, &skus[..*spb.min(&2)], *enabled)
                })
                .collect();
            let expected_staff = people.iter().filter(|p| p.enabled && p.groups.iter().any(|g| g == "G1")).count();
            let expected_bp: usize = people.iter().filter(|p| p.enabled).map(|p| p.licenses.len()).sum();
            let expected_contacts = people.iter().filter(|p| p.enabled).count();
            let d = desired(people);
            prop_assert_eq!(d.additions["STAFF"].fields.quantity as usize, expected_staff);
            prop_assert_eq!(d.additions["STAFF"].people.len(), expected_staff);
            prop_assert_eq!(d.additions["M365-BP"].fields.quantity as usize, expected_bp);
            prop_assert_eq!(d.contacts.map(|c| c.len()).unwrap_or(0), expected_contacts);
        }
    }
}
