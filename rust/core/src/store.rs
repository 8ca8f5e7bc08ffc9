//! `Store`: a store root on disk and the parts that live under it (its `STORE.json`:
//! [`crate::meta`]).
//!
//! Opening creates the layout of DESIGN.md when the root is new (or empty), and otherwise checks
//! that the store was made by a format this code knows and with the hash algorithm asked for.
//! A root that is a file, or a non-empty directory that is not a store, is refused rather than
//! written into.

use std::io::Read;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use crate::atomic::{Durability, clean_stale_temps, fsync_dir};
use crate::blobs::BlobStore;
use crate::damage::is_blob_file;
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::hash::{Digest, HashAlgo, hash_bytes};
use crate::index::{ArtifactId, Op, OwnedRecord, RecordMeta, SharedIndex};
use crate::input::{Links, open_regular};
use crate::meta::{
    META_FILE, StoreMeta, check_index_hash, check_meta, create, create_root, read_meta,
};

/// How to open a store.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    /// The algorithm for a new store; for an existing one, `Some` must match what it uses.
    pub hash: Option<HashAlgo>,
    pub durability: Durability,
    /// Payloads up to this many bytes are packed into the index log instead of getting a blob
    /// file of their own (0: never). See [`Store::put_bytes`].
    pub pack_max: u64,
    /// Create the store when the root is missing or empty; `false`: such a root is a
    /// `NotFound` error and nothing is written (the open of a command that only looks).
    pub create: bool,
}

/// Default of [`OpenOptions::pack_max`]: 64 KiB.
pub const DEFAULT_PACK_MAX: u64 = 64 << 10;
/// Largest accepted [`OpenOptions::pack_max`]: packed bytes travel in one log frame.
pub const PACK_MAX_LIMIT: u64 = 16 << 20;

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            hash: None,
            durability: Durability::Fsync,
            pack_max: DEFAULT_PACK_MAX,
            create: true,
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub struct Store {
    root: PathBuf,
    meta: StoreMeta,
    blobs: BlobStore,
    index: Arc<SharedIndex>,
    /// `file://` URI of `blobs/`, ending in `/`: a blob's URI is this plus its relative path.
    blob_uri_prefix: Arc<str>,
    pack_max: u64,
}

