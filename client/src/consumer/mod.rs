//! A consumer with manual assignment: the application says which partitions
//! to read and where; [`Consumer::poll`] returns their records in offset
//! order per partition.
//!
//! Prefetching: at most one `Fetch` is outstanding per leader broker, as a
//! background task, so the next records travel while the application works
//! on the last ones. A partition is fetched again only once the records
//! buffered for it have been returned, which bounds memory to about one
//! fetch answer per broker.
//!
//! Leadership comes from the [`MetadataClient`]'s watch: after
//! `NOT_LEADER_FOR_PARTITION` a partition waits for the metadata to change
//! (or a backoff to pass) and then fetches from whoever leads it now.
//!
//! Consumer groups (subscription, rebalancing, commits) wrap this consumer:
//! see [`crate::group`].

mod decode;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strata_proto::broker::{
    FetchPartition, FetchRequest, FetchResponse, ListOffsetsPartition, ListOffsetsRequest, ListOffsetsResponse,
};
use strata_proto::record_batch::RecordHeader;
use tokio::sync::watch;
use tokio::task::{Id as TaskId, JoinSet};
use tokio::time::Instant;
use tracing::debug;

use crate::error::ClientError;
use crate::metadata::{ClusterMetadata, MetadataClient};
pub(crate) use decode::{Decoded, decode_records};

/// `ListOffsets` timestamp meaning "the log start offset".
const EARLIEST_TIMESTAMP: i64 = -2;
/// `ListOffsets` timestamp meaning "the log end offset".
const LATEST_TIMESTAMP: i64 = -1;

/// A partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: u32) -> TopicPartition {
        TopicPartition { topic: topic.into(), partition }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

impl From<(&str, u32)> for TopicPartition {
    fn from((topic, partition): (&str, u32)) -> Self {
        TopicPartition::new(topic, partition)
    }
}

impl From<(String, u32)> for TopicPartition {
    fn from((topic, partition): (String, u32)) -> Self {
        TopicPartition { topic, partition }
    }
}

impl From<&TopicPartition> for TopicPartition {
    fn from(tp: &TopicPartition) -> Self {
        tp.clone()
    }
}

/// A record as [`Consumer::poll`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Shared by every record of the partition, so records stay cheap.
    pub topic: Arc<str>,
    pub partition: u32,
    pub offset: i64,
    /// The producer's timestamp, or the broker's under log-append time.
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<RecordHeader>,
}

/// Where a partition without a valid position starts (Kafka
/// `auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// The oldest record still in the log.
    Earliest,
    /// After the last record: only records produced from now on.
    #[default]
    Latest,
    /// Fail `poll` with [`ClientError::NoOffset`] or
    /// [`ClientError::OffsetOutOfRange`] and let the application seek.
    Error,
}

/// Everything a [`Consumer`] can be tuned with. Defaults are Kafka's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// Applies to partitions assigned without a seek, and to a position
    /// that fell out of the log (retention deleted it, or it is past the
    /// end).
    pub auto_offset_reset: OffsetReset,
    /// How long a broker holds a fetch open waiting for `fetch_min_bytes`
    /// (Kafka `fetch.max.wait.ms`).
    pub fetch_max_wait: Duration,
    pub fetch_min_bytes: u32,
    /// Bound on one fetch answer (Kafka `fetch.max.bytes`); the broker
    /// still returns at least one whole batch.
    pub fetch_max_bytes: u32,
    /// Bound per partition in one fetch answer (Kafka
    /// `max.partition.fetch.bytes`).
    pub max_partition_fetch_bytes: u32,
    /// Most records one `poll` returns.
    pub max_poll_records: usize,
    /// Bound on a `ListOffsets` call, and added to `fetch_max_wait` for a
    /// fetch.
    pub request_timeout: Duration,
    /// Pause before fetching a partition again after a failure (ended early
    /// by a metadata change when the failure said leadership moved).
    pub retry_backoff: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Latest,
            fetch_max_wait: Duration::from_millis(500),
            fetch_min_bytes: 1,
            fetch_max_bytes: 50 * 1024 * 1024,
            max_partition_fetch_bytes: 1024 * 1024,
            max_poll_records: 500,
            request_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(100),
        }
    }
}

