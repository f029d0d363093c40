//! Consumer groups, the client side: [`GroupConsumer`] subscribes to topics
//! as a member of a group, is given partitions by the group's coordinator
//! broker, and commits its positions there.
//!
//! Three parts, each owning its state:
//! - the *membership task* (`membership.rs`) holds the `Join` stream to the
//!   coordinator (finding it, heartbeating, rejoining with the same member
//!   id after a break) and forwards each `Assignment` over a channel;
//! - the *committer* (`committer.rs`) sends commits one at a time, in order,
//!   as the member's current id and generation;
//! - [`GroupConsumer::poll`], in the application's task, applies
//!   assignments to the wrapped manual-assignment [`Consumer`]: a revoked
//!   partition is stopped, its position committed, its buffered records
//!   dropped, and only then confirmed with `RevokeDone`; a new partition
//!   starts from its committed offset (or the offset-reset policy).
//!
//! Delivery is at least once: a position becomes committable once `poll`
//! has returned the records before it, and is committed by the next `poll`
//! (automatic commits), on revocation, or on `close`.

mod assignment;
mod committer;
mod membership;
pub(crate) mod rpc;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

pub use assignment::format_partitions;
use assignment::{diff_assignment, offsets_to_commit};
use committer::{CommitOutcome, CommitRequest, Committer, Reply};
use membership::{Command, Event, MemberTask, MemberView};

use crate::consumer::{Consumer, ConsumerConfig, ConsumerRecord, TopicPartition};
use crate::error::ClientError;
use crate::metadata::MetadataClient;

/// How partitions are spread over a group's members. The coordinator runs
/// it; every member of a group must name the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Assignor {
    /// Per topic, consecutive ranges of partitions to members in order.
    Range,
    /// All partitions dealt to members in turn.
    RoundRobin,
    /// Balanced, moving as few partitions as possible on a rebalance.
    #[default]
    CooperativeSticky,
}

impl Assignor {
    pub fn as_str(&self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
            Assignor::CooperativeSticky => "cooperative-sticky",
        }
    }
}

impl fmt::Display for Assignor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Assignor {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Assignor, ClientError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "range" => Ok(Assignor::Range),
            "roundrobin" | "round-robin" => Ok(Assignor::RoundRobin),
            "cooperative-sticky" => Ok(Assignor::CooperativeSticky),
            other => Err(ClientError::InvalidArgument(format!(
                "unknown assignor {other:?} (expected range, roundrobin or cooperative-sticky)"
            ))),
        }
    }
}

/// A member's settings. Defaults are Kafka's, except that the broker's
/// `Joined` answer decides the heartbeat interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    pub group_id: String,
    /// Static membership (Kafka `group.instance.id`): a member that comes
    /// back with the same id within the session timeout keeps its
    /// partitions without a rebalance; `close` does not leave the group.
    pub instance_id: Option<String>,
    pub client_id: String,
    pub assignor: Assignor,
    /// A static member that is silent this long is removed (a dynamic
    /// member leaves as soon as its stream breaks).
    pub session_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// How long the member may take to give revoked partitions up before
    /// the coordinator removes it.
    pub rebalance_timeout: Duration,
    pub enable_auto_commit: bool,
    pub auto_commit_interval: Duration,
}

impl GroupConfig {
    pub fn new(group_id: impl Into<String>) -> GroupConfig {
        GroupConfig {
            group_id: group_id.into(),
            instance_id: None,
            client_id: "strata".to_string(),
            assignor: Assignor::CooperativeSticky,
            session_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(3),
            rebalance_timeout: Duration::from_secs(60),
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
        }
    }
}

/// Told of partitions coming and going, from inside
/// [`GroupConsumer::poll`] (and `close`), in the application's task.
pub trait RebalanceListener: Send {
    /// Before the positions of `partitions` are committed (with automatic
    /// commits on) and they are given up.
    fn on_partitions_revoked(&mut self, partitions: &[TopicPartition]) {
        let _ = partitions;
    }
    /// Newly added partitions only (a rebalance keeps the others running).
    fn on_partitions_assigned(&mut self, partitions: &[TopicPartition]) {
        let _ = partitions;
    }
    /// Taken without a chance to commit: the member was fenced, evicted,
    /// or cut off from its coordinator for a session timeout. Their
    /// records since the last commit will be consumed again elsewhere.
    fn on_partitions_lost(&mut self, partitions: &[TopicPartition]) {
        let _ = partitions;
    }
}

