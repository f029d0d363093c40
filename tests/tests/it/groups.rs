//! Consumer groups end to end against real processes (3 coordinators,
//! 3 brokers): rebalancing on join and kill -9, publish-subscribe and queue
//! semantics, coordinator failover, zombie fencing, and the `strata group`
//! commands agreeing with what was produced and consumed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_client::ClientError;
use strata_client::admin::{AdminClient, NewTopic};
use strata_client::consumer::{ConsumerConfig, OffsetReset, TopicPartition};
use strata_client::group::{GroupConfig, GroupConsumer};
use strata_client::metadata::{MetadataClient, MetadataConfig};
use strata_client::producer::{Producer, ProducerConfig};
use strata_coord_client::CoordClient;
use strata_tests::process::ChildProcess;
use strata_tests::wait::eventually;
use strata_tests::{Cluster, binary};

/// A broker's registration expires 1.5 s after its last keep-alive, so a
/// killed coordinator broker is replaced within a test's patience.
const BROKER_CONFIG: &str = "session_timeout_ms = 1500
replica_lag_time_max_ms = 2000
";

async fn start(topic: &str, partitions: u32) -> anyhow::Result<(Cluster, MetadataClient, CoordClient)> {
    let cluster = Cluster::start_with(3, 3, BROKER_CONFIG).await?;
    let metadata = MetadataClient::connect(&cluster.bootstrap(), MetadataConfig::default()).await?;
    create_topic(&metadata, topic, partitions).await?;
    let coord = cluster.ensemble.client();
    Ok((cluster, metadata, coord))
}

async fn create_topic(metadata: &MetadataClient, topic: &str, partitions: u32) -> anyhow::Result<()> {
    let mut t = NewTopic::new(topic, partitions, 3);
    t.configs.insert("min.insync.replicas".into(), "2".into());
    AdminClient::new(metadata.clone()).create_topic(t).await?;
    Ok(())
}

type Partitions = BTreeSet<(String, u32)>;

/// The group's state as its coordinator last wrote it to the ensemble.
#[derive(Debug, Clone, Default)]
struct GroupState {
    generation: i64,
    coordinator_id: i64,
    /// member id → (owned, revoking)
    members: BTreeMap<String, (Partitions, Partitions)>,
}

impl GroupState {
    fn owned_count(&self) -> usize {
        self.members.values().map(|(o, _)| o.len()).sum()
    }

    fn revoking_count(&self) -> usize {
        self.members.values().map(|(_, r)| r.len()).sum()
    }

    /// Every member owns `per_member` partitions (each count in the set),
    /// `total` in all, with no revocation pending and no partition twice.
    fn settled(&self, members: usize, total: usize) -> bool {
        let all: BTreeSet<_> = self.members.values().flat_map(|(o, _)| o.iter().cloned()).collect();
        self.members.len() == members
            && self.owned_count() == total
            && all.len() == total
            && self.revoking_count() == 0
            && self.members.values().all(|(o, _)| o.len().abs_diff(total / members) <= 1)
    }
}

fn partitions_of(v: &serde_json::Value) -> Partitions {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|tp| Some((tp.get(0)?.as_str()?.to_string(), u32::try_from(tp.get(1)?.as_u64()?).ok()?)))
                .collect()
        })
        .unwrap_or_default()
}

async fn group_state(coord: &CoordClient, group: &str) -> anyhow::Result<GroupState> {
    let (data, _) = coord.get(&format!("/groups/{group}/state")).await?;
    let v: serde_json::Value = serde_json::from_slice(&data)?;
    let mut state = GroupState {
        generation: v["generation"].as_i64().unwrap_or(-1),
        coordinator_id: v["coordinator_id"].as_i64().unwrap_or(-1),
        members: BTreeMap::new(),
    };
    for m in v["members"].as_array().into_iter().flatten() {
        let id = m["member_id"].as_str().unwrap_or_default().to_string();
        state.members.insert(id, (partitions_of(&m["owned"]), partitions_of(&m["revoking"])));
    }
    Ok(state)
}

