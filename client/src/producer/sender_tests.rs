//! The sender loop and `Producer` against an in-memory cluster behind
//! [`ProduceTransport`]: ordering, grouping, retries, backoff and timeouts.
//! Durations are short and bounds generous, so a loaded machine only makes
//! these slower, not flaky.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_proto::broker::{
    BrokerInfo, MetadataResponse, PartitionError, PartitionMetadata as WirePartition, ProducePartitionResponse,
    ProduceRequest, ProduceResponse, ProduceTopicResponse, TopicMetadata as WireTopic,
};
use strata_proto::common::ErrorCode;
use strata_proto::record_batch::{DecodedRecord, batches};

use super::sender::{Verdict, build_request, classify, group_by_leader, judge};
use super::*;
use crate::error::ClientError;
use crate::metadata::{ClusterMetadata, MetadataClient, MetadataConfig};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn addr(broker: i32) -> String {
    format!("b{broker}:9092")
}

/// Metadata at `revision` in which partition `i` of each topic is led by
/// `leaders[i]` (`-1` for none). Brokers 1..=3 are live.
fn metadata(revision: u64, topics: &[(&str, &[i32])]) -> ClusterMetadata {
    ClusterMetadata::from_response(MetadataResponse {
        brokers: (1..=3).map(|id| BrokerInfo { id, addr: addr(id), rack: String::new() }).collect(),
        controller_id: 1,
        topics: topics
            .iter()
            .map(|(name, leaders)| WireTopic {
                name: name.to_string(),
                partitions: leaders
                    .iter()
                    .enumerate()
                    .map(|(i, &leader)| WirePartition { partition: i as u32, leader, ..Default::default() })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        revision,
    })
}

type Tp = (String, u32);

/// One batch as a broker received it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Received {
    partition: u32,
    producer_id: i64,
    epoch: i16,
    base_sequence: i32,
    records: i32,
}

/// A cluster in memory: who really leads what, the logs, injected faults,
/// and a record of every request and of concurrency.
#[derive(Default)]
struct MemCluster {
    leaders: Mutex<HashMap<(String, u32), String>>,
    logs: Mutex<HashMap<(String, u32), Vec<DecodedRecord>>>,
    faults: Mutex<HashMap<(String, u32), VecDeque<ErrorCode>>>,
    down: Mutex<HashSet<String>>,
    /// (broker, partitions) of each request, in arrival order.
    requests: Mutex<Vec<(String, Vec<Tp>)>>,
    /// Requests in flight per partition and per broker.
    in_flight: Mutex<(HashMap<Tp, usize>, HashMap<String, usize>)>,
    max_per_partition: Mutex<usize>,
    max_per_broker: Mutex<usize>,
    most_batches_per_partition: Mutex<usize>,
    latency_ms: AtomicU64,
    /// Every batch received, in arrival order, appended or not.
    received: Mutex<Vec<Received>>,
    last_producer_id: AtomicI64,
    init_calls: AtomicUsize,
    /// `InitProducerId` calls still to fail.
    init_failures: AtomicUsize,
}

impl MemCluster {
    fn new(leaders: &[(&str, &[i32])]) -> Arc<MemCluster> {
        let cluster = MemCluster::default();
        for (topic, ls) in leaders {
            for (p, &l) in ls.iter().enumerate() {
                cluster.leaders.lock().expect("lock").insert((topic.to_string(), p as u32), addr(l));
            }
        }
        Arc::new(cluster)
    }

    fn fail(&self, topic: &str, partition: u32, code: ErrorCode, times: usize) {
        let mut faults = self.faults.lock().expect("lock");
        faults.entry((topic.to_string(), partition)).or_default().extend(std::iter::repeat_n(code, times));
    }

    fn log(&self, topic: &str, partition: u32) -> Vec<DecodedRecord> {
        self.logs.lock().expect("lock").get(&(topic.to_string(), partition)).cloned().unwrap_or_default()
    }

    fn request_count(&self) -> usize {
        self.requests.lock().expect("lock").len()
    }

    /// (producer id, epoch, base sequence, records) of every batch the
    /// partition received, in arrival order.
    fn received(&self, partition: u32) -> Vec<(i64, i16, i32, i32)> {
        let received = self.received.lock().expect("lock");
        received
            .iter()
            .filter(|r| r.partition == partition)
            .map(|r| (r.producer_id, r.epoch, r.base_sequence, r.records))
            .collect()
    }

    fn enter(&self, addr: &str, tps: &[(String, u32)]) {
        let mut guard = self.in_flight.lock().expect("lock");
        let (per_partition, per_broker) = &mut *guard;
        for tp in tps {
            let n = per_partition.entry(tp.clone()).or_default();
            *n += 1;
            let mut max = self.max_per_partition.lock().expect("lock");
            *max = (*max).max(*n);
        }
        let n = per_broker.entry(addr.to_string()).or_default();
        *n += 1;
        let mut max = self.max_per_broker.lock().expect("lock");
        *max = (*max).max(*n);
    }

    fn leave(&self, addr: &str, tps: &[(String, u32)]) {
        let mut guard = self.in_flight.lock().expect("lock");
        let (per_partition, per_broker) = &mut *guard;
        for tp in tps {
            *per_partition.entry(tp.clone()).or_default() -= 1;
        }
        *per_broker.entry(addr.to_string()).or_default() -= 1;
    }

    fn append(&self, addr: &str, request: ProduceRequest) -> ProduceResponse {
        let mut response = ProduceResponse::default();
        for topic in request.topics {
            let mut answers = ProduceTopicResponse { topic: topic.topic.clone(), partitions: Vec::new() };
            for part in topic.partitions {
                for batch in batches(part.records.clone(), usize::MAX) {
                    let h = *batch.expect("the producer sends valid batches").header();
                    self.received.lock().expect("lock").push(Received {
                        partition: part.partition,
                        producer_id: h.producer_id,
                        epoch: h.producer_epoch,
                        base_sequence: h.base_sequence,
                        records: h.records_count,
                    });
                }
                let key = (topic.topic.clone(), part.partition);
                let leader = self.leaders.lock().expect("lock").get(&key).cloned();
                let fault = self.faults.lock().expect("lock").get_mut(&key).and_then(VecDeque::pop_front);
                let error = |code: ErrorCode| {
                    Some(PartitionError {
                        code: code as i32,
                        message: "fake".into(),
                        leader_id: -1,
                        ..Default::default()
                    })
                };
                let mut answer = ProducePartitionResponse {
                    partition: part.partition,
                    base_offset: -1,
                    log_append_time: -1,
                    ..Default::default()
                };
                if leader.as_deref() != Some(addr) {
                    answer.error = error(ErrorCode::NotLeaderForPartition);
                } else if let Some(code) = fault {
                    answer.error = error(code);
                } else {
                    let mut logs = self.logs.lock().expect("lock");
                    let log = logs.entry(key).or_default();
                    let base = log.len() as i64;
                    answer.base_offset = base;
                    let mut count = 0;
                    for batch in batches(part.records, usize::MAX) {
                        count += 1;
                        let batch = batch.expect("the producer sends valid batches");
                        for record in batch.records().expect("records") {
                            let mut record = record.expect("a record");
                            record.offset = log.len() as i64;
                            log.push(record);
                        }
                    }
                    let mut most = self.most_batches_per_partition.lock().expect("lock");
                    *most = (*most).max(count);
                }
                answers.partitions.push(answer);
            }
            response.topics.push(answers);
        }
        response
    }
}

impl ProduceTransport for MemCluster {
    async fn produce(
        &self,
        addr: &str,
        request: ProduceRequest,
        _timeout: Duration,
    ) -> Result<ProduceResponse, ClientError> {
        let tps: Vec<(String, u32)> =
            request.topics.iter().flat_map(|t| t.partitions.iter().map(|p| (t.topic.clone(), p.partition))).collect();
        self.requests.lock().expect("lock").push((addr.to_string(), tps.clone()));
        if self.down.lock().expect("lock").contains(addr) {
            return Err(ClientError::Unreachable(format!("broker at {addr} is unreachable: refused")));
        }
        self.enter(addr, &tps);
        let latency = self.latency_ms.load(Ordering::Relaxed);
        if latency > 0 {
            tokio::time::sleep(ms(latency)).await;
        }
        let response = self.append(addr, request);
        self.leave(addr, &tps);
        Ok(response)
    }

    async fn init_producer_id(&self, _timeout: Duration) -> Result<ProducerIdentity, ClientError> {
        self.init_calls.fetch_add(1, Ordering::Relaxed);
        let fail = self.init_failures.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok();
        if fail {
            return Err(ClientError::Unreachable("no broker answers".into()));
        }
        let producer_id = self.last_producer_id.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(ProducerIdentity { producer_id, epoch: 0 })
    }
}

fn config() -> ProducerConfig {
    ProducerConfig {
        accumulator: AccumulatorConfig {
            batch_size: 512,
            linger: ms(1),
            delivery_timeout: Duration::from_secs(30),
            max_block: ms(500),
            ..AccumulatorConfig::default()
        },
        retry_backoff: ms(100),
        retry_backoff_max: ms(1000),
        max_in_flight_per_broker: 2,
        ..ProducerConfig::default()
    }
}

fn producer(meta: ClusterMetadata, cluster: &Arc<MemCluster>, config: ProducerConfig) -> (Producer, MetadataClient) {
    let client = MetadataClient::detached(&["b1:9092"], MetadataConfig::default()).expect("an address");
    client.publish(meta);
    let producer =
        Producer::with_transport(client.clone(), config, Arc::new(DefaultPartitioner::with_seed(7)), cluster.clone())
            .expect("a valid config");
    (producer, client)
}

async fn send(producer: &Producer, topic: &str, key: &str, value: &str) -> DeliveryFuture {
    producer
        .send(topic, Some(Bytes::from(key.to_string())), Some(Bytes::from(value.to_string())), Vec::new(), Some(1))
        .await
        .expect("accepted")
}

#[tokio::test]
async fn delivers_every_record_in_order_to_each_partition_leader() {
    let leaders: &[i32] = &[1, 2, 1, 3];
    let cluster = MemCluster::new(&[("t", leaders)]);
    cluster.latency_ms.store(3, Ordering::Relaxed);
    let (producer, _meta) = producer(metadata(1, &[("t", leaders)]), &cluster, config());
    let mut deliveries = Vec::new();
    for i in 0..3000 {
        let key = format!("key-{}", i % 50);
        deliveries.push((key.clone(), i, send(&producer, "t", &key, &format!("{i}")).await));
    }
    let mut by_partition: BTreeMap<u32, Vec<(i64, usize)>> = BTreeMap::new();
    for (key, i, delivery) in deliveries {
        let meta = delivery.await.expect("delivered");
        assert_eq!(meta.partition, murmur2_partition(key.as_bytes(), 4), "keyed records follow murmur2");
        by_partition.entry(meta.partition).or_default().push((meta.offset, i));
    }
    for (partition, sent) in by_partition {
        let log = cluster.log("t", partition);
        assert_eq!(log.len(), sent.len(), "partition {partition} holds each record once");
        for (offset, i) in sent {
            let record = &log[offset as usize];
            assert_eq!(record.value.as_deref(), Some(format!("{i}").as_bytes()), "offset {offset} of {partition}");
        }
        // Send order is log order within the partition.
        let values: Vec<usize> = log
            .iter()
            .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).parse().unwrap_or(0))
            .collect();
        assert!(values.windows(2).all(|w| w[0] < w[1]), "partition {partition} is in send order");
    }
    assert_eq!(*cluster.max_per_partition.lock().expect("lock"), 1, "one request per partition at a time");
    assert!(*cluster.max_per_broker.lock().expect("lock") <= 2, "max in flight per broker holds");
    assert!(
        *cluster.most_batches_per_partition.lock().expect("lock") > 1,
        "batches that piled up behind an in-flight request travel together"
    );
    producer.close().await;
}

