//! `strata perf produce` and `strata perf consume`: load against brokers,
//! with progress, records/s, MB/s and latency percentiles.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;

use crate::admin::{AdminClient, NewTopic};
use crate::cli::DEFAULT_BOOTSTRAP;
use crate::cli::produce::{AcksArg, CompressionArg, producer_config};
use crate::consumer::{Consumer, ConsumerConfig, OffsetReset, TopicPartition};
use crate::error::ClientError;
use crate::metadata::{MetadataClient, MetadataConfig};
use crate::producer::{Compression, Producer};

#[derive(Debug, Args)]
pub struct ProducePerfArgs {
    #[arg(long, env = "STRATA_BOOTSTRAP", default_value = DEFAULT_BOOTSTRAP)]
    pub bootstrap: String,
    #[arg(long)]
    pub topic: String,
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// Records per second across all producers (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub throughput: u64,
    #[arg(long, value_enum, default_value = "1")]
    pub acks: AcksArg,
    #[arg(long, value_enum, default_value = "none")]
    pub compression: CompressionArg,
    /// Turn idempotence off. It is on by default with `--acks all`: each
    /// batch carries a producer id and sequence, so a retry after a lost
    /// answer never writes a record twice. `--acks 1` and `--acks 0` imply
    /// this flag.
    #[arg(long)]
    pub no_idempotence: bool,
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Create the topic with this many partitions if missing.
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Replication factor of the topic if it is created here.
    #[arg(long, default_value_t = 1)]
    pub replication_factor: u32,
    /// `min.insync.replicas` of the topic if it is created here.
    #[arg(long)]
    pub min_insync_replicas: Option<u32>,
    #[arg(long, default_value_t = 262_144)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Also write the same bytes sequentially to a file in this directory and
    /// report the produce rate as a ratio of that raw disk rate.
    #[arg(long)]
    pub compare_disk: Option<std::path::PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConsumePerfArgs {
    #[arg(long, env = "STRATA_BOOTSTRAP", default_value = DEFAULT_BOOTSTRAP)]
    pub bootstrap: String,
    #[arg(long)]
    pub topic: String,
    /// Stop after this many records (from the beginning of every partition).
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    #[arg(long)]
    pub json: bool,
}

fn progress(total: u64, quiet: bool) -> Option<indicatif::ProgressBar> {
    (!quiet).then(|| {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({per_sec})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    })
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

pub async fn produce(a: ProducePerfArgs) -> anyhow::Result<()> {
    let addrs: Vec<String> = a.bootstrap.split(',').map(|s| s.trim().to_string()).collect();
    let metadata = MetadataClient::connect(&addrs, MetadataConfig::default()).await?;
    if metadata.partition_count(&a.topic).is_none() {
        let mut topic = NewTopic::new(a.topic.clone(), a.partitions, a.replication_factor);
        if let Some(n) = a.min_insync_replicas {
            topic.configs.insert("min.insync.replicas".into(), n.to_string());
        }
        match AdminClient::new(metadata.clone()).create_topic(topic).await {
            Ok(()) | Err(ClientError::TopicAlreadyExists(_)) => {}
            Err(e) => return Err(e).context("creating the perf topic"),
        }
    }
    let compression = match a.compression {
        CompressionArg::None => Compression::None,
        CompressionArg::Gzip => Compression::Gzip,
        CompressionArg::Snappy => Compression::Snappy,
        CompressionArg::Lz4 => Compression::Lz4,
        CompressionArg::Zstd => Compression::Zstd,
    };
    let mut config = producer_config(a.acks, a.no_idempotence);
    config.accumulator.compression = compression;
    config.accumulator.batch_size = a.batch_size;
    config.accumulator.linger = Duration::from_millis(a.linger_ms);
    config.accumulator.buffer_memory = config.accumulator.buffer_memory.max(a.batch_size * 64);
    let value = Bytes::from(vec![b'x'; a.record_size]);
    let bar = progress(a.records, a.json);
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let per_producer = a.records / a.producers.max(1) as u64;
    let mut tasks = Vec::new();
    for n in 0..a.producers.max(1) {
        let count = if n == 0 { a.records - per_producer * (a.producers.max(1) as u64 - 1) } else { per_producer };
        let producer = Producer::new(metadata.clone(), config.clone())?;
        let topic = a.topic.clone();
        let value = value.clone();
        let done = done.clone();
        let rate = if a.throughput > 0 { a.throughput as f64 / a.producers.max(1) as f64 } else { 0.0 };
        tasks.push(tokio::spawn(async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, crate::producer::DeliveryFuture)>(100_000);
            let collector = tokio::spawn(async move {
                let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("static bounds");
                let mut failed = 0u64;
                while let Some((t, d)) = rx.recv().await {
                    match d.await {
                        Ok(_) => {
                            let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
                        }
                        Err(_) => failed += 1,
                    }
                }
                (hist, failed)
            });
            let begin = Instant::now();
            for i in 0..count {
                if rate > 0.0 {
                    let due = begin + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let t = Instant::now();
                let d = producer.send(&topic, None, Some(value.clone()), Vec::new(), None).await?;
                if tx.send((t, d)).await.is_err() {
                    break;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            drop(tx);
            producer.flush().await;
            let r = collector.await.map_err(|e| anyhow::anyhow!("collector: {e}"))?;
            producer.close().await;
            anyhow::Ok(r)
        }));
    }
    let ticker = bar.clone().map(|b| {
        let done = done.clone();
        tokio::spawn(async move {
            loop {
                b.set_position(done.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    });
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut failed = 0;
    for t in tasks {
        let (h, f) = t.await??;
        hist.add(h)?;
        failed += f;
    }
    let secs = started.elapsed().as_secs_f64();
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let acked = hist.len();
    let rps = acked as f64 / secs;
    let mbps = rps * a.record_size as f64 / 1e6;
    let disk = match &a.compare_disk {
        Some(dir) => Some(raw_disk_mbps(dir, a.records * a.record_size as u64)?),
        None => None,
    };
    if a.json {
        println!(
            "{}",
            json!({
                "records": acked, "failed": failed, "seconds": secs, "records_per_sec": rps, "mb_per_sec": mbps,
                "p50_ms": ms(&hist, 0.5), "p95_ms": ms(&hist, 0.95), "p99_ms": ms(&hist, 0.99),
                "p999_ms": ms(&hist, 0.999), "max_ms": hist.max() as f64 / 1000.0,
                "raw_disk_mb_per_sec": disk, "ratio_to_raw_disk": disk.map(|d| mbps / d),
            })
        );
    } else {
        println!(
            "{acked} records in {secs:.2} s: {rps:.0} records/s, {mbps:.1} MB/s; latency p50 {:.2} ms, p95 {:.2}, p99 {:.2}, p99.9 {:.2}, max {:.2}; {failed} failed",
            ms(&hist, 0.5),
            ms(&hist, 0.95),
            ms(&hist, 0.99),
            ms(&hist, 0.999),
            hist.max() as f64 / 1000.0
        );
        if let Some(d) = disk {
            println!("raw sequential disk write of the same bytes: {d:.1} MB/s; produce = {:.2} of it", mbps / d);
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} records failed");
    }
    Ok(())
}

/// Sequential write of `bytes` in 1 MiB writes plus one fsync at the end,
/// the same bytes a broker writes without per-batch fsync.
fn raw_disk_mbps(dir: &std::path::Path, bytes: u64) -> anyhow::Result<f64> {
    let path = dir.join(format!("strata-perf-raw-{}", std::process::id()));
    let chunk = vec![b'x'; 1 << 20];
    let start = Instant::now();
    let mut f = std::fs::File::create(&path)?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    let secs = start.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok(bytes as f64 / secs / 1e6)
}

pub async fn consume(a: ConsumePerfArgs) -> anyhow::Result<()> {
    let addrs: Vec<String> = a.bootstrap.split(',').map(|s| s.trim().to_string()).collect();
    let metadata = MetadataClient::connect(&addrs, MetadataConfig::default()).await?;
    let topic = metadata.wait_for_topic(&a.topic, Duration::from_secs(10)).await?;
    let mut consumer = Consumer::new(
        metadata,
        ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() },
    );
    let tps: Vec<TopicPartition> =
        (0..topic.partitions.len() as u32).map(|p| TopicPartition::new(a.topic.clone(), p)).collect();
    consumer.assign(tps.clone());
    consumer.seek_to_beginning(tps)?;
    let bar = progress(a.records, a.json);
    let started = Instant::now();
    let mut records = 0u64;
    let mut bytes = 0u64;
    let mut idle_since = Instant::now();
    while records < a.records {
        let batch = consumer.poll(Duration::from_secs(1)).await?;
        if batch.is_empty() {
            if idle_since.elapsed() > Duration::from_secs(10) {
                anyhow::bail!("only {records} of {} records arrived (10 s without any)", a.records);
            }
            continue;
        }
        idle_since = Instant::now();
        for r in &batch {
            bytes += r.value.as_ref().map_or(0, |v| v.len()) as u64 + r.key.as_ref().map_or(0, |k| k.len()) as u64;
        }
        records += batch.len() as u64;
        if let Some(b) = &bar {
            b.set_position(records.min(a.records));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let rps = records as f64 / secs;
    let mbps = bytes as f64 / secs / 1e6;
    if a.json {
        println!("{}", json!({ "records": records, "seconds": secs, "records_per_sec": rps, "mb_per_sec": mbps }));
    } else {
        println!("{records} records in {secs:.2} s: {rps:.0} records/s, {mbps:.1} MB/s");
    }
    Ok(())
}
