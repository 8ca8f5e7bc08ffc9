//! Looking inside a store: space accounting (`stats`) and a full integrity check
//! (`verify_report`). Both only read; neither takes the index lock.
//!
//! Writers may be at work meanwhile, so each report is of one moment per part: the blob walk
//! comes first and the index is read after it. A blob published after the walk is not in the
//! report; a record appended before the index read counts as live, and its blob, if the walk
//! missed it, is looked up directly before it is called missing.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::hash::Digest;
use crate::index::ArtifactId;
use crate::live::ManifestCache;
use crate::store::Store;

/// Space accounting of a store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreStats {
    /// Live records.
    pub records: u64,
    /// Sum of the sizes of the live records (what the data would take without dedup).
    pub live_bytes: u64,
    /// Distinct blobs named by live records, and their bytes (the data after dedup).
    pub blob_count: u64,
    pub blob_bytes: u64,
    /// `live_bytes / blob_bytes` (1.0 for an empty store).
    pub dedup_ratio: f64,
    /// Blob files on disk and their bytes (live or not).
    pub disk_blobs: u64,
    pub disk_bytes: u64,
    /// Blob files that nothing live names: what gc can reclaim (once past its grace period).
    pub orphan_blobs: u64,
    pub orphan_bytes: u64,
    /// Blobs that live records (or live directory artifacts) name but the store lacks.
    pub missing_blobs: u64,
    /// Files under `blobs/` whose names are not blob names.
    pub stray_files: u64,
    /// Entries left in `staging/` (staged files not ingested, staged directories, temps of
    /// writers still running or dead), and their bytes.
    pub staging_files: u64,
    pub staging_bytes: u64,
    /// Bytes of the index (log segments and snapshots).
    pub index_bytes: u64,
    /// Damaged blob files moved to `quarantine/`, and their bytes.
    pub quarantined_files: u64,
    pub quarantined_bytes: u64,
}

/// How far `verify_report` got.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyProgress {
    pub done: u64,
    pub total: u64,
    pub bytes: u64,
    pub total_bytes: u64,
}

/// A blob that live records name and the store lacks.
#[derive(Debug, Clone, PartialEq)]
pub struct MissingBlob {
    pub digest: Digest,
    /// The live records naming it (for a file of a directory artifact: the directory's).
    pub records: Vec<ArtifactId>,
}

/// What `verify_report` found.
#[derive(Debug, Clone, Default)]
pub struct IntegrityReport {
    /// Blob files re-hashed, and their bytes.
    pub checked: u64,
    pub checked_bytes: u64,
    pub missing: Vec<MissingBlob>,
    /// Blob files whose bytes do not hash to their name.
    pub corrupt: Vec<(Digest, PathBuf)>,
    /// Blob files nothing live names, with their sizes (gc reclaims them; not damage).
    pub orphaned: Vec<(Digest, PathBuf, u64)>,
    /// Files under `blobs/` whose names are not blob names.
    pub stray: Vec<PathBuf>,
    /// Blob files that could not be read, or live directory manifests that do not parse.
    pub unreadable: Vec<(PathBuf, String)>,
    /// Damaged blob files in `quarantine/` (this check's finds and earlier ones).
    pub quarantined: Vec<crate::damage::Quarantined>,
}

impl IntegrityReport {
    /// True when nothing at all was found, orphans included.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty()
            && self.corrupt.is_empty()
            && self.orphaned.is_empty()
            && self.stray.is_empty()
            && self.unreadable.is_empty()
            && self.quarantined.is_empty()
    }
}

impl StoreStats {
    /// The record and dedup counts of a live set (local and S3 stores alike); the counts of
    /// what is stored are the caller's.
    pub fn of_live(live: &crate::live::LiveSet) -> StoreStats {
        let (blob_count, blob_bytes) = live.distinct();
        StoreStats {
            records: live.records,
            live_bytes: live.live_bytes,
            blob_count,
            blob_bytes,
            dedup_ratio: if blob_bytes == 0 {
                1.0
            } else {
                live.live_bytes as f64 / blob_bytes as f64
            },
            ..StoreStats::default()
        }
    }
}

