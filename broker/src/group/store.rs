//! Group state and committed offsets in the ensemble:
//!
//! ```text
//! /groups/{group}/state                 GroupRecord (JSON), written by the coordinator
//! /groups/{group}/offsets/{topic}/{p}   OffsetRecord (JSON)
//! ```
//!
//! Every write the coordinator makes is a transaction conditioned on the
//! version of the state node it last wrote or read, so a broker that lost
//! the group to another one cannot change it any more.

use std::collections::BTreeSet;

use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use strata_coord_client::{CoordClient, CoordError, Txn};

use super::assignor::Tp;

pub mod paths {
    pub const GROUPS: &str = "/groups";

    pub fn group(g: &str) -> String {
        format!("{GROUPS}/{g}")
    }
    pub fn state(g: &str) -> String {
        format!("{GROUPS}/{g}/state")
    }
    pub fn offsets(g: &str) -> String {
        format!("{GROUPS}/{g}/offsets")
    }
    pub fn offsets_topic(g: &str, topic: &str) -> String {
        format!("{GROUPS}/{g}/offsets/{topic}")
    }
    pub fn offset(g: &str, topic: &str, p: u32) -> String {
        format!("{GROUPS}/{g}/offsets/{topic}/{p}")
    }
}

/// `/groups/{group}/state`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub generation: i32,
    /// Kept as a name, so a record written by a newer broker with an
    /// assignor this one does not know still loads.
    #[serde(default)]
    pub assignor: String,
    #[serde(default)]
    pub coordinator_id: i32,
    #[serde(default)]
    pub members: Vec<MemberRecord>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub member_id: String,
    #[serde(default)]
    pub instance_id: Option<String>,
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub topics: Vec<String>,
    pub session_timeout_ms: u32,
    pub rebalance_timeout_ms: u32,
    /// `[[topic, partition], ...]`
    #[serde(default)]
    pub owned: Vec<Tp>,
    #[serde(default)]
    pub revoking: Vec<Tp>,
}

/// `/groups/{group}/offsets/{topic}/{p}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRecord {
    pub offset: i64,
    #[serde(default)]
    pub metadata: String,
    #[serde(default)]
    pub generation: i32,
    #[serde(default)]
    pub commit_timestamp_ms: i64,
}

/// The outcome of a conditioned write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Applied; the state node now has this version.
    At(u64),
    /// The state node is not at the version this broker knew: another
    /// broker has written the group since.
    Lost,
}

/// What a delete can remove at most per transaction (the ensemble caps a
/// request's size).
const DELETES_PER_TXN: usize = 500;
/// Concurrent reads when collecting many offsets.
const READ_CONCURRENCY: usize = 32;

#[derive(Clone)]
pub struct Store {
    coord: CoordClient,
}

impl Store {
    pub fn new(coord: CoordClient) -> Store {
        Store { coord }
    }

