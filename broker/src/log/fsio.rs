//! The few file operations whose failure modes matter (writes that can hit
//! ENOSPC, directory fsync). Unit tests inject "disk full" here, since a real
//! full file system cannot be produced portably inside `cargo test`.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// `pwrite` of the whole buffer. Under test, a write budget can cut it short
/// with ENOSPC after a partial write, exactly like a real full disk.
pub(crate) fn write_all_at(file: &File, buf: &[u8], pos: u64) -> io::Result<()> {
    #[cfg(test)]
    if let Some(n) = fault::take(buf.len()) {
        file.write_all_at(&buf[..n], pos)?;
        if n < buf.len() {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        return Ok(());
    }
    file.write_all_at(buf, pos)
}

/// Makes a create, rename or unlink in `dir` durable.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes zeros over `[from, to)`. Used instead of `set_len` to grow index
/// files: `set_len` makes a sparse hole, and a store into a mapped hole on a
/// full disk kills the process with SIGBUS, while writing real zeros fails
/// here, with ENOSPC, as an ordinary error.
pub(crate) fn zero_fill(file: &File, from: u64, to: u64) -> io::Result<()> {
    const CHUNK: usize = 64 * 1024;
    let zeros = [0u8; CHUNK];
    let mut pos = from;
    while pos < to {
        let n = (to - pos).min(CHUNK as u64) as usize;
        write_all_at(file, &zeros[..n], pos)?;
        pos += n as u64;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod fault {
    use std::cell::Cell;

    thread_local! {
        /// Bytes this thread may still write before writes fail with ENOSPC.
        static BUDGET: Cell<Option<u64>> = const { Cell::new(None) };
    }

    pub(crate) fn set_write_budget(bytes: Option<u64>) {
        BUDGET.with(|b| b.set(bytes));
    }

    /// How many of `len` bytes may be written; `None` = no limit.
    pub(super) fn take(len: usize) -> Option<usize> {
        BUDGET.with(|b| {
            let left = b.get()?;
            let n = left.min(len as u64);
            b.set(Some(left - n));
            Some(n as usize)
        })
    }
}
