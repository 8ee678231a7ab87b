//! The shared live pipeline of a capture source and the passive jobs subscribed to it.
//!
//! ```text
//!  source ─► Pipeline (N pinned workers, one FlowMeter each) ─► HubSink per worker
//!                ▲ cut times (one channel per worker)               │ record buffers, cut marks,
//!                │                                                  ▼ interface statistics
//!  subscribe(window, filter) ──────────────────────────────► collector thread
//!                                                                   │ per subscription: merge the
//!                                                                   ▼ segments of each flow
//!                                                        Subscription::wait → records, statistics
//! ```
//!
//! The pipeline starts with the first subscription and stops when none has been left for
//! [`PassiveConfig::idle_stop`]. A subscription names a window `[start, end)` (ns, wall time):
//! it sends both times to every worker as window cuts, so that each flow's counters within the
//! window come as their own record segments (flows open at the end are cut with end reason
//! `window` and go on in the next window). The subscription is complete once every worker has
//! reported both its flow records and its interface statistics up to `end`.
//!
//! Nothing here touches the per-packet path: workers hand over record buffers once per batch
//! (at most every 50 ms while quiet) and never block on them: a buffer that finds the
//! collector's queue full is dropped and its records counted (`capture.drops.records`). The
//! marks that close a window are sent blocking, so a window always completes.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use mplane_capture::counters::{Counters, CountersSnapshot};
use mplane_capture::flow::FlowKey;
use mplane_capture::pipeline::{Pipeline, PipelineConfig};
use mplane_capture::source::SourceSpec;

use super::columns::ColumnContext;
use super::filter::FlowFilter;
use super::iface::IfaceStats;
use super::meter::{FlowMeter, MeterConfig, MeterCounters, RecordSink};
use super::record::{FlowRecord, StrRef};
use super::source::{AnySource, SourceOptions};

/// Settings of one passive source.
#[derive(Debug, Clone)]
pub struct PassiveConfig {
    /// The capture source.
    pub source: SourceSpec,
    /// Its options (libpcap buffer and filter, file repetition).
    pub options: SourceOptions,
    /// Name of the observation point (`observer.interface`).
    pub interface: String,
    /// Pipeline workers.
    pub workers: usize,
    /// CPUs to pin the workers to (`None`: no pinning).
    pub cpus: Option<Vec<usize>>,
    /// Flow meter settings per worker.
    pub meter: MeterConfig,
    /// Column context (interface name, internal networks).
    pub context: ColumnContext,
    /// Stop the pipeline when no job has needed it for this long.
    pub idle_stop: Duration,
    /// Record buffers a worker may have in flight to the collector.
    pub buffers_per_worker: usize,
    /// Most flows a subscription keeps (more are dropped and counted).
    pub max_flows_per_job: usize,
}

impl PassiveConfig {
    /// Defaults for `source`, observed as `interface`.
    pub fn new(source: SourceSpec, interface: impl Into<String>) -> Self {
        let interface = interface.into();
        PassiveConfig {
            source,
            options: SourceOptions::default(),
            context: ColumnContext {
                interface: interface.clone(),
                internal: ColumnContext::default_internal(),
            },
            interface,
            workers: 1,
            cpus: None,
            meter: MeterConfig::default(),
            idle_stop: Duration::from_secs(30),
            buffers_per_worker: 64,
            max_flows_per_job: 5_000_000,
        }
    }
}

/// Records per buffer handed to the collector.
const BUF_RECORDS: usize = 1024;
/// A worker hands over a partly filled buffer after this long.
const HAND_OVER: Duration = Duration::from_millis(50);

#[derive(Debug, Default)]
struct RecordBuf {
    recs: Vec<FlowRecord>,
    names: Vec<u8>,
}

impl RecordBuf {
    fn with_capacity() -> Self {
        RecordBuf {
            recs: Vec::with_capacity(BUF_RECORDS),
            names: Vec::with_capacity(BUF_RECORDS * 32),
        }
    }
    fn clear(&mut self) {
        self.recs.clear();
        self.names.clear();
    }
}

enum Msg {
    Records(RecordBuf),
    CutDone(u64),
    Iface(u64, Box<IfaceStats>),
    Finished,
}

