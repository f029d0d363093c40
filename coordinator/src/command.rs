//! The replicated command and response enums: the schema of every Raft log
//! entry. Changing a variant's shape changes the on-disk log format, so
//! variants are only ever appended.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::tree::{Stat, TreeError};

/// Identifies one logical write across client retries (see `RequestLog`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId {
    pub client_id: Bytes,
    pub seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Command {
    pub request_id: Option<RequestId>,
    pub op: WriteOp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WriteOp {
    Create(CreateOp),
    Set(SetOp),
    Delete(DeleteOp),
    Txn {
        conditions: Vec<Condition>,
        ops: Vec<TxnOp>,
    },
    OpenSession {
        ttl_ms: u64,
    },
    CloseSession {
        session_id: u64,
    },
    /// Proposed by the leader alone when a session's deadline passes.
    ExpireSession {
        session_id: u64,
    },
    /// Publishes where a member serves clients, so NotLeader hints and
    /// status replies can name the leader's client address.
    SetMemberAddr {
        id: u64,
        client_addr: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateOp {
    pub path: String,
    pub data: Bytes,
    /// 0 for a persistent node.
    pub ephemeral_owner: u64,
    pub sequential: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetOp {
    pub path: String,
    pub data: Bytes,
    pub expected_version: Option<u64>,
    pub upsert: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteOp {
    pub path: String,
    pub expected_version: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum TxnOp {
    Create(CreateOp),
    Set(SetOp),
    Delete(DeleteOp),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Condition {
    pub path: String,
    pub check: Check,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Check {
    Exists(bool),
    Version(u64),
    ModRevision(u64),
}

/// What applying a command produced; `revision` is the namespace revision
/// after the command (unchanged when it changed nothing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub revision: u64,
    pub outcome: Result<Outcome, TreeError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    Created {
        path: String,
        stat: Stat,
    },
    Set {
        stat: Stat,
        created: bool,
    },
    Deleted,
    Txn {
        succeeded: bool,
        failed_condition: u32,
        results: Vec<OpResult>,
    },
    SessionOpened {
        session_id: u64,
        ttl_ms: u64,
    },
    SessionClosed,
    /// Raft-internal entries (blank, membership) and member bookkeeping.
    Done,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpResult {
    pub path: String,
    pub stat: Option<Stat>,
}
