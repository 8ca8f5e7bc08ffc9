//! New records, made in one place for both stores: a caller's [`RecordMeta`] checked, given
//! an id and a creation time, and turned into the `Put` operations an index append carries.
//!
//! Invariants:
//! - Every record a store appends was made by [`put_ops`]: it passed [`validate_new`], and the
//!   records of one call share one creation time and have ids increasing in the order of
//!   `metas` (ids of one process only grow, see [`ArtifactId::generate`]).
//! - [`check`] accepts exactly what [`put_ops`] accepts, so a store can refuse bad input
//!   before any byte is written.

use crate::error::Result;
use crate::hash::{Digest, HashAlgo};
use crate::index::record::validate_new;
use crate::index::{ArtifactId, Op, OwnedRecord, RecordMeta};

/// Checks a new record's fields before any byte is written (the blob, id and time do not
/// matter to the check).
pub fn check(meta: &RecordMeta, algo: HashAlgo) -> Result<()> {
    validate_new(&meta.to_record(ArtifactId(0), 0, Digest::new(algo, [0; 32]), 0))
}

/// One `Put` per entry of `metas`, all naming the blob `digest` of `size` bytes, created now.
pub fn put_ops(digest: Digest, size: u64, metas: &[RecordMeta]) -> Result<Vec<Op>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let created_us = now.as_micros() as i64;
    let ms = now.as_millis() as u64;
    let mut ops = Vec::with_capacity(metas.len());
    for m in metas {
        let r = m.to_record(ArtifactId::generate(ms), created_us, digest, size);
        validate_new(&r)?;
        ops.push(Op::Put(Box::new(r)));
    }
    Ok(ops)
}

/// The records of the `Put` operations, handed back without a copy.
pub fn into_records(ops: Vec<Op>) -> Vec<OwnedRecord> {
    ops.into_iter()
        .filter_map(|op| match op {
            Op::Put(r) => Some(*r),
            _ => None,
        })
        .collect()
}

/// Copies of the records of the `Put` operations (for a caller that hands the operations on).
pub fn records_of(ops: &[Op]) -> Vec<OwnedRecord> {
    ops.iter()
        .filter_map(|op| match op {
            Op::Put(r) => Some((**r).clone()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kind: &str) -> RecordMeta {
        RecordMeta {
            kind: kind.into(),
            ..RecordMeta::default()
        }
    }

    #[test]
    fn check_and_put_ops_agree() {
        let d = Digest::new(HashAlgo::Blake3, [7; 32]);
        let good = meta("frame");
        let bad = meta("");
        assert!(check(&good, HashAlgo::Blake3).is_ok());
        assert!(check(&bad, HashAlgo::Blake3).is_err());
        assert!(put_ops(d, 1, &[good.clone(), bad]).is_err());
        let recs = into_records(put_ops(d, 3, &[good.clone(), good]).expect("valid"));
        assert_eq!(recs.len(), 2);
        assert!(recs[0].id < recs[1].id);
        assert_eq!(recs[0].created_us, recs[1].created_us);
        assert_eq!((recs[0].digest, recs[0].size), (d, 3));
    }
}
