//! The Groups gRPC service: shape checks and protobuf conversion around
//! `group::GroupCoordinator`. Nothing from the network reaches the group
//! code unchecked: names follow the topic-name rules, lists are bounded.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use strata_proto::broker as pb;
use strata_proto::broker::groups_server::Groups;
use strata_proto::common::ErrorDetail;
use strata_proto::error::status_from_detail;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::admin::validate_topic_name;
use super::{BoxStream, timed};
use crate::group::{
    GroupCoordinator, GroupError, JoinSpec, MemberLink, MemberMsg, OffsetCommit, ToMember, Tp, by_topic,
    validate_group_name,
};

/// Topics one subscription may name.
const MAX_TOPICS: usize = 10_000;
/// Partitions one message may list (owned, revoked, committed, fetched).
const MAX_PARTITIONS: usize = 100_000;
const MAX_ID_BYTES: usize = 512;
/// A stream that sends no JoinGroup within this long is closed.
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Messages queued for a member before it counts as not reading.
const MEMBER_QUEUE: usize = 64;

pub struct GroupsHandler(pub Arc<GroupCoordinator>);

fn partition_error(e: &GroupError) -> pb::PartitionError {
    let (leader_id, leader_addr) = e.coordinator().map_or((-1, String::new()), |h| (h.id, h.addr.clone()));
    pb::PartitionError { code: e.code() as i32, message: e.to_string(), leader_id, leader_addr }
}

fn status(e: &GroupError) -> Status {
    // ErrorDetail names brokers by an unsigned id; leader_addr is what
    // tells a client whether a coordinator is known.
    let (leader_id, leader_addr) =
        e.coordinator().map_or((0, String::new()), |h| (u64::try_from(h.id).unwrap_or(0), h.addr.clone()));
    status_from_detail(ErrorDetail {
        code: e.code() as i32,
        message: e.to_string(),
        leader_id,
        leader_addr,
        ..Default::default()
    })
}

fn invalid(why: impl Into<String>) -> GroupError {
    GroupError::InvalidRequest(why.into())
}

/// Printable text of bounded length.
fn check_text(field: &str, s: &str, max: usize) -> Result<(), GroupError> {
    if s.len() > max {
        return Err(invalid(format!("{field} is longer than {max} bytes")));
    }
    if s.chars().any(char::is_control) {
        return Err(invalid(format!("{field} contains control characters")));
    }
    Ok(())
}

fn topics(list: Vec<String>) -> Result<BTreeSet<String>, GroupError> {
    if list.len() > MAX_TOPICS {
        return Err(invalid(format!("more than {MAX_TOPICS} topics")));
    }
    list.into_iter().map(|t| validate_topic_name(&t).map(|()| t).map_err(invalid)).collect()
}

fn partitions(list: Vec<pb::TopicPartitions>) -> Result<BTreeSet<Tp>, GroupError> {
    let total: usize = list.iter().map(|t| t.partitions.len()).sum();
    if total > MAX_PARTITIONS {
        return Err(invalid(format!("more than {MAX_PARTITIONS} partitions")));
    }
    let mut out = BTreeSet::new();
    for t in list {
        validate_topic_name(&t.topic).map_err(invalid)?;
        for p in t.partitions {
            out.insert((t.topic.clone(), p));
        }
    }
    Ok(out)
}

fn to_pb_partitions(set: &BTreeSet<Tp>) -> Vec<pb::TopicPartitions> {
    by_topic(set).into_iter().map(|(t, ps)| pb::TopicPartitions { topic: t.to_string(), partitions: ps }).collect()
}

fn join_spec(j: pb::JoinGroup) -> Result<(String, JoinSpec), GroupError> {
    validate_group_name(&j.group)?;
    check_text("member id", &j.member_id, MAX_ID_BYTES)?;
    check_text("client id", &j.client_id, MAX_ID_BYTES)?;
    let instance_id = match j.instance_id.as_str() {
        "" => None,
        id => {
            validate_topic_name(id).map_err(|why| invalid(why.replace("topic name", "instance id")))?;
            Some(j.instance_id.clone())
        }
    };
    check_text("assignor", &j.assignor, MAX_ID_BYTES)?;
    let spec = JoinSpec {
        member_id: j.member_id,
        instance_id,
        client_id: j.client_id,
        topics: topics(j.topics)?,
        assignor: j.assignor,
        session_timeout_ms: j.session_timeout_ms,
        rebalance_timeout_ms: j.rebalance_timeout_ms,
        owned: partitions(j.owned)?,
        generation: j.generation,
    };
    Ok((j.group, spec))
}

