//! All partition logs of one data directory.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::{info, warn};

use super::Clock;
use super::config::LogConfig;
use super::error::{LogError, io_err};
use super::file_names::{DELETED_SUFFIX, is_valid_topic, parse_partition_dir, partition_dir_name};
use super::handles::FileBudget;
use super::partition_log::{Log, RetentionOutcome};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: u32) -> TopicPartition {
        TopicPartition { topic: topic.into(), partition }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// Owns every partition log under one directory and the shared
/// [`FileBudget`] that bounds their open files and maps, so a broker can
/// host many thousands of partitions.
pub struct LogManager {
    root: PathBuf,
    default_config: LogConfig,
    clock: Arc<dyn Clock>,
    budget: Arc<FileBudget>,
    logs: Mutex<HashMap<TopicPartition, Arc<Mutex<Log>>>>,
}

impl fmt::Debug for LogManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogManager").field("root", &self.root).field("budget", &self.budget).finish()
    }
}

impl LogManager {
    /// Opens every partition found under `root` (recovering each as needed)
    /// and finishes any deletion a crash interrupted. At most
    /// `max_open_segments` segments keep files open at a time.
    pub fn open(
        root: impl AsRef<Path>,
        default_config: LogConfig,
        max_open_segments: usize,
        clock: Arc<dyn Clock>,
    ) -> Result<LogManager, LogError> {
        let root = root.as_ref().to_path_buf();
        fs::create_dir_all(&root).map_err(io_err("creating data directory", &root))?;
        let budget = FileBudget::new(max_open_segments);
        let mut logs = HashMap::new();
        for entry in fs::read_dir(&root).map_err(io_err("listing data directory", &root))? {
            let entry = entry.map_err(io_err("listing data directory", &root))?;
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.ends_with(&format!(".{DELETED_SUFFIX}")) {
                info!(dir = %path.display(), "finishing interrupted partition deletion");
                fs::remove_dir_all(&path).map_err(io_err("deleting partition", &path))?;
                continue;
            }
            let Some((topic, partition)) = parse_partition_dir(&name) else {
                warn!(dir = %path.display(), "ignoring directory that is not a partition");
                continue;
            };
            let log = Log::open_with(&path, default_config.clone(), Arc::clone(&clock), Arc::clone(&budget))?;
            logs.insert(TopicPartition { topic, partition }, Arc::new(Mutex::new(log)));
        }
        Ok(LogManager { root, default_config, clock, budget, logs: Mutex::new(logs) })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<TopicPartition, Arc<Mutex<Log>>>> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn budget(&self) -> &Arc<FileBudget> {
        &self.budget
    }

    pub fn get(&self, tp: &TopicPartition) -> Option<Arc<Mutex<Log>>> {
        self.lock().get(tp).cloned()
    }

    /// Returns the partition's log, creating it (with `config`, or the
    /// default) if it does not exist.
    pub fn get_or_create(&self, tp: &TopicPartition, config: Option<LogConfig>) -> Result<Arc<Mutex<Log>>, LogError> {
        if !is_valid_topic(&tp.topic) {
            return Err(LogError::InvalidPartition(tp.to_string()));
        }
        let mut logs = self.lock();
        if let Some(log) = logs.get(tp) {
            return Ok(Arc::clone(log));
        }
        let dir = self.root.join(partition_dir_name(&tp.topic, tp.partition));
        let log = Log::open_with(
            dir,
            config.unwrap_or_else(|| self.default_config.clone()),
            Arc::clone(&self.clock),
            Arc::clone(&self.budget),
        )?;
        let log = Arc::new(Mutex::new(log));
        logs.insert(tp.clone(), Arc::clone(&log));
        Ok(log)
    }

    pub fn partitions(&self) -> Vec<TopicPartition> {
        let mut v: Vec<_> = self.lock().keys().cloned().collect();
        v.sort();
        v
    }

    /// Deletes a partition's log and directory. Waits for current users of
    /// the log to release it.
    pub fn delete(&self, tp: &TopicPartition) -> Result<bool, LogError> {
        let Some(log) = self.lock().remove(tp) else {
            return Ok(false);
        };
        let log = lock_owned(log);
        log.delete()?;
        Ok(true)
    }

    /// Runs flush-by-time, roll-by-time and retention on every partition;
    /// returns the total outcome. Errors of one partition are logged and do
    /// not stop the others.
    pub fn maintenance(&self) -> RetentionOutcome {
        let logs: Vec<_> = self.lock().iter().map(|(tp, l)| (tp.clone(), Arc::clone(l))).collect();
        let mut total = RetentionOutcome::default();
        for (tp, log) in logs {
            let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
            match log.maintenance() {
                Ok(o) => {
                    total.deleted_segments += o.deleted_segments;
                    total.deleted_bytes += o.deleted_bytes;
                }
                Err(e) => warn!(partition = %tp, error = %e, "log maintenance failed"),
            }
        }
        total
    }

    /// Clean shutdown of every partition; returns the first error after
    /// trying them all.
    pub fn close(self) -> Result<(), LogError> {
        let logs = std::mem::take(&mut *self.lock());
        let mut first_error = None;
        for (tp, log) in logs {
            if let Err(e) = lock_owned(log).close() {
                warn!(partition = %tp, error = %e, "closing log failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Takes the log out of its `Arc<Mutex<_>>`, waiting for other holders to
/// drop their handles by locking in turn.
fn lock_owned(log: Arc<Mutex<Log>>) -> Log {
    let mut log = log;
    loop {
        match Arc::try_unwrap(log) {
            Ok(m) => return m.into_inner().unwrap_or_else(|p| p.into_inner()),
            Err(shared) => {
                // Someone still holds a handle: wait for their lock to be
                // free, then retry.
                drop(shared.lock().unwrap_or_else(|p| p.into_inner()));
                std::thread::yield_now();
                log = shared;
            }
        }
    }
}
