//! Live capture end to end: `mpcom` captures with libpcap on the host end of a veth pair
//! whose other end is in a network namespace this test creates (and removes); real TCP and
//! UDP traffic from the namespace's stack crosses it while a flow job runs, and the result
//! must show exactly that traffic. Needs root (CI runs as root), `ip`, `ethtool` and
//! `openssl`; skipped with a message otherwise.

#[path = "support/mpcom_process.rs"]
mod mpcom_process;
#[path = "../../control/tests/common/pki.rs"]
mod pki;

use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use mpcom_process::{Mpcom, free_port};
use mplane::client::{Client, Url};
use mplane::model::{Message, Statement, WhenText};
use mplane::tls::Connector;
use mplane::value::Value;
use pki::Pki;

fn run(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// A namespace with one veth pair; removed on drop (also when the test panics).
struct Tap {
    ns: String,
    host: String,
    peer: String,
    net: u8,
}

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = run(&["ip", "link", "del", &self.host]);
        let _ = run(&["ip", "netns", "del", &self.ns]);
    }
}

impl Tap {
    fn create() -> Option<Tap> {
        if !is_root() {
            eprintln!("skipping: the live passive test needs root (netns, veth, libpcap)");
            return None;
        }
        let pid = std::process::id() % 100_000;
        let tap = Tap {
            ns: format!("mplive{pid}"),
            host: format!("mlh{pid}"),
            peer: format!("mlp{pid}"),
            net: (pid % 250) as u8 + 1,
        };
        let ok = run(&["ip", "netns", "add", &tap.ns])
            && run(&[
                "ip", "link", "add", &tap.host, "type", "veth", "peer", "name", &tap.peer,
            ])
            && run(&["ip", "link", "set", &tap.peer, "netns", &tap.ns]);
        if !ok {
            eprintln!("skipping: cannot create a network namespace and veth pair here");
            return None;
        }
        let h = format!("10.88.{}.1/30", tap.net);
        let p = format!("10.88.{}.2/30", tap.net);
        for (ns, dev, addr) in [(None, &tap.host, &h), (Some(&tap.ns), &tap.peer, &p)] {
            let with = |rest: &[&str]| -> bool {
                let mut v: Vec<String> = Vec::new();
                if let Some(n) = ns {
                    v.extend(["ip", "netns", "exec", n.as_str()].map(String::from));
                }
                v.extend(rest.iter().map(|s| s.to_string()));
                let refs: Vec<&str> = v.iter().map(String::as_str).collect();
                run(&refs)
            };
            let _ = with(&[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{dev}.disable_ipv6=1"),
            ]);
            assert!(
                with(&["ip", "addr", "add", addr, "dev", dev]),
                "address {addr}"
            );
            assert!(with(&["ip", "link", "set", dev, "up"]), "up {dev}");
            // one wire packet per segment: no TSO/GSO super-frames from the sender
            let _ = with(&[
                "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off",
            ]);
        }
        Some(tap)
    }
    fn host_ip(&self) -> String {
        format!("10.88.{}.1", self.net)
    }
}

/// Traffic from the namespace: 20 UDP datagrams of 100 bytes, then a TCP connection that
/// sends 5,000 bytes and closes.
const TRAFFIC: &str = r#"
import socket, sys, time
host = sys.argv[1]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(20):
    u.sendto(b"u" * 100, (host, 9999))
    time.sleep(0.01)
t = socket.create_connection((host, 9998))
t.sendall(b"t" * 5000)
t.shutdown(socket.SHUT_WR)
while t.recv(4096):
    pass
t.close()
"#;

