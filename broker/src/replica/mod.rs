//! The replica manager: which partitions this broker hosts and in which
//! role, and the data path (produce, fetch, list offsets) on top of them.
//!
//! Code map:
//! - [`ReplicaManager`] (this file): reacts to cluster metadata (become
//!   leader / follower, delete what is no longer assigned here), runs log
//!   maintenance, shuts down cleanly.
//! - `data_path.rs`: produce, fetch (long-poll) and list offsets.
//! - `partition.rs`: one hosted replica: log, role, high watermark.
//! - `topic_config.rs`: topic configs → [`LogConfig`].
//! - `error.rs`, `types.rs`: domain errors and request/response types.
//!
//! Threads: metadata changes and maintenance run on one background task
//! each, doing their file work in `spawn_blocking`. Data-path calls do
//! their log I/O in `spawn_blocking` too, and wait (long-poll, acks=all)
//! holding only watch receivers, never a partition or a lock.

mod data_path;
mod error;
mod fetcher;
mod partition;
mod topic_config;
mod types;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

pub use error::{LeaderHint, ReplicaError};
pub use topic_config::{TOPIC_CONFIG_KEYS, log_config_for, validate_topic_configs};
pub use types::{
    Acks, EARLIEST_TIMESTAMP, EpochEndResult, EpochQuery, FetchParams, FetchPartition, FetchResult, FetchedData,
    LATEST_TIMESTAMP, ListOffsetsInput, ListOffsetsResult, ProduceInfo, ProduceInput, ProduceResult, ReplicaConfig,
};

use crate::log::{LogConfig, LogManager, TopicPartition};
use crate::metadata::model::{BrokerId, ClusterMetadata, PartitionInfo, TopicInfo};
use partition::{Partition, ReplicaState, Role, Transition, read_topic_id, write_topic_id};

/// Shortest period accepted for the background loops: a zero interval
/// from a config file must not turn them into busy loops.
const MIN_LOOP_PERIOD: Duration = Duration::from_millis(10);

pub struct ReplicaManager {
    /// For the tasks this manager starts later (fetchers).
    me: Weak<ReplicaManager>,
    broker_id: BrokerId,
    config: ReplicaConfig,
    metadata: watch::Receiver<Arc<ClusterMetadata>>,
    /// `None` once shut down. Only the background tasks clone the Arc (and
    /// are joined before shutdown takes it back), so shutdown can own the
    /// manager again to close it.
    logs: Mutex<Option<Arc<LogManager>>>,
    partitions: RwLock<HashMap<TopicPartition, Arc<Partition>>>,
    /// Revision of the last metadata applied to the partitions.
    applied: watch::Sender<u64>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
    /// One task per leader this broker follows partitions of.
    fetchers: fetcher::Fetchers,
    /// ISR changes for the ensemble writer (see `take_isr_requests`).
    isr_tx: mpsc::UnboundedSender<IsrRequest>,
    isr_rx: Mutex<Option<mpsc::UnboundedReceiver<IsrRequest>>>,
    /// When the ensemble last confirmed this broker's session, and for how
    /// long such a confirmation lets it act as leader. None: no ensemble
    /// (tests of the data path alone).
    lease: Mutex<Option<(watch::Receiver<Instant>, Duration)>>,
    runtime: tokio::runtime::Handle,
}

/// An ISR change a leader asks the ensemble to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrRequest {
    pub topic: String,
    pub partition: u32,
    /// The change is void if the partition has another leader epoch by then.
    pub leader_epoch: i32,
    pub isr: Vec<BrokerId>,
}

impl std::fmt::Debug for ReplicaManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaManager")
            .field("broker_id", &self.broker_id)
            .field("applied_revision", &*self.applied.borrow())
            .field("partitions", &self.read_partitions().len())
            .finish()
    }
}

