//! Packet sources: where frames come from.
//!
//! A source lends each frame as a [`PacketRef`] — a borrowed `&[u8]` plus its capture timestamp
//! in nanoseconds, original length and link type — valid until the next call (a lending
//! iterator, [`PacketSource::next_packet`]), so a frame can never outlive its buffer slot.
//!
//! - [`pcap::PcapFile`]: classic pcap (µs and ns magic, either byte order) and pcapng (SHB, IDB
//!   with per-interface link type, `if_tsresol` and `if_tsoffset`, EPB, SPB, OPB), read from a
//!   read-only memory mapping whose consumed part is released behind the reader. It also hands
//!   out [`pcap::Record`] descriptors (offsets into the shared mapping), which the pipeline ships
//!   to workers without copying.
//! - [`fileset::FileSet`]: several capture files (a rotating capture's, or one per port of a
//!   tap) read as one, ordered and merged by packet time.
//! - `live::LiveSource` (feature `live`): libpcap on one or more interfaces, copied into the
//!   pipeline's batches; kernel drops from `pcap_stats`. Several interfaces are merged into one
//!   stream in timestamp order with a bounded reorder window (`merge`, see the bound there and
//!   in `doc/capture.md`); [`dedup`] suppresses the duplicates of SPAN ports on request.
//! - `xdp::XdpSource` (feature `xdp`): AF_XDP, one socket per RX queue sharing one UMEM
//!   (xdpilone rings, our own XDP program embedded as a prebuilt object and attached with aya,
//!   native mode with generic fallback, zero-copy bind with copy fallback).
//!   `Pipeline::run_xdp` hands UMEM frames to the workers as borrowed slices and returns them
//!   to the fill rings when every worker has passed their batch. Tested on veth (copy mode,
//!   generic and native, two queues).

pub mod decompress;
pub mod dedup;
pub mod fileset;
#[cfg(feature = "live")]
pub mod live;
#[cfg(feature = "live")]
pub(crate) mod merge;
pub mod mmap;
pub mod pcap;
mod wait;
#[cfg(feature = "xdp")]
pub mod xdp;

use std::path::PathBuf;
use std::str::FromStr;

use crate::packet::LinkType;

/// One captured frame, borrowed from its source.
#[derive(Debug, Clone, Copy)]
pub struct PacketRef<'a> {
    /// Captured bytes (possibly cut by the snaplen).
    pub data: &'a [u8],
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Length of the frame on the wire.
    pub orig_len: u32,
    /// Link type of `data`.
    pub link: LinkType,
}

