//! One partition's log (Kafka's `UnifiedLog`/`LocalLog`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use strata_proto::record_batch::{self, BatchHeader, DEFAULT_MAX_DECOMPRESSED_BYTES};
use tracing::{debug, info, warn};

use super::checkpoint::{self, CleanShutdown};
use super::config::{LogConfig, TimestampPolicy};
use super::epoch_cache::{self, LeaderEpochCache};
use super::error::{LogError, io_err};
use super::file_names::{DELETED_SUFFIX, LEADER_EPOCH_CHECKPOINT};
use super::fsio;
use super::handles::FileBudget;
use super::loader;
use super::producer_state::{BatchMetadata, ProducerStateManager, Verdict};
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
    /// The batch was a producer's retry of one already in the log: nothing
    /// was appended, and the offsets (and timestamp) are the original's.
    /// Position and segment are the original's too, or 0 if it is gone.
    pub duplicate: bool,
}

/// What the log knows of one idempotent producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStateInfo {
    pub producer_epoch: i16,
    /// Sequence number of the producer's last record in this partition.
    pub last_sequence: i32,
    /// Offset of the producer's last record.
    pub last_offset: u64,
    /// Max timestamp of its last batch; expiry counts from here.
    pub last_timestamp: i64,
    /// How many of its recent batches are remembered for deduplication.
    pub retained_batches: usize,
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
    /// Leader epochs and their start offsets; kept in step with the log by
    /// every operation that moves its ends.
    epochs: LeaderEpochCache,
    producers: ProducerStateManager,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("log_start_offset", &self.log_start_offset)
            .field("log_end_offset", &self.log_end_offset)
            .field("segments", &(self.sealed.len() + 1))
            .field("latest_epoch", &self.epochs.latest_epoch())
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
        let snapshot_offsets = loaded.snapshot_offsets;
        let mut log = Log {
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
            epochs: LeaderEpochCache::default(),
            producers: ProducerStateManager::default(),
        };
        log.load_epoch_cache()?;
        log.load_producer_state(&snapshot_offsets)?;
        Ok(log)
    }

    /// Loads the leader-epoch checkpoint and trims it to the recovered log.
    /// It is rebuilt from batch headers if missing, damaged, or behind the
    /// log (the last batch's epoch is not its latest entry).
    fn load_epoch_cache(&mut self) -> Result<(), LogError> {
        let (start, end) = (self.log_start_offset, self.log_end_offset);
        let existed = self.dir.join(LEADER_EPOCH_CHECKPOINT).exists();
        if let Some(mut cache) = epoch_cache::read(&self.dir) {
            // Start first: on an empty log nothing may survive, so that
            // every open of the same files yields the same cache.
            let trimmed = cache.truncate_from_start(start) | cache.truncate_from_end(end);
            if self.epochs_match_tail(&cache)? {
                self.epochs = cache;
                if trimmed {
                    epoch_cache::write(&self.dir, &self.epochs)?;
                }
                return Ok(());
            }
            warn!(dir = %self.dir.display(), "leader epoch checkpoint disagrees with the log; rebuilding it");
        } else if existed || end > start {
            info!(dir = %self.dir.display(), "rebuilding the leader epoch cache from the log");
        }
        let mut cache = LeaderEpochCache::default();
        let mut regressions = 0u64;
        let scanned = self.for_each_header(start, &mut |h| {
            let epoch = h.partition_leader_epoch;
            if cache.latest_epoch().is_some_and(|latest| epoch < latest) {
                regressions += 1;
            } else {
                cache.assign(epoch, h.base_offset as u64);
            }
        });
        tolerate_corrupt(scanned, &self.dir, "rebuilding the leader epoch cache")?;
        if regressions > 0 {
            warn!(dir = %self.dir.display(), batches = regressions, "batches with an older leader epoch than the one before");
        }
        cache.truncate_from_start(start);
        self.epochs = cache;
        // An empty log has nothing to scan; writing its empty file would
        // only cost every new partition two fsyncs.
        if existed || end > start {
            epoch_cache::write(&self.dir, &self.epochs)?;
        }
        Ok(())
    }

    /// Whether `cache` ends with the epoch of the last batch in the log. A
    /// cache entry is written before its batch, so a crash leaves the file
    /// ahead of the log (trimmed at open), never behind; behind means the
    /// file cannot be trusted.
    fn epochs_match_tail(&self, cache: &LeaderEpochCache) -> Result<bool, LogError> {
        // An empty log has no batch to contradict the (trimmed) cache, and
        // an unreadable last header gives no evidence either way.
        let Some(Some(h)) = tolerate_corrupt(self.last_batch_header(), &self.dir, "reading the last batch")? else {
            return Ok(true);
        };
        Ok(if h.partition_leader_epoch < 0 {
            cache.is_empty()
        } else {
            cache
                .latest()
                .is_some_and(|l| l.epoch == h.partition_leader_epoch && l.start_offset <= h.base_offset as u64)
        })
    }

    /// Loads the newest producer snapshot at or below the log end and
    /// replays the batch headers after it.
    fn load_producer_state(&mut self, snapshot_offsets: &[u64]) -> Result<(), LogError> {
        self.producers = ProducerStateManager::load(
            &self.dir,
            snapshot_offsets,
            self.log_start_offset,
            self.log_end_offset,
            self.clock.now_ms(),
            self.config.producer_id_expiration_ms,
        )?;
        self.replay_producers()
    }

    /// Brings the producer state from its map end up to the log end.
    fn replay_producers(&mut self) -> Result<(), LogError> {
        let from = self.producers.map_end_offset().max(self.log_start_offset);
        if from < self.log_end_offset {
            let mut state = std::mem::take(&mut self.producers);
            let replayed = self.for_each_header(from, &mut |h| state.update(h));
            self.producers = state;
            tolerate_corrupt(replayed, &self.dir, "rebuilding producer state")?;
        }
        self.producers.set_map_end_offset(self.log_end_offset);
        Ok(())
    }

    /// Walks batch headers from the batch holding `from` to the log end.
    fn for_each_header(&self, from: u64, f: &mut dyn FnMut(&BatchHeader)) -> Result<(), LogError> {
        let from = from.max(self.log_start_offset);
        if from >= self.log_end_offset {
            return Ok(());
        }
        for seg in self.starting_at(from) {
            if seg.next_offset() > from {
                seg.for_each_header(from, &self.params, f)?;
            }
        }
        Ok(())
    }

    fn last_batch_header(&self) -> Result<Option<BatchHeader>, LogError> {
        if self.log_end_offset <= self.log_start_offset {
            return Ok(None);
        }
        let last = self.log_end_offset - 1;
        for seg in self.starting_at(last) {
            if let Some((_, h)) = seg.find_batch(last, &self.params)? {
                return Ok(Some(h));
            }
        }
        Ok(None)
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

    /// The newest leader epoch that wrote to this log, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }

    /// OffsetsForLeaderEpoch: the largest epoch <= `epoch` that wrote to
    /// this log, and the offset where it ended (where the next epoch
    /// started, or the log end for the latest). `None` if `epoch` is below
    /// every known epoch; the caller answers -1/-1, and the follower then
    /// truncates to its high watermark.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, u64)> {
        self.epochs.end_offset_for(epoch, self.log_end_offset)
    }

    /// Every (epoch, start offset) known, oldest first.
    pub fn epoch_entries(&self) -> Vec<(i32, u64)> {
        self.epochs.entries().iter().map(|e| (e.epoch, e.start_offset)).collect()
    }

    /// What the log knows of idempotent producer `producer_id`.
    pub fn producer_state(&self, producer_id: i64) -> Option<ProducerStateInfo> {
        let e = self.producers.get(producer_id)?;
        let last = e.last()?;
        Some(ProducerStateInfo {
            producer_epoch: e.epoch,
            last_sequence: last.last_seq,
            last_offset: last.last_offset,
            last_timestamp: e.last_timestamp,
            retained_batches: e.batches.len(),
        })
    }

    /// Ids of every producer with state here, ascending.
    pub fn producer_ids(&self) -> Vec<i64> {
        self.producers.producer_ids()
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
    ///
    /// A leader epoch older than the log's latest is refused
    /// (`StaleLeaderEpoch`). A batch with a producer id is checked against
    /// the producer's state first: a retry of a batch in the log appends
    /// nothing and returns the original's offsets with `duplicate` set.
    pub fn append(&mut self, batch: &mut [u8], leader_epoch: i32) -> Result<AppendInfo, LogError> {
        let h = self.validate_one(batch)?;
        self.check_leader_epoch(leader_epoch)?;
        if let Verdict::Duplicate(original) = self.producers.check(&h)? {
            debug!(
                dir = %self.dir.display(),
                producer_id = h.producer_id,
                sequence = h.base_sequence,
                offset = original.base_offset,
                "duplicate batch not appended"
            );
            return Ok(self.duplicate_info(&original, batch.len()));
        }
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
        let mut info = self.append_tracked(batch, &h, now)?;
        info.log_append_time = log_append_time;
        Ok(info)
    }

    /// Appends a batch fetched from the leader, keeping its offsets: it must
    /// start exactly at the log end. Its leader epoch must not be older than
    /// the log's latest (else the logs diverged: `StaleLeaderEpoch`). Its
    /// producer state is taken as is; the leader checked it.
    pub fn append_replicated(&mut self, batch: &[u8]) -> Result<AppendInfo, LogError> {
        let h = self.validate_one(batch)?;
        if h.base_offset < 0 || h.base_offset as u64 != self.log_end_offset {
            return Err(LogError::NonContiguousOffset { expected: self.log_end_offset, got: h.base_offset });
        }
        self.check_leader_epoch(h.partition_leader_epoch)?;
        let now = self.clock.now_ms();
        self.append_tracked(batch, &h, now)
    }

    fn check_leader_epoch(&self, given: i32) -> Result<(), LogError> {
        match self.epochs.latest_epoch() {
            Some(latest) if given < latest => Err(LogError::StaleLeaderEpoch { given, latest }),
            _ => Ok(()),
        }
    }

    fn duplicate_info(&self, original: &BatchMetadata, size: usize) -> AppendInfo {
        let (segment_base_offset, position) = self.position_of(original.base_offset).ok().flatten().unwrap_or((0, 0));
        AppendInfo {
            base_offset: original.base_offset,
            last_offset: original.last_offset,
            max_timestamp: original.max_timestamp,
            // With log-append time the stored max timestamp is the broker's.
            log_append_time: (self.config.timestamp == TimestampPolicy::LogAppendTime)
                .then_some(original.max_timestamp),
            segment_base_offset,
            position,
            size,
            duplicate: true,
        }
    }

    /// [`Self::append_validated`] plus the state derived from batches: the
    /// epoch cache entry goes to disk before the batch, so a crash can
    /// leave the checkpoint ahead of the log (trimmed at open) but never
    /// behind it; producer state follows the batch.
    fn append_tracked(&mut self, batch: &[u8], h: &BatchHeader, now: i64) -> Result<AppendInfo, LogError> {
        let base = self.log_end_offset;
        let assigned = self.epochs.assign(h.partition_leader_epoch, base);
        if assigned && let Err(e) = epoch_cache::write(&self.dir, &self.epochs) {
            self.epochs.truncate_from_end(base);
            return Err(e);
        }
        let result = self.append_validated(batch, h, now);
        if self.log_end_offset > base {
            // In the log, even if a flush after the write failed.
            self.producers.update(h);
        } else if assigned {
            self.epochs.truncate_from_end(base);
            if let Err(e) = epoch_cache::write(&self.dir, &self.epochs) {
                // The entry left on disk starts at the log end; the next
                // open trims it, and the next epoch change rewrites it.
                warn!(dir = %self.dir.display(), error = %e, "cannot undo a leader epoch entry");
            }
        }
        result
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
            duplicate: false,
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
                self.snapshot_producers();
                Ok(())
            }
            Err(e) => {
                // Keep appending to the old segment rather than be stuck.
                self.active_mut().reactivate();
                Err(e)
            }
        }
    }

    /// Snapshots the producer state at the log end, bounding the replay of
    /// the next open. Best effort: without it the replay is only longer.
    fn snapshot_producers(&mut self) {
        self.producers.set_map_end_offset(self.log_end_offset);
        if let Err(e) = self.producers.take_snapshot(&self.dir) {
            warn!(dir = %self.dir.display(), error = %e, "cannot write producer snapshot");
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
        if self.epochs.truncate_from_end(new_end) {
            epoch_cache::write(&self.dir, &self.epochs)?;
        }
        self.producers.truncate_and_reload(
            &self.dir,
            self.log_start_offset,
            new_end,
            self.clock.now_ms(),
            self.config.producer_id_expiration_ms,
        )?;
        self.replay_producers()?;
        Ok(new_end)
    }

    /// Discards the whole log and restarts it empty at `offset` (a follower
    /// whose leader's log start moved past this replica's end).
    pub fn truncate_fully_and_start_at(&mut self, offset: u64) -> Result<(), LogError> {
        checkpoint::write_log_start_offset(&self.dir, offset)?;
        // Derived state goes before the segments: a crash in between leaves
        // old segments with an empty epoch cache (rebuilt at open, since it
        // is behind the log) and no snapshots (a replay), never old state
        // beside the new, empty log.
        if self.epochs.clear() {
            epoch_cache::write(&self.dir, &self.epochs)?;
        }
        self.producers.truncate_fully(&self.dir, offset)?;
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
        // Producers whose batches were all deleted keep their state (as in
        // Kafka since KIP-360): their next batch continues the sequence.
        if self.epochs.truncate_from_start(new_start) {
            epoch_cache::write(&self.dir, &self.epochs)?;
        }
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
    /// appends, retention, expiry of idle producers
    /// (`producer_id_expiration_ms`).
    pub fn maintenance(&mut self) -> Result<RetentionOutcome, LogError> {
        let now = self.clock.now_ms();
        let expired = self.producers.remove_expired(now, self.config.producer_id_expiration_ms);
        if expired > 0 {
            debug!(dir = %self.dir.display(), expired, "expired idle producers");
        }
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

    /// Clean shutdown: flushes, trims the active indexes, snapshots the
    /// producer state and leaves the marker that lets the next open skip
    /// recovery.
    pub fn close(mut self) -> Result<(), LogError> {
        self.flush()?;
        let params = self.params;
        self.active_mut().trim(&params)?;
        self.producers.set_map_end_offset(self.log_end_offset);
        let empty = self.log_end_offset == self.log_start_offset && self.producers.is_empty();
        if self.producers.needs_snapshot() && !empty {
            self.snapshot_producers();
        }
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

/// Derived state (epoch cache, producer state) is rebuilt from batch
/// headers. A header that does not parse in a segment trusted as whole is
/// bit rot: the reads of those offsets report it, and the rebuild keeps what
/// came before it rather than refusing to open the log. Other errors (I/O)
/// are real failures.
fn tolerate_corrupt<T>(result: Result<T, LogError>, dir: &Path, context: &'static str) -> Result<Option<T>, LogError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e @ LogError::CorruptBatch { .. }) => {
            warn!(dir = %dir.display(), error = %e, context, "corrupt batch header; using what came before it");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}
