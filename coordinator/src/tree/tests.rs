use super::*;
use crate::command::{Command, RequestId};
use proptest::prelude::*;

fn cmd(op: WriteOp) -> Command {
    Command { request_id: None, op }
}

fn create(path: &str, data: &str) -> WriteOp {
    WriteOp::Create(CreateOp {
        path: path.into(),
        data: Bytes::copy_from_slice(data.as_bytes()),
        ephemeral_owner: 0,
        sequential: false,
    })
}

fn apply(ns: &mut Namespace, op: WriteOp) -> Result<Outcome, TreeError> {
    ns.apply(&cmd(op)).0.outcome
}

#[test]
fn create_get_set_delete_with_versions() {
    let mut ns = Namespace::default();
    assert!(apply(&mut ns, create("/a", "1")).is_ok());
    assert_eq!(ns.revision(), 1);
    assert_eq!(apply(&mut ns, create("/a", "1")), Err(TreeError::NodeExists("/a".into())));
    assert_eq!(ns.revision(), 1, "a failed write does not bump the revision");
    assert_eq!(apply(&mut ns, create("/x/y", "")), Err(TreeError::NotFound("/x".into())));
    let set = |v: Option<u64>| {
        WriteOp::Set(SetOp { path: "/a".into(), data: Bytes::from_static(b"2"), expected_version: v, upsert: false })
    };
    assert!(matches!(apply(&mut ns, set(Some(7))), Err(TreeError::BadVersion { expected: 7, actual: 0, .. })));
    assert!(matches!(apply(&mut ns, set(Some(0))), Ok(Outcome::Set { stat, created: false }) if stat.version == 1));
    let (data, stat) = ns.get("/a").unwrap();
    assert_eq!(&data[..], b"2");
    assert_eq!(stat.create_revision, 1);
    assert_eq!(stat.mod_revision, 2);
    apply(&mut ns, create("/a/b", "")).unwrap();
    let del = |p: &str, v: Option<u64>| WriteOp::Delete(DeleteOp { path: p.into(), expected_version: v });
    assert_eq!(apply(&mut ns, del("/a", None)), Err(TreeError::NotEmpty("/a".into())));
    apply(&mut ns, del("/a/b", None)).unwrap();
    assert!(matches!(apply(&mut ns, del("/a", Some(0))), Err(TreeError::BadVersion { .. })));
    apply(&mut ns, del("/a", Some(1))).unwrap();
    assert!(ns.get("/a").is_none());
    assert!(matches!(apply(&mut ns, del("/", None)), Err(TreeError::InvalidArgument(_))));
}

#[test]
fn sequential_names_never_repeat() {
    let mut ns = Namespace::default();
    apply(&mut ns, create("/q", "")).unwrap();
    let seq = || {
        WriteOp::Create(CreateOp { path: "/q/item-".into(), data: Bytes::new(), ephemeral_owner: 0, sequential: true })
    };
    let Ok(Outcome::Created { path: first, .. }) = apply(&mut ns, seq()) else { panic!() };
    assert_eq!(first, "/q/item-0000000000");
    apply(&mut ns, WriteOp::Delete(DeleteOp { path: first.clone(), expected_version: None })).unwrap();
    let Ok(Outcome::Created { path: second, .. }) = apply(&mut ns, seq()) else { panic!() };
    assert_eq!(second, "/q/item-0000000002");
}

#[test]
fn sessions_own_ephemerals() {
    let mut ns = Namespace::default();
    let Ok(Outcome::SessionOpened { session_id, .. }) = apply(&mut ns, WriteOp::OpenSession { ttl_ms: 1000 }) else {
        panic!()
    };
    let eph = |owner: u64, p: &str| {
        WriteOp::Create(CreateOp { path: p.into(), data: Bytes::new(), ephemeral_owner: owner, sequential: false })
    };
    apply(&mut ns, eph(session_id, "/e")).unwrap();
    assert_eq!(apply(&mut ns, eph(999, "/f")), Err(TreeError::SessionExpired(999)));
    assert_eq!(apply(&mut ns, create("/e/child", "")), Err(TreeError::NoChildrenForEphemerals("/e".into())));
    let (resp, events) = ns.apply(&cmd(WriteOp::ExpireSession { session_id }));
    assert!(resp.outcome.is_ok());
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::Deleted);
    assert!(ns.get("/e").is_none());
    assert_eq!(apply(&mut ns, WriteOp::CloseSession { session_id }), Err(TreeError::SessionExpired(session_id)));
}

#[test]
fn failed_txn_changes_nothing() {
    let mut ns = Namespace::default();
    apply(&mut ns, create("/a", "x")).unwrap();
    let before = ns.clone();
    // Condition fails.
    let out = apply(
        &mut ns,
        WriteOp::Txn {
            conditions: vec![Condition { path: "/a".into(), check: Check::Version(5) }],
            ops: vec![TxnOp::Delete(DeleteOp { path: "/a".into(), expected_version: None })],
        },
    );
    assert!(matches!(out, Ok(Outcome::Txn { succeeded: false, failed_condition: 0, .. })));
    assert_eq!(ns, before);
    // An op fails after earlier ops succeeded: all undone.
    let out = apply(
        &mut ns,
        WriteOp::Txn {
            conditions: vec![],
            ops: vec![
                TxnOp::Create(CreateOp {
                    path: "/b".into(),
                    data: Bytes::new(),
                    ephemeral_owner: 0,
                    sequential: false,
                }),
                TxnOp::Create(CreateOp {
                    path: "/a/s-".into(),
                    data: Bytes::new(),
                    ephemeral_owner: 0,
                    sequential: true,
                }),
                TxnOp::Set(SetOp {
                    path: "/a".into(),
                    data: Bytes::from_static(b"y"),
                    expected_version: None,
                    upsert: false,
                }),
                TxnOp::Delete(DeleteOp { path: "/missing".into(), expected_version: None }),
            ],
        },
    );
    assert_eq!(out, Err(TreeError::NotFound("/missing".into())));
    assert_eq!(ns, before);
}

