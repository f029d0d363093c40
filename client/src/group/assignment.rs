//! Pure bookkeeping of what a member owns: how an `Assignment` message
//! changes the owned set, which positions an auto-commit sends, and the
//! wire's per-topic partition lists. No IO, no clock.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use strata_proto::broker::TopicPartitions;

use crate::consumer::TopicPartition;

/// What one `Assignment` message asks of a member that owns `owned`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AssignmentDiff {
    /// Owned and revoked: stop, commit, then confirm.
    pub revoke: Vec<TopicPartition>,
    /// Owned, but the coordinator lists them neither as assigned nor as
    /// revoked: they were taken without a chance to commit (the member
    /// rejoined and the coordinator had already moved them on).
    pub lost: Vec<TopicPartition>,
    /// Assigned and not owned yet: newly added.
    pub added: Vec<TopicPartition>,
    /// Everything owned once the message is applied.
    pub owned_after: BTreeSet<TopicPartition>,
}

#[cfg(test)]
impl AssignmentDiff {
    pub fn is_noop(&self) -> bool {
        self.revoke.is_empty() && self.lost.is_empty() && self.added.is_empty()
    }
}

/// Applies an `Assignment{assigned, revoked}` to `owned`. `assigned` is
/// everything the member owns as of the message; a partition listed in
/// both is treated as revoked (stopping is the safe reading). Revoked
/// partitions the member does not own need a `RevokeDone` all the same, but
/// nothing to stop, so they appear nowhere here.
pub(crate) fn diff_assignment(
    owned: &BTreeSet<TopicPartition>,
    assigned: &BTreeSet<TopicPartition>,
    revoked: &BTreeSet<TopicPartition>,
) -> AssignmentDiff {
    let keep: BTreeSet<TopicPartition> = assigned.difference(revoked).cloned().collect();
    let revoke = owned.intersection(revoked).cloned().collect();
    let lost = owned.iter().filter(|tp| !keep.contains(*tp) && !revoked.contains(*tp)).cloned().collect();
    let added = keep.difference(owned).cloned().collect();
    AssignmentDiff { revoke, lost, added, owned_after: keep }
}

/// The positions an auto-commit should send: those that moved since the
/// last commit sent for the partition (an idle member writes nothing).
pub(crate) fn offsets_to_commit(
    positions: &BTreeMap<TopicPartition, i64>,
    last_sent: &HashMap<TopicPartition, i64>,
) -> Vec<(TopicPartition, i64)> {
    positions.iter().filter(|(tp, p)| last_sent.get(*tp) != Some(*p)).map(|(tp, p)| (tp.clone(), *p)).collect()
}

/// Groups partitions by topic, both sorted, as the wire lists them.
pub(crate) fn to_wire<'a>(partitions: impl IntoIterator<Item = &'a TopicPartition>) -> Vec<TopicPartitions> {
    let mut by_topic: BTreeMap<&str, BTreeSet<u32>> = BTreeMap::new();
    for tp in partitions {
        by_topic.entry(tp.topic.as_str()).or_default().insert(tp.partition);
    }
    by_topic
        .into_iter()
        .map(|(topic, partitions)| TopicPartitions {
            topic: topic.to_string(),
            partitions: partitions.into_iter().collect(),
        })
        .collect()
}

/// The partitions of a wire list.
pub(crate) fn from_wire(list: &[TopicPartitions]) -> BTreeSet<TopicPartition> {
    list.iter().flat_map(|t| t.partitions.iter().map(|p| TopicPartition::new(t.topic.clone(), *p))).collect()
}

