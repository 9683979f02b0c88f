//! Predicates in the shapes pipelines write, evaluated without CEL's interpreter.
//!
//! Every person is tested by every exclusion, the `counted` rule and each product's seat rule:
//! six predicates per person with the defaults. CEL's interpreter looks up each operator and
//! function by name and boxes each value on every call, and that was over a quarter of a
//! 100,000-person plan (issue 18). Nearly every rule is made of a few shapes — group and
//! licence membership, `enabled`, a text field tested against a constant, an attribute, joined
//! by `&&`, `||` and `!` — so a predicate made only of those is also compiled to a [`Test`],
//! evaluated here directly over the person's fields.
//!
//! CEL stays the definition. A [`Test`] answers `Some(b)` exactly where CEL would answer `b`, and
//! `None` where CEL would fail (an attribute the person lacks): the caller then evaluates the
//! rule with CEL, so every error a user sees is CEL's own, and `&&`/`||` absorb errors the way
//! CEL's do. A predicate with any other part is evaluated by CEL alone. A property test holds
//! the two to the same answers on random rules and people.

use std::sync::Arc;

use cel::IdedExpr;
use cel::common::ast::{CallExpr, ComprehensionExpr, Expr, LiteralValue, SelectExpr, operators};
use regex::Regex;
use rollcall_core::Person;

use super::TextField;

/// A predicate compiled to direct tests of the person's fields.
#[derive(Debug)]
pub(crate) enum Test {
    Constant(bool),
    Enabled,
    Not(Box<Test>),
    And(Box<Test>, Box<Test>),
    Or(Box<Test>, Box<Test>),
    /// `'X' in groups`
    Member {
        list: TextList,
        item: Box<str>,
    },
    /// `'k' in attributes`, `has(attributes.k)`
    HasAttribute(Box<str>),
    /// `username.endsWith('$')`, `attributes.title == 'CEO'`, `email in ['a', 'b']`
    Text {
        text: Text,
        check: Check,
    },
    /// `groups.exists(g, g.startsWith('Team '))`, or `.all(…)` when `all`.
    Each {
        list: TextList,
        check: Check,
        all: bool,
    },
}

/// A list of texts of the person.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TextList {
    Groups,
    Licenses,
    LicenseNames,
}

/// A text a rule tests.
#[derive(Debug)]
pub(crate) enum Text {
    Field(TextField),
    /// `attributes.k` or `attributes['k']`: CEL fails when the person has no `k`.
    Attribute(Box<str>),
}

/// What is asked of a text.
#[derive(Debug)]
pub(crate) enum Check {
    Equals(Box<str>),
    NotEquals(Box<str>),
    OneOf(Box<[Box<str>]>),
    StartsWith(Box<str>),
    EndsWith(Box<str>),
    Contains(Box<str>),
    Matches(Arc<Regex>),
}

impl Test {
    /// The test `expr` is, when every part of it is a shape this module knows. `regex` gives
    /// the compiled pattern of a constant `matches`, the same one CEL's `matches` uses.
    pub(crate) fn compile(
        expr: &IdedExpr,
        regex: &dyn Fn(&str) -> Option<Arc<Regex>>,
    ) -> Option<Test> {
        Compiler { regex }.test(expr, 0)
    }

    /// The answer CEL gives for `person`, or `None` where CEL fails.
    pub(crate) fn eval(&self, person: &Person) -> Option<bool> {
        match self {
            Test::Constant(b) => Some(*b),
            Test::Enabled => Some(person.enabled),
            Test::Not(t) => t.eval(person).map(|b| !b),
            // CEL's `&&` and `||` are commutative over errors: `false && error` and
            // `error && false` are both false, `true && error` an error.
            Test::And(a, b) => match a.eval(person) {
                Some(false) => Some(false),
                left => match (left, b.eval(person)) {
                    (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                },
            },
            Test::Or(a, b) => match a.eval(person) {
                Some(true) => Some(true),
                left => match (left, b.eval(person)) {
                    (_, Some(true)) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                },
            },
            Test::Member { list, item } => Some(list.texts(person).any(|t| t == &**item)),
            Test::HasAttribute(key) => Some(person.attributes.contains_key(key)),
            Test::Text { text, check } => match text {
                Text::Field(field) => Some(check.holds(&field.of(person))),
                Text::Attribute(key) => person.attributes.get(key).map(|v| check.holds(v)),
            },
            Test::Each { list, check, all } => Some(if *all {
                list.texts(person).all(|t| check.holds(t))
            } else {
                list.texts(person).any(|t| check.holds(t))
            }),
        }
    }
}

impl TextList {
    fn texts<'p>(self, person: &'p Person) -> Box<dyn Iterator<Item = &'p str> + 'p> {
        match self {
            TextList::Groups => Box::new(person.groups.iter().map(String::as_str)),
            TextList::Licenses => Box::new(person.licenses.iter().map(|l| l.sku.as_str())),
            TextList::LicenseNames => Box::new(person.licenses.iter().map(|l| l.name.as_str())),
        }
    }

