//! The flow meter: one per pipeline worker, a [`Worker`] that keeps the worker's flow table
//! and hands finished flows to a [`RecordSink`].
//!
//! Per packet: the key (fragments resolved to their datagram's flow), one table lookup, the
//! direction's counters, TCP analysis ([`super::tcp`]) and, while a flow is young, application
//! metadata ([`super::app`]). No allocation, no lock: counters are published to the shared
//! [`MeterCounters`] once per batch, at the watermark.
//!
//! Timeouts follow packet time only (the pipeline's watermark), so a capture replayed gives
//! the same records as the live capture did, for any number of workers:
//! - **idle**: no packet for `idle_timeout` → [`EndReason::Idle`]; a packet arriving after the
//!   idle timeout starts a new flow even if the sweep has not run yet;
//! - **active**: the record has lasted `active_timeout` → [`EndReason::Active`]; the flow goes on
//!   (TCP state kept) in a new record;
//! - **close**: after FIN in both directions or a RST the flow lingers `close_linger` for stray
//!   packets, then ends ([`EndReason::Fin`], [`EndReason::Rst`]); a new SYN on the 5-tuple ends it
//!   at once and starts a new flow;
//! - **window cuts** ([`FlowMeter::control`]): at a cut time every flow with packets since the
//!   previous cut is emitted with [`EndReason::Window`] and continues with fresh counters;
//!   packets at or after the cut time count in the next window;
//! - **full table**: the flow with the earliest deadline is evicted ([`EndReason::Evicted`]);
//! - **finish**: every flow still open ends with [`EndReason::Shutdown`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crossbeam_channel::Receiver;
use mplane_capture::flow::{Direction, FlowKey, FragmentTable, KeyKind};
use mplane_capture::packet::tcp::flags;
use mplane_capture::packet::{Dissection, Layer};
use mplane_capture::pipeline::{Batch, Worker};
use mplane_capture::source::PacketRef;

use super::app::{AppConfig, AppEngine, AppState};
use super::iface::{IfaceAccumulator, IfaceStats};
use super::record::{AppRecord, DirRecord, EndReason, FlowRecord, StrRef};
use super::table::{FlowTable, Links, Slot};
use super::tcp::{self, DirTrack, Handshake};

/// Flow meter settings (per worker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterConfig {
    /// Most flows tracked at once per worker.
    pub max_flows: usize,
    /// Idle timeout, ns.
    pub idle_timeout_ns: u64,
    /// Active timeout, ns.
    pub active_timeout_ns: u64,
    /// Time a closed TCP flow (FIN both ways, or RST) lingers for stray packets, ns.
    pub close_linger_ns: u64,
    /// Application metadata.
    pub app: AppConfig,
    /// Interface statistics (protocols, size and inter-arrival histograms, per second); a
    /// replay that writes only flow records turns them off.
    pub interface_stats: bool,
}

const S: u64 = 1_000_000_000;

impl Default for MeterConfig {
    fn default() -> Self {
        MeterConfig {
            max_flows: 262_144,
            idle_timeout_ns: 60 * S,
            active_timeout_ns: 1800 * S,
            close_linger_ns: 2 * S,
            app: AppConfig::default(),
            interface_stats: true,
        }
    }
}

impl MeterConfig {
    /// The timer wheel tick: 1/64 of the idle timeout, between 10 ms and 1 s.
    pub fn tick_ns(&self) -> u64 {
        (self.idle_timeout_ns / 64).clamp(10_000_000, S)
    }
}

/// Where finished records go. Called on the worker's thread: implementations must not block
/// a live capture (buffer and count drops instead) and must not allocate per record.
pub trait RecordSink: Send {
    /// A record; `name` is its application string (empty when none).
    fn record(&mut self, rec: &FlowRecord, name: &[u8]);
    /// Called after every batch (at each watermark).
    fn flush(&mut self, _watermark_ns: u64) {}
    /// Every record of the window ending at `cut_ns` has been handed over.
    fn cut_done(&mut self, _cut_ns: u64) {}
    /// The interface statistics of this worker's frames up to `until_ns` (a window cut; at
    /// the end of the source, `u64::MAX`).
    fn iface(&mut self, _until_ns: u64, _stats: IfaceStats) {}
    /// The source ended: the last records have been handed over.
    fn finish(&mut self) {}
}

