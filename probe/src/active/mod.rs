//! Active measurements: probes this host sends, and what comes back.

pub mod connect;
pub mod ping;
mod quote;
mod syn;
mod sys;
#[cfg(test)]
pub(crate) mod testns;
pub mod trace;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

/// Binds `sock` to `source` (any port), unless `source` is unspecified: then the kernel
/// picks the address when the socket first sends.
pub(crate) fn bind_source(sock: &socket2::Socket, source: IpAddr) -> std::io::Result<()> {
    if source.is_unspecified() {
        Ok(())
    } else {
        sock.bind(&SocketAddr::new(source, 0).into())
    }
}

/// The round-trip time of a probe sent at `sent` (the system clock) and `sent_at` (the
/// monotonic one) whose answer the kernel received at `received` (its `SO_TIMESTAMPNS`, if
/// it said) and this thread read at `read_at`: from the kernel's receive time where it is
/// plausible, which leaves out the wake-up of the reading thread, else (no stamp, or the
/// system clock stepped in between) from the monotonic clock.
pub fn round_trip(
    sent: SystemTime,
    sent_at: Instant,
    received: Option<SystemTime>,
    read_at: Instant,
) -> Duration {
    let monotonic = read_at.saturating_duration_since(sent_at);
    match received.and_then(|r| r.duration_since(sent).ok()) {
        Some(k) if k <= monotonic => k,
        _ => monotonic,
    }
}

/// The attempts of a series of probes: when each was sent and, if it was answered, its
/// round-trip time in microseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples {
    /// `(when the probe was sent, round-trip time in µs if answered)`, in sending order.
    pub attempts: Vec<(SystemTime, Option<u64>)>,
}

impl Samples {
    /// The answered probes: `(when sent, round-trip time in µs)`.
    pub fn answered(&self) -> impl Iterator<Item = (SystemTime, u64)> + '_ {
        self.attempts.iter().filter_map(|&(t, r)| r.map(|r| (t, r)))
    }

    /// Least, mean (rounded to the nearest µs) and greatest round-trip time; `None` without
    /// an answer.
    pub fn summary(&self) -> Option<(u64, u64, u64)> {
        let (mut min, mut max, mut sum, mut n) = (u64::MAX, 0u64, 0u64, 0u64);
        for (_, r) in self.answered() {
            min = min.min(r);
            max = max.max(r);
            sum = sum.saturating_add(r);
            n += 1;
        }
        (n > 0).then(|| (min, (sum + n / 2) / n, max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_prefers_a_plausible_kernel_time() {
        let (t, i) = (SystemTime::now(), Instant::now());
        let read = i + Duration::from_micros(300);
        let rx = |us| Some(t + Duration::from_micros(us));
        assert_eq!(round_trip(t, i, rx(250), read), Duration::from_micros(250));
        // later than the read, or before the send: the clock stepped
        assert_eq!(round_trip(t, i, rx(400), read), Duration::from_micros(300));
        assert_eq!(
            round_trip(t, i, Some(t - Duration::from_secs(1)), read),
            Duration::from_micros(300)
        );
        assert_eq!(round_trip(t, i, None, read), Duration::from_micros(300));
    }

    #[test]
    fn summary_of_samples() {
        let t = std::time::UNIX_EPOCH;
        let s = Samples {
            attempts: vec![(t, Some(10)), (t, None), (t, Some(30)), (t, Some(21))],
        };
        assert_eq!(s.summary(), Some((10, 20, 30)));
        assert_eq!(s.answered().count(), 3);
        assert_eq!(Samples::default().summary(), None);
    }
}
