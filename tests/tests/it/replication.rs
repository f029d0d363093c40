//! Replication and failover against real processes: 3 coordinators and 3
//! brokers, replication factor 3, min.insync.replicas=2, and real faults
//! (kill -9, SIGSTOP, SIGTERM, cut proxies).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_client::admin::{AdminClient, NewTopic};
use strata_client::consumer::{Consumer, ConsumerConfig, OffsetReset, TopicPartition};
use strata_client::metadata::{MetadataClient, MetadataConfig};
use strata_client::producer::{Producer, ProducerConfig};
use strata_coord_client::CoordClient;
use strata_proto::broker as pb;
use strata_proto::broker::broker_client::BrokerClient;
use strata_proto::common::ErrorCode;
use strata_proto::record_batch::{Compression, RecordBatchBuilder};
use strata_tests::Cluster;
use strata_tests::wait::eventually;
use tokio::sync::mpsc;

/// Fast failure detection, so failover fits a test: a broker's session
/// expires 1.5 s after its last keep-alive.
const BROKER_CONFIG: &str = "session_timeout_ms = 1500
replica_lag_time_max_ms = 2000
leader_imbalance_check_interval_ms = 2000
controlled_shutdown_timeout_ms = 10000
";

#[derive(Debug, Clone)]
struct State {
    leader: i32,
    isr: Vec<i32>,
}

async fn state(coord: &CoordClient, topic: &str, p: u32) -> anyhow::Result<State> {
    let (data, _) = coord.get(&format!("/topics/{topic}/partitions/{p}/state")).await?;
    let v: serde_json::Value = serde_json::from_slice(&data)?;
    let leader = v["leader"].as_i64().ok_or_else(|| anyhow::anyhow!("no leader in {v}"))? as i32;
    let isr = v["isr"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_i64()).map(|x| x as i32).collect())
        .unwrap_or_default();
    Ok(State { leader, isr })
}

async fn wait_full_isr(coord: &CoordClient, topic: &str, partitions: u32) -> anyhow::Result<()> {
    eventually(&format!("{topic}: every partition's ISR is whole"), Duration::from_secs(60), || {
        let coord = coord.clone();
        let topic = topic.to_string();
        async move {
            for p in 0..partitions {
                let s = state(&coord, &topic, p).await?;
                anyhow::ensure!(s.isr.len() == 3 && s.leader >= 0, "partition {p}: {s:?}");
            }
            Ok(())
        }
    })
    .await
}

async fn start(topic: &str, partitions: u32) -> anyhow::Result<(Cluster, MetadataClient, CoordClient)> {
    start_with(topic, partitions, BROKER_CONFIG).await
}

async fn start_with(
    topic: &str,
    partitions: u32,
    config: &str,
) -> anyhow::Result<(Cluster, MetadataClient, CoordClient)> {
    with_topic(Cluster::start_with(3, 3, config).await?, topic, partitions).await
}

/// Each broker in its own network namespace (tests/src/netlab.rs).
async fn start_isolatable(topic: &str) -> anyhow::Result<(Cluster, MetadataClient, CoordClient)> {
    with_topic(Cluster::start_isolatable(3, 3, BROKER_CONFIG).await?, topic, 1).await
}

async fn with_topic(
    cluster: Cluster,
    topic: &str,
    partitions: u32,
) -> anyhow::Result<(Cluster, MetadataClient, CoordClient)> {
    let metadata = MetadataClient::connect(&cluster.bootstrap(), MetadataConfig::default()).await?;
    let mut t = NewTopic::new(topic, partitions, 3);
    t.configs.insert("min.insync.replicas".into(), "2".into());
    AdminClient::new(metadata.clone()).create_topic(t).await?;
    let coord = cluster.ensemble.client();
    wait_full_isr(&coord, topic, partitions).await?;
    Ok((cluster, metadata, coord))
}

