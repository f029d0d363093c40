//! Accumulator behaviour end to end through the public API: batching rules,
//! codecs, idempotence, back-pressure, delivery and the sticky partitioner.
//! Time is passed in explicitly; nothing here sleeps or asserts on timing.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use strata_proto::record_batch::layout::HEADER_SIZE;
use strata_proto::record_batch::{
    DecodedRecord, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE, RecordBatch, RecordBatchBuilder,
};

use super::*;
use crate::error::ClientError;

const HOUR: Duration = Duration::from_secs(3600);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn config() -> AccumulatorConfig {
    AccumulatorConfig {
        batch_size: 1024,
        linger: ms(10),
        compression: Compression::None,
        buffer_memory: 1 << 20,
        max_block: HOUR,
        max_request_size: 1 << 20,
        delivery_timeout: ms(1000),
    }
}

fn accumulator(config: AccumulatorConfig) -> RecordAccumulator {
    RecordAccumulator::new(config, Arc::new(DefaultPartitioner::with_seed(1)))
}

/// Record `i` with a `value_len`-byte value and timestamp 1000 + i.
fn record(i: usize, value_len: usize) -> Record {
    Record::new(1_000 + i as i64, Some(Bytes::from(format!("key-{i:04}"))), Some(Bytes::from(vec![b'v'; value_len])))
}

/// Like [`record`] but keyless and with one fixed timestamp, so that every
/// such record encodes to the same size in batches of under 64 records.
fn uniform(i: usize) -> Record {
    Record::new(5_000, None, Some(Bytes::from(format!("value-{i:04}"))))
}

fn uniform_size() -> usize {
    RecordBatchBuilder::new(Compression::None).record_size(&uniform(0))
}

fn decode(batch: &ReadyBatch) -> (RecordBatch, Vec<DecodedRecord>) {
    let rb = RecordBatch::new(batch.bytes().clone(), usize::MAX).expect("a valid batch");
    let records = rb.records().expect("readable records").collect::<Result<Vec<_>, _>>().expect("decodable records");
    (rb, records)
}

fn keys(records: &[DecodedRecord]) -> Vec<Bytes> {
    records.iter().filter_map(|r| r.key.clone()).collect()
}

/// Everything these tests wait for is due at once; a regression fails
/// instead of hanging.
fn resolved<F: Future>(f: F) -> F::Output {
    f.now_or_never().expect("resolves without waiting")
}

fn append(acc: &RecordAccumulator, partition: u32, rec: Record, now: Instant) -> DeliveryFuture {
    resolved(acc.append("t", Some(partition), 4, rec, now)).expect("append")
}

fn is_pending<F: Future + Unpin>(f: &mut F) -> bool {
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    Pin::new(f).poll(&mut cx).is_pending()
}

/// A broker log in memory: gives each batch the next offsets of its
/// partition.
#[derive(Default)]
struct FakeLog {
    next: Mutex<HashMap<(String, u32), i64>>,
    log_append_time: Option<i64>,
}

impl FakeLog {
    /// Appends each batch and answers its outcome, in the order given.
    fn produce(&self, batches: &[ReadyBatch]) -> Vec<Result<BatchAck, ProduceError>> {
        let mut next = self.next.lock().expect("fake log lock");
        batches
            .iter()
            .map(|b| {
                let offset = next.entry((b.topic().to_owned(), b.partition())).or_insert(0);
                let base_offset = *offset;
                *offset += i64::from(b.record_count());
                Ok(BatchAck { base_offset, log_append_time: self.log_append_time })
            })
            .collect()
    }
}

async fn send_all(log: &FakeLog, batches: Vec<ReadyBatch>) {
    let outcomes = log.produce(&batches);
    assert_eq!(outcomes.len(), batches.len());
    for (batch, outcome) in batches.into_iter().zip(outcomes) {
        batch.complete(outcome);
    }
}

