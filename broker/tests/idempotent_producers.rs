//! Producer state of a partition log: duplicates, sequence gaps, producer
//! epochs, and the state's survival across restarts, truncation, retention
//! and a change of leader.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use common::{file_names, make_batch, make_producer_batch, read_all};
use strata_broker::log::{FileBudget, Log, LogConfig, LogError, ManualClock, ProducerStateInfo, TimestampPolicy};
use strata_proto::record_batch::{Compression, set_base_offset, set_partition_leader_epoch};

const T0: i64 = 1_700_000_000_000;
const DAY_MS: i64 = 86_400_000;

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

fn open_with(dir: &Path, config: LogConfig, clock: &Arc<ManualClock>) -> Log {
    Log::open_with(dir, config, clock.clone(), FileBudget::new(8)).expect("open")
}

fn open(dir: &Path, clock: &Arc<ManualClock>) -> Log {
    open_with(dir, config(), clock)
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(T0))
}

/// Appends `count` records of producer `pid` at `seq` as leader.
fn produce(log: &mut Log, pid: i64, epoch: i16, seq: i32, count: usize) -> Result<(u64, u64, bool), LogError> {
    let mut b = make_producer_batch(pid, epoch, seq, count, T0);
    let info = log.append(&mut b, 0)?;
    Ok((info.base_offset, info.last_offset, info.duplicate))
}

fn snapshots(dir: &Path) -> Vec<String> {
    file_names(dir).into_iter().filter(|n| n.ends_with(".snapshot")).collect()
}

fn state(log: &Log, pid: i64) -> Option<(i16, i32, u64)> {
    log.producer_state(pid).map(|s| (s.producer_epoch, s.last_sequence, s.last_offset))
}

#[test]
fn a_retried_batch_is_not_appended_and_gets_its_original_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), &clock);
    assert_eq!(produce(&mut log, 1, 0, 0, 3).unwrap(), (0, 2, false));
    // Other writers in between.
    log.append(&mut make_batch(0, 2, 10, T0, Compression::None), 0).unwrap();
    assert_eq!(produce(&mut log, 1, 0, 3, 2).unwrap(), (5, 6, false));
    let end = log.log_end_offset();
    let size = log.size_bytes();

    assert_eq!(produce(&mut log, 1, 0, 0, 3).unwrap(), (0, 2, true));
    assert_eq!(produce(&mut log, 1, 0, 3, 2).unwrap(), (5, 6, true));
    assert_eq!((log.log_end_offset(), log.size_bytes()), (end, size));
    // The duplicate's info points at the original batch.
    let mut b = make_producer_batch(1, 0, 0, 3, T0);
    let info = log.append(&mut b, 0).unwrap();
    assert!(info.duplicate);
    assert_eq!((info.segment_base_offset, info.position), log.position_of(0).unwrap().unwrap());
    assert_eq!(
        log.producer_state(1),
        Some(ProducerStateInfo {
            producer_epoch: 0,
            last_sequence: 4,
            last_offset: 6,
            last_timestamp: T0,
            retained_batches: 2
        })
    );
    // The next batch continues normally.
    assert_eq!(produce(&mut log, 1, 0, 5, 1).unwrap(), (7, 7, false));
}

#[test]
fn only_the_last_five_batches_are_recognised_as_retries() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), &clock);
    for i in 0..7 {
        produce(&mut log, 9, 0, i, 1).unwrap();
    }
    for i in 2..7 {
        assert_eq!(produce(&mut log, 9, 0, i, 1).unwrap(), (i as u64, i as u64, true));
    }
    // Too old to be known as a retry: out of order.
    assert!(matches!(
        produce(&mut log, 9, 0, 1, 1),
        Err(LogError::OutOfOrderSequence { producer_id: 9, expected: 7, got: 1 })
    ));
}

