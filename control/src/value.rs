//! Typed values per registry primitive, with the reference's text forms.
//!
//! On the wire every parameter, metadata and result value is a JSON string
//! (`"3"`, `"True"`, `"0.125"`, `"2015-06-01 12:00:00.250000"`), the special
//! string `*` meaning "no value". [`Value::parse`] reads that text (and, being
//! liberal, the text of a JSON number or boolean); [`Value`]'s `Display` writes
//! the form the reference writes:
//!
//! | primitive | written | read |
//! |---|---|---|
//! | natural | `42` | integers, and float syntax truncated (`1e3` → 1000) |
//! | real | Python `repr`: `0.125`, `3.0`, `1e-05`, `4200000.0` | float syntax, `inf`, `nan` |
//! | boolean | `True` / `False` | `True`, `False`, `1`, `0`, and `true`/`false` |
//! | time | `YYYY-MM-DD HH:MM:SS.ffffff`, `past`/`now`/`future` | see [`Timestamp::parse`] |
//! | address | dotted quad, RFC 5952 IPv6 | a single host address |
//! | string, url | as is | as is |

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use crate::registry::Primitive;

/// The wire text meaning "no value" (and, in constraints, "any value").
pub const NONE: &str = "*";

/// Errors reading a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// The text is not a value of the primitive.
    #[error("{text:?} is not a valid {prim} value")]
    Invalid {
        /// The primitive expected.
        prim: Primitive,
        /// The text given.
        text: String,
    },
}

fn invalid(prim: Primitive, text: &str) -> ValueError {
    ValueError::Invalid {
        prim,
        text: text.chars().take(200).collect(),
    }
}

/// A UTC instant with microsecond resolution (the reference's `datetime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// Microseconds per second.
pub const MICROS: i64 = 1_000_000;

impl Timestamp {
    /// From microseconds since the Unix epoch.
    pub const fn from_micros(us: i64) -> Self {
        Timestamp(us)
    }