/// A sink that keeps records in memory (tests, small replays).
#[derive(Debug, Default, Clone)]
pub struct VecSink {
    /// Records with their names.
    pub records: Vec<(FlowRecord, Vec<u8>)>,
    /// Cut times reported done.
    pub cuts: Vec<u64>,
}

impl RecordSink for VecSink {
    fn record(&mut self, rec: &FlowRecord, name: &[u8]) {
        self.records.push((*rec, name.to_vec()));
    }
    fn cut_done(&mut self, cut_ns: u64) {
        self.cuts.push(cut_ns);
    }
}

/// Counters of one meter, readable at any time (published once per batch).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct MeterCounters {
    /// Flows created.
    pub flows: AtomicU64,
    /// Records emitted.
    pub records: AtomicU64,
    /// Flows evicted because the table was full.
    pub evicted: AtomicU64,
    /// Packets not tracked: the table was full and nothing could be evicted.
    pub untracked: AtomicU64,
    /// Frames without an IP flow (non-IP, unparsable IP).
    pub no_flow: AtomicU64,
    /// Flows live at the last batch.
    pub live_flows: AtomicU64,
    /// Application names stored.
    pub app_names: AtomicU64,
    /// Names lost: string arena full.
    pub app_arena_full: AtomicU64,
    /// ClientHellos not reassembled: all buffers in use.
    pub app_reassembly_full: AtomicU64,
    /// ClientHellos larger than a reassembly buffer.
    pub app_reassembly_overflow: AtomicU64,
    /// QUIC Initial packets decrypted.
    pub quic_decrypted: AtomicU64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Local {
    flows: u64,
    records: u64,
    evicted: u64,
    untracked: u64,
    no_flow: u64,
}

/// One flow in the table (480 bytes; `repr(C)` keeps the lookup fields in the first cache
/// line and each direction's counters together).
#[derive(Debug, Clone)]
#[repr(C)]
pub struct FlowState {
    key: FlowKey,
    links: Links,
    /// Direction index of the initiator (0: a → b).
    initiator: u8,
    /// 0 open, 1 FIN both ways, 2 RST.
    closing: u8,
    app: AppState,
    hs: Handshake,
    start_ns: u64,
    last_ns: u64,
    /// Counters per canonical direction (0: a → b, 1: b → a).
    dirs: [DirRecord; 2],
    tracks: [DirTrack; 2],
}

impl Default for FlowState {
    fn default() -> Self {
        FlowState {
            key: FlowKey::default(),
            links: Links::default(),
            initiator: 0,
            closing: 0,
            start_ns: 0,
            last_ns: 0,
            hs: Handshake::default(),
            app: AppState::default(),
            dirs: [DirRecord::EMPTY; 2],
            tracks: [DirTrack::default(); 2],
        }
    }
}

impl Slot for FlowState {
    fn key(&self) -> &FlowKey {
        &self.key
    }
    fn links(&mut self) -> &mut Links {
        &mut self.links
    }
    fn links_ref(&self) -> &Links {
        &self.links
    }
    #[inline(always)]
    fn prefetch(&self) {
        use super::table::prefetch;
        prefetch(&self.key);
        prefetch(&self.last_ns);
        for d in &self.dirs {
            prefetch(&d.packets);
            prefetch(&d.rtt);
            prefetch(&d.first_ack_us);
        }
        prefetch(&self.tracks[0]);
        prefetch(&self.tracks[1]);
    }
}

impl FlowState {
    fn packets(&self) -> u64 {
        self.dirs[0].packets + self.dirs[1].packets
    }

    /// First packet of the current record segment.
    fn segment_start(&self) -> Option<u64> {
        match (self.dirs[0].packets > 0, self.dirs[1].packets > 0) {
            (true, true) => Some(self.dirs[0].first_ns.min(self.dirs[1].first_ns)),
            (true, false) => Some(self.dirs[0].first_ns),
            (false, true) => Some(self.dirs[1].first_ns),
            (false, false) => None,
        }
    }

