//! nfdump's `nfcapd` as a real IPFIX collector for the tests: started on a free loopback UDP
//! port, stopped with SIGTERM so that it writes its file, read back with `nfdump`.

#![allow(dead_code)]

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `nfcapd`, killed if still running when dropped.
pub struct Nfcapd {
    child: Child,
    store: PathBuf,
    /// The UDP port it listens on (127.0.0.1).
    pub port: u16,
}

impl Nfcapd {
    /// Whether `nfcapd` can be run here.
    pub fn installed() -> bool {
        Command::new("nfcapd").arg("-V").output().is_ok()
    }

    /// Starts a collector storing into `store`; returns once it has bound its port.
    pub fn start(store: &Path) -> Nfcapd {
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("nfcapd")
            .args([
                "-b",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-t",
                "3600",
                "-w",
            ])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            assert!(Instant::now() < deadline, "nfcapd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Nfcapd {
            child,
            store: store.to_path_buf(),
            port,
        }
    }

    /// Lets the last datagrams arrive, stops the collector (SIGTERM: it closes its file) and
    /// returns what `nfdump -R STORE -q -N -o FORMAT` prints of it.
    pub fn stop_and_dump(mut self, format: &str) -> String {
        std::thread::sleep(Duration::from_millis(500));
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "nfcapd did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = Command::new("nfdump")
            .arg("-R")
            .arg(&self.store)
            .args(["-q", "-N", "-o", format])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Nfcapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
