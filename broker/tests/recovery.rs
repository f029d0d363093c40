//! Damage on disk is repaired at open: torn or corrupt tails are cut,
//! missing or damaged indexes and checkpoints are rebuilt.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{make_batch, read_all};
use strata_broker::log::file_names::{index_file, log_file, time_index_file};
use strata_broker::log::{FileBudget, Log, LogConfig, ManualClock};
use strata_proto::record_batch::Compression;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        segment_ms: None,
        retention_ms: None,
        index_interval_bytes: 128,
        ..LogConfig::default()
    }
}

fn open(dir: &Path) -> Log {
    Log::open_with(dir, config(), Arc::new(ManualClock::new(0)), FileBudget::new(8))
        .expect("open never fails on damaged content")
}

/// Fills a log with `n` two-record batches; returns the stored batches.
fn fill(dir: &Path, n: u64) -> Vec<Vec<u8>> {
    let mut log = open(dir);
    let mut stored = Vec::new();
    for i in 0..n {
        let mut b = make_batch(i, 2, 50, 1000 + i as i64, Compression::ALL[(i % 5) as usize]);
        log.append(&mut b, 0).unwrap();
        stored.push(b);
    }
    drop(log); // unclean: no marker
    stored
}

fn tail_segment(dir: &Path) -> (u64, PathBuf) {
    let log = open(dir);
    let base = log.segments().last().unwrap().base_offset;
    drop(log);
    (base, log_file(dir, base))
}

/// Positions of the batches in the tail segment.
fn tail_positions(stored: &[Vec<u8>], tail_base: u64) -> Vec<(usize, u64)> {
    let mut pos = 0u64;
    let mut out = Vec::new();
    for (i, b) in stored.iter().enumerate() {
        if (i as u64) * 2 >= tail_base {
            out.push((i, pos));
            pos += b.len() as u64;
        }
    }
    out
}

#[test]
fn flipped_byte_in_the_tail_cuts_from_that_batch() {
    let dir = tempfile::tempdir().unwrap();
    let stored = fill(dir.path(), 40);
    let (base, path) = tail_segment(dir.path());
    let positions = tail_positions(&stored, base);
    assert!(positions.len() >= 3);
    let (victim, pos) = positions[positions.len() / 2];
    let mut bytes = fs::read(&path).unwrap();
    bytes[pos as usize + 40] ^= 0x55; // inside the CRC-covered part
    fs::write(&path, &bytes).unwrap();

    let mut log = open(dir.path());
    assert!(!log.opened_clean());
    assert_eq!(log.log_end_offset(), victim as u64 * 2);
    assert!(log.recovered_bytes() > 0);
    assert_eq!(read_all(&log, 0, 1 << 20), stored[..victim]);
    let mut b = make_batch(999, 2, 50, 5, Compression::None);
    assert_eq!(log.append(&mut b, 0).unwrap().base_offset, victim as u64 * 2);
}

#[test]
fn torn_last_batch_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let stored = fill(dir.path(), 30);
    let (_, path) = tail_segment(dir.path());
    let len = fs::metadata(&path).unwrap().len();
    let last = stored.last().unwrap().len() as u64;
    OpenOptions::new().write(true).open(&path).unwrap().set_len(len - last / 2).unwrap();
    let log = open(dir.path());
    assert_eq!(log.log_end_offset(), 58);
    assert_eq!(read_all(&log, 0, 1 << 20), stored[..29]);
    assert_eq!(fs::metadata(&path).unwrap().len(), len - last);
}

#[test]
fn garbage_after_the_tail_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let stored = fill(dir.path(), 30);
    let (_, path) = tail_segment(dir.path());
    let len = fs::metadata(&path).unwrap().len();
    let mut seed = 12345u64;
    let garbage: Vec<u8> = (0..777)
        .map(|_| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as u8
        })
        .collect();
    OpenOptions::new().append(true).open(&path).unwrap().write_all(&garbage).unwrap();
    let log = open(dir.path());
    assert_eq!(log.log_end_offset(), 60);
    assert_eq!(read_all(&log, 0, 1 << 20), stored);
    assert_eq!(fs::metadata(&path).unwrap().len(), len);

    // After a clean close, garbage appended behind the marker's back is
    // noticed too (size mismatch) and removed.
    log.close().unwrap();
    OpenOptions::new().append(true).open(&path).unwrap().write_all(&garbage[..100]).unwrap();
    let log = open(dir.path());
    assert!(!log.opened_clean());
    assert_eq!(read_all(&log, 0, 1 << 20), stored);
}

