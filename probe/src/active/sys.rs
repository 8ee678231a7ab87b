//! The socket calls of the active measurements that the standard library and `socket2` do
//! not offer: asking for ICMP errors on a socket's error queue (`IP_RECVERR` /
//! `IPV6_RECVERR`) and for the kernel's receive times (`SO_TIMESTAMPNS`), waiting for either
//! queue (`poll`), and reading a message with both (`recvmsg`, from the data or the error
//! queue).
//!
//! This is the active side's only module allowed `unsafe`: each block is one system call on
//! a socket the caller owns, with buffers that outlive the call.

#![allow(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use socket2::Socket;

/// Asks the kernel to queue the ICMP errors that concern `sock`'s packets (time exceeded,
/// destination unreachable) on its error queue, with the address of the host that sent them.
pub fn set_recverr(sock: &Socket, v6: bool) -> std::io::Result<()> {
    if v6 {
        set_int_option(sock, libc::IPPROTO_IPV6, libc::IPV6_RECVERR, 1)
    } else {
        set_int_option(sock, libc::IPPROTO_IP, libc::IP_RECVERR, 1)
    }
}

/// Asks the kernel to stamp every message read from `sock` (data and error queue) with the
/// time it received the packet (`SO_TIMESTAMPNS`, the system clock in nanoseconds), found
/// with [`timestamp`] among the control messages.
pub fn set_timestamps(sock: &Socket) -> std::io::Result<()> {
    set_int_option(sock, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
}

/// Sets an integer socket option.
fn set_int_option(sock: &Socket, level: i32, name: i32, value: i32) -> std::io::Result<()> {
    let value: libc::c_int = value;
    // SAFETY: `sock` is an open socket for the duration of the call; the option value is a
    // live `c_int` whose size is passed with it, as setsockopt(2) requires for these options.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One message read by [`recv`].
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// Bytes copied into the data buffer (from the error queue: the offending packet's
    /// payload).
    pub data_len: usize,
    /// Bytes of ancillary data (control messages) in the control buffer.
    pub control_len: usize,
    /// The sender (from the error queue: the offending packet's destination, whose port is
    /// the UDP destination port).
    pub address: Option<SocketAddr>,
}

/// Which queue [`recv`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    /// The data (a pending error is returned, and cleared, instead).
    Data,
    /// The error queue.
    Errors,
}

/// What [`wait`] found ready on a socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ready {
    /// Data to read.
    pub data: bool,
    /// An error queued (or pending).
    pub errors: bool,
}

/// Waits up to `timeout` until one of `socks` has data to read or an error queued; what is
/// ready on each (nothing when the time ran out or a signal came).
pub fn wait<const N: usize>(socks: [&Socket; N], timeout: Duration) -> [Ready; N] {
    let mut fds = socks.map(|s| libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    });
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
    // SAFETY: `fds` is an array of N valid pollfds for open sockets and its length is passed
    // with it; poll(2) writes only their `revents`.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), N as libc::nfds_t, ms) };
    fds.map(|fd| match n {
        1.. => Ready {
            data: fd.revents & libc::POLLIN != 0,
            errors: fd.revents & libc::POLLERR != 0,
        },
        _ => Ready::default(),
    })
}

/// Reads one message from `sock` without waiting (see [`wait`]): `Ok(None)` when there is
/// none. The payload goes to `data`, the control messages to `control` (parse them with
/// [`extended_error`] and [`timestamp`]).
pub fn recv(
    sock: &Socket,
    queue: Queue,
    data: &mut [u8],
    control: &mut [u8],
) -> std::io::Result<Option<Received>> {
    // SAFETY: an all-zero sockaddr_storage is a valid value of this plain C struct.
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is a valid value of this plain C struct; every pointer set
    // below refers to a buffer that lives until after the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() as _;
    let flags = match queue {
        Queue::Data => libc::MSG_DONTWAIT,
        Queue::Errors => libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
    };
    // SAFETY: `msg` describes buffers owned by this frame or borrowed mutably for it
    // (`name`, `iov` → `data`, `control`), with their true lengths; the kernel writes at most
    // those lengths.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, flags) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return match e.kind() {
            std::io::ErrorKind::WouldBlock => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(Received {
        data_len: (n as usize).min(data.len()),
        control_len: (msg.msg_controllen as usize).min(control.len()),
        address: sockaddr(&name),
    }))
}

/// The address in `s`, if it holds an IPv4 or IPv6 one.
fn sockaddr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which is smaller than
            // and no more aligned than sockaddr_storage.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))),
                u16::from_be(a.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)),
                u16::from_be(a.sin6_port),
            ))
        }
        _ => None,
    }
}

/// What the kernel reported about an ICMP error (`struct sock_extended_err` and the address
/// of the host that sent it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtendedError {
    /// Where the error came from: `SO_EE_ORIGIN_ICMP` (2), `SO_EE_ORIGIN_ICMP6` (3), or a
    /// local one.
    pub origin: u8,
    /// The ICMP type.
    pub icmp_type: u8,
    /// The ICMP code.
    pub icmp_code: u8,
    /// The host that sent the ICMP message.
    pub offender: Option<IpAddr>,
}

