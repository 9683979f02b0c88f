//! How long a value each billing system stores in the fields rollcall writes.
//!
//! Directory text is whatever people typed: a 40-character first name is ordinary, and a vendor
//! answers it with a 400 for that one record. Each connector declares its limits here, as data,
//! so the planner can fit values before anything is sent (and say so in the plan) and each
//! sandbox refuses what the vendor refuses, from the same numbers.
//!
//! Lengths are counted in UTF-16 code units, not in `char`s: the systems store text in .NET or
//! SQL Server `nvarchar` columns, which count that way, so a name of emoji or rare CJK
//! characters is longer to them than its `char` count. Counting UTF-16 is never shorter than
//! counting characters, so a value fitted this way also fits a vendor that counts characters.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// The longest value, in UTF-16 code units ([`text_length`]), a billing system stores in each
/// field rollcall writes. `None` where the system sets no limit or rollcall does not write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FieldLimits {
    pub contact_first_name: Option<usize>,
    pub contact_last_name: Option<usize>,
    pub contact_title: Option<usize>,
    /// An address cut short is a different address, so the planner never shortens one: a
    /// contact whose email is longer is left out of the plan with a note.
    pub contact_email: Option<usize>,
    pub contact_phone: Option<usize>,
    /// A billed line's text: a PSA addition's invoice description, an invoice line's.
    pub line_description: Option<usize>,
    /// The customer's name. Customers are found by this name, so it is not shortened either;
    /// the connectors' docs say what a longer one does.
    pub customer_name: Option<usize>,
}

/// A value's length as the billing systems count it: UTF-16 code units.
pub fn text_length(value: &str) -> usize {
    value.encode_utf16().count()
}

/// `value` cut to at most `limit` UTF-16 code units, on a character boundary and without the
/// whitespace the cut leaves at its end, or `value` itself when it fits.
pub fn fit_text(value: &str, limit: usize) -> Cow<'_, str> {
    if text_length(value) <= limit {
        return Cow::Borrowed(value);
    }
    let mut used = 0;
    let mut end = 0;
    for (at, c) in value.char_indices() {
        used += c.len_utf16();
        if used > limit {
            break;
        }
        end = at + c.len_utf8();
    }
    Cow::Owned(value[..end].trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn values_that_fit_are_kept_as_they_are() {
        assert!(matches!(fit_text("Ada", 30), Cow::Borrowed("Ada")));
        assert_eq!(fit_text("", 0), "");
    }

    #[test]
    fn a_long_value_is_cut_on_a_character_boundary() {
        let forty = "Maximiliana-Konstantina Wolfeschlegelst";
        assert_eq!(text_length(forty), 39);
        assert_eq!(fit_text(forty, 30), "Maximiliana-Konstantina Wolfes");
        // A cut that lands after a space does not leave it behind.
        assert_eq!(fit_text("Ada Lovelace", 4), "Ada");
    }

    #[test]
    fn characters_outside_the_basic_plane_count_twice() {
        // Each emoji is two UTF-16 code units; a limit of 3 holds one, not one and a half.
        assert_eq!(text_length("😀😀"), 4);
        assert_eq!(fit_text("😀😀", 3), "😀");
        assert_eq!(fit_text("😀", 1), "");
        // Combining marks are characters of their own; the cut keeps each char whole.
        assert_eq!(fit_text("e\u{301}e\u{301}", 3), "e\u{301}e");
    }

    proptest! {
        #[test]
        fn fitted_text_fits_and_is_a_prefix(value in "\\PC{0,80}", limit in 0usize..60) {
            let fitted = fit_text(&value, limit);
            prop_assert!(text_length(&fitted) <= limit);
            prop_assert!(value.starts_with(fitted.as_ref()));
            if text_length(&value) <= limit {
                prop_assert_eq!(fitted.as_ref(), value.as_str());
            }
            // Fitting twice changes nothing: a plan applied and planned again is empty.
            let again = fit_text(&fitted, limit);
            prop_assert_eq!(again.as_ref(), fitted.as_ref());
        }
    }
}
