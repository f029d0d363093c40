//! Cluster metadata for clients: which brokers exist, who leads each
//! partition, and a gRPC channel per broker.
//!
//! Brokers push the whole metadata on a `WatchMetadata` stream now and after
//! every change, so a [`MetadataClient`] keeps one such stream open to one
//! reachable broker and publishes each snapshot on a `tokio::sync::watch`.
//! Producers and consumers read the latest snapshot without a round trip
//! and await the next one when a leader moves, instead of polling.
//!
//! Invariant: published snapshots never go back in ensemble revision. After
//! a reconnect the new broker may lag the old one for a moment; its older
//! view is ignored rather than undoing a leader change already seen.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::Rng;
use strata_proto::broker::admin_client::AdminClient as AdminRpcClient;
use strata_proto::broker::broker_client::BrokerClient;
use strata_proto::broker::groups_client::GroupsClient;
use strata_proto::broker::{MetadataRequest, MetadataResponse};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info, warn};

use crate::error::ClientError;

/// Broker id as the cluster assigns it.
pub type BrokerId = i32;

/// One live broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerMetadata {
    pub id: BrokerId,
    /// `host:port` of its client listener.
    pub addr: String,
    pub rack: String,
}

/// One partition's replicas and leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    pub partition: u32,
    /// `None` while no replica can lead (an election is under way, or every
    /// replica is down).
    pub leader: Option<BrokerId>,
    pub leader_epoch: i32,
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
}

/// One topic as the cluster describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    pub name: String,
    pub topic_id: String,
    /// Set when the broker could not describe the topic (say, it is unknown).
    pub error: Option<ClientError>,
    /// Sorted by partition number.
    pub partitions: Vec<PartitionMetadata>,
    pub configs: BTreeMap<String, String>,
}

impl TopicMetadata {
    pub fn partition(&self, partition: u32) -> Option<&PartitionMetadata> {
        // Partitions are dense in practice, so the index is the fast path;
        // the search keeps a sparse answer from being misread.
        match self.partitions.get(partition as usize) {
            Some(p) if p.partition == partition => Some(p),
            _ => self.partitions.iter().find(|p| p.partition == partition),
        }
    }

    /// Whether every partition has a leader.
    pub fn all_led(&self) -> bool {
        !self.partitions.is_empty() && self.partitions.iter().all(|p| p.leader.is_some())
    }
}

/// A consistent view of the cluster at one ensemble revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterMetadata {
    /// Ensemble revision the view reflects; grows with every change.
    pub revision: u64,
    pub controller_id: Option<BrokerId>,
    pub brokers: BTreeMap<BrokerId, BrokerMetadata>,
    pub topics: BTreeMap<String, TopicMetadata>,
    /// False for the empty placeholder published before any broker answered.
    received: bool,
}

impl ClusterMetadata {
    /// Indexes a broker's answer.
    pub fn from_response(response: MetadataResponse) -> ClusterMetadata {
        let brokers = response
            .brokers
            .into_iter()
            .map(|b| (b.id, BrokerMetadata { id: b.id, addr: normalize_addr(&b.addr), rack: b.rack }))
            .collect();
        let topics = response
            .topics
            .into_iter()
            .map(|t| {
                let mut partitions: Vec<PartitionMetadata> = t
                    .partitions
                    .into_iter()
                    .map(|p| PartitionMetadata {
                        partition: p.partition,
                        leader: (p.leader >= 0).then_some(p.leader),
                        leader_epoch: p.leader_epoch,
                        replicas: p.replicas,
                        isr: p.isr,
                    })
                    .collect();
                partitions.sort_by_key(|p| p.partition);
                let error = ClientError::from_partition_error(t.error.as_ref());
                let topic = TopicMetadata {
                    name: t.name.clone(),
                    topic_id: t.topic_id,
                    error,
                    partitions,
                    configs: t.configs.into_iter().collect(),
                };
                (t.name, topic)
            })
            .collect();
        ClusterMetadata {
            revision: response.revision,
            controller_id: (response.controller_id >= 0).then_some(response.controller_id),
            brokers,
            topics,
            received: true,
        }
    }

    /// Whether this came from a broker (rather than being the placeholder
    /// published before the first answer).
    pub fn is_received(&self) -> bool {
        self.received
    }

    /// A topic the cluster knows, without error.
    pub fn topic(&self, name: &str) -> Option<&TopicMetadata> {
        self.topics.get(name).filter(|t| t.error.is_none())
    }

