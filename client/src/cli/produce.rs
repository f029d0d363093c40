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
    /// Split each line into key and value at the first occurrence of this
    /// (kcat's -K).
    #[arg(long, short = 'K')]
    pub key_separator: Option<String>,
    #[arg(long, value_enum, default_value = "all")]
    pub acks: AcksArg,
    #[arg(long, value_enum, default_value = "none")]
    pub compression: CompressionArg,
    /// Turn idempotence off. It is on by default with `--acks all`: each
    /// batch carries a producer id and sequence, so a retry after a lost
    /// answer never writes a record twice. `--acks 1` and `--acks 0` imply
    /// this flag.
    #[arg(long)]
    pub no_idempotence: bool,
    /// Send every record to this partition instead of the partitioner's choice.
    #[arg(long)]
    pub partition: Option<u32>,
    /// Give up on a record after this many seconds.
    #[arg(long, default_value_t = 30)]
    pub delivery_timeout: u64,
}

/// The producer settings `--acks` and `--no-idempotence` ask for. Like
/// Kafka's console producer, a weaker `--acks` quietly turns idempotence off
/// rather than being refused.
pub(crate) fn producer_config(acks: AcksArg, no_idempotence: bool) -> ProducerConfig {
    let acks = match acks {
        AcksArg::None => Acks::None,
        AcksArg::Leader => Acks::Leader,
        AcksArg::All => Acks::All,
    };
    ProducerConfig { acks, enable_idempotence: !no_idempotence && acks == Acks::All, ..ProducerConfig::default() }
}

pub async fn run(args: &BrokerArgs, p: ProduceArgs) -> anyhow::Result<()> {
    let metadata = MetadataClient::connect(&args.addrs(), MetadataConfig::default()).await?;
    // Fail fast and plainly on a missing topic instead of after max_block.
    metadata
        .wait_for_topic(&p.topic, Duration::from_secs(5))
        .await
        .map_err(|e| anyhow::anyhow!("cannot produce to {}: {e}", p.topic))?;
    let mut config = producer_config(p.acks, p.no_idempotence);
    config.accumulator.compression = match p.compression {
        CompressionArg::None => Compression::None,
        CompressionArg::Gzip => Compression::Gzip,
        CompressionArg::Snappy => Compression::Snappy,
        CompressionArg::Lz4 => Compression::Lz4,
        CompressionArg::Zstd => Compression::Zstd,
    };
    config.accumulator.delivery_timeout = Duration::from_secs(p.delivery_timeout);
    let producer = Producer::new(metadata, config)?;
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};
    use crate::perf::PerfCommand;

    #[test]
    fn weaker_acks_imply_no_idempotence() {
        for (acks, no_idempotence, expected) in [
            (AcksArg::All, false, (Acks::All, true)),
            (AcksArg::All, true, (Acks::All, false)),
            (AcksArg::Leader, false, (Acks::Leader, false)),
            (AcksArg::None, false, (Acks::None, false)),
            (AcksArg::None, true, (Acks::None, false)),
        ] {
            let config = producer_config(acks, no_idempotence);
            assert_eq!((config.acks, config.enable_idempotence), expected, "{acks:?} {no_idempotence}");
            config.validate().expect("never refused");
        }
    }

    #[test]
    fn both_produce_commands_take_the_flag() {
        let cli = Cli::try_parse_from(["strata", "produce", "t", "--no-idempotence"]).expect("parses");
        assert!(matches!(cli.command, Command::Produce { produce, .. } if produce.no_idempotence));
        let cli = Cli::try_parse_from(["strata", "produce", "t"]).expect("parses");
        assert!(matches!(cli.command, Command::Produce { produce, .. } if !produce.no_idempotence));
        let cli =
            Cli::try_parse_from(["strata", "perf", "produce", "--topic", "t", "--no-idempotence"]).expect("parses");
        assert!(matches!(cli.command, Command::Perf { command: PerfCommand::Produce(a) } if a.no_idempotence));
    }
}
