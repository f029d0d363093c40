//! Replica manager tests: a real LogManager in a temp dir, metadata driven
//! by hand through the watch channel the metadata cache would feed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use strata_proto::broker as pb;
use strata_proto::common::ErrorCode;
use strata_proto::record_batch::{self, Compression, RecordBatchBuilder};
use tokio::sync::watch;

use super::*;
use crate::log::{LogConfig, LogManager, SystemClock};
use crate::metadata::model::{BrokerRegistration, ClusterMetadata, PartitionInfo, PartitionState, TopicInfo};

const ME: i32 = 1;
const OTHER: i32 = 2;
const EPOCH: i32 = 5;
const LONG_WAIT: Duration = Duration::from_secs(60);

fn open_logs(dir: &Path) -> LogManager {
    LogManager::open(dir, LogConfig::default(), 64, Arc::new(SystemClock)).unwrap()
}

fn partition(leader: i32, replicas: &[i32], isr: &[i32]) -> PartitionInfo {
    PartitionInfo {
        replicas: replicas.to_vec(),
        state: Some(PartitionState {
            leader,
            leader_epoch: EPOCH,
            isr: isr.to_vec(),
            controller_epoch: 1,
            partition_epoch: 0,
        }),
    }
}

fn led_here() -> PartitionInfo {
    partition(ME, &[ME], &[ME])
}

fn topic(id: &str, partitions: Vec<PartitionInfo>) -> TopicInfo {
    TopicInfo { topic_id: id.to_string(), configs: BTreeMap::new(), partitions }
}

fn metadata(revision: u64, topics: Vec<(&str, TopicInfo)>) -> Arc<ClusterMetadata> {
    let brokers = [ME, OTHER]
        .into_iter()
        .map(|id| (id, BrokerRegistration { addr: format!("b{id}:9092"), rack: String::new(), incarnation: 7 }))
        .collect();
    Arc::new(ClusterMetadata {
        revision,
        brokers,
        internal_addrs: Default::default(),
        controller: None,
        draining: Default::default(),
        elect_preferred: None,
        topics: topics.into_iter().map(|(n, t)| (n.to_string(), t)).collect(),
    })
}

/// Record timestamps in tests are milliseconds after this (a fixed "now"
/// per process): the log rolls by `segment.ms` counted from a segment's
/// first timestamp, as in Kafka, so 1970 timestamps would roll every append.
fn t0() -> i64 {
    static T0: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *T0.get_or_init(|| crate::log::Clock::now_ms(&SystemClock))
}

/// A one-record batch stamped `t0() + at_ms`.
fn batch(at_ms: i64, value: &str) -> Bytes {
    let mut b = RecordBatchBuilder::new(Compression::None);
    b.append(t0() + at_ms, None, Some(Bytes::copy_from_slice(value.as_bytes()))).unwrap();
    b.build().unwrap()
}

/// The batch as the leader stores it: offsets and epoch rewritten.
fn stored(batch: &Bytes, base_offset: i64) -> Bytes {
    let mut b = batch.to_vec();
    record_batch::set_base_offset(&mut b, base_offset).unwrap();
    record_batch::set_partition_leader_epoch(&mut b, EPOCH).unwrap();
    Bytes::from(b)
}

fn concat(parts: &[&Bytes]) -> Bytes {
    let mut out = BytesMut::new();
    for p in parts {
        out.extend_from_slice(p);
    }
    out.freeze()
}

struct Harness {
    dir: tempfile::TempDir,
    md: watch::Sender<Arc<ClusterMetadata>>,
    rm: Arc<ReplicaManager>,
}

