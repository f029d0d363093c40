//! Outgoing peer traffic: openraft RPCs carried over tonic as postcard bytes.
//!
//! A member reaches a peer at the address this member's own `--peers` names
//! for it, falling back to the address in the replicated membership (for
//! members added at run time). Keeping the route local lets an operator (or
//! a test) put a proxy on one link without touching the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use strata_proto::coord_peer::RaftBytes;
use strata_proto::coord_peer::coord_peer_client::CoordPeerClient;
use tonic::transport::{Channel, Endpoint};

use super::{NodeId, TypeConfig, decode, encode};

/// Where peers are, and one shared HTTP/2 channel per peer address.
///
/// openraft asks for a fresh network client for every leadership check
/// (each linearizable read); sharing channels keeps that from opening a TCP
/// connection per read.
#[derive(Clone)]
pub struct PeerRoutes {
    overrides: Arc<HashMap<NodeId, String>>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl PeerRoutes {
    pub fn new(overrides: HashMap<NodeId, String>) -> Self {
        PeerRoutes { overrides: Arc::new(overrides), channels: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// The shared channel to `addr`, created on first use.
    pub fn shared_channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let c = Self::channel(addr)?;
        channels.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Drops the shared channel to `addr` so the next use reconnects.
    pub fn reset(&self, addr: &str) {
        self.channels.lock().unwrap_or_else(|p| p.into_inner()).remove(addr);
    }

    pub fn resolve(&self, id: NodeId, membership_addr: Option<&str>) -> Option<String> {
        self.overrides.get(&id).cloned().or_else(|| membership_addr.map(str::to_string))
    }

    pub fn channel(addr: &str) -> Result<Channel, tonic::transport::Error> {
        let uri = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        Ok(Endpoint::from_shared(uri)?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy())
    }
}

#[derive(Clone)]
pub struct NetworkFactory {
    routes: PeerRoutes,
}

impl NetworkFactory {
    pub fn new(routes: PeerRoutes) -> Self {
        NetworkFactory { routes }
    }
}

pub struct PeerConnection {
    target: NodeId,
    addr: String,
    routes: PeerRoutes,
    client: Option<CoordPeerClient<Channel>>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        let addr = self.routes.resolve(target, Some(&node.addr)).unwrap_or_else(|| node.addr.clone());
        PeerConnection { target, addr, routes: self.routes.clone(), client: None }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failure(String);

/// One of the peer service's byte-carrying RPCs.
type PeerRpc = fn(
    CoordPeerClient<Channel>,
    RaftBytes,
) -> futures::future::BoxFuture<'static, Result<tonic::Response<RaftBytes>, tonic::Status>>;

impl PeerConnection {
    fn client(&mut self) -> Result<CoordPeerClient<Channel>, Unreachable> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let channel = self.routes.shared_channel(&self.addr).map_err(|e| Unreachable::new(&e))?;
        // Snapshots and large append batches exceed tonic's 4 MiB default.
        let client = CoordPeerClient::new(channel)
            .max_decoding_message_size(256 * 1024 * 1024)
            .max_encoding_message_size(256 * 1024 * 1024);
        self.client = Some(client.clone());
        Ok(client)
    }

    /// Sends one encoded RPC and decodes the peer's encoded `Result`.
    async fn call<Req, Resp, E>(
        &mut self,
        req: &Req,
        option: &RPCOption,
        which: PeerRpc,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        let payload = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let client = self.client().map_err(RPCError::Unreachable)?;
        let fut = which(client, RaftBytes { payload: payload.into() });
        let reply = match tokio::time::timeout(option.hard_ttl(), fut).await {
            Err(_) => {
                return Err(RPCError::Unreachable(Unreachable::new(&Failure(format!(
                    "peer {} at {} did not answer within {:?}",
                    self.target,
                    self.addr,
                    option.hard_ttl()
                )))));
            }
            Ok(Err(status)) => {
                // Drop the channel so the next call reconnects from scratch.
                self.client = None;
                self.routes.reset(&self.addr);
                return Err(RPCError::Unreachable(Unreachable::new(&status)));
            }
            Ok(Ok(reply)) => reply.into_inner(),
        };
        let result: Result<Resp, RaftError<NodeId, E>> =
            decode(&reply.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(&rpc, &option, |mut c, b| Box::pin(async move { c.append_entries(b).await })).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.call(&rpc, &option, |mut c, b| Box::pin(async move { c.install_snapshot(b).await })).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(&rpc, &option, |mut c, b| Box::pin(async move { c.vote(b).await })).await
    }
}
