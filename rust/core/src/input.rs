//! Opening the files callers hand us to store or hash.
//!
//! Invariants:
//! - A caller's file is opened without blocking (`O_NONBLOCK`: opening a FIFO with no writer
//!   would wait forever) and checked with `fstat` on the open descriptor before a byte is
//!   read: only a regular file is read. A FIFO, a socket or a device (`/dev/zero` reads
//!   forever) is an `InvalidArgument` error, and so is a directory.
//! - What is checked is what is read: the descriptor, never the path a second time.
//! - A path with a NUL byte is an `InvalidArgument` error (the OS cannot even be asked).

use std::fs::File;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// How to treat a symlink as the last component of a caller's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Follow it (a file the caller names by a link is the file).
    Follow,
    /// Refuse it (inside the store, a link could lead anywhere).
    Refuse,
}

/// Opens a caller's regular file for reading; anything else is refused before any read.
pub fn open_regular(path: &Path, links: Links, what: &str) -> Result<(File, std::fs::Metadata)> {
    check_no_nul(path)?;
    let mut flags = rustix::fs::OFlags::NONBLOCK.bits() as i32;
    if links == Links::Refuse {
        flags |= rustix::fs::OFlags::NOFOLLOW.bits() as i32;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| {
            if links == Links::Refuse
                && e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
            {
                Error::invalid(format!(
                    "refusing to {what} {}: it is a symlink",
                    path.display()
                ))
            } else {
                Error::io("open", path, e)
            }
        })?;
    let meta = file.metadata().ctx("stat", path)?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let kind = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_socket() {
            "a socket"
        } else if ft.is_char_device() || ft.is_block_device() {
            "a device"
        } else {
            "not a regular file"
        };
        return Err(Error::invalid(format!(
            "cannot {what} {}: it is {kind}, not a regular file",
            path.display()
        )));
    }
    // Back to blocking reads (a regular file ignores the flag, but leave it as callers expect).
    let fl = rustix::fs::fcntl_getfl(&file).ctx("fcntl", path)?;
    rustix::fs::fcntl_setfl(&file, fl - rustix::fs::OFlags::NONBLOCK).ctx("fcntl", path)?;
    Ok((file, meta))
}

/// A path with a NUL byte is bad input, not an OS error.
pub fn check_no_nul(path: &Path) -> Result<()> {
    if path.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(Error::invalid(format!(
            "path {:?} contains a NUL byte",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn refuses_everything_but_regular_files() {
        let d = std::env::temp_dir().join(format!("runstash-input-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let fifo = d.join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        for p in [fifo.as_path(), Path::new("/dev/zero"), d.as_path()] {
            let e = open_regular(p, Links::Follow, "save").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{p:?}: {e}");
        }
        let f = d.join("f");
        std::fs::write(&f, b"x").unwrap();
        std::os::unix::fs::symlink(&f, d.join("l")).unwrap();
        assert!(open_regular(&d.join("l"), Links::Follow, "save").is_ok());
        let e = open_regular(&d.join("l"), Links::Refuse, "ingest").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let e = open_regular(Path::new("a\0b"), Links::Follow, "save").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    }
}
