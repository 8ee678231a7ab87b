//! Flow filters in pcap-filter syntax, evaluated on flow records (not packets): a passive
//! job on the shared pipeline selects its flows without changing what is captured.
//!
//! ```text
//! expr      = term { ("or" | "||") term }
//! term      = factor { ("and" | "&&") factor }
//! factor    = ("not" | "!") factor | "(" expr ")" | primitive
//! primitive = [ "src" | "dst" ] ( "host" ADDR | "net" CIDR | "port" N | "portrange" N-M )
//!           | ( "tcp" | "udp" | "sctp" ) [ [ "src" | "dst" ] ( "port" N | "portrange" N-M ) ]
//!           | "icmp" | "icmp6" | "ip" | "ip6" | "proto" N | "vlan" [ N ] | "tunnel"
//! ```
//! `src` is the flow's initiator, `dst` its responder; without either, a primitive matches
//! both ends. `ip`/`ip6` select the address family, `vlan N` the outer or inner VLAN id. An
//! empty filter (or `all`) selects every flow. Errors name the token and its position.

use std::net::IpAddr;

use super::columns::in_prefix;
use super::meter::RecordSink;
use super::record::FlowRecord;

/// A syntax error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("flow filter: {reason} at token {index} ({token:?})")]
pub struct FilterError {
    /// Position (0-based) of the offending token.
    pub index: usize,
    /// The token (empty at the end of the text).
    pub token: String,
    /// What was expected.
    pub reason: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Src,
    Dst,
    Either,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    All,
    Not(Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Net(Side, IpAddr, u8),
    Ports(Side, u16, u16),
    Proto(u8),
    Family(u8),
    Vlan(Option<u16>),
    Tunnel,
}

/// A compiled filter.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowFilter {
    root: Node,
    text: String,
}

impl Default for FlowFilter {
    fn default() -> Self {
        FlowFilter {
            root: Node::All,
            text: String::new(),
        }
    }
}

struct P<'a> {
    t: Vec<&'a str>,
    i: usize,
    depth: usize,
}

/// Deepest nesting of parentheses and `not`s accepted (the parser recurses).
const MAX_DEPTH: usize = 64;