fn col<'a>(r: &'a Statement, row: usize, name: &str) -> mplane::model::Cell<'a> {
    let i = r.columns().iter().position(|c| c.name == name).unwrap();
    r.rows().row(row).cell(i)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_flows_over_a_veth_tap() {
    let Some(tap) = Tap::create() else { return };
    // the host end receives (no ICMP port-unreachable in the capture)
    let udp = UdpSocket::bind((tap.host_ip().as_str(), 9999)).unwrap();
    let tcp = TcpListener::bind((tap.host_ip().as_str(), 9998)).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = tcp.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        let mut buf = [0u8; 200];
        let mut datagrams = 0;
        udp.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        while udp.recv(&mut buf).is_ok() {
            datagrams += 1;
        }
        (got.len(), datagrams)
    });

    let pki = Pki::new();
    let d = pki.dir().display();
    let port = free_port();
    let conf = format!(
        "[TLS]\ncert = {d}/component.crt\nkey = {d}/component.key\nca-chain = {d}/ca.crt\n\n\
         [Roles]\norg.mplane.SSB.Clients.Client-1 = guest\n\n\
         [Authorizations]\nflows = guest\n\n\
         [module_passive]\nmodule = passive\nsource = pcap-live:{}\ninterface = tap\n\n\
         [component]\nworkflow = client-initiated\nlisten-port = {port}\n\
         listen-cap-link = https://127.0.0.1:{port}/\n",
        tap.host
    );
    let path = pki.dir().join("live.conf");
    std::fs::write(&path, conf).unwrap();
    let (_mpcom, _) = Mpcom::start(&path, Stdio::inherit());

    let regs = Arc::new(mplane_probe::registry::registries().unwrap());
    let client = Client::new(Some(Connector::new(&pki.files("client")).unwrap()), regs);
    let base = Url::parse(&format!("https://127.0.0.1:{port}/")).unwrap();
    let caps = client
        .capabilities(&base.with_path("/capability"))
        .await
        .unwrap();
    let cap = caps
        .iter()
        .find(|c| c.label.as_deref() == Some("flows-ip4"))
        .unwrap();
    let mut spec = cap.specification_for();
    spec.set_parameter_value("observer.interface", &Value::String("tap".into()))
        .unwrap();
    spec.set_parameter_value(
        "flow.filter",
        &Value::String(format!("net 10.88.{}.0/30 and (udp or tcp)", tap.net)),
    )
    .unwrap();
    spec.when = Some(WhenText::parse("now + 6s").unwrap());
    spec.token = Some(spec.client_token(mplane::component::now()));
    let spec2 = spec.clone();
    let (c2, b2) = (client.clone(), base.clone());
    let job = tokio::spawn(async move { c2.specify(&b2, &spec2).await.unwrap() });

    // the job is running (its receipt comes after the component's wait): send the traffic
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ok = Command::new("ip")
        .args([
            "netns",
            "exec",
            &tap.ns,
            "python3",
            "-c",
            TRAFFIC,
            &tap.host_ip(),
        ])
        .status()
        .unwrap()
        .success();
    assert!(ok, "traffic script failed");
    let (tcp_bytes, datagrams) = server.join().unwrap();
    assert_eq!((tcp_bytes, datagrams), (5000, 20));

    let mut rep = job.await.unwrap();
    for _ in 0..100 {
        match &rep {
            Message::Statement(s) if s.kind.key() == "receipt" => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                rep = client.redeem(&base, s).await.unwrap();
            }
            _ => break,
        }
    }
    let Message::Statement(r) = &rep else {
        panic!("{}", rep.unparse())
    };
    assert_eq!(r.kind.key(), "result", "{}", rep.unparse());
    assert_eq!(r.rows().len(), 2, "{}", rep.unparse());
    let proto = |i: usize| col(r, i, "ip.protocol").as_str().unwrap().to_string();
    let (u, t) = if proto(0) == "17" { (0, 1) } else { (1, 0) };
    assert_eq!(proto(u), "17");
    assert_eq!(col(r, u, "destination.port"), "9999");
    assert_eq!(col(r, u, "packets.forward"), "20");
    assert_eq!(col(r, u, "octets.ip.forward"), "2560");
    assert_eq!(col(r, u, "packets.backward"), "0");
    assert_eq!(col(r, t, "destination.port"), "9998");
    assert_eq!(col(r, t, "bytes.forward"), "5000");
    assert_eq!(col(r, t, "bytes.backward"), "0");
    assert_eq!(col(r, t, "flow.end.reason"), "fin");
    assert_eq!(
        col(r, t, "source.ip4"),
        format!("10.88.{}.2", tap.net).as_str()
    );
    assert_ne!(col(r, t, "rtt.handshake.destination.ms"), "*");
    let kernel = r
        .metadata("capture.drops.kernel")
        .unwrap()
        .text()
        .into_owned();
    assert_eq!(kernel, "0");
    assert_eq!(r.metadata("capture.clock").unwrap().text(), "kernel");
}
