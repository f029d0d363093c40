//! Typed errors of the broker-facing clients (metadata, producer, consumer,
//! admin): one variant per broker error code, plus the failures that happen
//! on the client's side of the wire.
//!
//! Callers branch on the variant, never on message text; the text is for
//! people.

use std::fmt;

use prost::Message;
use strata_proto::broker::PartitionError;
use strata_proto::common::{ErrorCode, ErrorDetail};

/// What went wrong talking to brokers.
///
/// `Clone` because one failed request is reported to every partition (and
/// every record) it carried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The topic or partition does not exist, or the broker has not learned
    /// of it yet.
    #[error("unknown topic or partition: {0}")]
    UnknownTopicOrPartition(String),
    /// The broker does not lead the partition; `leader_id`/`leader_addr`
    /// name the leader it knows of.
    #[error("not the partition leader{}: {message}", LeaderHint(*.leader_id, .leader_addr.as_deref()))]
    NotLeader { leader_id: Option<i32>, leader_addr: Option<String>, message: String },
    #[error("message too large: {0}")]
    MessageTooLarge(String),
    #[error("corrupt record: {0}")]
    CorruptRecord(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A fetch asked for an offset outside the partition's log. `topic` is
    /// empty and `offset` -1 when the broker reported it without saying
    /// where.
    #[error("offset {offset} is out of range for {topic}-{partition}: {message}")]
    OffsetOutOfRange { topic: String, partition: u32, offset: i64, message: String },
    #[error("topic already exists: {0}")]
    TopicAlreadyExists(String),
    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    /// Fewer in-sync replicas than `min.insync.replicas`; writes with
    /// `acks=all` are refused until replicas catch up.
    #[error("not enough in-sync replicas: {0}")]
    NotEnoughReplicas(String),
    /// No answer in time; the operation may or may not have happened.
    #[error("request timed out: {0}")]
    RequestTimedOut(String),
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// The leader's disk failed for this partition; leadership moves.
    #[error("broker storage error: {0}")]
    StorageError(String),
    /// The partition has no leader right now (an election is under way).
    #[error("leader not available: {0}")]
    LeaderNotAvailable(String),
    #[error("invalid topic: {0}")]
    InvalidTopic(String),
    #[error("broker not available: {0}")]
    BrokerNotAvailable(String),
    /// The request named a leader epoch older than the partition's: our
    /// metadata is stale.
    #[error("fenced leader epoch: {0}")]
    FencedLeaderEpoch(String),
    /// The request named a leader epoch newer than the broker knows: its
    /// metadata lags behind ours.
    #[error("unknown leader epoch: {0}")]
    UnknownLeaderEpoch(String),
    /// An idempotent producer's batch does not continue its partition's
    /// sequence (an earlier batch was lost). The producer starts over with a
    /// new producer id.
    #[error("out of order sequence number: {0}")]
    OutOfOrderSequenceNumber(String),
    /// The producer epoch is older than one the partition has already seen.
    #[error("invalid producer epoch: {0}")]
    InvalidProducerEpoch(String),
    /// The partition has no state for the producer id and the batch does not
    /// start a sequence.
    #[error("unknown producer id: {0}")]
    UnknownProducerId(String),
    /// `acks=all`: the leader appended the batch but the in-sync replicas
    /// fell below `min.insync.replicas` before it was replicated. A retry
    /// is safe for an idempotent producer (the broker drops the duplicate).
    #[error("not enough in-sync replicas after append: {0}")]
    NotEnoughReplicasAfterAppend(String),
    /// The broker asked does not coordinate the group; `coordinator_id` /
    /// `coordinator_addr` name the one it knows of.
    #[error("not the group coordinator: {message}")]
    NotCoordinator { coordinator_id: Option<i32>, coordinator_addr: Option<String>, message: String },
    /// No broker can coordinate the group right now (it is moving or
    /// loading); retriable.
    #[error("group coordinator not available: {0}")]
    CoordinatorNotAvailable(String),
    /// The member's generation is not the group's current one: it missed a
    /// rebalance (a zombie) and must rejoin.
    #[error("illegal generation: {0}")]
    IllegalGeneration(String),
    /// The member is not (or no longer) in the group.
    #[error("unknown member id: {0}")]
    UnknownMemberId(String),
    /// Another process joined with the same static instance id.
    #[error("fenced instance id: {0}")]
    FencedInstanceId(String),
    /// The operation needs a group without live members.
    #[error("group is not empty: {0}")]
    NonEmptyGroup(String),
    #[error("group not found: {0}")]
    GroupIdNotFound(String),
    /// A member named an assignor other than the group's.
    #[error("inconsistent group protocol: {0}")]
    InconsistentGroupProtocol(String),
    /// A commit named a partition the member does not own.
    #[error("partition not owned: {0}")]
    PartitionNotOwned(String),
    /// The broker is up but cannot serve (say, it lost the ensemble).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// No connection could be made, or it broke mid-request. The message
    /// names the addresses tried.
    #[error("{0}")]
    Unreachable(String),
    /// A partition has no position and the offset-reset policy is `Error`.
    #[error("no offset for {topic}-{partition}: seek first, or set an offset-reset policy")]
    NoOffset { topic: String, partition: u32 },
    /// The caller asked for something this client cannot do (say, seek on a
    /// partition that is not assigned).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Any other code, kept raw so that codes added by newer brokers survive.
    #[error("broker error {code}: {message}")]
    Other { code: i32, message: String },
}

