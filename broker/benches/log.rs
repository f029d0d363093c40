//! Storage engine benchmark (not a test: nothing here asserts a speed).
//!
//! `cargo bench -p strata-broker --bench log`
//!
//! Environment:
//! - `STRATA_BENCH_LOG_GB` (default 1): bytes written per append case, and
//!   by default the size of the log used for read and lookup figures.
//! - `STRATA_BENCH_LOOKUP_GB`: size of the read/lookup log alone (e.g. 10
//!   for the 10 GiB lookup figure).
//! - `STRATA_BENCH_SKIP_APPEND`: set to skip the append cases.
//! - `STRATA_BENCH_DIR` (default: the system temp dir): where files go; use
//!   the disk you want to measure.
//!
//! Append cases write without per-batch fsync, like the default flush
//! policy. Each is compared with a plain sequential `write_all` loop of the
//! same bytes to a file in the same directory, measured in the same run, so
//! the ratio shows the engine's overhead rather than the disk's speed.
#![allow(clippy::print_stdout)] // a benchmark's output is its report

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_broker::log::{FileBudget, Log, LogConfig, ManualClock, TimestampPolicy};
use strata_proto::record_batch::{Compression, RecordBatchBuilder};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
const REPEATS: usize = 3;

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// An uncompressed batch of `record_size`-byte values, as close to
/// `batch_size` bytes as whole records allow.
fn batch(record_size: usize, batch_size: usize) -> Vec<u8> {
    let mut b = RecordBatchBuilder::new(Compression::None);
    let value = Bytes::from(vec![b'v'; record_size]);
    let mut i = 0i64;
    loop {
        let r = strata_proto::record_batch::Record::new(1_700_000_000_000 + i, None, Some(value.clone()));
        if !b.is_empty() && b.estimated_size() + b.record_size(&r) > batch_size {
            break;
        }
        b.push(&r).expect("record fits");
        i += 1;
    }
    b.build().expect("non-empty").to_vec()
}

fn config() -> LogConfig {
    LogConfig { segment_ms: None, retention_ms: None, max_batch_bytes: 2 * MIB, ..LogConfig::default() }
}

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

fn raw_write(dir: &Path, batch: &[u8], n: u64) -> Duration {
    let path = dir.join("raw.bin");
    let mut f = File::create(&path).expect("create raw file");
    let t = Instant::now();
    for _ in 0..n {
        f.write_all(batch).expect("raw write");
    }
    let d = t.elapsed();
    drop(f);
    std::fs::remove_file(path).expect("remove raw file");
    d
}

fn log_append(dir: &Path, batch: &[u8], n: u64) -> Duration {
    let path = dir.join("append-0");
    let mut log = Log::open(&path, config()).expect("open log");
    let mut buf = batch.to_vec();
    let t = Instant::now();
    for _ in 0..n {
        log.append(&mut buf, 0).expect("append");
    }
    let d = t.elapsed();
    log.delete().expect("delete log");
    d
}

