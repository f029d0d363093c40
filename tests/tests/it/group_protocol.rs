//! The broker's side of consumer groups over the raw `Groups` gRPC service
//! (no client library): incremental rebalances, commit fencing, a kill -9
//! of the coordinator, static membership. Each test runs 3 coordinators
//! and 3 brokers as real processes.

use std::collections::BTreeSet;
use std::time::Duration;

use strata_coord_client::CoordClient;
use strata_proto::broker as pb;
use strata_proto::broker::admin_client::AdminClient;
use strata_proto::broker::groups_client::GroupsClient;
use strata_proto::broker::{coordinator_message::Msg as Down, member_message::Msg as Up};
use strata_proto::common::ErrorCode;
use strata_tests::{Cluster, eventually};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const LONG: Duration = Duration::from_secs(20);
/// How long a message from the coordinator may take to arrive.
const MESSAGE: Duration = Duration::from_secs(10);

/// A broker's registration expires 1.5 s after its last keep-alive, so a
/// killed coordinator is replaced within a test's patience.
const FAST_EXPIRY: &str = "session_timeout_ms = 1500
replica_lag_time_max_ms = 2000
";

type Tp = (String, u32);

async fn groups(addr: &str) -> anyhow::Result<GroupsClient<Channel>> {
    Ok(GroupsClient::connect(format!("http://{addr}")).await?)
}

async fn create_topic(cluster: &Cluster, name: &str, partitions: u32) -> anyhow::Result<()> {
    let mut admin = AdminClient::connect(format!("http://{}", cluster.bootstrap()[0])).await?;
    let r = admin
        .create_topics(pb::CreateTopicsRequest {
            topics: vec![pb::CreateTopic {
                name: name.into(),
                partitions,
                replication_factor: 1,
                configs: Default::default(),
            }],
            timeout_ms: 20_000,
        })
        .await?
        .into_inner();
    if let Some(e) = &r.topics[0].error {
        anyhow::bail!("create {name}: {} {}", e.code, e.message);
    }
    // Every broker must know the topic before it can validate commits.
    for addr in cluster.bootstrap() {
        eventually(&format!("{addr} knows {name}"), LONG, || {
            let addr = addr.clone();
            async move {
                let mut c =
                    strata_proto::broker::broker_client::BrokerClient::connect(format!("http://{addr}")).await?;
                let md = c.metadata(pb::MetadataRequest { topics: vec![name.into()] }).await?.into_inner();
                anyhow::ensure!(md.topics.first().is_some_and(|t| t.error.is_none()), "{md:?}");
                Ok(())
            }
        })
        .await?;
    }
    Ok(())
}

/// The coordinator of `group` as broker `ask` sees it.
async fn find_coordinator(ask: &str, group: &str) -> anyhow::Result<(i32, String)> {
    let r = groups(ask).await?.find_coordinator(pb::FindCoordinatorRequest { group: group.into() }).await?;
    let r = r.into_inner();
    Ok((r.broker_id, r.addr))
}

fn partitions_of(list: &[pb::TopicPartitions]) -> BTreeSet<Tp> {
    list.iter().flat_map(|t| t.partitions.iter().map(|p| (t.topic.clone(), *p))).collect()
}

fn to_wire(set: &BTreeSet<Tp>) -> Vec<pb::TopicPartitions> {
    let mut out: Vec<pb::TopicPartitions> = Vec::new();
    for (t, p) in set {
        match out.last_mut() {
            Some(last) if &last.topic == t => last.partitions.push(*p),
            _ => out.push(pb::TopicPartitions { topic: t.clone(), partitions: vec![*p] }),
        }
    }
    out
}

fn join_request(group: &str, topic: &str) -> pb::JoinGroup {
    pb::JoinGroup {
        group: group.into(),
        client_id: "it".into(),
        topics: vec![topic.into()],
        session_timeout_ms: 6_000,
        rebalance_timeout_ms: 10_000,
        generation: -1,
        ..Default::default()
    }
}

