//! AF_XDP capture (feature `xdp`, experimental): one XDP socket on one RX queue, its UMEM in an
//! anonymous mapping, rings from `xdpilone`, and a prebuilt XDP program (by default Debian's
//! `libxdp1` `xsk_def_xdp_prog.o`, program `xsk_def_prog`, map `xsks_map`) loaded and attached
//! with `aya`, which redirects the queue's frames to the socket.
//!
//! Frames are lent one at a time from their UMEM slot and posted back to the fill ring at the
//! next call, so a borrowed frame can never outlive its slot. AF_XDP gives no timestamp: frames
//! are stamped with the wall clock when read. Binding tries zero-copy first and falls back to
//! copy mode (veth has no zero-copy). `unsafe` here: registering the UMEM area and `poll(2)`.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::ptr::NonNull;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aya::Ebpf;
use aya::maps::XskMap;
use aya::programs::{Xdp, XdpMode};
use memmap2::MmapMut;
use xdpilone::{DeviceQueue, IfInfo, RingRx, Socket, SocketConfig, Umem, UmemConfig, User};

use super::{PacketRef, PacketSource, SourceError};
use crate::packet::LinkType;

/// How the XDP program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic (SKB) mode.
    Auto,
    /// Native mode only.
    Driver,
    /// Generic mode only (works on any device, e.g. veth; slower).
    Skb,
}

/// AF_XDP settings.
#[derive(Debug, Clone)]
pub struct XdpConfig {
    /// UMEM frames (default 16384: 4 K frames still dropped under vCPU jitter, see afxdp notes).
    pub frames: u32,
    /// Frame size in bytes (2048 or 4096).
    pub frame_size: u32,
    /// The XDP object file.
    pub object: PathBuf,
    /// The program in it.
    pub program: String,
    /// Its XSKMAP.
    pub map: String,
    /// Attach mode.
    pub mode: AttachMode,
}

impl Default for XdpConfig {
    fn default() -> Self {
        XdpConfig {
            frames: 16384,
            frame_size: 2048,
            object: PathBuf::from("/usr/lib/x86_64-linux-gnu/bpf/xsk_def_xdp_prog.o"),
            program: "xsk_def_prog".into(),
            map: "xsks_map".into(),
            mode: AttachMode::Auto,
        }
    }
}

struct Rings {
    // Field order is drop order: rings before the socket and UMEM they belong to.
    rx: RingRx,
    device: DeviceQueue,
    user: User,
    _sock: Socket,
    _umem: Umem,
    zero_copy: bool,
}

/// An AF_XDP source on one interface queue.
pub struct XdpSource {
    // Drop order: detach the program, then the rings, then free the UMEM area.
    _ebpf: Ebpf,
    rings: Rings,
    area: MmapMut,
    /// Frame addresses to give back to the kernel (fill ring).
    to_fill: Vec<u64>,
    /// The frame lent by the last `next_packet`.
    lent: Option<u64>,
    iface: String,
}

impl std::fmt::Debug for XdpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpSource")
            .field("iface", &self.iface)
            .field("zero_copy", &self.rings.zero_copy)
            .finish()
    }
}

fn xerr(iface: &str, what: &str, e: impl std::fmt::Display) -> SourceError {
    SourceError::Live {
        iface: iface.to_string(),
        reason: format!("AF_XDP {what}: {e}"),
    }
}

struct Fd(RawFd);
impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

fn setup_rings(
    area: &mut MmapMut,
    info: &IfInfo,
    cfg: &XdpConfig,
    iface: &str,
    zero_copy: bool,
) -> Result<Rings, SourceError> {
    let umem_cfg = UmemConfig {
        fill_size: (2 * cfg.frames).next_power_of_two(),
        complete_size: cfg.frames.next_power_of_two(),
        frame_size: cfg.frame_size,
        headroom: 0,
        flags: 0,
    };
    let ptr = NonNull::from(&mut area[..]);
    // SAFETY: `area` is a page-aligned anonymous mapping of frames × frame_size bytes owned by
    // the `XdpSource`, which keeps it alive (and unmoved: the mapping does not move with the
    // struct) until after the `Umem` and every ring are dropped (field order). We only read
    // frames the kernel handed us on the RX ring and have not yet given back on the fill ring.
    let umem = unsafe { Umem::new(umem_cfg, ptr) }.map_err(|e| xerr(iface, "umem", e))?;
    let sock = Socket::with_shared(info, &umem).map_err(|e| xerr(iface, "socket", e))?;
    let device = umem
        .fq_cq(&sock)
        .map_err(|e| xerr(iface, "fill/completion rings", e))?;
    let mode = if zero_copy {
        SocketConfig::XDP_BIND_ZEROCOPY
    } else {
        SocketConfig::XDP_BIND_COPY
    };
    let user = umem
        .rx_tx(
            &sock,
            &SocketConfig {
                rx_size: NonZeroU32::new(cfg.frames.next_power_of_two()),
                tx_size: None,
                bind_flags: mode | SocketConfig::XDP_BIND_NEED_WAKEUP,
            },
        )
        .map_err(|e| xerr(iface, "rx ring", e))?;
    let rx = user.map_rx().map_err(|e| xerr(iface, "map rx", e))?;
    umem.bind(&user).map_err(|e| xerr(iface, "bind", e))?;
    Ok(Rings {
        rx,
        device,
        user,
        _sock: sock,
        _umem: umem,
        zero_copy,
    })
}

