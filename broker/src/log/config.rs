/// How often appended data is forced to disk. Replication is the main
/// durability mechanism (as in Kafka), so the default leaves it to the OS;
/// `every_batch` gives per-append durability for single-node setups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlushPolicy {
    /// fsync once this many batches are unflushed (`flush.messages`, counted
    /// in batches).
    pub every_batches: Option<u64>,
    /// fsync once the oldest unflushed data is this old (`flush.ms`); checked
    /// on append and by [`crate::log::Log::maintenance`].
    pub interval_ms: Option<i64>,
}

impl FlushPolicy {
    /// fsync before every append returns.
    pub fn every_batch() -> FlushPolicy {
        FlushPolicy { every_batches: Some(1), interval_ms: None }
    }
}

/// Which timestamp the broker keeps (`message.timestamp.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampPolicy {
    #[default]
    CreateTime,
    /// Overwrite each batch's max timestamp with the broker clock on append.
    LogAppendTime,
}

/// Per-partition storage settings, named after their Kafka topic configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would grow past this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment's first batch is this old.
    pub segment_ms: Option<i64>,
    /// `retention.ms`: delete sealed segments whose newest record is older.
    pub retention_ms: Option<i64>,
    /// `retention.bytes`: delete the oldest sealed segments while the log is
    /// larger than this.
    pub retention_bytes: Option<u64>,
    /// `index.interval.bytes`: bytes of log between two offset index entries.
    pub index_interval_bytes: u64,
    /// `segment.index.bytes`: size limit of one index file; a full index
    /// rolls the segment.
    pub max_index_bytes: u64,
    /// `max.message.bytes`: largest batch accepted.
    pub max_batch_bytes: usize,
    pub flush: FlushPolicy,
    pub timestamp: TimestampPolicy,
    /// `producer.id.expiration.ms`: forget an idempotent producer whose
    /// newest batch is older than this (by the batch's max timestamp, as in
    /// Kafka); checked by [`crate::log::Log::maintenance`].
    pub producer_id_expiration_ms: i64,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        const DAY_MS: i64 = 24 * 60 * 60 * 1000;
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: Some(7 * DAY_MS),
            retention_ms: Some(7 * DAY_MS),
            retention_bytes: None,
            index_interval_bytes: 4096,
            max_index_bytes: 10 << 20,
            // Kafka's default message.max.bytes: 1 MiB plus batch overhead.
            max_batch_bytes: 1_048_588,
            flush: FlushPolicy::default(),
            timestamp: TimestampPolicy::CreateTime,
            producer_id_expiration_ms: DAY_MS,
        }
    }
}
