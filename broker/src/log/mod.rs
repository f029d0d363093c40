//! The partition log storage engine.
//!
//! A partition is a directory of segments; see `docs/storage.md` for the
//! file formats, recovery rules and invariants. Code map:
//!
//! - [`Log`] (`partition_log.rs`): one partition: append, read, lookup by
//!   timestamp, roll, truncate, retention, flush, close.
//! - `loader.rs`: opening a partition directory, with crash recovery.
//! - `segment.rs`: one `.log` file with its two indexes.
//! - `index.rs`: the memory-mapped `.index` / `.timeindex` files.
//! - `checkpoint.rs`: crash-safe small files (log start offset, clean
//!   shutdown marker).
//! - `epoch_cache.rs`: leader epochs and their start offsets
//!   (`leader-epoch-checkpoint`), for OffsetsForLeaderEpoch.
//! - `producer_state.rs`: idempotent producers' epochs and recent batches
//!   (dedupe, sequence checks), with `.snapshot` files.
//! - `handles.rs`: [`FileBudget`], the bound on open files and maps.
//! - [`LogManager`] (`manager.rs`): all partitions of a data directory.

mod checkpoint;
mod config;
mod epoch_cache;
mod error;
pub mod file_names;
mod fsio;
mod handles;
mod index;
mod loader;
mod manager;
mod partition_log;
mod producer_state;
mod segment;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use checkpoint::CleanShutdown;
pub use config::{FlushPolicy, LogConfig, TimestampPolicy};
pub use error::LogError;
pub use handles::FileBudget;
pub use manager::{LogManager, TopicPartition};
pub use partition_log::{AppendInfo, FetchData, Log, ProducerStateInfo, RetentionOutcome, SegmentInfo};

/// Kafka's name for the same thing.
pub type PartitionLog = Log;

/// Source of "now" in milliseconds since the epoch. Roll, retention and
/// flush decisions all read it, so tests drive time by hand.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> i64;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock that only moves when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(now_ms: i64) -> ManualClock {
        ManualClock(AtomicI64::new(now_ms))
    }
    pub fn set(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}
