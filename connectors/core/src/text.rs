//! Directory text made safe for where rollcall puts it: terminals, logs, reports, spreadsheets
//! and billing systems.
//!
//! A person's name comes from whoever can edit the directory, so it is hostile input. Control
//! characters (ESC, BEL, CSI, …) in a terminal retitle windows, move the cursor or hide lines;
//! bidirectional controls (U+202E and friends) make `evil.exe` read as `exe.live` in a report
//! or an invoice; and a CSV cell that starts with `=`, `+`, `-` or `@` is run as a formula by
//! the spreadsheet that opens it. These characters have no legitimate use in a name, a
//! product or an invoice line, so [`clean`] removes them rather than escaping: the result is
//! what a person would have meant, and the same on every output (so a cleaned name sent to a
//! vendor reads back equal, and a resync stays a no-op).

use std::borrow::Cow;

/// Whether `c` is removed by [`clean`]: C0 controls other than line feed and tab, DEL, C1
/// controls, and the bidirectional embedding, override, isolate and mark characters.
pub fn is_hostile(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{b}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        | '\u{200e}' | '\u{200f}' | '\u{61c}')
}

/// `text` without control and bidi characters (see [`is_hostile`]); borrowed when there were
/// none, which is nearly always.
pub fn clean(text: &str) -> Cow<'_, str> {
    if has_hostile(text) {
        Cow::Owned(text.chars().filter(|c| !is_hostile(*c)).collect())
    } else {
        Cow::Borrowed(text)
    }
}

/// Whether `text` holds a character [`clean`] removes. Text that is printable ASCII alone is
/// told by its bytes, eight at a time: names nearly always are, and every cell of a plan's
/// text and every field of a desired state is checked.
pub fn has_hostile(text: &str) -> bool {
    !is_printable_ascii(text.as_bytes()) && text.chars().any(is_hostile)
}

/// Every byte in `' '..='~'`, tested a word at a time: a word holds a byte below `' '` when
/// subtracting `0x20` from each byte borrows into a clear top bit, and one above `'~'` when
/// adding 1 to each sets a top bit or one is set already.
fn is_printable_ascii(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const TOPS: u64 = 0x8080_8080_8080_8080;
    let printable = |x: u64| {
        let below_space = x.wrapping_sub(0x20 * ONES) & !x & TOPS;
        let above_tilde = (x.wrapping_add(ONES) | x) & TOPS;
        below_space | above_tilde == 0
    };
    let mut words = bytes.chunks_exact(8);
    words
        .by_ref()
        .all(|w| printable(u64::from_le_bytes(w.try_into().expect("a chunk of 8"))))
        && words.remainder().iter().all(|b| (b' '..=b'~').contains(b))
}

/// Cleans `text` in place (see [`clean`]).
pub fn clean_in_place(text: &mut String) {
    if has_hostile(text) {
        text.retain(|c| !is_hostile(c));
    }
}

