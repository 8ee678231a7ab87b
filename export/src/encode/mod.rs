//! Column chunks encoded straight from Arrow arrays, for the flat schemas of mPlane results.
//!
//! arrow-rs's `ArrowWriter` is general (nested data, every type and encoding) and pays for it
//! on every value: definition levels computed per value, statistics and encoders fed in mini
//! batches through trait objects, and a new ZSTD context per column chunk. A result schema is
//! flat and uses five Arrow types, so each column chunk is encoded here in a few tight loops:
//!
//! * definition levels come from the validity bitmap itself (a bitmap byte is one bit-packed
//!   group of eight levels; runs of all-valid or all-null bytes become RLE runs);
//! * `natural` and `time` values as `DELTA_BINARY_PACKED` (or `PLAIN`), `real` as `PLAIN` (or
//!   `BYTE_STREAM_SPLIT`, [`crate::WriterOptions::split_reals`]),
//!   `boolean` bit-packed, text through a dictionary (`RLE_DICTIONARY`, falling back to `PLAIN`
//!   for the rest of a chunk once its dictionary outgrows [`DICTIONARY_LIMIT`]);
//! * pages encoded and compressed as the rows arrive, so an open row group is held as
//!   compressed pages rather than as Arrow batches, and large row groups cost little memory;
//! * one ZSTD context for every page of the file; an integer or time column chunk whose first
//!   page ZSTD cannot shrink by [`WORTH_COMPRESSING`] (judged on its last [`PROBE_BYTES`], or
//!   on the whole page when it is less than twice that, so no page is compressed twice) is
//!   stored uncompressed ([`crate::WriterOptions::skip_incompressible`], on by default):
//!   bit-packed deltas of timestamps and byte counters are dense already, and compressing
//!   them costs time for nothing; at level 1, number pages are compressed at
//!   [`NUMBER_LEVEL_AT_1`];
//! * chunk statistics (min, max, null count) as arrow-rs writes them;
//! * the loops over every value (deltas, statistics, counting levels) compiled again for
//!   x86-64-v3 (AVX2, BMI2) and x86-64-v2 (SSE4.2, POPCNT), the best version the CPU runs
//!   picked at the first call, so that a generic build runs them as fast as a
//!   `-C target-cpu=native` one and still starts on any x86-64.
//!
//! The pages are written with the parquet crate's page writer and spliced into its file
//! writer (`append_column`), which writes the footer: the file is a standard Parquet file that
//! every reader (pyarrow, DuckDB, polars, arrow-rs) reads like one from `ArrowWriter`.

mod bits;
mod delta;
mod dict;

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, TimestampNanosecondType, UInt64Type};
use arrow_array::{Array, ArrowPrimitiveType};
use arrow_buffer::{ArrowNativeType, ToByteSlice};
use arrow_schema::{DataType, Schema, TimeUnit};
use bytes::Bytes;
use dict::Dictionary;
use parquet::basic::{Compression, Encoding, EncodingMask, PageType, ZstdLevel};
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ColumnChunkMetaData, PageEncodingStats};
use parquet::file::statistics::{Statistics, ValueStatistics};
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use parquet::schema::types::{ColumnDescPtr, SchemaDescriptor};

/// Largest dictionary (bytes of its values) of a text column chunk; from the page that
/// passes it on, the chunk's pages are written `PLAIN` (arrow-rs's default dictionary page
/// limit, and its fallback).
pub const DICTIONARY_LIMIT: usize = 1 << 20;

/// An integer or time column chunk is stored uncompressed when ZSTD saves less than this
/// fraction of the probe of its first page...
pub const WORTH_COMPRESSING: f64 = 0.05;
/// ... the last this many bytes of the page (its values, after the definition levels); a page
/// shorter than twice this is judged whole.
pub const PROBE_BYTES: usize = 4096;

/// The ZSTD level of number pages (`PLAIN` reals, integers and times) when the file's level
/// is 1 (the default); text keeps level 1. A real's two lowest bytes are mantissa noise that
/// ZSTD leaves as literals; at level 1 it builds a Huffman table for them that saves nothing,
/// at −1 it stores them as they are and searches a little less: the same bytes for a tenth
/// less of the reals' compression time. Bit-packed integer deltas lose 0.8 % of the file at
/// −1 for 3.9 % fewer instructions on the whole export path (text would lose 5 % for 1 %).
/// Any other level is used as chosen.
pub const NUMBER_LEVEL_AT_1: i32 = -1;

/// Most bytes a column chunk's buffer is sized for before its pages are there (a row group
/// of many rows would otherwise reserve its whole estimated size for every column at once).
const MAX_RESERVE: usize = 4 << 20;

/// The Arrow types this encoder writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    U64,
    Time,
    F64,
    Bool,
    Text,
}

/// How one column is written.
#[derive(Debug, Clone)]
struct ColumnPlan {
    descr: ColumnDescPtr,
    kind: Kind,
    dictionary: bool,
    delta: bool,
    split: bool,
    statistics: bool,
}

/// How every column of a file is written.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    columns: Vec<ColumnPlan>,
    zstd_level: i32,
    /// The level of number pages ([`NUMBER_LEVEL_AT_1`]).
    number_level: i32,
    page_rows: usize,
    skip_incompressible: bool,
}

