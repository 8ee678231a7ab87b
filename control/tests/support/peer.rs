//! The Python reference SDK (`mplane-sdk` 0.9.0) as a live peer for tests.
//!
//! On first use a virtual environment is created under the build directory
//! (`target/peer-venv`) and the reference SDK installed into it from PyPI with
//! the dependency versions verified on Python 3.11; later runs reuse it. A file
//! lock keeps parallel test processes from racing. The SDK fails on Python ≥
//! 3.12, so `MPLANE_PEER_PYTHON` may name a 3.11 interpreter (default `python3`).

#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Packages of the reference peer, as the reference was verified with.
pub const PACKAGES: &[&str] = &[
    "mplane-sdk==0.9.0",
    "tornado==6.6.1",
    "urllib3==2.8.0",
    "PyYAML==6.0.4",
    "nose==1.3.7",
];

/// The workspace's build directory.
pub fn target_dir() -> PathBuf {
    if let Ok(t) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(t);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
}

/// Path of the venv's python, creating the venv on first use.
/// Panics with a clear message when it cannot be made: an interop test
/// that silently skips proves nothing.
pub fn python() -> PathBuf {
    let venv = target_dir().join("peer-venv");
    let py = venv.join("bin/python");
    let stamp = venv.join(".mplane-peer-ready");
    std::fs::create_dir_all(target_dir()).expect("create target dir");
    let lock = File::create(target_dir().join(".peer-venv.lock")).expect("lock file");
    lock.lock().expect("lock peer venv");
    if !stamp.exists() {
        let base = std::env::var("MPLANE_PEER_PYTHON").unwrap_or_else(|_| "python3".into());
        let _ = std::fs::remove_dir_all(&venv);
        run(
            Command::new(&base).args(["-m", "venv"]).arg(&venv),
            "create the peer venv",
        );
        run(
            Command::new(&py)
                .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
                .args(PACKAGES),
            "pip install the reference SDK",
        );
        run(
            Command::new(&py).args([
                "-c",
                "import mplane.model, mplane.client, mplane.component, tornado",
            ]),
            "import the reference SDK (it needs Python 3.11)",
        );
        std::fs::write(&stamp, PACKAGES.join("\n")).expect("stamp");
    }
    drop(lock);
    py
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot {what}: {e}"));
    assert!(
        out.status.success(),
        "cannot {what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The start of a script that drives the reference *client*: reads its input (JSON on stdin:
/// `pki`, the directory of the test PKI, whose `client.crt`/`client.key` it presents; `url`,
/// the component's base URL; optionally `registry`, a registry file to preload), and defines
/// `client` (an `HttpInitiatorClient`), `tls`, `base`, `discover()` (retrieves every
/// capability the `/capability` index links to: the SDK's own crawler fails on Python 3.11)
/// and `run(label, when, params, wait=20.0, settle=0.0)` (invokes a capability, waits
/// `settle` seconds, and returns its result as JSON once the receipts are redeemed, giving up
/// after `wait` seconds). Run with [`run_client_script`].
pub const CLIENT_PREAMBLE: &str = r#"
import configparser, html.parser, json, sys, time
import urllib3
import mplane.model, mplane.tls, mplane.client
urllib3.disable_warnings()
args = json.load(sys.stdin)
if args.get("registry"):
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

def discover():
    u = urllib3.util.parse_url(base)
    res = tls.pool_for(u.scheme, u.host, u.port).request("GET", "/capability")
    class Links(html.parser.HTMLParser):
        def __init__(self):
            super().__init__()
            self.links = []
        def handle_starttag(self, tag, attrs):
            self.links += [v for k, v in attrs if tag == "a" and k == "href"]
    p = Links()
    p.feed(res.data.decode("utf-8"))
    for href in p.links:
        client.retrieve_capabilities(base + href)

def run(label, when, params, wait=20.0, settle=0.0):
    spec = client.invoke_capability(label, when, params)
    time.sleep(settle)
    rep = mplane.client.BaseClient.result_for(client, spec.get_token())
    deadline = time.time() + wait
    while isinstance(rep, mplane.model.Receipt) and time.time() < deadline:
        time.sleep(0.3)
        rep = client.result_for(spec.get_token())
    return mplane.model.unparse_json(rep)
"#;

/// Runs [`CLIENT_PREAMBLE`] followed by `body` (see [`run_script`]).
pub fn run_client_script(body: &str, input: &str) -> String {
    run_script(&format!("{CLIENT_PREAMBLE}\n{body}"), input)
}

/// Runs `script` with the peer's python, `PYTHONHASHSEED=0`, feeding `input`
/// on stdin; returns stdout. Panics with stderr on failure.
pub fn run_script(script: &str, input: &str) -> String {
    use std::io::Write;
    let py = python();
    let mut child = Command::new(py)
        .args(["-c", script])
        .env("PYTHONHASHSEED", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn peer python");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_string();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().expect("peer python");
    let _ = writer.join();
    assert!(
        out.status.success(),
        "peer script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// A service module for the reference runtime, written by [`ReferenceComponent::start`]:
/// `echo-ip4` answers at once, `wait-ip4` runs until interrupted (at most 60 s), counting
/// tenths of a second, `tick-ip4` answers at once and is periodic (for repeated
/// specifications).
pub const REFERENCE_SERVICES: &str = r#"
import time
from datetime import datetime, timedelta
import mplane.model, mplane.scheduler

def _cap(label, result, when="now ... future"):
    cap = mplane.model.Capability(label=label, when=when)
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
            Wait(_cap("wait-ip4", "delay.twoway.icmp.count")),
            Echo(_cap("tick-ip4", "delay.twoway.icmp.us", when="now ... future / 1s"))]
"#;

#[path = "../common/net.rs"]
#[allow(clippy::duplicate_mod)] // also a module of tests that include this file
mod net;
#[allow(unused_imports)] // not every test that includes this file takes a port
pub use net::free_port;

/// The reference `mpcom` with [`REFERENCE_SERVICES`], killed when dropped.
pub struct ReferenceComponent(std::process::Child);

impl Drop for ReferenceComponent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl ReferenceComponent {
    /// Starts it in `dir` with the configuration `conf` (whose `[module_*]` may name
    /// `refpeer_services`, written there); returns at once.
    pub fn spawn(dir: &Path, conf: &str) -> ReferenceComponent {
        let py = python();
        std::fs::write(dir.join("refpeer_services.py"), REFERENCE_SERVICES).unwrap();
        let conf_path = dir.join("reference-component.conf");
        std::fs::write(&conf_path, conf).unwrap();
        ReferenceComponent(
            Command::new(&py)
                .arg(py.with_file_name("mpcom"))
                .arg("--config")
                .arg(&conf_path)
                .env("PYTHONPATH", dir)
                .env("PYTHONHASHSEED", "0")
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    /// Starts it in `dir` with `tls` (a `[TLS]` section) on `port`, the client certificate's
    /// identity `org.mplane.SSB.Clients.Client-1` allowed every service; returns once the
    /// port accepts connections.
    pub fn start(dir: &Path, tls: &str, port: u16) -> ReferenceComponent {
        let conf = format!(
            "{tls}[Roles]\norg.mplane.SSB.Clients.Client-1 = guest\n\n\
             [Authorizations]\necho-ip4 = guest\nwait-ip4 = guest\ntick-ip4 = guest\n\n\
             [module_ref]\nmodule = refpeer_services\n\n\
             [component]\nworkflow = client-initiated\nlisten-port = {port}\n\
             listen-cap-link = https://127.0.0.1:{port}/\n"
        );
        let peer = ReferenceComponent::spawn(dir, &conf);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "reference mpcom did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        peer
    }
}
