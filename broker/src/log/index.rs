//! Memory-mapped sparse indexes.
//!
//! `.index`: 8-byte entries, u32 offset relative to the segment base + u32
//! byte position of the batch in the `.log`, both big-endian, sorted by both.
//! `.timeindex`: 12-byte entries, i64 timestamp + u32 relative offset, with
//! strictly increasing timestamps. The active segment's files are grown ahead
//! of use and mapped read-write; sealed ones are trimmed to their entries and
//! mapped read-only.
//!
//! Neither file carries a checksum: both are derived data. Whatever is found
//! on disk is checked for shape (sorted, in range) and rebuilt from the log
//! when it fails, so a damaged index costs a rescan, never data or a crash.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapMut};

use super::error::{LogError, io_err};
use super::fsio;

pub(crate) const OFFSET_ENTRY: usize = 8;
pub(crate) const TIME_ENTRY: usize = 12;

enum Map {
    /// Zero-length file: nothing to map.
    Empty,
    ReadOnly(Mmap),
    Writable(MmapMut),
}

/// One open, mapped index file.
pub(crate) struct IndexFile {
    path: PathBuf,
    file: File,
    map: Map,
    entry_size: usize,
}

impl IndexFile {
    /// Opens (creating if needed) and maps an index. A writable index is
    /// first zero-filled to at least `min_len` bytes.
    pub(crate) fn open(path: &Path, entry_size: usize, writable: bool, min_len: u64) -> Result<IndexFile, LogError> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .create(writable)
            .truncate(false)
            .open(path)
            .map_err(io_err("opening index", path))?;
        let mut index = IndexFile { path: path.to_path_buf(), file, map: Map::Empty, entry_size };
        let len = index.file_len()?;
        if writable && len < min_len {
            fsio::zero_fill(&index.file, len, min_len).map_err(io_err("growing index", path))?;
        }
        index.map(writable)?;
        Ok(index)
    }

    fn file_len(&self) -> Result<u64, LogError> {
        Ok(self.file.metadata().map_err(io_err("reading index metadata", &self.path))?.len())
    }

    fn map(&mut self, writable: bool) -> Result<(), LogError> {
        self.map = Map::Empty;
        if self.file_len()? == 0 {
            return Ok(());
        }
        self.map = if writable {
            // SAFETY: the map is private to this IndexFile, which is owned by
            // one segment behind its mutex. No handle in this process shrinks
            // the file while it is mapped: `grow` and `close_trimmed` drop the
            // map before changing the length, and the partition directory is
            // owned by one Log (documented requirement), so no other process
            // truncates it either.
            Map::Writable(unsafe { MmapMut::map_mut(&self.file) }.map_err(io_err("mapping index", &self.path))?)
        } else {
            // SAFETY: as above; a read-only mapping of a sealed index, whose
            // length only changes after the map is dropped.
            Map::ReadOnly(unsafe { Mmap::map(&self.file) }.map_err(io_err("mapping index", &self.path))?)
        };
        Ok(())
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        match &self.map {
            Map::Empty => &[],
            Map::ReadOnly(m) => m,
            Map::Writable(m) => m,
        }
    }

    /// Entries that fit in the mapped length.
    pub(crate) fn capacity(&self) -> usize {
        self.bytes().len() / self.entry_size
    }

    /// Stores entry `i`; false if it does not fit or the index is sealed.
    pub(crate) fn put(&mut self, i: usize, entry: &[u8]) -> bool {
        let at = i * self.entry_size;
        match &mut self.map {
            Map::Writable(m) if at + entry.len() <= m.len() => {
                m[at..at + entry.len()].copy_from_slice(entry);
                true
            }
            _ => false,
        }
    }

    /// Makes room for at least `entries` entries, growing by doubling up to
    /// `max_len` bytes. Unmaps before changing the file length.
    pub(crate) fn ensure_capacity(&mut self, entries: usize, max_len: u64) -> Result<bool, LogError> {
        if entries <= self.capacity() {
            return Ok(true);
        }
        let es = self.entry_size as u64;
        let max_len = max_len / es * es;
        let want = (entries as u64) * es;
        if want > max_len {
            return Ok(false);
        }
        let current = self.file_len()?;
        let new_len = (current.max(es) * 2).max(want).min(max_len);
        self.map = Map::Empty;
        let grown = fsio::zero_fill(&self.file, current, new_len).map_err(io_err("growing index", &self.path));
        // Remap whatever the file now holds, even after a failed growth, so
        // the index stays usable.
        self.map(true)?;
        grown?;
        Ok(entries <= self.capacity())
    }

    /// Unmaps, trims the file to `entries` entries (plus `tail`, an extra
    /// entry written after the trim) and syncs it. Used when a segment is
    /// sealed or closed, so the file length tells the entry count on reopen.
    pub(crate) fn close_trimmed(mut self, entries: usize, tail: Option<&[u8]>) -> Result<(), LogError> {
        self.map = Map::Empty;
        let len = (entries * self.entry_size) as u64;
        self.file.set_len(len).map_err(io_err("trimming index", &self.path))?;
        if let Some(tail) = tail {
            fsio::write_all_at(&self.file, tail, len).map_err(io_err("writing index", &self.path))?;
        }
        self.file.sync_all().map_err(io_err("syncing index", &self.path))
    }
}

/// Writes a complete index file from scratch (rebuilds).
pub(crate) fn write_index_file(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io_err("creating index", path))?;
    fsio::write_all_at(&file, bytes, 0).map_err(io_err("writing index", path))?;
    file.sync_all().map_err(io_err("syncing index", path))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Entry `i` of an offset index: (relative offset, position).
