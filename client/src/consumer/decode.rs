//! Turning a partition's fetched bytes into records, starting at the
//! consumer's position.

use std::sync::Arc;

use bytes::Bytes;
use strata_proto::record_batch::{BatchError, batches};

use super::ConsumerRecord;
use crate::error::ClientError;

/// What one partition's fetched bytes decode to.
#[derive(Debug, Default)]
pub(crate) struct Decoded {
    pub(crate) records: Vec<ConsumerRecord>,
    /// Where the next fetch starts: past the last record returned, and past
    /// whole batches that hold nothing to return (control batches, batches
    /// already consumed). Never below the position decoded from.
    pub(crate) next_offset: i64,
    /// Decoding stopped on this; the records before it are good.
    pub(crate) error: Option<ClientError>,
}

/// Decodes the batches in `bytes` (as a `Fetch` answer carries them, whole
/// stored batches back to back), returning the records at or after
/// `position`.
///
/// A fetch starts at the batch that *contains* the position, so the first
/// batch may hold records the consumer has already seen; they are skipped.
/// The last batch may be cut short by the answer's size limit; it is
/// dropped silently and fetched again next time. A batch that cannot be
/// returned whole even once is an error, since fetching it again would get
/// the same cut.
pub(crate) fn decode_records(topic: &Arc<str>, partition: u32, bytes: Bytes, position: i64) -> Decoded {
    let mut out = Decoded { next_offset: position, ..Decoded::default() };
    for (whole_batches, item) in batches(bytes, usize::MAX).enumerate() {
        let batch = match item {
            Ok(batch) => batch,
            Err(BatchError::Truncated { .. }) if whole_batches > 0 => break,
            Err(BatchError::Truncated { needed, available }) => {
                out.error = Some(ClientError::MessageTooLarge(format!(
                    "the batch at offset {} of {topic}-{partition} needs {needed} bytes but the fetch returned \
                     {available}; raise max_partition_fetch_bytes",
                    out.next_offset
                )));
                break;
            }
            Err(e) => {
                out.error = Some(ClientError::CorruptRecord(format!(
                    "{topic}-{partition} after offset {}: {e}",
                    out.next_offset
                )));
                break;
            }
        };
        let header = *batch.header();
        if header.next_offset() <= position {
            continue;
        }
        if header.is_control() {
            // Transaction markers carry no user data.
            out.next_offset = out.next_offset.max(header.next_offset());
            continue;
        }
        let records = match batch.records() {
            Ok(records) => records,
            Err(e) => {
                out.error = Some(ClientError::CorruptRecord(format!(
                    "{topic}-{partition} batch at offset {}: {e}",
                    header.base_offset
                )));
                break;
            }
        };
        for record in records {
            match record {
                Ok(r) if r.offset < position => {}
                Ok(r) => {
                    out.next_offset = out.next_offset.max(r.offset.saturating_add(1));
                    out.records.push(ConsumerRecord {
                        topic: topic.clone(),
                        partition,
                        offset: r.offset,
                        timestamp: r.timestamp,
                        key: r.key,
                        value: r.value,
                        headers: r.headers,
                    });
                }
                Err(e) => {
                    out.error = Some(ClientError::CorruptRecord(format!(
                        "{topic}-{partition} batch at offset {}: {e}",
                        header.base_offset
                    )));
                    return out;
                }
            }
        }
        out.next_offset = out.next_offset.max(header.next_offset());
    }
    out
}
