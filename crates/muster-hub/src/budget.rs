//! Daily spending ceilings, per runner and for the fleet.
//!
//! After each run that reported a cost, and whenever the ceilings change,
//! the hub sums what was spent since midnight UTC. A runner past its
//! ceiling, or every runner once the fleet is past its own, is taken out of
//! service until the next midnight (`runner.limited`, by `budget`); runs
//! already going on are not stopped. A runner that is under its ceilings
//! again (an operator raised one) is put back at once. The `budget_reached`
//! alert fires while any runner rests for its budget.

use crate::Hub;
use muster_core::{MicroUsd, Millis, RunnerName};
use muster_store::{CostGroup, StoreError};
use std::collections::BTreeSet;

/// Who limits a runner for its budget, as the runner list and events say.
pub const BY: &str = "budget";
const DAY_MS: i64 = 86_400_000;

impl Hub {
    /// Limits or frees runners by what was spent today.
    pub(crate) async fn enforce_budgets(&self) -> Result<(), StoreError> {
        let runtime = self.runtime();
        let store = &self.shared.store;
        let now = self.now();
        let midnight = Millis(now.0 - now.0.rem_euclid(DAY_MS));
        let next_midnight = Millis(midnight.0 + DAY_MS);
        let (spent, all) = store.costs(CostGroup::Runner, midnight).await?;
        let disabled = store.disabled_runners().await?;
        let by_budget: BTreeSet<String> =
            disabled.iter().filter(|d| d.by == BY && d.in_force(now)).map(|d| d.name.to_string()).collect();
        if runtime.budget_daily.is_none() && runtime.budget_daily_per_runner.is_empty() && by_budget.is_empty() {
            return Ok(());
        }
        let total = all.cost;
        let mut runners: BTreeSet<RunnerName> =
            self.shared.known_runners.lock().expect("runners lock poisoned").iter().cloned().collect();
        runners.extend(spent.iter().filter_map(|r| RunnerName::parse(&r.key).ok()));
        for runner in runners {
            let own = spent.iter().find(|r| r.key == runner.as_str()).map_or(MicroUsd::ZERO, |r| r.cost);
            let over = match (runtime.budget_daily_per_runner.get(&runner), runtime.budget_daily) {
                (Some(ceiling), _) if own >= *ceiling => Some(format!(
                    "daily budget reached: {} of {} spent today on {runner}",
                    own.cents(),
                    ceiling.cents()
                )),
                (_, Some(ceiling)) if total >= ceiling => {
                    Some(format!("fleet daily budget reached: {} of {} spent today", total.cents(), ceiling.cents()))
                }
                _ => None,
            };
            let resting = by_budget.contains(runner.as_str());
            match over {
                Some(why) if !resting => {
                    tracing::warn!(runner = %runner, reason = %why, "runner rests until midnight UTC for its budget");
                    store.limit_runner(&runner, &why, BY, next_midnight, now).await?;
                }
                None if resting => {
                    tracing::info!(runner = %runner, "runner is under its budget again");
                    store.enable_runner(&runner, BY, now).await?;
                    self.wake_dispatcher();
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Runners resting for their budget now, as `runner claude`.
    pub(crate) async fn over_budget(&self) -> Result<Vec<String>, StoreError> {
        let now = self.now();
        Ok(self
            .shared
            .store
            .disabled_runners()
            .await?
            .iter()
            .filter(|d| d.by == BY && d.in_force(now))
            .map(|d| format!("{} ({})", d.name, d.reason))
            .collect())
    }
}
