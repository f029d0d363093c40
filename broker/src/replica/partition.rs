//! One partition replica hosted by this broker: its log, its role, its
//! high watermark, and the signal long-polls wait on.
//!
//! Locking: `state` (RwLock) is always taken before `log` (Mutex), never
//! the other way round. Both are std locks, held only on blocking threads
//! (`spawn_blocking`) or for in-memory work, never across an `.await`.
//! Appends hold `state` for reading, so a role change (write lock) waits
//! for in-flight appends and no append lands after leadership is lost.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_proto::record_batch;
use tokio::sync::watch;

use super::error::ReplicaError;
use super::types::{EARLIEST_TIMESTAMP, FetchedData, LATEST_TIMESTAMP, ProduceInfo};
use crate::log::{Log, LogConfig, TopicPartition};
use crate::metadata::model::BrokerId;

/// Kafka's file naming the topic a partition directory belongs to, so a
/// topic deleted and re-created under the same name (possibly while this
/// broker was down) is never served from the old incarnation's data. The
/// log loader ignores files it does not know.
const PARTITION_METADATA: &str = "partition.metadata";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Leader,
    /// Serves nothing; a fetcher copies the leader's log into it.
    Follower,
}

/// What the metadata says about this replica, plus its storage settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplicaState {
    pub role: Role,
    /// -1 when no broker leads.
    pub leader: BrokerId,
    pub leader_epoch: i32,
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    /// Orders states within one leader epoch (ISR changes).
    pub partition_epoch: u64,
    /// acks=all writes are refused while the ISR is smaller.
    pub min_insync: usize,
    pub config: LogConfig,
}

/// How far a read may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadBound {
    /// Consumers: only committed data.
    HighWatermark,
    /// Follower replicas: everything the leader has.
    LogEnd,
}

/// A successful leader append.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Appended {
    pub info: ProduceInfo,
    /// Log end offset right after the append: acks=all completes once the
    /// high watermark reaches it.
    pub end_offset: u64,
    pub leader_epoch: i32,
}

/// What a metadata update changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    Unchanged,
    /// Role or leader epoch changed.
    Role {
        role: Role,
        leader_epoch: i32,
    },
    /// Only ISR, replicas or configs changed.
    Details,
}

pub(crate) struct Partition {
    tp: TopicPartition,
    topic_id: String,
    broker_id: BrokerId,
    log: Arc<Mutex<Log>>,
    state: RwLock<ReplicaState>,
    /// Consumers read below this offset only. Stored under the log lock.
    high_watermark: AtomicU64,
    /// Bumped after every append, high-watermark move and role change.
    /// Waiters hold only receivers, never the partition, so deleting or
    /// closing the log is not held up by a parked long-poll.
    changes: watch::Sender<u64>,
    /// Leader only: what each follower's fetches say about it.
    followers: Mutex<HashMap<BrokerId, FollowerProgress>>,
    /// Leader only: the log end when this leader epoch began; a follower
    /// joins the ISR only once it has reached it.
    epoch_start_offset: AtomicU64,
    /// Leader only: the ISR change asked of the ensemble and not yet seen
    /// back, so the same change is not asked for on every fetch.
    pending_isr: Mutex<Option<(Vec<BrokerId>, Instant)>>,
}

/// The leader's view of one follower (Kafka's `Replica` state).
#[derive(Debug, Clone, Copy)]
struct FollowerProgress {
    /// The follower's log end, as its latest fetch offset says; None until
    /// it has fetched from this leader epoch.
    log_end: Option<u64>,
    /// Last time the follower was known to have everything the leader had.
    last_caught_up: Instant,
    /// The leader's log end when the previous fetch was answered, and when.
    leader_end_at_last_fetch: u64,
    last_fetch: Instant,
}

