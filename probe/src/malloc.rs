//! glibc allocator settings for the probe's batch traffic.
//!
//! The data plane hands large buffers from thread to thread: flow records and Arrow batches of
//! several MiB from the workers to the export thread, column chunks inside the export thread.
//! With glibc's defaults each such buffer above the (adaptive) mmap threshold is a fresh
//! mapping, and freed heap space above the trim threshold goes back to the kernel, so the next
//! batch faults its pages in again and the kernel zeroes each one: 10–15 % of a one-core
//! `mpcom replay` (bench/README.md, Passive). Raising both thresholds keeps freed batches in
//! the heap for the next ones; the resident set stays at the peak the bounded queues allow,
//! which it reaches anyway.

#![allow(unsafe_code)]

/// Allocations below this come from the heap, not from their own mapping (glibc accepts at
/// most 32 MiB on 64-bit targets).
const MMAP_THRESHOLD: i32 = 32 << 20;
/// Free heap space kept before trimming.
const TRIM_THRESHOLD: i32 = 256 << 20;

/// Keeps freed batch memory in the heap for reuse (glibc only; elsewhere nothing happens).
/// Call once at the start of `main`, before threads start.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt(3) only changes two numeric parameters of glibc's allocator; it is called
    // before any other thread exists, takes no pointers, and a rejected value is ignored.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}
