//! Idempotent-producer sequence numbers.

/// Identity of an idempotent producer, as allocated by the cluster. Brokers
/// de-duplicate retried batches on (producer id, epoch, base sequence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProducerIdentity {
    pub producer_id: i64,
    pub epoch: i16,
}

/// The next sequence number of one partition. Each batch takes the current
/// value as its base sequence and advances it by its record count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SequenceTracker {
    next: i32,
}

impl SequenceTracker {
    /// A tracker starting at sequence 0.
    pub fn new() -> SequenceTracker {
        SequenceTracker::default()
    }

    /// The base sequence the next batch will get.
    pub fn next_sequence(&self) -> i32 {
        self.next
    }

    /// Returns the base sequence for a batch of `record_count` records and
    /// advances past it.
    pub fn assign(&mut self, record_count: u32) -> i32 {
        let base = self.next;
        self.next = increment_sequence(base, record_count);
        base
    }

    /// Starts again at 0, as a new producer id or epoch requires.
    pub fn reset(&mut self) {
        self.next = 0;
    }

    /// Moves back to `sequence`, handing out again the sequences of batches
    /// the broker refused outright. Only valid while no batch after them has
    /// taken a sequence.
    pub fn rewind(&mut self, sequence: i32) {
        self.next = sequence.max(0);
    }
}

/// Kafka's `DefaultRecordBatch.incrementSequence`: sequences live in
/// `0..=i32::MAX` and wrap to 0, which is addition modulo 2^31. Since 2^31
/// divides 2^32, a wrapping u32 sum with the top bit cleared is exactly that.
pub fn increment_sequence(sequence: i32, increment: u32) -> i32 {
    let sum = (sequence as u32).wrapping_add(increment) & 0x7fff_ffff;
    sum as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assigns_by_record_count() {
        let mut t = SequenceTracker::new();
        assert_eq!(t.assign(3), 0);
        assert_eq!(t.assign(2), 3);
        assert_eq!(t.next_sequence(), 5);
        t.reset();
        assert_eq!(t.assign(1), 0);
        assert_eq!(t.assign(4), 1);
        t.rewind(1);
        assert_eq!(t.assign(2), 1);
    }

    #[test]
    fn wraps_like_kafka() {
        // Kafka: incrementSequence(MAX - 1, 3) == 1 and (MAX, 1) == 0.
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 5, 5), i32::MAX);
        assert_eq!(increment_sequence(7, 0), 7);
    }
}
