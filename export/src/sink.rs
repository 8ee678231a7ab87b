//! The Parquet sink of one export job: a set of files in one directory.
//!
//! A [`Sink`] is plain synchronous code with the current time passed in
//! (`now`), so tests step a fake clock; [`crate::ExportThread`] runs one on
//! its own thread.
//!
//! * **Naming.** Files are `<prefix>-<YYYYMMDD>T<HHMMSS>.<µs>Z-<seq>.parquet`
//!   (the time the file was opened, UTC, or the data time of its first row
//!   with [`SinkConfig::time_column`]). One sink owns one
//!   `(directory, prefix)` pair: two sinks must not share both. Sinks whose
//!   prefixes overlap (`job`, `job-2`) may share a directory: cleanup and
//!   retention match the full name shape ([`is_own_file`]).
//! * **Partitioning.** With [`Partitioning::Hive`], files go to
//!   `probe=<id>/date=YYYY-MM-DD/hour=HH/` below the directory (by the time
//!   the file was opened, or by data time with [`SinkConfig::time_column`]),
//!   and a file is rotated when the hour changes (a batch is not split at
//!   the hour: it goes to the hour of its first row), so
//!   DuckDB `read_parquet('dir/**/*.parquet', hive_partitioning=true)` reads
//!   the directory as one table with `probe`, `date` and `hour` columns.
//! * **Rotation.** A file is committed when its estimated size reaches
//!   [`SinkConfig::max_file_bytes`], its rows reach
//!   [`SinkConfig::max_file_rows`], or it has been open for
//!   [`SinkConfig::max_file_age`].
//! * **Retention.** After each commit (at startup, and every minute on the
//!   export thread), committed files of
//!   this prefix older than [`Retention::max_age`] are removed, then the
//!   oldest are removed while the total (including the file being written)
//!   exceeds [`Retention::max_bytes`]. Only committed files are candidates:
//!   the file being written is a hidden `.tmp` and is never touched.
//! * **Crash recovery.** [`Sink::open`] removes `.<prefix>-*.parquet.tmp`
//!   files left behind by a crash.
//! * **Drops.** Each file's `mplane.drops` holds the data-plane drop
//!   counters ([`SinkConfig::drop_counters`]) and the rows the export itself
//!   dropped ([`DROP_KEY_EXPORT_QUEUE`]) or lost in aborted files
//!   ([`DROP_KEY_EXPORT_LOST`]) *since the previous file of
//!   the set was committed* (or since the sink opened), so no drop falls
//!   between two files; static counters from [`SinkConfig::metadata`] are
//!   added.
//! * **Errors.** A failed write or commit aborts the current file (its
//!   temporary file is removed, its rows counted as lost), counts an error
//!   and returns it; the next batch starts a new file.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arrow_array::RecordBatch;

use crate::ExportError;
use crate::builder::system_time_ns;
use crate::metadata::{Civil, FileMetadata, Window};
use crate::parquet_writer::{CommittedFile, FileFormat, PendingFile, WriterOptions, sync_dir};
use crate::schema::ExportSchema;

/// Drop-counter key under which the sink records rows dropped before
/// reaching it (queue full in [`crate::SinkHandle::try_send`], sink stopped).
pub const DROP_KEY_EXPORT_QUEUE: &str = "export.queue_full";
/// Drop-counter key under which the sink records rows lost in files aborted
/// by an error (disk full, unwritable directory).
pub const DROP_KEY_EXPORT_LOST: &str = "export.lost";

/// Where files go below the sink's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Partitioning {
    /// All files directly in the directory.
    Flat,
    /// Hive-style `probe=<probe>/date=YYYY-MM-DD/hour=HH/`. Characters other
    /// than ASCII letters, digits, `-`, `_` and `.` in `probe` become `_`.
    Hive {
        /// The probe identifier used as the `probe` partition value.
        probe: String,
    },
}

/// Retention of committed files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    /// Remove committed files whose modification time is older than this.
    pub max_age: Option<Duration>,
    /// Keep the total size of this sink's files at or under this many bytes,
    /// removing the oldest committed files first.
    pub max_bytes: Option<u64>,
}