/// What [`Plan::new`] needs to know of each column.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ColumnChoice {
    /// Dictionary encoding (text columns only).
    pub dictionary: bool,
    /// `DELTA_BINARY_PACKED` for integers and times (else `PLAIN`).
    pub delta: bool,
    /// `BYTE_STREAM_SPLIT` for reals (else `PLAIN`).
    pub split: bool,
    /// Chunk statistics (not for text columns).
    pub statistics: bool,
}

impl Plan {
    /// The plan for `arrow` (whose Parquet form is `parquet`), with each column's choices;
    /// `None` when a column's type or choice is one this encoder does not write (the file
    /// then goes through arrow-rs's writer).
    pub(crate) fn new(
        arrow: &Schema,
        parquet: &SchemaDescriptor,
        choices: &[ColumnChoice],
        zstd_level: i32,
        page_rows: usize,
        skip_incompressible: bool,
    ) -> Option<Plan> {
        if parquet.num_columns() != arrow.fields().len() || choices.len() != arrow.fields().len() {
            return None;
        }
        let mut columns = Vec::with_capacity(choices.len());
        for (i, (field, c)) in arrow.fields().iter().zip(choices).enumerate() {
            let kind = match field.data_type() {
                DataType::UInt64 => Kind::U64,
                DataType::Timestamp(TimeUnit::Nanosecond, _) => Kind::Time,
                DataType::Float64 => Kind::F64,
                DataType::Boolean => Kind::Bool,
                DataType::Utf8 => Kind::Text,
                _ => return None,
            };
            if (c.dictionary && kind != Kind::Text) || (c.statistics && kind == Kind::Text) {
                return None;
            }
            columns.push(ColumnPlan {
                descr: parquet.column(i),
                kind,
                dictionary: c.dictionary,
                delta: c.delta,
                split: c.split,
                statistics: c.statistics,
            });
        }
        Some(Plan {
            columns,
            zstd_level,
            number_level: if zstd_level == 1 {
                NUMBER_LEVEL_AT_1
            } else {
                zstd_level
            },
            page_rows: page_rows.max(8),
            skip_incompressible,
        })
    }
}

/// The pages of one column chunk as they are built.
struct Chunk {
    /// Whether the pages are compressed; `None` until the first page decides.
    compress: Option<bool>,
    out: TrackedWrite<Vec<u8>>,
    uncompressed: i64,
    compressed: i64,
    data_page_offset: Option<i64>,
    dictionary_page_offset: Option<i64>,
    encodings: Vec<Encoding>,
    stats: Vec<PageEncodingStats>,
}

impl Chunk {
    /// A chunk with room for `capacity` bytes of pages before its buffer grows.
    fn new(compress: Option<bool>, capacity: usize) -> Self {
        Chunk {
            compress,
            out: TrackedWrite::new(Vec::with_capacity(capacity)),
            uncompressed: 0,
            compressed: 0,
            data_page_offset: None,
            dictionary_page_offset: None,
            encodings: vec![Encoding::RLE],
            stats: Vec::new(),
        }
    }

    fn note(&mut self, page_type: PageType, encoding: Encoding) {
        if !self.encodings.contains(&encoding) {
            self.encodings.push(encoding);
        }
        match self.stats.last_mut() {
            Some(s) if s.page_type == page_type && s.encoding == encoding => s.count += 1,
            _ => self.stats.push(PageEncodingStats {
                page_type,
                encoding,
                count: 1,
            }),
        }
    }
}

/// What a column chunk's statistics are built from, widened page by page.
#[derive(Debug, Clone, Copy)]
enum Extremes {
    /// No statistics for this column.
    None,
    /// `natural`: unsigned order (stored as the bit pattern, as arrow-rs stores `UInt64`).
    Natural(Option<(u64, u64)>),
    /// `time`: signed order.
    Time(Option<(i64, i64)>),
    /// `real`: NaN left out, and counted.
    Real(Option<(f64, f64)>, u64),
    /// `boolean`.
    Bool(Option<(bool, bool)>),
}

impl Extremes {
    fn new(plan: &ColumnPlan) -> Self {
        match (plan.statistics, plan.kind) {
            (false, _) | (_, Kind::Text) => Extremes::None,
            (_, Kind::U64) => Extremes::Natural(None),
            (_, Kind::Time) => Extremes::Time(None),
            (_, Kind::F64) => Extremes::Real(None, 0),
            (_, Kind::Bool) => Extremes::Bool(None),
        }
    }

    /// The chunk statistics, with `nulls` nulls.
    fn statistics(self, nulls: u64) -> Option<Statistics> {
        let int = |min: Option<i64>, max: Option<i64>, signed: bool| {
            Statistics::Int64(
                ValueStatistics::new(min, max, None, Some(nulls), false)
                    .with_backwards_compatible_min_max(signed),
            )
        };
        Some(match self {
            Extremes::None => return None,
            Extremes::Natural(m) => int(m.map(|m| m.0 as i64), m.map(|m| m.1 as i64), false),
            Extremes::Time(m) => int(m.map(|m| m.0), m.map(|m| m.1), true),
            Extremes::Real(m, nans) => {
                // zeros widened as the format asks: a minimum of zero is written -0.0, a
                // maximum of zero +0.0
                let min = m.map(|(m, _)| if m == 0.0 { -0.0 } else { m });
                let max = m.map(|(_, m)| if m == 0.0 { 0.0 } else { m });
                Statistics::Double(
                    ValueStatistics::new(min, max, None, Some(nulls), false)
                        .with_backwards_compatible_min_max(true)
                        .with_nan_count(Some(nans)),
                )
            }
            Extremes::Bool(m) => Statistics::Boolean(ValueStatistics::new(
                m.map(|m| m.0),
                m.map(|m| m.1),
                None,
                Some(nulls),
                false,
            )),
        })
    }
}

