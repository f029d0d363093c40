//! One segment: a `.log` file of whole batches plus its two indexes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use strata_proto::record_batch::layout::HEADER_SIZE;
use strata_proto::record_batch::{self, BatchHeader, RecordBatch, TimestampType};
use tracing::warn;

use super::error::{LogError, io_err};
use super::file_names::{index_file, log_file, time_index_file};
use super::fsio;
use super::handles::{Evictable, FileBudget};
use super::index::{self, IndexFile, OFFSET_ENTRY, TIME_ENTRY, encode_offset_entry, encode_time_entry};

/// Size of the first mapping of an active index; it doubles from there up
/// to `max_index_bytes`. Small, because a broker may hold thousands of
/// active segments and every byte of them is real, zero-filled disk.
const INITIAL_INDEX_BYTES: u64 = 4096;
/// Read-ahead used when scanning a whole segment (recovery, index rebuild).
const SCAN_BUFFER: usize = 256 * 1024;
/// Read-ahead when walking batch headers only.
const HEADER_SCAN_BUFFER: usize = 16 * 1024;

/// The part of [`super::LogConfig`] a segment needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SegmentParams {
    pub index_interval_bytes: u64,
    pub max_index_bytes: u64,
    pub max_decompressed_bytes: usize,
}

impl SegmentParams {
    fn max_offset_entries(&self) -> usize {
        (self.max_index_bytes / OFFSET_ENTRY as u64) as usize
    }
    fn max_time_entries(&self) -> usize {
        (self.max_index_bytes / TIME_ENTRY as u64) as usize
    }
}

/// (timestamp, offset of the batch that first reached it).
pub(crate) type TimestampOffset = (i64, u64);

struct OpenFiles {
    log: File,
    offset_index: IndexFile,
    time_index: IndexFile,
}

/// Index bookkeeping, guarded together with the open files, because reads
/// (`&self`) may have to open, check or rebuild the indexes.
struct FilesState {
    open: Option<OpenFiles>,
    meta: IndexMeta,
}

/// What is known about the index files, whether or not they are open.
struct IndexMeta {
    offset_entries: usize,
    time_entries: usize,
    last_time_entry: Option<i64>,
    max_timestamp: Option<TimestampOffset>,
    /// Whether the index contents were checked against the log since load.
    validated: bool,
}

pub(crate) struct SegmentFiles {
    state: Mutex<FilesState>,
    budget: Arc<FileBudget>,
    id: u64,
}

impl SegmentFiles {
    fn lock(&self) -> MutexGuard<'_, FilesState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the open files and tells the budget.
    fn close(&self, open: &mut Option<OpenFiles>) {
        if open.take().is_some() {
            self.budget.forget(self.id);
        }
    }
}

impl Evictable for SegmentFiles {
    fn try_evict(&self) -> bool {
        match self.state.try_lock() {
            Ok(mut st) => {
                st.open = None;
                true
            }
            Err(_) => false,
        }
    }
}

/// Result of scanning a segment batch by batch.
struct Scan {
    /// End of the last good batch.
    valid_size: u64,
    next_offset: u64,
    offset_index: Vec<u8>,
    time_index: Vec<u8>,
    last_time_entry: Option<i64>,
    max_timestamp: Option<TimestampOffset>,
    bytes_since_last_entry: u64,
    first_batch_timestamp: Option<i64>,
    /// Why the scan stopped before the end, if it did.
    stopped: Option<String>,
}

pub(crate) struct LogSegment {
    dir: PathBuf,
    base_offset: u64,
    next_offset: u64,
    /// End of the last complete batch. Invariant: nothing at or past this
    /// position is ever served to a reader.
    size: u64,
    active: bool,
    created_ms: i64,
    first_batch_timestamp: Option<i64>,
    bytes_since_last_entry: u64,
    files: Arc<SegmentFiles>,
}

impl Drop for LogSegment {
    fn drop(&mut self) {
        self.files.budget.forget(self.files.id);
    }
}

fn corrupt(path: &Path, position: u64, reason: impl ToString) -> LogError {
    LogError::CorruptBatch { path: path.to_path_buf(), position, reason: reason.to_string() }
}