#[tokio::test]
async fn a_leader_change_is_followed_as_soon_as_the_metadata_shows_it() {
    let cluster = MemCluster::new(&[("t", &[2])]);
    let config = ProducerConfig {
        retry_backoff: Duration::from_secs(20),
        retry_backoff_max: Duration::from_secs(20),
        ..config()
    };
    // The client still believes broker 1 leads.
    let (producer, meta) = producer(metadata(1, &[("t", &[1])]), &cluster, config);
    let start = tokio::time::Instant::now();
    let delivery = send(&producer, "t", "k", "v").await;
    tokio::time::sleep(ms(50)).await;
    assert_eq!(cluster.request_count(), 1, "sent once to the old leader, now waiting");
    assert!(meta.publish(metadata(2, &[("t", &[2])])));
    let delivered = delivery.await.expect("delivered after the leader change");
    assert_eq!(delivered.offset, 0);
    assert!(start.elapsed() < Duration::from_secs(1), "did not wait out the 20 s backoff: {:?}", start.elapsed());
    let requests = cluster.requests.lock().expect("lock").clone();
    assert_eq!(requests.iter().map(|(a, _)| a.as_str()).collect::<Vec<_>>(), ["b1:9092", "b2:9092"]);
}

#[tokio::test]
async fn a_failure_seen_after_the_leader_change_is_retried_at_once() {
    let cluster = MemCluster::new(&[("t", &[2])]);
    // The old leader's answer comes back only after the metadata has named
    // the new one (a leader that died mid-request).
    cluster.latency_ms.store(300, Ordering::Relaxed);
    let config = ProducerConfig {
        retry_backoff: Duration::from_secs(20),
        retry_backoff_max: Duration::from_secs(20),
        ..config()
    };
    let (producer, meta) = producer(metadata(1, &[("t", &[1])]), &cluster, config);
    let start = tokio::time::Instant::now();
    let delivery = send(&producer, "t", "k", "v").await;
    while cluster.request_count() == 0 {
        tokio::time::sleep(ms(5)).await;
    }
    assert!(meta.publish(metadata(2, &[("t", &[2])])));
    let delivered = delivery.await.expect("delivered by the new leader");
    assert_eq!(delivered.offset, 0);
    assert!(start.elapsed() < Duration::from_secs(5), "did not wait out the 20 s backoff: {:?}", start.elapsed());
}

