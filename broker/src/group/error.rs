//! Failures of the group coordinator, each mapping to one stable wire code
//! (`strata.common.v1.ErrorCode`, group range 122..).

use strata_coord_client::CoordError;
use strata_proto::common::ErrorCode;

use crate::metadata::model::BrokerId;

/// The broker that coordinates a group, as this broker's metadata knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorHint {
    pub id: BrokerId,
    pub addr: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("this broker does not coordinate group {group}{}", hint_text(.coordinator))]
    NotCoordinator { group: String, coordinator: Option<CoordinatorHint> },
    #[error("no coordinator available: {0}")]
    CoordinatorNotAvailable(String),
    #[error("generation {given} is not the group's current generation {current}")]
    IllegalGeneration { given: i32, current: i32 },
    #[error("unknown member: {0}")]
    UnknownMemberId(String),
    #[error("static instance {0:?} was taken over by another process")]
    FencedInstanceId(String),
    #[error("group {0} has members")]
    NonEmptyGroup(String),
    #[error("group {0} does not exist")]
    GroupIdNotFound(String),
    #[error("{0}")]
    InconsistentGroupProtocol(String),
    #[error("{topic}-{partition} is not owned by this member in this generation")]
    PartitionNotOwned { topic: String, partition: u32 },
    #[error("unknown topic or partition {topic}-{partition}")]
    UnknownTopicOrPartition { topic: String, partition: u32 },
}

fn hint_text(hint: &Option<CoordinatorHint>) -> String {
    match hint {
        Some(h) => format!(" (broker {} at {} does)", h.id, h.addr),
        None => String::new(),
    }
}

impl GroupError {
    pub fn code(&self) -> ErrorCode {
        match self {
            GroupError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            GroupError::NotCoordinator { .. } => ErrorCode::NotCoordinator,
            GroupError::CoordinatorNotAvailable(_) => ErrorCode::CoordinatorNotAvailable,
            GroupError::IllegalGeneration { .. } => ErrorCode::IllegalGeneration,
            GroupError::UnknownMemberId(_) => ErrorCode::UnknownMemberId,
            GroupError::FencedInstanceId(_) => ErrorCode::FencedInstanceId,
            GroupError::NonEmptyGroup(_) => ErrorCode::NonEmptyGroup,
            GroupError::GroupIdNotFound(_) => ErrorCode::GroupIdNotFound,
            GroupError::InconsistentGroupProtocol(_) => ErrorCode::InconsistentGroupProtocol,
            GroupError::PartitionNotOwned { .. } => ErrorCode::PartitionNotOwned,
            GroupError::UnknownTopicOrPartition { .. } => ErrorCode::UnknownTopicOrPartition,
        }
    }

    /// The coordinator to name in leader_id / leader_addr.
    pub fn coordinator(&self) -> Option<&CoordinatorHint> {
        match self {
            GroupError::NotCoordinator { coordinator, .. } => coordinator.as_ref(),
            _ => None,
        }
    }

    /// An ensemble failure while serving a group: every one is retriable
    /// from the client's point of view.
    pub fn from_coord(what: &str, e: &CoordError) -> GroupError {
        GroupError::CoordinatorNotAvailable(format!("{what}: {e}"))
    }
}