impl Store {
    /// Counts records, blobs and leftovers, and their bytes. Reads every directory entry of
    /// `blobs/` (one `stat` each) and the index; hashes nothing.
    pub fn stats(&self) -> Result<StoreStats> {
        let files = self.blob_files()?;
        let on_disk: HashSet<Digest> = files.iter().filter_map(|f| f.digest).collect();
        let live = self.live_now(&HashSet::new(), &mut ManifestCache::new(), Some(&on_disk))?;
        let mut s = StoreStats::of_live(&live);
        for f in &files {
            let Some(d) = f.digest else {
                s.stray_files += 1;
                continue;
            };
            s.disk_blobs += 1;
            s.disk_bytes += f.size;
            if !live.contains(&d) {
                s.orphan_blobs += 1;
                s.orphan_bytes += f.size;
            }
        }
        s.missing_blobs = live.absent.len() as u64;
        (s.staging_files, s.staging_bytes) = entries_and_bytes(self.blobs().staging_dir())?;
        s.index_bytes = entries_and_bytes(&self.root().join("index"))?.1;
        let q = self.blobs().quarantined()?;
        s.quarantined_files = q.len() as u64;
        s.quarantined_bytes = q.iter().map(|f| f.size).sum();
        Ok(s)
    }

    /// Re-hashes every blob file and compares the store with its index: blobs live records
    /// name but the store lacks (missing), blobs whose bytes do not match their name
    /// (corrupt), blobs nothing live names (orphaned), and stray files.
    ///
    /// `progress` is called after each blob file; returning `false` stops the check with an
    /// error.
    pub fn verify_report(
        &self,
        progress: &mut dyn FnMut(&VerifyProgress) -> bool,
    ) -> Result<IntegrityReport> {
        let files = self.blob_files()?;
        let mut p = VerifyProgress {
            total: files.len() as u64,
            total_bytes: files.iter().map(|f| f.size).sum(),
            ..VerifyProgress::default()
        };
        let mut r = IntegrityReport::default();
        let mut present = Vec::with_capacity(files.len());
        for f in files {
            p.done += 1;
            p.bytes += f.size;
            match f.digest {
                None => r.stray.push(f.path),
                Some(d) => match self.check_blob(&d) {
                    Ok(Some(ok)) => {
                        r.checked += 1;
                        r.checked_bytes += f.size;
                        if !ok {
                            r.corrupt.push((d, f.path.clone()));
                        }
                        present.push((d, f.path, f.size));
                    }
                    Ok(None) => {} // deleted since the walk (a concurrent gc)
                    // A symlink or non-file at a blob name: damage (moved to quarantine).
                    Err(e) if e.kind() == ErrorKind::Corrupt => {
                        r.corrupt.push((d, f.path.clone()));
                        present.push((d, f.path, f.size));
                    }
                    Err(e) => r.unreadable.push((f.path, e.message().to_string())),
                },
            }
            if !progress(&p) {
                return Err(Error::new(ErrorKind::Io, "verify was stopped"));
            }
        }
        let mut cache = ManifestCache::new();
        // Damaged files stay "on disk" here: they are reported corrupt, not missing.
        let on_disk: HashSet<Digest> = present.iter().map(|(d, _, _)| *d).collect();
        let live = self.live_now(&HashSet::new(), &mut cache, Some(&on_disk))?;
        for (d, why) in &live.unreadable_trees {
            if self.has_blob(d) {
                r.unreadable.push((
                    self.blobs().path_of(d),
                    format!("directory manifest: {why}"),
                ));
            }
        }
        // Packed blobs of live records: their bytes are in the index log, re-hash them too.
        let algo = self.blobs().algo();
        for (key, loc) in self.index().read(|m| m.live_packed())? {
            let d = Digest::new(algo, key);
            let at = self.root().join("index").join(format!(
                "{}@{}",
                crate::index::log::segment_name(loc.gen_),
                loc.off
            ));
            match self.index().read_packed(&d) {
                Ok(Some(data)) => {
                    r.checked += 1;
                    r.checked_bytes += data.len() as u64;
                    if crate::hash::hash_bytes(algo, &data) != d {
                        r.corrupt.push((d, at));
                    }
                }
                // Gone since `live_now` looked (deleted, or moved by a compaction): that view
                // decided what is missing.
                Ok(None) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => r.unreadable.push((at, e.message().to_string())),
            }
        }
        for (d, path, size) in present {
            if !live.contains(&d) {
                r.orphaned.push((d, path, size));
            }
        }
        let absent: HashSet<Digest> = live.absent.iter().copied().collect();
        if !absent.is_empty() {
            r.missing = self.records_naming(&absent, &cache)?;
        }
        r.corrupt.sort();
        r.orphaned.sort();
        r.stray.sort();
        r.unreadable.sort();
        r.quarantined = self.blobs().quarantined()?;
        Ok(r)
    }

