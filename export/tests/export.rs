//! Integration tests of mplane-export: files are read back by real readers
//! (pyarrow, DuckDB and, if it installs, polars, from PyPI in a venv under
//! `target/peer-venv-export`), crash and disk-full behaviour, retention.

use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mplane::registry::{Primitive, Registries};
use mplane_export::arrow_array::RecordBatch;
use mplane_export::metadata::{
    KEY_DROPS, KEY_ELEMENTS, KEY_IDENTITY, KEY_REGISTRY, KEY_SPECIFICATION, KEY_WINDOW,
};
use mplane_export::sink::{DROP_KEY_EXPORT_LOST, DROP_KEY_EXPORT_QUEUE};
use mplane_export::{
    ColumnsBuilder, ExportError, ExportSchema, ExportThread, FileMetadata, Partitioning, Retention,
    Sink, SinkConfig,
};
use serde_json::{Value, json};

#[path = "support/nfcapd.rs"]
mod nfcapd;
#[path = "support/readers.rs"]
mod readers;
use readers::{polars, py};

// -------------------------------------------------------------- fixtures ---

const SPEC: &str = r#"{"specification": "measure", "version": 1, "registry": "http://ict-mplane.eu/registry/core", "label": "flows", "when": "now + 1h", "parameters": {}, "results": ["start", "source.ip4", "destination.ip6", "octets.ip", "location.latitude", "flag.complete", "measurement.algorithm", "destination.url"]}"#;

fn all_prims_schema() -> Arc<ExportSchema> {
    Arc::new(
        ExportSchema::from_elements(
            "http://ict-mplane.eu/registry/core",
            [
                ("start", Primitive::Time),
                ("source.ip4", Primitive::Address),
                ("destination.ip6", Primitive::Address),
                ("octets.ip", Primitive::Natural),
                ("location.latitude", Primitive::Real),
                ("flag.complete", Primitive::Boolean),
                ("measurement.algorithm", Primitive::String),
                ("destination.url", Primitive::Url),
            ],
        )
        .unwrap(),
    )
}

const T0: i64 = 1_795_573_758_123_456_789; // 2026-11-25 02:29:18.123456789 UTC

/// Row `i` of the all-primitives schema; every 7th row has nulls.
fn fill(b: &mut ColumnsBuilder, from: u64, n: u64) {
    for i in from..from + n {
        b.append_time_ns(0, T0 + i as i64).unwrap();
        b.append_addr(1, IpAddr::from([10, 0, (i >> 8) as u8, i as u8]))
            .unwrap();
        if i % 7 == 3 {
            for c in 2..8 {
                b.append_null(c).unwrap();
            }
            continue;
        }
        b.append_addr(2, "2001:db8::1".parse().unwrap()).unwrap();
        b.append_u64(3, u64::MAX - i).unwrap();
        b.append_f64(4, i as f64 * 0.5).unwrap();
        b.append_bool(5, i % 2 == 0).unwrap();
        b.append_str(6, "alg-π").unwrap();
        b.append_str(7, "https://example.org/x").unwrap();
    }
}

fn batch(schema: &Arc<ExportSchema>, from: u64, n: u64) -> RecordBatch {
    let mut b = ColumnsBuilder::new(schema.clone(), n as usize);
    fill(&mut b, from, n);
    b.finish().unwrap()
}

fn at(ns: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns as u64)
}

/// All files below `dir` (recursive), sorted.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn visible_parquet(dir: &Path) -> Vec<PathBuf> {
    files_below(dir)
        .into_iter()
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            !n.starts_with('.') && n.ends_with(".parquet")
        })
        .collect()
}