async fn wait_settled(
    coord: &CoordClient,
    group: &str,
    members: usize,
    total: usize,
    timeout: Duration,
) -> anyhow::Result<GroupState> {
    eventually(&format!("{group}: {members} members sharing {total} partitions"), timeout, || async {
        let s = group_state(coord, group).await?;
        anyhow::ensure!(s.settled(members, total), "{s:?}");
        Ok(s)
    })
    .await
}

/// Produces `rec-{n}` for n in `range`, keyed by n, with acks=all.
async fn produce_range(metadata: &MetadataClient, topic: &str, range: std::ops::Range<u64>) -> anyhow::Result<()> {
    let producer = Producer::new(metadata.clone(), ProducerConfig::default())?;
    let mut deliveries = Vec::new();
    for n in range {
        let key = Bytes::from(format!("k{n}"));
        let value = Bytes::from(format!("rec-{n}"));
        deliveries.push(producer.send(topic, Some(key), Some(value), Vec::new(), None).await?);
    }
    producer.flush().await;
    for d in deliveries {
        d.await?;
    }
    producer.close().await;
    Ok(())
}

/// A producer writing numbered records until stopped, remembering which
/// were acknowledged.
struct Load {
    acked: Arc<Mutex<BTreeSet<u64>>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Load {
    fn start(metadata: &MetadataClient, topic: &str, per_second: u64) -> anyhow::Result<Load> {
        let producer = Producer::new(metadata.clone(), ProducerConfig::default())?;
        let acked = Arc::new(Mutex::new(BTreeSet::new()));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let topic = topic.to_string();
        let sink = acked.clone();
        let task = tokio::spawn(async move {
            let mut n = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let per_tick = (per_second / 50).max(1);
            let mut settling = Vec::new();
            while !*stop_rx.borrow() {
                tick.tick().await;
                let mut batch = Vec::new();
                for _ in 0..per_tick {
                    let value = Bytes::from(format!("rec-{n}"));
                    let key = Bytes::from(format!("k{n}"));
                    batch.push((n, producer.send(&topic, Some(key), Some(value), Vec::new(), None).await?));
                    n += 1;
                }
                let sink = sink.clone();
                settling.push(tokio::spawn(async move {
                    for (n, d) in batch {
                        if d.await.is_ok() {
                            sink.lock().unwrap().insert(n);
                        }
                    }
                }));
            }
            producer.flush().await;
            for delivery in settling {
                delivery.await?;
            }
            producer.close().await;
            Ok(())
        });
        Ok(Load { acked, stop, task })
    }

    /// Stops sending and returns every acknowledged record once each
    /// delivery has settled.
    async fn stop(self) -> anyhow::Result<BTreeSet<u64>> {
        let _ = self.stop.send(true);
        self.task.await??;
        Ok(self.acked.lock().unwrap().clone())
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }
}

fn record_numbers(text: &str) -> Vec<u64> {
    text.lines().filter_map(|l| l.trim().strip_prefix("rec-")).filter_map(|n| n.parse().ok()).collect()
}

/// A `strata consume --group` process, printing each record's value.
fn spawn_member(cluster: &Cluster, dir: &Path, name: &str, topic: &str, group: &str) -> anyhow::Result<ChildProcess> {
    let args: Vec<String> = [
        "consume",
        topic,
        "--group",
        group,
        "--from-beginning",
        "--bootstrap",
        &cluster.bootstrap().join(","),
        "-f",
        "%s\n",
        "--auto-commit-interval-ms",
        "200",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    ChildProcess::spawn(name, &binary("strata"), &args, &dir.join(format!("{name}.log")))
}

/// Runs a group consumer in a task until `stop`, collecting record numbers,
/// committing after each poll's records are "processed".
fn run_consumer(
    metadata: &MetadataClient,
    topic: &str,
    group: &str,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<anyhow::Result<Vec<u64>>> {
    let mut consumer = GroupConsumer::new(
        metadata.clone(),
        ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() },
        GroupConfig { auto_commit_interval: Duration::from_millis(200), ..GroupConfig::new(group) },
    );
    let topic = topic.to_string();
    tokio::spawn(async move {
        consumer.subscribe(&[topic.as_str()]).await?;
        let mut seen = Vec::new();
        while !*stop.borrow() {
            for r in consumer.poll(Duration::from_millis(200)).await? {
                let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).to_string();
                seen.extend(record_numbers(&value));
            }
        }
        consumer.close().await?;
        Ok(seen)
    })
}

fn duplicates(seen: &[u64]) -> usize {
    let unique: BTreeSet<_> = seen.iter().collect();
    seen.len() - unique.len()
}

/// The first must-show: 4 members of one group on 12 partitions
/// get 3 each; a 5th joins and only the partitions that move change hands;
/// a member killed -9 has its partitions moved at once (its stream breaks).
/// With commits after processing, every acknowledged record is processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_share_partitions_and_rebalance_on_join_and_kill() -> anyhow::Result<()> {
    let (cluster, metadata, coord) = start("orders", 12).await?;
    let dir = tempfile::tempdir()?;
    let load = Load::start(&metadata, "orders", 500)?;