#[tokio::test]
async fn linger_holds_a_batch_until_it_expires() {
    let acc = accumulator(config());
    let t0 = Instant::now();
    let _a = append(&acc, 0, record(0, 10), t0);
    assert!(acc.drain(t0).is_empty());
    // A later record joins the batch without restarting its linger.
    let _b = append(&acc, 0, record(1, 10), t0 + ms(5));
    assert_eq!(acc.next_deadline(t0 + ms(4), |_, _| true), Some(ms(6)));
    assert!(acc.drain(t0 + ms(9)).is_empty());

    let batches = acc.drain(t0 + ms(10));
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].record_count(), 2);
    assert_eq!(acc.next_deadline(t0 + ms(10), |_, _| true), None);
}

#[tokio::test]
async fn full_batches_are_ready_before_linger() {
    let per_batch = 4;
    let acc = accumulator(AccumulatorConfig { batch_size: HEADER_SIZE + per_batch * uniform_size() + 1, ..config() });
    let t0 = Instant::now();
    for i in 0..10 {
        drop(append(&acc, 0, uniform(i), t0));
    }
    let full = acc.drain(t0);
    assert_eq!(full.iter().map(ReadyBatch::record_count).collect::<Vec<_>>(), [4, 4]);
    let values: Vec<_> = full.iter().flat_map(|b| decode(b).1).filter_map(|r| r.value).collect();
    let expected: Vec<_> = (0..8).map(|i| uniform(i).value.expect("value")).collect();
    assert_eq!(values, expected, "batches keep append order");
    assert_eq!(acc.next_deadline(t0, |_, _| true), Some(ms(10)));

    let rest = acc.drain(t0 + ms(10));
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].record_count(), 2);
}

#[tokio::test]
async fn batches_never_exceed_batch_size_and_are_filled() {
    let batch_size = 700;
    let acc = accumulator(AccumulatorConfig { batch_size, ..config() });
    let t0 = Instant::now();
    // Deterministic spread of value sizes, 0..=150 bytes.
    let records: Vec<Record> = (0..300).map(|i| record(i, (i * 37) % 151)).collect();
    for r in &records {
        drop(append(&acc, 2, r.clone(), t0));
    }
    let batches = acc.drain(t0 + ms(10));
    let decoded: Vec<Vec<DecodedRecord>> = batches.iter().map(|b| decode(b).1).collect();
    for (batch, records) in batches.iter().zip(&decoded) {
        assert!(batch.bytes().len() <= batch_size, "batch of {} bytes", batch.bytes().len());
        assert_eq!(records.len(), batch.record_count() as usize);
    }
    let all: Vec<Bytes> = decoded.iter().flat_map(|r| keys(r)).collect();
    assert_eq!(all, records.iter().filter_map(|r| r.key.clone()).collect::<Vec<_>>());

    // Each batch closed only because the next record would not fit: rebuild
    // it with the codec's own builder and try the next record.
    for pair in decoded.windows(2) {
        let mut builder = RecordBatchBuilder::new(Compression::None);
        for r in &pair[0] {
            builder
                .push(&Record { timestamp: r.timestamp, key: r.key.clone(), value: r.value.clone(), headers: vec![] })
                .expect("push");
        }
        let next = &pair[1][0];
        let next =
            Record { timestamp: next.timestamp, key: next.key.clone(), value: next.value.clone(), headers: vec![] };
        assert!(builder.estimated_size() + builder.record_size(&next) > batch_size);
    }
}

#[tokio::test]
async fn oversized_record_travels_alone() {
    let acc = accumulator(AccumulatorConfig { batch_size: 200, ..config() });
    let t0 = Instant::now();
    drop(append(&acc, 0, record(0, 10), t0));
    drop(append(&acc, 0, record(1, 500), t0));
    drop(append(&acc, 0, record(2, 10), t0));

    // The small batch it displaced and its own batch go at once.
    let now = acc.drain(t0);
    assert_eq!(now.len(), 2);
    assert_eq!(keys(&decode(&now[0]).1), [Bytes::from("key-0000")]);
    assert_eq!(keys(&decode(&now[1]).1), [Bytes::from("key-0001")]);
    assert!(now[1].bytes().len() > 200);

    let later = acc.drain(t0 + ms(10));
    assert_eq!(later.len(), 1);
    assert_eq!(keys(&decode(&later[0]).1), [Bytes::from("key-0002")]);
}

