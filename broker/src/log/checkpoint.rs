//! Small checkpoint files (log start offset, clean-shutdown marker, and the
//! envelope of producer-state snapshots).
//!
//! Layout: magic `STRATACP` (8) | version u16 | kind u16 | payload length u32 |
//! payload | CRC-32C u32 over everything before it; big-endian. Written to a
//! `.tmp` file, fsynced, renamed over the old one, then the directory is
//! fsynced, so a crash leaves either the old or the new checkpoint, whole.

use std::fs::{self, File, OpenOptions};
use std::path::Path;

use tracing::warn;

use super::error::{LogError, io_err};
use super::file_names::{CLEAN_SHUTDOWN_CHECKPOINT, LOG_START_CHECKPOINT, TMP_SUFFIX};
use super::fsio;

const MAGIC: &[u8; 8] = b"STRATACP";
const VERSION: u16 = 1;
const HEADER: usize = 16;
const KIND_LOG_START: u16 = 1;
const KIND_CLEAN_SHUTDOWN: u16 = 2;
pub(crate) const KIND_PRODUCER_SNAPSHOT: u16 = 3;

/// What a clean close leaves behind. Open trusts the tail segment without a
/// scan only if the files still match these numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanShutdown {
    pub log_end_offset: u64,
    pub active_base_offset: u64,
    pub active_size: u64,
}

pub(crate) fn encode(kind: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len() + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

pub(crate) fn decode(kind: u16, bytes: &[u8]) -> Result<&[u8], &'static str> {
    if bytes.len() < HEADER + 4 {
        return Err("too short");
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body).to_be_bytes() != crc {
        return Err("CRC mismatch");
    }
    if &body[..8] != MAGIC {
        return Err("bad magic");
    }
    if u16::from_be_bytes([body[8], body[9]]) != VERSION {
        return Err("unknown version");
    }
    if u16::from_be_bytes([body[10], body[11]]) != kind {
        return Err("wrong kind");
    }
    let len = u32::from_be_bytes([body[12], body[13], body[14], body[15]]) as usize;
    if body.len() - HEADER != len {
        return Err("length mismatch");
    }
    Ok(&body[HEADER..])
}

fn write(dir: &Path, name: &str, kind: u16, payload: &[u8]) -> Result<(), LogError> {
    write_atomically(dir, name, &encode(kind, payload))
}

/// Replaces `dir/name` with `bytes` so that a crash leaves the old or the
/// new content, whole: `.tmp`, fsync, rename, fsync of the directory. A
/// leftover `.tmp` is removed by the loader.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), LogError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.{TMP_SUFFIX}"));
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_err("creating checkpoint", &tmp))?;
    fsio::write_all_at(&file, bytes, 0).map_err(io_err("writing checkpoint", &tmp))?;
    file.sync_all().map_err(io_err("syncing checkpoint", &tmp))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(io_err("renaming checkpoint", &path))?;
    fsio::fsync_dir(dir).map_err(io_err("syncing directory", dir))
}

/// Reads a checkpoint; a missing one is `None`, and so is a damaged one
/// (with a warning), because every checkpoint has a safe fallback.
fn read(dir: &Path, name: &str, kind: u16) -> Option<Vec<u8>> {
    let path = dir.join(name);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot read checkpoint; ignoring it");
            return None;
        }
    };
    match decode(kind, &bytes) {
        Ok(payload) => Some(payload.to_vec()),
        Err(reason) => {
            warn!(path = %path.display(), reason, "damaged checkpoint; ignoring it");
            None
        }
    }
}

fn u64_at(b: &[u8], i: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(i * 8..i * 8 + 8)?.try_into().ok()?))
}

pub fn write_log_start_offset(dir: &Path, offset: u64) -> Result<(), LogError> {
    write(dir, LOG_START_CHECKPOINT, KIND_LOG_START, &offset.to_be_bytes())
}

pub fn read_log_start_offset(dir: &Path) -> Option<u64> {
    let p = read(dir, LOG_START_CHECKPOINT, KIND_LOG_START)?;
    if p.len() != 8 {
        return None;
    }
    u64_at(&p, 0)
}

pub fn write_clean_shutdown(dir: &Path, marker: &CleanShutdown) -> Result<(), LogError> {
    let mut p = Vec::with_capacity(24);
    p.extend_from_slice(&marker.log_end_offset.to_be_bytes());
    p.extend_from_slice(&marker.active_base_offset.to_be_bytes());
    p.extend_from_slice(&marker.active_size.to_be_bytes());
    write(dir, CLEAN_SHUTDOWN_CHECKPOINT, KIND_CLEAN_SHUTDOWN, &p)
}

pub fn read_clean_shutdown(dir: &Path) -> Option<CleanShutdown> {
    let p = read(dir, CLEAN_SHUTDOWN_CHECKPOINT, KIND_CLEAN_SHUTDOWN)?;
    if p.len() != 24 {
        return None;
    }
    Some(CleanShutdown {
        log_end_offset: u64_at(&p, 0)?,
        active_base_offset: u64_at(&p, 1)?,
        active_size: u64_at(&p, 2)?,
    })
}

/// Removes the marker durably: from here on, a crash must be treated as
/// unclean.
pub fn remove_clean_shutdown(dir: &Path) -> Result<(), LogError> {
    let path = dir.join(CLEAN_SHUTDOWN_CHECKPOINT);
    match fs::remove_file(&path) {
        Ok(()) => fsio::fsync_dir(dir).map_err(io_err("syncing directory", dir)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing clean-shutdown marker", &path)(e)),
    }
}

/// Opens a file only to check it exists and read its length.
pub(crate) fn file_len(path: &Path) -> Option<u64> {
    File::open(path).and_then(|f| f.metadata()).map(|m| m.len()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_log_start_offset(dir.path()), None);
        write_log_start_offset(dir.path(), 1234).unwrap();
        assert_eq!(read_log_start_offset(dir.path()), Some(1234));
        let m = CleanShutdown { log_end_offset: 9, active_base_offset: 5, active_size: 77 };
        write_clean_shutdown(dir.path(), &m).unwrap();
        assert_eq!(read_clean_shutdown(dir.path()), Some(m));
        // A checkpoint of one kind is not accepted as another.
        fs::copy(dir.path().join(LOG_START_CHECKPOINT), dir.path().join(CLEAN_SHUTDOWN_CHECKPOINT)).unwrap();
        assert_eq!(read_clean_shutdown(dir.path()), None);
        // Any flipped bit is caught by the CRC.
        let path = dir.path().join(LOG_START_CHECKPOINT);
        let mut bytes = fs::read(&path).unwrap();
        for i in 0..bytes.len() {
            bytes[i] ^= 0x10;
            fs::write(&path, &bytes).unwrap();
            assert_eq!(read_log_start_offset(dir.path()), None, "flip at {i}");
            bytes[i] ^= 0x10;
        }
        remove_clean_shutdown(dir.path()).unwrap();
        remove_clean_shutdown(dir.path()).unwrap();
        assert_eq!(read_clean_shutdown(dir.path()), None);
    }
}
