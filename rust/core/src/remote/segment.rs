//! The bytes of remote index segments and snapshots, and the last-writer-wins ledger that
//! turns segments from many writers, applied in any order, into one index.
//!
//! A segment is an immutable object: a header frame, then the checksummed frames of a local
//! log (records, pins, deletes, and packed blob bytes just before the records that name them).
//! Every operation has a key `(hlc, writer, index)`: the segment's hybrid logical clock, the
//! writer that made it, its position in the segment. Keys are unique and totally ordered.
//!
//! The conflict rule: for each artifact, its pin, unpin and delete operations are ordered by
//! key and the greatest wins, wherever and in whatever order they are applied. A delete that
//! wins hides the record; a later pin (greater key) brings it back pinned. A writer's clock is
//! never behind anything it has read, so an operation made after seeing another one always
//! has the greater key and wins: last-writer-wins on a hybrid logical clock. Records
//! themselves never conflict (ids are unique), so a record and an operation on it may arrive
//! in either order.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::hash::Digest;
use crate::index::codec::{Dec, Enc, decode_op, encode_blob, encode_op};
use crate::index::log::{FRAME_OVERHEAD, Frame, next_frame, push_frame};
use crate::index::{ArtifactId, MemIndex, Op, OwnedRecord};

const SEGMENT_MAGIC: &[u8; 8] = b"RSRSEG01";
const SNAPSHOT_MAGIC: &[u8; 8] = b"RSRSNP01";

/// The order of an operation among all writers' operations.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub hlc: u64,
    pub writer: Arc<str>,
    pub idx: u32,
}

/// A segment being filled by one writer: frames after the header, and what they hold.
#[derive(Default)]
pub struct SegmentBuf {
    pub frames: Vec<u8>,
    pub ops: Vec<Op>,
    /// The clock value of each operation (taken when the operation was made).
    pub hlcs: Vec<u64>,
    /// Packed blobs: digest, offset of the bytes in `frames`, length.
    pub packed: Vec<(Digest, usize, u64)>,
}

impl SegmentBuf {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.packed.is_empty()
    }

    pub fn len_bytes(&self) -> usize {
        self.frames.len()
    }

    /// Adds a small blob's bytes (unless this segment already has them).
    pub fn push_blob(&mut self, d: &Digest, data: &[u8]) {
        if self.packed.iter().any(|(p, ..)| p == d) {
            return;
        }
        let mut e = Enc::default();
        let data_off = encode_blob(d, data, &mut e);
        let at = self.frames.len() + FRAME_OVERHEAD + data_off;
        push_frame(&mut self.frames, &e.0);
        self.packed.push((*d, at, data.len() as u64));
    }

    pub fn push_op(&mut self, op: Op, hlc: u64) {
        let mut e = Enc::default();
        encode_op(&op, &mut e);
        push_frame(&mut self.frames, &e.0);
        self.ops.push(op);
        self.hlcs.push(hlc);
    }

    /// The greatest clock value in the segment.
    pub fn max_hlc(&self) -> u64 {
        self.hlcs.iter().copied().max().unwrap_or(0)
    }

    /// The whole object: header frame, then the frames. Returns it and the offset of the
    /// first frame after the header (packed offsets in `packed` are relative to it).
    pub fn encode(&self, writer: &str, seq: u64) -> (Vec<u8>, usize) {
        let mut e = Enc::default();
        e.0.extend_from_slice(SEGMENT_MAGIC);
        e.u64(self.max_hlc());
        e.u64(seq);
        e.str(writer);
        e.varint(self.hlcs.len() as u64);
        for h in &self.hlcs {
            e.u64(*h);
        }
        let mut out = Vec::with_capacity(self.frames.len() + 64);
        push_frame(&mut out, &e.0);
        let base = out.len();
        out.extend_from_slice(&self.frames);
        (out, base)
    }
}

/// A decoded segment: its clock, writer and operations, and where its packed bytes are.
pub struct Segment {
    /// The greatest clock value of its operations.
    pub hlc: u64,
    pub seq: u64,
    pub writer: Arc<str>,
    pub ops: Vec<Op>,
    /// The clock value of each operation.
    pub hlcs: Vec<u64>,
    /// Packed blobs: digest, absolute offset in the segment's bytes, length.
    pub packed: Vec<(Digest, usize, u64)>,
}

