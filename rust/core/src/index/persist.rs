//! `SharedIndex`: the in-memory index kept in step with the on-disk log, for every process
//! that opens the store.
//!
//! Invariants:
//! - An operation is appended only by a holder of the exclusive `index/LOCK` flock, after it
//!   has applied every frame already in the log (so pins and deletes are checked against the
//!   newest state, and a torn tail left by a dead writer is truncated first).
//!   The lock itself, across `fork()` and a removed LOCK file: `lock.rs`. Within a process the
//!   state mutex orders holders.
//! - A query first applies frames other processes appended: one `fstat` of the current segment
//!   when nothing changed.
//! - Compaction, under the lock: seal the current segment (a frame naming the next one), create
//!   the next segment, write `snap-<next>` (everything before it), then delete older files.
//!   A crash between any two steps leaves a store that reopens to the same records.
//! - A process that follows a seal (another process compacted) forgets the packed bytes that
//!   no live record names, exactly as the compactor did: their segment may be gone, and bytes
//!   written again must be packed (or stored) again, never "found" in a deleted segment.
//! - Loading refuses an index whose required files are missing (`load.rs`).
//! - Anything that deletes (gc, retention, compaction) first checks that the current segment
//!   at its name is still the file this process has open ([`SharedIndex::check_intact`]).
//! - In durable mode a write returns only after its frame is on disk: one `fdatasync` covers
//!   every frame appended before it started, so concurrent writers share it (group commit).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::atomic::{Durability, fsync_dir};
use crate::error::{Error, IoContext, Result};
use crate::hash::Digest;

use super::codec::{Enc, Op, blob_prefix, encode_blob, encode_op};
use super::load::{apply, damaged, load, open_segment, replay};
use super::lock::{FileLock, LockFd};
use super::log::{FRAME_OVERHEAD, damaged_mid_log, parse_name, push_frame, segment_name};
use super::mem::{BlobLoc, MemIndex};
use super::snapshot::write_snapshot;

/// Segments grow to about this size before a write compacts them into a snapshot.
const AUTO_COMPACT_BYTES: u64 = 64 << 20;

pub(super) struct State {
    pub(super) mem: MemIndex,
    pub(super) gen_: u64,
    pub(super) seg: Arc<File>,
    /// Bytes of `seg` applied to `mem` (always at a frame boundary).
    pub(super) offset: u64,
    /// Appends made by this process, for group commit.
    pub(super) appended: u64,
}

struct SyncState {
    synced: u64,
    syncing: bool,
}

pub struct SharedIndex {
    dir: PathBuf,
    durability: Durability,
    lock_fd: Mutex<LockFd>,
    state: Mutex<State>,
    sync: Mutex<SyncState>,
    synced_cv: Condvar,
    /// Sealed segments opened to read packed blobs from.
    retained: Mutex<std::collections::HashMap<u64, Arc<File>>>,
}

/// Reads packed bytes while the index state is already held (see [`SharedIndex::locked`]).
pub struct PackedReader<'a> {
    ix: &'a SharedIndex,
    st: &'a State,
}

impl PackedReader<'_> {
    /// The bytes of a packed blob, `None` when it is not packed.
    pub fn read(&self, d: &Digest) -> Result<Option<Vec<u8>>> {
        self.ix.read_packed_in(self.st, d)
    }

    /// Whether `d`'s bytes are packed in this state, in a segment that can still be opened.
    pub fn has(&self, d: &Digest) -> bool {
        matches!(self.ix.packed_file(self.st, d), Ok(Some(_)))
    }
}

impl SharedIndex {
    /// The index of a new store: makes `dir` and its first segment when `dir` holds no
    /// segment or snapshot yet, then opens it. The caller has checked that the store is new.
    pub fn create(dir: &Path, durability: Durability) -> Result<SharedIndex> {
        std::fs::create_dir_all(dir).ctx("create index directory", dir)?;
        {
            let mut fd = LockFd::open(dir)?;
            let _l = fd.acquire(dir)?;
            let any = std::fs::read_dir(dir)
                .ctx("list", dir)?
                .flatten()
                .any(|e| e.file_name().to_str().and_then(parse_name).is_some());
            if !any {
                open_segment(dir, 1, true, durability)?;
                if durability == Durability::Fsync {
                    fsync_dir(dir)?;
                }
            }
        }
        Self::open(dir, durability)
    }