/// Reads every record of `topic` from the beginning until `expected`
/// have arrived (and a little longer, to catch extras).
async fn read_all(
    metadata: &MetadataClient,
    topic: &str,
    partitions: u32,
    expected: usize,
) -> anyhow::Result<Vec<(u32, i64, String)>> {
    let mut consumer = Consumer::new(
        metadata.clone(),
        ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() },
    );
    consumer.assign((0..partitions).map(|p| TopicPartition::new(topic, p)).collect::<Vec<_>>());
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut quiet_since: Option<Instant> = None;
    loop {
        anyhow::ensure!(Instant::now() < deadline, "read only {} of {expected}", out.len());
        let records = consumer.poll(Duration::from_millis(500)).await?;
        if records.is_empty() && out.len() >= expected {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(1) {
                return Ok(out);
            }
            continue;
        }
        quiet_since = None;
        for r in records {
            let value = String::from_utf8(r.value.unwrap_or_default().to_vec())?;
            out.push((r.partition, r.offset, value));
        }
    }
}

/// A producer sending numbered records as fast as they are acknowledged
/// (a bounded window in flight), recording each acknowledgement.
/// (record number, partition, offset, when acknowledged).
type Ack = (u64, u32, i64, Instant);

struct Load {
    acked: Arc<Mutex<Vec<Ack>>>,
    errors: Arc<Mutex<Vec<String>>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(metadata: &MetadataClient, topic: &str) -> anyhow::Result<Load> {
        let producer = Producer::new(metadata.clone(), ProducerConfig::default())?;
        let acked = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
        let (tx, mut rx) = mpsc::channel(256);
        let topic = topic.to_string();
        let sender = tokio::spawn(async move {
            let mut i = 0u64;
            while !*stop_rx.borrow() {
                let value = Bytes::from(format!("r{i:08}"));
                let key = Bytes::from(format!("k{}", i % 16));
                match producer.send(&topic, Some(key), Some(value), Vec::new(), None).await {
                    Ok(d) => {
                        if tx.send((i, d)).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing_error(&format!("send {i}: {e}"));
                        break;
                    }
                }
                i += 1;
                if i.is_multiple_of(64) {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                        _ = stop_rx.changed() => {}
                    }
                }
            }
            producer.flush().await;
            producer.close().await;
        });
        let (a, e) = (acked.clone(), errors.clone());
        let task = tokio::spawn(async move {
            while let Some((i, d)) = rx.recv().await {
                match d.await {
                    Ok(m) => a.lock().unwrap().push((i, m.partition, m.offset, Instant::now())),
                    Err(err) => e.lock().unwrap().push(format!("record {i}: {err}")),
                }
            }
            let _ = sender.await;
        });
        Ok(Load { acked, errors, stop, task })
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    async fn wait_acked_after(&self, t: Instant, timeout: Duration) -> anyhow::Result<Instant> {
        eventually("an acknowledged write after the fault", timeout, || {
            let acked = self.acked.clone();
            async move {
                let at = acked.lock().unwrap().iter().rev().map(|a| a.3).find(|at| *at > t);
                at.ok_or_else(|| anyhow::anyhow!("none yet"))
            }
        })
        .await
    }

    async fn finish(self) -> anyhow::Result<(Vec<Ack>, Vec<String>)> {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(120), self.task).await??;
        let acked = std::mem::take(&mut *self.acked.lock().unwrap());
        let errors = std::mem::take(&mut *self.errors.lock().unwrap());
        Ok((acked, errors))
    }
}

fn tracing_error(msg: &str) {
    eprintln!("load: {msg}");
}

