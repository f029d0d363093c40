//! An in-process stand-in for a Strata cluster, for the client's tests: a
//! few brokers serving the real `Broker` and `Admin` gRPC services on
//! loopback over one shared in-memory state. Leadership, metadata pushes,
//! broker deaths and per-partition errors are under the test's control.
//!
//! It keeps what the client relies on (offsets assigned per batch, long-poll
//! fetches, `NOT_LEADER` with a hint, metadata pushed on every change,
//! producer ids and the de-duplication of idempotent batches on (producer
//! id, epoch, sequence)) and nothing else: no replication, no persistence.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::Stream;
use strata_proto::broker::admin_server::{Admin, AdminServer};
use strata_proto::broker::broker_server::{Broker, BrokerServer};
use strata_proto::broker::*;
use strata_proto::common::{ErrorCode, ErrorDetail};
use strata_proto::error::status_from_detail;
use strata_proto::record_batch::{BatchHeader, DecodedRecord, RecordBatch, batches, set_base_offset};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{TcpListenerStream, WatchStream};
use tonic::{Request, Response, Status};

use crate::producer::increment_sequence;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn partition_error(code: ErrorCode, message: &str) -> Option<PartitionError> {
    Some(PartitionError { code: code as i32, message: message.into(), leader_id: -1, leader_addr: String::new() })
}

/// How many recent batches per producer a partition remembers for
/// de-duplication (Kafka's broker keeps 5).
const DEDUPE_WINDOW: usize = 5;

/// What a partition knows of one idempotent producer.
#[derive(Debug, Clone)]
struct ProducerState {
    epoch: i16,
    last_sequence: i32,
    /// (first sequence, last sequence, base offset) of recent batches.
    recent: VecDeque<(i32, i32, i64)>,
}

#[derive(Debug, Default)]
struct PartitionLog {
    leader: i32,
    epoch: i32,
    /// (base offset, batch bytes with that base offset written in).
    batches: Vec<(i64, Bytes)>,
    end: i64,
    producers: BTreeMap<i64, ProducerState>,
}

/// How a partition takes a produce request's batches.
enum Admission {
    /// Append them all.
    Append,
    /// They are all already in the log, from this base offset.
    Duplicate(i64),
}

fn last_sequence(h: &BatchHeader) -> i32 {
    increment_sequence(h.base_sequence, u32::try_from(h.records_count.max(1) - 1).unwrap_or(0))
}

impl PartitionLog {
    /// Checks idempotent batches the way a broker does: a batch already in
    /// the log is a duplicate; otherwise each producer's sequence must
    /// continue where it left off (or start at 0 for a new producer or
    /// epoch). All-or-nothing, like the real broker's validation.
    fn admit(&self, parsed: &[RecordBatch]) -> Result<Admission, (ErrorCode, String)> {
        if let Some(first) = parsed.first().map(RecordBatch::header)
            && first.producer_id >= 0
            && let Some(state) = self.producers.get(&first.producer_id)
            && state.epoch == first.producer_epoch
            && let Some(&(_, _, base)) =
                state.recent.iter().find(|(f, l, _)| *f == first.base_sequence && *l == last_sequence(first))
        {
            let all_known = parsed.iter().map(RecordBatch::header).all(|h| {
                self.producers.get(&h.producer_id).is_some_and(|s| {
                    s.epoch == h.producer_epoch
                        && s.recent.iter().any(|(f, l, _)| *f == h.base_sequence && *l == last_sequence(h))
                })
            });
            return if all_known {
                Ok(Admission::Duplicate(base))
            } else {
                Err((ErrorCode::OutOfOrderSequenceNumber, "a duplicate batch followed by new ones".into()))
            };
        }
        let mut scratch: BTreeMap<i64, (i16, i32)> = BTreeMap::new();
        for h in parsed.iter().map(RecordBatch::header) {
            if h.producer_id < 0 {
                continue;
            }
            let known = scratch
                .get(&h.producer_id)
                .copied()
                .or_else(|| self.producers.get(&h.producer_id).map(|s| (s.epoch, s.last_sequence)));
            match known {
                None if h.base_sequence != 0 => {
                    return Err((
                        ErrorCode::UnknownProducerId,
                        format!("producer {} is unknown and sequence {} is not 0", h.producer_id, h.base_sequence),
                    ));
                }
                Some((epoch, _)) if h.producer_epoch < epoch => {
                    return Err((
                        ErrorCode::InvalidProducerEpoch,
                        format!("epoch {} is older than {epoch}", h.producer_epoch),
                    ));
                }
                Some((epoch, _)) if h.producer_epoch > epoch && h.base_sequence != 0 => {
                    return Err((
                        ErrorCode::OutOfOrderSequenceNumber,
                        format!("a new epoch starts at sequence 0, not {}", h.base_sequence),
                    ));
                }
                Some((epoch, last)) if h.producer_epoch == epoch && h.base_sequence != increment_sequence(last, 1) => {
                    return Err((
                        ErrorCode::OutOfOrderSequenceNumber,
                        format!("expected sequence {}, got {}", increment_sequence(last, 1), h.base_sequence),
                    ));
                }
                _ => {}
            }
            scratch.insert(h.producer_id, (h.producer_epoch, last_sequence(h)));
        }
        Ok(Admission::Append)
    }

