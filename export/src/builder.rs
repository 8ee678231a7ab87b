//! Typed column builders: record types → Arrow [`RecordBatch`]es.
//!
//! The owner of a record type (the probe's flow record, an active
//! measurement's result row) writes the small function that appends one
//! record's fields to a [`ColumnsBuilder`]; this crate never sees the record
//! type. Appenders are per primitive and check the column's primitive, so a
//! mistake is a typed error rather than a corrupt file.
//!
//! ```
//! use std::net::IpAddr;
//! use std::sync::Arc;
//! use mplane::registry::Registries;
//! use mplane_export::{ColumnsBuilder, ExportSchema};
//!
//! let core = Registries::core();
//! let schema = Arc::new(ExportSchema::from_registry(&core, &["start", "source.ip4", "octets.ip"])?);
//! let mut b = ColumnsBuilder::new(schema.clone(), 1024);
//! b.append_time_ns(0, 1_700_000_000_000_000_000)?;
//! b.append_addr(1, IpAddr::from([192, 0, 2, 1]))?;
//! b.append_u64(2, 1500)?;
//! let batch = b.finish()?;
//! assert_eq!(batch.num_rows(), 1);
//! # Ok::<(), mplane_export::ExportError>(())
//! ```

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow_array::ArrayRef;
use arrow_array::RecordBatch;
use arrow_array::builder::{
    BooleanBuilder, Float64Builder, StringBuilder, TimestampNanosecondBuilder, UInt64Builder,
};
use mplane::registry::Primitive;

use crate::ExportError;
use crate::schema::{ExportSchema, TIME_ZONE};

/// Longest text form of an IP address: an IPv6 address with an embedded
/// IPv4 tail, `ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255` (45 bytes).
pub const MAX_ADDR_TEXT: usize = 48;

enum Col {
    Natural(UInt64Builder),
    Real(Float64Builder),
    Boolean(BooleanBuilder),
    Time(TimestampNanosecondBuilder),
    Text(StringBuilder, Primitive),
}

impl Col {
    fn new(prim: Primitive, capacity: usize) -> Col {
        match prim {
            Primitive::Natural => Col::Natural(UInt64Builder::with_capacity(capacity)),
            Primitive::Real => Col::Real(Float64Builder::with_capacity(capacity)),
            Primitive::Boolean => Col::Boolean(BooleanBuilder::with_capacity(capacity)),
            Primitive::Time => Col::Time(
                TimestampNanosecondBuilder::with_capacity(capacity).with_timezone(TIME_ZONE),
            ),
            Primitive::String | Primitive::Url | Primitive::Address => {
                // 16 bytes per value is a fair first guess for addresses and
                // short strings; the builder grows as needed.
                Col::Text(StringBuilder::with_capacity(capacity, capacity * 16), prim)
            }
        }
    }

    fn len(&self) -> usize {
        use arrow_array::builder::ArrayBuilder as _;
        match self {
            Col::Natural(b) => b.len(),
            Col::Real(b) => b.len(),
            Col::Boolean(b) => b.len(),
            Col::Time(b) => b.len(),
            Col::Text(b, _) => b.len(),
        }
    }

    /// Finishes the column and leaves a fresh builder of `capacity` rows in
    /// its place: arrow's `finish` leaves an empty buffer behind, which would
    /// then regrow by doubling (a dozen reallocations and copies per column
    /// per batch).
    fn finish(&mut self, capacity: usize) -> ArrayRef {
        let prim = prim_of(self);
        let mut old = std::mem::replace(self, Col::new(prim, capacity));
        match &mut old {
            Col::Natural(b) => Arc::new(b.finish()),
            Col::Real(b) => Arc::new(b.finish()),
            Col::Boolean(b) => Arc::new(b.finish()),
            Col::Time(b) => Arc::new(b.finish()),
            Col::Text(b, _) => Arc::new(b.finish()),
        }
    }
}

/// Builds [`RecordBatch`]es of one [`ExportSchema`], column by column.
///
/// Append one value (or a null) to every column for each row, then call
/// [`finish`](ColumnsBuilder::finish); the builder is empty again afterwards
/// and can be reused for the next batch.
pub struct ColumnsBuilder {
    schema: Arc<ExportSchema>,
    cols: Vec<Col>,
    capacity: usize,
}