    /// For each digest, the live records naming it directly or through a directory manifest
    /// already in `cache`; digests no live record names any more are left out.
    fn records_naming(
        &self,
        digests: &HashSet<Digest>,
        cache: &ManifestCache,
    ) -> Result<Vec<MissingBlob>> {
        let mut by: HashMap<Digest, Vec<ArtifactId>> = HashMap::new();
        self.index().read(|m| {
            for r in m.iter() {
                if digests.contains(&r.digest) {
                    by.entry(r.digest).or_default().push(r.id);
                }
                if let Some(members) = cache.get(&r.digest) {
                    for d in members.iter().filter(|d| digests.contains(d)) {
                        by.entry(*d).or_default().push(r.id);
                    }
                }
            }
        })?;
        let mut out: Vec<MissingBlob> = by
            .into_iter()
            .map(|(digest, mut records)| {
                records.sort();
                records.dedup();
                MissingBlob { digest, records }
            })
            .collect();
        out.sort_by_key(|m| m.digest);
        Ok(out)
    }
}

/// Entries directly in `dir`, and the bytes of everything below it (symlinks not followed).
pub(crate) fn entries_and_bytes(dir: &Path) -> Result<(u64, u64)> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    let (mut n, mut bytes) = (0, 0);
    for e in rd.flatten() {
        n += 1;
        bytes += tree_bytes(&e.path());
    }
    Ok((n, bytes))
}

fn tree_bytes(p: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(p) else {
        return 0; // gone meanwhile
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(p)
        .map(|rd| rd.flatten().map(|e| tree_bytes(&e.path())).sum())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::index::RecordMeta;

    fn store(name: &str) -> Store {
        crate::store::test_store(&format!("audit-{name}"))
    }

    fn put(s: &Store, data: &[u8]) -> ArtifactId {
        let info = s.blobs().put_bytes(data).unwrap();
        let meta = RecordMeta {
            kind: "k".into(),
            ..RecordMeta::default()
        };
        s.record(info.digest, info.size, &[meta]).unwrap()[0].id
    }

    #[test]
    fn stats_count_dedup_orphans_and_staging() {
        let s = store("stats");
        put(&s, b"aaaa");
        put(&s, b"aaaa");
        put(&s, b"bb");
        let gone = put(&s, b"cccccc");
        s.delete(gone).unwrap();
        let staged = s.blobs().stage(".txt").unwrap();
        std::fs::write(&staged, b"12345").unwrap();
        let st = s.stats().unwrap();
        assert_eq!((st.records, st.live_bytes), (3, 10));
        assert_eq!((st.blob_count, st.blob_bytes), (2, 6));
        assert!((st.dedup_ratio - 10.0 / 6.0).abs() < 1e-12);
        assert_eq!((st.disk_blobs, st.disk_bytes), (3, 12));
        assert_eq!((st.orphan_blobs, st.orphan_bytes), (1, 6));
        assert_eq!((st.staging_files, st.staging_bytes), (1, 5));
        assert_eq!((st.missing_blobs, st.stray_files), (0, 0));
        assert!(st.index_bytes > 0);
    }

    #[test]
    fn verify_finds_missing_corrupt_orphaned_and_stray() {
        let s = store("verify");
        let ok = put(&s, b"fine");
        let lost = put(&s, b"lost");
        let bad = put(&s, b"flip");
        let orphan = s.blobs().put_bytes(b"orphan").unwrap();
        let d = |x: &[u8]| crate::hash_bytes(crate::HashAlgo::Blake3, x);
        std::fs::remove_file(s.blobs().path_of(&d(b"lost"))).unwrap();
        let p = s.blobs().path_of(&d(b"flip"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&p, b"flop").unwrap();
        let stray = s.root().join("blobs").join("README");
        std::fs::write(&stray, b"?").unwrap();
        let mut calls = Vec::new();
        let r = s
            .verify_report(&mut |p| {
                calls.push(*p);
                true
            })
            .unwrap();
        assert_eq!(r.checked, 3);
        assert_eq!(
            r.missing,
            vec![MissingBlob {
                digest: d(b"lost"),
                records: vec![lost]
            }]
        );
        assert_eq!(r.corrupt, vec![(d(b"flip"), p)]);
        assert_eq!(r.orphaned, vec![(orphan.digest, orphan.path.clone(), 6)]);
        assert_eq!(r.stray, vec![stray]);
        assert!(!r.is_clean());
        assert_eq!(calls.len(), 4);
        assert_eq!(calls.last().unwrap().done, 4);
        assert_eq!(calls.last().unwrap().total, 4);
        let _ = (ok, bad);
        let stopped = s.verify_report(&mut |_| false).unwrap_err();
        assert_eq!(stopped.kind(), ErrorKind::Io);
    }
}