/// Cleans every string in a JSON value, object keys included: for output that is built as
/// JSON (reports, `--output json`), so no field can be forgotten.
pub fn clean_json(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(s) => clean_in_place(s),
        Value::Array(items) => items.iter_mut().for_each(clean_json),
        Value::Object(map) => {
            if map.keys().any(|k| k.chars().any(is_hostile)) {
                let entries = std::mem::take(map);
                *map = entries
                    .into_iter()
                    .map(|(k, v)| (clean(&k).into_owned(), v))
                    .collect();
            }
            map.values_mut().for_each(clean_json);
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// One CSV cell, quoted, cleaned (see [`clean`]) and with formulas neutralised: a cell that a
/// spreadsheet would evaluate (it starts with `=`, `+`, `-`, `@`, tab or carriage return) gets
/// a leading `'`, which spreadsheets show as text. A plain number such as `-12.50` is left as
/// it is: it is data, not a formula, and a spreadsheet must still add it up.
pub fn csv_cell(text: &str) -> String {
    let text = clean(text);
    let formula = text.starts_with(['=', '+', '-', '@', '\t', '\r']) && !is_plain_number(&text);
    let prefix = if formula { "'" } else { "" };
    format!("\"{prefix}{}\"", text.replace('"', "\"\""))
}

/// `-12.50`, `+3`, `0.5`: a sign, digits and at most one decimal point, nothing else.
fn is_plain_number(text: &str) -> bool {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The byte-wise short cut finds exactly what a test of every character finds.
        #[test]
        fn printable_ascii_is_told_by_words(bytes in proptest::collection::vec(prop_oneof![
            20 => b' '..=b'~',
            // The bytes either side of each bound, where a word test would slip.
            3 => proptest::sample::select(vec![0x00, 0x09, 0x0a, 0x1f, 0x20, 0x7e, 0x7f, 0x80, 0xff]),
            1 => proptest::num::u8::ANY,
        ], 0..40)) {
            prop_assert_eq!(is_printable_ascii(&bytes), bytes.iter().all(|b| (b' '..=b'~').contains(b)));
        }

        #[test]
        fn hostile_text_is_found_by_its_bytes(text in "(\\PC|[\\x00-\\x1f\\x7f-\\u{9f}\\u{202a}-\\u{202e}\\u{2066}-\\u{2069}\\u{200e}\\u{200f}\\u{61c}]){0,80}") {
            prop_assert_eq!(has_hostile(&text), text.chars().any(is_hostile));
        }
    }

    #[test]
    fn terminal_escapes_and_bidi_overrides_are_removed() {
        assert_eq!(
            clean("Ann\u{1b}]0;pwned\u{7}\u{1b}[31m Lee\u{202e}exe.txt\u{9b}2J"),
            "Ann]0;pwned[31m Leeexe.txt2J"
        );
        assert_eq!(clean("a\u{2066}b\u{2069}c\u{200f}\u{61c}\r"), "abc");
        assert_eq!(
            clean("José Müller-Łukasz 山田\tline\nnext"),
            "José Müller-Łukasz 山田\tline\nnext"
        );
        assert!(matches!(clean("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn formula_cells_are_neutralised_and_numbers_kept() {
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        for formula in [
            "+cmd|' /C calc'!A0",
            "-2+3",
            "@SUM(A1)",
            "\tx",
            "\r=1",
            "-",
            "+",
        ] {
            assert!(csv_cell(formula).starts_with("\"'"), "{formula:?}");
        }
        for data in ["-12.50", "+3", "12", "0.5", "Ann Lee", "a=b", ""] {
            assert!(!csv_cell(data).starts_with("\"'"), "{data:?}");
        }
        // A formula hidden behind a removed control character is still caught.
        assert_eq!(csv_cell("\u{1b}=1+1"), "\"'=1+1\"");
    }

    #[test]
    fn json_strings_and_keys_are_cleaned() {
        let mut v = serde_json::json!({"n\u{1b}": ["a\u{202e}b", {"x": "\u{7}"}], "k": 1});
        clean_json(&mut v);
        assert_eq!(v, serde_json::json!({"n": ["ab", {"x": ""}], "k": 1}));
    }

    proptest! {
        #[test]
        fn cleaned_text_has_nothing_hostile_and_cleaning_twice_changes_nothing(s in any::<String>()) {
            let once = clean(&s).into_owned();
            prop_assert!(!once.chars().any(is_hostile));
            prop_assert_eq!(clean(&once), once.as_str());
            let mut in_place = s.clone();
            clean_in_place(&mut in_place);
            prop_assert_eq!(in_place, once);
        }

        #[test]
        fn a_csv_cell_never_starts_a_formula(s in any::<String>()) {
            let cell = csv_cell(&s);
            let inner = &cell[1..];
            prop_assert!(
                !inner.starts_with(['=', '+', '-', '@', '\t', '\r']) || is_plain_number(&clean(&s)),
                "{:?}", cell
            );
        }
    }
}
