//! `CoreWriter`: a streaming blob write into a local or S3 store.

use super::*;

/// A blob write in progress. `runstash.Store.writer()` wraps it in a Python file object.
#[pyclass(frozen, module = "runstash._core", name = "CoreWriter")]
pub(crate) struct PyWriter {
    pub(crate) inner: Mutex<Option<core::BlobWriter>>,
    /// The store it commits into.
    pub(crate) store: Arc<dyn ArtifactStore>,
    /// The record it makes; `add_labels` / `add_metrics` extend it until the commit.
    pub(crate) meta: Mutex<RecordMeta>,
}

/// `into` with `add`'s keys set to `add`'s values (a key already there takes the new value).
fn merge<V>(into: &mut Vec<(Arc<str>, V)>, add: Vec<(Arc<str>, V)>) {
    for (k, v) in add {
        match into.iter_mut().find(|(have, _)| *have == k) {
            Some(slot) => slot.1 = v,
            None => into.push((k, v)),
        }
    }
}

/// A count argument (a limit, a `k`): non-negative, else `InvalidArgumentError`.
pub(crate) fn count_arg(name: &str, n: i64) -> PyResult<usize> {
    usize::try_from(n)
        .map_err(|_| invalid(format!("{name} must be a non-negative integer, got {n}")))
}

pub(crate) fn closed_err() -> PyErr {
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

    /// Labels for the artifact this write makes (checked now; a key given again takes the
    /// new value).
    fn add_labels(&self, labels: &Bound<'_, PyDict>) -> PyResult<()> {
        let add = labels_from(Some(labels))?;
        if self.inner.lock().is_none() {
            return Err(closed_err());
        }
        merge(&mut self.meta.lock().labels, add);
        Ok(())
    }

    /// Metrics for the artifact this write makes (finite numbers, checked now).
    fn add_metrics(&self, metrics: &Bound<'_, PyDict>) -> PyResult<()> {
        let add = metrics_from(Some(metrics))?;
        if self.inner.lock().is_none() {
            return Err(closed_err());
        }
        merge(&mut self.meta.lock().metrics, add);
        Ok(())
    }

    /// Hash (streamed, or re-read after seeks), publish, record, and return the artifact.
    fn commit(&self, py: Python<'_>) -> PyResult<PyArtifact> {
        let w = self.inner.lock().take().ok_or_else(closed_err)?;
        let meta = self.meta.lock().clone();
        let recs = py.detach(|| self.store.commit_writer(w, std::slice::from_ref(&meta)));
        first_artifact(recs, self.store.blob_uri_prefix())
    }

    /// Throw the bytes away; nothing is left on disk. Idempotent.
    fn abort(&self, py: Python<'_>) {
        let w = self.inner.lock().take();
        py.detach(|| drop(w));
    }
}