impl ReplicaManager {
    /// Starts managing the partitions of `logs` for broker `broker_id`,
    /// following `metadata`. Must be called inside a Tokio runtime (it
    /// spawns the metadata and maintenance tasks).
    ///
    /// Nothing is deleted or served until a metadata value with
    /// `revision > 0` arrives: the initial default value means "not loaded
    /// yet", not "no topics".
    pub fn new(
        broker_id: BrokerId,
        logs: LogManager,
        metadata: watch::Receiver<Arc<ClusterMetadata>>,
        config: ReplicaConfig,
    ) -> Arc<ReplicaManager> {
        let (stop, stop_rx) = watch::channel(false);
        let (isr_tx, isr_rx) = mpsc::unbounded_channel();
        let isr_check_every = (config.replica_lag_time_max / 2).max(MIN_LOOP_PERIOD);
        let maintenance_every = config.maintenance_interval.max(MIN_LOOP_PERIOD);
        let retry_every = config.retry_interval.max(MIN_LOOP_PERIOD);
        let rm = Arc::new_cyclic(|me| ReplicaManager {
            me: me.clone(),
            broker_id,
            config,
            metadata: metadata.clone(),
            logs: Mutex::new(Some(Arc::new(logs))),
            partitions: RwLock::new(HashMap::new()),
            applied: watch::Sender::new(0),
            stop,
            tasks: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            fetchers: fetcher::Fetchers::default(),
            isr_tx,
            isr_rx: Mutex::new(Some(isr_rx)),
            lease: Mutex::new(None),
            runtime: tokio::runtime::Handle::current(),
        });
        // The tasks hold weak references: dropping the manager without
        // shutdown() still ends them.
        let weak = Arc::downgrade(&rm);
        let tasks = vec![
            tokio::spawn(metadata_loop(weak.clone(), metadata, stop_rx.clone(), retry_every)),
            tokio::spawn(maintenance_loop(weak.clone(), stop_rx.clone(), maintenance_every)),
            tokio::spawn(isr_shrink_loop(weak, stop_rx, isr_check_every)),
        ];
        *rm.tasks.lock().unwrap_or_else(|p| p.into_inner()) = tasks;
        rm
    }

    pub fn broker_id(&self) -> BrokerId {
        self.broker_id
    }

