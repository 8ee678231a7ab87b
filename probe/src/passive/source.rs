//! Where a live passive pipeline gets its packets: libpcap on interfaces, AF_XDP (feature
//! `xdp`), or a capture file replayed at its own pace with its timestamps moved to now
//! ([`PacedFile`]: demonstrations and tests of the live path without hardware).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mplane_capture::hygiene::Offloads;
use mplane_capture::source::pcap::{PcapFile, Record};
use mplane_capture::source::{PacketRef, PacketSource, SourceError, SourceSpec, SourceStats};

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// `path` opened for a paced replay, with [`super::FILE_WINDOW`].
fn open_paced(path: &Path) -> Result<PcapFile, SourceError> {
    let mut file = PcapFile::open(path)?;
    file.set_window(super::FILE_WINDOW);
    Ok(file)
}

/// A capture file replayed in real time: each frame is delivered when as much time has passed
/// since the start of the replay as separated it from the file's first frame, stamped with
/// that wall-clock time. With `repeat`, the file starts over after its last frame (one second
/// later), so a long-running job keeps seeing traffic (a pipe is read once). Behaves as a live
/// source.
#[derive(Debug)]
pub struct PacedFile {
    path: PathBuf,
    file: PcapFile,
    repeat: bool,
    /// Added to the file's timestamps.
    shift: i128,
    first_ts: Option<u64>,
    last_ts: u64,
    pending: Option<Record>,
    done: bool,
    /// Frames delivered.
    pub frames: u64,
    /// The pipeline's stop flag, for the file opened again on `repeat` too.
    stop: Option<Arc<AtomicBool>>,
}

impl PacedFile {
    /// Opens `path` for a paced replay.
    pub fn open(path: &Path, repeat: bool) -> Result<PacedFile, SourceError> {
        Ok(PacedFile {
            path: path.to_path_buf(),
            file: open_paced(path)?,
            repeat,
            shift: 0,
            first_ts: None,
            last_ts: 0,
            pending: None,
            done: false,
            frames: 0,
            stop: None,
        })
    }

    fn due(&self, r: &Record) -> u64 {
        (i128::from(r.ts_ns) + self.shift).max(0) as u64
    }

    fn fetch(&mut self) -> Result<(), SourceError> {
        if self.pending.is_some() || self.done {
            return Ok(());
        }
        // a compressed capture's damaged stream is the cause of whatever ends it early
        let next = self
            .file
            .next_record()
            .map_err(|e| self.file.damage().map_or(e, |d| d.error()))?;
        match next {
            None if let Some(d) = self.file.damage() => return Err(d.error()),
            Some(r) => {
                if self.first_ts.is_none() {
                    self.first_ts = Some(r.ts_ns);
                    self.shift = i128::from(wall_ns()) - i128::from(r.ts_ns);
                }
                self.pending = Some(r);
            }
            // a pipe cannot start over (and opening it again would wait for a writer)
            None if self.repeat
                && self.frames > 0
                && std::fs::metadata(&self.path).is_ok_and(|m| m.is_file()) =>
            {
                // start over one second after the last frame
                let end = (i128::from(self.last_ts) + self.shift).max(0) as u64;
                self.file = open_paced(&self.path)?;
                if let Some(stop) = &self.stop {
                    self.file.stop_on(Arc::clone(stop));
                }
                if let Some(r) = self.file.next_record()? {
                    self.shift = i128::from(end + 1_000_000_000) - i128::from(r.ts_ns);
                    self.pending = Some(r);
                }
            }
            None => self.done = true,
        }
        Ok(())
    }
}