/// One assigned partition.
#[derive(Debug)]
struct PartitionState {
    topic: Arc<str>,
    /// Offset of the next record to return; `None` until seeked or reset.
    position: Option<i64>,
    /// How to find a position when there is none. `None` means the
    /// configured policy; a seek to beginning or end sets it.
    reset: Option<OffsetReset>,
    paused: bool,
    /// Fetched records not yet returned, in offset order.
    buffer: VecDeque<ConsumerRecord>,
    /// The position once `buffer` has been returned (it may skip past
    /// control batches or gaps).
    buffer_end: i64,
    /// A fetch or offset lookup for this partition is in flight.
    busy: bool,
    /// After a failure: no request before this instant...
    backoff_until: Option<Instant>,
    /// ...unless the metadata moves past this revision first.
    stale_revision: Option<u64>,
    /// To be returned by `poll` once `buffer` is empty.
    error: Option<ClientError>,
    high_watermark: Option<i64>,
}

impl PartitionState {
    fn new(topic: &str) -> PartitionState {
        PartitionState {
            topic: Arc::from(topic),
            position: None,
            reset: None,
            paused: false,
            buffer: VecDeque::new(),
            buffer_end: 0,
            busy: false,
            backoff_until: None,
            stale_revision: None,
            error: None,
            high_watermark: None,
        }
    }

    /// Forgets everything fetched: the position moved.
    fn clear(&mut self) {
        self.buffer.clear();
        self.error = None;
        self.backoff_until = None;
        self.stale_revision = None;
    }

    /// Whether a failure's backoff has ended.
    fn may_request(&self, now: Instant, revision: u64) -> bool {
        match self.backoff_until {
            None => true,
            Some(until) => now >= until || self.stale_revision.is_some_and(|r| revision > r),
        }
    }

    fn back_off(&mut self, now: Instant, backoff: Duration, error: &ClientError, revision: u64) {
        self.backoff_until = Some(now + backoff);
        self.stale_revision = error.is_stale_metadata().then_some(revision);
    }
}

/// What a background request was for.
#[derive(Debug)]
enum Pending {
    Fetch { addr: String, offsets: Vec<(TopicPartition, i64)> },
    Reset { offsets: Vec<(TopicPartition, i64)> },
}

/// What a background request returned.
enum Answer {
    Fetch(Result<FetchResponse, ClientError>),
    Offsets(HashMap<TopicPartition, Result<i64, ClientError>>),
}

/// Reads assigned partitions. Owned by one task: every method takes
/// `&mut self`, like Kafka's consumer, which is not thread-safe either.
pub struct Consumer {
    metadata: MetadataClient,
    metadata_rx: watch::Receiver<Arc<ClusterMetadata>>,
    config: ConsumerConfig,
    partitions: BTreeMap<TopicPartition, PartitionState>,
    tasks: JoinSet<Answer>,
    pending: HashMap<TaskId, Pending>,
    /// Brokers with a fetch outstanding.
    fetching: HashSet<String>,
    /// Where the next `poll` starts taking records, so that one busy
    /// partition cannot starve the others.
    drain_cursor: usize,
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("assignment", &self.partitions.keys().collect::<Vec<_>>())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    pub fn new(metadata: MetadataClient, config: ConsumerConfig) -> Consumer {
        let metadata_rx = metadata.subscribe();
        Consumer {
            metadata,
            metadata_rx,
            config,
            partitions: BTreeMap::new(),
            tasks: JoinSet::new(),
            pending: HashMap::new(),
            fetching: HashSet::new(),
            drain_cursor: 0,
        }
    }

    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// Replaces the assignment. Partitions kept keep their position and
    /// buffered records; new ones start per the offset-reset policy unless
    /// seeked before the next `poll`.
    pub fn assign<I, T>(&mut self, partitions: I)
    where
        I: IntoIterator<Item = T>,
        T: Into<TopicPartition>,
    {
        let mut old = std::mem::take(&mut self.partitions);
        for tp in partitions {
            let tp = tp.into();
            let state = old.remove(&tp).unwrap_or_else(|| PartitionState::new(&tp.topic));
            self.partitions.insert(tp, state);
        }
    }