/// Aborts the background tasks when the consumer goes (a drop without
/// `close` breaks the stream, as a crash would).
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// The channels to the background tasks, once subscribed.
struct Link {
    commands: mpsc::UnboundedSender<Command>,
    events: mpsc::UnboundedReceiver<Event>,
    view: watch::Receiver<MemberView>,
    commits: mpsc::UnboundedSender<CommitRequest>,
    outcomes: mpsc::UnboundedReceiver<CommitOutcome>,
    _tasks: Tasks,
}

/// Pause before looking up committed offsets again after a failure.
const OFFSET_RETRY: Duration = Duration::from_millis(500);

/// A member of a consumer group. Owned by one task, like [`Consumer`]:
/// every method that changes state takes `&mut self`.
///
/// `poll` is not meant to be cancelled midway (say, by `select!` against a
/// signal): a revocation it was handling would be finished on the next
/// `poll`, but its confirmation could be late. Use short poll timeouts and
/// check for shutdown between polls.
pub struct GroupConsumer {
    metadata: MetadataClient,
    consumer: Consumer,
    config: GroupConfig,
    request_timeout: Duration,
    retry_backoff: Duration,
    /// In a mutex only so that the consumer is `Sync` (listeners need only
    /// be `Send`); `&mut self` reaches it without locking.
    listener: Mutex<Option<Box<dyn RebalanceListener>>>,
    topics: Vec<String>,
    link: Option<Link>,
    /// Owned as of the last assignment applied, including `awaiting`.
    owned: BTreeSet<TopicPartition>,
    /// Owned, but the committed offset is not known yet: not handed to the
    /// consumer until it is.
    awaiting: BTreeSet<TopicPartition>,
    awaiting_retry: Instant,
    generation: Option<i32>,
    /// Once set, every `poll` returns it.
    fatal: Option<ClientError>,
    next_auto_commit: Instant,
    auto_commit_in_flight: bool,
    /// The last position sent in a commit per partition, so automatic
    /// commits send only what moved.
    last_sent: HashMap<TopicPartition, i64>,
}

impl fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupConsumer")
            .field("group", &self.config.group_id)
            .field("topics", &self.topics)
            .field("generation", &self.generation)
            .field("owned", &self.owned)
            .finish_non_exhaustive()
    }
}

impl GroupConsumer {
    /// Nothing happens until [`subscribe`](Self::subscribe). The consumer
    /// config's `auto_offset_reset` applies to partitions the group has no
    /// committed offset for.
    pub fn new(metadata: MetadataClient, consumer: ConsumerConfig, group: GroupConfig) -> GroupConsumer {
        let request_timeout = consumer.request_timeout;
        let retry_backoff = consumer.retry_backoff;
        let now = Instant::now();
        GroupConsumer {
            consumer: Consumer::new(metadata.clone(), consumer),
            metadata,
            next_auto_commit: now + group.auto_commit_interval,
            config: group,
            request_timeout,
            retry_backoff,
            listener: Mutex::new(None),
            topics: Vec::new(),
            link: None,
            owned: BTreeSet::new(),
            awaiting: BTreeSet::new(),
            awaiting_retry: now,
            generation: None,
            fatal: None,
            auto_commit_in_flight: false,
            last_sent: HashMap::new(),
        }
    }

