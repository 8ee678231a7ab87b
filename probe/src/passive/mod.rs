//! Passive measurement: per-worker flow metering on the capture pipeline.
//!
//! ```text
//!  capture pipeline ──► FlowMeter (one per worker, a capture `Worker`)
//!                          ├─ FlowTable: open addressing, preallocated slots, timer wheel
//!                          ├─ tcp: handshake, sequence analysis, RTT samples
//!                          ├─ app: DNS / TLS SNI / HTTP Host / QUIC SNI
//!                          └─ RecordSink ◄── FlowRecord (+ application string)
//! ```
//!
//! - [`record`]: [`record::FlowRecord`], bidirectional and oriented initiator → responder.
//! - [`meter`]: [`meter::FlowMeter`], timeouts on packet time, window cuts, eviction.
//! - [`table`]: the bounded flow table and its timer wheel.
//! - [`tcp`]: TCP analysis per segment.
//! - [`app`]: application metadata, each extraction switchable off.
//! - [`arena`]: the bounded string arena and reassembly buffers.
//! - [`columns`]: flow record fields by element name, for files and mPlane results.
//! - [`filter`]: flow filters in pcap-filter syntax, evaluated on records.
//! - [`hugepage`]: transparent huge pages for the table's arrays.
//! - [`iface`]: interface statistics (protocols, size and inter-arrival histograms, per second).
//! - [`ipfix`]: records as IPFIX biflows or uniflows to a collector.
//! - [`export`]: records → Arrow batches → the Parquet export thread.
//! - [`hub`]: the shared live pipeline of a source and the jobs subscribed to it.
//! - [`source`]: live sources, and capture files replayed at their own pace.
//! - [`replay`]: a capture file through pipeline and meters into Parquet (`mpcom replay`).

pub mod app;
pub mod arena;
pub mod columns;
pub mod export;
pub mod filter;
pub mod hub;
pub mod hugepage;
pub mod iface;
pub mod ipfix;
pub mod meter;
pub mod metrics;
pub mod record;
pub mod replay;
pub mod source;
pub mod table;
pub mod tcp;

/// Bytes of a capture file kept mapped behind (and read ahead of) its reader, by `mpcom
/// replay` and by a paced file source, instead of capture's 64 MiB default. Mapped pages count
/// in resident memory, up to about three windows of them: 4 MiB keeps ~7 MiB fewer than 8 MiB
/// on the reference workload (one-worker replay: 82–83 against 88–90 MiB peak), in the same
/// time (bench/README.md, Passive); a paced file is read at its capture's own rate, so a small
/// window costs it nothing.
pub(crate) const FILE_WINDOW: usize = 4 << 20;
