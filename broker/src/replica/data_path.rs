//! Produce, fetch and list offsets on the partitions this broker leads.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;

use super::ReplicaManager;
use super::error::ReplicaError;
use super::partition::{Appended, Partition, ReadBound};
use super::types::{
    Acks, EpochEndResult, EpochQuery, FetchParams, FetchPartition, FetchResult, FetchedData, ListOffsetsInput,
    ListOffsetsResult, ProduceInput, ProduceResult,
};

type Resolved = Result<Arc<Partition>, ReplicaError>;

impl ReplicaManager {
    /// Appends each partition's batches on this leader and answers per
    /// `acks`. Results come in the order of `inputs`. A partition whose
    /// records hold any invalid batch appends nothing.
    ///
    /// `timeout` bounds the wait for the in-sync replicas under acks=all.
    pub async fn produce(&self, acks: Acks, timeout: Duration, inputs: Vec<ProduceInput>) -> Vec<ProduceResult> {
        let deadline = Instant::now() + timeout;
        let bytes_in: usize = inputs.iter().map(|i| i.records.len()).sum();
        metrics::counter!("strata_broker_bytes_in_total").increment(bytes_in as u64);
        let ids: Vec<(String, u32)> = inputs.iter().map(|i| (i.topic.clone(), i.partition)).collect();
        // A leader that cannot prove its ensemble session is still alive
        // may already have been replaced: it takes no writes at all, so two
        // leaders never accept writes for one partition.
        let fenced = !self.lease_valid();
        let jobs: Vec<(Bytes, Resolved)> = inputs
            .into_iter()
            .map(|i| {
                let p = self.leader_partition(&i.topic, i.partition);
                let p = match p {
                    Ok(_) if fenced => {
                        Err(ReplicaError::LeaderNotAvailable { topic: i.topic.clone(), partition: i.partition })
                    }
                    other => other,
                };
                (i.records, p)
            })
            .collect();
        let require_full_isr = acks == Acks::All;
        // Validation (CRC over every byte) and the appends are blocking work.
        let appended = tokio::task::spawn_blocking(move || {
            jobs.into_iter()
                .map(|(records, partition)| {
                    let p = partition?;
                    let appended = p.append_as_leader(&records, require_full_isr)?;
                    Ok((appended, Arc::downgrade(&p)))
                })
                .collect::<Vec<Result<(Appended, Weak<Partition>), ReplicaError>>>()
        })
        .await;
        let appended = match appended {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "produce task failed");
                let e = ReplicaError::Storage(format!("append task failed: {e}"));
                ids.iter().map(|_| Err(e.clone())).collect()
            }
        };
        let mut results = Vec::with_capacity(ids.len());
        for ((topic, partition), outcome) in ids.into_iter().zip(appended) {
            let outcome = match outcome {
                Ok((a, weak)) => {
                    metrics::counter!("strata_broker_records_in_total")
                        .increment(a.end_offset.saturating_sub(a.info.base_offset));
                    if acks == Acks::All {
                        self.await_high_watermark(&topic, partition, &weak, &a, deadline).await.map(|()| a.info)
                    } else {
                        Ok(a.info)
                    }
                }
                Err(e) => Err(self.with_leader_hint(e)),
            };
            results.push(ProduceResult { topic, partition, outcome });
        }
        results
    }

    /// acks=all: waits until the high watermark covers the append, for as
    /// long as this broker stays leader in the same epoch.
    async fn await_high_watermark(
        &self,
        topic: &str,
        partition: u32,
        weak: &Weak<Partition>,
        appended: &Appended,
        deadline: Instant,
    ) -> Result<(), ReplicaError> {
        let Some(mut changes) = weak.upgrade().map(|p| p.subscribe()) else {
            return Err(self.leadership_error(topic, partition));
        };
        loop {
            // Checked after subscribing, so no change can slip between the
            // check and the wait.
            match weak.upgrade() {
                Some(p) if p.is_leader_in(appended.leader_epoch) => {
                    if p.high_watermark() >= appended.end_offset {
                        // Kafka's rule: a write the ISR covers only because
                        // the ISR shrank below the minimum is not safe.
                        let (isr, min) = p.isr_size_and_min();
                        if isr < min {
                            return Err(ReplicaError::NotEnoughReplicasAfterAppend { isr, min });
                        }
                        if !self.lease_valid() {
                            return Err(ReplicaError::LeaderNotAvailable { topic: topic.to_string(), partition });
                        }
                        return Ok(());
                    }
                }
                _ => return Err(self.leadership_error(topic, partition)),
            }
            tokio::select! {
                // An error means the partition is gone: the next check says so.
                _ = changes.changed() => {}
                () = tokio::time::sleep_until(deadline) => return Err(ReplicaError::RequestTimedOut),
            }
        }
    }

    /// Reads from the partitions this broker leads. Answers at once when at
    /// least `min_bytes` are available or any partition failed; otherwise
    /// waits for an append to one of them, or until `max_wait` (capped by
    /// the config) passes, and answers with what there is then.
    pub async fn fetch(&self, params: FetchParams, partitions: Vec<FetchPartition>) -> Vec<FetchResult> {
        let deadline = Instant::now() + params.max_wait.min(self.config.max_fetch_wait);
        let requests = Arc::new(partitions);
        let mut first_pass = true;
        loop {
            let resolved: Vec<Resolved> =
                requests.iter().map(|r| self.leader_partition(&r.topic, r.partition)).collect();
            // Subscribe before reading: an append during the read then
            // still wakes the wait below.
            let mut changes: Vec<watch::Receiver<u64>> =
                resolved.iter().filter_map(|p| p.as_ref().ok()).map(|p| p.subscribe()).collect();
            let results = self.read_pass(&requests, resolved, params).await;
            if first_pass && params.replica_id >= 0 {
                // A follower's fetch offset is its log end: the leader's
                // only news of its progress.
                self.record_follower_fetches(params.replica_id, &requests, &results);
            }
            first_pass = false;
            let mut bytes = 0;
            let mut failed = false;
            for r in &results {
                match &r.outcome {
                    Ok(d) => bytes += d.records.len(),
                    Err(_) => failed = true,
                }
            }
            if failed || bytes >= params.min_bytes || changes.is_empty() || Instant::now() >= deadline {
                return results;
            }
            tokio::select! {
                () = any_changed(&mut changes) => {}
                // Nothing changed since the read: its results are current.
                () = tokio::time::sleep_until(deadline) => return results,
            }
        }
    }

    /// One read of every requested partition, within the byte limits.
    async fn read_pass(
        &self,
        requests: &Arc<Vec<FetchPartition>>,
        resolved: Vec<Resolved>,
        params: FetchParams,
    ) -> Vec<FetchResult> {
        let bound = if params.replica_id >= 0 { ReadBound::LogEnd } else { ReadBound::HighWatermark };
        let reqs = Arc::clone(requests);
        let read = tokio::task::spawn_blocking(move || read_all(&reqs, resolved, params, bound)).await;
        let outcomes = match read {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "fetch task failed");
                let e = ReplicaError::Storage(format!("read task failed: {e}"));
                requests.iter().map(|_| Err(e.clone())).collect()
            }
        };
        requests
            .iter()
            .zip(outcomes)
            .map(|(r, outcome)| FetchResult {
                topic: r.topic.clone(),
                partition: r.partition,
                outcome: outcome.map_err(|e| self.with_leader_hint(e)),
            })
            .collect()
    }

    /// ListOffsets on partitions this broker leads, in the order asked.
    pub async fn list_offsets(&self, inputs: Vec<ListOffsetsInput>) -> Vec<ListOffsetsResult> {
        let jobs: Vec<(i64, Resolved)> =
            inputs.iter().map(|i| (i.timestamp, self.leader_partition(&i.topic, i.partition))).collect();
        // Timestamp lookups read index files.
        let looked_up = tokio::task::spawn_blocking(move || {
            jobs.into_iter().map(|(ts, p)| p.and_then(|p| p.offset_for(ts))).collect::<Vec<_>>()
        })
        .await;
        let outcomes = match looked_up {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "list offsets task failed");
                let e = ReplicaError::Storage(format!("lookup task failed: {e}"));
                inputs.iter().map(|_| Err(e.clone())).collect()
            }
        };
        inputs
            .into_iter()
            .zip(outcomes)
            .map(|(i, outcome)| ListOffsetsResult {
                topic: i.topic,
                partition: i.partition,
                outcome: outcome.map_err(|e| self.with_leader_hint(e)),
            })
            .collect()
    }

    /// OffsetForLeaderEpoch on partitions this broker leads.
    pub async fn offsets_for_leader_epoch(&self, queries: Vec<EpochQuery>) -> Vec<EpochEndResult> {
        let ids: Vec<(String, u32)> = queries.iter().map(|q| (q.topic.clone(), q.partition)).collect();
        let jobs: Vec<(EpochQuery, Resolved)> = queries
            .into_iter()
            .map(|q| {
                let p = self.leader_partition(&q.topic, q.partition);
                (q, p)
            })
            .collect();
        let looked_up = tokio::task::spawn_blocking(move || {
            jobs.into_iter()
                .map(|(q, p)| {
                    let outcome = p.and_then(|p| p.leader_end_offset_for_epoch(q.leader_epoch, q.current_leader_epoch));
                    (q, outcome)
                })
                .collect::<Vec<_>>()
        })
        .await;
        match looked_up {
            Ok(v) => v
                .into_iter()
                .map(|(q, outcome)| EpochEndResult {
                    topic: q.topic,
                    partition: q.partition,
                    outcome: outcome.map_err(|e| self.with_leader_hint(e)),
                })
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "epoch lookup task failed");
                let e = ReplicaError::Storage(format!("lookup task failed: {e}"));
                ids.into_iter()
                    .map(|(topic, partition)| EpochEndResult { topic, partition, outcome: Err(e.clone()) })
                    .collect()
            }
        }
    }

    /// Long-polls parked on a partition (tests synchronize on it instead of
    /// sleeping).
    #[cfg(test)]
    pub(crate) fn fetch_waiters(&self, topic: &str, partition: u32) -> usize {
        self.partition(&crate::log::TopicPartition::new(topic, partition)).map_or(0, |p| p.waiters())
    }
}