    pub fn broker_addr(&self, id: BrokerId) -> Option<&str> {
        self.brokers.get(&id).map(|b| b.addr.as_str())
    }

    /// The partition's leader and its address, when both are known.
    pub fn leader_for(&self, topic: &str, partition: u32) -> Option<(BrokerId, &str)> {
        let leader = self.topic(topic)?.partition(partition)?.leader?;
        Some((leader, self.broker_addr(leader)?))
    }

    /// How many partitions the topic has; `None` if the topic is unknown.
    pub fn partition_count(&self, topic: &str) -> Option<u32> {
        self.topic(topic).map(|t| u32::try_from(t.partitions.len()).unwrap_or(u32::MAX))
    }
}

/// Tunables of [`MetadataClient`] and of the channels it hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataConfig {
    /// Bound on opening a TCP + HTTP/2 connection to one broker.
    pub connect_timeout: Duration,
    /// Bound on one unary call (admin calls, metadata refreshes).
    pub request_timeout: Duration,
    /// How long [`MetadataClient::connect`] waits for the first snapshot.
    pub bootstrap_timeout: Duration,
    /// First pause after every known broker failed; doubles up to the max.
    pub reconnect_backoff: Duration,
    pub reconnect_backoff_max: Duration,
    /// Largest message a channel sends or receives (fetch answers are big).
    pub max_message_size: usize,
    /// A broker whose watch stream stays behind a revision another broker
    /// already served for this long is presumed cut off from the ensemble,
    /// and the stream moves to another broker.
    pub stale_stream_after: Duration,
}

impl Default for MetadataConfig {
    fn default() -> Self {
        MetadataConfig {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(30),
            bootstrap_timeout: Duration::from_secs(10),
            reconnect_backoff: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(2),
            max_message_size: 128 * 1024 * 1024,
            stale_stream_after: Duration::from_secs(3),
        }
    }
}

/// Strips what people type around an address: spaces and a scheme.
fn normalize_addr(addr: &str) -> String {
    let addr = addr.trim();
    addr.strip_prefix("http://").unwrap_or(addr).trim_end_matches('/').to_string()
}

