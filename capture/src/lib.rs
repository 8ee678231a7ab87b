//! # mplane-capture — the data plane's first half
//!
//! Packets from pcap files, live interfaces (libpcap) or AF_XDP reach pinned per-core workers as
//! borrowed slices, with every drop counted.
//!
//! ```text
//!  source (mmap'd pcap/pcapng file, ...)          packet::dissect        flow::FlowKey
//!   └─ borrowed &[u8] + ns timestamp ─► one-pass Dissection ─► symmetric hash ─► worker
//! ```
//!
//! - [`packet`]: zero-copy views (one file per protocol) and [`packet::dissect()`], which fills a
//!   fixed-size [`packet::Dissection`]; never panics, never allocates.
//! - [`builder`]: a packet builder and pcap/pcapng writers for tests (here and in the probe).
//!
//! Invariants: no `unsafe` outside the modules that must talk to the OS (memory mapping, CPU
//! affinity), each block with a `// SAFETY:` comment; no allocation or lock per packet on the data
//! path; errors are typed (`thiserror`), and parse errors are `Copy` values that index counters.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod builder;
pub mod counters;
pub mod flow;
pub mod packet;
pub mod pipeline;
pub mod source;
