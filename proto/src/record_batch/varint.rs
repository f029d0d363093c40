//! Kafka's zigzag varints (protobuf-style base-128, sign folded into bit 0).

use super::BatchError;

pub(crate) fn put_varint(out: &mut Vec<u8>, v: i32) {
    put_unsigned(out, ((v << 1) ^ (v >> 31)) as u32 as u64);
}

pub(crate) fn put_varlong(out: &mut Vec<u8>, v: i64) {
    put_unsigned(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_unsigned(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn varint_len(v: i32) -> usize {
    unsigned_len(((v << 1) ^ (v >> 31)) as u32 as u64)
}

pub(crate) fn varlong_len(v: i64) -> usize {
    unsigned_len(((v << 1) ^ (v >> 63)) as u64)
}

fn unsigned_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Reads an unsigned base-128 value of at most `max_bytes` bytes, advancing
/// `pos`. Overlong encodings are rejected rather than silently wrapped.
fn get_unsigned(buf: &[u8], pos: &mut usize, max_bytes: usize) -> Result<u64, BatchError> {
    let mut value: u64 = 0;
    for i in 0..max_bytes {
        let Some(&b) = buf.get(*pos) else {
            return Err(BatchError::CorruptRecord("varint runs past the end"));
        };
        *pos += 1;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(BatchError::CorruptRecord("varint too long"))
}

pub(crate) fn get_varint(buf: &[u8], pos: &mut usize) -> Result<i32, BatchError> {
    let raw = get_unsigned(buf, pos, 5)?;
    if raw > u64::from(u32::MAX) {
        return Err(BatchError::CorruptRecord("varint overflows 32 bits"));
    }
    let raw = raw as u32;
    Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32))
}

pub(crate) fn get_varlong(buf: &[u8], pos: &mut usize) -> Result<i64, BatchError> {
    let raw = get_unsigned(buf, pos, 10)?;
    Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
}
