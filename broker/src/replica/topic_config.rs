//! Topic configs (Kafka's names) and the [`LogConfig`] they produce.
//!
//! Two entry points with different strictness: [`validate_topic_configs`]
//! guards the ensemble (the admin service calls it before writing a topic),
//! so it refuses unknown keys; [`log_config_for`] derives the storage
//! settings of a partition and ignores keys that are not about storage
//! (`min.insync.replicas` belongs to replication, and a future broker
//! version's keys must not make an older one refuse to host the topic).

use std::collections::BTreeMap;

use tracing::warn;

use crate::log::{LogConfig, TimestampPolicy};

pub const SEGMENT_BYTES: &str = "segment.bytes";
pub const SEGMENT_MS: &str = "segment.ms";
pub const RETENTION_MS: &str = "retention.ms";
pub const RETENTION_BYTES: &str = "retention.bytes";
pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
pub const MESSAGE_TIMESTAMP_TYPE: &str = "message.timestamp.type";
pub const FLUSH_MESSAGES: &str = "flush.messages";
pub const FLUSH_MS: &str = "flush.ms";
pub const INDEX_INTERVAL_BYTES: &str = "index.interval.bytes";
pub const SEGMENT_INDEX_BYTES: &str = "segment.index.bytes";
pub const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";
pub const UNCLEAN_LEADER_ELECTION_ENABLE: &str = "unclean.leader.election.enable";

/// Every key a topic may carry: the storage keys that [`log_config_for`]
/// reads, then the replication keys that later code reads.
pub const TOPIC_CONFIG_KEYS: &[&str] = &[
    SEGMENT_BYTES,
    SEGMENT_MS,
    RETENTION_MS,
    RETENTION_BYTES,
    MAX_MESSAGE_BYTES,
    MESSAGE_TIMESTAMP_TYPE,
    FLUSH_MESSAGES,
    FLUSH_MS,
    INDEX_INTERVAL_BYTES,
    SEGMENT_INDEX_BYTES,
    MIN_INSYNC_REPLICAS,
    UNCLEAN_LEADER_ELECTION_ENABLE,
];

/// Smallest `segment.bytes` Kafka accepts (one v0 record's overhead); below
/// it every append would roll.
const MIN_SEGMENT_BYTES: u64 = 14;

/// Checks that every key is known and every value parses and is in range.
/// The error names the offending key, for the admin API's answer.
pub fn validate_topic_configs(configs: &BTreeMap<String, String>) -> Result<(), String> {
    let mut scratch = LogConfig::default();
    for (key, value) in configs {
        match apply(&mut scratch, key, value)? {
            Applied::Storage | Applied::Other => {}
            Applied::Unknown => {
                return Err(format!("unknown topic config {key:?} (known: {})", TOPIC_CONFIG_KEYS.join(", ")));
            }
        }
    }
    Ok(())
}

/// The storage settings of a topic: `defaults` overridden by the topic's
/// storage keys. Unknown keys are ignored; a known key with a bad value is
/// an error.
pub fn log_config_for(configs: &BTreeMap<String, String>, defaults: &LogConfig) -> Result<LogConfig, String> {
    let mut config = defaults.clone();
    for (key, value) in configs {
        apply(&mut config, key, value)?;
    }
    Ok(config)
}

/// [`log_config_for`] for a topic already in the ensemble: a bad value
/// (only possible if something bypassed validation) falls back to the
/// default for that key instead of leaving the partition unhosted.
pub(crate) fn log_config_lenient(topic: &str, configs: &BTreeMap<String, String>, defaults: &LogConfig) -> LogConfig {
    let mut config = defaults.clone();
    for (key, value) in configs {
        if let Err(e) = apply(&mut config, key, value) {
            warn!(topic, key = %key, error = %e, "ignoring invalid topic config");
        }
    }
    config
}

enum Applied {
    Storage,
    /// Known, valid, but not a storage setting.
    Other,
    Unknown,
}

