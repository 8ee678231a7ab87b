//! The passive pipeline end to end (`mpcom replay`: capture file → flow meters → ZSTD Parquet)
//! side by side with the flow meters operators already run, on the same file, in the same
//! run, interleaved: argus, nfpcapd (nfdump), softflowd, and the libpcap count-only loop
//! (`bench/c/pcap_loop.c`) as the reference of the file path itself.
//!
//! ```text
//! cargo build --release -p mplane-probe --bin mpcom -p mplane-bench --bin passive_peers
//! target/release/passive_peers /dev/shm/flows.pcap [--runs 5] [--cpu 0] [--cpus2 0,1]
//!     [--tools pcap_loop,ours-1,ours-2,argus,nfpcapd,softflowd] [--mpcom target/release/mpcom]
//! ```
//!
//! Every tool runs under `/usr/bin/time` (wall, CPU, peak RSS) and `taskset` (one core for
//! everything but `ours-2`, which gets two). Medians over `--runs` interleaved rounds; flows
//! as each tool reports them; output bytes per flow record. Needs Debian's `argus-server
//! argus-client nfdump softflowd libpcap-dev time`; missing tools are skipped with a note.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

struct Run {
    wall: f64,
    cpu: f64,
    rss_kib: u64,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

fn timed(cpus: &str, cmd: &[String], out: &Path) -> Result<Run> {
    let tf = out.with_extension("time");
    let status = Command::new("/usr/bin/time")
        .arg("-o")
        .arg(&tf)
        .args(["-f", "%e %U %S %M", "taskset", "-c", cpus])
        .args(cmd)
        .stdout(std::fs::File::create(out.with_extension("out"))?)
        .stderr(std::fs::File::create(out.with_extension("err"))?)
        .status()
        .context("run /usr/bin/time (apt-get install time)")?;
    let t = std::fs::read_to_string(&tf)?;
    let last = t.lines().last().unwrap_or("");
    let f: Vec<&str> = last.split_whitespace().collect();
    if f.len() != 4 {
        bail!("{}: {t}", cmd.join(" "));
    }
    if !status.success() {
        eprintln!("note: {} exited with {status}", cmd[0]);
    }
    Ok(Run {
        wall: f[0].parse()?,
        cpu: f[1].parse::<f64>()? + f[2].parse::<f64>()?,
        rss_kib: f[3].parse()?,
    })
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    };
    rd.flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                dir_bytes(&p)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// What `--help` and a missing file print.
const USAGE: &str = "usage: passive_peers FILE [--runs N] [--cpu C] [--cpus2 A,B] \
    [--tools pcap_loop,ours-1,ours-2,argus,nfpcapd,softflowd] [--mpcom PATH] [--work DIR]";

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut file = None;
    let mut runs = 5usize;
    let mut cpu = "0".to_string();
    let mut cpus2 = "0,1".to_string();
    let mut tools = "pcap_loop,ours-1,ours-2,argus,nfpcapd,softflowd".to_string();
    let mut mpcom = PathBuf::from("target/release/mpcom");
    let mut work = std::env::temp_dir().join(format!("passive-peers-{}", std::process::id()));
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            "--cpu" => cpu = args.next().context("--cpu C")?,
            "--cpus2" => cpus2 = args.next().context("--cpus2 A,B")?,
            "--tools" => tools = args.next().context("--tools LIST")?,
            "--mpcom" => mpcom = args.next().context("--mpcom PATH")?.into(),
            "--work" => work = args.next().context("--work DIR")?.into(),
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            f if !f.starts_with("--") => file = Some(PathBuf::from(f)),
            o => bail!("unknown option {o}\n{USAGE}"),
        }
    }
    let file = std::fs::canonicalize(file.context(USAGE)?)?;
    std::fs::create_dir_all(&work)?;
    let f = file.display().to_string();
    let w = |s: &str| work.join(s);
    // the libpcap loop, built from our source
    let loop_bin = w("pcap_loop");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("c/pcap_loop.c");
    let ok = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&loop_bin)
        .arg(&src)
        .arg("-lpcap")
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        bail!("cannot build {} (needs cc and libpcap-dev)", src.display());
    }
    let packets: u64 = sh(&format!("{} {f}", loop_bin.display()))
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .context("pcap_loop")?;
    let mp = mpcom.display().to_string();
    let tool_list: Vec<String> = tools.split(',').map(str::to_string).collect();
    let mut cmds: Vec<(String, String, Vec<String>, Option<String>)> = Vec::new(); // name, cpus, cmd, clean
    for t in &tool_list {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let c = match t.as_str() {
            "pcap_loop" => Some((cpu.clone(), s(&[&loop_bin.display().to_string(), &f]), None)),
            "ours-1" | "ours-2" => {
                let n = &t[5..];
                let out = w(t).display().to_string();
                Some((
                    if n == "1" { cpu.clone() } else { cpus2.clone() },
                    s(&[&mp, "replay", &f, "--out", &out, "--workers", n, "--quiet"]),
                    Some(out),
                ))
            }
            "argus" if have("argus") => {
                let out = w("out.argus").display().to_string();
                Some((cpu.clone(), s(&["argus", "-r", &f, "-w", &out]), Some(out)))
            }
            "nfpcapd" if have("nfpcapd") => {
                let out = w("nfp").display().to_string();
                Some((
                    cpu.clone(),
                    s(&[
                        "sh",
                        "-c",
                        &format!("mkdir -p {out} && exec nfpcapd -r {f} -l {out}"),
                    ]),
                    Some(out),
                ))
            }
            "softflowd" if have("softflowd") => Some((
                cpu.clone(),
                s(&[
                    "softflowd",
                    "-r",
                    &f,
                    "-d",
                    "-m",
                    "1048576",
                    "-v",
                    "9",
                    "-n",
                    "127.0.0.1:9995",
                ]),
                None,
            )),
            other => {
                eprintln!("note: {other}: not installed or unknown, skipped");
                None
            }
        };
        if let Some((c, cmd, clean)) = c {
            cmds.push((t.clone(), c, cmd, clean));
        }
    }
    let mut results: BTreeMap<String, Vec<Run>> = BTreeMap::new();
    for round in 0..runs {
        for (name, cpus, cmd, clean) in &cmds {
            if let Some(c) = clean {
                let _ = std::fs::remove_dir_all(c);
                let _ = std::fs::remove_file(c);
            }
            let r = timed(cpus, cmd, &w(name))?;
            eprintln!(
                "round {round} {name}: {:.3} s, {:.3} s CPU, {} MiB",
                r.wall,
                r.cpu,
                r.rss_kib / 1024
            );
            results.entry(name.clone()).or_default().push(r);
        }
    }
    // flows and output size of the last run of each tool
    let flows = |name: &str| -> (String, Option<u64>) {
        match name {
            "ours-1" | "ours-2" => {
                let out =
                    std::fs::read_to_string(w(name).with_extension("out")).unwrap_or_default();
                let recs = out
                    .lines()
                    .find(|l| l.trim_start().starts_with("flows"))
                    .and_then(|l| l.split(',').nth(1))
                    .and_then(|p| p.split_whitespace().next())
                    .and_then(|n| n.parse::<u64>().ok());
                (
                    recs.map_or("?".into(), |n| n.to_string()),
                    Some(dir_bytes(&w(name))),
                )
            }
            "argus" => {
                let n = sh(&format!(
                    "racluster -r {} -n -c , -s proto saddr sport daddr dport | tail -n +2 | wc -l",
                    w("out.argus").display()
                ));
                (n.trim().to_string(), Some(dir_bytes(&w("out.argus"))))
            }
            "nfpcapd" => {
                let n = sh(&format!(
                    "nfdump -R {} -I | awk '$1==\"Flows:\" {{print $2}}'",
                    w("nfp").display()
                ));
                (n.trim().to_string(), Some(dir_bytes(&w("nfp"))))
            }
            "softflowd" => {
                let t = std::fs::read_to_string(w(name).with_extension("out")).unwrap_or_default()
                    + &std::fs::read_to_string(w(name).with_extension("err")).unwrap_or_default();
                let mut s = 0u64;
                let mut on = false;
                for l in t.lines() {
                    if l.contains("Expired flow reasons") {
                        on = true;
                    }
                    if on && l.contains('=') {
                        let toks: Vec<&str> = l.split_whitespace().collect();
                        for (i, tok) in toks.iter().enumerate() {
                            if *tok == "=" {
                                s += toks
                                    .get(i + 1)
                                    .and_then(|v| v.parse::<u64>().ok())
                                    .unwrap_or(0);
                            }
                        }
                    }
                }
                (s.to_string(), None)
            }
            _ => ("-".into(), None),
        }
    };
    println!(
        "file {} ({packets} packets), {runs} interleaved rounds, one core = CPU {cpu}, two cores = CPUs {cpus2}",
        file.display()
    );
    println!(
        "{:<10} {:>9} {:>9} {:>8} {:>9} {:>10} {:>11}",
        "tool", "wall_s", "Mpkt/s", "cpu_s", "rss_MiB", "flows", "bytes/flow"
    );
    let mut pps = BTreeMap::new();
    for (name, _, _, _) in &cmds {
        let rs = &results[name];
        let wall = median(&mut rs.iter().map(|r| r.wall).collect::<Vec<_>>());
        let cpu_s = median(&mut rs.iter().map(|r| r.cpu).collect::<Vec<_>>());
        let rss = rs.iter().map(|r| r.rss_kib).max().unwrap_or(0);
        let (fl, bytes) = flows(name);
        let per_flow = match (bytes, fl.parse::<f64>()) {
            (Some(b), Ok(n)) if n > 0.0 => format!("{:.1}", b as f64 / n),
            _ => "-".into(),
        };
        let rate = packets as f64 / wall.max(1e-9);
        pps.insert(name.clone(), rate);
        println!(
            "{:<10} {:>9.3} {:>9.3} {:>8.3} {:>9.1} {:>10} {:>11}",
            name,
            wall,
            rate / 1e6,
            cpu_s,
            rss as f64 / 1024.0,
            fl,
            per_flow
        );
    }
    let ratio = |a: &str, b: &str| match (pps.get(a), pps.get(b)) {
        (Some(x), Some(y)) => format!("{:.2}×", x / y),
        _ => "-".into(),
    };
    println!(
        "ratios: ours-1/pcap_loop {}  ours-1/argus {}  ours-2/ours-1 {}  ours-1/nfpcapd {}  ours-1/softflowd {}",
        ratio("ours-1", "pcap_loop"),
        ratio("ours-1", "argus"),
        ratio("ours-2", "ours-1"),
        ratio("ours-1", "nfpcapd"),
        ratio("ours-1", "softflowd")
    );
    Ok(())
}