    /// The assigned partitions, sorted.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.partitions.keys().cloned().collect()
    }

    fn state_mut(&mut self, tp: &TopicPartition) -> Result<&mut PartitionState, ClientError> {
        self.partitions.get_mut(tp).ok_or_else(|| ClientError::InvalidArgument(format!("{tp} is not assigned")))
    }

    /// The next `poll` returns `tp`'s records from `offset`.
    pub fn seek(&mut self, tp: impl Into<TopicPartition>, offset: i64) -> Result<(), ClientError> {
        let tp = tp.into();
        if offset < 0 {
            return Err(ClientError::InvalidArgument(format!("cannot seek {tp} to negative offset {offset}")));
        }
        let state = self.state_mut(&tp)?;
        state.clear();
        state.position = Some(offset);
        state.reset = None;
        Ok(())
    }

    /// The next `poll` reads these partitions from their first record.
    pub fn seek_to_beginning<I, T>(&mut self, partitions: I) -> Result<(), ClientError>
    where
        I: IntoIterator<Item = T>,
        T: Into<TopicPartition>,
    {
        self.seek_with(partitions, OffsetReset::Earliest)
    }

    /// The next `poll` reads only records produced after the lookup.
    pub fn seek_to_end<I, T>(&mut self, partitions: I) -> Result<(), ClientError>
    where
        I: IntoIterator<Item = T>,
        T: Into<TopicPartition>,
    {
        self.seek_with(partitions, OffsetReset::Latest)
    }

    fn seek_with<I, T>(&mut self, partitions: I, reset: OffsetReset) -> Result<(), ClientError>
    where
        I: IntoIterator<Item = T>,
        T: Into<TopicPartition>,
    {
        let tps: Vec<TopicPartition> = partitions.into_iter().map(Into::into).collect();
        // Check all first, so a bad list changes nothing.
        if let Some(tp) = tps.iter().find(|tp| !self.partitions.contains_key(*tp)) {
            return Err(ClientError::InvalidArgument(format!("{tp} is not assigned")));
        }
        for tp in &tps {
            let state = self.state_mut(tp)?;
            state.clear();
            state.position = None;
            state.reset = Some(reset);
        }
        Ok(())
    }

    /// Moves `tp` to the first record whose timestamp is at or after
    /// `timestamp` (ms), or to the end of the log when there is none.
    /// Returns the new position.
    pub async fn seek_to_timestamp(
        &mut self,
        tp: impl Into<TopicPartition>,
        timestamp: i64,
    ) -> Result<i64, ClientError> {
        let tp = tp.into();
        self.state_mut(&tp)?;
        let found = self.lookup_one(&tp, timestamp).await?;
        let offset = match found {
            Some(offset) => offset,
            None => self.lookup_one(&tp, LATEST_TIMESTAMP).await?.unwrap_or(0),
        };
        self.seek(tp, offset)?;
        Ok(offset)
    }

    /// The offset of the next record `poll` returns for `tp`, looking it up
    /// first if the partition has none yet.
    pub async fn position(&mut self, tp: impl Into<TopicPartition>) -> Result<i64, ClientError> {
        let tp = tp.into();
        let state = self.state_mut(&tp)?;
        if let Some(position) = state.position {
            return Ok(position);
        }
        let reset = state.reset.unwrap_or(self.config.auto_offset_reset);
        let timestamp = match reset {
            OffsetReset::Earliest => EARLIEST_TIMESTAMP,
            OffsetReset::Latest => LATEST_TIMESTAMP,
            OffsetReset::Error => {
                return Err(ClientError::NoOffset { topic: tp.topic.clone(), partition: tp.partition });
            }
        };
        let offset = self.lookup_one(&tp, timestamp).await?.unwrap_or(0);
        let state = self.state_mut(&tp)?;
        // A background reset may have landed meanwhile; keep the first.
        Ok(*state.position.get_or_insert(offset))
    }

    /// The position of every assigned partition that has one: the offset of
    /// the next record `poll` would return, so everything before it has
    /// been returned. Partitions still waiting for an offset lookup are
    /// left out. No request is made.
    pub fn positions(&self) -> BTreeMap<TopicPartition, i64> {
        self.partitions.iter().filter_map(|(tp, s)| s.position.map(|p| (tp.clone(), p))).collect()
    }

    /// The high watermark the last fetch of `tp` reported: the offset after
    /// the last record a consumer may read.
    pub fn high_watermark(&self, tp: &TopicPartition) -> Option<i64> {
        self.partitions.get(tp).and_then(|s| s.high_watermark)
    }

    /// Stops fetching these partitions; `poll` returns none of their
    /// records until they are resumed. Their position is kept.
    pub fn pause<I, T>(&mut self, partitions: I) -> Result<(), ClientError>
    where
        I: IntoIterator<Item = T>,
        T: Into<TopicPartition>,
    {
        self.set_paused(partitions, true)
    }

    pub fn resume<I, T>(&mut self, partitions: I) -> Result<(), ClientError>
    where
        I: IntoIterator<Item = T>,
        T: Into<TopicPartition>,
    {
        self.set_paused(partitions, false)
    }

    fn set_paused<I, T>(&mut self, partitions: I, paused: bool) -> Result<(), ClientError>
    where
        I: IntoIterator<Item = T>,
        T: Into<TopicPartition>,
    {
        for tp in partitions {
            self.state_mut(&tp.into())?.paused = paused;
        }
        Ok(())
    }

    /// The paused partitions, sorted.
    pub fn paused(&self) -> Vec<TopicPartition> {
        self.partitions.iter().filter(|(_, s)| s.paused).map(|(tp, _)| tp.clone()).collect()
    }

    /// First offset still in the log of each partition.
    pub async fn beginning_offsets(&self, tps: &[TopicPartition]) -> Result<HashMap<TopicPartition, i64>, ClientError> {
        self.lookup_all(tps, EARLIEST_TIMESTAMP)
            .await
            .map(|m| m.into_iter().map(|(tp, o)| (tp, o.unwrap_or(0))).collect())
    }

    /// The offset after the last record of each partition (its high
    /// watermark).
    pub async fn end_offsets(&self, tps: &[TopicPartition]) -> Result<HashMap<TopicPartition, i64>, ClientError> {
        self.lookup_all(tps, LATEST_TIMESTAMP)
            .await
            .map(|m| m.into_iter().map(|(tp, o)| (tp, o.unwrap_or(0))).collect())
    }

    /// The first offset of each partition whose record timestamp is at or
    /// after `timestamp`; `None` where no record is that recent.
    pub async fn offsets_for_time(
        &self,
        tps: &[TopicPartition],
        timestamp: i64,
    ) -> Result<HashMap<TopicPartition, Option<i64>>, ClientError> {
        if timestamp < 0 {
            return Err(ClientError::InvalidArgument(format!("timestamp {timestamp} is negative")));
        }
        self.lookup_all(tps, timestamp).await
    }

    async fn lookup_one(&self, tp: &TopicPartition, timestamp: i64) -> Result<Option<i64>, ClientError> {
        let mut found = self.lookup_all(std::slice::from_ref(tp), timestamp).await?;
        Ok(found.remove(tp).flatten())
    }

    /// `ListOffsets` for every partition, retrying retriable failures
    /// (following leader changes) for up to the request timeout.
    async fn lookup_all(
        &self,
        tps: &[TopicPartition],
        timestamp: i64,
    ) -> Result<HashMap<TopicPartition, Option<i64>>, ClientError> {
        let deadline = Instant::now() + self.config.request_timeout;
        let mut rx = self.metadata.subscribe();
        let mut found = HashMap::new();
        let mut todo: Vec<(TopicPartition, i64)> = tps.iter().map(|tp| (tp.clone(), timestamp)).collect();
        loop {
            let metadata = rx.borrow_and_update().clone();
            let answers = list_offsets(&self.metadata, &metadata, &todo, self.config.request_timeout).await;
            let mut retry = Vec::new();
            let mut last_error = None;
            for (tp, ts) in todo {
                match answers.get(&tp) {
                    Some(Ok(offset)) => {
                        found.insert(tp, (*offset >= 0).then_some(*offset));
                    }
                    Some(Err(e)) if retriable_for(e, &metadata, &tp) => {
                        last_error = Some(e.clone());
                        retry.push((tp, ts));
                    }
                    Some(Err(e)) => return Err(e.clone()),
                    None => {
                        last_error = Some(ClientError::Other { code: 0, message: format!("no answer for {tp}") });
                        retry.push((tp, ts));
                    }
                }
            }
            if retry.is_empty() {
                return Ok(found);
            }
            if last_error.as_ref().is_some_and(ClientError::is_stale_metadata) {
                self.metadata.request_refresh();
            }
            let wake = (Instant::now() + self.config.retry_backoff).min(deadline);
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                _ = rx.changed() => {}
            }
            if Instant::now() >= deadline {
                return Err(last_error.unwrap_or_else(|| ClientError::RequestTimedOut("offset lookup".into())));
            }
            todo = retry;
        }
    }

    /// Returns the next records of the assigned, unpaused partitions:
    /// whatever is buffered at once, otherwise waits up to `timeout` for a
    /// fetch to bring some. An empty result means none arrived in time.
    ///
    /// Errors concern one partition each (corrupt data, an offset out of
    /// range under [`OffsetReset::Error`], a deleted topic); they are
    /// returned once that partition's earlier records have been, and the
    /// partition stays where it was until the application seeks.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ClientError> {
        if self.partitions.is_empty() {
            return Err(ClientError::InvalidArgument("no partitions assigned; call assign first".into()));
        }
        let deadline = Instant::now() + timeout;
        let mut metadata_open = true;
        loop {
            while let Some(joined) = self.tasks.try_join_next_with_id() {
                self.absorb(joined);
            }
            if let Some(error) = self.take_error() {
                return Err(error);
            }
            let records = self.drain_buffered();
            if !records.is_empty() {
                // Start the next fetches now, so they travel while the
                // application handles these records.
                self.start_requests();
                return Ok(records);
            }
            self.start_requests();
            if let Some(error) = self.take_error() {
                return Err(error);
            }
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            let wake = self.next_backoff_end().map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => self.absorb(joined),
                () = tokio::time::sleep_until(wake) => {}
                changed = self.metadata_rx.changed(), if metadata_open => metadata_open = changed.is_ok(),
            }
        }
    }

    /// The first pending error of a partition whose earlier records have all
    /// been returned.
    fn take_error(&mut self) -> Option<ClientError> {
        self.partitions.values_mut().find(|s| s.error.is_some() && s.buffer.is_empty()).and_then(|s| s.error.take())
    }

    /// Takes up to `max_poll_records` buffered records, partition by
    /// partition, starting after where the last poll started.
    fn drain_buffered(&mut self) -> Vec<ConsumerRecord> {
        let mut out = Vec::new();
        let limit = self.config.max_poll_records.max(1);
        let count = self.partitions.len();
        if count == 0 {
            return out;
        }
        let start = self.drain_cursor % count;
        self.drain_cursor = self.drain_cursor.wrapping_add(1);
        let (before, after): (Vec<_>, Vec<_>) = self.partitions.iter_mut().enumerate().partition(|(i, _)| *i < start);
        for (_, (_, state)) in after.into_iter().chain(before) {
            if out.len() >= limit {
                break;
            }
            if state.paused || state.buffer.is_empty() {
                continue;
            }
            let take = (limit - out.len()).min(state.buffer.len());
            out.extend(state.buffer.drain(..take));
            state.position = Some(state.buffer.front().map_or(state.buffer_end, |next| next.offset));
        }
        out
    }

    /// When the earliest failure backoff ends, to wake up and retry.
    fn next_backoff_end(&self) -> Option<Instant> {
        self.partitions.values().filter_map(|s| s.backoff_until).filter(|t| *t > Instant::now()).min()
    }

    /// Starts offset lookups for partitions without a position and fetches
    /// for partitions ready for more records.
    fn start_requests(&mut self) {
        let metadata = self.metadata_rx.borrow().clone();
        let now = Instant::now();
        self.start_resets(&metadata, now);
        self.start_fetches(&metadata, now);
    }

    fn start_resets(&mut self, metadata: &ClusterMetadata, now: Instant) {
        let mut lookups: Vec<(TopicPartition, i64)> = Vec::new();
        for (tp, state) in &mut self.partitions {
            if state.position.is_some() || state.busy || state.error.is_some() {
                continue;
            }
            if !state.may_request(now, metadata.revision) {
                continue;
            }
            match state.reset.unwrap_or(self.config.auto_offset_reset) {
                OffsetReset::Earliest => lookups.push((tp.clone(), EARLIEST_TIMESTAMP)),
                OffsetReset::Latest => lookups.push((tp.clone(), LATEST_TIMESTAMP)),
                OffsetReset::Error => {
                    state.error = Some(ClientError::NoOffset { topic: tp.topic.clone(), partition: tp.partition });
                }
            }
        }
        if lookups.is_empty() {
            return;
        }
        for (tp, _) in &lookups {
            if let Some(state) = self.partitions.get_mut(tp) {
                state.busy = true;
            }
        }
        let client = self.metadata.clone();
        let timeout = self.config.request_timeout;
        let request = lookups.clone();
        let task = self.tasks.spawn(async move {
            let metadata = client.current();
            Answer::Offsets(list_offsets(&client, &metadata, &request, timeout).await)
        });
        self.pending.insert(task.id(), Pending::Reset { offsets: lookups });
    }

    fn start_fetches(&mut self, metadata: &ClusterMetadata, now: Instant) {
        let mut by_broker: BTreeMap<String, Vec<(TopicPartition, i64)>> = BTreeMap::new();
        let mut gone = Vec::new();
        for (tp, state) in &self.partitions {
            let Some(position) = state.position else { continue };
            if state.paused || state.busy || state.error.is_some() || !state.buffer.is_empty() {
                continue;
            }
            if !state.may_request(now, metadata.revision) {
                continue;
            }
            let Some((_, addr)) = metadata.leader_for(&tp.topic, tp.partition) else {
                // Leaderless: a metadata change wakes `poll` when one is
                // elected, unless the partition is gone from the cluster
                // (a fetch that failed just before the metadata said so
                // leaves it here).
                if metadata.is_received() && metadata.partition_count(&tp.topic).is_none_or(|n| tp.partition >= n) {
                    gone.push(tp.clone());
                }
                continue;
            };
            if self.fetching.contains(addr) {
                continue;
            }
            by_broker.entry(addr.to_string()).or_default().push((tp.clone(), position));
        }
        for tp in gone {
            if let Some(state) = self.partitions.get_mut(&tp) {
                state.error =
                    Some(ClientError::UnknownTopicOrPartition(format!("{tp} is not in the cluster metadata")));
            }
        }
        for (addr, offsets) in by_broker {
            for (tp, _) in &offsets {
                if let Some(state) = self.partitions.get_mut(tp) {
                    state.busy = true;
                }
            }
            let request = FetchRequest {
                partitions: offsets
                    .iter()
                    .map(|(tp, offset)| FetchPartition {
                        topic: tp.topic.clone(),
                        partition: tp.partition,
                        fetch_offset: *offset,
                        partition_max_bytes: self.config.max_partition_fetch_bytes,
                        // No fencing by leader epoch yet.
                        current_leader_epoch: -1,
                    })
                    .collect(),
                max_wait_ms: u32::try_from(self.config.fetch_max_wait.as_millis()).unwrap_or(u32::MAX),
                min_bytes: self.config.fetch_min_bytes,
                max_bytes: self.config.fetch_max_bytes,
                replica_id: -1,
            };
            let client = self.metadata.clone();
            let timeout = self.config.fetch_max_wait + self.config.request_timeout;
            let target = addr.clone();
            let task = self.tasks.spawn(async move { Answer::Fetch(fetch(&client, &target, request, timeout).await) });
            self.fetching.insert(addr.clone());
            self.pending.insert(task.id(), Pending::Fetch { addr, offsets });
        }
    }

    /// Takes in a finished background request.
    fn absorb(&mut self, joined: Result<(TaskId, Answer), tokio::task::JoinError>) {
        let (id, answer) = match joined {
            Ok((id, answer)) => (id, Some(answer)),
            // Tasks never panic on purpose; if one did, forget what it was
            // doing so its partitions are requested again.
            Err(e) => (e.id(), None),
        };
        let Some(pending) = self.pending.remove(&id) else { return };
        let offsets = match &pending {
            Pending::Fetch { offsets, .. } | Pending::Reset { offsets } => offsets,
        };
        for (tp, _) in offsets {
            if let Some(state) = self.partitions.get_mut(tp) {
                state.busy = false;
            }
        }
        let metadata = self.metadata.current();
        let lost = || ClientError::Other { code: 0, message: "request task ended unexpectedly".into() };
        match (pending, answer) {
            (Pending::Fetch { addr, offsets }, answer) => {
                self.fetching.remove(&addr);
                let result = match answer {
                    Some(Answer::Fetch(result)) => result,
                    _ => Err(lost()),
                };
                self.apply_fetch(&offsets, result, &metadata);
            }
            (Pending::Reset { offsets }, answer) => {
                let answers = match answer {
                    Some(Answer::Offsets(answers)) => answers,
                    _ => offsets.iter().map(|(tp, _)| (tp.clone(), Err(lost()))).collect(),
                };
                self.apply_resets(&offsets, &answers, &metadata);
            }
        }
    }

    fn apply_fetch(
        &mut self,
        requested: &[(TopicPartition, i64)],
        result: Result<FetchResponse, ClientError>,
        metadata: &ClusterMetadata,
    ) {
        let now = Instant::now();
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                debug!(%error, "fetch failed");
                for (tp, offset) in requested {
                    self.partition_failed(tp, *offset, error.clone(), metadata, now);
                }
                return;
            }
        };
        let requested: HashMap<(&str, u32), i64> =
            requested.iter().map(|(tp, offset)| ((tp.topic.as_str(), tp.partition), *offset)).collect();
        for answer in response.partitions {
            let Some(&offset) = requested.get(&(answer.topic.as_str(), answer.partition)) else { continue };
            let tp = TopicPartition::new(answer.topic, answer.partition);
            if let Some(error) = ClientError::from_partition_error(answer.error.as_ref()) {
                self.partition_failed(&tp, offset, error, metadata, now);
                continue;
            }
            let Some(state) = self.partitions.get_mut(&tp) else { continue };
            // Seeked or reassigned while the fetch travelled: stale.
            if state.position != Some(offset) || !state.buffer.is_empty() {
                continue;
            }
            state.high_watermark = Some(answer.high_watermark);
            state.backoff_until = None;
            state.stale_revision = None;
            let Decoded { records, next_offset, error } =
                decode_records(&state.topic, tp.partition, answer.records, offset);
            if records.is_empty() {
                state.position = Some(next_offset);
            } else {
                state.buffer.extend(records);
                state.buffer_end = next_offset;
            }
            state.error = error;
        }
    }

    /// Handles one partition's failed fetch from `offset`.
    fn partition_failed(
        &mut self,
        tp: &TopicPartition,
        offset: i64,
        error: ClientError,
        metadata: &ClusterMetadata,
        now: Instant,
    ) {
        let backoff = self.config.retry_backoff;
        let policy = self.config.auto_offset_reset;
        let Some(state) = self.partitions.get_mut(tp) else { return };
        if state.position != Some(offset) {
            return;
        }
        match error {
            ClientError::OffsetOutOfRange { message, .. } => match state.reset.unwrap_or(policy) {
                OffsetReset::Error => {
                    state.error = Some(ClientError::OffsetOutOfRange {
                        topic: tp.topic.clone(),
                        partition: tp.partition,
                        offset,
                        message,
                    });
                }
                reset => {
                    debug!(%tp, offset, ?reset, "offset out of range; resetting");
                    state.position = None;
                    state.reset = Some(reset);
                }
            },
            error if retriable_for(&error, metadata, tp) => {
                debug!(%tp, %error, "fetch will be retried");
                state.back_off(now, backoff, &error, metadata.revision);
                if error.is_stale_metadata() {
                    self.metadata.request_refresh();
                }
            }
            error => state.error = Some(error),
        }
    }

    fn apply_resets(
        &mut self,
        requested: &[(TopicPartition, i64)],
        answers: &HashMap<TopicPartition, Result<i64, ClientError>>,
        metadata: &ClusterMetadata,
    ) {
        let now = Instant::now();
        let backoff = self.config.retry_backoff;
        let mut refresh = false;
        for (tp, _) in requested {
            let Some(state) = self.partitions.get_mut(tp) else { continue };
            if state.position.is_some() {
                // Seeked meanwhile; the seek wins.
                continue;
            }
            match answers.get(tp) {
                Some(Ok(offset)) => {
                    state.position = Some((*offset).max(0));
                    state.reset = None;
                    state.backoff_until = None;
                    state.stale_revision = None;
                }
                Some(Err(error)) if retriable_for(error, metadata, tp) => {
                    refresh |= error.is_stale_metadata();
                    state.back_off(now, backoff, error, metadata.revision);
                }
                Some(Err(error)) => state.error = Some(error.clone()),
                None => {
                    let error = ClientError::Other { code: 0, message: format!("no offset answer for {tp}") };
                    state.back_off(now, backoff, &error, metadata.revision);
                }
            }
        }
        if refresh {
            self.metadata.request_refresh();
        }
    }
}

