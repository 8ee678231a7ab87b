//! The column encoder (`mplane_export::encode`) against independent readers: files of random
//! columns (nulls in every pattern, extreme values, pages and row groups cut at odd places,
//! dictionaries that overflow, every writer option the encoder takes) read back equal with
//! arrow-rs's reader, with the statistics arrow-rs computes, and with pyarrow and DuckDB; the
//! first of them again on emulated CPUs of each level the encoder's loops are compiled for.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use mplane::registry::Primitive;
use mplane_export::arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray,
    TimestampNanosecondArray, UInt64Array,
};
use mplane_export::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use mplane_export::parquet::basic::{Encoding, PageType};
use mplane_export::parquet::file::reader::{FileReader, SerializedFileReader};
use mplane_export::parquet::file::statistics::Statistics;
use mplane_export::{
    DictionaryPolicy, ExportSchema, Sink, SinkConfig, Statistics as Stats, WriterOptions,
};
use serde_json::{Value, json};

#[path = "support/readers.rs"]
mod readers;
use readers::{polars, py};

/// Deterministic test data (a seeded `fastrand` generator).
type Rng = fastrand::Rng;

/// `true` with `percent` % probability.
fn chance(rng: &mut Rng, percent: u64) -> bool {
    rng.u64(..100) < percent
}

fn schema() -> Arc<ExportSchema> {
    Arc::new(
        ExportSchema::from_elements(
            "http://ict-mplane.eu/registry/core",
            [
                ("start", Primitive::Time),
                ("octets.ip", Primitive::Natural),
                ("packets.ip", Primitive::Natural),
                ("location.latitude", Primitive::Real),
                ("flag.complete", Primitive::Boolean),
                ("source.ip4", Primitive::Address),
                ("measurement.algorithm", Primitive::String),
                ("destination.url", Primitive::Url),
            ],
        )
        .unwrap()
        // the first column required, as flow records declare theirs
        .with_required(|e| e == "start"),
    )
}

/// A batch of `n` random rows; `null_pct` per column, `wide` makes the url column
/// high-cardinality and long (its dictionary overflows).
fn batch(
    rng: &mut Rng,
    schema: &ExportSchema,
    row0: u64,
    n: usize,
    null_pct: [u64; 7],
    wide: bool,
) -> RecordBatch {
    let valid = |c: usize, rng: &mut Rng| !chance(rng, null_pct[c]);
    let t: Vec<i64> = (0..n)
        .map(|i| {
            1_700_000_000_000_000_000 + (row0 as i64 + i as i64) * 1_000_003
                - rng.u64(..1000) as i64
        })
        .collect();
    let octets: Vec<Option<u64>> = (0..n)
        .map(|_| {
            valid(0, rng).then(|| match rng.u64(..10) {
                0 => u64::MAX - rng.u64(..3),
                1 => 0,
                2 => 1 << 63,
                _ => rng.u64(..100_000),
            })
        })
        .collect();
    let packets: Vec<Option<u64>> = (0..n)
        .map(|i| valid(1, rng).then_some(i as u64 % 5))
        .collect();
    let lat: Vec<Option<f64>> = (0..n)
        .map(|_| {
            valid(2, rng).then(|| match rng.u64(..12) {
                0 => 0.0,
                1 => -0.0,
                2 => f64::INFINITY,
                3 => -1e300,
                _ => rng.u64(..1 << 20) as f64 * 0.5 - 1000.0,
            })
        })
        .collect();
    let flag: Vec<Option<bool>> = (0..n)
        .map(|_| valid(3, rng).then(|| chance(rng, 30)))
        .collect();
    let ip: Vec<Option<String>> = (0..n)
        .map(|_| valid(4, rng).then(|| format!("10.0.{}.{}", rng.u64(..4), rng.u64(..256))))
        .collect();
    let alg: Vec<Option<String>> = (0..n)
        .map(|_| {
            valid(5, rng).then(|| match rng.u64(..4) {
                0 => String::new(),
                1 => "αλγόριθμος".to_string(),
                _ => format!("alg-{}", rng.u64(..7)),
            })
        })
        .collect();
    let url: Vec<Option<String>> = (0..n)
        .map(|_| {
            valid(6, rng).then(|| {
                if wide {
                    format!("https://example.org/{}/{}", rng.u64(..), "x".repeat(400))
                } else {
                    format!("https://example.org/{}", rng.u64(..20))
                }
            })
        })
        .collect();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(TimestampNanosecondArray::from(t).with_timezone("UTC")),
        Arc::new(UInt64Array::from(octets)),
        Arc::new(UInt64Array::from(packets)),
        Arc::new(Float64Array::from(lat)),
        Arc::new(BooleanArray::from(flag)),
        Arc::new(StringArray::from(ip)),
        Arc::new(StringArray::from(alg)),
        Arc::new(StringArray::from(url)),
    ];
    RecordBatch::try_new(schema.arrow().clone(), cols).unwrap()
}

