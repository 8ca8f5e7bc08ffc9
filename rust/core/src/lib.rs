//! runstash-core: the engine of runstash, in pure Rust (no Python).
//!
//! - [`hash`]: BLAKE3 and SHA-256, streaming and whole-file.
//! - [`atomic`]: `AtomicFile`, bytes reach their final name only when complete.
//! - [`blobs`]: the content-addressed blob store; [`damage`]: damaged blobs and quarantine.
//! - [`input`]: opening callers' files (regular files only).
//! - [`store`]: a store root and its layout; [`meta`]: its `STORE.json`; [`uri`]: blob URIs;
//!   [`dates`]: timestamps as text.
//! - [`paths`]: validation of caller-supplied names and paths.
//! - [`live`], [`gc`], [`audit`], [`retention`]: what is live, garbage collection, stats and
//!   verification, keep-best retention.
//! - [`tree`]: directory artifacts (manifest, ingest, built trees).
//! - [`remote`] (feature `s3`): a store on S3-compatible object storage.

pub mod api;
pub mod atomic;
pub mod audit;
pub mod blob_writer;
pub mod blobs;
pub mod damage;
pub mod dates;
pub mod error;
pub mod gc;
pub mod hash;
pub mod index;
pub mod input;
pub mod live;
pub mod meta;
pub mod new_records;
pub mod paths;
#[cfg(feature = "s3")]
pub mod remote;
pub mod retention;
pub mod store;
pub mod tree;
pub mod uri;

pub use api::ArtifactStore;
pub use atomic::{AtomicFile, Durability, write_atomic};
pub use audit::{IntegrityReport, MissingBlob, StoreStats, VerifyProgress};
pub use blobs::{BlobInfo, BlobStore, BlobWriter, VerifyReport};
pub use damage::{QUARANTINE_DIR, Quarantined};
pub use error::{Error, ErrorKind, Result};
pub use gc::GcReport;
pub use hash::{Digest, HashAlgo, Hasher, hash_bytes, hash_file};
pub use meta::{FORMAT_VERSION, StoreMeta};
pub use retention::{Per, RetentionPlan};
pub use store::{OpenOptions, Store};
pub use tree::{TREE_MIME, TreeFile};