    /// From nanoseconds since the Unix epoch (truncated to µs).
    pub const fn from_nanos(ns: i64) -> Self {
        Timestamp(ns.div_euclid(1000))
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// Nanoseconds since the Unix epoch.
    pub const fn as_nanos(self) -> i64 {
        self.0.saturating_mul(1000)
    }

    /// Adds microseconds (saturating).
    pub const fn add_micros(self, us: i64) -> Self {
        Timestamp(self.0.saturating_add(us))
    }

    /// From calendar fields (UTC). Returns `None` for an invalid date or time.
    /// Years outside 1–9999 (Python's `datetime` range) are refused.
    pub fn from_civil(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32, us: u32) -> Option<Self> {
        if !(1..=9999).contains(&y)
            || !(1..=12).contains(&mo)
            || d == 0
            || d > days_in_month(y, mo)
            || h > 23
            || mi > 59
            || s > 59
            || us >= 1_000_000
        {
            return None;
        }
        let days = days_from_civil(y, mo, d);
        Some(Timestamp(
            ((days * 24 + h as i64) * 60 + mi as i64) * 60 * MICROS + s as i64 * MICROS + us as i64,
        ))
    }

    /// Calendar fields (UTC): year, month, day, hour, minute, second, microsecond.
    pub fn to_civil(self) -> (i64, u32, u32, u32, u32, u32, u32) {
        let days = self.0.div_euclid(86_400 * MICROS);
        let rem = self.0.rem_euclid(86_400 * MICROS);
        let (y, mo, d) = civil_from_days(days);
        let secs = rem / MICROS;
        (
            y,
            mo,
            d,
            (secs / 3600) as u32,
            ((secs / 60) % 60) as u32,
            (secs % 60) as u32,
            (rem % MICROS) as u32,
        )
    }

    /// Day of week, 0 = Monday … 6 = Sunday (Python's `weekday()`).
    pub fn weekday(self) -> u32 {
        // 1970-01-01 was a Thursday (3).
        (self.0.div_euclid(86_400 * MICROS) + 3).rem_euclid(7) as u32
    }

    /// Reads `YYYY-MM-DD[ HH:MM[:SS[.f…]]]` (UTC).
    ///
    /// Like the reference, only a prefix needs to match: a trailing zone
    /// designator (`Z`, `+00:00`) is ignored, not applied. Unlike the reference,
    /// `T` is accepted between date and time (ISO 8601) and fractions with more
    /// than six digits are truncated to microseconds instead of rejected.
    pub fn parse(text: &str) -> Option<Timestamp> {
        let b = text.as_bytes();
        if let Some(t) = Timestamp::parse_canonical(b) {
            return Some(t);
        }
        let mut i = 0;
        let num = |i: &mut usize, min: usize, max: usize| -> Option<i64> {
            let start = *i;
            let mut v: i64 = 0;
            while *i < b.len() && b[*i].is_ascii_digit() && *i - start < max {
                v = v * 10 + (b[*i] - b'0') as i64;
                *i += 1;
            }
            (*i - start >= min).then_some(v)
        };
        let y = num(&mut i, 1, 6)?;
        if b.get(i) != Some(&b'-') {
            return None;
        }
        i += 1;
        let mo = num(&mut i, 1, 2)?;
        if b.get(i) != Some(&b'-') {
            return None;
        }
        i += 1;
        let d = num(&mut i, 1, 2)?;
        let (mut h, mut mi, mut s, mut us) = (0, 0, 0, 0);
        // time part: whitespace (or T) then HH:MM
        let mut j = i;
        let sep = b.get(j).copied();
        if sep == Some(b'T') {
            j += 1;
        } else {
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
        }
        if j > i && j < b.len() && b[j].is_ascii_digit() {
            let mut k = j;
            if let Some(hh) = num(&mut k, 1, 2)
                && b.get(k) == Some(&b':')
            {
                k += 1;
                if let Some(mm) = num(&mut k, 1, 2) {
                    h = hh;
                    mi = mm;
                    i = k;
                    if b.get(i) == Some(&b':') {
                        let mut k2 = i + 1;
                        if let Some(ss) = num(&mut k2, 1, 2) {
                            s = ss;
                            i = k2;
                            if b.get(i) == Some(&b'.') {
                                let start = i + 1;
                                let mut k3 = start;
                                while k3 < b.len() && b[k3].is_ascii_digit() {
                                    k3 += 1;
                                }
                                if k3 == start {
                                    return None;
                                }
                                let digits = &b[start..k3.min(start + 6)];
                                let mut v: i64 = 0;
                                for d in digits {
                                    v = v * 10 + (d - b'0') as i64;
                                }
                                for _ in digits.len()..6 {
                                    v *= 10;
                                }
                                us = v;
                            }
                        }
                    }
                }
            }
        }
        Timestamp::from_civil(
            y, mo as u32, d as u32, h as u32, mi as u32, s as u32, us as u32,
        )
    }

    /// The forms the reference writes, `YYYY-MM-DD HH:MM:SS.ffffff` and
    /// `YYYY-MM-DD HH:MM:SS`, read at fixed offsets; `None` for any other text
    /// (which the general reader then handles).
    fn parse_canonical(b: &[u8]) -> Option<Timestamp> {
        if !(b.len() == 19 || b.len() == 26) {
            return None;
        }
        let seps = [(4, b'-'), (7, b'-'), (10, b' '), (13, b':'), (16, b':')];
        if seps.iter().any(|&(i, c)| b[i] != c) || (b.len() == 26 && b[19] != b'.') {
            return None;
        }
        let num = |from: usize, to: usize| -> Option<i64> {
            b[from..to].iter().try_fold(0i64, |v, &c| {
                c.is_ascii_digit().then(|| v * 10 + (c - b'0') as i64)
            })
        };
        let us = if b.len() == 26 { num(20, 26)? } else { 0 };
        Timestamp::from_civil(
            num(0, 4)?,
            num(5, 7)? as u32,
            num(8, 10)? as u32,
            num(11, 13)? as u32,
            num(14, 16)? as u32,
            num(17, 19)? as u32,
            us as u32,
        )
    }

    /// Writes `YYYY-MM-DD HH:MM:SS.ffffff`.
    pub fn write(self, out: &mut String) {
        let (y, mo, d, h, mi, s, us) = self.to_civil();
        let _ = write!(out, "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}");
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(26);
        self.write(&mut s);
        f.write_str(&s)
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// Days in a month of a (proleptic Gregorian) year.
pub fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 0,
    }
}

// Howard Hinnant's days_from_civil / civil_from_days.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A point in time as a value: an instant or one of the special times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeValue {
    /// The indefinite past.
    Past,
    /// The present (resolved against the clock when evaluated).
    Now,
    /// The indefinite future.
    Future,
    /// An instant.
    At(Timestamp),
}

