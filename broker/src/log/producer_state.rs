//! State of idempotent producers (Kafka's `ProducerStateManager`).
//!
//! A producer with an id numbers its batches (`base_sequence`, per
//! partition). The leader remembers, per producer id, the producer epoch
//! and its last few batches, so that a retried batch is recognised and not
//! appended twice, and a lost one (a gap) is refused instead of silently
//! skipped.
//!
//! The state is derived from batch headers, so it can always be rebuilt by
//! replaying the log. Snapshots bound that replay: `{offset:020}.snapshot`
//! holds the state of every batch below `offset`. They are written at each
//! segment roll and at clean close; the newest two are kept.
//!
//! Snapshot payload (big-endian), inside the checkpoint envelope of
//! `checkpoint.rs` (magic, version, kind, length, CRC-32C):
//! `offset u64 | producers u32 | producers × (id i64 | epoch i16 |
//! last_timestamp i64 | batches u8 | batches × (first_seq i32 | last_seq i32 |
//! base_offset u64 | last_offset u64 | max_timestamp i64))`.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fs;
use std::path::Path;

use strata_proto::record_batch::BatchHeader;
use tracing::{info, warn};

use super::checkpoint::{self, KIND_PRODUCER_SNAPSHOT};
use super::error::{LogError, io_err};
use super::file_names::{SNAPSHOT_SUFFIX, segment_stem, snapshot_file};
use super::fsio;

/// Batches remembered per producer: Kafka's producer keeps at most five
/// requests in flight per partition, so a retry is always one of these.
pub(crate) const RETAINED_BATCHES: usize = 5;
/// Snapshots kept on disk. Two, so that losing the newest to damage still
/// leaves a short replay.
const SNAPSHOTS_KEPT: usize = 2;
const ENTRY_FIXED: usize = 8 + 2 + 8 + 1;
const BATCH_SIZE: usize = 4 + 4 + 8 + 8 + 8;

/// Kafka's `incrementSequence`: sequences wrap from `i32::MAX` to 0.
pub(crate) fn increment_sequence(sequence: i32, by: i32) -> i32 {
    let next = (i64::from(sequence) + i64::from(by)).rem_euclid(i64::from(i32::MAX) + 1);
    next as i32
}

/// Sequence of the last record of a batch; a batch without a sequence
/// (-1) has none.
pub(crate) fn last_sequence(h: &BatchHeader) -> i32 {
    if h.base_sequence < 0 { h.base_sequence } else { increment_sequence(h.base_sequence, h.last_offset_delta.max(0)) }
}

/// Whether a batch takes part in producer state at all.
pub(crate) fn is_idempotent(h: &BatchHeader) -> bool {
    // Control batches (transaction markers) carry no sequence in Kafka.
    h.producer_id >= 0 && !h.is_control()
}

/// What the log holds of one batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchMetadata {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: u64,
    pub last_offset: u64,
    pub max_timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProducerEntry {
    pub epoch: i16,
    /// Oldest first, at most [`RETAINED_BATCHES`], never empty.
    pub batches: VecDeque<BatchMetadata>,
    /// Max timestamp of the newest batch, for expiry (as in Kafka: the
    /// record clock, so every replica and every replay agrees).
    pub last_timestamp: i64,
}

impl ProducerEntry {
    pub(crate) fn last(&self) -> Option<&BatchMetadata> {
        self.batches.back()
    }
}

/// Outcome of the leader's check of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Append,
    /// A retry of a batch already in the log, which is not appended again.
    Duplicate(BatchMetadata),
}

#[derive(Debug, Default)]
pub(crate) struct ProducerStateManager {
    producers: HashMap<i64, ProducerEntry>,
    /// Offsets below this have been applied (Kafka's `mapEndOffset`).
    map_end_offset: u64,
    /// Snapshot offsets on disk.
    snapshots: BTreeSet<u64>,
    /// Whether the state changed since the newest snapshot was written.
    dirty: bool,
}

impl ProducerStateManager {
    pub(crate) fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub(crate) fn producer_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    pub(crate) fn map_end_offset(&self) -> u64 {
        self.map_end_offset
    }

    /// The log end the state now stands for (after a replay, or at a roll).
    pub(crate) fn set_map_end_offset(&mut self, offset: u64) {
        self.map_end_offset = offset;
    }

    #[cfg(test)]
    pub(crate) fn snapshot_offsets(&self) -> Vec<u64> {
        self.snapshots.iter().copied().collect()
    }

