//! One Parquet file, written under a hidden temporary name and committed
//! atomically.
//!
//! # Commit protocol
//! 1. `create_new` the hidden file `.<name>.tmp` (e.g.
//!    `.flows-…-000001.parquet.tmp`) in the destination directory, so the
//!    rename in step 4 stays within one file system;
//! 2. stream row groups into it;
//! 3. write the footer (with the key-value metadata), flush, `fsync` the file;
//! 4. `rename` it to its final name, then `fsync` the directory so the rename
//!    itself survives a power cut.
//!
//! A reader globbing `*.parquet` therefore sees either nothing or a complete
//! file. Any failure before step 4 removes the temporary file (freeing the
//! space on ENOSPC); dropping a [`PendingFile`] without committing does the
//! same. A crash (SIGKILL, power cut) may leave a `.tmp` behind: the sink
//! removes those at startup ([`crate::sink::Sink::open`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::{Array, RecordBatch};
use arrow_schema::SchemaRef;
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter, add_encoded_arrow_schema_to_metadata};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::{ColumnPath, TypePtr};

use mplane::registry::Primitive;

use crate::ExportError;
use crate::encode::{ChunkEncoder, ColumnChoice, Plan};
use crate::schema::ExportSchema;

/// Which columns get dictionary encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DictionaryPolicy {
    /// Every column (the arrow-rs default).
    All,
    /// Text columns (`string`, `url`, `address`) only: numeric counters and
    /// timestamps are high-cardinality, where dictionaries only cost time.
    Text,
    /// `string` and `url` columns only.
    StringsOnly,
    /// No column.
    None,
}

/// Which column statistics files carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statistics {
    /// None: fastest, no pruning by readers.
    None,
    /// Chunk-level min/max of `time` columns only: readers can still skip
    /// row groups by time, the usual filter, at a fraction of the cost.
    TimeOnly,
    /// Chunk-level min/max of every column except text ones (`string`,
    /// `url`, `address`): min/max of random addresses prune nothing, and
    /// byte-wise comparisons are the costly part of statistics.
    NonText,
    /// Chunk-level min/max of every column (row-group pruning on any column).
    Chunk,
    /// Page-level statistics and the page index as well.
    Page,
}

/// Encoding choices for the files of a sink.
#[derive(Debug, Clone, PartialEq)]
pub struct WriterOptions {
    /// ZSTD level: 1–22, 0 (= 3), or negative "fast" levels down to
    /// −131072. Default 1: on flow records level 3 saves about 1 % of the
    /// bytes and costs about a quarter of the write rate (bench/README.md,
    /// Export); negative levels cost 6–20 % in size.
    pub zstd_level: i32,
    /// Maximum rows per row group. Default 128 Ki.
    pub row_group_rows: usize,
    /// Maximum bytes of a row group while it is buffered (arrow-rs: its
    /// estimated encoded size; the column encoder: its compressed pages and
    /// dictionaries, and the Arrow batches of the page not yet encoded),
    /// which bounds the writer's memory. Default 64 MiB.
    pub row_group_bytes: usize,
    /// Target data page size. Default 1 MiB (arrow-rs default).
    pub data_page_bytes: usize,
    /// Maximum rows per data page (a page index granule). Default 20 000
    /// (arrow-rs default).
    pub data_page_rows: usize,
    /// Dictionary encoding policy. Default [`DictionaryPolicy::Text`].
    pub dictionary: DictionaryPolicy,
    /// Encode `natural` and `time` columns without a dictionary as
    /// `DELTA_BINARY_PACKED` (bit-packed deltas) instead of `PLAIN`: small
    /// counters and sorted timestamps shrink before ZSTD sees them, which
    /// makes compression both smaller and faster. Every reader we test
    /// (pyarrow, DuckDB, polars) reads it. Default `true`.
    pub delta_integers: bool,
    /// Column statistics (min/max, null count). Default
    /// [`Statistics::NonText`] (all statistics cost ~15 % more CPU, see
    /// bench/README.md).
    pub statistics: Statistics,
    /// Values handed to the column encoders per call. Default 8192 (arrow-rs
    /// uses 1024; larger amortises per-call overhead).
    pub write_batch_size: usize,
    /// Store an integer or time column chunk uncompressed when ZSTD cannot
    /// shrink the tail of its first page by 5 % (column encoder only):
    /// bit-packed deltas of timestamps and byte counters are dense already,
    /// and compressing them costs time for nothing. On flow records it leaves
    /// 17 of the 63 such columns uncompressed in every chunk, for 0.3 % larger
    /// files and ~3 % fewer instructions (bench/README.md). Default `true`.
    pub skip_incompressible: bool,
    /// Write column chunks with this crate's column encoder ([`crate::encode`])
    /// where it covers the options (else, or when `false`, with arrow-rs's
    /// `ArrowWriter`). Default `true`.
    pub column_encoder: bool,
    /// Encode `real` columns as `BYTE_STREAM_SPLIT` instead of `PLAIN`: the
    /// values' first bytes, then their second bytes, and so on. ZSTD then
    /// codes the sign and exponent bytes well and stores the mantissa noise
    /// nearly as it is, which costs far less than searching the interleaved
    /// bytes for matches: on flow records 18 % fewer instructions on the
    /// whole export path, for files 25 % larger (an exact value that repeats
    /// is no longer one match; bench/README.md, Export). pyarrow, DuckDB,
    /// polars and Spark read it; some older readers do not. Default `false`.
    pub split_reals: bool,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            zstd_level: 1,
            row_group_rows: 128 * 1024,
            row_group_bytes: 64 << 20,
            data_page_bytes: 1 << 20,
            data_page_rows: 20_000,
            dictionary: DictionaryPolicy::Text,
            delta_integers: true,
            statistics: Statistics::NonText,
            write_batch_size: 8192,
            skip_incompressible: true,
            column_encoder: true,
            split_reals: false,
        }
    }
}

