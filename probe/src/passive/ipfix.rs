//! Flow records as IPFIX (RFC 7011) to the collectors operators already run (nfdump's
//! `nfcapd`, pmacct's `nfacctd`, nProbe and YAF users' tools): biflows with RFC 5103 reverse
//! elements, or two uniflows per flow, and an options record with the metering process's
//! losses.
//!
//! Targets are written `ipfix://HOST:PORT` (UDP), `ipfix+udp://HOST:PORT` or
//! `ipfix+tcp://HOST:PORT`. Over UDP, templates are resent every minute (RFC 7011 §8.4) and
//! messages fit a 1,500-byte path; over TCP, templates go once per connection.
//!
//! | element (IANA id) | biflow record | uniflow record |
//! |---|---|---|
//! | sourceIPv4/IPv6Address (8/27), destination… (12/28) | initiator, responder | sender, receiver |
//! | sourceTransportPort (7), destinationTransportPort (11), protocolIdentifier (4) | | |
//! | flowStartMilliseconds (152), flowEndMilliseconds (153) | whole record | that direction |
//! | octetDeltaCount (1), packetDeltaCount (2) | forward; reverse with PEN 29305 | that direction |
//! | tcpControlBits (6) | forward; reverse with PEN 29305 | that direction |
//! | vlanId (58), icmpTypeCodeIPv4/IPv6 (32/139), flowEndReason (136), biflowDirection (239) | | |
//!
//! Octets are IP octets (the sum of IP total lengths), as in the Parquet files. The options
//! template (scope observationDomainId, 149) carries ignoredPacketTotalCount (164: frames the
//! capture lost: kernel, driver and ring drops), notSentFlowTotalCount (166: records that could
//! not be exported), observedFlowTotalCount (163) and exportedFlowRecordTotalCount (42).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::time::{SystemTime, UNIX_EPOCH};

use mplane_capture::flow::KeyKind;
use mplane_export::ipfix::{
    Encoder, FieldSpec, IpfixError, RecordWriter, TcpExporter, Template, UdpExporter, ie,
};

use super::meter::RecordSink;
use super::record::{DirRecord, EndReason, FlowRecord};

/// Where IPFIX goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpfixTarget {
    /// UDP to this collector.
    Udp(SocketAddr),
    /// TCP to this collector.
    Tcp(SocketAddr),
}

impl IpfixTarget {
    /// Parses `ipfix://HOST:PORT`, `ipfix+udp://HOST:PORT` or `ipfix+tcp://HOST:PORT`.
    pub fn parse(s: &str) -> Result<IpfixTarget, String> {
        let (tcp, rest) = if let Some(r) = s.strip_prefix("ipfix+tcp://") {
            (true, r)
        } else if let Some(r) = s
            .strip_prefix("ipfix+udp://")
            .or_else(|| s.strip_prefix("ipfix://"))
        {
            (false, r)
        } else {
            return Err(format!(
                "{s}: expected ipfix://HOST:PORT or ipfix+tcp://HOST:PORT"
            ));
        };
        let rest = rest.trim_end_matches('/');
        let addr = rest
            .to_socket_addrs()
            .map_err(|e| format!("{s}: {e}"))?
            .next()
            .ok_or_else(|| format!("{s}: no address"))?;
        Ok(if tcp {
            IpfixTarget::Tcp(addr)
        } else {
            IpfixTarget::Udp(addr)
        })
    }

    /// As written in configuration.
    pub fn url(&self) -> String {
        match self {
            IpfixTarget::Udp(a) => format!("ipfix://{a}"),
            IpfixTarget::Tcp(a) => format!("ipfix+tcp://{a}"),
        }
    }
}

const T_BI4: u16 = 256;
const T_BI6: u16 = 257;
const T_UNI4: u16 = 258;
const T_UNI6: u16 = 259;
const T_OPTIONS: u16 = 260;

