//! Money as integers: nano-USD, never floats; prices per million tokens; cost from usage.

use std::fmt;
use std::ops::{Add, AddAssign};

use serde::{Deserialize, Serialize};

use crate::wire::Usage;

/// An amount of money in nano-US-dollars (10⁻⁹ USD). `u64` holds up to about 18 billion USD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NanoUsd(pub u64);

impl NanoUsd {
    /// Zero dollars.
    pub const ZERO: NanoUsd = NanoUsd(0);
    /// One US dollar.
    pub const ONE_USD: NanoUsd = NanoUsd(1_000_000_000);

    /// Whole dollars.
    pub const fn from_usd(usd: u64) -> NanoUsd {
        NanoUsd(usd.saturating_mul(1_000_000_000))
    }

    /// Micro-dollars (10⁻⁶ USD), the unit most price sheets round to.
    pub const fn from_micros(micros: u64) -> NanoUsd {
        NanoUsd(micros.saturating_mul(1_000))
    }

    /// Saturating subtraction.
    pub const fn saturating_sub(self, other: NanoUsd) -> NanoUsd {
        NanoUsd(self.0.saturating_sub(other.0))
    }

    /// Saturating addition.
    pub const fn saturating_add(self, other: NanoUsd) -> NanoUsd {
        NanoUsd(self.0.saturating_add(other.0))
    }

    /// The amount as a plain decimal with nine decimals and no `$` (`2.500000000`), as JSON APIs carry it.
    pub fn decimal(self) -> impl fmt::Display {
        struct Decimal(u64);
        impl fmt::Display for Decimal {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}.{:09}", self.0 / 1_000_000_000, self.0 % 1_000_000_000)
            }
        }
        Decimal(self.0)
    }
}

impl Add for NanoUsd {
    type Output = NanoUsd;
    fn add(self, rhs: NanoUsd) -> NanoUsd {
        self.saturating_add(rhs)
    }
}

impl AddAssign for NanoUsd {
    fn add_assign(&mut self, rhs: NanoUsd) {
        *self = self.saturating_add(rhs);
    }
}

impl fmt::Display for NanoUsd {
    /// Formats as dollars with nine decimals, e.g. `$0.000150000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}.{:09}", self.0 / 1_000_000_000, self.0 % 1_000_000_000)
    }
}

/// Why a dollar amount did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a dollar amount: {reason}")]
pub struct ParseUsdError {
    input: String,
    reason: &'static str,
}

impl std::str::FromStr for NanoUsd {
    type Err = ParseUsdError;

    /// Parses `"2.50"`, `"$0.000150"` or `"10"` exactly (no floating point), to at most nine decimals.
    fn from_str(s: &str) -> Result<NanoUsd, ParseUsdError> {
        let err = |reason| ParseUsdError { input: s.to_owned(), reason };
        let t = s.trim();
        let t = t.strip_prefix('$').unwrap_or(t).replace('_', "");
        let (whole, frac) = t.split_once('.').unwrap_or((&t, ""));
        if whole.is_empty() && frac.is_empty() {
            return Err(err("no digits"));
        }
        if !whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(err("only digits, one `.` and an optional leading `$` are allowed"));
        }
        if frac.len() > 9 {
            return Err(err("more than nine decimals (a nano-dollar is the smallest unit)"));
        }
        let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| err("too large"))? };
        let frac_nanos: u64 =
            if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().map_err(|_| err("bad decimals"))? };
        whole
            .checked_mul(1_000_000_000)
            .and_then(|n| n.checked_add(frac_nanos))
            .map(NanoUsd)
            .ok_or_else(|| err("too large"))
    }
}

/// Prices of one model, each in nano-USD per million tokens. In configuration (serde) they are decimal dollar
/// strings per million tokens, exact: `{ input = "2.50", output = "10", cached_input = "1.25" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Price of a million prompt tokens.
    #[serde(rename = "input", with = "dollar_string")]
    pub input_per_mtok: NanoUsd,
    /// Price of a million generated tokens.
    #[serde(rename = "output", with = "dollar_string")]
    pub output_per_mtok: NanoUsd,
    /// Price of a million prompt tokens served from the provider's prompt cache; the input price if unset.
    #[serde(
        rename = "cached_input",
        default,
        with = "optional_dollar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub cached_input_per_mtok: Option<NanoUsd>,
}

/// Serde for an amount as a decimal dollar string (`"2.50"`), the form configuration files use.
pub mod dollar_string {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::NanoUsd;

    /// Writes the amount as a plain decimal (`"2.500000000"`), which reads back exactly.
    pub fn serialize<S: Serializer>(amount: &NanoUsd, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&amount.decimal())
    }

    /// Reads `"2.50"`, `"$2.50"` or `"10"` exactly; anything else is an error naming the value.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<NanoUsd, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// [`dollar_string`] for an optional amount.
pub mod optional_dollar_string {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::NanoUsd;

    /// Writes the amount as a dollar string, or nothing.
    pub fn serialize<S: Serializer>(amount: &Option<NanoUsd>, serializer: S) -> Result<S::Ok, S::Error> {
        match amount {
            Some(a) => serializer.collect_str(&a.decimal()),
            None => serializer.serialize_none(),
        }
    }

    /// Reads an optional dollar string.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<NanoUsd>, D::Error> {
        Option::<String>::deserialize(deserializer)?.map(|t| t.parse().map_err(serde::de::Error::custom)).transpose()
    }
}

