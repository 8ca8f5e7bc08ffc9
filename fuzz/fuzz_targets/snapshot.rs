//! libFuzzer target: `runstash_core::index::fuzz::fuzz_snapshot`. The mutator re-computes the
//! frames' CRCs after most mutations, so that they reach the decoders behind the checksum.
#![no_main]

use libfuzzer_sys::{fuzz_mutator, fuzz_target, fuzzer_mutate};
use runstash_core::index::fuzz::{fix_crcs, fuzz_snapshot};

fuzz_target!(|data: &[u8]| {
    runstash_fuzz::run(|| fuzz_snapshot(data));
});

fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    let size = fuzzer_mutate(data, size, max_size);
    if !seed.is_multiple_of(4) {
        fix_crcs(&mut data[..size]);
    }
    size
});
