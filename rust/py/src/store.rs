//! `CoreStore`: the engine's store handle, local or S3 alike (`runstash_core::ArtifactStore`);
//! `runstash.Store` wraps it. `CoreStore(root, ...)` opens a local store, `open_s3` (in
//! [`crate::open`]) an S3 one. Every method converts arguments, releases the GIL, and maps
//! errors; none asks which kind of store it has.

use super::*;

/// The engine's store handle. Python code uses `runstash.Store`, which wraps this.
#[pyclass(frozen, module = "runstash._core", name = "CoreStore")]
pub(crate) struct PyStore {
    pub(crate) inner: Arc<dyn ArtifactStore>,
}

impl PyStore {
    pub(crate) fn meta(&self, m: MetaArgs<'_>) -> PyResult<RecordMeta> {
        let meta = m.into_meta()?;
        self.inner.check_meta(&meta).py_err()?;
        Ok(meta)
    }

    pub(crate) fn one(&self, recs: core::Result<Vec<OwnedRecord>>) -> PyResult<PyArtifact> {
        first_artifact(recs, self.inner.blob_uri_prefix())
    }

    pub(crate) fn artifacts(&self, recs: Vec<OwnedRecord>) -> Vec<PyArtifact> {
        to_artifacts(recs, self.inner.blob_uri_prefix())
    }

    /// A digest from "algo:hex", a bare hex string (the store's algorithm), or a blob URI.
    pub(crate) fn digest(&self, r: &str) -> PyResult<Digest> {
        self.inner.parse_ref(r).py_err()
    }

    /// The records `f` picks from the index, as artifacts.
    fn query(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&core::index::MemIndex) -> Vec<OwnedRecord> + Send,
    ) -> PyResult<Vec<PyArtifact>> {
        let recs = py.detach(|| self.inner.read(f)).py_err()?;
        Ok(self.artifacts(recs))
    }
}