    fn named(variable: &str) -> Option<TextList> {
        Some(match variable {
            "groups" => TextList::Groups,
            "licenses" => TextList::Licenses,
            "license_names" => TextList::LicenseNames,
            _ => return None,
        })
    }
}

impl Check {
    fn holds(&self, text: &str) -> bool {
        match self {
            Check::Equals(s) => text == &**s,
            Check::NotEquals(s) => text != &**s,
            Check::OneOf(all) => all.iter().any(|s| text == &**s),
            Check::StartsWith(s) => text.starts_with(&**s),
            Check::EndsWith(s) => text.ends_with(&**s),
            Check::Contains(s) => text.contains(&**s),
            Check::Matches(regex) => regex.is_match(text),
        }
    }
}

/// Deeper than this, a rule is left to CEL, whose own depth bound then applies.
const MAX_DEPTH: usize = 64;

struct Compiler<'r> {
    regex: &'r dyn Fn(&str) -> Option<Arc<Regex>>,
}

/// What an operand of a text check stands for.
enum Operand<'e> {
    Text(Text),
    /// The variable of a comprehension over a list of texts.
    Item,
    Literal(&'e str),
}

impl Compiler<'_> {
    fn test(&self, expr: &IdedExpr, depth: usize) -> Option<Test> {
        if depth > MAX_DEPTH {
            return None;
        }
        let deeper = |e: &IdedExpr| self.test(e, depth + 1).map(Box::new);
        match &expr.expr {
            Expr::Literal(LiteralValue::Boolean(b)) => Some(Test::Constant(*b.inner())),
            Expr::Ident(name) if name == "enabled" => Some(Test::Enabled),
            Expr::Select(SelectExpr {
                operand,
                field,
                test: true,
            }) if is_ident(operand, "attributes") => {
                Some(Test::HasAttribute(field.as_str().into()))
            }
            Expr::Call(call) => match (call.func_name.as_str(), call.args.as_slice()) {
                (operators::LOGICAL_NOT, [a]) if call.target.is_none() => {
                    Some(Test::Not(deeper(a)?))
                }
                (operators::LOGICAL_AND, [a, b]) if call.target.is_none() => {
                    Some(Test::And(deeper(a)?, deeper(b)?))
                }
                (operators::LOGICAL_OR, [a, b]) if call.target.is_none() => {
                    Some(Test::Or(deeper(a)?, deeper(b)?))
                }
                (operators::IN, [item, range]) if call.target.is_none() => {
                    self.membership(item, range)
                }
                _ => match self.check(call, None)? {
                    (Operand::Text(text), check) => Some(Test::Text { text, check }),
                    _ => None,
                },
            },
            Expr::Comprehension(c) => self.each(c),
            _ => None,
        }
    }

    /// `'X' in groups`, `'k' in attributes`, or `text in ['a', 'b']` as a check of the text.
    fn membership(&self, item: &IdedExpr, range: &IdedExpr) -> Option<Test> {
        if let Expr::Ident(name) = &range.expr {
            let literal = string_literal(item)?;
            return if name == "attributes" {
                Some(Test::HasAttribute(literal.into()))
            } else {
                Some(Test::Member {
                    list: TextList::named(name)?,
                    item: literal.into(),
                })
            };
        }
        match self.one_of(item, range, None)? {
            (Operand::Text(text), check) => Some(Test::Text { text, check }),
            _ => None,
        }
    }

    /// `x in ['a', 'b']`, a list of constants only.
    fn one_of<'e>(
        &self,
        item: &'e IdedExpr,
        range: &IdedExpr,
        var: Option<&str>,
    ) -> Option<(Operand<'e>, Check)> {
        let Expr::List(list) = &range.expr else {
            return None;
        };
        if !list.optional_indices.is_empty() {
            return None;
        }
        let all = list
            .elements
            .iter()
            .map(|e| string_literal(e).map(Box::from))
            .collect::<Option<Box<[Box<str>]>>>()?;
        Some((self.operand(item, var)?, Check::OneOf(all)))
    }

    /// A check of one text against a constant: `==`, `!=`, `startsWith`, `endsWith`,
    /// `contains`, `matches`, or `in` a list of constants. The text is the subject the caller
    /// must accept: a field or attribute, or (with `var`) that comprehension variable.
    fn check<'e>(&self, call: &'e CallExpr, var: Option<&str>) -> Option<(Operand<'e>, Check)> {
        let name = call.func_name.as_str();
        if name == operators::IN && call.target.is_none() {
            let [item, range] = call.args.as_slice() else {
                return None;
            };
            return self.one_of(item, range, var);
        }
        // Methods (`x.f(c)`) and the global form (`matches(x, c)`) alike.
        let (subject, constant) = match (call.target.as_deref(), call.args.as_slice()) {
            (Some(t), [c]) => (t, c),
            (None, [s, c]) => (s, c),
            _ => return None,
        };
        let (subject, constant) = match (self.operand(subject, var)?, self.operand(constant, var)?)
        {
            (Operand::Literal(_), Operand::Literal(_)) => return None,
            (subject, Operand::Literal(c)) => (subject, c),
            // `'CEO' == attributes.title`: equality is symmetric.
            (Operand::Literal(c), subject)
                if call.target.is_none()
                    && (name == operators::EQUALS || name == operators::NOT_EQUALS) =>
            {
                (subject, c)
            }
            _ => return None,
        };
        let method = call.target.is_some();
        let check = match name {
            operators::EQUALS if !method => Check::Equals(constant.into()),
            operators::NOT_EQUALS if !method => Check::NotEquals(constant.into()),
            "startsWith" if method => Check::StartsWith(constant.into()),
            "endsWith" if method => Check::EndsWith(constant.into()),
            "contains" if method => Check::Contains(constant.into()),
            "matches" => Check::Matches((self.regex)(constant)?),
            _ => return None,
        };
        Some((subject, check))
    }

    /// `list.exists(x, <check of x>)` and `list.all(x, <check of x>)` over groups or licences,
    /// recognised by the exact form CEL's macros expand to.
    fn each(&self, c: &ComprehensionExpr) -> Option<Test> {
        let Expr::Ident(range) = &c.iter_range.expr else {
            return None;
        };
        let list = TextList::named(range)?;
        if c.iter_var2.is_some() || !is_ident(&c.result, &c.accu_var) {
            return None;
        }
        let all = match &c.accu_init.expr {
            Expr::Literal(LiteralValue::Boolean(b)) => *b.inner(),
            _ => return None,
        };
        let Expr::Call(step) = &c.loop_step.expr else {
            return None;
        };
        let joins = if all {
            operators::LOGICAL_AND
        } else {
            operators::LOGICAL_OR
        };
        let [accu, body] = step.args.as_slice() else {
            return None;
        };
        if step.func_name != joins || step.target.is_some() || !is_ident(accu, &c.accu_var) {
            return None;
        }
        // The loop's condition only stops early; the answer does not depend on it, so long as
        // it is CEL's own (anything else is left to CEL).
        if !is_macro_condition(&c.loop_cond, &c.accu_var, all) {
            return None;
        }
        let Expr::Call(body) = &body.expr else {
            return None;
        };
        match self.check(body, Some(&c.iter_var))? {
            (Operand::Item, check) => Some(Test::Each { list, check, all }),
            _ => None,
        }
    }

    fn operand<'e>(&self, e: &'e IdedExpr, var: Option<&str>) -> Option<Operand<'e>> {
        match &e.expr {
            Expr::Literal(LiteralValue::String(s)) => Some(Operand::Literal(s.inner())),
            Expr::Ident(name) if Some(name.as_str()) == var => Some(Operand::Item),
            Expr::Ident(name) => TextField::named(name).map(|f| Operand::Text(Text::Field(f))),
            Expr::Select(SelectExpr {
                operand,
                field,
                test: false,
            }) if is_ident(operand, "attributes") && var != Some("attributes") => {
                Some(Operand::Text(Text::Attribute(field.as_str().into())))
            }
            Expr::Call(CallExpr {
                func_name,
                target: None,
                args,
            }) if func_name == operators::INDEX => match args.as_slice() {
                [map, key] if is_ident(map, "attributes") && var != Some("attributes") => {
                    Some(Operand::Text(Text::Attribute(string_literal(key)?.into())))
                }
                _ => None,
            },
            _ => None,
        }
    }
}

