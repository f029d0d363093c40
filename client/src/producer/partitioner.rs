//! Choosing a partition for a record.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Picks the partition of records sent without an explicit partition.
pub trait Partitioner: Send + Sync {
    /// The partition, in `0..partition_count`, of a record with this key.
    /// `partition_count` is at least 1 when called by the accumulator.
    fn partition(&self, topic: &str, key: Option<&[u8]>, partition_count: u32) -> u32;

    /// The batch collecting records for `partition` is complete: full, or
    /// handed to the sender. Sticky partitioners move on to another
    /// partition here.
    fn on_batch_complete(&self, topic: &str, partition: u32) {
        let _ = (topic, partition);
    }
}

/// Kafka's partition of a keyed record:
/// `Utils.toPositive(Utils.murmur2(key)) % numPartitions`. Returns 0 when
/// there are no partitions rather than dividing by zero.
pub fn murmur2_partition(key: &[u8], partition_count: u32) -> u32 {
    if partition_count == 0 {
        return 0;
    }
    to_positive(murmur2::murmur2(key, murmur2::KAFKA_SEED)) % partition_count
}

/// Kafka's `Utils.toPositive` clears the sign bit; it is not `abs`, and the
/// difference changes the partition of every key with a negative hash.
fn to_positive(hash: u32) -> u32 {
    hash & 0x7fff_ffff
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded maps stay consistent even if a holder panicked: every
    // update is a single insert.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A uniformly random partition other than `previous` (when there is one).
fn random_other(rng: &mut StdRng, previous: Option<u32>, partition_count: u32) -> u32 {
    match previous {
        Some(prev) if partition_count > 1 && prev < partition_count => {
            let r = rng.random_range(0..partition_count - 1);
            if r >= prev { r + 1 } else { r }
        }
        _ if partition_count == 0 => 0,
        _ => rng.random_range(0..partition_count),
    }
}

#[derive(Debug, Clone, Copy)]
struct Sticky {
    partition: u32,
    /// Its batch completed; the next keyless record picks another partition.
    retired: bool,
}

#[derive(Debug)]
struct StickyState {
    rng: StdRng,
    topics: HashMap<String, Sticky>,
}

/// Kafka's default partitioner: murmur2 of the key for keyed records; for
/// keyless records, one partition per topic until its batch completes, then
/// a different random one. Sticking fills whole batches instead of spreading
/// tiny ones over every partition, which is what keeps keyless latency low.
#[derive(Debug)]
pub struct DefaultPartitioner {
    sticky: Mutex<StickyState>,
}

impl Default for DefaultPartitioner {
    fn default() -> Self {
        DefaultPartitioner::new()
    }
}

impl DefaultPartitioner {
    /// A partitioner whose keyless choices are seeded from the OS.
    pub fn new() -> DefaultPartitioner {
        DefaultPartitioner::from_rng(StdRng::from_os_rng())
    }

    /// A partitioner whose keyless choices are reproducible.
    pub fn with_seed(seed: u64) -> DefaultPartitioner {
        DefaultPartitioner::from_rng(StdRng::seed_from_u64(seed))
    }

    fn from_rng(rng: StdRng) -> DefaultPartitioner {
        DefaultPartitioner { sticky: Mutex::new(StickyState { rng, topics: HashMap::new() }) }
    }

    fn sticky_partition(&self, topic: &str, partition_count: u32) -> u32 {
        let mut guard = lock(&self.sticky);
        let state = &mut *guard;
        match state.topics.get_mut(topic) {
            Some(s) if !s.retired && s.partition < partition_count => s.partition,
            Some(s) => {
                let previous = s.retired.then_some(s.partition);
                let next = random_other(&mut state.rng, previous, partition_count);
                *s = Sticky { partition: next, retired: false };
                next
            }
            None => {
                let next = random_other(&mut state.rng, None, partition_count);
                state.topics.insert(topic.to_owned(), Sticky { partition: next, retired: false });
                next
            }
        }
    }
}

impl Partitioner for DefaultPartitioner {
    fn partition(&self, topic: &str, key: Option<&[u8]>, partition_count: u32) -> u32 {
        match key {
            Some(key) => murmur2_partition(key, partition_count),
            None => self.sticky_partition(topic, partition_count),
        }
    }

    fn on_batch_complete(&self, topic: &str, partition: u32) {
        // Retire lazily: the new choice needs the partition count, which the
        // next `partition` call brings.
        if let Some(s) = lock(&self.sticky).topics.get_mut(topic)
            && s.partition == partition
        {
            s.retired = true;
        }
    }
}

/// Kafka's `RoundRobinPartitioner`: cycles through the partitions of each
/// topic, ignoring keys.
#[derive(Debug, Default)]
pub struct RoundRobinPartitioner {
    counters: Mutex<HashMap<String, u32>>,
}

impl RoundRobinPartitioner {
    pub fn new() -> RoundRobinPartitioner {
        RoundRobinPartitioner::default()
    }
}

impl Partitioner for RoundRobinPartitioner {
    fn partition(&self, topic: &str, _key: Option<&[u8]>, partition_count: u32) -> u32 {
        if partition_count == 0 {
            return 0;
        }
        let mut counters = lock(&self.counters);
        let counter = match counters.get_mut(topic) {
            Some(c) => c,
            None => counters.entry(topic.to_owned()).or_insert(0),
        };
        let next = *counter;
        *counter = counter.wrapping_add(1);
        next % partition_count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's `UtilsTest.testMurmur2`: key and the signed 32-bit hash Java
    /// computes for it.
    const KAFKA_VECTORS: [(&str, i32); 6] = [
        ("21", -973_932_308),
        ("foobar", -790_332_482),
        ("a-little-bit-long-string", -985_981_536),
        ("a-little-bit-longer-string", -1_486_304_829),
        ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
        ("abc", 479_470_107),
    ];

    const COUNTS: [u32; 9] = [1, 2, 3, 6, 7, 10, 16, 100, 1000];

    /// Partitions for `COUNTS`, worked out from the hashes above outside
    /// this code base.
    const EXPECTED: [[u32; 9]; 6] = [
        [0, 0, 0, 0, 3, 0, 12, 40, 340],
        [0, 0, 0, 0, 0, 6, 14, 66, 166],
        [0, 0, 2, 2, 1, 2, 0, 12, 112],
        [0, 1, 2, 5, 0, 9, 3, 19, 819],
        [0, 1, 2, 5, 3, 7, 13, 77, 677],
        [0, 1, 0, 3, 4, 7, 11, 7, 107],
    ];

    #[test]
    fn murmur2_crate_matches_kafka_vectors() {
        for (key, hash) in KAFKA_VECTORS {
            assert_eq!(murmur2::murmur2(key.as_bytes(), murmur2::KAFKA_SEED) as i32, hash, "key {key}");
        }
    }

    #[test]
    fn keyed_partition_table_matches_kafka() {
        let p = DefaultPartitioner::with_seed(1);
        for (row, (key, hash)) in KAFKA_VECTORS.iter().enumerate() {
            // toPositive(h) for a negative h is h + 2^31 (sign bit cleared).
            let positive = if *hash < 0 { i64::from(*hash) + (1i64 << 31) } else { i64::from(*hash) };
            for (col, &n) in COUNTS.iter().enumerate() {
                let by_hand = positive % i64::from(n);
                assert_eq!(i64::from(EXPECTED[row][col]), by_hand, "table entry {key} / {n}");
                assert_eq!(murmur2_partition(key.as_bytes(), n), EXPECTED[row][col], "{key} / {n}");
                assert_eq!(p.partition("t", Some(key.as_bytes()), n), EXPECTED[row][col], "{key} / {n}");
            }
        }
    }

    #[test]
    fn keyed_partition_ignores_batch_completion() {
        let p = DefaultPartitioner::with_seed(7);
        let before = p.partition("t", Some(b"foobar"), 16);
        p.on_batch_complete("t", before);
        assert_eq!(p.partition("t", Some(b"foobar"), 16), before);
        assert_eq!(before, 14);
    }

    #[test]
    fn zero_partitions_do_not_panic() {
        assert_eq!(murmur2_partition(b"k", 0), 0);
        assert_eq!(DefaultPartitioner::with_seed(1).partition("t", None, 0), 0);
        assert_eq!(RoundRobinPartitioner::new().partition("t", None, 0), 0);
    }

    #[test]
    fn sticky_sticks_until_its_batch_completes() {
        let p = DefaultPartitioner::with_seed(42);
        let first = p.partition("t", None, 8);
        for _ in 0..100 {
            assert_eq!(p.partition("t", None, 8), first);
        }
        // Completion of some other partition's batch changes nothing.
        p.on_batch_complete("t", (first + 1) % 8);
        p.on_batch_complete("other", first);
        assert_eq!(p.partition("t", None, 8), first);

        p.on_batch_complete("t", first);
        let second = p.partition("t", None, 8);
        assert_ne!(second, first);
        assert_eq!(p.partition("t", None, 8), second);
    }

    #[test]
    fn sticky_visits_every_partition_and_never_repeats() {
        let p = DefaultPartitioner::with_seed(3);
        let mut seen = [false; 4];
        let mut previous = p.partition("t", None, 4);
        seen[previous as usize] = true;
        for _ in 0..200 {
            p.on_batch_complete("t", previous);
            let next = p.partition("t", None, 4);
            assert_ne!(next, previous);
            assert!(next < 4);
            seen[next as usize] = true;
            previous = next;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn sticky_with_one_partition_stays_put() {
        let p = DefaultPartitioner::with_seed(5);
        assert_eq!(p.partition("t", None, 1), 0);
        p.on_batch_complete("t", 0);
        assert_eq!(p.partition("t", None, 1), 0);
    }

    #[test]
    fn sticky_choice_outside_a_smaller_count_is_redrawn() {
        let p = DefaultPartitioner::with_seed(11);
        let mut wide = p.partition("t", None, 1000);
        while wide < 10 {
            p.on_batch_complete("t", wide);
            wide = p.partition("t", None, 1000);
        }
        assert!(p.partition("t", None, 10) < 10);
    }

    #[test]
    fn round_robin_cycles_per_topic_and_ignores_keys() {
        let p = RoundRobinPartitioner::new();
        let a: Vec<u32> = (0..7).map(|_| p.partition("a", Some(b"same"), 3)).collect();
        assert_eq!(a, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(p.partition("b", None, 3), 0);
        assert_eq!(p.partition("a", None, 3), 1);
    }
}
