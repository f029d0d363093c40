//! Thin gRPC handlers: the Broker service (produce, fetch, offsets,
//! metadata), the Admin service and the Groups service.
//!
//! Invariant: only this module sees protobuf types.

pub mod admin;
pub mod fetch;
pub mod groups;
pub mod list_offsets;
pub mod produce;

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use strata_proto::broker as pb;
use strata_proto::broker::admin_server::{Admin, AdminServer};
use strata_proto::broker::broker_server::{Broker, BrokerServer};
use strata_proto::broker::groups_server::GroupsServer;
use strata_proto::common::{ErrorCode, ErrorDetail};
use strata_proto::error::status_from_detail;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::group::GroupCoordinator;
use crate::metadata::model::ClusterMetadata;
use crate::metadata::producer_ids::ProducerIds;
use crate::replica::ReplicaManager;
use admin::AdminService;

pub struct Services {
    pub replicas: Arc<ReplicaManager>,
    pub metadata: watch::Receiver<Arc<ClusterMetadata>>,
    pub admin: AdminService,
    pub producer_ids: Arc<ProducerIds>,
    pub groups: Arc<GroupCoordinator>,
    pub max_request_bytes: usize,
}

fn status(code: ErrorCode, message: String) -> Status {
    status_from_detail(ErrorDetail { code: code as i32, message, ..Default::default() })
}

fn partition_error_status(e: pb::PartitionError) -> Status {
    status_from_detail(ErrorDetail { code: e.code, message: e.message, ..Default::default() })
}

/// Metadata as clients see it (optionally only some topics).
pub fn metadata_response(md: &ClusterMetadata, topics: &[String]) -> pb::MetadataResponse {
    let brokers = md
        .brokers
        .iter()
        .map(|(id, b)| pb::BrokerInfo { id: *id, addr: b.addr.clone(), rack: b.rack.clone() })
        .collect();
    let topic_meta = |name: &str| -> pb::TopicMetadata {
        match md.topics.get(name) {
            None => pb::TopicMetadata {
                name: name.to_string(),
                error: Some(pb::PartitionError {
                    code: ErrorCode::UnknownTopicOrPartition as i32,
                    message: format!("no topic {name}"),
                    leader_id: -1,
                    leader_addr: String::new(),
                }),
                ..Default::default()
            },
            Some(t) => pb::TopicMetadata {
                name: name.to_string(),
                topic_id: t.topic_id.clone(),
                error: None,
                partitions: t
                    .partitions
                    .iter()
                    .enumerate()
                    .map(|(p, info)| pb::PartitionMetadata {
                        partition: p as u32,
                        leader: info.state.as_ref().map_or(-1, |s| s.leader),
                        leader_epoch: info.state.as_ref().map_or(-1, |s| s.leader_epoch),
                        replicas: info.replicas.clone(),
                        isr: info.state.as_ref().map(|s| s.isr.clone()).unwrap_or_default(),
                    })
                    .collect(),
                configs: t.configs.clone().into_iter().collect(),
            },
        }
    };
    let topics = if topics.is_empty() {
        md.topics.keys().map(|n| topic_meta(n)).collect()
    } else {
        topics.iter().map(|n| topic_meta(n)).collect()
    };
    pb::MetadataResponse {
        brokers,
        controller_id: md.controller.as_ref().map_or(-1, |c| c.broker_id),
        topics,
        revision: md.revision,
    }
}

