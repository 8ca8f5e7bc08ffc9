//! The append-only index log: framed, checksummed operations in numbered segments.
//!
//! A frame is `u32 LE payload length | u32 LE crc32c(payload) | payload`. Each segment file
//! `log-<gen as 16 hex>` begins with a header frame (magic, format version, generation).
//!
//! Invariants:
//! - Frames are only appended, each in one write, by a process holding the index lock.
//! - Replay stops at the first frame that is incomplete or fails its checksum; under the lock
//!   such a tail can only come from a writer that died mid-append, so it is truncated away.
//! - A segment whose header names a newer format version is refused, never guessed at.

use crate::error::{Error, Result};

use super::codec::{Dec, Enc, TAG_HEADER};

/// The log format this code writes and the newest it reads.
/// Version 2 added packed blobs (small blobs' bytes in the log).
pub const LOG_VERSION: u32 = 2;
const LOG_MAGIC: &[u8] = b"runstash-log";
/// No single frame is ever this large; a length beyond it is corruption, not a big record.
const MAX_FRAME: usize = 256 << 20;
pub const FRAME_OVERHEAD: usize = 8;

pub fn segment_name(gen_: u64) -> String {
    format!("log-{gen_:016x}")
}

pub fn snapshot_name(gen_: u64) -> String {
    format!("snap-{gen_:016x}")
}

/// Parses `log-<hex>` / `snap-<hex>` names.
pub fn parse_name(name: &str) -> Option<(&'static str, u64)> {
    let (kind, hex) = if let Some(h) = name.strip_prefix("log-") {
        ("log", h)
    } else if let Some(h) = name.strip_prefix("snap-") {
        ("snap", h)
    } else {
        return None;
    };
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().map(|g| (kind, g))
}

/// Appends one frame holding `payload` to `out`.
pub fn push_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// What lies at an offset of a log buffer.
#[derive(Debug, PartialEq)]
pub enum Frame<'a> {
    /// A complete, checksummed frame and the offset just past it.
    Ok(&'a [u8], usize),
    /// The buffer ends exactly here.
    End,
    /// The bytes here are not a whole valid frame (torn or corrupt).
    Bad,
}

pub fn next_frame(buf: &[u8], off: usize) -> Frame<'_> {
    let rest = &buf[off.min(buf.len())..];
    if rest.is_empty() {
        return Frame::End;
    }
    if rest.len() < FRAME_OVERHEAD {
        return Frame::Bad;
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    if len > MAX_FRAME || rest.len() < FRAME_OVERHEAD + len {
        return Frame::Bad;
    }
    let payload = &rest[FRAME_OVERHEAD..FRAME_OVERHEAD + len];
    if crc32c::crc32c(payload) != crc {
        return Frame::Bad;
    }
    Frame::Ok(payload, off + FRAME_OVERHEAD + len)
}

/// [`next_frame`] for log segments, where no operation has an empty payload: an empty frame
/// is `Bad`. Eight zero bytes checksum as an empty frame (crc32c of nothing is 0), and a
/// zero-filled tail is what some filesystems leave after a crash: it must read as a torn tail,
/// not as valid frames that would make the bad frame before them look like mid-log damage.
pub fn next_log_frame(buf: &[u8], off: usize) -> Frame<'_> {
    match next_frame(buf, off) {
        Frame::Ok([], _) => Frame::Bad,
        f => f,
    }
}

/// Whether the bad frame at `off` is damage in the middle of the log rather than a torn tail:
/// its length fits in the buffer and a valid frame follows it. A writer that died mid-append
/// leaves only a tail (nothing valid after it); a frame with valid frames after it was complete
/// once, so its bytes changed on disk, and cutting the log there would drop good records.
pub fn damaged_mid_log(buf: &[u8], off: usize) -> bool {
    let rest = &buf[off.min(buf.len())..];
    if rest.len() < FRAME_OVERHEAD {
        return false;
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let end = off + FRAME_OVERHEAD + len;
    len <= MAX_FRAME && end < buf.len() && matches!(next_log_frame(buf, end), Frame::Ok(..))
}

/// The header frame of segment `gen_`.
pub fn header_frame(gen_: u64) -> Vec<u8> {
    let mut e = Enc::default();
    e.u8(TAG_HEADER);
    e.bytes(LOG_MAGIC);
    e.u32(LOG_VERSION);
    e.u64(gen_);
    let mut out = Vec::new();
    push_frame(&mut out, &e.0);
    out
}

/// Checks a segment's header; returns the offset of its first operation.
pub fn read_header(buf: &[u8], expect_gen: u64, what: &std::path::Path) -> Result<usize> {
    let Frame::Ok(payload, next) = next_frame(buf, 0) else {
        return Err(Error::corrupt(format!(
            "{} has no valid header",
            what.display()
        )));
    };
    let mut d = Dec::new(payload);
    let ok_magic = d.u8()? == TAG_HEADER && d.bytes()? == LOG_MAGIC;
    if !ok_magic {
        return Err(Error::corrupt(format!(
            "{} is not a runstash log",
            what.display()
        )));
    }
    let version = d.u32()?;
    if version > LOG_VERSION {
        return Err(Error::incompatible(format!(
            "{} uses log format {version}, newer than this runstash understands ({LOG_VERSION}); upgrade runstash",
            what.display()
        )));
    }
    let g = d.u64()?;
    if g != expect_gen {
        return Err(Error::corrupt(format!(
            "{} claims generation {g}, its name says {expect_gen}",
            what.display()
        )));
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_detect_tears_and_flips() {
        let mut buf = Vec::new();
        push_frame(&mut buf, b"hello");
        push_frame(&mut buf, b"world!");
        let Frame::Ok(p, next) = next_frame(&buf, 0) else {
            panic!()
        };
        assert_eq!(p, b"hello");
        let Frame::Ok(p, end) = next_frame(&buf, next) else {
            panic!()
        };
        assert_eq!(p, b"world!");
        assert_eq!(next_frame(&buf, end), Frame::End);
        for cut in next + 1..end {
            assert_eq!(next_frame(&buf[..cut], next), Frame::Bad, "cut at {cut}");
        }
        for i in next..end {
            let mut b = buf.clone();
            b[i] ^= 0x40;
            assert_ne!(
                next_frame(&b, next),
                Frame::Ok(b"world!", end),
                "flip at {i}"
            );
        }
    }

    #[test]
    fn a_zero_filled_tail_is_torn_not_damage() {
        let mut buf = header_frame(1);
        let good = buf.len();
        for zeros in [8, 16, 4096] {
            let mut b = buf.clone();
            b.resize(good + zeros, 0);
            assert_eq!(next_log_frame(&b, good), Frame::Bad);
            assert!(!damaged_mid_log(&b, good), "{zeros} zero bytes");
        }
        push_frame(&mut buf, b"x");
        assert!(matches!(next_log_frame(&buf, good), Frame::Ok(b"x", _)));
    }

    #[test]
    fn header_versions() {
        let h = header_frame(7);
        let p = std::path::Path::new("log");
        assert_eq!(read_header(&h, 7, p).unwrap(), h.len());
        assert!(read_header(&h, 8, p).is_err());
        let mut e = Enc::default();
        e.u8(TAG_HEADER);
        e.bytes(LOG_MAGIC);
        e.u32(LOG_VERSION + 1);
        e.u64(7);
        let mut newer = Vec::new();
        push_frame(&mut newer, &e.0);
        let err = read_header(&newer, 7, p).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Incompatible);
        assert_eq!(parse_name(&segment_name(0xab)), Some(("log", 0xab)));
        assert_eq!(parse_name("log-xyz"), None);
    }
}
