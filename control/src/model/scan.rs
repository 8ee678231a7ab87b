//! Byte scans eight bytes at a time (SWAR) for the JSON reader and writer: the first byte of a
//! string that ends a plain run (a quote, a backslash, a control character, and for output
//! DEL and non-ASCII bytes).
//!
//! Each test flags a matching byte in its high bit. A borrow can also flag bytes *above* a
//! true match, never below one, so the lowest flag of any combination of tests is the first
//! matching byte.

const LO: u64 = 0x0101_0101_0101_0101;
pub(crate) const HI: u64 = 0x8080_8080_8080_8080;

/// Flags the bytes of `w` equal to `c`.
#[inline(always)]
pub(crate) fn eq(w: u64, c: u8) -> u64 {
    let x = w ^ (LO * c as u64);
    x.wrapping_sub(LO) & !x
}

/// Flags the bytes of `w` below `n` (`n` ≤ 0x80).
#[inline(always)]
pub(crate) fn below(w: u64, n: u8) -> u64 {
    w.wrapping_sub(LO * n as u64) & !w
}

/// The offset of the first byte at or after `i` that `flags` flags (whole words) or `table`
/// marks (the last few bytes), or `b.len()`.
#[inline(always)]
pub(crate) fn first(
    b: &[u8],
    mut i: usize,
    flags: impl Fn(u64) -> u64,
    table: &[bool; 256],
) -> usize {
    while let Some(chunk) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        let t = flags(w) & HI;
        if t != 0 {
            return i + (t.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && !table[b[i] as usize] {
        i += 1;
    }
    i
}
