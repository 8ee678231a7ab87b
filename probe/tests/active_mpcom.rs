//! Active measurements end to end: `mpcom` runs the reference SDK's ping configuration
//! section unchanged (`module = mplane.components.ping`, `ip4addr`, `ip6addr`), a
//! `tcpconnect` and a `traceroute` section over mutual TLS; our client and the reference
//! client (`mplane-sdk` from PyPI) each send specifications for loopback and get one
//! measurement per second of scope, and a trace. Needs `openssl`, an ICMP socket (root or
//! `CAP_NET_RAW`, or `net.ipv4.ping_group_range`) and PyPI.

#[path = "../../control/tests/common/pki.rs"]
mod pki;

#[path = "../../control/tests/support/peer.rs"]
mod peer;

#[path = "support/mpcom_process.rs"]
mod mpcom_process;

#[path = "support/component.rs"]
mod component;

use std::process::Stdio;

use component::{connect, result, spec_for};
use mpcom_process::{Mpcom, free_port};
use mplane::model::{self, Message, Statement, WhenText};
use mplane::value::Value;
use pki::Pki;

/// `mpcom` with the reference's ping section, a TCP connect and a traceroute section; its
/// port.
fn start(pki: &Pki) -> (Mpcom, u16) {
    let tls = pki.tls_section();
    let port = free_port();
    let conf = format!(
        "{tls}[Roles]\norg.mplane.SSB.Clients.Client-1 = guest\n\n\
         [Authorizations]\nping = guest\ntcpconnect = guest\ntraceroute = guest\n\n\
         [module_ping]\nmodule = mplane.components.ping\nip4addr = 127.0.0.1\nip6addr = ::1\n\n\
         [module_tcp]\nmodule = tcpconnect\nip4addr = 127.0.0.1\n\n\
         [module_trace]\nmodule = traceroute\nip4addr = 127.0.0.1\nip6addr = ::1\n\n\
         [component]\nworkflow = client-initiated\nlisten-port = {port}\n\
         listen-cap-link = https://127.0.0.1:{port}/\n"
    );
    let path = pki.dir().join("ping.conf");
    std::fs::write(&path, conf).unwrap();
    Mpcom::start(&path, Stdio::inherit())
}

/// `true` if this process may open an ICMP socket (else the test is skipped).
fn icmp_allowed() -> bool {
    let ip = "127.0.0.1".parse().unwrap();
    match mplane_probe::active::ping::Pinger::new(ip, ip) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("skipping: {e}");
            false
        }
    }
}