/// A function returning the current drop counters of the data plane
/// (`name → cumulative count`). The sink samples it when a file is opened
/// and when it is committed and writes the difference to the footer.
pub type DropCounters = Arc<dyn Fn() -> BTreeMap<String, u64> + Send + Sync>;

/// Configuration of one job's sink.
#[derive(Clone)]
pub struct SinkConfig {
    /// Root directory of the file set (created if missing).
    pub dir: PathBuf,
    /// File name prefix, e.g. the job's name. ASCII letters, digits, `-`,
    /// `_` and `.`; must not start with `.`.
    pub prefix: String,
    /// Directory layout.
    pub partitioning: Partitioning,
    /// Rotate when the file's estimated size reaches this. Default 256 MiB.
    pub max_file_bytes: u64,
    /// Rotate when the file holds this many rows. Default: no limit.
    pub max_file_rows: Option<u64>,
    /// Rotate when the file has been open this long. Default 15 min.
    pub max_file_age: Duration,
    /// Retention of committed files. Default: keep everything.
    pub retention: Retention,
    /// Encoding choices.
    pub writer: WriterOptions,
    /// Footer metadata written into every file.
    pub metadata: FileMetadata,
    /// Data-plane drop counters to sample per file.
    pub drop_counters: Option<DropCounters>,
    /// Element name of a `time` column that places rows in time (e.g.
    /// `start`). When set, hive partitions and file names follow the data
    /// time (a batch goes to the hour of its first row) instead of the wall
    /// clock, and a file's `mplane.window` is the min/max of that column:
    /// right for replays of old captures. Default: wall clock.
    pub time_column: Option<String>,
}

impl std::fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkConfig")
            .field("dir", &self.dir)
            .field("prefix", &self.prefix)
            .field("partitioning", &self.partitioning)
            .field("max_file_bytes", &self.max_file_bytes)
            .field("max_file_rows", &self.max_file_rows)
            .field("max_file_age", &self.max_file_age)
            .field("retention", &self.retention)
            .field("writer", &self.writer)
            .field("metadata", &self.metadata)
            .field("drop_counters", &self.drop_counters.is_some())
            .field("time_column", &self.time_column)
            .finish()
    }
}

impl SinkConfig {
    /// Defaults for a file set `prefix` in `dir`.
    pub fn new(dir: impl Into<PathBuf>, prefix: impl Into<String>) -> Self {
        SinkConfig {
            dir: dir.into(),
            prefix: prefix.into(),
            partitioning: Partitioning::Flat,
            max_file_bytes: 256 << 20,
            max_file_rows: None,
            max_file_age: Duration::from_secs(15 * 60),
            retention: Retention::default(),
            writer: WriterOptions::default(),
            metadata: FileMetadata::default(),
            drop_counters: None,
            time_column: None,
        }
    }
}

/// Counters of a sink, shared with its handles (relaxed atomics).
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Files committed.
    pub files_written: AtomicU64,
    /// Rows in committed files.
    pub rows_written: AtomicU64,
    /// Bytes of committed files.
    pub bytes_written: AtomicU64,
    /// Rows dropped before reaching the sink (queue full / sink stopped).
    pub rows_dropped: AtomicU64,
    /// Rows lost in files aborted by an error.
    pub rows_lost: AtomicU64,
    /// Write, commit and retention errors.
    pub errors: AtomicU64,
    /// Committed files removed by retention.
    pub files_removed: AtomicU64,
    /// Stale temporary files removed at startup.
    pub stale_tmp_removed: AtomicU64,
}

/// A copy of [`SinkStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Files committed.
    pub files_written: u64,
    /// Rows in committed files.
    pub rows_written: u64,
    /// Bytes of committed files.
    pub bytes_written: u64,
    /// Rows dropped before reaching the sink.
    pub rows_dropped: u64,
    /// Rows lost in aborted files.
    pub rows_lost: u64,
    /// Errors.
    pub errors: u64,
    /// Files removed by retention.
    pub files_removed: u64,
    /// Stale temporary files removed at startup.
    pub stale_tmp_removed: u64,
}

