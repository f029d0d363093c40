//! The background task that keeps a member in its group: it finds the
//! coordinator, holds the `Join` stream (which is the member's heartbeat),
//! and forwards every `Assignment` to the application's `poll` over a
//! channel. When the stream breaks or the coordinator moves it rejoins with
//! the same member id and the partitions it owns, so the application keeps
//! consuming meanwhile.
//!
//! The task never touches the consumer: `poll` applies assignments (stops,
//! commits, confirms revocations) in the application's task and sends the
//! `RevokeDone` back through [`Command::RevokeDone`].

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use rand::Rng;
use strata_proto::broker::{
    Assignment, CoordinatorMessage, Heartbeat, JoinGroup, LeaveGroup, MemberMessage, RevokeDone, UpdateSubscription,
    coordinator_message, member_message,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::codec::Streaming;
use tracing::{debug, info, warn};

use super::GroupConfig;
use super::assignment::{format_partitions, from_wire, to_wire};
use super::rpc::{Coordinator, find_coordinator};
use crate::consumer::TopicPartition;
use crate::error::ClientError;
use crate::metadata::MetadataClient;

/// Longest pause between attempts to reach a coordinator.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long `close` waits for the coordinator to end the stream after a
/// `LeaveGroup`.
const LEAVE_WAIT: Duration = Duration::from_secs(3);
/// Hints followed in a row before pausing (two brokers naming each other
/// must not make a busy loop).
const MAX_FOLLOWS: u32 = 3;

/// What the membership task publishes for the rest of the client: the
/// committer reads where and as whom to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberView {
    /// Given by the coordinator in `Joined`; kept across rejoins.
    pub member_id: Option<String>,
    /// Of the last `Assignment`; -1 before the first one.
    pub generation: i32,
    /// Set while the stream is up and `Joined` has been received.
    pub coordinator: Option<Coordinator>,
    /// The member cannot go on (fenced, or the group uses another assignor).
    pub fatal: Option<ClientError>,
    /// Why the last attempt to reach the coordinator failed.
    pub last_error: Option<ClientError>,
}

impl Default for MemberView {
    fn default() -> Self {
        MemberView { member_id: None, generation: -1, coordinator: None, fatal: None, last_error: None }
    }
}

/// From the membership task to `poll`, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    Assignment {
        generation: i32,
        assigned: BTreeSet<TopicPartition>,
        revoked: BTreeSet<TopicPartition>,
    },
    /// Everything owned was taken without a chance to commit.
    Lost(ClientError),
    /// The member is out for good; the error is what `poll` returns.
    Fatal(ClientError),
}

/// From the application's side to the membership task.
#[derive(Debug)]
pub(crate) enum Command {
    Subscribe(Vec<String>),
    RevokeDone {
        generation: i32,
        partitions: Vec<TopicPartition>,
    },
    /// A commit as (`member_id`, `generation`) was refused as a zombie's:
    /// unless the member has moved on since, it lost its partitions and
    /// rejoins.
    Fenced {
        member_id: String,
        generation: i32,
        error: ClientError,
    },
    /// Leave the group (dynamic members) and end; answers when done.
    Leave(oneshot::Sender<()>),
}

/// How the task goes on after an error that ended or refused its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reaction {
    /// Find the coordinator again after a pause.
    Retry,
    /// Go straight to the coordinator another broker named.
    Follow(String),
    /// The coordinator does not know the member: what it owned is lost, and
    /// it joins again as a new member.
    RejoinAsNew,
    /// The member missed a generation: what it owned is lost, and it joins
    /// again under the same id owning nothing.
    RejoinFresh,
    /// The member cannot go on.
    Fatal,
}