    /// Creates a persistent node unless it exists.
    async fn ensure(&self, path: &str) -> Result<(), CoordError> {
        match self.coord.create(path, Bytes::new(), Default::default()).await {
            Ok(_) | Err(CoordError::NodeExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn ensure_group(&self, g: &str) -> Result<(), CoordError> {
        self.ensure(paths::GROUPS).await?;
        self.ensure(&paths::group(g)).await
    }

    pub async fn ensure_offsets_topic(&self, g: &str, topic: &str) -> Result<(), CoordError> {
        self.ensure(&paths::offsets(g)).await?;
        self.ensure(&paths::offsets_topic(g, topic)).await
    }

    /// The state and its version; a record that does not parse comes back
    /// as None with its version, so the coordinator can overwrite it.
    pub async fn load_state(&self, g: &str) -> Result<Option<(Option<GroupRecord>, u64)>, CoordError> {
        match self.coord.get(&paths::state(g)).await {
            Ok((data, stat)) => {
                let record = serde_json::from_slice::<GroupRecord>(&data)
                    .inspect_err(
                        |e| tracing::error!(group = g, error = %e, "group state does not parse; starting empty"),
                    )
                    .ok();
                Ok(Some((record, stat.version)))
            }
            Err(CoordError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes the state over `version` (None: the node must not exist yet).
    pub async fn write_state(
        &self,
        g: &str,
        record: &GroupRecord,
        version: Option<u64>,
    ) -> Result<Written, CoordError> {
        let data = serde_json::to_vec(record).map_err(|e| CoordError::Internal(e.to_string()))?;
        let path = paths::state(g);
        let txn = match version {
            Some(v) => Txn::new().when_version(&path, v).set(&path, data, None),
            None => {
                self.ensure_group(g).await?;
                Txn::new().when_exists(&path, false).create(&path, data, false)
            }
        };
        let r = self.coord.txn(txn).await?;
        if !r.succeeded {
            return Ok(Written::Lost);
        }
        let version = r.results.first().and_then(|o| o.stat.as_ref()).map_or(0, |s| s.version);
        Ok(Written::At(version))
    }

    /// Writes offsets in one transaction conditioned on the state's
    /// `version`; with no state yet, `initial` creates it in the same
    /// transaction. The offsets' parents must exist.
    pub async fn commit(
        &self,
        g: &str,
        version: Option<u64>,
        initial: &GroupRecord,
        offsets: &[(Tp, OffsetRecord)],
    ) -> Result<Written, CoordError> {
        let state = paths::state(g);
        let mut txn = match version {
            Some(v) => Txn::new().when_version(&state, v),
            None => {
                let data = serde_json::to_vec(initial).map_err(|e| CoordError::Internal(e.to_string()))?;
                Txn::new().when_exists(&state, false).create(&state, data, false)
            }
        };
        for ((topic, p), record) in offsets {
            let data = serde_json::to_vec(record).map_err(|e| CoordError::Internal(e.to_string()))?;
            txn = txn.upsert(&paths::offset(g, topic, *p), data);
        }
        let r = self.coord.txn(txn).await?;
        if !r.succeeded {
            return Ok(Written::Lost);
        }
        Ok(Written::At(match version {
            Some(v) => v,
            None => r.results.first().and_then(|o| o.stat.as_ref()).map_or(0, |s| s.version),
        }))
    }

    /// Whether `/groups/{g}` exists at all.
    pub async fn group_exists(&self, g: &str) -> Result<bool, CoordError> {
        Ok(self.coord.exists(&paths::group(g)).await?.is_some())
    }

    pub async fn list_groups(&self) -> Result<Vec<String>, CoordError> {
        match self.coord.children(paths::GROUPS).await {
            Ok((names, _)) => Ok(names),
            Err(CoordError::NotFound(_)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    async fn children(&self, path: &str) -> Result<Vec<String>, CoordError> {
        match self.coord.children(path).await {
            Ok((names, _)) => Ok(names),
            Err(CoordError::NotFound(_)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Every committed partition of the group.
    pub async fn committed_partitions(&self, g: &str) -> Result<BTreeSet<Tp>, CoordError> {
        let mut out = BTreeSet::new();
        for topic in self.children(&paths::offsets(g)).await? {
            for p in self.children(&paths::offsets_topic(g, &topic)).await? {
                if let Ok(p) = p.parse::<u32>() {
                    out.insert((topic.clone(), p));
                }
            }
        }
        Ok(out)
    }

    /// The committed offset of each partition (None: nothing committed).
    pub async fn read_offsets(
        &self,
        g: &str,
        partitions: impl IntoIterator<Item = Tp>,
    ) -> Result<Vec<(Tp, Option<OffsetRecord>)>, CoordError> {
        let reads = partitions.into_iter().map(|tp| async move {
            match self.coord.get(&paths::offset(g, &tp.0, tp.1)).await {
                Ok((data, _)) => Ok((tp, serde_json::from_slice::<OffsetRecord>(&data).ok())),
                Err(CoordError::NotFound(_)) => Ok((tp, None)),
                Err(e) => Err(e),
            }
        });
        futures::stream::iter(reads).buffered(READ_CONCURRENCY).collect::<Vec<_>>().await.into_iter().collect()
    }

    /// Removes the group and everything under it, bottom up, each
    /// transaction conditioned on the state's `version` (None: on the
    /// state not existing). Lost if another broker wrote the group.
    pub async fn delete_group(&self, g: &str, version: Option<u64>) -> Result<Written, CoordError> {
        let state = paths::state(g);
        let guard = || match version {
            Some(v) => Txn::new().when_version(&state, v),
            None => Txn::new().when_exists(&state, false),
        };
        let topics = self.children(&paths::offsets(g)).await?;
        let mut leaves = Vec::new();
        for topic in &topics {
            for p in self.children(&paths::offsets_topic(g, topic)).await? {
                leaves.push(format!("{}/{p}", paths::offsets_topic(g, topic)));
            }
        }
        leaves.extend(topics.iter().map(|t| paths::offsets_topic(g, t)));
        for chunk in leaves.chunks(DELETES_PER_TXN) {
            let txn = chunk.iter().fold(guard(), |txn, path| txn.delete(path, None));
            if !self.coord.txn(txn).await?.succeeded {
                return Ok(Written::Lost);
            }
        }
        let mut txn = guard();
        if self.coord.exists(&paths::offsets(g)).await?.is_some() {
            txn = txn.delete(&paths::offsets(g), None);
        }
        if version.is_some() {
            txn = txn.delete(&state, version);
        }
        for other in self.children(&paths::group(g)).await? {
            if other != "state" && other != "offsets" {
                // Nothing else lives under a group today; a newer broker
                // may put something there, and it goes with the group.
                txn = txn.delete(&format!("{}/{other}", paths::group(g)), None);
            }
        }
        txn = txn.delete(&paths::group(g), None);
        match self.coord.txn(txn).await {
            Ok(r) if r.succeeded => Ok(Written::At(0)),
            Ok(_) => Ok(Written::Lost),
            Err(CoordError::NotFound(_)) => Ok(Written::At(0)),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_have_the_documented_json_shape() {
        let record = GroupRecord {
            generation: 3,
            assignor: "range".into(),
            coordinator_id: 2,
            members: vec![MemberRecord {
                member_id: "c-1".into(),
                instance_id: None,
                client_id: "c".into(),
                topics: vec!["t".into()],
                session_timeout_ms: 10_000,
                rebalance_timeout_ms: 60_000,
                owned: vec![("t".into(), 0)],
                revoking: vec![("t".into(), 1)],
            }],
        };
        let v: serde_json::Value = serde_json::to_value(&record).expect("serializes");
        assert_eq!(v["members"][0]["owned"], serde_json::json!([["t", 0]]));
        assert_eq!(v["members"][0]["revoking"], serde_json::json!([["t", 1]]));
        assert_eq!(v["coordinator_id"], 2);
        let back: GroupRecord = serde_json::from_value(v).expect("parses");
        assert_eq!(back, record);
        // Older or newer writers may leave fields out.
        let sparse: GroupRecord = serde_json::from_str(r#"{"generation":1}"#).expect("parses");
        assert!(sparse.members.is_empty());
        let offset: OffsetRecord = serde_json::from_str(r#"{"offset":5}"#).expect("parses");
        assert_eq!((offset.offset, offset.generation), (5, 0));
    }
}