/// One member stream, with a heartbeat every second.
struct Member {
    tx: mpsc::Sender<pb::MemberMessage>,
    rx: tonic::Streaming<pb::CoordinatorMessage>,
    heartbeat: tokio::task::JoinHandle<()>,
    member_id: String,
    generation: i32,
    assigned: BTreeSet<Tp>,
}

impl Drop for Member {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

impl Member {
    /// Opens a stream to `addr`, sends `join` and waits for `Joined` (an
    /// error message fails the call).
    async fn join(addr: &str, join: pb::JoinGroup) -> anyhow::Result<Member> {
        let (tx, rx) = mpsc::channel(16);
        tx.send(pb::MemberMessage { msg: Some(Up::Join(join)) }).await?;
        let stream = groups(addr).await?.join(ReceiverStream::new(rx)).await?.into_inner();
        let beat = tx.clone();
        let heartbeat = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let msg = pb::MemberMessage { msg: Some(Up::Heartbeat(pb::Heartbeat {})) };
                if beat.send(msg).await.is_err() {
                    return;
                }
            }
        });
        let mut m =
            Member { tx, rx: stream, heartbeat, member_id: String::new(), generation: -1, assigned: BTreeSet::new() };
        match m.next().await? {
            Down::Joined(j) => m.member_id = j.member_id,
            other => anyhow::bail!("expected Joined, got {other:?}"),
        }
        Ok(m)
    }

    async fn next(&mut self) -> anyhow::Result<Down> {
        let msg = tokio::time::timeout(MESSAGE, self.rx.message()).await??;
        msg.and_then(|m| m.msg).ok_or_else(|| anyhow::anyhow!("the coordinator ended the stream"))
    }

    /// The next message, which must be an Assignment.
    async fn assignment(&mut self) -> anyhow::Result<(BTreeSet<Tp>, BTreeSet<Tp>)> {
        match self.next().await? {
            Down::Assignment(a) => {
                self.generation = a.generation;
                self.assigned = partitions_of(&a.assigned);
                Ok((self.assigned.clone(), partitions_of(&a.revoked)))
            }
            other => anyhow::bail!("expected an Assignment, got {other:?}"),
        }
    }

    /// Reads assignments until one of `generation` arrives.
    async fn assignment_of(&mut self, generation: i32) -> anyhow::Result<BTreeSet<Tp>> {
        loop {
            let (assigned, revoked) = self.assignment().await?;
            if self.generation == generation {
                anyhow::ensure!(revoked.is_empty(), "still revoking {revoked:?}");
                return Ok(assigned);
            }
            anyhow::ensure!(self.generation < generation, "went past generation {generation}");
        }
    }

    async fn send(&self, msg: Up) -> anyhow::Result<()> {
        Ok(self.tx.send(pb::MemberMessage { msg: Some(msg) }).await?)
    }

    async fn revoke_done(&self, partitions: &BTreeSet<Tp>) -> anyhow::Result<()> {
        self.send(Up::RevokeDone(pb::RevokeDone { generation: self.generation, partitions: to_wire(partitions) })).await
    }

    fn rejoin_request(&self, group: &str, topic: &str) -> pb::JoinGroup {
        pb::JoinGroup {
            member_id: self.member_id.clone(),
            owned: to_wire(&self.assigned),
            generation: self.generation,
            ..join_request(group, topic)
        }
    }
}

/// The group's state node as its coordinator last wrote it.
#[derive(Debug)]
struct State {
    generation: i32,
    coordinator_id: i32,
    /// member id → (owned, revoking)
    members: Vec<(String, BTreeSet<Tp>, BTreeSet<Tp>)>,
}

fn tps_of(v: &serde_json::Value) -> BTreeSet<Tp> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|tp| Some((tp.get(0)?.as_str()?.to_string(), u32::try_from(tp.get(1)?.as_u64()?).ok()?)))
        .collect()
}

