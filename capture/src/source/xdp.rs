//! AF_XDP capture (feature `xdp`): one XDP socket per RX queue, all sharing one UMEM, rings from
//! `xdpilone`, and our own XDP program (`capture/bpf/xsk_redirect.c`, embedded as a prebuilt
//! object) loaded and attached with `aya`.
//!
//! # Setup ([`XdpSource::open`])
//!
//! 1. The UMEM: one anonymous mapping of `frames × frame_size` bytes, split evenly between the
//!    queues (each queue's frames go back to its own fill ring, so a busy queue cannot starve
//!    an idle one).
//! 2. Queue 0's socket owns the UMEM; it binds zero-copy first and falls back to copy mode
//!    (`EOPNOTSUPP` on drivers without it, e.g. veth), always with need-wakeup. Queues 1.. bind
//!    with `XDP_SHARED_UMEM` only (the kernel refuses mode flags next to it and gives them the
//!    first socket's mode), each with its own fill and completion ring. The mode in effect is
//!    read back with `XDP_OPTIONS` ([`XdpSource::zero_copy`]).
//! 3. Every frame is posted to its queue's fill ring (the fill ring holds 2× the queue's frames,
//!    so it never refuses one; a frame the ring does not take now waits in a pending list).
//! 4. The program is loaded with `max_len` = what fits in a frame, each socket goes into its
//!    XSKMAP slot, and the program is attached in native (driver) mode, falling back to generic
//!    (SKB) mode ([`XdpSource::attach_mode`]). It is attached through a BPF link, so it goes
//!    away when the source is dropped and, with the link's descriptor, when the process dies.
//!
//! # Frames
//!
//! The program stamps each frame with `bpf_ktime_get_ns()` in XDP metadata just before the
//! packet; the reader converts it to wall-clock time (frames without metadata get the time they
//! were read). Kernels that refuse `bpf_xdp_adjust_meta` to XDP programs get the program with
//! stamping switched off, and every frame the time it was read
//! ([`XdpSource::kernel_timestamps`]). Frames longer than a UMEM frame are not redirected:
//! the program counts them ([`super::SourceStats::oversize`]) and passes them on, so nothing
//! is ever delivered truncated.
//!
//! Through [`crate::pipeline::Pipeline::run_xdp`] frames go to the workers **without a copy**:
//! a batch's record descriptors point into the UMEM, and its frames return to the fill rings
//! only when every worker's consumption cursor has passed the batch (the pipeline's return
//! path). As a plain [`PacketSource`] (e.g. `run_source`, which copies) a frame is lent until
//! the next call. Either way a frame is always in exactly one place — the kernel's rings, the
//! pending list, or lent — and [`XdpSource::frames_accounted`] checks it.
//!
//! `unsafe` here: the UMEM mapping handed to the kernel and the slices read from it,
//! `getsockopt(XDP_OPTIONS)` and `poll(2)`.

#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::ffi::CString;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aya::maps::{MapData, PerCpuArray, XskMap};
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use memmap2::MmapMut;
use xdpilone::{DeviceQueue, IfInfo, RingRx, Socket, SocketConfig, Umem, UmemConfig, User};

use super::pcap::Record;
use super::{Frames, PacketRef, PacketSource, SourceError, SourceStats};
use crate::packet::LinkType;
use crate::pipeline::{Framer, Pipeline, PipelineError, RawBatch, RunReport, Worker};

/// The XDP program (`capture/bpf/xsk_redirect.c`, rebuilt by `capture/bpf/build.sh`).
static PROGRAM: &[u8] = include_bytes!("../../bpf/xsk_redirect.o");
const PROGRAM_NAME: &str = "xsk_redirect";
const XSK_MAP: &str = "xsks";
const STATS_MAP: &str = "stats";
/// Written by the program in front of each frame's metadata timestamp.
const META_MAGIC: u32 = 0x6d50_4c78;
const META_LEN: usize = 16;
/// Extra headroom in each UMEM frame, so that the packet starts 16 bytes into a cache line and
/// the 16 bytes of metadata in front of it share that line: the reader then takes one cache
/// miss per frame (the kernel wrote it on another CPU), not two.
const UMEM_HEADROOM: u32 = META_LEN as u32;
/// The headroom the kernel keeps in front of the packet in a UMEM frame (`XDP_PACKET_HEADROOM`).
const XDP_PACKET_HEADROOM: u32 = 256;
const SOL_XDP: libc::c_int = 283;
const XDP_OPTIONS: libc::c_int = 8;
const XDP_OPTIONS_ZEROCOPY: u32 = 1;
/// Traffic seen less than this ago counts as "flowing" (see `wait_readable`).
const BUSY_NS: u64 = 10_000_000;
/// How long the reader naps while traffic flows and the RX rings are empty: about 250 µs with
/// the default timer slack, at most ~4 000 wakeups per second. Each wakeup is costly (on a VM a
/// sleep and its timer cost tens of µs of CPU: 50 µs naps used 31 % of a vCPU at 400 kpps on
/// veth, 200 µs naps 20 %). A queue's RX ring (≥ 4 K frames by default) holds 250 µs of
/// traffic up to 16 Mpps.
const NAP: Duration = Duration::from_micros(200);