fn tmp_files(dir: &Path) -> Vec<PathBuf> {
    files_below(dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect()
}

/// Rows of a Parquet file read with the Rust reader (checks it is complete).
fn rust_rows(p: &Path) -> usize {
    use mplane_export::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let f = fs::File::open(p).unwrap();
    let r = ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .build()
        .unwrap();
    r.map(|b| b.unwrap().num_rows()).sum()
}

// ----------------------------------------------------------------- tests ---

const PYARROW_CHECK: &str = r#"
import json, sys
import pyarrow.parquet as pq
p = sys.argv[1]
pf = pq.ParquetFile(p)
t = pf.read()
md = {k.decode(): v.decode() for k, v in (pf.metadata.metadata or {}).items()}
f = t.schema.field("source_ip4")
import pyarrow as pa
start_ns = t.column("start").cast(pa.int64()).to_pylist()
rows = t.drop_columns(["start"]).to_pylist()
print(json.dumps({
  "rows": t.num_rows,
  "names": t.schema.names,
  "types": [str(x.type) for x in t.schema],
  "field_md": {k.decode(): v.decode() for k, v in (f.metadata or {}).items()},
  "kv": md,
  "codec": pf.metadata.row_group(0).column(3).compression,
  "row0": {k: (str(v) if v is not None else None) for k, v in rows[0].items()},
  "nulls3": rows[3]["octets_ip"] is None,
  "start_ns": start_ns[:2],
  "sum_lat": sum(r["location_latitude"] or 0 for r in rows),
}))
"#;

const DUCKDB_CHECK: &str = r#"
import json, sys, duckdb
p = sys.argv[1]
c = duckdb.connect()
desc = c.execute("DESCRIBE SELECT * FROM read_parquet(?)", [p]).fetchall()
kv = c.execute("SELECT decode(key), decode(value) FROM parquet_kv_metadata(?)", [p]).fetchall()
agg = c.execute("SELECT count(*), count(octets_ip), min(epoch_ns(start)), max(octets_ip), sum(location_latitude), count(DISTINCT source_ip4), bool_and(destination_url = 'https://example.org/x') FROM read_parquet(?)", [p]).fetchone()
print(json.dumps({"types": {r[0]: r[1] for r in desc}, "kv": dict(kv), "agg": [str(x) for x in agg]}))
"#;

const POLARS_CHECK: &str = r#"
df = pl.read_parquet(sys.argv[1])
print(json.dumps({"height": df.height, "dtypes": {n: str(t) for n, t in zip(df.columns, df.dtypes)}}))
"#;

#[test]
fn single_file_reads_back_in_pyarrow_duckdb_polars() {
    let dir = tempfile::tempdir().unwrap();
    let schema = all_prims_schema();
    let mut cfg = SinkConfig::new(dir.path(), "flows");
    cfg.metadata = FileMetadata {
        specification: Some(SPEC.to_string()),
        identity: Some("Org.Probes.probe-1".into()),
        drops: BTreeMap::from([("kernel".into(), 7)]),
        ..FileMetadata::default()
    };
    cfg.drop_counters = Some(Arc::new(|| BTreeMap::from([("ring".to_string(), 5u64)])));
    let mut sink = Sink::open(cfg, schema.clone()).unwrap();
    let n = 1000u64;
    sink.write(&batch(&schema, 0, 600), at(T0)).unwrap();
    sink.write(&batch(&schema, 600, 400), at(T0 + 1_000_000))
        .unwrap();
    let report = sink.finish(at(T0 + 2_000_000_000)).unwrap();
    assert_eq!(report.files.len(), 1);
    let f = &report.files[0];
    assert_eq!(f.rows, n);
    assert_eq!(f.bytes, fs::metadata(&f.path).unwrap().len());
    assert_eq!(report.stats.rows_written, n);
    assert_eq!(report.stats.files_written, 1);
    assert!(tmp_files(dir.path()).is_empty());
    let p = f.path.to_str().unwrap();
    assert!(p.ends_with(".parquet"), "{p}");

    // pyarrow
    let v = py(PYARROW_CHECK, &[p]);
    assert_eq!(v["rows"], n);
    assert_eq!(
        v["names"],
        json!([
            "start",
            "source_ip4",
            "destination_ip6",
            "octets_ip",
            "location_latitude",
            "flag_complete",
            "measurement_algorithm",
            "destination_url"
        ])
    );
    assert_eq!(
        v["types"],
        json!([
            "timestamp[ns, tz=UTC]",
            "string",
            "string",
            "uint64",
            "double",
            "bool",
            "string",
            "string"
        ])
    );
    assert_eq!(v["field_md"]["mplane.element"], "source.ip4");
    assert_eq!(v["field_md"]["mplane.prim"], "address");
    assert_eq!(v["codec"], "ZSTD");
    assert_eq!(v["nulls3"], true);
    assert_eq!(v["start_ns"], json!([T0, T0 + 1]), "ns are exact");
    assert_eq!(v["row0"]["source_ip4"], "10.0.0.0");
    assert_eq!(v["row0"]["destination_ip6"], "2001:db8::1");
    assert_eq!(v["row0"]["octets_ip"], u64::MAX.to_string());
    assert_eq!(v["row0"]["flag_complete"], "True");
    assert_eq!(v["row0"]["measurement_algorithm"], "alg-π");
    let kv = &v["kv"];
    let elements: Value = serde_json::from_str(kv[KEY_ELEMENTS].as_str().unwrap()).unwrap();
    assert_eq!(elements[0], "start");
    assert_eq!(elements[5], "flag.complete");
    assert_eq!(kv[KEY_REGISTRY], "http://ict-mplane.eu/registry/core");
    assert_eq!(kv[KEY_SPECIFICATION], SPEC);
    assert_eq!(kv[KEY_IDENTITY], "Org.Probes.probe-1");
    let drops: Value = serde_json::from_str(kv[KEY_DROPS].as_str().unwrap()).unwrap();
    // Static counters plus the (constant, so zero) delta of the data plane's.
    assert_eq!(
        drops,
        json!({"kernel": 7, "ring": 0, DROP_KEY_EXPORT_QUEUE: 0, DROP_KEY_EXPORT_LOST: 0})
    );
    let window: Value = serde_json::from_str(kv[KEY_WINDOW].as_str().unwrap()).unwrap();
    assert_eq!(window["start"], "2026-11-25 02:29:18.123456");
    assert_eq!(window["start_ns"], T0);
    assert_eq!(window["end_ns"], T0 + 2_000_000_000);
    let expected_lat: f64 = (0..n).filter(|i| i % 7 != 3).map(|i| i as f64 * 0.5).sum();
    assert_eq!(v["sum_lat"].as_f64().unwrap(), expected_lat);

    // DuckDB
    let d = py(DUCKDB_CHECK, &[p]);
    let t = &d["types"];
    // DuckDB ≥ 1.2 keeps nanoseconds: its ns-precision TIMESTAMP WITH TIME ZONE.
    assert_eq!(t["start"], "TIMESTAMPTZ_NS", "{d}");
    assert_eq!(t["source_ip4"], "VARCHAR");
    assert_eq!(t["octets_ip"], "UBIGINT");
    assert_eq!(t["location_latitude"], "DOUBLE");
    assert_eq!(t["flag_complete"], "BOOLEAN");
    assert_eq!(t["measurement_algorithm"], "VARCHAR");
    assert_eq!(t["destination_url"], "VARCHAR");
    assert_eq!(d["kv"][KEY_SPECIFICATION], SPEC);
    assert_eq!(d["kv"][KEY_ELEMENTS], kv[KEY_ELEMENTS]);
    let nonnull = (0..n).filter(|i| i % 7 != 3).count();
    assert_eq!(
        d["agg"],
        json!([
            n.to_string(),
            nonnull.to_string(),
            T0.to_string(),
            u64::MAX.to_string(),
            format!("{expected_lat:.1}"),
            n.to_string(),
            "True"
        ])
    );

    // polars (optional)
    if let Some(pl) = polars(POLARS_CHECK, &[p]) {
        assert_eq!(pl["height"], n);
        assert_eq!(pl["dtypes"]["octets_ip"], "UInt64");
        assert_eq!(
            pl["dtypes"]["start"],
            "Datetime(time_unit='ns', time_zone='UTC')"
        );
    }
}

#[test]
fn registry_schema_matches_core_elements() {
    let core = Registries::core();
    let s =
        ExportSchema::from_registry(&core, &["start", "octets.ip", "location.latitude"]).unwrap();
    assert_eq!(s.columns()[2].prim, Primitive::Real);
    assert!(ExportSchema::from_registry(&core, &["flag.complete"]).is_err());
}

#[test]
fn hive_partitions_read_as_one_table() {
    let dir = tempfile::tempdir().unwrap();
    let schema = all_prims_schema();
    let mut cfg = SinkConfig::new(dir.path(), "flows");
    cfg.partitioning = Partitioning::Hive {
        probe: "probe/1".into(),
    };
    let mut sink = Sink::open(cfg, schema.clone()).unwrap();
    let hour = 3_600_000_000_000i64;
    // Three hours, two batches each; the hour change rotates the file.
    for h in 0..3 {
        for k in 0..2 {
            let from = (h * 2 + k) as u64 * 100;
            sink.write(&batch(&schema, from, 100), at(T0 + h * hour + k * 1000))
                .unwrap();
        }
    }
    let report = sink.finish(at(T0 + 3 * hour)).unwrap();
    assert_eq!(report.files.len(), 3);
    let rel: Vec<String> = report
        .files
        .iter()
        .map(|f| {
            f.path
                .parent()
                .unwrap()
                .strip_prefix(dir.path())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        rel,
        [
            "probe=probe_1/date=2026-11-25/hour=02",
            "probe=probe_1/date=2026-11-25/hour=03",
            "probe=probe_1/date=2026-11-25/hour=04"
        ]
    );
    let glob = format!("{}/**/*.parquet", dir.path().display());
    let v = py(
        r#"
import json, sys, duckdb
c = duckdb.connect()
r = c.execute("SELECT count(*), count(DISTINCT hour), min(probe), max(date)::VARCHAR, sum(CASE WHEN octets_ip IS NULL THEN 1 ELSE 0 END) FROM read_parquet(?, hive_partitioning=true)", [sys.argv[1]]).fetchone()
import pyarrow.dataset as ds
t = ds.dataset(sys.argv[2], format="parquet", partitioning="hive").to_table()
print(json.dumps({"duck": [str(x) for x in r], "arrow_rows": t.num_rows, "arrow_cols": t.schema.names[-3:]}))
"#,
        &[&glob, dir.path().to_str().unwrap()],
    );
    let nulls = (0..600u64).filter(|i| i % 7 == 3).count();
    assert_eq!(
        v["duck"],
        json!(["600", "3", "probe_1", "2026-11-25", nulls.to_string()])
    );
    assert_eq!(v["arrow_rows"], 600);
    assert_eq!(v["arrow_cols"], json!(["probe", "date", "hour"]));
}

#[test]
fn rotation_by_rows_and_age() {
    let dir = tempfile::tempdir().unwrap();
    let schema = all_prims_schema();
    let mut cfg = SinkConfig::new(dir.path(), "rot");
    cfg.max_file_rows = Some(1000);
    cfg.max_file_age = Duration::from_secs(60);
    let mut sink = Sink::open(cfg, schema.clone()).unwrap();
    for i in 0..10 {
        sink.write(&batch(&schema, i * 250, 250), at(T0)).unwrap();
    }
    // 2500 rows: two full files, 500 rows open.
    assert_eq!(sink.report(vec![]).files.len(), 2);
    assert!(sink.current_tmp().is_some());
    // Idle for longer than the age limit: tick commits.
    sink.tick(at(T0 + 61_000_000_000)).unwrap();
    assert!(sink.current_tmp().is_none());
    let report = sink.finish(at(T0 + 62_000_000_000)).unwrap();
    let rows: Vec<u64> = report.files.iter().map(|f| f.rows).collect();
    assert_eq!(rows, [1000, 1000, 500]);
    let vis = visible_parquet(dir.path());
    assert_eq!(vis.len(), 3);
    assert_eq!(vis.iter().map(|p| rust_rows(p)).sum::<usize>(), 2500);
    assert!(tmp_files(dir.path()).is_empty());
}

#[test]
fn rotation_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let schema = all_prims_schema();
    let mut cfg = SinkConfig::new(dir.path(), "size");
    cfg.max_file_bytes = 64 * 1024;
    cfg.writer.row_group_rows = 1024;
    let mut sink = Sink::open(cfg, schema.clone()).unwrap();
    for i in 0..40 {
        sink.write(&batch(&schema, i * 1000, 1000), at(T0)).unwrap();
    }
    let report = sink.finish(at(T0)).unwrap();
    assert!(report.files.len() >= 2, "{report:?}");
    assert_eq!(report.files.iter().map(|f| f.rows).sum::<u64>(), 40_000);
    for f in &report.files {
        assert_eq!(rust_rows(&f.path) as u64, f.rows);
    }
}

#[test]
fn schema_mismatch_and_bad_config_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let schema = all_prims_schema();
    let other = Arc::new(ExportSchema::from_elements("x", [("a", Primitive::Natural)]).unwrap());
    let mut sink = Sink::open(SinkConfig::new(dir.path(), "m"), schema).unwrap();
    assert!(matches!(
        sink.write(&batch_of(&other), at(T0)),
        Err(ExportError::SchemaMismatch)
    ));
    let st = sink.stats().snapshot();
    assert_eq!((st.errors, st.rows_lost), (1, 1), "counted, not silent");
    assert!(matches!(
        Sink::open(SinkConfig::new(dir.path(), "../evil"), other.clone()),
        Err(ExportError::Config(_))
    ));
    // A directory below a regular file cannot be created.
    let file = dir.path().join("plain");
    fs::write(&file, b"x").unwrap();
    let err = Sink::open(SinkConfig::new(file.join("sub"), "m"), other).unwrap_err();
    assert!(err.is_unwritable(), "{err:?}");
}

