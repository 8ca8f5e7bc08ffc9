//! Directory artifacts: a tree of regular files kept as one artifact, whose blob is a manifest
//! listing every file by relative path, size and blob hash.
//!
//! The manifest is compact JSON with sorted keys, files sorted by path and every character
//! outside printable ASCII escaped (`\uXXXX`):
//! `{"files":[{"hash":"blake3:…","path":"a/b.txt","size":3}],"format":"runstash.tree/1"}`.
//! These are the bytes runstash wrote from Python before this module (`json.dumps(...,
//! sort_keys=True, separators=(",", ":"))`), so a directory stored then and now has one hash.
//!
//! Invariants:
//! - This module is the only one that writes or reads a manifest; a record whose mime is
//!   [`TREE_MIME`] names one, and its files are live while it is ([`crate::live`]).
//! - `ingest_dir` checks every entry (symlinks stay inside the directory, regular files only,
//!   UTF-8 names) before it stores a byte, so a refused directory leaves no blob behind.
//! - Member files are blob files, never packed (a built tree hard-links them). Under the index
//!   lock, before the record is appended, every member is still stored: one a concurrent gc
//!   took is saved again from its source (`Store::commit_tree`).
//! - A built `<root>/trees/<hex>/` is handed out only while each of its files is its blob's
//!   file (same inode): after a blob is quarantined (and maybe written again) the tree is
//!   retired and built again, so it never serves bytes the store no longer vouches for.
//! - A built tree is derived data: gc removes the trees of directory artifacts that are no
//!   longer live (their hard links would keep deleted blobs' bytes on disk).

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use crate::blobs::BlobWriter;
use crate::error::{Error, IoContext, Result};
use crate::hash::Digest;
use crate::index::{MemIndex, OwnedRecord, RecordMeta};
use crate::store::Store;

/// The mime type of a directory artifact's manifest (same string as `facade.TREE_MIME`).
pub const TREE_MIME: &str = "application/vnd.runstash.tree+json";
/// The `format` field of every manifest.
pub const TREE_FORMAT: &str = "runstash.tree/1";
/// Where built trees live, under the store root.
pub const TREES_DIR: &str = "trees";

/// One file of a directory artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFile {
    /// Relative path, `/`-separated, never absolute and never with `..`.
    pub path: String,
    pub size: u64,
    pub hash: Digest,
}

/// The manifest of `files` (sorted here by path).
pub fn encode_manifest(files: &mut [TreeFile]) -> Vec<u8> {
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut out = String::from("{\"files\":[");
    for (i, f) in files.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"hash\":");
        json_str(&mut out, &f.hash.to_string());
        out.push_str(",\"path\":");
        json_str(&mut out, &f.path);
        out.push_str(&format!(",\"size\":{}}}", f.size));
    }
    out.push_str("],\"format\":");
    json_str(&mut out, TREE_FORMAT);
    out.push('}');
    out.into_bytes()
}

/// A JSON string as Python's `json.dumps` (ASCII only) writes it.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
        }
    }
    out.push('"');
}

/// The files a manifest lists; `Corrupt` unless it is a `runstash.tree/1` manifest whose
/// paths are relative and stay inside the tree.
pub fn parse_manifest(bytes: &[u8]) -> Result<Vec<TreeFile>> {
    #[derive(serde::Deserialize)]
    struct Entry {
        hash: String,
        path: String,
        size: u64,
    }
    #[derive(serde::Deserialize)]
    struct Manifest {
        files: Vec<Entry>,
        format: String,
    }
    let bad = |why: String| Error::corrupt(format!("not a directory manifest: {why}"));
    let m: Manifest = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    if m.format != TREE_FORMAT {
        return Err(bad(format!("format {:?}, not {TREE_FORMAT:?}", m.format)));
    }
    m.files
        .into_iter()
        .map(|e| {
            if !is_inside(&e.path) {
                return Err(bad(format!("path {:?} escapes the tree", e.path)));
            }
            let hash = e
                .hash
                .parse()
                .map_err(|_| bad(format!("hash {:?}", e.hash)))?;
            Ok(TreeFile {
                path: e.path,
                size: e.size,
                hash,
            })
        })
        .collect()
}

