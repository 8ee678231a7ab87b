//! Passive capabilities served by `mpcom` over mutual TLS, with a capture file replayed at
//! its own pace as the source (`source = pcap:FILE`): our client and the reference Python
//! client (with the probe's registry preloaded) run flow, tstat and interface capabilities
//! and read the results. Needs `openssl`; the reference part needs the peer venv.

#[path = "../../control/tests/common/pki.rs"]
mod pki;

#[path = "../../control/tests/support/peer.rs"]
#[allow(clippy::incompatible_msrv)]
mod peer;

use mplane::model::{self, Message};
use mplane::value::Value;
use pki::Pki;

#[path = "support/component.rs"]
mod component;
#[path = "support/mpcom_process.rs"]
mod mpcom_process;
use component::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passive_capabilities_over_mtls() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("tap.pcap");
    capture(&pcap);
    let (_mpcom, port) = start(&pki, &pcap, &dir.path().join("export"), false);
    let (client, base, caps) = connect(&pki, port, "client").await;
    let mut labels: Vec<&str> = caps.iter().filter_map(|c| c.label.as_deref()).collect();
    labels.sort();
    assert_eq!(
        labels,
        [
            "flows-export",
            "flows-ip4",
            "flows-ip6",
            "interface-rates",
            "interface-summary",
            "interface-toptalkers-ip4",
            "interface-toptalkers-ip6",
            "tstat-log_tcp_complete-core",
            "tstat-log_tcp_complete-core-ip6"
        ]
    );
    let tap = Value::String("tap0".into());
    let all = Value::String(String::new());
    let specs = [
        spec_for(
            &caps,
            "flows-ip4",
            &[
                ("observer.interface", tap.clone()),
                ("flow.filter", all.clone()),
            ],
        ),
        spec_for(
            &caps,
            "flows-ip6",
            &[
                ("observer.interface", tap.clone()),
                ("flow.filter", all.clone()),
            ],
        ),
        spec_for(
            &caps,
            "tstat-log_tcp_complete-core",
            &[("System_ID", Value::String("probe-test".into()))],
        ),
        spec_for(
            &caps,
            "interface-summary",
            &[("observer.interface", tap.clone())],
        ),
        spec_for(
            &caps,
            "interface-toptalkers-ip4",
            &[
                ("observer.interface", tap.clone()),
                ("talkers.max", Value::Natural(5)),
            ],
        ),
        spec_for(
            &caps,
            "flows-ip4",
            &[
                ("observer.interface", tap.clone()),
                ("flow.filter", Value::String("udp and port 53".into())),
            ],
        ),
    ];
    let replies = futures_join(&client, &base, &specs).await;
    let st = |m: &Message| match m {
        Message::Statement(s) if s.kind.key() == "result" => s.clone(),
        m => panic!("not a result: {}", m.unparse()),
    };

    // flows-ip4: the TCP connection and the DNS exchange; inline_rows = 1 keeps the one with
    // more octets inline and exports both
    let f4 = st(&replies[0]);
    assert_eq!(f4.token, specs[0].token);
    assert_eq!(meta(&f4, "result.rows.total"), "2");
    assert_eq!(meta(&f4, "result.rows.inline"), "1");
    assert_eq!(meta(&f4, "capture.clock"), "file-rebased");
    assert_eq!(meta(&f4, "capture.drops.kernel"), "0");
    assert_eq!(meta(&f4, "System_ID"), "probe-test");
    let url = meta(&f4, "export.url");
    assert!(
        url.starts_with(&format!("https://127.0.0.1:{port}/export/")),
        "{url}"
    );
    assert_eq!(f4.rows().len(), 1);
    assert_eq!(col(&f4, 0, "request.hostname"), "probe.example");
    assert_eq!(col(&f4, 0, "packets.forward"), "5");
    assert_eq!(col(&f4, 0, "packets.backward"), "3");
    assert_eq!(col(&f4, 0, "flow.end.reason"), "fin");
    assert_eq!(col(&f4, 0, "source.port"), "41000");
    assert_eq!(col(&f4, 0, "rtt.handshake.destination.ms"), "10.0");
    let exported = std::fs::read_dir(dir.path().join("export"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .expect("an exported file");
    assert!(
        url.ends_with(exported.file_name().unwrap().to_str().unwrap()),
        "{url}"
    );

    let f6 = st(&replies[1]);
    assert_eq!(f6.rows().len(), 1);
    assert_eq!(col(&f6, 0, "source.ip6"), "2001:db8::1");
    assert_eq!(col(&f6, 0, "packets.forward"), "3");
    assert_eq!(col(&f6, 0, "packets.backward"), "1");

    let t = st(&replies[2]);
    assert_eq!(t.rows().len(), 1, "only the TCP flow");
    assert_eq!(col(&t, 0, "packets.forward.syn"), "1");
    assert_eq!(col(&t, 0, "source.ip4.isinternal"), "True");
    assert_eq!(col(&t, 0, "destination.ip4.isinternal"), "False");
    assert_eq!(col(&t, 0, "tstat.flow.class.conn"), "http");

    let s = st(&replies[3]);
    assert_eq!(s.rows().len(), 1);
    assert_eq!(col(&s, 0, "packets.ip"), "14");
    assert_eq!(col(&s, 0, "packets.ip6"), "4");
    assert_eq!(col(&s, 0, "packets.tcp"), "8");
    assert_eq!(col(&s, 0, "flows.active"), "3");

    let top = st(&replies[4]);
    assert_eq!(col(&top, 0, "talker.rank"), "1");
    assert!(top.rows().len() <= 5 && top.rows().len() >= 3);

    let dns = st(&replies[5]);
    assert_eq!(dns.rows().len(), 1);
    assert_eq!(col(&dns, 0, "dns.qname"), "hello.example");
    assert_eq!(col(&dns, 0, "dns.rcode"), "0");

    // a bad filter is an mPlane exception naming the problem
    let bad = spec_for(
        &caps,
        "flows-ip4",
        &[
            ("observer.interface", tap),
            ("flow.filter", Value::String("tcp port x".into())),
        ],
    );
    match result(&client, &base, &bad).await {
        Message::Exception(e) => assert!(e.message.contains("flow filter"), "{}", e.message),
        m => panic!("{}", m.unparse()),
    }

    // the registry is served
    let reply = client
        .request(hyper::Method::GET, &base.with_path("/registry/probe"), None)
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert!(
        String::from_utf8_lossy(&reply.body).contains(mplane_probe::registry::PROBE_REGISTRY_URI)
    );
}

const REF_DRIVER: &str = r#"
discover()
out = {"caps": sorted(client.capability_labels())}
out["flows"] = run("flows-ip4", "now + 3s", {"observer.interface": "tap0", "flow.filter": "tcp"})
out["summary"] = run("interface-summary", "now + 3s", {"observer.interface": "tap0"})
out["tstat"] = run("tstat-log_tcp_complete-core", "now + 3s", {"System_ID": "probe-test"})
print(json.dumps(out))
"#;

#[test]
fn reference_client_parses_passive_results() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("tap.pcap");
    capture(&pcap);
    // the reference client runs one job after the other: the file repeats for each
    let (_mpcom, port) = start(&pki, &pcap, &dir.path().join("export"), true);
    let registry = concat!(env!("CARGO_MANIFEST_DIR"), "/registry/probe.json");
    let input = serde_json::json!({
        "pki": pki.dir(), "url": format!("https://127.0.0.1:{port}"),
        "registry": registry,
    });
    let out = peer::run_client_script(REF_DRIVER, &input.to_string());
    let out: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(out["caps"].as_array().unwrap().len(), 9, "{}", out["caps"]);
    let regs = regs();
    let parse = |k: &str| match model::parse(out[k].as_str().unwrap(), &regs) {
        Ok(Message::Statement(s)) if s.kind.key() == "result" => s,
        other => panic!("{k}: {other:?}: {}", out[k]),
    };
    let flows = parse("flows");
    assert!(!flows.rows().is_empty());
    for i in 0..flows.rows().len() {
        assert_eq!(
            col(&flows, i, "request.hostname"),
            "probe.example",
            "the filter kept TCP"
        );
    }
    let summary = parse("summary");
    let ip: u64 = col(&summary, 0, "packets.ip")
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ip >= 14, "at least one pass over the file: {ip}");
    assert_eq!(meta(&summary, "capture.clock"), "file-rebased");
    let tstat = parse("tstat");
    assert!(!tstat.rows().is_empty());
    assert_eq!(col(&tstat, 0, "source.port"), "41000");
}
