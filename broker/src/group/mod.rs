//! Consumer groups, broker side: coordinator placement (`hash`), the
//! per-group state machine (`state`) run by one task per group (`actor`),
//! assignors (`assignor`) and the group's records in the ensemble
//! (`store`). `GroupCoordinator` is what the gRPC service calls.
//!
//! Calls that change a group go to its coordinator's actor; reads
//! (FetchOffsets, ListGroups, DescribeGroup) are answered by any broker
//! from the ensemble.

pub mod actor;
pub mod assignor;
pub mod error;
pub mod hash;
pub mod state;
pub mod store;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use strata_coord_client::CoordClient;
use tokio::sync::{mpsc, oneshot, watch};

use crate::metadata::model::{BrokerId, ClusterMetadata};
use actor::{Command, Context};
pub use actor::{MemberLink, OffsetCommit, PartitionResults};
pub use assignor::Tp;
pub use error::{CoordinatorHint, GroupError};
pub use state::{ConnId, GroupConfig, JoinSpec, MemberMsg, ToMember};
use store::{GroupRecord, OffsetRecord, Store};

/// Commands queued per group before senders wait.
const ACTOR_QUEUE: usize = 1024;

/// Kafka's group-id rules (the same as for topic names).
pub fn validate_group_name(name: &str) -> Result<(), GroupError> {
    crate::service::admin::validate_topic_name(name)
        .map_err(|why| GroupError::InvalidRequest(why.replace("topic name", "group name")))
}

/// What `strata group list|describe` show as a group's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No members (committed offsets may exist).
    Empty,
    /// Every subscribed partition owned, no revocation pending.
    Stable,
    Rebalancing,
    /// Offsets (or the group's node) without a state.
    Dead,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Empty => "Empty",
            Phase::Stable => "Stable",
            Phase::Rebalancing => "Rebalancing",
            Phase::Dead => "Dead",
        }
    }

    fn of(record: Option<&GroupRecord>, md: &ClusterMetadata) -> Phase {
        let Some(r) = record else { return Phase::Dead };
        if r.members.is_empty() {
            return Phase::Empty;
        }
        if r.members.iter().any(|m| !m.revoking.is_empty()) {
            return Phase::Rebalancing;
        }
        let owned: BTreeSet<&Tp> = r.members.iter().flat_map(|m| m.owned.iter()).collect();
        let subscribed: BTreeSet<&String> = r.members.iter().flat_map(|m| m.topics.iter()).collect();
        let complete = subscribed.into_iter().all(|t| {
            let count = md.topics.get(t).map_or(0, |info| info.partitions.len() as u32);
            (0..count).all(|p| owned.contains(&(t.clone(), p)))
        });
        if complete { Phase::Stable } else { Phase::Rebalancing }
    }
}

#[derive(Debug, Clone)]
pub struct Committed {
    pub tp: Tp,
    /// -1 when nothing is committed.
    pub offset: i64,
    pub metadata: String,
    pub generation: i32,
}

impl Committed {
    fn new(tp: Tp, record: Option<OffsetRecord>) -> Committed {
        match record {
            Some(r) => Committed { tp, offset: r.offset, metadata: r.metadata, generation: r.generation },
            None => Committed { tp, offset: -1, metadata: String::new(), generation: -1 },
        }
    }
}

#[derive(Debug, Clone)]
pub struct Listing {
    pub group: String,
    pub phase: Phase,
    pub coordinator_id: BrokerId,
    pub members: u32,
}

#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: String,
    pub client_id: String,
    pub topics: Vec<String>,
    pub assigned: BTreeSet<Tp>,
    pub revoking: BTreeSet<Tp>,
}

#[derive(Debug, Clone)]
pub struct Description {
    pub group: String,
    pub phase: Phase,
    pub coordinator_id: BrokerId,
    pub generation: i32,
    pub assignor: String,
    pub members: Vec<MemberDescription>,
    pub offsets: Vec<Committed>,
}

/// A joined member stream: what its reader forwards to the group.
pub struct MemberStream {
    conn: ConnId,
    actor: mpsc::Sender<Command>,
}

impl MemberStream {
    /// False once the group's actor is gone (the stream should end).
    pub async fn send(&self, msg: MemberMsg) -> bool {
        self.actor.send(Command::Member { conn: self.conn, msg, at: Instant::now() }).await.is_ok()
    }
}

pub struct GroupCoordinator {
    ctx: Arc<Context>,
    actors: Mutex<HashMap<String, mpsc::Sender<Command>>>,
    next_conn: AtomicU64,
    stopping: AtomicBool,
}

