//! `mpcom` as a child process of an integration test: started with a configuration file,
//! ready once it has printed its `listening …` line, killed and reaped when dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running `mpcom`.
pub struct Mpcom(pub Child);

impl Drop for Mpcom {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Mpcom {
    /// Starts `mpcom --config conf` (its stderr to `stderr`) and waits for its first line,
    /// `listening on …:PORT`; returns the process and that port.
    pub fn start(conf: &Path, stderr: Stdio) -> (Mpcom, u16) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mpcom"))
            .arg("--config")
            .arg(conf)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let mpcom = Mpcom(child);
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).unwrap();
        assert!(
            line.starts_with("listening"),
            "unexpected first line {line:?}"
        );
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        (mpcom, port)
    }
}

#[path = "../../../control/tests/common/net.rs"]
#[allow(clippy::duplicate_mod)] // also a module of tests that include this file
mod net;
#[allow(unused_imports)] // not every test that includes this file takes a port
pub use net::free_port;