#[tokio::test]
async fn without_new_metadata_a_retry_waits_for_its_backoff() {
    let cluster = MemCluster::new(&[("t", &[1])]);
    cluster.fail("t", 0, ErrorCode::NotEnoughReplicas, 2);
    let (producer, _meta) = producer(metadata(1, &[("t", &[1])]), &cluster, config());
    let start = tokio::time::Instant::now();
    let delivered = send(&producer, "t", "k", "v").await.await.expect("delivered after two retries");
    assert_eq!(delivered.offset, 0);
    assert_eq!(cluster.request_count(), 3);
    // Backoffs of ~100 ms then ~200 ms, each with ±20% jitter.
    let waited = start.elapsed();
    assert!(waited >= ms(240) && waited <= ms(3000), "waited {waited:?}");
}

#[tokio::test]
async fn final_errors_fail_the_records_without_retrying() {
    let cluster = MemCluster::new(&[("t", &[1])]);
    cluster.fail("t", 0, ErrorCode::MessageTooLarge, 1);
    let (producer, _meta) = producer(metadata(1, &[("t", &[1])]), &cluster, config());
    let a = send(&producer, "t", "k", "a").await;
    let b = send(&producer, "t", "k", "b").await;
    for outcome in [a.await, b.await] {
        assert!(matches!(outcome, Err(ProduceError::Broker(ClientError::MessageTooLarge(_)))), "{outcome:?}");
    }
    assert_eq!(cluster.request_count(), 1);
    // The partition is usable again afterwards.
    assert_eq!(send(&producer, "t", "k", "c").await.await.map(|m| m.offset), Ok(0));
}

