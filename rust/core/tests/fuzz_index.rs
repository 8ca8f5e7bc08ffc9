//! A bounded fuzzer for the index decoders that runs on stable Rust, with no libFuzzer: it
//! builds valid log segments and snapshots with the real encoders, mutates them (bit flips,
//! interesting integers, insertions, deletions, splices, truncations) and, most of the time,
//! re-computes the frames' CRC-32C so that the mutations reach the decoders behind the
//! checksum. Every input goes to both `fuzz_replay` and `fuzz_snapshot`
//! (`runstash_core::index::fuzz`), which must never panic.
//!
//! A global allocator flags any single allocation over 64 MiB (the inputs are a few KiB, so
//! such an allocation can only come from trusting a length or count read from the input).
//!
//! Time budget: `RUNSTASH_FUZZ_SECS` (default 2 s, so `cargo test` stays quick; the slow
//! Python test `tests/faults/test_fuzz.py` runs it longer). `RUNSTASH_FUZZ_SEED` picks the
//! sequence. A failing input is printed in hex and written to `RUNSTASH_FUZZ_OUT` (default:
//! the system temp directory) so that it can become a regression test.
//!
//! Coverage-guided fuzzing of the same entry points: `fuzz/` (libFuzzer).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use runstash_core::index::codec::{Enc, Op, encode_blob, encode_op};
use runstash_core::index::fuzz::{fix_crcs, fuzz_replay, fuzz_snapshot};
use runstash_core::index::log::{header_frame, push_frame};
use runstash_core::index::snapshot::encode_snapshot;
use runstash_core::index::{ArtifactId, MemIndex, OwnedRecord, OwnedValue};
use runstash_core::{Digest, HashAlgo};

const ALLOC_LIMIT: usize = 64 << 20;

thread_local! {
    /// The largest allocation over the limit made by this thread (tests run in parallel).
    static BIGGEST_OVER_LIMIT: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    if size > ALLOC_LIMIT {
        let _ = BIGGEST_OVER_LIMIT.try_with(|b| b.set(b.get().max(size)));
    }
}

struct Watch;

// SAFETY: every call is forwarded to the system allocator unchanged; the size check only
// records (an allocator must not unwind, so the loop reports it after the input). The
// thread-local is const-initialised and has no destructor, so reading it never allocates.
unsafe impl GlobalAlloc for Watch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Watch = Watch;

/// SplitMix64: small, fast, and the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const WORDS: &[&str] = &[
    "",
    "k",
    "model",
    "loss",
    "r1",
    "é",
    "a/b",
    "\u{0}",
    "xxxxxxxxxxxx",
];
const INTERESTING: &[u64] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 24,
    1 << 26,
    1 << 40,
    u64::MAX,
    u64::MAX >> 1,
];

fn word(rng: &mut Rng) -> Arc<str> {
    Arc::from(*rng.pick(WORDS))
}

fn opt_word(rng: &mut Rng) -> Option<Arc<str>> {
    rng.chance(50).then(|| word(rng))
}

fn record(rng: &mut Rng, id: u128) -> OwnedRecord {
    let mut labels = Vec::new();
    for _ in 0..rng.below(4) {
        let v = match rng.below(5) {
            0 => OwnedValue::Str(word(rng)),
            1 => OwnedValue::Int(*rng.pick(INTERESTING) as i64),
            2 => OwnedValue::Float(*rng.pick(&[0.5, -0.0, 1e300, f64::NAN, f64::INFINITY])),
            3 => OwnedValue::Bool(rng.chance(50)),
            _ => OwnedValue::Int(-1),
        };
        labels.push((word(rng), v));
    }
    let mut metrics = Vec::new();
    for _ in 0..rng.below(3) {
        metrics.push((word(rng), *rng.pick(&[0.0, -1.5, 3.25, 1e-300, f64::MAX])));
    }
    let mut digest = [0u8; 32];
    digest[..8].copy_from_slice(&rng.next().to_le_bytes());
    OwnedRecord {
        id: ArtifactId(id),
        kind: word(rng),
        digest: Digest::new(
            if rng.chance(80) {
                HashAlgo::Blake3
            } else {
                HashAlgo::Sha256
            },
            digest,
        ),
        size: *rng.pick(INTERESTING),
        uri: opt_word(rng),
        mime: opt_word(rng),
        created_us: rng.next() as i64,
        run_id: opt_word(rng),
        graph_id: opt_word(rng),
        node_id: opt_word(rng),
        project_id: opt_word(rng),
        labels,
        metrics,
        pinned: rng.chance(30),
    }
}

