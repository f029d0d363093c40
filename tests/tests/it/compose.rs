//! The container deployment (`deploy/`) end to end: `deploy/up.sh` builds
//! the `strata:local` image and starts 3 coordinators + 3 brokers with
//! compose; the host's `strata` binary and client library then use the
//! published ports (brokers 127.0.0.1:19092-19094, coordinators
//! 127.0.0.1:19181-19183) through a broker and a coordinator stopped and a
//! partition leader cut off the network, and every container's metrics are
//! scraped. `deploy/down.sh` always runs at the end (a drop guard).
//!
//! Needs a Docker engine (CI has one); it fails, with the reason, where
//! `docker info` does. The fixed ports and the container, network and volume
//! names are used by no other test. To keep CI time down the image packages
//! the debug binaries that `scripts/test` builds before running the tests
//! (`cargo build --workspace --bins`), so no cargo build runs here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use strata_client::consumer::{Consumer, ConsumerConfig, OffsetReset, TopicPartition};
use strata_client::metadata::{MetadataClient, MetadataConfig};
use strata_client::producer::{Producer, ProducerConfig, Record};
use strata_coord_client::CoordClient;
use strata_tests::binary;
use strata_tests::scrape::{sample_sum, scrape};
use strata_tests::wait::eventually;

const BROKERS: [&str; 3] = ["127.0.0.1:19092", "127.0.0.1:19093", "127.0.0.1:19094"];
const COORDINATORS: [&str; 3] = ["127.0.0.1:19181", "127.0.0.1:19182", "127.0.0.1:19183"];
/// The compose file's network (`name: strata-net`).
const NETWORK: &str = "strata-net";
const TOPIC: &str = "deployed";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn container(service: &str) -> String {
    format!("strata-{service}")
}