    /// Opens an existing index; `Corrupt` when `dir` or a file it must hold is missing.
    pub fn open(dir: &Path, durability: Durability) -> Result<SharedIndex> {
        if !dir.is_dir() {
            return Err(Error::corrupt(format!(
                "{} is missing: the records of this store are gone (restore the directory from \
                 a backup; runstash never re-creates the index of an existing store)",
                dir.display()
            ))
            .with_path(dir));
        }
        let mut fd = LockFd::open(dir)?;
        let state = {
            let _l = fd.acquire(dir)?;
            load(dir, durability)?
        };
        Ok(SharedIndex {
            dir: dir.to_path_buf(),
            durability,
            lock_fd: Mutex::new(fd),
            state: Mutex::new(state),
            sync: Mutex::new(SyncState {
                synced: 0,
                syncing: false,
            }),
            synced_cv: Condvar::new(),
            retained: Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// Takes the index flock. The caller holds the state mutex (threads of one process share
    /// the descriptor, so the flock alone does not order them).
    fn lock(&self) -> Result<FileLock> {
        let mut fd = self.lock_fd.lock();
        if fd.pid != std::process::id() {
            // A forked child: the inherited descriptor's flock is the parent's.
            *fd = LockFd::open(&self.dir)?;
        }
        fd.acquire(&self.dir)
    }

    /// Runs `f` on the index after applying what other processes appended.
    pub fn read<R>(&self, f: impl FnOnce(&MemIndex) -> R) -> Result<R> {
        let mut st = self.state.lock();
        self.catch_up(&mut st, false)?;
        Ok(f(&st.mem))
    }

    /// [`read`](Self::read), with a [`PackedReader`] over the same state: what `f` sees of the
    /// records and of their packed bytes is one view, even while other processes delete and
    /// compact (without the index lock, a segment that view names may still go: its reads
    /// then fail with `NotFound`).
    pub fn read_with<R>(&self, f: impl FnOnce(&MemIndex, &PackedReader<'_>) -> R) -> Result<R> {
        let mut st = self.state.lock();
        self.catch_up(&mut st, false)?;
        let reader = PackedReader { ix: self, st: &st };
        Ok(f(&st.mem, &reader))
    }

    /// Runs `f` on the newest state while holding the index lock, so that no process can
    /// append meanwhile: what `f` sees stays the whole truth until it returns. Appends nothing
    /// and syncs nothing. Garbage collection deletes blobs inside it, re-checking liveness.
    ///
    /// `f` reads packed bytes through the [`PackedReader`] it is given (the state is held, so
    /// [`read_packed`](Self::read_packed) would wait on itself). Refuses (`Corrupt`) when the
    /// index files were removed or replaced under this process ([`check_intact`](Self::check_intact)).
    pub fn locked<R>(
        &self,
        f: impl FnOnce(&MemIndex, &PackedReader<'_>) -> Result<R>,
    ) -> Result<R> {
        let mut st = self.state.lock();
        let _l = self.lock()?;
        self.catch_up(&mut st, true)?;
        self.check_current(&st)?;
        let reader = PackedReader { ix: self, st: &st };
        f(&st.mem, &reader)
    }

    /// `Corrupt` unless the current log segment at its name is the file this process appends
    /// to: a deleted or replaced index must not be trusted to say what is live.
    ///
    /// Under the lock: without it another process may compact meanwhile, and the segment this
    /// process just caught up to would be gone for a good reason.
    pub fn check_intact(&self) -> Result<()> {
        let mut st = self.state.lock();
        let _l = self.lock()?;
        self.catch_up(&mut st, true)?;
        self.check_current(&st)
    }

    fn check_current(&self, st: &State) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let path = self.dir.join(segment_name(st.gen_));
        let on_disk = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::corrupt(format!(
                    "{} is missing: the index's current log segment was removed while this \
                     store was open; refusing to delete anything (reopen the store to see what \
                     is wrong)",
                    path.display()
                ))
                .with_path(&path));
            }
            Err(e) => return Err(Error::io("stat", &path, e)),
        };
        let open = st.seg.metadata().ctx("stat", &path)?;
        if (open.dev(), open.ino()) != (on_disk.dev(), on_disk.ino()) {
            return Err(Error::corrupt(format!(
                "{} was replaced while this store was open; refusing to delete anything \
                 (reopen the store to see what is wrong)",
                path.display()
            ))
            .with_path(&path));
        }
        Ok(())
    }

    /// Appends `ops` (checked first against the newest state) and applies them.
    ///
    /// `check` runs under the lock after catching up; an error from it appends nothing.
    pub fn append(&self, ops: &[Op], check: impl FnOnce(&MemIndex) -> Result<()>) -> Result<()> {
        self.append_packed(None, ops, check)
    }

    /// Like [`append`](Self::append), with a small blob's bytes packed into the log just before
    /// the records that name it, in the same write: one append, and in durable mode one shared
    /// `fdatasync`, stores the bytes and their records together. Bytes already packed are not
    /// written again.
    pub fn append_packed(
        &self,
        blob: Option<(&Digest, &[u8])>,
        ops: &[Op],
        check: impl FnOnce(&MemIndex) -> Result<()>,
    ) -> Result<()> {
        let mut buf = Vec::with_capacity(ops.len() * 160 + blob.map_or(0, |b| b.1.len() + 48));
        let mut e = Enc::default();
        // (digest, offset of the bytes in `buf`, their length, end of the blob frame in `buf`)
        let mut packed = None;
        if let Some((d, data)) = blob {
            let data_off = encode_blob(d, data, &mut e);
            push_frame(&mut buf, &e.0);
            packed = Some((d, FRAME_OVERHEAD + data_off, data.len() as u64, buf.len()));
        }
        for op in ops {
            e.0.clear();
            encode_op(op, &mut e);
            push_frame(&mut buf, &e.0);
        }
        let my_seq;
        let big;
        {
            let mut st = self.state.lock();
            let _l = self.lock()?;
            self.catch_up(&mut st, true)?;
            check(&st.mem)?;
            let mut out = &buf[..];
            let mut loc = None;
            if let Some((d, data_at, len, frame_end)) = packed {
                // Dedup only against the current segment: it cannot be deleted, while an older
                // copy's segment may have been (when no live record named the bytes then).
                // And only when that copy reads back whole and equal: a damaged frame is
                // never what a new write is acknowledged onto (a fresh copy replaces it).
                let intact = |l: BlobLoc| {
                    l.gen_ == st.gen_
                        && self
                            .read_at_loc(d, &st.seg, l)
                            .is_ok_and(|have| have == buf[data_at..data_at + len as usize])
                };
                if st.mem.packed(d).is_some_and(intact) {
                    out = &buf[frame_end..];
                } else {
                    let off = st.offset + data_at as u64;
                    loc = Some((
                        d,
                        BlobLoc {
                            gen_: st.gen_,
                            off,
                            len,
                        },
                    ));
                }
            }
            let path = self.dir.join(segment_name(st.gen_));
            st.seg
                .write_all_at(out, st.offset)
                .ctx("append to", &path)?;
            st.offset += out.len() as u64;
            if let Some((d, l)) = loc {
                st.mem.add_packed(d, l);
            }
            for op in ops {
                apply(&mut st.mem, op);
            }
            st.appended += 1;
            my_seq = st.appended;
            big = st.offset > AUTO_COMPACT_BYTES;
        }
        if self.durability == Durability::Fsync {
            self.sync_until(my_seq)?;
        }
        if big {
            self.compact()?;
        }
        Ok(())
    }

    /// The bytes of a blob packed into the log, or `None` when it was not packed.
    pub fn read_packed(&self, d: &Digest) -> Result<Option<Vec<u8>>> {
        let found = {
            let mut st = self.state.lock();
            self.catch_up(&mut st, false)?;
            self.packed_file(&st, d)?
        };
        match found {
            None => Ok(None),
            Some((file, loc)) => self.read_at_loc(d, &file, loc).map(Some),
        }
    }

    fn read_packed_in(&self, st: &State, d: &Digest) -> Result<Option<Vec<u8>>> {
        match self.packed_file(st, d)? {
            None => Ok(None),
            Some((file, loc)) => self.read_at_loc(d, &file, loc).map(Some),
        }
    }

    /// Where `d`'s packed bytes are: the segment file and the location in it.
    fn packed_file(&self, st: &State, d: &Digest) -> Result<Option<(Arc<File>, BlobLoc)>> {
        let Some(loc) = st.mem.packed(d) else {
            return Ok(None);
        };
        let file = if loc.gen_ == st.gen_ {
            st.seg.clone()
        } else {
            self.retained_segment(loc.gen_)?
        };
        Ok(Some((file, loc)))
    }

    /// The packed bytes at `loc`, read with their whole frame: `Corrupt` unless the frame's
    /// checksum holds and it is the blob frame of `d` with that many bytes (so damage in the
    /// log, or a location that points elsewhere, is never served as `d`'s bytes).
    fn read_at_loc(&self, d: &Digest, file: &File, loc: BlobLoc) -> Result<Vec<u8>> {
        let path = self.dir.join(segment_name(loc.gen_));
        let bad = |why: &str| {
            Error::corrupt(format!(
                "the packed bytes of blob {d} in {} at byte {} are damaged ({why}); write the \
                 same bytes again to store a fresh copy",
                path.display(),
                loc.off
            ))
            .with_path(&path)
        };
        let len = usize::try_from(loc.len).map_err(|_| bad("impossible size"))?;
        let prefix = blob_prefix(d, loc.len);
        let head = FRAME_OVERHEAD + prefix.len();
        let start = loc
            .off
            .checked_sub(head as u64)
            .ok_or_else(|| bad("no frame before them"))?;
        let mut frame = vec![0u8; head + len];
        match file.read_exact_at(&mut frame, start) {
            Ok(()) => {}
            // The segment ends before the frame does: it was truncated.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(bad("the segment ends before them"));
            }
            Err(e) => return Err(Error::io("read packed blob from", &path, e)),
        }
        let payload = &frame[FRAME_OVERHEAD..];
        let want_len = (prefix.len() + len) as u32;
        if frame[0..4] != want_len.to_le_bytes() || !payload.starts_with(&prefix) {
            return Err(bad("not the frame of this blob"));
        }
        if frame[4..8] != crc32c::crc32c(payload).to_le_bytes() {
            return Err(bad("frame checksum fails"));
        }
        frame.drain(..head);
        Ok(frame)
    }