/// Splits a `--bootstrap` value ("a:1,b:2") into addresses.
pub fn parse_bootstrap(list: &str) -> Vec<String> {
    list.split(',').map(normalize_addr).filter(|a| !a.is_empty()).collect()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is one map operation; a panic elsewhere
    // cannot leave them half-done.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the watch task last saw of each address, for error messages.
#[derive(Debug, Default)]
struct LinkState {
    /// Address of the broker the watch stream is open to.
    streaming_from: Option<String>,
    /// Last revision that stream delivered.
    stream_revision: u64,
    /// Last failure per address, in the order tried.
    failures: BTreeMap<String, String>,
}

struct Shared {
    bootstrap: Vec<String>,
    config: MetadataConfig,
    channels: Mutex<HashMap<String, Channel>>,
    snapshot: watch::Sender<Arc<ClusterMetadata>>,
    link: Mutex<LinkState>,
    /// Wakes the watch task to check another broker for newer metadata.
    refresh: Notify,
    /// Round-robin cursor over candidate brokers for unary calls.
    cursor: AtomicUsize,
}

impl Shared {
    /// Every address worth trying: known brokers first (they are what the
    /// cluster says is live), then the bootstrap list, without repeats.
    fn candidates(&self) -> Vec<String> {
        let snapshot = self.snapshot.borrow().clone();
        let mut out: Vec<String> = snapshot.brokers.values().map(|b| b.addr.clone()).collect();
        for addr in &self.bootstrap {
            if !out.contains(addr) {
                out.push(addr.clone());
            }
        }
        out
    }

    fn channel(&self, addr: &str) -> Result<Channel, ClientError> {
        let addr = normalize_addr(addr);
        let mut channels = lock(&self.channels);
        if let Some(c) = channels.get(&addr) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| ClientError::InvalidArgument(format!("bad broker address {addr:?}: {e}")))?
            .connect_timeout(self.config.connect_timeout)
            .tcp_nodelay(true)
            // Keep-alives notice a broker that vanished without closing the
            // connection (power loss, cut network); without them a watch
            // stream would wait on it forever.
            .http2_keep_alive_interval(Duration::from_secs(2))
            .keep_alive_timeout(Duration::from_secs(3))
            .keep_alive_while_idle(true);
        // Lazy: the connection opens on first use, and reopens after a
        // failure, so a cached channel never goes permanently bad.
        let channel = endpoint.connect_lazy();
        channels.insert(addr, channel.clone());
        Ok(channel)
    }

    fn broker_client(&self, addr: &str) -> Result<BrokerClient<Channel>, ClientError> {
        let max = self.config.max_message_size;
        Ok(BrokerClient::new(self.channel(addr)?).max_decoding_message_size(max).max_encoding_message_size(max))
    }

    /// Publishes `metadata` unless it is older than what callers have.
    fn publish(&self, metadata: ClusterMetadata) -> bool {
        self.snapshot.send_if_modified(|current| {
            if current.received && metadata.revision < current.revision {
                debug!(have = current.revision, got = metadata.revision, "ignoring older metadata");
                return false;
            }
            if **current == metadata {
                return false;
            }
            *current = Arc::new(metadata);
            true
        })
    }

    fn record_failure(&self, addr: &str, error: &str) {
        let mut link = lock(&self.link);
        link.failures.insert(addr.to_string(), error.to_string());
    }

    /// The error for "no broker answered", naming every address tried.
    fn unreachable(&self) -> ClientError {
        let link = lock(&self.link);
        let tried = self.candidates().join(", ");
        let mut message = format!("no broker reachable at {tried} — is `strata dev` running?");
        if !link.failures.is_empty() {
            let reasons: Vec<String> = link.failures.iter().map(|(a, e)| format!("{a}: {e}")).collect();
            message.push_str(&format!(" (last errors: {})", reasons.join("; ")));
        }
        ClientError::Unreachable(message)
    }

    /// One unary `Metadata` call to `addr`, bounded by the request timeout.
    async fn fetch_metadata(&self, addr: &str) -> Result<ClusterMetadata, ClientError> {
        let mut client = self.broker_client(addr)?;
        let call = client.metadata(MetadataRequest::default());
        match tokio::time::timeout(self.config.request_timeout, call).await {
            Ok(Ok(response)) => Ok(ClusterMetadata::from_response(response.into_inner())),
            Ok(Err(status)) => Err(ClientError::from_status(&status, addr)),
            Err(_) => Err(ClientError::RequestTimedOut(format!(
                "no metadata from {addr} within {:?}",
                self.config.request_timeout
            ))),
        }
    }
}

/// Aborts the watch task when the last [`MetadataClient`] clone goes.
struct TaskGuard(Option<JoinHandle<()>>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// Bootstraps from a list of broker addresses, keeps the cluster metadata
/// current through a `WatchMetadata` stream, and hands out one cached gRPC
/// channel per broker.
///
/// Cheap to clone; clones share the stream and the channels. The stream
/// stops when the last clone is dropped.
#[derive(Clone)]
pub struct MetadataClient {
    shared: Arc<Shared>,
    _task: Arc<TaskGuard>,
}

impl fmt::Debug for MetadataClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetadataClient")
            .field("bootstrap", &self.shared.bootstrap)
            .field("revision", &self.shared.snapshot.borrow().revision)
            .finish_non_exhaustive()
    }
}

impl MetadataClient {
    /// Starts watching without waiting for an answer. Must be called within
    /// a Tokio runtime. Fails only on an empty or malformed address list.
    pub fn new<S: AsRef<str>>(bootstrap: &[S], config: MetadataConfig) -> Result<MetadataClient, ClientError> {
        let client = MetadataClient::detached(bootstrap, config)?;
        let shared = client.shared.clone();
        let task = tokio::spawn(watch_loop(shared));
        Ok(MetadataClient { shared: client.shared, _task: Arc::new(TaskGuard(Some(task))) })
    }

    /// Starts watching and waits (at most `bootstrap_timeout`) for the first
    /// snapshot, so a dead address list fails here with a clear message.
    pub async fn connect<S: AsRef<str>>(
        bootstrap: &[S],
        config: MetadataConfig,
    ) -> Result<MetadataClient, ClientError> {
        let timeout = config.bootstrap_timeout;
        let client = MetadataClient::new(bootstrap, config)?;
        client.wait_ready(timeout).await?;
        Ok(client)
    }

