//! Fuzz the whole passive path on arbitrary Ethernet frames: pcap reader, dissection, flow
//! table (64 flows, so evictions happen), TCP analysis, application metadata, timeouts, and
//! the flow records' Arrow columns.
//!
//! Input: records of `[step][len lo][len hi]` then `len` frame bytes. `step` bits 0–5 advance
//! the clock by that many 100 ms (so idle and active timeouts fire); bit 6 records the frame
//! as snaplen-truncated (original length + 100); bit 7 steps back 1 s (out-of-order time).
//! Properties: no panic; every packet is counted at most once over the flow records; every
//! batch of records becomes a `RecordBatch` of all file columns.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use mplane_capture::pipeline::{Pipeline, PipelineConfig};
use mplane_capture::source::pcap::PcapFile;
use mplane_export::ExportSchema;
use mplane_probe::passive::columns::{ColumnContext, FILE_COLUMNS, FlowColumns};
use mplane_probe::passive::meter::{FlowMeter, MeterConfig, VecSink};
use mplane_probe::passive::record::StrRef;

fn schema() -> &'static (Arc<ExportSchema>, FlowColumns) {
    static S: OnceLock<(Arc<ExportSchema>, FlowColumns)> = OnceLock::new();
    S.get_or_init(|| {
        let reg = mplane_probe::registry::probe_registry().unwrap();
        let schema = ExportSchema::from_registry(&reg, FILE_COLUMNS)
            .unwrap()
            .with_required(FlowColumns::is_required);
        (Arc::new(schema), FlowColumns::new(FILE_COLUMNS).unwrap())
    })
}

fuzz_target!(|data: &[u8]| {
    // a classic pcap, microsecond timestamps, Ethernet
    let mut pcap = Vec::with_capacity(24 + data.len() * 2);
    pcap.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    pcap.extend_from_slice(&[2, 0, 4, 0]);
    pcap.extend_from_slice(&[0; 8]);
    pcap.extend_from_slice(&65_535u32.to_le_bytes());
    pcap.extend_from_slice(&1u32.to_le_bytes());
    let mut t_us: u64 = 1_700_000_000_000_000;
    let mut frames = 0u64;
    let mut p = 0;
    while p + 3 <= data.len() {
        let step = data[p];
        let len = usize::from(u16::from_le_bytes([data[p + 1], data[p + 2]])) % 4096;
        p += 3;
        let frame = &data[p..(p + len).min(data.len())];
        p += frame.len();
        t_us += u64::from(step & 0x3f) * 100_000;
        if step & 0x80 != 0 {
            t_us -= 1_000_000;
        }
        let orig = frame.len() as u32 + if step & 0x40 != 0 { 100 } else { 0 };
        pcap.extend_from_slice(&((t_us / 1_000_000) as u32).to_le_bytes());
        pcap.extend_from_slice(&((t_us % 1_000_000) as u32).to_le_bytes());
        pcap.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        pcap.extend_from_slice(&orig.to_le_bytes());
        pcap.extend_from_slice(frame);
        frames += 1;
    }
    let Ok(file) = PcapFile::from_bytes(pcap) else {
        return;
    };
    let cfg = MeterConfig {
        max_flows: 64,
        idle_timeout_ns: 1_000_000_000,
        active_timeout_ns: 5_000_000_000,
        ..MeterConfig::default()
    };
    let mut ws = vec![FlowMeter::new(cfg, VecSink::default())];
    let Ok(_) = Pipeline::new(PipelineConfig::default()).run_file(file, &mut ws) else {
        return;
    };
    let recs = ws.pop().unwrap().into_sink().records;
    let packets: u64 = recs
        .iter()
        .map(|(r, _)| r.fwd.packets + r.bwd.packets)
        .sum();
    assert!(
        packets <= frames,
        "{packets} packets in records from {frames} frames"
    );
    let (schema, columns) = schema();
    let mut names = Vec::new();
    let mut batch = Vec::with_capacity(recs.len());
    for (r, name) in &recs {
        let mut r = *r;
        r.app.name = StrRef::append(&mut names, name);
        batch.push(r);
    }
    let ctx = ColumnContext {
        interface: "fuzz".into(),
        internal: ColumnContext::default_internal(),
    };
    let b = columns.record_batch(schema, &batch, &names, &ctx).unwrap();
    assert_eq!(b.num_rows(), recs.len());
});
