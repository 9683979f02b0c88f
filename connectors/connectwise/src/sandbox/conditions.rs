//! ConnectWise's `conditions=` query language, as the sandbox evaluates it.
//!
//! A client that builds a wrong condition against the real server gets a 400 or, worse, an
//! empty page that looks like "nothing there". The sandbox therefore parses conditions for real
//! and refuses what ConnectWise would refuse, so such a mistake fails a test instead of passing
//! silently.
//!
//! The grammar (keywords are case-insensitive):
//!
//! ```text
//! expr       := and ("or" and)*
//! and        := unary ("and" unary)*
//! unary      := "not" unary | "(" expr ")" | comparison
//! comparison := path ("=" | "!=" | "<" | "<=" | ">" | ">=") scalar
//!             | path ["not"] ("like" | "contains") string
//!             | path ["not"] "in" "(" scalar ("," scalar)* ")"
//! scalar     := string | number | true | false | null | "[" date "]"
//! path       := name ("/" name)*          e.g. company/identifier, _info/lastUpdated
//!                                          (`lastUpdated` and `dateEntered` alone read `_info`)
//! string     := "…" with \" and \\ escapes
//! ```
//!
//! String comparisons ignore case, as ConnectWise's SQL Server collation does; `like` takes `%`
//! (or `*`) as the wildcard; a comparison with a null field is false except `= null`. A path that
//! crosses an array (`communicationItems/value`, in `childConditions`) matches when any element does.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde_json::Value;

/// A parsed condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare {
        path: Vec<String>,
        op: Op,
        value: Literal,
    },
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Like,
    NotLike,
    Contains,
    NotContains,
    In,
    NotIn,
}

/// A value written in a condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Num(Decimal),
    Bool(bool),
    Null,
    Date(DateTime<Utc>),
    List(Vec<Literal>),
}

/// Why a condition could not be parsed; `at` is the character offset of the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionError {
    pub message: String,
    pub at: usize,
}

impl fmt::Display for ConditionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at character {})", self.message, self.at)
    }
}

impl std::error::Error for ConditionError {}

/// Parses a condition.
pub fn parse(input: &str) -> Result<Expr, ConditionError> {
    let tokens = tokenize(input)?;
    let mut parser = Parser {
        tokens,
        pos: 0,
        end: input.chars().count(),
    };
    let expr = parser.or()?;
    match parser.peek() {
        None => Ok(expr),
        Some((tok, at)) => Err(ConditionError {
            message: format!("unexpected {tok} after a complete condition"),
            at,
        }),
    }
}

impl Expr {
    /// Every field path the condition reads, so the caller can refuse unknown fields.
    pub fn paths(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_paths(&mut out);
        out
    }

    /// Reads `alias` as `path` everywhere: ConnectWise takes `lastUpdated` in conditions for
    /// the `_info/lastUpdated` every object carries.
    pub fn alias(&mut self, alias: &str, path: &[&str]) {
        match self {
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.alias(alias, path);
                b.alias(alias, path);
            }
            Expr::Not(a) => a.alias(alias, path),
            Expr::Compare { path: p, .. } => {
                if p.len() == 1 && p[0].eq_ignore_ascii_case(alias) {
                    *p = path.iter().map(|s| (*s).to_owned()).collect();
                }
            }
        }
    }

    fn collect_paths(&self, out: &mut Vec<String>) {
        match self {
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.collect_paths(out);
                b.collect_paths(out);
            }
            Expr::Not(a) => a.collect_paths(out),
            Expr::Compare { path, .. } => out.push(path.join("/")),
        }
    }

    /// Whether the object (as JSON) satisfies the condition.
    pub fn matches(&self, object: &Value) -> bool {
        match self {
            Expr::And(a, b) => a.matches(object) && b.matches(object),
            Expr::Or(a, b) => a.matches(object) || b.matches(object),
            Expr::Not(a) => !a.matches(object),
            Expr::Compare { path, op, value } => {
                let mut found = Vec::new();
                resolve(object, path, &mut found);
                if found.is_empty() {
                    found.push(&Value::Null);
                }
                match op {
                    // A negated operator holds when no element matches the positive one.
                    Op::NotLike | Op::NotContains | Op::NotIn => {
                        let positive = match op {
                            Op::NotLike => Op::Like,
                            Op::NotContains => Op::Contains,
                            _ => Op::In,
                        };
                        found.iter().all(|f| !f.is_null())
                            && !found.iter().any(|f| test(f, positive, value))
                    }
                    _ => found.iter().any(|f| test(f, *op, value)),
                }
            }
        }
    }
}

