//! The namespace: nodes, stats, sessions and their ephemerals, sequential
//! names, transactions. Pure: no IO, no clock, no randomness. Every member
//! applies the same commands in the same order and so holds the same tree.
//!
//! Invariant: `apply` is deterministic — its result and its events depend
//! only on the namespace and the command.
//! Invariant: a failed command (error, or a Txn whose condition fails)
//! leaves the namespace exactly as it was and does not bump the revision.

pub mod path;
mod request_log;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::command::{
    Check, Command, Condition, CreateOp, DeleteOp, OpResult, Outcome, Response, SetOp, TxnOp, WriteOp,
};
pub use request_log::RequestLog;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TreeError {
    #[error("node {0} does not exist")]
    NotFound(String),
    #[error("node {0} already exists")]
    NodeExists(String),
    #[error("version mismatch on {path}: expected {expected}, found {actual}")]
    BadVersion { path: String, expected: u64, actual: u64 },
    #[error("node {0} has children")]
    NotEmpty(String),
    #[error("session {0} has expired or was never opened")]
    SessionExpired(u64),
    #[error("ephemeral node {0} cannot have children")]
    NoChildrenForEphemerals(String),
    #[error("{0}")]
    InvalidArgument(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Stat {
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
    pub children_version: u64,
    pub ephemeral_owner: u64,
    pub data_length: u32,
    pub num_children: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Node {
    data: Bytes,
    create_revision: u64,
    mod_revision: u64,
    version: u64,
    children_version: u64,
    ephemeral_owner: u64,
    children: BTreeSet<String>,
}

impl Node {
    fn new(data: Bytes, revision: u64, ephemeral_owner: u64) -> Self {
        Node {
            data,
            create_revision: revision,
            mod_revision: revision,
            version: 0,
            children_version: 0,
            ephemeral_owner,
            children: BTreeSet::new(),
        }
    }

    fn stat(&self) -> Stat {
        Stat {
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            children_version: self.children_version,
            ephemeral_owner: self.ephemeral_owner,
            data_length: u32::try_from(self.data.len()).unwrap_or(u32::MAX),
            num_children: u32::try_from(self.children.len()).unwrap_or(u32::MAX),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub ttl_ms: u64,
    pub ephemerals: BTreeSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Created,
    Changed,
    Deleted,
}

/// A change to one node, fired to watchers after the command is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub path: String,
    pub data: Bytes,
    pub stat: Stat,
    pub revision: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    nodes: BTreeMap<String, Node>,
    sessions: BTreeMap<u64, SessionInfo>,
    next_session_id: u64,
    revision: u64,
    members: BTreeMap<u64, String>,
    requests: RequestLog,
}

impl Default for Namespace {
    fn default() -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert("/".to_string(), Node::new(Bytes::new(), 0, 0));
        Namespace {
            nodes,
            sessions: BTreeMap::new(),
            next_session_id: 1,
            revision: 0,
            members: BTreeMap::new(),
            requests: RequestLog::default(),
        }
    }
}

/// Undo record for one node touched inside a transaction.
struct Saved {
    path: String,
    node: Option<Node>,
}

impl Namespace {
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn get(&self, path: &str) -> Option<(Bytes, Stat)> {
        self.nodes.get(path).map(|n| (n.data.clone(), n.stat()))
    }

    pub fn stat(&self, path: &str) -> Option<Stat> {
        self.nodes.get(path).map(Node::stat)
    }

    pub fn children(&self, path: &str) -> Option<(Vec<String>, Stat)> {
        self.nodes.get(path).map(|n| (n.children.iter().cloned().collect(), n.stat()))
    }

    pub fn sessions(&self) -> &BTreeMap<u64, SessionInfo> {
        &self.sessions
    }

    pub fn members(&self) -> &BTreeMap<u64, String> {
        &self.members
    }

    /// Applies one committed command. Retries of an already-applied request
    /// id return the first outcome and change nothing.
    pub fn apply(&mut self, cmd: &Command) -> (Response, Vec<Event>) {
        if let Some(id) = &cmd.request_id
            && let Some(previous) = self.requests.get(id)
        {
            return (previous.clone(), Vec::new());
        }
        let mut events = Vec::new();
        let next = self.revision + 1;
        let outcome = self.apply_op(&cmd.op, next, &mut events);
        if !events.is_empty() {
            self.revision = next;
        }
        let response = Response { revision: self.revision, outcome };
        if let Some(id) = &cmd.request_id {
            self.requests.insert(id.clone(), response.clone());
        }
        (response, events)
    }

    fn apply_op(&mut self, op: &WriteOp, rev: u64, events: &mut Vec<Event>) -> Result<Outcome, TreeError> {
        match op {
            WriteOp::Create(c) => {
                let (path, stat) = self.create(c, rev, events)?;
                Ok(Outcome::Created { path, stat })
            }
            WriteOp::Set(s) => {
                let (stat, created) = self.set(s, rev, events)?;
                Ok(Outcome::Set { stat, created })
            }
            WriteOp::Delete(d) => {
                self.delete(d, rev, events)?;
                Ok(Outcome::Deleted)
            }
            WriteOp::Txn { conditions, ops } => self.txn(conditions, ops, rev, events),
            WriteOp::OpenSession { ttl_ms } => {
                let session_id = self.next_session_id;
                self.next_session_id += 1;
                self.sessions.insert(session_id, SessionInfo { ttl_ms: *ttl_ms, ephemerals: BTreeSet::new() });
                Ok(Outcome::SessionOpened { session_id, ttl_ms: *ttl_ms })
            }
            WriteOp::CloseSession { session_id } | WriteOp::ExpireSession { session_id } => {
                self.end_session(*session_id, rev, events)?;
                Ok(Outcome::SessionClosed)
            }
            WriteOp::SetMemberAddr { id, client_addr } => {
                self.members.insert(*id, client_addr.clone());
                Ok(Outcome::Done)
            }
        }
    }

    fn check_path(path: &str) -> Result<(), TreeError> {
        path::validate(path)
    }

    fn create(&mut self, op: &CreateOp, rev: u64, events: &mut Vec<Event>) -> Result<(String, Stat), TreeError> {
        Self::check_path(&op.path)?;
        if op.path == "/" {
            return Err(TreeError::NodeExists("/".into()));
        }
        if op.ephemeral_owner != 0 && !self.sessions.contains_key(&op.ephemeral_owner) {
            return Err(TreeError::SessionExpired(op.ephemeral_owner));
        }
        let parent_path = path::parent(&op.path).to_string();
        let parent = self.nodes.get(&parent_path).ok_or_else(|| TreeError::NotFound(parent_path.clone()))?;
        if parent.ephemeral_owner != 0 {
            return Err(TreeError::NoChildrenForEphemerals(parent_path));
        }
        let path = if op.sequential {
            // The parent's children_version only grows, so sequence numbers
            // are unique under a parent even after deletes.
            format!("{}{:010}", op.path, parent.children_version)
        } else {
            op.path.clone()
        };
        if self.nodes.contains_key(&path) {
            return Err(TreeError::NodeExists(path));
        }
        let node = Node::new(op.data.clone(), rev, op.ephemeral_owner);
        let stat = node.stat();
        let name = path::name(&path).to_string();
        if let Some(parent) = self.nodes.get_mut(&parent_path) {
            parent.children.insert(name);
            parent.children_version += 1;
        }
        if op.ephemeral_owner != 0
            && let Some(session) = self.sessions.get_mut(&op.ephemeral_owner)
        {
            session.ephemerals.insert(path.clone());
        }
        events.push(Event { kind: EventKind::Created, path: path.clone(), data: op.data.clone(), stat, revision: rev });
        self.nodes.insert(path.clone(), node);
        Ok((path, stat))
    }

    fn set(&mut self, op: &SetOp, rev: u64, events: &mut Vec<Event>) -> Result<(Stat, bool), TreeError> {
        Self::check_path(&op.path)?;
        let Some(node) = self.nodes.get_mut(&op.path) else {
            if op.upsert && op.expected_version.is_none() {
                let create =
                    CreateOp { path: op.path.clone(), data: op.data.clone(), ephemeral_owner: 0, sequential: false };
                let (_, stat) = self.create(&create, rev, events)?;
                return Ok((stat, true));
            }
            return Err(TreeError::NotFound(op.path.clone()));
        };
        if let Some(expected) = op.expected_version
            && node.version != expected
        {
            return Err(TreeError::BadVersion { path: op.path.clone(), expected, actual: node.version });
        }
        node.data = op.data.clone();
        node.version += 1;
        node.mod_revision = rev;
        let stat = node.stat();
        events.push(Event {
            kind: EventKind::Changed,
            path: op.path.clone(),
            data: op.data.clone(),
            stat,
            revision: rev,
        });
        Ok((stat, false))
    }

    fn delete(&mut self, op: &DeleteOp, rev: u64, events: &mut Vec<Event>) -> Result<(), TreeError> {
        Self::check_path(&op.path)?;
        if op.path == "/" {
            return Err(TreeError::InvalidArgument("the root node cannot be deleted".into()));
        }
        let node = self.nodes.get(&op.path).ok_or_else(|| TreeError::NotFound(op.path.clone()))?;
        if let Some(expected) = op.expected_version
            && node.version != expected
        {
            return Err(TreeError::BadVersion { path: op.path.clone(), expected, actual: node.version });
        }
        if !node.children.is_empty() {
            return Err(TreeError::NotEmpty(op.path.clone()));
        }
        self.remove_leaf(&op.path, rev, events);
        Ok(())
    }

    /// Removes a node known to exist and to have no children.
    fn remove_leaf(&mut self, path: &str, rev: u64, events: &mut Vec<Event>) {
        let Some(node) = self.nodes.remove(path) else { return };
        let parent_path = path::parent(path);
        if let Some(parent) = self.nodes.get_mut(parent_path) {
            parent.children.remove(path::name(path));
            parent.children_version += 1;
        }
        if node.ephemeral_owner != 0
            && let Some(session) = self.sessions.get_mut(&node.ephemeral_owner)
        {
            session.ephemerals.remove(path);
        }
        let mut stat = node.stat();
        stat.mod_revision = rev;
        events.push(Event {
            kind: EventKind::Deleted,
            path: path.to_string(),
            data: Bytes::new(),
            stat,
            revision: rev,
        });
    }

    fn end_session(&mut self, session_id: u64, rev: u64, events: &mut Vec<Event>) -> Result<(), TreeError> {
        let session = self.sessions.remove(&session_id).ok_or(TreeError::SessionExpired(session_id))?;
        // Ephemerals cannot have children, so each is a leaf.
        for path in &session.ephemerals {
            self.remove_leaf(path, rev, events);
        }
        Ok(())
    }

    fn condition_holds(&self, cond: &Condition) -> bool {
        let node = self.nodes.get(&cond.path);
        match cond.check {
            Check::Exists(want) => node.is_some() == want,
            Check::Version(v) => node.is_some_and(|n| n.version == v),
            Check::ModRevision(r) => node.is_some_and(|n| n.mod_revision == r),
        }
    }

    fn txn(
        &mut self,
        conditions: &[Condition],
        ops: &[TxnOp],
        rev: u64,
        events: &mut Vec<Event>,
    ) -> Result<Outcome, TreeError> {
        for cond in conditions {
            Self::check_path(&cond.path)?;
        }
        if let Some(i) = conditions.iter().position(|c| !self.condition_holds(c)) {
            return Ok(Outcome::Txn {
                succeeded: false,
                failed_condition: u32::try_from(i).unwrap_or(u32::MAX),
                results: Vec::new(),
            });
        }
        // Each op touches at most a node and its parent (and the owning
        // session's ephemeral set); save those so a failing op undoes all.
        let mut saved: Vec<Saved> = Vec::new();
        let mut saved_sessions: BTreeMap<u64, Option<SessionInfo>> = BTreeMap::new();
        let mut results = Vec::with_capacity(ops.len());
        let mut txn_events = Vec::new();
        for (index, op) in ops.iter().enumerate() {
            let target = match op {
                TxnOp::Create(c) => c.path.clone(),
                TxnOp::Set(s) => s.path.clone(),
                TxnOp::Delete(d) => d.path.clone(),
            };
            if path::validate(&target).is_ok() && target != "/" {
                let parent = path::parent(&target).to_string();
                for p in [parent, target.clone()] {
                    if !saved.iter().any(|s| s.path == p) {
                        saved.push(Saved { node: self.nodes.get(&p).cloned(), path: p });
                    }
                }
            }
            let owners: Vec<u64> = match op {
                TxnOp::Create(c) => vec![c.ephemeral_owner],
                TxnOp::Delete(d) => self.nodes.get(&d.path).map(|n| n.ephemeral_owner).into_iter().collect(),
                TxnOp::Set(_) => Vec::new(),
            };
            for owner in owners.into_iter().filter(|o| *o != 0) {
                saved_sessions.entry(owner).or_insert_with(|| self.sessions.get(&owner).cloned());
            }
            let result = match op {
                TxnOp::Create(c) => {
                    self.create(c, rev, &mut txn_events).map(|(path, stat)| OpResult { path, stat: Some(stat) })
                }
                TxnOp::Set(s) => self
                    .set(s, rev, &mut txn_events)
                    .map(|(stat, _)| OpResult { path: s.path.clone(), stat: Some(stat) }),
                TxnOp::Delete(d) => {
                    self.delete(d, rev, &mut txn_events).map(|()| OpResult { path: d.path.clone(), stat: None })
                }
            };
            match result {
                Ok(r) => {
                    if let TxnOp::Create(c) = op
                        && c.sequential
                        && !saved.iter().any(|s| s.path == r.path)
                    {
                        saved.push(Saved { path: r.path.clone(), node: None });
                    }
                    results.push(r);
                }
                Err(e) => {
                    for s in saved.into_iter().rev() {
                        match s.node {
                            Some(node) => {
                                self.nodes.insert(s.path, node);
                            }
                            None => {
                                self.nodes.remove(&s.path);
                            }
                        }
                    }
                    for (id, session) in saved_sessions {
                        match session {
                            Some(info) => {
                                self.sessions.insert(id, info);
                            }
                            None => {
                                self.sessions.remove(&id);
                            }
                        }
                    }
                    return Err(match e {
                        TreeError::InvalidArgument(m) => TreeError::InvalidArgument(format!("txn op {index}: {m}")),
                        other => other,
                    });
                }
            }
        }
        events.extend(txn_events);
        Ok(Outcome::Txn { succeeded: true, failed_condition: 0, results })
    }
}

#[cfg(test)]
mod tests;