impl Store {
    pub fn open(root: &Path, opts: OpenOptions) -> Result<Store> {
        if root.as_os_str().is_empty() {
            return Err(Error::invalid("store root must not be empty"));
        }
        crate::input::check_no_nul(root)?;
        if opts.pack_max > PACK_MAX_LIMIT {
            return Err(Error::invalid(format!(
                "pack_max must be at most {PACK_MAX_LIMIT} bytes, not {}",
                opts.pack_max
            )));
        }
        if !opts.create && !root.join(META_FILE).is_file() {
            return Err(Error::not_found(format!(
                "no runstash store at {} (no {META_FILE})",
                root.display()
            )));
        }
        match std::fs::metadata(root) {
            Ok(m) if !m.is_dir() => {
                return Err(Error::invalid(format!(
                    "store root {} exists and is not a directory",
                    root.display()
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                create_root(root, opts.durability)?;
            }
            Err(e) => return Err(Error::io("stat", root, e)),
        }
        let root = root.canonicalize().ctx("resolve", root)?;
        let meta_path = root.join(META_FILE);
        let meta = match read_meta(&meta_path)? {
            Some(meta) => meta,
            None => create(&root, opts)?,
        };
        check_meta(&meta, &meta_path, opts.hash)?;
        let algo: HashAlgo = meta.hash.parse()?;
        let mut made = false;
        for sub in ["blobs", "staging"] {
            let p = root.join(sub);
            match std::fs::create_dir(&p) {
                Ok(()) => made = true,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && p.is_dir() => {}
                Err(e) => return Err(Error::io("create directory", &p, e)),
            }
        }
        if made && opts.durability == Durability::Fsync {
            // Otherwise a power cut may take `index/` (and every acknowledged record) with it.
            fsync_dir(&root)?;
        }
        // Leftover temps of crashed writers are garbage by construction (never published).
        clean_stale_temps(&root.join("staging"))?;
        let blobs = BlobStore::new(root.clone(), algo, opts.durability);
        let index = Arc::new(SharedIndex::open(&root.join("index"), opts.durability)?);
        check_index_hash(&index, algo, &meta_path)?;
        let blob_uri_prefix = Arc::from(format!("{}/", crate::uri::file_uri(&root.join("blobs"))));
        Ok(Store {
            root,
            meta,
            blobs,
            index,
            blob_uri_prefix,
            pack_max: opts.pack_max,
        })
    }

    pub fn pack_max(&self) -> u64 {
        self.pack_max
    }

    /// Before anything deletes: `STORE.json` still says what it said at open, and the index's
    /// current segment is still the file this handle has open. `Corrupt` otherwise.
    pub fn check_intact(&self) -> Result<()> {
        let path = self.root.join(META_FILE);
        match read_meta(&path)? {
            Some(m) if m.hash == self.meta.hash => {}
            Some(m) => {
                return Err(Error::corrupt(format!(
                    "{} now says hash {:?}, not {:?} as when this store was opened; refusing \
                     to delete anything",
                    path.display(),
                    m.hash,
                    self.meta.hash
                ))
                .with_path(&path));
            }
            None => {
                return Err(Error::corrupt(format!(
                    "{} is missing; refusing to delete anything",
                    path.display()
                ))
                .with_path(&path));
            }
        }
        self.index.check_intact()
    }

    pub fn index(&self) -> &SharedIndex {
        &self.index
    }

    pub fn blob_uri_prefix(&self) -> &Arc<str> {
        &self.blob_uri_prefix
    }

    /// Records artifacts for a stored blob, one record per entry of `metas`, in one append.
    ///
    /// Invariant 2 (blob first, record second) is checked under the index lock: if the blob is
    /// neither packed nor on disk (a garbage collection removed it after it was published and
    /// before this record), nothing is appended and the error is `NotFound`.
    pub fn record(
        &self,
        digest: Digest,
        size: u64,
        metas: &[RecordMeta],
    ) -> Result<Vec<OwnedRecord>> {
        // Records are never acknowledged onto damaged bytes: a packed copy is read back (its
        // frame checked) unless a blob file holds the bytes too.
        if !is_blob_file(&self.blobs.path_of(&digest)) {
            match self.index.read_packed(&digest) {
                Err(e) if e.kind() == ErrorKind::Corrupt => {
                    return Err(Error::corrupt(format!(
                        "the stored bytes of blob {digest} are damaged ({}); store the bytes \
                         again (put_bytes, save) before recording them",
                        e.message()
                    )));
                }
                Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        self.record_or_publish(
            digest,
            size,
            metas,
            || {
                Err(Error::not_found(format!(
                    "blob {digest} is not in the store (removed by a concurrent gc?)"
                )))
            },
            |_| Ok(()),
        )
    }

    /// Like [`record`](Self::record), but if the blob is gone when the index lock is taken, it
    /// is published again by `publish`, under the lock. gc deletes only under that lock, so a
    /// blob published there stays until the record names it: a writer whose blob a concurrent
    /// gc took (whatever its grace period, and however coarse the file timestamps) still
    /// succeeds, and nothing it wrote is lost.
    pub(crate) fn record_or_publish(
        &self,
        digest: Digest,
        size: u64,
        metas: &[RecordMeta],
        publish: impl FnOnce() -> Result<()>,
        also: impl FnOnce(&crate::index::MemIndex) -> Result<()>,
    ) -> Result<Vec<OwnedRecord>> {
        let ops = crate::new_records::put_ops(digest, size, metas)?;
        let path = self.blobs.path_of(&digest);
        #[cfg(test)]
        if COLLECT_BEFORE_RECORD.with(|c| c.get()) {
            // The test seam: a gc between "my blob is in place" and "my record is appended".
            std::fs::remove_file(&path).ctx("remove", &path)?;
        }
        self.index.append(&ops, |m| {
            also(m)?;
            if m.packed(&digest).is_some() || is_blob_file(&path) {
                return Ok(());
            }
            publish().map_err(|e| e.with_path(&path))?;
            if is_blob_file(&path) {
                Ok(())
            } else {
                Err(Error::not_found(format!("blob {digest} was not published")).with_path(&path))
            }
        })?;
        Ok(crate::new_records::into_records(ops))
    }

    /// Stores bytes and records them, one record per entry of `metas`.
    ///
    /// Payloads up to `pack_max` bytes are packed into the index log: bytes and records go to
    /// disk in one append (and, in `"fsync"` durability, one `fdatasync` shared with concurrent
    /// writers), with no file or directory entry of their own. A packed blob gets its file
    /// under `blobs/` only when a caller asks for a path ([`Store::blob_path`]). Larger
    /// payloads become blob files first, then records.
    pub fn put_bytes(&self, data: &[u8], metas: &[RecordMeta]) -> Result<Vec<OwnedRecord>> {
        if (data.len() as u64) <= self.pack_max {
            let digest = hash_bytes(self.blobs.algo(), data);
            return self.put_packed(digest, data, metas);
        }
        self.publish_and_record(|| self.blobs.put_bytes(data), metas)
    }

    fn put_packed(
        &self,
        digest: Digest,
        data: &[u8],
        metas: &[RecordMeta],
    ) -> Result<Vec<OwnedRecord>> {
        let ops = crate::new_records::put_ops(digest, data.len() as u64, metas)?;
        self.index
            .append_packed(Some((&digest, data)), &ops, |_| Ok(()))?;
        Ok(crate::new_records::into_records(ops))
    }

    /// Publishes a blob file with `publish` and records it; if a concurrent gc removed the
    /// blob in between, `publish` runs again under the index lock (see
    /// [`Store::record_or_publish`]).
    fn publish_and_record(
        &self,
        publish: impl Fn() -> Result<crate::blobs::BlobInfo>,
        metas: &[RecordMeta],
    ) -> Result<Vec<OwnedRecord>> {
        let info = publish()?;
        self.record_or_publish(
            info.digest,
            info.size,
            metas,
            || publish().map(|_| ()),
            |_| Ok(()),
        )
    }

    /// Stores a copy of the file at `src` (left untouched) and records it. Files up to
    /// `pack_max` bytes are packed as in [`Store::put_bytes`].
    pub fn save(&self, src: &Path, metas: &[RecordMeta]) -> Result<Vec<OwnedRecord>> {
        if let Some(data) = self.read_if_small(src)? {
            return self.put_bytes(&data, metas);
        }
        self.publish_and_record(|| self.blobs.save(src), metas)
    }

    /// The contents of `src` when it is a regular file of at most `pack_max` bytes.
    fn read_if_small(&self, src: &Path) -> Result<Option<Vec<u8>>> {
        if self.pack_max == 0 {
            return Ok(None);
        }
        let (file, meta) = open_regular(src, Links::Follow, "save")?;
        if meta.len() > self.pack_max {
            return Ok(None);
        }
        let mut buf = Vec::with_capacity(meta.len() as usize + 1);
        (&file).read_to_end(&mut buf).ctx("read", src)?;
        Ok(Some(buf))
    }

    /// Stores a staged file and records it. A file in `staging/` is linked into `blobs/` (no
    /// copy, whatever its size), so it is never packed; its staged name goes once the record
    /// is appended. If recording fails the staged file stays, read-only, with its bytes.
    pub fn ingest(&self, staged: &Path, metas: &[RecordMeta]) -> Result<Vec<OwnedRecord>> {
        let (real, info) = self.blobs.ingest_keep(staged)?;
        let recs = self.record_or_publish(
            info.digest,
            info.size,
            metas,
            || {
                self.blobs
                    .link_staged(&real, &info.digest, info.size)
                    .map(|_| ())
            },
            |_| Ok(()),
        )?;
        // The record names the blob now: the staged name is only a leftover (and `stats`
        // reports it) if this fails.
        let _ = std::fs::remove_file(&real);
        Ok(recs)
    }

    /// A streaming writer for [`Store::commit_writer`]: up to `pack_max` bytes stay in memory,
    /// so a small artifact never touches a file.
    pub fn writer(&self, ext: &str) -> Result<crate::blobs::BlobWriter> {
        self.blobs.writer_buffered(ext, self.pack_max)
    }

    /// Commits a streaming writer and records its blob; at most `pack_max` bytes are packed.
    pub fn commit_writer(
        &self,
        w: crate::blobs::BlobWriter,
        metas: &[RecordMeta],
    ) -> Result<Vec<OwnedRecord>> {
        self.commit_writer_checked(w, metas, |_| Ok(()))
    }

    /// [`commit_writer`](Self::commit_writer), running `check` under the index lock before
    /// the records are appended (an error appends nothing).
    pub(crate) fn commit_writer_checked(
        &self,
        mut w: crate::blobs::BlobWriter,
        metas: &[RecordMeta],
        check: impl FnOnce(&crate::index::MemIndex) -> Result<()>,
    ) -> Result<Vec<OwnedRecord>> {
        if let Some((digest, data)) = w.take_small(self.pack_max)? {
            let ops = crate::new_records::put_ops(digest, data.len() as u64, metas)?;
            self.index
                .append_packed(Some((&digest, &data)), &ops, check)?;
            return Ok(crate::new_records::into_records(ops));
        }
        let info = w.publish_keep()?;
        self.record_or_publish(
            info.digest,
            info.size,
            metas,
            || w.publish_keep().map(|_| ()),
            check,
        )
    }

    /// Whether the blob with this digest is in the store: packed in the log or as a file.
    /// (An index that cannot be read counts as "not packed"; the file is still looked for.)
    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blobs.check_digest(d).is_ok()
            && (self.index.is_packed(d).unwrap_or(false) || self.blobs.exists(d))
    }

    /// A stored blob's size.
    pub fn blob_size(&self, d: &Digest) -> Result<u64> {
        self.blobs.check_digest(d)?;
        if let Some(loc) = self.index.read(|m| m.packed(d))? {
            return Ok(loc.len);
        }
        let p = self.blobs.path_of(d);
        match std::fs::metadata(&p) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::not_found(format!("no blob {d} in the store")).with_path(&p))
            }
            Err(e) => Err(Error::io("stat", &p, e)),
        }
    }

    /// A blob's bytes; with `verify`, checked against the digest (`Corrupt` on mismatch).
    pub fn read_blob(&self, d: &Digest, verify: bool) -> Result<Vec<u8>> {
        self.blobs.check_digest(d)?;
        let packed = match self.index.read_packed(d) {
            // Its segment went (another process compacted it away): a blob file may hold them.
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            // A damaged packed copy: a blob file of the same bytes is as good.
            Err(e) if e.kind() == ErrorKind::Corrupt && self.blobs.exists(d) => None,
            r => r?,
        };
        match packed {
            Some(data) => {
                if verify && hash_bytes(self.blobs.algo(), &data) != *d {
                    return Err(Error::corrupt(format!(
                        "packed blob {d} does not match its hash"
                    )));
                }
                Ok(data)
            }
            None => self.blobs.read(d, verify),
        }
    }

    /// Re-hashes one blob: whether its bytes still match its digest.
    pub fn verify_blob(&self, d: &Digest) -> Result<bool> {
        match self.read_blob(d, true) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::Corrupt => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Re-hashes every blob file and every packed blob that a live record names; blobs that
    /// live records name and the store lacks are reported `missing`.
    pub fn verify_all(&self) -> Result<crate::blobs::VerifyReport> {
        let mut report = self.blobs.verify_all()?;
        let live = self.live_now(
            &std::collections::HashSet::new(),
            &mut crate::live::ManifestCache::new(),
            Some(&std::collections::HashSet::new()),
        )?;
        report.missing = live.absent;
        let algo = self.blobs.algo();
        for (key, loc) in self.index.read(|m| m.live_packed())? {
            let d = Digest::new(algo, key);
            report.checked += 1;
            // The packed copy itself (read_blob would fall back to a blob file).
            let intact = match self.index.read_packed(&d) {
                Ok(Some(data)) => hash_bytes(algo, &data) == d,
                // Gone since `live_now` looked (deleted, or moved by a compaction): that view
                // decided what is missing.
                Ok(None) => continue,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) if e.kind() == ErrorKind::Corrupt => false,
                Err(e) => return Err(e),
            };
            if !intact {
                report.corrupt.push(self.root.join("index").join(format!(
                    "{}@{}",
                    crate::index::log::segment_name(loc.gen_),
                    loc.off
                )));
            }
        }
        report.missing.sort();
        Ok(report)
    }

    /// The path of a blob's file. A packed blob gets its file here, on first request (written
    /// atomically, like any blob), so that callers who need a path have one.
    /// The blob's file under `blobs/` when it has one (a packed blob has none until
    /// [`blob_path`](Self::blob_path)); creates nothing.
    pub fn existing_blob_file(&self, d: &Digest) -> Result<Option<PathBuf>> {
        self.blobs.check_digest(d)?;
        Ok(self.blobs.exists(d).then(|| self.blobs.path_of(d)))
    }

    pub fn blob_path(&self, d: &Digest) -> Result<PathBuf> {
        self.blobs.check_digest(d)?;
        let p = self.blobs.path_of(d);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() => return Ok(p),
            // A symlink or other entry at a blob name is damage: this moves it aside and fails.
            Ok(_) => drop(self.blobs.open_blob(d)?),
            Err(_) => {}
        }
        let packed = match self.index.read_packed(d) {
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            r => r?,
        };
        match packed {
            Some(data) => Ok(self.blobs.put_bytes(&data)?.path),
            None => Err(Error::not_found(format!("no blob {d} in the store")).with_path(&p)),
        }
    }

