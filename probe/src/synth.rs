//! A small seeded generator of realistic traffic, for `mpcom demo` and quick experiments:
//! TCP connections (handshake with options, an HTTP request with a `Host` or a TLS
//! ClientHello with a server name, MSS-sized responses, delayed ACKs, FIN or RST), DNS
//! queries and answers, UDP media streams, and ICMP echo, over IPv4 and IPv6, some on a
//! VLAN. The same seed gives the same bytes.

use std::io::{self, Write};

use mplane_capture::builder::{Builder, PcapWriter};
use mplane_capture::packet::LinkType;
use mplane_capture::packet::tcp::flags::{ACK, FIN, PSH, RST, SYN};

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct SynthConfig {
    /// Number of flows.
    pub flows: usize,
    /// Seconds over which flows start.
    pub seconds: u64,
    /// Seed.
    pub seed: u64,
    /// Time of the first packet, ns since the epoch.
    pub start_ns: u64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            flows: 2000,
            seconds: 60,
            seed: 1,
            start_ns: 1_767_225_600_000_000_000, // 2026-01-01 00:00:00 UTC
        }
    }
}

/// xorshift64*: deterministic and good enough for traffic shapes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A minimal TLS 1.3 ClientHello record carrying `sni`.
fn client_hello(sni: &str) -> Vec<u8> {
    let mut ext = Vec::new();
    let name = sni.as_bytes();
    ext.extend_from_slice(&[0, 0]);
    ext.extend_from_slice(&((name.len() + 5) as u16).to_be_bytes());
    ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    ext.extend_from_slice(name);
    ext.extend_from_slice(&[0, 43, 0, 3, 2, 3, 4]);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0x5a; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![22, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

fn dns(id: u16, response: bool, name: &str) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(if response {
        &[0x81, 0x80]
    } else {
        &[0x01, 0x00]
    });
    m.extend_from_slice(&[0, 1, 0, u8::from(response), 0, 0, 0, 0]);
    for l in name.split('.') {
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    if response {
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 0x2c, 0, 4, 198, 51, 100, 7]);
    }
    m
}

#[derive(Clone, Copy)]
enum Ip {
    V4([u8; 4], [u8; 4]),
    V6([u8; 16], [u8; 16]),
}

fn frame(ip: Ip, rev: bool, vlan: Option<u16>) -> Builder {
    let mut b = Builder::ethernet();
    if let Some(v) = vlan {
        b = b.vlan(v);
    }
    match ip {
        Ip::V4(a, c) if rev => b.ipv4(c, a),
        Ip::V4(a, c) => b.ipv4(a, c),
        Ip::V6(a, c) if rev => b.ipv6(c, a),
        Ip::V6(a, c) => b.ipv6(a, c),
    }
}

const NAMES: [&str; 8] = [
    "www.example.com",
    "api.example.net",
    "cdn.example.org",
    "mail.example.com",
    "static.example.net",
    "login.example.org",
    "img.example.com",
    "video.example.net",
];

