//! TCP analysis of one flow: handshake, sequence tracking, retransmissions, reordering,
//! network duplicates, zero windows and per-segment RTT samples.
//!
//! Everything is fixed-size state per direction ([`DirTrack`]) next to the direction's counters
//! ([`DirRecord`]); one call per segment ([`segment`]), no allocation. Sequence numbers compare
//! modulo 2³² (RFC 9293 §3.4).
//!
//! How a data segment `[seq, seq + len)` (FIN counts as one octet) is classified, against the
//! highest sequence number seen so far in its direction (`next`):
//! - `seq == next`: in order; `next` advances. The first in-order segment while no sample is in
//!   flight starts an RTT sample, closed by the first ACK from the other side that covers it.
//! - `seq > next`: a hole `[next, seq)` opened (the segment is *out of sequence*); `next` jumps.
//! - `seq < next`, the same segment as the previous one (sequence, length, IPv4
//!   identification) less than 1 ms later: a *network duplicate*.
//! - `seq < next`, inside the open hole, less than one round trip after the hole opened (the
//!   handshake RTT, else the smallest RTT sample, else 3 ms): *reordered* by the network.
//! - otherwise `seq < next`: a *retransmission*; the octets below `next` count as retransmitted,
//!   any beyond it as new. An RTT sample in flight over that range is abandoned (Karn).
//!
//! The handshake: the last SYN before the first SYN/ACK, the SYN/ACK, and the first ACK of the
//! initiator acknowledging the SYN/ACK give the two halves of the handshake RTT as seen at the
//! observer (responder side: SYN → SYN/ACK; initiator side: SYN/ACK → ACK). A SYN names its
//! sender the initiator and a SYN/ACK its receiver, whatever the first packet suggested.

use mplane_capture::packet::TcpInfo;
use mplane_capture::packet::tcp::flags;

use super::record::{DirRecord, NO_TIME_US};

/// Fallback reordering threshold when the flow has no RTT estimate yet.
const DEFAULT_REORDER_NS: u64 = 3_000_000;
/// Two copies of a segment closer than this are a network duplicate.
const DUPLICATE_NS: u64 = 1_000_000;

/// Sequence-tracking state of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirTrack {
    /// `next` is valid (a SYN or the first data segment was seen).
    pub seq_valid: bool,
    /// The ISN (from the SYN), if a SYN was seen.
    pub isn: u32,
    /// Highest sequence number seen plus one.
    pub next: u32,
    /// Previous data segment: sequence number.
    pub last_seq: u32,
    /// Previous data segment: length.
    pub last_len: u16,
    /// Previous data segment: IPv4 identification (0 for IPv6).
    pub last_ipid: u16,
    /// An RTT sample is in flight.
    pub pending: bool,
    /// End sequence number of the sampled segment.
    pub pending_end: u32,
    /// When it was seen.
    pub pending_ns: u64,
    /// A hole is open.
    pub hole: bool,
    /// Hole start (the hole ends where `next` was when the segment beyond it arrived; later
    /// segments below `next` are checked against the start only).
    pub hole_start: u32,
    /// When it opened, in [`HOLE_TICK_NS`] units after the flow's first packet (saturating).
    pub hole_t: u32,
    /// A FIN was seen in this direction.
    pub fin: bool,
}

/// Unit of [`DirTrack::hole_t`]: 16 µs (a u32 spans 19 hours).
pub const HOLE_TICK_NS: u64 = 16_384;

/// `u32::MAX`: the handshake step was not seen.
const NOT_SEEN: u32 = u32::MAX;
/// An offset that did not fit (4.29 s or more after the flow's first packet).
const TOO_LATE: u32 = u32::MAX - 1;

/// Handshake times of a flow, as ns after its first packet (12 bytes). A step later than
/// 4.29 s after the first packet is not measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    /// Last SYN before the first SYN/ACK.
    syn: u32,
    /// First SYN/ACK.
    synack: u32,
    /// The initiator's ACK of the SYN/ACK.
    ack: u32,
}

impl Default for Handshake {
    fn default() -> Self {
        Handshake {
            syn: NOT_SEEN,
            synack: NOT_SEEN,
            ack: NOT_SEEN,
        }
    }
}