#[tokio::test]
async fn retries_stop_at_the_configured_count() {
    let cluster = MemCluster::new(&[("t", &[1])]);
    cluster.fail("t", 0, ErrorCode::RequestTimedOut, 10);
    let (producer, _meta) = producer(metadata(1, &[("t", &[1])]), &cluster, ProducerConfig { retries: 2, ..config() });
    let outcome = send(&producer, "t", "k", "v").await.await;
    assert!(matches!(outcome, Err(ProduceError::Broker(ClientError::RequestTimedOut(_)))), "{outcome:?}");
    assert_eq!(cluster.request_count(), 3, "the first send and two retries");
}

#[tokio::test]
async fn records_for_a_leaderless_partition_time_out() {
    let cluster = MemCluster::new(&[]);
    let mut config = config();
    config.accumulator.delivery_timeout = ms(300);
    let (producer, _meta) = producer(metadata(1, &[("t", &[-1])]), &cluster, config);
    let start = tokio::time::Instant::now();
    let outcome = send(&producer, "t", "k", "v").await.await;
    assert_eq!(outcome, Err(ProduceError::Timeout(ms(300))));
    assert!(start.elapsed() >= ms(300));
    assert_eq!(cluster.request_count(), 0, "nothing is sent without a leader");
}

#[tokio::test]
async fn a_partition_the_metadata_still_lists_is_retried_while_its_leader_catches_up() {
    let cluster = MemCluster::new(&[("t", &[1])]);
    cluster.fail("t", 0, ErrorCode::UnknownTopicOrPartition, 2);
    let (producer, meta) = producer(metadata(1, &[("t", &[1])]), &cluster, config());
    assert_eq!(send(&producer, "t", "k", "v").await.await.map(|m| m.offset), Ok(0));

    // Once the metadata no longer lists the topic, the error is final.
    cluster.fail("t", 0, ErrorCode::UnknownTopicOrPartition, 1);
    let pending = send(&producer, "t", "k", "w").await;
    while cluster.request_count() < 4 {
        tokio::time::sleep(ms(2)).await;
    }
    meta.publish(metadata(2, &[]));
    let outcome = pending.await;
    assert!(matches!(outcome, Err(ProduceError::Broker(ClientError::UnknownTopicOrPartition(_)))), "{outcome:?}");
}

#[tokio::test]
async fn transport_failures_are_retried() {
    let cluster = MemCluster::new(&[("t", &[1])]);
    cluster.down.lock().expect("lock").insert(addr(1));
    let (producer, _meta) = producer(metadata(1, &[("t", &[1])]), &cluster, config());
    let delivery = send(&producer, "t", "k", "v").await;
    tokio::time::sleep(ms(500)).await;
    assert!(cluster.request_count() >= 2, "kept trying the unreachable broker");
    cluster.down.lock().expect("lock").clear();
    assert_eq!(delivery.await.map(|m| m.offset), Ok(0));
}