/// Every acknowledged record is in the log exactly once, at the offset it
/// was acknowledged with, and each partition holds the records in send
/// order.
fn check_exactly_once(acked: &[Ack], read: &[(u32, i64, String)]) -> anyhow::Result<()> {
    let mut by_value: BTreeMap<&str, Vec<(u32, i64)>> = BTreeMap::new();
    for (p, o, v) in read {
        by_value.entry(v.as_str()).or_default().push((*p, *o));
    }
    let dupes: Vec<_> = by_value.iter().filter(|(_, at)| at.len() > 1).take(5).collect();
    anyhow::ensure!(dupes.is_empty(), "records stored twice: {dupes:?}");
    for (i, p, o, _) in acked {
        let value = format!("r{i:08}");
        let at = by_value.get(value.as_str());
        anyhow::ensure!(at == Some(&vec![(*p, *o)]), "acknowledged {value} at {p}/{o}, found {at:?}");
    }
    let mut last: BTreeMap<u32, &str> = BTreeMap::new();
    let mut sorted: Vec<&(u32, i64, String)> = read.iter().collect();
    sorted.sort_by_key(|(p, o, _)| (*p, *o));
    for (p, _, v) in sorted {
        if let Some(prev) = last.get(p) {
            anyhow::ensure!(*prev < v.as_str(), "partition {p}: {v} after {prev}");
        }
        last.insert(*p, v);
    }
    Ok(())
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// Kills the partition leader -9 `kills` times (restarting it each time)
/// under an idempotent acks=all producer; checks every acknowledged record
/// is read back exactly once, in order, and reports kill-to-next-ack times.
async fn leader_kills(topic: &str, kills: usize) -> anyhow::Result<()> {
    let (mut cluster, metadata, coord) = start(topic, 1).await?;
    let load = Load::start(&metadata, topic)?;
    eventually("first acknowledgements", Duration::from_secs(30), || {
        let n = load.acked_count();
        async move { if n > 100 { Ok(()) } else { anyhow::bail!("{n} acked") } }
    })
    .await?;
    let mut failovers = Vec::new();
    for round in 0..kills {
        let leader = state(&coord, topic, 0).await?.leader;
        let killed_at = Instant::now();
        cluster.kill9(leader);
        let acked_at = load.wait_acked_after(killed_at, Duration::from_secs(30)).await?;
        failovers.push(acked_at - killed_at);
        eprintln!("round {round}: killed broker {leader}; next acknowledged write after {:?}", acked_at - killed_at);
        cluster.restart(leader).await?;
        wait_full_isr(&coord, topic, 1).await?;
    }
    let (acked, errors) = load.finish().await?;
    anyhow::ensure!(errors.is_empty(), "failed deliveries: {:?}", &errors[..errors.len().min(5)]);
    let read = read_all(&metadata, topic, 1, acked.len()).await?;
    check_exactly_once(&acked, &read)?;
    failovers.sort();
    eprintln!(
        "FIGURE leader_kill_to_next_ack_ms kills={kills} session_timeout_ms=1500 p50={} p99={} max={} records_acked={}",
        percentile(&failovers, 0.5).as_millis(),
        percentile(&failovers, 0.99).as_millis(),
        failovers.last().map_or(0, |d| d.as_millis()),
        acked.len()
    );
    Ok(())
}

/// The partition leader is killed -9 five times in a row (restarted each
/// time) under an idempotent acks=all producer: every acknowledged record
/// is read back exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_records_survive_five_leader_kills() -> anyhow::Result<()> {
    leader_kills("kills", 5).await
}