    pub fn set_listener(&mut self, listener: Box<dyn RebalanceListener>) {
        *self.listener.get_mut().unwrap_or_else(|e| e.into_inner()) = Some(listener);
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// The first call joins the group and waits (up to the consumer's
    /// request timeout) for the coordinator to accept the member; later
    /// calls replace the subscription, and the coordinator rebalances.
    pub async fn subscribe(&mut self, topics: &[&str]) -> Result<(), ClientError> {
        let mut wanted: Vec<String> = topics.iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
        wanted.sort();
        wanted.dedup();
        if wanted.is_empty() {
            return Err(ClientError::InvalidArgument("subscribe to at least one topic".into()));
        }
        if let Some(fatal) = &self.fatal {
            return Err(fatal.clone());
        }
        if let Some(link) = &self.link {
            self.topics = wanted.clone();
            return link
                .commands
                .send(Command::Subscribe(wanted))
                .map_err(|_| ClientError::Unavailable("the group membership task has stopped".into()));
        }
        self.topics = wanted;
        self.link = Some(self.start());
        let deadline = Instant::now() + self.request_timeout;
        let Some(link) = self.link.as_mut() else { unreachable!("just set") };
        let outcome = loop {
            let view = link.view.borrow_and_update().clone();
            if let Some(fatal) = view.fatal {
                break Err(fatal);
            }
            if view.member_id.is_some() {
                break Ok(());
            }
            match tokio::time::timeout_at(deadline, link.view.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break Err(ClientError::Unavailable("the group membership task has stopped".into())),
                Err(_) => {
                    let why = view.last_error.map(|e| format!(": {e}")).unwrap_or_default();
                    break Err(ClientError::CoordinatorNotAvailable(format!(
                        "could not join group {} within {:?}{why}",
                        self.config.group_id, self.request_timeout
                    )));
                }
            }
        };
        if outcome.is_err() {
            // Nothing is left running; a later call starts over.
            self.link = None;
            self.topics.clear();
        }
        outcome
    }

    fn start(&self) -> Link {
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (view_tx, view_rx) = watch::channel(MemberView::default());
        let (commits_tx, commits_rx) = mpsc::unbounded_channel();
        let (outcomes_tx, outcomes_rx) = mpsc::unbounded_channel();
        let member = MemberTask {
            metadata: self.metadata.clone(),
            config: self.config.clone(),
            topics: self.topics.clone(),
            request_timeout: self.request_timeout,
            backoff_min: self.retry_backoff.max(Duration::from_millis(10)),
            view: view_tx,
            events: events_tx,
            commands: commands_rx,
        };
        let committer = Committer {
            metadata: self.metadata.clone(),
            group: self.config.group_id.clone(),
            view: view_rx.clone(),
            commands: commands_tx.clone(),
            requests: commits_rx,
            outcomes: outcomes_tx,
            backoff: self.retry_backoff.max(Duration::from_millis(10)),
        };
        let tasks = Tasks(vec![tokio::spawn(member.run()), tokio::spawn(committer.run())]);
        Link {
            commands: commands_tx,
            events: events_rx,
            view: view_rx,
            commits: commits_tx,
            outcomes: outcomes_rx,
            _tasks: tasks,
        }
    }

    /// The subscribed topics, sorted.
    pub fn subscription(&self) -> &[String] {
        &self.topics
    }

    /// The partitions owned as of the last assignment `poll` applied.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.owned.iter().cloned().collect()
    }

    /// The generation of the last assignment `poll` applied.
    pub fn generation(&self) -> Option<i32> {
        self.generation
    }

    /// The id the coordinator gave this member, once it has joined.
    pub fn member_id(&self) -> Option<String> {
        self.link.as_ref().and_then(|l| l.view.borrow().member_id.clone())
    }

    /// Moves an owned partition's position: the next `poll` returns its
    /// records from `offset`, and the next commit commits `offset`.
    pub fn seek(&mut self, tp: impl Into<TopicPartition>, offset: i64) -> Result<(), ClientError> {
        let tp = tp.into();
        if !self.owned.contains(&tp) {
            return Err(ClientError::InvalidArgument(format!("{tp} is not assigned to this member")));
        }
        if self.awaiting.remove(&tp) {
            self.add_to_consumer(std::slice::from_ref(&tp));
        }
        self.consumer.seek(tp, offset)
    }

    fn link(&self) -> Result<&Link, ClientError> {
        if let Some(fatal) = &self.fatal {
            return Err(fatal.clone());
        }
        self.link.as_ref().ok_or_else(|| ClientError::InvalidArgument("not subscribed; call subscribe first".into()))
    }

    fn with_listener(&mut self, call: impl FnOnce(&mut dyn RebalanceListener)) {
        if let Some(listener) = self.listener.get_mut().unwrap_or_else(|e| e.into_inner()).as_mut() {
            call(listener.as_mut());
        }
    }