    /// Whether `d`'s bytes are packed in the log.
    pub fn is_packed(&self, d: &Digest) -> Result<bool> {
        self.read(|m| m.packed(d).is_some())
    }

    /// An older (sealed) segment that still holds packed bytes, opened read-only once.
    fn retained_segment(&self, gen_: u64) -> Result<Arc<File>> {
        let mut open = self.retained.lock();
        if let Some(f) = open.get(&gen_) {
            return Ok(f.clone());
        }
        let path = self.dir.join(segment_name(gen_));
        let f = Arc::new(File::open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::not_found(format!(
                    "{} is gone (a compaction removed it): no packed bytes are read from it",
                    path.display()
                ))
                .with_path(&path)
            } else {
                Error::io("open", &path, e)
            }
        })?);
        if open.len() >= 64 {
            open.clear();
        }
        open.insert(gen_, f.clone());
        Ok(f)
    }

    /// Group commit: waits until a `fdatasync` that started after append `seq` has finished,
    /// running it if no other thread is.
    fn sync_until(&self, seq: u64) -> Result<()> {
        let mut s = self.sync.lock();
        loop {
            if s.synced >= seq {
                return Ok(());
            }
            if s.syncing {
                self.synced_cv.wait(&mut s);
                continue;
            }
            s.syncing = true;
            drop(s);
            let (target, seg, gen_) = {
                let st = self.state.lock();
                (st.appended, st.seg.clone(), st.gen_)
            };
            let r = rustix::fs::fdatasync(&*seg)
                .map_err(|e| Error::io("fdatasync", &self.dir.join(segment_name(gen_)), e.into()));
            s = self.sync.lock();
            s.syncing = false;
            if r.is_ok() {
                s.synced = s.synced.max(target);
            }
            self.synced_cv.notify_all();
            r?;
        }
    }

    /// Writes a snapshot of everything so far and starts a new segment; older files go.
    pub fn compact(&self) -> Result<()> {
        let mut st = self.state.lock();
        let _l = self.lock()?;
        self.catch_up(&mut st, true)?;
        self.check_current(&st)?;
        // Packed locations in segments that are gone (noted by an older runstash that did not
        // forget them) must not reach the snapshot.
        let gens = st.mem.packed_gens();
        let gone: std::collections::BTreeSet<u64> = gens
            .into_iter()
            .filter(|&g| g != st.gen_ && !self.dir.join(segment_name(g)).exists())
            .collect();
        if !gone.is_empty() {
            st.mem.retain_packed(|l| !gone.contains(&l.gen_));
        }
        let old = st.gen_;
        let next = old + 1;
        // 1. Seal: from now on every process continues in `next`.
        let mut e = Enc::default();
        encode_op(&Op::Seal { next_gen: next }, &mut e);
        let mut buf = Vec::new();
        push_frame(&mut buf, &e.0);
        let old_path = self.dir.join(segment_name(old));
        // `offset` stays before the seal until the next segment is open: if a later step
        // fails (a full disk), the next append meets the seal and follows it, creating the
        // successor, instead of writing after the seal where no replay would ever look.
        st.seg
            .write_all_at(&buf, st.offset)
            .ctx("append to", &old_path)?;
        if self.durability == Durability::Fsync {
            st.seg.sync_data().ctx("fsync", &old_path)?;
        }
        // 2. The next segment (a crash here leaves a sealed segment that the next writer or
        //    open completes by creating it).
        let (seg, offset) = open_segment(&self.dir, next, true, self.durability)?;
        st.seg = Arc::new(seg);
        st.gen_ = next;
        st.offset = offset;
        // 3. The snapshot of all that came before `next`.
        let keep = write_snapshot(&self.dir, next, &st.mem, self.durability)?;
        st.mem.prune_packed();
        // 4. Older segments and snapshots are now redundant, except segments that hold packed
        //    bytes of live records: the snapshot points into them.
        for entry in std::fs::read_dir(&self.dir)
            .ctx("list", &self.dir)?
            .flatten()
        {
            let name = entry.file_name();
            if let Some((kind, g)) = name.to_str().and_then(parse_name)
                && g < next
                && !(kind == "log" && keep.contains(&g))
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// Applies frames appended since we last looked. Under the lock, a bad tail is a dead
    /// writer's torn append and is truncated; without it, it may be an append in progress, so
    /// it is left for later.
    fn catch_up(&self, st: &mut MutexGuard<'_, State>, locked: bool) -> Result<()> {
        loop {
            let path = self.dir.join(segment_name(st.gen_));
            let size = st.seg.metadata().ctx("stat", &path)?.len();
            if size < st.offset {
                // Frames this process applied (maybe appended and acknowledged) were cut away
                // by someone else: writing on would put frames past the end, where no replay
                // looks, and every later write would be lost. Refuse instead.
                return Err(Error::corrupt(format!(
                    "index log {} shrank from {} to {size} bytes while this store was open:                      records this handle knows were cut from it (damage mistaken for a torn                      tail, or the file was truncated); refusing to read or write through this                      handle; reopen the store and check it with verify",
                    path.display(),
                    st.offset
                ))
                .with_path(&path));
            }
            if size == st.offset {
                return Ok(());
            }
            let mut buf = vec![0u8; (size - st.offset) as usize];
            st.seg
                .read_exact_at(&mut buf, st.offset)
                .ctx("read", &path)?;
            let (base, gen_) = (st.offset, st.gen_);
            let (pos, sealed, bad) = replay(&mut st.mem, &buf, 0, base, gen_);
            st.offset += pos as u64;
            if let Some(next_gen) = sealed {
                // The compactor forgot here the packed bytes no live record names (and may
                // delete their segment): forget them too, from the same state.
                st.mem.prune_packed();
                match open_segment(&self.dir, next_gen, false, self.durability) {
                    Ok((seg, offset)) => {
                        st.seg = Arc::new(seg);
                        st.gen_ = next_gen;
                        st.offset = offset;
                        continue;
                    }
                    // The successor is gone (later compactions removed it while we lagged)
                    // or was never made (its compactor died right after sealing). Never
                    // re-create it here: that would resurrect a segment older than the newest
                    // snapshot, and appends to it would be lost. Reload instead; `load`
                    // creates the successor only in the second case.
                    Err(e) if e.kind() == crate::ErrorKind::NotFound => {
                        let appended = st.appended;
                        if locked {
                            **st = load(&self.dir, self.durability)?;
                        } else {
                            let _l = self.lock()?;
                            **st = load(&self.dir, self.durability)?;
                        }
                        st.appended = appended; // group commit counts this process's appends
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                }
            }
            if bad && locked {
                if damaged_mid_log(&buf, pos) {
                    return Err(damaged(&path, st.offset));
                }
                st.seg
                    .set_len(st.offset)
                    .ctx("truncate torn tail of", &path)?;
                if self.durability == Durability::Fsync {
                    st.seg.sync_data().ctx("fsync", &path)?;
                }
            }
            return Ok(());
        }
    }
}

#[cfg(test)]
#[path = "persist_tests.rs"]
mod tests;
