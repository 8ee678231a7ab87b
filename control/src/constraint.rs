//! Parameter constraints: what values a capability accepts for a parameter.
//!
//! Text forms (spec §Parameters, and the reference's `parse_constraint`):
//!
//! * `*` — any value;
//! * `a ... b` — inclusive range (bounds swapped if reversed); recognised, as in
//!   the reference, by the substring ` ... ` anywhere but at the start;
//! * `a,b,c` — a set; one member is a single value;
//! * for addresses, members may be prefixes (`192.0.2.0/24`, `2001:db8::/32`),
//!   as the specification defines and the reference does not implement.
//!
//! Deviation (documented in `doc/protocol.md`): set members are trimmed, so the
//! specification's own example `192.0.2.19, 192.0.3.21` is accepted; the
//! reference splits on `,` without trimming and fails on it.
//!
//! Sets keep their input order; the reference writes sets in Python's set
//! iteration order, which the text of a parsed message preserves.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::registry::Primitive;
use crate::value::{Value, ValueError};

/// Range separator.
pub const RANGE_SEP: &str = " ... ";

/// A parsed constraint.
#[derive(Debug, Clone, PartialEq)]
pub enum Constraint {
    /// `*`: every value.
    All,
    /// Inclusive range, `lo <= hi`.
    Range {
        /// Lower bound.
        lo: Value,
        /// Upper bound.
        hi: Value,
    },
    /// Discrete set (input order, duplicates removed).
    Set(Vec<Member>),
}

/// A member of a set constraint.
#[derive(Debug, Clone, PartialEq)]
pub enum Member {
    /// A single value.
    Value(Value),
    /// An address prefix (network address with host bits cleared, prefix length).
    Prefix(IpAddr, u8),
}

/// Errors reading a constraint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConstraintError {
    /// A bound or member is not a value of the primitive.
    #[error(transparent)]
    Value(#[from] ValueError),
    /// A range has other than two bounds, or bounds that do not order.
    #[error("malformed range constraint {0:?}")]
    BadRange(String),
    /// An address prefix is malformed.
    #[error("malformed address prefix {0:?}")]
    BadPrefix(String),
    /// A set member is empty.
    #[error("empty member in set constraint {0:?}")]
    EmptyMember(String),
}

impl Constraint {
    /// Reads a constraint for a parameter of primitive `prim`.
    pub fn parse(prim: Primitive, text: &str) -> Result<Constraint, ConstraintError> {
        if text == "*" {
            return Ok(Constraint::All);
        }
        // The reference reads a leading " ... " as part of a set member; such
        // a member could never be written back unambiguously, so it is refused.
        if text.starts_with(RANGE_SEP) {
            return Err(ConstraintError::BadRange(text.into()));
        }
        if let Some(pos) = crate::text::find(text, RANGE_SEP)
            && pos > 0
        {
            let a = &text[..pos];
            let b = &text[pos + RANGE_SEP.len()..];
            if crate::text::contains(b, RANGE_SEP) {
                return Err(ConstraintError::BadRange(text.into()));
            }
            let (a, b) = (a.trim(), b.trim());
            if a.is_empty() || b.is_empty() {
                return Err(ConstraintError::BadRange(text.into()));
            }
            let a = Value::parse_some(prim, a)?;
            let b = Value::parse_some(prim, b)?;
            return match a.partial_cmp_same(&b) {
                Some(std::cmp::Ordering::Greater) => Ok(Constraint::Range { lo: b, hi: a }),
                Some(_) => Ok(Constraint::Range { lo: a, hi: b }),
                None => Err(ConstraintError::BadRange(text.into())),
            };
        }
        let mut members: Vec<Member> = Vec::new();
        for raw in text.split(',') {
            let m = raw.trim();
            if m.is_empty() {
                return Err(ConstraintError::EmptyMember(text.into()));
            }
            let member = if prim == Primitive::Address && m.contains('/') {
                parse_prefix(m)?
            } else {
                Member::Value(Value::parse_some(prim, m)?)
            };
            if !members.contains(&member) {
                members.push(member);
            }
        }
        Ok(Constraint::Set(members))
    }

    /// Checks that `text` is a constraint for `prim` as [`Constraint::parse`] would, without
    /// building it when it is a single value (the common case in capabilities).
    pub fn check(prim: Primitive, text: &str) -> Result<(), ConstraintError> {
        if text == "*" {
            return Ok(());
        }
        let single = !text.contains(',')
            && !crate::text::contains(text, RANGE_SEP)
            && (prim != Primitive::Address || !text.contains('/'));
        if single {
            let m = text.trim();
            // `*` as a set member is a value of its primitive (or an error), not "any"
            if !m.is_empty() && m != "*" {
                return Value::check(prim, m).map_err(ConstraintError::from);
            }
        }
        Constraint::parse(prim, text).map(drop)
    }

    /// True if `v` satisfies the constraint.
    pub fn met_by(&self, v: &Value) -> bool {
        match self {
            Constraint::All => true,
            Constraint::Range { lo, hi } => matches!(
                (lo.partial_cmp_same(v), v.partial_cmp_same(hi)),
                (Some(a), Some(b)) if a.is_le() && b.is_le()
            ),
            Constraint::Set(ms) => ms.iter().any(|m| match m {
                Member::Value(x) => x == v || x.partial_cmp_same(v).is_some_and(|o| o.is_eq()),
                Member::Prefix(net, len) => match v {
                    Value::Address(a) => prefix_contains(*net, *len, *a),
                    _ => false,
                },
            }),
        }
    }