fn common(v6: bool) -> Vec<FieldSpec> {
    let f = FieldSpec::iana;
    let (s, d, l) = if v6 {
        (ie::SOURCE_IPV6_ADDRESS, ie::DESTINATION_IPV6_ADDRESS, 16)
    } else {
        (ie::SOURCE_IPV4_ADDRESS, ie::DESTINATION_IPV4_ADDRESS, 4)
    };
    vec![
        f(s, l),
        f(d, l),
        f(ie::SOURCE_TRANSPORT_PORT, 2),
        f(ie::DESTINATION_TRANSPORT_PORT, 2),
        f(ie::PROTOCOL_IDENTIFIER, 1),
        f(ie::FLOW_START_MILLISECONDS, 8),
        f(ie::FLOW_END_MILLISECONDS, 8),
        f(ie::OCTET_DELTA_COUNT, 8),
        f(ie::PACKET_DELTA_COUNT, 8),
        f(ie::TCP_CONTROL_BITS, 2),
    ]
}

/// vlanId, icmpTypeCodeIPv4 or IPv6, flowEndReason.
fn tail(v6: bool) -> Vec<FieldSpec> {
    let f = FieldSpec::iana;
    vec![
        f(58, 2),
        f(if v6 { 139 } else { 32 }, 2),
        f(ie::FLOW_END_REASON, 1),
    ]
}

/// The templates: biflow and uniflow, IPv4 and IPv6, and the options template.
pub fn templates() -> Result<Vec<Template>, IpfixError> {
    let mut out = Vec::new();
    for (id, v6) in [(T_BI4, false), (T_BI6, true)] {
        let mut fs = common(v6);
        fs.extend([
            FieldSpec::iana(ie::OCTET_DELTA_COUNT, 8).reverse(),
            FieldSpec::iana(ie::PACKET_DELTA_COUNT, 8).reverse(),
            FieldSpec::iana(ie::TCP_CONTROL_BITS, 2).reverse(),
            FieldSpec::iana(ie::BIFLOW_DIRECTION, 1),
        ]);
        fs.extend(tail(v6));
        out.push(Template::new(id, fs)?);
    }
    for (id, v6) in [(T_UNI4, false), (T_UNI6, true)] {
        let mut fs = common(v6);
        fs.extend(tail(v6));
        out.push(Template::new(id, fs)?);
    }
    out.push(Template::options(
        T_OPTIONS,
        1,
        vec![
            FieldSpec::iana(149, 4),
            FieldSpec::iana(164, 8),
            FieldSpec::iana(166, 8),
            FieldSpec::iana(163, 8),
            FieldSpec::iana(42, 8),
        ],
    )?);
    Ok(out)
}

/// RFC 5102 flowEndReason.
fn end_reason(e: EndReason) -> u64 {
    match e {
        EndReason::Idle => 1,
        EndReason::Active | EndReason::Window => 2,
        EndReason::Fin | EndReason::Rst => 3,
        EndReason::Shutdown => 4,
        EndReason::Evicted => 5,
    }
}

fn ms(ns: u64) -> u64 {
    ns / 1_000_000
}

fn v4(a: IpAddr) -> Ipv4Addr {
    match a {
        IpAddr::V4(a) => a,
        IpAddr::V6(a) => a.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    }
}

fn v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => a.to_ipv6_mapped(),
    }
}

fn addr(w: &mut RecordWriter<'_>, a: IpAddr, is6: bool) -> Result<(), IpfixError> {
    if is6 {
        w.ipv6(v6(a))?;
    } else {
        w.ipv4(v4(a))?;
    }
    Ok(())
}

fn icmp_code(r: &FlowRecord) -> u64 {
    if matches!(r.kind(), KeyKind::IcmpError | KeyKind::IcmpOther) {
        u64::from(r.key.icmp_type) << 8 | u64::from(r.key.icmp_code)
    } else {
        0
    }
}