fn ops(rng: &mut Rng) -> Vec<Op> {
    let mut out = Vec::new();
    let mut ids: Vec<u128> = Vec::new();
    for _ in 0..1 + rng.below(12) {
        let pick_id = |rng: &mut Rng, ids: &[u128]| {
            if ids.is_empty() || rng.chance(10) {
                u128::from(rng.next())
            } else {
                ids[rng.below(ids.len())]
            }
        };
        let op = match rng.below(10) {
            0..=5 => {
                let id = if rng.chance(10) {
                    pick_id(rng, &ids)
                } else {
                    u128::from(rng.next())
                };
                ids.push(id);
                Op::Put(Box::new(record(rng, id)))
            }
            6 | 7 => Op::Pin {
                id: ArtifactId(pick_id(rng, &ids)),
                pinned: rng.chance(50),
            },
            8 => Op::Delete {
                id: ArtifactId(pick_id(rng, &ids)),
            },
            _ => Op::Seal {
                next_gen: rng.next() % 4,
            },
        };
        out.push(op);
    }
    out
}

fn segment(rng: &mut Rng) -> Vec<u8> {
    let mut buf = if rng.chance(90) {
        header_frame(1)
    } else {
        header_frame(rng.next())
    };
    for op in ops(rng) {
        let mut e = Enc::default();
        if rng.chance(20) {
            // A packed blob's frame before the operation, as small writes make them.
            let data: Vec<u8> = (0..rng.next() % 64).map(|_| rng.next() as u8).collect();
            let digest = runstash_core::hash_bytes(HashAlgo::Blake3, &data);
            encode_blob(&digest, &data, &mut e);
            push_frame(&mut buf, &e.0);
            e.0.clear();
        }
        encode_op(&op, &mut e);
        push_frame(&mut buf, &e.0);
    }
    buf
}

fn snapshot(rng: &mut Rng) -> Vec<u8> {
    let mut mem = MemIndex::default();
    for op in ops(rng) {
        match op {
            Op::Put(r) => {
                mem.insert(&r);
            }
            Op::Pin { id, pinned } => {
                mem.set_pinned(id, pinned);
            }
            Op::Delete { id } => {
                mem.delete(id);
            }
            Op::Seal { .. } | Op::Blob { .. } => {}
        }
    }
    encode_snapshot(rng.next() % 5, &mem).0
}

fn mutate(rng: &mut Rng, buf: &mut Vec<u8>, other: &[u8]) {
    for _ in 0..1 + rng.below(4) {
        let len = buf.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                buf[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                buf[i] = *rng.pick(&[0u8, 1, 0x7f, 0x80, 0xff]);
            }
            2 if len >= 8 => {
                // an interesting integer over a length, count, varint or id
                let i = rng.below(len - 7);
                let v = rng.pick(INTERESTING).to_le_bytes();
                let n = *rng.pick(&[1usize, 2, 4, 8]);
                buf[i..i + n].copy_from_slice(&v[..n]);
            }
            3 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                buf.splice(i..i, bytes);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(32));
                buf.drain(i..i + n);
            }
            5 if len > 0 => buf.truncate(rng.below(len)),
            6 if len > 0 => {
                // duplicate a range (a repeated frame or record)
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                let copy = buf[i..i + n].to_vec();
                let at = rng.below(len + 1);
                buf.splice(at..at, copy);
            }
            7 if !other.is_empty() => {
                // splice in a piece of another input
                let i = rng.below(other.len());
                let n = 1 + rng.below((other.len() - i).min(128));
                let at = rng.below(len + 1);
                buf.splice(at..at, other[i..i + n].iter().copied());
            }
            _ => buf.extend((0..rng.below(9)).map(|_| rng.next() as u8)),
        }
    }
}

