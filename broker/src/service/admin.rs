//! Admin API: topic creation, deletion, partition increase and configs,
//! written to the ensemble; the controller and every broker react through
//! their watches.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_coord_client::{CoordClient, CoordError, Txn};
use strata_proto::broker as pb;
use strata_proto::common::ErrorCode;
use tokio::sync::watch;

use crate::metadata::model::{BrokerId, BrokerRegistration, ClusterMetadata, TopicRecord, paths};

pub struct AdminService {
    pub coord: CoordClient,
    pub metadata: watch::Receiver<Arc<ClusterMetadata>>,
}

fn err(code: ErrorCode, message: impl Into<String>) -> Option<pb::PartitionError> {
    Some(pb::PartitionError { code: code as i32, message: message.into(), leader_id: -1, leader_addr: String::new() })
}

fn coord_err(e: CoordError) -> Option<pb::PartitionError> {
    match e {
        CoordError::Unavailable(m) => err(ErrorCode::RequestTimedOut, format!("ensemble unavailable: {m}")),
        other => err(ErrorCode::Internal, other.to_string()),
    }
}

/// Kafka's topic-name rules.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 249 {
        return Err("topic names are 1 to 249 characters".into());
    }
    if name == "." || name == ".." {
        return Err("'.' and '..' are not topic names".into());
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return Err(format!("topic name {name:?} may contain only ASCII letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

/// Spreads partitions over brokers: brokers are ordered so that racks
/// alternate, and partition p takes `rf` consecutive brokers from a start
/// that moves by one per partition, so leaders (the first replica) spread
/// evenly and replicas of one partition land on different racks when racks
/// allow it.
pub fn assign_replicas(
    brokers: &BTreeMap<BrokerId, BrokerRegistration>,
    partitions: u32,
    rf: u32,
    start: usize,
    first_partition: u32,
) -> Vec<Vec<BrokerId>> {
    let mut by_rack: BTreeMap<&str, Vec<BrokerId>> = BTreeMap::new();
    for (id, b) in brokers {
        by_rack.entry(b.rack.as_str()).or_default().push(*id);
    }
    let mut ordered = Vec::with_capacity(brokers.len());
    let mut round = 0;
    while ordered.len() < brokers.len() {
        for ids in by_rack.values() {
            if let Some(id) = ids.get(round) {
                ordered.push(*id);
            }
        }
        round += 1;
    }
    let n = ordered.len();
    (first_partition..first_partition + partitions)
        .map(|p| (0..rf as usize).map(|j| ordered[(start + p as usize + j) % n]).collect())
        .collect()
}

impl AdminService {
    /// Registered brokers, read from the ensemble (linearizable).
    async fn live_brokers(&self) -> Result<BTreeMap<BrokerId, BrokerRegistration>, CoordError> {
        let (ids, _) = self.coord.children(paths::BROKER_IDS).await?;
        let mut brokers = BTreeMap::new();
        for id in ids {
            let Ok(n) = id.parse::<BrokerId>() else { continue };
            match self.coord.get(&paths::broker(n)).await {
                Ok((data, _)) => {
                    if let Ok(reg) = serde_json::from_slice::<BrokerRegistration>(&data) {
                        brokers.insert(n, reg);
                    }
                }
                Err(CoordError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(brokers)
    }

    async fn wait_for_leaders(&self, topic: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut rx = self.metadata.clone();
        loop {
            let ready = rx
                .borrow_and_update()
                .topics
                .get(topic)
                .is_some_and(|t| t.partitions.iter().all(|p| p.state.as_ref().is_some_and(|s| s.leader >= 0)));
            if ready {
                return true;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else { return false };
            if tokio::time::timeout(left, rx.changed()).await.is_err() {
                return false;
            }
        }
    }

    pub async fn create_topics(&self, req: pb::CreateTopicsRequest) -> pb::CreateTopicsResponse {
        let mut results = Vec::new();
        for t in req.topics {
            let error = self.create_topic(&t, Duration::from_millis(u64::from(req.timeout_ms))).await;
            results.push(pb::TopicResult { name: t.name, error });
        }
        pb::CreateTopicsResponse { topics: results }
    }

    async fn create_topic(&self, t: &pb::CreateTopic, wait: Duration) -> Option<pb::PartitionError> {
        if let Err(m) = validate_topic_name(&t.name) {
            return err(ErrorCode::InvalidTopic, m);
        }
        if t.partitions == 0 || t.partitions > 100_000 {
            return err(ErrorCode::InvalidPartitions, "partitions must be between 1 and 100000");
        }
        let configs: BTreeMap<String, String> = t.configs.clone().into_iter().collect();
        if let Err(m) = crate::replica::validate_topic_configs(&configs) {
            return err(ErrorCode::InvalidConfig, m);
        }
        // Live brokers straight from the ensemble: this broker's cache may
        // not have caught up with a registration that just happened.
        let brokers = match self.live_brokers().await {
            Ok(b) => b,
            Err(e) => return coord_err(e),
        };
        let live = brokers.len() as u32;
        if t.replication_factor == 0 || t.replication_factor > live {
            return err(
                ErrorCode::InvalidReplicationFactor,
                format!("replication factor {} needs that many live brokers; {live} are live", t.replication_factor),
            );
        }
        let start = rand::random::<u32>() as usize;
        let record = TopicRecord {
            topic_id: uuid::Uuid::new_v4().to_string(),
            assignment: assign_replicas(&brokers, t.partitions, t.replication_factor, start, 0),
            configs,
        };
        let data = match serde_json::to_vec(&record) {
            Ok(d) => d,
            Err(e) => return err(ErrorCode::Internal, e.to_string()),
        };
        let txn = Txn::new()
            .when_exists(&paths::topic(&t.name), false)
            .create(&paths::topic(&t.name), data, false)
            .create(&paths::partitions(&t.name), Bytes::new(), false);
        match self.coord.txn(txn).await {
            Ok(r) if !r.succeeded => {
                return err(ErrorCode::TopicAlreadyExists, format!("topic {} already exists", t.name));
            }
            Ok(_) => {}
            Err(CoordError::NodeExists(_)) => {
                return err(ErrorCode::TopicAlreadyExists, format!("topic {} already exists", t.name));
            }
            Err(e) => return coord_err(e),
        }
        tracing::info!(topic = %t.name, partitions = t.partitions, "topic created");
        if !wait.is_zero() && !self.wait_for_leaders(&t.name, wait).await {
            return err(ErrorCode::RequestTimedOut, "topic created, but not every partition had a leader in time");
        }
        None
    }

    pub async fn delete_topics(&self, req: pb::DeleteTopicsRequest) -> pb::DeleteTopicsResponse {
        let mut results = Vec::new();
        for name in req.names {
            let error = self.delete_topic(&name).await;
            results.push(pb::TopicResult { name, error });
        }
        pb::DeleteTopicsResponse { topics: results }
    }

    async fn delete_topic(&self, name: &str) -> Option<pb::PartitionError> {
        if validate_topic_name(name).is_err() {
            return err(ErrorCode::UnknownTopicOrPartition, format!("no topic {name:?}"));
        }
        // One transaction removes the whole subtree: states, partitions, topic.
        let mut txn = Txn::new().when_exists(&paths::topic(name), true);
        match self.coord.children(&paths::partitions(name)).await {
            Ok((partitions, _)) => {
                for p in partitions {
                    let pp = format!("{}/{p}", paths::partitions(name));
                    if let Ok((children, _)) = self.coord.children(&pp).await {
                        for c in children {
                            txn = txn.delete(&format!("{pp}/{c}"), None);
                        }
                    }
                    txn = txn.delete(&pp, None);
                }
                txn = txn.delete(&paths::partitions(name), None);
            }
            Err(CoordError::NotFound(_)) => {}
            Err(e) => return coord_err(e),
        }
        txn = txn.delete(&paths::topic(name), None);
        match self.coord.txn(txn).await {
            Ok(r) if r.succeeded => {
                tracing::info!(topic = name, "topic deleted");
                None
            }
            Ok(_) | Err(CoordError::NotFound(_)) => err(ErrorCode::UnknownTopicOrPartition, format!("no topic {name}")),
            // A partition node appeared meanwhile (controller writing a
            // state): the caller retries.
            Err(CoordError::NotEmpty(m)) => {
                err(ErrorCode::RequestTimedOut, format!("topic changed during delete: {m}"))
            }
            Err(e) => coord_err(e),
        }
    }

    pub async fn create_partitions(&self, req: pb::CreatePartitionsRequest) -> pb::CreatePartitionsResponse {
        let error = self.add_partitions(&req.topic, req.count).await;
        pb::CreatePartitionsResponse { result: Some(pb::TopicResult { name: req.topic, error }) }
    }

    async fn read_topic(&self, name: &str) -> Result<(TopicRecord, u64), Option<pb::PartitionError>> {
        match self.coord.get(&paths::topic(name)).await {
            Ok((data, stat)) => match serde_json::from_slice::<TopicRecord>(&data) {
                Ok(r) => Ok((r, stat.version)),
                Err(e) => Err(err(ErrorCode::Internal, format!("topic record unreadable: {e}"))),
            },
            Err(CoordError::NotFound(_)) | Err(CoordError::InvalidArgument(_)) => {
                Err(err(ErrorCode::UnknownTopicOrPartition, format!("no topic {name}")))
            }
            Err(e) => Err(coord_err(e)),
        }
    }

    async fn write_topic(&self, name: &str, record: &TopicRecord, version: u64) -> Option<pb::PartitionError> {
        let data = match serde_json::to_vec(record) {
            Ok(d) => d,
            Err(e) => return err(ErrorCode::Internal, e.to_string()),
        };
        match self.coord.set(&paths::topic(name), data, Some(version)).await {
            Ok(_) => None,
            Err(CoordError::BadVersion(_)) => err(ErrorCode::RequestTimedOut, "topic changed concurrently; retry"),
            Err(e) => coord_err(e),
        }
    }

    async fn add_partitions(&self, topic: &str, count: u32) -> Option<pb::PartitionError> {
        let (mut record, version) = match self.read_topic(topic).await {
            Ok(v) => v,
            Err(e) => return e,
        };
        let current = record.assignment.len() as u32;
        if count <= current {
            return err(
                ErrorCode::InvalidPartitions,
                format!("topic {topic} has {current} partitions; {count} is not more"),
            );
        }
        let brokers = match self.live_brokers().await {
            Ok(b) => b,
            Err(e) => return coord_err(e),
        };
        if brokers.is_empty() {
            return err(ErrorCode::BrokerNotAvailable, "no live brokers");
        }
        let rf = record.assignment.first().map_or(1, |r| r.len() as u32);
        let start = rand::random::<u32>() as usize;
        record.assignment.extend(assign_replicas(&brokers, count - current, rf, start, current));
        self.write_topic(topic, &record, version).await
    }

    /// Asks the controller to hand leadership back to preferred replicas,
    /// then waits (up to the request's timeout) until every partition of
    /// the named topics is led by its preferred replica or that replica
    /// cannot lead (down, draining, or out of sync).
    pub async fn elect_leaders(
        &self,
        req: pb::ElectLeadersRequest,
    ) -> Result<pb::ElectLeadersResponse, pb::PartitionError> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis().to_string())
            .unwrap_or_default();
        if let Err(e) = self.coord.upsert(paths::ELECT_PREFERRED, stamp).await {
            return Err(coord_err(e).unwrap_or_default());
        }
        let count = |md: &ClusterMetadata| -> (u32, u32, u32) {
            let (mut preferred, mut stuck, mut movable) = (0, 0, 0);
            for (name, t) in &md.topics {
                if !req.topics.is_empty() && !req.topics.contains(name) {
                    continue;
                }
                for p in &t.partitions {
                    let (Some(first), Some(s)) = (p.replicas.first(), p.state.as_ref()) else { continue };
                    if s.leader == *first {
                        preferred += 1;
                    } else if md.brokers.contains_key(first) && !md.draining.contains(first) && s.isr.contains(first) {
                        movable += 1;
                    } else {
                        stuck += 1;
                    }
                }
            }
            (preferred, stuck, movable)
        };
        let deadline = Instant::now() + Duration::from_millis(u64::from(req.timeout_ms));
        let mut rx = self.metadata.clone();
        loop {
            let (preferred, stuck, movable) = count(&rx.borrow_and_update());
            let left = deadline.saturating_duration_since(Instant::now());
            if movable == 0 || left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
                return Ok(pb::ElectLeadersResponse { preferred, not_preferred: stuck + movable });
            }
        }
    }

    pub async fn describe_configs(
        &self,
        req: pb::DescribeConfigsRequest,
    ) -> Result<pb::DescribeConfigsResponse, Option<pb::PartitionError>> {
        let (record, _) = self.read_topic(&req.topic).await?;
        Ok(pb::DescribeConfigsResponse { configs: record.configs.into_iter().collect() })
    }

    pub async fn alter_configs(&self, req: pb::AlterConfigsRequest) -> Option<pb::PartitionError> {
        let (mut record, version) = match self.read_topic(&req.topic).await {
            Ok(v) => v,
            Err(e) => return e,
        };
        for k in &req.delete {
            record.configs.remove(k);
        }
        record.configs.extend(req.set);
        if let Err(m) = crate::replica::validate_topic_configs(&record.configs) {
            return err(ErrorCode::InvalidConfig, m);
        }
        self.write_topic(&req.topic, &record, version).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(racks: &[(i32, &str)]) -> BTreeMap<BrokerId, BrokerRegistration> {
        racks
            .iter()
            .map(|(id, rack)| {
                (*id, BrokerRegistration { addr: format!("b{id}"), rack: (*rack).into(), incarnation: 0 })
            })
            .collect()
    }

    #[test]
    fn leaders_spread_evenly() {
        let a = assign_replicas(&brokers(&[(1, ""), (2, ""), (3, "")]), 6, 1, 0, 0);
        let mut count = BTreeMap::new();
        for r in &a {
            *count.entry(r[0]).or_insert(0) += 1;
        }
        assert_eq!(count.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
    }

    #[test]
    fn replicas_alternate_racks() {
        let a = assign_replicas(&brokers(&[(1, "a"), (2, "a"), (3, "b"), (4, "b")]), 8, 2, 3, 0);
        let rack = |id: i32| if id <= 2 { "a" } else { "b" };
        for r in &a {
            assert_ne!(rack(r[0]), rack(r[1]), "{r:?} share a rack");
            assert_ne!(r[0], r[1]);
        }
    }

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("orders.v1_x-y").is_ok());
        for bad in ["", ".", "..", "a/b", "sp ace", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
    }
}