    /// The ISR changes this broker's leaders ask for, to be written to the
    /// ensemble by whoever holds the session (once; later calls get None).
    pub fn take_isr_requests(&self) -> Option<mpsc::UnboundedReceiver<IsrRequest>> {
        self.isr_rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// From now on, lead only while the ensemble has confirmed the session
    /// within `valid_for` (`confirmed`: when the newest answered keep-alive
    /// was sent). A new session replaces the old lease.
    pub fn set_lease(&self, confirmed: watch::Receiver<Instant>, valid_for: Duration) {
        *self.lease.lock().unwrap_or_else(|p| p.into_inner()) = Some((confirmed, valid_for));
    }

    /// Whether this broker may still act as leader.
    pub fn lease_valid(&self) -> bool {
        match &*self.lease.lock().unwrap_or_else(|p| p.into_inner()) {
            None => true,
            Some((confirmed, valid_for)) => confirmed.borrow().elapsed() < *valid_for,
        }
    }

    /// The ensemble recorded an ISR change this broker asked for.
    pub fn isr_written(
        &self,
        topic: &str,
        partition: u32,
        leader_epoch: i32,
        isr: Vec<BrokerId>,
        partition_epoch: u64,
    ) {
        if let Some(p) = self.partition(&TopicPartition::new(topic, partition)) {
            p.isr_written(leader_epoch, isr, partition_epoch);
        }
    }

    /// An ISR change could not be written (conflict or ensemble error); the
    /// leader will ask again if it still wants it.
    pub fn isr_write_failed(&self, topic: &str, partition: u32) {
        if let Some(p) = self.partition(&TopicPartition::new(topic, partition)) {
            p.isr_write_failed();
        }
    }

    fn ask_isr(&self, tp: &TopicPartition, leader_epoch: i32, isr: Vec<BrokerId>) {
        info!(partition = %tp, leader_epoch, ?isr, "asking the ensemble for an ISR change");
        let _ = self.isr_tx.send(IsrRequest { topic: tp.topic.clone(), partition: tp.partition, leader_epoch, isr });
    }

    /// Leader side of replication: what a follower's fetch says about it.
    fn record_follower_fetches(&self, follower: BrokerId, requests: &[FetchPartition], results: &[FetchResult]) {
        for (req, result) in requests.iter().zip(results) {
            let (Ok(data), Ok(offset)) = (&result.outcome, u64::try_from(req.offset)) else {
                continue;
            };
            let tp = TopicPartition::new(req.topic.clone(), req.partition);
            let Some(p) = self.partition(&tp) else { continue };
            let (leader_epoch, _) = p.leader_epoch_and_isr();
            if let Some((epoch, isr)) = p.follower_fetched(follower, leader_epoch, offset, data.log_end_offset) {
                self.ask_isr(&tp, epoch, isr);
            }
        }
    }

    /// Sets the gauges that mirror this broker's partitions (called just
    /// before a metrics scrape).
    pub fn refresh_metrics(&self) {
        let partitions: Vec<Arc<Partition>> = self.read_partitions().values().cloned().collect();
        let led = partitions.iter().filter(|p| p.is_leader()).count();
        let under = partitions.iter().filter(|p| p.is_leader() && p.is_under_replicated()).count();
        let bytes: u64 = partitions.iter().map(|p| p.log_size_bytes()).sum();
        metrics::gauge!("strata_broker_partitions_led").set(led as f64);
        metrics::gauge!("strata_broker_partitions_followed").set((partitions.len() - led) as f64);
        metrics::gauge!("strata_broker_under_replicated_partitions").set(under as f64);
        metrics::gauge!("strata_broker_log_size_bytes").set(bytes as f64);
    }

    /// The high watermark of a partition this broker hosts (leader or
    /// follower; a follower's trails the leader's by a fetch at most).
    pub fn local_high_watermark(&self, topic: &str, partition: u32) -> Option<i64> {
        let tp = TopicPartition::new(topic.to_string(), partition);
        self.partition(&tp).and_then(|p| i64::try_from(p.high_watermark()).ok())
    }

    /// Under-replicated partitions this broker leads (ISR smaller than the
    /// replica set).
    pub fn under_replicated(&self) -> usize {
        self.read_partitions().values().filter(|p| p.is_leader() && p.is_under_replicated()).count()
    }

    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    /// Partitions this broker currently leads.
    pub fn partitions_led(&self) -> usize {
        self.read_partitions().values().filter(|p| p.is_leader()).count()
    }

    /// Partitions this broker hosts without leading them.
    pub fn partitions_followed(&self) -> usize {
        self.read_partitions().values().filter(|p| !p.is_leader()).count()
    }

    /// Revision of the last cluster metadata applied to the partitions (0:
    /// none yet).
    pub fn applied_revision(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until metadata at `revision` or later has been applied; false
    /// if the manager shuts down first.
    pub async fn wait_applied(&self, revision: u64) -> bool {
        let mut applied = self.applied.subscribe();
        let mut stop = self.stop.subscribe();
        tokio::select! {
            r = applied.wait_for(|&r| r >= revision) => r.is_ok(),
            _ = stop.wait_for(|&s| s) => false,
        }
    }

    /// Stops the background tasks, stops serving, and closes every log
    /// cleanly (flushed, with the clean-shutdown marker, so the next start
    /// skips recovery). Idempotent; errors are logged.
    pub async fn shutdown(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.stop.send_replace(true);
        self.fetchers.stop_all().await;
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            if let Err(e) = task.await {
                warn!(error = %e, "replica manager task ended abnormally");
            }
        }
        let partitions: Vec<_> = self.write_partitions().drain().map(|(_, p)| p).collect();
        for p in &partitions {
            p.stop_serving();
        }
        drop(partitions);
        let Some(logs) = self.logs.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let closed = tokio::task::spawn_blocking(move || match Arc::try_unwrap(logs) {
            // Waits for in-flight appends and reads to release their logs.
            Ok(logs) => logs.close().map_err(|e| e.to_string()),
            Err(_) => Err("the log manager is still in use".to_string()),
        })
        .await;
        match closed {
            Ok(Ok(())) => info!("all partition logs closed cleanly"),
            Ok(Err(e)) => error!(error = %e, "closing partition logs failed; they will be recovered on restart"),
            Err(e) => error!(error = %e, "closing partition logs failed; they will be recovered on restart"),
        }
    }

    fn read_partitions(&self) -> RwLockReadGuard<'_, HashMap<TopicPartition, Arc<Partition>>> {
        // The map is only ever changed by single inserts and removes, so a
        // panic elsewhere cannot leave it half-updated.
        self.partitions.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_partitions(&self) -> RwLockWriteGuard<'_, HashMap<TopicPartition, Arc<Partition>>> {
        self.partitions.write().unwrap_or_else(|p| p.into_inner())
    }

