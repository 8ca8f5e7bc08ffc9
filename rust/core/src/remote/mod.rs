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

mod api;
mod audit;
mod commit;
mod dirs;
#[cfg(test)]
mod faulty;
mod gc;
mod meta;
mod options;
#[cfg(test)]
mod protocol_tests;
mod refresh;
pub mod segment;
mod upload;

use meta::{getrandom_bytes, store_meta};
pub use options::parse_url;
pub use options::{DEFAULT_GC_LEASE, RemoteOptions};
use options::{allow_http, now_ms, obj_err};

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
use crate::index::{ArtifactId, MemIndex, Op, OwnedRecord, RecordMeta};
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
    /// The gc lease of this store (`STORE.json`): see [`gc`].
    lease: Duration,
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
    /// `"os"` durability: packed blobs acknowledged but not yet in a stored (and cached)
    /// segment, so that this process reads what it wrote before the segment goes up.
    unsent: std::collections::HashMap<[u8; 32], Arc<[u8]>>,
    /// Blob objects confirmed to exist in the bucket: digest -> (key, when confirmed). A
    /// confirmation is trusted for part of the gc lease only ([`gc`]).
    remote_blobs: std::collections::HashMap<[u8; 32], (Arc<str>, Instant)>,
    /// Blob keys (relative to the prefix) that a gc marked for deletion, as of
    /// `condemned_at`: this process never writes to nor relies on one ([`gc`]).
    condemned: HashSet<String>,
    condemned_at: Option<Instant>,
    /// The member blobs of directory manifests this process records: held to the lease
    /// like the blobs records name ([`dirs`]).
    tree_members: std::collections::HashMap<[u8; 32], Arc<[Digest]>>,
    /// The keys of each gc marker read (markers are immutable).
    marker_keys: std::collections::HashMap<String, Arc<HashSet<String>>>,
    /// The hybrid logical clock: never behind a segment applied here.
    hlc: u64,
    refreshed: Option<Instant>,
}

#[derive(Default)]
struct Commit {
    pending: SegmentBuf,
    /// When the first operation went into `pending` (`"os"` durability uploads a batch
    /// older than a quarter of the gc lease at the next write: see [`gc`]).
    pending_since: Option<Instant>,
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

impl RemoteStore {
    /// Opens (or creates) the store at `opts.url`: checks or writes `STORE.json`, then reads
    /// the index (snapshots and segments).
    pub fn open(opts: RemoteOptions) -> Result<RemoteStore> {
        let (bucket, _) = parse_url(&opts.url)?;
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
        Self::open_with(Arc::new(s3), opts)
    }

    /// [`open`](Self::open) on a given object store (the bucket named by `opts.url`; its
    /// connection settings in `opts` are not used): for tests on an in-memory store.
    pub fn open_with(s3: Arc<dyn ObjectStore>, opts: RemoteOptions) -> Result<RemoteStore> {
        let (bucket, prefix) = parse_url(&opts.url)?;
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
        let (algo, lease) = store_meta(
            &rt,
            &*s3,
            &prefix,
            &opts.url,
            opts.hash,
            opts.gc_lease,
            opts.create,
        )?;
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
            lease,
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

    /// A digest from a blob URI of this store.
    pub fn digest_from_uri(&self, uri: &str) -> Result<Digest> {
        crate::uri::digest_from_prefixed(&self.inner.uri_prefix, self.inner.algo, uri)
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

    pub(super) fn record_ops(
        &self,
        digest: Digest,
        size: u64,
        metas: &[RecordMeta],
        packed: Option<&[u8]>,
    ) -> Result<Vec<OwnedRecord>> {
        let ops = crate::new_records::put_ops(digest, size, metas)?;
        let recs = crate::new_records::records_of(&ops);
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

    /// Deletes a record (its blob object goes in a later [`gc`](Self::gc)).
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
        {
            let st = self.inner.state.lock();
            if st.packed.contains_key(d.bytes()) || st.unsent.contains_key(d.bytes()) {
                return Ok(true);
            }
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
    /// The blob's file in the local cache when it is there; fetches and unpacks nothing.
    pub fn existing_blob_file(&self, d: &Digest) -> Result<Option<PathBuf>> {
        self.alive()?;
        Ok(self
            .inner
            .cache
            .exists(d)
            .then(|| self.inner.cache.path_of(d)))
    }

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

    /// The primary key of a blob, relative to the prefix: `blobs/<2 hex>/<rest>`. A blob may
    /// also be stored under `<primary>.<suffix>` keys (copies made while a gc had marked
    /// the primary, see [`gc`]).
    fn blob_rel(&self, d: &Digest) -> String {
        let hex = d.hex();
        format!("blobs/{}/{}", &hex[..2], &hex[2..])
    }

    /// The gc lease, and what follows from it (see [`gc`]).
    fn lease_trust(&self) -> Duration {
        self.lease / 4
    }

    fn lease_store(&self) -> Duration {
        self.lease / 2
    }

    fn condemned_staleness(&self) -> Duration {
        self.lease / 8
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
