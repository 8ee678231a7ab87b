//! Indirect export end to end: a client sends a specification for `flows-export` to `mpcom`
//! and gets a receipt; the flow records of the capture arrive as Parquet in the export
//! directory; the final result lists the files; they are downloaded over HTTPS with the client
//! certificate (whole and by byte ranges) and queried with DuckDB. A peer not allowed the
//! capability cannot read them. The same job with an IPFIX target sends biflow records to a
//! collector. Needs `openssl` and the analysts' readers (pyarrow, DuckDB from PyPI).

#[path = "../../control/tests/common/pki.rs"]
mod pki;

#[path = "support/component.rs"]
mod component;
#[path = "support/mpcom_process.rs"]
mod mpcom_process;

#[path = "../../export/tests/support/readers.rs"]
mod readers;

use std::net::UdpSocket;
use std::time::Duration;

use component::*;
use mplane::client::{Client, Url};
use mplane::model::{Message, WhenText};
use mplane::tls::Connector;
use pki::Pki;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn export_to_parquet_download_and_query() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("tap.pcap");
    capture(&pcap);
    let export = dir.path().join("export");
    let (_mpcom, port) = start(&pki, &pcap, &export, false);
    let (client, base, caps) = connect(&pki, port, "client").await;
    let mut spec = flows_spec(&caps, "flows-export", "", Some("parquet"));
    // longer than the component waits for a result: the first answer is a receipt
    spec.when = Some(WhenText::parse("now + 7s").unwrap());
    spec.token = Some(spec.client_token(mplane::component::now()));
    let first = client.specify(&base, &spec).await.unwrap();
    let Message::Statement(receipt) = &first else {
        panic!("{}", first.unparse())
    };
    assert_eq!(receipt.kind.key(), "receipt", "{}", first.unparse());
    let mut rep = first.clone();
    for _ in 0..100 {
        match &rep {
            Message::Statement(s) if s.kind.key() == "receipt" => {
                tokio::time::sleep(Duration::from_millis(250)).await;
                rep = client.redeem(&base, s).await.unwrap();
            }
            _ => break,
        }
    }
    let Message::Statement(res) = &rep else {
        panic!("{}", rep.unparse())
    };
    assert_eq!(res.kind.key(), "result", "{}", rep.unparse());
    assert_eq!(res.token, spec.token);
    assert_eq!(res.rows().len(), 1, "one file: {}", rep.unparse());
    assert_eq!(col(res, 0, "export.format"), "parquet");
    assert_eq!(col(res, 0, "export.rows"), "3");
    let url = col(res, 0, "export.url").as_str().unwrap().to_string();
    let bytes: u64 = col(res, 0, "export.bytes")
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let prefix = format!("https://127.0.0.1:{port}/export/flows-export-");
    assert!(url.starts_with(&prefix), "{url}");

    // download: whole, and by ranges
    let file_url = Url::parse(&url).unwrap();
    let whole = client
        .request(hyper::Method::GET, &file_url, None)
        .await
        .unwrap();
    assert_eq!(whole.status, 200);
    assert_eq!(
        whole.content_type.as_deref(),
        Some("application/vnd.apache.parquet")
    );
    assert_eq!(whole.body.len() as u64, bytes);
    assert_eq!(&whole.body[..4], b"PAR1");
    assert_eq!(whole.headers["accept-ranges"], "bytes");
    let head = client
        .request_with(
            hyper::Method::GET,
            &file_url,
            None,
            &[("range", "bytes=0-3")],
        )
        .await
        .unwrap();
    assert_eq!(head.status, 206);
    assert_eq!(&head.body[..], b"PAR1");
    assert_eq!(
        head.headers["content-range"],
        format!("bytes 0-3/{bytes}").as_str()
    );
    let tail = client
        .request_with(
            hyper::Method::GET,
            &file_url,
            None,
            &[("range", "bytes=-8")],
        )
        .await
        .unwrap();
    assert_eq!(tail.status, 206);
    assert_eq!(&tail.body[..], &whole.body[whole.body.len() - 8..]);
    let past = client
        .request_with(
            hyper::Method::GET,
            &file_url,
            None,
            &[("range", format!("bytes={bytes}-").as_str())],
        )
        .await
        .unwrap();
    assert_eq!(past.status, 416);
    assert_eq!(
        past.headers["content-range"],
        format!("bytes */{bytes}").as_str()
    );
    let listing = client
        .request(hyper::Method::GET, &base.with_path("/export/"), None)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&listing.body).contains(".parquet"));

    // the module's export counters say the same
    let metrics = client
        .request(hyper::Method::GET, &base.with_path("/metrics"), None)
        .await
        .unwrap();
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    let sample = |name: &str| -> u64 {
        let prefix = format!("{name}{{module=\"passive\",interface=\"tap0\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
    };
    assert_eq!(sample("mplane_export_files_total"), 1);
    assert_eq!(sample("mplane_export_rows_total"), 3);
    assert_eq!(sample("mplane_export_bytes_total"), bytes);
    assert_eq!(sample("mplane_export_errors_total"), 0);

    // a peer with no role for the capability gets nothing, not even a hint
    let other = Client::new(
        Some(Connector::new(&pki.files("supervisor")).unwrap()),
        regs(),
    );
    let denied = other
        .request(hyper::Method::GET, &file_url, None)
        .await
        .unwrap();
    assert_eq!(denied.status, 404);
    let listing = other
        .request(hyper::Method::GET, &base.with_path("/export/"), None)
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&listing.body).contains(".parquet"));
    let sneaky = other
        .request(
            hyper::Method::GET,
            &base.with_path("/export/../passive.conf"),
            None,
        )
        .await
        .unwrap();
    assert_ne!(sneaky.status, 200);

    // what the analyst gets
    let local = dir.path().join("download.parquet");
    std::fs::write(&local, &whole.body).unwrap();
    let out = readers::py(
        r#"
import json, sys, duckdb
c = duckdb.connect()
f = sys.argv[1]
rows = c.sql(f"select ip_protocol, packets_forward, packets_backward, request_hostname, dns_qname from read_parquet('{f}') order by ip_protocol, packets_forward").fetchall()
kv = {k.decode(): v.decode() for k, v in c.sql(f"select key, value from parquet_kv_metadata('{f}')").fetchall()}
print(json.dumps({"rows": rows, "spec": json.loads(kv["mplane.specification"])["label"], "reg": kv["mplane.registry"]}))
"#,
        &[local.to_str().unwrap()],
    );
    assert_eq!(
        out["rows"],
        serde_json::json!([
            [6, 5, 3, "probe.example", null],
            [17, 1, 1, null, "hello.example"],
            [17, 3, 1, null, null]
        ])
    );
    assert_eq!(out["spec"], spec.label.as_deref().unwrap());
    assert_eq!(out["reg"], mplane_probe::registry::PROBE_REGISTRY_URI);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn export_to_an_ipfix_collector() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("tap.pcap");
    capture(&pcap);
    let (_mpcom, port) = start(&pki, &pcap, &dir.path().join("export"), false);
    let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
    collector
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let target = format!("ipfix://{}", collector.local_addr().unwrap());
    let (client, base, caps) = connect(&pki, port, "client").await;
    let spec = flows_spec(&caps, "flows-export", "ip", Some(&target));
    let rep = result(&client, &base, &spec).await;
    let Message::Statement(res) = &rep else {
        panic!("{}", rep.unparse())
    };
    assert_eq!(col(res, 0, "export.format"), "ipfix");
    assert_eq!(col(res, 0, "export.url"), target.as_str());
    assert_eq!(
        col(res, 0, "export.rows"),
        "2",
        "the two IPv4 flows: {}",
        rep.unparse()
    );
    let mut dec = mplane_export::ipfix::Decoder::new();
    let mut data = 0;
    let mut buf = [0u8; 65536];
    while let Ok(n) = collector.recv(&mut buf) {
        let m = dec.decode(&buf[..n]).unwrap();
        data += m.records.iter().filter(|r| r.template == 256).count();
    }
    assert_eq!(data, 2, "biflow records received");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_target_errors_are_exceptions() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("tap.pcap");
    capture(&pcap);
    let (_mpcom, port) = start(&pki, &pcap, &dir.path().join("export"), false);
    let (client, base, caps) = connect(&pki, port, "client").await;
    let spec = flows_spec(&caps, "flows-export", "", Some("kafka://somewhere"));
    match result(&client, &base, &spec).await {
        Message::Exception(e) => assert!(e.message.contains("export.target"), "{}", e.message),
        m => panic!("{}", m.unparse()),
    }

    // an export directory that cannot be created (its parent is a file): an exception, and
    // the module's export error counter says so
    let pki = Pki::new();
    let (_mpcom, port) = start(&pki, &pcap, &pcap.join("export"), false);
    let (client, base, caps) = connect(&pki, port, "client").await;
    let spec = flows_spec(&caps, "flows-export", "", Some("parquet"));
    match result(&client, &base, &spec).await {
        Message::Exception(e) => assert!(e.message.starts_with("export: "), "{}", e.message),
        m => panic!("{}", m.unparse()),
    }
    let metrics = client
        .request(hyper::Method::GET, &base.with_path("/metrics"), None)
        .await
        .unwrap();
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    assert!(
        text.contains("mplane_export_errors_total{module=\"passive\",interface=\"tap0\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("mplane_export_files_total{module=\"passive\",interface=\"tap0\"} 0\n"),
        "{text}"
    );
}
