//! Merging several interfaces into one time-ordered stream (a k-way merge by timestamp with a
//! bounded reorder window).
//!
//! A two-port optical tap or a pair of SPAN ports delivers one direction of every conversation
//! per port. Each port's frames arrive in timestamp order, but the kernel hands them to user
//! space in blocks (TPACKET_V3), so at any moment one port may be up to *D* behind the other:
//! a frame stamped at `t` on port B may only become readable at `t + D`. The merge therefore
//! holds the oldest frame of every port (one *head* per port, left in libpcap's buffer, nothing
//! is copied) and releases the oldest head only when every other port either has a head too or
//! was seen empty at a wall-clock time at least `window` after that frame's timestamp.
//!
//! # The bound
//!
//! `window` must exceed *D*. With TPACKET_V3 a block is handed over when it is full or when its
//! retire timer fires; the timer runs every `block_timeout` and retires a block only on the
//! second tick that finds it current, so *D* ≤ 2 × `block_timeout` plus scheduling delay. The
//! live source uses a 10 ms block timeout and a 30 ms window by default
//! ([`crate::source::live::LiveConfig`]). Consequences:
//!
//! - frames leave the merge at most `window` after their timestamp when a port is idle, and
//!   immediately while every port is busy; the reorder buffer is the kernel's own ring (one
//!   head per port in user space), so it costs no memory and no copy;
//! - a frame that is later than the window (a port stalled for longer) is still delivered,
//!   never dropped, and counted in [`crate::source::SourceStats::out_of_order`];
//! - timestamps come from one clock (the kernel's `CLOCK_REALTIME` software stamps), which is
//!   what makes "seen empty at wall time `T`" comparable with packet times.
//!
//! This module holds only the decision ([`Merge::pick`]); the live source does the I/O.

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pick {
    /// Deliver the head of this port.
    Emit(usize),
    /// The oldest head may be released once every headless port has been seen empty at or
    /// after this wall-clock time (ns).
    NotBefore(u64),
    /// No port has a head.
    Empty,
}

/// The merge state: one optional head timestamp per port and when each port was last seen
/// empty. Sized once at open; nothing allocates afterwards.
#[derive(Debug)]
pub(crate) struct Merge {
    window_ns: u64,
    heads: Vec<Option<u64>>,
    drained_at: Vec<u64>,
    last_ts: u64,
    out_of_order: u64,
}

impl Merge {
    /// A merge of `ports` ports with a reorder window of `window_ns`.
    pub(crate) fn new(ports: usize, window_ns: u64) -> Self {
        Merge {
            window_ns,
            heads: vec![None; ports],
            drained_at: vec![0; ports],
            last_ts: 0,
            out_of_order: 0,
        }
    }

    /// Port `i` now has a head stamped `ts`.
    #[inline]
    pub(crate) fn set_head(&mut self, i: usize, ts: u64) {
        self.heads[i] = Some(ts);
    }

    /// Port `i`'s head was delivered (or dropped).
    #[inline]
    pub(crate) fn clear_head(&mut self, i: usize) {
        self.heads[i] = None;
    }

    /// `true` if port `i` holds a head.
    #[inline]
    #[cfg(test)]
    pub(crate) fn has_head(&self, i: usize) -> bool {
        self.heads[i].is_some()
    }

    /// Port `i` was found with nothing to read by a check that started at wall time `now_ns`.
    #[inline]
    pub(crate) fn drained(&mut self, i: usize, now_ns: u64) {
        self.drained_at[i] = self.drained_at[i].max(now_ns);
    }

    /// Decides which head to deliver, if any. See the module doc.
    #[inline]
    pub(crate) fn pick(&self) -> Pick {
        let mut best: Option<(usize, u64)> = None;
        let mut headless = false;
        for (i, h) in self.heads.iter().enumerate() {
            match *h {
                Some(t) if best.is_none_or(|(_, b)| t < b) => best = Some((i, t)),
                Some(_) => {}
                None => headless = true,
            }
        }
        let Some((i, t)) = best else {
            return Pick::Empty;
        };
        if !headless {
            return Pick::Emit(i);
        }
        let need = t.saturating_add(self.window_ns);
        let ok = self
            .heads
            .iter()
            .zip(&self.drained_at)
            .all(|(h, &d)| h.is_some() || d >= need);
        if ok {
            Pick::Emit(i)
        } else {
            Pick::NotBefore(need)
        }
    }