    /// The client's shared state without the watch task: `new` starts the
    /// task on it; tests use it alone and feed snapshots through `publish`.
    pub(crate) fn detached<S: AsRef<str>>(
        bootstrap: &[S],
        config: MetadataConfig,
    ) -> Result<MetadataClient, ClientError> {
        let mut addrs: Vec<String> = Vec::new();
        for a in bootstrap {
            for addr in parse_bootstrap(a.as_ref()) {
                if !addrs.contains(&addr) {
                    addrs.push(addr);
                }
            }
        }
        if addrs.is_empty() {
            return Err(ClientError::InvalidArgument("no broker addresses given (try --bootstrap HOST:PORT)".into()));
        }
        for addr in &addrs {
            Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| ClientError::InvalidArgument(format!("bad broker address {addr:?}: {e}")))?;
        }
        let (snapshot, _) = watch::channel(Arc::new(ClusterMetadata::default()));
        let start = rand::rng().random_range(0..addrs.len());
        Ok(MetadataClient {
            shared: Arc::new(Shared {
                bootstrap: addrs,
                config,
                channels: Mutex::new(HashMap::new()),
                snapshot,
                link: Mutex::new(LinkState::default()),
                refresh: Notify::new(),
                cursor: AtomicUsize::new(start),
            }),
            _task: Arc::new(TaskGuard(None)),
        })
    }

    /// Publishes a snapshot as if a broker had pushed it (ignored if older
    /// than the current one). Returns whether it replaced the current one.
    #[cfg(test)]
    pub(crate) fn publish(&self, metadata: ClusterMetadata) -> bool {
        self.shared.publish(metadata)
    }

    /// The broker the watch stream is open to, if any.
    #[cfg(test)]
    pub(crate) fn streaming_from(&self) -> Option<String> {
        lock(&self.shared.link).streaming_from.clone()
    }

    pub fn config(&self) -> &MetadataConfig {
        &self.shared.config
    }

    /// The addresses this client was started with.
    pub fn bootstrap(&self) -> &[String] {
        &self.shared.bootstrap
    }

    /// The latest snapshot (the empty placeholder until a broker answers).
    pub fn current(&self) -> Arc<ClusterMetadata> {
        self.shared.snapshot.borrow().clone()
    }

    /// A receiver that sees every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterMetadata>> {
        self.shared.snapshot.subscribe()
    }

    /// The partition's leader and its address, if known now.
    pub fn leader_for(&self, topic: &str, partition: u32) -> Option<(BrokerId, String)> {
        let snapshot = self.shared.snapshot.borrow();
        snapshot.leader_for(topic, partition).map(|(id, addr)| (id, addr.to_string()))
    }

    /// The topic's partition count, if the topic is known now.
    pub fn partition_count(&self, topic: &str) -> Option<u32> {
        self.shared.snapshot.borrow().partition_count(topic)
    }

    /// Waits until `ready` holds for a snapshot and returns it; on timeout
    /// returns the last snapshot seen as the error.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut ready: impl FnMut(&ClusterMetadata) -> bool,
    ) -> Result<Arc<ClusterMetadata>, Arc<ClusterMetadata>> {
        let mut rx = self.subscribe();
        let deadline = Instant::now() + timeout;
        loop {
            let snapshot = rx.borrow_and_update().clone();
            if ready(&snapshot) {
                return Ok(snapshot);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                // The sender lives in `self.shared`, so it cannot close while
                // we hold `self`; treat it like a timeout all the same.
                Ok(Err(_)) | Err(_) => return Err(rx.borrow().clone()),
            }
        }
    }

    /// Waits for the first snapshot.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<Arc<ClusterMetadata>, ClientError> {
        self.wait_until(timeout, ClusterMetadata::is_received).await.map_err(|_| self.shared.unreachable())
    }

    /// Waits until the topic exists and every partition has a leader whose
    /// address is known.
    pub async fn wait_for_topic(&self, topic: &str, timeout: Duration) -> Result<TopicMetadata, ClientError> {
        let led = |m: &ClusterMetadata| {
            m.topic(topic).is_some_and(|t| {
                t.all_led() && t.partitions.iter().all(|p| p.leader.is_some_and(|l| m.brokers.contains_key(&l)))
            })
        };
        match self.wait_until(timeout, led).await {
            Ok(m) => m.topic(topic).cloned().ok_or_else(|| ClientError::UnknownTopicOrPartition(topic.to_string())),
            Err(m) if !m.is_received() => Err(self.shared.unreachable()),
            Err(m) => Err(match m.topics.get(topic) {
                None => ClientError::UnknownTopicOrPartition(format!("topic {topic} does not exist")),
                Some(TopicMetadata { error: Some(e), .. }) => e.clone(),
                Some(_) => ClientError::LeaderNotAvailable(format!(
                    "topic {topic} has partitions without a leader after {timeout:?}"
                )),
            }),
        }
    }

    /// Asks the watch task to check another broker for newer metadata. Call
    /// it when a broker refuses a request in a way that says our metadata
    /// is stale; the stream broker itself may be the one lagging behind
    /// (say, cut off from the ensemble while still up). Cheap; repeated
    /// calls coalesce.
    pub fn request_refresh(&self) {
        self.shared.refresh.notify_one();
    }

    /// The error that says no broker could be reached, naming the addresses
    /// tried and why each failed.
    pub fn unreachable_error(&self) -> ClientError {
        self.shared.unreachable()
    }

    /// The cached channel to `addr` (`host:port`).
    pub fn channel(&self, addr: &str) -> Result<Channel, ClientError> {
        self.shared.channel(addr)
    }

    /// A `Broker` service client on the cached channel to `addr`.
    pub fn broker_client(&self, addr: &str) -> Result<BrokerClient<Channel>, ClientError> {
        self.shared.broker_client(addr)
    }

    /// An `Admin` service client on the cached channel to `addr`.
    pub fn admin_client(&self, addr: &str) -> Result<AdminRpcClient<Channel>, ClientError> {
        let max = self.shared.config.max_message_size;
        Ok(AdminRpcClient::new(self.shared.channel(addr)?)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max))
    }

    /// A `Groups` service client on the cached channel to `addr`.
    pub fn groups_client(&self, addr: &str) -> Result<GroupsClient<Channel>, ClientError> {
        let max = self.shared.config.max_message_size;
        Ok(GroupsClient::new(self.shared.channel(addr)?).max_decoding_message_size(max).max_encoding_message_size(max))
    }

    /// Addresses to try for a call any broker can answer: the controller
    /// first (admin calls end up there), then the other brokers starting at
    /// a rotating position, then bootstrap addresses not yet listed.
    pub fn brokers_to_try(&self) -> Vec<String> {
        let snapshot = self.current();
        let mut out: Vec<String> = Vec::new();
        if let Some(addr) = snapshot.controller_id.and_then(|id| snapshot.broker_addr(id)) {
            out.push(addr.to_string());
        }
        let mut rest = self.shared.candidates();
        if !rest.is_empty() {
            let start = self.shared.cursor.fetch_add(1, Ordering::Relaxed) % rest.len();
            rest.rotate_left(start);
        }
        for addr in rest {
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
        out
    }

    /// Asks brokers for the metadata of `topics` (every topic when empty)
    /// with a unary call, trying brokers in turn until one answers. Unlike
    /// [`current`](Self::current) this is a fresh read; it also publishes
    /// the answer if it is newer than the watched snapshot.
    pub async fn fetch(&self, topics: &[String]) -> Result<MetadataResponse, ClientError> {
        let mut last = None;
        for addr in self.brokers_to_try() {
            let mut client = self.broker_client(&addr)?;
            let call = client.metadata(MetadataRequest { topics: topics.to_vec() });
            match tokio::time::timeout(self.shared.config.request_timeout, call).await {
                Ok(Ok(response)) => {
                    let response = response.into_inner();
                    if topics.is_empty() {
                        self.shared.publish(ClusterMetadata::from_response(response.clone()));
                    }
                    return Ok(response);
                }
                Ok(Err(status)) => {
                    let error = ClientError::from_status(&status, &addr);
                    if !error.is_retriable() {
                        return Err(error);
                    }
                    self.shared.record_failure(&addr, &error.to_string());
                    last = Some(error);
                }
                Err(_) => {
                    let error = ClientError::RequestTimedOut(format!("no metadata from {addr}"));
                    self.shared.record_failure(&addr, &error.to_string());
                    last = Some(error);
                }
            }
        }
        Err(match last {
            Some(ClientError::Unreachable(_)) | None => self.shared.unreachable(),
            Some(other) => other,
        })
    }
}

