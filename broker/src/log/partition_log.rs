//! One partition's log (Kafka's `UnifiedLog`/`LocalLog`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use strata_proto::record_batch::{self, BatchHeader, DEFAULT_MAX_DECOMPRESSED_BYTES};
use tracing::{debug, info};

use super::checkpoint::{self, CleanShutdown};
use super::config::{LogConfig, TimestampPolicy};
use super::error::{LogError, io_err};
use super::file_names::DELETED_SUFFIX;
use super::fsio;
use super::handles::FileBudget;
use super::loader;
use super::segment::{LogSegment, SegmentParams};
use super::{Clock, SystemClock};

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: u64,
    pub last_offset: u64,
    pub max_timestamp: i64,
    /// The broker's timestamp, when the log uses log-append time.
    pub log_append_time: Option<i64>,
    pub segment_base_offset: u64,
    /// Byte position of the batch in its segment file.
    pub position: u64,
    pub size: usize,
}

/// Result of a read: stored batches, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchData {
    /// Whole batches, concatenated exactly as stored; empty at the log end.
    pub records: Bytes,
    /// Segment file the bytes come from and their position in it: enough to
    /// serve them with `sendfile` instead of a copy.
    pub segment_base_offset: u64,
    pub position: u64,
    pub log_start_offset: u64,
    pub log_end_offset: u64,
}

/// What a retention run removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionOutcome {
    pub deleted_segments: usize,
    pub deleted_bytes: u64,
    pub log_start_offset: u64,
}

/// Public view of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    pub base_offset: u64,
    pub next_offset: u64,
    pub size: u64,
    pub max_timestamp: Option<i64>,
    pub active: bool,
}

/// A partition log: segments of Kafka v2 batches in one directory.
///
/// Appends, truncation and retention take `&mut self`; reads take `&self`
/// and may run concurrently with each other (wrap in an `RwLock` to read
/// while nobody writes). One `Log` must own its directory: opening the same
/// directory twice at once is not supported.
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    params: SegmentParams,
    /// Every segment but the last, by base offset.
    sealed: BTreeMap<u64, LogSegment>,
    /// The last segment: the only one ever written to. Kept apart from
    /// `sealed` so that "a log always has an active segment" is a type fact.
    active: LogSegment,
    log_start_offset: u64,
    log_end_offset: u64,
    /// Offsets below this are known to be on disk (fsynced).
    recovery_point: u64,
    unflushed_batches: u64,
    /// When the oldest unflushed batch was appended.
    unflushed_since_ms: Option<i64>,
    clock: Arc<dyn Clock>,
    budget: Arc<FileBudget>,
    recovered_bytes: u64,
    clean_open: bool,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("log_start_offset", &self.log_start_offset)
            .field("log_end_offset", &self.log_end_offset)
            .field("segments", &(self.sealed.len() + 1))
            .finish()
    }
}

/// Budget of a standalone log that was not given a shared one.
const DEFAULT_STANDALONE_OPEN_SEGMENTS: usize = 64;

fn params_of(config: &LogConfig) -> SegmentParams {
    SegmentParams {
        index_interval_bytes: config.index_interval_bytes,
        // At least one entry of each kind must fit.
        max_index_bytes: config.max_index_bytes.max(24),
        max_decompressed_bytes: DEFAULT_MAX_DECOMPRESSED_BYTES,
    }
}