/// Whether a manifest path names a file inside the tree.
fn is_inside(rel: &str) -> bool {
    !rel.is_empty()
        && Path::new(rel)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// The regular files under `root` (a canonical path) as (relative path, source), every entry
/// checked first. A symlink must resolve inside `root`: to a file it is that file, to a
/// directory it is not descended (as Python's `os.walk` does).
/// What every `ingest_dir` starts with: `dir` must be a directory (its path without NUL);
/// returns its canonical path and its files as [`walk`] finds them.
pub(crate) fn open_dir(dir: &Path) -> Result<(PathBuf, Vec<(String, PathBuf)>)> {
    crate::input::check_no_nul(dir)?;
    if !dir.is_dir() {
        return Err(
            Error::invalid(format!("ingest_dir: not a directory: {}", dir.display()))
                .with_path(dir),
        );
    }
    let root = std::fs::canonicalize(dir).ctx("resolve", dir)?;
    let entries = walk(&root)?;
    Ok((root, entries))
}

/// What every `ingest_dir` ends with: with `cleanup`, the ingested directory `root` is removed
/// if `stage_dir` made it (it is directly under `staging`): its bytes are all in the store.
/// The steps of `ingest_dir` on either store: check every entry of `metas` against `algo`,
/// open and walk `dir` ([`open_dir`]), store each file with `store_file` (which returns its
/// digest and size), encode the manifest and hand it, with the files and their sources, to
/// `record`; then, with `cleanup`, remove `dir` if it was made under `staging`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn ingest_dir_with(
    algo: crate::hash::HashAlgo,
    dir: &Path,
    metas: &[RecordMeta],
    cleanup: bool,
    staging: &Path,
    mut store_file: impl FnMut(&Path) -> Result<(Digest, u64)>,
    record: impl FnOnce(Vec<u8>, &[TreeFile], &[PathBuf]) -> Result<Vec<OwnedRecord>>,
) -> Result<Vec<OwnedRecord>> {
    for m in metas {
        crate::new_records::check(m, algo)?;
    }
    let (root, mut entries) = open_dir(dir)?;
    // In manifest order, so that each source stays beside its file.
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut files = Vec::with_capacity(entries.len());
    let mut sources = Vec::with_capacity(entries.len());
    for (rel, src) in entries {
        let (hash, size) = store_file(&src)?;
        files.push(TreeFile {
            path: rel,
            size,
            hash,
        });
        sources.push(src);
    }
    let manifest = encode_manifest(&mut files);
    let recs = record(manifest, &files, &sources)?;
    remove_if_staged(&root, staging, cleanup)?;
    Ok(recs)
}

pub(crate) fn remove_if_staged(root: &Path, staging: &Path, cleanup: bool) -> Result<()> {
    let staging = std::fs::canonicalize(staging).ok();
    if cleanup && staging.is_some() && root.parent() == staging.as_deref() {
        make_writable(root);
        std::fs::remove_dir_all(root).ctx("remove", root)?;
    }
    Ok(())
}

pub(crate) fn walk(root: &Path) -> Result<Vec<(String, PathBuf)>> {
    let refuse = |msg: String, p: &Path| Err(Error::invalid(msg).with_path(p));
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).ctx("list", &dir)? {
            let p = entry.ctx("list", &dir)?.path();
            let meta = std::fs::symlink_metadata(&p).ctx("stat", &p)?;
            let target = if meta.file_type().is_symlink() {
                let Ok(real) = std::fs::canonicalize(&p) else {
                    return refuse(
                        format!("ingest_dir: symlink {} points to nothing", p.display()),
                        &p,
                    );
                };
                if !real.starts_with(root) {
                    return refuse(
                        format!(
                            "ingest_dir: symlink {} points out of the directory",
                            p.display()
                        ),
                        &p,
                    );
                }
                std::fs::metadata(&real).ctx("stat", &real)?
            } else {
                meta.clone()
            };
            if target.is_dir() {
                if !meta.file_type().is_symlink() {
                    todo.push(p);
                }
                continue;
            }
            if !target.is_file() {
                return refuse(
                    format!(
                        "ingest_dir: {} is not a regular file (a FIFO, socket or device); a \
                         directory artifact holds regular files only",
                        p.display()
                    ),
                    &p,
                );
            }
            let rel = p.strip_prefix(root).map_err(|_| {
                Error::invalid(format!(
                    "ingest_dir: {} is outside the directory",
                    p.display()
                ))
            })?;
            let Some(rel) = rel.to_str() else {
                return refuse(
                    format!(
                        "ingest_dir: {} is not valid UTF-8; manifest paths are text",
                        p.display()
                    ),
                    &p,
                );
            };
            out.push((rel.to_owned(), p));
        }
    }
    Ok(out)
}

