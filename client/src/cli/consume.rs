//! `strata consume TOPIC`: print records, one per line.

use std::io::Write;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use super::BrokerArgs;
use crate::consumer::{Consumer, ConsumerConfig, OffsetReset, TopicPartition};
use crate::metadata::{MetadataClient, MetadataConfig};

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Start at the oldest record instead of new records only.
    #[arg(long)]
    pub from_beginning: bool,
    /// Stop after this many records.
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Stop when no record arrived for this many seconds.
    #[arg(long)]
    pub idle_timeout: Option<u64>,
    /// Only this partition.
    #[arg(long)]
    pub partition: Option<u32>,
    /// Print KEY<separator>VALUE.
    #[arg(long)]
    pub print_key: bool,
    #[arg(long, default_value = "\t")]
    pub key_separator: String,
    /// Consumer group: not available yet (consumer groups are a later slice).
    #[arg(long)]
    pub group: Option<String>,
}

pub async fn run(args: &BrokerArgs, c: ConsumeArgs) -> anyhow::Result<()> {
    if c.group.is_some() {
        anyhow::bail!("consumer groups are not available in this version; consume without --group");
    }
    let metadata = MetadataClient::connect(&args.addrs(), MetadataConfig::default()).await?;
    let topic = metadata.wait_for_topic(&c.topic, Duration::from_secs(10)).await?;
    let partitions: Vec<u32> = match c.partition {
        Some(p) => vec![p],
        None => (0..topic.partitions.len() as u32).collect(),
    };
    let config = ConsumerConfig {
        auto_offset_reset: if c.from_beginning { OffsetReset::Earliest } else { OffsetReset::Latest },
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(metadata, config);
    let tps: Vec<TopicPartition> = partitions.iter().map(|p| TopicPartition::new(c.topic.clone(), *p)).collect();
    consumer.assign(tps.clone());
    if c.from_beginning {
        consumer.seek_to_beginning(tps)?;
    }
    let mut printed = 0u64;
    let mut last_record = Instant::now();
    let stdout = std::io::stdout();
    loop {
        if c.max_messages.is_some_and(|m| printed >= m) {
            break;
        }
        if c.idle_timeout.is_some_and(|t| last_record.elapsed() >= Duration::from_secs(t)) {
            break;
        }
        let poll = tokio::select! {
            r = consumer.poll(Duration::from_millis(500)) => r?,
            _ = tokio::signal::ctrl_c() => break,
        };
        if !poll.is_empty() {
            last_record = Instant::now();
        }
        let mut out = stdout.lock();
        for r in poll {
            if c.max_messages.is_some_and(|m| printed >= m) {
                break;
            }
            let value = r.value.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            if args.json {
                let key = r.key.as_deref().map(|k| String::from_utf8_lossy(k).to_string());
                writeln!(
                    out,
                    "{}",
                    json!({ "partition": r.partition, "offset": r.offset, "timestamp": r.timestamp, "key": key, "value": value })
                )?;
            } else if c.print_key {
                let key = r.key.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                writeln!(out, "{key}{}{value}", c.key_separator)?;
            } else {
                writeln!(out, "{value}")?;
            }
            printed += 1;
        }
        out.flush()?;
    }
    Ok(())
}
