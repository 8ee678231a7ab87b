//! The export thread: Parquet encoding off the data plane's cores.
//!
//! Workers hand [`RecordBatch`]es to a [`SinkHandle`] (cheap to clone); a
//! bounded crossbeam channel carries them to one [`ExportThread`] that owns
//! the job's [`Sink`]. Two submit modes:
//!
//! * [`SinkHandle::send_blocking`] — replay of a capture file: back-pressure,
//!   never drops;
//! * [`SinkHandle::try_send`] — live capture: never blocks a worker; when the
//!   queue (of [`ExportThread::spawn`]'s `queue_batches` batches) is full the
//!   batch is dropped and its rows are counted in
//!   [`StatsSnapshot::rows_dropped`](crate::StatsSnapshot) and in the next
//!   file's `mplane.drops` under [`DROP_KEY_EXPORT_QUEUE`](crate::sink::DROP_KEY_EXPORT_QUEUE).
//!
//! Errors on the thread (disk full, unwritable directory) are counted, the
//! first few kept for [`SinkReport::errors`], and writing goes on with a new
//! file at the next batch.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use arrow_array::RecordBatch;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};

use crate::ExportError;
use crate::parquet_writer::CommittedFile;
use crate::schema::ExportSchema;
use crate::sink::{MAX_KEPT_ERRORS, Sink, SinkConfig, SinkReport, SinkStats, StatsSnapshot};

enum Msg {
    Batch(RecordBatch),
    Rotate,
    Finish,
}

/// The producer side: submit batches to the export thread.
#[derive(Clone)]
pub struct SinkHandle {
    tx: Sender<Msg>,
    stats: Arc<SinkStats>,
    files: Arc<Mutex<Vec<CommittedFile>>>,
}

impl std::fmt::Debug for SinkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkHandle")
            .field("queued", &self.tx.len())
            .finish()
    }
}

impl SinkHandle {
    /// Queues a batch, waiting while the queue is full (replay mode).
    /// Fails only if the export thread has stopped.
    pub fn send_blocking(&self, batch: RecordBatch) -> Result<(), ExportError> {
        let rows = batch.num_rows() as u64;
        self.tx.send(Msg::Batch(batch)).map_err(|_| {
            self.stats.rows_dropped.fetch_add(rows, Ordering::Relaxed);
            ExportError::Closed
        })
    }

    /// Queues a batch if there is room, else drops it and counts its rows
    /// (live mode). Never blocks. Returns whether the batch was queued.
    pub fn try_send(&self, batch: RecordBatch) -> bool {
        let rows = batch.num_rows() as u64;
        match self.tx.try_send(Msg::Batch(batch)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.rows_dropped.fetch_add(rows, Ordering::Relaxed);
                false
            }
        }
    }

    /// Asks the thread to commit the current file after the batches queued
    /// before this call (e.g. at the end of a job's window).
    pub fn rotate(&self) -> Result<(), ExportError> {
        self.tx.send(Msg::Rotate).map_err(|_| ExportError::Closed)
    }

    /// The live counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// The counters themselves, for a reader that outlives this handle (metrics).
    pub fn shared_stats(&self) -> Arc<SinkStats> {
        self.stats.clone()
    }

    /// Files committed so far.
    pub fn files(&self) -> Vec<CommittedFile> {
        match self.files.lock() {
            Ok(f) => f.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Batches waiting in the queue.
    pub fn queued(&self) -> usize {
        self.tx.len()
    }
}

/// The thread that owns a job's [`Sink`].
#[derive(Debug)]
pub struct ExportThread {
    handle: SinkHandle,
    join: Option<JoinHandle<SinkReport>>,
}

/// How often an idle thread checks time-based rotation.
const IDLE_TICK: Duration = Duration::from_millis(500);
/// How often retention runs besides after each commit (so age-based
/// retention also happens while a job writes nothing).
const RETENTION_EVERY: Duration = Duration::from_secs(60);

impl ExportThread {
    /// Opens the sink (directory creation, stale `.tmp` cleanup, retention:
    /// errors are returned here, before any data flows) and starts the
    /// thread with a queue of `queue_batches` batches.
    pub fn spawn(
        cfg: SinkConfig,
        schema: Arc<ExportSchema>,
        queue_batches: usize,
    ) -> Result<ExportThread, ExportError> {
        let mut sink = Sink::open(cfg, schema)?;
        sink.apply_retention(SystemTime::now());
        let (tx, rx) = bounded(queue_batches.max(1));
        let handle = SinkHandle {
            tx,
            stats: sink.stats().clone(),
            files: sink.files().clone(),
        };
        let join = std::thread::Builder::new()
            .name("mplane-export".into())
            .spawn(move || run(sink, rx))
            .map_err(|e| ExportError::Io {
                op: "spawn",
                path: Default::default(),
                source: e,
            })?;
        Ok(ExportThread {
            handle,
            join: Some(join),
        })
    }

    /// A handle to submit batches (clone one per worker).
    pub fn handle(&self) -> SinkHandle {
        self.handle.clone()
    }

    /// Commits the current file after all batches queued so far, stops the
    /// thread and returns the report (committed files, counters, errors).
    /// Batches submitted after this are dropped and counted.
    pub fn finish(mut self) -> Result<SinkReport, ExportError> {
        // If the thread is already gone the send fails; join tells why.
        let _ = self.handle.tx.send(Msg::Finish);
        match self.join.take() {
            Some(j) => j.join().map_err(|_| ExportError::ThreadPanicked),
            None => Err(ExportError::Closed),
        }
    }
}

impl Drop for ExportThread {
    fn drop(&mut self) {
        if let Some(j) = self.join.take() {
            let _ = self.handle.tx.send(Msg::Finish);
            let _ = j.join();
        }
    }
}

fn run(mut sink: Sink, rx: Receiver<Msg>) -> SinkReport {
    let mut errors = Vec::new();
    let mut keep = |r: Result<(), ExportError>| {
        if let Err(e) = r
            && errors.len() < MAX_KEPT_ERRORS
        {
            errors.push(e);
        }
    };
    let mut last_retention = std::time::Instant::now();
    loop {
        if last_retention.elapsed() >= RETENTION_EVERY {
            sink.apply_retention(SystemTime::now());
            last_retention = std::time::Instant::now();
        }
        match rx.recv_timeout(IDLE_TICK) {
            Ok(Msg::Batch(b)) => keep(sink.write(&b, SystemTime::now())),
            Ok(Msg::Rotate) => keep(sink.rotate(SystemTime::now()).map(|_| ())),
            Ok(Msg::Finish) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => keep(sink.tick(SystemTime::now())),
        }
    }
    keep(sink.rotate(SystemTime::now()).map(|_| ()));
    // Batches still queued (sent after Finish) are dropped and counted.
    for m in rx.try_iter() {
        if let Msg::Batch(b) = m {
            sink.stats()
                .rows_dropped
                .fetch_add(b.num_rows() as u64, Ordering::Relaxed);
        }
    }
    drop(rx);
    let mut report = sink.report(errors);
    report.cpu = thread_cpu();
    report
}

/// CPU time of the calling thread so far (Linux: `/proc/thread-self/schedstat`; `None`
/// elsewhere).
pub fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}
