//! The dictionary of a text column chunk: each distinct value once, in order of first
//! appearance, and the id of every value.
//!
//! A general hash map costs about a hundred instructions per lookup here (probing groups of
//! control bytes, then comparing keys through `memcmp`); this table is open addressing over
//! `(tag, id)` slots, sized for the chunk up front, and compares a key only when the upper
//! half of its hash matches.
//!
//! The values are kept as the body of the `PLAIN` dictionary page itself (each value's
//! 4-byte length, then its bytes), built as they arrive: the dictionary outlives the arrays
//! of the pages that fill it, and the page costs no pass of its own at the end.

use std::hash::Hasher;

use rustc_hash::FxHasher;

/// A slot: the upper 32 bits of the value's hash and its id + 1 (0: empty).
#[derive(Clone, Copy, Default)]
struct Slot {
    tag: u32,
    id: u32,
}

/// Distinct values of a chunk and their ids.
pub(crate) struct Dictionary {
    /// The `PLAIN` dictionary page: per value, its length (4 bytes, little endian) and bytes.
    page: Vec<u8>,
    /// Where each value's bytes start in `page`, by id, and one more entry: the end.
    starts: Vec<u32>,
    hashes: Vec<u64>,
    slots: Vec<Slot>,
}

fn hash(v: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(v);
    h.finish()
}

impl Dictionary {
    /// A dictionary with room for `n` distinct values before it grows.
    pub(crate) fn with_capacity(n: usize) -> Self {
        Dictionary {
            page: Vec::new(),
            // the first value's bytes start after its length
            starts: vec![4],
            hashes: Vec::new(),
            slots: vec![Slot::default(); (2 * n).next_power_of_two().max(16)],
        }
    }

    /// The value of `id`.
    #[inline]
    fn value(&self, id: usize) -> &[u8] {
        // the end of a value is 4 bytes before the next one's start (its length)
        &self.page[self.starts[id] as usize..self.starts[id + 1] as usize - 4]
    }

    /// Number of distinct values.
    pub(crate) fn len(&self) -> usize {
        self.hashes.len()
    }

    /// The id of `v`, added if new.
    #[inline]
    pub(crate) fn id(&mut self, v: &[u8]) -> u32 {
        let h = hash(v);
        let tag = (h >> 32) as u32;
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        loop {
            let s = self.slots[i];
            if s.id == 0 {
                break;
            }
            if s.tag == tag && self.value(s.id as usize - 1) == v {
                return s.id - 1;
            }
            i = (i + 1) & mask;
        }
        let id = self.hashes.len() as u32;
        self.slots[i] = Slot { tag, id: id + 1 };
        self.page.extend_from_slice(&(v.len() as u32).to_le_bytes());
        self.page.extend_from_slice(v);
        self.starts.push(self.page.len() as u32 + 4);
        self.hashes.push(h);
        if 2 * self.hashes.len() > self.slots.len() {
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

    /// The body of the `PLAIN` dictionary page: every value by id.
    pub(crate) fn page(&self) -> &[u8] {
        &self.page
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
        assert_eq!(d.len(), 1234);
        for (w, &id) in words.iter().zip(&ids) {
            assert_eq!(d.value(id as usize), w.as_bytes());
        }
        assert_eq!(ids[..3], [0, 1, 2]);
        assert_eq!(ids[1234], 0);
        // the page holds each value once, by id, as PLAIN byte arrays
        let mut page = Vec::new();
        for w in &words[..1234] {
            page.extend_from_slice(&(w.len() as u32).to_le_bytes());
            page.extend_from_slice(w.as_bytes());
        }
        assert_eq!(d.page(), &page[..]);
        // the empty value is a value like any other
        let mut d = Dictionary::with_capacity(0);
        assert_eq!((d.id(b""), d.id(b"x"), d.id(b"")), (0, 1, 0));
    }
}
