//! Follower replication: one task per leader broker copies the leader's
//! log of every partition this broker follows from it (Kafka's
//! `ReplicaFetcherThread`).
//!
//! Each partition first settles where its log and the leader's agree:
//! it asks the leader where the newest epoch of its own log ends there
//! (OffsetForLeaderEpoch) and truncates anything past that point. Only then
//! does it fetch, from its log end, in long-polls that name the leader epoch
//! it follows, so a deposed leader can never feed it.
//!
//! Invariant: a task only appends to or truncates a partition while the
//! partition still follows the same leader epoch the task was given; the
//! partition checks that under its state lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use strata_proto::broker as pb;
use strata_proto::broker::broker_client::BrokerClient;
use strata_proto::common::ErrorCode;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use super::ReplicaManager;
use super::error::ReplicaError;
use super::partition::Partition;
use crate::log::TopicPartition;
use crate::metadata::model::BrokerId;

/// Wait after an error before a partition is tried again.
const RETRY_AFTER: Duration = Duration::from_millis(200);

type Assignment = BTreeMap<TopicPartition, i32>;

struct FetcherHandle {
    assigned: watch::Sender<Assignment>,
    task: JoinHandle<()>,
}

/// The fetcher tasks, by leader.
#[derive(Default)]
pub(crate) struct Fetchers {
    by_leader: Mutex<HashMap<BrokerId, FetcherHandle>>,
}

impl std::fmt::Debug for Fetchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetchers").field("leaders", &self.lock().len()).finish()
    }
}

impl Fetchers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BrokerId, FetcherHandle>> {
        self.by_leader.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the tasks follow `wanted` (leader → partition → leader epoch):
    /// starts tasks for new leaders, ends those of leaders no longer
    /// followed, and hands the others their new partition sets.
    pub(crate) fn assign(
        &self,
        wanted: BTreeMap<BrokerId, Assignment>,
        rm: Weak<ReplicaManager>,
        stop: &watch::Receiver<bool>,
        runtime: &tokio::runtime::Handle,
    ) {
        let mut by_leader = self.lock();
        by_leader.retain(|leader, handle| {
            let keep = wanted.contains_key(leader);
            if !keep {
                // Dropping the sender ends the task at its next wait.
                handle.task.abort();
            }
            keep
        });
        for (leader, partitions) in wanted {
            match by_leader.get(&leader) {
                Some(h) if !h.task.is_finished() => {
                    h.assigned.send_if_modified(|current| {
                        let changed = *current != partitions;
                        if changed {
                            *current = partitions.clone();
                        }
                        changed
                    });
                }
                _ => {
                    let (tx, rx) = watch::channel(partitions);
                    let task = runtime.spawn(run(rm.clone(), leader, rx, stop.clone()));
                    by_leader.insert(leader, FetcherHandle { assigned: tx, task });
                }
            }
        }
    }

    /// Ends every task and waits for them.
    pub(crate) async fn stop_all(&self) {
        let handles: Vec<FetcherHandle> = self.lock().drain().map(|(_, h)| h).collect();
        for h in handles {
            h.task.abort();
            let _ = h.task.await;
        }
    }
}

#[derive(Debug)]
struct FetchState {
    leader_epoch: i32,
    /// The diverged tail (if any) has been cut; fetching may start.
    truncated: bool,
    retry_at: Instant,
}

fn connect(addr: &str) -> Result<BrokerClient<Channel>, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("bad broker address {addr}: {e}"))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true);
    Ok(BrokerClient::new(endpoint.connect_lazy()).max_decoding_message_size(usize::MAX))
}

/// Waits for `d`, a new assignment or stop. False: the task must end.
async fn pause(d: Duration, assigned: &mut watch::Receiver<Assignment>, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        r = assigned.changed() => r.is_ok(),
        _ = stop.changed() => false,
    }
}