    fn record(&self, end: EndReason) -> FlowRecord {
        let i = usize::from(self.initiator & 1);
        FlowRecord {
            key: self.key,
            initiator_is_b: i == 1,
            flow_start_ns: self.start_ns,
            fwd: self.dirs[i],
            bwd: self.dirs[1 - i],
            handshake_responder_ns: self.hs.responder_ns(),
            handshake_initiator_ns: self.hs.initiator_ns(),
            app: AppRecord {
                kind: self.app.kind,
                name: StrRef::default(),
                dns_qtype: self.app.qtype,
                dns_rcode: self.app.rcode,
            },
            end,
        }
    }
}

/// The flow meter. See the module doc.
pub struct FlowMeter<K: RecordSink> {
    cfg: MeterConfig,
    table: FlowTable<FlowState>,
    frags: FragmentTable,
    app: AppEngine,
    sink: K,
    shared: Arc<MeterCounters>,
    local: Local,
    cuts: Vec<u64>,
    next_cut: u64,
    /// Cut times still ahead of the interface statistics (observed frames may run ahead of
    /// the flow side in a multi-worker pipeline).
    iface_cuts: Vec<u64>,
    iface: IfaceAccumulator,
    control: Option<Receiver<u64>>,
    started: bool,
    now: u64,
}

impl<K: RecordSink> std::fmt::Debug for FlowMeter<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowMeter")
            .field("flows", &self.table.len())
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

/// Fragment table size per worker and its entry lifetime (Linux's `ipfrag_time` is 30 s).
const FRAG_SLOTS: usize = 4096;
const FRAG_TIMEOUT_NS: u64 = 30 * S;

impl<K: RecordSink> FlowMeter<K> {
    /// A meter writing to `sink`.
    pub fn new(cfg: MeterConfig, sink: K) -> Self {
        let tick = cfg.tick_ns();
        FlowMeter {
            table: FlowTable::new(cfg.max_flows, tick),
            frags: FragmentTable::new(FRAG_SLOTS, FRAG_TIMEOUT_NS),
            app: AppEngine::new(cfg.app.clone()),
            cfg,
            sink,
            shared: Arc::new(MeterCounters::default()),
            local: Local::default(),
            cuts: Vec::with_capacity(64),
            next_cut: u64::MAX,
            iface_cuts: Vec::with_capacity(64),
            iface: IfaceAccumulator::default(),
            control: None,
            started: false,
            now: 0,
        }
    }

    /// Window cuts arrive on `rx` (cut times, ns; any order, duplicates ignored). Checked once
    /// per batch.
    pub fn control(mut self, rx: Receiver<u64>) -> Self {
        self.control = Some(rx);
        self
    }

    /// Publishes into `shared` instead of a counter block of its own (so a caller can hold
    /// the counters before the meter moves to its thread).
    pub fn with_counters(mut self, shared: Arc<MeterCounters>) -> Self {
        self.shared = shared;
        self
    }

    /// Adds a cut time directly.
    pub fn add_cut(&mut self, cut_ns: u64) {
        insert_sorted(&mut self.cuts, cut_ns);
        insert_sorted(&mut self.iface_cuts, cut_ns);
        self.next_cut = self.cuts.first().copied().unwrap_or(u64::MAX);
    }

    /// Closes the interface statistics' windows ending at or before `ts`.
    #[inline]
    fn iface_cuts_until(&mut self, ts: u64) {
        while let Some(&c) = self.iface_cuts.first() {
            if c > ts {
                break;
            }
            self.iface_cuts.remove(0);
            let stats = self.iface.take();
            self.sink.iface(c, stats);
        }
    }

    /// The shared counters.
    pub fn counters(&self) -> &Arc<MeterCounters> {
        &self.shared
    }

    /// The sink.
    pub fn sink(&self) -> &K {
        &self.sink
    }

    /// The sink, mutable.
    pub fn sink_mut(&mut self) -> &mut K {
        &mut self.sink
    }

