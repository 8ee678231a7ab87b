//! Application metadata, where it is cheap: DNS query name, type and response code; the TLS
//! server name (SNI) of a ClientHello over TCP; the `Host` of an HTTP/1.x request; the SNI of
//! a QUIC ClientHello, read from the client's Initial packets after removing their (public)
//! protection. Each can be switched off ([`AppConfig`]) for privacy.
//!
//! A flow is inspected only until its metadata is found or [`AppConfig::max_packets`] payload
//! packets went by; after that a flow costs one branch per packet. Strings go to the worker's
//! [`StringArena`]; a ClientHello spanning several TCP segments or QUIC packets is reassembled
//! in one of a few preallocated buffers ([`ReassemblyPool`], bounded by
//! [`AppConfig::reassembly_bytes`]). When a pool is empty the metadata is skipped and counted,
//! never allocated.
//!
//! Detection does not rely on ports except for DNS (53, 5353 mDNS, 5355 LLMNR): TLS is
//! recognised by its record header, HTTP by a request line, QUIC by a long-header Initial
//! packet of version 1 or 2 that decrypts.

pub mod dns;
pub mod http;
pub mod quic;
pub mod tls;

use super::arena::{MAX_STR, NO_SLOT, ReassemblyPool, StringArena};
use super::record::AppKind;

/// Which metadata to extract, and the bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppConfig {
    /// DNS query name, type and response code.
    pub dns: bool,
    /// TLS ClientHello server name over TCP.
    pub tls_sni: bool,
    /// HTTP/1.x `Host`.
    pub http_host: bool,
    /// QUIC ClientHello server name (decrypting the client's Initial packets).
    pub quic_sni: bool,
    /// Payload packets inspected per flow at most.
    pub max_packets: u8,
    /// String slots (257 bytes each) per worker.
    pub string_slots: usize,
    /// Reassembly buffers per worker.
    pub reassembly_slots: usize,
    /// Bytes per reassembly buffer: the largest ClientHello read.
    pub reassembly_bytes: usize,
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            dns: true,
            tls_sni: true,
            http_host: true,
            quic_sni: true,
            max_packets: 6,
            string_slots: 65_536,
            reassembly_slots: 64,
            reassembly_bytes: 8192,
        }
    }
}

impl AppConfig {
    /// Everything off.
    pub fn none() -> Self {
        AppConfig {
            dns: false,
            tls_sni: false,
            http_host: false,
            quic_sni: false,
            ..AppConfig::default()
        }
    }

    /// `true` when any extraction is on.
    pub fn any(&self) -> bool {
        self.dns || self.tls_sni || self.http_host || self.quic_sni
    }
}

/// `u16::MAX`: no reassembly buffer.
pub const NO_REASM: u16 = u16::MAX;

/// Per-flow inspection state (20 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppState {
    /// Recognised protocol.
    pub kind: AppKind,
    /// Inspection finished (found, or given up).
    pub done: bool,
    /// Payload packets inspected.
    pub inspected: u8,
    /// Arena slot of the name.
    pub name: u32,
    /// DNS query type.
    pub qtype: u16,
    /// DNS response code.
    pub rcode: Option<u8>,
    /// Reassembly buffer.
    pub reasm: u16,
}

impl Default for AppState {
    fn default() -> Self {
        AppState {
            kind: AppKind::None,
            done: false,
            inspected: 0,
            name: NO_SLOT,
            qtype: 0,
            rcode: None,
            reasm: NO_REASM,
        }
    }
}

/// What the engine did, for the worker's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppCounters {
    /// Names stored.
    pub names: u64,
    /// Names lost because the string arena was full.
    pub arena_full: u64,
    /// ClientHellos not read because every reassembly buffer was in use.
    pub reassembly_full: u64,
    /// ClientHellos larger than a reassembly buffer (or too fragmented).
    pub reassembly_overflow: u64,
    /// QUIC Initial packets decrypted.
    pub quic_decrypted: u64,
}

const DNS_PORTS: [u16; 3] = [53, 5353, 5355];
/// Largest datagram decrypted (QUIC Initials fill datagrams of at least 1200 bytes; paths
/// rarely carry more than 1500).
const SCRATCH: usize = 2048;

/// The per-worker extraction engine.
#[derive(Debug)]
pub struct AppEngine {
    cfg: AppConfig,
    arena: StringArena,
    pool: ReassemblyPool,
    scratch: Box<[u8]>,
    join: Box<[u8]>,
    name: [u8; MAX_STR],
    /// What happened so far.
    pub counters: AppCounters,
}