fn apply(config: &mut LogConfig, key: &str, value: &str) -> Result<Applied, String> {
    let value = value.trim();
    match key {
        SEGMENT_BYTES => {
            config.segment_bytes = int_in(key, value, MIN_SEGMENT_BYTES as i64, i64::from(i32::MAX))? as u64
        }
        SEGMENT_MS => config.segment_ms = Some(int_in(key, value, 1, i64::MAX)?),
        // -1 means "keep forever", as in Kafka.
        RETENTION_MS => config.retention_ms = optional(int_in(key, value, -1, i64::MAX)?),
        RETENTION_BYTES => config.retention_bytes = optional(int_in(key, value, -1, i64::MAX)?).map(|v| v as u64),
        MAX_MESSAGE_BYTES => config.max_batch_bytes = int_in(key, value, 1, i64::from(i32::MAX))? as usize,
        MESSAGE_TIMESTAMP_TYPE => {
            config.timestamp = match value {
                "CreateTime" => TimestampPolicy::CreateTime,
                "LogAppendTime" => TimestampPolicy::LogAppendTime,
                _ => return Err(format!("{key} must be CreateTime or LogAppendTime, not {value:?}")),
            }
        }
        FLUSH_MESSAGES => config.flush.every_batches = Some(int_in(key, value, 1, i64::MAX)? as u64),
        FLUSH_MS => config.flush.interval_ms = Some(int_in(key, value, 0, i64::MAX)?),
        INDEX_INTERVAL_BYTES => config.index_interval_bytes = int_in(key, value, 0, i64::from(i32::MAX))? as u64,
        // One entry of each index kind must fit (Kafka requires at least 4
        // bytes; our time index entries are 12 bytes and offset ones 8).
        SEGMENT_INDEX_BYTES => config.max_index_bytes = int_in(key, value, 24, i64::from(i32::MAX))? as u64,
        MIN_INSYNC_REPLICAS => {
            int_in(key, value, 1, i64::from(i32::MAX))?;
            return Ok(Applied::Other);
        }
        UNCLEAN_LEADER_ELECTION_ENABLE => {
            if value != "true" && value != "false" {
                return Err(format!("{key} must be true or false, not {value:?}"));
            }
            return Ok(Applied::Other);
        }
        _ => return Ok(Applied::Unknown),
    }
    Ok(Applied::Storage)
}

fn int_in(key: &str, value: &str, min: i64, max: i64) -> Result<i64, String> {
    let n: i64 = value.parse().map_err(|_| format!("{key} must be an integer, not {value:?}"))?;
    if n < min || n > max {
        return Err(format!("{key} must be between {min} and {max}, not {n}"));
    }
    Ok(n)
}

fn optional(n: i64) -> Option<i64> {
    (n >= 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn storage_keys_override_defaults() {
        let defaults = LogConfig::default();
        let c = log_config_for(
            &map(&[
                ("segment.bytes", "4096"),
                ("segment.ms", "60000"),
                ("retention.ms", "-1"),
                ("retention.bytes", "100000"),
                ("max.message.bytes", "2048"),
                ("message.timestamp.type", "LogAppendTime"),
                ("flush.messages", "1"),
                ("flush.ms", "1000"),
                ("future.key", "whatever"),
            ]),
            &defaults,
        )
        .unwrap();
        assert_eq!(c.segment_bytes, 4096);
        assert_eq!(c.segment_ms, Some(60_000));
        assert_eq!(c.retention_ms, None);
        assert_eq!(c.retention_bytes, Some(100_000));
        assert_eq!(c.max_batch_bytes, 2048);
        assert_eq!(c.timestamp, TimestampPolicy::LogAppendTime);
        assert_eq!(c.flush.every_batches, Some(1));
        assert_eq!(c.flush.interval_ms, Some(1000));
        assert_eq!(c.index_interval_bytes, defaults.index_interval_bytes);
    }

    #[test]
    fn validation_names_the_bad_key() {
        assert!(validate_topic_configs(&map(&[("retention.ms", "1000"), ("min.insync.replicas", "2")])).is_ok());
        let e = validate_topic_configs(&map(&[("segment.bytes", "abc")])).unwrap_err();
        assert!(e.contains("segment.bytes"), "{e}");
        let e = validate_topic_configs(&map(&[("segment.bytes", "1")])).unwrap_err();
        assert!(e.contains("between"), "{e}");
        let e = validate_topic_configs(&map(&[("retention.mss", "1")])).unwrap_err();
        assert!(e.contains("unknown"), "{e}");
        assert!(validate_topic_configs(&map(&[("message.timestamp.type", "logappendtime")])).is_err());
        assert!(validate_topic_configs(&map(&[("unclean.leader.election.enable", "yes")])).is_err());
        // log_config_for ignores unknown keys but not bad values of known ones.
        assert!(log_config_for(&map(&[("flush.ms", "-5")]), &LogConfig::default()).is_err());
    }

    #[test]
    fn lenient_keeps_the_default_of_a_bad_key() {
        let defaults = LogConfig::default();
        let c = log_config_lenient("t", &map(&[("segment.bytes", "x"), ("retention.ms", "5")]), &defaults);
        assert_eq!(c.segment_bytes, defaults.segment_bytes);
        assert_eq!(c.retention_ms, Some(5));
    }
}
