//! `Artifact`: the Python view of one record (and record lists as columns for export).

use super::*;

/// A stored artifact: the index record of one write. Immutable; `Store.pin` returns a new one.
#[pyclass(
    frozen,
    module = "runstash._core",
    name = "Artifact",
    skip_from_py_object
)]
pub(crate) struct PyArtifact {
    pub(crate) rec: OwnedRecord,
    /// `file://` URI of the store's `blobs/` directory, ending in `/`.
    pub(crate) uri_prefix: Arc<str>,
}

pub(crate) fn value_to_py<'py>(py: Python<'py>, v: &OwnedValue) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        OwnedValue::Str(s) => PyString::new(py, s).into_any(),
        OwnedValue::Int(i) => i.into_pyobject(py)?.into_any(),
        OwnedValue::Float(f) => PyFloat::new(py, *f).into_any(),
        OwnedValue::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
    })
}

pub(crate) fn opt_str(s: &Option<Arc<str>>) -> Option<&str> {
    s.as_deref()
}

impl PyArtifact {
    pub(crate) fn new(rec: OwnedRecord, uri_prefix: &Arc<str>) -> Self {
        PyArtifact {
            rec,
            uri_prefix: uri_prefix.clone(),
        }
    }

    pub(crate) fn uri_string(&self) -> String {
        match &self.rec.uri {
            Some(u) => u.to_string(),
            None => core::uri::blob_uri(&self.uri_prefix, &self.rec.digest),
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
    /// The SHA-256 hex digest of the bytes (AetherGraph's content id) on a store that hashes
    /// with SHA-256, else None: an attribute named after an algorithm never holds another
    /// algorithm's digest (`hash` always has the store's own, with its algorithm's name).
    #[getter]
    fn sha256(&self) -> Option<String> {
        (self.rec.digest.algo() == HashAlgo::Sha256).then(|| self.rec.digest.hex())
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

/// The one artifact a write made, as Python's `Artifact`.
pub(crate) fn first_artifact(
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

pub(crate) fn to_artifacts(recs: Vec<OwnedRecord>, uri_prefix: &Arc<str>) -> Vec<PyArtifact> {
    recs.into_iter()
        .map(|r| PyArtifact::new(r, uri_prefix))
        .collect()
}

/// Artifacts as columns: (scalar columns dict, labels list of dicts, metric names, metric
/// value lists).
pub(crate) fn columns_dict<'py>(
    py: Python<'py>,
    arts: &[PyArtifact],
) -> PyResult<Bound<'py, PyDict>> {
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