/// How the files of a sink are encoded, prepared once per schema: the
/// Parquet writer properties and, when every column and option is one the
/// column encoder ([`crate::encode`]) writes, its plan; otherwise files go
/// through arrow-rs's `ArrowWriter`.
#[derive(Debug, Clone)]
pub struct FileFormat {
    props: WriterProperties,
    columns: Option<(Arc<Plan>, TypePtr)>,
    row_group_rows: usize,
    row_group_bytes: usize,
    /// Encoded bytes per Arrow byte of the last page the column encoder wrote (f64 bits; 0:
    /// none yet), carried from file to file for size estimates.
    ratio: Arc<AtomicU64>,
}

impl FileFormat {
    /// True if files are written by the column encoder (else by `ArrowWriter`).
    pub fn uses_column_encoder(&self) -> bool {
        self.columns.is_some()
    }
}

impl WriterOptions {
    /// The file format for `schema`: the column encoder's plan where it covers
    /// these options, the Parquet writer properties in any case.
    pub fn format(&self, schema: &ExportSchema) -> Result<FileFormat, ExportError> {
        let mut props = self.properties(schema)?;
        let text =
            |p: Primitive| matches!(p, Primitive::String | Primitive::Url | Primitive::Address);
        let choices: Option<Vec<ColumnChoice>> = match (self.dictionary, self.statistics) {
            _ if !self.column_encoder => None,
            (DictionaryPolicy::All, _) | (_, Statistics::Chunk | Statistics::Page) => None,
            _ => Some(
                schema
                    .columns()
                    .iter()
                    .map(|c| ColumnChoice {
                        dictionary: match self.dictionary {
                            DictionaryPolicy::Text => text(c.prim),
                            DictionaryPolicy::StringsOnly => {
                                matches!(c.prim, Primitive::String | Primitive::Url)
                            }
                            _ => false,
                        },
                        delta: self.delta_integers,
                        split: self.split_reals,
                        statistics: match self.statistics {
                            Statistics::TimeOnly => c.prim == Primitive::Time,
                            Statistics::NonText => !text(c.prim),
                            _ => false,
                        },
                    })
                    .collect(),
            ),
        };
        let columns = match choices {
            None => None,
            Some(choices) => {
                let parquet = ArrowSchemaConverter::new()
                    .convert(schema.arrow())
                    .map_err(|e| ExportError::Config(format!("Parquet schema: {e}")))?;
                Plan::new(
                    schema.arrow(),
                    &parquet,
                    &choices,
                    self.zstd_level,
                    self.data_page_rows,
                    self.skip_incompressible,
                )
                .map(|plan| (Arc::new(plan), parquet.root_schema_ptr()))
            }
        };
        if columns.is_some() {
            // ArrowWriter adds the Arrow schema (types, field metadata) itself
            add_encoded_arrow_schema_to_metadata(schema.arrow(), &mut props);
        }
        Ok(FileFormat {
            props,
            columns,
            row_group_rows: self.row_group_rows,
            row_group_bytes: self.row_group_bytes,
            ratio: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The Parquet writer properties for `schema`.
    pub fn properties(&self, schema: &ExportSchema) -> Result<WriterProperties, ExportError> {
        let level = ZstdLevel::try_new(self.zstd_level)
            .map_err(|e| ExportError::Config(format!("zstd level: {e}")))?;
        if self.row_group_rows == 0
            || self.row_group_bytes == 0
            || self.data_page_bytes == 0
            || self.data_page_rows == 0
        {
            return Err(ExportError::Config(
                "row group and page sizes must be positive".into(),
            ));
        }
        let mut p = WriterProperties::builder()
            .set_writer_version(WriterVersion::PARQUET_1_0)
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_row_count(Some(self.row_group_rows))
            .set_max_row_group_bytes(Some(self.row_group_bytes))
            .set_data_page_size_limit(self.data_page_bytes)
            .set_data_page_row_count_limit(self.data_page_rows)
            .set_created_by(concat!("mplane-export ", env!("CARGO_PKG_VERSION")).into())
            .set_write_batch_size(self.write_batch_size.max(1))
            .set_statistics_enabled(match self.statistics {
                Statistics::None | Statistics::TimeOnly | Statistics::NonText => {
                    EnabledStatistics::None
                }
                Statistics::Chunk => EnabledStatistics::Chunk,
                Statistics::Page => EnabledStatistics::Page,
            })
            .set_dictionary_enabled(self.dictionary == DictionaryPolicy::All);
        for c in schema.columns() {
            let on = match self.dictionary {
                DictionaryPolicy::All => true,
                DictionaryPolicy::None => false,
                DictionaryPolicy::Text => matches!(
                    c.prim,
                    Primitive::String | Primitive::Url | Primitive::Address
                ),
                DictionaryPolicy::StringsOnly => {
                    matches!(c.prim, Primitive::String | Primitive::Url)
                }
            };
            let path = ColumnPath::from(c.name.as_str());
            let text = matches!(
                c.prim,
                Primitive::String | Primitive::Url | Primitive::Address
            );
            if (self.statistics == Statistics::TimeOnly && c.prim == Primitive::Time)
                || (self.statistics == Statistics::NonText && !text)
            {
                p = p.set_column_statistics_enabled(path.clone(), EnabledStatistics::Chunk);
            }
            if !on && self.delta_integers && matches!(c.prim, Primitive::Natural | Primitive::Time)
            {
                p = p.set_column_encoding(path.clone(), Encoding::DELTA_BINARY_PACKED);
            }
            if !on && self.split_reals && c.prim == Primitive::Real {
                p = p.set_column_encoding(path.clone(), Encoding::BYTE_STREAM_SPLIT);
            }
            p = p.set_column_dictionary_enabled(path, on);
        }
        Ok(p.build())
    }
}

/// Bytes buffered before a write to the file: the Parquet writer hands over column chunks in
/// 8 KiB pieces, one system call each without this.
const FILE_BUFFER: usize = 1 << 20;

/// The file handle under the Parquet writer: buffers, counts bytes and remembers the
/// last OS error, which the Parquet error type would otherwise box away.
#[derive(Debug)]
struct Tracked {
    file: io::BufWriter<File>,
    bytes: u64,
    last_error: Option<io::Error>,
}

impl Tracked {
    fn remember(&mut self, e: &io::Error) {
        self.last_error = Some(match e.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(e.kind(), e.to_string()),
        });
    }
}

impl Write for Tracked {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.file.write(buf) {
            Ok(n) => {
                self.bytes += n as u64;
                Ok(n)
            }
            Err(e) => {
                self.remember(&e);
                Err(e)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush().inspect_err(|e| self.remember(e))
    }
}

/// A file that has been committed (renamed into place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedFile {
    /// Final path.
    pub path: PathBuf,
    /// Rows in the file.
    pub rows: u64,
    /// File size in bytes.
    pub bytes: u64,
}

/// A Parquet file being written under its temporary name.
///
/// Dropping it without [`commit`](PendingFile::commit) removes the temporary
/// file.
pub struct PendingFile {
    tmp: PathBuf,
    dest: PathBuf,
    writer: Option<Writer>,
    rows: u64,
}

/// The Parquet writer of a pending file.
enum Writer {
    /// arrow-rs's general writer.
    Arrow(ArrowWriter<Tracked>),
    /// The column encoder, row groups buffered as compressed pages.
    Columns(Box<ColumnsWriter>),
}

impl Writer {
    fn tracked(&self) -> &Tracked {
        match self {
            Writer::Arrow(w) => w.inner(),
            Writer::Columns(c) => c.writer.inner(),
        }
    }
}

/// A file written by the column encoder: rows are encoded a page at a time as they arrive
/// (batches are held only until they make a page), and the row group's column chunks are
/// closed and spliced into the file when it is complete.
struct ColumnsWriter {
    writer: SerializedFileWriter<Tracked>,
    encoder: ChunkEncoder,
    /// Batches (or parts of them) not encoded yet: fewer rows than a page.
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    /// Arrow bytes of `pending`.
    pending_bytes: usize,
    /// Rows of the open row group, encoded or pending.
    group_rows: usize,
    row_group_rows: usize,
    row_group_bytes: usize,
    /// The sink's last bytes of encoded pages per Arrow byte, shared by its files.
    ratio: Arc<AtomicU64>,
}

impl ColumnsWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), ParquetError> {
        let page_rows = self.encoder.page_rows();
        let mut batch = batch.clone();
        while batch.num_rows() > 0 {
            // up to the end of the page, and of the row group
            let room = (page_rows - self.pending_rows).min(self.row_group_rows - self.group_rows);
            let n = batch.num_rows();
            let take = n.min(room);
            let part = if take == n {
                batch.clone()
            } else {
                batch.slice(0, take)
            };
            self.pending_bytes += part.get_array_memory_size();
            self.pending_rows += take;
            self.group_rows += take;
            self.pending.push(part);
            if self.pending_rows >= page_rows {
                self.encode_pending()?;
            }
            if self.group_rows >= self.row_group_rows
                || self.encoder.open_bytes() + self.pending_bytes >= self.row_group_bytes
            {
                self.flush_row_group()?;
            }
            batch = batch.slice(take, n - take);
        }
        Ok(())
    }

