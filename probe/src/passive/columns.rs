//! Flow records as result columns: one mapping from an mPlane element to a field of a
//! [`FlowRecord`], used for Arrow/Parquet files (through `mplane-export`'s
//! [`ColumnsBuilder`]) and for inline mPlane results alike, so both always agree.
//!
//! A column set is resolved once from element names ([`FlowColumns::new`]); per record each
//! column is one `match` arm producing a [`Cell`]. Values that do not apply are no value
//! (`*` in mPlane, null in Parquet): RTT statistics without samples, options without a SYN,
//! the other family's address column, DNS fields of a TLS flow. Counters that do not apply to
//! a protocol (SYN packets of a UDP flow) are 0.

use std::net::IpAddr;

use mplane::value::{TimeValue, Timestamp, Value};
use mplane_capture::flow::KeyKind;
use std::sync::Arc;

use mplane_export::arrow_array::types::{Float64Type, TimestampNanosecondType, UInt64Type};
use mplane_export::arrow_array::{
    ArrayRef, BooleanArray, PrimitiveArray, RecordBatch, StringArray,
};
use mplane_export::arrow_buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use mplane_export::builder::{MAX_ADDR_TEXT, addr_bytes};
use mplane_export::schema::TIME_ZONE;
use mplane_export::{ColumnsBuilder, ExportError, ExportSchema};

use super::record::{AppKind, DirRecord, FlowRecord, NO_TIME_US, RttStats};

/// One value of a column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    /// `natural`.
    U64(u64),
    /// `real`.
    F64(f64),
    /// `boolean`.
    Bool(bool),
    /// `time`, ns since the epoch.
    Time(u64),
    /// `address`.
    Addr(IpAddr),
    /// `string`.
    Str(&'a str),
    /// No value.
    Null,
}

impl Cell<'_> {
    /// The mPlane value (`None` = no value). Times lose their sub-µs part (mPlane times have
    /// microsecond resolution).
    pub fn to_value(self) -> Option<Value> {
        Some(match self {
            Cell::U64(v) => Value::Natural(v),
            Cell::F64(v) => Value::Real(v),
            Cell::Bool(v) => Value::Boolean(v),
            Cell::Time(ns) => Value::Time(TimeValue::At(Timestamp::from_micros(
                (ns / 1000).min(i64::MAX as u64) as i64,
            ))),
            Cell::Addr(a) => Value::Address(a),
            Cell::Str(s) => Value::String(s.to_string()),
            Cell::Null => return None,
        })
    }
}

/// Context a few columns need beyond the record.
#[derive(Debug, Clone, Default)]
pub struct ColumnContext {
    /// Name of the observation point (`observer.interface`).
    pub interface: String,
    /// Internal networks for `*.ip4.isinternal` (address, prefix length).
    pub internal: Vec<(IpAddr, u8)>,
}

impl ColumnContext {
    /// The default internal networks: RFC 1918, RFC 6598 (shared address space), loopback,
    /// link-local, and IPv6 unique-local and link-local.
    pub fn default_internal() -> Vec<(IpAddr, u8)> {
        [
            ("10.0.0.0", 8),
            ("172.16.0.0", 12),
            ("192.168.0.0", 16),
            ("100.64.0.0", 10),
            ("127.0.0.0", 8),
            ("169.254.0.0", 16),
            ("fc00::", 7),
            ("fe80::", 10),
            ("::1", 128),
        ]
        .iter()
        .filter_map(|(a, l)| Some((a.parse().ok()?, *l)))
        .collect()
    }

    fn is_internal(&self, a: IpAddr) -> bool {
        self.internal
            .iter()
            .any(|&(net, len)| in_prefix(a, net, len))
    }
}

/// `true` when `a` lies in `net/len` (same family).
pub fn in_prefix(a: IpAddr, net: IpAddr, len: u8) -> bool {
    match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let len = u32::from(len.min(32));
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let len = u32::from(len.min(128));
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

macro_rules! fields {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// A flow record field, by the element that names it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum FlowField { $(
            #[doc = concat!("`", $name, "`")]
            $variant,
        )* }

        impl FlowField {
            /// Every field.
            pub const ALL: &'static [FlowField] = &[$(FlowField::$variant),*];
            /// The element name.
            pub const fn element(self) -> &'static str {
                match self { $(FlowField::$variant => $name,)* }
            }
            /// The field named by `element`.
            pub fn from_element(element: &str) -> Option<FlowField> {
                match element { $($name => Some(FlowField::$variant),)* _ => None }
            }
        }

        mplane_export::dispatched! {
        /// Appends field `field` of each record to `b`. Each arm calls [`FlowField::cell`]
        /// with a constant field, so the per-cell `match` folds away and every column is a
        /// loop of its own (compiled for AVX2/BMI2 too, where a null's bit is one `shlx`).
        fn extend_column(
            field: FlowField,
            b: &mut TypedBuilder,
            recs: &[FlowRecord],
            names: &[u8],
            ctx: &ColumnContext,
        ) -> Result<(), mplane::registry::Primitive> {
            match field { $(
                FlowField::$variant => {
                    b.extend(recs, |r| FlowField::$variant.cell(r, r.app.name.get(names), ctx))
                }
            )* }
        }
        }
    };
}