    /// The leader's check of a batch from a client, before anything is
    /// written (Kafka's `ProducerAppendInfo` validation).
    pub(crate) fn check(&self, h: &BatchHeader) -> Result<Verdict, LogError> {
        if !is_idempotent(h) {
            return Ok(Verdict::Append);
        }
        let producer_id = h.producer_id;
        let (epoch, first) = (h.producer_epoch, h.base_sequence);
        let Some(entry) = self.producers.get(&producer_id) else {
            // Without state there is nothing to dedupe against, so only a
            // producer's very first batch is safe to take.
            return if first == 0 { Ok(Verdict::Append) } else { Err(LogError::UnknownProducerId { producer_id }) };
        };
        if epoch < entry.epoch {
            return Err(LogError::InvalidProducerEpoch { producer_id, current: entry.epoch, given: epoch });
        }
        if epoch > entry.epoch {
            // A new epoch (producer re-initialised) restarts its sequences.
            return if first == 0 {
                Ok(Verdict::Append)
            } else {
                Err(LogError::OutOfOrderSequence { producer_id, expected: 0, got: first })
            };
        }
        let last = last_sequence(h);
        if let Some(dup) = entry.batches.iter().find(|b| b.first_seq == first && b.last_seq == last) {
            return Ok(Verdict::Duplicate(*dup));
        }
        let expected = entry.last().map_or(0, |b| increment_sequence(b.last_seq, 1));
        if first != expected {
            return Err(LogError::OutOfOrderSequence { producer_id, expected, got: first });
        }
        Ok(Verdict::Append)
    }

    /// Applies a batch now in the log (appended, replicated or replayed),
    /// without checks: the leader checked it.
    pub(crate) fn update(&mut self, h: &BatchHeader) {
        self.map_end_offset = self.map_end_offset.max(h.next_offset().max(0) as u64);
        if !is_idempotent(h) {
            return;
        }
        let batch = BatchMetadata {
            first_seq: h.base_sequence,
            last_seq: last_sequence(h),
            base_offset: h.base_offset.max(0) as u64,
            last_offset: h.last_offset().max(0) as u64,
            max_timestamp: h.max_timestamp,
        };
        let entry = self.producers.entry(h.producer_id).or_insert_with(|| ProducerEntry {
            epoch: h.producer_epoch,
            batches: VecDeque::with_capacity(RETAINED_BATCHES),
            last_timestamp: h.max_timestamp,
        });
        if entry.epoch != h.producer_epoch {
            // Sequences of an old epoch can never be retried in the new one.
            entry.batches.clear();
            entry.epoch = h.producer_epoch;
        }
        if entry.batches.len() == RETAINED_BATCHES {
            entry.batches.pop_front();
        }
        entry.batches.push_back(batch);
        entry.last_timestamp = h.max_timestamp;
        self.dirty = true;
    }