impl std::fmt::Debug for ColumnsBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColumnsBuilder")
            .field("columns", &self.cols.len())
            .field("rows", &self.len())
            .finish()
    }
}

macro_rules! col {
    ($self:ident, $col:expr) => {{
        let n = $self.cols.len();
        // `ok_or_else`: building the error eagerly costs a drop per append.
        $self
            .cols
            .get_mut($col)
            .ok_or_else(|| ExportError::NoSuchColumn {
                column: $col,
                columns: n,
            })?
    }};
}

impl ColumnsBuilder {
    /// A builder for `schema`, preallocating `capacity` rows per column.
    pub fn new(schema: Arc<ExportSchema>, capacity: usize) -> Self {
        let cols = schema
            .columns()
            .iter()
            .map(|c| Col::new(c.prim, capacity))
            .collect();
        ColumnsBuilder {
            schema,
            cols,
            capacity,
        }
    }

    /// The schema being built.
    pub fn schema(&self) -> &Arc<ExportSchema> {
        &self.schema
    }

    /// Rows appended so far (the length of column 0).
    pub fn len(&self) -> usize {
        self.cols.first().map_or(0, Col::len)
    }

    /// True when no row has been appended.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The capacity given to [`ColumnsBuilder::new`]: a natural batch size.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn mismatch(column: usize, expected: Primitive, got: &'static str) -> ExportError {
        ExportError::TypeMismatch {
            column,
            expected,
            got,
        }
    }

    /// Appends a `natural` value.
    #[inline]
    pub fn append_u64(&mut self, col: usize, v: u64) -> Result<(), ExportError> {
        match col!(self, col) {
            Col::Natural(b) => {
                b.append_value(v);
                Ok(())
            }
            c => Err(Self::mismatch(col, prim_of(c), "natural")),
        }
    }

    /// Appends a `real` value.
    #[inline]
    pub fn append_f64(&mut self, col: usize, v: f64) -> Result<(), ExportError> {
        match col!(self, col) {
            Col::Real(b) => {
                b.append_value(v);
                Ok(())
            }
            c => Err(Self::mismatch(col, prim_of(c), "real")),
        }
    }

    /// Appends a `boolean` value.
    #[inline]
    pub fn append_bool(&mut self, col: usize, v: bool) -> Result<(), ExportError> {
        match col!(self, col) {
            Col::Boolean(b) => {
                b.append_value(v);
                Ok(())
            }
            c => Err(Self::mismatch(col, prim_of(c), "boolean")),
        }
    }

    /// Appends a `time` value in nanoseconds since the Unix epoch (UTC).
    #[inline]
    pub fn append_time_ns(&mut self, col: usize, ns: i64) -> Result<(), ExportError> {
        match col!(self, col) {
            Col::Time(b) => {
                b.append_value(ns);
                Ok(())
            }
            c => Err(Self::mismatch(col, prim_of(c), "time")),
        }
    }

    /// Appends a `time` value; times before 1970 or after 2262 saturate.
    pub fn append_time(&mut self, col: usize, t: SystemTime) -> Result<(), ExportError> {
        self.append_time_ns(col, system_time_ns(t))
    }

    /// Appends an `address` as its text form (dotted quad, RFC 5952 IPv6),
    /// formatted into a stack buffer: no heap allocation per row.
    #[inline]
    pub fn append_addr(&mut self, col: usize, addr: IpAddr) -> Result<(), ExportError> {
        match col!(self, col) {
            Col::Text(b, Primitive::Address) => {
                let mut buf = [0u8; MAX_ADDR_TEXT];
                match addr_text(addr, &mut buf) {
                    Some(s) => b.append_value(s),
                    None => b.append_null(),
                }
                Ok(())
            }
            c => Err(Self::mismatch(col, prim_of(c), "address")),
        }
    }

    /// Appends a `string`, `url` or (already formatted) `address` value.
    #[inline]
    pub fn append_str(&mut self, col: usize, v: &str) -> Result<(), ExportError> {
        match col!(self, col) {
            Col::Text(b, _) => {
                b.append_value(v);
                Ok(())
            }
            c => Err(Self::mismatch(col, prim_of(c), "string")),
        }
    }

    /// Appends a null (the mPlane `*`) to any column.
    #[inline]
    pub fn append_null(&mut self, col: usize) -> Result<(), ExportError> {
        match col!(self, col) {
            Col::Natural(b) => b.append_null(),
            Col::Real(b) => b.append_null(),
            Col::Boolean(b) => b.append_null(),
            Col::Time(b) => b.append_null(),
            Col::Text(b, _) => b.append_null(),
        }
        Ok(())
    }

    /// Appends `Some` value or a null.
    #[inline]
    pub fn append_opt_u64(&mut self, col: usize, v: Option<u64>) -> Result<(), ExportError> {
        match v {
            Some(v) => self.append_u64(col, v),
            None => self.append_null(col),
        }
    }

    /// Appends `Some` value or a null.
    #[inline]
    pub fn append_opt_f64(&mut self, col: usize, v: Option<f64>) -> Result<(), ExportError> {
        match v {
            Some(v) => self.append_f64(col, v),
            None => self.append_null(col),
        }
    }

    /// Appends `Some` value or a null.
    #[inline]
    pub fn append_opt_bool(&mut self, col: usize, v: Option<bool>) -> Result<(), ExportError> {
        match v {
            Some(v) => self.append_bool(col, v),
            None => self.append_null(col),
        }
    }

    /// Appends `Some` time (ns since the epoch) or a null.
    #[inline]
    pub fn append_opt_time_ns(&mut self, col: usize, v: Option<i64>) -> Result<(), ExportError> {
        match v {
            Some(v) => self.append_time_ns(col, v),
            None => self.append_null(col),
        }
    }

    /// Appends `Some` address or a null.
    #[inline]
    pub fn append_opt_addr(&mut self, col: usize, v: Option<IpAddr>) -> Result<(), ExportError> {
        match v {
            Some(v) => self.append_addr(col, v),
            None => self.append_null(col),
        }
    }

    /// Appends `Some` string or a null.
    #[inline]
    pub fn append_opt_str(&mut self, col: usize, v: Option<&str>) -> Result<(), ExportError> {
        match v {
            Some(v) => self.append_str(col, v),
            None => self.append_null(col),
        }
    }

    /// Takes the rows appended so far as a batch and empties the builder.
    ///
    /// Fails with [`ExportError::RaggedBatch`] if the columns have different
    /// lengths; the builder is then reset (the partial rows are discarded).
    pub fn finish(&mut self) -> Result<RecordBatch, ExportError> {
        let expected = self.len();
        let ragged = self
            .cols
            .iter()
            .enumerate()
            .find(|(_, c)| c.len() != expected)
            .map(|(i, c)| (i, c.len()));
        let capacity = self.capacity;
        let arrays: Vec<ArrayRef> = self.cols.iter_mut().map(|c| c.finish(capacity)).collect();
        if let Some((column, len)) = ragged {
            return Err(ExportError::RaggedBatch {
                column,
                len,
                expected,
            });
        }
        Ok(RecordBatch::try_new(self.schema.arrow().clone(), arrays)?)
    }
}

