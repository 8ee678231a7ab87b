//! Fuzz the application metadata engine (DNS, TLS server name, HTTP `Host`, QUIC Initial
//! server name) with arbitrary payloads over three flows.
//!
//! Input: records of `[op][ports][len lo][len hi]` (and `[seq; 4]` for TCP), then `len`
//! payload bytes. `op` bit 0: TCP (else UDP); bit 1: from the initiator; bits 2–3: the flow;
//! bit 7: release the flow afterwards (its slots are reused). `ports` picks both ports.
//! Properties: no panic; every name the engine keeps is printable ASCII (the presentation
//! form) of at most 255 bytes whose every backslash starts a whole escape (`\\`, `\.` or
//! `\DDD` with DDD ≤ 255: a name cut to fit never ends inside one); releasing every flow
//! returns every string slot.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mplane_probe::passive::app::{AppConfig, AppEngine, AppState};

const PORTS: [u16; 8] = [53, 443, 80, 5353, 8443, 40000, 8080, 5355];

fn check(e: &AppEngine, st: &AppState) {
    let name = e.name(st);
    assert!(name.len() <= 255);
    assert!(
        name.iter().all(|c| (0x21..=0x7e).contains(c)),
        "{:?}",
        String::from_utf8_lossy(name)
    );
    let mut rest = name;
    while let Some(at) = rest.iter().position(|&c| c == b'\\') {
        rest = &rest[at + 1..];
        let width = match rest {
            [b'\\' | b'.', ..] => 1,
            [a @ b'0'..=b'2', b @ b'0'..=b'9', c @ b'0'..=b'9', ..]
                if u32::from(a - b'0') * 100 + u32::from(b - b'0') * 10 + u32::from(c - b'0')
                    <= 255 =>
            {
                3
            }
            _ => panic!("broken escape in {:?}", String::from_utf8_lossy(name)),
        };
        rest = &rest[width..];
    }
}

fuzz_target!(|data: &[u8]| {
    // few slots, so that running out of them is exercised too
    let mut e = AppEngine::new(AppConfig {
        string_slots: 2,
        reassembly_slots: 2,
        ..AppConfig::default()
    });
    let mut flows = [AppState::default(); 3];
    let mut p = 0;
    while p + 4 <= data.len() {
        let (op, ports) = (data[p], data[p + 1]);
        let len = usize::from(u16::from_le_bytes([data[p + 2], data[p + 3]]));
        p += 4;
        let tcp = op & 1 != 0;
        let mut seq = 0;
        if tcp {
            let Some(s) = data.get(p..p + 4) else { break };
            seq = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            p += 4;
        }
        let payload = &data[p..(p + len).min(data.len())];
        p += payload.len();
        let st = &mut flows[usize::from(op >> 2 & 3) % 3];
        let from_initiator = op & 2 != 0;
        let client = PORTS[usize::from(ports & 7)];
        let server = PORTS[usize::from(ports >> 3 & 7)];
        let (sport, dport) = if from_initiator {
            (client, server)
        } else {
            (server, client)
        };
        if tcp {
            e.tcp(st, from_initiator, sport, dport, seq, payload);
        } else {
            e.udp(st, from_initiator, sport, dport, payload);
        }
        check(&e, st);
        if op & 0x80 != 0 {
            e.release(st);
        }
    }
    for st in &mut flows {
        check(&e, st);
        e.release(st);
    }
    assert_eq!(e.strings_used(), 0);
});
