//! Counters for every stage, readable at any time without locks.
//!
//! Each thread of the pipeline owns one cache-line-aligned [`StageCounters`] block and is its
//! only writer; it accumulates locally and publishes once per batch (relaxed atomics), so the
//! data path never contends on a shared line. [`Counters::snapshot`] sums the blocks into a
//! plain [`CountersSnapshot`]. Values are monotonic; a snapshot taken while running may mix
//! batches (each counter is individually exact).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::packet::{ErrorKind, Layer, ParseError};
use crate::source::SourceStats;

/// Counters of one pipeline thread.
#[derive(Debug)]
#[repr(align(128))]
pub struct StageCounters {
    /// Frames delivered to this thread's worker.
    pub packets: AtomicU64,
    /// Wire bytes (original lengths) delivered to this thread's worker.
    pub bytes: AtomicU64,
    /// Batches (shares) this thread's worker consumed.
    pub batches: AtomicU64,
    /// Frames this thread dissected.
    pub dissected: AtomicU64,
    /// Frames cut by the snaplen before the end of their IP packet (dissected here).
    pub truncated: AtomicU64,
    /// Frames without an IP layer (dissected here).
    pub non_ip: AtomicU64,
    /// Parse errors by [`ParseError::index`] (dissected here).
    pub parse_errors: [AtomicU64; ParseError::COUNT],
}

