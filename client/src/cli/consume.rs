//! `strata consume TOPIC`: print records, one per line.

use std::io::Write;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use super::BrokerArgs;
use crate::consumer::{Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, TopicPartition};
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
    /// Print keys, separated from values by DELIM (kcat's -K).
    #[arg(short = 'K', value_name = "DELIM")]
    pub key_delimiter: Option<String>,
    /// Output format, as kcat's -f: %s value, %k key, %t topic, %p
    /// partition, %o offset, %T timestamp (ms), %h headers (k=v,...), %S
    /// value size, %K key size, %% a percent sign; \n \t \r \\ escapes.
    /// No newline is added.
    #[arg(short = 'f', long = "format", value_name = "FORMAT")]
    pub format: Option<String>,
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
        let key_delimiter = c.key_delimiter.as_deref().or(c.print_key.then_some(c.key_separator.as_str()));
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
            } else if let Some(format) = &c.format {
                out.write_all(&render(format, &r))?;
            } else if let Some(delimiter) = key_delimiter {
                let key = r.key.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                writeln!(out, "{key}{delimiter}{value}")?;
            } else {
                writeln!(out, "{value}")?;
            }
            printed += 1;
        }
        out.flush()?;
    }
    Ok(())
}

/// One record through a kcat-style format string (see `--format`).
/// Unknown `%x` sequences are printed as they are.
pub fn render(format: &str, r: &ConsumerRecord) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chars = format.chars().peekable();
    let bytes = |b: &Option<bytes::Bytes>| b.as_deref().unwrap_or_default().to_vec();
    while let Some(ch) = chars.next() {
        match (ch, chars.peek().copied()) {
            ('%', Some(spec)) => {
                chars.next();
                match spec {
                    's' => out.extend(bytes(&r.value)),
                    'k' => out.extend(bytes(&r.key)),
                    't' => out.extend(r.topic.as_bytes()),
                    'p' => out.extend(r.partition.to_string().into_bytes()),
                    'o' => out.extend(r.offset.to_string().into_bytes()),
                    'T' => out.extend(r.timestamp.to_string().into_bytes()),
                    'S' => out.extend(r.value.as_ref().map_or(-1, |v| v.len() as i64).to_string().into_bytes()),
                    'K' => out.extend(r.key.as_ref().map_or(-1, |k| k.len() as i64).to_string().into_bytes()),
                    'h' => {
                        let headers: Vec<String> = r
                            .headers
                            .iter()
                            .map(|h| {
                                let v = h.value.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                                format!("{}={v}", h.key)
                            })
                            .collect();
                        out.extend(headers.join(",").into_bytes());
                    }
                    '%' => out.push(b'%'),
                    other => {
                        out.push(b'%');
                        out.extend(other.to_string().into_bytes());
                    }
                }
            }
            ('\\', Some(esc @ ('n' | 't' | 'r' | '\\'))) => {
                chars.next();
                out.push(match esc {
                    'n' => b'\n',
                    't' => b'\t',
                    'r' => b'\r',
                    _ => b'\\',
                });
            }
            (c, _) => {
                let mut buf = [0u8; 4];
                out.extend(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::RecordHeader;

    fn record() -> ConsumerRecord {
        ConsumerRecord {
            topic: "demo".into(),
            partition: 2,
            offset: 41,
            timestamp: 1_700_000_000_123,
            key: Some(bytes::Bytes::from_static(b"user1")),
            value: Some(bytes::Bytes::from_static(b"hello")),
            headers: vec![
                RecordHeader { key: "a".into(), value: Some(bytes::Bytes::from_static(b"1")) },
                RecordHeader { key: "b".into(), value: None },
            ],
        }
    }

    #[test]
    fn renders_kcat_tokens_and_escapes() {
        let out = render("%t/%p@%o %k=%s (%K,%S) [%h] %T 100%% %z\\n", &record());
        assert_eq!(String::from_utf8(out).unwrap(), "demo/2@41 user1=hello (5,5) [a=1,b=] 1700000000123 100% %z\n");
    }

    #[test]
    fn null_keys_and_values_have_size_minus_one_and_print_empty() {
        let r = ConsumerRecord { key: None, value: None, headers: Vec::new(), ..record() };
        assert_eq!(String::from_utf8(render("[%k][%s] %K %S\\t|", &r)).unwrap(), "[][] -1 -1\t|");
    }
}
