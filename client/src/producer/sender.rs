//! The sender loop: moves ready batches from the accumulator to partition
//! leaders and reports each batch's outcome.
//!
//! One task per producer. Each round it takes the batches that are ready
//! (and retries that are due), groups them by the broker that leads their
//! partition according to the latest metadata snapshot, and sends one
//! `Produce` request per broker, up to `max_request_size` bytes and
//! `max_in_flight_per_broker` outstanding requests per broker.
//!
//! Invariant: a partition has at most one request in flight or one retry
//! pending, and nothing more is drained for it until that settles. A retried
//! batch therefore can never be overtaken by a later one, which keeps every
//! partition's records in order without idempotence.
//!
//! Idempotence. The sender first obtains a producer id (`InitProducerId`
//! from any broker, retried with backoff) and drains nothing until it has
//! one; the accumulator stamps every batch drained under it with the id, its
//! epoch and the partition's next base sequence. A retry resends the very
//! same bytes, so a broker that already appended the batch (its answer was
//! lost) recognises it and answers the original offset instead of appending
//! it twice.
//!
//! A batch that fails for good after it may have reached a broker (delivery
//! timeout or retries exhausted after a send, `OUT_OF_ORDER_SEQUENCE_NUMBER`,
//! `UNKNOWN_PRODUCER_ID`, `INVALID_PRODUCER_EPOCH`, or any final error that
//! leaves its fate unknown) may leave a hole in its partition's sequence
//! that nothing can fill: the broker would refuse every later batch as out
//! of order. The choice made here is the simplest correct one: drop the
//! identity and take a whole new producer id, under which every partition's
//! sequence starts again at 0, draining nothing until it arrives. It costs
//! one `InitProducerId` per such failure (rare), where Kafka bumps the epoch
//! and renumbers per partition. Around the switch:
//! - batches sent under the old identity and waiting for a retry keep it:
//!   their identical bytes are what lets the broker spot a duplicate. Their
//!   partition is blocked meanwhile, so its first batch under the new
//!   identity is drained only after they settle, and starts at sequence 0;
//! - the failure of a batch that carries an identity already dropped does
//!   not drop the new one: the new sequences have no hole;
//! - batches stamped but never sent (only those parked for want of a leader)
//!   give their sequences back when parked and are re-stamped (header and
//!   CRC rewritten, records untouched) with the then current identity when
//!   they finally go;
//! - a batch the broker refused outright on its first send (too large,
//!   corrupt, ...) was not appended, so its sequences are handed out again
//!   rather than spending the identity.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use rand::Rng;
use strata_proto::broker::{ProducePartition, ProducePartitionResponse, ProduceRequest, ProduceTopic};
use tokio::sync::watch;
use tracing::{debug, info};

use super::accumulator::RecordAccumulator;
use super::batch::{BatchAck, ReadyBatch};
use super::error::ProduceError;
use super::sequence::ProducerIdentity;
use super::transport::{Acks, ProduceTransport};
use crate::error::ClientError;
use crate::metadata::{ClusterMetadata, MetadataClient};

/// How much longer than the broker-side timeout the client waits for an
/// answer: the broker answers `REQUEST_TIMED_OUT` itself at its timeout, and
/// that answer needs time to travel back.
const ANSWER_MARGIN: Duration = Duration::from_secs(1);

/// The sender's share of the producer configuration.
#[derive(Debug, Clone)]
pub(crate) struct SenderConfig {
    pub(crate) acks: Acks,
    pub(crate) retries: u32,
    pub(crate) retry_backoff: Duration,
    pub(crate) retry_backoff_max: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) max_in_flight_per_broker: usize,
    pub(crate) max_request_size: usize,
    pub(crate) delivery_timeout: Duration,
    /// Stamp batches with a producer id and sequences.
    pub(crate) idempotent: bool,
}

/// Now on Tokio's clock, as the `std` instant the accumulator works in.
/// Under a paused test clock this is the paused time, so linger, backoff
/// and delivery timeouts can be tested without waiting.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Ready batches of one partition that travel together, oldest first.
#[derive(Debug)]
pub(crate) struct PartitionBatches {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: u32,
    pub(crate) batches: Vec<ReadyBatch>,
    /// How many times these batches have been sent.
    pub(crate) attempts: u32,
    /// The batches gave their sequences back (parked before their first
    /// send) and must be re-stamped before they go.
    pub(crate) unstamped: bool,
}

