//! Idempotence end to end over gRPC against the fake cluster, whose brokers
//! hand out producer ids and drop duplicates on (producer id, epoch,
//! sequence) like real ones. Faults are injected by count, never by timing,
//! so each outcome is fixed; only how long a run takes varies.

use std::time::Duration;

use bytes::Bytes;
use strata_proto::broker::broker_client::BrokerClient;
use strata_proto::broker::{ProducePartition, ProduceRequest, ProduceTopic};
use strata_proto::common::ErrorCode;
use strata_proto::record_batch::{NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE, RecordBatchBuilder};

use super::*;
use crate::error::ClientError;
use crate::fake_cluster::FakeCluster;
use crate::metadata::{MetadataClient, MetadataConfig};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn connect(cluster: &FakeCluster) -> MetadataClient {
    let config =
        MetadataConfig { reconnect_backoff: ms(10), reconnect_backoff_max: ms(100), ..MetadataConfig::default() };
    let metadata = MetadataClient::connect(&cluster.bootstrap(), config).await.expect("connect");
    metadata.wait_for_topic("t", Duration::from_secs(5)).await.expect("topic");
    metadata
}

fn config() -> ProducerConfig {
    ProducerConfig {
        accumulator: AccumulatorConfig {
            linger: ms(1),
            delivery_timeout: Duration::from_secs(30),
            ..AccumulatorConfig::default()
        },
        retry_backoff: ms(10),
        retry_backoff_max: ms(50),
        ..ProducerConfig::default()
    }
}

/// Sends `count` records to `partition` as one batch and waits for each.
async fn send_batch(producer: &Producer, partition: u32, count: usize) -> Vec<Result<RecordMetadata, ProduceError>> {
    let mut deliveries = Vec::new();
    for i in 0..count {
        let record = Record::new(1_000, None, Some(Bytes::from(format!("p{partition}-{i}"))));
        deliveries.push(producer.send_record("t", Some(partition), record).await.expect("accepted"));
    }
    producer.flush().await;
    futures::future::join_all(deliveries).await
}

/// (producer id, epoch, base sequence, records) of a partition's stored
/// batches, in offset order.
fn stored(cluster: &FakeCluster, partition: u32) -> Vec<(i64, i16, i32, i32)> {
    cluster
        .batch_headers("t", partition)
        .iter()
        .map(|h| (h.producer_id, h.producer_epoch, h.base_sequence, h.records_count))
        .collect()
}

fn offsets(outcomes: &[Result<RecordMetadata, ProduceError>]) -> Vec<i64> {
    outcomes.iter().map(|o| o.as_ref().expect("delivered").offset).collect()
}

#[tokio::test]
async fn a_retry_after_a_lost_answer_is_not_written_twice() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", &[1]);
    // The broker appends the batch, then the connection breaks twice before
    // its answer gets through: the producer sends the same batch three times.
    cluster.lose_produce_answers("t", 0, 2);
    let producer = Producer::new(connect(&cluster).await, config()).expect("a valid config");

    let outcomes = send_batch(&producer, 0, 5).await;
    assert_eq!(offsets(&outcomes), [0, 1, 2, 3, 4], "the retry learns the original offsets");
    assert_eq!(cluster.produce_calls(1), 3, "sent three times");
    assert_eq!(cluster.records("t", 0).len(), 5, "each record is stored once");
    assert_eq!(stored(&cluster, 0), [(1000, 0, 0, 5)]);

    // The next batch continues the sequence and the log.
    assert_eq!(offsets(&send_batch(&producer, 0, 2).await), [5, 6]);
    assert_eq!(stored(&cluster, 0), [(1000, 0, 0, 5), (1000, 0, 5, 2)]);
    assert_eq!(cluster.init_producer_id_calls(), 1);
    producer.close().await;
}

#[tokio::test]
async fn sequences_continue_across_batches_of_each_partition() {
    let cluster = FakeCluster::start(2).await;
    cluster.create_topic("t", &[1, 2]);
    let producer = Producer::new(connect(&cluster).await, config()).expect("a valid config");
    for (partition, count) in [(0, 3), (1, 4), (0, 2), (0, 1), (1, 6)] {
        for outcome in send_batch(&producer, partition, count).await {
            outcome.expect("delivered");
        }
    }
    assert_eq!(stored(&cluster, 0), [(1000, 0, 0, 3), (1000, 0, 3, 2), (1000, 0, 5, 1)]);
    assert_eq!(stored(&cluster, 1), [(1000, 0, 0, 4), (1000, 0, 4, 6)]);
    assert_eq!(cluster.init_producer_id_calls(), 1);
    producer.close().await;
}

