//! Per-partition failures of the data path, each mapping to one stable
//! wire code (`strata.common.v1.ErrorCode`, broker range 100..).

use strata_proto::broker as pb;
use strata_proto::common::ErrorCode;
use strata_proto::record_batch::BatchError;
use tracing::warn;

use crate::log::LogError;
use crate::metadata::model::BrokerId;

/// Who leads a partition, as far as this broker's metadata knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    pub id: BrokerId,
    /// Empty when the leader is not registered (its session just expired).
    pub addr: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaError {
    #[error("unknown topic or partition {topic}-{partition}")]
    UnknownTopicOrPartition { topic: String, partition: u32 },
    #[error("broker is not the leader of {topic}-{partition}{}", hint_text(.leader))]
    NotLeader { topic: String, partition: u32, leader: Option<LeaderHint> },
    #[error("{topic}-{partition} has no serving leader right now")]
    LeaderNotAvailable { topic: String, partition: u32 },
    #[error("corrupt record batch: {0}")]
    CorruptRecord(String),
    #[error("record batch of {size} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge { size: usize, max: usize },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("offset {requested} is out of range [{start}, {end}]")]
    OffsetOutOfRange { requested: i64, start: u64, end: u64 },
    #[error("acks=all needs at least {min} in-sync replicas (min.insync.replicas), but the ISR has {isr}")]
    NotEnoughReplicas { isr: usize, min: usize },
    #[error("appended, but the ISR shrank to {isr}, below min.insync.replicas={min}, before it was replicated")]
    NotEnoughReplicasAfterAppend { isr: usize, min: usize },
    #[error("leader epoch {given} is older than the current {current}")]
    FencedLeaderEpoch { current: i32, given: i32 },
    #[error("leader epoch {given} is newer than {current}, the latest this broker knows")]
    UnknownLeaderEpoch { current: i32, given: i32 },
    #[error("producer {producer_id}: expected sequence {expected}, got {got}")]
    OutOfOrderSequence { producer_id: i64, expected: i32, got: i32 },
    #[error("producer {producer_id}: epoch {given} is older than {current}")]
    InvalidProducerEpoch { producer_id: i64, current: i16, given: i16 },
    #[error("producer {producer_id} is unknown to this partition and its batch does not start a sequence")]
    UnknownProducerId { producer_id: i64 },
    #[error("timed out waiting for the in-sync replicas")]
    RequestTimedOut,
    #[error("storage error: {0}")]
    Storage(String),
    /// A follower's log does not line up with what the leader sent (it
    /// must settle with the leader by epoch again). Never sent on the wire.
    #[error("replica log diverged from the leader's: {0}")]
    Diverged(String),
    #[error("broker is shutting down")]
    ShuttingDown,
}

fn hint_text(leader: &Option<LeaderHint>) -> String {
    match leader {
        Some(h) => format!(" (leader is broker {} at {})", h.id, h.addr),
        None => String::new(),
    }
}

impl ReplicaError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ReplicaError::UnknownTopicOrPartition { .. } => ErrorCode::UnknownTopicOrPartition,
            ReplicaError::NotLeader { .. } => ErrorCode::NotLeaderForPartition,
            ReplicaError::LeaderNotAvailable { .. } => ErrorCode::LeaderNotAvailable,
            ReplicaError::CorruptRecord(_) => ErrorCode::CorruptRecord,
            ReplicaError::MessageTooLarge { .. } => ErrorCode::MessageTooLarge,
            ReplicaError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            ReplicaError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            ReplicaError::NotEnoughReplicas { .. } => ErrorCode::NotEnoughReplicas,
            ReplicaError::NotEnoughReplicasAfterAppend { .. } => ErrorCode::NotEnoughReplicasAfterAppend,
            ReplicaError::FencedLeaderEpoch { .. } => ErrorCode::FencedLeaderEpoch,
            ReplicaError::UnknownLeaderEpoch { .. } => ErrorCode::UnknownLeaderEpoch,
            ReplicaError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequenceNumber,
            ReplicaError::InvalidProducerEpoch { .. } => ErrorCode::InvalidProducerEpoch,
            ReplicaError::UnknownProducerId { .. } => ErrorCode::UnknownProducerId,
            ReplicaError::RequestTimedOut => ErrorCode::RequestTimedOut,
            ReplicaError::Storage(_) => ErrorCode::StorageError,
            ReplicaError::Diverged(_) => ErrorCode::InvalidRequest,
            ReplicaError::ShuttingDown => ErrorCode::BrokerNotAvailable,
        }
    }

    /// The wire form. `leader_id` is -1 unless this is NOT_LEADER with a
    /// known leader.
    pub fn to_pb(&self) -> pb::PartitionError {
        let (leader_id, leader_addr) = match self {
            ReplicaError::NotLeader { leader: Some(h), .. } => (h.id, h.addr.clone()),
            _ => (-1, String::new()),
        };
        pb::PartitionError { code: self.code() as i32, message: self.to_string(), leader_id, leader_addr }
    }
}

impl From<BatchError> for ReplicaError {
    fn from(e: BatchError) -> ReplicaError {
        match e {
            BatchError::TooLarge { size, max } => ReplicaError::MessageTooLarge { size, max },
            other => ReplicaError::CorruptRecord(other.to_string()),
        }
    }
}

impl From<LogError> for ReplicaError {
    fn from(e: LogError) -> ReplicaError {
        match e {
            LogError::OffsetOutOfRange { requested, start, end } => {
                ReplicaError::OffsetOutOfRange { requested: i64::try_from(requested).unwrap_or(i64::MAX), start, end }
            }
            LogError::InvalidBatch(b) => ReplicaError::from(b),
            LogError::MessageTooLarge { size, max } => ReplicaError::MessageTooLarge { size, max },
            LogError::InvalidProducerEpoch { producer_id, current, given } => {
                ReplicaError::InvalidProducerEpoch { producer_id, current, given }
            }
            LogError::OutOfOrderSequence { producer_id, expected, got } => {
                ReplicaError::OutOfOrderSequence { producer_id, expected, got }
            }
            LogError::UnknownProducerId { producer_id } => ReplicaError::UnknownProducerId { producer_id },
            e @ (LogError::NonContiguousOffset { .. } | LogError::StaleLeaderEpoch { .. }) => {
                ReplicaError::Diverged(e.to_string())
            }
            other => {
                // The client only sees a code; the operator needs the file
                // and the operation, which the log error carries.
                warn!(error = %other, "partition storage error");
                ReplicaError::Storage(other.to_string())
            }
        }
    }
}
