//! Configuration files: the reference's generated component configs, a supervisor config,
//! and configparser corner cases (compared with Python's configparser when
//! run with the reference peer venv's Python).

mod support;

use std::path::{Path, PathBuf};

use mplane::config::{Config, ConfigErrorKind, DEFAULT_COMPONENT_PORT, Ini, Workflow};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

#[test]
fn make_component_conf_client_initiated() {
    // Verbatim output of reference/peer/make-component-conf.sh /tmp/mplane-pki 8888.
    let c = Config::read(data("component-client-initiated.conf")).unwrap();
    let tls = c.tls.as_ref().unwrap();
    assert_eq!(tls.cert, Path::new("/tmp/mplane-pki/component.crt"));
    assert_eq!(tls.key, Path::new("/tmp/mplane-pki/component.key"));
    assert_eq!(tls.ca_chain, Path::new("/tmp/mplane-pki/ca.crt"));
    assert_eq!(tls.crl, None);
    let roles: Vec<(&str, &str)> = c
        .roles
        .as_ref()
        .unwrap()
        .iter()
        .map(|s| (s.key.as_str(), s.value.as_str()))
        .collect();
    assert_eq!(
        roles,
        [
            ("org.mplane.SSB.Clients.Client-1", "guest"),
            ("org.mplane.SSB.Supervisors.Supervisor-1", "admin")
        ]
    );
    let azn: Vec<&str> = c
        .authorizations
        .as_ref()
        .unwrap()
        .iter()
        .map(|s| s.key.as_str())
        .collect();
    assert_eq!(
        azn,
        ["interop-rows-ip4", "interop-slow-ip4", "interop-fail-ip4"]
    );
    assert_eq!(c.modules.len(), 1);
    let m = &c.modules[0];
    assert_eq!(
        (m.section.as_str(), m.module.as_str()),
        ("module_interop", "interop_services")
    );
    assert_eq!(m.kwargs.len(), 1);
    assert_eq!(
        (m.kwargs[0].key.as_str(), m.kwargs[0].value.as_str()),
        ("ip4addr", "127.0.0.1")
    );
    let comp = c.require_component().unwrap();
    assert_eq!(comp.workflow, Workflow::ClientInitiated);
    assert_eq!(comp.listen_port, 8888);
    assert_eq!(
        comp.listen_cap_link.as_deref(),
        Some("https://127.0.0.1:8888/")
    );
    assert_eq!(comp.client_host.as_deref(), Some("127.0.0.1"));
    assert_eq!(comp.client_port, 8889);
    assert_eq!(
        comp.registration_path.as_deref(),
        Some("/register/capability")
    );
    assert_eq!(
        comp.specification_path.as_deref(),
        Some("/show/specification")
    );
    assert_eq!(comp.result_path.as_deref(), Some("/register/result"));
    assert_eq!(comp.scheduler_max_results, 0);
    assert_eq!(comp.registry_uri, None);
    assert_eq!(comp.metrics_roles, None);
    assert!(c.client.is_none());
    assert!(
        c.require_client()
            .unwrap_err()
            .to_string()
            .contains("missing section [client]")
    );
}

#[test]
fn make_component_conf_component_initiated() {
    let c = Config::read(data("component-component-initiated.conf")).unwrap();
    let comp = c.require_component().unwrap();
    assert_eq!(comp.workflow, Workflow::ComponentInitiated);
    assert_eq!(comp.listen_port, 18600);
    assert_eq!(comp.client_port, 18601);
}

#[test]
fn supervisor_conf_with_client_section() {
    let c = Config::read(data("supervisor.conf")).unwrap();
    let client = c.require_client().unwrap();
    assert_eq!(client.workflow, Workflow::ComponentInitiated);
    assert_eq!(client.listen_port, 8891);
    assert_eq!(
        client.listen_spec_link.as_deref(),
        Some("https://127.0.0.1:8891/register/result")
    );
    assert_eq!(client.registration_path, "register/capability");
    assert_eq!(client.specification_path, "show/specification");
    assert_eq!(client.result_path, "register/result");
    assert_eq!(
        client.registry_uri.as_deref(),
        Some("http://ict-mplane.eu/registry/core")
    );
    let comp = c.require_component().unwrap();
    assert_eq!(comp.scheduler_max_results, 20);
    assert_eq!(comp.client_port, DEFAULT_COMPONENT_PORT);

    // Relative paths: kept as written (CWD-relative like the reference), or re-based.
    let tls = c.tls.as_ref().unwrap();
    assert_eq!(tls.crl.as_deref(), Some(Path::new("pki/crl.pem")));
    let rebased = c.relative_to_config_dir();
    let tls = rebased.tls.as_ref().unwrap();
    assert_eq!(tls.cert, data("pki/supervisor.crt"));
    assert_eq!(tls.crl, Some(data("pki/crl.pem")));
    let abs = Config::parse("[TLS]\ncert=/a/c\nkey=k\nca-chain=ca\n", "/etc/x.conf").unwrap();
    let tls = abs.relative_to_config_dir().tls.unwrap();
    assert_eq!(
        (tls.cert, tls.key),
        (PathBuf::from("/a/c"), PathBuf::from("/etc/k"))
    );
}