    /// Records of the owned partitions: whatever is buffered at once,
    /// otherwise waits up to `timeout`. Returns an empty `Vec` on timeout,
    /// also while nothing is assigned yet. Rebalances are applied here,
    /// listener callbacks included; with automatic commits on, the
    /// positions of the records returned so far are committed here once
    /// `auto_commit_interval` has passed.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ClientError> {
        self.link()?;
        let deadline = Instant::now() + timeout;
        self.absorb_outcomes();
        self.apply_ready_events().await;
        if self.config.enable_auto_commit && Instant::now() >= self.next_auto_commit {
            self.auto_commit();
        }
        loop {
            if let Some(fatal) = &self.fatal {
                return Err(fatal.clone());
            }
            if !self.awaiting.is_empty() && Instant::now() >= self.awaiting_retry {
                self.position_new_partitions().await;
            }
            let now = Instant::now();
            let wake = if self.awaiting.is_empty() { deadline } else { deadline.min(self.awaiting_retry.max(now)) };
            let Some(link) = self.link.as_mut() else { return Ok(Vec::new()) };
            enum Next {
                Records(Result<Vec<ConsumerRecord>, ClientError>),
                Event(Option<Event>),
                Timer,
            }
            let next = if self.consumer.assignment().is_empty() {
                tokio::select! {
                    event = link.events.recv() => Next::Event(event),
                    () = tokio::time::sleep_until(wake) => Next::Timer,
                }
            } else {
                tokio::select! {
                    event = link.events.recv() => Next::Event(event),
                    records = self.consumer.poll(wake.saturating_duration_since(now)) => Next::Records(records),
                }
            };
            match next {
                Next::Records(Ok(records)) if !records.is_empty() => return Ok(records),
                Next::Records(Err(e)) => return Err(e),
                Next::Records(Ok(_)) | Next::Timer => {}
                Next::Event(Some(event)) => {
                    self.apply_event(event).await;
                    self.apply_ready_events().await;
                }
                Next::Event(None) => {
                    self.fatal = Some(ClientError::Unavailable("the group membership task has stopped".into()));
                }
            }
            if self.fatal.is_none() && Instant::now() >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    /// Applies the events already waiting, without blocking.
    async fn apply_ready_events(&mut self) {
        loop {
            let Some(link) = self.link.as_mut() else { return };
            match link.events.try_recv() {
                Ok(event) => self.apply_event(event).await,
                Err(mpsc::error::TryRecvError::Empty) => return,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    if self.fatal.is_none() {
                        self.fatal = Some(ClientError::Unavailable("the group membership task has stopped".into()));
                    }
                    return;
                }
            }
        }
    }

    async fn apply_event(&mut self, event: Event) {
        match event {
            Event::Assignment { generation, assigned, revoked } => {
                let diff = diff_assignment(&self.owned, &assigned, &revoked);
                if !diff.revoke.is_empty() {
                    info!(group = %self.config.group_id, generation, partitions = %format_partitions(&diff.revoke), "revoked");
                    self.with_listener(|l| l.on_partitions_revoked(&diff.revoke));
                    if self.config.enable_auto_commit {
                        let positions = self.positions_of(&diff.revoke);
                        // The coordinator waits up to the rebalance timeout
                        // for the confirmation; keep well inside it.
                        let bound = self.request_timeout.min(self.config.rebalance_timeout / 2);
                        if let Err(error) = self.commit_now(positions, bound).await {
                            warn!(group = %self.config.group_id, %error, "could not commit revoked partitions");
                        }
                    }
                    self.remove(&diff.revoke);
                }
                if !revoked.is_empty()
                    && let Some(link) = &self.link
                {
                    let partitions = revoked.iter().cloned().collect();
                    let _ = link.commands.send(Command::RevokeDone { generation, partitions });
                }
                if !diff.lost.is_empty() {
                    warn!(group = %self.config.group_id, partitions = %format_partitions(&diff.lost), "lost");
                    self.with_listener(|l| l.on_partitions_lost(&diff.lost));
                    self.remove(&diff.lost);
                }
                if !diff.added.is_empty() {
                    info!(group = %self.config.group_id, generation, partitions = %format_partitions(&diff.added), "assigned");
                    self.owned.extend(diff.added.iter().cloned());
                    self.awaiting.extend(diff.added.iter().cloned());
                    self.awaiting_retry = Instant::now();
                    self.with_listener(|l| l.on_partitions_assigned(&diff.added));
                }
                self.generation = Some(generation);
            }
            Event::Lost(reason) => {
                self.lose_all(&reason);
                self.generation = None;
            }
            Event::Fatal(error) => {
                self.lose_all(&error);
                self.generation = None;
                self.fatal = Some(error);
            }
        }
    }

