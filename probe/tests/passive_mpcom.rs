//! Passive capabilities served by `mpcom` over mutual TLS, with a capture file replayed at
//! its own pace as the source (`source = pcap:FILE`): our client and the reference Python
//! client (with the probe's registry preloaded) run flow, tstat and interface capabilities
//! and read the results. Needs `openssl`; the reference part needs the peer venv.

#[path = "../../control/tests/common/pki.rs"]
mod pki;

#[path = "../../control/tests/support/peer.rs"]
#[allow(clippy::incompatible_msrv)]
mod peer;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use mplane::client::{Client, Url};
use mplane::model::{self, Message, Statement, WhenText};
use mplane::registry::Registries;
use mplane::tls::Connector;
use mplane::value::Value;
use mplane_capture::builder::{Builder, PcapWriter};
use mplane_capture::packet::LinkType;
use mplane_capture::packet::tcp::flags::{ACK, FIN, PSH, SYN};
use pki::Pki;

const C: [u8; 4] = [10, 9, 0, 1];
const S: [u8; 4] = [192, 0, 2, 10];
const MS: u64 = 1_000_000;

/// A small capture: an ARP frame first, then (from 800 ms on) a TCP connection with an HTTP
/// request, a DNS exchange, and an IPv6 UDP exchange.
fn capture(path: &Path) {
    let mut w = PcapWriter::new(
        std::fs::File::create(path).unwrap(),
        LinkType::ETHERNET,
        65535,
        true,
        false,
    )
    .unwrap();
    let t0 = 1_600_000_000_000_000_000u64;
    let mut put = |t: u64, f: Vec<u8>| w.write(t0 + t, &f, f.len() as u32).unwrap();
    put(0, vec![0xff; 60]);
    let tcp =
        |src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16, seq: u32, ack: u32, fl: u16, data: &[u8]| {
            Builder::ethernet()
                .ipv4(src, dst)
                .tcp_with(sp, dp, seq, ack, fl, 1000, &[])
                .payload(data)
                .build()
        };
    put(800 * MS, tcp(C, S, 41000, 80, 1, 0, SYN, b""));
    put(810 * MS, tcp(S, C, 80, 41000, 500, 2, SYN | ACK, b""));
    put(811 * MS, tcp(C, S, 41000, 80, 2, 501, ACK, b""));
    put(
        820 * MS,
        tcp(
            C,
            S,
            41000,
            80,
            2,
            501,
            PSH | ACK,
            b"GET / HTTP/1.1\r\nHost: probe.example\r\n\r\n",
        ),
    );
    put(
        840 * MS,
        tcp(
            S,
            C,
            80,
            41000,
            501,
            41,
            PSH | ACK,
            b"HTTP/1.1 204 No Content\r\n\r\n",
        ),
    );
    put(900 * MS, tcp(C, S, 41000, 80, 41, 528, FIN | ACK, b""));
    put(910 * MS, tcp(S, C, 80, 41000, 528, 42, FIN | ACK, b""));
    put(911 * MS, tcp(C, S, 41000, 80, 42, 529, ACK, b""));
    let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 5];
    q.extend_from_slice(b"hello\x07example\x00\x00\x01\x00\x01");
    let mut a = q.clone();
    a[2] = 0x81;
    a[3] = 0x80;
    put(
        1000 * MS,
        Builder::ethernet()
            .ipv4(C, [9, 9, 9, 9])
            .udp(53000, 53)
            .payload(&q)
            .build(),
    );
    put(
        1020 * MS,
        Builder::ethernet()
            .ipv4([9, 9, 9, 9], C)
            .udp(53, 53000)
            .payload(&a)
            .build(),
    );
    let a6 = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let b6 = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    for i in 0..3 {
        put(
            1100 * MS + i * MS,
            Builder::ethernet()
                .ipv6(a6, b6)
                .udp(7000, 7001)
                .payload(&[1; 50])
                .build(),
        );
    }
    put(
        1200 * MS,
        Builder::ethernet()
            .ipv6(b6, a6)
            .udp(7001, 7000)
            .payload(&[2; 10])
            .build(),
    );
}

struct Mpcom(Child);

