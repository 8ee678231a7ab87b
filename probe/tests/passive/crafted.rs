//! Captures built packet by packet around known events: retransmissions, reordering,
//! network duplicates and zero windows with their expected counts, and application metadata
//! from real protocol stacks (rustls ClientHellos, quinn-proto QUIC Initials) plus DNS and
//! HTTP messages.

use std::sync::Arc;

use mplane_capture::builder::{Builder, PcapWriter};
use mplane_capture::packet::LinkType;
use mplane_capture::packet::tcp::flags::{ACK, FIN, PSH, RST, SYN};
use mplane_probe::passive::meter::MeterConfig;
use mplane_probe::passive::record::{AppKind, EndReason, FlowRecord};

use super::support::records;

const C: [u8; 4] = [10, 1, 0, 7];
const S: [u8; 4] = [198, 51, 100, 9];
const T0: u64 = 1_750_000_000_000_000_000;
const MS: u64 = 1_000_000;

/// A TCP conversation written packet by packet.
struct Conv {
    frames: Vec<(u64, Vec<u8>)>,
    cport: u16,
    sport: u16,
    ipid: u16,
}

impl Conv {
    fn new(cport: u16, sport: u16) -> Self {
        Conv {
            frames: Vec::new(),
            cport,
            sport,
            ipid: 1,
        }
    }
    #[allow(clippy::too_many_arguments)]
    fn seg(
        &mut self,
        t_ms: u64,
        from_client: bool,
        seq: u32,
        ack: u32,
        fl: u16,
        win: u16,
        data: &[u8],
    ) {
        let (src, dst, sp, dp) = if from_client {
            (C, S, self.cport, self.sport)
        } else {
            (S, C, self.sport, self.cport)
        };
        let opts: &[u8] = if fl & SYN != 0 {
            &[2, 4, 0x05, 0xb4, 1, 3, 3, 7, 4, 2]
        } else {
            &[]
        };
        self.ipid += 1;
        let f = Builder::ethernet()
            .ipv4_with(src, dst, self.ipid, &[])
            .tcp_with(sp, dp, seq, ack, fl, win, opts)
            .payload(data)
            .build();
        self.frames.push((T0 + t_ms * MS, f));
    }
    /// Repeats the last frame exactly (a network duplicate), `dt_us` later.
    fn dup_last(&mut self, dt_us: u64) {
        let (t, f) = self.frames.last().cloned().unwrap();
        self.frames.push((t + dt_us * 1000, f));
    }
}

fn write(frames: &[(u64, Vec<u8>)]) -> tempfile::TempPath {
    let mut sorted = frames.to_vec();
    sorted.sort_by_key(|(t, _)| *t);
    write_in_order(&sorted)
}

/// Writes the frames in the order given, whatever their times.
fn write_in_order(frames: &[(u64, Vec<u8>)]) -> tempfile::TempPath {
    let f = tempfile::NamedTempFile::new().unwrap();
    let mut w =
        PcapWriter::new(f.reopen().unwrap(), LinkType::ETHERNET, 65535, true, false).unwrap();
    for (t, d) in frames {
        w.write(*t, d, d.len() as u32).unwrap();
    }
    drop(w);
    f.into_temp_path()
}

fn one(frames: &[(u64, Vec<u8>)]) -> (FlowRecord, Vec<u8>) {
    let p = write(frames);
    let mut r = records(&p, 1, &MeterConfig::default());
    assert_eq!(r.len(), 1, "{r:#?}");
    r.remove(0)
}