#[inline]
fn offset(ts: u64, start_ns: u64) -> u32 {
    ts.saturating_sub(start_ns).min(u64::from(TOO_LATE)) as u32
}

fn measured(a: u32, b: u32) -> Option<u64> {
    (a < TOO_LATE && b < TOO_LATE && b >= a).then(|| u64::from(b - a))
}

impl Handshake {
    /// SYN → SYN/ACK.
    pub fn responder_ns(&self) -> Option<u64> {
        measured(self.syn, self.synack)
    }
    /// SYN/ACK → ACK.
    pub fn initiator_ns(&self) -> Option<u64> {
        measured(self.synack, self.ack)
    }
    /// The whole handshake round trip, if both halves are known.
    pub fn rtt_ns(&self) -> Option<u64> {
        Some(self.responder_ns()? + self.initiator_ns()?)
    }
}

#[inline(always)]
fn hole_t(ts: u64, start_ns: u64) -> u32 {
    (ts.saturating_sub(start_ns) / HOLE_TICK_NS).min(u64::from(u32::MAX)) as u32
}

/// `a < b` modulo 2³².
#[inline(always)]
pub fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// `a <= b` modulo 2³².
#[inline(always)]
pub fn seq_le(a: u32, b: u32) -> bool {
    !seq_lt(b, a)
}

/// What the meter needs to know after a segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentOutcome {
    /// The segment was a SYN (no ACK) from this direction: its sender initiated the flow.
    pub initiator_here: bool,
    /// The segment was a SYN/ACK: the other side initiated the flow.
    pub initiator_there: bool,
    /// A SYN arrived after this direction's FIN or after a RST: a new connection on the
    /// same 5-tuple (port reuse); the meter ends the old flow first.
    pub new_connection: bool,
}