/// Reads and sanity-checks the batch header at `pos` of a segment of `size`
/// bytes.
fn read_header(file: &File, path: &Path, pos: u64, size: u64) -> Result<BatchHeader, LogError> {
    if size.saturating_sub(pos) < HEADER_SIZE as u64 {
        return Err(corrupt(path, pos, "batch header runs past the segment end"));
    }
    let mut buf = [0u8; HEADER_SIZE];
    file.read_exact_at(&mut buf, pos).map_err(io_err("reading segment", path))?;
    let h = BatchHeader::parse(&buf).map_err(|e| corrupt(path, pos, e))?;
    if h.size() as u64 > size - pos {
        return Err(corrupt(path, pos, "batch runs past the segment end"));
    }
    if h.base_offset < 0 || h.last_offset_delta < 0 {
        return Err(corrupt(path, pos, "negative offset"));
    }
    Ok(h)
}

fn mtime_ms(path: &Path) -> Option<i64> {
    let modified = fs::metadata(path).ok()?.modified().ok()?;
    i64::try_from(modified.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()
}

fn remove_if_exists(path: &Path) -> Result<(), LogError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("deleting file", path)(e)),
    }
}

fn new_files(budget: &Arc<FileBudget>, meta: IndexMeta) -> Arc<SegmentFiles> {
    Arc::new(SegmentFiles {
        state: Mutex::new(FilesState { open: None, meta }),
        budget: Arc::clone(budget),
        id: budget.new_id(),
    })
}

impl LogSegment {
    pub(crate) fn base_offset(&self) -> u64 {
        self.base_offset
    }
    pub(crate) fn next_offset(&self) -> u64 {
        self.next_offset
    }
    pub(crate) fn size(&self) -> u64 {
        self.size
    }
    pub(crate) fn is_active(&self) -> bool {
        self.active
    }
    pub(crate) fn log_path(&self) -> PathBuf {
        log_file(&self.dir, self.base_offset)
    }
    pub(crate) fn max_timestamp(&self) -> Option<TimestampOffset> {
        self.files.lock().meta.max_timestamp
    }

    /// When this segment started, for `segment.ms` and for retention of
    /// segments without timestamps: the first batch's max timestamp, as in
    /// Kafka, else the segment's creation (or file modification) time.
    pub(crate) fn rolling_base_ms(&self) -> i64 {
        self.first_batch_timestamp.filter(|&t| t >= 0).unwrap_or(self.created_ms)
    }

    /// Newest timestamp in the segment for `retention.ms`.
    pub(crate) fn largest_timestamp_ms(&self) -> i64 {
        match self.max_timestamp() {
            Some((t, _)) if t >= 0 => t,
            _ => self.created_ms,
        }
    }