/// The values at `path`, fanning out over arrays.
pub fn resolve<'a>(value: &'a Value, path: &[String], out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => {
            for item in items {
                resolve(item, path, out);
            }
        }
        _ => match path.split_first() {
            None => out.push(value),
            Some((head, rest)) => {
                if let Some(next) = value.get(head.as_str()) {
                    resolve(next, rest, out);
                }
            }
        },
    }
}

fn test(field: &Value, op: Op, literal: &Literal) -> bool {
    match (op, literal) {
        (Op::Eq, Literal::Null) => field.is_null(),
        (Op::Ne, Literal::Null) => !field.is_null(),
        (_, _) if field.is_null() => false,
        (Op::In, Literal::List(items)) => items.iter().any(|i| test(field, Op::Eq, i)),
        (Op::Like, Literal::Str(pattern)) => {
            like(&text_of(field).to_lowercase(), &pattern.to_lowercase())
        }
        (Op::Contains, Literal::Str(needle)) => text_of(field)
            .to_lowercase()
            .contains(&needle.to_lowercase()),
        (op, literal) => match compare(field, literal) {
            None => false,
            Some(ord) => match op {
                Op::Eq => ord == Ordering::Equal,
                Op::Ne => ord != Ordering::Equal,
                Op::Lt => ord == Ordering::Less,
                Op::Le => ord != Ordering::Greater,
                Op::Gt => ord == Ordering::Greater,
                Op::Ge => ord != Ordering::Less,
                // The parser only pairs these operators with the literals handled above.
                _ => false,
            },
        },
    }
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Orders a field's value against a literal, or `None` when they cannot be compared.
fn compare(field: &Value, literal: &Literal) -> Option<Ordering> {
    match literal {
        Literal::Num(n) => number_of(field).map(|f| f.cmp(n)),
        Literal::Bool(b) => field.as_bool().map(|f| f.cmp(b)),
        Literal::Date(d) => field.as_str().and_then(parse_date).map(|f| f.cmp(d)),
        Literal::Str(s) => Some(text_of(field).to_lowercase().cmp(&s.to_lowercase())),
        Literal::Null | Literal::List(_) => None,
    }
}

/// A JSON number (kept as its exact text under `arbitrary_precision`) or numeric string.
pub fn number_of(value: &Value) -> Option<Decimal> {
    let text = match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return None,
    };
    Decimal::from_str(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .ok()
}

/// An ISO 8601 date-time (`2024-01-31T00:00:00Z`) or date (`2024-01-31`, midnight UTC).
pub fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(d) = DateTime::parse_from_rfc3339(text) {
        return Some(d.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
}

/// SQL `LIKE` over lower-cased text: `%` or `*` matches any run, `_` one character.
fn like(text: &str, pattern: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    // reachable[j]: the pattern's first j characters can match the text read so far.
    let mut reachable = vec![false; p.len() + 1];
    reachable[0] = true;
    for j in 0..p.len() {
        if matches!(p[j], '%' | '*') {
            reachable[j + 1] = reachable[j];
        }
    }
    for &c in &t {
        let mut next = vec![false; p.len() + 1];
        for j in 0..p.len() {
            next[j + 1] = match p[j] {
                '%' | '*' => next[j] || reachable[j + 1] || reachable[j],
                '_' => reachable[j],
                pc => reachable[j] && pc == c,
            };
        }
        reachable = next;
    }
    reachable[p.len()]
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    LParen,
    RParen,
    Comma,
    Cmp(Op),
    Str(String),
    Num(Decimal),
    Date(DateTime<Utc>),
    Word(String),
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::LParen => f.write_str("`(`"),
            Token::RParen => f.write_str("`)`"),
            Token::Comma => f.write_str("`,`"),
            Token::Cmp(op) => write!(f, "operator {op:?}"),
            Token::Str(s) => write!(f, "string {s:?}"),
            Token::Num(n) => write!(f, "number {n}"),
            Token::Date(d) => write!(f, "date [{}]", d.to_rfc3339()),
            Token::Word(w) => write!(f, "`{w}`"),
        }
    }
}

