//! Passive measurements as mPlane capabilities (`module = passive`).
//!
//! One `[module_*]` section describes one capture source; its capabilities all run as
//! subscriptions on that source's one shared pipeline ([`PassiveSource`]):
//!
//! | label | rows | parameters |
//! |---|---|---|
//! | `flows-ip4`, `flows-ip6` | one per flow active in the window, counters within it | `observer.interface`, `flow.filter` |
//! | `tstat-log_tcp_complete-core`, `…-core-ip6` | TCP flows opened by a SYN, tstat's columns | `System_ID` |
//! | `interface-summary` | one: protocols, size and inter-arrival distributions, busiest second | `observer.interface` |
//! | `interface-rates` | one per second | `observer.interface` |
//! | `interface-toptalkers-ip4`, `-ip6` | the addresses that sent the most octets | `observer.interface`, `talkers.max` |
//! | `flows-export` | one per file written (URL, format, rows, bytes) | `observer.interface`, `flow.filter`, `export.target` |
//!
//! All take `when = now ... future`: a specification gives the window (`now + 1m`, an
//! absolute range, or `repeat … { now + 1m }` for consecutive windows; flows open at a window's
//! end are cut with end reason `window` and continue in the next). An open-ended window runs
//! until interrupted. Every result carries, as metadata, the window's drop counters
//! (`capture.drops.*`, `flows.evicted`, …), the clock of its timestamps (`capture.clock`) and
//! the source (`capture.source`).
//!
//! Flow results hold at most `inline_rows` rows (default 10,000): beyond that the rows with
//! the most octets are inline, every row is written to a Parquet file in the export
//! directory, and the result's metadata gives `result.rows.total`, `result.rows.inline` and the
//! file's `export.url`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use mplane::config::ModuleConfig;
use mplane::model::{ModelError, Statement, StatementKind};
use mplane::registry::Registries;
use mplane::scheduler::{JobContext, Outcome, Service};
use mplane::value::{TimeValue, Timestamp, Value};
use mplane::when::When;
use mplane_capture::source::SourceSpec;
use mplane_export::{ExportSchema, ExportThread, FileMetadata, Sink, SinkConfig};

use super::ServiceError;
use crate::passive::app::AppConfig;
use crate::passive::columns::{ColumnContext, FlowColumns};
use crate::passive::export::{Delivery, ParquetRecords};
use crate::passive::filter::FlowFilter;
use crate::passive::hub::{Collected, PassiveConfig, PassiveSource};
use crate::passive::ipfix::{IpfixRecords, IpfixTarget};
use crate::passive::meter::RecordSink;
use crate::passive::metrics::ExportTotals;
use crate::passive::record::FlowRecord;
use crate::passive::source::clock_of;
use crate::registry::{self, PROBE_REGISTRY_URI};

/// Result columns of `flows-ip4` (the `-ip6` twin has `.ip6` addresses). No time column may
/// be empty: the reference SDK cannot read an empty time cell.
pub const FLOW_COLUMNS: &[&str] = &[
    "flow.start",
    "start",
    "end",
    "duration.ms",
    "flow.end.reason",
    "ip.protocol",
    "source.ip4",
    "source.port",
    "destination.ip4",
    "destination.port",
    "vlan.outer",
    "vlan.inner",
    "packets.forward",
    "packets.backward",
    "octets.ip.forward",
    "octets.ip.backward",
    "bytes.forward",
    "bytes.backward",
    "tcp.flags.forward",
    "tcp.flags.backward",
    "packets.forward.rxmit",
    "packets.backward.rxmit",
    "packets.forward.outseq",
    "packets.backward.outseq",
    "source.ttl.min",
    "destination.ttl.min",
    "rtt.handshake.source.ms",
    "rtt.handshake.destination.ms",
    "rtt.forward.average.ms",
    "rtt.backward.average.ms",
    "application.protocol",
    "dns.qname",
    "dns.qtype",
    "dns.rcode",
    "ssl.hello.client",
    "request.hostname",
    "quic.hello.client",
];

/// The result columns of tstat's `log_tcp_complete-core` capability, in tstat's order.
pub const TSTAT_CORE_COLUMNS: &[&str] = &[
    "source.ip4",
    "source.port",
    "packets.forward",
    "packets.forward.syn",
    "packets.forward.fin",
    "packets.forward.rst",
    "packets.forward.ack",
    "packets.forward.pure_ack",
    "packets.forward.with_payload",
    "packets.forward.rxmit",
    "packets.forward.outseq",
    "bytes.forward",
    "bytes.forward.unique",
    "bytes.forward.rxmit",
    "destination.ip4",
    "destination.port",
    "packets.backward",
    "packets.backward.syn",
    "packets.backward.fin",
    "packets.backward.rst",
    "packets.backward.ack",
    "packets.backward.pure_ack",
    "packets.backward.with_payload",
    "packets.backward.rxmit",
    "packets.backward.outseq",
    "bytes.backward",
    "bytes.backward.unique",
    "bytes.backward.rxmit",
    "start",
    "end",
    "duration.ms",
    "source.TTFP.ms",
    "destination.TTFP.ms",
    "source.TTLP.ms",
    "destination.TTLP.ms",
    "source.TTFA.ms",
    "destination.TTFA.ms",
    "source.ip4.isinternal",
    "destination.ip4.isinternal",
    "tstat.flow.class.conn",
    "tstat.flow.class.p2p",
    "tstat.flow.class.http",
];

