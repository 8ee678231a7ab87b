//! `GET /metrics` of `mpcom` over mutual TLS: while a passive job runs, an identity with the
//! configured role scrapes the component's, the capture pipeline's and the flow meters'
//! counters, and the Prometheus project's own parser (`prometheus-client` from PyPI) reads
//! them; an identity without the role gets 403. Needs `openssl` and PyPI.

#[path = "../../control/tests/common/pki.rs"]
mod pki;

#[path = "support/component.rs"]
mod component;
#[path = "support/mpcom_process.rs"]
mod mpcom_process;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use component::*;
use mplane::model::WhenText;
use pki::Pki;
use serde_json::Value as Json;

/// Version of the parser the assertions were written against.
const PROMETHEUS_CLIENT: &str = "0.21.1";

/// A venv with `prometheus-client`, created once per target directory.
fn python() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let venv = tmp.parent().unwrap_or(tmp).join("peer-venv-prometheus");
    let out = Command::new("flock")
        .arg(venv.with_extension("lock"))
        .args([
            "sh",
            "-c",
            r#"set -e
V="$1"
if [ ! -f "$V/.ready-$2" ]; then
  rm -rf "$V"
  python3 -m venv "$V"
  "$V/bin/pip" install -q --disable-pip-version-check "prometheus-client==$2"
  touch "$V/.ready-$2"
fi"#,
            "sh",
        ])
        .arg(&venv)
        .arg(PROMETHEUS_CLIENT)
        .output()
        .expect("run flock (util-linux)");
    assert!(
        out.status.success(),
        "creating the prometheus-client venv failed (needs python3-venv and PyPI): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    venv.join("bin/python")
}

/// Parses an exposition with `prometheus_client.parser`; returns
/// `{family: {"type": ..., "samples": [[name, labels, value], ...]}}`.
fn parse(text: &str) -> Json {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = {"type": f.type, "help": f.documentation,
                   "samples": [[s.name, s.labels, s.value] for s in f.samples]}
print(json.dumps(out))
"#;
    let mut child = Command::new(python())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of `sample` in `family` whose labels include `labels`.
fn value(m: &Json, family: &str, sample: &str, labels: &[(&str, &str)]) -> f64 {
    let f = m
        .get(family)
        .unwrap_or_else(|| panic!("no family {family}"));
    f["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s[0] == sample
                && labels
                    .iter()
                    .all(|(k, v)| s[1].get(*k).and_then(Json::as_str) == Some(*v))
        })
        .and_then(|s| s[2].as_f64())
        .unwrap_or_else(|| panic!("no sample {sample}{labels:?} in {f}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_over_mtls_while_a_passive_job_runs() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("tap.pcap");
    capture(&pcap);
    let tls = pki.tls_section();
    let port = free_port();
    let conf = format!(
        "{tls}[Roles]\norg.mplane.SSB.Clients.Client-1 = guest,monitoring\n\
         org.mplane.SSB.Supervisors.Supervisor-1 = guest\n\n\
         [Authorizations]\nflows = guest\n\n\
         [module_tap]\nmodule = passive\nsource = pcap:{}\ninterface = tap0\nrepeat = on\n\n\
         [component]\nworkflow = client-initiated\nlisten-port = {port}\n\
         listen-cap-link = https://127.0.0.1:{port}/\nmetrics_roles = monitoring\n",
        pcap.display(),
    );
    let path = pki.dir().join("metrics.conf");
    std::fs::write(&path, conf).unwrap();
    let (_mpcom, port) = mpcom_process::Mpcom::start(&path, Stdio::inherit());
    let (client, base, caps) = connect(&pki, port, "client").await;
    let metrics_url = base.with_path("/metrics");

    // before any job: the component's own figures, the capture not running
    let idle = client
        .request(hyper::Method::GET, &metrics_url, None)
        .await
        .unwrap();
    assert_eq!(idle.status, 200);
    assert_eq!(
        idle.content_type.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let m = parse(std::str::from_utf8(&idle.body).unwrap());
    let tap = [("module", "tap"), ("interface", "tap0")];
    assert_eq!(
        value(&m, "mplane_capture_running", "mplane_capture_running", &tap),
        0.0
    );
    assert!(m.get("mplane_capture_frames").is_none(), "not running");
    assert_eq!(m["mplane_component_open_connections"]["type"], "gauge");
    assert_eq!(m["mplane_component_connections"]["type"], "counter");
    assert!(
        value(
            &m,
            "mplane_component_capabilities",
            "mplane_component_capabilities",
            &[]
        ) >= 8.0
    );

    // a passive job over the looping capture; scrape while it runs
    let mut spec = flows_spec(&caps, "flows-ip4", "", None);
    spec.when = Some(WhenText::parse("now + 6s").unwrap());
    spec.token = Some(spec.client_token(mplane::component::now()));
    let job = {
        let (c, b, s) = (client.clone(), base.clone(), spec.clone());
        tokio::spawn(async move { result(&c, &b, &s).await })
    };
    // one pass of the capture spans 1.2 s of packet time, replayed at its pace
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let busy = client
        .request(hyper::Method::GET, &metrics_url, None)
        .await
        .unwrap();
    assert_eq!(busy.status, 200);
    let text = std::str::from_utf8(&busy.body).unwrap();
    let m = parse(text);
    assert_eq!(
        value(&m, "mplane_capture_running", "mplane_capture_running", &tap),
        1.0
    );
    assert_eq!(
        value(&m, "mplane_passive_jobs", "mplane_passive_jobs", &tap),
        1.0
    );
    // the parser strips `_total` from counter family names
    assert_eq!(m["mplane_capture_frames"]["type"], "counter");
    let frames = value(
        &m,
        "mplane_capture_frames",
        "mplane_capture_frames_total",
        &tap,
    );
    // 15 frames per pass: an ARP-like broadcast, 8 TCP, 2 DNS, 4 IPv6 UDP
    assert!(frames >= 15.0, "{frames}\n{text}");
    let non_ip = value(
        &m,
        "mplane_capture_non_ip",
        "mplane_capture_non_ip_total",
        &tap,
    );
    assert!(non_ip >= 1.0 && non_ip <= frames / 15.0 + 1.0, "{non_ip}");
    let worker0 = value(
        &m,
        "mplane_capture_worker_frames",
        "mplane_capture_worker_frames_total",
        &[("module", "tap"), ("worker", "0")],
    );
    assert_eq!(worker0, frames, "one worker gets every frame");
    assert_eq!(
        value(
            &m,
            "mplane_capture_drops",
            "mplane_capture_drops_total",
            &[("module", "tap"), ("stage", "kernel")]
        ),
        0.0
    );
    assert!(
        value(
            &m,
            "mplane_flows_created",
            "mplane_flows_created_total",
            &tap
        ) >= 3.0
    );
    assert!(value(&m, "mplane_app_names", "mplane_app_names_total", &tap) >= 2.0);
    assert!(
        value(
            &m,
            "mplane_component_http_responses",
            "mplane_component_http_responses_total",
            &[("code", "200")]
        ) >= 2.0
    );
    assert_eq!(
        value(&m, "mplane_component_jobs", "mplane_component_jobs", &[]),
        1.0
    );

    // an identity without the role
    let (other, _, _) = connect(&pki, port, "supervisor").await;
    let refused = other
        .request(hyper::Method::GET, &metrics_url, None)
        .await
        .unwrap();
    assert_eq!(refused.status, 403);

    let res = job.await.unwrap();
    assert!(res.unparse().contains("\"result\""), "{}", res.unparse());
}