#[tokio::test]
async fn record_larger_than_the_limits_is_refused() {
    let acc = accumulator(AccumulatorConfig { max_request_size: 300, ..config() });
    let err = resolved(acc.append("t", Some(0), 1, record(0, 400), Instant::now())).expect_err("too large");
    assert!(matches!(err, ProduceError::RecordTooLarge { max: 300, size } if size > 400), "{err:?}");

    let acc = accumulator(AccumulatorConfig { buffer_memory: 250, ..config() });
    let err = resolved(acc.append("t", Some(0), 1, record(0, 300), Instant::now())).expect_err("too large");
    assert!(matches!(err, ProduceError::RecordTooLarge { max: 250, .. }), "{err:?}");
    assert_eq!(acc.buffered_bytes(), 0);
}

#[tokio::test]
async fn partition_outside_the_topic_is_refused() {
    let acc = accumulator(config());
    let err = resolved(acc.append("t", Some(4), 4, record(0, 1), Instant::now())).expect_err("invalid");
    assert!(matches!(err, ProduceError::InvalidPartition { partition: 4, partition_count: 4, .. }));
    let err = resolved(acc.append("t", None, 0, record(0, 1), Instant::now())).expect_err("no partitions");
    assert!(matches!(err, ProduceError::InvalidPartition { partition_count: 0, .. }));
}

#[tokio::test]
async fn every_codec_round_trips_through_the_batch_bytes() {
    let compressible = Bytes::from("strata ".repeat(400));
    let inputs = vec![
        record(0, 10),
        Record::new(1_001, None, Some(Bytes::from_static(b"keyless"))),
        Record::new(1_002, Some(Bytes::from_static(b"tombstone")), None),
        Record::new(999, Some(Bytes::new()), Some(Bytes::new())),
        Record {
            timestamp: 1_500,
            key: Some(Bytes::from_static(b"with-headers")),
            value: Some(compressible.clone()),
            headers: vec![
                RecordHeader { key: "trace".into(), value: Some(Bytes::from_static(b"abc")) },
                RecordHeader { key: "empty".into(), value: None },
            ],
        },
        Record::new(1_003, Some(Bytes::from_static(b"last")), Some(compressible)),
    ];
    for codec in Compression::ALL {
        let acc = accumulator(AccumulatorConfig { compression: codec, batch_size: 64 * 1024, ..config() });
        let t0 = Instant::now();
        for r in &inputs {
            drop(append(&acc, 1, r.clone(), t0));
        }
        let batches = acc.drain(t0 + ms(10));
        assert_eq!(batches.len(), 1, "{codec:?}");
        let (rb, records) = decode(&batches[0]);
        assert_eq!(rb.header().compression().expect("codec"), codec);
        assert_eq!(rb.header().producer_id, NO_PRODUCER_ID);
        assert_eq!(rb.header().producer_epoch, NO_PRODUCER_EPOCH);
        assert_eq!(rb.header().base_sequence, NO_SEQUENCE);
        assert_eq!(records.len(), inputs.len(), "{codec:?}");
        for (i, (got, want)) in records.iter().zip(&inputs).enumerate() {
            assert_eq!(got.offset, i as i64, "{codec:?}");
            assert_eq!(got.timestamp, want.timestamp, "{codec:?}");
            assert_eq!(got.key, want.key, "{codec:?}");
            assert_eq!(got.value, want.value, "{codec:?}");
            assert_eq!(got.headers, want.headers, "{codec:?}");
        }
        if codec != Compression::None {
            assert!(batches[0].bytes().len() < batches[0].reserved_bytes(), "{codec:?} compressed nothing");
        }
    }
}

