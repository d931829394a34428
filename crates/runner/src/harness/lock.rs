//! One writer per run folder, across processes: two `grid run` on one output folder (a cluster
//! requeue, a grid started twice, array tasks) share the cells instead of working the same ones.
//!
//! A process runs a cell only while it holds the exclusive lock of the cell's `.lock` file
//! ([`RunLock`]); a second process finds the lock held, skips the cell and goes on with the
//! next one. The locks are advisory file locks (`flock` on Unix, `LockFileEx` on Windows,
//! through `std::fs::File::lock`): the kernel drops them when their process ends, so a
//! `kill -9` leaves no stale lock behind, unlike a PID file. On NFS they work where the mount
//! supports locking (Linux maps them to byte-range locks).
//!
//! A cell that reads another cell's results (a fine-tuning cell and its study) waits for that
//! cell's lock ([`wait_for`]) before reading them. The grid's tables are rewritten under a lock of
//! their own ([`TablesLock`]). Every temporary name carries its writer's process id, and what a
//! killed process left behind is removed at the next start ([`clean_staging`]).

use std::fs::{File, TryLockError};
use std::path::Path;

use anyhow::{Context, Result};

/// The lock file of a run folder.
pub const LOCK_FILE: &str = ".lock";

/// The lock file of a grid's tables (`results.csv`, `results.parquet`).
const TABLES_LOCK_FILE: &str = ".results.lock";

fn open_lock(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))
}

/// The exclusive lock of a run folder, held while its cell runs and released when dropped.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Take `dir`'s lock, or `None` when another process holds it.
    pub fn try_acquire(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(LOCK_FILE);
        let file = open_lock(&path)?;
        // A second try after a moment: `grid list` ([`is_held`]) may hold a shared lock for an
        // instant, which must not make a runner skip the cell.
        for attempt in 0..2 {
            match file.try_lock() {
                Ok(()) => return Ok(Some(Self { _file: file })),
                Err(TryLockError::WouldBlock) if attempt == 0 => {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("cannot lock {}", path.display()));
                }
            }
        }
        unreachable!("the loop returns on its second try")
    }
}

/// Whether a process holds `dir`'s lock now (its cell is running). It looks by taking a shared
/// lock for an instant, which [`RunLock::try_acquire`] allows for by trying twice.
pub fn is_held(dir: &Path) -> bool {
    let Ok(file) = std::fs::File::open(dir.join(LOCK_FILE)) else {
        return false;
    };
    matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock))
}

/// Wait while another process holds `dir`'s lock (its cell is running); `true` when it waited.
/// A folder that does not exist yet is not waited for.
pub fn wait_for(dir: &Path) -> Result<bool> {
    if !dir.is_dir() {
        return Ok(false);
    }
    let path = dir.join(LOCK_FILE);
    let file = open_lock(&path)?;
    let waited = match file.try_lock_shared() {
        Ok(()) => false,
        Err(TryLockError::WouldBlock) => {
            file.lock_shared()
                .with_context(|| format!("cannot lock {}", path.display()))?;
            true
        }
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    };
    Ok(waited)
}

/// The lock of a grid's tables, held while they are rewritten (waits for another writer).
#[derive(Debug)]
pub struct TablesLock {
    _file: File,
}

impl TablesLock {
    /// Take the lock of the tables in `grid_dir`, waiting while another process holds it.
    pub fn acquire(grid_dir: &Path) -> Result<Self> {
        let path = grid_dir.join(TABLES_LOCK_FILE);
        let file = open_lock(&path)?;
        file.lock()
            .with_context(|| format!("cannot lock {}", path.display()))?;
        Ok(Self { _file: file })
    }
}

/// The process id in a temporary name: `NAME.PID.tmp` (files written through
/// [`crate::harness::results::write_atomic`], checkpoint staging folders).
fn writer_pid(name: &str) -> Option<u32> {
    let stem = name.strip_suffix(".tmp")?;
    stem.rsplit('.').next()?.parse().ok()
}

/// Whether process `pid` is alive, where the system says (Linux's `/proc`); `true` when it
/// cannot tell, so that nothing of a live writer is removed.
fn alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.is_dir() || pid == std::process::id() || proc.join(pid.to_string()).exists()
}

/// Remove the temporary files and folders (`*.tmp`) in `dir` that a killed process left
/// behind: all of them when this process holds the folder's lock (`owned`), else those whose
/// writer is no longer alive. Returns how many were removed.
pub fn clean_staging(dir: &Path, owned: bool) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".tmp") {
            continue;
        }
        if !owned && writer_pid(&name).is_none_or(alive) {
            continue;
        }
        let path = entry.path();
        let gone = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed += usize::from(gone.is_ok());
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_give_their_writer() {
        assert_eq!(writer_pid("results.csv.123.tmp"), Some(123));
        assert_eq!(writer_pid("checkpoint.77.tmp"), Some(77));
        assert_eq!(writer_pid("neurons.parquet.tmp"), None);
        assert_eq!(writer_pid("results.csv"), None);
    }

    #[test]
    fn a_held_lock_is_refused_and_waited_for() {
        let tmp = tempfile::tempdir().unwrap();
        let held = RunLock::try_acquire(tmp.path()).unwrap();
        assert!(held.is_some());
        // A second open file description is a second holder, as in another process.
        assert!(RunLock::try_acquire(tmp.path()).unwrap().is_none());
        assert!(is_held(tmp.path()), "grid list sees the cell running");
        let dir = tmp.path().to_owned();
        let waiter = std::thread::spawn(move || wait_for(&dir).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(held);
        assert!(waiter.join().unwrap(), "the waiter found the lock held");
        assert!(!is_held(tmp.path()));
        assert!(RunLock::try_acquire(tmp.path()).unwrap().is_some());
    }

    #[test]
    fn staging_of_dead_writers_is_removed_and_of_live_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dead = tmp.path().join(format!("results.csv.{}.tmp", u32::MAX - 1));
        let live = tmp
            .path()
            .join(format!("results.csv.{}.tmp", std::process::id()));
        let staging = tmp.path().join(format!("checkpoint.{}.tmp", u32::MAX - 2));
        std::fs::write(&dead, "x").unwrap();
        std::fs::write(&live, "x").unwrap();
        std::fs::create_dir_all(staging.join("model")).unwrap();
        assert_eq!(clean_staging(tmp.path(), false), 2);
        assert!(!dead.exists() && !staging.exists() && live.exists());
        assert_eq!(clean_staging(tmp.path(), true), 1);
        assert!(!live.exists());
    }
}