    let mut members = Vec::new();
    for i in 0..4 {
        members.push(spawn_member(&cluster, dir.path(), &format!("member-{i}"), "orders", "billing")?);
    }
    let four = wait_settled(&coord, "billing", 4, 12, Duration::from_secs(60)).await?;
    assert!(four.members.values().all(|(o, _)| o.len() == 3), "3 partitions each: {four:?}");

    let joined_at = Instant::now();
    members.push(spawn_member(&cluster, dir.path(), "member-4", "orders", "billing")?);
    let five = wait_settled(&coord, "billing", 5, 12, Duration::from_secs(30)).await?;
    let join_rebalance = joined_at.elapsed();
    for (id, (owned, _)) in &five.members {
        if let Some((before, _)) = four.members.get(id) {
            // Cooperative: an old member only loses partitions, so the ones
            // it keeps never paused.
            assert!(owned.is_subset(before), "{id} gained or swapped partitions: {before:?} -> {owned:?}");
        }
    }
    let moved: usize = four.members.iter().map(|(id, (before, _))| before.len() - five.members[id].0.len()).sum();
    assert!(moved <= 3, "only the newcomer's share moves, moved {moved}");
    let newcomer_first_record = eventually("the newcomer's first record", Duration::from_secs(30), || async {
        anyhow::ensure!(!record_numbers(&members[4].log_text()).is_empty(), "none yet");
        Ok(joined_at.elapsed())
    })
    .await?;

    let killed_at = Instant::now();
    members[1].kill9();
    let four_again = wait_settled(&coord, "billing", 4, 12, Duration::from_secs(30)).await?;
    let kill_rebalance = killed_at.elapsed();
    // Its stream broke: dynamic members leave at once, well within the
    // (default 10 s) session timeout.
    assert!(kill_rebalance < Duration::from_secs(10), "kill -9 rebalance took {kill_rebalance:?}");
    assert!(four_again.generation > five.generation);

    // Let the survivors consume under load a while longer, then stop.
    let before = load.acked_count();
    eventually("more records acknowledged after the kill", Duration::from_secs(30), || async {
        anyhow::ensure!(load.acked_count() >= before + 500, "{} so far", load.acked_count());
        Ok(())
    })
    .await?;
    let acked = load.stop().await?;
    anyhow::ensure!(acked.len() > 1000, "only {} records acknowledged", acked.len());
    let outputs = eventually("every acknowledged record processed", Duration::from_secs(60), || async {
        let seen: Vec<u64> = members.iter().flat_map(|m| record_numbers(&m.log_text())).collect();
        let unique: BTreeSet<u64> = seen.iter().copied().collect();
        let missing = acked.difference(&unique).count();
        anyhow::ensure!(missing == 0, "{missing} acknowledged records not processed yet");
        Ok(seen)
    })
    .await?;
    eprintln!(
        "groups: join→settled {join_rebalance:?}, join→first record {newcomer_first_record:?}, kill→settled \
         {kill_rebalance:?}; {} acknowledged, {} processed, {} duplicates",
        acked.len(),
        outputs.len(),
        duplicates(&outputs)
    );
    Ok(())
}

