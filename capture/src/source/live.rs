//! Live capture with libpcap (`pcap` crate, feature `live`): one handle per interface, TPACKET_V3
//! (immediate mode off), a large kernel buffer, non-blocking reads with our own `poll(2)` on the
//! capture descriptors (a blocking TPACKET_V3 read never returns on an idle link), an optional BPF
//! filter, and the kernel's drop counters from `pcap_stats`.
//!
//! Several interfaces (`pcap-live:eth1,eth2`, e.g. the two ports of a tap, one direction each)
//! are merged into one stream in timestamp order with a bounded reorder window
//! (see `doc/capture.md` for the bound); each interface's oldest frame waits in libpcap's own buffer, so the merge
//! copies nothing. Optionally, frames repeated within a short window (SPAN ports mirroring both
//! ingress and egress) are suppressed and counted ([`super::dedup`]). Kernel drops are summed
//! over the interfaces ([`LiveSource::interfaces`] has them one by one).
//!
//! The frame borrowed from libpcap dies at the next read of its interface, so the pipeline copies
//! it once into its batch (see [`crate::pipeline`]). `unsafe` here: `poll(2)`, and re-borrowing
//! a held frame (libpcap guarantees it until the next read on the same handle).

#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pcap::{Active, Capture, Precision};

use super::dedup::Dedup;
use super::merge::{Merge, Pick};
use super::{PacketRef, PacketSource, SourceError, SourceStats};
use crate::packet::LinkType;

/// Live capture settings.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Bytes captured per frame. Default 262144 (whole frames).
    pub snaplen: i32,
    /// Kernel ring size per interface in bytes. Default 64 MiB (2 MiB drops ~15 % at line rate).
    pub buffer_size: i32,
    /// Promiscuous mode. Default true.
    pub promisc: bool,
    /// BPF filter expression (tcpdump syntax), `None` = everything.
    pub filter: Option<String>,
    /// TPACKET_V3 block retire timeout: how long a partly filled kernel block may wait before
    /// it is handed to us. Default 10 ms. Bounds latency on a quiet link and the reorder delay
    /// of a merge.
    pub block_timeout: Duration,
    /// Several interfaces: how long a frame may wait for the other interfaces to show they hold
    /// nothing older (`doc/capture.md`). Must exceed 2 × `block_timeout` plus scheduling
    /// delay; default 30 ms. Frames later than this are still delivered, counted in
    /// [`SourceStats::out_of_order`].
    pub reorder_window: Duration,
    /// Suppress frames identical to one seen less than this before (SPAN ports that mirror a
    /// frame twice), counted in [`SourceStats::duplicates`]. Default `None` (off); 1 ms is a
    /// good value for SPAN.
    pub dedup_window: Option<Duration>,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            snaplen: 262_144,
            buffer_size: 64 << 20,
            promisc: true,
            filter: None,
            block_timeout: Duration::from_millis(10),
            reorder_window: Duration::from_millis(30),
            dedup_window: None,
        }
    }
}

/// Counts for one interface of a [`LiveSource`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceStats {
    /// The interface.
    pub name: String,
    /// Its link type.
    pub link: LinkType,
    /// Its MTU when the capture started (0 if unknown).
    pub mtu: u32,
    /// Frames read from it (before duplicate suppression).
    pub frames: u64,
    /// Frames the kernel dropped (ring full; `pcap_stats` `ps_drop`).
    pub kernel_drops: u64,
    /// Frames the driver dropped (`ps_ifdrop`).
    pub interface_drops: u64,
    /// Frames longer than the MTU allows (GRO/LRO/TSO at work).
    pub over_mtu: u64,
    /// Frames cut by the snaplen.
    pub snaplen_cut: u64,
    /// Its offloads as read when the capture started (`None` if the driver does not answer the
    /// ethtool ioctl); see [`crate::hygiene`].
    pub offloads: Option<crate::hygiene::Offloads>,
}

/// A frame held in libpcap's buffer (valid until the next read on its handle).
#[derive(Debug, Clone, Copy)]
struct Head {
    data: *const u8,
    caplen: u32,
    len: u32,
    ts_ns: u64,
}

struct Port {
    cap: Capture<Active>,
    fd: RawFd,
    link: LinkType,
    name: String,
    /// Frames longer than this are counted as over-MTU.
    max_frame: u32,
    mtu: u32,
    offloads: Option<crate::hygiene::Offloads>,
    ready: bool,
    head: Option<Head>,
    frames: u64,
    over_mtu: u64,
    snaplen_cut: u64,
    kernel_drops: u64,
    interface_drops: u64,
}

/// A live libpcap source over one or more interfaces (merged by timestamp).
pub struct LiveSource {
    ports: Vec<Port>,
    merge: Merge,
    dedup: Option<Dedup>,
    /// The port whose head was lent by the last `next_packet`.
    lent: Option<usize>,
    fds: Vec<libc::pollfd>,
    fd_port: Vec<usize>,
}