impl Harness {
    /// A manager whose metadata is loaded at revision 1 with `topics`.
    async fn new(topics: Vec<(&str, TopicInfo)>) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let (md, rx) = watch::channel(metadata(1, topics));
        let rm = ReplicaManager::new(ME, open_logs(dir.path()), rx, ReplicaConfig::default());
        assert!(rm.wait_applied(1).await);
        Harness { dir, md, rm }
    }

    async fn set_metadata(&self, md: Arc<ClusterMetadata>) {
        let revision = md.revision;
        self.md.send_replace(md);
        assert!(self.rm.wait_applied(revision).await);
    }

    async fn produce(
        &self,
        acks: Acks,
        topic: &str,
        partition: u32,
        records: Bytes,
    ) -> Result<ProduceInfo, ReplicaError> {
        let input = ProduceInput { topic: topic.into(), partition, records };
        let mut r = self.rm.produce(acks, Duration::from_secs(5), vec![input]).await;
        assert_eq!(r.len(), 1);
        r.remove(0).outcome
    }

    async fn fetch_with(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_wait: Duration,
        min_bytes: usize,
    ) -> Result<FetchedData, ReplicaError> {
        let params = FetchParams { max_wait, min_bytes, max_bytes: 1 << 20, replica_id: -1 };
        let req = FetchPartition {
            topic: topic.into(),
            partition,
            offset,
            partition_max_bytes: 1 << 20,
            current_leader_epoch: -1,
        };
        let mut r = self.rm.fetch(params, vec![req]).await;
        assert_eq!(r.len(), 1);
        r.remove(0).outcome
    }

    async fn fetch(&self, topic: &str, partition: u32, offset: i64) -> Result<FetchedData, ReplicaError> {
        self.fetch_with(topic, partition, offset, Duration::ZERO, 0).await
    }

    async fn offset(&self, topic: &str, partition: u32, timestamp: i64) -> Result<Option<u64>, ReplicaError> {
        let input = ListOffsetsInput { topic: topic.into(), partition, timestamp };
        let mut r = self.rm.list_offsets(vec![input]).await;
        r.remove(0).outcome
    }
}

#[tokio::test]
async fn becoming_leader_opens_the_log_and_fetch_returns_what_was_produced() {
    let h = Harness::new(vec![("t", topic("id-t", vec![led_here(), led_here()]))]).await;
    assert_eq!(h.rm.partitions_led(), 2);
    assert_eq!(h.rm.partitions_followed(), 0);
    assert!(h.dir.path().join("t-0").is_dir());
    assert!(h.dir.path().join("t-1").is_dir());

    let (a, b) = (batch(1000, "alpha"), batch(1001, "beta"));
    let first = h.produce(Acks::Leader, "t", 0, a.clone()).await.unwrap();
    assert_eq!(first, ProduceInfo { base_offset: 0, log_append_time: None, log_start_offset: 0 });
    let second = h.produce(Acks::None, "t", 0, b.clone()).await.unwrap();
    assert_eq!(second.base_offset, 1);

    let data = h.fetch("t", 0, 0).await.unwrap();
    assert_eq!(data.records, concat(&[&stored(&a, 0), &stored(&b, 1)]));
    assert_eq!((data.high_watermark, data.log_start_offset, data.log_end_offset), (2, 0, 2));
    let tail = h.fetch("t", 0, 1).await.unwrap();
    assert_eq!(tail.records, stored(&b, 1));
    let end = h.fetch("t", 0, 2).await.unwrap();
    assert!(end.records.is_empty());
    assert!(h.fetch("t", 1, 0).await.unwrap().records.is_empty());
}

#[tokio::test]
async fn several_batches_in_one_produce_get_consecutive_offsets() {
    let h = Harness::new(vec![("t", topic("id-t", vec![led_here()]))]).await;
    let mut two = RecordBatchBuilder::new(Compression::Lz4);
    two.append(t0() + 1, None, Some(Bytes::from_static(b"x"))).unwrap();
    two.append(t0() + 2, None, Some(Bytes::from_static(b"y"))).unwrap();
    let two = two.build().unwrap();
    let one = batch(3, "z");
    let info = h.produce(Acks::Leader, "t", 0, concat(&[&two, &one])).await.unwrap();
    assert_eq!(info.base_offset, 0);
    let data = h.fetch("t", 0, 0).await.unwrap();
    assert_eq!(data.records, concat(&[&stored(&two, 0), &stored(&one, 2)]));
    assert_eq!(data.log_end_offset, 3);
}

