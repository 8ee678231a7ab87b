//! Bounded, preallocated storage beside the flow table: application strings and the few
//! reassembly buffers that ClientHellos spanning several segments need.
//!
//! Both are fixed-size slot pools allocated once; taking and returning a slot is a push/pop
//! on a preallocated free list. When a pool is empty the caller goes without (and counts it):
//! memory never grows with traffic.

/// Longest application string kept (longer names are cut; DNS names are at most 253 bytes,
/// SNI host names 255).
pub const MAX_STR: usize = 255;

/// `u32::MAX`: no slot.
pub const NO_SLOT: u32 = u32::MAX;

/// A pool of fixed 256-byte string slots.
#[derive(Debug)]
pub struct StringArena {
    buf: Box<[u8]>,
    lens: Box<[u8]>,
    free: Vec<u32>,
}

const SLOT: usize = MAX_STR + 1;

impl StringArena {
    /// An arena of `slots` strings (`slots × 257` bytes).
    pub fn new(slots: usize) -> Self {
        let slots = slots.min(NO_SLOT as usize);
        StringArena {
            buf: vec![0; slots * SLOT].into_boxed_slice(),
            lens: vec![0; slots].into_boxed_slice(),
            free: (0..slots as u32).rev().collect(),
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.lens.len()
    }

    /// Slots in use.
    pub fn used(&self) -> usize {
        self.capacity() - self.free.len()
    }

    /// Bytes allocated.
    pub fn bytes(&self) -> usize {
        self.buf.len() + self.lens.len() + self.free.capacity() * 4
    }

    /// Stores `s` (cut to [`MAX_STR`] bytes); `None` when the arena is full.
    pub fn store(&mut self, s: &[u8]) -> Option<u32> {
        let slot = self.free.pop()?;
        let n = s.len().min(MAX_STR);
        let at = slot as usize * SLOT;
        self.buf[at..at + n].copy_from_slice(&s[..n]);
        self.lens[slot as usize] = n as u8;
        Some(slot)
    }

    /// The string in `slot` (empty for [`NO_SLOT`]).
    pub fn get(&self, slot: u32) -> &[u8] {
        if slot == NO_SLOT {
            return &[];
        }
        let at = slot as usize * SLOT;
        let n = self.lens.get(slot as usize).copied().unwrap_or(0) as usize;
        self.buf.get(at..at + n).unwrap_or(&[])
    }

    /// Returns `slot` to the pool.
    pub fn release(&mut self, slot: u32) {
        if slot != NO_SLOT && (slot as usize) < self.lens.len() {
            self.free.push(slot);
        }
    }
}

/// Received byte ranges of one reassembly buffer (at most [`MAX_RANGES`], merged).
const MAX_RANGES: usize = 8;

/// One reassembly slot: a byte buffer filled at arbitrary offsets, plus a little per-use state
/// for the protocol that holds it (e.g. QUIC keys).
#[derive(Debug)]
pub struct Reassembly<'a> {
    /// The buffer (`cap` bytes).
    pub data: &'a mut [u8],
    /// Received ranges.
    ranges: &'a mut RangeSet,
    /// Per-use scratch (64 bytes) for the owner.
    pub scratch: &'a mut [u8; 64],
}

/// Merged `[start, end)` ranges.
#[derive(Debug, Clone, Copy, Default)]
pub struct RangeSet {
    n: u8,
    r: [(u32, u32); MAX_RANGES],
}

impl RangeSet {
    /// Adds `[s, e)`; `false` when it would need more than `MAX_RANGES` separate ranges.
    pub fn add(&mut self, s: u32, e: u32) -> bool {
        if s >= e {
            return true;
        }
        let (mut s, mut e) = (s, e);
        let mut out = [(0u32, 0u32); MAX_RANGES];
        let mut n = 0usize;
        let mut placed = false;
        for &(a, b) in &self.r[..usize::from(self.n)] {
            if b < s {
                out[n] = (a, b);
                n += 1;
            } else if e < a {
                if !placed {
                    if n == MAX_RANGES {
                        return false;
                    }
                    out[n] = (s, e);
                    n += 1;
                    placed = true;
                }
                if n == MAX_RANGES {
                    return false;
                }
                out[n] = (a, b);
                n += 1;
            } else {
                s = s.min(a);
                e = e.max(b);
            }
        }
        if !placed {
            if n == MAX_RANGES {
                return false;
            }
            out[n] = (s, e);
            n += 1;
        }
        self.r = out;
        self.n = n as u8;
        true
    }

