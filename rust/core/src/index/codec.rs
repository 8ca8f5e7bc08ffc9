//! Binary encoding of index operations (log frames) and of snapshot records.
//!
//! Little-endian, varint lengths, no padding. Log operations carry their strings inline so that
//! each frame stands alone; snapshot records refer to the snapshot's string table by index, so
//! reopening a large store does no hashing of strings.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::hash::{Digest, HashAlgo};

use super::record::{ArtifactId, OwnedRecord, OwnedValue, Record, Sym, Value};

/// One operation of the log.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Put(Box<OwnedRecord>),
    Pin {
        id: ArtifactId,
        pinned: bool,
    },
    Delete {
        id: ArtifactId,
    },
    /// Written last in a segment by compaction: readers continue in segment `next_gen`.
    Seal {
        next_gen: u64,
    },
    /// A small blob's bytes, packed into the log (written by [`encode_blob`] just before the
    /// records that name it, in the same append). Decoding does not copy the bytes: `data_off`
    /// is where they start in the frame's payload.
    Blob {
        digest: Digest,
        data_off: usize,
        len: u64,
    },
}

pub const TAG_HEADER: u8 = 0;
const TAG_PUT: u8 = 1;
const TAG_PIN: u8 = 2;
const TAG_DELETE: u8 = 3;
const TAG_SEAL: u8 = 4;
const TAG_BLOB: u8 = 5;

#[derive(Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    pub fn i64(&mut self, v: i64) {
        self.varint(((v << 1) ^ (v >> 63)) as u64);
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u128(&mut self, v: u128) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn opt_str(&mut self, s: &Option<Arc<str>>) {
        match s {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }
    fn opt_sym(&mut self, s: Option<Sym>) {
        self.varint(s.map_or(0, |s| u64::from(s) + 1));
    }
    fn digest(&mut self, d: &Digest) {
        self.u8(match d.algo() {
            HashAlgo::Blake3 => 0,
            HashAlgo::Sha256 => 1,
        });
        self.0.extend_from_slice(d.bytes());
    }
}

pub struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn short() -> Error {
    Error::corrupt("index record is truncated")
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Dec { buf, pos: 0 }
    }
    pub fn done(&self) -> bool {
        self.pos == self.buf.len()
    }
    /// The next `n` bytes as they are.
    pub fn raw(&mut self, n: usize) -> Result<&'a [u8]> {
        self.take(n)
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or_else(short)?;
        let s = self.buf.get(self.pos..end).ok_or_else(short)?;
        self.pos = end;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn varint(&mut self) -> Result<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Error::corrupt("index varint is too long"))
    }
    pub fn i64(&mut self) -> Result<i64> {
        let v = self.varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().map_err(|_| short())?,
        ))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().map_err(|_| short())?,
        ))
    }
    pub fn u128(&mut self) -> Result<u128> {
        Ok(u128::from_le_bytes(
            self.take(16)?.try_into().map_err(|_| short())?,
        ))
    }
    pub fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_le_bytes(
            self.take(8)?.try_into().map_err(|_| short())?,
        ))
    }
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = usize::try_from(self.varint()?).map_err(|_| short())?;
        self.take(n)
    }
    pub fn str(&mut self) -> Result<&'a str> {
        std::str::from_utf8(self.bytes()?).map_err(|_| Error::corrupt("index string is not UTF-8"))
    }
    fn arc(&mut self) -> Result<Arc<str>> {
        Ok(Arc::from(self.str()?))
    }
    fn opt_str(&mut self) -> Result<Option<Arc<str>>> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.arc()?)),
            t => Err(Error::corrupt(format!("bad option tag {t}"))),
        }
    }
    fn sym(&mut self, nsyms: usize) -> Result<Sym> {
        let v = self.varint()?;
        if v >= nsyms as u64 {
            return Err(Error::corrupt("snapshot names a string it does not hold"));
        }
        Ok(v as Sym)
    }
    fn opt_sym(&mut self, nsyms: usize) -> Result<Option<Sym>> {
        match self.varint()? {
            0 => Ok(None),
            v if v <= nsyms as u64 => Ok(Some((v - 1) as Sym)),
            _ => Err(Error::corrupt("snapshot names a string it does not hold")),
        }
    }
    fn digest(&mut self) -> Result<Digest> {
        let algo = match self.u8()? {
            0 => HashAlgo::Blake3,
            1 => HashAlgo::Sha256,
            t => return Err(Error::corrupt(format!("unknown hash algorithm tag {t}"))),
        };
        let bytes: [u8; 32] = self.take(32)?.try_into().map_err(|_| short())?;
        Ok(Digest::new(algo, bytes))
    }
}

