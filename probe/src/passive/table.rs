//! The per-worker flow table: open addressing over a power-of-two index, flow state in
//! preallocated slots, and a timer wheel for idle/active/close deadlines.
//!
//! Memory is bounded by `max_flows`, fixed at construction: the index has
//! `next_power_of_two(2 × max_flows)` entries of 8 bytes (load factor ≤ 0.5, so linear probing
//! stays short), the slots are one `Vec` reserved for `max_flows` entries up front (pages are
//! touched only as flows arrive), the free list and the wheel are allocated once. Nothing
//! allocates after [`FlowTable::new`].
//!
//! An index entry packs the low 32 bits of the key's hash (its home position and a tag that
//! avoids touching slots of other keys) with `slot + 1` (0 = empty). Removal shifts later
//! entries of the probe run back (no tombstones), so lookups never slow down with churn.
//!
//! The wheel has [`WHEEL`] buckets of `tick_ns`; each live flow sits in exactly one bucket's
//! doubly linked list (links inside the slot). Deadlines are re-checked when their bucket comes
//! due ([`FlowTable::begin_sweep`], [`FlowTable::pop_due`]): a flow that saw packets since is
//! put back into a later bucket, so a packet never has to touch the wheel. Deadlines further
//! out than the wheel's span wait in its last bucket and are re-checked. The earliest non-empty
//! bucket also names the flow to evict when the table is full ([`FlowTable::oldest`]).

use mplane_capture::flow::FlowKey;

/// Buckets in the timer wheel.
pub const WHEEL: usize = 4096;
const NONE: u32 = u32::MAX;
/// `Links::bucket`: on no list.
const NO_BUCKET: u16 = u16::MAX;
/// `Links::bucket`: popped from a due bucket and not yet put back.
const DETACHED: u16 = u16::MAX - 1;

/// A slot's table-owned links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Links {
    prev: u32,
    next: u32,
    bucket: u16,
    live: bool,
}

impl Default for Links {
    fn default() -> Self {
        Links {
            prev: NONE,
            next: NONE,
            bucket: NO_BUCKET,
            live: false,
        }
    }
}

/// What the table needs from a slot's contents.
pub trait Slot: Default {
    /// The flow's key.
    fn key(&self) -> &FlowKey;
    /// The table's links.
    fn links(&mut self) -> &mut Links;
    /// The table's links (read).
    fn links_ref(&self) -> &Links;
    /// Issues prefetch hints for the cache lines a lookup and update will touch (see
    /// [`prefetch`]); the default hints the first line only.
    #[inline(always)]
    fn prefetch(&self) {
        prefetch(self);
    }
}

/// The table. See the module doc.
#[derive(Debug)]
pub struct FlowTable<S: Slot> {
    index: Box<[u64]>,
    mask: usize,
    slots: Vec<S>,
    cap: usize,
    free: Vec<u32>,
    live: usize,
    heads: Box<[u32]>,
    tick_ns: u64,
    /// Every tick up to and including this one has been swept.
    swept: u64,
    started: bool,
    /// Detached bucket lists of the current sweep.
    detached: Vec<u32>,
    cursor: u32,
}

/// A cache prefetch hint for the line holding `r` (no-op where the target has none).
#[inline(always)]
pub fn prefetch<T>(r: &T) {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse"))]
    safe_arch::prefetch_t0(r);
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse")))]
    let _ = r;
}

#[inline(always)]
fn h32(h: u64) -> u32 {
    h as u32
}

impl<S: Slot> FlowTable<S> {
    /// A table for at most `max_flows` flows (at least 1) with a wheel of `tick_ns` ticks.
    pub fn new(max_flows: usize, tick_ns: u64) -> Self {
        let cap = max_flows.clamp(1, (u32::MAX - 2) as usize);
        let index_len = (cap * 2).next_power_of_two().max(16);
        let index = vec![0u64; index_len].into_boxed_slice();
        super::hugepage::advise(&index, index_len);
        let slots = Vec::with_capacity(cap);
        super::hugepage::advise(&slots, cap);
        FlowTable {
            index,
            mask: index_len - 1,
            slots,
            cap,
            free: Vec::with_capacity(cap),
            live: 0,
            heads: vec![NONE; WHEEL].into_boxed_slice(),
            tick_ns: tick_ns.max(1),
            swept: 0,
            started: false,
            detached: Vec::with_capacity(WHEEL),
            cursor: NONE,
        }
    }

