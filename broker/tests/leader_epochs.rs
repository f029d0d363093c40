//! The leader-epoch cache of a partition log: what appends record, what
//! truncation and retention remove, OffsetsForLeaderEpoch answers, and the
//! `leader-epoch-checkpoint` file across clean and unclean restarts.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use common::{file_names, make_batch, read_all};
use proptest::prelude::*;
use strata_broker::log::file_names::log_file;
use strata_broker::log::{FileBudget, Log, LogConfig, LogError, ManualClock};
use strata_proto::record_batch::{Compression, set_base_offset, set_partition_leader_epoch};

const CHECKPOINT: &str = "leader-epoch-checkpoint";

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        segment_ms: None,
        retention_ms: None,
        retention_bytes: None,
        index_interval_bytes: 128,
        ..LogConfig::default()
    }
}

fn open(dir: &Path) -> Log {
    Log::open_with(dir, config(), Arc::new(ManualClock::new(0)), FileBudget::new(8)).expect("open")
}

/// Uncompressed, ~300 bytes for two records: three batches per segment.
fn batch(tag: u64, records: usize) -> Vec<u8> {
    make_batch(tag, records, 100, 1000 + tag as i64, Compression::None)
}

/// The checkpoint as Kafka's text format says: `None` if absent.
fn checkpoint_entries(dir: &Path) -> Option<Vec<(i32, u64)>> {
    let text = fs::read_to_string(dir.join(CHECKPOINT)).ok()?;
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("0"), "version line");
    let n: usize = lines.next().unwrap().parse().unwrap();
    let entries: Vec<(i32, u64)> = lines
        .map(|l| {
            let (e, o) = l.split_once(' ').unwrap();
            (e.parse().unwrap(), o.parse().unwrap())
        })
        .collect();
    assert_eq!(entries.len(), n);
    Some(entries)
}

/// Appends batches of `records` records at each epoch in turn (as leader).
fn fill(log: &mut Log, epochs: &[(i32, usize)]) -> Vec<Vec<u8>> {
    let mut stored = Vec::new();
    for (i, &(epoch, records)) in epochs.iter().enumerate() {
        let mut b = batch(i as u64, records);
        log.append(&mut b, epoch).unwrap();
        stored.push(b);
    }
    stored
}

#[test]
fn leader_appends_record_where_each_epoch_starts() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    assert_eq!((log.latest_epoch(), log.epoch_entries()), (None, vec![]));
    assert_eq!(log.end_offset_for_epoch(0), None);
    // Offsets 0..6 in epoch 0, 6..10 in epoch 2, 10..13 in epoch 5.
    fill(&mut log, &[(0, 2), (0, 2), (0, 2), (2, 3), (2, 1), (5, 3)]);
    assert_eq!(log.epoch_entries(), vec![(0, 0), (2, 6), (5, 10)]);
    assert_eq!(log.latest_epoch(), Some(5));
    assert_eq!(checkpoint_entries(dir.path()), Some(log.epoch_entries()));

    assert_eq!(log.end_offset_for_epoch(-1), None);
    assert_eq!(log.end_offset_for_epoch(0), Some((0, 6)));
    assert_eq!(log.end_offset_for_epoch(1), Some((0, 6)));
    assert_eq!(log.end_offset_for_epoch(2), Some((2, 10)));
    assert_eq!(log.end_offset_for_epoch(4), Some((2, 10)));
    assert_eq!(log.end_offset_for_epoch(5), Some((5, 13)));
    assert_eq!(log.end_offset_for_epoch(9), Some((5, 13)));

    // A deposed leader's append is refused, and nothing changes on disk.
    let files = file_names(dir.path());
    let size = log.size_bytes();
    let mut stale = batch(99, 1);
    assert!(matches!(log.append(&mut stale, 4), Err(LogError::StaleLeaderEpoch { given: 4, latest: 5 })));
    assert_eq!((log.log_end_offset(), log.size_bytes()), (13, size));
    assert_eq!(file_names(dir.path()), files);
    assert_eq!(checkpoint_entries(dir.path()), Some(log.epoch_entries()));
}