    /// The only value allowed, if the constraint allows exactly one.
    pub fn single_value(&self) -> Option<&Value> {
        match self {
            Constraint::Range { lo, hi } if lo == hi => Some(lo),
            Constraint::Set(ms) if ms.len() == 1 => match &ms[0] {
                Member::Value(v) => Some(v),
                Member::Prefix(..) => None,
            },
            _ => None,
        }
    }

    /// The reference's text form (`str(constraint)`), used in tokens:
    /// bounds and members in their primitive's output form, sets in order.
    pub fn reference_string(&self) -> String {
        match self {
            Constraint::All => "*".to_string(),
            Constraint::Range { lo, hi } => format!("{lo}{RANGE_SEP}{hi}"),
            Constraint::Set(ms) => {
                let mut s = String::new();
                for (i, m) in ms.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    match m {
                        Member::Value(v) => {
                            let _ = write!(s, "{v}");
                        }
                        Member::Prefix(a, l) => {
                            let _ = write!(s, "{a}/{l}");
                        }
                    }
                }
                s
            }
        }
    }
}

fn parse_prefix(m: &str) -> Result<Member, ConstraintError> {
    let bad = || ConstraintError::BadPrefix(m.into());
    let (a, l) = m.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = a.trim().parse().map_err(|_| bad())?;
    let len: u8 = l.trim().parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(bad());
    }
    Ok(Member::Prefix(mask(addr, len), len))
}

fn mask(a: IpAddr, len: u8) -> IpAddr {
    match a {
        IpAddr::V4(v) => {
            let m = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            IpAddr::V4((u32::from(v) & m).into())
        }
        IpAddr::V6(v) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            IpAddr::V6((u128::from(v) & m).into())
        }
    }
}

fn prefix_contains(net: IpAddr, len: u8, a: IpAddr) -> bool {
    net.is_ipv4() == a.is_ipv4() && mask(a, len) == net
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_agrees_with_parse() {
        use crate::registry::Primitive as P;
        let prims = [
            P::String,
            P::Natural,
            P::Real,
            P::Boolean,
            P::Time,
            P::Address,
            P::Url,
        ];
        let texts = [
            "*",
            " * ",
            "",
            " ",
            "1",
            " 7 ",
            "-1",
            "1.5",
            "1e3",
            "True",
            "false",
            "now",
            "past",
            "2015-01-01 00:00:00",
            "2015-13-01",
            "10.0.0.1",
            "10.0.0.300",
            "10.0.0.0/8",
            "10.0.0.0/33",
            "::1",
            "2001:db8::/32",
            "a",
            "a,b",
            "a,,b",
            "1 ... 2",
            "2 ... 1",
            " ... 1",
            "1 ... 2 ... 3",
            "1 ... ",
            "nan ... 1",
            "http://x/",
            "1,*",
        ];
        for p in prims {
            for t in texts {
                assert_eq!(
                    Constraint::check(p, t),
                    Constraint::parse(p, t).map(drop),
                    "{p} {t:?}"
                );
            }
        }
    }

    use super::*;

    fn c(prim: Primitive, s: &str) -> Constraint {
        Constraint::parse(prim, s).unwrap()
    }
    fn v(prim: Primitive, s: &str) -> Value {
        Value::parse_some(prim, s).unwrap()
    }

    #[test]
    fn kinds() {
        assert_eq!(c(Primitive::Natural, "*"), Constraint::All);
        let r = c(Primitive::Natural, "1024 ... 1");
        assert_eq!(r.reference_string(), "1 ... 1024");
        assert!(r.met_by(&v(Primitive::Natural, "80")));
        assert!(!r.met_by(&v(Primitive::Natural, "2000")));
        let s = c(Primitive::Address, "192.0.2.2,192.0.2.1");
        assert_eq!(s.reference_string(), "192.0.2.2,192.0.2.1");
        assert!(s.met_by(&v(Primitive::Address, "192.0.2.1")));
        assert!(!s.met_by(&v(Primitive::Address, "192.0.2.3")));
        let one = c(Primitive::Natural, "10");
        assert_eq!(one.single_value(), Some(&Value::Natural(10)));
    }

    #[test]
    fn spec_forms_the_reference_lacks() {
        let s = c(Primitive::Address, "192.0.2.19, 192.0.3.21");
        assert!(s.met_by(&v(Primitive::Address, "192.0.3.21")));
        let p = c(Primitive::Address, "192.0.2.0/24,2001:db8::/32");
        assert!(p.met_by(&v(Primitive::Address, "192.0.2.77")));
        assert!(p.met_by(&v(Primitive::Address, "2001:db8:1::5")));
        assert!(!p.met_by(&v(Primitive::Address, "192.0.3.1")));
        assert_eq!(p.single_value(), None);
    }

    #[test]
    fn errors() {
        assert!(Constraint::parse(Primitive::Natural, "a ... b").is_err());
        assert!(Constraint::parse(Primitive::Natural, "1,,2").is_err());
        assert!(Constraint::parse(Primitive::Address, "10.0.0.0/33").is_err());
        assert!(Constraint::parse(Primitive::Natural, "1 ... 2 ... 3").is_err());
        // found by fuzzing: an empty bound made the reference form unstable
        assert!(Constraint::parse(Primitive::String, " ..\0 ... ").is_err());
        assert!(Constraint::parse(Primitive::String, " ...  Tr.Tr.00. ... T").is_err());
    }
}