/// The failover benchmark (scripts/soak): 20 leader kills, or
/// `STRATA_SOAK_KILLS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "soak: run by scripts/soak"]
async fn soak_leader_kills() -> anyhow::Result<()> {
    let kills = std::env::var("STRATA_SOAK_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    leader_kills("soak", kills).await
}

fn one_record_batch(value: &str) -> Bytes {
    let mut b = RecordBatchBuilder::new(Compression::None);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    b.append(now, None, Some(Bytes::copy_from_slice(value.as_bytes()))).unwrap();
    b.build().unwrap()
}

/// One raw Produce to `addr`: the error code of the partition (0 = ok).
async fn produce_raw(addr: &str, topic: &str, value: &str, acks: pb::Acks, timeout_ms: u32) -> anyhow::Result<i32> {
    let mut client = BrokerClient::connect(format!("http://{addr}")).await?;
    let req = pb::ProduceRequest {
        topics: vec![pb::ProduceTopic {
            topic: topic.into(),
            partitions: vec![pb::ProducePartition { partition: 0, records: one_record_batch(value) }],
        }],
        acks: acks as i32,
        timeout_ms,
    };
    let r = tokio::time::timeout(Duration::from_secs(30), client.produce(req)).await??.into_inner();
    Ok(r.topics[0].partitions[0].error.as_ref().map_or(0, |e| e.code))
}

/// With two of three replicas down acks=all writes are refused; nothing
/// acknowledged before is lost when they come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_down_refuse_acks_all_and_lose_nothing() -> anyhow::Result<()> {
    let (mut cluster, metadata, coord) = start("two-down", 1).await?;
    let producer = Producer::new(metadata.clone(), ProducerConfig::default())?;
    let mut acked = Vec::new();
    for i in 0..200u64 {
        let d = producer.send("two-down", None, Some(Bytes::from(format!("r{i:08}"))), Vec::new(), None).await?;
        acked.push((i, d));
    }
    let mut acks = Vec::new();
    for (i, d) in acked {
        let m = d.await?;
        acks.push((i, m.partition, m.offset, Instant::now()));
    }
    producer.close().await;
    let before = state(&coord, "two-down", 0).await?;
    let survivor = before.leader;
    let down: Vec<i32> = (1..=3).filter(|id| *id != survivor).collect();
    for id in &down {
        cluster.kill9(*id);
    }
    eventually("the ISR shrinks to the survivor", Duration::from_secs(30), || {
        let coord = coord.clone();
        async move {
            let s = state(&coord, "two-down", 0).await?;
            anyhow::ensure!(s.isr == vec![survivor], "{s:?}");
            Ok(())
        }
    })
    .await?;
    // The survivor hears of the shrunk ISR a moment after the ensemble has
    // it. Until then it may append and answer NOT_ENOUGH_REPLICAS_AFTER_APPEND
    // (written, not acknowledged, as in Kafka); once it knows, it refuses
    // before appending. Never does it acknowledge.
    let mut refused_before_append = Vec::new();
    for attempt in 0.. {
        anyhow::ensure!(attempt < 50, "the survivor never refused before appending");
        let value = format!("refused-{attempt}");
        let code = produce_raw(&cluster.broker_addr(survivor), "two-down", &value, pb::Acks::All, 2000).await?;
        if code == ErrorCode::NotEnoughReplicas as i32 {
            refused_before_append.push(value);
            break;
        }
        assert_eq!(code, ErrorCode::NotEnoughReplicasAfterAppend as i32, "acks=all with one in-sync replica");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Now the survivor dies too and the others come back: they must not
    // lead (they left the ISR) until the survivor returns, and nothing
    // acknowledged is lost.
    cluster.kill9(survivor);
    for id in &down {
        cluster.restart(*id).await?;
    }
    cluster.restart(survivor).await?;
    wait_full_isr(&coord, "two-down", 1).await?;
    let read = read_all(&metadata, "two-down", 1, acks.len()).await?;
    check_exactly_once(&acks, &read)?;
    assert!(
        !read.iter().any(|(_, _, v)| refused_before_append.contains(v)),
        "a write refused before appending is not stored"
    );
    Ok(())
}

/// A follower that stops (SIGSTOP: no fetches, no keep-alives) leaves the
/// ISR while acks=all writes go on; resumed, it catches up and rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_follower_leaves_the_isr_and_rejoins() -> anyhow::Result<()> {
    let (mut cluster, metadata, coord) = start("stall", 1).await?;
    let load = Load::start(&metadata, "stall")?;
    let s = state(&coord, "stall", 0).await?;
    let follower = *s.isr.iter().find(|id| **id != s.leader).unwrap();
    cluster.process(follower).unwrap().pause();
    let paused_at = Instant::now();
    eventually("the stalled follower leaves the ISR", Duration::from_secs(30), || {
        let coord = coord.clone();
        async move {
            let s = state(&coord, "stall", 0).await?;
            anyhow::ensure!(!s.isr.contains(&follower), "{s:?}");
            Ok(())
        }
    })
    .await?;
    load.wait_acked_after(Instant::now(), Duration::from_secs(30)).await?;
    eprintln!("follower {follower} left the ISR {:?} after the stop; writes go on", paused_at.elapsed());
    cluster.process(follower).unwrap().resume();
    wait_full_isr(&coord, "stall", 1).await?;
    let (acked, errors) = load.finish().await?;
    anyhow::ensure!(errors.is_empty(), "failed deliveries: {:?}", &errors[..errors.len().min(5)]);
    let read = read_all(&metadata, "stall", 1, acked.len()).await?;
    check_exactly_once(&acked, &read)?;
    Ok(())
}

