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

use crate::error::{Error, Result};
use crate::hash::Digest;

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
type MetricKey = (OrdF64, u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PostKey {
    Kind(Sym),
    Run(Sym),
    Graph(Sym),
    Node(Sym),
    Project(Sym),
    Label(Sym, ValueKey),
    Pinned,
}

/// Ranking direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Max,
    Min,
}

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Mode> {
        match s {
            "max" => Ok(Mode::Max),
            "min" => Ok(Mode::Min),
            _ => Err(Error::invalid(format!(
                "mode must be \"max\" or \"min\", got {s:?}"
            ))),
        }
    }
}

/// What a query filters on; `None` means "any". Labels match exactly and by type.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub kind: Option<String>,
    pub run_id: Option<String>,
    pub graph_id: Option<String>,
    pub node_id: Option<String>,
    pub project_id: Option<String>,
    pub labels: Vec<(String, OwnedValue)>,
    pub pinned: Option<bool>,
}

/// A filter resolved against the index: every listed bitmap must contain the doc.
struct Resolved<'a> {
    all: Vec<&'a RoaringBitmap>,
    /// `pinned=False`: the doc must not be in this bitmap.
    not: Option<&'a RoaringBitmap>,
    /// Some filter value is unknown to the index: nothing can match.
    empty: bool,
}

impl Resolved<'_> {
    fn matches(&self, doc: u32) -> bool {
        self.all.iter().all(|b| b.contains(doc)) && self.not.is_none_or(|b| !b.contains(doc))
    }
}

static EMPTY: std::sync::LazyLock<RoaringBitmap> = std::sync::LazyLock::new(RoaringBitmap::new);

#[derive(Debug, Default, Clone)]
pub struct MemIndex {
    pub strings: Interner,
    records: Vec<Option<Record>>,
    /// id -> doc. Keyed by the id's two halves: 24-byte entries instead of 32 (u128 aligns
    /// to 16), which is most of a hash map's memory.
    by_id: FastMap<IdKey, u32>,
    live: RoaringBitmap,
    postings: FastMap<PostKey, RoaringBitmap>,
    metrics: FastMap<Sym, BTreeSet<MetricKey>>,
    /// Small blobs packed into the log: digest bytes -> where their bytes are. An entry stays
    /// until a snapshot leaves out digests no live record names.
    packed: FastMap<[u8; 32], BlobLoc>,
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

    fn rec(&self, doc: u32) -> &Record {
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

    // ---- queries ---------------------------------------------------------------------------

    fn resolve_filter(&self, f: &Filter) -> Resolved<'_> {
        let mut out = Resolved {
            all: Vec::new(),
            not: None,
            empty: false,
        };
        let mut need = |key: Option<PostKey>| match key.and_then(|k| self.postings.get(&k)) {
            Some(b) => out.all.push(b),
            None => out.empty = true,
        };
        let sym = |s: &str| self.strings.lookup(s);
        if let Some(k) = &f.kind {
            need(sym(k).map(PostKey::Kind));
        }
        if let Some(x) = &f.run_id {
            need(sym(x).map(PostKey::Run));
        }
        if let Some(x) = &f.graph_id {
            need(sym(x).map(PostKey::Graph));
        }
        if let Some(x) = &f.node_id {
            need(sym(x).map(PostKey::Node));
        }
        if let Some(x) = &f.project_id {
            need(sym(x).map(PostKey::Project));
        }
        for (k, v) in &f.labels {
            let key = sym(k).and_then(|k| {
                let v = match v {
                    OwnedValue::Str(s) => ValueKey::Str(sym(s)?),
                    OwnedValue::Int(i) => ValueKey::Int(*i),
                    OwnedValue::Float(x) => ValueKey::Float(normalize_f64(*x).to_bits()),
                    OwnedValue::Bool(b) => ValueKey::Bool(*b),
                };
                Some(PostKey::Label(k, v))
            });
            need(key);
        }
        match f.pinned {
            Some(true) => need(Some(PostKey::Pinned)),
            Some(false) => out.not = Some(self.postings.get(&PostKey::Pinned).unwrap_or(&EMPTY)),
            None => {}
        }
        out.all.sort_by_key(|b| b.len());
        out
    }