/// Decodes a whole segment object. Any damage is an error: segments are written in one
/// request, so a segment that does not decode was corrupted, never torn.
pub fn decode_segment(buf: &[u8], name: &str) -> Result<Segment> {
    let bad = |what: &str| Error::corrupt(format!("index segment {name}: {what}"));
    let Frame::Ok(head, mut off) = next_frame(buf, 0) else {
        return Err(bad("no valid header"));
    };
    if head.len() < 8 || &head[..8] != SEGMENT_MAGIC {
        return Err(bad("not a runstash segment (or a newer format)"));
    }
    let mut d = Dec::new(&head[8..]);
    let hlc = d.u64()?;
    let seq = d.u64()?;
    let writer: Arc<str> = Arc::from(d.str()?);
    let n = d.varint()?;
    if n > (buf.len() / FRAME_OVERHEAD) as u64 {
        return Err(bad("more clock values than the segment can hold"));
    }
    let hlcs = (0..n).map(|_| d.u64()).collect::<Result<Vec<u64>>>()?;
    let mut ops = Vec::new();
    let mut packed = Vec::new();
    loop {
        match next_frame(buf, off) {
            Frame::End => break,
            Frame::Bad => return Err(bad(&format!("damaged at byte {off}"))),
            Frame::Ok(payload, next) => {
                let start = next - payload.len();
                match decode_op(payload)? {
                    Op::Blob {
                        digest,
                        data_off,
                        len,
                    } => packed.push((digest, start + data_off, len)),
                    Op::Seal { .. } => return Err(bad("unexpected seal frame")),
                    op => ops.push(op),
                }
                off = next;
            }
        }
    }
    if ops.len() != hlcs.len() {
        return Err(bad("operations and clock values do not match"));
    }
    Ok(Segment {
        hlc,
        seq,
        writer,
        ops,
        hlcs,
        packed,
    })
}

/// A snapshot object: many segments' bytes in one object, named in its header.
pub fn encode_snapshot(parts: &[(String, &[u8])]) -> Vec<u8> {
    let mut e = Enc::default();
    e.0.extend_from_slice(SNAPSHOT_MAGIC);
    e.varint(parts.len() as u64);
    for (name, bytes) in parts {
        e.str(name);
        e.varint(bytes.len() as u64);
    }
    let total: usize = parts.iter().map(|(_, b)| b.len()).sum();
    let mut out = Vec::with_capacity(total + e.0.len() + 16);
    push_frame(&mut out, &e.0);
    for (_, b) in parts {
        out.extend_from_slice(b);
    }
    out
}