impl SinkStats {
    /// Reads all counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            files_written: r(&self.files_written),
            rows_written: r(&self.rows_written),
            bytes_written: r(&self.bytes_written),
            rows_dropped: r(&self.rows_dropped),
            rows_lost: r(&self.rows_lost),
            errors: r(&self.errors),
            files_removed: r(&self.files_removed),
            stale_tmp_removed: r(&self.stale_tmp_removed),
        }
    }
}

fn add(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

/// What a job gets back when its sink finishes.
#[derive(Debug, Default)]
pub struct SinkReport {
    /// Every committed file, in commit order (retention may have removed
    /// some since; see [`StatsSnapshot::files_removed`]).
    pub files: Vec<CommittedFile>,
    /// Final counters.
    pub stats: StatsSnapshot,
    /// The first errors met (at most [`MAX_KEPT_ERRORS`]); all are counted in
    /// [`StatsSnapshot::errors`].
    pub errors: Vec<ExportError>,
    /// CPU time of the export thread over its whole run (encoding, compression, writing),
    /// when the sink ran on one ([`crate::ExportThread`]) and the system tells (Linux).
    pub cpu: Option<std::time::Duration>,
}

/// How many errors a [`SinkReport`] keeps.
pub const MAX_KEPT_ERRORS: usize = 16;

struct OpenFile {
    file: PendingFile,
    opened_ns: i64,
    hour_key: (i64, u32, u32, u32),
    /// Min and max of the time column over the file's rows.
    data_span: Option<(i64, i64)>,
}

/// The sink of one job. See the module documentation.
pub struct Sink {
    cfg: SinkConfig,
    schema: Arc<ExportSchema>,
    format: FileFormat,
    probe_dir: Option<String>,
    current: Option<OpenFile>,
    files: Arc<Mutex<Vec<CommittedFile>>>,
    stats: Arc<SinkStats>,
    seq: u64,
    /// Data-plane drop counters at the previous commit (or at open).
    drops_base: BTreeMap<String, u64>,
    /// `rows_dropped` and `rows_lost` at the previous commit (or at open).
    dropped_base: (u64, u64),
    /// Index of [`SinkConfig::time_column`].
    time_col: Option<usize>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("dir", &self.cfg.dir)
            .field("prefix", &self.cfg.prefix)
            .field("open", &self.current.as_ref().map(|o| o.file.tmp()))
            .finish()
    }
}

fn valid_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

impl Sink {
    /// Validates the configuration, creates the directory, removes stale
    /// temporary files of this prefix and applies retention.
    pub fn open(cfg: SinkConfig, schema: Arc<ExportSchema>) -> Result<Sink, ExportError> {
        if cfg.prefix.is_empty()
            || cfg.prefix.starts_with('.')
            || !cfg.prefix.chars().all(valid_name_char)
        {
            return Err(ExportError::Config(format!(
                "file prefix {:?}: use ASCII letters, digits, '-', '_', '.' (not leading)",
                cfg.prefix
            )));
        }
        if cfg.max_file_bytes == 0 || cfg.max_file_rows == Some(0) {
            return Err(ExportError::Config(
                "file size limits must be positive".into(),
            ));
        }
        let probe_dir = match &cfg.partitioning {
            Partitioning::Flat => None,
            Partitioning::Hive { probe } => {
                for c in schema.columns() {
                    if matches!(c.name.as_str(), "probe" | "date" | "hour") {
                        return Err(ExportError::Config(format!(
                            "column {:?} clashes with a hive partition column",
                            c.name
                        )));
                    }
                }
                let id: String = probe
                    .chars()
                    .map(|c| if valid_name_char(c) { c } else { '_' })
                    .collect();
                Some(format!("probe={}", if id.is_empty() { "_" } else { &id }))
            }
        };
        let format = cfg.writer.format(&schema)?;
        let time_col = match &cfg.time_column {
            None => None,
            Some(e) => match schema.index_of(e) {
                Some(i) if schema.columns()[i].prim == mplane::registry::Primitive::Time => Some(i),
                _ => {
                    return Err(ExportError::Config(format!(
                        "time column {e:?} is not a time column of the schema"
                    )));
                }
            },
        };
        fs::create_dir_all(&cfg.dir).map_err(|e| {
            match ExportError::from_io("mkdir", &cfg.dir, e) {
                ExportError::Io { path, source, .. } => ExportError::NotWritable { path, source },
                other => other,
            }
        })?;
        let sink = Sink {
            cfg,
            schema,
            format,
            probe_dir,
            current: None,
            files: Arc::new(Mutex::new(Vec::new())),
            stats: Arc::new(SinkStats::default()),
            seq: 0,
            drops_base: BTreeMap::new(),
            dropped_base: (0, 0),
            time_col,
        };
        let mut sink = sink;
        sink.drops_base = sink
            .cfg
            .drop_counters
            .as_ref()
            .map(|f| f())
            .unwrap_or_default();
        let removed = remove_stale_tmp(&sink.cfg.dir, &sink.cfg.prefix);
        add(&sink.stats.stale_tmp_removed, removed);
        Ok(sink)
    }

