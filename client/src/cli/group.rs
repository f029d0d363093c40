//! `strata group ...`: list, describe, reset-offsets, delete.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use super::BrokerArgs;
use crate::admin::{AdminClient, GroupDescription};
use crate::consumer::{Consumer, ConsumerConfig, TopicPartition};
use crate::error::ClientError;
use crate::group::format_partitions;
use crate::metadata::{MetadataClient, MetadataConfig};

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List consumer groups.
    List,
    /// Show a group's state, members and their partitions, and per
    /// partition the committed offset, log end offset and lag.
    Describe { group: String },
    /// Move a group's committed offsets. Prints the plan; changes nothing
    /// without --execute. The group must have no live members.
    ResetOffsets(ResetOffsetsArgs),
    /// Delete a group without live members, with its committed offsets.
    Delete { group: String },
}

#[derive(Debug, Args)]
pub struct ResetOffsetsArgs {
    pub group: String,
    /// TOPIC (every partition) or TOPIC:P,P,... (repeatable).
    #[arg(long = "topic", required = true, value_name = "TOPIC[:P,P...]", value_parser = parse_topic_spec)]
    pub topics: Vec<TopicSpec>,
    #[command(flatten)]
    pub to: ResetTarget,
    /// Apply the plan (otherwise it is only printed).
    #[arg(long)]
    pub execute: bool,
}

/// Where to move the offsets: exactly one of these.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ResetTarget {
    /// The first offset still in the log.
    #[arg(long)]
    pub to_earliest: bool,
    /// The log end: skip everything not consumed yet.
    #[arg(long)]
    pub to_latest: bool,
    /// This offset (kept within the log: earliest..=latest).
    #[arg(long, value_name = "OFFSET")]
    pub to_offset: Option<i64>,
    /// The first record at or after this time, e.g. 2026-01-31T09:00:00Z
    /// (the log end when no record is that recent).
    #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339_ms)]
    pub to_datetime: Option<i64>,
    /// Move the committed offset by N (negative: back); partitions without
    /// one move from the log end. Kept within the log.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub shift_by: Option<i64>,
}

impl ResetTarget {
    pub fn target(&self) -> ResetTo {
        if self.to_earliest {
            ResetTo::Earliest
        } else if self.to_latest {
            ResetTo::Latest
        } else if let Some(offset) = self.to_offset {
            ResetTo::Offset(offset)
        } else if let Some(ms) = self.to_datetime {
            ResetTo::Timestamp(ms)
        } else {
            ResetTo::ShiftBy(self.shift_by.unwrap_or(0))
        }
    }
}

/// `--topic` value: a topic and, optionally, some of its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub topic: String,
    /// `None`: every partition.
    pub partitions: Option<Vec<u32>>,
}

pub fn parse_topic_spec(s: &str) -> Result<TopicSpec, String> {
    let (topic, partitions) = match s.split_once(':') {
        None => (s.trim(), None),
        Some((topic, list)) => {
            let mut partitions = Vec::new();
            for p in list.split(',').map(str::trim) {
                let n = p.parse::<u32>().map_err(|_| format!("{p:?} in {s:?} is not a partition number"))?;
                if !partitions.contains(&n) {
                    partitions.push(n);
                }
            }
            partitions.sort_unstable();
            (topic.trim(), Some(partitions))
        }
    };
    if topic.is_empty() {
        return Err(format!("{s:?} names no topic (expected TOPIC or TOPIC:P,P,...)"));
    }
    Ok(TopicSpec { topic: topic.to_string(), partitions })
}

/// Where a reset moves offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    Earliest,
    Latest,
    Offset(i64),
    /// Milliseconds since the epoch.
    Timestamp(i64),
    ShiftBy(i64),
}

/// What the plan needs to know of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub partition: TopicPartition,
    pub committed: Option<i64>,
    pub earliest: i64,
    pub latest: i64,
    /// For `Timestamp`: the first offset at or after it, `None` if no
    /// record is that recent.
    pub at_time: Option<i64>,
}

/// One line of a reset plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRow {
    pub partition: TopicPartition,
    pub current: Option<i64>,
    pub new: i64,
}

