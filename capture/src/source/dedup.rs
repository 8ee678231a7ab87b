//! Duplicate suppression for SPAN ports.
//!
//! A switch mirroring both the ingress and the egress of a port, or two SPAN sessions feeding
//! two capture ports, delivers many frames twice, a few microseconds apart. [`Dedup`] remembers
//! a 64-bit hash of the last frames in a small fixed-size table (direct-mapped, 4096 slots, no
//! allocation after creation) and reports a frame as a duplicate when a frame with the same
//! hash and the same lengths was seen less than `window` before it.
//!
//! What counts as "the same frame": the same captured length, the same wire length and the same
//! first [`HASHED_BYTES`] bytes (which hold every header and the IP/TCP/UDP checksums that cover
//! the rest). Copies of *routed* traffic differ in TTL and MAC addresses and are not suppressed;
//! a genuine retransmission of identical bytes inside the window would be (TCP retransmits after
//! at least its RTO, normally ≥ 200 ms, far longer than the default window of 1 ms). A collision
//! in the table only evicts an older entry, so the filter can miss a duplicate but never drops a
//! frame it has not seen before (short of a full 64-bit hash collision).

/// Bytes of each frame that go into its hash.
pub const HASHED_BYTES: usize = 256;
const SLOTS: usize = 4096;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    hash: u64,
    ts_ns: u64,
}

/// The table of recently seen frames. See the module doc.
#[derive(Debug)]
pub struct Dedup {
    window_ns: u64,
    slots: Box<[Slot]>,
    duplicates: u64,
}

impl Dedup {
    /// A filter that suppresses copies seen within `window_ns` of the original.
    pub fn new(window_ns: u64) -> Self {
        Dedup {
            window_ns,
            slots: vec![Slot::default(); SLOTS].into_boxed_slice(),
            duplicates: 0,
        }
    }

    /// `true` if `data` (captured bytes of a frame `orig_len` long on the wire, stamped
    /// `ts_ns`) repeats a frame seen less than the window before; otherwise remembers it.
    #[inline]
    pub fn is_duplicate(&mut self, data: &[u8], orig_len: u32, ts_ns: u64) -> bool {
        let h = frame_hash(data, orig_len);
        let slot = &mut self.slots[(h as usize) & (SLOTS - 1)];
        if slot.hash == h && ts_ns.abs_diff(slot.ts_ns) <= self.window_ns {
            self.duplicates += 1;
            return true;
        }
        *slot = Slot { hash: h, ts_ns };
        false
    }

    /// Frames reported as duplicates so far.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }
}

/// A 64-bit hash of a frame's first [`HASHED_BYTES`] bytes and its two lengths (multiply–xorshift
/// over 8-byte words; never 0).
#[inline]
pub fn frame_hash(data: &[u8], orig_len: u32) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = (u64::from(orig_len) << 32 | data.len() as u64).wrapping_mul(K);
    let data = &data[..data.len().min(HASHED_BYTES)];
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        h = (h ^ u64::from_le_bytes(b)).wrapping_mul(K);
        h ^= h >> 29;
    }
    let mut b = [0u8; 8];
    let rest = words.remainder();
    b[..rest.len()].copy_from_slice(rest);
    h = (h ^ u64::from_le_bytes(b)).wrapping_mul(K);
    h ^= h >> 32;
    h | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_within_the_window_are_suppressed() {
        let mut d = Dedup::new(1000);
        let a = vec![1u8; 100];
        let mut b = a.clone();
        b[99] = 2;
        assert!(!d.is_duplicate(&a, 100, 10_000));
        assert!(d.is_duplicate(&a, 100, 10_500));
        // different bytes, different wire length: new frames
        assert!(!d.is_duplicate(&b, 100, 10_600));
        assert!(!d.is_duplicate(&a, 1500, 10_700));
        // outside the window: a new frame again
        assert!(!d.is_duplicate(&a, 100, 12_000));
        assert_eq!(d.duplicates(), 1);
    }

    #[test]
    fn hash_covers_every_hashed_byte_and_the_lengths() {
        let base = vec![0u8; 300];
        let h0 = frame_hash(&base, 300);
        for i in 0..HASHED_BYTES {
            let mut f = base.clone();
            f[i] = 1;
            assert_ne!(frame_hash(&f, 300), h0, "byte {i}");
        }
        assert_ne!(frame_hash(&base[..299], 300), h0);
        assert_ne!(frame_hash(&base, 301), h0);
        assert_ne!(frame_hash(&[], 0), 0);
    }
}
