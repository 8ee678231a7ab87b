//! # mplane-capture — the data plane's first half
//!
//! Packets from pcap files, live interfaces (libpcap) or AF_XDP sockets (feature `xdp`) reach
//! pinned per-core workers with a one-pass [`packet::Dissection`], and every drop is counted.
//! Mapped files and AF_XDP UMEM frames are lent to the workers as borrowed slices (no copy);
//! a libpcap frame, gone at the next read, is copied into the pipeline's batches.
//!
//! ```text
//!  source ──► frame ──► dissect ──► FlowKey worker hash ──► SPSC ring ──► Worker::packet
//!  (mmap'd pcap/pcapng,   (record      (packet::dissect)   (flow::FlowKey)   (per pair of     (your flow
//!   libpcap live,          headers)                                           threads)          table)
//!   AF_XDP UMEM)
//! ```
//!
//! - [`packet`]: zero-copy views (one file per protocol) and [`packet::dissect()`], which fills a
//!   fixed-size [`packet::Dissection`]; never panics, never allocates; lax on truncated frames.
//! - [`flow`]: the canonical [`flow::FlowKey`] (both directions → one key + a
//!   [`flow::Direction`]) and the symmetric hashes; the worker is chosen by address pair so that
//!   fragments and ICMP errors land with their flow.
//! - [`source`]: [`source::pcap::PcapFile`] (memory-mapped pcap/pcapng), `source::live`
//!   (libpcap, feature `live`, on by default; several interfaces merged into one time-ordered
//!   stream, optional duplicate suppression for SPAN ports), [`source::SourceSpec`] (`pcap:`,
//!   `pcap-live:`, `xdp:`), and [`source::SourceStats`], what a source counts itself.
//!   `source::xdp` (feature `xdp`): AF_XDP, one socket per RX queue on a shared UMEM, our own
//!   XDP program (native mode, generic fallback; zero-copy bind, copy fallback), run with
//!   `Pipeline::run_xdp`.
//! - [`hygiene`]: which NIC offloads (GRO, LRO, VLAN stripping, TSO/GSO) distort the capture on
//!   an interface, read with the ethtool ioctl, and the `ethtool -K` line that turns them off
//!   (see `doc/capture.md`).
//! - [`pipeline`]: N threads (the caller's is worker 0) that frame, dissect, dispatch and run one
//!   [`pipeline::Worker`] each; watermarks identical for any worker count; clean drain.
//! - [`counters`]: per-stage atomics and a [`counters::CountersSnapshot`].
//! - [`builder`]: a packet builder and pcap/pcapng writers for tests (here and in the probe).
//!
//! Invariants: no `unsafe` outside the modules that talk to the OS (`source::mmap`,
//! `source::live`, `source::xdp`, `pipeline::affinity`, `hygiene`), each block with a
//! `// SAFETY:` comment; no allocation
//! or lock per packet on the data path; typed errors (`thiserror`); parse errors are `Copy` values
//! that index counters.
//!
//! # Example: a file through two workers
//!
//! ```
//! use mplane_capture::builder::{Builder, PcapWriter};
//! use mplane_capture::flow::FlowKey;
//! use mplane_capture::packet::{Dissection, LinkType};
//! use mplane_capture::pipeline::{Pipeline, PipelineConfig, Worker};
//! use mplane_capture::source::{PacketRef, pcap::PcapFile};
//!
//! // A capture with a few UDP packets in both directions.
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("t.pcap");
//! let mut w = PcapWriter::new(std::fs::File::create(&path)?, LinkType::ETHERNET, 65535, true, false)?;
//! for i in 0..10u16 {
//!     let f = if i % 2 == 0 {
//!         Builder::ethernet().ipv4([10, 0, 0, 1], [10, 0, 0, 2]).udp(5000 + i, 53).build()
//!     } else {
//!         Builder::ethernet().ipv4([10, 0, 0, 2], [10, 0, 0, 1]).udp(53, 5000 + i - 1).build()
//!     };
//!     w.write(1_700_000_000_000_000_000 + u64::from(i), &f, f.len() as u32)?;
//! }
//! drop(w);
//!
//! /// A worker sees both directions of its flows, in capture order.
//! #[derive(Default)]
//! struct Flows(std::collections::HashMap<FlowKey, u64>);
//! impl Worker for Flows {
//!     fn packet(&mut self, _pkt: &PacketRef<'_>, d: &Dissection) {
//!         if let Some((key, _direction)) = FlowKey::from_dissection(d) {
//!             *self.0.entry(key).or_default() += 1;
//!         }
//!     }
//!     fn watermark(&mut self, _ts_ns: u64) {} // expire idle flows here
//!     fn finish(&mut self) {}                 // flush everything here
//! }
//!
//! let pipeline = Pipeline::new(PipelineConfig { workers: 2, ..PipelineConfig::default() });
//! let mut workers = vec![Flows::default(), Flows::default()];
//! pipeline.run_file(PcapFile::open(&path)?, &mut workers)?;
//! let flows: usize = workers.iter().map(|w| w.0.len()).sum();
//! assert_eq!(flows, 5); // request and reply of each exchange share one key
//! assert_eq!(pipeline.counters().snapshot().packets, 10);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod builder;
pub mod counters;
pub mod flow;
pub mod hygiene;
pub mod packet;
pub mod pipeline;
pub mod source;
