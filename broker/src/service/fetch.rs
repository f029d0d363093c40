//! Fetch: protobuf ⇄ [`ReplicaManager::fetch`].

use std::time::Duration;

use strata_proto::broker as pb;
use strata_proto::common::{ErrorCode, ErrorDetail};
use strata_proto::error::status_from_detail;
use tonic::Status;

use super::produce::offset;
use crate::replica::{EpochQuery, FetchParams, FetchPartition, FetchResult, ReplicaError, ReplicaManager};

/// Handles a Fetch call (long-poll). A 0 `max_bytes` or
/// `partition_max_bytes` means "the broker's default"; `max_bytes` and
/// `max_wait_ms` are capped by the broker's config.
pub async fn fetch(rm: &ReplicaManager, req: pb::FetchRequest) -> Result<pb::FetchResponse, Status> {
    if req.replica_id < -1 {
        return Err(status_from_detail(ErrorDetail {
            code: ErrorCode::InvalidRequest as i32,
            message: format!("replica_id {} (use -1 for consumers)", req.replica_id),
            ..Default::default()
        }));
    }
    let config = rm.config();
    let max_bytes = match usize::try_from(req.max_bytes) {
        Ok(0) | Err(_) => config.max_fetch_bytes,
        Ok(n) => n.min(config.max_fetch_bytes),
    };
    let params = FetchParams {
        max_wait: Duration::from_millis(u64::from(req.max_wait_ms)),
        min_bytes: usize::try_from(req.min_bytes).unwrap_or(usize::MAX),
        max_bytes,
        replica_id: req.replica_id,
    };
    let partitions = req
        .partitions
        .into_iter()
        .map(|p| FetchPartition {
            topic: p.topic,
            partition: p.partition,
            offset: p.fetch_offset,
            partition_max_bytes: match usize::try_from(p.partition_max_bytes) {
                Ok(0) | Err(_) => config.default_partition_fetch_bytes,
                Ok(n) => n,
            },
            current_leader_epoch: p.current_leader_epoch,
        })
        .collect();
    let results = rm.fetch(params, partitions).await;
    let bytes_out: usize = results.iter().filter_map(|r| r.outcome.as_ref().ok()).map(|d| d.records.len()).sum();
    let kind = if req.replica_id >= 0 { "replica" } else { "consumer" };
    metrics::counter!("strata_broker_bytes_out_total", "kind" => kind).increment(bytes_out as u64);
    Ok(pb::FetchResponse { partitions: results.into_iter().map(to_pb).collect() })
}

fn to_pb(r: FetchResult) -> pb::FetchPartitionResponse {
    match r.outcome {
        Ok(d) => pb::FetchPartitionResponse {
            topic: r.topic,
            partition: r.partition,
            error: None,
            high_watermark: offset(d.high_watermark),
            log_start_offset: offset(d.log_start_offset),
            log_end_offset: offset(d.log_end_offset),
            records: d.records,
        },
        Err(e) => {
            // OFFSET_OUT_OF_RANGE tells the consumer where the log is, so it
            // can reset without another round trip.
            let (start, end) = match &e {
                ReplicaError::OffsetOutOfRange { start, end, .. } => (offset(*start), offset(*end)),
                _ => (-1, -1),
            };
            pb::FetchPartitionResponse {
                topic: r.topic,
                partition: r.partition,
                error: Some(e.to_pb()),
                high_watermark: -1,
                log_start_offset: start,
                log_end_offset: end,
                records: Default::default(),
            }
        }
    }
}

/// Handles OffsetForLeaderEpoch: where each asked epoch ends in this
/// leader's log.
pub async fn offset_for_leader_epoch(
    rm: &ReplicaManager,
    req: pb::OffsetForLeaderEpochRequest,
) -> Result<pb::OffsetForLeaderEpochResponse, Status> {
    let queries = req
        .partitions
        .into_iter()
        .map(|p| EpochQuery {
            topic: p.topic,
            partition: p.partition,
            leader_epoch: p.leader_epoch,
            current_leader_epoch: p.current_leader_epoch,
        })
        .collect();
    let results = rm.offsets_for_leader_epoch(queries).await;
    let partitions = results
        .into_iter()
        .map(|r| {
            let (error, leader_epoch, end_offset) = match r.outcome {
                Ok(Some((epoch, end))) => (None, epoch, offset(end)),
                Ok(None) => (None, -1, -1),
                Err(e) => (Some(e.to_pb()), -1, -1),
            };
            pb::OffsetForLeaderEpochPartitionResponse {
                topic: r.topic,
                partition: r.partition,
                error,
                leader_epoch,
                end_offset,
            }
        })
        .collect();
    Ok(pb::OffsetForLeaderEpochResponse { partitions })
}