impl PartitionBatches {
    fn bytes(&self) -> usize {
        self.batches.iter().map(|b| b.bytes().len()).sum()
    }

    /// The identity the batches carry (all of them carry the same: they
    /// were drained, or re-stamped, together).
    fn identity(&self) -> Option<ProducerIdentity> {
        if self.unstamped {
            return None;
        }
        self.batches.first().and_then(ReadyBatch::identity)
    }

    /// Reports success. The broker gives the first record of the first
    /// batch `base_offset` and appends a partition's batches of one request
    /// back to back, so each later batch starts where the previous ended.
    fn complete(self, base_offset: i64, log_append_time: Option<i64>) {
        let mut next = base_offset;
        for batch in self.batches {
            // A negative base offset means the broker reported none
            // (acks=0); every batch then reports none.
            let offset = if base_offset < 0 { -1 } else { next };
            next = next.saturating_add(i64::from(batch.record_count()));
            batch.complete(Ok(BatchAck { base_offset: offset, log_append_time }));
        }
    }

    fn fail(self, error: &ProduceError) {
        for batch in self.batches {
            batch.complete(Err(error.clone()));
        }
    }

    /// Fails the batches older than the delivery timeout (a prefix, since
    /// batches are oldest first). Returns whether any failed, and the rest,
    /// if any.
    fn expire(mut self, now: Instant, timeout: Duration) -> (bool, Option<PartitionBatches>) {
        let expired = self.batches.iter().take_while(|b| now.saturating_duration_since(b.created()) >= timeout).count();
        for batch in self.batches.drain(..expired) {
            batch.complete(Err(ProduceError::Timeout(timeout)));
        }
        (expired > 0, (!self.batches.is_empty()).then_some(self))
    }

    /// When the oldest batch reaches the delivery timeout.
    fn expires_at(&self, timeout: Duration) -> Option<Instant> {
        self.batches.first().map(|b| b.created() + timeout)
    }
}

/// Groups drained batches by partition (keeping their order) and then by
/// the broker leading each partition in `metadata`. Partitions without a
/// known leader come back separately.
pub(crate) fn group_by_leader(
    batches: Vec<ReadyBatch>,
    metadata: &ClusterMetadata,
) -> (BTreeMap<String, Vec<PartitionBatches>>, Vec<PartitionBatches>) {
    let mut parts: Vec<PartitionBatches> = Vec::new();
    let mut index: HashMap<(Arc<str>, u32), usize> = HashMap::new();
    for batch in batches {
        let key = (batch.topic.clone(), batch.partition);
        match index.get(&key) {
            Some(&i) => parts[i].batches.push(batch),
            None => {
                index.insert(key.clone(), parts.len());
                parts.push(PartitionBatches {
                    topic: key.0,
                    partition: key.1,
                    batches: vec![batch],
                    attempts: 0,
                    unstamped: false,
                });
            }
        }
    }
    let mut routed: BTreeMap<String, Vec<PartitionBatches>> = BTreeMap::new();
    let mut leaderless = Vec::new();
    for part in parts {
        match metadata.leader_for(&part.topic, part.partition) {
            Some((_, addr)) => routed.entry(addr.to_string()).or_default().push(part),
            None => leaderless.push(part),
        }
    }
    (routed, leaderless)
}

/// Concatenates a partition's batches into the `records` of one
/// `ProducePartition` (a single batch is not copied).
fn records_of(batches: &[ReadyBatch]) -> Bytes {
    if let [only] = batches {
        return only.bytes().clone();
    }
    let mut buf = BytesMut::with_capacity(batches.iter().map(|b| b.bytes().len()).sum());
    for b in batches {
        buf.extend_from_slice(b.bytes());
    }
    buf.freeze()
}

/// The `Produce` request carrying `parts`, topics in first-seen order.
pub(crate) fn build_request(acks: Acks, timeout: Duration, parts: &[PartitionBatches]) -> ProduceRequest {
    let mut topics: Vec<ProduceTopic> = Vec::new();
    for part in parts {
        let partition = ProducePartition { partition: part.partition, records: records_of(&part.batches) };
        match topics.iter_mut().find(|t| *t.topic == *part.topic) {
            Some(t) => t.partitions.push(partition),
            None => topics.push(ProduceTopic { topic: part.topic.to_string(), partitions: vec![partition] }),
        }
    }
    ProduceRequest {
        topics,
        acks: acks.to_wire() as i32,
        timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
    }
}