/// A source of packets lent one at a time.
pub trait PacketSource {
    /// The next frame, `Ok(None)` at the end of the source. The frame borrows the source until
    /// the next call.
    fn next_packet(&mut self) -> Result<Option<PacketRef<'_>>, SourceError>;
    /// What the source counted so far (cumulative since it was opened): kernel drops,
    /// suppressed duplicates, frames too large for the capture buffer... All zero for files.
    /// Cheap enough to call every 100 ms, not per packet (live sources ask the kernel).
    fn stats(&mut self) -> SourceStats {
        SourceStats::default()
    }
    /// `true` for live sources: `Ok(None)` from [`Self::next_packet`] then means "nothing right
    /// now" rather than "end", and the pipeline runs until its stop flag is set.
    fn is_live(&self) -> bool {
        false
    }
    /// Live sources: block up to `timeout` until a frame may be available (files: no-op).
    fn wait_readable(&mut self, _timeout: std::time::Duration) {}
    /// Ends the source once `stop` is set even while it blocks waiting for bytes (a capture
    /// read as a stream from an idle pipe). The pipeline hands its stop flag here before it
    /// runs the source. Sources that never block for long ignore it (the default).
    fn stop_on(&mut self, _stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {}
}

/// Where the bytes of the pipeline's record descriptors live when they are not copied: a
/// memory-mapped file, or the UMEM of an AF_XDP socket (frames lent to the workers and returned
/// to the kernel once every worker has passed their batch).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Frames<'a> {
    /// A mapped capture file; `Record::offset` is the file offset.
    Mapped(&'a [u8]),
    /// An AF_XDP UMEM; `Record::offset` is the frame address.
    #[cfg(feature = "xdp")]
    Umem(&'a xdp::UmemArea),
}

impl<'a> Frames<'a> {
    /// The bytes of `rec` (empty if it does not fit, which the sources rule out).
    #[inline(always)]
    pub(crate) fn get(self, rec: &pcap::Record) -> &'a [u8] {
        match self {
            Frames::Mapped(m) => pcap::record_bytes(m, rec),
            #[cfg(feature = "xdp")]
            Frames::Umem(u) => u.frame(rec.offset, rec.caplen),
        }
    }
}

/// Counts kept by a source, cumulative since it was opened (see [`PacketSource::stats`]).
///
/// The pipeline copies them into [`crate::counters::Counters`] about every 100 ms and at the end
/// of a run, so they are readable at any time without locks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Frames the kernel dropped because the capture ring was full (libpcap `ps_drop`, AF_XDP
    /// `rx_dropped + rx_ring_full`), summed over interfaces and queues.
    pub kernel_drops: u64,
    /// Frames the driver or NIC dropped before the capture point (libpcap `ps_ifdrop`: the
    /// interface's `rx_dropped` since the capture started).
    pub interface_drops: u64,
    /// AF_XDP: packets that found the fill ring empty (a subset of `kernel_drops` in copy mode).
    pub fill_ring_empty: u64,
    /// Frames suppressed as duplicates of a frame seen shortly before (SPAN ports, optional).
    pub duplicates: u64,
    /// Frames of a merged multi-interface source delivered with a timestamp older than one
    /// already delivered (an interface was later than the reorder window allows).
    pub out_of_order: u64,
    /// Frames captured shorter than on the wire because of the snaplen.
    pub snaplen_cut: u64,
    /// Frames too large for a capture buffer (AF_XDP: larger than a UMEM frame): counted and
    /// not delivered, never delivered truncated.
    pub oversize: u64,
    /// Frames longer than the interface MTU allows (plus Ethernet and two VLAN headers): the
    /// mark of GRO/LRO on receive or TSO/GSO on locally sent traffic (see [`crate::hygiene`]).
    pub over_mtu: u64,
}

impl SourceStats {
    /// Adds `other` field by field (summing interfaces or queues).
    pub fn add(&mut self, other: &SourceStats) {
        self.kernel_drops += other.kernel_drops;
        self.interface_drops += other.interface_drops;
        self.fill_ring_empty += other.fill_ring_empty;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        self.snaplen_cut += other.snaplen_cut;
        self.oversize += other.oversize;
        self.over_mtu += other.over_mtu;
    }
}

