//! Shared by the libFuzzer targets: an allocator that notices any single allocation over
//! 64 MiB. The inputs are a few KiB, so such an allocation can only come from trusting a
//! length or count read from the input. (libFuzzer's own -malloc_limit_mb needs a sanitizer
//! runtime, which a stable-Rust build does not have.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

const LIMIT: usize = 64 << 20;

thread_local! {
    static BIGGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    if size > LIMIT {
        let _ = BIGGEST.try_with(|b| b.set(b.get().max(size)));
    }
}

pub struct Watch;

// SAFETY: every call is forwarded to the system allocator unchanged; the size check only
// records, in a const-initialised thread-local without a destructor (no allocation, no
// unwinding inside the allocator).
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

/// Runs one input; panics (a crash for libFuzzer) if it made an oversized allocation.
pub fn run(f: impl FnOnce()) {
    BIGGEST.with(|b| b.set(0));
    f();
    let big = BIGGEST.with(Cell::get);
    assert!(big == 0, "one allocation of {big} bytes for a fuzz input");
}