    /// Forgets producers idle for `expiration_ms`; returns how many.
    pub(crate) fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| now_ms.saturating_sub(e.last_timestamp) < expiration_ms);
        let removed = before - self.producers.len();
        if removed > 0 {
            self.dirty = true;
        }
        removed
    }

    /// Loads the newest usable snapshot at or below `log_end_offset` from
    /// `offsets` (found in `dir` by the loader). Snapshots above the log end
    /// (left by a truncation or a cut tail) and damaged ones are deleted,
    /// durably, so a stale one can never match a later log end. The caller
    /// replays batch headers from [`Self::map_end_offset`].
    pub(crate) fn load(
        dir: &Path,
        offsets: &[u64],
        log_start_offset: u64,
        log_end_offset: u64,
        now_ms: i64,
        expiration_ms: i64,
    ) -> Result<ProducerStateManager, LogError> {
        let mut state = ProducerStateManager { map_end_offset: log_start_offset, ..ProducerStateManager::default() };
        let mut candidates: Vec<u64> = offsets.to_vec();
        candidates.sort_unstable();
        candidates.dedup();
        let mut doomed = Vec::new();
        let mut loaded = false;
        for &offset in candidates.iter().rev() {
            if offset > log_end_offset {
                info!(dir = %dir.display(), offset, log_end_offset, "deleting producer snapshot above the log end");
                doomed.push(offset);
                continue;
            }
            if loaded {
                state.snapshots.insert(offset);
                continue;
            }
            match read_snapshot(dir, offset) {
                Ok(producers) => {
                    state.producers = producers;
                    state.map_end_offset = offset.max(log_start_offset);
                    state.snapshots.insert(offset);
                    loaded = true;
                }
                Err(reason) => {
                    warn!(path = %snapshot_file(dir, offset).display(), reason, "damaged producer snapshot; deleting it");
                    doomed.push(offset);
                }
            }
        }
        delete_snapshots(dir, &doomed)?;
        let expired = state.remove_expired(now_ms, expiration_ms);
        // Replay marks it dirty if there is anything to replay.
        state.dirty = !loaded || expired > 0;
        Ok(state)
    }

    /// Drops the state and every snapshot above `log_end_offset` and loads
    /// again, for the caller to replay (Kafka's `truncateAndReload`).
    pub(crate) fn truncate_and_reload(
        &mut self,
        dir: &Path,
        log_start_offset: u64,
        log_end_offset: u64,
        now_ms: i64,
        expiration_ms: i64,
    ) -> Result<(), LogError> {
        let offsets: Vec<u64> = self.snapshots.iter().copied().collect();
        *self = ProducerStateManager::load(dir, &offsets, log_start_offset, log_end_offset, now_ms, expiration_ms)?;
        Ok(())
    }

    /// Forgets everything, on disk too: the log restarts empty at `offset`.
    /// Snapshots go first and durably, so a crash before the segments are
    /// deleted can never pair an old snapshot with the new log.
    pub(crate) fn truncate_fully(&mut self, dir: &Path, offset: u64) -> Result<(), LogError> {
        let offsets: Vec<u64> = self.snapshots.iter().copied().collect();
        delete_snapshots(dir, &offsets)?;
        *self = ProducerStateManager { map_end_offset: offset, ..ProducerStateManager::default() };
        Ok(())
    }

    /// Whether a snapshot at the current map end would differ from disk.
    pub(crate) fn needs_snapshot(&self) -> bool {
        self.dirty || !self.snapshots.contains(&self.map_end_offset)
    }

    /// Writes a snapshot at the map end (crash-safely) and deletes all but
    /// the newest [`SNAPSHOTS_KEPT`].
    pub(crate) fn take_snapshot(&mut self, dir: &Path) -> Result<(), LogError> {
        let offset = self.map_end_offset;
        let name = format!("{}.{SNAPSHOT_SUFFIX}", segment_stem(offset));
        let payload = encode_snapshot(offset, &self.producers);
        checkpoint::write_atomically(dir, &name, &checkpoint::encode(KIND_PRODUCER_SNAPSHOT, &payload))?;
        self.snapshots.insert(offset);
        self.dirty = false;
        let surplus = self.snapshots.len().saturating_sub(SNAPSHOTS_KEPT);
        let old: Vec<u64> = self.snapshots.iter().copied().take(surplus).collect();
        for o in old {
            // Not made durable: an older snapshot that comes back after a
            // crash is still a true state of the log, just a longer replay.
            let path = snapshot_file(dir, o);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("deleting producer snapshot", &path)(e)),
            }
            self.snapshots.remove(&o);
        }
        Ok(())
    }
}

fn delete_snapshots(dir: &Path, offsets: &[u64]) -> Result<(), LogError> {
    if offsets.is_empty() {
        return Ok(());
    }
    for &o in offsets {
        let path = snapshot_file(dir, o);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("deleting producer snapshot", &path)(e)),
        }
    }
    fsio::fsync_dir(dir).map_err(io_err("syncing directory", dir))
}

fn encode_snapshot(offset: u64, producers: &HashMap<i64, ProducerEntry>) -> Vec<u8> {
    let mut ids: Vec<&i64> = producers.keys().collect();
    ids.sort_unstable();
    let mut out = Vec::with_capacity(12 + producers.len() * (ENTRY_FIXED + RETAINED_BATCHES * BATCH_SIZE));
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&(producers.len() as u32).to_be_bytes());
    for id in ids {
        let e = &producers[id];
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&e.epoch.to_be_bytes());
        out.extend_from_slice(&e.last_timestamp.to_be_bytes());
        out.push(e.batches.len() as u8);
        for b in &e.batches {
            out.extend_from_slice(&b.first_seq.to_be_bytes());
            out.extend_from_slice(&b.last_seq.to_be_bytes());
            out.extend_from_slice(&b.base_offset.to_be_bytes());
            out.extend_from_slice(&b.last_offset.to_be_bytes());
            out.extend_from_slice(&b.max_timestamp.to_be_bytes());
        }
    }
    out
}

