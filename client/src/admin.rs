//! Administration of topics and a look at the cluster, over the `Admin`
//! service (and `Metadata` for listing and describing topics), and of
//! consumer groups over the `Groups` service.
//!
//! Calls go to the controller when the metadata names one (it does the
//! work), else to any broker; a broker that cannot be reached is skipped
//! for the next one, and a broker that names another leader is followed.
//! Group calls that change a group (altering offsets, deleting) go to the
//! group's coordinator, following `NOT_COORDINATOR` answers.
//! A call retried after a lost connection may have taken effect the first
//! time: creating a topic can then report `TopicAlreadyExists`.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use strata_proto::broker::admin_client::AdminClient as AdminRpcClient;
use strata_proto::broker::{
    AlterConfigsRequest, AlterOffsetsRequest, AlterOffsetsResponse, CommittedOffset, CreatePartitionsRequest,
    CreateTopic, CreateTopicsRequest, DeleteGroupRequest, DeleteTopicsRequest, DescribeClusterRequest,
    DescribeConfigsRequest, DescribeGroupRequest, GroupMemberDescription, ListGroupsRequest, TopicResult,
};
use tokio::time::Instant;
use tonic::transport::Channel;
use tracing::debug;

use crate::consumer::TopicPartition;
use crate::error::ClientError;
use crate::group::rpc;
use crate::metadata::{BrokerId, BrokerMetadata, ClusterMetadata, MetadataClient, MetadataConfig, TopicMetadata};

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u32,
    /// Topic configs (`retention.ms`, `min.insync.replicas`, ...).
    pub configs: BTreeMap<String, String>,
}

impl NewTopic {
    pub fn new(name: impl Into<String>, partitions: u32, replication_factor: u32) -> NewTopic {
        NewTopic { name: name.into(), partitions, replication_factor, configs: BTreeMap::new() }
    }

    /// Adds one config.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> NewTopic {
        self.configs.insert(key.into(), value.into());
        self
    }
}

/// The outcome for one topic of a call about several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicOutcome {
    pub name: String,
    pub result: Result<(), ClientError>,
}

/// The live brokers and the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    pub brokers: Vec<BrokerMetadata>,
    pub controller_id: Option<BrokerId>,
}

/// A consumer group as [`AdminClient::list_groups`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group: String,
    /// "Empty", "Stable", "Rebalancing" or "Dead".
    pub state: String,
    pub coordinator_id: Option<BrokerId>,
    pub members: u32,
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub member_id: String,
    /// Set for static members.
    pub instance_id: Option<String>,
    pub client_id: String,
    /// Subscribed topics.
    pub topics: Vec<String>,
    /// Owned now (consuming), sorted.
    pub assigned: Vec<TopicPartition>,
    /// Being given up: revoked, not yet confirmed. Sorted.
    pub revoking: Vec<TopicPartition>,
}

/// A group's committed offset for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOffset {
    pub partition: TopicPartition,
    /// The next offset to consume; `None` when nothing is committed.
    pub offset: Option<i64>,
    pub metadata: String,
    /// The generation of the member that committed it.
    pub generation: i32,
}

/// What [`AdminClient::describe_group`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group: String,
    pub state: String,
    pub coordinator_id: Option<BrokerId>,
    pub generation: i32,
    pub assignor: String,
    /// Sorted by member id.
    pub members: Vec<GroupMember>,
    /// Sorted by partition.
    pub offsets: Vec<GroupOffset>,
}

impl GroupDescription {
    /// The member that owns `tp` now, if any.
    pub fn owner(&self, tp: &TopicPartition) -> Option<&GroupMember> {
        self.members.iter().find(|m| m.assigned.contains(tp))
    }
}

fn group_offset(c: CommittedOffset) -> GroupOffset {
    GroupOffset {
        offset: (c.offset >= 0).then_some(c.offset),
        partition: TopicPartition::new(c.topic, c.partition),
        metadata: c.metadata,
        generation: c.generation,
    }
}

