//! The module's free functions (hashing, atomic writes) and the buffer helper that hashes or
//! writes any C-contiguous Python buffer without copying it.

use super::*;

/// Runs `f` on the raw bytes of any C-contiguous buffer (bytes, bytearray, memoryview of any
/// format, numpy arrays of any dtype, pyarrow buffers), with the GIL released and without a
/// copy. For `bytes` no buffer export is made. A buffer that is not C-contiguous (a strided
/// view, a Fortran-order array) is refused with a hint, never copied behind the caller's back.
pub(crate) fn with_buffer<R: Send>(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    f: impl FnOnce(&[u8]) -> R + Send,
) -> PyResult<R> {
    if let Ok(b) = data.cast::<PyBytes>() {
        let slice = b.as_bytes();
        return Ok(py.detach(|| f(slice)));
    }
    let buf = PyUntypedBuffer::get(data).map_err(|e| {
        let kind = data
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "object".into());
        PyTypeError::new_err(format!(
            "expected bytes or an object with the buffer protocol (bytearray, memoryview, \
             numpy array), not {kind}: {e}"
        ))
    })?;
    if !buf.is_c_contiguous() {
        return Err(PyValueError::new_err(
            "buffer is not C-contiguous (a strided view or a Fortran-order array); pass \
             numpy.ascontiguousarray(x) (or bytes(x)) to store its bytes in C order",
        ));
    }
    // Safety: the buffer export keeps the exporter's memory alive and pinned until it is
    // released, after `f` returns; a C-contiguous buffer's `len_bytes` bytes are one run from
    // `buf_ptr`. A mutable exporter (bytearray) changed by another thread meanwhile yields a
    // hash of whatever bytes were read; the documented contract is not to do that.
    let len = buf.len_bytes();
    let slice: &[u8] = if len == 0 {
        &[]
    } else {
        unsafe { std::slice::from_raw_parts(buf.buf_ptr() as *const u8, len) }
    };
    let out = py.detach(|| f(slice));
    drop(buf);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Free functions

pub(crate) fn parse_algo(algo: &str) -> PyResult<HashAlgo> {
    algo.parse().py_err()
}

/// hash_bytes(data, algo="blake3") -> str: "<algo>:<hex>" digest of a buffer, GIL released.
#[pyfunction]
#[pyo3(signature = (data, algo = "blake3"))]
pub(crate) fn hash_bytes(py: Python<'_>, data: &Bound<'_, PyAny>, algo: &str) -> PyResult<String> {
    let algo = parse_algo(algo)?;
    with_buffer(py, data, |b| core::hash_bytes(algo, b).to_string())
}

/// hash_file(path, algo="blake3") -> str: digest of a file (memory-mapped, all cores).
#[pyfunction]
#[pyo3(signature = (path, algo = "blake3"))]
pub(crate) fn hash_file(py: Python<'_>, path: PathBuf, algo: &str) -> PyResult<String> {
    let algo = parse_algo(algo)?;
    py.detach(|| core::hash_file(algo, &path))
        .py_err()
        .map(|(d, _)| d.to_string())
}

/// write_atomic(path, data, durability="fsync"): replace a file atomically.
#[pyfunction]
#[pyo3(signature = (path, data, durability = "fsync"))]
pub(crate) fn write_atomic(
    py: Python<'_>,
    path: PathBuf,
    data: &Bound<'_, PyAny>,
    durability: &str,
) -> PyResult<()> {
    let durability: Durability = durability.parse().py_err()?;
    with_buffer(py, data, |b| core::write_atomic(&path, b, durability))?.py_err()
}
