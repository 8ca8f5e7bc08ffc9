//! Snapshots: the whole live index in one file, so reopening need not replay every operation.
//!
//! `snap-<gen>` holds the state of every log segment before `<gen>`. Layout, all frames as in
//! the log: a header (magic, version, generation, record, string and packed-blob counts), one
//! frame with the string table, frames of packed-blob locations (version 2: where the bytes of
//! small blobs live in retained log segments), record frames of up to `CHUNK` records each (strings by table index), and an
//! end frame repeating the record count. A snapshot missing its end frame, or with any bad
//! frame, is corrupt. It is written to a temp file and renamed into place (atomic).

use std::path::Path;
use std::sync::Arc;

use crate::atomic::{AtomicFile, Durability};
use crate::error::{Error, IoContext, Result};

use super::codec::{Dec, Enc, decode_record, encode_record};
use super::log::{Frame, next_frame, push_frame, snapshot_name};
use super::mem::{BlobLoc, MemIndex};
use super::record::Interner;

pub const SNAPSHOT_VERSION: u32 = 2;
const SNAP_MAGIC: &[u8] = b"runstash-snapshot";
const CHUNK: usize = 4096;

/// Writes `snap-<gen_>`. Returns the log generations that hold packed bytes of live records:
/// those segments must outlive the snapshot.
pub fn write_snapshot(
    dir: &Path,
    gen_: u64,
    mem: &MemIndex,
    durability: Durability,
) -> Result<Vec<u64>> {
    let (out, gens) = encode_snapshot(gen_, mem);
    let mut f = AtomicFile::create_in(dir, durability, None, 0o644, "")?;
    f.write_all(&out)?;
    f.commit_replace(&dir.join(snapshot_name(gen_)))?;
    Ok(gens)
}

/// The bytes of `snap-<gen_>` for `mem`, and the log generations its packed blobs are in.
pub fn encode_snapshot(gen_: u64, mem: &MemIndex) -> (Vec<u8>, Vec<u64>) {
    let strings = mem.strings.strings();
    let packed = mem.live_packed();
    let mut out = Vec::with_capacity(64 + mem.len() * 96);
    let mut e = Enc::default();
    e.bytes(SNAP_MAGIC);
    e.u32(SNAPSHOT_VERSION);
    e.u64(gen_);
    e.u64(mem.len() as u64);
    e.u64(strings.len() as u64);
    e.u64(packed.len() as u64);
    push_frame(&mut out, &e.0);

    let mut e = Enc::default();
    for s in strings {
        e.str(s);
    }
    push_frame(&mut out, &e.0);

    let mut gens = Vec::new();
    for chunk in packed.chunks(CHUNK) {
        let mut e = Enc::default();
        for (d, loc) in chunk {
            e.0.extend_from_slice(d);
            e.u64(loc.gen_);
            e.u64(loc.off);
            e.u64(loc.len);
            if gens.last() != Some(&loc.gen_) {
                gens.push(loc.gen_);
            }
        }
        push_frame(&mut out, &e.0);
    }
    gens.dedup();

    let mut e = Enc::default();
    let mut in_chunk = 0usize;
    for r in mem.iter() {
        encode_record(r, &mut e);
        in_chunk += 1;
        if in_chunk == CHUNK {
            push_frame(&mut out, &e.0);
            e.0.clear();
            in_chunk = 0;
        }
    }
    if in_chunk > 0 {
        push_frame(&mut out, &e.0);
    }
    let mut e = Enc::default();
    e.bytes(b"end");
    e.u64(mem.len() as u64);
    push_frame(&mut out, &e.0);
    (out, gens)
}

pub fn load_snapshot(path: &Path) -> Result<(u64, MemIndex)> {
    let buf = std::fs::read(path).ctx("read snapshot", path)?;
    decode_snapshot(&buf, path)
}

/// The smallest encoding of a snapshot record (an id, a digest and one byte for each other
/// field): a bound on how many records a buffer can hold.
const MIN_RECORD_BYTES: usize = 61;
/// A packed-blob entry: digest, generation, offset, length.
const PACKED_ENTRY_BYTES: usize = 56;

/// Decodes the bytes of a snapshot file (`path` only names it in errors).
pub fn decode_snapshot(buf: &[u8], path: &Path) -> Result<(u64, MemIndex)> {
    let bad = |why: &str| Error::corrupt(format!("snapshot {} is corrupt: {why}", path.display()));
    let Frame::Ok(head, mut off) = next_frame(buf, 0) else {
        return Err(bad("no header"));
    };
    let mut d = Dec::new(head);
    if d.bytes()? != SNAP_MAGIC {
        return Err(bad("not a runstash snapshot"));
    }
    let version = d.u32()?;
    if version > SNAPSHOT_VERSION {
        return Err(Error::incompatible(format!(
            "snapshot {} uses format {version}, newer than this runstash understands ({SNAPSHOT_VERSION}); upgrade runstash",
            path.display()
        )));
    }
    let gen_ = d.u64()?;
    let nrec = d.u64()? as usize;
    let nstr = d.u64()? as usize;
    let npacked = if version >= 2 { d.u64()? as usize } else { 0 };

    let Frame::Ok(table, next) = next_frame(buf, off) else {
        return Err(bad("string table"));
    };
    off = next;
    let mut d = Dec::new(table);
    // The counts come from the file: reserve no more than its bytes can hold (a string takes
    // at least one byte), so a damaged count cannot ask for gigabytes.
    let mut strings: Vec<Arc<str>> = Vec::with_capacity(nstr.min(table.len()));
    for _ in 0..nstr {
        strings.push(Arc::from(d.str()?));
    }
    let mut packed = Vec::with_capacity(npacked.min(buf.len() / PACKED_ENTRY_BYTES));
    while packed.len() < npacked {
        let Frame::Ok(payload, next) = next_frame(buf, off) else {
            return Err(bad("truncated or damaged packed-blob frame"));
        };
        off = next;
        let mut d = Dec::new(payload);
        while !d.done() && packed.len() < npacked {
            let key: [u8; 32] = d.raw(32)?.try_into().map_err(|_| bad("digest"))?;
            let loc = BlobLoc {
                gen_: d.u64()?,
                off: d.u64()?,
                len: d.u64()?,
            };
            packed.push((key, loc));
        }
        if !d.done() {
            return Err(bad("packed-blob frame has trailing bytes"));
        }
    }
    let mut records = Vec::with_capacity(nrec.min(buf.len() / MIN_RECORD_BYTES));
    loop {
        let Frame::Ok(payload, next) = next_frame(buf, off) else {
            return Err(bad("truncated or damaged record frame"));
        };
        off = next;
        // The end frame is 12 bytes; a record chunk is never that short (an id alone is 16).
        if payload.len() == 12 && payload.starts_with(b"\x03end") {
            let count = u64::from_le_bytes(payload[4..12].try_into().map_err(|_| bad("end"))?);
            if count as usize != nrec || records.len() != nrec {
                return Err(bad("record count does not match"));
            }
            break;
        }
        let mut d = Dec::new(payload);
        while !d.done() {
            records.push(decode_record(&mut d, nstr)?);
        }
    }
    let interner = Interner::from_strings(strings);
    let mut mem = MemIndex::from_records(interner, records);
    for (key, loc) in packed {
        mem.add_packed_key(key, loc);
    }
    Ok((gen_, mem))
}
