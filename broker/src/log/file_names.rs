//! Names of everything in a partition directory.

use std::path::{Path, PathBuf};

pub const LOG_SUFFIX: &str = "log";
pub const INDEX_SUFFIX: &str = "index";
pub const TIME_INDEX_SUFFIX: &str = "timeindex";
/// Suffix of a checkpoint being written; a leftover one is a crash remnant.
pub const TMP_SUFFIX: &str = "tmp";
/// Suffix of a partition directory being deleted.
pub const DELETED_SUFFIX: &str = "deleted";
pub const LOG_START_CHECKPOINT: &str = "log-start-offset.checkpoint";
pub const CLEAN_SHUTDOWN_CHECKPOINT: &str = "clean-shutdown.checkpoint";
/// Kafka's name and text format, so operators' tools can read it.
pub const LEADER_EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";
/// `{offset:020}.snapshot`: producer state as of `offset` (exclusive).
pub const SNAPSHOT_SUFFIX: &str = "snapshot";

/// `{base_offset:020}`: zero-padded so that names sort like offsets.
pub fn segment_stem(base_offset: u64) -> String {
    format!("{base_offset:020}")
}

pub fn log_file(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{}.{LOG_SUFFIX}", segment_stem(base_offset)))
}

pub fn index_file(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{}.{INDEX_SUFFIX}", segment_stem(base_offset)))
}

pub fn time_index_file(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{}.{TIME_INDEX_SUFFIX}", segment_stem(base_offset)))
}

pub fn snapshot_file(dir: &Path, offset: u64) -> PathBuf {
    dir.join(format!("{}.{SNAPSHOT_SUFFIX}", segment_stem(offset)))
}

/// Splits `00000000000000000042.log` into (42, "log"). Only exactly twenty
/// digits count, so stray files can never be mistaken for segments.
pub fn parse_segment_file(name: &str) -> Option<(u64, &str)> {
    let (stem, suffix) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Offsets are i64 on the wire; a larger name cannot be one of ours.
    let base: u64 = stem.parse().ok()?;
    (base <= i64::MAX as u64).then_some((base, suffix))
}

/// Kafka's legal topic characters; anything else could escape the data
/// directory or collide after case folding on some file systems.
pub fn is_valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// `{topic}-{partition}`, Kafka's directory name.
pub fn partition_dir_name(topic: &str, partition: u32) -> String {
    format!("{topic}-{partition}")
}

/// Inverse of [`partition_dir_name`]; topics may contain '-', the partition
/// number is after the last one.
pub fn parse_partition_dir(name: &str) -> Option<(String, u32)> {
    let (topic, partition) = name.rsplit_once('-')?;
    if !is_valid_topic(topic) || partition.is_empty() || !partition.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((topic.to_string(), partition.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let p = log_file(Path::new("/d"), 42);
        assert_eq!(p, Path::new("/d/00000000000000000042.log"));
        assert_eq!(parse_segment_file("00000000000000000042.timeindex"), Some((42, "timeindex")));
        let snap = snapshot_file(Path::new("/d"), 7);
        assert_eq!(snap, Path::new("/d/00000000000000000007.snapshot"));
        assert_eq!(parse_segment_file("00000000000000000007.snapshot"), Some((7, SNAPSHOT_SUFFIX)));
        assert_eq!(parse_segment_file("0042.log"), None);
        assert_eq!(parse_segment_file("0000000000000000004x.log"), None);
        assert_eq!(parse_segment_file("99999999999999999999.log"), None);
        assert_eq!(parse_partition_dir("my-topic-7"), Some(("my-topic".into(), 7)));
        assert_eq!(parse_partition_dir("topic-"), None);
        assert_eq!(parse_partition_dir("../x-1"), None);
        assert!(!is_valid_topic("a/b"));
    }
}