    fn partition(&self, tp: &TopicPartition) -> Option<Arc<Partition>> {
        self.read_partitions().get(tp).cloned()
    }

    fn log_manager(&self) -> Option<Arc<LogManager>> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Brings the hosted partitions in line with `md`. Blocking (opens,
    /// creates and deletes logs). Returns false if some partition could not
    /// be set up, so the caller retries.
    fn apply_metadata(&self, md: &ClusterMetadata) -> bool {
        if md.revision == 0 || self.closed.load(Ordering::Acquire) {
            return true;
        }
        let Some(logs) = self.log_manager() else {
            return true;
        };
        let mut assigned: BTreeMap<TopicPartition, (&TopicInfo, &PartitionInfo)> = BTreeMap::new();
        for (topic, info) in &md.topics {
            for (index, p) in info.partitions.iter().enumerate() {
                if let Ok(index) = u32::try_from(index)
                    && p.replicas.contains(&self.broker_id)
                {
                    assigned.insert(TopicPartition::new(topic.clone(), index), (info, p));
                }
            }
        }
        let mut all_ok = true;
        // Local partitions: those being served and those merely on disk
        // (found at start-up, never assigned since).
        let mut local: BTreeSet<TopicPartition> = logs.partitions().into_iter().collect();
        local.extend(self.read_partitions().keys().cloned());
        for tp in local.iter().filter(|tp| !assigned.contains_key(*tp)) {
            info!(partition = %tp, revision = md.revision, "partition is no longer assigned here; deleting its log");
            all_ok &= self.remove_partition(&logs, tp);
        }
        for (tp, (topic, p)) in &assigned {
            if let Err(e) = self.ensure_partition(&logs, tp, topic, p) {
                warn!(partition = %tp, error = %e, "cannot host partition; will retry");
                all_ok = false;
            }
        }
        self.update_fetchers();
        self.applied.send_replace(md.revision);
        all_ok
    }

    /// Points each followed partition's fetching at its current leader.
    fn update_fetchers(&self) {
        let mut by_leader: BTreeMap<BrokerId, BTreeMap<TopicPartition, i32>> = BTreeMap::new();
        for (tp, p) in self.read_partitions().iter() {
            if let Some((leader, leader_epoch)) = p.follows() {
                by_leader.entry(leader).or_default().insert(tp.clone(), leader_epoch);
            }
        }
        self.fetchers.assign(by_leader, self.me.clone(), &self.stop.subscribe(), &self.runtime);
    }

    fn replica_state(&self, topic: &TopicInfo, p: &PartitionInfo, config: LogConfig) -> ReplicaState {
        let (role, leader, leader_epoch, isr) = match &p.state {
            Some(s) if s.leader == self.broker_id => (Role::Leader, s.leader, s.leader_epoch, s.isr.clone()),
            Some(s) => (Role::Follower, s.leader, s.leader_epoch, s.isr.clone()),
            // The controller has not elected anyone yet: keep the log, serve
            // nothing.
            None => (Role::Follower, -1, -1, Vec::new()),
        };
        let min_insync = topic
            .configs
            .get(topic_config::MIN_INSYNC_REPLICAS)
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(self.config.default_min_insync_replicas)
            .max(1);
        ReplicaState {
            role,
            leader,
            leader_epoch,
            replicas: p.replicas.clone(),
            isr,
            partition_epoch: p.state.as_ref().map_or(0, |s| s.partition_epoch),
            min_insync,
            config,
        }
    }

    /// Makes this broker host `tp` in the role the metadata gives it.
    /// Blocking.
    fn ensure_partition(
        &self,
        logs: &LogManager,
        tp: &TopicPartition,
        topic: &TopicInfo,
        p: &PartitionInfo,
    ) -> Result<(), ReplicaError> {
        let config = topic_config::log_config_lenient(&tp.topic, &topic.configs, &self.config.log_defaults);
        let state = self.replica_state(topic, p, config);
        if let Some(existing) = self.partition(tp) {
            if same_topic(existing.topic_id(), &topic.topic_id) {
                log_transition(tp, existing.update(state));
                return Ok(());
            }
            info!(partition = %tp, old = existing.topic_id(), new = %topic.topic_id, "topic was re-created; dropping the old data");
            drop(existing);
            if !self.remove_partition(logs, tp) {
                return Err(ReplicaError::Storage(format!("cannot delete the old log of {tp}")));
            }
        }
        let mut log = logs.get_or_create(tp, Some(state.config.clone()))?;
        let dir = log.lock().unwrap_or_else(|p| p.into_inner()).dir().to_path_buf();
        match read_topic_id(&dir) {
            Some(found) if !same_topic(&found, &topic.topic_id) => {
                info!(partition = %tp, old = %found, new = %topic.topic_id, "local log belongs to a deleted topic of the same name; dropping it");
                drop(log);
                logs.delete(tp)?;
                log = logs.get_or_create(tp, Some(state.config.clone()))?;
                self.record_topic_id(&dir, tp, &topic.topic_id)?;
            }
            Some(_) => {}
            None => self.record_topic_id(&dir, tp, &topic.topic_id)?,
        }
        let (role, leader_epoch) = (state.role, state.leader_epoch);
        let partition = Partition::new(tp.clone(), topic.topic_id.clone(), self.broker_id, log, state);
        log_transition(tp, Transition::Role { role, leader_epoch });
        self.write_partitions().insert(tp.clone(), Arc::new(partition));
        Ok(())
    }

    fn record_topic_id(&self, dir: &std::path::Path, tp: &TopicPartition, topic_id: &str) -> Result<(), ReplicaError> {
        if topic_id.is_empty() {
            return Ok(());
        }
        write_topic_id(dir, topic_id)
            .map_err(|e| ReplicaError::Storage(format!("writing the topic id of {tp} in {}: {e}", dir.display())))
    }

    /// Stops serving `tp` and deletes its log (if any). Blocking: waits for
    /// in-flight appends and reads of the log to finish.
    fn remove_partition(&self, logs: &LogManager, tp: &TopicPartition) -> bool {
        let removed = self.write_partitions().remove(tp);
        if let Some(p) = removed {
            p.stop_serving();
        }
        match logs.delete(tp) {
            Ok(_) => true,
            Err(e) => {
                warn!(partition = %tp, error = %e, "deleting partition log failed; will retry");
                false
            }
        }
    }

    /// The error for a request about a partition this broker does not lead,
    /// from the current metadata.
    fn leadership_error(&self, topic: &str, partition: u32) -> ReplicaError {
        if self.closed.load(Ordering::Acquire) {
            return ReplicaError::ShuttingDown;
        }
        let md = self.metadata.borrow().clone();
        let Some(info) = md.partition(topic, partition) else {
            return ReplicaError::UnknownTopicOrPartition { topic: topic.to_string(), partition };
        };
        match &info.state {
            Some(s) if s.leader >= 0 && s.leader != self.broker_id => ReplicaError::NotLeader {
                topic: topic.to_string(),
                partition,
                leader: Some(LeaderHint {
                    id: s.leader,
                    addr: md.brokers.get(&s.leader).map(|b| b.addr.clone()).unwrap_or_default(),
                }),
            },
            // No leader, or this broker was elected but has not taken over
            // yet (or just gave up the role): retriable.
            _ => ReplicaError::LeaderNotAvailable { topic: topic.to_string(), partition },
        }
    }

    /// The partition, if this broker leads it and the topic exists.
    fn leader_partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>, ReplicaError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(ReplicaError::ShuttingDown);
        }
        // Metadata first: a topic being deleted is unknown even while its
        // log still exists here.
        if self.metadata.borrow().partition(topic, partition).is_none() {
            return Err(ReplicaError::UnknownTopicOrPartition { topic: topic.to_string(), partition });
        }
        match self.partition(&TopicPartition::new(topic, partition)) {
            Some(p) if p.is_leader() => Ok(p),
            _ => Err(self.leadership_error(topic, partition)),
        }
    }

    /// Partition-level NOT_LEADER errors carry no hint (the partition does
    /// not know the metadata); fill it in.
    fn with_leader_hint(&self, e: ReplicaError) -> ReplicaError {
        match e {
            ReplicaError::NotLeader { topic, partition, leader: None } => self.leadership_error(&topic, partition),
            other => other,
        }
    }
}

