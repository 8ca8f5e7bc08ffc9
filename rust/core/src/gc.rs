//! Garbage collection: delete blob files that no live record names.
//!
//! Protocol (the gc half; writers keep the other half):
//! 1. Walk `blobs/` and read the index, without the lock: the candidates are blob files that
//!    no live record names (nor a live directory artifact lists) and that got their name more
//!    than `grace` ago. This is the slow part and blocks nobody.
//! 2. Compact the index (only when something is to be deleted, or when deleted records left
//!    packed bytes in the log), so the log that remains names no record that was deleted and
//!    log segments that hold no live packed bytes go.
//! 3. For each chunk of candidates, under the index lock ([`SharedIndex::locked`]), after
//!    applying every frame other processes appended: recompute what is live, and delete a
//!    candidate only if it is still not live and still older than the grace period (a blob
//!    deleted and published again is new). While the lock is held no record can be appended,
//!    so a record appended before gc took the lock is always honoured.
//!
//! What gc cannot see is a writer between "my blob is in place" and "my record is appended"
//! (the record is not in the log yet). The grace period covers fresh blobs; for a blob that
//! was already there (a dedup hit on an old orphan) the writer must re-check, under the index
//! lock, that its blob still exists before it appends, and publish it again if gc took it.
//!
//! Nothing is deleted from a store whose `STORE.json` or current index segment was removed or
//! replaced under this handle ([`Store::check_intact`], at the start and before each chunk).
//!
//! Deletions are not fsynced: an orphan that comes back after a power cut is harmless.
//!
//! [`SharedIndex::locked`]: crate::index::SharedIndex::locked

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::hash::Digest;
use crate::index::ArtifactId;
use crate::live::{ManifestCache, named_at};
use crate::store::Store;

/// Candidates deleted per hold of the index lock: bounds how long writers wait on gc.
const CHUNK: usize = 2048;

/// What a garbage collection did (or, in a dry run, would do).
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    pub dry_run: bool,
    /// Files under `blobs/` looked at.
    pub scanned: u64,
    /// Blobs deleted (would be deleted, in a dry run), with their sizes.
    pub deleted: Vec<(Digest, u64)>,
    pub deleted_bytes: u64,
    /// Unreferenced blobs kept because they got their name within the grace period.
    pub recent: u64,
    pub recent_bytes: u64,
    /// Candidates that turned out live (or new again) under the lock, and were kept.
    pub revived: u64,
    /// Whether the index was compacted first.
    pub compacted: bool,
    /// Built trees (`trees/<hex>/`) of directory artifacts no longer live, removed (would be).
    pub trees_removed: u64,
    /// S3 stores: unreferenced blob objects marked for deletion (by this gc or an earlier
    /// one) that a later gc deletes once the safety interval has passed, and their bytes.
    /// Always 0 on a local store.
    pub pending: u64,
    pub pending_bytes: u64,
}

impl Store {
    /// Deletes blob files that no live record names and that got their name more than
    /// `grace` ago, computed as if the records in `assume_deleted` were already gone (a
    /// preview of deleting them: only a dry run may assume, a real run must see the real
    /// index). With `dry_run`, only reports. `ArtifactStore::gc` assumes nothing.
    pub fn gc_assuming_deleted(
        &self,
        dry_run: bool,
        grace: Duration,
        assume_deleted: &HashSet<ArtifactId>,
    ) -> Result<GcReport> {
        if !dry_run && !assume_deleted.is_empty() {
            return Err(Error::invalid(
                "gc can assume records deleted only in a dry run",
            ));
        }
        // An index or STORE.json removed or replaced under this handle cannot say what is live.
        self.check_intact()?;
        let mut plan = self.gc_plan(grace, assume_deleted)?;
        plan.report.trees_removed = self.gc_trees(dry_run, &plan.live_trees)?;
        // Packed bytes of deleted records go with the log segments compaction lets go.
        let dead_packed = !dry_run && self.index().read(|m| m.has_dead_packed())?;
        if dry_run || (plan.candidates.is_empty() && !dead_packed) {
            plan.report.dry_run = dry_run;
            for (d, _, size) in std::mem::take(&mut plan.candidates) {
                plan.report.deleted.push((d, size));
                plan.report.deleted_bytes += size;
            }
            return Ok(plan.report);
        }
        // 2. The log keeps no deleted record's put once space is reclaimed.
        self.index().compact()?;
        plan.report.compacted = true;
        self.gc_delete(plan)
    }

