//! The state machine of one group on its coordinator: membership,
//! generations, incremental rebalancing and commit checks. Pure: no IO, the
//! clock is passed in; what the caller must do comes back as `Outbound`
//! messages and a dirty flag (write the state before sending anything).
//!
//! Ownership is incremental. A rebalance (always a new generation)
//! computes each member's target; what a member owns outside its target
//! moves to its `revoking` set, and it keeps owning those partitions until
//! it confirms with RevokeDone (or leaves, or is removed). A partition in
//! someone's target is handed over only once no member owns or revokes it.
//!
//! Invariants: `owned` and `revoking` sets are pairwise disjoint across all
//! members (no partition has two owners); every member's `owned` is a
//! subset of its `target`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::assignor::{Assignor, Subscription, Tp};
use super::error::GroupError;
use super::store::{GroupRecord, MemberRecord};

/// Identifies one member stream on this broker.
pub type ConnId = u64;

#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub min_session_timeout: Duration,
    pub max_session_timeout: Duration,
    /// Triggers within this window of the first are handled by one
    /// rebalance.
    pub rebalance_delay: Duration,
    pub max_members: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout: Duration::from_millis(1_000),
            max_session_timeout: Duration::from_millis(300_000),
            rebalance_delay: Duration::from_millis(100),
            max_members: 1_000,
        }
    }
}

/// Used when a member leaves its session timeout at 0 (unset).
const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// Used when a member leaves its rebalance timeout at 0 (unset).
const DEFAULT_REBALANCE_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_REBALANCE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// A JoinGroup, validated for shape by the service.
#[derive(Debug, Clone, Default)]
pub struct JoinSpec {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub topics: BTreeSet<String>,
    pub assignor: String,
    pub session_timeout_ms: u32,
    pub rebalance_timeout_ms: u32,
    pub owned: BTreeSet<Tp>,
    pub generation: i32,
}

