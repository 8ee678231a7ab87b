//! Tokens and schema hashes, computed exactly as the reference computes them
//! (DIGEST §5): MD5 hex of a string built from the statement's sections, with
//! names sorted and values in their primitive's output form.

use md5::{Digest, Md5};

use super::{Statement, StatementKind};
use crate::value::Timestamp;

pub(crate) fn md5_hex(s: &str) -> String {
    let d = Md5::digest(s.as_bytes());
    let mut out = String::with_capacity(32);
    for b in d {
        out.push(char::from_digit((b >> 4) as u32, 16).unwrap_or('0'));
        out.push(char::from_digit((b & 15) as u32, 16).unwrap_or('0'));
    }
    out
}

/// The schema hash: registry URI, sorted parameter names, sorted result
/// names. Two statements with equal hashes have the same schema.
pub fn schema_hash(s: &Statement) -> String {
    let mut p: Vec<&str> = s.parameter_names().collect();
    p.sort_unstable();
    let mut r: Vec<&str> = s.columns().iter().map(|c| c.name.as_str()).collect();
    r.sort_unstable();
    md5_hex(&format!(
        "{} p {} r {}",
        s.registry_uri(),
        p.join(" "),
        r.join(" ")
    ))
}

/// Python's `repr((start, end))` of a scope's datetimes, which the reference
/// client appends when it re-tokens a relative specification.
pub fn python_datetimes_repr(start: Option<Timestamp>, end: Option<Timestamp>) -> String {
    fn one(t: Option<Timestamp>) -> String {
        let Some(t) = t else {
            return "None".into();
        };
        let (y, mo, d, h, mi, s, us) = t.to_civil();
        let mut out = format!("datetime.datetime({y}, {mo}, {d}, {h}, {mi}");
        if s != 0 || us != 0 {
            out.push_str(&format!(", {s}"));
        }
        if us != 0 {
            out.push_str(&format!(", {us}"));
        }
        out.push(')');
        out
    }
    format!("({}, {})", one(start), one(end))
}

impl Statement {
    fn sorted_params(&self) -> Vec<(&str, &super::Entry)> {
        // BTreeMap iteration is already sorted by name.
        self.parameters
            .iter()
            .flat_map(|m| m.iter().map(|(k, v)| (k.as_str(), v)))
            .collect()
    }

    fn sorted_results(&self) -> String {
        let mut r: Vec<&str> = self.columns().iter().map(|c| c.name.as_str()).collect();
        r.sort_unstable();
        r.join(" ")
    }

    fn when_ref(&self) -> String {
        self.when().reference_string()
    }

    /// The reference's "pv" hash (specification default token), optionally
    /// with a suffix (the reference client appends the resolved datetimes).
    pub fn pv_hash(&self, suffix: &str) -> String {
        let ps = self.sorted_params();
        let keys: Vec<&str> = ps.iter().map(|(k, _)| *k).collect();
        let vals: Vec<String> = ps.iter().map(|(_, e)| self.param_value_ref(e)).collect();
        md5_hex(&format!(
            "{}{} w {} pk {} pv {} r {}{}",
            self.registry_uri(),
            self.verb,
            self.when_ref(),
            keys.join(" "),
            vals.join(" "),
            self.sorted_results(),
            suffix
        ))
    }

    fn param_value_ref(&self, e: &super::Entry) -> String {
        if self.kind.has_constraints() {
            super::reference_none(e.prim).to_string()
        } else {
            e.reference_value()
        }
    }

    /// The reference's "mpcv" hash (default token of capabilities and others).
    pub fn mpcv_hash(&self) -> String {
        let ps = self.sorted_params();
        let keys: Vec<&str> = ps.iter().map(|(k, _)| *k).collect();
        let cons: Vec<String> = ps
            .iter()
            .map(|(_, e)| {
                if self.kind.has_constraints() {
                    e.constraint().reference_string()
                } else {
                    "*".to_string()
                }
            })
            .collect();
        let vals: Vec<String> = ps.iter().map(|(_, e)| self.param_value_ref(e)).collect();
        let (mk, mv): (Vec<&str>, Vec<String>) = self
            .metadata
            .iter()
            .flat_map(|m| m.iter().map(|(k, e)| (k.as_str(), e.reference_value())))
            .unzip();
        md5_hex(&format!(
            "{}{} w {} pk {} pc {} pv {} mk {} mv {} r {} ex {}",
            self.registry_uri(),
            self.verb,
            self.when_ref(),
            keys.join(" "),
            cons.join(" "),
            vals.join(" "),
            mk.join(" "),
            mv.join(" "),
            self.sorted_results(),
            self.export.as_deref().unwrap_or("None")
        ))
    }

    /// The token the reference would assign: the pv hash for specifications,
    /// the mpcv hash for every other statement.
    pub fn default_token(&self) -> String {
        match self.kind {
            StatementKind::Specification => self.pv_hash(""),
            _ => self.mpcv_hash(),
        }
    }

    /// The token the reference client gives a specification it sends at
    /// `now`: the pv hash, plus the resolved start and end for scopes that
    /// are not absolute (so each invocation of `now + …` differs).
    pub fn client_token(&self, now: Timestamp) -> String {
        let w = self.when();
        if w.is_definite() {
            self.pv_hash("")
        } else {
            let (a, b) = w.datetimes(now);
            self.pv_hash(&python_datetimes_repr(a, b))
        }
    }

    /// This statement's schema hash.
    pub fn schema_hash(&self) -> String {
        schema_hash(self)
    }
}
