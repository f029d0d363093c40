//! Brokers on a real ensemble: registration, controller, topics, produce and
//! fetch over raw gRPC, failures.

use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_proto::broker as pb;
use strata_proto::broker::admin_client::AdminClient;
use strata_proto::broker::broker_client::BrokerClient;
use strata_proto::common::ErrorCode;
use strata_proto::record_batch::{self, Compression, RecordBatchBuilder};
use strata_tests::{Cluster, eventually};
use tokio::io::AsyncWriteExt;
use tonic::transport::Channel;

const LONG: Duration = Duration::from_secs(30);

async fn broker(addr: &str) -> anyhow::Result<BrokerClient<Channel>> {
    Ok(BrokerClient::connect(format!("http://{addr}")).await?.max_decoding_message_size(64 * 1024 * 1024))
}

async fn admin(addr: &str) -> anyhow::Result<AdminClient<Channel>> {
    Ok(AdminClient::connect(format!("http://{addr}")).await?)
}

fn batch(values: &[&str]) -> Bytes {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let mut b = RecordBatchBuilder::new(Compression::None);
    for v in values {
        b.append(now, None, Some(Bytes::copy_from_slice(v.as_bytes()))).expect("record fits");
    }
    b.build().expect("batch builds")
}

async fn metadata(addr: &str) -> anyhow::Result<pb::MetadataResponse> {
    Ok(broker(addr).await?.metadata(pb::MetadataRequest { topics: vec![] }).await?.into_inner())
}

async fn create_topic(cluster: &Cluster, name: &str, partitions: u32) -> anyhow::Result<()> {
    let mut a = admin(&cluster.bootstrap()[0]).await?;
    let r = a
        .create_topics(pb::CreateTopicsRequest {
            topics: vec![pb::CreateTopic {
                name: name.into(),
                partitions,
                replication_factor: 1,
                configs: Default::default(),
            }],
            timeout_ms: 20_000,
        })
        .await?
        .into_inner();
    if let Some(e) = &r.topics[0].error {
        anyhow::bail!("create {name}: {} {}", e.code, e.message);
    }
    Ok(())
}

/// Leader address of (topic, p) according to `addr`'s metadata.
async fn leader_addr(addr: &str, topic: &str, p: u32) -> anyhow::Result<(i32, String)> {
    let md = metadata(addr).await?;
    let t = md.topics.iter().find(|t| t.name == topic).ok_or_else(|| anyhow::anyhow!("no topic"))?;
    let leader = t.partitions[p as usize].leader;
    anyhow::ensure!(leader >= 0, "no leader yet");
    let b = md.brokers.iter().find(|b| b.id == leader).ok_or_else(|| anyhow::anyhow!("leader not live"))?;
    Ok((leader, b.addr.clone()))
}

async fn produce(addr: &str, topic: &str, p: u32, records: Bytes) -> anyhow::Result<pb::ProducePartitionResponse> {
    let r = broker(addr)
        .await?
        .produce(pb::ProduceRequest {
            topics: vec![pb::ProduceTopic {
                topic: topic.into(),
                partitions: vec![pb::ProducePartition { partition: p, records }],
            }],
            acks: pb::Acks::Leader as i32,
            timeout_ms: 10_000,
        })
        .await?
        .into_inner();
    Ok(r.topics[0].partitions[0].clone())
}

fn values_of(records: Bytes) -> Vec<String> {
    let mut out = Vec::new();
    for b in record_batch::batches(records, 64 * 1024 * 1024) {
        let b = b.expect("whole batches");
        for r in b.records().expect("decodes") {
            let r = r.expect("record");
            out.push(String::from_utf8_lossy(&r.value.unwrap_or_default()).to_string());
        }
    }
    out
}

