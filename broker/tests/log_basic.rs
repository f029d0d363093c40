//! Behaviour of one partition log: append, read, lookup, roll, retention,
//! truncation, flush, close, bad input.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{make_batch, read_all, small_config};
use strata_broker::log::{FileBudget, FlushPolicy, Log, LogConfig, LogError, ManualClock, TimestampPolicy};
use strata_proto::record_batch::{BatchError, Compression, RecordBatch, TimestampType, validate};

fn tiny_config() -> LogConfig {
    LogConfig { segment_bytes: 1024, index_interval_bytes: 100, ..small_config() }
}

fn open(dir: &std::path::Path, config: LogConfig, clock: &Arc<ManualClock>) -> Log {
    Log::open_with(dir, config, clock.clone(), FileBudget::new(16)).expect("open")
}

#[test]
fn append_assigns_offsets_and_reads_back_stored_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let mut log = open(dir.path(), small_config(), &clock);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    let mut stored = Vec::new();
    for i in 0..50u64 {
        let codec = Compression::ALL[(i % 5) as usize];
        let mut b = make_batch(i, 3, 40, 1000 + i as i64 * 10, codec);
        let info = log.append(&mut b, 7).unwrap();
        assert_eq!(info.base_offset, i * 3);
        assert_eq!(info.last_offset, i * 3 + 2);
        let h = validate(&b, usize::MAX).unwrap();
        assert_eq!((h.base_offset, h.partition_leader_epoch), (i as i64 * 3, 7));
        stored.push(b);
    }
    assert_eq!(log.log_end_offset(), 150);
    assert!(log.segments().len() > 1, "small segments roll");
    assert_eq!(read_all(&log, 0, 1), stored);
    assert_eq!(read_all(&log, 0, 1 << 20), stored);

    // Reading from the middle of a batch returns that whole batch.
    let f = log.read(31, 1, None).unwrap();
    assert_eq!(&f.records[..], &stored[10][..]);
    // At least one batch even if larger than max_bytes; max_bytes respected after.
    let f = log.read(0, stored[0].len() + 1, None).unwrap();
    assert_eq!(&f.records[..], &stored[0][..]);
    // High watermark bound.
    let f = log.read(0, 1 << 20, Some(6)).unwrap();
    assert_eq!(f.records.len(), stored[0].len() + stored[1].len());
    assert!(log.read(6, 1 << 20, Some(6)).unwrap().records.is_empty());
    // At the end: empty; past it or before the start: typed error.
    assert!(log.read(150, 100, None).unwrap().records.is_empty());
    assert!(matches!(log.read(151, 100, None), Err(LogError::OffsetOutOfRange { requested: 151, start: 0, end: 150 })));

    // Decoded records carry the right offsets.
    let batch = RecordBatch::new(log.read(45, 1, None).unwrap().records, usize::MAX).unwrap();
    let offsets: Vec<i64> = batch.records().unwrap().map(|r| r.unwrap().offset).collect();
    assert_eq!(offsets, vec![45, 46, 47]);

    log.close().unwrap();
    let log = open(dir.path(), small_config(), &clock);
    assert!(log.opened_clean());
    assert_eq!(log.log_end_offset(), 150);
    assert_eq!(read_all(&log, 0, 700), stored);
}

