//! `ArtifactStore`: the one interface of a runstash store, whatever keeps its bytes. The local
//! [`Store`] and the S3 `RemoteStore` implement it; the Python binding holds a
//! `Arc<dyn ArtifactStore>` and never asks which one it has.
//!
//! Invariants kept here:
//! - Every operation a user can call has one signature for both stores: a store that cannot
//!   do something says so with [`ErrorKind::Unsupported`](crate::ErrorKind), never by a
//!   missing method.
//! - A ref (what a user passes to name a blob) is parsed in one place, [`parse_ref`]: a blob
//!   URI of this store, an `"algo:hex"` digest, or bare hex in the store's algorithm; a digest
//!   of another algorithm is `Invalid`. Blob URIs are formatted by [`crate::uri::blob_uri`].
//!
//! [`parse_ref`]: ArtifactStore::parse_ref

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::atomic::Durability;
use crate::audit::{IntegrityReport, StoreStats, VerifyProgress};
use crate::blobs::{BlobWriter, VerifyReport};
use crate::error::{Error, Result};
use crate::gc::GcReport;
use crate::hash::{Digest, HashAlgo};
use crate::index::{ArtifactId, Filter, MemIndex, Mode, OwnedRecord, RecordMeta};
use crate::live::{LiveSet, ManifestCache};
use crate::retention::{Per, RetentionPlan};
use crate::store::Store;

/// A runstash store: writes, queries, blob reads and maintenance (see the module docs).
pub trait ArtifactStore: Send + Sync {
    // -- identity -------------------------------------------------------------------------

    /// Where the store is: its root path, or its `s3://` URL.
    fn location(&self) -> String;
    fn algo(&self) -> HashAlgo;
    fn durability(&self) -> Durability;
    /// Payloads up to this many bytes are packed into the index (0: never).
    fn pack_max(&self) -> u64;
    /// A blob's URI is this, then `<2 hex>/<rest>` (see [`crate::uri::blob_uri`]).
    fn blob_uri_prefix(&self) -> &Arc<str>;
    /// Where `stage` and `stage_dir` make their files (on S3: in the local cache).
    fn staging_dir(&self) -> PathBuf;

    // -- writes ---------------------------------------------------------------------------

    /// Checks a new record's fields before any byte is written ([`crate::new_records`]).
    fn check_meta(&self, meta: &RecordMeta) -> Result<()> {
        crate::new_records::check(meta, self.algo())
    }
    /// Stores bytes and records them, one record per entry of `metas`.
    fn put_bytes(&self, data: &[u8], metas: &[RecordMeta]) -> Result<Vec<OwnedRecord>>;
    /// Stores a copy of the file `src` and records it.
    fn save(&self, src: &Path, metas: &[RecordMeta]) -> Result<Vec<OwnedRecord>>;
    /// A new empty file to write and then [`ingest`](Self::ingest).
    fn stage(&self, ext: &str) -> Result<PathBuf>;
    /// A new empty directory to fill and then [`ingest_dir`](Self::ingest_dir).
    fn stage_dir(&self, suffix: &str) -> Result<PathBuf>;
    /// Moves a staged file into the store and records it.
    fn ingest(&self, staged: &Path, metas: &[RecordMeta]) -> Result<Vec<OwnedRecord>>;
    /// A streaming blob write; [`commit_writer`](Self::commit_writer) stores and records it.
    fn writer(&self, ext: &str) -> Result<BlobWriter>;
    fn commit_writer(&self, w: BlobWriter, metas: &[RecordMeta]) -> Result<Vec<OwnedRecord>>;
    /// Stores the directory `dir` as one artifact (with `cleanup`, a directory made by
    /// `stage_dir` is removed afterwards).
    fn ingest_dir(
        &self,
        dir: &Path,
        metas: &[RecordMeta],
        cleanup: bool,
    ) -> Result<Vec<OwnedRecord>>;
    /// A read-only local directory holding a directory artifact's files.
    fn tree_dir(&self, manifest: &Digest) -> Result<PathBuf>;
    /// New records for a blob already stored (`NotFound` if it is not).
    fn record_stored(&self, d: Digest, metas: &[RecordMeta]) -> Result<Vec<OwnedRecord>>;
    fn pin(&self, id: ArtifactId, pinned: bool) -> Result<OwnedRecord>;
    fn delete(&self, id: ArtifactId) -> Result<()>;

    // -- reads ----------------------------------------------------------------------------

    /// Runs `f` on the index (see [`read`](<dyn ArtifactStore>::read) for a typed result).
    fn read_index(&self, f: &mut dyn FnMut(&MemIndex)) -> Result<()>;
    fn has_blob(&self, d: &Digest) -> Result<bool>;
    /// A blob's bytes; with `verify`, checked against the digest (`Corrupt` on mismatch).
    fn read_blob(&self, d: &Digest, verify: bool) -> Result<Vec<u8>>;
    /// A local file holding the blob (on S3: in the cache, fetched now if needed).
    fn blob_path(&self, d: &Digest) -> Result<PathBuf>;
    /// A local file that already holds the blob, if there is one: unlike `blob_path` this
    /// writes, unpacks and downloads nothing (the read-only commands use it).
    fn existing_blob_file(&self, d: &Digest) -> Result<Option<PathBuf>>;
    /// Re-hashes one blob: whether it is intact.
    fn verify_blob(&self, d: &Digest) -> Result<bool>;
    /// The digest a blob URI of this store names; `Invalid` for any other URI.
    fn digest_from_uri(&self, uri: &str) -> Result<Digest>;