async fn fetch_all(addr: &str, topic: &str, p: u32, from: i64) -> anyhow::Result<pb::FetchPartitionResponse> {
    let r = broker(addr)
        .await?
        .fetch(pb::FetchRequest {
            partitions: vec![pb::FetchPartition {
                topic: topic.into(),
                partition: p,
                fetch_offset: from,
                partition_max_bytes: 16 << 20,
                current_leader_epoch: -1,
            }],
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 16 << 20,
            replica_id: -1,
        })
        .await?
        .into_inner();
    Ok(r.partitions[0].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topic_produce_fetch_and_broker_restart_from_disk() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let any = cluster.bootstrap()[0].clone();
    eventually("3 brokers and a controller", LONG, || {
        let any = any.clone();
        async move {
            let md = metadata(&any).await?;
            anyhow::ensure!(md.brokers.len() == 3 && md.controller_id >= 0, "{md:?}");
            Ok(())
        }
    })
    .await?;
    create_topic(&cluster, "orders", 6).await?;
    let mut leaders = Vec::new();
    for p in 0..6 {
        let (leader, addr) = leader_addr(&any, "orders", p).await?;
        let r = produce(&addr, "orders", p, batch(&[&format!("p{p}-a"), &format!("p{p}-b")])).await?;
        assert!(r.error.is_none(), "{r:?}");
        assert_eq!(r.base_offset, 0);
        let r = produce(&addr, "orders", p, batch(&[&format!("p{p}-c")])).await?;
        assert_eq!(r.base_offset, 2);
        leaders.push(leader);
    }
    let mut counts = std::collections::BTreeMap::new();
    for l in &leaders {
        *counts.entry(*l).or_insert(0) += 1;
    }
    assert_eq!(counts.len(), 3, "partitions spread over all brokers: {leaders:?}");

    // kill -9 the leader of partition 0: its registration vanishes, the
    // metadata stream says so, and it comes back serving from disk.
    let victim = leaders[0];
    let watcher = cluster.bootstrap().into_iter().find(|a| *a != cluster.broker_addr(victim)).expect("another broker");
    let any = watcher.clone();
    let mut watch = broker(&watcher).await?.watch_metadata(pb::MetadataRequest { topics: vec![] }).await?.into_inner();
    let killed = Instant::now();
    cluster.kill9(victim);
    loop {
        let md = tokio::time::timeout(LONG, watch.message()).await??.ok_or_else(|| anyhow::anyhow!("stream ended"))?;
        if md.brokers.iter().all(|b| b.id != victim) {
            break;
        }
    }
    eprintln!("FIGURE broker_loss_seen_ms={}", killed.elapsed().as_millis());
    // Replication factor 1: the partition goes offline; it is never moved
    // to a broker that has none of its data.
    eventually("partition 0 offline", LONG, || {
        let any = any.clone();
        async move {
            let md = metadata(&any).await?;
            let p0 = &md.topics.iter().find(|t| t.name == "orders").expect("topic").partitions[0];
            anyhow::ensure!(p0.leader == -1, "leader {}", p0.leader);
            Ok(())
        }
    })
    .await?;
    cluster.restart(victim).await?;
    let (_, addr) = eventually("partition 0 back online", LONG, || {
        let any = any.clone();
        async move { leader_addr(&any, "orders", 0).await }
    })
    .await?;
    // The leader may answer LEADER_NOT_AVAILABLE until it has opened the
    // log it was just elected for.
    let f = eventually("partition 0 served again", LONG, || {
        let addr = addr.clone();
        async move {
            let f = fetch_all(&addr, "orders", 0, 0).await?;
            anyhow::ensure!(f.error.is_none(), "{:?}", f.error);
            Ok(f)
        }
    })
    .await?;
    assert_eq!(values_of(f.records), vec!["p0-a", "p0-b", "p0-c"]);
    assert_eq!(f.high_watermark, 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn controller_failover_keeps_topic_creation_working() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let any = cluster.bootstrap()[0].clone();
    let controller = eventually("a controller", LONG, || {
        let any = any.clone();
        async move {
            let md = metadata(&any).await?;
            anyhow::ensure!(md.controller_id >= 0 && md.brokers.len() == 3, "no controller yet");
            Ok(md.controller_id)
        }
    })
    .await?;
    create_topic(&cluster, "before", 2).await?;
    let killed = Instant::now();
    cluster.kill9(controller);
    let survivor = cluster.bootstrap().into_iter().find(|a| *a != cluster.broker_addr(controller)).expect("survivor");
    // Creation works again once the dead controller's session has expired
    // and another broker controls.
    eventually("a new controller", LONG, || {
        let survivor = survivor.clone();
        async move {
            let md = metadata(&survivor).await?;
            anyhow::ensure!(md.controller_id >= 0 && md.controller_id != controller, "controller {}", md.controller_id);
            anyhow::ensure!(md.brokers.len() == 2, "{} brokers", md.brokers.len());
            Ok(())
        }
    })
    .await?;
    let mut a = admin(&survivor).await?;
    let r = a
        .create_topics(pb::CreateTopicsRequest {
            topics: vec![pb::CreateTopic {
                name: "after".into(),
                partitions: 2,
                replication_factor: 1,
                configs: Default::default(),
            }],
            timeout_ms: 20_000,
        })
        .await?
        .into_inner();
    assert!(r.topics[0].error.is_none(), "{:?}", r.topics[0].error);
    let took = killed.elapsed();
    eprintln!("FIGURE controller_failover_ms={}", took.as_millis());
    a = admin(&survivor).await?;
    let r = a
        .create_topics(pb::CreateTopicsRequest {
            topics: vec![pb::CreateTopic {
                name: "before".into(),
                partitions: 1,
                replication_factor: 1,
                configs: Default::default(),
            }],
            timeout_ms: 1_000,
        })
        .await?
        .into_inner();
    assert_eq!(r.topics[0].error.as_ref().map(|e| e.code), Some(ErrorCode::TopicAlreadyExists as i32));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_typed_errors_and_the_broker_keeps_serving() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(2).await?;
    create_topic(&cluster, "t", 2).await?;
    let any = cluster.bootstrap()[0].clone();
    let (leader, leader_addr) = leader_addr(&any, "t", 0).await?;
    let other = cluster.bootstrap().into_iter().find(|a| *a != leader_addr).expect("a non-leader");
    let code = |r: &pb::ProducePartitionResponse| r.error.as_ref().map_or(0, |e| e.code);
    // Missing topic.
    let r = produce(&any, "missing", 0, batch(&["x"])).await?;
    assert_eq!(code(&r), ErrorCode::UnknownTopicOrPartition as i32);
    // Not the leader: the error names the leader.
    let r = produce(&other, "t", 0, batch(&["x"])).await?;
    assert_eq!(code(&r), ErrorCode::NotLeaderForPartition as i32);
    assert_eq!(r.error.as_ref().map(|e| e.leader_id), Some(leader));
    // Corrupt batch (flipped payload byte → CRC mismatch), in a request
    // with a good batch before it: nothing is appended.
    let good = batch(&["good"]);
    let mut bad = batch(&["bad"]).to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let mut both = good.to_vec();
    both.extend_from_slice(&bad);
    let r = produce(&leader_addr, "t", 0, Bytes::from(both)).await?;
    assert_eq!(code(&r), ErrorCode::CorruptRecord as i32);
    assert_eq!(fetch_all(&leader_addr, "t", 0, 0).await?.high_watermark, 0, "nothing appended");
    // Garbage that is not a batch at all.
    let r = produce(&leader_addr, "t", 0, Bytes::from_static(b"definitely not a record batch")).await?;
    assert_ne!(code(&r), 0);
    // Over the topic's max.message.bytes. Attempts made before the new
    // limit reaches the leader succeed, so they go to partition 1 and leave
    // partition 0 (checked at the end) untouched.
    let (_, p1_leader) = self::leader_addr(&any, "t", 1).await?;
    let mut a = admin(&any).await?;
    a.alter_configs(pb::AlterConfigsRequest {
        topic: "t".into(),
        set: [("max.message.bytes".to_string(), "1024".to_string())].into_iter().collect(),
        delete: vec![],
    })
    .await?;
    let big = "x".repeat(4096);
    let r = eventually("max.message.bytes to apply", LONG, || {
        let p1_leader = p1_leader.clone();
        let big = big.clone();
        async move {
            let r = produce(&p1_leader, "t", 1, batch(&[&big])).await?;
            anyhow::ensure!(r.error.as_ref().map(|e| e.code) == Some(ErrorCode::MessageTooLarge as i32), "{r:?}");
            Ok(r)
        }
    })
    .await?;
    assert!(r.error.is_some());
    // Fetch out of range.
    let f = fetch_all(&leader_addr, "t", 0, 1000).await?;
    assert_eq!(f.error.as_ref().map(|e| e.code), Some(ErrorCode::OffsetOutOfRange as i32));
    // Garbage on the gRPC port.
    for b in cluster.brokers.values() {
        let addr = b.bound.expect("bound");
        for garbage in
            [&b"GET / HTTP/1.1\r\n\r\n"[..], &[0u8; 1000][..], b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff"]
        {
            if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
                let _ = s.write_all(garbage).await;
                let _ = s.shutdown().await;
            }
        }
    }
    for id in [1, 2] {
        assert!(cluster.process(id).expect("running").is_running(), "broker {id} survived");
    }
    let r = produce(&leader_addr, "t", 0, batch(&["after"])).await?;
    assert!(r.error.is_none(), "{r:?}");
    assert_eq!(values_of(fetch_all(&leader_addr, "t", 0, 0).await?.records), vec!["after"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_id_that_is_live_elsewhere_is_refused() -> anyhow::Result<()> {
    let cluster = Cluster::start(1).await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("broker.toml");
    // A short session so the refusal comes after 2 x 1 s of waiting.
    std::fs::write(&config, "session_timeout_ms = 1000\n")?;
    let out = tokio::process::Command::new(strata_tests::binary("strata-broker"))
        .args(["--id", "1", "--listen", "127.0.0.1:0", "--coordinators"])
        .arg(cluster.ensemble.client_addrs().join(","))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .env("NO_COLOR", "1")
        .output();
    let out = tokio::time::timeout(LONG, out).await??;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("registered by another live process"), "{err}");
    // The original is untouched.
    let md = metadata(&cluster.bootstrap()[0]).await?;
    assert_eq!(md.brokers.len(), 1);
    assert_eq!(md.brokers[0].addr, cluster.broker_addr(1));
    Ok(())
}
