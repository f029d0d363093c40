//! Typed errors on the wire: every non-OK status carries an `ErrorDetail`.

use crate::common::{ErrorCode, ErrorDetail};
use prost::Message;

/// Builds a gRPC status whose details hold `detail`, choosing the gRPC code
/// that generic gRPC tooling would expect for it.
pub fn status_from_detail(detail: ErrorDetail) -> tonic::Status {
    let grpc_code = match detail.code() {
        ErrorCode::NotFound => tonic::Code::NotFound,
        ErrorCode::NodeExists => tonic::Code::AlreadyExists,
        ErrorCode::BadVersion | ErrorCode::NotEmpty | ErrorCode::NoChildrenForEphemerals => {
            tonic::Code::FailedPrecondition
        }
        ErrorCode::SessionExpired => tonic::Code::FailedPrecondition,
        ErrorCode::NotLeader | ErrorCode::Unavailable => tonic::Code::Unavailable,
        ErrorCode::InvalidArgument | ErrorCode::DataTooLarge => tonic::Code::InvalidArgument,
        ErrorCode::Compacted => tonic::Code::OutOfRange,
        ErrorCode::Internal | ErrorCode::Unspecified | ErrorCode::StorageError => tonic::Code::Internal,
        ErrorCode::UnknownTopicOrPartition => tonic::Code::NotFound,
        ErrorCode::NotLeaderForPartition
        | ErrorCode::NotEnoughReplicas
        | ErrorCode::RequestTimedOut
        | ErrorCode::LeaderNotAvailable
        | ErrorCode::BrokerNotAvailable
        | ErrorCode::FencedLeaderEpoch
        | ErrorCode::UnknownLeaderEpoch
        | ErrorCode::NotEnoughReplicasAfterAppend => tonic::Code::Unavailable,
        ErrorCode::OutOfOrderSequenceNumber | ErrorCode::InvalidProducerEpoch | ErrorCode::UnknownProducerId => {
            tonic::Code::FailedPrecondition
        }
        ErrorCode::TopicAlreadyExists => tonic::Code::AlreadyExists,
        ErrorCode::OffsetOutOfRange => tonic::Code::OutOfRange,
        ErrorCode::MessageTooLarge
        | ErrorCode::CorruptRecord
        | ErrorCode::InvalidRequest
        | ErrorCode::InvalidPartitions
        | ErrorCode::InvalidReplicationFactor
        | ErrorCode::InvalidConfig
        | ErrorCode::InvalidTopic
        | ErrorCode::InconsistentGroupProtocol => tonic::Code::InvalidArgument,
        ErrorCode::NotCoordinator | ErrorCode::CoordinatorNotAvailable => tonic::Code::Unavailable,
        ErrorCode::IllegalGeneration
        | ErrorCode::UnknownMemberId
        | ErrorCode::FencedInstanceId
        | ErrorCode::NonEmptyGroup
        | ErrorCode::PartitionNotOwned => tonic::Code::FailedPrecondition,
        ErrorCode::GroupIdNotFound => tonic::Code::NotFound,
    };
    let message = detail.message.clone();
    tonic::Status::with_details(grpc_code, message, detail.encode_to_vec().into())
}

/// Reads the `ErrorDetail` from a status. Statuses that did not come from a
/// Strata handler (transport failures, garbage) map to UNAVAILABLE or
/// INTERNAL so callers always get a typed answer.
pub fn detail_from_status(status: &tonic::Status) -> ErrorDetail {
    if !status.details().is_empty()
        && let Ok(detail) = ErrorDetail::decode(status.details())
    {
        return detail;
    }
    let code = match status.code() {
        tonic::Code::Unavailable
        | tonic::Code::DeadlineExceeded
        | tonic::Code::Cancelled
        | tonic::Code::Aborted
        | tonic::Code::Unknown => ErrorCode::Unavailable,
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange => ErrorCode::InvalidArgument,
        tonic::Code::NotFound => ErrorCode::NotFound,
        _ => ErrorCode::Internal,
    };
    ErrorDetail { code: code as i32, message: status.message().to_string(), ..Default::default() }
}