/// Two groups on one topic each get every record (publish-subscribe); the
/// members of one group share them (queue), each record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn groups_are_publish_subscribe_and_members_are_a_queue() -> anyhow::Result<()> {
    let (_cluster, metadata, coord) = start("events", 6).await?;
    produce_range(&metadata, "events", 0..600).await?;
    let all: BTreeSet<u64> = (0..600).collect();

    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let audit = run_consumer(&metadata, "events", "audit", stop_rx.clone());
    let queue: Vec<_> = (0..3).map(|_| run_consumer(&metadata, "events", "workers", stop_rx.clone())).collect();
    wait_settled(&coord, "workers", 3, 6, Duration::from_secs(60)).await?;
    // Every record committed by both groups means both consumed them all.
    eventually("both groups committed to the end", Duration::from_secs(60), || async {
        for group in ["audit", "workers"] {
            let committed = committed_total(&coord, group, "events", 6).await?;
            anyhow::ensure!(committed == 600, "{group} committed {committed} of 600");
        }
        Ok(())
    })
    .await?;
    let _ = stop.send(true);
    let audit_seen = audit.await??;
    let mut queue_seen = Vec::new();
    let mut per_member = Vec::new();
    for member in queue {
        let seen = member.await??;
        per_member.push(seen.len());
        queue_seen.extend(seen);
    }
    assert_eq!(audit_seen.iter().copied().collect::<BTreeSet<_>>(), all, "audit group misses records");
    assert_eq!(queue_seen.iter().copied().collect::<BTreeSet<_>>(), all, "worker group misses records");
    assert_eq!(duplicates(&audit_seen), 0);
    // Handing a partition over commits its position first, so sharing
    // never repeats a record.
    assert_eq!(duplicates(&queue_seen), 0, "per member: {per_member:?}");
    assert_eq!(per_member.iter().filter(|n| **n > 0).count(), 3, "every worker got a share: {per_member:?}");
    Ok(())
}