/// Least time between two refreshes triggered by [`MetadataClient::request_refresh`].
const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(200);

/// Why a watch stream ended.
enum StreamEnd {
    /// The stream delivered at least one snapshot before it ended.
    AfterData(String),
    /// It never delivered anything.
    Failed(String),
    /// Another broker serves newer metadata; this one is stuck.
    Stale,
}

/// Keeps one `WatchMetadata` stream open, moving to another broker when it
/// breaks, with exponential backoff once every broker has failed in a row.
async fn watch_loop(shared: Arc<Shared>) {
    let mut backoff = shared.config.reconnect_backoff;
    let mut failures_in_a_row = 0usize;
    let mut next = shared.cursor.load(Ordering::Relaxed);
    loop {
        let candidates = shared.candidates();
        if candidates.is_empty() {
            // Not reachable: `detached` refuses an empty bootstrap list.
            return;
        }
        let addr = candidates[next % candidates.len()].clone();
        next = next.wrapping_add(1);
        match stream_from(&shared, &addr).await {
            StreamEnd::AfterData(why) => {
                info!(broker = %addr, reason = %why, "metadata stream ended; moving to another broker");
                shared.record_failure(&addr, &why);
                failures_in_a_row = 0;
                backoff = shared.config.reconnect_backoff;
            }
            StreamEnd::Stale => {
                warn!(broker = %addr, "broker serves stale metadata; moving the stream to another broker");
                shared.record_failure(&addr, "served stale metadata");
                failures_in_a_row = 0;
            }
            StreamEnd::Failed(why) => {
                debug!(broker = %addr, error = %why, "metadata stream failed");
                shared.record_failure(&addr, &why);
                failures_in_a_row += 1;
                if failures_in_a_row >= candidates.len() {
                    // Every broker failed in a row: pause before another
                    // round, with jitter so clients do not reconnect in step.
                    failures_in_a_row = 0;
                    let jitter = rand::rng().random_range(0.5..1.0);
                    tokio::time::sleep(backoff.mul_f64(jitter)).await;
                    backoff = (backoff * 2).min(shared.config.reconnect_backoff_max);
                    warn!(error = %shared.unreachable(), "retrying");
                }
            }
        }
        lock(&shared.link).streaming_from = None;
    }
}

