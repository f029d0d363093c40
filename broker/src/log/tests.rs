//! Unit tests that need crate internals: disk-full injection and the file
//! budget's effect on individual segments.

use std::sync::Arc;

use bytes::Bytes;
use strata_proto::record_batch::{Compression, RecordBatchBuilder};

use super::fsio::fault::set_write_budget;
use super::{FileBudget, Log, LogConfig, LogError, ManualClock};

fn batch(tag: u64, value_len: usize) -> Vec<u8> {
    let mut b = RecordBatchBuilder::new(Compression::None);
    b.append(tag as i64, None, Some(Bytes::from(vec![tag as u8; value_len]))).unwrap();
    b.build().unwrap().to_vec()
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        segment_ms: None,
        retention_ms: None,
        index_interval_bytes: 64,
        ..LogConfig::default()
    }
}

fn read_everything(log: &Log) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let f = log.read(offset, 1 << 20, None).unwrap();
        let mut last = offset;
        for b in strata_proto::record_batch::batches(f.records.clone(), usize::MAX) {
            last = b.unwrap().header().next_offset() as u64;
        }
        out.extend_from_slice(&f.records);
        offset = last;
    }
    out
}

/// Restores an unlimited write budget even if the test fails midway.
struct Unlimited;
impl Drop for Unlimited {
    fn drop(&mut self) {
        set_write_budget(None);
    }
}

#[test]
fn disk_full_loses_nothing_and_the_log_stays_usable() {
    let _guard = Unlimited;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let mut log = Log::open_with(dir.path(), config(), clock.clone(), FileBudget::new(4)).unwrap();
    for i in 0..10 {
        log.append(&mut batch(i, 100), 0).unwrap();
    }
    let before = read_everything(&log);
    let (end, size) = (log.log_end_offset(), log.size_bytes());

    // Every budget from "nothing" to "almost the whole batch": the append
    // fails as DiskFull, with a partial write cut off again.
    for budget in [0u64, 1, 30, 61, 150] {
        set_write_budget(Some(budget));
        let err = log.append(&mut batch(99, 160), 0).unwrap_err();
        assert!(err.is_disk_full(), "{err}");
        set_write_budget(None);
        assert_eq!((log.log_end_offset(), log.size_bytes()), (end, size));
        assert_eq!(read_everything(&log), before);
    }
    // An append that needs a roll: whether the roll or the write hits the
    // full disk, the data stays as it was.
    while log.segments().last().unwrap().size + 170 <= 1024 {
        log.append(&mut batch(1, 100), 0).unwrap();
    }
    let (end, before) = (log.log_end_offset(), read_everything(&log));
    let segments = log.segments().len();
    set_write_budget(Some(0));
    assert!(log.append(&mut batch(2, 100), 0).unwrap_err().is_disk_full());
    set_write_budget(None);
    assert_eq!(log.log_end_offset(), end);
    assert!(log.segments().len() <= segments + 1);
    assert_eq!(read_everything(&log), before);

    // Retention whose checkpoint cannot be written deletes nothing.
    let mut c = config();
    c.retention_bytes = Some(1);
    log.set_config(c);
    set_write_budget(Some(3));
    assert!(matches!(log.apply_retention(), Err(LogError::DiskFull { .. })));
    set_write_budget(None);
    assert_eq!(read_everything(&log), before);
    log.set_config(config());

    // Space is back: appends continue where they left off, and all of it
    // survives a crash-style reopen.
    let info = log.append(&mut batch(3, 100), 0).unwrap();
    assert_eq!(info.base_offset, end);
    let after = read_everything(&log);
    drop(log);
    let log = Log::open_with(dir.path(), config(), clock, FileBudget::new(4)).unwrap();
    assert_eq!(log.log_end_offset(), end + 1);
    assert_eq!(read_everything(&log), after);
}

#[test]
fn disk_full_while_growing_an_index_fails_before_the_log_write() {
    let _guard = Unlimited;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let cfg = LogConfig { segment_bytes: 1 << 30, index_interval_bytes: 0, ..config() };
    let mut log = Log::open_with(dir.path(), cfg.clone(), clock.clone(), FileBudget::new(4)).unwrap();
    // The first mapping holds 512 offset entries; fill it.
    for i in 0..514 {
        log.append(&mut batch(i, 1), 0).unwrap();
    }
    let (end, size) = (log.log_end_offset(), log.size_bytes());
    // Enough budget for the batch, not for the index growth (zeros first).
    set_write_budget(Some(200));
    let mut grew = false;
    for i in 0..600 {
        match log.append(&mut batch(i, 1), 0) {
            Ok(_) => {}
            Err(e) => {
                assert!(e.is_disk_full());
                grew = true;
                break;
            }
        }
    }
    set_write_budget(None);
    assert!(grew, "index growth hit the budget");
    let (end2, size2) = (log.log_end_offset(), log.size_bytes());
    assert!(end2 >= end && size2 >= size);
    let contents = read_everything(&log);
    log.append(&mut batch(7, 1), 0).unwrap();
    drop(log);
    let log = Log::open_with(dir.path(), cfg, clock, FileBudget::new(4)).unwrap();
    assert_eq!(log.log_end_offset(), end2 + 1);
    assert!(read_everything(&log).starts_with(&contents));
}