#[test]
fn bad_input_is_rejected_with_typed_errors_and_log_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let config = LogConfig { max_batch_bytes: 2000, ..small_config() };
    let mut log = open(dir.path(), config, &clock);
    let mut good = make_batch(1, 2, 10, 5, Compression::None);
    log.append(&mut good, 0).unwrap();
    let size_before = log.size_bytes();
    let files_before: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name(), e.metadata().unwrap().len())
        })
        .collect();

    let mut bad_crc = make_batch(2, 2, 10, 5, Compression::None);
    let n = bad_crc.len();
    bad_crc[n - 1] ^= 1;
    assert!(matches!(log.append(&mut bad_crc, 0), Err(LogError::InvalidBatch(BatchError::CrcMismatch { .. }))));
    let mut bad_magic = make_batch(2, 2, 10, 5, Compression::None);
    bad_magic[16] = 1;
    assert!(matches!(log.append(&mut bad_magic, 0), Err(LogError::InvalidBatch(BatchError::BadMagic(1)))));
    let whole = make_batch(2, 2, 10, 5, Compression::None);
    let mut truncated = whole[..whole.len() - 3].to_vec();
    assert!(matches!(log.append(&mut truncated, 0), Err(LogError::InvalidBatch(BatchError::Truncated { .. }))));
    let mut trailing = whole.clone();
    trailing.extend_from_slice(&whole);
    assert!(matches!(log.append(&mut trailing, 0), Err(LogError::InvalidBatch(_))));
    let mut huge = make_batch(3, 1, 5000, 5, Compression::None);
    assert!(matches!(log.append(&mut huge, 0), Err(LogError::MessageTooLarge { max: 2000, .. })));
    let mut garbage = vec![0xabu8; 100];
    assert!(log.append(&mut garbage, 0).is_err());
    let mut empty: Vec<u8> = Vec::new();
    assert!(log.append(&mut empty, 0).is_err());
    // A replicated batch must start at the log end.
    let mut replicated = make_batch(4, 1, 10, 5, Compression::None);
    strata_proto::record_batch::set_base_offset(&mut replicated, 99).unwrap();
    assert!(matches!(log.append_replicated(&replicated), Err(LogError::NonContiguousOffset { expected: 2, got: 99 })));

    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(log.size_bytes(), size_before);
    let files_after: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name(), e.metadata().unwrap().len())
        })
        .collect();
    assert_eq!(files_before, files_after);
    assert_eq!(read_all(&log, 0, 1 << 20), vec![good]);
}

#[test]
fn replicated_appends_keep_leader_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let mut leader = open(&dir.path().join("leader"), small_config(), &clock);
    let mut follower = open(&dir.path().join("follower"), small_config(), &clock);
    for i in 0..20 {
        let mut b = make_batch(i, 2, 30, 100, Compression::Lz4);
        leader.append(&mut b, 3).unwrap();
    }
    for b in read_all(&leader, 0, 1) {
        follower.append_replicated(&b).unwrap();
    }
    assert_eq!(read_all(&leader, 0, 1 << 20), read_all(&follower, 0, 1 << 20));
}

#[test]
fn lookup_by_timestamp_finds_first_offset_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let mut log = open(dir.path(), tiny_config(), &clock);
    // Timestamps go up and down; the answer is the first offset in offset
    // order with timestamp >= target.
    let ts = [100i64, 50, 300, 200, 400, 150, 500];
    let mut all = Vec::new();
    for round in 0..10 {
        for (j, t) in ts.iter().enumerate() {
            let t = t + round * 1000;
            let mut b = make_batch(j as u64, 4, 30, t, Compression::ALL[j % 5]);
            log.append(&mut b, 0).unwrap();
            for k in 0..4 {
                all.push(t + k);
            }
        }
    }
    assert!(log.segments().len() > 3);
    let expected = |target: i64| all.iter().position(|&t| t >= target).map(|p| p as u64);
    for target in [-5, 0, 49, 50, 53, 54, 101, 299, 300, 404, 1000, 5155, 9503, 9504, 20_000] {
        assert_eq!(log.lookup_by_timestamp(target).unwrap(), expected(target), "target {target}");
    }
    // Same answers after a clean reopen (indexes from disk) and after the
    // index files are deleted (rebuilt).
    log.close().unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "timeindex") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let log = open(dir.path(), tiny_config(), &clock);
    for target in [0, 300, 404, 5155, 9503, 20_000] {
        assert_eq!(log.lookup_by_timestamp(target).unwrap(), expected(target), "target {target}");
    }
}

#[test]
fn log_append_time_is_stamped() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(777_000));
    let config = LogConfig { timestamp: TimestampPolicy::LogAppendTime, ..small_config() };
    let mut log = open(dir.path(), config, &clock);
    let mut b = make_batch(1, 3, 10, 5, Compression::Zstd);
    let info = log.append(&mut b, 0).unwrap();
    assert_eq!(info.log_append_time, Some(777_000));
    let stored = RecordBatch::new(log.read(0, 1, None).unwrap().records, usize::MAX).unwrap();
    assert_eq!(stored.header().timestamp_type(), TimestampType::LogAppendTime);
    assert!(stored.records().unwrap().all(|r| r.unwrap().timestamp == 777_000));
    assert_eq!(log.lookup_by_timestamp(777_000).unwrap(), Some(0));
}

