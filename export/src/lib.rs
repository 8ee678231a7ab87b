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
//! * [`encode`]: the column encoder that writes those files' column chunks
//!   straight from Arrow arrays.
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
//! # Example
//! A job's export thread; workers build batches and submit them; the job's
//! result lists the committed files.
//!
//! ```
//! use std::net::IpAddr;
//! use std::sync::Arc;
//! use mplane::registry::Registries;
//! use mplane_export::{ColumnsBuilder, ExportSchema, ExportThread, FileMetadata, SinkConfig};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let core = Registries::core();
//! let schema = Arc::new(ExportSchema::from_registry(&core, &["start", "source.ip4", "octets.ip"])?);
//! let mut cfg = SinkConfig::new(dir.path(), "job-42");
//! cfg.metadata = FileMetadata {
//!     specification: Some(r#"{"specification": "flows"}"#.into()),
//!     identity: Some("probe-1".into()),
//!     ..FileMetadata::default()
//! };
//! let export = ExportThread::spawn(cfg, schema.clone(), 64)?;
//! let sink = export.handle(); // clone one per worker
//!
//! let mut b = ColumnsBuilder::new(schema, 8192);
//! for i in 0..1000u64 {
//!     b.append_time_ns(0, 1_700_000_000_000_000_000 + i as i64)?;
//!     b.append_addr(1, IpAddr::from([192, 0, 2, (i % 256) as u8]))?;
//!     b.append_u64(2, 40 * i)?;
//! }
//! sink.send_blocking(b.finish()?)?; // replay; `try_send` for live capture
//!
//! let report = export.finish()?;
//! assert_eq!(report.files.len(), 1);
//! assert_eq!(report.files[0].rows, 1000);
//! assert!(report.files[0].path.extension().is_some_and(|e| e == "parquet"));
//! # Ok::<(), mplane_export::ExportError>(())
//! ```
//!
//! Times are `Timestamp(Nanosecond, "UTC")` throughout; compression is
//! always ZSTD (arrow-rs would otherwise write uncompressed files).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// Compiles the function it wraps for x86-64-v3 (AVX2, BMI2, LZCNT) and x86-64-v2 (SSE4.2,
/// POPCNT) besides the build's baseline; the first call picks the best version the CPU runs
/// (CPUID, once), later calls go straight to it. For loops over every value of a column (the
/// encoder's, and a record type's column builders): a generic build then runs them as fast as
/// a `-C target-cpu=native` one and still starts on any x86-64 CPU. The function cannot take
/// `self`; generic ones are dispatched by a direct call, others through a function pointer.
/// The crate that uses it depends on `multiversion` (the code it generates names that crate).
///
/// ```
/// mplane_export::dispatched! {
///     /// The sum of `values`.
///     fn total(values: &[u64]) -> u64 {
///         values.iter().sum()
///     }
/// }
/// assert_eq!(total(&[1, 2, 3]), 6);
/// ```
#[macro_export]
macro_rules! dispatched {
    ($item:item) => {
        #[::multiversion::multiversion(targets(
            "x86_64+avx+avx2+bmi1+bmi2+fma+lzcnt+popcnt+sse3+ssse3+sse4.1+sse4.2",
            "x86_64+popcnt+sse3+ssse3+sse4.1+sse4.2",
        ))]
        $item
    };
}

pub mod builder;
pub mod encode;
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
pub use parquet_writer::{CommittedFile, DictionaryPolicy, FileFormat, Statistics, WriterOptions};
pub use schema::ExportSchema;
pub use sink::{Partitioning, Retention, Sink, SinkConfig, SinkReport, SinkStats, StatsSnapshot};
pub use thread::{ExportThread, SinkHandle};

/// The Arrow array crate this API is built on (for [`RecordBatch`](arrow_array::RecordBatch)).
pub use arrow_array;
/// The Arrow buffer crate under [`arrow_array`] (to build arrays from their buffers).
pub use arrow_buffer;
/// The Arrow schema crate this API is built on.
pub use arrow_schema;
/// The Parquet crate used for files (for readers in tests and tools).
pub use parquet;
