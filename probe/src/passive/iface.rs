//! Interface statistics: packets and octets by protocol, frame-size and inter-arrival
//! distributions (HdrHistogram, 2 significant digits), and per-second packet and octet counts.
//!
//! Every frame is counted once, by the worker that dissected it ([`Worker::observe`]), in
//! capture order, so inter-arrival times are those of the whole stream (the pipeline tells
//! each frame's predecessor's time). Per packet: a few additions and two histogram records,
//! no allocation. At a window cut the worker snapshots its statistics into an
//! [`IfaceStats`] value for the window ([`IfaceAccumulator::take`], which allocates once
//! per window, not per packet); snapshots of all workers merge exactly
//! ([`IfaceStats::merge`]).
//!
//! [`Worker::observe`]: mplane_capture::pipeline::Worker::observe

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use mplane_capture::packet::{Dissection, L3};

/// Largest frame size recorded exactly (larger ones saturate).
const MAX_FRAME: u64 = 1 << 18;
/// Largest inter-arrival time recorded (ns; larger ones saturate): one hour.
const MAX_IAT_NS: u64 = 3_600_000_000_000;
/// Seconds kept by the per-second ring.
const SECONDS: usize = 4096;
const NS: u64 = 1_000_000_000;

/// Packet and octet counters of one class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    /// Packets (frames).
    pub packets: u64,
    /// Octets (IP total lengths for IP classes, frame lengths for frames and non-IP).
    pub octets: u64,
}

impl Count {
    #[inline(always)]
    fn add(&mut self, octets: u64) {
        self.packets += 1;
        self.octets += octets;
    }
    fn merge(&mut self, o: &Count) {
        self.packets += o.packets;
        self.octets += o.octets;
    }
}

/// Statistics of a span of traffic (one window, all workers merged or one worker's part).
#[derive(Debug, Clone)]
pub struct IfaceStats {
    /// All frames (octets: original frame lengths).
    pub frames: Count,
    /// Frames without IP.
    pub non_ip: Count,
    /// IPv4 packets.
    pub ip4: Count,
    /// IPv6 packets.
    pub ip6: Count,
    /// TCP.
    pub tcp: Count,
    /// UDP.
    pub udp: Count,
    /// ICMP and ICMPv6.
    pub icmp: Count,
    /// Other IP protocols.
    pub other: Count,
    /// Frame sizes (original lengths).
    pub sizes: Histogram<u64>,
    /// Inter-arrival times, ns.
    pub iat_ns: Histogram<u64>,
    /// Frames and frame octets per second (second since the epoch → counts).
    pub per_second: BTreeMap<u64, Count>,
    /// First and last frame, ns.
    pub span_ns: Option<(u64, u64)>,
}

fn hist(max: u64) -> Histogram<u64> {
    // constant, valid bounds: 1 ≤ low, 2·low ≤ high, 2 significant digits
    Histogram::new_with_bounds(1, max, 2).expect("valid histogram bounds")
}

impl Default for IfaceStats {
    fn default() -> Self {
        IfaceStats {
            frames: Count::default(),
            non_ip: Count::default(),
            ip4: Count::default(),
            ip6: Count::default(),
            tcp: Count::default(),
            udp: Count::default(),
            icmp: Count::default(),
            other: Count::default(),
            sizes: hist(MAX_FRAME),
            iat_ns: hist(MAX_IAT_NS),
            per_second: BTreeMap::new(),
            span_ns: None,
        }
    }
}