/// The reaction to `error`, received from the broker at `addr`.
pub(crate) fn reaction(error: &ClientError, addr: &str) -> Reaction {
    match error {
        ClientError::NotCoordinator { coordinator_addr: Some(next), .. } if next != addr => {
            Reaction::Follow(next.clone())
        }
        ClientError::UnknownMemberId(_) => Reaction::RejoinAsNew,
        ClientError::IllegalGeneration(_) => Reaction::RejoinFresh,
        e if e.is_retriable() => Reaction::Retry,
        _ => Reaction::Fatal,
    }
}

/// Why a session on one stream ended.
enum SessionEnd {
    /// Asked to leave, or the consumer is gone.
    Leave,
    Fatal(ClientError),
    Retry {
        /// Where to go next; `None`: find the coordinator.
        hint: Option<String>,
        pause: bool,
        error: ClientError,
        /// Whether the session got as far as `Joined`.
        joined: bool,
    },
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

pub(crate) struct MemberTask {
    pub metadata: MetadataClient,
    pub config: GroupConfig,
    pub topics: Vec<String>,
    /// Bound on opening the stream and on waiting for `Joined`.
    pub request_timeout: Duration,
    pub backoff_min: Duration,
    pub view: watch::Sender<MemberView>,
    pub events: mpsc::UnboundedSender<Event>,
    pub commands: mpsc::UnboundedReceiver<Command>,
}

/// The task's own state beside its configuration.
struct State {
    member_id: String,
    generation: i32,
    /// The coordinator's view of what this member owns: the last
    /// `assigned`, less what was revoked. Sent on a rejoin.
    owned: BTreeSet<TopicPartition>,
    heartbeat: Duration,
    session_timeout: Duration,
    /// Since when the member has had no working stream, if it had one.
    disconnected_since: Option<Instant>,
}

impl MemberTask {
    pub(crate) async fn run(mut self) {
        let mut state = State {
            member_id: String::new(),
            generation: -1,
            owned: BTreeSet::new(),
            heartbeat: self.config.heartbeat_interval,
            session_timeout: self.config.session_timeout,
            disconnected_since: None,
        };
        let mut hint: Option<String> = None;
        let mut backoff = self.backoff_min;
        let mut follows = 0u32;
        loop {
            let addr = match hint.take() {
                Some(addr) => addr,
                None => {
                    let metadata = self.metadata.clone();
                    let group = self.config.group_id.clone();
                    let timeout = self.request_timeout;
                    let lookup = async move { find_coordinator(&metadata, &group, timeout).await };
                    let Some(found) = self.offline(&mut state, lookup).await else { return };
                    match found {
                        Ok(c) => c.addr,
                        Err(e) if reaction(&e, "") == Reaction::Fatal => return self.fail(&mut state, e),
                        Err(e) => {
                            debug!(group = %self.config.group_id, error = %e, "no coordinator yet");
                            self.note_error(e);
                            if !self.pause(&mut state, &mut backoff).await {
                                return;
                            }
                            continue;
                        }
                    }
                }
            };
            match self.session(&mut state, &addr).await {
                SessionEnd::Leave => return,
                SessionEnd::Fatal(e) => return self.fail(&mut state, e),
                SessionEnd::Retry { hint: next, pause, error, joined } => {
                    if state.disconnected_since.is_none() {
                        state.disconnected_since = Some(Instant::now());
                    }
                    if joined {
                        backoff = self.backoff_min;
                        follows = 0;
                        info!(group = %self.config.group_id, coordinator = %addr, %error, "membership stream ended; rejoining");
                    } else {
                        debug!(group = %self.config.group_id, coordinator = %addr, %error, "join failed");
                    }
                    self.view.send_modify(|v| v.coordinator = None);
                    self.note_error(error);
                    follows = if pause { 0 } else { follows + 1 };
                    hint = next;
                    if (pause || follows > MAX_FOLLOWS) && !self.pause(&mut state, &mut backoff).await {
                        return;
                    }
                }
            }
        }
    }

    fn note_error(&self, error: ClientError) {
        self.view.send_modify(|v| v.last_error = Some(error));
    }