#[test]
fn tcp_anomalies_are_counted() {
    let mut c = Conv::new(40001, 443);
    let d = [0u8; 100];
    c.seg(0, true, 1000, 0, SYN, 64240, &[]);
    c.seg(20, false, 5000, 1001, SYN | ACK, 65160, &[]);
    c.seg(21, true, 1001, 5001, ACK, 502, &[]);
    // client data: 1001..1101, 1201..1301 (hole), 1101..1201 1 ms later: reordered
    c.seg(30, true, 1001, 5001, PSH | ACK, 502, &d);
    c.seg(31, true, 1201, 5001, PSH | ACK, 502, &d);
    c.seg(32, true, 1101, 5001, PSH | ACK, 502, &d);
    // a network duplicate of that segment (same IP id), 200 µs later
    c.dup_last(200);
    // server acks everything; advertises a zero window once
    c.seg(52, false, 5001, 1301, ACK, 0, &[]);
    // 1301..1401, then 1401..1501 lost upstream: 1501..1601 opens a hole, and 1401..1501
    // comes back 300 ms later (a retransmission)
    c.seg(60, true, 1301, 5001, ACK, 502, &d);
    c.seg(61, true, 1501, 5001, ACK, 502, &d);
    c.seg(361, true, 1401, 5001, ACK, 502, &d);
    // a spurious retransmission of data already acknowledged
    c.seg(400, true, 1001, 5001, ACK, 502, &d);
    c.seg(420, false, 5001, 1601, ACK, 65160, &[]);
    c.seg(500, true, 1601, 5001, FIN | ACK, 502, &[]);
    c.seg(520, false, 5001, 1602, FIN | ACK, 65160, &[]);
    c.seg(540, true, 1602, 5002, ACK, 502, &[]);
    let (r, _) = one(&c.frames);
    assert_eq!(r.end, EndReason::Fin);
    assert_eq!(r.source().1, 40001, "the SYN's sender is the initiator");
    let f = &r.fwd;
    assert_eq!(f.packets, 12);
    assert_eq!(r.bwd.packets, 4);
    assert_eq!(f.out_of_sequence, 2);
    assert_eq!(f.reordered, 1);
    assert_eq!(f.duplicates, 1);
    assert_eq!(f.rxmit_packets, 2);
    assert_eq!(f.rxmit_octets, 200);
    assert_eq!(f.payload_octets, 800);
    assert_eq!(f.unique_octets(), 600);
    assert_eq!(r.bwd.zero_window, 1);
    assert_eq!((f.syn, f.fin, r.bwd.syn, r.bwd.fin), (1, 1, 1, 1));
    assert_eq!(f.options.mss, 1460);
    assert_eq!(f.options.wscale, Some(7));
    assert!(f.options.sack_permitted);
    assert_eq!(r.handshake_responder_ns, Some(20 * MS));
    assert_eq!(r.handshake_initiator_ns, Some(MS));
    // RTT samples: 1001..1101 acked at 52 ms (22 ms); 1301..1401 is never sampled alone
    // before its retransmission... the first sample is exact
    assert!(f.rtt.count >= 1);
    assert_eq!(u64::from(f.rtt.min_ns), 22 * MS);
}

/// A capture whose clock steps back (merged tap ports, a reordering capture card): a flow's
/// first and last times are the extremes it saw, so it never ends before it starts (its
/// duration was a subtraction that wrapped around).
#[test]
fn time_stepping_back_keeps_first_before_last() {
    let mut c = Conv::new(40010, 80);
    c.seg(10, true, 1, 0, SYN, 1000, &[]);
    c.seg(5, false, 9, 2, SYN | ACK, 1000, &[]);
    c.seg(20, true, 2, 10, ACK, 1000, &[]);
    c.seg(1, true, 2, 10, PSH | ACK, 1000, b"x");
    let p = write_in_order(&c.frames);
    let mut r = records(&p, 1, &MeterConfig::default());
    assert_eq!(r.len(), 1, "{r:#?}");
    let (r, _) = r.remove(0);
    assert_eq!(r.packets(), 4);
    assert_eq!((r.first_ns(), r.last_ns()), (T0 + MS, T0 + 20 * MS));
    for d in [&r.fwd, &r.bwd] {
        assert!(d.first_ns <= d.last_ns, "{d:?}");
    }
    assert_eq!((r.fwd.first_ns, r.fwd.last_ns), (T0 + MS, T0 + 20 * MS));
    assert_eq!((r.bwd.first_ns, r.bwd.last_ns), (T0 + 5 * MS, T0 + 5 * MS));
}

#[test]
fn synack_first_and_rst() {
    let mut c = Conv::new(40002, 80);
    // the capture starts at the SYN/ACK: the initiator is its receiver
    c.seg(0, false, 9000, 101, SYN | ACK, 65160, &[]);
    c.seg(5, true, 101, 9001, ACK, 502, &[]);
    c.seg(
        6,
        true,
        101,
        9001,
        PSH | ACK,
        502,
        b"GET / HTTP/1.1\r\nHost: rst.example\r\n\r\n",
    );
    c.seg(30, false, 9001, 0, RST, 0, &[]);
    // a stray ACK within the close linger stays in the same flow
    c.seg(31, true, 139, 9001, ACK, 502, &[]);
    let (r, name) = one(&c.frames);
    assert_eq!(r.source().1, 40002);
    assert_eq!(r.end, EndReason::Rst);
    assert_eq!(r.handshake_initiator_ns, Some(5 * MS));
    assert_eq!(r.handshake_responder_ns, None);
    assert_eq!(r.app.kind, AppKind::Http);
    assert_eq!(name, b"rst.example");
    assert_eq!(
        r.bwd.zero_window, 0,
        "RST segments do not count as zero windows"
    );
}

