//! Size and depth limits for the rules a pipeline carries (CEL expressions, handlebars
//! templates), checked on the source text before any parser sees it.
//!
//! Both parsers, and the evaluators after them, recurse once per level of nesting: a member
//! chain `a.b.b.b…` twenty thousand long, or five thousand nested `{{#if}}` blocks, overflows
//! the stack (an abort, exit 134, no message) or runs for seconds. The parser cannot be asked
//! to stop early, so the depth is measured here, on the text, with a cheap scan that
//! overestimates: every operator, dot, bracket and call counts as a level, whatever the
//! precedence. The limits are far above any rule a person writes and below what overflows a
//! worker thread's stack (`headroom`: the deepest accepted rules are compiled and evaluated on
//! a thread with a tokio worker's stack).

/// The longest CEL expression accepted, in bytes.
pub const CEL_MAX_BYTES: usize = 16 * 1024;
/// The most operators, member selections, calls and brackets one CEL expression may hold:
/// an upper bound on the depth of its syntax tree.
pub const CEL_MAX_DEPTH: usize = 256;
/// The longest handlebars template accepted, in bytes.
pub const TEMPLATE_MAX_BYTES: usize = 64 * 1024;
/// The deepest nesting of blocks (`{{#each}}…{{/each}}`) and of subexpressions (`(f (g x))`)
/// a template may hold.
pub const TEMPLATE_MAX_DEPTH: usize = 32;

/// What a `[` or `{` counts towards [`CEL_MAX_DEPTH`].
const BRACKET_WEIGHT: usize = 4;

/// Why a rule is refused, with the byte offset that crossed the limit (for a position).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooDeep {
    pub message: String,
    pub offset: usize,
}