impl FollowerProgress {
    fn fresh(now: Instant) -> FollowerProgress {
        // A new leader gives every follower a full lag period to show up,
        // as Kafka does, so it does not shrink the ISR on its first check.
        FollowerProgress { log_end: None, last_caught_up: now, leader_end_at_last_fetch: 0, last_fetch: now }
    }
}

/// How long an ISR change may stay unanswered before it is asked again.
const PENDING_ISR_TIMEOUT: Duration = Duration::from_secs(5);

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("tp", &self.tp)
            .field("topic_id", &self.topic_id)
            .field("high_watermark", &self.high_watermark())
            .finish()
    }
}

impl Partition {
    /// Takes over an open log. Blocking: locks the log.
    pub(crate) fn new(
        tp: TopicPartition,
        topic_id: String,
        broker_id: BrokerId,
        log: Arc<Mutex<Log>>,
        state: ReplicaState,
    ) -> Partition {
        let partition = Partition {
            tp,
            topic_id,
            broker_id,
            log,
            high_watermark: AtomicU64::new(0),
            changes: watch::Sender::new(0),
            state: RwLock::new(state),
            followers: Mutex::new(HashMap::new()),
            epoch_start_offset: AtomicU64::new(0),
            pending_isr: Mutex::new(None),
        };
        {
            let state = partition.read_state();
            let mut log = partition.lock_log();
            if log.config() != &state.config {
                log.set_config(state.config.clone());
            }
            // Without a checkpoint of the high watermark, start from the log
            // start: a leader moves it up as its followers report in, and a
            // follower takes it from its leader.
            partition.high_watermark.store(log.log_start_offset(), Ordering::Release);
            if state.role == Role::Leader {
                partition.become_leader(&state, &log);
            }
        }
        partition
    }

    pub(crate) fn topic_id(&self) -> &str {
        &self.topic_id
    }

    fn read_state(&self) -> RwLockReadGuard<'_, ReplicaState> {
        // Nothing here panics while holding the lock; if something did, the
        // state is still a consistent value (fields are replaced whole).
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, ReplicaState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_log(&self) -> MutexGuard<'_, Log> {
        // Same policy as LogManager: a Log never changes state halfway on
        // error, so a poisoned lock still guards a usable log.
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn is_leader(&self) -> bool {
        self.read_state().role == Role::Leader
    }

    /// The leader and epoch to fetch from, when this replica follows one.
    pub(crate) fn follows(&self) -> Option<(BrokerId, i32)> {
        let state = self.read_state();
        (state.role == Role::Follower && state.leader >= 0 && state.leader != self.broker_id)
            .then_some((state.leader, state.leader_epoch))
    }

    pub(crate) fn is_under_replicated(&self) -> bool {
        let state = self.read_state();
        state.isr.len() < state.replicas.len()
    }

    /// Still the leader, in the same epoch as when an append happened.
    pub(crate) fn is_leader_in(&self, leader_epoch: i32) -> bool {
        let state = self.read_state();
        state.role == Role::Leader && state.leader_epoch == leader_epoch
    }

    pub(crate) fn high_watermark(&self) -> u64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    #[cfg(test)]
    pub(crate) fn waiters(&self) -> usize {
        self.changes.receiver_count()
    }

