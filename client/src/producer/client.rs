//! [`Producer`]: the accumulator, a sender task and the metadata they follow,
//! behind one handle.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use strata_proto::record_batch::{Record, RecordHeader};
use tokio::sync::watch;

use super::accumulator::{AccumulatorConfig, RecordAccumulator};
use super::batch::DeliveryFuture;
use super::error::ProduceError;
use super::partitioner::{DefaultPartitioner, Partitioner};
use super::sender::{self, Sender, SenderConfig};
use super::transport::{Acks, GrpcTransport, ProduceTransport};
use crate::error::ClientError;
use crate::metadata::{ClusterMetadata, MetadataClient};

/// Everything a [`Producer`] can be tuned with. Defaults follow Kafka 3+'s
/// producer: `acks=all` and idempotence on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerConfig {
    /// Batching, compression, memory and the delivery timeout.
    pub accumulator: AccumulatorConfig,
    pub acks: Acks,
    /// How many times a batch is sent again after a retriable failure
    /// (Kafka `retries`); the delivery timeout bounds retries as well.
    pub retries: u32,
    /// First pause before a retry; doubles per attempt up to the max (Kafka
    /// `retry.backoff.ms` / `retry.backoff.max.ms`). A leader change pushed
    /// on the metadata stream ends the pause early.
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    /// How long the broker may wait for replication, and (plus a margin)
    /// how long the client waits for its answer (Kafka `request.timeout.ms`).
    pub request_timeout: Duration,
    /// Outstanding `Produce` requests per broker (Kafka
    /// `max.in.flight.requests.per.connection`). Order within a partition
    /// holds regardless: a partition has at most one request in flight.
    pub max_in_flight_per_broker: usize,
    /// Idempotence (Kafka `enable.idempotence`): the producer takes a
    /// producer id from the cluster and stamps every batch with it and a
    /// per-partition sequence, so the broker drops a batch it already has
    /// and a retry after a lost answer never writes a record twice. Needs
    /// `acks=all` and `retries > 0`; [`Producer::new`] refuses other
    /// combinations rather than silently weakening the guarantee, so turn
    /// this off to use `acks=1` or `acks=0`.
    pub enable_idempotence: bool,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            accumulator: AccumulatorConfig::default(),
            acks: Acks::All,
            retries: u32::MAX,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            request_timeout: Duration::from_secs(30),
            max_in_flight_per_broker: 5,
            enable_idempotence: true,
        }
    }
}

impl ProducerConfig {
    /// Refuses settings that contradict each other: idempotence without
    /// `acks=all`, or without retries.
    pub fn validate(&self) -> Result<(), ClientError> {
        if self.enable_idempotence && self.acks != Acks::All {
            return Err(ClientError::InvalidArgument(format!(
                "enable_idempotence requires acks=all, but acks={}; turn idempotence off to use acks={}",
                self.acks, self.acks
            )));
        }
        if self.enable_idempotence && self.retries == 0 {
            return Err(ClientError::InvalidArgument(
                "enable_idempotence requires retries > 0; turn idempotence off to disable retries".into(),
            ));
        }
        Ok(())
    }
}

struct Inner {
    acc: RecordAccumulator,
    metadata: MetadataClient,
    /// Becomes true when the sender task has finished.
    done: watch::Receiver<bool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: let the sender deliver what is buffered
        // (within the delivery timeout) and stop.
        self.acc.close();
    }
}

/// Sends records to topics: batches them per partition, sends each batch to
/// its partition's leader, and reports every record's fate through a
/// [`DeliveryFuture`].
///
/// Cheap to clone; clones share buffers and the sender task. Dropping the
/// last clone closes the producer without waiting; call
/// [`close`](Self::close) to wait for delivery.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer").field("accumulator", &self.inner.acc).finish_non_exhaustive()
    }
}

/// Milliseconds since the Unix epoch, Kafka's record timestamp.
fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

impl Producer {
    /// A producer with Kafka's default partitioner (murmur2 of the key,
    /// sticky batches for keyless records). Must be called within a Tokio
    /// runtime: it starts the sender task. Fails with
    /// [`ClientError::InvalidArgument`] when the config contradicts itself
    /// (see [`ProducerConfig::validate`]).
    pub fn new(metadata: MetadataClient, config: ProducerConfig) -> Result<Producer, ClientError> {
        Producer::with_partitioner(metadata, config, Arc::new(DefaultPartitioner::new()))
    }