fn is_ident(e: &IdedExpr, name: &str) -> bool {
    matches!(&e.expr, Expr::Ident(n) if n == name)
}

fn string_literal(e: &IdedExpr) -> Option<&str> {
    match &e.expr {
        Expr::Literal(LiteralValue::String(s)) => Some(s.inner()),
        _ => None,
    }
}

/// `@not_strictly_false(!@result)` for `exists`, `@not_strictly_false(@result)` for `all`.
fn is_macro_condition(cond: &IdedExpr, accu: &str, all: bool) -> bool {
    let Expr::Call(call) = &cond.expr else {
        return false;
    };
    let [arg] = call.args.as_slice() else {
        return false;
    };
    if call.func_name != operators::NOT_STRICTLY_FALSE || call.target.is_some() {
        return false;
    }
    if all {
        return is_ident(arg, accu);
    }
    matches!(&arg.expr, Expr::Call(not) if not.func_name == operators::LOGICAL_NOT
        && not.target.is_none()
        && matches!(not.args.as_slice(), [a] if is_ident(a, accu)))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rollcall_core::{Attributes, License, Person};

    use crate::mapping::{PersonVars, Predicate};

    /// Texts rules test and people carry, few enough that they meet.
    const TEXTS: &[&str] = &[
        "",
        "Staff",
        "svc-backup",
        "Test user",
        "ada$",
        "SPB",
        "CEO",
        "4",
    ];
    const FIELDS: &[&str] = &[
        "id",
        "username",
        "given_name",
        "surname",
        "display_name",
        "name",
        "email",
        "upn",
        "attributes.title",
        "attributes['dept']",
    ];

    /// People's texts: the rules' constants, other ASCII, and hostile or case-folding text
    /// (bidi overrides, controls, `ſ` which `(?i)` folds to `s`, a dotted `İ`).
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(TEXTS).prop_map(str::to_owned),
            1 => "[a-zA-Z$ ._-]{0,6}",
            1 => "[\u{202e}\u{2066}\u{0}\u{1b}ſİé vcS$-]{0,6}",
        ]
    }

    /// Whole texts, and parts of them at either end or inside, so that `startsWith`,
    /// `endsWith` and `contains` are told apart.
    fn constant() -> impl Strategy<Value = String> {
        const PARTS: &[&str] = &["svc", "backup", "Test", "user", "$", "ta", "S"];
        prop::sample::select([TEXTS, PARTS].concat()).prop_map(|s| format!("'{s}'"))
    }

    /// A rule, and whether every part of it is a shape [`super::Test`] covers.
    fn rule() -> impl Strategy<Value = (String, bool)> {
        let field = prop::sample::select(FIELDS);
        let list = prop::sample::select(&["groups", "licenses", "license_names"][..]);
        let key = prop::sample::select(&["title", "dept", "msExchRecipientTypeDetails"][..]);
        let leaf = prop_oneof![
            Just(("enabled".to_owned(), true)),
            prop::bool::ANY.prop_map(|b| (b.to_string(), true)),
            (constant(), list.clone()).prop_map(|(c, l)| (format!("{c} in {l}"), true)),
            key.clone()
                .prop_map(|k| (format!("'{k}' in attributes"), true)),
            key.prop_map(|k| (format!("has(attributes.{k})"), true)),
            (
                field.clone(),
                prop::sample::select(&["startsWith", "endsWith", "contains", "matches"][..]),
                constant()
            )
                .prop_map(|(f, m, c)| (format!("{f}.{m}({c})"), true)),
            (field.clone(), constant()).prop_map(|(f, c)| (format!("{f} == {c}"), true)),
            (field.clone(), constant()).prop_map(|(f, c)| (format!("{c} != {f}"), true)),
            (field.clone(), constant(), constant())
                .prop_map(|(f, a, b)| (format!("{f} in [{a}, {b}]"), true)),
            field
                .clone()
                .prop_map(|f| (format!("{f}.matches('^(?i)(svc|test)[-_. ]')"), true)),
            field.prop_map(|f| (format!("matches({f}, '[$]$')"), true)),
            (
                list.clone(),
                prop::bool::ANY,
                prop::sample::select(
                    &["x.startsWith('S')", "x == 'SPB'", "x in ['Staff', 'CEO']"][..]
                )
            )
                .prop_map(|(l, all, body)| {
                    let m = if all { "all" } else { "exists" };
                    (format!("{l}.{m}(x, {body})"), true)
                }),
            // Shapes left to CEL, which must still mix with those that are not.
            list.prop_map(|l| (format!("size({l}) > 1"), false)),
            Just(("size(username) >= 4".to_owned(), false)),
            Just(("groups.exists(x, x == username)".to_owned(), false)),
        ];
        leaf.prop_recursive(4, 24, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone())
                    .prop_map(|((a, x), (b, y))| (format!("({a} && {b})"), x && y)),
                (inner.clone(), inner.clone())
                    .prop_map(|((a, x), (b, y))| (format!("({a} || {b})"), x && y)),
                inner.prop_map(|(a, x)| (format!("!({a})"), x)),
            ]
        })
    }

    fn person() -> impl Strategy<Value = Person> {
        let texts = || prop::collection::vec(text(), 0..3);
        let attributes = prop::collection::vec(
            (
                prop::sample::select(&["title", "dept", "msExchRecipientTypeDetails"][..]),
                text(),
            ),
            0..3,
        );
        (
            (text(), text(), text(), text(), text()),
            (proptest::option::of(text()), proptest::option::of(text())),
            prop::bool::ANY,
            (texts(), texts(), texts()),
            attributes,
        )
            .prop_map(
                |(
                    (id, username, given_name, surname, display_name),
                    (email, upn),
                    enabled,
                    (groups, skus, names),
                    attributes,
                )| {
                    let mut attrs = Attributes::new();
                    for (k, v) in attributes {
                        attrs.insert(rollcall_core::AttributeName::new(k), v);
                    }
                    Person {
                        id,
                        username,
                        given_name,
                        surname,
                        display_name,
                        email,
                        upn,
                        enabled,
                        groups,
                        licenses: skus
                            .into_iter()
                            .zip(names)
                            .map(|(sku, name)| License { sku, name })
                            .collect(),
                        attributes: attrs,
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Wherever the native test answers, CEL answers the same; where it does not, CEL fails.
        /// Rules made only of covered shapes are compiled natively.
        #[test]
        fn native_answers_as_cel_does((source, covered) in rule(), people in prop::collection::vec(person(), 1..6)) {
            let predicate = match Predicate::compile(&source) {
                Ok(p) => p,
                Err(e) => return Err(TestCaseError::fail(format!("{source}: {e}"))),
            };
            prop_assert_eq!(predicate.native.is_some(), covered, "{}", source);
            for p in &people {
                let cel = predicate.eval_cel(&PersonVars::new(p));
                if let Some(test) = &predicate.native {
                    match test.eval(p) {
                        Some(answer) => prop_assert_eq!(&cel, &Ok(answer), "{} on {:?}", source, p),
                        None => prop_assert!(cel.is_err(), "{} on {:?}: CEL says {:?}", source, p, cel),
                    }
                }
                prop_assert_eq!(predicate.eval(&PersonVars::new(p)), cel);
            }
        }
    }

    /// The rules every pipeline runs are all evaluated natively.
    #[test]
    fn built_in_and_default_rules_are_native() {
        let defaults = crate::config::defaults::EXCLUSIONS
            .iter()
            .map(|(_, rule)| *rule);
        let common = [
            crate::config::defaults::COUNTED,
            crate::config::defaults::SEATS,
            "enabled && !('Service Accounts' in groups)",
            "'M365 Users' in groups",
            "licenses.exists(l, l == 'SPB') || 'Billable' in groups",
            "'title' in attributes && attributes.title == 'CEO'",
        ];
        for rule in defaults.chain(common) {
            let predicate = Predicate::compile(rule).unwrap();
            assert!(predicate.native.is_some(), "{rule} is left to CEL");
        }
    }

    /// A nesting deeper than the native bound is left to CEL, which still answers.
    #[test]
    fn deep_rules_fall_back_to_cel() {
        let rule = format!("{}enabled{}", "!(".repeat(40), ")".repeat(40));
        let predicate = Predicate::compile(&rule).unwrap();
        assert!(predicate.native.is_some());
        let deep = format!("{}enabled{}", "(true && ".repeat(70), ")".repeat(70));
        let predicate = Predicate::compile(&deep).unwrap();
        assert!(predicate.native.is_none());
        let p = super::super::sample_person();
        assert_eq!(predicate.eval(&PersonVars::new(&p)), Ok(true));
    }
}
