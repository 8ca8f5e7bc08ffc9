//! Tests of `MemIndex`: rankings, ties, filters, bulk builds.

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
