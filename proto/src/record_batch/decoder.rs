use bytes::Bytes;

use super::compression::{self, Compression};
use super::header::{BatchHeader, TimestampType, validate};
use super::layout::HEADER_SIZE;
use super::varint::{get_varint, get_varlong};
use super::{BatchError, DEFAULT_MAX_DECOMPRESSED_BYTES, RecordHeader};

/// A record read back from a batch, with its absolute offset and effective
/// timestamp (the batch's max timestamp under log-append time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRecord {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<RecordHeader>,
}

/// A validated batch. Keys and values of its records are zero-copy slices of
/// the batch (or of the decompressed buffer).
#[derive(Debug, Clone)]
pub struct RecordBatch {
    header: BatchHeader,
    bytes: Bytes,
}

impl RecordBatch {
    /// Validates the batch at the start of `bytes` (see [`validate`]) and
    /// keeps exactly its bytes.
    pub fn new(bytes: Bytes, max_size: usize) -> Result<RecordBatch, BatchError> {
        let header = validate(&bytes, max_size)?;
        let bytes = bytes.slice(..header.size());
        Ok(RecordBatch { header, bytes })
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Iterates the records with the default decompression cap.
    pub fn records(&self) -> Result<Records, BatchError> {
        self.records_with_limit(DEFAULT_MAX_DECOMPRESSED_BYTES)
    }

    /// Iterates the records, refusing to decompress more than
    /// `max_decompressed` bytes.
    pub fn records_with_limit(&self, max_decompressed: usize) -> Result<Records, BatchError> {
        let codec = self.header.compression()?;
        let raw = self.bytes.slice(HEADER_SIZE..);
        let payload = match codec {
            Compression::None => raw,
            codec => Bytes::from(compression::decompress(codec, &raw, max_decompressed)?),
        };
        let log_append_time = match self.header.timestamp_type() {
            TimestampType::LogAppendTime => Some(self.header.max_timestamp),
            TimestampType::CreateTime => None,
        };
        Ok(Records {
            payload,
            pos: 0,
            expected: self.header.records_count,
            seen: 0,
            base_offset: self.header.base_offset,
            base_timestamp: self.header.base_timestamp,
            log_append_time,
            done: false,
        })
    }
}

/// Iterator over a batch's records. After the first error it yields nothing
/// more; a payload with fewer or more records than the header claims ends in
/// an error.
#[derive(Debug)]
pub struct Records {
    payload: Bytes,
    pos: usize,
    expected: i32,
    seen: usize,
    base_offset: i64,
    base_timestamp: i64,
    log_append_time: Option<i64>,
    done: bool,
}

impl Records {
    fn take_bytes(&mut self, limit: usize) -> Result<Option<Bytes>, BatchError> {
        let len = get_varint(&self.payload[..limit], &mut self.pos)?;
        if len < 0 {
            return Ok(None);
        }
        let len = len as usize;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= limit)
            .ok_or(BatchError::CorruptRecord("field runs past the record"))?;
        let b = self.payload.slice(self.pos..end);
        self.pos = end;
        Ok(Some(b))
    }

    fn next_record(&mut self) -> Result<DecodedRecord, BatchError> {
        let len = get_varint(&self.payload, &mut self.pos)?;
        let len = usize::try_from(len).map_err(|_| BatchError::CorruptRecord("negative record length"))?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.payload.len())
            .ok_or(BatchError::CorruptRecord("record runs past the batch"))?;
        if self.pos >= end {
            return Err(BatchError::CorruptRecord("empty record"));
        }
        self.pos += 1; // attributes
        let ts_delta = get_varlong(&self.payload[..end], &mut self.pos)?;
        let offset_delta = get_varint(&self.payload[..end], &mut self.pos)?;
        let key = self.take_bytes(end)?;
        let value = self.take_bytes(end)?;
        let header_count = get_varint(&self.payload[..end], &mut self.pos)?;
        if header_count < 0 {
            return Err(BatchError::CorruptRecord("negative header count"));
        }
        let mut headers = Vec::new();
        for _ in 0..header_count {
            let key = self.take_bytes(end)?.ok_or(BatchError::CorruptRecord("null header key"))?;
            let key =
                String::from_utf8(key.to_vec()).map_err(|_| BatchError::CorruptRecord("header key is not UTF-8"))?;
            let value = self.take_bytes(end)?;
            headers.push(RecordHeader { key, value });
        }
        if self.pos != end {
            return Err(BatchError::CorruptRecord("record length does not match its fields"));
        }
        let timestamp = self.log_append_time.unwrap_or_else(|| self.base_timestamp.wrapping_add(ts_delta));
        Ok(DecodedRecord {
            offset: self.base_offset.wrapping_add(i64::from(offset_delta)),
            timestamp,
            key,
            value,
            headers,
        })
    }
}

impl Iterator for Records {
    type Item = Result<DecodedRecord, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.seen == self.expected.max(0) as usize {
            self.done = true;
            if self.pos != self.payload.len() {
                return Some(Err(BatchError::CorruptRecord("bytes left after the last record")));
            }
            return None;
        }
        if self.pos >= self.payload.len() {
            self.done = true;
            return Some(Err(BatchError::RecordCountMismatch { expected: self.expected, actual: self.seen }));
        }
        match self.next_record() {
            Ok(r) => {
                self.seen += 1;
                Some(Ok(r))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Splits concatenated batches (a fetch response, a segment slice).
pub fn batches(bytes: Bytes, max_size: usize) -> BatchIter {
    BatchIter { rest: bytes, max_size, done: false }
}

/// Iterator returned by [`batches`]. Stops after the first error; a partial
/// batch at the end shows up as [`BatchError::Truncated`].
#[derive(Debug)]
pub struct BatchIter {
    rest: Bytes,
    max_size: usize,
    done: bool,
}

impl Iterator for BatchIter {
    type Item = Result<RecordBatch, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.rest.is_empty() {
            return None;
        }
        match RecordBatch::new(self.rest.clone(), self.max_size) {
            Ok(batch) => {
                let _ = self.rest.split_to(batch.header().size());
                Some(Ok(batch))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