#[test]
fn file_budget_closes_least_recently_used_segments() {
    let dir = tempfile::tempdir().unwrap();
    let budget = FileBudget::new(2);
    let mut log = Log::open_with(dir.path(), config(), Arc::new(ManualClock::new(0)), budget.clone()).unwrap();
    for i in 0..40 {
        log.append(&mut batch(i, 200), 0).unwrap();
        assert!(budget.open_segments() <= 2);
    }
    let n = log.all_segments().len();
    assert!(n > 5);
    let open_count = || log.all_segments().iter().filter(|s| s.is_open()).count();
    assert!(open_count() <= 2);
    // Reading old segments opens them and evicts others, in LRU order.
    let firsts: Vec<u64> = log.all_segments().iter().map(|s| s.base_offset()).take(3).collect();
    for &o in &firsts {
        assert!(!log.read(o, 1, None).unwrap().records.is_empty());
        assert!(open_count() <= 2);
    }
    let open: Vec<u64> = log.all_segments().iter().filter(|s| s.is_open()).map(|s| s.base_offset()).collect();
    assert_eq!(open, firsts[1..].to_vec());
    // The active segment reopens transparently for appends.
    log.append(&mut batch(1, 10), 0).unwrap();
    assert!(log.all_segments().last().unwrap().is_open());
    log.release_files();
    assert_eq!(budget.open_segments(), 0);
}

#[test]
fn disk_full_leaves_epoch_cache_and_producer_state_unchanged() {
    let _guard = Unlimited;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let checkpoint = dir.path().join(super::file_names::LEADER_EPOCH_CHECKPOINT);
    let mut log = Log::open_with(dir.path(), config(), clock.clone(), FileBudget::new(4)).unwrap();
    for i in 0..3 {
        log.append(&mut batch(i, 10), 0).unwrap();
    }
    let on_disk = std::fs::read(&checkpoint).unwrap();
    let producer_batch = || {
        let mut b = RecordBatchBuilder::new(Compression::None).producer(42, 0, 0);
        b.append(0, None, Some(Bytes::from_static(b"p"))).unwrap();
        b.build().unwrap().to_vec()
    };

    // The new epoch's checkpoint cannot be written: nothing happens.
    set_write_budget(Some(0));
    assert!(log.append(&mut batch(9, 10), 1).unwrap_err().is_disk_full());
    set_write_budget(None);
    assert_eq!((log.log_end_offset(), log.epoch_entries()), (3, vec![(0, 0)]));
    assert_eq!(std::fs::read(&checkpoint).unwrap(), on_disk);

    // The checkpoint is written ("0\n2\n0 0\n1 3\n") but the batch is not:
    // the entry is undone in memory; the file cannot be fixed (no space)
    // and still names epoch 1 at the log end.
    set_write_budget(Some(12));
    assert!(log.append(&mut producer_batch(), 1).unwrap_err().is_disk_full());
    set_write_budget(None);
    assert_eq!((log.log_end_offset(), log.epoch_entries()), (3, vec![(0, 0)]));
    assert_eq!(log.latest_epoch(), Some(0));
    assert_eq!(std::fs::read_to_string(&checkpoint).unwrap(), "0\n2\n0 0\n1 3\n");
    // The producer's failed batch left no state: its retry is new, not a
    // duplicate.
    assert_eq!(log.producer_ids(), Vec::<i64>::new());

    // A crash now: the stray entry starts at the log end, so open drops it.
    drop(log);
    let mut log = Log::open_with(dir.path(), config(), clock, FileBudget::new(4)).unwrap();
    assert_eq!(log.epoch_entries(), vec![(0, 0)]);
    let info = log.append(&mut producer_batch(), 1).unwrap();
    assert!(!info.duplicate);
    assert_eq!(log.epoch_entries(), vec![(0, 0), (1, 3)]);
    assert!(log.append(&mut producer_batch(), 1).unwrap().duplicate);
}
