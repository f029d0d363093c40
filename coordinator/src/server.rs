//! A running member: opens storage, starts Raft and both gRPC servers, runs
//! the session and directory loops, and stops cleanly on shutdown.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use openraft::{BasicNode, ChangeMembers, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use strata_proto::coord_peer::coord_peer_client::CoordPeerClient;
use strata_proto::coord_peer::{ForwardKeepAliveRequest, RaftBytes};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::command::{Command, Response, WriteOp};
use crate::config::Config;
use crate::error::ApiError;
use crate::proposer::{ProposeError, Proposer};
use crate::raft::log_store::LogStore;
use crate::raft::network::{NetworkFactory, PeerRoutes};
use crate::raft::state_machine::{Shared, StateMachine};
use crate::raft::{NodeId, Raft, decode, encode};
use crate::read_batch::{BarrierError, ReadBatcher};
use crate::session::SessionTracker;
use crate::watch::WatchHub;

/// Everything a handler needs.
pub struct Context {
    pub id: NodeId,
    pub raft: Raft,
    pub shared: Arc<Shared>,
    pub sessions: SessionTracker,
    pub routes: PeerRoutes,
    pub config: Config,
    pub client_addr: String,
    reads: Arc<ReadBatcher>,
    proposer: Proposer,
}

/// Reply of a forwarded proposal, encoded between members.
#[derive(Debug, Serialize, Deserialize)]
pub enum ForwardReply {
    Applied(Response),
    NotLeader { leader_id: Option<u64> },
    Unavailable(String),
}

impl Context {
    pub fn leader_id(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }

    /// Client address of a member, as published in the namespace.
    pub fn client_addr_of(&self, id: NodeId) -> Option<String> {
        self.shared.read().members().get(&id).cloned()
    }

    fn peer_addr_of(&self, id: NodeId) -> Option<String> {
        let m = self.raft.metrics();
        let membership_addr = m.borrow().membership_config.membership().get_node(&id).map(|n| n.addr.clone());
        self.routes.resolve(id, membership_addr.as_deref())
    }

    pub fn not_leader(&self) -> ApiError {
        let leader_id = self.leader_id().filter(|l| *l != self.id);
        ApiError::NotLeader { leader_id, leader_addr: leader_id.and_then(|l| self.client_addr_of(l)) }
    }

    fn peer_client(&self, addr: &str) -> Result<CoordPeerClient<Channel>, ApiError> {
        let channel = self.routes.shared_channel(addr).map_err(|e| ApiError::Unavailable(e.to_string()))?;
        Ok(CoordPeerClient::new(channel))
    }

    fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.config.write_timeout_ms)
    }

    /// Proposes a command on this member, which must lead. Concurrent
    /// proposals share Raft entries (`proposer`).
    pub async fn propose(&self, cmd: Command) -> Result<Response, ApiError> {
        match tokio::time::timeout(self.write_timeout(), self.proposer.propose(cmd)).await {
            Err(_) => Err(ApiError::Unavailable(format!(
                "write not confirmed by a quorum within {:?}; its outcome is unknown (retry with the same request id)",
                self.write_timeout()
            ))),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(ProposeError::NotLeader)) => Err(self.not_leader()),
            Ok(Err(ProposeError::Unavailable(m))) => Err(ApiError::Unavailable(m)),
        }
    }

    /// Proposes on the leader, forwarding over the peer port when this
    /// member follows. For member-internal writes (directory entries).
    pub async fn propose_via_leader(&self, cmd: Command) -> Result<Response, ApiError> {
        if self.is_leader() {
            return self.propose(cmd).await;
        }
        let leader = self.leader_id().ok_or_else(|| ApiError::Unavailable("no leader is known".into()))?;
        let addr = self.peer_addr_of(leader).ok_or_else(|| ApiError::Unavailable("leader address unknown".into()))?;
        let payload = encode(&cmd).map_err(|e| ApiError::Internal(e.to_string()))?;
        let mut client = self.peer_client(&addr)?;
        let reply =
            tokio::time::timeout(self.write_timeout(), client.forward_propose(RaftBytes { payload: payload.into() }))
                .await
                .map_err(|_| ApiError::Unavailable("forwarded write timed out".into()))?
                .map_err(|s| ApiError::Unavailable(s.message().to_string()))?
                .into_inner();
        match decode::<ForwardReply>(&reply.payload).map_err(|e| ApiError::Internal(e.to_string()))? {
            ForwardReply::Applied(r) => Ok(r),
            ForwardReply::NotLeader { .. } => Err(self.not_leader()),
            ForwardReply::Unavailable(m) => Err(ApiError::Unavailable(m)),
        }
    }

    /// Waits until this member, as leader, has confirmed its leadership with
    /// a quorum and applied everything committed before the call. Concurrent
    /// callers share confirmations (`read_batch`).
    pub async fn linearizable_barrier(&self) -> Result<(), ApiError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        match self.reads.barrier(&self.raft, self.write_timeout()).await {
            Ok(()) => Ok(()),
            Err(BarrierError::NotLeader) => Err(self.not_leader()),
            Err(BarrierError::Unavailable(m)) => Err(ApiError::Unavailable(m)),
        }
    }

    /// Refreshes sessions on the leader (forwarding when following).
    /// Returns the ids among `ids` that are not live.
    pub async fn keep_alive(&self, ids: &[u64]) -> Result<Vec<u64>, ApiError> {
        if self.is_leader() {
            let now = Instant::now();
            let ns = self.shared.read();
            let mut expired = Vec::new();
            for id in ids {
                match ns.sessions().get(id) {
                    Some(s) => self.sessions.touch(*id, s.ttl_ms, now),
                    None => expired.push(*id),
                }
            }
            return Ok(expired);
        }
        let leader = self.leader_id().ok_or_else(|| ApiError::Unavailable("no leader is known".into()))?;
        let addr = self.peer_addr_of(leader).ok_or_else(|| ApiError::Unavailable("leader address unknown".into()))?;
        let mut client = self.peer_client(&addr)?;
        let reply = tokio::time::timeout(
            Duration::from_secs(2),
            client.forward_keep_alive(ForwardKeepAliveRequest { session_ids: ids.to_vec() }),
        )
        .await
        .map_err(|_| ApiError::Unavailable("leader did not answer the keep-alive".into()))?
        .map_err(|s| ApiError::Unavailable(s.message().to_string()))?
        .into_inner();
        Ok(reply.expired)
    }

    pub async fn add_member(&self, id: NodeId, peer_addr: String) -> Result<(), ApiError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        self.raft
            .add_learner(id, BasicNode { addr: peer_addr }, true)
            .await
            .map_err(|e| ApiError::Unavailable(format!("adding member {id} as learner: {e}")))?;
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|e| ApiError::Unavailable(format!("promoting member {id} to voter: {e}")))?;
        Ok(())
    }

    pub async fn remove_member(&self, id: NodeId) -> Result<(), ApiError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        self.raft
            .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
            .await
            .map_err(|e| ApiError::Unavailable(format!("removing member {id}: {e}")))?;
        Ok(())
    }
}

/// Identity of a data directory, so a member never starts on another's data.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct MemberFile {
    format: u32,
    id: u64,
    members: BTreeSet<u64>,
}

const MEMBER_FILE: &str = "member.toml";

fn check_data_dir(config: &Config) -> anyhow::Result<(File, bool)> {
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create data dir {}", dir.display()))?;
    let lock = File::create(dir.join("LOCK")).with_context(|| format!("data dir {} is not writable", dir.display()))?;
    if lock.try_lock().is_err() {
        bail!("data dir {} is in use by another process", dir.display());
    }
    let member_path = dir.join(MEMBER_FILE);
    let fresh = !member_path.exists();
    if fresh {
        let foreign = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .any(|e| e.file_name() != "LOCK" && !e.file_name().to_string_lossy().starts_with('.'));
        if foreign {
            bail!(
                "data dir {} holds files but no {MEMBER_FILE}: it does not belong to a Strata coordinator",
                dir.display()
            );
        }
        return Ok((lock, true));
    }
    let text =
        std::fs::read_to_string(&member_path).with_context(|| format!("cannot read {}", member_path.display()))?;
    let stored: MemberFile = toml::from_str(&text).with_context(|| format!("{} is damaged", member_path.display()))?;
    if stored.id != config.id {
        bail!("data dir {} belongs to member {}, not {}", dir.display(), stored.id, config.id);
    }
    let given: BTreeSet<u64> = config.peers.keys().copied().collect();
    if !config.join && given != stored.members {
        bail!(
            "--peers names members {:?} but this ensemble's members are {:?}; pass the current member list \
             (membership changes at run time with `strata coord member add|remove`)",
            given,
            stored.members
        );
    }
    Ok((lock, false))
}

fn write_member_file(dir: &Path, file: &MemberFile) -> anyhow::Result<()> {
    let text = toml::to_string(file)?;
    let tmp = dir.join(format!("{MEMBER_FILE}.tmp"));
    std::fs::write(&tmp, text)?;
    File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join(MEMBER_FILE))?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

