//! `BlobStore`: content-addressed, immutable files under `blobs/<2 hex>/<62 hex>`.
//!
//! Invariants:
//! - A blob file, once at its final name, holds exactly the bytes whose hash is its name, and is
//!   read-only (mode 0444). It is published with `RENAME_NOREPLACE`, so an existing blob is never
//!   overwritten: writers of the same content race harmlessly and the bytes are stored once.
//! - Every temp file lives in `staging/` (same filesystem as `blobs/`), so publishing is a
//!   rename, never a copy.
//! - Nothing outside the store root is ever written; `ingest` only takes files that resolve to a
//!   path inside `staging/`, which must be a real directory of the store (not a symlink), and
//!   only a staged file with one name (a hard link to a user's file would make the user's inode
//!   a blob that its owner can still change).
//! - A write whose bytes are already stored relies on the stored file only after checking it
//!   (see `damage.rs`); damage is moved aside and the write stores its own copy.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use std::os::unix::fs::MetadataExt;

use crate::atomic::{
    AtomicFile, Durability, create_exclusive, create_unnamed, fsync_dir, link_noreplace,
    link_unnamed_noreplace, unique_token,
};
use crate::damage::is_blob_file;
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::hash::{Digest, HashAlgo, hash_bytes};
use crate::input::{Links, open_regular};
use crate::paths::{ensure_inside, normalize_ext};

pub use crate::blob_writer::BlobWriter;
use crate::blob_writer::Sink;

/// Files below this size are read into memory and written in one call; larger ones are copied
/// by the kernel while another thread hashes them.
const KERNEL_COPY_MIN: u64 = 1 << 20;

/// How many times a write replaces a damaged stored copy of its bytes before it gives up (each
/// try moves the damaged file aside; only a file damaged again at once makes a second needed).
const HEAL_TRIES: usize = 4;

/// The outcome of storing bytes.
#[derive(Debug, Clone)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
    pub path: PathBuf,
    /// False when the content was already stored (deduplicated): nothing new was written.
    pub created: bool,
}

/// What `verify_all` found.
#[derive(Debug, Default, Clone)]
pub struct VerifyReport {
    pub checked: u64,
    /// Blobs whose bytes do not hash to their name.
    pub corrupt: Vec<PathBuf>,
    /// Files under `blobs/` that are not named like a blob.
    pub stray: Vec<PathBuf>,
    /// Blobs that live records name, packed in a log segment that is gone.
    pub missing: Vec<Digest>,
}

#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
    blobs: PathBuf,
    pub(crate) staging: PathBuf,
    pub(crate) algo: HashAlgo,
    pub(crate) durability: Durability,
}