#[tokio::test]
async fn idempotent_batches_carry_per_partition_sequences() {
    let acc = accumulator(config());
    let t0 = Instant::now();
    let identity = ProducerIdentity { producer_id: 77, epoch: 3 };
    acc.set_producer_identity(Some(identity));

    // Appends `count` records to each listed partition, drains, and reports
    // each batch's (partition, producer id, epoch, base sequence).
    let round = |sizes: &[(u32, usize)]| {
        for &(partition, count) in sizes {
            for i in 0..count {
                drop(append(&acc, partition, record(i, 5), t0));
            }
        }
        let mut batches = acc.drain(t0 + ms(10));
        batches.sort_by_key(ReadyBatch::partition);
        batches
            .iter()
            .map(|b| {
                let h = *decode(b).0.header();
                assert_eq!(
                    (h.producer_id, h.producer_epoch, h.base_sequence),
                    (b.producer_id(), b.producer_epoch(), b.base_sequence())
                );
                (b.partition(), h.producer_id, h.producer_epoch, h.base_sequence)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(round(&[(0, 3), (1, 5)]), [(0, 77, 3, 0), (1, 77, 3, 0)]);
    assert_eq!(round(&[(0, 2)]), [(0, 77, 3, 3)]);
    assert_eq!(round(&[(0, 4), (1, 1)]), [(0, 77, 3, 5), (1, 77, 3, 5)]);

    // The same identity again changes nothing; a new epoch starts over.
    acc.set_producer_identity(Some(identity));
    assert_eq!(round(&[(0, 1)]), [(0, 77, 3, 9)]);
    acc.set_producer_identity(Some(ProducerIdentity { producer_id: 77, epoch: 4 }));
    assert_eq!(round(&[(0, 1), (1, 1)]), [(0, 77, 4, 0), (1, 77, 4, 0)]);
    acc.set_producer_identity(None);
    assert_eq!(round(&[(0, 1)]), [(0, NO_PRODUCER_ID, NO_PRODUCER_EPOCH, NO_SEQUENCE)]);
}

#[tokio::test]
async fn an_unsent_batch_is_restamped_with_the_current_identity() {
    let acc = accumulator(AccumulatorConfig { compression: Compression::Lz4, ..config() });
    let t0 = Instant::now();
    let old = ProducerIdentity { producer_id: 5, epoch: 1 };
    let new = ProducerIdentity { producer_id: 6, epoch: 0 };
    acc.set_producer_identity(Some(old));
    for i in 0..3 {
        drop(append(&acc, 0, record(i, 5), t0));
    }
    let mut batch = acc.drain(t0 + ms(10)).pop().expect("one batch");
    assert_eq!((batch.identity(), batch.base_sequence()), (Some(old), 0));
    let records = decode(&batch).1;

    // The identity changes before the batch was sent: it takes the new
    // identity and the partition's first sequence, records untouched.
    acc.set_producer_identity(Some(new));
    acc.restamp(&mut batch).expect("restamped");
    let (rb, restamped) = decode(&batch); // `decode` checks the CRC
    let h = rb.header();
    assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), (6, 0, 0));
    assert_eq!((batch.identity(), batch.base_sequence()), (Some(new), 0));
    assert_eq!(h.compression().expect("codec"), Compression::Lz4);
    assert_eq!(restamped, records);

    // The partition's next batch follows it in the sequence.
    drop(append(&acc, 0, record(3, 5), t0));
    let next = acc.drain(t0 + ms(20));
    assert_eq!(next.iter().map(|b| (b.identity(), b.base_sequence())).collect::<Vec<_>>(), [(Some(new), 3)]);

    // Sequences given back under a replaced identity stay spent; under the
    // current one they are handed out again.
    acc.rewind_sequence("t", 0, old, 0);
    drop(append(&acc, 0, record(4, 5), t0));
    assert_eq!(acc.drain(t0 + ms(30))[0].base_sequence(), 4);
    acc.rewind_sequence("t", 0, new, 4);
    drop(append(&acc, 0, record(5, 5), t0));
    assert_eq!(acc.drain(t0 + ms(40))[0].base_sequence(), 4);

    // Without an identity, a restamped batch carries none.
    acc.set_producer_identity(None);
    acc.restamp(&mut batch).expect("restamped");
    let h = *decode(&batch).0.header();
    assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), (NO_PRODUCER_ID, NO_PRODUCER_EPOCH, NO_SEQUENCE));
    assert_eq!(batch.identity(), None);
}