/// What to do with a partition's batches after an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Appended { base_offset: i64, log_append_time: Option<i64> },
    Retry(ClientError),
    Fail(ClientError),
}

/// Whether a failure of `topic`/`partition` is worth retrying.
/// `UNKNOWN_TOPIC_OR_PARTITION` is, while our metadata still lists the
/// partition: the leader just has not caught up with a topic created a
/// moment ago. Once the metadata drops it, the topic is gone.
pub(crate) fn classify(error: ClientError, metadata: &ClusterMetadata, topic: &str, partition: u32) -> Verdict {
    let listed = || metadata.partition_count(topic).is_some_and(|n| partition < n);
    match error {
        ClientError::UnknownTopicOrPartition(_) if listed() => Verdict::Retry(error),
        e if e.is_retriable() => Verdict::Retry(e),
        e => Verdict::Fail(e),
    }
}

/// The verdict on one partition of a `Produce` answer.
pub(crate) fn judge(
    answer: Option<&ProducePartitionResponse>,
    metadata: &ClusterMetadata,
    topic: &str,
    partition: u32,
) -> Verdict {
    let Some(answer) = answer else {
        // Sending again could append the batches twice; the caller learns
        // instead that the broker misbehaved.
        return Verdict::Fail(ClientError::Other {
            code: 0,
            message: format!("the broker's answer left out {topic}-{partition}"),
        });
    };
    match ClientError::from_partition_error(answer.error.as_ref()) {
        None => Verdict::Appended {
            base_offset: answer.base_offset,
            log_append_time: (answer.log_append_time >= 0).then_some(answer.log_append_time),
        },
        Some(error) => classify(error, metadata, topic, partition),
    }
}

/// Final errors with which a broker refuses a partition's records before
/// appending any of them.
fn refused_outright(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::MessageTooLarge(_)
            | ClientError::CorruptRecord(_)
            | ClientError::InvalidRequest(_)
            | ClientError::InvalidTopic(_)
            | ClientError::UnknownTopicOrPartition(_)
    )
}

/// Where the sender stands with its idempotent producer id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdState {
    /// Not idempotent: batches carry no producer id.
    Disabled,
    /// A (new) producer id is needed; the next `InitProducerId` may go at
    /// `not_before`. `failures` counts failed calls in a row.
    Needed { failures: u32, not_before: Instant },
    /// An `InitProducerId` call is under way.
    Requesting { failures: u32 },
    /// Batches drained now carry this identity.
    Ready(ProducerIdentity),
}

/// Batches waiting to be sent again.
#[derive(Debug)]
struct Retry {
    part: PartitionBatches,
    error: ClientError,
    /// Metadata revision when the batches failed.
    revision: u64,
    /// The broker the failed send went to, if it got that far.
    sent_to: Option<String>,
    /// When the backoff ends.
    not_before: Instant,
}

impl Retry {
    /// Due once its backoff has passed, or as soon as newer metadata arrives
    /// after an error that said ours was stale: a leader change is pushed
    /// on the metadata stream, so there is no need to poll for it. The
    /// change may also have come in before the failure was seen (the old
    /// leader died mid-request): then the metadata already names another
    /// leader than the one the send went to, and the retry goes at once.
    fn due(&self, now: Instant, metadata: &ClusterMetadata) -> bool {
        if now >= self.not_before {
            return true;
        }
        if !self.error.is_stale_metadata() {
            return false;
        }
        let moved = self.sent_to.as_deref().is_some_and(|sent_to| {
            metadata.leader_for(&self.part.topic, self.part.partition).is_some_and(|(_, addr)| addr != sent_to)
        });
        metadata.revision > self.revision || moved
    }
}

/// The end of one request.
struct Outcome {
    addr: String,
    parts: Vec<PartitionBatches>,
    result: Result<strata_proto::broker::ProduceResponse, ClientError>,
}

pub(crate) struct Sender<T> {
    acc: RecordAccumulator,
    transport: Arc<T>,
    metadata: MetadataClient,
    config: SenderConfig,
    /// Partitions with a request in flight or a retry pending.
    blocked: HashMap<Arc<str>, HashSet<u32>>,
    retries: Vec<Retry>,
    /// Outstanding requests per broker address.
    in_flight: HashMap<String, usize>,
    requests: FuturesUnordered<BoxFuture<'static, Outcome>>,
    id_state: IdState,
    /// The `InitProducerId` call under way, if any (at most one).
    init: FuturesUnordered<BoxFuture<'static, Result<ProducerIdentity, ClientError>>>,
    done: watch::Sender<bool>,
}