/// Writes `r` into `enc`: one biflow record, or one uniflow record per direction that has
/// packets. Returns the records written.
pub fn encode(enc: &mut Encoder, r: &FlowRecord, biflow: bool) -> Result<u32, IpfixError> {
    let is6 = r.key.ip_version == 6;
    let (src, dst) = (r.source(), r.destination());
    if biflow {
        enc.record(if is6 { T_BI6 } else { T_BI4 }, |w| {
            addr(w, src.0, is6)?;
            addr(w, dst.0, is6)?;
            w.unsigned(u64::from(src.1))?
                .unsigned(u64::from(dst.1))?
                .unsigned(u64::from(r.key.protocol))?
                .unsigned(ms(r.first_ns()))?
                .unsigned(ms(r.last_ns()))?
                .unsigned(r.fwd.ip_octets)?
                .unsigned(r.fwd.packets)?
                .unsigned(u64::from(r.fwd.tcp_flags))?
                .unsigned(r.bwd.ip_octets)?
                .unsigned(r.bwd.packets)?
                .unsigned(u64::from(r.bwd.tcp_flags))?
                .unsigned(1)? // biflowDirection: initiator
                .unsigned(u64::from(r.key.vlans[0] & 0x0fff))?
                .unsigned(icmp_code(r))?
                .unsigned(end_reason(r.end))?;
            Ok(())
        })?;
        return Ok(1);
    }
    let mut n = 0;
    for (d, (from, to)) in [(&r.fwd, (src, dst)), (&r.bwd, (dst, src))] {
        if d.packets == 0 {
            continue;
        }
        uniflow(enc, r, d, from, to, is6)?;
        n += 1;
    }
    Ok(n)
}

fn uniflow(
    enc: &mut Encoder,
    r: &FlowRecord,
    d: &DirRecord,
    from: (IpAddr, u16),
    to: (IpAddr, u16),
    is6: bool,
) -> Result<(), IpfixError> {
    enc.record(if is6 { T_UNI6 } else { T_UNI4 }, |w| {
        addr(w, from.0, is6)?;
        addr(w, to.0, is6)?;
        w.unsigned(u64::from(from.1))?
            .unsigned(u64::from(to.1))?
            .unsigned(u64::from(r.key.protocol))?
            .unsigned(ms(d.first_ns))?
            .unsigned(ms(d.last_ns))?
            .unsigned(d.ip_octets)?
            .unsigned(d.packets)?
            .unsigned(u64::from(d.tcp_flags))?
            .unsigned(u64::from(r.key.vlans[0] & 0x0fff))?
            .unsigned(icmp_code(r))?
            .unsigned(end_reason(r.end))?;
        Ok(())
    })
}

/// Losses reported in the options record.
pub type Losses = std::sync::Arc<dyn Fn() -> (u64, u64) + Send + Sync>;

enum Exporter {
    Udp(UdpExporter),
    Tcp(TcpExporter),
}

impl Exporter {
    fn encoder(&mut self) -> &mut Encoder {
        match self {
            Exporter::Udp(x) => &mut x.encoder,
            Exporter::Tcp(x) => &mut x.encoder,
        }
    }
    fn flush(&mut self) -> Result<usize, IpfixError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as u32);
        match self {
            Exporter::Udp(x) => x.flush(now),
            Exporter::Tcp(x) => x.flush(now),
        }
    }
}

/// A [`RecordSink`] sending IPFIX to a collector. See the module doc.
pub struct IpfixRecords {
    exporter: Exporter,
    target: IpfixTarget,
    biflow: bool,
    domain: u32,
    losses: Option<Losses>,
    pending: u32,
    /// Flows handed to this sink.
    pub flows: u64,
    /// IPFIX data records written.
    pub records: u64,
    /// Flows that could not be sent (encoding or socket errors).
    pub not_sent: u64,
    /// The last error, if any.
    pub last_error: Option<String>,
}

impl std::fmt::Debug for IpfixRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpfixRecords")
            .field("target", &self.target)
            .field("records", &self.records)
            .finish_non_exhaustive()
    }
}

/// Messages worth of records encoded before they are sent.
const SEND_EVERY: u32 = 64;