    /// The shared counters.
    pub fn stats(&self) -> &Arc<SinkStats> {
        &self.stats
    }

    /// The shared list of committed files (appended at each commit).
    pub fn files(&self) -> &Arc<Mutex<Vec<CommittedFile>>> {
        &self.files
    }

    /// The schema every batch must have.
    pub fn schema(&self) -> &Arc<ExportSchema> {
        &self.schema
    }

    /// The temporary path of the file being written, if any.
    pub fn current_tmp(&self) -> Option<&Path> {
        self.current.as_ref().map(|o| o.file.tmp())
    }

    fn check_schema(&self, batch: &RecordBatch) -> Result<(), ExportError> {
        let want = self.schema.arrow().fields();
        let got = batch.schema_ref().fields();
        if want.len() != got.len()
            || want
                .iter()
                .zip(got.iter())
                .any(|(a, b)| a.name() != b.name() || a.data_type() != b.data_type())
        {
            return Err(ExportError::SchemaMismatch);
        }
        Ok(())
    }

    /// Writes a batch, opening or rotating files as needed. With
    /// [`SinkConfig::max_file_rows`] the batch is split (zero-copy) so that
    /// no file exceeds the limit.
    pub fn write(&mut self, batch: &RecordBatch, now: SystemTime) -> Result<(), ExportError> {
        self.check_schema(batch).inspect_err(|_| {
            add(&self.stats.errors, 1);
            add(&self.stats.rows_lost, batch.num_rows() as u64);
        })?;
        let now_ns = system_time_ns(now);
        let Some(max_rows) = self.cfg.max_file_rows else {
            return self.write_part(batch, now_ns);
        };
        let mut offset = 0;
        while offset < batch.num_rows() {
            let in_file = self.current.as_ref().map_or(0, |o| o.file.rows());
            let room = usize::try_from(max_rows.saturating_sub(in_file)).unwrap_or(usize::MAX);
            let n = room.max(1).min(batch.num_rows() - offset);
            if let Err(e) = self.write_part(&batch.slice(offset, n), now_ns) {
                // The failed slice is counted; so are the slices never tried.
                let rest = batch.num_rows() - offset - n;
                add(&self.stats.rows_lost, rest as u64);
                return Err(e);
            }
            offset += n;
        }
        Ok(())
    }

