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

/// An amount or quantity from a vendor's JSON, sent as a number (exact, since serde_json keeps
/// the digits) or, by some clients, as a string.
pub fn json_decimal(value: Option<&serde_json::Value>) -> Option<Decimal> {
    match value? {
        serde_json::Value::String(s) => s.trim().parse().ok(),
        other => serde_json::from_value(other.clone()).ok(),
    }
}

/// A decimal as a JSON number with exactly its digits (never through `f64`).
pub fn json_number(amount: Decimal) -> serde_json::Value {
    serde_json::from_str(&amount.normalize().to_string()).unwrap_or(serde_json::Value::Null)
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