/// Runs a command to completion within `timeout`; its stdout, or an error
/// with its stderr.
async fn run(program: &Path, args: &[&str], stdin: Option<String>, timeout: Duration) -> anyhow::Result<String> {
    use tokio::io::AsyncWriteExt as _;
    let what = format!("{} {}", program.display(), args.join(" "));
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env("STRATA_BOOTSTRAP", BROKERS.join(","))
        .env("STRATA_COORDINATORS", COORDINATORS.join(","))
        .stdin(if stdin.is_some() { std::process::Stdio::piped() } else { std::process::Stdio::null() })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().with_context(|| format!("cannot start `{what}`"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).await?;
    }
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .with_context(|| format!("`{what}` did not finish within {timeout:?}"))??;
    anyhow::ensure!(
        out.status.success(),
        "`{what}` failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn docker(args: &[&str]) -> anyhow::Result<String> {
    run(Path::new("docker"), args, None, Duration::from_secs(90)).await
}

async fn strata(args: &[&str], stdin: Option<String>) -> anyhow::Result<String> {
    run(&binary("strata"), args, stdin, Duration::from_secs(60)).await
}

/// `deploy/down.sh` when dropped, so a failed test leaves nothing running;
/// before that, the containers' last log lines when the test did not pass.
struct Deployment {
    passed: bool,
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if !self.passed {
            for s in SERVICES {
                if let Ok(out) =
                    std::process::Command::new("docker").args(["logs", "--tail", "40", &container(s)]).output()
                {
                    eprintln!(
                        "--- {s}\n{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
        let status = std::process::Command::new("bash").arg(deploy_dir().join("down.sh")).status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("deploy/down.sh failed: {status:?}");
        }
    }
}

const SERVICES: [&str; 6] = ["coordinator-1", "coordinator-2", "coordinator-3", "broker-1", "broker-2", "broker-3"];

async fn ip_of(service: &str) -> anyhow::Result<String> {
    let ip =
        docker(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", &container(service)])
            .await?
            .trim()
            .to_string();
    anyhow::ensure!(!ip.is_empty(), "{service} has no IP address");
    Ok(ip)
}

async fn wait_healthy(services: &[&str]) -> anyhow::Result<()> {
    eventually("containers healthy", Duration::from_secs(90), || async move {
        for s in services {
            let state = docker(&["inspect", "-f", "{{.State.Health.Status}}", &container(s)]).await?;
            anyhow::ensure!(state.trim() == "healthy", "{s} is {}", state.trim());
        }
        Ok(())
    })
    .await
}

/// (leader, isr) of every partition, from `strata topic describe --json`.
async fn describe(bootstrap: &str) -> anyhow::Result<Vec<(i64, usize)>> {
    let out = strata(&["topic", "describe", TOPIC, "--json", "--bootstrap", bootstrap], None).await?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let partitions = v["partitions"].as_array().context("no partitions in describe")?;
    Ok(partitions
        .iter()
        .map(|p| (p["leader"].as_i64().unwrap_or(-1), p["isr"].as_array().map_or(0, Vec::len)))
        .collect())
}

async fn wait_full_isr() -> anyhow::Result<()> {
    eventually("every partition led, with 3 replicas in sync", Duration::from_secs(60), || async {
        let d = describe(&BROKERS.join(",")).await?;
        anyhow::ensure!(d.len() == 3 && d.iter().all(|(l, isr)| *l > 0 && *isr == 3), "{d:?}");
        Ok(())
    })
    .await
}

/// Produces `lines` with `--acks all` through the CLI and reads the whole
/// topic back with it: every record produced so far, each exactly once.
async fn produce_and_consume(all: &mut Vec<String>, lines: Vec<String>) -> anyhow::Result<()> {
    strata(&["produce", TOPIC, "--acks", "all"], Some(lines.iter().map(|l| format!("{l}\n")).collect())).await?;
    all.extend(lines);
    let n = all.len().to_string();
    let out =
        strata(&["consume", TOPIC, "--from-beginning", "--max-messages", &n, "--idle-timeout", "20"], None).await?;
    let mut got: Vec<&str> = out.lines().collect();
    got.sort_unstable();
    let mut want: Vec<&str> = all.iter().map(String::as_str).collect();
    want.sort_unstable();
    anyhow::ensure!(got == want, "consumed {} records, expected {}", got.len(), want.len());
    Ok(())
}

async fn metrics(service: &str) -> anyhow::Result<String> {
    let addr: SocketAddr = format!("{}:9100", ip_of(service).await?).parse()?;
    scrape(addr).await
}

/// Every server's named series, and brokers' sums over the cluster.
async fn check_metrics(min_records_in: f64, want_under_replicated_zero: bool) -> anyhow::Result<()> {
    for s in &SERVICES[..3] {
        let text = metrics(s).await?;
        for name in ["strata_coord_term", "strata_coord_is_leader", "strata_coord_commit_index"] {
            anyhow::ensure!(sample_sum(&text, name, &[]).is_some(), "{s} exports no {name}");
        }
    }
    let (mut records_in, mut bytes_in, mut led, mut under) = (0.0, 0.0, 0.0, 0.0);
    for s in &SERVICES[3..] {
        let text = metrics(s).await?;
        let get = |name: &str| sample_sum(&text, name, &[]).with_context(|| format!("{s} exports no {name}"));
        led += get("strata_broker_partitions_led")?;
        under += get("strata_broker_under_replicated_partitions")?;
        // Counters appear with their first increment: a broker that led
        // no partition that took records has none yet.
        records_in += sample_sum(&text, "strata_broker_records_in_total", &[]).unwrap_or(0.0);
        bytes_in += sample_sum(&text, "strata_broker_bytes_in_total", &[]).unwrap_or(0.0);
    }
    anyhow::ensure!(records_in >= min_records_in, "brokers took {records_in} records in, expected {min_records_in}+");
    anyhow::ensure!(bytes_in >= min_records_in, "brokers took {bytes_in} bytes in");
    anyhow::ensure!(led == 3.0, "brokers lead {led} partitions, expected 3");
    anyhow::ensure!(!want_under_replicated_zero || under == 0.0, "{under} partitions under-replicated");
    Ok(())
}

async fn partition_leader(coord: &CoordClient, p: u32) -> anyhow::Result<i64> {
    let (data, _) = coord.get(&format!("/topics/{TOPIC}/partitions/{p}/state")).await?;
    let v: serde_json::Value = serde_json::from_slice(&data)?;
    v["leader"].as_i64().context("no leader in the partition state")
}

/// An idempotent acks=all producer sending numbered records to one
/// partition as they are acknowledged (a bounded window in flight);
/// (record number, offset, when acknowledged) of each acknowledgement.
struct Load {
    acked: Arc<Mutex<Vec<(u64, i64, Instant)>>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(metadata: &MetadataClient, partition: u32) -> anyhow::Result<Load> {
        // A request to a leader cut off the network fails after 5 s, and
        // the producer retries at the new leader.
        let config = ProducerConfig { request_timeout: Duration::from_secs(5), ..ProducerConfig::default() };
        let producer = Producer::new(metadata.clone(), config)?;
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let (tx, mut rx) = tokio::sync::mpsc::channel(128);
        let sender = tokio::spawn(async move {
            let mut i = 0u64;
            while !*stop_rx.borrow() {
                let value = Some(Bytes::from(format!("p{i:06}")));
                let record = Record { timestamp: now_ms(), key: None, value, headers: Vec::new() };
                let Ok(d) = producer.send_record(TOPIC, Some(partition), record).await else { break };
                if tx.send((i, d)).await.is_err() {
                    break;
                }
                i += 1;
            }
            producer.flush().await;
            producer.close().await;
        });
        let a = acked.clone();
        let task = tokio::spawn(async move {
            while let Some((i, d)) = rx.recv().await {
                if let Ok(m) = d.await {
                    a.lock().unwrap().push((i, m.offset, Instant::now()));
                }
            }
            let _ = sender.await;
        });
        Ok(Load { acked, stop, task })
    }

    async fn wait_acked_after(&self, t: Instant, at_least: usize, what: &str) -> anyhow::Result<()> {
        eventually(what, Duration::from_secs(60), || async {
            let n = self.acked.lock().unwrap().iter().filter(|a| a.2 > t).count();
            anyhow::ensure!(n >= at_least, "{n} acknowledged");
            Ok(())
        })
        .await
    }

    async fn finish(self) -> anyhow::Result<Vec<(u64, i64, Instant)>> {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(60), self.task).await.context("producer did not stop")??;
        Ok(std::mem::take(&mut *self.acked.lock().unwrap()))
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Reads partition `p` from the beginning through `bootstrap` until every
/// acknowledged record is found at the offset it was acknowledged with.
async fn check_acked_readable(bootstrap: &[String], p: u32, acked: &[(u64, i64, Instant)]) -> anyhow::Result<()> {
    let metadata = MetadataClient::connect(bootstrap, MetadataConfig::default()).await?;
    let mut consumer = Consumer::new(
        metadata,
        ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() },
    );
    consumer.assign(vec![TopicPartition::new(TOPIC, p)]);
    let mut missing: BTreeMap<i64, String> = acked.iter().map(|(i, o, _)| (*o, format!("p{i:06}"))).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !missing.is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "{} acknowledged records not readable: {missing:?}", missing.len());
        for r in consumer.poll(Duration::from_millis(500)).await? {
            let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
            if let Some(want) = missing.remove(&r.offset) {
                anyhow::ensure!(value == want, "offset {} holds {value}, acknowledged as {want}", r.offset);
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compose_cluster_serves_the_host_through_stops_and_a_partitioned_leader() -> anyhow::Result<()> {
    let started = Instant::now();
    docker(&["info"]).await.context("this test needs a Docker engine (`docker info` failed)")?;
    let strata_bin = binary("strata");
    let target_dir = strata_bin.parent().and_then(Path::parent).context("target dir")?.to_path_buf();
    let down = deploy_dir().join("down.sh");
    run(Path::new("bash"), &[&down.to_string_lossy()], None, Duration::from_secs(120)).await?;
    let mut deployment = Deployment { passed: false };
    let up = tokio::process::Command::new("bash")
        .arg(deploy_dir().join("up.sh"))
        .env("STRATA_PROFILE", "debug")
        .env("STRATA_SKIP_CARGO", "1")
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("STRATA_UP_TIMEOUT", "120")
        .kill_on_drop(true)
        .status();
    let status = tokio::time::timeout(Duration::from_secs(180), up).await.context("deploy/up.sh took over 180 s")??;
    anyhow::ensure!(status.success(), "deploy/up.sh failed: {status}");
    eprintln!("compose: up after {:?}", started.elapsed());

    // The host's CLI against the published ports; hints from the ensemble
    // name coordinators' private addresses, which the host reaches too.
    strata(&["cluster", "status"], None).await?;
    strata(
        &[
            "topic",
            "create",
            TOPIC,
            "--partitions",
            "3",
            "--replication-factor",
            "3",
            "--config",
            "min.insync.replicas=2",
        ],
        None,
    )
    .await?;
    wait_full_isr().await?;
    let mut all = Vec::new();
    produce_and_consume(&mut all, (0..300).map(|i| format!("a{i:04}")).collect()).await?;
    eventually("metrics of every server", Duration::from_secs(20), || check_metrics(300.0, false)).await?;

    // One broker (leading partition 0) and the ensemble's leader stopped.
    let coord = CoordClient::new(&COORDINATORS.map(String::from))?;
    let broker = partition_leader(&coord, 0).await?;
    let status = coord.status().await?;
    let (broker_svc, coord_svc) = (format!("broker-{broker}"), format!("coordinator-{}", status.leader_id));
    docker(&["stop", "-t", "60", &container(&broker_svc)]).await?;
    docker(&["stop", &container(&coord_svc)]).await?;
    produce_and_consume(&mut all, (0..300).map(|i| format!("b{i:04}")).collect()).await?;
    docker(&["start", &container(&broker_svc), &container(&coord_svc)]).await?;
    wait_healthy(&SERVICES).await?;
    wait_full_isr().await?;
    eprintln!("compose: stop and start done after {:?}", started.elapsed());

    // Partition 0's leader cut off the private network while an acks=all
    // producer writes to it: its published port goes dark too.
    let leader = partition_leader(&coord, 0).await?;
    let leader_svc = format!("broker-{leader}");
    let leader_ip = ip_of(&leader_svc).await?;
    let metadata = MetadataClient::connect(&BROKERS.map(String::from), MetadataConfig::default()).await?;
    let load = Load::start(&metadata, 0)?;
    load.wait_acked_after(started, 100, "acknowledgements before the cut").await?;
    let cut = Instant::now();
    docker(&["network", "disconnect", NETWORK, &container(&leader_svc)]).await?;
    let new_leader = eventually("a new leader for partition 0", Duration::from_secs(60), || async {
        let l = partition_leader(&coord, 0).await?;
        anyhow::ensure!(l > 0 && l != leader, "leader is {l}");
        Ok(l)
    })
    .await?;
    let moved = Instant::now();
    load.wait_acked_after(moved, 100, "acknowledgements from the new leader").await?;
    let acked = load.finish().await?;
    eprintln!("compose: leader {leader} cut, {new_leader} leads after {:?}; {} acknowledged", moved - cut, acked.len());
    let survivors: Vec<String> =
        (1..=3).filter(|id| *id != leader).map(|id| BROKERS[id as usize - 1].to_string()).collect();
    check_acked_readable(&survivors, 0, &acked).await?;
    let alias = leader_svc.as_str();
    docker(&["network", "connect", "--ip", &leader_ip, "--alias", alias, NETWORK, &container(&leader_svc)]).await?;
    wait_full_isr().await?;
    eventually("no under-replicated partitions", Duration::from_secs(60), || check_metrics(1.0, true)).await?;
    eprintln!("compose: passed in {:?}", started.elapsed());
    deployment.passed = true;
    Ok(())
}
