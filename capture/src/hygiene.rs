//! Capture hygiene: which NIC offloads distort what a capture sees, read from the interface.
//!
//! A probe wants the frames as they were on the wire. Several offloads rewrite them before any
//! capture point:
//!
//! | offload (`ethtool -K` name) | kernel feature | effect on a capture |
//! |---|---|---|
//! | `gro` | `rx-gro` | TCP/UDP segments of one flow merged into one large frame: fewer, bigger packets |
//! | `lro` | `rx-lro` | the same, done by the NIC (and lossy: headers of merged segments are gone) |
//! | `rx-gro-hw` | `rx-gro-hw` | hardware GRO, same effect |
//! | `rx-gro-list` | `rx-gro-list` | fraglist GRO, same effect |
//! | `rxvlan` | `rx-vlan-hw-parse` | the NIC removes 802.1Q tags; libpcap re-inserts them from packet metadata, AF_XDP frames lose them (VLANs merge) |
//! | `rx-vlan-stag-hw-parse` | `rx-vlan-stag-hw-parse` | the same for 802.1ad (QinQ) outer tags |
//! | `gso` / `tso` | `tx-generic-segmentation`, `tx-tcp-segmentation` | frames *sent* by this host are captured before segmentation, up to 64 KiB |
//! | `rx-fcs` | `rx-fcs` | the 4-byte FCS stays at the end of every frame |
//!
//! [`Offloads::read`] asks the kernel (`SIOCETHTOOL`: `ETHTOOL_GSSET_INFO` and
//! `ETHTOOL_GSTRINGS` for the feature names, `ETHTOOL_GFEATURES` for their state) and returns a
//! typed report that the probe logs and puts into result metadata; [`Offloads::fix_command`]
//! gives the `ethtool -K` line that turns the distorting ones off (see `doc/capture.md`). The
//! sources also count the symptom: frames longer than the MTU allows
//! ([`crate::source::SourceStats::over_mtu`]).
//!
//! `unsafe` here: the `ioctl(2)` calls, each with a `// SAFETY:` comment.

#![allow(unsafe_code)]

use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A NIC offload that matters to capture. See the module doc for what each one does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Offload {
    /// Generic receive offload.
    Gro,
    /// Large receive offload (NIC).
    Lro,
    /// Hardware GRO.
    GroHw,
    /// Fraglist GRO.
    GroList,
    /// 802.1Q tag stripping on receive.
    RxVlanStrip,
    /// 802.1ad tag stripping on receive.
    RxVlanStagStrip,
    /// Generic segmentation offload (sent traffic).
    Gso,
    /// TCP segmentation offload (sent traffic).
    Tso,
    /// The FCS is kept at the end of received frames.
    RxFcs,
}

impl Offload {
    /// Every offload this module reports, in report order.
    pub const ALL: [Offload; 9] = [
        Offload::Gro,
        Offload::Lro,
        Offload::GroHw,
        Offload::GroList,
        Offload::RxVlanStrip,
        Offload::RxVlanStagStrip,
        Offload::Gso,
        Offload::Tso,
        Offload::RxFcs,
    ];

