//! The application side of a member, driven through its channels: events
//! stand in for what the membership task forwards, and a stub answers
//! commits. No coordinator is involved (none is faked); the wire side is
//! covered by the end-to-end tests against real brokers.

use std::sync::{Arc, Mutex};

use super::*;
use crate::consumer::OffsetReset;
use crate::metadata::MetadataConfig;

type Calls = Arc<Mutex<Vec<(&'static str, Vec<TopicPartition>)>>>;
type Commits = Arc<Mutex<Vec<Vec<(TopicPartition, i64)>>>>;

#[derive(Default)]
struct Recorder(Calls);

impl RebalanceListener for Recorder {
    fn on_partitions_revoked(&mut self, partitions: &[TopicPartition]) {
        self.0.lock().unwrap().push(("revoked", partitions.to_vec()));
    }
    fn on_partitions_assigned(&mut self, partitions: &[TopicPartition]) {
        self.0.lock().unwrap().push(("assigned", partitions.to_vec()));
    }
    fn on_partitions_lost(&mut self, partitions: &[TopicPartition]) {
        self.0.lock().unwrap().push(("lost", partitions.to_vec()));
    }
}

/// The other ends of a member's channels.
struct Ends {
    events: mpsc::UnboundedSender<Event>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Commits the stub answered, in order.
    commits: Commits,
    _view: watch::Sender<MemberView>,
    calls: Calls,
}

fn tp(topic: &str, partition: u32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

fn set(items: &[(&str, u32)]) -> BTreeSet<TopicPartition> {
    items.iter().map(|(t, p)| tp(t, *p)).collect()
}

/// A member whose brokers are unreachable (offset lookups fail fast), wired
/// to channels the test holds; commits are answered `Ok`.
fn member(config: GroupConfig) -> (GroupConsumer, Ends) {
    let metadata = MetadataClient::detached(&["127.0.0.1:1"], MetadataConfig::default()).expect("address");
    let consumer = ConsumerConfig {
        request_timeout: Duration::from_millis(50),
        auto_offset_reset: OffsetReset::Earliest,
        ..ConsumerConfig::default()
    };
    let mut group = GroupConsumer::new(metadata, consumer, config);
    let calls = Calls::default();
    group.set_listener(Box::new(Recorder(calls.clone())));
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (commands_tx, commands_rx) = mpsc::unbounded_channel();
    let (view_tx, view_rx) = watch::channel(MemberView { member_id: Some("m-1".into()), ..MemberView::default() });
    let (commits_tx, mut commits_rx) = mpsc::unbounded_channel::<CommitRequest>();
    let (_outcomes_tx, outcomes_rx) = mpsc::unbounded_channel();
    let commits = Commits::default();
    let log = commits.clone();
    let stub = tokio::spawn(async move {
        while let Some(request) = commits_rx.recv().await {
            log.lock().unwrap().push(request.offsets.clone());
            if let Reply::Sync(reply) = request.reply {
                let _ = reply.send(Ok(()));
            }
        }
    });
    group.topics = vec!["a".into()];
    group.link = Some(Link {
        commands: commands_tx,
        events: events_rx,
        view: view_rx,
        commits: commits_tx,
        outcomes: outcomes_rx,
        _tasks: Tasks(vec![stub]),
    });
    (group, Ends { events: events_tx, commands: commands_rx, commits, _view: view_tx, calls })
}

fn assignment(generation: i32, assigned: &[(&str, u32)], revoked: &[(&str, u32)]) -> Event {
    Event::Assignment { generation, assigned: set(assigned), revoked: set(revoked) }
}

fn calls(ends: &Ends) -> Vec<(&'static str, Vec<TopicPartition>)> {
    std::mem::take(&mut *ends.calls.lock().unwrap())
}

const TICK: Duration = Duration::from_millis(20);

#[test]
fn assignors_parse_and_print() {
    for a in [Assignor::Range, Assignor::RoundRobin, Assignor::CooperativeSticky] {
        assert_eq!(a.as_str().parse::<Assignor>().ok(), Some(a));
        assert_eq!(a.to_string(), a.as_str());
    }
    assert_eq!("Round-Robin".parse::<Assignor>().ok(), Some(Assignor::RoundRobin));
    assert!(matches!("sticky".parse::<Assignor>(), Err(ClientError::InvalidArgument(_))));
    assert_eq!(Assignor::default(), Assignor::CooperativeSticky);
}

#[test]
fn group_config_defaults_are_the_documented_ones() {
    let c = GroupConfig::new("g");
    assert_eq!(c.group_id, "g");
    assert_eq!(c.client_id, "strata");
    assert_eq!(c.instance_id, None);
    assert_eq!(c.assignor, Assignor::CooperativeSticky);
    assert_eq!(c.session_timeout, Duration::from_secs(10));
    assert_eq!(c.heartbeat_interval, Duration::from_secs(3));
    assert_eq!(c.rebalance_timeout, Duration::from_secs(60));
    assert!(c.enable_auto_commit);
    assert_eq!(c.auto_commit_interval, Duration::from_secs(5));
}

#[test]
fn the_consumer_and_its_futures_can_move_between_tasks() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: T) {}
    fn futures(mut c: GroupConsumer) {
        send(c.poll(TICK));
        send(c.committed(&[]));
        send(c.commit_sync());
        send(c.subscribe(&["a"]));
        send(c.close());
    }
    send_sync::<GroupConsumer>();
    let _ = futures;
}

