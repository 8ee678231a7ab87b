//! The per-core pipeline: a source read on the caller's thread, packets dissected, dispatched by
//! the symmetric worker hash and handed to N pinned workers in batches.
//!
//! ```text
//!                 frame (reader = thread 0)          dissect + hash           consume in order
//!  PcapFile ──► raw batch k ──(k mod N)──► thread k mod N ──share of k for w──► worker w
//!                                              (SPSC ring s→w, one per pair)
//!  (classic pcap: every thread frames its own 1 MiB chunks too, see "Parallel framing")
//! ```
//!
//! # Design, and why
//!
//! On a two-core box the reader must also work, and the expensive per-packet step (touching the
//! packet, [`dissect`](fn@crate::packet::dissect)) must be split between cores, or the reader is the
//! bottleneck and a second worker buys nothing. So:
//!
//! 1. **Framing** (thread 0, which also runs worker 0 inline): walks the pcap record headers and
//!    cuts the file into *raw batches* of `batch` record descriptors `(offset, len, ts)` into the
//!    shared read-only mapping — nothing is copied. Batch `k` goes to thread `k mod N`.
//! 2. **Dissection** (every thread, on its own raw batches): `dissect` + [`FlowKey`](crate::flow::FlowKey) worker hash,
//!    then each packet's `(descriptor, Dissection)` is appended to the *share* of batch `k` for
//!    its worker. Every batch yields one share per worker, possibly empty.
//! 3. **Consumption** (every thread, worker `w`): shares are consumed in strict batch order
//!    `k = 0, 1, 2, …`, each from the thread that dissected it, over one bounded SPSC ring per
//!    (producer, consumer) pair. So each worker sees its packets in file order, and after every
//!    share it gets [`Worker::watermark`] with the running maximum packet time at the end of
//!    batch `k`: the watermark sequence is identical for any worker count, so timeouts fire
//!    identically.
//!
//! Buffers (raw batches, shares) are recycled through return rings: no allocation and no lock per
//! packet (the rings are `crossbeam_channel::bounded`, touched once per batch). Back-pressure:
//! the reader never frames more than `lookahead` batches ahead of its own consumption and a
//! thread never dissects further ahead, which bounds every ring (capacity `2·lookahead + N + 2`
//! suffices), so file replay waits instead of dropping. A live source leaves frames in its
//! kernel ring while the window is full, drops and counts `ring_full_drops` once it has stayed
//! full for 1 s (the kernel ring absorbs shorter stalls, e.g. a worker descheduled on a busy
//! machine; if it overflows first, that is counted as a kernel drop), and sends empty batches carrying wall-clock watermarks while idle (every
//! 10 ms); it runs until [`Pipeline::stop_handle`] is set.
//!
//! # Parallel framing (classic pcap, N > 1)
//!
//! Walking pcap record headers is a chain of dependent loads through the whole file: on the
//! reference workload it is half of the single-core time, so a single reader caps two workers.
//! For classic pcap files every thread therefore also *frames*: the file is cut into 1 MiB
//! chunks, chunk `c` is walked by thread `c mod N` from the first record boundary at or after
//! `c · 1 MiB`, found by validating a chain of plausible headers. Before its packets are
//! released, the start is checked against where the (already verified) walk of chunk `c − 1`
//! ended; if they disagree (a pcap file inside a payload can fool the chain check), the chunk is
//! walked again from the true boundary (`resyncs_fixed` counts it). Batches never span a chunk
//! boundary on any path, so batch boundaries and the watermark sequence are the same for 1 or
//! N workers. Here the thread that dissects a batch writes each (descriptor, `Dissection`) once
//! into a slab shared (`Arc`) by the batch's N shares, which carry only indices; a slab is
//! reused once every worker has dropped it. pcapng files and copied sources use the single
//! reader.
//!
//! With one worker there are no rings at all: frame → dissect → worker on one thread.
//!
//! Sources without a shared mapping (any [`PacketSource`], e.g. a live capture whose buffer dies
//! at the next read) are copied once into the raw batch and once more into the worker's share.
//! AF_XDP (`run_xdp`, feature `xdp`) is not copied: its record descriptors point into the UMEM
//! like a file's into the mapping, every thread publishes how many batches it has consumed,
//! and the reader returns a batch's frames to the kernel once every thread has passed it.
//!
//! # Example
//!
//! ```no_run
//! use mplane_capture::packet::Dissection;
//! use mplane_capture::pipeline::{Pipeline, PipelineConfig, Worker};
//! use mplane_capture::source::{PacketRef, pcap::PcapFile};
//!
//! #[derive(Default)]
//! struct Count(u64);
//! impl Worker for Count {
//!     fn packet(&mut self, _p: &PacketRef<'_>, _d: &Dissection) { self.0 += 1 }
//!     fn watermark(&mut self, _ts_ns: u64) {}
//!     fn finish(&mut self) {}
//! }
//! let file = PcapFile::open("trace.pcap".as_ref())?;
//! let pipeline = Pipeline::new(PipelineConfig { workers: 2, ..PipelineConfig::default() });
//! let mut workers = vec![Count::default(), Count::default()];
//! pipeline.run_file(file, &mut workers)?;
//! println!("{:?}", pipeline.counters().snapshot());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod affinity;

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::counters::{Counters, Local};
use crate::flow::dispatch;
use crate::packet::{Dissection, dissect_into};
use crate::source::mmap::MappedFile;
use crate::source::pcap::{CHUNK, ChunkWalker, Classic, PcapFile, Record, record_bytes, resync};
use crate::source::{Frames, PacketRef, PacketSource, SourceError, SourceStats};

/// The consumer of packets: one instance per worker thread, owning its state (a flow table).
pub trait Worker: Send {
    /// One packet, in capture order (per worker), with its dissection.
    fn packet(&mut self, pkt: &PacketRef<'_>, dissection: &Dissection);
    /// The packets of one batch for this worker, in capture order. The default calls
    /// [`Worker::packet`] for each; a worker may override it to look ahead within the batch
    /// (e.g. to prefetch the table slots of the next packets while working on this one).
    #[inline]
    fn batch(&mut self, batch: &Batch<'_>) {
        for i in 0..batch.len() {
            if let Some((p, d)) = batch.get(i) {
                self.packet(&p, d);
            }
        }
    }
    /// Every frame of the source, seen on the thread that dissected it, in capture order
    /// within each batch and before the batch is dispatched (so each frame is observed by
    /// exactly one worker, whichever worker its flow belongs to): for statistics of the whole
    /// stream, such as inter-arrival times. `prev_ts_ns` is the capture time of the frame
    /// just before it in the source, when known (not across the chunk boundaries of a
    /// parallel file walk). The default does nothing.
    #[inline]
    fn observe(&mut self, _ts_ns: u64, _prev_ts_ns: Option<u64>, _orig_len: u32, _d: &Dissection) {}
    /// Time has advanced to `ts_ns` (packet time; wall clock while a live source is idle):
    /// expire what is due. Called after every batch, identically for any worker count.
    fn watermark(&mut self, ts_ns: u64);
    /// The source ended (or failed): flush everything.
    fn finish(&mut self);
}

/// The packets of one batch for one worker, in capture order: borrowed frames (from the
/// mapped file or the batch's copy buffer) with their dissections.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    data: Frames<'a>,
    items: &'a [Item],
    idx: Option<&'a [u16]>,
}