    fn write_part(&mut self, batch: &RecordBatch, now_ns: i64) -> Result<(), ExportError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let span = self.time_col.and_then(|i| time_span(batch.column(i)));
        // Where the batch belongs in time: its first row's time, or now.
        let place_ns = match (self.time_col, span) {
            (Some(_), Some((first, _, _))) => Some(first),
            (Some(_), None) => None,
            (None, _) => Some(now_ns),
        };
        self.rotate_if_due(now_ns, place_ns)?;
        if self.current.is_none() {
            self.open_file(now_ns, place_ns.unwrap_or(now_ns))
                .inspect_err(|_| {
                    add(&self.stats.errors, 1);
                    add(&self.stats.rows_lost, batch.num_rows() as u64);
                })?;
        }
        let Some(open) = self.current.as_mut() else {
            return Err(ExportError::Closed);
        };
        if let Err(e) = open.file.write(batch) {
            self.abort_current(batch.num_rows() as u64);
            return Err(e);
        }
        if let Some((_, lo, hi)) = span {
            open.data_span = Some(match open.data_span {
                None => (lo, hi),
                Some((a, b)) => (a.min(lo), b.max(hi)),
            });
        }
        let full = open.file.estimated_bytes() >= self.cfg.max_file_bytes
            || self
                .cfg
                .max_file_rows
                .is_some_and(|m| open.file.rows() >= m);
        if full {
            self.commit_current(now_ns)?;
        }
        Ok(())
    }

    /// Rotates by age or partition hour; call periodically when idle.
    pub fn tick(&mut self, now: SystemTime) -> Result<(), ExportError> {
        let now_ns = system_time_ns(now);
        // With a data time column, only data moves the partition hour.
        let place = self.time_col.is_none().then_some(now_ns);
        self.rotate_if_due(now_ns, place)
    }

    /// Commits the current file now (if it has rows).
    pub fn rotate(&mut self, now: SystemTime) -> Result<Option<CommittedFile>, ExportError> {
        self.commit_current(system_time_ns(now))
    }

    /// Commits the current file and returns the report.
    pub fn finish(mut self, now: SystemTime) -> Result<SinkReport, ExportError> {
        self.commit_current(system_time_ns(now))?;
        Ok(self.report(Vec::new()))
    }

    /// The report of what was done so far, with `errors` attached.
    pub fn report(&self, errors: Vec<ExportError>) -> SinkReport {
        let files = match self.files.lock() {
            Ok(f) => f.clone(),
            Err(p) => p.into_inner().clone(),
        };
        SinkReport {
            files,
            stats: self.stats.snapshot(),
            errors,
            cpu: None,
        }
    }

    /// Commits the current file if it is too old (wall clock `now_ns`) or if
    /// `place_ns` (where the next rows belong in time) is in another hour
    /// partition.
    fn rotate_if_due(&mut self, now_ns: i64, place_ns: Option<i64>) -> Result<(), ExportError> {
        let Some(open) = &self.current else {
            return Ok(());
        };
        let age = now_ns.saturating_sub(open.opened_ns);
        let too_old = age >= 0 && (age as u128) >= self.cfg.max_file_age.as_nanos();
        let hour_changed =
            self.probe_dir.is_some() && place_ns.is_some_and(|p| hour_key(p) != open.hour_key);
        if too_old || hour_changed {
            self.commit_current(now_ns)?;
        }
        Ok(())
    }

    /// Opens a file at wall time `now_ns` for rows placed at `place_ns`
    /// (partition directory and name).
    fn open_file(&mut self, now_ns: i64, place_ns: i64) -> Result<(), ExportError> {
        let c = Civil::from_ns(place_ns);
        let dir = match &self.probe_dir {
            None => self.cfg.dir.clone(),
            Some(p) => {
                let d = self
                    .cfg
                    .dir
                    .join(p)
                    .join(format!("date={:04}-{:02}-{:02}", c.year, c.month, c.day));
                let d = d.join(format!("hour={:02}", c.hour));
                fs::create_dir_all(&d).map_err(|e| ExportError::from_io("mkdir", &d, e))?;
                d
            }
        };
        let stamp = format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}.{:06}Z",
            c.year,
            c.month,
            c.day,
            c.hour,
            c.minute,
            c.second,
            c.nanos / 1000
        );
        let dest = loop {
            self.seq += 1;
            let d = dir.join(format!(
                "{}-{stamp}-{:06}.parquet",
                self.cfg.prefix, self.seq
            ));
            if !d.exists() {
                break d;
            }
        };
        let file = PendingFile::create(dest, self.schema.arrow().clone(), &self.format)?;
        self.current = Some(OpenFile {
            file,
            opened_ns: now_ns,
            hour_key: hour_key(place_ns),
            data_span: None,
        });
        Ok(())
    }

    fn abort_current(&mut self, extra_rows: u64) {
        if let Some(open) = self.current.take() {
            add(&self.stats.rows_lost, open.file.rows() + extra_rows);
            add(&self.stats.errors, 1);
            open.file.abort();
        }
    }

    fn commit_current(&mut self, now_ns: i64) -> Result<Option<CommittedFile>, ExportError> {
        let Some(open) = self.current.take() else {
            return Ok(None);
        };
        if open.file.rows() == 0 {
            open.file.abort();
            return Ok(None);
        }
        // Drops since the previous commit: none fall between two files.
        let mut md = self.cfg.metadata.clone();
        let drops_now = self.cfg.drop_counters.as_ref().map(|f| f());
        if let Some(now) = &drops_now {
            for (k, v) in now {
                let before = self.drops_base.get(k).copied().unwrap_or(0);
                *md.drops.entry(k.clone()).or_insert(0) += v.saturating_sub(before);
            }
        }
        let dropped_now = (
            self.stats.rows_dropped.load(Ordering::Relaxed),
            self.stats.rows_lost.load(Ordering::Relaxed),
        );
        *md.drops.entry(DROP_KEY_EXPORT_QUEUE.into()).or_insert(0) +=
            dropped_now.0.saturating_sub(self.dropped_base.0);
        *md.drops.entry(DROP_KEY_EXPORT_LOST.into()).or_insert(0) +=
            dropped_now.1.saturating_sub(self.dropped_base.1);
        if md.window.is_none() {
            md.window = Some(match open.data_span {
                Some((start_ns, end_ns)) => Window { start_ns, end_ns },
                None => Window {
                    start_ns: open.opened_ns,
                    end_ns: now_ns.max(open.opened_ns),
                },
            });
        }
        let rows = open.file.rows();
        let kv = md.key_values(&self.schema);
        match open.file.commit(kv) {
            Ok(done) => {
                if let Some(now) = drops_now {
                    self.drops_base = now;
                }
                self.dropped_base = dropped_now;
                add(&self.stats.files_written, 1);
                add(&self.stats.rows_written, done.rows);
                add(&self.stats.bytes_written, done.bytes);
                match self.files.lock() {
                    Ok(mut f) => f.push(done.clone()),
                    Err(p) => p.into_inner().push(done.clone()),
                }
                self.apply_retention(SystemTime::UNIX_EPOCH + ns_duration(now_ns));
                Ok(Some(done))
            }
            Err(e) => {
                add(&self.stats.rows_lost, rows);
                add(&self.stats.errors, 1);
                Err(e)
            }
        }
    }

    /// Applies the retention policy now; returns the number of files removed.
    pub fn apply_retention(&mut self, now: SystemTime) -> u64 {
        let r = &self.cfg.retention;
        if r.max_age.is_none() && r.max_bytes.is_none() {
            return 0;
        }
        let mut files = Vec::new();
        collect(&self.cfg.dir, 0, &mut |path, md| {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                return;
            };
            if is_own_file(name, &self.cfg.prefix) {
                let mtime = md.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                files.push((mtime, path.to_path_buf(), md.len()));
            }
        });
        // Oldest first; the name (which starts with the open time) breaks ties.
        files.sort();
        let mut removed = 0u64;
        let mut keep = Vec::with_capacity(files.len());
        for (mtime, path, len) in files {
            let expired = r
                .max_age
                .is_some_and(|a| now.duration_since(mtime).is_ok_and(|age| age > a));
            if expired {
                removed += self.remove_committed(&path);
            } else {
                keep.push((path, len));
            }
        }
        if let Some(quota) = r.max_bytes {
            let writing = self
                .current
                .as_ref()
                .map_or(0, |o| o.file.estimated_bytes());
            let mut total: u64 = keep.iter().map(|(_, l)| *l).sum::<u64>() + writing;
            for (path, len) in keep {
                if total <= quota {
                    break;
                }
                let n = self.remove_committed(&path);
                if n > 0 {
                    total = total.saturating_sub(len);
                }
                removed += n;
            }
        }
        add(&self.stats.files_removed, removed);
        removed
    }

    fn remove_committed(&self, path: &Path) -> u64 {
        match fs::remove_file(path) {
            Ok(()) => {
                // Remove partition directories left empty, up to the root.
                let mut dir = path.parent();
                while let Some(d) = dir {
                    if d == self.cfg.dir || fs::remove_dir(d).is_err() {
                        break;
                    }
                    dir = d.parent();
                }
                if let Some(parent) = path.parent() {
                    let _ = sync_dir(parent);
                }
                1
            }
            Err(_) => {
                add(&self.stats.errors, 1);
                0
            }
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        // An uncommitted file is dropped with its temporary file.
        if let Some(open) = self.current.take() {
            add(&self.stats.rows_lost, open.file.rows());
        }
    }
}

