//! The dictionary of a text column chunk: each distinct value once, in order of first
//! appearance, and the id of every value.
//!
//! A general hash map costs about a hundred instructions per lookup here (probing groups of
//! control bytes, then comparing keys through `memcmp`); this table is open addressing over
//! `(tag, id)` slots, sized for the chunk up front, and compares a key only when the upper
//! half of its hash matches.

use std::hash::Hasher;

use rustc_hash::FxHasher;

/// A slot: the upper 32 bits of the value's hash and its id + 1 (0: empty).
#[derive(Clone, Copy, Default)]
struct Slot {
    tag: u32,
    id: u32,
}

/// Distinct values of a chunk and their ids.
pub(crate) struct Dictionary<'a> {
    values: Vec<&'a [u8]>,
    hashes: Vec<u64>,
    slots: Vec<Slot>,
    /// Bytes of the values in a `PLAIN` dictionary page (4-byte length + the bytes each).
    bytes: usize,
}

fn hash(v: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(v);
    h.finish()
}

impl<'a> Dictionary<'a> {
    /// A dictionary with room for `n` distinct values before it grows.
    pub(crate) fn with_capacity(n: usize) -> Self {
        Dictionary {
            values: Vec::new(),
            hashes: Vec::new(),
            slots: vec![Slot::default(); (2 * n).next_power_of_two().max(16)],
            bytes: 0,
        }
    }

    /// The id of `v`, added if new.
    #[inline]
    pub(crate) fn id(&mut self, v: &'a [u8]) -> u32 {
        let h = hash(v);
        let tag = (h >> 32) as u32;
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        loop {
            let s = self.slots[i];
            if s.id == 0 {
                break;
            }
            if s.tag == tag && self.values[s.id as usize - 1] == v {
                return s.id - 1;
            }
            i = (i + 1) & mask;
        }
        let id = self.values.len() as u32;
        self.slots[i] = Slot { tag, id: id + 1 };
        self.values.push(v);
        self.hashes.push(h);
        self.bytes += 4 + v.len();
        if 2 * self.values.len() > self.slots.len() {
            self.grow();
        }
        id
    }

    /// Doubles the table (at most half full, so probes stay short).
    fn grow(&mut self) {
        let len = 2 * self.slots.len();
        let mask = len - 1;
        let mut slots = vec![Slot::default(); len];
        for (id, &h) in self.hashes.iter().enumerate() {
            let mut i = h as usize & mask;
            while slots[i].id != 0 {
                i = (i + 1) & mask;
            }
            slots[i] = Slot {
                tag: (h >> 32) as u32,
                id: id as u32 + 1,
            };
        }
        self.slots = slots;
    }

    /// The distinct values, by id.
    pub(crate) fn values(&self) -> &[&'a [u8]] {
        &self.values
    }

    /// Bytes of the values as a `PLAIN` dictionary page.
    pub(crate) fn page_bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_first_appearance_and_survive_growth() {
        let words: Vec<String> = (0..5000).map(|i| format!("v{}", i % 1234)).collect();
        let mut d = Dictionary::with_capacity(4);
        let ids: Vec<u32> = words.iter().map(|w| d.id(w.as_bytes())).collect();
        assert_eq!(d.values().len(), 1234);
        for (w, &id) in words.iter().zip(&ids) {
            assert_eq!(d.values()[id as usize], w.as_bytes());
        }
        assert_eq!(ids[..3], [0, 1, 2]);
        assert_eq!(ids[1234], 0);
        let bytes: usize = d.values().iter().map(|v| 4 + v.len()).sum();
        assert_eq!(d.page_bytes(), bytes);
        // the empty value is a value like any other
        let mut d = Dictionary::with_capacity(0);
        assert_eq!((d.id(b""), d.id(b"x"), d.id(b"")), (0, 1, 0));
    }
}