// SAFETY: the raw pointers in `Port::head` point into buffers owned by the libpcap handle of
// the same `Port` (its `pcap_next_ex` buffer); they move with the handle and are only read
// through `&mut self`, so sending the whole source to another thread is as safe as sending
// the handles (`Capture<Active>` is `Send`).
unsafe impl Send for LiveSource {}

impl std::fmt::Debug for LiveSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSource")
            .field(
                "interfaces",
                &self.ports.iter().map(|p| &p.name).collect::<Vec<_>>(),
            )
            .field("dedup", &self.dedup.is_some())
            .finish()
    }
}

fn live_err(iface: &str, e: pcap::Error) -> SourceError {
    SourceError::Live {
        iface: iface.to_string(),
        reason: e.to_string(),
    }
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The bytes of a held head, borrowed from the ports that own the libpcap handles.
fn held<'a>(_owner: &'a [Port], h: &Head) -> &'a [u8] {
    // SAFETY: `h.data`/`h.caplen` come from the `pcap_next_ex` call that produced this head;
    // libpcap keeps that buffer valid until the next `pcap_next_ex` (or close) on the same
    // handle, and a port is read again only after its head was cleared. The slice borrows the
    // ports (the handles' owner), so it cannot outlive a handle or overlap a later read, which
    // needs `&mut`.
    unsafe { std::slice::from_raw_parts(h.data, h.caplen as usize) }
}

/// Ethernet header and two VLAN tags on top of the MTU.
const L2_OVERHEAD: u32 = 14 + 8;

impl LiveSource {
    /// Opens every interface in `ifaces` (at least one).
    pub fn open(ifaces: &[String], cfg: &LiveConfig) -> Result<LiveSource, SourceError> {
        if ifaces.is_empty() {
            return Err(SourceError::BadSpec {
                spec: String::new(),
                reason: "no interface",
            });
        }
        let timeout_ms = cfg.block_timeout.as_millis().clamp(1, 1000) as i32;
        let mut ports = Vec::with_capacity(ifaces.len());
        for iface in ifaces {
            let cap = Capture::from_device(iface.as_str())
                .map_err(|e| live_err(iface, e))?
                .immediate_mode(false)
                .buffer_size(cfg.buffer_size)
                .snaplen(cfg.snaplen)
                .promisc(cfg.promisc)
                .timeout(timeout_ms)
                .precision(Precision::Nano)
                .open()
                .map_err(|e| live_err(iface, e))?;
            let mut cap = cap.setnonblock().map_err(|e| live_err(iface, e))?;
            if let Some(f) = &cfg.filter {
                cap.filter(f, true).map_err(|e| live_err(iface, e))?;
            }
            let link = LinkType(cap.get_datalink().0 as u16);
            let mtu = crate::hygiene::mtu(iface).unwrap_or(0);
            let offloads = crate::hygiene::Offloads::read(iface).ok();
            ports.push(Port {
                fd: cap.as_raw_fd(),
                cap,
                link,
                name: iface.clone(),
                max_frame: if mtu == 0 {
                    u32::MAX
                } else {
                    mtu.saturating_add(L2_OVERHEAD)
                },
                mtu,
                offloads,
                ready: true,
                head: None,
                frames: 0,
                over_mtu: 0,
                snaplen_cut: 0,
                kernel_drops: 0,
                interface_drops: 0,
            });
        }
        let n = ports.len();
        Ok(LiveSource {
            merge: Merge::new(n, cfg.reorder_window.as_nanos() as u64),
            dedup: cfg.dedup_window.map(|w| Dedup::new(w.as_nanos() as u64)),
            ports,
            lent: None,
            fds: Vec::with_capacity(n),
            fd_port: Vec::with_capacity(n),
        })
    }

    /// Per-interface counts (kernel drops refreshed by the last [`PacketSource::stats`] call).
    pub fn interfaces(&self) -> Vec<InterfaceStats> {
        self.ports
            .iter()
            .map(|p| InterfaceStats {
                name: p.name.clone(),
                link: p.link,
                mtu: p.mtu,
                frames: p.frames,
                kernel_drops: p.kernel_drops,
                interface_drops: p.interface_drops,
                over_mtu: p.over_mtu,
                snaplen_cut: p.snaplen_cut,
                offloads: p.offloads.clone(),
            })
            .collect()
    }

