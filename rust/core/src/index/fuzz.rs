//! Fuzzing entry points for the index's decoders: the log (frames, header, operations, replay)
//! and the snapshot loader. `fuzz/` drives them with libFuzzer; `tests/fuzz_index.rs` drives
//! them on stable Rust with a bounded, structure-aware mutational loop.
//!
//! Invariants, for any input whatsoever:
//! - No panic, no abort, no allocation beyond what the input's size justifies.
//! - What decodes is usable: every query on the resulting index runs, counts agree with
//!   listings, and the index survives a snapshot round trip unchanged.
//! - Decoding is canonical: an operation that decodes re-encodes to bytes that decode to an
//!   operation with the same encoding.

use std::path::Path;

use super::codec::{Enc, Op, decode_op, encode_op};
use super::load::replay;
use super::log::{FRAME_OVERHEAD, Frame, next_frame, read_header};
use super::mem::{Filter, MemIndex, Mode};
use super::snapshot::{decode_snapshot, encode_snapshot};

/// Re-computes the CRC-32C of every frame whose length fits in `buf`, so that a mutated
/// payload gets past the checksum and into the decoders (a fuzzer rarely guesses a CRC).
pub fn fix_crcs(buf: &mut [u8]) {
    let mut off = 0;
    while off + FRAME_OVERHEAD <= buf.len() {
        let len = u32::from_le_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
        let Some(end) = (off + FRAME_OVERHEAD)
            .checked_add(len)
            .filter(|&e| e <= buf.len())
        else {
            break;
        };
        let crc = crc32c::crc32c(&buf[off + FRAME_OVERHEAD..end]);
        buf[off + 4..off + 8].copy_from_slice(&crc.to_le_bytes());
        off = end;
    }
}

/// Feeds `data` to the log's decoders as a segment: header check, frame-by-frame replay into
/// an index (as opening a store does), then checks of what replay built.
pub fn fuzz_replay(data: &[u8]) {
    let name = Path::new("fuzz/log");
    // After a bad header, replay from the start anyway: those frames must not panic either.
    let start = read_header(data, 1, name).unwrap_or_default();
    let mut mem = MemIndex::default();
    let (pos, _sealed, _bad) = replay(&mut mem, data, start, 0, 1);
    assert!(
        pos >= start && pos <= data.len(),
        "replay stopped outside the buffer"
    );
    let mut off = 0;
    while let Frame::Ok(payload, next) = next_frame(data, off) {
        assert!(
            next > off && next <= data.len(),
            "a frame must move forward"
        );
        if let Ok(op) = decode_op(payload) {
            check_canonical(&op, payload);
        }
        off = next;
    }
    check_index(&mem);
    check_snapshot_round_trip(7, &mem);
}

/// Feeds `data` to the snapshot loader; whatever loads must be a usable index.
pub fn fuzz_snapshot(data: &[u8]) {
    if let Ok((gen_, mem)) = decode_snapshot(data, Path::new("fuzz/snap")) {
        check_index(&mem);
        check_snapshot_round_trip(gen_, &mem);
    }
}

fn encoded(op: &Op) -> Vec<u8> {
    let mut e = Enc::default();
    encode_op(op, &mut e);
    e.0
}

fn check_canonical(op: &Op, payload: &[u8]) {
    if let Op::Blob { data_off, len, .. } = op {
        // The decoded form names the bytes in place: they must be the rest of the payload.
        assert_eq!(
            *data_off as u64 + len,
            payload.len() as u64,
            "packed bytes overrun"
        );
        return;
    }
    let once = encoded(op);
    let again = decode_op(&once).expect("an encoded operation must decode");
    assert_eq!(encoded(&again), once, "re-encoding changed an operation");
}

/// Every query runs, and counts agree with listings.
fn check_index(mem: &MemIndex) {
    let all = Filter::default();
    let listed = mem.list(&all, None);
    assert_eq!(listed.len(), mem.len(), "list() and len() disagree");
    assert_eq!(mem.count(&all), mem.len(), "count() and len() disagree");
    for r in &listed {
        let got = mem.get(r.id).expect("a listed record can be fetched by id");
        assert_eq!(got.id, r.id);
    }
    for m in mem.metric_names() {
        let name = mem.strings.get(m).clone();
        for mode in [Mode::Max, Mode::Min] {
            let top = mem.top_k(&all, &name, mode, 4);
            assert!(top.len() <= 4);
        }
    }
    for r in listed.iter().take(8) {
        let o = mem.resolve(r);
        let f = Filter {
            kind: Some(o.kind.to_string()),
            run_id: o.run_id.as_deref().map(str::to_string),
            labels: o
                .labels
                .iter()
                .take(2)
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            pinned: Some(o.pinned),
            ..Filter::default()
        };
        assert!(mem.count(&f) <= mem.len());
        let _ = mem.list(&f, Some(3));
        if let Some((m, _)) = o.metrics.first() {
            let _ = mem.top_k(&f, m, Mode::Min, 3);
        }
    }
}

/// A snapshot of `mem` loads back to the same records (compared by their encoding, so that a
/// NaN label compares equal to itself).
fn check_snapshot_round_trip(gen_: u64, mem: &MemIndex) {
    let (bytes, _) = encode_snapshot(gen_, mem);
    let (g, back) = decode_snapshot(&bytes, Path::new("fuzz/round-trip"))
        .expect("a snapshot this code wrote must load");
    assert_eq!(g, gen_);
    assert_eq!(back.len(), mem.len(), "the snapshot lost or gained records");
    let a: Vec<Vec<u8>> = mem
        .iter()
        .map(|r| encoded(&Op::Put(Box::new(mem.resolve(r)))))
        .collect();
    let b: Vec<Vec<u8>> = back
        .iter()
        .map(|r| encoded(&Op::Put(Box::new(back.resolve(r)))))
        .collect();
    assert!(a == b, "a snapshot round trip changed the records");
}