    fn signal(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn lock_followers(&self) -> MutexGuard<'_, HashMap<BrokerId, FollowerProgress>> {
        self.followers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_pending_isr(&self) -> MutexGuard<'_, Option<(Vec<BrokerId>, Instant)>> {
        self.pending_isr.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Leader: the high watermark is the smallest log end among the
    /// in-sync replicas, and never moves back. A follower of the ISR that
    /// has not fetched in this epoch holds it where it is. Returns whether
    /// it moved (the caller signals waiters).
    fn advance_high_watermark(&self, state: &ReplicaState, leader_end: u64) -> bool {
        let mut candidate = leader_end;
        {
            let followers = self.lock_followers();
            for id in state.isr.iter().filter(|id| **id != self.broker_id) {
                match followers.get(id).and_then(|f| f.log_end) {
                    Some(end) => candidate = candidate.min(end),
                    None => return false,
                }
            }
        }
        let previous = self.high_watermark.fetch_max(candidate, Ordering::AcqRel);
        candidate > previous
    }

    /// Resets the leader's bookkeeping for a new leader epoch.
    fn become_leader(&self, state: &ReplicaState, log: &Log) {
        let now = Instant::now();
        *self.lock_followers() = state
            .replicas
            .iter()
            .filter(|r| **r != self.broker_id)
            .map(|r| (*r, FollowerProgress::fresh(now)))
            .collect();
        *self.lock_pending_isr() = None;
        self.epoch_start_offset.store(log.log_end_offset(), Ordering::Release);
        self.advance_high_watermark(state, log.log_end_offset());
    }

    /// Applies the state derived from new metadata. Blocking (may lock the
    /// log to change its config).
    pub(crate) fn update(&self, mut new: ReplicaState) -> Transition {
        let mut state = self.write_state();
        if new.role == state.role
            && new.leader_epoch == state.leader_epoch
            && new.partition_epoch < state.partition_epoch
        {
            // Metadata older than an ISR change this leader already wrote
            // and applied: keep the newer ISR.
            new.isr = state.isr.clone();
            new.partition_epoch = state.partition_epoch;
        }
        if *state == new {
            return Transition::Unchanged;
        }
        let role_changed = state.role != new.role || state.leader_epoch != new.leader_epoch;
        let isr_changed = state.isr != new.isr;
        if state.config != new.config || new.role == Role::Leader {
            let mut log = self.lock_log();
            if log.config() != &new.config {
                log.set_config(new.config.clone());
            }
            if new.role == Role::Leader && role_changed {
                self.become_leader(&new, &log);
            } else if new.role == Role::Leader && isr_changed {
                self.isr_settled(&new.isr);
                self.advance_high_watermark(&new, log.log_end_offset());
            }
        }
        let transition = if role_changed {
            Transition::Role { role: new.role, leader_epoch: new.leader_epoch }
        } else {
            Transition::Details
        };
        *state = new;
        drop(state);
        // Parked fetches and acks=all waits re-check their partition: a
        // former leader must answer NOT_LEADER rather than wait out max_wait.
        self.signal();
        transition
    }

    fn isr_settled(&self, isr: &[BrokerId]) {
        let mut pending = self.lock_pending_isr();
        if pending.as_ref().is_some_and(|(want, _)| want.as_slice() == isr) {
            *pending = None;
        }
    }

    /// The ensemble accepted this leader's ISR change (at
    /// `partition_epoch`); apply it without waiting for the metadata watch.
    pub(crate) fn isr_written(&self, leader_epoch: i32, isr: Vec<BrokerId>, partition_epoch: u64) {
        let mut state = self.write_state();
        if state.role != Role::Leader || state.leader_epoch != leader_epoch || partition_epoch <= state.partition_epoch
        {
            return;
        }
        state.isr = isr;
        state.partition_epoch = partition_epoch;
        self.isr_settled(&state.isr);
        let log_end = self.lock_log().log_end_offset();
        self.advance_high_watermark(&state, log_end);
        drop(state);
        self.signal();
    }

    /// An ISR change could not be written; let the next check ask again.
    pub(crate) fn isr_write_failed(&self) {
        *self.lock_pending_isr() = None;
    }

    /// Records that an ISR change is being asked for; false when the same
    /// change is already pending.
    fn ask_isr(&self, isr: Vec<BrokerId>) -> Option<Vec<BrokerId>> {
        let mut pending = self.lock_pending_isr();
        if let Some((_, since)) = pending.as_ref()
            && since.elapsed() < PENDING_ISR_TIMEOUT
        {
            return None;
        }
        *pending = Some((isr.clone(), Instant::now()));
        Some(isr)
    }

    /// Leader: a follower fetched from `fetch_offset` while the leader's
    /// log ended at `leader_end`. Updates its progress and the high
    /// watermark, and returns an ISR to ask the ensemble for when the
    /// follower has caught up and is not in the ISR yet.
    pub(crate) fn follower_fetched(
        &self,
        follower: BrokerId,
        leader_epoch: i32,
        fetch_offset: u64,
        leader_end: u64,
    ) -> Option<(i32, Vec<BrokerId>)> {
        let state = self.read_state();
        if state.role != Role::Leader || state.leader_epoch != leader_epoch {
            return None;
        }
        let now = Instant::now();
        {
            let mut followers = self.lock_followers();
            let f = followers.entry(follower).or_insert_with(|| FollowerProgress::fresh(now));
            // Kafka's rule: caught up now if it asked for the leader's end;
            // caught up as of its previous fetch if it asked for what the
            // leader had then.
            if fetch_offset >= leader_end {
                f.last_caught_up = now;
            } else if f.log_end.is_some() && fetch_offset >= f.leader_end_at_last_fetch {
                f.last_caught_up = f.last_caught_up.max(f.last_fetch);
            }
            f.log_end = Some(fetch_offset);
            f.leader_end_at_last_fetch = leader_end;
            f.last_fetch = now;
        }
        if self.advance_high_watermark(&state, leader_end) {
            self.signal();
        }
        let joins = !state.isr.contains(&follower)
            && state.replicas.contains(&follower)
            && fetch_offset >= self.high_watermark()
            && fetch_offset >= self.epoch_start_offset.load(Ordering::Acquire);
        if !joins {
            return None;
        }
        let mut isr = state.isr.clone();
        isr.push(follower);
        self.ask_isr(isr).map(|isr| (state.leader_epoch, isr))
    }

    /// Leader: the ISR without the followers that have not caught up for
    /// `max_lag`, if that drops anyone (and the change is not pending).
    pub(crate) fn shrink_isr(&self, max_lag: Duration) -> Option<(i32, Vec<BrokerId>)> {
        let state = self.read_state();
        if state.role != Role::Leader {
            return None;
        }
        let now = Instant::now();
        let lagging: Vec<BrokerId> = {
            let followers = self.lock_followers();
            state
                .isr
                .iter()
                .copied()
                .filter(|id| *id != self.broker_id)
                .filter(|id| followers.get(id).is_none_or(|f| now.duration_since(f.last_caught_up) > max_lag))
                .collect()
        };
        if lagging.is_empty() {
            return None;
        }
        let isr: Vec<BrokerId> = state.isr.iter().copied().filter(|id| !lagging.contains(id)).collect();
        tracing::info!(partition = %self.tp, ?lagging, "followers lag too long; shrinking the ISR");
        self.ask_isr(isr).map(|isr| (state.leader_epoch, isr))
    }

    /// The ISR size and `min.insync.replicas`.
    pub(crate) fn isr_size_and_min(&self) -> (usize, usize) {
        let state = self.read_state();
        (state.isr.len(), state.min_insync)
    }

    /// The leader epoch and ISR as this replica sees them.
    pub(crate) fn leader_epoch_and_isr(&self) -> (i32, Vec<BrokerId>) {
        let state = self.read_state();
        (state.leader_epoch, state.isr.clone())
    }

    /// Follower: appends batches fetched from the leader of `leader_epoch`
    /// and takes the leader's high watermark (capped at this log's end).
    /// Returns the new log end. Blocking.
    pub(crate) fn append_as_follower(
        &self,
        leader_epoch: i32,
        records: &Bytes,
        leader_high_watermark: u64,
    ) -> Result<u64, ReplicaError> {
        let state = self.read_state();
        if state.role != Role::Follower || state.leader_epoch != leader_epoch {
            return Err(ReplicaError::FencedLeaderEpoch { current: state.leader_epoch, given: leader_epoch });
        }
        let mut log = self.lock_log();
        let mut appended = false;
        for batch in record_batch::batches(records.clone(), usize::MAX) {
            let batch = batch?;
            // A batch that does not line up (offset or epoch) maps to
            // ReplicaError::Diverged: the fetcher settles with the leader again.
            log.append_replicated(batch.as_bytes())?;
            appended = true;
        }
        let end = log.log_end_offset();
        self.high_watermark.store(leader_high_watermark.min(end), Ordering::Release);
        drop(log);
        drop(state);
        if appended {
            self.signal();
        }
        Ok(end)
    }

    /// Follower: takes the leader's high watermark when a fetch brought no
    /// data.
    pub(crate) fn set_follower_high_watermark(&self, leader_high_watermark: u64) {
        let state = self.read_state();
        if state.role != Role::Follower {
            return;
        }
        let end = self.lock_log().log_end_offset();
        self.high_watermark.store(leader_high_watermark.min(end), Ordering::Release);
    }

    /// Follower of `leader_epoch`: drops every batch at or past `offset`
    /// (a tail the leader does not have). Blocking.
    pub(crate) fn truncate_as_follower(&self, leader_epoch: i32, offset: u64) -> Result<u64, ReplicaError> {
        let state = self.read_state();
        if state.role != Role::Follower || state.leader_epoch != leader_epoch {
            return Err(ReplicaError::FencedLeaderEpoch { current: state.leader_epoch, given: leader_epoch });
        }
        let mut log = self.lock_log();
        let before = log.log_end_offset();
        let end = log.truncate_to(offset)?;
        if end < before {
            tracing::info!(partition = %self.tp, from = before, to = end, leader_epoch, "truncated a diverged tail");
        }
        self.high_watermark.fetch_min(end, Ordering::AcqRel);
        Ok(end)
    }

    /// Follower whose log ends before the leader's log start: starts over,
    /// empty, at the leader's log start. Blocking.
    pub(crate) fn restart_as_follower_at(&self, leader_epoch: i32, offset: u64) -> Result<(), ReplicaError> {
        let state = self.read_state();
        if state.role != Role::Follower || state.leader_epoch != leader_epoch {
            return Err(ReplicaError::FencedLeaderEpoch { current: state.leader_epoch, given: leader_epoch });
        }
        let mut log = self.lock_log();
        log.truncate_fully_and_start_at(offset)?;
        self.high_watermark.store(offset, Ordering::Release);
        Ok(())
    }

    /// Bytes of the log on disk. Blocking (takes the log lock).
    pub(crate) fn log_size_bytes(&self) -> u64 {
        self.lock_log().size_bytes()
    }

    /// The log end offset. Blocking (takes the log lock).
    pub(crate) fn log_end_offset(&self) -> u64 {
        self.lock_log().log_end_offset()
    }

    /// The newest leader epoch in this replica's log. Blocking.
    pub(crate) fn latest_epoch(&self) -> Option<i32> {
        self.lock_log().latest_epoch()
    }

    /// This replica's own end of `epoch` (see `Log::end_offset_for_epoch`).
    /// Blocking.
    pub(crate) fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, u64)> {
        self.lock_log().end_offset_for_epoch(epoch)
    }