#[test]
fn metrics_roles() {
    use mplane::azn::RoleAccess;
    let c = Config::parse(
        "[component]\nworkflow = client-initiated\nmetrics_roles = admin, ops\n",
        "comp.conf",
    )
    .unwrap();
    let want = RoleAccess::Roles(["admin".to_string(), "ops".to_string()].into());
    assert_eq!(c.component.unwrap().metrics_roles, Some(want));
    let c = Config::parse(
        "[component]\nworkflow = client-initiated\nmetrics_roles = *\n",
        "comp.conf",
    )
    .unwrap();
    assert_eq!(c.component.unwrap().metrics_roles, Some(RoleAccess::Anyone));
}

fn err(text: &str) -> String {
    Config::parse(text, "comp.conf").unwrap_err().to_string()
}

#[test]
fn typed_errors_name_file_section_key_line() {
    assert_eq!(
        err("[component]\nworkflow = client-initiated\nlisten-port = abc\n"),
        "comp.conf: [component] listen-port: \"abc\" is not a port number (line 3)"
    );
    assert_eq!(
        err("[component]\nworkflow = client-initiated\nlisten-port = 65536\n"),
        "comp.conf: [component] listen-port: \"65536\" is not a port number (line 3)"
    );
    assert_eq!(
        err("[component]\nworkflow = client-initiated ; comment\n"),
        "comp.conf: [component] workflow: \"client-initiated ; comment\" is not a workflow \
         (expected client-initiated or component-initiated) (line 2)"
    );
    assert_eq!(
        err("[component]\nlisten-port = 1\n"),
        "comp.conf: [component] workflow: missing (client-initiated or component-initiated)"
    );
    assert_eq!(
        err("[component]\nworkflow = component-initiated\nclient_host = h\n"),
        "comp.conf: [component] registration_path: missing (required for workflow component-initiated)"
    );
    assert_eq!(
        err("[TLS]\ncert = c\nkey = k\n"),
        "comp.conf: [TLS] ca-chain: missing (required when [TLS] is present)"
    );
    assert_eq!(
        err("[component]\nworkflow = client-initiated\nmetrics_roles = ,\n"),
        "comp.conf: [component] metrics_roles: \",\" names no role (give roles, or *) (line 3)"
    );
    assert_eq!(
        err("[component]\nworkflow = client-initiated\nscheduler_max_results = -1\n"),
        "comp.conf: [component] scheduler_max_results: \"-1\" is not a non-negative integer (line 3)"
    );
    assert_eq!(
        err("[module_x]\nip4addr = 1\n"),
        "comp.conf: [module_x] module: missing (names the service module)"
    );
    assert_eq!(
        err("[client]\nworkflow = component-initiated\n"),
        "comp.conf: [client] listen-spec-link: missing (required for workflow component-initiated)"
    );
    assert_eq!(
        err("[client]\ncapability-url = https://x/%20\n"),
        "comp.conf: [client] capability-url: '%' must be followed by '%' or '(' \
         (write %% for a literal %), found \"%20\" (line 2)"
    );
    assert!(
        err("[Roles]\na = %(b)s\n")
            .starts_with("comp.conf: [Roles] a: interpolation refers to \"b\"")
    );
    assert_eq!(
        err("[a]\nx=1\n[a]\n"),
        "comp.conf:3: duplicate section [a] (first at line 1)"
    );
    let e = Config::read(data("does-not-exist.conf")).unwrap_err();
    assert!(matches!(e.kind(), ConfigErrorKind::Read { .. }), "{e:?}");
    assert!(
        e.to_string().contains("does-not-exist.conf: cannot read"),
        "{e}"
    );
}