impl IfaceStats {
    /// Adds another span's statistics (another worker's share, or an adjacent span).
    pub fn merge(&mut self, o: &IfaceStats) {
        for (a, b) in [
            (&mut self.frames, &o.frames),
            (&mut self.non_ip, &o.non_ip),
            (&mut self.ip4, &o.ip4),
            (&mut self.ip6, &o.ip6),
            (&mut self.tcp, &o.tcp),
            (&mut self.udp, &o.udp),
            (&mut self.icmp, &o.icmp),
            (&mut self.other, &o.other),
        ] {
            a.merge(b);
        }
        let _ = self.sizes.add(&o.sizes);
        let _ = self.iat_ns.add(&o.iat_ns);
        for (s, c) in &o.per_second {
            self.per_second.entry(*s).or_default().merge(c);
        }
        self.span_ns = match (self.span_ns, o.span_ns) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (x, None) | (None, x) => x,
        };
    }

    /// The busiest second's frames and octets.
    pub fn max_per_second(&self) -> Count {
        Count {
            packets: self
                .per_second
                .values()
                .map(|c| c.packets)
                .max()
                .unwrap_or(0),
            octets: self
                .per_second
                .values()
                .map(|c| c.octets)
                .max()
                .unwrap_or(0),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Second {
    sec: u64,
    c: Count,
}

/// A worker's running statistics (per-packet updates, snapshots at window cuts).
#[derive(Debug)]
pub struct IfaceAccumulator {
    cur: IfaceStats,
    seconds: Box<[Second]>,
    /// Seconds touched since the last snapshot, oldest first.
    first_sec: Option<u64>,
    last_sec: u64,
}

impl Default for IfaceAccumulator {
    fn default() -> Self {
        IfaceAccumulator {
            cur: IfaceStats::default(),
            seconds: vec![Second::default(); SECONDS].into_boxed_slice(),
            first_sec: None,
            last_sec: 0,
        }
    }
}

impl IfaceAccumulator {
    /// One frame (see [`mplane_capture::pipeline::Worker::observe`]).
    #[inline]
    pub fn frame(&mut self, ts_ns: u64, prev_ts_ns: Option<u64>, orig_len: u32, d: &Dissection) {
        let c = &mut self.cur;
        let len = u64::from(orig_len);
        c.frames.add(len);
        let ip = u64::from(d.ip_total_len);
        match d.l3 {
            L3::Ipv4 => c.ip4.add(ip),
            L3::Ipv6 => c.ip6.add(ip),
            _ => c.non_ip.add(len),
        }
        if d.ip_version != 0 {
            match d.protocol {
                6 => c.tcp.add(ip),
                17 => c.udp.add(ip),
                1 | 58 => c.icmp.add(ip),
                _ => c.other.add(ip),
            }
        }
        c.sizes.saturating_record(len.max(1));
        if let Some(p) = prev_ts_ns
            && ts_ns >= p
        {
            c.iat_ns.saturating_record((ts_ns - p).max(1));
        }
        c.span_ns = Some(match c.span_ns {
            Some((a, b)) => (a.min(ts_ns), b.max(ts_ns)),
            None => (ts_ns, ts_ns),
        });
        let sec = ts_ns / NS;
        let slot = &mut self.seconds[(sec as usize) % SECONDS];
        if slot.sec != sec {
            *slot = Second {
                sec,
                c: Count::default(),
            };
        }
        slot.c.add(len);
        if self.first_sec.is_none() {
            self.first_sec = Some(sec);
        }
        self.last_sec = self.last_sec.max(sec);
    }

    /// The statistics since the previous snapshot, and a fresh start.
    pub fn take(&mut self) -> IfaceStats {
        let mut out = std::mem::take(&mut self.cur);
        if let Some(first) = self.first_sec.take() {
            let from = first.max(self.last_sec.saturating_sub(SECONDS as u64 - 1));
            for sec in from..=self.last_sec {
                let s = &mut self.seconds[(sec as usize) % SECONDS];
                if s.sec == sec && s.c.packets > 0 {
                    out.per_second.insert(sec, s.c);
                    s.c = Count::default();
                }
            }
        }
        out
    }

    /// The statistics so far (without resetting).
    pub fn current(&self) -> &IfaceStats {
        &self.cur
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mplane_capture::builder::Builder;
    use mplane_capture::packet::{LinkType, dissect};

    #[test]
    fn counts_histograms_and_seconds() {
        let udp = Builder::ethernet()
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2])
            .udp(1, 2)
            .payload(&[0; 100])
            .build();
        let arp = vec![0xffu8; 60];
        let du = dissect(LinkType::ETHERNET, &udp);
        let da = dissect(LinkType::ETHERNET, &arp);
        let mut a = IfaceAccumulator::default();
        let t = 1_700_000_000 * NS;
        a.frame(t, None, udp.len() as u32, &du);
        a.frame(t + 1000, Some(t), udp.len() as u32, &du);
        a.frame(t + NS + 5, Some(t + 1000), 60, &da);
        let s = a.take();
        assert_eq!(s.frames.packets, 3);
        assert_eq!(
            s.udp,
            Count {
                packets: 2,
                octets: 256
            }
        );
        assert_eq!(s.ip4.packets, 2);
        assert_eq!(
            s.non_ip,
            Count {
                packets: 1,
                octets: 60
            }
        );
        assert_eq!(s.iat_ns.len(), 2);
        assert_eq!(s.iat_ns.min(), 1000);
        assert_eq!(s.per_second.len(), 2);
        assert_eq!(s.max_per_second().packets, 2);
        assert_eq!(s.span_ns, Some((t, t + NS + 5)));
        // the next snapshot starts empty
        let e = a.take();
        assert_eq!(e.frames.packets, 0);
        assert!(e.per_second.is_empty());
        let mut m = s.clone();
        m.merge(&s);
        assert_eq!(m.frames.packets, 6);
        assert_eq!(m.per_second[&1_700_000_000].packets, 4);
        assert_eq!(m.sizes.len(), 6);
    }
}
