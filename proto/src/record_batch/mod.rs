//! Kafka RecordBatch v2 ("magic 2"), byte for byte.
//!
//! Strata stores and serves batches in Kafka's own layout so that a later
//! Kafka-protocol listener can hand stored bytes out unchanged. The layout
//! (all integers big-endian):
//!
//! ```text
//! offset  size  field
//!      0     8  baseOffset            rewritten by the broker on append
//!      8     4  batchLength           bytes after this field
//!     12     4  partitionLeaderEpoch  rewritten by the broker, not CRC-covered
//!     16     1  magic                 always 2
//!     17     4  crc                   CRC-32C over offset 21 .. end
//!     21     2  attributes            codec bits 0-2, timestamp type bit 3,
//!                                     transactional bit 4, control bit 5
//!     23     4  lastOffsetDelta
//!     27     8  baseTimestamp
//!     35     8  maxTimestamp
//!     43     8  producerId
//!     51     2  producerEpoch
//!     53     4  baseSequence
//!     57     4  recordsCount
//!     61     -  records (possibly compressed as one blob)
//! ```
//!
//! [`validate`] checks a batch coming from the network or from disk without
//! ever panicking; [`RecordBatchBuilder`] encodes one; [`RecordBatch::records`]
//! decodes (and decompresses) the records; the `set_*` functions patch a batch
//! in place the way a broker must on append (and, for the producer identity,
//! the way a producer re-stamps a batch it has not sent yet).

mod builder;
pub mod compression;
mod decoder;
mod header;
mod varint;

#[cfg(test)]
mod tests;

pub use builder::{Record, RecordBatchBuilder, RecordHeader};
pub use compression::Compression;
pub use decoder::{BatchIter, DecodedRecord, RecordBatch, Records, batches};
pub use header::{
    BatchHeader, TimestampType, set_base_offset, set_log_append_time, set_partition_leader_epoch, set_producer_state,
    validate,
};

/// Offsets of the header fields, exactly as Kafka lays them out.
pub mod layout {
    pub const BASE_OFFSET: usize = 0;
    pub const BATCH_LENGTH: usize = 8;
    pub const PARTITION_LEADER_EPOCH: usize = 12;
    pub const MAGIC: usize = 16;
    pub const CRC: usize = 17;
    pub const ATTRIBUTES: usize = 21;
    pub const LAST_OFFSET_DELTA: usize = 23;
    pub const BASE_TIMESTAMP: usize = 27;
    pub const MAX_TIMESTAMP: usize = 35;
    pub const PRODUCER_ID: usize = 43;
    pub const PRODUCER_EPOCH: usize = 51;
    pub const BASE_SEQUENCE: usize = 53;
    pub const RECORDS_COUNT: usize = 57;
    /// Size of the fixed header; records start here.
    pub const HEADER_SIZE: usize = 61;
    /// `batchLength` counts the bytes after itself, so the smallest legal
    /// value is the rest of the fixed header.
    pub const MIN_BATCH_LENGTH: i32 = (HEADER_SIZE - PARTITION_LEADER_EPOCH) as i32;
    /// Bytes before the `batchLength` field's coverage starts.
    pub const LOG_OVERHEAD: usize = PARTITION_LEADER_EPOCH;
}

/// The only record format Strata accepts.
pub const MAGIC_V2: i8 = 2;

/// Producer id meaning "not idempotent" (Kafka's `NO_PRODUCER_ID`).
pub const NO_PRODUCER_ID: i64 = -1;
/// Producer epoch meaning "not idempotent".
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// Sequence meaning "not idempotent".
pub const NO_SEQUENCE: i32 = -1;
/// Partition leader epoch of a batch that has not been through a leader.
pub const NO_PARTITION_LEADER_EPOCH: i32 = -1;

/// Default cap on the decompressed size of one batch's records. A compressed
/// batch of a few KiB can claim gigabytes; without a cap, one produce request
/// could exhaust the broker's memory.
pub const DEFAULT_MAX_DECOMPRESSED_BYTES: usize = 64 << 20;

/// Everything that can be wrong with a batch. Every parse path returns one of
/// these instead of panicking, whatever the input bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("record batch truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("record batch length field {0} is smaller than the v2 header")]
    InvalidLength(i32),
    #[error("record batch of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("unsupported record batch magic {0} (only v2 is accepted)")]
    BadMagic(i8),
    #[error("record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("invalid record count {count} (lastOffsetDelta {last_offset_delta})")]
    InvalidRecordCount { count: i32, last_offset_delta: i32 },
    #[error("unknown compression codec {0}")]
    UnknownCompression(u8),
    #[error("{codec:?} decompression failed: {reason}")]
    Decompression { codec: Compression, reason: String },
    #[error("{codec:?} compression failed: {reason}")]
    Compression { codec: Compression, reason: String },
    #[error("decompressed records exceed the limit of {limit} bytes")]
    DecompressedTooLarge { limit: usize },
    #[error("corrupt record: {0}")]
    CorruptRecord(&'static str),
    #[error("batch header says {expected} records but the payload holds {actual}")]
    RecordCountMismatch { expected: i32, actual: usize },
    #[error("record batch must hold at least one record")]
    Empty,
    #[error("record field of {0} bytes does not fit the wire format")]
    FieldTooLarge(usize),
}
