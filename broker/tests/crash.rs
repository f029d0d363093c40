//! Crash test with a real process: a child appends with fsync on every
//! batch and reports each flushed batch; the parent kills it with SIGKILL at
//! random moments, 50 times, and after each kill checks that every reported
//! batch is there, intact, and that appends continue.
//!
//! The child is this same test binary, re-executed with an environment
//! variable selecting child mode and `--exact <name> --nocapture`, which
//! works under both `cargo test` and cargo-nextest.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use bytes::Bytes;
use strata_broker::log::{FlushPolicy, Log, LogConfig};
use strata_proto::record_batch::{Compression, RecordBatch, RecordBatchBuilder, batches};

const CHILD_ENV: &str = "STRATA_CRASH_TEST_LOG_DIR";
const TEST_NAME: &str = "sigkill_never_loses_a_flushed_batch";
const ROUNDS: usize = 50;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 8 * 1024,
        segment_ms: None,
        retention_ms: None,
        index_interval_bytes: 512,
        flush: FlushPolicy::every_batch(),
        ..LogConfig::default()
    }
}

/// The batch that belongs at `base`: content is a function of the offset,
/// so the parent can check every record without shared state.
fn batch_for(base: u64) -> Vec<u8> {
    let count = 1 + (base % 4) as usize;
    let codec = Compression::ALL[(base % 5) as usize];
    let mut b = RecordBatchBuilder::new(codec);
    for i in 0..count as u64 {
        let offset = base + i;
        let value = format!("value-{offset}-{}", "z".repeat((offset % 200) as usize));
        b.append(offset as i64, Some(Bytes::from(format!("key-{offset}"))), Some(Bytes::from(value)))
            .expect("record fits");
    }
    b.build().expect("non-empty").to_vec()
}

fn child(dir: &Path) {
    let mut log = Log::open(dir, config()).expect("child open");
    let stdout = std::io::stdout();
    // Bounded, in case the parent dies without killing us.
    for _ in 0..100_000 {
        let base = log.log_end_offset();
        let mut batch = batch_for(base);
        let info = log.append(&mut batch, 0).expect("child append");
        assert_eq!(info.base_offset, base);
        let mut out = stdout.lock();
        if writeln!(out, "FLUSHED {} {}", info.base_offset, info.last_offset).and_then(|()| out.flush()).is_err() {
            return;
        }
    }
}

/// Checks one stored batch against the content `batch_for` gives it.
fn check_batch(batch: &RecordBatch) {
    let h = batch.header();
    let records: Vec<_> = batch.records().expect("decodable").map(|r| r.expect("record")).collect();
    assert_eq!(records.len(), 1 + (h.base_offset as usize % 4));
    for r in records {
        let expected = format!("value-{}-{}", r.offset, "z".repeat((r.offset % 200) as usize));
        assert_eq!(r.value.as_deref(), Some(expected.as_bytes()));
    }
}

/// xorshift64*: reproducible kill points without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn sigkill_never_loses_a_flushed_batch() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("crash-0");
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut flushed: Vec<(u64, u64)> = Vec::new();
    for round in 0..ROUNDS {
        let stderr_path = scratch.path().join(format!("child-{round}.stderr"));
        let mut child = Command::new(&exe)
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads", "1"])
            .env(CHILD_ENV, &dir)
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let kill_after = 1 + rng.next() % 25;
        let mut seen = 0;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Some(rest) = line.strip_prefix("FLUSHED ") else {
                continue;
            };
            let mut it = rest.split(' ').map(|s| s.parse::<u64>().unwrap());
            let (base, last) = (it.next().unwrap(), it.next().unwrap());
            if let Some(&(_, prev_last)) = flushed.last() {
                assert!(base > prev_last, "offsets go forward");
            }
            flushed.push((base, last));
            seen += 1;
            if seen >= kill_after {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(
            seen >= kill_after,
            "child stopped early in round {round}: {}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        );

        let log = Log::open(&dir, config()).expect("reopen after SIGKILL");
        let end = log.log_end_offset();
        assert!(end > flushed.last().unwrap().1, "round {round}: log end {end} lost flushed data");
        // Every reported batch is there, byte-exact in its header and intact.
        for &(base, last) in &flushed {
            let f = log.read(base, 1, None).unwrap();
            let batch = RecordBatch::new(f.records, usize::MAX).expect("valid batch");
            assert_eq!(batch.header().base_offset as u64, base);
            assert_eq!(batch.header().last_offset() as u64, last);
            check_batch(&batch);
        }
        // And the whole log is a gap-free run of valid batches.
        let mut offset = 0;
        while offset < end {
            let f = log.read(offset, 64 * 1024, None).unwrap();
            for b in batches(f.records, usize::MAX) {
                let b = b.expect("valid batch");
                assert_eq!(b.header().base_offset as u64, offset);
                check_batch(&b);
                offset = b.header().next_offset() as u64;
            }
        }
        drop(log);
    }
    assert!(flushed.len() >= ROUNDS);
}
