//! A seeded generator of valid mPlane messages over the core registry, for
//! property tests and the cross-check against the reference SDK.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use mplane::model::{Message, Statement, StatementKind};
use mplane::registry::{Primitive, Registries};
use mplane::value::{TimeValue, Timestamp, Value};
use mplane::when::When;

/// SplitMix64: small, fast, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

const WORDS: &[&str] = &[
    "eth0",
    "probe",
    "caf\u{e9}",
    "a\"q",
    "b\\s",
    "x y",
    "\u{1f600}",
    "tab\tbed",
    "line\nbreak",
    "plain",
];

/// A random value of `prim` (never `*`).
pub fn value(r: &mut Rng, prim: Primitive) -> Value {
    match prim {
        Primitive::String => Value::String(format!("{}-{}", r.pick(WORDS), r.below(1000))),
        Primitive::Url => Value::Url(format!("https://example.net/p/{}", r.below(100_000))),
        Primitive::Natural => Value::Natural(match r.below(3) {
            0 => r.below(100),
            1 => r.below(1_000_000),
            _ => r.below(1 << 50),
        }),
        Primitive::Real => Value::Real(match r.below(4) {
            0 => r.below(1000) as f64 / 8.0,
            1 => (r.next() >> 11) as f64 / (1u64 << 53) as f64 * 1e-6,
            2 => (r.next() >> 11) as f64 * 1e3,
            _ => (r.below(2_000_000) as f64 - 1e6) / 7.0,
        }),
        Primitive::Boolean => Value::Boolean(r.chance(50)),
        Primitive::Time => Value::Time(TimeValue::At(timestamp(r))),
        Primitive::Address => Value::Address(address(r)),
    }
}

pub fn timestamp(r: &mut Rng) -> Timestamp {
    // 1995 .. 2045, µs resolution
    let base = 788_918_400_000_000i64;
    let span = 1_577_836_800_000_000i64;
    let us = base + (r.next() % span as u64) as i64;
    Timestamp::from_micros(if r.chance(30) {
        us - us % 1_000_000
    } else {
        us
    })
}

pub fn address(r: &mut Rng) -> IpAddr {
    if r.chance(60) {
        IpAddr::V4(Ipv4Addr::from(r.next() as u32))
    } else {
        let mut segs = [0u16; 8];
        for s in segs.iter_mut() {
            *s = if r.chance(40) { 0 } else { r.next() as u16 };
        }
        IpAddr::V6(Ipv6Addr::from(segs))
    }
}

fn duration(r: &mut Rng) -> String {
    mplane::when::Duration(*r.pick(&[1u64, 5, 30, 60, 90, 600, 3600, 3661, 86_400, 90_061]))
        .to_string()
}

/// A random temporal scope for `kind`.
pub fn when(r: &mut Rng, kind: StatementKind) -> String {
    let t = |r: &mut Rng| timestamp(r).to_string();
    match kind {
        StatementKind::Result => {
            let a = timestamp(r);
            if r.chance(20) {
                a.to_string()
            } else {
                format!("{a} ... {}", a.add_micros(r.below(10_000_000_000) as i64))
            }
        }
        StatementKind::Capability => match r.below(5) {
            0 => format!("now ... future / {}", duration(r)),
            1 => "past ... now".into(),
            2 => "now ... future".into(),
            3 => format!("past ... future / {}", duration(r)),
            _ => format!("{} ... future", t(r)),
        },
        _ => match r.below(7) {
            0 => format!("now + {} / {}", duration(r), duration(r)),
            1 => format!("{} + {}", t(r), duration(r)),
            2 => {
                let (a, b) = (timestamp(r), timestamp(r));
                format!("{} ... {} / {}", a.min(b), a.max(b), duration(r))
            }
            3 => "now".into(),
            4 => format!(
                "repeat now + {} / {} {{ now + {} / {} }}",
                duration(r),
                duration(r),
                duration(r),
                duration(r)
            ),
            5 => format!(
                "repeat {} ... future cron {} {} {} * * {} {{ now + {} }}",
                t(r),
                r.below(60),
                r.pick(&["*", "0,15,30,45", "5-10"]),
                r.pick(&["*", "3", "0-23"]),
                r.pick(&["*", "1,6,12"]),
                duration(r)
            ),
            _ => format!("repeat past ... now / {}", duration(r)),
        },
    }
}

