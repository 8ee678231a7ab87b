//! Waiting for a file descriptor to become readable, with a timeout (`poll(2)`): what lets a
//! thread reading a pipe look at a flag now and then instead of blocking in `read` for ever.

#![allow(unsafe_code)]

use std::os::fd::RawFd;
use std::time::Duration;

/// Waits at most `timeout` for `fd` to be readable (or hung up, or failed: a `read` then says
/// which). `Ok(false)` when the time ran out or a signal came first.
pub(crate) fn readable(fd: RawFd, timeout: Duration) -> std::io::Result<bool> {
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is one valid `pollfd`, alive for the call, and the count says one.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(r > 0)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn a_pipe_is_readable_once_written() {
        let (rx, mut tx) = std::io::pipe().unwrap();
        let t = std::time::Instant::now();
        assert!(!readable(rx.as_raw_fd(), Duration::from_millis(50)).unwrap());
        assert!(t.elapsed() >= Duration::from_millis(40));
        tx.write_all(b"x").unwrap();
        assert!(readable(rx.as_raw_fd(), Duration::from_secs(5)).unwrap());
        drop(tx);
        assert!(
            readable(rx.as_raw_fd(), Duration::from_secs(5)).unwrap(),
            "hung up"
        );
    }
}