fn count_and_range(r: &Statement) -> (u64, u64, u64, u64) {
    let row = r.rows().row(0);
    let n = |i: usize| {
        row.cell(i)
            .as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    };
    (n(3), n(0), n(1), n(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_measures_loopback_through_mpcom() {
    if !icmp_allowed() {
        return;
    }
    let pki = Pki::new();
    let (_mpcom, port) = start(&pki);
    let (client, base, caps) = connect(&pki, port, "client").await;
    let mut labels: Vec<_> = caps.iter().filter_map(|c| c.label.clone()).collect();
    labels.sort();
    assert_eq!(
        labels,
        [
            "ping-average-ip4",
            "ping-average-ip6",
            "ping-detail-ip4",
            "ping-detail-ip6",
            "tcpconnect-average-ip4",
            "tcpconnect-detail-ip4",
            "traceroute-ip4",
            "traceroute-ip6"
        ]
    );
    // ping over both IP versions, and TCP connection set-up to a listener of this test
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_port = u64::from(listener.local_addr().unwrap().port());
    let address = |a: &str| Value::Address(a.parse().unwrap());
    for (label, params) in [
        (
            "ping-average-ip4",
            vec![("destination.ip4", address("127.0.0.1"))],
        ),
        (
            "ping-average-ip6",
            vec![("destination.ip6", address("::1"))],
        ),
        (
            "tcpconnect-average-ip4",
            vec![
                ("destination.ip4", address("127.0.0.1")),
                ("destination.port", Value::Natural(tcp_port)),
            ],
        ),
    ] {
        let mut spec = spec_for(&caps, label, &params);
        spec.when = Some(WhenText::parse("now + 3s / 1s").unwrap());
        spec.token = Some(spec.client_token(mplane::component::now()));
        let rep = result(&client, &base, &spec).await;
        let Message::Statement(r) = &rep else {
            panic!("{label}: {}", rep.unparse())
        };
        assert_eq!(r.kind.key(), "result", "{}", rep.unparse());
        let (count, min, mean, max) = count_and_range(r);
        assert_eq!(count, 3, "{label}: {}", rep.unparse());
        assert!(
            min <= mean && mean <= max && max < 1_000_000,
            "{}",
            rep.unparse()
        );
    }
    drop(listener);
    // a trace of loopback: one hop, three probes, each answered by loopback itself
    let mut spec = spec_for(
        &caps,
        "traceroute-ip4",
        &[
            ("destination.ip4", address("127.0.0.1")),
            ("hops.ip.max", Value::Natural(5)),
        ],
    );
    spec.when = Some(WhenText::parse("now").unwrap());
    spec.token = Some(spec.client_token(mplane::component::now()));
    let rep = result(&client, &base, &spec).await;
    let Message::Statement(r) = &rep else {
        panic!("{}", rep.unparse())
    };
    assert_eq!(r.rows().len(), 3, "{}", rep.unparse());
    for i in 0..3 {
        let row = r.rows().row(i);
        assert_eq!(row.cell(1).as_str(), Some("1"), "{}", rep.unparse());
        assert_eq!(row.cell(2).as_str(), Some("127.0.0.1"), "{}", rep.unparse());
    }
}

/// The reference client discovers the capabilities, invokes three of them for loopback (one
/// also with a repeated scope) and reads the results back.
const REF_DRIVER: &str = r#"
discover()
out = {"caps": sorted(client.capability_labels())}
out["detail6"] = run("ping-detail-ip6", "now + 3s / 1s", {"destination.ip6": "::1"})
out["average4"] = run("ping-average-ip4", "now + 3s / 1s", {"destination.ip4": "127.0.0.1"})
out["tcp"] = run("tcpconnect-detail-ip4", "now + 2s / 1s",
                {"destination.ip4": "127.0.0.1", "destination.port": str(args["port"])})
out["trace6"] = run("traceroute-ip6", "now", {"destination.ip6": "::1", "hops.ip.max": "5"})
# redeemed once both repetitions are over (earlier, the envelope holds those so far)
out["repeat4"] = run("ping-average-ip4", "repeat now + 4s / 2s { now + 2s / 1s }",
                     {"destination.ip4": "127.0.0.1"}, settle=5.0)
print(json.dumps(out))
"#;

#[test]
fn reference_client_measures_loopback_through_mpcom() {
    if !icmp_allowed() {
        return;
    }
    let pki = Pki::new();
    let (_mpcom, port) = start(&pki);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let registry = concat!(env!("CARGO_MANIFEST_DIR"), "/registry/probe.json");
    let input = serde_json::json!({
        "pki": pki.dir(), "url": format!("https://127.0.0.1:{port}"), "registry": registry,
        "port": listener.local_addr().unwrap().port(),
    });
    let out = peer::run_client_script(REF_DRIVER, &input.to_string());
    let out: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    // the reference client knows the ping capabilities (core registry), the TCP and the
    // traceroute ones (the probe's registry, preloaded)
    assert_eq!(out["caps"].as_array().unwrap().len(), 8, "{}", out["caps"]);
    drop(listener);
    let regs = mplane_probe::registry::registries().unwrap();
    let parse = |k: &str| match model::parse(out[k].as_str().unwrap(), &regs) {
        Ok(Message::Statement(s)) if s.kind.key() == "result" => s,
        other => panic!("{k}: {other:?}: {}", out[k]),
    };
    let detail = parse("detail6");
    assert_eq!(detail.rows().len(), 3, "{}", out["detail6"]);
    let average = parse("average4");
    let (count, min, mean, max) = count_and_range(&average);
    assert_eq!(count, 3, "{}", out["average4"]);
    assert!(min <= mean && mean <= max, "{}", out["average4"]);
    // TCP connections, one row per attempt, each established
    let tcp = parse("tcp");
    assert_eq!(tcp.rows().len(), 2, "{}", out["tcp"]);
    for i in 0..2 {
        assert_eq!(
            tcp.rows().row(i).cell(2).as_str(),
            Some("True"),
            "{}",
            out["tcp"]
        );
    }
    // a trace of IPv6 loopback: three probes at the first hop, answered by ::1
    let trace = parse("trace6");
    assert_eq!(trace.rows().len(), 3, "{}", out["trace6"]);
    for i in 0..3 {
        let row = trace.rows().row(i);
        assert_eq!(row.cell(1).as_str(), Some("1"), "{}", out["trace6"]);
        assert_eq!(row.cell(2).as_str(), Some("::1"), "{}", out["trace6"]);
    }
    // a repeated specification: an envelope with a result per repetition, each of its
    // two-second inner scope
    let Ok(Message::Envelope(env)) = model::parse(out["repeat4"].as_str().unwrap(), &regs) else {
        panic!("{}", out["repeat4"])
    };
    assert_eq!(env.contents.len(), 2, "{}", out["repeat4"]);
    for m in &env.contents {
        let Message::Statement(r) = m else {
            panic!("{}", out["repeat4"])
        };
        assert_eq!(r.kind.key(), "result", "{}", out["repeat4"]);
        assert_eq!(count_and_range(r).0, 2, "{}", out["repeat4"]);
    }
}
