//! `RemoteStore`: the engine's handle on a store in an S3 bucket. Same method names as
//! `CoreStore` for what both can do; `runstash.Store("s3://...")` wraps it.

use std::path::PathBuf;
use std::time::Duration;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::{
    FilterArgs, IntoPy, MetaArgs, PyArtifact, PyWriter, WriterOwner, columns_dict, first_artifact,
    gc_args, gc_dict, integrity_dict, invalid, keep_best_args, parse_algo, parse_id, plan_dict,
    stats_dict, to_artifacts, with_buffer, with_progress,
};
use runstash_core as core;
use runstash_core::index::{ArtifactId, Filter, Mode, OwnedRecord, RecordMeta};
use runstash_core::remote::{RemoteOptions, RemoteStore};
use runstash_core::{Digest, Durability};

#[pyclass(frozen, module = "runstash._core", name = "RemoteStore")]
pub(crate) struct PyRemoteStore {
    inner: RemoteStore,
}

impl PyRemoteStore {
    fn meta(&self, m: MetaArgs<'_>) -> PyResult<RecordMeta> {
        let meta = m.into_meta()?;
        self.inner.check_meta(&meta).py_err()?;
        Ok(meta)
    }

    fn one(&self, recs: core::Result<Vec<OwnedRecord>>) -> PyResult<PyArtifact> {
        first_artifact(recs, self.inner.blob_uri_prefix())
    }

    fn artifacts(&self, recs: Vec<OwnedRecord>) -> Vec<PyArtifact> {
        to_artifacts(recs, self.inner.blob_uri_prefix())
    }

    /// A digest from "algo:hex", a bare hex string (the store's algorithm), or a blob URI.
    fn digest(&self, r: &str) -> PyResult<Digest> {
        let d = if r.starts_with("s3://") {
            self.inner.digest_from_uri(r)
        } else if r.contains(':') {
            r.parse::<Digest>()
        } else {
            format!("{}:{r}", self.inner.algo().name()).parse::<Digest>()
        }
        .py_err()?;
        if d.algo() != self.inner.algo() {
            return Err(invalid(format!(
                "{d} is a {} digest but this store hashes with {}",
                d.algo().name(),
                self.inner.algo().name()
            )));
        }
        Ok(d)
    }

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
impl PyRemoteStore {
    #[new]
    #[pyo3(signature = (
        url, cache_dir, hash = None, durability = "fsync",
        pack_max = core::store::DEFAULT_PACK_MAX, endpoint = None, region = None,
        access_key_id = None, secret_access_key = None, session_token = None,
        allow_http = None, virtual_hosted = false, max_staleness = 1.0, max_retries = 3,
        request_timeout = 30.0, gc_lease = None, create = true,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        url: String,
        cache_dir: PathBuf,
        hash: Option<&str>,
        durability: &str,
        pack_max: u64,
        endpoint: Option<String>,
        region: Option<String>,
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
        session_token: Option<String>,
        allow_http: Option<bool>,
        virtual_hosted: bool,
        max_staleness: f64,
        max_retries: usize,
        request_timeout: f64,
        gc_lease: Option<f64>,
        create: bool,
    ) -> PyResult<Self> {
        let secs = |v: f64, what: &str| {
            Duration::try_from_secs_f64(v)
                .ok()
                .filter(|d| d.as_secs() <= 86_400)
                .ok_or_else(|| invalid(format!("{what} must be 0 to 86400 seconds, got {v}")))
        };
        if pack_max > core::store::PACK_MAX_LIMIT {
            return Err(invalid(format!(
                "pack_max {pack_max} is over the limit of {} bytes",
                core::store::PACK_MAX_LIMIT
            )));
        }
        let opts = RemoteOptions {
            url,
            endpoint,
            region,
            access_key_id,
            secret_access_key,
            session_token,
            allow_http,
            virtual_hosted,
            cache_dir,
            hash: hash.map(parse_algo).transpose()?,
            durability: durability.parse::<Durability>().py_err()?,
            pack_max,
            max_staleness: secs(max_staleness, "max_staleness")?,
            max_retries,
            request_timeout: secs(request_timeout, "request_timeout")?,
            gc_lease: gc_lease.map(|v| secs(v, "gc_lease")).transpose()?,
            create,
        };
        let inner = py.detach(|| RemoteStore::open(opts)).py_err()?;
        Ok(PyRemoteStore { inner })
    }

