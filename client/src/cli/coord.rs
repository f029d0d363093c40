//! `strata coord ...` and `strata cluster ...`.

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde_json::json;

use super::CoordArgs;
use crate::coord::{CoordClient, CoordError, CreateOptions, EventType, Stat};

#[derive(Debug, Subcommand)]
pub enum CoordCommand {
    /// List the children of a node.
    Ls { path: String },
    /// Print a node's data (with --stat, its stat too).
    Get {
        path: String,
        #[arg(long)]
        stat: bool,
    },
    /// Create the node or replace its data.
    Set {
        path: String,
        value: String,
        /// Only if the node is at this version.
        #[arg(long)]
        version: Option<u64>,
    },
    /// Delete a node.
    Rm {
        path: String,
        #[arg(long)]
        version: Option<u64>,
        /// Delete everything below the node too.
        #[arg(long, short)]
        recursive: bool,
    },
    /// Print changes to a node (or, with --prefix, its subtree) as they happen.
    Watch {
        path: String,
        #[arg(long)]
        prefix: bool,
        /// Start at this revision instead of now.
        #[arg(long, default_value_t = 0)]
        from_revision: u64,
        /// Stop after this many events.
        #[arg(long)]
        max_events: Option<u64>,
    },
    /// Change the ensemble's membership at run time.
    Member {
        #[command(subcommand)]
        command: MemberCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Add a member (started with --join) as a learner, then promote it to voter.
    Add { id: u64, peer_addr: String },
    /// Remove a member from the voters.
    Remove { id: u64 },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show the ensemble's members, roles and leader.
    Status,
}

fn client(args: &CoordArgs) -> anyhow::Result<CoordClient> {
    Ok(CoordClient::new(&args.addrs())?)
}

fn explain(e: CoordError, args: &CoordArgs) -> anyhow::Error {
    match e {
        CoordError::Unavailable(m) => anyhow::anyhow!(
            "no coordinator reachable at {} ({m}) — is `strata dev` running, or is --coordinators right?",
            args.coordinators
        ),
        other => other.into(),
    }
}

fn stat_json(s: &Stat) -> serde_json::Value {
    json!({
        "create_revision": s.create_revision,
        "mod_revision": s.mod_revision,
        "version": s.version,
        "children_version": s.children_version,
        "ephemeral_owner": s.ephemeral_owner,
        "data_length": s.data_length,
        "num_children": s.num_children,
    })
}

pub async fn run_coord(args: &CoordArgs, command: CoordCommand) -> anyhow::Result<()> {
    let c = client(args)?;
    match command {
        CoordCommand::Ls { path } => {
            let (names, _) = c.children(&path).await.map_err(|e| explain(e, args))?;
            if args.json {
                println!("{}", json!({ "path": path, "children": names }));
            } else {
                for n in names {
                    println!("{n}");
                }
            }
        }
        CoordCommand::Get { path, stat } => {
            let (data, st) = c.get(&path).await.map_err(|e| explain(e, args))?;
            if args.json {
                println!("{}", json!({ "path": path, "data": String::from_utf8_lossy(&data), "stat": stat_json(&st) }));
            } else {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                out.write_all(&data)?;
                if !data.ends_with(b"\n") {
                    out.write_all(b"\n")?;
                }
                if stat {
                    writeln!(out, "{}", serde_json::to_string_pretty(&stat_json(&st))?)?;
                }
            }
        }
        CoordCommand::Set { path, value, version } => {
            let (st, created) = match version {
                Some(v) => (c.set(&path, value.into_bytes(), Some(v)).await.map_err(|e| explain(e, args))?, false),
                None => {
                    // Like `mkdir -p`: missing parents are created empty.
                    create_parents(&c, &path).await.map_err(|e| explain(e, args))?;
                    c.upsert(&path, value.into_bytes()).await.map_err(|e| explain(e, args))?
                }
            };
            if args.json {
                println!("{}", json!({ "path": path, "created": created, "stat": stat_json(&st) }));
            } else {
                println!("{} {path} (version {})", if created { "created" } else { "updated" }, st.version);
            }
        }
        CoordCommand::Rm { path, version, recursive } => {
            if recursive {
                delete_recursive(&c, &path).await.map_err(|e| explain(e, args))?;
            } else {
                c.delete(&path, version).await.map_err(|e| explain(e, args))?;
            }
            if args.json {
                println!("{}", json!({ "path": path, "deleted": true }));
            }
        }
        CoordCommand::Watch { path, prefix, from_revision, max_events } => {
            let mut w = c.watch(&path, prefix, from_revision);
            let mut seen = 0u64;
            loop {
                let events = w.next().await.map_err(|e| explain(e, args))?;
                for e in events {
                    let kind = match e.r#type() {
                        EventType::Created => "created",
                        EventType::Changed => "changed",
                        EventType::Deleted => "deleted",
                    };
                    if args.json {
                        println!(
                            "{}",
                            json!({ "revision": e.revision, "type": kind, "path": e.path, "data": String::from_utf8_lossy(&e.data) })
                        );
                    } else {
                        println!("{} {kind} {} {}", e.revision, e.path, String::from_utf8_lossy(&e.data));
                    }
                    seen += 1;
                    if max_events.is_some_and(|m| seen >= m) {
                        return Ok(());
                    }
                }
            }
        }
        CoordCommand::Member { command } => match command {
            MemberCommand::Add { id, peer_addr } => {
                c.add_member(id, &peer_addr).await.map_err(|e| explain(e, args))?;
                println!("member {id} added as a voter");
            }
            MemberCommand::Remove { id } => {
                c.remove_member(id).await.map_err(|e| explain(e, args))?;
                println!("member {id} removed");
            }
        },
    }
    Ok(())
}

