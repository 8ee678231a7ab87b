//! # mplane-capture — the data plane's first half
//!
//! Packets from pcap files, live interfaces (libpcap) or AF_XDP reach pinned
//! per-core workers as borrowed slices, with every drop counted.
#![warn(missing_docs)]