fn ns_duration(ns: i64) -> Duration {
    Duration::from_nanos(u64::try_from(ns).unwrap_or(0))
}

/// First non-null value, min and max of a nanosecond timestamp column.
fn time_span(col: &arrow_array::ArrayRef) -> Option<(i64, i64, i64)> {
    use arrow_array::Array as _;
    let a = col
        .as_any()
        .downcast_ref::<arrow_array::TimestampNanosecondArray>()?;
    let mut it = a.iter().flatten();
    let first = it.next()?;
    let (lo, hi) = it.fold((first, first), |(lo, hi), v| (lo.min(v), hi.max(v)));
    Some((first, lo, hi))
}

fn hour_key(ns: i64) -> (i64, u32, u32, u32) {
    let c = Civil::from_ns(ns);
    (c.year, c.month, c.day, c.hour)
}

/// Partition layout depth plus one: how deep directory scans go.
const MAX_SCAN_DEPTH: usize = 4;

/// Calls `f` for every regular file below `dir` (symlinks not followed).
fn collect(dir: &Path, depth: usize, f: &mut dyn FnMut(&Path, &fs::Metadata)) {
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    for entry in rd.flatten() {
        let Ok(ft) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        if ft.is_dir() {
            if depth < MAX_SCAN_DEPTH {
                collect(&path, depth + 1, f);
            }
        } else if ft.is_file()
            && let Ok(md) = entry.metadata()
        {
            f(&path, &md);
        }
    }
}