#[test]
fn gaps_stale_epochs_and_unknown_producers_are_refused_with_the_log_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), &clock);
    produce(&mut log, 4, 3, 0, 2).unwrap();
    let files: Vec<_> = file_names(dir.path());
    let (end, size) = (log.log_end_offset(), log.size_bytes());

    assert!(matches!(
        produce(&mut log, 4, 3, 5, 1),
        Err(LogError::OutOfOrderSequence { producer_id: 4, expected: 2, got: 5 })
    ));
    assert!(matches!(
        produce(&mut log, 4, 2, 2, 1),
        Err(LogError::InvalidProducerEpoch { producer_id: 4, current: 3, given: 2 })
    ));
    // A new producer epoch must restart the sequence at 0.
    assert!(matches!(
        produce(&mut log, 4, 4, 2, 1),
        Err(LogError::OutOfOrderSequence { producer_id: 4, expected: 0, got: 2 })
    ));
    assert!(matches!(produce(&mut log, 77, 0, 12, 1), Err(LogError::UnknownProducerId { producer_id: 77 })));
    assert_eq!((log.log_end_offset(), log.size_bytes()), (end, size));
    assert_eq!(file_names(dir.path()), files);

    // What is allowed: the next sequence, a new epoch from 0, a new producer
    // from 0; after the bump the old epoch is fenced.
    produce(&mut log, 4, 3, 2, 1).unwrap();
    produce(&mut log, 4, 4, 0, 1).unwrap();
    assert!(matches!(produce(&mut log, 4, 3, 3, 1), Err(LogError::InvalidProducerEpoch { .. })));
    produce(&mut log, 77, 0, 0, 1).unwrap();
    assert_eq!(state(&log, 4), Some((4, 0, 3)));
}

#[test]
fn sequences_wrap_from_max_to_zero() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), &clock);
    // A producer that is already known, continuing from the follower path.
    let mut b = make_producer_batch(5, 0, i32::MAX - 2, 2, T0);
    set_base_offset(&mut b, 0).unwrap();
    set_partition_leader_epoch(&mut b, 0).unwrap();
    log.append_replicated(&b).unwrap();
    assert_eq!(state(&log, 5), Some((0, i32::MAX - 1, 1)));
    produce(&mut log, 5, 0, i32::MAX, 3).unwrap();
    assert_eq!(state(&log, 5), Some((0, 1, 4)));
    assert_eq!(produce(&mut log, 5, 0, i32::MAX, 3).unwrap(), (2, 4, true));
    produce(&mut log, 5, 0, 2, 1).unwrap();
}

#[test]
fn state_survives_a_clean_restart_from_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), &clock);
    for i in 0..60 {
        produce(&mut log, 1 + (i % 3), 0, (i / 3) as i32 * 2, 2).unwrap();
    }
    assert!(log.segments().len() > 3, "rolls happened");
    let before: Vec<_> = (1..=3).map(|p| state(&log, p)).collect();
    log.close().unwrap();
    // Rolls and the close each wrote one; only the newest two are kept.
    let snaps = snapshots(dir.path());
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    assert_eq!(snaps[1], "00000000000000000120.snapshot");

    let mut log = open(dir.path(), &clock);
    assert!(log.opened_clean());
    assert_eq!((1..=3).map(|p| state(&log, p)).collect::<Vec<_>>(), before);
    // Retries of the last five batches of each are still recognised.
    assert_eq!(produce(&mut log, 3, 0, 38, 2).unwrap(), (118, 119, true));
    assert!(produce(&mut log, 3, 0, 30, 2).unwrap().2);
    assert!(produce(&mut log, 3, 0, 28, 2).is_err());
    assert_eq!(produce(&mut log, 3, 0, 40, 2).unwrap(), (120, 121, false));
}

