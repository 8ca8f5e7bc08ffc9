//! A store on S3-compatible object storage (the `s3` feature), for writers on many machines.
//!
//! Layout under `s3://bucket/prefix/`:
//! - `STORE.json`: format and hash algorithm, written by the first opener.
//! - `blobs/<2 hex>/<rest>`: one object per blob larger than `pack_max`, named by its digest.
//!   Create-only: a blob that exists (a `HEAD` finds it) is not uploaded again. Those over
//!   [`MULTIPART_MIN`] go up in multipart uploads, parts in parallel; files over 16 MiB are
//!   streamed, their parts hashed as they are read.
//! - `log/<writer>/<seq>`: index segments ([`segment`]). Every open store is a writer with a
//!   random id and appends its operations as new immutable objects, so writers never contend.
//!   Small blobs are packed into the segment beside the records that name them: one request
//!   stores both. In `"fsync"` durability a write returns once its segment is stored, and
//!   concurrent writes of one process share a segment (group commit); in `"os"` durability
//!   writes are buffered and go up every [`BATCH_OPS`] operations or [`BATCH_BYTES`], and on
//!   [`RemoteStore::flush`] / close.
//! - `snap/<hlc>-<writer>`: snapshots: many segments in one object ([`RemoteStore::compact`]).
//!
//! Readers list `snap/` and `log/` and apply what they have not seen; the order does not
//! matter (see [`segment`] for the conflict rule). Blob bytes a reader fetched, and segments
//! holding packed bytes, are kept in a local cache directory, so a read is remote once.
//!
//! Invariant 2 (blob first, record second) holds across machines: a record goes into a
//! segment only after its blob object was stored, or in the same segment as its packed bytes.

pub mod segment;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parking_lot::{Condvar, Mutex};

use crate::atomic::Durability;
use crate::blobs::{BlobStore, BlobWriter};
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::hash::{Digest, HashAlgo, Hasher, hash_bytes, hash_file};
use crate::index::{ArtifactId, MemIndex, Op, OwnedRecord, RecordMeta, validate_new};
use segment::{Key, Ledger, SegmentBuf, decode_segment, decode_snapshot, encode_snapshot};

/// Operations a buffered (`"os"`) writer collects before it uploads a segment.
pub const BATCH_OPS: usize = 1000;
/// Bytes of frames a buffered writer collects before it uploads a segment.
pub const BATCH_BYTES: usize = 4 << 20;
/// Blobs larger than this go up as multipart uploads (S3's smallest part), their parts
/// several at a time: faster than one request on the servers measured.
pub const MULTIPART_MIN: usize = 5 << 20;
/// Part size of a blob held in memory, and of a file streamed from disk.
const MEM_PART: usize = 5 << 20;
const FILE_PART: usize = 8 << 20;
/// Files up to this size are read into memory whole (hashed and uploaded from there).
const READ_WHOLE_MAX: u64 = 16 << 20;
const FORMAT: u32 = 1;
/// Segments and blobs fetched at once by a refresh.
const FETCH_CONCURRENCY: usize = 16;

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
}

/// A store whose blobs and index live in an S3 bucket.
#[derive(Clone)]
pub struct RemoteStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The process that opened the store: a forked child has no runtime threads.
    pid: u32,
    rt: tokio::runtime::Runtime,
    s3: Arc<dyn ObjectStore>,
    /// `prefix/` (or empty): every key starts with it.
    prefix: String,
    url: String,
    uri_prefix: Arc<str>,
    algo: HashAlgo,
    durability: Durability,
    pack_max: u64,
    max_staleness: Duration,
    writer: Arc<str>,
    cache: BlobStore,
    segments_dir: PathBuf,
    state: Mutex<State>,
    commit: Mutex<Commit>,
    committed: Condvar,
}

#[derive(Default)]
struct State {
    ledger: Ledger,
    /// Segment and snapshot names applied.
    seen: HashSet<String>,
    /// Packed blobs: digest -> (cached segment file, offset, length).
    packed: std::collections::HashMap<[u8; 32], (Arc<Path>, u64, u64)>,
    /// Blob objects known to exist in the bucket.
    remote_blobs: HashSet<[u8; 32]>,
    /// The hybrid logical clock: never behind a segment applied here.
    hlc: u64,
    refreshed: Option<Instant>,
}

#[derive(Default)]
struct Commit {
    pending: SegmentBuf,
    /// Segments are numbered in the order they are taken from `pending`; the pending one has
    /// number `taken`. One upload runs at a time, so they finish in order: segment `n` is
    /// finished when `finished > n`.
    taken: u64,
    finished: u64,
    flushing: bool,
    /// Finished segments that failed: number -> (kind, message), kept for their waiters.
    failed: std::collections::BTreeMap<u64, (ErrorKind, String)>,
    /// `"os"` durability: segments whose upload failed. Their operations were acknowledged,
    /// so they are kept and retried by every `flush` (and `close`) until they are stored.
    stuck: Vec<(u64, SegmentBuf)>,
}

