//! Partition assignors: pure functions from the members' subscriptions (and
//! current ownership) and the partition counts of existing topics to a
//! target assignment.
//!
//! Every assignor gives each partition of a subscribed topic to exactly one
//! member subscribed to that topic. Members are ordered by member id, so
//! every coordinator computes the same answer for the same input.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A topic partition as the group module names it.
pub type Tp = (String, u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Assignor {
    /// Kafka's range assignor: per topic, consecutive ranges of partitions
    /// to the members subscribed to it.
    #[serde(rename = "range")]
    Range,
    /// Every subscribed partition, sorted, dealt to the sorted members in
    /// turn (skipping members not subscribed to the partition's topic).
    #[serde(rename = "roundrobin")]
    RoundRobin,
    /// Balanced like round-robin, but each member keeps what it owns as
    /// long as balance allows, so a rebalance moves the fewest partitions.
    #[default]
    #[serde(rename = "cooperative-sticky")]
    CooperativeSticky,
}

impl Assignor {
    /// The wire name; an empty name means the default, cooperative-sticky.
    pub fn parse(name: &str) -> Option<Assignor> {
        match name {
            "" | "cooperative-sticky" => Some(Assignor::CooperativeSticky),
            "range" => Some(Assignor::Range),
            "roundrobin" => Some(Assignor::RoundRobin),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
            Assignor::CooperativeSticky => "cooperative-sticky",
        }
    }

    /// Target partitions of each member (every member has an entry).
    pub fn assign(
        self,
        members: &BTreeMap<String, Subscription>,
        partitions: &BTreeMap<String, u32>,
    ) -> BTreeMap<String, BTreeSet<Tp>> {
        match self {
            Assignor::Range => range(members, partitions),
            Assignor::RoundRobin => round_robin(members, partitions),
            Assignor::CooperativeSticky => sticky(members, partitions),
        }
    }
}

/// What the assignors know of a member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    pub topics: BTreeSet<String>,
    /// Partitions the member owns now (only the sticky assignor reads it).
    pub owned: BTreeSet<Tp>,
}

fn empty_assignment(members: &BTreeMap<String, Subscription>) -> BTreeMap<String, BTreeSet<Tp>> {
    members.keys().map(|m| (m.clone(), BTreeSet::new())).collect()
}

fn subscribers<'a>(members: &'a BTreeMap<String, Subscription>, topic: &str) -> Vec<&'a String> {
    members.iter().filter(|(_, s)| s.topics.contains(topic)).map(|(id, _)| id).collect()
}

fn range(
    members: &BTreeMap<String, Subscription>,
    partitions: &BTreeMap<String, u32>,
) -> BTreeMap<String, BTreeSet<Tp>> {
    let mut out = empty_assignment(members);
    for (topic, &count) in partitions {
        let subs = subscribers(members, topic);
        let Ok(k) = u32::try_from(subs.len()) else { continue };
        if k == 0 {
            continue;
        }
        let (per, extra) = (count / k, count % k);
        let mut next = 0;
        for (i, member) in (0u32..).zip(subs) {
            let n = per + u32::from(i < extra);
            if let Some(set) = out.get_mut(member) {
                set.extend((next..next + n).map(|p| (topic.clone(), p)));
            }
            next += n;
        }
    }
    out
}

fn round_robin(
    members: &BTreeMap<String, Subscription>,
    partitions: &BTreeMap<String, u32>,
) -> BTreeMap<String, BTreeSet<Tp>> {
    let mut out = empty_assignment(members);
    let ids: Vec<&String> = members.keys().collect();
    if ids.is_empty() {
        return out;
    }
    let mut turn = 0usize;
    for (topic, &count) in partitions {
        if !members.values().any(|s| s.topics.contains(topic)) {
            continue;
        }
        for p in 0..count {
            // A subscriber exists, so this finds one within a lap.
            for _ in 0..ids.len() {
                let id = ids[turn % ids.len()];
                turn += 1;
                if members[id].topics.contains(topic) {
                    if let Some(set) = out.get_mut(id) {
                        set.insert((topic.clone(), p));
                    }
                    break;
                }
            }
        }
    }
    out
}

