//! Tests of `Store`: open and create, URIs, packing, writes beside gc.

use super::*;

fn root(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("runstash-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Every write path survives a gc that takes its blob between publish and record: the
/// blob is published again under the index lock, the write succeeds, and its bytes read
/// back (also when the content was already there, a dedup hit on an orphan).
#[test]
fn writes_survive_a_gc_between_publish_and_record() {
    let s = test_store("collected");
    let big = vec![7u8; (DEFAULT_PACK_MAX + 10) as usize];
    let meta = || RecordMeta {
        kind: "t".into(),
        ..RecordMeta::default()
    };
    COLLECT_BEFORE_RECORD.with(|c| c.set(true));
    let check = |s: &Store, recs: Vec<OwnedRecord>, want: &[u8]| {
        let d = recs[0].digest;
        assert_eq!(s.read_blob(&d, true).unwrap(), want);
    };
    for round in 0..2 {
        // round 1: every blob already exists before the write (dedup hit on an orphan)
        let mut data = big.clone();
        data[0] = 1;
        check(&s, s.put_bytes(&data, &[meta()]).unwrap(), &data);

        data[0] = 2;
        let src = s.root().join("src.bin");
        std::fs::write(&src, &data).unwrap();
        check(&s, s.save(&src, &[meta()]).unwrap(), &data);
        assert_eq!(std::fs::read(&src).unwrap(), data, "source untouched");

        data[0] = 3;
        let staged = s.blobs.stage("bin").unwrap();
        std::fs::write(&staged, &data).unwrap();
        check(&s, s.ingest(&staged, &[meta()]).unwrap(), &data);
        assert!(
            !staged.exists(),
            "round {round}: staged name goes after the record"
        );

        data[0] = 4;
        let mut w = s.writer("bin").unwrap();
        w.write_all(&data).unwrap();
        check(&s, s.commit_writer(w, &[meta()]).unwrap(), &data);
    }
    COLLECT_BEFORE_RECORD.with(|c| c.set(false));
    assert_eq!(
        std::fs::read_dir(s.blobs.staging_dir()).unwrap().count(),
        0,
        "no temp or staged file is left"
    );
    let report = s.verify_report(&mut |_| true).unwrap();
    assert!(report.is_clean(), "{report:?}");
}

#[test]
fn reopen_checks_hash_and_version() {
    let r = root("meta");
    let opts = OpenOptions {
        hash: Some(HashAlgo::Sha256),
        durability: Durability::Os,
        ..OpenOptions::default()
    };
    let s = Store::open(&r, opts).unwrap();
    assert_eq!(s.meta().hash, "sha256");
    assert!(Store::open(&r, OpenOptions { hash: None, ..opts }).is_ok());
    let e = Store::open(
        &r,
        OpenOptions {
            hash: Some(HashAlgo::Blake3),
            ..opts
        },
    )
    .unwrap_err();
    assert_eq!(e.kind(), crate::ErrorKind::Incompatible);
    let meta = r.join(META_FILE);
    let text = std::fs::read_to_string(&meta)
        .unwrap()
        .replace("\"format_version\": 1", "\"format_version\": 99");
    std::fs::write(&meta, text).unwrap();
    let e = Store::open(&r, opts).unwrap_err();
    assert_eq!(e.kind(), crate::ErrorKind::Incompatible);
    assert!(e.message().contains("newer"));
}

#[test]
fn refuses_files_and_foreign_directories() {
    let r = root("foreign");
    std::fs::create_dir_all(&r).unwrap();
    std::fs::write(r.join("notes.txt"), b"mine").unwrap();
    assert!(Store::open(&r, OpenOptions::default()).is_err());
    assert!(Store::open(&r.join("notes.txt"), OpenOptions::default()).is_err());
}

#[test]
fn uris_round_trip() {
    let r = root("uri dir");
    let s = Store::open(
        &r,
        OpenOptions {
            hash: None,
            durability: Durability::Os,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    let info = s.blobs().put_bytes(b"x").unwrap();
    let uri = s.uri_of(&info.digest);
    assert!(uri.contains("%20"));
    assert_eq!(s.digest_from_uri(&uri).unwrap(), info.digest);
    assert!(s.digest_from_uri("file:///etc/passwd").is_err());
}

fn meta(kind: &str) -> RecordMeta {
    RecordMeta {
        kind: kind.to_string(),
        ..RecordMeta::default()
    }
}

fn log_files(r: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(r.join("index"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("log-"))
        .collect();
    v.sort();
    v
}

#[test]
fn packed_blobs_survive_compaction_and_reopen() {
    let r = root("packed");
    let opts = OpenOptions {
        durability: Durability::Os,
        ..OpenOptions::default()
    };
    let s = Store::open(&r, opts).unwrap();
    let a = s.put_bytes(b"kept", &[meta("k")]).unwrap().remove(0);
    let gone = s.put_bytes(b"dropped", &[meta("k")]).unwrap().remove(0);
    let dup = s.put_bytes(b"kept", &[meta("k")]).unwrap().remove(0);
    assert_eq!(a.digest, dup.digest);
    s.delete(gone.id).unwrap();
    s.index().compact().unwrap();
    // The first segment holds "kept", which live records name: it stays beside the snapshot.
    assert_eq!(log_files(&r).len(), 2);
    assert_eq!(s.read_blob(&a.digest, true).unwrap(), b"kept");
    assert!(!s.has_blob(&gone.digest));
    drop(s);
    let s = Store::open(&r, opts).unwrap();
    assert_eq!(s.read_blob(&a.digest, true).unwrap(), b"kept");
    assert!(s.blobs().path_of(&a.digest).symlink_metadata().is_err());
    let p = s.blob_path(&a.digest).unwrap();
    assert_eq!(std::fs::read(p).unwrap(), b"kept");
    // Once no live record names packed bytes, compaction lets their segment go.
    s.delete(a.id).unwrap();
    s.delete(dup.id).unwrap();
    s.index().compact().unwrap();
    assert_eq!(log_files(&r).len(), 1);
    assert!(
        Store::open(&r, opts)
            .unwrap()
            .read_blob(&a.digest, false)
            .is_ok(),
        "the materialized file still serves reads"
    );
}

#[test]
fn a_second_handle_reads_packed_bytes_from_a_sealed_segment() {
    let r = root("packed2");
    let opts = OpenOptions {
        durability: Durability::Os,
        ..OpenOptions::default()
    };
    let a = Store::open(&r, opts).unwrap();
    let b = Store::open(&r, opts).unwrap();
    let rec = a
        .put_bytes(b"shared bytes", &[meta("k")])
        .unwrap()
        .remove(0);
    a.index().compact().unwrap();
    a.put_bytes(b"newer", &[meta("k")]).unwrap();
    assert_eq!(b.read_blob(&rec.digest, true).unwrap(), b"shared bytes");
    assert_eq!(b.blob_size(&rec.digest).unwrap(), 12);
}

#[test]
fn bytes_packed_again_after_their_segment_was_compacted_away() {
    let r = root("packed3");
    let opts = OpenOptions {
        durability: Durability::Os,
        ..OpenOptions::default()
    };
    let a = Store::open(&r, opts).unwrap();
    let b = Store::open(&r, opts).unwrap();
    let old = a.put_bytes(b"again", &[meta("k")]).unwrap().remove(0);
    assert!(b.has_blob(&old.digest)); // b notes where the bytes are
    a.delete(old.id).unwrap();
    a.index().compact().unwrap(); // no live record names them: their segment goes
    let new = b.put_bytes(b"again", &[meta("k")]).unwrap().remove(0);
    drop((a, b));
    let c = Store::open(&r, opts).unwrap();
    assert_eq!(c.read_blob(&new.digest, true).unwrap(), b"again");
    c.index().compact().unwrap();
    drop(c);
    let c = Store::open(&r, opts).unwrap();
    assert_eq!(c.read_blob(&new.digest, true).unwrap(), b"again");
}
