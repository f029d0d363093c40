//! Every server's Prometheus endpoint, scraped after real traffic, and its
//! gRPC health service.

use std::time::Duration;

use bytes::Bytes;
use strata_client::admin::{AdminClient, NewTopic};
use strata_client::consumer::{Consumer, ConsumerConfig, OffsetReset, TopicPartition};
use strata_client::group::{GroupConfig, GroupConsumer};
use strata_client::metadata::{MetadataClient, MetadataConfig};
use strata_client::producer::{Producer, ProducerConfig};
use strata_tests::Cluster;
use strata_tests::scrape::{sample_sum, scrape};
use strata_tests::wait::eventually;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_server_exports_metrics_and_answers_health_checks() -> anyhow::Result<()> {
    let cluster = Cluster::start(3).await?;
    let metadata = MetadataClient::connect(&cluster.bootstrap(), MetadataConfig::default()).await?;
    AdminClient::new(metadata.clone()).create_topic(NewTopic::new("m", 1, 3)).await?;
    let producer = Producer::new(metadata.clone(), ProducerConfig::default())?;
    let mut deliveries = Vec::new();
    for i in 0..100 {
        deliveries.push(producer.send("m", None, Some(Bytes::from(format!("v{i}"))), Vec::new(), None).await?);
    }
    for d in deliveries {
        d.await?;
    }
    producer.close().await;
    let mut consumer = Consumer::new(
        metadata.clone(),
        ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() },
    );
    consumer.assign([TopicPartition::new("m", 0)]);
    let mut read = 0;
    while read < 100 {
        read += consumer.poll(Duration::from_secs(1)).await?.len();
    }

    // A group that consumed 60 of the 100 records: its coordinator
    // exports the group, its member and a lag of 40.
    let mut group = GroupConsumer::new(
        metadata.clone(),
        ConsumerConfig::default(),
        GroupConfig { enable_auto_commit: false, ..GroupConfig::new("watchers") },
    );
    group.subscribe(&["m"]).await?;
    while group.assignment().is_empty() {
        group.poll(Duration::from_millis(100)).await?;
    }
    group.commit_offsets_sync(&[(TopicPartition::new("m", 0), 60)]).await?;
    eventually("the group's lag in its coordinator's metrics", Duration::from_secs(30), || async {
        let mut texts = Vec::new();
        for node in cluster.brokers.values() {
            texts.push(scrape(node.metrics_bound.expect("broker metrics address")).await?);
        }
        let sum = |name: &str, labels: &[&str]| texts.iter().filter_map(|t| sample_sum(t, name, labels)).sum::<f64>();
        anyhow::ensure!(sum("strata_broker_groups", &[]) == 1.0, "groups: {}", sum("strata_broker_groups", &[]));
        anyhow::ensure!(sum("strata_group_members", &["group=\"watchers\""]) == 1.0, "members");
        let lag = sum("strata_group_lag", &["group=\"watchers\"", "partition=\"0\""]);
        anyhow::ensure!(lag == 40.0, "lag {lag}");
        Ok(())
    })
    .await?;
    group.close().await?;

    let mut brokers = Vec::new();
    for node in cluster.brokers.values() {
        brokers.push(scrape(node.metrics_bound.expect("broker metrics address")).await?);
    }
    let total = |name: &str, labels: &[&str]| brokers.iter().filter_map(|t| sample_sum(t, name, labels)).sum::<f64>();
    assert_eq!(total("strata_broker_records_in_total", &[]), 100.0, "records appended by the leader");
    assert!(total("strata_broker_bytes_in_total", &[]) > 0.0);
    assert!(total("strata_broker_bytes_out_total", &["kind=\"replica\""]) > 0.0, "followers fetched");
    assert!(total("strata_broker_bytes_out_total", &["kind=\"consumer\""]) > 0.0, "the consumer fetched");
    assert!(total("strata_broker_request_seconds_count", &["call=\"produce\""]) >= 1.0);
    assert!(total("strata_broker_request_seconds_bucket", &["call=\"fetch\"", "le=\"+Inf\""]) >= 1.0);
    assert_eq!(total("strata_broker_partitions_led", &[]), 1.0);
    assert_eq!(total("strata_broker_partitions_followed", &[]), 2.0);
    assert_eq!(total("strata_broker_under_replicated_partitions", &[]), 0.0);
    assert!(total("strata_broker_log_size_bytes", &[]) > 0.0);
    for text in &brokers {
        assert!(sample_sum(text, "strata_broker_partitions_led", &[]).is_some(), "every broker has the gauge");
    }

    let mut leaders = 0.0;
    for m in cluster.ensemble.members.values() {
        let text = scrape(m.metrics_bound.expect("coordinator metrics address")).await?;
        for name in [
            "strata_coord_term",
            "strata_coord_leader_id",
            "strata_coord_commit_index",
            "strata_coord_apply_index",
            "strata_coord_sessions",
            "strata_coord_watches",
            "strata_coord_apply_seconds_count",
        ] {
            assert!(sample_sum(&text, name, &[]).is_some(), "member {} exports {name}", m.id);
        }
        assert!(sample_sum(&text, "strata_coord_sessions", &[]).unwrap_or(0.0) >= 3.0, "3 brokers hold sessions");
        leaders += sample_sum(&text, "strata_coord_is_leader", &[]).unwrap_or(0.0);
    }
    assert_eq!(leaders, 1.0, "exactly one member says it leads");

    let mut addrs: Vec<String> = cluster.bootstrap();
    addrs.extend(cluster.ensemble.client_addrs());
    for (addr, service) in addrs.iter().flat_map(|a| {
        ["", "strata.broker.v1.Broker", "strata.coord.v1.Coordinator"].map(|s| (a.clone(), s.to_string()))
    }) {
        let is_broker = cluster.bootstrap().contains(&addr);
        let expected = match service.as_str() {
            "" => true,
            "strata.broker.v1.Broker" => is_broker,
            _ => !is_broker,
        };
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?.connect().await?;
        let mut health = HealthClient::new(channel);
        let answer = health.check(HealthCheckRequest { service: service.clone() }).await;
        match answer {
            Ok(r) => {
                assert!(expected, "{addr} should not know {service:?}");
                assert_eq!(r.into_inner().status(), ServingStatus::Serving, "{addr} {service:?}");
            }
            Err(status) => {
                assert!(!expected, "{addr} {service:?}: {status}");
                assert_eq!(status.code(), tonic::Code::NotFound);
            }
        }
    }
    Ok(())
}