/// `tokens × price_per_mtok / 10⁶`, rounded up so that a reservation never falls short by rounding.
fn tokens_cost(tokens: u64, per_mtok: NanoUsd) -> NanoUsd {
    let nanos = (u128::from(tokens) * u128::from(per_mtok.0)).div_ceil(1_000_000);
    NanoUsd(u64::try_from(nanos).unwrap_or(u64::MAX))
}

impl ModelPrice {
    /// A price from dollars per million tokens given in micro-dollars (e.g. `2_500_000` for $2.50).
    pub const fn from_micros_per_mtok(input: u64, output: u64) -> ModelPrice {
        ModelPrice {
            input_per_mtok: NanoUsd::from_micros(input),
            output_per_mtok: NanoUsd::from_micros(output),
            cached_input_per_mtok: None,
        }
    }

    /// Cost of `prompt` input tokens and `completion` output tokens, none of them cached.
    pub fn cost(&self, prompt: u64, completion: u64) -> NanoUsd {
        tokens_cost(prompt, self.input_per_mtok) + tokens_cost(completion, self.output_per_mtok)
    }

    /// Cost of a reported usage, pricing cached prompt tokens at the cached-input price.
    pub fn cost_of_usage(&self, usage: &Usage) -> NanoUsd {
        let cached = usage.cached_prompt_tokens().min(usage.prompt_tokens);
        let uncached = usage.prompt_tokens - cached;
        let cached_price = self.cached_input_per_mtok.unwrap_or(self.input_per_mtok);
        tokens_cost(uncached, self.input_per_mtok)
            + tokens_cost(cached, cached_price)
            + tokens_cost(usage.completion_tokens, self.output_per_mtok)
    }

    /// The largest number of output tokens that `budget` pays for after `prompt` input tokens.
    pub fn affordable_output_tokens(&self, budget: NanoUsd, prompt: u64) -> u64 {
        let left = budget.saturating_sub(tokens_cost(prompt, self.input_per_mtok));
        if self.output_per_mtok.0 == 0 {
            return u64::MAX;
        }
        // Floor division: the result's cost, rounded up, never exceeds `left`.
        let tokens = u128::from(left.0) * 1_000_000 / u128::from(self.output_per_mtok.0);
        u64::try_from(tokens).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cost_rounds_up_and_prices_cached_tokens() {
        // $2.50 / $10 per million tokens.
        let p = ModelPrice::from_micros_per_mtok(2_500_000, 10_000_000);
        assert_eq!(p.cost(1_000_000, 0), NanoUsd::from_micros(2_500_000));
        assert_eq!(p.cost(1, 1), NanoUsd(2_500 + 10_000));
        let cheap = ModelPrice::from_micros_per_mtok(1, 1);
        assert_eq!(cheap.cost(1, 0), NanoUsd(1), "a fraction of a nano rounds up");
        let p = ModelPrice { cached_input_per_mtok: Some(NanoUsd::from_micros(1_250_000)), ..p };
        let usage: Usage = serde_json::from_value(serde_json::json!({
            "prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110,
            "prompt_tokens_details": {"cached_tokens": 40}
        }))
        .unwrap();
        assert_eq!(p.cost_of_usage(&usage), NanoUsd(60 * 2_500 + 40 * 1_250 + 10 * 10_000));
        assert_eq!(NanoUsd(1_500_000_123).to_string(), "$1.500000123");
        assert_eq!(NanoUsd(1_500_000_123).decimal().to_string(), "1.500000123");
    }

    #[test]
    fn dollar_strings_parse_exactly() {
        assert_eq!("2.50".parse::<NanoUsd>().unwrap(), NanoUsd(2_500_000_000));
        assert_eq!("$0.000000001".parse::<NanoUsd>().unwrap(), NanoUsd(1));
        assert_eq!("10".parse::<NanoUsd>().unwrap(), NanoUsd::from_usd(10));
        assert_eq!(".5".parse::<NanoUsd>().unwrap(), NanoUsd(500_000_000));
        assert_eq!("1_000.25".parse::<NanoUsd>().unwrap(), NanoUsd(1_000_250_000_000));
        for bad in ["", "$", "1.2.3", "-1", "1e3", "0.0000000001", "99999999999999999999", "abc"] {
            assert!(bad.parse::<NanoUsd>().is_err(), "{bad:?} must not parse");
        }
    }

    proptest! {
        #[test]
        fn display_and_parse_agree(n in any::<u64>()) {
            let shown = NanoUsd(n).to_string();
            prop_assert_eq!(shown.parse::<NanoUsd>().unwrap(), NanoUsd(n));
        }
    }

    proptest! {
        #[test]
        fn affordable_tokens_never_exceed_budget(budget in 0u64..10_000_000_000, prompt in 0u64..100_000,
                                                 inp in 0u64..100_000_000, out in 1u64..100_000_000) {
            let p = ModelPrice::from_micros_per_mtok(inp, out);
            let n = p.affordable_output_tokens(NanoUsd(budget), prompt);
            if p.cost(prompt, 0) <= NanoUsd(budget) {
                prop_assert!(p.cost(prompt, n) <= NanoUsd(budget));
                prop_assert!(p.cost(prompt, n + 1) > NanoUsd(budget) || n == u64::MAX);
            } else {
                prop_assert_eq!(n, 0);
            }
        }
    }
}
