//! The artifact index: records in memory, ranked by metric, persisted as a log plus snapshots.
//!
//! - [`record`]: records, ids, label values, the string interner.
//! - [`mem`]: `MemIndex`, postings and metric orders; `query`: filters, counts and rankings.
//! - [`codec`]: binary encoding of log operations and snapshot records.
//! - [`log`]: framed, checksummed log segments and their recovery.
//! - [`snapshot`]: compacted snapshots, written atomically.
//! - [`persist`]: `SharedIndex`, which keeps memory and disk in step across processes;
//!   `lock`: the index lock; `load`: loading and replay.
//! - `fuzz`: entry points for fuzzing the decoders (hidden from the docs).

pub mod codec;
#[doc(hidden)]
pub mod fuzz;
mod load;
mod lock;
pub mod log;
pub mod mem;
pub mod persist;
mod query;
pub mod record;
pub mod snapshot;

pub use codec::Op;
pub use mem::{Filter, MemIndex, Mode};
pub use persist::{PackedReader, SharedIndex};
pub use record::{
    ArtifactId, OwnedRecord, OwnedValue, Record, RecordMeta, validate_kind, validate_new,
};