    /// Leader: OffsetForLeaderEpoch, fenced by the asker's view of the
    /// current epoch. `Ok(None)` when this log holds no epoch that old.
    /// Blocking.
    pub(crate) fn leader_end_offset_for_epoch(
        &self,
        epoch: i32,
        current_leader_epoch: i32,
    ) -> Result<Option<(i32, u64)>, ReplicaError> {
        let state = self.read_state();
        if state.role != Role::Leader {
            return Err(self.not_leader());
        }
        check_epoch(&state, current_leader_epoch)?;
        Ok(self.lock_log().end_offset_for_epoch(epoch))
    }

    /// Stops serving before the partition is deleted or closed; appends and
    /// reads racing with the removal fail instead of touching a doomed log.
    pub(crate) fn stop_serving(&self) {
        {
            let mut state = self.write_state();
            state.role = Role::Follower;
            state.leader = -1;
        }
        self.signal();
    }

    fn not_leader(&self) -> ReplicaError {
        // The manager fills in the leader from its metadata.
        ReplicaError::NotLeader { topic: self.tp.topic.clone(), partition: self.tp.partition, leader: None }
    }

    /// Appends the batches in `records` as leader. Every batch is validated
    /// before the first is appended, so a bad request leaves the log as it
    /// was. Blocking.
    pub(crate) fn append_as_leader(&self, records: &Bytes, require_full_isr: bool) -> Result<Appended, ReplicaError> {
        let state = self.read_state();
        if state.role != Role::Leader {
            return Err(self.not_leader());
        }
        // acks=all is refused, before anything is appended, while the ISR
        // is too small for the write to survive the loss of the leader.
        if require_full_isr && state.isr.len() < state.min_insync {
            return Err(ReplicaError::NotEnoughReplicas { isr: state.isr.len(), min: state.min_insync });
        }
        let sizes = validate_batches(records, state.config.max_batch_bytes)?;
        // One copy: Log::append rewrites offsets and epoch in place.
        let mut buf = records.to_vec();
        let mut log = self.lock_log();
        let mut first = None;
        let mut last_end = 0;
        let mut failure = None;
        let mut at = 0;
        for size in sizes {
            let Some(batch) = buf.get_mut(at..at + size) else {
                failure = Some(ReplicaError::CorruptRecord("batch sizes exceed the records field".into()));
                break;
            };
            match log.append(batch, state.leader_epoch) {
                Ok(info) => {
                    // A duplicate (a retried idempotent batch) is already in
                    // the log: acks=all waits for its original offsets.
                    last_end = last_end.max(info.last_offset + 1);
                    first.get_or_insert(info);
                }
                Err(e) => {
                    // I/O, or an idempotent producer's sequence check (the
                    // batch itself was validated); batches before this one
                    // stay appended: Log::append takes one batch at a time.
                    failure = Some(ReplicaError::from(e));
                    break;
                }
            }
            at += size;
        }
        if first.is_some() {
            self.advance_high_watermark(&state, log.log_end_offset());
        }
        let log_start_offset = log.log_start_offset();
        let end_offset = last_end;
        drop(log);
        let leader_epoch = state.leader_epoch;
        drop(state);
        if first.is_some() {
            self.signal();
        }
        if let Some(e) = failure {
            return Err(e);
        }
        let first = first.ok_or_else(|| ReplicaError::InvalidRequest("records field holds no batch".into()))?;
        Ok(Appended {
            info: ProduceInfo {
                base_offset: first.base_offset,
                log_append_time: first.log_append_time,
                log_start_offset,
            },
            end_offset,
            leader_epoch,
        })
    }