#[tokio::test]
async fn poll_before_subscribe_is_a_usage_error() {
    let metadata = MetadataClient::detached(&["127.0.0.1:1"], MetadataConfig::default()).expect("address");
    let mut c = GroupConsumer::new(metadata, ConsumerConfig::default(), GroupConfig::new("g"));
    assert!(matches!(c.poll(TICK).await, Err(ClientError::InvalidArgument(_))));
    assert!(matches!(c.commit_sync().await, Err(ClientError::InvalidArgument(_))));
    assert!(matches!(c.subscribe(&[]).await, Err(ClientError::InvalidArgument(_))));
    assert_eq!((c.member_id(), c.generation(), c.assignment()), (None, None, Vec::new()));
    c.close().await.expect("closing an idle consumer is fine");
}

#[tokio::test]
async fn subscribe_fails_clearly_when_no_coordinator_answers() {
    let metadata = MetadataClient::detached(&["127.0.0.1:1"], MetadataConfig::default()).expect("address");
    let consumer = ConsumerConfig { request_timeout: Duration::from_millis(300), ..ConsumerConfig::default() };
    let mut c = GroupConsumer::new(metadata, consumer, GroupConfig::new("g"));
    let error = c.subscribe(&["a"]).await.expect_err("nothing listens there");
    assert!(matches!(error, ClientError::CoordinatorNotAvailable(_)), "{error:?}");
    assert!(error.to_string().contains("could not join group g"), "{error}");
    // Nothing is left running: polling is still a usage error.
    assert!(matches!(c.poll(TICK).await, Err(ClientError::InvalidArgument(_))));
}

#[tokio::test]
async fn nothing_assigned_yet_polls_empty() {
    let (mut c, _ends) = member(GroupConfig::new("g"));
    assert_eq!(c.poll(TICK).await.expect("empty"), Vec::new());
    assert_eq!(c.member_id().as_deref(), Some("m-1"));
}

#[tokio::test]
async fn assignments_add_only_new_partitions_and_revocations_are_confirmed() {
    let (mut c, mut ends) = member(GroupConfig { enable_auto_commit: false, ..GroupConfig::new("g") });
    ends.events.send(assignment(1, &[("a", 0), ("a", 1)], &[])).unwrap();
    c.poll(TICK).await.expect("poll");
    assert_eq!(c.assignment(), vec![tp("a", 0), tp("a", 1)]);
    assert_eq!(c.generation(), Some(1));
    assert_eq!(calls(&ends), vec![("assigned", vec![tp("a", 0), tp("a", 1)])]);

    // Cooperative: a-1 is revoked, a-0 kept without a callback.
    ends.events.send(assignment(2, &[("a", 0)], &[("a", 1)])).unwrap();
    c.poll(TICK).await.expect("poll");
    assert_eq!(c.assignment(), vec![tp("a", 0)]);
    assert_eq!(calls(&ends), vec![("revoked", vec![tp("a", 1)])]);
    match ends.commands.try_recv() {
        Ok(Command::RevokeDone { generation: 2, partitions }) => assert_eq!(partitions, vec![tp("a", 1)]),
        other => panic!("expected RevokeDone, got {other:?}"),
    }
    assert!(ends.commits.lock().unwrap().is_empty(), "automatic commits are off");

    // Then a new partition arrives: only it is reported.
    ends.events.send(assignment(3, &[("a", 0), ("a", 2)], &[])).unwrap();
    c.poll(TICK).await.expect("poll");
    assert_eq!(c.assignment(), vec![tp("a", 0), tp("a", 2)]);
    assert_eq!(calls(&ends), vec![("assigned", vec![tp("a", 2)])]);
    assert_eq!(c.generation(), Some(3));
}