/// xorshift64*, for lookup targets.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn main() {
    let gb = env_f64("STRATA_BENCH_LOG_GB", 1.0);
    let total = (gb * (1u64 << 30) as f64) as u64;
    // The lookup log can be sized apart from the append runs, so a 10 GiB
    // lookup figure does not cost 360 GiB of append runs.
    let lookup_gb = env_f64("STRATA_BENCH_LOOKUP_GB", gb);
    let lookup_total = (lookup_gb * (1u64 << 30) as f64) as u64;
    let skip_append = std::env::var_os("STRATA_BENCH_SKIP_APPEND").is_some();
    let base = std::env::var_os("STRATA_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let scratch = tempfile::tempdir_in(&base).expect("scratch dir");
    let dir = scratch.path();
    println!("strata storage benchmark: {:.2} GiB per append run (best of {REPEATS}), in {}", gb, base.display());
    println!();
    println!("| append case               | raw write MiB/s | log append MiB/s | ratio | batches/s |");
    println!("|---------------------------|----------------:|-----------------:|------:|----------:|");
    let records: &[usize] = if skip_append { &[] } else { &[100, KIB] };
    for &record in records {
        for batch_size in [16 * KIB, 256 * KIB, MIB] {
            let b = batch(record, batch_size);
            let n = (total / b.len() as u64).max(1);
            let bytes = n * b.len() as u64;
            // Best of three, alternating which goes first, so page-cache
            // and writeback state from the previous run favour neither.
            let (mut raw, mut log) = (Duration::MAX, Duration::MAX);
            for rep in 0..REPEATS {
                if rep % 2 == 0 {
                    raw = raw.min(raw_write(dir, &b, n));
                    log = log.min(log_append(dir, &b, n));
                } else {
                    log = log.min(log_append(dir, &b, n));
                    raw = raw.min(raw_write(dir, &b, n));
                }
            }
            println!(
                "| {:>4} B records, {:>4} KiB |{:>16.0} |{:>17.0} |{:>6.2} |{:>10.0} |",
                record,
                batch_size / KIB,
                mib_per_s(bytes, raw),
                mib_per_s(bytes, log),
                raw.as_secs_f64() / log.as_secs_f64(),
                n as f64 / log.as_secs_f64(),
            );
        }
    }

    // A log of `lookup_total` bytes with distinct, rising timestamps (log-append
    // time from a clock that ticks once per batch) for reads and lookups.
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let lookup_config = LogConfig { timestamp: TimestampPolicy::LogAppendTime, ..config() };
    let path = dir.join("lookup-0");
    let mut log = Log::open_with(&path, lookup_config, clock.clone(), FileBudget::new(1024)).expect("open log");
    let mut b = batch(KIB, 16 * KIB);
    let n = (lookup_total / b.len() as u64).max(1);
    let t0 = clock_now(&clock);
    for _ in 0..n {
        log.append(&mut b, 0).expect("append");
        clock.advance(1);
    }
    let end = log.log_end_offset();
    println!();
    println!(
        "read/lookup log: {:.2} GiB, {} segments, {} batches of {} B (1 KiB records), {} offsets",
        log.size_bytes() as f64 / (1u64 << 30) as f64,
        log.segments().len(),
        n,
        b.len(),
        end
    );

    let t = Instant::now();
    let mut offset = 0;
    let mut read = 0u64;
    while offset < end {
        let f = log.read(offset, MIB, None).expect("read");
        read += f.records.len() as u64;
        let last = strata_proto::record_batch::batches(f.records, usize::MAX)
            .last()
            .and_then(Result::ok)
            .map(|b| b.header().next_offset() as u64)
            .expect("batches");
        offset = last;
    }
    let read_time = t.elapsed();

    let lookups = 20_000;
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let t = Instant::now();
    for _ in 0..lookups {
        let o = rng.next() % end;
        std::hint::black_box(log.position_of(o).expect("position"));
    }
    let offset_lookup = t.elapsed() / lookups;
    let t = Instant::now();
    for _ in 0..lookups {
        let ts = t0 + (rng.next() % n) as i64;
        std::hint::black_box(log.lookup_by_timestamp(ts).expect("lookup"));
    }
    let ts_lookup = t.elapsed() / lookups;
    let t = Instant::now();
    for _ in 0..lookups {
        let o = rng.next() % end;
        std::hint::black_box(log.read(o, 1, None).expect("read"));
    }
    let fetch = t.elapsed() / lookups;
    println!();
    println!("| read / lookup                               | result          |");
    println!("|---------------------------------------------|-----------------|");
    println!("| sequential read, 1 MiB fetches (page cache) | {:>9.0} MiB/s |", mib_per_s(read, read_time));
    println!("| offset -> position lookup (random offsets)  | {:>12.2?} |", offset_lookup);
    println!("| timestamp -> offset lookup (random times)   | {:>12.2?} |", ts_lookup);
    println!("| fetch of one 16 KiB batch (random offsets)  | {:>12.2?} |", fetch);
    log.delete().expect("delete log");
}

fn clock_now(clock: &ManualClock) -> i64 {
    use strata_broker::log::Clock;
    clock.now_ms()
}
