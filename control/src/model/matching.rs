//! Matching a specification to a capability.
//!
//! The specification says a specification fits a capability when their
//! schemas (registry, parameter names, result names) are equal, the verbs are
//! equal, every parameter has a value that meets its constraint, and the
//! temporal scope lies within the capability's. The reference component checks
//! only the schema hash and the scope (DIGEST Q5); we check everything.

use super::{Statement, StatementKind};
use crate::value::Timestamp;
use crate::when::ScopeMismatch;

/// Why a specification does not fit a capability.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MatchError {
    /// The message is not a specification.
    #[error("not a specification")]
    NotASpecification,
    /// Registry, parameter names or result names differ.
    #[error("schema differs from the capability's")]
    Schema,
    /// The verbs differ.
    #[error("verb {given:?} differs from the capability's {expected:?}")]
    Verb {
        /// The capability's verb.
        expected: String,
        /// The specification's.
        given: String,
    },
    /// A parameter has no value.
    #[error("parameter {0:?} has no value")]
    MissingValue(String),
    /// A parameter value is outside its constraint.
    #[error("parameter {name:?} value {value:?} violates the constraint {constraint:?}")]
    Constraint {
        /// Parameter.
        name: String,
        /// Value given.
        value: String,
        /// The capability's constraint.
        constraint: String,
    },
    /// The temporal scope does not fit.
    #[error("temporal scope: {0}")]
    Scope(ScopeMismatch),
}

impl MatchError {
    /// True when the failure is a schema mismatch, i.e. another capability
    /// may still fit (used when searching a set of capabilities).
    pub fn is_schema(&self) -> bool {
        matches!(self, MatchError::Schema)
    }
}

/// Checks that `spec` fits `cap` at `now`.
pub fn check_fulfills(spec: &Statement, cap: &Statement, now: Timestamp) -> Result<(), MatchError> {
    if spec.kind != StatementKind::Specification {
        return Err(MatchError::NotASpecification);
    }
    if spec.schema_hash() != cap.schema_hash() {
        return Err(MatchError::Schema);
    }
    if spec.verb != cap.verb {
        return Err(MatchError::Verb {
            expected: cap.verb.clone(),
            given: spec.verb.clone(),
        });
    }
    for name in cap.parameter_names() {
        let (Some(c), Some(e)) = (cap.parameter(name), spec.parameter(name)) else {
            return Err(MatchError::Schema);
        };
        let Some(v) = e.value() else {
            return Err(MatchError::MissingValue(name.to_string()));
        };
        let constraint = c.constraint();
        if !constraint.met_by(&v) {
            return Err(MatchError::Constraint {
                name: name.to_string(),
                value: e.text().into_owned(),
                constraint: c.text().into_owned(),
            });
        }
    }
    spec.when()
        .fits(&cap.when(), now)
        .map_err(MatchError::Scope)
}

/// The first capability that `spec` fits at `now`, or the most telling
/// error: a non-schema mismatch of a capability with the same schema wins
/// over "no capability with this schema".
pub fn find_capability<'c, I>(
    spec: &Statement,
    caps: I,
    now: Timestamp,
) -> Result<&'c Statement, MatchError>
where
    I: IntoIterator<Item = &'c Statement>,
{
    let mut best = MatchError::Schema;
    for cap in caps {
        match check_fulfills(spec, cap, now) {
            Ok(()) => return Ok(cap),
            Err(e) if e.is_schema() => {}
            Err(e) => best = e,
        }
    }
    Err(best)
}
