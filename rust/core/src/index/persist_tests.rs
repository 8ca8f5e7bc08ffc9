//! Tests of `SharedIndex`: appends, catch-up, compaction, recovery, several handles.

use std::fs::OpenOptions;
use std::sync::Arc;

use super::*;
use crate::hash::{Digest, HashAlgo};
use crate::index::record::{ArtifactId, OwnedRecord};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("runstash-idx-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn put(id: u128) -> Op {
    Op::Put(Box::new(OwnedRecord {
        id: ArtifactId(id),
        kind: Arc::from("k"),
        digest: Digest::new(HashAlgo::Blake3, [7; 32]),
        size: 3,
        uri: None,
        mime: None,
        created_us: 1,
        run_id: None,
        graph_id: None,
        node_id: None,
        project_id: None,
        labels: vec![],
        metrics: vec![(Arc::from("m"), id as f64)],
        pinned: false,
    }))
}

fn count(ix: &SharedIndex) -> usize {
    ix.read(|m| m.len()).unwrap()
}

#[test]
fn two_handles_see_each_other_and_survive_compaction() {
    let d = dir("two");
    let a = SharedIndex::create(&d, Durability::Os).unwrap();
    let b = SharedIndex::open(&d, Durability::Os).unwrap();
    a.append(&[put(1), put(2)], |_| Ok(())).unwrap();
    assert_eq!(count(&b), 2);
    b.append(&[put(3)], |_| Ok(())).unwrap();
    a.compact().unwrap();
    b.append(&[put(4)], |_| Ok(())).unwrap(); // b follows the seal to the new segment
    assert_eq!(count(&a), 4);
    a.compact().unwrap();
    a.compact().unwrap(); // b's segment is gone twice over: b reloads from the snapshot
    assert_eq!(count(&b), 4);
    drop((a, b));
    let c = SharedIndex::open(&d, Durability::Os).unwrap();
    assert_eq!(count(&c), 4);
    let names: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.iter().filter(|n| n.starts_with("snap-")).count(), 1);
}

#[test]
fn torn_tail_is_truncated_and_writes_continue() {
    let d = dir("torn");
    let a = SharedIndex::create(&d, Durability::Os).unwrap();
    a.append(&[put(1)], |_| Ok(())).unwrap();
    a.append(&[put(2)], |_| Ok(())).unwrap();
    drop(a);
    let seg = d.join(segment_name(1));
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 3).unwrap();
    drop(f);
    let a = SharedIndex::open(&d, Durability::Os).unwrap();
    assert_eq!(count(&a), 1);
    a.append(&[put(3)], |_| Ok(())).unwrap();
    drop(a);
    let a = SharedIndex::open(&d, Durability::Os).unwrap();
    assert_eq!(
        a.read(|m| m.iter().map(|r| r.id.0).collect::<Vec<_>>())
            .unwrap(),
        vec![1, 3]
    );
}

#[test]
fn failed_check_appends_nothing() {
    let d = dir("check");
    let a = SharedIndex::create(&d, Durability::Fsync).unwrap();
    let e = a
        .append(&[put(1)], |_| Err(Error::not_found("nope")))
        .unwrap_err();
    assert_eq!(e.kind(), crate::ErrorKind::NotFound);
    assert_eq!(count(&a), 0);
    drop(a);
    assert_eq!(count(&SharedIndex::open(&d, Durability::Os).unwrap()), 0);
}