/// Widens `acc` to take in `page` (the extremes of one page).
fn widen_with<K: Copy + PartialOrd>(acc: &mut Option<(K, K)>, page: Option<(K, K)>) {
    match (acc.as_mut(), page) {
        (_, None) => {}
        (None, p) => *acc = p,
        (Some((lo, hi)), Some((plo, phi))) => {
            if plo < *lo {
                *lo = plo;
            }
            if phi > *hi {
                *hi = phi;
            }
        }
    }
}

/// A column chunk of the open row group: its data pages so far, and what its dictionary page
/// and metadata are made of when it closes.
struct OpenChunk {
    /// The data pages (the dictionary page goes in front of them when the chunk closes).
    chunk: Chunk,
    rows: usize,
    nulls: u64,
    extremes: Extremes,
    /// Text: the chunk's dictionary, while its pages use it and after (for the pages that
    /// did); `None` when no page uses one.
    dict: Option<Dictionary>,
    /// Text: whether the next page is dictionary-encoded. It turns off for the rest of the
    /// chunk when the dictionary outgrows [`DICTIONARY_LIMIT`].
    dict_on: bool,
    /// Data pages written with dictionary indices.
    dict_pages: usize,
}

impl OpenChunk {
    /// A chunk with room for `capacity` bytes of data pages.
    fn new(plan: &ColumnPlan, probe: bool, capacity: usize) -> Self {
        OpenChunk {
            chunk: Chunk::new(if probe { None } else { Some(true) }, capacity),
            rows: 0,
            nulls: 0,
            extremes: Extremes::new(plan),
            dict: None,
            dict_on: plan.dictionary,
            dict_pages: 0,
        }
    }
}

/// Encodes the column chunks of one file: a ZSTD context reused for every page, scratch
/// buffers reused from page to page, and the open chunk of each column.
///
/// The rows of a row group arrive a page at a time ([`ChunkEncoder::page`]) and each page is
/// encoded and compressed at once, so a row group is held in memory as compressed pages
/// (about an eighth of its Arrow size for flow records), not as the batches it came in; the
/// chunks are closed and spliced into the file when the row group ends
/// ([`ChunkEncoder::close`]).
pub(crate) struct ChunkEncoder {
    plan: Arc<Plan>,
    zstd: zstd::bulk::Compressor<'static>,
    open: Vec<Option<OpenChunk>>,
    /// Rows of a full row group.
    group_rows: usize,
    /// Bytes of each column's data pages in its last chunk: the next one's buffer starts
    /// that large (an eighth more), instead of growing by copies page after page.
    last_bytes: Vec<usize>,
    bitmap: Vec<u8>,
    page_bits: Vec<u8>,
    ints: Vec<i64>,
    floats: Vec<f64>,
    bools: Vec<bool>,
    indices: Vec<u32>,
    body: Vec<u8>,
}

impl std::fmt::Debug for ChunkEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkEncoder")
            .field("columns", &self.plan.columns.len())
            .field("zstd_level", &self.plan.zstd_level)
            .finish()
    }
}

fn general(e: impl std::fmt::Display) -> ParquetError {
    ParquetError::General(e.to_string())
}

impl ChunkEncoder {
    /// An encoder for the files of `plan`, whose row groups are `group_rows` rows.
    pub(crate) fn new(plan: Arc<Plan>, group_rows: usize) -> Result<Self, ParquetError> {
        // level 0 is ZSTD's default level, as for arrow-rs
        let zstd = zstd::bulk::Compressor::new(plan.zstd_level).map_err(general)?;
        Ok(ChunkEncoder {
            open: (0..plan.columns.len()).map(|_| None).collect(),
            group_rows,
            last_bytes: vec![0; plan.columns.len()],
            plan,
            zstd,
            bitmap: Vec::new(),
            page_bits: Vec::new(),
            ints: Vec::new(),
            floats: Vec::new(),
            bools: Vec::new(),
            indices: Vec::new(),
            body: Vec::new(),
        })
    }

