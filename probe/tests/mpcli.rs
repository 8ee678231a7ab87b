//! `mpcli` end to end against `mpcom` over mutual TLS on loopback: the interop services
//! (inline result, exception, receipt redeemed, interrupted, Ctrl-C, timeout, and the
//! specifications it refuses to send), and the passive services, whose extension registry it
//! fetches from the component. Needs `openssl`.

#[path = "support/cli.rs"]
mod cli;
#[path = "support/component.rs"]
mod component;
#[path = "support/mpcom_process.rs"]
mod mpcom_process;
#[path = "../../control/tests/common/pki.rs"]
mod pki;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cli::{
    client_conf, client_initiated, interop_conf, interrupted_after, mpcli, saved_receipt, status,
    stderr,
};
use mpcom_process::{Mpcom, free_port};
use mplane::model::{self, Message, StatementKind};
use mplane::registry::Registries;
use pki::Pki;

/// `mpcom` with the interop services on `port`, its capabilities linked to itself.
fn interop_mpcom(pki: &Pki, port: u16) -> Mpcom {
    let path = pki.dir().join("component.conf");
    std::fs::write(&path, interop_conf(pki, &client_initiated(port))).unwrap();
    Mpcom::start(&path, Stdio::null()).0
}

fn parse(text: &str) -> Message {
    model::parse(text.trim(), &Registries::default()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn mpcli_runs_the_interop_services() {
    let pki = Pki::new();
    let port = free_port();
    let _mpcom = interop_mpcom(&pki, port);
    let conf = client_conf(&pki, port, "client");

    // what this identity may run, as a summary and as mPlane JSON
    let out = status(&mpcli(&conf, &["caps"]), 0);
    for label in ["interop-rows-ip4", "interop-slow-ip4", "interop-fail-ip4"] {
        assert!(out.contains(&format!("{label} (measure)")), "{out}");
    }
    assert!(
        out.contains("parameters  destination.ip4: *, packets.ip: 1 ... 10, source.ip4: 127.0.0.1"),
        "{out}"
    );
    assert!(out.contains("when        now ... future / 1s"), "{out}");
    assert!(
        out.contains(&format!("link        https://127.0.0.1:{port}/")),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&status(&mpcli(&conf, &["caps", "--json"]), 0)).unwrap();
    let caps = json.as_array().unwrap();
    assert_eq!(caps.len(), 3);
    for c in caps {
        assert_eq!(parse(&c.to_string()).kind_name(), "capability");
    }
    let shown = parse(&status(&mpcli(&conf, &["show", "interop-fail-ip4"]), 0));
    let token = shown.token().unwrap().to_string();
    assert_eq!(
        shown.as_statement().unwrap().label.as_deref(),
        Some("interop-fail-ip4")
    );
    // by token too
    let again = parse(&status(&mpcli(&conf, &["show", &token]), 0));
    assert_eq!(again, shown);

    // an inline result, in each format
    let run = |extra: &[&str]| {
        let mut a = vec![
            "run",
            "interop-rows-ip4",
            "destination.ip4=127.0.0.2",
            "packets.ip=3",
            "--when",
            "now + 1s / 1s",
        ];
        a.extend_from_slice(extra);
        mpcli(&conf, &a)
    };
    let table = status(&run(&[]), 0);
    assert_eq!(
        table,
        "time                        delay.twoway.icmp.us  hops.ip\n\
         2015-06-01 12:00:00.250000  1007                  1\n\
         2015-06-01 12:00:01.250000  2007                  2\n\
         2015-06-01 12:00:02.250000  3007                  3\n"
    );
    let csv = status(&run(&["--format", "csv"]), 0);
    assert_eq!(
        csv,
        "time,delay.twoway.icmp.us,hops.ip\r\n2015-06-01 12:00:00.250000,1007,1\r\n\
         2015-06-01 12:00:01.250000,2007,2\r\n2015-06-01 12:00:02.250000,3007,3\r\n"
    );
    let res = parse(&status(&run(&["--format", "json"]), 0));
    let res = res.as_statement().unwrap();
    assert_eq!(res.kind, StatementKind::Result);
    assert_eq!(res.rows().len(), 3);
    assert_eq!(res.parameter("packets.ip").unwrap().text(), "3");

    // an mPlane exception from the component: exit 1 with its message
    let o = mpcli(
        &conf,
        &["run", "interop-fail-ip4", "destination.ip4=127.0.0.2"],
    );
    status(&o, 1);
    assert!(
        stderr(&o).contains("exception from the component: interop-fail: deliberate failure"),
        "{}",
        stderr(&o)
    );

    // specifications refused before anything is sent, each with what would fit
    for (args, says) in [
        (
            vec![
                "run",
                "interop-rows-ip4",
                "packets.ip=3",
                "--when",
                "now + 1s / 1s",
            ],
            "parameter \"destination.ip4\" has no value; its parameters: destination.ip4: *",
        ),
        (
            vec![
                "run",
                "interop-rows-ip4",
                "destination.ip4=127.0.0.2",
                "packets.ip=11",
                "--when",
                "now + 1s / 1s",
            ],
            "violates the constraint",
        ),
        (
            vec![
                "run",
                "interop-rows-ip4",
                "destination.ip4=127.0.0.2",
                "packets.ip=three",
            ],
            "parameter packets.ip (natural)",
        ),
        (
            vec!["run", "interop-rows-ip4", "hops=3"],
            "\"interop-rows-ip4\" has no parameter \"hops\"; its parameters: destination.ip4",
        ),
        (
            vec!["run", "interop-rows-ip4", "destination.ip4"],
            "expected NAME=VALUE",
        ),
        (
            vec![
                "run",
                "interop-rows-ip4",
                "destination.ip4=127.0.0.2",
                "packets.ip=3",
                "--when",
                "now + 1x",
            ],
            "temporal scope \"now + 1x\"",
        ),
        (
            vec![
                "run",
                "interop-rows-ip4",
                "destination.ip4=127.0.0.2",
                "packets.ip=3",
                "--when",
                "2001-01-01 00:00:00 + 1s / 1s",
            ],
            "its scope: now ... future / 1s (give --when)",
        ),
        (
            vec!["run", "ping"],
            "no capability \"ping\" here; there are: interop-",
        ),
    ] {
        let o = mpcli(&conf, &args);
        status(&o, 1);
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }

    // a receipt saved, redeemed before the job ends (exit 3, the receipt again), then
    // interrupted: the partial result
    let file = saved_receipt(
        &pki,
        &conf,
        &[
            "interop-slow-ip4",
            "destination.ip4=127.0.0.2",
            "--when",
            "now + 60s / 1s",
        ],
        "receipt.json",
    );
    let file = file.to_str().unwrap();
    let o = mpcli(&conf, &["redeem", file]);
    assert_eq!(parse(&status(&o, 3)).kind_name(), "receipt");
    assert!(stderr(&o).contains("not ready yet"), "{}", stderr(&o));
    let partial = status(&mpcli(&conf, &["interrupt", file, "--poll", "0.2"]), 0);
    let lines: Vec<&str> = partial.lines().collect();
    assert_eq!(lines.len(), 2, "{partial}");
    assert!(
        lines[0].starts_with("delay.twoway.icmp.us.min  delay.twoway.icmp.us.mean"),
        "{partial}"
    );
    assert!(
        lines[1].starts_with("100                       150"),
        "{partial}"
    );
    // the job is done and its result was returned: the component has forgotten it
    let o = mpcli(&conf, &["redeem", file]);
    status(&o, 1);
    assert!(
        stderr(&o).contains("exception from the component"),
        "{}",
        stderr(&o)
    );
    // not a receipt
    std::fs::write(pki.dir().join("not.json"), table).unwrap();
    let o = mpcli(
        &conf,
        &["redeem", pki.dir().join("not.json").to_str().unwrap()],
    );
    status(&o, 1);
    assert!(stderr(&o).contains("malformed JSON"), "{}", stderr(&o));

    // waiting, with a timeout: the receipt printed, exit 3
    let t = Instant::now();
    let o = mpcli(
        &conf,
        &[
            "run",
            "interop-slow-ip4",
            "destination.ip4=127.0.0.3",
            "--when",
            "now + 60s / 1s",
            "--timeout",
            "1",
            "--poll",
            "0.2",
        ],
    );
    assert_eq!(parse(&status(&o, 3)).kind_name(), "receipt");
    assert!(t.elapsed() < Duration::from_secs(30));

    // Ctrl-C while waiting: the job is interrupted and its partial result printed, exit 130
    let mut run = Command::new(env!("CARGO_BIN_EXE_mpcli"));
    run.arg("--config").arg(&conf).args([
        "run",
        "interop-slow-ip4",
        "destination.ip4=127.0.0.4",
        "--when",
        "now + 60s / 1s",
        "--format",
        "csv",
        "--poll",
        "0.3",
    ]);
    let o = interrupted_after(run, Duration::from_millis(1500));
    let csv = status(&o, 130);
    assert!(
        stderr(&o).contains("interrupting the job"),
        "{}",
        stderr(&o)
    );
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[0],
        "delay.twoway.icmp.us.min,delay.twoway.icmp.us.mean,delay.twoway.icmp.us.max,delay.twoway.icmp.count"
    );
    assert!(rows[1].starts_with("100,150,200,"), "{csv}");
    let count: u64 = rows[1].rsplit(',').next().unwrap().parse().unwrap();
    assert!((1..200).contains(&count), "{csv}");

    // an identity without a role sees no capability
    let other = client_conf(&pki, port, "supervisor");
    let o = mpcli(&other, &["caps"]);
    assert_eq!(status(&o, 0), "");
    assert!(stderr(&o).contains("no capabilities for this identity"));
    // a certificate from another CA does not get through the handshake
    let o = mpcli(&client_conf(&pki, port, "other"), &["caps"]);
    status(&o, 1);
    // no component named anywhere
    let bare = pki.dir().join("bare.conf");
    std::fs::write(&bare, "[client]\nworkflow = client-initiated\n").unwrap();
    let o = mpcli(&bare, &["caps"]);
    status(&o, 1);
    assert!(stderr(&o).contains("no component URL"), "{}", stderr(&o));
}

#[test]
fn mpcli_fetches_the_probe_registry_and_runs_a_flow_specification() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("tap.pcap");
    component::capture(&pcap);
    let (_mpcom, port) = component::start(&pki, &pcap, &dir.path().join("export"), false);
    // no configuration file: the component and the TLS files as options
    let d = pki.dir();
    let url = format!("https://127.0.0.1:{port}/");
    let command = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mpcli"));
        c.args(["--url", &url])
            .arg("--cert")
            .arg(d.join("client.crt"))
            .arg("--key")
            .arg(d.join("client.key"))
            .arg("--ca-chain")
            .arg(d.join("ca.crt"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };
    let cli = |args: &[&str]| command(args).output().unwrap();
    // the capabilities name the probe's registry, which mpcli loads from the component
    let out = status(&cli(&["caps"]), 0);
    assert!(out.contains("flows-ip6 (measure)"), "{out}");
    // the component listens on IPv6 as well (its certificate names ::1)
    let v6 = Command::new(env!("CARGO_BIN_EXE_mpcli"))
        .args(["--url", &format!("https://[::1]:{port}/")])
        .arg("--cert")
        .arg(d.join("client.crt"))
        .arg("--key")
        .arg(d.join("client.key"))
        .arg("--ca-chain")
        .arg(d.join("ca.crt"))
        .arg("caps")
        .output()
        .unwrap();
    assert_eq!(status(&v6, 0), out);
    assert!(
        out.contains("registry    https://mplane-rs.invalid/registry/probe"),
        "{out}"
    );
    // three specifications over the same few seconds of the capture (replayed once, at its
    // pace): the export and an inline result with its file run beside flows-ip6
    let dl = dir.path().join("downloads");
    let export = command(&[
        "run",
        "flows-export",
        "observer.interface=tap0",
        "flow.filter=",
        "export.target=parquet",
        "--when",
        "now + 4s",
        "--format",
        "csv",
        "--download",
        dl.to_str().unwrap(),
    ])
    .spawn()
    .unwrap();
    let dl2 = dir.path().join("inline");
    let inline = command(&[
        "run",
        "flows-ip4",
        "observer.interface=tap0",
        "flow.filter=",
        "--when",
        "now + 4s",
        "--download",
        dl2.to_str().unwrap(),
    ])
    .spawn()
    .unwrap();
    let o = cli(&[
        "run",
        "flows-ip6",
        "observer.interface=tap0",
        "flow.filter=",
        "--when",
        "now + 4s",
        "--format",
        "csv",
    ]);
    let csv = status(&o, 0);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    let header: Vec<&str> = lines[0].split(',').collect();
    let row: Vec<&str> = lines[1].split(',').collect();
    let cell = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
    assert_eq!(cell("source.ip6"), "2001:db8::1");
    assert_eq!(cell("packets.forward"), "3");
    assert_eq!(cell("packets.backward"), "1");

    // an export: the files the result lists, downloaded whole, of the sizes it states
    let csv = status(&export.wait_with_output().unwrap(), 0);
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let at = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let mut files = 0;
    for line in lines {
        let row: Vec<&str> = line.split(',').collect();
        let name = row[at("export.url")].rsplit('/').next().unwrap();
        let bytes = std::fs::read(dl.join(name)).unwrap();
        assert_eq!(bytes.len().to_string(), row[at("export.bytes")]);
        assert!(bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"));
        files += 1;
    }
    assert!(files >= 1, "{csv}");
    let listed = std::fs::read_dir(&dl).unwrap().count();
    assert_eq!(
        listed, files,
        "nothing else (no partial file) in the directory"
    );
    // a result too large to be inline names its file in metadata: downloaded too
    let o = inline.wait_with_output().unwrap();
    status(&o, 0);
    let got: Vec<_> = std::fs::read_dir(&dl2).unwrap().collect();
    assert_eq!(got.len(), 1);
    let err = stderr(&o);
    assert!(
        err.contains("downloaded ") && err.contains(".parquet ("),
        "{err}"
    );

    // only the three TLS options together
    let o = Command::new(env!("CARGO_BIN_EXE_mpcli"))
        .args(["--url", &url, "--cert", "x.crt", "caps"])
        .output()
        .unwrap();
    status(&o, 1);
    assert!(stderr(&o).contains("--cert, --key and --ca-chain go together"));
}