    /// Encodes the pending rows as a page of every column.
    fn encode_pending(&mut self) -> Result<(), ParquetError> {
        if self.pending_rows == 0 {
            return Ok(());
        }
        let before = self.encoder.open_bytes();
        for c in 0..self.encoder.columns() {
            let arrays: Vec<&dyn Array> =
                self.pending.iter().map(|b| b.column(c).as_ref()).collect();
            self.encoder.page(c, &arrays)?;
        }
        let encoded = self.encoder.open_bytes().saturating_sub(before);
        if self.pending_bytes > 0 {
            let r = encoded as f64 / self.pending_bytes as f64;
            self.ratio.store(r.to_bits(), Ordering::Relaxed);
        }
        self.pending.clear();
        self.pending_rows = 0;
        self.pending_bytes = 0;
        Ok(())
    }

    fn flush_row_group(&mut self) -> Result<(), ParquetError> {
        self.encode_pending()?;
        if self.group_rows == 0 {
            return Ok(());
        }
        let mut rg = self.writer.next_row_group()?;
        for c in 0..self.encoder.columns() {
            let (bytes, close) = self.encoder.close(c)?;
            rg.append_column(&bytes, close)?;
        }
        rg.close()?;
        self.group_rows = 0;
        Ok(())
    }

    /// The file's size if closed now: bytes written, the open row group's encoded pages, and
    /// its pending batches scaled by the encoded bytes per Arrow byte of the last page this
    /// sink encoded (before the first, Arrow bytes themselves: an over-estimate).
    fn estimated_bytes(&self) -> u64 {
        let written = self.writer.inner().bytes;
        let ratio = match self.ratio.load(Ordering::Relaxed) {
            0 => 1.0,
            bits => f64::from_bits(bits),
        };
        written + self.encoder.open_bytes() as u64 + (self.pending_bytes as f64 * ratio) as u64
    }
}