fn obj_err(op: &str, key: &str, e: object_store::Error) -> Error {
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
fn allow_http(opts: &RemoteOptions) -> bool {
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

fn now_ms() -> u64 {
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

impl RemoteStore {
    /// Opens (or creates) the store at `opts.url`: checks or writes `STORE.json`, then reads
    /// the index (snapshots and segments).
    pub fn open(opts: RemoteOptions) -> Result<RemoteStore> {
        let (bucket, prefix) = parse_url(&opts.url)?;
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            .with_virtual_hosted_style_request(opts.virtual_hosted)
            // No SHA-256 of every body for the signature: blobs are named by their own hash
            // and checked against it when fetched, and this saves a pass over every upload.
            .with_unsigned_payload(true)
            .with_retry(object_store::RetryConfig {
                max_retries: opts.max_retries,
                retry_timeout: opts.request_timeout * 2,
                backoff: object_store::BackoffConfig {
                    init_backoff: Duration::from_millis(50),
                    max_backoff: Duration::from_secs(2),
                    base: 2.0,
                },
            })
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_timeout(opts.request_timeout)
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_allow_http(allow_http(&opts)),
            );
        if let Some(e) = &opts.endpoint {
            b = b.with_endpoint(e);
        }
        if let Some(r) = &opts.region {
            b = b.with_region(r);
        }
        if let Some(k) = &opts.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(s) = &opts.secret_access_key {
            b = b.with_secret_access_key(s);
        }
        if let Some(t) = &opts.session_token {
            b = b.with_token(t);
        }
        let s3 = b
            .build()
            .map_err(|e| Error::invalid(format!("S3 settings for {}: {e}", opts.url)))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("runstash-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::io("start the S3 runtime", Path::new(&opts.url), e))?;

        let cache_root = opts.cache_dir.clone();
        for d in ["blobs", "staging", "segments"] {
            let p = cache_root.join(d);
            std::fs::create_dir_all(&p).ctx("create cache directory", &p)?;
        }
        let cache_root = cache_root.canonicalize().ctx("resolve", &opts.cache_dir)?;
        let mut writer_bytes = [0u8; 8];
        getrandom_bytes(&mut writer_bytes);
        let writer: Arc<str> = Arc::from(
            writer_bytes
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
        );
        let s3: Arc<dyn ObjectStore> = Arc::new(s3);
        let algo = store_meta(&rt, &*s3, &prefix, &opts.url, opts.hash)?;
        let inner = Inner {
            pid: std::process::id(),
            rt,
            s3,
            uri_prefix: Arc::from(format!("s3://{bucket}/{prefix}blobs/")),
            prefix,
            url: opts.url.clone(),
            algo,
            durability: opts.durability,
            pack_max: opts.pack_max.min(crate::store::PACK_MAX_LIMIT),
            max_staleness: opts.max_staleness,
            writer,
            // The cache is a local blob store without an index (its own durability: "os";
            // the bucket is the copy that counts).
            segments_dir: cache_root.join("segments"),
            cache: BlobStore::new(cache_root, algo, Durability::Os),
            state: Mutex::new(State::default()),
            commit: Mutex::new(Commit::default()),
            committed: Condvar::new(),
        };
        let store = RemoteStore {
            inner: Arc::new(inner),
        };
        store.refresh()?;
        Ok(store)
    }

    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// An error in a process forked after the store was opened (its runtime threads and
    /// connections stayed in the parent): open the store again in the child.
    fn alive(&self) -> Result<()> {
        if self.inner.pid == std::process::id() {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "the S3 store {} was opened in process {} before a fork: open it again in this \
                 process",
                self.inner.url, self.inner.pid
            )))
        }
    }

    pub fn algo(&self) -> HashAlgo {
        self.inner.algo
    }

    pub fn durability(&self) -> Durability {
        self.inner.durability
    }

    pub fn pack_max(&self) -> u64 {
        self.inner.pack_max
    }

    /// This process's writer id (its segments are `log/<writer>/...`).
    pub fn writer_id(&self) -> &str {
        &self.inner.writer
    }

    pub fn cache_dir(&self) -> &Path {
        self.inner.cache.root()
    }

    /// `s3://bucket/prefix/blobs/`: a blob's URI is this, then `<2 hex>/<rest>`.
    pub fn blob_uri_prefix(&self) -> &Arc<str> {
        &self.inner.uri_prefix
    }

    /// Checks a new record's fields before any byte is written.
    pub fn check_meta(&self, meta: &RecordMeta) -> Result<()> {
        let probe = meta.to_record(ArtifactId(0), 0, Digest::new(self.inner.algo, [0; 32]), 0);
        validate_new(&probe)
    }

    /// A digest from a blob URI of this store.
    pub fn digest_from_uri(&self, uri: &str) -> Result<Digest> {
        let rest = uri.strip_prefix(&*self.inner.uri_prefix).ok_or_else(|| {
            Error::invalid(format!(
                "{uri} does not belong to this store ({})",
                self.inner.uri_prefix
            ))
        })?;
        let hex: String = rest.chars().filter(|&c| c != '/').collect();
        format!("{}:{hex}", self.inner.algo.name()).parse()
    }

    // -- writes -----------------------------------------------------------------------------

    /// Stores bytes and records them. Up to `pack_max` bytes go into the index segment with
    /// the records; larger payloads become a blob object first.
    pub fn put_bytes(&self, data: &[u8], metas: &[RecordMeta]) -> Result<Vec<OwnedRecord>> {
        self.alive()?;
        let digest = hash_bytes(self.inner.algo, data);
        if (data.len() as u64) <= self.inner.pack_max {
            return self.record_ops(digest, data.len() as u64, metas, Some(data));
        }
        self.inner
            .upload_bytes(&digest, Bytes::copy_from_slice(data))?;
        self.record_ops(digest, data.len() as u64, metas, None)
    }

    /// [`put_bytes`](Self::put_bytes) of a buffer this store may keep (no copy for upload).
    fn put_vec(&self, data: Vec<u8>, metas: &[RecordMeta]) -> Result<Vec<OwnedRecord>> {
        if (data.len() as u64) <= self.inner.pack_max {
            return self.put_bytes(&data, metas);
        }
        let digest = hash_bytes(self.inner.algo, &data);
        let size = data.len() as u64;
        self.inner.upload_bytes(&digest, Bytes::from(data))?;
        self.record_ops(digest, size, metas, None)
    }

    /// Stores a copy of the file at `src` (left untouched) and records it. A large file is
    /// hashed first, then read again in parts that are hashed as they go up: if the file
    /// changed in between, the upload is aborted and nothing is recorded.
    pub fn save(&self, src: &Path, metas: &[RecordMeta]) -> Result<Vec<OwnedRecord>> {
        self.alive()?;
        let meta = std::fs::metadata(src).ctx("stat", src)?;
        if meta.is_dir() {
            return Err(Error::invalid(format!(
                "cannot save {}: it is a directory",
                src.display()
            )));
        }
        if meta.len() <= READ_WHOLE_MAX {
            let data = std::fs::read(src).ctx("read", src)?;
            return self.put_vec(data, metas);
        }
        let (digest, size) = hash_file(self.inner.algo, src)?;
        self.inner.upload_file(&digest, src)?;
        self.record_ops(digest, size, metas, None)
    }

    /// A streaming writer: bytes go to a file in the local cache (up to `pack_max` stay in
    /// memory), and to the bucket on [`commit_writer`](Self::commit_writer).
    pub fn writer(&self, ext: &str) -> Result<BlobWriter> {
        self.inner.cache.writer_buffered(ext, self.inner.pack_max)
    }

    pub fn commit_writer(
        &self,
        mut w: BlobWriter,
        metas: &[RecordMeta],
    ) -> Result<Vec<OwnedRecord>> {
        self.alive()?;
        if let Some((digest, data)) = w.take_small(self.inner.pack_max)? {
            return self.record_ops(digest, data.len() as u64, metas, Some(&data));
        }
        // The file becomes a cached blob (later reads are local), then goes up.
        let info = w.publish_keep()?;
        self.inner.upload_file(&info.digest, &info.path)?;
        self.record_ops(info.digest, info.size, metas, None)
    }

    fn record_ops(
        &self,
        digest: Digest,
        size: u64,
        metas: &[RecordMeta],
        packed: Option<&[u8]>,
    ) -> Result<Vec<OwnedRecord>> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut ops = Vec::with_capacity(metas.len());
        for m in metas {
            let r = m.to_record(
                ArtifactId::generate(now.as_millis() as u64),
                now.as_micros() as i64,
                digest,
                size,
            );
            validate_new(&r)?;
            ops.push(Op::Put(Box::new(r)));
        }
        let recs = ops
            .iter()
            .filter_map(|o| match o {
                Op::Put(r) => Some((**r).clone()),
                _ => None,
            })
            .collect();
        self.inner.submit(packed.map(|d| (&digest, d)), ops)?;
        Ok(recs)
    }

    /// Pins or unpins a record (see [`segment`] for how concurrent pins and deletes resolve).
    pub fn pin(&self, id: ArtifactId, pinned: bool) -> Result<OwnedRecord> {
        self.alive()?;
        let mut r = self.get_or_not_found(id)?;
        self.inner.submit(None, vec![Op::Pin { id, pinned }])?;
        r.pinned = pinned;
        Ok(r)
    }

    /// Deletes a record (its blob stays: there is no gc on S3 stores yet).
    pub fn delete(&self, id: ArtifactId) -> Result<()> {
        self.alive()?;
        self.get_or_not_found(id)?;
        self.inner.submit(None, vec![Op::Delete { id }])
    }

    fn get_or_not_found(&self, id: ArtifactId) -> Result<OwnedRecord> {
        self.read(|m| m.get(id).map(|r| m.resolve(r)))?
            .ok_or_else(|| Error::not_found(format!("no artifact {id}")))
    }

    /// Uploads the operations still buffered (`"os"` durability, including segments whose
    /// upload failed before); returns when every operation acknowledged so far is in the
    /// bucket, or the error of an upload that failed again.
    pub fn flush(&self) -> Result<()> {
        self.alive()?;
        self.inner.flush()
    }

    // -- reads ------------------------------------------------------------------------------

    /// Runs `f` on the merged index, refreshing it first when it is older than
    /// `max_staleness`.
    pub fn read<R>(&self, f: impl FnOnce(&MemIndex) -> R) -> Result<R> {
        self.alive()?;
        let stale = {
            let st = self.inner.state.lock();
            st.refreshed
                .is_none_or(|t| t.elapsed() >= self.inner.max_staleness)
        };
        if stale {
            self.refresh()?;
        }
        let st = self.inner.state.lock();
        Ok(f(&st.ledger.mem))
    }

    /// Lists the bucket's snapshots and segments and applies the ones not seen yet.
    pub fn refresh(&self) -> Result<()> {
        self.alive()?;
        self.inner.rt.block_on(self.inner.refresh())
    }

    /// Whether the blob is packed in a segment this process has, or an object in the bucket.
    pub fn has_blob(&self, d: &Digest) -> Result<bool> {
        self.alive()?;
        if self.inner.algo != d.algo() {
            return Ok(false);
        }
        if self.inner.state.lock().packed.contains_key(d.bytes()) {
            return Ok(true);
        }
        self.inner.remote_has(d)
    }

    /// A blob's bytes: from the cache, or fetched (and checked against its digest, then
    /// cached).
    pub fn read_blob(&self, d: &Digest, verify: bool) -> Result<Vec<u8>> {
        self.alive()?;
        if let Some(data) = self.inner.read_packed(d)? {
            return Ok(data);
        }
        if self.inner.cache.exists(d) {
            return self.inner.cache.read(d, verify);
        }
        let path = self.blob_path(d)?;
        std::fs::read(&path).ctx("read", &path)
    }

    /// The path of a blob's file in the local cache, fetched now if needed.
    pub fn blob_path(&self, d: &Digest) -> Result<PathBuf> {
        self.alive()?;
        if self.inner.cache.exists(d) {
            return Ok(self.inner.cache.path_of(d));
        }
        if let Some(data) = self.inner.read_packed(d)? {
            return Ok(self.inner.cache.put_bytes(&data)?.path);
        }
        self.inner.rt.block_on(self.inner.fetch_blob(d))
    }

    /// Re-hashes a blob (fetching it if it is not cached); false when its bytes do not match.
    pub fn verify_blob(&self, d: &Digest) -> Result<bool> {
        if let Some(data) = self.inner.read_packed(d)? {
            return Ok(hash_bytes(self.inner.algo, &data) == *d);
        }
        let p = self.blob_path(d)?;
        Ok(hash_file(self.inner.algo, &p)?.0 == *d)
    }

    /// Writes one snapshot holding every segment and snapshot this process has applied, then
    /// deletes those objects. Readers load every snapshot and every segment they have not
    /// seen, and an object is deleted only by a compaction whose own snapshot holds its
    /// bytes, so concurrent compactions lose nothing.
    pub fn compact(&self) -> Result<usize> {
        self.alive()?;
        self.flush()?;
        self.inner.rt.block_on(self.inner.compact())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.pid != std::process::id() {
            return; // a forked child: its copy of the runtime has no threads to run on
        }
        // Buffered operations of a store that was not closed: one last try, and a warning
        // on stderr if they cannot be stored (nobody is left to take an error).
        if let Err(e) = self.flush() {
            eprintln!(
                "runstash: buffered operations for {} were not stored: {}",
                self.url,
                e.message()
            );
        }
    }
}

