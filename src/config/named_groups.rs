//! Groups a pipeline's rules require, checked against the groups a directory read reported.
//!
//! A seat rule `'Billable Users' in groups` over a read that never reports that group (a typo, a
//! group outside the searched base, an export without its group entries so that nesting is
//! lost) matches nobody, and a product billing nobody looks just like a client with nobody to
//! bill. So after each read, every group a `counted` or seat rule requires (reached without a
//! negation) that no person read is in is reported at the rule's `file:line:col`. A group a rule
//! excludes by (`!('Service Accounts' in groups)`) is not: matching nobody there bills no less.

use cel::IdedExpr;
use cel::common::ast::{Expr, LiteralValue, operators};
use rollcall_core::{GroupsWanted, Person};

use crate::mapping::{Predicate, Rules};

/// The groups `expr` requires a person to be in: `'X' in groups` and
/// `groups.exists(g, g == 'X')`, under an even number of `!`. Walked with a stack, so a rule
/// nested however deep cannot overflow it.
pub fn required_groups(expr: &IdedExpr) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    // (expression, reached without negation, the variable of a comprehension over `groups`)
    let mut stack: Vec<(&IdedExpr, bool, Option<&str>)> = vec![(expr, true, None)];
    while let Some((e, positive, over_groups)) = stack.pop() {
        match &e.expr {
            Expr::Call(call) => {
                let literal = |i: usize| match call.args.get(i).map(|a| &a.expr) {
                    Some(Expr::Literal(LiteralValue::String(s))) => Some(s.inner().to_owned()),
                    _ => None,
                };
                let ident = |i: usize| match call.args.get(i).map(|a| &a.expr) {
                    Some(Expr::Ident(name)) => Some(name.as_str()),
                    _ => None,
                };
                let named = match call.func_name.as_str() {
                    operators::IN if ident(1) == Some("groups") => literal(0),
                    operators::EQUALS if over_groups.is_some() => {
                        if ident(0) == over_groups {
                            literal(1)
                        } else if ident(1) == over_groups {
                            literal(0)
                        } else {
                            None
                        }
                    }
                    _ => None,
                };
                if let Some(group) = named {
                    if positive && !out.contains(&group) {
                        out.push(group);
                    }
                    continue;
                }
                let flip = call.func_name == operators::LOGICAL_NOT;
                for a in call.args.iter().chain(call.target.as_deref()) {
                    stack.push((a, positive != flip, over_groups));
                }
            }
            Expr::Comprehension(c) => {
                let var = matches!(&c.iter_range.expr, Expr::Ident(n) if n == "groups")
                    .then_some(c.iter_var.as_str())
                    .or(over_groups);
                stack.push((&c.loop_step, positive, var));
                stack.push((&c.result, positive, over_groups));
            }
            Expr::List(list) => {
                stack.extend(list.elements.iter().map(|x| (x, positive, over_groups)))
            }
            Expr::Select(s) => stack.push((&s.operand, positive, over_groups)),
            _ => {}
        }
    }
    out
}

/// Every group name `expr` can tell a person apart by — `'X' in groups`, and `g == 'X'` in a
/// comprehension over `groups` — whether required or excluded by; `None` when it looks at
/// `groups` in any other way (`size(groups)`, `g.startsWith('Team')`, `x in groups` with `x`
/// not a literal), where any group may matter.
pub fn mentioned_groups(expr: &IdedExpr) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    // (expression, the variable of a comprehension over `groups`)
    let mut stack: Vec<(&IdedExpr, Option<&str>)> = vec![(expr, None)];
    while let Some((e, over_groups)) = stack.pop() {
        match &e.expr {
            Expr::Call(call) => {
                let literal = |i: usize| match call.args.get(i).map(|a| &a.expr) {
                    Some(Expr::Literal(LiteralValue::String(s))) => Some(s.inner().to_owned()),
                    _ => None,
                };
                let ident = |i: usize| match call.args.get(i).map(|a| &a.expr) {
                    Some(Expr::Ident(name)) => Some(name.as_str()),
                    _ => None,
                };
                let named = match call.func_name.as_str() {
                    operators::IN if ident(1) == Some("groups") => Some(literal(0)?),
                    operators::EQUALS | operators::NOT_EQUALS if over_groups.is_some() => {
                        if ident(0) == over_groups {
                            Some(literal(1)?)
                        } else if ident(1) == over_groups {
                            Some(literal(0)?)
                        } else {
                            None
                        }
                    }
                    _ => None,
                };
                if let Some(group) = named {
                    if !out.contains(&group) {
                        out.push(group);
                    }
                    continue;
                }
                for a in call.args.iter().chain(call.target.as_deref()) {
                    stack.push((a, over_groups));
                }
            }
            Expr::Ident(name) => {
                if name == "groups" || Some(name.as_str()) == over_groups {
                    return None;
                }
            }
            Expr::Comprehension(c) => {
                let var = if matches!(&c.iter_range.expr, Expr::Ident(n) if n == "groups") {
                    Some(c.iter_var.as_str())
                } else {
                    stack.push((&c.iter_range, over_groups));
                    over_groups
                };
                for part in [&c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                    stack.push((part, var));
                }
            }
            Expr::List(list) => stack.extend(list.elements.iter().map(|x| (x, over_groups))),
            Expr::Select(s) => stack.push((&s.operand, over_groups)),
            // Map and message literals have no place in a rule over a person: any group then.
            Expr::Map(_) | Expr::Struct(_) => return None,
            Expr::Literal(_) | Expr::Unspecified => {}
        }
    }
    Some(out)
}

