//! The cluster metadata every broker mirrors from the ensemble: live
//! brokers, the controller, topics with their partition states and configs.
//! Plain data; the ensemble encodes each piece as JSON under the paths in
//! `paths`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub type BrokerId = i32;

/// `/brokers/ids/{id}` (ephemeral).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub addr: String,
    #[serde(default)]
    pub rack: String,
    /// Random per process start, so a restart is distinguishable.
    pub incarnation: u64,
}

/// What `/brokers/ids/{id}` holds: the registration plus, when the broker
/// was given one, the address other brokers use (`--advertise-internal`),
/// distinct from the `addr` clients are told. Registrations written before
/// the field existed parse (then brokers use `addr`), and brokers that do
/// not know the field ignore it. Kept beside `BrokerRegistration` rather
/// than in it so the many places that build a registration stay unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationRecord {
    #[serde(flatten)]
    pub registration: BrokerRegistration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_addr: Option<String>,
}

/// `/controller` (ephemeral).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerRecord {
    pub broker_id: BrokerId,
    pub epoch: u64,
}

/// `/topics/{topic}`: identity, replica assignment and configs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub topic_id: String,
    /// Replicas of each partition, preferred leader first.
    pub assignment: Vec<Vec<BrokerId>>,
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

/// `/topics/{topic}/partitions/{p}/state`, written by the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// -1 when no replica can lead.
    pub leader: BrokerId,
    pub leader_epoch: i32,
    pub isr: Vec<BrokerId>,
    pub controller_epoch: u64,
    /// Bumped by every write of the state (the controller's and the
    /// leader's ISR changes), so a replica can tell a newer state from an
    /// older one within one leader epoch.
    #[serde(default)]
    pub partition_epoch: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub replicas: Vec<BrokerId>,
    /// None until the controller has written the partition's state.
    pub state: Option<PartitionState>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub topic_id: String,
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionInfo>,
}

/// One consistent view of the cluster at an ensemble revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterMetadata {
    pub revision: u64,
    pub brokers: BTreeMap<BrokerId, BrokerRegistration>,
    /// Inter-broker addresses of the live brokers that registered one.
    pub internal_addrs: BTreeMap<BrokerId, String>,
    pub controller: Option<ControllerRecord>,
    /// Brokers in controlled shutdown.
    pub draining: std::collections::BTreeSet<BrokerId>,
    /// Revision of a pending preferred-leader election request, if any.
    pub elect_preferred: Option<u64>,
    pub topics: BTreeMap<String, TopicInfo>,
}

impl ClusterMetadata {
    pub fn partition(&self, topic: &str, partition: u32) -> Option<&PartitionInfo> {
        self.topics.get(topic).and_then(|t| t.partitions.get(partition as usize))
    }

    /// Leader id and its address, when the partition has a live leader.
    pub fn leader_of(&self, topic: &str, partition: u32) -> Option<(BrokerId, Option<&str>)> {
        let state = self.partition(topic, partition)?.state.as_ref()?;
        (state.leader >= 0).then(|| (state.leader, self.brokers.get(&state.leader).map(|b| b.addr.as_str())))
    }

    /// The address another broker uses to reach `id`: its internal address,
    /// or the advertised one when it registered none.
    pub fn internal_addr(&self, id: BrokerId) -> Option<&str> {
        let advertised = || self.brokers.get(&id).map(|b| b.addr.as_str());
        self.internal_addrs.get(&id).map(String::as_str).or_else(advertised)
    }
}

/// Ensemble paths of the broker namespace (DESIGN.md).
pub mod paths {
    pub const BROKER_IDS: &str = "/brokers/ids";
    pub const CONTROLLER: &str = "/controller";
    pub const CONTROLLER_EPOCH: &str = "/controller_epoch";
    pub const TOPICS: &str = "/topics";
    /// Ephemeral `/brokers/draining/{id}`: the broker is shutting down in a
    /// controlled way; the controller moves its leaderships away.
    pub const BROKERS_DRAINING: &str = "/brokers/draining";
    /// A request to the controller to hand leadership back to preferred
    /// replicas now (`strata topic elect-leaders`).
    pub const ELECT_PREFERRED: &str = "/admin/elect_preferred";
    /// The next free producer id, handed out in blocks.
    pub const PRODUCER_IDS: &str = "/producer_ids";

    pub fn draining(id: i32) -> String {
        format!("{BROKERS_DRAINING}/{id}")
    }

    pub fn broker(id: i32) -> String {
        format!("{BROKER_IDS}/{id}")
    }
    pub fn broker_path(id: &str) -> String {
        format!("{BROKER_IDS}/{id}")
    }
    pub fn topic(name: &str) -> String {
        format!("{TOPICS}/{name}")
    }
    pub fn partitions(topic: &str) -> String {
        format!("{TOPICS}/{topic}/partitions")
    }
    pub fn partition(topic: &str, p: u32) -> String {
        format!("{TOPICS}/{topic}/partitions/{p}")
    }
    pub fn partition_state(topic: &str, p: u32) -> String {
        format!("{TOPICS}/{topic}/partitions/{p}/state")
    }
}