fn elements(regs: &Registries) -> Vec<(String, Primitive)> {
    Registries::core()
        .elements()
        .iter()
        .filter(|e| regs.get(mplane::registry::CORE_URI).is_some() && e.name != "System_type")
        .map(|e| (e.name.clone(), e.prim))
        .collect()
}

fn constraint(r: &mut Rng, prim: Primitive) -> String {
    let ordered = matches!(
        prim,
        Primitive::Natural | Primitive::Real | Primitive::Time | Primitive::Address
    );
    match r.below(4) {
        0 => "*".into(),
        1 => value(r, prim).to_string(),
        2 if ordered => {
            let mut a = value(r, prim);
            let mut b = value(r, prim);
            if let (Value::Address(x), Value::Address(y)) = (&a, &b)
                && x.is_ipv4() != y.is_ipv4()
            {
                b = a.clone();
            }
            if a.partial_cmp_same(&b) == Some(std::cmp::Ordering::Greater) {
                std::mem::swap(&mut a, &mut b);
            }
            format!("{a} ... {b}")
        }
        _ => {
            let n = 2 + r.below(3);
            let mut parts: Vec<String> = Vec::new();
            let mut tries = 0;
            while (parts.len() as u64) < n && tries < 50 {
                tries += 1;
                let v = value(r, prim).to_string();
                if !v.contains(',') && !v.contains(" ... ") && !parts.contains(&v) {
                    parts.push(v);
                }
            }
            parts.join(",")
        }
    }
}

/// A random valid message (capability, specification or result) built with
/// the crate's API. Values never contain `,` where a set would split them.
pub fn message(r: &mut Rng) -> Message {
    let regs = Registries::new();
    let els = elements(&regs);
    let kind = *r.pick(&[
        StatementKind::Capability,
        StatementKind::Specification,
        StatementKind::Result,
    ]);
    let verbs = ["measure", "query", "collect"];
    let verb = verbs[r.below(3) as usize];
    let mut s = Statement::new(kind, verb);
    if r.chance(80) {
        s.label = Some(format!("gen-{}", r.below(10_000)));
    }
    if kind == StatementKind::Capability && r.chance(30) {
        s.link = Some(format!("https://127.0.0.1:{}/", 1024 + r.below(60_000)));
    }
    s.set_when(When::parse(&when(r, kind)).expect("generated scope parses"));
    let np = r.below(5);
    for _ in 0..np {
        let (name, prim) = r.pick(&els).clone();
        let text = if kind == StatementKind::Capability {
            constraint(r, prim)
        } else {
            let mut v = value(r, prim).to_string();
            while v.contains(',') {
                v = value(r, prim).to_string();
            }
            v
        };
        s.add_parameter(&name, &text, &regs)
            .expect("generated parameter");
    }
    for _ in 0..r.below(3) {
        let (name, prim) = r.pick(&els).clone();
        let v = value(r, prim);
        s.add_metadata(&name, &v, &regs)
            .expect("generated metadata");
    }
    let nc = 1 + r.below(5);
    for _ in 0..nc {
        let (name, _) = r.pick(&els).clone();
        let _ = s.add_result_column(&name, &regs);
    }
    if kind == StatementKind::Result {
        let prims: Vec<Primitive> = s.columns().iter().map(|c| c.prim).collect();
        for _ in 0..r.below(6) {
            let row: Vec<Option<Value>> = prims
                .iter()
                .map(|p| {
                    // The reference can write but not read a missing time cell.
                    if *p != Primitive::Time && r.chance(10) {
                        None
                    } else {
                        Some(value(r, *p))
                    }
                })
                .collect();
            s.push_row(&row).expect("generated row");
        }
    }
    Message::Statement(s)
}