/// Where the XDP program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic (SKB) mode.
    Auto,
    /// Native mode only.
    Driver,
    /// Generic mode only (works on any device; slower, and veth then reports every frame on
    /// queue 0).
    Skb,
}

/// How the sockets bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// Zero-copy, falling back to copy mode.
    Auto,
    /// Zero-copy only (fails on drivers without it).
    ZeroCopy,
    /// Copy mode only.
    Copy,
}

/// AF_XDP settings.
#[derive(Debug, Clone)]
pub struct XdpConfig {
    /// UMEM frames in all, split evenly between the queues (rounded down to a power of two per
    /// queue, at least 64). Default 16384: 4 K frames still dropped under vCPU jitter.
    pub frames: u32,
    /// Frame size in bytes, 2048 or 4096. Frames up to `frame_size − 272` bytes fit; longer
    /// ones are counted as oversize.
    pub frame_size: u32,
    /// Where the program runs.
    pub attach: AttachMode,
    /// How the sockets bind.
    pub bind: BindMode,
}

impl Default for XdpConfig {
    fn default() -> Self {
        XdpConfig {
            frames: 16384,
            frame_size: 2048,
            attach: AttachMode::Auto,
            bind: BindMode::Auto,
        }
    }
}

/// The UMEM area: kernel-shared memory, read only through frames user space owns.
#[derive(Debug)]
pub(crate) struct UmemArea {
    base: NonNull<u8>,
    len: usize,
    /// Owns the mapping `base..base + len`.
    _map: MmapMut,
}

// SAFETY: the area is plain memory. Every access goes through `frame` (reads) or `take_meta`
// (the reader thread only), and both touch only frames that user space owns: received on an RX
// ring and not yet posted back to a fill ring. The kernel writes only frames it owns. Sharing
// `&UmemArea` between the reader and the worker threads is therefore data-race free.
unsafe impl Send for UmemArea {}
// SAFETY: see `Send`.
unsafe impl Sync for UmemArea {}

impl UmemArea {
    fn new(len: usize) -> std::io::Result<UmemArea> {
        let mut map = MmapMut::map_anon(len)?;
        let base = NonNull::from(&mut map[..]).cast::<u8>();
        Ok(UmemArea {
            base,
            len,
            _map: map,
        })
    }

    /// The bytes of the frame at UMEM address `addr`, `len` long (empty if out of bounds).
    ///
    /// Crate invariant: called only for frames received on an RX ring and not yet returned to
    /// a fill ring (the pipeline holds a batch's frames until every worker has passed it).
    #[inline(always)]
    pub(crate) fn frame(&self, addr: usize, len: u32) -> &[u8] {
        let len = len as usize;
        if addr.checked_add(len).is_none_or(|end| end > self.len) {
            return &[];
        }
        // SAFETY: in bounds (checked above) of a mapping that lives as long as `self`; the
        // frame is owned by user space (crate invariant above), so the kernel does not write
        // it while the returned borrow lives.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(addr), len) }
    }

    /// Reads and clears the program's metadata in front of the frame at `addr`: its
    /// `bpf_ktime_get_ns()` stamp, if the program wrote one.
    #[inline]
    fn take_meta(&self, addr: usize, frame_size: usize) -> Option<u64> {
        // The metadata lies inside the frame's headroom, after the frame's start.
        let start = addr.checked_sub(META_LEN)?;
        if addr % frame_size < META_LEN || addr > self.len {
            return None;
        }
        // SAFETY: `start..addr` is in bounds and inside the headroom of a frame that was just
        // received on an RX ring (owned by user space, read by no other thread yet). Unaligned
        // reads/writes because the headroom offset is not guaranteed to be 8-aligned.
        unsafe {
            let p = self.base.as_ptr().add(start);
            let magic = p.add(12).cast::<u32>().read_unaligned();
            if magic != META_MAGIC {
                return None;
            }
            // Cleared, so a frame that comes back without fresh metadata is not misread.
            p.add(12).cast::<u32>().write_unaligned(0);
            Some(p.cast::<u64>().read_unaligned())
        }
    }
}

