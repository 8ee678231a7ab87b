//! Footer key-value metadata: what makes a file self-describing.
//!
//! Every committed file carries these Parquet footer key-value entries
//! (visible to DuckDB `parquet_kv_metadata()`, pyarrow
//! `ParquetFile(p).metadata.metadata`, arrow-rs, parquet-tools):
//!
//! | key | value |
//! |---|---|
//! | [`KEY_ELEMENTS`] `mplane.elements` | JSON array of the result column element names, in column order |
//! | [`KEY_COLUMNS`] `mplane.columns` | JSON array of `{"column", "element", "prim"}` objects, in column order |
//! | [`KEY_REGISTRY`] `mplane.registry` | URI of the registry the elements come from |
//! | [`KEY_SPECIFICATION`] `mplane.specification` | the mPlane specification (JSON text) that produced the file, if known |
//! | [`KEY_IDENTITY`] `mplane.identity` | identity of the probe (component) that wrote it |
//! | [`KEY_DROPS`] `mplane.drops` | JSON object `name → u64`: drop counters accumulated *while this file was open* (the span it covers) |
//! | [`KEY_WINDOW`] `mplane.window` | JSON object `{"start", "end", "start_ns", "end_ns"}`: the span the file covers (times as mPlane text, UTC) |
//! | [`KEY_WRITER`] `mplane.writer` | `mplane-export <version>` |
//!
//! Arrow schema and field metadata (see [`crate::schema`]) are written too,
//! but only pyarrow and arrow-rs read them; DuckDB sees the keys above.
//! A rewrite by DuckDB `COPY` or pyarrow drops them: such copies are derived
//! data, not archives.

use std::collections::BTreeMap;

use parquet::file::metadata::KeyValue;
use serde_json::{Value, json};

use crate::schema::ExportSchema;

/// Footer key: JSON array of element names.
pub const KEY_ELEMENTS: &str = "mplane.elements";
/// Footer key: JSON array of column descriptions.
pub const KEY_COLUMNS: &str = "mplane.columns";
/// Footer key: registry URI.
pub const KEY_REGISTRY: &str = "mplane.registry";
/// Footer key: specification JSON.
pub const KEY_SPECIFICATION: &str = "mplane.specification";
/// Footer key: probe identity.
pub const KEY_IDENTITY: &str = "mplane.identity";
/// Footer key: drop counters of the covered span.
pub const KEY_DROPS: &str = "mplane.drops";
/// Footer key: covered time window.
pub const KEY_WINDOW: &str = "mplane.window";
/// Footer key: writer name and version.
pub const KEY_WRITER: &str = "mplane.writer";

/// A time span in nanoseconds since the Unix epoch (UTC), `start <= end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Start, ns since the epoch.
    pub start_ns: i64,
    /// End, ns since the epoch.
    pub end_ns: i64,
}

impl Window {
    /// The JSON value written under [`KEY_WINDOW`].
    pub fn to_json(&self) -> Value {
        json!({
            "start": mplane_time(self.start_ns),
            "end": mplane_time(self.end_ns),
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
        })
    }
}

/// The job-level description written into every file's footer.
///
/// Element names and registry come from the [`ExportSchema`]; the sink fills
/// in the per-file window and drop counters at commit time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileMetadata {
    /// The specification JSON text (as received); `None` if unknown.
    pub specification: Option<String>,
    /// Identity of the probe that writes the files.
    pub identity: Option<String>,
    /// Drop counters of the covered span (`name → count`).
    pub drops: BTreeMap<String, u64>,
    /// The span the file covers. The sink sets it to the time the file was
    /// open unless the caller fixed it.
    pub window: Option<Window>,
    /// Extra footer entries (keys should not start with `mplane.`).
    pub extra: Vec<(String, String)>,
}

impl FileMetadata {
    /// Footer key-value entries for a file of `schema`.
    pub fn key_values(&self, schema: &ExportSchema) -> Vec<KeyValue> {
        let elements: Vec<&str> = schema.element_names().collect();
        let columns: Vec<Value> = schema
            .columns()
            .iter()
            .map(|c| json!({"column": c.name, "element": c.element, "prim": c.prim.name()}))
            .collect();
        let mut kv = vec![
            KeyValue::new(KEY_ELEMENTS.into(), json!(elements).to_string()),
            KeyValue::new(KEY_COLUMNS.into(), Value::Array(columns).to_string()),
            KeyValue::new(KEY_REGISTRY.into(), schema.registry().to_string()),
        ];
        if let Some(s) = &self.specification {
            kv.push(KeyValue::new(KEY_SPECIFICATION.into(), s.clone()));
        }
        if let Some(i) = &self.identity {
            kv.push(KeyValue::new(KEY_IDENTITY.into(), i.clone()));
        }
        kv.push(KeyValue::new(
            KEY_DROPS.into(),
            json!(self.drops).to_string(),
        ));
        if let Some(w) = &self.window {
            kv.push(KeyValue::new(KEY_WINDOW.into(), w.to_json().to_string()));
        }
        kv.push(KeyValue::new(
            KEY_WRITER.into(),
            concat!("mplane-export ", env!("CARGO_PKG_VERSION")).to_string(),
        ));
        for (k, v) in &self.extra {
            kv.push(KeyValue::new(k.clone(), v.clone()));
        }
        kv
    }
}

/// A UTC civil time broken down from nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// Year.
    pub year: i64,
    /// Month 1–12.
    pub month: u32,
    /// Day 1–31.
    pub day: u32,
    /// Hour 0–23.
    pub hour: u32,
    /// Minute 0–59.
    pub minute: u32,
    /// Second 0–59.
    pub second: u32,
    /// Nanoseconds within the second.
    pub nanos: u32,
}

impl Civil {
    /// Breaks down `ns` since the Unix epoch (proleptic Gregorian, UTC).
    pub fn from_ns(ns: i64) -> Civil {
        let secs = ns.div_euclid(1_000_000_000);
        let nanos = ns.rem_euclid(1_000_000_000) as u32;
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400) as u32;
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Civil {
            year,
            month,
            day,
            hour: sod / 3600,
            minute: sod / 60 % 60,
            second: sod % 60,
            nanos,
        }
    }
}

/// Formats `ns` since the epoch as mPlane time text,
/// `YYYY-MM-DD HH:MM:SS.ffffff` (UTC, microseconds).
pub fn mplane_time(ns: i64) -> String {
    let c = Civil::from_ns(ns);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
        c.year,
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second,
        c.nanos / 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(mplane_time(0), "1970-01-01 00:00:00.000000");
        // 2026-11-25 02:29:18.123456 UTC
        assert_eq!(
            mplane_time(1_795_573_758_123_456_789),
            "2026-11-25 02:29:18.123456"
        );
        assert_eq!(
            mplane_time(951_782_400_000_000_000),
            "2000-02-29 00:00:00.000000"
        );
        assert_eq!(mplane_time(-1_000_000_000), "1969-12-31 23:59:59.000000");
    }
}