impl std::fmt::Display for TooDeep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Checks a CEL expression against [`CEL_MAX_BYTES`] and [`CEL_MAX_DEPTH`].
pub fn cel(source: &str) -> Result<(), TooDeep> {
    if source.len() > CEL_MAX_BYTES {
        return Err(TooDeep {
            message: format!(
                "the expression is {} bytes long; at most {CEL_MAX_BYTES} are accepted (split it into \
                 several rules, or test a list with `in [...]`)",
                source.len()
            ),
            offset: CEL_MAX_BYTES,
        });
    }
    let bytes = source.as_bytes();
    let mut levels = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\'' | b'"' => {
                i = skip_cel_string(bytes, i);
                continue;
            }
            // Each of these opens a level of the tree: a member selection or index, a call
            // or group, a list or map, and every unary or binary operator.
            b'.' | b'(' | b'[' | b'{' | b'!' | b'-' | b'+' | b'*' | b'/' | b'%' | b'<' | b'>'
            | b'=' | b'?' | b'&' | b'|' => {
                // A digit after a dot is a decimal point, not a selection.
                let decimal = b == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
                // `a.b` chains and `!!!!x` are counted one by one; a two-character operator
                // (`==`, `&&`, `||`, `<=`) is one level.
                let pair = matches!(
                    (b, bytes.get(i + 1)),
                    (b'=' | b'!' | b'<' | b'>', Some(b'='))
                        | (b'&', Some(b'&'))
                        | (b'|', Some(b'|'))
                );
                // List and map literals and indexes cost the evaluator several frames per
                // level (measured: `headroom`), so each counts as four.
                if matches!(b, b'[' | b'{') {
                    levels += BRACKET_WEIGHT;
                } else if !decimal {
                    levels += 1;
                }
                if pair {
                    i += 1;
                }
                if levels > CEL_MAX_DEPTH {
                    return Err(TooDeep {
                        message: format!(
                            "the expression nests more than {CEL_MAX_DEPTH} levels (operators, `.` selections, \
                             calls and brackets); rules that deep cannot be evaluated safely (split it into \
                             several rules, or test a list with `in [...]`)"
                        ),
                        offset: i,
                    });
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// The index just past the CEL string literal starting at `start` (quote, triple quote or raw;
/// an unterminated literal runs to the end, for the parser to report).
fn skip_cel_string(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let raw = start > 0 && matches!(bytes[start - 1], b'r' | b'R');
    let triple = bytes.get(start..start + 3) == Some(&[quote, quote, quote][..]);
    let mut i = start + if triple { 3 } else { 1 };
    while i < bytes.len() {
        if bytes[i] == b'\\' && !raw {
            i += 2;
            continue;
        }
        if triple {
            if bytes.get(i..i + 3) == Some(&[quote, quote, quote][..]) {
                return i + 3;
            }
        } else if bytes[i] == quote {
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

/// Checks a handlebars template against [`TEMPLATE_MAX_BYTES`] and [`TEMPLATE_MAX_DEPTH`]:
/// block nesting counts `{{#…}}`/`{{^…}}` openings against `{{/…}}` closings, and parentheses
/// inside one mustache count subexpressions. Comments and raw blocks are skipped.
pub fn template(source: &str) -> Result<(), TooDeep> {
    if source.len() > TEMPLATE_MAX_BYTES {
        return Err(TooDeep {
            message: format!(
                "the template is {} bytes long; at most {TEMPLATE_MAX_BYTES} are accepted",
                source.len()
            ),
            offset: TEMPLATE_MAX_BYTES,
        });
    }
    let too_deep = |what: &str, offset: usize| TooDeep {
        message: format!(
            "the template nests {what} more than {TEMPLATE_MAX_DEPTH} deep; templates that deep cannot \
             be rendered safely (flatten it, or move the logic into a CEL rule)"
        ),
        offset,
    };
    let mut blocks = 0usize;
    let mut rest = source;
    while let Some(open) = rest.find("{{") {
        let at = source.len() - rest.len() + open;
        let tag = &rest[open..];
        // `{{!-- … --}}` may hold `}}`; `{{! … }}` may not; `{{{{raw}}}}…{{{{/raw}}}}` is text.
        let (end_marker, inner_start) = if tag.starts_with("{{!--") {
            ("--}}", 5)
        } else if tag.starts_with("{{{{") {
            ("}}}}", 4)
        } else {
            ("}}", 2)
        };
        let Some(close) = tag[inner_start..].find(end_marker) else {
            break; // unterminated: the parser reports it
        };
        let inner = &tag[inner_start..inner_start + close];
        let body = inner.trim_start_matches(['{', '~']).trim_start();
        if end_marker == "}}" {
            match body.as_bytes().first() {
                Some(b'#' | b'^') => {
                    blocks += 1;
                    if blocks > TEMPLATE_MAX_DEPTH {
                        return Err(too_deep("blocks", at));
                    }
                }
                Some(b'/') => blocks = blocks.saturating_sub(1),
                Some(b'!') => {}
                _ => {}
            }
            if !body.starts_with('!') {
                let mut parens = 0usize;
                for (k, c) in inner.bytes().enumerate() {
                    match c {
                        b'(' => {
                            parens += 1;
                            if parens > TEMPLATE_MAX_DEPTH {
                                return Err(too_deep("subexpressions", at + inner_start + k));
                            }
                        }
                        b')' => parens = parens.saturating_sub(1),
                        _ => {}
                    }
                }
            }
        }
        rest = &tag[inner_start + close + end_marker.len()..];
    }
    Ok(())
}

/// The first line of `source`, cut to 60 characters: how an error quotes a rule that may be
/// a megabyte long.
pub fn excerpt(source: &str) -> String {
    let line = source.lines().next().unwrap_or("");
    let mut cut: String = line.chars().take(60).collect();
    if cut.len() < source.len() {
        cut.push('…');
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_rules_pass() {
        for rule in [
            "enabled && 'Staff' in groups",
            "licenses.exists(l, l.sku == 'SPB') || attributes.title.startsWith(\"Eng.\")",
            "size(groups) >= 2 && !('Guests' in groups) && 1.5 < 2.0",
            "attributes.note == '((((((((((((((((((((.....' ",
            "r'\\d+.....' != '''a.b.c.'''",
        ] {
            assert_eq!(cel(rule), Ok(()), "{rule}");
        }
        for t in [
            "{{first_name}} {{last_name}}",
            "{{#each people}}{{#if @first}}{{else}}, {{/if}}{{name}}{{/each}}",
            "{{!-- {{#if}} {{#if}} }} --}}{{{{raw}}}}{{#a}}{{{{/raw}}}}",
            "{{lookup (lookup attributes \"x\") \"y\"}}",
        ] {
            assert_eq!(template(t), Ok(()), "{t}");
        }
    }

    #[test]
    fn deep_cel_is_refused_at_the_level_that_crossed_the_limit() {
        let chain = format!("a{}", ".b".repeat(20_000));
        let e = cel(&format!("attributes{}", &chain[1..1000])).expect_err("deep chain");
        assert!(e.message.contains("nests more than"), "{e}");
        let nested = format!("{}true{}", "(".repeat(300), ")".repeat(300));
        assert_eq!(cel(&nested).expect_err("deep parens").offset, CEL_MAX_DEPTH);
        assert!(cel(&"!".repeat(300)).is_err());
        assert!(cel(&vec!["x"; 300].join(" || ")).is_err());
        assert!(
            cel(&chain)
                .expect_err("long")
                .message
                .contains("bytes long")
        );
        // A string literal may hold anything.
        assert_eq!(cel(&format!("'{}' == name", ".".repeat(5000))), Ok(()));
    }

    #[test]
    fn deep_templates_are_refused() {
        let blocks = format!("{}x{}", "{{#if a}}".repeat(1000), "{{/if}}".repeat(1000));
        assert!(
            template(&blocks)
                .expect_err("blocks")
                .message
                .contains("blocks")
        );
        let inverse = format!("{}x", "{{^a}}".repeat(40));
        assert!(template(&inverse).is_err());
        let subexpr = format!("{{{{f {}x{}}}}}", "(f ".repeat(40), ")".repeat(40));
        assert!(
            template(&subexpr)
                .expect_err("sub")
                .message
                .contains("subexpressions")
        );
        // Siblings are not nesting.
        assert_eq!(template(&"{{#if a}}x{{/if}}".repeat(1000)), Ok(()));
        assert!(template(&"x".repeat(TEMPLATE_MAX_BYTES + 1)).is_err());
    }

    #[test]
    fn excerpts_stay_short() {
        assert_eq!(excerpt("a == b"), "a == b");
        assert_eq!(excerpt(&"a.".repeat(5000)).chars().count(), 61);
        assert_eq!(excerpt("x\ny"), "x…");
    }
}

/// The deepest rules the limits accept are compiled, checked and rendered on a thread with a
/// tokio worker's stack (2 MiB), in whatever build runs the tests (debug: the deepest frames).
#[cfg(test)]
mod headroom {
    use super::*;
    use crate::mapping::{Predicate, TemplateKind, TemplateSet};

    fn on_a_small_stack(work: impl FnOnce() + Send + 'static) {
        std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(work)
            .expect("thread")
            .join()
            .expect("no overflow");
    }

    #[test]
    fn the_deepest_accepted_cel_compiles_and_evaluates() {
        on_a_small_stack(|| {
            let n = CEL_MAX_DEPTH;
            for rule in [
                format!("{}true", "!".repeat(n)),
                format!("{}true{}", "(".repeat(n), ")".repeat(n)),
                vec!["enabled"; n + 1].join(" || "),
                format!("attributes{}", ".b".repeat(n)),
                format!(
                    "{}1{} == 1",
                    "[".repeat(n / (2 * BRACKET_WEIGHT) - 1),
                    "][0]".repeat(n / (2 * BRACKET_WEIGHT) - 1)
                ),
                format!("{}1{} == 1", "-".repeat(n - 1), ""),
            ] {
                assert_eq!(cel(&rule), Ok(()), "{}", excerpt(&rule));
                // Compiling also evaluates the rule for a typical person; an error is fine,
                // an overflow is not.
                let _ = Predicate::compile(&rule);
            }
        });
    }

    #[test]
    fn the_deepest_accepted_template_compiles_and_renders() {
        on_a_small_stack(|| {
            let n = TEMPLATE_MAX_DEPTH;
            let blocks = format!(
                "{}{{{{first_name}}}}{}",
                "{{#if first_name}}".repeat(n),
                "{{/if}}".repeat(n)
            );
            let each = format!(
                "{}{{{{name}}}}{}",
                "{{#each people}}".repeat(n),
                "{{/each}}".repeat(n)
            );
            let sub = format!(
                "{{{{lookup {}attributes{} \"x\"}}}}",
                "(lookup ".repeat(n),
                " \"x\")".repeat(n)
            );
            let mut set = TemplateSet::new();
            for (i, (t, kind)) in [
                (blocks, TemplateKind::Person),
                (each, TemplateKind::Line),
                (sub, TemplateKind::Person),
            ]
            .into_iter()
            .enumerate()
            {
                assert_eq!(template(&t), Ok(()), "{}", excerpt(&t));
                let _ = set.add(&format!("t{i}"), &t, kind);
            }
        });
    }
}