#[test]
fn retried_request_applies_once() {
    let mut ns = Namespace::default();
    let id = RequestId { client_id: Bytes::from_static(b"c1"), seq: 1 };
    let c = Command { request_id: Some(id.clone()), op: create("/once", "") };
    let (first, ev1) = ns.apply(&c);
    let (second, ev2) = ns.apply(&c);
    assert!(first.outcome.is_ok());
    assert_eq!(first, second, "a retry answers with the first outcome, not NodeExists");
    assert_eq!(ev1.len(), 1);
    assert!(ev2.is_empty());
    assert_eq!(ns.revision(), 1);
}

// ---- property tests over random command sequences ----

fn arb_path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..4)
        .prop_map(|parts| format!("/{}", parts.join("/")))
}

fn arb_op() -> impl Strategy<Value = WriteOp> {
    let data = prop::collection::vec(any::<u8>(), 0..8).prop_map(Bytes::from);
    prop_oneof![
        (arb_path(), data.clone(), 0u64..4, any::<bool>()).prop_map(|(path, data, owner, sequential)| {
            WriteOp::Create(CreateOp { path, data, ephemeral_owner: owner, sequential })
        }),
        (arb_path(), data, prop::option::of(0u64..3), any::<bool>()).prop_map(
            |(path, data, expected_version, upsert)| WriteOp::Set(SetOp { path, data, expected_version, upsert })
        ),
        (arb_path(), prop::option::of(0u64..3))
            .prop_map(|(path, expected_version)| WriteOp::Delete(DeleteOp { path, expected_version })),
        (1u64..1000).prop_map(|ttl_ms| WriteOp::OpenSession { ttl_ms }),
        (1u64..4).prop_map(|session_id| WriteOp::ExpireSession { session_id }),
        (prop::collection::vec((arb_path(), any::<bool>()), 0..2), prop::collection::vec(arb_path(), 1..4)).prop_map(
            |(conds, paths)| WriteOp::Txn {
                conditions: conds.into_iter().map(|(path, e)| Condition { path, check: Check::Exists(e) }).collect(),
                ops: paths
                    .into_iter()
                    .enumerate()
                    .map(|(i, path)| match i % 3 {
                        0 =>
                            TxnOp::Create(CreateOp { path, data: Bytes::new(), ephemeral_owner: 0, sequential: false }),
                        1 => TxnOp::Set(SetOp {
                            path,
                            data: Bytes::from_static(b"t"),
                            expected_version: None,
                            upsert: true
                        }),
                        _ => TxnOp::Delete(DeleteOp { path, expected_version: None }),
                    })
                    .collect(),
            }
        ),
    ]
}

/// Structural invariants that every reachable namespace satisfies.
fn check_invariants(ns: &Namespace) {
    for (path, node) in &ns.nodes {
        if path != "/" {
            let parent = ns.nodes.get(path::parent(path)).expect("every node has a parent");
            assert!(parent.children.contains(path::name(path)), "parent lists {path}");
            assert_eq!(parent.ephemeral_owner, 0, "ephemerals have no children");
        }
        for child in &node.children {
            assert!(ns.nodes.contains_key(&path::join(path, child)), "child {child} of {path} exists");
        }
        if node.ephemeral_owner != 0 {
            let session = ns.sessions.get(&node.ephemeral_owner).expect("owner session is live");
            assert!(session.ephemerals.contains(path));
        }
        assert!(node.mod_revision <= ns.revision && node.create_revision <= node.mod_revision);
    }
    for (id, session) in &ns.sessions {
        for path in &session.ephemerals {
            assert_eq!(ns.nodes.get(path).map(|n| n.ephemeral_owner), Some(*id));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_histories_keep_invariants(ops in prop::collection::vec(arb_op(), 1..60)) {
        let mut ns = Namespace::default();
        let mut replica = Namespace::default();
        for op in ops {
            let before = ns.clone();
            let before_rev = ns.revision();
            let (resp, events) = ns.apply(&cmd(op.clone()));
            // Determinism: a second member applying the same command agrees.
            let (resp2, events2) = replica.apply(&cmd(op));
            prop_assert_eq!(&resp, &resp2);
            prop_assert_eq!(&events, &events2);
            let failed = matches!(&resp.outcome, Err(_) | Ok(Outcome::Txn { succeeded: false, .. }));
            if failed {
                prop_assert_eq!(&ns, &before);
            }
            if events.is_empty() {
                prop_assert_eq!(ns.revision(), before_rev);
            } else {
                prop_assert_eq!(ns.revision(), before_rev + 1);
                prop_assert!(events.iter().all(|e| e.revision == ns.revision()));
            }
            check_invariants(&ns);
        }
        prop_assert_eq!(&ns, &replica);
    }
}