#[test]
fn roll_by_size_time_and_index_full() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(10_000));
    let config = LogConfig {
        segment_bytes: 1 << 20,
        segment_ms: Some(1000),
        index_interval_bytes: 0,
        max_index_bytes: 64, // 8 offset entries, 5 time entries
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), config.clone(), &clock);
    let mut b = make_batch(0, 1, 10, 10_000, Compression::None);
    log.append(&mut b, 0).unwrap();
    // Index full: a time entry per batch with rising timestamps.
    for i in 1..20 {
        let mut b = make_batch(i, 1, 10, 10_000 + i as i64, Compression::None);
        log.append(&mut b, 0).unwrap();
    }
    let n = log.segments().len();
    assert!(n >= 3, "index-full rolls, got {n} segments");
    // Time: the first batch of the active segment is old enough.
    let active_ts = 20_000;
    let mut b = make_batch(99, 1, 10, active_ts, Compression::None);
    let mut log2 = {
        log.close().unwrap();
        let config = LogConfig { max_index_bytes: 1 << 20, ..config };
        open(dir.path(), config, &clock)
    };
    log2.roll().unwrap();
    log2.append(&mut b, 0).unwrap();
    let before = log2.segments().len();
    clock.set(active_ts + 999);
    let mut c = make_batch(100, 1, 10, active_ts, Compression::None);
    log2.append(&mut c, 0).unwrap();
    assert_eq!(log2.segments().len(), before);
    clock.set(active_ts + 1000);
    let mut c = make_batch(101, 1, 10, active_ts, Compression::None);
    log2.append(&mut c, 0).unwrap();
    assert_eq!(log2.segments().len(), before + 1);
    // Maintenance rolls an idle segment by time too.
    clock.advance(5000);
    log2.maintenance().unwrap();
    assert_eq!(log2.segments().len(), before + 2);
    // Rolling an empty active segment does nothing.
    log2.roll().unwrap();
    assert_eq!(log2.segments().len(), before + 2);
}

#[test]
fn retention_by_time_and_size_deletes_whole_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let mut log = open(dir.path(), tiny_config(), &clock);
    for i in 0..40u64 {
        let mut b = make_batch(i, 2, 100, 1_000_000 + i as i64 * 1000, Compression::None);
        log.append(&mut b, 0).unwrap();
    }
    let segs = log.segments();
    assert!(segs.len() >= 4);
    // Nothing is old enough yet.
    let mut config = tiny_config();
    config.retention_ms = Some(100_000);
    log.set_config(config.clone());
    assert_eq!(log.apply_retention().unwrap().deleted_segments, 0);

    // Segments whose newest record is older than now - retention go.
    clock.set(1_000_000 + 39_000 + 100_001);
    let out = log.apply_retention().unwrap();
    assert_eq!(out.deleted_segments, segs.len() - 1, "all sealed segments expired");
    assert_eq!(log.segments().len(), 1, "the active segment always stays");
    assert_eq!(log.log_start_offset(), segs.last().unwrap().base_offset);
    assert!(matches!(log.read(0, 10, None), Err(LogError::OffsetOutOfRange { .. })));

    // Size-based: keep the log under the limit, deleting oldest first.
    for i in 40..80u64 {
        let mut b = make_batch(i, 2, 100, clock_now(&clock), Compression::None);
        log.append(&mut b, 0).unwrap();
    }
    config.retention_ms = None;
    config.retention_bytes = Some(5000);
    log.set_config(config);
    let before = log.segments();
    let out = log.apply_retention().unwrap();
    assert!(out.deleted_segments > 0);
    let after = log.segments();
    let total: u64 = after.iter().map(|s| s.size).sum();
    assert!(total - after[0].size < 5000 || after.len() == 1);
    assert_eq!(before.len() - out.deleted_segments, after.len());
    let start = log.log_start_offset();
    assert_eq!(start, after[0].base_offset);

    // The start offset survives an unclean reopen.
    drop(log);
    let log = open(dir.path(), tiny_config(), &clock);
    assert_eq!(log.log_start_offset(), start);
    assert_eq!(read_all(&log, start, 1 << 20).len() as u64 * 2, log.log_end_offset() - start);
}