    /// Polls the descriptors of ports without a head (timeout in ms, 0 = just look): readable
    /// ports become ready, the others are marked drained as of `now`.
    fn poll_headless(&mut self, ms: libc::c_int, now: u64) {
        self.fds.clear();
        self.fd_port.clear();
        for (i, p) in self.ports.iter().enumerate() {
            if p.head.is_none() && !p.ready {
                self.fds.push(libc::pollfd {
                    fd: p.fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
                self.fd_port.push(i);
            }
        }
        if self.fds.is_empty() {
            return;
        }
        // SAFETY: `self.fds` is a live, exclusively borrowed array of `fds.len()` pollfd structs.
        let r = unsafe { libc::poll(self.fds.as_mut_ptr(), self.fds.len() as libc::nfds_t, ms) };
        for (fd, &i) in self.fds.iter().zip(&self.fd_port) {
            if r > 0 && fd.revents != 0 {
                self.ports[i].ready = true;
            } else if ms == 0 {
                // Seen empty by a check that started at `now` (a sleeping poll proves nothing
                // about the time it started, so only an immediate look counts).
                self.merge.drained(i, now);
            }
        }
    }

    /// Reads the next frame of port `i` into its head slot.
    fn read_head(&mut self, i: usize) -> Result<(), SourceError> {
        let p = &mut self.ports[i];
        match p.cap.next_packet() {
            Ok(pkt) => {
                let h = pkt.header;
                // Precision::Nano: tv_usec holds nanoseconds.
                let ts_ns = (h.ts.tv_sec as u64)
                    .wrapping_mul(1_000_000_000)
                    .wrapping_add(h.ts.tv_usec as u64);
                p.frames += 1;
                p.over_mtu += u64::from(h.len > p.max_frame);
                p.snaplen_cut += u64::from(h.caplen < h.len);
                p.head = Some(Head {
                    data: pkt.data.as_ptr(),
                    caplen: pkt.data.len() as u32,
                    len: h.len,
                    ts_ns,
                });
                self.merge.set_head(i, ts_ns);
                Ok(())
            }
            Err(pcap::Error::TimeoutExpired) => {
                // libpcap's current block is drained; poll says when more arrived.
                p.ready = false;
                Ok(())
            }
            Err(e) => Err(live_err(&p.name, e)),
        }
    }

    /// Frees the head of port `i`.
    fn consume(&mut self, i: usize) {
        self.ports[i].head = None;
        self.merge.clear_head(i);
    }
}

impl PacketSource for LiveSource {
    fn next_packet(&mut self) -> Result<Option<PacketRef<'_>>, SourceError> {
        if let Some(i) = self.lent.take() {
            self.consume(i);
        }
        // Bounded: a port that polls readable but yields nothing must not make us spin.
        for _ in 0..64 {
            for i in 0..self.ports.len() {
                if self.ports[i].head.is_none() && self.ports[i].ready {
                    self.read_head(i)?;
                }
            }
            match self.merge.pick() {
                Pick::Emit(i) => {
                    let Some(h) = self.ports[i].head else {
                        self.consume(i);
                        continue;
                    };
                    if let Some(d) = self.dedup.as_mut()
                        && d.is_duplicate(held(&self.ports, &h), h.len, h.ts_ns)
                    {
                        self.consume(i);
                        continue;
                    }
                    self.merge.emitted(h.ts_ns);
                    self.lent = Some(i);
                    let link = self.ports[i].link;
                    return Ok(Some(PacketRef {
                        data: held(&self.ports, &h),
                        ts_ns: h.ts_ns,
                        orig_len: h.len,
                        link,
                    }));
                }
                Pick::NotBefore(need) => {
                    let now = wall_ns();
                    if now < need {
                        return Ok(None);
                    }
                    // Look at the idle ports once: either they have something (read it) or
                    // they are drained as of `now`, which releases the head.
                    self.poll_headless(0, now);
                }
                Pick::Empty => {
                    if self.ports.iter().any(|p| p.ready) {
                        continue;
                    }
                    return Ok(None);
                }
            }
        }
        Ok(None)
    }

    fn stats(&mut self) -> SourceStats {
        let mut s = SourceStats {
            out_of_order: self.merge.out_of_order(),
            duplicates: self.dedup.as_ref().map_or(0, Dedup::duplicates),
            ..SourceStats::default()
        };
        for p in &mut self.ports {
            if let Ok(st) = p.cap.stats() {
                p.kernel_drops = u64::from(st.dropped);
                p.interface_drops = u64::from(st.if_dropped);
            }
            s.kernel_drops += p.kernel_drops;
            s.interface_drops += p.interface_drops;
            s.over_mtu += p.over_mtu;
            s.snaplen_cut += p.snaplen_cut;
        }
        s
    }

    fn is_live(&self) -> bool {
        true
    }

    fn wait_readable(&mut self, timeout: Duration) {
        if self.ports.iter().any(|p| p.head.is_none() && p.ready) {
            return;
        }
        let mut ms = timeout.as_millis().min(1000) as libc::c_int;
        if let Pick::NotBefore(need) = self.merge.pick() {
            // A held head becomes releasable at `need`: sleep no longer than that.
            let now = wall_ns();
            ms = ms.min(need.saturating_sub(now).div_ceil(1_000_000) as libc::c_int);
        }
        self.poll_headless(ms, 0);
    }
}
