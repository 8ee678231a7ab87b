//! Shared by the passive component tests: a small capture replayed at its pace as the
//! source, `mpcom` with a passive module over mutual TLS, and helpers to run specifications.

#![allow(dead_code)]

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use mplane::client::{Client, Url};
use mplane::model::{Message, Statement, WhenText};
use mplane::registry::Registries;
use mplane::value::Value;
use mplane_capture::builder::{Builder, PcapWriter};
use mplane_capture::packet::LinkType;
use mplane_capture::packet::tcp::flags::{ACK, FIN, PSH, SYN};

pub use super::mpcom_process::{Mpcom, free_port};
use super::pki::Pki;

const C: [u8; 4] = [10, 9, 0, 1];
const S: [u8; 4] = [192, 0, 2, 10];
const MS: u64 = 1_000_000;

/// A small capture: an ARP frame first, then (from 800 ms on) a TCP connection with an HTTP
/// request, a DNS exchange, and an IPv6 UDP exchange.
pub fn capture(path: &Path) {
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

pub fn start(pki: &Pki, pcap: &Path, export: &Path, repeat: bool) -> (Mpcom, u16) {
    let tls = pki.tls_section();
    let port = free_port();
    let conf = format!(
        "{tls}[Roles]\norg.mplane.SSB.Clients.Client-1 = guest\n\n\
         [Authorizations]\nflows = guest\ntstat = guest\ninterface = guest\n\n\
         [module_passive]\nmodule = passive\nsource = pcap:{}\ninterface = tap0\n\
         system_id = probe-test\ninline_rows = 1\nexport_dir = {}\nidle_timeout = 30\nrepeat = {}\n\n\
         [component]\nworkflow = client-initiated\nlisten-port = {port}\n\
         listen-cap-link = https://127.0.0.1:{port}/\nmetrics_roles = guest\n",
        pcap.display(),
        export.display(),
        if repeat { "on" } else { "off" }
    );
    let path = pki.dir().join("passive.conf");
    std::fs::write(&path, conf).unwrap();
    let (mpcom, _) = Mpcom::start(&path, Stdio::inherit());
    (mpcom, port)
}

/// A client with `who`'s certificate, the component's URL, and the capabilities it offers
/// that identity.
pub async fn connect(pki: &Pki, port: u16, who: &str) -> (Client, Url, Vec<Statement>) {
    let client = Client::new(
        Some(mplane::tls::Connector::new(&pki.files(who)).unwrap()),
        regs(),
    );
    let base = Url::parse(&format!("https://127.0.0.1:{port}/")).unwrap();
    let caps = client
        .capabilities(&base.with_path("/capability"))
        .await
        .unwrap();
    (client, base, caps)
}

/// A specification of the flow capability `label` on `tap0` with `flow.filter` and, for
/// `flows-export`, `export.target`.
pub fn flows_spec(
    caps: &[Statement],
    label: &str,
    filter: &str,
    target: Option<&str>,
) -> Statement {
    let mut params = vec![
        ("observer.interface", Value::String("tap0".into())),
        ("flow.filter", Value::String(filter.into())),
    ];
    if let Some(t) = target {
        params.push(("export.target", Value::String(t.into())));
    }
    spec_for(caps, label, &params)
}

pub fn regs() -> Arc<Registries> {
    Arc::new(mplane_probe::registry::registries().unwrap())
}

pub fn spec_for(caps: &[Statement], label: &str, params: &[(&str, Value)]) -> Statement {
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

pub async fn result(client: &Client, base: &Url, spec: &Statement) -> Message {
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

pub fn col<'a>(r: &'a Statement, row: usize, name: &str) -> mplane::model::Cell<'a> {
    let i = r
        .columns()
        .iter()
        .position(|c| c.name == name)
        .unwrap_or_else(|| panic!("no column {name}"));
    r.rows().row(row).cell(i)
}

pub fn meta(r: &Statement, name: &str) -> String {
    r.metadata(name)
        .unwrap_or_else(|| panic!("no metadata {name}"))
        .text()
        .into_owned()
}

pub async fn futures_join(client: &Client, base: &Url, specs: &[Statement]) -> Vec<Message> {
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
