//! The replicated state machine: the namespace in memory, rebuilt on start
//! from the last snapshot (kept in sled) plus the log after it.
//!
//! Invariant: the namespace is only mutated here, in log order; watch events
//! are published after the mutation, in the same order.

use std::io::Cursor;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::{NodeId, TypeConfig, decode, encode};
use crate::command::Response;
use crate::tree::Namespace;
use crate::watch::WatchHub;

const KEY_SNAPSHOT: &[u8] = b"current";

#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub log_id: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, BasicNode>,
}

/// What the service layer reads: the namespace, the watch hub and the
/// applied position. Shared between the state machine and the handlers.
pub struct Shared {
    ns: RwLock<Namespace>,
    applied: RwLock<Applied>,
    pub hub: WatchHub,
}

impl Shared {
    pub fn read(&self) -> RwLockReadGuard<'_, Namespace> {
        self.ns.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Namespace> {
        self.ns.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn applied(&self) -> Applied {
        self.applied.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_applied(&self, applied: Applied) {
        *self.applied.write().unwrap_or_else(|p| p.into_inner()) = applied;
    }
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
    snapshots: sled::Tree,
    db: sled::Db,
}

fn sm_err<E: std::error::Error + 'static>(e: E) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(AnyError::new(&e)).into()
}

fn snap_err<E: std::error::Error + 'static>(e: E) -> StorageError<NodeId> {
    StorageIOError::read_snapshot(None, AnyError::new(&e)).into()
}

impl StateMachine {
    /// Opens the state machine, restoring the namespace from the stored
    /// snapshot if there is one.
    pub fn open(db: &sled::Db, hub: WatchHub) -> Result<Self, StorageError<NodeId>> {
        let snapshots = db.open_tree("snapshot").map_err(snap_err)?;
        let sm = StateMachine {
            shared: Arc::new(Shared {
                ns: RwLock::new(Namespace::default()),
                applied: RwLock::new(Applied::default()),
                hub,
            }),
            snapshots,
            db: db.clone(),
        };
        if let Some(stored) = sm.load_snapshot()? {
            let ns: Namespace = decode(&stored.data).map_err(snap_err)?;
            sm.shared.hub.start_at(ns.revision());
            *sm.shared.write() = ns;
            sm.shared.set_applied(Applied {
                log_id: stored.meta.last_log_id,
                membership: stored.meta.last_membership.clone(),
            });
        }
        Ok(sm)
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    fn load_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError<NodeId>> {
        match self.snapshots.get(KEY_SNAPSHOT).map_err(snap_err)? {
            None => Ok(None),
            Some(bytes) => decode(&bytes).map(Some).map_err(snap_err),
        }
    }

    async fn save_snapshot(&self, stored: &StoredSnapshot) -> Result<(), StorageError<NodeId>> {
        let bytes = encode(stored).map_err(sm_err)?;
        self.snapshots.insert(KEY_SNAPSHOT, bytes).map_err(sm_err)?;
        self.db.flush_async().await.map_err(sm_err)?;
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        // Namespace and applied position are read under the namespace lock
        // so the snapshot is exactly the state after `last_log_id`.
        let (data, applied) = {
            let ns = self.shared.read();
            (encode(&*ns).map_err(sm_err)?, self.shared.applied())
        };
        let snapshot_id = match &applied.log_id {
            Some(id) => format!("{}-{}-{}", id.leader_id.term, id.leader_id.node_id, id.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta { last_log_id: applied.log_id, last_membership: applied.membership, snapshot_id };
        let stored = StoredSnapshot { meta: meta.clone(), data };
        self.save_snapshot(&stored).await?;
        tracing::info!(snapshot = %meta.snapshot_id, bytes = stored.data.len(), "snapshot built");
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(stored.data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>> {
        let applied = self.shared.applied();
        Ok((applied.log_id, applied.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Response>>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = std::time::Instant::now();
        let mut responses = Vec::new();
        let mut applied = self.shared.applied();
        for entry in entries {
            applied.log_id = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => responses.push(Vec::new()),
                EntryPayload::Normal(commands) => {
                    let mut ns = self.shared.write();
                    let mut batch = Vec::with_capacity(commands.len());
                    for cmd in &commands {
                        let (response, events) = ns.apply(cmd);
                        // Publishing inside the lock keeps the hub's notion
                        // of the current revision in step with what readers
                        // see, so "read at R, then watch from R+1" neither
                        // misses nor repeats an event.
                        self.shared.hub.publish(response.revision, events);
                        batch.push(response);
                    }
                    drop(ns);
                    responses.push(batch);
                }
                EntryPayload::Membership(m) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), m);
                    responses.push(Vec::new());
                }
            }
            self.shared.set_applied(applied.clone());
        }
        metrics::histogram!("strata_coord_apply_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("strata_coord_applied_entries_total").increment(responses.len() as u64);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let ns: Namespace = decode(&data).map_err(snap_err)?;
        let revision = ns.revision();
        {
            let mut guard = self.shared.write();
            *guard = ns;
            self.shared.hub.reset(revision);
        }
        self.shared.set_applied(Applied { log_id: meta.last_log_id, membership: meta.last_membership.clone() });
        self.save_snapshot(&StoredSnapshot { meta: meta.clone(), data }).await?;
        tracing::info!(snapshot = %meta.snapshot_id, revision, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(self
            .load_snapshot()?
            .map(|stored| Snapshot { meta: stored.meta, snapshot: Box::new(Cursor::new(stored.data)) }))
    }
}