impl<T: ProduceTransport> Sender<T> {
    pub(crate) fn new(
        acc: RecordAccumulator,
        transport: Arc<T>,
        metadata: MetadataClient,
        mut config: SenderConfig,
        done: watch::Sender<bool>,
    ) -> Sender<T> {
        // Zero would never send anything.
        config.max_in_flight_per_broker = config.max_in_flight_per_broker.max(1);
        let id_state =
            if config.idempotent { IdState::Needed { failures: 0, not_before: now() } } else { IdState::Disabled };
        acc.set_producer_identity(None);
        Sender {
            acc,
            transport,
            metadata,
            config,
            blocked: HashMap::new(),
            retries: Vec::new(),
            in_flight: HashMap::new(),
            requests: FuturesUnordered::new(),
            id_state,
            init: FuturesUnordered::new(),
            done,
        }
    }

    /// Runs until the accumulator is closed and every batch has completed.
    pub(crate) async fn run(mut self) {
        let mut metadata_rx = self.metadata.subscribe();
        let mut metadata_open = true;
        loop {
            let now = now();
            self.acc.expire(now);
            self.expire_retries(now);
            let metadata = metadata_rx.borrow_and_update().clone();
            self.request_identity(now);
            self.round(now, &metadata);
            if self.acc.is_closed() && self.acc.incomplete_batches() == 0 && self.requests.is_empty() {
                break;
            }
            let wake = self.next_wakeup(now, &metadata);
            tokio::select! {
                Some(outcome) = self.requests.next(), if !self.requests.is_empty() => self.handle(outcome),
                Some(identity) = self.init.next(), if !self.init.is_empty() => self.identity_arrived(identity),
                () = self.acc.changed() => {}
                () = sleep(wake), if wake.is_some() => {}
                changed = metadata_rx.changed(), if metadata_open => metadata_open = changed.is_ok(),
            }
        }
        debug!("producer sender finished");
        let _ = self.done.send(true);
    }

    fn is_blocked(&self, topic: &str, partition: u32) -> bool {
        self.blocked.get(topic).is_some_and(|ps| ps.contains(&partition))
    }

    fn block(&mut self, topic: &Arc<str>, partition: u32) {
        self.blocked.entry(topic.clone()).or_default().insert(partition);
    }

    fn unblock(&mut self, topic: &str, partition: u32) {
        if let Some(ps) = self.blocked.get_mut(topic) {
            ps.remove(&partition);
            if ps.is_empty() {
                self.blocked.remove(topic);
            }
        }
    }

    /// Whether batches may be drained (and stamped) now: not while an
    /// idempotent producer waits for its producer id.
    fn may_drain(&self) -> bool {
        matches!(self.id_state, IdState::Disabled | IdState::Ready(_))
    }

    /// Whether an `InitProducerId` call should go out once its backoff
    /// ends: always the first time, and after a failure only while records
    /// wait for it.
    fn identity_wanted(&self) -> Option<Instant> {
        match self.id_state {
            IdState::Needed { failures, not_before } if failures == 0 || self.acc.incomplete_batches() > 0 => {
                Some(not_before)
            }
            _ => None,
        }
    }

    fn request_identity(&mut self, now: Instant) {
        let IdState::Needed { failures, .. } = self.id_state else {
            return;
        };
        if self.identity_wanted().is_none_or(|at| now < at) {
            return;
        }
        self.id_state = IdState::Requesting { failures };
        let transport = self.transport.clone();
        let timeout = self.config.request_timeout;
        self.init.push(Box::pin(async move { transport.init_producer_id(timeout).await }));
    }

    fn identity_arrived(&mut self, result: Result<ProducerIdentity, ClientError>) {
        match result {
            Ok(identity) => {
                debug!(producer_id = identity.producer_id, epoch = identity.epoch, "obtained a producer id");
                // A new identity restarts every partition's sequence at 0.
                self.acc.set_producer_identity(Some(identity));
                self.id_state = IdState::Ready(identity);
            }
            Err(error) => {
                let failures = match self.id_state {
                    IdState::Requesting { failures } => failures.saturating_add(1),
                    _ => 1,
                };
                let not_before = now() + self.backoff(failures);
                debug!(%error, failures, "no producer id yet; records wait for one");
                self.id_state = IdState::Needed { failures, not_before };
            }
        }
    }

