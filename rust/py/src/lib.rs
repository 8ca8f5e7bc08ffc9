//! `runstash._core`: the PyO3 face of runstash-core. It converts types, releases the GIL around
//! every syscall and hash, and maps engine errors to the exception classes of
//! `runstash.errors`. It holds no logic of its own.

use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyString, PyType};

#[cfg(feature = "s3")]
mod remote;

use runstash_core as core;
use runstash_core::index::{ArtifactId, Filter, Mode, OwnedRecord, OwnedValue, RecordMeta};
use runstash_core::{Digest, Durability, ErrorKind, HashAlgo};

// ---------------------------------------------------------------------------------------------
// Errors

static ERROR_CLASSES: PyOnceLock<[Py<PyType>; 6]> = PyOnceLock::new();

fn error_classes(py: Python<'_>) -> PyResult<&[Py<PyType>; 6]> {
    ERROR_CLASSES.get_or_try_init(py, || {
        let m = py.import("runstash.errors")?;
        let get = |name: &str| -> PyResult<Py<PyType>> {
            Ok(m.getattr(name)?.cast_into::<PyType>()?.unbind())
        };
        Ok([
            get("NotFoundError")?,
            get("AlreadyExistsError")?,
            get("InvalidArgumentError")?,
            get("CorruptError")?,
            get("IncompatibleStoreError")?,
            get("StoreIOError")?,
        ])
    })
}

fn to_pyerr(e: core::Error) -> PyErr {
    Python::attach(|py| {
        let classes = match error_classes(py) {
            Ok(c) => c,
            Err(import_err) => return import_err,
        };
        let cls = match e.kind() {
            ErrorKind::NotFound => &classes[0],
            ErrorKind::AlreadyExists => &classes[1],
            ErrorKind::InvalidArgument => &classes[2],
            ErrorKind::Corrupt => &classes[3],
            ErrorKind::Incompatible => &classes[4],
            ErrorKind::Io => &classes[5],
        };
        let cls = cls.bind(py);
        // OSError subclasses take (errno, strerror) and then expose .errno / .strerror. A
        // missing or existing thing that did not come from the OS still gets its errno: an
        // OSError with a filename but no errno prints "[Errno None] None: '<path>'", which
        // drops the message.
        let errno = e.os_errno().or(match e.kind() {
            ErrorKind::NotFound => Some(2),       // ENOENT
            ErrorKind::AlreadyExists => Some(17), // EEXIST
            _ => None,
        });
        let made = match errno {
            Some(errno) => cls.call1((errno, e.message().to_string())),
            None => cls.call1((e.message().to_string(),)),
        };
        match made {
            Ok(exc) => {
                if let Some(p) = e.path() {
                    let _ = exc.setattr("filename", p.to_string_lossy().into_owned());
                }
                PyErr::from_value(exc)
            }
            Err(err) => err,
        }
    })
}

trait IntoPy<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for core::Result<T> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_pyerr)
    }
}

// ---------------------------------------------------------------------------------------------
// Buffers