#[tokio::test]
async fn delivery_futures_resolve_with_per_record_offsets() {
    let acc = accumulator(AccumulatorConfig { batch_size: HEADER_SIZE + 3 * uniform_size(), ..config() });
    let log = FakeLog::default();
    let t0 = Instant::now();
    let mut p0 = Vec::new();
    for i in 0..5 {
        p0.push(append(&acc, 0, uniform(i), t0));
    }
    let mut p1 = Vec::new();
    for i in 0..3 {
        p1.push(append(&acc, 1, record(i, 8), t0));
    }
    send_all(&log, acc.drain(t0 + ms(10))).await;
    p0.push(append(&acc, 0, uniform(5), t0 + ms(20)));
    send_all(&log, acc.drain(t0 + ms(30))).await;

    for (i, d) in p0.into_iter().enumerate() {
        let m = resolved(d).expect("delivered");
        assert_eq!((&*m.topic, m.partition, m.offset, m.timestamp), ("t", 0, i as i64, 5_000));
    }
    for (i, d) in p1.into_iter().enumerate() {
        let m = resolved(d).expect("delivered");
        assert_eq!((m.partition, m.offset, m.timestamp), (1, i as i64, 1_000 + i as i64));
    }
    assert_eq!(acc.buffered_bytes(), 0);
    assert_eq!(acc.incomplete_batches(), 0);

    // Under log-append time every record reports the broker's timestamp.
    let log = FakeLog { log_append_time: Some(99), ..FakeLog::default() };
    let d = append(&acc, 3, record(0, 1), t0);
    send_all(&log, acc.drain(t0 + ms(10))).await;
    let m = resolved(d).expect("delivered");
    assert_eq!((m.partition, m.offset, m.timestamp), (3, 0, 99));

    // Without acknowledgements (acks=0) offsets are unknown for every record.
    let ds = vec![append(&acc, 0, uniform(9), t0), append(&acc, 0, uniform(10), t0)];
    for b in acc.drain(t0 + ms(10)) {
        b.complete(Ok(BatchAck { base_offset: -1, log_append_time: None }));
    }
    for d in ds {
        assert_eq!(resolved(d).expect("delivered").offset, -1);
    }
}

#[tokio::test]
async fn a_failed_batch_fails_every_record() {
    let acc = accumulator(config());
    let t0 = Instant::now();
    let ds = vec![append(&acc, 0, record(0, 5), t0), append(&acc, 0, record(1, 5), t0)];
    let error =
        ProduceError::Broker(ClientError::NotLeader { leader_id: None, leader_addr: None, message: "moved".into() });
    for b in acc.drain(t0 + ms(10)) {
        b.complete(Err(error.clone()));
    }
    for d in ds {
        let e = resolved(d).expect_err("failed");
        assert_eq!(e, error);
        assert!(e.is_retriable());
    }
    assert_eq!(acc.buffered_bytes(), 0);
}

#[tokio::test]
async fn a_dropped_batch_aborts_its_records_and_returns_memory() {
    let acc = accumulator(config());
    let t0 = Instant::now();
    let d = append(&acc, 0, record(0, 5), t0);
    assert!(acc.buffered_bytes() > 0);
    drop(acc.drain(t0 + ms(10)));
    assert_eq!(resolved(d), Err(ProduceError::Aborted));
    assert_eq!(acc.buffered_bytes(), 0);
    assert_eq!(acc.incomplete_batches(), 0);
}