fn run_one(input: &[u8]) -> Result<(), String> {
    BIGGEST_OVER_LIMIT.with(|b| b.set(0));
    let r = catch_unwind(AssertUnwindSafe(|| {
        fuzz_replay(input);
        fuzz_snapshot(input);
    }));
    let big = BIGGEST_OVER_LIMIT.with(Cell::get);
    match r {
        Err(e) => Err(e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into())),
        Ok(()) if big > 0 => Err(format!("allocated {big} bytes at once")),
        Ok(()) => Ok(()),
    }
}

fn report(input: &[u8], why: &str) -> ! {
    let dir = std::env::var_os("RUNSTASH_FUZZ_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!(
        "runstash-fuzz-crash-{:016x}",
        crc32c::crc32c(input)
    ));
    let _ = std::fs::write(&path, input);
    let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
    panic!(
        "fuzz input fails: {why}\n  saved to {}\n  hex: {hex}",
        path.display()
    );
}

#[test]
fn fuzz_index_decoders_bounded() {
    let secs: f64 = std::env::var("RUNSTASH_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let seed: u64 = std::env::var("RUNSTASH_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut rng = Rng(seed);
    let mut pool: Vec<Vec<u8>> = Vec::new();
    let mut runs = 0u64;
    while runs < 200 || Instant::now() < deadline {
        let base = if pool.is_empty() || rng.chance(30) {
            let fresh = if rng.chance(50) {
                segment(&mut rng)
            } else {
                snapshot(&mut rng)
            };
            if pool.len() < 256 {
                pool.push(fresh.clone());
            } else {
                let i = rng.below(pool.len());
                pool[i] = fresh.clone();
            }
            fresh
        } else {
            pool[rng.below(pool.len())].clone()
        };
        let other = pool[rng.below(pool.len())].clone();
        let mut input = base;
        if rng.chance(90) {
            mutate(&mut rng, &mut input, &other);
        }
        if rng.chance(75) {
            fix_crcs(&mut input);
        }
        if let Err(why) = run_one(&input) {
            report(&input, &why);
        }
        runs += 1;
    }
    eprintln!("fuzz_index: {runs} inputs in {secs} s, seed {seed}, no failure");
}

/// Inputs the fuzzer found, each with the fix it led to.
const REGRESSIONS: &[(&str, &str)] = &[(
    // A snapshot header (valid CRC) claiming 2^56 records: the loader reserved
    // min(count, 2^26) records up front, 9.7 GB, an abort on a small machine. Capacities
    // are now bounded by what the input's bytes can hold.
    "snapshot record count reserved gigabytes",
    "2e000000886659531172756e73746173682d736e617073686f7401000000000000000000000001000000\
     0001000002000000000000001300000029fdc6e7056d6f64656c0c7878787878787878787878784c0000\
     0083454c89cc6a10d17252ca770000000000000000000182b09867c0207fe20000000000000000000000\
     000000000000000000000000000080808080802001016b00a4d5e28b8189b7884f00020000ff00000c00\
     0000e3244a0803656e640100000000000000",
)];

#[test]
fn regressions() {
    for (what, hex) in REGRESSIONS {
        let hex: String = hex.split_whitespace().collect();
        let input: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        if let Err(why) = run_one(&input) {
            report(&input, &format!("{what}: {why}"));
        }
    }
}

#[test]
fn valid_inputs_pass_untouched() {
    let mut rng = Rng(1);
    for _ in 0..200 {
        for input in [segment(&mut rng), snapshot(&mut rng)] {
            if let Err(why) = run_one(&input) {
                report(&input, &why);
            }
        }
    }
}
