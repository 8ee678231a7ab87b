//! A passive module's counters as Prometheus metrics (`GET /metrics` of `mpcom`): what the
//! capture source and the pipeline saw and dropped, per worker and per parse error, and what
//! the flow meters made of it.
//!
//! Every sample carries `module` (`tap` for a `[module_tap]` section) and `interface`
//! (`observer.interface`). The pipeline runs while passive jobs need it; its counters start
//! from zero each time it starts (`mplane_capture_running` says whether it runs; Prometheus'
//! `rate` and `increase` take the reset in their stride). Reading them takes the hub's lock
//! for the time of a copy, never a lock of the data path.

use std::sync::{Arc, Mutex};

use mplane::metrics::{Exposition, MetricsSource};
use mplane_capture::packet::{ErrorKind, Layer, ParseError};
use mplane_export::{SinkStats, StatsSnapshot};

use super::hub::{HubStats, PassiveSource};

/// What a module's export jobs wrote: the totals of the jobs that ended, and the live
/// counters of those still writing. Taken at a job's start and end and at a scrape, never
/// per record.
#[derive(Debug, Default)]
pub struct ExportTotals {
    inner: Mutex<ExportAgg>,
}

#[derive(Debug, Default)]
struct ExportAgg {
    done: StatsSnapshot,
    live: Vec<(u64, Arc<SinkStats>)>,
    next: u64,
}

impl ExportTotals {
    fn lock(&self) -> std::sync::MutexGuard<'_, ExportAgg> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A job's writer started; its counters are read live until [`Self::ended`].
    pub fn started(&self, stats: Arc<SinkStats>) -> u64 {
        let mut g = self.lock();
        g.next += 1;
        let id = g.next;
        g.live.push((id, stats));
        id
    }

    /// A job's writer ended with these final counters (`id` from [`Self::started`], if it
    /// was tracked live).
    pub fn ended(&self, id: Option<u64>, last: &StatsSnapshot) {
        let mut g = self.lock();
        if let Some(id) = id {
            g.live.retain(|(i, _)| *i != id);
        }
        add(&mut g.done, last);
    }

    /// An export that failed before it had a writer (an unwritable directory, a full disk
    /// at the first file): one error.
    pub fn failed(&self) {
        self.lock().done.errors += 1;
    }

    /// Everything so far.
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = self.lock();
        let mut s = g.done;
        for (_, live) in &g.live {
            add(&mut s, &live.snapshot());
        }
        s
    }
}

fn add(a: &mut StatsSnapshot, b: &StatsSnapshot) {
    a.files_written += b.files_written;
    a.rows_written += b.rows_written;
    a.bytes_written += b.bytes_written;
    a.rows_dropped += b.rows_dropped;
    a.rows_lost += b.rows_lost;
    a.errors += b.errors;
    a.files_removed += b.files_removed;
    a.stale_tmp_removed += b.stale_tmp_removed;
}

/// The [`MetricsSource`] of one passive module.
#[derive(Clone)]
pub struct PassiveMetrics {
    module: String,
    interface: String,
    source: PassiveSource,
    exports: Arc<ExportTotals>,
}

impl std::fmt::Debug for PassiveMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassiveMetrics")
            .field("module", &self.module)
            .field("interface", &self.interface)
            .finish_non_exhaustive()
    }
}

impl PassiveMetrics {
    /// The metrics of `source` and of the module's exports, labelled with the module's name.
    pub fn new(
        module: impl Into<String>,
        source: PassiveSource,
        exports: Arc<ExportTotals>,
    ) -> PassiveMetrics {
        PassiveMetrics {
            module: module.into(),
            interface: source.config().interface.clone(),
            source,
            exports,
        }
    }
}

impl MetricsSource for PassiveMetrics {
    fn collect(&self, out: &mut Exposition) {
        let stats = self.source.stats();
        let base = [
            ("module", self.module.as_str()),
            ("interface", self.interface.as_str()),
        ];
        out.gauge(
            "mplane_capture_running",
            "1 while the capture pipeline runs (it runs while passive jobs need it).",
            &base,
            if stats.is_some() { 1.0 } else { 0.0 },
        );
        if let Some(s) = stats {
            write(out, &base, &s);
        }
        write_exports(out, &base, &self.exports.snapshot());
    }
}

fn write_exports(out: &mut Exposition, base: &[(&str, &str); 2], e: &StatsSnapshot) {
    let rows = [
        (
            "mplane_export_files_total",
            "Parquet files committed.",
            e.files_written,
        ),
        (
            "mplane_export_rows_total",
            "Rows in committed files.",
            e.rows_written,
        ),
        (
            "mplane_export_bytes_total",
            "Bytes of committed files.",
            e.bytes_written,
        ),
        (
            "mplane_export_errors_total",
            "Export errors (unwritable directory, full disk, ...): the files they hit were \
             never made visible.",
            e.errors,
        ),
        (
            "mplane_export_rows_lost_total",
            "Rows of files aborted by an error.",
            e.rows_lost,
        ),
        (
            "mplane_export_rows_dropped_total",
            "Rows dropped before the writer (its queue was full on a live capture).",
            e.rows_dropped,
        ),
        (
            "mplane_export_files_removed_total",
            "Files removed by retention (age or quota).",
            e.files_removed,
        ),
    ];
    for (name, help, v) in rows {
        out.counter(name, help, base, v);
    }
}

/// The module's labels and one more.
fn with<'a>(base: &[(&'a str, &'a str); 2], extra: (&'a str, &'a str)) -> [(&'a str, &'a str); 3] {
    [base[0], base[1], extra]
}