#[test]
fn a_whole_tail_of_zeros_is_removed() {
    // Crash after the file grew but before data reached it (ext4 delalloc).
    let dir = tempfile::tempdir().unwrap();
    let stored = fill(dir.path(), 10);
    let (_, path) = tail_segment(dir.path());
    OpenOptions::new().append(true).open(&path).unwrap().write_all(&[0u8; 4096]).unwrap();
    let log = open(dir.path());
    assert_eq!(read_all(&log, 0, 1 << 20), stored);
}

fn all_index_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "index" || e == "timeindex"))
        .collect();
    v.sort();
    v
}

#[test]
fn deleted_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let stored = fill(dir.path(), 60);
    let log = open(dir.path());
    let lookup: Vec<_> = (0..70).map(|t| log.lookup_by_timestamp(1000 + t).unwrap()).collect();
    log.close().unwrap();
    let files = all_index_files(dir.path());
    assert!(files.len() >= 6);
    let reference: Vec<Vec<u8>> = files.iter().map(|p| fs::read(p).unwrap()).collect();
    for p in &files {
        fs::remove_file(p).unwrap();
    }
    let log = open(dir.path());
    assert_eq!(read_all(&log, 0, 1), stored);
    assert_eq!((0..70).map(|t| log.lookup_by_timestamp(1000 + t).unwrap()).collect::<Vec<_>>(), lookup);
    log.close().unwrap();
    // Rebuilt from the log, the sealed indexes are identical to the originals.
    let rebuilt: Vec<Vec<u8>> = files.iter().map(|p| fs::read(p).unwrap()).collect();
    assert_eq!(rebuilt.len(), reference.len());
    for (i, (a, b)) in reference.iter().zip(&rebuilt).enumerate().take(files.len() - 2) {
        assert_eq!(a, b, "{}", files[i].display());
    }
}

#[test]
fn corrupted_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let stored = fill(dir.path(), 60);
    let log = open(dir.path());
    let segs = log.segments();
    let expected_lookup: Vec<_> = (0..70).map(|t| log.lookup_by_timestamp(1000 + t).unwrap()).collect();
    log.close().unwrap();
    let d = dir.path();
    // Different kinds of damage on different segments: odd length, random
    // bytes with a plausible length, reversed entries, empty time index.
    fs::write(index_file(d, segs[0].base_offset), [1u8, 2, 3]).unwrap();
    let n = fs::metadata(index_file(d, segs[1].base_offset)).unwrap().len() as usize;
    fs::write(index_file(d, segs[1].base_offset), vec![0xffu8; n.max(8)]).unwrap();
    let mut t = fs::read(time_index_file(d, segs[2].base_offset)).unwrap();
    t.reverse();
    fs::write(time_index_file(d, segs[2].base_offset), t).unwrap();
    fs::write(time_index_file(d, segs[3].base_offset), []).unwrap();
    let last = segs.last().unwrap().base_offset;
    fs::write(index_file(d, last), vec![0x7fu8; 64]).unwrap();

    let log = open(d);
    assert_eq!(read_all(&log, 0, 1), stored);
    assert_eq!((0..70).map(|t| log.lookup_by_timestamp(1000 + t).unwrap()).collect::<Vec<_>>(), expected_lookup);
    // Every offset can be read from.
    for o in 0..log.log_end_offset() {
        let f = log.read(o, 1, None).unwrap();
        assert!(!f.records.is_empty());
    }
}

#[test]
fn damaged_checkpoints_and_stray_files_are_survived() {
    let dir = tempfile::tempdir().unwrap();
    let stored = fill(dir.path(), 20);
    let d = dir.path();
    fs::write(d.join("log-start-offset.checkpoint"), b"garbage").unwrap();
    fs::write(d.join("clean-shutdown.checkpoint"), b"garbage").unwrap();
    fs::write(d.join("log-start-offset.checkpoint.tmp"), b"half").unwrap();
    fs::write(d.join("00000000000000099999.index"), [0u8; 16]).unwrap();
    fs::write(d.join("notes.txt"), b"operator was here").unwrap();
    let log = open(d);
    assert_eq!(log.log_start_offset(), 0);
    assert_eq!(read_all(&log, 0, 1 << 20), stored);
    assert!(!d.join("log-start-offset.checkpoint.tmp").exists());
    assert!(!d.join("00000000000000099999.index").exists());
    assert!(d.join("notes.txt").exists());
}

#[test]
fn empty_and_missing_directories_open_as_empty_logs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("new-0");
    let log = open(&d);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    drop(log);
    // A zero-length segment file is a valid empty tail.
    let log = open(&d);
    assert_eq!(log.log_end_offset(), 0);
}
