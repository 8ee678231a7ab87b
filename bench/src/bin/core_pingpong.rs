//! Cache-line round trip between two CPUs: two threads, pinned, alternately store a counter
//! that the other waits for. Half the round trip is what every cache line a worker reads from
//! another core's writes costs, the price of moving packets between cores; run it before
//! choosing `cpus =` for a capture, or to explain a pipeline's scaling.
//!
//! ```text
//! cargo build --release -p mplane-bench --bin core_pingpong
//! target/release/core_pingpong [CPU_A CPU_B] [--rounds N]
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};

/// The shared counter, alone in its cache line.
#[repr(align(128))]
struct Line(AtomicU64);

fn main() -> Result<()> {
    let mut cpus = Vec::new();
    let mut rounds: u64 = 2_000_000;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--rounds" {
            rounds = args.next().context("--rounds N")?.parse()?;
        } else {
            cpus.push(a.parse::<usize>().context("CPU numbers")?);
        }
    }
    let (a, b) = match cpus[..] {
        [] => (0, 1),
        [a, b] => (a, b),
        _ => anyhow::bail!("usage: core_pingpong [CPU_A CPU_B] [--rounds N]"),
    };
    let line = Arc::new(Line(AtomicU64::new(0)));
    let other = {
        let line = line.clone();
        std::thread::spawn(move || -> Result<()> {
            mplane_capture::pipeline::affinity::pin_current_thread(b)?;
            for i in 0..rounds {
                while line.0.load(Ordering::Acquire) != 2 * i + 1 {
                    std::hint::spin_loop();
                }
                line.0.store(2 * i + 2, Ordering::Release);
            }
            Ok(())
        })
    };
    mplane_capture::pipeline::affinity::pin_current_thread(a)?;
    let t = Instant::now();
    for i in 0..rounds {
        line.0.store(2 * i + 1, Ordering::Release);
        while line.0.load(Ordering::Acquire) != 2 * i + 2 {
            std::hint::spin_loop();
        }
    }
    let ns = t.elapsed().as_secs_f64() * 1e9 / rounds as f64;
    other
        .join()
        .map_err(|_| anyhow::anyhow!("peer thread panicked"))??;
    println!(
        "CPUs {a} <-> {b}: round trip {ns:.1} ns, one transfer {:.1} ns",
        ns / 2.0
    );
    Ok(())
}
