//! ListOffsets: protobuf ⇄ [`ReplicaManager::list_offsets`].

use strata_proto::broker as pb;
use tonic::Status;

use super::produce::offset;
use crate::replica::{ListOffsetsInput, ReplicaManager};

/// Handles a ListOffsets call: -2 earliest, -1 latest (high watermark),
/// otherwise the first offset at or after the timestamp (-1 if none).
pub async fn list_offsets(rm: &ReplicaManager, req: pb::ListOffsetsRequest) -> Result<pb::ListOffsetsResponse, Status> {
    let inputs = req
        .partitions
        .into_iter()
        .map(|p| ListOffsetsInput { topic: p.topic, partition: p.partition, timestamp: p.timestamp })
        .collect();
    let results = rm.list_offsets(inputs).await;
    let partitions = results
        .into_iter()
        .map(|r| match r.outcome {
            Ok(o) => pb::ListOffsetsPartitionResponse {
                topic: r.topic,
                partition: r.partition,
                error: None,
                offset: o.map_or(-1, offset),
            },
            Err(e) => pb::ListOffsetsPartitionResponse {
                topic: r.topic,
                partition: r.partition,
                error: Some(e.to_pb()),
                offset: -1,
            },
        })
        .collect();
    Ok(pb::ListOffsetsResponse { partitions })
}
