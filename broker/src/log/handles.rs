//! A broker-wide bound on open segment files and maps.
//!
//! Each segment opens its `.log` file and maps its two indexes lazily, on
//! first use. [`FileBudget`] remembers which segments hold open files, in
//! least-recently-used order, and closes the oldest once more than
//! `max_open_segments` are open. That keeps a broker with 10,000 partitions
//! (several segments each) well under the process's file-descriptor limit;
//! a closed segment simply reopens on its next use.
//!
//! Locking: the budget's own mutex is held only to update the LRU list.
//! Victims are closed after it is released, with `try_lock` on their own
//! state, so two threads evicting each other's segments can never deadlock;
//! a segment busy at that moment is put back as most recently used.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// Something holding open files that can give them up.
pub(crate) trait Evictable: Send + Sync {
    /// Closes the files if they are not in use right now; true if closed.
    fn try_evict(&self) -> bool;
}

struct Lru {
    tick: u64,
    by_id: HashMap<u64, (u64, Weak<dyn Evictable>)>,
    by_tick: BTreeMap<u64, u64>,
}

/// Shared bound on segments with open files. One per broker (or per
/// [`crate::log::LogManager`]); a standalone log gets its own.
pub struct FileBudget {
    max_open_segments: usize,
    next_id: AtomicU64,
    lru: Mutex<Lru>,
}

impl std::fmt::Debug for FileBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileBudget")
            .field("max_open_segments", &self.max_open_segments)
            .field("open_segments", &self.open_segments())
            .finish()
    }
}

impl FileBudget {
    pub fn new(max_open_segments: usize) -> Arc<FileBudget> {
        Arc::new(FileBudget {
            max_open_segments: max_open_segments.max(1),
            next_id: AtomicU64::new(1),
            lru: Mutex::new(Lru { tick: 0, by_id: HashMap::new(), by_tick: BTreeMap::new() }),
        })
    }

    pub fn max_open_segments(&self) -> usize {
        self.max_open_segments
    }

    /// Segments currently holding open files (may briefly exceed the bound
    /// while a victim is busy).
    pub fn open_segments(&self) -> usize {
        self.lock().by_id.len()
    }

    fn lock(&self) -> MutexGuard<'_, Lru> {
        // A panic while holding this lock cannot leave the LRU inconsistent
        // in a way that matters (worst case a stale entry), so poisoning is
        // not fatal.
        self.lru.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn new_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn insert(lru: &mut Lru, id: u64, who: Weak<dyn Evictable>) {
        lru.tick += 1;
        let tick = lru.tick;
        if let Some((old, _)) = lru.by_id.insert(id, (tick, who)) {
            lru.by_tick.remove(&old);
        }
        lru.by_tick.insert(tick, id);
    }

    /// Records that segment `id` has open files and was just used; closes
    /// the least recently used others beyond the bound. The caller may hold
    /// its own segment lock: only other segments are evicted.
    pub(crate) fn touch(&self, id: u64, who: Weak<dyn Evictable>) {
        let victims = {
            let mut lru = self.lock();
            Self::insert(&mut lru, id, who);
            let mut victims = Vec::new();
            while lru.by_id.len() > self.max_open_segments {
                let Some((&tick, &victim)) = lru.by_tick.iter().next() else {
                    break;
                };
                if victim == id {
                    // Only ourselves left to evict: cannot happen with a
                    // bound of at least one, but never loop on it.
                    break;
                }
                lru.by_tick.remove(&tick);
                if let Some((_, w)) = lru.by_id.remove(&victim) {
                    victims.push((victim, w));
                }
            }
            victims
        };
        for (victim, w) in victims {
            if let Some(seg) = w.upgrade()
                && !seg.try_evict()
            {
                Self::insert(&mut self.lock(), victim, w);
            }
        }
    }

    /// Forgets a segment whose files were closed or deleted by its owner.
    pub(crate) fn forget(&self, id: u64) {
        let mut lru = self.lock();
        if let Some((tick, _)) = lru.by_id.remove(&id) {
            lru.by_tick.remove(&tick);
        }
    }
}
