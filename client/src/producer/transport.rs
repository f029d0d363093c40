//! The seam between the producer's sender loop and the network.

use std::future::Future;
use std::time::Duration;

use strata_proto::broker::{Acks as WireAcks, ProduceRequest, ProduceResponse};

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

/// Carries one `Produce` request to one broker. [`GrpcTransport`] is the
/// real one; tests put an in-memory cluster behind it.
///
/// The sender loop around it does everything else (grouping batches by
/// leader, retries, ordering), so an implementation only moves bytes and
/// reports failures of the whole call as a [`ClientError`] (per-partition
/// failures travel inside the response).
pub trait ProduceTransport: Send + Sync + 'static {
    /// Sends `request` to the broker at `addr` and waits at most `timeout`
    /// for its answer.
    fn produce(
        &self,
        addr: &str,
        request: ProduceRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<ProduceResponse, ClientError>> + Send;
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
            // treats this like any retriable failure (at-least-once until
            // idempotence lands).
            Err(_) => Err(ClientError::RequestTimedOut(format!("no answer from {addr} within {timeout:?}"))),
        }
    }
}