/// Runs `f` on the bytes of any C-contiguous buffer (bytes, bytearray, memoryview, numpy),
/// with the GIL released. For `bytes` no copy and no buffer export is made.
fn with_buffer<R: Send>(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    f: impl FnOnce(&[u8]) -> R + Send,
) -> PyResult<R> {
    if let Ok(b) = data.cast::<PyBytes>() {
        let slice = b.as_bytes();
        return Ok(py.detach(|| f(slice)));
    }
    let buf = PyBuffer::<u8>::get(data)?;
    if !buf.is_c_contiguous() {
        return Err(PyValueError::new_err("buffer must be C-contiguous"));
    }
    // Safety: the PyBuffer keeps the exporter's memory alive and pinned until it is dropped,
    // after `f` returns. A mutable exporter (bytearray) changed by another thread meanwhile
    // yields a hash of whatever bytes were read; the documented contract is not to do that.
    let slice = unsafe { std::slice::from_raw_parts(buf.buf_ptr() as *const u8, buf.len_bytes()) };
    let out = py.detach(|| f(slice));
    drop(buf);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Free functions

fn parse_algo(algo: &str) -> PyResult<HashAlgo> {
    algo.parse().py_err()
}

/// hash_bytes(data, algo="blake3") -> str: "<algo>:<hex>" digest of a buffer, GIL released.
#[pyfunction]
#[pyo3(signature = (data, algo = "blake3"))]
fn hash_bytes(py: Python<'_>, data: &Bound<'_, PyAny>, algo: &str) -> PyResult<String> {
    let algo = parse_algo(algo)?;
    with_buffer(py, data, |b| core::hash_bytes(algo, b).to_string())
}

/// hash_file(path, algo="blake3") -> str: digest of a file (memory-mapped, all cores).
#[pyfunction]
#[pyo3(signature = (path, algo = "blake3"))]
fn hash_file(py: Python<'_>, path: PathBuf, algo: &str) -> PyResult<String> {
    let algo = parse_algo(algo)?;
    py.detach(|| core::hash_file(algo, &path))
        .py_err()
        .map(|(d, _)| d.to_string())
}

/// write_atomic(path, data, durability="fsync"): replace a file atomically.
#[pyfunction]
#[pyo3(signature = (path, data, durability = "fsync"))]
fn write_atomic(
    py: Python<'_>,
    path: PathBuf,
    data: &Bound<'_, PyAny>,
    durability: &str,
) -> PyResult<()> {
    let durability: Durability = durability.parse().py_err()?;
    with_buffer(py, data, |b| core::write_atomic(&path, b, durability))?.py_err()
}

// ---------------------------------------------------------------------------------------------
// Artifacts and their metadata

/// A stored artifact: the index record of one write. Immutable; `Store.pin` returns a new one.
#[pyclass(
    frozen,
    module = "runstash._core",
    name = "Artifact",
    skip_from_py_object
)]
struct PyArtifact {
    rec: OwnedRecord,
    /// `file://` URI of the store's `blobs/` directory, ending in `/`.
    uri_prefix: Arc<str>,
}

fn value_to_py<'py>(py: Python<'py>, v: &OwnedValue) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        OwnedValue::Str(s) => PyString::new(py, s).into_any(),
        OwnedValue::Int(i) => i.into_pyobject(py)?.into_any(),
        OwnedValue::Float(f) => PyFloat::new(py, *f).into_any(),
        OwnedValue::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
    })
}

fn opt_str(s: &Option<Arc<str>>) -> Option<&str> {
    s.as_deref()
}

impl PyArtifact {
    fn new(rec: OwnedRecord, uri_prefix: &Arc<str>) -> Self {
        PyArtifact {
            rec,
            uri_prefix: uri_prefix.clone(),
        }
    }

    fn uri_string(&self) -> String {
        match &self.rec.uri {
            Some(u) => u.to_string(),
            None => {
                let hex = self.rec.digest.hex();
                format!("{}{}/{}", self.uri_prefix, &hex[..2], &hex[2..])
            }
        }
    }
}