/// Cooperative-sticky: (1) every member keeps the partitions it owns that
/// still exist and that it is still subscribed to; (2) the remaining
/// partitions go, most constrained topics first, each to the least loaded
/// member subscribed to it; (3) while a member has two or more partitions
/// more than another member that could take one of them, one moves
/// (preferring partitions handed out in step 2 over kept ones). Step 3
/// ends because each move lowers the sum of squared counts; at its end,
/// members with the same subscription differ by at most one partition.
fn sticky(
    members: &BTreeMap<String, Subscription>,
    partitions: &BTreeMap<String, u32>,
) -> BTreeMap<String, BTreeSet<Tp>> {
    let exists = |tp: &Tp| partitions.get(&tp.0).is_some_and(|n| tp.1 < *n);
    // Kept partitions (moved only if balance needs it) and fresh ones.
    let mut kept: BTreeMap<&str, BTreeSet<Tp>> = BTreeMap::new();
    let mut fresh: BTreeMap<&str, BTreeSet<Tp>> = BTreeMap::new();
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    let mut taken: BTreeSet<&Tp> = BTreeSet::new();
    for (id, s) in members {
        let mine = kept.entry(id.as_str()).or_default();
        fresh.insert(id.as_str(), BTreeSet::new());
        for tp in &s.owned {
            // Ownership is exclusive in a group; should two members claim
            // one partition anyway, the first in id order keeps it.
            if s.topics.contains(&tp.0) && exists(tp) && taken.insert(tp) {
                mine.insert(tp.clone());
            }
        }
        count.insert(id.as_str(), mine.len());
    }

    // Step 2, topics with the fewest subscribers first.
    let mut topics: Vec<(usize, &String, u32)> = partitions
        .iter()
        .map(|(t, n)| (members.values().filter(|s| s.topics.contains(t)).count(), t, *n))
        .filter(|(subs, _, _)| *subs > 0)
        .collect();
    topics.sort();
    for (_, topic, n) in topics {
        let mut load: BTreeSet<(usize, &str)> = members
            .iter()
            .filter(|(_, s)| s.topics.contains(topic))
            .map(|(id, _)| (count[id.as_str()], id.as_str()))
            .collect();
        for p in 0..n {
            let tp = (topic.clone(), p);
            if taken.contains(&tp) {
                continue;
            }
            let Some((c, id)) = load.pop_first() else { break };
            fresh.entry(id).or_default().insert(tp);
            count.insert(id, c + 1);
            load.insert((c + 1, id));
        }
    }

    // Step 3.
    loop {
        let mut by_load: Vec<(usize, &str)> = count.iter().map(|(id, c)| (*c, *id)).collect();
        by_load.sort();
        let mut moved = false;
        'search: for &(over_count, over) in by_load.iter().rev() {
            for &(under_count, under) in &by_load {
                if over_count <= under_count + 1 {
                    break;
                }
                if let Some(tp) = movable(&fresh[over], &kept[over], &members[under].topics) {
                    if !fresh.get_mut(over).is_some_and(|s| s.remove(&tp)) {
                        kept.get_mut(over).map(|s| s.remove(&tp));
                    }
                    fresh.entry(under).or_default().insert(tp);
                    count.insert(over, over_count - 1);
                    count.insert(under, under_count + 1);
                    moved = true;
                    break 'search;
                }
            }
        }
        if !moved {
            break;
        }
    }

    members
        .keys()
        .map(|id| {
            let mut set = kept.remove(id.as_str()).unwrap_or_default();
            set.extend(fresh.remove(id.as_str()).unwrap_or_default());
            (id.clone(), set)
        })
        .collect()
}

