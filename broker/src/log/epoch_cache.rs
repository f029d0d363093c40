//! Leader-epoch cache (Kafka's `LeaderEpochFileCache`): for every leader
//! epoch that wrote to this partition, the first offset it wrote.
//!
//! Followers use it to find where their log diverged from a new leader's
//! (OffsetsForLeaderEpoch): truncating to the high watermark alone can lose
//! acknowledged data or keep a divergent tail.
//!
//! Persisted as `leader-epoch-checkpoint` in Kafka's text format:
//!
//! ```text
//! 0            version
//! 2            number of entries
//! 0 0          epoch start_offset
//! 3 1200
//! ```
//!
//! The file is rewritten whole (crash-safely) on every change. Being derived
//! from the batch headers, it carries no checksum: anything that does not
//! parse, or contradicts the log, is rebuilt from the log.

use std::fs;
use std::path::Path;

use tracing::warn;

use super::checkpoint;
use super::error::LogError;
use super::file_names::LEADER_EPOCH_CHECKPOINT;

const VERSION: &str = "0";

/// One leader epoch and the first offset written in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EpochEntry {
    pub epoch: i32,
    pub start_offset: u64,
}

/// Invariant: entries are strictly increasing in both epoch and start
/// offset, and every epoch is >= 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    pub(crate) fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    pub(crate) fn latest_epoch(&self) -> Option<i32> {
        self.latest().map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset` (Kafka's `assign`).
    /// Returns whether anything changed. Negative epochs ("no epoch") are
    /// never recorded. An entry that breaks monotonicity replaces the
    /// trailing entries it contradicts, as in Kafka; `Log` never asks for
    /// that, because it rejects epochs older than the latest beforehand.
    pub(crate) fn assign(&mut self, epoch: i32, start_offset: u64) -> bool {
        if epoch < 0 {
            return false;
        }
        if let Some(last) = self.latest()
            && last.epoch == epoch
            && last.start_offset <= start_offset
        {
            return false;
        }
        let before = self.entries.len();
        while self.entries.last().is_some_and(|e| e.epoch >= epoch || e.start_offset >= start_offset) {
            self.entries.pop();
        }
        if self.entries.len() < before {
            warn!(epoch, start_offset, removed = before - self.entries.len(), "leader epoch cache: dropped entries");
        }
        self.entries.push(EpochEntry { epoch, start_offset });
        true
    }

    /// Drops every epoch that starts at or after `end_offset` (the log was
    /// truncated to it). Kafka's `truncateFromEnd`.
    pub(crate) fn truncate_from_end(&mut self, end_offset: u64) -> bool {
        let keep = self.entries.partition_point(|e| e.start_offset < end_offset);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// The log now starts at `start_offset`: epochs entirely before it go,
    /// and the one in force there is kept, starting at `start_offset`, so
    /// that it still answers for the offsets that remain. Kafka's
    /// `truncateFromStart`.
    pub(crate) fn truncate_from_start(&mut self, start_offset: u64) -> bool {
        let before = self.entries.partition_point(|e| e.start_offset <= start_offset);
        if before == 0 {
            return false;
        }
        let kept = EpochEntry { epoch: self.entries[before - 1].epoch, start_offset };
        let changed = before > 1 || self.entries[0] != kept;
        self.entries.drain(..before - 1);
        self.entries[0] = kept;
        changed
    }

    pub(crate) fn clear(&mut self) -> bool {
        let changed = !self.entries.is_empty();
        self.entries.clear();
        changed
    }

    /// The largest cached epoch <= `epoch` and the offset where it ended:
    /// the next cached epoch's start, or `log_end_offset` for the latest.
    /// `None` when `epoch` is below every cached epoch (or none is cached).
    ///
    /// Kafka answers (-1, -1) instead of (latest, log end) for an epoch above
    /// the latest, but there a leader caches its own epoch on election, so
    /// the question never reaches that branch; here the leader's epoch only
    /// appears with its first batch, and (latest, log end) is what Kafka
    /// would have answered with it cached. For an epoch below the first,
    /// Kafka answers (epoch, first start offset); the caller here answers
    /// (-1, -1), the safe "truncate to your high watermark" reply.
    pub(crate) fn end_offset_for(&self, epoch: i32, log_end_offset: u64) -> Option<(i32, u64)> {
        let floor = self.entries.partition_point(|e| e.epoch <= epoch);
        if floor == 0 {
            return None;
        }
        let found = self.entries[floor - 1];
        let end = self.entries.get(floor).map_or(log_end_offset, |next| next.start_offset);
        Some((found.epoch, end))
    }

    /// Kafka's text format.
    pub(crate) fn encode(&self) -> String {
        let mut out = format!("{VERSION}\n{}\n", self.entries.len());
        for e in &self.entries {
            out.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        out
    }

    /// Parses Kafka's text format, strictly: exactly the announced number
    /// of entries, each with a non-negative epoch and offset, both strictly
    /// increasing, and nothing after them.
    pub(crate) fn parse(text: &str) -> Result<LeaderEpochCache, String> {
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some(VERSION) {
            return Err("unknown version".into());
        }
        let count: usize =
            lines.next().and_then(|l| l.trim().parse().ok()).ok_or_else(|| "bad entry count".to_string())?;
        let mut cache = LeaderEpochCache::default();
        for i in 0..count {
            let line = lines.next().ok_or_else(|| format!("expected {count} entries, found {i}"))?;
            let mut fields = line.split_whitespace();
            let (Some(epoch), Some(offset), None) = (fields.next(), fields.next(), fields.next()) else {
                return Err(format!("malformed entry {line:?}"));
            };
            let epoch: i32 = epoch.parse().map_err(|_| format!("bad epoch in {line:?}"))?;
            let start_offset: u64 = offset.parse().map_err(|_| format!("bad offset in {line:?}"))?;
            if epoch < 0 || start_offset > i64::MAX as u64 {
                return Err(format!("out-of-range entry {line:?}"));
            }
            if cache.latest().is_some_and(|l| l.epoch >= epoch || l.start_offset >= start_offset) {
                return Err(format!("entry {line:?} does not follow the one before"));
            }
            cache.entries.push(EpochEntry { epoch, start_offset });
        }
        if lines.any(|l| !l.trim().is_empty()) {
            return Err("trailing content".into());
        }
        Ok(cache)
    }

    #[cfg(test)]
    pub(crate) fn from_entries(entries: &[(i32, u64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::default();
        for &(epoch, start_offset) in entries {
            c.assign(epoch, start_offset);
        }
        c
    }
}

/// Reads the checkpoint of `dir`. `None` if it is missing, unreadable or
/// damaged (with a warning): the caller rebuilds it from the log.
pub(crate) fn read(dir: &Path) -> Option<LeaderEpochCache> {
    let path = dir.join(LEADER_EPOCH_CHECKPOINT);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot read leader epoch checkpoint; rebuilding it");
            return None;
        }
    };
    let parsed = std::str::from_utf8(&bytes).map_err(|_| "not UTF-8".to_string()).and_then(LeaderEpochCache::parse);
    match parsed {
        Ok(c) => Some(c),
        Err(reason) => {
            warn!(path = %path.display(), reason, "damaged leader epoch checkpoint; rebuilding it");
            None
        }
    }
}

/// Replaces the checkpoint of `dir` crash-safely.
pub(crate) fn write(dir: &Path, cache: &LeaderEpochCache) -> Result<(), LogError> {
    checkpoint::write_atomically(dir, LEADER_EPOCH_CHECKPOINT, cache.encode().as_bytes())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn entries(c: &LeaderEpochCache) -> Vec<(i32, u64)> {
        c.entries().iter().map(|e| (e.epoch, e.start_offset)).collect()
    }

    // The examples below are Kafka's LeaderEpochFileCacheTest cases, with
    // the two documented differences in `end_offset_for`.

    #[test]
    fn assign_records_new_epochs_only() {
        let mut c = LeaderEpochCache::default();
        assert!(c.assign(2, 10));
        assert_eq!(c.latest_epoch(), Some(2));
        assert_eq!(c.end_offset_for(2, 11), Some((2, 11)));
        // Same epoch again, later offset: the start stays.
        assert!(!c.assign(2, 12));
        assert_eq!(entries(&c), [(2, 10)]);
        // No epoch is never recorded.
        assert!(!c.assign(-1, 20));
        assert!(c.assign(3, 20));
        assert_eq!(entries(&c), [(2, 10), (3, 20)]);
    }

    #[test]
    fn assign_drops_entries_it_contradicts() {
        let mut c = LeaderEpochCache::from_entries(&[(2, 6), (3, 8), (4, 11)]);
        // An older epoch at a later offset replaces everything >= it.
        assert!(c.assign(3, 12));
        assert_eq!(entries(&c), [(2, 6), (3, 12)]);
        // A newer epoch at an earlier offset replaces what starts after it.
        assert!(c.assign(5, 7));
        assert_eq!(entries(&c), [(2, 6), (5, 7)]);
        // The same epoch moving back: only the start offset changes.
        assert!(c.assign(5, 6));
        assert_eq!(entries(&c), [(5, 6)]);
    }

    #[test]
    fn end_offset_for_epoch_follows_offsets_for_leader_epoch() {
        let empty = LeaderEpochCache::default();
        assert_eq!(empty.end_offset_for(0, 100), None);
        assert_eq!(empty.end_offset_for(-1, 100), None);

        // Latest epoch requested: the log end.
        let c = LeaderEpochCache::from_entries(&[(2, 5), (3, 6), (4, 7)]);
        assert_eq!(c.end_offset_for(4, 8), Some((4, 8)));
        // A previous epoch ends where the next one starts.
        let c = LeaderEpochCache::from_entries(&[(1, 5), (1, 6), (2, 7)]);
        assert_eq!(c.end_offset_for(1, 8), Some((1, 7)));
        // No exact match: the largest epoch below answers.
        let c = LeaderEpochCache::from_entries(&[(0, 10), (2, 13), (4, 17)]);
        assert_eq!(c.end_offset_for(0, 20), Some((0, 13)));
        assert_eq!(c.end_offset_for(1, 20), Some((0, 13)));
        assert_eq!(c.end_offset_for(2, 20), Some((2, 17)));
        assert_eq!(c.end_offset_for(3, 20), Some((2, 17)));
        assert_eq!(c.end_offset_for(4, 20), Some((4, 20)));
        // Above the latest (Kafka: -1/-1, see the doc comment).
        assert_eq!(c.end_offset_for(5, 20), Some((4, 20)));
        // Below the first cached epoch, or undefined: the caller's -1/-1.
        let c = LeaderEpochCache::from_entries(&[(5, 100), (6, 200)]);
        assert_eq!(c.end_offset_for(4, 300), None);
        assert_eq!(c.end_offset_for(-1, 300), None);
    }

    #[test]
    fn truncate_from_end_drops_epochs_at_or_after_the_end() {
        let base = LeaderEpochCache::from_entries(&[(2, 6), (3, 8), (4, 11)]);
        let mut c = base.clone();
        assert!(!c.truncate_from_end(12));
        assert_eq!(c, base);
        assert!(c.truncate_from_end(11));
        assert_eq!(entries(&c), [(2, 6), (3, 8)]);
        assert!(c.truncate_from_end(9) | c.truncate_from_end(8));
        assert_eq!(entries(&c), [(2, 6)]);
        assert!(c.truncate_from_end(0));
        assert!(c.is_empty());
        assert!(!c.truncate_from_end(0));
    }

    #[test]
    fn truncate_from_start_keeps_the_epoch_in_force_at_the_new_start() {
        let base = LeaderEpochCache::from_entries(&[(2, 6), (3, 8), (4, 11)]);
        let cases: [(u64, &[(i32, u64)]); 7] = [
            (5, &[(2, 6), (3, 8), (4, 11)]),
            (6, &[(2, 6), (3, 8), (4, 11)]),
            (7, &[(2, 7), (3, 8), (4, 11)]),
            (8, &[(3, 8), (4, 11)]),
            (9, &[(3, 9), (4, 11)]),
            (11, &[(4, 11)]),
            (12, &[(4, 12)]),
        ];
        for (start, want) in cases {
            let mut c = base.clone();
            let changed = c.truncate_from_start(start);
            assert_eq!(entries(&c), want, "start {start}");
            assert_eq!(changed, c != base, "start {start}");
        }
    }

    #[test]
    fn text_format_round_trips_and_rejects_damage() {
        let c = LeaderEpochCache::from_entries(&[(0, 0), (3, 1200), (7, 99_999)]);
        let text = c.encode();
        assert_eq!(text, "0\n3\n0 0\n3 1200\n7 99999\n");
        assert_eq!(LeaderEpochCache::parse(&text), Ok(c));
        assert_eq!(LeaderEpochCache::parse("0\n0\n"), Ok(LeaderEpochCache::default()));
        for bad in [
            "",
            "1\n0\n",
            "0\n",
            "0\nx\n",
            "0\n2\n0 0\n",
            "0\n1\n0 0\n1 5\n",
            "0\n1\n0\n",
            "0\n1\n0 0 0\n",
            "0\n1\n-1 0\n",
            "0\n1\n0 -5\n",
            "0\n2\n1 5\n1 6\n",
            "0\n2\n1 5\n2 5\n",
            "0\n2\n2 5\n1 6\n",
            "0\n1\n0 99999999999999999999\n",
            "garbage",
        ] {
            assert!(LeaderEpochCache::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn file_round_trip_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), None);
        let c = LeaderEpochCache::from_entries(&[(1, 0), (4, 10)]);
        write(dir.path(), &c).unwrap();
        assert_eq!(read(dir.path()), Some(c));
        assert!(!dir.path().join(format!("{LEADER_EPOCH_CHECKPOINT}.tmp")).exists());
        fs::write(dir.path().join(LEADER_EPOCH_CHECKPOINT), [0xff, 0xfe, 0x00]).unwrap();
        assert_eq!(read(dir.path()), None);
    }

    /// A log reduced to what the cache must describe: the epoch of every
    /// offset in `[start, start + epochs.len())`.
    #[derive(Debug, Clone)]
    enum Op {
        Append { records: u64, bump: i32 },
        TruncateEnd(prop::sample::Index),
        TruncateStart(prop::sample::Index),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (1u64..5, prop_oneof![3 => Just(0), 2 => 1i32..3]).prop_map(|(records, bump)| Op::Append { records, bump }),
            1 => any::<prop::sample::Index>().prop_map(Op::TruncateEnd),
            1 => any::<prop::sample::Index>().prop_map(Op::TruncateStart),
        ]
    }

    /// What the cache must hold: the first offset of each epoch present.
    fn derived(start: u64, epochs: &[i32]) -> Vec<(i32, u64)> {
        let mut out: Vec<(i32, u64)> = Vec::new();
        for (i, &e) in epochs.iter().enumerate() {
            if out.last().is_none_or(|&(last, _)| last != e) {
                out.push((e, start + i as u64));
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn cache_agrees_with_a_log_of_epochs(ops in prop::collection::vec(op(), 1..60)) {
            let mut cache = LeaderEpochCache::default();
            let mut start = 0u64;
            let mut epochs: Vec<i32> = Vec::new();
            let mut current = 0i32;
            for op in ops {
                let end = start + epochs.len() as u64;
                match op {
                    Op::Append { records, bump } => {
                        current += bump;
                        cache.assign(current, end);
                        epochs.extend(std::iter::repeat_n(current, records as usize));
                    }
                    Op::TruncateEnd(pick) => {
                        let keep = pick.index(epochs.len() + 1);
                        epochs.truncate(keep);
                        cache.truncate_from_end(start + keep as u64);
                    }
                    Op::TruncateStart(pick) => {
                        let drop = pick.index(epochs.len() + 1);
                        epochs.drain(..drop);
                        start += drop as u64;
                        cache.truncate_from_start(start);
                    }
                }
                let end = start + epochs.len() as u64;
                let want = derived(start, &epochs);
                // With data, the cache is exactly the derived list. An empty
                // log may still remember the epoch in force at its start.
                if epochs.is_empty() {
                    prop_assert!(cache.entries().len() <= 1);
                    prop_assert!(cache.entries().iter().all(|e| e.start_offset <= end));
                } else {
                    prop_assert_eq!(entries(&cache), want.clone());
                }
                let reparsed = LeaderEpochCache::parse(&cache.encode());
                prop_assert_eq!(reparsed.as_ref(), Ok(&cache));
                for q in -1..=current + 1 {
                    let got = cache.end_offset_for(q, end);
                    if epochs.is_empty() {
                        continue;
                    }
                    // Brute force over the offsets: the largest epoch <= q
                    // present, ending where the first larger epoch starts.
                    let floor = epochs.iter().copied().filter(|&e| e <= q).max();
                    let expected = floor.map(|f| {
                        let end_at = epochs.iter().position(|&e| e > f).map_or(end, |i| start + i as u64);
                        (f, end_at)
                    });
                    prop_assert_eq!(got, expected, "epoch {}", q);
                }
            }
        }
    }
}