impl TimeValue {
    /// Reads `past`, `now`, `future` or a timestamp.
    pub fn parse(text: &str) -> Option<TimeValue> {
        match text {
            "past" => Some(TimeValue::Past),
            "now" => Some(TimeValue::Now),
            "future" => Some(TimeValue::Future),
            _ => Timestamp::parse(text).map(TimeValue::At),
        }
    }
}

impl fmt::Display for TimeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimeValue::Past => f.write_str("past"),
            TimeValue::Now => f.write_str("now"),
            TimeValue::Future => f.write_str("future"),
            TimeValue::At(t) => t.fmt(f),
        }
    }
}

/// A typed value of one of the registry primitives.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `string`.
    String(String),
    /// `natural`.
    Natural(u64),
    /// `real`.
    Real(f64),
    /// `boolean`.
    Boolean(bool),
    /// `time`.
    Time(TimeValue),
    /// `address`.
    Address(IpAddr),
    /// `url`.
    Url(String),
}

impl Value {
    /// Reads the wire text of a value of `prim`. `*` gives `Ok(None)`.
    pub fn parse(prim: Primitive, text: &str) -> Result<Option<Value>, ValueError> {
        if text == NONE {
            return Ok(None);
        }
        Value::parse_some(prim, text).map(Some)
    }

    /// Reads the wire text of a value of `prim`; `*` is an error here.
    pub fn parse_some(prim: Primitive, text: &str) -> Result<Value, ValueError> {
        Ok(match prim {
            Primitive::String => Value::String(text.to_string()),
            Primitive::Url => Value::Url(text.to_string()),
            Primitive::Natural => {
                Value::Natural(parse_natural(text).ok_or_else(|| invalid(prim, text))?)
            }
            Primitive::Real => Value::Real(parse_real(text).ok_or_else(|| invalid(prim, text))?),
            Primitive::Boolean => Value::Boolean(match text {
                "True" | "1" | "true" => true,
                "False" | "0" | "false" => false,
                _ => return Err(invalid(prim, text)),
            }),
            Primitive::Time => {
                Value::Time(TimeValue::parse(text).ok_or_else(|| invalid(prim, text))?)
            }
            Primitive::Address => Value::Address(text.parse().map_err(|_| invalid(prim, text))?),
        })
    }

    /// Checks that `text` is a valid value of `prim` (or `*`) without building it.
    pub fn check(prim: Primitive, text: &str) -> Result<(), ValueError> {
        match prim {
            Primitive::String | Primitive::Url => Ok(()),
            _ if text == NONE => Ok(()),
            // the per-primitive readers of `parse_some`, without building a `Value`
            Primitive::Natural => parse_natural(text)
                .map(drop)
                .ok_or_else(|| invalid(prim, text)),
            Primitive::Time => TimeValue::parse(text)
                .map(drop)
                .ok_or_else(|| invalid(prim, text)),
            _ => Value::parse_some(prim, text).map(drop),
        }
    }

    /// The primitive of this value.
    pub fn primitive(&self) -> Primitive {
        match self {
            Value::String(_) => Primitive::String,
            Value::Natural(_) => Primitive::Natural,
            Value::Real(_) => Primitive::Real,
            Value::Boolean(_) => Primitive::Boolean,
            Value::Time(_) => Primitive::Time,
            Value::Address(_) => Primitive::Address,
            Value::Url(_) => Primitive::Url,
        }
    }