    /// Appends a batch at the log end and remembers its producer's place.
    fn push(&mut self, batch: &RecordBatch) {
        let h = *batch.header();
        let base = self.end;
        let mut bytes = BytesMut::from(&batch.as_bytes()[..]);
        set_base_offset(&mut bytes, base).expect("a whole batch");
        self.batches.push((base, bytes.freeze()));
        self.end += i64::from(h.records_count);
        if h.producer_id >= 0 {
            let state = self.producers.entry(h.producer_id).or_insert_with(|| ProducerState {
                epoch: h.producer_epoch,
                last_sequence: -1,
                recent: VecDeque::new(),
            });
            if state.epoch != h.producer_epoch {
                state.epoch = h.producer_epoch;
                state.recent.clear();
            }
            state.last_sequence = last_sequence(&h);
            state.recent.push_back((h.base_sequence, state.last_sequence, base));
            if state.recent.len() > DEDUPE_WINDOW {
                state.recent.pop_front();
            }
        }
    }
}

#[derive(Debug, Default)]
struct TopicState {
    partitions: Vec<PartitionLog>,
    configs: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
struct Inner {
    revision: u64,
    /// Live brokers: id -> address.
    brokers: BTreeMap<i32, String>,
    topics: BTreeMap<String, TopicState>,
    /// Errors the next produce requests for a partition answer with.
    produce_faults: BTreeMap<(String, u32), VecDeque<ErrorCode>>,
    /// Produce requests seen, per broker id.
    produce_calls: BTreeMap<i32, usize>,
    /// Produce requests whose answer is "lost" after the partition's
    /// batches were handled: the caller sees a broken connection.
    lost_answers: BTreeMap<(String, u32), usize>,
    /// The last producer id handed out.
    last_producer_id: i64,
    init_producer_id_calls: usize,
    /// `InitProducerId` calls still to fail.
    init_producer_id_faults: usize,
    /// Brokers whose watch streams stop forwarding changes (cut off from
    /// the ensemble, yet up).
    frozen: BTreeSet<i32>,
}

impl Inner {
    fn snapshot(&self) -> MetadataResponse {
        MetadataResponse {
            brokers: self
                .brokers
                .iter()
                .map(|(id, addr)| BrokerInfo { id: *id, addr: addr.clone(), rack: String::new() })
                .collect(),
            controller_id: self.brokers.keys().next().copied().unwrap_or(-1),
            topics: self
                .topics
                .iter()
                .map(|(name, t)| TopicMetadata {
                    name: name.clone(),
                    topic_id: format!("id-{name}"),
                    error: None,
                    partitions: t
                        .partitions
                        .iter()
                        .enumerate()
                        .map(|(i, p)| PartitionMetadata {
                            partition: i as u32,
                            leader: p.leader,
                            leader_epoch: p.epoch,
                            replicas: vec![p.leader],
                            isr: vec![p.leader],
                        })
                        .collect(),
                    configs: t.configs.clone().into_iter().collect(),
                })
                .collect(),
            revision: self.revision,
        }
    }

