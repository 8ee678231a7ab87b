//! What the kernel's receive times take out of a ping's round-trip time: echo requests to a
//! loopback address (or another address of this host), each timed twice, by the pinger (to
//! the kernel's receive time of the reply, as the `ping` capabilities report it) and around
//! the call (send to reply read, on the monotonic clock, which adds the wake-up of the
//! waiting thread and the send call itself). Medians and 90th percentiles in microseconds.
//!
//! With `--peer`, iputils `ping` then sends as many echo requests to the same address at the
//! same interval (`ping -n -c N -i 0.002`), and the times it prints per reply (which also end
//! at the kernel's receive time) are summarised the same way, for a side-by-side figure.
//!
//! ```text
//! cargo build --release -p mplane-bench --bin ping_timing
//! taskset -c 0 target/release/ping_timing [ADDRESS] [--count N] [--peer]
//! ```
//!
//! Needs an ICMP socket (root, `CAP_NET_RAW` or `net.ipv4.ping_group_range`); `--peer` needs
//! `ping` (Debian: `iputils-ping`) and root for its 2 ms interval.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mplane_probe::active::ping::Pinger;

fn main() -> Result<()> {
    let mut addr: IpAddr = "127.0.0.1".parse()?;
    let mut count: u16 = 1000;
    let mut peer = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--peer" {
            peer = true;
        } else if a == "--count" {
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
            kernel.push(rtt.as_secs_f64() * 1e6);
            call.push(around.as_secs_f64() * 1e6);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    if kernel.is_empty() {
        bail!("no replies from {addr}");
    }
    let (replies, k, c) = (kernel.len(), quantiles(kernel), quantiles(call));
    println!(
        "{addr}: {replies} replies of {count}, {} timed by the kernel; reported (kernel receive \
         time) median {:.1} µs, p90 {:.1} µs; around the call median {:.1} µs, p90 {:.1} µs",
        pinger.kernel_times(),
        k.0,
        k.1,
        c.0,
        c.1
    );
    if peer {
        let p = quantiles(iputils(addr, count)?);
        println!(
            "{addr}: iputils ping median {:.1} µs, p90 {:.1} µs; ours / ping: median {:.2}, p90 {:.2}",
            p.0,
            p.1,
            k.0 / p.0,
            k.1 / p.1
        );
    }
    Ok(())
}

/// Median and 90th percentile.
fn quantiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_unstable_by(f64::total_cmp);
    let q = |p: usize| v[(v.len() - 1) * p / 100];
    (q(50), q(90))
}

/// The round-trip times (µs) iputils `ping` prints for `count` echo requests to `addr`, 2 ms
/// apart.
fn iputils(addr: IpAddr, count: u16) -> Result<Vec<f64>> {
    let out = std::process::Command::new("ping")
        .args(["-n", "-c", &count.to_string(), "-i", "0.002"])
        .arg(addr.to_string())
        .output()
        .context("running ping (Debian: apt-get install iputils-ping)")?;
    if !out.status.success() {
        bail!("ping: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let times: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split(' ').next()?.parse::<f64>().ok())
        .map(|ms| ms * 1000.0)
        .collect();
    if times.is_empty() {
        bail!("ping printed no round-trip times");
    }
    Ok(times)
}
