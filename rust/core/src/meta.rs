//! `STORE.json`: what makes a directory a runstash store, and creating one.
//!
//! Invariants:
//! - `STORE.json` is written last when a store is created (after `index/` and its first
//!   segment), so a store with `STORE.json` always has an index, and one whose index files are
//!   missing is damaged, never new: it is refused (`Corrupt`), never re-initialised.
//! - A directory that holds blob files or index records but no `STORE.json` is a store that
//!   lost its `STORE.json`: refused, never re-created (that could change its hash).
//! - `STORE.json`'s hash must be the hash of the index's records: refused otherwise.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::atomic::{AtomicFile, Durability, fsync_dir};
use crate::dates::utc_now_iso;
use crate::error::{Error, IoContext, Result};
use crate::hash::HashAlgo;
use crate::index::SharedIndex;
use crate::store::OpenOptions;

/// The on-disk format this code writes and the newest it can read.
pub const FORMAT_VERSION: u32 = 1;
pub(crate) const META_FILE: &str = "STORE.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoreMeta {
    pub format: String,
    pub format_version: u32,
    pub hash: String,
    pub created_at: String,
}

/// Creates a store root and any missing parents; in durable mode their names are fsynced
/// into their parents, so that a power cut cannot take the whole new store away.
pub(crate) fn create_root(root: &Path, durability: Durability) -> Result<()> {
    let abs = std::path::absolute(root).ctx("resolve", root)?;
    let existing = abs
        .ancestors()
        .skip(1)
        .find(|a| a.is_dir())
        .map(Path::to_path_buf);
    std::fs::create_dir_all(&abs).ctx("create store root", root)?;
    if durability == Durability::Fsync {
        for dir in abs.ancestors().skip(1) {
            fsync_dir(dir)?;
            if Some(dir) == existing.as_deref() {
                break;
            }
        }
    }
    Ok(())
}

pub(crate) fn read_meta(path: &Path) -> Result<Option<StoreMeta>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::corrupt(format!("{} is not valid: {e}", path.display())).with_path(path)
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

pub(crate) fn check_meta(meta: &StoreMeta, path: &Path, want: Option<HashAlgo>) -> Result<()> {
    if meta.format != "runstash" {
        return Err(Error::incompatible(format!(
            "{} is not a runstash store file",
            path.display()
        )));
    }
    if meta.format_version > FORMAT_VERSION {
        return Err(Error::incompatible(format!(
            "store format {} (in {}) is newer than this runstash understands ({FORMAT_VERSION}); upgrade runstash",
            meta.format_version,
            path.display()
        )));
    }
    if let Some(want) = want
        && meta.hash != want.name()
    {
        return Err(Error::incompatible(format!(
            "store {} hashes with {}, not {}; open it without hash= or with hash={:?}",
            path.parent().unwrap_or(path).display(),
            meta.hash,
            want,
            meta.hash
        )));
    }
    Ok(())
}

/// Writes STORE.json for a new store. Several processes may race here: the first rename wins
/// and the others read what it wrote.
pub(crate) fn create(root: &Path, opts: OpenOptions) -> Result<StoreMeta> {
    if let Some(what) = holds_a_store(root)? {
        // A creator that won a race writes STORE.json before any record or blob exists.
        if let Some(meta) = read_meta(&root.join(META_FILE))? {
            return Ok(meta);
        }
        return Err(Error::corrupt(format!(
            "{} holds {what} but no {META_FILE}: it is a store that lost {META_FILE}; refusing \
             to re-initialise it (restore {META_FILE} from a backup)",
            root.display()
        ))
        .with_path(&root.join(META_FILE)));
    }
    let has_other_files = std::fs::read_dir(root)
        .ctx("list", root)?
        .flatten()
        .any(|e| {
            !matches!(
                e.file_name().to_str(),
                Some("blobs" | "staging" | "index" | "runs")
            )
        });
    if has_other_files {
        return Err(Error::invalid(format!(
            "{} is a non-empty directory without {META_FILE}: not a runstash store; refusing to write into it",
            root.display()
        )));
    }
    let meta = StoreMeta {
        format: "runstash".into(),
        format_version: FORMAT_VERSION,
        hash: opts.hash.unwrap_or(HashAlgo::Blake3).name().into(),
        created_at: utc_now_iso(),
    };
    let body = serde_json::to_vec_pretty(&meta).map_err(|e| Error::invalid(e.to_string()))?;
    // The index first (see the invariants at the top): STORE.json means "a complete store".
    for sub in ["blobs", "staging"] {
        let p = root.join(sub);
        match std::fs::create_dir(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && p.is_dir() => {}
            Err(e) => return Err(Error::io("create directory", &p, e)),
        }
    }
    drop(SharedIndex::create(&root.join("index"), opts.durability)?);
    if opts.durability == Durability::Fsync {
        fsync_dir(root)?;
    }
    let mut f = AtomicFile::create_in(root, opts.durability, None, 0o644, "")?;
    f.write_all(&body)?;
    if f.commit_noreplace(&root.join(META_FILE))? {
        return Ok(meta);
    }
    read_meta(&root.join(META_FILE))?
        .ok_or_else(|| Error::corrupt("STORE.json vanished while opening"))
}

/// What makes `root` (without STORE.json) a store already: blob files, or an index with a
/// snapshot or records. A crash while creating leaves at most empty directories and an empty
/// first segment, which a new open completes.
pub(crate) fn holds_a_store(root: &Path) -> Result<Option<&'static str>> {
    let blobs = root.join("blobs");
    if let Ok(mut rd) = std::fs::read_dir(&blobs)
        && rd.next().is_some()
    {
        return Ok(Some("blobs/"));
    }
    let index = root.join("index");
    let Ok(rd) = std::fs::read_dir(&index) else {
        return Ok(None);
    };
    for ent in rd.flatten() {
        let name = ent.file_name();
        let Some((kind, g)) = name.to_str().and_then(crate::index::log::parse_name) else {
            continue;
        };
        let len = ent.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
        if kind == "snap" || len > crate::index::log::header_frame(g).len() as u64 {
            return Ok(Some("index/"));
        }
    }
    Ok(None)
}

/// The index's records must be digests of the store's hash: a `STORE.json` that says another
/// would make every blob look corrupt (and every blob an orphan to gc).
pub(crate) fn check_index_hash(
    index: &SharedIndex,
    algo: HashAlgo,
    meta_path: &Path,
) -> Result<()> {
    let found = index.read(|m| m.iter().next().map(|r| r.digest.algo()))?;
    match found {
        Some(a) if a != algo => Err(Error::corrupt(format!(
            "{} says hash {algo} but the index's records are {a} digests: {} was changed or \
             replaced; restore it (or set \"hash\": \"{a}\")",
            meta_path.display(),
            META_FILE
        ))
        .with_path(meta_path)),
        _ => Ok(()),
    }
}