    /// Runs `f` with the ZSTD context at the number pages' level ([`NUMBER_LEVEL_AT_1`]),
    /// then puts the file's level back.
    fn at_number_level<R>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<R, ParquetError>,
    ) -> Result<R, ParquetError> {
        let (number, file) = (self.plan.number_level, self.plan.zstd_level);
        if number != file {
            self.zstd.set_compression_level(number).map_err(general)?;
        }
        let out = f(self);
        if number != file {
            self.zstd.set_compression_level(file).map_err(general)?;
        }
        out
    }

    /// Number of columns.
    pub(crate) fn columns(&self) -> usize {
        self.plan.columns.len()
    }

    /// Rows per data page.
    pub(crate) fn page_rows(&self) -> usize {
        self.plan.page_rows
    }

    /// Bytes the open chunks hold: their pages, and their dictionaries (uncompressed).
    pub(crate) fn open_bytes(&self) -> usize {
        self.open
            .iter()
            .flatten()
            .map(|o| o.chunk.out.bytes_written() + o.dict.as_ref().map_or(0, |d| d.page().len()))
            .sum()
    }

    /// Encodes rows of column `col` (the column's array in each batch, in order) as data
    /// pages of its open chunk: one page, or more when they are more than a page's rows.
    pub(crate) fn page(&mut self, col: usize, arrays: &[&dyn Array]) -> Result<(), ParquetError> {
        let plan = &self.plan.columns[col];
        let probe = self.plan.skip_incompressible && matches!(plan.kind, Kind::U64 | Kind::Time);
        let mut open = match self.open[col].take() {
            Some(o) => o,
            None => OpenChunk::new(plan, probe, (self.last_bytes[col] / 8 * 9).min(MAX_RESERVE)),
        };
        let first = open.rows == 0;
        let done = self.pages_into(&mut open, col, arrays);
        if first && self.last_bytes[col] == 0 && open.rows > 0 {
            // the first chunk of this column: room for a row group of pages like its first
            // (up to a bound: a chunk larger than that grows as a vector does)
            let pages = self.group_rows.div_ceil(open.rows).saturating_sub(1);
            let out = open.chunk.out.inner_mut();
            out.reserve((out.len().saturating_mul(pages) / 8 * 9).min(MAX_RESERVE));
        }
        // an open chunk stays with its column even after an error: the file is abandoned
        // then, and nothing more is written to it
        self.open[col] = Some(open);
        done
    }

    fn pages_into(
        &mut self,
        open: &mut OpenChunk,
        col: usize,
        arrays: &[&dyn Array],
    ) -> Result<(), ParquetError> {
        let plan = self.plan.columns[col].clone();
        let rows: usize = arrays.iter().map(|a| a.len()).sum();
        let nulls = self.gather_validity(arrays, rows);
        open.rows += rows;
        open.nulls += nulls;
        let chunk = &mut open.chunk;
        match plan.kind {
            Kind::U64 | Kind::Time => {
                self.ints.clear();
                for a in arrays {
                    if plan.kind == Kind::U64 {
                        gather(a.as_primitive::<UInt64Type>(), &mut self.ints, |v| v as i64);
                    } else {
                        gather(
                            a.as_primitive::<TimestampNanosecondType>(),
                            &mut self.ints,
                            |v| v,
                        );
                    }
                }
                let enc = if plan.delta {
                    Encoding::DELTA_BINARY_PACKED
                } else {
                    Encoding::PLAIN
                };
                self.at_number_level(|this| {
                    this.data_pages(chunk, &plan, rows, enc, |this, from, to, body| {
                        let v = &this.ints[from..to];
                        if plan.delta {
                            delta::encode(v, body);
                        } else {
                            plain(v, i64::to_le_bytes, body);
                        }
                    })
                })?;
                match &mut open.extremes {
                    Extremes::Natural(m) => widen_with(m, min_max(&self.ints, |v| v as u64)),
                    Extremes::Time(m) => widen_with(m, min_max(&self.ints, |v| v)),
                    _ => {}
                }
            }
            Kind::F64 => {
                self.floats.clear();
                for a in arrays {
                    gather(a.as_primitive::<Float64Type>(), &mut self.floats, |v| v);
                }
                let enc = if plan.split {
                    Encoding::BYTE_STREAM_SPLIT
                } else {
                    Encoding::PLAIN
                };
                self.at_number_level(|this| {
                    this.data_pages(chunk, &plan, rows, enc, |this, from, to, body| {
                        let v = &this.floats[from..to];
                        if plan.split {
                            byte_stream_split(v, body);
                        } else {
                            plain(v, f64::to_le_bytes, body);
                        }
                    })
                })?;
                if let Extremes::Real(m, nans) = &mut open.extremes {
                    let (page, page_nans) = float_extremes(&self.floats);
                    widen_with(m, page);
                    *nans += page_nans;
                }
            }
            Kind::Bool => {
                self.bools.clear();
                for a in arrays {
                    let b = a.as_boolean();
                    match b.nulls() {
                        None => self.bools.extend(b.values().iter()),
                        Some(n) => self.bools.extend(
                            b.values()
                                .iter()
                                .zip(n.iter())
                                .filter_map(|(v, ok)| ok.then_some(v)),
                        ),
                    }
                }
                self.data_pages(
                    chunk,
                    &plan,
                    rows,
                    Encoding::PLAIN,
                    |this, from, to, body| {
                        // PLAIN booleans: one bit each, LSB first
                        for eight in this.bools[from..to].chunks(8) {
                            body.push(
                                eight
                                    .iter()
                                    .enumerate()
                                    .fold(0u8, |byte, (k, &b)| byte | (u8::from(b) << k)),
                            );
                        }
                    },
                )?;
                if let Extremes::Bool(m) = &mut open.extremes {
                    widen_with(m, min_max(&self.bools, |b| b));
                }
            }
            Kind::Text => {
                let mut texts: Vec<&[u8]> = Vec::with_capacity(rows - nulls as usize);
                for a in arrays {
                    let s = a.as_string::<i32>();
                    for i in 0..s.len() {
                        if s.is_valid(i) {
                            texts.push(s.value(i).as_bytes());
                        }
                    }
                }
                self.text_pages(open, &plan, rows, &texts)?;
            }
        }
        Ok(())
    }

    /// Closes the open chunk of column `col`: its pages (the dictionary page first), and
    /// what the file writer needs to splice them in. A column that got no rows closes as an
    /// empty chunk.
    pub(crate) fn close(&mut self, col: usize) -> Result<(Bytes, ColumnCloseResult), ParquetError> {
        let plan = self.plan.columns[col].clone();
        let open = match self.open[col].take() {
            Some(o) => o,
            None => OpenChunk::new(&plan, false, 0),
        };
        let OpenChunk {
            chunk: data,
            rows,
            nulls,
            extremes,
            dict,
            dict_pages,
            ..
        } = open;
        self.last_bytes[col] = data.out.bytes_written();
        let (chunk, bytes) = match dict.filter(|_| dict_pages > 0) {
            None => {
                let mut chunk = data;
                let bytes = std::mem::replace(&mut chunk.out, TrackedWrite::new(Vec::new()))
                    .into_inner()?;
                (chunk, bytes)
            }
            Some(dict) => {
                // the dictionary page first; the data pages' offsets move by its length
                // room for the dictionary page (a compressed page can exceed its body by a
                // little) and the data pages that follow it
                let room = dict.page().len() + 256 + data.out.bytes_written();
                let mut chunk = Chunk::new(data.compress, room);
                let mut body = std::mem::take(&mut self.body);
                body.clear();
                body.extend_from_slice(dict.page());
                self.write_page(&mut chunk, body, dict.len() as u32, Encoding::PLAIN, true)?;
                let head = chunk.out.bytes_written() as i64;
                let mut bytes = chunk.out.into_inner()?;
                bytes.extend_from_slice(&data.out.into_inner()?);
                chunk.out = TrackedWrite::new(Vec::new());
                chunk.uncompressed += data.uncompressed;
                chunk.compressed += data.compressed;
                chunk.data_page_offset = data.data_page_offset.map(|at| at + head);
                for e in data.encodings {
                    if !chunk.encodings.contains(&e) {
                        chunk.encodings.push(e);
                    }
                }
                chunk.stats.extend(data.stats);
                (chunk, bytes)
            }
        };
        let codec = if chunk.compress.unwrap_or(true) {
            Compression::ZSTD(ZstdLevel::try_new(self.plan.zstd_level).map_err(general)?)
        } else {
            Compression::UNCOMPRESSED
        };
        let mut b = ColumnChunkMetaData::builder(plan.descr.clone())
            .set_compression(codec)
            .set_encodings_mask(EncodingMask::new_from_encodings(chunk.encodings.iter()))
            .set_page_encoding_stats(chunk.stats)
            .set_total_compressed_size(chunk.compressed)
            .set_total_uncompressed_size(chunk.uncompressed)
            .set_num_values(rows as i64)
            .set_data_page_offset(chunk.data_page_offset.unwrap_or(0))
            .set_dictionary_page_offset(chunk.dictionary_page_offset);
        if let Some(s) = extremes.statistics(nulls) {
            b = b.set_statistics(s);
        }
        let metadata = b.build()?;
        let close = ColumnCloseResult {
            bytes_written: bytes.len() as u64,
            rows_written: rows as u64,
            metadata,
            bloom_filter: None,
            column_index: None,
            offset_index: None,
        };
        Ok((Bytes::from(bytes), close))
    }

    /// Fills `self.bitmap` with the validity of the chunk's `rows` rows (bit set = value);
    /// returns the number of nulls.
    fn gather_validity(&mut self, arrays: &[&dyn Array], rows: usize) -> u64 {
        self.bitmap.clear();
        self.bitmap.resize(rows.div_ceil(8), 0);
        let mut at = 0usize;
        let mut nulls = 0u64;
        for a in arrays {
            match a.logical_nulls() {
                Some(n) if n.null_count() > 0 => {
                    nulls += n.null_count() as u64;
                    let inner = n.inner();
                    if at.is_multiple_of(8) && inner.offset().is_multiple_of(8) {
                        // whole bytes: copy, clearing the bits past the array's end
                        let from = inner.offset() / 8;
                        let len = a.len().div_ceil(8);
                        let dst = &mut self.bitmap[at / 8..at / 8 + len];
                        dst.copy_from_slice(&inner.values()[from..from + len]);
                        if !a.len().is_multiple_of(8) {
                            dst[len - 1] &= (1u8 << (a.len() % 8)) - 1;
                        }
                    } else {
                        for i in n.valid_indices() {
                            let r = at + i;
                            self.bitmap[r / 8] |= 1 << (r % 8);
                        }
                    }
                }
                _ => set_bits(&mut self.bitmap, at, a.len()),
            }
            at += a.len();
        }
        nulls
    }

    /// Cuts the chunk's rows into pages and writes each: definition levels (nullable columns)
    /// and the values `values(self, first, end, body)` appends for the page's non-null values
    /// `first..end` (indices among the chunk's non-null values).
    #[allow(clippy::too_many_arguments)]
    fn data_pages(
        &mut self,
        chunk: &mut Chunk,
        plan: &ColumnPlan,
        rows: usize,
        encoding: Encoding,
        mut values: impl FnMut(&Self, usize, usize, &mut Vec<u8>),
    ) -> Result<(), ParquetError> {
        let nullable = plan.descr.max_def_level() > 0;
        let mut start = 0;
        let mut value_at = 0;
        loop {
            let end = (start + self.plan.page_rows).min(rows);
            let mut body = std::mem::take(&mut self.body);
            body.clear();
            let present = self.levels(nullable, start, end, &mut body);
            values(self, value_at, value_at + present, &mut body);
            value_at += present;
            self.write_page(chunk, body, (end - start) as u32, encoding, false)?;
            start = end;
            if start >= rows {
                return Ok(());
            }
        }
    }

    /// Appends the definition levels of rows `start..end` to `body` (nothing for a required
    /// column); returns how many of them have a value.
    fn levels(&mut self, nullable: bool, start: usize, end: usize, body: &mut Vec<u8>) -> usize {
        let n = end - start;
        let present = count_bits(&self.bitmap, start, end);
        if !nullable {
            return present;
        }
        let at = body.len();
        body.extend_from_slice(&[0; 4]);
        if present == n {
            bits::uleb((n as u64) << 1, body);
            body.push(1);
        } else if present == 0 {
            bits::uleb((n as u64) << 1, body);
            body.push(0);
        } else if start.is_multiple_of(8) {
            bits::hybrid_bitmap(&self.bitmap[start / 8..], n, body);
        } else {
            self.page_bits.clear();
            self.page_bits.resize(n.div_ceil(8), 0);
            for r in start..end {
                if self.bitmap[r / 8] >> (r % 8) & 1 == 1 {
                    let k = r - start;
                    self.page_bits[k / 8] |= 1 << (k % 8);
                }
            }
            bits::hybrid_bitmap(&self.page_bits, n, body);
        }
        let len = (body.len() - at - 4) as u32;
        body[at..at + 4].copy_from_slice(&len.to_le_bytes());
        present
    }

    /// Writes text data pages: `RLE_DICTIONARY` (indices into the chunk's dictionary, which
    /// grows with them) while the dictionary stays within [`DICTIONARY_LIMIT`], `PLAIN` after.
    /// The page that outgrows the limit is written `PLAIN` whole; when it is the chunk's
    /// first page, the chunk has no dictionary at all.
    fn text_pages(
        &mut self,
        open: &mut OpenChunk,
        plan: &ColumnPlan,
        rows: usize,
        texts: &[&[u8]],
    ) -> Result<(), ParquetError> {
        if open.dict_on {
            // sized for up to 1 Ki distinct values (most text columns have a few); it grows
            // for the others
            let dict = open
                .dict
                .get_or_insert_with(|| Dictionary::with_capacity(texts.len().min(1024)));
            self.indices.clear();
            let mut last: Option<(&[u8], u32)> = None;
            for &t in texts {
                // a repeat of the previous value (constant columns) needs no lookup
                let id = match last {
                    Some((l, id)) if l == t => id,
                    _ => dict.id(t),
                };
                last = Some((t, id));
                self.indices.push(id);
                if dict.page().len() > DICTIONARY_LIMIT {
                    open.dict_on = false;
                    break;
                }
            }
            if open.dict_pages == 0 && !open.dict_on {
                open.dict = None;
            }
        }
        if open.dict_on {
            let len = open.dict.as_ref().map_or(0, Dictionary::len);
            let width = bits::width(len.saturating_sub(1) as u64).max(1);
            open.dict_pages += 1;
            self.data_pages(
                &mut open.chunk,
                plan,
                rows,
                Encoding::RLE_DICTIONARY,
                |this, from, to, body| {
                    body.push(width as u8);
                    bits::hybrid(&this.indices[from..to], width, body);
                },
            )
        } else {
            self.data_pages(
                &mut open.chunk,
                plan,
                rows,
                Encoding::PLAIN,
                |_, from, to, body| {
                    for t in &texts[from..to] {
                        plain_bytes(t, body);
                    }
                },
            )
        }
    }

    /// `data` compressed with the file's ZSTD context.
    fn compress(&mut self, data: &[u8]) -> Result<Vec<u8>, ParquetError> {
        let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
        self.zstd
            .compress_to_buffer(data, &mut out)
            .map_err(general)?;
        Ok(out)
    }

    /// Compresses (or not, as the chunk decided) and writes one page whose uncompressed body
    /// is `body`.
    fn write_page(
        &mut self,
        chunk: &mut Chunk,
        body: Vec<u8>,
        num_values: u32,
        encoding: Encoding,
        dictionary: bool,
    ) -> Result<(), ParquetError> {
        let raw = body.len();
        let mut data = None;
        if chunk.compress.is_none() {
            // the chunk's first page decides for the whole chunk: ZSTD on its tail, or, when
            // the page is less than twice the probe, on all of it (probing would then cost
            // more than it can save, and the page is compressed once either way)
            let whole = raw < 2 * PROBE_BYTES;
            let probe = &body[if whole { 0 } else { raw - PROBE_BYTES }..];
            let out = self.compress(probe)?;
            let worth = (out.len() as f64) < (1.0 - WORTH_COMPRESSING) * probe.len() as f64;
            chunk.compress = Some(worth);
            if worth && whole {
                data = Some(Bytes::from(out));
            }
        }
        let data = match data {
            Some(d) => d,
            None if chunk.compress == Some(true) => Bytes::from(self.compress(&body)?),
            None => Bytes::copy_from_slice(&body),
        };
        self.body = body;
        let (page, page_type) = if dictionary {
            (
                Page::DictionaryPage {
                    buf: data,
                    num_values,
                    encoding,
                    is_sorted: false,
                },
                PageType::DICTIONARY_PAGE,
            )
        } else {
            (
                Page::DataPage {
                    buf: data,
                    num_values,
                    encoding,
                    def_level_encoding: Encoding::RLE,
                    rep_level_encoding: Encoding::RLE,
                    statistics: None,
                },
                PageType::DATA_PAGE,
            )
        };
        let spec =
            SerializedPageWriter::new(&mut chunk.out).write_page(CompressedPage::new(page, raw))?;
        chunk.uncompressed += spec.uncompressed_size as i64;
        chunk.compressed += spec.compressed_size as i64;
        if dictionary {
            chunk.dictionary_page_offset = Some(spec.offset as i64);
        } else if chunk.data_page_offset.is_none() {
            chunk.data_page_offset = Some(spec.offset as i64);
        }
        chunk.note(page_type, encoding);
        Ok(())
    }
}

