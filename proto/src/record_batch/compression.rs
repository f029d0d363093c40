//! The four codecs of Kafka batches, each with the framing Kafka's Java
//! clients use, and a hard cap on decompressed size.

use std::io::{Read, Write};

use super::BatchError;

/// Codec in attribute bits 0-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub const ALL: [Compression; 5] =
        [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd];

    pub fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    pub fn from_id(id: u8) -> Result<Compression, BatchError> {
        Ok(match id {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => return Err(BatchError::UnknownCompression(other)),
        })
    }
}

/// Header of snappy-java's stream format, which Kafka's Java producer writes:
/// magic, then version and minimum compatible version (both 1).
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_LEN: usize = 16;
/// snappy-java's default block size; keeping it means Java consumers see
/// exactly the shape they would produce themselves.
const XERIAL_BLOCK: usize = 32 * 1024;
/// Kafka's default zstd level.
const ZSTD_LEVEL: i32 = 3;

fn comp_err(codec: Compression, e: impl std::fmt::Display) -> BatchError {
    BatchError::Compression { codec, reason: e.to_string() }
}

fn decomp_err(codec: Compression, e: impl std::fmt::Display) -> BatchError {
    BatchError::Decompression { codec, reason: e.to_string() }
}

/// Compresses the records section of a batch.
pub fn compress(codec: Compression, data: &[u8]) -> Result<Vec<u8>, BatchError> {
    match codec {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => {
            let mut enc =
                flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 2 + 64), flate2::Compression::default());
            enc.write_all(data).map_err(|e| comp_err(codec, e))?;
            enc.finish().map_err(|e| comp_err(codec, e))
        }
        Compression::Snappy => {
            let mut out = Vec::with_capacity(XERIAL_HEADER_LEN + data.len() / 2 + 64);
            out.extend_from_slice(&XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            let mut enc = snap::raw::Encoder::new();
            for chunk in data.chunks(XERIAL_BLOCK) {
                let block = enc.compress_vec(chunk).map_err(|e| comp_err(codec, e))?;
                let len = i32::try_from(block.len()).map_err(|e| comp_err(codec, e))?;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&block);
            }
            Ok(out)
        }
        Compression::Lz4 => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::with_capacity(data.len() / 2 + 64));
            enc.write_all(data).map_err(|e| comp_err(codec, e))?;
            enc.finish().map_err(|e| comp_err(codec, e))
        }
        Compression::Zstd => zstd::bulk::compress(data, ZSTD_LEVEL).map_err(|e| comp_err(codec, e)),
    }
}

/// Reads a stream to its end, failing once it yields more than `limit` bytes.
fn read_capped(codec: Compression, reader: impl Read, limit: usize) -> Result<Vec<u8>, BatchError> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader.take(cap).read_to_end(&mut out).map_err(|e| decomp_err(codec, e))?;
    if out.len() > limit {
        return Err(BatchError::DecompressedTooLarge { limit });
    }
    Ok(out)
}

/// Decompresses the records section; never returns more than `limit` bytes.
pub fn decompress(codec: Compression, data: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
    match codec {
        Compression::None => {
            if data.len() > limit {
                return Err(BatchError::DecompressedTooLarge { limit });
            }
            Ok(data.to_vec())
        }
        // Java's GZIPInputStream reads concatenated members, so must we.
        Compression::Gzip => read_capped(codec, flate2::read::MultiGzDecoder::new(data), limit),
        Compression::Snappy => {
            if data.len() >= XERIAL_HEADER_LEN && data[..8] == XERIAL_MAGIC {
                decompress_xerial(&data[XERIAL_HEADER_LEN..], limit)
            } else {
                snappy_block(data, limit, 0)
            }
        }
        Compression::Lz4 => read_capped(codec, lz4_flex::frame::FrameDecoder::new(data), limit),
        Compression::Zstd => {
            let dec = zstd::stream::read::Decoder::with_buffer(data).map_err(|e| decomp_err(codec, e))?;
            read_capped(codec, dec, limit)
        }
    }
}

/// Decompresses one raw snappy block, checking its announced length against
/// what is left of the budget before allocating.
fn snappy_block(block: &[u8], limit: usize, already: usize) -> Result<Vec<u8>, BatchError> {
    let codec = Compression::Snappy;
    let len = snap::raw::decompress_len(block).map_err(|e| decomp_err(codec, e))?;
    if already.saturating_add(len) > limit {
        return Err(BatchError::DecompressedTooLarge { limit });
    }
    snap::raw::Decoder::new().decompress_vec(block).map_err(|e| decomp_err(codec, e))
}

fn decompress_xerial(mut data: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
    let codec = Compression::Snappy;
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.len() < 4 {
            return Err(decomp_err(codec, "truncated xerial block length"));
        }
        let len = i32::from_be_bytes([data[0], data[1], data[2], data[3]]);
        let len = usize::try_from(len).map_err(|_| decomp_err(codec, "negative xerial block length"))?;
        data = &data[4..];
        if data.len() < len {
            return Err(decomp_err(codec, "truncated xerial block"));
        }
        let block = snappy_block(&data[..len], limit, out.len())?;
        out.extend_from_slice(&block);
        data = &data[len..];
    }
    Ok(out)
}