/// A cursor that never panics on short input.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        let (head, rest) = self.0.split_at_checked(N).ok_or("truncated")?;
        self.0 = rest;
        head.try_into().map_err(|_| "truncated")
    }
    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take::<1>()?[0])
    }
    fn i16(&mut self) -> Result<i16, &'static str> {
        Ok(i16::from_be_bytes(self.take()?))
    }
    fn i32(&mut self) -> Result<i32, &'static str> {
        Ok(i32::from_be_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn i64(&mut self) -> Result<i64, &'static str> {
        Ok(i64::from_be_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_be_bytes(self.take()?))
    }
}

fn decode_snapshot(expected_offset: u64, payload: &[u8]) -> Result<HashMap<i64, ProducerEntry>, &'static str> {
    let mut r = Reader(payload);
    if r.u64()? != expected_offset {
        return Err("offset does not match the file name");
    }
    let count = r.u32()? as usize;
    // Bounded by what the payload can hold, so a bad count cannot make us
    // allocate wildly.
    if count > payload.len() / ENTRY_FIXED {
        return Err("producer count exceeds the payload");
    }
    let mut producers = HashMap::with_capacity(count);
    for _ in 0..count {
        let id = r.i64()?;
        let epoch = r.i16()?;
        let last_timestamp = r.i64()?;
        let n = r.u8()? as usize;
        if id < 0 || n == 0 || n > RETAINED_BATCHES {
            return Err("invalid producer entry");
        }
        let mut batches = VecDeque::with_capacity(n);
        for _ in 0..n {
            let b = BatchMetadata {
                first_seq: r.i32()?,
                last_seq: r.i32()?,
                base_offset: r.u64()?,
                last_offset: r.u64()?,
                max_timestamp: r.i64()?,
            };
            if b.last_offset < b.base_offset || b.last_offset >= expected_offset {
                return Err("batch offsets out of range");
            }
            batches.push_back(b);
        }
        if producers.insert(id, ProducerEntry { epoch, batches, last_timestamp }).is_some() {
            return Err("duplicate producer id");
        }
    }
    if !r.0.is_empty() {
        return Err("trailing bytes");
    }
    Ok(producers)
}

