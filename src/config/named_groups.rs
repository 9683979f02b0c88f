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
use rollcall_core::Person;

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

    #[test]
    fn a_deep_rule_is_walked_without_recursion() {
        let source = format!("{}'Deep' in groups{}", "(".repeat(20), ")".repeat(20));
        assert_eq!(required(&source), vec!["Deep"]);
    }
}
