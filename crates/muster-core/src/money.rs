//! Money: what runs cost and what budgets allow, kept in millionths of a US
//! dollar so that sums are exact, never negative and never `-0`.
//!
//! Dollars cross the wire and the command line as decimal numbers; they
//! become `MicroUsd` at the edge (`from_usd`, `parse`), are added and
//! compared as integers, and are shown by its formats: `$0.012300` for a
//! cost, `cents()` for a budget, `decimal()` for a setting.

/// An amount of money in millionths of a US dollar.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MicroUsd(pub u64);

impl MicroUsd {
    pub const ZERO: MicroUsd = MicroUsd(0);
    /// The largest amount Muster takes, in dollars: a billion.
    pub const MAX_USD: f64 = 1e9;

    /// Dollars as agents report them and people write them: a finite number
    /// from 0 to `MAX_USD`, rounded to the nearest millionth. Anything else
    /// (negative, NaN, infinite, absurd) is `None`.
    pub fn from_usd(usd: f64) -> Option<MicroUsd> {
        (usd.is_finite() && (0.0..=Self::MAX_USD).contains(&usd)).then(|| MicroUsd((usd * 1e6).round() as u64))
    }

    /// `$12.50`, `12.5` or `0.02`: dollars above 0 as a person writes them.
    pub fn parse(text: &str) -> Option<MicroUsd> {
        let text = text.trim();
        let text = text.strip_prefix('$').unwrap_or(text);
        // Only plain decimals: no `inf`, `nan` or exponents.
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return None;
        }
        MicroUsd::from_usd(text.parse().ok()?).filter(|m| !m.is_zero())
    }

    pub fn from_micros(micros: i64) -> MicroUsd {
        MicroUsd(u64::try_from(micros).unwrap_or(0))
    }

    /// As a column of a database that keeps signed integers.
    pub fn micros_i64(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }

    pub fn usd(self) -> f64 {
        self.0 as f64 / 1e6
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn saturating_add(self, other: MicroUsd) -> MicroUsd {
        MicroUsd(self.0.saturating_add(other.0))
    }

    /// `$0.02`: to the nearest cent, as budgets are read.
    pub fn cents(self) -> String {
        let cents = self.0.saturating_add(5_000) / 10_000;
        format!("${}.{:02}", cents / 100, cents % 100)
    }

    /// `12.5`, `0.02`: the shortest decimal that is exactly this amount, as
    /// settings are written.
    pub fn decimal(self) -> String {
        let (whole, frac) = (self.0 / 1_000_000, self.0 % 1_000_000);
        if frac == 0 {
            return whole.to_string();
        }
        let frac = format!("{frac:06}");
        format!("{whole}.{}", frac.trim_end_matches('0'))
    }
}

/// `$0.012300`: to the millionth, as a run's cost is reported.
impl std::fmt::Display for MicroUsd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "${}.{:06}", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

impl std::iter::Sum for MicroUsd {
    fn sum<I: Iterator<Item = MicroUsd>>(iter: I) -> MicroUsd {
        iter.fold(MicroUsd::ZERO, MicroUsd::saturating_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_become_millionths_rounded_and_nonsense_is_refused() {
        assert_eq!(MicroUsd::from_usd(0.0123), Some(MicroUsd(12_300)));
        assert_eq!(MicroUsd::from_usd(0.0000004), Some(MicroUsd(0)));
        assert_eq!(MicroUsd::from_usd(0.0000005), Some(MicroUsd(1)));
        assert_eq!(MicroUsd::from_usd(1e9), Some(MicroUsd(1_000_000_000_000_000)));
        for bad in [-0.01, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e9 + 1.0] {
            assert_eq!(MicroUsd::from_usd(bad), None, "{bad}");
        }
        // -0.0 is a float's zero, not a debt.
        assert_eq!(MicroUsd::from_usd(-0.0), Some(MicroUsd::ZERO));
    }

    #[test]
    fn a_person_writes_dollars_above_zero() {
        assert_eq!(MicroUsd::parse("$12.50"), Some(MicroUsd(12_500_000)));
        assert_eq!(MicroUsd::parse(" 0.02 "), Some(MicroUsd(20_000)));
        for bad in ["", "$", "0", "0.0000001", "-1", "1e3", "inf", "NaN", "12,50", "$1e9999", "1000000001"] {
            assert_eq!(MicroUsd::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_formats_are_exact_and_never_negative() {
        assert_eq!(MicroUsd(12_300).to_string(), "$0.012300");
        assert_eq!(MicroUsd(0).to_string(), "$0.000000");
        assert_eq!(MicroUsd(3_000_001).to_string(), "$3.000001");
        assert_eq!(MicroUsd(20_000).cents(), "$0.02");
        assert_eq!(MicroUsd(14_999).cents(), "$0.01");
        assert_eq!(MicroUsd(15_000).cents(), "$0.02");
        assert_eq!(MicroUsd(12_500_000).decimal(), "12.5");
        assert_eq!(MicroUsd(20_000).decimal(), "0.02");
        assert_eq!(MicroUsd(7_000_000).decimal(), "7");
        // A sum of nothing is zero, where a sum of no f64 is -0.0 and prints `$-0.000000`.
        assert_eq!(std::iter::empty::<MicroUsd>().sum::<MicroUsd>().to_string(), "$0.000000");
        assert_eq!([MicroUsd(u64::MAX), MicroUsd(1)].into_iter().sum::<MicroUsd>(), MicroUsd(u64::MAX));
    }

    #[test]
    fn every_amount_reads_back_as_itself() {
        for micros in [0, 1, 9, 10, 999_999, 1_000_000, 12_345_678, 1_000_000_000_000_000] {
            let m = MicroUsd(micros);
            assert_eq!(MicroUsd::from_usd(m.usd()), Some(m), "{m}");
            if micros > 0 {
                assert_eq!(MicroUsd::parse(&m.decimal()), Some(m), "{}", m.decimal());
                assert_eq!(MicroUsd::parse(&m.to_string()), Some(m), "{m}");
            }
        }
    }
}
