//! `mpcom --config` end to end: the binary reads a reference-style INI
//! configuration (fresh PKI, `module = interop_services`), serves over mutual
//! TLS on loopback, and stops gracefully on SIGTERM. Needs `openssl`.

#[path = "support/mpcom_process.rs"]
mod mpcom_process;
#[path = "../../control/tests/common/pki.rs"]
mod pki;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use mpcom_process::Mpcom;
use mplane::client::{Client, Url};
use mplane::model::{Message, Statement, WhenText};
use mplane::registry::Registries;
use mplane::tls::Connector;
use mplane::value::Value;
use pki::Pki;

fn config(pki: &Pki) -> String {
    let tls = pki.tls_section();
    format!(
        "{tls}[Roles]\norg.mplane.SSB.Clients.Client-1 = guest\n\
         org.mplane.SSB.Supervisors.Supervisor-1 = admin\n\n\
         [Authorizations]\ninterop-rows-ip4 = guest,admin\ninterop-slow-ip4 = guest,admin\n\
         interop-fail-ip4 = guest,admin\n\n\
         [module_interop]\nmodule = interop_services\nip4addr = 127.0.0.1\n\n\
         [component]\nworkflow = client-initiated\nlisten-port = 0\n\
         listen-cap-link = https://127.0.0.1:1/\nclient_host = 127.0.0.1\nclient_port = 1\n\
         registration_path = register/capability\nspecification_path = show/specification\n\
         result_path = register/result\n"
    )
}

fn find<'a>(caps: &'a [Statement], label: &str) -> &'a Statement {
    caps.iter()
        .find(|c| c.label.as_deref() == Some(label))
        .unwrap_or_else(|| panic!("no {label}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_interop_services_and_stops_on_sigterm() {
    let pki = Pki::new();
    let conf = pki.dir().join("component.conf");
    std::fs::write(&conf, config(&pki)).unwrap();
    let (mut mpcom, port) = Mpcom::start(&conf, Stdio::null());
    let client = Client::new(
        Some(Connector::new(&pki.files("client")).unwrap()),
        Arc::new(Registries::default()),
    );
    let base = Url::parse(&format!("https://127.0.0.1:{port}/")).unwrap();
    let caps = client
        .capabilities(&base.with_path("/capability"))
        .await
        .unwrap();
    assert_eq!(caps.len(), 3);
    let rows = find(&caps, "interop-rows-ip4");
    assert_eq!(rows.link.as_deref(), Some("https://127.0.0.1:1/"));

    let mut spec = rows.specification_for();
    spec.set_parameter_value(
        "destination.ip4",
        &Value::Address("127.0.0.2".parse().unwrap()),
    )
    .unwrap();
    spec.set_parameter_value("packets.ip", &Value::Natural(3))
        .unwrap();
    spec.when = Some(WhenText::parse("now + 1s / 1s").unwrap());
    spec.token = Some(spec.default_token());
    match client.specify(&base, &spec).await.unwrap() {
        Message::Statement(r) => {
            assert_eq!(r.kind.key(), "result");
            assert_eq!(r.token, spec.token);
            assert_eq!(r.rows().len(), 3);
        }
        m => panic!("{}", m.unparse()),
    }

    let fail = find(&caps, "interop-fail-ip4");
    let mut spec = fail.specification_for();
    spec.set_parameter_value(
        "destination.ip4",
        &Value::Address("127.0.0.2".parse().unwrap()),
    )
    .unwrap();
    spec.when = Some(WhenText::parse("now").unwrap());
    match client.specify(&base, &spec).await.unwrap() {
        Message::Exception(e) => assert_eq!(e.message, "interop-fail: deliberate failure"),
        m => panic!("{}", m.unparse()),
    }

    // a long job is interrupted by the shutdown; SIGTERM ends the process cleanly
    let slow = find(&caps, "interop-slow-ip4");
    let mut spec = slow.specification_for();
    spec.set_parameter_value(
        "destination.ip4",
        &Value::Address("127.0.0.2".parse().unwrap()),
    )
    .unwrap();
    spec.when = Some(WhenText::parse("now ... future / 1s").unwrap());
    spec.token = Some(spec.default_token());
    let receipt = tokio::time::timeout(Duration::from_secs(8), client.specify(&base, &spec))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(receipt.kind_name(), "receipt");

    let pid = mpcom.0.id().to_string();
    // SIGHUP reloads the TLS files and keeps serving
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let caps = client
        .capabilities(&base.with_path("/capability"))
        .await
        .unwrap();
    assert_eq!(caps.len(), 3);

    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = mpcom.0.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "mpcom did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn config_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("bad.conf");
    std::fs::write(
        &conf,
        "[component]\nworkflow = client-initiated\nlisten-port = abc\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mpcom"))
        .arg("--config")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.conf") && err.contains("listen-port"),
        "{err}"
    );

    std::fs::write(
        &conf,
        "[module_x]\nmodule = nosuch\n[component]\nworkflow = client-initiated\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mpcom"))
        .arg("--config")
        .arg(&conf)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("module_x") && err.contains("nosuch"), "{err}");
}