/// Whether `error` for `tp` is worth retrying. `UNKNOWN_TOPIC_OR_PARTITION`
/// is, while the metadata still lists the partition (the broker has not
/// caught up with a new topic yet).
fn retriable_for(error: &ClientError, metadata: &ClusterMetadata, tp: &TopicPartition) -> bool {
    match error {
        ClientError::UnknownTopicOrPartition(_) => {
            metadata.partition_count(&tp.topic).is_some_and(|n| tp.partition < n)
        }
        e => e.is_retriable(),
    }
}

/// One `Fetch` call to `addr`.
async fn fetch(
    metadata: &MetadataClient,
    addr: &str,
    request: FetchRequest,
    timeout: Duration,
) -> Result<FetchResponse, ClientError> {
    let mut client = metadata.broker_client(addr)?;
    match tokio::time::timeout(timeout, client.fetch(request)).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(ClientError::from_status(&status, addr)),
        Err(_) => Err(ClientError::RequestTimedOut(format!("no fetch answer from {addr} within {timeout:?}"))),
    }
}

/// The per-partition outcomes of a `ListOffsets` answer.
fn offsets_by_partition(response: ListOffsetsResponse) -> HashMap<TopicPartition, Result<i64, ClientError>> {
    response
        .partitions
        .into_iter()
        .map(|p| {
            let outcome = match ClientError::from_partition_error(p.error.as_ref()) {
                Some(error) => Err(error),
                None => Ok(p.offset),
            };
            (TopicPartition::new(p.topic, p.partition), outcome)
        })
        .collect()
}

