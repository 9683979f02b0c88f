//! Autotask's query language, evaluated over the sandbox's entities.
//!
//! A query is a list of conditions that must all hold. A condition compares one field
//! (`eq`, `noteq`, `gt`, `gte`, `lt`, `lte`, `beginsWith`, `endsWith`, `contains`, `exist`,
//! `notExist`, `in`, `notIn`) or groups others (`and`, `or` with `items`). Field names and text
//! compare ignoring case, as Autotask's SQL Server collation does; a field the entity does not
//! have is an error naming it, as Autotask answers, so a client's typo fails loudly instead of
//! matching nothing.

use std::cmp::Ordering;

use rust_decimal::Decimal;
use serde_json::Value;

use crate::model::Filter;

/// Whether `row` (an entity as JSON) satisfies every condition; `Err` names what is invalid.
pub fn matches(entity: &str, row: &Value, filter: &[Filter]) -> Result<bool, String> {
    for condition in filter {
        if !holds(entity, row, condition)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Checks a filter's shape against an entity's fields without a row to match.
pub fn check(entity: &str, sample: &Value, filter: &[Filter]) -> Result<(), String> {
    matches(entity, sample, filter).map(|_| ())
}

fn field<'a>(entity: &str, row: &'a Value, name: &str) -> Result<&'a Value, String> {
    let Value::Object(map) = row else {
        return Err(format!("{entity} is not an object"));
    };
    map.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .ok_or_else(|| format!("Unable to find {name} in the {entity} Entity."))
}

fn holds(entity: &str, row: &Value, condition: &Filter) -> Result<bool, String> {
    let op = condition.op.to_ascii_lowercase();
    match op.as_str() {
        "and" | "or" => {
            if condition.items.is_empty() {
                return Err(format!("The '{}' operator needs items.", condition.op));
            }
            let mut results = Vec::with_capacity(condition.items.len());
            for item in &condition.items {
                results.push(holds(entity, row, item)?);
            }
            Ok(if op == "and" {
                results.iter().all(|r| *r)
            } else {
                results.iter().any(|r| *r)
            })
        }
        _ => {
            if condition.udf {
                return Err("The sandbox keeps no user-defined fields.".to_owned());
            }
            let name = condition
                .field
                .as_deref()
                .ok_or_else(|| format!("The '{}' operator needs a field.", condition.op))?;
            let have = field(entity, row, name)?;
            let present = !have.is_null() && have.as_str().is_none_or(|s| !s.is_empty());
            match op.as_str() {
                "exist" => return Ok(present),
                "notexist" => return Ok(!present),
                _ => {}
            }
            let want = condition.value.as_ref().ok_or_else(|| {
                format!("The '{}' operator on {name} needs a value.", condition.op)
            })?;
            match op.as_str() {
                "eq" => Ok(compare(have, want) == Some(Ordering::Equal)),
                "noteq" => Ok(compare(have, want) != Some(Ordering::Equal)),
                "gt" => Ok(compare(have, want) == Some(Ordering::Greater)),
                "gte" => Ok(matches!(
                    compare(have, want),
                    Some(Ordering::Greater | Ordering::Equal)
                )),
                "lt" => Ok(compare(have, want) == Some(Ordering::Less)),
                "lte" => Ok(matches!(
                    compare(have, want),
                    Some(Ordering::Less | Ordering::Equal)
                )),
                "beginswith" | "endswith" | "contains" => {
                    let (Some(have), Some(want)) = (text(have), text(want)) else {
                        return Ok(false);
                    };
                    Ok(match op.as_str() {
                        "beginswith" => have.starts_with(&want),
                        "endswith" => have.ends_with(&want),
                        _ => have.contains(&want),
                    })
                }
                "in" | "notin" => {
                    let Value::Array(values) = want else {
                        return Err(format!(
                            "The '{}' operator on {name} needs a list.",
                            condition.op
                        ));
                    };
                    let found = values
                        .iter()
                        .any(|v| compare(have, v) == Some(Ordering::Equal));
                    Ok(found == (op == "in"))
                }
                _ => Err(format!("'{}' is not a valid operator.", condition.op)),
            }
        }
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.to_lowercase()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn number(value: &Value) -> Option<Decimal> {
    match value {
        Value::Number(n) => n.to_string().parse().ok(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(Decimal::from(u8::from(*b))),
        _ => None,
    }
}

/// Numbers compare as numbers (a boolean as 1 or 0, as Autotask stores them); text ignoring
/// case; `null` equals nothing.
fn compare(have: &Value, want: &Value) -> Option<Ordering> {
    if have.is_null() || want.is_null() {
        return None;
    }
    if let (Value::String(a), Value::String(b)) = (have, want) {
        return Some(a.to_lowercase().cmp(&b.to_lowercase()));
    }
    match (number(have), number(want)) {
        (Some(a), Some(b)) => Some(a.cmp(&b)),
        _ => Some(text(have)?.cmp(&text(want)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(value: Value) -> Vec<Filter> {
        serde_json::from_value(value).expect("filter")
    }

    #[test]
    fn comparisons_groups_and_case() {
        let row = json!({"id": 7, "companyID": 3, "firstName": "Ada", "isActive": 1,
            "startDate": "2026-01-01T00:00:00Z", "emailAddress": null});
        let yes = |v| assert!(matches("Contact", &row, &f(v)).expect("valid"));
        let no = |v| assert!(!matches("Contact", &row, &f(v)).expect("valid"));
        yes(json!([{"op": "eq", "field": "FIRSTNAME", "value": "ada"}]));
        yes(json!([{"op": "eq", "field": "isActive", "value": true}]));
        yes(
            json!([{"op": "gt", "field": "id", "value": 6}, {"op": "lte", "field": "startDate", "value": "2026-01-01T00:00:00Z"}]),
        );
        no(json!([{"op": "eq", "field": "companyID", "value": 4}]));
        yes(
            json!([{"op": "or", "items": [{"op": "eq", "field": "id", "value": 1}, {"op": "eq", "field": "id", "value": 7}]}]),
        );
        yes(json!([{"op": "in", "field": "id", "value": [1, 7]}]));
        yes(json!([{"op": "notExist", "field": "emailAddress"}]));
        yes(json!([{"op": "beginsWith", "field": "firstName", "value": "A"}]));
        no(json!([{"op": "eq", "field": "emailAddress", "value": "x"}]));
    }

    #[test]
    fn unknown_fields_and_operators_are_errors() {
        let row = json!({"id": 7});
        let err = matches(
            "Contact",
            &row,
            &f(json!([{"op": "eq", "field": "nmae", "value": 1}])),
        )
        .expect_err("unknown field");
        assert!(
            err.contains("Unable to find nmae in the Contact Entity"),
            "{err}"
        );
        assert!(
            matches(
                "Contact",
                &row,
                &f(json!([{"op": "like", "field": "id", "value": 1}]))
            )
            .is_err()
        );
    }
}