fields! {
    Start => "start",
    End => "end",
    DurationMs => "duration.ms",
    Time => "time",
    FlowStart => "flow.start",
    EndReason => "flow.end.reason",
    Interface => "observer.interface",
    SourceIp => "source.ip",
    DestinationIp => "destination.ip",
    SourceIp4 => "source.ip4",
    DestinationIp4 => "destination.ip4",
    SourceIp6 => "source.ip6",
    DestinationIp6 => "destination.ip6",
    SourcePort => "source.port",
    DestinationPort => "destination.port",
    IpVersion => "ip.version",
    IpProtocol => "ip.protocol",
    VlanOuter => "vlan.outer",
    VlanInner => "vlan.inner",
    TunnelType => "tunnel.type",
    TunnelId => "tunnel.id",
    IcmpType => "icmp.type",
    IcmpCode => "icmp.code",
    PacketsIp => "packets.ip",
    OctetsIp => "octets.ip",
    PacketsFwd => "packets.forward",
    PacketsBwd => "packets.backward",
    OctetsIpFwd => "octets.ip.forward",
    OctetsIpBwd => "octets.ip.backward",
    BytesFwd => "bytes.forward",
    BytesBwd => "bytes.backward",
    BytesUniqueFwd => "bytes.forward.unique",
    BytesUniqueBwd => "bytes.backward.unique",
    BytesRxmitFwd => "bytes.forward.rxmit",
    BytesRxmitBwd => "bytes.backward.rxmit",
    StartFwd => "start.forward",
    EndFwd => "end.forward",
    StartBwd => "start.backward",
    EndBwd => "end.backward",
    FlagsFwd => "tcp.flags.forward",
    FlagsBwd => "tcp.flags.backward",
    SynFwd => "packets.forward.syn",
    FinFwd => "packets.forward.fin",
    RstFwd => "packets.forward.rst",
    AckFwd => "packets.forward.ack",
    PureAckFwd => "packets.forward.pure_ack",
    PayloadPktsFwd => "packets.forward.with_payload",
    RxmitFwd => "packets.forward.rxmit",
    OutseqFwd => "packets.forward.outseq",
    SynBwd => "packets.backward.syn",
    FinBwd => "packets.backward.fin",
    RstBwd => "packets.backward.rst",
    AckBwd => "packets.backward.ack",
    PureAckBwd => "packets.backward.pure_ack",
    PayloadPktsBwd => "packets.backward.with_payload",
    RxmitBwd => "packets.backward.rxmit",
    OutseqBwd => "packets.backward.outseq",
    SrcTtlMin => "source.ttl.min",
    SrcTtlMax => "source.ttl.max",
    DstTtlMin => "destination.ttl.min",
    DstTtlMax => "destination.ttl.max",
    SrcReordering => "source.reordering",
    DstReordering => "destination.reordering",
    SrcNetDup => "source.net_dup",
    DstNetDup => "destination.net_dup",
    SrcZeroWin => "source.window.zero",
    DstZeroWin => "destination.window.zero",
    SrcMss => "source.MSS.bytes",
    DstMss => "destination.MSS.bytes",
    SrcWinScale => "source.win_scale",
    DstWinScale => "destination.win_scale",
    SrcWs => "source.RFC1323.ws",
    DstWs => "destination.RFC1323.ws",
    SrcTs => "source.RFC1323.ts",
    DstTs => "destination.RFC1323.ts",
    SrcSack => "source.SACK_set",
    DstSack => "destination.SACK_set",
    SrcTtfp => "source.TTFP.ms",
    DstTtfp => "destination.TTFP.ms",
    SrcTtlp => "source.TTLP.ms",
    DstTtlp => "destination.TTLP.ms",
    SrcTtfa => "source.TTFA.ms",
    DstTtfa => "destination.TTFA.ms",
    SrcInternal => "source.ip4.isinternal",
    DstInternal => "destination.ip4.isinternal",
    SrcInternal6 => "source.ip6.isinternal",
    DstInternal6 => "destination.ip6.isinternal",
    HsSource => "rtt.handshake.source.ms",
    HsDestination => "rtt.handshake.destination.ms",
    RttFwdMin => "rtt.forward.min.ms",
    RttFwdAvg => "rtt.forward.average.ms",
    RttFwdMax => "rtt.forward.max.ms",
    RttFwdStd => "rtt.forward.stddev.ms",
    RttFwdN => "rtt.forward.samples",
    RttBwdMin => "rtt.backward.min.ms",
    RttBwdAvg => "rtt.backward.average.ms",
    RttBwdMax => "rtt.backward.max.ms",
    RttBwdStd => "rtt.backward.stddev.ms",
    RttBwdN => "rtt.backward.samples",
    TstatRttAvg => "rtt.average.ms",
    TstatRttMin => "rtt.min.ms",
    TstatRttMax => "rtt.max.ms",
    TstatRttStd => "rtt.stddev",
    TstatRttN => "rtt.samples",
    TstatTtlMin => "ttl.min",
    TstatTtlMax => "ttl.max",
    ClassConn => "tstat.flow.class.conn",
    ClassP2p => "tstat.flow.class.p2p",
    ClassHttp => "tstat.flow.class.http",
    AppProtocol => "application.protocol",
    DnsQname => "dns.qname",
    DnsQtype => "dns.qtype",
    DnsRcode => "dns.rcode",
    TlsSni => "ssl.hello.client",
    HttpHost => "request.hostname",
    QuicSni => "quic.hello.client",
}

const NS_PER_MS: f64 = 1e6;

fn ms(ns: u64) -> f64 {
    ns as f64 / NS_PER_MS
}

fn rel_ms(us: u32) -> Cell<'static> {
    if us == NO_TIME_US {
        Cell::Null
    } else {
        Cell::F64(f64::from(us) / 1000.0)
    }
}

fn rtt(s: &RttStats, which: u8) -> Cell<'static> {
    if s.count == 0 {
        return if which == 4 { Cell::U64(0) } else { Cell::Null };
    }
    match which {
        0 => Cell::F64(ms(u64::from(s.min_ns))),
        1 => s.mean_ns().map_or(Cell::Null, |m| Cell::F64(m / NS_PER_MS)),
        2 => Cell::F64(ms(u64::from(s.max_ns))),
        3 => s
            .stddev_ns()
            .map_or(Cell::Null, |m| Cell::F64(m / NS_PER_MS)),
        _ => Cell::U64(u64::from(s.count)),
    }
}

fn opt_syn<'a>(d: &DirRecord, f: impl FnOnce(&DirRecord) -> Cell<'a>) -> Cell<'a> {
    if d.options.syn_seen { f(d) } else { Cell::Null }
}

fn name_str(name: &[u8]) -> &str {
    // the engine stores names in presentation form (printable ASCII and escapes), so this
    // never fails; the empty name is only a guard
    std::str::from_utf8(name).unwrap_or("")
}