impl<'a> Batch<'a> {
    /// Number of packets.
    #[inline]
    pub fn len(&self) -> usize {
        match self.idx {
            Some(i) => i.len(),
            None => self.items.len(),
        }
    }

    /// `true` when the batch holds no packet.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Packet `i` and its dissection (`None` past the end).
    #[inline]
    pub fn get(&self, i: usize) -> Option<(PacketRef<'a>, &'a Dissection)> {
        let it = match self.idx {
            Some(idx) => self.items.get(usize::from(*idx.get(i)?))?,
            None => self.items.get(i)?,
        };
        Some((
            PacketRef {
                data: self.data.get(&it.rec),
                ts_ns: it.rec.ts_ns,
                orig_len: it.rec.orig_len,
                link: it.rec.link,
            },
            &it.d,
        ))
    }

    /// The dissection of packet `i` alone (cheaper than [`Self::get`] for a look-ahead).
    #[inline]
    pub fn dissection(&self, i: usize) -> Option<&'a Dissection> {
        match self.idx {
            Some(idx) => self.items.get(usize::from(*idx.get(i)?)).map(|it| &it.d),
            None => self.items.get(i).map(|it| &it.d),
        }
    }

    /// Capture time of packet `i`.
    #[inline]
    pub fn ts_ns(&self, i: usize) -> Option<u64> {
        match self.idx {
            Some(idx) => self
                .items
                .get(usize::from(*idx.get(i)?))
                .map(|it| it.rec.ts_ns),
            None => self.items.get(i).map(|it| it.rec.ts_ns),
        }
    }
}

/// Pipeline settings.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Number of workers (threads, including the caller's). Default 1.
    pub workers: usize,
    /// Packets per batch. Default 128.
    pub batch: usize,
    /// Batches the reader may run ahead of its own consumption. Default 16.
    pub lookahead: usize,
    /// Pin thread `t` to `cpus[t % len]` (the caller's thread is restored afterwards).
    pub pin: bool,
    /// CPUs to pin to; `None` = the CPUs this process may use.
    pub cpus: Option<Vec<usize>>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            workers: 1,
            batch: 128,
            lookahead: 16,
            pin: false,
            cpus: None,
        }
    }
}

/// Errors of a pipeline run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The number of worker instances does not match the configuration.
    #[error("pipeline configured for {want} workers, {got} given")]
    WorkerCount {
        /// Configured.
        want: usize,
        /// Given.
        got: usize,
    },
    /// The source failed; every packet before the failure was delivered and workers finished.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A worker thread could not be started.
    #[error("cannot start a worker thread: {0}")]
    Spawn(std::io::Error),
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Batches framed.
    pub batches: u64,
    /// Packets read from the source.
    pub packets: u64,
    /// All threads were pinned as asked.
    pub pinned: bool,
}

/// A configured pipeline with its counters.
#[derive(Debug)]
pub struct Pipeline {
    cfg: PipelineConfig,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Item {
    rec: Record,
    d: Dissection,
}

#[derive(Debug, Default)]
pub(crate) struct RawBatch {
    seq: u64,
    watermark: u64,
    /// Capture time of the frame before the first one (0 = unknown).
    prev_ts: u64,
    pub(crate) recs: Vec<Record>,
    buf: Vec<u8>,
}

#[derive(Debug, Default)]
struct Share {
    seq: u64,
    watermark: u64,
    items: Vec<Item>,
    buf: Vec<u8>,
    /// Parallel walk: last batch of its chunk.
    last: bool,
    /// Parallel walk: the source failed after this batch; stop here.
    stop: bool,
    /// Parallel walk: records in the whole batch (all workers' shares).
    nrec: u32,
    /// Parallel walk: the batch's items, shared by every worker's share.
    slab: Option<Arc<Slab>>,
    /// Parallel walk: this worker's items in `slab`, in capture order.
    idx: Vec<u16>,
}

/// The (descriptor, dissection) items of one batch of the parallel walk, written once by the
/// thread that dissected them and read in place by every worker; recycled when no share holds
/// it any more.
#[derive(Debug, Default)]
struct Slab {
    items: Vec<Item>,
}

/// How long a live source may be idle before an empty batch carries a wall-clock watermark.
const IDLE_WATERMARK: Duration = Duration::from_millis(10);
/// How long the workers' rings may stay full before a live reader drops (counted) instead of
/// leaving frames in the kernel ring.
const LIVE_STALL: Duration = Duration::from_secs(1);
/// How often a live source's own counts ([`PacketSource::stats`]) are copied into the counters.
const STATS_EVERY: Duration = Duration::from_millis(100);

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Cuts a source into raw batches.
pub(crate) trait Framer {
    /// Appends up to `max` records; `Ok(false)` at the end. Records appended before an error
    /// stay in `raw`. A live source may append fewer (even zero) and return `Ok(true)`.
    fn fill(&mut self, raw: &mut RawBatch, max: usize) -> Result<bool, SourceError>;
    fn stats(&mut self) -> SourceStats {
        SourceStats::default()
    }
    fn is_live(&self) -> bool {
        false
    }
    fn wait(&mut self, _timeout: Duration) {}
    /// Live sources: reads and discards up to `max` frames, returning how many.
    fn discard(&mut self, _max: usize) -> Result<u64, SourceError> {
        Ok(0)
    }
    /// Zero-copy live sources (AF_XDP): the frames of the last `fill` form batch `seq`; they
    /// stay lent until `release_before(s)` with `s > seq`.
    fn lent(&mut self, _seq: u64) {}
    /// Every worker has consumed every batch before `seq`: their frames may be reused.
    fn release_before(&mut self, _seq: u64) {}
    /// `true` if `lent`/`release_before` matter (the pipeline then tracks consumption).
    fn holds_frames(&self) -> bool {
        false
    }
}

impl Framer for PcapFile {
    #[inline]
    fn fill(&mut self, raw: &mut RawBatch, max: usize) -> Result<bool, SourceError> {
        // Classic pcap: a batch never spans a CHUNK boundary, exactly as the parallel walk cuts
        // it, so batches (and watermarks) are the same for any worker count.
        let limit = if self.classic().is_some() {
            (self.position() / CHUNK + 1) * CHUNK
        } else {
            usize::MAX
        };
        for _ in 0..max {
            if self.position() >= limit {
                return Ok(true);
            }
            match self.next_record()? {
                Some(r) => raw.recs.push(r),
                None => return Ok(false),
            }
        }
        Ok(true)
    }
}

/// Copies frames of any [`PacketSource`] into the raw batch.
struct CopyFramer<S>(S);

impl<S: PacketSource> Framer for CopyFramer<S> {
    fn fill(&mut self, raw: &mut RawBatch, max: usize) -> Result<bool, SourceError> {
        let live = self.0.is_live();
        for _ in 0..max {
            match self.0.next_packet()? {
                Some(p) => {
                    raw.recs.push(Record {
                        offset: raw.buf.len(),
                        caplen: p.data.len() as u32,
                        orig_len: p.orig_len,
                        ts_ns: p.ts_ns,
                        link: p.link,
                    });
                    raw.buf.extend_from_slice(p.data);
                }
                None => return Ok(live),
            }
        }
        Ok(true)
    }
    fn stats(&mut self) -> SourceStats {
        self.0.stats()
    }
    fn is_live(&self) -> bool {
        self.0.is_live()
    }
    fn wait(&mut self, timeout: Duration) {
        self.0.wait_readable(timeout);
    }
    fn discard(&mut self, max: usize) -> Result<u64, SourceError> {
        let mut n = 0;
        while n < max as u64 && self.0.next_packet()?.is_some() {
            n += 1;
        }
        Ok(n)
    }
}

/// State shared by all threads of one run.
struct Shared<'m> {
    n: usize,
    batch: usize,
    lookahead: u64,
    /// Number of batches, `u64::MAX` until the reader reached the end.
    total: AtomicU64,
    abort: AtomicBool,
    mapped: Option<Frames<'m>>,
    counters: &'m Counters,
    stop: &'m AtomicBool,
    /// Per thread: batches consumed so far (how far lent frames may be released).
    consumed: Box<[Cursor]>,
}