/// The text form of `addr` written into `buf`, by hand (no formatting machinery, no heap):
/// a dotted quad for IPv4, RFC 5952 for IPv6 (lowercase hex without leading zeros, the
/// longest run of two or more zero groups, the first of equals, as `::`), exactly as std's
/// `Display` writes them, IPv4-mapped addresses (`::ffff:a.b.c.d`) included. `None` cannot
/// happen for a buffer of [`MAX_ADDR_TEXT`] bytes.
pub fn addr_text(addr: IpAddr, buf: &mut [u8; MAX_ADDR_TEXT]) -> Option<&str> {
    std::str::from_utf8(addr_bytes(addr, buf)).ok()
}

/// The text form of `addr` as [`addr_text`] writes it, as bytes (ASCII), for writers that
/// validate a whole buffer at once.
pub fn addr_bytes(addr: IpAddr, buf: &mut [u8; MAX_ADDR_TEXT]) -> &[u8] {
    let n = match addr {
        IpAddr::V4(a) => quad(a.octets(), buf, 0),
        IpAddr::V6(a) => {
            let g = a.segments();
            if let Some(v4) = a.to_ipv4_mapped() {
                buf[..7].copy_from_slice(b"::ffff:");
                quad(v4.octets(), buf, 7)
            } else {
                // the longest run of zero groups (at least two), the first of equal ones
                let (mut best, mut best_len, mut run, mut run_len) = (0, 0, 0, 0);
                for (i, &x) in g.iter().enumerate() {
                    if x == 0 {
                        if run_len == 0 {
                            run = i;
                        }
                        run_len += 1;
                        if run_len > best_len {
                            (best, best_len) = (run, run_len);
                        }
                    } else {
                        run_len = 0;
                    }
                }
                let mut n = 0;
                let mut i = 0;
                while i < 8 {
                    if best_len >= 2 && i == best {
                        buf[n..n + 2].copy_from_slice(b"::");
                        n += 2;
                        i += best_len;
                        continue;
                    }
                    if i > 0 && !(best_len >= 2 && i == best + best_len) {
                        buf[n] = b':';
                        n += 1;
                    }
                    n = hex_group(g[i], buf, n);
                    i += 1;
                }
                n
            }
        }
    };
    &buf[..n]
}

