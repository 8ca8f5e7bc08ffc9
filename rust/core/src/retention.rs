//! Retention: keep the best `k` records of each group by a metric, delete the rest of the
//! group's records, never a pinned one.
//!
//! Rules:
//! - The records considered are those matching the filter that have the metric; they are
//!   ranked as `top_k` ranks (best first, ties to the older record). Records without the
//!   metric cannot be ranked and are kept.
//! - A group is every considered record (`Per::All`), or those sharing a run id (`Run`), a
//!   (run, graph) pair (`Graph`), or a (run, graph, node) triple (`Node`); a missing id is a
//!   value of its own.
//! - The top `k` of each group are kept, pinned or not; beyond them pinned records are kept.
//! - The deletes are one append whose check runs under the index lock: if any planned record
//!   was pinned or deleted by someone else meanwhile, nothing is deleted and the plan is made
//!   again from the new state. Records that arrive meanwhile only push others down, so they
//!   never make a planned delete wrong. On S3 the deletes are one segment, and a concurrent
//!   pin on another machine resolves against them by the segment rule (the later clock wins).
//! - One implementation for both stores ([`keep_best`], over `ArtifactStore`): the store
//!   supplies the index, the live set, and the delete.
//!
//! Only records go; their blobs stay until garbage collection.

use std::cell::Cell;
use std::collections::HashMap;

use crate::api::ArtifactStore;
use crate::error::{Error, Result};
use crate::index::{ArtifactId, Filter, MemIndex, Mode, Op};
use crate::store::Store;

/// How a retention pass groups records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    All,
    Run,
    Graph,
    Node,
}

impl std::str::FromStr for Per {
    type Err = Error;
    fn from_str(s: &str) -> Result<Per> {
        match s {
            "all" => Ok(Per::All),
            "run" => Ok(Per::Run),
            "graph" => Ok(Per::Graph),
            "node" => Ok(Per::Node),
            _ => Err(Error::invalid(format!(
                "per must be \"run\", \"graph\", \"node\" or \"all\", got {s:?}"
            ))),
        }
    }
}

/// What a retention pass deletes (or, in a dry run, would delete).
#[derive(Debug, Clone, Default)]
pub struct RetentionPlan {
    pub dry_run: bool,
    /// Records deleted (would be), best-ranked first within each group.
    pub delete: Vec<ArtifactId>,
    /// Records kept for being in the top `k` of their group.
    pub kept: u64,
    /// Records beyond the top `k` kept because they are pinned.
    pub kept_pinned: u64,
    /// Matching records without the metric (kept).
    pub unranked: u64,
    /// Groups seen.
    pub groups: u64,
}

/// Attempts at deleting before giving up, when other processes keep pinning or deleting
/// the records planned for deletion.
const ATTEMPTS: usize = 16;

/// Plans a retention pass over one state of an index (local and S3 stores alike).
pub fn plan_in(
    m: &MemIndex,
    filter: &Filter,
    metric: &str,
    mode: Mode,
    k: usize,
    per: Per,
) -> RetentionPlan {
    let ranked = m.top_k(filter, metric, mode, usize::MAX);
    let mut plan = RetentionPlan {
        dry_run: true,
        unranked: (m.count(filter) - ranked.len()) as u64,
        ..RetentionPlan::default()
    };
    let mut seen: HashMap<[Option<u32>; 3], usize> = HashMap::new();
    for r in ranked {
        let key = match per {
            Per::All => [None, None, None],
            Per::Run => [r.run_id.get(), None, None],
            Per::Graph => [r.run_id.get(), r.graph_id.get(), None],
            Per::Node => [r.run_id.get(), r.graph_id.get(), r.node_id.get()],
        };
        let n = seen.entry(key).or_insert(0);
        *n += 1;
        if *n <= k {
            plan.kept += 1;
        } else if r.pinned {
            plan.kept_pinned += 1;
        } else {
            plan.delete.push(r.id);
        }
    }
    plan.groups = seen.len() as u64;
    plan
}