/// The protobuf name of a raw error code (`"NOT_LEADER_FOR_PARTITION"`), or
/// the number itself for a code this client does not know.
pub fn code_name(code: i32) -> String {
    match ErrorCode::try_from(code) {
        Ok(known) => known.as_str_name().to_string(),
        Err(_) => format!("error code {code}"),
    }
}

/// Formats the leader a `NOT_LEADER` answer names, if any.
struct LeaderHint<'a>(Option<i32>, Option<&'a str>);

impl fmt::Display for LeaderHint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Some(id), Some(addr)) => write!(f, " (leader is broker {id} at {addr})"),
            (Some(id), None) => write!(f, " (leader is broker {id})"),
            (None, Some(addr)) => write!(f, " (leader is at {addr})"),
            (None, None) => Ok(()),
        }
    }
}

impl ClientError {
    /// The error a raw wire code stands for. Code 0 (success) maps to
    /// `Other`: callers check for success first.
    pub fn from_code(code: i32, message: impl Into<String>) -> ClientError {
        let m = message.into();
        let Ok(known) = ErrorCode::try_from(code) else {
            return ClientError::Other { code, message: m };
        };
        match known {
            ErrorCode::UnknownTopicOrPartition => ClientError::UnknownTopicOrPartition(m),
            ErrorCode::NotLeaderForPartition => {
                ClientError::NotLeader { leader_id: None, leader_addr: None, message: m }
            }
            ErrorCode::MessageTooLarge => ClientError::MessageTooLarge(m),
            ErrorCode::CorruptRecord => ClientError::CorruptRecord(m),
            ErrorCode::InvalidRequest | ErrorCode::InvalidArgument => ClientError::InvalidRequest(m),
            ErrorCode::OffsetOutOfRange => {
                ClientError::OffsetOutOfRange { topic: String::new(), partition: 0, offset: -1, message: m }
            }
            ErrorCode::TopicAlreadyExists => ClientError::TopicAlreadyExists(m),
            ErrorCode::InvalidPartitions => ClientError::InvalidPartitions(m),
            ErrorCode::InvalidReplicationFactor => ClientError::InvalidReplicationFactor(m),
            ErrorCode::NotEnoughReplicas => ClientError::NotEnoughReplicas(m),
            ErrorCode::RequestTimedOut => ClientError::RequestTimedOut(m),
            ErrorCode::InvalidConfig => ClientError::InvalidConfig(m),
            ErrorCode::StorageError => ClientError::StorageError(m),
            ErrorCode::LeaderNotAvailable => ClientError::LeaderNotAvailable(m),
            ErrorCode::InvalidTopic => ClientError::InvalidTopic(m),
            ErrorCode::BrokerNotAvailable => ClientError::BrokerNotAvailable(m),
            ErrorCode::FencedLeaderEpoch => ClientError::FencedLeaderEpoch(m),
            ErrorCode::UnknownLeaderEpoch => ClientError::UnknownLeaderEpoch(m),
            ErrorCode::OutOfOrderSequenceNumber => ClientError::OutOfOrderSequenceNumber(m),
            ErrorCode::InvalidProducerEpoch => ClientError::InvalidProducerEpoch(m),
            ErrorCode::UnknownProducerId => ClientError::UnknownProducerId(m),
            ErrorCode::NotEnoughReplicasAfterAppend => ClientError::NotEnoughReplicasAfterAppend(m),
            ErrorCode::NotCoordinator => {
                ClientError::NotCoordinator { coordinator_id: None, coordinator_addr: None, message: m }
            }
            ErrorCode::CoordinatorNotAvailable => ClientError::CoordinatorNotAvailable(m),
            ErrorCode::IllegalGeneration => ClientError::IllegalGeneration(m),
            ErrorCode::UnknownMemberId => ClientError::UnknownMemberId(m),
            ErrorCode::FencedInstanceId => ClientError::FencedInstanceId(m),
            ErrorCode::NonEmptyGroup => ClientError::NonEmptyGroup(m),
            ErrorCode::GroupIdNotFound => ClientError::GroupIdNotFound(m),
            ErrorCode::InconsistentGroupProtocol => ClientError::InconsistentGroupProtocol(m),
            ErrorCode::PartitionNotOwned => ClientError::PartitionNotOwned(m),
            // A broker answers with the ensemble's codes when the ensemble
            // itself is what failed it.
            ErrorCode::Unavailable | ErrorCode::NotLeader => ClientError::Unavailable(m),
            ErrorCode::Unspecified
            | ErrorCode::NotFound
            | ErrorCode::NodeExists
            | ErrorCode::BadVersion
            | ErrorCode::NotEmpty
            | ErrorCode::SessionExpired
            | ErrorCode::Compacted
            | ErrorCode::NoChildrenForEphemerals
            | ErrorCode::DataTooLarge
            | ErrorCode::Internal => ClientError::Other { code, message: m },
        }
    }

