//! Queries over a `MemIndex`: filters resolved to postings, counts, lists and rankings.
//!
//! Invariants:
//! - A filter value the index has never seen matches nothing (answered without a scan).
//! - Rankings order by value (descending for "max", ascending for "min"); ties go to the
//!   older record, i.e. the smaller id; records without the metric are not ranked.

use roaring::RoaringBitmap;

use crate::error::{Error, Result};

use std::collections::BTreeSet;

use super::mem::{EMPTY, MemIndex, MetricKey, OrdF64, PostKey};
use super::record::{OwnedValue, Record, Sym, ValueKey, normalize_f64};

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
pub(super) struct Resolved<'a> {
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

impl MemIndex {
    pub(super) fn resolve_filter(&self, f: &Filter) -> Resolved<'_> {
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

    pub(super) fn top_k_walk(
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

    pub(super) fn top_k_scan(
        &self,
        r: &Resolved<'_>,
        msym: Sym,
        mode: Mode,
        k: usize,
    ) -> Vec<&Record> {
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
