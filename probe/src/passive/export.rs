//! Flow records into Parquet: a [`RecordSink`] that builds Arrow batches on the worker and
//! hands them to an `mplane-export` [`ExportThread`](mplane_export::ExportThread).
//!
//! The worker appends each record to its own [`ColumnsBuilder`] (no allocation until a batch
//! is finished); a full batch goes to the export thread, which encodes and writes Parquet off
//! the worker's core. Replay hands batches over with back-pressure (a slow disk holds the
//! reader back, nothing is dropped); live capture never blocks: a batch that finds the queue
//! full is dropped and its rows counted, and a batch is also handed over once it is older than
//! [`ParquetRecords::max_delay`] so files keep up with a quiet link.

use std::sync::Arc;

use mplane_export::{ColumnsBuilder, ExportSchema, SinkHandle};

use super::columns::{ColumnContext, FlowColumns};
use super::meter::RecordSink;
use super::record::FlowRecord;

/// Rows per Arrow batch handed to the export thread.
pub const BATCH_ROWS: usize = 8192;

/// How batches reach the export thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Wait while the queue is full (replay: never drops).
    Blocking,
    /// Drop and count when the queue is full (live capture: never blocks a worker).
    Lossy,
}

/// Records → Arrow batches → export thread. See the module doc.
#[derive(Debug)]
pub struct ParquetRecords {
    builder: ColumnsBuilder,
    cols: FlowColumns,
    ctx: Arc<ColumnContext>,
    handle: SinkHandle,
    delivery: Delivery,
    /// Oldest row of the open batch (packet time, ns).
    batch_since: Option<u64>,
    /// A batch is handed over once its first row is this old (packet time), ns.
    pub max_delay: u64,
    /// Records taken.
    pub records: u64,
    /// Records lost to builder errors (never expected: the columns are checked against the
    /// schema at construction).
    pub build_errors: u64,
    /// Earliest packet time seen in a record.
    pub first_ns: u64,
    /// Latest packet time seen in a record.
    pub last_ns: u64,
}

/// Errors setting up a [`ParquetRecords`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParquetRecordsError {
    /// The schema's elements are not flow columns.
    #[error(transparent)]
    Columns(#[from] super::columns::ColumnError),
}

impl ParquetRecords {
    /// A sink building batches of `schema` (whose elements must all be flow columns).
    pub fn new(
        schema: Arc<ExportSchema>,
        ctx: Arc<ColumnContext>,
        handle: SinkHandle,
        delivery: Delivery,
    ) -> Result<Self, ParquetRecordsError> {
        let elements: Vec<&str> = schema.element_names().collect();
        let cols = FlowColumns::new(&elements)?;
        Ok(ParquetRecords {
            builder: ColumnsBuilder::new(schema, BATCH_ROWS),
            cols,
            ctx,
            handle,
            delivery,
            batch_since: None,
            max_delay: 10_000_000_000,
            records: 0,
            build_errors: 0,
            first_ns: u64::MAX,
            last_ns: 0,
        })
    }

    fn hand_over(&mut self) {
        if self.builder.is_empty() {
            return;
        }
        self.batch_since = None;
        match self.builder.finish() {
            Ok(batch) => match self.delivery {
                Delivery::Blocking => {
                    // fails only when the export thread stopped; its rows are counted there
                    let _ = self.handle.send_blocking(batch);
                }
                Delivery::Lossy => {
                    let _ = self.handle.try_send(batch);
                }
            },
            Err(_) => self.build_errors += 1,
        }
    }
}

impl RecordSink for ParquetRecords {
    fn record(&mut self, rec: &FlowRecord, name: &[u8]) {
        self.records += 1;
        self.first_ns = self.first_ns.min(rec.first_ns());
        self.last_ns = self.last_ns.max(rec.last_ns());
        if self.batch_since.is_none() {
            self.batch_since = Some(rec.last_ns());
        }
        if self
            .cols
            .append(&mut self.builder, rec, name, &self.ctx)
            .is_err()
        {
            // a half-appended row would misalign the columns: drop the batch
            self.build_errors += self.builder.len() as u64;
            let _ = self.builder.finish();
            return;
        }
        if self.builder.len() >= BATCH_ROWS {
            self.hand_over();
        }
    }

    fn flush(&mut self, watermark_ns: u64) {
        if self.delivery == Delivery::Lossy
            && let Some(since) = self.batch_since
            && watermark_ns.saturating_sub(since) >= self.max_delay
        {
            self.hand_over();
        }
    }

    fn finish(&mut self) {
        self.hand_over();
    }
}
