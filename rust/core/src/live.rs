//! What is live: the blobs that live records name, and the one door to "is this blob here".
//!
//! A blob is live when a live record names it, or when it is a file of a live directory
//! artifact (a record whose mime is [`TREE_MIME`]: its bytes are a manifest listing the
//! file blobs by hash; [`crate::tree`] writes and parses them). Everything else under
//! `blobs/` is an orphan: garbage collection may delete it, `verify` reports it.
//!
//! Invariants:
//! - Presence of a blob is asked through [`Store::has_blob`] only, never by looking at `blobs/`
//!   directly: a blob need not be a file of its own (small payloads are packed into the index
//!   log), and that method is where this knowledge belongs.
//! - A manifest that cannot be read, or whose bytes no longer match its digest, leaves its
//!   members unknown; callers that delete (gc) must then refuse, callers that report (stats,
//!   verify) report it.
//! - What is live, which manifests are unreadable and which blobs are absent come from one
//!   view of the index ([`Store::live_now`]), and loss is only ever concluded under the index
//!   lock: seen without it, a record deleted and its manifest or packed segment reclaimed by
//!   another process in between would look like loss.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::SystemTime;

use crate::error::{ErrorKind, Result};
use crate::hash::Digest;
use crate::index::{ArtifactId, MemIndex, PackedReader};
use crate::store::Store;

pub use crate::tree::TREE_MIME;

/// The blobs live records name, as seen in one state of the index.
#[derive(Debug, Default, Clone)]
pub struct LiveSet {
    /// Live records seen.
    pub records: u64,
    /// Sum of the sizes of the live records (a blob named twice counts twice).
    pub live_bytes: u64,
    /// Digest -> (size, how many live records name it).
    pub named: HashMap<Digest, (u64, u64)>,
    /// Live directory artifacts: (record id, manifest digest).
    pub trees: Vec<(ArtifactId, Digest)>,
    /// Blobs listed by the manifests of live directory artifacts.
    pub members: HashSet<Digest>,
    /// Manifests of live directory artifacts that could not be read or parsed.
    pub unreadable_trees: Vec<(Digest, String)>,
    /// Blobs named or listed here that the store lacks (neither packed in a segment that can
    /// be opened, nor a file), sorted; filled by [`Store::live_now`] when asked to.
    pub absent: Vec<Digest>,
}

impl LiveSet {
    /// `Corrupt` when a live directory artifact's manifest cannot be read: without its
    /// contents any blob might be one of its files, so `op` (gc, keep_best) deletes nothing.
    pub fn refuse_unreadable_trees(&self, op: &str) -> crate::error::Result<()> {
        match self.unreadable_trees.first() {
            None => Ok(()),
            Some((d, why)) => Err(crate::error::Error::corrupt(format!(
                "{op} refused, nothing deleted: the manifest {d} of a live directory artifact \
                 cannot be read ({why}), so which files it holds is unknown; run verify, and \
                 delete that artifact or restore the blob"
            ))),
        }
    }

    /// The records of `m`, leaving out those in `except` (a preview of deleting them).
    /// Manifests are not read here: [`Store::live_now`] does it.
    pub fn of_index(m: &MemIndex, except: &HashSet<ArtifactId>) -> LiveSet {
        let tree_mime = m.strings.lookup(TREE_MIME);
        let mut live = LiveSet::default();
        for r in m.iter() {
            if except.contains(&r.id) {
                continue;
            }
            live.records += 1;
            live.live_bytes += r.size;
            let e = live.named.entry(r.digest).or_insert((r.size, 0));
            e.1 += 1;
            if tree_mime.is_some() && r.mime.get() == tree_mime {
                live.trees.push((r.id, r.digest));
            }
        }
        live
    }

    /// Whether a blob is named by a live record or listed by a live directory artifact.
    pub fn contains(&self, d: &Digest) -> bool {
        self.named.contains_key(d) || self.members.contains(d)
    }

    /// Distinct blobs named by live records, and their bytes (the store's data after dedup).
    pub fn distinct(&self) -> (u64, u64) {
        let bytes = self.named.values().map(|&(size, _)| size).sum();
        (self.named.len() as u64, bytes)
    }
}

/// Reads a blob's packed bytes (`None`: not packed).
pub type PackedFn<'a> = dyn Fn(&Digest) -> Result<Option<Vec<u8>>> + 'a;

/// Parsed manifests by their digest: manifests are content-addressed, so never stale.
pub type ManifestCache = HashMap<Digest, Vec<Digest>>;

/// A file under `blobs/`, as a walk found it.
#[derive(Debug, Clone)]
pub struct BlobFile {
    pub path: PathBuf,
    /// `None` when the name is not a blob name (a stray file).
    pub digest: Option<Digest>,
    pub size: u64,
    /// When the file got its blob name: the later of mtime and ctime. A rename or link (how a
    /// blob is published) sets ctime, so a file written long ago in `staging/` and ingested
    /// just now counts as new.
    pub named_at: SystemTime,
}

