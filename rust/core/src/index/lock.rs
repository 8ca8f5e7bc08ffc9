//! The index lock: an exclusive `flock` on `index/LOCK`, held by one process at a time.
//!
//! Invariants:
//! - The flock is taken on a descriptor this process opened itself ([`LockFd`]): a handle
//!   used after `fork()` opens its own (an inherited one shares the parent's flock, so both
//!   processes would append at once).
//! - A lock is held only while `index/LOCK` at its name is the file locked: a removed or
//!   replaced LOCK is opened again, since other processes lock the new one.
//! - Threads of one process share the descriptor, so the flock does not order them: callers
//!   hold their own mutex around it.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::Arc;

use rustix::fs::{FlockOperation, flock};

use crate::error::{Error, IoContext, Result};

/// Holds the index flock; released on drop.
pub(super) struct FileLock(Arc<File>);

impl FileLock {
    pub(super) fn exclusive(f: Arc<File>, path: &Path) -> Result<Self> {
        flock(&*f, FlockOperation::LockExclusive).map_err(|e| Error::io("lock", path, e.into()))?;
        Ok(FileLock(f))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = flock(&*self.0, FlockOperation::Unlock);
    }
}

/// `index/LOCK` as opened by one process: which process opened it and which file it is.
pub(super) struct LockFd {
    pub(super) pid: u32,
    file: Arc<File>,
    id: (u64, u64),
}

impl LockFd {
    pub(super) fn open(dir: &Path) -> Result<LockFd> {
        use std::os::unix::fs::MetadataExt;
        let file = open_lock(dir)?;
        let m = file.metadata().ctx("stat", &dir.join("LOCK"))?;
        Ok(LockFd {
            pid: std::process::id(),
            file: Arc::new(file),
            id: (m.dev(), m.ino()),
        })
    }

    /// Takes the flock, on the file at `dir/LOCK` now: when that is no longer this one
    /// (removed or replaced), opens it again, since other processes lock what is there.
    pub(super) fn acquire(&mut self, dir: &Path) -> Result<FileLock> {
        let path = dir.join("LOCK");
        loop {
            let held = FileLock::exclusive(self.file.clone(), &path)?;
            if self.at_its_name(&path)? {
                return Ok(held);
            }
            drop(held);
            *self = LockFd::open(dir)?;
        }
    }

    /// Whether `index/LOCK` at its name is still this file (so other processes lock it too).
    fn at_its_name(&self, path: &Path) -> Result<bool> {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(path) {
            Ok(m) => Ok((m.dev(), m.ino()) == self.id),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("stat", path, e)),
        }
    }
}

fn open_lock(dir: &Path) -> Result<File> {
    let lock_path = dir.join("LOCK");
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)
        .ctx("open", &lock_path)
}