    /// Length of the contiguous prefix starting at 0.
    pub fn prefix(&self) -> u32 {
        match self.r[..usize::from(self.n)].first() {
            Some(&(0, e)) => e,
            _ => 0,
        }
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.n = 0;
    }
}

impl Reassembly<'_> {
    /// Copies `bytes` to `offset`; `false` when it falls outside the buffer (beyond the bound)
    /// or fragments it too much.
    pub fn put(&mut self, offset: u64, bytes: &[u8]) -> bool {
        let Some(end) = offset.checked_add(bytes.len() as u64) else {
            return false;
        };
        if end > self.data.len() as u64 {
            return false;
        }
        let (s, e) = (offset as usize, end as usize);
        self.data[s..e].copy_from_slice(bytes);
        self.ranges.add(s as u32, e as u32)
    }

    /// The contiguous bytes received from offset 0.
    pub fn contiguous(&self) -> &[u8] {
        let n = (self.ranges.prefix() as usize).min(self.data.len());
        &self.data[..n]
    }
}

/// A pool of reassembly buffers of `cap` bytes each.
#[derive(Debug)]
pub struct ReassemblyPool {
    cap: usize,
    buf: Box<[u8]>,
    ranges: Box<[RangeSet]>,
    scratch: Box<[[u8; 64]]>,
    free: Vec<u32>,
}

impl ReassemblyPool {
    /// `slots` buffers of `cap` bytes.
    pub fn new(slots: usize, cap: usize) -> Self {
        let slots = slots.min(u16::MAX as usize);
        ReassemblyPool {
            cap,
            buf: vec![0; slots * cap].into_boxed_slice(),
            ranges: vec![RangeSet::default(); slots].into_boxed_slice(),
            scratch: vec![[0; 64]; slots].into_boxed_slice(),
            free: (0..slots as u32).rev().collect(),
        }
    }

    /// Bytes allocated.
    pub fn bytes(&self) -> usize {
        self.buf.len()
            + self.ranges.len() * std::mem::size_of::<RangeSet>()
            + self.scratch.len() * 64
    }

    /// Takes an empty buffer; `None` when all are in use.
    pub fn take(&mut self) -> Option<u32> {
        let id = self.free.pop()?;
        self.ranges[id as usize].clear();
        Some(id)
    }

    /// Access to buffer `id`.
    pub fn get(&mut self, id: u32) -> Option<Reassembly<'_>> {
        let i = id as usize;
        if i >= self.ranges.len() {
            return None;
        }
        Some(Reassembly {
            data: &mut self.buf[i * self.cap..(i + 1) * self.cap],
            ranges: &mut self.ranges[i],
            scratch: &mut self.scratch[i],
        })
    }

    /// Returns buffer `id`.
    pub fn release(&mut self, id: u32) {
        if (id as usize) < self.ranges.len() {
            self.free.push(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arena_bounds_and_reuse() {
        let mut a = StringArena::new(2);
        let x = a.store(b"example.com").unwrap();
        let long = [b'a'; 400];
        let y = a.store(&long).unwrap();
        assert!(a.store(b"z").is_none());
        assert_eq!(a.get(x), b"example.com");
        assert_eq!(a.get(y).len(), MAX_STR);
        a.release(x);
        assert_eq!(a.used(), 1);
        let z = a.store(b"q").unwrap();
        assert_eq!(a.get(z), b"q");
        assert_eq!(a.get(NO_SLOT), b"");
    }

    #[test]
    fn ranges_merge() {
        let mut r = RangeSet::default();
        assert!(r.add(10, 20));
        assert_eq!(r.prefix(), 0);
        assert!(r.add(0, 5));
        assert!(r.add(5, 10));
        assert_eq!(r.prefix(), 20);
        assert!(r.add(30, 40));
        assert!(r.add(15, 35));
        assert_eq!(r.prefix(), 40);
        let mut f = RangeSet::default();
        for i in 0..8 {
            assert!(f.add(i * 10 + 1, i * 10 + 2));
        }
        assert!(!f.add(100, 101));
    }

    #[test]
    fn reassembly_out_of_order() {
        let mut p = ReassemblyPool::new(1, 16);
        let id = p.take().unwrap();
        assert!(p.take().is_none());
        let mut r = p.get(id).unwrap();
        assert!(r.put(4, b"5678"));
        assert_eq!(r.contiguous(), b"");
        assert!(r.put(0, b"1234"));
        assert_eq!(r.contiguous(), b"12345678");
        assert!(!r.put(14, b"xyz"));
        p.release(id);
        assert!(p.take().is_some());
    }
}