    /// Everything owned is gone without a commit.
    fn lose(&self, state: &mut State, reason: ClientError) {
        if !state.owned.is_empty() {
            warn!(group = %self.config.group_id, partitions = %format_partitions(&state.owned), %reason, "partitions lost");
        }
        state.owned.clear();
        state.generation = -1;
        self.view.send_modify(|v| v.generation = -1);
        let _ = self.events.send(Event::Lost(reason));
    }

    fn fail(&self, state: &mut State, error: ClientError) {
        warn!(group = %self.config.group_id, %error, "leaving the group for good");
        state.owned.clear();
        self.view.send_modify(|v| {
            v.fatal = Some(error.clone());
            v.coordinator = None;
        });
        let _ = self.events.send(Event::Fatal(error));
    }

    /// A member cut off from its coordinator for a whole session timeout
    /// has been removed from the group by now: its partitions may already
    /// be someone else's.
    fn check_session_expired(&self, state: &mut State) {
        if let Some(since) = state.disconnected_since
            && since.elapsed() >= state.session_timeout
            && !state.owned.is_empty()
        {
            let reason = ClientError::CoordinatorNotAvailable(format!(
                "no contact with the coordinator of group {} for {:?}",
                self.config.group_id, state.session_timeout
            ));
            self.lose(state, reason);
        }
    }

    /// Sleeps the backoff (with jitter, doubling it for next time) while
    /// handling commands. False when the task should end.
    async fn pause(&mut self, state: &mut State, backoff: &mut Duration) -> bool {
        self.check_session_expired(state);
        let wait = backoff.mul_f64(rand::rng().random_range(0.8..1.2));
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
        let done = self.offline(state, tokio::time::sleep(wait)).await.is_some();
        self.check_session_expired(state);
        done
    }