impl FlowField {
    /// `true` when the field may have no value (see [`FlowField::cell`]); every other field
    /// always has one, so files declare it `REQUIRED`.
    pub fn nullable(self) -> bool {
        use FlowField as F;
        matches!(
            self,
            F::SourceIp4
                | F::DestinationIp4
                | F::SourceIp6
                | F::DestinationIp6
                | F::TunnelType
                | F::IcmpType
                | F::IcmpCode
                | F::StartFwd
                | F::EndFwd
                | F::StartBwd
                | F::EndBwd
                | F::SrcTtlMin
                | F::SrcTtlMax
                | F::DstTtlMin
                | F::DstTtlMax
                | F::TstatTtlMin
                | F::TstatTtlMax
                | F::SrcMss
                | F::DstMss
                | F::SrcWinScale
                | F::DstWinScale
                | F::SrcWs
                | F::DstWs
                | F::SrcTs
                | F::DstTs
                | F::SrcSack
                | F::DstSack
                | F::SrcTtfp
                | F::DstTtfp
                | F::SrcTtlp
                | F::DstTtlp
                | F::SrcTtfa
                | F::DstTtfa
                | F::HsSource
                | F::HsDestination
                | F::RttFwdMin
                | F::RttFwdAvg
                | F::RttFwdMax
                | F::RttFwdStd
                | F::RttBwdMin
                | F::RttBwdAvg
                | F::RttBwdMax
                | F::RttBwdStd
                | F::TstatRttAvg
                | F::TstatRttMin
                | F::TstatRttMax
                | F::TstatRttStd
                | F::ClassConn
                | F::ClassP2p
                | F::ClassHttp
                | F::AppProtocol
                | F::DnsQname
                | F::DnsQtype
                | F::DnsRcode
                | F::TlsSni
                | F::HttpHost
                | F::QuicSni
        )
    }