/// The batches as one (arrays rebuilt value by value: a second, independent path).
fn concat(schema: &mplane_export::arrow_schema::SchemaRef, batches: &[RecordBatch]) -> RecordBatch {
    use mplane_export::arrow_array::cast::AsArray;
    use mplane_export::arrow_array::types::{Float64Type, TimestampNanosecondType, UInt64Type};
    use mplane_export::arrow_schema::DataType;
    let cols: Vec<ArrayRef> = (0..schema.fields().len())
        .map(|c| -> ArrayRef {
            let parts = batches.iter().map(|b| b.column(c));
            match schema.field(c).data_type() {
                DataType::UInt64 => Arc::new(UInt64Array::from(
                    parts
                        .flat_map(|a| a.as_primitive::<UInt64Type>().iter().collect::<Vec<_>>())
                        .collect::<Vec<_>>(),
                )),
                DataType::Timestamp(_, tz) => Arc::new(
                    TimestampNanosecondArray::from(
                        parts
                            .flat_map(|a| {
                                a.as_primitive::<TimestampNanosecondType>()
                                    .iter()
                                    .collect::<Vec<_>>()
                            })
                            .collect::<Vec<_>>(),
                    )
                    .with_timezone_opt(tz.clone()),
                ),
                DataType::Float64 => Arc::new(Float64Array::from(
                    parts
                        .flat_map(|a| a.as_primitive::<Float64Type>().iter().collect::<Vec<_>>())
                        .collect::<Vec<_>>(),
                )),
                DataType::Boolean => Arc::new(BooleanArray::from(
                    parts
                        .flat_map(|a| a.as_boolean().iter().collect::<Vec<_>>())
                        .collect::<Vec<_>>(),
                )),
                DataType::Utf8 => Arc::new(StringArray::from(
                    parts
                        .flat_map(|a| {
                            a.as_string::<i32>()
                                .iter()
                                .map(|s| s.map(str::to_string))
                                .collect::<Vec<_>>()
                        })
                        .collect::<Vec<_>>(),
                )),
                t => panic!("type {t}"),
            }
        })
        .collect();
    RecordBatch::try_new(schema.clone(), cols).unwrap()
}

fn write(
    dir: &Path,
    schema: &Arc<ExportSchema>,
    opts: WriterOptions,
    batches: &[RecordBatch],
) -> PathBuf {
    assert!(
        opts.format(schema).unwrap().uses_column_encoder(),
        "{opts:?}"
    );
    let mut cfg = SinkConfig::new(dir, "enc");
    cfg.writer = opts;
    let mut sink = Sink::open(cfg, schema.clone()).unwrap();
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for b in batches {
        sink.write(b, now).unwrap();
    }
    let report = sink.finish(now).unwrap();
    assert_eq!(report.files.len(), 1);
    report.files[0].path.clone()
}

fn read_back(p: &Path) -> RecordBatch {
    let f = fs::File::open(p).unwrap();
    let r = ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = r.map(|b| b.unwrap()).collect();
    let schema = batches[0].schema();
    concat(&schema, &batches)
}