    /// Maximum number of flows.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Live flows.
    pub fn len(&self) -> usize {
        self.live
    }

    /// `true` when no flow is live.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Bytes of the index, the slots (at capacity) and the wheel.
    pub fn bytes_at_capacity(&self) -> usize {
        self.index.len() * 8 + self.cap * std::mem::size_of::<S>() + self.cap * 4 + WHEEL * 4
    }

    /// Finds the slot of `key` (`hash` = `key.hash64()`).
    #[inline]
    pub fn find(&self, key: &FlowKey, hash: u64) -> Option<u32> {
        let tag = h32(hash);
        let mut i = tag as usize & self.mask;
        loop {
            let e = self.index[i];
            if e == 0 {
                return None;
            }
            if (e >> 32) as u32 == tag {
                let id = (e as u32) - 1;
                if self.slots[id as usize].key() == key {
                    return Some(id);
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Hints the CPU to fetch the index entry of `hash` (a look-ahead a few packets early).
    #[inline(always)]
    pub fn prefetch_index(&self, hash: u64) {
        prefetch(&self.index[h32(hash) as usize & self.mask]);
    }

    /// Hints the CPU to fetch the slot the index entry of `hash` points to, if its tag matches
    /// (call after [`Self::prefetch_index`] had time to land).
    #[inline(always)]
    pub fn prefetch_slot(&self, hash: u64) {
        let tag = h32(hash);
        let e = self.index[tag as usize & self.mask];
        if e != 0
            && (e >> 32) as u32 == tag
            && let Some(s) = self.slots.get((e as u32 - 1) as usize)
        {
            s.prefetch();
        }
    }

    /// Inserts a new flow (whose key is not in the table); `None` when the table is full.
    #[inline]
    pub fn insert(&mut self, hash: u64, slot: S) -> Option<u32> {
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = slot;
                id
            }
            None if self.slots.len() < self.cap => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
            None => return None,
        };
        self.slots[id as usize].links().live = true;
        let tag = h32(hash);
        let mut i = tag as usize & self.mask;
        while self.index[i] != 0 {
            i = (i + 1) & self.mask;
        }
        self.index[i] = (u64::from(tag) << 32) | u64::from(id + 1);
        self.live += 1;
        Some(id)
    }

    /// The slot `id`.
    #[inline(always)]
    pub fn get(&self, id: u32) -> &S {
        &self.slots[id as usize]
    }

    /// The slot `id`, mutable.
    #[inline(always)]
    pub fn get_mut(&mut self, id: u32) -> &mut S {
        &mut self.slots[id as usize]
    }

    /// Removes flow `id` (index, wheel) and frees its slot.
    pub fn remove(&mut self, id: u32) {
        let s = &self.slots[id as usize];
        if !s.links_ref().live {
            return;
        }
        let hash = s.key().hash64();
        self.unlink(id);
        // find the entry
        let mut i = h32(hash) as usize & self.mask;
        loop {
            let e = self.index[i];
            if e == 0 {
                break;
            }
            if e as u32 == id + 1 {
                // backward-shift deletion
                let mut hole = i;
                let mut j = i;
                loop {
                    j = (j + 1) & self.mask;
                    let e = self.index[j];
                    if e == 0 {
                        break;
                    }
                    let home = ((e >> 32) as usize) & self.mask;
                    let stays = if hole <= j {
                        hole < home && home <= j
                    } else {
                        hole < home || home <= j
                    };
                    if !stays {
                        self.index[hole] = e;
                        hole = j;
                    }
                }
                self.index[hole] = 0;
                break;
            }
            i = (i + 1) & self.mask;
        }
        self.slots[id as usize] = S::default();
        self.free.push(id);
        self.live -= 1;
    }

    /// Slots allocated so far (ids below this may be live).
    pub fn slots_len(&self) -> usize {
        self.slots.len()
    }

    /// `true` when slot `id` holds a live flow.
    pub fn is_live(&self, id: u32) -> bool {
        self.slots
            .get(id as usize)
            .is_some_and(|s| s.links_ref().live)
    }

    /// Ids of all live flows (for window cuts; allocation-free iteration).
    pub fn live_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.links_ref().live)
            .map(|(i, _)| i as u32)
    }

