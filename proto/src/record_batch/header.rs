use super::layout::*;
use super::{BatchError, Compression, MAGIC_V2};

const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_TIMESTAMP_TYPE: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

/// The smallest possible encoded record (length, attributes, timestamp delta,
/// offset delta, key length, value length, header count: one byte each).
/// Used to reject record counts an uncompressed payload cannot possibly hold.
const MIN_RECORD_SIZE: usize = 7;

/// Which clock a batch's timestamps come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// Set by the producer.
    CreateTime,
    /// Overwritten by the broker on append; readers use `max_timestamp` for
    /// every record of the batch.
    LogAppendTime,
}

/// The fixed 61-byte header of a v2 batch, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

impl BatchHeader {
    /// Decodes the fixed header and checks what can be checked without the
    /// body: length field, magic. Does not look at the CRC, so it is cheap
    /// enough for scanning stored batches on the read path.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        if bytes.len() < LOG_OVERHEAD {
            return Err(BatchError::Truncated { needed: HEADER_SIZE, available: bytes.len() });
        }
        let batch_length = be_i32(bytes, BATCH_LENGTH);
        if batch_length < MIN_BATCH_LENGTH {
            return Err(BatchError::InvalidLength(batch_length));
        }
        if bytes.len() <= MAGIC {
            return Err(BatchError::Truncated { needed: HEADER_SIZE, available: bytes.len() });
        }
        // Legacy v0/v1 messages keep their magic at the same offset 16, so a
        // client speaking an old format gets a precise answer.
        let magic = bytes[MAGIC] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::BadMagic(magic));
        }
        if bytes.len() < HEADER_SIZE {
            return Err(BatchError::Truncated { needed: HEADER_SIZE, available: bytes.len() });
        }
        Ok(BatchHeader {
            base_offset: be_i64(bytes, BASE_OFFSET),
            batch_length,
            partition_leader_epoch: be_i32(bytes, PARTITION_LEADER_EPOCH),
            magic,
            crc: be_i32(bytes, CRC) as u32,
            attributes: be_i16(bytes, ATTRIBUTES),
            last_offset_delta: be_i32(bytes, LAST_OFFSET_DELTA),
            base_timestamp: be_i64(bytes, BASE_TIMESTAMP),
            max_timestamp: be_i64(bytes, MAX_TIMESTAMP),
            producer_id: be_i64(bytes, PRODUCER_ID),
            producer_epoch: be_i16(bytes, PRODUCER_EPOCH),
            base_sequence: be_i32(bytes, BASE_SEQUENCE),
            records_count: be_i32(bytes, RECORDS_COUNT),
        })
    }

    /// Total size of the batch on the wire and on disk.
    pub fn size(&self) -> usize {
        // batch_length >= MIN_BATCH_LENGTH > 0 is checked by `parse`.
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    /// Offset of the batch's last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset.saturating_add(i64::from(self.last_offset_delta))
    }

    /// Offset right after the batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }

    pub fn compression(&self) -> Result<Compression, BatchError> {
        Compression::from_id((self.attributes & ATTR_COMPRESSION_MASK) as u8)
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & ATTR_TIMESTAMP_TYPE != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    pub(crate) fn compose_attributes(
        compression: Compression,
        timestamp_type: TimestampType,
        transactional: bool,
        control: bool,
    ) -> i16 {
        let mut a = i16::from(compression.id());
        if timestamp_type == TimestampType::LogAppendTime {
            a |= ATTR_TIMESTAMP_TYPE;
        }
        if transactional {
            a |= ATTR_TRANSACTIONAL;
        }
        if control {
            a |= ATTR_CONTROL;
        }
        a
    }
}

/// Fully checks the batch at the start of `bytes`: header, size limit, CRC,
/// codec and record count. Bytes after the batch are ignored; the returned
/// header's [`BatchHeader::size`] says where the batch ends.
///
/// The count rules are those Kafka applies to produced batches: at least one
/// record, and `lastOffsetDelta == recordsCount - 1` (offsets contiguous).
pub fn validate(bytes: &[u8], max_size: usize) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(bytes)?;
    let size = header.size();
    if size > max_size {
        return Err(BatchError::TooLarge { size, max: max_size });
    }
    if bytes.len() < size {
        return Err(BatchError::Truncated { needed: size, available: bytes.len() });
    }
    let computed = crc32c::crc32c(&bytes[ATTRIBUTES..size]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch { stored: header.crc, computed });
    }
    let compression = header.compression()?;
    let count = header.records_count;
    let bad_count = BatchError::InvalidRecordCount { count, last_offset_delta: header.last_offset_delta };
    if count <= 0 || i64::from(header.last_offset_delta) != i64::from(count) - 1 {
        return Err(bad_count);
    }
    if compression == Compression::None && (count as usize) > (size - HEADER_SIZE) / MIN_RECORD_SIZE {
        return Err(bad_count);
    }
    Ok(header)
}

fn need(batch: &[u8], len: usize) -> Result<(), BatchError> {
    if batch.len() < len {
        return Err(BatchError::Truncated { needed: len, available: batch.len() });
    }
    Ok(())
}

/// Rewrites the base offset. It lies outside the CRC, so no recomputation:
/// this is how a broker assigns offsets without touching the records.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) -> Result<(), BatchError> {
    need(batch, HEADER_SIZE)?;
    batch[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
    Ok(())
}

/// Rewrites the partition leader epoch (also outside the CRC).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) -> Result<(), BatchError> {
    need(batch, HEADER_SIZE)?;
    batch[PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4].copy_from_slice(&epoch.to_be_bytes());
    Ok(())
}

/// Stamps the batch with the broker's clock: sets the timestamp-type bit and
/// `maxTimestamp`, then recomputes the CRC, since both are CRC-covered.
pub fn set_log_append_time(batch: &mut [u8], timestamp: i64) -> Result<(), BatchError> {
    let header = BatchHeader::parse(batch)?;
    let size = header.size();
    need(batch, size)?;
    let attributes = header.attributes | ATTR_TIMESTAMP_TYPE;
    batch[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&timestamp.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES..size]);
    batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// Rewrites the idempotent-producer identity (`producerId`, `producerEpoch`,
/// `baseSequence`) and recomputes the CRC, since all three are CRC-covered.
/// The result is byte for byte what the builder would have produced with
/// that identity. This is how a producer re-stamps a batch it built under an
/// identity it has since replaced, without re-encoding the records.
pub fn set_producer_state(
    batch: &mut [u8],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Result<(), BatchError> {
    let header = BatchHeader::parse(batch)?;
    let size = header.size();
    need(batch, size)?;
    batch[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&producer_id.to_be_bytes());
    batch[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&producer_epoch.to_be_bytes());
    batch[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES..size]);
    batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}
