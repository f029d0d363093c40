//! Per-partition batching with linger, batch size, compression, a memory
//! bound with back-pressure, and idempotence sequence numbers.
//!
//! Time is an argument: every method that cares about time takes `now`, so
//! the rules are testable without waiting. The one timer is `max_block`, the
//! bound on waiting for memory.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use strata_proto::record_batch::layout::HEADER_SIZE;
use strata_proto::record_batch::{
    BatchError, Compression, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE, Record, RecordBatchBuilder,
    set_producer_state,
};
use tokio::sync::Notify;

use super::batch::{Completion, DeliveryFuture, Ledger, ReadyBatch, Signal};
use super::error::ProduceError;
use super::memory::Reservation;
use super::partitioner::Partitioner;
use super::sequence::{ProducerIdentity, SequenceTracker};

/// Tunables of the accumulator. Defaults are Kafka's producer defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccumulatorConfig {
    /// Bound on a batch's encoded size before compression (Kafka
    /// `batch.size`). A record larger than this travels alone.
    pub batch_size: usize,
    /// How long a batch that is not full waits for more records (Kafka
    /// `linger.ms`).
    pub linger: Duration,
    pub compression: Compression,
    /// Bound on the bytes of all batches not yet complete, buffered or in
    /// flight (Kafka `buffer.memory`); `append` waits beyond it.
    pub buffer_memory: usize,
    /// How long `append` may wait for memory (Kafka `max.block.ms`); zero
    /// never waits.
    pub max_block: Duration,
    /// Largest record accepted, counted as a batch of its own (Kafka
    /// `max.request.size`).
    pub max_request_size: usize,
    /// Age at which a batch still in the accumulator fails with
    /// [`ProduceError::Timeout`] (Kafka `delivery.timeout.ms`).
    pub delivery_timeout: Duration,
}

impl Default for AccumulatorConfig {
    fn default() -> Self {
        AccumulatorConfig {
            batch_size: 16 * 1024,
            linger: Duration::from_millis(5),
            compression: Compression::None,
            buffer_memory: 32 * 1024 * 1024,
            max_block: Duration::from_secs(60),
            max_request_size: 1024 * 1024,
            delivery_timeout: Duration::from_secs(120),
        }
    }
}

/// A batch still taking records (the last of its partition's queue, unless
/// `full`).
struct OpenBatch {
    builder: RecordBatchBuilder,
    created: Instant,
    /// Closed to appends; ready to send regardless of linger.
    full: bool,
    completion: Completion,
    signal: Signal,
}

impl OpenBatch {
    fn new(compression: Compression, now: Instant, ledger: &Arc<Ledger>) -> OpenBatch {
        let (completion, signal) = Completion::new(ledger);
        OpenBatch { builder: RecordBatchBuilder::new(compression), created: now, full: false, completion, signal }
    }

    /// Appends a record whose `reserved` bytes of memory the caller took.
    fn push(
        &mut self,
        record: &Record,
        reserved: usize,
        batch_size: usize,
        topic: &Arc<str>,
        partition: u32,
    ) -> Result<DeliveryFuture, BatchError> {
        let count = self.builder.len();
        let index = u32::try_from(count).map_err(|_| BatchError::FieldTooLarge(count))?;
        self.builder.push(record)?;
        self.completion.add_reserved(reserved);
        if self.builder.estimated_size() >= batch_size {
            self.full = true;
        }
        Ok(DeliveryFuture::new(self.signal.clone(), topic.clone(), partition, index, record.timestamp))
    }

    fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.created)
    }

    /// Encodes the batch. A failure is reported to its records here.
    fn encode(self, topic: Arc<str>, partition: u32, producer: (i64, i16, i32)) -> Option<ReadyBatch> {
        let (producer_id, producer_epoch, base_sequence) = producer;
        let record_count = u32::try_from(self.builder.len()).unwrap_or(u32::MAX);
        match self.builder.producer(producer_id, producer_epoch, base_sequence).build() {
            Ok(bytes) => Some(ReadyBatch {
                topic,
                partition,
                bytes,
                record_count,
                producer_id,
                producer_epoch,
                base_sequence,
                created: self.created,
                completion: self.completion,
            }),
            Err(e) => {
                // Under idempotence this leaves a gap in the partition's
                // sequences: the broker answers the next batch with
                // OUT_OF_ORDER_SEQUENCE_NUMBER and the sender takes a new
                // producer id. Encoding a batch whose records were each
                // accepted does not fail in practice.
                self.completion.finish(Err(ProduceError::Encode(e)));
                None
            }
        }
    }
}

struct PartitionQueue {
    topic: Arc<str>,
    /// Oldest first; only the last may be open.
    batches: VecDeque<OpenBatch>,
    sequence: SequenceTracker,
}

#[derive(Default)]
struct State {
    topics: HashMap<Arc<str>, HashMap<u32, PartitionQueue>>,
    identity: Option<ProducerIdentity>,
    /// `flush` calls in progress; while any runs, every batch is ready.
    flushes: usize,
    closed: bool,
}

impl State {
    fn queue_mut(&mut self, topic: &str, partition: u32) -> &mut PartitionQueue {
        // Reuse the stored name so that an append allocates only for a topic
        // it has never seen.
        let name: Arc<str> = match self.topics.get_key_value(topic) {
            Some((name, _)) => name.clone(),
            None => Arc::from(topic),
        };
        self.topics.entry(name.clone()).or_default().entry(partition).or_insert_with(|| PartitionQueue {
            topic: name,
            batches: VecDeque::new(),
            sequence: SequenceTracker::new(),
        })
    }

    fn queues_mut(&mut self) -> impl Iterator<Item = (u32, &mut PartitionQueue)> {
        self.topics.values_mut().flat_map(|partitions| partitions.iter_mut().map(|(p, q)| (*p, q)))
    }
}

/// `VecDeque::pop_front_if`, which is newer than the workspace's MSRV.
fn pop_front_if(batches: &mut VecDeque<OpenBatch>, ready: impl FnOnce(&OpenBatch) -> bool) -> Option<OpenBatch> {
    if batches.front().is_some_and(ready) { batches.pop_front() } else { None }
}

/// A batch taken out of its queue, with what it needs to be encoded outside
/// the lock.
struct Taken {
    topic: Arc<str>,
    partition: u32,
    batch: OpenBatch,
    producer: (i64, i16, i32),
}

/// One `append` call's fixed inputs.
struct AppendRequest<'a> {
    topic: &'a str,
    explicit: Option<u32>,
    partition_count: u32,
    record: &'a Record,
    /// Memory a batch of this record alone needs.
    single: usize,
    now: Instant,
}

enum Attempt {
    Appended(DeliveryFuture),
    NeedMemory,
}

struct Inner {
    config: AccumulatorConfig,
    partitioner: Arc<dyn Partitioner>,
    ledger: Arc<Ledger>,
    state: Mutex<State>,
    wakeup: Notify,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No critical section leaves the state half-updated across a panic
        // point that matters: batches move whole between queues.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn batch_completed(&self, topic: &str, partition: u32) {
        self.wakeup.notify_one();
        self.partitioner.on_batch_complete(topic, partition);
    }
}

/// Collects records into per-partition batches for the sender.
///
/// Cheap to clone; clones share the same buffers. Producers call
/// [`append`](Self::append); the sender loop waits on
/// [`changed`](Self::changed) or [`next_deadline`](Self::next_deadline),
/// takes batches with [`drain`](Self::drain), and completes each
/// [`ReadyBatch`].
#[derive(Clone)]
pub struct RecordAccumulator {
    inner: Arc<Inner>,
}

impl fmt::Debug for RecordAccumulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordAccumulator")
            .field("config", &self.inner.config)
            .field("buffered_bytes", &self.buffered_bytes())
            .finish_non_exhaustive()
    }
}