    fn leader_error(&self, me: i32, topic: &str, partition: u32) -> Option<PartitionError> {
        let Some(t) = self.topics.get(topic) else {
            return partition_error(ErrorCode::UnknownTopicOrPartition, "no such topic");
        };
        let Some(p) = t.partitions.get(partition as usize) else {
            return partition_error(ErrorCode::UnknownTopicOrPartition, "no such partition");
        };
        if p.leader == me {
            return None;
        }
        Some(PartitionError {
            code: ErrorCode::NotLeaderForPartition as i32,
            message: format!("broker {me} does not lead {topic}-{partition}"),
            leader_id: p.leader,
            leader_addr: self.brokers.get(&p.leader).cloned().unwrap_or_default(),
        })
    }
}

struct Shared {
    inner: Mutex<Inner>,
    metadata: watch::Sender<MetadataResponse>,
    appended: Notify,
}

impl Shared {
    /// Bumps the revision and pushes the metadata to every watcher.
    fn publish(&self, inner: &mut Inner) {
        inner.revision += 1;
        self.metadata.send_replace(inner.snapshot());
    }
}

#[derive(Clone)]
struct FakeBroker {
    id: i32,
    shared: Arc<Shared>,
    dead: watch::Receiver<bool>,
}

impl FakeBroker {
    fn check_alive(&self) -> Result<(), Status> {
        if *self.dead.borrow() {
            // No ErrorDetail: to the client this looks like a transport
            // failure, as a dead process would.
            return Err(Status::unavailable("broker is down"));
        }
        Ok(())
    }

