//! Damaged blob files: how they are recognised, and how they are moved aside so that the store
//! heals.
//!
//! Invariants:
//! - A blob is read only through [`BlobStore::open_blob`]: the path under `blobs/` is opened
//!   without following symlinks and the descriptor must be a regular file. A symlink or any
//!   other entry at a blob's name is damage (its target, inside or outside the store, is never
//!   read).
//! - Damage that a check finds (a verified read, `verify`, a write that finds its bytes
//!   already stored) is moved into `quarantine/` at once, by a rename of the entry that was
//!   checked (the inode is compared before the move, so a fresh copy that a healing writer
//!   published meanwhile is never taken). The blob's name is then free: the next write of
//!   those bytes stores them afresh, and every record naming them reads right again.
//! - A write that finds its content already stored (a dedup hit) checks the stored file before
//!   it relies on it: a regular file of the right size whose bytes hash to its name. Anything
//!   else is quarantined and the write publishes its own complete copy. The check costs one
//!   read and hash of the stored blob, on dedup hits only; a new blob costs nothing extra.
//! - Nothing is ever deleted from `quarantine/` by runstash: an operator inspects and removes it.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::atomic::unique_token;
use crate::blobs::BlobStore;
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::hash::{Digest, hash_open_file};

/// The directory, under the store root, that damaged blob files are moved into.
pub const QUARANTINE_DIR: &str = "quarantine";

/// A file in `quarantine/`: the blob it was stored as, where it is now, its size.
#[derive(Debug, Clone, PartialEq)]
pub struct Quarantined {
    /// The blob's digest, when the file's name still says it.
    pub digest: Option<Digest>,
    pub path: PathBuf,
    pub size: u64,
}

impl BlobStore {
    pub fn quarantine_dir(&self) -> PathBuf {
        self.root().join(QUARANTINE_DIR)
    }

    /// Opens a blob file for reading: `NotFound` when there is none, `Corrupt` (after moving
    /// the entry to quarantine) when its name holds a symlink or anything but a regular file.
    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        self.check_digest(d)?;
        let p = self.path_of(d);
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(
                (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32,
            )
            .open(&p);
        let file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::not_found(format!("no blob {d} in the store")).with_path(&p));
            }
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                let at = self.quarantine(d, None)?;
                return Err(not_a_file(d, &p, "a symlink", at.as_deref()));
            }
            Err(e) => return Err(Error::io("open", &p, e)),
        };
        let meta = file.metadata().ctx("stat", &p)?;
        if !meta.is_file() {
            let at = self.quarantine(d, Some(&meta))?;
            return Err(not_a_file(d, &p, "not a regular file", at.as_deref()));
        }
        Ok(file)
    }

    /// Re-hashes an open blob file; if its bytes no longer hash to `d`, moves it to quarantine
    /// and says so with `Ok(false)`.
    pub(crate) fn check_open(&self, d: &Digest, file: &File) -> Result<bool> {
        let p = self.path_of(d);
        let (got, _) = hash_open_file(self.algo(), file, &p)?;
        if got == *d {
            return Ok(true);
        }
        let meta = file.metadata().ctx("stat", &p)?;
        self.quarantine(d, Some(&meta))?;
        Ok(false)
    }

    /// For a write whose bytes (`size` of them) were already stored: whether the stored file
    /// can be relied on. Damage is moved to quarantine (`Ok(false)`: the caller publishes its
    /// own copy); a file that vanished meanwhile is `Ok(false)` too.
    pub(crate) fn existing_intact(&self, d: &Digest, size: u64) -> Result<bool> {
        let file = match self.open_blob(d) {
            Ok(f) => f,
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Corrupt) => {
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let meta = file.metadata().ctx("stat", &self.path_of(d))?;
        if meta.len() != size {
            self.quarantine(d, Some(&meta))?;
            return Ok(false);
        }
        self.check_open(d, &file)
    }

    /// Moves the entry at `d`'s blob name into `quarantine/`. With `checked`, only if the name
    /// still holds that inode (a copy published since is left alone). Returns where it went.
    pub(crate) fn quarantine(
        &self,
        d: &Digest,
        checked: Option<&std::fs::Metadata>,
    ) -> Result<Option<PathBuf>> {
        let p = self.path_of(d);
        let now = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("stat", &p, e)),
        };
        if let Some(c) = checked
            && (c.dev(), c.ino()) != (now.dev(), now.ino())
        {
            return Ok(None);
        }
        let dir = self.quarantine_dir();
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create directory", &dir, e)),
        }
        let dest = dir.join(format!("{}.{}", d.hex(), unique_token()));
        match std::fs::rename(&p, &dest) {
            Ok(()) => Ok(Some(dest)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("move to quarantine", &p, e)),
        }
    }

    /// Every file in `quarantine/`, sorted by path.
    pub fn quarantined(&self) -> Result<Vec<Quarantined>> {
        let dir = self.quarantine_dir();
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("list", &dir, e)),
        };
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.ctx("list", &dir)?;
            let name = ent.file_name().to_string_lossy().into_owned();
            let hex = name.split('.').next().unwrap_or("");
            let digest = format!("{}:{hex}", self.algo()).parse::<Digest>().ok();
            let size = ent.metadata().map(|m| m.len()).unwrap_or(0);
            out.push(Quarantined {
                digest,
                path: ent.path(),
                size,
            });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }
}

