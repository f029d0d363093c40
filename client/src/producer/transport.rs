//! The seam between the producer's core and the network.

use std::future::Future;
use std::time::Duration;

use super::batch::{BatchAck, ReadyBatch};
use super::error::ProduceError;

/// How many replicas must have a batch before the leader answers (Kafka
/// `acks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// Do not wait for any answer (`acks=0`); offsets are unknown.
    None,
    /// The leader has appended it (`acks=1`).
    Leader,
    /// Every in-sync replica has it (`acks=all`).
    #[default]
    All,
}

impl Acks {
    /// The value Kafka puts on the wire: 0, 1 or -1.
    pub fn as_i32(self) -> i32 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

/// Carries encoded batches to their partition leaders. The gRPC client
/// implements it; tests implement it with an in-memory log.
///
/// The sender loop around it is transport-independent: drain ready batches
/// from the [`RecordAccumulator`](super::RecordAccumulator), `produce` them,
/// then complete each batch with its outcome, or send it again if the
/// outcome is retriable and time allows.
pub trait ProduceTransport: Send + Sync {
    /// Sends `batches` (each for its own topic-partition) with the given
    /// acks, the broker waiting at most `timeout` for replication. Answers
    /// one outcome per batch, in the order given; a failure of the whole
    /// request (say, a lost connection) is that error for every batch.
    fn produce(
        &self,
        acks: Acks,
        timeout: Duration,
        batches: &[ReadyBatch],
    ) -> impl Future<Output = Vec<Result<BatchAck, ProduceError>>> + Send;
}