/// Where the UMEM frames of an [`XdpSource`] are (see [`XdpSource::frames_accounted`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameAccount {
    /// Frames in the UMEM.
    pub total: u64,
    /// Posted to the fill rings, not yet taken by the kernel.
    pub fill_ring: u64,
    /// Received on the RX rings, not yet read.
    pub rx_ring: u64,
    /// Waiting to be posted to a fill ring.
    pub pending: u64,
    /// Lent to the pipeline (or to the caller of `next_packet`).
    pub lent: u64,
}

/// One RX queue: its socket, RX ring, fill/completion rings and frames.
struct Queue {
    id: u32,
    // Field order is drop order: rings before the socket and UMEM they belong to.
    rx: RingRx,
    fq: DeviceQueue,
    user: User,
    _sock: Socket,
    /// Frames this queue owns.
    count: u64,
    /// Frames to post to the fill ring (the ring took fewer than offered).
    pending: Vec<u64>,
    /// Frames received on this queue.
    received: u64,
}

impl Queue {
    /// Posts pending frames to the fill ring; it may take fewer than offered (the rest waits).
    fn refill(&mut self) {
        while !self.pending.is_empty() {
            let mut w = self.fq.fill(self.pending.len() as u32);
            let n = w.insert(self.pending.iter().rev().copied()) as usize;
            w.commit();
            drop(w);
            if n == 0 {
                break;
            }
            let keep = self.pending.len() - n;
            self.pending.truncate(keep);
        }
        if self.fq.needs_wakeup() {
            self.fq.wake();
        }
        // RX only: nothing is transmitted, but a completed frame would be ours again.
        let mut c = self.fq.complete(self.count as u32);
        while let Some(a) = c.read() {
            self.pending.push(a);
        }
        c.release();
    }
}

/// An AF_XDP source on one or more RX queues of an interface.
pub struct XdpSource {
    // Drop order: detach the program first, then close the sockets and rings, then the UMEM.
    _ebpf: Ebpf,
    stats_map: Option<PerCpuArray<MapData, u64>>,
    queues: Vec<Queue>,
    _umem: Umem,
    area: Arc<UmemArea>,
    frame_size: u64,
    frames_per_queue: u64,
    /// Frames lent to the pipeline, oldest first, and the batches they form.
    held: VecDeque<u64>,
    held_batches: VecDeque<(u64, usize)>,
    /// Frames of the last fill not yet assigned to a batch.
    unassigned: usize,
    /// The frame lent by the last `next_packet` (PacketSource use).
    lent_one: Option<u64>,
    next_queue: usize,
    /// When frames were last received (CLOCK_MONOTONIC ns, 0 = never).
    last_rx_mono: u64,
    clock: ClockOffset,
    last_ts: u64,
    out_of_order: u64,
    iface: String,
    attach: AttachMode,
    zero_copy: bool,
    /// Whether the program stamps frames with XDP metadata.
    stamps: bool,
    max_len: u32,
    /// Frames longer than this are counted as over-MTU (GRO, GSO).
    max_frame: u32,
    over_mtu: u64,
    offloads: Option<crate::hygiene::Offloads>,
    fds: Vec<libc::pollfd>,
}

// SAFETY: the parts that are not `Send` by themselves (xdpilone's `Umem` holds the UMEM's
// address as a raw pointer) refer only to memory and descriptors this struct owns, and they
// always move together; nothing is tied to the thread that opened the source.
unsafe impl Send for XdpSource {}

impl std::fmt::Debug for XdpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpSource")
            .field("iface", &self.iface)
            .field("queues", &self.queues.len())
            .field("attach", &self.attach)
            .field("zero_copy", &self.zero_copy)
            .finish()
    }
}

/// Loads our XDP program into the kernel, with `max_len` and `stamp` set, and registers each
/// queue's socket in its XSKMAP.
fn load_program(
    iface: &str,
    max_len: u32,
    stamp: bool,
    queues: &[Queue],
) -> Result<Ebpf, SourceError> {
    let stamp = u32::from(stamp);
    let mut ebpf = EbpfLoader::new()
        .override_global("max_len", &max_len, true)
        .override_global("stamp", &stamp, true)
        .load(PROGRAM)
        .map_err(|e| xerr(iface, "load program object", e))?;
    {
        let map = ebpf
            .map_mut(XSK_MAP)
            .ok_or_else(|| xerr(iface, "xskmap", "not in the object"))?;
        let mut xsk = XskMap::try_from(map).map_err(|e| xerr(iface, "xskmap type", e))?;
        for q in queues {
            xsk.set(q.id, Fd(q.rx.as_raw_fd()), 0)
                .map_err(|e| xerr(iface, "xskmap set", e))?;
        }
    }
    program(&mut ebpf, iface)?
        .load()
        .map_err(|e| xerr(iface, "program load", e))?;
    Ok(ebpf)
}

