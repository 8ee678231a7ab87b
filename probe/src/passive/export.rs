//! Flow records into Parquet: a [`RecordSink`] that builds Arrow batches on the worker and
//! hands them to an `mplane-export` [`ExportThread`](mplane_export::ExportThread).
//!
//! The worker keeps each record in a preallocated buffer; a full buffer becomes one Arrow batch,
//! built column by column ([`FlowColumns::record_batch`]), and goes to the export thread, which
//! encodes and writes Parquet off the worker's core. Replay hands batches over with back-pressure (a slow disk holds the
//! reader back, nothing is dropped); live capture never blocks: a batch that finds the queue
//! full is dropped and its rows counted, and a batch is also handed over once it is older than
//! [`ParquetRecords::max_delay`] so files keep up with a quiet link.

use std::sync::Arc;

use mplane_export::{ExportSchema, SinkHandle};

use super::columns::{ColumnContext, FlowColumns};
use super::meter::RecordSink;
use super::record::{FlowRecord, StrRef};

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
    schema: Arc<ExportSchema>,
    recs: Vec<FlowRecord>,
    names: Vec<u8>,
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
    /// Records lost to batch errors (never expected: the columns are checked against the
    /// schema at construction and by the tests).
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
            schema,
            recs: Vec::with_capacity(BATCH_ROWS),
            names: Vec::with_capacity(BATCH_ROWS * 32),
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
        if self.recs.is_empty() {
            return;
        }
        self.batch_since = None;
        let built = self
            .cols
            .record_batch(&self.schema, &self.recs, &self.names, &self.ctx);
        let n = self.recs.len() as u64;
        self.recs.clear();
        self.names.clear();
        match built {
            Ok(batch) => match self.delivery {
                Delivery::Blocking => {
                    // fails only when the export thread stopped; its rows are counted there
                    let _ = self.handle.send_blocking(batch);
                }
                Delivery::Lossy => {
                    let _ = self.handle.try_send(batch);
                }
            },
            Err(_) => self.build_errors += n,
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
        let mut r = *rec;
        r.app.name = StrRef::append(&mut self.names, name);
        self.recs.push(r);
        if self.recs.len() >= BATCH_ROWS {
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