/// `count` batches of `rows` random rows each (10 % nulls per column; `wide`: distinct long
/// urls), numbered on from row 0.
fn batches(seed: u64, count: u64, rows: usize, wide: bool) -> Vec<RecordBatch> {
    let schema = schema();
    let mut rng = Rng::with_seed(seed);
    (0..count)
        .map(|j| batch(&mut rng, &schema, j * rows as u64, rows, [10; 7], wide))
        .collect()
}

/// The file at `p` reads back with arrow-rs as `want`, column by column.
fn assert_reads_back(p: &Path, want: &RecordBatch, what: &str) {
    let got = read_back(p);
    assert_eq!(got.num_rows(), want.num_rows(), "{what}");
    for c in 0..want.num_columns() {
        assert_eq!(
            got.column(c).as_ref(),
            want.column(c).as_ref(),
            "{what}: column {}",
            want.schema().field(c).name()
        );
    }
}

/// Chunk statistics of column `c` over all row groups: (min, max, nulls) as i64 bits.
fn int_stats(p: &Path, c: usize) -> Vec<(Option<i64>, Option<i64>, Option<u64>)> {
    let r = SerializedFileReader::new(fs::File::open(p).unwrap()).unwrap();
    (0..r.num_row_groups())
        .map(|g| match r.metadata().row_group(g).column(c).statistics() {
            Some(Statistics::Int64(s)) => (
                s.min_opt().copied(),
                s.max_opt().copied(),
                s.null_count_opt(),
            ),
            other => panic!("column {c}: {other:?}"),
        })
        .collect()
}

#[test]
fn random_files_read_back_equal_with_arrow_rs() {
    let schema = schema();
    let configs = [
        WriterOptions::default(),
        WriterOptions {
            row_group_rows: 100,
            data_page_rows: 37,
            zstd_level: 1,
            skip_incompressible: false,
            ..WriterOptions::default()
        },
        WriterOptions {
            row_group_rows: 1000,
            data_page_rows: 64,
            dictionary: DictionaryPolicy::None,
            delta_integers: false,
            statistics: Stats::TimeOnly,
            skip_incompressible: true,
            ..WriterOptions::default()
        },
        WriterOptions {
            row_group_rows: 333,
            dictionary: DictionaryPolicy::StringsOnly,
            statistics: Stats::None,
            zstd_level: 0,
            ..WriterOptions::default()
        },
        WriterOptions {
            row_group_rows: 500,
            data_page_rows: 13,
            split_reals: true,
            ..WriterOptions::default()
        },
    ];
    for (k, opts) in configs.into_iter().enumerate() {
        let mut rng = Rng::with_seed(0x9e37_79b9_7f4a_7c15 + k as u64);
        let dir = tempfile::tempdir().unwrap();
        let mut batches = Vec::new();
        let mut row0 = 0;
        for j in 0..12 {
            let n = [0, 1, 7, 8, 9, 250, 1000, 3][j % 8] + rng.u64(..40) as usize;
            let nulls = match j % 4 {
                0 => [0; 7],
                1 => [100; 7],
                2 => [50, 10, 90, 30, 20, 60, 5],
                _ => [1, 99, 0, 100, 3, 0, 50],
            };
            batches.push(batch(&mut rng, &schema, row0, n, nulls, j == 6));
            row0 += n as u64;
        }
        let p = write(dir.path(), &schema, opts.clone(), &batches);
        let want = concat(schema.arrow(), &batches);
        assert_reads_back(&p, &want, &format!("config {k}"));
        // chunk statistics as arrow-rs computes them (unsigned order for natural columns)
        if opts.statistics == Stats::NonText {
            let r = SerializedFileReader::new(fs::File::open(&p).unwrap()).unwrap();
            let mut at = 0usize;
            for (g, (min, max, nulls)) in int_stats(&p, 1).into_iter().enumerate() {
                let rows = r.metadata().row_group(g).num_rows() as usize;
                let col = want.column(1).slice(at, rows);
                let col = col.as_any().downcast_ref::<UInt64Array>().unwrap();
                let vals: Vec<u64> = col.iter().flatten().collect();
                if opts.statistics == Stats::NonText {
                    assert_eq!(
                        min.map(|v| v as u64),
                        vals.iter().copied().min(),
                        "config {k} rg {g}"
                    );
                    assert_eq!(
                        max.map(|v| v as u64),
                        vals.iter().copied().max(),
                        "config {k} rg {g}"
                    );
                    assert_eq!(nulls, Some(col.null_count() as u64));
                }
                at += rows;
            }
            // reals: the NaN count that their IEEE 754 column order asks for (no NaN here)
            for g in 0..r.num_row_groups() {
                match r.metadata().row_group(g).column(3).statistics() {
                    Some(Statistics::Double(s)) => assert_eq!(s.nan_count_opt(), Some(0)),
                    other => panic!("config {k} rg {g}: {other:?}"),
                }
            }
        }
    }
}