/// Result columns of `interface-summary`.
pub const SUMMARY_COLUMNS: &[&str] = &[
    "start",
    "end",
    "packets.ip",
    "octets.frame",
    "packets.ip4",
    "octets.ip4",
    "packets.ip6",
    "octets.ip6",
    "packets.tcp",
    "octets.tcp",
    "packets.udp",
    "octets.udp",
    "packets.icmp",
    "octets.icmp",
    "packets.other",
    "octets.other",
    "packets.nonip",
    "flows.new",
    "flows.active",
    "packet.size.bytes.min",
    "packet.size.bytes.mean",
    "packet.size.bytes.50pct",
    "packet.size.bytes.90pct",
    "packet.size.bytes.99pct",
    "packet.size.bytes.max",
    "iat.us.min",
    "iat.us.mean",
    "iat.us.50pct",
    "iat.us.90pct",
    "iat.us.99pct",
    "iat.us.max",
    "packets.rate.max",
    "octets.rate.max",
    "bandwidth.imputed.bps.max",
];

/// Result columns of `flows-export`: one row per file written (or per IPFIX collector).
pub const EXPORT_COLUMNS: &[&str] = &["export.url", "export.format", "export.rows", "export.bytes"];

/// Result columns of `interface-rates`.
pub const RATE_COLUMNS: &[&str] = &[
    "time",
    "packets.ip",
    "octets.frame",
    "bandwidth.imputed.bps",
];

/// Settings of a `module = passive` section beyond the source's.
#[derive(Debug, Clone)]
pub struct PassiveModule {
    /// The source and its pipeline settings.
    pub pipeline: PassiveConfig,
    /// `System_ID` of tstat-compatible capabilities and metadata.
    pub system_id: String,
    /// Most rows in an inline flow result.
    pub inline_rows: usize,
    /// Where over-size results are written (`None`: inline rows only).
    pub export_dir: Option<PathBuf>,
    /// URL under which `export_dir` is downloadable (`…/export/`).
    pub export_url: Option<String>,
}

/// What a capability computes.
#[derive(Debug, Clone)]
enum Kind {
    Flows { cols: FlowColumns, family: u8 },
    Tstat { cols: FlowColumns, family: u8 },
    Summary,
    Rates,
    Talkers { family: u8 },
    Export,
}

/// One passive capability bound to the module's shared source.
pub struct PassiveService {
    cap: Statement,
    kind: Kind,
    module: Arc<PassiveModule>,
    source: PassiveSource,
    regs: Arc<Registries>,
    exports: Arc<ExportTotals>,
}

/// A passive module's services and what they share.
pub struct PassiveServices {
    /// One per capability.
    pub services: Vec<Arc<dyn Service>>,
    /// The capture source (one pipeline for all of them).
    pub source: PassiveSource,
    /// What their export jobs wrote.
    pub exports: Arc<ExportTotals>,
}

impl std::fmt::Debug for PassiveServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassiveServices")
            .field("services", &self.services.len())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for PassiveService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassiveService")
            .field("label", &self.cap.label)
            .finish_non_exhaustive()
    }
}

fn family_cols(cols: &[&str], family: u8) -> Vec<String> {
    cols.iter()
        .map(|c| {
            if family == 6 {
                c.replace(".ip4", ".ip6")
            } else {
                (*c).to_string()
            }
        })
        .collect()
}

fn capability(
    label: &str,
    params: &[(&str, String)],
    results: &[String],
    m: &PassiveModule,
    regs: &Registries,
) -> Result<Statement, ModelError> {
    let mut cap = Statement::new(StatementKind::Capability, "measure");
    cap.registry = Some(PROBE_REGISTRY_URI.into());
    cap.label = Some(label.into());
    cap.set_when(When::parse("now ... future").map_err(|e| ModelError::Invalid(e.to_string()))?);
    cap.add_metadata(
        "System_type",
        &Value::String("mplane-rs probe".into()),
        regs,
    )?;
    cap.add_metadata("System_ID", &Value::String(m.system_id.clone()), regs)?;
    cap.add_metadata(
        "System_version",
        &Value::String(env!("CARGO_PKG_VERSION").into()),
        regs,
    )?;
    cap.add_metadata(
        "capture.clock",
        &Value::String(clock_of(&m.pipeline.source).into()),
        regs,
    )?;
    cap.add_metadata(
        "capture.source",
        &Value::String(source_text(&m.pipeline.source)),
        regs,
    )?;
    for (p, c) in params {
        cap.add_parameter(p, c, regs)?;
    }
    for r in results {
        cap.add_result_column(r, regs)?;
    }
    cap.token = Some(cap.default_token());
    Ok(cap)
}

/// A source as written in configuration.
pub fn source_text(s: &SourceSpec) -> String {
    s.to_string()
}