async fn run(
    rm: Weak<ReplicaManager>,
    leader: BrokerId,
    mut assigned: watch::Receiver<Assignment>,
    mut stop: watch::Receiver<bool>,
) {
    let mut states: BTreeMap<TopicPartition, FetchState> = BTreeMap::new();
    let mut conn: Option<(String, BrokerClient<Channel>)> = None;
    let mut last_error: Option<String> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let want = assigned.borrow_and_update().clone();
        states.retain(|tp, st| want.get(tp) == Some(&st.leader_epoch));
        for (tp, epoch) in &want {
            states.entry(tp.clone()).or_insert_with(|| FetchState {
                leader_epoch: *epoch,
                truncated: false,
                retry_at: Instant::now(),
            });
        }
        if states.is_empty() {
            if !pause(Duration::from_secs(3600), &mut assigned, &mut stop).await {
                return;
            }
            continue;
        }
        let Some(strong) = rm.upgrade() else { return };
        let me = strong.broker_id;
        let wait = strong.config.replica_fetch_wait_max;
        let partition_max = strong.config.default_partition_fetch_bytes;
        let max_bytes = strong.config.replica_fetch_max_bytes;
        let addr = strong.metadata.borrow().internal_addr(leader).map(str::to_string);
        let partitions: HashMap<TopicPartition, Arc<Partition>> =
            states.keys().filter_map(|tp| strong.partition(tp).map(|p| (tp.clone(), p))).collect();
        drop(strong);
        let Some(addr) = addr else {
            // The leader is not registered (yet, or any more): metadata will
            // bring a new leader or its registration.
            if !pause(RETRY_AFTER, &mut assigned, &mut stop).await {
                return;
            }
            continue;
        };
        let client = match &conn {
            Some((a, c)) if *a == addr => c.clone(),
            _ => match connect(&addr) {
                Ok(c) => {
                    conn = Some((addr.clone(), c.clone()));
                    c
                }
                Err(e) => {
                    warn!(leader, error = %e, "cannot reach leader");
                    if !pause(Duration::from_secs(1), &mut assigned, &mut stop).await {
                        return;
                    }
                    continue;
                }
            },
        };

        let now = Instant::now();
        for (tp, st) in states.iter_mut().filter(|(_, st)| !st.truncated && st.retry_at <= now) {
            let Some(p) = partitions.get(tp) else { continue };
            match truncate(&client, me, tp, p, st.leader_epoch).await {
                Ok(()) => st.truncated = true,
                Err(e) => {
                    debug!(partition = %tp, leader, error = %e, "cannot settle the log with the leader yet");
                    st.retry_at = Instant::now() + RETRY_AFTER;
                }
            }
        }

        let ready: Vec<(TopicPartition, i32, Arc<Partition>)> = states
            .iter()
            .filter(|(_, st)| st.truncated && st.retry_at <= now)
            .filter_map(|(tp, st)| partitions.get(tp).map(|p| (tp.clone(), st.leader_epoch, p.clone())))
            .collect();
        if ready.is_empty() {
            let next = states.values().map(|s| s.retry_at).min().unwrap_or(now + RETRY_AFTER);
            if !pause(
                next.saturating_duration_since(Instant::now()).max(Duration::from_millis(10)),
                &mut assigned,
                &mut stop,
            )
            .await
            {
                return;
            }
            continue;
        }
        let ends = {
            let ready = ready.iter().map(|(_, _, p)| p.clone()).collect::<Vec<_>>();
            match tokio::task::spawn_blocking(move || ready.iter().map(|p| p.log_end_offset()).collect::<Vec<_>>())
                .await
            {
                Ok(ends) => ends,
                Err(_) => return,
            }
        };
        let request = pb::FetchRequest {
            partitions: ready
                .iter()
                .zip(&ends)
                .map(|((tp, epoch, _), end)| pb::FetchPartition {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    fetch_offset: i64::try_from(*end).unwrap_or(i64::MAX),
                    partition_max_bytes: u32::try_from(partition_max).unwrap_or(u32::MAX),
                    current_leader_epoch: *epoch,
                })
                .collect(),
            max_wait_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
            min_bytes: 1,
            max_bytes: u32::try_from(max_bytes).unwrap_or(u32::MAX),
            replica_id: me,
        };
        let mut rpc = client.clone();
        let response = tokio::select! {
            r = rpc.fetch(request) => r,
            // A new assignment (a leader change, a partition added): drop
            // this long-poll, nothing of it was applied.
            r = assigned.changed() => {
                if r.is_err() {
                    return;
                }
                continue;
            }
            _ = stop.changed() => return,
        };
        let response = match response {
            Ok(r) => {
                last_error = None;
                r.into_inner()
            }
            Err(status) => {
                let text = format!("{}: {}", status.code(), status.message());
                if last_error.as_deref() != Some(&text) {
                    warn!(leader, addr = %addr, error = %text, "fetch from leader failed; retrying");
                    last_error = Some(text);
                }
                conn = None;
                if !pause(RETRY_AFTER, &mut assigned, &mut stop).await {
                    return;
                }
                continue;
            }
        };
        let by_tp: HashMap<TopicPartition, (i32, Arc<Partition>, u64)> =
            ready.into_iter().zip(ends).map(|((tp, epoch, p), end)| (tp, (epoch, p, end))).collect();
        let outcomes = tokio::task::spawn_blocking(move || {
            response
                .partitions
                .into_iter()
                .filter_map(|r| {
                    let tp = TopicPartition::new(r.topic.clone(), r.partition);
                    let (epoch, p, end) = by_tp.get(&tp)?;
                    Some((tp, apply(p, *epoch, *end, r)))
                })
                .collect::<Vec<_>>()
        })
        .await;
        let Ok(outcomes) = outcomes else { return };
        for (tp, outcome) in outcomes {
            let Some(st) = states.get_mut(&tp) else { continue };
            match outcome {
                Applied::Ok => {}
                Applied::Diverged => st.truncated = false,
                Applied::Retry(why) => {
                    debug!(partition = %tp, leader, why = %why, "fetch answered with an error");
                    st.retry_at = Instant::now() + RETRY_AFTER;
                }
            }
        }
    }
}

