//! The controller: one broker, elected through the ephemeral `/controller`
//! node and fenced by `/controller_epoch`, that writes partition states —
//! initial leaders for new partitions, and new leaders when a broker goes
//! away or an offline partition's replica comes back.
//!
//! Invariant: every partition-state write is a transaction conditioned on
//! the state's version and on `/controller_epoch` still being this
//! controller's epoch, so a deposed controller can never overwrite a newer
//! decision.
//! Invariant: a new leader comes from the ISR among live brokers; a replica
//! outside the ISR is elected only when the topic sets
//! `unclean.leader.election.enable=true`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strata_coord_client::{CoordClient, CoordError, Session, SessionState, Txn};
use tokio::sync::watch;

use super::model::{BrokerId, ClusterMetadata, ControllerRecord, PartitionState, paths};

/// The brokers the controller may hand leadership to.
#[derive(Debug, Clone, Default)]
pub struct Liveness {
    /// Registered brokers.
    pub live: BTreeSet<BrokerId>,
    /// Registered brokers in controlled shutdown: they keep what nobody
    /// else can take, and get nothing new.
    pub draining: BTreeSet<BrokerId>,
}

impl Liveness {
    fn eligible(&self, id: BrokerId) -> bool {
        self.live.contains(&id) && !self.draining.contains(&id)
    }
}

/// What the controller decides for one partition, given live brokers.
/// Pure, so the election rules are tested without an ensemble.
///
/// `preferred`: also hand leadership back to the preferred replica (the
/// first in the assignment) when it is eligible and in the ISR.
pub fn decide(
    replicas: &[BrokerId],
    current: Option<&PartitionState>,
    brokers: &Liveness,
    unclean: bool,
    preferred: bool,
    controller_epoch: u64,
) -> Option<PartitionState> {
    let Some(state) = current else {
        // New partition: the first eligible replica in assignment order
        // (the preferred leader when it is up).
        let isr: Vec<BrokerId> = replicas.iter().copied().filter(|r| brokers.live.contains(r)).collect();
        let leader = isr.iter().copied().find(|r| brokers.eligible(*r)).or(isr.first().copied()).unwrap_or(-1);
        return Some(PartitionState {
            leader,
            leader_epoch: 0,
            isr: if leader >= 0 { isr } else { replicas.to_vec() },
            controller_epoch,
            partition_epoch: 0,
        });
    };
    // A dead broker leaves the ISR at once rather than after the leader's
    // lag timeout, so acks=all writes do not stall on it; the last member
    // stays, so the partition can come back from it.
    let live_isr: Vec<BrokerId> = state.isr.iter().copied().filter(|r| brokers.live.contains(r)).collect();
    let next = |leader: BrokerId, leader_epoch: i32, isr: Vec<BrokerId>| PartitionState {
        leader,
        leader_epoch,
        isr,
        controller_epoch,
        partition_epoch: state.partition_epoch + 1,
    };
    let leader_alive = state.leader >= 0 && brokers.live.contains(&state.leader);
    if leader_alive {
        let from_isr = |skip: BrokerId| {
            replicas.iter().copied().find(|r| *r != skip && live_isr.contains(r) && brokers.eligible(*r))
        };
        if brokers.draining.contains(&state.leader) {
            if let Some(leader) = from_isr(state.leader) {
                return Some(next(leader, state.leader_epoch + 1, live_isr));
            }
        } else if preferred
            && let Some(&first) = replicas.first()
            && first != state.leader
            && live_isr.contains(&first)
            && brokers.eligible(first)
        {
            return Some(next(first, state.leader_epoch + 1, live_isr));
        }
        if live_isr.len() != state.isr.len() {
            return Some(next(state.leader, state.leader_epoch, live_isr));
        }
        return None;
    }
    let in_isr = |r: &BrokerId| live_isr.contains(r);
    let leader = replicas
        .iter()
        .copied()
        .find(|r| in_isr(r) && brokers.eligible(*r))
        .or_else(|| replicas.iter().copied().find(in_isr))
        .or_else(|| unclean.then(|| replicas.iter().copied().find(|r| brokers.eligible(*r))).flatten());
    match leader {
        Some(leader) if live_isr.contains(&leader) => Some(next(leader, state.leader_epoch + 1, live_isr)),
        // Unclean: the new leader's log is the truth now.
        Some(leader) => Some(next(leader, state.leader_epoch + 1, vec![leader])),
        // Offline: record it once (leader -1), keep the ISR so the last
        // in-sync replica can take over when it returns.
        None if state.leader >= 0 => Some(next(-1, state.leader_epoch + 1, state.isr.clone())),
        None => None,
    }
}

