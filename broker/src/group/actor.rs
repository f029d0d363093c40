//! One task per group this broker coordinates: it owns the group's state
//! machine, its member streams and its ensemble writes, so every change to
//! a group is serialized without locks.
//!
//! After every batch of events the actor writes the state (when it
//! changed) and only then sends what the state machine produced: a member
//! never learns of an assignment the ensemble does not hold, so a new
//! coordinator never hands a partition to a second owner.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};

use super::assignor::Tp;
use super::error::{CoordinatorHint, GroupError};
use super::hash;
use super::state::{ConnId, Group, GroupConfig, JoinSpec, MemberMsg, Outbound, ToMember};
use super::store::{OffsetRecord, Store, Written};
use crate::metadata::model::{BrokerId, ClusterMetadata};

/// Kafka's `offset.metadata.max.bytes`.
const MAX_OFFSET_METADATA_BYTES: usize = 4096;
/// A group with no members and no requests for this long is unloaded.
const IDLE_UNLOAD: Duration = Duration::from_secs(120);
/// Commands handled before timers get a look.
const BATCH: usize = 256;

/// The coordinator's end of a member stream.
pub struct MemberLink {
    pub tx: mpsc::Sender<ToMember>,
    /// Dropped with the link, which tells the stream's reader to stop.
    pub closer: oneshot::Sender<()>,
}

#[derive(Debug, Clone)]
pub struct OffsetCommit {
    pub tp: Tp,
    pub offset: i64,
    pub metadata: String,
}

pub type PartitionResults = Vec<(Tp, Option<GroupError>)>;

pub enum Command {
    Join {
        conn: ConnId,
        spec: Box<JoinSpec>,
        link: MemberLink,
        at: Instant,
    },
    Member {
        conn: ConnId,
        msg: MemberMsg,
        at: Instant,
    },
    Commit {
        member_id: String,
        generation: i32,
        offsets: Vec<OffsetCommit>,
        reply: oneshot::Sender<Result<PartitionResults, GroupError>>,
    },
    Alter {
        offsets: Vec<OffsetCommit>,
        reply: oneshot::Sender<Result<PartitionResults, GroupError>>,
    },
    Delete {
        reply: oneshot::Sender<Result<(), GroupError>>,
    },
    /// The broker stops: hand the group over.
    Shutdown,
}

pub struct Context {
    pub id: BrokerId,
    pub store: Store,
    pub metadata: watch::Receiver<Arc<ClusterMetadata>>,
    pub config: GroupConfig,
    /// Offsets committed through this broker, per group it coordinates:
    /// what the lag gauges are computed from at scrape time.
    pub committed: std::sync::Mutex<HashMap<String, BTreeMap<Tp, i64>>>,
}

/// Why the actor stops coordinating.
#[derive(Debug)]
enum Stop {
    /// The hash names another broker (or none).
    Moved,
    /// This broker stops.
    Shutdown,
    /// A conditioned write failed: another broker wrote the group.
    Lost,
    /// The ensemble did not answer.
    Unavailable(String),
    /// The group was deleted.
    Deleted,
    Idle,
}

/// A commit checked against the group, waiting to be written.
struct PreparedCommit {
    started: Instant,
    tps: Vec<Tp>,
    results: Vec<Option<GroupError>>,
    valid: Vec<(Tp, OffsetRecord)>,
}

#[derive(Default)]
struct CommitBatch {
    entries: Vec<(PreparedCommit, oneshot::Sender<Result<PartitionResults, GroupError>>)>,
}

struct Actor {
    name: String,
    ctx: Arc<Context>,
    metadata: watch::Receiver<Arc<ClusterMetadata>>,
    group: Group,
    /// Version of the state node as last written or read; None while the
    /// node does not exist.
    version: Option<u64>,
    links: HashMap<ConnId, MemberLink>,
    /// Topics whose offsets parent node is known to exist.
    offset_parents: HashSet<String>,
    last_activity: Instant,
    stop: Option<Stop>,
}

