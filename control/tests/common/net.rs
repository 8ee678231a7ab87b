//! Loopback ports for the tests' servers.
#![allow(dead_code)]

/// A TCP port on loopback that is free now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}