/// Appends the values of `a` that are not null, converted by `f`.
fn gather<T: ArrowPrimitiveType, U>(
    a: &arrow_array::PrimitiveArray<T>,
    out: &mut Vec<U>,
    f: impl Fn(T::Native) -> U,
) {
    let values = a.values();
    match a.nulls() {
        None => out.extend(values.iter().map(|&v| f(v))),
        Some(n) => {
            // a word of validity at a time: a full word is one run of 64 values, an empty
            // one is skipped, and only a mixed one is walked bit by bit
            let chunks = n.inner().bit_chunks();
            let mut word = |bits: u64, base: usize, len: usize| {
                if len == 64 && bits == u64::MAX {
                    out.extend(values[base..base + 64].iter().map(|&v| f(v)));
                } else {
                    let mut w = bits;
                    while w != 0 {
                        out.push(f(values[base + w.trailing_zeros() as usize]));
                        w &= w - 1;
                    }
                }
            };
            let mut base = 0;
            for bits in chunks.iter() {
                word(bits, base, 64);
                base += 64;
            }
            word(chunks.remainder_bits(), base, chunks.remainder_len());
        }
    }
}

/// `PLAIN` fixed-width values: each value's little-endian bytes (`bytes`), which on a
/// little-endian target are the values' own bytes, copied in one piece.
fn plain<T: ArrowNativeType, const N: usize>(
    values: &[T],
    bytes: fn(T) -> [u8; N],
    out: &mut Vec<u8>,
) {
    if cfg!(target_endian = "little") {
        out.extend_from_slice(values.to_byte_slice());
    } else {
        out.reserve(values.len() * N);
        for &v in values {
            out.extend_from_slice(&bytes(v));
        }
    }
}

