//! `mpcli` against the reference component runtime (`mpcom` of `mplane-sdk` 0.9.0) over
//! mutual TLS on loopback, with a service module written here: the capabilities listed from
//! its HTML index, an inline result, a receipt (the reference answers after 5 s) interrupted
//! by Ctrl-C with its partial result, and a specification the reference refuses. Needs
//! `openssl` and a Python 3.11 able to create the peer venv (`control/tests/support/peer.rs`).

#[path = "../../control/tests/common/pki.rs"]
mod pki;

#[path = "../../control/tests/support/peer.rs"]
#[allow(clippy::incompatible_msrv)]
mod peer;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pki::Pki;

/// `echo-ip4` answers at once; `wait-ip4` counts tenths of a second until interrupted.
const MODULE: &str = r#"
import time
from datetime import datetime, timedelta
import mplane.model, mplane.scheduler

def _cap(label, result):
    cap = mplane.model.Capability(label=label, when="now ... future")
    cap.add_parameter("source.ip4", "127.0.0.1")
    cap.add_parameter("destination.ip4")
    cap.add_result_column(result)
    return cap

_T0 = datetime(2015, 6, 1, 12, 0, 0)

class Echo(mplane.scheduler.Service):
    def run(self, spec, check_interrupt):
        res = mplane.model.Result(specification=spec)
        res.set_when(mplane.model.When(a=_T0, b=_T0 + timedelta(seconds=1)), force=True)
        res.set_result_value("delay.twoway.icmp.us", 42)
        return res

class Wait(mplane.scheduler.Service):
    def run(self, spec, check_interrupt):
        n = 0
        while not check_interrupt() and n < 600:
            time.sleep(0.1)
            n += 1
        res = mplane.model.Result(specification=spec)
        res.set_when(mplane.model.When(a=_T0, b=_T0 + timedelta(seconds=1)), force=True)
        res.set_result_value("delay.twoway.icmp.count", n)
        return res

def services():
    return [Echo(_cap("echo-ip4", "delay.twoway.icmp.us")),
            Wait(_cap("wait-ip4", "delay.twoway.icmp.count"))]
"#;

struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn status(o: &Output, code: i32) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{out}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

#[test]
fn mpcli_against_the_reference_component() {
    let py = peer::python();
    let pki = Pki::new();
    let port = free_port();
    let tls = pki.tls_section();
    std::fs::write(pki.dir().join("clipeer_services.py"), MODULE).unwrap();
    let conf = format!(
        "{tls}[Roles]\norg.mplane.SSB.Clients.Client-1 = guest\n\n\
         [Authorizations]\necho-ip4 = guest\nwait-ip4 = guest\n\n\
         [module_cli]\nmodule = clipeer_services\n\n\
         [component]\nworkflow = client-initiated\nlisten-port = {port}\n\
         listen-cap-link = https://127.0.0.1:{port}/\n"
    );
    let conf_path = pki.dir().join("component.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let _peer = Peer(
        Command::new(&py)
            .arg(py.with_file_name("mpcom"))
            .arg("--config")
            .arg(&conf_path)
            .env("PYTHONPATH", pki.dir())
            .env("PYTHONHASHSEED", "0")
            .current_dir(pki.dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "reference mpcom did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    // the reference client's own configuration file
    let d = pki.dir().display();
    let client_conf = pki.dir().join("client.conf");
    std::fs::write(
        &client_conf,
        format!(
            "[TLS]\ncert = {d}/client.crt\nkey = {d}/client.key\nca-chain = {d}/ca.crt\n\n\
             [client]\nworkflow = client-initiated\ndefault-url = https://127.0.0.1:{port}/\n\
             capability-url = https://127.0.0.1:{port}/capability\n"
        ),
    )
    .unwrap();
    let mpcli = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mpcli"));
        c.arg("--config").arg(&client_conf).args(args);
        c
    };

    // capabilities from the reference's HTML index
    let caps = status(&mpcli(&["caps"]).output().unwrap(), 0);
    assert!(caps.contains("echo-ip4 (measure)"), "{caps}");
    assert!(caps.contains("wait-ip4 (measure)"), "{caps}");
    assert!(
        caps.contains("parameters  destination.ip4: *, source.ip4: 127.0.0.1"),
        "{caps}"
    );

    // an inline result
    let out = status(
        &mpcli(&["run", "echo-ip4", "destination.ip4=127.0.0.2"])
            .output()
            .unwrap(),
        0,
    );
    assert_eq!(out, "delay.twoway.icmp.us\n42\n");

    // a receipt, interrupted by Ctrl-C: the partial result
    let child = mpcli(&[
        "run",
        "wait-ip4",
        "destination.ip4=127.0.0.2",
        "--when",
        "now + 60s",
        "--poll",
        "0.3",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // the reference holds a specification's reply up to 5 s before it sends the receipt:
    // the Ctrl-C lands while the request is in flight and is acted on once the receipt is in
    std::thread::sleep(Duration::from_millis(2000));
    assert!(
        Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let o = child.wait_with_output().unwrap();
    let out = status(&o, 130);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "delay.twoway.icmp.count", "{out}");
    let n: u64 = lines[1].parse().unwrap();
    assert!((20..600).contains(&n), "{out}");

    // a receipt the component does not know: the reference's exception
    let receipt = mpcli(&[
        "run",
        "wait-ip4",
        "destination.ip4=127.0.0.3",
        "--when",
        "now + 60s",
        "--no-wait",
    ])
    .output()
    .unwrap();
    let receipt = status(&receipt, 0);
    assert!(receipt.contains("\"receipt\""), "{receipt}");
    let file = pki.dir().join("receipt.json");
    let mut forged: serde_json::Value = serde_json::from_str(&receipt).unwrap();
    forged["token"] = "0123456789abcdef0123456789abcdef".into();
    std::fs::write(&file, forged.to_string()).unwrap();
    let o = mpcli(&["interrupt", file.to_str().unwrap()])
        .output()
        .unwrap();
    status(&o, 1);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("exception from the component"), "{err}");
}
