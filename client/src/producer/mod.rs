//! The producer: partitioners, the record accumulator (batching, linger,
//! compression, bounded memory with back-pressure, delivery futures,
//! idempotence sequences), the sender loop that carries batches to
//! partition leaders with retries (idempotent by default: producer ids from
//! the cluster, so a retry never writes a record twice), and [`Producer`],
//! which ties them to a [`MetadataClient`](crate::metadata::MetadataClient).
//!
//! The accumulator opens no connection and reads no clock for its rules;
//! callers pass `now` in. The network sits behind [`ProduceTransport`].

mod accumulator;
mod batch;
mod client;
mod error;
mod memory;
mod partitioner;
mod sender;
mod sequence;
mod transport;

#[cfg(test)]
mod idempotence_tests;
#[cfg(test)]
mod sender_tests;
#[cfg(test)]
mod tests;

pub use accumulator::{AccumulatorConfig, RecordAccumulator};
pub use batch::{BatchAck, DeliveryFuture, ReadyBatch, RecordMetadata};
pub use client::{Producer, ProducerConfig};
pub use error::ProduceError;
pub use partitioner::{DefaultPartitioner, Partitioner, RoundRobinPartitioner, murmur2_partition};
pub use sequence::{ProducerIdentity, SequenceTracker, increment_sequence};
pub use strata_proto::record_batch::{Compression, Record, RecordHeader};
pub use transport::{Acks, GrpcTransport, ProduceTransport};
