//! The S3 protocol on an in-memory bucket with injected faults ([`super::faulty`]): no
//! SeaweedFS needed. Each test opens two or three handles (writers with their own caches) on
//! one bucket and checks what each sees after PUTs that fail, PUTs whose answer is lost,
//! listings that lag, buffered batches, compaction, and the conflict rule for pins and
//! deletes.

use std::sync::Arc;
use std::time::Duration;

use super::faulty::{Faulty, PutFault};
use super::{RemoteOptions, RemoteStore};
use crate::atomic::Durability;
use crate::index::{Filter, RecordMeta};
use crate::{ArtifactStore, ErrorKind};

struct Bucket {
    s3: Arc<Faulty>,
    dir: std::path::PathBuf,
    handles: std::cell::Cell<u32>,
}

impl Bucket {
    fn new(name: &str) -> Bucket {
        let dir = std::env::temp_dir().join(format!("runstash-mem-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Bucket {
            s3: Arc::new(Faulty::default()),
            dir,
            handles: std::cell::Cell::new(0),
        }
    }

    /// A new handle (a writer with a cache of its own).
    fn open(&self, durability: Durability) -> RemoteStore {
        let n = self.handles.get();
        self.handles.set(n + 1);
        let opts = RemoteOptions {
            url: "s3://mem/t".to_string(),
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            allow_http: None,
            virtual_hosted: false,
            cache_dir: self.dir.join(format!("cache{n}")),
            hash: None,
            durability,
            pack_max: crate::store::DEFAULT_PACK_MAX,
            // Views refresh only when a test says so.
            max_staleness: Duration::from_secs(3600),
            max_retries: 0,
            request_timeout: Duration::from_secs(5),
            gc_lease: None,
            create: true,
        };
        RemoteStore::open_with(self.s3.clone(), opts).expect("open the in-memory store")
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        rt.block_on(self.s3.keys(prefix))
    }
}

impl Drop for Bucket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn meta(kind: &str) -> RecordMeta {
    RecordMeta {
        kind: kind.to_string(),
        ..RecordMeta::default()
    }
}

fn count(s: &RemoteStore) -> usize {
    let s: &dyn ArtifactStore = s;
    s.read(|m| m.count(&Filter::default())).expect("count")
}

const BIG: usize = 100_000; // over pack_max: a blob object of its own

#[test]
fn segments_of_one_writer_reach_another() {
    let b = Bucket::new("reach");
    let (w, r) = (b.open(Durability::Fsync), b.open(Durability::Fsync));
    let small = w.put_bytes(b"small", &[meta("a")]).unwrap().remove(0);
    let big = w
        .put_bytes(&vec![7u8; BIG], &[meta("b")])
        .unwrap()
        .remove(0);
    assert_eq!(count(&r), 0, "not refreshed yet");
    r.refresh().unwrap();
    assert_eq!(count(&r), 2);
    assert_eq!(r.read_blob(&small.digest, true).unwrap(), b"small");
    assert_eq!(r.read_blob(&big.digest, true).unwrap(), vec![7u8; BIG]);
    assert_eq!(
        b.keys("t/blobs").len(),
        1,
        "the small payload is packed in the segment"
    );
}

#[test]
fn a_refused_segment_put_is_an_error_and_records_nothing() {
    let b = Bucket::new("refused");
    let (w, r) = (b.open(Durability::Fsync), b.open(Durability::Fsync));
    b.s3.fail_puts("/log/", PutFault::Refused, 1);
    let e = w.put_bytes(b"lost", &[meta("a")]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    assert_eq!(
        count(&w),
        0,
        "a write that failed is not in the writer's own view"
    );
    r.refresh().unwrap();
    assert_eq!(count(&r), 0);
    w.put_bytes(b"kept", &[meta("a")]).unwrap();
    r.refresh().unwrap();
    assert_eq!(count(&r), 1, "the next write goes through");
}

#[test]
fn a_segment_whose_answer_was_lost_is_seen_alike_by_every_handle() {
    let b = Bucket::new("lost-answer");
    let (w, r) = (b.open(Durability::Fsync), b.open(Durability::Fsync));
    b.s3.fail_puts("/log/", PutFault::AnswerLost, 1);
    assert!(w.put_bytes(b"maybe", &[meta("a")]).is_err());
    w.put_bytes(b"surely", &[meta("a")]).unwrap();
    w.refresh().unwrap();
    r.refresh().unwrap();
    // Not acknowledged, so it may or may not count; but both views agree, and a fresh one too.
    let fresh = b.open(Durability::Fsync);
    assert_eq!(count(&w), count(&r));
    assert_eq!(count(&r), count(&fresh));
    assert!(count(&fresh) >= 1, "the acknowledged write is there");
}

#[test]
fn a_buffered_batch_that_failed_is_kept_readable_and_flushed_later() {
    let b = Bucket::new("os-batch");
    let w = b.open(Durability::Os);
    let r = b.open(Durability::Fsync);
    let recs: Vec<_> = (0..3u8)
        .map(|i| w.put_bytes(&[i; 10], &[meta("a")]).unwrap().remove(0))
        .collect();
    // Acknowledged and buffered: readable by the writer before any upload.
    for (i, rec) in recs.iter().enumerate() {
        assert_eq!(w.read_blob(&rec.digest, true).unwrap(), vec![i as u8; 10]);
        assert!(w.has_blob(&rec.digest).unwrap());
    }
    // flush uploads the batch, and retries it once at once: both fail.
    b.s3.fail_puts("/log/", PutFault::Refused, 2);
    assert!(w.flush().is_err(), "the upload failed");
    assert_eq!(count(&w), 3, "acknowledged operations stay");
    assert_eq!(w.read_blob(&recs[0].digest, false).unwrap(), vec![0u8; 10]);
    w.flush().unwrap();
    r.refresh().unwrap();
    assert_eq!(count(&r), 3, "the kept batch went up");
    assert_eq!(r.read_blob(&recs[2].digest, true).unwrap(), vec![2u8; 10]);
}

#[test]
fn a_listing_that_lags_shows_the_segment_later() {
    let b = Bucket::new("lag");
    let (w, r) = (b.open(Durability::Fsync), b.open(Durability::Fsync));
    b.s3.hide(Some("/log/"));
    w.put_bytes(b"late", &[meta("a")]).unwrap();
    r.refresh().unwrap();
    assert_eq!(count(&r), 0, "not listed yet");
    b.s3.hide(None);
    r.refresh().unwrap();
    assert_eq!(count(&r), 1);
}

#[test]
fn compaction_by_one_writer_keeps_every_record_of_all() {
    let b = Bucket::new("compact");
    let (w1, w2) = (b.open(Durability::Fsync), b.open(Durability::Fsync));
    for i in 0..5u8 {
        w1.put_bytes(&[i; 3], &[meta("one")]).unwrap();
        w2.put_bytes(&[i; 4], &[meta("two")]).unwrap();
    }
    w1.refresh().unwrap();
    let deleted = w1.compact().unwrap();
    assert_eq!(deleted, 10, "every segment seen goes into the snapshot");
    assert!(b.keys("t/log").is_empty());
    assert_eq!(b.keys("t/snap").len(), 1);
    w2.put_bytes(b"after", &[meta("two")]).unwrap();
    let fresh = b.open(Durability::Fsync);
    assert_eq!(count(&fresh), 11);
    w2.refresh().unwrap();
    assert_eq!(
        count(&w2),
        11,
        "a writer whose segments were compacted away loses nothing"
    );
}

#[test]
fn a_pin_and_a_delete_from_two_writers_resolve_alike_everywhere() {
    let b = Bucket::new("conflict");
    let (w1, w2) = (b.open(Durability::Fsync), b.open(Durability::Fsync));
    let a = w1.put_bytes(b"contested", &[meta("a")]).unwrap().remove(0);
    w2.refresh().unwrap();
    w2.delete(a.id).unwrap();
    // The later clock wins: w1 pins after the delete, so the record comes back pinned.
    w1.refresh().unwrap();
    let _ = w1.pin(a.id, true);
    for s in [&w1, &w2] {
        s.refresh().unwrap();
    }
    let fresh = b.open(Durability::Fsync);
    let seen: Vec<bool> = [&w1, &w2, &fresh]
        .iter()
        .map(|s| {
            let s: &dyn ArtifactStore = *s;
            s.read(|m| m.get(a.id).is_some_and(|r| r.pinned)).unwrap()
        })
        .collect();
    assert!(seen.iter().all(|&x| x == seen[0]), "{seen:?}");
}

#[test]
fn a_record_of_bytes_in_a_stuck_batch_carries_them_in_its_own_segment() {
    let b = Bucket::new("stuck-dependency");
    let w = b.open(Durability::Os);
    let a = w.put_bytes(b"first batch", &[meta("a")]).unwrap().remove(0);
    // The first segment (sequence 1) never goes up.
    b.s3.fail_puts("/0000000000000001", PutFault::Refused, usize::MAX);
    assert!(w.flush().is_err());
    let again = w.record_stored(a.digest, &[meta("b")]).unwrap().remove(0);
    assert!(w.flush().is_err(), "the first batch is still stuck");
    let fresh = b.open(Durability::Fsync);
    assert_eq!(count(&fresh), 1, "the second segment is stored, by itself");
    let s: &dyn ArtifactStore = &fresh;
    assert!(s.read(|m| m.get(again.id).is_some()).unwrap());
    assert_eq!(fresh.read_blob(&a.digest, true).unwrap(), b"first batch");
}
