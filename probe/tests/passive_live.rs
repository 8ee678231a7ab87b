//! Live capture end to end: `mpcom` captures with libpcap on the host end of a veth pair
//! whose other end is in a network namespace this test creates (and removes); real TCP and
//! UDP traffic from the namespace's stack crosses it while a flow job runs, and the result
//! must show exactly that traffic. The same job on AF_XDP sees the frames a tap port would
//! mirror of that traffic, injected from the namespace. Needs root (CI runs as root), `ip`, `ethtool` and
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

/// Starts `mpcom` capturing `source` (its stderr to the test's), runs a six-second `flows-ip4`
/// job for the tap's /30 (UDP and TCP), runs `traffic` while the job runs, and returns the
/// job's result.
async fn flow_job(
    tap: &Tap,
    source: &str,
    traffic: impl FnOnce() + Send + 'static,
) -> (Statement, Message) {
    let pki = Pki::new();
    let tls = pki.tls_section();
    let port = free_port();
    let conf = format!(
        "{tls}[Roles]\norg.mplane.SSB.Clients.Client-1 = guest\n\n\
         [Authorizations]\nflows = guest\n\n\
         [module_passive]\nmodule = passive\nsource = {source}\ninterface = tap\n\n\
         [component]\nworkflow = client-initiated\nlisten-port = {port}\n\
         listen-cap-link = https://127.0.0.1:{port}/\n"
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
    tokio::task::spawn_blocking(traffic).await.unwrap();

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
    (r.clone(), rep)
}

/// The flow result of [`flow_job`] for 20 UDP datagrams of 100 bytes to port 9999 and one
/// TCP connection from the namespace to port 9998 that sends 5,000 bytes and closes.
fn check_flows(r: &Statement, rep: &Message, tap: &Tap) {
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
    // the interface's offloads as read when capture started (what is on depends on the
    // kernel's veth; the test turned GRO, TSO and GSO off)
    let offloads = r.metadata("capture.offloads").unwrap().text().into_owned();
    eprintln!("capture.offloads: {offloads}");
    assert!(
        offloads.starts_with(&format!("{}: ", tap.host)) && !offloads.contains("gro"),
        "{offloads}"
    );
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
    let (ns, host) = (tap.ns.clone(), tap.host_ip());
    let source = format!("pcap-live:{}", tap.host);
    let (r, rep) = flow_job(&tap, &source, move || {
        let ok = Command::new("ip")
            .args(["netns", "exec", &ns, "python3", "-c", TRAFFIC, &host])
            .status()
            .unwrap()
            .success();
        assert!(ok, "traffic script failed");
        let (tcp_bytes, datagrams) = server.join().unwrap();
        assert_eq!((tcp_bytes, datagrams), (5000, 20));
    })
    .await;
    check_flows(&r, &rep, &tap);
    assert_eq!(r.metadata("capture.clock").unwrap().text(), "kernel");
}

/// Sends the frames of a file (each a 4-byte little-endian length and the frame) on the
/// interface named by the second argument, through an `AF_PACKET` socket.
#[cfg(feature = "xdp")]
const INJECT: &str = r#"
import socket, struct, sys, time
data = open(sys.argv[1], 'rb').read()
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[2], 0))
i = 0
while i < len(data):
    n, = struct.unpack('<I', data[i:i + 4])
    s.send(data[i + 4:i + 4 + n])
    i += 4 + n
    time.sleep(0.002)
"#;

/// What a tap port mirrors of the traffic of [`TRAFFIC`], both directions: 20 UDP datagrams
/// of 100 bytes, then a TCP connection (handshake, 5,000 bytes in four segments each
/// acknowledged, FIN both ways).
#[cfg(feature = "xdp")]
fn mirrored(net: u8) -> Vec<Vec<u8>> {
    use mplane_capture::builder::Builder;
    use mplane_capture::packet::tcp::flags::{ACK, FIN, PSH, SYN};
    let (c, s) = ([10, 88, net, 2], [10, 88, net, 1]);
    let mut out = Vec::new();
    for _ in 0..20 {
        out.push(
            Builder::ethernet()
                .ipv4(c, s)
                .udp(40001, 9999)
                .payload(&[b'u'; 100])
                .build(),
        );
    }
    let fwd = |seq: u32, ack: u32, f: u16, len: usize| {
        Builder::ethernet()
            .ipv4(c, s)
            .tcp(40002, 9998, seq, ack, f)
            .payload(&vec![b't'; len])
            .build()
    };
    let bwd = |seq: u32, ack: u32, f: u16| {
        Builder::ethernet()
            .ipv4(s, c)
            .tcp(9998, 40002, seq, ack, f)
            .build()
    };
    let (mut cs, ss) = (1000u32, 9000u32);
    out.push(fwd(cs, 0, SYN, 0));
    out.push(bwd(ss, cs + 1, SYN | ACK));
    cs += 1;
    out.push(fwd(cs, ss + 1, ACK, 0));
    for _ in 0..4 {
        out.push(fwd(cs, ss + 1, ACK | PSH, 1250));
        cs += 1250;
        out.push(bwd(ss + 1, cs, ACK));
    }
    out.push(fwd(cs, ss + 1, FIN | ACK, 0));
    out.push(bwd(ss + 1, cs + 1, FIN | ACK));
    out.push(fwd(cs + 1, ss + 2, ACK, 0));
    out
}

/// The same job on AF_XDP (`xdp:` source, the program in native mode on the veth): the
/// frames a tap port would mirror are injected from the namespace (the AF_XDP socket takes
/// every frame of the queue, so the host's stack could not answer), and the result must be
/// the libpcap test's; its clock says where the frames' times came from.
#[cfg(feature = "xdp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_flows_over_a_veth_tap_with_af_xdp() {
    let Some(tap) = Tap::create() else { return };
    let source = format!("xdp:{}", tap.host);
    // the kernel may lack AF_XDP: skip then, as the capture layer's tests do
    let probe = source
        .parse::<mplane_capture::source::SourceSpec>()
        .unwrap()
        .open_xdp(&mplane_capture::source::xdp::XdpConfig::default());
    let expect_clock = match probe {
        Ok(s) => {
            if s.kernel_timestamps() {
                "kernel"
            } else {
                "userspace"
            }
        }
        Err(e) => {
            let m = e.to_string();
            if m.contains("Address family not supported") || m.contains("Function not implemented")
            {
                eprintln!("skipping: the kernel lacks AF_XDP or BPF: {m}");
                return;
            }
            panic!("{m}");
        }
    };
    let mut blob = Vec::new();
    for f in mirrored(tap.net) {
        blob.extend_from_slice(&(f.len() as u32).to_le_bytes());
        blob.extend_from_slice(&f);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("frames.bin");
    std::fs::write(&file, &blob).unwrap();
    let (ns, peer) = (tap.ns.clone(), tap.peer.clone());
    let (r, rep) = flow_job(&tap, &source, move || {
        let ok = Command::new("ip")
            .args(["netns", "exec", &ns, "python3", "-c", INJECT])
            .arg(&file)
            .arg(&peer)
            .status()
            .unwrap()
            .success();
        assert!(ok, "injection failed");
    })
    .await;
    check_flows(&r, &rep, &tap);
    assert_eq!(r.metadata("capture.clock").unwrap().text(), expect_clock);
}