/// The XDP program in a loaded object.
fn program<'a>(ebpf: &'a mut Ebpf, iface: &str) -> Result<&'a mut Xdp, SourceError> {
    ebpf.program_mut(PROGRAM_NAME)
        .ok_or_else(|| xerr(iface, "program", "not in the object"))?
        .try_into()
        .map_err(|e| xerr(iface, "program type", e))
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

/// `true` if the socket is bound in zero-copy mode (`XDP_OPTIONS`).
fn bound_zero_copy(fd: RawFd) -> bool {
    let mut flags: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `flags`, which lives across the call.
    let r = unsafe {
        libc::getsockopt(
            fd,
            SOL_XDP,
            XDP_OPTIONS,
            (&mut flags as *mut u32).cast(),
            &mut len,
        )
    };
    r == 0 && flags & XDP_OPTIONS_ZEROCOPY != 0
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// `CLOCK_REALTIME − CLOCK_MONOTONIC`, to turn the program's `bpf_ktime_get_ns()` stamps into
/// wall-clock time. Measured by bracketing a realtime read between two monotonic reads and
/// keeping the tightest of a few tries: a thread preempted between two clock reads would
/// otherwise shift every timestamp by the preemption (milliseconds on a busy machine).
/// Refreshed every 100 ms to follow NTP adjustments.
#[derive(Debug, Default)]
struct ClockOffset {
    offset: u64,
    measured_at: u64,
}

impl ClockOffset {
    const REFRESH_NS: u64 = 100_000_000;

    fn offset(&mut self) -> u64 {
        let now = mono_ns();
        if self.measured_at == 0 || now.wrapping_sub(self.measured_at) >= Self::REFRESH_NS {
            let mut best = (u64::MAX, self.offset);
            for _ in 0..8 {
                let m1 = mono_ns();
                let w = wall_ns();
                let m2 = mono_ns();
                let width = m2.wrapping_sub(m1);
                if width < best.0 {
                    best = (width, w.wrapping_sub(m1 + width / 2));
                }
                if width < 1_000 {
                    break;
                }
            }
            self.offset = best.1;
            self.measured_at = now;
        }
        self.offset
    }
}

fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// A failed bind; `busy` if the kernel still holds the queue (EBUSY).
struct BindFail {
    err: SourceError,
    busy: bool,
}

impl From<SourceError> for BindFail {
    fn from(err: SourceError) -> Self {
        BindFail { err, busy: false }
    }
}

/// [`bind_queues`], retried while the queue is busy: the kernel releases a queue whose socket
/// was just closed (e.g. a capture restarted on the same interface) in deferred work, and
/// binding it again right away gives EBUSY for a few milliseconds.
fn bind_queues_retry(
    area: &UmemArea,
    iface: &str,
    queues: u32,
    per_queue: u32,
    frame_size: u32,
    zero_copy: bool,
) -> Result<(Umem, Vec<Queue>), SourceError> {
    let t0 = std::time::Instant::now();
    loop {
        match bind_queues(area, iface, queues, per_queue, frame_size, zero_copy) {
            Ok(r) => return Ok(r),
            Err(f) if f.busy && t0.elapsed() < Duration::from_secs(2) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(f) => return Err(f.err),
        }
    }
}

/// Sockets and rings for every queue, bound in one mode.
fn bind_queues(
    area: &UmemArea,
    iface: &str,
    queues: u32,
    per_queue: u32,
    frame_size: u32,
    zero_copy: bool,
) -> Result<(Umem, Vec<Queue>), BindFail> {
    let umem_cfg = UmemConfig {
        fill_size: (2 * per_queue).next_power_of_two(),
        complete_size: per_queue.next_power_of_two(),
        frame_size,
        headroom: UMEM_HEADROOM,
        flags: 0,
    };
    let ptr = NonNull::slice_from_raw_parts(area.base, area.len);
    // SAFETY: `area` is a page-aligned anonymous mapping of `len` bytes that the `XdpSource`
    // keeps alive (in an `Arc`, never moved or unmapped) until after the `Umem` and every ring
    // are dropped (field order). User space only touches frames the kernel handed over.
    let umem = unsafe { Umem::new(umem_cfg, ptr) }.map_err(|e| xerr(iface, "umem", e))?;
    let name = CString::new(iface).map_err(|e| xerr(iface, "interface name", e))?;
    let mut out = Vec::with_capacity(queues as usize);
    for q in 0..queues {
        let mut info = IfInfo::invalid();
        info.from_name(&name)
            .map_err(|e| xerr(iface, "interface", e))?;
        info.set_queue(q);
        // Queue 0's socket is the UMEM's own; the others share it.
        let sock = if q == 0 {
            Socket::with_shared(&info, &umem)
        } else {
            Socket::new(&info)
        }
        .map_err(|e| xerr(iface, "socket", e))?;
        let fq = umem
            .fq_cq(&sock)
            .map_err(|e| xerr(iface, "fill/completion rings", e))?;
        let bind_flags = if q > 0 {
            0 // XDP_SHARED_UMEM (added by xdpilone) must stand alone
        } else if zero_copy {
            SocketConfig::XDP_BIND_ZEROCOPY | SocketConfig::XDP_BIND_NEED_WAKEUP
        } else {
            SocketConfig::XDP_BIND_COPY | SocketConfig::XDP_BIND_NEED_WAKEUP
        };
        let user = umem
            .rx_tx(
                &sock,
                &SocketConfig {
                    rx_size: NonZeroU32::new(per_queue.next_power_of_two()),
                    tx_size: None,
                    bind_flags,
                },
            )
            .map_err(|e| xerr(iface, "rx ring", e))?;
        let rx = user.map_rx().map_err(|e| xerr(iface, "map rx", e))?;
        if let Err(e) = umem.bind(&user) {
            return Err(BindFail {
                busy: e.get_raw() == libc::EBUSY,
                err: xerr(iface, &format!("bind queue {q}"), e),
            });
        }
        let first = u64::from(q) * u64::from(per_queue) * u64::from(frame_size);
        out.push(Queue {
            id: q,
            rx,
            fq,
            user,
            _sock: sock,
            count: u64::from(per_queue),
            received: 0,
            pending: (0..u64::from(per_queue))
                .map(|i| first + i * u64::from(frame_size))
                .collect(),
        });
    }
    Ok((umem, out))
}

impl XdpSource {
    /// Opens RX queues `0..queues` of `iface`: maps the UMEM, binds one socket per queue
    /// (zero-copy, else copy), fills the fill rings, loads our XDP program, registers the
    /// sockets in its XSKMAP and attaches it (native, else generic). Needs CAP_NET_ADMIN,
    /// CAP_NET_RAW, CAP_BPF (and CAP_IPC_LOCK or enough RLIMIT_MEMLOCK for the UMEM).
    pub fn open(iface: &str, queues: u32, cfg: &XdpConfig) -> Result<XdpSource, SourceError> {
        if !(1..=256).contains(&queues) {
            return Err(SourceError::BadSpec {
                spec: format!("xdp:{iface}:{queues}"),
                reason: "QUEUES must be a number in 1..=256",
            });
        }
        if cfg.frame_size != 2048 && cfg.frame_size != 4096 {
            return Err(SourceError::BadSpec {
                spec: format!("frame size {}", cfg.frame_size),
                reason: "AF_XDP frame size must be 2048 or 4096",
            });
        }
        let per_queue = ((cfg.frames / queues).max(64) + 1).next_power_of_two() / 2;
        let len = queues as usize * per_queue as usize * cfg.frame_size as usize;
        let area = Arc::new(UmemArea::new(len).map_err(|e| xerr(iface, "umem mapping", e))?);
        let bind = |zc| bind_queues_retry(&area, iface, queues, per_queue, cfg.frame_size, zc);
        let (umem, queues_v) = match cfg.bind {
            BindMode::ZeroCopy => bind(true)?,
            BindMode::Copy => bind(false)?,
            BindMode::Auto => match bind(true) {
                Ok(r) => r,
                Err(_) => bind(false)?,
            },
        };
        let mut queues_v = queues_v;
        // Frames first: a packet redirected before the fill ring has frames is dropped.
        for q in &mut queues_v {
            q.refill();
        }
        let zero_copy = bound_zero_copy(queues_v[0].rx.as_raw_fd());
        let max_len = cfg.frame_size - XDP_PACKET_HEADROOM - UMEM_HEADROOM;
        // The program stamps frames with XDP metadata where the kernel lets it; where it
        // refuses bpf_xdp_adjust_meta, the same object with `stamp` cleared loads (the
        // verifier prunes the branch) and frames take the time they are read.
        let (mut ebpf, stamps) = match load_program(iface, max_len, true, &queues_v) {
            Ok(e) => (e, true),
            Err(first) => match load_program(iface, max_len, false, &queues_v) {
                Ok(e) => (e, false),
                Err(_) => return Err(first),
            },
        };
        let attach = {
            let prog = program(&mut ebpf, iface)?;
            match cfg.attach {
                AttachMode::Driver => prog
                    .attach(iface, XdpMode::Driver)
                    .map(|_| AttachMode::Driver),
                AttachMode::Skb => prog.attach(iface, XdpMode::Skb).map(|_| AttachMode::Skb),
                AttachMode::Auto => prog
                    .attach(iface, XdpMode::Driver)
                    .map(|_| AttachMode::Driver)
                    .or_else(|_| prog.attach(iface, XdpMode::Skb).map(|_| AttachMode::Skb)),
            }
            .map_err(|e| xerr(iface, "attach", e))?
        };
        let stats_map = ebpf
            .take_map(STATS_MAP)
            .and_then(|m| PerCpuArray::try_from(m).ok());
        let total = u64::from(per_queue) * u64::from(queues);
        let n = queues_v.len();
        let offloads = crate::hygiene::Offloads::read(iface).ok();
        let me = XdpSource {
            _ebpf: ebpf,
            stats_map,
            queues: queues_v,
            _umem: umem,
            area,
            frame_size: u64::from(cfg.frame_size),
            frames_per_queue: u64::from(per_queue),
            held: VecDeque::with_capacity(total as usize),
            held_batches: VecDeque::with_capacity(total as usize),
            unassigned: 0,
            lent_one: None,
            next_queue: 0,
            last_rx_mono: 0,
            clock: ClockOffset::default(),
            last_ts: 0,
            out_of_order: 0,
            iface: iface.to_string(),
            attach,
            zero_copy,
            stamps,
            max_len,
            max_frame: offloads
                .as_ref()
                .map_or(u32::MAX, |o| o.mtu.saturating_add(14 + 8)),
            over_mtu: 0,
            offloads,
            fds: Vec::with_capacity(n),
        };
        Ok(me)
    }

    /// The interface.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// `true` if the sockets are bound in zero-copy mode (read back from the kernel).
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// `true` if frames carry the program's receive time (`bpf_ktime_get_ns()` in XDP
    /// metadata); `false` where the kernel refuses `bpf_xdp_adjust_meta` to XDP programs, and
    /// frames are stamped when the reader takes them off the RX ring.
    pub fn kernel_timestamps(&self) -> bool {
        self.stamps
    }

    /// Where the XDP program runs: [`AttachMode::Driver`] or [`AttachMode::Skb`].
    pub fn attach_mode(&self) -> AttachMode {
        self.attach
    }

    /// Number of RX queues (sockets).
    pub fn queues(&self) -> usize {
        self.queues.len()
    }

    /// The interface's offloads as read when the source opened (`None` if the driver does not
    /// answer the ethtool ioctl). VLAN stripping matters most here: AF_XDP frames lose the tags
    /// the NIC strips.
    pub fn offloads(&self) -> Option<&crate::hygiene::Offloads> {
        self.offloads.as_ref()
    }

    /// The largest frame delivered; longer frames are counted as oversize.
    pub fn max_frame_len(&self) -> u32 {
        self.max_len
    }

    /// Frames received so far, per queue (index = queue id).
    pub fn frames_per_queue(&self) -> Vec<u64> {
        self.queues.iter().map(|q| q.received).collect()
    }

    /// Where the UMEM frames are now. When traffic has stopped, every frame is in the fill
    /// ring, the RX ring, the pending list or lent: `total == fill_ring + rx_ring + pending +
    /// lent` (the kernel may briefly hold a few more between the rings while it receives).
    pub fn frames_accounted(&self) -> FrameAccount {
        FrameAccount {
            total: self.frames_per_queue * self.queues.len() as u64,
            fill_ring: self.queues.iter().map(|q| u64::from(q.fq.pending())).sum(),
            rx_ring: self
                .queues
                .iter()
                .map(|q| u64::from(q.rx.available()))
                .sum(),
            pending: self.queues.iter().map(|q| q.pending.len() as u64).sum(),
            lent: self.held.len() as u64 + u64::from(self.lent_one.is_some()),
        }
    }

    /// The queue that owns the frame at `addr`.
    #[inline]
    fn queue_of(&self, addr: u64) -> usize {
        ((addr / self.frame_size) / self.frames_per_queue) as usize
    }

    /// Gives a frame back to its queue's pending list.
    #[inline]
    fn give_back(&mut self, addr: u64) {
        let base = addr - addr % self.frame_size;
        let q = self.queue_of(base).min(self.queues.len() - 1);
        self.queues[q].pending.push(base);
    }

    fn refill_all(&mut self) {
        for q in &mut self.queues {
            if !q.pending.is_empty() || q.fq.needs_wakeup() {
                q.refill();
            }
        }
    }

    /// Reads up to `max` frames from the queues (round-robin start), calling `each` with
    /// (addr, len, ts_ns). Frames of several queues are sorted by time afterwards by the
    /// caller if it cares.
    fn receive(&mut self, max: usize, mut each: impl FnMut(&mut Self, u64, u32, u64)) -> usize {
        let nq = self.queues.len();
        let now_wall = wall_ns();
        // bpf_ktime_get_ns is CLOCK_MONOTONIC: shift it to wall-clock time.
        let offset = self.clock.offset();
        let fs = self.frame_size as usize;
        let mut got = 0;
        for k in 0..nq {
            if got >= max {
                break;
            }
            let qi = (self.next_queue + k) % nq;
            loop {
                let want = (max - got) as u32;
                let mut descs = [xdpilone::xdp::XdpDesc {
                    addr: 0,
                    len: 0,
                    options: 0,
                }; 64];
                let mut n = 0;
                {
                    let mut r = self.queues[qi].rx.receive(want.min(64));
                    while let Some(d) = r.read() {
                        descs[n] = d;
                        n += 1;
                    }
                    r.release();
                }
                if n == 0 {
                    break;
                }
                self.queues[qi].received += n as u64;
                for d in &descs[..n] {
                    self.over_mtu += u64::from(d.len > self.max_frame);
                    let ts = self
                        .area
                        .take_meta(d.addr as usize, fs)
                        .map_or(now_wall, |m| m.wrapping_add(offset));
                    each(self, d.addr, d.len, ts);
                }
                got += n;
                if got >= max {
                    break;
                }
            }
        }
        self.next_queue = (self.next_queue + 1) % nq;
        if got > 0 {
            self.last_rx_mono = mono_ns();
        }
        got
    }
}

impl PacketSource for XdpSource {
    fn next_packet(&mut self) -> Result<Option<PacketRef<'_>>, SourceError> {
        if let Some(addr) = self.lent_one.take() {
            self.give_back(addr);
        }
        self.refill_all();
        let mut one = None;
        self.receive(1, |_, addr, len, ts| one = Some((addr, len, ts)));
        let Some((addr, len, ts)) = one else {
            return Ok(None);
        };
        self.lent_one = Some(addr);
        if ts < self.last_ts {
            self.out_of_order += 1;
        } else {
            self.last_ts = ts;
        }
        Ok(Some(PacketRef {
            data: self.area.frame(addr as usize, len),
            ts_ns: ts,
            orig_len: len,
            link: LinkType::ETHERNET,
        }))
    }

    fn stats(&mut self) -> SourceStats {
        let mut s = SourceStats {
            out_of_order: self.out_of_order,
            over_mtu: self.over_mtu,
            ..SourceStats::default()
        };
        // XDP_STATISTICS v2 (Linux >= 5.9), per socket. A packet that finds the fill ring empty
        // is also counted in rx_dropped (copy mode), so it is reported apart, not added.
        for q in &self.queues {
            if let Ok(x) = q.user.statistics_v2() {
                s.kernel_drops += x.rx_dropped + x.rx_ring_full;
                s.fill_ring_empty += x.rx_fill_ring_empty_descs;
            }
        }
        if let Some(m) = &self.stats_map {
            s.oversize = m.get(&0, 0).map_or(0, |v| v.iter().sum());
        }
        s
    }

    fn is_live(&self) -> bool {
        true
    }

    fn wait_readable(&mut self, timeout: Duration) {
        if self.queues.iter().any(|q| q.rx.available() > 0) {
            return;
        }
        // The kernel wakes a poller for every frame (unlike TPACKET_V3, which wakes once per
        // block), which costs a wakeup per packet at moderate rates. While traffic flows, nap
        // briefly instead and read what accumulated; poll only once the link has gone quiet.
        // (Under load the pipeline does not wait at all: it only waits when a read was empty.)
        if self.last_rx_mono != 0 && mono_ns().wrapping_sub(self.last_rx_mono) < BUSY_NS {
            std::thread::sleep(NAP.min(timeout));
            return;
        }
        self.fds.clear();
        self.fds.extend(self.queues.iter().map(|q| libc::pollfd {
            fd: q.rx.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }));
        let ms = timeout.as_millis().min(1000) as libc::c_int;
        // SAFETY: `self.fds` is a live, exclusively borrowed array of `fds.len()` pollfds.
        let _ = unsafe { libc::poll(self.fds.as_mut_ptr(), self.fds.len() as libc::nfds_t, ms) };
    }
}