    /// Runs `work` while handling commands as a member without a stream.
    /// `None` when the task should end instead.
    async fn offline<T>(&mut self, state: &mut State, work: impl Future<Output = T>) -> Option<T> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return Some(out),
                command = self.commands.recv() => match command {
                    None => return None,
                    Some(Command::Leave(done)) => {
                        let _ = done.send(());
                        return None;
                    }
                    Some(Command::Subscribe(topics)) => self.topics = topics,
                    // The rejoin tells the coordinator what is still owned.
                    Some(Command::RevokeDone { .. }) => {}
                    Some(Command::Fenced { member_id, generation, error }) => {
                        if member_id == state.member_id && generation == state.generation {
                            let unknown = matches!(error, ClientError::UnknownMemberId(_));
                            self.lose(state, error);
                            if unknown {
                                state.member_id.clear();
                            }
                        }
                    }
                }
            }
        }
    }

    fn join_message(&self, state: &State) -> MemberMessage {
        let rejoin = !state.member_id.is_empty();
        MemberMessage {
            msg: Some(member_message::Msg::Join(JoinGroup {
                group: self.config.group_id.clone(),
                member_id: state.member_id.clone(),
                instance_id: self.config.instance_id.clone().unwrap_or_default(),
                client_id: self.config.client_id.clone(),
                topics: self.topics.clone(),
                assignor: self.config.assignor.as_str().to_string(),
                session_timeout_ms: millis(self.config.session_timeout),
                rebalance_timeout_ms: millis(self.config.rebalance_timeout),
                owned: if rejoin { to_wire(&state.owned) } else { Vec::new() },
                generation: if rejoin { state.generation } else { -1 },
            })),
        }
    }

    /// One `Join` stream to `addr`, from `JoinGroup` until it ends.
    async fn session(&mut self, state: &mut State, addr: &str) -> SessionEnd {
        let retry = |error: ClientError| SessionEnd::Retry { hint: None, pause: true, error, joined: false };
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(self.join_message(state));
        let mut client = match self.metadata.groups_client(addr) {
            Ok(client) => client,
            Err(e) => return retry(e),
        };
        let open = client.join(UnboundedReceiverStream::new(rx));
        let mut stream = match tokio::time::timeout(self.request_timeout, open).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => return self.end_with(state, ClientError::from_status(&status, addr), addr, false),
            Err(_) => return retry(ClientError::RequestTimedOut(format!("{addr} did not open the membership stream"))),
        };
        let mut joined = false;
        let joined_deadline = Instant::now() + self.request_timeout;
        let mut next_heartbeat = Instant::now() + state.heartbeat;
        let send = |msg: member_message::Msg| {
            let _ = tx.send(MemberMessage { msg: Some(msg) });
        };
        loop {
            tokio::select! {
                message = stream.message() => match message {
                    Ok(Some(CoordinatorMessage { msg: Some(msg) })) => match msg {
                        coordinator_message::Msg::Joined(j) => {
                            joined = true;
                            if !j.member_id.is_empty() {
                                state.member_id = j.member_id;
                            }
                            if j.heartbeat_interval_ms > 0 {
                                state.heartbeat = Duration::from_millis(u64::from(j.heartbeat_interval_ms));
                            }
                            if j.session_timeout_ms > 0 {
                                state.session_timeout = Duration::from_millis(u64::from(j.session_timeout_ms));
                            }
                            state.disconnected_since = None;
                            next_heartbeat = Instant::now() + state.heartbeat;
                            info!(group = %self.config.group_id, member = %state.member_id, coordinator = %addr, "joined");
                            let coordinator = Coordinator { id: j.coordinator_id, addr: addr.to_string() };
                            let member_id = state.member_id.clone();
                            self.view.send_modify(|v| {
                                v.member_id = Some(member_id);
                                v.coordinator = Some(coordinator);
                                v.last_error = None;
                            });
                        }
                        coordinator_message::Msg::Assignment(a) => self.on_assignment(state, a),
                        coordinator_message::Msg::Error(e) => {
                            let error = ClientError::from_partition_error(Some(&e)).unwrap_or_else(|| {
                                ClientError::Unavailable(format!("{addr} ended the membership stream"))
                            });
                            return self.end_with(state, error, addr, joined);
                        }
                    },
                    Ok(Some(CoordinatorMessage { msg: None })) => {}
                    Ok(None) => {
                        let error = ClientError::Unavailable(format!("{addr} ended the membership stream"));
                        return SessionEnd::Retry { hint: None, pause: true, error, joined };
                    }
                    Err(status) => return self.end_with(state, ClientError::from_status(&status, addr), addr, joined),
                },
                () = tokio::time::sleep_until(next_heartbeat) => {
                    send(member_message::Msg::Heartbeat(Heartbeat {}));
                    next_heartbeat = Instant::now() + state.heartbeat;
                }
                () = tokio::time::sleep_until(joined_deadline), if !joined => {
                    return retry(ClientError::RequestTimedOut(format!(
                        "{addr} did not answer the join of group {} within {:?}",
                        self.config.group_id, self.request_timeout
                    )));
                }
                command = self.commands.recv() => match command {
                    None => return SessionEnd::Leave,
                    Some(Command::Subscribe(topics)) => {
                        self.topics = topics.clone();
                        send(member_message::Msg::Subscribe(UpdateSubscription { topics }));
                    }
                    Some(Command::RevokeDone { generation, partitions }) => {
                        send(member_message::Msg::RevokeDone(RevokeDone { generation, partitions: to_wire(&partitions) }));
                    }
                    Some(Command::Fenced { member_id, generation, error }) => {
                        if member_id == state.member_id && generation == state.generation {
                            let unknown = matches!(error, ClientError::UnknownMemberId(_));
                            self.lose(state, error.clone());
                            if unknown {
                                state.member_id.clear();
                            }
                            return SessionEnd::Retry { hint: Some(addr.to_string()), pause: true, error, joined };
                        }
                    }
                    Some(Command::Leave(done)) => {
                        // A static member keeps its place for its session
                        // timeout (Kafka's static membership): it only
                        // ends the stream.
                        if self.config.instance_id.is_none() {
                            send(member_message::Msg::Leave(LeaveGroup {}));
                        }
                        drop(tx);
                        wait_for_end(&mut stream).await;
                        let _ = done.send(());
                        return SessionEnd::Leave;
                    }
                },
            }
        }
    }

    fn on_assignment(&self, state: &mut State, a: Assignment) {
        let assigned = from_wire(&a.assigned);
        let revoked = from_wire(&a.revoked);
        debug!(
            group = %self.config.group_id,
            generation = a.generation,
            assigned = %format_partitions(&assigned),
            revoked = %format_partitions(&revoked),
            "assignment"
        );
        state.generation = a.generation;
        state.owned = assigned.difference(&revoked).cloned().collect();
        self.view.send_modify(|v| v.generation = a.generation);
        let _ = self.events.send(Event::Assignment { generation: a.generation, assigned, revoked });
    }

    /// Ends a session after `error` from the broker at `addr`.
    fn end_with(&self, state: &mut State, error: ClientError, addr: &str, joined: bool) -> SessionEnd {
        match reaction(&error, addr) {
            Reaction::Follow(next) => SessionEnd::Retry { hint: Some(next), pause: false, error, joined },
            Reaction::Retry => SessionEnd::Retry { hint: None, pause: true, error, joined },
            Reaction::RejoinAsNew => {
                self.lose(state, error.clone());
                state.member_id.clear();
                SessionEnd::Retry { hint: Some(addr.to_string()), pause: true, error, joined }
            }
            Reaction::RejoinFresh => {
                self.lose(state, error.clone());
                SessionEnd::Retry { hint: Some(addr.to_string()), pause: true, error, joined }
            }
            Reaction::Fatal => SessionEnd::Fatal(error),
        }
    }
}