/// `ListOffsets` for each (partition, timestamp), one call per leader, all
/// at once. Every partition asked about gets an outcome.
async fn list_offsets(
    client: &MetadataClient,
    metadata: &ClusterMetadata,
    requests: &[(TopicPartition, i64)],
    timeout: Duration,
) -> HashMap<TopicPartition, Result<i64, ClientError>> {
    let mut outcomes = HashMap::new();
    let mut by_broker: BTreeMap<String, Vec<&(TopicPartition, i64)>> = BTreeMap::new();
    for request in requests {
        let (tp, _) = request;
        match metadata.leader_for(&tp.topic, tp.partition) {
            Some((_, addr)) => by_broker.entry(addr.to_string()).or_default().push(request),
            None => {
                let error = if metadata.is_received() && metadata.partition_count(&tp.topic).is_none() {
                    ClientError::UnknownTopicOrPartition(format!("{tp} is not in the cluster metadata"))
                } else {
                    ClientError::LeaderNotAvailable(format!("{tp} has no leader"))
                };
                outcomes.insert(tp.clone(), Err(error));
            }
        }
    }
    let calls = by_broker.into_iter().map(|(addr, requests)| async move {
        let request = ListOffsetsRequest {
            partitions: requests
                .iter()
                .map(|(tp, timestamp)| ListOffsetsPartition {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    timestamp: *timestamp,
                })
                .collect(),
        };
        let result = match client.broker_client(&addr) {
            Ok(mut rpc) => match tokio::time::timeout(timeout, rpc.list_offsets(request)).await {
                Ok(Ok(response)) => Ok(response.into_inner()),
                Ok(Err(status)) => Err(ClientError::from_status(&status, &addr)),
                Err(_) => Err(ClientError::RequestTimedOut(format!("no offsets from {addr} within {timeout:?}"))),
            },
            Err(e) => Err(e),
        };
        (requests, result)
    });
    for (requests, result) in futures::future::join_all(calls).await {
        match result {
            Ok(response) => outcomes.extend(offsets_by_partition(response)),
            Err(error) => outcomes.extend(requests.iter().map(|(tp, _)| (tp.clone(), Err(error.clone())))),
        }
    }
    outcomes
}