/// True if `name` is a committed file name of this sink's prefix:
/// `<prefix>-<8 digits>T<6 digits>.<6 digits>Z-<digits>.parquet`. The full
/// shape is checked so that prefix `job` never claims files of `job-2`.
pub fn is_own_file(name: &str, prefix: &str) -> bool {
    let Some(rest) = name
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('-'))
        .and_then(|r| r.strip_suffix(".parquet"))
    else {
        return false;
    };
    let b = rest.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    b.len() > 24
        && digits(0..8)
        && b[8] == b'T'
        && digits(9..15)
        && b[15] == b'.'
        && digits(16..22)
        && &b[22..24] == b"Z-"
        && digits(24..b.len())
}

/// Removes `.<prefix>-*.parquet.tmp` files below `dir` (left by a crash);
/// returns how many were removed.
pub fn remove_stale_tmp(dir: &Path, prefix: &str) -> u64 {
    let mut stale = Vec::new();
    collect(dir, 0, &mut |path, _| {
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix('.')?.strip_suffix(".tmp"))
            .is_some_and(|n| is_own_file(n, prefix))
        {
            stale.push(path.to_path_buf());
        }
    });
    let mut n = 0;
    for p in stale {
        if fs::remove_file(&p).is_ok() {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::is_own_file;

    #[test]
    fn own_file_names() {
        let n = "job-20261125T022918.123456Z-000001.parquet";
        assert!(is_own_file(n, "job"));
        assert!(is_own_file(
            "job-20261125T022918.123456Z-1234567.parquet",
            "job"
        ));
        assert!(!is_own_file(n, "jo"));
        assert!(!is_own_file(
            "job-2-20261125T022918.123456Z-000001.parquet",
            "job"
        ));
        assert!(is_own_file(
            "job-2-20261125T022918.123456Z-000001.parquet",
            "job-2"
        ));
        assert!(!is_own_file("job-20261125T022918.123456Z-.parquet", "job"));
        assert!(!is_own_file(
            "job-20261125T022918.123456Z-000001.parquet.tmp",
            "job"
        ));
        assert!(!is_own_file("job-notes.parquet", "job"));
    }
}