async fn state(coord: &CoordClient, group: &str) -> anyhow::Result<State> {
    let (data, _) = coord.get(&format!("/groups/{group}/state")).await?;
    let v: serde_json::Value = serde_json::from_slice(&data)?;
    Ok(State {
        generation: v["generation"].as_i64().unwrap_or(-1) as i32,
        coordinator_id: v["coordinator_id"].as_i64().unwrap_or(-1) as i32,
        members: v["members"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                (m["member_id"].as_str().unwrap_or_default().to_string(), tps_of(&m["owned"]), tps_of(&m["revoking"]))
            })
            .collect(),
    })
}

fn owned_by<'a>(s: &'a State, member: &str) -> Option<&'a BTreeSet<Tp>> {
    s.members.iter().find(|m| m.0 == member).map(|m| &m.1)
}

/// Waits until the group's state shows `members` members splitting
/// `total` partitions evenly with nothing being revoked.
async fn settled(coord: &CoordClient, group: &str, members: usize, total: usize) -> anyhow::Result<State> {
    settled_from(coord, group, members, total, 0).await
}

/// `settled`, in generation `min_generation` or later.
async fn settled_from(
    coord: &CoordClient,
    group: &str,
    members: usize,
    total: usize,
    min_generation: i32,
) -> anyhow::Result<State> {
    eventually(&format!("{group} settled over {members} members"), LONG, || async {
        let s = state(coord, group).await?;
        anyhow::ensure!(s.generation >= min_generation, "{s:?}");
        let owned: usize = s.members.iter().map(|m| m.1.len()).sum();
        let balanced = s.members.iter().all(|m| m.1.len().abs_diff(total / members) <= 1 && m.2.is_empty());
        anyhow::ensure!(s.members.len() == members && owned == total && balanced, "{s:?}");
        Ok(s)
    })
    .await
}

async fn commit(
    addr: &str,
    group: &str,
    member_id: &str,
    generation: i32,
    offsets: &[(Tp, i64)],
) -> anyhow::Result<Vec<Option<pb::PartitionError>>> {
    let req = pb::CommitOffsetsRequest {
        group: group.into(),
        member_id: member_id.into(),
        generation,
        offsets: offsets
            .iter()
            .map(|((topic, partition), offset)| pb::OffsetCommit {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
                metadata: format!("m{offset}"),
            })
            .collect(),
    };
    let r = groups(addr).await?.commit_offsets(req).await?.into_inner();
    Ok(r.partitions.into_iter().map(|p| p.error).collect())
}