/// The capabilities of `module`, and the capture source they share.
pub fn services(
    module: PassiveModule,
    regs: Arc<Registries>,
) -> Result<PassiveServices, ModelError> {
    let module = Arc::new(module);
    let source = PassiveSource::new(module.pipeline.clone());
    let exports = Arc::new(ExportTotals::default());
    let iface = module.pipeline.interface.clone();
    let iface_p = ("observer.interface", iface.clone());
    let filter_p = ("flow.filter", "*".to_string());
    let mut out: Vec<Arc<dyn Service>> = Vec::new();
    let mut add = |label: String, params: Vec<(&str, String)>, results: Vec<String>, kind: Kind| {
        let cap = capability(&label, &params, &results, &module, &regs)?;
        out.push(Arc::new(PassiveService {
            cap,
            kind,
            module: module.clone(),
            source: source.clone(),
            regs: regs.clone(),
            exports: exports.clone(),
        }));
        Ok::<(), ModelError>(())
    };
    for family in [4u8, 6] {
        let cols = family_cols(FLOW_COLUMNS, family);
        let fc = FlowColumns::new(&cols).map_err(|e| ModelError::Invalid(e.to_string()))?;
        add(
            format!("flows-ip{family}"),
            vec![iface_p.clone(), filter_p.clone()],
            cols,
            Kind::Flows { cols: fc, family },
        )?;
    }
    for family in [4u8, 6] {
        let cols = family_cols(TSTAT_CORE_COLUMNS, family);
        let fc = FlowColumns::new(&cols).map_err(|e| ModelError::Invalid(e.to_string()))?;
        let label = if family == 4 {
            "tstat-log_tcp_complete-core".to_string()
        } else {
            "tstat-log_tcp_complete-core-ip6".to_string()
        };
        add(
            label,
            vec![("System_ID", module.system_id.clone())],
            cols,
            Kind::Tstat { cols: fc, family },
        )?;
    }
    add(
        "interface-summary".into(),
        vec![iface_p.clone()],
        SUMMARY_COLUMNS.iter().map(|s| s.to_string()).collect(),
        Kind::Summary,
    )?;
    add(
        "interface-rates".into(),
        vec![iface_p.clone()],
        RATE_COLUMNS.iter().map(|s| s.to_string()).collect(),
        Kind::Rates,
    )?;
    add(
        "flows-export".into(),
        vec![
            iface_p.clone(),
            filter_p.clone(),
            ("export.target", "*".into()),
        ],
        EXPORT_COLUMNS.iter().map(|s| s.to_string()).collect(),
        Kind::Export,
    )?;
    for family in [4u8, 6] {
        add(
            format!("interface-toptalkers-ip{family}"),
            vec![iface_p.clone(), ("talkers.max", "1 ... 1000".into())],
            vec![
                "talker.rank".into(),
                format!("source.ip{family}"),
                "octets.ip".into(),
                "packets.ip".into(),
                "flows".into(),
            ],
            Kind::Talkers { family },
        )?;
    }
    Ok(PassiveServices {
        services: out,
        source,
        exports,
    })
}

fn ns_of(t: Timestamp) -> u64 {
    (t.as_micros().max(0) as u64).saturating_mul(1000)
}

fn ts_of(ns: u64) -> Timestamp {
    Timestamp::from_micros((ns / 1000).min(i64::MAX as u64) as i64)
}

fn now_ts() -> Timestamp {
    mplane::component::now()
}

impl PassiveService {
    /// The window of a run: from the (sub-)specification's start (now if it started) to its
    /// end (`u64::MAX` if open-ended).
    fn window(&self, spec: &Statement, ctx: &JobContext) -> (u64, u64) {
        let now = now_ts();
        let (start, end) = spec.when().datetimes(now);
        let start = start.map_or(now, |s| s.max(now));
        let end = ctx.end.or(end);
        (ns_of(start), end.map_or(u64::MAX, ns_of))
    }