fn clock_now(clock: &ManualClock) -> i64 {
    use strata_broker::log::Clock;
    clock.now_ms()
}

#[test]
fn truncate_to_removes_the_tail_and_fixes_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let mut log = open(dir.path(), tiny_config(), &clock);
    let mut stored = Vec::new();
    for i in 0..60u64 {
        let mut b = make_batch(i, 2, 60, i as i64 * 10, Compression::None);
        log.append(&mut b, 0).unwrap();
        stored.push(b);
    }
    let segs = log.segments();
    assert!(segs.len() > 3);
    // Mid-batch: the whole batch holding offset 61 (60..61) goes.
    assert_eq!(log.truncate_to(61).unwrap(), 60);
    assert_eq!(read_all(&log, 0, 1 << 20), stored[..30]);
    // Exactly at a segment base: that segment disappears, the previous one
    // becomes active again.
    let base = segs[2].base_offset;
    assert_eq!(log.truncate_to(base).unwrap(), base);
    assert_eq!(log.segments().len(), 2);
    assert!(log.segments()[1].active);
    assert_eq!(log.lookup_by_timestamp(0).unwrap(), Some(0));
    assert_eq!(log.lookup_by_timestamp(10_000).unwrap(), None);
    // Appends continue at the new end and survive reopen.
    let mut b = make_batch(1000, 2, 60, 5, Compression::None);
    assert_eq!(log.append(&mut b, 1).unwrap().base_offset, base);
    drop(log);
    let log = open(dir.path(), tiny_config(), &clock);
    assert_eq!(log.log_end_offset(), base + 2);
    let mut expected = stored[..(base / 2) as usize].to_vec();
    expected.push(b);
    assert_eq!(read_all(&log, 0, 1 << 20), expected);
    // Beyond the end: no-op. Below the start: error.
    let mut log = log;
    assert_eq!(log.truncate_to(1_000_000).unwrap(), base + 2);
    log.truncate_fully_and_start_at(500).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (500, 500));
    assert!(log.truncate_to(10).is_err());
    let mut b = make_batch(7, 1, 10, 5, Compression::None);
    assert_eq!(log.append(&mut b, 2).unwrap().base_offset, 500);
    drop(log);
    let log = open(dir.path(), tiny_config(), &clock);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (500, 501));
}

#[test]
fn flush_policy_moves_the_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let config = LogConfig { flush: FlushPolicy { every_batches: Some(3), interval_ms: Some(1000) }, ..small_config() };
    let mut log = open(dir.path(), config, &clock);
    let b = || make_batch(0, 1, 10, 0, Compression::None);
    log.append(&mut b(), 0).unwrap();
    log.append(&mut b(), 0).unwrap();
    assert_eq!(log.recovery_point(), 0);
    log.append(&mut b(), 0).unwrap();
    assert_eq!(log.recovery_point(), 3);
    log.append(&mut b(), 0).unwrap();
    clock.advance(999);
    log.maintenance().unwrap();
    assert_eq!(log.recovery_point(), 3);
    clock.advance(1);
    log.maintenance().unwrap();
    assert_eq!(log.recovery_point(), 4);

    let mut every =
        open(&dir.path().join("every"), LogConfig { flush: FlushPolicy::every_batch(), ..small_config() }, &clock);
    every.append(&mut b(), 0).unwrap();
    assert_eq!(every.recovery_point(), 1);
}

#[test]
fn delete_removes_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let path = dir.path().join("t-0");
    let mut log = open(&path, small_config(), &clock);
    log.append(&mut make_batch(0, 1, 10, 0, Compression::None), 0).unwrap();
    log.delete().unwrap();
    assert!(!path.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let _ = Bytes::new();
}