impl IpfixRecords {
    /// Connects to `target`; `domain` is the observation domain, `losses` reports
    /// (packets lost by the capture, records lost before export) for the options record.
    pub fn connect(
        target: &IpfixTarget,
        domain: u32,
        biflow: bool,
        losses: Option<Losses>,
    ) -> Result<IpfixRecords, IpfixError> {
        let mut exporter = match target {
            IpfixTarget::Udp(a) => Exporter::Udp(UdpExporter::connect(a, domain)?),
            IpfixTarget::Tcp(a) => Exporter::Tcp(TcpExporter::connect(a, domain)?),
        };
        for t in templates()? {
            exporter.encoder().add_template(t)?;
        }
        Ok(IpfixRecords {
            exporter,
            target: target.clone(),
            biflow,
            domain,
            losses,
            pending: 0,
            flows: 0,
            records: 0,
            not_sent: 0,
            last_error: None,
        })
    }

    /// The target.
    pub fn target(&self) -> &IpfixTarget {
        &self.target
    }

    fn send(&mut self) {
        if let Err(e) = self.exporter.flush() {
            self.not_sent += u64::from(self.pending);
            self.last_error = Some(e.to_string());
        }
        self.pending = 0;
    }

    /// Writes the options record with the losses so far and sends everything.
    pub fn report_losses(&mut self) {
        let (ignored, lost) = self.losses.as_ref().map_or((0, 0), |f| f());
        let (domain, flows, records, not_sent) =
            (self.domain, self.flows, self.records, self.not_sent);
        let r = self.exporter.encoder().record(T_OPTIONS, |w| {
            w.unsigned(u64::from(domain))?
                .unsigned(ignored)?
                .unsigned(not_sent + lost)?
                .unsigned(flows)?
                .unsigned(records)?;
            Ok(())
        });
        if let Err(e) = r {
            self.last_error = Some(e.to_string());
        }
        self.send();
    }
}

impl RecordSink for IpfixRecords {
    fn record(&mut self, rec: &FlowRecord, _name: &[u8]) {
        self.flows += 1;
        match encode(self.exporter.encoder(), rec, self.biflow) {
            Ok(n) => {
                self.records += u64::from(n);
                self.pending += 1;
            }
            Err(e) => {
                self.not_sent += 1;
                self.last_error = Some(e.to_string());
            }
        }
        if self.pending >= SEND_EVERY {
            self.send();
        }
    }
    fn flush(&mut self, _watermark_ns: u64) {
        if self.pending > 0 {
            self.send();
        }
    }
    fn finish(&mut self) {
        self.report_losses();
    }
}

/// Two sinks fed with the same records (e.g. Parquet files and an IPFIX collector).
#[derive(Debug)]
pub struct Tee<A, B>(pub A, pub B);

impl<A: RecordSink, B: RecordSink> RecordSink for Tee<A, B> {
    fn record(&mut self, rec: &FlowRecord, name: &[u8]) {
        self.0.record(rec, name);
        self.1.record(rec, name);
    }
    fn flush(&mut self, w: u64) {
        self.0.flush(w);
        self.1.flush(w);
    }
    fn cut_done(&mut self, c: u64) {
        self.0.cut_done(c);
        self.1.cut_done(c);
    }
    fn iface(&mut self, until: u64, stats: super::iface::IfaceStats) {
        self.1.iface(until, stats.clone());
        self.0.iface(until, stats);
    }
    fn finish(&mut self) {
        self.0.finish();
        self.1.finish();
    }
}

/// A sink that takes nothing (the other half of an optional [`Tee`]).
#[derive(Debug, Default)]
pub struct NoSink;

impl RecordSink for NoSink {
    fn record(&mut self, _rec: &FlowRecord, _name: &[u8]) {}
}

/// Either sink.
#[derive(Debug)]
pub enum Either<A, B> {
    /// The first.
    A(A),
    /// The second.
    B(B),
}

