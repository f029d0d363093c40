//! strata-coord-client: the client of the coordinator ensemble: finds the leader, retries safely across
//! leader changes, keeps sessions alive and resumes watches without gaps.
//!
//! Writes carry a request id (client id + sequence) that stays the same
//! across retries, so a write whose reply was lost is not applied twice.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_proto::common::ErrorCode;
use strata_proto::coord as pb;
use strata_proto::coord::coordinator_client::CoordinatorClient;
use strata_proto::error::detail_from_status;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

pub use strata_proto::coord::{Event, EventType, Stat, StatusResponse};

/// Typed errors of the ensemble, one per `ErrorCode`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoordError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("already exists: {0}")]
    NodeExists(String),
    #[error("bad version: {0}")]
    BadVersion(String),
    #[error("not empty: {0}")]
    NotEmpty(String),
    #[error("session expired: {0}")]
    SessionExpired(String),
    #[error("ephemeral nodes cannot have children: {0}")]
    NoChildrenForEphemerals(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("data too large: {0}")]
    DataTooLarge(String),
    #[error("revision compacted; oldest resumable revision is {compact_revision}")]
    Compacted { compact_revision: u64 },
    #[error("ensemble unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl CoordError {
    fn from_status(status: &tonic::Status) -> (CoordError, u64, String) {
        let d = detail_from_status(status);
        let m = d.message.clone();
        let e = match d.code() {
            ErrorCode::NotFound => CoordError::NotFound(m),
            ErrorCode::NodeExists => CoordError::NodeExists(m),
            ErrorCode::BadVersion => CoordError::BadVersion(m),
            ErrorCode::NotEmpty => CoordError::NotEmpty(m),
            ErrorCode::SessionExpired => CoordError::SessionExpired(m),
            ErrorCode::NoChildrenForEphemerals => CoordError::NoChildrenForEphemerals(m),
            ErrorCode::InvalidArgument => CoordError::InvalidArgument(m),
            ErrorCode::DataTooLarge => CoordError::DataTooLarge(m),
            ErrorCode::Compacted => CoordError::Compacted { compact_revision: d.compact_revision },
            ErrorCode::NotLeader | ErrorCode::Unavailable => CoordError::Unavailable(m),
            // Codes only brokers send cannot come from the ensemble.
            _ => CoordError::Internal(m),
        };
        let leader_addr = if d.code() == ErrorCode::NotLeader { d.leader_addr } else { String::new() };
        (e, d.leader_id, leader_addr)
    }

    fn retriable(&self) -> bool {
        matches!(self, CoordError::Unavailable(_))
    }
}

#[derive(Debug, Clone)]
pub struct CoordConfig {
    /// How long one call keeps retrying across leader changes and outages.
    pub retry_for: Duration,
    pub connect_timeout: Duration,
    /// Upper bound on one attempt (a cut connection must not hang a call).
    pub attempt_timeout: Duration,
}

impl Default for CoordConfig {
    fn default() -> Self {
        CoordConfig {
            retry_for: Duration::from_secs(15),
            connect_timeout: Duration::from_millis(500),
            attempt_timeout: Duration::from_secs(6),
        }
    }
}

struct Inner {
    endpoints: Mutex<Vec<String>>,
    current: AtomicUsize,
    channels: Mutex<HashMap<String, CoordinatorClient<Channel>>>,
    client_id: Bytes,
    seq: AtomicU64,
    config: CoordConfig,
    /// Members that just failed at the transport level. A follower may
    /// still name a dead leader for a while after it died; following that
    /// hint would bounce between the two until the election ends.
    suspects: Mutex<HashMap<String, Instant>>,
}

/// How long a member that failed stays out of the leader-hint path.
const SUSPECT_FOR: Duration = Duration::from_secs(2);

/// A cheap-to-clone handle to the ensemble.
#[derive(Clone)]
pub struct CoordClient {
    inner: Arc<Inner>,
}

fn normalize(addr: &str) -> String {
    addr.trim().trim_start_matches("http://").to_string()
}

impl CoordClient {
    pub fn new(addrs: &[String]) -> Result<Self, CoordError> {
        Self::with_config(addrs, CoordConfig::default())
    }

