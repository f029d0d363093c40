//! The metadata cache: a mirror of the broker namespace in the ensemble,
//! kept current by watch streams and published as `ClusterMetadata`.
//!
//! Start-up reads the revision R, opens the watches from R + 1, then reads
//! the tree. Events and reads may overlap; each mirrored node keeps the
//! revision it was last changed at and an event older than that is ignored,
//! so the mirror converges on the ensemble's state without a gap.
//!
//! Invariant: a published `ClusterMetadata` only ever moves forward in
//! revision.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strata_coord_client::{CoordClient, CoordError, EventType};
use tokio::sync::{mpsc, watch};

use super::model::{
    BrokerId, ClusterMetadata, ControllerRecord, PartitionInfo, PartitionState, RegistrationRecord, TopicInfo,
    TopicRecord, paths,
};

#[derive(Debug, Clone)]
struct MirrorNode {
    data: Bytes,
}

/// Path → node for the watched subtrees; deleted nodes stay as tombstones
/// (data None) so an old create event cannot resurrect them.
#[derive(Default)]
struct Mirror {
    nodes: BTreeMap<String, (Option<MirrorNode>, u64)>,
    revision: u64,
}

impl Mirror {
    fn put(&mut self, path: &str, data: Bytes, mod_revision: u64) {
        let entry = self.nodes.entry(path.to_string()).or_insert((None, 0));
        if mod_revision >= entry.1 {
            *entry = (Some(MirrorNode { data }), mod_revision);
        }
    }

    fn delete(&mut self, path: &str, revision: u64) {
        let entry = self.nodes.entry(path.to_string()).or_insert((None, 0));
        if revision >= entry.1 {
            *entry = (None, revision);
        }
    }

    fn live(&self) -> impl Iterator<Item = (&String, &MirrorNode)> {
        self.nodes.iter().filter_map(|(p, (n, _))| n.as_ref().map(|n| (p, n)))
    }

    fn build(&self) -> ClusterMetadata {
        let mut md = ClusterMetadata { revision: self.revision, ..Default::default() };
        let mut states: BTreeMap<(String, u32), PartitionState> = BTreeMap::new();
        let mut records: BTreeMap<String, TopicRecord> = BTreeMap::new();
        if let Some((Some(_), revision)) = self.nodes.get(paths::ELECT_PREFERRED) {
            md.elect_preferred = Some(*revision);
        }
        for (path, node) in self.live() {
            let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            match parts.as_slice() {
                ["brokers", "ids", id] => {
                    if let (Ok(id), Ok(record)) =
                        (id.parse::<BrokerId>(), serde_json::from_slice::<RegistrationRecord>(&node.data))
                    {
                        md.brokers.insert(id, record.registration);
                        if let Some(internal) = record.internal_addr {
                            md.internal_addrs.insert(id, internal);
                        }
                    }
                }
                ["brokers", "draining", id] => {
                    if let Ok(id) = id.parse::<BrokerId>() {
                        md.draining.insert(id);
                    }
                }
                ["controller"] => md.controller = serde_json::from_slice::<ControllerRecord>(&node.data).ok(),
                ["topics", name] => {
                    if let Ok(rec) = serde_json::from_slice::<TopicRecord>(&node.data) {
                        records.insert((*name).to_string(), rec);
                    }
                }
                ["topics", name, "partitions", p, "state"] => {
                    if let (Ok(p), Ok(st)) = (p.parse::<u32>(), serde_json::from_slice::<PartitionState>(&node.data)) {
                        states.insert(((*name).to_string(), p), st);
                    }
                }
                _ => {}
            }
        }
        for (name, rec) in records {
            let partitions = rec
                .assignment
                .iter()
                .enumerate()
                .map(|(p, replicas)| PartitionInfo {
                    replicas: replicas.clone(),
                    state: states.remove(&(name.clone(), p as u32)),
                })
                .collect();
            md.topics.insert(name, TopicInfo { topic_id: rec.topic_id, configs: rec.configs, partitions });
        }
        md
    }
}