#[tokio::test]
async fn not_leader_and_unknown_partitions_are_refused_with_hints() {
    let h = Harness::new(vec![(
        "t",
        topic("id-t", vec![partition(OTHER, &[ME, OTHER], &[OTHER, ME]), partition(-1, &[ME], &[])]),
    )])
    .await;
    assert_eq!(h.rm.partitions_led(), 0);
    assert_eq!(h.rm.partitions_followed(), 2);

    let hint = Some(LeaderHint { id: OTHER, addr: "b2:9092".into() });
    let e = h.produce(Acks::Leader, "t", 0, batch(1, "v")).await.unwrap_err();
    assert_eq!(e, ReplicaError::NotLeader { topic: "t".into(), partition: 0, leader: hint.clone() });
    let wire = e.to_pb();
    assert_eq!(wire.code, ErrorCode::NotLeaderForPartition as i32);
    assert_eq!((wire.leader_id, wire.leader_addr.as_str()), (OTHER, "b2:9092"));
    let e = h.fetch("t", 0, 0).await.unwrap_err();
    assert_eq!(e, ReplicaError::NotLeader { topic: "t".into(), partition: 0, leader: hint.clone() });
    let e = h.offset("t", 0, EARLIEST_TIMESTAMP).await.unwrap_err();
    assert_eq!(e, ReplicaError::NotLeader { topic: "t".into(), partition: 0, leader: hint });

    let e = h.produce(Acks::Leader, "t", 1, batch(1, "v")).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::LeaderNotAvailable);
    assert_eq!(e.to_pb().leader_id, -1);
    for (t, p) in [("nope", 0), ("t", 2)] {
        let e = h.produce(Acks::Leader, t, p, batch(1, "v")).await.unwrap_err();
        assert_eq!(e, ReplicaError::UnknownTopicOrPartition { topic: t.into(), partition: p });
        assert_eq!(h.fetch(t, p, 0).await.unwrap_err().code(), ErrorCode::UnknownTopicOrPartition);
    }
}