#[test]
fn unknown_keys_are_reported_with_suggestions() {
    let c = Config::parse(
        "[DEFAULT]\nbase = /x\n[component]\nworkflow = client-initiated\nlisten_port = 9000\nClient-Port = 1\nfoo = 2\nmetric_roles = a\n[client]\nregistration_path = r\n",
        "comp.conf",
    )
    .unwrap();
    let w: Vec<String> = c.warnings().iter().map(|w| w.to_string()).collect();
    assert_eq!(
        w,
        [
            "comp.conf: [component] listen_port: unknown key, ignored (did you mean listen-port?) (line 5)",
            "comp.conf: [component] Client-Port: unknown key, ignored (did you mean client_port?) (line 6)",
            "comp.conf: [component] foo: unknown key, ignored (line 7)",
            "comp.conf: [component] metric_roles: unknown key, ignored (did you mean metrics_roles?) (line 8)",
            "comp.conf: [client] registration_path: unknown key, ignored (did you mean registration-path?) (line 10)",
        ]
    );
    assert_eq!(
        c.require_component().unwrap().listen_port,
        DEFAULT_COMPONENT_PORT
    );
    for file in ["component-client-initiated.conf", "supervisor.conf"] {
        assert!(
            Config::read(data(file)).unwrap().warnings().is_empty(),
            "{file}"
        );
    }
}

#[test]
fn module_kwargs_in_file_order_without_module_keys() {
    let c = Config::parse(
        "[DEFAULT]\nverbose = 1\n[module_ping]\nmodule = mplane.components.ping\nip6addr = ::1\nmodule_extra = x\nip4addr = 127.0.0.1\n[module_b]\nmodule = b\n",
        "m.conf",
    )
    .unwrap();
    let kw: Vec<(&str, &str)> = c.modules[0]
        .kwargs
        .iter()
        .map(|s| (s.key.as_str(), s.value.as_str()))
        .collect();
    assert_eq!(
        kw,
        [
            ("ip6addr", "::1"),
            ("ip4addr", "127.0.0.1"),
            ("verbose", "1")
        ]
    );
    assert_eq!(c.modules[1].module, "b");
    assert!(c.tls.is_none() && c.roles.is_none());
}

#[test]
fn tricky_ini_matches_expectations() {
    let ini = Ini::read(data("tricky.conf")).unwrap();
    let get = |s: &str, k: &str| ini.get(s, k).unwrap().map(|s| s.value);
    assert_eq!(
        get("paths", "Cert").as_deref(),
        Some("/etc/mplane/pki/cert.crt")
    );
    assert_eq!(get("paths", "cert"), None);
    assert_eq!(get("paths", "percent").as_deref(), Some("100%"));
    assert_eq!(
        get("paths", "Mixed-Case").as_deref(),
        Some("Value With Spaces")
    );
    assert_eq!(
        get("paths", "colon").as_deref(),
        Some("in = key splits at the first delimiter")
    );
    assert_eq!(get("paths", "equals").as_deref(), Some("a=b:c"));
    assert_eq!(
        get("paths", "inline").as_deref(),
        Some("1228 ; not a comment\ncontinued line\n\nafter a blank line")
    );
    assert_eq!(
        get("paths", "empty").as_deref(),
        Some("\ntabbed = continuation with a tab")
    );
    assert_eq!(get("paths", "shared").as_deref(), Some("own value"));
    assert_eq!(
        get(" spaced name ", "shared").as_deref(),
        Some("from-default")
    );
    assert_eq!(get("odd]name", "x").as_deref(), Some("y"));
}

/// Every section and its items (with interpolation) as Python's configparser sees them.
#[test]
fn tricky_ini_matches_python_configparser() {
    // The reference peer venv (created on first use; MPLANE_PEER_PYTHON picks its base).
    let python = support::peer::python();
    for file in [
        "tricky.conf",
        "supervisor.conf",
        "component-client-initiated.conf",
        "component-component-initiated.conf",
    ] {
        let script = "import configparser,json,sys\n\
            c = configparser.ConfigParser()\n\
            c.optionxform = str\n\
            c.read(sys.argv[1])\n\
            print(json.dumps([[s, [[k, c[s][k]] for k in c[s]]] for s in c.sections()]))\n";
        let out = std::process::Command::new(&python)
            .arg("-c")
            .arg(script)
            .arg(data(file))
            .output()
            .expect("MPLANE_PEER_PYTHON does not run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let expected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let ini = Ini::read(data(file)).unwrap();
        let ours: Vec<serde_json::Value> = ini
            .sections()
            .map(|s| {
                let items: Vec<[String; 2]> = ini
                    .items(s.name())
                    .unwrap()
                    .into_iter()
                    .map(|i| [i.key, i.value])
                    .collect();
                serde_json::json!([s.name(), items])
            })
            .collect();
        assert_eq!(serde_json::Value::Array(ours), expected, "{file}");
    }
}
