//! Network namespaces for the active measurements' tests: created by a test (as root),
//! removed with everything in them when dropped, also when the test panics.

use std::process::{Command, Stdio};

/// Runs a command quietly; `true` if it succeeded.
pub(crate) fn run(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A namespace of this test (and the host ends of veth pairs into it).
pub(crate) struct Netns {
    /// Its name.
    pub name: String,
    links: Vec<String>,
}

impl Netns {
    /// A new namespace `PREFIX<pid>` with its loopback up; `None`, with a message, where
    /// namespaces cannot be created (not root).
    pub fn create(prefix: &str) -> Option<Netns> {
        let name = format!("{prefix}{}", std::process::id() % 100_000);
        if !run(&["ip", "netns", "add", &name]) {
            eprintln!("skipping: cannot create a network namespace here");
            return None;
        }
        let ns = Netns {
            name,
            links: Vec::new(),
        };
        assert!(ns.exec(&["ip", "link", "set", "lo", "up"]));
        Some(ns)
    }

    /// Runs `args` inside the namespace.
    pub fn exec(&self, args: &[&str]) -> bool {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend_from_slice(args);
        run(&all)
    }

    /// Runs test `name` of this test binary (an `#[ignore]`d child test) inside the
    /// namespace, with `env` set, and fails unless it passed.
    pub fn run_child_test(&self, name: &str, env: &[(&str, String)]) {
        self.run_child_test_under(&[], name, env);
    }

    /// As [`Self::run_child_test`], the test binary run by the command `wrapper` (e.g.
    /// `setpriv` to drop a capability).
    pub fn run_child_test_under(&self, wrapper: &[&str], name: &str, env: &[(&str, String)]) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(wrapper)
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", name, "--ignored", "--nocapture"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains("1 passed"),
            "{name} in {}: {text}",
            self.name
        );
    }

    /// A veth pair `host` (here, address `host_addr`) – `peer` (in the namespace, address
    /// `peer_addr`), both up.
    pub fn veth(&mut self, host: &str, host_addr: &str, peer: &str, peer_addr: &str) {
        assert!(run(&[
            "ip", "link", "add", host, "type", "veth", "peer", "name", peer
        ]));
        self.links.push(host.to_string());
        assert!(run(&["ip", "link", "set", peer, "netns", &self.name]));
        assert!(run(&["ip", "addr", "add", host_addr, "dev", host]));
        assert!(run(&["ip", "link", "set", host, "up"]));
        assert!(self.exec(&["ip", "addr", "add", peer_addr, "dev", peer]));
        assert!(self.exec(&["ip", "link", "set", peer, "up"]));
    }
}

impl Netns {
    /// A veth pair from this namespace (`here`, address `here_addr`) to `other` (`there`,
    /// address `there_addr`), both up; it goes with the namespaces.
    pub fn link(&self, other: &Netns, here: &str, here_addr: &str, there: &str, there_addr: &str) {
        assert!(self.exec(&[
            "ip", "link", "add", here, "type", "veth", "peer", "name", there
        ]));
        assert!(self.exec(&["ip", "link", "set", there, "netns", &other.name]));
        for (ns, dev, addr) in [(self, here, here_addr), (other, there, there_addr)] {
            assert!(ns.exec(&["ip", "addr", "add", addr, "dev", dev]), "{addr}");
            assert!(ns.exec(&["ip", "link", "set", dev, "up"]));
        }
    }

    /// Sets each of `settings` (`key=value`) inside the namespace.
    pub fn sysctls(&self, settings: &[&str]) {
        for s in settings {
            assert!(self.exec(&["sysctl", "-qw", s]), "{s}");
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for l in &self.links {
            run(&["ip", "link", "del", l]);
        }
        run(&["ip", "netns", "del", &self.name]);
    }
}