    /// The kernel's feature name (`ethtool -k` shows it indented under the short name).
    pub fn kernel_name(self) -> &'static str {
        match self {
            Offload::Gro => "rx-gro",
            Offload::Lro => "rx-lro",
            Offload::GroHw => "rx-gro-hw",
            Offload::GroList => "rx-gro-list",
            Offload::RxVlanStrip => "rx-vlan-hw-parse",
            Offload::RxVlanStagStrip => "rx-vlan-stag-hw-parse",
            Offload::Gso => "tx-generic-segmentation",
            Offload::Tso => "tx-tcp-segmentation",
            Offload::RxFcs => "rx-fcs",
        }
    }

    /// The name `ethtool -K IFACE NAME off` takes.
    pub fn ethtool_name(self) -> &'static str {
        match self {
            Offload::Gro => "gro",
            Offload::Lro => "lro",
            Offload::GroHw => "rx-gro-hw",
            Offload::GroList => "rx-gro-list",
            Offload::RxVlanStrip => "rxvlan",
            Offload::RxVlanStagStrip => "rx-vlan-stag-hw-parse",
            Offload::Gso => "gso",
            Offload::Tso => "tso",
            Offload::RxFcs => "rx-fcs",
        }
    }

    /// What it does to a capture, in one line.
    pub fn effect(self) -> &'static str {
        match self {
            Offload::Gro | Offload::GroHw | Offload::GroList => {
                "merges received segments into large frames (fewer, bigger packets)"
            }
            Offload::Lro => "the NIC merges received segments (headers of merged segments lost)",
            Offload::RxVlanStrip => {
                "the NIC strips 802.1Q tags (libpcap restores them, AF_XDP loses them)"
            }
            Offload::RxVlanStagStrip => {
                "the NIC strips 802.1ad tags (libpcap restores them, AF_XDP loses them)"
            }
            Offload::Gso | Offload::Tso => {
                "frames sent by this host are captured unsegmented (up to 64 KiB)"
            }
            Offload::RxFcs => "received frames keep their 4-byte FCS",
        }
    }
}

/// State of one offload on one interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureState {
    /// The offload is on.
    pub active: bool,
    /// The driver lets it be switched (`ethtool -k` shows `[fixed]` otherwise).
    pub changeable: bool,
}

/// The offloads of one interface that distort capture, as read from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offloads {
    /// The interface.
    pub iface: String,
    /// Its MTU.
    pub mtu: u32,
    /// State by [`Offload::ALL`] index; `None` if the driver does not know the feature.
    states: [Option<FeatureState>; Offload::ALL.len()],
}

