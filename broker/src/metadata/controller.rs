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

/// What the controller decides for one partition, given live brokers.
/// Pure, so the election rules are tested without an ensemble.
pub fn decide(
    replicas: &[BrokerId],
    current: Option<&PartitionState>,
    live: &BTreeSet<BrokerId>,
    unclean: bool,
    controller_epoch: u64,
) -> Option<PartitionState> {
    match current {
        None => {
            // New partition: the first live replica in assignment order
            // (the preferred leader when it is up).
            let isr: Vec<BrokerId> = replicas.iter().copied().filter(|r| live.contains(r)).collect();
            let leader = isr.first().copied().unwrap_or(-1);
            Some(PartitionState {
                leader,
                leader_epoch: 0,
                isr: if leader >= 0 { isr } else { replicas.to_vec() },
                controller_epoch,
            })
        }
        Some(state) if state.leader >= 0 && live.contains(&state.leader) => None,
        Some(state) => {
            let from_isr = replicas.iter().copied().find(|r| state.isr.contains(r) && live.contains(r));
            let leader = match from_isr {
                Some(l) => Some(l),
                None if unclean => replicas.iter().copied().find(|r| live.contains(r)),
                None => None,
            };
            match leader {
                Some(leader) => Some(PartitionState {
                    leader,
                    leader_epoch: state.leader_epoch + 1,
                    isr: if state.isr.contains(&leader) { state.isr.clone() } else { vec![leader] },
                    controller_epoch,
                }),
                // Offline: record it once (leader -1), keep the ISR so the
                // last in-sync replica can take over when it returns.
                None if state.leader >= 0 => Some(PartitionState {
                    leader: -1,
                    leader_epoch: state.leader_epoch + 1,
                    isr: state.isr.clone(),
                    controller_epoch,
                }),
                None => None,
            }
        }
    }
}

/// Runs for the broker's lifetime: contends for the controller role while
/// `session` lives, and controls while it holds the role.
pub async fn run(
    coord: CoordClient,
    broker_id: BrokerId,
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
                control(&coord, broker_id, epoch, &mut metadata, &mut stop, &mut session_state).await;
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
    metadata: &mut watch::Receiver<Arc<ClusterMetadata>>,
    stop: &mut watch::Receiver<bool>,
    session_state: &mut watch::Receiver<SessionState>,
) {
    // Reconcile everything on take-over, then on every change; a periodic
    // pass retries writes that failed on a transient ensemble error.
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        let md = metadata.borrow_and_update().clone();
        if md.controller.as_ref().is_some_and(|c| c.broker_id != broker_id || c.epoch != epoch) {
            return;
        }
        match reconcile(coord, epoch, &md).await {
            Ok(()) => {}
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

async fn reconcile(coord: &CoordClient, epoch: u64, md: &ClusterMetadata) -> Result<(), CoordError> {
    let live: BTreeSet<BrokerId> = md.brokers.keys().copied().collect();
    for (topic, info) in &md.topics {
        let unclean = info.configs.get("unclean.leader.election.enable").is_some_and(|v| v == "true");
        for (p, partition) in info.partitions.iter().enumerate() {
            let p = p as u32;
            let Some(next) = decide(&partition.replicas, partition.state.as_ref(), &live, unclean, epoch) else {
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

    fn live(ids: &[i32]) -> BTreeSet<i32> {
        ids.iter().copied().collect()
    }

    #[test]
    fn new_partition_prefers_first_live_replica() {
        let s = decide(&[2, 1, 3], None, &live(&[1, 2, 3]), false, 7).expect("state");
        assert_eq!((s.leader, s.leader_epoch, s.controller_epoch), (2, 0, 7));
        let s = decide(&[2, 1, 3], None, &live(&[1, 3]), false, 7).expect("state");
        assert_eq!(s.leader, 1);
        let s = decide(&[2], None, &live(&[1]), false, 7).expect("state");
        assert_eq!(s.leader, -1, "no live replica: offline from the start");
    }

    #[test]
    fn leader_loss_elects_from_isr_or_goes_offline() {
        let st = PartitionState { leader: 1, leader_epoch: 3, isr: vec![1, 2], controller_epoch: 1 };
        assert_eq!(decide(&[1, 2, 3], Some(&st), &live(&[1, 2, 3]), false, 2), None, "healthy: no write");
        let s = decide(&[1, 2, 3], Some(&st), &live(&[2, 3]), false, 2).expect("re-election");
        assert_eq!((s.leader, s.leader_epoch), (2, 4));
        let s = decide(&[1, 2, 3], Some(&st), &live(&[3]), false, 2).expect("offline");
        assert_eq!((s.leader, s.isr.clone()), (-1, vec![1, 2]), "3 is not in the ISR: clean election refuses it");
        let s = decide(&[1, 2, 3], Some(&st), &live(&[3]), true, 2).expect("unclean");
        assert_eq!((s.leader, s.isr), (3, vec![3]));
        let offline = PartitionState { leader: -1, leader_epoch: 4, isr: vec![1], controller_epoch: 2 };
        assert_eq!(decide(&[1], Some(&offline), &live(&[]), false, 2), None, "offline stays offline without a write");
        let back = decide(&[1], Some(&offline), &live(&[1]), false, 2).expect("returns");
        assert_eq!((back.leader, back.leader_epoch), (1, 5));
    }
}