#[test]
fn port_reuse_after_close_starts_a_new_flow() {
    let mut c = Conv::new(40003, 22);
    c.seg(0, true, 1, 0, SYN, 1000, &[]);
    c.seg(1, false, 50, 2, SYN | ACK, 1000, &[]);
    c.seg(2, true, 2, 51, ACK, 1000, &[]);
    c.seg(3, true, 2, 51, FIN | ACK, 1000, &[]);
    c.seg(4, false, 51, 3, FIN | ACK, 1000, &[]);
    c.seg(5, true, 3, 52, ACK, 1000, &[]);
    c.seg(100, true, 77_777, 0, SYN, 1000, &[]);
    c.seg(101, false, 900, 77_778, SYN | ACK, 1000, &[]);
    let p = write(&c.frames);
    let r = records(&p, 1, &MeterConfig::default());
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].0.end, EndReason::Fin);
    assert_eq!(r[0].0.packets(), 6);
    assert_eq!(r[1].0.packets(), 2);
}

/// A ClientHello as rustls sends it for `sni`.
fn rustls_client_hello(sni: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

#[test]
fn tls_sni_from_a_real_client_hello_split_over_segments() {
    let hello = rustls_client_hello("sni.example.org");
    assert_eq!(hello[0], 22);
    let mut c = Conv::new(40004, 8443);
    c.seg(0, true, 1, 0, SYN, 1000, &[]);
    c.seg(1, false, 50, 2, SYN | ACK, 1000, &[]);
    c.seg(2, true, 2, 51, ACK, 1000, &[]);
    // the hello in two segments of 100 bytes and the rest
    c.seg(3, true, 2, 51, ACK, 1000, &hello[..100]);
    c.seg(4, true, 102, 51, PSH | ACK, 1000, &hello[100..]);
    let (r, name) = one(&c.frames);
    assert_eq!(r.app.kind, AppKind::Tls);
    assert_eq!(std::str::from_utf8(&name).unwrap(), "sni.example.org");
}

#[test]
fn tls_sni_extraction_can_be_switched_off() {
    let hello = rustls_client_hello("private.example.org");
    let mut c = Conv::new(40005, 443);
    c.seg(0, true, 1, 0, PSH | ACK, 1000, &hello);
    let p = write(&c.frames);
    let mut cfg = MeterConfig::default();
    cfg.app.tls_sni = false;
    let r = records(&p, 1, &cfg);
    assert_eq!(r[0].0.app.kind, AppKind::None);
    assert!(r[0].1.is_empty());
}

/// The datagrams a quinn-proto client sends first for `sni`: its Initial packets.
fn quinn_initials(sni: &str) -> Vec<Vec<u8>> {
    use quinn_proto::crypto::rustls::QuicClientConfig;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let cfg = quinn_proto::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));
    let mut ep = quinn_proto::Endpoint::new(
        Arc::new(quinn_proto::EndpointConfig::default()),
        None,
        true,
        None,
    );
    let now = std::time::Instant::now();
    let (_h, mut conn) = ep
        .connect(now, cfg, "127.0.0.1:4433".parse().unwrap(), sni)
        .unwrap();
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while let Some(t) = conn.poll_transmit(now, 1, &mut buf) {
        out.push(buf[..t.size].to_vec());
        buf.clear();
    }
    out
}

#[test]
fn quic_sni_from_real_initial_packets() {
    let dgrams = quinn_initials("quic.example.net");
    assert!(!dgrams.is_empty());
    let mut frames = Vec::new();
    for (i, d) in dgrams.iter().enumerate() {
        let f = Builder::ethernet()
            .ipv4(C, S)
            .udp(50000, 443)
            .payload(d)
            .build();
        frames.push((T0 + i as u64 * MS, f));
    }
    // the server's answer (opaque here) and more client packets
    let srv = Builder::ethernet()
        .ipv4(S, C)
        .udp(443, 50000)
        .payload(&[0xc3; 1200])
        .build();
    frames.push((T0 + 20 * MS, srv));
    let (r, name) = one(&frames);
    assert_eq!(r.app.kind, AppKind::Quic);
    assert_eq!(std::str::from_utf8(&name).unwrap(), "quic.example.net");
    assert_eq!(r.fwd.packets as usize, dgrams.len());
}

fn dns(id: u16, flags: u16, name: &str, qtype: u16, answer: bool) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&flags.to_be_bytes());
    m.extend_from_slice(&[0, 1, 0, u8::from(answer), 0, 0, 0, 0]);
    for l in name.split('.') {
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    if answer {
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
    }
    m
}