enum Update {
    Events(Vec<strata_coord_client::Event>),
    /// A watch could not resume (history compacted): reload everything.
    Reload,
}

const WATCHED: [(&str, bool); 5] = [
    (paths::BROKER_IDS, true),
    (paths::BROKERS_DRAINING, true),
    (paths::CONTROLLER, false),
    (paths::TOPICS, true),
    (paths::ELECT_PREFERRED, false),
];

/// Creates the persistent parents the broker namespace hangs from.
pub async fn ensure_namespace(coord: &CoordClient) -> Result<(), CoordError> {
    let groups = crate::group::store::paths::GROUPS;
    for path in ["/brokers", paths::BROKER_IDS, paths::BROKERS_DRAINING, paths::TOPICS, "/admin", groups] {
        match coord.create(path, Bytes::new(), Default::default()).await {
            Ok(_) | Err(CoordError::NodeExists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Starts the cache; the receiver sees a new value after every change.
pub fn start(coord: CoordClient) -> watch::Receiver<Arc<ClusterMetadata>> {
    let (tx, rx) = watch::channel(Arc::new(ClusterMetadata::default()));
    tokio::spawn(async move {
        loop {
            if let Err(e) = run(&coord, &tx).await {
                tracing::warn!(error = %e, "metadata cache restarting");
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    rx
}

async fn load(coord: &CoordClient, mirror: &mut Mirror) -> Result<(), CoordError> {
    let (ids, _) = coord.children(paths::BROKER_IDS).await?;
    for id in ids {
        read_into(coord, mirror, &paths::broker_path(&id)).await?;
    }
    let (draining, _) = coord.children(paths::BROKERS_DRAINING).await?;
    for id in draining {
        read_into(coord, mirror, &format!("{}/{id}", paths::BROKERS_DRAINING)).await?;
    }
    read_into(coord, mirror, paths::CONTROLLER).await?;
    read_into(coord, mirror, paths::ELECT_PREFERRED).await?;
    let (topics, _) = coord.children(paths::TOPICS).await?;
    for topic in topics {
        read_into(coord, mirror, &paths::topic(&topic)).await?;
        let partitions = match coord.children(&paths::partitions(&topic)).await {
            Ok((p, _)) => p,
            Err(CoordError::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        for p in partitions.iter().filter_map(|p| p.parse::<u32>().ok()) {
            read_into(coord, mirror, &paths::partition_state(&topic, p)).await?;
        }
    }
    Ok(())
}

async fn read_into(coord: &CoordClient, mirror: &mut Mirror, path: &str) -> Result<(), CoordError> {
    match coord.get(path).await {
        Ok((data, stat)) => mirror.put(path, data, stat.mod_revision),
        Err(CoordError::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    Ok(())
}

async fn run(coord: &CoordClient, tx: &watch::Sender<Arc<ClusterMetadata>>) -> Result<(), CoordError> {
    let (_, _, start) = coord.get_with("/", strata_coord_client::Consistency::Linearizable).await?;
    let (events_tx, mut events_rx) = mpsc::channel::<Update>(256);
    let mut watchers = Vec::new();
    for (path, prefix) in WATCHED {
        let mut stream = coord.watch(path, prefix, start + 1);
        let events_tx = events_tx.clone();
        watchers.push(tokio::spawn(async move {
            loop {
                match stream.next().await {
                    Ok(events) => {
                        if events_tx.send(Update::Events(events)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "metadata watch failed");
                        let _ = events_tx.send(Update::Reload).await;
                        return;
                    }
                }
            }
        }));
    }
    drop(events_tx);
    let stop_watchers = AbortOnDrop(watchers);
    let mut mirror = Mirror { revision: start, ..Default::default() };
    load(coord, &mut mirror).await?;
    publish(tx, &mirror);
    while let Some(update) = events_rx.recv().await {
        let mut batch = vec![update];
        while let Ok(more) = events_rx.try_recv() {
            batch.push(more);
        }
        for update in batch {
            match update {
                Update::Reload => return Err(CoordError::Unavailable("watch history lost; reloading".into())),
                Update::Events(events) => {
                    for e in events {
                        mirror.revision = mirror.revision.max(e.revision);
                        if e.r#type() == EventType::Deleted {
                            mirror.delete(&e.path, e.revision);
                        } else {
                            mirror.put(&e.path, e.data.clone(), e.revision);
                        }
                    }
                }
            }
        }
        publish(tx, &mirror);
        if tx.is_closed() {
            break;
        }
    }
    drop(stop_watchers);
    Ok(())
}

fn publish(tx: &watch::Sender<Arc<ClusterMetadata>>, mirror: &Mirror) {
    let md = mirror.build();
    tx.send_if_modified(|current| {
        if md.revision < current.revision || **current == md {
            return false;
        }
        *current = Arc::new(md);
        true
    });
}

struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::model::BrokerRegistration;

    fn json<T: serde::Serialize>(v: &T) -> Bytes {
        Bytes::from(serde_json::to_vec(v).unwrap_or_default())
    }

    #[test]
    fn old_events_do_not_regress_newer_reads() {
        let mut m = Mirror::default();
        let reg = |addr: &str| BrokerRegistration { addr: addr.into(), rack: String::new(), incarnation: 1 };
        m.put("/brokers/ids/1", json(&reg("new")), 10);
        m.put("/brokers/ids/1", json(&reg("old")), 5);
        assert_eq!(m.build().brokers[&1].addr, "new");
        m.delete("/brokers/ids/1", 12);
        m.put("/brokers/ids/1", json(&reg("stale-create")), 11);
        assert!(m.build().brokers.is_empty(), "a deleted node stays deleted against older events");
        m.put("/brokers/ids/1", json(&reg("again")), 13);
        assert_eq!(m.build().brokers[&1].addr, "again");
    }

    #[test]
    fn internal_addresses_are_optional_in_registrations() {
        let mut m = Mirror::default();
        // Written by a broker that predates `internal_addr`.
        m.put("/brokers/ids/1", Bytes::from_static(br#"{"addr":"h:19092","rack":"","incarnation":1}"#), 1);
        let registration = BrokerRegistration { addr: "h:19093".into(), rack: String::new(), incarnation: 2 };
        let record = RegistrationRecord { registration, internal_addr: Some("broker-2:9092".into()) };
        m.put("/brokers/ids/2", json(&record), 2);
        let md = m.build();
        assert_eq!((md.brokers[&1].addr.as_str(), md.internal_addr(1)), ("h:19092", Some("h:19092")));
        assert_eq!((md.brokers[&2].addr.as_str(), md.internal_addr(2)), ("h:19093", Some("broker-2:9092")));
        assert_eq!(md.internal_addr(3), None);
        // Brokers that do not know the field still read the registration.
        let old: BrokerRegistration = serde_json::from_slice(&json(&record)).expect("parses");
        assert_eq!(old.addr, "h:19093");
    }

    #[test]
    fn builds_topics_with_states() {
        let mut m = Mirror::default();
        let rec = TopicRecord { topic_id: "t1".into(), assignment: vec![vec![1], vec![2]], configs: BTreeMap::new() };
        m.put("/topics/t", json(&rec), 3);
        let st = PartitionState { leader: 2, leader_epoch: 0, isr: vec![2], controller_epoch: 1, partition_epoch: 0 };
        m.put("/topics/t/partitions/1/state", json(&st), 4);
        let md = m.build();
        let t = &md.topics["t"];
        assert_eq!(t.partitions.len(), 2);
        assert!(t.partitions[0].state.is_none());
        assert_eq!(t.partitions[1].state.as_ref().map(|s| s.leader), Some(2));
        assert_eq!(md.leader_of("t", 1).map(|l| l.0), Some(2));
    }
}
