//! `strata produce TOPIC`: one record per stdin line.

use std::time::Duration;

use anyhow::bail;
use bytes::Bytes;
use clap::{Args, ValueEnum};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::BrokerArgs;
use crate::metadata::{MetadataClient, MetadataConfig};
use crate::producer::{Acks, Compression, Producer, ProducerConfig};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AcksArg {
    #[value(name = "0")]
    None,
    #[value(name = "1")]
    Leader,
    #[value(name = "all")]
    All,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompressionArg {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    pub topic: String,
    /// Split each line into key and value at the first occurrence of this.
    #[arg(long)]
    pub key_separator: Option<String>,
    #[arg(long, value_enum, default_value = "all")]
    pub acks: AcksArg,
    #[arg(long, value_enum, default_value = "none")]
    pub compression: CompressionArg,
    /// Send every record to this partition instead of the partitioner's choice.
    #[arg(long)]
    pub partition: Option<u32>,
    /// Give up on a record after this many seconds.
    #[arg(long, default_value_t = 30)]
    pub delivery_timeout: u64,
}

pub async fn run(args: &BrokerArgs, p: ProduceArgs) -> anyhow::Result<()> {
    let metadata = MetadataClient::connect(&args.addrs(), MetadataConfig::default()).await?;
    // Fail fast and plainly on a missing topic instead of after max_block.
    metadata
        .wait_for_topic(&p.topic, Duration::from_secs(5))
        .await
        .map_err(|e| anyhow::anyhow!("cannot produce to {}: {e}", p.topic))?;
    let acks = match p.acks {
        AcksArg::None => Acks::None,
        AcksArg::Leader => Acks::Leader,
        AcksArg::All => Acks::All,
    };
    let mut config = ProducerConfig { acks, ..ProducerConfig::default() };
    config.accumulator.compression = match p.compression {
        CompressionArg::None => Compression::None,
        CompressionArg::Gzip => Compression::Gzip,
        CompressionArg::Snappy => Compression::Snappy,
        CompressionArg::Lz4 => Compression::Lz4,
        CompressionArg::Zstd => Compression::Zstd,
    };
    config.accumulator.delivery_timeout = Duration::from_secs(p.delivery_timeout);
    let producer = Producer::new(metadata, config);
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut pending = Vec::new();
    let mut failed = 0u64;
    let mut first_error = None;
    let mut sent = 0u64;
    while let Some(line) = lines.next_line().await? {
        let (key, value) = match &p.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(Bytes::from(k.to_string())), Bytes::from(v.to_string())),
                None => (None, Bytes::from(line)),
            },
            None => (None, Bytes::from(line)),
        };
        let record = crate::producer::Record { timestamp: now_ms(), key, value: Some(value), headers: Vec::new() };
        match producer.send_record(&p.topic, p.partition, record).await {
            Ok(delivery) => pending.push(delivery),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
        sent += 1;
        // Collect finished deliveries now and then so memory stays flat.
        if pending.len() >= 10_000 {
            for d in pending.drain(..) {
                if let Err(e) = d.await {
                    failed += 1;
                    first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
    producer.flush().await;
    for d in pending {
        if let Err(e) = d.await {
            failed += 1;
            first_error.get_or_insert_with(|| e.to_string());
        }
    }
    producer.close().await;
    if args.json {
        println!("{}", json!({ "topic": p.topic, "records": sent, "delivered": sent - failed, "failed": failed }));
    }
    if failed > 0 {
        bail!("{failed} of {sent} records were not delivered to {}: {}", p.topic, first_error.unwrap_or_default());
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