#[test]
fn state_survives_a_crash_by_replaying_from_the_last_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let clock = clock();
    let mut log = open(d, &clock);
    for i in 0..40 {
        produce(&mut log, 1 + (i % 2), 0, (i / 2) as i32, 1).unwrap();
    }
    let before: Vec<_> = (1..=2).map(|p| state(&log, p)).collect();
    drop(log); // crash: no close, no snapshot at the log end

    let mut log = open(d, &clock);
    assert!(!log.opened_clean());
    assert_eq!((1..=2).map(|p| state(&log, p)).collect::<Vec<_>>(), before);
    assert_eq!(produce(&mut log, 2, 0, 19, 1).unwrap(), (39, 39, true));
    drop(log);

    // Without any snapshot (deleted, or garbage), the state is rebuilt
    // from the whole log.
    for s in snapshots(d) {
        fs::write(d.join(&s), b"garbage").unwrap();
    }
    fs::write(d.join("00000000000000000007.snapshot.tmp"), b"half").unwrap();
    let log = open(d, &clock);
    assert_eq!((1..=2).map(|p| state(&log, p)).collect::<Vec<_>>(), before);
    assert!(!d.join("00000000000000000007.snapshot.tmp").exists());
    assert!(snapshots(d).is_empty(), "damaged snapshots are deleted");
    log.close().unwrap();
    assert_eq!(snapshots(d), vec!["00000000000000000040.snapshot"]);
}

#[test]
fn a_torn_tail_takes_its_batches_out_of_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let clock = clock();
    let mut log = open(d, &clock);
    for seq in 0..6 {
        produce(&mut log, 8, 0, seq, 1).unwrap();
    }
    let base = log.segments().last().unwrap().base_offset;
    drop(log);
    let path = strata_broker::log::file_names::log_file(d, base);
    let len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 3).unwrap();
    let mut log = open(d, &clock);
    assert_eq!(log.log_end_offset(), 5);
    assert_eq!(state(&log, 8), Some((0, 4, 4)));
    // The lost batch is simply the next one now.
    assert_eq!(produce(&mut log, 8, 0, 5, 1).unwrap(), (5, 5, false));
}

#[test]
fn truncation_rebuilds_the_state_of_what_remains() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let clock = clock();
    let mut log = open(d, &clock);
    for i in 0..30 {
        produce(&mut log, 1, 0, 2 * i, 2).unwrap();
        if i == 20 {
            produce(&mut log, 2, 0, 0, 1).unwrap();
        }
    }
    log.close().unwrap();
    let mut log = open(d, &clock);
    // Cut below the newest snapshots: they are dropped, state is replayed.
    log.truncate_to(21).unwrap();
    assert_eq!(log.log_end_offset(), 20);
    assert_eq!(state(&log, 1), Some((0, 19, 19)));
    assert_eq!(state(&log, 2), None);
    assert!(snapshots(d).iter().all(|s| s.as_str() <= "00000000000000000020.snapshot"), "{:?}", snapshots(d));
    // A batch that was cut is no duplicate any more: it is the next one.
    assert_eq!(produce(&mut log, 1, 0, 20, 2).unwrap(), (20, 21, false));
    assert!(matches!(produce(&mut log, 2, 0, 1, 1), Err(LogError::UnknownProducerId { .. })));
    drop(log);
    let log = open(d, &clock);
    assert_eq!(state(&log, 1), Some((0, 21, 21)));

    // A full truncation forgets every producer, on disk too.
    let mut log = log;
    log.truncate_fully_and_start_at(100).unwrap();
    assert_eq!(log.producer_ids(), Vec::<i64>::new());
    assert!(snapshots(d).is_empty());
    assert!(matches!(produce(&mut log, 1, 0, 22, 1), Err(LogError::UnknownProducerId { .. })));
    log.close().unwrap();
    let log = open(d, &clock);
    assert_eq!(log.producer_ids(), Vec::<i64>::new());
}

