//! Tests of `BlobStore`: dedup, read-only blobs, save, stage and ingest, writers, verify.

use super::*;

fn store(name: &str) -> BlobStore {
    let d = std::env::temp_dir().join(format!("runstash-blobs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("staging")).unwrap();
    std::fs::create_dir_all(d.join("blobs")).unwrap();
    BlobStore::new(d.canonicalize().unwrap(), HashAlgo::Blake3, Durability::Os)
}

#[test]
fn dedup_and_read_only() {
    let s = store("dedup");
    let a = s.put_bytes(b"same").unwrap();
    let b = s.put_bytes(b"same").unwrap();
    assert!(a.created && !b.created);
    assert_eq!(a.digest, b.digest);
    let mode = std::fs::metadata(&a.path).unwrap().permissions().mode();
    assert_eq!(mode & 0o222, 0, "blob must be read-only");
    assert_eq!(s.read(&a.digest, true).unwrap(), b"same");
    assert_eq!(std::fs::read_dir(s.staging_dir()).unwrap().count(), 0);
}

#[test]
fn save_large_file_matches_put() {
    let s = store("save");
    let src = s.root().join("src.bin");
    let data: Vec<u8> = (0..3_000_003u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    let saved = s.save(&src).unwrap();
    assert_eq!(saved.digest, hash_bytes(HashAlgo::Blake3, &data));
    assert_eq!(std::fs::read(&saved.path).unwrap(), data);
    assert_eq!(
        std::fs::read(&src).unwrap(),
        data,
        "source must be untouched"
    );
    assert!(s.verify(&saved.digest).unwrap());
}

#[test]
fn ingest_only_from_staging() {
    let s = store("ingest");
    let staged = s.stage(".txt").unwrap();
    std::fs::write(&staged, b"hello").unwrap();
    let info = s.ingest(&staged).unwrap();
    assert!(!staged.exists());
    assert_eq!(std::fs::read(&info.path).unwrap(), b"hello");
    let outside = s.root().join("outside.txt");
    std::fs::write(&outside, b"x").unwrap();
    assert_eq!(
        s.ingest(&outside).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert!(outside.exists());
}

#[test]
fn verify_all_finds_corruption() {
    let s = store("verify");
    let a = s.put_bytes(b"good").unwrap();
    let b = s.put_bytes(b"bad!").unwrap();
    std::fs::set_permissions(&b.path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&b.path, b"BAD!").unwrap();
    let r = s.verify_all().unwrap();
    assert_eq!(r.checked, 2);
    assert_eq!(r.corrupt, vec![b.path.clone()]);
    assert!(s.verify(&a.digest).unwrap());
    // The damaged file was moved aside: the name is free for a fresh copy.
    assert_eq!(s.quarantined().unwrap().len(), 1);
    assert_eq!(
        s.read(&b.digest, true).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(s.put_bytes(b"bad!").unwrap().created);
    assert_eq!(s.read(&b.digest, true).unwrap(), b"bad!");
}
