//! `mpcli` against the reference component runtime (`mpcom` of `mplane-sdk` 0.9.0) over
//! mutual TLS on loopback, with the service module of `control/tests/support/peer.rs`: the
//! capabilities listed from its HTML index, an inline result, a receipt (the reference
//! answers after 5 s) interrupted by Ctrl-C with its partial result, and a receipt it does not
//! know. Needs `openssl` and a Python 3.11 able to create the peer venv.

#[path = "support/cli.rs"]
mod cli;
#[path = "../../control/tests/common/pki.rs"]
mod pki;

#[path = "../../control/tests/support/peer.rs"]
#[allow(clippy::incompatible_msrv)]
mod peer;

use std::process::Command;
use std::time::Duration;

use cli::{client_conf, interrupted_after, status};
use pki::Pki;

#[test]
fn mpcli_against_the_reference_component() {
    let pki = Pki::new();
    let port = peer::free_port();
    let _peer = peer::ReferenceComponent::start(pki.dir(), &pki.tls_section(), port);
    // the reference client's own configuration file
    let client_conf = client_conf(&pki, port, "client");
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
    // the reference holds a specification's reply up to 5 s before it sends the receipt:
    // the Ctrl-C lands while the request is in flight and is acted on once the receipt is in
    let o = interrupted_after(
        mpcli(&[
            "run",
            "wait-ip4",
            "destination.ip4=127.0.0.2",
            "--when",
            "now + 60s",
            "--poll",
            "0.3",
        ]),
        Duration::from_millis(2000),
    );
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
