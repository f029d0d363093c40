//! Group proposal: concurrent writes on the leader travel as one Raft entry.
//!
//! Every Raft entry costs a log append, a disk sync on a quorum and a
//! replication round; a batch of commands pays those once. Commands keep
//! their individual request ids, revisions and responses — batching changes
//! only how many of them share an entry.
//!
//! Invariant: commands are applied in the order they were queued; a batch
//! is one entry, so it is applied on every member wholly or not at all.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::command::{Command, Response, WriteOp};
use crate::raft::Raft;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProposeError {
    NotLeader,
    Unavailable(String),
}

type Reply = oneshot::Sender<Result<Response, ProposeError>>;

/// Commands and payload bytes one entry carries at most.
const MAX_BATCH_COMMANDS: usize = 1024;
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Entries in flight at once; more queued commands wait and join a batch.
const MAX_IN_FLIGHT: usize = 4;

#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::UnboundedSender<(Command, Reply)>,
}

fn payload_bytes(cmd: &Command) -> usize {
    64 + match &cmd.op {
        WriteOp::Create(c) => c.path.len() + c.data.len(),
        WriteOp::Set(s) => s.path.len() + s.data.len(),
        WriteOp::Delete(d) => d.path.len(),
        WriteOp::Txn { conditions, ops } => {
            conditions.len() * 64
                + ops
                    .iter()
                    .map(|op| match op {
                        crate::command::TxnOp::Create(c) => c.path.len() + c.data.len(),
                        crate::command::TxnOp::Set(s) => s.path.len() + s.data.len(),
                        crate::command::TxnOp::Delete(d) => d.path.len(),
                    })
                    .sum::<usize>()
        }
        WriteOp::OpenSession { .. }
        | WriteOp::CloseSession { .. }
        | WriteOp::ExpireSession { .. }
        | WriteOp::SetMemberAddr { .. } => 0,
    }
}

impl Proposer {
    /// Starts the proposal loop for `raft`; must run inside a tokio runtime.
    pub fn start(raft: Raft) -> Proposer {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, rx));
        Proposer { tx }
    }

    pub async fn propose(&self, cmd: Command) -> Result<Response, ProposeError> {
        let (reply, wait) = oneshot::channel();
        self.tx.send((cmd, reply)).map_err(|_| ProposeError::Unavailable("shutting down".into()))?;
        wait.await.unwrap_or_else(|_| Err(ProposeError::Unavailable("shutting down".into())))
    }
}

async fn run(raft: Raft, mut rx: mpsc::UnboundedReceiver<(Command, Reply)>) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut carry: Option<(Command, Reply)> = None;
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let first = match carry.take() {
            Some(c) => c,
            None => match rx.recv().await {
                Some(c) => c,
                None => return,
            },
        };
        let mut bytes = payload_bytes(&first.0);
        let mut commands = vec![first.0];
        let mut replies = vec![first.1];
        while commands.len() < MAX_BATCH_COMMANDS {
            match rx.try_recv() {
                Ok((cmd, reply)) => {
                    let size = payload_bytes(&cmd);
                    if bytes + size > MAX_BATCH_BYTES {
                        carry = Some((cmd, reply));
                        break;
                    }
                    bytes += size;
                    commands.push(cmd);
                    replies.push(reply);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let outcome = raft.client_write(commands).await;
            drop(permit);
            match outcome {
                Ok(written) => {
                    for (reply, response) in replies.into_iter().zip(written.data) {
                        let _ = reply.send(Ok(response));
                    }
                }
                Err(e) => {
                    let err = match e {
                        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => ProposeError::NotLeader,
                        other => ProposeError::Unavailable(other.to_string()),
                    };
                    for reply in replies {
                        let _ = reply.send(Err(err.clone()));
                    }
                }
            }
        });
    }
}
