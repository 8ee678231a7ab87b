//! capture_live: live capture over a veth pair with small frames — our libpcap and AF_XDP sources
//! against `tcpdump` on the same traffic, rates and drops.
//!
//! ```sh
//! cargo build --release -p mplane-bench --bin capture_live --features xdp
//! sudo target/release/capture_live --seconds 5 --runs 5 --len 64
//! ```
//!
//! Needs root. Creates a network namespace and a veth pair (the capture end stays in this
//! namespace, the sending end goes into the new one) and removes both at exit, also on error
//! or Ctrl-C. No addresses are configured: the frames go nowhere but into the veth.
//!
//! The sender is this binary re-executed inside the namespace (`--send`): an `AF_PACKET`
//! socket with `PACKET_QDISC_BYPASS`, `sendmmsg` in bursts of 64, UDP/IPv4 frames of `--len`
//! bytes (without FCS) from 256 source addresses, so both workers and every flow path are
//! used, pinned to CPU 0 (where the veth receive path then runs too). Each receiver runs on
//! CPU 1: `tcpdump -w /dev/null -B 65536` (libpcap, TPACKET_V3), our pipeline with one worker
//! over `pcap-live:` (libpcap, TPACKET_V3, 64 MiB ring) and over `xdp:` (AF_XDP, native mode,
//! copy: veth has no zero-copy) and, with `--generic`, `xdp:` in generic mode. The worker builds
//! each packet's flow key and hashes it (as `capture_file`'s default worker does).
//!
//! Per run and tool it prints: frames sent, frames the veth received (`rx_packets`), frames
//! the tool captured, its kernel drops, the capture rate (captured / sending time) and the CPU
//! time the capturing process (tcpdump) or thread (ours) used while sending, as a share of the
//! sending time and per captured packet (user-space cost; the kernel's receive path runs on the
//! sender's CPU). The tools run interleaved, `--runs` rounds, then a median line per tool.
//!
//! Options: `--seconds S` (5), `--runs R` (3), `--len L` (64), `--tools a,b,..` (tcpdump,
//! pcap, xdp; add `xdp-generic`), `--rate PPS` (0 = as fast as possible), `--frames N`
//! (AF_XDP UMEM frames, 16384).

#![allow(unsafe_code)] // AF_PACKET sender: socket/bind/setsockopt/sendmmsg, each with SAFETY

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mplane_capture::flow::FlowKey;
use mplane_capture::packet::Dissection;
use mplane_capture::pipeline::{Pipeline, PipelineConfig, Worker};
use mplane_capture::source::PacketRef;
use mplane_capture::source::SourceSpec;
use mplane_capture::source::live::LiveConfig;
use mplane_capture::source::xdp::{AttachMode, XdpConfig};

/// Builds the key and hashes it, like `capture_file`'s default worker.
#[derive(Default)]
struct Touch {
    sum: u64,
}

impl Worker for Touch {
    #[inline]
    fn packet(&mut self, pkt: &PacketRef<'_>, d: &Dissection) {
        if let Some((k, dir)) = FlowKey::from_dissection(d) {
            self.sum = self
                .sum
                .wrapping_add(k.hash64() ^ u64::from(pkt.orig_len) ^ dir as u64);
        }
    }
    fn watermark(&mut self, _ts_ns: u64) {}
    fn finish(&mut self) {}
}

/// The namespace and veth pair; removed on drop.
struct Veth {
    ns: String,
    host: String,
    peer: String,
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host])
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn sh(args: &[&str]) -> anyhow::Result<()> {
    let st = Command::new(args[0]).args(&args[1..]).status()?;
    anyhow::ensure!(st.success(), "{args:?} failed");
    Ok(())
}