/// Topic ids identify a topic's incarnation; an empty one (not recorded)
/// matches anything.
fn same_topic(a: &str, b: &str) -> bool {
    a.is_empty() || b.is_empty() || a == b
}

fn log_transition(tp: &TopicPartition, t: Transition) {
    match t {
        Transition::Role { role: Role::Leader, leader_epoch } => {
            info!(partition = %tp, leader_epoch, "became leader")
        }
        Transition::Role { role: Role::Follower, leader_epoch } => {
            info!(partition = %tp, leader_epoch, "became follower")
        }
        Transition::Details => debug!(partition = %tp, "partition replicas, ISR or configs changed"),
        Transition::Unchanged => {}
    }
}

/// Applies every metadata change, in order, one at a time.
async fn metadata_loop(
    rm: Weak<ReplicaManager>,
    mut metadata: watch::Receiver<Arc<ClusterMetadata>>,
    mut stop: watch::Receiver<bool>,
    retry_every: Duration,
) {
    loop {
        let snapshot = metadata.borrow_and_update().clone();
        let Some(strong) = rm.upgrade() else {
            return;
        };
        let all_ok = match tokio::task::spawn_blocking(move || strong.apply_metadata(&snapshot)).await {
            Ok(ok) => ok,
            Err(e) => {
                error!(error = %e, "applying cluster metadata failed");
                false
            }
        };
        tokio::select! {
            changed = metadata.changed() => {
                if changed.is_err() {
                    debug!("metadata source closed; no more partition changes");
                    return;
                }
            }
            _ = stop.changed() => return,
            // A partition failed to open (disk full, I/O error): try the
            // latest metadata again rather than wait for the next change.
            () = tokio::time::sleep(retry_every), if !all_ok => {}
        }
    }
}

