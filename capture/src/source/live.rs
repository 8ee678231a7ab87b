//! Live capture with libpcap (`pcap` crate, feature `live`): one handle per interface, TPACKET_V3
//! (immediate mode off), a large kernel buffer, non-blocking reads with our own `poll(2)` on the
//! capture descriptors (a blocking TPACKET_V3 read never returns on an idle link), an optional BPF
//! filter, and the kernel's drop counters from `pcap_stats`.
//!
//! The frame borrowed from libpcap dies at the next read, so the pipeline copies it once into its
//! batch (see [`crate::pipeline`]). `unsafe` here is limited to `poll(2)`.

#![allow(unsafe_code)]

use std::os::fd::AsRawFd;
use std::time::Duration;

use pcap::{Active, Capture, Precision};

use super::{PacketRef, PacketSource, SourceError};
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
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            snaplen: 262_144,
            buffer_size: 64 << 20,
            promisc: true,
            filter: None,
        }
    }
}

/// A live libpcap source over one or more interfaces.
pub struct LiveSource {
    caps: Vec<(Capture<Active>, LinkType)>,
    names: Vec<String>,
    ready: Vec<bool>,
    fds: Vec<libc::pollfd>,
    next: usize,
}

impl std::fmt::Debug for LiveSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSource")
            .field("interfaces", &self.caps.len())
            .finish()
    }
}

fn live_err(iface: &str, e: pcap::Error) -> SourceError {
    SourceError::Live {
        iface: iface.to_string(),
        reason: e.to_string(),
    }
}

impl LiveSource {
    /// Opens every interface in `ifaces`.
    pub fn open(ifaces: &[String], cfg: &LiveConfig) -> Result<LiveSource, SourceError> {
        let mut caps = Vec::with_capacity(ifaces.len());
        for iface in ifaces {
            let cap = Capture::from_device(iface.as_str())
                .map_err(|e| live_err(iface, e))?
                .immediate_mode(false)
                .buffer_size(cfg.buffer_size)
                .snaplen(cfg.snaplen)
                .promisc(cfg.promisc)
                .timeout(100)
                .precision(Precision::Nano)
                .open()
                .map_err(|e| live_err(iface, e))?;
            let mut cap = cap.setnonblock().map_err(|e| live_err(iface, e))?;
            if let Some(f) = &cfg.filter {
                cap.filter(f, true).map_err(|e| live_err(iface, e))?;
            }
            let link = LinkType(cap.get_datalink().0 as u16);
            caps.push((cap, link));
        }
        Ok(LiveSource {
            ready: vec![true; caps.len()],
            fds: Vec::with_capacity(caps.len()),
            names: ifaces.to_vec(),
            caps,
            next: 0,
        })
    }
}

impl LiveSource {
    /// Polls the descriptors (timeout in ms, 0 = just look) and marks readable interfaces.
    fn poll_ready(&mut self, ms: libc::c_int) {
        self.fds.clear();
        self.fds.extend(self.caps.iter().map(|(c, _)| libc::pollfd {
            fd: c.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }));
        // SAFETY: `self.fds` is a live, exclusively borrowed array of `fds.len()` pollfd structs.
        let r = unsafe { libc::poll(self.fds.as_mut_ptr(), self.fds.len() as libc::nfds_t, ms) };
        if r > 0 {
            for (ready, fd) in self.ready.iter_mut().zip(&self.fds) {
                *ready |= fd.revents & libc::POLLIN != 0;
            }
        }
    }
}

impl PacketSource for LiveSource {
    fn next_packet(&mut self) -> Result<Option<PacketRef<'_>>, SourceError> {
        let n = self.caps.len();
        if !self.ready.iter().any(|&r| r) {
            self.poll_ready(0);
        }
        // Round-robin over ready interfaces so a busy one cannot starve the others.
        let Some(idx) = (0..n).map(|i| (self.next + i) % n).find(|&i| self.ready[i]) else {
            return Ok(None);
        };
        self.next = (idx + 1) % n;
        let (cap, link) = &mut self.caps[idx];
        match cap.next_packet() {
            Ok(p) => {
                let h = p.header;
                // Precision::Nano: tv_usec holds nanoseconds.
                let ts = (h.ts.tv_sec as u64)
                    .wrapping_mul(1_000_000_000)
                    .wrapping_add(h.ts.tv_usec as u64);
                Ok(Some(PacketRef {
                    data: p.data,
                    ts_ns: ts,
                    orig_len: h.len,
                    link: *link,
                }))
            }
            Err(pcap::Error::TimeoutExpired) => {
                // libpcap's current block is drained; wait for poll to say more arrived.
                self.ready[idx] = false;
                Ok(None)
            }
            Err(e) => Err(live_err(&self.names[idx], e)),
        }
    }
    fn stats(&mut self) -> super::SourceStats {
        let mut total = super::SourceStats::default();
        for (c, _) in &mut self.caps {
            if let Ok(s) = c.stats() {
                total.kernel_drops += u64::from(s.dropped);
                total.interface_drops += u64::from(s.if_dropped);
            }
        }
        total
    }
    fn is_live(&self) -> bool {
        true
    }
    fn wait_readable(&mut self, timeout: Duration) {
        if !self.ready.iter().any(|&r| r) {
            self.poll_ready(timeout.as_millis().min(1000) as libc::c_int);
        }
    }
}