#[test]
fn followers_take_state_without_checks_and_dedupe_once_they_lead() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut leader = open(&dir.path().join("leader"), &clock);
    let mut follower = open(&dir.path().join("follower"), &clock);
    for i in 0..12 {
        produce(&mut leader, 1 + (i % 2), 0, (i / 2) as i32 * 3, 3).unwrap();
    }
    for b in read_all(&leader, 0, 1) {
        follower.append_replicated(&b).unwrap();
    }
    for p in 1..=2 {
        assert_eq!(follower.producer_state(p), leader.producer_state(p));
    }
    // Replicated batches are not checked: a gap from the leader is taken.
    let mut gap = make_producer_batch(1, 0, 100, 1, T0);
    set_base_offset(&mut gap, follower.log_end_offset() as i64).unwrap();
    set_partition_leader_epoch(&mut gap, 0).unwrap();
    follower.append_replicated(&gap).unwrap();
    assert_eq!(state(&follower, 1).map(|s| s.1), Some(100));

    // The follower becomes leader (epoch 1) after a restart: retries sent
    // to the old leader are recognised.
    follower.close().unwrap();
    let mut new_leader = open(&dir.path().join("follower"), &clock);
    let mut retry = make_producer_batch(2, 0, 15, 3, T0);
    let info = new_leader.append(&mut retry, 1).unwrap();
    assert!(info.duplicate);
    assert_eq!((info.base_offset, info.last_offset), (33, 35));
    assert_eq!(produce_at(&mut new_leader, 2, 18, 1), Ok(37));
}

fn produce_at(log: &mut Log, pid: i64, seq: i32, epoch: i32) -> Result<u64, String> {
    let mut b = make_producer_batch(pid, 0, seq, 1, T0);
    log.append(&mut b, epoch).map(|i| i.base_offset).map_err(|e| e.to_string())
}

#[test]
fn retention_keeps_the_state_of_producers_whose_batches_were_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let clock = clock();
    let mut log = open(d, &clock);
    produce(&mut log, 1, 0, 0, 2).unwrap();
    for i in 0..30 {
        produce(&mut log, 2, 0, 2 * i, 2).unwrap();
    }
    log.set_config(LogConfig { retention_bytes: Some(1500), ..config() });
    let out = log.apply_retention().unwrap();
    log.set_config(config());
    assert!(out.log_start_offset > 2, "producer 1's batch is gone");
    assert_eq!(state(&log, 1), Some((0, 1, 1)));
    // Its next batch continues the sequence, after a restart as well.
    log.close().unwrap();
    let mut log = open(d, &clock);
    assert_eq!(state(&log, 1), Some((0, 1, 1)));
    assert_eq!(state(&log, 2).map(|s| s.1), Some(59));
    produce(&mut log, 1, 0, 2, 1).unwrap();
}

#[test]
fn idle_producers_expire_during_maintenance() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), &clock);
    let mut b = make_producer_batch(1, 0, 0, 1, T0);
    log.append(&mut b, 0).unwrap();
    let mut b = make_producer_batch(2, 0, 0, 1, T0 + DAY_MS / 2);
    log.append(&mut b, 0).unwrap();
    clock.set(T0 + DAY_MS - 1);
    log.maintenance().unwrap();
    assert_eq!(log.producer_ids(), vec![1, 2]);
    clock.set(T0 + DAY_MS);
    log.maintenance().unwrap();
    assert_eq!(log.producer_ids(), vec![2]);
    // An expired producer is unknown: only sequence 0 starts it again.
    assert!(matches!(produce(&mut log, 1, 0, 1, 1), Err(LogError::UnknownProducerId { .. })));
    // Expired producers stay expired across a restart.
    log.close().unwrap();
    let log = open(dir.path(), &clock);
    assert_eq!(log.producer_ids(), vec![2]);
    drop(log);
    let custom = LogConfig { producer_id_expiration_ms: 1000, ..config() };
    let log = open_with(dir.path(), custom, &clock);
    assert_eq!(log.producer_ids(), Vec::<i64>::new());
}

#[test]
fn duplicates_report_the_original_log_append_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let config = LogConfig { timestamp: TimestampPolicy::LogAppendTime, ..config() };
    let mut log = open_with(dir.path(), config, &clock);
    let mut b = make_producer_batch(3, 0, 0, 2, 5);
    let first = log.append(&mut b, 0).unwrap();
    assert_eq!(first.log_append_time, Some(T0));
    clock.advance(500);
    let mut b = make_producer_batch(3, 0, 0, 2, 5);
    let again = log.append(&mut b, 0).unwrap();
    assert!(again.duplicate);
    assert_eq!((again.base_offset, again.log_append_time), (0, Some(T0)));
}

// ---------------------------------------------------------------------------
// Property test: the log's verdicts and producer state always match a model
// derived from the producer batches the log holds (no retention or expiry
// here, so the whole history is in the log).