#[pymethods]
impl PyArtifact {
    /// Unique, time-ordered id (26 characters, Crockford base32).
    #[getter]
    fn id(&self) -> String {
        self.rec.id.to_string()
    }
    #[getter]
    fn kind(&self) -> &str {
        &self.rec.kind
    }
    /// `file://` URI of the artifact's bytes.
    #[getter]
    fn uri(&self) -> String {
        self.uri_string()
    }
    /// Content hash, `"blake3:<hex>"` or `"sha256:<hex>"`.
    #[getter]
    fn hash(&self) -> String {
        self.rec.digest.to_string()
    }
    #[getter]
    fn size(&self) -> u64 {
        self.rec.size
    }
    #[getter]
    fn mime(&self) -> Option<&str> {
        opt_str(&self.rec.mime)
    }
    /// Creation time, ISO 8601 UTC with microseconds.
    #[getter]
    fn created_at(&self) -> String {
        core::dates::format_utc_micros(self.rec.created_us)
    }
    #[getter]
    fn run_id(&self) -> Option<&str> {
        opt_str(&self.rec.run_id)
    }
    #[getter]
    fn graph_id(&self) -> Option<&str> {
        opt_str(&self.rec.graph_id)
    }
    #[getter]
    fn node_id(&self) -> Option<&str> {
        opt_str(&self.rec.node_id)
    }
    #[getter]
    fn project_id(&self) -> Option<&str> {
        opt_str(&self.rec.project_id)
    }
    /// A new dict of the labels on each access.
    #[getter]
    fn labels<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in &self.rec.labels {
            d.set_item(&**k, value_to_py(py, v)?)?;
        }
        Ok(d)
    }
    /// A new dict of the metrics on each access.
    #[getter]
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in &self.rec.metrics {
            d.set_item(&**k, *v)?;
        }
        Ok(d)
    }
    #[getter]
    fn pinned(&self) -> bool {
        self.rec.pinned
    }
    /// Creation time in microseconds since the Unix epoch (UTC).
    #[getter]
    fn created_us(&self) -> i64 {
        self.rec.created_us
    }

    // AetherGraph's Artifact field names, so records from either API read the same.

    /// Same as `id` (AetherGraph's name).
    #[getter]
    fn artifact_id(&self) -> String {
        self.id()
    }
    /// The content hash's hex digits (BLAKE3 unless the store was made with hash="sha256").
    #[getter]
    fn sha256(&self) -> String {
        self.rec.digest.hex()
    }
    /// Same as `size` (AetherGraph's name).
    #[getter]
    fn bytes(&self) -> u64 {
        self.rec.size
    }
    /// Same as `mime`.
    #[getter]
    fn mimetype(&self) -> Option<&str> {
        opt_str(&self.rec.mime)
    }
    /// The `tags` label when it is a string ("a,b" -> ["a", "b"]), else None.
    #[getter]
    fn tags(&self) -> Option<Vec<String>> {
        self.rec.labels.iter().find_map(|(k, v)| match v {
            OwnedValue::Str(s) if &**k == "tags" => Some(
                s.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(String::from)
                    .collect(),
            ),
            _ => None,
        })
    }
    /// Same as `id`: every write is its own record, so each is its own occurrence.
    #[getter]
    fn occurrence_id(&self) -> String {
        self.id()
    }
    /// Not tracked by runstash: always None.
    #[getter]
    fn tool_name(&self) -> Option<&str> {
        None
    }
    /// Not tracked by runstash: always None.
    #[getter]
    fn tool_version(&self) -> Option<&str> {
        None
    }
    /// Not tracked by runstash: always None.
    #[getter]
    fn preview_uri(&self) -> Option<&str> {
        None
    }
    /// Not tracked by runstash: always None.
    #[getter]
    fn org_id(&self) -> Option<&str> {
        None
    }
    /// Not tracked by runstash: always None.
    #[getter]
    fn user_id(&self) -> Option<&str> {
        None
    }
    /// Not tracked by runstash: always None.
    #[getter]
    fn client_id(&self) -> Option<&str> {
        None
    }
    /// Not tracked by runstash: always None.
    #[getter]
    fn app_id(&self) -> Option<&str> {
        None
    }
    /// Not tracked by runstash: always None.
    #[getter]
    fn session_id(&self) -> Option<&str> {
        None
    }

    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("id", self.id())?;
        d.set_item("kind", self.kind())?;
        d.set_item("uri", self.uri_string())?;
        d.set_item("hash", self.hash())?;
        d.set_item("size", self.size())?;
        d.set_item("mime", self.mime())?;
        d.set_item("created_at", self.created_at())?;
        d.set_item("run_id", self.run_id())?;
        d.set_item("graph_id", self.graph_id())?;
        d.set_item("node_id", self.node_id())?;
        d.set_item("project_id", self.project_id())?;
        d.set_item("labels", self.labels(py)?)?;
        d.set_item("metrics", self.metrics(py)?)?;
        d.set_item("pinned", self.pinned())?;
        Ok(d)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        match other.cast::<PyArtifact>() {
            Ok(o) => o.get().rec == self.rec && o.get().uri_string() == self.uri_string(),
            Err(_) => false,
        }
    }

    fn __hash__(&self) -> u64 {
        (self.rec.id.0 as u64) ^ ((self.rec.id.0 >> 64) as u64)
    }

    fn __repr__(&self) -> String {
        format!(
            "Artifact(id={:?}, kind={:?}, hash={:?}, size={}, pinned={})",
            self.id(),
            self.kind(),
            self.hash(),
            self.rec.size,
            if self.rec.pinned { "True" } else { "False" }
        )
    }
}

fn invalid(msg: String) -> PyErr {
    to_pyerr(core::Error::invalid(msg))
}

