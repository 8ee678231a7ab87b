//! Transparent huge pages for the flow table's large arrays.
//!
//! The index and the slots are read at random: with 4 KiB pages nearly every lookup also
//! misses the TLB (a 4 MiB index and 100+ MiB of slots span tens of thousands of pages).
//! Asking the kernel for transparent huge pages on these ranges (`madvise(MADV_HUGEPAGE)`,
//! which the default `madvise` mode of `/sys/kernel/mm/transparent_hugepage/enabled`
//! requires) cuts that to a few hundred 2 MiB pages. The advice changes nothing else: contents
//! and validity of the memory are untouched, and a kernel without THP ignores it.

#![allow(unsafe_code)]

/// Advises huge pages for the memory of `v`'s full capacity (best effort, errors ignored).
pub fn advise<T>(v: &[T], capacity: usize) {
    let bytes = capacity.saturating_mul(std::mem::size_of::<T>());
    if bytes < 4 << 20 {
        return; // not worth it below a couple of huge pages
    }
    let page = 4096usize;
    let start = v.as_ptr() as usize;
    let aligned = start.div_ceil(page) * page;
    let end = start + bytes;
    if end <= aligned {
        return;
    }
    // SAFETY: madvise(2) with MADV_HUGEPAGE only records a paging preference for the range,
    // which lies inside one live allocation of `capacity` elements (owned by the caller's Vec
    // or boxed slice, whose buffer does not move while it is only read here); it neither reads
    // nor writes the memory and cannot invalidate any reference.
    unsafe {
        libc::madvise(
            aligned as *mut libc::c_void,
            end - aligned,
            libc::MADV_HUGEPAGE,
        );
    }
}
