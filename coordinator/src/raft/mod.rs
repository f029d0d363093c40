//! Consensus plumbing: the openraft type configuration, the sled-backed log
//! store, the state machine holding the namespace, and peer networking.

// openraft's trait methods fix StorageError (large) as the error type; our
// helpers return it too rather than boxing and unboxing at every call.
#![allow(clippy::result_large_err)]

pub mod log_store;
pub mod network;
pub mod peer_service;
pub mod state_machine;

use std::io::Cursor;

use openraft::BasicNode;

use crate::command::{Command, Response};

openraft::declare_raft_types!(
    /// Strata's Raft: each entry carries a batch of namespace commands
    /// (see `proposer`), u64 member ids, members known by their peer address.
    pub TypeConfig:
        D = Vec<Command>,
        R = Vec<Response>,
        NodeId = u64,
        Node = BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type NodeId = u64;

/// Encoding of Raft messages, log entries and snapshots: compact and
/// schema-checked by serde.
pub fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(value)
}

pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

#[cfg(test)]
mod conformance {
    //! openraft's storage conformance suite, run on our sled log store and
    //! state machine.
    use openraft::StorageError;
    use openraft::testing::{StoreBuilder, Suite};

    use super::log_store::LogStore;
    use super::state_machine::StateMachine;
    use super::{NodeId, TypeConfig};
    use crate::watch::WatchHub;

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
            let dir = tempfile::tempdir().expect("temp dir");
            let db = sled::Config::new().path(dir.path()).open().expect("sled opens");
            let log = LogStore::open(&db).expect("log store opens");
            let sm = StateMachine::open(&db, WatchHub::new(1000, 16))?;
            Ok((dir, log, sm))
        }
    }

    #[test]
    fn openraft_storage_suite() -> Result<(), StorageError<NodeId>> {
        Suite::test_all(Builder)
    }

    #[test]
    fn messages_round_trip_through_postcard() {
        use crate::command::{Command, CreateOp, WriteOp};
        use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
        let entry: Entry<TypeConfig> = Entry {
            log_id: LogId::new(CommittedLeaderId::new(3, 1), 9),
            payload: EntryPayload::Normal(vec![Command {
                request_id: None,
                op: WriteOp::Create(CreateOp {
                    path: "/a".into(),
                    data: bytes::Bytes::from_static(b"x"),
                    ephemeral_owner: 0,
                    sequential: false,
                }),
            }]),
        };
        let bytes = super::encode(&entry).expect("encodes");
        let back: Entry<TypeConfig> = super::decode(&bytes).expect("decodes");
        assert_eq!(back.log_id, entry.log_id);
        assert!(super::decode::<Entry<TypeConfig>>(&bytes[..bytes.len() - 1]).is_err(), "truncated input is an error");
    }
}
