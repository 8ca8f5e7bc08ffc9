//! `runstash._core`: the PyO3 face of runstash-core. It converts types, releases the GIL around
//! every syscall and hash, and maps engine errors to the exception classes of
//! `runstash.errors`. It holds no logic of its own.
//!
//! One file per idea: [`errors`], [`aio`] (awaitables completed from runstash's threads),
//! [`functions`] (module functions, buffers), [`args`] (keyword arguments into core types),
//! [`artifact`], [`store`] (`CoreStore`, over any
//! `runstash_core::ArtifactStore`), `open` (`open_s3`, feature `s3`), [`writer`]
//! (`CoreWriter`), [`reports`] (reports as dicts). Each imports what it needs from here with
//! `use super::*`.

use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyString, PyType};

mod aio;
mod args;
mod artifact;
mod errors;
mod functions;
#[cfg(feature = "s3")]
mod open;
mod reports;
mod store;
mod writer;

use runstash_core as core;
use runstash_core::index::{ArtifactId, Filter, Mode, OwnedRecord, OwnedValue, RecordMeta};
use runstash_core::{ArtifactStore, Digest, Durability, ErrorKind, HashAlgo};

use args::*;
use artifact::*;
use errors::*;
use functions::*;
use reports::*;
use store::*;
use writer::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(hash_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(hash_file, m)?)?;
    m.add_function(wrap_pyfunction!(write_atomic, m)?)?;
    aio::register(m)?;
    m.add_class::<PyArtifact>()?;
    m.add_class::<PyStore>()?;
    m.add_class::<PyWriter>()?;
    #[cfg(feature = "s3")]
    m.add_function(wrap_pyfunction!(open::open_s3, m)?)?;
    m.add("FORMAT_VERSION", core::FORMAT_VERSION)?;
    m.add("TREE_MIME", core::TREE_MIME)?;
    Ok(())
}
