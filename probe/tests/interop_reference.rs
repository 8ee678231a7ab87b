//! The reference Python client (`mplane-sdk` 0.9.0, `HttpInitiatorClient`)
//! against `mpcom --config` with the interop services, over mutual TLS on
//! loopback. Needs `openssl` and a Python 3.11 able to create the peer venv
//! (see `control/tests/support/peer.rs`; first run installs from PyPI).

#[path = "support/cli.rs"]
mod cli;
#[path = "support/mpcom_process.rs"]
mod mpcom_process;
#[path = "../../control/tests/common/pki.rs"]
mod pki;

#[path = "../../control/tests/support/peer.rs"]
#[allow(clippy::incompatible_msrv)]
mod peer;

use std::process::Stdio;

use cli::{client_initiated, component_initiated, interop_conf};
use mpcom_process::{Mpcom, free_port};
use mplane::model::{self, Message};
use mplane::registry::Registries;
use pki::Pki;

/// The reference client driven from Python: discovery (GET /capability, then
/// each linked capability through the SDK), rows (inline result), fail
/// (exception), slow (receipt, interrupt after a second, partial result by
/// redemption), an identity without a role (no permission), a specification
/// with a result column no capability has (no service), repeat (envelope).
const DRIVER: &str = r#"
discover()
out = {"caps": sorted(client.capability_labels())}

def first(spec):
    return mplane.client.BaseClient.result_for(client, spec.get_token())

def finish(spec, rep, wait=10.0):
    deadline = time.time() + wait
    while isinstance(rep, mplane.model.Receipt) and time.time() < deadline:
        time.sleep(0.3)
        rep = client.result_for(spec.get_token())
    return mplane.model.unparse_json(rep)

spec = client.invoke_capability("interop-rows-ip4", "now + 1s / 1s",
                                {"destination.ip4": "127.0.0.2", "packets.ip": "4"})
rep = first(spec)
out["rows_first"] = type(rep).__name__
out["rows"] = finish(spec, rep)
out["rows_token"] = spec.get_token()

spec = client.invoke_capability("interop-fail-ip4", "now", {"destination.ip4": "127.0.0.2"})
out["fail"] = finish(spec, first(spec))

spec = client.invoke_capability("interop-slow-ip4", "now + 60s / 1s", {"destination.ip4": "127.0.0.2"})
rep = first(spec)
out["slow_first"] = type(rep).__name__
time.sleep(1.0)
client.interrupt_capability(spec.get_token())
out["slow"] = finish(spec, rep)

def seen(rep):
    return [type(rep).__name__, getattr(rep, "_errmsg", None)]

# an identity without a role (the supervisor certificate) invoking a
# capability it learnt from the guest client
cfg2 = configparser.ConfigParser()
cfg2.optionxform = str
cfg2.read_dict(cfg)
cfg2["TLS"] = {"ca-chain": pki + "/ca.crt", "cert": pki + "/supervisor.crt", "key": pki + "/supervisor.key"}
client2 = mplane.client.HttpInitiatorClient(cfg2, mplane.tls.TlsState(cfg2))
client2.set_default_url(base + "/")
client2.handle_message(client.capability_for("interop-rows-ip4"))
spec = client2.invoke_capability("interop-rows-ip4", "now + 1s / 1s",
                                 {"destination.ip4": "127.0.0.2", "packets.ip": "1"})
out["noperm"] = seen(mplane.client.BaseClient.result_for(client2, spec.get_token()))

# a specification with a result column no capability has, through the
# client's own send path
(cap, spec) = client._spec_for("interop-fail-ip4", "now", {"destination.ip4": "127.0.0.2"})
spec.add_result_column("delay.twoway.icmp.us.max")
spec.retoken(force=True)
client.send_message(spec)
out["nosvc"] = seen(first(spec))

spec = client.invoke_capability("interop-rows-ip4", "repeat now + 2s / 1s { now + 1s / 1s }",
                                {"destination.ip4": "127.0.0.2", "packets.ip": "2"})
rep = first(spec)
out["repeat_first"] = type(rep).__name__
out["repeat"] = finish(spec, rep, wait=15.0)
out["repeat_token"] = spec.get_token()
print(json.dumps(out))
"#;

