//! `MemIndex`: the records in memory, their postings and one order per metric.
//!
//! Invariants:
//! - A record lives at a dense slot (`doc`, a u32); a deleted record's slot is `None` and the
//!   doc is in no posting and no metric order.
//! - `live` holds every live doc; each posting (kind, scope id, label key=value, pinned) holds
//!   exactly the live docs that have it; `metrics[m]` holds `(value, id) -> doc` for every live
//!   record with metric `m`.
//! - Ranking is by value (descending for "max", ascending for "min"); ties go to the older
//!   record, i.e. the smaller id.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};

use roaring::RoaringBitmap;

use crate::hash::Digest;

pub use super::query::{Filter, Mode};
use super::record::{
    ArtifactId, Interner, OptSym, OwnedRecord, OwnedValue, Record, Sym, Value, ValueKey,
    normalize_f64,
};

/// An f64 with a total order, for metric trees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrdF64(pub f64);
impl Eq for OrdF64 {}
impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrdF64 {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A fast hasher for the index's own small keys (ids, symbols, posting keys): none of them
/// come from an adversary who could aim collisions at it, and SipHash was a third of the time
/// of reopening a million records.
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        // A final avalanche so that the low bits (bucket index) depend on every input bit.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(23) ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_u32(&mut self, x: u32) {
        self.write_u64(u64::from(x));
    }
    fn write_u8(&mut self, x: u8) {
        self.write_u64(u64::from(x));
    }
    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64);
    }
}

type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FastHasher>>;

type IdKey = (u64, u64);

fn id_key(id: ArtifactId) -> IdKey {
    ((id.0 >> 64) as u64, id.0 as u64)
}

/// A metric order's entry: the value, then the doc. Equal values are ordered by doc, not id
/// (16 bytes an entry instead of 32); rankings sort each run of equal values by id.
pub(super) type MetricKey = (OrdF64, u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum PostKey {
    Kind(Sym),
    Run(Sym),
    Graph(Sym),
    Node(Sym),
    Project(Sym),
    Label(Sym, ValueKey),
    Pinned,
}

pub(super) static EMPTY: std::sync::LazyLock<RoaringBitmap> =
    std::sync::LazyLock::new(RoaringBitmap::new);

#[derive(Debug, Default, Clone)]
pub struct MemIndex {
    pub strings: Interner,
    pub(super) records: Vec<Option<Record>>,
    /// id -> doc. Keyed by the id's two halves: 24-byte entries instead of 32 (u128 aligns
    /// to 16), which is most of a hash map's memory.
    pub(super) by_id: FastMap<IdKey, u32>,
    pub(super) live: RoaringBitmap,
    pub(super) postings: FastMap<PostKey, RoaringBitmap>,
    pub(super) metrics: FastMap<Sym, BTreeSet<MetricKey>>,
    /// Small blobs packed into the log: digest bytes -> where their bytes are. An entry stays
    /// until a snapshot leaves out digests no live record names.
    pub(super) packed: FastMap<[u8; 32], BlobLoc>,
}

/// Where a packed blob's bytes are: `len` bytes at offset `off` of log segment `gen_`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLoc {
    pub gen_: u64,
    pub off: u64,
    pub len: u64,
}

impl MemIndex {
    /// Where the packed bytes of `d` are, if they were packed into the log.
    pub fn packed(&self, d: &Digest) -> Option<BlobLoc> {
        self.packed.get(d.bytes()).copied()
    }

    /// Notes packed bytes. The newest location of a digest wins: compaction keeps the segment
    /// of the newest copy of every live digest, and an older copy's segment may be gone.
    pub fn add_packed(&mut self, d: &Digest, loc: BlobLoc) {
        self.add_packed_key(*d.bytes(), loc);
    }

    pub fn add_packed_key(&mut self, key: [u8; 32], loc: BlobLoc) {
        self.packed.insert(key, loc);
    }

    /// Forgets packed blobs that no live record names (their segment may be deleted next).
    pub fn prune_packed(&mut self) {
        self.packed = self.live_packed().into_iter().collect();
    }

    /// Forgets packed blobs whose location fails `keep` (their segment is gone).
    pub fn retain_packed(&mut self, mut keep: impl FnMut(&BlobLoc) -> bool) {
        self.packed.retain(|_, l| keep(l));
    }

    /// The log generations that packed bytes are noted in.
    pub fn packed_gens(&self) -> std::collections::BTreeSet<u64> {
        self.packed.values().map(|l| l.gen_).collect()
    }

