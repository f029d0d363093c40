//! Decoding fetched bytes from handcrafted batches, then the consumer end to
//! end against the in-process fake cluster (real gRPC on loopback).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use strata_proto::record_batch::{Compression, RecordBatchBuilder, set_log_append_time};

use super::*;
use crate::admin::{AdminClient, NewTopic};
use crate::fake_cluster::FakeCluster;
use crate::metadata::MetadataConfig;
use crate::producer::{AccumulatorConfig, Producer, ProducerConfig, murmur2_partition};

/// A batch at `base` holding `values`, with timestamps 1000 + offset.
fn batch(base: i64, values: &[&str], codec: Compression) -> Bytes {
    let mut b = RecordBatchBuilder::new(codec).base_offset(base);
    for (i, v) in values.iter().enumerate() {
        let offset = base + i as i64;
        b.append(1000 + offset, Some(Bytes::from(format!("k{offset}"))), Some(Bytes::copy_from_slice(v.as_bytes())))
            .expect("append");
    }
    b.build().expect("build")
}

fn concat(parts: &[Bytes]) -> Bytes {
    let mut buf = BytesMut::new();
    for p in parts {
        buf.extend_from_slice(p);
    }
    buf.freeze()
}

fn topic() -> Arc<str> {
    Arc::from("t")
}

fn offsets(d: &Decoded) -> Vec<i64> {
    d.records.iter().map(|r| r.offset).collect()
}

#[test]
fn records_below_the_position_in_the_first_batch_are_skipped() {
    let bytes =
        concat(&[batch(10, &["a", "b", "c", "d"], Compression::None), batch(14, &["e", "f"], Compression::Lz4)]);
    let d = decode_records(&topic(), 3, bytes, 12);
    assert_eq!(offsets(&d), [12, 13, 14, 15]);
    assert_eq!(d.next_offset, 16);
    assert!(d.error.is_none());
    let first = &d.records[0];
    assert_eq!((&*first.topic, first.partition, first.timestamp), ("t", 3, 1012));
    assert_eq!(first.key.as_deref(), Some(&b"k12"[..]));
    assert_eq!(first.value.as_deref(), Some(&b"c"[..]));
}

#[test]
fn whole_batches_below_the_position_are_skipped() {
    let bytes = concat(&[batch(0, &["a", "b"], Compression::None), batch(2, &["c"], Compression::Gzip)]);
    let d = decode_records(&topic(), 0, bytes.clone(), 2);
    assert_eq!(offsets(&d), [2]);
    let d = decode_records(&topic(), 0, bytes, 3);
    assert!(d.records.is_empty());
    assert_eq!(d.next_offset, 3, "never below the position");
}

#[test]
fn control_batches_are_stepped_over() {
    let mut control = RecordBatchBuilder::new(Compression::None).base_offset(2).control(true);
    control.append(0, Some(Bytes::from_static(b"\0\0\0\0")), None).expect("append");
    let bytes = concat(&[
        batch(0, &["a", "b"], Compression::None),
        control.build().expect("build"),
        batch(3, &["d"], Compression::None),
    ]);
    let d = decode_records(&topic(), 0, bytes.clone(), 0);
    assert_eq!(offsets(&d), [0, 1, 3]);
    assert_eq!(d.next_offset, 4);
    // A fetch holding only the marker still moves the position past it.
    let only_marker = concat(&[{
        let mut c = RecordBatchBuilder::new(Compression::None).base_offset(2).control(true);
        c.append(0, None, None).expect("append");
        c.build().expect("build")
    }]);
    let d = decode_records(&topic(), 0, only_marker, 2);
    assert!(d.records.is_empty());
    assert_eq!(d.next_offset, 3);
}

#[test]
fn a_batch_cut_by_the_size_limit_is_left_for_the_next_fetch() {
    let whole = batch(0, &["a", "b"], Compression::None);
    let next = batch(2, &["c", "d"], Compression::None);
    let cut = concat(&[whole.clone(), next.slice(..next.len() - 5)]);
    let d = decode_records(&topic(), 0, cut, 0);
    assert_eq!(offsets(&d), [0, 1]);
    assert_eq!(d.next_offset, 2);
    assert!(d.error.is_none());

    // If not even one batch fits, fetching again cannot help.
    let d = decode_records(&topic(), 0, next.slice(..next.len() - 5), 2);
    assert!(d.records.is_empty());
    assert!(matches!(d.error, Some(ClientError::MessageTooLarge(_))), "{:?}", d.error);
}