    /// Drops the current identity if batches carrying it failed in a way
    /// that may leave a hole in a partition's sequence; a new producer id is
    /// requested at once and nothing is drained until it arrives.
    fn lose_identity(&mut self, carried: Option<ProducerIdentity>, why: &dyn std::fmt::Display) {
        if let (IdState::Ready(current), Some(carried)) = (self.id_state, carried)
            && current == carried
        {
            info!(
                producer_id = current.producer_id,
                epoch = current.epoch,
                reason = %why,
                "a batch failed for good; taking a new producer id"
            );
            // `None` also makes sure the next identity resets every
            // sequence, even if a broker handed out the same one again.
            self.acc.set_producer_identity(None);
            self.id_state = IdState::Needed { failures: 0, not_before: now() };
        }
    }

    /// The sequence bookkeeping after batches failed for good: a refusal on
    /// their only send hands their sequences out again; anything else may
    /// have left a hole and spends their identity.
    fn after_final_failure(&mut self, part: &PartitionBatches, error: &ClientError, answered: bool) {
        let Some(identity) = part.identity() else {
            return;
        };
        if answered && part.attempts == 1 && refused_outright(error) {
            if let Some(first) = part.batches.first() {
                self.acc.rewind_sequence(&part.topic, part.partition, identity, first.base_sequence());
            }
        } else {
            self.lose_identity(Some(identity), error);
        }
    }

    /// Batches parked before their first send give their sequences back, so
    /// that whatever happens to them meanwhile (expiry, a new identity)
    /// leaves no hole; they are re-stamped when they go.
    fn unstamp(&self, part: &mut PartitionBatches) {
        if let (Some(identity), Some(first)) = (part.identity(), part.batches.first()) {
            self.acc.rewind_sequence(&part.topic, part.partition, identity, first.base_sequence());
            part.unstamped = true;
        }
    }

    /// Stamps parked batches with the current identity and fresh
    /// sequences. On failure (impossible for batches this producer built)
    /// the sequences are given back and the batches fail.
    fn restamp(&self, mut part: PartitionBatches) -> Option<PartitionBatches> {
        if !part.unstamped {
            return Some(part);
        }
        let mut failure = None;
        for batch in &mut part.batches {
            if let Err(e) = self.acc.restamp(batch) {
                failure = Some(e);
                break;
            }
        }
        match failure {
            None => {
                part.unstamped = false;
                Some(part)
            }
            Some(e) => {
                if let Some(first) = part.batches.first()
                    && let Some(identity) = first.identity()
                {
                    self.acc.rewind_sequence(&part.topic, part.partition, identity, first.base_sequence());
                }
                part.fail(&ProduceError::Encode(e));
                None
            }
        }
    }

    fn has_capacity(&self, addr: &str) -> bool {
        self.in_flight.get(addr).copied().unwrap_or(0) < self.config.max_in_flight_per_broker
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let exp = attempts.saturating_sub(1).min(16);
        let base = self.config.retry_backoff.saturating_mul(1 << exp).min(self.config.retry_backoff_max);
        // Jitter keeps producers that failed together from retrying in step.
        base.mul_f64(rand::rng().random_range(0.8..1.2))
    }