/// Keeps the top `k` records of each group by `metric` and deletes the rest that are not
/// pinned (see the module docs), on either store; with `dry_run`, only plans. This is
/// [`ArtifactStore::keep_best`](crate::ArtifactStore::keep_best).
#[allow(clippy::too_many_arguments)]
pub(crate) fn keep_best<S: ArtifactStore + ?Sized>(
    s: &S,
    filter: &Filter,
    metric: &str,
    mode: Mode,
    k: usize,
    per: Per,
    dry_run: bool,
) -> Result<RetentionPlan> {
    for _ in 0..ATTEMPTS {
        let mut plan = None;
        s.read_index(&mut |m| plan = Some(plan_in(m, filter, metric, mode, k, per)))?;
        let mut plan = plan.unwrap_or_default();
        if dry_run || plan.delete.is_empty() {
            return Ok(plan);
        }
        plan.dry_run = false;
        // The gc that follows would refuse (a live directory's files are unknown): refuse
        // now, before any record is deleted, rather than delete and then fail.
        s.live_set()?.refuse_unreadable_trees("keep_best")?;
        if s.delete_unpinned(&plan.delete)? {
            return Ok(plan);
        }
    }
    Err(Error::new(
        crate::ErrorKind::Io,
        format!(
            "keep_best gave up after {ATTEMPTS} attempts: other processes kept pinning or \
             deleting the records it planned to delete"
        ),
    ))
}

impl Store {
    /// Deletes all of `ids` in one append, if every one is still there and unpinned under the
    /// lock; otherwise deletes none and returns `Ok(false)`.
    pub fn delete_unpinned(&self, ids: &[ArtifactId]) -> Result<bool> {
        let ops: Vec<Op> = ids.iter().map(|&id| Op::Delete { id }).collect();
        let conflict = Cell::new(false);
        let r = self.index().append(&ops, |m| {
            if ids.iter().all(|&id| m.get(id).is_some_and(|r| !r.pinned)) {
                Ok(())
            } else {
                conflict.set(true);
                Err(Error::invalid("a planned record was pinned or deleted"))
            }
        });
        match r {
            Ok(()) => Ok(true),
            Err(_) if conflict.get() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::index::RecordMeta;

    fn store(name: &str) -> Store {
        crate::store::test_store(&format!("keep-{name}"))
    }

    fn put(s: &Store, run: &str, acc: Option<f64>, pinned: bool) -> ArtifactId {
        let info = s.blobs().put_bytes(run.as_bytes()).unwrap();
        let meta = RecordMeta {
            kind: "model".into(),
            run_id: Some(run.into()),
            metrics: acc.map(|a| (Arc::from("acc"), a)).into_iter().collect(),
            pinned,
            ..RecordMeta::default()
        };
        s.record(info.digest, info.size, &[meta]).unwrap()[0].id
    }

    #[test]
    fn keeps_top_k_per_group_and_every_pinned_record() {
        let s = store("topk");
        let a1 = put(&s, "a", Some(0.9), false);
        let a2 = put(&s, "a", Some(0.8), false);
        let a3 = put(&s, "a", Some(0.1), true);
        let a4 = put(&s, "a", Some(0.5), false);
        let b1 = put(&s, "b", Some(0.2), false);
        let none = put(&s, "a", None, false);
        let f = Filter {
            kind: Some("model".into()),
            ..Filter::default()
        };
        let plan = s
            .keep_best(&f, "acc", Mode::Max, 2, Per::Run, true)
            .unwrap();
        assert_eq!(plan.delete, vec![a4]);
        assert_eq!((plan.kept, plan.kept_pinned, plan.unranked), (3, 1, 1));
        assert_eq!(plan.groups, 2);
        assert!(s.index().read(|m| m.contains(a4)).unwrap(), "dry run");

        let all = s
            .keep_best(&f, "acc", Mode::Max, 1, Per::All, false)
            .unwrap();
        assert_eq!(all.delete, vec![a2, a4, b1]);
        let left: Vec<ArtifactId> = s
            .index()
            .read(|m| m.iter().map(|r| r.id).collect())
            .unwrap();
        assert_eq!(left, vec![a1, a3, none]);
    }

    #[test]
    fn a_pin_that_lands_first_wins() {
        let s = store("conflict");
        let a = put(&s, "a", Some(0.9), false);
        let b = put(&s, "a", Some(0.1), false);
        s.pin(b, true).unwrap();
        assert!(!s.delete_unpinned(&[b]).unwrap());
        assert!(!s.delete_unpinned(&[a, ArtifactId(7)]).unwrap());
        assert_eq!(s.index().read(|m| m.len()).unwrap(), 2);
        assert!(s.delete_unpinned(&[a]).unwrap());
    }
}