fn labels_from(d: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(Arc<str>, OwnedValue)>> {
    let Some(d) = d else { return Ok(Vec::new()) };
    let mut out = Vec::with_capacity(d.len());
    for (k, v) in d.iter() {
        let key: Arc<str> = match k.cast::<PyString>() {
            Ok(s) => Arc::from(s.to_str()?),
            Err(_) => {
                return Err(invalid(format!(
                    "label keys must be strings, got {}",
                    k.get_type().name()?
                )));
            }
        };
        out.push((key, value_from(&k, &v)?));
    }
    Ok(out)
}

fn value_from(k: &Bound<'_, PyAny>, v: &Bound<'_, PyAny>) -> PyResult<OwnedValue> {
    if let Ok(b) = v.cast::<PyBool>() {
        return Ok(OwnedValue::Bool(b.is_true()));
    }
    if let Ok(i) = v.cast::<PyInt>() {
        return i
            .extract::<i64>()
            .map(OwnedValue::Int)
            .map_err(|_| invalid(format!("label {k} does not fit in 64 bits")));
    }
    if let Ok(f) = v.cast::<PyFloat>() {
        return Ok(OwnedValue::Float(f.value()));
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(OwnedValue::Str(Arc::from(s.to_str()?)));
    }
    Err(invalid(format!(
        "label {k} must be a str, int, float or bool, got {}",
        v.get_type().name()?
    )))
}

fn metrics_from(d: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(Arc<str>, f64)>> {
    let Some(d) = d else { return Ok(Vec::new()) };
    let mut out = Vec::with_capacity(d.len());
    for (k, v) in d.iter() {
        let key: Arc<str> = match k.cast::<PyString>() {
            Ok(s) => Arc::from(s.to_str()?),
            Err(_) => {
                return Err(invalid(format!(
                    "metric names must be strings, got {}",
                    k.get_type().name()?
                )));
            }
        };
        let is_number = (v.cast::<PyFloat>().is_ok() || v.cast::<PyInt>().is_ok())
            && v.cast::<PyBool>().is_err();
        let x: f64 = if is_number {
            v.extract()
                .map_err(|_| invalid(format!("metric {key:?} must be finite, got {v}")))?
        } else {
            // numpy scalars and other numbers convert through __float__.
            match v.call_method0("__float__").and_then(|f| f.extract::<f64>()) {
                Ok(x) if v.cast::<PyBool>().is_err() && v.cast::<PyString>().is_err() => x,
                _ => {
                    return Err(invalid(format!(
                        "metric {key:?} must be a number, got {}",
                        v.get_type().name()?
                    )));
                }
            }
        };
        if !x.is_finite() {
            return Err(invalid(format!("metric {key:?} must be finite, got {x}")));
        }
        out.push((key, x));
    }
    Ok(out)
}

/// The fields of a new record, as `runstash.Store` passes them: a tuple
/// `(kind, labels, metrics, run_id, graph_id, node_id, project_id, pin, mime)`.
#[derive(FromPyObject)]
struct MetaArgs<'py>(
    String,
    Option<Bound<'py, PyDict>>,
    Option<Bound<'py, PyDict>>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    bool,
    Option<String>,
);

impl MetaArgs<'_> {
    fn into_meta(self) -> PyResult<RecordMeta> {
        Ok(RecordMeta {
            kind: self.0,
            labels: labels_from(self.1.as_ref())?,
            metrics: metrics_from(self.2.as_ref())?,
            run_id: self.3,
            graph_id: self.4,
            node_id: self.5,
            project_id: self.6,
            pinned: self.7,
            mime: self.8,
            uri: None,
        })
    }
}

/// A query filter as `runstash.Store` passes it: a tuple
/// `(kind, labels, run_id, graph_id, node_id, project_id, pinned)`.
#[derive(FromPyObject)]
struct FilterArgs<'py>(
    Option<String>,
    Option<Bound<'py, PyDict>>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<bool>,
);

impl FilterArgs<'_> {
    fn into_filter(self) -> PyResult<Filter> {
        let labels = labels_from(self.1.as_ref())?
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        Ok(Filter {
            kind: self.0,
            labels,
            run_id: self.2,
            graph_id: self.3,
            node_id: self.4,
            project_id: self.5,
            pinned: self.6,
        })
    }
}