async fn create_parents(c: &CoordClient, path: &str) -> Result<(), CoordError> {
    let mut parent = String::new();
    let components: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for component in &components[..components.len().saturating_sub(1)] {
        parent.push('/');
        parent.push_str(component);
        if c.exists(&parent).await?.is_none() {
            match c.create(&parent, Vec::<u8>::new(), CreateOptions::persistent()).await {
                Ok(_) | Err(CoordError::NodeExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

async fn delete_recursive(c: &CoordClient, path: &str) -> Result<(), CoordError> {
    let mut stack = vec![(path.to_string(), false)];
    while let Some((p, expanded)) = stack.pop() {
        if expanded {
            match c.delete(&p, None).await {
                Ok(_) | Err(CoordError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
            continue;
        }
        stack.push((p.clone(), true));
        match c.children(&p).await {
            Ok((names, _)) => {
                for n in names {
                    let child = if p == "/" { format!("/{n}") } else { format!("{p}/{n}") };
                    stack.push((child, false));
                }
            }
            Err(CoordError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub async fn run_cluster(args: &CoordArgs, bootstrap: &str, command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Status => {
            let c = client(args)?;
            let s = tokio::time::timeout(Duration::from_secs(20), c.status())
                .await
                .context("timed out asking the ensemble for its status")?
                .map_err(|e| explain(e, args))?;
            if s.members.is_empty() {
                bail!("the ensemble has no members yet (still bootstrapping?)");
            }
            // Brokers are optional: an ensemble may run alone.
            let addrs: Vec<String> =
                bootstrap.split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect();
            let brokers = match crate::metadata::MetadataClient::new(&addrs, Default::default()) {
                Ok(m) => tokio::time::timeout(Duration::from_secs(5), m.fetch(&[])).await.ok().and_then(Result::ok),
                Err(_) => None,
            };
            // Health at a glance: partitions without a leader are offline;
            // an ISR smaller than the replica set is under-replicated.
            let (partitions, offline, under_replicated) = brokers.as_ref().map_or((0, 0, 0), |b| {
                let all = b.topics.iter().flat_map(|t| t.partitions.iter());
                all.fold((0, 0, 0), |(n, off, under), p| {
                    (n + 1, off + usize::from(p.leader < 0), under + usize::from(p.isr.len() < p.replicas.len()))
                })
            });
            if args.json {
                let members: Vec<_> = s
                    .members
                    .iter()
                    .map(|m| json!({ "id": m.id, "addr": m.client_addr, "peer_addr": m.peer_addr, "role": m.role }))
                    .collect();
                let broker_list: Vec<_> = brokers
                    .as_ref()
                    .map(|b| b.brokers.iter().map(|b| json!({ "id": b.id, "addr": b.addr, "rack": b.rack })).collect())
                    .unwrap_or_default();
                println!(
                    "{}",
                    json!({
                        "coordinator": {
                            "leader_id": s.leader_id, "term": s.term, "revision": s.revision,
                            "applied_index": s.applied_index, "sessions": s.sessions, "nodes": s.nodes,
                            "members": members },
                        "controller_id": brokers.as_ref().map_or(-1, |b| b.controller_id),
                        "brokers": broker_list,
                        "topics": brokers.as_ref().map_or(0, |b| b.topics.len()),
                        "partitions": partitions,
                        "offline_partitions": offline,
                        "under_replicated_partitions": under_replicated,
                    })
                );
            } else {
                println!(
                    "ensemble: leader {} · term {} · revision {} · {} sessions · {} nodes",
                    s.leader_id, s.term, s.revision, s.sessions, s.nodes
                );
                println!("{:<4} {:<9} {:<22} {:<22}", "ID", "ROLE", "CLIENT ADDR", "PEER ADDR");
                for m in &s.members {
                    println!("{:<4} {:<9} {:<22} {:<22}", m.id, m.role, m.client_addr, m.peer_addr);
                }
                match &brokers {
                    Some(b) => {
                        println!();
                        println!(
                            "brokers: {} live · controller {} · {} topics",
                            b.brokers.len(),
                            b.controller_id,
                            b.topics.len()
                        );
                        println!("{:<4} {:<22} {:<10}", "ID", "ADDR", "RACK");
                        for br in &b.brokers {
                            println!("{:<4} {:<22} {:<10}", br.id, br.addr, br.rack);
                        }
                        let verdict = if offline > 0 {
                            "UNHEALTHY"
                        } else if under_replicated > 0 {
                            "DEGRADED"
                        } else {
                            "healthy"
                        };
                        println!(
                            "\npartitions: {partitions} · {offline} offline · {under_replicated} under-replicated · {verdict}"
                        );
                    }
                    None => println!("\nbrokers: none reachable at {bootstrap}"),
                }
            }
        }
    }
    Ok(())
}