/// Runs for the broker's lifetime: contends for the controller role while
/// `session` lives, and controls while it holds the role.
pub async fn run(
    coord: CoordClient,
    broker_id: BrokerId,
    preferred_every: Duration,
    session: Arc<Session>,
    mut metadata: watch::Receiver<Arc<ClusterMetadata>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut session_state = session.state_watch();
    loop {
        if *stop.borrow() || *session_state.borrow() != SessionState::Alive {
            return;
        }
        match try_become_controller(&coord, broker_id, session.id).await {
            Ok(Some(epoch)) => {
                tracing::info!(broker_id, epoch, "became controller");
                let started = std::time::Instant::now();
                control(&coord, broker_id, epoch, preferred_every, &mut metadata, &mut stop, &mut session_state).await;
                tracing::info!(
                    broker_id,
                    epoch,
                    held_ms = started.elapsed().as_millis() as u64,
                    "controller role ended"
                );
            }
            Ok(None) => {
                // Someone else controls: wait until /controller changes.
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    loop {
                        if metadata.changed().await.is_err() {
                            return;
                        }
                        if metadata.borrow().controller.is_none() {
                            return;
                        }
                    }
                })
                .await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "controller election failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Creates `/controller` and bumps `/controller_epoch` in one transaction.
async fn try_become_controller(
    coord: &CoordClient,
    broker_id: BrokerId,
    session_id: u64,
) -> Result<Option<u64>, CoordError> {
    if coord.exists(paths::CONTROLLER).await?.is_some() {
        return Ok(None);
    }
    let (epoch, version) = match coord.get(paths::CONTROLLER_EPOCH).await {
        Ok((data, stat)) => (
            std::str::from_utf8(&data).ok().and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0),
            Some(stat.version),
        ),
        Err(CoordError::NotFound(_)) => (0, None),
        Err(e) => return Err(e),
    };
    let next = epoch + 1;
    let record = serde_json::to_vec(&ControllerRecord { broker_id, epoch: next })
        .map_err(|e| CoordError::Internal(e.to_string()))?;
    let mut txn = Txn::new().session(session_id).when_exists(paths::CONTROLLER, false);
    txn = match version {
        Some(v) => txn.when_version(paths::CONTROLLER_EPOCH, v).set(paths::CONTROLLER_EPOCH, next.to_string(), Some(v)),
        None => {
            txn.when_exists(paths::CONTROLLER_EPOCH, false).create(paths::CONTROLLER_EPOCH, next.to_string(), false)
        }
    };
    txn = txn.create(paths::CONTROLLER, record, true);
    match coord.txn(txn).await {
        Ok(r) if r.succeeded => Ok(Some(next)),
        Ok(_) | Err(CoordError::NodeExists(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn control(
    coord: &CoordClient,
    broker_id: BrokerId,
    epoch: u64,
    preferred_every: Duration,
    metadata: &mut watch::Receiver<Arc<ClusterMetadata>>,
    stop: &mut watch::Receiver<bool>,
    session_state: &mut watch::Receiver<SessionState>,
) {
    // Reconcile everything on take-over, then on every change; a periodic
    // pass retries writes that failed on a transient ensemble error.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // Leadership goes back to preferred replicas on a slower beat than
    // failover, so a broker that just came back is not handed every
    // partition the moment it rejoins the ISR.
    let mut last_preferred = std::time::Instant::now();
    loop {
        let md = metadata.borrow_and_update().clone();
        if md.controller.as_ref().is_some_and(|c| c.broker_id != broker_id || c.epoch != epoch) {
            return;
        }
        // An operator's request (`strata topic elect-leaders`) runs the
        // preferred pass now; the request node goes once it has run.
        let requested = md.elect_preferred;
        let preferred = requested.is_some() || last_preferred.elapsed() >= preferred_every;
        if preferred {
            last_preferred = std::time::Instant::now();
        }
        match reconcile(coord, epoch, preferred, &md).await {
            Ok(()) => {
                if let Some(revision) = requested {
                    let done = Txn::new()
                        .when_mod_revision(paths::ELECT_PREFERRED, revision)
                        .delete(paths::ELECT_PREFERRED, None);
                    if let Err(e) = coord.txn(done).await {
                        tracing::warn!(error = %e, "cannot clear the preferred-leader election request");
                    }
                }
            }
            Err(CoordError::BadVersion(_)) => {}
            Err(e) => tracing::warn!(error = %e, "controller reconcile failed; will retry"),
        }
        tokio::select! {
            r = metadata.changed() => if r.is_err() { return },
            _ = tick.tick() => {}
            _ = stop.changed() => return,
            _ = session_state.changed() => if *session_state.borrow() != SessionState::Alive { return },
        }
    }
}

async fn reconcile(coord: &CoordClient, epoch: u64, preferred: bool, md: &ClusterMetadata) -> Result<(), CoordError> {
    let brokers = Liveness { live: md.brokers.keys().copied().collect(), draining: md.draining.clone() };
    for (topic, info) in &md.topics {
        let unclean = info.configs.get("unclean.leader.election.enable").is_some_and(|v| v == "true");
        for (p, partition) in info.partitions.iter().enumerate() {
            let p = p as u32;
            let Some(next) = decide(&partition.replicas, partition.state.as_ref(), &brokers, unclean, preferred, epoch)
            else {
                continue;
            };
            write_state(coord, epoch, topic, p, partition.state.is_some(), &next).await?;
        }
    }
    Ok(())
}

/// Writes one partition state, fenced by the controller epoch and (for an
/// existing state) its version as read just now.
async fn write_state(
    coord: &CoordClient,
    epoch: u64,
    topic: &str,
    p: u32,
    exists: bool,
    next: &PartitionState,
) -> Result<(), CoordError> {
    let (epoch_data, epoch_stat) = coord.get(paths::CONTROLLER_EPOCH).await?;
    if std::str::from_utf8(&epoch_data).ok().and_then(|s| s.trim().parse::<u64>().ok()) != Some(epoch) {
        return Err(CoordError::BadVersion("a newer controller epoch exists".into()));
    }
    let data = Bytes::from(serde_json::to_vec(next).map_err(|e| CoordError::Internal(e.to_string()))?);
    let state_path = paths::partition_state(topic, p);
    let mut txn =
        Txn::new().when_version(paths::CONTROLLER_EPOCH, epoch_stat.version).when_exists(&paths::topic(topic), true);
    if exists {
        let (_, stat) = coord.get(&state_path).await?;
        txn = txn.when_version(&state_path, stat.version).set(&state_path, data, Some(stat.version));
    } else {
        let partition_path = paths::partition(topic, p);
        if coord.exists(&paths::partitions(topic)).await?.is_none() {
            txn = txn.create(&paths::partitions(topic), Bytes::new(), false);
        }
        if coord.exists(&partition_path).await?.is_none() {
            txn = txn.create(&partition_path, Bytes::new(), false);
        }
        txn = txn.when_exists(&state_path, false).create(&state_path, data, false);
    }
    let r = coord.txn(txn).await?;
    if r.succeeded {
        tracing::info!(
            topic,
            partition = p,
            leader = next.leader,
            leader_epoch = next.leader_epoch,
            "partition state written"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(ids: &[i32]) -> Liveness {
        Liveness { live: ids.iter().copied().collect(), draining: BTreeSet::new() }
    }

    fn state(leader: i32, leader_epoch: i32, isr: &[i32]) -> PartitionState {
        PartitionState { leader, leader_epoch, isr: isr.to_vec(), controller_epoch: 1, partition_epoch: 9 }
    }

    #[test]
    fn new_partition_prefers_first_live_replica() {
        let s = decide(&[2, 1, 3], None, &live(&[1, 2, 3]), false, false, 7).expect("state");
        assert_eq!((s.leader, s.leader_epoch, s.controller_epoch), (2, 0, 7));
        let s = decide(&[2, 1, 3], None, &live(&[1, 3]), false, false, 7).expect("state");
        assert_eq!((s.leader, s.isr), (1, vec![1, 3]));
        let s = decide(&[2], None, &live(&[1]), false, false, 7).expect("state");
        assert_eq!(s.leader, -1, "no live replica: offline from the start");
    }

    #[test]
    fn leader_loss_elects_from_isr_or_goes_offline() {
        let st = state(1, 3, &[1, 2]);
        assert_eq!(decide(&[1, 2, 3], Some(&st), &live(&[1, 2, 3]), false, false, 2), None, "healthy: no write");
        let s = decide(&[1, 2, 3], Some(&st), &live(&[2, 3]), false, false, 2).expect("re-election");
        assert_eq!((s.leader, s.leader_epoch, s.isr.clone(), s.partition_epoch), (2, 4, vec![2], 10));
        let s = decide(&[1, 2, 3], Some(&st), &live(&[3]), false, false, 2).expect("offline");
        assert_eq!((s.leader, s.isr.clone()), (-1, vec![1, 2]), "3 is not in the ISR: clean election refuses it");
        let s = decide(&[1, 2, 3], Some(&st), &live(&[3]), true, false, 2).expect("unclean");
        assert_eq!((s.leader, s.isr), (3, vec![3]));
        let offline = state(-1, 4, &[1]);
        assert_eq!(decide(&[1], Some(&offline), &live(&[]), false, false, 2), None, "offline stays offline");
        let back = decide(&[1], Some(&offline), &live(&[1]), false, false, 2).expect("returns");
        assert_eq!((back.leader, back.leader_epoch), (1, 5));
    }

    #[test]
    fn dead_followers_leave_the_isr_without_an_election() {
        let st = state(1, 3, &[1, 2, 3]);
        let s = decide(&[1, 2, 3], Some(&st), &live(&[1, 2]), false, false, 2).expect("shrink");
        assert_eq!((s.leader, s.leader_epoch, s.isr), (1, 3, vec![1, 2]));
    }

    #[test]
    fn draining_leader_hands_over_to_an_isr_member() {
        let mut brokers = live(&[1, 2, 3]);
        brokers.draining.insert(1);
        let st = state(1, 3, &[1, 2, 3]);
        let s = decide(&[1, 2, 3], Some(&st), &brokers, false, false, 2).expect("move");
        assert_eq!((s.leader, s.leader_epoch), (2, 4));
        let alone = state(1, 3, &[1]);
        assert_eq!(decide(&[1, 2, 3], Some(&alone), &brokers, false, false, 2), None, "nobody to take over: keep");
        // A draining broker does not take leadership back either.
        let moved = state(2, 4, &[1, 2, 3]);
        assert_eq!(decide(&[1, 2, 3], Some(&moved), &brokers, false, true, 2), None);
    }

    #[test]
    fn preferred_leader_returns_only_when_asked_and_in_sync() {
        let st = state(2, 4, &[2, 3]);
        assert_eq!(decide(&[1, 2, 3], Some(&st), &live(&[1, 2, 3]), false, true, 2), None, "1 not in the ISR yet");
        let st = state(2, 4, &[2, 3, 1]);
        assert_eq!(decide(&[1, 2, 3], Some(&st), &live(&[1, 2, 3]), false, false, 2), None);
        let s = decide(&[1, 2, 3], Some(&st), &live(&[1, 2, 3]), false, true, 2).expect("back to 1");
        assert_eq!((s.leader, s.leader_epoch), (1, 5));
    }
}