    /// Sets or clears an artifact's pin; returns the updated record.
    pub fn pin(&self, id: ArtifactId, pinned: bool) -> Result<OwnedRecord> {
        self.index
            .append(&[Op::Pin { id, pinned }], |m| known(m, id))?;
        self.index
            .read(|m| m.get(id).map(|r| m.resolve(r)))?
            .ok_or_else(|| Error::not_found(format!("artifact {id} was deleted meanwhile")))
    }

    /// Removes an artifact's record (its blob stays until garbage collection).
    pub fn delete(&self, id: ArtifactId) -> Result<()> {
        self.index.append(&[Op::Delete { id }], |m| known(m, id))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn meta(&self) -> &StoreMeta {
        &self.meta
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// `file://` URI of a blob (percent-encoded absolute path).
    pub fn uri_of(&self, d: &Digest) -> String {
        crate::uri::file_uri(&self.blobs.path_of(d))
    }

    /// The digest named by a blob URI of this store; an error for anything else.
    pub fn digest_from_uri(&self, uri: &str) -> Result<Digest> {
        crate::uri::digest_from_file_uri(&self.root, self.blobs.algo(), uri)
    }
}

#[cfg(test)]
thread_local! {
    /// When set, a write removes its blob file just before it records it, as a concurrent gc
    /// could.
    static COLLECT_BEFORE_RECORD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(test)]
/// A new, empty store in `"os"` durability under the temp directory, for unit tests.
pub(crate) fn test_store(name: &str) -> Store {
    let d = std::env::temp_dir().join(format!("runstash-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let opts = OpenOptions {
        durability: Durability::Os,
        ..OpenOptions::default()
    };
    Store::open(&d, opts).expect("a store in the temp directory")
}

fn known(m: &crate::index::MemIndex, id: ArtifactId) -> Result<()> {
    if m.contains(id) {
        Ok(())
    } else {
        Err(Error::not_found(format!("no artifact with id {id}")))
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
