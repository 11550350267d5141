//! Named locks' wait-for graph: the rule that refuses a wait which would
//! close a cycle, so that tasks never deadlock on each other's locks.
//!
//! A backend keeps who holds and who waits for each lock; before it records
//! a new wait it asks `cycle_through` whether the wait would close a cycle,
//! and refuses the acquire with the cycle if it would.

use crate::TaskId;
use std::collections::HashSet;

/// One task waiting for a lock, and the tasks that hold the lock.
#[derive(Debug, Clone, Copy)]
pub struct Wait<'a> {
    pub task: &'a TaskId,
    pub name: &'a str,
    pub holders: &'a [TaskId],
}

/// The cycle that `task` waiting for `name`, held by `blocking`, would
/// close among `waits`: each step as (a task, the lock it waits for),
/// starting with `task` and `name`. `None` when there is no such cycle.
pub fn cycle_through(
    task: &TaskId,
    name: &str,
    blocking: &[TaskId],
    waits: &[Wait<'_>],
) -> Option<Vec<(TaskId, String)>> {
    // Depth first from each holder, along "waits for a lock held by".
    let mut stack: Vec<(&TaskId, Vec<(TaskId, String)>)> =
        blocking.iter().map(|b| (b, vec![(task.clone(), name.to_owned())])).collect();
    let mut seen: HashSet<&TaskId> = HashSet::new();
    while let Some((at, path)) = stack.pop() {
        if at == task {
            return Some(path);
        }
        if !seen.insert(at) {
            continue;
        }
        for w in waits.iter().filter(|w| w.task == at) {
            for holder in w.holders {
                let mut next = path.clone();
                next.push((at.clone(), w.name.to_owned()));
                stack.push((holder, next));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u128) -> TaskId {
        TaskId::from_parts(0, n)
    }

    #[test]
    fn a_wait_that_closes_a_cycle_is_named_from_the_waiter_round_to_it() {
        // 1 holds a, 2 holds b, 3 holds c; 2 waits for c, 3 waits for a.
        let (one, two, three) = (t(1), t(2), t(3));
        let (h1, h3) = ([one.clone()], [three.clone()]);
        let waits = [Wait { task: &two, name: "c", holders: &h3 }, Wait { task: &three, name: "a", holders: &h1 }];
        // 1 waiting for b (held by 2) closes 1 → 2 → 3 → 1.
        let cycle = cycle_through(&one, "b", std::slice::from_ref(&two), &waits).expect("a cycle");
        assert_eq!(
            cycle,
            [(one.clone(), "b".to_owned()), (two.clone(), "c".to_owned()), (three.clone(), "a".to_owned())]
        );
        // A fourth task waiting for b closes nothing.
        assert_eq!(cycle_through(&t(4), "b", std::slice::from_ref(&two), &waits), None);
    }

    #[test]
    fn without_waits_there_is_no_cycle() {
        let one = t(1);
        assert_eq!(cycle_through(&one, "a", &[t(2)], &[]), None);
        assert_eq!(cycle_through(&one, "a", &[], &[]), None);
    }
}