/// Counters of the hub itself.
#[derive(Debug, Default)]
pub struct HubCounters {
    /// Records dropped because the collector's queue was full.
    pub records_dropped: AtomicU64,
    /// Records dropped because a job held its maximum number of flows.
    pub job_overflow: AtomicU64,
}

/// The worker side: a [`RecordSink`] feeding the collector.
struct HubSink {
    tx: Sender<Msg>,
    back: Receiver<RecordBuf>,
    cur: RecordBuf,
    since: Instant,
    counters: Arc<HubCounters>,
}

impl HubSink {
    fn hand_over(&mut self) {
        if self.cur.recs.is_empty() {
            return;
        }
        let next = self
            .back
            .try_recv()
            .unwrap_or_else(|_| RecordBuf::with_capacity());
        let full = std::mem::replace(&mut self.cur, next);
        let n = full.recs.len() as u64;
        if let Err(e) = self.tx.try_send(Msg::Records(full)) {
            // queue full (or collector gone): drop and count, keep the buffer
            self.counters.records_dropped.fetch_add(n, Relaxed);
            if let Msg::Records(mut b) = e.into_inner() {
                b.clear();
                self.cur = b;
            }
        }
        self.since = Instant::now();
    }
}

impl RecordSink for HubSink {
    fn record(&mut self, rec: &FlowRecord, name: &[u8]) {
        let mut r = *rec;
        r.app.name = StrRef::append(&mut self.cur.names, name);
        self.cur.recs.push(r);
        if self.cur.recs.len() >= BUF_RECORDS {
            self.hand_over();
        }
    }
    fn flush(&mut self, _watermark_ns: u64) {
        if !self.cur.recs.is_empty() && self.since.elapsed() >= HAND_OVER {
            self.hand_over();
        }
    }
    fn cut_done(&mut self, cut_ns: u64) {
        self.hand_over();
        let _ = self.tx.send(Msg::CutDone(cut_ns));
    }
    fn iface(&mut self, until_ns: u64, stats: IfaceStats) {
        let _ = self.tx.send(Msg::Iface(until_ns, Box::new(stats)));
    }
    fn finish(&mut self) {
        self.hand_over();
        let _ = self.tx.send(Msg::Finished);
    }
}

/// Drop counters at one moment (for the deltas a result carries).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops {
    /// Kernel / driver drops.
    pub kernel: u64,
    /// Ring-full drops.
    pub ring: u64,
    /// Records dropped on their way to jobs.
    pub records: u64,
    /// Frames cut by the snaplen.
    pub truncated: u64,
    /// Parse errors.
    pub parse_errors: u64,
    /// Flows evicted from a full table.
    pub evicted: u64,
    /// Packets not tracked.
    pub untracked: u64,
}

impl Drops {
    /// `self - earlier`, field by field (saturating).
    pub fn since(&self, earlier: &Drops) -> Drops {
        Drops {
            kernel: self.kernel.saturating_sub(earlier.kernel),
            ring: self.ring.saturating_sub(earlier.ring),
            records: self.records.saturating_sub(earlier.records),
            truncated: self.truncated.saturating_sub(earlier.truncated),
            parse_errors: self.parse_errors.saturating_sub(earlier.parse_errors),
            evicted: self.evicted.saturating_sub(earlier.evicted),
            untracked: self.untracked.saturating_sub(earlier.untracked),
        }
    }

    /// As `(element, value)` pairs of the probe registry.
    pub fn elements(&self) -> [(&'static str, u64); 7] {
        [
            ("capture.drops.kernel", self.kernel),
            ("capture.drops.ring", self.ring),
            ("capture.drops.records", self.records),
            ("capture.truncated", self.truncated),
            ("capture.parse_errors", self.parse_errors),
            ("flows.evicted", self.evicted),
            ("flows.untracked", self.untracked),
        ]
    }
}

/// A running pipeline's counts (see [`PassiveSource::stats`]).
#[derive(Debug, Clone)]
pub struct HubStats {
    /// The capture pipeline's counters.
    pub capture: CountersSnapshot,
    /// The flow meters' counters, summed over workers.
    pub meter: MeterTotals,
    /// Records dropped because the collector's queue was full.
    pub records_dropped: u64,
    /// Records dropped because a job held its maximum number of flows.
    pub job_overflow: u64,
    /// Subscriptions (passive jobs) attached.
    pub subscriptions: usize,
}

/// [`MeterCounters`] summed over the workers (field meanings there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct MeterTotals {
    pub flows: u64,
    pub records: u64,
    pub evicted: u64,
    pub untracked: u64,
    pub no_flow: u64,
    pub live_flows: u64,
    pub app_names: u64,
    pub app_arena_full: u64,
    pub app_reassembly_full: u64,
    pub app_reassembly_overflow: u64,
    pub quic_decrypted: u64,
}