    /// The error inside a response's per-partition outcome; `None` for
    /// success (code 0 or no error at all).
    pub fn from_partition_error(error: Option<&PartitionError>) -> Option<ClientError> {
        let e = error?;
        if e.code == ErrorCode::Unspecified as i32 {
            return None;
        }
        Some(match ClientError::from_code(e.code, e.message.clone()) {
            ClientError::NotLeader { message, .. } => ClientError::NotLeader {
                // The proto says -1 means "no leader known".
                leader_id: (e.leader_id >= 0).then_some(e.leader_id),
                leader_addr: (!e.leader_addr.is_empty()).then(|| e.leader_addr.clone()),
                message,
            },
            ClientError::NotCoordinator { message, .. } => ClientError::NotCoordinator {
                coordinator_id: (e.leader_id >= 0).then_some(e.leader_id),
                coordinator_addr: (!e.leader_addr.is_empty()).then(|| e.leader_addr.clone()),
                message,
            },
            other => other,
        })
    }

    /// The error of a failed call to the broker at `addr`. A status that
    /// carries Strata's `ErrorDetail` is the broker's answer; one without is
    /// a transport failure (no connection, reset, timeout) and says which
    /// address failed.
    pub fn from_status(status: &tonic::Status, addr: &str) -> ClientError {
        if status.details().is_empty() {
            return ClientError::from_transport(status, addr);
        }
        match ErrorDetail::decode(status.details()) {
            Ok(detail) => ClientError::from_detail(&detail),
            Err(_) => ClientError::from_transport(status, addr),
        }
    }

    fn from_detail(detail: &ErrorDetail) -> ClientError {
        match ClientError::from_code(detail.code, detail.message.clone()) {
            ClientError::NotCoordinator { message, .. } => {
                let coordinator_addr = (!detail.leader_addr.is_empty()).then(|| detail.leader_addr.clone());
                let coordinator_id = coordinator_addr.as_ref().and_then(|_| i32::try_from(detail.leader_id).ok());
                ClientError::NotCoordinator { coordinator_id, coordinator_addr, message }
            }
            ClientError::NotLeader { message, .. } => {
                // In an ErrorDetail, leader_id 0 means "unknown" (it is the
                // ensemble's convention), so trust the id only with an
                // address beside it.
                let leader_addr = (!detail.leader_addr.is_empty()).then(|| detail.leader_addr.clone());
                let leader_id = leader_addr.as_ref().and_then(|_| i32::try_from(detail.leader_id).ok());
                ClientError::NotLeader { leader_id, leader_addr, message }
            }
            other => other,
        }
    }

