//! TCP connection set-up time: how long the three-way handshake takes to a destination port.
//!
//! Each attempt is a fresh socket (from the configured source address, any port) whose
//! non-blocking `connect` is timed on the monotonic clock until the kernel reports the
//! connection established (the SYN-ACK arrived and the ACK went out) or failed; the socket is
//! then closed. A refused connection (RST), an unreachable destination and a timeout are
//! failures, told apart in [`Attempt`].

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// Why an attempt could not be made at all.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Source and destination are not of the same address family.
    #[error("source {source_addr} and destination {destination} are not of the same IP version")]
    Family {
        /// The source address.
        source_addr: IpAddr,
        /// The destination address.
        destination: IpAddr,
    },
    /// No TCP socket could be opened.
    #[error("cannot open a TCP socket: {0}")]
    Socket(std::io::Error),
    /// The source address is not one of this host's.
    #[error("cannot connect from {addr}: {source}")]
    Bind {
        /// The address.
        addr: IpAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// What one attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Established after this long.
    Connected(Duration),
    /// Refused (the destination answered with a reset).
    Refused,
    /// No answer within the timeout.
    TimedOut,
    /// Any other failure (no route, host unreachable, …), as the OS error number.
    Failed(Option<i32>),
}

/// One connection attempt from `source` (unspecified = the kernel picks) to `dst`, given up
/// after `timeout`.
pub fn attempt(
    source: IpAddr,
    dst: SocketAddr,
    timeout: Duration,
) -> Result<Attempt, ConnectError> {
    if source.is_ipv4() != dst.is_ipv4() {
        return Err(ConnectError::Family {
            source_addr: source,
            destination: dst.ip(),
        });
    }
    let domain = if dst.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let sock =
        Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).map_err(ConnectError::Socket)?;
    super::bind_source(&sock, source).map_err(|e| ConnectError::Bind {
        addr: source,
        source: e,
    })?;
    let start = Instant::now();
    let outcome = match sock.connect_timeout(&dst.into(), timeout.max(Duration::from_micros(1))) {
        Ok(()) => Attempt::Connected(start.elapsed()),
        Err(e) => match e.kind() {
            std::io::ErrorKind::ConnectionRefused => Attempt::Refused,
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => Attempt::TimedOut,
            _ => Attempt::Failed(e.raw_os_error()),
        },
    };
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_listener_and_closed_port() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dst = l.local_addr().unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        match attempt(lo, dst, Duration::from_secs(1)).unwrap() {
            Attempt::Connected(d) => assert!(d < Duration::from_secs(1)),
            other => panic!("{other:?}"),
        }
        drop(l);
        // nothing listens there any more: the kernel answers with a reset
        assert_eq!(
            attempt(lo, dst, Duration::from_secs(1)).unwrap(),
            Attempt::Refused
        );
        let e = attempt(lo, "[::1]:9".parse().unwrap(), Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, ConnectError::Family { .. }), "{e}");
    }
}