fn parse_id(id: &str) -> PyResult<ArtifactId> {
    id.parse().py_err()
}

// ---------------------------------------------------------------------------------------------
// Store

/// The one artifact a write made, as Python's `Artifact`.
fn first_artifact(
    recs: core::Result<Vec<OwnedRecord>>,
    uri_prefix: &Arc<str>,
) -> PyResult<PyArtifact> {
    let rec = recs
        .py_err()?
        .into_iter()
        .next()
        .ok_or_else(|| invalid("no record".into()))?;
    Ok(PyArtifact::new(rec, uri_prefix))
}

fn to_artifacts(recs: Vec<OwnedRecord>, uri_prefix: &Arc<str>) -> Vec<PyArtifact> {
    recs.into_iter()
        .map(|r| PyArtifact::new(r, uri_prefix))
        .collect()
}

/// The engine's store handle. Python code uses `runstash.Store`, which wraps this.
#[pyclass(frozen, module = "runstash._core", name = "CoreStore")]
struct PyStore {
    inner: core::Store,
}

impl PyStore {
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
        let d = if r.starts_with("file://") {
            self.inner.digest_from_uri(r)
        } else if r.contains(':') {
            r.parse::<Digest>()
        } else {
            format!("{}:{r}", self.inner.blobs().algo()).parse::<Digest>()
        }
        .py_err()?;
        self.inner.blobs().check_digest(&d).py_err()?;
        Ok(d)
    }
}

#[pymethods]
impl PyStore {
    #[new]
    #[pyo3(signature = (root, hash = None, durability = "fsync", pack_max = core::store::DEFAULT_PACK_MAX))]
    fn new(
        py: Python<'_>,
        root: PathBuf,
        hash: Option<&str>,
        durability: &str,
        pack_max: u64,
    ) -> PyResult<Self> {
        let opts = core::OpenOptions {
            hash: hash.map(parse_algo).transpose()?,
            durability: durability.parse().py_err()?,
            pack_max,
        };
        let inner = py.detach(|| core::Store::open(&root, opts)).py_err()?;
        Ok(PyStore { inner })
    }

    #[getter]
    fn root(&self) -> String {
        self.inner.root().to_string_lossy().into_owned()
    }