/// Leaders drop followers that lag too long from the ISR.
async fn isr_shrink_loop(rm: Weak<ReplicaManager>, mut stop: watch::Receiver<bool>, every: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let Some(rm) = rm.upgrade() else { return };
        let max_lag = rm.config.replica_lag_time_max;
        let led: Vec<(TopicPartition, Arc<Partition>)> =
            rm.read_partitions().iter().filter(|(_, p)| p.is_leader()).map(|(tp, p)| (tp.clone(), p.clone())).collect();
        for (tp, p) in led {
            if let Some((epoch, isr)) = p.shrink_isr(max_lag) {
                rm.ask_isr(&tp, epoch, isr);
            }
        }
    }
}

/// Periodic flush-by-interval, roll-by-time and retention.
async fn maintenance_loop(rm: Weak<ReplicaManager>, mut stop: watch::Receiver<bool>, every: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let Some(logs) = rm.upgrade().and_then(|rm| rm.log_manager()) else {
            return;
        };
        match tokio::task::spawn_blocking(move || logs.maintenance()).await {
            Ok(outcome) if outcome.deleted_segments > 0 => {
                info!(segments = outcome.deleted_segments, bytes = outcome.deleted_bytes, "retention deleted segments");
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "log maintenance failed"),
        }
    }
}
