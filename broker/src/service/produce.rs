//! Produce: protobuf ⇄ [`ReplicaManager::produce`].

use std::time::Duration;

use strata_proto::broker as pb;
use strata_proto::common::{ErrorCode, ErrorDetail};
use strata_proto::error::status_from_detail;
use tonic::Status;

use crate::replica::{Acks, ProduceInput, ProduceResult, ReplicaManager};

/// Handles a Produce call. Per-partition failures are in the response; the
/// call itself fails only for a malformed request (unknown `acks`).
///
/// A request carrying more than `max_request_bytes` of records in total is
/// refused whole (MESSAGE_TOO_LARGE on every partition, nothing appended):
/// the transport limit is set a little above it, so this is the answer a
/// client sees instead of a bare transport error.
pub async fn produce(
    rm: &ReplicaManager,
    req: pb::ProduceRequest,
    max_request_bytes: usize,
) -> Result<pb::ProduceResponse, Status> {
    let acks = match pb::Acks::try_from(req.acks) {
        Ok(pb::Acks::Leader) => Acks::Leader,
        Ok(pb::Acks::None) => Acks::None,
        Ok(pb::Acks::All) => Acks::All,
        Err(_) => {
            return Err(status_from_detail(ErrorDetail {
                code: ErrorCode::InvalidRequest as i32,
                message: format!("unknown acks value {}", req.acks),
                ..Default::default()
            }));
        }
    };
    let total: usize = req.topics.iter().flat_map(|t| &t.partitions).map(|p| p.records.len()).sum();
    if total > max_request_bytes {
        let error = pb::PartitionError {
            code: ErrorCode::MessageTooLarge as i32,
            message: format!(
                "produce request carries {total} bytes of records, more than the broker's limit of {max_request_bytes}"
            ),
            leader_id: -1,
            leader_addr: String::new(),
        };
        return Ok(respond(&req, req.topics.iter().flat_map(|t| &t.partitions).map(|p| refused(p, &error))));
    }
    let inputs = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| ProduceInput {
                topic: t.topic.clone(),
                partition: p.partition,
                records: p.records.clone(),
            })
        })
        .collect();
    let results = rm.produce(acks, Duration::from_millis(u64::from(req.timeout_ms)), inputs).await;
    Ok(respond(&req, results.into_iter().map(to_pb)))
}

fn refused(p: &pb::ProducePartition, error: &pb::PartitionError) -> pb::ProducePartitionResponse {
    pb::ProducePartitionResponse {
        partition: p.partition,
        error: Some(error.clone()),
        base_offset: -1,
        log_append_time: -1,
        log_start_offset: -1,
    }
}

fn to_pb(r: ProduceResult) -> pb::ProducePartitionResponse {
    match r.outcome {
        Ok(info) => pb::ProducePartitionResponse {
            partition: r.partition,
            error: None,
            base_offset: offset(info.base_offset),
            log_append_time: info.log_append_time.unwrap_or(-1),
            log_start_offset: offset(info.log_start_offset),
        },
        Err(e) => pb::ProducePartitionResponse {
            partition: r.partition,
            error: Some(e.to_pb()),
            base_offset: -1,
            log_append_time: -1,
            log_start_offset: -1,
        },
    }
}

/// Groups per-partition answers (in request order) under their topics, as
/// the request had them.
fn respond(
    req: &pb::ProduceRequest,
    mut answers: impl Iterator<Item = pb::ProducePartitionResponse>,
) -> pb::ProduceResponse {
    let topics = req
        .topics
        .iter()
        .map(|t| pb::ProduceTopicResponse {
            topic: t.topic.clone(),
            partitions: answers.by_ref().take(t.partitions.len()).collect(),
        })
        .collect();
    pb::ProduceResponse { topics }
}

/// Offsets are i64 on the wire; the log never hands out larger ones.
pub(crate) fn offset(o: u64) -> i64 {
    i64::try_from(o).unwrap_or(i64::MAX)
}