    /// Reads stored batches from `offset`. With `max_bytes` None, only
    /// checks the offset and reports the partition's offsets (the fetch
    /// response is already full). Blocking.
    pub(crate) fn read(
        &self,
        offset: i64,
        max_bytes: Option<usize>,
        bound: ReadBound,
        replica_id: BrokerId,
        current_leader_epoch: i32,
    ) -> Result<FetchedData, ReplicaError> {
        let state = self.read_state();
        if state.role != Role::Leader {
            return Err(self.not_leader());
        }
        check_epoch(&state, current_leader_epoch)?;
        if replica_id >= 0 && !state.replicas.contains(&replica_id) {
            return Err(ReplicaError::InvalidRequest(format!("broker {replica_id} is not a replica of {}", self.tp)));
        }
        let log = self.lock_log();
        drop(state);
        let high_watermark = self.high_watermark();
        let (start, end) = (log.log_start_offset(), log.log_end_offset());
        let requested = match u64::try_from(offset) {
            Ok(o) if o >= start && o <= end => o,
            _ => return Err(ReplicaError::OffsetOutOfRange { requested: offset, start, end }),
        };
        let records = match max_bytes {
            Some(max_bytes) => {
                let max_offset = match bound {
                    ReadBound::HighWatermark => Some(high_watermark),
                    ReadBound::LogEnd => None,
                };
                log.read(requested, max_bytes, max_offset)?.records
            }
            None => Bytes::new(),
        };
        Ok(FetchedData { records, high_watermark, log_start_offset: start, log_end_offset: end })
    }