/// A partition of `fresh` (else of `kept`) whose topic is in `topics`.
fn movable(fresh: &BTreeSet<Tp>, kept: &BTreeSet<Tp>, topics: &BTreeSet<String>) -> Option<Tp> {
    for set in [fresh, kept] {
        // Few topics per member in practice: look each up by range rather
        // than scanning every partition the member holds.
        let held: BTreeSet<&String> = set.iter().map(|(t, _)| t).collect();
        for topic in held.into_iter().filter(|t| topics.contains(*t)) {
            if let Some(tp) = set.range((topic.clone(), 0)..=(topic.clone(), u32::MAX)).next() {
                return Some(tp.clone());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn tp(t: &str, p: u32) -> Tp {
        (t.to_string(), p)
    }

    fn sub(topics: &[&str], owned: &[Tp]) -> Subscription {
        Subscription { topics: topics.iter().map(|t| t.to_string()).collect(), owned: owned.iter().cloned().collect() }
    }

    fn members(list: &[(&str, Subscription)]) -> BTreeMap<String, Subscription> {
        list.iter().map(|(id, s)| (id.to_string(), s.clone())).collect()
    }

    fn counts(a: &BTreeMap<String, BTreeSet<Tp>>) -> Vec<usize> {
        a.values().map(BTreeSet::len).collect()
    }

    #[test]
    fn names_round_trip_and_empty_means_sticky() {
        for a in [Assignor::Range, Assignor::RoundRobin, Assignor::CooperativeSticky] {
            assert_eq!(Assignor::parse(a.name()), Some(a));
        }
        assert_eq!(Assignor::parse(""), Some(Assignor::CooperativeSticky));
        assert_eq!(Assignor::parse("sticky"), None);
        assert_eq!(serde_json::to_string(&Assignor::RoundRobin).ok().as_deref(), Some("\"roundrobin\""));
    }

    #[test]
    fn range_gives_consecutive_ranges_per_topic() {
        let m = members(&[("a", sub(&["t", "u"], &[])), ("b", sub(&["t", "u"], &[]))]);
        let parts = BTreeMap::from([("t".to_string(), 3), ("u".to_string(), 1)]);
        let out = Assignor::Range.assign(&m, &parts);
        assert_eq!(out["a"], BTreeSet::from([tp("t", 0), tp("t", 1), tp("u", 0)]));
        assert_eq!(out["b"], BTreeSet::from([tp("t", 2)]));
    }

    #[test]
    fn round_robin_deals_sorted_partitions_in_turn() {
        let m = members(&[("a", sub(&["t", "u"], &[])), ("b", sub(&["t", "u"], &[]))]);
        let parts = BTreeMap::from([("t".to_string(), 3), ("u".to_string(), 1)]);
        let out = Assignor::RoundRobin.assign(&m, &parts);
        assert_eq!(out["a"], BTreeSet::from([tp("t", 0), tp("t", 2)]));
        assert_eq!(out["b"], BTreeSet::from([tp("t", 1), tp("u", 0)]));
    }

    #[test]
    fn sticky_moves_only_what_balance_needs() {
        let all: Vec<Tp> = (0..6).map(|p| tp("t", p)).collect();
        let m = members(&[("a", sub(&["t"], &all)), ("b", sub(&["t"], &[]))]);
        let parts = BTreeMap::from([("t".to_string(), 6)]);
        let out = Assignor::CooperativeSticky.assign(&m, &parts);
        assert_eq!(counts(&out), vec![3, 3]);
        assert!(out["a"].is_subset(&m["a"].owned));
    }

    #[test]
    fn sticky_drops_partitions_of_deleted_topics_and_unsubscribed_ones() {
        let m = members(&[("a", sub(&["t"], &[tp("t", 0), tp("gone", 0), tp("u", 0), tp("t", 9)]))]);
        let parts = BTreeMap::from([("t".to_string(), 2), ("u".to_string(), 1)]);
        let out = Assignor::CooperativeSticky.assign(&m, &parts);
        assert_eq!(out["a"], BTreeSet::from([tp("t", 0), tp("t", 1)]));
    }

    #[test]
    fn no_members_or_no_topics_give_empty_assignments() {
        let parts = BTreeMap::from([("t".to_string(), 2)]);
        for a in [Assignor::Range, Assignor::RoundRobin, Assignor::CooperativeSticky] {
            assert!(a.assign(&BTreeMap::new(), &parts).is_empty());
            let m = members(&[("a", sub(&["missing"], &[]))]);
            assert_eq!(a.assign(&m, &parts)["a"], BTreeSet::new());
        }
    }

    /// Up to 6 members over up to 4 topics (t0..t3) of up to 12 partitions.
    fn scenario() -> impl Strategy<Value = (BTreeMap<String, BTreeSet<String>>, BTreeMap<String, u32>)> {
        let topics = prop::collection::btree_map(0u8..4, 0u32..12, 0..4)
            .prop_map(|m| m.into_iter().map(|(t, n)| (format!("t{t}"), n)).collect::<BTreeMap<_, _>>());
        let subs = prop::collection::btree_map(
            "[a-f]",
            prop::collection::btree_set((0u8..4).prop_map(|t| format!("t{t}")), 0..4),
            0..6,
        );
        (subs, topics)
    }

    fn subscriptions(
        subs: &BTreeMap<String, BTreeSet<String>>,
        owned: &BTreeMap<String, BTreeSet<Tp>>,
    ) -> BTreeMap<String, Subscription> {
        subs.iter()
            .map(|(id, topics)| {
                (id.clone(), Subscription { topics: topics.clone(), owned: owned.get(id).cloned().unwrap_or_default() })
            })
            .collect()
    }

    /// Every partition of a subscribed topic goes to exactly one member
    /// subscribed to it, and nothing else is assigned.
    fn check_valid(
        subs: &BTreeMap<String, BTreeSet<String>>,
        parts: &BTreeMap<String, u32>,
        out: &BTreeMap<String, BTreeSet<Tp>>,
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(out.keys().collect::<Vec<_>>(), subs.keys().collect::<Vec<_>>());
        let mut seen = BTreeSet::new();
        for (id, set) in out {
            for tp in set {
                prop_assert!(subs[id].contains(&tp.0), "{id} got {tp:?} outside its subscription");
                prop_assert!(parts.get(&tp.0).is_some_and(|n| tp.1 < *n), "{tp:?} does not exist");
                prop_assert!(seen.insert(tp.clone()), "{tp:?} assigned twice");
            }
        }
        for (topic, n) in parts {
            if subs.values().any(|s| s.contains(topic)) {
                for p in 0..*n {
                    prop_assert!(seen.contains(&(topic.clone(), p)), "{topic}-{p} unassigned");
                }
            }
        }
        Ok(())
    }

    /// Members with the same subscription differ by at most one partition.
    fn check_balanced(
        subs: &BTreeMap<String, BTreeSet<String>>,
        out: &BTreeMap<String, BTreeSet<Tp>>,
    ) -> Result<(), TestCaseError> {
        for (a, sa) in subs {
            for (b, sb) in subs {
                if sa == sb {
                    prop_assert!(out[a].len() <= out[b].len() + 1, "{a}: {:?} vs {b}: {:?}", out[a], out[b]);
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn every_assignor_is_valid((subs, parts) in scenario()) {
            for a in [Assignor::Range, Assignor::RoundRobin, Assignor::CooperativeSticky] {
                let out = a.assign(&subscriptions(&subs, &BTreeMap::new()), &parts);
                check_valid(&subs, &parts, &out)?;
            }
        }

        #[test]
        fn range_balances_each_topic((subs, parts) in scenario()) {
            let out = Assignor::Range.assign(&subscriptions(&subs, &BTreeMap::new()), &parts);
            for topic in parts.keys() {
                let per: Vec<usize> = subs
                    .iter()
                    .filter(|(_, s)| s.contains(topic))
                    .map(|(id, _)| out[id].iter().filter(|tp| &tp.0 == topic).count())
                    .collect();
                let (min, max) = (per.iter().min(), per.iter().max());
                prop_assert!(max.zip(min).is_none_or(|(x, n)| x - n <= 1), "{topic}: {per:?}");
            }
        }

        #[test]
        fn round_robin_balances_identical_subscriptions(
            n in 1usize..7,
            parts in prop::collection::btree_map("t[0-3]", 0u32..12, 0..4),
        ) {
            let topics: BTreeSet<String> = parts.keys().cloned().collect();
            let subs: BTreeMap<String, BTreeSet<String>> = (0..n).map(|i| (format!("m{i}"), topics.clone())).collect();
            let out = Assignor::RoundRobin.assign(&subscriptions(&subs, &BTreeMap::new()), &parts);
            check_valid(&subs, &parts, &out)?;
            check_balanced(&subs, &out)?;
        }

        /// Sticky from any prior ownership (even one that is stale or
        /// claims partitions twice): valid and balanced.
        #[test]
        fn sticky_is_valid_and_balanced_from_any_ownership(
            (subs, parts) in scenario(),
            claims in prop::collection::vec(("[a-f]", 0u8..5, 0u32..14), 0..40),
        ) {
            let mut owned: BTreeMap<String, BTreeSet<Tp>> = BTreeMap::new();
            for (m, t, p) in claims {
                owned.entry(m).or_default().insert((format!("t{t}"), p));
            }
            let out = Assignor::CooperativeSticky.assign(&subscriptions(&subs, &owned), &parts);
            check_valid(&subs, &parts, &out)?;
            check_balanced(&subs, &out)?;
            // Deterministic: the same input gives the same answer.
            prop_assert_eq!(out, Assignor::CooperativeSticky.assign(&subscriptions(&subs, &owned), &parts));
        }

        /// With one subscription for all, a join or a leave moves the
        /// fewest partitions: no member both loses and gains, and after a
        /// leave no remaining member loses anything.
        #[test]
        fn sticky_keeps_maximal_overlap_on_join_and_leave(
            n in 1usize..7,
            parts in prop::collection::btree_map("t[0-3]", 0u32..16, 1..4),
            leave in any::<prop::sample::Index>(),
        ) {
            let topics: BTreeSet<String> = parts.keys().cloned().collect();
            let subs: BTreeMap<String, BTreeSet<String>> = (0..n).map(|i| (format!("m{i}"), topics.clone())).collect();
            let before = Assignor::CooperativeSticky.assign(&subscriptions(&subs, &BTreeMap::new()), &parts);

            let mut joined = subs.clone();
            joined.insert("new".into(), topics.clone());
            let after = Assignor::CooperativeSticky.assign(&subscriptions(&joined, &before), &parts);
            check_valid(&joined, &parts, &after)?;
            check_balanced(&joined, &after)?;
            for (id, old) in &before {
                let new = &after[id];
                prop_assert!(new.is_subset(old) || old.is_subset(new), "{id}: {old:?} -> {new:?}");
            }

            let gone = subs.keys().nth(leave.index(n)).cloned().unwrap_or_default();
            let mut left = subs.clone();
            left.remove(&gone);
            let after = Assignor::CooperativeSticky.assign(&subscriptions(&left, &before), &parts);
            check_valid(&left, &parts, &after)?;
            check_balanced(&left, &after)?;
            for (id, new) in &after {
                prop_assert!(before[id].is_subset(new), "{id} lost partitions when {gone} left");
            }
        }
    }
}