    pub fn with_config(addrs: &[String], config: CoordConfig) -> Result<Self, CoordError> {
        let endpoints: Vec<String> = addrs.iter().map(|a| normalize(a)).filter(|a| !a.is_empty()).collect();
        if endpoints.is_empty() {
            return Err(CoordError::InvalidArgument("no coordinator addresses given".into()));
        }
        let client_id = Bytes::copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        Ok(CoordClient {
            inner: Arc::new(Inner {
                endpoints: Mutex::new(endpoints),
                current: AtomicUsize::new(0),
                channels: Mutex::new(HashMap::new()),
                client_id,
                seq: AtomicU64::new(1),
                config,
                suspects: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.inner.endpoints.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn target(&self) -> String {
        let eps = self.inner.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        eps[self.inner.current.load(Ordering::Relaxed) % eps.len()].clone()
    }

    /// Moves to the next member that has not just failed (if any).
    fn rotate(&self) {
        let n = self.inner.endpoints.lock().unwrap_or_else(|p| p.into_inner()).len();
        for _ in 0..n {
            self.inner.current.fetch_add(1, Ordering::Relaxed);
            if !self.is_suspect(&self.target()) {
                return;
            }
        }
    }

    fn suspect(&self, addr: &str) {
        self.inner.suspects.lock().unwrap_or_else(|p| p.into_inner()).insert(addr.to_string(), Instant::now());
    }

    fn is_suspect(&self, addr: &str) -> bool {
        let suspects = self.inner.suspects.lock().unwrap_or_else(|p| p.into_inner());
        suspects.get(addr).is_some_and(|t| t.elapsed() < SUSPECT_FOR)
    }

    fn clear_suspect(&self, addr: &str) {
        self.inner.suspects.lock().unwrap_or_else(|p| p.into_inner()).remove(addr);
    }

    fn prefer(&self, addr: &str) {
        let addr = normalize(addr);
        let mut eps = self.inner.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        let idx = match eps.iter().position(|e| *e == addr) {
            Some(i) => i,
            None => {
                eps.push(addr);
                eps.len() - 1
            }
        };
        self.inner.current.store(idx, Ordering::Relaxed);
    }

    fn client_for(&self, addr: &str) -> Result<CoordinatorClient<Channel>, CoordError> {
        let mut channels = self.inner.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| CoordError::InvalidArgument(format!("bad coordinator address {addr}: {e}")))?
            .connect_timeout(self.inner.config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(2))
            .keep_alive_timeout(Duration::from_secs(3))
            .keep_alive_while_idle(true);
        let client = CoordinatorClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
        channels.insert(addr.to_string(), client.clone());
        Ok(client)
    }

    fn forget(&self, addr: &str) {
        self.inner.channels.lock().unwrap_or_else(|p| p.into_inner()).remove(addr);
    }

    /// A request id for one logical write; reuse it for every retry.
    fn request_id(&self) -> pb::RequestId {
        pb::RequestId { client_id: self.inner.client_id.clone(), seq: self.inner.seq.fetch_add(1, Ordering::Relaxed) }
    }

    /// Runs `f` against the member believed to lead, following NotLeader
    /// hints and rotating through members until `retry_for` runs out.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, CoordError>
    where
        F: Fn(CoordinatorClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.inner.config.retry_for;
        let mut backoff = Duration::from_millis(5);
        let mut last_err = CoordError::Unavailable("no attempt made".into());
        while Instant::now() < deadline {
            let addr = self.target();
            let client = self.client_for(&addr)?;
            match tokio::time::timeout(self.inner.config.attempt_timeout, f(client)).await {
                Ok(Ok(resp)) => {
                    self.clear_suspect(&addr);
                    return Ok(resp.into_inner());
                }
                Ok(Err(status)) => {
                    let (err, _leader_id, leader_addr) = CoordError::from_status(&status);
                    if !err.retriable() {
                        return Err(err);
                    }
                    let hint = normalize(&leader_addr);
                    if !hint.is_empty() && hint != addr && !self.is_suspect(&hint) {
                        self.prefer(&hint);
                        last_err = err;
                        continue;
                    }
                    if status.details().is_empty() {
                        // Transport failure, not an answer from a member.
                        self.forget(&addr);
                        self.suspect(&addr);
                    }
                    last_err = CoordError::Unavailable(format!("{addr}: {}", status.message()));
                }
                Err(_) => {
                    self.forget(&addr);
                    self.suspect(&addr);
                    last_err = CoordError::Unavailable(format!(
                        "{addr}: no answer within {:?}",
                        self.inner.config.attempt_timeout
                    ));
                }
            }
            self.rotate();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(50));
        }
        Err(last_err)
    }

    pub async fn create(
        &self,
        path: &str,
        data: impl Into<Bytes>,
        opts: CreateOptions,
    ) -> Result<(String, Stat), CoordError> {
        let req = pb::CreateRequest {
            path: path.to_string(),
            data: data.into(),
            ephemeral: opts.session_id.is_some(),
            sequential: opts.sequential,
            session_id: opts.session_id.unwrap_or(0),
            request_id: Some(self.request_id()),
        };
        let r = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.create(req).await }
            })
            .await?;
        Ok((r.path, r.stat.unwrap_or_default()))
    }

