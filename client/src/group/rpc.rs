//! Single calls to the `Groups` service, shared by the group consumer and
//! the admin client: finding a group's coordinator, fetching committed
//! offsets from any broker, and running a call against the coordinator
//! while following `NOT_COORDINATOR` answers.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use strata_proto::broker::groups_client::GroupsClient;
use strata_proto::broker::{CommittedOffset, FetchOffsetsRequest, FindCoordinatorRequest, OffsetCommit};
use tokio::time::Instant;
use tonic::transport::Channel;
use tracing::debug;

use super::assignment::to_wire;
use crate::consumer::TopicPartition;
use crate::error::ClientError;
use crate::metadata::{BrokerId, MetadataClient};

/// The broker coordinating a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Coordinator {
    pub id: BrokerId,
    pub addr: String,
}

/// Pause between rounds of calls that all failed retriably.
const ROUND_BACKOFF: Duration = Duration::from_millis(200);

/// One unary call to `addr`, bounded by `timeout`.
pub(crate) async fn unary<T>(
    addr: &str,
    what: &str,
    timeout: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, ClientError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(ClientError::from_status(&status, addr)),
        Err(_) => Err(ClientError::RequestTimedOut(format!("{what}: no answer from {addr} within {timeout:?}"))),
    }
}

/// Asks the brokers in turn which one coordinates `group`: one round, each
/// call bounded by `timeout`. A broker that fails retriably is skipped.
pub(crate) async fn find_coordinator(
    metadata: &MetadataClient,
    group: &str,
    timeout: Duration,
) -> Result<Coordinator, ClientError> {
    let mut last = None;
    for addr in metadata.brokers_to_try() {
        let mut client = metadata.groups_client(&addr)?;
        let request = FindCoordinatorRequest { group: group.to_string() };
        match unary(&addr, "find coordinator", timeout, client.find_coordinator(request)).await {
            Ok(answer) => {
                let coordinator_addr = if answer.addr.is_empty() {
                    metadata.current().broker_addr(answer.broker_id).map(str::to_string)
                } else {
                    Some(answer.addr)
                };
                match coordinator_addr {
                    Some(addr) if answer.broker_id >= 0 => return Ok(Coordinator { id: answer.broker_id, addr }),
                    _ => {
                        last = Some(ClientError::CoordinatorNotAvailable(format!(
                            "{addr} named broker {} as the coordinator of group {group}, whose address is unknown",
                            answer.broker_id
                        )));
                    }
                }
            }
            Err(e) if e.is_retriable() => {
                debug!(broker = %addr, error = %e, "find coordinator failed; trying another broker");
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(match last {
        Some(ClientError::Unreachable(_)) | None => metadata.unreachable_error(),
        Some(e) => e,
    })
}

/// Runs `call` against the coordinator of `group` until it answers with
/// something other than a retriable failure, or `timeout` passes. A
/// `NOT_COORDINATOR` answer naming the coordinator is followed at once.
/// `refused` reads the error out of an answer that carries its errors
/// inside (per partition), so that those are retried and followed too.
pub(crate) async fn call_coordinator<R, F, Fut>(
    metadata: &MetadataClient,
    group: &str,
    what: &str,
    timeout: Duration,
    refused: fn(&R) -> Option<ClientError>,
    mut call: F,
) -> Result<R, ClientError>
where
    F: FnMut(GroupsClient<Channel>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
{
    let deadline = Instant::now() + timeout;
    let mut hint: Option<String> = None;
    let mut last: Option<ClientError> = None;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(last.unwrap_or_else(|| ClientError::RequestTimedOut(format!("{what}: out of time"))));
        }
        let addr = match hint.take() {
            Some(addr) => addr,
            None => match find_coordinator(metadata, group, remaining).await {
                Ok(c) => c.addr,
                Err(e) if e.is_retriable() => {
                    last = Some(e);
                    tokio::time::sleep(ROUND_BACKOFF.min(deadline.saturating_duration_since(Instant::now()))).await;
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let error = match unary(&addr, what, remaining, call(metadata.groups_client(&addr)?)).await {
            Ok(answer) => match refused(&answer) {
                Some(e) if e.is_retriable() => e,
                _ => return Ok(answer),
            },
            Err(e) => e,
        };
        if !error.is_retriable() {
            return Err(error);
        }
        debug!(broker = %addr, %error, "{what} failed; asking again");
        match &error {
            ClientError::NotCoordinator { coordinator_addr: Some(next), .. } if *next != addr => {
                hint = Some(next.clone());
            }
            _ => tokio::time::sleep(ROUND_BACKOFF.min(deadline.saturating_duration_since(Instant::now()))).await,
        }
        last = Some(error);
    }
}

/// `FetchOffsets` for `partitions` (every committed partition when empty):
/// asks `prefer` first (the coordinator wrote the commits, so it is the
/// freshest reader), then any broker, in rounds until `timeout`.
pub(crate) async fn fetch_offsets(
    metadata: &MetadataClient,
    prefer: Option<&str>,
    group: &str,
    partitions: &[TopicPartition],
    timeout: Duration,
) -> Result<Vec<CommittedOffset>, ClientError> {
    let deadline = Instant::now() + timeout;
    let request = FetchOffsetsRequest { group: group.to_string(), partitions: to_wire(partitions) };
    let mut last = None;
    loop {
        let mut targets: Vec<String> = prefer.map(str::to_string).into_iter().collect();
        for addr in metadata.brokers_to_try() {
            if !targets.contains(&addr) {
                targets.push(addr);
            }
        }
        for addr in targets {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let mut client = metadata.groups_client(&addr)?;
            match unary(&addr, "fetch offsets", remaining, client.fetch_offsets(request.clone())).await {
                Ok(answer) => return Ok(answer.offsets),
                Err(e) if e.is_retriable() => {
                    debug!(broker = %addr, error = %e, "fetch offsets failed; trying another broker");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        if Instant::now() + ROUND_BACKOFF >= deadline {
            return Err(match last {
                Some(ClientError::Unreachable(_)) | None => metadata.unreachable_error(),
                Some(e) => e,
            });
        }
        tokio::time::sleep(ROUND_BACKOFF).await;
    }
}

/// Committed offsets by partition (`None`: nothing committed). Every
/// partition asked about gets an entry, whether or not the answer named it.
pub(crate) fn committed_by_partition(
    asked: &[TopicPartition],
    answer: &[CommittedOffset],
) -> BTreeMap<TopicPartition, Option<i64>> {
    let mut out: BTreeMap<TopicPartition, Option<i64>> = asked.iter().map(|tp| (tp.clone(), None)).collect();
    for c in answer {
        out.insert(TopicPartition::new(c.topic.clone(), c.partition), (c.offset >= 0).then_some(c.offset));
    }
    out
}

/// Positions as the wire's commit entries (no commit metadata).
pub(crate) fn offset_commits(offsets: &[(TopicPartition, i64)]) -> Vec<OffsetCommit> {
    offsets
        .iter()
        .map(|(tp, offset)| OffsetCommit {
            topic: tp.topic.clone(),
            partition: tp.partition,
            offset: *offset,
            metadata: String::new(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_offsets_fill_in_partitions_the_answer_left_out() {
        let asked = [TopicPartition::new("a", 0), TopicPartition::new("a", 1)];
        let answer = [
            CommittedOffset { topic: "a".into(), partition: 0, offset: 42, ..Default::default() },
            CommittedOffset { topic: "b".into(), partition: 3, offset: -1, ..Default::default() },
        ];
        let got = committed_by_partition(&asked, &answer);
        assert_eq!(got.get(&TopicPartition::new("a", 0)), Some(&Some(42)));
        assert_eq!(got.get(&TopicPartition::new("a", 1)), Some(&None));
        assert_eq!(got.get(&TopicPartition::new("b", 3)), Some(&None), "-1 means nothing committed");
    }
}
