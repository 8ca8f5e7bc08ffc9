//! Engine errors as the exception classes of `runstash.errors`, and `.py_err()` to convert a
//! core result.

use super::*;

pub(crate) static ERROR_CLASSES: PyOnceLock<[Py<PyType>; 6]> = PyOnceLock::new();

pub(crate) fn error_classes(py: Python<'_>) -> PyResult<&[Py<PyType>; 6]> {
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

pub(crate) fn to_pyerr(e: core::Error) -> PyErr {
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

pub(crate) trait IntoPy<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for core::Result<T> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_pyerr)
    }
}

pub(crate) fn invalid(msg: String) -> PyErr {
    to_pyerr(core::Error::invalid(msg))
}
