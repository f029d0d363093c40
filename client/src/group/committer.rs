//! Offset commits, one at a time and in the order asked, so an older
//! position never lands after a newer one (an automatic commit still in
//! flight cannot overwrite the commit of a revocation).
//!
//! A commit goes to the coordinator the member is joined to, as
//! (`member_id`, `generation`). While the member is rejoining, commits wait
//! for it until their deadline and then fail retriably.

use std::collections::HashMap;
use std::time::Duration;

use strata_proto::broker::CommitOffsetsRequest;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::debug;

use super::membership::{Command, MemberView};
use super::rpc::unary;
use crate::consumer::TopicPartition;
use crate::error::ClientError;
use crate::metadata::MetadataClient;

/// How long a commit refused for a stale generation waits for the stream to
/// deliver a newer one (a rebalance racing the commit) before the member
/// is taken for a zombie.
const FENCING_GRACE: Duration = Duration::from_secs(1);

pub(crate) enum Reply {
    /// `commit_sync` and friends wait for the result.
    Sync(oneshot::Sender<Result<(), ClientError>>),
    /// `commit_async` and automatic commits: the outcome goes to `poll`.
    Async { auto: bool },
}

pub(crate) struct CommitRequest {
    pub offsets: Vec<(TopicPartition, i64)>,
    pub deadline: Instant,
    pub reply: Reply,
}

/// The outcome of an asynchronous commit.
#[derive(Debug)]
pub(crate) struct CommitOutcome {
    pub offsets: Vec<(TopicPartition, i64)>,
    pub auto: bool,
    pub result: Result<(), ClientError>,
}

pub(crate) struct Committer {
    pub metadata: MetadataClient,
    pub group: String,
    pub view: watch::Receiver<MemberView>,
    pub commands: mpsc::UnboundedSender<Command>,
    pub requests: mpsc::UnboundedReceiver<CommitRequest>,
    pub outcomes: mpsc::UnboundedSender<CommitOutcome>,
    pub backoff: Duration,
}

/// Which error of a partly failed commit decides what happens next: a
/// fencing error first, then one that will not pass by retrying.
fn rank(e: &ClientError) -> u8 {
    match e {
        ClientError::FencedInstanceId(_) => 0,
        ClientError::UnknownMemberId(_) | ClientError::IllegalGeneration(_) => 1,
        e if !e.is_retriable() => 2,
        _ => 3,
    }
}

impl Committer {
    pub(crate) async fn run(mut self) {
        while let Some(request) = self.requests.recv().await {
            let result = self.commit(request.offsets.clone(), request.deadline).await;
            match request.reply {
                Reply::Sync(reply) => {
                    let _ = reply.send(result);
                }
                Reply::Async { auto } => {
                    let _ = self.outcomes.send(CommitOutcome { offsets: request.offsets, auto, result });
                }
            }
        }
    }

    async fn commit(&mut self, offsets: Vec<(TopicPartition, i64)>, deadline: Instant) -> Result<(), ClientError> {
        let mut todo = offsets;
        let mut last: Option<ClientError> = None;
        loop {
            let view = self.view.borrow_and_update().clone();
            if let Some(fatal) = view.fatal {
                return Err(fatal);
            }
            let (Some(coordinator), Some(member_id)) = (view.coordinator.clone(), view.member_id.clone()) else {
                let why = view.last_error.map(|e| format!(": {e}")).unwrap_or_default();
                last = Some(ClientError::CoordinatorNotAvailable(format!(
                    "group {} is not joined to its coordinator{why}",
                    self.group
                )));
                if !self.wait_change(deadline).await {
                    return Err(last.unwrap_or_else(|| ClientError::CoordinatorNotAvailable(self.group.clone())));
                }
                continue;
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(last.unwrap_or_else(|| ClientError::RequestTimedOut("commit: out of time".into())));
            }
            let request = CommitOffsetsRequest {
                group: self.group.clone(),
                member_id: member_id.clone(),
                generation: view.generation,
                offsets: super::rpc::offset_commits(&todo),
            };
            let addr = coordinator.addr;
            let mut client = self.metadata.groups_client(&addr)?;
            let error = match unary(&addr, "commit offsets", remaining, client.commit_offsets(request)).await {
                Ok(answer) => {
                    let errors: HashMap<TopicPartition, ClientError> = answer
                        .partitions
                        .iter()
                        .filter_map(|p| {
                            let e = ClientError::from_partition_error(p.error.as_ref())?;
                            Some((TopicPartition::new(p.topic.clone(), p.partition), e))
                        })
                        .collect();
                    todo.retain(|(tp, _)| errors.contains_key(tp));
                    match todo.iter().filter_map(|(tp, _)| errors.get(tp)).min_by_key(|e| rank(e)) {
                        None => return Ok(()),
                        Some(e) => e.clone(),
                    }
                }
                Err(e) => e,
            };
            match &error {
                ClientError::FencedInstanceId(_) => return Err(error),
                ClientError::UnknownMemberId(_) | ClientError::IllegalGeneration(_) => {
                    let grace = deadline.min(Instant::now() + FENCING_GRACE);
                    if self.wait_moved_on(&member_id, view.generation, grace).await {
                        continue;
                    }
                    debug!(group = %self.group, %error, "commit refused: fenced");
                    let _ = self.commands.send(Command::Fenced {
                        member_id,
                        generation: view.generation,
                        error: error.clone(),
                    });
                    return Err(error);
                }
                e if e.is_retriable() => {
                    debug!(group = %self.group, error = %e, "commit will be retried");
                    last = Some(error);
                    let wake = deadline.min(Instant::now() + self.backoff);
                    tokio::select! {
                        () = tokio::time::sleep_until(wake) => {}
                        _ = self.view.changed() => {}
                    }
                    if Instant::now() >= deadline {
                        return Err(last.unwrap_or_else(|| ClientError::RequestTimedOut("commit".into())));
                    }
                }
                _ => return Err(error),
            }
        }
    }

    /// Waits for the membership to change, until `deadline`; false on
    /// timeout (or if the membership task is gone).
    async fn wait_change(&mut self, deadline: Instant) -> bool {
        matches!(tokio::time::timeout_at(deadline, self.view.changed()).await, Ok(Ok(())))
    }

    /// Waits until the member has a new id or generation (or is out for
    /// good), until `deadline`.
    async fn wait_moved_on(&mut self, member_id: &str, generation: i32, deadline: Instant) -> bool {
        loop {
            {
                let v = self.view.borrow_and_update();
                if v.fatal.is_some() || v.generation != generation || v.member_id.as_deref() != Some(member_id) {
                    return true;
                }
            }
            if !self.wait_change(deadline).await {
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fencing_errors_decide_a_partly_failed_commit() {
        let errors = [
            ClientError::CoordinatorNotAvailable(String::new()),
            ClientError::PartitionNotOwned(String::new()),
            ClientError::IllegalGeneration(String::new()),
        ];
        let worst = errors.iter().min_by_key(|e| rank(e));
        assert!(matches!(worst, Some(ClientError::IllegalGeneration(_))));
        assert!(
            rank(&ClientError::FencedInstanceId(String::new())) < rank(&ClientError::UnknownMemberId(String::new()))
        );
        assert!(rank(&ClientError::PartitionNotOwned(String::new())) < rank(&ClientError::Unreachable(String::new())));
    }
}