/// The encoder's loops over every value run in three versions (x86-64-v3, x86-64-v2 and the
/// baseline) that the CPU picks at run time (`mplane_export::dispatched!`); this machine runs
/// one. `qemu-x86_64` (Debian's `qemu-user`) runs the test above on CPUs of each level: a
/// baseline one, an Atom (Denverton) and a Haswell. (`probe/tests/passive/cpus.rs` checks what
/// each model offers, and compares `mpcom replay`'s files byte for byte.)
#[test]
fn random_files_read_back_equal_on_every_cpu_level() {
    if !cfg!(target_arch = "x86_64") {
        eprintln!("skipping: the dispatched versions are x86-64 ones");
        return;
    }
    let me = std::env::current_exe().unwrap();
    for model in ["qemu64", "Denverton", "Haswell"] {
        let out = std::process::Command::new("qemu-x86_64")
            .args(["-cpu", model])
            .arg(&me)
            .args([
                "random_files_read_back_equal_with_arrow_rs",
                "--exact",
                "--test-threads",
                "1",
            ])
            .output()
            .unwrap_or_else(|e| panic!("qemu-x86_64 (Debian package qemu-user): {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "-cpu {model}: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_column_zstd_cannot_shrink_is_stored_uncompressed() {
    let schema = schema();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::with_seed(7);
    let batches: Vec<RecordBatch> = (0..20)
        .map(|j| {
            let b = batch(&mut rng, &schema, j * 500, 500, [0; 7], false);
            // uniformly random 17-bit counters: nothing for ZSTD to find in their deltas
            let noise: ArrayRef = Arc::new(UInt64Array::from_iter_values(
                (0..500).map(|_| rng.u64(..1 << 17)),
            ));
            let mut cols = b.columns().to_vec();
            cols[1] = noise;
            RecordBatch::try_new(b.schema(), cols).unwrap()
        })
        .collect();
    let opts = WriterOptions {
        row_group_rows: 500,
        ..WriterOptions::default()
    };
    let p = write(dir.path(), &schema, opts.clone(), &batches);
    let r = SerializedFileReader::new(fs::File::open(&p).unwrap()).unwrap();
    let codecs = |c: usize| -> Vec<String> {
        (0..r.num_row_groups())
            .map(|g| {
                r.metadata()
                    .row_group(g)
                    .column(c)
                    .compression()
                    .to_string()
            })
            .collect()
    };
    // random 17-bit counters: ZSTD gains nothing on their bit-packed deltas, so every chunk
    // is stored as it is
    assert!(
        codecs(1).iter().all(|c| c == "UNCOMPRESSED"),
        "{:?}",
        codecs(1)
    );
    // packet counts cycle through five values and a few distinct urls repeat: ZSTD pays,
    // every chunk is compressed
    for c in [2, 7] {
        assert!(
            codecs(c).iter().all(|c| c.starts_with("ZSTD")),
            "{c}: {:?}",
            codecs(c)
        );
    }
    assert_eq!(read_back(&p).num_rows(), 10_000);
    // without the probe, every chunk is compressed
    let dir = tempfile::tempdir().unwrap();
    let all = WriterOptions {
        skip_incompressible: false,
        ..opts
    };
    let p = write(dir.path(), &schema, all, &batches);
    let r = SerializedFileReader::new(fs::File::open(&p).unwrap()).unwrap();
    for g in 0..r.num_row_groups() {
        for c in r.metadata().row_group(g).columns() {
            assert!(c.compression().to_string().starts_with("ZSTD"));
        }
    }
    assert_eq!(read_back(&p).num_rows(), 10_000);
}

const PYARROW_ROWS: &str = r#"
import json, sys
import pyarrow as pa, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1]).drop_columns(["start"])
out = []
for r in t.to_pylist():
    o = {}
    for k, v in r.items():
        if v is None: o[k] = None
        elif isinstance(v, bool): o[k] = v
        elif isinstance(v, float): o[k] = repr(v)
        else: o[k] = str(v)
    out.append(o)
print(json.dumps(out))
"#;

const PYARROW_START_NS: &str = r#"
import json, sys
import pyarrow as pa, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
print(json.dumps([str(x) for x in t.column("start").cast(pa.int64()).to_pylist()]))
"#;

/// Filters that row-group statistics can decide: DuckDB prunes row groups by them, so a wrong
/// minimum or maximum (e.g. unsigned values ordered as signed) loses rows here.
const DUCKDB_PRUNED: &str = r#"
import json, sys, duckdb
c = duckdb.connect()
q = lambda w: c.execute("SELECT count(*) FROM read_parquet(?) WHERE " + w, [sys.argv[1]]).fetchone()[0]
print(json.dumps([str(q(w)) for w in sys.argv[2:]]))
"#;

const DUCKDB_AGG: &str = r#"
import json, sys, duckdb
c = duckdb.connect()
r = c.execute("""SELECT count(*), count(octets_ip), sum(octets_ip)::VARCHAR, min(epoch_ns(start))::VARCHAR,
  max(epoch_ns(start))::VARCHAR, count(DISTINCT destination_url), sum(length(destination_url))::VARCHAR,
  count(flag_complete) FILTER (WHERE flag_complete), sum(packets_ip)::VARCHAR
  FROM read_parquet(?)""", [sys.argv[1]]).fetchone()
print(json.dumps([str(x) for x in r]))
"#;

fn py_float(v: f64) -> String {
    // Python's repr of the floats this test writes
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    if v.abs() >= 1e16 {
        let s = format!("{v:e}"); // -1e300
        return s.replace('e', "e+").replace("e+-", "e-");
    }
    if v.fract() == 0.0 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

/// Every value of the real column as polars reads it (Python's repr); run by [`polars`].
const POLARS_REALS: &str = r#"
df = pl.read_parquet(sys.argv[1])
print(json.dumps({"reals": [None if v is None else repr(v) for v in df["location_latitude"].to_list()]}))
"#;

#[test]
fn odd_pages_and_overflowing_dictionaries_read_in_pyarrow_and_duckdb() {
    odd_pages_read_in_pyarrow_and_duckdb(false);
}

#[test]
fn reals_split_into_byte_streams_read_in_pyarrow_duckdb_and_polars() {
    odd_pages_read_in_pyarrow_and_duckdb(true);
}

/// Pages and row groups cut at odd places, nulls in every pattern, dictionaries that
/// overflow: every value read back by pyarrow, aggregates and pruned filters by DuckDB, and
/// with `split_reals` (`BYTE_STREAM_SPLIT`) every real by polars too.
fn odd_pages_read_in_pyarrow_and_duckdb(split_reals: bool) {
    let schema = schema();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::with_seed(42);
    let mut batches = Vec::new();
    let mut row0 = 0;
    for (j, n) in [5usize, 300, 64, 1, 777, 90].into_iter().enumerate() {
        let nulls = [
            [0; 7],
            [40; 7],
            [100, 0, 100, 0, 100, 0, 100],
            [3, 97, 50, 50, 10, 90, 20],
        ][j % 4];
        batches.push(batch(&mut rng, &schema, row0, n, nulls, j == 4));
        row0 += n as u64;
    }
    let opts = WriterOptions {
        row_group_rows: 400,
        data_page_rows: 29,
        split_reals,
        ..WriterOptions::default()
    };
    let p = write(dir.path(), &schema, opts, &batches);
    let r = SerializedFileReader::new(fs::File::open(&p).unwrap()).unwrap();
    let real = r.metadata().row_group(0).column(3);
    assert_eq!(
        real.encodings().any(|e| e == Encoding::BYTE_STREAM_SPLIT),
        split_reals,
        "{:?}",
        real.encodings().collect::<Vec<_>>()
    );
    let all = concat(schema.arrow(), &batches);
    let n = all.num_rows();

    // pyarrow: every value of every row
    let rows = py(PYARROW_ROWS, &[p.to_str().unwrap()]);
    let start_ns = py(PYARROW_START_NS, &[p.to_str().unwrap()]);
    let col = |c: usize| all.column(c).clone();
    let t = col(0);
    let t = t
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()
        .unwrap();
    let u = |c: usize| {
        col(c)
            .as_any()
            .downcast_ref::<UInt64Array>()
            .unwrap()
            .clone()
    };
    let (octets, packets) = (u(1), u(2));
    let lat = col(3);
    let lat = lat.as_any().downcast_ref::<Float64Array>().unwrap();
    let flag = col(4);
    let flag = flag.as_any().downcast_ref::<BooleanArray>().unwrap();
    let s = |c: usize| {
        col(c)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .clone()
    };
    let (ip, alg, url) = (s(5), s(6), s(7));
    assert_eq!(rows.as_array().unwrap().len(), n);
    for i in 0..n {
        let r = &rows[i];
        assert_eq!(start_ns[i], t.value(i).to_string(), "row {i}");
        let opt_u = |a: &UInt64Array| a.is_valid(i).then(|| a.value(i).to_string());
        let opt_s = |a: &StringArray| a.is_valid(i).then(|| a.value(i).to_string());
        let want = json!({
            "octets_ip": opt_u(&octets),
            "packets_ip": opt_u(&packets),
            "location_latitude": lat.is_valid(i).then(|| py_float(lat.value(i))),
            "flag_complete": flag.is_valid(i).then(|| flag.value(i)),
            "source_ip4": opt_s(&ip),
            "measurement_algorithm": opt_s(&alg),
            "destination_url": opt_s(&url),
        });
        for (k, v) in want.as_object().unwrap() {
            assert_eq!(&r[k], v, "row {i} column {k}");
        }
    }

    // DuckDB: aggregates over every column
    let d = py(DUCKDB_AGG, &[p.to_str().unwrap()]);
    let sum_u = |a: &UInt64Array| a.iter().flatten().map(u128::from).sum::<u128>();
    let urls: std::collections::BTreeSet<&str> = url.iter().flatten().collect();
    let want: Value = json!([
        n.to_string(),
        (n - octets.null_count()).to_string(),
        sum_u(&octets).to_string(),
        t.iter().flatten().min().unwrap().to_string(),
        t.iter().flatten().max().unwrap().to_string(),
        urls.len().to_string(),
        url.iter()
            .flatten()
            .map(|s| s.chars().count())
            .sum::<usize>()
            .to_string(),
        flag.iter().flatten().filter(|&b| b).count().to_string(),
        sum_u(&packets).to_string(),
    ]);
    assert_eq!(d, want);

    // DuckDB with filters its row-group pruning decides from our statistics
    let big = 1u64 << 63;
    let t_mid = t.value(n / 2);
    let wheres = [
        format!("octets_ip >= {big}"),
        format!("octets_ip < {big}"),
        "octets_ip = 18446744073709551615".to_string(),
        format!("epoch_ns(start) > {t_mid}"),
        "location_latitude > 1000".to_string(),
        "location_latitude = 'inf'::DOUBLE".to_string(),
        "location_latitude < 0".to_string(),
        "packets_ip = 4".to_string(),
    ];
    let args: Vec<&str> = std::iter::once(p.to_str().unwrap())
        .chain(wheres.iter().map(String::as_str))
        .collect();
    let got = py(DUCKDB_PRUNED, &args);
    let count_u =
        |a: &UInt64Array, f: &dyn Fn(u64) -> bool| a.iter().flatten().filter(|&v| f(v)).count();
    let count_f = |f: &dyn Fn(f64) -> bool| lat.iter().flatten().filter(|&v| f(v)).count();
    let want = json!([
        count_u(&octets, &|v| v >= big).to_string(),
        count_u(&octets, &|v| v < big).to_string(),
        count_u(&octets, &|v| v == u64::MAX).to_string(),
        t.iter()
            .flatten()
            .filter(|&v| v > t_mid)
            .count()
            .to_string(),
        count_f(&|v| v > 1000.0).to_string(),
        count_f(&|v| v == f64::INFINITY).to_string(),
        count_f(&|v| v < 0.0).to_string(),
        count_u(&packets, &|v| v == 4).to_string(),
    ]);
    assert_eq!(got, want, "{wheres:?}");

    if split_reals && let Some(pl) = polars(POLARS_REALS, &[p.to_str().unwrap()]) {
        let want: Vec<Value> = lat
            .iter()
            .map(|v| v.map_or(Value::Null, |v| py_float(v).into()))
            .collect();
        assert_eq!(pl["reals"], Value::Array(want));
    }
}

#[test]
fn size_rotation_follows_the_compressed_size() {
    // the encoder holds the rows of a page it has not encoded yet as Arrow batches (several
    // times larger than their Parquet form): rotation by size must scale them by the sink's
    // ratio, not cut files early
    let schema = schema();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::with_seed(5);
    let mut cfg = SinkConfig::new(dir.path(), "size");
    cfg.max_file_bytes = 256 << 10;
    // a buffered row group is larger than the limit in Arrow form, a fraction of it on disk
    cfg.writer.row_group_rows = 4000;
    let mut sink = Sink::open(cfg, schema.clone()).unwrap();
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for j in 0..120 {
        let b = batch(&mut rng, &schema, j * 1000, 1000, [10; 7], false);
        sink.write(&b, now).unwrap();
    }
    let report = sink.finish(now).unwrap();
    assert!(report.files.len() >= 3, "{:?}", report.files);
    // the sink's first file is cut early: before its first row group it knows no ratio and
    // counts the Arrow bytes themselves; the others fill up to the limit
    let (last, full) = report.files.split_last().unwrap();
    for f in &full[1..] {
        assert!(
            f.bytes >= 160 << 10 && f.bytes <= 400 << 10,
            "{} bytes for a limit of 256 KiB: {:?}",
            f.bytes,
            report.files
        );
    }
    assert!(last.bytes <= 400 << 10);
    assert_eq!(report.files.iter().map(|f| f.rows).sum::<u64>(), 120_000);
}

/// Every value of the url column as pyarrow reads it, and DuckDB's count of distinct urls
/// and of their characters.
const URLS_READ_BACK: &str = r#"
import json, sys, duckdb
import pyarrow.parquet as pq
urls = pq.read_table(sys.argv[1], columns=["destination_url"]).column(0).to_pylist()
d = duckdb.connect().execute(
    "SELECT count(DISTINCT destination_url), sum(length(destination_url))::VARCHAR FROM read_parquet(?)",
    [sys.argv[1]]).fetchone()
print(json.dumps({"urls": urls, "duckdb": [str(d[0]), d[1]]}))
"#;

#[test]
fn a_dictionary_outgrowing_its_limit_mid_chunk_leaves_the_rest_plain() {
    // one row group of 8,000 rows of distinct ~440-byte urls: the dictionary passes 1 MiB
    // in the chunk's third page of 1,000 rows (then every page from it on is PLAIN), or in
    // its first page of 4,000 rows (then the chunk has no dictionary at all)
    let schema = schema();
    let batches = batches(11, 8, 1000, true);
    let want = concat(schema.arrow(), &batches);
    let urls = want
        .column(7)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap()
        .clone();
    for (page_rows, dictionary_pages) in [(1000usize, 2i32), (4000, 0)] {
        let dir = tempfile::tempdir().unwrap();
        let opts = WriterOptions {
            row_group_rows: 8000,
            data_page_rows: page_rows,
            ..WriterOptions::default()
        };
        let p = write(dir.path(), &schema, opts, &batches);
        let r = SerializedFileReader::new(fs::File::open(&p).unwrap()).unwrap();
        assert_eq!(r.num_row_groups(), 1);
        // the pages as they are in the file
        let data_pages = |c: usize, encoding: Encoding| -> i32 {
            let pages = r
                .get_row_group(0)
                .unwrap()
                .get_column_page_reader(c)
                .unwrap();
            pages
                .map(|p| p.unwrap())
                .filter(|p| p.page_type() == PageType::DATA_PAGE && p.encoding() == encoding)
                .count() as i32
        };
        assert_eq!(
            data_pages(7, Encoding::RLE_DICTIONARY),
            dictionary_pages,
            "{page_rows}"
        );
        assert_eq!(
            data_pages(7, Encoding::PLAIN),
            (8000 / page_rows) as i32 - dictionary_pages,
            "{page_rows}"
        );
        let url = r.metadata().row_group(0).column(7);
        assert_eq!(
            url.dictionary_page_offset().is_some(),
            dictionary_pages > 0,
            "{page_rows}"
        );
        // a column with few values keeps its dictionary across the pages of the chunk
        assert_eq!(
            data_pages(5, Encoding::RLE_DICTIONARY),
            (8000 / page_rows) as i32
        );
        assert_eq!(data_pages(5, Encoding::PLAIN), 0);

        assert_reads_back(&p, &want, &format!("pages of {page_rows} rows"));
        let back = py(URLS_READ_BACK, &[p.to_str().unwrap()]);
        let want_urls: Vec<Value> = urls
            .iter()
            .map(|u| u.map_or(Value::Null, |u| u.into()))
            .collect();
        assert_eq!(back["urls"], Value::Array(want_urls), "{page_rows}");
        let distinct: std::collections::BTreeSet<&str> = urls.iter().flatten().collect();
        let chars: usize = urls.iter().flatten().map(str::len).sum();
        assert_eq!(
            back["duckdb"],
            json!([distinct.len().to_string(), chars.to_string()]),
            "{page_rows}"
        );
    }
}

#[test]
fn a_row_group_ends_when_its_compressed_pages_reach_the_byte_bound() {
    // pages are encoded as rows arrive, so the bound counts compressed pages (and the rows
    // of a page not yet encoded), not the Arrow batches they came from: a row group holds
    // many times the rows that the bound's worth of Arrow batches would
    let schema = schema();
    let batches = batches(21, 60, 500, false);
    let arrow_per_row = batches
        .iter()
        .map(|b| b.get_array_memory_size())
        .sum::<usize>() as f64
        / 30_000.0;
    let bound = 96 << 10;
    let dir = tempfile::tempdir().unwrap();
    let opts = WriterOptions {
        row_group_rows: 1 << 20,
        row_group_bytes: bound,
        data_page_rows: 500,
        ..WriterOptions::default()
    };
    let p = write(dir.path(), &schema, opts, &batches);
    let r = SerializedFileReader::new(fs::File::open(&p).unwrap()).unwrap();
    let groups = r.num_row_groups();
    assert!(groups >= 2, "{groups} row groups");
    for g in 0..groups - 1 {
        let rg = r.metadata().row_group(g);
        let rows = rg.num_rows() as f64;
        assert!(
            rows > 3.0 * bound as f64 / arrow_per_row,
            "row group {g}: {rows} rows, {arrow_per_row:.0} Arrow bytes per row"
        );
        // closed at the page that reached the bound (a page here is ~10 KiB)
        let size = rg.compressed_size() as usize;
        assert!(
            size <= bound + (24 << 10) && size >= bound / 2,
            "row group {g}: {size} bytes for a bound of {bound}"
        );
    }
    assert_reads_back(&p, &concat(schema.arrow(), &batches), "bounded row groups");
}