fn member_msg(m: pb::MemberMessage) -> MemberMsg {
    use pb::member_message::Msg;
    let bad = |e: GroupError| MemberMsg::Invalid(e.to_string());
    match m.msg {
        Some(Msg::Heartbeat(_)) => MemberMsg::Heartbeat,
        Some(Msg::RevokeDone(r)) => match partitions(r.partitions) {
            Ok(partitions) => MemberMsg::RevokeDone { partitions },
            Err(e) => bad(e),
        },
        Some(Msg::Subscribe(s)) => match topics(s.topics) {
            Ok(topics) => MemberMsg::Subscribe { topics },
            Err(e) => bad(e),
        },
        Some(Msg::Leave(_)) => MemberMsg::Leave,
        Some(Msg::Join(_)) => MemberMsg::Invalid("JoinGroup is only allowed as a stream's first message".into()),
        None => MemberMsg::Invalid("empty member message".into()),
    }
}

fn to_pb(m: ToMember) -> pb::CoordinatorMessage {
    use pb::coordinator_message::Msg;
    let msg = match m {
        ToMember::Joined { member_id, heartbeat_interval_ms, session_timeout_ms, coordinator_id } => {
            Msg::Joined(pb::Joined { member_id, heartbeat_interval_ms, session_timeout_ms, coordinator_id })
        }
        ToMember::Assignment { generation, assigned, revoked } => Msg::Assignment(pb::Assignment {
            generation,
            assigned: to_pb_partitions(&assigned),
            revoked: to_pb_partitions(&revoked),
        }),
        ToMember::Error(e) => Msg::Error(partition_error(&e)),
    };
    pb::CoordinatorMessage { msg: Some(msg) }
}

/// Reads one member stream: the JoinGroup, then everything else, handed to
/// the group's actor. The response stream ends when the actor drops its
/// link (after an error, a leave, a fence, or a coordinator move).
async fn member_session(
    groups: Arc<GroupCoordinator>,
    mut inbound: Streaming<pb::MemberMessage>,
    tx: mpsc::Sender<ToMember>,
) {
    let first = match tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(m))) => m,
        Ok(Ok(None) | Err(_)) => return,
        Err(_) => {
            let _ = tx.send(ToMember::Error(invalid("no JoinGroup arrived"))).await;
            return;
        }
    };
    let Some(pb::member_message::Msg::Join(join)) = first.msg else {
        let _ = tx.send(ToMember::Error(invalid("the first message on a stream must be JoinGroup"))).await;
        return;
    };
    let (group, spec) = match join_spec(join) {
        Ok(v) => v,
        Err(e) => {
            let _ = tx.send(ToMember::Error(e)).await;
            return;
        }
    };
    let (closer, mut closed) = oneshot::channel();
    let link = MemberLink { tx: tx.clone(), closer };
    let member = match groups.join(&group, spec, link).await {
        Ok(m) => m,
        Err(e) => {
            let _ = tx.send(ToMember::Error(e)).await;
            return;
        }
    };
    // From here only the actor may end the response stream.
    drop(tx);
    loop {
        let next = tokio::select! {
            m = inbound.message() => m,
            _ = &mut closed => return,
        };
        let msg = match next {
            Ok(Some(m)) => member_msg(m),
            Ok(None) | Err(_) => MemberMsg::Closed,
        };
        let last = matches!(msg, MemberMsg::Closed | MemberMsg::Leave | MemberMsg::Invalid(_));
        if !member.send(msg).await || last {
            return;
        }
    }
}

fn offset_commits(list: Vec<pb::OffsetCommit>) -> Result<Vec<OffsetCommit>, GroupError> {
    if list.len() > MAX_PARTITIONS {
        return Err(invalid(format!("more than {MAX_PARTITIONS} offsets")));
    }
    Ok(list
        .into_iter()
        .map(|o| OffsetCommit { tp: (o.topic, o.partition), offset: o.offset, metadata: o.metadata })
        .collect())
}