impl RecordAccumulator {
    /// `buffer_memory` is capped at tokio's `Semaphore::MAX_PERMITS` (2^61).
    pub fn new(config: AccumulatorConfig, partitioner: Arc<dyn Partitioner>) -> RecordAccumulator {
        let ledger = Arc::new(Ledger::new(config.buffer_memory));
        RecordAccumulator {
            inner: Arc::new(Inner {
                config,
                partitioner,
                ledger,
                state: Mutex::new(State::default()),
                wakeup: Notify::new(),
            }),
        }
    }

    pub fn config(&self) -> &AccumulatorConfig {
        &self.inner.config
    }

    /// Appends `record` to `partition`, or to the partitioner's choice when
    /// `None`. Waits while buffer memory is exhausted, at most `max_block`.
    /// The returned future reports where the record landed once the sender
    /// completes its batch.
    ///
    /// `now` is the time the record arrived; it starts the linger of a batch
    /// this record opens. Waiting for memory needs a Tokio runtime with its
    /// timer enabled, unless `max_block` is zero or too large to represent.
    pub async fn append(
        &self,
        topic: &str,
        partition: Option<u32>,
        partition_count: u32,
        record: Record,
        now: Instant,
    ) -> Result<DeliveryFuture, ProduceError> {
        let invalid =
            |p: u32| ProduceError::InvalidPartition { topic: topic.to_owned(), partition: p, partition_count };
        match partition {
            Some(p) if p >= partition_count => return Err(invalid(p)),
            None if partition_count == 0 => return Err(invalid(0)),
            _ => {}
        }
        let config = &self.inner.config;
        // Memory a batch of this record alone needs. It is also the most the
        // record can need when joining an existing batch: the batch header it
        // saves outweighs the few bytes larger deltas can add.
        let single = HEADER_SIZE + RecordBatchBuilder::new(config.compression).record_size(&record);
        for max in [config.max_request_size, self.inner.ledger.pool.limit(), u32::MAX as usize] {
            if single > max {
                return Err(ProduceError::RecordTooLarge { size: single, max });
            }
        }

        let request = AppendRequest { topic, explicit: partition, partition_count, record: &record, single, now };
        let mut reservation = Reservation::new(&self.inner.ledger.pool);
        let mut deadline = None;
        loop {
            if let Attempt::Appended(delivery) = self.try_append(&request, &mut reservation)? {
                return Ok(delivery);
            }
            if config.max_block.is_zero() {
                return Err(ProduceError::BufferExhausted { requested: single, max_block: config.max_block });
            }
            let deadline = *deadline.get_or_insert_with(|| tokio::time::Instant::now().checked_add(config.max_block));
            reservation.fill(single, config.max_block, deadline, &self.inner.wakeup).await?;
        }
    }

    fn choose(&self, topic: &str, record: &Record, partition_count: u32) -> Result<u32, ProduceError> {
        let p = self.inner.partitioner.partition(topic, record.key.as_deref(), partition_count);
        if p < partition_count {
            Ok(p)
        } else {
            Err(ProduceError::InvalidPartition { topic: topic.to_owned(), partition: p, partition_count })
        }
    }