/// What a member sends after joining.
#[derive(Debug, Clone)]
pub enum MemberMsg {
    Heartbeat,
    RevokeDone {
        partitions: BTreeSet<Tp>,
    },
    Subscribe {
        topics: BTreeSet<String>,
    },
    Leave,
    /// The stream ended or failed.
    Closed,
    /// A message the protocol does not allow here.
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToMember {
    Joined {
        member_id: String,
        heartbeat_interval_ms: u32,
        session_timeout_ms: u32,
        coordinator_id: i32,
    },
    Assignment {
        generation: i32,
        assigned: BTreeSet<Tp>,
        revoked: BTreeSet<Tp>,
    },
    /// The stream ends after it.
    Error(GroupError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    Send(ConnId, ToMember),
    /// End this stream (after what was sent to it).
    Close(ConnId),
}

#[derive(Debug, Clone)]
pub struct Member {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub topics: BTreeSet<String>,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    /// Consuming these now.
    pub owned: BTreeSet<Tp>,
    /// Told to give these up; still theirs until RevokeDone.
    pub revoking: BTreeSet<Tp>,
    /// What the last rebalance gave this member.
    pub target: BTreeSet<Tp>,
    pub conn: Option<ConnId>,
    /// Last message while connected; the disconnection time otherwise.
    pub last_heard: Instant,
    /// Revocations must be confirmed by then.
    pub revoke_deadline: Option<Instant>,
    /// Loaded by a new coordinator; has not rejoined it yet.
    pub awaiting_rejoin: bool,
}

impl Member {
    fn session_deadline(&self) -> Instant {
        self.last_heard + self.session_timeout
    }
}

pub struct Group {
    name: String,
    coordinator_id: i32,
    config: GroupConfig,
    generation: i32,
    assignor: Assignor,
    members: BTreeMap<String, Member>,
    conns: HashMap<ConnId, String>,
    /// Partition counts of every existing topic (None until first told).
    topics: Option<BTreeMap<String, u32>>,
    rebalance_at: Option<Instant>,
    /// Loaded members have not all rejoined (or timed out) yet.
    taking_over: bool,
    /// Members owed an Assignment with their current state.
    notify: BTreeSet<String>,
    outbox: Vec<Outbound>,
    dirty: bool,
}

impl Group {
    pub fn new(name: &str, coordinator_id: i32, config: GroupConfig) -> Group {
        Group {
            name: name.to_string(),
            coordinator_id,
            config,
            generation: 0,
            assignor: Assignor::default(),
            members: BTreeMap::new(),
            conns: HashMap::new(),
            topics: None,
            rebalance_at: None,
            taking_over: false,
            notify: BTreeSet::new(),
            outbox: Vec::new(),
            dirty: false,
        }
    }

    /// Takes over a group another coordinator wrote: a new generation (so
    /// the previous coordinator's members cannot commit in the old one),
    /// every member kept with what it owned, waiting for it to rejoin.
    pub fn from_record(
        name: &str,
        coordinator_id: i32,
        config: GroupConfig,
        record: GroupRecord,
        now: Instant,
    ) -> Group {
        let mut g = Group::new(name, coordinator_id, config);
        g.generation = record.generation;
        g.assignor = Assignor::parse(&record.assignor).unwrap_or_default();
        let mut taken: BTreeSet<Tp> = BTreeSet::new();
        for m in record.members {
            // A damaged record must not give one partition two owners.
            let owned: BTreeSet<Tp> = m.owned.into_iter().filter(|tp| taken.insert(tp.clone())).collect();
            let revoking: BTreeSet<Tp> = m.revoking.into_iter().filter(|tp| taken.insert(tp.clone())).collect();
            let session_timeout = g.clamp_session(m.session_timeout_ms);
            let member = Member {
                member_id: m.member_id.clone(),
                instance_id: m.instance_id.filter(|i| !i.is_empty()),
                client_id: m.client_id,
                topics: m.topics.into_iter().collect(),
                session_timeout,
                rebalance_timeout: rebalance_timeout(m.rebalance_timeout_ms),
                target: owned.clone(),
                owned,
                revoking,
                conn: None,
                last_heard: now,
                revoke_deadline: None,
                awaiting_rejoin: true,
            };
            g.members.insert(m.member_id, member);
        }
        if !g.members.is_empty() {
            g.generation = next_generation(g.generation);
            g.taking_over = true;
            g.dirty = true;
        }
        g
    }

    pub fn to_record(&self) -> GroupRecord {
        GroupRecord {
            generation: self.generation,
            assignor: self.assignor.name().to_string(),
            coordinator_id: self.coordinator_id,
            members: self
                .members
                .values()
                .map(|m| MemberRecord {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    topics: m.topics.iter().cloned().collect(),
                    session_timeout_ms: duration_ms(m.session_timeout),
                    rebalance_timeout_ms: duration_ms(m.rebalance_timeout),
                    owned: m.owned.iter().cloned().collect(),
                    revoking: m.revoking.iter().cloned().collect(),
                })
                .collect(),
        }
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn members(&self) -> &BTreeMap<String, Member> {
        &self.members
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn connections(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.conns.keys().copied()
    }

    /// Whether the state changed since the last call (and must be written).
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Messages to send, in order, each member's Assignment last.
    pub fn take_outbox(&mut self) -> Vec<Outbound> {
        for id in std::mem::take(&mut self.notify) {
            if let Some(m) = self.members.get(&id)
                && let Some(conn) = m.conn
            {
                let msg = ToMember::Assignment {
                    generation: self.generation,
                    assigned: m.owned.clone(),
                    revoked: m.revoking.clone(),
                };
                self.outbox.push(Outbound::Send(conn, msg));
            }
        }
        std::mem::take(&mut self.outbox)
    }

    /// When `tick` next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let members = self.members.values().flat_map(|m| {
            let revoke = m.revoke_deadline.filter(|_| !m.revoking.is_empty());
            [Some(m.session_deadline()), revoke]
        });
        members.chain([self.rebalance_at]).flatten().min()
    }

    fn clamp_session(&self, ms: u32) -> Duration {
        let d = if ms == 0 { DEFAULT_SESSION_TIMEOUT } else { Duration::from_millis(u64::from(ms)) };
        d.clamp(self.config.min_session_timeout, self.config.max_session_timeout)
    }

    fn session_timeout(&self, ms: u32) -> Result<Duration, GroupError> {
        if ms == 0 {
            return Ok(self.clamp_session(0));
        }
        let d = Duration::from_millis(u64::from(ms));
        if d < self.config.min_session_timeout || d > self.config.max_session_timeout {
            return Err(GroupError::InvalidRequest(format!(
                "session timeout {ms} ms is outside [{}, {}] ms",
                self.config.min_session_timeout.as_millis(),
                self.config.max_session_timeout.as_millis()
            )));
        }
        Ok(d)
    }

    fn trigger_rebalance(&mut self, now: Instant) {
        if !self.members.is_empty() {
            self.rebalance_at.get_or_insert(now + self.config.rebalance_delay);
        }
    }

    fn joined(&mut self, conn: ConnId, member_id: &str) {
        let m = &self.members[member_id];
        let session_timeout_ms = duration_ms(m.session_timeout);
        self.outbox.push(Outbound::Send(
            conn,
            ToMember::Joined {
                member_id: member_id.to_string(),
                heartbeat_interval_ms: (session_timeout_ms / 3).max(1),
                session_timeout_ms,
                coordinator_id: self.coordinator_id,
            },
        ));
        self.conns.insert(conn, member_id.to_string());
    }

    /// A JoinGroup on stream `conn`. On error nothing changed, and the
    /// caller answers the stream with the error and closes it.
    pub fn join(&mut self, conn: ConnId, spec: JoinSpec, now: Instant) -> Result<(), GroupError> {
        let session_timeout = self.session_timeout(spec.session_timeout_ms)?;
        let rebalance_timeout = rebalance_timeout(spec.rebalance_timeout_ms);
        let assignor = Assignor::parse(&spec.assignor)
            .ok_or_else(|| GroupError::InvalidRequest(format!("unknown assignor {:?}", spec.assignor)))?;
        if !self.members.is_empty() && assignor != self.assignor {
            return Err(GroupError::InconsistentGroupProtocol(format!(
                "group {} uses the {} assignor, not {}",
                self.name,
                self.assignor.name(),
                assignor.name()
            )));
        }
        let fields = Fields { client_id: spec.client_id.clone(), session_timeout, rebalance_timeout };
        if let Some(instance) = &spec.instance_id
            && let Some(slot) = self.members.values().find(|m| m.instance_id.as_ref() == Some(instance))
        {
            let slot = slot.member_id.clone();
            self.take_over_slot(conn, &slot, spec, fields, now);
            return Ok(());
        }
        if !spec.member_id.is_empty() {
            let Some(m) = self.members.get(&spec.member_id) else {
                return Err(GroupError::UnknownMemberId(format!(
                    "{} is not a member of {}",
                    spec.member_id, self.name
                )));
            };
            if let Some(instance) = &m.instance_id {
                // The slot's instance id was not in the request (a match
                // was handled above): another process holds this member id.
                return Err(GroupError::FencedInstanceId(instance.clone()));
            }
            self.rejoin(conn, spec, fields, now);
            return Ok(());
        }
        if self.members.len() >= self.config.max_members {
            return Err(GroupError::InvalidRequest(format!(
                "group {} is full ({} members)",
                self.name, self.config.max_members
            )));
        }
        if self.members.is_empty() {
            self.assignor = assignor;
        }
        let member_id = new_member_id(&spec.client_id);
        let member = Member {
            member_id: member_id.clone(),
            instance_id: spec.instance_id,
            client_id: fields.client_id,
            topics: spec.topics,
            session_timeout,
            rebalance_timeout,
            owned: BTreeSet::new(),
            revoking: BTreeSet::new(),
            target: BTreeSet::new(),
            conn: Some(conn),
            last_heard: now,
            revoke_deadline: None,
            awaiting_rejoin: false,
        };
        tracing::info!(group = %self.name, member = %member_id, "member joined");
        self.members.insert(member_id.clone(), member);
        self.joined(conn, &member_id);
        self.dirty = true;
        self.trigger_rebalance(now);
        Ok(())
    }

    /// A static member (known instance id) comes back: it takes the slot
    /// as it is, with no rebalance. A stream still attached to the slot is
    /// another process with the same instance id: it is fenced.
    fn take_over_slot(&mut self, conn: ConnId, slot: &str, spec: JoinSpec, fields: Fields, now: Instant) {
        let Some(mut m) = self.members.remove(slot) else { return };
        if let Some(old) = m.conn.take() {
            self.conns.remove(&old);
            let instance = m.instance_id.clone().unwrap_or_default();
            self.outbox.push(Outbound::Send(old, ToMember::Error(GroupError::FencedInstanceId(instance))));
            self.outbox.push(Outbound::Close(old));
        }
        if spec.member_id != m.member_id {
            // The old member id is fenced: its commits fail from now on.
            m.member_id = new_member_id(&spec.client_id);
            self.notify.remove(slot);
        }
        tracing::info!(group = %self.name, member = %m.member_id, previous = slot, "static member rejoined");
        let topics_changed = m.topics != spec.topics;
        m.topics = spec.topics;
        self.attach(conn, m, fields, now);
        self.dirty = true;
        if topics_changed {
            self.trigger_rebalance(now);
        }
    }

    /// A member rejoins with its id (lost stream, or a coordinator move):
    /// it keeps what it still holds of what the group says it owns.
    fn rejoin(&mut self, conn: ConnId, spec: JoinSpec, fields: Fields, now: Instant) {
        let Some(mut m) = self.members.remove(&spec.member_id) else { return };
        if let Some(old) = m.conn.take() {
            // The same client gave up on its old stream.
            self.conns.remove(&old);
            self.outbox.push(Outbound::Close(old));
        }
        // A claim from the future is garbage; one from an older generation
        // still only keeps what the group itself records for the member.
        // Revocations stand whatever the member claims: it may still be
        // committing those partitions, and confirms them with RevokeDone
        // once the Assignment below repeats them.
        let claimed = if spec.generation <= self.generation { spec.owned } else { BTreeSet::new() };
        let owned = m.owned.len();
        m.owned.retain(|tp| claimed.contains(tp));
        if m.owned.len() != owned {
            self.dirty = true;
        }
        tracing::info!(group = %self.name, member = %m.member_id, "member rejoined");
        let topics_changed = m.topics != spec.topics;
        m.topics = spec.topics;
        if m.instance_id.is_none() {
            m.instance_id = spec.instance_id;
        }
        self.attach(conn, m, fields, now);
        if topics_changed {
            self.dirty = true;
            self.trigger_rebalance(now);
        }
        self.assign_free();
    }

    fn attach(&mut self, conn: ConnId, mut m: Member, fields: Fields, now: Instant) {
        m.client_id = fields.client_id;
        m.session_timeout = fields.session_timeout;
        m.rebalance_timeout = fields.rebalance_timeout;
        m.conn = Some(conn);
        m.last_heard = now;
        if !m.revoking.is_empty() && m.revoke_deadline.is_none() {
            m.revoke_deadline = Some(now + m.rebalance_timeout);
        }
        let rejoined = std::mem::take(&mut m.awaiting_rejoin);
        let id = m.member_id.clone();
        self.members.insert(id.clone(), m);
        self.joined(conn, &id);
        self.notify.insert(id);
        if rejoined {
            self.check_takeover_done(now);
        }
    }

    fn check_takeover_done(&mut self, now: Instant) {
        if self.taking_over && self.members.values().all(|m| !m.awaiting_rejoin) {
            self.taking_over = false;
            tracing::info!(group = %self.name, "every member is back after the takeover");
            self.trigger_rebalance(now);
        }
    }

    /// A message on a joined stream.
    pub fn on_message(&mut self, conn: ConnId, msg: MemberMsg, at: Instant, now: Instant) {
        let Some(id) = self.conns.get(&conn).cloned() else { return };
        let Some(m) = self.members.get_mut(&id) else { return };
        m.last_heard = m.last_heard.max(at);
        match msg {
            MemberMsg::Heartbeat => {}
            MemberMsg::RevokeDone { partitions } => {
                let before = m.revoking.len();
                m.revoking.retain(|tp| !partitions.contains(tp));
                if m.revoking.is_empty() {
                    m.revoke_deadline = None;
                }
                if m.revoking.len() != before {
                    self.dirty = true;
                    self.assign_free();
                }
            }
            MemberMsg::Subscribe { topics } => {
                if m.topics != topics {
                    m.topics = topics;
                    self.dirty = true;
                    self.trigger_rebalance(now);
                }
            }
            MemberMsg::Leave => {
                tracing::info!(group = %self.name, member = %id, "member left");
                self.remove(&id, None, now);
            }
            MemberMsg::Closed => self.disconnected(&id, now),
            MemberMsg::Invalid(why) => {
                self.outbox.push(Outbound::Send(conn, ToMember::Error(GroupError::InvalidRequest(why))));
                self.disconnected(&id, now);
            }
        }
    }

    /// A static member keeps its slot for its session timeout; a dynamic
    /// one leaves at once.
    fn disconnected(&mut self, id: &str, now: Instant) {
        let Some(m) = self.members.get_mut(id) else { return };
        if let Some(conn) = m.conn.take() {
            self.conns.remove(&conn);
            self.outbox.push(Outbound::Close(conn));
        }
        if m.instance_id.is_some() {
            m.last_heard = now;
            tracing::info!(group = %self.name, member = %id, "static member disconnected; keeping its place");
        } else {
            tracing::info!(group = %self.name, member = %id, "member stream ended");
            self.remove(id, None, now);
        }
    }

    /// Removes a member; its partitions become free. `error` is sent to its
    /// stream, if any, before it ends.
    fn remove(&mut self, id: &str, error: Option<GroupError>, now: Instant) {
        let Some(m) = self.members.remove(id) else { return };
        if let Some(conn) = m.conn {
            self.conns.remove(&conn);
            if let Some(e) = error {
                self.outbox.push(Outbound::Send(conn, ToMember::Error(e)));
            }
            self.outbox.push(Outbound::Close(conn));
        }
        self.notify.remove(id);
        self.dirty = true;
        self.trigger_rebalance(now);
        self.assign_free();
        if m.awaiting_rejoin {
            self.check_takeover_done(now);
        }
    }

    /// The partition counts of every existing topic changed (or are first
    /// known): a change in a subscribed topic needs a rebalance.
    pub fn set_topics(&mut self, topics: BTreeMap<String, u32>, now: Instant) {
        // The first view (a group just loaded) is not a change.
        let changed = self.topics.as_ref().is_some_and(|old| {
            let mut subscribed = self.members.values().flat_map(|m| m.topics.iter());
            subscribed.any(|t| old.get(t) != topics.get(t))
        });
        self.topics = Some(topics);
        if changed {
            self.trigger_rebalance(now);
        }
    }

    /// Expires sessions and revocation deadlines and runs a due rebalance.
    pub fn tick(&mut self, now: Instant) {
        let expired: Vec<(String, GroupError)> = self
            .members
            .values()
            .filter_map(|m| {
                if now >= m.session_deadline() {
                    let why =
                        if m.awaiting_rejoin { "did not rejoin after a coordinator move" } else { "session timed out" };
                    Some((m.member_id.clone(), GroupError::UnknownMemberId(format!("{}: {why}", m.member_id))))
                } else if !m.revoking.is_empty() && m.revoke_deadline.is_some_and(|d| now >= d) {
                    let why = "did not confirm its revocations within its rebalance timeout";
                    Some((m.member_id.clone(), GroupError::UnknownMemberId(format!("{}: {why}", m.member_id))))
                } else {
                    None
                }
            })
            .collect();
        for (id, error) in expired {
            tracing::info!(group = %self.name, member = %id, reason = %error, "removing member");
            self.remove(&id, Some(error), now);
        }
        if self.rebalance_at.is_some_and(|at| now >= at) {
            self.rebalance(now);
        }
    }

    fn rebalance(&mut self, now: Instant) {
        self.rebalance_at = None;
        if self.members.is_empty() {
            return;
        }
        self.generation = next_generation(self.generation);
        // A member's target stands for what it will own once moves finish,
        // so repeated rebalances converge instead of reshuffling.
        let subscriptions: BTreeMap<String, Subscription> = self
            .members
            .iter()
            .map(|(id, m)| (id.clone(), Subscription { topics: m.topics.clone(), owned: m.target.clone() }))
            .collect();
        let topics = self.topics.clone().unwrap_or_default();
        let mut targets = self.assignor.assign(&subscriptions, &topics);
        for (id, m) in &mut self.members {
            m.target = targets.remove(id).unwrap_or_default();
            let revoke: Vec<Tp> = m.owned.difference(&m.target).cloned().collect();
            if !revoke.is_empty() {
                for tp in revoke {
                    m.owned.remove(&tp);
                    m.revoking.insert(tp);
                }
                m.revoke_deadline.get_or_insert(now + m.rebalance_timeout);
            }
            self.notify.insert(id.clone());
        }
        self.assign_free();
        self.dirty = true;
        metrics::counter!("strata_group_rebalances_total", "group" => self.name.clone()).increment(1);
        tracing::info!(group = %self.name, generation = self.generation, members = self.members.len(), "rebalanced");
    }

    /// Hands each member the partitions of its target nobody holds.
    fn assign_free(&mut self) {
        let mut taken: BTreeSet<Tp> =
            self.members.values().flat_map(|m| m.owned.iter().chain(m.revoking.iter())).cloned().collect();
        for (id, m) in &mut self.members {
            let free: Vec<Tp> =
                m.target.iter().filter(|tp| !m.owned.contains(*tp) && !taken.contains(*tp)).cloned().collect();
            if !free.is_empty() {
                taken.extend(free.iter().cloned());
                m.owned.extend(free);
                self.notify.insert(id.clone());
                self.dirty = true;
            }
        }
    }

    /// Whether `member_id` may commit `partitions` in `generation`: an
    /// error for the whole request, or one per partition.
    pub fn check_commit(
        &self,
        member_id: &str,
        generation: i32,
        partitions: &[Tp],
    ) -> Result<Vec<Option<GroupError>>, GroupError> {
        if member_id.is_empty() && generation < 0 {
            if !self.members.is_empty() {
                return Err(GroupError::NonEmptyGroup(self.name.clone()));
            }
            return Ok(vec![None; partitions.len()]);
        }
        let Some(m) = self.members.get(member_id) else {
            return Err(GroupError::UnknownMemberId(format!("{member_id} is not a member of {}", self.name)));
        };
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration { given: generation, current: self.generation });
        }
        Ok(partitions
            .iter()
            .map(|tp| {
                (!m.owned.contains(tp) && !m.revoking.contains(tp))
                    .then(|| GroupError::PartitionNotOwned { topic: tp.0.clone(), partition: tp.1 })
            })
            .collect())
    }
}

struct Fields {
    client_id: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
}

fn rebalance_timeout(ms: u32) -> Duration {
    match ms {
        0 => DEFAULT_REBALANCE_TIMEOUT,
        ms => Duration::from_millis(u64::from(ms)).min(MAX_REBALANCE_TIMEOUT),
    }
}

fn duration_ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

fn next_generation(g: i32) -> i32 {
    // 2^31 rebalances do not happen; should they, 1 still differs from
    // every generation a live member can hold.
    g.checked_add(1).unwrap_or(1)
}

fn new_member_id(client_id: &str) -> String {
    let prefix = if client_id.is_empty() { "member" } else { client_id };
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests;
