//! Domain types of the data path, free of protobuf.

use std::time::Duration;

use bytes::Bytes;

use super::error::ReplicaError;
use crate::log::LogConfig;

/// When a produce is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// acks=0: the producer does not wait, but the broker still answers.
    None,
    /// acks=1: once the leader has appended.
    Leader,
    /// acks=all: once every in-sync replica has the data.
    All,
}

/// Broker-wide settings of the replica manager.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// Storage settings of a topic that does not set them itself (the
    /// broker's `log.*` defaults).
    pub log_defaults: LogConfig,
    /// How often flush-by-interval, roll-by-time and retention run.
    pub maintenance_interval: Duration,
    /// After a partition failed to open (disk full, I/O error), how soon the
    /// current metadata is applied again.
    pub retry_interval: Duration,
    /// Longest a fetch may wait for data, whatever it asks for.
    pub max_fetch_wait: Duration,
    /// Cap on the records bytes of one fetch response, and the limit when a
    /// request leaves `max_bytes` at 0.
    pub max_fetch_bytes: usize,
    /// Per-partition limit when a request leaves `partition_max_bytes` at 0
    /// (Kafka's `max.partition.fetch.bytes` default).
    pub default_partition_fetch_bytes: usize,
    /// A follower that has not caught up for this long leaves the ISR.
    pub replica_lag_time_max: Duration,
    /// Longest a follower's fetch waits on its leader.
    pub replica_fetch_wait_max: Duration,
    /// Bytes a follower asks for per fetch (the whole response).
    pub replica_fetch_max_bytes: usize,
    /// `min.insync.replicas` of topics that do not set it.
    pub default_min_insync_replicas: usize,
}

impl Default for ReplicaConfig {
    fn default() -> ReplicaConfig {
        ReplicaConfig {
            log_defaults: LogConfig::default(),
            maintenance_interval: Duration::from_secs(5),
            retry_interval: Duration::from_secs(5),
            max_fetch_wait: Duration::from_secs(30),
            max_fetch_bytes: 50 << 20,
            default_partition_fetch_bytes: 1 << 20,
            replica_lag_time_max: Duration::from_secs(10),
            replica_fetch_wait_max: Duration::from_millis(500),
            replica_fetch_max_bytes: 10 << 20,
            default_min_insync_replicas: 1,
        }
    }
}

/// Records for one partition in a produce request.
#[derive(Debug, Clone)]
pub struct ProduceInput {
    pub topic: String,
    pub partition: u32,
    /// One or more RecordBatch v2 batches, back to back.
    pub records: Bytes,
}

/// Where the records of a successful produce landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceInfo {
    /// Offset of the first record of the first batch.
    pub base_offset: u64,
    /// The broker's timestamp when the topic uses log-append time.
    pub log_append_time: Option<i64>,
    pub log_start_offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceResult {
    pub topic: String,
    pub partition: u32,
    pub outcome: Result<ProduceInfo, ReplicaError>,
}

/// One partition of a fetch request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartition {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    pub partition_max_bytes: usize,
    /// The leader epoch the fetcher believes current; -1 skips the check.
    pub current_leader_epoch: i32,
}

/// A fetch request's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchParams {
    pub max_wait: Duration,
    /// Answer as soon as this many records bytes are available.
    pub min_bytes: usize,
    /// Records bytes of the whole response (the first batch found is
    /// returned even if larger, so a consumer can always make progress).
    pub max_bytes: usize,
    /// -1 for consumers, a broker id for follower replicas.
    pub replica_id: i32,
}

/// Stored batches of one partition, byte for byte, and its offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedData {
    pub records: Bytes,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    pub log_end_offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResult {
    pub topic: String,
    pub partition: u32,
    pub outcome: Result<FetchedData, ReplicaError>,
}

/// ListOffsets: -2 for the earliest offset, -1 for the latest.
pub const EARLIEST_TIMESTAMP: i64 = -2;
pub const LATEST_TIMESTAMP: i64 = -1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsInput {
    pub topic: String,
    pub partition: u32,
    /// [`EARLIEST_TIMESTAMP`], [`LATEST_TIMESTAMP`] or a time in ms.
    pub timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsResult {
    pub topic: String,
    pub partition: u32,
    /// `None` when no record is at or after the timestamp.
    pub outcome: Result<Option<u64>, ReplicaError>,
}

/// OffsetForLeaderEpoch for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochQuery {
    pub topic: String,
    pub partition: u32,
    pub leader_epoch: i32,
    pub current_leader_epoch: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochEndResult {
    pub topic: String,
    pub partition: u32,
    /// (epoch, end offset), or None when the leader holds no epoch that old.
    pub outcome: Result<Option<(i32, u64)>, ReplicaError>,
}