    // -- maintenance ----------------------------------------------------------------------

    /// Writes a snapshot of the index so that opening it is fast.
    fn compact(&self) -> Result<()>;
    /// Applies what other writers added to the index (a local store is always current).
    fn refresh(&self) -> Result<()>;
    /// Stores writes still buffered ("os" durability on S3; a local store buffers nothing).
    fn flush(&self) -> Result<()>;
    fn stats(&self) -> Result<StoreStats>;
    /// Re-hashes every blob and compares the store with its index.
    fn verify_report(
        &self,
        progress: &mut dyn FnMut(&VerifyProgress) -> bool,
    ) -> Result<IntegrityReport>;
    /// The short form of [`verify_report`](Self::verify_report): counts and names only.
    fn verify_all(&self) -> Result<VerifyReport> {
        let r = self.verify_report(&mut |_| true)?;
        Ok(VerifyReport {
            checked: r.checked,
            corrupt: r.corrupt.into_iter().map(|(_, p)| p).collect(),
            stray: r.stray,
            missing: r.missing.into_iter().map(|m| m.digest).collect(),
        })
    }
    /// Garbage collection as if the records `assume_deleted` were gone (only in a dry run).
    fn gc_assuming_deleted(
        &self,
        dry_run: bool,
        grace: Duration,
        assume_deleted: &HashSet<ArtifactId>,
    ) -> Result<GcReport>;
    /// What the current index holds live (records, the blobs they name, the files of live
    /// directory artifacts); an error when the index cannot say (removed under the handle).
    fn live_set(&self) -> Result<LiveSet>;
    /// Deletes all of `ids` at once if none is pinned (`Ok(false)`: one was pinned or gone,
    /// nothing deleted; a store that resolves such races later by its own rule, as S3's
    /// segments do, deletes and says `true`).
    fn delete_unpinned(&self, ids: &[ArtifactId]) -> Result<bool>;

    // -- provided -------------------------------------------------------------------------

    /// Keeps the best `k` records of each group by `metric` and deletes the other unpinned
    /// ones (with `dry_run`, only plans); see [`crate::retention`].
    #[allow(clippy::too_many_arguments)]
    fn keep_best(
        &self,
        filter: &Filter,
        metric: &str,
        mode: Mode,
        k: usize,
        per: Per,
        dry_run: bool,
    ) -> Result<RetentionPlan> {
        crate::retention::keep_best(self, filter, metric, mode, k, per, dry_run)
    }

    /// Deletes unreferenced blobs older than `grace` (with `dry_run`, only reports).
    fn gc(&self, dry_run: bool, grace: Duration) -> Result<GcReport> {
        self.gc_assuming_deleted(dry_run, grace, &HashSet::new())
    }

    /// The URI of a blob of this store.
    fn uri_of(&self, d: &Digest) -> String {
        crate::uri::blob_uri(self.blob_uri_prefix(), d)
    }

    /// The digest a ref names: a blob URI of this store, `"algo:hex"`, or bare hex (in the
    /// store's algorithm). A digest of another algorithm is `Invalid`.
    fn parse_ref(&self, r: &str) -> Result<Digest> {
        let d = if r.contains("://") {
            self.digest_from_uri(r)?
        } else if r.contains(':') {
            r.parse::<Digest>()?
        } else {
            format!("{}:{r}", self.algo().name()).parse::<Digest>()?
        };
        if d.algo() != self.algo() {
            return Err(Error::invalid(format!(
                "{d} is a {} digest but this store hashes with {}",
                d.algo().name(),
                self.algo().name()
            )));
        }
        Ok(d)
    }
}

impl dyn ArtifactStore {
    /// Runs `f` on the index and returns what it returns.
    pub fn read<R>(&self, f: impl FnOnce(&MemIndex) -> R) -> Result<R> {
        let mut f = Some(f);
        let mut out = None;
        self.read_index(&mut |m| {
            if let Some(f) = f.take() {
                out = Some(f(m));
            }
        })?;
        out.ok_or_else(|| Error::new(crate::ErrorKind::Io, "the index was not read"))
    }
}

