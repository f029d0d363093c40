//! The client API (Coordinator gRPC service): thin handlers that validate,
//! convert between protobuf and domain types, and call the Context.
//!
//! Invariant: only this module (and the peer service) sees protobuf types.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use strata_proto::common::{ErrorCode, ErrorDetail};
use strata_proto::coord as pb;
use strata_proto::coord::coordinator_server::{Coordinator, CoordinatorServer};
use strata_proto::error::status_from_detail;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::command::{
    Check, Command, Condition, CreateOp, DeleteOp, OpResult, Outcome, RequestId, SetOp, TxnOp, WriteOp,
};
use crate::error::ApiError;
use crate::server::Context;
use crate::tree::{Event, EventKind, Stat, TreeError, path};
use crate::watch::WatchError;

fn status(e: ApiError) -> Status {
    let mut detail = ErrorDetail { message: e.to_string(), ..Default::default() };
    let code = match &e {
        ApiError::Tree(t) => match t {
            TreeError::NotFound(_) => ErrorCode::NotFound,
            TreeError::NodeExists(_) => ErrorCode::NodeExists,
            TreeError::BadVersion { .. } => ErrorCode::BadVersion,
            TreeError::NotEmpty(_) => ErrorCode::NotEmpty,
            TreeError::SessionExpired(_) => ErrorCode::SessionExpired,
            TreeError::NoChildrenForEphemerals(_) => ErrorCode::NoChildrenForEphemerals,
            TreeError::InvalidArgument(_) => ErrorCode::InvalidArgument,
        },
        ApiError::NotLeader { leader_id, leader_addr } => {
            detail.leader_id = leader_id.unwrap_or(0);
            detail.leader_addr = leader_addr.clone().unwrap_or_default();
            ErrorCode::NotLeader
        }
        ApiError::Unavailable(_) => ErrorCode::Unavailable,
        ApiError::InvalidArgument(_) => ErrorCode::InvalidArgument,
        ApiError::DataTooLarge { .. } => ErrorCode::DataTooLarge,
        ApiError::Compacted { oldest, .. } => {
            detail.compact_revision = *oldest;
            ErrorCode::Compacted
        }
        ApiError::Internal(_) => ErrorCode::Internal,
    };
    detail.code = code as i32;
    status_from_detail(detail)
}

fn pb_stat(s: &Stat) -> pb::Stat {
    pb::Stat {
        create_revision: s.create_revision,
        mod_revision: s.mod_revision,
        version: s.version,
        children_version: s.children_version,
        ephemeral_owner: s.ephemeral_owner,
        data_length: s.data_length,
        num_children: s.num_children,
    }
}

fn pb_event(e: &Event) -> pb::Event {
    let kind = match e.kind {
        EventKind::Created => pb::EventType::Created,
        EventKind::Changed => pb::EventType::Changed,
        EventKind::Deleted => pb::EventType::Deleted,
    };
    pb::Event {
        r#type: kind as i32,
        path: e.path.clone(),
        data: e.data.clone(),
        stat: Some(pb_stat(&e.stat)),
        revision: e.revision,
    }
}

fn request_id(id: Option<pb::RequestId>) -> Result<Option<RequestId>, ApiError> {
    match id {
        None => Ok(None),
        Some(id) if id.client_id.is_empty() => Err(ApiError::InvalidArgument("request id without client id".into())),
        Some(id) if id.client_id.len() > 64 => Err(ApiError::InvalidArgument("client id over 64 bytes".into())),
        Some(id) => Ok(Some(RequestId { client_id: id.client_id, seq: id.seq })),
    }
}

fn expected_version(v: Option<i64>) -> Result<Option<u64>, ApiError> {
    match v {
        None | Some(-1) => Ok(None),
        Some(v) if v < 0 => Err(ApiError::InvalidArgument(format!("expected version {v} is negative"))),
        Some(v) => Ok(Some(v as u64)),
    }
}

struct ClientService {
    ctx: Arc<Context>,
}

impl ClientService {
    fn check_path(&self, p: &str) -> Result<(), ApiError> {
        path::validate(p).map_err(ApiError::from)
    }

    fn check_data(&self, data: &Bytes) -> Result<(), ApiError> {
        let limit = self.ctx.config.max_data_bytes;
        if data.len() > limit {
            return Err(ApiError::DataTooLarge { size: data.len(), limit });
        }
        Ok(())
    }

