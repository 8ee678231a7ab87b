//! `mpcli` as a child process of integration tests, the configurations around it, and the
//! interop services' component configuration. (Each test crate uses its share.)

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

use super::pki::Pki;

/// `mpcli --config conf ARGS...`, run to its end.
pub fn mpcli(conf: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mpcli"))
        .arg("--config")
        .arg(conf)
        .args(args)
        .output()
        .unwrap()
}

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit status (showing both outputs if it differs) and returns stdout.
pub fn status(o: &Output, code: i32) -> String {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// Sends SIGINT to `child` (Ctrl-C).
pub fn interrupt(child: &Child) {
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
}

/// A reference-style client configuration for `who`'s certificate and the component on
/// `port` (`client-<who>.conf` in the PKI's directory).
pub fn client_conf(pki: &Pki, port: u16, who: &str) -> PathBuf {
    let d = pki.dir().display();
    let conf = format!(
        "[TLS]\ncert = {d}/{who}.crt\nkey = {d}/{who}.key\nca-chain = {d}/ca.crt\n\n\
         [client]\nworkflow = client-initiated\ndefault-url = https://127.0.0.1:{port}/\n\
         capability-url = https://127.0.0.1:{port}/capability\n"
    );
    let path = pki.dir().join(format!("client-{who}.conf"));
    std::fs::write(&path, conf).unwrap();
    path
}

/// A component configuration with the interop services, the client certificate's identity
/// allowed all three, and `component` as its `[component]` section's keys.
pub fn interop_conf(pki: &Pki, component: &str) -> String {
    let tls = pki.tls_section();
    format!(
        "{tls}[Roles]\norg.mplane.SSB.Clients.Client-1 = guest\n\n\
         [Authorizations]\ninterop-rows-ip4 = guest\ninterop-slow-ip4 = guest\n\
         interop-fail-ip4 = guest\n\n\
         [module_interop]\nmodule = interop_services\nip4addr = 127.0.0.1\n\n\
         [component]\n{component}"
    )
}

/// `[component]` keys of a client-initiated component on `port`, linked to itself.
pub fn client_initiated(port: u16) -> String {
    format!(
        "workflow = client-initiated\nlisten-port = {port}\n\
         listen-cap-link = https://127.0.0.1:{port}/\n"
    )
}

/// `[component]` keys of a component-initiated component whose listener is 127.0.0.1:`port`
/// (the reference's example paths).
pub fn component_initiated(port: u16) -> String {
    format!(
        "workflow = component-initiated\nclient_host = 127.0.0.1\nclient_port = {port}\n\
         registration_path = register/capability\nspecification_path = show/specification\n\
         result_path = register/result\n"
    )
}

/// A supervisor (the client certificate's identity `guest`, the component certificate's
/// `probe`, which `component_roles` requires) with the supervisor certificate, serving
/// clients on `clients` and its components on `components`.
pub fn supervisor_conf(pki: &Pki, clients: u16, components: u16) -> String {
    let d = pki.dir().display();
    format!(
        "[TLS]\ncert = {d}/supervisor.crt\nkey = {d}/supervisor.key\nca-chain = {d}/ca.crt\n\n\
         [Roles]\norg.mplane.SSB.Clients.Client-1 = guest\n\
         org.mplane.SSB.Components.Component-1 = probe\n\n\
         [Authorizations]\ninterop-rows = guest\ninterop-slow = guest\ninterop-fail = guest\n\
         echo-ip4 = guest\nwait-ip4 = guest\n\n\
         [component]\n{}\n\
         [client]\nworkflow = component-initiated\nlisten-port = {components}\n\
         listen-spec-link = https://127.0.0.1:{components}/register/result\n\
         registration-path = register/capability\nspecification-path = show/specification\n\
         result-path = register/result\ncomponent_roles = probe\n",
        client_initiated(clients)
    )
}

/// Runs `cmd` (its outputs piped), sends it Ctrl-C after `after`, and waits for its end.
pub fn interrupted_after(mut cmd: Command, after: std::time::Duration) -> Output {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    interrupt(&child);
    child.wait_with_output().unwrap()
}

/// `mpcli run ARGS --no-wait` with `conf`: its receipt, checked and saved as `name` in the
/// PKI's directory; the file.
pub fn saved_receipt(pki: &Pki, conf: &Path, args: &[&str], name: &str) -> PathBuf {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.push("--no-wait");
    let receipt = status(&mpcli(conf, &all), 0);
    let parsed = mplane::model::parse(receipt.trim(), &mplane::registry::Registries::default())
        .unwrap_or_else(|e| panic!("{e}: {receipt}"));
    assert_eq!(parsed.kind_name(), "receipt");
    let file = pki.dir().join(name);
    std::fs::write(&file, receipt).unwrap();
    file
}