/// Streams metadata from `addr` until the stream ends or goes stale. Handles
/// refresh requests meanwhile.
async fn stream_from(shared: &Arc<Shared>, addr: &str) -> StreamEnd {
    let mut client = match shared.broker_client(addr) {
        Ok(c) => c,
        Err(e) => return StreamEnd::Failed(e.to_string()),
    };
    let open = client.watch_metadata(MetadataRequest::default());
    let mut stream = match tokio::time::timeout(shared.config.request_timeout, open).await {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) => return StreamEnd::Failed(ClientError::from_status(&status, addr).to_string()),
        Err(_) => return StreamEnd::Failed("timed out opening the metadata stream".into()),
    };
    {
        let mut link = lock(&shared.link);
        link.streaming_from = Some(addr.to_string());
        link.stream_revision = 0;
    }
    let mut received = false;
    // When another broker first showed a revision newer than this stream's.
    let mut behind_since: Option<Instant> = None;
    let mut last_refresh: Option<Instant> = None;
    let mut tick = tokio::time::interval(shared.config.stale_stream_after.max(Duration::from_millis(100)) / 2);
    loop {
        tokio::select! {
            message = stream.message() => match message {
                Ok(Some(response)) => {
                    let metadata = ClusterMetadata::from_response(response);
                    let revision = metadata.revision;
                    if !received {
                        info!(broker = %addr, revision, "metadata stream open");
                        lock(&shared.link).failures.clear();
                    }
                    received = true;
                    lock(&shared.link).stream_revision = revision;
                    if shared.publish(metadata) {
                        debug!(broker = %addr, revision, "metadata updated");
                    }
                }
                Ok(None) => return end(received, "the broker closed the stream".into()),
                Err(status) => return end(received, ClientError::from_status(&status, addr).to_string()),
            },
            _ = shared.refresh.notified() => {
                // Many partitions can fail at once; one look elsewhere per
                // interval is enough.
                if last_refresh.is_none_or(|t| t.elapsed() >= MIN_REFRESH_INTERVAL) {
                    last_refresh = Some(Instant::now());
                    spawn_refresh(shared, addr);
                }
            }
            _ = tick.tick() => {
                let published = shared.snapshot.borrow().revision;
                let ours = lock(&shared.link).stream_revision;
                if received && ours < published {
                    let since = *behind_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= shared.config.stale_stream_after {
                        return StreamEnd::Stale;
                    }
                } else {
                    behind_since = None;
                }
            }
        }
    }
}