fn commit_response(
    offsets: &[OffsetCommit],
    result: Result<Vec<(Tp, Option<GroupError>)>, GroupError>,
) -> Vec<pb::CommitOffsetsPartitionResponse> {
    match result {
        Ok(results) => results
            .into_iter()
            .map(|((topic, partition), e)| pb::CommitOffsetsPartitionResponse {
                topic,
                partition,
                error: e.as_ref().map(partition_error),
            })
            .collect(),
        Err(e) => offsets
            .iter()
            .map(|o| pb::CommitOffsetsPartitionResponse {
                topic: o.tp.0.clone(),
                partition: o.tp.1,
                error: Some(partition_error(&e)),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl Groups for GroupsHandler {
    async fn find_coordinator(
        &self,
        request: Request<pb::FindCoordinatorRequest>,
    ) -> Result<Response<pb::FindCoordinatorResponse>, Status> {
        let _timer = timed("find_coordinator");
        let hint = self.0.find_coordinator(&request.into_inner().group).map_err(|e| status(&e))?;
        Ok(Response::new(pb::FindCoordinatorResponse { broker_id: hint.id, addr: hint.addr }))
    }

    type JoinStream = BoxStream<pb::CoordinatorMessage>;

    async fn join(&self, request: Request<Streaming<pb::MemberMessage>>) -> Result<Response<Self::JoinStream>, Status> {
        let (tx, rx) = mpsc::channel(MEMBER_QUEUE);
        tokio::spawn(member_session(self.0.clone(), request.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(|m| Ok(to_pb(m))))))
    }

    async fn commit_offsets(
        &self,
        request: Request<pb::CommitOffsetsRequest>,
    ) -> Result<Response<pb::CommitOffsetsResponse>, Status> {
        let _timer = timed("commit_offsets");
        let req = request.into_inner();
        validate_group_name(&req.group).map_err(|e| status(&e))?;
        check_text("member id", &req.member_id, MAX_ID_BYTES).map_err(|e| status(&e))?;
        let offsets = offset_commits(req.offsets).map_err(|e| status(&e))?;
        let result = self.0.commit(&req.group, req.member_id, req.generation, offsets.clone()).await;
        Ok(Response::new(pb::CommitOffsetsResponse { partitions: commit_response(&offsets, result) }))
    }

    async fn fetch_offsets(
        &self,
        request: Request<pb::FetchOffsetsRequest>,
    ) -> Result<Response<pb::FetchOffsetsResponse>, Status> {
        let _timer = timed("fetch_offsets");
        let req = request.into_inner();
        let wanted = partitions(req.partitions).map_err(|e| status(&e))?;
        let committed = self.0.fetch_offsets(&req.group, wanted.into_iter().collect()).await.map_err(|e| status(&e))?;
        let offsets = committed.into_iter().map(committed_to_pb).collect();
        Ok(Response::new(pb::FetchOffsetsResponse { offsets }))
    }

    async fn list_groups(
        &self,
        _request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let _timer = timed("list_groups");
        let groups = self.0.list_groups().await.map_err(|e| status(&e))?;
        let groups = groups
            .into_iter()
            .map(|l| pb::GroupListing {
                group: l.group,
                state: l.phase.name().to_string(),
                coordinator_id: l.coordinator_id,
                members: l.members,
            })
            .collect();
        Ok(Response::new(pb::ListGroupsResponse { groups }))
    }

    async fn describe_group(
        &self,
        request: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::DescribeGroupResponse>, Status> {
        let _timer = timed("describe_group");
        let group = request.into_inner().group;
        let d = match self.0.describe_group(&group).await {
            Ok(d) => d,
            Err(e @ GroupError::GroupIdNotFound(_)) => {
                return Ok(Response::new(pb::DescribeGroupResponse {
                    error: Some(partition_error(&e)),
                    group,
                    state: "Dead".into(),
                    coordinator_id: -1,
                    ..Default::default()
                }));
            }
            Err(e) => return Err(status(&e)),
        };
        Ok(Response::new(pb::DescribeGroupResponse {
            error: None,
            group: d.group,
            state: d.phase.name().to_string(),
            coordinator_id: d.coordinator_id,
            generation: d.generation,
            assignor: d.assignor,
            members: d
                .members
                .into_iter()
                .map(|m| pb::GroupMemberDescription {
                    member_id: m.member_id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    topics: m.topics,
                    assigned: to_pb_partitions(&m.assigned),
                    revoking: to_pb_partitions(&m.revoking),
                })
                .collect(),
            offsets: d.offsets.into_iter().map(committed_to_pb).collect(),
        }))
    }

    async fn alter_offsets(
        &self,
        request: Request<pb::AlterOffsetsRequest>,
    ) -> Result<Response<pb::AlterOffsetsResponse>, Status> {
        let _timer = timed("alter_offsets");
        let req = request.into_inner();
        validate_group_name(&req.group).map_err(|e| status(&e))?;
        let offsets = offset_commits(req.offsets).map_err(|e| status(&e))?;
        let result = self.0.alter_offsets(&req.group, offsets.clone()).await;
        Ok(Response::new(pb::AlterOffsetsResponse { partitions: commit_response(&offsets, result) }))
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        let _timer = timed("delete_group");
        let group = request.into_inner().group;
        validate_group_name(&group).map_err(|e| status(&e))?;
        self.0.delete_group(&group).await.map_err(|e| status(&e))?;
        Ok(Response::new(pb::DeleteGroupResponse {}))
    }
}

fn committed_to_pb(c: crate::group::Committed) -> pb::CommittedOffset {
    pb::CommittedOffset {
        topic: c.tp.0,
        partition: c.tp.1,
        offset: c.offset,
        metadata: c.metadata,
        generation: c.generation,
    }
}