/// The segments a snapshot holds: (name, byte range in `buf`).
pub fn decode_snapshot(buf: &[u8], name: &str) -> Result<Vec<(String, std::ops::Range<usize>)>> {
    let bad = |what: &str| Error::corrupt(format!("index snapshot {name}: {what}"));
    let Frame::Ok(head, mut off) = next_frame(buf, 0) else {
        return Err(bad("no valid header"));
    };
    if head.len() < 8 || &head[..8] != SNAPSHOT_MAGIC {
        return Err(bad("not a runstash snapshot (or a newer format)"));
    }
    let mut d = Dec::new(&head[8..]);
    let n = d.varint()?;
    let mut out = Vec::with_capacity(n.min(1 << 20) as usize);
    for _ in 0..n {
        let part = d.str()?.to_string();
        let len = usize::try_from(d.varint()?).map_err(|_| bad("part too large"))?;
        let end = off
            .checked_add(len)
            .filter(|&e| e <= buf.len())
            .ok_or_else(|| bad("truncated"))?;
        out.push((part, off..end));
        off = end;
    }
    if off != buf.len() {
        return Err(bad("trailing bytes"));
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ctl {
    Pin(bool),
    Delete,
}

/// The merged index: live records in a [`MemIndex`] (for queries), plus what the conflict
/// rule needs: the winning pin/delete operation of each artifact, and deleted records (a
/// later pin may bring one back).
#[derive(Default)]
pub struct Ledger {
    pub mem: MemIndex,
    ctl: HashMap<ArtifactId, (Key, Ctl)>,
    grave: HashMap<ArtifactId, OwnedRecord>,
}

impl Ledger {
    /// The blob of a record, live or deleted (a pin may bring a deleted one back).
    pub fn digest_of(&self, id: ArtifactId) -> Option<Digest> {
        match self.mem.get(id) {
            Some(r) => Some(r.digest),
            None => self.grave.get(&id).map(|r| r.digest),
        }
    }

    /// Applies one operation with its key. Idempotent, and the result does not depend on the
    /// order in which operations arrive.
    pub fn apply(&mut self, op: &Op, key: Key) {
        match op {
            Op::Put(r) => self.put(r),
            Op::Pin { id, pinned } => self.control(*id, key, Ctl::Pin(*pinned)),
            Op::Delete { id } => self.control(*id, key, Ctl::Delete),
            Op::Blob { .. } | Op::Seal { .. } => {}
        }
    }

    fn put(&mut self, r: &OwnedRecord) {
        if self.mem.contains(r.id) || self.grave.contains_key(&r.id) {
            return;
        }
        match self.ctl.get(&r.id) {
            Some((_, Ctl::Delete)) => {
                self.grave.insert(r.id, r.clone());
            }
            Some((_, Ctl::Pin(p))) if *p != r.pinned => {
                let mut r = r.clone();
                r.pinned = *p;
                self.mem.insert(&r);
            }
            _ => {
                self.mem.insert(r);
            }
        }
    }

    fn control(&mut self, id: ArtifactId, key: Key, c: Ctl) {
        if let Some((k, _)) = self.ctl.get(&id)
            && *k >= key
        {
            return;
        }
        self.ctl.insert(id, (key, c));
        match c {
            Ctl::Delete => {
                if let Some(r) = self.mem.get(id).map(|r| self.mem.resolve(r)) {
                    self.mem.delete(id);
                    self.grave.insert(id, r);
                }
            }
            Ctl::Pin(p) => {
                if self.mem.contains(id) {
                    self.mem.set_pinned(id, p);
                } else if let Some(mut r) = self.grave.remove(&id) {
                    r.pinned = p;
                    self.mem.insert(&r);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{HashAlgo, hash_bytes};
    use crate::index::RecordMeta;

    fn rec(n: u128) -> OwnedRecord {
        let meta = RecordMeta {
            kind: "k".into(),
            ..RecordMeta::default()
        };
        meta.to_record(ArtifactId(n), 0, hash_bytes(HashAlgo::Blake3, b"x"), 1)
    }

    fn key(hlc: u64, w: &str) -> Key {
        Key {
            hlc,
            writer: Arc::from(w),
            idx: 0,
        }
    }

    #[test]
    fn segment_round_trip_with_packed_bytes() {
        let mut b = SegmentBuf::default();
        let d = hash_bytes(HashAlgo::Blake3, b"small");
        b.push_blob(&d, b"small");
        b.push_blob(&d, b"small");
        b.push_op(Op::Put(Box::new(rec(7))), 98);
        b.push_op(
            Op::Pin {
                id: ArtifactId(7),
                pinned: true,
            },
            99,
        );
        let (bytes, _) = b.encode("w1", 3);
        let s = decode_segment(&bytes, "x").unwrap();
        assert_eq!((s.hlc, s.seq, &*s.writer), (99, 3, "w1"));
        assert_eq!(s.ops.len(), 2);
        assert_eq!(s.hlcs, [98, 99]);
        assert_eq!(
            s.packed.len(),
            1,
            "the same bytes are packed once per segment"
        );
        let (_, at, len) = s.packed[0];
        assert_eq!(&bytes[at..at + len as usize], b"small");
        let mut damaged = bytes.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(decode_segment(&damaged, "x").is_err());
        assert!(decode_segment(&bytes[..bytes.len() - 1], "x").is_err());

        let snap = encode_snapshot(&[("a".into(), &bytes), ("b".into(), b"")]);
        let parts = decode_snapshot(&snap, "s").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(&snap[parts[0].1.clone()], &bytes[..]);
        assert!(decode_snapshot(&snap[..snap.len() - 1], "s").is_err());
    }

    /// The conflict rule: the same operations applied in every order give the same index.
    #[test]
    fn last_writer_wins_in_any_order() {
        let id = ArtifactId(1);
        let ops = [
            (Op::Put(Box::new(rec(1))), key(1, "a")),
            (Op::Pin { id, pinned: true }, key(5, "b")),
            (Op::Delete { id }, key(5, "c")), // same clock: the writer id breaks the tie
            (Op::Pin { id, pinned: false }, key(3, "a")),
        ];
        let orders: [[usize; 4]; 6] = [
            [0, 1, 2, 3],
            [3, 2, 1, 0],
            [1, 0, 3, 2],
            [2, 3, 0, 1],
            [1, 2, 3, 0],
            [3, 0, 2, 1],
        ];
        for order in orders {
            let mut l = Ledger::default();
            for i in order {
                l.apply(&ops[i].0, ops[i].1.clone());
                l.apply(&ops[i].0, ops[i].1.clone()); // and twice: idempotent
            }
            assert!(!l.mem.contains(id), "{order:?}: the delete (5, c) wins");
        }
        // A pin after the delete brings the record back, pinned.
        let mut l = Ledger::default();
        for (op, k) in &ops {
            l.apply(op, k.clone());
        }
        l.apply(&Op::Pin { id, pinned: true }, key(6, "a"));
        assert!(l.mem.get(id).is_some_and(|r| r.pinned));
    }
}