fn finite(v: f64) -> Result<f64> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(Error::corrupt("non-finite metric in index"))
    }
}

pub fn encode_op(op: &Op, e: &mut Enc) {
    match op {
        Op::Put(r) => {
            e.u8(TAG_PUT);
            e.u128(r.id.0);
            e.str(&r.kind);
            e.digest(&r.digest);
            e.varint(r.size);
            e.opt_str(&r.uri);
            e.opt_str(&r.mime);
            e.i64(r.created_us);
            for s in [&r.run_id, &r.graph_id, &r.node_id, &r.project_id] {
                e.opt_str(s);
            }
            e.varint(r.labels.len() as u64);
            for (k, v) in &r.labels {
                e.str(k);
                match v {
                    OwnedValue::Str(s) => {
                        e.u8(0);
                        e.str(s);
                    }
                    OwnedValue::Int(i) => {
                        e.u8(1);
                        e.i64(*i);
                    }
                    OwnedValue::Float(f) => {
                        e.u8(2);
                        e.f64(*f);
                    }
                    OwnedValue::Bool(b) => {
                        e.u8(3);
                        e.u8(u8::from(*b));
                    }
                }
            }
            e.varint(r.metrics.len() as u64);
            for (k, v) in &r.metrics {
                e.str(k);
                e.f64(*v);
            }
            e.u8(u8::from(r.pinned));
        }
        Op::Pin { id, pinned } => {
            e.u8(TAG_PIN);
            e.u128(id.0);
            e.u8(u8::from(*pinned));
        }
        Op::Delete { id } => {
            e.u8(TAG_DELETE);
            e.u128(id.0);
        }
        Op::Seal { next_gen } => {
            e.u8(TAG_SEAL);
            e.u64(*next_gen);
        }
        // The decoded form holds no bytes: packed blobs are written with `encode_blob`, and
        // this writes nothing for them.
        Op::Blob { .. } => {}
    }
}

/// A packed blob's frame payload: tag, digest, length, then the bytes themselves. Returns the
/// offset of the bytes within the payload.
/// What precedes a packed blob's bytes in its frame's payload (see [`encode_blob`]).
pub fn blob_prefix(digest: &Digest, len: u64) -> Vec<u8> {
    let mut e = Enc::default();
    e.u8(TAG_BLOB);
    e.digest(digest);
    e.varint(len);
    e.0
}

pub fn encode_blob(digest: &Digest, data: &[u8], e: &mut Enc) -> usize {
    e.u8(TAG_BLOB);
    e.digest(digest);
    e.varint(data.len() as u64);
    let off = e.0.len();
    e.0.extend_from_slice(data);
    off
}