/// Each octet value's decimal digits followed by a dot, left-aligned in four bytes, and the
/// number of those bytes (digits + dot): one 4-byte store and one add per octet.
const OCTETS: [([u8; 4], u8); 256] = {
    let mut t = [([0u8; 4], 0u8); 256];
    let mut i = 0;
    while i < 256 {
        let v = i as u8;
        t[i] = if v >= 100 {
            ([b'0' + v / 100, b'0' + v / 10 % 10, b'0' + v % 10, b'.'], 4)
        } else if v >= 10 {
            ([b'0' + v / 10, b'0' + v % 10, b'.', 0], 3)
        } else {
            ([b'0' + v, b'.', 0, 0], 2)
        };
        i += 1;
    }
    t
};

/// Writes a dotted quad at `buf[at..]` (`at` ≤ 16); returns the end. Each octet is stored as
/// its digits and a dot; the last dot is left beyond the end.
fn quad(octets: [u8; 4], buf: &mut [u8; MAX_ADDR_TEXT], at: usize) -> usize {
    let mut n = at;
    for o in octets {
        let (d, len) = OCTETS[usize::from(o)];
        buf[n..n + 4].copy_from_slice(&d);
        n += usize::from(len);
    }
    n - 1
}

/// The two lowercase hex digits of each byte value.
const HEX2: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    t
};

/// Writes a 16-bit group in lowercase hex without leading zeros at `buf[at..]`; returns the end.
/// The four digits go out as one 4-byte store with the leading zeros shifted out; the bytes
/// past the group's end are overwritten by what follows or lie beyond the text (a group
/// starts at most at byte 35, so the store stays inside the buffer).
fn hex_group(x: u16, buf: &mut [u8; MAX_ADDR_TEXT], at: usize) -> usize {
    let [hi, lo] = x.to_be_bytes();
    let (h, l) = (HEX2[usize::from(hi)], HEX2[usize::from(lo)]);
    let digits = (16 - x.leading_zeros()).div_ceil(4).max(1) as usize;
    let word = u32::from_be_bytes([h[0], h[1], l[0], l[1]]) << (8 * (4 - digits));
    buf[at..at + 4].copy_from_slice(&word.to_be_bytes());
    at + digits
}

fn prim_of(c: &Col) -> Primitive {
    match c {
        Col::Natural(_) => Primitive::Natural,
        Col::Real(_) => Primitive::Real,
        Col::Boolean(_) => Primitive::Boolean,
        Col::Time(_) => Primitive::Time,
        Col::Text(_, p) => *p,
    }
}