#[tokio::test]
async fn a_bad_batch_anywhere_in_the_request_appends_nothing() {
    let mut small = topic("id-s", vec![led_here()]);
    small.configs.insert("max.message.bytes".into(), "200".into());
    let h = Harness::new(vec![("t", topic("id-t", vec![led_here()])), ("small", small)]).await;
    let good = batch(1, "good");

    let mut corrupt = batch(2, "corrupt").to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let e = h.produce(Acks::Leader, "t", 0, concat(&[&good, &Bytes::from(corrupt)])).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::CorruptRecord, "{e}");

    let truncated = batch(3, "cut").slice(..30);
    let e = h.produce(Acks::Leader, "t", 0, concat(&[&good, &truncated])).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::CorruptRecord, "{e}");

    let mut bad_magic = batch(4, "magic").to_vec();
    bad_magic[16] = 1;
    let e = h.produce(Acks::Leader, "t", 0, concat(&[&good, &Bytes::from(bad_magic)])).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::CorruptRecord, "{e}");

    let e = h.produce(Acks::Leader, "t", 0, Bytes::new()).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidRequest, "{e}");

    let big = batch(5, &"x".repeat(300));
    let e = h.produce(Acks::Leader, "small", 0, concat(&[&good, &big])).await.unwrap_err();
    assert_eq!(e, ReplicaError::MessageTooLarge { size: big.len(), max: 200 });

    assert_eq!(h.offset("t", 0, LATEST_TIMESTAMP).await.unwrap(), Some(0));
    assert_eq!(h.offset("small", 0, LATEST_TIMESTAMP).await.unwrap(), Some(0));
    assert_eq!(h.produce(Acks::Leader, "small", 0, good).await.unwrap().base_offset, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_fetch_returns_as_soon_as_data_arrives() {
    let h = Arc::new(Harness::new(vec![("t", topic("id-t", vec![led_here()]))]).await);
    let fetcher = {
        let h = Arc::clone(&h);
        tokio::spawn(async move { h.fetch_with("t", 0, 0, LONG_WAIT, 1).await })
    };
    while h.rm.fetch_waiters("t", 0) == 0 {
        tokio::task::yield_now().await;
    }
    let b = batch(1, "wake up");
    h.produce(Acks::Leader, "t", 0, b.clone()).await.unwrap();
    let data = fetcher.await.unwrap().unwrap();
    assert_eq!(data.records, stored(&b, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_fetch_learns_of_a_leadership_change() {
    let h = Arc::new(Harness::new(vec![("t", topic("id-t", vec![partition(ME, &[ME, OTHER], &[ME])]))]).await);
    let fetcher = {
        let h = Arc::clone(&h);
        tokio::spawn(async move { h.fetch_with("t", 0, 0, LONG_WAIT, 1).await })
    };
    while h.rm.fetch_waiters("t", 0) == 0 {
        tokio::task::yield_now().await;
    }
    h.set_metadata(metadata(2, vec![("t", topic("id-t", vec![partition(OTHER, &[ME, OTHER], &[OTHER])]))])).await;
    let e = fetcher.await.unwrap().unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotLeaderForPartition);
    assert_eq!(h.rm.partitions_followed(), 1);
}

#[tokio::test]
async fn a_fetch_without_data_returns_empty_after_max_wait() {
    let h = Harness::new(vec![("t", topic("id-t", vec![led_here()]))]).await;
    let data = h.fetch_with("t", 0, 0, Duration::from_millis(50), 1).await.unwrap();
    assert!(data.records.is_empty());
    assert_eq!(data.high_watermark, 0);
}

#[tokio::test]
async fn fetch_limits_bytes_but_always_returns_a_first_batch() {
    let h = Harness::new(vec![("t", topic("id-t", vec![led_here(), led_here()]))]).await;
    let big = batch(1, &"a".repeat(500));
    for p in 0..2 {
        h.produce(Acks::Leader, "t", p, big.clone()).await.unwrap();
        h.produce(Acks::Leader, "t", p, big.clone()).await.unwrap();
    }
    let params = FetchParams { max_wait: Duration::ZERO, min_bytes: 0, max_bytes: 100, replica_id: -1 };
    let req = |p| FetchPartition {
        topic: "t".into(),
        partition: p,
        offset: 0,
        partition_max_bytes: 50,
        current_leader_epoch: -1,
    };
    let r = h.rm.fetch(params, vec![req(0), req(1)]).await;
    let first = r[0].outcome.as_ref().unwrap();
    assert_eq!(first.records, stored(&big, 0), "exactly one whole batch, though larger than both limits");
    let second = r[1].outcome.as_ref().unwrap();
    assert!(second.records.is_empty());
    assert_eq!((second.high_watermark, second.log_end_offset), (2, 2));

    let params = FetchParams { max_bytes: 10_000, ..params };
    let req = |p| FetchPartition {
        topic: "t".into(),
        partition: p,
        offset: 0,
        partition_max_bytes: 2 * big.len(),
        current_leader_epoch: -1,
    };
    let r = h.rm.fetch(params, vec![req(0), req(1)]).await;
    for (p, result) in r.iter().enumerate() {
        assert_eq!(result.partition, p as u32);
        assert_eq!(result.outcome.as_ref().unwrap().records.len(), 2 * big.len());
    }
}

#[tokio::test]
async fn fetch_out_of_range_reports_the_log_bounds() {
    let h = Harness::new(vec![("t", topic("id-t", vec![led_here()]))]).await;
    h.produce(Acks::Leader, "t", 0, batch(1, "v")).await.unwrap();
    for offset in [2, -1] {
        let e = h.fetch("t", 0, offset).await.unwrap_err();
        assert_eq!(e, ReplicaError::OffsetOutOfRange { requested: offset, start: 0, end: 1 });
    }
}

#[tokio::test]
async fn list_offsets_earliest_latest_and_by_time() {
    let h = Harness::new(vec![("t", topic("id-t", vec![led_here()]))]).await;
    assert_eq!(h.offset("t", 0, LATEST_TIMESTAMP).await.unwrap(), Some(0));
    for ts in [1000, 2000, 3000] {
        h.produce(Acks::Leader, "t", 0, batch(ts, "v")).await.unwrap();
    }
    assert_eq!(h.offset("t", 0, EARLIEST_TIMESTAMP).await.unwrap(), Some(0));
    assert_eq!(h.offset("t", 0, LATEST_TIMESTAMP).await.unwrap(), Some(3));
    assert_eq!(h.offset("t", 0, 0).await.unwrap(), Some(0));
    assert_eq!(h.offset("t", 0, t0() + 1500).await.unwrap(), Some(1));
    assert_eq!(h.offset("t", 0, t0() + 3000).await.unwrap(), Some(2));
    assert_eq!(h.offset("t", 0, t0() + 3001).await.unwrap(), None);
    assert_eq!(h.offset("t", 0, -7).await.unwrap_err().code(), ErrorCode::InvalidRequest);
}

/// A follower's fetch as the fetcher sends it.
async fn follower_fetch(h: &Harness, topic: &str, offset: i64, epoch: i32) -> Result<FetchedData, ReplicaError> {
    let params = FetchParams { max_wait: Duration::ZERO, min_bytes: 0, max_bytes: 1 << 20, replica_id: OTHER };
    let req = FetchPartition {
        topic: topic.into(),
        partition: 0,
        offset,
        partition_max_bytes: 1 << 20,
        current_leader_epoch: epoch,
    };
    h.rm.fetch(params, vec![req]).await.remove(0).outcome
}

fn with_min_insync(mut t: TopicInfo, n: usize) -> TopicInfo {
    t.configs.insert("min.insync.replicas".into(), n.to_string());
    t
}

#[tokio::test]
async fn acks_all_is_refused_below_min_insync_replicas() {
    let h = Harness::new(vec![
        ("solo", topic("id-s", vec![led_here()])),
        ("alone", with_min_insync(topic("id-a", vec![partition(ME, &[ME, OTHER], &[ME])]), 2)),
    ])
    .await;
    assert_eq!(h.produce(Acks::All, "solo", 0, batch(1, "v")).await.unwrap().base_offset, 0);
    let e = h.produce(Acks::All, "alone", 0, batch(1, "v")).await.unwrap_err();
    assert_eq!(e, ReplicaError::NotEnoughReplicas { isr: 1, min: 2 });
    assert_eq!(h.offset("alone", 0, LATEST_TIMESTAMP).await.unwrap(), Some(0), "refused before appending");
    assert_eq!(h.produce(Acks::Leader, "alone", 0, batch(1, "v")).await.unwrap().base_offset, 0);
}

#[tokio::test]
async fn acks_all_completes_when_the_follower_has_fetched_past_the_batch() {
    let h = Harness::new(vec![(
        "pair",
        with_min_insync(topic("id-p", vec![partition(ME, &[ME, OTHER], &[ME, OTHER])]), 2),
    )])
    .await;
    let rm = h.rm.clone();
    let produce = tokio::spawn(async move {
        let input = ProduceInput { topic: "pair".into(), partition: 0, records: batch(1, "v") };
        rm.produce(Acks::All, Duration::from_secs(30), vec![input]).await.remove(0).outcome
    });
    // The follower reads the leader's log end, which consumers cannot see
    // before the high watermark moves.
    let data = loop {
        let d = follower_fetch(&h, "pair", 0, EPOCH).await.unwrap();
        if !d.records.is_empty() {
            break d;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!((data.log_end_offset, data.high_watermark), (1, 0));
    assert!(h.fetch("pair", 0, 0).await.unwrap().records.is_empty(), "not committed yet");
    assert!(!produce.is_finished());
    // Fetching from offset 1 tells the leader the follower has offset 0.
    follower_fetch(&h, "pair", 1, EPOCH).await.unwrap();
    // The follower learns the new high watermark on its next fetch.
    assert_eq!(follower_fetch(&h, "pair", 1, EPOCH).await.unwrap().high_watermark, 1);
    assert_eq!(produce.await.unwrap().unwrap().base_offset, 0);
    assert_eq!(h.fetch("pair", 0, 0).await.unwrap().records.len(), data.records.len());
}

#[tokio::test]
async fn fetches_naming_another_leader_epoch_are_refused() {
    let h = Harness::new(vec![("t", topic("id-t", vec![partition(ME, &[ME, OTHER], &[ME, OTHER])]))]).await;
    let e = follower_fetch(&h, "t", 0, EPOCH - 1).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::FencedLeaderEpoch);
    let e = follower_fetch(&h, "t", 0, EPOCH + 1).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::UnknownLeaderEpoch);
    assert!(follower_fetch(&h, "t", 0, -1).await.is_ok());
}

#[tokio::test]
async fn a_caught_up_follower_outside_the_isr_is_proposed_for_it() {
    let h = Harness::new(vec![("t", topic("id-t", vec![partition(ME, &[ME, OTHER], &[ME])]))]).await;
    let mut requests = h.rm.take_isr_requests().unwrap();
    h.produce(Acks::Leader, "t", 0, batch(1, "v")).await.unwrap();
    follower_fetch(&h, "t", 0, EPOCH).await.unwrap();
    assert!(requests.try_recv().is_err(), "behind the high watermark: not yet");
    follower_fetch(&h, "t", 1, EPOCH).await.unwrap();
    let req = requests.recv().await.unwrap();
    assert_eq!((req.topic.as_str(), req.leader_epoch, req.isr.clone()), ("t", EPOCH, vec![ME, OTHER]));
    follower_fetch(&h, "t", 1, EPOCH).await.unwrap();
    assert!(requests.try_recv().is_err(), "the same change is not asked twice while pending");
    h.rm.isr_written("t", 0, EPOCH, vec![ME, OTHER], 1);
    // Now acks=all waits for the follower too.
    let rm = h.rm.clone();
    let produce = tokio::spawn(async move {
        let input = ProduceInput { topic: "t".into(), partition: 0, records: batch(2, "w") };
        rm.produce(Acks::All, Duration::from_secs(30), vec![input]).await.remove(0).outcome
    });
    while h.rm.fetch_waiters("t", 0) == 0 && !produce.is_finished() {
        tokio::task::yield_now().await;
    }
    assert!(!produce.is_finished(), "the follower has not fetched the batch yet");
    follower_fetch(&h, "t", 2, EPOCH).await.unwrap();
    assert_eq!(produce.await.unwrap().unwrap().base_offset, 1);
}

#[tokio::test]
async fn log_append_time_topics_stamp_the_broker_time() {
    let mut t = topic("id-t", vec![led_here()]);
    t.configs.insert("message.timestamp.type".into(), "LogAppendTime".into());
    let h = Harness::new(vec![("t", t)]).await;
    let info = h.produce(Acks::Leader, "t", 0, batch(1, "v")).await.unwrap();
    let Some(time) = info.log_append_time else { panic!("no log append time in {info:?}") };
    assert!(time >= t0());
}

#[tokio::test]
async fn deleting_a_topic_deletes_its_directory() {
    let h =
        Harness::new(vec![("gone", topic("id-g", vec![led_here()])), ("kept", topic("id-k", vec![led_here()]))]).await;
    h.produce(Acks::Leader, "gone", 0, batch(1, "v")).await.unwrap();
    assert!(h.dir.path().join("gone-0").is_dir());
    h.set_metadata(metadata(2, vec![("kept", topic("id-k", vec![led_here()]))])).await;
    assert!(!h.dir.path().join("gone-0").exists());
    assert!(h.dir.path().join("kept-0").is_dir());
    assert_eq!(h.rm.partitions_led(), 1);
    let e = h.produce(Acks::Leader, "gone", 0, batch(1, "v")).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::UnknownTopicOrPartition);
}

#[tokio::test]
async fn a_partition_moved_away_is_deleted_and_a_recreated_topic_starts_empty() {
    let h = Harness::new(vec![("t", topic("first", vec![led_here(), led_here()]))]).await;
    h.produce(Acks::Leader, "t", 0, batch(1, "old")).await.unwrap();
    h.produce(Acks::Leader, "t", 1, batch(1, "old")).await.unwrap();
    // Partition 1 is reassigned to another broker; partition 0's topic is
    // deleted and re-created under the same name between two snapshots.
    h.set_metadata(metadata(2, vec![("t", topic("second", vec![led_here(), partition(OTHER, &[OTHER], &[OTHER])]))]))
        .await;
    assert!(!h.dir.path().join("t-1").exists());
    assert_eq!(h.offset("t", 0, LATEST_TIMESTAMP).await.unwrap(), Some(0));
    assert_eq!(partition::read_topic_id(&h.dir.path().join("t-0")).as_deref(), Some("second"));
}

#[tokio::test]
async fn stray_partitions_are_deleted_only_once_metadata_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    {
        let logs = open_logs(dir.path());
        logs.get_or_create(&TopicPartition::new("stray", 0), None).unwrap();
        logs.close().unwrap();
    }
    let (md, rx) = watch::channel(Arc::new(ClusterMetadata::default()));
    let rm = ReplicaManager::new(ME, open_logs(dir.path()), rx, ReplicaConfig::default());
    // The default value (revision 0) is "not loaded yet": nothing applied.
    assert_eq!(rm.applied_revision(), 0);
    assert!(dir.path().join("stray-0").is_dir());
    md.send_replace(metadata(3, vec![("t", topic("id-t", vec![led_here()]))]));
    assert!(rm.wait_applied(3).await);
    assert!(!dir.path().join("stray-0").exists());
    assert!(dir.path().join("t-0").is_dir());
    rm.shutdown().await;
}

#[tokio::test]
async fn a_new_manager_on_the_same_directory_serves_the_old_data() {
    let topics = || vec![("t", topic("id-t", vec![led_here()]))];
    let h = Harness::new(topics()).await;
    let (a, b) = (batch(10, "before"), batch(20, "restart"));
    h.produce(Acks::Leader, "t", 0, a.clone()).await.unwrap();
    h.produce(Acks::Leader, "t", 0, b.clone()).await.unwrap();
    h.rm.shutdown().await;
    assert_eq!(h.produce(Acks::Leader, "t", 0, batch(1, "late")).await.unwrap_err(), ReplicaError::ShuttingDown);
    assert!(!h.rm.wait_applied(u64::MAX).await);
    h.rm.shutdown().await;

    let (_md, rx) = watch::channel(metadata(1, topics()));
    let logs = open_logs(h.dir.path());
    let rm = ReplicaManager::new(ME, logs, rx, ReplicaConfig::default());
    assert!(rm.wait_applied(1).await);
    let params = FetchParams { max_wait: Duration::ZERO, min_bytes: 0, max_bytes: 1 << 20, replica_id: -1 };
    let req = FetchPartition {
        topic: "t".into(),
        partition: 0,
        offset: 0,
        partition_max_bytes: 1 << 20,
        current_leader_epoch: -1,
    };
    let r = rm.fetch(params, vec![req]).await;
    let data = r[0].outcome.as_ref().unwrap();
    assert_eq!(data.records, concat(&[&stored(&a, 0), &stored(&b, 1)]));
    assert_eq!(data.high_watermark, 2);
    let input = ProduceInput { topic: "t".into(), partition: 0, records: batch(30, "after") };
    let r = rm.produce(Acks::Leader, Duration::from_secs(5), vec![input]).await;
    assert_eq!(r[0].outcome.as_ref().unwrap().base_offset, 2);
    rm.shutdown().await;
}

#[tokio::test]
async fn replica_fetches_need_a_replica_of_the_partition() {
    let h = Harness::new(vec![("t", topic("id-t", vec![partition(ME, &[ME, OTHER], &[ME])]))]).await;
    h.produce(Acks::Leader, "t", 0, batch(1, "v")).await.unwrap();
    let params = FetchParams { max_wait: Duration::ZERO, min_bytes: 0, max_bytes: 1 << 20, replica_id: OTHER };
    let req = FetchPartition {
        topic: "t".into(),
        partition: 0,
        offset: 0,
        partition_max_bytes: 1 << 20,
        current_leader_epoch: -1,
    };
    let r = h.rm.fetch(params, vec![req.clone()]).await;
    assert!(!r[0].outcome.as_ref().unwrap().records.is_empty());
    let r = h.rm.fetch(FetchParams { replica_id: 9, ..params }, vec![req]).await;
    assert_eq!(r[0].outcome.as_ref().unwrap_err().code(), ErrorCode::InvalidRequest);
}

// Wire conversions (crate::service::{produce, fetch, list_offsets}).

#[tokio::test]
async fn wire_produce_fetch_and_list_offsets() {
    let h = Harness::new(vec![("t", topic("id-t", vec![led_here(), led_here()]))]).await;
    let b = batch(1000, "wire");
    let req = pb::ProduceRequest {
        topics: vec![pb::ProduceTopic {
            topic: "t".into(),
            partitions: vec![
                pb::ProducePartition { partition: 1, records: b.clone() },
                pb::ProducePartition { partition: 7, records: b.clone() },
            ],
        }],
        acks: pb::Acks::All as i32,
        timeout_ms: 1000,
    };
    let resp = crate::service::produce::produce(&h.rm, req, 1 << 20).await.unwrap();
    let parts = &resp.topics[0].partitions;
    assert_eq!(resp.topics[0].topic, "t");
    assert_eq!((parts[0].partition, parts[0].error.as_ref(), parts[0].base_offset), (1, None, 0));
    assert_eq!(parts[0].log_append_time, -1);
    assert_eq!(parts[1].error.as_ref().map(|e| e.code), Some(ErrorCode::UnknownTopicOrPartition as i32));

    let fetch = pb::FetchRequest {
        partitions: vec![
            pb::FetchPartition {
                topic: "t".into(),
                partition: 1,
                fetch_offset: 0,
                partition_max_bytes: 0,
                current_leader_epoch: -1,
            },
            pb::FetchPartition {
                topic: "t".into(),
                partition: 0,
                fetch_offset: 5,
                partition_max_bytes: 0,
                current_leader_epoch: -1,
            },
        ],
        max_wait_ms: 0,
        min_bytes: 0,
        max_bytes: 0,
        replica_id: -1,
    };
    let resp = crate::service::fetch::fetch(&h.rm, fetch).await.unwrap();
    assert_eq!(resp.partitions[0].records, stored(&b, 0));
    assert_eq!((resp.partitions[0].high_watermark, resp.partitions[0].log_end_offset), (1, 1));
    let oor = &resp.partitions[1];
    assert_eq!(oor.error.as_ref().map(|e| e.code), Some(ErrorCode::OffsetOutOfRange as i32));
    assert_eq!((oor.log_start_offset, oor.log_end_offset), (0, 0));

    let lo = pb::ListOffsetsRequest {
        partitions: vec![
            pb::ListOffsetsPartition { topic: "t".into(), partition: 1, timestamp: -1 },
            pb::ListOffsetsPartition { topic: "t".into(), partition: 1, timestamp: t0() + 5000 },
        ],
    };
    let resp = crate::service::list_offsets::list_offsets(&h.rm, lo).await.unwrap();
    assert_eq!(resp.partitions.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![1, -1]);
}

#[tokio::test]
async fn wire_produce_refuses_oversized_requests_and_unknown_acks() {
    let h = Harness::new(vec![("t", topic("id-t", vec![led_here(), led_here()]))]).await;
    let b = batch(1, "v");
    let req = |acks| pb::ProduceRequest {
        topics: vec![pb::ProduceTopic {
            topic: "t".into(),
            partitions: (0..2).map(|p| pb::ProducePartition { partition: p, records: b.clone() }).collect(),
        }],
        acks,
        timeout_ms: 0,
    };
    let resp = crate::service::produce::produce(&h.rm, req(pb::Acks::Leader as i32), b.len()).await.unwrap();
    for p in &resp.topics[0].partitions {
        assert_eq!(p.error.as_ref().map(|e| e.code), Some(ErrorCode::MessageTooLarge as i32));
    }
    assert_eq!(h.offset("t", 0, LATEST_TIMESTAMP).await.unwrap(), Some(0));
    let status = crate::service::produce::produce(&h.rm, req(9), 1 << 20).await.unwrap_err();
    let detail = strata_proto::error::detail_from_status(&status);
    assert_eq!(detail.code, ErrorCode::InvalidRequest as i32);
}

/// gRPC handlers and spawned tasks need these futures to be `Send`
/// (checked at compile time; never run).
const _: fn(&ReplicaManager) = futures_are_send;
fn futures_are_send(rm: &ReplicaManager) {
    fn send<T: Send>(_: T) {}
    send(rm.wait_applied(1));
    send(rm.shutdown());
    send(rm.produce(Acks::All, Duration::ZERO, Vec::new()));
    send(rm.fetch(FetchParams { max_wait: Duration::ZERO, min_bytes: 0, max_bytes: 0, replica_id: -1 }, Vec::new()));
    send(rm.list_offsets(Vec::new()));
}
