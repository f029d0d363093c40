//! Which broker coordinates a group: rendezvous (highest-random-weight)
//! hashing of the group name over the live, non-draining brokers. When a
//! broker comes or goes, only the groups whose top choice it is (or was)
//! move.
//!
//! Every broker must compute the same answer, across builds and Rust
//! versions (a rolling upgrade runs two builds at once), so the hash is
//! spelled out here instead of borrowed from `std` (whose `DefaultHasher`
//! promises no stability):
//!
//! ```text
//! h = FNV-1a 64 over the group name's UTF-8 bytes, then the broker id's
//!     4 big-endian bytes (two's complement i32)
//! score = splitmix64 finalizer (h)
//! ```
//!
//! The coordinator is the broker with the highest score; equal scores (not
//! seen in practice) go to the lower id. The finalizer spreads FNV's weak
//! low bits, so that consecutive broker ids do not rank alike for every
//! group.

use crate::metadata::model::{BrokerId, ClusterMetadata};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The weight of `broker` for `group`.
pub fn score(group: &str, broker: BrokerId) -> u64 {
    splitmix64(fnv1a(fnv1a(FNV_OFFSET, group.as_bytes()), &broker.to_be_bytes()))
}

/// The coordinator among `candidates`, or None when there is none.
pub fn pick(group: &str, candidates: impl IntoIterator<Item = BrokerId>) -> Option<BrokerId> {
    candidates.into_iter().map(|id| (score(group, id), std::cmp::Reverse(id), id)).max().map(|(_, _, id)| id)
}

/// The coordinator of `group` in this view of the cluster: a registered
/// broker that is not draining.
pub fn coordinator(group: &str, md: &ClusterMetadata) -> Option<BrokerId> {
    pick(group, md.brokers.keys().copied().filter(|id| !md.draining.contains(id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers_pin_the_algorithm() {
        // Computed independently from the definition above (Python); a change here means
        // brokers of different builds would disagree on coordinators.
        assert_eq!(fnv1a(FNV_OFFSET, b""), FNV_OFFSET);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(splitmix64(0), 0);
        assert_eq!(splitmix64(1), 0x5692_161d_100b_05e5);
        assert_eq!(score("g", 1), splitmix64(fnv1a(fnv1a(FNV_OFFSET, b"g"), &[0, 0, 0, 1])));
        assert_eq!(score("orders", 3), 0x44fa_6b12_216c_54e0);
    }

    #[test]
    fn picks_the_highest_score_and_is_order_independent() {
        let ids = [1, 2, 3, 4, 5];
        for g in ["a", "orders", "payments-eu", ""] {
            let best = pick(g, ids).expect("some broker");
            assert!(ids.iter().all(|id| score(g, *id) <= score(g, best)));
            assert_eq!(pick(g, ids.iter().rev().copied()), Some(best));
        }
        assert_eq!(pick("g", []), None);
    }

    #[test]
    fn only_groups_of_a_removed_broker_move() {
        let all = [1, 2, 3, 4];
        let groups: Vec<String> = (0..2000).map(|i| format!("group-{i}")).collect();
        let mut moved = 0;
        let mut per_broker = std::collections::BTreeMap::new();
        for g in &groups {
            let before = pick(g, all).expect("broker");
            *per_broker.entry(before).or_insert(0) += 1;
            let after = pick(g, all.iter().copied().filter(|id| *id != 4)).expect("broker");
            if before == 4 {
                moved += 1;
                assert_ne!(after, 4);
            } else {
                assert_eq!(before, after, "{g} moved although its broker stayed");
            }
        }
        // Roughly a quarter each: the hash spreads groups.
        assert!(per_broker.values().all(|n| (350..650).contains(n)), "{per_broker:?}");
        assert_eq!(moved, per_broker[&4]);
    }

    #[test]
    fn draining_and_unregistered_brokers_do_not_coordinate() {
        use crate::metadata::model::BrokerRegistration;
        let mut md = ClusterMetadata::default();
        assert_eq!(coordinator("g", &md), None);
        for id in [1, 2, 3] {
            md.brokers.insert(id, BrokerRegistration { addr: format!("h:{id}"), rack: String::new(), incarnation: 1 });
        }
        let first = coordinator("g", &md).expect("a coordinator");
        md.draining.insert(first);
        let second = coordinator("g", &md).expect("another coordinator");
        assert_ne!(first, second);
        md.draining.extend([1, 2, 3]);
        assert_eq!(coordinator("g", &md), None);
    }
}