mod model {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    pub enum Action {
        Next,
        Retry(usize),
        Gap(i32),
        NewEpoch { from_zero: bool },
        StaleEpoch,
    }

    #[derive(Debug, Clone)]
    pub enum Op {
        Produce { pid: i64, action: Action, count: usize },
        Plain,
        Roll,
        Truncate { pick: prop::sample::Index },
        Reopen { clean: bool, lose_snapshots: bool },
    }

    pub fn op() -> impl Strategy<Value = Op> {
        let action = prop_oneof![
            6 => Just(Action::Next),
            3 => (0usize..7).prop_map(Action::Retry),
            1 => (1i32..3).prop_map(Action::Gap),
            1 => any::<bool>().prop_map(|from_zero| Action::NewEpoch { from_zero }),
            1 => Just(Action::StaleEpoch),
        ];
        prop_oneof![
            12 => (0i64..3, action, 1usize..4).prop_map(|(pid, action, count)| Op::Produce { pid, action, count }),
            1 => Just(Op::Plain),
            1 => Just(Op::Roll),
            2 => any::<prop::sample::Index>().prop_map(|pick| Op::Truncate { pick }),
            2 => (any::<bool>(), any::<bool>()).prop_map(|(clean, lose_snapshots)| Op::Reopen { clean, lose_snapshots }),
        ]
    }

    /// A producer batch in the log.
    #[derive(Debug, Clone, Copy)]
    struct Stored {
        pid: i64,
        epoch: i16,
        first: i32,
        last: i32,
        base: u64,
        last_offset: u64,
    }

    #[derive(Default)]
    struct Model {
        batches: Vec<Stored>,
        /// (base, records) of every batch, producer or not.
        all: Vec<(u64, u64)>,
        end: u64,
    }

    fn next_seq(s: i32) -> i32 {
        if s == i32::MAX { 0 } else { s + 1 }
    }

    impl Model {
        fn of(&self, pid: i64) -> Vec<Stored> {
            self.batches.iter().filter(|b| b.pid == pid).copied().collect()
        }

        /// (epoch, batches remembered) as the log must see them.
        fn state(&self, pid: i64) -> Option<(i16, Vec<Stored>)> {
            let all = self.of(pid);
            let epoch = all.last()?.epoch;
            let same: Vec<Stored> = all.iter().rev().take_while(|b| b.epoch == epoch).take(5).copied().collect();
            Some((epoch, same.into_iter().rev().collect()))
        }