    fn try_append(
        &self,
        request: &AppendRequest<'_>,
        reservation: &mut Reservation<'_>,
    ) -> Result<Attempt, ProduceError> {
        let config = &self.inner.config;
        let AppendRequest { topic, explicit, partition_count, record, single, now } = *request;
        let mut partition = match explicit {
            Some(p) => p,
            None => self.choose(topic, record, partition_count)?,
        };
        let mut rechosen = false;
        loop {
            let mut state = self.inner.lock();
            if state.closed {
                return Err(ProduceError::Closed);
            }
            let queue = state.queue_mut(topic, partition);
            let mut sealed = false;
            if let Some(open) = queue.batches.back_mut().filter(|b| !b.full) {
                let need = open.builder.record_size(record);
                if open.builder.estimated_size() + need <= config.batch_size {
                    if !reservation.take(need) {
                        return Ok(Attempt::NeedMemory);
                    }
                    let pushed = open.push(record, need, config.batch_size, &queue.topic, partition);
                    let now_full = open.full;
                    drop(state);
                    let delivery = pushed.map_err(|e| {
                        reservation.give_back(need);
                        ProduceError::Encode(e)
                    })?;
                    if now_full {
                        self.inner.batch_completed(topic, partition);
                    }
                    return Ok(Attempt::Appended(delivery));
                }
                open.full = true;
                sealed = true;
            }
            if sealed && !rechosen {
                // Let a sticky partitioner move on before this record picks
                // its partition, so it opens the next sticky batch rather
                // than a second one here (what Kafka's abortOnNewBatch does).
                drop(state);
                self.inner.batch_completed(topic, partition);
                rechosen = true;
                if explicit.is_none() {
                    partition = self.choose(topic, record, partition_count)?;
                }
                continue;
            }

            // The record opens a new batch.
            if !reservation.take(single) {
                drop(state);
                if sealed {
                    self.inner.batch_completed(topic, partition);
                }
                return Ok(Attempt::NeedMemory);
            }
            let mut batch = OpenBatch::new(config.compression, now, &self.inner.ledger);
            let delivery = match batch.push(record, single, config.batch_size, &queue.topic, partition) {
                Ok(delivery) => delivery,
                Err(e) => {
                    reservation.give_back(single);
                    return Err(ProduceError::Encode(e));
                }
            };
            let now_full = batch.full;
            queue.batches.push_back(batch);
            drop(state);
            // A new batch means a new linger deadline for the sender.
            self.inner.wakeup.notify_one();
            if sealed {
                self.inner.batch_completed(topic, partition);
            }
            if now_full {
                self.inner.batch_completed(topic, partition);
            }
            return Ok(Attempt::Appended(delivery));
        }
    }

    /// Takes every ready batch: full ones, those whose linger has passed,
    /// and all of them while a flush runs, after `close`, or while an
    /// `append` waits for memory. Under idempotence each gets its producer
    /// id, epoch and next base sequence here.
    pub fn drain(&self, now: Instant) -> Vec<ReadyBatch> {
        self.drain_filtered(now, |_, _| true)
    }

    /// [`drain`](Self::drain), but only from partitions for which `include`
    /// returns true (say, those with a known leader and no batch in flight).
    pub fn drain_filtered(&self, now: Instant, mut include: impl FnMut(&str, u32) -> bool) -> Vec<ReadyBatch> {
        self.drain_while(now, |topic, partition, _| include(topic, partition))
    }

    /// [`drain`](Self::drain), asking `take(topic, partition, size)` about
    /// each ready batch, oldest first per partition, before taking it;
    /// `size` is the batch's size before compression (an upper bound on
    /// what it will weigh on the wire). The first `false` leaves that batch
    /// and the partition's later ones for another drain, which keeps each
    /// partition's batches in order. This is how the sender fills requests
    /// up to a byte budget per broker.
    pub fn drain_while(&self, now: Instant, mut take: impl FnMut(&str, u32, usize) -> bool) -> Vec<ReadyBatch> {
        let linger = self.inner.config.linger;
        let mut taken = Vec::new();
        {
            let mut state = self.inner.lock();
            let force = state.flushes > 0 || state.closed || self.inner.ledger.pool.has_waiters();
            let identity = state.identity;
            for (partition, queue) in state.queues_mut() {
                if queue.batches.is_empty() {
                    continue;
                }
                let topic = &queue.topic;
                let mut ready = |b: &OpenBatch| {
                    (force || b.full || b.age(now) >= linger) && take(topic, partition, b.builder.estimated_size())
                };
                while let Some(batch) = pop_front_if(&mut queue.batches, &mut ready) {
                    let producer = match identity {
                        Some(id) => {
                            let count = u32::try_from(batch.builder.len()).unwrap_or(u32::MAX);
                            (id.producer_id, id.epoch, queue.sequence.assign(count))
                        }
                        None => (NO_PRODUCER_ID, NO_PRODUCER_EPOCH, NO_SEQUENCE),
                    };
                    taken.push(Taken { topic: queue.topic.clone(), partition, batch, producer });
                }
            }
        }
        // Compression happens here, outside the lock, so appends to other
        // partitions do not wait for it.
        let mut ready = Vec::with_capacity(taken.len());
        for t in taken {
            if !t.batch.full {
                self.inner.partitioner.on_batch_complete(&t.topic, t.partition);
            }
            ready.extend(t.batch.encode(t.topic, t.partition, t.producer));
        }
        ready
    }