    /// Docs matching the filter, unordered.
    fn matching_docs<'a>(&'a self, r: &'a Resolved<'a>) -> Box<dyn Iterator<Item = u32> + 'a> {
        if r.empty {
            return Box::new(std::iter::empty());
        }
        let (first, rest) = match r.all.split_first() {
            Some((first, rest)) => (*first, rest),
            None => (&self.live, &[][..]),
        };
        Box::new(first.iter().filter(move |&d| {
            rest.iter().all(|b| b.contains(d)) && r.not.is_none_or(|b| !b.contains(d))
        }))
    }

    pub fn count(&self, f: &Filter) -> usize {
        let r = self.resolve_filter(f);
        if r.empty {
            return 0;
        }
        match (r.all.as_slice(), r.not) {
            ([], None) => self.live.len() as usize,
            ([one], None) => one.len() as usize,
            ([a, b], None) => a.intersection_len(b) as usize,
            ([], Some(not)) => self.live.difference_len(not) as usize,
            _ => self.matching_docs(&r).count(),
        }
    }

    /// Matching records, oldest (smallest id) first.
    pub fn list(&self, f: &Filter, limit: Option<usize>) -> Vec<&Record> {
        let r = self.resolve_filter(f);
        let mut out: Vec<&Record> = self.matching_docs(&r).map(|d| self.rec(d)).collect();
        match limit {
            Some(k) if k < out.len() => {
                out.select_nth_unstable_by_key(k, |r| r.id);
                out.truncate(k);
            }
            _ => {}
        }
        out.sort_unstable_by_key(|r| r.id);
        out
    }

    /// The `k` best matching records by `metric`; records without the metric are left out.
    ///
    /// The planner: walking the metric order from its best end costs about
    /// `k / selectivity` steps (each a few bitmap lookups); scanning the filtered set costs
    /// one step per matching doc. Selectivity is estimated from the posting sizes as if the
    /// filters were independent.
    pub fn top_k(&self, f: &Filter, metric: &str, mode: Mode, k: usize) -> Vec<&Record> {
        let r = self.resolve_filter(f);
        let Some(msym) = self.strings.lookup(metric) else {
            return Vec::new();
        };
        let Some(tree) = self.metrics.get(&msym) else {
            return Vec::new();
        };
        if r.empty || k == 0 {
            return Vec::new();
        }
        let live = self.live.len().max(1) as f64;
        let selectivity: f64 = r.all.iter().map(|b| b.len() as f64 / live).product();
        let scan_cost = r.all.first().map_or(live, |b| b.len() as f64);
        let walk_cost = (k as f64 / selectivity.max(1e-12)).min(tree.len() as f64) * 2.0;
        if walk_cost <= scan_cost {
            self.top_k_walk(&r, tree, mode, k)
        } else {
            self.top_k_scan(&r, msym, mode, k)
        }
    }

    fn top_k_walk(
        &self,
        r: &Resolved<'_>,
        tree: &BTreeSet<MetricKey>,
        mode: Mode,
        k: usize,
    ) -> Vec<&Record> {
        let mut out: Vec<&Record> = Vec::with_capacity(k.min(1024));
        // Entries of equal value arrive together; within such a run the older record must come
        // first, so runs are collected and sorted by id before they are emitted.
        let mut run: Vec<&Record> = Vec::new();
        let mut run_value: Option<OrdF64> = None;
        let mut visit = |&(v, doc): &MetricKey| -> bool {
            if run_value != Some(v) {
                run.sort_unstable_by_key(|r| r.id);
                out.append(&mut run);
                if out.len() >= k {
                    return false;
                }
                run_value = Some(v);
            }
            if r.matches(doc) {
                run.push(self.rec(doc));
            }
            true
        };
        match mode {
            Mode::Max => {
                for e in tree.iter().rev() {
                    if !visit(e) {
                        break;
                    }
                }
            }
            Mode::Min => {
                for e in tree.iter() {
                    if !visit(e) {
                        break;
                    }
                }
            }
        }
        run.sort_unstable_by_key(|r| r.id);
        out.append(&mut run);
        out.truncate(k);
        out
    }

    fn top_k_scan(&self, r: &Resolved<'_>, msym: Sym, mode: Mode, k: usize) -> Vec<&Record> {
        let mut hits: Vec<(f64, &Record)> = self
            .matching_docs(r)
            .filter_map(|d| {
                let rec = self.rec(d);
                rec.metric(msym).map(|v| (v, rec))
            })
            .collect();
        let cmp = |a: &(f64, &Record), b: &(f64, &Record)| {
            let by_value = match mode {
                Mode::Max => b.0.total_cmp(&a.0),
                Mode::Min => a.0.total_cmp(&b.0),
            };
            by_value.then(a.1.id.cmp(&b.1.id))
        };
        if k < hits.len() {
            hits.select_nth_unstable_by(k, cmp);
            hits.truncate(k);
        }
        hits.sort_unstable_by(cmp);
        hits.into_iter().map(|(_, r)| r).collect()
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
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::hash::{Digest, HashAlgo};
    use crate::index::record::ArtifactId;

    fn rec(id: u128, kind: &str, task: OwnedValue, acc: Option<f64>) -> OwnedRecord {
        OwnedRecord {
            id: ArtifactId(id),
            kind: Arc::from(kind),
            digest: Digest::new(HashAlgo::Blake3, [0; 32]),
            size: 1,
            uri: None,
            mime: None,
            created_us: 0,
            run_id: Some(Arc::from("r1")),
            graph_id: None,
            node_id: None,
            project_id: None,
            labels: vec![(Arc::from("task"), task)],
            metrics: acc.map(|a| (Arc::from("acc"), a)).into_iter().collect(),
            pinned: false,
        }
    }

    fn ids(v: Vec<&Record>) -> Vec<u128> {
        v.into_iter().map(|r| r.id.0).collect()
    }

    fn sample() -> MemIndex {
        let mut m = MemIndex::default();
        let s = |x: &str| OwnedValue::Str(Arc::from(x));
        // Inserted out of id order on purpose: ties must still go to the smaller id.
        m.insert(&rec(5, "model", s("a"), Some(0.9)));
        m.insert(&rec(2, "model", s("a"), Some(0.9)));
        m.insert(&rec(3, "model", s("b"), Some(0.5)));
        m.insert(&rec(4, "image", s("a"), None));
        m.insert(&rec(1, "model", OwnedValue::Int(1), Some(-0.0)));
        m
    }

    #[test]
    fn ranking_ties_and_missing_metrics() {
        let m = sample();
        let all = Filter::default();
        assert_eq!(ids(m.top_k(&all, "acc", Mode::Max, 10)), vec![2, 5, 3, 1]);
        assert_eq!(ids(m.top_k(&all, "acc", Mode::Min, 10)), vec![1, 3, 2, 5]);
        assert_eq!(ids(m.top_k(&all, "acc", Mode::Max, 1)), vec![2]);
        assert_eq!(ids(m.top_k(&all, "nope", Mode::Max, 1)), Vec::<u128>::new());
        // Both planner paths give the same answer.
        let r = m.resolve_filter(&all);
        let tree = &m.metrics[&m.strings.lookup("acc").unwrap()];
        let msym = m.strings.lookup("acc").unwrap();
        for mode in [Mode::Max, Mode::Min] {
            for k in 0..6 {
                assert_eq!(
                    ids(m.top_k_walk(&r, tree, mode, k)),
                    ids(m.top_k_scan(&r, msym, mode, k)),
                    "{mode:?} k={k}"
                );
            }
        }
    }

    #[test]
    fn filters_are_exact_and_typed() {
        let mut m = sample();
        let f = |kind: Option<&str>, task: Option<OwnedValue>| Filter {
            kind: kind.map(String::from),
            labels: task.map(|t| ("task".to_string(), t)).into_iter().collect(),
            ..Filter::default()
        };
        let s = |x: &str| OwnedValue::Str(Arc::from(x));
        assert_eq!(m.count(&f(Some("model"), Some(s("a")))), 2);
        assert_eq!(m.count(&f(None, Some(OwnedValue::Int(1)))), 1);
        assert_eq!(m.count(&f(None, Some(OwnedValue::Float(1.0)))), 0);
        assert_eq!(m.count(&f(None, Some(OwnedValue::Bool(true)))), 0);
        assert_eq!(m.count(&f(Some("unknown"), None)), 0);
        assert_eq!(ids(m.list(&f(None, Some(s("a"))), None)), vec![2, 4, 5]);
        assert_eq!(ids(m.list(&Filter::default(), Some(2))), vec![1, 2]);
        assert!(m.set_pinned(ArtifactId(3), true));
        let pinned = |p| Filter {
            pinned: Some(p),
            ..Filter::default()
        };
        assert_eq!(ids(m.list(&pinned(true), None)), vec![3]);
        assert_eq!(m.count(&pinned(false)), 4);
        assert!(m.delete(ArtifactId(2)));
        assert!(!m.delete(ArtifactId(2)));
        assert_eq!(
            ids(m.top_k(&Filter::default(), "acc", Mode::Max, 1)),
            vec![5]
        );
        assert_eq!(m.count(&Filter::default()), 4);
        assert!(
            !m.insert(&rec(5, "model", s("a"), Some(0.1))),
            "ids are unique"
        );
    }

    #[test]
    fn bulk_build_matches_inserts() {
        let m = sample();
        let recs: Vec<Record> = m.iter().cloned().collect();
        let b = MemIndex::from_records(m.strings.clone(), recs);
        for mode in [Mode::Max, Mode::Min] {
            assert_eq!(
                ids(b.top_k(&Filter::default(), "acc", mode, 10)),
                ids(m.top_k(&Filter::default(), "acc", mode, 10))
            );
        }
        assert_eq!(b.len(), m.len());
    }
}
