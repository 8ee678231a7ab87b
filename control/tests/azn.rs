//! Authorisation from configuration files; compared with the reference `mplane.azn` run in
//! the reference peer venv (`support::peer`).

mod support;

use std::path::{Path, PathBuf};

use mplane::azn::{Azn, AznError, AznMode, AznWarning, Decision};
use mplane::config::Config;
use mplane::tls::Identity;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

const RULES: &str = "[TLS]\ncert = c\nkey = k\nca-chain = ca\n\
    [Roles]\n\
    org.mplane.SSB.Clients.Client-1 = guest\n\
    org.mplane.SSB.Supervisors.Supervisor-1 = admin,guest\n\
    org.mplane.SSB.Clients.Client-2 = operator\n\
    [Authorizations]\n\
    ping = guest\n\
    ping-detail = admin\n\
    tstat = operator,admin\n\
    ip6 = operator\n";

const IDENTITIES: [&str; 5] = [
    "org.mplane.SSB.Clients.Client-1",
    "org.mplane.SSB.Supervisors.Supervisor-1",
    "org.mplane.SSB.Clients.Client-2",
    "org.mplane.SSB.Clients",
    "Identity.Unauthenticated.Default",
];
const LABELS: [&str; 7] = [
    "ping-average-ip4",
    "ping-detail-ip4",
    "ping-detail-ip6",
    "tstat-log_tcp_complete-core",
    "traceroute-ip4",
    "",
    "PING-average-ip4",
];

#[test]
fn reference_generated_config() {
    let c = Config::read(data("component-client-initiated.conf")).unwrap();
    let azn = Azn::from_config(&c, AznMode::Substring).unwrap();
    assert!(azn.warnings().is_empty());
    let client = Identity::from("org.mplane.SSB.Clients.Client-1");
    let sup = Identity::from("org.mplane.SSB.Supervisors.Supervisor-1");
    for label in ["interop-rows-ip4", "interop-slow-ip4", "interop-fail-ip4"] {
        assert!(azn.check(&client, Some(label), None));
        assert!(azn.check(&sup, Some(label), None));
        assert!(!azn.check(&Identity::unauthenticated(), Some(label), None));
    }
    assert_eq!(
        azn.decide(&client, Some("interop-other"), None),
        Decision::NoRule
    );
    assert!(
        azn.lint(["interop-rows-ip4", "interop-slow-ip4", "interop-fail-ip4"])
            .is_empty()
    );
}

#[test]
fn without_tls_everything_is_allowed() {
    let c = Config::parse(
        "[Authorizations]\nx = nobody\n[component]\nworkflow = client-initiated\n",
        "c.conf",
    )
    .unwrap();
    let azn = Azn::from_config(&c, AznMode::Substring).unwrap();
    assert!(!azn.is_enabled());
    assert!(azn.check(&Identity::unauthenticated(), Some("x"), None));
}

#[test]
fn tls_requires_roles_and_authorizations() {
    let c = Config::parse(
        "[TLS]\ncert = c\nkey = k\nca-chain = ca\n[Roles]\n",
        "c.conf",
    )
    .unwrap();
    let e = Azn::from_config(&c, AznMode::Substring).unwrap_err();
    assert!(matches!(
        e,
        AznError::MissingSection {
            section: "Authorizations",
            ..
        }
    ));
    assert!(
        e.to_string()
            .starts_with("c.conf: missing section [Authorizations]"),
        "{e}"
    );
    // Present but empty: everything denied.
    let c = Config::parse(
        "[TLS]\ncert = c\nkey = k\nca-chain = ca\n[Roles]\n[Authorizations]\n",
        "c.conf",
    )
    .unwrap();
    let azn = Azn::from_config(&c, AznMode::Substring).unwrap();
    assert!(!azn.check(&Identity::from("a"), Some("b"), Some("t")));
}

#[test]
fn exact_mode_and_lint() {
    let c = Config::parse(RULES, "c.conf").unwrap();
    let exact = Azn::from_config(&c, AznMode::Exact).unwrap();
    let sup = Identity::from("org.mplane.SSB.Supervisors.Supervisor-1");
    assert!(!exact.check(&sup, Some("ping-detail-ip4"), None));
    assert!(exact.check(&sup, Some("ping-detail"), None));
    assert!(exact.check(&sup, Some("renamed"), Some("tstat")));
    let sub = Azn::from_config(&c, AznMode::Substring).unwrap();
    let warnings = sub.lint(LABELS);
    assert!(warnings.contains(&AznWarning::LabelMatchedBySeveral {
        label: "ping-detail-ip6".into(),
        keys: vec!["ping".into(), "ping-detail".into(), "ip6".into()],
    }));
    assert!(
        warnings
            .iter()
            .any(|w| matches!(w, AznWarning::KeyMatchesSeveral { key, .. } if key == "ping"))
    );
}

/// Our Substring decisions equal `mplane.azn.AuthorizationOn.check` for every
/// identity × label pair.
#[test]
fn substring_mode_matches_reference_azn() {
    // The reference peer venv (created on first use; MPLANE_PEER_PYTHON picks its base).
    let python = support::peer::python();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("azn.conf");
    std::fs::write(&conf, RULES).unwrap();
    let script = "import configparser,json,sys\n\
        try:\n\
        \x20   import mplane.azn\n\
        except ImportError:\n\
        \x20   print('null'); sys.exit(0)\n\
        c = configparser.ConfigParser(); c.optionxform = str; c.read(sys.argv[1])\n\
        a = mplane.azn.Authorization(c)\n\
        class Cap:\n\
        \x20   def __init__(self, l): self._label = l\n\
        ids = json.loads(sys.argv[2]); labels = json.loads(sys.argv[3])\n\
        print(json.dumps([[a.check(Cap(l), i) for l in labels] for i in ids]))\n";
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&conf)
        .arg(serde_json::to_string(&IDENTITIES).unwrap())
        .arg(serde_json::to_string(&LABELS).unwrap())
        .output()
        .expect("MPLANE_PEER_PYTHON does not run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    if expected.is_null() {
        eprintln!("skipped: mplane-sdk is not importable by MPLANE_PEER_PYTHON");
        return;
    }
    let azn = Azn::from_config(
        &Config::parse(RULES, "azn.conf").unwrap(),
        AznMode::Substring,
    )
    .unwrap();
    let ours: Vec<Vec<bool>> = IDENTITIES
        .iter()
        .map(|i| {
            LABELS
                .iter()
                .map(|l| azn.check(&Identity::from(*i), Some(l), None))
                .collect()
        })
        .collect();
    assert_eq!(serde_json::to_value(ours).unwrap(), expected);
}