impl PacketSource for PacedFile {
    fn next_packet(&mut self) -> Result<Option<PacketRef<'_>>, SourceError> {
        self.fetch()?;
        let Some(r) = self.pending else {
            return Ok(None);
        };
        let due = self.due(&r);
        if wall_ns() < due {
            return Ok(None);
        }
        self.pending = None;
        self.frames += 1;
        self.last_ts = r.ts_ns;
        Ok(Some(PacketRef {
            data: self.file.data(&r),
            ts_ns: due,
            orig_len: r.orig_len,
            link: r.link,
        }))
    }

    fn is_live(&self) -> bool {
        true
    }

    fn stop_on(&mut self, stop: Arc<AtomicBool>) {
        self.file.stop_on(Arc::clone(&stop));
        self.stop = Some(stop);
    }

    fn wait_readable(&mut self, timeout: Duration) {
        let wait = match self.pending {
            Some(r) => Duration::from_nanos(self.due(&r).saturating_sub(wall_ns())).min(timeout),
            None => timeout,
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

/// Where the timestamps of a source are expected to come from, before it opens (the
/// `capture.clock` metadata of capabilities; results carry [`AnySource::clock`], what the
/// open source does).
pub fn clock_of(spec: &SourceSpec) -> &'static str {
    match spec {
        SourceSpec::PcapFile(_) => "file-rebased",
        SourceSpec::PcapLive(_) => "kernel",
        SourceSpec::Xdp { .. } => "userspace",
    }
}

/// One of the sources a passive pipeline runs on.
pub enum AnySource {
    /// A paced capture file.
    Paced(PacedFile),
    /// libpcap.
    Live(mplane_capture::source::live::LiveSource),
    /// AF_XDP.
    #[cfg(feature = "xdp")]
    Xdp(mplane_capture::source::xdp::XdpSource),
}

impl std::fmt::Debug for AnySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AnySource::Paced(_) => "AnySource::Paced",
            AnySource::Live(_) => "AnySource::Live",
            #[cfg(feature = "xdp")]
            AnySource::Xdp(_) => "AnySource::Xdp",
        })
    }
}

/// How to open a live source.
#[derive(Debug, Clone, Default)]
pub struct SourceOptions {
    /// libpcap settings (buffer, snaplen, BPF filter, multi-interface merge).
    pub live: mplane_capture::source::live::LiveConfig,
    /// A `pcap:` file starts over at its end.
    pub repeat: bool,
    /// AF_XDP settings (UMEM frames and their size, attach and bind modes).
    #[cfg(feature = "xdp")]
    pub xdp: mplane_capture::source::xdp::XdpConfig,
}

impl AnySource {
    /// Opens `spec`.
    pub fn open(spec: &SourceSpec, opts: &SourceOptions) -> Result<AnySource, SourceError> {
        match spec {
            SourceSpec::PcapFile(p) => Ok(AnySource::Paced(PacedFile::open(p, opts.repeat)?)),
            SourceSpec::PcapLive(_) => {
                let s = AnySource::Live(spec.open_live(&opts.live)?);
                s.warn_offloads();
                Ok(s)
            }
            #[cfg(feature = "xdp")]
            SourceSpec::Xdp { .. } => {
                let s = spec.open_xdp(&opts.xdp)?;
                tracing::info!(
                    "{spec}: {} queue(s), {} mode, {}, timestamps from {}",
                    s.queues(),
                    match s.attach_mode() {
                        mplane_capture::source::xdp::AttachMode::Skb => "generic (SKB)",
                        _ => "native (driver)",
                    },
                    if s.zero_copy() { "zero-copy" } else { "copy" },
                    if s.kernel_timestamps() {
                        "the XDP program (kernel receive time)"
                    } else {
                        "the reader (this kernel refuses XDP metadata)"
                    }
                );
                let s = AnySource::Xdp(s);
                s.warn_offloads();
                Ok(s)
            }
            #[cfg(not(feature = "xdp"))]
            SourceSpec::Xdp { iface, .. } => Err(SourceError::NotSupported(format!(
                "AF_XDP on {iface}: mpcom was built without the xdp feature"
            ))),
        }
    }
}

impl AnySource {
    /// The capture interfaces with their offloads as read when the source opened (`None`
    /// where the driver does not answer); `None` for a file.
    fn interface_offloads(&self) -> Option<Vec<(String, Option<Offloads>)>> {
        match self {
            AnySource::Paced(_) => None,
            AnySource::Live(s) => Some(
                s.interfaces()
                    .into_iter()
                    .map(|i| (i.name, i.offloads))
                    .collect(),
            ),
            #[cfg(feature = "xdp")]
            AnySource::Xdp(s) => Some(vec![(s.iface().to_string(), s.offloads().cloned())]),
        }
    }

    /// The `capture.offloads` metadata of results: for each capture interface, the NIC
    /// offloads that were on when the source opened (`eth1: gro rxvlan; eth2: none`;
    /// `unknown` where the driver does not answer); `None` for a file.
    pub fn offloads(&self) -> Option<String> {
        let described: Vec<String> = self
            .interface_offloads()?
            .into_iter()
            .map(|(name, o)| match o {
                None => format!("{name}: unknown"),
                Some(o) => {
                    let active: Vec<&str> = o.active().map(|(x, _)| x.ethtool_name()).collect();
                    if active.is_empty() {
                        format!("{name}: none")
                    } else {
                        format!("{name}: {}", active.join(" "))
                    }
                }
            })
            .collect();
        Some(described.join("; "))
    }