/// A consumption cursor on its own cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Cursor(AtomicU64);

/// The reader's state (thread 0 only).
struct Feeder<'f> {
    framer: &'f mut dyn Framer,
    raw_out: Vec<Option<Sender<RawBatch>>>,
    raw_back: Receiver<RawBatch>,
    local: VecDeque<RawBatch>,
    pool: Vec<RawBatch>,
    fs: u64,
    eof: bool,
    max_ts: u64,
    packets: u64,
    live: bool,
    last_emit: Instant,
    last_stats: Instant,
    full_since: Option<Instant>,
    /// Capture time of the last frame framed.
    last_ts: u64,
}

impl Feeder<'_> {
    fn end(&mut self, sh: &Shared<'_>) {
        self.eof = true;
        sh.total.store(self.fs, Ordering::Release);
    }

    /// Frames batches up to `lookahead` ahead of `cs`. Returns whether anything was framed.
    fn step(&mut self, sh: &Shared<'_>, cs: u64) -> Result<bool, SourceError> {
        let mut progress = false;
        if self.framer.holds_frames() {
            let done = sh
                .consumed
                .iter()
                .map(|c| c.0.load(Ordering::Acquire))
                .min();
            self.framer.release_before(done.unwrap_or(0));
        }
        if self.live && self.last_stats.elapsed() >= STATS_EVERY {
            sh.counters.source.store(&self.framer.stats());
            self.last_stats = Instant::now();
        }
        if !self.eof && sh.stop.load(Ordering::Relaxed) {
            sh.counters.source.store(&self.framer.stats());
            self.end(sh);
        }
        if self.live && !self.eof && self.fs >= cs + sh.lookahead {
            // Workers are behind. The kernel ring (64 MiB) absorbs bursts, so wait a little;
            // if the rings stay full, a live source cannot wait: drop and count.
            let since = *self.full_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= LIVE_STALL {
                let dropped = self.framer.discard(sh.batch)?;
                sh.counters
                    .ring_full_drops
                    .fetch_add(dropped, Ordering::Relaxed);
            }
            return Ok(false);
        }
        self.full_since = None;
        while !self.eof && self.fs < cs + sh.lookahead {
            let mut raw = self
                .pool
                .pop()
                .or_else(|| self.raw_back.try_recv().ok())
                .unwrap_or_else(|| RawBatch {
                    recs: Vec::with_capacity(sh.batch),
                    ..RawBatch::default()
                });
            raw.recs.clear();
            raw.buf.clear();
            let res = self.framer.fill(&mut raw, sh.batch);
            let more = matches!(res, Ok(true));
            let idle_tick = self.live
                && raw.recs.is_empty()
                && more
                && self.last_emit.elapsed() >= IDLE_WATERMARK;
            if raw.recs.is_empty() && !idle_tick {
                self.pool.push(raw);
                if self.live && more {
                    break;
                }
            } else {
                if idle_tick {
                    self.max_ts = self.max_ts.max(wall_ns());
                }
                self.last_emit = Instant::now();
                for r in &raw.recs {
                    self.max_ts = self.max_ts.max(r.ts_ns);
                }
                let count = raw.recs.len() as u64;
                self.packets += count;
                sh.counters
                    .source_packets
                    .fetch_add(count, Ordering::Relaxed);
                raw.seq = self.fs;
                raw.watermark = self.max_ts;
                raw.prev_ts = self.last_ts;
                if let Some(r) = raw.recs.last() {
                    self.last_ts = r.ts_ns;
                }
                self.framer.lent(raw.seq);
                let owner = (self.fs % sh.n as u64) as usize;
                match &self.raw_out[owner] {
                    None => self.local.push_back(raw),
                    // Never blocks for long: the ring holds every batch the window allows.
                    Some(tx) => {
                        if tx.send(raw).is_err() {
                            sh.abort.store(true, Ordering::Relaxed);
                        }
                    }
                }
                self.fs += 1;
                progress = true;
            }
            if !more {
                sh.counters.source.store(&self.framer.stats());
                self.end(sh);
                res?;
            }
        }
        Ok(progress)
    }
}

/// The ring ends one thread holds.
struct Ends {
    raw_in: Option<Receiver<RawBatch>>,
    raw_back: Sender<RawBatch>,
    share_out: Vec<Option<Sender<Share>>>,
    share_in: Vec<Option<Receiver<Share>>>,
    back_out: Vec<Option<Sender<Share>>>,
    back_in: Receiver<Share>,
}