impl std::fmt::Debug for PendingFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingFile")
            .field("tmp", &self.tmp)
            .field("dest", &self.dest)
            .field("rows", &self.rows)
            .finish()
    }
}

/// The temporary name of `dest`: `.<file name>.tmp` in the same directory.
pub fn tmp_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.tmp"))
}

impl PendingFile {
    /// Creates the temporary file for `dest` (which must not exist yet) and
    /// the Parquet writer on it.
    pub fn create(
        dest: PathBuf,
        schema: SchemaRef,
        format: &FileFormat,
    ) -> Result<PendingFile, ExportError> {
        let tmp = tmp_path(&dest);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| ExportError::from_io("create", &tmp, e))?;
        let tracked = Tracked {
            file: io::BufWriter::with_capacity(FILE_BUFFER, file),
            bytes: 0,
            last_error: None,
        };
        let mut pending = PendingFile {
            tmp,
            dest,
            writer: None,
            rows: 0,
        };
        let writer = match &format.columns {
            Some((plan, root)) => ChunkEncoder::new(plan.clone(), format.row_group_rows.max(1))
                .and_then(|encoder| {
                    let writer = SerializedFileWriter::new(
                        tracked,
                        root.clone(),
                        Arc::new(format.props.clone()),
                    )?;
                    Ok(Writer::Columns(Box::new(ColumnsWriter {
                        writer,
                        encoder,
                        pending: Vec::new(),
                        pending_rows: 0,
                        pending_bytes: 0,
                        group_rows: 0,
                        row_group_rows: format.row_group_rows.max(1),
                        row_group_bytes: format.row_group_bytes.max(1),
                        ratio: format.ratio.clone(),
                    })))
                }),
            None => {
                ArrowWriter::try_new(tracked, schema, Some(format.props.clone())).map(Writer::Arrow)
            }
        };
        match writer {
            Ok(w) => pending.writer = Some(w),
            Err(e) => {
                // `pending` drops here and removes the temporary file.
                return Err(ExportError::Encode {
                    path: pending.tmp.clone(),
                    message: e.to_string(),
                });
            }
        }
        Ok(pending)
    }

    /// The final path the file will have.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// The temporary path being written.
    pub fn tmp(&self) -> &Path {
        &self.tmp
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Estimated size of the file if closed now: bytes on disk plus the
    /// buffered row group (`ArrowWriter`: its encoded size before compression;
    /// column encoder: its compressed pages, and the rows not yet encoded at
    /// the sink's last encoded bytes per Arrow byte).
    pub fn estimated_bytes(&self) -> u64 {
        match &self.writer {
            None => 0,
            Some(Writer::Arrow(w)) => w.inner().bytes + w.in_progress_size() as u64,
            Some(Writer::Columns(c)) => c.estimated_bytes(),
        }
    }

    fn classify(&self, op: &'static str, e: ParquetError) -> ExportError {
        let last = self
            .writer
            .as_ref()
            .and_then(|w| w.tracked().last_error.as_ref());
        if let Some(io) = last {
            return ExportError::from_io(op, &self.tmp, clone_io(io));
        }
        if let ParquetError::External(inner) = &e
            && let Some(io) = inner.downcast_ref::<io::Error>()
        {
            return ExportError::from_io(op, &self.tmp, clone_io(io));
        }
        ExportError::Encode {
            path: self.tmp.clone(),
            message: e.to_string(),
        }
    }

    /// Appends a batch (split into row groups as configured).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), ExportError> {
        let Some(w) = self.writer.as_mut() else {
            return Err(ExportError::Closed);
        };
        let written = match w {
            Writer::Arrow(w) => w.write(batch),
            Writer::Columns(c) => c.write(batch),
        };
        match written {
            Ok(()) => {
                self.rows += batch.num_rows() as u64;
                Ok(())
            }
            Err(e) => Err(self.classify("write", e)),
        }
    }

    /// Writes the footer with `kv` entries, fsyncs, renames into place and
    /// fsyncs the directory. On error the temporary file is removed.
    pub fn commit(mut self, kv: Vec<KeyValue>) -> Result<CommittedFile, ExportError> {
        let Some(mut w) = self.writer.take() else {
            return Err(ExportError::Closed);
        };
        let finished = match &mut w {
            Writer::Arrow(a) => {
                for entry in kv {
                    a.append_key_value_metadata(entry);
                }
                a.finish().map(drop)
            }
            Writer::Columns(c) => c.flush_row_group().and_then(|()| {
                for entry in kv {
                    c.writer.append_key_value_metadata(entry);
                }
                c.writer.finish().map(drop)
            }),
        };
        if let Err(e) = finished {
            self.writer = Some(w);
            return Err(self.classify("write", e));
        }
        let tracked = match &mut w {
            Writer::Arrow(a) => a.inner_mut(),
            Writer::Columns(c) => c.writer.inner_mut(),
        };
        if let Err(e) = tracked.flush() {
            return Err(ExportError::from_io("write", &self.tmp, e));
        }
        let bytes = tracked.bytes;
        if let Err(e) = tracked.file.get_ref().sync_all() {
            return Err(ExportError::from_io("fsync", &self.tmp, e));
        }
        drop(w);
        // rename(2) replaces an existing file silently; the sink picks names
        // that do not exist, so a clash here means a concurrent writer.
        if self.dest.exists() {
            return Err(ExportError::Io {
                op: "rename",
                path: self.dest.clone(),
                source: io::Error::new(io::ErrorKind::AlreadyExists, "destination exists"),
            });
        }
        if let Err(e) = fs::rename(&self.tmp, &self.dest) {
            return Err(ExportError::from_io("rename", &self.dest, e));
        }
        // Committed: from here on the file is visible and stays.
        let dest = std::mem::take(&mut self.dest);
        self.tmp = PathBuf::new();
        let dir = dest.parent().unwrap_or(Path::new("."));
        sync_dir(dir)?;
        Ok(CommittedFile {
            path: dest,
            rows: self.rows,
            bytes,
        })
    }

    /// Abandons the file and removes the temporary file.
    pub fn abort(self) {}
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        // Close the descriptor before unlinking (not required on Unix, but
        // keeps the order obvious).
        self.writer = None;
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