    fn create_op(&self, r: &pb::CreateRequest, txn_session: u64) -> Result<CreateOp, ApiError> {
        self.check_path(&r.path)?;
        self.check_data(&r.data)?;
        let session = if r.session_id != 0 { r.session_id } else { txn_session };
        if r.ephemeral && session == 0 {
            return Err(ApiError::InvalidArgument("an ephemeral node needs a session id".into()));
        }
        Ok(CreateOp {
            path: r.path.clone(),
            data: r.data.clone(),
            ephemeral_owner: if r.ephemeral { session } else { 0 },
            sequential: r.sequential,
        })
    }

    fn set_op(&self, r: &pb::SetRequest) -> Result<SetOp, ApiError> {
        self.check_path(&r.path)?;
        self.check_data(&r.data)?;
        Ok(SetOp {
            path: r.path.clone(),
            data: r.data.clone(),
            expected_version: expected_version(r.expected_version)?,
            upsert: r.upsert,
        })
    }

    fn delete_op(&self, r: &pb::DeleteRequest) -> Result<DeleteOp, ApiError> {
        self.check_path(&r.path)?;
        Ok(DeleteOp { path: r.path.clone(), expected_version: expected_version(r.expected_version)? })
    }

    async fn write(&self, request_id: Option<pb::RequestId>, op: WriteOp) -> Result<(u64, Outcome), ApiError> {
        let cmd = Command { request_id: self::request_id(request_id)?, op };
        if !self.ctx.is_leader() {
            return Err(self.ctx.not_leader());
        }
        let resp = self.ctx.propose(cmd).await?;
        Ok((resp.revision, resp.outcome?))
    }

    async fn read_barrier(&self, consistency: i32) -> Result<(), ApiError> {
        if consistency == pb::ReadConsistency::Serializable as i32 {
            return Ok(());
        }
        self.ctx.linearizable_barrier().await
    }
}

