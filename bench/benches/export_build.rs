//! Criterion benches of the export hot path: `ColumnsBuilder` appends and
//! Parquet encoding of one batch (in memory, no file system).

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mplane::registry::Primitive;
use mplane_export::parquet::arrow::ArrowWriter;
use mplane_export::{ColumnsBuilder, ExportSchema, WriterOptions};

const ROWS: usize = 8192;

fn schema() -> Arc<ExportSchema> {
    Arc::new(
        ExportSchema::from_elements(
            "https://probe.invalid/registry/flows",
            [
                ("start", Primitive::Time),
                ("end", Primitive::Time),
                ("source.ip", Primitive::Address),
                ("destination.ip", Primitive::Address),
                ("source.port", Primitive::Natural),
                ("destination.port", Primitive::Natural),
                ("packets.ip", Primitive::Natural),
                ("octets.ip", Primitive::Natural),
                ("application", Primitive::String),
                ("rtt.ms", Primitive::Real),
                ("flow.complete", Primitive::Boolean),
            ],
        )
        .expect("valid schema"),
    )
}

fn fill(b: &mut ColumnsBuilder) {
    let t0 = 1_795_573_758_000_000_000i64;
    for i in 0..ROWS as u64 {
        let r = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let ok = b.append_time_ns(0, t0 + i as i64 * 1000).is_ok()
            && b.append_time_ns(1, t0 + i as i64 * 1000 + (r & 0xffff) as i64)
                .is_ok()
            && b.append_addr(2, IpAddr::from([10, 0, (r >> 8) as u8, r as u8]))
                .is_ok()
            && b.append_addr(3, IpAddr::from([192, 0, 2, (r >> 16) as u8]))
                .is_ok()
            && b.append_u64(4, 1024 + (r >> 48)).is_ok()
            && b.append_u64(5, 443).is_ok()
            && b.append_u64(6, 1 + (r >> 58)).is_ok()
            && b.append_u64(7, 40 * (1 + (r >> 58))).is_ok()
            && b.append_str(8, ["tls", "dns", "http"][(r % 3) as usize])
                .is_ok()
            && b.append_f64(9, (r >> 40) as f64 / 1000.0).is_ok()
            && b.append_bool(10, r & 1 == 0).is_ok();
        assert!(ok);
    }
}

fn bench(c: &mut Criterion) {
    let schema = schema();
    let mut g = c.benchmark_group("export");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("columns_builder_11_cols", |bch| {
        let mut b = ColumnsBuilder::new(schema.clone(), ROWS);
        bch.iter(|| {
            fill(&mut b);
            black_box(b.finish().expect("batch"))
        })
    });
    let mut b = ColumnsBuilder::new(schema.clone(), ROWS);
    fill(&mut b);
    let batch = b.finish().expect("batch");
    let props = WriterOptions::default()
        .properties(&schema)
        .expect("properties");
    g.bench_function("parquet_encode_zstd3_11_cols", |bch| {
        bch.iter(|| {
            let mut w =
                ArrowWriter::try_new(Vec::new(), schema.arrow().clone(), Some(props.clone()))
                    .expect("writer");
            w.write(&batch).expect("write");
            black_box(w.into_inner().expect("close").len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