/// One TCP segment in direction `d` (0 or 1) of a flow: updates counters `recs[d]`, tracking
/// `tracks[d]`, RTT samples of the other direction, and the handshake. `payload` is the TCP
/// payload length from the IP/TCP headers, `ipid` the IPv4 identification (0 for IPv6),
/// `prev_ns` the time of the previous packet in this direction (0 if none), `start_ns` the
/// flow's first packet (for the µs offsets of payload/ACK times), `initiator` the direction
/// index of the initiator as known before this segment.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn segment(
    recs: &mut [DirRecord; 2],
    tracks: &mut [DirTrack; 2],
    hs: &mut Handshake,
    d: usize,
    initiator: usize,
    t: &TcpInfo,
    payload: u32,
    ipid: u16,
    prev_ns: u64,
    ts: u64,
    start_ns: u64,
) -> SegmentOutcome {
    let o = 1 - d;
    let f = t.flags;
    let syn = f & flags::SYN != 0;
    let fin = f & flags::FIN != 0;
    let rst = f & flags::RST != 0;
    let ack = f & flags::ACK != 0;
    let mut out = SegmentOutcome::default();
    let rel_us = |ts: u64| -> u32 {
        let us = ts.saturating_sub(start_ns) / 1000;
        us.min(u64::from(NO_TIME_US - 1)) as u32
    };
    {
        let r = &mut recs[d];
        r.tcp_flags |= f as u8;
        r.syn = r.syn.saturating_add(u16::from(syn));
        r.fin = r.fin.saturating_add(u16::from(fin));
        r.rst = r.rst.saturating_add(u16::from(rst));
        r.ack += u32::from(ack);
        if ack && payload == 0 && !syn && !fin && !rst {
            r.pure_ack += 1;
        }
        if payload > 0 {
            r.with_payload += 1;
            let us = rel_us(ts);
            if r.first_payload_us == NO_TIME_US {
                r.first_payload_us = us;
            }
            r.last_payload_us = us;
        }
        if ack && r.first_ack_us == NO_TIME_US {
            r.first_ack_us = rel_us(ts);
        }
        if t.window == 0 && !rst {
            r.zero_window += 1;
        }
    }

    // Handshake and options.
    if syn {
        let tr = &tracks[d];
        if tr.seq_valid && (tr.fin || tracks[o].fin) && t.seq != tr.isn {
            out.new_connection = true;
            return out;
        }
        let r = &mut recs[d];
        r.options.syn_seen = true;
        r.options.mss = t.mss;
        r.options.wscale = t.wscale;
        r.options.sack_permitted = t.sack_permitted;
        r.options.timestamps = t.timestamps.is_some();
        let tr = &mut tracks[d];
        if tr.seq_valid && tr.isn == t.seq && tr.next == t.seq.wrapping_add(1) {
            // the same SYN again: a retransmission
            recs[d].rxmit_packets += 1;
        } else if !tr.seq_valid || tr.isn != t.seq {
            tr.seq_valid = true;
            tr.isn = t.seq;
            tr.next = t.seq.wrapping_add(1);
        }
        if ack {
            if hs.synack == NOT_SEEN {
                hs.synack = offset(ts, start_ns);
            }
            out.initiator_there = true;
        } else {
            if hs.synack == NOT_SEEN {
                hs.syn = offset(ts, start_ns);
            }
            out.initiator_here = true;
        }
    } else if ack
        && d == initiator
        && hs.synack != NOT_SEEN
        && hs.ack == NOT_SEEN
        && tracks[o].seq_valid
        && t.ack == tracks[o].isn.wrapping_add(1)
    {
        hs.ack = offset(ts, start_ns);
    }

    // RTT sample of the other direction's data, closed by this ACK.
    if ack {
        let to = &mut tracks[o];
        if to.pending && seq_le(to.pending_end, t.ack) {
            to.pending = false;
            recs[o].rtt.add(ts.saturating_sub(to.pending_ns));
        }
    }

    // Sequence analysis of data (and FIN) in this direction.
    let len = payload + u32::from(fin);
    if len > 0 && !syn {
        let reorder_ns = hs
            .rtt_ns()
            .or_else(|| (recs[d].rtt.count > 0).then_some(u64::from(recs[d].rtt.min_ns)))
            .or_else(|| (recs[o].rtt.count > 0).then_some(u64::from(recs[o].rtt.min_ns)))
            .unwrap_or(DEFAULT_REORDER_NS);
        let r = &mut recs[d];
        let tr = &mut tracks[d];
        let seq = t.seq;
        let end = seq.wrapping_add(len);
        if !tr.seq_valid {
            tr.seq_valid = true;
            tr.isn = seq.wrapping_sub(1);
            tr.next = seq;
        }
        if seq == tr.next {
            tr.next = end;
            if !tr.pending && payload > 0 {
                tr.pending = true;
                tr.pending_end = end;
                tr.pending_ns = ts;
            }
        } else if seq_lt(tr.next, seq) {
            r.out_of_sequence += 1;
            tr.hole = true;
            tr.hole_start = tr.next;
            tr.hole_t = hole_t(ts, start_ns);
            tr.next = end;
        } else if seq == tr.last_seq
            && len == u32::from(tr.last_len)
            && ipid == tr.last_ipid
            && ipid != 0
            && ts.saturating_sub(prev_ns) < DUPLICATE_NS
        {
            r.duplicates += 1;
        } else if tr.hole
            && seq_le(tr.hole_start, seq)
            && u64::from(hole_t(ts, start_ns).saturating_sub(tr.hole_t)) * HOLE_TICK_NS < reorder_ns
        {
            r.reordered += 1;
            // the part of the hole this segment filled
            if seq == tr.hole_start {
                tr.hole_start = end;
                if !seq_lt(tr.hole_start, tr.next) {
                    tr.hole = false;
                }
            }
        } else {
            r.rxmit_packets += 1;
            let old_end = if seq_lt(tr.next, end) { tr.next } else { end };
            r.rxmit_octets += u64::from(old_end.wrapping_sub(seq).min(payload));
            if seq_lt(tr.next, end) {
                tr.next = end;
            }
            if tr.pending && seq_lt(seq, tr.pending_end) {
                tr.pending = false;
            }
            if tr.hole && seq_le(seq, tr.hole_start) && seq_lt(tr.hole_start, end) {
                tr.hole = false;
            }
        }
        tr.last_seq = seq;
        tr.last_len = len.min(u32::from(u16::MAX)) as u16;
        tr.last_ipid = ipid;
        if fin {
            tr.fin = true;
        }
    } else if fin {
        tracks[d].fin = true;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Conn {
        recs: [DirRecord; 2],
        tracks: [DirTrack; 2],
        hs: Handshake,
        initiator: usize,
        prev: [u64; 2],
    }

    impl Conn {
        fn new() -> Self {
            Conn {
                recs: [DirRecord::EMPTY; 2],
                tracks: [DirTrack::default(); 2],
                hs: Handshake::default(),
                initiator: 0,
                prev: [0; 2],
            }
        }
        #[allow(clippy::too_many_arguments)]
        fn seg(
            &mut self,
            d: usize,
            seq: u32,
            ack: u32,
            fl: u16,
            payload: u32,
            ipid: u16,
            ts: u64,
        ) -> SegmentOutcome {
            let t = TcpInfo {
                seq,
                ack,
                flags: fl,
                window: 1000,
                mss: if fl & flags::SYN != 0 { 1460 } else { 0 },
                ..TcpInfo::default()
            };
            let out = segment(
                &mut self.recs,
                &mut self.tracks,
                &mut self.hs,
                d,
                self.initiator,
                &t,
                payload,
                ipid,
                self.prev[d],
                BASE + ts,
                BASE,
            );
            self.prev[d] = BASE + ts;
            if out.initiator_here {
                self.initiator = d;
            } else if out.initiator_there {
                self.initiator = 1 - d;
            }
            out
        }
    }

    const MS: u64 = 1_000_000;
    const BASE: u64 = 1_700_000_000_000_000_000;
    const A: u16 = flags::ACK;

    #[test]
    fn handshake_and_rtt_samples() {
        let mut c = Conn::new();
        c.seg(0, 100, 0, flags::SYN, 0, 1, 0);
        c.seg(1, 900, 101, flags::SYN | A, 0, 1, 10 * MS);
        c.seg(0, 101, 901, A, 0, 2, 12 * MS);
        assert_eq!(c.hs.responder_ns(), Some(10 * MS));
        assert_eq!(c.hs.initiator_ns(), Some(2 * MS));
        // request, response
        c.seg(0, 101, 901, flags::PSH | A, 200, 3, 20 * MS);
        c.seg(1, 901, 301, A, 1000, 2, 31 * MS); // acks the request: sample 11 ms
        c.seg(0, 301, 1901, A, 0, 4, 33 * MS); // acks the response: sample 2 ms
        assert_eq!(c.recs[0].rtt.count, 1);
        assert_eq!(u64::from(c.recs[0].rtt.min_ns), 11 * MS);
        assert_eq!(c.recs[1].rtt.count, 1);
        assert_eq!(u64::from(c.recs[1].rtt.max_ns), 2 * MS);
        assert_eq!(c.recs[0].pure_ack, 2);
        assert_eq!(c.recs[0].with_payload, 1);
        assert_eq!(c.recs[0].first_payload_us, 20_000);
        assert_eq!(c.recs[1].first_ack_us, 10_000);
        assert_eq!(c.recs[0].options.mss, 1460);
        assert_eq!(c.recs[0].rxmit_packets, 0);
    }

    #[test]
    fn synack_first_corrects_the_initiator() {
        let mut c = Conn::new();
        let out = c.seg(0, 900, 101, flags::SYN | A, 0, 1, 0);
        assert!(out.initiator_there);
        assert_eq!(c.initiator, 1);
    }

    #[test]
    fn retransmission_reordering_duplicate() {
        let mut c = Conn::new();
        c.seg(0, 0, 0, flags::SYN, 0, 1, 0);
        c.seg(1, 5000, 1, flags::SYN | A, 0, 1, 10 * MS);
        c.seg(0, 1, 5001, A, 0, 2, 20 * MS); // handshake RTT 20 ms
        // 1..101, then 201..301 (hole 101..201), then 101..201 2 ms later: reordered
        c.seg(0, 1, 5001, A, 100, 3, 30 * MS);
        c.seg(0, 201, 5001, A, 100, 4, 31 * MS);
        c.seg(0, 101, 5001, A, 100, 5, 33 * MS);
        assert_eq!(c.recs[0].out_of_sequence, 1);
        assert_eq!(c.recs[0].reordered, 1);
        assert_eq!(c.recs[0].rxmit_packets, 0);
        // the same segment again, same IP id, 0.1 ms later: duplicate
        c.seg(0, 101, 5001, A, 100, 5, 33 * MS + 100_000);
        assert_eq!(c.recs[0].duplicates, 1);
        // 301..401, hole 401..501 opened by 501..601, then 401..501 200 ms later: retransmitted
        c.seg(0, 301, 5001, A, 100, 6, 40 * MS);
        c.seg(0, 501, 5001, A, 100, 7, 41 * MS);
        c.seg(0, 401, 5001, A, 100, 8, 241 * MS);
        assert_eq!(c.recs[0].out_of_sequence, 2);
        assert_eq!(c.recs[0].rxmit_packets, 1);
        assert_eq!(c.recs[0].rxmit_octets, 100);
        // a segment overlapping old and new data
        c.seg(0, 551, 5001, A, 100, 9, 250 * MS);
        assert_eq!(c.recs[0].rxmit_packets, 2);
        assert_eq!(c.recs[0].rxmit_octets, 150);
        assert_eq!(c.tracks[0].next, 651);
    }

    #[test]
    fn karn_abandons_sampled_retransmitted_data() {
        let mut c = Conn::new();
        c.seg(0, 0, 0, flags::SYN, 0, 1, 0);
        c.seg(1, 5000, 1, flags::SYN | A, 0, 1, MS);
        c.seg(0, 1, 5001, A, 0, 2, 2 * MS);
        c.seg(0, 1, 5001, A, 100, 3, 10 * MS);
        c.seg(0, 1, 5001, A, 100, 4, 300 * MS); // retransmitted
        c.seg(1, 5001, 101, A, 0, 2, 301 * MS);
        assert_eq!(c.recs[0].rtt.count, 0);
        assert_eq!(c.recs[0].rxmit_packets, 1);
    }

    #[test]
    fn syn_retransmission_and_port_reuse() {
        let mut c = Conn::new();
        c.seg(0, 7, 0, flags::SYN, 0, 1, 0);
        c.seg(0, 7, 0, flags::SYN, 0, 2, 1000 * MS);
        assert_eq!(c.recs[0].syn, 2);
        assert_eq!(c.recs[0].rxmit_packets, 1);
        c.seg(1, 70, 8, flags::SYN | A, 0, 1, 1001 * MS);
        assert_eq!(c.hs.responder_ns(), Some(MS));
        c.seg(0, 8, 71, flags::FIN | A, 0, 3, 1002 * MS);
        c.seg(1, 71, 9, flags::FIN | A, 0, 2, 1003 * MS);
        let out = c.seg(0, 99_999, 0, flags::SYN, 0, 4, 1010 * MS);
        assert!(out.new_connection);
    }

    #[test]
    fn sequence_wraps() {
        assert!(seq_lt(u32::MAX - 5, 3));
        assert!(!seq_lt(3, u32::MAX - 5));
        assert!(seq_le(7, 7));
        let mut c = Conn::new();
        c.seg(0, u32::MAX - 99, 0, A, 100, 1, 0);
        c.seg(0, 0, 0, A, 100, 2, MS);
        assert_eq!(c.recs[0].out_of_sequence, 0);
        assert_eq!(c.recs[0].rxmit_packets, 0);
        assert_eq!(c.tracks[0].next, 100);
    }

    #[test]
    fn zero_window_counts() {
        let mut c = Conn::new();
        let t = TcpInfo {
            flags: A,
            window: 0,
            ..TcpInfo::default()
        };
        segment(
            &mut c.recs,
            &mut c.tracks,
            &mut c.hs,
            1,
            0,
            &t,
            0,
            0,
            0,
            5,
            0,
        );
        assert_eq!(c.recs[1].zero_window, 1);
    }
}