/// A leader that its followers cannot reach and that then stalls (cut
/// proxy, then SIGSTOP: a zombie, as after a long pause) is replaced; on
/// waking it accepts no write, since it cannot show the ensemble still
/// holds its session, and its unreplicated tail is dropped when it rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_zombie_leader_is_fenced_and_truncates_its_tail() -> anyhow::Result<()> {
    let (mut cluster, metadata, coord) = start("fenced", 1).await?;
    let producer = Producer::new(metadata.clone(), ProducerConfig::default())?;
    let mut acks = Vec::new();
    for i in 0..20u64 {
        let m = producer.send("fenced", None, Some(Bytes::from(format!("r{i:08}"))), Vec::new(), None).await?.await?;
        acks.push((i, m.partition, m.offset, Instant::now()));
    }
    let old = state(&coord, "fenced", 0).await?.leader;
    let direct = cluster.brokers[&old].bound.expect("bound").to_string();
    // Followers reach the leader through its proxy only: cut, they cannot
    // fetch, so acks=1 lands on the old leader alone and acks=all cannot
    // complete.
    cluster.brokers[&old].proxy.cut();
    let zombie = produce_raw(&direct, "fenced", "zombie", pb::Acks::Leader, 1000).await?;
    assert_eq!(zombie, 0, "acks=1 is the leader's alone to answer");
    let all = produce_raw(&direct, "fenced", "never", pb::Acks::All, 300).await?;
    assert_eq!(all, ErrorCode::RequestTimedOut as i32, "acks=all cannot complete without the followers");
    cluster.process(old).unwrap().pause();
    eventually("a new leader", Duration::from_secs(30), || {
        let coord = coord.clone();
        async move {
            let s = state(&coord, "fenced", 0).await?;
            anyhow::ensure!(s.leader >= 0 && s.leader != old, "{s:?}");
            Ok(())
        }
    })
    .await?;
    for i in 20..40u64 {
        let m = producer.send("fenced", None, Some(Bytes::from(format!("r{i:08}"))), Vec::new(), None).await?.await?;
        acks.push((i, m.partition, m.offset, Instant::now()));
    }
    producer.close().await;
    // Woken, the old leader may not have heard of the new one yet; it
    // still refuses every write.
    cluster.process(old).unwrap().resume();
    for acks in [pb::Acks::Leader, pb::Acks::All] {
        let code = produce_raw(&direct, "fenced", "late", acks, 1000).await?;
        assert_ne!(code, 0, "a leader whose session may have expired takes no writes ({acks:?})");
    }
    cluster.brokers[&old].proxy.heal();
    wait_full_isr(&coord, "fenced", 1).await?;
    // The preferred leader (the old one) takes over again once in sync, and
    // serves the new leader's log: the zombie write is gone.
    eventually("the old leader leads again", Duration::from_secs(30), || {
        let coord = coord.clone();
        async move {
            let s = state(&coord, "fenced", 0).await?;
            anyhow::ensure!(s.leader == old, "{s:?}");
            Ok(())
        }
    })
    .await?;
    let read = match read_all(&metadata, "fenced", 1, acks.len()).await {
        Ok(r) => r,
        Err(e) => {
            for id in 1..=3 {
                eprintln!("==== broker {id}\n{}", cluster.process(id).map(|p| p.log_text()).unwrap_or_default());
            }
            return Err(e);
        }
    };
    check_exactly_once(&acks, &read)?;
    assert!(!read.iter().any(|(_, _, v)| v == "zombie" || v == "never" || v == "late"), "{read:?}");
    assert_eq!(read.len(), acks.len());
    Ok(())
}

/// SIGTERM each broker in turn under load (controlled shutdown moves its
/// leaderships first): no record lost, no non-retriable client error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_under_load_loses_nothing() -> anyhow::Result<()> {
    let (mut cluster, metadata, coord) = start("rolling", 3).await?;
    let load = Load::start(&metadata, "rolling")?;
    for id in 1..=3 {
        let started = Instant::now();
        assert_eq!(cluster.terminate(id), Some(0), "broker {id} stops cleanly");
        eprintln!("broker {id} stopped in {:?}", started.elapsed());
        cluster.restart(id).await?;
        wait_full_isr(&coord, "rolling", 3).await?;
        load.wait_acked_after(Instant::now(), Duration::from_secs(30)).await?;
    }
    let (acked, errors) = load.finish().await?;
    anyhow::ensure!(errors.is_empty(), "failed deliveries: {:?}", &errors[..errors.len().min(5)]);
    let read = read_all(&metadata, "rolling", 3, acked.len()).await?;
    check_exactly_once(&acked, &read)?;
    Ok(())
}