impl<A: RecordSink, B: RecordSink> RecordSink for Either<A, B> {
    fn record(&mut self, rec: &FlowRecord, name: &[u8]) {
        match self {
            Either::A(a) => a.record(rec, name),
            Either::B(b) => b.record(rec, name),
        }
    }
    fn flush(&mut self, w: u64) {
        match self {
            Either::A(a) => a.flush(w),
            Either::B(b) => b.flush(w),
        }
    }
    fn cut_done(&mut self, c: u64) {
        match self {
            Either::A(a) => a.cut_done(c),
            Either::B(b) => b.cut_done(c),
        }
    }
    fn iface(&mut self, until: u64, stats: super::iface::IfaceStats) {
        match self {
            Either::A(a) => a.iface(until, stats),
            Either::B(b) => b.iface(until, stats),
        }
    }
    fn finish(&mut self) {
        match self {
            Either::A(a) => a.finish(),
            Either::B(b) => b.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mplane_capture::builder::Builder;
    use mplane_capture::flow::FlowKey;
    use mplane_capture::packet::{LinkType, dissect};
    use mplane_export::ipfix::Decoder;

    #[test]
    fn targets() {
        assert_eq!(
            IpfixTarget::parse("ipfix://127.0.0.1:4739").unwrap(),
            IpfixTarget::Udp("127.0.0.1:4739".parse().unwrap())
        );
        assert_eq!(
            IpfixTarget::parse("ipfix+tcp://[::1]:4739/").unwrap().url(),
            "ipfix+tcp://[::1]:4739"
        );
        assert!(IpfixTarget::parse("http://x:1").is_err());
        assert!(IpfixTarget::parse("ipfix://nohost").is_err());
    }

    #[test]
    fn biflow_and_uniflow_records_decode() {
        let f = Builder::ethernet()
            .ipv4([10, 0, 0, 1], [192, 0, 2, 1])
            .tcp(1000, 80, 1, 0, 2)
            .build();
        let (key, _) = FlowKey::from_dissection(&dissect(LinkType::ETHERNET, &f)).unwrap();
        let r = FlowRecord {
            key,
            fwd: DirRecord {
                packets: 3,
                ip_octets: 300,
                first_ns: 5_000_000,
                last_ns: 9_000_000,
                tcp_flags: 0x12,
                ..DirRecord::EMPTY
            },
            bwd: DirRecord {
                packets: 2,
                ip_octets: 120,
                first_ns: 6_000_000,
                last_ns: 8_000_000,
                ..DirRecord::EMPTY
            },
            end: EndReason::Fin,
            ..FlowRecord::default()
        };
        let mut e = Encoder::new(1, 1400);
        for t in templates().unwrap() {
            e.add_template(t).unwrap();
        }
        assert_eq!(encode(&mut e, &r, true).unwrap(), 1);
        assert_eq!(encode(&mut e, &r, false).unwrap(), 2);
        let mut d = Decoder::new();
        for m in e.template_messages() {
            d.decode(&m).unwrap();
        }
        let msgs = e.take_messages();
        let recs: Vec<_> = msgs
            .iter()
            .flat_map(|m| d.decode(m).unwrap().records)
            .collect();
        assert_eq!(recs.len(), 3);
        let bi = &recs[0];
        assert_eq!(bi.template, T_BI4);
        assert_eq!(bi.values[0], [10, 0, 0, 1]);
        assert_eq!(bi.unsigned(5), Some(5), "start ms");
        assert_eq!(bi.unsigned(6), Some(9), "end ms");
        assert_eq!(bi.unsigned(7), Some(300));
        assert_eq!(bi.unsigned(11), Some(2), "reverse packets");
        assert_eq!(bi.unsigned(16), Some(3), "end of flow detected");
        let back = &recs[2];
        assert_eq!(
            back.values[0],
            [192, 0, 2, 1],
            "the reverse uniflow's sender"
        );
        assert_eq!(back.unsigned(8), Some(2));
    }
}