    #[getter]
    fn hash_algo(&self) -> &'static str {
        self.inner.blobs().algo().name()
    }

    #[getter]
    fn durability(&self) -> &'static str {
        self.inner.blobs().durability().name()
    }

    #[getter]
    fn pack_max(&self) -> u64 {
        self.inner.pack_max()
    }

    #[getter]
    fn staging_dir(&self) -> String {
        self.inner
            .blobs()
            .staging_dir()
            .to_string_lossy()
            .into_owned()
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

    #[pyo3(signature = (ext = ""))]
    fn stage(&self, py: Python<'_>, ext: &str) -> PyResult<String> {
        let p = py.detach(|| self.inner.blobs().stage(ext)).py_err()?;
        Ok(p.to_string_lossy().into_owned())
    }

    #[pyo3(signature = (suffix = ""))]
    fn stage_dir(&self, py: Python<'_>, suffix: &str) -> PyResult<String> {
        let p = py
            .detach(|| self.inner.blobs().stage_dir(suffix))
            .py_err()?;
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
            store: WriterOwner::Local(Box::new(self.inner.clone())),
            meta,
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
        let recs = py
            .detach(|| {
                let size = self.inner.blob_size(&d)?;
                self.inner.record(d, size, &metas)
            })
            .py_err()?;
        Ok(self.artifacts(recs))
    }

    // -- index queries ---------------------------------------------------------------------

    fn get(&self, py: Python<'_>, id: &str) -> PyResult<Option<PyArtifact>> {
        let Ok(id) = id.parse::<ArtifactId>() else {
            return Ok(None);
        };
        let r = py
            .detach(|| self.inner.index().read(|m| m.get(id).map(|r| m.resolve(r))))
            .py_err()?;
        Ok(r.map(|r| PyArtifact::new(r, self.inner.blob_uri_prefix())))
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
        let recs = py
            .detach(|| {
                self.inner.index().read(|m| {
                    m.list(&f, limit)
                        .into_iter()
                        .map(|r| m.resolve(r))
                        .collect()
                })
            })
            .py_err()?;
        Ok(self.artifacts(recs))
    }

    fn count(&self, py: Python<'_>, filter: FilterArgs<'_>) -> PyResult<usize> {
        let f = filter.into_filter()?;
        py.detach(|| self.inner.index().read(|m| m.count(&f)))
            .py_err()
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
        let recs = py
            .detach(|| {
                self.inner.index().read(|m| {
                    m.top_k(&f, metric, mode, k)
                        .into_iter()
                        .map(|r| m.resolve(r))
                        .collect()
                })
            })
            .py_err()?;
        Ok(self.artifacts(recs))
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

    fn compact(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.index().compact()).py_err()
    }

    /// Every live record, oldest first, as columns:
    /// (scalar columns dict, labels list of dicts, metric names, metric value lists).
    fn columns<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let f = Filter::default();
        let recs: Vec<OwnedRecord> = py
            .detach(|| {
                self.inner
                    .index()
                    .read(|m| m.list(&f, None).into_iter().map(|r| m.resolve(r)).collect())
            })
            .py_err()?;
        columns_dict(py, &self.artifacts(recs))
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

    /// The path of a stored blob's file (a packed blob gets its file now).
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
        Ok(self.inner.uri_of(&d))
    }

    fn exists(&self, py: Python<'_>, r: &str) -> PyResult<bool> {
        let d = self.digest(r)?;
        Ok(py.detach(|| self.inner.has_blob(&d)))
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

    /// Re-hash every blob and compare with the index. `progress(done, total, bytes,
    /// total_bytes)` is called at most every 0.1 s and after the last blob; an exception it
    /// raises stops the check and propagates.
    #[pyo3(signature = (progress = None))]
    fn verify_report<'py>(
        &self,
        py: Python<'py>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
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
            self.inner.verify_report(&mut tick)
        });
        if let Some(e) = raised {
            return Err(e);
        }
        let r = r.py_err()?;
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
        if !grace.is_finite() || grace < 0.0 {
            return Err(invalid(format!(
                "grace must be a finite, non-negative number of seconds, got {grace}"
            )));
        }
        let grace = std::time::Duration::from_secs_f64(grace);
        let assume = assume_deleted
            .iter()
            .map(|id| parse_id(id))
            .collect::<PyResult<std::collections::HashSet<_>>>()?;
        let r = py
            .detach(|| self.inner.gc_assuming_deleted(dry_run, grace, &assume))
            .py_err()?;
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
        Ok(d)
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
        let k = count_arg("k", k)?;
        let f = filter.into_filter()?;
        let mode: Mode = mode.parse().py_err()?;
        let per: core::Per = per.parse().py_err()?;
        let plan = py
            .detach(|| self.inner.keep_best(&f, metric, mode, k, per, dry_run))
            .py_err()?;
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
}

/// Artifacts as columns: (scalar columns dict, labels list of dicts, metric names, metric
/// value lists).
fn columns_dict<'py>(py: Python<'py>, arts: &[PyArtifact]) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    macro_rules! col {
        ($name:literal, $f:expr) => {
            out.set_item($name, arts.iter().map($f).collect::<Vec<_>>())?;
        };
    }
    col!("id", |a| a.id());
    col!("kind", |a| a.kind().to_string());
    col!("uri", |a| a.uri_string());
    col!("hash", |a| a.hash());
    col!("size", |a| a.size());
    col!("mime", |a| a.mime().map(str::to_string));
    col!("created_us", |a| a.created_us());
    col!("run_id", |a| a.run_id().map(str::to_string));
    col!("graph_id", |a| a.graph_id().map(str::to_string));
    col!("node_id", |a| a.node_id().map(str::to_string));
    col!("project_id", |a| a.project_id().map(str::to_string));
    col!("pinned", |a| a.pinned());
    let labels = arts
        .iter()
        .map(|a| a.labels(py))
        .collect::<PyResult<Vec<_>>>()?;
    out.set_item("labels", labels)?;
    let mut names: Vec<Arc<str>> = arts
        .iter()
        .flat_map(|a| a.rec.metrics.iter().map(|(k, _)| k.clone()))
        .collect();
    names.sort();
    names.dedup();
    let metrics = PyDict::new(py);
    for n in &names {
        let col: Vec<Option<f64>> = arts
            .iter()
            .map(|a| a.rec.metrics.iter().find(|(k, _)| k == n).map(|&(_, v)| v))
            .collect();
        metrics.set_item(&**n, col)?;
    }
    out.set_item("metrics", metrics)?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Streaming writer

