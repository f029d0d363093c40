//! Watch registrations, events fired after apply, and a bounded history so a
//! client can resume from a revision after a reconnect.
//!
//! Invariant: a watcher receives whole revisions, in revision order, each
//! once. Registration and history replay happen under the same lock that
//! publishing takes, so nothing falls between "replayed" and "live".
//! Invariant: a watcher that cannot keep up is dropped, never silently
//! skipped; its client resumes from its last revision (or gets Compacted).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use crate::tree::{Event, path};

/// All events of one revision.
#[derive(Debug, Clone)]
pub struct RevisionEvents {
    pub revision: u64,
    pub events: Arc<Vec<Event>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    #[error("revision {requested} is compacted; the oldest resumable revision is {oldest}")]
    Compacted { requested: u64, oldest: u64 },
}

struct Watcher {
    id: u64,
    path: String,
    prefix: bool,
    /// First revision to deliver. A member that lags the revision a client
    /// asked to start from (a follower still applying the log) must not
    /// send it the older revisions it applies meanwhile.
    start: u64,
    tx: mpsc::Sender<Vec<Event>>,
}

impl Watcher {
    fn matches(&self, event: &Event) -> bool {
        if self.prefix { path::is_under(&event.path, &self.path) } else { event.path == self.path }
    }

    fn select(&self, events: &[Event]) -> Vec<Event> {
        events.iter().filter(|e| self.matches(e)).cloned().collect()
    }
}

struct Inner {
    history: VecDeque<RevisionEvents>,
    history_events: usize,
    /// Every revision >= this is complete in `history` (or not yet made).
    oldest_resumable: u64,
    current_revision: u64,
    watchers: Vec<Watcher>,
    next_id: u64,
}

pub struct WatchHub {
    inner: Mutex<Inner>,
    max_history_events: usize,
    channel_capacity: usize,
}

/// A registered watch: events replayed from history, then a live channel.
#[derive(Debug)]
pub struct Subscription {
    pub id: u64,
    /// The revision the watch starts after: replay and live events are all
    /// greater than it.
    pub start_after: u64,
    pub replay: Vec<Vec<Event>>,
    pub live: mpsc::Receiver<Vec<Event>>,
}