impl GroupCoordinator {
    pub fn new(
        id: BrokerId,
        coord: CoordClient,
        metadata: watch::Receiver<Arc<ClusterMetadata>>,
        config: GroupConfig,
    ) -> Arc<GroupCoordinator> {
        Arc::new(GroupCoordinator {
            ctx: Arc::new(Context {
                id,
                store: Store::new(coord),
                metadata,
                config,
                committed: Mutex::new(HashMap::new()),
            }),
            actors: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
        })
    }

    fn metadata(&self) -> Arc<ClusterMetadata> {
        self.ctx.metadata.borrow().clone()
    }

    fn hint(md: &ClusterMetadata, id: BrokerId) -> CoordinatorHint {
        CoordinatorHint { id, addr: md.brokers.get(&id).map(|b| b.addr.clone()).unwrap_or_default() }
    }

    /// The coordinator of `group` by this broker's metadata.
    pub fn find_coordinator(&self, group: &str) -> Result<CoordinatorHint, GroupError> {
        validate_group_name(group)?;
        let md = self.metadata();
        if md.revision == 0 {
            return Err(GroupError::CoordinatorNotAvailable("broker is still loading cluster metadata".into()));
        }
        hash::coordinator(group, &md)
            .map(|id| Self::hint(&md, id))
            .ok_or_else(|| GroupError::CoordinatorNotAvailable("no live broker can coordinate groups".into()))
    }

    /// Ok when this broker coordinates `group`.
    fn route(&self, group: &str) -> Result<(), GroupError> {
        let coordinator = self.find_coordinator(group)?;
        if coordinator.id == self.ctx.id && !self.stopping.load(Ordering::Acquire) {
            return Ok(());
        }
        let md = self.metadata();
        let other = || {
            let others = md.brokers.keys().copied().filter(|id| *id != self.ctx.id && !md.draining.contains(id));
            hash::pick(group, others).map(|id| Self::hint(&md, id))
        };
        let coordinator = if coordinator.id == self.ctx.id { other() } else { Some(coordinator) };
        Err(GroupError::NotCoordinator { group: group.to_string(), coordinator })
    }

    /// The group's actor, started (loading the group) if needed.
    fn actor(&self, group: &str) -> mpsc::Sender<Command> {
        let mut actors = self.actors.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = actors.get(group).filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        actors.retain(|_, tx| !tx.is_closed());
        let (tx, rx) = mpsc::channel(ACTOR_QUEUE);
        tokio::spawn(actor::run(self.ctx.clone(), group.to_string(), rx));
        actors.insert(group.to_string(), tx.clone());
        tx
    }

    /// Sends to the group's actor; an actor that just stopped (idle, or a
    /// group deleted) is replaced once.
    async fn send(&self, group: &str, cmd: Command) -> Result<mpsc::Sender<Command>, GroupError> {
        self.route(group)?;
        let tx = self.actor(group);
        match tx.send(cmd).await {
            Ok(()) => Ok(tx),
            Err(mpsc::error::SendError(cmd)) => {
                let tx = self.actor(group);
                tx.send(cmd).await.map_err(|_| GroupError::CoordinatorNotAvailable("group is reloading".into()))?;
                Ok(tx)
            }
        }
    }

    /// Hands a JoinGroup to the group. The answer (Joined or an error)
    /// arrives on the link.
    pub async fn join(&self, group: &str, spec: JoinSpec, link: MemberLink) -> Result<MemberStream, GroupError> {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let cmd = Command::Join { conn, spec: Box::new(spec), link, at: Instant::now() };
        let actor = self.send(group, cmd).await?;
        Ok(MemberStream { conn, actor })
    }

    async fn ask<T>(
        &self,
        group: &str,
        make: impl FnOnce(oneshot::Sender<Result<T, GroupError>>) -> Command,
    ) -> Result<T, GroupError> {
        let (reply, answer) = oneshot::channel();
        self.send(group, make(reply)).await?;
        answer.await.map_err(|_| GroupError::CoordinatorNotAvailable("the group was unloaded meanwhile".into()))?
    }

    pub async fn commit(
        &self,
        group: &str,
        member_id: String,
        generation: i32,
        offsets: Vec<OffsetCommit>,
    ) -> Result<PartitionResults, GroupError> {
        self.ask(group, |reply| Command::Commit { member_id, generation, offsets, reply }).await
    }

    pub async fn alter_offsets(&self, group: &str, offsets: Vec<OffsetCommit>) -> Result<PartitionResults, GroupError> {
        self.ask(group, |reply| Command::Alter { offsets, reply }).await
    }

    pub async fn delete_group(&self, group: &str) -> Result<(), GroupError> {
        self.ask(group, |reply| Command::Delete { reply }).await
    }