#[tokio::test]
async fn close_sends_everything_buffered_first() {
    let cluster = MemCluster::new(&[("t", &[1, 2])]);
    let mut config = config();
    config.accumulator.linger = Duration::from_secs(3600);
    config.accumulator.batch_size = 1 << 20;
    let (producer, _meta) = producer(metadata(1, &[("t", &[1, 2])]), &cluster, config);
    let mut deliveries = Vec::new();
    for i in 0..10 {
        deliveries.push(send(&producer, "t", &format!("k{i}"), "v").await);
    }
    assert_eq!(cluster.request_count(), 0, "linger holds the batches");
    producer.close().await;
    for d in deliveries {
        d.await.expect("delivered before close returned");
    }
    assert_eq!(producer.incomplete_batches(), 0);
    let refused = producer.send("t", None, None, Vec::new(), None).await;
    assert!(matches!(refused, Err(ProduceError::Closed)), "{refused:?}");
}

#[tokio::test]
async fn flush_sends_without_waiting_for_linger() {
    let cluster = MemCluster::new(&[("t", &[1])]);
    let mut config = config();
    config.accumulator.linger = Duration::from_secs(3600);
    let (producer, _meta) = producer(metadata(1, &[("t", &[1])]), &cluster, config);
    let delivery = send(&producer, "t", "k", "v").await;
    let start = tokio::time::Instant::now();
    producer.flush().await;
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(delivery.await.map(|m| m.offset), Ok(0));
}

#[tokio::test]
async fn send_waits_for_a_topic_to_appear_then_gives_up() {
    let cluster = MemCluster::new(&[("late", &[1])]);
    let mut config = config();
    config.accumulator.max_block = ms(200);
    let (producer, meta) = producer(metadata(1, &[]), &cluster, config);
    let outcome = producer.send("missing", None, Some(Bytes::from_static(b"v")), Vec::new(), None).await;
    assert!(matches!(outcome, Err(ProduceError::Metadata(ClientError::UnknownTopicOrPartition(_)))), "{outcome:?}");

    let publisher = tokio::spawn(async move {
        tokio::time::sleep(ms(50)).await;
        meta.publish(metadata(2, &[("late", &[1])]));
    });
    let delivery = producer.send("late", None, Some(Bytes::from_static(b"v")), Vec::new(), None).await;
    assert_eq!(delivery.expect("accepted once the topic appeared").await.map(|m| m.offset), Ok(0));
    publisher.await.expect("publisher task");
}

/// Ready batches for `(topic, partition, records)`, drained at once.
fn ready_batches(parts: &[(&str, u32, usize)]) -> Vec<ReadyBatch> {
    let acc = RecordAccumulator::new(
        AccumulatorConfig { linger: Duration::ZERO, ..AccumulatorConfig::default() },
        Arc::new(RoundRobinPartitioner::default()),
    );
    let now = Instant::now();
    for &(topic, partition, records) in parts {
        for i in 0..records {
            let record = Record::new(i as i64, None, Some(Bytes::from(format!("{topic}-{partition}-{i}"))));
            let delivery = futures::FutureExt::now_or_never(acc.append(topic, Some(partition), 8, record, now));
            drop(delivery.expect("no wait").expect("appended"));
        }
    }
    acc.drain(now)
}

#[test]
fn batches_are_grouped_by_their_partition_leader() {
    let meta = metadata(1, &[("a", &[1, 2, -1]), ("b", &[2])]);
    let batches = ready_batches(&[("a", 0, 2), ("a", 1, 1), ("a", 2, 1), ("b", 0, 3)]);
    let (routed, leaderless) = group_by_leader(batches, &meta);
    let summary: BTreeMap<&str, Vec<(String, u32, usize)>> = routed
        .iter()
        .map(|(addr, parts)| {
            (addr.as_str(), parts.iter().map(|p| (p.topic.to_string(), p.partition, p.batches.len())).collect())
        })
        .collect();
    let mut b2 = summary["b2:9092"].clone();
    b2.sort();
    assert_eq!(summary["b1:9092"], [("a".to_string(), 0, 1)]);
    assert_eq!(b2, [("a".to_string(), 1, 1), ("b".to_string(), 0, 1)]);
    assert_eq!(leaderless.len(), 1);
    assert_eq!((&*leaderless[0].topic, leaderless[0].partition), ("a", 2));
}