/// The new committed offset of each partition. Every result lies within
/// the log (earliest..=latest).
pub fn plan_reset(to: ResetTo, partitions: &[PartitionOffsets]) -> Vec<PlanRow> {
    partitions
        .iter()
        .map(|p| {
            let (lo, hi) = (p.earliest.min(p.latest), p.latest);
            let target = match to {
                ResetTo::Earliest => lo,
                ResetTo::Latest => hi,
                ResetTo::Offset(offset) => offset,
                ResetTo::Timestamp(_) => p.at_time.unwrap_or(hi),
                ResetTo::ShiftBy(n) => p.committed.unwrap_or(hi).saturating_add(n),
            };
            PlanRow { partition: p.partition.clone(), current: p.committed, new: target.clamp(lo, hi) }
        })
        .collect()
}

/// Parses an RFC 3339 time (`2026-01-31T09:00:00Z`,
/// `2026-01-31 09:00:00.250+02:00`) into milliseconds since the epoch.
pub fn parse_rfc3339_ms(s: &str) -> Result<i64, String> {
    let t = s.trim();
    // RFC 3339 allows a space for the `T`; chrono's strict parser does not.
    let normalized = match t.as_bytes().get(10) {
        Some(b' ') => format!("{}T{}", &t[..10], &t[11..]),
        _ => t.to_string(),
    };
    chrono::DateTime::parse_from_rfc3339(&normalized)
        .map(|time| time.timestamp_millis())
        .map_err(|e| format!("{s:?} is not an RFC 3339 time ({e}); e.g. 2026-01-31T09:00:00Z"))
}

/// Left-aligned columns, two spaces apart.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = vec![line(headers.to_vec())];
    out.extend(rows.iter().map(|r| line(r.iter().map(String::as_str).collect())));
    out.join("\n")
}

fn dash(v: Option<i64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// The error with advice for the mistakes people make.
fn explain(error: ClientError, group: &str, what: &str) -> anyhow::Error {
    let hint = match &error {
        ClientError::GroupIdNotFound(_) => format!("group {group} does not exist (see `strata group list`)"),
        ClientError::NonEmptyGroup(_) => format!(
            "group {group} has live members; stop its consumers first (`strata group describe {group}` lists them)"
        ),
        _ => return anyhow::Error::new(error).context(format!("cannot {what} group {group}")),
    };
    anyhow::anyhow!("cannot {what} group {group}: {hint}")
}

pub async fn run(args: &BrokerArgs, command: GroupCommand) -> anyhow::Result<()> {
    let metadata = MetadataClient::connect(&args.addrs(), MetadataConfig::default()).await?;
    let admin = AdminClient::new(metadata.clone());
    match command {
        GroupCommand::List => {
            let groups = admin.list_groups().await.context("cannot list groups")?;
            if args.json {
                let list: Vec<_> = groups
                    .iter()
                    .map(|g| json!({ "group": g.group, "state": g.state, "members": g.members, "coordinator_id": g.coordinator_id }))
                    .collect();
                println!("{}", json!({ "groups": list }));
            } else if groups.is_empty() {
                eprintln!("no consumer groups");
            } else {
                let rows: Vec<Vec<String>> = groups
                    .iter()
                    .map(|g| {
                        let coordinator = g.coordinator_id.map_or_else(|| "-".to_string(), |id| id.to_string());
                        vec![g.group.clone(), g.state.clone(), g.members.to_string(), coordinator]
                    })
                    .collect();
                println!("{}", table(&["GROUP", "STATE", "MEMBERS", "COORDINATOR"], &rows));
            }
        }
        GroupCommand::Describe { group } => describe(args, &metadata, &admin, &group).await?,
        GroupCommand::ResetOffsets(reset) => reset_offsets(args, &metadata, &admin, reset).await?,
        GroupCommand::Delete { group } => {
            admin.delete_group(&group).await.map_err(|e| explain(e, &group, "delete"))?;
            if args.json {
                println!("{}", json!({ "group": group, "deleted": true }));
            } else {
                println!("deleted group {group}");
            }
        }
    }
    Ok(())
}

/// A consumer used only for offset lookups.
fn lookups(metadata: &MetadataClient) -> Consumer {
    Consumer::new(
        metadata.clone(),
        ConsumerConfig { request_timeout: Duration::from_secs(10), ..ConsumerConfig::default() },
    )
}

/// One line of `describe`'s partition table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRow {
    pub partition: TopicPartition,
    pub committed: Option<i64>,
    pub log_end: Option<i64>,
    pub lag: Option<i64>,
    pub owner: Option<String>,
    pub revoking: bool,
}

