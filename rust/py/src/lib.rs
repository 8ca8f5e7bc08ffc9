//! `runstash._core`: the PyO3 face of runstash-core. It converts types, releases the GIL around
//! every syscall and hash, and maps engine errors to the exception classes of
//! `runstash.errors`. It holds no logic of its own.

use std::io::SeekFrom;
use std::path::PathBuf;

use parking_lot::Mutex;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyType};

use runstash_core as core;
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
        // OSError subclasses take (errno, strerror) and then expose .errno / .strerror.
        let made = match e.os_errno() {
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
// Blob descriptor

/// What a write stored: the content hash, size, URI and path of a blob.
#[pyclass(
    frozen,
    module = "runstash._core",
    name = "Blob",
    eq,
    hash,
    skip_from_py_object
)]
#[derive(PartialEq, Eq, Hash, Clone)]
struct PyBlob {
    #[pyo3(get)]
    hash: String,
    #[pyo3(get)]
    size: u64,
    #[pyo3(get)]
    uri: String,
    #[pyo3(get)]
    path: String,
    #[pyo3(get)]
    created: bool,
}

#[pymethods]
impl PyBlob {
    fn __repr__(&self) -> String {
        format!(
            "Blob(hash={:?}, size={}, uri={:?})",
            self.hash, self.size, self.uri
        )
    }
}

fn blob(store: &core::Store, info: core::BlobInfo) -> PyBlob {
    PyBlob {
        hash: info.digest.to_string(),
        size: info.size,
        uri: store.uri_of(&info.digest),
        path: info.path.to_string_lossy().into_owned(),
        created: info.created,
    }
}

// ---------------------------------------------------------------------------------------------
// Store

/// The engine's store handle. Python code uses `runstash.Store`, which wraps this.
#[pyclass(frozen, module = "runstash._core", name = "CoreStore")]
struct PyStore {
    inner: core::Store,
}

impl PyStore {
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
    #[pyo3(signature = (root, hash = None, durability = "fsync"))]
    fn new(py: Python<'_>, root: PathBuf, hash: Option<&str>, durability: &str) -> PyResult<Self> {
        let opts = core::OpenOptions {
            hash: hash.map(parse_algo).transpose()?,
            durability: durability.parse().py_err()?,
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
    fn staging_dir(&self) -> String {
        self.inner
            .blobs()
            .staging_dir()
            .to_string_lossy()
            .into_owned()
    }

    fn put_bytes(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<PyBlob> {
        let info = with_buffer(py, data, |b| self.inner.blobs().put_bytes(b))?.py_err()?;
        Ok(blob(&self.inner, info))
    }

    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<PyBlob> {
        let info = py.detach(|| self.inner.blobs().save(&path)).py_err()?;
        Ok(blob(&self.inner, info))
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

    fn ingest(&self, py: Python<'_>, staged: PathBuf) -> PyResult<PyBlob> {
        let info = py.detach(|| self.inner.blobs().ingest(&staged)).py_err()?;
        Ok(blob(&self.inner, info))
    }

    #[pyo3(signature = (ext = ""))]
    fn writer(&self, py: Python<'_>, ext: &str) -> PyResult<PyWriter> {
        let w = py.detach(|| self.inner.blobs().writer(ext)).py_err()?;
        Ok(PyWriter {
            inner: Mutex::new(Some(w)),
            store: self.inner.clone(),
        })
    }

    #[pyo3(signature = (r, verify = false))]
    fn read_bytes<'py>(
        &self,
        py: Python<'py>,
        r: &str,
        verify: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let d = self.digest(r)?;
        let data = py.detach(|| self.inner.blobs().read(&d, verify)).py_err()?;
        Ok(PyBytes::new(py, &data))
    }

    fn path_of(&self, r: &str) -> PyResult<String> {
        let d = self.digest(r)?;
        Ok(self
            .inner
            .blobs()
            .path_of(&d)
            .to_string_lossy()
            .into_owned())
    }

    fn uri_of(&self, r: &str) -> PyResult<String> {
        let d = self.digest(r)?;
        Ok(self.inner.uri_of(&d))
    }

    fn exists(&self, py: Python<'_>, r: &str) -> PyResult<bool> {
        let d = self.digest(r)?;
        Ok(py.detach(|| self.inner.blobs().exists(&d)))
    }

    fn verify(&self, py: Python<'_>, r: &str) -> PyResult<bool> {
        let d = self.digest(r)?;
        py.detach(|| self.inner.blobs().verify(&d)).py_err()
    }

    /// Re-hash every blob: (checked, corrupt paths, stray paths).
    fn verify_all(&self, py: Python<'_>) -> PyResult<(u64, Vec<String>, Vec<String>)> {
        let r = py.detach(|| self.inner.blobs().verify_all()).py_err()?;
        let s = |v: Vec<PathBuf>| {
            v.into_iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect()
        };
        Ok((r.checked, s(r.corrupt), s(r.stray)))
    }
}

// ---------------------------------------------------------------------------------------------
// Streaming writer

/// A blob write in progress. `runstash.Store.writer()` wraps it in a Python file object.
#[pyclass(frozen, module = "runstash._core", name = "CoreWriter")]
struct PyWriter {
    inner: Mutex<Option<core::BlobWriter>>,
    store: core::Store,
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

    /// Hash (streamed, or re-read after seeks), publish, and return the blob.
    fn commit(&self, py: Python<'_>) -> PyResult<PyBlob> {
        let w = self.inner.lock().take().ok_or_else(closed_err)?;
        let info = py.detach(|| w.commit()).py_err()?;
        Ok(blob(&self.store, info))
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
    m.add_class::<PyBlob>()?;
    m.add_class::<PyStore>()?;
    m.add_class::<PyWriter>()?;
    m.add("FORMAT_VERSION", core::store::FORMAT_VERSION)?;
    Ok(())
}
