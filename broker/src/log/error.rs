use std::io;
use std::path::{Path, PathBuf};

use strata_proto::record_batch::BatchError;

/// Errors of the storage engine. Every failure carries enough context to say
/// which file and which operation; none of them leaves the log half-changed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("offset {requested} is out of range [{start}, {end}]")]
    OffsetOutOfRange { requested: u64, start: u64, end: u64 },
    #[error("invalid record batch: {0}")]
    InvalidBatch(BatchError),
    #[error("record batch of {size} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge { size: usize, max: usize },
    #[error("replicated batch starts at offset {got}, but the log ends at {expected}")]
    NonContiguousOffset { expected: u64, got: i64 },
    #[error("corrupt batch in {path} at position {position}: {reason}")]
    CorruptBatch { path: PathBuf, position: u64, reason: String },
    #[error("disk full while {context} ({path})")]
    DiskFull {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("I/O error while {context} ({path}): {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid partition name {0:?}")]
    InvalidPartition(String),
    /// A batch stamped with a leader epoch older than one the log already
    /// holds. From a follower fetch this means the logs diverged (the
    /// follower must truncate first); from `append` it means a deposed
    /// leader. Epochs never go backwards in a log.
    #[error("leader epoch {given} is older than the log's latest leader epoch {latest}")]
    StaleLeaderEpoch { given: i32, latest: i32 },
    #[error("producer {producer_id}: epoch {given} is older than its current epoch {current}")]
    InvalidProducerEpoch { producer_id: i64, current: i16, given: i16 },
    #[error("producer {producer_id}: out of order sequence number, expected {expected}, got {got}")]
    OutOfOrderSequence { producer_id: i64, expected: i32, got: i32 },
    #[error("producer {producer_id} is unknown to this partition and its batch does not start at sequence 0")]
    UnknownProducerId { producer_id: i64 },
}

impl From<BatchError> for LogError {
    fn from(e: BatchError) -> LogError {
        match e {
            BatchError::TooLarge { size, max } => LogError::MessageTooLarge { size, max },
            other => LogError::InvalidBatch(other),
        }
    }
}

impl LogError {
    /// True for errors after which the caller may simply retry later
    /// (space may be freed); the log is unchanged and usable.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, LogError::DiskFull { .. })
    }
}

/// ENOSPC and EDQUOT both mean "no room": the operator's fix is the same, and
/// callers must be able to tell it apart from a failing disk.
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Wraps an `io::Error` with the operation and the file it concerned.
pub(crate) fn io_err(context: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LogError {
    let path = path.to_path_buf();
    move |source| {
        if is_no_space(&source) {
            LogError::DiskFull { context, path, source }
        } else {
            LogError::Io { context, path, source }
        }
    }
}