/// The groups a client's rules can tell people apart by — exclusions, `counted`, seat rules —
/// for a directory that reads membership group by group; every group when a rule looks at
/// groups other than by name, or a template (which may print a person's groups) mentions them.
pub fn wanted(rules: &Rules, templates_mention_groups: bool) -> GroupsWanted {
    if templates_mention_groups {
        return GroupsWanted::All;
    }
    let predicates = rules
        .exclusions
        .iter()
        .map(|x| &x.when)
        .chain(std::iter::once(&rules.counted))
        .chain(rules.seats.iter().map(|s| &s.predicate));
    let mut names = std::collections::BTreeSet::new();
    for rule in predicates {
        match mentioned_groups(rule.expression()) {
            Some(found) => names.extend(found),
            None => return GroupsWanted::All,
        }
    }
    GroupsWanted::Named(names)
}

/// A note for every group a client's `counted` or seat rule requires that no one in `people`
/// is in, naming the rule's place in the pipeline.
pub fn unseen(rules: &Rules, people: &[Person], directory: &str) -> Vec<String> {
    let seen: std::collections::HashSet<&str> = people
        .iter()
        .flat_map(|p| p.groups.iter().map(String::as_str))
        .collect();
    let rules = std::iter::once(&rules.counted).chain(rules.seats.iter().map(|s| &s.predicate));
    let mut notes = Vec::new();
    let mut told: Vec<(String, String)> = Vec::new();
    for rule in rules {
        for group in required_groups(rule.expression()) {
            let at = where_written(rule);
            if seen.contains(group.as_str()) || told.contains(&(at.clone(), group.clone())) {
                continue;
            }
            notes.push(format!(
                "{at}: the rule needs group `{group}`, but no one read from {directory} is in it, so it matches nobody; check the name (case matters); an LDAP read sees the groups under `group_base_dns`, an LDIF export needs the group entries and a CSV export a `groups:` file for nested groups"
            ));
            told.push((at, group));
        }
    }
    notes
}

fn where_written(rule: &Predicate) -> String {
    rule.at()
        .map_or_else(|| format!("rule `{}`", rule.source()), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn required(source: &str) -> Vec<String> {
        let p = Predicate::compile(source).expect("compiles");
        required_groups(p.expression())
    }

    #[test]
    fn groups_required_positively_are_found() {
        assert_eq!(
            required("'Billable Users' in groups"),
            vec!["Billable Users"]
        );
        assert_eq!(
            required("enabled && ('A' in groups || groups.exists(g, g == \"B\"))"),
            vec!["B", "A"]
        );
        assert_eq!(required("groups.exists(x, 'C' == x)"), vec!["C"]);
        // Excluding by a group, or a double negation.
        assert!(required("enabled && !('Service Accounts' in groups)").is_empty());
        assert_eq!(required("!!('D' in groups)"), vec!["D"]);
        assert!(required("'E' in licenses && 'x' in attributes").is_empty());
    }

    fn mentioned(source: &str) -> Option<Vec<String>> {
        let p = Predicate::compile(source).expect("compiles");
        mentioned_groups(p.expression()).map(|mut g| {
            g.sort();
            g
        })
    }

    #[test]
    fn groups_named_either_way_are_mentioned_and_any_other_use_means_all() {
        let names = |n: &[&str]| Some(n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(
            mentioned("enabled && !('Service Accounts' in groups) && 'Staff' in groups"),
            names(&["Service Accounts", "Staff"])
        );
        assert_eq!(
            mentioned("groups.exists(g, g == 'A' || 'B' == g) && !groups.all(x, x != 'C')"),
            names(&["A", "B", "C"])
        );
        assert_eq!(mentioned("enabled && 'E' in licenses"), names(&[]));
        for any in [
            "size(groups) > 1",
            "groups.exists(g, g.startsWith('Team'))",
            "username in groups",
            "groups.exists(g, g == username)",
            "'x' in groups || groups == ['y']",
        ] {
            assert_eq!(mentioned(any), None, "{any}");
        }
    }

    #[test]
    fn a_deep_rule_is_walked_without_recursion() {
        let source = format!("{}'Deep' in groups{}", "(".repeat(20), ")".repeat(20));
        assert_eq!(required(&source), vec!["Deep"]);
    }
}