#[test]
fn a_request_carries_each_partition_once_with_its_batches_back_to_back() {
    let meta = metadata(1, &[("a", &[1, 1]), ("b", &[1])]);
    let mut batches = ready_batches(&[("a", 0, 2), ("a", 1, 1), ("b", 0, 1)]);
    batches.extend(ready_batches(&[("a", 0, 3)]));
    let (mut routed, _) = group_by_leader(batches, &meta);
    let parts = routed.remove("b1:9092").expect("all led by broker 1");
    let request = build_request(Acks::Leader, Duration::from_secs(7), &parts);
    assert_eq!(request.acks, strata_proto::broker::Acks::Leader as i32);
    assert_eq!(request.timeout_ms, 7000);
    let layout: BTreeMap<String, BTreeSet<u32>> =
        request.topics.iter().map(|t| (t.topic.clone(), t.partitions.iter().map(|p| p.partition).collect())).collect();
    assert_eq!(request.topics.len(), 2, "one entry per topic");
    assert_eq!(request.topics.iter().map(|t| t.partitions.len()).sum::<usize>(), 3, "one entry per partition");
    assert_eq!(layout, BTreeMap::from([("a".into(), BTreeSet::from([0, 1])), ("b".into(), BTreeSet::from([0]))]));
    let a0 =
        request.topics.iter().find(|t| t.topic == "a").and_then(|t| t.partitions.iter().find(|p| p.partition == 0));
    let records = a0.map(|p| p.records.clone()).expect("a-0 present");
    let counts: Vec<i32> = batches_of(records).iter().map(|b| b.header().records_count).collect();
    assert_eq!(counts, [2, 3], "two batches, oldest first");
}

fn batches_of(bytes: Bytes) -> Vec<strata_proto::record_batch::RecordBatch> {
    batches(bytes, usize::MAX).collect::<Result<_, _>>().expect("valid batches")
}

#[test]
fn answers_are_judged_per_partition() {
    let meta = metadata(1, &[("t", &[1])]);
    let ok = ProducePartitionResponse { partition: 0, base_offset: 40, log_append_time: 1234, ..Default::default() };
    assert_eq!(judge(Some(&ok), &meta, "t", 0), Verdict::Appended { base_offset: 40, log_append_time: Some(1234) });
    let create_time = ProducePartitionResponse { log_append_time: -1, ..ok.clone() };
    assert_eq!(judge(Some(&create_time), &meta, "t", 0), Verdict::Appended { base_offset: 40, log_append_time: None });
    assert!(matches!(judge(None, &meta, "t", 0), Verdict::Fail(_)), "a missing answer is not retried blindly");

    let unknown = ClientError::UnknownTopicOrPartition("x".into());
    assert!(matches!(classify(unknown.clone(), &meta, "t", 0), Verdict::Retry(_)));
    assert!(matches!(classify(unknown.clone(), &meta, "t", 1), Verdict::Fail(_)), "partition 1 is not listed");
    assert!(matches!(classify(unknown, &meta, "gone", 0), Verdict::Fail(_)));
    assert!(matches!(classify(ClientError::Unreachable("x".into()), &meta, "t", 0), Verdict::Retry(_)));
    assert!(matches!(classify(ClientError::CorruptRecord("x".into()), &meta, "t", 0), Verdict::Fail(_)));
}

#[tokio::test]
async fn over_grpc_the_producer_rides_out_a_broker_failure() {
    use crate::fake_cluster::FakeCluster;

    let cluster = FakeCluster::start(2).await;
    cluster.create_topic("t", &[1, 2]);
    // Per-partition refusals travel inside the answer, and are retried too.
    cluster.fail_produce("t", 1, ErrorCode::NotEnoughReplicas, 2);
    let meta_config =
        MetadataConfig { reconnect_backoff: ms(10), reconnect_backoff_max: ms(100), ..MetadataConfig::default() };
    let metadata = MetadataClient::connect(&cluster.bootstrap(), meta_config).await.expect("connect");
    metadata.wait_for_topic("t", Duration::from_secs(5)).await.expect("topic");
    let producer =
        Producer::new(metadata.clone(), ProducerConfig { retry_backoff: ms(20), ..config() }).expect("a valid config");

    let mut deliveries = Vec::new();
    for i in 0..2000 {
        deliveries.push((i, send(&producer, "t", &format!("k{}", i % 10), &format!("{i}")).await));
    }
    // Broker 1 dies; its partition moves to broker 2 a little later, as an
    // election would, while records keep coming.
    cluster.kill(1);
    let election = async {
        tokio::time::sleep(ms(100)).await;
        cluster.move_leader("t", 0, 2, true);
    };
    let sending = async {
        let mut more = Vec::new();
        for i in 2000..4000 {
            more.push((i, send(&producer, "t", &format!("k{}", i % 10), &format!("{i}")).await));
        }
        more
    };
    let ((), more) = tokio::join!(election, sending);
    deliveries.extend(more);
    for (i, d) in deliveries {
        d.await.unwrap_or_else(|e| panic!("record {i} failed: {e}"));
    }
    producer.close().await;
    assert!(cluster.produce_calls(2) > 0);
    let mut seen = 0;
    for p in 0..2 {
        let mut last: HashMap<Bytes, usize> = HashMap::new();
        for r in cluster.records("t", p) {
            seen += 1;
            let i: usize = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).parse().expect("number");
            if let Some(prev) = last.insert(r.key.clone().expect("key"), i) {
                assert!(prev < i, "per-key order survives the failover: {prev} then {i}");
            }
        }
    }
    assert_eq!(seen, 4000, "each record once (the fake appends atomically and drops idempotent duplicates)");
}

