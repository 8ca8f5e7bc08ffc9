//! `BlobWriter`: a streaming blob write, hashed as the bytes arrive, published atomically.
//!
//! Invariants:
//! - Nothing of an unfinished write is ever visible under `blobs/`: bytes sit in memory or in
//!   a temp file in `staging/` until the commit publishes them (see `blobs.rs`).
//! - Up to `spill_at` bytes stay in memory, so a small artifact costs no file at all.

use crate::atomic::AtomicFile;
use crate::blobs::{BlobInfo, BlobStore};
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::hash::{Digest, hash_bytes};

/// A streaming blob write in progress. Dropping it without `commit` leaves nothing behind.
///
/// A writer made by [`BlobStore::writer_buffered`] keeps its first bytes in memory and
/// creates its temp file only when they outgrow `spill_at`: a small artifact then costs no file
/// at all when it is packed into the index log.
pub struct BlobWriter {
    pub(crate) store: BlobStore,
    pub(crate) ext: String,
    pub(crate) sink: Sink,
    pub(crate) spill_at: u64,
}

pub(crate) enum Sink {
    Mem { buf: Vec<u8>, pos: u64 },
    File(AtomicFile),
}

impl BlobWriter {
    /// Moves the bytes held in memory to a temp file, at the same position.
    pub(crate) fn spill(&mut self) -> Result<&mut AtomicFile> {
        if let Sink::Mem { buf, pos } = &self.sink {
            let mut f = AtomicFile::create_in(
                &self.store.staging,
                self.store.durability,
                Some(self.store.algo),
                0o444,
                &self.ext,
            )?;
            f.write_all(buf)?;
            if *pos != buf.len() as u64 {
                f.seek(std::io::SeekFrom::Start(*pos))?;
            }
            self.sink = Sink::File(f);
        }
        match &mut self.sink {
            Sink::File(f) => Ok(f),
            Sink::Mem { .. } => Err(Error::new(ErrorKind::Io, "writer failed to spill")),
        }
    }

    pub fn write_all(&mut self, data: &[u8]) -> Result<()> {
        if let Sink::Mem { buf, pos } = &mut self.sink {
            let end = *pos + data.len() as u64;
            if end <= self.spill_at {
                let (at, end) = (*pos as usize, end as usize);
                if buf.len() < end {
                    buf.resize(end, 0);
                }
                buf[at..end].copy_from_slice(data);
                *pos = end as u64;
                return Ok(());
            }
        }
        self.spill()?.write_all(data)
    }

    pub fn seek(&mut self, to: std::io::SeekFrom) -> Result<u64> {
        if let Sink::Mem { buf, pos } = &mut self.sink {
            let base = match to {
                std::io::SeekFrom::Start(n) => Some(n),
                std::io::SeekFrom::Current(d) => pos.checked_add_signed(d),
                std::io::SeekFrom::End(d) => (buf.len() as u64).checked_add_signed(d),
            };
            let Some(p) = base else {
                return Err(Error::invalid("seek to a negative position"));
            };
            if p <= self.spill_at {
                *pos = p;
                return Ok(p);
            }
        }
        self.spill()?.seek(to)
    }

    pub fn position(&self) -> u64 {
        match &self.sink {
            Sink::Mem { pos, .. } => *pos,
            Sink::File(f) => f.position(),
        }
    }

    pub fn size(&self) -> u64 {
        match &self.sink {
            Sink::Mem { buf, .. } => buf.len() as u64,
            Sink::File(f) => f.size(),
        }
    }

    /// When at most `max` bytes were written: their digest and the bytes themselves (from
    /// memory, or read back from the temp file, which goes when the writer is dropped).
    pub fn take_small(&mut self, max: u64) -> Result<Option<(Digest, Vec<u8>)>> {
        if self.size() > max {
            return Ok(None);
        }
        match &mut self.sink {
            Sink::Mem { buf, .. } => {
                let data = std::mem::take(buf);
                Ok(Some((hash_bytes(self.store.algo, &data), data)))
            }
            Sink::File(f) => {
                let (digest, size) = f.digest()?;
                let mut data = vec![0u8; size as usize];
                std::os::unix::fs::FileExt::read_exact_at(f.file(), &mut data, 0)
                    .ctx("read", f.temp_path())?;
                Ok(Some((digest, data)))
            }
        }
    }

    /// Hashes (streamed, or re-read after seeks) and publishes the blob, keeping what was
    /// written (in memory, or the temp file by a hard link) until the writer is dropped, so a
    /// second call publishes it again if a concurrent garbage collection removed it.
    pub fn publish_keep(&mut self) -> Result<BlobInfo> {
        match &mut self.sink {
            Sink::Mem { buf, .. } => self.store.put_bytes(buf),
            Sink::File(f) => {
                let (digest, size) = f.digest()?;
                let created = self
                    .store
                    .publish_checked(&digest, size, |dest| f.link_noreplace(dest))?;
                Ok(self.store.info(digest, size, created))
            }
        }
    }

    /// Hashes (streamed, or re-read after seeks) and publishes the blob.
    pub fn commit(mut self) -> Result<BlobInfo> {
        match &mut self.sink {
            Sink::Mem { buf, .. } => self.store.put_bytes(buf),
            Sink::File(f) => {
                let (digest, size) = f.digest()?;
                let created = self.store.publish(f, &digest, size)?;
                Ok(self.store.info(digest, size, created))
            }
        }
    }
}