    #[inline]
    fn tick_of(&self, ns: u64) -> u64 {
        ns / self.tick_ns
    }

    /// Anchors the wheel at `now` (the first packet's time); later calls do nothing. Called by
    /// [`Self::schedule`] and [`Self::begin_sweep`] too, but a caller that schedules deadlines
    /// in the future should anchor at the current time first.
    pub fn start_at(&mut self, now: u64) {
        if !self.started {
            self.started = true;
            self.swept = self.tick_of(now).saturating_sub(1);
        }
    }

    /// Puts flow `id` on the wheel for `deadline_ns` (moving it if it was elsewhere).
    pub fn schedule(&mut self, id: u32, deadline_ns: u64) {
        self.start_at(deadline_ns);
        self.unlink(id);
        let t = self
            .tick_of(deadline_ns)
            .clamp(self.swept + 1, self.swept + WHEEL as u64);
        let b = (t as usize) & (WHEEL - 1);
        let head = self.heads[b];
        {
            let l = self.slots[id as usize].links();
            l.prev = NONE;
            l.next = head;
            l.bucket = b as u16;
        }
        if head != NONE {
            self.slots[head as usize].links().prev = id;
        }
        self.heads[b] = id;
    }

    fn unlink(&mut self, id: u32) {
        let l = *self.slots[id as usize].links_ref();
        if l.bucket == NO_BUCKET || l.bucket == DETACHED {
            let m = self.slots[id as usize].links();
            m.bucket = NO_BUCKET;
            return;
        }
        if l.prev != NONE {
            self.slots[l.prev as usize].links().next = l.next;
        } else {
            self.heads[l.bucket as usize] = l.next;
        }
        if l.next != NONE {
            self.slots[l.next as usize].links().prev = l.prev;
        }
        let m = self.slots[id as usize].links();
        m.prev = NONE;
        m.next = NONE;
        m.bucket = NO_BUCKET;
    }

    /// Detaches every bucket due at `now_ns`; then [`Self::pop_due`] hands their flows out one
    /// by one. Flows put back with [`Self::schedule`] during the sweep land in later buckets.
    pub fn begin_sweep(&mut self, now_ns: u64) {
        self.start_at(now_ns);
        let target = self.tick_of(now_ns);
        if target <= self.swept {
            return;
        }
        let from = (self.swept + 1).max((target + 1).saturating_sub(WHEEL as u64));
        for t in from..=target {
            let b = (t as usize) & (WHEEL - 1);
            let h = self.heads[b];
            if h != NONE {
                self.heads[b] = NONE;
                self.detached.push(h);
            }
        }
        self.swept = target;
    }

    /// The next flow of the current sweep (off the wheel: schedule or remove it).
    pub fn pop_due(&mut self) -> Option<u32> {
        if self.cursor == NONE {
            self.cursor = self.detached.pop()?;
        }
        let id = self.cursor;
        let l = self.slots[id as usize].links();
        self.cursor = l.next;
        l.prev = NONE;
        l.next = NONE;
        l.bucket = DETACHED;
        Some(id)
    }

