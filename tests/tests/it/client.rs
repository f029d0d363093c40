//! The client library against a real cluster: producer, consumer, admin.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_client::admin::{AdminClient, NewTopic};
use strata_client::consumer::{Consumer, ConsumerConfig, OffsetReset, TopicPartition};
use strata_client::metadata::{MetadataClient, MetadataConfig};
use strata_client::producer::{Acks, Producer, ProducerConfig};
use strata_tests::Cluster;

/// 1,000,000 keyed records over 6 partitions: every record comes back, in
/// per-partition order, with the same key and value, on the partition
/// Kafka's partitioner picks for its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_million_keyed_records_round_trip_in_partition_order() -> anyhow::Result<()> {
    const RECORDS: u64 = 1_000_000;
    const KEYS: u64 = 5_000;
    let cluster = Cluster::start(3).await?;
    let metadata = MetadataClient::connect(&cluster.bootstrap(), MetadataConfig::default()).await?;
    AdminClient::new(metadata.clone()).create_topic(NewTopic::new("big", 6, 1)).await?;
    let producer = Producer::new(
        metadata.clone(),
        ProducerConfig { acks: Acks::Leader, enable_idempotence: false, ..ProducerConfig::default() },
    )?;
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(RECORDS as usize);
    for i in 0..RECORDS {
        let key = Bytes::from(format!("key-{}", i % KEYS));
        let value = Bytes::from(format!("value-{i:08}"));
        deliveries.push(producer.send("big", Some(key), Some(value), Vec::new(), None).await?);
    }
    producer.flush().await;
    let mut expected: BTreeMap<u32, Vec<(i64, u64)>> = BTreeMap::new();
    for (i, d) in deliveries.into_iter().enumerate() {
        let meta = d.await?;
        expected.entry(meta.partition).or_default().push((meta.offset, i as u64));
    }
    let produce_secs = started.elapsed().as_secs_f64();
    producer.close().await;
    for (p, records) in &expected {
        let offsets: Vec<i64> = records.iter().map(|r| r.0).collect();
        assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "partition {p}: offsets are dense and in send order");
        assert_eq!(offsets.first(), Some(&0));
    }
    let mut consumer = Consumer::new(
        metadata.clone(),
        ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() },
    );
    let tps: Vec<TopicPartition> = (0..6).map(|p| TopicPartition::new("big", p)).collect();
    consumer.assign(tps);
    let mut got: BTreeMap<u32, Vec<(i64, Bytes, Bytes)>> = BTreeMap::new();
    let mut total = 0u64;
    let consume_start = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(300);
    while total < RECORDS {
        anyhow::ensure!(Instant::now() < deadline, "consumed only {total} of {RECORDS}");
        for r in consumer.poll(Duration::from_secs(1)).await? {
            got.entry(r.partition).or_default().push((
                r.offset,
                r.key.unwrap_or_default(),
                r.value.unwrap_or_default(),
            ));
            total += 1;
        }
    }
    let consume_secs = consume_start.elapsed().as_secs_f64();
    eprintln!("FIGURE debug_build_produce_records_per_sec={:.0}", RECORDS as f64 / produce_secs);
    eprintln!("FIGURE debug_build_consume_records_per_sec={:.0}", RECORDS as f64 / consume_secs);
    assert_eq!(total, RECORDS, "nothing extra");
    for (p, records) in &expected {
        let back = &got[p];
        assert_eq!(back.len(), records.len(), "partition {p} count");
        for ((offset, i), (got_offset, key, value)) in records.iter().zip(back) {
            assert_eq!(offset, got_offset);
            assert_eq!(key, &Bytes::from(format!("key-{}", i % KEYS)));
            assert_eq!(value, &Bytes::from(format!("value-{i:08}")));
            let kafka_partition = strata_client::producer::murmur2_partition(key, 6);
            assert_eq!(kafka_partition, *p, "key {key:?} on Kafka's partition");
        }
    }
    Ok(())
}
