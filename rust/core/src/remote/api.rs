//! The S3 store as an [`ArtifactStore`](crate::ArtifactStore): the same operations as the
//! local store, most by name (see [`crate::forward_store_methods`]).

use std::collections::HashSet;
use std::path::PathBuf;

use super::RemoteStore;
use crate::atomic::Durability;
use crate::error::Result;
use crate::hash::{Digest, HashAlgo};
use crate::index::{ArtifactId, MemIndex, Op, OwnedRecord, RecordMeta};
use crate::live::LiveSet;

crate::forward_store_methods!(RemoteStore {
    fn location(&self) -> String {
        self.url().to_string()
    }
    fn algo(&self) -> HashAlgo {
        RemoteStore::algo(self)
    }
    fn durability(&self) -> Durability {
        RemoteStore::durability(self)
    }
    fn staging_dir(&self) -> PathBuf {
        self.inner.cache.staging_dir().to_path_buf()
    }
    fn stage(&self, ext: &str) -> Result<PathBuf> {
        RemoteStore::stage(self, ext)
    }
    fn stage_dir(&self, suffix: &str) -> Result<PathBuf> {
        RemoteStore::stage_dir(self, suffix)
    }
    fn record_stored(&self, d: Digest, metas: &[RecordMeta]) -> Result<Vec<OwnedRecord>> {
        self.record(d, metas)
    }
    fn read_index(&self, f: &mut dyn FnMut(&MemIndex)) -> Result<()> {
        self.read(f)
    }
    fn has_blob(&self, d: &Digest) -> Result<bool> {
        RemoteStore::has_blob(self, d)
    }
    fn compact(&self) -> Result<()> {
        RemoteStore::compact(self).map(|_| ())
    }
    fn refresh(&self) -> Result<()> {
        RemoteStore::refresh(self)
    }
    fn flush(&self) -> Result<()> {
        RemoteStore::flush(self)
    }
    fn live_set(&self) -> Result<LiveSet> {
        RemoteStore::live_set(self, &HashSet::new())
    }
    fn delete_unpinned(&self, ids: &[ArtifactId]) -> Result<bool> {
        // One segment; a pin elsewhere resolves against it by the segment rule.
        self.alive()?;
        let ops = ids.iter().map(|&id| Op::Delete { id }).collect::<Vec<_>>();
        self.inner.submit(None, ops)?;
        Ok(true)
    }
});