    /// Whether some packed bytes are named by no live record (compaction may reclaim them).
    pub fn has_dead_packed(&self) -> bool {
        self.packed.len() > self.live_packed().len()
    }

    /// The packed blobs that live records name, for a snapshot.
    pub fn live_packed(&self) -> Vec<([u8; 32], BlobLoc)> {
        if self.packed.is_empty() {
            return Vec::new();
        }
        let mut seen: FastMap<[u8; 32], BlobLoc> = FastMap::default();
        for r in self.iter() {
            if let Some(loc) = self.packed.get(r.digest.bytes()) {
                seen.insert(*r.digest.bytes(), *loc);
            }
        }
        let mut v: Vec<_> = seen.into_iter().collect();
        v.sort_unstable_by_key(|(_, l)| (l.gen_, l.off));
        v
    }

    pub fn len(&self) -> usize {
        self.live.len() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    pub fn contains(&self, id: ArtifactId) -> bool {
        self.by_id.contains_key(&id_key(id))
    }

    /// Adds a record; a record whose id is already present is ignored (replaying a log twice
    /// must not duplicate). Returns whether it was added.
    pub fn insert(&mut self, r: &OwnedRecord) -> bool {
        if self.by_id.contains_key(&id_key(r.id)) {
            return false;
        }
        let s = &mut self.strings;
        let mut labels: Vec<(Sym, Value)> = r
            .labels
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    OwnedValue::Str(x) => Value::Str(s.intern(x)),
                    OwnedValue::Int(i) => Value::Int(*i),
                    OwnedValue::Float(f) => Value::Float(normalize_f64(*f)),
                    OwnedValue::Bool(b) => Value::Bool(*b),
                };
                (s.intern(k), v)
            })
            .collect();
        labels.sort_by_key(|&(k, _)| k);
        labels.dedup_by_key(|&mut (k, _)| k);
        let mut metrics: Vec<(Sym, f64)> = r
            .metrics
            .iter()
            .map(|(k, v)| (s.intern(k), normalize_f64(*v)))
            .collect();
        metrics.sort_by_key(|&(k, _)| k);
        metrics.dedup_by_key(|&mut (k, _)| k);
        let rec = Record {
            id: r.id,
            kind: s.intern(&r.kind),
            digest: r.digest,
            size: r.size,
            uri: r.uri.clone(),
            mime: r.mime.as_deref().map(|m| s.intern(m)).into(),
            created_us: r.created_us,
            run_id: r.run_id.as_deref().map(|x| s.intern(x)).into(),
            graph_id: r.graph_id.as_deref().map(|x| s.intern(x)).into(),
            node_id: r.node_id.as_deref().map(|x| s.intern(x)).into(),
            project_id: r.project_id.as_deref().map(|x| s.intern(x)).into(),
            labels: labels.into_boxed_slice(),
            metrics: metrics.into_boxed_slice(),
            pinned: r.pinned,
        };
        self.insert_interned(rec)
    }

    /// Builds an index from records whose symbols belong to `strings` (snapshot loading):
    /// postings are filled in doc order and metric trees bulk-built from sorted runs, which
    /// is several times faster than inserting one record at a time.
    pub fn from_records(strings: Interner, records: Vec<Record>) -> MemIndex {
        let mut by_id = FastMap::with_capacity_and_hasher(records.len(), Default::default());
        let mut post: FastMap<PostKey, Vec<u32>> = FastMap::default();
        let mut met: FastMap<Sym, Vec<MetricKey>> = FastMap::default();
        let mut kept = Vec::with_capacity(records.len());
        for rec in records {
            let doc = kept.len() as u32;
            if by_id.contains_key(&id_key(rec.id)) {
                continue;
            }
            by_id.insert(id_key(rec.id), doc);
            for key in post_keys(&rec) {
                post.entry(key).or_default().push(doc);
            }
            for &(m, v) in rec.metrics.iter() {
                met.entry(m).or_default().push((OrdF64(v), doc));
            }
            kept.push(Some(rec));
        }
        let n = kept.len() as u32;
        let postings = post
            .into_iter()
            .map(|(k, docs)| (k, RoaringBitmap::from_sorted_iter(docs).unwrap_or_default()))
            .collect();
        let metrics = met
            .into_iter()
            .map(|(m, mut v)| {
                v.sort_unstable();
                (m, v.into_iter().collect::<BTreeSet<_>>())
            })
            .collect();
        MemIndex {
            strings,
            records: kept,
            by_id,
            live: (0..n).collect(),
            postings,
            metrics,
            packed: FastMap::default(),
        }
    }

    /// Adds a record whose symbols already belong to `self.strings` (snapshot loading).
    pub fn insert_interned(&mut self, rec: Record) -> bool {
        if self.by_id.contains_key(&id_key(rec.id)) {
            return false;
        }
        let doc = self.records.len() as u32;
        self.by_id.insert(id_key(rec.id), doc);
        self.live.insert(doc);
        for key in post_keys(&rec) {
            self.postings.entry(key).or_default().insert(doc);
        }
        for &(m, v) in rec.metrics.iter() {
            self.metrics.entry(m).or_default().insert((OrdF64(v), doc));
        }
        self.records.push(Some(rec));
        true
    }

    pub fn set_pinned(&mut self, id: ArtifactId, pinned: bool) -> bool {
        let Some(&doc) = self.by_id.get(&id_key(id)) else {
            return false;
        };
        let Some(rec) = self.records[doc as usize].as_mut() else {
            return false;
        };
        rec.pinned = pinned;
        let p = self.postings.entry(PostKey::Pinned).or_default();
        if pinned {
            p.insert(doc);
        } else {
            p.remove(doc);
        }
        true
    }

    pub fn delete(&mut self, id: ArtifactId) -> bool {
        let Some(doc) = self.by_id.remove(&id_key(id)) else {
            return false;
        };
        let Some(rec) = self.records[doc as usize].take() else {
            return false;
        };
        self.live.remove(doc);
        for key in post_keys(&rec) {
            if let Some(b) = self.postings.get_mut(&key) {
                b.remove(doc);
                if b.is_empty() {
                    self.postings.remove(&key);
                }
            }
        }
        for &(m, v) in rec.metrics.iter() {
            if let Some(t) = self.metrics.get_mut(&m) {
                t.remove(&(OrdF64(v), doc));
                if t.is_empty() {
                    self.metrics.remove(&m);
                }
            }
        }
        true
    }

    pub fn get(&self, id: ArtifactId) -> Option<&Record> {
        self.by_id
            .get(&id_key(id))
            .and_then(|&d| self.records[d as usize].as_ref())
    }

    pub(super) fn rec(&self, doc: u32) -> &Record {
        // Every doc in `live`, a posting or a metric order has a record (module invariant).
        self.records[doc as usize]
            .as_ref()
            .expect("index invariant: live doc has a record")
    }

    /// Live records in slot order (for snapshots and export).
    pub fn iter(&self) -> impl Iterator<Item = &Record> {
        self.records.iter().flatten()
    }

    /// Metric names in use, sorted by name.
    pub fn metric_names(&self) -> Vec<Sym> {
        let mut v: Vec<Sym> = self.metrics.keys().copied().collect();
        v.sort_by(|a, b| self.strings.get(*a).cmp(self.strings.get(*b)));
        v
    }

    pub fn resolve(&self, r: &Record) -> OwnedRecord {
        let s = &self.strings;
        let opt = |x: OptSym| x.get().map(|x| s.get(x).clone());
        OwnedRecord {
            id: r.id,
            kind: s.get(r.kind).clone(),
            digest: r.digest,
            size: r.size,
            uri: r.uri.clone(),
            mime: opt(r.mime),
            created_us: r.created_us,
            run_id: opt(r.run_id),
            graph_id: opt(r.graph_id),
            node_id: opt(r.node_id),
            project_id: opt(r.project_id),
            labels: r
                .labels
                .iter()
                .map(|&(k, v)| {
                    let v = match v {
                        Value::Str(x) => OwnedValue::Str(s.get(x).clone()),
                        Value::Int(i) => OwnedValue::Int(i),
                        Value::Float(f) => OwnedValue::Float(f),
                        Value::Bool(b) => OwnedValue::Bool(b),
                    };
                    (s.get(k).clone(), v)
                })
                .collect(),
            metrics: r
                .metrics
                .iter()
                .map(|&(k, v)| (s.get(k).clone(), v))
                .collect(),
            pinned: r.pinned,
        }
    }
}

fn post_keys(r: &Record) -> impl Iterator<Item = PostKey> + '_ {
    let scopes = [
        Some(PostKey::Kind(r.kind)),
        r.run_id.get().map(PostKey::Run),
        r.graph_id.get().map(PostKey::Graph),
        r.node_id.get().map(PostKey::Node),
        r.project_id.get().map(PostKey::Project),
        r.pinned.then_some(PostKey::Pinned),
    ];
    scopes
        .into_iter()
        .flatten()
        .chain(r.labels.iter().map(|&(k, v)| PostKey::Label(k, v.key())))
}

#[cfg(test)]
#[path = "mem_tests.rs"]
mod tests;