#[tokio::test]
async fn back_pressure_bounds_memory_while_the_broker_stalls() {
    let bound = 4096;
    let acc = accumulator(AccumulatorConfig { buffer_memory: bound, linger: HOUR, ..config() });
    let t0 = Instant::now();
    let mut deliveries = Vec::new();
    // A stalled broker: the sender takes batches and never answers.
    let mut in_flight: Vec<ReadyBatch> = Vec::new();
    let mut blocked = None;
    for i in 0..1000 {
        let mut next = Box::pin(acc.append("t", Some((i % 3) as u32), 3, record(i, 100), t0));
        match futures::poll!(&mut next) {
            Poll::Ready(d) => deliveries.push(d.expect("append")),
            Poll::Pending => {
                blocked = Some(next);
                break;
            }
        }
        assert!(acc.buffered_bytes() <= bound);
        in_flight.extend(acc.drain(t0));
    }
    let mut blocked = blocked.expect("appends block once the memory is used up");
    assert!(deliveries.len() > 10);

    // The waiting append makes every lingering batch ready, since only
    // completed batches give memory back.
    in_flight.extend(acc.drain(t0));
    assert_eq!(acc.next_deadline(t0, |_, _| true), None, "nothing left behind");
    let held: usize = in_flight.iter().map(|b| b.bytes().len()).sum();
    assert_eq!(held, acc.buffered_bytes(), "accounting is exact for uncompressed batches");
    assert!(held <= bound);
    for _ in 0..3 {
        assert!(futures::poll!(&mut blocked).is_pending());
        assert!(acc.drain(t0).is_empty());
    }
    assert!(deliveries.iter_mut().all(is_pending), "nothing was acknowledged");

    // The broker answers one batch: its memory lets the waiting append in.
    in_flight.remove(0).complete(Ok(BatchAck { base_offset: 0, log_append_time: None }));
    let _late = resolved(blocked).expect("released by the completed batch");
    assert!(acc.buffered_bytes() <= bound);
    for b in in_flight {
        b.complete(Ok(BatchAck { base_offset: 0, log_append_time: None }));
    }
    assert!(deliveries.into_iter().all(|mut d| !is_pending(&mut d)));
}

#[tokio::test]
async fn waiting_appends_are_served_in_arrival_order() {
    let acc = accumulator(AccumulatorConfig { buffer_memory: 2000, linger: HOUR, ..config() });
    let t0 = Instant::now();
    let mut held = Vec::new();
    while acc.buffered_bytes() + 250 < 2000 {
        drop(append(&acc, 0, record(held.len(), 100), t0));
        held.extend(acc.drain(t0));
    }
    let mut big = Box::pin(acc.append("t", Some(1), 4, record(900, 1500), t0));
    assert!(futures::poll!(&mut big).is_pending());
    let mut small = Box::pin(acc.append("t", Some(2), 4, record(901, 10), t0));
    assert!(futures::poll!(&mut small).is_pending());
    held.extend(acc.drain(t0));

    // Enough memory for the small record but not the big one: the small one
    // still waits its turn instead of overtaking.
    held.remove(0).complete(Err(ProduceError::Aborted));
    assert!(futures::poll!(&mut small).is_pending());
    assert!(futures::poll!(&mut big).is_pending());

    for b in held {
        b.complete(Err(ProduceError::Aborted));
    }
    drop(resolved(big).expect("big append"));
    drop(resolved(small).expect("small append"));
}

#[tokio::test]
async fn a_cancelled_wait_leaks_nothing() {
    let acc = accumulator(AccumulatorConfig { buffer_memory: 600, linger: HOUR, ..config() });
    let t0 = Instant::now();
    drop(append(&acc, 0, record(0, 400), t0));
    let used = acc.buffered_bytes();
    let mut blocked = Box::pin(acc.append("t", Some(0), 4, record(1, 400), t0));
    assert!(futures::poll!(&mut blocked).is_pending());
    drop(blocked);
    assert_eq!(acc.buffered_bytes(), used);
    // No waiter any more, so the lingering batch is not forced out.
    assert!(acc.drain(t0).is_empty());
}