/// Without the periodic pass (a long check interval), leadership returns to
/// the preferred replica only when an operator asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preferred_leaders_return_on_demand() -> anyhow::Result<()> {
    let config = BROKER_CONFIG
        .replace("leader_imbalance_check_interval_ms = 2000", "leader_imbalance_check_interval_ms = 3600000");
    let (mut cluster, metadata, coord) = start_with("pref", 2, &config).await?;
    let preferred = state(&coord, "pref", 0).await?.leader;
    cluster.kill9(preferred);
    eventually("leadership moves off the killed broker", Duration::from_secs(30), || {
        let coord = coord.clone();
        async move {
            let s = state(&coord, "pref", 0).await?;
            anyhow::ensure!(s.leader >= 0 && s.leader != preferred, "{s:?}");
            Ok(())
        }
    })
    .await?;
    cluster.restart(preferred).await?;
    wait_full_isr(&coord, "pref", 2).await?;
    assert_ne!(state(&coord, "pref", 0).await?.leader, preferred, "no automatic move back with a long interval");
    let (on_preferred, not) = AdminClient::new(metadata.clone()).elect_preferred_leaders(&["pref".to_string()]).await?;
    assert_eq!((on_preferred, not), (2, 0));
    assert_eq!(state(&coord, "pref", 0).await?.leader, preferred);
    Ok(())
}

/// A follower whose network is cut (its veth pulled: no fetches, no
/// ensemble) leaves the ISR while acks=all writes go on; reconnected, it
/// catches up and rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_cut_off_the_network_leaves_the_isr_and_rejoins() -> anyhow::Result<()> {
    let (cluster, metadata, coord) = start_isolatable("netcut").await?;
    let load = Load::start(&metadata, "netcut")?;
    let s = state(&coord, "netcut", 0).await?;
    let follower = *s.isr.iter().find(|id| **id != s.leader).unwrap();
    let host = cluster.brokers[&follower].net.as_ref().expect("namespaced broker");
    host.cut()?;
    eventually("the cut-off follower leaves the ISR", Duration::from_secs(30), || {
        let coord = coord.clone();
        async move {
            let s = state(&coord, "netcut", 0).await?;
            anyhow::ensure!(!s.isr.contains(&follower), "{s:?}");
            Ok(())
        }
    })
    .await?;
    load.wait_acked_after(Instant::now(), Duration::from_secs(30)).await?;
    host.heal()?;
    wait_full_isr(&coord, "netcut", 1).await?;
    load.wait_acked_after(Instant::now(), Duration::from_secs(30)).await?;
    let (acked, errors) = load.finish().await?;
    anyhow::ensure!(errors.is_empty(), "failed deliveries: {:?}", &errors[..errors.len().min(5)]);
    let read = read_all(&metadata, "netcut", 1, acked.len()).await?;
    check_exactly_once(&acked, &read)?;
    Ok(())
}