    /// Consumes the meter, returning its sink.
    pub fn into_sink(self) -> K {
        self.sink
    }

    /// Live flows.
    pub fn live_flows(&self) -> usize {
        self.table.len()
    }

    /// Bytes of table per tracked flow at capacity (index, slots, free list, wheel).
    pub fn table_bytes_per_flow(&self) -> f64 {
        self.table.bytes_at_capacity() as f64 / self.table.capacity() as f64
    }

    /// Bytes of the application string arena and reassembly buffers.
    pub fn app_bytes(&self) -> (usize, usize) {
        (self.app.arena_bytes(), self.app.reassembly_bytes())
    }

    /// Size of one flow slot.
    pub const SLOT_BYTES: usize = std::mem::size_of::<FlowState>();

    fn emit(&mut self, id: u32, end: EndReason) {
        let f = self.table.get(id);
        if f.packets() == 0 {
            return;
        }
        let rec = f.record(end);
        let name = self.app.name(&f.app);
        self.sink.record(&rec, name);
        self.local.records += 1;
    }

    fn end_flow(&mut self, id: u32, end: EndReason) {
        self.emit(id, end);
        let f = self.table.get_mut(id);
        self.app.release(&mut f.app);
        self.table.remove(id);
    }

    fn cut_flow(&mut self, id: u32, end: EndReason) {
        self.emit(id, end);
        let f = self.table.get_mut(id);
        f.dirs[0].reset_counters();
        f.dirs[1].reset_counters();
    }

    fn deadline(&self, f: &FlowState) -> u64 {
        if f.closing != 0 {
            return f.last_ns.saturating_add(self.cfg.close_linger_ns);
        }
        let idle = f.last_ns.saturating_add(self.cfg.idle_timeout_ns);
        match f.segment_start() {
            Some(s) => idle.min(s.saturating_add(self.cfg.active_timeout_ns)),
            None => idle,
        }
    }

    fn close_reason(f: &FlowState) -> EndReason {
        if f.closing == 2 {
            EndReason::Rst
        } else {
            EndReason::Fin
        }
    }

    /// Runs the timer wheel up to `now`.
    fn sweep(&mut self, now: u64) {
        self.table.begin_sweep(now);
        while let Some(id) = self.table.pop_due() {
            let f = self.table.get(id);
            let deadline = self.deadline(f);
            if deadline > now {
                self.table.schedule(id, deadline);
                continue;
            }
            if f.closing != 0 {
                let r = Self::close_reason(f);
                self.end_flow(id, r);
            } else if f.last_ns.saturating_add(self.cfg.idle_timeout_ns) <= now {
                self.end_flow(id, EndReason::Idle);
            } else {
                self.cut_flow(id, EndReason::Active);
                let d = self.deadline(self.table.get(id));
                self.table.schedule(id, d);
            }
        }
    }

    /// Performs every pending cut at or before `now`.
    fn run_cuts(&mut self, now: u64) {
        while let Some(&c) = self.cuts.first() {
            if c > now {
                break;
            }
            self.cuts.remove(0);
            self.sweep(c.saturating_sub(1));
            // cutting only resets counters, it never frees or moves slots
            let n = self.table.slots_len() as u32;
            for id in 0..n {
                if !self.table.is_live(id) {
                    continue;
                }
                let f = self.table.get(id);
                if f.closing != 0 {
                    // closed and only lingering for stray packets: it ends here
                    let r = Self::close_reason(f);
                    self.end_flow(id, r);
                } else if f.packets() > 0 {
                    self.cut_flow(id, EndReason::Window);
                }
            }
            self.sink.cut_done(c);
        }
        self.next_cut = self.cuts.first().copied().unwrap_or(u64::MAX);
    }

    fn poll_control(&mut self) {
        if let Some(rx) = &self.control {
            while let Ok(c) = rx.try_recv() {
                insert_sorted(&mut self.cuts, c);
                insert_sorted(&mut self.iface_cuts, c);
            }
            self.next_cut = self.cuts.first().copied().unwrap_or(u64::MAX);
        }
    }