/// Nanoseconds since the Unix epoch, saturating to the `i64` range.
pub fn system_time_ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_nanos()).map_or(i64::MIN, |n| -n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{TimestampNanosecondType, UInt64Type};
    use arrow_array::{Array, StringArray};
    use mplane::registry::Registries;

    fn schema() -> Arc<ExportSchema> {
        let core = Registries::core();
        Arc::new(
            ExportSchema::from_registry(&core, &["start", "source.ip6", "octets.ip", "snr"])
                .unwrap(),
        )
    }

    #[test]
    fn builds_and_reuses() {
        let mut b = ColumnsBuilder::new(schema(), 4);
        for i in 0..3u64 {
            b.append_time_ns(0, i as i64).unwrap();
            b.append_addr(1, "2001:db8::1".parse().unwrap()).unwrap();
            b.append_u64(2, i).unwrap();
            if i == 1 {
                b.append_null(3).unwrap();
            } else {
                b.append_f64(3, 0.5).unwrap();
            }
        }
        let batch = b.finish().unwrap();
        assert_eq!(batch.num_rows(), 3);
        assert_eq!(batch.column(2).as_primitive::<UInt64Type>().value(2), 2);
        let t = batch.column(0).as_primitive::<TimestampNanosecondType>();
        assert_eq!(t.timezone(), Some("UTC"));
        let a = batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(a.value(0), "2001:db8::1");
        assert!(batch.column(3).is_null(1));
        assert!(b.is_empty());
        b.append_opt_time_ns(0, Some(1)).unwrap();
        b.append_opt_addr(1, None).unwrap();
        b.append_opt_u64(2, None).unwrap();
        b.append_opt_f64(3, Some(1.5)).unwrap();
        let batch = b.finish().unwrap();
        assert_eq!(batch.num_rows(), 1);
        assert!(batch.column(1).is_null(0) && batch.column(2).is_null(0));
        assert!(b.append_opt_bool(0, Some(true)).is_err());
        assert!(b.append_opt_str(2, None).is_ok(), "a null fits any column");
    }

    #[test]
    fn ipv4_text_matches_display() {
        let mut buf = [0u8; MAX_ADDR_TEXT];
        for a in [
            [0, 0, 0, 0],
            [1, 2, 3, 4],
            [10, 99, 100, 255],
            [192, 168, 10, 9],
        ] {
            let ip = IpAddr::from(a);
            assert_eq!(addr_text(ip, &mut buf).unwrap(), ip.to_string());
        }
        for i in 0..=255u8 {
            let ip = IpAddr::from([i, 255 - i, i / 3, 7]);
            assert_eq!(addr_text(ip, &mut buf).unwrap(), ip.to_string());
        }
    }

    #[test]
    fn ipv6_text_matches_display() {
        let mut buf = [0u8; MAX_ADDR_TEXT];
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut check = |a: std::net::Ipv6Addr| {
            assert_eq!(
                addr_text(IpAddr::V6(a), &mut buf),
                Some(a.to_string().as_str())
            );
        };
        for s in [
            "::",
            "::1",
            "1::",
            "2001:db8::1",
            "2001:db8:0:0:1:0:0:1",
            "2001:0:0:1:0:0:0:1",
            "::ffff:10.1.2.3",
            "::10.1.2.3",
            "fe80::1:0:0:0",
            "1:0:1:0:1:0:1:0",
            "ffff::ffff",
            "0:1:2:3:4:5:6:7",
            "1:2:3:4:5:6:7:0",
            "64:ff9b::c000:221",
        ] {
            check(s.parse().unwrap());
        }
        for _ in 0..20_000 {
            // random groups, many of them zero, so that every run layout occurs
            let mut g = [0u16; 8];
            for v in &mut g {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
                *v = if r.is_multiple_of(3) {
                    0
                } else {
                    (r >> 16) as u16 >> (r % 13)
                };
            }
            check(std::net::Ipv6Addr::from(g));
        }
    }

    #[test]
    fn longest_address_fits() {
        let mut b = ColumnsBuilder::new(schema(), 1);
        let a: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .unwrap();
        b.append_addr(1, a).unwrap();
        b.append_addr(1, IpAddr::from([255, 255, 255, 255]))
            .unwrap();
        let col = b.cols[1].finish(1);
        let col = col.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(col.value(0), "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
        assert_eq!(col.value(1), "255.255.255.255");
    }

    #[test]
    fn type_errors() {
        let mut b = ColumnsBuilder::new(schema(), 1);
        assert!(matches!(
            b.append_u64(0, 1),
            Err(ExportError::TypeMismatch { column: 0, .. })
        ));
        assert!(matches!(
            b.append_addr(2, IpAddr::from([1, 2, 3, 4])),
            Err(ExportError::TypeMismatch { .. })
        ));
        assert!(matches!(
            b.append_null(9),
            Err(ExportError::NoSuchColumn { column: 9, .. })
        ));
        b.append_time_ns(0, 0).unwrap();
        assert!(matches!(
            b.finish(),
            Err(ExportError::RaggedBatch { column: 1, .. })
        ));
        assert!(b.is_empty());
    }
}
