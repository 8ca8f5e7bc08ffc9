//! Staged files, records of stored blobs and directory artifacts on an S3 store. Staging lives
//! in the local cache; `ingest` uploads a staged file and removes it; `ingest_dir` uploads
//! every file of a directory as a blob object, then records the manifest ([`crate::tree`]
//! defines it); `tree_dir` builds the read-only directory in the cache (`<cache>/trees/`).
//!
//! Invariant: a manifest's member blobs are held to the same lease as the blobs records name
//! directly ([`super::gc`]): the segment recording the manifest is stored only while every
//! member's confirmation is young enough.

use super::*;

use crate::tree::{TREES_DIR, TreeFile, ingest_dir_with, materialize, parse_manifest};

impl RemoteStore {
    /// An empty file in the cache's staging area, to fill and [`ingest`](Self::ingest).
    pub fn stage(&self, ext: &str) -> Result<PathBuf> {
        self.inner.cache.stage(ext)
    }

    /// An empty directory in the cache's staging area, to fill and
    /// [`ingest_dir`](Self::ingest_dir).
    pub fn stage_dir(&self, suffix: &str) -> Result<PathBuf> {
        self.inner.cache.stage_dir(suffix)
    }

    /// Uploads a file made by [`stage`](Self::stage), records it, and removes the staged file
    /// (it stays, read-only, if the upload or the record fails).
    pub fn ingest(&self, staged: &Path, metas: &[RecordMeta]) -> Result<Vec<OwnedRecord>> {
        self.alive()?;
        for m in metas {
            crate::new_records::check(m, self.inner.algo)?;
        }
        let (real, _) = self.inner.cache.ingest_keep(staged)?;
        let recs = self.save(&real, metas)?;
        let _ = std::fs::remove_file(&real);
        Ok(recs)
    }

    /// The size of a stored blob: packed in a segment seen here, or an object in the bucket.
    pub fn blob_size(&self, d: &Digest) -> Result<u64> {
        self.alive()?;
        if let Some(data) = self.inner.state.lock().unsent.get(d.bytes()) {
            return Ok(data.len() as u64);
        }
        if let Some((_, _, len)) = self.inner.state.lock().packed.get(d.bytes()) {
            return Ok(*len);
        }
        let missing = || Error::not_found(format!("blob {d} is not in the store"));
        let key = self.inner.locate(d, false)?.ok_or_else(missing)?;
        let path = self.inner.key_path(&key);
        match self.inner.rt.block_on(self.inner.s3.head(&path)) {
            Ok(m) => Ok(m.size),
            Err(object_store::Error::NotFound { .. }) => Err(missing()),
            Err(e) => Err(obj_err("head", path.as_ref(), e)),
        }
    }

    /// Records artifacts for a stored blob, one record per entry of `metas`, in one segment.
    pub fn record(&self, d: Digest, metas: &[RecordMeta]) -> Result<Vec<OwnedRecord>> {
        for m in metas {
            crate::new_records::check(m, self.inner.algo)?;
        }
        let size = self.blob_size(&d)?;
        self.record_ops(d, size, metas, None)
    }

    /// Stores the directory `dir` as one artifact: every regular file a blob object, then the
    /// manifest, recorded with `metas`. With `cleanup`, a directory made by
    /// [`stage_dir`](Self::stage_dir) is removed afterwards.
    pub fn ingest_dir(
        &self,
        dir: &Path,
        metas: &[RecordMeta],
        cleanup: bool,
    ) -> Result<Vec<OwnedRecord>> {
        self.alive()?;
        ingest_dir_with(
            self.inner.algo,
            dir,
            metas,
            cleanup,
            self.inner.cache.staging_dir(),
            |src| {
                let (digest, size) = hash_file(self.inner.algo, src)?;
                self.inner.upload_file(&digest, src)?;
                Ok((digest, size))
            },
            |manifest, files, _| {
                let digest = hash_bytes(self.inner.algo, &manifest);
                let members: Arc<[Digest]> = files.iter().map(|f| f.hash).collect();
                self.inner
                    .state
                    .lock()
                    .tree_members
                    .insert(*digest.bytes(), members);
                self.put_bytes(&manifest, metas)
            },
        )
    }

    /// The files of the directory artifact whose manifest is `manifest` (read and verified).
    pub fn tree_files(&self, manifest: &Digest) -> Result<Vec<TreeFile>> {
        parse_manifest(&self.read_blob(manifest, true)?)
    }

    /// A read-only local directory holding the files of a directory artifact, as hard links
    /// to their blobs in the cache (fetched now if needed): `<cache>/trees/<hex>/`.
    pub fn tree_dir(&self, manifest: &Digest) -> Result<PathBuf> {
        let files = self.tree_files(manifest)?;
        let trees = self.inner.cache.root().join(TREES_DIR);
        materialize(&trees, &self.inner.cache, manifest, &files, &|d| {
            self.blob_path(d)
        })
    }
}