#[pymethods]
impl PyStore {
    #[new]
    #[pyo3(signature = (
        root, hash = None, durability = "fsync", pack_max = core::store::DEFAULT_PACK_MAX,
        create = true,
    ))]
    fn new(
        py: Python<'_>,
        root: PathBuf,
        hash: Option<&str>,
        durability: &str,
        pack_max: u64,
        create: bool,
    ) -> PyResult<Self> {
        let opts = core::OpenOptions {
            hash: hash.map(parse_algo).transpose()?,
            durability: durability.parse().py_err()?,
            pack_max,
            create,
        };
        let inner = py.detach(|| core::Store::open(&root, opts)).py_err()?;
        Ok(PyStore {
            inner: Arc::new(inner),
        })
    }

    #[getter]
    /// The store's root path, or its `s3://` URL.
    fn root(&self) -> String {
        self.inner.location()
    }

    #[getter]
    fn hash_algo(&self) -> &'static str {
        self.inner.algo().name()
    }

    #[getter]
    fn durability(&self) -> &'static str {
        self.inner.durability().name()
    }

    #[getter]
    fn pack_max(&self) -> u64 {
        self.inner.pack_max()
    }

    #[getter]
    fn staging_dir(&self) -> String {
        self.inner.staging_dir().to_string_lossy().into_owned()
    }

    fn put_bytes(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        meta: MetaArgs<'_>,
    ) -> PyResult<PyArtifact> {
        let meta = self.meta(meta)?;
        let recs = with_buffer(py, data, |b| {
            self.inner.put_bytes(b, std::slice::from_ref(&meta))
        })?;
        self.one(recs)
    }

    fn save(&self, py: Python<'_>, path: PathBuf, meta: MetaArgs<'_>) -> PyResult<PyArtifact> {
        let meta = self.meta(meta)?;
        let recs = py.detach(|| self.inner.save(&path, std::slice::from_ref(&meta)));
        self.one(recs)
    }

    /// `save` as a future of `event_loop` ([`crate::aio`]).
    fn save_async(
        &self,
        py: Python<'_>,
        event_loop: &Bound<'_, PyAny>,
        path: PathBuf,
        meta: MetaArgs<'_>,
    ) -> PyResult<Py<PyAny>> {
        let meta = self.meta(meta)?;
        let inner = Arc::clone(&self.inner);
        let prefix = Arc::clone(self.inner.blob_uri_prefix());
        aio::spawn(
            py,
            event_loop,
            move || inner.save(&path, std::slice::from_ref(&meta)),
            move |py, recs| Ok(Py::new(py, first_artifact(recs, &prefix)?)?.into_any()),
        )
    }

    #[pyo3(signature = (ext = ""))]
    fn stage(&self, py: Python<'_>, ext: &str) -> PyResult<String> {
        let p = py.detach(|| self.inner.stage(ext)).py_err()?;
        Ok(p.to_string_lossy().into_owned())
    }

    #[pyo3(signature = (suffix = ""))]
    fn stage_dir(&self, py: Python<'_>, suffix: &str) -> PyResult<String> {
        let p = py.detach(|| self.inner.stage_dir(suffix)).py_err()?;
        Ok(p.to_string_lossy().into_owned())
    }

    fn ingest(&self, py: Python<'_>, staged: PathBuf, meta: MetaArgs<'_>) -> PyResult<PyArtifact> {
        let meta = self.meta(meta)?;
        let recs = py.detach(|| self.inner.ingest(&staged, std::slice::from_ref(&meta)));
        self.one(recs)
    }

    fn writer(&self, py: Python<'_>, ext: &str, meta: MetaArgs<'_>) -> PyResult<PyWriter> {
        let meta = self.meta(meta)?;
        let w = py.detach(|| self.inner.writer(ext)).py_err()?;
        Ok(PyWriter {
            inner: Mutex::new(Some(w)),
            store: self.inner.clone(),
            meta: Mutex::new(meta),
        })
    }

    /// Stores a directory as one artifact (see `runstash_core::tree`); with `cleanup`, a
    /// directory made by `stage_dir` is removed afterwards.
    fn ingest_dir(
        &self,
        py: Python<'_>,
        path: PathBuf,
        meta: MetaArgs<'_>,
        cleanup: bool,
    ) -> PyResult<PyArtifact> {
        let meta = self.meta(meta)?;
        let recs = py.detach(|| {
            self.inner
                .ingest_dir(&path, std::slice::from_ref(&meta), cleanup)
        });
        self.one(recs)
    }

    /// The read-only directory of a directory artifact's files (built on first request).
    fn tree_dir(&self, py: Python<'_>, r: &str) -> PyResult<String> {
        let d = self.digest(r)?;
        let p = py.detach(|| self.inner.tree_dir(&d)).py_err()?;
        Ok(p.to_string_lossy().into_owned())
    }

    /// Records `len(metas)` artifacts for one stored blob (given by digest) in one append.
    fn record_many(
        &self,
        py: Python<'_>,
        r: &str,
        metas: Vec<MetaArgs<'_>>,
    ) -> PyResult<Vec<PyArtifact>> {
        let d = self.digest(r)?;
        let metas = metas
            .into_iter()
            .map(|m| self.meta(m))
            .collect::<PyResult<Vec<_>>>()?;
        let recs = py.detach(|| self.inner.record_stored(d, &metas)).py_err()?;
        Ok(self.artifacts(recs))
    }

    // -- index queries ---------------------------------------------------------------------

    fn get(&self, py: Python<'_>, id: &str) -> PyResult<Option<PyArtifact>> {
        let Ok(id) = id.parse::<ArtifactId>() else {
            return Ok(None);
        };
        let found = self.query(py, |m| {
            m.get(id).map(|r| m.resolve(r)).into_iter().collect()
        })?;
        Ok(found.into_iter().next())
    }

    #[pyo3(signature = (filter, limit = None))]
    fn list(
        &self,
        py: Python<'_>,
        filter: FilterArgs<'_>,
        limit: Option<i64>,
    ) -> PyResult<Vec<PyArtifact>> {
        let limit = limit.map(|n| count_arg("limit", n)).transpose()?;
        let f = filter.into_filter()?;
        self.query(py, |m| {
            m.list(&f, limit)
                .into_iter()
                .map(|r| m.resolve(r))
                .collect()
        })
    }

    fn count(&self, py: Python<'_>, filter: FilterArgs<'_>) -> PyResult<usize> {
        let f = filter.into_filter()?;
        py.detach(|| self.inner.read(|m| m.count(&f))).py_err()
    }

    #[pyo3(signature = (filter, metric, mode, k))]
    fn top_k(
        &self,
        py: Python<'_>,
        filter: FilterArgs<'_>,
        metric: &str,
        mode: &str,
        k: i64,
    ) -> PyResult<Vec<PyArtifact>> {
        let k = count_arg("k", k)?;
        let f = filter.into_filter()?;
        let mode: Mode = mode.parse().py_err()?;
        self.query(py, |m| {
            m.top_k(&f, metric, mode, k)
                .into_iter()
                .map(|r| m.resolve(r))
                .collect()
        })
    }

    fn best(
        &self,
        py: Python<'_>,
        filter: FilterArgs<'_>,
        metric: &str,
        mode: &str,
    ) -> PyResult<Option<PyArtifact>> {
        Ok(self.top_k(py, filter, metric, mode, 1)?.into_iter().next())
    }

    #[pyo3(signature = (id, pinned = true))]
    fn pin(&self, py: Python<'_>, id: &str, pinned: bool) -> PyResult<PyArtifact> {
        let id = parse_id(id)?;
        let r = py.detach(|| self.inner.pin(id, pinned)).py_err()?;
        Ok(PyArtifact::new(r, self.inner.blob_uri_prefix()))
    }

    fn delete(&self, py: Python<'_>, id: &str) -> PyResult<()> {
        let id = parse_id(id)?;
        py.detach(|| self.inner.delete(id)).py_err()
    }

    /// Writes a snapshot of the index (on S3: in place of every index object seen).
    fn compact(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.compact()).py_err()
    }

    /// Applies what other writers added to the index (nothing to do on a local store).
    fn refresh(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.refresh()).py_err()
    }

    /// Stores buffered operations (S3 in `"os"` durability; nothing to do otherwise).
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.flush()).py_err()
    }

    /// Every live record, oldest first, as columns:
    /// (scalar columns dict, labels list of dicts, metric names, metric value lists).
    fn columns<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let f = Filter::default();
        let arts = self.query(py, |m| {
            m.list(&f, None).into_iter().map(|r| m.resolve(r)).collect()
        })?;
        columns_dict(py, &arts)
    }

    #[pyo3(signature = (r, verify = false))]
    fn read_bytes<'py>(
        &self,
        py: Python<'py>,
        r: &str,
        verify: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let d = self.digest(r)?;
        let data = py.detach(|| self.inner.read_blob(&d, verify)).py_err()?;
        Ok(PyBytes::new(py, &data))
    }

    /// The path of a local file holding the blob (a packed blob gets its file now; on S3 the
    /// file is in the cache, fetched now if needed).
    fn path_of(&self, py: Python<'_>, r: &str) -> PyResult<String> {
        let d = self.digest(r)?;
        let p = py.detach(|| self.inner.blob_path(&d)).py_err()?;
        Ok(p.to_string_lossy().into_owned())
    }

    /// The path of a file that already holds the blob, or None (writes nothing).
    fn existing_file(&self, py: Python<'_>, r: &str) -> PyResult<Option<String>> {
        let d = self.digest(r)?;
        let p = py.detach(|| self.inner.existing_blob_file(&d)).py_err()?;
        Ok(p.map(|p| p.to_string_lossy().into_owned()))
    }

    /// The "algo:hex" digest a ref names (a URI of this store, a digest, or bare hex).
    fn digest_of(&self, r: &str) -> PyResult<String> {
        Ok(self.digest(r)?.to_string())
    }

    fn uri_of(&self, r: &str) -> PyResult<String> {
        let d = self.digest(r)?;
        Ok(self.inner.uri_of(&d))
    }

    fn exists(&self, py: Python<'_>, r: &str) -> PyResult<bool> {
        let d = self.digest(r)?;
        py.detach(|| self.inner.has_blob(&d)).py_err()
    }

    fn verify(&self, py: Python<'_>, r: &str) -> PyResult<bool> {
        let d = self.digest(r)?;
        py.detach(|| self.inner.verify_blob(&d)).py_err()
    }

    /// Re-hash every blob: (checked, corrupt paths, stray paths, missing hashes).
    #[allow(clippy::type_complexity)]
    fn verify_all(&self, py: Python<'_>) -> PyResult<(u64, Vec<String>, Vec<String>, Vec<String>)> {
        let r = py.detach(|| self.inner.verify_all()).py_err()?;
        let s = |v: Vec<PathBuf>| {
            v.into_iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect()
        };
        let missing = r.missing.iter().map(|d| d.to_string()).collect();
        Ok((r.checked, s(r.corrupt), s(r.stray), missing))
    }

    // -- operations: stats, verify, gc, retention --------------------------------------------

    /// Space accounting, as a dict of the fields of `runstash_core::StoreStats`.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = py.detach(|| self.inner.stats()).py_err()?;
        stats_dict(py, &s)
    }

    /// Re-hash every blob and compare with the index. `progress(done, total, bytes,
    /// total_bytes)` is called at most every 0.1 s and after the last blob; an exception it
    /// raises stops the check and propagates.
    #[pyo3(signature = (progress = None))]
    fn verify_report<'py>(
        &self,
        py: Python<'py>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let r = with_progress(py, progress, |tick| self.inner.verify_report(tick))?;
        integrity_dict(py, &r)
    }

    /// Delete unreferenced blob files older than `grace` seconds (only report, in a dry run).
    /// `assume_deleted`: artifact ids to treat as deleted (a dry run's preview of retention).
    #[pyo3(signature = (dry_run, grace, assume_deleted = Vec::new()))]
    fn gc<'py>(
        &self,
        py: Python<'py>,
        dry_run: bool,
        grace: f64,
        assume_deleted: Vec<String>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let (grace, assume) = gc_args(grace, &assume_deleted)?;
        let r = py
            .detach(|| self.inner.gc_assuming_deleted(dry_run, grace, &assume))
            .py_err()?;
        gc_dict(py, &r)
    }

    /// Keep the best `k` records of each group by `metric`, delete the other unpinned ones
    /// (only plan, in a dry run). `per`: "all", "run", "graph" or "node".
    #[pyo3(signature = (filter, metric, mode, k, per, dry_run))]
    #[allow(clippy::too_many_arguments)]
    fn keep_best<'py>(
        &self,
        py: Python<'py>,
        filter: FilterArgs<'_>,
        metric: &str,
        mode: &str,
        k: i64,
        per: &str,
        dry_run: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let (k, f, mode, per) = keep_best_args(filter, mode, k, per)?;
        let plan = py
            .detach(|| self.inner.keep_best(&f, metric, mode, k, per, dry_run))
            .py_err()?;
        plan_dict(py, &plan)
    }
}