    /// Logs a warning for each offload of the capture interfaces that distorts what is
    /// captured (with what it does and whether the driver lets it be turned off).
    fn warn_offloads(&self) {
        for (_, o) in self.interface_offloads().unwrap_or_default() {
            let Some(o) = o else { continue };
            for w in o.warnings() {
                tracing::warn!("{w}");
            }
            if let Some(cmd) = o.fix_command() {
                tracing::warn!("to turn them off: {cmd}");
            }
        }
    }

    /// Where this open source's timestamps come from (the `capture.clock` metadata of
    /// results): `kernel` for libpcap and for AF_XDP frames the XDP program stamps,
    /// `userspace` for AF_XDP frames stamped when read (kernels that refuse XDP metadata),
    /// `file-rebased` for a replayed file.
    pub fn clock(&self) -> &'static str {
        match self {
            AnySource::Paced(_) => "file-rebased",
            AnySource::Live(_) => "kernel",
            #[cfg(feature = "xdp")]
            AnySource::Xdp(s) => {
                if s.kernel_timestamps() {
                    "kernel"
                } else {
                    "userspace"
                }
            }
        }
    }
}

impl PacketSource for AnySource {
    fn next_packet(&mut self) -> Result<Option<PacketRef<'_>>, SourceError> {
        match self {
            AnySource::Paced(s) => s.next_packet(),
            AnySource::Live(s) => s.next_packet(),
            #[cfg(feature = "xdp")]
            AnySource::Xdp(s) => s.next_packet(),
        }
    }
    fn stats(&mut self) -> SourceStats {
        match self {
            AnySource::Paced(s) => s.stats(),
            AnySource::Live(s) => s.stats(),
            #[cfg(feature = "xdp")]
            AnySource::Xdp(s) => s.stats(),
        }
    }
    fn is_live(&self) -> bool {
        true
    }
    fn wait_readable(&mut self, timeout: Duration) {
        match self {
            AnySource::Paced(s) => s.wait_readable(timeout),
            AnySource::Live(s) => s.wait_readable(timeout),
            #[cfg(feature = "xdp")]
            AnySource::Xdp(s) => s.wait_readable(timeout),
        }
    }
    fn stop_on(&mut self, stop: Arc<AtomicBool>) {
        match self {
            AnySource::Paced(s) => s.stop_on(stop),
            AnySource::Live(s) => s.stop_on(stop),
            #[cfg(feature = "xdp")]
            AnySource::Xdp(s) => s.stop_on(stop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mplane_capture::builder::{Builder, PcapWriter};
    use mplane_capture::packet::LinkType;

    #[test]
    fn paced_replay_keeps_the_gaps_and_moves_to_now() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.pcap");
        let mut w = PcapWriter::new(
            std::fs::File::create(&path).unwrap(),
            LinkType::ETHERNET,
            65535,
            true,
            false,
        )
        .unwrap();
        let f = Builder::ethernet()
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2])
            .udp(1, 2)
            .build();
        for i in 0..3u64 {
            w.write(1_000_000_000 + i * 100_000_000, &f, f.len() as u32)
                .unwrap();
        }
        drop(w);
        let mut s = PacedFile::open(&path, true).unwrap();
        let start = wall_ns();
        let mut got = Vec::new();
        while got.len() < 4 {
            match s.next_packet().unwrap() {
                Some(p) => got.push(p.ts_ns),
                None => s.wait_readable(Duration::from_millis(5)),
            }
        }
        let took = wall_ns() - start;
        assert!(got[0] >= start - 1_000_000 && got[0] <= start + 50_000_000);
        assert_eq!(got[1] - got[0], 100_000_000);
        assert_eq!(got[2] - got[1], 100_000_000);
        // repeated one second after the last frame
        assert_eq!(got[3] - got[2], 1_000_000_000);
        assert!(took >= 1_150_000_000, "paced: {took}");
        assert!(s.is_live());
        // the file opened again keeps the small window
        assert_eq!(s.file.window(), crate::passive::FILE_WINDOW);
    }
}
