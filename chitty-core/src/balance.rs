//! Which deployment of a model takes a request: a pure selector over the model's routes, by
//! [`BalancePolicy`] (`balance = "weighted" | "least_outstanding" | "ordered"`), each route with a `weight`
//! and a `group`. Groups are tried in ascending order; a group is down when none of its routes is usable
//! (circuit open, as the caller's predicate says), and then the next group takes the request.
//!
//! The selector returns the whole attempt order (every usable route, best first), so the caller falls back
//! within a group and then across groups without asking again.
//!
//! ```
//! use chitty_core::balance::{BalancePolicy, Balancer, Deployment, OutstandingCounter};
//! use chitty_core::SeededRandom;
//!
//! // Two deployments sharing traffic 3:1, and a fallback group used only when both are down.
//! let balancer = Balancer::new(
//!     BalancePolicy::Weighted,
//!     vec![Deployment::new(0, 3), Deployment::new(0, 1), Deployment::new(1, 1)],
//! );
//! let random = SeededRandom::new(7);
//! let order = balancer.attempt_order(|_| true, |_| 0, &random);
//! assert_eq!(order.len(), 3);
//! assert_eq!(order[2], 2, "the fallback group comes last");
//!
//! // Routes 0 and 1 have open circuits: the fallback group answers.
//! assert_eq!(balancer.attempt_order(|i| i == 2, |_| 0, &random), vec![2]);
//!
//! // Least outstanding reads counters that guards keep up to date.
//! let counters = [OutstandingCounter::default(), OutstandingCounter::default()];
//! let busy = counters[0].start();
//! let balancer = Balancer::new(BalancePolicy::LeastOutstanding, vec![Deployment::new(0, 1); 2]);
//! assert_eq!(balancer.attempt_order(|_| true, |i| counters[i].current(), &random)[0], 1);
//! drop(busy);
//! assert_eq!(counters[0].current(), 0);
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::time::RandomSource;

/// How the routes of one group share a model's traffic (the `balance` key of a model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalancePolicy {
    /// Configuration order: the first usable route takes everything (today's behaviour).
    #[default]
    Ordered,
    /// A random route, chosen in proportion to `weight`.
    Weighted,
    /// The route with the fewest requests in flight per unit of `weight`; ties broken at random.
    LeastOutstanding,
}

/// One route's place in the balance: its group (lower groups first) and its share of its group's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Deployment {
    /// Fallback tier: every route of group 0 is tried before any of group 1.
    pub group: u32,
    /// Share of the group's traffic. A weight of 0 takes no share but is still tried, after the others of
    /// its group, when they fail.
    pub weight: u32,
}

impl Deployment {
    /// A route in `group` with `weight`.
    pub fn new(group: u32, weight: u32) -> Deployment {
        Deployment { group, weight }
    }
}

/// A model's routes, grouped, and its policy. Built once per model from configuration; deciding allocates
/// only the returned order.
#[derive(Debug, Clone)]
pub struct Balancer {
    policy: BalancePolicy,
    deployments: Vec<Deployment>,
    /// Route indices sorted by group (stable: configuration order within a group).
    by_group: Vec<usize>,
    /// `by_group[groups[g].0..groups[g].1]` is group g's routes.
    groups: Vec<(usize, usize)>,
}

impl Balancer {
    /// A balancer over `deployments`, indexed as the model's routes are.
    pub fn new(policy: BalancePolicy, deployments: Vec<Deployment>) -> Balancer {
        let mut by_group: Vec<usize> = (0..deployments.len()).collect();
        by_group.sort_by_key(|&i| deployments[i].group);
        let mut groups = Vec::new();
        let mut start = 0;
        for end in 1..=by_group.len() {
            if end == by_group.len() || deployments[by_group[end]].group != deployments[by_group[start]].group {
                groups.push((start, end));
                start = end;
            }
        }
        Balancer { policy, deployments, by_group, groups }
    }

    /// The policy.
    pub fn policy(&self) -> BalancePolicy {
        self.policy
    }

    /// The routes' deployments, in route order.
    pub fn deployments(&self) -> &[Deployment] {
        &self.deployments
    }

    /// Every usable route, in the order to attempt them: groups in ascending order, each group ordered by
    /// the policy. `usable(i)` says whether route `i` may take traffic now (e.g. its circuit is not open); it
    /// should not change state, since the caller still asks the breaker before each attempt.
    /// `outstanding(i)` is route `i`'s requests in flight (read by `least_outstanding` only). Empty when no
    /// route is usable.
    pub fn attempt_order(
        &self,
        usable: impl Fn(usize) -> bool,
        outstanding: impl Fn(usize) -> u64,
        random: &dyn RandomSource,
    ) -> Vec<usize> {
        let mut order = Vec::with_capacity(self.deployments.len());
        for &(start, end) in &self.groups {
            let first = order.len();
            order.extend(self.by_group[start..end].iter().copied().filter(|&i| usable(i)));
            let group = &mut order[first..];
            match self.policy {
                BalancePolicy::Ordered => {}
                BalancePolicy::Weighted => self.weighted_shuffle(group, random),
                BalancePolicy::LeastOutstanding => self.least_outstanding_first(group, &outstanding, random),
            }
        }
        order
    }