    fn fetch_partition(&self, inner: &Inner, p: &FetchPartition) -> FetchPartitionResponse {
        let mut out = FetchPartitionResponse {
            topic: p.topic.clone(),
            partition: p.partition,
            error: None,
            high_watermark: -1,
            log_start_offset: 0,
            log_end_offset: -1,
            records: Bytes::new(),
        };
        if let Some(error) = inner.leader_error(self.id, &p.topic, p.partition) {
            out.error = Some(error);
            return out;
        }
        let log = &inner.topics[&p.topic].partitions[p.partition as usize];
        out.high_watermark = log.end;
        out.log_end_offset = log.end;
        if p.fetch_offset < 0 || p.fetch_offset > log.end {
            out.error = partition_error(ErrorCode::OffsetOutOfRange, "offset out of range");
            return out;
        }
        let mut buf = BytesMut::new();
        for (base, bytes) in &log.batches {
            let next = batches(bytes.clone(), usize::MAX)
                .next()
                .and_then(Result::ok)
                .map_or(*base, |b| b.header().next_offset());
            if next <= p.fetch_offset {
                continue;
            }
            if !buf.is_empty() && buf.len() + bytes.len() > p.partition_max_bytes as usize {
                break;
            }
            buf.extend_from_slice(bytes);
        }
        out.records = buf.freeze();
        out
    }
}

type MetadataStream = Pin<Box<dyn Stream<Item = Result<MetadataResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Broker for FakeBroker {
    async fn produce(&self, request: Request<ProduceRequest>) -> Result<Response<ProduceResponse>, Status> {
        self.check_alive()?;
        let request = request.into_inner();
        let mut inner = lock(&self.shared.inner);
        *inner.produce_calls.entry(self.id).or_default() += 1;
        let mut response = ProduceResponse::default();
        let mut lost = false;
        for topic in request.topics {
            let mut answers = ProduceTopicResponse { topic: topic.topic.clone(), partitions: Vec::new() };
            for part in topic.partitions {
                let mut answer = ProducePartitionResponse {
                    partition: part.partition,
                    error: None,
                    base_offset: -1,
                    log_append_time: -1,
                    log_start_offset: 0,
                };
                let key = (topic.topic.clone(), part.partition);
                let fault = inner.produce_faults.get_mut(&key).and_then(VecDeque::pop_front);
                if let Some(error) = inner.leader_error(self.id, &topic.topic, part.partition) {
                    answer.error = Some(error);
                } else if let Some(code) = fault {
                    answer.error = partition_error(code, "injected");
                } else {
                    let log =
                        &mut inner.topics.get_mut(&topic.topic).expect("checked").partitions[part.partition as usize];
                    // Validated whole before anything is appended.
                    match batches(part.records, usize::MAX).collect::<Result<Vec<_>, _>>() {
                        Err(e) => answer.error = partition_error(ErrorCode::CorruptRecord, &e.to_string()),
                        Ok(parsed) => match log.admit(&parsed) {
                            Err((code, message)) => answer.error = partition_error(code, &message),
                            Ok(Admission::Duplicate(base)) => answer.base_offset = base,
                            Ok(Admission::Append) => {
                                answer.base_offset = log.end;
                                for batch in &parsed {
                                    log.push(batch);
                                }
                            }
                        },
                    }
                }
                if let Some(n) = inner.lost_answers.get_mut(&key).filter(|n| **n > 0) {
                    *n -= 1;
                    lost = true;
                }
                answers.partitions.push(answer);
            }
            response.topics.push(answers);
        }
        drop(inner);
        self.shared.appended.notify_waiters();
        if lost {
            // No ErrorDetail: a connection that broke after the broker did
            // its work.
            return Err(Status::unavailable("connection reset before the answer"));
        }
        Ok(Response::new(response))
    }

    async fn fetch(&self, request: Request<FetchRequest>) -> Result<Response<FetchResponse>, Status> {
        self.check_alive()?;
        let request = request.into_inner();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(u64::from(request.max_wait_ms));
        loop {
            // Register for the wake-up before looking, so an append in
            // between is not missed.
            let appended = self.shared.appended.notified();
            let response = {
                let inner = lock(&self.shared.inner);
                FetchResponse {
                    partitions: request.partitions.iter().map(|p| self.fetch_partition(&inner, p)).collect(),
                }
            };
            let bytes: usize = response.partitions.iter().map(|p| p.records.len()).sum();
            let errors = response.partitions.iter().any(|p| p.error.is_some());
            if errors || bytes >= request.min_bytes.max(1) as usize || tokio::time::Instant::now() >= deadline {
                return Ok(Response::new(response));
            }
            let _ = tokio::time::timeout_at(deadline, appended).await;
            self.check_alive()?;
        }
    }

    async fn list_offsets(
        &self,
        request: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        self.check_alive()?;
        let inner = lock(&self.shared.inner);
        let partitions = request
            .into_inner()
            .partitions
            .into_iter()
            .map(|p| {
                let mut answer = ListOffsetsPartitionResponse {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    error: None,
                    offset: -1,
                };
                if let Some(error) = inner.leader_error(self.id, &p.topic, p.partition) {
                    answer.error = Some(error);
                    return answer;
                }
                let log = &inner.topics[&p.topic].partitions[p.partition as usize];
                answer.offset = match p.timestamp {
                    -2 => 0,
                    -1 => log.end,
                    ts => log
                        .batches
                        .iter()
                        .flat_map(|(_, b)| decode_all(b))
                        .find(|r| r.timestamp >= ts)
                        .map_or(-1, |r| r.offset),
                };
                answer
            })
            .collect();
        Ok(Response::new(ListOffsetsResponse { partitions }))
    }

    async fn metadata(&self, request: Request<MetadataRequest>) -> Result<Response<MetadataResponse>, Status> {
        self.check_alive()?;
        let wanted = request.into_inner().topics;
        let mut snapshot = lock(&self.shared.inner).snapshot();
        if !wanted.is_empty() {
            let mut topics = Vec::new();
            for name in wanted {
                match snapshot.topics.iter().find(|t| t.name == name) {
                    Some(t) => topics.push(t.clone()),
                    None => topics.push(TopicMetadata {
                        name,
                        error: partition_error(ErrorCode::UnknownTopicOrPartition, "no such topic"),
                        ..Default::default()
                    }),
                }
            }
            snapshot.topics = topics;
        }
        Ok(Response::new(snapshot))
    }

    async fn offset_for_leader_epoch(
        &self,
        _: Request<OffsetForLeaderEpochRequest>,
    ) -> Result<Response<OffsetForLeaderEpochResponse>, Status> {
        self.check_alive()?;
        Err(Status::unimplemented("the fake cluster keeps no leader-epoch history"))
    }

    async fn init_producer_id(
        &self,
        _: Request<InitProducerIdRequest>,
    ) -> Result<Response<InitProducerIdResponse>, Status> {
        self.check_alive()?;
        let mut inner = lock(&self.shared.inner);
        inner.init_producer_id_calls += 1;
        if inner.init_producer_id_faults > 0 {
            inner.init_producer_id_faults -= 1;
            return Err(admin_error(ErrorCode::Unavailable, "injected: no producer ids right now"));
        }
        // Ids start well away from 0, so a test cannot mistake a default
        // for an allocation.
        inner.last_producer_id = inner.last_producer_id.max(999) + 1;
        Ok(Response::new(InitProducerIdResponse { producer_id: inner.last_producer_id, producer_epoch: 0 }))
    }

    type WatchMetadataStream = MetadataStream;

    async fn watch_metadata(&self, _: Request<MetadataRequest>) -> Result<Response<MetadataStream>, Status> {
        self.check_alive()?;
        let (shared, me, gone) = (self.shared.clone(), self.id, self.dead.clone());
        let updates = WatchStream::new(self.shared.metadata.subscribe())
            .filter(move |_| !*gone.borrow() && !lock(&shared.inner).frozen.contains(&me))
            .map(Ok);
        // The stream ends with an error when the broker "dies", as a broken
        // connection would end it.
        let mut dead = self.dead.clone();
        let death = futures::stream::once(async move {
            let _ = dead.wait_for(|d| *d).await;
            Err(Status::unavailable("broker is down"))
        });
        let mut ended = false;
        let stream = updates.merge(death).take_while(move |item| {
            // Stop right after the first error.
            let keep = !ended;
            ended |= item.is_err();
            keep
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

fn decode_all(batch: &Bytes) -> Vec<DecodedRecord> {
    batches(batch.clone(), usize::MAX)
        .filter_map(Result::ok)
        .flat_map(|b| b.records().map(|rs| rs.filter_map(Result::ok).collect::<Vec<_>>()).unwrap_or_default())
        .collect()
}

fn admin_error(code: ErrorCode, message: &str) -> Status {
    status_from_detail(ErrorDetail { code: code as i32, message: message.into(), ..Default::default() })
}

#[tonic::async_trait]
impl Admin for FakeBroker {
    async fn create_topics(
        &self,
        request: Request<CreateTopicsRequest>,
    ) -> Result<Response<CreateTopicsResponse>, Status> {
        self.check_alive()?;
        let mut inner = lock(&self.shared.inner);
        let ids: Vec<i32> = inner.brokers.keys().copied().collect();
        let mut response = CreateTopicsResponse::default();
        for t in request.into_inner().topics {
            let error = if inner.topics.contains_key(&t.name) {
                partition_error(ErrorCode::TopicAlreadyExists, "exists")
            } else if t.partitions == 0 {
                partition_error(ErrorCode::InvalidPartitions, "at least one partition")
            } else if ids.is_empty() || t.replication_factor as usize > ids.len() {
                partition_error(ErrorCode::InvalidReplicationFactor, "more replicas than brokers")
            } else {
                let partitions = (0..t.partitions as usize)
                    .map(|i| PartitionLog { leader: ids[i % ids.len()], ..Default::default() })
                    .collect();
                inner
                    .topics
                    .insert(t.name.clone(), TopicState { partitions, configs: t.configs.into_iter().collect() });
                None
            };
            response.topics.push(TopicResult { name: t.name, error });
        }
        self.shared.publish(&mut inner);
        Ok(Response::new(response))
    }

    async fn delete_topics(
        &self,
        request: Request<DeleteTopicsRequest>,
    ) -> Result<Response<DeleteTopicsResponse>, Status> {
        self.check_alive()?;
        let mut inner = lock(&self.shared.inner);
        let mut response = DeleteTopicsResponse::default();
        for name in request.into_inner().names {
            let error = match inner.topics.remove(&name) {
                Some(_) => None,
                None => partition_error(ErrorCode::UnknownTopicOrPartition, "no such topic"),
            };
            response.topics.push(TopicResult { name, error });
        }
        self.shared.publish(&mut inner);
        Ok(Response::new(response))
    }

    async fn create_partitions(
        &self,
        request: Request<CreatePartitionsRequest>,
    ) -> Result<Response<CreatePartitionsResponse>, Status> {
        self.check_alive()?;
        let request = request.into_inner();
        let mut inner = lock(&self.shared.inner);
        let ids: Vec<i32> = inner.brokers.keys().copied().collect();
        let error = match inner.topics.get_mut(&request.topic) {
            None => partition_error(ErrorCode::UnknownTopicOrPartition, "no such topic"),
            Some(t) if request.count as usize <= t.partitions.len() => {
                partition_error(ErrorCode::InvalidPartitions, "can only grow")
            }
            Some(t) => {
                while t.partitions.len() < request.count as usize {
                    let leader = ids[t.partitions.len() % ids.len()];
                    t.partitions.push(PartitionLog { leader, ..Default::default() });
                }
                None
            }
        };
        self.shared.publish(&mut inner);
        Ok(Response::new(CreatePartitionsResponse { result: Some(TopicResult { name: request.topic, error }) }))
    }

    async fn describe_configs(
        &self,
        request: Request<DescribeConfigsRequest>,
    ) -> Result<Response<DescribeConfigsResponse>, Status> {
        self.check_alive()?;
        let inner = lock(&self.shared.inner);
        match inner.topics.get(&request.into_inner().topic) {
            Some(t) => Ok(Response::new(DescribeConfigsResponse { configs: t.configs.clone().into_iter().collect() })),
            None => Err(admin_error(ErrorCode::UnknownTopicOrPartition, "no such topic")),
        }
    }

    async fn alter_configs(
        &self,
        request: Request<AlterConfigsRequest>,
    ) -> Result<Response<AlterConfigsResponse>, Status> {
        self.check_alive()?;
        let request = request.into_inner();
        let mut inner = lock(&self.shared.inner);
        let Some(t) = inner.topics.get_mut(&request.topic) else {
            return Err(admin_error(ErrorCode::UnknownTopicOrPartition, "no such topic"));
        };
        if request.set.keys().any(|k| k.is_empty()) {
            return Err(admin_error(ErrorCode::InvalidConfig, "empty key"));
        }
        t.configs.extend(request.set);
        for k in request.delete {
            t.configs.remove(&k);
        }
        self.shared.publish(&mut inner);
        Ok(Response::new(AlterConfigsResponse {}))
    }

    async fn describe_cluster(
        &self,
        _: Request<DescribeClusterRequest>,
    ) -> Result<Response<DescribeClusterResponse>, Status> {
        self.check_alive()?;
        let snapshot = lock(&self.shared.inner).snapshot();
        Ok(Response::new(DescribeClusterResponse { brokers: snapshot.brokers, controller_id: snapshot.controller_id }))
    }

    async fn elect_leaders(
        &self,
        _: Request<strata_proto::broker::ElectLeadersRequest>,
    ) -> Result<Response<strata_proto::broker::ElectLeadersResponse>, Status> {
        // The fake has no controller; the real election is tested against
        // real brokers (tests/tests/it/replication.rs).
        Err(Status::unimplemented("the fake cluster has no preferred-leader election"))
    }
}

struct Process {
    addr: String,
    dead: watch::Sender<bool>,
    server: JoinHandle<()>,
}

/// The fake cluster. Dropping it stops every broker.
pub(crate) struct FakeCluster {
    shared: Arc<Shared>,
    processes: Mutex<BTreeMap<i32, Process>>,
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        for p in lock(&self.processes).values() {
            let _ = p.dead.send(true);
            p.server.abort();
        }
    }
}

impl FakeCluster {
    /// Starts brokers 1..=n on loopback ports.
    pub(crate) async fn start(n: i32) -> FakeCluster {
        let (metadata, _) = watch::channel(MetadataResponse::default());
        let shared = Arc::new(Shared { inner: Mutex::new(Inner::default()), metadata, appended: Notify::new() });
        let cluster = FakeCluster { shared, processes: Mutex::new(BTreeMap::new()) };
        for id in 1..=n {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
            let addr = listener.local_addr().expect("bound address").to_string();
            let (dead_tx, dead) = watch::channel(false);
            let broker = FakeBroker { id, shared: cluster.shared.clone(), dead };
            let server = tokio::spawn(async move {
                let _ = tonic::transport::Server::builder()
                    .add_service(BrokerServer::new(broker.clone()))
                    .add_service(AdminServer::new(broker))
                    .serve_with_incoming(TcpListenerStream::new(listener))
                    .await;
            });
            lock(&cluster.processes).insert(id, Process { addr: addr.clone(), dead: dead_tx, server });
            lock(&cluster.shared.inner).brokers.insert(id, addr);
        }
        let mut inner = lock(&cluster.shared.inner);
        cluster.shared.publish(&mut inner);
        drop(inner);
        cluster
    }

    pub(crate) fn addr(&self, id: i32) -> String {
        lock(&self.processes).get(&id).map(|p| p.addr.clone()).unwrap_or_default()
    }

    /// Every broker's address.
    pub(crate) fn bootstrap(&self) -> Vec<String> {
        lock(&self.processes).values().map(|p| p.addr.clone()).collect()
    }

    /// Creates a topic whose partition `i` is led by `leaders[i]`.
    pub(crate) fn create_topic(&self, name: &str, leaders: &[i32]) {
        let mut inner = lock(&self.shared.inner);
        let partitions = leaders.iter().map(|&leader| PartitionLog { leader, ..Default::default() }).collect();
        inner.topics.insert(name.to_string(), TopicState { partitions, configs: BTreeMap::new() });
        self.shared.publish(&mut inner);
    }

    /// Moves leadership; `announce` says whether the metadata is pushed now
    /// (else brokers already act on it while clients still see the old
    /// leader, as after an election the metadata has not caught up with).
    pub(crate) fn move_leader(&self, topic: &str, partition: u32, to: i32, announce: bool) {
        let mut inner = lock(&self.shared.inner);
        if let Some(p) = inner.topics.get_mut(topic).and_then(|t| t.partitions.get_mut(partition as usize)) {
            p.leader = to;
            p.epoch += 1;
        }
        if announce {
            self.shared.publish(&mut inner);
        }
        drop(inner);
        // Fetches waiting on the old leader should notice.
        self.shared.appended.notify_waiters();
    }

    /// "Kills" a broker: its streams break, its calls fail like a dead
    /// process's, and the metadata drops it (leaders are not moved; see
    /// [`move_leader`](Self::move_leader)).
    pub(crate) fn kill(&self, id: i32) {
        if let Some(p) = lock(&self.processes).get(&id) {
            let _ = p.dead.send(true);
            p.server.abort();
        }
        let mut inner = lock(&self.shared.inner);
        inner.brokers.remove(&id);
        self.shared.publish(&mut inner);
        drop(inner);
        self.shared.appended.notify_waiters();
    }

    /// Broker `id`'s watch streams stop forwarding changes; its unary
    /// `Metadata` answers stay current.
    pub(crate) fn freeze_stream(&self, id: i32) {
        lock(&self.shared.inner).frozen.insert(id);
    }

    /// The next `count` produce requests for the partition fail with `code`.
    pub(crate) fn fail_produce(&self, topic: &str, partition: u32, code: ErrorCode, count: usize) {
        let mut inner = lock(&self.shared.inner);
        let faults = inner.produce_faults.entry((topic.to_string(), partition)).or_default();
        faults.extend(std::iter::repeat_n(code, count));
    }

    /// The next `count` produce requests carrying the partition are handled
    /// in full, but their answer never arrives: the connection breaks.
    pub(crate) fn lose_produce_answers(&self, topic: &str, partition: u32, count: usize) {
        *lock(&self.shared.inner).lost_answers.entry((topic.to_string(), partition)).or_default() += count;
    }

    /// The next `count` `InitProducerId` calls fail (retriably).
    pub(crate) fn fail_init_producer_id(&self, count: usize) {
        lock(&self.shared.inner).init_producer_id_faults += count;
    }

    /// `InitProducerId` calls received by any broker.
    pub(crate) fn init_producer_id_calls(&self) -> usize {
        lock(&self.shared.inner).init_producer_id_calls
    }

    /// The headers of a partition's stored batches, in offset order.
    pub(crate) fn batch_headers(&self, topic: &str, partition: u32) -> Vec<BatchHeader> {
        let inner = lock(&self.shared.inner);
        inner
            .topics
            .get(topic)
            .and_then(|t| t.partitions.get(partition as usize))
            .map(|p| {
                p.batches
                    .iter()
                    .filter_map(|(_, b)| batches(b.clone(), usize::MAX).next().and_then(Result::ok))
                    .map(|b| *b.header())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Appends a ready-made batch (offsets are assigned here).
    pub(crate) fn append(&self, topic: &str, partition: u32, batch: Bytes) -> i64 {
        let mut inner = lock(&self.shared.inner);
        let log = &mut inner.topics.get_mut(topic).expect("topic exists").partitions[partition as usize];
        let base = log.end;
        let mut bytes = BytesMut::from(&batch[..]);
        set_base_offset(&mut bytes, base).expect("a whole batch");
        let count = batches(batch, usize::MAX).next().and_then(Result::ok).map_or(0, |b| b.header().records_count);
        log.batches.push((base, bytes.freeze()));
        log.end += i64::from(count);
        drop(inner);
        self.shared.appended.notify_waiters();
        base
    }

    /// Every record of a partition, in offset order.
    pub(crate) fn records(&self, topic: &str, partition: u32) -> Vec<DecodedRecord> {
        let inner = lock(&self.shared.inner);
        inner
            .topics
            .get(topic)
            .and_then(|t| t.partitions.get(partition as usize))
            .map(|p| p.batches.iter().flat_map(|(_, b)| decode_all(b)).collect())
            .unwrap_or_default()
    }

    /// Produce requests broker `id` has received.
    pub(crate) fn produce_calls(&self, id: i32) -> usize {
        lock(&self.shared.inner).produce_calls.get(&id).copied().unwrap_or(0)
    }
}