        /// What appending (pid, epoch, first, count) must do: Ok(None) =
        /// append, Ok(Some(b)) = duplicate of b, Err(kind).
        fn verdict(&self, pid: i64, epoch: i16, first: i32, count: usize) -> Result<Option<Stored>, &'static str> {
            let Some((current, retained)) = self.state(pid) else {
                return if first == 0 { Ok(None) } else { Err("unknown") };
            };
            if epoch < current {
                return Err("epoch");
            }
            if epoch > current {
                return if first == 0 { Ok(None) } else { Err("sequence") };
            }
            let last = (0..count - 1).fold(first, |s, _| next_seq(s));
            if let Some(b) = retained.iter().find(|b| b.first == first && b.last == last) {
                return Ok(Some(*b));
            }
            let expected = next_seq(retained.last().map_or(-1, |b| b.last));
            if first == expected { Ok(None) } else { Err("sequence") }
        }
    }

    fn kind(e: &LogError) -> &'static str {
        match e {
            LogError::UnknownProducerId { .. } => "unknown",
            LogError::InvalidProducerEpoch { .. } => "epoch",
            LogError::OutOfOrderSequence { .. } => "sequence",
            _ => "other",
        }
    }

    fn fail(e: impl std::fmt::Display) -> TestCaseError {
        TestCaseError::fail(e.to_string())
    }

    fn check(log: &Log, model: &Model) -> Result<(), TestCaseError> {
        prop_assert_eq!(log.log_end_offset(), model.end);
        for pid in 0..3 {
            let want = model.state(pid).map(|(epoch, retained)| {
                let last = retained.last().copied().expect("never empty");
                (epoch, last.last, last.last_offset, retained.len())
            });
            let got =
                log.producer_state(pid).map(|s| (s.producer_epoch, s.last_sequence, s.last_offset, s.retained_batches));
            prop_assert_eq!(got, want, "producer {}", pid);
        }
        Ok(())
    }

    pub fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
        let scratch = tempfile::tempdir().map_err(fail)?;
        let dir = scratch.path();
        let clock = clock();
        let mut log = open(dir, &clock);
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Produce { pid, action, count } => {
                    let state = model.state(pid);
                    let (epoch, next) = match &state {
                        Some((e, r)) => (*e, next_seq(r.last().map_or(-1, |b| b.last))),
                        None => (0, 0),
                    };
                    let (epoch, first, count) = match action {
                        Action::Next => (epoch, next, count),
                        Action::Retry(k) => match model.of(pid).iter().rev().nth(k) {
                            Some(b) => (b.epoch, b.first, (b.last_offset - b.base + 1) as usize),
                            None => (epoch, next, count),
                        },
                        Action::Gap(g) => (epoch, next.wrapping_add(g), count),
                        Action::NewEpoch { from_zero } => (epoch + 1, if from_zero { 0 } else { 1 }, count),
                        Action::StaleEpoch => ((epoch - 1).max(0), next, count),
                    };
                    let want = model.verdict(pid, epoch, first, count);
                    let mut b = make_producer_batch(pid, epoch, first, count, T0);
                    let got = log.append(&mut b, 0);
                    match (want, got) {
                        (Ok(None), Ok(info)) => {
                            prop_assert!(!info.duplicate);
                            prop_assert_eq!(info.base_offset, model.end);
                            let last = (0..count - 1).fold(first, |s, _| next_seq(s));
                            model.batches.push(Stored {
                                pid,
                                epoch,
                                first,
                                last,
                                base: model.end,
                                last_offset: info.last_offset,
                            });
                            model.all.push((model.end, count as u64));
                            model.end += count as u64;
                        }
                        (Ok(Some(orig)), Ok(info)) => {
                            prop_assert!(info.duplicate);
                            prop_assert_eq!((info.base_offset, info.last_offset), (orig.base, orig.last_offset));
                        }
                        (Err(k), Err(e)) => prop_assert_eq!(k, kind(&e)),
                        (want, got) => {
                            return Err(fail(format!(
                                "pid {pid} epoch {epoch} seq {first}: want {want:?}, got {got:?}"
                            )));
                        }
                    }
                }
                Op::Plain => {
                    let mut b = make_batch(model.end, 2, 20, T0, Compression::None);
                    log.append(&mut b, 0).map_err(fail)?;
                    model.all.push((model.end, 2));
                    model.end += 2;
                }
                Op::Roll => log.roll().map_err(fail)?,
                Op::Truncate { pick } => {
                    let offset = pick.index(model.end as usize + 1) as u64;
                    let new_end = log.truncate_to(offset).map_err(fail)?;
                    if let Some(i) = model.all.iter().position(|&(base, n)| base + n > offset) {
                        model.end = model.all[i].0;
                        model.all.truncate(i);
                    }
                    model.batches.retain(|b| b.base < model.end);
                    prop_assert_eq!(new_end, model.end);
                }
                Op::Reopen { clean, lose_snapshots } => {
                    if clean {
                        log.close().map_err(fail)?;
                    } else {
                        drop(log);
                    }
                    if lose_snapshots {
                        for s in snapshots(dir) {
                            fs::remove_file(dir.join(s)).map_err(fail)?;
                        }
                    }
                    log = open(dir, &clock);
                }
            }
            check(&log, &model)?;
            prop_assert!(snapshots(dir).len() <= 2);
        }
        Ok(())
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..proptest::prelude::ProptestConfig::default() })]

    #[test]
    fn producer_state_agrees_with_the_batches_in_the_log(ops in proptest::collection::vec(model::op(), 1..80)) {
        model::run(ops)?;
    }
}