    /// Committed offsets of `partitions` (all committed ones when empty).
    pub async fn fetch_offsets(&self, group: &str, partitions: Vec<Tp>) -> Result<Vec<Committed>, GroupError> {
        validate_group_name(group)?;
        let store = &self.ctx.store;
        let unavailable = |e| GroupError::from_coord("reading offsets", &e);
        let partitions = if partitions.is_empty() {
            store.committed_partitions(group).await.map_err(unavailable)?.into_iter().collect()
        } else {
            partitions
        };
        let read = store.read_offsets(group, partitions).await.map_err(unavailable)?;
        Ok(read.into_iter().map(|(tp, r)| Committed::new(tp, r)).collect())
    }

    pub async fn list_groups(&self) -> Result<Vec<Listing>, GroupError> {
        let store = &self.ctx.store;
        let unavailable = |e| GroupError::from_coord("listing groups", &e);
        let names = store.list_groups().await.map_err(unavailable)?;
        let md = self.metadata();
        let reads = names.into_iter().map(|name| async move {
            let loaded = store.load_state(&name).await?;
            Ok::<_, strata_coord_client::CoordError>((name, loaded.and_then(|(r, _)| r)))
        });
        let loaded: Vec<_> = futures::stream::iter(reads).buffered(16).collect().await;
        let mut out = Vec::new();
        for r in loaded {
            let (group, record) = r.map_err(unavailable)?;
            out.push(Listing {
                phase: Phase::of(record.as_ref(), &md),
                coordinator_id: hash::coordinator(&group, &md).unwrap_or(-1),
                members: record.map_or(0, |r| r.members.len() as u32),
                group,
            });
        }
        Ok(out)
    }

    pub async fn describe_group(&self, group: &str) -> Result<Description, GroupError> {
        validate_group_name(group)?;
        let store = &self.ctx.store;
        let unavailable = |e| GroupError::from_coord("describing the group", &e);
        let record = store.load_state(group).await.map_err(unavailable)?;
        let exists = record.is_some() || store.group_exists(group).await.map_err(unavailable)?;
        if !exists {
            return Err(GroupError::GroupIdNotFound(group.to_string()));
        }
        let record = record.and_then(|(r, _)| r);
        let offsets = self.fetch_offsets(group, Vec::new()).await?;
        let md = self.metadata();
        let r = record.clone().unwrap_or_default();
        Ok(Description {
            group: group.to_string(),
            phase: Phase::of(record.as_ref(), &md),
            coordinator_id: hash::coordinator(group, &md).unwrap_or(-1),
            generation: r.generation,
            assignor: r.assignor,
            members: r
                .members
                .into_iter()
                .map(|m| MemberDescription {
                    member_id: m.member_id,
                    instance_id: m.instance_id.unwrap_or_default(),
                    client_id: m.client_id,
                    topics: m.topics,
                    assigned: m.owned.into_iter().collect(),
                    revoking: m.revoking.into_iter().collect(),
                })
                .collect(),
            offsets,
        })
    }

    /// `strata_broker_groups` (groups coordinated here) and
    /// `strata_group_lag` per partition those groups committed through this
    /// broker: the partition's high watermark, where this broker hosts a
    /// replica, minus the committed offset.
    pub fn refresh_metrics(&self, high_watermark: &dyn Fn(&str, u32) -> Option<i64>) {
        let mut actors = self.actors.lock().unwrap_or_else(|e| e.into_inner());
        actors.retain(|_, tx| !tx.is_closed());
        metrics::gauge!("strata_broker_groups").set(actors.len() as f64);
        drop(actors);
        let committed = self.ctx.committed.lock().unwrap_or_else(|e| e.into_inner());
        for (group, offsets) in committed.iter() {
            for ((topic, partition), offset) in offsets {
                let Some(hw) = high_watermark(topic, *partition) else { continue };
                metrics::gauge!("strata_group_lag", "group" => group.clone(), "topic" => topic.clone(),
                    "partition" => partition.to_string())
                .set((hw - offset).max(0) as f64);
            }
        }
    }

    /// Stops coordinating: every group's members are sent to the broker
    /// that coordinates it next. Waits (briefly) for the actors to finish.
    pub async fn shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        let actors: Vec<mpsc::Sender<Command>> = {
            let mut map = self.actors.lock().unwrap_or_else(|e| e.into_inner());
            map.drain().map(|(_, tx)| tx).collect()
        };
        for tx in &actors {
            let _ = tx.send(Command::Shutdown).await;
        }
        let all_closed = async {
            for tx in &actors {
                tx.closed().await;
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), all_closed).await;
        metrics::gauge!("strata_broker_groups").set(0.0);
    }
}

/// Groups partitions by topic, as the wire lists them.
pub fn by_topic(set: &BTreeSet<Tp>) -> BTreeMap<&str, Vec<u32>> {
    let mut out: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (t, p) in set {
        out.entry(t.as_str()).or_default().push(*p);
    }
    out
}