fn read_snapshot(dir: &Path, offset: u64) -> Result<HashMap<i64, ProducerEntry>, String> {
    let path = snapshot_file(dir, offset);
    let bytes = fs::read(&path).map_err(|e| e.to_string())?;
    let payload = checkpoint::decode(KIND_PRODUCER_SNAPSHOT, &bytes)?;
    Ok(decode_snapshot(offset, payload)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, base: i64, count: i32, ts: i64) -> BatchHeader {
        BatchHeader {
            base_offset: base,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: ts,
            max_timestamp: ts,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: count,
        }
    }

    #[test]
    fn sequences_wrap_like_kafka() {
        assert_eq!(increment_sequence(0, 1), 1);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        // Three records: MAX - 1, MAX, 0.
        assert_eq!(last_sequence(&header(1, 0, i32::MAX - 1, 0, 3, 0)), 0);
        assert_eq!(last_sequence(&header(1, 0, -1, 0, 3, 0)), -1);
    }

    #[test]
    fn leader_checks() {
        let mut s = ProducerStateManager::default();
        // Unknown producer: only sequence 0 starts it.
        assert!(matches!(s.check(&header(7, 0, 3, 0, 1, 0)), Err(LogError::UnknownProducerId { producer_id: 7 })));
        let h = header(7, 0, 0, 0, 3, 10);
        assert_eq!(s.check(&h).unwrap(), Verdict::Append);
        s.update(&h);
        // Next in sequence.
        let h2 = header(7, 0, 3, 3, 2, 11);
        assert_eq!(s.check(&h2).unwrap(), Verdict::Append);
        s.update(&h2);
        // Retry of either: duplicate with the original offsets.
        let Verdict::Duplicate(d) = s.check(&header(7, 0, 0, 99, 3, 0)).unwrap() else { panic!("not a duplicate") };
        assert_eq!((d.base_offset, d.last_offset), (0, 2));
        let Verdict::Duplicate(d) = s.check(&header(7, 0, 3, 99, 2, 0)).unwrap() else { panic!("not a duplicate") };
        assert_eq!((d.base_offset, d.last_offset), (3, 4));
        // Same start, different length: not a retry.
        assert!(matches!(
            s.check(&header(7, 0, 3, 99, 3, 0)),
            Err(LogError::OutOfOrderSequence { expected: 5, got: 3, .. })
        ));
        // Gap.
        assert!(matches!(
            s.check(&header(7, 0, 6, 99, 1, 0)),
            Err(LogError::OutOfOrderSequence { expected: 5, got: 6, .. })
        ));
        // Older epoch; newer epoch must restart at 0.
        s.update(&header(7, 2, 0, 5, 1, 12));
        assert!(matches!(
            s.check(&header(7, 1, 1, 99, 1, 0)),
            Err(LogError::InvalidProducerEpoch { current: 2, given: 1, .. })
        ));
        assert!(matches!(
            s.check(&header(7, 3, 1, 99, 1, 0)),
            Err(LogError::OutOfOrderSequence { expected: 0, got: 1, .. })
        ));
        assert_eq!(s.check(&header(7, 3, 0, 99, 1, 0)).unwrap(), Verdict::Append);
        // The epoch bump forgot the old epoch's batches.
        assert_eq!(s.get(7).unwrap().batches.len(), 1);
        // Batches without a producer are never checked.
        assert_eq!(s.check(&header(-1, -1, -1, 99, 1, 0)).unwrap(), Verdict::Append);
    }

    #[test]
    fn only_the_last_five_batches_are_retained() {
        let mut s = ProducerStateManager::default();
        for i in 0..8 {
            s.update(&header(1, 0, i, i64::from(i), 1, 0));
        }
        let e = s.get(1).unwrap();
        assert_eq!(e.batches.len(), RETAINED_BATCHES);
        assert_eq!(e.batches.front().unwrap().first_seq, 3);
        assert!(matches!(s.check(&header(1, 0, 2, 0, 1, 0)), Err(LogError::OutOfOrderSequence { .. })));
        assert!(matches!(s.check(&header(1, 0, 3, 0, 1, 0)), Ok(Verdict::Duplicate(_))));
        assert_eq!(s.map_end_offset(), 8);
    }

    #[test]
    fn expiry_uses_the_last_batch_timestamp() {
        let mut s = ProducerStateManager::default();
        s.update(&header(1, 0, 0, 0, 1, 1000));
        s.update(&header(2, 0, 0, 1, 1, 5000));
        assert_eq!(s.remove_expired(5999, 5000), 0);
        assert_eq!(s.remove_expired(6000, 5000), 1);
        assert_eq!(s.producer_ids(), vec![2]);
    }

    #[test]
    fn snapshots_round_trip_keep_two_and_reject_damage() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut s = ProducerStateManager::default();
        for (i, pid) in [(0, 5i64), (1, 6), (2, 5), (3, i64::MAX)] {
            s.update(&header(pid, 1, i, i64::from(i) * 2, 2, 100 + i64::from(i)));
            s.take_snapshot(d).unwrap();
        }
        assert_eq!(s.snapshot_offsets(), vec![6, 8]);
        assert!(!snapshot_file(d, 4).exists());
        let loaded = ProducerStateManager::load(d, &[6, 8], 0, 8, 0, i64::MAX).unwrap();
        assert_eq!(loaded.producers, s.producers);
        assert_eq!(loaded.map_end_offset(), 8);
        assert!(!loaded.needs_snapshot());

        // Above the log end: deleted; the older one is used.
        let loaded = ProducerStateManager::load(d, &[6, 8], 0, 7, 0, i64::MAX).unwrap();
        assert_eq!(loaded.map_end_offset(), 6);
        assert!(!snapshot_file(d, 8).exists());
        assert_eq!(loaded.get(i64::MAX), None);
        assert_eq!(loaded.get(5).unwrap().batches.len(), 2);

        // Any flipped bit: the snapshot is deleted and state starts empty.
        let path = snapshot_file(d, 6);
        let good = fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x04;
            fs::write(&path, &bad).unwrap();
            let loaded = ProducerStateManager::load(d, &[6], 2, 7, 0, i64::MAX).unwrap();
            assert_eq!(loaded.map_end_offset(), 2, "flip at {i}");
            assert!(loaded.producer_ids().is_empty());
            assert!(!path.exists());
        }
        // Truncated, and a file named for another offset.
        fs::write(&path, &good[..good.len() - 5]).unwrap();
        assert!(ProducerStateManager::load(d, &[6], 0, 7, 0, i64::MAX).unwrap().producer_ids().is_empty());
        fs::write(snapshot_file(d, 5), &good).unwrap();
        assert!(ProducerStateManager::load(d, &[5], 0, 7, 0, i64::MAX).unwrap().producer_ids().is_empty());
    }

    #[test]
    fn decode_never_panics_on_garbage() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode_snapshot(0, &bytes);
            let mut framed = 0u64.to_be_bytes().to_vec();
            framed.extend_from_slice(&bytes);
            let _ = decode_snapshot(0, &framed);
        }
    }
}