impl XdpSource {
    /// Opens queue `queue` of `iface`: maps the UMEM, binds the socket (zero-copy, else copy),
    /// fills the fill ring, loads and attaches the XDP program and registers the socket in its
    /// XSKMAP. Needs CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF (and CAP_IPC_LOCK or enough
    /// RLIMIT_MEMLOCK for the UMEM).
    pub fn open(iface: &str, queue: u32, cfg: &XdpConfig) -> Result<XdpSource, SourceError> {
        let frames = cfg.frames.max(64);
        let len = frames as usize * cfg.frame_size as usize;
        let mut area = MmapMut::map_anon(len).map_err(|e| xerr(iface, "umem mapping", e))?;
        let name = CString::new(iface).map_err(|e| xerr(iface, "interface name", e))?;
        let mut info = IfInfo::invalid();
        info.from_name(&name)
            .map_err(|e| xerr(iface, "interface", e))?;
        info.set_queue(queue);
        let rings = match setup_rings(&mut area, &info, cfg, iface, true) {
            Ok(r) => r,
            Err(_) => setup_rings(&mut area, &info, cfg, iface, false)?,
        };
        let mut ebpf = Ebpf::load_file(&cfg.object).map_err(|e| xerr(iface, "load object", e))?;
        {
            let prog: &mut Xdp = ebpf
                .program_mut(&cfg.program)
                .ok_or_else(|| xerr(iface, "program", "not found in the object"))?
                .try_into()
                .map_err(|e| xerr(iface, "program type", e))?;
            prog.load().map_err(|e| xerr(iface, "program load", e))?;
            let attached = match cfg.mode {
                AttachMode::Driver => prog.attach(iface, XdpMode::Driver),
                AttachMode::Skb => prog.attach(iface, XdpMode::Skb),
                AttachMode::Auto => prog
                    .attach(iface, XdpMode::Driver)
                    .or_else(|_| prog.attach(iface, XdpMode::Skb)),
            };
            attached.map_err(|e| xerr(iface, "attach", e))?;
        }
        {
            let map = ebpf
                .map_mut(&cfg.map)
                .ok_or_else(|| xerr(iface, "xskmap", "not found in the object"))?;
            let mut xsk = XskMap::try_from(map).map_err(|e| xerr(iface, "xskmap type", e))?;
            xsk.set(queue, Fd(rings.rx.as_raw_fd()), 0)
                .map_err(|e| xerr(iface, "xskmap set", e))?;
        }
        let mut me = XdpSource {
            _ebpf: ebpf,
            rings,
            area,
            to_fill: (0..u64::from(frames))
                .map(|i| i * u64::from(cfg.frame_size))
                .collect(),
            lent: None,
            iface: iface.to_string(),
        };
        me.refill();
        Ok(me)
    }

    /// `true` if the socket is bound in zero-copy mode.
    pub fn zero_copy(&self) -> bool {
        self.rings.zero_copy
    }

    /// Posts pending frames to the fill ring (it may take fewer than asked; the rest waits).
    fn refill(&mut self) {
        if self.to_fill.is_empty() {
            return;
        }
        let mut w = self.rings.device.fill(self.to_fill.len() as u32);
        let n = w.insert(self.to_fill.iter().copied()) as usize;
        w.commit();
        drop(w);
        self.to_fill.drain(..n);
        if self.rings.device.needs_wakeup() {
            self.rings.device.wake();
        }
    }
}

impl PacketSource for XdpSource {
    fn next_packet(&mut self) -> Result<Option<PacketRef<'_>>, SourceError> {
        if let Some(addr) = self.lent.take() {
            self.to_fill.push(addr);
        }
        self.refill();
        let desc = {
            let mut r = self.rings.rx.receive(1);
            let d = r.read();
            r.release();
            d
        };
        let Some(desc) = desc else {
            return Ok(None);
        };
        self.lent = Some(desc.addr);
        let start = desc.addr as usize;
        let data = self
            .area
            .get(start..start + desc.len as usize)
            .unwrap_or(&[]);
        let ts_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Ok(Some(PacketRef {
            data,
            ts_ns,
            orig_len: desc.len,
            link: LinkType::ETHERNET,
        }))
    }

    fn stats(&mut self) -> super::SourceStats {
        // XDP_STATISTICS v2 (Linux >= 5.9): drops, RX ring full, fill ring empty.
        self.rings
            .user
            .statistics_v2()
            .map_or(super::SourceStats::default(), |s| super::SourceStats {
                kernel_drops: s.rx_dropped + s.rx_ring_full,
                fill_ring_empty: s.rx_fill_ring_empty_descs,
                ..super::SourceStats::default()
            })
    }

    fn is_live(&self) -> bool {
        true
    }

    fn wait_readable(&mut self, timeout: Duration) {
        if self.rings.rx.available() > 0 {
            return;
        }
        let mut fd = libc::pollfd {
            fd: self.rings.rx.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(1000) as libc::c_int;
        // SAFETY: one live, exclusively borrowed pollfd.
        let _ = unsafe { libc::poll(&mut fd, 1, ms) };
    }
}