    fn lose_all(&mut self, reason: &ClientError) {
        if self.owned.is_empty() {
            return;
        }
        let lost: Vec<TopicPartition> = self.owned.iter().cloned().collect();
        warn!(group = %self.config.group_id, partitions = %format_partitions(&lost), %reason, "lost");
        self.with_listener(|l| l.on_partitions_lost(&lost));
        self.remove(&lost);
    }

    /// Stops consuming `partitions`, dropping their buffered records.
    fn remove(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            self.owned.remove(tp);
            self.awaiting.remove(tp);
            self.last_sent.remove(tp);
        }
        let keep: Vec<TopicPartition> =
            self.consumer.assignment().into_iter().filter(|tp| !partitions.contains(tp)).collect();
        self.consumer.assign(keep);
    }

    fn add_to_consumer(&mut self, partitions: &[TopicPartition]) {
        let mut all = self.consumer.assignment();
        all.extend(partitions.iter().cloned());
        self.consumer.assign(all);
    }

    /// Looks up the committed offsets of new partitions and hands them to
    /// the consumer; those without a commit start per the reset policy. On
    /// failure they wait for the next try.
    async fn position_new_partitions(&mut self) {
        let tps: Vec<TopicPartition> = self.awaiting.iter().cloned().collect();
        let prefer = self.link.as_ref().and_then(|l| l.view.borrow().coordinator.clone()).map(|c| c.addr);
        let answer =
            rpc::fetch_offsets(&self.metadata, prefer.as_deref(), &self.config.group_id, &tps, self.request_timeout)
                .await;
        match answer {
            Ok(offsets) => {
                let committed = rpc::committed_by_partition(&tps, &offsets);
                // Revoked or lost while the lookup travelled: skip those.
                let still: Vec<TopicPartition> = tps.into_iter().filter(|tp| self.awaiting.remove(tp)).collect();
                self.add_to_consumer(&still);
                for tp in still {
                    if let Some(Some(offset)) = committed.get(&tp) {
                        debug!(%tp, offset, "starting from the committed offset");
                        let _ = self.consumer.seek(tp.clone(), *offset);
                        self.last_sent.insert(tp, *offset);
                    }
                }
            }
            Err(error) => {
                warn!(group = %self.config.group_id, %error, "cannot read committed offsets; will retry");
                self.awaiting_retry = Instant::now() + OFFSET_RETRY;
            }
        }
    }

    /// Positions (records returned so far) of those of `partitions` the
    /// consumer has one for.
    fn positions_of(&self, partitions: &[TopicPartition]) -> Vec<(TopicPartition, i64)> {
        let positions = self.consumer.positions();
        partitions.iter().filter_map(|tp| positions.get(tp).map(|p| (tp.clone(), *p))).collect()
    }

    /// Takes in the outcomes of asynchronous commits.
    fn absorb_outcomes(&mut self) {
        let Some(link) = self.link.as_mut() else { return };
        let mut outcomes = Vec::new();
        while let Ok(outcome) = link.outcomes.try_recv() {
            outcomes.push(outcome);
        }
        for outcome in outcomes {
            if outcome.auto {
                self.auto_commit_in_flight = false;
            }
            if let Err(error) = outcome.result {
                warn!(group = %self.config.group_id, %error, "asynchronous commit failed");
                for (tp, offset) in &outcome.offsets {
                    if self.last_sent.get(tp) == Some(offset) {
                        self.last_sent.remove(tp);
                    }
                }
                if matches!(error, ClientError::FencedInstanceId(_)) && self.fatal.is_none() {
                    self.fatal = Some(error);
                }
            }
        }
    }

    /// Starts an automatic commit of the positions that moved, unless one
    /// is still in flight.
    fn auto_commit(&mut self) {
        self.next_auto_commit = Instant::now() + self.config.auto_commit_interval;
        if self.auto_commit_in_flight {
            return;
        }
        let offsets = offsets_to_commit(&self.consumer.positions(), &self.last_sent);
        if offsets.is_empty() {
            return;
        }
        if self.send_async(offsets, true) {
            self.auto_commit_in_flight = true;
        }
    }

    fn send_async(&mut self, offsets: Vec<(TopicPartition, i64)>, auto: bool) -> bool {
        let Some(link) = &self.link else { return false };
        for (tp, offset) in &offsets {
            self.last_sent.insert(tp.clone(), *offset);
        }
        let request =
            CommitRequest { offsets, deadline: Instant::now() + self.request_timeout, reply: Reply::Async { auto } };
        link.commits.send(request).is_ok()
    }

    /// Commits `offsets` through the committer and waits for the result.
    async fn commit_now(&mut self, offsets: Vec<(TopicPartition, i64)>, bound: Duration) -> Result<(), ClientError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let link = self.link()?;
        let (reply, result) = oneshot::channel();
        let request =
            CommitRequest { offsets: offsets.clone(), deadline: Instant::now() + bound, reply: Reply::Sync(reply) };
        link.commits.send(request).map_err(|_| ClientError::Unavailable("the committer has stopped".into()))?;
        let result = result.await.unwrap_or_else(|_| Err(ClientError::Unavailable("the committer has stopped".into())));
        if result.is_ok() {
            for (tp, offset) in offsets {
                self.last_sent.insert(tp, offset);
            }
        }
        result
    }

    /// Commits the positions of every owned partition (the records `poll`
    /// has returned so far) and waits for the coordinator. Fails with
    /// `IllegalGeneration` / `UnknownMemberId` when the member has been
    /// replaced in the group (its partitions are then reported lost on the
    /// next `poll`, and it rejoins).
    pub async fn commit_sync(&mut self) -> Result<(), ClientError> {
        self.link()?;
        let owned: Vec<TopicPartition> = self.owned.iter().cloned().collect();
        let positions = self.positions_of(&owned);
        self.commit_now(positions, self.request_timeout).await
    }

    /// Commits these offsets (each the next offset to consume) and waits.
    pub async fn commit_offsets_sync(&mut self, offsets: &[(TopicPartition, i64)]) -> Result<(), ClientError> {
        self.link()?;
        if let Some((tp, offset)) = offsets.iter().find(|(_, o)| *o < 0) {
            return Err(ClientError::InvalidArgument(format!("cannot commit negative offset {offset} for {tp}")));
        }
        self.commit_now(offsets.to_vec(), self.request_timeout).await
    }

    /// Starts a commit of the positions of every owned partition and
    /// returns at once. A failure is logged; it ends the next `poll` only
    /// if the member cannot go on.
    pub fn commit_async(&mut self) {
        if self.link().is_err() {
            return;
        }
        let owned: Vec<TopicPartition> = self.owned.iter().cloned().collect();
        let positions = self.positions_of(&owned);
        if !positions.is_empty() {
            self.send_async(positions, false);
        }
    }

    /// The group's committed offsets for `partitions` (`None`: nothing
    /// committed), read fresh.
    pub async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, Option<i64>>, ClientError> {
        let prefer = self.link.as_ref().and_then(|l| l.view.borrow().coordinator.clone()).map(|c| c.addr);
        let offsets = rpc::fetch_offsets(
            &self.metadata,
            prefer.as_deref(),
            &self.config.group_id,
            partitions,
            self.request_timeout,
        )
        .await?;
        Ok(rpc::committed_by_partition(partitions, &offsets)
            .into_iter()
            .filter(|(tp, _)| partitions.contains(tp))
            .collect())
    }

    /// Leaves the group: the listener hears the owned partitions revoked,
    /// their positions are committed (with automatic commits on), and the
    /// member leaves (a static member only ends its stream, keeping its
    /// place for the session timeout). Returns the commit's error, if any,
    /// after leaving all the same.
    pub async fn close(mut self) -> Result<(), ClientError> {
        if self.link.is_none() || self.fatal.is_some() {
            return Ok(());
        }
        self.absorb_outcomes();
        let owned: Vec<TopicPartition> = self.owned.iter().cloned().collect();
        if !owned.is_empty() {
            self.with_listener(|l| l.on_partitions_revoked(&owned));
        }
        let mut result = Ok(());
        if self.config.enable_auto_commit {
            let positions = self.positions_of(&owned);
            result = self.commit_now(positions, self.request_timeout).await;
            if let Err(error) = &result {
                warn!(group = %self.config.group_id, %error, "could not commit on close");
            }
        }
        if let Some(link) = self.link.take() {
            let (done, left) = oneshot::channel();
            if link.commands.send(Command::Leave(done)).is_ok() {
                let _ = tokio::time::timeout(self.request_timeout, left).await;
            }
        }
        result
    }
}
