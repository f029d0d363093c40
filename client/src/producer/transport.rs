//! The seam between the producer's sender loop and the network.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use strata_proto::broker::{
    Acks as WireAcks, InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse,
};

use super::sequence::ProducerIdentity;
use crate::error::ClientError;
use crate::metadata::MetadataClient;

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

    /// The value Strata's `ProduceRequest` carries.
    pub fn to_wire(self) -> WireAcks {
        match self {
            Acks::None => WireAcks::None,
            Acks::Leader => WireAcks::Leader,
            Acks::All => WireAcks::All,
        }
    }
}

/// `0`, `1` or `all`, as Kafka's `acks` setting spells them.
impl fmt::Display for Acks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        })
    }
}

/// Carries one `Produce` request to one broker, and asks the cluster for
/// an idempotent producer id. [`GrpcTransport`] is the real one; tests put
/// an in-memory cluster behind it.
///
/// The sender loop around it does everything else (grouping batches by
/// leader, retries, ordering, producer ids and sequences), so an
/// implementation only moves bytes and reports failures of the whole call
/// as a [`ClientError`] (per-partition failures travel inside the response).
pub trait ProduceTransport: Send + Sync + 'static {
    /// Sends `request` to the broker at `addr` and waits at most `timeout`
    /// for its answer.
    fn produce(
        &self,
        addr: &str,
        request: ProduceRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<ProduceResponse, ClientError>> + Send;

    /// Obtains a fresh producer id and epoch from any broker that answers,
    /// each call waiting at most `timeout`. The sender retries failures.
    fn init_producer_id(&self, timeout: Duration)
    -> impl Future<Output = Result<ProducerIdentity, ClientError>> + Send;
}

/// Checks an `InitProducerId` answer from the broker at `addr`.
fn identity_from(response: &InitProducerIdResponse, addr: &str) -> Result<ProducerIdentity, ClientError> {
    match i16::try_from(response.producer_epoch) {
        Ok(epoch) if response.producer_id >= 0 && epoch >= 0 => {
            Ok(ProducerIdentity { producer_id: response.producer_id, epoch })
        }
        _ => Err(ClientError::Other {
            code: 0,
            message: format!(
                "broker at {addr} handed out an unusable producer id {} with epoch {}",
                response.producer_id, response.producer_epoch
            ),
        }),
    }
}

/// `Produce` over gRPC, on the metadata client's cached channels.
#[derive(Debug, Clone)]
pub struct GrpcTransport {
    metadata: MetadataClient,
}

impl GrpcTransport {
    pub fn new(metadata: MetadataClient) -> GrpcTransport {
        GrpcTransport { metadata }
    }
}

impl ProduceTransport for GrpcTransport {
    async fn produce(
        &self,
        addr: &str,
        request: ProduceRequest,
        timeout: Duration,
    ) -> Result<ProduceResponse, ClientError> {
        let mut client = self.metadata.broker_client(addr)?;
        match tokio::time::timeout(timeout, client.produce(request)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(ClientError::from_status(&status, addr)),
            // The batches may or may not have been appended; the sender
            // retries them like any retriable failure. An idempotent
            // producer resends the same sequences, so the broker drops a
            // duplicate; without idempotence this is at-least-once.
            Err(_) => Err(ClientError::RequestTimedOut(format!("no answer from {addr} within {timeout:?}"))),
        }
    }

    async fn init_producer_id(&self, timeout: Duration) -> Result<ProducerIdentity, ClientError> {
        let mut last = None;
        for addr in self.metadata.brokers_to_try() {
            let mut client = match self.metadata.broker_client(&addr) {
                Ok(client) => client,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            match tokio::time::timeout(timeout, client.init_producer_id(InitProducerIdRequest {})).await {
                Ok(Ok(response)) => return identity_from(response.get_ref(), &addr),
                Ok(Err(status)) => last = Some(ClientError::from_status(&status, &addr)),
                Err(_) => {
                    last = Some(ClientError::RequestTimedOut(format!("no producer id from {addr} within {timeout:?}")));
                }
            }
        }
        Err(last.unwrap_or_else(|| self.metadata.unreachable_error()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_ids_are_checked() {
        let answer = |producer_id, producer_epoch| InitProducerIdResponse { producer_id, producer_epoch };
        assert_eq!(identity_from(&answer(42, 3), "b:1"), Ok(ProducerIdentity { producer_id: 42, epoch: 3 }));
        for (id, epoch) in [(-1, 0), (42, -1), (42, i32::from(i16::MAX) + 1)] {
            let refused = identity_from(&answer(id, epoch), "b:1");
            assert!(
                matches!(&refused, Err(ClientError::Other { message, .. }) if message.contains("b:1")),
                "{refused:?}"
            );
        }
        assert_eq!([Acks::None, Acks::Leader, Acks::All].map(|a| a.to_string()), ["0", "1", "all"]);
    }
}