    /// The store's URL (`s3://bucket/prefix`).
    #[getter]
    fn root(&self) -> String {
        self.inner.url().to_string()
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
    fn writer_id(&self) -> String {
        self.inner.writer_id().to_string()
    }

    #[getter]
    fn cache_dir(&self) -> String {
        self.inner.cache_dir().to_string_lossy().into_owned()
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

    fn writer(&self, py: Python<'_>, ext: &str, meta: MetaArgs<'_>) -> PyResult<PyWriter> {
        let meta = self.meta(meta)?;
        let w = py.detach(|| self.inner.writer(ext)).py_err()?;
        Ok(PyWriter {
            inner: Mutex::new(Some(w)),
            store: WriterOwner::Remote(self.inner.clone()),
            meta,
        })
    }

    fn get(&self, py: Python<'_>, id: &str) -> PyResult<Option<PyArtifact>> {
        let Ok(id) = id.parse::<ArtifactId>() else {
            return Ok(None);
        };
        Ok(self
            .query(py, |m| {
                m.get(id).map(|r| m.resolve(r)).into_iter().collect()
            })?
            .pop())
    }

    #[pyo3(signature = (filter, limit = None))]
    fn list(
        &self,
        py: Python<'_>,
        filter: FilterArgs<'_>,
        limit: Option<i64>,
    ) -> PyResult<Vec<PyArtifact>> {
        let limit = limit.map(|n| crate::count_arg("limit", n)).transpose()?;
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
        let k = crate::count_arg("k", k)?;
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

    /// Writes a snapshot of every index object seen and deletes them: the number deleted.
    fn compact(&self, py: Python<'_>) -> PyResult<usize> {
        py.detach(|| self.inner.compact()).py_err()
    }

    /// Applies the index objects other writers added since the last refresh.
    fn refresh(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.refresh()).py_err()
    }

    /// Uploads buffered operations (`"os"` durability).
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.flush()).py_err()
    }

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

    /// The path of the blob's file in the local cache (fetched now if needed).
    fn path_of(&self, py: Python<'_>, r: &str) -> PyResult<String> {
        let d = self.digest(r)?;
        let p = py.detach(|| self.inner.blob_path(&d)).py_err()?;
        Ok(p.to_string_lossy().into_owned())
    }

    /// The "algo:hex" digest a ref names (a URI of this store, a digest, or bare hex).
    fn digest_of(&self, r: &str) -> PyResult<String> {
        Ok(self.digest(r)?.to_string())
    }

    fn uri_of(&self, r: &str) -> PyResult<String> {
        let d = self.digest(r)?;
        let hex = d.hex();
        Ok(format!(
            "{}{}/{}",
            self.inner.blob_uri_prefix(),
            &hex[..2],
            &hex[2..]
        ))
    }

    fn exists(&self, py: Python<'_>, r: &str) -> PyResult<bool> {
        let d = self.digest(r)?;
        py.detach(|| self.inner.has_blob(&d)).py_err()
    }

    fn verify(&self, py: Python<'_>, r: &str) -> PyResult<bool> {
        let d = self.digest(r)?;
        py.detach(|| self.inner.verify_blob(&d)).py_err()
    }

    // -- staging, records of stored blobs, directory artifacts -------------------------------

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

    fn tree_dir(&self, py: Python<'_>, r: &str) -> PyResult<String> {
        let d = self.digest(r)?;
        let p = py.detach(|| self.inner.tree_dir(&d)).py_err()?;
        Ok(p.to_string_lossy().into_owned())
    }

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
        let recs = py.detach(|| self.inner.record(d, &metas)).py_err()?;
        Ok(self.artifacts(recs))
    }

    // -- operations: stats, verify, gc, retention (conversions shared with CoreStore) ------

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = py.detach(|| self.inner.stats()).py_err()?;
        stats_dict(py, &s)
    }

    #[pyo3(signature = (progress = None))]
    fn verify_report<'py>(
        &self,
        py: Python<'py>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let r = with_progress(py, progress, |tick| self.inner.verify_report(tick))?;
        integrity_dict(py, &r)
    }

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