/// One counter family over the values of one more label.
fn labelled(
    out: &mut Exposition,
    name: &str,
    help: &str,
    base: &[(&str, &str); 2],
    label: &str,
    values: &[(&str, u64)],
) {
    for &(v, n) in values {
        out.counter(name, help, &with(base, (label, v)), n);
    }
}

fn write(out: &mut Exposition, base: &[(&str, &str); 2], s: &HubStats) {
    let c = &s.capture;
    let counter = |out: &mut Exposition, name: &str, help: &str, v: u64| {
        out.counter(name, help, base, v);
    };
    out.gauge(
        "mplane_passive_jobs",
        "Passive jobs (subscriptions) attached to the pipeline.",
        base,
        s.subscriptions as f64,
    );
    counter(
        out,
        "mplane_capture_source_frames_total",
        "Frames read from the capture source.",
        c.source_packets,
    );
    counter(
        out,
        "mplane_capture_frames_total",
        "Frames delivered to the pipeline's workers.",
        c.packets,
    );
    counter(
        out,
        "mplane_capture_bytes_total",
        "Wire bytes of the frames delivered to the workers.",
        c.bytes,
    );
    let drops = [
        ("kernel", c.source.kernel_drops),
        ("interface", c.source.interface_drops),
        ("ring_full", c.ring_full_drops),
        ("oversize", c.source.oversize),
    ];
    labelled(
        out,
        "mplane_capture_drops_total",
        "Frames lost, by where: the kernel's capture ring (kernel), the NIC or driver \
         before capture (interface), the pipeline's full rings (ring_full), frames larger \
         than a capture buffer (oversize).",
        base,
        "stage",
        &drops,
    );
    counter(
        out,
        "mplane_capture_fill_ring_empty_total",
        "AF_XDP: frames that found the fill ring empty (part of the kernel drops).",
        c.source.fill_ring_empty,
    );
    counter(
        out,
        "mplane_capture_duplicates_total",
        "Frames suppressed as duplicates (SPAN ports, when deduplication is on).",
        c.source.duplicates,
    );
    counter(
        out,
        "mplane_capture_out_of_order_total",
        "Frames of a merged source delivered older than one already delivered.",
        c.source.out_of_order,
    );
    counter(
        out,
        "mplane_capture_snaplen_cut_total",
        "Frames captured shorter than on the wire (snaplen).",
        c.source.snaplen_cut,
    );
    counter(
        out,
        "mplane_capture_over_mtu_total",
        "Frames longer than the interface MTU allows: GRO/LRO or TSO/GSO at work.",
        c.source.over_mtu,
    );
    counter(
        out,
        "mplane_capture_truncated_total",
        "Frames cut by the snaplen inside their IP packet.",
        c.truncated,
    );
    counter(
        out,
        "mplane_capture_non_ip_total",
        "Frames without IP (ARP, LLDP, ...).",
        c.non_ip,
    );
    for layer in Layer::ALL {
        for kind in ErrorKind::ALL {
            let n = c.parse_error(ParseError::new(layer, kind));
            if n > 0 {
                out.counter(
                    "mplane_capture_parse_errors_total",
                    "Frames whose dissection stopped, by layer and reason.",
                    &[
                        base[0],
                        base[1],
                        ("layer", layer.name()),
                        ("reason", kind.name()),
                    ],
                    n,
                );
            }
        }
    }
    for (i, w) in c.workers.iter().enumerate() {
        let worker = i.to_string();
        out.counter(
            "mplane_capture_worker_frames_total",
            "Frames delivered, by worker (their balance shows the flow hash's spread).",
            &with(base, ("worker", &worker)),
            w.packets,
        );
    }
    let m = &s.meter;
    counter(
        out,
        "mplane_flows_created_total",
        "Flows the meters created.",
        m.flows,
    );
    counter(
        out,
        "mplane_flow_records_total",
        "Flow records the meters emitted (a flow cut by a window gives one per window).",
        m.records,
    );
    out.gauge(
        "mplane_flows_live",
        "Flows in the meters' tables.",
        base,
        m.live_flows as f64,
    );
    counter(
        out,
        "mplane_flows_evicted_total",
        "Flows evicted because a table was full.",
        m.evicted,
    );
    counter(
        out,
        "mplane_flow_packets_untracked_total",
        "Packets not metered: a table was full and nothing could be evicted.",
        m.untracked,
    );
    counter(
        out,
        "mplane_flow_frames_without_flow_total",
        "Frames without an IP flow (non-IP, unparsable IP).",
        m.no_flow,
    );
    counter(
        out,
        "mplane_app_names_total",
        "Application names stored (DNS query names, TLS and QUIC server names, HTTP hosts).",
        m.app_names,
    );
    let lost = [
        ("arena_full", m.app_arena_full),
        ("reassembly_full", m.app_reassembly_full),
        ("reassembly_overflow", m.app_reassembly_overflow),
    ];
    labelled(
        out,
        "mplane_app_names_lost_total",
        "Application names not stored: the string arena was full (arena_full), every \
         ClientHello reassembly buffer was in use (reassembly_full), a ClientHello was \
         larger than a buffer (reassembly_overflow).",
        base,
        "reason",
        &lost,
    );
    counter(
        out,
        "mplane_quic_initials_decrypted_total",
        "QUIC Initial packets decrypted for their server name.",
        m.quic_decrypted,
    );
    let dropped = [
        ("queue_full", s.records_dropped),
        ("job_limit", s.job_overflow),
    ];
    labelled(
        out,
        "mplane_flow_records_dropped_total",
        "Flow records that did not reach their jobs: the collector's queue was full \
         (queue_full), a job held its maximum number of flows (job_limit).",
        base,
        "reason",
        &dropped,
    );
}
