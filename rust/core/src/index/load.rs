//! Loading an index from disk, and replaying log frames into memory.
//!
//! Invariants:
//! - The index knows which files must exist: the newest snapshot's own segment (or `log-1`
//!   without a snapshot), every segment after it, and every segment that the snapshot says
//!   holds live packed bytes. Loading refuses (`Corrupt`, naming the file) when one is missing.
//! - Replay stops at the first frame that is torn, fails its checksum or does not decode; a
//!   bad frame with valid frames after it is damage, never a torn tail (see `log`).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::atomic::{Durability, fsync_dir};
use crate::error::{Error, IoContext, Result};

use super::codec::{Op, decode_op};
use super::log::{
    Frame, damaged_mid_log, header_frame, next_log_frame, parse_name, read_header, segment_name,
    snapshot_name,
};
use super::mem::{BlobLoc, MemIndex};
use super::persist::State;
use super::snapshot::load_snapshot;

/// Applies the whole frames of `buf` from `pos` on; `buf` holds segment `gen_` from byte `base`.
/// Stops after a seal or at the first frame that is torn, fails its checksum or does not
/// decode. Returns the offset reached, the seal's next generation if one was met, and whether
/// it stopped at a bad frame.
pub(super) fn replay(
    mem: &mut MemIndex,
    buf: &[u8],
    mut pos: usize,
    base: u64,
    gen_: u64,
) -> (usize, Option<u64>, bool) {
    loop {
        match next_log_frame(buf, pos) {
            Frame::Ok(payload, next) => match decode_op(payload) {
                Ok(Op::Seal { next_gen }) => return (next, Some(next_gen), false),
                Ok(Op::Blob {
                    digest,
                    data_off,
                    len,
                }) => {
                    let payload_at = base + (next - payload.len()) as u64;
                    let off = payload_at + data_off as u64;
                    mem.add_packed(&digest, BlobLoc { gen_, off, len });
                    pos = next;
                }
                Ok(op) => {
                    apply(mem, &op);
                    pos = next;
                }
                Err(_) => return (pos, None, true),
            },
            Frame::End => return (pos, None, false),
            Frame::Bad => return (pos, None, true),
        }
    }
}

pub(super) fn apply(mem: &mut MemIndex, op: &Op) {
    match op {
        Op::Put(r) => {
            mem.insert(r);
        }
        Op::Pin { id, pinned } => {
            mem.set_pinned(*id, *pinned);
        }
        Op::Delete { id } => {
            mem.delete(*id);
        }
        Op::Seal { .. } | Op::Blob { .. } => {}
    }
}

fn missing(dir: &Path, name: &str, what: &str) -> Error {
    let path = dir.join(name);
    Error::corrupt(format!(
        "index file {name} is missing ({what}): the store will not open without it, since \
         records would be lost silently; restore {} from a backup",
        path.display()
    ))
    .with_path(&path)
}

pub(super) fn damaged(path: &Path, off: u64) -> Error {
    Error::corrupt(format!(
        "index log {} is damaged at byte {off}: a frame fails its checksum but valid frames \
         follow it, so this is not a torn tail and the log is not cut there; restore the file \
         from a backup",
        path.display()
    ))
    .with_path(path)
}

/// Opens segment `gen_` and checks its header; with `create`, makes it when missing.
/// Returns the file and the offset of its first operation.
pub(super) fn open_segment(
    dir: &Path,
    gen_: u64,
    create: bool,
    durability: Durability,
) -> Result<(File, u64)> {
    let path = dir.join(segment_name(gen_));
    let open = || OpenOptions::new().read(true).write(true).open(&path);
    let f = match open() {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            let head = header_frame(gen_);
            // Written as a temp then renamed, so a segment never exists without its header.
            let mut tmp = crate::atomic::AtomicFile::create_in(dir, durability, None, 0o644, "")?;
            tmp.write_all(&head)?;
            tmp.commit_noreplace(&path)?;
            open().ctx("open", &path)?
        }
        Err(e) => return Err(Error::io("open", &path, e)),
    };
    let mut head = vec![0u8; 64];
    let n = f.read_at(&mut head, 0).ctx("read", &path)?;
    head.truncate(n);
    let off = read_header(&head, gen_, &path)?;
    Ok((f, off as u64))
}