fn end(received: bool, why: String) -> StreamEnd {
    if received { StreamEnd::AfterData(why) } else { StreamEnd::Failed(why) }
}

/// Reads metadata once from a broker other than the stream's, in the
/// background, and publishes it if newer.
fn spawn_refresh(shared: &Arc<Shared>, streaming_from: &str) {
    let candidates: Vec<String> = shared.candidates().into_iter().filter(|a| a != streaming_from).collect();
    if candidates.is_empty() {
        return;
    }
    let addr = candidates[shared.cursor.fetch_add(1, Ordering::Relaxed) % candidates.len()].clone();
    let shared = shared.clone();
    tokio::spawn(async move {
        match shared.fetch_metadata(&addr).await {
            Ok(metadata) => {
                let revision = metadata.revision;
                if shared.publish(metadata) {
                    info!(broker = %addr, revision, "refresh found newer metadata than the stream");
                }
            }
            Err(e) => debug!(broker = %addr, error = %e, "metadata refresh failed"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_cluster::FakeCluster;

    fn quick() -> MetadataConfig {
        MetadataConfig {
            bootstrap_timeout: Duration::from_secs(5),
            reconnect_backoff: Duration::from_millis(10),
            reconnect_backoff_max: Duration::from_millis(100),
            ..MetadataConfig::default()
        }
    }

    fn response(revision: u64, leader: i32) -> MetadataResponse {
        use strata_proto::broker::{BrokerInfo, PartitionMetadata as P, TopicMetadata as T};
        MetadataResponse {
            brokers: vec![BrokerInfo { id: 1, addr: "http://h1:1 ".into(), rack: "r".into() }],
            controller_id: -1,
            topics: vec![T {
                name: "t".into(),
                partitions: vec![
                    P { partition: 1, leader: -1, ..Default::default() },
                    P { partition: 0, leader, ..Default::default() },
                ],
                ..Default::default()
            }],
            revision,
        }
    }

    #[test]
    fn bootstrap_lists_are_parsed_forgivingly() {
        assert_eq!(parse_bootstrap(" a:1, http://b:2/ ,,c:3"), ["a:1", "b:2", "c:3"]);
        assert!(matches!(MetadataClient::detached::<&str>(&[], quick()), Err(ClientError::InvalidArgument(_))));
        assert!(matches!(MetadataClient::detached(&[" , "], quick()), Err(ClientError::InvalidArgument(_))));
        let client = MetadataClient::detached(&["a:1,b:2", "a:1"], quick()).expect("valid");
        assert_eq!(client.bootstrap(), ["a:1", "b:2"]);
    }

    #[test]
    fn a_response_is_indexed() {
        let m = ClusterMetadata::from_response(response(3, 1));
        assert!(m.is_received());
        assert_eq!(m.controller_id, None);
        assert_eq!(m.broker_addr(1), Some("h1:1"), "addresses are normalized");
        assert_eq!(m.partition_count("t"), Some(2));
        assert_eq!(m.leader_for("t", 0), Some((1, "h1:1")));
        assert_eq!(m.leader_for("t", 1), None, "leader -1 is none");
        assert_eq!(m.leader_for("t", 2), None);
        assert_eq!(
            m.topic("t").map(|t| t.partitions.iter().map(|p| p.partition).collect::<Vec<_>>()),
            Some(vec![0, 1])
        );
        assert!(!ClusterMetadata::default().is_received());
    }

    #[tokio::test]
    async fn older_revisions_never_replace_newer_ones() {
        let client = MetadataClient::detached(&["h1:1"], quick()).expect("valid");
        assert!(client.publish(ClusterMetadata::from_response(response(5, 1))));
        assert!(!client.publish(ClusterMetadata::from_response(response(4, -1))), "older is ignored");
        assert_eq!(client.leader_for("t", 0), Some((1, "h1:1".to_string())));
        assert!(!client.publish(ClusterMetadata::from_response(response(5, 1))), "the same is no change");
        assert!(client.publish(ClusterMetadata::from_response(response(6, -1))));
        assert_eq!(client.leader_for("t", 0), None);
    }

    #[tokio::test]
    async fn no_broker_reachable_names_the_addresses_tried() {
        // A port that was free a moment ago: nothing listens there.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        drop(listener);
        let config = MetadataConfig { bootstrap_timeout: Duration::from_millis(300), ..quick() };
        let error = MetadataClient::connect(&[addr.as_str()], config).await.expect_err("nothing listens");
        let ClientError::Unreachable(message) = &error else { panic!("unexpected {error:?}") };
        assert!(message.contains(&addr), "{message}");
        assert!(message.contains("strata dev"), "{message}");
        assert!(error.is_retriable());
    }

    #[tokio::test]
    async fn follows_the_cluster_and_waits_for_topics() {
        let cluster = FakeCluster::start(2).await;
        let client = MetadataClient::connect(&cluster.bootstrap(), quick()).await.expect("connects");
        assert_eq!(client.current().brokers.len(), 2);
        assert!(client.partition_count("t").is_none());

        let waiter = {
            let client = client.clone();
            tokio::spawn(async move { client.wait_for_topic("t", Duration::from_secs(5)).await })
        };
        cluster.create_topic("t", &[1, 2]);
        let topic = waiter.await.expect("task").expect("topic appears");
        assert_eq!(topic.partitions.len(), 2);
        assert_eq!(client.leader_for("t", 1), Some((2, cluster.addr(2))));

        let mut rx = client.subscribe();
        rx.borrow_and_update();
        cluster.move_leader("t", 1, 1, true);
        tokio::time::timeout(Duration::from_secs(5), rx.changed()).await.expect("pushed").expect("open");
        assert_eq!(client.leader_for("t", 1), Some((1, cluster.addr(1))));

        let missing = client.wait_for_topic("nope", Duration::from_millis(100)).await;
        assert!(matches!(missing, Err(ClientError::UnknownTopicOrPartition(_))), "{missing:?}");
    }

    #[tokio::test]
    async fn the_stream_moves_to_another_broker_when_its_broker_dies() {
        let cluster = FakeCluster::start(3).await;
        cluster.create_topic("t", &[1]);
        let client = MetadataClient::connect(&cluster.bootstrap(), quick()).await.expect("connects");
        let deadline = Instant::now() + Duration::from_secs(5);
        let streaming = loop {
            if let Some(addr) = client.streaming_from() {
                break addr;
            }
            assert!(Instant::now() < deadline, "no stream opened");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let victim = (1..=3).find(|id| cluster.addr(*id) == streaming).expect("a fake broker");
        cluster.kill(victim);
        let survivor = (1..=3).find(|id| *id != victim).expect("another broker");
        cluster.move_leader("t", 0, survivor, true);
        let moved = client
            .wait_until(Duration::from_secs(5), |m| m.leader_for("t", 0).is_some_and(|(id, _)| id == survivor))
            .await;
        assert!(moved.is_ok(), "the change reached the client through another broker");
        let deadline = Instant::now() + Duration::from_secs(5);
        while client.streaming_from().is_none_or(|addr| addr == streaming) {
            assert!(Instant::now() < deadline, "no stream from a live broker");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!client.current().brokers.contains_key(&victim));
    }

    #[tokio::test]
    async fn a_broker_whose_stream_lags_is_found_out_and_left() {
        let cluster = FakeCluster::start(2).await;
        cluster.create_topic("t", &[1]);
        let config = MetadataConfig { stale_stream_after: Duration::from_millis(300), ..quick() };
        let client = MetadataClient::connect(&cluster.bootstrap(), config).await.expect("connects");
        let deadline = Instant::now() + Duration::from_secs(5);
        let streaming = loop {
            if let Some(addr) = client.streaming_from() {
                break addr;
            }
            assert!(Instant::now() < deadline, "no stream opened");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let stale = (1..=2).find(|id| cluster.addr(*id) == streaming).expect("a fake broker");
        cluster.freeze_stream(stale);
        cluster.move_leader("t", 0, 2, true);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(client.leader_for("t", 0).map(|(id, _)| id), Some(1), "the frozen stream hides the change");

        // A client that was refused asks for a look elsewhere.
        client.request_refresh();
        let moved = client.wait_until(Duration::from_secs(5), |m| m.leader_for("t", 0).is_some_and(|(id, _)| id == 2));
        assert!(moved.await.is_ok(), "the refresh found the change on the other broker");

        // Behind a revision another broker served, the stream moves on.
        let deadline = Instant::now() + Duration::from_secs(5);
        while client.streaming_from().as_deref() == Some(streaming.as_str()) || client.streaming_from().is_none() {
            assert!(Instant::now() < deadline, "still streaming from the stale broker");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