    /// Builds and sends this round's requests: due retries first (they hold
    /// the oldest batches of their partitions), then newly ready batches.
    fn round(&mut self, now: Instant, metadata: &ClusterMetadata) {
        let mut requests: BTreeMap<String, Vec<PartitionBatches>> = BTreeMap::new();
        let mut waiting = Vec::new();
        for mut retry in std::mem::take(&mut self.retries) {
            // Batches that gave their sequences back wait for an identity
            // to be stamped with.
            if !retry.due(now, metadata) || (retry.part.unstamped && !self.may_drain()) {
                waiting.push(retry);
                continue;
            }
            match metadata.leader_for(&retry.part.topic, retry.part.partition) {
                Some((_, addr)) if self.has_capacity(addr) => {
                    let (topic, partition) = (retry.part.topic.clone(), retry.part.partition);
                    let Some(part) = self.restamp(retry.part) else {
                        self.unblock(&topic, partition);
                        continue;
                    };
                    retry.part = part;
                    debug!(
                        topic = %retry.part.topic,
                        partition = retry.part.partition,
                        broker = addr,
                        attempt = retry.part.attempts + 1,
                        error = %retry.error,
                        "retrying batches"
                    );
                    requests.entry(addr.to_string()).or_default().push(retry.part);
                }
                // The broker is busy; a completion wakes the loop.
                Some(_) => waiting.push(retry),
                None if metadata.is_received()
                    && metadata.partition_count(&retry.part.topic).is_none_or(|n| retry.part.partition >= n) =>
                {
                    // The topic (or partition) is gone from the cluster:
                    // waiting longer cannot help.
                    self.unblock(&retry.part.topic, retry.part.partition);
                    let error = ClientError::UnknownTopicOrPartition(format!(
                        "{}-{} is no longer in the cluster metadata ({})",
                        retry.part.topic, retry.part.partition, retry.error
                    ));
                    // Sent before, so perhaps appended: no reuse of their
                    // sequences. (Parked batches hold none.)
                    self.lose_identity(retry.part.identity(), &error);
                    retry.part.fail(&ProduceError::Broker(error));
                }
                None => {
                    // No leader yet: wait for the metadata to name one, or
                    // for another backoff.
                    retry.revision = metadata.revision;
                    retry.not_before = now + self.backoff(retry.part.attempts);
                    waiting.push(retry);
                }
            }
        }
        self.retries = waiting;

        let max_bytes = self.config.max_request_size;
        let mut used: HashMap<String, usize> = requests
            .iter()
            .map(|(addr, parts)| (addr.clone(), parts.iter().map(PartitionBatches::bytes).sum()))
            .collect();
        let may_drain = self.may_drain();
        let drained = self.acc.drain_while(now, |topic, partition, size| {
            if !may_drain {
                return false;
            }
            if self.is_blocked(topic, partition) {
                return false;
            }
            let Some((_, addr)) = metadata.leader_for(topic, partition) else {
                return false;
            };
            if !self.has_capacity(addr) {
                return false;
            }
            let used = used.entry(addr.to_string()).or_default();
            // The first batch of a request always goes, whatever its size:
            // the accumulator already refused records too large to send.
            if *used > 0 && used.saturating_add(size) > max_bytes {
                return false;
            }
            *used += size;
            true
        });
        let (routed, leaderless) = group_by_leader(drained, metadata);
        for (addr, parts) in routed {
            requests.entry(addr).or_default().extend(parts);
        }
        for mut part in leaderless {
            // Unreachable in practice: the drain only took partitions with a
            // leader in this same snapshot. Park them rather than lose them.
            self.block(&part.topic, part.partition);
            self.unstamp(&mut part);
            let error = ClientError::LeaderNotAvailable(format!("{}-{} has no leader", part.topic, part.partition));
            let not_before = now + self.backoff(1);
            self.retries.push(Retry { part, error, revision: metadata.revision, sent_to: None, not_before });
        }
        for (addr, parts) in requests {
            self.dispatch(addr, parts);
        }
    }

    fn dispatch(&mut self, addr: String, mut parts: Vec<PartitionBatches>) {
        for part in &mut parts {
            part.attempts += 1;
            let topic = part.topic.clone();
            self.block(&topic, part.partition);
        }
        *self.in_flight.entry(addr.clone()).or_default() += 1;
        let request = build_request(self.config.acks, self.config.request_timeout, &parts);
        let transport = self.transport.clone();
        let timeout = self.config.request_timeout + ANSWER_MARGIN;
        self.requests.push(Box::pin(async move {
            let result = transport.produce(&addr, request, timeout).await;
            Outcome { addr, parts, result }
        }));
    }