pub async fn run(ctx: Arc<Context>, name: String, mut rx: mpsc::Receiver<Command>) {
    let metadata = ctx.metadata.clone();
    let mut actor = Actor {
        group: Group::new(&name, ctx.id, ctx.config.clone()),
        name,
        ctx,
        metadata,
        version: None,
        links: HashMap::new(),
        offset_parents: HashSet::new(),
        last_activity: Instant::now(),
        stop: None,
    };
    if let Err(e) = actor.load().await {
        tracing::warn!(group = %actor.name, error = %e, "cannot load the group");
        actor.stop = Some(Stop::Unavailable(e.to_string()));
    } else {
        actor.flush().await;
    }
    while actor.stop.is_none() {
        let deadline = actor.next_deadline();
        tokio::select! {
            biased;
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                let mut commits = CommitBatch::default();
                actor.handle_batched(cmd, &mut commits).await;
                for _ in 0..BATCH {
                    if actor.stop.is_some() {
                        break;
                    }
                    match rx.try_recv() {
                        Ok(cmd) => actor.handle_batched(cmd, &mut commits).await,
                        Err(_) => break,
                    }
                }
                actor.write_commits(commits).await;
            }
            changed = actor.metadata.changed() => {
                if changed.is_err() {
                    break;
                }
                actor.on_metadata();
            }
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
        let now = Instant::now();
        if actor.group.next_deadline().is_some_and(|d| d <= now) {
            actor.group.tick(now);
        }
        if actor.group.is_empty() && actor.links.is_empty() && now >= actor.last_activity + IDLE_UNLOAD {
            actor.stop.get_or_insert(Stop::Idle);
        }
        actor.flush().await;
    }
    actor.finish(&mut rx);
}

impl Actor {
    async fn load(&mut self) -> Result<(), GroupError> {
        let loaded =
            self.ctx.store.load_state(&self.name).await.map_err(|e| GroupError::from_coord("loading the group", &e))?;
        let now = Instant::now();
        if let Some((record, version)) = loaded {
            self.version = Some(version);
            if let Some(record) = record {
                let members = record.members.len();
                self.group = Group::from_record(&self.name, self.ctx.id, self.ctx.config.clone(), record, now);
                tracing::info!(group = %self.name, members, generation = self.group.generation(), "coordinating group");
            } else {
                // Unreadable: start empty and overwrite it on the next write.
                self.group.take_dirty();
            }
        }
        let md = self.metadata.borrow_and_update().clone();
        self.group.set_topics(topic_counts(&md), now);
        Ok(())
    }

    fn next_deadline(&self) -> Instant {
        let idle = if self.group.is_empty() && self.links.is_empty() {
            self.last_activity + IDLE_UNLOAD
        } else {
            Instant::now() + IDLE_UNLOAD
        };
        self.group.next_deadline().map_or(idle, |d| d.min(idle))
    }

    fn on_metadata(&mut self) {
        let md = self.metadata.borrow_and_update().clone();
        if md.revision == 0 {
            return;
        }
        if hash::coordinator(&self.name, &md) != Some(self.ctx.id) {
            self.stop = Some(Stop::Moved);
            return;
        }
        self.group.set_topics(topic_counts(&md), Instant::now());
    }