fn unexpected(o: Outcome) -> ApiError {
    ApiError::Internal(format!("unexpected outcome {o:?}"))
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Coordinator for ClientService {
    async fn create(&self, request: Request<pb::CreateRequest>) -> Result<Response<pb::CreateResponse>, Status> {
        let r = request.into_inner();
        let op = self.create_op(&r, 0).map_err(status)?;
        match self.write(r.request_id, WriteOp::Create(op)).await.map_err(status)? {
            (revision, Outcome::Created { path, stat }) => {
                Ok(Response::new(pb::CreateResponse { path, stat: Some(pb_stat(&stat)), revision }))
            }
            (_, o) => Err(status(unexpected(o))),
        }
    }

    async fn set(&self, request: Request<pb::SetRequest>) -> Result<Response<pb::SetResponse>, Status> {
        let r = request.into_inner();
        let op = self.set_op(&r).map_err(status)?;
        match self.write(r.request_id, WriteOp::Set(op)).await.map_err(status)? {
            (revision, Outcome::Set { stat, created }) => {
                Ok(Response::new(pb::SetResponse { stat: Some(pb_stat(&stat)), revision, created }))
            }
            (_, o) => Err(status(unexpected(o))),
        }
    }

    async fn delete(&self, request: Request<pb::DeleteRequest>) -> Result<Response<pb::DeleteResponse>, Status> {
        let r = request.into_inner();
        let op = self.delete_op(&r).map_err(status)?;
        let (revision, _) = self.write(r.request_id, WriteOp::Delete(op)).await.map_err(status)?;
        Ok(Response::new(pb::DeleteResponse { revision }))
    }

    async fn txn(&self, request: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let r = request.into_inner();
        let mut conditions = Vec::with_capacity(r.conditions.len());
        for c in &r.conditions {
            self.check_path(&c.path).map_err(status)?;
            let check = match c.check {
                Some(pb::condition::Check::Exists(e)) => Check::Exists(e),
                Some(pb::condition::Check::Version(v)) => Check::Version(v),
                Some(pb::condition::Check::ModRevision(m)) => Check::ModRevision(m),
                None => return Err(status(ApiError::InvalidArgument(format!("condition on {} has no check", c.path)))),
            };
            conditions.push(Condition { path: c.path.clone(), check });
        }
        let mut ops = Vec::with_capacity(r.ops.len());
        for op in &r.ops {
            ops.push(match &op.op {
                Some(pb::op::Op::Create(c)) => TxnOp::Create(self.create_op(c, r.session_id).map_err(status)?),
                Some(pb::op::Op::Set(s)) => TxnOp::Set(self.set_op(s).map_err(status)?),
                Some(pb::op::Op::Delete(d)) => TxnOp::Delete(self.delete_op(d).map_err(status)?),
                None => return Err(status(ApiError::InvalidArgument("empty txn op".into()))),
            });
        }
        match self.write(r.request_id, WriteOp::Txn { conditions, ops }).await.map_err(status)? {
            (revision, Outcome::Txn { succeeded, failed_condition, results }) => Ok(Response::new(pb::TxnResponse {
                succeeded,
                failed_condition,
                results: results
                    .iter()
                    .map(|OpResult { path, stat }| pb::OpResult {
                        path: path.clone(),
                        stat: stat.as_ref().map(pb_stat),
                    })
                    .collect(),
                revision,
            })),
            (_, o) => Err(status(unexpected(o))),
        }
    }

    async fn get(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let r = request.into_inner();
        self.check_path(&r.path).map_err(status)?;
        self.read_barrier(r.consistency).await.map_err(status)?;
        let ns = self.ctx.shared.read();
        match ns.get(&r.path) {
            Some((data, stat)) => {
                Ok(Response::new(pb::GetResponse { data, stat: Some(pb_stat(&stat)), revision: ns.revision() }))
            }
            None => Err(status(TreeError::NotFound(r.path).into())),
        }
    }

    async fn exists(&self, request: Request<pb::ExistsRequest>) -> Result<Response<pb::ExistsResponse>, Status> {
        let r = request.into_inner();
        self.check_path(&r.path).map_err(status)?;
        self.read_barrier(r.consistency).await.map_err(status)?;
        let ns = self.ctx.shared.read();
        Ok(Response::new(pb::ExistsResponse { stat: ns.stat(&r.path).as_ref().map(pb_stat), revision: ns.revision() }))
    }

    async fn children(&self, request: Request<pb::ChildrenRequest>) -> Result<Response<pb::ChildrenResponse>, Status> {
        let r = request.into_inner();
        self.check_path(&r.path).map_err(status)?;
        self.read_barrier(r.consistency).await.map_err(status)?;
        let ns = self.ctx.shared.read();
        match ns.children(&r.path) {
            Some((names, stat)) => {
                Ok(Response::new(pb::ChildrenResponse { names, stat: Some(pb_stat(&stat)), revision: ns.revision() }))
            }
            None => Err(status(TreeError::NotFound(r.path).into())),
        }
    }

    async fn open_session(
        &self,
        request: Request<pb::OpenSessionRequest>,
    ) -> Result<Response<pb::OpenSessionResponse>, Status> {
        let r = request.into_inner();
        let (min, max) = (self.ctx.config.min_session_ttl_ms, self.ctx.config.max_session_ttl_ms);
        if r.ttl_ms < min || r.ttl_ms > max {
            return Err(status(ApiError::InvalidArgument(format!(
                "session TTL {} ms is outside {min}..={max} ms",
                r.ttl_ms
            ))));
        }
        match self.write(r.request_id, WriteOp::OpenSession { ttl_ms: r.ttl_ms }).await.map_err(status)? {
            (_, Outcome::SessionOpened { session_id, ttl_ms }) => {
                Ok(Response::new(pb::OpenSessionResponse { session_id, ttl_ms }))
            }
            (_, o) => Err(status(unexpected(o))),
        }
    }

    async fn close_session(
        &self,
        request: Request<pb::CloseSessionRequest>,
    ) -> Result<Response<pb::CloseSessionResponse>, Status> {
        let session_id = request.into_inner().session_id;
        self.write(None, WriteOp::CloseSession { session_id }).await.map_err(status)?;
        Ok(Response::new(pb::CloseSessionResponse {}))
    }

    type KeepAliveStream = BoxStream<pb::KeepAliveResponse>;

    async fn keep_alive(
        &self,
        request: Request<Streaming<pb::KeepAliveRequest>>,
    ) -> Result<Response<Self::KeepAliveStream>, Status> {
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            while let Some(Ok(req)) = incoming.next().await {
                let reply = match ctx.keep_alive(&[req.session_id]).await {
                    Ok(expired) if expired.contains(&req.session_id) => {
                        Err(status(TreeError::SessionExpired(req.session_id).into()))
                    }
                    Ok(_) => {
                        let ttl_ms = ctx.shared.read().sessions().get(&req.session_id).map_or(0, |s| s.ttl_ms);
                        Ok(pb::KeepAliveResponse { session_id: req.session_id, ttl_ms })
                    }
                    Err(e) => Err(status(e)),
                };
                let end = reply.is_err();
                if tx.send(reply).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type WatchStream = BoxStream<pb::WatchResponse>;

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let r = request.into_inner();
        self.check_path(&r.path).map_err(status)?;
        let sub = self.ctx.shared.hub.subscribe(&r.path, r.prefix, r.start_revision).map_err(|e| match e {
            WatchError::Compacted { requested, oldest } => status(ApiError::Compacted { requested, oldest }),
        })?;
        let (tx, rx) = mpsc::channel::<Result<pb::WatchResponse, Status>>(64);
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            let id = sub.id;
            let mut last = sub.start_after;
            let mut live = sub.live;
            let header = pb::WatchResponse { events: Vec::new(), header_revision: sub.start_after };
            let mut ok = tx.send(Ok(header)).await.is_ok();
            for batch in sub.replay {
                if !ok {
                    break;
                }
                last = batch.last().map_or(last, |e| e.revision);
                let msg = pb::WatchResponse { events: batch.iter().map(pb_event).collect(), header_revision: 0 };
                ok = tx.send(Ok(msg)).await.is_ok();
            }
            while ok {
                tokio::select! {
                    batch = live.recv() => match batch {
                        Some(batch) => {
                            last = batch.last().map_or(last, |e| e.revision);
                            let msg = pb::WatchResponse { events: batch.iter().map(pb_event).collect(), header_revision: 0 };
                            ok = tx.send(Ok(msg)).await.is_ok();
                        }
                        None => {
                            // Dropped by the hub (too slow, or a snapshot
                            // replaced history): tell the client where to resume.
                            let e = ApiError::Unavailable(format!("watch interrupted; resume from revision {}", last + 1));
                            let _ = tx.send(Err(status(e))).await;
                            break;
                        }
                    },
                    _ = tx.closed() => break,
                }
            }
            ctx.shared.hub.unsubscribe(id);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn status(&self, _request: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let metrics = self.ctx.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        let leader = metrics.current_leader;
        let ns = self.ctx.shared.read();
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let role = if Some(*id) == leader {
                    "leader"
                } else if *id == self.ctx.id && metrics.state == openraft::ServerState::Candidate {
                    "candidate"
                } else if voters.contains(id) {
                    "follower"
                } else {
                    "learner"
                };
                pb::Member {
                    id: *id,
                    client_addr: ns.members().get(id).cloned().unwrap_or_default(),
                    peer_addr: node.addr.clone(),
                    role: role.to_string(),
                    voter: voters.contains(id),
                }
            })
            .collect();
        Ok(Response::new(pb::StatusResponse {
            id: self.ctx.id,
            leader_id: leader.unwrap_or(0),
            term: metrics.current_term,
            commit_index: metrics.last_applied.map_or(0, |l| l.index),
            applied_index: metrics.last_applied.map_or(0, |l| l.index),
            revision: ns.revision(),
            members,
            sessions: ns.sessions().len() as u64,
            nodes: ns.node_count() as u64,
            watches: self.ctx.shared.hub.watcher_count() as u64,
        }))
    }

    async fn add_member(
        &self,
        request: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::AddMemberResponse>, Status> {
        let r = request.into_inner();
        if r.id == 0 || r.peer_addr.is_empty() {
            return Err(status(ApiError::InvalidArgument("member id and peer address are required".into())));
        }
        self.ctx.add_member(r.id, r.peer_addr).await.map_err(status)?;
        Ok(Response::new(pb::AddMemberResponse {}))
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        self.ctx.remove_member(request.into_inner().id).await.map_err(status)?;
        Ok(Response::new(pb::RemoveMemberResponse {}))
    }
}

pub async fn serve(ctx: Arc<Context>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    // Room for a node at the data limit plus framing; larger requests are
    // refused by tonic before they reach a handler.
    let limit = ctx.config.max_data_bytes * 4 + 64 * 1024;
    let service =
        CoordinatorServer::new(ClientService { ctx }).max_decoding_message_size(limit).max_encoding_message_size(limit);
    // The standard gRPC health service, for load balancers and probes: the
    // client port answers SERVING for as long as it serves.
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<CoordinatorServer<ClientService>>().await;
    let result = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(health)
        .add_service(service)
        .serve_with_incoming_shutdown(strata_proto::transport::nodelay_incoming(listener), async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "client server failed");
    }
}