/// Errors reading an interface's offloads.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HygieneError {
    /// The name cannot be an interface name (empty, too long, or with a NUL byte).
    #[error("bad interface name {0:?}")]
    BadName(String),
    /// No interface of that name in this network namespace.
    #[error("no interface {0} in this network namespace")]
    NoSuchInterface(String),
    /// The control socket could not be created.
    #[error("cannot open a control socket: {0}")]
    Socket(std::io::Error),
    /// An ioctl failed (e.g. the driver has no ethtool support).
    #[error("{what} on {iface}: {source}")]
    Ioctl {
        /// The interface.
        iface: String,
        /// The request that failed.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;
/// More features than any kernel has (6.18 has 64); bounds what we allocate for the names.
const MAX_FEATURES: u32 = 1024;

/// A control socket and the request for one interface.
struct Ctl {
    fd: OwnedFd,
    name: [libc::c_char; libc::IFNAMSIZ],
    iface: String,
}

impl Ctl {
    fn new(iface: &str) -> Result<Ctl, HygieneError> {
        if iface.is_empty() || iface.len() >= libc::IFNAMSIZ || iface.bytes().any(|b| b == 0) {
            return Err(HygieneError::BadName(iface.to_string()));
        }
        let mut name = [0 as libc::c_char; libc::IFNAMSIZ];
        for (d, s) in name.iter_mut().zip(iface.bytes()) {
            *d = s as libc::c_char;
        }
        // SAFETY: socket(2) with constant arguments; the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(HygieneError::Socket(std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a descriptor we just opened and own exclusively.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Ctl {
            fd,
            name,
            iface: iface.to_string(),
        })
    }

    fn err(&self, what: &'static str, e: std::io::Error) -> HygieneError {
        if e.raw_os_error() == Some(libc::ENODEV) {
            HygieneError::NoSuchInterface(self.iface.clone())
        } else {
            HygieneError::Ioctl {
                iface: self.iface.clone(),
                what,
                source: e,
            }
        }
    }

    /// `SIOCETHTOOL` with `data` as the command buffer (its first u32 is the command).
    fn ethtool(&self, what: &'static str, data: &mut [u32]) -> Result<(), HygieneError> {
        // SAFETY: an all-zero ifreq is a valid value (name bytes and a union of plain data).
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        req.ifr_name = self.name;
        req.ifr_ifru.ifru_data = data.as_mut_ptr().cast();
        // SAFETY: SIOCETHTOOL reads `req` (name + data pointer) and reads/writes the buffer
        // `data` points to, whose size the command's header fields (set by the caller from the
        // kernel's own counts) bound to `data.len()` u32 words; both outlive the call.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SIOCETHTOOL, &mut req) };
        if r < 0 {
            return Err(self.err(what, std::io::Error::last_os_error()));
        }
        Ok(())
    }

    fn mtu(&self) -> Result<u32, HygieneError> {
        // SAFETY: as above, an all-zero ifreq is valid.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        req.ifr_name = self.name;
        // SAFETY: SIOCGIFMTU reads the name and writes `ifru_mtu` inside `req`, which lives
        // across the call.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SIOCGIFMTU, &mut req) };
        if r < 0 {
            return Err(self.err("SIOCGIFMTU", std::io::Error::last_os_error()));
        }
        // SAFETY: SIOCGIFMTU succeeded, so the kernel wrote the `ifru_mtu` member.
        let mtu = unsafe { req.ifr_ifru.ifru_mtu };
        Ok(mtu.max(0) as u32)
    }

    /// The names of the kernel's features, by bit index.
    fn feature_names(&self) -> Result<Vec<String>, HygieneError> {
        // struct ethtool_sset_info { u32 cmd; u32 reserved; u64 sset_mask; u32 data[1]; }
        let mut info = [0u32; 5];
        info[0] = ETHTOOL_GSSET_INFO;
        info[2] = 1 << ETH_SS_FEATURES;
        self.ethtool("ETHTOOL_GSSET_INFO", &mut info)?;
        let count = if info[2] & (1 << ETH_SS_FEATURES) != 0 {
            info[4].min(MAX_FEATURES)
        } else {
            0
        };
        // struct ethtool_gstrings { u32 cmd; u32 string_set; u32 len; u8 data[len * 32]; }
        let words = 3 + count as usize * ETH_GSTRING_LEN / 4;
        let mut buf = vec![0u32; words];
        buf[0] = ETHTOOL_GSTRINGS;
        buf[1] = ETH_SS_FEATURES;
        buf[2] = count;
        self.ethtool("ETHTOOL_GSTRINGS", &mut buf)?;
        let n = buf[2].min(count) as usize;
        let bytes: Vec<u8> = buf[3..].iter().flat_map(|w| w.to_ne_bytes()).collect();
        Ok(bytes
            .chunks_exact(ETH_GSTRING_LEN)
            .take(n)
            .map(|s| {
                let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
                String::from_utf8_lossy(&s[..end]).into_owned()
            })
            .collect())
    }
}

/// The MTU of `iface` (in this network namespace).
pub fn mtu(iface: &str) -> Result<u32, HygieneError> {
    Ctl::new(iface)?.mtu()
}

impl Offloads {
    /// Reads the offload state of `iface` from the kernel (no privileges needed).
    pub fn read(iface: &str) -> Result<Offloads, HygieneError> {
        let ctl = Ctl::new(iface)?;
        let mtu = ctl.mtu()?;
        let names = ctl.feature_names()?;
        let blocks = names.len().div_ceil(32);
        // struct ethtool_gfeatures { u32 cmd; u32 size; struct { u32 available, requested,
        // active, never_changed; } features[size]; }
        let mut buf = vec![0u32; 2 + 4 * blocks];
        buf[0] = ETHTOOL_GFEATURES;
        buf[1] = blocks as u32;
        ctl.ethtool("ETHTOOL_GFEATURES", &mut buf)?;
        let bit = |i: usize, field: usize| buf[2 + 4 * (i / 32) + field] >> (i % 32) & 1 != 0;
        let mut states = [None; Offload::ALL.len()];
        for (slot, o) in states.iter_mut().zip(Offload::ALL) {
            *slot = names
                .iter()
                .position(|n| n == o.kernel_name())
                .map(|i| FeatureState {
                    active: bit(i, 2),
                    changeable: bit(i, 0) && !bit(i, 3),
                });
        }
        Ok(Offloads {
            iface: iface.to_string(),
            mtu,
            states,
        })
    }