impl BlobStore {
    /// `root` must be canonical and already hold `blobs/` and `staging/`.
    pub fn new(root: PathBuf, algo: HashAlgo, durability: Durability) -> Self {
        BlobStore {
            blobs: root.join("blobs"),
            staging: root.join("staging"),
            root,
            algo,
            durability,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn staging_dir(&self) -> &Path {
        &self.staging
    }

    pub fn algo(&self) -> HashAlgo {
        self.algo
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Where the blob with this digest lives (whether or not it exists).
    pub fn path_of(&self, d: &Digest) -> PathBuf {
        let hex = d.hex();
        self.blobs.join(&hex[..2]).join(&hex[2..])
    }

    /// A digest of this store's algorithm, or an error naming the mismatch.
    pub fn check_digest(&self, d: &Digest) -> Result<()> {
        if d.algo() != self.algo {
            return Err(Error::invalid(format!(
                "{d} is a {} digest but this store hashes with {}",
                d.algo(),
                self.algo
            )));
        }
        Ok(())
    }

    /// Renames a finished temp file to the blob path, creating the fan-out directory on first
    /// use. Returns whether this call created the blob.
    pub(crate) fn publish(&self, f: &mut AtomicFile, d: &Digest, size: u64) -> Result<bool> {
        self.publish_checked(d, size, |dest| f.try_commit_noreplace(dest))
    }

    /// Gives `size` bytes hashing to `d` the blob name with `link` (true: this call created
    /// it). On a dedup hit the stored file is checked ([`BlobStore::existing_intact`]): if it
    /// is damaged it has been moved aside, and `link` runs again.
    pub(crate) fn publish_checked(
        &self,
        d: &Digest,
        size: u64,
        mut link: impl FnMut(&Path) -> Result<bool>,
    ) -> Result<bool> {
        let dest = self.path_of(d);
        for _ in 0..HEAL_TRIES {
            let created = match link(&dest) {
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    self.make_fanout(&dest)?;
                    link(&dest)?
                }
                r => r?,
            };
            if created || self.existing_intact(d, size)? {
                return Ok(created);
            }
        }
        Err(heal_failed(d, &dest))
    }

    fn make_fanout(&self, dest: &Path) -> Result<()> {
        let dir = dest.parent().unwrap_or(&self.blobs);
        std::fs::create_dir_all(dir).ctx("create directory", dir)?;
        if self.durability == Durability::Fsync {
            fsync_dir(&self.blobs)?;
        }
        Ok(())
    }

    pub(crate) fn info(&self, digest: Digest, size: u64, created: bool) -> BlobInfo {
        BlobInfo {
            path: self.path_of(&digest),
            digest,
            size,
            created,
        }
    }

    /// Stores a buffer.
    ///
    /// In `"os"` durability the bytes go to an unnamed temp file (`O_TMPFILE` in `staging/`)
    /// that is linked at the blob path; `linkat` never replaces, so a blob that already exists is
    /// left alone and the unnamed file simply vanishes on close. No existence `stat` first: it
    /// would cost every new blob ~4 us to save a duplicate ~25 us.
    ///
    /// In `"fsync"` durability a named temp is fsynced, renamed with `RENAME_NOREPLACE` and the
    /// directory fsynced; there the existence `stat` is kept, as it saves a duplicate two fsyncs.
    pub fn put_bytes(&self, data: &[u8]) -> Result<BlobInfo> {
        let digest = hash_bytes(self.algo, data);
        let size = data.len() as u64;
        if self.durability == Durability::Os {
            if let Some(created) = self.put_unnamed(data, &digest)? {
                return Ok(self.info(digest, size, created));
            }
        } else if is_blob_file(&self.path_of(&digest)) && self.existing_intact(&digest, size)? {
            return Ok(self.info(digest, size, false));
        }
        let mut f = AtomicFile::create_in(&self.staging, self.durability, None, 0o444, "")?;
        f.write_all(data)?;
        let created = self.publish(&mut f, &digest, size)?;
        Ok(self.info(digest, size, created))
    }

    /// The `O_TMPFILE` + `linkat` path of `put_bytes`; `Ok(None)` when this system cannot do it.
    fn put_unnamed(&self, data: &[u8], digest: &Digest) -> Result<Option<bool>> {
        let Some(mut file) = create_unnamed(&self.staging, 0o444)? else {
            return Ok(None);
        };
        file.write_all(data).ctx("write", &self.staging)?;
        let dest = self.path_of(digest);
        for _ in 0..HEAL_TRIES {
            let linked = match link_unnamed_noreplace(&file, &dest) {
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    self.make_fanout(&dest)?;
                    link_unnamed_noreplace(&file, &dest)?
                }
                r => r?,
            };
            match linked {
                Some(false) if !self.existing_intact(digest, data.len() as u64)? => continue,
                other => return Ok(other),
            }
        }
        Err(heal_failed(digest, &dest))
    }

    /// A streaming writer whose bytes become a blob on `commit`. `ext` only names the temp file.
    pub fn writer(&self, ext: &str) -> Result<BlobWriter> {
        let mut w = self.writer_buffered(ext, 0)?;
        w.spill()?;
        Ok(w)
    }

    /// A writer that holds up to `spill_at` bytes in memory before it makes its temp file.
    pub fn writer_buffered(&self, ext: &str, spill_at: u64) -> Result<BlobWriter> {
        let ext = normalize_ext(ext)?;
        Ok(BlobWriter {
            store: self.clone(),
            ext,
            sink: Sink::Mem {
                buf: Vec::new(),
                pos: 0,
            },
            spill_at,
        })
    }

    /// Stores a copy of the file at `src`, which is left untouched. One pass over the source:
    /// large files are copied by the kernel (`copy_file_range`) while a second thread hashes the
    /// same pages, so the hash costs little beyond the copy.
    pub fn save(&self, src: &Path) -> Result<BlobInfo> {
        let (file, meta) = open_regular(src, Links::Follow, "save")?;
        if meta.len() < KERNEL_COPY_MIN {
            let mut buf = Vec::with_capacity(meta.len() as usize);
            (&file).read_to_end(&mut buf).ctx("read", src)?;
            return self.put_bytes(&buf);
        }
        let len = meta.len();
        let mut tmp = AtomicFile::create_in(&self.staging, self.durability, None, 0o444, "")?;
        // Safety: read-only map of the caller's file, dropped before return. If the caller
        // truncates the file while we copy it, the process may get SIGBUS; saving a file that is
        // being rewritten is a caller error we cannot make safe without a second copy.
        let map = unsafe { memmap2::Mmap::map(&file) }.ctx("mmap", src)?;
        let algo = self.algo;
        let (digest, copied) = std::thread::scope(|s| {
            let hasher = s.spawn(|| {
                let mut h = crate::hash::Hasher::new(algo);
                h.update(&map);
                h.finalize()
            });
            let copied = copy_range(&file, tmp.file(), len, src, tmp.temp_path());
            let digest = hasher
                .join()
                .map_err(|_| Error::new(ErrorKind::Io, "hash thread failed"));
            (digest, copied)
        });
        let digest = digest?;
        let copied = copied?;
        if copied != len {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "{} changed size while being saved ({len} -> {copied} bytes)",
                    src.display()
                ),
            ));
        }
        tmp.note_external_write(copied);
        let created = self.publish(&mut tmp, &digest, len)?;
        Ok(self.info(digest, len, created))
    }

    /// Creates an empty file in `staging/` for the caller to fill, then `ingest`.
    pub fn stage(&self, ext: &str) -> Result<PathBuf> {
        let ext = normalize_ext(ext)?;
        self.check_staging()?;
        let path = self.staging.join(format!("stage.{}{ext}", unique_token()));
        create_exclusive(&path, 0o644)?;
        Ok(path)
    }

    /// Creates an empty directory in `staging/` for the caller to fill.
    pub fn stage_dir(&self, suffix: &str) -> Result<PathBuf> {
        if !suffix.is_empty() {
            crate::paths::validate_component(suffix, "directory suffix")?;
        }
        self.check_staging()?;
        let path = self.staging.join(format!("dir.{}{suffix}", unique_token()));
        std::fs::create_dir(&path).ctx("create directory", &path)?;
        Ok(path)
    }

    /// Moves a file from `staging/` into the blob store: a link, no copy. The staged name is
    /// gone afterwards (also when the content was already stored).
    pub fn ingest(&self, staged: &Path) -> Result<BlobInfo> {
        let (real, info) = self.ingest_keep(staged)?;
        std::fs::remove_file(&real).ctx("remove", &real)?;
        Ok(info)
    }

    /// Puts a file of `staging/` into the blob store by a hard link (no copy) and leaves the
    /// staged name in place, for the caller to remove once the blob is recorded: until then
    /// the caller can [`link_staged`](Self::link_staged) it again if a concurrent garbage
    /// collection removed the blob. Returns the staged file's resolved path and the blob.
    pub fn ingest_keep(&self, staged: &Path) -> Result<(PathBuf, BlobInfo)> {
        crate::input::check_no_nul(staged)?;
        self.check_staging()?;
        let staging = self.staging.canonicalize().ctx("resolve", &self.staging)?;
        let meta = std::fs::symlink_metadata(staged).ctx("stat", staged)?;
        if meta.file_type().is_symlink() {
            return Err(Error::invalid(format!(
                "refusing to ingest {}: it is a symlink",
                staged.display()
            )));
        }
        if !meta.is_file() {
            return Err(Error::invalid(format!(
                "cannot ingest {}: not a regular file",
                staged.display()
            )));
        }
        let real = ensure_inside(&staging, staged, "staged path")?;
        if real.parent() != Some(staging.as_path()) {
            return Err(Error::invalid(format!(
                "staged path {} is not directly inside the staging area {}",
                staged.display(),
                staging.display()
            )));
        }
        let (file, meta) = open_regular(&real, Links::Refuse, "ingest")?;
        if meta.nlink() != 1 {
            return Err(Error::invalid(format!(
                "refusing to ingest {}: it has {} hard links, so it may be a file outside the \
                 store; a staged file must have exactly one name (write it, or copy it, into \
                 the staged path)",
                staged.display(),
                meta.nlink()
            )));
        }
        let (digest, size) = crate::hash::hash_open_file(self.algo, &file, &real)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o444))
            .ctx("chmod", &real)?;
        if self.durability == Durability::Fsync {
            file.sync_all().ctx("fsync", &real)?;
        }
        drop(file);
        let created = self.link_staged(&real, &digest, size)?;
        Ok((real, self.info(digest, size, created)))
    }

    /// `staging/` must be the store's own directory: a symlink there could lead `ingest` to
    /// link files of anywhere into `blobs/`.
    fn check_staging(&self) -> Result<()> {
        let meta = std::fs::symlink_metadata(&self.staging).ctx("stat", &self.staging)?;
        if meta.is_dir() {
            return Ok(());
        }
        let what = if meta.file_type().is_symlink() {
            "a symlink"
        } else {
            "not a directory"
        };
        Err(Error::corrupt(format!(
            "the staging area {} is {what}; it must be a directory of the store (remove it and \
             reopen the store to re-create it)",
            self.staging.display()
        ))
        .with_path(&self.staging))
    }

    /// Links the staged file `real` (already hashed to `digest`, `size` bytes) at the blob
    /// path, unless an intact blob is there. Returns whether this call created the blob.
    pub fn link_staged(&self, real: &Path, digest: &Digest, size: u64) -> Result<bool> {
        let dest = self.path_of(digest);
        let created = self.publish_checked(digest, size, |dest| link_noreplace(real, dest))?;
        if created && self.durability == Durability::Fsync {
            fsync_dir(dest.parent().unwrap_or(&self.blobs))?;
        }
        Ok(created)
    }

    /// Whether a blob file is there (a regular file at its name; a symlink is not one).
    pub fn exists(&self, d: &Digest) -> bool {
        is_blob_file(&self.path_of(d))
    }

    /// Opens a blob for reading (see [`BlobStore::open_blob`]).
    pub fn open(&self, d: &Digest) -> Result<File> {
        self.open_blob(d)
    }

    /// Reads a whole blob; with `verify`, checks that the bytes still hash to `d` (damage is
    /// moved to quarantine and is a `Corrupt` error).
    pub fn read(&self, d: &Digest, verify: bool) -> Result<Vec<u8>> {
        let mut f = self.open_blob(d)?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).ctx("read", &self.path_of(d))?;
        if verify && hash_bytes(self.algo, &buf) != *d {
            let meta = f.metadata().ctx("stat", &self.path_of(d))?;
            let moved = self.quarantine(d, Some(&meta))?;
            let moved = moved.map_or(String::new(), |m| format!("; moved to {}", m.display()));
            return Err(
                Error::corrupt(format!("blob {d} does not match its hash{moved}"))
                    .with_path(&self.path_of(d)),
            );
        }
        Ok(buf)
    }

    /// Re-hashes one blob. `Ok(false)` means the bytes no longer match (the file is moved to
    /// quarantine); a missing blob is an error, and so is a symlink or a non-file at its name.
    pub fn verify(&self, d: &Digest) -> Result<bool> {
        let f = self.open_blob(d)?;
        self.check_open(d, &f)
    }

    /// Re-hashes every blob and lists stray files under `blobs/`. Damaged blobs (bytes that
    /// do not hash to the name, a symlink or a non-file at a blob name) are reported and moved
    /// to quarantine.
    pub fn verify_all(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        for (path, digest) in self.walk()? {
            match digest {
                None => report.stray.push(path),
                Some(d) => {
                    report.checked += 1;
                    let intact = match self.open_blob(&d) {
                        Ok(f) => self.check_open(&d, &f)?,
                        // Removed meanwhile (a concurrent gc): nothing left to check.
                        Err(e) if e.kind() == ErrorKind::NotFound => {
                            report.checked -= 1;
                            continue;
                        }
                        Err(e) if e.kind() == ErrorKind::Corrupt => false,
                        Err(e) => return Err(e),
                    };
                    if !intact {
                        report.corrupt.push(path);
                    }
                }
            }
        }
        Ok(report)
    }

    /// Every file under `blobs/`, with its digest when its name is a blob name.
    pub fn walk(&self) -> Result<Vec<(PathBuf, Option<Digest>)>> {
        let mut out = Vec::new();
        let top = match std::fs::read_dir(&self.blobs) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io("list", &self.blobs, e)),
        };
        for fan in top {
            let fan = fan.ctx("list", &self.blobs)?;
            let fan_name = fan.file_name().to_string_lossy().into_owned();
            let fan_path = fan.path();
            if !fan.file_type().ctx("stat", &fan_path)?.is_dir() {
                out.push((fan_path, None));
                continue;
            }
            for ent in std::fs::read_dir(&fan_path).ctx("list", &fan_path)? {
                let ent = ent.ctx("list", &fan_path)?;
                let name = ent.file_name().to_string_lossy().into_owned();
                let digest = format!("{}:{fan_name}{name}", self.algo)
                    .parse::<Digest>()
                    .ok();
                // A symlink or other non-directory at a blob name keeps its digest: it is
                // damage of that blob (verify finds it), not a stray file.
                let is_dir = ent.file_type().map(|t| t.is_dir()).unwrap_or(false);
                out.push((ent.path(), digest.filter(|_| !is_dir)));
            }
        }
        out.sort();
        Ok(out)
    }
}

