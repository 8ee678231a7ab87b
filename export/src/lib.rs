//! # mplane-export — results leave the probe as files
//!
//! mPlane result schemas map to Arrow schemas; record batches go to
//! atomically committed, self-describing Parquet files.
//!
//! ```text
//!  worker threads                 export thread                 directory
//!  record → ColumnsBuilder ─┐
//!  record → ColumnsBuilder ─┼─► SinkHandle ═bounded═► Sink ─► .x.parquet.tmp ─fsync,rename─► x.parquet
//!  record → ColumnsBuilder ─┘   (send_blocking | try_send)
//! ```
//!
//! * [`schema`]: an ordered list of result elements (from a
//!   [`Registry`](mplane::registry::Registry)) becomes an [`ExportSchema`]:
//!   column names with `.` → `_`, one nullable Arrow field per element,
//!   field metadata `mplane.element` / `mplane.prim`.
//! * [`builder`]: [`ColumnsBuilder`] has one appender per primitive; the
//!   owner of a record type writes the record → row function on it.
//! * [`metadata`]: [`FileMetadata`] becomes explicit Parquet footer
//!   key-value entries, the only metadata every reader (DuckDB included)
//!   sees: `mplane.elements`, `mplane.columns`, `mplane.registry`,
//!   `mplane.specification`, `mplane.identity`, `mplane.drops`,
//!   `mplane.window`, `mplane.writer`.
//! * [`parquet_writer`]: one file, ZSTD-compressed, committed atomically.
//! * [`sink`]: a job's file set — rotation by size, rows and age, optional
//!   hive partitioning, retention by age and quota, crash cleanup.
//! * [`thread`]: [`ExportThread`] runs a sink on its own thread fed by a
//!   bounded channel through [`SinkHandle`]s.
//! * [`ipfix`]: an IPFIX (RFC 7011) encoder with RFC 5103 biflow elements,
//!   UDP and TCP exporters, and a decoder.
//!
//! # Invariants
//! * **Atomic commit.** A file appears under its final `*.parquet` name only
//!   once complete (footer written, file and directory fsynced). Until then
//!   it is a hidden `.<name>.tmp` in the same directory. Errors remove the
//!   temporary file; startup removes those left by a crash.
//! * **No visible corruption on a full disk.** ENOSPC becomes
//!   [`ExportError::DiskFull`]; the partial file is removed.
//! * **Retention never touches a file being written**: only committed files
//!   are candidates, oldest first.
//! * **No silent loss.** Rows dropped by [`SinkHandle::try_send`] or lost in
//!   aborted files are counted in [`SinkStats`] and written to the next
//!   file's `mplane.drops`.
//!
//! Times are `Timestamp(Nanosecond, "UTC")` throughout; compression is
//! always ZSTD (arrow-rs would otherwise write uncompressed files).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod builder;
mod error;
pub mod ipfix;
pub mod metadata;
pub mod parquet_writer;
pub mod schema;
pub mod sink;
pub mod thread;

pub use builder::ColumnsBuilder;
pub use error::ExportError;
pub use metadata::{FileMetadata, Window};
pub use parquet_writer::{CommittedFile, DictionaryPolicy, Statistics, WriterOptions};
pub use schema::ExportSchema;
pub use sink::{Partitioning, Retention, Sink, SinkConfig, SinkReport, SinkStats, StatsSnapshot};
pub use thread::{ExportThread, SinkHandle};

/// The Arrow array crate this API is built on (for [`RecordBatch`](arrow_array::RecordBatch)).
pub use arrow_array;
/// The Arrow schema crate this API is built on.
pub use arrow_schema;
/// The Parquet crate used for files (for readers in tests and tools).
pub use parquet;