impl Store {
    /// What is live in the newest state of the index, manifests read (through `cache`), and,
    /// with `on_disk` (blob files a walk just found: present without a `stat`), the blobs the
    /// store lacks in [`LiveSet::absent`].
    ///
    /// Read without the index lock first, so writers go on. When that view finds a manifest
    /// unreadable or a blob absent, it is taken again under the lock, where nothing can be
    /// deleted: a record deleted (and its blob reclaimed) by another process in between is
    /// then simply not live. Should the lock be refused (a read-only store, an index replaced
    /// under this handle), the first view is the answer.
    pub fn live_now(
        &self,
        except: &HashSet<ArtifactId>,
        cache: &mut ManifestCache,
        on_disk: Option<&HashSet<Digest>>,
    ) -> Result<LiveSet> {
        let first = self
            .index()
            .read_with(|m, packed| self.live_in(m, packed, except, cache, on_disk))?;
        if first.unreadable_trees.is_empty() && first.absent.is_empty() {
            return Ok(first);
        }
        match self
            .index()
            .locked(|m, packed| Ok(self.live_in(m, packed, except, cache, on_disk)))
        {
            Ok(settled) => Ok(settled),
            Err(_) => Ok(first),
        }
    }

    /// [`live_now`](Self::live_now) in one given state (`m` and its `packed` bytes).
    pub(crate) fn live_in(
        &self,
        m: &MemIndex,
        packed: &PackedReader<'_>,
        except: &HashSet<ArtifactId>,
        cache: &mut ManifestCache,
        on_disk: Option<&HashSet<Digest>>,
    ) -> LiveSet {
        let mut live = LiveSet::of_index(m, except);
        self.resolve_trees_with(&mut live, cache, &|d| packed.read(d));
        if let Some(on_disk) = on_disk {
            let mut absent: Vec<Digest> = live
                .named
                .keys()
                .chain(live.members.iter())
                .filter(|d| !on_disk.contains(d) && !packed.has(d) && !self.blobs().exists(d))
                .copied()
                .collect();
            absent.sort();
            absent.dedup();
            live.absent = absent;
        }
        live
    }

    /// Re-hashes one blob *file*: `Some(true)` intact, `Some(false)` its bytes no longer hash
    /// to its name, `None` no such file. (Packed blobs: [`Store::verify_blob`].)
    pub fn check_blob(&self, d: &Digest) -> Result<Option<bool>> {
        match self.blobs().verify(d) {
            Ok(ok) => Ok(Some(ok)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The file blobs listed by a directory artifact's manifest.
    pub fn tree_members(&self, manifest: &Digest) -> Result<Vec<Digest>> {
        self.tree_members_with(manifest, &|d| self.index().read_packed(d))
    }

    /// [`tree_members`](Self::tree_members), reading packed bytes with `packed` (under the
    /// index lock the caller passes the [`PackedReader`] it holds).
    pub fn tree_members_with(
        &self,
        manifest: &Digest,
        packed: &PackedFn<'_>,
    ) -> Result<Vec<Digest>> {
        self.blobs().check_digest(manifest)?;
        let bytes = match packed(manifest) {
            Ok(Some(b)) => b,
            Ok(None) => self.blobs().read(manifest, false)?,
            Err(e) if e.kind() == ErrorKind::NotFound => self.blobs().read(manifest, false)?,
            Err(e) => return Err(e),
        };
        // A damaged manifest may still parse, and list the wrong members: never trusted.
        if crate::hash_bytes(self.blobs().algo(), &bytes) != *manifest {
            return Err(crate::Error::corrupt(format!(
                "directory manifest {manifest} does not match its hash: which files it lists \
                 is unknown"
            )));
        }
        Ok(crate::tree::parse_manifest(&bytes)?
            .into_iter()
            .map(|f| f.hash)
            .collect())
    }

    /// Reads the manifests of `live.trees` (through `cache`) into `live.members`, reading
    /// packed manifests with `packed` (one view of the index: see [`Store::live_now`]).
    pub fn resolve_trees_with(
        &self,
        live: &mut LiveSet,
        cache: &mut ManifestCache,
        packed: &PackedFn<'_>,
    ) {
        for (_, d) in &live.trees {
            if !cache.contains_key(d) {
                match self.tree_members_with(d, packed) {
                    Ok(members) => {
                        cache.insert(*d, members);
                    }
                    Err(e) => {
                        live.unreadable_trees.push((*d, e.message().to_string()));
                        continue;
                    }
                }
            }
            live.members.extend(cache[d].iter().copied());
        }
        live.unreadable_trees.sort();
        live.unreadable_trees.dedup();
    }

    /// Every file under `blobs/` with its size and naming time. Files that vanish during the
    /// walk (deleted by a concurrent gc) are left out.
    pub fn blob_files(&self) -> Result<Vec<BlobFile>> {
        let mut out = Vec::new();
        for (path, digest) in self.blobs().walk()? {
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(crate::Error::io("stat", &path, e)),
            };
            out.push(BlobFile {
                size: meta.len(),
                named_at: named_at(&meta),
                path,
                digest,
            });
        }
        Ok(out)
    }
}

/// The later of a file's mtime and ctime.
pub(crate) fn named_at(meta: &std::fs::Metadata) -> SystemTime {
    use std::os::unix::fs::MetadataExt;
    let ctime = SystemTime::UNIX_EPOCH
        + std::time::Duration::new(
            meta.ctime().max(0) as u64,
            meta.ctime_nsec().clamp(0, 999_999_999) as u32,
        );
    let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    ctime.max(mtime)
}