/// Forwards the trait methods that `$t` has as inherent methods of the same signature, then
/// adds the items given (the methods whose shape differs).
#[macro_export]
#[doc(hidden)]
macro_rules! forward_store_methods {
    ($t:ty { $($extra:item)* }) => {
        impl $crate::ArtifactStore for $t {
            fn pack_max(&self) -> u64 { <$t>::pack_max(self) }
            fn blob_uri_prefix(&self) -> &::std::sync::Arc<str> { <$t>::blob_uri_prefix(self) }
            fn put_bytes(
                &self, data: &[u8], metas: &[$crate::index::RecordMeta],
            ) -> $crate::Result<Vec<$crate::index::OwnedRecord>> {
                <$t>::put_bytes(self, data, metas)
            }
            fn save(
                &self, src: &::std::path::Path, metas: &[$crate::index::RecordMeta],
            ) -> $crate::Result<Vec<$crate::index::OwnedRecord>> {
                <$t>::save(self, src, metas)
            }
            fn ingest(
                &self, staged: &::std::path::Path, metas: &[$crate::index::RecordMeta],
            ) -> $crate::Result<Vec<$crate::index::OwnedRecord>> {
                <$t>::ingest(self, staged, metas)
            }
            fn writer(&self, ext: &str) -> $crate::Result<$crate::BlobWriter> {
                <$t>::writer(self, ext)
            }
            fn commit_writer(
                &self, w: $crate::BlobWriter, metas: &[$crate::index::RecordMeta],
            ) -> $crate::Result<Vec<$crate::index::OwnedRecord>> {
                <$t>::commit_writer(self, w, metas)
            }
            fn ingest_dir(
                &self, dir: &::std::path::Path, metas: &[$crate::index::RecordMeta], cleanup: bool,
            ) -> $crate::Result<Vec<$crate::index::OwnedRecord>> {
                <$t>::ingest_dir(self, dir, metas, cleanup)
            }
            fn tree_dir(&self, manifest: &$crate::Digest) -> $crate::Result<::std::path::PathBuf> {
                <$t>::tree_dir(self, manifest)
            }
            fn pin(
                &self, id: $crate::index::ArtifactId, pinned: bool,
            ) -> $crate::Result<$crate::index::OwnedRecord> {
                <$t>::pin(self, id, pinned)
            }
            fn delete(&self, id: $crate::index::ArtifactId) -> $crate::Result<()> {
                <$t>::delete(self, id)
            }
            fn read_blob(&self, d: &$crate::Digest, verify: bool) -> $crate::Result<Vec<u8>> {
                <$t>::read_blob(self, d, verify)
            }
            fn blob_path(&self, d: &$crate::Digest) -> $crate::Result<::std::path::PathBuf> {
                <$t>::blob_path(self, d)
            }
            fn existing_blob_file(
                &self, d: &$crate::Digest,
            ) -> $crate::Result<Option<::std::path::PathBuf>> {
                <$t>::existing_blob_file(self, d)
            }
            fn verify_blob(&self, d: &$crate::Digest) -> $crate::Result<bool> {
                <$t>::verify_blob(self, d)
            }
            fn digest_from_uri(&self, uri: &str) -> $crate::Result<$crate::Digest> {
                <$t>::digest_from_uri(self, uri)
            }
            fn stats(&self) -> $crate::Result<$crate::StoreStats> { <$t>::stats(self) }
            fn verify_report(
                &self, progress: &mut dyn FnMut(&$crate::VerifyProgress) -> bool,
            ) -> $crate::Result<$crate::IntegrityReport> {
                <$t>::verify_report(self, progress)
            }
            fn gc_assuming_deleted(
                &self,
                dry_run: bool,
                grace: ::std::time::Duration,
                assume_deleted: &::std::collections::HashSet<$crate::index::ArtifactId>,
            ) -> $crate::Result<$crate::GcReport> {
                <$t>::gc_assuming_deleted(self, dry_run, grace, assume_deleted)
            }
            $($extra)*
        }
    };
}

forward_store_methods!(Store {
    fn location(&self) -> String {
        self.root().to_string_lossy().into_owned()
    }
    fn algo(&self) -> HashAlgo {
        self.blobs().algo()
    }
    fn durability(&self) -> Durability {
        self.blobs().durability()
    }
    fn staging_dir(&self) -> PathBuf {
        self.blobs().staging_dir().to_path_buf()
    }
    fn stage(&self, ext: &str) -> Result<PathBuf> {
        self.blobs().stage(ext)
    }
    fn stage_dir(&self, suffix: &str) -> Result<PathBuf> {
        self.blobs().stage_dir(suffix)
    }
    fn record_stored(&self, d: Digest, metas: &[RecordMeta]) -> Result<Vec<OwnedRecord>> {
        let size = self.blob_size(&d)?;
        self.record(d, size, metas)
    }
    fn read_index(&self, f: &mut dyn FnMut(&MemIndex)) -> Result<()> {
        self.index().read(f)
    }
    fn has_blob(&self, d: &Digest) -> Result<bool> {
        Ok(Store::has_blob(self, d))
    }
    fn compact(&self) -> Result<()> {
        self.index().compact()
    }
    fn refresh(&self) -> Result<()> {
        Ok(())
    }
    fn flush(&self) -> Result<()> {
        Ok(())
    }
    fn verify_all(&self) -> Result<VerifyReport> {
        Store::verify_all(self)
    }
    fn live_set(&self) -> Result<LiveSet> {
        // A removed or replaced index cannot say what is live.
        self.check_intact()?;
        self.live_now(&HashSet::new(), &mut ManifestCache::new(), None)
    }
    fn delete_unpinned(&self, ids: &[ArtifactId]) -> Result<bool> {
        Store::delete_unpinned(self, ids)
    }
});