#[test]
fn follower_appends_take_the_batch_epoch_and_refuse_divergence() {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = open(&dir.path().join("leader"));
    let mut follower = open(&dir.path().join("follower"));
    fill(&mut leader, &[(1, 2), (1, 3), (4, 1), (4, 2), (7, 2)]);
    for b in read_all(&leader, 0, 1) {
        follower.append_replicated(&b).unwrap();
    }
    assert_eq!(follower.epoch_entries(), vec![(1, 0), (4, 5), (7, 8)]);
    assert_eq!(follower.epoch_entries(), leader.epoch_entries());
    assert_eq!(checkpoint_entries(&dir.path().join("follower")), Some(follower.epoch_entries()));

    // A batch from an older epoch than the follower's latest: divergence.
    let mut b = batch(50, 2);
    set_base_offset(&mut b, 10).unwrap();
    set_partition_leader_epoch(&mut b, 6).unwrap();
    let end = follower.log_end_offset();
    assert!(matches!(follower.append_replicated(&b), Err(LogError::StaleLeaderEpoch { given: 6, latest: 7 })));
    assert_eq!(follower.log_end_offset(), end);
    assert_eq!(follower.epoch_entries(), vec![(1, 0), (4, 5), (7, 8)]);

    // Truncating to the divergence point first makes it acceptable.
    follower.truncate_to(8).unwrap();
    set_base_offset(&mut b, 8).unwrap();
    follower.append_replicated(&b).unwrap();
    assert_eq!(follower.epoch_entries(), vec![(1, 0), (4, 5), (6, 8)]);
}

#[test]
fn truncation_and_retention_keep_the_cache_in_step() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    // Four epochs over ~7 segments of 1 KiB.
    let mut plan = Vec::new();
    for (epoch, n) in [(0, 8), (1, 8), (3, 8), (6, 8)] {
        plan.extend(std::iter::repeat_n((epoch, 2), n));
    }
    fill(&mut log, &plan);
    assert_eq!(log.epoch_entries(), vec![(0, 0), (1, 16), (3, 32), (6, 48)]);

    // Cut inside epoch 3: epoch 6 goes, epoch 3 ends at the new end.
    assert_eq!(log.truncate_to(41).unwrap(), 40);
    assert_eq!(log.epoch_entries(), vec![(0, 0), (1, 16), (3, 32)]);
    assert_eq!(log.end_offset_for_epoch(3), Some((3, 40)));
    assert_eq!(log.end_offset_for_epoch(6), Some((3, 40)));
    // Cut exactly where epoch 3 started: it goes too.
    log.truncate_to(32).unwrap();
    assert_eq!(log.epoch_entries(), vec![(0, 0), (1, 16)]);
    assert_eq!(checkpoint_entries(dir.path()), Some(log.epoch_entries()));

    // Retention moves the start into epoch 1: epoch 0 goes, and epoch 1 now
    // starts at the new log start.
    fill(&mut log, &[(7, 2), (7, 2)]);
    let mut c = config();
    c.retention_bytes = Some(1500);
    log.set_config(c);
    let out = log.apply_retention().unwrap();
    log.set_config(config());
    let start = out.log_start_offset;
    assert_eq!(start, 24);
    assert_eq!(log.epoch_entries(), vec![(1, start), (7, 32)]);
    assert_eq!(log.end_offset_for_epoch(0), None);
    assert_eq!(log.end_offset_for_epoch(1), Some((1, 32)));
    assert_eq!(checkpoint_entries(dir.path()), Some(log.epoch_entries()));

    // A full truncation forgets every epoch, and older ones are accepted
    // again (the log restarts from the leader's).
    log.truncate_fully_and_start_at(500).unwrap();
    assert_eq!(log.epoch_entries(), vec![]);
    assert_eq!(checkpoint_entries(dir.path()), Some(vec![]));
    let mut b = batch(1, 1);
    set_base_offset(&mut b, 500).unwrap();
    set_partition_leader_epoch(&mut b, 2).unwrap();
    log.append_replicated(&b).unwrap();
    assert_eq!(log.epoch_entries(), vec![(2, 500)]);
}

