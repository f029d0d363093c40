use bytes::{BufMut, Bytes, BytesMut};

use super::compression::{self, Compression};
use super::header::{BatchHeader, TimestampType};
use super::layout::*;
use super::varint::{put_varint, put_varlong, varint_len, varlong_len};
use super::{BatchError, MAGIC_V2, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE};

/// A record header: a string key and an optional byte value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    pub key: String,
    pub value: Option<Bytes>,
}

/// One record to put in a batch. A `None` value is a tombstone.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<RecordHeader>,
}

impl Record {
    pub fn new(timestamp: i64, key: Option<Bytes>, value: Option<Bytes>) -> Record {
        Record { timestamp, key, value, headers: Vec::new() }
    }
}

/// Encodes records into one v2 batch.
///
/// Records are encoded as they are added, so [`Self::estimated_size`] is
/// exact for uncompressed batches and an upper bound otherwise: a producer can
/// use it to close batches at `batch.size`.
#[derive(Debug, Clone)]
pub struct RecordBatchBuilder {
    compression: Compression,
    base_offset: i64,
    partition_leader_epoch: i32,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    transactional: bool,
    control: bool,
    base_timestamp: Option<i64>,
    max_timestamp: i64,
    count: i32,
    records: Vec<u8>,
}

impl RecordBatchBuilder {
    pub fn new(compression: Compression) -> RecordBatchBuilder {
        RecordBatchBuilder {
            compression,
            base_offset: 0,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            transactional: false,
            control: false,
            base_timestamp: None,
            max_timestamp: -1,
            count: 0,
            records: Vec::new(),
        }
    }

    /// Offset of the first record; brokers overwrite it, so producers leave 0.
    pub fn base_offset(mut self, base_offset: i64) -> Self {
        self.base_offset = base_offset;
        self
    }

    pub fn partition_leader_epoch(mut self, epoch: i32) -> Self {
        self.partition_leader_epoch = epoch;
        self
    }

    /// Idempotent-producer identity: the broker de-duplicates retried batches
    /// on (producer id, epoch, base sequence).
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    pub fn transactional(mut self, transactional: bool) -> Self {
        self.transactional = transactional;
        self
    }

    pub fn control(mut self, control: bool) -> Self {
        self.control = control;
        self
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the batch if built now without compression.
    pub fn estimated_size(&self) -> usize {
        HEADER_SIZE + self.records.len()
    }

    /// Size `record` would add to [`Self::estimated_size`].
    pub fn record_size(&self, record: &Record) -> usize {
        let (body, _) = self.body_len(record);
        varint_len(body as i32) + body
    }

    fn body_len(&self, record: &Record) -> (usize, i64) {
        let base = self.base_timestamp.unwrap_or(record.timestamp);
        let ts_delta = record.timestamp.wrapping_sub(base);
        let bytes_len = |b: &Option<Bytes>| match b {
            Some(b) => varint_len(b.len() as i32) + b.len(),
            None => varint_len(-1),
        };
        let mut n = 1 + varlong_len(ts_delta) + varint_len(self.count);
        n += bytes_len(&record.key) + bytes_len(&record.value);
        n += varint_len(record.headers.len() as i32);
        for h in &record.headers {
            n += varint_len(h.key.len() as i32) + h.key.len() + bytes_len(&h.value);
        }
        (n, ts_delta)
    }

    /// Appends a record; its offset delta is its position in the batch.
    pub fn push(&mut self, record: &Record) -> Result<(), BatchError> {
        let too_big = |n: usize| n > i32::MAX as usize / 2;
        for len in [record.key.as_ref().map_or(0, Bytes::len), record.value.as_ref().map_or(0, Bytes::len)] {
            if too_big(len) {
                return Err(BatchError::FieldTooLarge(len));
            }
        }
        if self.count == i32::MAX {
            return Err(BatchError::FieldTooLarge(self.count as usize));
        }
        let (body, ts_delta) = self.body_len(record);
        if too_big(body) || too_big(self.records.len() + body) {
            return Err(BatchError::FieldTooLarge(body));
        }
        let out = &mut self.records;
        out.reserve(body + 5);
        put_varint(out, body as i32);
        out.push(0); // record attributes: unused in v2
        put_varlong(out, ts_delta);
        put_varint(out, self.count);
        put_bytes(out, record.key.as_deref());
        put_bytes(out, record.value.as_deref());
        put_varint(out, record.headers.len() as i32);
        for h in &record.headers {
            put_bytes(out, Some(h.key.as_bytes()));
            put_bytes(out, h.value.as_deref());
        }
        if self.base_timestamp.is_none() {
            self.base_timestamp = Some(record.timestamp);
            self.max_timestamp = record.timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(record.timestamp);
        self.count += 1;
        Ok(())
    }

    /// Convenience for `push` of a header-less record.
    pub fn append(&mut self, timestamp: i64, key: Option<Bytes>, value: Option<Bytes>) -> Result<(), BatchError> {
        self.push(&Record::new(timestamp, key, value))
    }

    /// Encodes the batch: header, (compressed) records, CRC.
    pub fn build(&self) -> Result<Bytes, BatchError> {
        if self.count == 0 {
            return Err(BatchError::Empty);
        }
        let payload = compression::compress(self.compression, &self.records)?;
        let size = HEADER_SIZE + payload.len();
        let batch_length = i32::try_from(size - LOG_OVERHEAD).map_err(|_| BatchError::FieldTooLarge(size))?;
        let attributes = BatchHeader::compose_attributes(
            self.compression,
            TimestampType::CreateTime,
            self.transactional,
            self.control,
        );
        let mut buf = BytesMut::with_capacity(size);
        buf.put_i64(self.base_offset);
        buf.put_i32(batch_length);
        buf.put_i32(self.partition_leader_epoch);
        buf.put_i8(MAGIC_V2);
        buf.put_u32(0); // CRC, filled in below
        buf.put_i16(attributes);
        buf.put_i32(self.count - 1);
        buf.put_i64(self.base_timestamp.unwrap_or(-1));
        buf.put_i64(self.max_timestamp);
        buf.put_i64(self.producer_id);
        buf.put_i16(self.producer_epoch);
        buf.put_i32(self.base_sequence);
        buf.put_i32(self.count);
        buf.put_slice(&payload);
        let crc = crc32c::crc32c(&buf[ATTRIBUTES..]);
        buf[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
        Ok(buf.freeze())
    }
}

fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_varint(out, b.len() as i32);
            out.extend_from_slice(b);
        }
        None => put_varint(out, -1),
    }
}
