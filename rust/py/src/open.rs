//! `open_s3`: a `CoreStore` on an S3 bucket (feature `s3`). The local store opens with
//! `CoreStore(root, ...)`; both give the same class.

use std::time::Duration;

use super::*;
use runstash_core::remote::{RemoteOptions, RemoteStore};

/// A duration argument in seconds: 0 to one day, else `InvalidArgumentError`.
fn secs(v: f64, what: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| d.as_secs() <= 86_400)
        .ok_or_else(|| invalid(format!("{what} must be 0 to 86400 seconds, got {v}")))
}

/// Opens (or, with `create`, makes) the store at `url` (`s3://bucket/prefix`), caching blobs
/// and index objects in `cache_dir`. The options are those of `runstash.S3Options`.
#[pyfunction]
#[pyo3(signature = (
    url, cache_dir, hash = None, durability = "fsync",
    pack_max = core::store::DEFAULT_PACK_MAX, endpoint = None, region = None,
    access_key_id = None, secret_access_key = None, session_token = None,
    allow_http = None, virtual_hosted = false, max_staleness = 1.0, max_retries = 3,
    request_timeout = 30.0, gc_lease = None, create = true,
))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn open_s3(
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
) -> PyResult<PyStore> {
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
    Ok(PyStore {
        inner: Arc::new(inner),
    })
}