/// Errors of packet sources. File errors carry the byte offset where reading stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The file could not be opened or mapped.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file does not start with a pcap or pcapng magic number.
    #[error("not a pcap or pcapng file (magic {magic:#010x})")]
    BadMagic {
        /// The first four bytes, little-endian.
        magic: u32,
    },
    /// The file is compressed in a format not read transparently (gzip and zstd are, see
    /// [`decompress`]): it has to be decompressed first.
    #[error("compressed with {format}, not a capture file: decompress it first (`{tool} FILE`)")]
    Compressed {
        /// The compression format its magic number shows (`gzip`, `zstd`, `xz`, ...).
        format: &'static str,
        /// The usual command that decompresses it, keeping the original.
        tool: &'static str,
    },
    /// A compressed capture's stream is cut short or corrupt: the packets before were read.
    #[error("{format} stream damaged after {after} bytes of capture ({reason})")]
    Decompression {
        /// The compression format.
        format: &'static str,
        /// Capture bytes recovered.
        after: u64,
        /// The decoder's words.
        reason: String,
    },
    /// A compressed capture's file could not be read (an I/O error of the disk, not damage
    /// to the stream).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An error of one file of a [`fileset::FileSet`], naming it.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// Its error.
        source: Box<SourceError>,
    },
    /// A file cannot be read as part of a set of files.
    #[error("{reason}")]
    NotInSet {
        /// Why.
        reason: &'static str,
    },
    /// The file ends inside a header or a packet (e.g. the capture was killed mid-write).
    #[error("truncated capture file: {what} cut at byte offset {offset}")]
    Truncated {
        /// Offset of the incomplete element.
        offset: u64,
        /// What was incomplete.
        what: &'static str,
    },
    /// A length or index in the file is impossible.
    #[error("corrupt capture file at byte offset {offset}: {reason}")]
    Corrupt {
        /// Offset of the bad element.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A live capture could not be opened or read.
    #[error("live capture on {iface}: {reason}")]
    Live {
        /// The interface.
        iface: String,
        /// libpcap's message.
        reason: String,
    },
    /// The source kind is recognised but not implemented yet.
    #[error("{0}: not supported yet")]
    NotSupported(String),
    /// A source specification string could not be parsed.
    #[error("bad source {spec:?}: {reason}")]
    BadSpec {
        /// The text given.
        spec: String,
        /// Why it is wrong.
        reason: &'static str,
    },
}

/// Where packets come from, as written in configuration: `pcap:FILE`, `pcap-live:IFACE[,IFACE]`
/// or `xdp:IFACE[:QUEUES]` (QUEUES = number of RX queues, default 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// A pcap or pcapng file.
    PcapFile(PathBuf),
    /// Live capture with libpcap on one or more interfaces.
    PcapLive(Vec<String>),
    /// AF_XDP on an interface, one socket per RX queue.
    Xdp {
        /// Interface name.
        iface: String,
        /// Number of RX queues (queues `0..queues`).
        queues: u32,
    },
}

/// The configuration syntax [`SourceSpec::from_str`] reads: `pcap:FILE`,
/// `pcap-live:IFACE[,IFACE]`, `xdp:IFACE:QUEUES`.
impl std::fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceSpec::PcapFile(p) => write!(f, "pcap:{}", p.display()),
            SourceSpec::PcapLive(i) => write!(f, "pcap-live:{}", i.join(",")),
            SourceSpec::Xdp { iface, queues } => write!(f, "xdp:{iface}:{queues}"),
        }
    }
}

impl FromStr for SourceSpec {
    type Err = SourceError;
    fn from_str(s: &str) -> Result<Self, SourceError> {
        let bad = |reason| SourceError::BadSpec {
            spec: s.to_string(),
            reason,
        };
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| bad("expected KIND:ARGS (pcap:, pcap-live:, xdp:)"))?;
        match kind {
            "pcap" if !rest.is_empty() => Ok(SourceSpec::PcapFile(PathBuf::from(rest))),
            "pcap" => Err(bad("missing file name")),
            "pcap-live" => {
                let ifaces: Vec<String> = rest.split(',').map(str::to_string).collect();
                if ifaces.iter().any(|i| i.is_empty() || !valid_ifname(i)) {
                    return Err(bad("bad interface name"));
                }
                Ok(SourceSpec::PcapLive(ifaces))
            }
            "xdp" => {
                let (iface, queues) = match rest.split_once(':') {
                    Some((i, q)) => (
                        i,
                        q.parse::<u32>()
                            .ok()
                            .filter(|&n| (1..=256).contains(&n))
                            .ok_or_else(|| bad("QUEUES must be a number in 1..=256"))?,
                    ),
                    None => (rest, 1),
                };
                if iface.is_empty() || !valid_ifname(iface) {
                    return Err(bad("bad interface name"));
                }
                Ok(SourceSpec::Xdp {
                    iface: iface.to_string(),
                    queues,
                })
            }
            _ => Err(bad("unknown source kind (pcap, pcap-live, xdp)")),
        }
    }
}

