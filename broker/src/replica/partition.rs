//! One partition replica hosted by this broker: its log, its role, its
//! high watermark, and the signal long-polls wait on.
//!
//! Locking: `state` (RwLock) is always taken before `log` (Mutex), never
//! the other way round. Both are std locks, held only on blocking threads
//! (`spawn_blocking`) or for in-memory work, never across an `.await`.
//! Appends hold `state` for reading, so a role change (write lock) waits
//! for in-flight appends and no append lands after leadership is lost.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

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
    /// Holds the log but serves nothing. Replication (fetching from the
    /// leader) is not implemented yet.
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
}

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
        };
        {
            let state = partition.read_state();
            let mut log = partition.lock_log();
            if log.config() != &state.config {
                log.set_config(state.config.clone());
            }
            partition.update_high_watermark(&log);
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

    /// The high watermark is the smallest log end offset among the in-sync
    /// replicas. Followers do not replicate yet, so the only log end this
    /// leader knows is its own; replication will track follower ends and
    /// call this with their minimum instead.
    fn update_high_watermark(&self, log: &Log) {
        self.high_watermark.store(log.log_end_offset(), Ordering::Release);
    }

    /// Applies the state derived from new metadata. Blocking (may lock the
    /// log to change its config).
    pub(crate) fn update(&self, new: ReplicaState) -> Transition {
        let mut state = self.write_state();
        if *state == new {
            return Transition::Unchanged;
        }
        let role_changed = state.role != new.role || state.leader_epoch != new.leader_epoch;
        if state.config != new.config || new.role == Role::Leader {
            let mut log = self.lock_log();
            if log.config() != &new.config {
                log.set_config(new.config.clone());
            }
            if new.role == Role::Leader {
                self.update_high_watermark(&log);
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
        // acks=all is only safe when every in-sync replica will have the
        // data; with no replication yet that means "the leader is the ISR".
        // Checked before appending so a refused request writes nothing.
        if require_full_isr && state.isr.as_slice() != [self.broker_id] {
            return Err(ReplicaError::NotEnoughReplicas { isr: state.isr.len() });
        }
        let sizes = validate_batches(records, state.config.max_batch_bytes)?;
        // One copy: Log::append rewrites offsets and epoch in place.
        let mut buf = records.to_vec();
        let mut log = self.lock_log();
        let mut first = None;
        let mut failure = None;
        let mut at = 0;
        for size in sizes {
            let Some(batch) = buf.get_mut(at..at + size) else {
                failure = Some(ReplicaError::CorruptRecord("batch sizes exceed the records field".into()));
                break;
            };
            match log.append(batch, state.leader_epoch) {
                Ok(info) => {
                    first.get_or_insert(info);
                }
                Err(e) => {
                    // Only I/O can fail here (the batch was validated), and
                    // batches before this one stay appended: Log::append
                    // takes one batch at a time.
                    failure = Some(ReplicaError::from(e));
                    break;
                }
            }
            at += size;
        }
        if first.is_some() {
            self.update_high_watermark(&log);
        }
        let log_start_offset = log.log_start_offset();
        let end_offset = log.log_end_offset();
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
    ) -> Result<FetchedData, ReplicaError> {
        let state = self.read_state();
        if state.role != Role::Leader {
            return Err(self.not_leader());
        }
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
