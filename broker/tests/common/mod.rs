//! Helpers shared by the storage integration tests.
#![allow(dead_code)]

use bytes::Bytes;
use strata_broker::log::{FetchData, Log, LogConfig};
use strata_proto::record_batch::{Compression, RecordBatchBuilder, batches};

/// A batch of `count` records whose values encode `tag` and the record index,
/// so content can be checked after any number of reopens.
pub fn make_batch(tag: u64, count: usize, value_len: usize, timestamp: i64, codec: Compression) -> Vec<u8> {
    let mut b = RecordBatchBuilder::new(codec);
    for i in 0..count {
        let mut value = format!("{tag}:{i}:").into_bytes();
        value.resize(value_len.max(value.len()), b'x');
        b.append(timestamp + i as i64, Some(Bytes::from(format!("k{tag}"))), Some(Bytes::from(value)))
            .expect("record fits");
    }
    b.build().expect("non-empty batch").to_vec()
}

pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        segment_ms: None,
        retention_ms: None,
        retention_bytes: None,
        index_interval_bytes: 256,
        max_index_bytes: 4096,
        ..LogConfig::default()
    }
}

/// Reads everything from `from` to the log end, batch by batch.
pub fn read_all(log: &Log, from: u64, max_bytes: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut offset = from;
    while offset < log.log_end_offset() {
        let FetchData { records, .. } = log.read(offset, max_bytes, None).expect("read");
        assert!(!records.is_empty(), "empty read at {offset} < {}", log.log_end_offset());
        for b in batches(records, usize::MAX) {
            let b = b.expect("stored batch is valid");
            offset = b.header().next_offset() as u64;
            out.push(b.as_bytes().to_vec());
        }
    }
    out
}

/// A batch from idempotent producer `producer_id` (epoch `producer_epoch`)
/// with `count` records numbered from `base_sequence`.
pub fn make_producer_batch(
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    count: usize,
    timestamp: i64,
) -> Vec<u8> {
    let mut b = RecordBatchBuilder::new(Compression::None).producer(producer_id, producer_epoch, base_sequence);
    for i in 0..count {
        let value = format!("{producer_id}:{producer_epoch}:{}", i64::from(base_sequence) + i as i64);
        b.append(timestamp, None, Some(Bytes::from(value))).expect("record fits");
    }
    b.build().expect("non-empty batch").to_vec()
}

/// Names of the files in `dir`, sorted.
pub fn file_names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
