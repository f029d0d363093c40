//! `strata topic ...`: create, list, describe, alter, delete.

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde_json::json;

use super::BrokerArgs;
use crate::admin::{AdminClient, NewTopic};
use crate::metadata::{MetadataClient, MetadataConfig};

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        #[arg(long, default_value_t = 1)]
        replication_factor: u32,
        /// Topic config, e.g. --config retention.ms=86400000 (repeatable).
        #[arg(long = "config", value_parser = parse_kv)]
        configs: Vec<(String, String)>,
    },
    /// List topics.
    List,
    /// Show partitions, leaders, replicas and ISR.
    Describe { name: String },
    /// Change configs or add partitions.
    Alter {
        name: String,
        #[arg(long = "config", value_parser = parse_kv)]
        configs: Vec<(String, String)>,
        #[arg(long = "delete-config")]
        delete_configs: Vec<String>,
        /// New total partition count.
        #[arg(long)]
        partitions: Option<u32>,
    },
    /// Delete a topic and its data on every broker.
    Delete { name: String },
    /// Hand leadership back to preferred replicas (the first of each
    /// partition's replicas) where they are live and in sync.
    ElectLeaders {
        /// Topics to wait for (default: all).
        topics: Vec<String>,
    },
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

pub async fn run(args: &BrokerArgs, command: TopicCommand) -> anyhow::Result<()> {
    let metadata = MetadataClient::connect(&args.addrs(), MetadataConfig::default()).await?;
    let admin = AdminClient::new(metadata.clone());
    match command {
        TopicCommand::Create { name, partitions, replication_factor, configs } => {
            let mut topic = NewTopic::new(name.clone(), partitions, replication_factor);
            for (k, v) in configs {
                topic = topic.config(k, v);
            }
            admin.create_topic(topic).await.with_context(|| format!("cannot create topic {name}"))?;
            if args.json {
                println!("{}", json!({ "topic": name, "created": true }));
            } else {
                println!("created topic {name} ({partitions} partitions, replication factor {replication_factor})");
            }
        }
        TopicCommand::ElectLeaders { topics } => {
            let (preferred, not_preferred) = admin.elect_preferred_leaders(&topics).await?;
            if args.json {
                println!("{}", json!({ "preferred": preferred, "not_preferred": not_preferred }));
            } else {
                println!("{preferred} partitions led by their preferred replica, {not_preferred} not");
                if not_preferred > 0 {
                    println!("(a preferred replica that is down or out of sync cannot take over)");
                }
            }
        }
        TopicCommand::List => {
            let mut names = admin.list_topics().await?;
            names.sort();
            if args.json {
                println!("{}", json!({ "topics": names }));
            } else {
                for n in names {
                    println!("{n}");
                }
            }
        }
        TopicCommand::Describe { name } => {
            let md = metadata.fetch(std::slice::from_ref(&name)).await?;
            let t = md.topics.into_iter().find(|t| t.name == name).context("no such topic in the reply")?;
            if let Some(e) = t.error {
                bail!("cannot describe topic {name}: {} ({})", e.message, crate::error::code_name(e.code));
            }
            if args.json {
                let partitions: Vec<_> = t
                    .partitions
                    .iter()
                    .map(|p| {
                        json!({ "partition": p.partition, "leader": p.leader, "leader_epoch": p.leader_epoch,
                                "replicas": p.replicas, "isr": p.isr })
                    })
                    .collect();
                println!(
                    "{}",
                    json!({ "topic": t.name, "topic_id": t.topic_id, "partitions": partitions, "configs": t.configs })
                );
            } else {
                println!("topic {} ({} partitions) id {}", t.name, t.partitions.len(), t.topic_id);
                let mut configs: Vec<_> = t.configs.iter().collect();
                configs.sort();
                for (k, v) in configs {
                    println!("  config {k}={v}");
                }
                println!("{:<10} {:<7} {:<13} {:<14} {:<14}", "PARTITION", "LEADER", "LEADER EPOCH", "REPLICAS", "ISR");
                for p in &t.partitions {
                    let ids = |v: &[i32]| v.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
                    println!(
                        "{:<10} {:<7} {:<13} {:<14} {:<14}",
                        p.partition,
                        p.leader,
                        p.leader_epoch,
                        ids(&p.replicas),
                        ids(&p.isr)
                    );
                }
            }
        }
        TopicCommand::Alter { name, configs, delete_configs, partitions } => {
            if configs.is_empty() && delete_configs.is_empty() && partitions.is_none() {
                bail!("nothing to alter: pass --config, --delete-config or --partitions");
            }
            if !configs.is_empty() || !delete_configs.is_empty() {
                admin
                    .alter_configs(&name, configs.into_iter().collect(), delete_configs)
                    .await
                    .with_context(|| format!("cannot alter configs of {name}"))?;
            }
            if let Some(count) = partitions {
                admin
                    .create_partitions(&name, count)
                    .await
                    .with_context(|| format!("cannot add partitions to {name}"))?;
            }
            if args.json {
                println!("{}", json!({ "topic": name, "altered": true }));
            } else {
                println!("altered topic {name}");
            }
        }
        TopicCommand::Delete { name } => {
            admin.delete_topic(&name).await.with_context(|| format!("cannot delete topic {name}"))?;
            if args.json {
                println!("{}", json!({ "topic": name, "deleted": true }));
            } else {
                println!("deleted topic {name}");
            }
        }
    }
    Ok(())
}