impl Veth {
    fn create() -> anyhow::Result<Veth> {
        let pid = std::process::id() % 100_000;
        let v = Veth {
            ns: format!("mpbench{pid}"),
            host: format!("mpbh{pid}"),
            peer: format!("mpbp{pid}"),
        };
        sh(&["ip", "netns", "add", &v.ns])?;
        sh(&[
            "ip", "link", "add", &v.host, "type", "veth", "peer", "name", &v.peer,
        ])?;
        sh(&["ip", "link", "set", &v.peer, "netns", &v.ns])?;
        // No IPv6 on either end: no neighbour discovery chatter in the counts.
        let _ = Command::new("sysctl")
            .args(["-qw", &format!("net.ipv6.conf.{}.disable_ipv6=1", v.host)])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "exec", &v.ns, "sysctl", "-qw"])
            .arg(format!("net.ipv6.conf.{}.disable_ipv6=1", v.peer))
            .status();
        sh(&["ip", "link", "set", &v.host, "up"])?;
        sh(&["ip", "-n", &v.ns, "link", "set", &v.peer, "up"])?;
        Ok(v)
    }

    fn rx_packets(&self) -> u64 {
        std::fs::read_to_string(format!(
            "/sys/class/net/{}/statistics/rx_packets",
            self.host
        ))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
    }

    /// Runs the sender in the namespace for `secs`; returns the frames it sent.
    fn send(&self, secs: f64, len: usize, rate: u64) -> anyhow::Result<u64> {
        let exe = std::env::current_exe()?;
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "taskset", "-c", "0"])
            .arg(exe)
            .args(["--send", &self.peer, "--seconds", &secs.to_string()])
            .args(["--len", &len.to_string(), "--rate", &rate.to_string()])
            .stderr(Stdio::inherit())
            .output()?;
        anyhow::ensure!(out.status.success(), "sender failed");
        let s = String::from_utf8_lossy(&out.stdout);
        s.split_whitespace()
            .find_map(|w| w.strip_prefix("sent=").and_then(|v| v.parse().ok()))
            .ok_or_else(|| anyhow::anyhow!("sender said {s:?}"))
    }
}

/// One UDP/IPv4 frame of `len` bytes (no FCS), source address `10.9.(i>>8).(i&255)`.
fn frame(len: usize, i: u16, sport: u16) -> Vec<u8> {
    let len = len.max(42);
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip_len = (len - 14) as u16;
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 9, (i >> 8) as u8, i as u8]);
    ip[16..20].copy_from_slice(&[10, 9, 255, 1]);
    let mut sum = 0u32;
    for c in ip.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let udp = &mut f[34..42];
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&9u16.to_be_bytes());
    udp[4..6].copy_from_slice(&(ip_len - 20).to_be_bytes());
    f
}

/// The sender (runs inside the namespace): sends for `secs`, prints `sent=N`.
fn sender(iface: &str, secs: f64, len: usize, rate: u64) -> anyhow::Result<()> {
    // SAFETY: socket(2) with constant arguments; the descriptor is checked and owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from((libc::ETH_P_ALL as u16).to_be()),
        )
    };
    anyhow::ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    let name = std::ffi::CString::new(iface)?;
    // SAFETY: a valid NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    anyhow::ensure!(ifindex != 0, "no interface {iface}");
    // SAFETY: an all-zero sockaddr_ll is valid; the fields we need are set below.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: binds our socket to a sockaddr_ll that lives across the call, with its size.
    let r = unsafe {
        libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    anyhow::ensure!(r == 0, "bind: {}", std::io::Error::last_os_error());
    let one: libc::c_int = 1;
    // SAFETY: PACKET_QDISC_BYPASS takes an int that lives across the call.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    const BURST: usize = 64;
    // 256 source addresses × 64 ports, reused in turn.
    let frames: Vec<Vec<u8>> = (0..BURST * 256)
        .map(|i| frame(len, (i % 256) as u16, 1024 + (i / 256) as u16))
        .collect();
    let mut iov: Vec<libc::iovec> = frames
        .iter()
        .map(|f| libc::iovec {
            iov_base: f.as_ptr() as *mut libc::c_void,
            iov_len: f.len(),
        })
        .collect();
    // SAFETY: an all-zero mmsghdr is valid (no name, no control data).
    let mut msgs: Vec<libc::mmsghdr> = (0..iov.len())
        .map(|_| unsafe { std::mem::zeroed() })
        .collect();
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    let t0 = Instant::now();
    let end = Duration::from_secs_f64(secs);
    let mut sent = 0u64;
    let mut k = 0usize;
    while t0.elapsed() < end {
        if rate > 0 {
            let due = (t0.elapsed().as_secs_f64() * rate as f64) as u64;
            if sent >= due {
                std::hint::spin_loop();
                continue;
            }
        }
        let m = &mut msgs[k * BURST..(k + 1) * BURST];
        // SAFETY: `m` is BURST initialised mmsghdrs whose iovecs point into `frames`, all
        // alive across the call; the kernel only reads them (and writes msg_len).
        let n = unsafe { libc::sendmmsg(fd, m.as_mut_ptr(), BURST as u32, 0) };
        if n > 0 {
            sent += n as u64;
        }
        k = (k + 1) % 256;
    }
    // SAFETY: closing the descriptor we opened.
    unsafe { libc::close(fd) };
    println!("sent={sent} secs={:.3}", t0.elapsed().as_secs_f64());
    Ok(())
}