enum Applied {
    Ok,
    /// This log is ahead of the leader's: settle again before fetching.
    Diverged,
    Retry(String),
}

/// Applies one partition's fetch answer. Blocking.
fn apply(p: &Partition, epoch: i32, our_end: u64, r: pb::FetchPartitionResponse) -> Applied {
    let code = r.error.as_ref().map_or(0, |e| e.code);
    let high_watermark = u64::try_from(r.high_watermark).unwrap_or(0);
    if code == 0 {
        let records: Bytes = r.records;
        if records.is_empty() {
            p.set_follower_high_watermark(high_watermark);
            return Applied::Ok;
        }
        return match p.append_as_follower(epoch, &records, high_watermark) {
            Ok(_) => Applied::Ok,
            Err(ReplicaError::Diverged(_)) => Applied::Diverged,
            Err(e) => Applied::Retry(e.to_string()),
        };
    }
    if code == ErrorCode::OffsetOutOfRange as i32 {
        let leader_start = u64::try_from(r.log_start_offset).unwrap_or(0);
        if our_end < leader_start {
            info!(partition = ?p, from = our_end, to = leader_start, "log ends before the leader's log start; starting over there");
            return match p.restart_as_follower_at(epoch, leader_start) {
                Ok(()) => Applied::Ok,
                Err(e) => Applied::Retry(e.to_string()),
            };
        }
        return Applied::Diverged;
    }
    let message = r.error.map(|e| e.message).unwrap_or_default();
    Applied::Retry(format!("code {code}: {message}"))
}

/// Cuts whatever this replica has past the point where its log and the
/// leader's agree (Kafka's KIP-101/279 truncation by leader epoch).
async fn truncate(
    client: &BrokerClient<Channel>,
    me: BrokerId,
    tp: &TopicPartition,
    p: &Arc<Partition>,
    leader_epoch: i32,
) -> Result<(), String> {
    let latest = {
        let p = p.clone();
        tokio::task::spawn_blocking(move || p.latest_epoch()).await.map_err(|e| e.to_string())?
    };
    // An empty log (or one with no epoch) has nothing that could diverge.
    let Some(latest) = latest else { return Ok(()) };
    let request = pb::OffsetForLeaderEpochRequest {
        partitions: vec![pb::OffsetForLeaderEpochPartition {
            topic: tp.topic.clone(),
            partition: tp.partition,
            leader_epoch: latest,
            current_leader_epoch: leader_epoch,
        }],
        replica_id: me,
    };
    let response = client.clone().offset_for_leader_epoch(request).await.map_err(|s| s.message().to_string())?;
    let answer = response.into_inner().partitions.into_iter().next().ok_or("empty answer")?;
    if let Some(e) = answer.error.filter(|e| e.code != 0) {
        return Err(format!("code {}: {}", e.code, e.message));
    }
    let p = p.clone();
    tokio::task::spawn_blocking(move || {
        let target = if answer.leader_epoch < 0 || answer.end_offset < 0 {
            // The leader has no epoch this old: only what was committed is
            // known to be shared.
            p.high_watermark()
        } else {
            let leader_end = u64::try_from(answer.end_offset).unwrap_or(0);
            match p.end_offset_for_epoch(answer.leader_epoch) {
                Some((_, our_end)) => leader_end.min(our_end),
                None => leader_end,
            }
        };
        p.truncate_as_follower(leader_epoch, target).map(|_| ()).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}