    fn publish(&mut self) {
        let s = &self.shared;
        let l = std::mem::take(&mut self.local);
        if l.flows != 0 {
            s.flows.fetch_add(l.flows, Relaxed);
        }
        if l.records != 0 {
            s.records.fetch_add(l.records, Relaxed);
        }
        if l.evicted != 0 {
            s.evicted.fetch_add(l.evicted, Relaxed);
        }
        if l.untracked != 0 {
            s.untracked.fetch_add(l.untracked, Relaxed);
        }
        if l.no_flow != 0 {
            s.no_flow.fetch_add(l.no_flow, Relaxed);
        }
        s.live_flows.store(self.table.len() as u64, Relaxed);
        let a = self.app.counters;
        s.app_names.store(a.names, Relaxed);
        s.app_arena_full.store(a.arena_full, Relaxed);
        s.app_reassembly_full.store(a.reassembly_full, Relaxed);
        s.app_reassembly_overflow
            .store(a.reassembly_overflow, Relaxed);
        s.quic_decrypted.store(a.quic_decrypted, Relaxed);
    }

    #[inline]
    fn create(&mut self, key: FlowKey, hash: u64, dir: usize, ts: u64) -> Option<u32> {
        let slot = FlowState {
            key,
            initiator: dir as u8,
            start_ns: ts,
            last_ns: ts,
            ..FlowState::default()
        };
        let id = match self.table.insert(hash, slot) {
            Some(id) => id,
            None => {
                let victim = self.table.oldest()?;
                self.end_flow(victim, EndReason::Evicted);
                self.local.evicted += 1;
                let slot = FlowState {
                    key,
                    initiator: dir as u8,
                    start_ns: ts,
                    last_ns: ts,
                    ..FlowState::default()
                };
                self.table.insert(hash, slot)?
            }
        };
        self.local.flows += 1;
        self.table
            .schedule(id, ts.saturating_add(self.cfg.idle_timeout_ns));
        Some(id)
    }

    #[inline]
    fn update(&mut self, id: u32, dir: usize, p: &PacketRef<'_>, d: &Dissection) {
        let ts = p.ts_ns;
        let linger = self.cfg.close_linger_ns;
        let f = self.table.get_mut(id);
        // a capture whose time steps back (merged ports, a reordering capture card) must
        // not make a flow end before it starts: first and last are the extremes seen
        f.last_ns = f.last_ns.max(ts);
        let payload = d.payload_len;
        let prev_ns = f.dirs[dir].last_ns;
        {
            let r = &mut f.dirs[dir];
            if r.packets == 0 {
                r.first_ns = ts;
                r.last_ns = ts;
                r.ttl_min = d.ttl;
                r.ttl_max = d.ttl;
            } else {
                r.first_ns = r.first_ns.min(ts);
                r.last_ns = r.last_ns.max(ts);
                r.ttl_min = r.ttl_min.min(d.ttl);
                r.ttl_max = r.ttl_max.max(d.ttl);
            }
            r.packets += 1;
            r.ip_octets += u64::from(d.ip_total_len);
            r.payload_octets += u64::from(payload);
        }
        let has_l4 = d.frag.offset == 0;
        let mut reschedule = false;
        if d.protocol == 6 && d.has(Layer::Tcp) && has_l4 {
            let ipid = ipv4_ident(p.data, d);
            let out = tcp::segment(
                &mut f.dirs,
                &mut f.tracks,
                &mut f.hs,
                dir,
                usize::from(f.initiator),
                &d.tcp,
                payload,
                ipid,
                prev_ns,
                ts,
                f.start_ns,
            );
            if out.initiator_here {
                f.initiator = dir as u8;
            } else if out.initiator_there {
                f.initiator = (1 - dir) as u8;
            }
            if d.tcp.flags & flags::RST != 0 {
                f.closing = 2;
                reschedule = true;
            } else if f.closing == 0 && f.tracks[0].fin && f.tracks[1].fin {
                f.closing = 1;
                reschedule = true;
            }
            if !f.app.done && self.app.config().any() {
                let pl = payload_bytes(p.data, d);
                let from_init = dir == usize::from(f.initiator);
                self.app
                    .tcp(&mut f.app, from_init, d.src_port, d.dst_port, d.tcp.seq, pl);
            }
        } else if d.protocol == 17
            && d.has(Layer::Udp)
            && has_l4
            && !f.app.done
            && self.app.config().any()
        {
            let pl = payload_bytes(p.data, d);
            let from_init = dir == usize::from(f.initiator);
            self.app
                .udp(&mut f.app, from_init, d.src_port, d.dst_port, pl);
        }
        if reschedule {
            self.table.schedule(id, ts.saturating_add(linger));
        }
    }
}