/// Sum of committed offsets of `group` over the topic's partitions, read
/// from the ensemble.
async fn committed_total(coord: &CoordClient, group: &str, topic: &str, partitions: u32) -> anyhow::Result<i64> {
    let mut total = 0;
    for p in 0..partitions {
        match coord.get(&format!("/groups/{group}/offsets/{topic}/{p}")).await {
            Ok((data, _)) => {
                let v: serde_json::Value = serde_json::from_slice(&data)?;
                total += v["offset"].as_i64().unwrap_or(0);
            }
            Err(strata_coord_client::CoordError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(total)
}

/// kill -9 the group's coordinator broker while the group consumes: another
/// broker takes the group over from the ensemble and the members go on
/// from their committed offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_survives_its_coordinator_being_killed() -> anyhow::Result<()> {
    let (mut cluster, metadata, coord) = start("jobs", 4).await?;
    let load = Load::start(&metadata, "jobs", 300)?;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let consumers: Vec<_> = (0..2).map(|_| run_consumer(&metadata, "jobs", "crunchers", stop_rx.clone())).collect();
    let before = wait_settled(&coord, "crunchers", 2, 4, Duration::from_secs(60)).await?;
    let old = i32::try_from(before.coordinator_id)?;
    anyhow::ensure!(old > 0, "no coordinator recorded: {before:?}");
    // Commits flowed before the fault.
    eventually("offsets committed", Duration::from_secs(30), || async {
        anyhow::ensure!(committed_total(&coord, "crunchers", "jobs", 4).await? > 0, "none yet");
        Ok(())
    })
    .await?;

    let killed_at = Instant::now();
    cluster.kill9(old);
    let after = eventually("another broker coordinates the group", Duration::from_secs(30), || async {
        let s = group_state(&coord, "crunchers").await?;
        anyhow::ensure!(s.coordinator_id != i64::from(old) && s.settled(2, 4), "{s:?}");
        Ok(s)
    })
    .await?;
    let takeover = killed_at.elapsed();
    let committed_at_takeover = committed_total(&coord, "crunchers", "jobs", 4).await?;
    // Commits go on through the new coordinator.
    eventually("commits through the new coordinator", Duration::from_secs(30), || async {
        let now = committed_total(&coord, "crunchers", "jobs", 4).await?;
        anyhow::ensure!(now > committed_at_takeover, "still {now}");
        Ok(())
    })
    .await?;

    let acked = load.stop().await?;
    let total = i64::try_from(acked.len())?;
    eventually("the group committed every record", Duration::from_secs(60), || async {
        let committed = committed_total(&coord, "crunchers", "jobs", 4).await?;
        anyhow::ensure!(committed >= total, "committed {committed} of {total}");
        Ok(())
    })
    .await?;
    let _ = stop.send(true);
    let mut seen = Vec::new();
    for c in consumers {
        seen.extend(c.await??);
    }
    let unique: BTreeSet<u64> = seen.iter().copied().collect();
    let missing: Vec<_> = acked.difference(&unique).take(10).collect();
    assert!(missing.is_empty(), "acknowledged but never consumed: {missing:?}");
    eprintln!(
        "groups: coordinator {old} killed, broker {} took over in {takeover:?}; {} records, {} duplicates",
        after.coordinator_id,
        acked.len(),
        duplicates(&seen)
    );
    Ok(())
}

/// A member fenced out of the group (another process took its static
/// instance id) cannot commit: its generation is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_of_an_old_generation_cannot_commit() -> anyhow::Result<()> {
    let (_cluster, metadata, coord) = start("ledger", 2).await?;
    produce_range(&metadata, "ledger", 0..100).await?;
    let config = |instance: &str| GroupConfig {
        instance_id: Some(instance.to_string()),
        enable_auto_commit: false,
        ..GroupConfig::new("accounts")
    };
    let consumer_config = ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() };
    let mut zombie = GroupConsumer::new(metadata.clone(), consumer_config.clone(), config("host-a"));
    zombie.subscribe(&["ledger"]).await?;
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while got == 0 {
        anyhow::ensure!(Instant::now() < deadline, "the first member got no records");
        got += zombie.poll(Duration::from_millis(200)).await?.len();
    }
    zombie.commit_sync().await?;
    let committed_by_zombie = committed_total(&coord, "accounts", "ledger", 2).await?;

    // The same instance id joins again from another "process": the old
    // member is fenced.
    let mut successor = GroupConsumer::new(metadata.clone(), consumer_config, config("host-a"));
    successor.subscribe(&["ledger"]).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while successor.assignment().len() != 2 {
        anyhow::ensure!(Instant::now() < deadline, "the successor owns {:?}", successor.assignment());
        successor.poll(Duration::from_millis(100)).await?;
    }
    // Drain the zombie's buffered records so its positions move past what
    // it committed, then try to commit them.
    let _ = zombie.poll(Duration::from_millis(200)).await;
    let stale = TopicPartition::new("ledger", 0);
    let result = zombie.commit_offsets_sync(&[(stale, 100)]).await;
    match result {
        Err(ClientError::IllegalGeneration(_) | ClientError::UnknownMemberId(_) | ClientError::FencedInstanceId(_)) => {
        }
        other => panic!("a fenced member's commit must fail with a fencing error, got {other:?}"),
    }
    assert_eq!(
        committed_total(&coord, "accounts", "ledger", 2).await?,
        committed_by_zombie,
        "the zombie's commit landed"
    );
    let committed: HashMap<_, _> = successor.committed(&[TopicPartition::new("ledger", 0)]).await?;
    assert_ne!(committed.get(&TopicPartition::new("ledger", 0)).copied().flatten(), Some(100));
    Ok(())
}

/// One member for the rebalance benchmark: reports its first record, runs
/// until aborted (an abort drops the consumer without leaving, as a crash
/// does: its stream breaks).
fn bench_member(
    metadata: &MetadataClient,
    topic: &str,
    group: &str,
    first_record: tokio::sync::mpsc::UnboundedSender<Instant>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let mut consumer = GroupConsumer::new(
        metadata.clone(),
        ConsumerConfig::default(),
        GroupConfig { auto_commit_interval: Duration::from_millis(500), ..GroupConfig::new(group) },
    );
    let topic = topic.to_string();
    tokio::spawn(async move {
        consumer.subscribe(&[topic.as_str()]).await?;
        let mut reported = false;
        loop {
            let records = consumer.poll(Duration::from_millis(200)).await?;
            if !records.is_empty() && !reported {
                reported = true;
                let _ = first_record.send(Instant::now());
            }
        }
    })
}