    fn metadata(&self, res: &mut Statement, c: &Collected) -> Result<(), String> {
        for (name, v) in c.drops.elements() {
            res.add_metadata(name, &Value::Natural(v), &self.regs)
                .map_err(|e| e.to_string())?;
        }
        // what the open source does, where the capability could only say what it expected
        if let Some(clock) = c.clock {
            res.add_metadata("capture.clock", &Value::String(clock.into()), &self.regs)
                .map_err(|e| e.to_string())?;
        }
        if let Some(o) = &c.offloads {
            res.add_metadata("capture.offloads", &Value::String(o.clone()), &self.regs)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn flows(
        &self,
        spec: &Statement,
        c: &Collected,
        cols: &FlowColumns,
        keep: impl Fn(&FlowRecord) -> bool,
    ) -> Outcome {
        let ctx = &self.module.pipeline.context;
        let mut rows: Vec<&(FlowRecord, Vec<u8>)> =
            c.flows.iter().filter(|(r, _)| keep(r)).collect();
        let total = rows.len();
        let mut res = spec.result_for();
        set_window(&mut res, c);
        self.metadata(&mut res, c)?;
        let limit = self.module.inline_rows;
        if total > limit {
            let url = self.export_rows(spec, cols, &rows, ctx)?;
            rows.sort_by_key(|(r, _)| std::cmp::Reverse(r.ip_octets()));
            rows.truncate(limit);
            rows.sort_by_key(|(r, _)| (r.first_ns(), r.key));
            res.add_metadata(
                "result.rows.total",
                &Value::Natural(total as u64),
                &self.regs,
            )
            .map_err(|e| e.to_string())?;
            res.add_metadata(
                "result.rows.inline",
                &Value::Natural(limit as u64),
                &self.regs,
            )
            .map_err(|e| e.to_string())?;
            if let Some(url) = url {
                res.add_metadata("export.url", &Value::Url(url), &self.regs)
                    .map_err(|e| e.to_string())?;
            }
        }
        for (r, name) in rows {
            res.push_row(&cols.row(r, name, ctx))
                .map_err(|e| e.to_string())?;
        }
        Ok(res)
    }

    /// Writes every row of an over-size result to Parquet; returns its download URL.
    fn export_rows(
        &self,
        spec: &Statement,
        cols: &FlowColumns,
        rows: &[&(FlowRecord, Vec<u8>)],
        ctx: &ColumnContext,
    ) -> Result<Option<String>, String> {
        let Some(dir) = &self.module.export_dir else {
            return Ok(None);
        };
        let reg = registry::probe_registry().map_err(|e| e.to_string())?;
        let schema = Arc::new(
            ExportSchema::from_registry(&reg, &cols.elements())
                .map_err(|e| e.to_string())?
                .with_required(FlowColumns::is_required),
        );
        let job = spec
            .token
            .clone()
            .unwrap_or_else(|| spec.default_token())
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(32)
            .collect::<String>();
        let label = self.cap.label.clone().unwrap_or_default();
        let prefix = format!("{label}-{job}");
        let mut cfg = SinkConfig::new(dir.join(&prefix), prefix.clone());
        cfg.metadata = FileMetadata {
            specification: Some(mplane::model::Message::from(spec.clone()).unparse()),
            identity: Some(self.module.system_id.clone()),
            ..FileMetadata::default()
        };
        let mut sink = Sink::open(cfg, schema.clone()).map_err(|e| {
            self.exports.failed();
            format!("export: {e}")
        })?;
        let live = self.exports.started(sink.stats().clone());
        let written = self.write_rows(&mut sink, schema, cols, rows, ctx);
        let last = sink.stats().snapshot();
        let report = match written {
            Ok(()) => sink.finish(SystemTime::now()),
            Err(e) => {
                // the file in progress is never made visible; its rows are lost
                self.exports.ended(Some(live), &last);
                return Err(e);
            }
        };
        self.exports
            .ended(Some(live), report.as_ref().map_or(&last, |r| &r.stats));
        let report = report.map_err(|e| format!("export: {e}"))?;
        let file = report.files.first().ok_or("export: no file written")?;
        let rel = file
            .path
            .strip_prefix(dir)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(self
            .module
            .export_url
            .as_ref()
            .map(|base| format!("{}{rel}", base)))
    }

    /// The rows of an over-size result into `sink`, in batches of 8,192.
    fn write_rows(
        &self,
        sink: &mut Sink,
        schema: Arc<ExportSchema>,
        cols: &FlowColumns,
        rows: &[&(FlowRecord, Vec<u8>)],
        ctx: &ColumnContext,
    ) -> Result<(), String> {
        let mut b = mplane_export::ColumnsBuilder::new(schema, 8192);
        let now = SystemTime::now();
        for (r, name) in rows {
            cols.append(&mut b, r, name, ctx)
                .map_err(|e| e.to_string())?;
            if b.len() >= 8192 {
                let batch = b.finish().map_err(|e| e.to_string())?;
                sink.write(&batch, now)
                    .map_err(|e| format!("export: {e}"))?;
            }
        }
        if !b.is_empty() {
            let batch = b.finish().map_err(|e| e.to_string())?;
            sink.write(&batch, now)
                .map_err(|e| format!("export: {e}"))?;
        }
        Ok(())
    }

    fn summary(&self, spec: &Statement, c: &Collected) -> Outcome {
        let s = &c.iface;
        let mut res = spec.result_for();
        set_window(&mut res, c);
        self.metadata(&mut res, c)?;
        let (start, end) = c.window;
        let new = c
            .flows
            .iter()
            .filter(|(r, _)| r.flow_start_ns >= start && r.flow_start_ns < end)
            .count() as u64;
        let nat = |v: u64| Some(Value::Natural(v));
        let real = |v: f64| Some(Value::Real(v));
        let q = |h: &hdrhistogram::Histogram<u64>, p: f64| {
            if h.is_empty() {
                None
            } else {
                Some(h.value_at_quantile(p))
            }
        };
        let size = |p: f64| q(&s.sizes, p).map(Value::Natural);
        let iat = |p: f64| q(&s.iat_ns, p).map(|v| Value::Real(v as f64 / 1000.0));
        let max = s.max_per_second();
        let row = vec![
            Some(Value::Time(TimeValue::At(ts_of(start)))),
            Some(Value::Time(TimeValue::At(ts_of(end)))),
            nat(s.ip4.packets + s.ip6.packets),
            nat(s.frames.octets),
            nat(s.ip4.packets),
            nat(s.ip4.octets),
            nat(s.ip6.packets),
            nat(s.ip6.octets),
            nat(s.tcp.packets),
            nat(s.tcp.octets),
            nat(s.udp.packets),
            nat(s.udp.octets),
            nat(s.icmp.packets),
            nat(s.icmp.octets),
            nat(s.other.packets),
            nat(s.other.octets),
            nat(s.non_ip.packets),
            nat(new),
            nat(c.flows.len() as u64),
            size(0.0),
            if s.sizes.is_empty() {
                None
            } else {
                real(s.sizes.mean())
            },
            size(0.5),
            size(0.9),
            size(0.99),
            size(1.0),
            iat(0.0),
            if s.iat_ns.is_empty() {
                None
            } else {
                real(s.iat_ns.mean() / 1000.0)
            },
            iat(0.5),
            iat(0.9),
            iat(0.99),
            iat(1.0),
            nat(max.packets),
            nat(max.octets),
            nat(max.octets * 8),
        ];
        res.push_row(&row).map_err(|e| e.to_string())?;
        Ok(res)
    }

    fn rates(&self, spec: &Statement, c: &Collected) -> Outcome {
        let mut res = spec.result_for();
        set_window(&mut res, c);
        self.metadata(&mut res, c)?;
        let (start, end) = c.window;
        for (sec, n) in &c.iface.per_second {
            let t = sec * 1_000_000_000;
            if t + 1_000_000_000 <= start || t >= end {
                continue;
            }
            res.push_row(&[
                Some(Value::Time(TimeValue::At(ts_of(t)))),
                Some(Value::Natural(n.packets)),
                Some(Value::Natural(n.octets)),
                Some(Value::Natural(n.octets * 8)),
            ])
            .map_err(|e| e.to_string())?;
        }
        Ok(res)
    }

    fn talkers(&self, spec: &Statement, c: &Collected, family: u8, max: usize) -> Outcome {
        let mut by: std::collections::HashMap<IpAddr, (u64, u64, u64)> = Default::default();
        for (r, _) in c.flows.iter().filter(|(r, _)| r.key.ip_version == family) {
            let (s, d) = (r.source().0, r.destination().0);
            if r.fwd.packets > 0 {
                let e = by.entry(s).or_default();
                e.0 += r.fwd.ip_octets;
                e.1 += r.fwd.packets;
                e.2 += 1;
            }
            if r.bwd.packets > 0 {
                let e = by.entry(d).or_default();
                e.0 += r.bwd.ip_octets;
                e.1 += r.bwd.packets;
                e.2 += 1;
            }
        }
        let mut v: Vec<(IpAddr, (u64, u64, u64))> = by.into_iter().collect();
        v.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(&b.0)));
        v.truncate(max);
        let mut res = spec.result_for();
        set_window(&mut res, c);
        self.metadata(&mut res, c)?;
        for (i, (a, (oct, pk, fl))) in v.into_iter().enumerate() {
            res.push_row(&[
                Some(Value::Natural(i as u64 + 1)),
                Some(Value::Address(a)),
                Some(Value::Natural(oct)),
                Some(Value::Natural(pk)),
                Some(Value::Natural(fl)),
            ])
            .map_err(|e| e.to_string())?;
        }
        Ok(res)
    }
}