    /// A frame stamped `ts` was delivered: counts it if it is older than one delivered before.
    #[inline]
    pub(crate) fn emitted(&mut self, ts: u64) {
        if ts < self.last_ts {
            self.out_of_order += 1;
        } else {
            self.last_ts = ts;
        }
    }

    /// Frames delivered out of order so far.
    pub(crate) fn out_of_order(&self) -> u64 {
        self.out_of_order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u64 = 30;

    #[test]
    fn single_port_emits_at_once() {
        let mut m = Merge::new(1, W);
        assert_eq!(m.pick(), Pick::Empty);
        m.set_head(0, 100);
        assert_eq!(m.pick(), Pick::Emit(0));
    }

    #[test]
    fn oldest_head_first_when_all_ports_have_one() {
        let mut m = Merge::new(3, W);
        m.set_head(0, 50);
        m.set_head(1, 20);
        m.set_head(2, 40);
        assert_eq!(m.pick(), Pick::Emit(1));
        m.clear_head(1);
        // port 1 has no head and was never seen empty: wait until 40 + W
        assert_eq!(m.pick(), Pick::NotBefore(40 + W));
        m.drained(1, 40 + W - 1);
        assert_eq!(m.pick(), Pick::NotBefore(40 + W));
        m.drained(1, 40 + W);
        assert_eq!(m.pick(), Pick::Emit(2));
    }

    #[test]
    fn a_late_frame_is_counted_not_dropped() {
        let mut m = Merge::new(2, W);
        m.emitted(100);
        m.emitted(100);
        m.emitted(99);
        m.emitted(101);
        assert_eq!(m.out_of_order(), 1);
    }

    /// Simulates two ports whose frames become visible up to `delay` after their timestamp
    /// (random per block) and checks the merged output is exactly the sorted input as long as
    /// the window covers the delay.
    #[test]
    fn simulated_ports_merge_in_order() {
        // deterministic pseudo-random numbers
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for round in 0..50 {
            let delay = 1 + rnd(20);
            let window = delay + 1;
            // port p's frames: (ts, visible_at)
            let mut ports: Vec<Vec<(u64, u64)>> = vec![Vec::new(), Vec::new()];
            let mut t = 0;
            for _ in 0..300 {
                t += 1 + rnd(3);
                let p = rnd(2) as usize;
                ports[p].push((t, t + rnd(delay + 1)));
            }
            // per-port visibility must be monotone (blocks are handed over in order)
            for p in &mut ports {
                let mut v = 0;
                for f in p.iter_mut() {
                    v = v.max(f.1);
                    f.1 = v;
                }
            }
            let mut all: Vec<u64> = ports.iter().flatten().map(|f| f.0).collect();
            all.sort_unstable();
            let mut m = Merge::new(2, window);
            let mut next = [0usize; 2];
            let mut out = Vec::new();
            let mut now = 0;
            while out.len() < all.len() {
                // read what is visible; an empty read marks the port drained as of `now`
                for p in 0..2 {
                    if !m.has_head(p) {
                        match ports[p].get(next[p]) {
                            Some(&(ts, vis)) if vis <= now => m.set_head(p, ts),
                            _ => m.drained(p, now),
                        }
                    }
                }
                match m.pick() {
                    Pick::Emit(p) => {
                        let ts = ports[p][next[p]].0;
                        m.emitted(ts);
                        out.push(ts);
                        m.clear_head(p);
                        next[p] += 1;
                    }
                    Pick::NotBefore(_) | Pick::Empty => now += 1,
                }
            }
            assert_eq!(out, all, "round {round}");
            assert_eq!(m.out_of_order(), 0);
        }
    }
}