/// Waits (briefly) for the coordinator to end the stream, so a `LeaveGroup`
/// is delivered before the connection is dropped.
async fn wait_for_end(stream: &mut Streaming<CoordinatorMessage>) {
    let _ = tokio::time::timeout(LEAVE_WAIT, async { while let Ok(Some(_)) = stream.message().await {} }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn not_coordinator(addr: Option<&str>) -> ClientError {
        ClientError::NotCoordinator {
            coordinator_id: addr.map(|_| 2),
            coordinator_addr: addr.map(str::to_string),
            message: "moved".into(),
        }
    }

    #[test]
    fn stream_errors_map_to_the_documented_reactions() {
        assert_eq!(reaction(&not_coordinator(Some("b:2")), "b:1"), Reaction::Follow("b:2".into()));
        // No hint, or a hint naming the broker itself: look it up again.
        assert_eq!(reaction(&not_coordinator(None), "b:1"), Reaction::Retry);
        assert_eq!(reaction(&not_coordinator(Some("b:1")), "b:1"), Reaction::Retry);
        assert_eq!(reaction(&ClientError::CoordinatorNotAvailable("loading".into()), "b:1"), Reaction::Retry);
        assert_eq!(reaction(&ClientError::Unreachable("refused".into()), "b:1"), Reaction::Retry);
        assert_eq!(reaction(&ClientError::UnknownMemberId("gone".into()), "b:1"), Reaction::RejoinAsNew);
        assert_eq!(reaction(&ClientError::IllegalGeneration("old".into()), "b:1"), Reaction::RejoinFresh);
        assert_eq!(reaction(&ClientError::FencedInstanceId("taken".into()), "b:1"), Reaction::Fatal);
        assert_eq!(reaction(&ClientError::InconsistentGroupProtocol("range".into()), "b:1"), Reaction::Fatal);
        assert_eq!(reaction(&ClientError::InvalidRequest("bad".into()), "b:1"), Reaction::Fatal);
    }

    #[test]
    fn the_view_starts_without_a_generation() {
        let v = MemberView::default();
        assert_eq!((v.member_id, v.generation, v.coordinator, v.fatal), (None, -1, None, None));
    }
}