    fn from_transport(status: &tonic::Status, addr: &str) -> ClientError {
        let what = status.message();
        match status.code() {
            tonic::Code::DeadlineExceeded => ClientError::RequestTimedOut(format!("broker at {addr}: {what}")),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled | tonic::Code::Aborted => {
                ClientError::Unreachable(format!("broker at {addr} is unreachable: {what}"))
            }
            tonic::Code::ResourceExhausted | tonic::Code::OutOfRange => {
                // tonic's own message-size limits land here.
                ClientError::MessageTooLarge(format!("broker at {addr}: {what}"))
            }
            tonic::Code::InvalidArgument => ClientError::InvalidRequest(format!("broker at {addr}: {what}")),
            tonic::Code::Unimplemented => {
                ClientError::Unavailable(format!("{addr} does not serve this call (is it a Strata broker?): {what}"))
            }
            // gRPC's own codes are not Strata's: numbers would collide.
            code => ClientError::Other {
                code: ErrorCode::Internal as i32,
                message: format!("broker at {addr}: {code:?}: {what}"),
            },
        }
    }

    /// The wire code of the error, when it came from one.
    pub fn code(&self) -> Option<ErrorCode> {
        Some(match self {
            ClientError::UnknownTopicOrPartition(_) => ErrorCode::UnknownTopicOrPartition,
            ClientError::NotLeader { .. } => ErrorCode::NotLeaderForPartition,
            ClientError::MessageTooLarge(_) => ErrorCode::MessageTooLarge,
            ClientError::CorruptRecord(_) => ErrorCode::CorruptRecord,
            ClientError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            ClientError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            ClientError::TopicAlreadyExists(_) => ErrorCode::TopicAlreadyExists,
            ClientError::InvalidPartitions(_) => ErrorCode::InvalidPartitions,
            ClientError::InvalidReplicationFactor(_) => ErrorCode::InvalidReplicationFactor,
            ClientError::NotEnoughReplicas(_) => ErrorCode::NotEnoughReplicas,
            ClientError::RequestTimedOut(_) => ErrorCode::RequestTimedOut,
            ClientError::InvalidConfig(_) => ErrorCode::InvalidConfig,
            ClientError::StorageError(_) => ErrorCode::StorageError,
            ClientError::LeaderNotAvailable(_) => ErrorCode::LeaderNotAvailable,
            ClientError::InvalidTopic(_) => ErrorCode::InvalidTopic,
            ClientError::BrokerNotAvailable(_) => ErrorCode::BrokerNotAvailable,
            ClientError::FencedLeaderEpoch(_) => ErrorCode::FencedLeaderEpoch,
            ClientError::UnknownLeaderEpoch(_) => ErrorCode::UnknownLeaderEpoch,
            ClientError::OutOfOrderSequenceNumber(_) => ErrorCode::OutOfOrderSequenceNumber,
            ClientError::InvalidProducerEpoch(_) => ErrorCode::InvalidProducerEpoch,
            ClientError::UnknownProducerId(_) => ErrorCode::UnknownProducerId,
            ClientError::NotEnoughReplicasAfterAppend(_) => ErrorCode::NotEnoughReplicasAfterAppend,
            ClientError::NotCoordinator { .. } => ErrorCode::NotCoordinator,
            ClientError::CoordinatorNotAvailable(_) => ErrorCode::CoordinatorNotAvailable,
            ClientError::IllegalGeneration(_) => ErrorCode::IllegalGeneration,
            ClientError::UnknownMemberId(_) => ErrorCode::UnknownMemberId,
            ClientError::FencedInstanceId(_) => ErrorCode::FencedInstanceId,
            ClientError::NonEmptyGroup(_) => ErrorCode::NonEmptyGroup,
            ClientError::GroupIdNotFound(_) => ErrorCode::GroupIdNotFound,
            ClientError::InconsistentGroupProtocol(_) => ErrorCode::InconsistentGroupProtocol,
            ClientError::PartitionNotOwned(_) => ErrorCode::PartitionNotOwned,
            ClientError::Unavailable(_) => ErrorCode::Unavailable,
            ClientError::Other { code, .. } => return ErrorCode::try_from(*code).ok(),
            ClientError::Unreachable(_) | ClientError::NoOffset { .. } | ClientError::InvalidArgument(_) => {
                return None;
            }
        })
    }