    /// Orders two values of the same primitive (for range constraints).
    /// `None` when they are not comparable (different kinds, NaN, special times).
    pub fn partial_cmp_same(&self, other: &Value) -> Option<std::cmp::Ordering> {
        use Value::*;
        match (self, other) {
            (String(a), String(b)) | (Url(a), Url(b)) => Some(a.cmp(b)),
            (Natural(a), Natural(b)) => Some(a.cmp(b)),
            (Real(a), Real(b)) => a.partial_cmp(b),
            (Natural(a), Real(b)) => (*a as f64).partial_cmp(b),
            (Real(a), Natural(b)) => a.partial_cmp(&(*b as f64)),
            (Boolean(a), Boolean(b)) => Some(a.cmp(b)),
            (Time(TimeValue::At(a)), Time(TimeValue::At(b))) => Some(a.cmp(b)),
            (Address(a), Address(b)) => match (a, b) {
                (IpAddr::V4(x), IpAddr::V4(y)) => Some(x.cmp(y)),
                (IpAddr::V6(x), IpAddr::V6(y)) => Some(x.cmp(y)),
                _ => None,
            },
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(s) | Value::Url(s) => f.write_str(s),
            Value::Natural(n) => write!(f, "{n}"),
            Value::Real(x) => {
                let mut s = String::new();
                write_real(*x, &mut s);
                f.write_str(&s)
            }
            Value::Boolean(true) => f.write_str("True"),
            Value::Boolean(false) => f.write_str("False"),
            Value::Time(t) => t.fmt(f),
            Value::Address(a) => a.fmt(f),
        }
    }
}

/// Writes a value or `*` for none, as the reference's `unparse`.
pub fn unparse(v: Option<&Value>) -> String {
    match v {
        None => NONE.to_string(),
        Some(v) => v.to_string(),
    }
}

#[inline]
fn parse_natural(text: &str) -> Option<u64> {
    // the form on the wire, in one pass: up to 19 digits cannot overflow
    if (1..=19).contains(&text.len()) {
        let digits = text.bytes().try_fold(0u64, |v, c| {
            c.is_ascii_digit().then(|| v * 10 + u64::from(c - b'0'))
        });
        if digits.is_some() {
            return digits;
        }
    }
    let t = text.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Some(n);
    }
    // float syntax, truncated toward zero as Python's int(float(s))
    let x = parse_real(t)?;
    if x.is_finite() && x > -1.0 && x < 18_446_744_073_709_551_616.0 {
        Some(x.max(0.0) as u64)
    } else {
        None
    }
}

fn parse_real(text: &str) -> Option<f64> {
    let t = text.trim();
    match t.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => return Some(f64::INFINITY),
        "-inf" | "-infinity" => return Some(f64::NEG_INFINITY),
        "nan" | "+nan" | "-nan" => return Some(f64::NAN),
        _ => {}
    }
    // Rust accepts "inf"/"nan" spellings handled above; reject what Python rejects
    // (e.g. "1_0" is accepted by Python 3.6+, "0x10" is not).
    let cleaned;
    let t = if t.contains('_') {
        cleaned = t.replace('_', "");
        cleaned.as_str()
    } else {
        t
    };
    if t.is_empty()
        || !t
            .bytes()
            .all(|c| c.is_ascii_digit() || b"+-.eE".contains(&c))
    {
        return None;
    }
    t.parse().ok()
}

