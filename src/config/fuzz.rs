//! Pipeline YAML against what editors and copy-paste do to it: the shipped examples with bytes
//! deleted, inserted and cut, YAML's own syntax in odd places, deep nesting and alias bombs.
//! Bounded so it stays a few seconds in CI; what it proves is that no pipeline text panics:
//! every one compiles or is refused with errors.

use std::path::Path;

use proptest::prelude::*;

const EXAMPLES: &[&str] = &[
    include_str!("../../mappings/examples/demo.yaml"),
    include_str!("../../mappings/examples/active-directory.yaml"),
    include_str!("../../mappings/examples/quickbooks-file.yaml"),
    include_str!("../../mappings/examples/xero-graph.yaml"),
];

/// Pieces of YAML, CEL and handlebars syntax, more likely to reach odd states than noise.
const TOKENS: &[&str] = &[
    "\n",
    "\n  ",
    ": ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    "&a ",
    "*a",
    "<<: *a",
    "!!binary ",
    "!x ",
    "'",
    "\"",
    "|\n",
    ">-\n",
    "#",
    "\t",
    "---\n",
    "...\n",
    "~",
    "null",
    "1e400",
    "-0",
    "0x10",
    "${X}",
    "${file:/etc/x}",
    "{{",
    "}}",
    "{{#each x}}",
    "{{/each}}",
    "'a' in groups",
    "&&",
    "max_seat_drop: 4294967296",
    "max_seat_drop_percent: -1",
    "\u{202e}",
    "\u{1b}[2J",
    "\u{0}",
    "\u{feff}",
];

fn edited(base: &str, edits: &[(usize, usize, Option<&str>)]) -> String {
    let mut text = base.to_owned();
    for &(at, n, insert) in edits {
        let mut at = at % (text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        match insert {
            Some(t) => text.insert_str(at, t),
            None => {
                let mut end = (at + n).min(text.len());
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.replace_range(at..end, "");
            }
        }
    }
    text
}

fn compile(text: &str) {
    let _ = super::load_str(text, Path::new("/nonexistent/pipeline.yaml"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn edited_examples_never_panic(
        which in 0..EXAMPLES.len(),
        edits in prop::collection::vec(
            (any::<usize>(), 1usize..30, prop::option::of(prop::sample::select(TOKENS))),
            1..6,
        ),
    ) {
        compile(&edited(EXAMPLES[which], &edits));
    }

    #[test]
    fn token_soup_never_panics(tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..80)) {
        compile(&tokens.concat());
    }
}

#[test]
fn deep_nesting_and_alias_bombs_are_refused_not_crashed() {
    for text in [
        "[".repeat(100_000),
        "{a: ".repeat(50_000),
        format!("name: {}", "- ".repeat(50_000)),
        // The billion laughs: each alias doubles the last.
        (0..40).fold("a0: &a0 [x, x]\n".to_owned(), |mut t, n| {
            t.push_str(&format!("a{}: &a{} [*a{n}, *a{n}]\n", n + 1, n + 1));
            t
        }),
    ] {
        assert!(super::load_str(&text, Path::new("p.yaml")).is_err());
    }
}