impl Store {
    /// Stores the directory `dir` as one artifact: every file a blob file, then the manifest,
    /// recorded with `metas`. With `cleanup`, a directory made by `stage_dir` (directly under
    /// `staging/`) is removed afterwards: its bytes are all in the store.
    pub fn ingest_dir(
        &self,
        dir: &Path,
        metas: &[RecordMeta],
        cleanup: bool,
    ) -> Result<Vec<OwnedRecord>> {
        ingest_dir_with(
            self.blobs().algo(),
            dir,
            metas,
            cleanup,
            self.blobs().staging_dir(),
            |src| self.blobs().save(src).map(|i| (i.digest, i.size)),
            |manifest, files, sources| {
                let members: Vec<(Digest, PathBuf)> = files
                    .iter()
                    .zip(sources)
                    .map(|(f, s)| (f.hash, s.clone()))
                    .collect();
                let mut w = self.writer(".json")?;
                w.write_all(&manifest)?;
                self.commit_tree(w, metas, &members)
            },
        )
    }

    /// Commits the manifest writer of a directory artifact whose files were stored as blob
    /// files (`members`: each file's digest and the source it was saved from). Under the index
    /// lock, before the record is appended, every member must still be stored: one that a
    /// concurrent gc took (a dedup hit on an old orphan is "old" to gc, whatever its grace) is
    /// saved again from its source, so the directory artifact never names a missing file.
    fn commit_tree(
        &self,
        w: BlobWriter,
        metas: &[RecordMeta],
        members: &[(Digest, PathBuf)],
    ) -> Result<Vec<OwnedRecord>> {
        let ensure = |m: &MemIndex| -> Result<()> {
            for (d, src) in members {
                if m.packed(d).is_some() || self.blobs().exists(d) {
                    continue;
                }
                let info = self.blobs().save(src)?;
                if info.digest != *d {
                    return Err(Error::invalid(format!(
                        "{} changed while its directory was being ingested",
                        src.display()
                    )));
                }
            }
            Ok(())
        };
        self.commit_writer_checked(w, metas, ensure)
    }

    /// The files of the directory artifact whose manifest is `manifest` (read and verified).
    pub fn tree_files(&self, manifest: &Digest) -> Result<Vec<TreeFile>> {
        parse_manifest(&self.read_blob(manifest, true)?)
    }

    /// A read-only directory holding the files of a directory artifact, as hard links to its
    /// blob files: `<root>/trees/<hex>/`, built on first request.
    pub fn tree_dir(&self, manifest: &Digest) -> Result<PathBuf> {
        let files = self.tree_files(manifest)?;
        let trees = self.root().join(TREES_DIR);
        materialize(&trees, self.blobs(), manifest, &files, &|d| {
            self.blob_path(d)
        })
    }

    /// The built trees under `trees/` whose manifest is not one of `live` (their artifact was
    /// deleted): what gc removes, since their hard links keep deleted blobs' bytes on disk.
    pub(crate) fn stale_trees(&self, live: &HashSet<Digest>) -> Result<Vec<PathBuf>> {
        let dir = self.root().join(TREES_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("list", &dir, e)),
        };
        let algo = self.blobs().algo();
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.ctx("list", &dir)?;
            let named = entry.file_name().to_str().and_then(|hex| {
                let d: Digest = format!("{algo}:{hex}").parse().ok()?;
                Some(d)
            });
            // Only directories named like a manifest digest are runstash's to remove.
            if let Some(d) = named
                && !live.contains(&d)
                && entry.file_type().is_ok_and(|t| t.is_dir())
            {
                out.push(entry.path());
            }
        }
        out.sort();
        Ok(out)
    }

    /// Moves a stale tree out of `trees/` (into `staging/`) and removes it.
    pub(crate) fn retire_tree(&self, dest: &Path) -> Result<()> {
        retire(self.blobs(), dest)
    }
}

