//! What the kernel's receive times take out of a ping's round-trip time: echo requests to a
//! loopback address (or another address of this host), each timed twice, by the pinger (to
//! the kernel's receive time of the reply, as the `ping` capabilities report it) and around
//! the call (send to reply read, on the monotonic clock, which adds the wake-up of the
//! waiting thread and the send call itself). Medians and 90th percentiles in microseconds.
//!
//! ```text
//! cargo build --release -p mplane-bench --bin ping_timing
//! taskset -c 0 target/release/ping_timing [ADDRESS] [--count N]
//! ```
//!
//! Needs an ICMP socket (root, `CAP_NET_RAW` or `net.ipv4.ping_group_range`).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mplane_probe::active::ping::Pinger;

fn main() -> Result<()> {
    let mut addr: IpAddr = "127.0.0.1".parse()?;
    let mut count: u16 = 1000;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--count" {
            count = args.next().context("--count N")?.parse()?;
        } else {
            addr = a.parse().context("an address of this host")?;
        }
    }
    if count == 0 {
        bail!("--count must be at least 1");
    }
    let mut pinger = Pinger::new(addr, addr)?;
    let (mut kernel, mut call) = (Vec::new(), Vec::new());
    for seq in 0..count {
        let t = Instant::now();
        let rtt = pinger.ping(seq, Duration::from_secs(1), &|| false)?;
        let around = t.elapsed();
        if let Some(rtt) = rtt {
            kernel.push(rtt.as_micros());
            call.push(around.as_micros());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    if kernel.is_empty() {
        bail!("no replies from {addr}");
    }
    kernel.sort_unstable();
    call.sort_unstable();
    let q = |v: &[u128], p: usize| v[(v.len() - 1) * p / 100];
    println!(
        "{addr}: {} replies of {count}, {} timed by the kernel; reported (kernel receive time) \
         median {} µs, p90 {} µs; around the call median {} µs, p90 {} µs",
        kernel.len(),
        pinger.kernel_times(),
        q(&kernel, 50),
        q(&kernel, 90),
        q(&call, 50),
        q(&call, 90)
    );
    Ok(())
}