/// Where a `flows-export` job writes.
enum Target {
    Parquet,
    Ipfix(IpfixTarget),
}

fn export_target(spec: &Statement) -> Result<Target, String> {
    let p = spec
        .parameter("export.target")
        .map(|e| e.text().into_owned())
        .unwrap_or_default();
    // the parameter names the target; the statement's own `export` (which the reference
    // client cannot send: it loses it when parsing) is honoured when the parameter is empty
    let t = if p.is_empty() || p == "*" {
        spec.export.clone().unwrap_or_else(|| "parquet".into())
    } else {
        p
    };
    if t == "parquet" {
        return Ok(Target::Parquet);
    }
    if t.starts_with("ipfix") {
        return IpfixTarget::parse(&t).map(Target::Ipfix);
    }
    Err(format!(
        "export.target {t:?}: expected parquet, ipfix://HOST:PORT or ipfix+tcp://HOST:PORT"
    ))
}

impl PassiveService {
    /// A `flows-export` job: records stream to Parquet files or an IPFIX collector while the
    /// window is open; the result lists what was written.
    fn export(
        &self,
        spec: &Statement,
        ctx: &JobContext,
        start: u64,
        end: u64,
        filter: FlowFilter,
    ) -> Outcome {
        let target = export_target(spec)?;
        let label = self.cap.label.clone().unwrap_or_default();
        let job: String = spec
            .token
            .clone()
            .unwrap_or_else(|| spec.default_token())
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(32)
            .collect();
        let pctx = Arc::new(self.module.pipeline.context.clone());
        let reg = registry::probe_registry().map_err(|e| e.to_string())?;
        // the writer exists before the subscription: a bad target fails at once
        let mut out = match &target {
            Target::Parquet => {
                let Some(root) = &self.module.export_dir else {
                    return Err("export.target parquet: this component has no export_dir".into());
                };
                let schema = Arc::new(
                    ExportSchema::from_registry(&reg, crate::passive::columns::FILE_COLUMNS)
                        .map_err(|e| e.to_string())?
                        .with_required(FlowColumns::is_required),
                );
                let mut cfg = SinkConfig::new(root.join(format!("{label}-{job}")), "flows");
                cfg.time_column = Some("start".into());
                // a page per batch of records: each is encoded as it arrives
                cfg.writer.data_page_rows = crate::passive::export::BATCH_ROWS;
                cfg.metadata = FileMetadata {
                    specification: Some(mplane::model::Message::from(spec.clone()).unparse()),
                    identity: Some(self.module.system_id.clone()),
                    extra: vec![(
                        "mplane.source".into(),
                        source_text(&self.module.pipeline.source),
                    )],
                    ..FileMetadata::default()
                };
                let src = self.source.clone();
                cfg.drop_counters = Some(Arc::new(move || {
                    src.current_drops()
                        .elements()
                        .iter()
                        .map(|(k, v)| (k.to_string(), *v))
                        .collect()
                }));
                let thread = ExportThread::spawn(cfg, schema.clone(), 4).map_err(|e| {
                    self.exports.failed();
                    format!("export: {e}")
                })?;
                let tracked = self.exports.started(thread.handle().shared_stats());
                let sink = ParquetRecords::new(schema, pctx, thread.handle(), Delivery::Blocking)
                    .map_err(|e| e.to_string())?;
                Writer::Parquet(sink, thread, tracked)
            }
            Target::Ipfix(t) => Writer::Ipfix(
                IpfixRecords::connect(t, 1, true, None).map_err(|e| format!("{}: {e}", t.url()))?,
            ),
        };
        let sub = self
            .source
            .subscribe_stream(start, end, filter, None)
            .map_err(|e| e.to_string())?;
        let mut ended_early = false;
        loop {
            let done = self
                .source
                .wait_step(&sub, std::time::Duration::from_millis(200));
            for (r, name) in self.source.drain(&sub) {
                out.sink().record(&r, &name);
            }
            out.sink().flush(u64::MAX);
            if done {
                break;
            }
            if !ended_early && ctx.interrupt.is_set() {
                ended_early = true;
                self.source.finish_now(&sub);
            }
        }
        let c = self.source.take(&sub);
        let mut res = spec.result_for();
        set_window(&mut res, &c);
        self.metadata(&mut res, &c)?;
        match out {
            Writer::Parquet(mut sink, thread, tracked) => {
                sink.finish();
                drop(sink);
                let last = thread.handle().stats();
                let report = thread.finish();
                self.exports
                    .ended(Some(tracked), report.as_ref().map_or(&last, |r| &r.stats));
                let report = report.map_err(|e| format!("export: {e}"))?;
                if let Some(e) = report.errors.first() {
                    if report.files.is_empty() {
                        return Err(format!("export: {e}"));
                    }
                    tracing::warn!("export {label}-{job}: {e}");
                }
                let root = self.module.export_dir.clone().unwrap_or_default();
                for f in &report.files {
                    let rel = f
                        .path
                        .strip_prefix(&root)
                        .map(|p| p.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let url = match &self.module.export_url {
                        Some(base) => format!("{base}{rel}"),
                        None => format!("file://{}", f.path.display()),
                    };
                    res.push_row(&[
                        Some(Value::Url(url)),
                        Some(Value::String("parquet".into())),
                        Some(Value::Natural(f.rows)),
                        Some(Value::Natural(f.bytes)),
                    ])
                    .map_err(|e| e.to_string())?;
                }
            }
            Writer::Ipfix(mut x) => {
                x.finish();
                if let Some(e) = &x.last_error {
                    tracing::warn!("IPFIX {}: {e}", x.target().url());
                }
                res.push_row(&[
                    Some(Value::Url(x.target().url())),
                    Some(Value::String("ipfix".into())),
                    Some(Value::Natural(x.records)),
                    None,
                ])
                .map_err(|e| e.to_string())?;
            }
        }
        Ok(res)
    }
}

/// The writer of an export job.
enum Writer {
    /// The records' sink, its export thread, and its id in the module's [`ExportTotals`].
    Parquet(ParquetRecords, ExportThread, u64),
    Ipfix(IpfixRecords),
}

impl Writer {
    fn sink(&mut self) -> &mut dyn RecordSink {
        match self {
            Writer::Parquet(s, _, _) => s,
            Writer::Ipfix(x) => x,
        }
    }
}

fn set_window(res: &mut Statement, c: &Collected) {
    let (s, e) = c.window;
    let e = if e == u64::MAX { s } else { e };
    res.set_when(When::range(
        TimeValue::At(ts_of(s)),
        TimeValue::At(ts_of(e.max(s))),
    ));
}

impl Service for PassiveService {
    fn capability(&self) -> &Statement {
        &self.cap
    }