fn codes(errors: &[Option<pb::PartitionError>]) -> Vec<Option<ErrorCode>> {
    errors.iter().map(|e| e.as_ref().map(|e| ErrorCode::try_from(e.code).unwrap_or_default())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoked_partitions_move_only_after_revoke_done() -> anyhow::Result<()> {
    let cluster = Cluster::start(3).await?;
    let coord = cluster.ensemble.client();
    create_topic(&cluster, "orders", 6).await?;
    let (_, addr) = find_coordinator(&cluster.bootstrap()[0], "g-sticky").await?;

    let mut first = Member::join(&addr, join_request("g-sticky", "orders")).await?;
    let (all, revoked) = first.assignment().await?;
    assert_eq!(all.len(), 6, "the first member gets every partition");
    assert!(revoked.is_empty());
    let generation = first.generation;

    let mut second = Member::join(&addr, join_request("g-sticky", "orders")).await?;
    let (kept, revoked) = first.assignment().await?;
    assert_eq!((first.generation, kept.len(), revoked.len()), (generation + 1, 3, 3));
    let (nothing, _) = second.assignment().await?;
    assert_eq!(second.generation, generation + 1, "the new member learns the generation at once");
    assert!(nothing.is_empty(), "revoked partitions are not handed over before RevokeDone: {nothing:?}");
    // The coordinator writes its state before it sends, so this is what
    // it holds now: the revoked partitions are still the first member's.
    let s = state(&coord, "g-sticky").await?;
    let first_state = s.members.iter().find(|m| m.0 == first.member_id).expect("first member");
    assert_eq!((&first_state.1, &first_state.2), (&kept, &revoked));
    assert_eq!(owned_by(&s, &second.member_id).map(BTreeSet::len), Some(0));

    // Commits of revoked partitions are still accepted until RevokeDone.
    let revoked_offsets: Vec<(Tp, i64)> = revoked.iter().map(|tp| (tp.clone(), 7)).collect();
    let errors = commit(&addr, "g-sticky", &first.member_id, first.generation, &revoked_offsets).await?;
    assert_eq!(codes(&errors), vec![None; 3]);

    first.revoke_done(&revoked).await?;
    let (got, _) = second.assignment().await?;
    assert_eq!(got, revoked, "the second member gets exactly what was revoked");
    assert_eq!(second.generation, generation + 1, "handing over freed partitions is no new generation");
    assert!(kept.is_disjoint(&got));
    let s = settled(&coord, "g-sticky", 2, 6).await?;
    assert_eq!(s.generation, generation + 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commits_are_fenced_by_generation_and_membership() -> anyhow::Result<()> {
    let cluster = Cluster::start(3).await?;
    create_topic(&cluster, "orders", 4).await?;
    let (coordinator, addr) = find_coordinator(&cluster.bootstrap()[0], "g-fence").await?;

    let mut first = Member::join(&addr, join_request("g-fence", "orders")).await?;
    first.assignment().await?;
    let old_generation = first.generation;
    let offsets: Vec<(Tp, i64)> = first.assigned.iter().map(|tp| (tp.clone(), 10)).collect();
    assert_eq!(codes(&commit(&addr, "g-fence", &first.member_id, old_generation, &offsets).await?), vec![None; 4]);

    // A second member bumps the generation.
    let mut second = Member::join(&addr, join_request("g-fence", "orders")).await?;
    let (_, revoked) = first.assignment().await?;
    second.assignment().await?;
    assert!(first.generation > old_generation);

    let errors = commit(&addr, "g-fence", &first.member_id, old_generation, &offsets).await?;
    assert_eq!(codes(&errors), vec![Some(ErrorCode::IllegalGeneration); 4]);
    let errors = commit(&addr, "g-fence", "it-not-a-member", first.generation, &offsets).await?;
    assert_eq!(codes(&errors), vec![Some(ErrorCode::UnknownMemberId); 4]);
    // The second member owns nothing yet.
    let errors = commit(&addr, "g-fence", &second.member_id, second.generation, &offsets).await?;
    assert_eq!(codes(&errors), vec![Some(ErrorCode::PartitionNotOwned); 4]);
    // A consumer outside the group cannot commit while it has members.
    let errors = commit(&addr, "g-fence", "", -1, &offsets).await?;
    assert_eq!(codes(&errors), vec![Some(ErrorCode::NonEmptyGroup); 4]);
    // Per-partition validation.
    let bad = vec![(("orders".to_string(), 99), 1), (("nope".to_string(), 0), 1), (offsets[0].0.clone(), -5)];
    let errors = commit(&addr, "g-fence", &first.member_id, first.generation, &bad).await?;
    assert_eq!(
        codes(&errors),
        vec![
            Some(ErrorCode::UnknownTopicOrPartition),
            Some(ErrorCode::UnknownTopicOrPartition),
            Some(ErrorCode::InvalidRequest)
        ]
    );

    // Another broker names the coordinator instead of committing.
    let other = cluster.bootstrap().into_iter().find(|a| *a != addr).expect("another broker");
    let errors = commit(&other, "g-fence", &first.member_id, first.generation, &offsets).await?;
    let e = errors[0].clone().expect("an error");
    assert_eq!(
        (ErrorCode::try_from(e.code)?, e.leader_id, e.leader_addr.as_str()),
        (ErrorCode::NotCoordinator, coordinator, addr.as_str())
    );

    // Once revoked, the partitions are the second member's to commit.
    first.revoke_done(&revoked).await?;
    second.assignment().await?;
    let theirs: Vec<(Tp, i64)> = revoked.iter().map(|tp| (tp.clone(), 11)).collect();
    let errors = commit(&addr, "g-fence", &second.member_id, second.generation, &theirs).await?;
    assert_eq!(codes(&errors), vec![None; 2]);
    let errors = commit(&addr, "g-fence", &first.member_id, first.generation, &theirs).await?;
    assert_eq!(codes(&errors), vec![Some(ErrorCode::PartitionNotOwned); 2]);

    // Bad input answers typed errors, and the coordinator keeps serving.
    let mut c = groups(&addr).await?;
    let status = c.find_coordinator(pb::FindCoordinatorRequest { group: String::new() }).await.expect_err("empty name");
    assert_eq!(strata_proto::error::detail_from_status(&status).code(), ErrorCode::InvalidRequest);
    let mut stray = Member::join(&addr, join_request("g-fence", "orders")).await?;
    stray.send(Up::Join(join_request("g-fence", "orders"))).await?;
    // Its first assignment may come before the coordinator reads the
    // second JoinGroup.
    loop {
        match stray.next().await? {
            Down::Error(e) => break assert_eq!(ErrorCode::try_from(e.code)?, ErrorCode::InvalidRequest),
            Down::Assignment(_) => continue,
            other => anyhow::bail!("expected an error, got {other:?}"),
        }
    }
    assert!(stray.next().await.is_err(), "the stream ends after the error");
    let unknown = pb::JoinGroup { member_id: "it-ghost".into(), ..join_request("g-fence", "orders") };
    assert!(Member::join(&addr, unknown).await.is_err(), "an unknown member id is refused");

    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_group_survives_a_kill_9_of_its_coordinator() -> anyhow::Result<()> {
    let mut cluster = Cluster::start_with(3, 3, FAST_EXPIRY).await?;
    let coord = cluster.ensemble.client();
    create_topic(&cluster, "orders", 6).await?;
    let (dead, addr) = find_coordinator(&cluster.bootstrap()[0], "g-failover").await?;

    let mut a = Member::join(&addr, join_request("g-failover", "orders")).await?;
    a.assignment().await?;
    let mut b = Member::join(&addr, join_request("g-failover", "orders")).await?;
    let (_, revoked) = a.assignment().await?;
    b.assignment().await?;
    a.revoke_done(&revoked).await?;
    b.assignment().await?;
    let before = settled(&coord, "g-failover", 2, 6).await?;
    assert_eq!(before.coordinator_id, dead);
    let mut committed = Vec::new();
    for m in [&a, &b] {
        let offsets: Vec<(Tp, i64)> = m.assigned.iter().map(|tp| (tp.clone(), 100 + i64::from(tp.1))).collect();
        assert_eq!(codes(&commit(&addr, "g-failover", &m.member_id, m.generation, &offsets).await?), vec![None; 3]);
        committed.extend(offsets);
    }

    cluster.kill9(dead);
    let survivor = cluster.bootstrap().into_iter().find(|x| *x != addr).expect("a survivor");
    let (next, next_addr) = eventually("another coordinator", LONG, || async {
        let (id, next_addr) = find_coordinator(&survivor, "g-failover").await?;
        anyhow::ensure!(id != dead, "still {id}");
        Ok((id, next_addr))
    })
    .await?;

    // What was committed before the kill is there, on any broker.
    let mut client = groups(&survivor).await?;
    let fetched = client
        .fetch_offsets(pb::FetchOffsetsRequest { group: "g-failover".into(), partitions: vec![] })
        .await?
        .into_inner();
    let got: BTreeSet<(Tp, i64)> = fetched.offsets.iter().map(|o| ((o.topic.clone(), o.partition), o.offset)).collect();
    assert_eq!(got, committed.iter().cloned().collect::<BTreeSet<_>>());
    assert!(fetched.offsets.iter().all(|o| o.generation == before.generation && o.metadata.starts_with('m')));

    // Both rejoin with their ids and keep what they owned.
    let mut rejoined = Vec::new();
    for m in [&a, &b] {
        let request = m.rejoin_request("g-failover", "orders");
        let mut again = eventually("a rejoin at the new coordinator", LONG, || {
            let (next_addr, request) = (next_addr.clone(), request.clone());
            async move { Member::join(&next_addr, request).await }
        })
        .await?;
        assert_eq!(again.member_id, m.member_id, "a rejoin keeps the member id");
        let (assigned, _) = again.assignment().await?;
        assert_eq!(assigned, m.assigned, "a rejoin keeps the partitions");
        assert!(again.generation > m.generation, "the new coordinator starts a new generation");
        rejoined.push(again);
    }
    // Once both are back, the new coordinator rebalances once more.
    let rejoin_generation = rejoined.iter().map(|m| m.generation).max().unwrap_or_default();
    let after = settled_from(&coord, "g-failover", 2, 6, rejoin_generation + 1).await?;
    assert_eq!(after.coordinator_id, next);
    for m in &mut rejoined {
        let assigned = m.assignment_of(after.generation).await?;
        assert_eq!(owned_by(&after, &m.member_id), Some(&assigned));
        let offsets: Vec<(Tp, i64)> = assigned.iter().map(|tp| (tp.clone(), 200)).collect();
        let errors = commit(&next_addr, "g-failover", &m.member_id, after.generation, &offsets).await?;
        assert_eq!(codes(&errors), vec![None; offsets.len()], "the group goes on committing");
    }

    let want: Vec<pb::TopicPartitions> = to_wire(&committed.iter().map(|(tp, _)| tp.clone()).collect());
    let fetched = client
        .fetch_offsets(pb::FetchOffsetsRequest { group: "g-failover".into(), partitions: want })
        .await?
        .into_inner();
    assert_eq!(fetched.offsets.len(), 6);
    assert!(fetched.offsets.iter().all(|o| o.offset == 200 && o.generation == after.generation), "{fetched:?}");
    // A partition nobody committed answers -1.
    let none = pb::TopicPartitions { topic: "orders".into(), partitions: vec![77] };
    let r =
        client.fetch_offsets(pb::FetchOffsetsRequest { group: "g-failover".into(), partitions: vec![none] }).await?;
    assert_eq!(r.into_inner().offsets[0].offset, -1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_static_member_rejoining_in_time_keeps_its_partitions() -> anyhow::Result<()> {
    let cluster = Cluster::start(3).await?;
    let coord = cluster.ensemble.client();
    create_topic(&cluster, "orders", 6).await?;
    let (_, addr) = find_coordinator(&cluster.bootstrap()[0], "g-static").await?;
    let static_join = pb::JoinGroup { instance_id: "it-static-1".into(), ..join_request("g-static", "orders") };

    let mut s = Member::join(&addr, static_join.clone()).await?;
    s.assignment().await?;
    let mut d = Member::join(&addr, join_request("g-static", "orders")).await?;
    let (_, revoked) = s.assignment().await?;
    d.assignment().await?;
    s.revoke_done(&revoked).await?;
    d.assignment().await?;
    let before = settled(&coord, "g-static", 2, 6).await?;
    let (old_id, owned) = (s.member_id.clone(), s.assigned.clone());

    // The stream drops; the same instance rejoins within its session timeout.
    drop(s);
    let mut s = Member::join(&addr, static_join.clone()).await?;
    let (assigned, revoked) = s.assignment().await?;
    assert_eq!((assigned, revoked), (owned.clone(), BTreeSet::new()), "same partitions");
    assert_eq!(s.generation, before.generation, "no rebalance");
    assert_ne!(s.member_id, old_id, "a new member id; the old one is fenced");
    let after = state(&coord, "g-static").await?;
    assert_eq!(after.generation, before.generation);
    assert_eq!(owned_by(&after, &s.member_id), Some(&owned));

    let offsets: Vec<(Tp, i64)> = owned.iter().map(|tp| (tp.clone(), 5)).collect();
    let errors = commit(&addr, "g-static", &old_id, before.generation, &offsets).await?;
    assert_eq!(codes(&errors), vec![Some(ErrorCode::UnknownMemberId); 3]);
    let errors = commit(&addr, "g-static", &s.member_id, s.generation, &offsets).await?;
    assert_eq!(codes(&errors), vec![None; 3]);

    // A second process with the same instance id fences the connected one.
    let mut twin = Member::join(&addr, static_join).await?;
    twin.assignment().await?;
    assert_eq!(twin.assigned, owned);
    match s.next().await? {
        Down::Error(e) => assert_eq!(ErrorCode::try_from(e.code)?, ErrorCode::FencedInstanceId),
        other => anyhow::bail!("expected FENCED_INSTANCE_ID, got {other:?}"),
    }
    // No new generation through all of it, so the dynamic member heard of
    // no rebalance.
    let last = state(&coord, "g-static").await?;
    assert_eq!(last.generation, before.generation);
    assert_eq!(owned_by(&last, &d.member_id), Some(&d.assigned));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_calls_read_the_ensemble_and_change_only_empty_groups() -> anyhow::Result<()> {
    let cluster = Cluster::start(3).await?;
    create_topic(&cluster, "orders", 2).await?;
    let (coordinator, addr) = find_coordinator(&cluster.bootstrap()[0], "g-admin").await?;
    let other = cluster.bootstrap().into_iter().find(|a| *a != addr).expect("another broker");
    let mut m = Member::join(&addr, join_request("g-admin", "orders")).await?;
    m.assignment().await?;
    let offsets: Vec<(Tp, i64)> = m.assigned.iter().map(|tp| (tp.clone(), 5)).collect();
    assert_eq!(codes(&commit(&addr, "g-admin", &m.member_id, m.generation, &offsets).await?), vec![None; 2]);

    // Reads are served by any broker.
    let mut c = groups(&other).await?;
    let d = c.describe_group(pb::DescribeGroupRequest { group: "g-admin".into() }).await?.into_inner();
    assert!(d.error.is_none(), "{d:?}");
    assert_eq!((d.state.as_str(), d.coordinator_id, d.generation), ("Stable", coordinator, m.generation));
    assert_eq!(d.assignor, "cooperative-sticky");
    assert_eq!(d.members.len(), 1);
    assert_eq!(partitions_of(&d.members[0].assigned), m.assigned);
    assert!(d.offsets.iter().all(|o| o.offset == 5) && d.offsets.len() == 2, "{d:?}");
    let listed = c.list_groups(pb::ListGroupsRequest {}).await?.into_inner();
    let g = listed.groups.iter().find(|g| g.group == "g-admin").expect("listed");
    assert_eq!((g.state.as_str(), g.members, g.coordinator_id), ("Stable", 1, coordinator));

    // Changes need the coordinator and a group without members.
    let alter = |group: &str, offset: i64| pb::AlterOffsetsRequest {
        group: group.into(),
        offsets: vec![pb::OffsetCommit { topic: "orders".into(), partition: 0, offset, metadata: String::new() }],
    };
    let mut at = groups(&addr).await?;
    let r = at.alter_offsets(alter("g-admin", 0)).await?.into_inner();
    assert_eq!(r.partitions[0].error.as_ref().map(|e| e.code), Some(ErrorCode::NonEmptyGroup as i32));
    let status = at.delete_group(pb::DeleteGroupRequest { group: "g-admin".into() }).await.expect_err("has members");
    assert_eq!(strata_proto::error::detail_from_status(&status).code(), ErrorCode::NonEmptyGroup);

    m.send(Up::Leave(pb::LeaveGroup {})).await?;
    assert!(m.next().await.is_err(), "the stream ends after LeaveGroup");
    eventually("the group to be empty", LONG, || {
        let mut c = c.clone();
        async move {
            let d = c.describe_group(pb::DescribeGroupRequest { group: "g-admin".into() }).await?.into_inner();
            anyhow::ensure!(d.state == "Empty" && d.members.is_empty(), "{d:?}");
            Ok(())
        }
    })
    .await?;
    let r = groups(&other).await?.alter_offsets(alter("g-admin", 0)).await?.into_inner();
    assert_eq!(r.partitions[0].error.as_ref().map(|e| e.code), Some(ErrorCode::NotCoordinator as i32));
    let r = at.alter_offsets(alter("g-admin", 0)).await?.into_inner();
    assert!(r.partitions[0].error.is_none(), "{r:?}");
    let fetched = c.fetch_offsets(pb::FetchOffsetsRequest { group: "g-admin".into(), partitions: vec![] }).await?;
    let got: Vec<i64> = fetched.into_inner().offsets.iter().map(|o| o.offset).collect();
    assert_eq!(got, vec![0, 5]);

    at.delete_group(pb::DeleteGroupRequest { group: "g-admin".into() }).await?;
    let d = c.describe_group(pb::DescribeGroupRequest { group: "g-admin".into() }).await?.into_inner();
    assert_eq!(d.error.map(|e| e.code), Some(ErrorCode::GroupIdNotFound as i32));
    let listed = c.list_groups(pb::ListGroupsRequest {}).await?.into_inner();
    assert!(listed.groups.iter().all(|g| g.group != "g-admin"), "{listed:?}");

    // A consumer outside any group commits with no member id.
    let (_, solo) = find_coordinator(&other, "g-solo").await?;
    let errors = commit(&solo, "g-solo", "", -1, &[(("orders".into(), 1), 9)]).await?;
    assert_eq!(codes(&errors), vec![None]);
    let d = c.describe_group(pb::DescribeGroupRequest { group: "g-solo".into() }).await?.into_inner();
    assert_eq!((d.state.as_str(), d.offsets.len()), ("Empty", 1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_draining_coordinator_sends_its_members_to_the_next_one() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3).await?;
    create_topic(&cluster, "orders", 3).await?;
    let (draining, addr) = find_coordinator(&cluster.bootstrap()[0], "g-drain").await?;
    let mut m = Member::join(&addr, join_request("g-drain", "orders")).await?;
    m.assignment().await?;

    assert_eq!(cluster.terminate(draining), Some(0), "a clean exit");
    let (next, next_addr) = match m.next().await? {
        Down::Error(e) => {
            assert_eq!(ErrorCode::try_from(e.code)?, ErrorCode::NotCoordinator);
            (e.leader_id, e.leader_addr)
        }
        other => anyhow::bail!("expected NOT_COORDINATOR, got {other:?}"),
    };
    assert!(next >= 0 && next != draining && !next_addr.is_empty(), "named {next} at {next_addr:?}");
    let request = m.rejoin_request("g-drain", "orders");
    let mut again = eventually("a rejoin at the named coordinator", LONG, || {
        let (next_addr, request) = (next_addr.clone(), request.clone());
        async move { Member::join(&next_addr, request).await }
    })
    .await?;
    assert_eq!(again.member_id, m.member_id);
    let (assigned, _) = again.assignment().await?;
    assert_eq!(assigned, m.assigned);
    Ok(())
}