    /// ListOffsets: earliest, latest (the high watermark) or the first
    /// offset at or after a timestamp that consumers may read. Blocking.
    pub(crate) fn offset_for(&self, timestamp: i64) -> Result<Option<u64>, ReplicaError> {
        let state = self.read_state();
        if state.role != Role::Leader {
            return Err(self.not_leader());
        }
        let log = self.lock_log();
        drop(state);
        let high_watermark = self.high_watermark();
        match timestamp {
            EARLIEST_TIMESTAMP => Ok(Some(log.log_start_offset())),
            LATEST_TIMESTAMP => Ok(Some(high_watermark)),
            t if t >= 0 => Ok(log.lookup_by_timestamp(t)?.filter(|&o| o < high_watermark)),
            t => Err(ReplicaError::InvalidRequest(format!(
                "timestamp {t}: use -2 (earliest), -1 (latest) or a time in ms"
            ))),
        }
    }
}

/// A request naming a leader epoch (>= 0) must name the current one: an
/// older one comes from a fetcher that missed a leader change, a newer one
/// means this broker's metadata lags.
fn check_epoch(state: &ReplicaState, given: i32) -> Result<(), ReplicaError> {
    if given < 0 || given == state.leader_epoch {
        Ok(())
    } else if given < state.leader_epoch {
        Err(ReplicaError::FencedLeaderEpoch { current: state.leader_epoch, given })
    } else {
        Err(ReplicaError::UnknownLeaderEpoch { current: state.leader_epoch, given })
    }
}

