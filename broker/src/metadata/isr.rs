//! Writes the ISR changes partition leaders ask for to the ensemble.
//!
//! Invariant: a change is written only over the state it was computed
//! from: same leader, same leader epoch, and the version just read, so it
//! can never undo a controller's election or another ISR change.

use std::sync::Arc;

use bytes::Bytes;
use strata_coord_client::{CoordClient, CoordError, Txn};
use tokio::sync::mpsc;

use super::model::{BrokerId, PartitionState, paths};
use crate::replica::{IsrRequest, ReplicaManager};

/// Runs until the request channel closes (the replica manager is gone).
pub async fn run(
    coord: CoordClient,
    broker_id: BrokerId,
    rm: Arc<ReplicaManager>,
    mut requests: mpsc::UnboundedReceiver<IsrRequest>,
) {
    while let Some(req) = requests.recv().await {
        match write(&coord, broker_id, &req).await {
            Ok(Some(partition_epoch)) => {
                tracing::info!(
                    topic = %req.topic,
                    partition = req.partition,
                    leader_epoch = req.leader_epoch,
                    isr = ?req.isr,
                    partition_epoch,
                    "ISR change written"
                );
                rm.isr_written(&req.topic, req.partition, req.leader_epoch, req.isr, partition_epoch);
            }
            Ok(None) => rm.isr_write_failed(&req.topic, req.partition),
            Err(e) => {
                tracing::warn!(topic = %req.topic, partition = req.partition, error = %e, "ISR change not written");
                rm.isr_write_failed(&req.topic, req.partition);
            }
        }
    }
}

/// The new partition epoch, or None when the state moved on (another
/// leader epoch, or a concurrent write won).
async fn write(coord: &CoordClient, broker_id: BrokerId, req: &IsrRequest) -> Result<Option<u64>, CoordError> {
    let path = paths::partition_state(&req.topic, req.partition);
    let (data, stat) = coord.get(&path).await?;
    let Ok(current) = serde_json::from_slice::<PartitionState>(&data) else {
        return Err(CoordError::Internal(format!("{path} is damaged")));
    };
    if current.leader != broker_id || current.leader_epoch != req.leader_epoch {
        return Ok(None);
    }
    if !req.isr.contains(&broker_id) {
        return Err(CoordError::Internal("an ISR change must keep the leader".into()));
    }
    let shrink = req.isr.len() < current.isr.len();
    let next = PartitionState { isr: req.isr.clone(), partition_epoch: current.partition_epoch + 1, ..current };
    let bytes = Bytes::from(serde_json::to_vec(&next).map_err(|e| CoordError::Internal(e.to_string()))?);
    let mut txn = Txn::new().when_version(&path, stat.version);
    // Only a registered broker may join: one whose session expired is
    // dead to the controller, which would not elect it, and must not count
    // towards acks=all.
    for joining in req.isr.iter().filter(|id| !current.isr.contains(id)) {
        txn = txn.when_exists(&paths::broker(*joining), true);
    }
    let txn = txn.set(&path, bytes, Some(stat.version));
    match coord.txn(txn).await {
        Ok(r) if r.succeeded => {
            if shrink {
                metrics::counter!("strata_broker_isr_shrinks_total").increment(1);
            } else {
                metrics::counter!("strata_broker_isr_expands_total").increment(1);
            }
            Ok(Some(next.partition_epoch))
        }
        Ok(_) | Err(CoordError::BadVersion(_)) => Ok(None),
        Err(e) => Err(e),
    }
}