#[test]
fn the_cache_survives_clean_and_unclean_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    fill(&mut log, &[(0, 3), (0, 3), (2, 3), (2, 3), (3, 3)]);
    let entries = vec![(0, 0), (2, 6), (3, 12)];
    assert_eq!(log.epoch_entries(), entries);
    log.close().unwrap();

    let mut log = open(dir.path());
    assert!(log.opened_clean());
    assert_eq!(log.epoch_entries(), entries);
    // Unclean: the process dies after writing epoch 4's first batch.
    fill(&mut log, &[(4, 3)]);
    drop(log);
    let log = open(dir.path());
    assert!(!log.opened_clean());
    assert_eq!(log.epoch_entries(), vec![(0, 0), (2, 6), (3, 12), (4, 15)]);
    drop(log);

    // A torn write of that batch: recovery cuts it, and the epoch it
    // started disappears with it (the checkpoint was ahead of the log).
    let base = open(dir.path()).segments().last().unwrap().base_offset;
    let path = log_file(dir.path(), base);
    let len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 7).unwrap();
    let mut log = open(dir.path());
    assert!(log.recovered_bytes() > 0);
    assert_eq!(log.log_end_offset(), 15);
    assert_eq!(log.epoch_entries(), entries);
    assert_eq!(checkpoint_entries(dir.path()), Some(entries.clone()));
    assert_eq!(log.end_offset_for_epoch(3), Some((3, 15)));
    assert_eq!(log.end_offset_for_epoch(4), Some((3, 15)));
    // Epoch 4 (or an older one: 3) can be written again at the new end.
    fill(&mut log, &[(3, 1)]);
    assert_eq!(log.epoch_entries(), entries);
}

#[test]
fn a_missing_damaged_or_stale_checkpoint_is_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut log = open(d);
    let stored = fill(&mut log, &[(0, 2), (1, 2), (1, 2), (5, 2), (5, 2), (5, 2), (8, 2)]);
    let entries = vec![(0, 0), (1, 2), (5, 6), (8, 12)];
    assert_eq!(log.epoch_entries(), entries);
    log.close().unwrap();
    assert!(open(d).segments().len() > 1, "the rebuild crosses segments");

    let damage: [(&str, &[u8]); 6] = [
        ("garbage", b"\x00\xffnot a checkpoint"),
        ("empty file", b""),
        ("wrong count", b"0\n5\n0 0\n1 2\n"),
        ("not increasing", b"0\n2\n5 6\n1 2\n"),
        // Parses, but the log's last batch is from an epoch it lacks.
        ("behind the log", b"0\n2\n0 0\n1 2\n"),
        ("no entries", b"0\n0\n"),
    ];
    for (what, bytes) in damage {
        fs::write(d.join(CHECKPOINT), bytes).unwrap();
        fs::write(d.join(format!("{CHECKPOINT}.tmp")), b"0\n1\n9 9\n").unwrap();
        let log = open(d);
        assert_eq!(log.epoch_entries(), entries, "{what}");
        assert_eq!(checkpoint_entries(d), Some(entries.clone()), "{what}");
        assert!(!d.join(format!("{CHECKPOINT}.tmp")).exists());
        assert_eq!(read_all(&log, 0, 1 << 20), stored);
        log.close().unwrap();
    }
    fs::remove_file(d.join(CHECKPOINT)).unwrap();
    let log = open(d);
    assert_eq!(log.epoch_entries(), entries);
    assert_eq!(checkpoint_entries(d), Some(entries));
}

#[test]
fn a_new_empty_log_writes_no_checkpoint_until_an_epoch_appears() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("t-0");
    let log = open(&d);
    log.close().unwrap();
    let log = open(&d);
    assert!(!d.join(CHECKPOINT).exists());
    drop(log);
    let mut log = open(&d);
    // No epoch (-1) is never recorded.
    fill(&mut log, &[(-1, 1)]);
    assert_eq!(log.latest_epoch(), None);
    fill(&mut log, &[(0, 1)]);
    assert_eq!(checkpoint_entries(&d), Some(vec![(0, 1)]));
}

// ---------------------------------------------------------------------------
// Property test: the cache always describes the batches in the log.

#[derive(Debug, Clone)]
enum Op {
    Append { records: usize, bump: i32, follower: bool },
    Roll,
    Truncate { pick: prop::sample::Index },
    Retention { max_bytes: u64 },
    TruncateFully { gap: u64 },
    Reopen { clean: bool, damage: Option<u8> },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (1usize..4, prop_oneof![4 => Just(0), 1 => 1i32..3], any::<bool>())
            .prop_map(|(records, bump, follower)| Op::Append { records, bump, follower }),
        1 => Just(Op::Roll),
        2 => any::<prop::sample::Index>().prop_map(|pick| Op::Truncate { pick }),
        1 => (200u64..3000).prop_map(|max_bytes| Op::Retention { max_bytes }),
        1 => (0u64..5).prop_map(|gap| Op::TruncateFully { gap }),
        2 => (any::<bool>(), prop::option::of(0u8..3)).prop_map(|(clean, damage)| Op::Reopen { clean, damage }),
    ]
}