#[tokio::test]
async fn revoked_positions_are_committed_before_the_confirmation() {
    let (mut c, mut ends) = member(GroupConfig::new("g"));
    ends.events.send(assignment(1, &[("a", 0), ("a", 1)], &[])).unwrap();
    c.poll(TICK).await.expect("poll");
    // Positions as if records before them had been returned.
    c.seek(tp("a", 0), 7).expect("owned");
    c.seek(tp("a", 1), 42).expect("owned");
    assert!(c.seek(tp("b", 0), 1).is_err(), "not owned");

    ends.events.send(assignment(2, &[("a", 0)], &[("a", 1)])).unwrap();
    c.poll(TICK).await.expect("poll");
    assert_eq!(ends.commits.lock().unwrap().clone(), vec![vec![(tp("a", 1), 42)]]);
    assert!(matches!(ends.commands.try_recv(), Ok(Command::RevokeDone { generation: 2, .. })));
    assert_eq!(calls(&ends)[1], ("revoked", vec![tp("a", 1)]));

    // commit_sync commits what is still owned.
    c.commit_sync().await.expect("committed");
    assert_eq!(ends.commits.lock().unwrap().last().cloned(), Some(vec![(tp("a", 0), 7)]));
}

#[tokio::test]
async fn automatic_commits_send_only_moved_positions() {
    let (mut c, ends) = member(GroupConfig { auto_commit_interval: Duration::from_millis(1), ..GroupConfig::new("g") });
    ends.events.send(assignment(1, &[("a", 0)], &[])).unwrap();
    c.poll(TICK).await.expect("poll");
    c.seek(tp("a", 0), 5).expect("owned");
    tokio::time::sleep(Duration::from_millis(5)).await;
    c.poll(TICK).await.expect("poll");
    tokio::time::sleep(Duration::from_millis(5)).await;
    c.poll(TICK).await.expect("poll");
    assert_eq!(
        ends.commits.lock().unwrap().clone(),
        vec![vec![(tp("a", 0), 5)]],
        "the unchanged position is not sent again"
    );
}

#[tokio::test]
async fn partitions_the_coordinator_dropped_are_lost_not_revoked() {
    let (mut c, ends) = member(GroupConfig::new("g"));
    ends.events.send(assignment(1, &[("a", 0), ("a", 1)], &[])).unwrap();
    c.poll(TICK).await.expect("poll");
    c.seek(tp("a", 1), 3).expect("owned");
    calls(&ends);
    // After a rejoin the coordinator lists a-1 nowhere: someone else may
    // have it already, so nothing is committed for it.
    ends.events.send(assignment(5, &[("a", 0)], &[])).unwrap();
    c.poll(TICK).await.expect("poll");
    assert_eq!(calls(&ends), vec![("lost", vec![tp("a", 1)])]);
    assert!(ends.commits.lock().unwrap().is_empty());
    assert_eq!(c.assignment(), vec![tp("a", 0)]);
}

#[tokio::test]
async fn a_lost_membership_drops_everything_and_a_fatal_one_ends_polling() {
    let (mut c, ends) = member(GroupConfig::new("g"));
    ends.events.send(assignment(1, &[("a", 0), ("a", 1)], &[])).unwrap();
    c.poll(TICK).await.expect("poll");
    calls(&ends);
    ends.events.send(Event::Lost(ClientError::UnknownMemberId("evicted".into()))).unwrap();
    c.poll(TICK).await.expect("lost is not an error");
    assert_eq!(calls(&ends), vec![("lost", vec![tp("a", 0), tp("a", 1)])]);
    assert_eq!((c.assignment(), c.generation()), (Vec::new(), None));

    ends.events.send(assignment(2, &[("a", 1)], &[])).unwrap();
    ends.events.send(Event::Fatal(ClientError::FencedInstanceId("host-a".into()))).unwrap();
    assert!(matches!(c.poll(TICK).await, Err(ClientError::FencedInstanceId(_))));
    assert_eq!(calls(&ends), vec![("assigned", vec![tp("a", 1)]), ("lost", vec![tp("a", 1)])]);
    // Every later call reports it too.
    assert!(matches!(c.poll(TICK).await, Err(ClientError::FencedInstanceId(_))));
    assert!(matches!(c.commit_sync().await, Err(ClientError::FencedInstanceId(_))));
    assert!(c.assignment().is_empty());
}

#[tokio::test]
async fn close_reports_revocation_commits_and_leaves() {
    let (mut c, mut ends) = member(GroupConfig::new("g"));
    ends.events.send(assignment(1, &[("a", 0)], &[])).unwrap();
    c.poll(TICK).await.expect("poll");
    c.seek(tp("a", 0), 9).expect("owned");
    calls(&ends);
    let leave = tokio::spawn(async move {
        match ends.commands.recv().await {
            Some(Command::Leave(done)) => {
                let _ = done.send(());
            }
            other => panic!("expected Leave, got {other:?}"),
        }
        ends
    });
    c.close().await.expect("closed");
    let ends = leave.await.expect("leave answered");
    assert_eq!(calls(&ends), vec![("revoked", vec![tp("a", 0)])]);
    assert_eq!(ends.commits.lock().unwrap().clone(), vec![vec![(tp("a", 0), 9)]]);
}