    fn run(&self, spec: &Statement, ctx: JobContext) -> Outcome {
        let filter = match spec.parameter("flow.filter") {
            Some(e) => {
                let t = e.text();
                let t = if t == "*" { "" } else { &t };
                FlowFilter::parse(t).map_err(|e| e.to_string())?
            }
            None => FlowFilter::default(),
        };
        let family = match &self.kind {
            Kind::Flows { family, .. } | Kind::Tstat { family, .. } | Kind::Talkers { family } => {
                Some(*family)
            }
            Kind::Summary | Kind::Rates | Kind::Export => None,
        };
        let (start, end) = self.window(spec, &ctx);
        if let Kind::Export = self.kind {
            return self.export(spec, &ctx, start, end, filter);
        }
        let sub = self
            .source
            .subscribe(start, end, filter, family)
            .map_err(|e| e.to_string())?;
        let c = self.source.wait(&sub, || ctx.interrupt.is_set());
        if let Some(e) = &c.error
            && c.flows.is_empty()
            && c.iface.frames.packets == 0
        {
            return Err(e.clone());
        }
        match &self.kind {
            Kind::Flows { cols, .. } => self.flows(spec, &c, cols, |_| true),
            Kind::Tstat { cols, .. } => self.flows(spec, &c, cols, |r| {
                r.key.protocol == 6 && (r.fwd.syn > 0 || r.bwd.syn > 0)
            }),
            Kind::Summary => self.summary(spec, &c),
            Kind::Rates => self.rates(spec, &c),
            Kind::Talkers { family } => {
                let max = match spec.parameter_value("talkers.max") {
                    Some(Value::Natural(n)) => n.clamp(1, 1000) as usize,
                    _ => 10,
                };
                self.talkers(spec, &c, *family, max)
            }
            Kind::Export => Err("export runs above".into()),
        }
    }
}

/// Reads a `[module_*]` section with `module = passive`.
pub fn from_kwargs(
    module: &ModuleConfig,
    regs: &Registries,
    export_url: Option<String>,
) -> Result<PassiveServices, ServiceError> {
    let bad = |key: &str, value: &str, reason: String| {
        ServiceError::bad_argument(module, key, value, reason)
    };
    let get = |k: &str| {
        module
            .kwargs
            .iter()
            .rev()
            .find(|s| s.key == k)
            .map(|s| s.value.trim().to_string())
    };
    let known = [
        "source",
        "interface",
        "workers",
        "cpus",
        "idle_timeout",
        "active_timeout",
        "max_flows",
        "dns",
        "tls_sni",
        "http_host",
        "quic_sni",
        "inline_rows",
        "export_dir",
        "system_id",
        "internal_networks",
        "bpf_filter",
        "buffer_size",
        "snaplen",
        "repeat",
        "dedup",
        "xdp_frames",
        "xdp_frame_size",
        "xdp_mode",
        "xdp_bind",
    ];
    for kw in &module.kwargs {
        if !known.contains(&kw.key.as_str()) {
            return Err(bad(
                &kw.key,
                &kw.value,
                format!("unexpected keyword argument (known: {})", known.join(", ")),
            ));
        }
    }
    let src_text = get("source").ok_or_else(|| {
        bad(
            "source",
            "",
            "missing: pcap:FILE, pcap-live:IFACE[,IFACE] or xdp:IFACE[:QUEUES]".into(),
        )
    })?;
    let spec: SourceSpec = src_text
        .parse()
        .map_err(|e: mplane_capture::source::SourceError| {
            bad("source", &src_text, e.to_string())
        })?;
    let default_iface = match &spec {
        SourceSpec::PcapFile(p) => p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        SourceSpec::PcapLive(i) => i.join(","),
        SourceSpec::Xdp { iface, .. } => iface.clone(),
    };
    let interface = get("interface").unwrap_or(default_iface);
    let mut p = PassiveConfig::new(spec, interface);
    let num = |k: &str, min: u64| -> Result<Option<u64>, ServiceError> {
        match get(k) {
            None => Ok(None),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n >= min => Ok(Some(n)),
                _ => Err(bad(k, &v, format!("expected a whole number ≥ {min}"))),
            },
        }
    };
    let onoff = |k: &str| -> Result<bool, ServiceError> {
        match get(k).as_deref() {
            None | Some("on" | "yes" | "true" | "1") => Ok(true),
            Some("off" | "no" | "false" | "0") => Ok(false),
            Some(v) => Err(bad(k, v, "expected on or off".into())),
        }
    };
    if let Some(n) = num("workers", 1)? {
        p.workers = n.min(256) as usize;
    }
    if let Some(v) = get("cpus") {
        let cpus: Result<Vec<usize>, _> = v.split(',').map(|c| c.trim().parse::<usize>()).collect();
        p.cpus =
            Some(cpus.map_err(|_| bad("cpus", &v, "expected a comma list of CPU numbers".into()))?);
    }
    if let Some(n) = num("idle_timeout", 1)? {
        p.meter.idle_timeout_ns = n * 1_000_000_000;
    }
    if let Some(n) = num("active_timeout", 1)? {
        p.meter.active_timeout_ns = n * 1_000_000_000;
    }
    if let Some(n) = num("max_flows", 1)? {
        p.meter.max_flows = n.min(1 << 30) as usize;
    }
    p.meter.app = AppConfig {
        dns: onoff("dns")?,
        tls_sni: onoff("tls_sni")?,
        http_host: onoff("http_host")?,
        quic_sni: onoff("quic_sni")?,
        ..AppConfig::default()
    };
    p.options.repeat = match get("repeat") {
        None => false,
        Some(_) => onoff("repeat")?,
    };
    p.options.live.filter = get("bpf_filter").filter(|s| !s.is_empty());
    if let Some(n) = num("buffer_size", 1 << 16)? {
        p.options.live.buffer_size = n.min(i32::MAX as u64) as i32;
    }
    if let Some(n) = num("snaplen", 64)? {
        p.options.live.snaplen = n.min(262_144) as i32;
    }
    if let Some(n) = num("dedup", 1)? {
        p.options.live.dedup_window = Some(std::time::Duration::from_micros(n));
    }
    #[cfg(feature = "xdp")]
    {
        use mplane_capture::source::xdp::{AttachMode, BindMode};
        if let Some(n) = num("xdp_frames", 64)? {
            p.options.xdp.frames = n.min(1 << 22) as u32;
        }
        if let Some(v) = get("xdp_frame_size") {
            p.options.xdp.frame_size = super::one_of(&v, &[("2048", 2048), ("4096", 4096)])
                .map_err(|r| bad("xdp_frame_size", &v, r))?;
        }
        if let Some(v) = get("xdp_mode") {
            let modes = [
                ("auto", AttachMode::Auto),
                ("native", AttachMode::Driver),
                ("generic", AttachMode::Skb),
            ];
            p.options.xdp.attach = super::one_of(&v, &modes).map_err(|r| bad("xdp_mode", &v, r))?;
        }
        if let Some(v) = get("xdp_bind") {
            let modes = [
                ("auto", BindMode::Auto),
                ("zero-copy", BindMode::ZeroCopy),
                ("copy", BindMode::Copy),
            ];
            p.options.xdp.bind = super::one_of(&v, &modes).map_err(|r| bad("xdp_bind", &v, r))?;
        }
    }
    if let Some(v) = get("internal_networks") {
        let mut nets = Vec::new();
        for part in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (a, l) = part.split_once('/').unwrap_or((part, ""));
            let a: IpAddr = a
                .parse()
                .map_err(|_| bad("internal_networks", part, "expected ADDR/LEN".into()))?;
            let max = if a.is_ipv4() { 32 } else { 128 };
            let l = if l.is_empty() {
                max
            } else {
                l.parse::<u8>()
                    .ok()
                    .filter(|&l| l <= max)
                    .ok_or_else(|| bad("internal_networks", part, "bad prefix length".into()))?
            };
            nets.push((a, l));
        }
        p.context.internal = nets;
    }
    let m = PassiveModule {
        pipeline: p,
        system_id: get("system_id").unwrap_or_else(|| "mplane-rs".into()),
        inline_rows: num("inline_rows", 1)?.unwrap_or(10_000) as usize,
        export_dir: get("export_dir").map(PathBuf::from),
        export_url,
    };
    let mut regs = regs.clone();
    if regs.get(PROBE_REGISTRY_URI).is_none() {
        regs.load_str(registry::PROBE_REGISTRY_JSON)
            .map_err(|e| bad("module", "passive", e.to_string()))?;
    }
    services(m, Arc::new(regs)).map_err(|source| ServiceError::Model {
        section: module.section.clone(),
        source,
    })
}