impl MeterTotals {
    fn add(&mut self, m: &MeterCounters) {
        self.flows += m.flows.load(Relaxed);
        self.records += m.records.load(Relaxed);
        self.evicted += m.evicted.load(Relaxed);
        self.untracked += m.untracked.load(Relaxed);
        self.no_flow += m.no_flow.load(Relaxed);
        self.live_flows += m.live_flows.load(Relaxed);
        self.app_names += m.app_names.load(Relaxed);
        self.app_arena_full += m.app_arena_full.load(Relaxed);
        self.app_reassembly_full += m.app_reassembly_full.load(Relaxed);
        self.app_reassembly_overflow += m.app_reassembly_overflow.load(Relaxed);
        self.quic_decrypted += m.quic_decrypted.load(Relaxed);
    }
}

/// What a completed subscription holds.
#[derive(Debug, Default)]
pub struct Collected {
    /// Flow records (segments of one flow merged), with their application names.
    pub flows: Vec<(FlowRecord, Vec<u8>)>,
    /// Interface statistics of the window, all workers merged.
    pub iface: IfaceStats,
    /// Drops during the window.
    pub drops: Drops,
    /// Flows dropped because the job held its maximum.
    pub overflow: u64,
    /// The window actually covered, ns.
    pub window: (u64, u64),
    /// The pipeline failed (the records before the failure are here).
    pub error: Option<String>,
    /// Where the timestamps came from ([`AnySource::clock`]); `None` when capture is not
    /// running.
    pub clock: Option<&'static str>,
    /// The capture interfaces' offloads ([`AnySource::offloads`]); `None` for a file or when
    /// capture is not running.
    pub offloads: Option<String>,
}

#[derive(Debug, Default)]
struct SubState {
    flows: HashMap<(FlowKey, u64), (FlowRecord, Vec<u8>)>,
    /// Streaming subscriptions: records as they come, not merged.
    queue: Vec<(FlowRecord, Vec<u8>)>,
    iface: IfaceStats,
    complete: bool,
    error: Option<String>,
    overflow: u64,
}

/// One job's view of the pipeline.
#[derive(Debug)]
pub struct Subscription {
    id: u64,
    start_ns: u64,
    end_ns: AtomicU64,
    filter: FlowFilter,
    family: Option<u8>,
    /// Records go to `queue` as they come instead of being merged per flow.
    stream: bool,
    state: Mutex<SubState>,
    cond: Condvar,
    drops_at_start: Drops,
}

