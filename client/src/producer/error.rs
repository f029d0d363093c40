//! Why a record was not (or may not have been) written.

use std::time::Duration;

use strata_proto::record_batch::BatchError;

use crate::error::ClientError;

/// The outcome of a failed `send`, delivered through the record's delivery
/// future.
///
/// `Clone` because one batch outcome is handed to the delivery future of
/// every record in that batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProduceError {
    /// The record was not acknowledged within the delivery timeout.
    #[error("record not delivered within {0:?}")]
    Timeout(Duration),
    /// Buffer memory stayed exhausted for `max_block`.
    #[error("no buffer memory for {requested} bytes within {max_block:?}")]
    BufferExhausted { requested: usize, max_block: Duration },
    /// The record, encoded as a batch of its own, is larger than the maximum
    /// request size or the whole buffer memory.
    #[error("record of {size} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge { size: usize, max: usize },
    /// The partition is not one of the topic's partitions.
    #[error("topic {topic} has {partition_count} partitions; {partition} is not one of them")]
    InvalidPartition { topic: String, partition: u32, partition_count: u32 },
    /// The broker refused the batch, or the request carrying it failed and
    /// could not be retried (retries exhausted, or the error is final).
    #[error("{0}")]
    Broker(ClientError),
    /// The topic's partitions could not be learned within `max_block` (the
    /// topic does not exist, or no broker answered).
    #[error("no metadata for the record's topic: {0}")]
    Metadata(ClientError),
    /// The record could not be encoded into a batch.
    #[error("record could not be encoded: {0}")]
    Encode(#[from] BatchError),
    /// The producer was closed before the record was accepted.
    #[error("producer is closed")]
    Closed,
    /// The batch was dropped before anyone reported its outcome.
    #[error("batch abandoned before its outcome was known")]
    Aborted,
}

impl ProduceError {
    /// Whether sending the same batch again may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, ProduceError::Broker(e) if e.is_retriable())
    }
}