/// A blob write in progress. `runstash.Store.writer()` wraps it in a Python file object.
#[pyclass(frozen, module = "runstash._core", name = "CoreWriter")]
struct PyWriter {
    inner: Mutex<Option<core::BlobWriter>>,
    store: WriterOwner,
    meta: RecordMeta,
}

/// The store a writer commits into.
enum WriterOwner {
    Local(Box<core::Store>),
    #[cfg(feature = "s3")]
    Remote(core::remote::RemoteStore),
}

impl WriterOwner {
    fn commit(&self, w: core::BlobWriter, meta: &RecordMeta) -> core::Result<Vec<OwnedRecord>> {
        match self {
            WriterOwner::Local(s) => s.commit_writer(w, std::slice::from_ref(meta)),
            #[cfg(feature = "s3")]
            WriterOwner::Remote(s) => s.commit_writer(w, std::slice::from_ref(meta)),
        }
    }

    fn uri_prefix(&self) -> &Arc<str> {
        match self {
            WriterOwner::Local(s) => s.blob_uri_prefix(),
            #[cfg(feature = "s3")]
            WriterOwner::Remote(s) => s.blob_uri_prefix(),
        }
    }
}

/// A count argument (a limit, a `k`): non-negative, else `InvalidArgumentError`.
pub(crate) fn count_arg(name: &str, n: i64) -> PyResult<usize> {
    usize::try_from(n)
        .map_err(|_| invalid(format!("{name} must be a non-negative integer, got {n}")))
}

fn closed_err() -> PyErr {
    PyValueError::new_err("I/O operation on a closed runstash writer")
}

#[pymethods]
impl PyWriter {
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        with_buffer(py, data, |b| {
            let mut g = self.inner.lock();
            let w = g.as_mut().ok_or(None)?;
            w.write_all(b).map_err(Some)?;
            Ok(b.len())
        })?
        .map_err(|e: Option<core::Error>| e.map_or_else(closed_err, to_pyerr))
    }

    #[pyo3(signature = (offset, whence = 0))]
    fn seek(&self, offset: i64, whence: i32) -> PyResult<u64> {
        let mut g = self.inner.lock();
        let w = g.as_mut().ok_or_else(closed_err)?;
        let to = match whence {
            0 => SeekFrom::Start(
                u64::try_from(offset)
                    .map_err(|_| PyValueError::new_err("negative seek position"))?,
            ),
            1 => SeekFrom::Current(offset),
            2 => SeekFrom::End(offset),
            _ => {
                return Err(PyValueError::new_err(format!(
                    "invalid whence ({whence}, should be 0, 1 or 2)"
                )));
            }
        };
        w.seek(to).py_err()
    }

    fn tell(&self) -> PyResult<u64> {
        let g = self.inner.lock();
        Ok(g.as_ref().ok_or_else(closed_err)?.position())
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.lock().is_none()
    }

    /// Hash (streamed, or re-read after seeks), publish, record, and return the artifact.
    fn commit(&self, py: Python<'_>) -> PyResult<PyArtifact> {
        let w = self.inner.lock().take().ok_or_else(closed_err)?;
        let recs = py.detach(|| self.store.commit(w, &self.meta));
        first_artifact(recs, self.store.uri_prefix())
    }

    /// Throw the bytes away; nothing is left on disk. Idempotent.
    fn abort(&self, py: Python<'_>) {
        let w = self.inner.lock().take();
        py.detach(|| drop(w));
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(hash_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(hash_file, m)?)?;
    m.add_function(wrap_pyfunction!(write_atomic, m)?)?;
    m.add_class::<PyArtifact>()?;
    m.add_class::<PyStore>()?;
    m.add_class::<PyWriter>()?;
    #[cfg(feature = "s3")]
    m.add_class::<remote::PyRemoteStore>()?;
    m.add("FORMAT_VERSION", core::FORMAT_VERSION)?;
    Ok(())
}