/// `orders:0,1,2 payments:4` — for logs and the command line.
pub fn format_partitions<'a>(partitions: impl IntoIterator<Item = &'a TopicPartition>) -> String {
    to_wire(partitions)
        .iter()
        .map(|t| {
            let ps: Vec<String> = t.partitions.iter().map(u32::to_string).collect();
            format!("{}:{}", t.topic, ps.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[(&str, u32)]) -> BTreeSet<TopicPartition> {
        items.iter().map(|(t, p)| TopicPartition::new(*t, *p)).collect()
    }

    fn list(items: &[(&str, u32)]) -> Vec<TopicPartition> {
        items.iter().map(|(t, p)| TopicPartition::new(*t, *p)).collect()
    }

    #[test]
    fn the_first_assignment_adds_everything() {
        let d = diff_assignment(&set(&[]), &set(&[("a", 0), ("a", 1)]), &set(&[]));
        assert_eq!(d.added, list(&[("a", 0), ("a", 1)]));
        assert!(d.revoke.is_empty() && d.lost.is_empty());
        assert_eq!(d.owned_after, set(&[("a", 0), ("a", 1)]));
    }

    #[test]
    fn a_cooperative_revocation_keeps_the_rest_untouched() {
        let owned = set(&[("a", 0), ("a", 1), ("a", 2)]);
        let d = diff_assignment(&owned, &set(&[("a", 0), ("a", 1)]), &set(&[("a", 2)]));
        assert_eq!(d.revoke, list(&[("a", 2)]));
        assert!(d.added.is_empty() && d.lost.is_empty());
        assert_eq!(d.owned_after, set(&[("a", 0), ("a", 1)]));
        // The follow-up assignment that hands a partition over is a pure add.
        let d = diff_assignment(&d.owned_after, &set(&[("a", 0), ("a", 1), ("b", 0)]), &set(&[]));
        assert_eq!(d.added, list(&[("b", 0)]));
        assert!(d.revoke.is_empty() && d.lost.is_empty());
    }

    #[test]
    fn the_same_assignment_twice_changes_nothing() {
        let owned = set(&[("a", 0)]);
        let d = diff_assignment(&owned, &owned, &set(&[]));
        assert!(d.is_noop());
        assert_eq!(d.owned_after, owned);
    }

    #[test]
    fn revoking_what_is_not_owned_stops_nothing() {
        // Already dropped (a repeated message, or lost meanwhile): nothing
        // to commit, though the caller still confirms it.
        let d = diff_assignment(&set(&[("a", 0)]), &set(&[("a", 0)]), &set(&[("a", 1)]));
        assert!(d.is_noop());
    }

    #[test]
    fn owned_partitions_the_coordinator_no_longer_lists_are_lost() {
        let owned = set(&[("a", 0), ("a", 1), ("a", 2)]);
        let d = diff_assignment(&owned, &set(&[("a", 0), ("a", 3)]), &set(&[("a", 1)]));
        assert_eq!(d.revoke, list(&[("a", 1)]));
        assert_eq!(d.lost, list(&[("a", 2)]));
        assert_eq!(d.added, list(&[("a", 3)]));
        assert_eq!(d.owned_after, set(&[("a", 0), ("a", 3)]));
    }

    #[test]
    fn a_partition_both_assigned_and_revoked_is_stopped() {
        let owned = set(&[("a", 0)]);
        let d = diff_assignment(&owned, &set(&[("a", 0), ("a", 1)]), &set(&[("a", 0), ("a", 1)]));
        assert_eq!(d.revoke, list(&[("a", 0)]));
        assert!(d.added.is_empty(), "{d:?}");
        assert!(d.owned_after.is_empty());
    }

    #[test]
    fn auto_commit_sends_only_moved_positions() {
        let positions: BTreeMap<TopicPartition, i64> =
            [(TopicPartition::new("a", 0), 10), (TopicPartition::new("a", 1), 5), (TopicPartition::new("b", 0), 0)]
                .into();
        let last: HashMap<TopicPartition, i64> =
            [(TopicPartition::new("a", 0), 10), (TopicPartition::new("a", 1), 3)].into();
        assert_eq!(
            offsets_to_commit(&positions, &last),
            vec![(TopicPartition::new("a", 1), 5), (TopicPartition::new("b", 0), 0)]
        );
        assert!(offsets_to_commit(&BTreeMap::new(), &last).is_empty());
    }

    #[test]
    fn wire_lists_group_by_topic_and_round_trip() {
        let tps = list(&[("b", 2), ("a", 1), ("b", 0), ("a", 1)]);
        let wire = to_wire(&tps);
        assert_eq!(wire.len(), 2);
        assert_eq!((wire[0].topic.as_str(), wire[0].partitions.clone()), ("a", vec![1]));
        assert_eq!((wire[1].topic.as_str(), wire[1].partitions.clone()), ("b", vec![0, 2]));
        assert_eq!(from_wire(&wire), set(&[("a", 1), ("b", 0), ("b", 2)]));
        assert_eq!(format_partitions(&tps), "a:1 b:0,2");
        assert_eq!(format_partitions(&[]), "");
    }
}