fn build_ends(
    n: usize,
    cap: usize,
    unbounded_shares: bool,
) -> (Vec<Ends>, Vec<Option<Sender<RawBatch>>>, Receiver<RawBatch>) {
    let (raw_back_tx, raw_back_rx) = bounded(cap * n);
    let mut raw_out = vec![None];
    let mut raw_in = vec![None];
    for _ in 1..n {
        let (tx, rx) = bounded(cap);
        raw_out.push(Some(tx));
        raw_in.push(Some(rx));
    }
    let mut share_out: Vec<Vec<Option<Sender<Share>>>> = (0..n).map(|_| vec![None; n]).collect();
    let mut share_in: Vec<Vec<Option<Receiver<Share>>>> = (0..n).map(|_| vec![None; n]).collect();
    for s in 0..n {
        for w in 0..n {
            if s != w {
                let (tx, rx) = if unbounded_shares {
                    crossbeam_channel::unbounded()
                } else {
                    bounded(cap)
                };
                share_out[s][w] = Some(tx);
                share_in[w][s] = Some(rx);
            }
        }
    }
    let mut back_in = Vec::new();
    let mut back_tx = Vec::new();
    for _ in 0..n {
        let (tx, rx) = bounded(cap * n);
        back_in.push(rx);
        back_tx.push(tx);
    }
    let mut ends = Vec::new();
    for (t, ((so, si), bi)) in share_out.into_iter().zip(share_in).zip(back_in).enumerate() {
        ends.push(Ends {
            raw_in: raw_in[t].take(),
            raw_back: raw_back_tx.clone(),
            share_out: so,
            share_in: si,
            back_out: (0..n)
                .map(|s| (s != t).then(|| back_tx[s].clone()))
                .collect(),
            back_in: bi,
        });
    }
    (ends, raw_out, raw_back_rx)
}

#[inline(always)]
fn backoff(idle: &mut u32) {
    *idle += 1;
    if *idle < 64 {
        std::hint::spin_loop();
    } else if *idle < 256 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
}

/// One pipeline thread: (thread 0: frame), dissect own batches, consume shares in order.
fn thread_loop<W: Worker>(
    t: usize,
    sh: &Shared<'_>,
    ends: Ends,
    mut feeder: Option<Feeder<'_>>,
    worker: &mut W,
) -> Result<u64, SourceError> {
    let n = sh.n;
    let stage = &sh.counters.stages[t];
    let mut local = Local::default();
    let mut d = Dissection::default();
    let mut local_shares: VecDeque<Share> = VecDeque::new();
    let mut pool: Vec<Share> = Vec::new();
    let mut outs: Vec<Share> = Vec::with_capacity(n);
    let mut cs: u64 = 0;
    let mut ds: u64 = t as u64;
    let mut idle = 0u32;
    let mut result = Ok(());
    loop {
        let mut progress = false;
        if let Some(f) = feeder.as_mut() {
            match f.step(sh, cs) {
                Ok(p) => progress |= p,
                Err(e) => {
                    result = Err(e);
                    progress = true;
                }
            }
        }
        // Dissect own raw batches, at most `lookahead` ahead of our consumption.
        while ds < cs + sh.lookahead {
            let raw = match feeder.as_mut() {
                Some(f) => f.local.pop_front(),
                None => ends.raw_in.as_ref().and_then(|r| r.try_recv().ok()),
            };
            let Some(raw) = raw else { break };
            outs.clear();
            for _ in 0..n {
                let s = pool
                    .pop()
                    .or_else(|| ends.back_in.try_recv().ok())
                    .unwrap_or_else(|| Share {
                        items: Vec::with_capacity(sh.batch),
                        ..Share::default()
                    });
                outs.push(s);
            }
            let mut prev = raw.prev_ts;
            for rec in &raw.recs {
                let bytes = match sh.mapped {
                    Some(m) => m.get(rec),
                    None => record_bytes(&raw.buf, rec),
                };
                dissect_into(&mut d, rec.link, bytes);
                local.count_dissection(&d);
                worker.observe(rec.ts_ns, (prev != 0).then_some(prev), rec.orig_len, &d);
                prev = rec.ts_ns;
                let w = dispatch(&d, n);
                let out = &mut outs[w];
                let mut rec = *rec;
                if sh.mapped.is_none() {
                    rec.offset = out.buf.len();
                    out.buf.extend_from_slice(bytes);
                }
                out.items.push(Item { rec, d });
            }
            for (w, mut s) in outs.drain(..).enumerate() {
                s.seq = raw.seq;
                s.watermark = raw.watermark;
                match &ends.share_out[w] {
                    None => local_shares.push_back(s),
                    Some(tx) => {
                        if tx.send(s).is_err() {
                            sh.abort.store(true, Ordering::Relaxed);
                        }
                    }
                }
            }
            match feeder.as_mut() {
                Some(f) => f.pool.push(raw),
                None => {
                    let _ = ends.raw_back.try_send(raw);
                }
            }
            ds += n as u64;
            progress = true;
        }
        // Consume shares in batch order.
        loop {
            if cs >= sh.total.load(Ordering::Acquire) {
                break;
            }
            let src = (cs % n as u64) as usize;
            let share = if src == t {
                if local_shares.front().is_some_and(|s| s.seq == cs) {
                    local_shares.pop_front()
                } else {
                    None
                }
            } else {
                ends.share_in[src].as_ref().and_then(|r| r.try_recv().ok())
            };
            let Some(mut share) = share else { break };
            worker.batch(&Batch {
                data: sh.mapped.unwrap_or(Frames::Mapped(&share.buf)),
                items: &share.items,
                idx: None,
            });
            for it in &share.items {
                local.bytes += u64::from(it.rec.orig_len);
            }
            local.packets += share.items.len() as u64;
            local.batches += 1;
            worker.watermark(share.watermark);
            local.publish(stage);
            share.items.clear();
            share.buf.clear();
            match &ends.back_out[src] {
                None => pool.push(share),
                Some(tx) => {
                    let _ = tx.try_send(share);
                }
            }
            cs += 1;
            sh.consumed[t].0.store(cs, Ordering::Release);
            progress = true;
        }
        if cs >= sh.total.load(Ordering::Acquire) || sh.abort.load(Ordering::Relaxed) {
            break;
        }
        if progress {
            idle = 0;
        } else {
            match feeder.as_mut() {
                // A live reader sleeps in poll(2) on the capture descriptors instead.
                Some(f) if f.live && !f.eof && idle > 64 => f.framer.wait(Duration::from_millis(1)),
                _ => backoff(&mut idle),
            }
        }
    }
    local.publish(stage);
    worker.finish();
    result.map(|()| feeder.map_or(0, |f| f.packets))
}