#[test]
fn dns_name_type_and_rcode() {
    let q = Builder::ethernet()
        .ipv4(C, [9, 9, 9, 9])
        .udp(53001, 53)
        .payload(&dns(0x4242, 0x0100, "Mail.Example.COM", 28, false))
        .build();
    let a = Builder::ethernet()
        .ipv4([9, 9, 9, 9], C)
        .udp(53, 53001)
        .payload(&dns(0x4242, 0x8183, "Mail.Example.COM", 28, false))
        .build();
    let (r, name) = one(&[(T0, q), (T0 + 5 * MS, a)]);
    assert_eq!(r.app.kind, AppKind::Dns);
    assert_eq!(name, b"mail.example.com");
    assert_eq!(r.app.dns_qtype, 28);
    assert_eq!(r.app.dns_rcode, Some(3));
    assert_eq!(r.source().0, std::net::IpAddr::from(C));
}

#[test]
fn http_host_of_the_first_request() {
    let mut c = Conv::new(40006, 8080);
    c.seg(
        0,
        true,
        1,
        0,
        PSH | ACK,
        1000,
        b"POST /api HTTP/1.1\r\nhost: api.example.test:8080\r\nContent-Length: 2\r\n\r\n{}",
    );
    c.seg(
        1,
        false,
        9,
        73,
        PSH | ACK,
        1000,
        b"HTTP/1.1 200 OK\r\nHost: not-this\r\n\r\n",
    );
    let (r, name) = one(&c.frames);
    assert_eq!(r.app.kind, AppKind::Http);
    assert_eq!(name, b"api.example.test:8080");
}

#[test]
fn ipv6_vlan_and_tunnelled_flows_are_keyed_and_oriented() {
    let a6 = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let b6 = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let mut frames = Vec::new();
    for i in 0..3u64 {
        frames.push((
            T0 + i * MS,
            Builder::ethernet()
                .vlan(100)
                .ipv6(a6, b6)
                .udp(5000, 6000)
                .payload(&[1; 30])
                .build(),
        ));
        frames.push((
            T0 + i * MS + 1,
            Builder::ethernet()
                .vlan(100)
                .ipv6(b6, a6)
                .udp(6000, 5000)
                .payload(&[2; 10])
                .build(),
        ));
    }
    // the same inner 5-tuple inside VXLAN is another flow
    frames.push((
        T0 + 10 * MS,
        Builder::ethernet()
            .ipv4([192, 0, 2, 1], [192, 0, 2, 2])
            .udp(33333, 4789)
            .vxlan(77)
            .inner_ethernet()
            .ipv6(a6, b6)
            .udp(5000, 6000)
            .build(),
    ));
    let p = write(&frames);
    let mut r = records(&p, 2, &MeterConfig::default());
    r.sort_by_key(|(r, _)| r.key.tunnel);
    assert_eq!(r.len(), 2);
    let (plain, vx) = (&r[0].0, &r[1].0);
    assert_eq!(plain.key.vlans, [100, 0]);
    assert_eq!((plain.fwd.packets, plain.bwd.packets), (3, 3));
    assert_eq!(plain.fwd.payload_octets, 90);
    assert_eq!(plain.fwd.ip_octets, 3 * (40 + 8 + 30));
    assert_eq!(plain.source(), (std::net::IpAddr::from(a6), 5000));
    assert_eq!(vx.key.tunnel_id, 77);
    assert_eq!(vx.packets(), 1);
}

#[test]
fn fragments_count_in_their_datagrams_flow() {
    let full = Builder::ethernet()
        .ipv4(C, S)
        .udp(7000, 7001)
        .payload(&[7; 1000])
        .build();
    let frags = mplane_capture::builder::fragment(&full, 14, 256, 99);
    let mut frames: Vec<(u64, Vec<u8>)> = frags
        .into_iter()
        .enumerate()
        .map(|(i, f)| (T0 + i as u64, f))
        .collect();
    let back = Builder::ethernet()
        .ipv4(S, C)
        .udp(7001, 7000)
        .payload(&[1; 4])
        .build();
    frames.push((T0 + 100, back));
    let p = write(&frames);
    for workers in [1, 2] {
        let r = records(&p, workers, &MeterConfig::default());
        assert_eq!(r.len(), 1, "{workers} workers: {r:#?}");
        assert_eq!(r[0].0.fwd.packets, 4);
        assert_eq!(r[0].0.fwd.ip_octets, 20 + 8 + 1000 + 3 * 20);
    }
    let _ = RST;
}