    /// The state of one offload, `None` if the driver does not have it.
    pub fn get(&self, o: Offload) -> Option<FeatureState> {
        Offload::ALL
            .iter()
            .position(|&x| x == o)
            .and_then(|i| self.states[i])
    }

    /// Every offload that is on, with its state.
    pub fn active(&self) -> impl Iterator<Item = (Offload, FeatureState)> + '_ {
        Offload::ALL
            .into_iter()
            .zip(self.states)
            .filter_map(|(o, s)| s.filter(|s| s.active).map(|s| (o, s)))
    }

    /// `true` if nothing that distorts receive-side capture is on (GRO in all forms, LRO, VLAN
    /// stripping, FCS). GSO/TSO only affect frames this host sends and are not counted here.
    pub fn receive_clean(&self) -> bool {
        self.active()
            .all(|(o, _)| matches!(o, Offload::Gso | Offload::Tso))
    }

    /// The command that turns every active, changeable offload off, `None` if there is none.
    pub fn fix_command(&self) -> Option<String> {
        let mut cmd = format!("ethtool -K {}", self.iface);
        let mut any = false;
        for (o, s) in self.active() {
            if s.changeable {
                cmd.push(' ');
                cmd.push_str(o.ethtool_name());
                cmd.push_str(" off");
                any = true;
            }
        }
        any.then_some(cmd)
    }

    /// One warning line per active offload (what it does, and whether it can be turned off).
    pub fn warnings(&self) -> Vec<String> {
        self.active()
            .map(|(o, s)| {
                format!(
                    "{}: {} is on: {}{}",
                    self.iface,
                    o.ethtool_name(),
                    o.effect(),
                    if s.changeable {
                        ""
                    } else {
                        " (fixed by the driver)"
                    }
                )
            })
            .collect()
    }

    /// `(ethtool name, on)` pairs for every offload the driver knows, for result metadata.
    pub fn pairs(&self) -> Vec<(&'static str, bool)> {
        Offload::ALL
            .into_iter()
            .zip(self.states)
            .filter_map(|(o, s)| s.map(|s| (o.ethtool_name(), s.active)))
            .collect()
    }
}

impl fmt::Display for Offloads {
    /// `eth1: mtu 1500, gro on, lro off [fixed], rxvlan on, ...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: mtu {}", self.iface, self.mtu)?;
        for (o, s) in Offload::ALL.into_iter().zip(self.states) {
            if let Some(s) = s {
                write!(
                    f,
                    ", {} {}{}",
                    o.ethtool_name(),
                    if s.active { "on" } else { "off" },
                    if s.changeable { "" } else { " [fixed]" }
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_reads_and_bad_names_are_typed_errors() {
        let lo = Offloads::read("lo").unwrap();
        assert_eq!(lo.iface, "lo");
        assert!(lo.mtu >= 1500);
        assert!(lo.get(Offload::Gro).is_some(), "{lo}");
        assert!(lo.to_string().starts_with("lo: mtu "));
        assert!(matches!(
            Offloads::read("no-such-if0"),
            Err(HygieneError::NoSuchInterface(_))
        ));
        assert!(matches!(
            Offloads::read("a-name-that-is-far-too-long"),
            Err(HygieneError::BadName(_))
        ));
        assert!(matches!(Offloads::read(""), Err(HygieneError::BadName(_))));
        assert!(mtu("lo").unwrap() >= 1500);
    }
}
