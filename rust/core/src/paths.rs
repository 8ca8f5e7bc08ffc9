//! Validation of names and paths that callers hand us (invariant 4 of DESIGN.md): nothing is
//! ever written outside the store root or the path a caller named. Relative names may not be
//! empty, absolute, or climb with `..`; paths inside the store may not leave it through a
//! symlink.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Checks a single path component (a run id, a kind, a file name): no separators, no NUL,
/// not `.` or `..`, not empty.
pub fn validate_component(value: &str, what: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(format!("{what} must not be empty")));
    }
    if value == "." || value == ".." {
        return Err(Error::invalid(format!("{what} must not be {value:?}")));
    }
    if value.contains(['/', '\\', '\0']) {
        return Err(Error::invalid(format!(
            "{what} {value:?} must not contain a path separator or NUL"
        )));
    }
    Ok(())
}

/// Checks a relative path (a suggested URI, a directory entry): not empty, not absolute, no
/// `..` component, no NUL. Returns it normalised (no `.` components).
pub fn validate_relative(value: &str, what: &str) -> Result<PathBuf> {
    if value.is_empty() {
        return Err(Error::invalid(format!("{what} must not be empty")));
    }
    if value.contains('\0') {
        return Err(Error::invalid(format!(
            "{what} {value:?} must not contain NUL"
        )));
    }
    let mut out = PathBuf::new();
    for comp in Path::new(value).components() {
        match comp {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(Error::invalid(format!(
                    "{what} {value:?} must not contain '..'"
                )));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(Error::invalid(format!(
                    "{what} {value:?} must be relative, not absolute"
                )));
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(Error::invalid(format!("{what} {value:?} names no file")));
    }
    Ok(out)
}

/// Normalises a file extension: `"png"` and `".png"` both give `".png"`; `""` gives `""`.
/// Only ASCII letters, digits, `.`, `_` and `-` are allowed, up to 32 characters.
pub fn normalize_ext(ext: &str) -> Result<String> {
    if ext.is_empty() {
        return Ok(String::new());
    }
    let body = ext.strip_prefix('.').unwrap_or(ext);
    let ok = !body.is_empty()
        && body.len() <= 32
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        return Err(Error::invalid(format!(
            "extension {ext:?} must be up to 32 ASCII letters, digits, '.', '_' or '-'"
        )));
    }
    Ok(format!(".{body}"))
}

/// Resolves `path` (which must exist) and checks that it lies inside `root` (already
/// canonical). Symlinks are followed before the check, so a link pointing out is refused.
pub fn ensure_inside(root: &Path, path: &Path, what: &str) -> Result<PathBuf> {
    let real = path.canonicalize().ctx("resolve", path)?;
    if !real.starts_with(root) {
        return Err(Error::invalid(format!(
            "{what} {} resolves to {}, outside the store {}",
            path.display(),
            real.display(),
            root.display()
        )));
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components() {
        assert!(validate_component("run-1", "run id").is_ok());
        for bad in ["", ".", "..", "a/b", "a\\b", "a\0b"] {
            assert!(validate_component(bad, "run id").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            validate_relative("./a/b.txt", "uri").unwrap(),
            PathBuf::from("a/b.txt")
        );
        for bad in ["", "/etc/passwd", "../x", "a/../../x", ".", "a\0"] {
            assert!(validate_relative(bad, "uri").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn extensions() {
        assert_eq!(normalize_ext("png").unwrap(), ".png");
        assert_eq!(normalize_ext(".tar.gz").unwrap(), ".tar.gz");
        assert_eq!(normalize_ext("").unwrap(), "");
        for bad in [".", "../x", "a/b", "a b"] {
            assert!(normalize_ext(bad).is_err(), "{bad:?}");
        }
    }
}