/// `BYTE_STREAM_SPLIT` reals: byte 0 of every value, then byte 1 of every value, … byte 7.
fn byte_stream_split(values: &[f64], out: &mut Vec<u8>) {
    let n = values.len();
    let at = out.len();
    out.resize(at + 8 * n, 0);
    // eight values at a time: each of their bytes lands in a different stream, and a block
    // of eight values fills one 8-byte word of every stream
    let mut blocks = values.chunks_exact(8);
    let mut i = 0;
    for block in &mut blocks {
        let mut word = [[0u8; 8]; 8];
        for (j, v) in block.iter().enumerate() {
            for (k, b) in v.to_le_bytes().into_iter().enumerate() {
                word[k][j] = b;
            }
        }
        for (k, w) in word.iter().enumerate() {
            out[at + k * n + i..at + k * n + i + 8].copy_from_slice(w);
        }
        i += 8;
    }
    for v in blocks.remainder() {
        for (k, b) in v.to_le_bytes().into_iter().enumerate() {
            out[at + k * n + i] = b;
        }
        i += 1;
    }
}

/// Sets bits `from..from + n`.
fn set_bits(bits: &mut [u8], from: usize, n: usize) {
    let end = from + n;
    let mut r = from;
    while r < end && !r.is_multiple_of(8) {
        bits[r / 8] |= 1 << (r % 8);
        r += 1;
    }
    let whole = (end - r) / 8;
    bits[r / 8..r / 8 + whole].fill(0xff);
    r += whole * 8;
    while r < end {
        bits[r / 8] |= 1 << (r % 8);
        r += 1;
    }
}