impl Inner {
    fn key_path(&self, rel: &str) -> ObjPath {
        ObjPath::from(format!("{}{rel}", self.prefix))
    }

    fn blob_key(&self, d: &Digest) -> String {
        let hex = d.hex();
        format!("{}blobs/{}/{}", self.prefix, &hex[..2], &hex[2..])
    }

    /// Queues operations (and a packed blob) into the pending segment, each with a fresh
    /// clock value. In `"fsync"` durability, returns once that segment is in the bucket; in
    /// `"os"`, at once (the operations are applied here already), uploading when the batch
    /// is full.
    fn submit(&self, blob: Option<(&Digest, &[u8])>, ops: Vec<Op>) -> Result<()> {
        if ops.is_empty() && blob.is_none() {
            return Ok(());
        }
        let durable = self.durability == Durability::Fsync;
        let n = {
            let mut c = self.commit.lock();
            let hlc = self.tick();
            if let Some((d, data)) = blob {
                c.pending.push_blob(d, data);
            }
            if !durable {
                // Visible here at once, with the keys the segment will give them.
                let first = c.pending.ops.len() as u32;
                let mut st = self.state.lock();
                for (i, op) in ops.iter().enumerate() {
                    st.ledger.apply(op, self.key(hlc, first + i as u32));
                }
            }
            for op in ops {
                c.pending.push_op(op, hlc);
            }
            if !durable && c.pending.ops.len() < BATCH_OPS && c.pending.len_bytes() < BATCH_BYTES {
                return Ok(());
            }
            c.taken
        };
        let r = self.wait_for(n);
        if durable { r } else { Ok(()) } // a failed "os" batch is kept and retried by flush
    }

