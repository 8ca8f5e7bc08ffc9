//! Content hashing: BLAKE3 (the default) and SHA-256 (for compatibility with tools that key
//! content by SHA-256). One streaming `Hasher` for bytes as they arrive, and whole-input paths
//! (`hash_bytes`, `hash_file`) that use every core for large inputs.
//!
//! Invariant: for a given algorithm, streaming the same bytes in any chunking gives the same
//! `Digest` as the one-shot functions. Digests are written `<algo>:<lowercase hex>`.

use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::str::FromStr;

use sha2::Digest as _;

use crate::error::{Error, IoContext, Result};

/// Below this size a one-shot BLAKE3 hash runs on the calling thread: rayon's fork-join costs
/// more than it gains (the blake3 crate documents 128 KiB as the break-even point).
const PARALLEL_MIN: usize = 1 << 20;

/// The content hash algorithms a store can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlgo {
    Blake3,
    Sha256,
}

impl HashAlgo {
    pub fn name(self) -> &'static str {
        match self {
            HashAlgo::Blake3 => "blake3",
            HashAlgo::Sha256 => "sha256",
        }
    }
}

impl FromStr for HashAlgo {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "blake3" => Ok(HashAlgo::Blake3),
            "sha256" | "sha-256" => Ok(HashAlgo::Sha256),
            other => Err(Error::invalid(format!(
                "unknown hash algorithm {other:?}: expected \"blake3\" or \"sha256\""
            ))),
        }
    }
}

impl fmt::Display for HashAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A 32-byte content digest together with the algorithm that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algo: u8,
    bytes: [u8; 32],
}

impl Digest {
    pub fn new(algo: HashAlgo, bytes: [u8; 32]) -> Self {
        Digest {
            algo: algo as u8,
            bytes,
        }
    }

    pub fn algo(&self) -> HashAlgo {
        if self.algo == HashAlgo::Sha256 as u8 {
            HashAlgo::Sha256
        } else {
            HashAlgo::Blake3
        }
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// The 64 lowercase hex digits, without the algorithm prefix.
    pub fn hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.bytes {
            s.push(HEX[(b >> 4) as usize] as char);
            s.push(HEX[(b & 15) as usize] as char);
        }
        s
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algo().name(), self.hex())
    }
}

impl FromStr for Digest {
    type Err = Error;
    /// Parses `<algo>:<64 hex>`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(format!(
                "not a digest: {s:?} (expected \"blake3:<64 hex>\" or \"sha256:<64 hex>\")"
            ))
        };
        let (algo, hex) = s.split_once(':').ok_or_else(bad)?;
        let algo: HashAlgo = algo.parse().map_err(|_| bad())?;
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (i, pair) in hex.as_bytes().chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or_else(bad)?;
            let lo = hex_val(pair[1]).ok_or_else(bad)?;
            bytes[i] = (hi << 4) | lo;
        }
        Ok(Digest::new(algo, bytes))
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// A streaming hasher for either algorithm.
#[derive(Clone)]
pub enum Hasher {
    Blake3(Box<blake3::Hasher>),
    Sha256(sha2::Sha256),
}

impl Hasher {
    pub fn new(algo: HashAlgo) -> Self {
        match algo {
            HashAlgo::Blake3 => Hasher::Blake3(Box::new(blake3::Hasher::new())),
            HashAlgo::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
        }
    }

    pub fn algo(&self) -> HashAlgo {
        match self {
            Hasher::Blake3(_) => HashAlgo::Blake3,
            Hasher::Sha256(_) => HashAlgo::Sha256,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Blake3(h) => {
                h.update(data);
            }
            Hasher::Sha256(h) => h.update(data),
        }
    }

    /// Like `update`, but spreads a large BLAKE3 input over the rayon pool.
    pub fn update_parallel(&mut self, data: &[u8]) {
        match self {
            Hasher::Blake3(h) if data.len() >= PARALLEL_MIN => {
                h.update_rayon(data);
            }
            _ => self.update(data),
        }
    }

    pub fn finalize(&self) -> Digest {
        match self {
            Hasher::Blake3(h) => Digest::new(HashAlgo::Blake3, *h.finalize().as_bytes()),
            Hasher::Sha256(h) => {
                let out = h.clone().finalize();
                let mut bytes = [0u8; 32];
                bytes.copy_from_slice(&out[..]);
                Digest::new(HashAlgo::Sha256, bytes)
            }
        }
    }
}

/// Hashes a whole buffer; BLAKE3 inputs of 1 MiB and more use all cores.
pub fn hash_bytes(algo: HashAlgo, data: &[u8]) -> Digest {
    let mut h = Hasher::new(algo);
    h.update_parallel(data);
    h.finalize()
}

/// Hashes a whole file. Large files are memory-mapped (no copy into a buffer) and BLAKE3 uses
/// all cores on them; small files are read with one buffer.
///
/// Only a regular file is read: a FIFO, socket or device is an `InvalidArgument` error before
/// any read (see `input.rs`).
pub fn hash_file(algo: HashAlgo, path: &Path) -> Result<(Digest, u64)> {
    let (file, _) = crate::input::open_regular(path, crate::input::Links::Follow, "hash")?;
    hash_open_file(algo, &file, path)
}

pub(crate) fn hash_open_file(algo: HashAlgo, file: &File, path: &Path) -> Result<(Digest, u64)> {
    let meta = file.metadata().ctx("stat", path)?;
    if meta.is_dir() {
        return Err(Error::invalid(format!(
            "{} is a directory, not a file",
            path.display()
        )));
    }
    let len = meta.len();
    let mut h = Hasher::new(algo);
    if len >= PARALLEL_MIN as u64 && meta.is_file() {
        // Safety: the map is read-only and dropped before we return. A concurrent writer that
        // truncates the file could fault the process (SIGBUS); callers hash files they own or
        // files inside the store, whose blobs are never modified in place.
        let map = unsafe { memmap2::Mmap::map(file) }.ctx("mmap", path)?;
        h.update_parallel(&map);
        return Ok((h.finalize(), len));
    }
    // Positional reads: the hash covers the file from offset 0 whatever its cursor is.
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match file.read_at(&mut buf, total) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", path, e)),
        };
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((h.finalize(), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_vectors() {
        // Published test vectors for the empty input and "abc".
        assert_eq!(
            hash_bytes(HashAlgo::Sha256, b"").hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hash_bytes(HashAlgo::Sha256, b"abc").hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hash_bytes(HashAlgo::Blake3, b"").hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn streaming_equals_one_shot() {
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for algo in [HashAlgo::Blake3, HashAlgo::Sha256] {
            let one = hash_bytes(algo, &data);
            for chunk in [1usize, 7, 4096, 65_537, 1 << 20] {
                let mut h = Hasher::new(algo);
                for c in data.chunks(chunk) {
                    h.update(c);
                }
                assert_eq!(h.finalize(), one, "{algo} chunk {chunk}");
            }
        }
    }

    #[test]
    fn digest_round_trips_through_text() {
        let d = hash_bytes(HashAlgo::Blake3, b"x");
        let s = d.to_string();
        assert!(s.starts_with("blake3:"));
        assert_eq!(s.parse::<Digest>().unwrap(), d);
        assert!("blake3:zz".parse::<Digest>().is_err());
        assert!("md5:00".parse::<Digest>().is_err());
    }
}
