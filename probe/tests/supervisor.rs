//! A supervisor (`mpcom` with `[client] workflow = component-initiated`, as the reference's
//! `mpsup`): a probe that connects out registers with it, and clients run the probe's
//! capabilities through it: `mpcli` (ours) and the reference client, over mutual TLS on
//! loopback. Inline results, exceptions, and an interrupt travel through the relay. Needs
//! `openssl` and (for the reference client) a Python 3.11 able to create the peer venv.

#[path = "support/cli.rs"]
mod cli;
#[path = "support/mpcom_process.rs"]
mod mpcom_process;
#[path = "../../control/tests/support/peer.rs"]
#[allow(clippy::incompatible_msrv)]
mod peer;
#[path = "../../control/tests/common/pki.rs"]
mod pki;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cli::{client_conf, component_initiated, mpcli, saved_receipt, status, supervisor_conf};
use mpcom_process::{Mpcom, free_port};
use mplane::model::{self, Message};
use mplane::registry::Registries;
use pki::Pki;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write(pki: &Pki, name: &str, text: &str) -> std::path::PathBuf {
    let path = pki.dir().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The probe: the interop services, registering with the supervisor.
fn probe_conf(pki: &Pki, components: u16) -> String {
    let tls = pki.tls_section();
    format!(
        "{tls}[Roles]\norg.mplane.SSB.Supervisors.Supervisor-1 = admin\n\n\
         [Authorizations]\ninterop = admin\n\n\
         [module_interop]\nmodule = interop_services\nip4addr = 127.0.0.1\n\n\
         [component]\n{}poll_interval = 0.3\n",
        component_initiated(components)
    )
}

/// A supervisor `mpcom` running: the process, its configuration file, the clients' and the
/// components' ports.
fn supervisor(pki: &Pki) -> (Mpcom, std::path::PathBuf, u16, u16) {
    let (clients, components) = (free_port(), free_port());
    let sup = write(
        pki,
        "supervisor.conf",
        &supervisor_conf(pki, clients, components),
    );
    let (mpcom, port) = Mpcom::start(&sup, Stdio::null());
    assert_eq!(port, clients);
    (mpcom, sup, clients, components)
}

/// `mpcli interrupt` of the job whose receipt is in `file`, through the client configuration
/// `client`: the partial result as CSV (the command must succeed).
fn interrupt_csv(client: &Path, file: &Path, options: &[&str]) -> String {
    let mut args = vec!["interrupt", file.to_str().unwrap(), "--format", "csv"];
    args.extend_from_slice(options);
    status(&mpcli(client, &args), 0)
}

#[test]
fn a_probe_behind_a_supervisor_answers_its_clients() {
    let pki = Pki::new();
    let (_sup, sup, clients, components) = supervisor(&pki);
    // the supervisor's own check says what it does
    let check = Command::new(env!("CARGO_BIN_EXE_mpcom"))
        .args(["check", "--config"])
        .arg(&sup)
        .output()
        .unwrap();
    let out = status(&check, 0);
    assert!(
        out.contains(&format!(
            "supervisor: components register on port {components}"
        )),
        "{out}"
    );
    assert!(!out.contains("warning"), "{out}");
    // without component_roles, any certificate of the CA could register: said
    let open = write(
        &pki,
        "open.conf",
        &supervisor_conf(&pki, clients, components).replace("component_roles = probe\n", ""),
    );
    let check = Command::new(env!("CARGO_BIN_EXE_mpcom"))
        .args(["check", "--config"])
        .arg(&open)
        .output()
        .unwrap();
    assert!(
        status(&check, 0).contains("warning: ")
            && String::from_utf8_lossy(&check.stdout).contains("component_roles is not set"),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    // a client may not register capabilities (only the role component_roles names may)
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let refused = rt.block_on(async {
        let client = mplane::client::Client::new(
            Some(mplane::tls::Connector::new(&pki.files("client")).unwrap()),
            std::sync::Arc::new(Registries::default()),
        );
        let url = mplane::client::Url::parse(&format!(
            "https://127.0.0.1:{components}/register/capability"
        ))
        .unwrap();
        let body = r#"{"envelope":"message","version":1,"contents":[]}"#;
        client
            .request(
                hyper::Method::POST,
                &url,
                Some((mplane::model::MEDIA_TYPE, body.into())),
            )
            .await
            .unwrap()
    });
    assert_eq!(refused.status.as_u16(), 403);
    let probe = write(&pki, "probe.conf", &probe_conf(&pki, components));
    let probe_log = pki.dir().join("probe.log");
    let probe_proc = Killed(
        Command::new(env!("CARGO_BIN_EXE_mpcom"))
            .arg("--config")
            .arg(&probe)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&probe_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let client = client_conf(&pki, clients, "client");

    // the probe's capabilities appear at the supervisor once it has registered
    let deadline = Instant::now() + Duration::from_secs(20);
    let caps = loop {
        let out = status(&mpcli(&client, &["caps"]), 0);
        if out.matches("(measure)").count() == 3 {
            break out;
        }
        assert!(Instant::now() < deadline, "never registered: {out}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // relayed under the supervisor's link
    assert!(
        caps.contains(&format!("link        https://127.0.0.1:{clients}/")),
        "{caps}"
    );

    // an inline result through the relay, under the client's own token
    let o = mpcli(
        &client,
        &[
            "run",
            "interop-rows-ip4",
            "destination.ip4=127.0.0.2",
            "packets.ip=2",
            "--when",
            "now + 1s / 1s",
            "--format",
            "json",
        ],
    );
    let Message::Statement(r) = model::parse(status(&o, 0).trim(), &Registries::default()).unwrap()
    else {
        panic!()
    };
    assert_eq!(r.kind.key(), "result");
    assert_eq!(r.rows().len(), 2);
    assert_eq!(r.label.as_deref(), Some("interop-rows-ip4"));

    // the probe's exception, relayed
    let o = mpcli(
        &client,
        &["run", "interop-fail-ip4", "destination.ip4=127.0.0.2"],
    );
    status(&o, 1);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("interop-fail: deliberate failure"), "{err}");

    // an interrupt travels to the probe, and its partial result back
    let file = saved_receipt(
        &pki,
        &client,
        &[
            "interop-slow-ip4",
            "destination.ip4=127.0.0.2",
            "--when",
            "now + 60s / 1s",
        ],
        "receipt.json",
    );
    std::thread::sleep(Duration::from_millis(1500));
    let t = Instant::now();
    let out = interrupt_csv(&client, &file, &["--poll", "0.2"]);
    assert!(t.elapsed() < Duration::from_secs(20));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[1].starts_with("100,150,200,"), "{out}");

    // SIGHUP: the probe reads its certificate files again for the supervisor at once, and
    // goes on serving through it (the reference client below)
    let hup = Command::new("kill")
        .args(["-HUP", &probe_proc.0.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(&probe_log).unwrap();
        if log.contains("[TLS] files for the listener read again") {
            break;
        }
        assert!(Instant::now() < deadline, "no reload after SIGHUP:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // the reference client through the same supervisor
    let input =
        serde_json::json!({"pki": pki.dir(), "url": format!("https://127.0.0.1:{clients}")});
    let out = peer::run_client_script(
        r#"
discover()
out = {"caps": sorted(client.capability_labels())}
out["rows"] = run("interop-rows-ip4", "now + 1s / 1s", {"destination.ip4": "127.0.0.2", "packets.ip": "3"})
print(json.dumps(out))
"#,
        &input.to_string(),
    );
    let out: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        out["caps"],
        serde_json::json!(["interop-fail-ip4", "interop-rows-ip4", "interop-slow-ip4"])
    );
    let Message::Statement(r) =
        model::parse(out["rows"].as_str().unwrap(), &Registries::default()).unwrap()
    else {
        panic!("{}", out["rows"])
    };
    assert_eq!(r.kind.key(), "result", "{}", out["rows"]);
    assert_eq!(r.rows().len(), 3);
}

#[test]
fn the_reference_component_behind_our_supervisor() {
    let pki = Pki::new();
    let (_sup, _, clients, components) = supervisor(&pki);
    // the reference mpcom connecting out, with the component certificate (role probe here)
    let tls = pki.tls_section();
    let _reference = peer::ReferenceComponent::spawn(
        pki.dir(),
        &format!(
            "{tls}[Roles]\norg.mplane.SSB.Supervisors.Supervisor-1 = admin\n\n\
             [Authorizations]\necho-ip4 = admin\nwait-ip4 = admin\n\n\
             [module_ref]\nmodule = refpeer_services\n\n\
             [component]\n{}",
            component_initiated(components)
        ),
    );
    let client = client_conf(&pki, clients, "client");
    // its two services arrive through the supervisor (`callback`, its pseudo-capability, is
    // authorised to nobody here)
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = status(&mpcli(&client, &["caps"]), 0);
        if out.contains("wait-ip4 (measure)") && out.contains("echo-ip4 (measure)") {
            assert!(!out.contains("callback"), "{out}");
            break;
        }
        assert!(Instant::now() < deadline, "never registered: {out}");
        std::thread::sleep(Duration::from_millis(300));
    }
    // a long job run through the supervisor and interrupted from the client: the reference
    // component's partial result comes back (its immediate-start results are lost to its own
    // race, DIGEST §7b, so the quick service is not run here)
    let file = saved_receipt(
        &pki,
        &client,
        &[
            "wait-ip4",
            "destination.ip4=127.0.0.2",
            "--when",
            "now + 30s",
        ],
        "wait-receipt.json",
    );
    std::thread::sleep(Duration::from_millis(8000));
    let out = interrupt_csv(&client, &file, &["--poll", "0.5", "--timeout", "60"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "delay.twoway.icmp.count", "{out}");
    let n: u64 = lines[1].parse().unwrap_or_else(|_| panic!("{out}"));
    assert!((10..600).contains(&n), "{out}");
}