#[test]
fn corruption_stops_decoding_after_the_good_records() {
    let good = batch(0, &["a"], Compression::None);
    let mut bad = BytesMut::from(&batch(1, &["b"], Compression::None)[..]);
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let d = decode_records(&topic(), 0, concat(&[good, bad.freeze()]), 0);
    assert_eq!(offsets(&d), [0]);
    assert_eq!(d.next_offset, 1);
    assert!(matches!(d.error, Some(ClientError::CorruptRecord(_))), "{:?}", d.error);
}

#[test]
fn log_append_time_replaces_the_producer_timestamp() {
    let mut b = BytesMut::from(&batch(0, &["a", "b"], Compression::None)[..]);
    set_log_append_time(&mut b, 77_000).expect("stamp");
    let d = decode_records(&topic(), 0, b.freeze(), 0);
    assert_eq!(d.records.iter().map(|r| r.timestamp).collect::<Vec<_>>(), [77_000, 77_000]);
}

#[test]
fn topic_partitions_convert_and_print() {
    let a: TopicPartition = ("orders", 3).into();
    let b: TopicPartition = ("orders".to_string(), 3).into();
    assert_eq!(a, b);
    assert_eq!(a.to_string(), "orders-3");
}

fn quick_metadata() -> MetadataConfig {
    MetadataConfig {
        reconnect_backoff: Duration::from_millis(10),
        reconnect_backoff_max: Duration::from_millis(100),
        ..MetadataConfig::default()
    }
}

fn quick_consumer() -> ConsumerConfig {
    ConsumerConfig {
        fetch_max_wait: Duration::from_millis(50),
        retry_backoff: Duration::from_millis(20),
        request_timeout: Duration::from_secs(5),
        ..ConsumerConfig::default()
    }
}

/// Polls until `want` records arrived or `limit` passed.
async fn poll_n(consumer: &mut Consumer, want: usize, limit: Duration) -> Vec<ConsumerRecord> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    while out.len() < want && Instant::now() < deadline {
        out.extend(consumer.poll(Duration::from_millis(100)).await.expect("poll"));
    }
    out
}

fn values(records: &[ConsumerRecord]) -> Vec<String> {
    records.iter().map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()).collect()
}

#[tokio::test]
async fn keyed_records_round_trip_through_producer_and_consumer() {
    let cluster = FakeCluster::start(3).await;
    let metadata = MetadataClient::connect(&cluster.bootstrap(), quick_metadata()).await.expect("connect");
    let admin = AdminClient::new(metadata.clone()).with_timeout(Duration::from_secs(5));
    admin.create_topic(NewTopic::new("events", 6, 1)).await.expect("created");

    let config = ProducerConfig {
        accumulator: AccumulatorConfig { linger: Duration::from_millis(2), ..AccumulatorConfig::default() },
        ..ProducerConfig::default()
    };
    let producer = Producer::new(metadata.clone(), config).expect("a valid config");
    let total = 20_000usize;
    let keys = 97;
    let mut deliveries = Vec::with_capacity(total);
    for i in 0..total {
        let key = Bytes::from(format!("key-{}", i % keys));
        let value = Bytes::from(format!("{i}"));
        deliveries.push(producer.send("events", Some(key), Some(value), Vec::new(), None).await.expect("accepted"));
    }
    producer.flush().await;
    for d in deliveries {
        d.await.expect("delivered");
    }
    producer.close().await;

    let mut consumer = Consumer::new(metadata.clone(), quick_consumer());
    consumer.assign((0..6).map(|p| ("events", p)));
    consumer.seek_to_beginning(consumer.assignment()).expect("assigned");
    let records = poll_n(&mut consumer, total, Duration::from_secs(30)).await;
    assert_eq!(records.len(), total, "every record comes back exactly once");

    // Per key, values come back in send order, from murmur2's partition.
    let mut last: HashMap<Bytes, usize> = HashMap::new();
    let mut next_offset: BTreeMap<u32, i64> = BTreeMap::new();
    for r in &records {
        let key = r.key.clone().expect("keyed");
        assert_eq!(r.partition, murmur2_partition(&key, 6));
        let i: usize = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).parse().expect("a number");
        if let Some(prev) = last.insert(key, i) {
            assert!(prev < i, "key order: {prev} then {i}");
        }
        let expected = next_offset.entry(r.partition).or_insert(0);
        assert_eq!(r.offset, *expected, "offsets are dense and in order");
        *expected += 1;
    }
    for p in 0..6u32 {
        let tp = TopicPartition::new("events", p);
        assert_eq!(consumer.position(tp.clone()).await.expect("position"), next_offset[&p]);
        assert_eq!(consumer.high_watermark(&tp), Some(next_offset[&p]));
    }
    let ends = consumer.end_offsets(&consumer.assignment()).await.expect("end offsets");
    assert_eq!(ends.values().sum::<i64>(), total as i64);
}