impl<'a> P<'a> {
    fn peek(&self) -> Option<&'a str> {
        self.t.get(self.i).copied()
    }
    fn next(&mut self) -> Option<&'a str> {
        let v = self.peek();
        self.i += 1;
        v
    }
    fn err(&self, reason: &'static str) -> FilterError {
        FilterError {
            index: self.i.min(self.t.len()),
            token: self.peek().unwrap_or("").to_string(),
            reason,
        }
    }
    fn expr(&mut self) -> Result<Node, FilterError> {
        let mut n = self.term()?;
        while matches!(self.peek(), Some("or" | "||")) {
            self.i += 1;
            n = Node::Or(Box::new(n), Box::new(self.term()?));
        }
        Ok(n)
    }
    fn term(&mut self) -> Result<Node, FilterError> {
        let mut n = self.factor()?;
        while matches!(self.peek(), Some("and" | "&&")) {
            self.i += 1;
            n = Node::And(Box::new(n), Box::new(self.factor()?));
        }
        Ok(n)
    }
    fn factor(&mut self) -> Result<Node, FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        let r = self.factor_inner();
        self.depth -= 1;
        r
    }
    fn factor_inner(&mut self) -> Result<Node, FilterError> {
        match self.peek() {
            Some("not" | "!") => {
                self.i += 1;
                Ok(Node::Not(Box::new(self.factor()?)))
            }
            Some("(") => {
                self.i += 1;
                let n = self.expr()?;
                if self.next() != Some(")") {
                    self.i -= 1;
                    return Err(self.err("expected ')'"));
                }
                Ok(n)
            }
            Some(_) => self.primitive(),
            None => Err(self.err("expected a primitive")),
        }
    }
    fn side(&mut self) -> Side {
        match self.peek() {
            Some("src") => {
                self.i += 1;
                Side::Src
            }
            Some("dst") => {
                self.i += 1;
                Side::Dst
            }
            _ => Side::Either,
        }
    }
    fn number<T: std::str::FromStr>(&mut self, reason: &'static str) -> Result<T, FilterError> {
        match self.peek().and_then(|s| s.parse().ok()) {
            Some(v) => {
                self.i += 1;
                Ok(v)
            }
            None => Err(self.err(reason)),
        }
    }
    fn ports(&mut self, side: Side) -> Result<Option<Node>, FilterError> {
        match self.peek() {
            Some("port") => {
                self.i += 1;
                let p = self.number::<u16>("expected a port number")?;
                Ok(Some(Node::Ports(side, p, p)))
            }
            Some("portrange") => {
                self.i += 1;
                let r = self.peek().and_then(|s| {
                    let (a, b) = s.split_once('-')?;
                    Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?))
                });
                match r {
                    Some((a, b)) if a <= b => {
                        self.i += 1;
                        Ok(Some(Node::Ports(side, a, b)))
                    }
                    _ => Err(self.err("expected a port range N-M")),
                }
            }
            _ => Ok(None),
        }
    }
    fn primitive(&mut self) -> Result<Node, FilterError> {
        let side = self.side();
        match self.peek() {
            Some("host") => {
                self.i += 1;
                let a: IpAddr = self.number("expected an IP address")?;
                Ok(Node::Net(side, a, if a.is_ipv4() { 32 } else { 128 }))
            }
            Some("net") => {
                self.i += 1;
                let r = self.peek().and_then(|s| {
                    let (a, l) = s.split_once('/').unwrap_or((s, ""));
                    let a: IpAddr = a.parse().ok()?;
                    let max = if a.is_ipv4() { 32 } else { 128 };
                    let l = if l.is_empty() { max } else { l.parse().ok()? };
                    (l <= max).then_some((a, l))
                });
                match r {
                    Some((a, l)) => {
                        self.i += 1;
                        Ok(Node::Net(side, a, l))
                    }
                    None => Err(self.err("expected a network ADDR/LEN")),
                }
            }
            Some("port" | "portrange") => Ok(self.ports(side)?.unwrap_or(Node::All)),
            Some(w @ ("tcp" | "udp" | "sctp")) if side == Side::Either => {
                self.i += 1;
                let proto = match w {
                    "tcp" => 6,
                    "udp" => 17,
                    _ => 132,
                };
                let side = self.side();
                match self.ports(side)? {
                    Some(p) => Ok(Node::And(Box::new(Node::Proto(proto)), Box::new(p))),
                    None if side == Side::Either => Ok(Node::Proto(proto)),
                    None => Err(self.err("expected 'port' or 'portrange'")),
                }
            }
            Some("icmp") if side == Side::Either => {
                self.i += 1;
                Ok(Node::Proto(1))
            }
            Some("icmp6") if side == Side::Either => {
                self.i += 1;
                Ok(Node::Proto(58))
            }
            Some("ip") if side == Side::Either => {
                self.i += 1;
                Ok(Node::Family(4))
            }
            Some("ip6") if side == Side::Either => {
                self.i += 1;
                Ok(Node::Family(6))
            }
            Some("proto") if side == Side::Either => {
                self.i += 1;
                Ok(Node::Proto(self.number("expected a protocol number")?))
            }
            Some("vlan") if side == Side::Either => {
                self.i += 1;
                match self.peek().and_then(|s| s.parse::<u16>().ok()) {
                    Some(v) => {
                        self.i += 1;
                        Ok(Node::Vlan(Some(v)))
                    }
                    None => Ok(Node::Vlan(None)),
                }
            }
            Some("tunnel") if side == Side::Either => {
                self.i += 1;
                Ok(Node::Tunnel)
            }
            _ => Err(self.err("expected host, net, port, portrange, tcp, udp, sctp, icmp, icmp6, ip, ip6, proto, vlan or tunnel")),
        }
    }
}