/// `SO_EE_ORIGIN_ICMP`: the error is an ICMP message.
pub const ORIGIN_ICMP: u8 = 2;
/// `SO_EE_ORIGIN_ICMP6`: the error is an ICMPv6 message.
pub const ORIGIN_ICMP6: u8 = 3;

/// The control messages in `control` (as [`recv`] filled it): `(level, type, data)`.
/// Parsed from the bytes, without pointer casts: a `cmsghdr` is a length (`usize`), a level
/// and a type (`c_int` each), its data follows, and the next one starts at the length
/// rounded up to a `usize`. A truncated message ends the walk.
fn control_messages(control: &[u8]) -> impl Iterator<Item = (i32, i32, &[u8])> {
    const WORD: usize = std::mem::size_of::<usize>();
    let header = std::mem::size_of::<libc::cmsghdr>();
    let mut at = 0;
    std::iter::from_fn(move || {
        let h = control.get(at..at + header)?;
        let len = usize::from_ne_bytes(h[..WORD].try_into().ok()?);
        let level = i32::from_ne_bytes(h[WORD..WORD + 4].try_into().ok()?);
        let kind = i32::from_ne_bytes(h[WORD + 4..WORD + 8].try_into().ok()?);
        let body = control.get(at + header..at.checked_add(len)?)?;
        at += len.div_ceil(WORD).max(1) * WORD;
        Some((level, kind, body))
    })
}

/// The extended error among the control messages `control`, if there is one.
pub fn extended_error(control: &[u8]) -> Option<ExtendedError> {
    control_messages(control).find_map(|(level, kind, body)| {
        let ours = (level == libc::IPPROTO_IP && kind == libc::IP_RECVERR)
            || (level == libc::IPPROTO_IPV6 && kind == libc::IPV6_RECVERR);
        // ee_errno u32, ee_origin u8, ee_type u8, ee_code u8, ee_pad u8, ee_info u32,
        // ee_data u32, then the offender's sockaddr (SO_EE_OFFENDER)
        (ours && body.len() >= 16).then(|| ExtendedError {
            origin: body[4],
            icmp_type: body[5],
            icmp_code: body[6],
            offender: body.get(16..).and_then(offender),
        })
    })
}

/// When the kernel received the message (`SCM_TIMESTAMPNS` among the control messages), if
/// it said.
pub fn timestamp(control: &[u8]) -> Option<SystemTime> {
    control_messages(control).find_map(|(level, kind, body)| {
        if level != libc::SOL_SOCKET || kind != libc::SCM_TIMESTAMPNS || body.len() < 16 {
            return None;
        }
        // struct timespec: seconds and nanoseconds, each a 64-bit integer here
        let secs = i64::from_ne_bytes(body[..8].try_into().ok()?);
        let nanos = i64::from_ne_bytes(body[8..16].try_into().ok()?);
        let (secs, nanos) = (u64::try_from(secs).ok()?, u32::try_from(nanos).ok()?);
        UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
    })
}

/// The address of a `sockaddr_in` / `sockaddr_in6` given as bytes (family in host order,
/// port and address in network order).
fn offender(b: &[u8]) -> Option<IpAddr> {
    let family = libc::c_int::from(u16::from_ne_bytes(b.get(..2)?.try_into().ok()?));
    match family {
        libc::AF_INET => {
            let a: [u8; 4] = b.get(4..8)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(a)))
        }
        libc::AF_INET6 => {
            let a: [u8; 16] = b.get(8..24)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A control buffer as the kernel lays it out: a receive time, then an IP_RECVERR message
    /// for a time exceeded from 10.1.2.3.
    #[test]
    fn extended_error_is_found_among_control_messages() {
        let mut c = Vec::new();
        let header = std::mem::size_of::<libc::cmsghdr>();
        let mut push = |level: i32, kind: i32, body: &[u8]| {
            let len = header + body.len();
            c.extend_from_slice(&len.to_ne_bytes());
            c.extend_from_slice(&level.to_ne_bytes());
            c.extend_from_slice(&kind.to_ne_bytes());
            c.extend_from_slice(body);
            while c.len() % std::mem::size_of::<usize>() != 0 {
                c.push(0);
            }
        };
        let mut ts = 1_700_000_000i64.to_ne_bytes().to_vec();
        ts.extend_from_slice(&5i64.to_ne_bytes());
        push(libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &ts);
        let mut ee = vec![113, 0, 0, 0, ORIGIN_ICMP, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        ee.extend_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        ee.extend_from_slice(&[0, 0, 10, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0]);
        push(libc::IPPROTO_IP, libc::IP_RECVERR, &ee);
        let e = extended_error(&c).unwrap();
        assert_eq!((e.origin, e.icmp_type, e.icmp_code), (ORIGIN_ICMP, 11, 0));
        assert_eq!(e.offender, Some("10.1.2.3".parse().unwrap()));
        assert_eq!(
            timestamp(&c),
            Some(UNIX_EPOCH + Duration::new(1_700_000_000, 5))
        );
        // truncated or empty buffers give nothing, never a panic
        for cut in 0..c.len() {
            let _ = (extended_error(&c[..cut]), timestamp(&c[..cut]));
        }
        assert_eq!(extended_error(&[]), None);
        // the error message alone (after the 32 bytes of the time)
        assert_eq!(timestamp(&c[32..]), None);
        assert_eq!(extended_error(&c[32..]), Some(e));
    }
}