    /// How long the sender may sleep before a batch of an `include`d
    /// partition becomes ready or any batch reaches its delivery timeout.
    /// `None` when nothing is buffered; zero when something is due now.
    pub fn next_deadline(&self, now: Instant, mut include: impl FnMut(&str, u32) -> bool) -> Option<Duration> {
        let config = &self.inner.config;
        let mut state = self.inner.lock();
        let force = state.flushes > 0 || state.closed || self.inner.ledger.pool.has_waiters();
        let mut next: Option<Duration> = None;
        for (partition, queue) in state.queues_mut() {
            let Some(front) = queue.batches.front() else {
                continue;
            };
            let age = front.age(now);
            let mut due = config.delivery_timeout.saturating_sub(age);
            if include(&queue.topic, partition) {
                let ready_in = if force || front.full { Duration::ZERO } else { config.linger.saturating_sub(age) };
                due = due.min(ready_in);
            }
            next = Some(next.map_or(due, |n| n.min(due)));
        }
        next
    }

    /// Resolves when batches may have become ready sooner than the last
    /// [`next_deadline`](Self::next_deadline) said: a batch filled or
    /// opened, a flush began, an append is waiting for memory, or the
    /// accumulator closed. Meant for a single sender task; a wake-up that
    /// comes while it is busy is kept for its next wait.
    pub async fn changed(&self) {
        self.inner.wakeup.notified().await;
    }

    /// Fails batches that have waited in the accumulator for the delivery
    /// timeout (say, because their partition has no leader) with
    /// [`ProduceError::Timeout`]. Returns how many batches failed.
    pub fn expire(&self, now: Instant) -> usize {
        let timeout = self.inner.config.delivery_timeout;
        let mut expired = Vec::new();
        {
            let mut state = self.inner.lock();
            for (partition, queue) in state.queues_mut() {
                while let Some(batch) = pop_front_if(&mut queue.batches, |b| b.age(now) >= timeout) {
                    expired.push((queue.topic.clone(), partition, batch));
                }
            }
        }
        let count = expired.len();
        for (topic, partition, batch) in expired {
            if !batch.full {
                self.inner.partitioner.on_batch_complete(&topic, partition);
            }
            batch.completion.finish(Err(ProduceError::Timeout(timeout)));
        }
        count
    }

    /// Makes every batch ready and waits until all batches that exist now,
    /// buffered or in flight, have completed. Batches opened meanwhile are
    /// not waited for.
    pub async fn flush(&self) {
        let pending = {
            let mut state = self.inner.lock();
            state.flushes += 1;
            self.inner.ledger.incomplete()
        };
        let _flushing = Flushing(&self.inner);
        self.inner.wakeup.notify_one();
        futures::future::join_all(pending).await;
    }

