//! Money is exact: `rust_decimal`, rounded once, here, at the currency's minor unit.

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// An ISO 4217 currency with the number of digits of its minor unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Currency {
    Usd,
    Eur,
    Gbp,
    Aud,
    Nzd,
    Cad,
    Chf,
    Jpy,
}

impl Currency {
    pub fn minor_digits(self) -> u32 {
        match self {
            Currency::Jpy => 0,
            _ => 2,
        }
    }
}

/// Rounds an amount to the currency's minor unit, half away from zero (12.345 → 12.35,
/// -12.345 → -12.35), the rule invoices are read with. This is the only rounding rollcall does.
pub fn round_money(amount: Decimal, currency: Currency) -> Decimal {
    let mut rounded = amount.round_dp_with_strategy(
        currency.minor_digits(),
        RoundingStrategy::MidpointAwayFromZero,
    );
    // Always written with the minor unit's digits: 35 is shown and compared as 35.00.
    rounded.rescale(currency.minor_digits());
    rounded
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).expect("decimal")
    }

    #[test]
    fn rounds_half_away_from_zero_at_the_minor_unit() {
        assert_eq!(round_money(d("12.345"), Currency::Usd), d("12.35"));
        assert_eq!(round_money(d("12.344"), Currency::Usd), d("12.34"));
        assert_eq!(round_money(d("-12.345"), Currency::Eur), d("-12.35"));
        assert_eq!(round_money(d("0.125"), Currency::Gbp), d("0.13"));
        assert_eq!(round_money(d("1234.5"), Currency::Jpy), d("1235"));
        assert_eq!(round_money(d("35"), Currency::Usd).to_string(), "35.00");
        assert_eq!(round_money(d("22.5"), Currency::Usd).to_string(), "22.50");
    }
}