/// Every partition worth showing: committed, owned, being revoked, or in
/// a subscribed topic (`topic_partitions` gives those from the metadata).
pub fn partition_rows(
    d: &GroupDescription,
    topic_partitions: &BTreeMap<String, u32>,
    log_ends: &BTreeMap<TopicPartition, i64>,
) -> Vec<PartitionRow> {
    let mut all: BTreeSet<TopicPartition> = d.offsets.iter().map(|o| o.partition.clone()).collect();
    for m in &d.members {
        all.extend(m.assigned.iter().cloned());
        all.extend(m.revoking.iter().cloned());
        for topic in &m.topics {
            if let Some(n) = topic_partitions.get(topic) {
                all.extend((0..*n).map(|p| TopicPartition::new(topic.clone(), p)));
            }
        }
    }
    let committed: BTreeMap<&TopicPartition, Option<i64>> =
        d.offsets.iter().map(|o| (&o.partition, o.offset)).collect();
    all.into_iter()
        .map(|tp| {
            let committed = committed.get(&tp).copied().flatten();
            let log_end = log_ends.get(&tp).copied();
            let lag = match (committed, log_end) {
                (Some(c), Some(end)) => Some((end - c).max(0)),
                _ => None,
            };
            let revoking = d.members.iter().find(|m| m.revoking.contains(&tp));
            let owner = d.owner(&tp).or(revoking).map(|m| m.member_id.clone());
            PartitionRow { owner, revoking: revoking.is_some(), partition: tp, committed, log_end, lag }
        })
        .collect()
}

async fn describe(
    args: &BrokerArgs,
    metadata: &MetadataClient,
    admin: &AdminClient,
    group: &str,
) -> anyhow::Result<()> {
    let d = admin.describe_group(group).await.map_err(|e| explain(e, group, "describe"))?;
    let snapshot = metadata.current();
    let topic_partitions: BTreeMap<String, u32> =
        snapshot.topics.keys().filter_map(|t| Some((t.clone(), snapshot.partition_count(t)?))).collect();
    // Log ends of the partitions that still exist.
    let rows = partition_rows(&d, &topic_partitions, &BTreeMap::new());
    let existing: Vec<TopicPartition> = rows
        .iter()
        .map(|r| r.partition.clone())
        .filter(|tp| topic_partitions.get(&tp.topic).is_some_and(|n| tp.partition < *n))
        .collect();
    let log_ends: BTreeMap<TopicPartition, i64> = if existing.is_empty() {
        BTreeMap::new()
    } else {
        match lookups(metadata).end_offsets(&existing).await {
            Ok(ends) => ends.into_iter().collect(),
            Err(e) => {
                eprintln!("warning: log end offsets unavailable ({e}); lag not shown");
                BTreeMap::new()
            }
        }
    };
    let rows = partition_rows(&d, &topic_partitions, &log_ends);
    let coordinator_addr = d.coordinator_id.and_then(|id| snapshot.broker_addr(id).map(str::to_string));
    if args.json {
        let members: Vec<_> = d
            .members
            .iter()
            .map(|m| {
                let tps = |v: &[TopicPartition]| -> Vec<_> {
                    v.iter().map(|tp| json!({ "topic": tp.topic, "partition": tp.partition })).collect()
                };
                json!({ "member_id": m.member_id, "instance_id": m.instance_id, "client_id": m.client_id,
                        "topics": m.topics, "assigned": tps(&m.assigned), "revoking": tps(&m.revoking) })
            })
            .collect();
        let partitions: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({ "topic": r.partition.topic, "partition": r.partition.partition, "committed": r.committed,
                        "log_end_offset": r.log_end, "lag": r.lag, "owner": r.owner, "revoking": r.revoking })
            })
            .collect();
        println!(
            "{}",
            json!({ "group": d.group, "state": d.state, "generation": d.generation, "assignor": d.assignor,
                    "coordinator": { "id": d.coordinator_id, "addr": coordinator_addr },
                    "members": members, "partitions": partitions })
        );
        return Ok(());
    }
    let coordinator = match (d.coordinator_id, coordinator_addr) {
        (Some(id), Some(addr)) => format!("{id} ({addr})"),
        (Some(id), None) => id.to_string(),
        (None, _) => "-".to_string(),
    };
    let assignor = if d.assignor.is_empty() { "-" } else { d.assignor.as_str() };
    println!(
        "group {}: state {}, generation {}, assignor {assignor}, coordinator {coordinator}",
        d.group, d.state, d.generation
    );
    println!();
    if d.members.is_empty() {
        println!("no live members");
    } else {
        let members: Vec<Vec<String>> = d
            .members
            .iter()
            .map(|m| {
                let mut partitions = format_partitions(&m.assigned);
                if !m.revoking.is_empty() {
                    partitions =
                        format!("{partitions} (revoking {})", format_partitions(&m.revoking)).trim().to_string();
                }
                vec![
                    m.member_id.clone(),
                    m.instance_id.clone().unwrap_or_else(|| "-".into()),
                    m.client_id.clone(),
                    m.topics.join(","),
                    if partitions.is_empty() { "-".into() } else { partitions },
                ]
            })
            .collect();
        println!("{}", table(&["MEMBER", "INSTANCE", "CLIENT", "TOPICS", "PARTITIONS"], &members));
    }
    if !rows.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                let owner = match (&r.owner, r.revoking) {
                    (Some(o), true) => format!("{o} (revoking)"),
                    (Some(o), false) => o.clone(),
                    (None, _) => "-".into(),
                };
                vec![
                    r.partition.topic.clone(),
                    r.partition.partition.to_string(),
                    dash(r.committed),
                    dash(r.log_end),
                    dash(r.lag),
                    owner,
                ]
            })
            .collect();
        println!("{}", table(&["TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG", "OWNER"], &rows));
    }
    Ok(())
}