async fn bind(addr: &str, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr} (is the port in use by another process?)"))
}

/// Runs a member until `shutdown` turns true.
pub async fn run(config: Config, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let (_lock, fresh) = check_data_dir(&config)?;
    let client_listener = bind(&config.listen, "clients").await?;
    let peer_listener = bind(&config.peer_listen, "peers").await?;
    let client_bound: SocketAddr = client_listener.local_addr()?;
    let peer_bound: SocketAddr = peer_listener.local_addr()?;
    let client_addr = config.advertise.clone().unwrap_or_else(|| client_bound.to_string());

    let db = sled::Config::new()
        .path(config.data_dir.join("raft"))
        .mode(sled::Mode::HighThroughput)
        .open()
        .with_context(|| format!("cannot open the ensemble store in {}", config.data_dir.display()))?;
    let log_store = LogStore::open(&db)?;
    let hub = WatchHub::new(config.watch_history_events, 4096);
    let state_machine = StateMachine::open(&db, hub).map_err(|e| anyhow::anyhow!("restoring snapshot: {e}"))?;
    let shared = state_machine.shared();

    let raft_config = openraft::Config {
        cluster_name: "strata".into(),
        election_timeout_min: config.election_timeout_min_ms,
        election_timeout_max: config.election_timeout_max_ms,
        heartbeat_interval: config.heartbeat_interval_ms,
        install_snapshot_timeout: 5_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every_entries),
        max_in_snapshot_log_to_keep: 1_000,
        purge_batch_size: 256,
        max_payload_entries: 1_000,
        ..Default::default()
    }
    .validate()
    .context("invalid Raft settings")?;

    let mut overrides: HashMap<NodeId, String> = config.peers.clone().into_iter().collect();
    overrides.insert(config.id, peer_bound.to_string());
    let routes = PeerRoutes::new(overrides);
    let raft =
        Raft::new(config.id, Arc::new(raft_config), NetworkFactory::new(routes.clone()), log_store, state_machine)
            .await
            .context("starting Raft")?;

    if fresh {
        write_member_file(
            &config.data_dir,
            &MemberFile { format: 1, id: config.id, members: config.peers.keys().copied().collect() },
        )?;
    }
    if fresh && !config.join {
        let members: BTreeMap<NodeId, BasicNode> =
            config.peers.iter().map(|(id, addr)| (*id, BasicNode { addr: addr.clone() })).collect();
        // Every bootstrap member initializes with the same list; openraft
        // accepts that and refuses any later, conflicting initialization.
        if let Err(e) = raft.initialize(members).await {
            tracing::debug!(error = %e, "initialize skipped");
        }
    }

    let ctx = Arc::new(Context {
        id: config.id,
        raft: raft.clone(),
        shared,
        sessions: SessionTracker::default(),
        routes,
        config: config.clone(),
        client_addr: client_addr.clone(),
        reads: Arc::new(ReadBatcher::default()),
        proposer: Proposer::start(raft.clone()),
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let peer_server = tokio::spawn(crate::raft::peer_service::serve(ctx.clone(), peer_listener, stop_rx.clone()));
    let client_server = tokio::spawn(crate::service::serve(ctx.clone(), client_listener, stop_rx.clone()));
    let session_loop = tokio::spawn(session_loop(ctx.clone(), stop_rx.clone()));
    let directory_loop = tokio::spawn(directory_loop(ctx.clone(), stop_rx.clone()));
    let member_file_loop = tokio::spawn(member_file_loop(ctx.clone(), stop_rx.clone()));

    let metrics_bound = match &config.metrics_listen {
        Some(addr) => {
            let ctx = ctx.clone();
            let refresh: Arc<dyn Fn() + Send + Sync> = Arc::new(move || refresh_metrics(&ctx));
            Some(strata_proto::metrics_http::start(addr, refresh, stop_rx.clone()).await?)
        }
        None => None,
    };
    if let Some(path) = &config.port_file {
        let json = serde_json::json!({
            "id": config.id,
            "client": client_bound.to_string(),
            "peer": peer_bound.to_string(),
            "metrics": metrics_bound.map(|a| a.to_string()),
        });
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, json.to_string())?;
        std::fs::rename(&tmp, path)?;
    }
    tracing::info!(id = config.id, client = %client_bound, peer = %peer_bound, "coordinator serving");

    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            break;
        }
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    for task in [session_loop, directory_loop, member_file_loop] {
        let _ = task.await;
    }
    // Long-lived watch and keep-alive streams would hold a graceful drain
    // open indefinitely; give in-flight calls a moment, then stop.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = client_server.await;
        let _ = peer_server.await;
    })
    .await;
    if let Err(e) = raft.shutdown().await {
        tracing::warn!(error = %e, "raft shutdown");
    }
    db.flush_async().await.context("flushing the ensemble store")?;
    tracing::info!("stopped");
    Ok(())
}