fn heal_failed(d: &Digest, dest: &Path) -> Error {
    Error::corrupt(format!(
        "blob {d}: the stored copy was found damaged {HEAL_TRIES} times in a row while this \
         write replaced it; is something rewriting {}?",
        dest.display()
    ))
    .with_path(dest)
}

/// Copies `len` bytes from `src` to `dst` in the kernel; falls back to read/write where
/// `copy_file_range` is not supported (for example across filesystems on old kernels).
fn copy_range(src: &File, dst: &File, len: u64, src_path: &Path, dst_path: &Path) -> Result<u64> {
    let mut off_in = 0u64;
    let mut off_out = 0u64;
    while off_in < len {
        let want = (len - off_in).min(1 << 30) as usize;
        match rustix::fs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), want) {
            Ok(0) => break,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::XDEV | rustix::io::Errno::NOSYS | rustix::io::Errno::INVAL)
                if off_in == 0 =>
            {
                return copy_by_read(src, dst, src_path, dst_path);
            }
            Err(e) => return Err(Error::io("copy", dst_path, std::io::Error::from(e))),
        }
    }
    Ok(off_out)
}

fn copy_by_read(src: &File, dst: &File, src_path: &Path, dst_path: &Path) -> Result<u64> {
    use std::io::Write;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    let (mut r, mut w) = (src, dst);
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", src_path, e)),
        };
        w.write_all(&buf[..n]).ctx("write", dst_path)?;
        total += n as u64;
    }
}

#[cfg(test)]
#[path = "blobs_tests.rs"]
mod tests;