/// The partitions `--topic` values name, checked against the metadata.
fn resolve_partitions(metadata: &MetadataClient, specs: &[TopicSpec]) -> anyhow::Result<Vec<TopicPartition>> {
    let snapshot = metadata.current();
    let mut out = BTreeSet::new();
    for spec in specs {
        let Some(count) = snapshot.partition_count(&spec.topic) else {
            bail!("topic {} does not exist (see `strata topic list`)", spec.topic);
        };
        match &spec.partitions {
            None => out.extend((0..count).map(|p| TopicPartition::new(spec.topic.clone(), p))),
            Some(list) => {
                for p in list {
                    if *p >= count {
                        bail!("topic {} has no partition {p} (it has {count}: 0..{})", spec.topic, count - 1);
                    }
                    out.insert(TopicPartition::new(spec.topic.clone(), *p));
                }
            }
        }
    }
    Ok(out.into_iter().collect())
}

async fn reset_offsets(
    args: &BrokerArgs,
    metadata: &MetadataClient,
    admin: &AdminClient,
    reset: ResetOffsetsArgs,
) -> anyhow::Result<()> {
    let group = reset.group.as_str();
    let tps = resolve_partitions(metadata, &reset.topics)?;
    let to = reset.to.target();
    let committed =
        admin.fetch_committed_offsets(group, &tps).await.map_err(|e| explain(e, group, "read offsets of"))?;
    let lookup = lookups(metadata);
    let earliest = lookup.beginning_offsets(&tps).await.context("cannot look up the earliest offsets")?;
    let latest = lookup.end_offsets(&tps).await.context("cannot look up the log end offsets")?;
    let at_time = match to {
        ResetTo::Timestamp(ms) => {
            lookup.offsets_for_time(&tps, ms).await.context("cannot look up offsets by time")?.into_iter().collect()
        }
        _ => BTreeMap::new(),
    };
    let inputs: Vec<PartitionOffsets> = tps
        .iter()
        .map(|tp| PartitionOffsets {
            partition: tp.clone(),
            committed: committed.get(tp).copied().flatten(),
            earliest: earliest.get(tp).copied().unwrap_or(0),
            latest: latest.get(tp).copied().unwrap_or(0),
            at_time: at_time.get(tp).copied().flatten(),
        })
        .collect();
    let plan = plan_reset(to, &inputs);
    if reset.execute {
        let offsets: Vec<(TopicPartition, i64)> = plan.iter().map(|r| (r.partition.clone(), r.new)).collect();
        admin.alter_group_offsets(group, &offsets).await.map_err(|e| explain(e, group, "reset offsets of"))?;
    }
    if args.json {
        let rows: Vec<_> = plan
            .iter()
            .map(|r| json!({ "topic": r.partition.topic, "partition": r.partition.partition, "current": r.current, "new": r.new }))
            .collect();
        println!("{}", json!({ "group": group, "executed": reset.execute, "partitions": rows }));
    } else {
        let rows: Vec<Vec<String>> = plan
            .iter()
            .map(|r| {
                vec![r.partition.topic.clone(), r.partition.partition.to_string(), dash(r.current), r.new.to_string()]
            })
            .collect();
        println!("{}", table(&["TOPIC", "PARTITION", "CURRENT", "NEW"], &rows));
        if reset.execute {
            println!("reset {} partitions of group {group}", plan.len());
        } else {
            eprintln!("dry run: nothing changed; add --execute to apply this plan");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::admin::{GroupMember, GroupOffset};
    use crate::cli::{Cli, Command};

    fn tp(topic: &str, partition: u32) -> TopicPartition {
        TopicPartition::new(topic, partition)
    }

    fn offsets(partition: u32, committed: Option<i64>, earliest: i64, latest: i64) -> PartitionOffsets {
        PartitionOffsets { partition: tp("t", partition), committed, earliest, latest, at_time: None }
    }

    fn news(to: ResetTo, inputs: &[PartitionOffsets]) -> Vec<i64> {
        plan_reset(to, inputs).into_iter().map(|r| r.new).collect()
    }

    #[test]
    fn topic_specs_parse() {
        assert_eq!(parse_topic_spec("orders"), Ok(TopicSpec { topic: "orders".into(), partitions: None }));
        assert_eq!(
            parse_topic_spec("orders:2, 0,2"),
            Ok(TopicSpec { topic: "orders".into(), partitions: Some(vec![0, 2]) })
        );
        assert!(parse_topic_spec("orders:x").is_err());
        assert!(parse_topic_spec("orders:").is_err());
        assert!(parse_topic_spec(":1").is_err());
    }

    #[test]
    fn reset_plans_stay_within_the_log() {
        let inputs = [offsets(0, Some(50), 10, 100), offsets(1, None, 0, 40), offsets(2, Some(5), 20, 30)];
        assert_eq!(news(ResetTo::Earliest, &inputs), [10, 0, 20]);
        assert_eq!(news(ResetTo::Latest, &inputs), [100, 40, 30]);
        assert_eq!(news(ResetTo::Offset(25), &inputs), [25, 25, 25]);
        assert_eq!(news(ResetTo::Offset(0), &inputs), [10, 0, 20]);
        assert_eq!(news(ResetTo::Offset(1_000), &inputs), [100, 40, 30]);
        // Shift from the committed offset; without one, from the log end.
        assert_eq!(news(ResetTo::ShiftBy(-20), &inputs), [30, 20, 20]);
        assert_eq!(news(ResetTo::ShiftBy(70), &inputs), [100, 40, 30]);
        assert_eq!(news(ResetTo::ShiftBy(i64::MIN), &inputs), [10, 0, 20]);
        let plan = plan_reset(ResetTo::Latest, &inputs);
        assert_eq!(plan[0], PlanRow { partition: tp("t", 0), current: Some(50), new: 100 });
        assert_eq!(plan[1].current, None);
    }

    #[test]
    fn reset_to_a_time_uses_the_lookup_or_the_log_end() {
        let inputs = [
            PartitionOffsets { at_time: Some(7), ..offsets(0, Some(1), 0, 10) },
            PartitionOffsets { at_time: None, ..offsets(1, Some(1), 0, 10) },
        ];
        assert_eq!(news(ResetTo::Timestamp(123), &inputs), [7, 10]);
    }

    #[test]
    fn rfc3339_times_parse_to_epoch_millis() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339_ms("2024-02-29T12:34:56.789+02:00"), Ok(1_709_202_896_789));
        assert_eq!(parse_rfc3339_ms("2024-02-29 10:34:56.7891z"), Ok(1_709_202_896_789));
        assert_eq!(parse_rfc3339_ms("2000-03-01T00:00:00Z"), Ok(951_868_800_000));
        assert_eq!(parse_rfc3339_ms("1969-12-31T23:59:59Z"), Ok(-1000));
        assert_eq!(parse_rfc3339_ms("2000-03-01T01:30:00.5-01:30"), Ok(951_868_800_000 + 3 * 3_600_000 + 500));
        for bad in [
            "2024-02-30T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00+2",
            "2024-01-01",
            "yesterday",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00é",
        ] {
            let error = parse_rfc3339_ms(bad).expect_err(bad);
            assert!(error.contains("RFC 3339"), "{error}");
        }
    }

    fn member(id: &str, topics: &[&str], assigned: &[u32], revoking: &[u32]) -> GroupMember {
        GroupMember {
            member_id: id.into(),
            instance_id: None,
            client_id: "strata".into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            assigned: assigned.iter().map(|p| tp("t", *p)).collect(),
            revoking: revoking.iter().map(|p| tp("t", *p)).collect(),
        }
    }

    #[test]
    fn describe_rows_cover_subscribed_owned_and_committed_partitions() {
        let d = GroupDescription {
            group: "g".into(),
            state: "Rebalancing".into(),
            coordinator_id: Some(1),
            generation: 4,
            assignor: "cooperative-sticky".into(),
            members: vec![member("m1", &["t"], &[0], &[1]), member("m2", &["t"], &[2], &[])],
            offsets: vec![
                GroupOffset { partition: tp("t", 0), offset: Some(5), metadata: String::new(), generation: 3 },
                GroupOffset { partition: tp("gone", 0), offset: Some(9), metadata: String::new(), generation: 1 },
            ],
        };
        let counts = BTreeMap::from([("t".to_string(), 4)]);
        let ends = BTreeMap::from([(tp("t", 0), 8), (tp("t", 3), 2)]);
        let rows = partition_rows(&d, &counts, &ends);
        let keys: Vec<String> = rows.iter().map(|r| r.partition.to_string()).collect();
        assert_eq!(keys, ["gone-0", "t-0", "t-1", "t-2", "t-3"]);
        assert_eq!((rows[1].committed, rows[1].log_end, rows[1].lag), (Some(5), Some(8), Some(3)));
        assert_eq!(rows[1].owner.as_deref(), Some("m1"));
        assert_eq!((rows[2].owner.as_deref(), rows[2].revoking), (Some("m1"), true));
        assert_eq!((rows[4].owner.as_deref(), rows[4].lag, rows[4].log_end), (None, None, Some(2)));
        assert_eq!((rows[0].committed, rows[0].log_end), (Some(9), None));
    }

    #[test]
    fn tables_align_columns() {
        let t = table(&["A", "LONGER"], &[vec!["xyz".into(), "1".into()], vec!["q".into(), "22".into()]]);
        assert_eq!(t, "A    LONGER\nxyz  1\nq    22");
    }

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("strata").chain(args.iter().copied())).map(|c| c.command)
    }

    #[test]
    fn reset_offsets_arguments_parse() {
        let Ok(Command::Group { command: GroupCommand::ResetOffsets(r), .. }) =
            parse(&["group", "reset-offsets", "g", "--topic", "a:0,1", "--topic", "b", "--shift-by", "-5"])
        else {
            panic!("did not parse");
        };
        assert_eq!(r.group, "g");
        assert_eq!(r.topics.len(), 2);
        assert_eq!(r.to.target(), ResetTo::ShiftBy(-5));
        assert!(!r.execute);
        let Ok(Command::Group { command: GroupCommand::ResetOffsets(r), .. }) = parse(&[
            "group",
            "reset-offsets",
            "g",
            "--topic",
            "a",
            "--to-datetime",
            "1970-01-01T00:00:01Z",
            "--execute",
        ]) else {
            panic!("did not parse");
        };
        assert_eq!((r.to.target(), r.execute), (ResetTo::Timestamp(1000), true));
        // Exactly one target, and a topic, are required.
        assert!(parse(&["group", "reset-offsets", "g", "--topic", "a"]).is_err());
        assert!(parse(&["group", "reset-offsets", "g", "--topic", "a", "--to-earliest", "--to-latest"]).is_err());
        assert!(parse(&["group", "reset-offsets", "g", "--to-earliest"]).is_err());
        assert!(parse(&["group", "reset-offsets", "g", "--topic", "a", "--to-datetime", "noon"]).is_err());
    }

    #[test]
    fn group_subcommands_parse() {
        assert!(
            matches!(parse(&["group", "list", "--json"]), Ok(Command::Group { command: GroupCommand::List, args }) if args.json)
        );
        assert!(matches!(
            parse(&["group", "describe", "g"]),
            Ok(Command::Group { command: GroupCommand::Describe { group }, .. }) if group == "g"
        ));
        assert!(matches!(
            parse(&["group", "delete", "g", "--bootstrap", "h:1"]),
            Ok(Command::Group { command: GroupCommand::Delete { group }, args }) if group == "g" && args.bootstrap == "h:1"
        ));
    }
}