/// Gauges mirroring the member's live state, set just before a scrape.
fn refresh_metrics(ctx: &Context) {
    let m = ctx.raft.metrics().borrow().clone();
    metrics::gauge!("strata_coord_term").set(m.current_term as f64);
    metrics::gauge!("strata_coord_is_leader").set(if m.state == ServerState::Leader { 1.0 } else { 0.0 });
    metrics::gauge!("strata_coord_leader_id").set(m.current_leader.map_or(-1.0, |l| l as f64));
    metrics::gauge!("strata_coord_last_log_index").set(m.last_log_index.unwrap_or(0) as f64);
    metrics::gauge!("strata_coord_commit_index").set(m.last_applied.map_or(0, |l| l.index) as f64);
    metrics::gauge!("strata_coord_apply_index").set(ctx.shared.applied().log_id.map_or(0, |l| l.index) as f64);
    let (sessions, revision) = {
        let ns = ctx.shared.read();
        (ns.sessions().len(), ns.revision())
    };
    metrics::gauge!("strata_coord_sessions").set(sessions as f64);
    metrics::gauge!("strata_coord_revision").set(revision as f64);
    metrics::gauge!("strata_coord_watches").set(ctx.shared.hub.watcher_count() as f64);
}

async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => !*stop.borrow(),
        _ = stop.changed() => false,
    }
}

/// Leader-only: expire sessions whose deadline passed.
async fn session_loop(ctx: Arc<Context>, mut stop: watch::Receiver<bool>) {
    while sleep_or_stop(&mut stop, Duration::from_millis(50)).await {
        let term = {
            let m = ctx.raft.metrics();
            let m = m.borrow();
            (m.state == ServerState::Leader).then_some(m.current_term)
        };
        let live: Vec<(u64, u64)> = ctx.shared.read().sessions().iter().map(|(id, s)| (*id, s.ttl_ms)).collect();
        let tick = ctx.sessions.tick(term, &live, Instant::now());
        for session_id in tick.to_expire {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                tracing::info!(session_id, "session expired");
                let cmd = Command { request_id: None, op: WriteOp::ExpireSession { session_id } };
                match ctx.propose(cmd).await {
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(session_id, error = %e, "expiring session failed; will retry");
                        ctx.sessions.expiry_failed(session_id);
                    }
                }
            });
        }
    }
}

/// Publishes this member's client address in the namespace.
async fn directory_loop(ctx: Arc<Context>, mut stop: watch::Receiver<bool>) {
    while sleep_or_stop(&mut stop, Duration::from_millis(100)).await {
        if ctx.client_addr_of(ctx.id).as_deref() == Some(ctx.client_addr.as_str()) {
            // Re-check rarely: a snapshot install could in principle carry
            // an older entry.
            if !sleep_or_stop(&mut stop, Duration::from_secs(5)).await {
                return;
            }
            continue;
        }
        if ctx.leader_id().is_none() {
            continue;
        }
        let cmd = Command {
            request_id: None,
            op: WriteOp::SetMemberAddr { id: ctx.id, client_addr: ctx.client_addr.clone() },
        };
        if let Err(e) = ctx.propose_via_leader(cmd).await {
            tracing::debug!(error = %e, "publishing client address; will retry");
        }
    }
}

/// Keeps member.toml's member list equal to the replicated membership so a
/// restart with the current list passes the start-up check.
async fn member_file_loop(ctx: Arc<Context>, mut stop: watch::Receiver<bool>) {
    // Polled, not driven by the metrics watch: metrics change on every
    // applied entry, membership almost never.
    let mut written: Option<BTreeSet<u64>> = None;
    loop {
        let ids: BTreeSet<u64> =
            ctx.raft.metrics().borrow().membership_config.membership().nodes().map(|(id, _)| *id).collect();
        if !ids.is_empty() && written.as_ref() != Some(&ids) {
            let file = MemberFile { format: 1, id: ctx.id, members: ids.clone() };
            match write_member_file(&ctx.config.data_dir, &file) {
                Ok(()) => written = Some(ids),
                Err(e) => tracing::warn!(error = %e, "updating member file"),
            }
        }
        if !sleep_or_stop(&mut stop, Duration::from_millis(500)).await {
            return;
        }
    }
}
