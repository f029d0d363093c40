//! Opening a partition directory: what survives a crash and what is
//! repaired (Kafka's `LogLoader`).
//!
//! Rules:
//! 1. Leftover `.tmp` files and index files without a `.log` are deleted.
//! 2. The clean-shutdown marker is read and then removed durably before
//!    anything else changes, so any later crash is seen as unclean.
//! 3. Every segment but the last is trusted: it was flushed before the next
//!    one was created (see `Log::roll`). Its indexes get a cheap check now
//!    and a full one on first use; damaged or missing ones are rebuilt.
//! 4. The last segment is trusted only if the marker matches its size and
//!    the log end. Otherwise every batch in it is checked (header, CRC,
//!    offsets following on) and the file is cut at the first bad one.
//! 5. The log start offset is the checkpointed one, clamped to the segments
//!    that exist; segments entirely below it (an interrupted retention run)
//!    are deleted.
//!
//! `Log::open` then brings the derived state in line with the recovered
//! log: the leader-epoch cache (`leader-epoch-checkpoint`, trimmed to the
//! log, rebuilt from batch headers if missing, damaged or behind) and the
//! producer state (newest `.snapshot` at or below the log end, plus a replay
//! of the headers after it). Both files are ours: a leftover `.tmp` of
//! either is removed in step 1 like any other.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use tracing::{info, warn};

use super::checkpoint;
use super::error::{LogError, io_err};
use super::file_names::{
    self, INDEX_SUFFIX, LOG_SUFFIX, SNAPSHOT_SUFFIX, TIME_INDEX_SUFFIX, TMP_SUFFIX, parse_segment_file,
};
use super::fsio;
use super::handles::FileBudget;
use super::segment::{LogSegment, SegmentParams};

pub(crate) struct Loaded {
    /// Every segment but the last, by base offset.
    pub sealed: BTreeMap<u64, LogSegment>,
    /// The last segment, the only one appended to.
    pub active: LogSegment,
    pub log_start_offset: u64,
    pub log_end_offset: u64,
    /// Whether the previous shutdown was clean (tail trusted without scan).
    pub clean: bool,
    /// Bytes cut from the tail by recovery.
    pub truncated_bytes: u64,
    /// Offsets of the producer-state snapshots found, in no order.
    pub snapshot_offsets: Vec<u64>,
}

pub(crate) fn load(
    dir: &Path,
    params: &SegmentParams,
    budget: &Arc<FileBudget>,
    now_ms: i64,
) -> Result<Loaded, LogError> {
    fs::create_dir_all(dir).map_err(io_err("creating partition directory", dir))?;

    let mut bases = Vec::new();
    let mut index_files = Vec::new();
    let mut snapshot_offsets = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("listing partition directory", dir))? {
        let entry = entry.map_err(io_err("listing partition directory", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if name.ends_with(&format!(".{TMP_SUFFIX}")) {
            info!(file = %entry.path().display(), "removing leftover temporary file");
            fs::remove_file(entry.path()).map_err(io_err("removing temporary file", &entry.path()))?;
            continue;
        }
        match parse_segment_file(name) {
            Some((base, LOG_SUFFIX)) => bases.push(base),
            Some((base, INDEX_SUFFIX | TIME_INDEX_SUFFIX)) => index_files.push((base, entry.path())),
            Some((offset, SNAPSHOT_SUFFIX)) => snapshot_offsets.push(offset),
            _ => {}
        }
    }
    bases.sort_unstable();
    for (base, path) in index_files {
        if bases.binary_search(&base).is_err() {
            info!(file = %path.display(), "removing index without a segment");
            fs::remove_file(&path).map_err(io_err("removing orphan index", &path))?;
        }
    }

    let marker = checkpoint::read_clean_shutdown(dir);
    checkpoint::remove_clean_shutdown(dir)?;
    let checkpointed_start = checkpoint::read_log_start_offset(dir);

    if bases.is_empty() {
        let base = checkpointed_start.unwrap_or(0);
        let seg = LogSegment::create(dir, base, now_ms, budget)?;
        return Ok(Loaded {
            sealed: BTreeMap::new(),
            active: seg,
            log_start_offset: base,
            log_end_offset: base,
            clean: marker.is_some(),
            truncated_bytes: 0,
            snapshot_offsets,
        });
    }

    let mut sealed = BTreeMap::new();
    let tail_base = bases[bases.len() - 1];
    for pair in bases.windows(2) {
        let seg = LogSegment::load(dir, pair[0], pair[1], false, params, budget, now_ms)?;
        sealed.insert(pair[0], seg);
    }

    let tail_path = file_names::log_file(dir, tail_base);
    let tail_size = checkpoint::file_len(&tail_path);
    let trusted = marker.filter(|m| {
        m.active_base_offset == tail_base && Some(m.active_size) == tail_size && m.log_end_offset >= tail_base
    });
    let (tail, truncated_bytes, clean) = match trusted {
        Some(m) => (LogSegment::load(dir, tail_base, m.log_end_offset, true, params, budget, now_ms)?, 0, true),
        None => {
            if marker.is_some() {
                warn!(dir = %dir.display(), "clean-shutdown marker does not match the files; recovering");
            } else {
                info!(dir = %dir.display(), "unclean shutdown; recovering the last segment");
            }
            let (seg, cut) = LogSegment::recover(dir, tail_base, params, budget, now_ms)?;
            (seg, cut, false)
        }
    };
    let log_end_offset = tail.next_offset();

    let first_base = bases[0];
    let log_start_offset = checkpointed_start.unwrap_or(first_base).clamp(first_base, log_end_offset);

    // Finish a retention run that advanced the start but crashed before
    // deleting: every sealed segment whose successor starts at or below the
    // log start holds nothing readable.
    let mut removed = false;
    loop {
        let mut bases = sealed.keys().copied();
        let Some(first) = bases.next() else {
            break;
        };
        if bases.next().unwrap_or(tail.base_offset()) > log_start_offset {
            break;
        }
        if let Some(seg) = sealed.remove(&first) {
            info!(segment = %seg.log_path().display(), "deleting segment below the log start offset");
            seg.delete()?;
            removed = true;
        }
    }
    if removed {
        fsio::fsync_dir(dir).map_err(io_err("syncing directory", dir))?;
    }

    Ok(Loaded { sealed, active: tail, log_start_offset, log_end_offset, clean, truncated_bytes, snapshot_offsets })
}