    fn key(&self, hlc: u64, idx: u32) -> Key {
        Key {
            hlc,
            writer: self.writer.clone(),
            idx,
        }
    }

    /// A new clock value: after every value seen or made here.
    fn tick(&self) -> u64 {
        let mut st = self.state.lock();
        st.hlc = (now_ms() << 16).max(st.hlc + 1);
        st.hlc
    }

    /// Waits until segment `n` is finished, uploading pending segments meanwhile when no one
    /// else is (group commit: one upload carries every operation queued while the previous
    /// one was in flight). Returns the segment's upload result.
    fn wait_for(&self, n: u64) -> Result<()> {
        let mut c = self.commit.lock();
        loop {
            if c.finished > n {
                return match c.failed.get(&n) {
                    Some((kind, msg)) => Err(Error::new(*kind, msg.clone())),
                    None => Ok(()),
                };
            }
            if !c.flushing && !c.pending.is_empty() {
                c.flushing = true;
                let seg = std::mem::take(&mut c.pending);
                let num = c.taken;
                c.taken += 1;
                drop(c);
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.upload_segment(&seg, num)
                }))
                .unwrap_or_else(|_| {
                    Err(Error::new(
                        ErrorKind::Io,
                        "internal error: segment upload panicked",
                    ))
                });
                c = self.commit.lock();
                c.flushing = false;
                c.finished = num + 1;
                if let Err(e) = r {
                    c.failed.insert(num, (e.kind(), e.message().to_string()));
                    if c.failed.len() > 4096 {
                        c.failed.pop_first();
                    }
                    if self.durability == Durability::Os {
                        c.stuck.push((num, seg));
                    }
                }
                self.committed.notify_all();
                continue;
            }
            self.committed.wait(&mut c);
        }
    }

    fn flush(&self) -> Result<()> {
        let last = {
            let c = self.commit.lock();
            if !c.pending.is_empty() {
                Some(c.taken)
            } else {
                c.taken.checked_sub(1)
            }
        };
        if let Some(n) = last {
            let r = self.wait_for(n);
            if self.durability == Durability::Fsync {
                return r;
            }
        }
        // Segments that failed before: again, in order.
        let stuck = std::mem::take(&mut self.commit.lock().stuck);
        let mut first_err = None;
        let mut still = Vec::new();
        for (num, seg) in stuck {
            match self.upload_segment(&seg, num) {
                Ok(()) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                    still.push((num, seg));
                }
            }
        }
        if !still.is_empty() {
            let mut c = self.commit.lock();
            still.append(&mut c.stuck);
            c.stuck = still;
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Uploads one segment (their sequence numbers start at 1) and applies it here.
    fn upload_segment(&self, seg: &SegmentBuf, num: u64) -> Result<()> {
        let seq = num + 1;
        let name = format!("log/{}/{seq:016}", self.writer);
        let (bytes, base) = seg.encode(&self.writer, seq);
        let bytes = Bytes::from(bytes);
        let key = self.key_path(&name);
        self.rt
            .block_on(self.s3.put(&key, PutPayload::from(bytes.clone())))
            .map_err(|e| obj_err("write index segment", key.as_ref(), e))?;
        // Stored: from here on nothing may fail the write. Without a cached copy the packed
        // bytes are fetched again by the next refresh that needs them.
        let cached = if seg.packed.is_empty() {
            None
        } else {
            self.cache_segment(&name, &bytes).ok()
        };
        let mut st = self.state.lock();
        if cached.is_some() || seg.packed.is_empty() {
            st.seen.insert(name);
        }
        if let Some(path) = cached {
            for (d, off, len) in &seg.packed {
                st.packed
                    .insert(*d.bytes(), (path.clone(), (base + off) as u64, *len));
            }
        }
        if self.durability == Durability::Fsync {
            for (i, (op, hlc)) in seg.ops.iter().zip(&seg.hlcs).enumerate() {
                st.ledger.apply(op, self.key(*hlc, i as u32));
            }
        }
        Ok(())
    }

    /// Keeps a segment's bytes in the cache (for its packed blobs).
    fn cache_segment(&self, name: &str, bytes: &[u8]) -> Result<Arc<Path>> {
        let path = self.segments_dir.join(name.replace('/', "-"));
        if !path.is_file() {
            crate::atomic::write_atomic(&path, bytes, Durability::Os)?;
        }
        Ok(Arc::from(path.as_path()))
    }

    fn read_packed(&self, d: &Digest) -> Result<Option<Vec<u8>>> {
        let loc = self.state.lock().packed.get(d.bytes()).cloned();
        let Some((path, off, len)) = loc else {
            return Ok(None);
        };
        let f = std::fs::File::open(&*path).ctx("open", &path)?;
        let mut data = vec![0u8; len as usize];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut data, off).ctx("read", &path)?;
        if hash_bytes(self.algo, &data) != *d {
            return Err(Error::corrupt(format!(
                "packed blob {d} in cached segment {} does not match its digest",
                path.display()
            )));
        }
        Ok(Some(data))
    }

    /// Applies a segment's bytes (from the bucket or a snapshot).
    fn apply_segment(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let seg = decode_segment(bytes, name)?;
        let cached = if seg.packed.is_empty() {
            None
        } else {
            Some(self.cache_segment(name, bytes)?)
        };
        let mut st = self.state.lock();
        if !st.seen.insert(name.to_string()) {
            return Ok(());
        }
        st.hlc = st.hlc.max(seg.hlc);
        if let Some(path) = cached {
            for (d, off, len) in &seg.packed {
                st.packed
                    .entry(*d.bytes())
                    .or_insert((path.clone(), *off as u64, *len));
            }
        }
        for (i, (op, hlc)) in seg.ops.iter().zip(&seg.hlcs).enumerate() {
            st.ledger.apply(
                op,
                Key {
                    hlc: *hlc,
                    writer: seg.writer.clone(),
                    idx: i as u32,
                },
            );
        }
        Ok(())
    }

    async fn list_names(&self, dir: &str) -> Result<Vec<String>> {
        let prefix = self.key_path(dir);
        let metas: Vec<object_store::ObjectMeta> = self
            .s3
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| obj_err("list", prefix.as_ref(), e))?;
        let mut names: Vec<String> = metas
            .into_iter()
            .filter_map(|m| {
                m.location
                    .as_ref()
                    .strip_prefix(&self.prefix)
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        Ok(names)
    }

    async fn get_bytes(&self, name: &str) -> Result<Option<Bytes>> {
        let key = self.key_path(name);
        let r = match self.s3.get(&key).await {
            Ok(r) => r.bytes().await,
            Err(e) => Err(e),
        };
        match r {
            Ok(b) => Ok(Some(b)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(obj_err("read", key.as_ref(), e)),
        }
    }

    /// Fetches objects by name, [`FETCH_CONCURRENCY`] at a time: (name, bytes or `None` if
    /// it is gone), in completion order.
    fn fetch_all(
        &self,
        names: Vec<String>,
    ) -> impl futures::Stream<Item = (String, Result<Option<Bytes>>)> + '_ {
        futures::stream::iter(names)
            .map(move |n| async move {
                let b = self.get_bytes(&n).await;
                (n, b)
            })
            .buffer_unordered(FETCH_CONCURRENCY)
    }

    async fn refresh(&self) -> Result<()> {
        let started = Instant::now();
        let mut rounds = 0;
        loop {
            rounds += 1;
            let mut missing = false;
            // Segments first: a compaction writes its snapshot before it deletes the segments
            // in it, so a segment listed here and gone when fetched is in a snapshot listed
            // after it.
            for dir in ["log/", "snap/"] {
                let names: Vec<String> = {
                    let listed = self.list_names(dir).await?;
                    let st = self.state.lock();
                    listed
                        .into_iter()
                        .filter(|n| !st.seen.contains(n))
                        .collect()
                };
                let mut fetched = self.fetch_all(names);
                while let Some((name, got)) = fetched.next().await {
                    match got? {
                        // Deleted since listed: a compaction put it in a snapshot.
                        None => missing = true,
                        Some(bytes) if dir == "snap/" => self.apply_snapshot(&name, &bytes)?,
                        Some(bytes) => self.apply_segment(&name, &bytes)?,
                    }
                }
            }
            if !missing {
                break;
            }
            if rounds >= 5 {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!(
                        "{}: index objects kept disappearing while being read (5 rounds)",
                        self.url
                    ),
                ));
            }
        }
        self.state.lock().refreshed = Some(started);
        Ok(())
    }

    fn apply_snapshot(&self, name: &str, bytes: &[u8]) -> Result<()> {
        for (part, range) in decode_snapshot(bytes, name)? {
            if part.starts_with("snap/") {
                self.state.lock().seen.insert(part);
            } else {
                self.apply_segment(&part, &bytes[range])?;
            }
        }
        self.state.lock().seen.insert(name.to_string());
        Ok(())
    }

    async fn compact(&self) -> Result<usize> {
        self.refresh().await?;
        let names: Vec<String> = {
            let st = self.state.lock();
            let mut v: Vec<String> = st.seen.iter().cloned().collect();
            v.sort();
            v
        };
        let segs: Vec<&String> = names.iter().filter(|n| n.starts_with("log/")).collect();
        if segs.len() < 2 && names.iter().filter(|n| n.starts_with("snap/")).count() < 2 {
            return Ok(0);
        }
        // The bytes of every segment applied: from the bucket, or from the snapshots that
        // hold them.
        let mut parts: Vec<(String, Bytes)> = Vec::new();
        let mut have: HashSet<String> = HashSet::new();
        for snap in names.iter().filter(|n| n.starts_with("snap/")) {
            let Some(bytes) = self.get_bytes(snap).await? else {
                continue; // another compaction holds its bytes now
            };
            for (part, range) in decode_snapshot(&bytes, snap)? {
                if !part.starts_with("snap/") && have.insert(part.clone()) {
                    parts.push((part, bytes.slice(range)));
                }
            }
        }
        let wanted: Vec<String> = segs
            .iter()
            .filter(|n| !have.contains(n.as_str()))
            .map(|n| n.to_string())
            .collect();
        let mut fetched = self.fetch_all(wanted);
        let mut gone = Vec::new();
        while let Some((name, got)) = fetched.next().await {
            match got? {
                Some(b) => parts.push((name, b)),
                None => gone.push(name),
            }
        }
        drop(fetched);
        parts.sort_by(|a, b| a.0.cmp(&b.0));
        let hlc = self.tick();
        let snap_name = format!("snap/{hlc:016x}-{}", self.writer);
        let mut listing: Vec<(String, &[u8])> =
            parts.iter().map(|(n, b)| (n.clone(), &b[..])).collect();
        // Older snapshots are named too, so a reader of this one knows them as seen.
        for old in names.iter().filter(|n| n.starts_with("snap/")) {
            listing.push((old.clone(), &[]));
        }
        let body = encode_snapshot(&listing);
        let key = self.key_path(&snap_name);
        self.s3
            .put(&key, PutPayload::from(body))
            .await
            .map_err(|e| obj_err("write snapshot", key.as_ref(), e))?;
        self.state.lock().seen.insert(snap_name);
        // Now every byte of these objects is in the new snapshot.
        let doomed: Vec<String> = parts
            .iter()
            .map(|(n, _)| n.clone())
            .chain(names.iter().filter(|n| n.starts_with("snap/")).cloned())
            .collect();
        let n = doomed.len();
        futures::stream::iter(doomed)
            .map(|name| async move {
                match self.s3.delete(&self.key_path(&name)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(obj_err("delete", &name, e)),
                }
            })
            .buffer_unordered(FETCH_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        let _ = gone; // held by another snapshot already
        Ok(n)
    }

    /// Uploads a blob held in memory unless the bucket has it.
    fn upload_bytes(&self, d: &Digest, data: Bytes) -> Result<()> {
        if self.remote_has(d)? {
            return Ok(());
        }
        let key = ObjPath::from(self.blob_key(d));
        self.rt.block_on(async {
            if data.len() <= MULTIPART_MIN {
                self.s3
                    .put(&key, PutPayload::from(data))
                    .await
                    .map(|_| ())
                    .map_err(|e| obj_err("upload", key.as_ref(), e))
            } else {
                let chunks = (0..data.len())
                    .step_by(MEM_PART)
                    .map(|at| data.slice(at..(at + MEM_PART).min(data.len())));
                self.multipart(&key, futures::stream::iter(chunks.map(Ok)), None)
                    .await
            }
        })?;
        self.state.lock().remote_blobs.insert(*d.bytes());
        Ok(())
    }

    /// Uploads a file as blob `d` unless the bucket has it. Large files go up in parts that
    /// are hashed as they are read; a mismatch with `d` (the file changed) aborts the upload.
    fn upload_file(&self, d: &Digest, src: &Path) -> Result<()> {
        if self.remote_has(d)? {
            return Ok(());
        }
        let size = std::fs::metadata(src).ctx("stat", src)?.len();
        if size <= READ_WHOLE_MAX {
            let data = std::fs::read(src).ctx("read", src)?;
            if hash_bytes(self.algo, &data) != *d {
                return Err(Error::invalid(format!(
                    "{} changed while it was being stored",
                    src.display()
                )));
            }
            return self.upload_bytes(d, Bytes::from(data));
        }
        let key = ObjPath::from(self.blob_key(d));
        let file = std::fs::File::open(src).ctx("open", src)?;
        let src_owned = src.to_path_buf();
        let parts = futures::stream::unfold((file, 0u64), move |(f, at)| {
            let src = src_owned.clone();
            async move {
                if at >= size {
                    return None;
                }
                let n = (size - at).min(FILE_PART as u64) as usize;
                let mut buf = vec![0u8; n];
                let r = std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, at)
                    .ctx("read", &src)
                    .map(|()| Bytes::from(buf));
                Some((r, (f, at + n as u64)))
            }
        });
        self.rt
            .block_on(self.multipart(&key, parts, Some((d, src))))?;
        self.state.lock().remote_blobs.insert(*d.bytes());
        Ok(())
    }

    /// A multipart upload of the parts from `parts`, up to 4 in flight. With `check`, the
    /// parts are hashed as they go and the upload is completed only if they hash to the
    /// digest; otherwise (and on any error) it is aborted.
    async fn multipart(
        &self,
        key: &ObjPath,
        parts: impl futures::Stream<Item = Result<Bytes>>,
        check: Option<(&Digest, &Path)>,
    ) -> Result<()> {
        let mut up = self
            .s3
            .put_multipart(key)
            .await
            .map_err(|e| obj_err("start upload", key.as_ref(), e))?;
        let mut hasher = check.map(|(d, _)| Hasher::new(d.algo()));
        let mut in_flight = futures::stream::FuturesUnordered::new();
        let mut parts = std::pin::pin!(parts);
        let r: Result<()> = async {
            while let Some(part) = parts.next().await {
                let part = part?;
                if let Some(h) = hasher.as_mut() {
                    h.update(&part);
                }
                in_flight.push(up.put_part(PutPayload::from(part)));
                while in_flight.len() >= 4 {
                    if let Some(r) = in_flight.next().await {
                        r.map_err(|e| obj_err("upload part", key.as_ref(), e))?;
                    }
                }
            }
            while let Some(r) = in_flight.next().await {
                r.map_err(|e| obj_err("upload part", key.as_ref(), e))?;
            }
            if let (Some(h), Some((d, src))) = (&hasher, check)
                && h.finalize() != *d
            {
                return Err(Error::invalid(format!(
                    "{} changed while it was being stored",
                    src.display()
                )));
            }
            Ok(())
        }
        .await;
        drop(in_flight);
        match r {
            Ok(()) => up
                .complete()
                .await
                .map(|_| ())
                .map_err(|e| obj_err("complete upload", key.as_ref(), e)),
            Err(e) => {
                let _ = up.abort().await;
                Err(e)
            }
        }
    }

    fn remote_has(&self, d: &Digest) -> Result<bool> {
        if self.state.lock().remote_blobs.contains(d.bytes()) {
            return Ok(true);
        }
        let key = self.blob_key(d);
        match self.rt.block_on(self.s3.head(&ObjPath::from(key.as_str()))) {
            Ok(_) => {
                self.state.lock().remote_blobs.insert(*d.bytes());
                Ok(true)
            }
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(obj_err("head", &key, e)),
        }
    }

    /// Streams a blob object into the cache, hashing as it comes; a blob whose bytes do not
    /// match its name is refused (CorruptError) and not cached.
    async fn fetch_blob(&self, d: &Digest) -> Result<PathBuf> {
        let key = ObjPath::from(self.blob_key(d));
        let got = self
            .s3
            .get(&key)
            .await
            .map_err(|e| obj_err("read", key.as_ref(), e))?;
        let mut w = self.cache.writer("")?;
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| obj_err("read", key.as_ref(), e))?;
            w.write_all(&chunk)?;
        }
        let info = w.commit()?;
        if info.digest != *d {
            if info.created {
                let _ = std::fs::remove_file(&info.path);
            }
            return Err(Error::corrupt(format!(
                "blob object {} holds bytes that hash to {}",
                key.as_ref(),
                info.digest
            )));
        }
        Ok(info.path)
    }
}