crate::dispatched! {
/// Number of set bits in `from..to`.
fn count_bits(bits: &[u8], from: usize, to: usize) -> usize {
    let mut n = 0;
    let mut r = from;
    while r < to && !r.is_multiple_of(8) {
        n += (bits[r / 8] >> (r % 8) & 1) as usize;
        r += 1;
    }
    while r + 64 <= to {
        let w = u64::from_le_bytes(bits[r / 8..r / 8 + 8].try_into().unwrap_or([0; 8]));
        n += w.count_ones() as usize;
        r += 64;
    }
    while r + 8 <= to {
        n += bits[r / 8].count_ones() as usize;
        r += 8;
    }
    while r < to {
        n += (bits[r / 8] >> (r % 8) & 1) as usize;
        r += 1;
    }
    n
}
}

/// A `PLAIN` byte array: its length (4 bytes, little endian), then its bytes.
fn plain_bytes(t: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(t.len() as u32).to_le_bytes());
    out.extend_from_slice(t);
}

crate::dispatched! {
/// Min and max of reals, NaN left out, and the count of NaNs, which the IEEE 754 total
/// order that the parquet crate declares for floating-point columns requires.
fn float_extremes(values: &[f64]) -> (Option<(f64, f64)>, u64) {
    let nans = values.iter().filter(|v| v.is_nan()).count() as u64;
    // NaN compares false both ways, so once a first number is found, NaNs never win
    let first = values.iter().position(|v| !v.is_nan());
    (first.and_then(|at| min_max(&values[at..], |v| v)), nans)
}
}