impl Log {
    /// Opens (creating if needed) the partition in `dir`, recovering from an
    /// unclean shutdown, with the wall clock and a private file budget.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log, LogError> {
        Self::open_with(dir, config, Arc::new(SystemClock), FileBudget::new(DEFAULT_STANDALONE_OPEN_SEGMENTS))
    }

    /// [`Log::open`] with an explicit clock and a (shared) file budget.
    pub fn open_with(
        dir: impl AsRef<Path>,
        config: LogConfig,
        clock: Arc<dyn Clock>,
        budget: Arc<FileBudget>,
    ) -> Result<Log, LogError> {
        let dir = dir.as_ref().to_path_buf();
        let params = params_of(&config);
        let loaded = loader::load(&dir, &params, &budget, clock.now_ms())?;
        debug!(
            dir = %dir.display(),
            start = loaded.log_start_offset,
            end = loaded.log_end_offset,
            segments = loaded.sealed.len() + 1,
            clean = loaded.clean,
            "log opened"
        );
        Ok(Log {
            dir,
            config,
            params,
            sealed: loaded.sealed,
            active: loaded.active,
            log_start_offset: loaded.log_start_offset,
            log_end_offset: loaded.log_end_offset,
            recovery_point: loaded.log_end_offset,
            unflushed_batches: 0,
            unflushed_since_ms: None,
            clock,
            budget,
            recovered_bytes: loaded.truncated_bytes,
            clean_open: loaded.clean,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Changes the settings (dynamic topic config); takes effect on the
    /// next append, roll or retention run.
    pub fn set_config(&mut self, config: LogConfig) {
        self.params = params_of(&config);
        self.config = config;
    }

    pub fn log_start_offset(&self) -> u64 {
        self.log_start_offset
    }

    /// Offset the next appended record will get.
    pub fn log_end_offset(&self) -> u64 {
        self.log_end_offset
    }

    /// Offsets below this have been fsynced.
    pub fn recovery_point(&self) -> u64 {
        self.recovery_point
    }

    /// Whether the last open found a clean-shutdown marker matching the files.
    pub fn opened_clean(&self) -> bool {
        self.clean_open
    }

    /// Bytes of torn or corrupt tail that the last open cut off.
    pub fn recovered_bytes(&self) -> u64 {
        self.recovered_bytes
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.all().map(LogSegment::size).sum()
    }

    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.all()
            .map(|s| SegmentInfo {
                base_offset: s.base_offset(),
                next_offset: s.next_offset(),
                size: s.size(),
                max_timestamp: s.max_timestamp().map(|(t, _)| t),
                active: s.is_active(),
            })
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn all_segments(&self) -> Vec<&LogSegment> {
        self.all().collect()
    }

    /// All segments in offset order, the active one last.
    fn all(&self) -> impl Iterator<Item = &LogSegment> {
        self.sealed.values().chain(std::iter::once(&self.active))
    }

    /// Segments in offset order, starting with the one holding `offset`.
    fn starting_at(&self, offset: u64) -> impl Iterator<Item = &LogSegment> {
        let sealed = if self.active.base_offset() <= offset {
            None
        } else {
            let floor = self.sealed.range(..=offset).next_back().map_or(0, |(&b, _)| b);
            Some(self.sealed.range(floor..).map(|(_, s)| s))
        };
        sealed.into_iter().flatten().chain(std::iter::once(&self.active))
    }

    fn active(&self) -> &LogSegment {
        &self.active
    }

    fn active_mut(&mut self) -> &mut LogSegment {
        &mut self.active
    }

    /// Appends a batch as partition leader: validates it, assigns offsets
    /// from the log end by rewriting its base offset in place, stamps the
    /// leader epoch (and log-append time if configured). On any error the
    /// log is unchanged.
    pub fn append(&mut self, batch: &mut [u8], leader_epoch: i32) -> Result<AppendInfo, LogError> {
        let h = self.validate_one(batch)?;
        let now = self.clock.now_ms();
        record_batch::set_base_offset(batch, self.log_end_offset as i64)?;
        record_batch::set_partition_leader_epoch(batch, leader_epoch)?;
        let log_append_time = match self.config.timestamp {
            TimestampPolicy::LogAppendTime => {
                record_batch::set_log_append_time(batch, now)?;
                Some(now)
            }
            TimestampPolicy::CreateTime => None,
        };
        let h = BatchHeader {
            base_offset: self.log_end_offset as i64,
            partition_leader_epoch: leader_epoch,
            max_timestamp: log_append_time.unwrap_or(h.max_timestamp),
            ..h
        };
        let mut info = self.append_validated(batch, &h, now)?;
        info.log_append_time = log_append_time;
        Ok(info)
    }

    /// Appends a batch fetched from the leader, keeping its offsets: it must
    /// start exactly at the log end.
    pub fn append_replicated(&mut self, batch: &[u8]) -> Result<AppendInfo, LogError> {
        let h = self.validate_one(batch)?;
        if h.base_offset < 0 || h.base_offset as u64 != self.log_end_offset {
            return Err(LogError::NonContiguousOffset { expected: self.log_end_offset, got: h.base_offset });
        }
        let now = self.clock.now_ms();
        self.append_validated(batch, &h, now)
    }

    fn validate_one(&self, batch: &[u8]) -> Result<BatchHeader, LogError> {
        let h = record_batch::validate(batch, self.config.max_batch_bytes)?;
        if h.size() != batch.len() {
            // One batch per call: trailing bytes would be stored unvalidated.
            return Err(LogError::InvalidBatch(record_batch::BatchError::Truncated {
                needed: h.size(),
                available: batch.len(),
            }));
        }
        Ok(h)
    }

    fn append_validated(&mut self, batch: &[u8], h: &BatchHeader, now: i64) -> Result<AppendInfo, LogError> {
        let roll = self.active().should_roll(
            h,
            batch.len() as u64,
            now,
            self.config.segment_bytes,
            self.config.segment_ms,
            &self.params,
        );
        if roll {
            self.roll()?;
        }
        let params = self.params;
        let seg = self.active_mut();
        let segment_base_offset = seg.base_offset();
        let position = seg.append(batch, h, &params)?;
        self.log_end_offset = h.next_offset() as u64;
        self.unflushed_batches += 1;
        self.unflushed_since_ms.get_or_insert(now);
        let info = AppendInfo {
            base_offset: h.base_offset as u64,
            last_offset: h.last_offset() as u64,
            max_timestamp: h.max_timestamp,
            log_append_time: None,
            segment_base_offset,
            position,
            size: batch.len(),
        };
        self.maybe_flush(now)?;
        Ok(info)
    }

    fn maybe_flush(&mut self, now: i64) -> Result<(), LogError> {
        let by_count = self.config.flush.every_batches.is_some_and(|n| self.unflushed_batches >= n.max(1));
        let by_time = match (self.config.flush.interval_ms, self.unflushed_since_ms) {
            (Some(ms), Some(since)) => now.saturating_sub(since) >= ms,
            _ => false,
        };
        if by_count || by_time {
            self.flush()?;
        }
        Ok(())
    }

    /// fsyncs everything appended so far.
    pub fn flush(&mut self) -> Result<(), LogError> {
        if self.recovery_point == self.log_end_offset && self.unflushed_batches == 0 {
            return Ok(());
        }
        let params = self.params;
        self.active().flush(&params)?;
        self.recovery_point = self.log_end_offset;
        self.unflushed_batches = 0;
        self.unflushed_since_ms = None;
        Ok(())
    }

    /// Starts a new segment at the log end. A no-op while the active segment
    /// is empty.
    ///
    /// Invariant: a segment is flushed and its indexes trimmed before the next
    /// one exists on disk, so recovery only ever has to scan the last
    /// segment.
    pub fn roll(&mut self) -> Result<(), LogError> {
        if self.active().size() == 0 {
            return Ok(());
        }
        let params = self.params;
        let base = self.log_end_offset;
        self.active_mut().seal(&params)?;
        self.recovery_point = self.log_end_offset;
        self.unflushed_batches = 0;
        self.unflushed_since_ms = None;
        match LogSegment::create(&self.dir, base, self.clock.now_ms(), &self.budget) {
            Ok(seg) => {
                debug!(dir = %self.dir.display(), base, "rolled segment");
                let old = std::mem::replace(&mut self.active, seg);
                self.sealed.insert(old.base_offset(), old);
                Ok(())
            }
            Err(e) => {
                // Keep appending to the old segment rather than be stuck.
                self.active_mut().reactivate();
                Err(e)
            }
        }
    }

    fn out_of_range(&self, offset: u64) -> LogError {
        LogError::OffsetOutOfRange { requested: offset, start: self.log_start_offset, end: self.log_end_offset }
    }

    /// Reads whole stored batches starting with the one holding `offset`, up
    /// to `max_bytes` but always at least one whole batch, all from one
    /// segment. With `max_offset` (a high watermark), only batches entirely
    /// below it. Reading at the log end returns no bytes.
    pub fn read(&self, offset: u64, max_bytes: usize, max_offset: Option<u64>) -> Result<FetchData, LogError> {
        if offset < self.log_start_offset || offset > self.log_end_offset {
            return Err(self.out_of_range(offset));
        }
        let upper = max_offset.unwrap_or(self.log_end_offset).min(self.log_end_offset);
        let empty = |segment_base_offset, position| FetchData {
            records: Bytes::new(),
            segment_base_offset,
            position,
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset,
        };
        if offset >= upper {
            let active = self.active();
            return Ok(empty(active.base_offset(), active.size()));
        }
        for seg in self.starting_at(offset) {
            if let Some((position, records)) = seg.read(offset, max_bytes, upper, &self.params)? {
                return Ok(FetchData {
                    records,
                    segment_base_offset: seg.base_offset(),
                    position,
                    log_start_offset: self.log_start_offset,
                    log_end_offset: self.log_end_offset,
                });
            }
        }
        let active = self.active();
        Ok(empty(active.base_offset(), active.size()))
    }

    /// Where the batch holding `offset` is stored: (segment base offset, byte
    /// position), or `None` at the log end (Kafka's `translateOffset`).
    pub fn position_of(&self, offset: u64) -> Result<Option<(u64, u64)>, LogError> {
        if offset < self.log_start_offset || offset > self.log_end_offset {
            return Err(self.out_of_range(offset));
        }
        for seg in self.starting_at(offset) {
            if let Some((position, _)) = seg.find_batch(offset, &self.params)? {
                return Ok(Some((seg.base_offset(), position)));
            }
        }
        Ok(None)
    }

    /// The first offset whose record timestamp is >= `timestamp`, or `None`
    /// if every record is older (Kafka's ListOffsets by time).
    pub fn lookup_by_timestamp(&self, timestamp: i64) -> Result<Option<u64>, LogError> {
        for seg in self.all() {
            if seg.next_offset() <= self.log_start_offset {
                continue;
            }
            if let Some(o) = seg.find_by_timestamp(timestamp, self.log_start_offset, &self.params)? {
                return Ok(Some(o));
            }
        }
        Ok(None)
    }

    /// Removes every batch holding an offset >= `offset` (for replication:
    /// dropping a diverged tail). Batches are atomic, so if `offset` falls
    /// inside a batch, that whole batch goes and the new log end is its base
    /// offset. Returns the new log end offset; durable on return.
    pub fn truncate_to(&mut self, offset: u64) -> Result<u64, LogError> {
        if offset >= self.log_end_offset {
            return Ok(self.log_end_offset);
        }
        if offset < self.log_start_offset {
            return Err(self.out_of_range(offset));
        }
        let params = self.params;
        // Segments starting above the cut go, and so does the one starting
        // exactly at it unless it is the only one left. Newest first, so a
        // crash midway leaves a shorter but gap-free log; the segment before
        // becomes the active one again.
        let mut removed = false;
        while self.active.base_offset() > offset || (self.active.base_offset() == offset && !self.sealed.is_empty()) {
            let Some((_, mut previous)) = self.sealed.pop_last() else {
                break;
            };
            previous.reactivate();
            std::mem::replace(&mut self.active, previous).delete()?;
            removed = true;
        }
        if removed {
            fsio::fsync_dir(&self.dir).map_err(io_err("syncing directory", &self.dir))?;
        }
        let seg = &mut self.active;
        let new_end = match seg.find_batch(offset, &params)? {
            Some((position, h)) => {
                let new_end = h.base_offset as u64;
                seg.truncate_to(position, new_end, &params)?;
                new_end
            }
            None => seg.next_offset(),
        };
        info!(dir = %self.dir.display(), requested = offset, new_end, "truncated log");
        self.log_end_offset = new_end;
        self.recovery_point = self.recovery_point.min(new_end);
        self.log_start_offset = self.log_start_offset.min(new_end);
        Ok(new_end)
    }

    /// Discards the whole log and restarts it empty at `offset` (a follower
    /// whose leader's log start moved past this replica's end).
    pub fn truncate_fully_and_start_at(&mut self, offset: u64) -> Result<(), LogError> {
        checkpoint::write_log_start_offset(&self.dir, offset)?;
        while let Some((_, seg)) = self.sealed.pop_last() {
            seg.delete()?;
        }
        if self.active.base_offset() == offset {
            let params = self.params;
            self.active.truncate_to(0, offset, &params)?;
        } else {
            // Create the new segment before dropping the old one, so a
            // failure (disk full) still leaves a log with a segment.
            let seg = LogSegment::create(&self.dir, offset, self.clock.now_ms(), &self.budget)?;
            std::mem::replace(&mut self.active, seg).delete()?;
        }
        fsio::fsync_dir(&self.dir).map_err(io_err("syncing directory", &self.dir))?;
        self.log_start_offset = offset;
        self.log_end_offset = offset;
        self.recovery_point = offset;
        self.unflushed_batches = 0;
        self.unflushed_since_ms = None;
        Ok(())
    }

    /// Deletes the oldest sealed segments that break `retention.ms` or
    /// `retention.bytes`, advancing the log start offset. Never deletes the
    /// active segment.
    pub fn apply_retention(&mut self) -> Result<RetentionOutcome, LogError> {
        let now = self.clock.now_ms();
        let mut remaining = self.size_bytes();
        let mut doomed = Vec::new();
        for seg in self.sealed.values() {
            let by_time =
                self.config.retention_ms.is_some_and(|ms| now.saturating_sub(seg.largest_timestamp_ms()) > ms);
            let by_size =
                self.config.retention_bytes.is_some_and(|limit| remaining.saturating_sub(seg.size()) >= limit);
            if !(by_time || by_size) {
                break;
            }
            remaining -= seg.size();
            doomed.push(seg.base_offset());
        }
        let mut outcome = RetentionOutcome { log_start_offset: self.log_start_offset, ..RetentionOutcome::default() };
        let Some(&last_doomed) = doomed.last() else {
            return Ok(outcome);
        };
        let new_start = self
            .sealed
            .range(last_doomed + 1..)
            .next()
            .map_or(self.active.base_offset(), |(&b, _)| b)
            .max(self.log_start_offset);
        // Checkpoint first: a crash in between leaves segments below the
        // start, which the next open deletes; the other order could bring
        // deleted offsets back as readable.
        checkpoint::write_log_start_offset(&self.dir, new_start)?;
        self.log_start_offset = new_start;
        for base in doomed {
            if let Some(seg) = self.sealed.remove(&base) {
                outcome.deleted_bytes += seg.size();
                outcome.deleted_segments += 1;
                seg.delete()?;
            }
        }
        fsio::fsync_dir(&self.dir).map_err(io_err("syncing directory", &self.dir))?;
        outcome.log_start_offset = new_start;
        info!(
            dir = %self.dir.display(),
            segments = outcome.deleted_segments,
            bytes = outcome.deleted_bytes,
            start = new_start,
            "retention deleted segments"
        );
        Ok(outcome)
    }

    /// Periodic work: flush by `flush.ms`, roll by `segment.ms` even without
    /// appends, retention.
    pub fn maintenance(&mut self) -> Result<RetentionOutcome, LogError> {
        let now = self.clock.now_ms();
        self.maybe_flush(now)?;
        let active = self.active();
        if active.size() > 0
            && self.config.segment_ms.is_some_and(|ms| now.saturating_sub(active.rolling_base_ms()) >= ms)
        {
            self.roll()?;
        }
        self.apply_retention()
    }

    /// Releases every open file and map of this log; they reopen on demand.
    pub fn release_files(&self) {
        for seg in self.all() {
            seg.close_files();
        }
    }

    /// Clean shutdown: flushes, trims the active indexes and leaves the
    /// marker that lets the next open skip recovery.
    pub fn close(mut self) -> Result<(), LogError> {
        self.flush()?;
        let params = self.params;
        self.active_mut().trim(&params)?;
        let active = self.active();
        let marker = CleanShutdown {
            log_end_offset: self.log_end_offset,
            active_base_offset: active.base_offset(),
            active_size: active.size(),
        };
        self.release_files();
        checkpoint::write_clean_shutdown(&self.dir, &marker)
    }

    /// Deletes the partition: the directory is first renamed, so a crash
    /// midway leaves a `.deleted` directory for [`super::LogManager`] to
    /// finish, never a half-deleted partition that looks alive.
    pub fn delete(self) -> Result<(), LogError> {
        let dir = self.dir.clone();
        drop(self);
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("partition");
        let doomed = dir.with_file_name(format!("{name}.{DELETED_SUFFIX}"));
        fs::rename(&dir, &doomed).map_err(io_err("renaming partition for deletion", &dir))?;
        if let Some(parent) = dir.parent() {
            fsio::fsync_dir(parent).map_err(io_err("syncing directory", parent))?;
        }
        fs::remove_dir_all(&doomed).map_err(io_err("deleting partition", &doomed))
    }
}