/// The zero-copy path: record descriptors point into the UMEM; frames come back through
/// `release_before` once every worker has passed their batch.
impl Framer for XdpSource {
    fn fill(&mut self, raw: &mut RawBatch, max: usize) -> Result<bool, SourceError> {
        self.refill_all();
        let start = raw.recs.len();
        let n = self.receive(max, |me, addr, len, ts| {
            me.held.push_back(addr);
            raw.recs.push(Record {
                offset: addr as usize,
                caplen: len,
                orig_len: len,
                ts_ns: ts,
                link: LinkType::ETHERNET,
            });
        });
        self.unassigned += n;
        let recs = &mut raw.recs[start..];
        // Frames of different queues interleave in time, and so do frames the program stamped
        // on two CPUs at once (generic mode): the ring order is the order of enqueueing.
        if !recs.is_sorted_by_key(|r| r.ts_ns) {
            recs.sort_by_key(|r| r.ts_ns);
        }
        for r in recs.iter() {
            if r.ts_ns < self.last_ts {
                self.out_of_order += 1;
            } else {
                self.last_ts = r.ts_ns;
            }
        }
        Ok(true)
    }

    fn stats(&mut self) -> SourceStats {
        PacketSource::stats(self)
    }

    fn is_live(&self) -> bool {
        true
    }