#[tokio::test]
async fn zero_max_block_fails_at_once_when_memory_is_exhausted() {
    let acc = accumulator(AccumulatorConfig { buffer_memory: 600, max_block: Duration::ZERO, ..config() });
    let t0 = Instant::now();
    drop(append(&acc, 0, record(0, 400), t0));
    let used = acc.buffered_bytes();
    let result = acc.append("t", Some(1), 4, record(1, 400), t0).now_or_never().expect("does not wait");
    assert!(matches!(result, Err(ProduceError::BufferExhausted { max_block: Duration::ZERO, .. })), "{result:?}");
    assert_eq!(acc.buffered_bytes(), used);
}

#[tokio::test]
async fn abort_fails_buffered_batches_and_waiting_appends() {
    let acc = accumulator(AccumulatorConfig { buffer_memory: 600, linger: HOUR, ..config() });
    let t0 = Instant::now();
    let buffered = append(&acc, 0, record(0, 400), t0);
    let mut blocked = Box::pin(acc.append("t", Some(1), 4, record(1, 400), t0));
    assert!(futures::poll!(&mut blocked).is_pending());

    let fenced = ProduceError::Broker(ClientError::Other { code: 42, message: "fenced".into() });
    acc.abort(fenced.clone());
    assert_eq!(resolved(blocked).expect_err("aborted"), ProduceError::Closed);
    assert_eq!(resolved(buffered).expect_err("aborted"), fenced);
    assert_eq!(acc.buffered_bytes(), 0);
    let err = resolved(acc.append("t", Some(0), 4, record(2, 1), t0)).expect_err("closed");
    assert_eq!(err, ProduceError::Closed);
}

#[tokio::test]
async fn close_refuses_appends_and_readies_everything() {
    let acc = accumulator(AccumulatorConfig { linger: HOUR, ..config() });
    let t0 = Instant::now();
    drop(append(&acc, 0, record(0, 5), t0));
    acc.close();
    assert_eq!(resolved(acc.append("t", Some(0), 4, record(1, 5), t0)).expect_err("closed"), ProduceError::Closed);
    assert_eq!(acc.drain(t0).len(), 1);
}

#[tokio::test]
async fn flush_readies_batches_and_waits_for_their_completion() {
    let acc = accumulator(AccumulatorConfig { linger: HOUR, ..config() });
    let t0 = Instant::now();
    drop(append(&acc, 0, record(0, 5), t0));
    drop(append(&acc, 1, record(1, 5), t0));
    assert!(acc.drain(t0).is_empty());

    let mut flush = Box::pin(acc.flush());
    assert!(futures::poll!(&mut flush).is_pending());
    let mut batches = acc.drain(t0);
    assert_eq!(batches.len(), 2);
    batches.pop().expect("batch").complete(Ok(BatchAck { base_offset: 0, log_append_time: None }));
    assert!(futures::poll!(&mut flush).is_pending());
    batches.pop().expect("batch").complete(Ok(BatchAck { base_offset: 0, log_append_time: None }));
    resolved(flush);

    // With the flush over, linger applies again.
    drop(append(&acc, 0, record(2, 5), t0));
    assert!(acc.drain(t0).is_empty());
}

#[tokio::test]
async fn batches_left_too_long_fail_with_a_timeout() {
    let acc = accumulator(AccumulatorConfig { delivery_timeout: ms(100), ..config() });
    let t0 = Instant::now();
    let d = append(&acc, 0, record(0, 5), t0);
    // A partition the sender cannot drain (no leader) still wakes it to expire.
    assert_eq!(acc.next_deadline(t0, |_, _| false), Some(ms(100)));
    assert_eq!(acc.next_deadline(t0, |_, _| true), Some(ms(10)));
    assert!(acc.drain_filtered(t0 + ms(50), |_, _| false).is_empty());
    assert_eq!(acc.expire(t0 + ms(99)), 0);
    assert_eq!(acc.expire(t0 + ms(100)), 1);
    assert_eq!(resolved(d), Err(ProduceError::Timeout(ms(100))));
    assert_eq!(acc.buffered_bytes(), 0);
}