#[cfg(all(test, feature = "xdp"))]
mod tests {
    use super::*;
    use mplane_capture::source::xdp::{AttachMode, BindMode};

    fn module(keys: &[(&str, &str)]) -> ModuleConfig {
        crate::services::test_module("module_tap", "passive", keys)
    }

    #[test]
    fn xdp_settings_from_the_module_section() {
        let regs = crate::registry::registries().unwrap();
        let p = from_kwargs(
            &module(&[
                ("source", "xdp:eth1:2"),
                ("xdp_frames", "8192"),
                ("xdp_frame_size", "4096"),
                ("xdp_mode", "generic"),
                ("xdp_bind", "copy"),
            ]),
            &regs,
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let x = &p.source.config().options.xdp;
        assert_eq!(
            (x.frames, x.frame_size, x.attach, x.bind),
            (8192, 4096, AttachMode::Skb, BindMode::Copy)
        );
        let p = from_kwargs(&module(&[("source", "xdp:eth1")]), &regs, None).unwrap();
        let x = &p.source.config().options.xdp;
        assert_eq!((x.attach, x.bind), (AttachMode::Auto, BindMode::Auto));
        for (k, v, says) in [
            ("xdp_frame_size", "3000", "2048 or 4096"),
            ("xdp_mode", "driver", "auto, native or generic"),
            ("xdp_bind", "zerocopy", "auto, zero-copy or copy"),
            ("xdp_frames", "10", "≥ 64"),
        ] {
            let e = from_kwargs(&module(&[("source", "xdp:eth1"), (k, v)]), &regs, None)
                .err()
                .unwrap_or_else(|| panic!("{k} = {v} accepted"))
                .to_string();
            assert!(e.contains(k) && e.contains(says), "{k} = {v}: {e}");
        }
    }
}
