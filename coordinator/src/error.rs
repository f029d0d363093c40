//! Errors of the client API, as the service layer reports them.

use crate::tree::TreeError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error("not the leader{}", leader_hint(.leader_id, .leader_addr))]
    NotLeader { leader_id: Option<u64>, leader_addr: Option<String> },
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("data is {size} bytes; the limit is {limit}")]
    DataTooLarge { size: usize, limit: usize },
    #[error("revision {requested} is compacted; resume from {oldest} or re-read")]
    Compacted { requested: u64, oldest: u64 },
    #[error("internal error: {0}")]
    Internal(String),
}

fn leader_hint(id: &Option<u64>, addr: &Option<String>) -> String {
    match (id, addr) {
        (Some(id), Some(addr)) => format!("; member {id} at {addr} leads"),
        (Some(id), None) => format!("; member {id} leads"),
        _ => "; no leader is known".to_string(),
    }
}