    /// Whether [`close`](Self::close) or [`abort`](Self::abort) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.lock().closed
    }

    /// Refuses further appends with [`ProduceError::Closed`] (appends waiting
    /// for memory get it once memory frees up) and makes every buffered
    /// batch ready, so the sender can send them all before exiting.
    pub fn close(&self) {
        self.inner.lock().closed = true;
        self.inner.wakeup.notify_one();
    }

    /// Closes, fails every buffered batch with `error`, and fails appends
    /// waiting for memory with [`ProduceError::Closed`]. Batches already
    /// drained are the sender's to complete.
    pub fn abort(&self, error: ProduceError) {
        let batches: Vec<OpenBatch> = {
            let mut state = self.inner.lock();
            state.closed = true;
            state.queues_mut().flat_map(|(_, q)| q.batches.drain(..)).collect()
        };
        self.inner.ledger.pool.close();
        self.inner.wakeup.notify_one();
        for batch in batches {
            batch.completion.finish(Err(error.clone()));
        }
    }

    /// Sets (or clears) the idempotent identity stamped on batches drained
    /// from now on. A different identity restarts every partition's
    /// sequence at 0, as a new producer id or epoch requires.
    pub fn set_producer_identity(&self, identity: Option<ProducerIdentity>) {
        let mut state = self.inner.lock();
        if state.identity != identity {
            state.identity = identity;
            for (_, queue) in state.queues_mut() {
                queue.sequence.reset();
            }
        }
    }

    /// The identity batches drained now are stamped with.
    pub fn producer_identity(&self) -> Option<ProducerIdentity> {
        self.inner.lock().identity
    }

    /// Re-stamps a drained batch that was never sent with the current
    /// identity (or with none) and the next base sequence of its partition,
    /// rewriting the header and CRC in place; the records are not re-encoded.
    /// For a batch drained under an identity that has since been replaced.
    ///
    /// The caller must not have drained a newer batch of the partition since
    /// the identity changed (the sender's one-request-per-partition rule
    /// guarantees it), so the batch keeps its place in the sequence.
    pub fn restamp(&self, batch: &mut ReadyBatch) -> Result<(), BatchError> {
        let mut state = self.inner.lock();
        let identity = state.identity;
        let queue = state.queue_mut(&batch.topic, batch.partition);
        let (producer_id, producer_epoch, base_sequence) = match identity {
            Some(id) => (id.producer_id, id.epoch, queue.sequence.assign(batch.record_count)),
            None => (NO_PRODUCER_ID, NO_PRODUCER_EPOCH, NO_SEQUENCE),
        };
        let mut bytes = BytesMut::from(&batch.bytes[..]);
        if let Err(e) = set_producer_state(&mut bytes, producer_id, producer_epoch, base_sequence) {
            if identity.is_some() {
                // Hand the sequences out again rather than leave a gap.
                queue.sequence.rewind(base_sequence);
            }
            return Err(e);
        }
        batch.bytes = bytes.freeze();
        batch.producer_id = producer_id;
        batch.producer_epoch = producer_epoch;
        batch.base_sequence = base_sequence;
        Ok(())
    }

    /// Hands `base_sequence` and the ones after it out again on the
    /// partition, if `identity` is still current: for batches the broker
    /// refused outright (so it never saw those sequences). The caller must
    /// not have drained a newer batch of the partition since.
    pub fn rewind_sequence(&self, topic: &str, partition: u32, identity: ProducerIdentity, base_sequence: i32) {
        let mut state = self.inner.lock();
        if state.identity == Some(identity) {
            state.queue_mut(topic, partition).sequence.rewind(base_sequence);
        }
    }

    /// Bytes of buffer memory held by batches not yet complete (and by
    /// appends about to use it). Never more than `buffer_memory`.
    pub fn buffered_bytes(&self) -> usize {
        self.inner.ledger.pool.used()
    }

    /// Batches created and not yet complete, buffered or in flight.
    pub fn incomplete_batches(&self) -> usize {
        self.inner.ledger.incomplete_count()
    }
}

/// Ends a flush's "everything is ready" period even if the flush future is
/// dropped before its batches complete.
struct Flushing<'a>(&'a Inner);

impl Drop for Flushing<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.flushes = state.flushes.saturating_sub(1);
    }
}