#[tokio::test]
async fn a_sequence_error_takes_a_new_producer_id_and_every_partition_restarts_at_zero() {
    let cluster = FakeCluster::start(2).await;
    cluster.create_topic("t", &[1, 2]);
    let producer = Producer::new(connect(&cluster).await, config()).expect("a valid config");
    assert_eq!(offsets(&send_batch(&producer, 0, 2).await), [0, 1]);
    assert_eq!(offsets(&send_batch(&producer, 1, 3).await), [0, 1, 2]);

    // The broker has lost track of the producer's place in partition 0.
    cluster.fail_produce("t", 0, ErrorCode::OutOfOrderSequenceNumber, 1);
    for outcome in send_batch(&producer, 0, 1).await {
        assert!(matches!(outcome, Err(ProduceError::Broker(ClientError::OutOfOrderSequenceNumber(_)))), "{outcome:?}");
    }

    // Everything after it goes under a new producer id, from sequence 0 in
    // every partition, the one that failed and the one that did not.
    assert_eq!(offsets(&send_batch(&producer, 0, 2).await), [2, 3]);
    assert_eq!(offsets(&send_batch(&producer, 1, 1).await), [3]);
    assert_eq!(cluster.init_producer_id_calls(), 2);
    assert_eq!(stored(&cluster, 0), [(1000, 0, 0, 2), (1001, 0, 0, 2)]);
    assert_eq!(stored(&cluster, 1), [(1000, 0, 0, 3), (1001, 0, 0, 1)]);
    producer.close().await;
}

#[tokio::test]
async fn producer_id_failures_are_retried_while_records_wait() {
    let cluster = FakeCluster::start(2).await;
    cluster.create_topic("t", &[1]);
    cluster.fail_init_producer_id(3);
    let producer = Producer::new(connect(&cluster).await, config()).expect("a valid config");
    assert_eq!(offsets(&send_batch(&producer, 0, 2).await), [0, 1]);
    assert_eq!(cluster.init_producer_id_calls(), 4);
    assert_eq!(cluster.produce_calls(1), 1, "nothing was sent without a producer id");
    assert_eq!(stored(&cluster, 0), [(1000, 0, 0, 2)]);
    producer.close().await;
}

#[tokio::test]
async fn without_idempotence_batches_carry_no_producer_id() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", &[1]);
    let config = ProducerConfig { acks: Acks::Leader, enable_idempotence: false, ..config() };
    let producer = Producer::new(connect(&cluster).await, config).expect("a valid config");
    assert_eq!(offsets(&send_batch(&producer, 0, 3).await), [0, 1, 2]);
    assert_eq!(offsets(&send_batch(&producer, 0, 1).await), [3]);
    let none = (NO_PRODUCER_ID, NO_PRODUCER_EPOCH, NO_SEQUENCE);
    assert_eq!(stored(&cluster, 0), [(none.0, none.1, none.2, 3), (none.0, none.1, none.2, 1)]);
    assert_eq!(cluster.init_producer_id_calls(), 0);
    producer.close().await;
}

#[tokio::test]
async fn the_fake_broker_drops_duplicates_and_refuses_gaps() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", &[1]);
    let mut client = BrokerClient::connect(format!("http://{}", cluster.addr(1))).await.expect("connect");
    let mut produce = async |producer_id: i64, epoch: i16, sequence: i32, records: usize| {
        let mut builder = RecordBatchBuilder::new(Compression::None).producer(producer_id, epoch, sequence);
        for i in 0..records {
            builder.append(1, None, Some(Bytes::from(format!("{i}")))).expect("append");
        }
        let records = builder.build().expect("build");
        let request = ProduceRequest {
            topics: vec![ProduceTopic {
                topic: "t".into(),
                partitions: vec![ProducePartition { partition: 0, records }],
            }],
            acks: Acks::All.to_wire() as i32,
            timeout_ms: 1000,
        };
        let response = client.produce(request).await.expect("answered").into_inner();
        let answer = &response.topics[0].partitions[0];
        match ClientError::from_partition_error(answer.error.as_ref()) {
            None => Ok(answer.base_offset),
            Some(e) => Err(e),
        }
    };
    assert_eq!(produce(7, 0, 0, 2).await, Ok(0));
    assert_eq!(produce(7, 0, 2, 3).await, Ok(2));
    assert_eq!(produce(7, 0, 0, 2).await, Ok(0), "a recent duplicate answers its first offset");
    assert_eq!(produce(7, 0, 2, 3).await, Ok(2));
    assert!(matches!(produce(7, 0, 9, 1).await, Err(ClientError::OutOfOrderSequenceNumber(_))), "a gap");
    assert!(matches!(produce(8, 0, 4, 1).await, Err(ClientError::UnknownProducerId(_))), "a stranger mid-sequence");
    assert_eq!(produce(7, 1, 0, 1).await, Ok(5), "a new epoch starts at 0");
    assert!(matches!(produce(7, 0, 5, 1).await, Err(ClientError::InvalidProducerEpoch(_))), "an old epoch");
    assert_eq!(produce(NO_PRODUCER_ID, NO_PRODUCER_EPOCH, NO_SEQUENCE, 1).await, Ok(6), "no dedupe without an id");
    assert_eq!(produce(NO_PRODUCER_ID, NO_PRODUCER_EPOCH, NO_SEQUENCE, 1).await, Ok(7));
    assert_eq!(cluster.records("t", 0).len(), 8);
}