    /// The value of this field for `r` (`name` is the record's application string).
    #[inline(always)]
    pub fn cell<'a>(self, r: &FlowRecord, name: &'a [u8], ctx: &'a ColumnContext) -> Cell<'a> {
        use FlowField as F;
        let (f, b) = (&r.fwd, &r.bwd);
        let v4 = r.key.ip_version == 4;
        let app = |k: AppKind| -> Cell<'a> {
            if r.app.kind == k && !name.is_empty() {
                Cell::Str(name_str(name))
            } else {
                Cell::Null
            }
        };
        let icmpish = matches!(r.kind(), KeyKind::IcmpError | KeyKind::IcmpOther);
        match self {
            F::Start => Cell::Time(r.first_ns()),
            F::End => Cell::Time(r.last_ns()),
            F::DurationMs => Cell::U64(r.last_ns().saturating_sub(r.first_ns()) / 1_000_000),
            F::Time => Cell::Time(r.first_ns()),
            F::FlowStart => Cell::Time(r.flow_start_ns),
            F::EndReason => Cell::Str(r.end.name()),
            F::Interface => Cell::Str(&ctx.interface),
            F::SourceIp => Cell::Addr(r.source().0),
            F::DestinationIp => Cell::Addr(r.destination().0),
            F::SourceIp4 => {
                if v4 {
                    Cell::Addr(r.source().0)
                } else {
                    Cell::Null
                }
            }
            F::DestinationIp4 => {
                if v4 {
                    Cell::Addr(r.destination().0)
                } else {
                    Cell::Null
                }
            }
            F::SourceIp6 => {
                if v4 {
                    Cell::Null
                } else {
                    Cell::Addr(r.source().0)
                }
            }
            F::DestinationIp6 => {
                if v4 {
                    Cell::Null
                } else {
                    Cell::Addr(r.destination().0)
                }
            }
            F::SourcePort => Cell::U64(u64::from(r.source().1)),
            F::DestinationPort => Cell::U64(u64::from(r.destination().1)),
            F::IpVersion => Cell::U64(u64::from(r.key.ip_version)),
            F::IpProtocol => Cell::U64(u64::from(r.key.protocol)),
            F::VlanOuter => Cell::U64(u64::from(r.key.vlans[0])),
            F::VlanInner => Cell::U64(u64::from(r.key.vlans[1])),
            F::TunnelType => Cell::Str(match r.tunnel() {
                mplane_capture::packet::TunnelKind::None => return Cell::Null,
                mplane_capture::packet::TunnelKind::Gre => "gre",
                mplane_capture::packet::TunnelKind::Vxlan => "vxlan",
                mplane_capture::packet::TunnelKind::Gtpu => "gtpu",
                mplane_capture::packet::TunnelKind::IpInIp => "ipip",
            }),
            F::TunnelId => Cell::U64(u64::from(r.key.tunnel_id)),
            F::IcmpType => {
                if icmpish {
                    Cell::U64(u64::from(r.key.icmp_type))
                } else {
                    Cell::Null
                }
            }
            F::IcmpCode => {
                if icmpish {
                    Cell::U64(u64::from(r.key.icmp_code))
                } else {
                    Cell::Null
                }
            }
            F::PacketsIp => Cell::U64(r.packets()),
            F::OctetsIp => Cell::U64(r.ip_octets()),
            F::PacketsFwd => Cell::U64(f.packets),
            F::PacketsBwd => Cell::U64(b.packets),
            F::OctetsIpFwd => Cell::U64(f.ip_octets),
            F::OctetsIpBwd => Cell::U64(b.ip_octets),
            F::BytesFwd => Cell::U64(f.payload_octets),
            F::BytesBwd => Cell::U64(b.payload_octets),
            F::BytesUniqueFwd => Cell::U64(f.unique_octets()),
            F::BytesUniqueBwd => Cell::U64(b.unique_octets()),
            F::BytesRxmitFwd => Cell::U64(f.rxmit_octets),
            F::BytesRxmitBwd => Cell::U64(b.rxmit_octets),
            F::StartFwd => {
                if f.packets > 0 {
                    Cell::Time(f.first_ns)
                } else {
                    Cell::Null
                }
            }
            F::EndFwd => {
                if f.packets > 0 {
                    Cell::Time(f.last_ns)
                } else {
                    Cell::Null
                }
            }
            F::StartBwd => {
                if b.packets > 0 {
                    Cell::Time(b.first_ns)
                } else {
                    Cell::Null
                }
            }
            F::EndBwd => {
                if b.packets > 0 {
                    Cell::Time(b.last_ns)
                } else {
                    Cell::Null
                }
            }
            F::FlagsFwd => Cell::U64(u64::from(f.tcp_flags)),
            F::FlagsBwd => Cell::U64(u64::from(b.tcp_flags)),
            F::SynFwd => Cell::U64(u64::from(f.syn)),
            F::FinFwd => Cell::U64(u64::from(f.fin)),
            F::RstFwd => Cell::U64(u64::from(f.rst)),
            F::AckFwd => Cell::U64(u64::from(f.ack)),
            F::PureAckFwd => Cell::U64(u64::from(f.pure_ack)),
            F::PayloadPktsFwd => Cell::U64(u64::from(f.with_payload)),
            F::RxmitFwd => Cell::U64(u64::from(f.rxmit_packets)),
            F::OutseqFwd => Cell::U64(u64::from(f.out_of_sequence)),
            F::SynBwd => Cell::U64(u64::from(b.syn)),
            F::FinBwd => Cell::U64(u64::from(b.fin)),
            F::RstBwd => Cell::U64(u64::from(b.rst)),
            F::AckBwd => Cell::U64(u64::from(b.ack)),
            F::PureAckBwd => Cell::U64(u64::from(b.pure_ack)),
            F::PayloadPktsBwd => Cell::U64(u64::from(b.with_payload)),
            F::RxmitBwd => Cell::U64(u64::from(b.rxmit_packets)),
            F::OutseqBwd => Cell::U64(u64::from(b.out_of_sequence)),
            F::SrcTtlMin | F::TstatTtlMin => ttl(f, f.ttl_min),
            F::SrcTtlMax | F::TstatTtlMax => ttl(f, f.ttl_max),
            F::DstTtlMin => ttl(b, b.ttl_min),
            F::DstTtlMax => ttl(b, b.ttl_max),
            F::SrcReordering => Cell::U64(u64::from(f.reordered)),
            F::DstReordering => Cell::U64(u64::from(b.reordered)),
            F::SrcNetDup => Cell::U64(u64::from(f.duplicates)),
            F::DstNetDup => Cell::U64(u64::from(b.duplicates)),
            F::SrcZeroWin => Cell::U64(u64::from(f.zero_window)),
            F::DstZeroWin => Cell::U64(u64::from(b.zero_window)),
            F::SrcMss => opt_syn(f, |d| Cell::U64(u64::from(d.options.mss))),
            F::DstMss => opt_syn(b, |d| Cell::U64(u64::from(d.options.mss))),
            F::SrcWinScale => opt_syn(f, |d| {
                d.options
                    .wscale
                    .map_or(Cell::Null, |w| Cell::U64(u64::from(w)))
            }),
            F::DstWinScale => opt_syn(b, |d| {
                d.options
                    .wscale
                    .map_or(Cell::Null, |w| Cell::U64(u64::from(w)))
            }),
            F::SrcWs => opt_syn(f, |d| Cell::Bool(d.options.wscale.is_some())),
            F::DstWs => opt_syn(b, |d| Cell::Bool(d.options.wscale.is_some())),
            F::SrcTs => opt_syn(f, |d| Cell::Bool(d.options.timestamps)),
            F::DstTs => opt_syn(b, |d| Cell::Bool(d.options.timestamps)),
            F::SrcSack => opt_syn(f, |d| Cell::Bool(d.options.sack_permitted)),
            F::DstSack => opt_syn(b, |d| Cell::Bool(d.options.sack_permitted)),
            F::SrcTtfp => rel_ms(f.first_payload_us),
            F::DstTtfp => rel_ms(b.first_payload_us),
            F::SrcTtlp => rel_ms(f.last_payload_us),
            F::DstTtlp => rel_ms(b.last_payload_us),
            F::SrcTtfa => rel_ms(f.first_ack_us),
            F::DstTtfa => rel_ms(b.first_ack_us),
            F::SrcInternal | F::SrcInternal6 => Cell::Bool(ctx.is_internal(r.source().0)),
            F::DstInternal | F::DstInternal6 => Cell::Bool(ctx.is_internal(r.destination().0)),
            F::HsSource => r
                .handshake_initiator_ns
                .map_or(Cell::Null, |n| Cell::F64(ms(n))),
            F::HsDestination => r
                .handshake_responder_ns
                .map_or(Cell::Null, |n| Cell::F64(ms(n))),
            F::RttFwdMin | F::TstatRttMin => rtt(&f.rtt, 0),
            F::RttFwdAvg | F::TstatRttAvg => rtt(&f.rtt, 1),
            F::RttFwdMax | F::TstatRttMax => rtt(&f.rtt, 2),
            F::RttFwdStd | F::TstatRttStd => rtt(&f.rtt, 3),
            F::RttFwdN | F::TstatRttN => rtt(&f.rtt, 4),
            F::RttBwdMin => rtt(&b.rtt, 0),
            F::RttBwdAvg => rtt(&b.rtt, 1),
            F::RttBwdMax => rtt(&b.rtt, 2),
            F::RttBwdStd => rtt(&b.rtt, 3),
            F::RttBwdN => rtt(&b.rtt, 4),
            F::ClassConn | F::AppProtocol => match r.app.kind {
                AppKind::None => Cell::Null,
                k => Cell::Str(k.name()),
            },
            F::ClassP2p => Cell::Null,
            F::ClassHttp => app(AppKind::Http),
            F::DnsQname => app(AppKind::Dns),
            F::DnsQtype => {
                if r.app.kind == AppKind::Dns && r.app.dns_qtype != 0 {
                    Cell::U64(u64::from(r.app.dns_qtype))
                } else {
                    Cell::Null
                }
            }
            F::DnsRcode => match (r.app.kind, r.app.dns_rcode) {
                (AppKind::Dns, Some(c)) => Cell::U64(u64::from(c)),
                _ => Cell::Null,
            },
            F::TlsSni => app(AppKind::Tls),
            F::HttpHost => app(AppKind::Http),
            F::QuicSni => app(AppKind::Quic),
        }
    }
}