/// Moves a stale tree out of the way (into `blobs`' staging) and removes it.
fn retire(blobs: &crate::blobs::BlobStore, dest: &Path) -> Result<()> {
    let old = blobs.stage_dir(".stale-tree")?;
    // Moving a directory rewrites its ".." entry: it must be writable.
    let _ = set_mode(dest, 0o700);
    match std::fs::rename(dest, &old) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {} // retired meanwhile
        Err(e) => return Err(Error::io("rename", dest, e)),
    }
    make_writable(&old);
    std::fs::remove_dir_all(&old).ctx("remove", &old)
}

/// The read-only directory `<trees>/<hex of manifest>/` of `files`, as hard links to the blob
/// files `blob_path` gives (built in `blobs`' staging, then renamed into place; an existing
/// one is reused while every file is still a link to its blob, else rebuilt).
pub(crate) fn materialize(
    trees: &Path,
    blobs: &crate::blobs::BlobStore,
    manifest: &Digest,
    files: &[TreeFile],
    blob_path: &dyn Fn(&Digest) -> Result<PathBuf>,
) -> Result<PathBuf> {
    let dest = trees.join(manifest.hex());
    if dest.is_dir() {
        if tree_is_current(&dest, files, blob_path) {
            return Ok(dest);
        }
        retire(blobs, &dest)?;
    }
    let build = blobs.stage_dir(".tree")?;
    let built = build_tree(&build, files, blob_path);
    let moved = built.and_then(|()| {
        std::fs::create_dir_all(trees).ctx("create directory", trees)?;
        match std::fs::rename(&build, &dest) {
            Ok(()) => Ok(true),
            Err(_) if dest.is_dir() => Ok(false), // another caller built it first
            Err(e) => Err(Error::io("rename", &dest, e)),
        }
    });
    if !matches!(moved, Ok(true)) {
        make_writable(&build);
        let _ = std::fs::remove_dir_all(&build);
    }
    moved.map(|_| dest)
}

fn build_tree(
    build: &Path,
    files: &[TreeFile],
    blob_path: &dyn Fn(&Digest) -> Result<PathBuf>,
) -> Result<()> {
    let mut dirs = std::collections::BTreeSet::from([build.to_path_buf()]);
    for f in files {
        let target = build.join(&f.path);
        // The directories above `target` not made yet (every path is under `build`).
        let mut fresh = Vec::new();
        let mut d = target.parent();
        while let Some(p) = d
            && !dirs.contains(p)
        {
            fresh.push(p.to_path_buf());
            d = p.parent();
        }
        if let Some(deepest) = fresh.first() {
            std::fs::create_dir_all(deepest).ctx("create directory", deepest)?;
        }
        dirs.extend(fresh);
        let src = blob_path(&f.hash)?;
        std::fs::hard_link(&src, &target).ctx("link", &target)?;
    }
    // Deepest first, so that each directory is still writable while its children change.
    let mut dirs: Vec<PathBuf> = dirs.into_iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        set_mode(&d, 0o550)?;
    }
    Ok(())
}

/// Whether every file of a built tree is still a link to its blob's file.
fn tree_is_current(
    dest: &Path,
    files: &[TreeFile],
    blob_path: &dyn Fn(&Digest) -> Result<PathBuf>,
) -> bool {
    use std::os::unix::fs::MetadataExt;
    files.iter().all(|f| {
        let have = std::fs::metadata(dest.join(&f.path));
        let want = blob_path(&f.hash)
            .and_then(|p| std::fs::metadata(&p).map_err(|e| Error::io("stat", &p, e)));
        matches!((have, want), (Ok(h), Ok(w)) if (h.dev(), h.ino()) == (w.dev(), w.ino()))
    })
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).ctx("chmod", p)
}

