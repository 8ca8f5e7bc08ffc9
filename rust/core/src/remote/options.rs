//! How to reach the bucket (`RemoteOptions`, `s3://` URLs) and object-store errors as
//! runstash errors.

use super::*;

/// How to reach the bucket, and how the store behaves.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// `s3://bucket` or `s3://bucket/prefix`.
    pub url: String,
    /// The S3 endpoint (`http://127.0.0.1:8333` for a local SeaweedFS); AWS when `None`.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Credentials; `None` takes them from the usual `AWS_*` environment variables.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// Allow `http://` endpoints; `None`: allowed when the endpoint is `http://`.
    pub allow_http: Option<bool>,
    /// Virtual-hosted-style requests (`bucket.host`) instead of path-style (`host/bucket`).
    pub virtual_hosted: bool,
    /// Local cache directory (fetched blobs, segments with packed bytes).
    pub cache_dir: PathBuf,
    pub hash: Option<HashAlgo>,
    pub durability: Durability,
    pub pack_max: u64,
    /// Queries refresh from the bucket when the last refresh is older than this.
    pub max_staleness: Duration,
    /// Retries of a failed request, and the time limit of one request.
    pub max_retries: usize,
    pub request_timeout: Duration,
    /// The gc lease of a new store (kept in its `STORE.json`; an existing store keeps its
    /// own): `None` is [`DEFAULT_GC_LEASE`]. See [`super::gc`].
    pub gc_lease: Option<Duration>,
    /// Create the store when the prefix holds none; `false`: that is a `NotFound` error and
    /// nothing is written.
    pub create: bool,
}

/// Default gc lease: a writer stores a record within this long of confirming its blob, and
/// a gc deletes a blob no sooner than 1.25 times this after marking it.
pub const DEFAULT_GC_LEASE: Duration = Duration::from_secs(600);

pub(super) fn obj_err(op: &str, key: &str, e: object_store::Error) -> Error {
    let text = e.to_string();
    match e {
        object_store::Error::NotFound { .. } if text.contains("NoSuchBucket") => {
            Error::not_found(format!("{op} {key}: the bucket does not exist"))
        }
        object_store::Error::NotFound { .. } => {
            Error::not_found(format!("{op} {key}: not found in the bucket"))
        }
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => Error::new(
            ErrorKind::Io,
            format!("{op} {key}: access denied (check the credentials): {text}"),
        ),
        e => Error::new(ErrorKind::Io, format!("{op} {key}: {e}")),
    }
}

/// Whether plain-HTTP endpoints are allowed: as asked, else `AWS_ALLOW_HTTP`, else when the
/// endpoint (given, or `AWS_ENDPOINT_URL` / `AWS_ENDPOINT`) is an `http://` URL.
pub(super) fn allow_http(opts: &RemoteOptions) -> bool {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(a) = opts.allow_http {
        return a;
    }
    if let Some(v) = env("AWS_ALLOW_HTTP") {
        return matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on");
    }
    opts.endpoint
        .clone()
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .or_else(|| env("AWS_ENDPOINT"))
        .is_some_and(|e| e.starts_with("http://"))
}

pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Splits `s3://bucket/prefix` into the bucket and `prefix/` (or "").
pub fn parse_url(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| Error::invalid(format!("not an s3:// URL: {url:?}")))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(Error::invalid(format!("no bucket in {url:?}")));
    }
    let prefix = prefix.trim_matches('/');
    for part in prefix.split('/').filter(|p| !p.is_empty()) {
        crate::paths::validate_component(part, "s3 prefix component")?;
        // Keys are used as written: characters an S3 client would percent-encode are refused
        // rather than stored under a name other tools would not find.
        if let Some(c) = part
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-_.=+@,!".contains(*c)))
        {
            return Err(Error::invalid(format!(
                "s3 prefix {prefix:?}: {c:?} is not allowed (letters, digits and - _ . = + @ , !)"
            )));
        }
    }
    let prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    Ok((bucket.to_string(), prefix))
}
