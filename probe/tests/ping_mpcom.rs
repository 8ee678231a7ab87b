//! Ping end to end: `mpcom` runs the reference SDK's ping configuration section unchanged
//! (`module = mplane.components.ping`, `ip4addr`, `ip6addr`) over mutual TLS; our client and
//! the reference client (`mplane-sdk` from PyPI) each send specifications for loopback and get
//! one measurement per second of scope. Needs `openssl`, an ICMP socket (root or
//! `CAP_NET_RAW`, or `net.ipv4.ping_group_range`) and PyPI.

#[path = "../../control/tests/common/pki.rs"]
mod pki;

#[path = "../../control/tests/support/peer.rs"]
mod peer;

#[path = "support/mpcom_process.rs"]
mod mpcom_process;

use std::process::Stdio;
use std::sync::Arc;

use mpcom_process::{Mpcom, free_port};
use mplane::client::{Client, Url};
use mplane::model::{self, Message, Statement, WhenText};
use mplane::tls::Connector;
use mplane::value::Value;
use pki::Pki;

/// `mpcom` with the reference's ping section; its port.
fn start(pki: &Pki) -> (Mpcom, u16) {
    let d = pki.dir().display();
    let port = free_port();
    let conf = format!(
        "[TLS]\ncert = {d}/component.crt\nkey = {d}/component.key\nca-chain = {d}/ca.crt\n\n\
         [Roles]\norg.mplane.SSB.Clients.Client-1 = guest\n\n\
         [Authorizations]\nping = guest\n\n\
         [module_ping]\nmodule = mplane.components.ping\nip4addr = 127.0.0.1\nip6addr = ::1\n\n\
         [component]\nworkflow = client-initiated\nlisten-port = {port}\n\
         listen-cap-link = https://127.0.0.1:{port}/\n"
    );
    let path = pki.dir().join("ping.conf");
    std::fs::write(&path, conf).unwrap();
    Mpcom::start(&path, Stdio::inherit())
}

/// `true` if this process may open an ICMP socket (else the test is skipped).
fn icmp_allowed() -> bool {
    let ip = "127.0.0.1".parse().unwrap();
    match mplane_probe::active::ping::Pinger::new(ip, ip) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("skipping: {e}");
            false
        }
    }
}

fn count_and_range(r: &Statement) -> (u64, u64, u64, u64) {
    let row = r.rows().row(0);
    let n = |i: usize| {
        row.cell(i)
            .as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    };
    (n(3), n(0), n(1), n(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_pings_loopback_through_mpcom() {
    if !icmp_allowed() {
        return;
    }
    let pki = Pki::new();
    let (_mpcom, port) = start(&pki);
    let regs = Arc::new(mplane_probe::registry::registries().unwrap());
    let client = Client::new(Some(Connector::new(&pki.files("client")).unwrap()), regs);
    let base = Url::parse(&format!("https://127.0.0.1:{port}/")).unwrap();
    let caps = client
        .capabilities(&base.with_path("/capability"))
        .await
        .unwrap();
    let mut labels: Vec<_> = caps.iter().filter_map(|c| c.label.clone()).collect();
    labels.sort();
    assert_eq!(
        labels,
        [
            "ping-average-ip4",
            "ping-average-ip6",
            "ping-detail-ip4",
            "ping-detail-ip6"
        ]
    );
    for (label, param, dst) in [
        ("ping-average-ip4", "destination.ip4", "127.0.0.1"),
        ("ping-average-ip6", "destination.ip6", "::1"),
    ] {
        let cap = caps
            .iter()
            .find(|c| c.label.as_deref() == Some(label))
            .unwrap();
        let mut spec = cap.specification_for();
        spec.set_parameter_value(param, &Value::Address(dst.parse().unwrap()))
            .unwrap();
        spec.when = Some(WhenText::parse("now + 3s / 1s").unwrap());
        spec.token = Some(spec.client_token(mplane::component::now()));
        let mut rep = client.specify(&base, &spec).await.unwrap();
        for _ in 0..100 {
            match &rep {
                Message::Statement(s) if s.kind.key() == "receipt" => {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    rep = client.redeem(&base, s).await.unwrap();
                }
                _ => break,
            }
        }
        let Message::Statement(r) = &rep else {
            panic!("{label}: {}", rep.unparse())
        };
        assert_eq!(r.kind.key(), "result", "{}", rep.unparse());
        let (count, min, mean, max) = count_and_range(r);
        assert_eq!(count, 3, "{label}: {}", rep.unparse());
        assert!(
            min <= mean && mean <= max && max < 1_000_000,
            "{}",
            rep.unparse()
        );
    }
}

/// The reference client retrieves the capabilities (by token), invokes two of them for loopback and
/// reads the results back.
const REF_DRIVER: &str = r#"
import configparser, json, sys, time
import urllib3
import mplane.model, mplane.tls, mplane.client
urllib3.disable_warnings()
args = json.load(sys.stdin)
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
    spec = client.invoke_capability(label, "now + 3s / 1s", params)
    rep = mplane.client.BaseClient.result_for(client, spec.get_token())
    deadline = time.time() + 20
    while isinstance(rep, mplane.model.Receipt) and time.time() < deadline:
        time.sleep(0.3)
        rep = client.result_for(spec.get_token())
    return mplane.model.unparse_json(rep)
out["detail6"] = run("ping-detail-ip6", {"destination.ip6": "::1"})
out["average4"] = run("ping-average-ip4", {"destination.ip4": "127.0.0.1"})
print(json.dumps(out))
"#;

#[test]
fn reference_client_pings_loopback_through_mpcom() {
    if !icmp_allowed() {
        return;
    }
    let pki = Pki::new();
    let (_mpcom, port) = start(&pki);
    // the capability tokens, as our client sees them (the reference's crawler of the
    // capability index does not run on Python 3.11, DIGEST Q11)
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tokens: Vec<String> = rt.block_on(async {
        let regs = Arc::new(mplane_probe::registry::registries().unwrap());
        let client = Client::new(Some(Connector::new(&pki.files("client")).unwrap()), regs);
        let base = Url::parse(&format!("https://127.0.0.1:{port}/")).unwrap();
        let caps = client
            .capabilities(&base.with_path("/capability"))
            .await
            .unwrap();
        caps.iter().filter_map(|c| c.token.clone()).collect()
    });
    let input = serde_json::json!({
        "pki": pki.dir(), "url": format!("https://127.0.0.1:{port}"), "tokens": tokens,
    });
    let out = peer::run_script(REF_DRIVER, &input.to_string());
    let out: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(out["caps"].as_array().unwrap().len(), 4, "{}", out["caps"]);
    let regs = mplane::registry::Registries::default();
    let parse = |k: &str| match model::parse(out[k].as_str().unwrap(), &regs) {
        Ok(Message::Statement(s)) if s.kind.key() == "result" => s,
        other => panic!("{k}: {other:?}: {}", out[k]),
    };
    let detail = parse("detail6");
    assert_eq!(detail.rows().len(), 3, "{}", out["detail6"]);
    let average = parse("average4");
    let (count, min, mean, max) = count_and_range(&average);
    assert_eq!(count, 3, "{}", out["average4"]);
    assert!(min <= mean && mean <= max, "{}", out["average4"]);
}
