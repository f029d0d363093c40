//! 10,000 partitions on one broker, with a small bound on open files.

mod common;

use std::sync::Arc;

use common::make_batch;
use strata_broker::log::{LogConfig, LogManager, ManualClock, TopicPartition};
use strata_proto::record_batch::Compression;

/// This test is about file handles, not durability: on tmpfs its ~70,000
/// fsyncs cost nothing, where a real disk would make it take a minute.
fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::tempdir_in(shm)
    {
        return d;
    }
    tempfile::tempdir().unwrap()
}

#[test]
fn ten_thousand_partitions_with_bounded_open_files() {
    const PARTITIONS: u32 = 10_000;
    const BOUND: usize = 64;
    let dir = scratch_dir();
    let clock = Arc::new(ManualClock::new(0));
    let config = LogConfig { segment_ms: None, retention_ms: None, ..LogConfig::default() };
    let manager = LogManager::open(dir.path(), config.clone(), BOUND, clock.clone()).unwrap();
    let tp = |p: u32| TopicPartition::new(format!("topic-{}", p % 7), p);
    for p in 0..PARTITIONS {
        let log = manager.get_or_create(&tp(p), None).unwrap();
        let mut log = log.lock().unwrap();
        let mut b = make_batch(u64::from(p), 1, 20, 0, Compression::None);
        log.append(&mut b, 0).unwrap();
        assert!(manager.budget().open_segments() <= BOUND);
    }
    // Every partition is readable again, reopening its files on demand.
    for p in (0..PARTITIONS).rev() {
        let log = manager.get(&tp(p)).unwrap();
        let log = log.lock().unwrap();
        let f = log.read(0, 1 << 20, None).unwrap();
        assert!(f.records.len() > 20);
        assert!(manager.budget().open_segments() <= BOUND);
    }
    assert_eq!(manager.partitions().len(), PARTITIONS as usize);
    assert!(manager.delete(&tp(3)).unwrap());
    manager.close().unwrap();

    let manager = LogManager::open(dir.path(), config, BOUND, clock).unwrap();
    assert_eq!(manager.partitions().len(), PARTITIONS as usize - 1);
    let log = manager.get(&tp(9_999)).unwrap();
    assert!(log.lock().unwrap().opened_clean());
    assert_eq!(log.lock().unwrap().log_end_offset(), 1);
    assert!(manager.get(&tp(3)).is_none());
    assert!(manager.budget().open_segments() <= BOUND);
}

#[test]
fn invalid_topic_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let manager = LogManager::open(dir.path(), LogConfig::default(), 4, Arc::new(ManualClock::new(0))).unwrap();
    for bad in ["", "..", "a/b", "x y"] {
        assert!(manager.get_or_create(&TopicPartition::new(bad, 0), None).is_err());
    }
}