#[tokio::test]
async fn sticky_partitioning_fills_one_batch_at_a_time() {
    let per_batch = 4;
    // Exactly full after the fourth record, or closed only when the fifth
    // does not fit: both must move the sticky partition.
    for slack in [0, uniform_size() / 2] {
        let batch_size = HEADER_SIZE + per_batch * uniform_size() + slack;
        let acc = accumulator(AccumulatorConfig { batch_size, ..config() });
        let t0 = Instant::now();
        let mut partitions = Vec::new();
        for i in 0..20 {
            let d = resolved(acc.append("t", None, 6, uniform(i), t0)).expect("append");
            partitions.push(d.partition());
        }
        let runs: Vec<&[u32]> = partitions.chunks(per_batch).collect();
        for run in &runs {
            assert!(run.iter().all(|p| *p == run[0]), "a batch's records share a partition: {partitions:?}");
        }
        for pair in runs.windows(2) {
            assert_ne!(pair[0][0], pair[1][0], "a full batch moves the sticky partition: {partitions:?}");
        }
        let mut batches = acc.drain(t0);
        batches.extend(acc.drain(t0 + ms(10)));
        assert_eq!(batches.len(), 5, "slack {slack}");
        assert!(batches.iter().all(|b| b.record_count() == per_batch as u32), "slack {slack}");
    }
}

#[tokio::test]
async fn sticky_partition_moves_when_linger_completes_its_batch() {
    let acc = accumulator(config());
    let t0 = Instant::now();
    let first = resolved(acc.append("t", None, 6, uniform(0), t0)).expect("append").partition();
    let again = resolved(acc.append("t", None, 6, uniform(1), t0)).expect("append").partition();
    assert_eq!(first, again);
    assert_eq!(acc.drain(t0 + ms(10)).len(), 1);
    let moved = resolved(acc.append("t", None, 6, uniform(2), t0 + ms(10))).expect("append").partition();
    assert_ne!(moved, first);
    // Keyed records keep Kafka's murmur2 partition throughout.
    let keyed = Record::new(0, Some(Bytes::from_static(b"foobar")), None);
    assert_eq!(resolved(acc.append("t", None, 16, keyed, t0)).expect("append").partition(), 14);
}

#[test]
fn append_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let acc = accumulator(config());
    let fut = acc.append("t", Some(0), 1, record(0, 1), Instant::now());
    assert_send(&fut);
    drop(fut);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_producers_and_sender_deliver_everything() {
    let acc = accumulator(AccumulatorConfig { buffer_memory: 2 * 1024, linger: Duration::ZERO, ..config() });
    let log = Arc::new(FakeLog::default());
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (acc, log, stop) = (acc.clone(), log.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let batches = acc.drain(Instant::now());
                if batches.is_empty() {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    acc.changed().await;
                    continue;
                }
                send_all(&log, batches).await;
            }
        })
    };
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let acc = acc.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                for i in 0..500 {
                    let partition = if p % 2 == 0 { None } else { Some((i % 3) as u32) };
                    out.push(acc.append("t", partition, 3, record(i, 60), Instant::now()).await.expect("append"));
                }
                out
            })
        })
        .collect();

    let all = async {
        let mut offsets: HashMap<u32, Vec<i64>> = HashMap::new();
        for producer in producers {
            for d in producer.await.expect("producer task") {
                let m = d.await.expect("delivered");
                offsets.entry(m.partition).or_default().push(m.offset);
            }
        }
        offsets
    };
    let mut offsets = tokio::time::timeout(Duration::from_secs(60), all).await.expect("no deadlock");
    stop.store(true, Ordering::Release);
    acc.close();
    sender.await.expect("sender task");

    let mut total = 0;
    for list in offsets.values_mut() {
        list.sort_unstable();
        assert_eq!(*list, (0..list.len() as i64).collect::<Vec<_>>(), "offsets are dense and unique");
        total += list.len();
    }
    assert_eq!(total, 2000);
    assert_eq!(acc.buffered_bytes(), 0);
    assert_eq!(acc.incomplete_batches(), 0);
}