fn clone_io(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

/// `fsync`s a directory so that entries created or renamed in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), ExportError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ExportError::from_io("fsync", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::basic::Encoding;

    fn schema() -> ExportSchema {
        ExportSchema::from_elements(
            "x",
            [
                ("t", Primitive::Time),
                ("n", Primitive::Natural),
                ("a", Primitive::Address),
                ("s", Primitive::String),
            ],
        )
        .unwrap()
    }

    #[test]
    fn properties_follow_policies() {
        let p = WriterOptions::default().properties(&schema()).unwrap();
        let col = |n: &str| ColumnPath::from(n);
        assert_eq!(
            p.compression(&col("n")),
            Compression::ZSTD(ZstdLevel::try_new(1).unwrap())
        );
        assert!(!p.dictionary_enabled(&col("n")));
        assert!(!p.dictionary_enabled(&col("t")));
        assert!(p.dictionary_enabled(&col("a")));
        assert!(p.dictionary_enabled(&col("s")));
        assert_eq!(p.encoding(&col("n")), Some(Encoding::DELTA_BINARY_PACKED));
        assert_eq!(p.statistics_enabled(&col("n")), EnabledStatistics::Chunk);
        assert_eq!(p.statistics_enabled(&col("a")), EnabledStatistics::None);
        let none = WriterOptions {
            dictionary: DictionaryPolicy::None,
            delta_integers: false,
            statistics: Statistics::TimeOnly,
            ..WriterOptions::default()
        }
        .properties(&schema())
        .unwrap();
        assert!(!none.dictionary_enabled(&col("s")));
        assert_eq!(none.encoding(&col("n")), None);
        assert_eq!(none.statistics_enabled(&col("t")), EnabledStatistics::Chunk);
        assert_eq!(none.statistics_enabled(&col("n")), EnabledStatistics::None);
    }

    #[test]
    fn bad_options_are_config_errors() {
        for o in [
            WriterOptions {
                zstd_level: -200_000,
                ..WriterOptions::default()
            },
            WriterOptions {
                zstd_level: 23,
                ..WriterOptions::default()
            },
            WriterOptions {
                row_group_rows: 0,
                ..WriterOptions::default()
            },
        ] {
            assert!(matches!(
                o.properties(&schema()),
                Err(ExportError::Config(_))
            ));
        }
    }

    #[test]
    fn tmp_name_is_hidden_sibling() {
        assert_eq!(
            tmp_path(Path::new("/d/x/f-1.parquet")),
            Path::new("/d/x/.f-1.parquet.tmp")
        );
    }
}