/// The example configuration shipped in systemd/ reads and builds its services (the capture
/// source opens only with the first job, so no interface is needed here).
#[test]
fn example_configuration_builds() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd/mpcom.conf");
    let cfg = mplane::config::Config::read(std::path::Path::new(path)).unwrap();
    let regs = mplane_probe::registry::registries().unwrap();
    let mut labels = Vec::new();
    for m in &cfg.modules {
        for s in mplane_probe::services::from_module(m, &regs, None)
            .unwrap()
            .services
        {
            labels.push(s.capability().label.clone().unwrap_or_default());
        }
    }
    assert!(labels.iter().any(|l| l == "flows-ip4"), "{labels:?}");
    assert!(cfg.tls.is_some() && cfg.component.is_some());
}

fn check(conf: &std::path::Path, strict: bool) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mpcom"));
    cmd.arg("check");
    if strict {
        cmd.arg("--strict");
    }
    let out = cmd.arg("--config").arg(conf).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `mpcom check`: the shipped example, given real certificates and this host's interfaces,
/// builds without a single warning (capture interfaces are checked, not opened); a
/// configuration with a typo, a rule that matches nothing, metrics nobody may read, a missing
/// interface and an unwritable export directory builds with those warnings (and fails with
/// `--strict`); one whose key file is missing fails naming it.
#[test]
fn check_reports_what_would_run() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../systemd/mpcom.conf"
    ))
    .unwrap()
    .replace("/etc/mplane/pki", &pki.dir().display().to_string())
    // interfaces every host has, and an export directory this test may write
    .replace("pcap-live:eth1,eth2", "pcap-live:lo")
    .replace(
        "/var/lib/mplane/export",
        &dir.path().join("export").display().to_string(),
    );
    let conf = dir.path().join("example.conf");
    std::fs::write(&conf, example).unwrap();
    let (ok, out, err) = check(&conf, true);
    assert!(ok, "{out}{err}");
    assert!(out.contains("https, client certificates required"), "{out}");
    assert!(
        out.contains("[module_tap] module = passive: 9 capabilities: flows-ip4,"),
        "{out}"
    );
    assert!(out.contains("/metrics: roles admin"), "{out}");
    assert!(!out.contains("warning"), "{out}");

    let tls = pki.tls_section();
    let text = format!(
        "{tls}[Roles]\norg.mplane.SSB.Clients.Client-1 = guest\n\
         [Authorizations]\nflows = guest\nwhois = guest\nping = guest\ntraceroute = guest\n\
         [module_tap]\nmodule = passive\nsource = pcap-live:eth9\nexport_dir = /proc/mpcom/export\n\
         [module_ping]\nmodule = ping\nip4addr = 192.0.2.77\n\
         [module_trace]\nmodule = traceroute\nip6addr = 2001:db8::77\nmethod = icmp\n\
         [component]\nworkflow = client-initiated\nlisten-port = 0\nmetric_roles = guest\n\
         metrics_roles = admin\n"
    );
    std::fs::write(&conf, &text).unwrap();
    let (ok, out, err) = check(&conf, false);
    assert!(ok, "{out}{err}");
    for want in [
        "metric_roles: unknown key, ignored (did you mean metrics_roles?)",
        "[Authorizations] whois",
        "metrics_roles: no identity in [Roles] holds admin",
        "source: no interface eth9 on this host",
        "export_dir: /proc/mpcom/export cannot be written",
        "ip4addr: 192.0.2.77 is not an address of this host",
        "[module_trace] ip6addr: 2001:db8::77 is not an address of this host",
    ] {
        assert!(out.contains(want), "{want:?} not in\n{out}");
    }
    assert_eq!(out.matches("warning:").count(), 7, "{out}");
    // `flows` covering the IPv4, IPv6 and export twins is expected, not a warning
    assert!(out.contains("note: "), "{out}");
    let (ok, _, err) = check(&conf, true);
    assert!(!ok && err.contains("7 warning(s) (--strict)"), "{err}");

    std::fs::write(&conf, text.replace("component.key", "missing.key")).unwrap();
    let (ok, _, err) = check(&conf, false);
    assert!(!ok && err.contains("missing.key"), "{err}");

    // component-initiated: where it registers, and that it listens nowhere unless told to
    let initiated = format!(
        "{tls}[Roles]\norg.mplane.SSB.Clients.Client-1 = guest\n\
         [Authorizations]\ninterop = guest\n\
         [module_interop]\nmodule = interop_services\nip4addr = 127.0.0.1\n\
         [component]\nworkflow = component-initiated\nclient_host = supervisor.example\n\
         client_port = 8891\nregistration_path = register/capability\n\
         specification_path = show/specification\nresult_path = register/result\n\
         poll_interval = 2\n"
    );
    std::fs::write(&conf, &initiated).unwrap();
    let (ok, out, err) = check(&conf, true);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(
            "component-initiated: registers with supervisor.example:8891 (https; paths \
             /register/capability, /show/specification, /register/result)"
        ),
        "{out}"
    );
    assert!(!out.contains("listens on"), "{out}");
    std::fs::write(&conf, format!("{initiated}listen-port = 0\n")).unwrap();
    let (ok, out, err) = check(&conf, true);
    assert!(ok && out.contains("listens on [::]:0"), "{out}{err}");
    // a required key missing, a poll interval out of range
    std::fs::write(
        &conf,
        initiated.replace(
            "client_host = supervisor.example
",
            "",
        ),
    )
    .unwrap();
    let (ok, _, err) = check(&conf, false);
    assert!(!ok && err.contains("client_host"), "{err}");
    std::fs::write(
        &conf,
        initiated.replace("poll_interval = 2", "poll_interval = 0"),
    )
    .unwrap();
    let (ok, _, err) = check(&conf, false);
    assert!(!ok && err.contains("poll_interval"), "{err}");
}