    /// The route to try first, if any is usable: [`Balancer::attempt_order`]'s head.
    pub fn pick(
        &self,
        usable: impl Fn(usize) -> bool,
        outstanding: impl Fn(usize) -> u64,
        random: &dyn RandomSource,
    ) -> Option<usize> {
        self.attempt_order(usable, outstanding, random).first().copied()
    }

    /// Reorders `group` as successive weighted draws without replacement (weight-0 routes stay at the end).
    fn weighted_shuffle(&self, group: &mut [usize], random: &dyn RandomSource) {
        let weight = |i: usize| u64::from(self.deployments[i].weight);
        let mut remaining: u64 = group.iter().map(|&i| weight(i)).sum();
        for slot in 0..group.len() {
            if remaining == 0 {
                break;
            }
            // Modulo bias is below total weight / 2^64: negligible.
            let mut draw = random.next_u64() % remaining;
            let mut chosen = slot;
            for (offset, &i) in group[slot..].iter().enumerate() {
                if draw < weight(i) {
                    chosen = slot + offset;
                    break;
                }
                draw -= weight(i);
            }
            group.swap(slot, chosen);
            remaining -= weight(group[slot]);
        }
    }

    /// Sorts `group` by requests in flight per unit of weight, ties in random order.
    fn least_outstanding_first(
        &self,
        group: &mut [usize],
        outstanding: &impl Fn(usize) -> u64,
        random: &dyn RandomSource,
    ) {
        // Compare `a / wa` with `b / wb` as `a · wb` against `b · wa`; weight 0 counts as infinitely loaded.
        let load = |i: usize| (u128::from(outstanding(i)), u128::from(self.deployments[i].weight));
        let mut keyed: Vec<(usize, u64)> = group.iter().map(|&i| (i, random.next_u64())).collect();
        keyed.sort_by(|&(a, ta), &(b, tb)| {
            let ((oa, wa), (ob, wb)) = (load(a), load(b));
            let by_load = match (wa, wb) {
                (0, 0) => std::cmp::Ordering::Equal,
                (0, _) => std::cmp::Ordering::Greater,
                (_, 0) => std::cmp::Ordering::Less,
                _ => (oa * wb).cmp(&(ob * wa)),
            };
            by_load.then(ta.cmp(&tb))
        });
        for (slot, (i, _)) in group.iter_mut().zip(keyed) {
            *slot = i;
        }
    }
}

/// Requests in flight on one route, shared between the balancer (which reads it) and the requests (which
/// hold an [`Outstanding`] guard while they run).
#[derive(Debug, Clone, Default)]
pub struct OutstandingCounter(Arc<AtomicU64>);