/// The benchmark (not a timed test; `scripts/bench-groups` runs it):
/// for 1 → 16 members on 64 partitions, the time from a join to the
/// newcomer's first record and to a settled group, and from a member's
/// crash to full reassignment; then offset commit throughput.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: run by scripts/bench-groups"]
async fn bench_rebalance_and_commit() -> anyhow::Result<()> {
    let (_cluster, metadata, coord) = start("bench", 64).await?;
    let load = Load::start(&metadata, "bench", 2000)?;
    let mut rows = Vec::new();
    for n in [1usize, 2, 4, 8, 16] {
        let group = format!("bench-{n}");
        let mut members = Vec::new();
        for _ in 0..n {
            let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
            members.push(bench_member(&metadata, "bench", &group, tx));
        }
        wait_settled(&coord, &group, n, 64, Duration::from_secs(120)).await?;
        let (tx, mut first) = tokio::sync::mpsc::unbounded_channel();
        let joined_at = Instant::now();
        members.push(bench_member(&metadata, "bench", &group, tx));
        wait_settled(&coord, &group, n + 1, 64, Duration::from_secs(60)).await?;
        let join_settled = joined_at.elapsed();
        let first_at = tokio::time::timeout(Duration::from_secs(60), first.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("newcomer ended"))?;
        let join_first = first_at - joined_at;
        let crashed_at = Instant::now();
        members.remove(0).abort();
        wait_settled(&coord, &group, n, 64, Duration::from_secs(60)).await?;
        let crash_settled = crashed_at.elapsed();
        for m in members {
            m.abort();
        }
        rows.push((n, join_first, join_settled, crash_settled));
    }
    load.stop().await?;

    // Offset commits: one member owning all 64 partitions commits one
    // partition per call, then all 64 per call.
    let mut committer = GroupConsumer::new(
        metadata.clone(),
        ConsumerConfig::default(),
        GroupConfig { enable_auto_commit: false, ..GroupConfig::new("bench-commit") },
    );
    committer.subscribe(&["bench"]).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while committer.assignment().len() < 64 {
        anyhow::ensure!(Instant::now() < deadline, "committer owns {}", committer.assignment().len());
        committer.poll(Duration::from_millis(100)).await?;
    }
    let window = Duration::from_secs(5);
    let started = Instant::now();
    let mut single = 0u64;
    while started.elapsed() < window {
        let p = u32::try_from(single % 64)?;
        committer.commit_offsets_sync(&[(TopicPartition::new("bench", p), 1)]).await?;
        single += 1;
    }
    let single_rate = single as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut batches = 0u64;
    let all: Vec<_> = (0..64).map(|p| (TopicPartition::new("bench", p), 1)).collect();
    while started.elapsed() < window {
        committer.commit_offsets_sync(&all).await?;
        batches += 1;
    }
    let batch_rate = batches as f64 / started.elapsed().as_secs_f64();
    committer.close().await?;

    // 16 members committing their own 4 partitions each, concurrently: the
    // coordinator writes queued commits in one transaction.
    let mut committers = Vec::new();
    for _ in 0..16 {
        let mut c = GroupConsumer::new(
            metadata.clone(),
            ConsumerConfig::default(),
            GroupConfig { enable_auto_commit: false, ..GroupConfig::new("bench-commit-16") },
        );
        c.subscribe(&["bench"]).await?;
        committers.push(c);
    }
    // Revocations are answered inside poll, so every member polls until
    // the whole group has settled.
    let (settled_tx, settled_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for mut c in committers {
        let settled = settled_rx.clone();
        tasks.push(tokio::spawn(async move {
            while !*settled.borrow() {
                c.poll(Duration::from_millis(50)).await?;
            }
            let mine: Vec<_> = c.assignment().into_iter().map(|tp| (tp, 1)).collect();
            let started = Instant::now();
            let mut n = 0u64;
            while started.elapsed() < window {
                c.commit_offsets_sync(&mine).await?;
                n += 1;
            }
            c.close().await?;
            anyhow::Ok((n, started.elapsed()))
        }));
    }
    wait_settled(&coord, "bench-commit-16", 16, 64, Duration::from_secs(60)).await?;
    let _ = settled_tx.send(true);
    let mut concurrent = 0.0;
    for t in tasks {
        let (n, took) = t.await??;
        concurrent += n as f64 / took.as_secs_f64();
    }

    eprintln!("| members | join → first record | join → settled | crash → settled |");
    eprintln!("|---|---|---|---|");
    for (n, first, joined, crashed) in rows {
        eprintln!(
            "| {n} → {} → {n} | {} ms | {} ms | {} ms |",
            n + 1,
            first.as_millis(),
            joined.as_millis(),
            crashed.as_millis()
        );
    }
    eprintln!(
        "offset commits: {single_rate:.0} commits/s of 1 partition; {batch_rate:.0} commits/s of 64 partitions \
         ({:.0} offsets/s)",
        batch_rate * 64.0
    );
    eprintln!(
        "offset commits: 16 members concurrently, 4 partitions each: {concurrent:.0} commits/s ({:.0} offsets/s)",
        concurrent * 4.0
    );
    Ok(())
}

/// Runs the `strata` binary against the cluster and returns its stdout.
fn strata(cluster: &Cluster, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(binary("strata"))
        .args(args)
        .args(["--bootstrap", &cluster.bootstrap().join(",")])
        .env("NO_COLOR", "1")
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "strata {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// (sum of committed offsets, sum of lag, sum of log end offsets, members)
fn describe_sums(cluster: &Cluster, group: &str) -> anyhow::Result<(i64, i64, i64, usize)> {
    let v: serde_json::Value = serde_json::from_str(&strata(cluster, &["group", "describe", group, "--json"])?)?;
    let rows = v["partitions"].as_array().cloned().unwrap_or_default();
    let sum = |field: &str| rows.iter().map(|r| r[field].as_i64().unwrap_or(0)).sum::<i64>();
    let members = v["members"].as_array().map_or(0, Vec::len);
    Ok((sum("committed"), sum("lag"), sum("log_end_offset"), members))
}

/// `strata group describe` lag and `reset-offsets` results agree with what
/// was produced and consumed; a dry run changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn describe_lag_and_reset_offsets_agree_with_the_log() -> anyhow::Result<()> {
    let (cluster, metadata, _coord) = start("ledger", 3).await?;
    produce_range(&metadata, "ledger", 0..300).await?;
    let consume = |max: &str| -> anyhow::Result<Vec<u64>> {
        let out = strata(
            &cluster,
            &["consume", "ledger", "--group", "audit", "--from-beginning", "--max-messages", max, "-f", "%s\n"],
        )?;
        Ok(record_numbers(&out))
    };
    // `cluster status` shows the partitions' health at a glance.
    let coordinators = cluster.ensemble.client_addrs().join(",");
    let status = strata(&cluster, &["cluster", "status", "--json", "--coordinators", &coordinators])?;
    let status: serde_json::Value = serde_json::from_str(&status)?;
    assert_eq!(status["partitions"], 3, "{status}");
    assert_eq!(status["offline_partitions"], 0, "{status}");
    let first = consume("120")?;
    assert_eq!(first.len(), 120);
    assert_eq!(describe_sums(&cluster, "audit")?, (120, 180, 300, 0), "committed, lag, log end, members");

    let plan = strata(&cluster, &["group", "reset-offsets", "audit", "--topic", "ledger", "--to-earliest", "--json"])?;
    let plan: serde_json::Value = serde_json::from_str(&plan)?;
    assert_eq!(plan["executed"], false);
    assert!(plan["partitions"].as_array().is_some_and(|p| p.len() == 3 && p.iter().all(|r| r["new"] == 0)), "{plan}");
    assert_eq!(describe_sums(&cluster, "audit")?.0, 120, "a dry run changes nothing");

    let reset = |how: &[&str]| -> anyhow::Result<(i64, i64, i64, usize)> {
        let mut args = vec!["group", "reset-offsets", "audit", "--execute"];
        args.extend_from_slice(how);
        strata(&cluster, &args)?;
        describe_sums(&cluster, "audit")
    };
    assert_eq!(reset(&["--topic", "ledger", "--to-earliest"])?, (0, 300, 300, 0));
    assert_eq!(reset(&["--topic", "ledger", "--shift-by", "10"])?, (30, 270, 300, 0));
    assert_eq!(reset(&["--topic", "ledger", "--to-latest"])?, (300, 0, 300, 0));
    assert_eq!(reset(&["--topic", "ledger", "--to-datetime", "1970-01-01T00:00:00Z"])?, (0, 300, 300, 0));
    assert_eq!(reset(&["--topic", "ledger", "--to-datetime", "2999-01-01T00:00:00Z"])?, (300, 0, 300, 0));
    // Partition 0 alone goes back to offset 5: exactly its tail is lag.
    let (committed, lag, _, _) = reset(&["--topic", "ledger:0", "--to-offset", "5"])?;
    assert_eq!(committed + lag, 300);
    // The group reads exactly the lag describe showed, and then has none.
    let again = consume(&lag.to_string())?;
    assert_eq!(i64::try_from(again.len())?, lag);
    assert_eq!(describe_sums(&cluster, "audit")?.1, 0);

    strata(&cluster, &["group", "delete", "audit"])?;
    let list: serde_json::Value = serde_json::from_str(&strata(&cluster, &["group", "list", "--json"])?)?;
    assert!(list["groups"].as_array().is_some_and(|g| g.iter().all(|g| g["group"] != "audit")), "{list}");
    Ok(())
}

/// Adding partitions to a subscribed topic, or a member changing its
/// subscription, rebalances the group; records in the new partitions are
/// consumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partition_increase_and_subscription_change_rebalance() -> anyhow::Result<()> {
    let (_cluster, metadata, coord) = start("grow", 4).await?;
    create_topic(&metadata, "other", 2).await?;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let members: Vec<_> = (0..2).map(|_| run_consumer(&metadata, "grow", "growers", stop_rx.clone())).collect();
    wait_settled(&coord, "growers", 2, 4, Duration::from_secs(60)).await?;

    AdminClient::new(metadata.clone()).create_partitions("grow", 6).await?;
    let after = wait_settled(&coord, "growers", 2, 6, Duration::from_secs(30)).await?;
    let owned: BTreeSet<u32> = after.members.values().flat_map(|(o, _)| o.iter().map(|(_, p)| *p)).collect();
    assert_eq!(owned, (0..6).collect(), "the new partitions are assigned");
    produce_range(&metadata, "grow", 0..300).await?;
    eventually("every record committed, new partitions included", Duration::from_secs(60), || async {
        let committed = committed_total(&coord, "growers", "grow", 6).await?;
        anyhow::ensure!(committed == 300, "committed {committed} of 300");
        Ok(())
    })
    .await?;
    let _ = stop.send(true);
    let mut seen = Vec::new();
    for m in members {
        seen.extend(m.await??);
    }
    assert_eq!(seen.iter().copied().collect::<BTreeSet<_>>(), (0..300).collect::<BTreeSet<u64>>());

    // A member that subscribes to a second topic takes its partitions.
    let mut wide = GroupConsumer::new(
        metadata.clone(),
        ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() },
        GroupConfig::new("switchers"),
    );
    wide.subscribe(&["grow"]).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while wide.assignment().len() != 6 {
        anyhow::ensure!(Instant::now() < deadline, "owns {:?}", wide.assignment());
        wide.poll(Duration::from_millis(100)).await?;
    }
    wide.subscribe(&["grow", "other"]).await?;
    while wide.assignment().len() != 8 {
        anyhow::ensure!(Instant::now() < deadline, "after subscribing to other: {:?}", wide.assignment());
        wide.poll(Duration::from_millis(100)).await?;
    }
    wide.close().await?;
    Ok(())
}