impl Subscription {
    /// Window start, ns.
    pub fn start_ns(&self) -> u64 {
        self.start_ns
    }
    /// Window end, ns.
    pub fn end_ns(&self) -> u64 {
        self.end_ns.load(Relaxed)
    }
    fn wants(&self, r: &FlowRecord) -> bool {
        r.last_ns() >= self.start_ns
            && r.first_ns() < self.end_ns()
            && self.family.is_none_or(|v| r.key.ip_version == v)
            && self.filter.matches(r)
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, SubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Running {
    stop: Arc<AtomicBool>,
    cut_tx: Vec<Sender<u64>>,
    counters: Arc<Counters>,
    meters: Vec<Arc<MeterCounters>>,
    pipeline: Option<JoinHandle<()>>,
    collector: Option<JoinHandle<()>>,
    /// [`AnySource::clock`] of the open source.
    clock: &'static str,
    /// [`AnySource::offloads`] of the open source.
    offloads: Option<String>,
}

struct State {
    running: Option<Running>,
    subs: Vec<Arc<Subscription>>,
    next_id: u64,
    idle_since: Option<Instant>,
    error: Option<String>,
}

struct Inner {
    cfg: PassiveConfig,
    state: Mutex<State>,
    hub: Arc<HubCounters>,
}

/// A capture source shared by passive jobs. See the module doc.
#[derive(Clone)]
pub struct PassiveSource {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PassiveSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassiveSource")
            .field("source", &self.inner.cfg.source)
            .field("interface", &self.inner.cfg.interface)
            .finish_non_exhaustive()
    }
}

/// Errors of passive sources.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The source could not be opened.
    #[error("{spec}: {reason}")]
    Open {
        /// The source.
        spec: String,
        /// Why.
        reason: String,
    },
    /// A worker thread could not be started.
    #[error("cannot start the capture pipeline: {0}")]
    Spawn(String),
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl PassiveSource {
    /// A source that starts capturing with its first subscription.
    pub fn new(cfg: PassiveConfig) -> Self {
        PassiveSource {
            inner: Arc::new(Inner {
                cfg,
                state: Mutex::new(State {
                    running: None,
                    subs: Vec::new(),
                    next_id: 0,
                    idle_since: None,
                    error: None,
                }),
                hub: Arc::new(HubCounters::default()),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PassiveConfig {
        &self.inner.cfg
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `true` while the pipeline runs.
    pub fn is_running(&self) -> bool {
        self.lock().running.is_some()
    }

    /// The pipeline's counters while it runs.
    pub fn counters(&self) -> Option<CountersSnapshot> {
        self.lock().running.as_ref().map(|r| r.counters.snapshot())
    }

    fn drops(&self, r: &Running) -> Drops {
        let s = r.counters.snapshot();
        let sum = |f: fn(&MeterCounters) -> u64| r.meters.iter().map(|m| f(m)).sum::<u64>();
        Drops {
            kernel: s.kernel_drops + s.source.interface_drops,
            ring: s.ring_full_drops,
            records: self.inner.hub.records_dropped.load(Relaxed)
                + self.inner.hub.job_overflow.load(Relaxed),
            truncated: s.truncated,
            parse_errors: s.parse_errors_total(),
            evicted: sum(|m| m.evicted.load(Relaxed)),
            untracked: sum(|m| m.untracked.load(Relaxed)),
        }
    }

    /// Everything the running pipeline counts, for metrics (`None` while it is stopped: the
    /// counts start from zero each time the capture starts).
    pub fn stats(&self) -> Option<HubStats> {
        let st = self.lock();
        let r = st.running.as_ref()?;
        let mut meter = MeterTotals::default();
        for m in &r.meters {
            meter.add(m);
        }
        Some(HubStats {
            capture: r.counters.snapshot(),
            meter,
            records_dropped: self.inner.hub.records_dropped.load(Relaxed),
            job_overflow: self.inner.hub.job_overflow.load(Relaxed),
            subscriptions: st.subs.len(),
        })
    }

    /// The drop counters now (zero while the pipeline is stopped).
    pub fn current_drops(&self) -> Drops {
        let st = self.lock();
        st.running
            .as_ref()
            .map(|r| self.drops(r))
            .unwrap_or_default()
    }

    /// Subscribes to the flows of `[start_ns, end_ns)` (wall time; `end_ns = u64::MAX` until
    /// [`Self::finish_now`]) matching `filter` (and IP version `family`, if given), starting the
    /// pipeline if needed.
    pub fn subscribe(
        &self,
        start_ns: u64,
        end_ns: u64,
        filter: FlowFilter,
        family: Option<u8>,
    ) -> Result<Arc<Subscription>, HubError> {
        self.subscribe_with(start_ns, end_ns, filter, family, false)
    }

    /// Like [`Self::subscribe`], but the records are not merged per flow: they queue as they
    /// come ([`Self::drain`] takes them), for jobs that write them out while the window is
    /// open (exports). At most [`PassiveConfig::max_flows_per_job`] wait in the queue; more
    /// are dropped and counted.
    pub fn subscribe_stream(
        &self,
        start_ns: u64,
        end_ns: u64,
        filter: FlowFilter,
        family: Option<u8>,
    ) -> Result<Arc<Subscription>, HubError> {
        self.subscribe_with(start_ns, end_ns, filter, family, true)
    }

    fn subscribe_with(
        &self,
        start_ns: u64,
        end_ns: u64,
        filter: FlowFilter,
        family: Option<u8>,
        stream: bool,
    ) -> Result<Arc<Subscription>, HubError> {
        let mut st = self.lock();
        if st.running.as_ref().is_some_and(|r| r.stop.load(Relaxed)) {
            // stopping because it was idle: let it end, then start afresh
            let old = st.running.take();
            drop(st);
            if let Some(mut r) = old {
                if let Some(h) = r.pipeline.take() {
                    let _ = h.join();
                }
                if let Some(h) = r.collector.take() {
                    let _ = h.join();
                }
            }
            st = self.lock();
        }
        if st.running.is_none() {
            let r = self.start(&mut st)?;
            st.running = Some(r);
        }
        let Some(r) = st.running.as_ref() else {
            return Err(HubError::Spawn("pipeline not running".into()));
        };
        let start_ns = start_ns.max(1);
        for tx in &r.cut_tx {
            let _ = tx.send(start_ns);
            if end_ns != u64::MAX {
                let _ = tx.send(end_ns);
            }
        }
        let drops_at_start = self.drops(r);
        st.next_id += 1;
        let sub = Arc::new(Subscription {
            id: st.next_id,
            start_ns,
            end_ns: AtomicU64::new(end_ns),
            filter,
            family,
            stream,
            state: Mutex::new(SubState::default()),
            cond: Condvar::new(),
            drops_at_start,
        });
        st.subs.push(sub.clone());
        st.idle_since = None;
        Ok(sub)
    }

    /// Ends `sub`'s window now (an interrupt): it completes once the workers have cut there.
    pub fn finish_now(&self, sub: &Subscription) {
        let now = wall_ns().max(sub.start_ns + 1);
        if now >= sub.end_ns() {
            return;
        }
        sub.end_ns.store(now, Relaxed);
        let st = self.lock();
        if let Some(r) = &st.running {
            for tx in &r.cut_tx {
                let _ = tx.send(now);
            }
        }
    }

    /// Waits until `sub` is complete (or `interrupted()` turns true, in which case the
    /// window is ended now and the wait goes on for that cut), then takes what it collected
    /// and unsubscribes it.
    pub fn wait(&self, sub: &Arc<Subscription>, interrupted: impl Fn() -> bool) -> Collected {
        let mut ended_early = false;
        while !self.wait_step(sub, Duration::from_millis(50)) {
            if !ended_early && interrupted() {
                ended_early = true;
                self.finish_now(sub);
            }
        }
        self.take(sub)
    }

    /// Waits up to `timeout` for `sub` to complete; `true` once it has (also when the
    /// pipeline stopped).
    pub fn wait_step(&self, sub: &Arc<Subscription>, timeout: Duration) -> bool {
        {
            let g = sub.lock();
            if g.complete {
                return true;
            }
            let (g, _) = sub
                .cond
                .wait_timeout(g, timeout)
                .unwrap_or_else(|p| p.into_inner());
            if g.complete {
                return true;
            }
        }
        // a stopped pipeline completes everything (see the collector); if the state has an
        // error without a pipeline, finish here
        let st = self.lock();
        if st.running.is_none() {
            let mut g = sub.lock();
            g.complete = true;
            if g.error.is_none() {
                g.error = st.error.clone().or_else(|| Some("capture stopped".into()));
            }
            return true;
        }
        false
    }

    /// A streaming subscription's records received so far (taken out of it).
    pub fn drain(&self, sub: &Subscription) -> Vec<(FlowRecord, Vec<u8>)> {
        std::mem::take(&mut sub.lock().queue)
    }

    /// Unsubscribes `sub` and takes what it collected.
    pub fn take(&self, sub: &Arc<Subscription>) -> Collected {
        let mut st = self.lock();
        st.subs.retain(|s| s.id != sub.id);
        if st.subs.is_empty() {
            st.idle_since = Some(Instant::now());
        }
        let drops = st
            .running
            .as_ref()
            .map(|r| self.drops(r).since(&sub.drops_at_start))
            .unwrap_or_default();
        let clock = st.running.as_ref().map(|r| r.clock);
        let offloads = st.running.as_ref().and_then(|r| r.offloads.clone());
        drop(st);
        let mut g = sub.lock();
        let mut flows: Vec<(FlowRecord, Vec<u8>)> = g.flows.drain().map(|(_, v)| v).collect();
        flows.extend(std::mem::take(&mut g.queue));
        flows.sort_by(|a, b| {
            (a.0.first_ns(), a.0.key, a.0.flow_start_ns).cmp(&(
                b.0.first_ns(),
                b.0.key,
                b.0.flow_start_ns,
            ))
        });
        Collected {
            flows,
            iface: std::mem::take(&mut g.iface),
            drops,
            overflow: g.overflow,
            window: (sub.start_ns, sub.end_ns()),
            error: g.error.take(),
            clock,
            offloads,
        }
    }

    /// Stops the pipeline now (component shutdown): open subscriptions complete with what they
    /// have and an error saying capture stopped.
    pub fn shutdown(&self) {
        let r = self.lock().running.take();
        if let Some(mut r) = r {
            r.stop.store(true, Relaxed);
            if let Some(h) = r.pipeline.take() {
                let _ = h.join();
            }
            if let Some(h) = r.collector.take() {
                let _ = h.join();
            }
        }
    }

    fn start(&self, st: &mut State) -> Result<Running, HubError> {
        let cfg = &self.inner.cfg;
        let source = AnySource::open(&cfg.source, &cfg.options).map_err(|e| HubError::Open {
            spec: cfg.source.to_string(),
            reason: e.to_string(),
        })?;
        st.error = None;
        let clock = source.clock();
        let offloads = source.offloads();
        let n = cfg.workers.max(1);
        let pipeline = Pipeline::new(PipelineConfig {
            workers: n,
            pin: cfg.cpus.is_some(),
            cpus: cfg.cpus.clone(),
            ..PipelineConfig::default()
        });
        let stop = pipeline.stop_handle();
        let counters = pipeline.counters().clone();
        let (tx, rx) = bounded::<Msg>(cfg.buffers_per_worker.max(4) * n);
        let mut meters = Vec::new();
        let mut cut_tx = Vec::new();
        let mut workers = Vec::new();
        let mut backs = Vec::new();
        for _ in 0..n {
            let (ctx, crx) = crossbeam_channel::unbounded::<u64>();
            let (btx, brx) = bounded::<RecordBuf>(cfg.buffers_per_worker.max(4));
            for _ in 0..cfg.buffers_per_worker.max(4) {
                let _ = btx.try_send(RecordBuf::with_capacity());
            }
            let shared = Arc::new(MeterCounters::default());
            let sink = HubSink {
                tx: tx.clone(),
                back: brx,
                cur: RecordBuf::with_capacity(),
                since: Instant::now(),
                counters: self.inner.hub.clone(),
            };
            workers.push(
                FlowMeter::new(cfg.meter.clone(), sink)
                    .control(crx)
                    .with_counters(shared.clone()),
            );
            meters.push(shared);
            cut_tx.push(ctx);
            backs.push(btx);
        }
        drop(tx);
        let inner = Arc::downgrade(&self.inner);
        let stop_c = stop.clone();
        let collector = std::thread::Builder::new()
            .name("mplane-passive".into())
            .spawn(move || collect(inner, rx, backs, n, stop_c))
            .map_err(|e| HubError::Spawn(e.to_string()))?;
        let weak = Arc::downgrade(&self.inner);
        let pipe = std::thread::Builder::new()
            .name("mplane-capture".into())
            .spawn(move || {
                let mut workers = workers;
                let r = match source {
                    // AF_XDP frames go to the workers as borrowed UMEM slices, no copy
                    #[cfg(feature = "xdp")]
                    AnySource::Xdp(mut s) => pipeline.run_xdp(&mut s, &mut workers),
                    other => pipeline.run_source(other, &mut workers),
                };
                if let (Err(e), Some(inner)) = (r, weak.upgrade()) {
                    let msg = format!("capture failed: {e}");
                    tracing::error!("{msg}");
                    let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
                    st.error = Some(msg);
                }
            })
            .map_err(|e| HubError::Spawn(e.to_string()))?;
        tracing::info!(
            "passive capture started on {} ({} worker(s))",
            cfg.source,
            n
        );
        Ok(Running {
            stop,
            cut_tx,
            counters,
            meters,
            pipeline: Some(pipe),
            collector: Some(collector),
            clock,
            offloads,
        })
    }
}

/// The collector thread: distributes records and statistics to subscriptions and completes
/// them; stops the pipeline when idle.
fn collect(
    inner: std::sync::Weak<Inner>,
    rx: Receiver<Msg>,
    backs: Vec<Sender<RecordBuf>>,
    n: usize,
    stop: Arc<AtomicBool>,
) {
    let mut flow_marks: BTreeMap<u64, usize> = BTreeMap::new();
    let mut iface_marks: BTreeMap<u64, usize> = BTreeMap::new();
    let mut finished = 0usize;
    let mut next_back = 0usize;
    loop {
        let Some(inner) = inner.upgrade() else { return };
        let msg = rx.recv_timeout(Duration::from_millis(200));
        let subs: Vec<Arc<Subscription>> = {
            let st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(since) = st.idle_since
                && st.subs.is_empty()
                && since.elapsed() >= inner.cfg.idle_stop
                && !stop.load(Relaxed)
            {
                tracing::info!("passive capture idle: stopping");
                stop.store(true, Relaxed);
            }
            st.subs.clone()
        };
        match msg {
            Ok(Msg::Records(mut buf)) => {
                for r in &buf.recs {
                    let name = r.app.name.get(&buf.names);
                    for s in subs.iter().filter(|s| s.wants(r)) {
                        let mut g = s.lock();
                        let max = inner.cfg.max_flows_per_job;
                        if s.stream {
                            if g.queue.len() >= max {
                                g.overflow += 1;
                                inner.hub.job_overflow.fetch_add(1, Relaxed);
                            } else {
                                g.queue.push((*r, name.to_vec()));
                            }
                            continue;
                        }
                        let len = g.flows.len();
                        match g.flows.entry((r.key, r.flow_start_ns)) {
                            std::collections::hash_map::Entry::Occupied(mut e) => {
                                let (m, nm) = e.get_mut();
                                let had_name = m.app.kind != super::record::AppKind::None;
                                m.merge(r);
                                if !had_name && nm.is_empty() {
                                    *nm = name.to_vec();
                                }
                            }
                            std::collections::hash_map::Entry::Vacant(e) => {
                                if len >= max {
                                    g.overflow += 1;
                                    inner.hub.job_overflow.fetch_add(1, Relaxed);
                                } else {
                                    e.insert((*r, name.to_vec()));
                                }
                            }
                        }
                    }
                }
                buf.clear();
                // return the buffer to a worker (round robin; any worker can use it)
                if !backs.is_empty() {
                    let _ = backs[next_back % backs.len()].try_send(buf);
                    next_back += 1;
                }
            }
            Ok(Msg::Iface(until, stats)) => {
                for s in &subs {
                    if until > s.start_ns && until <= s.end_ns() {
                        s.lock().iface.merge(&stats);
                    }
                }
                *iface_marks.entry(until).or_default() += 1;
                complete(&subs, &mut flow_marks, &mut iface_marks, n);
            }
            Ok(Msg::CutDone(c)) => {
                *flow_marks.entry(c).or_default() += 1;
                complete(&subs, &mut flow_marks, &mut iface_marks, n);
            }
            Ok(Msg::Finished) => {
                finished += 1;
                if finished == n {
                    // the pipeline ended: everything open completes now
                    let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
                    let err = st.error.clone();
                    for s in &st.subs {
                        let mut g = s.lock();
                        g.complete = true;
                        if err.is_some() {
                            g.error = err.clone();
                        }
                        s.cond.notify_all();
                    }
                    if let Some(mut r) = st.running.take() {
                        drop(st);
                        if let Some(h) = r.pipeline.take() {
                            let _ = h.join();
                        }
                        // this thread is the collector: its own handle is dropped (detached)
                    }
                    return;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Completes the subscriptions whose end every worker has passed on both sides.
fn complete(
    subs: &[Arc<Subscription>],
    flow_marks: &mut BTreeMap<u64, usize>,
    iface_marks: &mut BTreeMap<u64, usize>,
    n: usize,
) {
    let done = |m: &BTreeMap<u64, usize>, c: u64| m.get(&c).is_some_and(|&k| k >= n);
    for s in subs {
        let end = s.end_ns();
        if end != u64::MAX && done(flow_marks, end) && done(iface_marks, end) {
            let mut g = s.lock();
            if !g.complete {
                g.complete = true;
                s.cond.notify_all();
            }
        }
    }
    // marks older than every open window are no longer needed
    if let Some(oldest) = subs.iter().map(|s| s.start_ns).min() {
        flow_marks.retain(|&c, _| c >= oldest);
        iface_marks.retain(|&c, _| c >= oldest);
    } else {
        let keep_from = flow_marks.keys().next_back().copied().unwrap_or(0);
        flow_marks.retain(|&c, _| c >= keep_from);
        iface_marks.retain(|&c, _| c >= keep_from);
    }
}