fn insert_sorted(v: &mut Vec<u64>, x: u64) {
    if let Err(pos) = v.binary_search(&x) {
        v.insert(pos, x);
    }
}

/// The payload bytes captured (possibly fewer than the headers announce).
#[inline]
fn payload_bytes<'a>(data: &'a [u8], d: &Dissection) -> &'a [u8] {
    let s = (d.payload_offset as usize).min(data.len());
    let e = (s + d.payload_len as usize).min(data.len());
    &data[s..e]
}

/// The IPv4 identification of the innermost header (0 for IPv6).
#[inline]
fn ipv4_ident(data: &[u8], d: &Dissection) -> u16 {
    if d.ip_version != 4 {
        return 0;
    }
    let o = d.l3_offset as usize;
    match data.get(o + 4..o + 6) {
        Some(b) => u16::from_be_bytes([b[0], b[1]]),
        None => 0,
    }
}

impl<K: RecordSink> FlowMeter<K> {
    /// One packet whose key, direction (0: a → b) and key hash are known.
    #[inline]
    fn packet_keyed(
        &mut self,
        p: &PacketRef<'_>,
        d: &Dissection,
        key: FlowKey,
        mut dir: usize,
        hash: u64,
    ) {
        let ts = p.ts_ns;
        if key.kind == KeyKind::IcmpError as u8 {
            // keyed by the quoted packet; the error travels back towards its sender
            dir ^= 1;
        }
        let id = match self.table.find(&key, hash) {
            Some(id) => {
                let f = self.table.get(id);
                let idle = ts.saturating_sub(f.last_ns) > self.cfg.idle_timeout_ns;
                let lingered =
                    f.closing != 0 && ts.saturating_sub(f.last_ns) > self.cfg.close_linger_ns;
                let new_syn = d.protocol == 6
                    && d.tcp.flags & (flags::SYN | flags::ACK) == flags::SYN
                    && (f.closing != 0 || f.tracks[0].fin || f.tracks[1].fin)
                    && f.tracks[dir].isn != d.tcp.seq;
                if idle || lingered || new_syn {
                    let reason = if f.closing != 0 {
                        Self::close_reason(f)
                    } else if idle {
                        EndReason::Idle
                    } else {
                        EndReason::Fin
                    };
                    self.end_flow(id, reason);
                    match self.create(key, hash, dir, ts) {
                        Some(id) => id,
                        None => {
                            self.local.untracked += 1;
                            return;
                        }
                    }
                } else {
                    if let Some(s) = f.segment_start()
                        && ts.saturating_sub(s) >= self.cfg.active_timeout_ns
                    {
                        self.cut_flow(id, EndReason::Active);
                    }
                    id
                }
            }
            None => match self.create(key, hash, dir, ts) {
                Some(id) => id,
                None => {
                    self.local.untracked += 1;
                    return;
                }
            },
        };
        self.update(id, dir, p, d);
    }

    #[inline]
    fn before_packet(&mut self, ts: u64) {
        if !self.started {
            self.started = true;
            self.table.start_at(ts);
        }
        if ts >= self.next_cut {
            self.run_cuts(ts);
        }
    }
}

/// Packets looked ahead in a batch: the key and index entry of packet `i + AHEAD` are
/// computed and prefetched, and the slot of packet `i + AHEAD / 2`, while packet `i` is
/// worked on, so the table's cache misses overlap instead of adding up.
const AHEAD: usize = 8;

#[derive(Clone, Copy, Default)]
struct Ahead {
    key: FlowKey,
    dir: u8,
    hash: u64,
    valid: bool,
}