fn batch_of(schema: &Arc<ExportSchema>) -> RecordBatch {
    let mut b = ColumnsBuilder::new(schema.clone(), 1);
    b.append_u64(0, 1).unwrap();
    b.finish().unwrap()
}

#[test]
fn export_thread_blocking_never_drops() {
    let dir = tempfile::tempdir().unwrap();
    let schema = all_prims_schema();
    let mut cfg = SinkConfig::new(dir.path(), "replay");
    cfg.max_file_rows = Some(3000);
    let t = ExportThread::spawn(cfg, schema.clone(), 2).unwrap();
    let h = t.handle();
    let producers: Vec<_> = (0..2)
        .map(|w| {
            let h = h.clone();
            let schema = schema.clone();
            std::thread::spawn(move || {
                for i in 0..20 {
                    h.send_blocking(batch(&schema, (w * 20 + i) * 100, 100))
                        .unwrap();
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    let report = t.finish().unwrap();
    assert_eq!(report.stats.rows_dropped, 0);
    assert_eq!(report.stats.rows_written, 4000);
    assert_eq!(report.files.iter().map(|f| f.rows).sum::<u64>(), 4000);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(h.files(), report.files);
    assert!(matches!(
        h.send_blocking(batch(&schema, 0, 1)),
        Err(ExportError::Closed)
    ));
}

#[test]
fn export_thread_try_send_counts_drops() {
    let dir = tempfile::tempdir().unwrap();
    let schema = all_prims_schema();
    let t = ExportThread::spawn(SinkConfig::new(dir.path(), "live"), schema.clone(), 1).unwrap();
    let h = t.handle();
    let b = batch(&schema, 0, 2000);
    let mut queued = 0u64;
    for _ in 0..200 {
        if h.try_send(b.clone()) {
            queued += 1;
        }
    }
    let report = t.finish().unwrap();
    let dropped = 200 - queued;
    assert!(dropped > 0, "a queue of one batch should overflow");
    assert_eq!(report.stats.rows_dropped, dropped * 2000);
    assert_eq!(report.stats.rows_written, queued * 2000);
    // The drops are in the footer of the file that covers them.
    let p = report.files[0].path.to_str().unwrap().to_string();
    let v = py(
        r#"
import json, sys, pyarrow.parquet as pq
md = pq.ParquetFile(sys.argv[1]).metadata.metadata
print(md[b"mplane.drops"].decode())
"#,
        &[&p],
    );
    assert_eq!(v[DROP_KEY_EXPORT_QUEUE], dropped * 2000);
}

#[test]
fn retention_removes_oldest_first_never_the_open_file() {
    let dir = tempfile::tempdir().unwrap();
    let schema = all_prims_schema();
    let mut cfg = SinkConfig::new(dir.path(), "ret");
    cfg.max_file_rows = Some(500);
    // Size of one 500-row file, to set a quota of about three files.
    let one = {
        let d = tempfile::tempdir().unwrap();
        let c = SinkConfig::new(d.path(), "ret");
        let mut s = Sink::open(c, schema.clone()).unwrap();
        s.write(&batch(&schema, 0, 500), at(T0)).unwrap();
        s.finish(at(T0)).unwrap().files[0].bytes
    };
    cfg.retention = Retention {
        max_age: None,
        max_bytes: Some(one * 3 + one / 2),
    };
    let mut sink = Sink::open(cfg, schema.clone()).unwrap();
    for i in 0..6 {
        sink.write(&batch(&schema, 0, 500), at(T0 + i)).unwrap();
        // Distinct modification times, oldest first.
        std::thread::sleep(Duration::from_millis(20));
    }
    // An open file with rows.
    sink.write(&batch(&schema, 0, 100), at(T0 + 10)).unwrap();
    let tmp = sink.current_tmp().unwrap().to_path_buf();
    let vis = visible_parquet(dir.path());
    let names = |v: &[PathBuf]| -> Vec<String> {
        v.iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    let all = sink.report(vec![]).files;
    assert_eq!(all.len(), 6);
    let kept: Vec<PathBuf> = all[3..].iter().map(|f| f.path.clone()).collect();
    assert_eq!(names(&vis), names(&kept), "the three newest remain");
    assert_eq!(sink.stats().snapshot().files_removed, 3);
    // Retention again with the open file counted in the total: the open
    // file itself is never removed.
    sink.apply_retention(SystemTime::now());
    assert!(tmp.exists());
    let report = sink.finish(at(T0 + 20)).unwrap();
    assert_eq!(rust_rows(&report.files.last().unwrap().path), 100);
}

#[test]
fn retention_by_age_skips_file_being_written() {
    let dir = tempfile::tempdir().unwrap();
    let schema = all_prims_schema();
    let mut cfg = SinkConfig::new(dir.path(), "age");
    cfg.max_file_rows = Some(100);
    cfg.retention.max_age = Some(Duration::from_secs(3600));
    let mut sink = Sink::open(cfg, schema.clone()).unwrap();
    sink.write(&batch(&schema, 0, 250), at(T0)).unwrap();
    assert_eq!(visible_parquet(dir.path()).len(), 2);
    let tmp = sink.current_tmp().unwrap().to_path_buf();
    assert!(tmp.exists());
    let removed = sink.apply_retention(SystemTime::now() + Duration::from_secs(2 * 3600));
    assert_eq!(removed, 2);
    assert!(visible_parquet(dir.path()).is_empty());
    assert!(tmp.exists(), "the file being written is never a candidate");
    let report = sink.finish(at(T0)).unwrap();
    assert_eq!(report.files.len(), 3);
    assert_eq!(rust_rows(&report.files[2].path), 50);
}

// ------------------------------------------------------------ crash test ---

const CRASH_ENV: &str = "MPLANE_EXPORT_CRASH_DIR";

/// The child of `sigkill_mid_file_leaves_no_visible_partial_file`: commits
/// one file, then writes a second one forever.
#[test]
#[ignore = "child process of the crash test"]
fn crash_child() {
    let Ok(dir) = std::env::var(CRASH_ENV) else {
        return;
    };
    let schema = all_prims_schema();
    let mut cfg = SinkConfig::new(&dir, "crash");
    cfg.writer.row_group_rows = 2048;
    let mut sink = Sink::open(cfg, schema.clone()).unwrap();
    sink.write(&batch(&schema, 0, 5000), at(T0)).unwrap();
    sink.rotate(at(T0)).unwrap();
    let b = batch(&schema, 0, 4096);
    loop {
        sink.write(&b, at(T0)).unwrap();
    }
}

#[test]
fn sigkill_mid_file_leaves_no_visible_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--ignored", "--nocapture"])
        .env(CRASH_ENV, dir.path())
        .spawn()
        .unwrap();
    // Wait until the second file's temporary is large (several row groups).
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let big = tmp_files(dir.path()).iter().any(|p| {
            fs::metadata(p)
                .map(|m| m.len() > 256 * 1024)
                .unwrap_or(false)
        });
        if big {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "child made no progress"
        );
        assert!(child.try_wait().unwrap().is_none(), "child exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let vis = visible_parquet(dir.path());
    assert_eq!(vis.len(), 1, "only the committed file is visible: {vis:?}");
    assert_eq!(rust_rows(&vis[0]), 5000);
    let v = py(
        "import json,sys,pyarrow.parquet as pq; print(json.dumps(pq.read_table(sys.argv[1]).num_rows))",
        &[vis[0].to_str().unwrap()],
    );
    assert_eq!(v, 5000);
    assert_eq!(
        tmp_files(dir.path()).len(),
        1,
        "the partial file stays hidden"
    );
    // Restart: the stale temporary is removed and writing continues.
    let schema = all_prims_schema();
    let mut sink = Sink::open(SinkConfig::new(dir.path(), "crash"), schema.clone()).unwrap();
    assert_eq!(sink.stats().snapshot().stale_tmp_removed, 1);
    assert!(tmp_files(dir.path()).is_empty());
    sink.write(&batch(&schema, 0, 10), at(T0 + 1)).unwrap();
    let report = sink.finish(at(T0 + 2)).unwrap();
    assert_eq!(report.files.len(), 1);
    assert!(!vis.contains(&report.files[0].path));
    assert_eq!(visible_parquet(dir.path()).len(), 2);
}

// ------------------------------------------------------------- disk full ---

struct Unmount(PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Batches of incompressible strings (xorshift hex), so ZSTD cannot shrink
/// them below the tmpfs size.
fn noisy_batch(schema: &Arc<ExportSchema>, seed: &mut u64, n: usize) -> RecordBatch {
    let mut b = ColumnsBuilder::new(schema.clone(), n);
    let mut s = String::new();
    for _ in 0..n {
        s.clear();
        for _ in 0..8 {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            s.push_str(&format!("{:016x}", *seed));
        }
        b.append_str(0, &s).unwrap();
        b.append_u64(1, *seed).unwrap();
    }
    b.finish().unwrap()
}

#[test]
fn disk_full_is_typed_and_leaves_no_corrupt_file() {
    if !is_root() {
        eprintln!("SKIP disk_full test: needs root to mount a tmpfs");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    fs::create_dir(&mnt).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&mnt)
        .status();
    if !st.map(|s| s.success()).unwrap_or(false) {
        eprintln!("SKIP disk_full test: cannot mount tmpfs here");
        return;
    }
    let _guard = Unmount(mnt.clone());
    let schema = Arc::new(
        ExportSchema::from_elements(
            "x",
            [
                ("payload", Primitive::String),
                ("octets.ip", Primitive::Natural),
            ],
        )
        .unwrap(),
    );
    let mut cfg = SinkConfig::new(&mnt, "full");
    cfg.max_file_bytes = 600 * 1024;
    cfg.writer.row_group_rows = 1024;
    let mut sink = Sink::open(cfg, schema.clone()).unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut err = None;
    for _ in 0..200 {
        let b = noisy_batch(&schema, &mut seed, 1024);
        if let Err(e) = sink.write(&b, at(T0)) {
            err = Some(e);
            break;
        }
    }
    let err = err.expect("a 2 MiB tmpfs must fill up");
    assert!(err.is_disk_full(), "{err:?}");
    assert!(err.to_string().contains("disk full"), "{err}");
    let stats = sink.stats().snapshot();
    assert!(stats.errors >= 1 && stats.rows_lost > 0, "{stats:?}");
    // No temporary left, and every visible file is complete.
    assert!(tmp_files(&mnt).is_empty(), "{:?}", tmp_files(&mnt));
    let vis = visible_parquet(&mnt);
    assert!(
        !vis.is_empty(),
        "some files committed before the disk filled"
    );
    let committed: u64 = sink.report(vec![]).files.iter().map(|f| f.rows).sum();
    assert_eq!(
        vis.iter().map(|p| rust_rows(p) as u64).sum::<u64>(),
        committed
    );
    for p in &vis {
        py(
            "import json,sys,pyarrow.parquet as pq; print(json.dumps(pq.read_table(sys.argv[1]).num_rows))",
            &[p.to_str().unwrap()],
        );
    }
    // Space freed by removing the oldest file lets writing go on.
    fs::remove_file(&vis[0]).unwrap();
    sink.write(&noisy_batch(&schema, &mut seed, 100), at(T0))
        .unwrap();
    let report = sink.finish(at(T0)).unwrap();
    assert!(report.files.last().unwrap().rows >= 100);
}

// ----------------------------------------------------------------- IPFIX ---

mod ipfix_peer {
    use super::nfcapd::Nfcapd;
    use std::net::Ipv4Addr;

    use mplane_export::ipfix::{
        FieldSpec, Template, UdpExporter, iana_field, ie, template_for_schema,
    };

    fn biflow_template() -> Template {
        let f = FieldSpec::iana;
        Template::new(
            256,
            vec![
                f(ie::SOURCE_IPV4_ADDRESS, 4),
                f(ie::DESTINATION_IPV4_ADDRESS, 4),
                f(ie::SOURCE_TRANSPORT_PORT, 2),
                f(ie::DESTINATION_TRANSPORT_PORT, 2),
                f(ie::PROTOCOL_IDENTIFIER, 1),
                f(ie::FLOW_START_MILLISECONDS, 8),
                f(ie::FLOW_END_MILLISECONDS, 8),
                f(ie::OCTET_DELTA_COUNT, 8),
                f(ie::PACKET_DELTA_COUNT, 8),
                f(ie::OCTET_DELTA_COUNT, 8).reverse(),
                f(ie::PACKET_DELTA_COUNT, 8).reverse(),
            ],
        )
        .unwrap()
    }

    /// nfdump's `nfcapd` collects our IPFIX biflows over UDP; `nfdump` reads
    /// its file back.
    #[test]
    fn nfcapd_reads_biflows() {
        if !Nfcapd::installed() {
            eprintln!("SKIP nfcapd test: nfcapd not installed (apt-get install nfdump)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let collector = Nfcapd::start(dir.path());
        let port = collector.port;
        let mut x = UdpExporter::connect(("127.0.0.1", port), 1).unwrap();
        x.encoder.add_template(biflow_template()).unwrap();
        let t0_ms = 1_795_573_758_000u64;
        for i in 0..3u64 {
            x.encoder
                .record(256, |w| {
                    w.ipv4(Ipv4Addr::new(10, 0, 0, 1 + i as u8))?
                        .ipv4(Ipv4Addr::new(192, 0, 2, 80))?
                        .unsigned(40_000 + i)?
                        .unsigned(443)?
                        .unsigned(6)?
                        .unsigned(t0_ms + i * 1000)?
                        .unsigned(t0_ms + i * 1000 + 500)?
                        .unsigned(1000 * (i + 1))?
                        .unsigned(10 * (i + 1))?
                        .unsigned(2000 * (i + 1))?
                        .unsigned(20 * (i + 1))?;
                    Ok(())
                })
                .unwrap();
        }
        // The same RecordBatches that go to Parquet, through a template made
        // from the export schema.
        let core = mplane::registry::Registries::core();
        let schema = std::sync::Arc::new(
            mplane_export::ExportSchema::from_registry(
                &core,
                &[
                    "start",
                    "end",
                    "source.ip4",
                    "destination.ip4",
                    "source.port",
                    "destination.port",
                    "octets.ip",
                    "packets.ip",
                ],
            )
            .unwrap(),
        );
        let t = template_for_schema(257, &schema, |c| iana_field(&c.element)).unwrap();
        x.encoder.add_template(t).unwrap();
        let mut b = mplane_export::ColumnsBuilder::new(schema, 1);
        b.append_time_ns(0, t0_ms as i64 * 1_000_000).unwrap();
        b.append_time_ns(1, t0_ms as i64 * 1_000_000 + 2_000_000_000)
            .unwrap();
        b.append_addr(2, [10, 9, 9, 9].into()).unwrap();
        b.append_addr(3, [192, 0, 2, 99].into()).unwrap();
        b.append_u64(4, 5353).unwrap();
        b.append_u64(5, 53).unwrap();
        b.append_u64(6, 777).unwrap();
        b.append_u64(7, 7).unwrap();
        assert_eq!(x.encoder.batch(257, &b.finish().unwrap()).unwrap(), 1);
        x.flush(1_795_573_760).unwrap();
        let text = collector.stop_and_dump("fmt:%sa|%da|%sp|%dp|%pr|%ipkt|%ibyt|%opkt|%obyt");
        eprintln!("nfdump: {text}");
        let mut rows: Vec<Vec<String>> = text
            .lines()
            .filter(|l| l.contains('|'))
            .map(|l| l.split('|').map(|c| c.trim().to_string()).collect())
            .collect();
        rows.sort();
        assert_eq!(rows.len(), 4, "{text}");
        assert_eq!(
            rows[3][..7],
            ["10.9.9.9", "192.0.2.99", "5353", "53", "0", "7", "777"],
            "the RecordBatch row"
        );
        for (i, r) in rows[..3].iter().enumerate() {
            let i = i as u64;
            assert_eq!(r[0], format!("10.0.0.{}", 1 + i));
            assert_eq!(r[1], "192.0.2.80");
            assert_eq!(r[2], (40_000 + i).to_string());
            assert_eq!(r[3], "443");
            assert_eq!(r[4], "6");
            assert_eq!(r[5], (10 * (i + 1)).to_string());
            assert_eq!(r[6], (1000 * (i + 1)).to_string());
            assert_eq!(
                r[7],
                (20 * (i + 1)).to_string(),
                "reverse packets (RFC 5103)"
            );
            assert_eq!(
                r[8],
                (2000 * (i + 1)).to_string(),
                "reverse octets (RFC 5103)"
            );
        }
    }
}

#[test]
fn export_thread_counts_errors_and_reports_lost_rows_in_next_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("set");
    let schema = all_prims_schema();
    let t = ExportThread::spawn(SinkConfig::new(&root, "err"), schema.clone(), 4).unwrap();
    let h = t.handle();
    // The directory vanishes under the running sink: the next file cannot
    // be created. The error is counted, the rows are lost, nothing blocks.
    fs::remove_dir_all(&root).unwrap();
    h.send_blocking(batch(&schema, 0, 100)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.stats().errors == 0 {
        assert!(std::time::Instant::now() < deadline, "no error counted");
        std::thread::sleep(Duration::from_millis(10));
    }
    fs::create_dir_all(&root).unwrap();
    h.send_blocking(batch(&schema, 100, 50)).unwrap();
    let report = t.finish().unwrap();
    assert_eq!(report.stats.errors, 1);
    assert_eq!(report.stats.rows_lost, 100);
    assert_eq!(report.stats.rows_written, 50);
    assert_eq!(report.errors.len(), 1);
    assert!(
        matches!(&report.errors[0], ExportError::Io { op: "create", .. }),
        "{:?}",
        report.errors
    );
    let p = report.files[0].path.to_str().unwrap().to_string();
    let v = py(
        "import sys, pyarrow.parquet as pq; print(pq.ParquetFile(sys.argv[1]).metadata.metadata[b'mplane.drops'].decode())",
        &[&p],
    );
    assert_eq!(v[DROP_KEY_EXPORT_LOST], 100, "lost rows are reported");
    assert_eq!(v[DROP_KEY_EXPORT_QUEUE], 0);
}

#[test]
fn hive_partitions_by_data_time_for_replay() {
    let dir = tempfile::tempdir().unwrap();
    let schema = all_prims_schema();
    let mut cfg = SinkConfig::new(dir.path(), "replay");
    cfg.partitioning = Partitioning::Hive { probe: "p1".into() };
    cfg.time_column = Some("start".into());
    cfg.max_file_age = Duration::from_secs(2 * 3600);
    let mut sink = Sink::open(cfg, schema.clone()).unwrap();
    // Data from 2020-01-01 10:59:59.5 on, written "now" (T0, 2026).
    let base = 1_577_876_399_500_000_000i64;
    let mk = |from_ns: i64, n: u64| {
        let mut b = ColumnsBuilder::new(schema.clone(), n as usize);
        for i in 0..n {
            b.append_time_ns(0, from_ns + i as i64 * 1000).unwrap();
            for c in 1..8 {
                b.append_null(c).unwrap();
            }
        }
        b.finish().unwrap()
    };
    sink.write(&mk(base, 100), at(T0)).unwrap();
    // Wall-clock ticks do not move a data-time partition.
    sink.tick(at(T0 + 3_600_000_000_000)).unwrap();
    assert!(sink.current_tmp().is_some());
    sink.write(&mk(base + 1_000_000_000, 100), at(T0)).unwrap(); // 11:00:00.5
    sink.write(&mk(base + 1_000_002_000, 50), at(T0)).unwrap();
    let report = sink.finish(at(T0)).unwrap();
    let rel: Vec<String> = report
        .files
        .iter()
        .map(|f| {
            f.path
                .strip_prefix(dir.path())
                .unwrap()
                .parent()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        rel,
        [
            "probe=p1/date=2020-01-01/hour=10",
            "probe=p1/date=2020-01-01/hour=11"
        ]
    );
    assert!(
        report.files[0]
            .path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("replay-20200101T105959.500000Z-")
    );
    assert_eq!(report.files[1].rows, 150);
    let v = py(
        r#"
import json, sys, pyarrow.parquet as pq
print(pq.ParquetFile(sys.argv[1]).metadata.metadata[b"mplane.window"].decode())
"#,
        &[report.files[1].path.to_str().unwrap()],
    );
    assert_eq!(v["start"], "2020-01-01 11:00:00.500000");
    assert_eq!(v["start_ns"], base + 1_000_000_000);
    assert_eq!(v["end_ns"], base + 1_000_000_000 + 99_000);
    assert!(matches!(
        Sink::open(
            SinkConfig {
                time_column: Some("octets.ip".into()),
                ..SinkConfig::new(dir.path(), "bad")
            },
            schema
        ),
        Err(ExportError::Config(_))
    ));
}

#[test]
fn sinks_with_overlapping_prefixes_leave_each_other_alone() {
    let dir = tempfile::tempdir().unwrap();
    let schema = all_prims_schema();
    let mut cfg2 = SinkConfig::new(dir.path(), "job-2");
    cfg2.max_file_rows = Some(10);
    let mut other = Sink::open(cfg2, schema.clone()).unwrap();
    other.write(&batch(&schema, 0, 15), at(T0)).unwrap();
    let other_tmp = other.current_tmp().unwrap().to_path_buf();
    assert_eq!(visible_parquet(dir.path()).len(), 1);
    // A sink with prefix "job" starting in the same directory: its crash
    // cleanup and retention must not touch "job-2"'s files.
    let mut cfg = SinkConfig::new(dir.path(), "job");
    cfg.retention.max_age = Some(Duration::from_secs(1));
    let mut sink = Sink::open(cfg, schema.clone()).unwrap();
    assert_eq!(sink.stats().snapshot().stale_tmp_removed, 0);
    assert_eq!(
        sink.apply_retention(SystemTime::now() + Duration::from_secs(3600)),
        0
    );
    assert!(other_tmp.exists());
    assert_eq!(visible_parquet(dir.path()).len(), 1);
    assert_eq!(other.finish(at(T0)).unwrap().files.len(), 2);
}