fn parse(text: &str) -> Message {
    model::parse(text, &Registries::default()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// What both workflows must bring back of `interop-fail-ip4` (its exception) and of
/// `interop-slow-ip4` (a receipt first, then one row once interrupted); the slow result.
fn fail_and_slow(out: &serde_json::Value) -> mplane::model::Statement {
    let Message::Exception(e) = parse(out["fail"].as_str().unwrap()) else {
        panic!("{}", out["fail"])
    };
    assert_eq!(e.message, "interop-fail: deliberate failure");

    assert_eq!(out["slow_first"], "Receipt");
    let Message::Statement(slow) = parse(out["slow"].as_str().unwrap()) else {
        panic!("{}", out["slow"])
    };
    assert_eq!(slow.kind.key(), "result", "{}", out["slow"]);
    assert_eq!(slow.rows().len(), 1);
    slow
}

#[test]
fn reference_client_against_mpcom() {
    let pki = Pki::new();
    let port = free_port();
    let conf = interop_conf(&pki, &client_initiated(port));
    let path = pki.dir().join("component.conf");
    std::fs::write(&path, conf).unwrap();
    let (_mpcom, _) = Mpcom::start(&path, Stdio::null());

    let input = serde_json::json!({"pki": pki.dir(), "url": format!("https://127.0.0.1:{port}")});
    let out = peer::run_client_script(DRIVER, &input.to_string());
    let out: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        out["caps"],
        serde_json::json!(["interop-fail-ip4", "interop-rows-ip4", "interop-slow-ip4"])
    );

    assert_eq!(out["rows_first"], "Result");
    let Message::Statement(rows) = parse(out["rows"].as_str().unwrap()) else {
        panic!("{}", out["rows"])
    };
    assert_eq!(rows.kind.key(), "result");
    assert_eq!(rows.token.as_deref(), out["rows_token"].as_str());
    assert_eq!(rows.rows().len(), 4);
    assert_eq!(
        rows.when.as_ref().map(|w| w.text().to_string()).as_deref(),
        Some("2015-06-01 12:00:00.000000 ... 2015-06-01 12:00:03.000000")
    );

    let slow = fail_and_slow(&out);
    let count = slow
        .columns()
        .iter()
        .position(|c| c.name == "delay.twoway.icmp.count")
        .map(|i| slow.rows().row(0).cell(i));
    let count = count
        .and_then(|v| v.text().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{}", out["slow"]));
    assert!(count > 0, "{}", out["slow"]);

    // what the reference client holds for the refused specifications
    assert_eq!(
        out["noperm"],
        serde_json::json!([
            "Exception",
            "User has no permission to request this capability"
        ])
    );
    assert_eq!(
        out["nosvc"],
        serde_json::json!(["Exception", "No service registered for specification"])
    );

    // repeated specification: receipt, then an envelope of per-repetition results
    assert_eq!(out["repeat_first"], "Receipt");
    let Message::Envelope(env) = parse(out["repeat"].as_str().unwrap()) else {
        panic!("{}", out["repeat"])
    };
    assert_eq!(env.token.as_deref(), out["repeat_token"].as_str());
    assert!(!env.contents.is_empty(), "{}", out["repeat"]);
    for m in &env.contents {
        assert_eq!(m.kind_name(), "result");
        assert_ne!(m.token(), env.token.as_deref());
    }
}

/// The reference's listener (`HttpListenerClient`, as `mpsup` runs it on its own IOLoop)
/// driven from Python: wait for our registration, queue rows (an immediate start, whose
/// result the reference component loses), fail, slow then its interrupt, and a repeated
/// specification; print what arrived for each.
const LISTENER: &str = r#"
import sys, json, time, threading, configparser
import tornado.ioloop
import mplane.model, mplane.client, mplane.tls
mplane.model.initialize_registry()
args = json.loads(sys.stdin.read())
pki, port = args["pki"], args["port"]
cfg = configparser.ConfigParser()
cfg.optionxform = str
cfg["TLS"] = {"ca-chain": pki + "/ca.crt", "cert": pki + "/client.crt", "key": pki + "/client.key"}
cfg["client"] = {"workflow": "component-initiated", "listen-port": str(port),
                 "listen-spec-link": "https://127.0.0.1:%d/register/result" % port,
                 "registration-path": "register/capability",
                 "specification-path": "show/specification",
                 "result-path": "register/result"}
tls = mplane.tls.TlsState(cfg)
io = tornado.ioloop.IOLoop.current()
client = mplane.client.HttpListenerClient(cfg, tls, io_loop=io)
out = {}

def wait_for(token, done, limit=20.0):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            rep = client.result_for(token)
            if done(rep):
                return rep
        except KeyError:
            pass
        time.sleep(0.2)
    return None

def final(rep):
    return not isinstance(rep, mplane.model.Receipt)

def text(rep):
    return None if rep is None else mplane.model.unparse_json(rep)

def drive():
    try:
        deadline = time.time() + 30
        while len(client.capability_labels()) < 3 and time.time() < deadline:
            time.sleep(0.1)
        out["caps"] = sorted(client.capability_labels())
        spec = client.invoke_capability("interop-rows-ip4", "now + 1s / 1s",
                                        {"destination.ip4": "127.0.0.2", "packets.ip": "4"})
        out["rows"] = text(wait_for(spec.get_token(), final))
        out["rows_token"] = spec.get_token()
        spec = client.invoke_capability("interop-fail-ip4", "now", {"destination.ip4": "127.0.0.2"})
        out["fail"] = text(wait_for(spec.get_token(), final))
        spec = client.invoke_capability("interop-slow-ip4", "now + 60s / 1s", {"destination.ip4": "127.0.0.2"})
        out["slow_first"] = type(wait_for(spec.get_token(), lambda r: True)).__name__
        client.interrupt_capability(spec.get_token())
        out["slow"] = text(wait_for(spec.get_token(), final))
        spec = client.invoke_capability("interop-rows-ip4", "repeat now + 3s / 1s { now + 1s / 1s }",
                                        {"destination.ip4": "127.0.0.2", "packets.ip": "2"})
        out["repeat"] = text(wait_for(spec.get_token(),
            lambda r: isinstance(r, mplane.model.Envelope) and len(list(r.messages())) >= 2))
        out["repeat_token"] = spec.get_token()
    except Exception as e:
        out["error"] = repr(e)
    print(json.dumps(out), flush=True)
    io.add_callback(io.stop)

threading.Thread(target=drive, daemon=True).start()
io.start()
"#;

#[test]
fn mpcom_component_initiated_with_the_reference_listener() {
    let pki = Pki::new();
    let port = free_port();
    // the listener holds the client certificate: its identity's role is guest
    let conf = interop_conf(
        &pki,
        &format!("{}poll_interval = 0.5\n", component_initiated(port)),
    );
    let path = pki.dir().join("component.conf");
    std::fs::write(&path, conf).unwrap();
    // mpcom first: it retries until the listener is up
    let mut mpcom = std::process::Command::new(env!("CARGO_BIN_EXE_mpcom"))
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let input = serde_json::json!({"pki": pki.dir(), "port": port});
    let out = peer::run_script(LISTENER, &input.to_string());
    let _ = mpcom.kill();
    let _ = mpcom.wait();
    // the listener prints what it receives; the driver's JSON is the last line
    let last = out.lines().last().unwrap_or_default();
    let out: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(out.get("error").is_none(), "{out}");
    assert_eq!(
        out["caps"],
        serde_json::json!(["interop-fail-ip4", "interop-rows-ip4", "interop-slow-ip4"])
    );

    // an immediate start: the result arrives (the reference component loses it)
    let Message::Statement(rows) = parse(out["rows"].as_str().unwrap_or_else(|| panic!("{out}")))
    else {
        panic!("{}", out["rows"])
    };
    assert_eq!(rows.kind.key(), "result");
    assert_eq!(rows.token.as_deref(), out["rows_token"].as_str());
    assert_eq!(rows.rows().len(), 4);

    fail_and_slow(&out);

    // each completed repetition sends the envelope again (the reference never reports one)
    let Message::Envelope(env) = parse(out["repeat"].as_str().unwrap_or_else(|| panic!("{out}")))
    else {
        panic!("{}", out["repeat"])
    };
    assert_eq!(env.token.as_deref(), out["repeat_token"].as_str());
    assert!(env.contents.len() >= 2, "{}", out["repeat"]);
    for m in &env.contents {
        assert_eq!(m.kind_name(), "result");
    }
}