    /// Creates an empty active segment (any stale files of the same name
    /// are replaced) and makes its creation durable.
    pub(crate) fn create(
        dir: &Path,
        base_offset: u64,
        now_ms: i64,
        budget: &Arc<FileBudget>,
    ) -> Result<LogSegment, LogError> {
        let path = log_file(dir, base_offset);
        remove_if_exists(&index_file(dir, base_offset))?;
        remove_if_exists(&time_index_file(dir, base_offset))?;
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io_err("creating segment", &path))?;
        fsio::fsync_dir(dir).map_err(io_err("syncing directory", dir))?;
        Ok(LogSegment {
            dir: dir.to_path_buf(),
            base_offset,
            next_offset: base_offset,
            size: 0,
            active: true,
            created_ms: now_ms,
            first_batch_timestamp: None,
            bytes_since_last_entry: 0,
            files: new_files(
                budget,
                IndexMeta {
                    offset_entries: 0,
                    time_entries: 0,
                    last_time_entry: None,
                    max_timestamp: None,
                    validated: true,
                },
            ),
        })
    }

    /// Loads a segment whose contents are trusted (sealed, or the tail after
    /// a clean shutdown). Only cheap checks happen here (file lengths, last
    /// entries); the full index check runs when the segment is first opened.
    /// `next_offset` is the next segment's base (or the clean log end).
    pub(crate) fn load(
        dir: &Path,
        base_offset: u64,
        next_offset: u64,
        active: bool,
        params: &SegmentParams,
        budget: &Arc<FileBudget>,
        now_ms: i64,
    ) -> Result<LogSegment, LogError> {
        let path = log_file(dir, base_offset);
        let log = File::open(&path).map_err(io_err("opening segment", &path))?;
        let size = log.metadata().map_err(io_err("reading segment metadata", &path))?.len();
        let max_rel = next_offset.saturating_sub(base_offset).saturating_sub(1);
        let state = match Self::quick_index_check(dir, base_offset, size, max_rel) {
            Some(st) => st,
            None => {
                warn!(segment = %path.display(), "missing or damaged index; rebuilding");
                let scan = Self::scan(&log, &path, base_offset, size, params, false)?;
                Self::write_indexes(dir, base_offset, &scan, !active)?
            }
        };
        let first_batch_timestamp =
            if active && size > 0 { read_header(&log, &path, 0, size).ok().map(|h| h.max_timestamp) } else { None };
        Ok(LogSegment {
            dir: dir.to_path_buf(),
            base_offset,
            next_offset,
            size,
            active,
            created_ms: mtime_ms(&path).unwrap_or(now_ms),
            first_batch_timestamp,
            bytes_since_last_entry: 0,
            files: new_files(budget, state),
        })
    }

    /// Recovers the tail segment after an unclean shutdown: checks every
    /// batch (header, CRC, offsets following on), cuts the file at the first
    /// bad one, and rebuilds both indexes. Returns the segment and how many
    /// bytes were cut.
    pub(crate) fn recover(
        dir: &Path,
        base_offset: u64,
        params: &SegmentParams,
        budget: &Arc<FileBudget>,
        now_ms: i64,
    ) -> Result<(LogSegment, u64), LogError> {
        let path = log_file(dir, base_offset);
        let log = OpenOptions::new().read(true).write(true).open(&path).map_err(io_err("opening segment", &path))?;
        let size = log.metadata().map_err(io_err("reading segment metadata", &path))?.len();
        let scan = Self::scan(&log, &path, base_offset, size, params, true)?;
        let cut = size - scan.valid_size;
        if cut > 0 {
            warn!(
                segment = %path.display(),
                position = scan.valid_size,
                bytes = cut,
                reason = scan.stopped.as_deref().unwrap_or("unknown"),
                "truncating torn or corrupt tail"
            );
            log.set_len(scan.valid_size).map_err(io_err("truncating segment", &path))?;
            log.sync_all().map_err(io_err("syncing segment", &path))?;
        }
        let state = Self::write_indexes(dir, base_offset, &scan, false)?;
        let seg = LogSegment {
            dir: dir.to_path_buf(),
            base_offset,
            next_offset: scan.next_offset,
            size: scan.valid_size,
            active: true,
            created_ms: mtime_ms(&path).unwrap_or(now_ms),
            first_batch_timestamp: scan.first_batch_timestamp,
            bytes_since_last_entry: scan.bytes_since_last_entry,
            files: new_files(budget, state),
        };
        Ok((seg, cut))
    }

    /// Checks index file lengths and their last entries without mapping;
    /// returns the index state if plausible.
    fn quick_index_check(dir: &Path, base: u64, size: u64, max_rel: u64) -> Option<IndexMeta> {
        let off_path = index_file(dir, base);
        let time_path = time_index_file(dir, base);
        let off = File::open(&off_path).ok()?;
        let time = File::open(&time_path).ok()?;
        let off_len = off.metadata().ok()?.len();
        let time_len = time.metadata().ok()?.len();
        if off_len % OFFSET_ENTRY as u64 != 0 || time_len % TIME_ENTRY as u64 != 0 {
            return None;
        }
        let offset_entries = (off_len / OFFSET_ENTRY as u64) as usize;
        let time_entries = (time_len / TIME_ENTRY as u64) as usize;
        if offset_entries > 0 {
            let mut e = [0u8; OFFSET_ENTRY];
            off.read_exact_at(&mut e, off_len - OFFSET_ENTRY as u64).ok()?;
            let (rel, pos) = index::offset_entry(&e, 0);
            if u64::from(pos) >= size || u64::from(rel) > max_rel {
                return None;
            }
        }
        // Sealing always writes a final time entry for a non-empty segment.
        if size > 0 && time_entries == 0 {
            return None;
        }
        let mut max_timestamp = None;
        let mut last_time_entry = None;
        if time_entries > 0 {
            let mut e = [0u8; TIME_ENTRY];
            time.read_exact_at(&mut e, time_len - TIME_ENTRY as u64).ok()?;
            let (ts, rel) = index::time_entry(&e, 0);
            if u64::from(rel) > max_rel {
                return None;
            }
            max_timestamp = Some((ts, base.saturating_add(u64::from(rel))));
            last_time_entry = Some(ts);
        }
        Some(IndexMeta { offset_entries, time_entries, last_time_entry, max_timestamp, validated: false })
    }

    /// Walks the batches of a segment from position 0, building the indexes
    /// exactly as appends would have. With `verify`, every batch is fully
    /// validated (CRC included); without, only headers are read.
    fn scan(
        log: &File,
        path: &Path,
        base_offset: u64,
        size: u64,
        params: &SegmentParams,
        verify: bool,
    ) -> Result<Scan, LogError> {
        let mut s = Scan {
            valid_size: 0,
            next_offset: base_offset,
            offset_index: Vec::new(),
            time_index: Vec::new(),
            last_time_entry: None,
            max_timestamp: None,
            bytes_since_last_entry: 0,
            first_batch_timestamp: None,
            stopped: None,
        };
        let mut reader = BufReader::with_capacity(SCAN_BUFFER, log);
        reader.seek(SeekFrom::Start(0)).map_err(io_err("reading segment", path))?;
        let mut batch = Vec::new();
        let mut pos = 0u64;
        while pos < size {
            let left = size - pos;
            if left < HEADER_SIZE as u64 {
                s.stopped = Some("partial batch header".into());
                break;
            }
            let mut head = [0u8; HEADER_SIZE];
            reader.read_exact(&mut head).map_err(io_err("reading segment", path))?;
            let h = match BatchHeader::parse(&head) {
                Ok(h) => h,
                Err(e) => {
                    s.stopped = Some(e.to_string());
                    break;
                }
            };
            let bsize = h.size() as u64;
            if bsize > left {
                s.stopped = Some("partial batch".into());
                break;
            }
            if h.last_offset_delta < 0 {
                s.stopped = Some("negative last offset delta".into());
                break;
            }
            if h.base_offset < 0 || h.base_offset as u64 != s.next_offset {
                s.stopped = Some(format!("batch starts at offset {}, expected {}", h.base_offset, s.next_offset));
                break;
            }
            if verify {
                batch.clear();
                batch.extend_from_slice(&head);
                batch.resize(bsize as usize, 0);
                reader.read_exact(&mut batch[HEADER_SIZE..]).map_err(io_err("reading segment", path))?;
                if let Err(e) = record_batch::validate(&batch, bsize as usize) {
                    s.stopped = Some(e.to_string());
                    break;
                }
            } else {
                reader.seek_relative((bsize - HEADER_SIZE as u64) as i64).map_err(io_err("reading segment", path))?;
            }
            let last = h.last_offset() as u64;
            if last - base_offset > u64::from(u32::MAX) {
                s.stopped = Some("offset too far from the segment base".into());
                break;
            }
            if s.max_timestamp.is_none_or(|(t, _)| h.max_timestamp > t) {
                s.max_timestamp = Some((h.max_timestamp, last));
            }
            if s.bytes_since_last_entry > params.index_interval_bytes {
                if s.offset_index.len() / OFFSET_ENTRY < params.max_offset_entries() {
                    let e = encode_offset_entry((last - base_offset) as u32, pos as u32);
                    s.offset_index.extend_from_slice(&e);
                }
                if let Some((ts, off)) = s.max_timestamp
                    && s.last_time_entry.is_none_or(|l| ts > l)
                    && s.time_index.len() / TIME_ENTRY + 1 < params.max_time_entries()
                {
                    let e = encode_time_entry(ts, (off - base_offset) as u32);
                    s.time_index.extend_from_slice(&e);
                    s.last_time_entry = Some(ts);
                }
                s.bytes_since_last_entry = 0;
            }
            s.bytes_since_last_entry += bsize;
            if s.first_batch_timestamp.is_none() {
                s.first_batch_timestamp = Some(h.max_timestamp);
            }
            pos += bsize;
            s.valid_size = pos;
            s.next_offset = last + 1;
        }
        Ok(s)
    }

    /// Writes freshly scanned indexes to disk. A sealed segment also gets
    /// its final time entry, so its last entry carries the max timestamp.
    fn write_indexes(dir: &Path, base: u64, scan: &Scan, sealed: bool) -> Result<IndexMeta, LogError> {
        let mut time = scan.time_index.clone();
        let mut last_time_entry = scan.last_time_entry;
        if sealed
            && let Some((ts, off)) = scan.max_timestamp
            && last_time_entry.is_none_or(|l| ts > l)
        {
            time.extend_from_slice(&encode_time_entry(ts, (off - base) as u32));
            last_time_entry = Some(ts);
        }
        index::write_index_file(&index_file(dir, base), &scan.offset_index)?;
        index::write_index_file(&time_index_file(dir, base), &time)?;
        Ok(IndexMeta {
            offset_entries: scan.offset_index.len() / OFFSET_ENTRY,
            time_entries: time.len() / TIME_ENTRY,
            last_time_entry,
            max_timestamp: scan.max_timestamp,
            validated: true,
        })
    }

    /// Opens (if needed) and returns the segment's files, first checking the
    /// index contents once per load and rebuilding them if they fail.
    fn open_files<'a>(
        &self,
        open: &'a mut Option<OpenFiles>,
        meta: &mut IndexMeta,
        params: &SegmentParams,
    ) -> Result<&'a mut OpenFiles, LogError> {
        let files = match open.take() {
            Some(f) => f,
            None => {
                if !meta.validated {
                    self.validate_indexes(meta, params)?;
                }
                self.open_now(meta, params)?
            }
        };
        let weak: Weak<SegmentFiles> = Arc::downgrade(&self.files);
        self.files.budget.touch(self.files.id, weak);
        Ok(open.insert(files))
    }

    fn index_len(entries: usize, entry: usize, params: &SegmentParams) -> u64 {
        let entry = entry as u64;
        let max = params.max_index_bytes / entry * entry;
        ((entries as u64 + 2) * entry).max(INITIAL_INDEX_BYTES / entry * entry).min(max)
    }

    fn open_now(&self, meta: &IndexMeta, params: &SegmentParams) -> Result<OpenFiles, LogError> {
        let path = self.log_path();
        let log =
            OpenOptions::new().read(true).write(self.active).open(&path).map_err(io_err("opening segment", &path))?;
        let (off_len, time_len) = if self.active {
            (
                Self::index_len(meta.offset_entries, OFFSET_ENTRY, params),
                Self::index_len(meta.time_entries, TIME_ENTRY, params),
            )
        } else {
            (0, 0)
        };
        let offset_index =
            IndexFile::open(&index_file(&self.dir, self.base_offset), OFFSET_ENTRY, self.active, off_len)?;
        let time_index =
            IndexFile::open(&time_index_file(&self.dir, self.base_offset), TIME_ENTRY, self.active, time_len)?;
        Ok(OpenFiles { log, offset_index, time_index })
    }

    /// Full shape check of both indexes against the log; rebuilds on any
    /// doubt (including missing files).
    fn validate_indexes(&self, meta: &mut IndexMeta, params: &SegmentParams) -> Result<(), LogError> {
        let max_rel = self.next_offset.saturating_sub(self.base_offset).saturating_sub(1);
        let check = || -> Result<bool, LogError> {
            let off = IndexFile::open(&index_file(&self.dir, self.base_offset), OFFSET_ENTRY, false, 0)?;
            let time = IndexFile::open(&time_index_file(&self.dir, self.base_offset), TIME_ENTRY, false, 0)?;
            Ok(off.capacity() >= meta.offset_entries
                && time.capacity() >= meta.time_entries
                && index::offset_index_is_sane(off.bytes(), meta.offset_entries, self.size, max_rel)
                && index::time_index_is_sane(time.bytes(), meta.time_entries, max_rel))
        };
        if !check().unwrap_or(false) {
            let path = self.log_path();
            warn!(segment = %path.display(), "damaged index; rebuilding");
            let log = File::open(&path).map_err(io_err("opening segment", &path))?;
            let scan = Self::scan(&log, &path, self.base_offset, self.size, params, false)?;
            *meta = Self::write_indexes(&self.dir, self.base_offset, &scan, !self.active)?;
        }
        meta.validated = true;
        Ok(())
    }

    /// Whether appending `h` (of `len` bytes) must go to a new segment.
    pub(crate) fn should_roll(
        &self,
        h: &BatchHeader,
        len: u64,
        now_ms: i64,
        segment_bytes: u64,
        segment_ms: Option<i64>,
        params: &SegmentParams,
    ) -> bool {
        if self.size == 0 {
            return false;
        }
        let st = self.files.lock();
        let limit = segment_bytes.min(u64::from(u32::MAX));
        self.size + len > limit
            || segment_ms.is_some_and(|ms| now_ms.saturating_sub(self.rolling_base_ms()) >= ms)
            || st.meta.offset_entries >= params.max_offset_entries()
            || st.meta.time_entries + 1 >= params.max_time_entries()
            || (h.last_offset() as u64).saturating_sub(self.base_offset) > u64::from(u32::MAX)
    }

    /// Appends one validated batch at the end and returns its position. On
    /// error nothing is appended: a partial write is cut off again.
    pub(crate) fn append(&mut self, batch: &[u8], h: &BatchHeader, params: &SegmentParams) -> Result<u64, LogError> {
        let path = self.log_path();
        let position = self.size;
        let last = h.last_offset() as u64;
        let rel = |o: u64| (o - self.base_offset) as u32;
        let mut guard = self.files.lock();
        let FilesState { open, meta } = &mut *guard;
        let files = self.open_files(open, meta, params)?;

        let need_entry = self.bytes_since_last_entry > params.index_interval_bytes;
        // Grow the indexes before writing the log: growing can fail on a full
        // disk, and failing here leaves nothing to undo.
        let room_off =
            need_entry && files.offset_index.ensure_capacity(meta.offset_entries + 1, params.max_index_bytes)?;
        let room_time =
            need_entry && files.time_index.ensure_capacity(meta.time_entries + 2, params.max_index_bytes)?;

        if let Err(e) = fsio::write_all_at(&files.log, batch, position) {
            // Cut off whatever part of the batch reached the file, so the
            // log stays a sequence of whole batches even without a restart.
            if let Err(cut) = files.log.set_len(position) {
                warn!(segment = %path.display(), error = %cut, "cannot cut off a failed append");
            }
            return Err(io_err("appending to segment", &path)(e));
        }

        if meta.max_timestamp.is_none_or(|(t, _)| h.max_timestamp > t) {
            meta.max_timestamp = Some((h.max_timestamp, last));
        }
        if need_entry {
            if room_off && files.offset_index.put(meta.offset_entries, &encode_offset_entry(rel(last), position as u32))
            {
                meta.offset_entries += 1;
            }
            if let Some((ts, off)) = meta.max_timestamp
                && room_time
                && meta.last_time_entry.is_none_or(|l| ts > l)
                && files.time_index.put(meta.time_entries, &encode_time_entry(ts, rel(off)))
            {
                meta.time_entries += 1;
                meta.last_time_entry = Some(ts);
            }
            self.bytes_since_last_entry = 0;
        }
        drop(guard);
        self.bytes_since_last_entry += batch.len() as u64;
        self.size += batch.len() as u64;
        self.next_offset = last + 1;
        if self.first_batch_timestamp.is_none() {
            self.first_batch_timestamp = Some(h.max_timestamp);
        }
        Ok(position)
    }

    /// Forces appended data to disk. Only the log: the indexes are rebuilt
    /// from it after a crash, so syncing them would buy nothing.
    pub(crate) fn flush(&self, params: &SegmentParams) -> Result<(), LogError> {
        let path = self.log_path();
        let mut guard = self.files.lock();
        let FilesState { open, meta } = &mut *guard;
        let files = self.open_files(open, meta, params)?;
        files.log.sync_data().map_err(io_err("syncing segment", &path))
    }

    /// Flushes the log and trims both indexes to their entries (plus a final
    /// time entry carrying the segment's max timestamp), closing the files.
    /// Used on roll (`seal`) and on clean shutdown.
    pub(crate) fn trim(&mut self, params: &SegmentParams) -> Result<(), LogError> {
        self.flush(params)?;
        let mut guard = self.files.lock();
        let FilesState { open, meta } = &mut *guard;
        // Open first: the active index on disk is preallocated, and only
        // an open index knows how to trim it.
        self.open_files(open, meta, params)?;
        let Some(files) = open.take() else {
            return Ok(());
        };
        self.files.budget.forget(self.files.id);
        let tail = match meta.max_timestamp {
            Some((ts, off)) if meta.last_time_entry.is_none_or(|l| ts > l) => {
                Some((ts, encode_time_entry(ts, (off - self.base_offset) as u32)))
            }
            _ => None,
        };
        files.offset_index.close_trimmed(meta.offset_entries, None)?;
        files.time_index.close_trimmed(meta.time_entries, tail.as_ref().map(|(_, e)| &e[..]))?;
        if let Some((ts, _)) = tail {
            meta.time_entries += 1;
            meta.last_time_entry = Some(ts);
        }
        Ok(())
    }

    /// Turns the active segment into a sealed one.
    pub(crate) fn seal(&mut self, params: &SegmentParams) -> Result<(), LogError> {
        self.trim(params)?;
        self.active = false;
        Ok(())
    }

    /// Makes a sealed segment the active one again (after a truncation
    /// removed the segments after it); its indexes are reopened writable.
    pub(crate) fn reactivate(&mut self) {
        let mut guard = self.files.lock();
        self.files.close(&mut guard.open);
        self.active = true;
    }

    /// Closes the segment's files; they reopen on next use.
    pub(crate) fn close_files(&self) {
        let mut guard = self.files.lock();
        self.files.close(&mut guard.open);
    }

    /// First batch holding an offset >= `offset`: (position, header).
    fn find_batch_in(
        &self,
        files: &OpenFiles,
        meta: &IndexMeta,
        offset: u64,
    ) -> Result<Option<(u64, BatchHeader)>, LogError> {
        let path = self.log_path();
        let rel = offset.saturating_sub(self.base_offset);
        let mut pos =
            index::lookup_offset(files.offset_index.bytes(), meta.offset_entries, rel).map_or(0, |(_, p)| u64::from(p));
        while pos < self.size {
            let h = read_header(&files.log, &path, pos, self.size)?;
            if h.last_offset() as u64 >= offset {
                return Ok(Some((pos, h)));
            }
            pos += h.size() as u64;
        }
        Ok(None)
    }

    pub(crate) fn find_batch(
        &self,
        offset: u64,
        params: &SegmentParams,
    ) -> Result<Option<(u64, BatchHeader)>, LogError> {
        let mut guard = self.files.lock();
        let FilesState { open, meta } = &mut *guard;
        let files = self.open_files(open, meta, params)?;
        self.find_batch_in(files, meta, offset)
    }

    /// Calls `f` with the header of every batch from the one holding
    /// `offset` to the segment end, reading headers only (no CRC, no
    /// decompression): enough to rebuild the leader-epoch cache and the
    /// producer state. A header that does not parse is `CorruptBatch`.
    pub(crate) fn for_each_header(
        &self,
        offset: u64,
        params: &SegmentParams,
        f: &mut dyn FnMut(&BatchHeader),
    ) -> Result<(), LogError> {
        let path = self.log_path();
        let mut guard = self.files.lock();
        let FilesState { open, meta } = &mut *guard;
        let files = self.open_files(open, meta, params)?;
        let Some((mut pos, _)) = self.find_batch_in(files, meta, offset)? else {
            return Ok(());
        };
        // Small: for big batches most of each buffer fill is skipped over.
        let mut reader = BufReader::with_capacity(HEADER_SCAN_BUFFER, &files.log);
        reader.seek(SeekFrom::Start(pos)).map_err(io_err("reading segment", &path))?;
        while pos < self.size {
            if self.size - pos < HEADER_SIZE as u64 {
                return Err(corrupt(&path, pos, "batch header runs past the segment end"));
            }
            let mut head = [0u8; HEADER_SIZE];
            reader.read_exact(&mut head).map_err(io_err("reading segment", &path))?;
            let h = BatchHeader::parse(&head).map_err(|e| corrupt(&path, pos, e))?;
            let size = h.size() as u64;
            if size > self.size - pos || h.base_offset < 0 || h.last_offset_delta < 0 {
                return Err(corrupt(&path, pos, "bad batch header"));
            }
            f(&h);
            reader.seek_relative((size - HEADER_SIZE as u64) as i64).map_err(io_err("reading segment", &path))?;
            pos += size;
        }
        Ok(())
    }

    /// Whole batches starting with the one holding `offset`: at most
    /// `max_bytes` of them, but always the first one whole; only batches
    /// entirely below `upper`. `None` if no batch here reaches `offset`.
    pub(crate) fn read(
        &self,
        offset: u64,
        max_bytes: usize,
        upper: u64,
        params: &SegmentParams,
    ) -> Result<Option<(u64, Bytes)>, LogError> {
        let path = self.log_path();
        let mut guard = self.files.lock();
        let FilesState { open, meta } = &mut *guard;
        let files = self.open_files(open, meta, params)?;
        let Some((pos, first)) = self.find_batch_in(files, meta, offset)? else {
            return Ok(None);
        };
        if first.last_offset() as u64 >= upper {
            return Ok(Some((pos, Bytes::new())));
        }
        let want = (max_bytes as u64).max(first.size() as u64).min(self.size - pos) as usize;
        let mut buf = vec![0u8; want];
        files.log.read_exact_at(&mut buf, pos).map_err(io_err("reading segment", &path))?;
        let mut cut = 0usize;
        while cut < want {
            let Ok(h) = BatchHeader::parse(&buf[cut..]) else {
                break;
            };
            let end = cut + h.size();
            if end > want || (cut > 0 && end > max_bytes) || h.last_offset() as u64 >= upper {
                break;
            }
            cut = end;
        }
        buf.truncate(cut);
        Ok(Some((pos, Bytes::from(buf))))
    }

    /// First offset >= `min_offset` whose record timestamp is >= `ts`.
    pub(crate) fn find_by_timestamp(
        &self,
        ts: i64,
        min_offset: u64,
        params: &SegmentParams,
    ) -> Result<Option<u64>, LogError> {
        let path = self.log_path();
        let mut guard = self.files.lock();
        let FilesState { open, meta } = &mut *guard;
        if meta.max_timestamp.is_none_or(|(m, _)| m < ts) {
            return Ok(None);
        }
        let files = self.open_files(open, meta, params)?;
        let mut pos = match index::lookup_time(files.time_index.bytes(), meta.time_entries, ts) {
            Some((_, rel)) => index::lookup_offset(files.offset_index.bytes(), meta.offset_entries, u64::from(rel))
                .map_or(0, |(_, p)| u64::from(p)),
            None => 0,
        };
        while pos < self.size {
            let h = read_header(&files.log, &path, pos, self.size)?;
            let size = h.size();
            if h.max_timestamp >= ts && h.last_offset() as u64 >= min_offset {
                let mut buf = vec![0u8; size];
                files.log.read_exact_at(&mut buf, pos).map_err(io_err("reading segment", &path))?;
                let batch = RecordBatch::new(Bytes::from(buf), size).map_err(|e| corrupt(&path, pos, e))?;
                if batch.header().timestamp_type() == TimestampType::LogAppendTime {
                    return Ok(Some((h.base_offset as u64).max(min_offset)));
                }
                let records =
                    batch.records_with_limit(params.max_decompressed_bytes).map_err(|e| corrupt(&path, pos, e))?;
                for r in records {
                    let r = r.map_err(|e| corrupt(&path, pos, e))?;
                    if r.offset >= 0 && r.offset as u64 >= min_offset && r.timestamp >= ts {
                        return Ok(Some(r.offset as u64));
                    }
                }
            }
            pos += size as u64;
        }
        Ok(None)
    }

    /// Cuts the segment at `position` (a batch boundary), making
    /// `next_offset` its new end, durably; then rebuilds its indexes.
    pub(crate) fn truncate_to(
        &mut self,
        position: u64,
        next_offset: u64,
        params: &SegmentParams,
    ) -> Result<(), LogError> {
        let path = self.log_path();
        let mut guard = self.files.lock();
        self.files.close(&mut guard.open);
        let log = OpenOptions::new().read(true).write(true).open(&path).map_err(io_err("opening segment", &path))?;
        log.set_len(position).map_err(io_err("truncating segment", &path))?;
        // Durable at once: a replica that truncated its diverged tail must
        // not see it come back after a crash.
        log.sync_all().map_err(io_err("syncing segment", &path))?;
        self.size = position;
        self.next_offset = next_offset;
        let scan = Self::scan(&log, &path, self.base_offset, position, params, false)?;
        guard.meta = Self::write_indexes(&self.dir, self.base_offset, &scan, !self.active)?;
        self.bytes_since_last_entry = scan.bytes_since_last_entry;
        self.first_batch_timestamp = scan.first_batch_timestamp;
        Ok(())
    }

    /// Closes and removes the segment's three files.
    pub(crate) fn delete(self) -> Result<(), LogError> {
        self.close_files();
        remove_if_exists(&log_file(&self.dir, self.base_offset))?;
        remove_if_exists(&index_file(&self.dir, self.base_offset))?;
        remove_if_exists(&time_index_file(&self.dir, self.base_offset))
    }

    /// Whether the segment currently holds open files (for tests of the
    /// file budget).
    #[cfg(test)]
    pub(crate) fn is_open(&self) -> bool {
        self.files.lock().open.is_some()
    }
}