/// A leader cut off from the ensemble (iptables in its namespace) and from
/// its followers stops taking writes once its session may have expired; the
/// new leader's log wins and the old leader drops its unreplicated tail.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_cut_off_the_ensemble_is_fenced_and_truncates_its_tail() -> anyhow::Result<()> {
    let (cluster, metadata, coord) = start_isolatable("enscut").await?;
    let producer = Producer::new(metadata.clone(), ProducerConfig::default())?;
    let mut acks = Vec::new();
    for i in 0..20u64 {
        let m = producer.send("enscut", None, Some(Bytes::from(format!("r{i:08}"))), Vec::new(), None).await?.await?;
        acks.push((i, m.partition, m.offset, Instant::now()));
    }
    let old = state(&coord, "enscut", 0).await?.leader;
    let node = &cluster.brokers[&old];
    let host = node.net.as_ref().expect("namespaced broker");
    let direct = node.bound.expect("bound").to_string();
    let hub = cluster.lab.as_ref().expect("lab").hub();
    let coord_ports: Vec<u16> = cluster
        .ensemble
        .client_addrs()
        .iter()
        .map(|a| a.parse::<std::net::SocketAddr>().map(|a| a.port()))
        .collect::<Result<_, _>>()?;
    // Followers reach the leader only through its proxy: cut, they cannot
    // fetch. The ensemble is cut inside the leader's namespace.
    node.proxy.cut();
    host.block_tcp_to(hub, &coord_ports)?;
    let zombie = produce_raw(&direct, "enscut", "zombie", pb::Acks::Leader, 1000).await?;
    assert_eq!(zombie, 0, "acks=1 is the leader's alone to answer while its lease holds");
    let all = produce_raw(&direct, "enscut", "never", pb::Acks::All, 300).await?;
    assert_ne!(all, 0, "acks=all cannot complete without the followers");
    eventually("a new leader", Duration::from_secs(30), || {
        let coord = coord.clone();
        async move {
            let s = state(&coord, "enscut", 0).await?;
            anyhow::ensure!(s.leader >= 0 && s.leader != old, "{s:?}");
            Ok(())
        }
    })
    .await?;
    for acks_mode in [pb::Acks::Leader, pb::Acks::All] {
        let code = produce_raw(&direct, "enscut", "late", acks_mode, 1000).await?;
        assert_ne!(code, 0, "cut off from the ensemble, the old leader takes no writes ({acks_mode:?})");
    }
    for i in 20..40u64 {
        let m = producer.send("enscut", None, Some(Bytes::from(format!("r{i:08}"))), Vec::new(), None).await?.await?;
        acks.push((i, m.partition, m.offset, Instant::now()));
    }
    producer.close().await;
    host.unblock_all()?;
    node.proxy.heal();
    wait_full_isr(&coord, "enscut", 1).await?;
    let (on_preferred, _) = AdminClient::new(metadata.clone()).elect_preferred_leaders(&["enscut".to_string()]).await?;
    assert_eq!(on_preferred, 1);
    assert_eq!(state(&coord, "enscut", 0).await?.leader, old, "the old leader leads again, from the new log");
    let read = read_all(&metadata, "enscut", 1, acks.len()).await?;
    check_exactly_once(&acks, &read)?;
    assert!(!read.iter().any(|(_, _, v)| v == "zombie" || v == "never" || v == "late"), "{read:?}");
    assert_eq!(read.len(), acks.len());
    Ok(())
}

/// With `unclean.leader.election.enable=true`, a replica that left the ISR
/// may lead when no in-sync replica is left, losing what it missed: the
/// partition comes back rather than staying offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unclean_election_brings_back_an_out_of_sync_replica() -> anyhow::Result<()> {
    let cluster = Cluster::start_with(3, 3, BROKER_CONFIG).await?;
    let metadata = MetadataClient::connect(&cluster.bootstrap(), MetadataConfig::default()).await?;
    let mut t = NewTopic::new("unclean", 1, 3);
    t.configs.insert("unclean.leader.election.enable".into(), "true".into());
    AdminClient::new(metadata.clone()).create_topic(t).await?;
    let coord = cluster.ensemble.client();
    wait_full_isr(&coord, "unclean", 1).await?;
    let mut cluster = cluster;
    let s = state(&coord, "unclean", 0).await?;
    let leader = s.leader;
    let behind = *s.isr.iter().find(|id| **id != leader).unwrap();
    let other = *s.isr.iter().find(|id| **id != leader && **id != behind).unwrap();
    cluster.kill9(behind);
    eventually("the killed follower leaves the ISR", Duration::from_secs(30), || {
        let coord = coord.clone();
        async move {
            let s = state(&coord, "unclean", 0).await?;
            anyhow::ensure!(!s.isr.contains(&behind), "{s:?}");
            Ok(())
        }
    })
    .await?;
    let leader_addr = cluster.broker_addr(leader);
    for i in 0..5 {
        assert_eq!(produce_raw(&leader_addr, "unclean", &format!("missed-{i}"), pb::Acks::All, 5000).await?, 0);
    }
    cluster.kill9(leader);
    cluster.kill9(other);
    cluster.restart(behind).await?;
    eventually("the out-of-sync replica leads", Duration::from_secs(30), || {
        let coord = coord.clone();
        async move {
            let s = state(&coord, "unclean", 0).await?;
            anyhow::ensure!(s.leader == behind && s.isr == vec![behind], "{s:?}");
            Ok(())
        }
    })
    .await?;
    let code = produce_raw(&cluster.broker_addr(behind), "unclean", "after", pb::Acks::Leader, 5000).await?;
    assert_eq!(code, 0, "the partition takes writes again");
    let read = read_all(&metadata, "unclean", 1, 1).await?;
    let values: Vec<&str> = read.iter().map(|(_, _, v)| v.as_str()).collect();
    assert_eq!(values, ["after"], "what the new leader never had is gone, as unclean election allows");
    Ok(())
}