/// What one tool captured in one run.
#[derive(Debug, Clone, Copy, Default)]
struct Outcome {
    sent: u64,
    veth_rx: u64,
    captured: u64,
    drops: u64,
    secs: f64,
    /// CPU time of the capturing process or thread while sending, as a share of the sending
    /// time (0..1): what the tool itself costs, whatever else runs on the machine.
    cpu: f64,
}

/// CPU time (ns) of a task, from `/proc/<pid>/task/<tid>/schedstat` (first field).
fn task_cpu_ns(pid: u32, tid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn run_tcpdump(v: &Veth, secs: f64, len: usize, rate: u64) -> anyhow::Result<Outcome> {
    let td = Command::new("taskset")
        .args(["-c", "1", "tcpdump", "-n", "-i", &v.host, "-B", "65536"])
        .args(["-w", "/dev/null"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(1000));
    let rx0 = v.rx_packets();
    let pid = td.id();
    let c0 = task_cpu_ns(pid, pid as i32);
    let t0 = Instant::now();
    let sent = v.send(secs, len, rate)?;
    let elapsed = t0.elapsed().as_secs_f64();
    let c1 = task_cpu_ns(pid, pid as i32);
    std::thread::sleep(Duration::from_millis(500));
    let rx1 = v.rx_packets();
    // SIGTERM, not SIGINT: children inherit our blocked SIGINT (see main). tcpdump prints its
    // statistics on either.
    // SAFETY: kill(2) on the tcpdump child we spawned (still our child: not yet waited for).
    unsafe { libc::kill(td.id() as libc::pid_t, libc::SIGTERM) };
    let out = td.wait_with_output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    let num = |what: &str| {
        err.lines()
            .find(|l| l.contains(what))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(Outcome {
        sent,
        veth_rx: rx1 - rx0,
        captured: num("packets captured"),
        drops: num("dropped by kernel"),
        secs: elapsed,
        cpu: (c1 - c0) as f64 / 1e9 / elapsed,
    })
}

enum Src {
    Pcap,
    Xdp(AttachMode),
}

fn run_ours(
    v: &Veth,
    src: &Src,
    secs: f64,
    len: usize,
    rate: u64,
    frames: u32,
) -> anyhow::Result<Outcome> {
    let p = Pipeline::new(PipelineConfig {
        workers: 1,
        pin: true,
        cpus: Some(vec![1]),
        ..PipelineConfig::default()
    });
    let stop = p.stop_handle();
    let counters = Arc::clone(p.counters());
    let started = Arc::new(AtomicBool::new(false));
    let tid = Arc::new(std::sync::atomic::AtomicI32::new(0));
    let outcome = std::thread::scope(|s| -> anyhow::Result<Outcome> {
        let started2 = Arc::clone(&started);
        let tid2 = Arc::clone(&tid);
        let p = &p;
        let h = s.spawn(move || -> anyhow::Result<()> {
            // SAFETY: gettid(2) has no preconditions.
            tid2.store(unsafe { libc::gettid() }, Ordering::Release);
            let mut ws = vec![Touch::default()];
            match src {
                Src::Pcap => {
                    let spec: SourceSpec = format!("pcap-live:{}", v.host).parse()?;
                    let live = spec.open_live(&LiveConfig::default())?;
                    started2.store(true, Ordering::Release);
                    p.run_source(live, &mut ws)?;
                }
                Src::Xdp(mode) => {
                    let spec: SourceSpec = format!("xdp:{}", v.host).parse()?;
                    let mut x = spec.open_xdp(&XdpConfig {
                        frames,
                        attach: *mode,
                        ..XdpConfig::default()
                    })?;
                    anyhow::ensure!(x.attach_mode() == *mode, "attach mode");
                    started2.store(true, Ordering::Release);
                    p.run_xdp(&mut x, &mut ws)?;
                }
            }
            Ok(())
        });
        let t_open = Instant::now();
        while !started.load(Ordering::Acquire) && !h.is_finished() {
            anyhow::ensure!(t_open.elapsed() < Duration::from_secs(10), "open timed out");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(500));
        let rx0 = v.rx_packets();
        let c0 = counters.snapshot();
        let (pid, t) = (std::process::id(), tid.load(Ordering::Acquire));
        let cpu0 = task_cpu_ns(pid, t);
        let t0 = Instant::now();
        let sent = v.send(secs, len, rate);
        let elapsed = t0.elapsed().as_secs_f64();
        let cpu1 = task_cpu_ns(pid, t);
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        let joined = h.join();
        let sent = sent?;
        match joined {
            Ok(r) => r?,
            Err(_) => anyhow::bail!("capture thread panicked"),
        }
        let c1 = counters.snapshot();
        Ok(Outcome {
            sent,
            veth_rx: v.rx_packets() - rx0,
            captured: c1.packets - c0.packets,
            drops: c1.source.kernel_drops + c1.ring_full_drops,
            secs: elapsed,
            cpu: (cpu1 - cpu0) as f64 / 1e9 / elapsed,
        })
    })?;
    Ok(outcome)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut secs = 5.0f64;
    let mut runs = 3usize;
    let mut len = 64usize;
    let mut rate = 0u64;
    let mut frames = 16384u32;
    let mut send_iface = None;
    let mut tools: Vec<String> = vec!["tcpdump".into(), "pcap".into(), "xdp".into()];
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--seconds" => secs = val()?.parse()?,
            "--runs" => runs = val()?.parse()?,
            "--len" => len = val()?.parse()?,
            "--rate" => rate = val()?.parse()?,
            "--frames" => frames = val()?.parse()?,
            "--tools" => tools = val()?.split(',').map(str::to_string).collect(),
            "--send" => send_iface = Some(val()?),
            _ => anyhow::bail!("unexpected argument {a}"),
        }
    }
    if let Some(iface) = send_iface {
        return sender(&iface, secs, len, rate);
    }
    let v = Veth::create()?;
    // Ctrl-C: remove the namespace and veth too.
    let (ns, host) = (v.ns.clone(), v.host.clone());
    let _ = std::thread::spawn(move || {
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset/sigaddset initialise the set we own; sigwait blocks this thread
        // for SIGINT, which main blocks below (so only this thread receives it).
        unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            libc::sigaddset(set.as_mut_ptr(), libc::SIGINT);
            let mut sig = 0;
            libc::sigwait(set.as_ptr(), &mut sig);
        }
        let _ = Command::new("ip").args(["link", "del", &host]).status();
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        std::process::exit(130);
    });
    {
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: as above; blocks SIGINT in this thread (inherited by threads spawned later).
        unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            libc::sigaddset(set.as_mut_ptr(), libc::SIGINT);
            libc::pthread_sigmask(libc::SIG_BLOCK, set.as_ptr(), std::ptr::null_mut());
        }
    }
    println!(
        "veth {} (capture, CPU 1) <- {} in netns {} (sender, CPU 0); {len}-byte frames, {secs} s, \
         rate {}",
        v.host,
        v.peer,
        v.ns,
        if rate == 0 {
            "max".to_string()
        } else {
            format!("{rate}/s")
        }
    );
    let mut results: Vec<(String, Vec<Outcome>)> =
        tools.iter().map(|t| (t.clone(), Vec::new())).collect();
    for run in 0..runs {
        for (tool, outs) in results.iter_mut() {
            let o = match tool.as_str() {
                "tcpdump" => run_tcpdump(&v, secs, len, rate)?,
                "pcap" => run_ours(&v, &Src::Pcap, secs, len, rate, frames)?,
                "xdp" => run_ours(&v, &Src::Xdp(AttachMode::Driver), secs, len, rate, frames)?,
                "xdp-generic" => run_ours(&v, &Src::Xdp(AttachMode::Skb), secs, len, rate, frames)?,
                t => anyhow::bail!("unknown tool {t}"),
            };
            println!(
                "run={run} tool={tool} sent={} veth_rx={} captured={} drops={} secs={:.2} \
                 captured_pps={:.0} sent_pps={:.0} loss={:.1}% cpu={:.1}% ns_per_pkt={:.0}",
                o.sent,
                o.veth_rx,
                o.captured,
                o.drops,
                o.secs,
                o.captured as f64 / o.secs,
                o.sent as f64 / o.secs,
                100.0 * (1.0 - o.captured as f64 / o.sent.max(1) as f64),
                100.0 * o.cpu,
                o.cpu * o.secs * 1e9 / o.captured.max(1) as f64,
            );
            outs.push(o);
        }
    }
    for (tool, outs) in &results {
        let m = |f: &dyn Fn(&Outcome) -> f64| median(outs.iter().map(f).collect());
        println!(
            "median tool={tool} sent_pps={:.0} captured_pps={:.0} drops={:.0} loss={:.1}% \
             cpu={:.1}% ns_per_pkt={:.0} runs={}",
            m(&|o| o.sent as f64 / o.secs),
            m(&|o| o.captured as f64 / o.secs),
            m(&|o| o.drops as f64),
            m(&|o| 100.0 * (1.0 - o.captured as f64 / o.sent.max(1) as f64)),
            m(&|o| 100.0 * o.cpu),
            m(&|o| o.cpu * o.secs * 1e9 / o.captured.max(1) as f64),
            outs.len()
        );
    }
    Ok(())
}
