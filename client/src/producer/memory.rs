//! Buffer memory (`buffer.memory`): one byte budget shared by every batch,
//! buffered or in flight.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};

use super::error::ProduceError;

/// The budget. A tokio semaphore hands released bytes to waiters in FIFO
/// order, so one large record is not starved by a stream of small ones.
#[derive(Debug)]
pub(crate) struct MemoryPool {
    permits: Semaphore,
    limit: usize,
    /// Bytes taken out of the semaphore; tracked separately because the
    /// semaphore cannot tell taken bytes from bytes promised to a waiter.
    used: AtomicUsize,
    waiters: AtomicUsize,
}

impl MemoryPool {
    pub(crate) fn new(limit: usize) -> MemoryPool {
        let limit = limit.min(Semaphore::MAX_PERMITS);
        MemoryPool { permits: Semaphore::new(limit), limit, used: AtomicUsize::new(0), waiters: AtomicUsize::new(0) }
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Someone is blocked on memory: lingering batches should go out now,
    /// since only completed batches give memory back.
    pub(crate) fn has_waiters(&self) -> bool {
        self.waiters.load(Ordering::Acquire) > 0
    }

    fn try_take(&self, bytes: usize) -> bool {
        let Ok(n) = u32::try_from(bytes) else {
            return false;
        };
        match self.permits.try_acquire_many(n) {
            Ok(permit) => {
                permit.forget();
                self.used.fetch_add(bytes, Ordering::AcqRel);
                true
            }
            Err(_) => false,
        }
    }

    pub(crate) fn release(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.used.fetch_sub(bytes, Ordering::AcqRel);
        self.permits.add_permits(bytes);
    }

    /// Fails every current and future wait with [`ProduceError::Closed`].
    pub(crate) fn close(&self) {
        self.permits.close();
    }
}

/// Counts a waiter for as long as it waits, including when its future is
/// dropped mid-wait.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(counter: &'a AtomicUsize) -> Waiting<'a> {
        counter.fetch_add(1, Ordering::AcqRel);
        Waiting(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Bytes taken from the pool but not yet given to a batch. Whatever is left
/// goes back on drop, so an append that fails or is cancelled leaks nothing.
#[derive(Debug)]
pub(crate) struct Reservation<'a> {
    pool: &'a MemoryPool,
    bytes: usize,
}

impl<'a> Reservation<'a> {
    pub(crate) fn new(pool: &'a MemoryPool) -> Reservation<'a> {
        Reservation { pool, bytes: 0 }
    }

    /// Hands `need` bytes to the caller, topping up from the pool without
    /// waiting; false if the pool is short.
    pub(crate) fn take(&mut self, need: usize) -> bool {
        if self.bytes >= need {
            self.bytes -= need;
            return true;
        }
        if self.pool.try_take(need - self.bytes) {
            self.bytes = 0;
            return true;
        }
        false
    }

    /// Undoes a `take` whose bytes ended up unused.
    pub(crate) fn give_back(&mut self, bytes: usize) {
        self.bytes += bytes;
    }

    /// Waits until this reservation holds `want` bytes, or until `deadline`
    /// (`None`: no deadline). `wakeup` is told once the wait is visible
    /// through [`MemoryPool::has_waiters`].
    pub(crate) async fn fill(
        &mut self,
        want: usize,
        max_block: Duration,
        deadline: Option<tokio::time::Instant>,
        wakeup: &Notify,
    ) -> Result<(), ProduceError> {
        let missing = want.saturating_sub(self.bytes);
        if missing == 0 {
            return Ok(());
        }
        let n =
            u32::try_from(missing).map_err(|_| ProduceError::RecordTooLarge { size: want, max: u32::MAX as usize })?;
        let _waiting = Waiting::new(&self.pool.waiters);
        wakeup.notify_one();
        let acquire = self.pool.permits.acquire_many(n);
        let acquired = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, acquire)
                .await
                .map_err(|_| ProduceError::BufferExhausted { requested: want, max_block })?,
            None => acquire.await,
        };
        acquired.map_err(|_| ProduceError::Closed)?.forget();
        self.pool.used.fetch_add(missing, Ordering::AcqRel);
        self.bytes += missing;
        Ok(())
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.pool.release(self.bytes);
    }
}