impl Default for StageCounters {
    fn default() -> Self {
        StageCounters {
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            dissected: AtomicU64::new(0),
            truncated: AtomicU64::new(0),
            non_ip: AtomicU64::new(0),
            parse_errors: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// All counters of one pipeline.
#[derive(Debug)]
pub struct Counters {
    /// Frames read from the source.
    pub source_packets: AtomicU64,
    /// What the source counted itself (kernel drops, duplicates, oversize frames...), copied
    /// from [`crate::source::PacketSource::stats`] about every 100 ms and at the end of a run.
    pub source: SourceCounters,
    /// Frames dropped because the workers' rings were full (live sources only; files wait).
    pub ring_full_drops: AtomicU64,
    /// Chunk starts of a parallel pcap walk whose resynchronisation was wrong and was redone
    /// from the true boundary (normally 0; a pcap file inside a payload can cause one).
    pub resyncs_fixed: AtomicU64,
    /// Per-thread blocks, index = worker.
    pub stages: Box<[StageCounters]>,
}

impl Counters {
    /// Counters for `workers` threads.
    pub fn new(workers: usize) -> Self {
        Counters {
            source_packets: AtomicU64::new(0),
            source: SourceCounters::default(),
            ring_full_drops: AtomicU64::new(0),
            resyncs_fixed: AtomicU64::new(0),
            stages: (0..workers.max(1))
                .map(|_| StageCounters::default())
                .collect(),
        }
    }

    /// Sums everything into a snapshot.
    pub fn snapshot(&self) -> CountersSnapshot {
        let mut s = CountersSnapshot {
            source_packets: self.source_packets.load(Relaxed),
            kernel_drops: 0,
            source: self.source.load(),
            ring_full_drops: self.ring_full_drops.load(Relaxed),
            resyncs_fixed: self.resyncs_fixed.load(Relaxed),
            ..CountersSnapshot::default()
        };
        s.kernel_drops = s.source.kernel_drops;
        for st in self.stages.iter() {
            let w = WorkerSnapshot {
                packets: st.packets.load(Relaxed),
                bytes: st.bytes.load(Relaxed),
                batches: st.batches.load(Relaxed),
                dissected: st.dissected.load(Relaxed),
            };
            s.packets += w.packets;
            s.bytes += w.bytes;
            s.truncated += st.truncated.load(Relaxed);
            s.non_ip += st.non_ip.load(Relaxed);
            for (acc, c) in s.parse_errors.iter_mut().zip(st.parse_errors.iter()) {
                *acc += c.load(Relaxed);
            }
            s.workers.push(w);
        }
        s
    }
}

/// [`SourceStats`] as atomics: written by the reading thread only, read by anyone.
#[derive(Debug, Default)]
pub struct SourceCounters {
    kernel_drops: AtomicU64,
    interface_drops: AtomicU64,
    fill_ring_empty: AtomicU64,
    duplicates: AtomicU64,
    out_of_order: AtomicU64,
    snaplen_cut: AtomicU64,
    oversize: AtomicU64,
    over_mtu: AtomicU64,
}

impl SourceCounters {
    /// Replaces the values (the source's counts are cumulative).
    pub fn store(&self, s: &SourceStats) {
        self.kernel_drops.store(s.kernel_drops, Relaxed);
        self.interface_drops.store(s.interface_drops, Relaxed);
        self.fill_ring_empty.store(s.fill_ring_empty, Relaxed);
        self.duplicates.store(s.duplicates, Relaxed);
        self.out_of_order.store(s.out_of_order, Relaxed);
        self.snaplen_cut.store(s.snaplen_cut, Relaxed);
        self.oversize.store(s.oversize, Relaxed);
        self.over_mtu.store(s.over_mtu, Relaxed);
    }
    /// The current values.
    pub fn load(&self) -> SourceStats {
        SourceStats {
            kernel_drops: self.kernel_drops.load(Relaxed),
            interface_drops: self.interface_drops.load(Relaxed),
            fill_ring_empty: self.fill_ring_empty.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            out_of_order: self.out_of_order.load(Relaxed),
            snaplen_cut: self.snaplen_cut.load(Relaxed),
            oversize: self.oversize.load(Relaxed),
            over_mtu: self.over_mtu.load(Relaxed),
        }
    }
}

/// Per-worker part of a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerSnapshot {
    /// Frames delivered to the worker.
    pub packets: u64,
    /// Wire bytes delivered.
    pub bytes: u64,
    /// Batches consumed.
    pub batches: u64,
    /// Frames this worker's thread dissected.
    pub dissected: u64,
}

/// A plain copy of all counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// Frames read from the source.
    pub source_packets: u64,
    /// Frames the kernel dropped (the headline drop count; the same as
    /// `source.kernel_drops`).
    pub kernel_drops: u64,
    /// The source's own counts (kernel drops, duplicates, oversize frames...).
    pub source: SourceStats,
    /// Ring-full drops.
    pub ring_full_drops: u64,
    /// Parallel pcap walk: wrong chunk resynchronisations that were redone.
    pub resyncs_fixed: u64,
    /// Frames delivered to workers (sum).
    pub packets: u64,
    /// Wire bytes delivered (sum).
    pub bytes: u64,
    /// Frames cut by the snaplen inside their IP packet.
    pub truncated: u64,
    /// Frames without IP.
    pub non_ip: u64,
    /// Parse errors by [`ParseError::index`].
    pub parse_errors: [u64; ParseError::COUNT],
    /// Per worker.
    pub workers: Vec<WorkerSnapshot>,
}

impl Default for CountersSnapshot {
    fn default() -> Self {
        CountersSnapshot {
            source_packets: 0,
            kernel_drops: 0,
            source: SourceStats::default(),
            ring_full_drops: 0,
            resyncs_fixed: 0,
            packets: 0,
            bytes: 0,
            truncated: 0,
            non_ip: 0,
            parse_errors: [0; ParseError::COUNT],
            workers: Vec::new(),
        }
    }
}

impl CountersSnapshot {
    /// The count of one parse error.
    pub fn parse_error(&self, e: ParseError) -> u64 {
        self.parse_errors[e.index()]
    }
    /// Parse errors summed per layer (index = `Layer as usize`).
    pub fn parse_errors_by_layer(&self) -> [u64; Layer::COUNT] {
        let mut out = [0; Layer::COUNT];
        for (i, v) in self.parse_errors.iter().enumerate() {
            out[i / ErrorKind::COUNT] += v;
        }
        out
    }
    /// Total parse errors.
    pub fn parse_errors_total(&self) -> u64 {
        self.parse_errors.iter().sum()
    }
}

/// Thread-local accumulator, published into a [`StageCounters`] once per batch.
#[derive(Debug)]
pub(crate) struct Local {
    pub packets: u64,
    pub bytes: u64,
    pub batches: u64,
    pub dissected: u64,
    pub truncated: u64,
    pub non_ip: u64,
    pub errors: [u32; ParseError::COUNT],
    pub any_error: bool,
}

impl Default for Local {
    fn default() -> Self {
        Local {
            packets: 0,
            bytes: 0,
            batches: 0,
            dissected: 0,
            truncated: 0,
            non_ip: 0,
            errors: [0; ParseError::COUNT],
            any_error: false,
        }
    }
}

impl Local {
    #[inline(always)]
    pub fn count_dissection(&mut self, d: &crate::packet::Dissection) {
        self.dissected += 1;
        if let Some(e) = d.stop {
            self.errors[e.index()] += 1;
            self.any_error = true;
        }
        self.truncated += u64::from(d.truncated);
        self.non_ip += u64::from(d.ip_version == 0);
    }

    pub fn publish(&mut self, c: &StageCounters) {
        fn add(a: &AtomicU64, v: &mut u64) {
            if *v != 0 {
                a.fetch_add(*v, Relaxed);
                *v = 0;
            }
        }
        add(&c.packets, &mut self.packets);
        add(&c.bytes, &mut self.bytes);
        add(&c.batches, &mut self.batches);
        add(&c.dissected, &mut self.dissected);
        add(&c.truncated, &mut self.truncated);
        add(&c.non_ip, &mut self.non_ip);
        if self.any_error {
            for (a, v) in c.parse_errors.iter().zip(self.errors.iter_mut()) {
                if *v != 0 {
                    a.fetch_add(u64::from(*v), Relaxed);
                    *v = 0;
                }
            }
            self.any_error = false;
        }
    }
}