crate::dispatched! {
/// Least and greatest of `values` under `key` (by `PartialOrd`: a key incomparable to the
/// first, like NaN, never replaces it), in one pass over four independent lanes so that the
/// compare-and-select chains overlap instead of waiting on each other.
fn min_max<T: Copy, K: Copy + PartialOrd>(values: &[T], key: impl Fn(T) -> K) -> Option<(K, K)> {
    /// Widens `lo..=hi` to take in `v`.
    #[inline(always)]
    fn widen<K: Copy + PartialOrd>(lo: &mut K, hi: &mut K, v: K) {
        if v < *lo {
            *lo = v;
        }
        if v > *hi {
            *hi = v;
        }
    }
    let first = key(*values.first()?);
    let (mut lo, mut hi) = ([first; 4], [first; 4]);
    let mut quads = values.chunks_exact(4);
    for q in &mut quads {
        for l in 0..4 {
            widen(&mut lo[l], &mut hi[l], key(q[l]));
        }
    }
    for &v in quads.remainder() {
        widen(&mut lo[0], &mut hi[0], key(v));
    }
    let (mut min, mut max) = (lo[0], hi[0]);
    for l in 1..4 {
        widen(&mut min, &mut max, lo[l]);
        widen(&mut min, &mut max, hi[l]);
    }
    Some((min, max))
}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chunk statistics of reals `values` with `nulls` nulls, as one page gives them.
    fn float_statistics(values: &[f64], nulls: u64) -> Statistics {
        let (m, nans) = float_extremes(values);
        Extremes::Real(m, nans).statistics(nulls).unwrap()
    }

    /// The word-at-a-time gather keeps exactly the valid values, in order, whatever the
    /// pattern (full, empty and mixed words, a tail) and the array's offset.
    #[test]
    fn gather_keeps_the_valid_values() {
        let cells: Vec<Option<u64>> = (0..300u64)
            .map(|i| match i {
                0..64 => Some(i),
                64..128 => None,
                _ => (i % 3 != 0).then_some(i),
            })
            .collect();
        let a = arrow_array::UInt64Array::from(cells.clone());
        for (off, len) in [(0, 300), (5, 290), (64, 200), (130, 7), (0, 0)] {
            let s = a.slice(off, len);
            let mut out = Vec::new();
            gather(&s, &mut out, |v| v as i64);
            let want: Vec<i64> = cells[off..off + len]
                .iter()
                .flatten()
                .map(|&v| v as i64)
                .collect();
            assert_eq!(out, want, "slice {off}+{len}");
        }
    }

    #[test]
    fn min_max_agrees_with_a_plain_scan() {
        assert_eq!(min_max::<u64, u64>(&[], |v| v), None);
        for n in 1..=11usize {
            let v: Vec<i64> = (0..n as i64).map(|i| (i * 7919) % 13 - 6).collect();
            let m = min_max(&v, |x| x);
            assert_eq!(
                m,
                Some((*v.iter().min().unwrap(), *v.iter().max().unwrap()))
            );
            // natural columns: the i64 bit pattern ordered as u64
            let u = min_max(&v, |x| x as u64).unwrap();
            let us: Vec<u64> = v.iter().map(|&x| x as u64).collect();
            assert_eq!(u, (*us.iter().min().unwrap(), *us.iter().max().unwrap()));
        }
        let reals = [f64::NAN, 3.0, f64::NAN, -1.5, 9.25, f64::NAN, 0.0];
        match float_statistics(&reals, 0) {
            Statistics::Double(s) => {
                assert_eq!((s.min_opt(), s.max_opt()), (Some(&-1.5), Some(&9.25)));
            }
            other => panic!("{other:?}"),
        }
        match float_statistics(&[f64::NAN, f64::NAN], 0) {
            Statistics::Double(s) => assert_eq!((s.min_opt(), s.max_opt()), (None, None)),
            other => panic!("{other:?}"),
        }
        match float_statistics(&[0.0, f64::NAN], 0) {
            Statistics::Double(s) => {
                let (lo, hi) = (*s.min_opt().unwrap(), *s.max_opt().unwrap());
                assert!(lo == 0.0 && lo.is_sign_negative() && hi.is_sign_positive());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bit_helpers() {
        let mut b = vec![0u8; 4];
        set_bits(&mut b, 3, 20);
        assert_eq!(count_bits(&b, 0, 32), 20);
        assert_eq!(count_bits(&b, 0, 3), 0);
        assert_eq!(count_bits(&b, 3, 23), 20);
        assert_eq!(count_bits(&b, 5, 10), 5);
        let mut big = vec![0u8; 40];
        set_bits(&mut big, 1, 300);
        assert_eq!(count_bits(&big, 0, 320), 300);
        assert_eq!(count_bits(&big, 7, 301), 294);
    }
}