fn ttl(d: &DirRecord, v: u8) -> Cell<'static> {
    if d.packets > 0 {
        Cell::U64(u64::from(v))
    } else {
        Cell::Null
    }
}

/// Errors resolving a column set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ColumnError {
    /// The element names no flow record field.
    #[error("{0}: not a flow record column")]
    Unknown(String),
}

/// An ordered set of flow columns (a result schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowColumns {
    fields: Vec<FlowField>,
}

impl FlowColumns {
    /// Resolves `elements` in order.
    pub fn new<S: AsRef<str>>(elements: &[S]) -> Result<Self, ColumnError> {
        let fields = elements
            .iter()
            .map(|e| {
                FlowField::from_element(e.as_ref())
                    .ok_or_else(|| ColumnError::Unknown(e.as_ref().to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(FlowColumns { fields })
    }

    /// The fields in order.
    pub fn fields(&self) -> &[FlowField] {
        &self.fields
    }

    /// `true` when `element` is a flow field that always has a value.
    pub fn is_required(element: &str) -> bool {
        FlowField::from_element(element).is_some_and(|f| !f.nullable())
    }

    /// Element names in order.
    pub fn elements(&self) -> Vec<&'static str> {
        self.fields.iter().map(|f| f.element()).collect()
    }

    /// The record as an mPlane result row.
    pub fn row(&self, r: &FlowRecord, name: &[u8], ctx: &ColumnContext) -> Vec<Option<Value>> {
        self.fields
            .iter()
            .map(|f| f.cell(r, name, ctx).to_value())
            .collect()
    }

    /// Builds one Arrow batch of `schema` (these columns, in this order) from `recs`. The
    /// records are taken [`CHUNK_RECORDS`] at a time, a block small enough to stay in the L2
    /// cache, and within a block column by column: each column is one tight loop into its
    /// typed builder, so a record's cache lines are read from memory once, not once per
    /// column. Each record's application name is its `app.name` range in `names`.
    pub fn record_batch(
        &self,
        schema: &ExportSchema,
        recs: &[FlowRecord],
        names: &[u8],
        ctx: &ColumnContext,
    ) -> Result<RecordBatch, ExportError> {
        let n = recs.len();
        let mut builders: Vec<TypedBuilder> = schema
            .columns()
            .iter()
            .map(|c| TypedBuilder::new(c.prim, n))
            .collect();
        if builders.len() != self.fields.len() {
            return Err(ExportError::Config(format!(
                "{} flow columns for a schema of {}",
                self.fields.len(),
                builders.len()
            )));
        }
        for chunk in recs.chunks(CHUNK_RECORDS) {
            for (i, (&f, b)) in self.fields.iter().zip(&mut builders).enumerate() {
                extend_column(f, b, chunk, names, ctx).map_err(|expected| {
                    ExportError::TypeMismatch {
                        column: i,
                        expected,
                        got: "flow field",
                    }
                })?;
            }
        }
        let arrays = builders
            .into_iter()
            .map(TypedBuilder::finish)
            .collect::<Result<_, _>>()?;
        RecordBatch::try_new(schema.arrow().clone(), arrays).map_err(ExportError::from)
    }

    /// Appends the record to `b` (whose schema has these columns in this order).
    pub fn append(
        &self,
        b: &mut ColumnsBuilder,
        r: &FlowRecord,
        name: &[u8],
        ctx: &ColumnContext,
    ) -> Result<(), ExportError> {
        for (i, f) in self.fields.iter().enumerate() {
            match f.cell(r, name, ctx) {
                Cell::U64(v) => b.append_u64(i, v)?,
                Cell::F64(v) => b.append_f64(i, v)?,
                Cell::Bool(v) => b.append_bool(i, v)?,
                Cell::Time(ns) => b.append_time_ns(i, ns.min(i64::MAX as u64) as i64)?,
                Cell::Addr(a) => b.append_addr(i, a)?,
                Cell::Str(s) => b.append_str(i, s)?,
                Cell::Null => b.append_null(i)?,
            }
        }
        Ok(())
    }
}

/// Records per block of [`FlowColumns::record_batch`]: 256 records of ≤ 512 bytes are
/// 128 KiB, well inside any L2 cache, with the builders' tails beside them.
pub const CHUNK_RECORDS: usize = 256;

/// The cells of one column of a batch, gathered straight into the buffers of its Arrow array.
///
/// The batch's length is known up front, so values go into preallocated vectors and validity
/// into a bitmap of words, without the per-value capacity checks and lazy null bitmap of
/// arrow's builders; a column without nulls gets no null buffer.
enum TypedBuilder {
    U64(Fixed<u64>),
    F64(Fixed<f64>),
    Bool(Fixed<bool>),
    Time(Fixed<i64>),
    Text(Text),
}

/// Values of a text column: their bytes back to back, the end offset of each row and the
/// validity. UTF-8 is checked once over the whole buffer when the array is made, not per
/// value.
struct Text {
    offsets: Vec<i32>,
    bytes: Vec<u8>,
    valid: Validity,
}

impl Text {
    fn with_capacity(n: usize) -> Self {
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0);
        Text {
            offsets,
            // addresses are 7–39 bytes, names longer but rarer: one reservation for most batches
            bytes: Vec::with_capacity(n * 16),
            valid: Validity::with_rows(n),
        }
    }

    /// Appends `cell(r)` for each record, which must be text, an address or a null; on
    /// another kind of cell, `Err(())`.
    #[inline(always)]
    fn extend<'a>(
        &mut self,
        recs: &'a [FlowRecord],
        mut cell: impl FnMut(&'a FlowRecord) -> Cell<'a>,
    ) -> Result<(), ()> {
        let mut buf = [0u8; MAX_ADDR_TEXT];
        let mut wrong = false;
        let (bytes, offsets) = (&mut self.bytes, &mut self.offsets);
        self.valid.by_words(offsets.len() - 1, recs, |group| {
            let mut nulls = 0u64;
            for (k, r) in group.iter().enumerate() {
                match cell(r) {
                    Cell::Str(s) => bytes.extend_from_slice(s.as_bytes()),
                    Cell::Addr(a) => bytes.extend_from_slice(addr_bytes(a, &mut buf)),
                    Cell::Null => nulls |= 1 << k,
                    _ => wrong = true,
                }
                // a batch holds far less than 2 GiB of text (`finish` refuses more)
                offsets.push(bytes.len().min(i32::MAX as usize) as i32);
            }
            nulls
        });
        if wrong { Err(()) } else { Ok(()) }
    }

    fn finish(self) -> Result<ArrayRef, ExportError> {
        let len = self.offsets.len() - 1;
        if self.bytes.len() > i32::MAX as usize {
            return Err(ExportError::Config(format!(
                "{} bytes of text in one column of a batch",
                self.bytes.len()
            )));
        }
        let nulls = self.valid.into_nulls(len);
        let offsets = OffsetBuffer::new(ScalarBuffer::from(self.offsets));
        Ok(Arc::new(StringArray::try_new(
            offsets,
            Buffer::from_vec(self.bytes),
            nulls,
        )?))
    }
}

/// Values of a fixed-width column (booleans one per byte until `finish` packs them) and their
/// validity, one bit per row.
struct Fixed<T> {
    values: Vec<T>,
    valid: Validity,
}

/// Which rows of a column have a value: one bit per row, in 64-bit words.
struct Validity(Vec<u64>);

impl Validity {
    fn with_rows(n: usize) -> Self {
        Validity(vec![0; n.div_ceil(64)])
    }

    /// Calls `f` on `recs` (rows `start..` of the column) in groups that each fill the rest
    /// of one validity word; `f` returns the group's null rows as a mask (bit `k` = the
    /// group's row `k`). A column that cannot hold a null never sets a bit of that mask, so
    /// its cells cost nothing here; setting a bit in memory per row would chain every row
    /// through a load and a store of the same word.
    #[inline(always)]
    fn by_words<'a, R>(&mut self, start: usize, recs: &'a [R], mut f: impl FnMut(&'a [R]) -> u64) {
        let words = (start + recs.len()).div_ceil(64);
        if self.0.len() < words {
            self.0.resize(words, 0);
        }
        let (mut row, mut rest) = (start, recs);
        while !rest.is_empty() {
            let shift = row % 64;
            let (group, tail) = rest.split_at((64 - shift).min(rest.len()));
            let nulls = f(group);
            let valid = (u64::MAX >> (64 - group.len())) & !nulls;
            if let Some(w) = self.0.get_mut(row / 64) {
                *w |= valid << shift;
            }
            row += group.len();
            rest = tail;
        }
    }

    /// Arrow's null buffer for the first `len` rows; `None` when every row has a value.
    fn into_nulls(self, len: usize) -> Option<NullBuffer> {
        let set: usize = self.0.iter().map(|w| w.count_ones() as usize).sum();
        (set < len).then(|| NullBuffer::new(BooleanBuffer::new(Buffer::from_vec(self.0), 0, len)))
    }
}

impl<T: Copy + Default> Fixed<T> {
    fn with_capacity(n: usize) -> Self {
        Fixed {
            values: Vec::with_capacity(n),
            valid: Validity::with_rows(n),
        }
    }

    /// Appends `cell(r)` for each record (a null is stored as the default value); on an
    /// error, the first one.
    #[inline(always)]
    fn extend<'a, E>(
        &mut self,
        recs: &'a [FlowRecord],
        mut cell: impl FnMut(&'a FlowRecord) -> Result<Option<T>, E>,
    ) -> Result<(), E> {
        let mut failed = None;
        let values = &mut self.values;
        self.valid.by_words(values.len(), recs, |group| {
            let mut nulls = 0u64;
            // a slice's iterator has a trusted length: one capacity check per group, then
            // plain stores (no check per value and no zeroing of the values first)
            values.extend(group.iter().enumerate().map(|(k, r)| match cell(r) {
                Ok(v) => {
                    nulls |= u64::from(v.is_none()) << k;
                    v.unwrap_or_default()
                }
                Err(e) => {
                    failed.get_or_insert(e);
                    T::default()
                }
            }));
            nulls
        });
        failed.map_or(Ok(()), Err)
    }

    /// The values, and the validity as Arrow's null buffer (`None` when every row has a
    /// value).
    fn into_parts(self) -> (Vec<T>, Option<NullBuffer>) {
        let nulls = self.valid.into_nulls(self.values.len());
        (self.values, nulls)
    }
}

impl TypedBuilder {
    fn new(prim: mplane::registry::Primitive, n: usize) -> Self {
        use mplane::registry::Primitive as P;
        match prim {
            P::Natural => TypedBuilder::U64(Fixed::with_capacity(n)),
            P::Real => TypedBuilder::F64(Fixed::with_capacity(n)),
            P::Boolean => TypedBuilder::Bool(Fixed::with_capacity(n)),
            P::Time => TypedBuilder::Time(Fixed::with_capacity(n)),
            P::Address | P::String | P::Url => TypedBuilder::Text(Text::with_capacity(n)),
        }
    }

    /// Appends `cell(r)` for each record; on a cell of the wrong kind, the primitive this
    /// column expected.
    #[inline(always)]
    fn extend<'a>(
        &mut self,
        recs: &'a [FlowRecord],
        mut cell: impl FnMut(&'a FlowRecord) -> Cell<'a>,
    ) -> Result<(), mplane::registry::Primitive> {
        use mplane::registry::Primitive as P;
        match self {
            TypedBuilder::U64(b) => b.extend(recs, |r| match cell(r) {
                Cell::U64(v) => Ok(Some(v)),
                Cell::Null => Ok(None),
                _ => Err(P::Natural),
            })?,
            TypedBuilder::F64(b) => b.extend(recs, |r| match cell(r) {
                Cell::F64(v) => Ok(Some(v)),
                Cell::Null => Ok(None),
                _ => Err(P::Real),
            })?,
            TypedBuilder::Bool(b) => b.extend(recs, |r| match cell(r) {
                Cell::Bool(v) => Ok(Some(v)),
                Cell::Null => Ok(None),
                _ => Err(P::Boolean),
            })?,
            TypedBuilder::Time(b) => b.extend(recs, |r| match cell(r) {
                Cell::Time(ns) => Ok(Some(ns.min(i64::MAX as u64) as i64)),
                Cell::Null => Ok(None),
                _ => Err(P::Time),
            })?,
            TypedBuilder::Text(b) => b.extend(recs, cell).map_err(|()| P::String)?,
        }
        Ok(())
    }

    fn finish(self) -> Result<ArrayRef, ExportError> {
        Ok(match self {
            TypedBuilder::U64(b) => {
                let (values, nulls) = b.into_parts();
                Arc::new(PrimitiveArray::<UInt64Type>::new(values.into(), nulls))
            }
            TypedBuilder::F64(b) => {
                let (values, nulls) = b.into_parts();
                Arc::new(PrimitiveArray::<Float64Type>::new(values.into(), nulls))
            }
            TypedBuilder::Time(b) => {
                let (values, nulls) = b.into_parts();
                Arc::new(
                    PrimitiveArray::<TimestampNanosecondType>::new(values.into(), nulls)
                        .with_timezone(TIME_ZONE),
                )
            }
            TypedBuilder::Bool(b) => {
                let (values, nulls) = b.into_parts();
                Arc::new(BooleanArray::new(BooleanBuffer::from(values), nulls))
            }
            TypedBuilder::Text(b) => b.finish()?,
        })
    }
}

/// The columns of a flow file (`mpcom replay`, flow exports): everything a record holds, IPv4
/// and IPv6 in the same `source.ip` / `destination.ip` columns.
pub const FILE_COLUMNS: &[&str] = &[
    "flow.start",
    "start",
    "end",
    "duration.ms",
    "flow.end.reason",
    "observer.interface",
    "ip.version",
    "ip.protocol",
    "source.ip",
    "source.port",
    "destination.ip",
    "destination.port",
    "vlan.outer",
    "vlan.inner",
    "tunnel.type",
    "tunnel.id",
    "icmp.type",
    "icmp.code",
    "packets.forward",
    "packets.backward",
    "octets.ip.forward",
    "octets.ip.backward",
    "bytes.forward",
    "bytes.backward",
    "bytes.forward.unique",
    "bytes.backward.unique",
    "bytes.forward.rxmit",
    "bytes.backward.rxmit",
    "start.forward",
    "end.forward",
    "start.backward",
    "end.backward",
    "tcp.flags.forward",
    "tcp.flags.backward",
    "packets.forward.syn",
    "packets.forward.fin",
    "packets.forward.rst",
    "packets.forward.ack",
    "packets.forward.pure_ack",
    "packets.forward.with_payload",
    "packets.forward.rxmit",
    "packets.forward.outseq",
    "packets.backward.syn",
    "packets.backward.fin",
    "packets.backward.rst",
    "packets.backward.ack",
    "packets.backward.pure_ack",
    "packets.backward.with_payload",
    "packets.backward.rxmit",
    "packets.backward.outseq",
    "source.reordering",
    "destination.reordering",
    "source.net_dup",
    "destination.net_dup",
    "source.window.zero",
    "destination.window.zero",
    "source.ttl.min",
    "source.ttl.max",
    "destination.ttl.min",
    "destination.ttl.max",
    "rtt.handshake.source.ms",
    "rtt.handshake.destination.ms",
    "rtt.forward.min.ms",
    "rtt.forward.average.ms",
    "rtt.forward.max.ms",
    "rtt.forward.stddev.ms",
    "rtt.forward.samples",
    "rtt.backward.min.ms",
    "rtt.backward.average.ms",
    "rtt.backward.max.ms",
    "rtt.backward.stddev.ms",
    "rtt.backward.samples",
    "source.MSS.bytes",
    "destination.MSS.bytes",
    "source.win_scale",
    "destination.win_scale",
    "source.SACK_set",
    "destination.SACK_set",
    "source.RFC1323.ts",
    "destination.RFC1323.ts",
    "source.TTFP.ms",
    "destination.TTFP.ms",
    "source.TTLP.ms",
    "destination.TTLP.ms",
    "source.TTFA.ms",
    "destination.TTFA.ms",
    "application.protocol",
    "dns.qname",
    "dns.qtype",
    "dns.rcode",
    "ssl.hello.client",
    "request.hostname",
    "quic.hello.client",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry;

    #[test]
    fn every_field_is_in_the_registry_with_a_matching_primitive() {
        let reg = registry::probe_registry().unwrap();
        let ctx = ColumnContext::default();
        let dir = DirRecord {
            packets: 1,
            rtt: RttStats {
                count: 2,
                min_ns: 1,
                max_ns: 3,
                sum_ns: 4,
                sum_sq: 10.0,
            },
            options: super::super::record::TcpOptions {
                syn_seen: true,
                wscale: Some(7),
                ..Default::default()
            },
            first_payload_us: 1,
            last_payload_us: 2,
            first_ack_us: 3,
            ..DirRecord::EMPTY
        };
        let base = FlowRecord {
            fwd: dir,
            bwd: dir,
            handshake_initiator_ns: Some(1),
            handshake_responder_ns: Some(2),
            ..FlowRecord::default()
        };
        let mut records = Vec::new();
        for kind in [AppKind::Dns, AppKind::Tls, AppKind::Http, AppKind::Quic] {
            let mut r = base;
            r.app.kind = kind;
            r.app.dns_qtype = 1;
            r.app.dns_rcode = Some(0);
            r.key.kind = KeyKind::IcmpError as u8;
            records.push(r);
        }
        for (f, r) in FlowField::ALL
            .iter()
            .flat_map(|f| records.iter().map(move |r| (f, r)))
        {
            let el = reg
                .element(f.element())
                .unwrap_or_else(|| panic!("{} not in the registry", f.element()));
            use mplane::registry::Primitive as P;
            let ok = match f.cell(r, b"x", &ctx) {
                Cell::U64(_) => el.prim == P::Natural,
                Cell::F64(_) => el.prim == P::Real,
                Cell::Bool(_) => el.prim == P::Boolean,
                Cell::Time(_) => el.prim == P::Time,
                Cell::Addr(_) => el.prim == P::Address,
                Cell::Str(_) => el.prim == P::String,
                Cell::Null => true,
            };
            assert!(ok, "{}: cell type vs {:?}", f.element(), el.prim);
        }
        FlowColumns::new(FILE_COLUMNS).unwrap();
        assert!(FlowColumns::new(&["nope"]).is_err());
        // fields declared never null are never null, even for an empty record
        for f in FlowField::ALL {
            if !f.nullable() {
                for r in records.iter().chain([&FlowRecord::default()]) {
                    assert_ne!(f.cell(r, b"", &ctx), Cell::Null, "{}", f.element());
                }
            }
        }
    }

    /// The column-wise batch (the export path) holds exactly what the row-by-row builder
    /// makes of the same records: values, nulls, texts and addresses of both families,
    /// across the 64-row validity words and the 256-record blocks.
    #[test]
    fn record_batch_matches_the_row_by_row_builder() {
        let reg = registry::probe_registry().unwrap();
        let ctx = ColumnContext {
            interface: "tap0".into(),
            internal: ColumnContext::default_internal(),
        };
        let mut names = Vec::new();
        let mut recs = Vec::new();
        for i in 0..600u32 {
            let mut r = FlowRecord::default();
            r.key.ip_version = if i % 4 == 0 { 6 } else { 4 };
            r.key.protocol = [6, 17, 1][i as usize % 3];
            r.key.addr_a[10..12].copy_from_slice(&[0xff, 0xff]);
            r.key.addr_a[12..].copy_from_slice(&[10, (i >> 8) as u8, i as u8, 1]);
            if r.key.ip_version == 6 {
                r.key.addr_a = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, i as u8];
                r.key.addr_b = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
            } else {
                r.key.addr_b[10..12].copy_from_slice(&[0xff, 0xff]);
                r.key.addr_b[12..].copy_from_slice(&[192, 0, 2, (i % 7) as u8]);
            }
            r.key.port_a = i as u16;
            r.key.port_b = 443;
            r.initiator_is_b = i % 5 == 0;
            r.fwd.packets = u64::from(i);
            r.bwd.packets = u64::from(i % 3);
            if i % 3 == 0 {
                r.fwd.rtt = RttStats {
                    count: 3,
                    min_ns: 1_000,
                    max_ns: 9_000 + i,
                    sum_ns: 15_000,
                    sum_sq: 1e8,
                };
                r.handshake_initiator_ns = Some(u64::from(i) * 1_000);
            }
            if i % 7 < 4 {
                let name = format!("host{i}.example");
                r.app.kind =
                    [AppKind::Dns, AppKind::Tls, AppKind::Http, AppKind::Quic][i as usize % 4];
                r.app.name = super::super::record::StrRef::append(&mut names, name.as_bytes());
            }
            recs.push(r);
        }
        let schema = Arc::new(ExportSchema::from_registry(&reg, FILE_COLUMNS).unwrap());
        let fc = FlowColumns::new(FILE_COLUMNS).unwrap();
        let columnwise = fc.record_batch(&schema, &recs, &names, &ctx).unwrap();
        let mut rows = ColumnsBuilder::new(schema.clone(), recs.len());
        for r in &recs {
            fc.append(&mut rows, r, r.app.name.get(&names), &ctx)
                .unwrap();
        }
        let rowwise = rows.finish().unwrap();
        assert_eq!(columnwise.num_rows(), 600);
        for (i, name) in schema.arrow().fields().iter().enumerate() {
            assert_eq!(
                columnwise.column(i).as_ref(),
                rowwise.column(i).as_ref(),
                "{}",
                name.name()
            );
        }
        // the test covers nulls and both families, not only the easy rows
        let src = columnwise.column_by_name("source_ip").unwrap();
        assert_eq!(src.null_count(), 0);
        let rtt = columnwise.column_by_name("rtt_forward_min_ms").unwrap();
        assert_eq!(rtt.null_count(), 400);
    }

    #[test]
    fn validity_by_words_from_any_row() {
        // rows of 3 appends (5, 100 and 70 rows): groups cross word boundaries anywhere
        let nullable = |row: usize| row.is_multiple_of(3) || row.is_multiple_of(7);
        let mut v = Validity::with_rows(10);
        let mut row = 0;
        for n in [5, 100, 70] {
            let recs: Vec<usize> = (row..row + n).collect();
            v.by_words(row, &recs, |group| {
                group
                    .iter()
                    .enumerate()
                    .fold(0, |m, (k, &r)| m | (u64::from(nullable(r)) << k))
            });
            row += n;
        }
        let nulls = v.into_nulls(row).unwrap();
        for r in 0..row {
            assert_eq!(nulls.is_null(r), nullable(r), "row {r}");
        }
        // every row valid: no null buffer
        let mut v = Validity::with_rows(0);
        v.by_words(0, &[(); 130], |_| 0);
        assert!(v.into_nulls(130).is_none());
    }

    #[test]
    fn prefixes() {
        let ctx = ColumnContext {
            internal: ColumnContext::default_internal(),
            ..ColumnContext::default()
        };
        assert!(ctx.is_internal("10.1.2.3".parse().unwrap()));
        assert!(ctx.is_internal("fd00::1".parse().unwrap()));
        assert!(!ctx.is_internal("8.8.8.8".parse().unwrap()));
        assert!(!ctx.is_internal("2001:db8::1".parse().unwrap()));
        assert!(in_prefix(
            "1.2.3.4".parse().unwrap(),
            "0.0.0.0".parse().unwrap(),
            0
        ));
    }
}