    /// Whether the same request may succeed if sent again (after the
    /// metadata moved on, or after a pause). `UnknownTopicOrPartition` is
    /// not: it is retriable only while the metadata still lists the
    /// partition (a broker that has not yet caught up), which only the
    /// caller can check; see [`ClientError::is_stale_metadata`].
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            ClientError::NotLeader { .. }
                | ClientError::LeaderNotAvailable(_)
                | ClientError::RequestTimedOut(_)
                | ClientError::NotEnoughReplicas(_)
                | ClientError::NotEnoughReplicasAfterAppend(_)
                | ClientError::StorageError(_)
                | ClientError::BrokerNotAvailable(_)
                | ClientError::FencedLeaderEpoch(_)
                | ClientError::UnknownLeaderEpoch(_)
                | ClientError::Unavailable(_)
                | ClientError::Unreachable(_)
                | ClientError::NotCoordinator { .. }
                | ClientError::CoordinatorNotAvailable(_)
        )
    }

    /// Whether the error says our idea of who leads what is out of date, so
    /// a retry should wait for newer metadata rather than just for time.
    pub fn is_stale_metadata(&self) -> bool {
        matches!(
            self,
            ClientError::NotLeader { .. }
                | ClientError::LeaderNotAvailable(_)
                | ClientError::UnknownTopicOrPartition(_)
                | ClientError::StorageError(_)
                | ClientError::BrokerNotAvailable(_)
                | ClientError::FencedLeaderEpoch(_)
                | ClientError::UnknownLeaderEpoch(_)
                | ClientError::Unreachable(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use strata_proto::error::status_from_detail;

    use super::*;

    fn partition_error(code: ErrorCode, leader_id: i32, leader_addr: &str) -> PartitionError {
        PartitionError { code: code as i32, message: "m".into(), leader_id, leader_addr: leader_addr.into() }
    }

    #[test]
    fn every_broker_code_has_its_own_variant() {
        let broker_codes = [
            ErrorCode::UnknownTopicOrPartition,
            ErrorCode::NotLeaderForPartition,
            ErrorCode::MessageTooLarge,
            ErrorCode::CorruptRecord,
            ErrorCode::InvalidRequest,
            ErrorCode::OffsetOutOfRange,
            ErrorCode::TopicAlreadyExists,
            ErrorCode::InvalidPartitions,
            ErrorCode::InvalidReplicationFactor,
            ErrorCode::NotEnoughReplicas,
            ErrorCode::RequestTimedOut,
            ErrorCode::InvalidConfig,
            ErrorCode::StorageError,
            ErrorCode::LeaderNotAvailable,
            ErrorCode::InvalidTopic,
            ErrorCode::BrokerNotAvailable,
            ErrorCode::FencedLeaderEpoch,
            ErrorCode::UnknownLeaderEpoch,
            ErrorCode::OutOfOrderSequenceNumber,
            ErrorCode::InvalidProducerEpoch,
            ErrorCode::UnknownProducerId,
            ErrorCode::NotEnoughReplicasAfterAppend,
        ];
        for code in broker_codes {
            let e = ClientError::from_code(code as i32, "x");
            assert!(!matches!(e, ClientError::Other { .. }), "{code:?} fell through to Other");
            assert_eq!(e.code(), Some(code), "{code:?} does not round-trip");
        }
        // Every number from 100 to 121 is covered: none is left unnamed.
        for n in 100..=121 {
            assert!(ErrorCode::try_from(n).is_ok(), "code {n} has no name");
        }
    }

    #[test]
    fn codes_have_names() {
        assert_eq!(code_name(101), "NOT_LEADER_FOR_PARTITION");
        assert_eq!(code_name(9999), "error code 9999");
    }

    #[test]
    fn unknown_codes_survive_raw() {
        let e = ClientError::from_code(4242, "from the future");
        assert_eq!(e, ClientError::Other { code: 4242, message: "from the future".into() });
        assert!(!e.is_retriable());
        assert_eq!(e.code(), None);
    }

    #[test]
    fn retry_classification_follows_the_brief() {
        let retriable = [
            ErrorCode::NotLeaderForPartition,
            ErrorCode::LeaderNotAvailable,
            ErrorCode::RequestTimedOut,
            ErrorCode::NotEnoughReplicas,
            ErrorCode::StorageError,
            ErrorCode::BrokerNotAvailable,
            ErrorCode::Unavailable,
            ErrorCode::FencedLeaderEpoch,
            ErrorCode::UnknownLeaderEpoch,
            ErrorCode::NotEnoughReplicasAfterAppend,
        ];
        let fatal = [
            ErrorCode::UnknownTopicOrPartition,
            ErrorCode::MessageTooLarge,
            ErrorCode::CorruptRecord,
            ErrorCode::InvalidRequest,
            ErrorCode::OffsetOutOfRange,
            ErrorCode::TopicAlreadyExists,
            ErrorCode::InvalidPartitions,
            ErrorCode::InvalidReplicationFactor,
            ErrorCode::InvalidConfig,
            ErrorCode::InvalidTopic,
            ErrorCode::Internal,
            ErrorCode::OutOfOrderSequenceNumber,
            ErrorCode::InvalidProducerEpoch,
            ErrorCode::UnknownProducerId,
        ];
        for code in retriable {
            assert!(ClientError::from_code(code as i32, "").is_retriable(), "{code:?}");
        }
        for code in fatal {
            assert!(!ClientError::from_code(code as i32, "").is_retriable(), "{code:?}");
        }
        assert!(ClientError::Unreachable("x".into()).is_retriable());
        assert!(ClientError::UnknownTopicOrPartition(String::new()).is_stale_metadata());
        assert!(!ClientError::RequestTimedOut(String::new()).is_stale_metadata());
        // Epoch mismatches mean someone's metadata is behind: refresh ours.
        assert!(ClientError::FencedLeaderEpoch(String::new()).is_stale_metadata());
        assert!(ClientError::UnknownLeaderEpoch(String::new()).is_stale_metadata());
        assert!(!ClientError::NotEnoughReplicasAfterAppend(String::new()).is_stale_metadata());
        assert!(!ClientError::OutOfOrderSequenceNumber(String::new()).is_stale_metadata());
    }

    #[test]
    fn partition_errors_carry_the_leader_hint() {
        assert_eq!(ClientError::from_partition_error(None), None);
        assert_eq!(ClientError::from_partition_error(Some(&partition_error(ErrorCode::Unspecified, -1, ""))), None);
        let e = ClientError::from_partition_error(Some(&partition_error(
            ErrorCode::NotLeaderForPartition,
            3,
            "10.0.0.3:9092",
        )));
        assert_eq!(
            e,
            Some(ClientError::NotLeader {
                leader_id: Some(3),
                leader_addr: Some("10.0.0.3:9092".into()),
                message: "m".into()
            })
        );
        let text = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("broker 3 at 10.0.0.3:9092"), "{text}");
        let none = ClientError::from_partition_error(Some(&partition_error(ErrorCode::NotLeaderForPartition, -1, "")));
        assert_eq!(none, Some(ClientError::NotLeader { leader_id: None, leader_addr: None, message: "m".into() }));
    }

    #[test]
    fn statuses_with_detail_are_broker_answers() {
        let detail = ErrorDetail {
            code: ErrorCode::TopicAlreadyExists as i32,
            message: "topic orders exists".into(),
            ..Default::default()
        };
        let e = ClientError::from_status(&status_from_detail(detail), "b:1");
        assert_eq!(e, ClientError::TopicAlreadyExists("topic orders exists".into()));

        let detail = ErrorDetail {
            code: ErrorCode::NotLeaderForPartition as i32,
            message: "moved".into(),
            leader_id: 2,
            leader_addr: "b:2".into(),
            ..Default::default()
        };
        let e = ClientError::from_status(&status_from_detail(detail), "b:1");
        assert_eq!(
            e,
            ClientError::NotLeader { leader_id: Some(2), leader_addr: Some("b:2".into()), message: "moved".into() }
        );
    }

    #[test]
    fn statuses_without_detail_are_transport_failures_naming_the_address() {
        let e = ClientError::from_status(&tonic::Status::unavailable("connection refused"), "127.0.0.1:9092");
        assert!(matches!(&e, ClientError::Unreachable(m) if m.contains("127.0.0.1:9092") && m.contains("refused")));
        assert!(e.is_retriable());
        let e = ClientError::from_status(&tonic::Status::deadline_exceeded("slow"), "h:1");
        assert!(matches!(e, ClientError::RequestTimedOut(_)));
        // A detail that does not decode is not a broker answer either.
        let garbage = tonic::Status::with_details(tonic::Code::Unavailable, "reset", vec![0xff, 0xff].into());
        let e = ClientError::from_status(&garbage, "h:1");
        assert!(e.is_retriable(), "{e:?}");
        // Sanity: a well-formed detail really is what `from_status` reads.
        let encoded = ErrorDetail { code: ErrorCode::InvalidConfig as i32, ..Default::default() }.encode_to_vec();
        let status = tonic::Status::with_details(tonic::Code::InvalidArgument, "bad", encoded.into());
        assert!(matches!(ClientError::from_status(&status, "h:1"), ClientError::InvalidConfig(_)));
    }
}