#[derive(Debug, Default)]
struct Model {
    /// (base offset, records, epoch) of every batch in the log.
    batches: Vec<(u64, u64, i32)>,
    start: u64,
    end: u64,
    epoch: i32,
}

impl Model {
    fn derived(&self) -> Vec<(i32, u64)> {
        let mut out: Vec<(i32, u64)> = Vec::new();
        for &(base, _, epoch) in &self.batches {
            if out.last().is_none_or(|&(e, _)| e != epoch) {
                out.push((epoch, base));
            }
        }
        out
    }

    /// OffsetsForLeaderEpoch by brute force over the batches.
    fn end_offset_for(&self, q: i32) -> Option<(i32, u64)> {
        let floor = self.batches.iter().map(|b| b.2).filter(|&e| e <= q).max()?;
        let end = self.batches.iter().find(|b| b.2 > floor).map_or(self.end, |b| b.0);
        Some((floor, end))
    }
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

fn check(log: &Log, model: &Model, dir: &Path) -> Result<(), TestCaseError> {
    prop_assert_eq!((log.log_start_offset(), log.log_end_offset()), (model.start, model.end));
    let entries = log.epoch_entries();
    if model.batches.is_empty() {
        // An empty log may remember the epoch in force at its start.
        prop_assert!(entries.len() <= 1 && entries.iter().all(|&(_, s)| s == model.end), "{:?}", entries);
    } else {
        prop_assert_eq!(&entries, &model.derived());
        for q in -1..=model.epoch + 1 {
            prop_assert_eq!(log.end_offset_for_epoch(q), model.end_offset_for(q), "epoch {}", q);
        }
    }
    match checkpoint_entries(dir) {
        Some(on_disk) => prop_assert_eq!(on_disk, entries),
        None => prop_assert!(entries.is_empty()),
    }
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let scratch = tempfile::tempdir().map_err(fail)?;
    let dir = scratch.path();
    let mut log = open(dir);
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Append { records, bump, follower } => {
                model.epoch += bump;
                let mut b = batch(model.end, records);
                if follower {
                    set_base_offset(&mut b, model.end as i64).map_err(fail)?;
                    set_partition_leader_epoch(&mut b, model.epoch).map_err(fail)?;
                    log.append_replicated(&b).map_err(fail)?;
                } else {
                    log.append(&mut b, model.epoch).map_err(fail)?;
                }
                model.batches.push((model.end, records as u64, model.epoch));
                model.end += records as u64;
            }
            Op::Roll => log.roll().map_err(fail)?,
            Op::Truncate { pick } => {
                let offset = model.start + pick.index((model.end - model.start + 1) as usize) as u64;
                let new_end = log.truncate_to(offset).map_err(fail)?;
                if let Some(i) = model.batches.iter().position(|b| b.0 + b.1 > offset) {
                    model.end = model.batches[i].0;
                    model.batches.truncate(i);
                }
                prop_assert_eq!(new_end, model.end);
            }
            Op::Retention { max_bytes } => {
                log.set_config(LogConfig { retention_bytes: Some(max_bytes), ..config() });
                let out = log.apply_retention().map_err(fail)?;
                log.set_config(config());
                model.start = out.log_start_offset;
                model.batches.retain(|b| b.0 >= model.start);
            }
            Op::TruncateFully { gap } => {
                let at = model.end + gap;
                log.truncate_fully_and_start_at(at).map_err(fail)?;
                model.batches.clear();
                model.start = at;
                model.end = at;
            }
            Op::Reopen { clean, damage } => {
                if clean {
                    log.close().map_err(fail)?;
                } else {
                    drop(log);
                }
                match damage {
                    Some(0) => {
                        let _ = fs::remove_file(dir.join(CHECKPOINT));
                    }
                    Some(1) => fs::write(dir.join(CHECKPOINT), b"0\n1\nxx\n").map_err(fail)?,
                    Some(_) => fs::write(dir.join(CHECKPOINT), b"0\n0\n").map_err(fail)?,
                    None => {}
                }
                log = open(dir);
            }
        }
        check(&log, &model, dir)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn cache_agrees_with_the_batches_in_the_log(ops in prop::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}