/// Loads the newest snapshot and replays the segments after it. Call with the lock held.
pub(super) fn load(dir: &Path, durability: Durability) -> Result<State> {
    let mut snaps = Vec::new();
    let mut all_logs = std::collections::BTreeSet::new();
    let mut logs = Vec::new();
    for entry in std::fs::read_dir(dir).ctx("list", dir)?.flatten() {
        match entry.file_name().to_str().and_then(parse_name) {
            Some(("snap", g)) => snaps.push(g),
            Some((_, g)) => {
                logs.push(g);
                all_logs.insert(g);
            }
            None => {}
        }
    }
    snaps.sort_unstable();
    logs.sort_unstable();
    let (base, mut mem) = match snaps.last() {
        Some(&g) => {
            let (sg, mem) = load_snapshot(&dir.join(snapshot_name(g)))?;
            if sg != g {
                return Err(Error::corrupt(format!(
                    "snapshot {} claims generation {sg}",
                    snapshot_name(g)
                )));
            }
            (g, mem)
        }
        None => (0, MemIndex::default()),
    };
    logs.retain(|&g| g >= base);
    // Compaction writes snap-<g> before it deletes the files before <g>, so the oldest segment
    // is always log-1 or the newest snapshot's own. A later one means that snapshot is gone:
    // opening without it would silently drop every record it held.
    let must_start = base.max(1);
    if logs.first() != Some(&must_start) && (base > 0 || logs.is_empty()) {
        return Err(missing(
            dir,
            &segment_name(must_start),
            "the log segment that holds every record written after the newest snapshot",
        ));
    }
    if let Some(&first) = logs.first()
        && first > must_start
    {
        return Err(Error::corrupt(format!(
            "{} is missing: {} starts after it and the segments before it are gone",
            dir.join(snapshot_name(first)).display(),
            segment_name(first)
        )));
    }
    // Segments after the base follow one another (older ones kept for their packed bytes are
    // before the base). A gap means files were lost, and so were the operations in them.
    if let Some(w) = logs.windows(2).find(|w| w[1] != w[0] + 1) {
        return Err(Error::corrupt(format!(
            "{} is missing: {} and {} are there",
            dir.join(segment_name(w[0] + 1)).display(),
            segment_name(w[0]),
            segment_name(w[1])
        )));
    }
    // The snapshot points into older segments for live packed bytes: each must be there.
    if let Some(g) = mem
        .packed_gens()
        .into_iter()
        .find(|g| !all_logs.contains(g))
    {
        return Err(missing(
            dir,
            &segment_name(g),
            "a log segment that holds the packed bytes of live records",
        ));
    }
    let mut current = None;
    for (i, &g) in logs.iter().enumerate() {
        let last = i + 1 == logs.len();
        let (seg, start) = open_segment(dir, g, false, durability)?;
        let path = dir.join(segment_name(g));
        // Mapped, not read: a segment full of packed blobs is tens of MiB, and replay only
        // checksums the blob bytes, it never copies them. Safe because every writer (and any
        // truncation) holds the lock that our caller holds.
        let map = unsafe { memmap2::Mmap::map(&seg) }.ctx("map", &path)?;
        let buf: &[u8] = &map;
        let (pos, sealed, _) = replay(&mut mem, buf, start as usize, 0, g);
        let len = buf.len();
        let is_damaged = pos < len && damaged_mid_log(buf, pos);
        drop(map);
        if pos < len && sealed.is_none() {
            if is_damaged {
                return Err(damaged(&path, pos as u64));
            }
            // The first bad frame and all after it: a torn tail (or damage); cut it off.
            seg.set_len(pos as u64)
                .ctx("truncate torn tail of", &path)?;
            if durability == Durability::Fsync {
                seg.sync_data().ctx("fsync", &path)?;
            }
        }
        if last {
            match sealed {
                // Sealed but its successor is missing (a compaction died): create it.
                Some(next_gen) => {
                    let (seg, off) = open_segment(dir, next_gen, true, durability)?;
                    current = Some((next_gen, seg, off));
                }
                None => current = Some((g, seg, pos as u64)),
            }
        }
    }
    let (gen_, seg, offset) = current.ok_or_else(|| Error::corrupt("index has no log segment"))?;
    if durability == Durability::Fsync {
        fsync_dir(dir)?;
    }
    Ok(State {
        mem,
        gen_,
        seg: Arc::new(seg),
        offset,
        appended: 0,
    })
}
