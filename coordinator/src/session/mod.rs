//! Session liveness. Deadlines live only in the leader's memory; expiry is a
//! replicated `ExpireSession` entry the leader proposes, so every member
//! deletes the same ephemerals at the same revision.
//!
//! Invariant: only a leader expires sessions, and a member that becomes
//! leader starts every session's deadline afresh with its full TTL — a
//! leader change never expires a session whose client kept heart-beating.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Inner {
    /// The term in which these deadlines were set; a new term starts over.
    term: Option<u64>,
    deadlines: HashMap<u64, Instant>,
    /// Expiries proposed but not yet applied, so they are not re-proposed
    /// every tick.
    expiring: HashSet<u64>,
}

#[derive(Default)]
pub struct SessionTracker {
    inner: Mutex<Inner>,
}

/// What the tracker decided on one tick.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tick {
    pub to_expire: Vec<u64>,
}

impl SessionTracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called periodically with the leader's term (None when not leading)
    /// and the live sessions from the namespace. Pure apart from the lock:
    /// `now` is passed in.
    pub fn tick(&self, leader_term: Option<u64>, live: &[(u64, u64)], now: Instant) -> Tick {
        let mut inner = self.lock();
        let Some(term) = leader_term else {
            *inner = Inner::default();
            return Tick::default();
        };
        if inner.term != Some(term) {
            *inner = Inner { term: Some(term), ..Inner::default() };
        }
        let live_ids: HashSet<u64> = live.iter().map(|(id, _)| *id).collect();
        inner.deadlines.retain(|id, _| live_ids.contains(id));
        inner.expiring.retain(|id| live_ids.contains(id));
        let mut to_expire = Vec::new();
        for &(id, ttl_ms) in live {
            let deadline = *inner.deadlines.entry(id).or_insert(now + Duration::from_millis(ttl_ms));
            if now >= deadline && inner.expiring.insert(id) {
                to_expire.push(id);
            }
        }
        Tick { to_expire }
    }

    /// A proposal to expire `id` failed; let a later tick try again.
    pub fn expiry_failed(&self, id: u64) {
        self.lock().expiring.remove(&id);
    }

    /// Refreshes a live session's deadline; a no-op on a member that is not
    /// leading or for a session whose expiry is already proposed.
    pub fn touch(&self, id: u64, ttl_ms: u64, now: Instant) {
        let mut inner = self.lock();
        if inner.term.is_some() && !inner.expiring.contains(&id) {
            inner.deadlines.insert(id, now + Duration::from_millis(ttl_ms));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_after_ttl_without_heartbeat() {
        let t = SessionTracker::default();
        let t0 = Instant::now();
        assert!(t.tick(Some(1), &[(7, 100)], t0).to_expire.is_empty());
        t.touch(7, 100, t0 + Duration::from_millis(80));
        assert!(t.tick(Some(1), &[(7, 100)], t0 + Duration::from_millis(150)).to_expire.is_empty());
        assert_eq!(t.tick(Some(1), &[(7, 100)], t0 + Duration::from_millis(181)).to_expire, vec![7]);
        // Proposed once, not every tick.
        assert!(t.tick(Some(1), &[(7, 100)], t0 + Duration::from_millis(300)).to_expire.is_empty());
        t.expiry_failed(7);
        assert_eq!(t.tick(Some(1), &[(7, 100)], t0 + Duration::from_millis(310)).to_expire, vec![7]);
    }

    #[test]
    fn new_leader_restarts_every_deadline() {
        let t = SessionTracker::default();
        let t0 = Instant::now();
        t.tick(Some(1), &[(7, 100)], t0);
        // Not leading: nothing expires, however late.
        assert!(t.tick(None, &[(7, 100)], t0 + Duration::from_secs(10)).to_expire.is_empty());
        let t1 = t0 + Duration::from_secs(10);
        assert!(t.tick(Some(2), &[(7, 100)], t1).to_expire.is_empty());
        assert!(t.tick(Some(2), &[(7, 100)], t1 + Duration::from_millis(99)).to_expire.is_empty());
        assert_eq!(t.tick(Some(2), &[(7, 100)], t1 + Duration::from_millis(100)).to_expire, vec![7]);
    }
}
