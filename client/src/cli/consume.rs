//! `strata consume TOPIC`: print records, one per line; with `--group`, as
//! a member of a consumer group sharing the topic's partitions.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use serde_json::json;

use super::BrokerArgs;
use crate::consumer::{Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, TopicPartition};
use crate::group::{Assignor, GroupConfig, GroupConsumer};
use crate::metadata::{MetadataClient, MetadataConfig};

/// Automatic commit interval of `strata consume --group`, in ms.
pub const DEFAULT_AUTO_COMMIT_INTERVAL_MS: u64 = 1000;

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Start at the oldest record instead of new records only (with
    /// --group: for partitions the group has no committed offset for).
    #[arg(long)]
    pub from_beginning: bool,
    /// Stop after this many records.
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Stop when no record arrived for this many seconds.
    #[arg(long)]
    pub idle_timeout: Option<u64>,
    /// Only this partition.
    #[arg(long, conflicts_with = "group")]
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
    /// Consume as a member of this consumer group: the group's members
    /// share the topic's partitions, and progress is committed (after the
    /// records are printed) so a restart goes on where it stopped.
    #[arg(long)]
    pub group: Option<String>,
    /// Static membership (with --group): a member restarted with the same
    /// id within the session timeout keeps its partitions, no rebalance.
    #[arg(long, requires = "group", value_name = "ID")]
    pub instance_id: Option<String>,
    /// How partitions are spread (with --group): range, roundrobin or
    /// cooperative-sticky (the default). All members must agree.
    #[arg(long, requires = "group", value_name = "NAME")]
    pub assignor: Option<Assignor>,
    /// How often the positions of printed records are committed (with
    /// --group), in milliseconds [default: 1000].
    #[arg(long, requires = "group", value_name = "MS")]
    pub auto_commit_interval_ms: Option<u64>,
}

/// Writes records as the flags ask.
struct Printer<'a> {
    json: bool,
    format: Option<&'a str>,
    key_delimiter: Option<&'a str>,
}

impl<'a> Printer<'a> {
    fn new(args: &BrokerArgs, c: &'a ConsumeArgs) -> Printer<'a> {
        Printer {
            json: args.json,
            format: c.format.as_deref(),
            key_delimiter: c.key_delimiter.as_deref().or(c.print_key.then_some(c.key_separator.as_str())),
        }
    }

    fn write(&self, out: &mut impl Write, r: &ConsumerRecord) -> std::io::Result<()> {
        let value = r.value.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
        if self.json {
            let key = r.key.as_deref().map(|k| String::from_utf8_lossy(k).to_string());
            writeln!(
                out,
                "{}",
                json!({ "partition": r.partition, "offset": r.offset, "timestamp": r.timestamp, "key": key, "value": value })
            )
        } else if let Some(format) = self.format {
            out.write_all(&render(format, r))
        } else if let Some(delimiter) = self.key_delimiter {
            let key = r.key.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            writeln!(out, "{key}{delimiter}{value}")
        } else {
            writeln!(out, "{value}")
        }
    }
}

pub async fn run(args: &BrokerArgs, c: ConsumeArgs) -> anyhow::Result<()> {
    if let Some(group) = c.group.clone() {
        return run_group(args, &c, &group).await;
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
    let printer = Printer::new(args, &c);
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
            printer.write(&mut out, &r)?;
            printed += 1;
        }
        out.flush()?;
    }
    Ok(())
}

/// Set on the first Ctrl-C or SIGTERM, so the loop stops between polls and
/// the member commits and leaves; a second Ctrl-C exits at once.
fn stop_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminate => {}
        }
        set.store(true, Ordering::SeqCst);
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    });
    flag
}

/// The group settings the flags ask for.
fn group_config(c: &ConsumeArgs, group: &str) -> GroupConfig {
    GroupConfig {
        instance_id: c.instance_id.clone(),
        assignor: c.assignor.unwrap_or_default(),
        auto_commit_interval: Duration::from_millis(
            c.auto_commit_interval_ms.unwrap_or(DEFAULT_AUTO_COMMIT_INTERVAL_MS),
        ),
        ..GroupConfig::new(group)
    }
}

