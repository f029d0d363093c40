//! Property test: random sequences of append, read, roll, truncate,
//! retention, timestamp lookup and reopen (clean or not) agree with a plain
//! in-memory model of the log.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::make_batch;
use proptest::prelude::*;
use strata_broker::log::{Clock, FileBudget, Log, LogConfig, ManualClock};
use strata_proto::record_batch::{Compression, batches};

#[derive(Debug, Clone)]
enum Op {
    Append { records: usize, value_len: usize, ts: i64, codec: usize },
    Read { pick: prop::sample::Index, max_bytes: usize },
    Roll,
    Truncate { pick: prop::sample::Index },
    Retention { advance_ms: i64, max_bytes: Option<u64> },
    Lookup { ts: i64 },
    Reopen { clean: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1usize..5, 0usize..300, 0i64..10_000, 0usize..5)
            .prop_map(|(records, value_len, ts, codec)| Op::Append { records, value_len, ts, codec }),
        3 => (any::<prop::sample::Index>(), 1usize..2000).prop_map(|(pick, max_bytes)| Op::Read { pick, max_bytes }),
        1 => Just(Op::Roll),
        1 => any::<prop::sample::Index>().prop_map(|pick| Op::Truncate { pick }),
        1 => (0i64..4000, prop::option::of(500u64..6000))
            .prop_map(|(advance_ms, max_bytes)| Op::Retention { advance_ms, max_bytes }),
        2 => (-10i64..11_000).prop_map(|ts| Op::Lookup { ts }),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
    ]
}

struct ModelBatch {
    base: u64,
    bytes: Vec<u8>,
    timestamps: Vec<i64>,
}

impl ModelBatch {
    fn last(&self) -> u64 {
        self.base + self.timestamps.len() as u64 - 1
    }
}

#[derive(Default)]
struct Model {
    batches: Vec<ModelBatch>,
    start: u64,
    end: u64,
}

const RETENTION_MS: i64 = 8000;

fn config(max_bytes: Option<u64>) -> LogConfig {
    LogConfig {
        segment_bytes: 1500,
        segment_ms: None,
        retention_ms: Some(RETENTION_MS),
        retention_bytes: max_bytes,
        index_interval_bytes: 100,
        // 12 offset entries, 8 time entries: index-full rolls happen too.
        max_index_bytes: 96,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, clock: &Arc<ManualClock>) -> Log {
    Log::open_with(dir, config(None), clock.clone(), FileBudget::new(3)).expect("open")
}

fn check(log: &Log, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(log.log_start_offset(), model.start);
    prop_assert_eq!(log.log_end_offset(), model.end);
    let mut got = Vec::new();
    let mut offset = model.start;
    while offset < model.end {
        let f = log.read(offset, 700, None).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(!f.records.is_empty());
        for b in batches(f.records, usize::MAX) {
            let b = b.map_err(|e| TestCaseError::fail(e.to_string()))?;
            offset = b.header().next_offset() as u64;
            got.extend_from_slice(b.as_bytes());
        }
    }
    let want: Vec<u8> = model.batches.iter().flat_map(|b| b.bytes.iter().copied()).collect();
    prop_assert!(got == want, "log content differs from the model");
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let clock = Arc::new(ManualClock::new(0));
    let mut log = open(dir.path(), &clock);
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Append { records, value_len, ts, codec } => {
                let mut b = make_batch(model.end, records, value_len, ts, Compression::ALL[codec]);
                let info = log.append(&mut b, 1).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(info.base_offset, model.end);
                model.batches.push(ModelBatch {
                    base: model.end,
                    bytes: b,
                    timestamps: (0..records as i64).map(|i| ts + i).collect(),
                });
                model.end += records as u64;
            }
            Op::Read { pick, max_bytes } => {
                let offset = model.start + pick.index((model.end - model.start + 1) as usize) as u64;
                let f = log.read(offset, max_bytes, None).map_err(|e| TestCaseError::fail(e.to_string()))?;
                if offset == model.end {
                    prop_assert!(f.records.is_empty());
                } else {
                    let first = model
                        .batches
                        .iter()
                        .position(|b| b.last() >= offset)
                        .ok_or_else(|| TestCaseError::fail("model has no batch"))?;
                    let mut expected_len = 0;
                    let mut n = 0;
                    for (i, b) in batches(f.records.clone(), usize::MAX).enumerate() {
                        let b = b.map_err(|e| TestCaseError::fail(e.to_string()))?;
                        prop_assert_eq!(&b.as_bytes()[..], &model.batches[first + i].bytes[..]);
                        expected_len += b.as_bytes().len();
                        n += 1;
                    }
                    prop_assert!(n >= 1);
                    prop_assert_eq!(expected_len, f.records.len());
                    prop_assert!(n == 1 || f.records.len() <= max_bytes);
                }
            }
            Op::Roll => log.roll().map_err(|e| TestCaseError::fail(e.to_string()))?,
            Op::Truncate { pick } => {
                let offset = model.start + pick.index((model.end - model.start + 1) as usize) as u64;
                let new_end = log.truncate_to(offset).map_err(|e| TestCaseError::fail(e.to_string()))?;
                if let Some(i) = model.batches.iter().position(|b| b.last() >= offset) {
                    model.end = model.batches[i].base;
                    model.batches.truncate(i);
                }
                prop_assert_eq!(new_end, model.end);
            }
            Op::Retention { advance_ms, max_bytes } => {
                clock.advance(advance_ms);
                log.set_config(config(max_bytes));
                let out = log.apply_retention().map_err(|e| TestCaseError::fail(e.to_string()))?;
                log.set_config(config(None));
                let start = out.log_start_offset;
                prop_assert!(start >= model.start && start <= model.end);
                prop_assert!(start == model.end || model.batches.iter().any(|b| b.base == start));
                model.batches.retain(|b| b.base >= start);
                model.start = start;
                // What is left must not be deletable any more.
                let segs = log.segments();
                prop_assert!(segs.last().is_some_and(|s| s.active));
                if let Some(first) = segs.first().filter(|s| !s.active) {
                    let now = clock.now_ms();
                    let total: u64 = segs.iter().map(|s| s.size).sum();
                    let expired = first.max_timestamp.is_some_and(|t| now - t > RETENTION_MS);
                    let oversize = max_bytes.is_some_and(|m| total - first.size >= m);
                    prop_assert!(!expired && !oversize, "retention left a deletable segment");
                }
            }
            Op::Lookup { ts } => {
                let got = log.lookup_by_timestamp(ts).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let want = model
                    .batches
                    .iter()
                    .find_map(|b| b.timestamps.iter().position(|&t| t >= ts).map(|i| b.base + i as u64));
                prop_assert_eq!(got, want, "lookup {}", ts);
            }
            Op::Reopen { clean } => {
                if clean {
                    log.close().map_err(|e| TestCaseError::fail(e.to_string()))?;
                } else {
                    drop(log);
                }
                log = open(dir.path(), &clock);
                prop_assert_eq!(log.opened_clean(), clean);
                prop_assert_eq!(log.recovered_bytes(), 0);
            }
        }
        check(&log, &model)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn log_agrees_with_model(ops in prop::collection::vec(op(), 1..80)) {
        run(ops)?;
    }
}