#[tokio::test]
async fn the_consumer_follows_a_leader_change() {
    let cluster = FakeCluster::start(2).await;
    cluster.create_topic("t", &[1]);
    for i in 0..10 {
        cluster.append("t", 0, batch(0, &[&format!("v{i}")], Compression::None));
    }
    let metadata = MetadataClient::connect(&cluster.bootstrap(), quick_metadata()).await.expect("connect");
    metadata.wait_for_topic("t", Duration::from_secs(5)).await.expect("topic");
    let mut consumer = Consumer::new(metadata.clone(), quick_consumer());
    consumer.assign([("t", 0)]);
    consumer.seek(("t", 0), 0).expect("assigned");
    let first = poll_n(&mut consumer, 10, Duration::from_secs(5)).await;
    assert_eq!(first.len(), 10);

    // Broker 2 takes over before the pushed metadata says so: broker 1
    // refuses, and the consumer's refresh finds the new leader.
    cluster.move_leader("t", 0, 2, false);
    for i in 10..15 {
        cluster.append("t", 0, batch(0, &[&format!("v{i}")], Compression::None));
    }
    let second = poll_n(&mut consumer, 5, Duration::from_secs(5)).await;
    assert_eq!(values(&second), ["v10", "v11", "v12", "v13", "v14"]);
    assert_eq!(second[0].offset, 10);

    // And back, announced this time: the push alone moves the consumer.
    cluster.move_leader("t", 0, 1, true);
    cluster.append("t", 0, batch(0, &["v15"], Compression::None));
    let third = poll_n(&mut consumer, 1, Duration::from_secs(5)).await;
    assert_eq!(values(&third), ["v15"]);
    assert!(consumer.poll(Duration::from_millis(100)).await.expect("poll").is_empty(), "no duplicates");
}

#[tokio::test]
async fn an_offset_out_of_range_resets_per_the_policy() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", &[1]);
    cluster.append("t", 0, batch(0, &["a", "b", "c"], Compression::None));
    let metadata = MetadataClient::connect(&cluster.bootstrap(), quick_metadata()).await.expect("connect");
    metadata.wait_for_topic("t", Duration::from_secs(5)).await.expect("topic");

    let mut earliest = Consumer::new(
        metadata.clone(),
        ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..quick_consumer() },
    );
    earliest.assign([("t", 0)]);
    earliest.seek(("t", 0), 1000).expect("assigned");
    assert_eq!(values(&poll_n(&mut earliest, 3, Duration::from_secs(5)).await), ["a", "b", "c"]);

    let mut strict =
        Consumer::new(metadata.clone(), ConsumerConfig { auto_offset_reset: OffsetReset::Error, ..quick_consumer() });
    strict.assign([("t", 0)]);
    let no_offset = strict.poll(Duration::from_secs(1)).await;
    assert!(matches!(no_offset, Err(ClientError::NoOffset { .. })), "{no_offset:?}");
    strict.seek(("t", 0), 1000).expect("assigned");
    let out_of_range = strict.poll(Duration::from_secs(5)).await;
    assert!(
        matches!(&out_of_range, Err(ClientError::OffsetOutOfRange { topic, partition: 0, offset: 1000, .. }) if topic == "t"),
        "{out_of_range:?}"
    );
    strict.seek(("t", 0), 2).expect("assigned");
    assert_eq!(values(&poll_n(&mut strict, 1, Duration::from_secs(5)).await), ["c"]);
}