fn sorted_partitions(list: &[strata_proto::broker::TopicPartitions]) -> Vec<TopicPartition> {
    let mut out: Vec<TopicPartition> =
        list.iter().flat_map(|t| t.partitions.iter().map(|p| TopicPartition::new(t.topic.clone(), *p))).collect();
    out.sort();
    out.dedup();
    out
}

fn group_member(m: GroupMemberDescription) -> GroupMember {
    GroupMember {
        assigned: sorted_partitions(&m.assigned),
        revoking: sorted_partitions(&m.revoking),
        member_id: m.member_id,
        instance_id: (!m.instance_id.is_empty()).then_some(m.instance_id),
        client_id: m.client_id,
        topics: m.topics,
    }
}

/// Pause between rounds over every broker when all failed retriably.
const ROUND_BACKOFF: Duration = Duration::from_millis(200);

/// Client of the `Admin` service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AdminClient {
    metadata: MetadataClient,
    timeout: Duration,
}

fn outcome_of(answer: TopicResult) -> TopicOutcome {
    let result = match ClientError::from_partition_error(answer.error.as_ref()) {
        Some(error) => Err(error),
        None => Ok(()),
    };
    TopicOutcome { name: answer.name, result }
}

impl AdminClient {
    /// Calls give up after the metadata client's request timeout.
    pub fn new(metadata: MetadataClient) -> AdminClient {
        let timeout = metadata.config().request_timeout;
        AdminClient { metadata, timeout }
    }

    /// Connects to the cluster at `bootstrap` (see
    /// [`MetadataClient::connect`]) with default settings.
    pub async fn connect<S: AsRef<str>>(bootstrap: &[S]) -> Result<AdminClient, ClientError> {
        Ok(AdminClient::new(MetadataClient::connect(bootstrap, MetadataConfig::default()).await?))
    }

    /// Bounds every call (including the wait for new topics' leaders) by
    /// `timeout` instead.
    pub fn with_timeout(mut self, timeout: Duration) -> AdminClient {
        self.timeout = timeout;
        self
    }

    pub fn metadata(&self) -> &MetadataClient {
        &self.metadata
    }

    /// Runs `call` against brokers in turn until one gives an answer that is
    /// not a retriable failure, for at most the client's timeout.
    async fn call<R, F, Fut>(&self, what: &str, call: F) -> Result<R, ClientError>
    where
        F: FnMut(AdminRpcClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        self.call_on(what, MetadataClient::admin_client, call).await
    }