/// Sends one record to `partition` of "t".
async fn send_to(producer: &Producer, partition: u32, value: &str) -> DeliveryFuture {
    let record = Record::new(1, None, Some(Bytes::from(value.to_string())));
    producer.send_record("t", Some(partition), record).await.expect("accepted")
}

/// `n` (producer id, epoch 0, base sequence, records) tuples, as
/// [`MemCluster::received`] reports them.
fn sent(n: usize, producer_id: i64, base_sequence: i32, records: i32) -> Vec<(i64, i16, i32, i32)> {
    vec![(producer_id, 0, base_sequence, records); n]
}

#[tokio::test]
async fn idempotence_needs_acks_all_and_retries() {
    let cluster = MemCluster::new(&[("t", &[1])]);
    let build = |config: ProducerConfig| {
        let client = MetadataClient::detached(&["b1:9092"], MetadataConfig::default()).expect("an address");
        Producer::with_transport(client, config, Arc::new(DefaultPartitioner::with_seed(7)), cluster.clone())
    };
    for acks in [Acks::Leader, Acks::None] {
        match build(ProducerConfig { acks, ..config() }) {
            Err(ClientError::InvalidArgument(m)) => assert!(m.contains("acks=all"), "{m}"),
            other => panic!("acks={acks} with idempotence: {other:?}"),
        }
        build(ProducerConfig { acks, enable_idempotence: false, ..config() }).expect("without idempotence");
    }
    match build(ProducerConfig { retries: 0, ..config() }) {
        Err(ClientError::InvalidArgument(m)) => assert!(m.contains("retries"), "{m}"),
        other => panic!("retries=0 with idempotence: {other:?}"),
    }
    build(ProducerConfig { retries: 0, enable_idempotence: false, ..config() }).expect("without idempotence");
    assert!(ProducerConfig::default().enable_idempotence && ProducerConfig::default().acks == Acks::All);
    ProducerConfig::default().validate().expect("the default is valid");
}