pub fn decode_op(buf: &[u8]) -> Result<Op> {
    let mut d = Dec::new(buf);
    let op = match d.u8()? {
        TAG_PUT => {
            let id = ArtifactId(d.u128()?);
            let kind = d.arc()?;
            let digest = d.digest()?;
            let size = d.varint()?;
            let uri = d.opt_str()?;
            let mime = d.opt_str()?;
            let created_us = d.i64()?;
            let run_id = d.opt_str()?;
            let graph_id = d.opt_str()?;
            let node_id = d.opt_str()?;
            let project_id = d.opt_str()?;
            let n = d.varint()?;
            let mut labels = Vec::with_capacity(n.min(64) as usize);
            for _ in 0..n {
                let k = d.arc()?;
                let v = match d.u8()? {
                    0 => OwnedValue::Str(d.arc()?),
                    1 => OwnedValue::Int(d.i64()?),
                    2 => OwnedValue::Float(d.f64()?),
                    3 => OwnedValue::Bool(d.u8()? != 0),
                    t => return Err(Error::corrupt(format!("unknown label type {t}"))),
                };
                labels.push((k, v));
            }
            let n = d.varint()?;
            let mut metrics = Vec::with_capacity(n.min(64) as usize);
            for _ in 0..n {
                let k = d.arc()?;
                metrics.push((k, finite(d.f64()?)?));
            }
            let pinned = d.u8()? != 0;
            Op::Put(Box::new(OwnedRecord {
                id,
                kind,
                digest,
                size,
                uri,
                mime,
                created_us,
                run_id,
                graph_id,
                node_id,
                project_id,
                labels,
                metrics,
                pinned,
            }))
        }
        TAG_PIN => Op::Pin {
            id: ArtifactId(d.u128()?),
            pinned: d.u8()? != 0,
        },
        TAG_DELETE => Op::Delete {
            id: ArtifactId(d.u128()?),
        },
        TAG_SEAL => Op::Seal { next_gen: d.u64()? },
        TAG_BLOB => {
            let digest = d.digest()?;
            let len = d.varint()?;
            let data_off = d.pos;
            let n = usize::try_from(len).map_err(|_| short())?;
            d.take(n)?;
            Op::Blob {
                digest,
                data_off,
                len,
            }
        }
        t => return Err(Error::corrupt(format!("unknown index operation {t}"))),
    };
    if !d.done() {
        return Err(Error::corrupt("index operation has trailing bytes"));
    }
    Ok(op)
}

/// Snapshot form of a record: strings by their index in the snapshot's string table.
pub fn encode_record(r: &Record, e: &mut Enc) {
    e.u128(r.id.0);
    e.varint(u64::from(r.kind));
    e.digest(&r.digest);
    e.varint(r.size);
    e.opt_str(&r.uri);
    e.opt_sym(r.mime.get());
    e.i64(r.created_us);
    for s in [r.run_id, r.graph_id, r.node_id, r.project_id] {
        e.opt_sym(s.get());
    }
    e.varint(r.labels.len() as u64);
    for &(k, v) in r.labels.iter() {
        e.varint(u64::from(k));
        match v {
            Value::Str(s) => {
                e.u8(0);
                e.varint(u64::from(s));
            }
            Value::Int(i) => {
                e.u8(1);
                e.i64(i);
            }
            Value::Float(f) => {
                e.u8(2);
                e.f64(f);
            }
            Value::Bool(b) => {
                e.u8(3);
                e.u8(u8::from(b));
            }
        }
    }
    e.varint(r.metrics.len() as u64);
    for &(k, v) in r.metrics.iter() {
        e.varint(u64::from(k));
        e.f64(v);
    }
    e.u8(u8::from(r.pinned));
}

pub fn decode_record(d: &mut Dec<'_>, nsyms: usize) -> Result<Record> {
    let id = ArtifactId(d.u128()?);
    let kind = d.sym(nsyms)?;
    let digest = d.digest()?;
    let size = d.varint()?;
    let uri = d.opt_str()?;
    let mime = d.opt_sym(nsyms)?.into();
    let created_us = d.i64()?;
    let run_id = d.opt_sym(nsyms)?.into();
    let graph_id = d.opt_sym(nsyms)?.into();
    let node_id = d.opt_sym(nsyms)?.into();
    let project_id = d.opt_sym(nsyms)?.into();
    let n = d.varint()?;
    let mut labels = Vec::with_capacity(n.min(64) as usize);
    for _ in 0..n {
        let k = d.sym(nsyms)?;
        let v = match d.u8()? {
            0 => Value::Str(d.sym(nsyms)?),
            1 => Value::Int(d.i64()?),
            2 => Value::Float(d.f64()?),
            3 => Value::Bool(d.u8()? != 0),
            t => return Err(Error::corrupt(format!("unknown label type {t}"))),
        };
        labels.push((k, v));
    }
    let n = d.varint()?;
    let mut metrics = Vec::with_capacity(n.min(64) as usize);
    for _ in 0..n {
        let k = d.sym(nsyms)?;
        metrics.push((k, finite(d.f64()?)?));
    }
    let pinned = d.u8()? != 0;
    Ok(Record {
        id,
        kind,
        digest,
        size,
        uri,
        mime,
        created_us,
        run_id,
        graph_id,
        node_id,
        project_id,
        labels: labels.into_boxed_slice(),
        metrics: metrics.into_boxed_slice(),
        pinned,
    })
}