/// The unit in systemd/ passes `systemd-analyze verify` without a warning (with `ExecStart`
/// pointing at the binary under test), runs as the user that systemd/mplane.sysusers creates,
/// and `systemd-sysusers` accepts that file. The install steps give the configuration and
/// keys to that user's group, which a `DynamicUser=` service could never read.
#[test]
fn systemd_unit_and_user_verify() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd");
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP: systemd-analyze not installed (apt-get install systemd)");
        return;
    }
    let unit = std::fs::read_to_string(format!("{dir}/mpcom.service")).unwrap();
    let sysusers = std::fs::read_to_string(format!("{dir}/mplane.sysusers")).unwrap();
    let user = sysusers
        .lines()
        .find_map(|l| l.strip_prefix("u "))
        .and_then(|l| l.split_whitespace().next())
        .expect("a u line");
    assert!(
        unit.contains(&format!("\nUser={user}\n")),
        "unit runs as {user}"
    );
    assert!(unit.contains(&format!("\nGroup={user}\n")));
    assert!(!unit.contains("DynamicUser=yes"));
    assert!(unit.contains("ExecStart=/usr/local/bin/mpcom --config /etc/mplane/mpcom.conf"));
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("mpcom.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/mpcom", env!("CARGO_BIN_EXE_mpcom")),
    )
    .unwrap();
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.trim().is_empty(), "{err}");
    let o = Command::new("systemd-sysusers")
        .arg("--dry-run")
        .arg(format!("{dir}/mplane.sysusers"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `mpcom replay`: a file that is not a capture is a clear error and writes nothing; a capture
/// cut short keeps the records of everything before the cut, says where, and exits non-zero;
/// an intact capture is summarised.
/// A pcap of `n` UDP packets 1 ms apart from 10.0.0.1 to `dst(i)`, `payload` bytes each.
fn udp_capture(n: u64, payload: usize, dst: impl Fn(u64) -> [u8; 4]) -> Vec<u8> {
    use mplane_capture::builder::{Builder, PcapWriter};
    use mplane_capture::packet::LinkType;
    let mut w = PcapWriter::new(Vec::new(), LinkType::ETHERNET, 65535, false, false).unwrap();
    for i in 0..n {
        let f = Builder::ethernet()
            .ipv4([10, 0, 0, 1], dst(i))
            .udp(5000, 53)
            .payload(&vec![0; payload])
            .build();
        w.write(
            1_700_000_000_000_000_000 + i * 1_000_000,
            &f,
            f.len() as u32,
        )
        .unwrap();
    }
    w.into_inner()
}

#[test]
fn replay_stops_cleanly_on_sigint() {
    // 40,000 packets of 2,000 flows, half of them fed through a pipe that then stays idle
    let bytes = udp_capture(40_000, 60, |i| {
        [10, 1, (i % 2000 / 250) as u8, (i % 250) as u8]
    });
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mpcom"))
        .arg("replay")
        .arg("-")
        .arg("--out")
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // the first half is taken in (the pipe holds 64 KiB): mpcom is reading, its handlers set
    std::io::Write::write_all(&mut stdin, &bytes[..bytes.len() / 2]).unwrap();
    let kill = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(kill.success());
    // nothing more comes and the pipe stays open: the reader, waiting for bytes, stops anyway
    let t0 = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "mpcom still waits on its idle input after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(130), "{out}\n{err}");
    assert!(err.contains("interrupted by SIGINT"), "{err}");
    // the records of what was read are written, in a committed file
    let records: u64 = out
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("flows"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|r| r.strip_suffix(" records"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(records > 0 && records <= 2000, "{out}");
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        files[0].extension().is_some_and(|e| e == "parquet"),
        "{files:?}"
    );
    assert!(out.contains("wrote"), "{out}");
}

#[test]
fn replay_reports_damaged_files() {
    let dir = tempfile::tempdir().unwrap();
    let run = |file: &std::path::Path, out: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_mpcom"))
            .arg("replay")
            .arg(file)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    let junk = dir.path().join("junk.pcap");
    std::fs::write(&junk, b"this is not a capture file at all").unwrap();
    let o = run(&junk, &dir.path().join("o1"));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("junk.pcap") && err.contains("not a pcap"),
        "{err}"
    );
    assert!(
        !dir.path().join("o1").exists(),
        "nothing written for an unreadable file"
    );
    let missing = run(&dir.path().join("nope.pcap"), &dir.path().join("o2"));
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("nope.pcap"), "{err}");
    // one line, each cause said once
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    // a directory and a capture compressed in a format not read are named for what they are;
    // a device is read as a stream, and an empty one has not even a file header
    let o = run(dir.path(), &dir.path().join("o3"));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("is a directory"));
    let o = run(std::path::Path::new("/dev/null"), &dir.path().join("o4"));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("truncated") && err.contains("file header"),
        "{err}"
    );
    let xz = dir.path().join("trace.pcap.xz");
    std::fs::write(&xz, [0xfd, b'7', b'z', b'X', b'Z', 0, 0, 4]).unwrap();
    let o = run(&xz, &dir.path().join("o5"));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("xz") && err.contains("unxz -k"), "{err}");
    for out in ["o2", "o3", "o4", "o5"] {
        assert!(!dir.path().join(out).exists(), "{out} written");
    }

    let good = dir.path().join("good.pcap");
    std::fs::write(&good, udp_capture(100, 40, |i| [10, 0, (i % 10) as u8, 2])).unwrap();
    let o = run(&good, &dir.path().join("o3"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("10 flows, 10 records"), "{out}");
    // the export thread's share of the run, so an operator sees the headroom
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("export") && l.contains("% of the run")),
        "{out}"
    );
    assert!(out.contains("wrote"), "{out}");

    // the same capture compressed as `tcpdump -z gzip` leaves it: read as it is
    let gz = dir.path().join("good.pcap.gz");
    let zipped = Command::new("gzip").arg("-c").arg(&good).output().unwrap();
    assert!(zipped.status.success());
    std::fs::write(&gz, &zipped.stdout).unwrap();
    let o = run(&gz, &dir.path().join("o6"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("10 flows, 10 records"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // from a pipe on standard input (`-`), plain and compressed: read as it comes
    for bytes in [std::fs::read(&good).unwrap(), zipped.stdout.clone()] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mpcom"))
            .arg("replay")
            .arg("-")
            .arg("--out")
            .arg(dir.path().join("o8"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let feeder = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &bytes));
        let o = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("10 flows, 10 records"),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    // compressed while still being written: what was compressed is metered and kept, and
    // the exit says where the stream ended
    std::fs::write(&gz, &zipped.stdout[..zipped.stdout.len() * 2 / 3]).unwrap();
    let o = run(&gz, &dir.path().join("o7"));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("gzip stream damaged after")
            && err.contains("records of the packets before it were written"),
        "{err}"
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("wrote"), "{out}");

    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.pcap");
    std::fs::write(&cut, &bytes[..bytes.len() - 30]).unwrap();
    let o = run(&cut, &dir.path().join("o4"));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("truncated") && err.contains("records of the packets before it were written"),
        "{err}"
    );
    let files: Vec<_> = std::fs::read_dir(dir.path().join("o4"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.iter().any(|f| f.ends_with(".parquet")), "{files:?}");
    assert!(
        !files.iter().any(|f| f.starts_with('.')),
        "no temporary file left: {files:?}"
    );
}

#[test]
fn replay_reads_the_files_of_a_rotated_capture_as_one() {
    // 300 flows of 20 packets each, spread over the whole capture; cut into three files as a
    // rotating `tcpdump -C` would (each a pcap of its own, the last gzip compressed)
    let whole = udp_capture(6000, 60, |i| {
        [10, 2, (i % 300 / 250) as u8, (i % 300 % 250) as u8]
    });
    let (head, records) = whole.split_at(24);
    let per = records.len() / 3;
    assert_eq!(per % (16 + 102), 0, "records of equal length");
    let dir = tempfile::tempdir().unwrap();
    let whole_path = dir.path().join("whole.pcap");
    std::fs::write(&whole_path, &whole).unwrap();
    let mut parts = Vec::new();
    for (k, name) in ["rot.pcap", "rot.pcap1", "rot.pcap2.gz"].iter().enumerate() {
        let path = dir.path().join(name);
        let bytes = [head, &records[k * per..(k + 1) * per]].concat();
        std::fs::write(&path, &bytes).unwrap();
        if name.ends_with(".gz") {
            let z = Command::new("gzip").arg("-c").arg(&path).output().unwrap();
            assert!(z.status.success());
            std::fs::write(&path, &z.stdout).unwrap();
        }
        parts.push(path);
    }
    let replay = |files: &[&std::path::Path], out: &str, workers: &str| {
        Command::new(env!("CARGO_BIN_EXE_mpcom"))
            .arg("replay")
            .args(files)
            .arg("--out")
            .arg(dir.path().join(out))
            .arg("--workers")
            .arg(workers)
            .output()
            .unwrap()
    };
    let summary = |o: &std::process::Output| {
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{out}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        // packets, capture span and flows: the same whichever way the capture was read
        out.lines()
            .filter(|l| {
                let l = l.trim_start();
                l.starts_with("packets") || l.starts_with("capture") || l.starts_with("flows")
            })
            // (not the rate)
            .map(|l| l.split("), ").next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let one = summary(&replay(&[&whole_path], "one", "1"));
    assert!(
        one.iter().any(|l| l.contains("300 flows, 300 records")),
        "{one:?}"
    );
    // given in name order (the gzip file last, any order will do), one and two workers
    for (files, workers) in [
        ([&parts[2], &parts[0], &parts[1]], "1"),
        ([&parts[1], &parts[2], &parts[0]], "2"),
    ] {
        let files: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
        let o = replay(&files, &format!("set{workers}"), workers);
        let set = summary(&o);
        // a flow that spans files is one flow, one record
        assert_eq!(set, one);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.starts_with("3 files ("), "{out}");
    }
    // the files' footers name the capture's files
    let meta = std::fs::read_dir(dir.path().join("set1"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .next()
        .unwrap();
    assert!(
        meta.windows(b"rot.pcap".len()).any(|w| w == b"rot.pcap"),
        "the footer names the files"
    );

    // a set whose last file was cut mid-packet (the capture killed): the records of what came
    // before it are written, and the error names the file
    let cut = dir.path().join("rot.pcap3");
    let more = udp_capture(6010, 60, |i| {
        [10, 2, (i % 300 / 250) as u8, (i % 300 % 250) as u8]
    });
    let tail = &more[24 + 6000 * 118..];
    std::fs::write(&cut, [head, &tail[..tail.len() - 7]].concat()).unwrap();
    let o = replay(&[&parts[0], &cut, &parts[1], &parts[2]], "cut", "1");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("rot.pcap3") && err.contains("truncated") && err.contains("records"),
        "{err}"
    );
    assert_eq!(err.matches("rot.pcap3").count(), 1, "{err}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("300 flows, 300 records"), "{out}");

    // a pipe cannot be one of several files; a file given twice is refused
    for (files, says) in [
        (
            vec![parts[0].as_path(), std::path::Path::new("-")],
            "not a regular file",
        ),
        (vec![parts[0].as_path(), parts[0].as_path()], "given twice"),
    ] {
        let o = replay(&files, "bad", "1");
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "{err}");
        assert!(!dir.path().join("bad").exists(), "nothing written");
    }
}

#[test]
fn replay_writes_the_flows_a_filter_selects() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("ten.pcap");
    // ten flows 10.0.0.1 -> 10.0.K.2, UDP 5000 -> 53
    std::fs::write(&pcap, udp_capture(100, 40, |i| [10, 0, (i % 10) as u8, 2])).unwrap();
    let run = |filter: &str, out: &str| {
        Command::new(env!("CARGO_BIN_EXE_mpcom"))
            .arg("replay")
            .arg(&pcap)
            .arg("--out")
            .arg(dir.path().join(out))
            .arg("--filter")
            .arg(filter)
            .output()
            .unwrap()
    };
    let o = run("dst net 10.0.3.0/24 or host 10.0.5.2", "some");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains(
            "10 flows, 2 records (8 more not selected by \"dst net 10.0.3.0/24 or host 10.0.5.2\")"
        ),
        "{out}"
    );
    assert!(out.contains("(2 rows, "), "{out}");
    let file = std::fs::read_dir(dir.path().join("some"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .next()
        .unwrap();
    let bytes = std::fs::read(file).unwrap();
    assert!(
        bytes.windows(13).any(|w| w == b"mplane.filter"),
        "the footer names the filter"
    );
    // src is the initiator: no flow starts at 10.0.0.2; `udp` selects them all
    let o = run("src host 10.0.3.2", "none");
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("0 records (10 more"));
    let o = run("udp dst port 53", "all");
    assert!(String::from_utf8_lossy(&o.stdout).contains("10 records (0 more"));
    // a filter that does not parse: a clear error, nothing written
    let o = run("tcp port", "bad");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("flow filter") && err.contains("token"),
        "{err}"
    );
    assert!(!dir.path().join("bad").exists());
}