    /// [`call`](Self::call) on another service: `client` makes its stub.
    async fn call_on<C, R, F, Fut>(
        &self,
        what: &str,
        client: fn(&MetadataClient, &str) -> Result<C, ClientError>,
        mut call: F,
    ) -> Result<R, ClientError>
    where
        F: FnMut(C) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut last: Option<ClientError> = None;
        loop {
            let mut targets = self.metadata.brokers_to_try();
            let mut i = 0;
            while i < targets.len() {
                let addr = targets[i].clone();
                i += 1;
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    break;
                }
                let client = client(&self.metadata, &addr)?;
                let error = match tokio::time::timeout(remaining, call(client)).await {
                    Ok(Ok(response)) => return Ok(response.into_inner()),
                    Ok(Err(status)) => ClientError::from_status(&status, &addr),
                    Err(_) => ClientError::RequestTimedOut(format!("{what}: no answer from {addr}")),
                };
                if !error.is_retriable() {
                    return Err(error);
                }
                debug!(broker = %addr, %error, "{what} failed; trying another broker");
                // A broker that names the one to ask is followed next.
                if let ClientError::NotLeader { leader_addr: Some(leader), .. } = &error
                    && !targets[i..].contains(leader)
                {
                    targets.insert(i, leader.clone());
                }
                last = Some(error);
            }
            if Instant::now() + ROUND_BACKOFF >= deadline {
                return Err(match last {
                    Some(ClientError::Unreachable(_)) | None => self.metadata.unreachable_error(),
                    Some(other) => other,
                });
            }
            tokio::time::sleep(ROUND_BACKOFF).await;
        }
    }

    /// Creates topics; the brokers wait (up to the timeout) until every
    /// partition has a leader, and this call then waits until the metadata
    /// this client follows shows them, so a producer on the same
    /// [`MetadataClient`] can send at once. Returns one outcome per topic,
    /// in the order given.
    pub async fn create_topics(&self, topics: Vec<NewTopic>) -> Result<Vec<TopicOutcome>, ClientError> {
        let deadline = Instant::now() + self.timeout;
        let request = CreateTopicsRequest {
            topics: topics
                .iter()
                .map(|t| CreateTopic {
                    name: t.name.clone(),
                    partitions: t.partitions,
                    replication_factor: t.replication_factor,
                    configs: t.configs.clone().into_iter().collect(),
                })
                .collect(),
            timeout_ms: u32::try_from(self.timeout.as_millis()).unwrap_or(u32::MAX),
        };
        let response = self
            .call("create topics", |mut c| {
                let request = request.clone();
                async move { c.create_topics(request).await }
            })
            .await?;
        let mut outcomes = self.in_order(topics.iter().map(|t| t.name.as_str()), response.topics);
        for outcome in &mut outcomes {
            if outcome.result.is_ok() {
                let remaining = deadline.saturating_duration_since(Instant::now());
                outcome.result = self.metadata.wait_for_topic(&outcome.name, remaining).await.map(|_| ());
            }
        }
        Ok(outcomes)
    }

    /// Creates one topic (see [`create_topics`](Self::create_topics)).
    pub async fn create_topic(&self, topic: NewTopic) -> Result<(), ClientError> {
        let name = topic.name.clone();
        self.single(&name, self.create_topics(vec![topic]).await?)
    }

    /// Deletes topics, then waits (within the timeout, without failing)
    /// until the followed metadata no longer lists them.
    pub async fn delete_topics(&self, names: &[&str]) -> Result<Vec<TopicOutcome>, ClientError> {
        let request = DeleteTopicsRequest { names: names.iter().map(|n| n.to_string()).collect() };
        let response = self
            .call("delete topics", |mut c| {
                let request = request.clone();
                async move { c.delete_topics(request).await }
            })
            .await?;
        let outcomes = self.in_order(names.iter().copied(), response.topics);
        let gone: Vec<&str> = outcomes.iter().filter(|o| o.result.is_ok()).map(|o| o.name.as_str()).collect();
        if !gone.is_empty() {
            let absent = |m: &ClusterMetadata| gone.iter().all(|n| m.topic(n).is_none());
            // The deletion happened; if the metadata is slow to show it,
            // that is no failure of this call.
            let _ = self.metadata.wait_until(self.timeout, absent).await;
        }
        Ok(outcomes)
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        self.single(name, self.delete_topics(&[name]).await?)
    }

    /// Grows `topic` to `count` partitions, then waits until the followed
    /// metadata shows them all with leaders.
    pub async fn create_partitions(&self, topic: &str, count: u32) -> Result<(), ClientError> {
        let deadline = Instant::now() + self.timeout;
        let request = CreatePartitionsRequest { topic: topic.to_string(), count };
        let response = self
            .call("create partitions", |mut c| {
                let request = request.clone();
                async move { c.create_partitions(request).await }
            })
            .await?;
        if let Some(error) = response.result.and_then(|r| ClientError::from_partition_error(r.error.as_ref())) {
            return Err(error);
        }
        let grown =
            |m: &ClusterMetadata| m.topic(topic).is_some_and(|t| t.partitions.len() >= count as usize && t.all_led());
        let remaining = deadline.saturating_duration_since(Instant::now());
        match self.metadata.wait_until(remaining, grown).await {
            Ok(_) => Ok(()),
            Err(_) => Err(ClientError::LeaderNotAvailable(format!(
                "{topic} grew to {count} partitions, but not all have a leader yet"
            ))),
        }
    }

    /// The topic's configs as the cluster stores them.
    pub async fn describe_configs(&self, topic: &str) -> Result<BTreeMap<String, String>, ClientError> {
        let request = DescribeConfigsRequest { topic: topic.to_string() };
        let response = self
            .call("describe configs", |mut c| {
                let request = request.clone();
                async move { c.describe_configs(request).await }
            })
            .await?;
        Ok(response.configs.into_iter().collect())
    }

    /// Sets the configs in `set` and removes those in `delete` (back to
    /// their defaults).
    pub async fn alter_configs(
        &self,
        topic: &str,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    ) -> Result<(), ClientError> {
        let request = AlterConfigsRequest { topic: topic.to_string(), set: set.into_iter().collect(), delete };
        self.call("alter configs", |mut c| {
            let request = request.clone();
            async move { c.alter_configs(request).await }
        })
        .await?;
        Ok(())
    }

    pub async fn describe_cluster(&self) -> Result<ClusterDescription, ClientError> {
        let response = self
            .call("describe cluster", |mut c| async move { c.describe_cluster(DescribeClusterRequest {}).await })
            .await?;
        let mut brokers: Vec<BrokerMetadata> =
            response.brokers.into_iter().map(|b| BrokerMetadata { id: b.id, addr: b.addr, rack: b.rack }).collect();
        brokers.sort_by_key(|b| b.id);
        let controller_id = (response.controller_id >= 0).then_some(response.controller_id);
        Ok(ClusterDescription { brokers, controller_id })
    }

    /// Asks the controller to hand leadership back to preferred replicas
    /// and waits for it; returns (partitions led by their preferred replica,
    /// partitions that are not) among `topics` (empty: all).
    pub async fn elect_preferred_leaders(&self, topics: &[String]) -> Result<(u32, u32), ClientError> {
        // The broker's wait ends well before this call's own deadline, so its
        // answer (with the counts) arrives rather than a timeout.
        let wait = self.timeout.saturating_sub(Duration::from_secs(2)).max(self.timeout / 2);
        let timeout_ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX);
        let request = strata_proto::broker::ElectLeadersRequest { topics: topics.to_vec(), timeout_ms };
        let response = self
            .call("elect leaders", |mut c| {
                let request = request.clone();
                async move { c.elect_leaders(request).await }
            })
            .await?;
        Ok((response.preferred, response.not_preferred))
    }

    /// The names of every topic, sorted, read fresh from a broker.
    pub async fn list_topics(&self) -> Result<Vec<String>, ClientError> {
        let metadata = ClusterMetadata::from_response(self.metadata.fetch(&[]).await?);
        Ok(metadata.topics.into_values().filter(|t| t.error.is_none()).map(|t| t.name).collect())
    }

    /// The named topics (every topic when `names` is empty), read fresh
    /// from a broker. A topic that does not exist comes back with its
    /// `error` set.
    pub async fn describe_topics(&self, names: &[&str]) -> Result<Vec<TopicMetadata>, ClientError> {
        let wanted: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let metadata = ClusterMetadata::from_response(self.metadata.fetch(&wanted).await?);
        let mut topics = metadata.topics;
        if names.is_empty() {
            return Ok(topics.into_values().collect());
        }
        Ok(names
            .iter()
            .map(|name| {
                topics.remove(*name).unwrap_or_else(|| TopicMetadata {
                    name: name.to_string(),
                    topic_id: String::new(),
                    error: Some(ClientError::UnknownTopicOrPartition(format!("topic {name} does not exist"))),
                    partitions: Vec::new(),
                    configs: BTreeMap::new(),
                })
            })
            .collect())
    }

    /// Every consumer group the cluster knows, sorted by name.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, ClientError> {
        let response = self
            .call_on("list groups", MetadataClient::groups_client, |mut c| async move {
                c.list_groups(ListGroupsRequest {}).await
            })
            .await?;
        let mut groups: Vec<GroupListing> = response
            .groups
            .into_iter()
            .map(|g| GroupListing {
                group: g.group,
                state: g.state,
                coordinator_id: (g.coordinator_id >= 0).then_some(g.coordinator_id),
                members: g.members,
            })
            .collect();
        groups.sort_by(|a, b| a.group.cmp(&b.group));
        Ok(groups)
    }

    /// A group's state, members with their partitions, and committed
    /// offsets. `GroupIdNotFound` when the group has neither members nor
    /// offsets.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription, ClientError> {
        let request = DescribeGroupRequest { group: group.to_string() };
        let response = self
            .call_on("describe group", MetadataClient::groups_client, |mut c| {
                let request = request.clone();
                async move { c.describe_group(request).await }
            })
            .await?;
        if let Some(error) = ClientError::from_partition_error(response.error.as_ref()) {
            return Err(error);
        }
        let mut members: Vec<GroupMember> = response.members.into_iter().map(group_member).collect();
        members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
        let mut offsets: Vec<GroupOffset> = response.offsets.into_iter().map(group_offset).collect();
        offsets.sort_by(|a, b| a.partition.cmp(&b.partition));
        Ok(GroupDescription {
            group: if response.group.is_empty() { group.to_string() } else { response.group },
            state: response.state,
            coordinator_id: (response.coordinator_id >= 0).then_some(response.coordinator_id),
            generation: response.generation,
            assignor: response.assignor,
            members,
            offsets,
        })
    }

    /// The group's committed offsets for `partitions` (`None`: nothing
    /// committed), or for every partition it committed when `partitions`
    /// is empty.
    pub async fn fetch_committed_offsets(
        &self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<i64>>, ClientError> {
        let answer = rpc::fetch_offsets(&self.metadata, None, group, partitions, self.timeout).await?;
        let all = rpc::committed_by_partition(partitions, &answer);
        if partitions.is_empty() {
            return Ok(all);
        }
        Ok(all.into_iter().filter(|(tp, _)| partitions.contains(tp)).collect())
    }

    /// Sets the committed offsets of a group without live members (what
    /// `strata group reset-offsets --execute` does); `NonEmptyGroup` while
    /// it has some. Each offset is the next one to consume.
    pub async fn alter_group_offsets(&self, group: &str, offsets: &[(TopicPartition, i64)]) -> Result<(), ClientError> {
        if let Some((tp, offset)) = offsets.iter().find(|(_, o)| *o < 0) {
            return Err(ClientError::InvalidArgument(format!("cannot set {tp} to negative offset {offset}")));
        }
        let request =
            AlterOffsetsRequest { group: group.to_string(), offsets: crate::group::rpc::offset_commits(offsets) };
        fn refused(answer: &AlterOffsetsResponse) -> Option<ClientError> {
            answer.partitions.iter().find_map(|p| ClientError::from_partition_error(p.error.as_ref()))
        }
        let response =
            rpc::call_coordinator(&self.metadata, group, "alter group offsets", self.timeout, refused, |mut c| {
                let request = request.clone();
                async move { c.alter_offsets(request).await }
            })
            .await?;
        match refused(&response) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Removes a group without live members, with its committed offsets.
    pub async fn delete_group(&self, group: &str) -> Result<(), ClientError> {
        let request = DeleteGroupRequest { group: group.to_string() };
        rpc::call_coordinator(
            &self.metadata,
            group,
            "delete group",
            self.timeout,
            |_| None,
            |mut c| {
                let request = request.clone();
                async move { c.delete_group(request).await }
            },
        )
        .await?;
        Ok(())
    }

    /// Matches per-topic results to the names asked about, in that order;
    /// a name the broker left out gets an error rather than silence.
    fn in_order<'a>(&self, names: impl Iterator<Item = &'a str>, results: Vec<TopicResult>) -> Vec<TopicOutcome> {
        let mut by_name: BTreeMap<String, TopicOutcome> = results
            .into_iter()
            .map(|r| {
                let outcome = outcome_of(r);
                (outcome.name.clone(), outcome)
            })
            .collect();
        names
            .map(|name| {
                by_name.remove(name).unwrap_or_else(|| TopicOutcome {
                    name: name.to_string(),
                    result: Err(ClientError::Other {
                        code: 0,
                        message: format!("the broker's answer left out topic {name}"),
                    }),
                })
            })
            .collect()
    }

    fn single(&self, name: &str, outcomes: Vec<TopicOutcome>) -> Result<(), ClientError> {
        match outcomes.into_iter().find(|o| o.name == name) {
            Some(outcome) => outcome.result,
            None => Err(ClientError::Other { code: 0, message: format!("no outcome for topic {name}") }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_cluster::FakeCluster;

    async fn setup(brokers: i32) -> (FakeCluster, AdminClient) {
        let cluster = FakeCluster::start(brokers).await;
        let config = MetadataConfig {
            reconnect_backoff: Duration::from_millis(10),
            reconnect_backoff_max: Duration::from_millis(100),
            ..MetadataConfig::default()
        };
        let metadata = MetadataClient::connect(&cluster.bootstrap(), config).await.expect("connect");
        (cluster, AdminClient::new(metadata).with_timeout(Duration::from_secs(5)))
    }

    #[tokio::test]
    async fn topics_are_created_described_altered_grown_and_deleted() {
        let (_cluster, admin) = setup(3).await;
        let topic = NewTopic::new("orders", 3, 2).config("retention.ms", "1000");
        admin.create_topic(topic).await.expect("created");
        // The followed metadata already shows it, leaders and all.
        assert_eq!(admin.metadata().partition_count("orders"), Some(3));
        assert!(admin.metadata().leader_for("orders", 2).is_some());

        let outcomes = admin
            .create_topics(vec![NewTopic::new("orders", 1, 1), NewTopic::new("wide", 1, 9), NewTopic::new("b", 1, 1)])
            .await
            .expect("answered");
        let names: Vec<&str> = outcomes.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["orders", "wide", "b"], "outcomes follow the request order");
        assert!(matches!(outcomes[0].result, Err(ClientError::TopicAlreadyExists(_))));
        assert!(matches!(outcomes[1].result, Err(ClientError::InvalidReplicationFactor(_))));
        assert_eq!(outcomes[2].result, Ok(()));

        assert_eq!(admin.list_topics().await.expect("listed"), ["b", "orders"]);
        let described = admin.describe_topics(&["orders", "nope"]).await.expect("described");
        assert_eq!(described[0].partitions.len(), 3);
        assert!(matches!(described[1].error, Some(ClientError::UnknownTopicOrPartition(_))));

        let configs = admin.describe_configs("orders").await.expect("configs");
        assert_eq!(configs.get("retention.ms").map(String::as_str), Some("1000"));
        admin
            .alter_configs(
                "orders",
                BTreeMap::from([("cleanup.policy".into(), "compact".into())]),
                vec!["retention.ms".into()],
            )
            .await
            .expect("altered");
        let configs = admin.describe_configs("orders").await.expect("configs");
        assert_eq!(configs, BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]));
        let missing = admin.describe_configs("nope").await;
        assert!(matches!(missing, Err(ClientError::UnknownTopicOrPartition(_))), "{missing:?}");

        admin.create_partitions("orders", 5).await.expect("grown");
        assert_eq!(admin.metadata().partition_count("orders"), Some(5));
        let shrink = admin.create_partitions("orders", 2).await;
        assert!(matches!(shrink, Err(ClientError::InvalidPartitions(_))), "{shrink:?}");

        admin.delete_topic("orders").await.expect("deleted");
        assert_eq!(admin.metadata().partition_count("orders"), None);
        let again = admin.delete_topic("orders").await;
        assert!(matches!(again, Err(ClientError::UnknownTopicOrPartition(_))), "{again:?}");
    }

    #[tokio::test]
    async fn the_cluster_is_described_and_dead_brokers_are_skipped() {
        let (cluster, admin) = setup(3).await;
        let described = admin.describe_cluster().await.expect("described");
        assert_eq!(described.brokers.iter().map(|b| b.id).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(described.controller_id, Some(1));

        // Broker 1 is the controller, which admin calls try first.
        cluster.kill(1);
        admin.create_topic(NewTopic::new("after", 2, 1)).await.expect("another broker answered");
        let described = admin.describe_cluster().await.expect("described");
        assert_eq!(described.brokers.len(), 2);
    }
}