    fn handle(&mut self, outcome: Outcome) {
        let Outcome { addr, parts, result } = outcome;
        if let Some(n) = self.in_flight.get_mut(&addr) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_flight.remove(&addr);
            }
        }
        let metadata = self.metadata.current();
        let now = now();
        match result {
            Ok(response) => {
                let answers: HashMap<(&str, u32), &ProducePartitionResponse> = response
                    .topics
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(move |p| ((t.topic.as_str(), p.partition), p)))
                    .collect();
                for part in parts {
                    let answer = answers.get(&(&*part.topic, part.partition)).copied();
                    let verdict = judge(answer, &metadata, &part.topic, part.partition);
                    // Only an answer for the partition itself says what the
                    // broker did with the batches.
                    let answered = answer.is_some();
                    self.settle(part, verdict, answered, &addr, now, &metadata);
                }
            }
            Err(error) => {
                debug!(broker = %addr, %error, "produce request failed");
                for part in parts {
                    let verdict = classify(error.clone(), &metadata, &part.topic, part.partition);
                    self.settle(part, verdict, false, &addr, now, &metadata);
                }
            }
        }
    }

    /// Acts on the verdict on a partition's batches. `answered` says the
    /// broker's answer named the partition (so a refusal is known to have
    /// appended nothing).
    fn settle(
        &mut self,
        part: PartitionBatches,
        verdict: Verdict,
        answered: bool,
        addr: &str,
        now: Instant,
        metadata: &ClusterMetadata,
    ) {
        let error = match verdict {
            Verdict::Appended { base_offset, log_append_time } => {
                self.unblock(&part.topic, part.partition);
                part.complete(base_offset, log_append_time);
                return;
            }
            Verdict::Fail(error) => {
                self.unblock(&part.topic, part.partition);
                self.after_final_failure(&part, &error, answered);
                part.fail(&ProduceError::Broker(error));
                return;
            }
            Verdict::Retry(error) => error,
        };
        // `attempts` counts sends; `retries` counts sends after the first.
        if part.attempts > self.config.retries {
            self.unblock(&part.topic, part.partition);
            // An earlier send may have been appended.
            self.lose_identity(part.identity(), &error);
            part.fail(&ProduceError::Broker(error));
            return;
        }
        let (topic, partition, identity) = (part.topic.clone(), part.partition, part.identity());
        let (expired, rest) = part.expire(now, self.config.delivery_timeout);
        if expired {
            self.lose_identity(identity, &"delivery timeout after a send");
        }
        let Some(part) = rest else {
            self.unblock(&topic, partition);
            return;
        };
        if error.is_stale_metadata() {
            self.metadata.request_refresh();
        }
        debug!(%topic, partition, broker = addr, %error, attempts = part.attempts, "batches will be retried");
        let not_before = now + self.backoff(part.attempts);
        self.retries.push(Retry {
            part,
            error,
            revision: metadata.revision,
            sent_to: Some(addr.to_string()),
            not_before,
        });
    }

    fn expire_retries(&mut self, now: Instant) {
        let timeout = self.config.delivery_timeout;
        for retry in std::mem::take(&mut self.retries) {
            let (topic, partition, identity) = (retry.part.topic.clone(), retry.part.partition, retry.part.identity());
            let (expired, rest) = retry.part.expire(now, timeout);
            if expired {
                // `None` for parked batches: they hold no sequences.
                self.lose_identity(identity, &"delivery timeout after a send");
            }
            match rest {
                Some(part) => self.retries.push(Retry { part, ..retry }),
                None => self.unblock(&topic, partition),
            }
        }
    }

    /// How long the loop may sleep before something is due: a batch becomes
    /// ready for a partition it can send to, a retry's backoff ends, or a
    /// batch reaches its delivery timeout. Completions, new batches and
    /// metadata changes wake it on their own.
    fn next_wakeup(&self, now: Instant, metadata: &ClusterMetadata) -> Option<Duration> {
        let may_drain = self.may_drain();
        let sendable = |topic: &str, partition: u32| {
            may_drain
                && !self.is_blocked(topic, partition)
                && metadata.leader_for(topic, partition).is_some_and(|(_, addr)| self.has_capacity(addr))
        };
        let mut next = self.acc.next_deadline(now, sendable);
        let mut consider = |at: Instant| {
            let d = at.saturating_duration_since(now);
            next = Some(next.map_or(d, |n| n.min(d)));
        };
        for retry in &self.retries {
            if let Some(at) = retry.part.expires_at(self.config.delivery_timeout) {
                consider(at);
            }
            // A retry that is due but waits for a busy broker is woken by
            // that broker's next completion, not by time.
            if retry.not_before > now {
                consider(retry.not_before);
            }
        }
        if let Some(at) = self.identity_wanted() {
            consider(at);
        }
        next
    }
}

async fn sleep(wake: Option<Duration>) {
    if let Some(d) = wake {
        tokio::time::sleep(d).await;
    }
}