/// Records a call's latency in `strata_broker_request_seconds{call}` when
/// dropped, so every way out of a handler is counted.
struct CallTimer(&'static str, std::time::Instant);

impl Drop for CallTimer {
    fn drop(&mut self) {
        metrics::histogram!("strata_broker_request_seconds", "call" => self.0).record(self.1.elapsed().as_secs_f64());
    }
}

fn timed(call: &'static str) -> CallTimer {
    CallTimer(call, std::time::Instant::now())
}

struct BrokerHandler(Arc<Services>);
struct AdminHandler(Arc<Services>);

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Broker for BrokerHandler {
    async fn produce(&self, request: Request<pb::ProduceRequest>) -> Result<Response<pb::ProduceResponse>, Status> {
        let _timer = timed("produce");
        produce::produce(&self.0.replicas, request.into_inner(), self.0.max_request_bytes).await.map(Response::new)
    }

    async fn fetch(&self, request: Request<pb::FetchRequest>) -> Result<Response<pb::FetchResponse>, Status> {
        let _timer = timed("fetch");
        fetch::fetch(&self.0.replicas, request.into_inner()).await.map(Response::new)
    }

    async fn list_offsets(
        &self,
        request: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        let _timer = timed("list_offsets");
        list_offsets::list_offsets(&self.0.replicas, request.into_inner()).await.map(Response::new)
    }

    async fn metadata(&self, request: Request<pb::MetadataRequest>) -> Result<Response<pb::MetadataResponse>, Status> {
        let _timer = timed("metadata");
        let md = self.0.metadata.borrow().clone();
        if md.revision == 0 {
            return Err(status(ErrorCode::BrokerNotAvailable, "broker is still loading cluster metadata".into()));
        }
        Ok(Response::new(metadata_response(&md, &request.into_inner().topics)))
    }

    async fn offset_for_leader_epoch(
        &self,
        request: Request<pb::OffsetForLeaderEpochRequest>,
    ) -> Result<Response<pb::OffsetForLeaderEpochResponse>, Status> {
        let _timer = timed("offset_for_leader_epoch");
        fetch::offset_for_leader_epoch(&self.0.replicas, request.into_inner()).await.map(Response::new)
    }

    async fn init_producer_id(
        &self,
        _request: Request<pb::InitProducerIdRequest>,
    ) -> Result<Response<pb::InitProducerIdResponse>, Status> {
        let _timer = timed("init_producer_id");
        match self.0.producer_ids.next().await {
            Ok(producer_id) => Ok(Response::new(pb::InitProducerIdResponse { producer_id, producer_epoch: 0 })),
            Err(e) => {
                tracing::warn!(error = %e, "cannot allocate a producer id");
                Err(status(ErrorCode::BrokerNotAvailable, format!("cannot allocate a producer id: {e}")))
            }
        }
    }

    type WatchMetadataStream = BoxStream<pb::MetadataResponse>;

    async fn watch_metadata(
        &self,
        request: Request<pb::MetadataRequest>,
    ) -> Result<Response<Self::WatchMetadataStream>, Status> {
        let topics = request.into_inner().topics;
        let mut rx = self.0.metadata.clone();
        let stream = async_stream(move |tx| async move {
            loop {
                let md = rx.borrow_and_update().clone();
                if md.revision > 0 && tx.send(Ok(metadata_response(&md, &topics))).await.is_err() {
                    return;
                }
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(stream))
    }
}

/// A stream fed by a task that gets the sending half of a channel.
fn async_stream<T, F, Fut>(f: F) -> BoxStream<T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl Admin for AdminHandler {
    async fn create_topics(
        &self,
        request: Request<pb::CreateTopicsRequest>,
    ) -> Result<Response<pb::CreateTopicsResponse>, Status> {
        let _timer = timed("create_topics");
        Ok(Response::new(self.0.admin.create_topics(request.into_inner()).await))
    }

    async fn delete_topics(
        &self,
        request: Request<pb::DeleteTopicsRequest>,
    ) -> Result<Response<pb::DeleteTopicsResponse>, Status> {
        let _timer = timed("delete_topics");
        Ok(Response::new(self.0.admin.delete_topics(request.into_inner()).await))
    }

    async fn create_partitions(
        &self,
        request: Request<pb::CreatePartitionsRequest>,
    ) -> Result<Response<pb::CreatePartitionsResponse>, Status> {
        let _timer = timed("create_partitions");
        Ok(Response::new(self.0.admin.create_partitions(request.into_inner()).await))
    }

    async fn describe_configs(
        &self,
        request: Request<pb::DescribeConfigsRequest>,
    ) -> Result<Response<pb::DescribeConfigsResponse>, Status> {
        let _timer = timed("describe_configs");
        match self.0.admin.describe_configs(request.into_inner()).await {
            Ok(r) => Ok(Response::new(r)),
            Err(Some(e)) => Err(partition_error_status(e)),
            Err(None) => Err(status(ErrorCode::Internal, "describe failed".into())),
        }
    }

    async fn alter_configs(
        &self,
        request: Request<pb::AlterConfigsRequest>,
    ) -> Result<Response<pb::AlterConfigsResponse>, Status> {
        let _timer = timed("alter_configs");
        match self.0.admin.alter_configs(request.into_inner()).await {
            None => Ok(Response::new(pb::AlterConfigsResponse {})),
            Some(e) => Err(partition_error_status(e)),
        }
    }

    async fn elect_leaders(
        &self,
        request: Request<pb::ElectLeadersRequest>,
    ) -> Result<Response<pb::ElectLeadersResponse>, Status> {
        let _timer = timed("elect_leaders");
        self.0.admin.elect_leaders(request.into_inner()).await.map(Response::new).map_err(partition_error_status)
    }

    async fn describe_cluster(
        &self,
        _request: Request<pb::DescribeClusterRequest>,
    ) -> Result<Response<pb::DescribeClusterResponse>, Status> {
        let _timer = timed("describe_cluster");
        let md = self.0.metadata.borrow().clone();
        let r = metadata_response(&md, &[]);
        Ok(Response::new(pb::DescribeClusterResponse { brokers: r.brokers, controller_id: r.controller_id }))
    }
}

pub async fn serve(services: Arc<Services>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let limit = services.max_request_bytes + 1024 * 1024;
    let broker = BrokerServer::new(BrokerHandler(services.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(256 * 1024 * 1024);
    let groups = GroupsServer::new(groups::GroupsHandler(services.groups.clone()));
    let admin = AdminServer::new(AdminHandler(services));
    // The standard gRPC health service: SERVING once the broker has joined
    // the cluster and serves (this runs after its first registration).
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<BrokerServer<BrokerHandler>>().await;
    health_reporter.set_serving::<AdminServer<AdminHandler>>().await;
    health_reporter.set_serving::<GroupsServer<groups::GroupsHandler>>().await;
    let result = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .add_service(health)
        .add_service(broker)
        .add_service(admin)
        .add_service(groups)
        .serve_with_incoming_shutdown(strata_proto::transport::nodelay_incoming(listener), async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "broker server failed");
    }
}
