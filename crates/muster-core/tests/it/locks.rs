//! `locks::cycle_through`: on random wait-for graphs, a cycle it names is a
//! real one, and it names one whenever the new wait closes any.

use muster_core::TaskId;
use muster_core::locks::{Wait, cycle_through};
use proptest::prelude::*;

const TASKS: u128 = 6;

fn t(n: u128) -> TaskId {
    TaskId::from_parts(0, n)
}

/// Lock `L{n}` is held by the tasks in `holders[n]`; task `w` waits for the locks in `waits[w]`.
fn any_graph() -> impl Strategy<Value = (Vec<Vec<u128>>, Vec<Vec<usize>>)> {
    let holders = proptest::collection::vec(proptest::collection::vec(0..TASKS, 0..3), 1..5);
    holders.prop_flat_map(|holders| {
        let locks = holders.len();
        let waits = proptest::collection::vec(proptest::collection::vec(0..locks, 0..3), TASKS as usize);
        (Just(holders), waits)
    })
}

proptest! {
    #[test]
    fn a_named_cycle_is_real_and_a_cycle_is_always_named(
        (holders, waits) in any_graph(),
        waiter in 0..TASKS,
        lock in 0usize..4,
    ) {
        let lock = lock % holders.len();
        let names: Vec<String> = (0..holders.len()).map(|n| format!("L{n}")).collect();
        let held: Vec<Vec<TaskId>> = holders.iter().map(|h| h.iter().map(|&n| t(n)).collect()).collect();
        let tasks: Vec<TaskId> = (0..TASKS).map(t).collect();
        let graph: Vec<Wait<'_>> = waits
            .iter()
            .enumerate()
            .filter(|(w, _)| *w as u128 != waiter)
            .flat_map(|(w, locks)| locks.iter().map(move |&l| (w, l)))
            .map(|(w, l)| Wait { task: &tasks[w], name: &names[l], holders: &held[l] })
            .collect();
        let task = t(waiter);
        let blocking: Vec<TaskId> = held[lock].iter().filter(|h| **h != task).cloned().collect();

        // Brute force: which tasks can reach which along "waits for a lock held by".
        let n = TASKS as usize;
        let mut reach = vec![vec![false; n]; n];
        for w in &graph {
            let from = tasks.iter().position(|x| x == w.task).unwrap();
            for h in w.holders {
                reach[from][tasks.iter().position(|x| x == h).unwrap()] = true;
            }
        }
        for k in 0..n {
            for i in 0..n {
                for j in 0..n {
                    reach[i][j] |= reach[i][k] && reach[k][j];
                }
            }
        }
        let me = waiter as usize;
        let closes = blocking.iter().any(|b| {
            let b = tasks.iter().position(|x| x == b).unwrap();
            b == me || reach[b][me]
        });

        match cycle_through(&task, &names[lock], &blocking, &graph) {
            None => prop_assert!(!closes, "a cycle was missed"),
            Some(cycle) => {
                prop_assert!(closes);
                prop_assert_eq!(&cycle[0], &(task.clone(), names[lock].clone()));
                // Each step's lock is held by the next step's task, and the last one's by the waiter.
                for (i, (_, name)) in cycle.iter().enumerate() {
                    let l: usize = name[1..].parse().unwrap();
                    let next = cycle.get(i + 1).map_or(&task, |(next, _)| next);
                    prop_assert!(held[l].contains(next), "{} does not hold {}", next, name);
                    if i > 0 {
                        let (at, _) = &cycle[i];
                        prop_assert!(graph.iter().any(|w| w.task == at && w.name == name), "{} does not wait for {}", at, name);
                    }
                }
            }
        }
    }
}