/// At least once: a poll's records are printed and flushed before the next
/// poll, which is when their positions become committable; records past
/// `--max-messages` are put back (a seek) so they are not committed.
async fn run_group(args: &BrokerArgs, c: &ConsumeArgs, group: &str) -> anyhow::Result<()> {
    let metadata = MetadataClient::connect(&args.addrs(), MetadataConfig::default()).await?;
    metadata.wait_for_topic(&c.topic, Duration::from_secs(10)).await?;
    let config = ConsumerConfig {
        auto_offset_reset: if c.from_beginning { OffsetReset::Earliest } else { OffsetReset::Latest },
        ..ConsumerConfig::default()
    };
    let mut consumer = GroupConsumer::new(metadata, config, group_config(c, group));
    consumer.subscribe(&[c.topic.as_str()]).await.with_context(|| format!("cannot join group {group}"))?;
    let stop = stop_flag();
    let printer = Printer::new(args, c);
    let mut printed = 0u64;
    let mut last_record = Instant::now();
    let stdout = std::io::stdout();
    let mut stdout_failed = false;
    let outcome: anyhow::Result<()> = async {
        loop {
            if stop.load(Ordering::SeqCst) || c.max_messages.is_some_and(|m| printed >= m) {
                return Ok(());
            }
            if c.idle_timeout.is_some_and(|t| last_record.elapsed() >= Duration::from_secs(t)) {
                return Ok(());
            }
            let records = consumer.poll(Duration::from_millis(500)).await?;
            if !records.is_empty() {
                last_record = Instant::now();
            }
            let mut unprinted: BTreeMap<TopicPartition, i64> = BTreeMap::new();
            let mut out = stdout.lock();
            for r in records {
                if c.max_messages.is_some_and(|m| printed >= m) {
                    unprinted.entry(TopicPartition::new(&*r.topic, r.partition)).or_insert(r.offset);
                    continue;
                }
                // A failed write (say, a closed pipe) ends the process
                // without committing: what was not printed is not lost.
                if let Err(e) = printer.write(&mut out, &r) {
                    stdout_failed = true;
                    return Err(anyhow::Error::new(e).context("cannot write to stdout"));
                }
                printed += 1;
            }
            if let Err(e) = out.flush() {
                stdout_failed = true;
                return Err(anyhow::Error::new(e).context("cannot write to stdout"));
            }
            drop(out);
            for (tp, offset) in unprinted {
                consumer.seek(tp, offset)?;
            }
        }
    }
    .await;
    if stdout_failed {
        return outcome;
    }
    let closed = consumer.close().await.with_context(|| format!("cannot commit and leave group {group}"));
    outcome.and(closed)
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

    fn consume_args(args: &[&str]) -> Result<ConsumeArgs, clap::Error> {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from(["strata", "consume"].iter().chain(args.iter()).copied())?;
        match cli.command {
            crate::cli::Command::Consume { consume, .. } => Ok(consume),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn group_flags_parse_and_need_a_group() {
        let c = consume_args(&[
            "orders",
            "--group",
            "billing",
            "--from-beginning",
            "--instance-id",
            "host-a",
            "--assignor",
            "range",
            "--auto-commit-interval-ms",
            "200",
            "-f",
            "%s\\n",
        ])
        .expect("parses");
        let config = group_config(&c, "billing");
        assert_eq!(config.group_id, "billing");
        assert_eq!(config.instance_id.as_deref(), Some("host-a"));
        assert_eq!(config.assignor, Assignor::Range);
        assert_eq!(config.auto_commit_interval, Duration::from_millis(200));
        assert!(config.enable_auto_commit);

        let c = consume_args(&["orders", "--group", "g"]).expect("parses");
        let config = group_config(&c, "g");
        assert_eq!(config.auto_commit_interval, Duration::from_millis(DEFAULT_AUTO_COMMIT_INTERVAL_MS));
        assert_eq!(config.assignor, Assignor::CooperativeSticky);

        assert!(consume_args(&["orders", "--instance-id", "x"]).is_err(), "needs --group");
        assert!(consume_args(&["orders", "--auto-commit-interval-ms", "5"]).is_err(), "needs --group");
        assert!(consume_args(&["orders", "--group", "g", "--partition", "1"]).is_err(), "a group assigns partitions");
        assert!(consume_args(&["orders", "--group", "g", "--assignor", "sticky"]).is_err());
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