/// Whether a blob's name holds a regular file (never following a symlink there).
pub(crate) fn is_blob_file(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file())
}

fn not_a_file(d: &Digest, p: &Path, what: &str, moved: Option<&Path>) -> Error {
    let moved = moved.map_or(String::new(), |m| format!("; moved to {}", m.display()));
    Error::corrupt(format!(
        "blob {d} is damaged: {} is {what}{moved}",
        p.display()
    ))
    .with_path(p)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::atomic::Durability;
    use crate::hash::HashAlgo;

    fn store(name: &str) -> BlobStore {
        let d = std::env::temp_dir().join(format!("runstash-damage-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("staging")).unwrap();
        std::fs::create_dir_all(d.join("blobs")).unwrap();
        BlobStore::new(d.canonicalize().unwrap(), HashAlgo::Blake3, Durability::Os)
    }

    #[test]
    fn symlinks_are_damage_and_never_read() {
        let s = store("link");
        let a = s.put_bytes(b"mine").unwrap();
        let outside = s.root().join("outside");
        std::fs::write(&outside, b"theirs").unwrap();
        std::fs::remove_file(&a.path).unwrap();
        std::os::unix::fs::symlink(&outside, &a.path).unwrap();
        assert_eq!(
            s.read(&a.digest, false).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
        assert!(std::fs::symlink_metadata(&a.path).is_err(), "moved aside");
        assert_eq!(s.quarantined().unwrap().len(), 1);
        assert_eq!(std::fs::read(&outside).unwrap(), b"theirs");
        assert!(s.put_bytes(b"mine").unwrap().created, "stored afresh");
        assert_eq!(s.read(&a.digest, true).unwrap(), b"mine");
    }

    #[test]
    fn a_dedup_hit_on_damaged_bytes_stores_them_again() {
        let s = store("dedup");
        for damage in [&b"MINE"[..], b"mi", b""] {
            let a = s.put_bytes(b"mine").unwrap();
            std::fs::set_permissions(&a.path, std::fs::Permissions::from_mode(0o644)).unwrap();
            std::fs::write(&a.path, damage).unwrap();
            let b = s.put_bytes(b"mine").unwrap();
            assert!(b.created, "damage {damage:?} is replaced");
            assert_eq!(s.read(&a.digest, true).unwrap(), b"mine");
            std::fs::remove_file(&a.path).unwrap();
        }
        assert_eq!(s.quarantined().unwrap().len(), 3);
    }
}
