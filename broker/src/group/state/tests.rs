use proptest::prelude::*;

use super::*;

const DELAY: Duration = Duration::from_millis(100);

fn tps(topic: &str, ps: impl IntoIterator<Item = u32>) -> BTreeSet<Tp> {
    ps.into_iter().map(|p| (topic.to_string(), p)).collect()
}

fn group(topic_partitions: u32) -> (Group, Instant) {
    let now = Instant::now();
    let mut g = Group::new("g", 1, GroupConfig::default());
    g.set_topics(BTreeMap::from([("t".to_string(), topic_partitions)]), now);
    (g, now)
}

fn spec(topics: &[&str]) -> JoinSpec {
    JoinSpec {
        client_id: "c".into(),
        topics: topics.iter().map(|t| t.to_string()).collect(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 5_000,
        generation: -1,
        ..JoinSpec::default()
    }
}

/// Joins on `conn`; returns the member id from the Joined message.
fn join(g: &mut Group, conn: ConnId, spec: JoinSpec, now: Instant) -> String {
    g.join(conn, spec, now).expect("joins");
    let out = g.take_outbox();
    out.iter()
        .find_map(|o| match o {
            Outbound::Send(c, ToMember::Joined { member_id, .. }) if *c == conn => Some(member_id.clone()),
            _ => None,
        })
        .expect("a Joined message")
}

/// The Assignment sent to `conn` in `out`, if any.
fn assignment(out: &[Outbound], conn: ConnId) -> Option<(i32, BTreeSet<Tp>, BTreeSet<Tp>)> {
    out.iter().find_map(|o| match o {
        Outbound::Send(c, ToMember::Assignment { generation, assigned, revoked }) if *c == conn => {
            Some((*generation, assigned.clone(), revoked.clone()))
        }
        _ => None,
    })
}

fn error(out: &[Outbound], conn: ConnId) -> Option<GroupError> {
    out.iter().find_map(|o| match o {
        Outbound::Send(c, ToMember::Error(e)) if *c == conn => Some(e.clone()),
        _ => None,
    })
}

fn closed(out: &[Outbound], conn: ConnId) -> bool {
    out.contains(&Outbound::Close(conn))
}

#[test]
fn partitions_move_only_after_revoke_done() {
    let (mut g, t0) = group(6);
    let a = join(&mut g, 1, spec(&["t"]), t0);
    assert_eq!(g.next_deadline(), Some(t0 + DELAY), "the first join waits for the rebalance delay");
    g.tick(t0 + DELAY);
    let out = g.take_outbox();
    assert_eq!(assignment(&out, 1), Some((1, tps("t", 0..6), BTreeSet::new())));

    let t1 = t0 + Duration::from_secs(1);
    let b = join(&mut g, 2, spec(&["t"]), t1);
    g.tick(t1 + DELAY);
    let out = g.take_outbox();
    let (gen_a, kept, revoked) = assignment(&out, 1).expect("an assignment for the first member");
    assert_eq!((gen_a, kept.len(), revoked.len()), (2, 3, 3));
    assert_eq!(assignment(&out, 2), Some((2, BTreeSet::new(), BTreeSet::new())), "nothing free yet");
    // The revoked partitions are still the first member's: it may commit them.
    let revoked_list: Vec<Tp> = revoked.iter().cloned().collect();
    assert_eq!(g.check_commit(&a, 2, &revoked_list), Ok(vec![None, None, None]));
    assert!(matches!(g.check_commit(&b, 2, &revoked_list), Ok(v) if v.iter().all(Option::is_some)));

    g.on_message(1, MemberMsg::RevokeDone { partitions: revoked.clone() }, t1, t1 + DELAY);
    let out = g.take_outbox();
    assert_eq!(assignment(&out, 2), Some((2, revoked.clone(), BTreeSet::new())));
    assert_eq!(g.members()[&a].owned, kept);
    assert!(g.take_dirty());
}

#[test]
fn every_member_hears_of_every_generation() {
    let (mut g, t0) = group(2);
    join(&mut g, 1, spec(&["t"]), t0);
    join(&mut g, 2, spec(&["t"]), t0);
    g.tick(t0 + DELAY);
    let out = g.take_outbox();
    assert_eq!(assignment(&out, 1).map(|a| a.0), Some(1));
    assert_eq!(assignment(&out, 2).map(|a| a.0), Some(1));
    join(&mut g, 3, spec(&["t"]), t0 + DELAY);
    g.tick(t0 + DELAY * 2);
    let out = g.take_outbox();
    for conn in [1, 2, 3] {
        assert_eq!(assignment(&out, conn).map(|a| a.0), Some(2), "conn {conn}");
    }
}

#[test]
fn commits_are_checked_against_member_generation_and_ownership() {
    let (mut g, t0) = group(2);
    assert_eq!(g.check_commit("", -1, &[("t".into(), 0)]), Ok(vec![None]), "standalone commits while empty");
    let a = join(&mut g, 1, spec(&["t"]), t0);
    g.tick(t0 + DELAY);
    assert!(matches!(g.check_commit("", -1, &[("t".into(), 0)]), Err(GroupError::NonEmptyGroup(_))));
    assert!(matches!(g.check_commit("nobody", 1, &[("t".into(), 0)]), Err(GroupError::UnknownMemberId(_))));
    assert_eq!(g.check_commit(&a, 0, &[("t".into(), 0)]), Err(GroupError::IllegalGeneration { given: 0, current: 1 }));
    let r = g.check_commit(&a, 1, &[("t".into(), 0), ("t".into(), 7)]).expect("member ok");
    assert_eq!(r[0], None);
    assert!(matches!(r[1], Some(GroupError::PartitionNotOwned { .. })));
}

#[test]
fn join_validation() {
    let (mut g, t0) = group(2);
    let short = JoinSpec { session_timeout_ms: 10, ..spec(&["t"]) };
    assert!(matches!(g.join(1, short, t0), Err(GroupError::InvalidRequest(_))));
    let unknown = JoinSpec { assignor: "fancy".into(), ..spec(&["t"]) };
    assert!(matches!(g.join(1, unknown, t0), Err(GroupError::InvalidRequest(_))));
    let stranger = JoinSpec { member_id: "ghost".into(), ..spec(&["t"]) };
    assert!(matches!(g.join(1, stranger, t0), Err(GroupError::UnknownMemberId(_))));
    join(&mut g, 1, JoinSpec { assignor: "range".into(), ..spec(&["t"]) }, t0);
    let other = JoinSpec { assignor: "roundrobin".into(), ..spec(&["t"]) };
    assert!(matches!(g.join(2, other, t0), Err(GroupError::InconsistentGroupProtocol(_))));
    let unset = JoinSpec { session_timeout_ms: 0, assignor: "range".into(), ..spec(&["t"]) };
    let id = join(&mut g, 3, unset, t0);
    assert_eq!(g.members()[&id].session_timeout, DEFAULT_SESSION_TIMEOUT);
}

#[test]
fn dynamic_members_leave_when_their_stream_ends() {
    let (mut g, t0) = group(4);
    let a = join(&mut g, 1, spec(&["t"]), t0);
    join(&mut g, 2, spec(&["t"]), t0);
    g.tick(t0 + DELAY);
    g.take_outbox();
    g.on_message(1, MemberMsg::Closed, t0 + DELAY, t0 + DELAY);
    assert!(!g.members().contains_key(&a));
    // Its partitions were free at once, but the survivor's target grows
    // only with the next rebalance.
    g.tick(t0 + DELAY * 2);
    let out = g.take_outbox();
    assert_eq!(assignment(&out, 2), Some((2, tps("t", 0..4), BTreeSet::new())));
}

#[test]
fn static_member_keeps_its_place_across_a_short_disconnection() {
    let (mut g, t0) = group(4);
    let stat = JoinSpec { instance_id: Some("i-1".into()), ..spec(&["t"]) };
    let first = join(&mut g, 1, stat.clone(), t0);
    join(&mut g, 2, spec(&["t"]), t0);
    g.tick(t0 + DELAY);
    g.take_outbox();
    let owned = g.members()[&first].owned.clone();
    let generation = g.generation();

    let t1 = t0 + Duration::from_secs(2);
    g.on_message(2, MemberMsg::Heartbeat, t1, t1);
    g.on_message(1, MemberMsg::Closed, t1, t1);
    assert_eq!(g.next_deadline(), Some(t1 + Duration::from_secs(10)), "no rebalance scheduled");
    let t2 = t1 + Duration::from_secs(5);
    g.on_message(2, MemberMsg::Heartbeat, t2, t2);
    let second = join(&mut g, 3, stat.clone(), t2);
    assert_ne!(first, second, "the old member id is fenced");
    assert!(g.take_outbox().is_empty());
    g.tick(t2);
    assert_eq!(g.generation(), generation);
    assert_eq!(g.members()[&second].owned, owned);
    assert!(matches!(g.check_commit(&first, generation, &[]), Err(GroupError::UnknownMemberId(_))));

    // A second process with the same instance id fences the first.
    let t3 = t2 + Duration::from_secs(1);
    g.join(4, stat, t3).expect("joins");
    let out = g.take_outbox();
    assert!(matches!(error(&out, 3), Some(GroupError::FencedInstanceId(_))));
    assert!(closed(&out, 3));
    let third = g.members().values().find(|m| m.conn == Some(4)).map(|m| m.member_id.clone()).expect("slot");
    assert_eq!(g.members()[&third].owned, owned);
    assert_eq!(g.generation(), generation);

    // Gone for longer than its session timeout: removed, and a rebalance.
    g.on_message(4, MemberMsg::Closed, t3, t3);
    let t4 = t3 + Duration::from_secs(10);
    g.on_message(2, MemberMsg::Heartbeat, t4, t4);
    g.tick(t4);
    assert!(!g.members().contains_key(&third));
    g.tick(t4 + DELAY);
    assert_eq!(g.generation(), generation + 1);
    assert_eq!(g.members().len(), 1);
}

#[test]
fn a_member_that_does_not_revoke_in_time_is_removed() {
    let (mut g, t0) = group(2);
    let a = join(&mut g, 1, spec(&["t"]), t0);
    g.tick(t0 + DELAY);
    let t1 = t0 + Duration::from_secs(1);
    join(&mut g, 2, spec(&["t"]), t1);
    g.tick(t1 + DELAY);
    g.take_outbox();
    assert_eq!(g.members()[&a].revoking.len(), 1);
    // Heartbeats alone do not help.
    let t2 = t1 + DELAY + Duration::from_secs(4);
    g.on_message(1, MemberMsg::Heartbeat, t2, t2);
    g.tick(t1 + DELAY + Duration::from_secs(5));
    let out = g.take_outbox();
    assert!(!g.members().contains_key(&a));
    assert!(matches!(error(&out, 1), Some(GroupError::UnknownMemberId(_))));
    assert!(closed(&out, 1));
}

#[test]
fn takeover_keeps_rejoining_members_and_drops_missing_ones() {
    let (mut old, t0) = group(4);
    let a = join(&mut old, 1, spec(&["t"]), t0);
    let b = join(&mut old, 2, spec(&["t"]), t0);
    old.tick(t0 + DELAY);
    old.take_outbox();
    let record = old.to_record();
    let a_owned = old.members()[&a].owned.clone();

    let t1 = t0 + Duration::from_secs(1);
    let mut g = Group::from_record("g", 2, GroupConfig::default(), record, t1);
    g.set_topics(BTreeMap::from([("t".to_string(), 4)]), t1);
    assert_eq!(g.generation(), 2, "a takeover starts a new generation");
    assert!(g.take_dirty());
    let rejoin = JoinSpec { member_id: a.clone(), owned: a_owned.clone(), generation: 1, ..spec(&["t"]) };
    join(&mut g, 10, rejoin, t1);
    g.tick(t1 + DELAY);
    let t_beat = t1 + Duration::from_secs(5);
    g.on_message(10, MemberMsg::Heartbeat, t_beat, t_beat);
    assert_eq!(g.members()[&a].owned, a_owned, "kept what it owned");
    assert_eq!(g.generation(), 2, "no rebalance while members may still come back");
    // b never comes back: removed after its session timeout, then a rebalance.
    let t2 = t1 + Duration::from_secs(10);
    g.tick(t2);
    assert!(!g.members().contains_key(&b));
    g.tick(t2 + DELAY);
    let out = g.take_outbox();
    assert_eq!(assignment(&out, 10), Some((3, tps("t", 0..4), BTreeSet::new())));
}

#[test]
fn a_rejoin_keeps_only_what_the_group_and_the_member_agree_on() {
    let (mut g, t0) = group(4);
    let a = join(&mut g, 1, spec(&["t"]), t0);
    let b = join(&mut g, 2, spec(&["t"]), t0);
    g.tick(t0 + DELAY);
    let (a_owned, b_owned) = (g.members()[&a].owned.clone(), g.members()[&b].owned.clone());
    let record = g.to_record();
    let mut g = Group::from_record("g", 1, GroupConfig::default(), record, t0);
    // Claims of another member's partitions and of ones that do not
    // exist are not believed.
    let mut claims = a_owned.clone();
    claims.extend(b_owned.iter().cloned());
    claims.insert(("t".into(), 9));
    join(&mut g, 10, JoinSpec { member_id: a.clone(), owned: claims, generation: 1, ..spec(&["t"]) }, t0);
    assert_eq!(g.members()[&a].owned, a_owned);
    assert_eq!(g.members()[&b].owned, b_owned);
    // What a member no longer holds is free, though still its target.
    let first = a_owned.iter().next().cloned().expect("a owns something");
    let fewer: BTreeSet<Tp> = a_owned.iter().skip(1).cloned().collect();
    g.join(11, JoinSpec { member_id: a.clone(), owned: fewer, generation: 1, ..spec(&["t"]) }, t0).expect("joins");
    assert!(g.take_dirty());
    let out = g.take_outbox();
    assert!(closed(&out, 10), "the member's previous stream is closed");
    assert_eq!(assignment(&out, 11).map(|a| a.1.contains(&first)), Some(true));
}

#[test]
fn revocations_stand_across_a_rejoin() {
    let (mut g, t0) = group(2);
    let a = join(&mut g, 1, spec(&["t"]), t0);
    g.tick(t0 + DELAY);
    join(&mut g, 2, spec(&["t"]), t0 + DELAY);
    let t1 = t0 + DELAY * 2;
    g.tick(t1);
    let (kept, revoking) = (g.members()[&a].owned.clone(), g.members()[&a].revoking.clone());
    assert_eq!((kept.len(), revoking.len()), (1, 1));
    let mut g = Group::from_record("g", 2, GroupConfig::default(), g.to_record(), t1);
    // The member claims only what it still consumes; the revocation it has
    // not confirmed is repeated, and the partition stays its own.
    let rejoin = JoinSpec { member_id: a.clone(), owned: kept.clone(), generation: 2, ..spec(&["t"]) };
    g.join(10, rejoin, t1).expect("rejoins");
    let out = g.take_outbox();
    assert_eq!(assignment(&out, 10), Some((3, kept, revoking.clone())));
    g.on_message(10, MemberMsg::RevokeDone { partitions: revoking }, t1, t1);
    assert!(g.members()[&a].revoking.is_empty());
}

#[test]
fn partition_count_changes_rebalance() {
    let (mut g, t0) = group(2);
    join(&mut g, 1, spec(&["t", "u"]), t0);
    g.tick(t0 + DELAY);
    g.take_outbox();
    let t1 = t0 + Duration::from_secs(1);
    g.set_topics(BTreeMap::from([("t".to_string(), 2), ("other".to_string(), 9)]), t1);
    assert_eq!(g.next_deadline(), Some(t0 + Duration::from_secs(10)), "unsubscribed topics do not matter");
    g.set_topics(BTreeMap::from([("t".to_string(), 3), ("u".to_string(), 1)]), t1);
    g.tick(t1 + DELAY);
    let out = g.take_outbox();
    let mut want = tps("t", 0..3);
    want.insert(("u".into(), 0));
    assert_eq!(assignment(&out, 1), Some((2, want, BTreeSet::new())));
}

#[test]
fn leave_and_subscription_changes_trigger_rebalances() {
    let (mut g, t0) = group(2);
    join(&mut g, 1, spec(&["t"]), t0);
    let b = join(&mut g, 2, spec(&["t"]), t0);
    g.tick(t0 + DELAY);
    g.take_outbox();
    g.on_message(2, MemberMsg::Leave, t0 + DELAY, t0 + DELAY);
    assert!(!g.members().contains_key(&b));
    assert!(closed(&g.take_outbox(), 2));
    g.tick(t0 + DELAY * 2);
    g.on_message(1, MemberMsg::Subscribe { topics: BTreeSet::new() }, t0 + DELAY * 2, t0 + DELAY * 2);
    g.tick(t0 + DELAY * 3);
    let out = g.take_outbox();
    assert_eq!(assignment(&out, 1), Some((3, BTreeSet::new(), tps("t", 0..2))));
}

#[derive(Debug, Clone)]
enum Op {
    Join { conn: u8, static_member: bool },
    Close(u8),
    Leave(u8),
    RevokeAll(u8),
    Topics(u32),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..6, any::<bool>()).prop_map(|(conn, static_member)| Op::Join { conn, static_member }),
        (0u8..6).prop_map(Op::Close),
        (0u8..6).prop_map(Op::Leave),
        (0u8..6).prop_map(Op::RevokeAll),
        (1u32..10).prop_map(Op::Topics),
        (0u64..3_000).prop_map(Op::Advance),
    ]
}