impl WatchHub {
    pub fn new(max_history_events: usize, channel_capacity: usize) -> Self {
        WatchHub {
            inner: Mutex::new(Inner {
                history: VecDeque::new(),
                history_events: 0,
                oldest_resumable: 1,
                current_revision: 0,
                watchers: Vec::new(),
                next_id: 1,
            }),
            max_history_events: max_history_events.max(1),
            channel_capacity: channel_capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the history half
        // updated in a way that matters more than losing watches, so keep
        // serving rather than poisoning every later caller.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called by the state machine after applying a revision.
    pub fn publish(&self, revision: u64, events: Vec<Event>) {
        let mut inner = self.lock();
        inner.current_revision = inner.current_revision.max(revision);
        if events.is_empty() {
            return;
        }
        let events = Arc::new(events);
        inner.watchers.retain(|w| {
            if revision < w.start {
                return !w.tx.is_closed();
            }
            let selected = w.select(&events);
            if selected.is_empty() {
                return !w.tx.is_closed();
            }
            // Full or closed: drop the watcher; the client resumes.
            w.tx.try_send(selected).is_ok()
        });
        inner.history_events += events.len();
        inner.history.push_back(RevisionEvents { revision, events });
        while inner.history_events > self.max_history_events && inner.history.len() > 1 {
            if let Some(old) = inner.history.pop_front() {
                inner.history_events -= old.events.len();
                inner.oldest_resumable = old.revision + 1;
            }
        }
    }

    /// Resets history after a snapshot was installed: revisions up to the
    /// snapshot are gone, and every current watcher may have missed some.
    pub fn reset(&self, revision: u64) {
        let mut inner = self.lock();
        inner.history.clear();
        inner.history_events = 0;
        inner.oldest_resumable = revision + 1;
        inner.current_revision = revision;
        inner.watchers.clear();
    }

    /// Marks where history begins after a restart rebuilt the namespace
    /// from a snapshot (before any log replay publishes).
    pub fn start_at(&self, revision: u64) {
        let mut inner = self.lock();
        if inner.history.is_empty() {
            inner.oldest_resumable = revision + 1;
            inner.current_revision = revision;
        }
    }

    pub fn subscribe(&self, watch_path: &str, prefix: bool, start_revision: u64) -> Result<Subscription, WatchError> {
        let mut inner = self.lock();
        let start = if start_revision == 0 { inner.current_revision + 1 } else { start_revision };
        if start < inner.oldest_resumable {
            return Err(WatchError::Compacted { requested: start, oldest: inner.oldest_resumable });
        }
        let (tx, live) = mpsc::channel(self.channel_capacity);
        let id = inner.next_id;
        inner.next_id += 1;
        let watcher = Watcher { id, path: watch_path.to_string(), prefix, start, tx };
        let replay = inner
            .history
            .iter()
            .filter(|r| r.revision >= start)
            .map(|r| watcher.select(&r.events))
            .filter(|v| !v.is_empty())
            .collect();
        inner.watchers.push(watcher);
        Ok(Subscription { id, start_after: start - 1, replay, live })
    }

    pub fn unsubscribe(&self, id: u64) {
        self.lock().watchers.retain(|w| w.id != id);
    }

    pub fn watcher_count(&self) -> usize {
        self.lock().watchers.len()
    }

    pub fn oldest_resumable(&self) -> u64 {
        self.lock().oldest_resumable
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{EventKind, Stat};
    use bytes::Bytes;

    fn ev(path: &str, revision: u64) -> Event {
        Event { kind: EventKind::Changed, path: path.into(), data: Bytes::new(), stat: Stat::default(), revision }
    }

    #[test]
    fn replay_then_live_without_gap_or_repeat() {
        let hub = WatchHub::new(100, 16);
        for r in 1..=5 {
            hub.publish(r, vec![ev("/a/x", r), ev("/b", r)]);
        }
        let mut sub = hub.subscribe("/a", true, 3).unwrap();
        assert_eq!(sub.start_after, 2);
        let revs: Vec<u64> = sub.replay.iter().map(|b| b[0].revision).collect();
        assert_eq!(revs, vec![3, 4, 5]);
        assert!(sub.replay.iter().all(|b| b.len() == 1 && b[0].path == "/a/x"));
        hub.publish(6, vec![ev("/a", 6)]);
        assert_eq!(sub.live.try_recv().unwrap()[0].revision, 6);
        assert!(sub.live.try_recv().is_err());
    }

    #[test]
    fn a_watch_ahead_of_this_member_skips_the_revisions_before_it() {
        let hub = WatchHub::new(100, 16);
        hub.publish(1, vec![ev("/a", 1)]);
        let mut sub = hub.subscribe("/a", false, 3).unwrap();
        assert!(sub.replay.is_empty());
        hub.publish(2, vec![ev("/a", 2)]);
        hub.publish(3, vec![ev("/a", 3)]);
        assert_eq!(sub.live.try_recv().unwrap()[0].revision, 3, "revision 2 is before the watch's start");
        assert!(sub.live.try_recv().is_err());
    }

    #[test]
    fn compacted_below_history() {
        let hub = WatchHub::new(3, 16);
        for r in 1..=10 {
            hub.publish(r, vec![ev("/a", r)]);
        }
        assert_eq!(hub.subscribe("/a", false, 7).unwrap_err(), WatchError::Compacted { requested: 7, oldest: 8 });
        assert_eq!(hub.subscribe("/a", false, 8).unwrap().replay.len(), 3);
        assert_eq!(hub.subscribe("/a", false, 0).unwrap().start_after, 10);
    }

    #[test]
    fn slow_watcher_is_dropped_not_skipped() {
        let hub = WatchHub::new(100, 2);
        let mut sub = hub.subscribe("/a", false, 0).unwrap();
        for r in 1..=3 {
            hub.publish(r, vec![ev("/a", r)]);
        }
        assert_eq!(hub.watcher_count(), 0);
        assert_eq!(sub.live.try_recv().unwrap()[0].revision, 1);
        assert_eq!(sub.live.try_recv().unwrap()[0].revision, 2);
        // Channel closed after the two it could hold: the client resumes at 3.
        assert!(matches!(sub.live.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)));
    }
}