    fn wait(&mut self, timeout: Duration) {
        self.wait_readable(timeout);
    }

    fn discard(&mut self, max: usize) -> Result<u64, SourceError> {
        let n = self.receive(max, |me, addr, _, _| me.give_back(addr));
        self.refill_all();
        Ok(n as u64)
    }

    fn lent(&mut self, seq: u64) {
        if self.unassigned > 0 {
            self.held_batches.push_back((seq, self.unassigned));
            self.unassigned = 0;
        }
    }

    fn release_before(&mut self, seq: u64) {
        let mut any = false;
        while let Some(&(s, n)) = self.held_batches.front() {
            if s >= seq {
                break;
            }
            self.held_batches.pop_front();
            for _ in 0..n {
                if let Some(a) = self.held.pop_front() {
                    self.give_back(a);
                }
            }
            any = true;
        }
        if seq == u64::MAX {
            // End of a run: frames of a batch that was never sent are free too.
            while let Some(a) = self.held.pop_front() {
                self.give_back(a);
            }
            self.unassigned = 0;
            any = true;
        }
        if any {
            self.refill_all();
        }
    }

    fn holds_frames(&self) -> bool {
        true
    }
}

impl Pipeline {
    /// Runs an AF_XDP source through `workers` without copying frames: records point into the
    /// UMEM, and each batch's frames go back to the fill rings once every worker has consumed
    /// the batch. Runs until [`Pipeline::stop_handle`] is set; frames arriving while the
    /// workers' rings are full are dropped and counted (`ring_full_drops`).
    pub fn run_xdp<W: Worker>(
        &self,
        source: &mut XdpSource,
        workers: &mut [W],
    ) -> Result<RunReport, PipelineError> {
        let area = Arc::clone(&source.area);
        self.run(source, Some(Frames::Umem(&area)), workers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_program_is_a_bpf_object_with_our_names() {
        assert!(PROGRAM.starts_with(b"\x7fELF"));
        assert_eq!(
            u16::from_le_bytes([PROGRAM[18], PROGRAM[19]]),
            247,
            "EM_BPF"
        );
        for name in [PROGRAM_NAME, XSK_MAP, STATS_MAP, "max_len"] {
            assert!(
                PROGRAM.windows(name.len()).any(|w| w == name.as_bytes()),
                "{name} missing"
            );
        }
    }

    #[test]
    fn clock_offset_matches_the_clocks() {
        let mut c = ClockOffset::default();
        let o = c.offset();
        let direct = wall_ns().wrapping_sub(mono_ns());
        assert!(o.abs_diff(direct) < 50_000_000, "{o} vs {direct}");
        assert_eq!(c.offset(), o, "cached");
    }

    #[test]
    fn bad_settings_are_typed_errors() {
        let e = XdpSource::open("lo", 0, &XdpConfig::default()).unwrap_err();
        assert!(matches!(e, SourceError::BadSpec { .. }), "{e}");
        let cfg = XdpConfig {
            frame_size: 3000,
            ..XdpConfig::default()
        };
        let e = XdpSource::open("lo", 1, &cfg).unwrap_err();
        assert!(matches!(e, SourceError::BadSpec { .. }), "{e}");
        let e = XdpSource::open("no-such-if0", 1, &XdpConfig::default()).unwrap_err();
        assert!(e.to_string().contains("no-such-if0"), "{e}");
    }
}
