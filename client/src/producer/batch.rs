//! Batches on their way out, and the futures that report each record's fate.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use futures::future::{FutureExt, Shared};
use tokio::sync::oneshot;

use super::error::ProduceError;
use super::memory::MemoryPool;
use super::sequence::ProducerIdentity;

/// What the partition leader answered for a batch it appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchAck {
    /// Offset the leader gave the batch's first record; negative when the
    /// broker reports none (`acks=0`).
    pub base_offset: i64,
    /// The broker's timestamp for every record, when the topic uses
    /// log-append time.
    pub log_append_time: Option<i64>,
}

/// Where a record ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    pub topic: Arc<str>,
    pub partition: u32,
    /// -1 when the broker reported no offset (`acks=0`).
    pub offset: i64,
    /// The record's own timestamp, or the broker's under log-append time.
    pub timestamp: i64,
}

pub(crate) type Outcome = Result<BatchAck, ProduceError>;
pub(crate) type Signal = Shared<oneshot::Receiver<Outcome>>;

/// Resolves once the batch holding the record is acknowledged or failed.
/// Dropping it does not withdraw the record.
#[must_use = "the record is sent anyway; the future only reports the outcome"]
pub struct DeliveryFuture {
    signal: Signal,
    topic: Arc<str>,
    partition: u32,
    index: u32,
    timestamp: i64,
}

impl DeliveryFuture {
    pub(crate) fn new(signal: Signal, topic: Arc<str>, partition: u32, index: u32, timestamp: i64) -> DeliveryFuture {
        DeliveryFuture { signal, topic, partition, index, timestamp }
    }

    /// The partition the record was appended to.
    pub fn partition(&self) -> u32 {
        self.partition
    }
}

impl fmt::Debug for DeliveryFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryFuture")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, ProduceError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let outcome = ready!(Pin::new(&mut this.signal).poll(cx));
        Poll::Ready(match outcome {
            Ok(Ok(ack)) => Ok(RecordMetadata {
                topic: this.topic.clone(),
                partition: this.partition,
                offset: if ack.base_offset < 0 { -1 } else { ack.base_offset.wrapping_add(i64::from(this.index)) },
                timestamp: ack.log_append_time.unwrap_or(this.timestamp),
            }),
            Ok(Err(e)) => Err(e),
            // Completion always sends before it goes away; a closed channel
            // means the process is tearing the producer down.
            Err(_) => Err(ProduceError::Aborted),
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a single map operation, so a panic elsewhere
    // cannot leave the map half-updated.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Bookkeeping shared by every batch: the memory budget and the set of
/// batches not yet complete (what `flush` waits for).
#[derive(Debug)]
pub(crate) struct Ledger {
    pub(crate) pool: MemoryPool,
    incomplete: Mutex<HashMap<u64, Signal>>,
    next_id: AtomicU64,
}

impl Ledger {
    pub(crate) fn new(buffer_memory: usize) -> Ledger {
        Ledger {
            pool: MemoryPool::new(buffer_memory),
            incomplete: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        }
    }

    /// Signals of every batch created so far and not yet complete.
    pub(crate) fn incomplete(&self) -> Vec<Signal> {
        lock(&self.incomplete).values().cloned().collect()
    }

    pub(crate) fn incomplete_count(&self) -> usize {
        lock(&self.incomplete).len()
    }
}

/// The obligation to report a batch's outcome. Owns the batch's memory and
/// gives it back when it goes, reported or not, so a batch lost by the
/// sender can never shrink the budget for good.
pub(crate) struct Completion {
    ledger: Arc<Ledger>,
    id: u64,
    reserved: usize,
    tx: Option<oneshot::Sender<Outcome>>,
}

impl Completion {
    /// A new incomplete batch and the signal its records' futures watch.
    pub(crate) fn new(ledger: &Arc<Ledger>) -> (Completion, Signal) {
        let (tx, rx) = oneshot::channel();
        let signal = rx.shared();
        let id = ledger.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&ledger.incomplete).insert(id, signal.clone());
        (Completion { ledger: ledger.clone(), id, reserved: 0, tx: Some(tx) }, signal)
    }

    /// Makes the batch responsible for `bytes` more of reserved memory.
    pub(crate) fn add_reserved(&mut self, bytes: usize) {
        self.reserved += bytes;
    }

    pub(crate) fn reserved(&self) -> usize {
        self.reserved
    }

    pub(crate) fn finish(mut self, outcome: Outcome) {
        if let Some(tx) = self.tx.take() {
            // Nobody listening (every delivery future dropped) is fine.
            let _ = tx.send(outcome);
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Err(ProduceError::Aborted));
        }
        self.ledger.pool.release(self.reserved);
        lock(&self.ledger.incomplete).remove(&self.id);
    }
}

/// An encoded batch for one partition, ready to be sent.
///
/// The sender may send it as often as retries need (the bytes and the
/// idempotence sequence stay the same), and must end with
/// [`ReadyBatch::complete`]. Dropping it instead fails its records with
/// [`ProduceError::Aborted`]; either way its memory returns to the budget.
pub struct ReadyBatch {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: u32,
    pub(crate) bytes: Bytes,
    pub(crate) record_count: u32,
    pub(crate) producer_id: i64,
    pub(crate) producer_epoch: i16,
    pub(crate) base_sequence: i32,
    pub(crate) created: Instant,
    pub(crate) completion: Completion,
}

impl ReadyBatch {
    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The batch in Kafka RecordBatch v2 layout, base offset 0.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn record_count(&self) -> u32 {
        self.record_count
    }

    /// `NO_PRODUCER_ID` unless the producer is idempotent.
    pub fn producer_id(&self) -> i64 {
        self.producer_id
    }

    pub fn producer_epoch(&self) -> i16 {
        self.producer_epoch
    }

    /// `NO_SEQUENCE` unless the producer is idempotent.
    pub fn base_sequence(&self) -> i32 {
        self.base_sequence
    }

    /// The idempotent identity the batch carries, if any.
    pub fn identity(&self) -> Option<ProducerIdentity> {
        (self.producer_id >= 0)
            .then_some(ProducerIdentity { producer_id: self.producer_id, epoch: self.producer_epoch })
    }

    /// When the batch's first record was appended (delivery timeouts count
    /// from here).
    pub fn created(&self) -> Instant {
        self.created
    }

    /// Bytes of buffer memory the batch holds until it completes.
    pub fn reserved_bytes(&self) -> usize {
        self.completion.reserved()
    }

    /// Reports the batch's outcome to every record's delivery future and
    /// returns its memory.
    pub fn complete(self, outcome: Result<BatchAck, ProduceError>) {
        self.completion.finish(outcome);
    }
}

impl fmt::Debug for ReadyBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadyBatch")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("bytes", &self.bytes.len())
            .field("record_count", &self.record_count)
            .field("producer_id", &self.producer_id)
            .field("producer_epoch", &self.producer_epoch)
            .field("base_sequence", &self.base_sequence)
            .finish_non_exhaustive()
    }
}
