//! The two socket calls of the active measurements that the standard library and `socket2`
//! do not offer: asking for ICMP errors on a socket's error queue (`IP_RECVERR` /
//! `IPV6_RECVERR`) and reading that queue (`recvmsg` with `MSG_ERRQUEUE`).
//!
//! This is the active side's only module allowed `unsafe`: each block is one system call on
//! a socket the caller owns, with buffers that outlive the call.

#![allow(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use socket2::Socket;

/// Asks the kernel to queue the ICMP errors that concern `sock`'s packets (time exceeded,
/// destination unreachable) on its error queue, with the address of the host that sent them.
pub fn set_recverr(sock: &Socket, v6: bool) -> std::io::Result<()> {
    let (level, name) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVERR)
    } else {
        (libc::IPPROTO_IP, libc::IP_RECVERR)
    };
    let on: libc::c_int = 1;
    // SAFETY: `sock` is an open socket for the duration of the call; the option value is a
    // live `c_int` whose size is passed with it, as setsockopt(2) requires for these options.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One message read from a socket's error queue.
#[derive(Debug, Clone, Copy)]
pub struct Queued {
    /// Bytes of the offending packet's payload copied into the data buffer.
    pub data_len: usize,
    /// Bytes of ancillary data (control messages) in the control buffer.
    pub control_len: usize,
    /// The offending packet's destination (its port is the UDP destination port).
    pub destination: Option<SocketAddr>,
}

/// Reads one message from `sock`'s error queue without waiting: `Ok(None)` when the queue is
/// empty. The payload goes to `data`, the control messages to `control` (parse them with
/// [`extended_error`]).
pub fn recv_errqueue(
    sock: &Socket,
    data: &mut [u8],
    control: &mut [u8],
) -> std::io::Result<Option<Queued>> {
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
    // SAFETY: `msg` describes buffers owned by this frame or borrowed mutably for it
    // (`name`, `iov` → `data`, `control`), with their true lengths; the kernel writes at most
    // those lengths. MSG_DONTWAIT makes the call return at once.
    let n = unsafe {
        libc::recvmsg(
            sock.as_raw_fd(),
            &mut msg,
            libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return match e.kind() {
            std::io::ErrorKind::WouldBlock => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(Queued {
        data_len: (n as usize).min(data.len()),
        control_len: (msg.msg_controllen as usize).min(control.len()),
        destination: sockaddr(&name),
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

/// The extended error among the control messages `control` (as [`recv_errqueue`] filled
/// them), if there is one. Parsed from the bytes, without pointer casts: a `cmsghdr` is a
/// length (`usize`), a level and a type (`c_int` each), its data follows, and the next one
/// starts at the length rounded up to a `usize`.
pub fn extended_error(control: &[u8]) -> Option<ExtendedError> {
    const WORD: usize = std::mem::size_of::<usize>();
    let header = std::mem::size_of::<libc::cmsghdr>();
    let mut at = 0;
    while at + header <= control.len() {
        let len = usize::from_ne_bytes(control[at..at + WORD].try_into().ok()?);
        let level = i32::from_ne_bytes(control[at + WORD..at + WORD + 4].try_into().ok()?);
        let kind = i32::from_ne_bytes(control[at + WORD + 4..at + WORD + 8].try_into().ok()?);
        if len < header || at + len > control.len() {
            return None;
        }
        let body = &control[at + header..at + len];
        let ours = (level == libc::IPPROTO_IP && kind == libc::IP_RECVERR)
            || (level == libc::IPPROTO_IPV6 && kind == libc::IPV6_RECVERR);
        if ours && body.len() >= 16 {
            // ee_errno u32, ee_origin u8, ee_type u8, ee_code u8, ee_pad u8, ee_info u32,
            // ee_data u32, then the offender's sockaddr (SO_EE_OFFENDER)
            let offender = body.get(16..).and_then(offender);
            return Some(ExtendedError {
                origin: body[4],
                icmp_type: body[5],
                icmp_code: body[6],
                offender,
            });
        }
        at += len.div_ceil(WORD) * WORD;
    }
    None
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

    /// A control buffer as the kernel lays it out: one IP_RECVERR message for a time exceeded
    /// from 10.1.2.3, after an unrelated message.
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
        push(libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &[0; 16]);
        let mut ee = vec![113, 0, 0, 0, ORIGIN_ICMP, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        ee.extend_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        ee.extend_from_slice(&[0, 0, 10, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0]);
        push(libc::IPPROTO_IP, libc::IP_RECVERR, &ee);
        let e = extended_error(&c).unwrap();
        assert_eq!((e.origin, e.icmp_type, e.icmp_code), (ORIGIN_ICMP, 11, 0));
        assert_eq!(e.offender, Some("10.1.2.3".parse().unwrap()));
        // truncated or empty buffers give nothing, never a panic
        for cut in 0..c.len() {
            let _ = extended_error(&c[..cut]);
        }
        assert_eq!(extended_error(&[]), None);
    }
}