impl<K: RecordSink> FlowMeter<K> {
    #[inline(always)]
    fn look_ahead(&self, b: &Batch<'_>, i: usize) -> Ahead {
        match b.dissection(i) {
            // fragments resolve through the fragment table, in order
            Some(d) if !d.frag.is_fragment => match FlowKey::from_dissection(d) {
                Some((key, direction)) => {
                    let hash = key.hash64();
                    self.table.prefetch_index(hash);
                    Ahead {
                        key,
                        dir: u8::from(direction == Direction::Reverse),
                        hash,
                        valid: true,
                    }
                }
                None => Ahead::default(),
            },
            _ => Ahead::default(),
        }
    }
}

impl<K: RecordSink> Worker for FlowMeter<K> {
    #[inline]
    fn packet(&mut self, p: &PacketRef<'_>, d: &Dissection) {
        self.before_packet(p.ts_ns);
        let Some((key, direction)) = self.frags.resolve(d, p.ts_ns) else {
            self.local.no_flow += 1;
            return;
        };
        let hash = key.hash64();
        self.packet_keyed(
            p,
            d,
            key,
            usize::from(direction == Direction::Reverse),
            hash,
        );
    }

    #[inline]
    fn observe(&mut self, ts_ns: u64, prev_ts_ns: Option<u64>, orig_len: u32, d: &Dissection) {
        if !self.cfg.interface_stats {
            return;
        }
        if self.iface_cuts.first().is_some_and(|&c| ts_ns >= c) {
            self.iface_cuts_until(ts_ns);
        }
        self.iface.frame(ts_ns, prev_ts_ns, orig_len, d);
    }

    fn batch(&mut self, b: &Batch<'_>) {
        let n = b.len();
        let mut ring = [Ahead::default(); AHEAD];
        for (i, r) in ring.iter_mut().enumerate().take(n) {
            *r = self.look_ahead(b, i);
        }
        for i in 0..n {
            let cur = ring[i % AHEAD];
            if i + AHEAD < n {
                ring[i % AHEAD] = self.look_ahead(b, i + AHEAD);
            }
            let half = i + AHEAD / 2;
            if half < n && ring[half % AHEAD].valid {
                self.table.prefetch_slot(ring[half % AHEAD].hash);
            }
            let Some((p, d)) = b.get(i) else { continue };
            if cur.valid {
                self.before_packet(p.ts_ns);
                self.packet_keyed(&p, d, cur.key, usize::from(cur.dir), cur.hash);
            } else {
                self.packet(&p, d);
            }
        }
    }

    fn watermark(&mut self, ts_ns: u64) {
        self.poll_control();
        if ts_ns >= self.next_cut {
            self.run_cuts(ts_ns);
        }
        self.iface_cuts_until(ts_ns);
        self.now = self.now.max(ts_ns);
        if self.started {
            self.sweep(self.now);
        }
        self.sink.flush(self.now);
        self.publish();
    }

    fn finish(&mut self) {
        self.poll_control();
        // cuts before the end of the data still happen in order
        if self.next_cut <= self.now {
            self.run_cuts(self.now);
        }
        self.iface_cuts_until(self.now);
        let stats = self.iface.take();
        self.sink.iface(u64::MAX, stats);
        let ids: Vec<u32> = self.table.live_ids().collect();
        for id in ids {
            // a flow that closed and was only lingering ended by its FIN or RST
            let f = self.table.get(id);
            let reason = if f.closing != 0 {
                Self::close_reason(f)
            } else {
                EndReason::Shutdown
            };
            self.end_flow(id, reason);
        }
        self.sink.finish();
        self.publish();
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn table_bytes_per_flow_stay_under_512() {
        assert_eq!(std::mem::size_of::<FlowState>(), 480);
        let m = FlowMeter::new(MeterConfig::default(), VecSink::default());
        let per_flow = m.table_bytes_per_flow();
        assert!(per_flow <= 512.0, "{per_flow}");
        assert!(std::mem::size_of::<FlowRecord>() <= 512);
    }
}