fn tokenize(input: &str) -> Result<Vec<(Token, usize)>, ConditionError> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let err = |message: String, at: usize| ConditionError { message, at };
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' => {
                tokens.push((Token::LParen, start));
                i += 1;
            }
            ')' => {
                tokens.push((Token::RParen, start));
                i += 1;
            }
            ',' => {
                tokens.push((Token::Comma, start));
                i += 1;
            }
            '=' => {
                tokens.push((Token::Cmp(Op::Eq), start));
                i += 1;
            }
            '!' => {
                if chars.get(i + 1) != Some(&'=') {
                    return Err(err("`!` must be followed by `=`".to_owned(), start));
                }
                tokens.push((Token::Cmp(Op::Ne), start));
                i += 2;
            }
            '<' | '>' => {
                let or_equal = chars.get(i + 1) == Some(&'=');
                let op = match (c, or_equal) {
                    ('<', true) => Op::Le,
                    ('<', false) => Op::Lt,
                    (_, true) => Op::Ge,
                    (_, false) => Op::Gt,
                };
                tokens.push((Token::Cmp(op), start));
                i += if or_equal { 2 } else { 1 };
            }
            '"' => {
                let mut text = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(err("unterminated string".to_owned(), start)),
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some('\\') => match chars.get(i + 1) {
                            Some(&e @ ('"' | '\\')) => {
                                text.push(e);
                                i += 2;
                            }
                            _ => {
                                return Err(err(
                                    "in a string, `\\` may only escape `\"` or `\\`".to_owned(),
                                    i,
                                ));
                            }
                        },
                        Some(&ch) => {
                            text.push(ch);
                            i += 1;
                        }
                    }
                }
                tokens.push((Token::Str(text), start));
            }
            '\'' => {
                return Err(err(
                    "strings are written in double quotes".to_owned(),
                    start,
                ));
            }
            '[' => {
                let close = chars[i..].iter().position(|&ch| ch == ']').map(|p| i + p);
                let Some(close) = close else {
                    return Err(err("unterminated date: missing `]`".to_owned(), start));
                };
                let text: String = chars[i + 1..close].iter().collect();
                let date = parse_date(text.trim()).ok_or_else(|| {
                    err(
                        format!(
                            "[{text}] is not a date; write [2024-01-31T00:00:00Z] or [2024-01-31]"
                        ),
                        start,
                    )
                })?;
                tokens.push((Token::Date(date), start));
                i = close + 1;
            }
            c if c.is_ascii_digit() || c == '-' || c == '.' => {
                let mut end = i + 1;
                while end < chars.len() && (chars[end].is_ascii_digit() || chars[end] == '.') {
                    end += 1;
                }
                let text: String = chars[i..end].iter().collect();
                let n = Decimal::from_str(&text)
                    .map_err(|_| err(format!("`{text}` is not a number"), start))?;
                tokens.push((Token::Num(n), start));
                i = end;
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut end = i + 1;
                while end < chars.len()
                    && (chars[end].is_alphanumeric() || matches!(chars[end], '_' | '/'))
                {
                    end += 1;
                }
                tokens.push((Token::Word(chars[i..end].iter().collect()), start));
                i = end;
            }
            other => {
                return Err(err(format!("unexpected character `{other}`"), start));
            }
        }
    }
    Ok(tokens)
}

const KEYWORDS: &[&str] = &[
    "and", "or", "not", "like", "contains", "in", "true", "false", "null",
];

struct Parser {
    tokens: Vec<(Token, usize)>,
    pos: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<(Token, usize)> {
        self.tokens.get(self.pos).cloned()
    }

    fn next(&mut self, expected: &str) -> Result<(Token, usize), ConditionError> {
        let token = self
            .tokens
            .get(self.pos)
            .cloned()
            .ok_or_else(|| ConditionError {
                message: format!("the condition ends where {expected} was expected"),
                at: self.end,
            })?;
        self.pos += 1;
        Ok(token)
    }

    fn keyword(&mut self, word: &str) -> bool {
        match self.tokens.get(self.pos) {
            Some((Token::Word(w), _)) if w.eq_ignore_ascii_case(word) => {
                self.pos += 1;
                true
            }
            _ => false,
        }
    }