    /// Sets a node's data, optionally only at `expected_version`.
    pub async fn set(
        &self,
        path: &str,
        data: impl Into<Bytes>,
        expected_version: Option<u64>,
    ) -> Result<Stat, CoordError> {
        self.set_inner(path, data.into(), expected_version, false).await.map(|r| r.0)
    }

    /// Creates the node (persistent) or replaces its data; returns whether it was created.
    pub async fn upsert(&self, path: &str, data: impl Into<Bytes>) -> Result<(Stat, bool), CoordError> {
        self.set_inner(path, data.into(), None, true).await
    }

    async fn set_inner(
        &self,
        path: &str,
        data: Bytes,
        expected_version: Option<u64>,
        upsert: bool,
    ) -> Result<(Stat, bool), CoordError> {
        let req = pb::SetRequest {
            path: path.to_string(),
            data,
            expected_version: expected_version.map(|v| v as i64),
            upsert,
            request_id: Some(self.request_id()),
        };
        let r = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.set(req).await }
            })
            .await?;
        Ok((r.stat.unwrap_or_default(), r.created))
    }

    pub async fn delete(&self, path: &str, expected_version: Option<u64>) -> Result<u64, CoordError> {
        let req = pb::DeleteRequest {
            path: path.to_string(),
            expected_version: expected_version.map(|v| v as i64),
            request_id: Some(self.request_id()),
        };
        let r = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.delete(req).await }
            })
            .await?;
        Ok(r.revision)
    }

    pub async fn txn(&self, txn: Txn) -> Result<pb::TxnResponse, CoordError> {
        let req = pb::TxnRequest {
            conditions: txn.conditions,
            ops: txn.ops,
            request_id: Some(self.request_id()),
            session_id: txn.session_id,
        };
        self.call(|mut c| {
            let req = req.clone();
            async move { c.txn(req).await }
        })
        .await
    }

    pub async fn get(&self, path: &str) -> Result<(Bytes, Stat), CoordError> {
        self.get_with(path, Consistency::Linearizable).await.map(|(d, s, _)| (d, s))
    }

    /// Returns data, stat and the namespace revision the read saw.
    pub async fn get_with(&self, path: &str, consistency: Consistency) -> Result<(Bytes, Stat, u64), CoordError> {
        let req = pb::GetRequest { path: path.to_string(), consistency: consistency.pb() };
        let r = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.get(req).await }
            })
            .await?;
        Ok((r.data, r.stat.unwrap_or_default(), r.revision))
    }

    pub async fn exists(&self, path: &str) -> Result<Option<Stat>, CoordError> {
        let req = pb::ExistsRequest { path: path.to_string(), consistency: Consistency::Linearizable.pb() };
        let r = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.exists(req).await }
            })
            .await?;
        Ok(r.stat)
    }

    pub async fn children(&self, path: &str) -> Result<(Vec<String>, u64), CoordError> {
        let req = pb::ChildrenRequest { path: path.to_string(), consistency: Consistency::Linearizable.pb() };
        let r = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.children(req).await }
            })
            .await?;
        Ok((r.names, r.revision))
    }

    /// Status as one particular member sees it (no retry, no redirect).
    pub async fn status_of(&self, addr: &str) -> Result<StatusResponse, CoordError> {
        let mut c = self.client_for(&normalize(addr))?;
        match tokio::time::timeout(self.inner.config.attempt_timeout, c.status(pb::StatusRequest {})).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(CoordError::from_status(&s).0),
            Err(_) => Err(CoordError::Unavailable(format!("{addr} did not answer"))),
        }
    }

    /// Status from the leader's point of view.
    pub async fn status(&self) -> Result<StatusResponse, CoordError> {
        let any = self.call(|mut c| async move { c.status(pb::StatusRequest {}).await }).await?;
        if any.leader_id != 0
            && any.leader_id != any.id
            && let Some(m) = any.members.iter().find(|m| m.id == any.leader_id && !m.client_addr.is_empty())
            && let Ok(s) = self.status_of(&m.client_addr).await
        {
            return Ok(s);
        }
        Ok(any)
    }

    pub async fn add_member(&self, id: u64, peer_addr: &str) -> Result<(), CoordError> {
        let req = pb::AddMemberRequest { id, peer_addr: peer_addr.to_string() };
        self.call(|mut c| {
            let req = req.clone();
            async move { c.add_member(req).await }
        })
        .await
        .map(|_| ())
    }

    pub async fn remove_member(&self, id: u64) -> Result<(), CoordError> {
        let req = pb::RemoveMemberRequest { id };
        self.call(|mut c| async move { c.remove_member(req).await }).await.map(|_| ())
    }

    /// Opens a session and keeps it alive in the background until dropped
    /// or closed.
    pub async fn open_session(&self, ttl: Duration) -> Result<Session, CoordError> {
        let req = pb::OpenSessionRequest { ttl_ms: ttl.as_millis() as u64, request_id: Some(self.request_id()) };
        let sent = Instant::now();
        let r = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.open_session(req).await }
            })
            .await?;
        let (state_tx, state_rx) = watch::channel(SessionState::Alive);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (confirmed_tx, confirmed_rx) = watch::channel(sent);
        let ttl = Duration::from_millis(r.ttl_ms);
        tokio::spawn(keep_alive_loop(self.clone(), r.session_id, ttl, state_tx, confirmed_tx, stop_rx));
        Ok(Session {
            id: r.session_id,
            ttl,
            client: self.clone(),
            state: state_rx,
            confirmed: confirmed_rx,
            stop: stop_tx,
        })
    }

    /// Watches `path` (and below it with `prefix`) from `start_revision`
    /// (0 = changes from now on).
    pub fn watch(&self, path: &str, prefix: bool, start_revision: u64) -> WatchStream {
        WatchStream {
            client: self.clone(),
            path: path.to_string(),
            prefix,
            next_revision: start_revision,
            stream: None,
            compacted_at: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub enum Consistency {
    #[default]
    Linearizable,
    Serializable,
}

impl Consistency {
    fn pb(self) -> i32 {
        match self {
            Consistency::Linearizable => pb::ReadConsistency::Linearizable as i32,
            Consistency::Serializable => pb::ReadConsistency::Serializable as i32,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Makes the node ephemeral, owned by this session.
    pub session_id: Option<u64>,
    pub sequential: bool,
}

impl CreateOptions {
    pub fn persistent() -> Self {
        Self::default()
    }
    pub fn ephemeral(session_id: u64) -> Self {
        CreateOptions { session_id: Some(session_id), sequential: false }
    }
}

/// A transaction under construction: conditions, then operations.
#[derive(Debug, Clone, Default)]
pub struct Txn {
    conditions: Vec<pb::Condition>,
    ops: Vec<pb::Op>,
    session_id: u64,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn session(mut self, id: u64) -> Self {
        self.session_id = id;
        self
    }
    pub fn when_exists(mut self, path: &str, exists: bool) -> Self {
        self.conditions.push(pb::Condition { path: path.into(), check: Some(pb::condition::Check::Exists(exists)) });
        self
    }
    pub fn when_version(mut self, path: &str, version: u64) -> Self {
        self.conditions.push(pb::Condition { path: path.into(), check: Some(pb::condition::Check::Version(version)) });
        self
    }
    pub fn when_mod_revision(mut self, path: &str, rev: u64) -> Self {
        self.conditions.push(pb::Condition { path: path.into(), check: Some(pb::condition::Check::ModRevision(rev)) });
        self
    }
    pub fn create(mut self, path: &str, data: impl Into<Bytes>, ephemeral: bool) -> Self {
        self.ops.push(pb::Op {
            op: Some(pb::op::Op::Create(pb::CreateRequest {
                path: path.into(),
                data: data.into(),
                ephemeral,
                ..Default::default()
            })),
        });
        self
    }
    pub fn set(mut self, path: &str, data: impl Into<Bytes>, expected_version: Option<u64>) -> Self {
        self.ops.push(pb::Op {
            op: Some(pb::op::Op::Set(pb::SetRequest {
                path: path.into(),
                data: data.into(),
                expected_version: expected_version.map(|v| v as i64),
                ..Default::default()
            })),
        });
        self
    }
    /// Creates the node (persistent) or replaces its data.
    pub fn upsert(mut self, path: &str, data: impl Into<Bytes>) -> Self {
        self.ops.push(pb::Op {
            op: Some(pb::op::Op::Set(pb::SetRequest {
                path: path.into(),
                data: data.into(),
                upsert: true,
                ..Default::default()
            })),
        });
        self
    }
    pub fn delete(mut self, path: &str, expected_version: Option<u64>) -> Self {
        self.ops.push(pb::Op {
            op: Some(pb::op::Op::Delete(pb::DeleteRequest {
                path: path.into(),
                expected_version: expected_version.map(|v| v as i64),
                ..Default::default()
            })),
        });
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    Alive,
    /// The ensemble expired the session; its ephemerals are gone.
    Expired,
    Closed,
}

/// A live session. Dropping it stops the heartbeats (the session then
/// expires after its TTL); `close` ends it at once.
pub struct Session {
    pub id: u64,
    pub ttl: Duration,
    client: CoordClient,
    state: watch::Receiver<SessionState>,
    confirmed: watch::Receiver<Instant>,
    stop: watch::Sender<bool>,
}

impl Session {
    /// When the newest keep-alive that the ensemble answered was sent. The
    /// ensemble cannot expire the session before that instant plus the TTL,
    /// so a holder of ephemeral state may act on it until then, even while
    /// cut off from the ensemble (where `state` would still say Alive).
    pub fn confirmed_watch(&self) -> watch::Receiver<Instant> {
        self.confirmed.clone()
    }

    pub fn state(&self) -> SessionState {
        *self.state.borrow()
    }

    /// Resolves when the session is no longer alive.
    pub async fn lost(&mut self) -> SessionState {
        let _ = self.state.wait_for(|s| *s != SessionState::Alive).await;
        *self.state.borrow()
    }

    pub fn state_watch(&self) -> watch::Receiver<SessionState> {
        self.state.clone()
    }

    pub async fn close(self) -> Result<(), CoordError> {
        let _ = self.stop.send(true);
        let req = pb::CloseSessionRequest { session_id: self.id };
        match self.client.call(|mut c| async move { c.close_session(req).await }).await {
            Ok(_) | Err(CoordError::SessionExpired(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn keep_alive_loop(
    client: CoordClient,
    session_id: u64,
    ttl: Duration,
    state: watch::Sender<SessionState>,
    confirmed: watch::Sender<Instant>,
    mut stop: watch::Receiver<bool>,
) {
    let interval = (ttl / 4).max(Duration::from_millis(50));
    loop {
        if *stop.borrow() {
            let _ = state.send(SessionState::Closed);
            return;
        }
        let addr = client.target();
        let Ok(mut c) = client.client_for(&addr) else { return };
        let (tx, rx) = mpsc::channel(4);
        // Send times of unanswered keep-alives, oldest first: an answer
        // confirms the session as of the oldest one (answers come in order;
        // were some skipped, the oldest is the cautious choice).
        let mut unanswered = std::collections::VecDeque::from([Instant::now()]);
        let _ = tx.try_send(pb::KeepAliveRequest { session_id });
        let attempt = async {
            let mut responses = c.keep_alive(ReceiverStream::new(rx)).await?.into_inner();
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        unanswered.push_back(Instant::now());
                        if unanswered.len() > 64 {
                            unanswered.pop_front();
                        }
                        if tx.send(pb::KeepAliveRequest { session_id }).await.is_err() {
                            return Err(tonic::Status::unavailable("keep-alive stream closed"));
                        }
                    }
                    msg = tokio::time::timeout(interval * 2, responses.message()) => match msg {
                        Ok(Ok(Some(_))) => {
                            if let Some(sent) = unanswered.pop_front() {
                                confirmed.send_if_modified(|c| {
                                    let newer = sent > *c;
                                    if newer {
                                        *c = sent;
                                    }
                                    newer
                                });
                            }
                        }
                        Ok(Ok(None)) => return Err(tonic::Status::unavailable("keep-alive stream ended")),
                        Ok(Err(s)) => return Err(s),
                        Err(_) => return Err(tonic::Status::unavailable("keep-alive answer overdue")),
                    },
                    _ = stop.changed() => return Ok(()),
                }
            }
        };
        match attempt.await {
            Ok(()) => {
                let _ = state.send(SessionState::Closed);
                return;
            }
            Err(s) => {
                let (err, _, leader_addr) = CoordError::from_status(&s);
                if let CoordError::SessionExpired(_) = err {
                    tracing::warn!(session_id, "session expired");
                    let _ = state.send(SessionState::Expired);
                    return;
                }
                if !leader_addr.is_empty() {
                    client.prefer(&leader_addr);
                } else {
                    client.forget(&addr);
                    client.rotate();
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
}

/// A resumable watch: reconnects after transport failures from the revision
/// after the last one delivered, so no event is missed or repeated.
pub struct WatchStream {
    client: CoordClient,
    path: String,
    prefix: bool,
    /// Next revision wanted (0 until the first message fixes the start).
    next_revision: u64,
    stream: Option<tonic::Streaming<pb::WatchResponse>>,
    compacted_at: Vec<String>,
}

impl WatchStream {
    /// The revision the next event must have at least.
    pub fn next_revision(&self) -> u64 {
        self.next_revision
    }

    /// Next batch of events (all events of one or more whole revisions).
    pub async fn next(&mut self) -> Result<Vec<Event>, CoordError> {
        let mut backoff = Duration::from_millis(10);
        loop {
            if self.stream.is_none() {
                let addr = self.client.target();
                let mut c = self.client.client_for(&addr)?;
                let req = pb::WatchRequest {
                    path: self.path.clone(),
                    prefix: self.prefix,
                    start_revision: self.next_revision,
                };
                match tokio::time::timeout(self.client.inner.config.attempt_timeout, c.watch(req)).await {
                    Ok(Ok(resp)) => {
                        self.stream = Some(resp.into_inner());
                        self.compacted_at.clear();
                    }
                    Ok(Err(status)) => {
                        let (err, _, _) = CoordError::from_status(&status);
                        match err {
                            CoordError::Compacted { .. } => {
                                // Another member may hold a longer history.
                                if !self.compacted_at.contains(&addr) {
                                    self.compacted_at.push(addr);
                                }
                                if self.compacted_at.len() >= self.client.endpoints().len() {
                                    return Err(err);
                                }
                            }
                            e if !e.retriable() => return Err(e),
                            _ => self.client.forget(&addr),
                        }
                        self.client.rotate();
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(500));
                        continue;
                    }
                    Err(_) => {
                        self.client.forget(&addr);
                        self.client.rotate();
                        continue;
                    }
                }
            }
            let Some(stream) = self.stream.as_mut() else { continue };
            match stream.message().await {
                Ok(Some(msg)) => {
                    if msg.events.is_empty() {
                        if self.next_revision == 0 {
                            self.next_revision = msg.header_revision + 1;
                        }
                        continue;
                    }
                    if let Some(last) = msg.events.last() {
                        self.next_revision = last.revision + 1;
                    }
                    return Ok(msg.events);
                }
                Ok(None) | Err(_) => {
                    // Resume from next_revision on some member.
                    self.stream = None;
                    self.client.rotate();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
            }
        }
    }
}