impl Drop for Mpcom {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(pki: &Pki, pcap: &Path, export: &Path, repeat: bool) -> (Mpcom, u16) {
    let d = pki.dir().display();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = format!(
        "[TLS]\ncert = {d}/component.crt\nkey = {d}/component.key\nca-chain = {d}/ca.crt\n\n\
         [Roles]\norg.mplane.SSB.Clients.Client-1 = guest\n\n\
         [Authorizations]\nflows = guest\ntstat = guest\ninterface = guest\n\n\
         [module_passive]\nmodule = passive\nsource = pcap:{}\ninterface = tap0\n\
         system_id = probe-test\ninline_rows = 1\nexport_dir = {}\nidle_timeout = 30\nrepeat = {}\n\n\
         [component]\nworkflow = client-initiated\nlisten-port = {port}\n\
         listen-cap-link = https://127.0.0.1:{port}/\n",
        pcap.display(),
        export.display(),
        if repeat { "on" } else { "off" }
    );
    let path = pki.dir().join("passive.conf");
    std::fs::write(&path, conf).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mpcom"))
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening"), "{line:?}");
    (Mpcom(child), port)
}

fn regs() -> Arc<Registries> {
    Arc::new(mplane_probe::registry::registries().unwrap())
}

fn spec_for(caps: &[Statement], label: &str, params: &[(&str, Value)]) -> Statement {
    let cap = caps
        .iter()
        .find(|c| c.label.as_deref() == Some(label))
        .unwrap_or_else(|| panic!("no capability {label}"));
    let mut s = cap.specification_for();
    for (k, v) in params {
        s.set_parameter_value(k, v).unwrap();
    }
    s.when = Some(WhenText::parse("now + 4s").unwrap());
    s.token = Some(s.client_token(mplane::component::now()));
    s
}

async fn result(client: &Client, base: &Url, spec: &Statement) -> Message {
    let mut rep = client.specify(base, spec).await.unwrap();
    for _ in 0..100 {
        match &rep {
            Message::Statement(s) if s.kind.key() == "receipt" => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                rep = client.redeem(base, s).await.unwrap();
            }
            _ => return rep,
        }
    }
    panic!("no result: {}", rep.unparse())
}

fn col<'a>(r: &'a Statement, row: usize, name: &str) -> &'a serde_json::Value {
    let i = r
        .columns()
        .iter()
        .position(|c| c.name == name)
        .unwrap_or_else(|| panic!("no column {name}"));
    &r.rows()[row][i]
}

fn meta(r: &Statement, name: &str) -> String {
    r.metadata(name)
        .unwrap_or_else(|| panic!("no metadata {name}"))
        .text()
        .into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passive_capabilities_over_mtls() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("tap.pcap");
    capture(&pcap);
    let (_mpcom, port) = start(&pki, &pcap, &dir.path().join("export"), false);
    let client = Client::new(Some(Connector::new(&pki.files("client")).unwrap()), regs());
    let base = Url::parse(&format!("https://127.0.0.1:{port}/")).unwrap();
    let caps = client
        .capabilities(&base.with_path("/capability"))
        .await
        .unwrap();
    let mut labels: Vec<&str> = caps.iter().filter_map(|c| c.label.as_deref()).collect();
    labels.sort();
    assert_eq!(
        labels,
        [
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

async fn futures_join(client: &Client, base: &Url, specs: &[Statement]) -> Vec<Message> {
    let mut handles = Vec::new();
    for s in specs {
        let (c, b, s) = (client.clone(), base.clone(), s.clone());
        handles.push(tokio::spawn(async move { result(&c, &b, &s).await }));
    }
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

const REF_DRIVER: &str = r#"
import configparser, json, sys, time
import urllib3
import mplane.model, mplane.tls, mplane.client
urllib3.disable_warnings()
args = json.load(sys.stdin)
mplane.model.preload_registry(args["registry"])
mplane.model.initialize_registry()
cfg = configparser.ConfigParser()
cfg.optionxform = str
pki = args["pki"]
cfg["TLS"] = {"ca-chain": pki + "/ca.crt", "cert": pki + "/client.crt", "key": pki + "/client.key"}
cfg["client"] = {"workflow": "client-initiated"}
tls = mplane.tls.TlsState(cfg)
client = mplane.client.HttpInitiatorClient(cfg, tls)
base = args["url"]
client.set_default_url(base + "/")
for tok in args["tokens"]:
    client.retrieve_capabilities(base + "/capability/" + tok)
out = {"caps": sorted(client.capability_labels())}
def run(label, params):
    spec = client.invoke_capability(label, "now + 3s", params)
    rep = mplane.client.BaseClient.result_for(client, spec.get_token())
    deadline = time.time() + 20
    while isinstance(rep, mplane.model.Receipt) and time.time() < deadline:
        time.sleep(0.3)
        rep = client.result_for(spec.get_token())
    return mplane.model.unparse_json(rep)
out["flows"] = run("flows-ip4", {"observer.interface": "tap0", "flow.filter": "tcp"})
out["summary"] = run("interface-summary", {"observer.interface": "tap0"})
out["tstat"] = run("tstat-log_tcp_complete-core", {"System_ID": "probe-test"})
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
    // the capability tokens, as our client sees them
    let rt = tokio::runtime::Runtime::new().unwrap();
    let caps = rt.block_on(async {
        let client = Client::new(Some(Connector::new(&pki.files("client")).unwrap()), regs());
        let base = Url::parse(&format!("https://127.0.0.1:{port}/")).unwrap();
        client
            .capabilities(&base.with_path("/capability"))
            .await
            .unwrap()
    });
    let tokens: Vec<String> = caps.iter().filter_map(|c| c.token.clone()).collect();
    let registry = concat!(env!("CARGO_MANIFEST_DIR"), "/registry/probe.json");
    let input = serde_json::json!({
        "pki": pki.dir(), "url": format!("https://127.0.0.1:{port}"),
        "registry": registry, "tokens": tokens,
    });
    let out = peer::run_script(REF_DRIVER, &input.to_string());
    let out: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(out["caps"].as_array().unwrap().len(), 8, "{}", out["caps"]);
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