/// Reads or creates `STORE.json` under `prefix`; returns the store's hash algorithm.
fn store_meta(
    rt: &tokio::runtime::Runtime,
    s3: &dyn ObjectStore,
    prefix: &str,
    url: &str,
    want: Option<HashAlgo>,
) -> Result<HashAlgo> {
    let key = ObjPath::from(format!("{prefix}STORE.json"));
    let got = rt.block_on(async {
        match s3.get(&key).await {
            Ok(r) => r.bytes().await.map(Some),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    });
    let got = got.map_err(|e| obj_err("read", key.as_ref(), e))?;
    if let Some(bytes) = got {
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::corrupt(format!("{}: {e}", key.as_ref())))?;
        let format = v.get("format").and_then(|f| f.as_u64()).unwrap_or(0);
        if format > u64::from(FORMAT) {
            return Err(Error::incompatible(format!(
                "{url} was made by a newer runstash (format {format}, this one reads {FORMAT})"
            )));
        }
        let algo: HashAlgo = v
            .get("hash")
            .and_then(|h| h.as_str())
            .unwrap_or("")
            .parse()?;
        if let Some(w) = want
            && w != algo
        {
            return Err(Error::incompatible(format!(
                "{url} hashes with {}, not {}",
                algo.name(),
                w.name()
            )));
        }
        return Ok(algo);
    }
    let algo = want.unwrap_or(HashAlgo::Blake3);
    let body = serde_json::json!({"format": FORMAT, "hash": algo.name(), "kind": "runstash-s3"});
    let data = serde_json::to_vec_pretty(&body).unwrap_or_default();
    // Create-only, so two first openers cannot both write it; a server without conditional
    // writes gets a plain write.
    let create = object_store::PutOptions::from(object_store::PutMode::Create);
    let r = rt.block_on(s3.put_opts(&key, PutPayload::from(data.clone()), create));
    match r {
        Ok(_) => Ok(algo),
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => {
            store_meta(rt, s3, prefix, url, want) // another opener was first: use its settings
        }
        Err(object_store::Error::NotImplemented { .. }) => {
            rt.block_on(s3.put(&key, PutPayload::from(data)))
                .map_err(|e| obj_err("write", key.as_ref(), e))?;
            Ok(algo)
        }
        Err(e) => Err(obj_err("write", key.as_ref(), e)),
    }
}

/// Random bytes for a writer id, from the kernel.
fn getrandom_bytes(out: &mut [u8]) {
    use std::io::Read;
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(out));
    if ok.is_err() {
        // Fall back to the clock and pid: unique enough for a writer id.
        let seed = now_ms() ^ (u64::from(std::process::id()) << 32);
        for (i, b) in out.iter_mut().enumerate() {
            *b = (seed >> ((i % 8) * 8)) as u8 ^ (i as u8).wrapping_mul(151);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("s3://b/a/b/").unwrap(),
            ("b".into(), "a/b/".into())
        );
        assert_eq!(parse_url("s3://b").unwrap(), ("b".into(), "".into()));
        assert!(parse_url("s3:///x").is_err());
        assert!(parse_url("file:///x").is_err());
        assert!(parse_url("s3://b/../x").is_err());
    }
}
