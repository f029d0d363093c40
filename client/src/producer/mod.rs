//! The producer's transport-independent core: partitioners, the record
//! accumulator (batching, linger, compression, bounded memory with
//! back-pressure, delivery futures, idempotence sequences), and the
//! [`ProduceTransport`] trait the network side implements.
//!
//! Nothing here opens a connection or reads the clock for its rules; callers
//! pass `now` in.

mod accumulator;
mod batch;
mod error;
mod memory;
mod partitioner;
mod sequence;
mod transport;

#[cfg(test)]
mod tests;

pub use accumulator::{AccumulatorConfig, RecordAccumulator};
pub use batch::{BatchAck, DeliveryFuture, ReadyBatch, RecordMetadata};
pub use error::ProduceError;
pub use partitioner::{DefaultPartitioner, Partitioner, RoundRobinPartitioner, murmur2_partition};
pub use sequence::{ProducerIdentity, SequenceTracker, increment_sequence};
pub use strata_proto::record_batch::{Compression, Record, RecordHeader};
pub use transport::{Acks, ProduceTransport};