impl AppEngine {
    /// An engine with `cfg`'s pools allocated.
    pub fn new(cfg: AppConfig) -> Self {
        let (slots, reasm) = if cfg.any() {
            (cfg.string_slots, cfg.reassembly_slots)
        } else {
            (0, 0)
        };
        AppEngine {
            arena: StringArena::new(slots),
            pool: ReassemblyPool::new(reasm, cfg.reassembly_bytes),
            scratch: vec![0; SCRATCH].into_boxed_slice(),
            join: vec![0; cfg.reassembly_bytes].into_boxed_slice(),
            name: [0; MAX_STR],
            cfg,
            counters: AppCounters::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AppConfig {
        &self.cfg
    }

    /// Bytes of the string arena.
    pub fn arena_bytes(&self) -> usize {
        self.arena.bytes()
    }

    /// Bytes of the reassembly buffers.
    pub fn reassembly_bytes(&self) -> usize {
        self.pool.bytes()
    }

    /// String slots in use.
    pub fn strings_used(&self) -> usize {
        self.arena.used()
    }

    /// The flow's name (empty when none).
    pub fn name(&self, st: &AppState) -> &[u8] {
        self.arena.get(st.name)
    }

    /// Frees what a flow holds (at its end).
    pub fn release(&mut self, st: &mut AppState) {
        self.arena.release(st.name);
        self.drop_reasm(st);
        *st = AppState::default();
    }

    fn drop_reasm(&mut self, st: &mut AppState) {
        if st.reasm != NO_REASM {
            self.pool.release(u32::from(st.reasm));
            st.reasm = NO_REASM;
        }
    }

    fn finish(&mut self, st: &mut AppState) {
        st.done = true;
        self.drop_reasm(st);
    }

    fn store(&mut self, st: &mut AppState, s: &[u8]) {
        if st.name != NO_SLOT {
            return;
        }
        match self.arena.store(s) {
            Some(slot) => {
                st.name = slot;
                self.counters.names += 1;
            }
            None => self.counters.arena_full += 1,
        }
    }

    fn take_reasm(&mut self, st: &mut AppState) -> bool {
        if st.reasm != NO_REASM {
            return true;
        }
        match self.pool.take() {
            Some(id) => {
                st.reasm = id as u16;
                true
            }
            None => {
                self.counters.reassembly_full += 1;
                false
            }
        }
    }

    /// Counts an inspected payload packet; `false` (and done) past the bound.
    fn budget(&mut self, st: &mut AppState) -> bool {
        st.inspected = st.inspected.saturating_add(1);
        if st.inspected > self.cfg.max_packets {
            self.finish(st);
            return false;
        }
        true
    }

    fn dns(&mut self, st: &mut AppState, msg: &[u8]) -> bool {
        let Some(info) = dns::parse(msg, &mut self.name) else {
            return false;
        };
        st.kind = AppKind::Dns;
        if st.name == NO_SLOT {
            let n = info.name_len;
            let name = self.name;
            self.store(st, &name[..n]);
            st.qtype = info.qtype;
        }
        if info.response && st.rcode.is_none() {
            st.rcode = Some(info.rcode);
        }
        if st.rcode.is_some() && st.name != NO_SLOT {
            self.finish(st);
        }
        true
    }

    /// A UDP payload of the flow.
    pub fn udp(
        &mut self,
        st: &mut AppState,
        from_initiator: bool,
        sport: u16,
        dport: u16,
        payload: &[u8],
    ) {
        if st.done || payload.is_empty() || !self.budget(st) {
            return;
        }
        if self.cfg.dns
            && (st.kind == AppKind::Dns || DNS_PORTS.contains(&sport) || DNS_PORTS.contains(&dport))
        {
            if !self.dns(st, payload) && st.kind == AppKind::None {
                self.finish(st);
            }
            return;
        }
        if self.cfg.quic_sni
            && from_initiator
            && (st.kind == AppKind::None || st.kind == AppKind::Quic)
        {
            self.quic(st, payload);
        } else if st.kind == AppKind::None && from_initiator {
            self.finish(st);
        }
    }

    fn quic(&mut self, st: &mut AppState, datagram: &[u8]) {
        let Some(hdr) = quic::initial_header(datagram) else {
            // the client sent something other than an Initial: the handshake moved on
            self.finish(st);
            return;
        };
        let first = st.kind == AppKind::None;
        if first && !self.take_reasm(st) {
            self.finish(st);
            return;
        }
        let Some(mut r) = self.pool.get(u32::from(st.reasm)) else {
            self.finish(st);
            return;
        };
        if first {
            // remember the original DCID: later Initials use keys derived from it
            r.scratch[0] = hdr.dcid.len() as u8;
            r.scratch[1..1 + hdr.dcid.len()].copy_from_slice(hdr.dcid);
            r.scratch[24..28].copy_from_slice(&hdr.version.to_be_bytes());
        }
        let dlen = usize::from(r.scratch[0]).min(quic::MAX_CID);
        let version =
            u32::from_be_bytes([r.scratch[24], r.scratch[25], r.scratch[26], r.scratch[27]]);
        let Some(keys) = quic::client_initial_keys(version, &r.scratch[1..1 + dlen]) else {
            self.finish(st);
            return;
        };
        let Some(plain) = quic::decrypt(datagram, &hdr, &keys, &mut self.scratch) else {
            self.finish(st);
            return;
        };
        self.counters.quic_decrypted += 1;
        st.kind = AppKind::Quic;
        let mut fits = true;
        let ok = quic::crypto_frames(plain, |off, data| fits &= r.put(off, data));
        if !ok || !fits {
            self.counters.reassembly_overflow += u64::from(!fits);
            self.finish(st);
            return;
        }
        match tls::client_hello_sni(r.contiguous()) {
            tls::Hello::Sni(name) => {
                let n = presentation(name, &mut self.name);
                let name = self.name;
                self.store(st, &name[..n]);
                self.finish(st);
            }
            tls::Hello::Incomplete(need) => {
                if need > self.cfg.reassembly_bytes {
                    self.counters.reassembly_overflow += 1;
                    self.finish(st);
                }
            }
            tls::Hello::NoSni | tls::Hello::NotHello => self.finish(st),
        }
    }

    /// A TCP segment's payload (`seq` = its sequence number).
    pub fn tcp(
        &mut self,
        st: &mut AppState,
        from_initiator: bool,
        sport: u16,
        dport: u16,
        seq: u32,
        payload: &[u8],
    ) {
        if st.done || payload.is_empty() {
            return;
        }
        if !from_initiator {
            // only DNS answers over TCP matter from the responder
            if st.kind == AppKind::Dns && self.budget(st) {
                let _ = self.dns(st, payload.get(2..).unwrap_or(&[]));
            }
            return;
        }
        if !self.budget(st) {
            return;
        }
        match st.kind {
            AppKind::None => self.tcp_first(st, sport, dport, seq, payload),
            AppKind::Tls => self.tls_more(st, seq, payload),
            AppKind::Http => self.http(st, payload),
            AppKind::Dns | AppKind::Quic => {}
        }
    }

    fn tcp_first(&mut self, st: &mut AppState, sport: u16, dport: u16, seq: u32, p: &[u8]) {
        if self.cfg.dns && (DNS_PORTS.contains(&sport) || DNS_PORTS.contains(&dport)) {
            if !self.dns(st, p.get(2..).unwrap_or(&[])) {
                self.finish(st);
            }
        } else if self.cfg.tls_sni && tls::looks_like_tls(p) {
            st.kind = AppKind::Tls;
            match tls::records_sni(p, &mut self.join) {
                tls::Hello::Sni(name) => {
                    let n = presentation(name, &mut self.name);
                    let name = self.name;
                    self.store(st, &name[..n]);
                    self.finish(st);
                }
                tls::Hello::Incomplete(need) => {
                    if need > self.cfg.reassembly_bytes {
                        self.counters.reassembly_overflow += 1;
                        self.finish(st);
                    } else if !self.take_reasm(st) {
                        self.finish(st);
                    } else if let Some(mut r) = self.pool.get(u32::from(st.reasm))
                        && r.put(0, p)
                    {
                        // sequence number of the stream's first byte: reassembly offset 0
                        r.scratch[..4].copy_from_slice(&seq.to_be_bytes());
                    } else {
                        self.finish(st);
                    }
                }
                tls::Hello::NoSni | tls::Hello::NotHello => self.finish(st),
            }
        } else if self.cfg.http_host && http::looks_like_request(p) {
            st.kind = AppKind::Http;
            self.http(st, p);
        } else {
            self.finish(st);
        }
    }

    fn tls_more(&mut self, st: &mut AppState, seq: u32, p: &[u8]) {
        let Some(mut r) = self.pool.get(u32::from(st.reasm)) else {
            self.finish(st);
            return;
        };
        let base = u32::from_be_bytes([r.scratch[0], r.scratch[1], r.scratch[2], r.scratch[3]]);
        let off = seq.wrapping_sub(base);
        if off > self.cfg.reassembly_bytes as u32 || !r.put(u64::from(off), p) {
            self.counters.reassembly_overflow += 1;
            self.finish(st);
            return;
        }
        let found = match tls::records_sni(r.contiguous(), &mut self.join) {
            tls::Hello::Sni(name) => Some(presentation(name, &mut self.name)),
            tls::Hello::Incomplete(need) if need <= self.cfg.reassembly_bytes => return,
            _ => None,
        };
        if let Some(n) = found {
            let name = self.name;
            self.store(st, &name[..n]);
        }
        self.finish(st);
    }

    fn http(&mut self, st: &mut AppState, p: &[u8]) {
        match http::find_host(p) {
            http::Host::Found(h) => {
                let n = presentation(h, &mut self.name);
                let name = self.name;
                self.store(st, &name[..n]);
                self.finish(st);
            }
            http::Host::Absent => self.finish(st),
            http::Host::NotYet => {}
        }
    }
}

/// Writes a server name or host as seen on the wire into `out` in the presentation form DNS
/// names get (dns.rs): printable ASCII as it is, `\\` for a backslash, `\DDD` for a space,
/// a control byte or any byte above 0x7e. SNI and `Host` are ASCII by their specifications
/// (RFC 6066 §3, RFC 9110 §7.2; international names travel as punycode), so anything else
/// is shown, not dropped, and every stored name is valid UTF-8. Escapes are never cut: the
/// name ends before one that does not fit. Returns the length written.
fn presentation(name: &[u8], out: &mut [u8; MAX_STR]) -> usize {
    let mut n = 0;
    for &c in name {
        let width = match c {
            b'\\' => 2,
            0x21..=0x7e => 1,
            _ => 4,
        };
        if n + width > out.len() {
            break;
        }
        match width {
            1 => out[n] = c,
            2 => out[n..n + 2].copy_from_slice(b"\\\\"),
            _ => out[n..n + 4].copy_from_slice(&[
                b'\\',
                b'0' + c / 100,
                b'0' + c / 10 % 10,
                b'0' + c % 10,
            ]),
        }
        n += width;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns_msg(flags: u16, name: &[&[u8]], qtype: u16) -> Vec<u8> {
        let mut m = vec![0x12, 0x34];
        m.extend_from_slice(&flags.to_be_bytes());
        m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        for l in name {
            m.push(l.len() as u8);
            m.extend_from_slice(l);
        }
        m.extend_from_slice(&[0, 0, 0, 0, 1]);
        let n = m.len();
        m[n - 3] = qtype as u8;
        m
    }

    #[test]
    fn dns_query_then_response() {
        let mut e = AppEngine::new(AppConfig::default());
        let mut st = AppState::default();
        e.udp(
            &mut st,
            true,
            40000,
            53,
            &dns_msg(0x0100, &[b"a", b"example"], 28),
        );
        assert_eq!(st.kind, AppKind::Dns);
        assert!(!st.done);
        assert_eq!(e.name(&st), b"a.example");
        assert_eq!(st.qtype, 28);
        e.udp(
            &mut st,
            false,
            53,
            40000,
            &dns_msg(0x8183, &[b"a", b"example"], 28),
        );
        assert!(st.done);
        assert_eq!(st.rcode, Some(3));
        e.release(&mut st);
        assert_eq!(e.strings_used(), 0);
    }

    #[test]
    fn names_outside_printable_ascii_are_escaped() {
        let mut out = [0u8; MAX_STR];
        let n = presentation(b"a b\\c\xffd\x07", &mut out);
        assert_eq!(&out[..n], b"a\\032b\\\\c\\255d\\007");
        // an escape that does not fit is left out whole
        let mut long = vec![b'x'; MAX_STR - 2];
        long.push(0xe9);
        let n = presentation(&long, &mut out);
        assert_eq!(n, MAX_STR - 2);
        // through the engine: an HTTP Host with bytes that are not ASCII
        let mut e = AppEngine::new(AppConfig::default());
        let mut st = AppState::default();
        e.tcp(
            &mut st,
            true,
            50000,
            80,
            1,
            b"GET / HTTP/1.1\r\nHost: caf\xc3\xa9.example\r\n\r\n",
        );
        assert!(st.done);
        assert_eq!(e.name(&st), b"caf\\195\\169.example");
        // and a TLS SNI
        let hello = tls::tests::records(&tls::tests::hello(Some(b"bad\x00name"), 0), 16384);
        let mut st = AppState::default();
        e.tcp(&mut st, true, 40000, 443, 1, &hello);
        assert_eq!(e.name(&st), b"bad\\000name");
    }

    #[test]
    fn switched_off() {
        let mut e = AppEngine::new(AppConfig::none());
        let mut st = AppState::default();
        e.udp(&mut st, true, 40000, 53, &dns_msg(0x0100, &[b"a"], 1));
        assert_eq!(st.kind, AppKind::None);
        let hello = tls::tests::records(&tls::tests::hello(Some(b"secret.example"), 0), 16384);
        let mut st = AppState::default();
        e.tcp(&mut st, true, 40000, 443, 1, &hello);
        assert_eq!(st.kind, AppKind::None);
        assert_eq!(e.name(&st), b"");
    }

    #[test]
    fn tls_over_two_segments() {
        let mut e = AppEngine::new(AppConfig::default());
        let mut st = AppState::default();
        let hs = tls::tests::hello(Some(b"two.segments.example"), 1800);
        let rec = tls::tests::records(&hs, 16384);
        let (a, b) = rec.split_at(1000);
        e.tcp(&mut st, true, 50000, 443, 1000, a);
        assert_eq!(st.kind, AppKind::Tls);
        assert!(!st.done);
        assert_ne!(st.reasm, NO_REASM);
        e.tcp(&mut st, false, 443, 50000, 7, b"server bytes");
        e.tcp(&mut st, true, 50000, 443, 2000, b);
        assert!(st.done);
        assert_eq!(e.name(&st), b"two.segments.example");
        assert_eq!(st.reasm, NO_REASM);
    }

    #[test]
    fn http_host_in_second_segment() {
        let mut e = AppEngine::new(AppConfig::default());
        let mut st = AppState::default();
        e.tcp(&mut st, true, 50000, 80, 1, b"GET / HTTP/1.1\r\nCookie: x");
        assert_eq!(st.kind, AppKind::Http);
        assert!(!st.done);
        e.tcp(
            &mut st,
            true,
            50000,
            80,
            26,
            b"yz\r\nHost: web.example\r\n\r\n",
        );
        assert_eq!(e.name(&st), b"web.example");
        assert!(st.done);
    }

    #[test]
    fn quic_initials_reassembled() {
        let hs = tls::tests::hello(Some(b"quic.example"), 1500);
        let (a, b) = hs.split_at(900);
        let dcid = [9u8; 8];
        let p1 = quic::tests::protect(
            quic::VERSION_1,
            &dcid,
            0,
            &quic::tests::crypto_frame(0, a),
            1162,
        );
        let p2 = quic::tests::protect(
            quic::VERSION_1,
            &dcid,
            1,
            &quic::tests::crypto_frame(900, b),
            1162,
        );
        let mut e = AppEngine::new(AppConfig::default());
        let mut st = AppState::default();
        e.udp(&mut st, true, 50000, 443, &p2); // out of order
        assert_eq!(st.kind, AppKind::Quic);
        assert!(!st.done);
        e.udp(&mut st, false, 443, 50000, &[0xc0; 1200]); // server side: ignored
        e.udp(&mut st, true, 50000, 443, &p1);
        assert!(st.done);
        assert_eq!(e.name(&st), b"quic.example");
        assert_eq!(e.counters.quic_decrypted, 2);
        // random bytes on udp/443 are not QUIC
        let mut st = AppState::default();
        e.udp(&mut st, true, 50000, 443, &[0xc3; 1200]);
        assert!(st.done);
        assert_eq!(st.kind, AppKind::None);
    }

    #[test]
    fn pools_exhausted_are_counted() {
        let cfg = AppConfig {
            string_slots: 1,
            reassembly_slots: 0,
            ..AppConfig::default()
        };
        let mut e = AppEngine::new(cfg);
        let mut a = AppState::default();
        let mut b = AppState::default();
        e.tcp(&mut a, true, 1, 80, 1, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        e.tcp(&mut b, true, 2, 80, 1, b"GET / HTTP/1.1\r\nHost: b\r\n\r\n");
        assert_eq!(e.counters.arena_full, 1);
        let hs = tls::tests::records(&tls::tests::hello(Some(b"x"), 3000), 16384);
        let mut c = AppState::default();
        e.tcp(&mut c, true, 3, 443, 1, &hs[..1000]);
        assert_eq!(e.counters.reassembly_full, 1);
        assert!(c.done);
    }
}
