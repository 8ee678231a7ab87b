//! Errors of the information model and their mapping to mPlane exceptions.

use crate::constraint::ConstraintError;
use crate::registry::RegistryError;
use crate::value::ValueError;
use crate::when::WhenError;

/// Why a message could not be parsed or built. Every variant is the peer's
/// fault (bad input) unless noted; each maps to an mPlane exception message
/// through [`ModelError::exception_message`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The text is not JSON.
    #[error("malformed JSON: {0}")]
    Json(String),
    /// The JSON is not an object.
    #[error("an mPlane message must be a JSON object")]
    NotAnObject,
    /// None of the kind keys is present.
    #[error(
        "cannot determine the message kind (no capability, specification, result, receipt, redemption, withdrawal, interrupt, exception or envelope key)"
    )]
    UnknownKind,
    /// A section has the wrong JSON type or content.
    #[error("section {field:?}: {reason}")]
    BadField {
        /// The section (message key).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// `version` is greater than 1.
    #[error("version mismatch: {0} is newer than 1")]
    VersionMismatch(String),
    /// The message names a registry that is not loaded.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// An element name is not in the message's registry.
    #[error("unknown element {name:?} in registry {registry}")]
    UnknownElement {
        /// The name.
        name: String,
        /// The registry searched.
        registry: String,
    },
    /// A value does not parse as its element's primitive.
    #[error("element {element:?}: {source}")]
    BadValue {
        /// The element.
        element: String,
        /// The cause.
        source: ValueError,
    },
    /// A constraint does not parse.
    #[error("element {element:?}: {source}")]
    BadConstraint {
        /// The element.
        element: String,
        /// The cause.
        source: ConstraintError,
    },
    /// The temporal scope does not parse.
    #[error("temporal scope: {0}")]
    BadWhen(#[from] WhenError),
    /// A result row does not have one cell per column.
    #[error("result row {row} has {got} values for {expected} columns")]
    RowWidth {
        /// Row index.
        row: usize,
        /// Number of columns.
        expected: usize,
        /// Number of cells.
        got: usize,
    },
    /// A result column is named twice.
    #[error("result column {0:?} appears twice")]
    DuplicateColumn(String),
    /// Envelopes nest deeper than the limit.
    #[error("envelopes nested deeper than {0}")]
    TooDeep(usize),
    /// The message is larger than the limit.
    #[error("message of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// A message built by this program is incomplete (a programming error,
    /// not the peer's fault): e.g. a specification without parameter values.
    #[error("invalid message: {0}")]
    Invalid(String),
}

impl ModelError {
    pub(crate) fn field(field: &str, reason: impl Into<String>) -> Self {
        ModelError::BadField {
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    /// The text of the mPlane exception a component answers with.
    pub fn exception_message(&self) -> String {
        format!("Invalid message: {self}")
    }
}