impl Pipeline {
    /// A pipeline with fresh counters.
    pub fn new(mut cfg: PipelineConfig) -> Self {
        cfg.workers = cfg.workers.max(1);
        cfg.batch = cfg.batch.clamp(1, 4096);
        cfg.lookahead = cfg.lookahead.clamp(1, 1024);
        Pipeline {
            counters: Arc::new(Counters::new(cfg.workers)),
            stop: Arc::new(AtomicBool::new(false)),
            cfg,
        }
    }

    /// The flag that ends a run (set it from any thread): a live source runs until it is set,
    /// then the pipeline drains every ring, calls [`Worker::finish`] and returns; a file ends
    /// by itself, or early when it is set (an interrupted replay: the packets already read
    /// are delivered, or, in the parallel walk of a classic pcap file, those of the batches
    /// each thread already took, then every worker finishes).
    pub fn stop_handle(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Uses `stop` as the flag of [`Self::stop_handle`] (e.g. one a signal handler sets
    /// before the pipeline exists).
    pub fn with_stop(mut self, stop: Arc<AtomicBool>) -> Self {
        self.stop = stop;
        self
    }

    /// The counters (shareable; read them any time, e.g. from a stats thread).
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// The configuration in effect.
    pub fn config(&self) -> &PipelineConfig {
        &self.cfg
    }

    /// Replays a pcap/pcapng file zero-copy through `workers` (one per configured worker;
    /// `workers[0]` runs on the caller's thread). Never drops: the reader waits for workers.
    /// A capture read as a stream (compressed, or a pipe) goes the way of
    /// [`Self::run_source`] (frames copied out of its buffer, one reader).
    pub fn run_file<W: Worker>(
        &self,
        mut file: PcapFile,
        workers: &mut [W],
    ) -> Result<RunReport, PipelineError> {
        let Some(map) = file.mapping().cloned() else {
            return self.run_source(file, workers);
        };
        if self.cfg.workers > 1
            && let Some(classic) = file.classic()
        {
            let start = file.position();
            // the file's window bounds what stays mapped behind the consumers here too
            let step = (file.window() / CHUNK).clamp(1, 64) as u64;
            return self.run_with_pinning(workers, |p, ws, pin| {
                p.run_parallel(&map, start, classic, step, ws, pin)
            });
        }
        self.run(&mut file, Some(Frames::Mapped(map.bytes())), workers)
    }

    /// Runs any [`PacketSource`] (frames are copied into batches) through `workers`. A live
    /// source runs until [`Self::stop_handle`] is set; frames arriving while the workers' rings
    /// are full are dropped and counted (`ring_full_drops`). The source gets the stop flag
    /// ([`PacketSource::stop_on`]), so one that waits on an idle pipe ends too.
    pub fn run_source<S: PacketSource, W: Worker>(
        &self,
        mut source: S,
        workers: &mut [W],
    ) -> Result<RunReport, PipelineError> {
        source.stop_on(Arc::clone(&self.stop));
        let mut f = CopyFramer(source);
        self.run(&mut f, None, workers)
    }

    pub(crate) fn run<W: Worker>(
        &self,
        framer: &mut dyn Framer,
        mapped: Option<Frames<'_>>,
        workers: &mut [W],
    ) -> Result<RunReport, PipelineError> {
        let n = self.cfg.workers;
        let report = self.run_with_pinning(workers, |p, ws, pin| {
            if n == 1 {
                pin(0);
                p.run_single(framer, mapped, &mut ws[0])
            } else {
                p.run_multi(framer, mapped, ws, pin)
            }
        });
        // Every worker is done: nothing lent is referenced any more.
        framer.release_before(u64::MAX);
        report
    }

    /// Checks the worker count, pins as configured around `body`, restores the caller's CPUs.
    fn run_with_pinning<W: Worker>(
        &self,
        workers: &mut [W],
        body: impl FnOnce(&Self, &mut [W], &(dyn Fn(usize) + Sync)) -> Result<RunReport, PipelineError>,
    ) -> Result<RunReport, PipelineError> {
        let n = self.cfg.workers;
        if workers.len() != n {
            return Err(PipelineError::WorkerCount {
                want: n,
                got: workers.len(),
            });
        }
        let cpus = self.cfg.cpus.clone().unwrap_or_else(affinity::allowed_cpus);
        let restore = affinity::allowed_cpus();
        let pinned = AtomicBool::new(self.cfg.pin);
        let pin = |t: usize| {
            if self.cfg.pin {
                let ok = cpus
                    .get(t % cpus.len().max(1))
                    .is_some_and(|&c| affinity::pin_current_thread(c).is_ok());
                if !ok {
                    pinned.store(false, Ordering::Relaxed);
                }
            }
        };
        let report = body(self, workers, &pin);
        if self.cfg.pin {
            let _ = affinity::set_current_thread_cpus(&restore);
        }
        let mut report = report?;
        report.pinned = pinned.load(Ordering::Relaxed);
        Ok(report)
    }

    /// One worker: frame → dissect → worker on the caller's thread, no rings.
    fn run_single<W: Worker>(
        &self,
        framer: &mut dyn Framer,
        mapped: Option<Frames<'_>>,
        worker: &mut W,
    ) -> Result<RunReport, PipelineError> {
        let stage = &self.counters.stages[0];
        let mut local = Local::default();
        let mut raw = RawBatch {
            recs: Vec::with_capacity(self.cfg.batch),
            ..RawBatch::default()
        };
        let mut items: Vec<Item> = Vec::with_capacity(self.cfg.batch);
        let mut prev_ts = 0u64;
        let mut max_ts = 0u64;
        let mut report = RunReport::default();
        let live = framer.is_live();
        let mut last_emit = Instant::now();
        let mut last_stats = Instant::now();
        let result = loop {
            raw.recs.clear();
            raw.buf.clear();
            if self.stop.load(Ordering::Relaxed) {
                break Ok(());
            }
            let res = framer.fill(&mut raw, self.cfg.batch);
            if live && last_stats.elapsed() >= STATS_EVERY {
                self.counters.source.store(&framer.stats());
                last_stats = Instant::now();
            }
            if live && raw.recs.is_empty() {
                if last_emit.elapsed() >= IDLE_WATERMARK {
                    max_ts = max_ts.max(wall_ns());
                    worker.watermark(max_ts);
                    last_emit = Instant::now();
                }
                framer.wait(Duration::from_millis(1));
            }
            if !raw.recs.is_empty() {
                last_emit = Instant::now();
                let data = mapped.unwrap_or(Frames::Mapped(&raw.buf));
                framer.lent(report.batches);
                // items are reused in place: dissect_into resets each one
                if items.len() < raw.recs.len() {
                    items.resize(raw.recs.len(), Item::default());
                }
                for (rec, it) in raw.recs.iter().zip(items.iter_mut()) {
                    it.rec = *rec;
                    dissect_into(&mut it.d, rec.link, data.get(rec));
                    local.count_dissection(&it.d);
                    worker.observe(
                        rec.ts_ns,
                        (prev_ts != 0).then_some(prev_ts),
                        rec.orig_len,
                        &it.d,
                    );
                    prev_ts = rec.ts_ns;
                    max_ts = max_ts.max(rec.ts_ns);
                    local.bytes += u64::from(rec.orig_len);
                }
                worker.batch(&Batch {
                    data,
                    items: &items[..raw.recs.len()],
                    idx: None,
                });
                let count = raw.recs.len() as u64;
                local.packets += count;
                local.batches += 1;
                report.packets += count;
                report.batches += 1;
                framer.release_before(report.batches);
                self.counters
                    .source_packets
                    .fetch_add(count, Ordering::Relaxed);
                worker.watermark(max_ts);
                local.publish(stage);
            }
            match res {
                Ok(true) => {}
                Ok(false) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.counters.source.store(&framer.stats());
        local.publish(stage);
        worker.finish();
        result?;
        Ok(report)
    }

    fn run_multi<W: Worker>(
        &self,
        framer: &mut dyn Framer,
        mapped: Option<Frames<'_>>,
        workers: &mut [W],
        pin: &(dyn Fn(usize) + Sync),
    ) -> Result<RunReport, PipelineError> {
        let n = self.cfg.workers;
        let la = self.cfg.lookahead;
        let cap = 2 * la + n + 2;
        let sh = Shared {
            n,
            batch: self.cfg.batch,
            lookahead: la as u64,
            total: AtomicU64::new(u64::MAX),
            abort: AtomicBool::new(false),
            mapped,
            counters: &self.counters,
            stop: &self.stop,
            consumed: (0..n).map(|_| Cursor::default()).collect(),
        };
        let (ends, raw_out, raw_back) = build_ends(n, cap, false);
        let live = framer.is_live();
        let feeder = Feeder {
            live,
            last_emit: Instant::now(),
            last_stats: Instant::now(),
            full_since: None,
            last_ts: 0,
            framer,
            raw_out,
            raw_back,
            local: VecDeque::new(),
            pool: Vec::new(),
            fs: 0,
            eof: false,
            max_ts: 0,
            packets: 0,
        };
        let sh = &sh;
        let (r0, panic, spawn_error) = on_worker_threads(
            &sh.abort,
            workers,
            ends,
            pin,
            |t, e, w| thread_loop(t, sh, e, None, w).map(|_| ()),
            |e, w| thread_loop(0, sh, e, Some(feeder), w),
        );
        let res0 = match (r0, panic) {
            (Err(p), _) | (Ok(_), Some(p)) => Err(p),
            (Ok(r), None) => Ok((r, spawn_error)),
        };
        let packets = match res0 {
            Ok((_, Some(e))) => return Err(PipelineError::Spawn(e)),
            Ok((r, None)) => r?,
            Err(p) => resume_unwind(p),
        };
        let total = sh.total.load(Ordering::Acquire);
        Ok(RunReport {
            batches: total,
            packets,
            pinned: false,
        })
    }
}

/// A caught panic.
type Panic = Box<dyn std::any::Any + Send + 'static>;

/// Runs `each(t, ends[t], workers[t])` for workers 1.. on scoped threads named
/// `capture-w{t}` (each pinned with `pin(t)`), and `first(ends[0], workers[0])`
/// on the calling thread, pinned to slot 0. A panic or a failed spawn sets
/// `abort` so the other threads stop; returns the calling thread's outcome,
/// the first panic of another thread, and a spawn error, if any.
fn on_worker_threads<W, E, T, M>(
    abort: &AtomicBool,
    workers: &mut [W],
    mut ends: Vec<E>,
    pin: &(dyn Fn(usize) + Sync),
    each: impl Fn(usize, E, &mut W) -> T + Sync,
    first: impl FnOnce(E, &mut W) -> M,
) -> (
    std::thread::Result<M>,
    Option<Panic>,
    Option<std::io::Error>,
)
where
    W: Send,
    E: Send,
    T: Send,
{
    let (w0, rest) = workers.split_at_mut(1);
    let ends0 = ends.remove(0);
    let each = &each;
    std::thread::scope(|scope| {
        let handles: Vec<_> = rest
            .iter_mut()
            .zip(ends)
            .enumerate()
            .map(|(i, (w, e))| {
                let t = i + 1;
                std::thread::Builder::new()
                    .name(format!("capture-w{t}"))
                    .spawn_scoped(scope, move || {
                        pin(t);
                        let r = catch_unwind(AssertUnwindSafe(|| each(t, e, w)));
                        if r.is_err() {
                            abort.store(true, Ordering::Relaxed);
                        }
                        r
                    })
            })
            .collect();
        if handles.iter().any(|h| h.is_err()) {
            abort.store(true, Ordering::Relaxed);
        }
        pin(0);
        let r0 = catch_unwind(AssertUnwindSafe(|| first(ends0, &mut w0[0])));
        if r0.is_err() {
            abort.store(true, Ordering::Relaxed);
        }
        let mut panic = None;
        let mut spawn_error = None;
        for h in handles {
            match h {
                Ok(h) => match h.join() {
                    Ok(Ok(_)) => {}
                    Ok(Err(p)) | Err(p) => panic = panic.or(Some(p)),
                },
                Err(e) => spawn_error = Some(e),
            }
        }
        (r0, panic, spawn_error)
    })
}

/// State shared by the threads of a parallel classic-pcap run.
struct ParShared<'m> {
    n: usize,
    batch: usize,
    /// Chunks a thread may produce beyond its own consumption.
    lookahead_chunks: u64,
    nchunks: u64,
    data_start: usize,
    file: &'m MappedFile,
    /// Chunks released at a time, that many behind the consumer (the file's window).
    release_step: u64,
    classic: Classic,
    counters: &'m Counters,
    abort: AtomicBool,
    /// The pipeline's stop flag: every thread ends where it is.
    stop: &'m AtomicBool,
    /// Where chunk `c`'s verified walk ended (first header of the next chunk), `u64::MAX`
    /// until known.
    ends: Vec<AtomicU64>,
    /// First failure, by chunk (the lowest chunk wins).
    error: std::sync::Mutex<Option<(u64, SourceError)>>,
}

impl ParShared<'_> {
    fn fail(&self, chunk: u64, e: SourceError) {
        if let Ok(mut g) = self.error.lock()
            && g.as_ref().is_none_or(|(c, _)| chunk < *c)
        {
            *g = Some((chunk, e));
        }
    }
}

/// One thread of the parallel walk: it frames *and* dissects its own chunks (`c mod N == t`),
/// then consumes every worker share in global order (chunk, batch).
fn thread_loop_parallel<W: Worker>(t: usize, sh: &ParShared<'_>, ends: Ends, worker: &mut W) {
    let n = sh.n;
    let b = sh.file.bytes();
    let stage = &sh.counters.stages[t];
    let mut local = Local::default();
    let mut local_shares: VecDeque<Share> = VecDeque::new();
    let mut pool: Vec<Share> = Vec::new();
    let mut outs: Vec<Share> = Vec::with_capacity(n);
    // Records of the chunk being produced (reused; ~2k records per MiB).
    let mut chunk_recs: Vec<Record> = Vec::new();
    // Slabs we emitted, oldest first; reused once every share has dropped them.
    let mut slabs: VecDeque<Arc<Slab>> = VecDeque::new();
    // A walked chunk awaiting verification: (chunk, start, end, walk error).
    let mut pending: Option<(u64, usize, usize, Option<SourceError>)> = None;
    // A verified chunk being emitted: (chunk, next record index, walk error).
    let mut emitting: Option<(u64, usize, Option<SourceError>)> = None;
    let mut next_own = t as u64;
    let mut cc = 0u64;
    let mut wm = 0u64;
    let mut stopped = false;
    let mut idle = 0u32;
    let walk = |recs: &mut Vec<Record>, start: usize, ch: usize| {
        recs.clear();
        let mut w = ChunkWalker::new(start, (ch + 1) * CHUNK);
        loop {
            match w.next(b, &sh.classic) {
                Ok(Some(r)) => recs.push(r),
                Ok(None) => return (w.pos, None),
                Err(e) => return (w.pos, Some(e)),
            }
        }
    };
    loop {
        let mut progress = false;
        // 1. Walk our next chunk from a resynchronised start (in parallel with the others).
        if pending.is_none()
            && emitting.is_none()
            && next_own < sh.nchunks
            && next_own < cc + sh.lookahead_chunks
        {
            let ch = next_own as usize;
            // No plausible boundary inside the chunk: start at its end; verification will walk
            // it from the true boundary.
            let start = if ch == 0 {
                sh.data_start
            } else {
                resync(b, ch * CHUNK, (ch + 1) * CHUNK, &sh.classic).unwrap_or((ch + 1) * CHUNK)
            };
            let (end, err) = walk(&mut chunk_recs, start, ch);
            pending = Some((next_own, start, end, err));
            next_own += n as u64;
            progress = true;
        }
        // 2. Verify its start against where the previous chunk's (verified) walk ended; on a
        //    disagreement (a false resync, e.g. a pcap file inside a payload) walk again from
        //    the true boundary. Then publish where this chunk ends.
        if let Some((ch, start, end, err)) = pending.take() {
            let prev = if ch == 0 {
                Some(start)
            } else {
                let e = sh.ends[ch as usize - 1].load(Ordering::Acquire);
                (e != u64::MAX).then_some(e as usize)
            };
            match prev {
                None => pending = Some((ch, start, end, err)),
                Some(p) => {
                    let (end, err) = if p == start {
                        (end, err)
                    } else {
                        sh.counters.resyncs_fixed.fetch_add(1, Ordering::Relaxed);
                        walk(&mut chunk_recs, p, ch as usize)
                    };
                    sh.ends[ch as usize].store(end as u64, Ordering::Release);
                    emitting = Some((ch, 0, err));
                    progress = true;
                }
            }
        }
        // 3. Dissect and emit a few batches of the verified chunk.
        for _ in 0..4 {
            let Some((ch, idx, _)) = emitting.as_mut() else {
                break;
            };
            let ch = *ch;
            let from = *idx;
            let to = (from + sh.batch).min(chunk_recs.len());
            *idx = to;
            let last = to == chunk_recs.len();
            outs.clear();
            for _ in 0..n {
                let s = pool
                    .pop()
                    .or_else(|| ends.back_in.try_recv().ok())
                    .unwrap_or_else(|| Share {
                        items: Vec::with_capacity(sh.batch),
                        ..Share::default()
                    });
                outs.push(s);
            }
            // Dissect in place into a slab all workers read; shares carry indices only, so a
            // (descriptor, Dissection) item is written once and never copied.
            let mut slab = match slabs.front_mut().map(Arc::get_mut) {
                Some(Some(_)) => slabs.pop_front().unwrap_or_default(),
                _ => Arc::new(Slab::default()),
            };
            let mut batch_max = 0u64;
            if let Some(sl) = Arc::get_mut(&mut slab) {
                for (k, rec) in chunk_recs[from..to].iter().enumerate() {
                    if k == sl.items.len() {
                        sl.items.push(Item {
                            rec: *rec,
                            d: Dissection::default(),
                        });
                    }
                    let it = &mut sl.items[k];
                    it.rec = *rec;
                    dissect_into(&mut it.d, rec.link, record_bytes(b, rec));
                    local.count_dissection(&it.d);
                    // the frame before a chunk's first one was walked by another thread
                    let prev = if from + k == 0 {
                        None
                    } else {
                        Some(chunk_recs[from + k - 1].ts_ns)
                    };
                    worker.observe(rec.ts_ns, prev, rec.orig_len, &it.d);
                    batch_max = batch_max.max(rec.ts_ns);
                    outs[dispatch(&it.d, n)].idx.push(k as u16);
                }
            }
            sh.counters
                .source_packets
                .fetch_add((to - from) as u64, Ordering::Relaxed);
            let mut stop = false;
            if last {
                if let Some((_, _, Some(e))) = emitting.take() {
                    sh.fail(ch, e);
                    stop = true;
                }
                emitting = None;
            }
            for (w, mut s) in outs.drain(..).enumerate() {
                s.seq = ch;
                s.last = last;
                s.stop = stop;
                s.nrec = (to - from) as u32;
                s.watermark = batch_max;
                s.slab = Some(Arc::clone(&slab));
                match &ends.share_out[w] {
                    None => local_shares.push_back(s),
                    Some(tx) => {
                        let _ = tx.send(s);
                    }
                }
            }
            slabs.push_back(slab);
            progress = true;
        }
        // Consume in (chunk, batch) order.
        while cc < sh.nchunks && !stopped {
            let owner = (cc % n as u64) as usize;
            let share = if owner == t {
                if local_shares.front().is_some_and(|s| s.seq == cc) {
                    local_shares.pop_front()
                } else {
                    None
                }
            } else {
                ends.share_in[owner]
                    .as_ref()
                    .and_then(|r| r.try_recv().ok())
            };
            let Some(mut share) = share else { break };
            let slab = share.slab.take().unwrap_or_default();
            worker.batch(&Batch {
                data: Frames::Mapped(b),
                items: &slab.items,
                idx: Some(&share.idx),
            });
            for it in share
                .idx
                .iter()
                .filter_map(|&k| slab.items.get(usize::from(k)))
            {
                local.bytes += u64::from(it.rec.orig_len);
            }
            drop(slab);
            local.packets += share.idx.len() as u64;
            local.batches += 1;
            if share.nrec > 0 {
                wm = wm.max(share.watermark);
                worker.watermark(wm);
            }
            local.publish(stage);
            stopped |= share.stop;
            if share.last {
                cc += 1;
                // Consumed pages are released in steps of the file's window (at most 64
                // chunks), one step behind the consumer, by the threads in turn: one madvise
                // (and one TLB shootdown to the other cores) per step, not per chunk.
                // Releasing early is still correct: the pages re-fault from the page cache.
                let step = sh.release_step;
                if cc >= 2 * step
                    && cc.is_multiple_of(step)
                    && t == ((cc / step) % n as u64) as usize
                {
                    let from = ((cc - 2 * step) as usize) * CHUNK;
                    sh.file.release(from, from + step as usize * CHUNK);
                }
            }
            share.idx.clear();
            match &ends.back_out[owner] {
                None => pool.push(share),
                Some(tx) => {
                    let _ = tx.try_send(share);
                }
            }
            progress = true;
        }
        if cc >= sh.nchunks
            || stopped
            || sh.abort.load(Ordering::Relaxed)
            || sh.stop.load(Ordering::Relaxed)
        {
            break;
        }
        if progress {
            idle = 0;
        } else {
            backoff(&mut idle);
        }
    }
    local.publish(stage);
    worker.finish();
}

impl Pipeline {
    /// N > 1 over a classic pcap file: every thread walks, dissects and consumes. See the
    /// module doc ("Parallel framing").
    fn run_parallel<W: Worker>(
        &self,
        map: &MappedFile,
        data_start: usize,
        classic: Classic,
        release_step: u64,
        workers: &mut [W],
        pin: &(dyn Fn(usize) + Sync),
    ) -> Result<RunReport, PipelineError> {
        let n = self.cfg.workers;
        let len = map.bytes().len();
        let nchunks = len.div_ceil(CHUNK).max(1) as u64;
        let sh = ParShared {
            n,
            batch: self.cfg.batch,
            lookahead_chunks: 2 * n as u64,
            nchunks,
            data_start,
            file: map,
            release_step,
            classic,
            counters: &self.counters,
            abort: AtomicBool::new(false),
            stop: &self.stop,
            ends: (0..nchunks).map(|_| AtomicU64::new(u64::MAX)).collect(),
            error: std::sync::Mutex::new(None),
        };
        let (ends, _raw_out, _raw_back) = build_ends(n, 4 * n + 4, true);
        let sh = &sh;
        let (r0, panic, spawn_error) = on_worker_threads(
            &sh.abort,
            workers,
            ends,
            pin,
            |t, e, w| thread_loop_parallel(t, sh, e, w),
            |e, w| thread_loop_parallel(0, sh, e, w),
        );
        let outcome = (r0.err().or(panic), spawn_error);
        match outcome {
            (Some(p), _) => resume_unwind(p),
            (None, Some(e)) => return Err(PipelineError::Spawn(e)),
            (None, None) => {}
        }
        let err = sh.error.lock().ok().and_then(|mut g| g.take());
        if let Some((_, e)) = err {
            return Err(e.into());
        }
        Ok(RunReport {
            batches: self
                .counters
                .stages
                .iter()
                .map(|s| s.batches.load(Ordering::Relaxed))
                .max()
                .unwrap_or(0),
            packets: self.counters.source_packets.load(Ordering::Relaxed),
            pinned: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::Builder;
    use crate::packet::LinkType;

    /// A fake live source: `n` frames, one per call while `gate` allows, otherwise idle.
    struct FakeLive {
        frames: Vec<Vec<u8>>,
        next: usize,
    }
    impl PacketSource for FakeLive {
        fn next_packet(&mut self) -> Result<Option<PacketRef<'_>>, SourceError> {
            let Some(f) = self.frames.get(self.next) else {
                return Ok(None);
            };
            self.next += 1;
            Ok(Some(PacketRef {
                data: f,
                ts_ns: self.next as u64,
                orig_len: f.len() as u32,
                link: LinkType::ETHERNET,
            }))
        }
        fn is_live(&self) -> bool {
            true
        }
    }

    #[derive(Default)]
    struct Count {
        packets: u64,
        watermarks: Vec<u64>,
        finished: bool,
    }
    impl Worker for Count {
        fn packet(&mut self, _p: &PacketRef<'_>, _d: &Dissection) {
            self.packets += 1;
        }
        fn watermark(&mut self, ts_ns: u64) {
            self.watermarks.push(ts_ns);
        }
        fn finish(&mut self) {
            self.finished = true;
        }
    }

    #[test]
    fn live_source_runs_until_stopped_and_ticks_wall_clock() {
        for n in 1..=3 {
            let frames: Vec<Vec<u8>> = (0..500u16)
                .map(|i| {
                    Builder::ethernet()
                        .ipv4([10, 0, (i >> 8) as u8, i as u8], [10, 9, 9, 9])
                        .udp(i, 53)
                        .build()
                })
                .collect();
            let p = Pipeline::new(PipelineConfig {
                workers: n,
                batch: 32,
                ..PipelineConfig::default()
            });
            let stop = p.stop_handle();
            let mut ws: Vec<Count> = (0..n).map(|_| Count::default()).collect();
            std::thread::scope(|s| {
                let h = s.spawn(|| p.run_source(FakeLive { frames, next: 0 }, &mut ws));
                std::thread::sleep(Duration::from_millis(100));
                stop.store(true, Ordering::Relaxed);
                h.join().unwrap().unwrap();
            });
            assert_eq!(ws.iter().map(|w| w.packets).sum::<u64>(), 500, "n={n}");
            let now = wall_ns();
            for w in &ws {
                assert!(w.finished);
                // idle ticks carried wall-clock time to every worker
                let last = *w.watermarks.last().unwrap();
                assert!(last > now - 10_000_000_000 && last <= now, "n={n}");
            }
        }
    }
}
