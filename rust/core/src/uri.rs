//! Blob URIs: a store's prefix (a local store: `file://` plus the percent-encoded absolute
//! path of `blobs/`; an S3 store: `s3://bucket/prefix/blobs/`), then `<2 hex>/<rest>`. The only
//! place that formats or parses one.

use std::path::Path;

use crate::error::{Error, Result};
use crate::hash::{Digest, HashAlgo};

/// `file://` URI of a path (percent-encoded, every byte outside `[A-Za-z0-9/._~-]`).
pub(crate) fn file_uri(path: &Path) -> String {
    let mut out = String::from("file://");
    for &b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The URI of the blob `d` in a store whose blob URIs start with `prefix` (ending in `/`).
pub fn blob_uri(prefix: &str, d: &Digest) -> String {
    let hex = d.hex();
    format!("{prefix}{}/{}", &hex[..2], &hex[2..])
}

/// The digest named by a blob URI starting with `prefix` (an S3 store's); an error for any
/// other URI.
pub(crate) fn digest_from_prefixed(prefix: &str, algo: HashAlgo, uri: &str) -> Result<Digest> {
    let rest = uri
        .strip_prefix(prefix)
        .ok_or_else(|| Error::invalid(format!("{uri} does not belong to this store ({prefix})")))?;
    let hex: String = rest.chars().filter(|&c| c != '/').collect();
    format!("{}:{hex}", algo.name())
        .parse()
        .map_err(|_| Error::invalid(format!("URI {uri:?} does not name a blob of this store")))
}

/// Undoes [`file_uri`]'s escapes; a `%` not followed by two hex digits stays as it is.
fn percent_decode(s: &str) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16).map(|v| v as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(&h), Some(&l)) = (b.get(i + 1), b.get(i + 2))
            && let (Some(h), Some(l)) = (hex(h), hex(l))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The digest named by a blob URI of the store at `root` (hashing with `algo`); an error for
/// any other URI.
pub(crate) fn digest_from_file_uri(root: &Path, algo: HashAlgo, uri: &str) -> Result<Digest> {
    use std::os::unix::ffi::OsStrExt;
    let path = uri
        .strip_prefix("file://")
        .map(percent_decode)
        .ok_or_else(|| Error::invalid(format!("{uri:?} is not a file:// URI of this store")))?;
    let path = Path::new(std::ffi::OsStr::from_bytes(&path));
    let rel = path.strip_prefix(root.join("blobs")).map_err(|_| {
        Error::invalid(format!(
            "URI {uri:?} does not belong to the store at {}",
            root.display()
        ))
    })?;
    let hex: String = rel.iter().map(|c| c.to_string_lossy()).collect();
    format!("{algo}:{hex}")
        .parse()
        .map_err(|_| Error::invalid(format!("URI {uri:?} does not name a blob of this store")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip_and_odd_escapes_never_panic() {
        let root = Path::new("/data/my store/\u{e9}t\u{e9}");
        let d = crate::hash_bytes(HashAlgo::Blake3, b"x");
        let hex = d.hex();
        let uri = file_uri(&root.join("blobs").join(&hex[..2]).join(&hex[2..]));
        assert!(
            uri.starts_with("file:///data/my%20store/%C3%A9t%C3%A9/blobs/"),
            "{uri}"
        );
        assert_eq!(
            digest_from_file_uri(root, HashAlgo::Blake3, &uri).unwrap(),
            d
        );
        for odd in [
            "file:///x%",
            "file:///x%4",
            "file:///x%a\u{e9}",
            "file:///%zz",
            "file://%C3",
        ] {
            assert!(
                digest_from_file_uri(root, HashAlgo::Blake3, odd).is_err(),
                "{odd}"
            );
        }
        assert_eq!(percent_decode("%41%a\u{e9}%"), "A%a\u{e9}%".as_bytes());
    }
}
