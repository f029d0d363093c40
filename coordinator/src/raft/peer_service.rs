//! Incoming peer traffic on the peer port: Raft RPCs, and what followers
//! hand to the leader (keep-alives, proposals).

use std::sync::Arc;

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use strata_proto::coord_peer::coord_peer_server::{CoordPeer, CoordPeerServer};
use strata_proto::coord_peer::{ForwardKeepAliveRequest, ForwardKeepAliveResponse, RaftBytes};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::{TypeConfig, decode, encode};
use crate::command::Command;
use crate::error::ApiError;
use crate::server::{Context, ForwardReply};

struct PeerService {
    ctx: Arc<Context>,
}

fn bad_payload(e: postcard::Error) -> Status {
    Status::invalid_argument(format!("undecodable peer message: {e}"))
}

fn reply<T: serde::Serialize>(value: &T) -> Result<Response<RaftBytes>, Status> {
    let payload = encode(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftBytes { payload: payload.into() }))
}

#[tonic::async_trait]
impl CoordPeer for PeerService {
    async fn append_entries(&self, request: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let req: AppendEntriesRequest<TypeConfig> = decode(&request.get_ref().payload).map_err(bad_payload)?;
        reply(&self.ctx.raft.append_entries(req).await)
    }

    async fn vote(&self, request: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let req: VoteRequest<u64> = decode(&request.get_ref().payload).map_err(bad_payload)?;
        reply(&self.ctx.raft.vote(req).await)
    }

    async fn install_snapshot(&self, request: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let req: InstallSnapshotRequest<TypeConfig> = decode(&request.get_ref().payload).map_err(bad_payload)?;
        reply(&self.ctx.raft.install_snapshot(req).await)
    }

    async fn forward_keep_alive(
        &self,
        request: Request<ForwardKeepAliveRequest>,
    ) -> Result<Response<ForwardKeepAliveResponse>, Status> {
        if !self.ctx.is_leader() {
            return Err(Status::unavailable("not the leader"));
        }
        let expired = self
            .ctx
            .keep_alive(&request.get_ref().session_ids)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(ForwardKeepAliveResponse { expired, leader_id: self.ctx.id }))
    }

    async fn forward_propose(&self, request: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let cmd: Command = decode(&request.get_ref().payload).map_err(bad_payload)?;
        if !self.ctx.is_leader() {
            return reply(&ForwardReply::NotLeader { leader_id: self.ctx.leader_id() });
        }
        match self.ctx.propose(cmd).await {
            Ok(r) => reply(&ForwardReply::Applied(r)),
            Err(ApiError::NotLeader { leader_id, .. }) => reply(&ForwardReply::NotLeader { leader_id }),
            Err(e) => reply(&ForwardReply::Unavailable(e.to_string())),
        }
    }
}

pub async fn serve(ctx: Arc<Context>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let service = CoordPeerServer::new(PeerService { ctx })
        .max_decoding_message_size(256 * 1024 * 1024)
        .max_encoding_message_size(256 * 1024 * 1024);
    let result = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(service)
        .serve_with_incoming_shutdown(strata_proto::transport::nodelay_incoming(listener), async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "peer server failed");
    }
}