/// Writes a capture of `cfg.flows` flows to `w`; returns the number of packets.
pub fn write_capture<W: Write>(w: W, cfg: &SynthConfig) -> io::Result<u64> {
    let mut rng = Rng(cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut pkts: Vec<(u64, Vec<u8>)> = Vec::new();
    let span = cfg.seconds.max(1) * 1_000_000_000;
    for i in 0..cfg.flows {
        let t0 = cfg.start_ns + rng.below(span);
        let v6 = rng.below(4) == 0;
        let vlan = (rng.below(8) == 0).then(|| 10 + rng.below(4) as u16 * 10);
        let c = rng.next();
        let ip = if v6 {
            let mut a = [0x20, 1, 0xd, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            a[8..].copy_from_slice(&c.to_be_bytes());
            let mut b = [0x20, 1, 0xd, 0xb8, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            b[15] = (i % 200) as u8 + 1;
            Ip::V6(a, b)
        } else {
            Ip::V4(
                [10, (c >> 8) as u8, (c >> 16) as u8, (c >> 24) as u8 | 1],
                [198, 51, 100, (i % 200) as u8 + 1],
            )
        };
        let cport = 32768 + rng.below(28000) as u16;
        let rtt = 2_000_000 + rng.below(80_000_000);
        let name = NAMES[rng.below(NAMES.len() as u64) as usize];
        let mut push = |t: u64, rev: bool, l4: &dyn Fn(Builder) -> Builder| {
            pkts.push((t, l4(frame(ip, rev, vlan)).build()));
        };
        match rng.below(10) {
            0..=4 => {
                // TCP: handshake, request, response, close
                let https = rng.below(3) != 0;
                let sport = if https { 443 } else { 80 };
                let (cs, ss) = (rng.next() as u32, rng.next() as u32);
                let opts: &[u8] = &[2, 4, 0x05, 0xb4, 4, 2, 1, 3, 3, 7];
                push(t0, false, &|b| {
                    b.tcp_with(cport, sport, cs, 0, SYN, 64240, opts)
                });
                push(t0 + rtt / 2, true, &|b| {
                    b.tcp_with(sport, cport, ss, cs.wrapping_add(1), SYN | ACK, 65160, opts)
                });
                let mut t = t0 + rtt;
                push(t, false, &|b| {
                    b.tcp(cport, sport, cs.wrapping_add(1), ss.wrapping_add(1), ACK)
                });
                let req = if https {
                    client_hello(name)
                } else {
                    format!("GET /index.html HTTP/1.1\r\nHost: {name}\r\nUser-Agent: demo\r\n\r\n")
                        .into_bytes()
                };
                let mut cseq = cs.wrapping_add(1);
                let mut sseq = ss.wrapping_add(1);
                push(t, false, &|b| {
                    b.tcp(cport, sport, cseq, sseq, PSH | ACK).payload(&req)
                });
                cseq = cseq.wrapping_add(req.len() as u32);
                t += rtt / 2;
                let segs = 1 + rng.below(20) as u32;
                for k in 0..segs {
                    let (sq, ak) = (sseq, cseq);
                    push(t + u64::from(k) * 50_000, true, &|b| {
                        b.tcp(sport, cport, sq, ak, ACK).payload(&[0x42; 1460])
                    });
                    sseq = sseq.wrapping_add(1460);
                    if k % 2 == 1 || k + 1 == segs {
                        let (sq, ak) = (cseq, sseq);
                        push(t + u64::from(k) * 50_000 + rtt / 2, false, &|b| {
                            b.tcp(cport, sport, sq, ak, ACK)
                        });
                    }
                }
                t += u64::from(segs) * 50_000 + rtt;
                if rng.below(8) == 0 {
                    let (sq, ak) = (sseq, cseq);
                    push(t, true, &|b| b.tcp(sport, cport, sq, ak, RST | ACK));
                } else {
                    let (a, b2) = (cseq, sseq);
                    push(t, false, &|b| b.tcp(cport, sport, a, b2, FIN | ACK));
                    push(t + rtt / 2, true, &|b| {
                        b.tcp(sport, cport, b2, a.wrapping_add(1), FIN | ACK)
                    });
                    push(t + rtt, false, &|b| {
                        b.tcp(cport, sport, a.wrapping_add(1), b2.wrapping_add(1), ACK)
                    });
                }
            }
            5..=7 => {
                let id = rng.next() as u16;
                let q = dns(id, false, name);
                let a = dns(id, true, name);
                push(t0, false, &|b| b.udp(cport, 53).payload(&q));
                push(t0 + rtt, true, &|b| b.udp(53, cport).payload(&a));
            }
            8 => {
                let n = 10 + rng.below(200);
                for k in 0..n {
                    push(t0 + k * 20_000_000, false, &|b| {
                        b.udp(cport, 5004).payload(&[0x80; 160])
                    });
                }
            }
            _ => {
                let id = rng.next() as u16;
                for k in 0..4u16 {
                    let t = t0 + u64::from(k) * 1_000_000_000;
                    match ip {
                        Ip::V4(..) => {
                            push(t, false, &|b| b.icmp(8, 0, id, k).payload(&[0; 56]));
                            push(t + rtt, true, &|b| b.icmp(0, 0, id, k).payload(&[0; 56]));
                        }
                        Ip::V6(..) => {
                            push(t, false, &|b| b.icmpv6(128, 0, id, k).payload(&[0; 56]));
                            push(t + rtt, true, &|b| {
                                b.icmpv6(129, 0, id, k).payload(&[0; 56])
                            });
                        }
                    }
                }
            }
        }
    }
    pkts.sort_by_key(|(t, _)| *t);
    let mut out = PcapWriter::new(
        io::BufWriter::new(w),
        LinkType::ETHERNET,
        262_144,
        true,
        false,
    )?;
    for (t, f) in &pkts {
        out.write(*t, f, f.len() as u32)?;
    }
    out.into_inner().flush()?;
    Ok(pkts.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_parseable() {
        let cfg = SynthConfig {
            flows: 50,
            ..SynthConfig::default()
        };
        let mut a = Vec::new();
        let mut b = Vec::new();
        let n = write_capture(&mut a, &cfg).unwrap();
        write_capture(&mut b, &cfg).unwrap();
        assert_eq!(a, b);
        assert!(n > 100);
        let mut f = mplane_capture::source::pcap::PcapFile::from_bytes(a).unwrap();
        let mut k = 0;
        while f.next_record().unwrap().is_some() {
            k += 1;
        }
        assert_eq!(k, n);
    }
}
