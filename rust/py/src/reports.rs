//! Reports of the engine (stats, verify, gc, retention) as Python dicts, and the arguments
//! of those calls: one conversion for the local and the S3 store.

use super::*;

pub(crate) fn stats_dict<'py>(
    py: Python<'py>,
    s: &core::StoreStats,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("records", s.records)?;
    d.set_item("live_bytes", s.live_bytes)?;
    d.set_item("blob_count", s.blob_count)?;
    d.set_item("blob_bytes", s.blob_bytes)?;
    d.set_item("dedup_ratio", s.dedup_ratio)?;
    d.set_item("disk_blobs", s.disk_blobs)?;
    d.set_item("disk_bytes", s.disk_bytes)?;
    d.set_item("orphan_blobs", s.orphan_blobs)?;
    d.set_item("orphan_bytes", s.orphan_bytes)?;
    d.set_item("missing_blobs", s.missing_blobs)?;
    d.set_item("stray_files", s.stray_files)?;
    d.set_item("staging_files", s.staging_files)?;
    d.set_item("staging_bytes", s.staging_bytes)?;
    d.set_item("index_bytes", s.index_bytes)?;
    d.set_item("quarantined_files", s.quarantined_files)?;
    d.set_item("quarantined_bytes", s.quarantined_bytes)?;
    Ok(d)
}

/// Runs `f` without the GIL, with a progress callback that calls `progress(done, total,
/// bytes, total_bytes)` at most every 0.1 s and after the last item; an exception it raises
/// stops `f` and propagates.
pub(crate) fn with_progress<T: Send>(
    py: Python<'_>,
    progress: Option<Py<PyAny>>,
    f: impl FnOnce(&mut dyn FnMut(&core::VerifyProgress) -> bool) -> core::Result<T> + Send,
) -> PyResult<T> {
    let mut raised: Option<PyErr> = None;
    let r = py.detach(|| {
        let mut last: Option<std::time::Instant> = None;
        let mut tick = |p: &core::VerifyProgress| -> bool {
            let Some(cb) = &progress else { return true };
            let due = p.done == p.total
                || last.is_none_or(|t| t.elapsed() >= std::time::Duration::from_millis(100));
            if !due {
                return true;
            }
            last = Some(std::time::Instant::now());
            Python::attach(
                |py| match cb.call1(py, (p.done, p.total, p.bytes, p.total_bytes)) {
                    Ok(_) => true,
                    Err(e) => {
                        raised = Some(e);
                        false
                    }
                },
            )
        };
        f(&mut tick)
    });
    if let Some(e) = raised {
        return Err(e);
    }
    r.py_err()
}

pub(crate) fn integrity_dict<'py>(
    py: Python<'py>,
    r: &core::IntegrityReport,
) -> PyResult<Bound<'py, PyDict>> {
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let d = PyDict::new(py);
    d.set_item("checked", r.checked)?;
    d.set_item("checked_bytes", r.checked_bytes)?;
    let missing: Vec<(String, Vec<String>)> = r
        .missing
        .iter()
        .map(|m| {
            let ids = m.records.iter().map(|id| id.to_string()).collect();
            (m.digest.to_string(), ids)
        })
        .collect();
    d.set_item("missing", missing)?;
    let corrupt: Vec<(String, String)> = r
        .corrupt
        .iter()
        .map(|(dg, p)| (dg.to_string(), path(p)))
        .collect();
    d.set_item("corrupt", corrupt)?;
    let orphaned: Vec<(String, String, u64)> = r
        .orphaned
        .iter()
        .map(|(dg, p, n)| (dg.to_string(), path(p), *n))
        .collect();
    d.set_item("orphaned", orphaned)?;
    let stray: Vec<String> = r.stray.iter().map(|p| path(p)).collect();
    d.set_item("stray", stray)?;
    let unreadable: Vec<(String, String)> = r
        .unreadable
        .iter()
        .map(|(p, why)| (path(p), why.clone()))
        .collect();
    d.set_item("unreadable", unreadable)?;
    let quarantined: Vec<(Option<String>, String, u64)> = r
        .quarantined
        .iter()
        .map(|q| (q.digest.map(|d| d.to_string()), path(&q.path), q.size))
        .collect();
    d.set_item("quarantined", quarantined)?;
    Ok(d)
}

/// `gc`'s grace in seconds and its ids to treat as deleted, checked.
pub(crate) fn gc_args(
    grace: f64,
    assume_deleted: &[String],
) -> PyResult<(std::time::Duration, std::collections::HashSet<ArtifactId>)> {
    if !grace.is_finite() || grace < 0.0 {
        return Err(invalid(format!(
            "grace must be a finite, non-negative number of seconds, got {grace}"
        )));
    }
    let assume = assume_deleted
        .iter()
        .map(|id| parse_id(id))
        .collect::<PyResult<std::collections::HashSet<_>>>()?;
    Ok((std::time::Duration::from_secs_f64(grace), assume))
}

pub(crate) fn gc_dict<'py>(py: Python<'py>, r: &core::GcReport) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("dry_run", r.dry_run)?;
    d.set_item("scanned", r.scanned)?;
    let deleted: Vec<(String, u64)> = r
        .deleted
        .iter()
        .map(|(dg, n)| (dg.to_string(), *n))
        .collect();
    d.set_item("deleted", deleted)?;
    d.set_item("deleted_bytes", r.deleted_bytes)?;
    d.set_item("recent", r.recent)?;
    d.set_item("recent_bytes", r.recent_bytes)?;
    d.set_item("revived", r.revived)?;
    d.set_item("compacted", r.compacted)?;
    d.set_item("trees_removed", r.trees_removed)?;
    d.set_item("pending", r.pending)?;
    d.set_item("pending_bytes", r.pending_bytes)?;
    Ok(d)
}

/// `keep_best`'s arguments as core types: (k, filter, mode, per).
pub(crate) fn keep_best_args(
    filter: FilterArgs<'_>,
    mode: &str,
    k: i64,
    per: &str,
) -> PyResult<(usize, Filter, Mode, core::Per)> {
    Ok((
        count_arg("k", k)?,
        filter.into_filter()?,
        mode.parse().py_err()?,
        per.parse().py_err()?,
    ))
}

pub(crate) fn plan_dict<'py>(
    py: Python<'py>,
    plan: &core::RetentionPlan,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("dry_run", plan.dry_run)?;
    let ids: Vec<String> = plan.delete.iter().map(|id| id.to_string()).collect();
    d.set_item("delete", ids)?;
    d.set_item("kept", plan.kept)?;
    d.set_item("kept_pinned", plan.kept_pinned)?;
    d.set_item("unranked", plan.unranked)?;
    d.set_item("groups", plan.groups)?;
    Ok(d)
}