#[tokio::test(start_paused = true)]
async fn records_wait_for_a_producer_id_asked_for_again_with_backoff() {
    let cluster = MemCluster::new(&[("t", &[1])]);
    cluster.init_failures.store(3, Ordering::Relaxed);
    let (producer, _meta) = producer(metadata(1, &[("t", &[1])]), &cluster, config());
    let start = tokio::time::Instant::now();
    assert_eq!(send_to(&producer, 0, "v").await.await.map(|m| m.offset), Ok(0));
    assert_eq!(cluster.init_calls.load(Ordering::Relaxed), 4);
    // Backoffs of 100, 200 and 400 ms, each with ±20% jitter.
    let waited = start.elapsed();
    assert!(waited >= ms(560) && waited <= ms(850), "waited {waited:?}");
    assert_eq!(cluster.request_count(), 1, "nothing was sent before the producer id came");
    assert_eq!(cluster.received(0), sent(1, 1, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn sequences_advance_by_record_count_per_partition() {
    let cluster = MemCluster::new(&[("t", &[1, 2])]);
    let (producer, _meta) = producer(metadata(1, &[("t", &[1, 2])]), &cluster, config());
    for (partition, count) in [(0, 3), (1, 2), (0, 2), (1, 1), (0, 1)] {
        let mut deliveries = Vec::new();
        for i in 0..count {
            deliveries.push(send_to(&producer, partition, &format!("{i}")).await);
        }
        producer.flush().await;
        for d in deliveries {
            d.await.expect("delivered");
        }
    }
    assert_eq!(cluster.received(0), [(1, 0, 0, 3), (1, 0, 3, 2), (1, 0, 5, 1)]);
    assert_eq!(cluster.received(1), [(1, 0, 0, 2), (1, 0, 2, 1)]);
}

#[tokio::test(start_paused = true)]
async fn a_batch_refused_outright_gives_its_sequences_back() {
    let cluster = MemCluster::new(&[("t", &[1])]);
    cluster.fail("t", 0, ErrorCode::MessageTooLarge, 1);
    let (producer, _meta) = producer(metadata(1, &[("t", &[1])]), &cluster, config());
    let refused = [send_to(&producer, 0, "a").await, send_to(&producer, 0, "b").await];
    for outcome in futures::future::join_all(refused).await {
        assert!(matches!(outcome, Err(ProduceError::Broker(ClientError::MessageTooLarge(_)))), "{outcome:?}");
    }
    assert_eq!(send_to(&producer, 0, "c").await.await.map(|m| m.offset), Ok(0));
    // The refused batch never reached the log, so the next one takes its
    // sequence under the same producer id.
    assert_eq!(cluster.received(0), [(1, 0, 0, 2), (1, 0, 0, 1)]);
    assert_eq!(cluster.init_calls.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn retries_exhausted_after_a_send_take_a_new_producer_id() {
    let cluster = MemCluster::new(&[("t", &[1, 1])]);
    let (producer, _meta) =
        producer(metadata(1, &[("t", &[1, 1])]), &cluster, ProducerConfig { retries: 2, ..config() });
    assert_eq!(send_to(&producer, 1, "a").await.await.map(|m| m.offset), Ok(0));
    cluster.fail("t", 0, ErrorCode::RequestTimedOut, 3);
    let outcome = send_to(&producer, 0, "b").await.await;
    assert!(matches!(outcome, Err(ProduceError::Broker(ClientError::RequestTimedOut(_)))), "{outcome:?}");
    // Whether any of the three sends was appended is unknown, so sequence 1
    // of producer 1 can never be used: producer 2 starts every partition
    // over at 0.
    assert_eq!(send_to(&producer, 0, "c").await.await.map(|m| m.offset), Ok(0));
    assert_eq!(send_to(&producer, 1, "d").await.await.map(|m| m.offset), Ok(1));
    let mut expected = sent(3, 1, 0, 1);
    expected.extend(sent(1, 2, 0, 1));
    assert_eq!(cluster.received(0), expected, "each retry resends the same sequence");
    assert_eq!(cluster.received(1), [(1, 0, 0, 1), (2, 0, 0, 1)]);
    assert_eq!(cluster.init_calls.load(Ordering::Relaxed), 2);
}

#[tokio::test(start_paused = true)]
async fn a_delivery_timeout_after_a_send_takes_a_new_producer_id() {
    let cluster = MemCluster::new(&[("t", &[1])]);
    let mut config = config();
    config.accumulator.delivery_timeout = Duration::from_secs(2);
    let (producer, _meta) = producer(metadata(1, &[("t", &[1])]), &cluster, config);
    cluster.fail("t", 0, ErrorCode::NotEnoughReplicas, 1000);
    assert_eq!(send_to(&producer, 0, "a").await.await, Err(ProduceError::Timeout(Duration::from_secs(2))));
    let tries = cluster.received(0).len();
    assert!(tries >= 2, "retried until the timeout: {tries}");
    cluster.faults.lock().expect("lock").clear();
    assert_eq!(send_to(&producer, 0, "b").await.await.map(|m| m.offset), Ok(0));
    let mut expected = sent(tries, 1, 0, 1);
    expected.extend(sent(1, 2, 0, 1));
    assert_eq!(cluster.received(0), expected);
}

#[tokio::test(start_paused = true)]
async fn a_failure_under_a_replaced_producer_id_does_not_replace_the_new_one() {
    let cluster = MemCluster::new(&[("t", &[1, 1])]);
    let (producer, _meta) =
        producer(metadata(1, &[("t", &[1, 1])]), &cluster, ProducerConfig { retries: 2, ..config() });
    cluster.fail("t", 0, ErrorCode::OutOfOrderSequenceNumber, 1);
    cluster.fail("t", 1, ErrorCode::RequestTimedOut, 3);
    // Both go out together under producer 1. Partition 0's sequence error
    // replaces producer 1 at once, while partition 1's batch is still being
    // retried, under producer 1, with the same bytes.
    let (a, b) = (send_to(&producer, 0, "a").await, send_to(&producer, 1, "b").await);
    let (a, b) = (a.await, b.await);
    assert!(matches!(a, Err(ProduceError::Broker(ClientError::OutOfOrderSequenceNumber(_)))), "{a:?}");
    assert!(matches!(b, Err(ProduceError::Broker(ClientError::RequestTimedOut(_)))), "{b:?}");
    // Partition 1's final failure concerns producer 1, already replaced.
    assert_eq!(send_to(&producer, 0, "c").await.await.map(|m| m.offset), Ok(0));
    assert_eq!(send_to(&producer, 1, "d").await.await.map(|m| m.offset), Ok(0));
    assert_eq!(cluster.received(0), [(1, 0, 0, 1), (2, 0, 0, 1)]);
    let mut expected = sent(3, 1, 0, 1);
    expected.extend(sent(1, 2, 0, 1));
    assert_eq!(cluster.received(1), expected);
    assert_eq!(cluster.init_calls.load(Ordering::Relaxed), 2);
}

#[tokio::test(start_paused = true)]
async fn without_idempotence_no_producer_id_is_asked_for() {
    let cluster = MemCluster::new(&[("t", &[1])]);
    let config = ProducerConfig { acks: Acks::Leader, enable_idempotence: false, ..config() };
    let (producer, _meta) = producer(metadata(1, &[("t", &[1])]), &cluster, config);
    assert_eq!(send_to(&producer, 0, "a").await.await.map(|m| m.offset), Ok(0));
    assert_eq!(cluster.received(0), [(-1, -1, -1, 1)]);
    assert_eq!(cluster.init_calls.load(Ordering::Relaxed), 0);
}