    /// Member commits are checked now and queued in `commits`; anything
    /// else first writes what is queued, so commands still take effect in
    /// arrival order.
    async fn handle_batched(&mut self, cmd: Command, commits: &mut CommitBatch) {
        match cmd {
            Command::Commit { member_id, generation, offsets, reply } => {
                self.last_activity = Instant::now();
                match self.prepare_commit(Some((&member_id, generation)), offsets).await {
                    Ok(prepared) => commits.entries.push((prepared, reply)),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            other => {
                self.write_commits(std::mem::take(commits)).await;
                self.handle(other).await;
            }
        }
    }

    async fn handle(&mut self, cmd: Command) {
        self.last_activity = Instant::now();
        match cmd {
            Command::Join { conn, spec, link, at } => match self.group.join(conn, *spec, at) {
                Ok(()) => {
                    self.links.insert(conn, link);
                }
                Err(e) => {
                    tracing::debug!(group = %self.name, error = %e, "join refused");
                    let _ = link.tx.try_send(ToMember::Error(e));
                }
            },
            Command::Member { conn, msg, at } => self.group.on_message(conn, msg, at, Instant::now()),
            Command::Commit { member_id, generation, offsets, reply } => {
                let r = self.commit(Some((&member_id, generation)), offsets).await;
                let _ = reply.send(r);
            }
            Command::Alter { offsets, reply } => {
                let r = self.commit(None, offsets).await;
                let _ = reply.send(r);
            }
            Command::Delete { reply } => {
                let r = self.delete().await;
                let _ = reply.send(r);
            }
            Command::Shutdown => self.stop = Some(Stop::Shutdown),
        }
    }

    /// Writes the state if it changed, then sends what is owed to members.
    async fn flush(&mut self) {
        for _ in 0..4 {
            if self.stop.is_some() {
                return;
            }
            if self.group.take_dirty() {
                let record = self.group.to_record();
                match self.ctx.store.write_state(&self.name, &record, self.version).await {
                    Ok(Written::At(v)) => self.version = Some(v),
                    Ok(Written::Lost) => {
                        self.stop = Some(Stop::Lost);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(group = %self.name, error = %e, "cannot write the group state");
                        self.stop = Some(Stop::Unavailable(e.to_string()));
                        return;
                    }
                }
            }
            let mut slow = Vec::new();
            for out in self.group.take_outbox() {
                match out {
                    Outbound::Send(conn, msg) => {
                        let Some(link) = self.links.get(&conn) else { continue };
                        if link.tx.try_send(msg).is_err() {
                            // A member that does not read its stream is as
                            // good as gone; waiting would stall the group.
                            slow.push(conn);
                        }
                    }
                    Outbound::Close(conn) => {
                        self.links.remove(&conn);
                    }
                }
            }
            if slow.is_empty() {
                break;
            }
            let now = Instant::now();
            for conn in slow {
                tracing::warn!(group = %self.name, conn, "member stream is not being read; dropping it");
                self.group.on_message(conn, MemberMsg::Closed, now, now);
                self.links.remove(&conn);
            }
        }
        self.refresh_gauges();
    }

    fn refresh_gauges(&self) {
        let label = self.name.clone();
        metrics::gauge!("strata_group_members", "group" => label.clone()).set(self.group.members().len() as f64);
        metrics::gauge!("strata_group_generation", "group" => label).set(f64::from(self.group.generation()));
    }

    /// A member commit (`member` set) or an admin's AlterOffsets, written
    /// on its own.
    async fn commit(
        &mut self,
        member: Option<(&str, i32)>,
        offsets: Vec<OffsetCommit>,
    ) -> Result<PartitionResults, GroupError> {
        let prepared = self.prepare_commit(member, offsets).await?;
        let mut batch = CommitBatch::default();
        let (tx, rx) = oneshot::channel();
        batch.entries.push((prepared, tx));
        self.write_commits(batch).await;
        rx.await.unwrap_or_else(|_| Err(GroupError::CoordinatorNotAvailable("the commit was dropped".into())))
    }

    /// Checks a commit against the group as it is now; what passes is
    /// written later, possibly in one transaction with the commits queued
    /// behind it.
    async fn prepare_commit(
        &mut self,
        member: Option<(&str, i32)>,
        offsets: Vec<OffsetCommit>,
    ) -> Result<PreparedCommit, GroupError> {
        self.flush().await;
        if let Some(stop) = &self.stop {
            return Err(self.stop_error(stop));
        }
        let started = Instant::now();
        let tps: Vec<Tp> = offsets.iter().map(|o| o.tp.clone()).collect();
        let mut results = match member {
            Some((member_id, generation)) => self.group.check_commit(member_id, generation, &tps)?,
            None if !self.group.is_empty() => return Err(GroupError::NonEmptyGroup(self.name.clone())),
            None => vec![None; tps.len()],
        };
        let md = self.metadata.borrow().clone();
        let generation = match member {
            Some((_, g)) => g,
            None => self.group.generation(),
        };
        let now_ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let mut valid = Vec::new();
        for (o, result) in offsets.iter().zip(results.iter_mut()) {
            // A partition that does not exist is reported as such rather
            // than as not owned.
            if let Some(e) = validate(o, &md) {
                *result = Some(e);
            }
            if result.is_none() {
                let record = OffsetRecord {
                    offset: o.offset,
                    metadata: o.metadata.clone(),
                    generation,
                    commit_timestamp_ms: now_ms,
                };
                valid.push((o.tp.clone(), record));
            }
        }
        Ok(PreparedCommit { started, tps, results, valid })
    }

    /// Writes every prepared commit of the batch in one transaction (a
    /// later commit of a partition wins, as it would have written last)
    /// and answers each. Group commit keeps the actor free for membership
    /// events when many members auto-commit at once.
    async fn write_commits(&mut self, batch: CommitBatch) {
        if batch.entries.is_empty() {
            return;
        }
        let mut merged: BTreeMap<Tp, OffsetRecord> = BTreeMap::new();
        for (prepared, _) in &batch.entries {
            for (tp, record) in &prepared.valid {
                merged.insert(tp.clone(), record.clone());
            }
        }
        let merged: Vec<(Tp, OffsetRecord)> = merged.into_iter().collect();
        let outcome = if merged.is_empty() {
            Ok(())
        } else if let Some(stop) = &self.stop {
            Err(self.stop_error(stop))
        } else {
            self.write_offsets(&merged).await
        };
        if outcome.is_ok() && !merged.is_empty() {
            let mut committed = self.ctx.committed.lock().unwrap_or_else(|e| e.into_inner());
            let group = committed.entry(self.name.clone()).or_default();
            for (tp, record) in &merged {
                group.insert(tp.clone(), record.offset);
            }
        }
        for (prepared, reply) in batch.entries {
            let PreparedCommit { started, tps, mut results, valid } = prepared;
            match &outcome {
                Err(e) => {
                    for r in results.iter_mut().filter(|r| r.is_none()) {
                        *r = Some(e.clone());
                    }
                }
                Ok(()) if !valid.is_empty() => {
                    metrics::counter!("strata_group_offset_commits_total").increment(valid.len() as u64);
                    metrics::histogram!("strata_group_commit_seconds").record(started.elapsed().as_secs_f64());
                }
                Ok(()) => {}
            }
            let _ = reply.send(Ok(tps.into_iter().zip(results).collect()));
        }
    }

    async fn write_offsets(&mut self, valid: &[(Tp, OffsetRecord)]) -> Result<(), GroupError> {
        let store = &self.ctx.store;
        let unavailable = |e| GroupError::from_coord("writing offsets", &e);
        if self.version.is_none() {
            store.ensure_group(&self.name).await.map_err(unavailable)?;
        }
        let topics: BTreeMap<&str, ()> = valid.iter().map(|(tp, _)| (tp.0.as_str(), ())).collect();
        for topic in topics.keys() {
            if !self.offset_parents.contains(*topic) {
                store.ensure_offsets_topic(&self.name, topic).await.map_err(unavailable)?;
                self.offset_parents.insert(topic.to_string());
            }
        }
        let initial = self.group.to_record();
        match store.commit(&self.name, self.version, &initial, valid).await {
            Ok(Written::At(v)) => {
                self.version = Some(v);
                Ok(())
            }
            Ok(Written::Lost) => {
                self.stop = Some(Stop::Lost);
                Err(self.stop_error(&Stop::Lost))
            }
            Err(e) => {
                // A parent may have gone (a delete by a coordinator that
                // lost the group meanwhile): look again next time.
                self.offset_parents.clear();
                Err(unavailable(e))
            }
        }
    }

    async fn delete(&mut self) -> Result<(), GroupError> {
        self.flush().await;
        if let Some(stop) = &self.stop {
            return Err(self.stop_error(stop));
        }
        if !self.group.is_empty() {
            return Err(GroupError::NonEmptyGroup(self.name.clone()));
        }
        let store = &self.ctx.store;
        let unavailable = |e| GroupError::from_coord("deleting the group", &e);
        if self.version.is_none() && !store.group_exists(&self.name).await.map_err(unavailable)? {
            return Err(GroupError::GroupIdNotFound(self.name.clone()));
        }
        match store.delete_group(&self.name, self.version).await.map_err(unavailable)? {
            Written::At(_) => {
                tracing::info!(group = %self.name, "group deleted");
                self.stop = Some(Stop::Deleted);
                Ok(())
            }
            Written::Lost => {
                self.stop = Some(Stop::Lost);
                Err(self.stop_error(&Stop::Lost))
            }
        }
    }

    /// The coordinator to send members and callers to, from the current
    /// metadata (another broker, when this one is stopping). After a lost
    /// write it may still be this broker, whose metadata lags: a new actor
    /// then loads the group afresh.
    fn successor(&self, exclude_self: bool) -> Option<CoordinatorHint> {
        let md = self.metadata.borrow().clone();
        let own = self.ctx.id;
        let candidates = md.brokers.keys().copied().filter(|id| !md.draining.contains(id));
        let id = hash::pick(&self.name, candidates.filter(|id| !exclude_self || *id != own))?;
        let addr = md.brokers.get(&id).map(|b| b.addr.clone()).unwrap_or_default();
        Some(CoordinatorHint { id, addr })
    }

    fn stop_error(&self, stop: &Stop) -> GroupError {
        match stop {
            Stop::Unavailable(why) => GroupError::CoordinatorNotAvailable(why.clone()),
            Stop::Shutdown => {
                GroupError::NotCoordinator { group: self.name.clone(), coordinator: self.successor(true) }
            }
            Stop::Moved | Stop::Lost | Stop::Deleted | Stop::Idle => {
                GroupError::NotCoordinator { group: self.name.clone(), coordinator: self.successor(false) }
            }
        }
    }

    /// Ends every member stream with the reason and answers every queued
    /// request, so nobody waits on a group this broker gave up.
    fn finish(mut self, rx: &mut mpsc::Receiver<Command>) {
        rx.close();
        let stop = self.stop.take().unwrap_or(Stop::Shutdown);
        let error = self.stop_error(&stop);
        match stop {
            Stop::Idle | Stop::Deleted => tracing::debug!(group = %self.name, reason = ?stop, "group unloaded"),
            _ => tracing::info!(group = %self.name, reason = ?stop, error = %error, "no longer coordinating the group"),
        }
        for (_, link) in self.links.drain() {
            let _ = link.tx.try_send(ToMember::Error(error.clone()));
        }
        while let Ok(cmd) = rx.try_recv() {
            match cmd {
                Command::Join { link, .. } => {
                    let _ = link.tx.try_send(ToMember::Error(error.clone()));
                }
                Command::Commit { reply, .. } | Command::Alter { reply, .. } => {
                    let _ = reply.send(Err(error.clone()));
                }
                Command::Delete { reply } => {
                    let _ = reply.send(Err(error.clone()));
                }
                Command::Member { .. } | Command::Shutdown => {}
            }
        }
        let label = self.name.clone();
        if let Some(gone) = self.ctx.committed.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.name) {
            // The metrics crate cannot drop a series: zero it, as the
            // member gauges are.
            for (topic, partition) in gone.into_keys() {
                metrics::gauge!("strata_group_lag", "group" => label.clone(), "topic" => topic,
                    "partition" => partition.to_string())
                .set(0.0);
            }
        }
        metrics::gauge!("strata_group_members", "group" => label.clone()).set(0.0);
        metrics::gauge!("strata_group_generation", "group" => label).set(0.0);
    }
}

fn topic_counts(md: &ClusterMetadata) -> BTreeMap<String, u32> {
    md.topics.iter().map(|(t, info)| (t.clone(), u32::try_from(info.partitions.len()).unwrap_or(u32::MAX))).collect()
}

fn validate(o: &OffsetCommit, md: &ClusterMetadata) -> Option<GroupError> {
    if o.offset < 0 {
        return Some(GroupError::InvalidRequest(format!("{}-{}: offset {} is negative", o.tp.0, o.tp.1, o.offset)));
    }
    if o.metadata.len() > MAX_OFFSET_METADATA_BYTES {
        return Some(GroupError::InvalidRequest(format!(
            "{}-{}: offset metadata is longer than {MAX_OFFSET_METADATA_BYTES} bytes",
            o.tp.0, o.tp.1
        )));
    }
    if md.partition(&o.tp.0, o.tp.1).is_none() {
        return Some(GroupError::UnknownTopicOrPartition { topic: o.tp.0.clone(), partition: o.tp.1 });
    }
    None
}