#[tokio::test]
async fn latest_skips_old_records_and_timestamps_find_offsets() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", &[1]);
    cluster.append("t", 0, batch(0, &["a", "b", "c", "d"], Compression::None));
    let metadata = MetadataClient::connect(&cluster.bootstrap(), quick_metadata()).await.expect("connect");
    metadata.wait_for_topic("t", Duration::from_secs(5)).await.expect("topic");
    let mut consumer = Consumer::new(metadata.clone(), quick_consumer());
    consumer.assign([("t", 0)]);
    assert!(consumer.poll(Duration::from_millis(200)).await.expect("poll").is_empty(), "latest: nothing old");
    assert_eq!(consumer.position(("t", 0)).await.expect("position"), 4);
    cluster.append("t", 0, batch(0, &["e"], Compression::None));
    assert_eq!(values(&poll_n(&mut consumer, 1, Duration::from_secs(5)).await), ["e"]);

    // Timestamps are 1000 + offset.
    assert_eq!(consumer.seek_to_timestamp(("t", 0), 1002).await.expect("seek"), 2);
    assert_eq!(values(&poll_n(&mut consumer, 3, Duration::from_secs(5)).await), ["c", "d", "e"]);
    assert_eq!(consumer.seek_to_timestamp(("t", 0), 99_999).await.expect("seek"), 5, "none that recent: the end");
    let tps = [TopicPartition::new("t", 0)];
    assert_eq!(consumer.beginning_offsets(&tps).await.expect("offsets")[&tps[0]], 0);
    assert_eq!(consumer.offsets_for_time(&tps, 1001).await.expect("offsets")[&tps[0]], Some(1));
}

#[tokio::test]
async fn paused_partitions_are_not_returned_until_resumed() {
    let cluster = FakeCluster::start(2).await;
    cluster.create_topic("t", &[1, 2]);
    cluster.append("t", 0, batch(0, &["p0"], Compression::None));
    cluster.append("t", 1, batch(0, &["p1"], Compression::None));
    let metadata = MetadataClient::connect(&cluster.bootstrap(), quick_metadata()).await.expect("connect");
    metadata.wait_for_topic("t", Duration::from_secs(5)).await.expect("topic");
    let mut consumer = Consumer::new(metadata, quick_consumer());
    consumer.assign([("t", 0), ("t", 1)]);
    consumer.seek_to_beginning(consumer.assignment()).expect("assigned");
    consumer.pause([("t", 1)]).expect("assigned");
    assert_eq!(consumer.paused(), [TopicPartition::new("t", 1)]);
    assert_eq!(values(&poll_n(&mut consumer, 1, Duration::from_secs(5)).await), ["p0"]);
    assert!(consumer.poll(Duration::from_millis(200)).await.expect("poll").is_empty());
    consumer.resume([("t", 1)]).expect("assigned");
    assert_eq!(values(&poll_n(&mut consumer, 1, Duration::from_secs(5)).await), ["p1"]);
}

#[tokio::test]
async fn misuse_is_reported_not_ignored() {
    let cluster = FakeCluster::start(1).await;
    let metadata = MetadataClient::connect(&cluster.bootstrap(), quick_metadata()).await.expect("connect");
    let mut consumer = Consumer::new(metadata, quick_consumer());
    assert!(matches!(consumer.poll(Duration::ZERO).await, Err(ClientError::InvalidArgument(_))));
    consumer.assign([("t", 0)]);
    assert!(matches!(consumer.seek(("t", 1), 0), Err(ClientError::InvalidArgument(_))));
    assert!(matches!(consumer.seek(("t", 0), -5), Err(ClientError::InvalidArgument(_))));
    assert!(matches!(consumer.seek_to_end([("t", 0), ("u", 0)]), Err(ClientError::InvalidArgument(_))));
    // A topic that does not exist, under the latest policy, fails its lookup.
    let lookup = consumer.position(("t", 0)).await;
    assert!(matches!(lookup, Err(ClientError::UnknownTopicOrPartition(_))), "{lookup:?}");
}

#[tokio::test]
async fn a_deleted_topic_surfaces_as_an_error() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", &[1]);
    let metadata = MetadataClient::connect(&cluster.bootstrap(), quick_metadata()).await.expect("connect");
    metadata.wait_for_topic("t", Duration::from_secs(5)).await.expect("topic");
    let admin = AdminClient::new(metadata.clone()).with_timeout(Duration::from_secs(5));
    let mut consumer = Consumer::new(metadata, quick_consumer());
    consumer.assign([("t", 0)]);
    consumer.seek(("t", 0), 0).expect("assigned");
    assert!(consumer.poll(Duration::from_millis(100)).await.expect("poll").is_empty());
    admin.delete_topic("t").await.expect("deleted");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match consumer.poll(Duration::from_millis(100)).await {
            Err(ClientError::UnknownTopicOrPartition(_)) => break,
            other => assert!(Instant::now() < deadline, "still {other:?}"),
        }
    }
}
