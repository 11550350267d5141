//! Estimating what a run has spent while it runs, from its tokens, so a
//! task's cost ceiling can stop it before its agent's own final account.

use super::Usage;
use serde::Deserialize;

/// US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    pub input: f64,
    pub output: f64,
    #[serde(default)]
    pub cache_read: f64,
    #[serde(default)]
    pub cache_write: f64,
}

impl Prices {
    pub fn cost_usd(&self, u: &Usage) -> f64 {
        (u.input_tokens as f64 * self.input
            + u.output_tokens as f64 * self.output
            + u.cache_read_tokens as f64 * self.cache_read
            + u.cache_write_tokens as f64 * self.cache_write)
            / 1e6
    }

    /// List prices of model families, for an estimate when a runner sets none.
    /// The agent's own final account, when it gives one, is what is recorded.
    pub fn of_model(model: &str) -> Option<Prices> {
        let m = model.to_ascii_lowercase();
        let p = |input: f64, output: f64, cache_read: f64, cache_write: f64| {
            Some(Prices { input, output, cache_read, cache_write })
        };
        if m.contains("opus") {
            p(15.0, 75.0, 1.5, 18.75)
        } else if m.contains("sonnet") {
            p(3.0, 15.0, 0.3, 3.75)
        } else if m.contains("haiku") {
            p(1.0, 5.0, 0.1, 1.25)
        } else if m.starts_with("gpt-5") || m.contains("codex") {
            p(1.25, 10.0, 0.125, 0.0)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_tokens_times_price_per_million() {
        let u = Usage {
            input_tokens: 1_000_000,
            output_tokens: 100_000,
            cache_read_tokens: 2_000_000,
            cache_write_tokens: 0,
        };
        let sonnet = Prices::of_model("claude-sonnet-4-5").expect("a known family");
        assert!((sonnet.cost_usd(&u) - (3.0 + 1.5 + 0.6)).abs() < 1e-9);
        assert_eq!(Prices::of_model("some-local-model"), None);
    }
}