/// Makes every directory under `root` writable again (best effort), so it can be removed.
fn make_writable(root: &Path) {
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        let _ = set_mode(&d, 0o700);
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    todo.push(e.path());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorKind, HashAlgo, hash_bytes};

    fn file(path: &str, data: &[u8]) -> TreeFile {
        TreeFile {
            path: path.into(),
            size: data.len() as u64,
            hash: hash_bytes(HashAlgo::Blake3, data),
        }
    }

    #[test]
    fn manifests_are_the_bytes_python_wrote() {
        let mut files = vec![
            file("z.txt", b"zz"),
            file("d/\u{e9}\"\n\u{1f600}.bin", b"x"),
        ];
        let text = String::from_utf8(encode_manifest(&mut files)).unwrap();
        let (x, z) = (files[0].hash, files[1].hash);
        // json.dumps({"format": ..., "files": [...]}, sort_keys=True, separators=(",", ":"))
        let want = format!(
            r#"{{"files":[{{"hash":"{x}","path":"d/\u00e9\"\n\ud83d\ude00.bin","size":1}},{{"hash":"{z}","path":"z.txt","size":2}}],"format":"runstash.tree/1"}}"#
        )
        .replace("\n", "\\n");
        assert_eq!(text, want);
        assert_eq!(parse_manifest(text.as_bytes()).unwrap(), files);
    }

    #[test]
    fn manifests_parse_or_fail_clearly() {
        let d = hash_bytes(HashAlgo::Blake3, b"x");
        let ok = format!(
            r#"{{"files":[{{"hash":"{d}","path":"a","size":1}}],"format":"runstash.tree/1"}}"#
        );
        assert_eq!(parse_manifest(ok.as_bytes()).unwrap()[0].hash, d);
        for bad in [
            "{}".to_string(),
            ok.replace("runstash.tree/1", "runstash.tree/2"),
            ok.replace(&d.to_string(), "md5:00"),
            ok.replace(r#""a""#, r#""../a""#),
            ok.replace(r#""a""#, r#""/a""#),
            ok.replace(r#""a""#, r#""""#),
        ] {
            let e = parse_manifest(bad.as_bytes()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{bad}");
        }
    }

    #[test]
    fn ingest_builds_a_tree_and_rebuilds_it_after_a_member_is_quarantined() {
        use std::os::unix::fs::PermissionsExt;
        let s = crate::store::test_store("tree-ingest");
        let src = s.blobs().stage_dir("").unwrap();
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("a.txt"), b"aaa").unwrap();
        std::fs::write(src.join("sub/b.txt"), b"bb").unwrap();
        std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
        let meta = RecordMeta {
            kind: "dir".into(),
            mime: Some(TREE_MIME.into()),
            ..RecordMeta::default()
        };
        let rec = s.ingest_dir(&src, &[meta], true).unwrap().remove(0);
        assert!(!src.exists(), "a staged directory is removed");
        let files = s.tree_files(&rec.digest).unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a.txt", "link", "sub/b.txt"]);
        assert_eq!(files.iter().map(|f| f.size).sum::<u64>(), 8);

        let tree = s.tree_dir(&rec.digest).unwrap();
        assert_eq!(std::fs::read(tree.join("sub/b.txt")).unwrap(), b"bb");
        assert_eq!(tree.metadata().unwrap().permissions().mode() & 0o777, 0o550);
        // Member a's blob goes to quarantine (damaged), then the same bytes are stored again.
        let a = s.blobs().path_of(&files[0].hash);
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&a, b"aXa").unwrap();
        assert!(!s.verify_blob(&files[0].hash).unwrap());
        assert!(
            s.tree_dir(&rec.digest).is_err(),
            "no tree without its member"
        );
        s.blobs().put_bytes(b"aaa").unwrap();
        let again = s.tree_dir(&rec.digest).unwrap();
        assert_eq!(again, tree);
        assert_eq!(std::fs::read(again.join("a.txt")).unwrap(), b"aaa");
        assert_eq!(std::fs::read(again.join("link")).unwrap(), b"aaa");
    }

    #[test]
    fn ingest_refuses_links_out_and_special_files_before_storing() {
        let s = crate::store::test_store("tree-refuse");
        let src = s.blobs().stage_dir("").unwrap();
        std::fs::write(src.join("a.txt"), b"kept out").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", src.join("out")).unwrap();
        let meta = RecordMeta {
            kind: "dir".into(),
            ..RecordMeta::default()
        };
        let e = s
            .ingest_dir(&src, std::slice::from_ref(&meta), true)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.message().contains("points out of the directory"), "{e}");
        std::fs::remove_file(src.join("out")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            src.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let e = s.ingest_dir(&src, &[meta], true).unwrap_err();
        assert!(e.message().contains("not a regular file"), "{e}");
        assert!(!s.has_blob(&hash_bytes(HashAlgo::Blake3, b"kept out")));
    }
}