/// Splits `records` into batches and checks each (size, magic, CRC, record
/// count); returns their sizes. Blocking-safe CPU work (CRC over the data).
pub(crate) fn validate_batches(records: &Bytes, max_batch_bytes: usize) -> Result<Vec<usize>, ReplicaError> {
    if records.is_empty() {
        return Err(ReplicaError::InvalidRequest("records field is empty".into()));
    }
    let mut sizes = Vec::new();
    for batch in record_batch::batches(records.clone(), max_batch_bytes) {
        let batch = batch?;
        if batch.header().is_control() {
            // Control batches (transaction markers) are written by brokers
            // only; a client's would be taken for a real marker.
            return Err(ReplicaError::InvalidRequest("clients may not produce control batches".into()));
        }
        sizes.push(batch.header().size());
    }
    Ok(sizes)
}

/// The topic id recorded in a partition directory, if any.
pub(crate) fn read_topic_id(dir: &Path) -> Option<String> {
    let text = fs::read_to_string(dir.join(PARTITION_METADATA)).ok()?;
    text.lines().find_map(|l| l.strip_prefix("topic_id:")).map(|id| id.trim().to_string())
}

/// Records the topic id in a partition directory, crash-safely (temp file,
/// fsync, rename, fsync of the directory; the log loader removes a
/// leftover `.tmp`).
pub(crate) fn write_topic_id(dir: &Path, topic_id: &str) -> io::Result<()> {
    let tmp = dir.join(format!("{PARTITION_METADATA}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        write!(f, "version: 0\ntopic_id: {topic_id}\n")?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(PARTITION_METADATA))?;
    File::open(dir)?.sync_all()
}