proptest! {
    /// Whatever happens, no partition has two owners, each member owns
    /// only partitions of its target, and the persisted record agrees.
    #[test]
    fn no_partition_ever_has_two_owners(ops in prop::collection::vec(op(), 1..80)) {
        let (mut g, mut now) = group(6);
        let mut next_conn: ConnId = 100;
        let mut conns: BTreeMap<u8, ConnId> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Join { conn, static_member } => {
                    next_conn += 1;
                    let instance_id = static_member.then(|| format!("i{conn}"));
                    if g.join(next_conn, JoinSpec { instance_id, ..spec(&["t"]) }, now).is_ok() {
                        conns.insert(conn, next_conn);
                    }
                }
                Op::Close(c) => if let Some(conn) = conns.remove(&c) {
                    g.on_message(conn, MemberMsg::Closed, now, now);
                },
                Op::Leave(c) => if let Some(conn) = conns.remove(&c) {
                    g.on_message(conn, MemberMsg::Leave, now, now);
                },
                Op::RevokeAll(c) => if let Some(conn) = conns.get(&c) {
                    let revoking = g.members().values().find(|m| m.conn == Some(*conn)).map(|m| m.revoking.clone());
                    if let Some(partitions) = revoking {
                        g.on_message(*conn, MemberMsg::RevokeDone { partitions }, now, now);
                    }
                },
                Op::Topics(n) => g.set_topics(BTreeMap::from([("t".to_string(), n)]), now),
                Op::Advance(ms) => {
                    now += Duration::from_millis(ms);
                    for conn in conns.values() {
                        g.on_message(*conn, MemberMsg::Heartbeat, now, now);
                    }
                    g.tick(now);
                }
            }
            let _ = g.take_outbox();
            let mut seen = BTreeSet::new();
            for m in g.members().values() {
                prop_assert!(m.owned.is_subset(&m.target), "{m:?}");
                for tp in m.owned.iter().chain(m.revoking.iter()) {
                    prop_assert!(seen.insert(tp.clone()), "{tp:?} has two owners");
                }
            }
            let record = g.to_record();
            prop_assert_eq!(record.members.len(), g.members().len());
        }
    }
}