    /// The flow with the earliest deadline bucket (the eviction candidate), if any.
    pub fn oldest(&self) -> Option<u32> {
        for k in 1..=WHEEL as u64 {
            let b = ((self.swept + k) as usize) & (WHEEL - 1);
            if self.heads[b] != NONE {
                return Some(self.heads[b]);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Clone)]
    struct S {
        key: FlowKey,
        links: Links,
        v: u64,
    }
    impl Slot for S {
        fn key(&self) -> &FlowKey {
            &self.key
        }
        fn links(&mut self) -> &mut Links {
            &mut self.links
        }
        fn links_ref(&self) -> &Links {
            &self.links
        }
    }

    fn key(i: u32) -> FlowKey {
        let mut k = FlowKey::default();
        k.addr_a[12..].copy_from_slice(&i.to_be_bytes());
        k.port_a = (i % 7) as u16;
        k
    }

    #[test]
    fn insert_find_remove_with_churn() {
        let mut t = FlowTable::<S>::new(1000, 1_000_000_000);
        let mut model = std::collections::HashMap::new();
        let mut x = 12345u64;
        for round in 0..20_000u32 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let k = key((x >> 40) as u32 % 1500);
            let h = k.hash64();
            match (t.find(&k, h), model.get(&k)) {
                (Some(id), Some(&v)) => {
                    assert_eq!(t.get(id).v, v);
                    if round % 3 == 0 {
                        t.remove(id);
                        model.remove(&k);
                    }
                }
                (None, None) => {
                    if let Some(id) = t.insert(
                        h,
                        S {
                            key: k,
                            v: u64::from(round),
                            ..S::default()
                        },
                    ) {
                        t.schedule(id, u64::from(round) * 1_000_000);
                        model.insert(k, u64::from(round));
                    } else {
                        assert_eq!(model.len(), 1000);
                    }
                }
                (a, b) => panic!("table {a:?} model {b:?}"),
            }
            assert_eq!(t.len(), model.len());
        }
        for (k, v) in &model {
            let id = t.find(k, k.hash64()).unwrap();
            assert_eq!(t.get(id).v, *v);
        }
        assert_eq!(t.live_ids().count(), model.len());
    }

    #[test]
    fn wheel_hands_out_due_flows() {
        let s = 1_000_000_000u64;
        let mut t = FlowTable::<S>::new(16, s);
        let ids: Vec<u32> = (0..5)
            .map(|i| {
                let k = key(i);
                t.insert(
                    k.hash64(),
                    S {
                        key: k,
                        ..S::default()
                    },
                )
                .unwrap()
            })
            .collect();
        for (i, &id) in ids.iter().enumerate() {
            t.schedule(id, 10 * s + i as u64 * s);
        }
        t.begin_sweep(12 * s);
        let mut due = Vec::new();
        while let Some(id) = t.pop_due() {
            due.push(id);
        }
        due.sort();
        assert_eq!(due, ids[..3]);
        // put one back later; the rest stay off the wheel
        t.schedule(ids[0], 100 * s);
        assert_eq!(t.oldest(), Some(ids[3]));
        t.remove(ids[1]);
        t.remove(ids[2]);
        t.begin_sweep(20 * s);
        let mut due = Vec::new();
        while let Some(id) = t.pop_due() {
            due.push(id);
        }
        due.sort();
        assert_eq!(due, ids[3..]);
        // a jump far beyond the wheel's span sweeps every bucket once
        t.begin_sweep(1_000_000 * s);
        assert_eq!(t.pop_due(), Some(ids[0]));
        assert_eq!(t.pop_due(), None);
    }

    #[test]
    fn deadlines_beyond_the_span_are_rechecked() {
        let s = 1_000_000_000u64;
        let mut t = FlowTable::<S>::new(4, s);
        let k = key(1);
        let id = t
            .insert(
                k.hash64(),
                S {
                    key: k,
                    ..S::default()
                },
            )
            .unwrap();
        t.schedule(id, 0);
        t.schedule(id, 10_000 * s); // clamped into the last bucket
        t.begin_sweep(WHEEL as u64 * s + 5 * s);
        assert_eq!(t.pop_due(), Some(id));
    }
}