fn tokens(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        let single = matches!(c, '(' | ')');
        if c.is_whitespace() || single {
            if let Some(s) = start.take() {
                out.push(&text[s..i]);
            }
            if single {
                out.push(&text[i..i + 1]);
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push(&text[s..]);
    }
    out
}

impl FlowFilter {
    /// Compiles `text` (empty or `all`: every flow).
    pub fn parse(text: &str) -> Result<FlowFilter, FilterError> {
        let t = tokens(text);
        if t.is_empty() || t == ["all"] {
            return Ok(FlowFilter {
                root: Node::All,
                text: text.to_string(),
            });
        }
        let mut p = P { t, i: 0, depth: 0 };
        let root = p.expr()?;
        if p.peek().is_some() {
            return Err(p.err("expected 'and', 'or' or the end"));
        }
        Ok(FlowFilter {
            root,
            text: text.to_string(),
        })
    }

    /// The filter that selects every flow.
    pub fn all() -> FlowFilter {
        FlowFilter {
            root: Node::All,
            text: "all".into(),
        }
    }

    /// The filter's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// `true` when the filter selects every flow.
    pub fn is_all(&self) -> bool {
        self.root == Node::All
    }

    /// Whether `r` passes.
    pub fn matches(&self, r: &FlowRecord) -> bool {
        eval(&self.root, r)
    }
}

/// A sink that passes on the records a filter selects and counts the others (`mpcom replay
/// --filter`).
#[derive(Debug)]
pub struct Filtered<S> {
    filter: FlowFilter,
    /// The sink the selected records go to.
    pub inner: S,
    /// Records the filter did not select.
    pub rejected: u64,
}

impl<S> Filtered<S> {
    /// `inner`, fed the records `filter` selects.
    pub fn new(filter: FlowFilter, inner: S) -> Self {
        Filtered {
            filter,
            inner,
            rejected: 0,
        }
    }
}

impl<S: RecordSink> RecordSink for Filtered<S> {
    fn record(&mut self, rec: &FlowRecord, name: &[u8]) {
        if self.filter.matches(rec) {
            self.inner.record(rec, name);
        } else {
            self.rejected += 1;
        }
    }
    fn flush(&mut self, w: u64) {
        self.inner.flush(w);
    }
    fn cut_done(&mut self, c: u64) {
        self.inner.cut_done(c);
    }
    fn iface(&mut self, until: u64, stats: super::iface::IfaceStats) {
        self.inner.iface(until, stats);
    }
    fn finish(&mut self) {
        self.inner.finish();
    }
}

fn eval(n: &Node, r: &FlowRecord) -> bool {
    match n {
        Node::All => true,
        Node::Not(a) => !eval(a, r),
        Node::And(a, b) => eval(a, r) && eval(b, r),
        Node::Or(a, b) => eval(a, r) || eval(b, r),
        Node::Net(side, net, len) => {
            let (s, d) = (r.source().0, r.destination().0);
            let m = |a: IpAddr| in_prefix(a, *net, *len);
            match side {
                Side::Src => m(s),
                Side::Dst => m(d),
                Side::Either => m(s) || m(d),
            }
        }
        Node::Ports(side, lo, hi) => {
            if !matches!(r.key.protocol, 6 | 17 | 132) {
                return false;
            }
            let (s, d) = (r.source().1, r.destination().1);
            let m = |p: u16| (*lo..=*hi).contains(&p);
            match side {
                Side::Src => m(s),
                Side::Dst => m(d),
                Side::Either => m(s) || m(d),
            }
        }
        Node::Proto(p) => r.key.protocol == *p,
        Node::Family(v) => r.key.ip_version == *v,
        Node::Vlan(None) => r.key.vlans[0] != 0,
        Node::Vlan(Some(v)) => r.key.vlans[0] == *v || r.key.vlans[1] == *v,
        Node::Tunnel => r.key.tunnel != 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mplane_capture::builder::Builder;
    use mplane_capture::flow::FlowKey;
    use mplane_capture::packet::{LinkType, dissect};

    fn rec(frame: &[u8]) -> FlowRecord {
        let (key, dir) = FlowKey::from_dissection(&dissect(LinkType::ETHERNET, frame)).unwrap();
        FlowRecord {
            key,
            initiator_is_b: dir == mplane_capture::flow::Direction::Reverse,
            ..FlowRecord::default()
        }
    }

    #[test]
    fn primitives_and_logic() {
        let web = rec(&Builder::ethernet()
            .vlan(20)
            .ipv4([10, 0, 0, 5], [192, 0, 2, 80])
            .tcp(40000, 443, 1, 0, 2)
            .build());
        let dns6 = rec(&Builder::ethernet()
            .ipv6(
                [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9],
                [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 53],
            )
            .udp(5353, 53)
            .build());
        let ok = |f: &str, r: &FlowRecord| FlowFilter::parse(f).unwrap().matches(r);
        assert!(ok("", &web) && ok("all", &dns6));
        assert!(ok("tcp", &web) && !ok("tcp", &dns6));
        assert!(ok("tcp dst port 443", &web) && !ok("tcp src port 443", &web));
        assert!(ok("src host 10.0.0.5", &web) && !ok("dst host 10.0.0.5", &web));
        assert!(ok("net 10.0.0.0/8 and not udp", &web));
        assert!(ok("ip6 and udp port 53", &dns6));
        assert!(ok("portrange 50-60", &dns6) && !ok("portrange 54-60", &dns6));
        assert!(ok("vlan 20", &web) && ok("vlan", &web) && !ok("vlan", &dns6));
        assert!(ok("(tcp or udp) && !(port 22)", &web));
        assert!(ok("ip && proto 6", &web));
        assert!(ok("net 2001:db8::/32", &dns6));
        assert!(!ok("tunnel", &web));
    }

    #[test]
    fn errors_name_the_token() {
        let e = FlowFilter::parse("tcp port eighty").unwrap_err();
        assert_eq!((e.index, e.token.as_str()), (2, "eighty"));
        assert!(FlowFilter::parse("(tcp").is_err());
        assert!(FlowFilter::parse("tcp or").is_err());
        assert!(FlowFilter::parse("net 10.0.0.0/33").is_err());
        assert!(FlowFilter::parse("host").is_err());
        assert!(FlowFilter::parse("tcp udp").is_err());
        assert!(FlowFilter::parse("src tcp").is_err());
        assert!(FlowFilter::parse("portrange 9-1").is_err());
        assert!(FlowFilter::parse("(((((").is_err());
        let deep = "(".repeat(100_000) + "tcp" + &")".repeat(100_000);
        assert_eq!(
            FlowFilter::parse(&deep).unwrap_err().reason,
            "nested too deeply"
        );
        let nots = "not ".repeat(100_000) + "tcp";
        assert!(FlowFilter::parse(&nots).is_err());
    }
}