impl OutstandingCounter {
    /// Requests in flight now.
    pub fn current(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts one request in flight until the guard is dropped (on success, failure or cancellation alike).
    pub fn start(&self) -> Outstanding {
        self.0.fetch_add(1, Ordering::Relaxed);
        Outstanding(self.0.clone())
    }
}

/// One request in flight on a route; dropping it takes the request off the count.
#[derive(Debug)]
#[must_use = "the request counts as in flight only while the guard lives"]
pub struct Outstanding(Arc<AtomicU64>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::SeededRandom;

    fn deployments(list: &[(u32, u32)]) -> Vec<Deployment> {
        list.iter().map(|&(g, w)| Deployment::new(g, w)).collect()
    }

    #[test]
    fn policy_names_are_the_config_contract() {
        for (policy, name) in [
            (BalancePolicy::Weighted, "\"weighted\""),
            (BalancePolicy::LeastOutstanding, "\"least_outstanding\""),
            (BalancePolicy::Ordered, "\"ordered\""),
        ] {
            assert_eq!(serde_json::to_string(&policy).unwrap(), name);
            assert_eq!(serde_json::from_str::<BalancePolicy>(name).unwrap(), policy);
        }
        assert!(serde_json::from_str::<BalancePolicy>("\"round_robin\"").is_err());
        assert_eq!(BalancePolicy::default(), BalancePolicy::Ordered);
    }

    #[test]
    fn ordered_keeps_configuration_order_and_skips_unusable_routes() {
        let b = Balancer::new(BalancePolicy::Ordered, deployments(&[(0, 1), (0, 5), (0, 1)]));
        let random = SeededRandom::new(1);
        assert_eq!(b.attempt_order(|_| true, |_| 0, &random), vec![0, 1, 2]);
        assert_eq!(b.attempt_order(|i| i != 0, |_| 0, &random), vec![1, 2]);
        assert_eq!(b.pick(|_| false, |_| 0, &random), None);
    }

    #[test]
    fn weighted_choice_follows_the_weights() {
        let b = Balancer::new(BalancePolicy::Weighted, deployments(&[(0, 1), (0, 3), (0, 6), (0, 0)]));
        let random = SeededRandom::new(2026);
        let mut firsts = [0u32; 4];
        let draws = 20_000;
        for _ in 0..draws {
            let order = b.attempt_order(|_| true, |_| 0, &random);
            assert_eq!(order.len(), 4, "every usable route appears once: {order:?}");
            assert_eq!(order[3], 3, "weight 0 is tried last");
            firsts[order[0]] += 1;
        }
        let share = |n: u32| f64::from(n) / f64::from(draws);
        assert!((share(firsts[0]) - 0.1).abs() < 0.01, "{firsts:?}");
        assert!((share(firsts[1]) - 0.3).abs() < 0.015, "{firsts:?}");
        assert!((share(firsts[2]) - 0.6).abs() < 0.015, "{firsts:?}");
        assert_eq!(firsts[3], 0);
    }

    #[test]
    fn weighted_choice_renormalises_over_usable_routes() {
        let b = Balancer::new(BalancePolicy::Weighted, deployments(&[(0, 1), (0, 3), (0, 6)]));
        let random = SeededRandom::new(9);
        let mut firsts = [0u32; 3];
        for _ in 0..10_000 {
            firsts[b.pick(|i| i != 2, |_| 0, &random).unwrap()] += 1;
        }
        assert_eq!(firsts[2], 0);
        assert!((2_300..2_700).contains(&firsts[0]), "1:3 of 10,000: {firsts:?}");
    }

    #[test]
    fn a_group_that_is_down_falls_back_to_the_next() {
        let b = Balancer::new(BalancePolicy::Weighted, deployments(&[(1, 1), (0, 1), (2, 1), (0, 1)]));
        let random = SeededRandom::new(3);
        let order = b.attempt_order(|_| true, |_| 0, &random);
        let mut head = order[..2].to_vec();
        head.sort_unstable();
        assert_eq!((head, order[2], order[3]), (vec![1, 3], 0, 2), "groups 0, 1, 2 in turn");
        assert_eq!(b.attempt_order(|i| i != 1 && i != 3, |_| 0, &random), vec![0, 2]);
        assert_eq!(b.attempt_order(|i| i == 2, |_| 0, &random), vec![2]);
    }

    #[test]
    fn least_outstanding_prefers_the_idlest_route_per_weight() {
        let b = Balancer::new(BalancePolicy::LeastOutstanding, deployments(&[(0, 1), (0, 2), (0, 1), (1, 1)]));
        let random = SeededRandom::new(4);
        let counters: Vec<OutstandingCounter> = (0..4).map(|_| OutstandingCounter::default()).collect();
        let busy = |n: usize, c: &OutstandingCounter| (0..n).map(|_| c.start()).collect::<Vec<_>>();
        let _a = busy(3, &counters[0]);
        let _b = busy(4, &counters[1]); // 4 per 2 units of weight: 2
        let _c = busy(1, &counters[2]);
        let order = b.attempt_order(|_| true, |i| counters[i].current(), &random);
        assert_eq!(order, vec![2, 1, 0, 3]);
        // Guards released: the counts fall and the order follows.
        drop(_c);
        drop(_b);
        assert_eq!(counters[1].current(), 0);
        let first = b.pick(|_| true, |i| counters[i].current(), &random).unwrap();
        assert!(first == 1 || first == 2, "both idle: {first}");
    }

    #[test]
    fn least_outstanding_breaks_ties_at_random() {
        let b = Balancer::new(BalancePolicy::LeastOutstanding, deployments(&[(0, 1), (0, 1), (0, 1)]));
        let random = SeededRandom::new(5);
        let mut firsts = [0u32; 3];
        for _ in 0..3_000 {
            firsts[b.pick(|_| true, |_| 0, &random).unwrap()] += 1;
        }
        assert!(firsts.iter().all(|&n| (900..1_100).contains(&n)), "an idle pool shares evenly: {firsts:?}");
    }

    #[test]
    fn outstanding_guards_count_concurrent_requests() {
        let counter = OutstandingCounter::default();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = counter.clone();
                std::thread::spawn(move || {
                    for _ in 0..1_000 {
                        let _g = c.start();
                    }
                })
            })
            .collect();
        let held = counter.start();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(counter.current(), 1);
        drop(held);
        assert_eq!(counter.current(), 0);
    }
}