/// Reads every partition, Kafka-style: each within its own limit and what
/// is left of the response's, except that the first partition with data
/// returns at least one whole batch even if larger, so a consumer can
/// always make progress. Blocking.
fn read_all(
    requests: &[FetchPartition],
    resolved: Vec<Resolved>,
    params: FetchParams,
    bound: ReadBound,
) -> Vec<Result<FetchedData, ReplicaError>> {
    let mut remaining = params.max_bytes;
    let mut have_data = false;
    let mut out = Vec::with_capacity(requests.len());
    for (req, partition) in requests.iter().zip(resolved) {
        let outcome = partition.and_then(|p| {
            let limit = req.partition_max_bytes.min(remaining);
            if have_data && limit == 0 {
                // Response full: report offsets only.
                return p.read(req.offset, None, bound, params.replica_id, req.current_leader_epoch);
            }
            let mut data = p.read(req.offset, Some(limit), bound, params.replica_id, req.current_leader_epoch)?;
            if have_data && data.records.len() > limit {
                // Log::read always returns one whole batch; past the first
                // partition with data, one that does not fit is left out.
                data.records = Bytes::new();
            }
            Ok(data)
        });
        if let Ok(d) = &outcome
            && !d.records.is_empty()
        {
            have_data = true;
            remaining = remaining.saturating_sub(d.records.len());
        }
        out.push(outcome);
    }
    out
}

/// Resolves once any receiver sees a change (or its sender is gone).
async fn any_changed(changes: &mut [watch::Receiver<u64>]) {
    let mut waits: Vec<Pin<Box<dyn Future<Output = ()> + Send + '_>>> = changes
        .iter_mut()
        .map(|rx| {
            Box::pin(async move {
                // Err: the partition was removed; wake up to find out.
                let _ = rx.changed().await;
            }) as Pin<Box<dyn Future<Output = ()> + Send + '_>>
        })
        .collect();
    if waits.is_empty() {
        return std::future::pending().await;
    }
    poll_fn(|cx| {
        for w in &mut waits {
            if w.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await
}