pub(crate) fn offset_entry(b: &[u8], i: usize) -> (u32, u32) {
    let at = i * OFFSET_ENTRY;
    (u32_at(b, at), u32_at(b, at + 4))
}

pub(crate) fn encode_offset_entry(rel: u32, pos: u32) -> [u8; OFFSET_ENTRY] {
    let mut e = [0u8; OFFSET_ENTRY];
    e[..4].copy_from_slice(&rel.to_be_bytes());
    e[4..].copy_from_slice(&pos.to_be_bytes());
    e
}

/// Entry `i` of a time index: (timestamp, relative offset).
pub(crate) fn time_entry(b: &[u8], i: usize) -> (i64, u32) {
    let at = i * TIME_ENTRY;
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&b[at..at + 8]);
    (i64::from_be_bytes(ts), u32_at(b, at + 8))
}

pub(crate) fn encode_time_entry(ts: i64, rel: u32) -> [u8; TIME_ENTRY] {
    let mut e = [0u8; TIME_ENTRY];
    e[..8].copy_from_slice(&ts.to_be_bytes());
    e[8..].copy_from_slice(&rel.to_be_bytes());
    e
}

/// Number of leading entries among the first `n` for which `pred` holds,
/// given that `pred` is true for a prefix (binary search).
fn partition_point(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The last entry whose relative offset is <= `target`: the batch at its
/// position starts at or before the batch holding `target`.
pub(crate) fn lookup_offset(b: &[u8], n: usize, target: u64) -> Option<(u32, u32)> {
    let n = n.min(b.len() / OFFSET_ENTRY);
    let k = partition_point(n, |i| u64::from(offset_entry(b, i).0) <= target);
    (k > 0).then(|| offset_entry(b, k - 1))
}

/// The last entry whose timestamp is < `target`. Every record at or before
/// its offset's batch is older than `target`, so a scan may start there.
pub(crate) fn lookup_time(b: &[u8], n: usize, target: i64) -> Option<(i64, u32)> {
    let n = n.min(b.len() / TIME_ENTRY);
    let k = partition_point(n, |i| time_entry(b, i).0 < target);
    (k > 0).then(|| time_entry(b, k - 1))
}

/// Shape check of an offset index: strictly increasing offsets and
/// positions, every position inside the log, every offset inside the segment.
pub(crate) fn offset_index_is_sane(b: &[u8], n: usize, log_size: u64, max_rel: u64) -> bool {
    if n * OFFSET_ENTRY > b.len() {
        return false;
    }
    let mut prev: Option<(u32, u32)> = None;
    for i in 0..n {
        let (rel, pos) = offset_entry(b, i);
        if u64::from(pos) >= log_size || u64::from(rel) > max_rel {
            return false;
        }
        if let Some((pr, pp)) = prev
            && (rel <= pr || pos <= pp)
        {
            return false;
        }
        prev = Some((rel, pos));
    }
    true
}

/// Shape check of a time index: strictly increasing timestamps,
/// non-decreasing offsets inside the segment.
pub(crate) fn time_index_is_sane(b: &[u8], n: usize, max_rel: u64) -> bool {
    if n * TIME_ENTRY > b.len() {
        return false;
    }
    let mut prev: Option<(i64, u32)> = None;
    for i in 0..n {
        let (ts, rel) = time_entry(b, i);
        if u64::from(rel) > max_rel {
            return false;
        }
        if let Some((pt, pr)) = prev
            && (ts <= pt || rel < pr)
        {
            return false;
        }
        prev = Some((ts, rel));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grow_put_trim_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.index");
        let mut idx = IndexFile::open(&path, OFFSET_ENTRY, true, 16).unwrap();
        assert_eq!(idx.capacity(), 2);
        for i in 0..10u32 {
            assert!(idx.ensure_capacity(i as usize + 1, 1024).unwrap());
            assert!(idx.put(i as usize, &encode_offset_entry(i * 10, i * 100 + 1)));
        }
        assert!(!idx.ensure_capacity(200, 1024).unwrap());
        idx.close_trimmed(10, None).unwrap();
        let idx = IndexFile::open(&path, OFFSET_ENTRY, false, 0).unwrap();
        assert_eq!(idx.capacity(), 10);
        let b = idx.bytes();
        assert!(offset_index_is_sane(b, 10, 10_000, 1000));
        assert!(!offset_index_is_sane(b, 10, 500, 1000));
        assert_eq!(lookup_offset(b, 10, 0), Some((0, 1)));
        assert_eq!(lookup_offset(b, 10, 35), Some((30, 301)));
        assert_eq!(lookup_offset(b, 10, 1000), Some((90, 901)));
    }

    #[test]
    fn time_lookup_is_strict() {
        let mut b = Vec::new();
        for (ts, rel) in [(10i64, 0u32), (20, 5), (30, 9)] {
            b.extend_from_slice(&encode_time_entry(ts, rel));
        }
        assert_eq!(lookup_time(&b, 3, 10), None);
        assert_eq!(lookup_time(&b, 3, 11), Some((10, 0)));
        assert_eq!(lookup_time(&b, 3, 30), Some((20, 5)));
        assert!(time_index_is_sane(&b, 3, 9));
        assert!(!time_index_is_sane(&b, 3, 8));
        // A zeroed tail (preallocated, never written) is not sane.
        b.extend_from_slice(&[0u8; TIME_ENTRY]);
        assert!(!time_index_is_sane(&b, 4, 100));
    }
}