    fn or(&mut self) -> Result<Expr, ConditionError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ConditionError> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, ConditionError> {
        if self.keyword("not") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if let Some((Token::LParen, _)) = self.peek() {
            self.pos += 1;
            let inner = self.or()?;
            return match self.next("`)`")? {
                (Token::RParen, _) => Ok(inner),
                (tok, at) => Err(ConditionError {
                    message: format!("expected `)` but found {tok}"),
                    at,
                }),
            };
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, ConditionError> {
        let (token, at) = self.next("a field name")?;
        let path = match token {
            Token::Word(w) if !KEYWORDS.iter().any(|k| w.eq_ignore_ascii_case(k)) => {
                let parts: Vec<String> = w.split('/').map(str::to_owned).collect();
                if parts.iter().any(String::is_empty) {
                    return Err(ConditionError {
                        message: format!("`{w}` is not a field path"),
                        at,
                    });
                }
                parts
            }
            other => {
                return Err(ConditionError {
                    message: format!("expected a field name but found {other}"),
                    at,
                });
            }
        };
        let negated = self.keyword("not");
        let (token, at) = self.next("an operator")?;
        let op = match token {
            Token::Cmp(op) if !negated => op,
            Token::Word(w) if w.eq_ignore_ascii_case("like") => {
                if negated {
                    Op::NotLike
                } else {
                    Op::Like
                }
            }
            Token::Word(w) if w.eq_ignore_ascii_case("contains") => {
                if negated {
                    Op::NotContains
                } else {
                    Op::Contains
                }
            }
            Token::Word(w) if w.eq_ignore_ascii_case("in") => {
                if negated {
                    Op::NotIn
                } else {
                    Op::In
                }
            }
            other => {
                return Err(ConditionError {
                    message: format!(
                        "expected an operator (= != < <= > >= like contains in) after `{}` but found {other}",
                        path.join("/")
                    ),
                    at,
                });
            }
        };
        let value = match op {
            Op::In | Op::NotIn => self.list()?,
            Op::Like | Op::NotLike | Op::Contains | Op::NotContains => {
                match self.next("a string")? {
                    (Token::Str(s), _) => Literal::Str(s),
                    (tok, at) => {
                        return Err(ConditionError {
                            message: format!("`like` and `contains` take a string, not {tok}"),
                            at,
                        });
                    }
                }
            }
            _ => {
                let (value, at) = self.scalar()?;
                let ordering = matches!(op, Op::Lt | Op::Le | Op::Gt | Op::Ge);
                if ordering && matches!(value, Literal::Null | Literal::Bool(_)) {
                    return Err(ConditionError {
                        message: "null and booleans can only be compared with = or !=".to_owned(),
                        at,
                    });
                }
                value
            }
        };
        Ok(Expr::Compare { path, op, value })
    }

    fn list(&mut self) -> Result<Literal, ConditionError> {
        match self.next("`(`")? {
            (Token::LParen, _) => {}
            (tok, at) => {
                return Err(ConditionError {
                    message: format!("`in` takes a list in parentheses, not {tok}"),
                    at,
                });
            }
        }
        let mut items = Vec::new();
        loop {
            items.push(self.scalar()?.0);
            match self.next("`,` or `)`")? {
                (Token::Comma, _) => continue,
                (Token::RParen, _) => break,
                (tok, at) => {
                    return Err(ConditionError {
                        message: format!("expected `,` or `)` in the list but found {tok}"),
                        at,
                    });
                }
            }
        }
        Ok(Literal::List(items))
    }

    fn scalar(&mut self) -> Result<(Literal, usize), ConditionError> {
        let (token, at) = self.next("a value")?;
        let literal = match token {
            Token::Str(s) => Literal::Str(s),
            Token::Num(n) => Literal::Num(n),
            Token::Date(d) => Literal::Date(d),
            Token::Word(w) if w.eq_ignore_ascii_case("true") => Literal::Bool(true),
            Token::Word(w) if w.eq_ignore_ascii_case("false") => Literal::Bool(false),
            Token::Word(w) if w.eq_ignore_ascii_case("null") => Literal::Null,
            Token::Word(w) => {
                return Err(ConditionError {
                    message: format!(
                        "expected a value but found `{w}` (strings are written in double quotes)"
                    ),
                    at,
                });
            }
            other => {
                return Err(ConditionError {
                    message: format!("expected a value but found {other}"),
                    at,
                });
            }
        };
        Ok((literal, at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn contact() -> Value {
        json!({
            "id": 12,
            "firstName": "Zoë",
            "lastName": "O\"Brien",
            "inactiveFlag": false,
            "company": {"id": 3, "identifier": "ACME"},
            "communicationItems": [
                {"value": "zoe@acme.test", "communicationType": "Email", "defaultFlag": true},
                {"value": "555-0100", "communicationType": "Phone"}
            ],
            "quantity": 12.50,
            "_info": {"lastUpdated": "2024-03-01T10:00:00Z"}
        })
    }

    #[track_caller]
    fn check(condition: &str, expected: bool) {
        let expr = parse(condition).unwrap_or_else(|e| panic!("{condition}: {e}"));
        assert_eq!(expr.matches(&contact()), expected, "{condition} → {expr:?}");
    }

    #[track_caller]
    fn refused(condition: &str, message: &str) {
        let err = parse(condition).expect_err(condition);
        assert!(
            err.message.contains(message),
            "{condition}: {err} should contain {message:?}"
        );
    }

    #[test]
    fn comparisons_on_strings_numbers_booleans_and_nested_paths() {
        check(r#"company/identifier="ACME""#, true);
        check(r#"company/identifier = "acme""#, true);
        check(r#"company/identifier != "ACME""#, false);
        check("company/id = 3 AND inactiveFlag = false", true);
        check("id >= 12 and id < 13 and id <= 12 and id > 11", true);
        check("quantity = 12.5", true);
        check("quantity > 12.49", true);
        check("inactiveFlag = true", false);
        check(r#"lastName = "O\"Brien""#, true);
        check(r#"firstName = "ZOË""#, true);
    }

    #[test]
    fn null_like_contains_in_and_dates() {
        check("title = null", true);
        check("title != null", false);
        check(r#"title = "CEO""#, false);
        check(r#"title != "CEO""#, false);
        check("lastName != null", true);
        check(r#"firstName like "z%""#, true);
        check(r#"firstName like "*ë""#, true);
        check(r#"firstName like "z_ë""#, true);
        check(r#"firstName like "a%""#, false);
        check(r#"firstName not like "a%""#, true);
        check(r#"lastName contains "bri""#, true);
        check(r#"lastName not contains "bri""#, false);
        check("id in (1, 12, 40)", true);
        check("id not in (1, 2)", true);
        check(r#"company/identifier in ("GLOBEX", "acme")"#, true);
        check("_info/lastUpdated > [2024-02-29T23:59:59Z]", true);
        check("_info/lastUpdated < [2024-03-01]", false);
    }

    #[test]
    fn and_binds_tighter_than_or_and_parentheses_group() {
        check("id = 1 and id = 2 or id = 12", true);
        check("id = 1 and (id = 2 or id = 12)", false);
        check("not (id = 1) and not id = 2", true);
        check("((id = 12))", true);
    }

    #[test]
    fn array_paths_match_any_element() {
        check(r#"communicationItems/value = "zoe@acme.test""#, true);
        check(r#"communicationItems/communicationType = "Fax""#, false);
    }

    #[test]
    fn malformed_conditions_say_what_is_wrong() {
        refused("", "ends where a field name was expected");
        refused(
            "company/identifier=ACME",
            "expected a value but found `ACME`",
        );
        refused("name = 'Acme'", "double quotes");
        refused(r#"name = "Acme"#, "unterminated string");
        refused(r#"name = "a\b""#, "may only escape");
        refused("id = 1 and", "ends where a field name was expected");
        refused("(id = 1", "ends where `)` was expected");
        refused("id = 1)", "unexpected `)`");
        refused("id == 1", "expected a value but found operator");
        refused("id ~ 1", "unexpected character `~`");
        refused("id in 1", "list in parentheses");
        refused("id in (1 2)", "expected `,` or `)`");
        refused("name like 5", "take a string");
        refused("id < null", "only be compared with = or !=");
        refused("date > [yesterday]", "is not a date");
        refused("and = 1", "expected a field name but found `and`");
        refused("company//id = 1", "is not a field path");
        refused("id not = 1", "expected an operator");
        let err = parse("id = 1 oops").expect_err("trailing");
        assert_eq!(err.at, 7, "{err}");
    }

    #[test]
    fn paths_lists_every_field_read() {
        let expr = parse(r#"a = 1 and (b/c = "x" or not d in (1))"#).expect("parse");
        assert_eq!(expr.paths(), vec!["a", "b/c", "d"]);
    }
}