    /// Step 1: the candidates, without the lock.
    fn gc_plan(&self, grace: Duration, assume_deleted: &HashSet<ArtifactId>) -> Result<GcPlan> {
        let cutoff = SystemTime::now()
            .checked_sub(grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut report = GcReport::default();
        // The walk comes first: a blob published after it is not a candidate, whatever the
        // index says by then.
        let files = self.blob_files()?;
        report.scanned = files.len() as u64;
        let mut cache = ManifestCache::new();
        let live = self.live_now(assume_deleted, &mut cache, None)?;
        live.refuse_unreadable_trees("gc")?;
        let mut candidates = Vec::new();
        for f in files {
            let Some(d) = f.digest else { continue };
            if live.contains(&d) {
                continue;
            }
            if f.named_at < cutoff {
                candidates.push((d, f.path, f.size));
            } else {
                report.recent += 1;
                report.recent_bytes += f.size;
            }
        }
        Ok(GcPlan {
            report,
            candidates,
            cutoff,
            cache,
            live_trees: live.trees.iter().map(|&(_, d)| d).collect(),
        })
    }

    /// Removes the built trees of directory artifacts that are not live (a dry run counts
    /// them, from `live_trees`). Decided under the index lock: no record appears meanwhile, so
    /// a tree of a live artifact is never taken from under its reader.
    fn gc_trees(&self, dry_run: bool, live_trees: &HashSet<Digest>) -> Result<u64> {
        if dry_run {
            return Ok(self.stale_trees(live_trees)?.len() as u64);
        }
        let none = HashSet::new();
        let mut cache = ManifestCache::new();
        self.index().locked(|m, packed| {
            let live = self.live_in(m, packed, &none, &mut cache, None);
            let trees: HashSet<Digest> = live.trees.iter().map(|&(_, d)| d).collect();
            let stale = self.stale_trees(&trees)?;
            for t in &stale {
                self.retire_tree(t)?;
            }
            Ok(stale.len() as u64)
        })
    }

    /// Step 3: delete, chunk by chunk, under the lock, re-checking each candidate.
    fn gc_delete(&self, plan: GcPlan) -> Result<GcReport> {
        let GcPlan {
            mut report,
            candidates,
            cutoff,
            mut cache,
            ..
        } = plan;
        let none = HashSet::new();
        for chunk in candidates.chunks(CHUNK) {
            self.check_intact()?;
            self.index().locked(|m, packed| {
                let live = self.live_in(m, packed, &none, &mut cache, None);
                live.refuse_unreadable_trees("gc")?;
                for (d, path, _) in chunk {
                    if live.contains(d) {
                        report.revived += 1;
                        continue;
                    }
                    // Re-stat: a blob deleted by another gc and published again is new.
                    let meta = match std::fs::symlink_metadata(path) {
                        Ok(m) => m,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(Error::io("stat", path, e)),
                    };
                    if named_at(&meta) >= cutoff {
                        report.revived += 1;
                        continue;
                    }
                    match std::fs::remove_file(path) {
                        Ok(()) => {
                            report.deleted.push((*d, meta.len()));
                            report.deleted_bytes += meta.len();
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(Error::io("remove", path, e)),
                    }
                }
                Ok(())
            })?;
        }
        Ok(report)
    }
}

/// Candidates found without the lock, to be re-checked under it.
struct GcPlan {
    report: GcReport,
    /// (digest, path, size) of unreferenced blob files older than the cutoff.
    candidates: Vec<(Digest, std::path::PathBuf, u64)>,
    cutoff: SystemTime,
    cache: ManifestCache,
    /// Manifests of the live directory artifacts.
    live_trees: HashSet<Digest>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ArtifactStore;
    use crate::atomic::Durability;
    use crate::index::RecordMeta;
    use crate::store::OpenOptions;

    fn store(name: &str) -> Store {
        crate::store::test_store(&format!("gc-{name}"))
    }

    fn put(s: &Store, data: &[u8], pinned: bool) -> ArtifactId {
        let info = s.blobs().put_bytes(data).unwrap();
        let meta = RecordMeta {
            kind: "k".into(),
            pinned,
            ..RecordMeta::default()
        };
        s.record(info.digest, info.size, &[meta]).unwrap()[0].id
    }

    #[test]
    fn deletes_exactly_the_unreferenced_old_blobs() {
        let s = store("exact");
        let keep = put(&s, b"kept", false);
        let _pinned = put(&s, b"pinned", true);
        let shared_a = put(&s, b"shared", false);
        let _shared_b = put(&s, b"shared", false);
        let gone = put(&s, b"gone", false);
        let orphan = s.blobs().put_bytes(b"orphan").unwrap();
        s.delete(gone).unwrap();
        s.delete(shared_a).unwrap();

        // Within the grace period nothing goes.
        let r = s.gc(false, Duration::from_secs(3600)).unwrap();
        assert!(r.deleted.is_empty());
        assert_eq!((r.recent, r.scanned), (2, 5));

        let dry = s.gc(true, Duration::ZERO).unwrap();
        assert_eq!(dry.deleted.len(), 2);
        assert!(s.has_blob(&orphan.digest), "a dry run deletes nothing");

        let r = s.gc(false, Duration::ZERO).unwrap();
        let mut got: Vec<Digest> = r.deleted.iter().map(|(d, _)| *d).collect();
        got.sort();
        let mut want = vec![
            orphan.digest,
            crate::hash_bytes(crate::HashAlgo::Blake3, b"gone"),
        ];
        want.sort();
        assert_eq!(got, want);
        assert_eq!(r.deleted_bytes, 10);
        assert!(r.compacted);
        for data in [&b"kept"[..], b"pinned", b"shared"] {
            assert!(s.has_blob(&crate::hash_bytes(crate::HashAlgo::Blake3, data)));
        }
        let _ = keep;
        assert!(s.gc(false, Duration::ZERO).unwrap().deleted.is_empty());
    }

    #[test]
    fn a_record_appended_before_the_lock_is_honoured() {
        // Another handle (as another process would) records a blob after gc found it
        // unreferenced but before gc took the lock: gc must catch up and keep it.
        let s = store("honour");
        let other = Store::open(
            s.root(),
            OpenOptions {
                hash: None,
                durability: Durability::Os,
                ..OpenOptions::default()
            },
        )
        .unwrap();
        let late = s.blobs().put_bytes(b"late").unwrap();
        let orphan = s.blobs().put_bytes(b"orphan").unwrap();
        let plan = s.gc_plan(Duration::ZERO, &HashSet::new()).unwrap();
        assert_eq!(plan.candidates.len(), 2, "both are unrecorded");
        let meta = RecordMeta {
            kind: "k".into(),
            ..RecordMeta::default()
        };
        other.record(late.digest, late.size, &[meta]).unwrap();
        let r = s.gc_delete(plan).unwrap();
        assert_eq!(r.deleted, vec![(orphan.digest, 6)]);
        assert_eq!(r.revived, 1);
        assert!(s.has_blob(&late.digest));
        assert!(!s.has_blob(&orphan.digest));
    }

    #[test]
    fn directory_members_are_live_and_unreadable_manifests_stop_gc() {
        let s = store("tree");
        let file = s.blobs().put_bytes(b"member").unwrap();
        let manifest = format!(
            r#"{{"files":[{{"hash":"{}","path":"f","size":6}}],"format":"runstash.tree/1"}}"#,
            file.digest
        );
        let m = s.blobs().put_bytes(manifest.as_bytes()).unwrap();
        let meta = RecordMeta {
            kind: "dir".into(),
            mime: Some(crate::live::TREE_MIME.into()),
            ..RecordMeta::default()
        };
        s.record(m.digest, m.size, &[meta]).unwrap();
        let r = s.gc(false, Duration::ZERO).unwrap();
        assert!(r.deleted.is_empty(), "{r:?}");
        assert!(s.has_blob(&file.digest));
        std::fs::remove_file(&m.path).unwrap();
        let e = s.gc(false, Duration::ZERO).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Corrupt);
        assert!(s.has_blob(&file.digest));
    }

    #[test]
    fn assumed_deletions_preview_only() {
        let s = store("assume");
        let id = put(&s, b"x", false);
        let ids: HashSet<ArtifactId> = [id].into();
        let r = s.gc_assuming_deleted(true, Duration::ZERO, &ids).unwrap();
        assert_eq!(r.deleted.len(), 1);
        assert!(s.gc_assuming_deleted(false, Duration::ZERO, &ids).is_err());
        assert!(s.gc(false, Duration::ZERO).unwrap().deleted.is_empty());
    }
}