/// Linux interface names: 1..=15 bytes, no '/', whitespace or ':'.
fn valid_ifname(s: &str) -> bool {
    s.len() <= 15
        && !s
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace())
}

impl SourceSpec {
    /// Opens a file source. Live and XDP specs return [`SourceError::NotSupported`].
    pub fn open_file(&self) -> Result<pcap::PcapFile, SourceError> {
        match self {
            SourceSpec::PcapFile(p) => pcap::PcapFile::open(p),
            SourceSpec::PcapLive(i) => Err(SourceError::NotSupported(format!(
                "opening live capture on {} as a file",
                i.join(",")
            ))),
            SourceSpec::Xdp { iface, .. } => Err(SourceError::NotSupported(format!(
                "AF_XDP capture on {iface}"
            ))),
        }
    }
}

#[cfg(feature = "live")]
impl SourceSpec {
    /// Opens a live libpcap source (`pcap-live:`). Other kinds return an error.
    pub fn open_live(&self, cfg: &live::LiveConfig) -> Result<live::LiveSource, SourceError> {
        match self {
            SourceSpec::PcapLive(ifaces) => live::LiveSource::open(ifaces, cfg),
            SourceSpec::PcapFile(p) => Err(SourceError::NotSupported(format!(
                "{} is a file, not a live source",
                p.display()
            ))),
            SourceSpec::Xdp { iface, .. } => Err(SourceError::NotSupported(format!(
                "AF_XDP capture on {iface}"
            ))),
        }
    }
}

#[cfg(feature = "xdp")]
impl SourceSpec {
    /// Opens an AF_XDP source (`xdp:IFACE[:QUEUES]`, one socket per queue `0..QUEUES`).
    pub fn open_xdp(&self, cfg: &xdp::XdpConfig) -> Result<xdp::XdpSource, SourceError> {
        match self {
            SourceSpec::Xdp { iface, queues } => xdp::XdpSource::open(iface, *queues, cfg),
            other => Err(SourceError::NotSupported(format!(
                "{other:?} is not an xdp: source"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn specs() {
        assert_eq!(
            "pcap:/tmp/a.pcap".parse::<SourceSpec>().unwrap(),
            SourceSpec::PcapFile("/tmp/a.pcap".into())
        );
        assert_eq!(
            "pcap-live:eth0,eth1".parse::<SourceSpec>().unwrap(),
            SourceSpec::PcapLive(vec!["eth0".into(), "eth1".into()])
        );
        assert_eq!(
            "xdp:ens1f0:4".parse::<SourceSpec>().unwrap(),
            SourceSpec::Xdp {
                iface: "ens1f0".into(),
                queues: 4
            }
        );
        assert_eq!(
            "xdp:eth0".parse::<SourceSpec>().unwrap(),
            SourceSpec::Xdp {
                iface: "eth0".into(),
                queues: 1
            }
        );
        // written back as read
        for text in ["pcap:/tmp/a.pcap", "pcap-live:eth0,eth1", "xdp:ens1f0:4"] {
            assert_eq!(text.parse::<SourceSpec>().unwrap().to_string(), text);
        }
        for bad in [
            "pcap:",
            "eth0",
            "xdp:eth0:0",
            "xdp::2",
            "pcap-live:",
            "foo:bar",
            "pcap-live:a,,b",
        ] {
            assert!(bad.parse::<SourceSpec>().is_err(), "{bad}");
        }
        let e = "pcap-live:eth0"
            .parse::<SourceSpec>()
            .unwrap()
            .open_file()
            .unwrap_err();
        assert!(matches!(e, SourceError::NotSupported(_)));
        assert!(e.to_string().contains("not supported yet"));
    }
}