/// Writes a float as Python's `repr` does: shortest round-trip digits, fixed
/// notation for exponents −4 ≤ e < 16 (always with a fraction, `3.0`),
/// scientific otherwise with a signed two-digit exponent (`1e-05`, `1e+16`).
pub fn write_real(x: f64, out: &mut String) {
    if x.is_nan() {
        out.push_str("nan");
        return;
    }
    if x.is_infinite() {
        out.push_str(if x > 0.0 { "inf" } else { "-inf" });
        return;
    }
    let sci = format!("{x:e}"); // e.g. "-4.2e6", "1e-5", "0e0"
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mant) = match mant.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mant),
    };
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    if neg {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                for _ in digits.len()..int_len {
                    out.push('0');
                }
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        } else {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            out.push_str(&digits);
        }
    } else {
        out.push_str(mant);
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let _ = write!(out, "{:02}", exp.abs());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real(x: f64) -> String {
        let mut s = String::new();
        write_real(x, &mut s);
        s
    }

    #[test]
    fn reals_as_python_repr() {
        assert_eq!(real(0.125), "0.125");
        assert_eq!(real(3.0), "3.0");
        assert_eq!(real(1e-5), "1e-05");
        assert_eq!(real(4_200_000.0), "4200000.0");
        assert_eq!(real(1e16), "1e+16");
        assert_eq!(real(1.5e-7), "1.5e-07");
        assert_eq!(real(0.0001), "0.0001");
        assert_eq!(real(-0.0), "-0.0");
        assert_eq!(real(0.0), "0.0");
        assert_eq!(real(123456789012345678.0), "1.2345678901234568e+17");
        assert_eq!(real(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(real(1e22), "1e+22");
        assert_eq!(real(9999999999999998.0), "9999999999999998.0");
    }

    #[test]
    fn timestamps_round_trip() {
        let t = Timestamp::parse("2015-06-01 12:00:00.250000").unwrap();
        assert_eq!(t.to_string(), "2015-06-01 12:00:00.250000");
        assert_eq!(
            Timestamp::parse("2017-12-24").unwrap().to_string(),
            "2017-12-24 00:00:00.000000"
        );
        assert_eq!(
            Timestamp::parse("2017-12-24 22:18").unwrap().to_string(),
            "2017-12-24 22:18:00.000000"
        );
        assert_eq!(
            Timestamp::parse("2017-12-24T22:18:42Z")
                .unwrap()
                .to_string(),
            "2017-12-24 22:18:42.000000"
        );
        assert_eq!(
            Timestamp::parse("2017-12-24 22:18:42.1234567")
                .unwrap()
                .to_string(),
            "2017-12-24 22:18:42.123456"
        );
        assert_eq!(Timestamp::parse("1970-01-01").unwrap().as_micros(), 0);
        assert_eq!(
            Timestamp::parse("1969-12-31 23:59:59.5")
                .unwrap()
                .as_micros(),
            -500_000
        );
        assert!(Timestamp::parse("2017-02-30").is_none());
        assert!(Timestamp::parse("2017-12-24 25:00").is_none());
        assert!(Timestamp::parse("yesterday").is_none());
        // found by fuzzing: a six-digit year overflowed the day arithmetic
        assert!(Timestamp::parse("420112-2-24 23:002p0.00").is_none());
        assert!(Timestamp::parse("0000-01-01").is_none());
        assert_eq!(Timestamp::parse("2026-11-25").unwrap().weekday(), 2); // a Wednesday
    }

    #[test]
    fn primitives_parse_and_format() {
        let p = |prim, s| Value::parse(prim, s).unwrap().unwrap().to_string();
        assert_eq!(p(Primitive::Natural, "42"), "42");
        assert_eq!(p(Primitive::Natural, "1e3"), "1000");
        assert_eq!(p(Primitive::Natural, "100.7"), "100");
        assert_eq!(p(Primitive::Real, "3"), "3.0");
        assert_eq!(p(Primitive::Boolean, "1"), "True");
        assert_eq!(p(Primitive::Boolean, "False"), "False");
        assert_eq!(p(Primitive::Address, "2001:db8:0:0:0:0:0:1"), "2001:db8::1");
        assert_eq!(p(Primitive::Time, "now"), "now");
        assert_eq!(Value::parse(Primitive::Natural, "*").unwrap(), None);
        for (prim, bad) in [
            (Primitive::Natural, "-5"),
            (Primitive::Natural, "abc"),
            (Primitive::Real, "0x10"),
            (Primitive::Boolean, "yes"),
            (Primitive::Address, "10.0.0.0/8"),
            (Primitive::Time, "tomorrow"),
        ] {
            assert!(Value::parse(prim, bad).is_err(), "{prim} {bad}");
        }
    }
}