    pub fn with_partitioner(
        metadata: MetadataClient,
        config: ProducerConfig,
        partitioner: Arc<dyn Partitioner>,
    ) -> Result<Producer, ClientError> {
        let transport = Arc::new(GrpcTransport::new(metadata.clone()));
        Producer::with_transport(metadata, config, partitioner, transport)
    }

    /// A producer whose requests go through `transport` instead of gRPC
    /// (tests, fault injection).
    pub fn with_transport<T: ProduceTransport>(
        metadata: MetadataClient,
        config: ProducerConfig,
        partitioner: Arc<dyn Partitioner>,
        transport: Arc<T>,
    ) -> Result<Producer, ClientError> {
        config.validate()?;
        let sender_config = SenderConfig {
            acks: config.acks,
            retries: config.retries,
            retry_backoff: config.retry_backoff,
            retry_backoff_max: config.retry_backoff_max.max(config.retry_backoff),
            request_timeout: config.request_timeout,
            max_in_flight_per_broker: config.max_in_flight_per_broker,
            max_request_size: config.accumulator.max_request_size,
            delivery_timeout: config.accumulator.delivery_timeout,
            idempotent: config.enable_idempotence,
        };
        let acc = RecordAccumulator::new(config.accumulator, partitioner);
        let (done_tx, done) = watch::channel(false);
        let sender = Sender::new(acc.clone(), transport, metadata.clone(), sender_config, done_tx);
        tokio::spawn(sender.run());
        Ok(Producer { inner: Arc::new(Inner { acc, metadata, done }) })
    }

    /// Sends a record to the partition its key picks (or a sticky one when
    /// keyless). `timestamp` defaults to now. Waits only while the topic's
    /// metadata is unknown or buffer memory is full, each at most
    /// `max_block`; the returned future resolves once the broker has
    /// acknowledged the record (per `acks`) or it has failed for good.
    pub async fn send(
        &self,
        topic: &str,
        key: Option<Bytes>,
        value: Option<Bytes>,
        headers: Vec<RecordHeader>,
        timestamp: Option<i64>,
    ) -> Result<DeliveryFuture, ProduceError> {
        let record = Record { timestamp: timestamp.unwrap_or_else(now_ms), key, value, headers };
        self.send_record(topic, None, record).await
    }

    /// Sends `record` to `partition`, or to the partitioner's choice when
    /// `None`.
    pub async fn send_record(
        &self,
        topic: &str,
        partition: Option<u32>,
        record: Record,
    ) -> Result<DeliveryFuture, ProduceError> {
        let partition_count = match self.inner.metadata.partition_count(topic) {
            Some(n) if n > 0 => n,
            _ => self.await_partitions(topic).await?,
        };
        self.inner.acc.append(topic, partition, partition_count, record, sender::now()).await
    }

    /// Waits up to `max_block` for the metadata to list the topic.
    async fn await_partitions(&self, topic: &str) -> Result<u32, ProduceError> {
        let max_block = self.inner.acc.config().max_block;
        let known = |m: &ClusterMetadata| m.partition_count(topic).is_some_and(|n| n > 0);
        match self.inner.metadata.wait_until(max_block, known).await {
            Ok(m) => Ok(m.partition_count(topic).unwrap_or(0)),
            Err(m) if !m.is_received() => Err(ProduceError::Metadata(self.inner.metadata.unreachable_error())),
            Err(m) => Err(ProduceError::Metadata(match m.topics.get(topic).and_then(|t| t.error.clone()) {
                Some(e) => e,
                None => ClientError::UnknownTopicOrPartition(format!(
                    "topic {topic} not in the cluster metadata after {max_block:?}"
                )),
            })),
        }
    }

    /// Sends every buffered record now and waits until all records sent
    /// before this call have completed.
    pub async fn flush(&self) {
        self.inner.acc.flush().await;
    }

    /// Refuses new records, sends what is buffered, and waits until every
    /// record has completed (bounded by the delivery timeout).
    pub async fn close(&self) {
        self.inner.acc.close();
        let mut done = self.inner.done.clone();
        // An error means the sender task is gone already (runtime shutting
        // down); there is nothing left to wait for.
        let _ = done.wait_for(|d| *d).await;
    }

    /// Bytes of buffer memory held by records not yet complete.
    pub fn buffered_bytes(&self) -> usize {
        self.inner.acc.buffered_bytes()
    }

    /// Batches created and not yet complete, buffered or in flight.
    pub fn incomplete_batches(&self) -> usize {
        self.inner.acc.incomplete_batches()
    }

    pub fn metadata(&self) -> &MetadataClient {
        &self.inner.metadata
    }
}
