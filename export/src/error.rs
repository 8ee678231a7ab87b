//! The one error type of the crate.

use std::io;
use std::path::PathBuf;

use mplane::registry::Primitive;

/// Everything that can go wrong while mapping schemas, building batches or
/// writing files.
///
/// Who is at fault is said per variant. The component maps an error of a
/// job's sink to an mPlane exception (its `Display` text is the message);
/// [`ExportError::is_disk_full`] and [`ExportError::is_unwritable`] tell the
/// operator-facing cases apart.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// A result column names an element the registry does not define
    /// (the specification is at fault).
    #[error("unknown element {element:?} in registry {registry}")]
    UnknownElement {
        /// The element name.
        element: String,
        /// URI of the registry searched.
        registry: String,
    },
    /// A statement names a registry that is not loaded.
    #[error("registry {0} is not loaded")]
    UnknownRegistry(String),
    /// Two result columns map to the same column name (e.g. `a.b` and `a_b`),
    /// or the same element is listed twice (the specification is at fault).
    #[error("duplicate column {column:?} (from element {element:?})")]
    DuplicateColumn {
        /// The column name after dot replacement.
        column: String,
        /// The element that collided.
        element: String,
    },
    /// A result schema with no columns.
    #[error("result schema has no columns")]
    EmptySchema,
    /// A value of the wrong primitive was appended to a column (the caller's
    /// builder code is at fault).
    #[error("column {column} holds {expected} values, not {got}")]
    TypeMismatch {
        /// Column index.
        column: usize,
        /// The column's primitive.
        expected: Primitive,
        /// What the caller tried to append.
        got: &'static str,
    },
    /// A column index past the schema (the caller is at fault).
    #[error("column {column} out of range ({columns} columns)")]
    NoSuchColumn {
        /// Column index asked for.
        column: usize,
        /// Columns in the schema.
        columns: usize,
    },
    /// Columns of a batch under construction have different lengths (a row
    /// was not completed).
    #[error("ragged batch: column {column} has {len} rows, column 0 has {expected}")]
    RaggedBatch {
        /// First column whose length differs.
        column: usize,
        /// Its length.
        len: usize,
        /// Length of column 0.
        expected: usize,
    },
    /// A submitted batch does not have the sink's schema.
    #[error("batch schema does not match the sink's schema")]
    SchemaMismatch,
    /// The file system is full (ENOSPC / EDQUOT). The partial file was removed.
    #[error("disk full writing {path}")]
    DiskFull {
        /// File (or directory) being written.
        path: PathBuf,
    },
    /// The export directory cannot be written (permissions, read-only file
    /// system, missing parent): a configuration fault.
    #[error("export directory not writable: {path}: {source}")]
    NotWritable {
        /// The path that failed.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Any other I/O error.
    #[error("I/O error during {op} on {path}: {source}")]
    Io {
        /// What was being done (`create`, `write`, `fsync`, `rename`, ...).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The Parquet/Arrow encoder failed (not an I/O error).
    #[error("parquet encoding error on {path}: {message}")]
    Encode {
        /// File being written.
        path: PathBuf,
        /// The encoder's message.
        message: String,
    },
    /// Arrow refused to assemble a batch.
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// A configuration value is out of range.
    #[error("invalid export configuration: {0}")]
    Config(String),
    /// The export thread has stopped; nothing more can be submitted.
    #[error("export thread has stopped")]
    Closed,
    /// The export thread panicked.
    #[error("export thread panicked")]
    ThreadPanicked,
}

impl ExportError {
    /// Classifies an I/O error on `path`: disk full and unwritable
    /// directories get their own variants.
    pub fn from_io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        // ENOSPC = 28, EDQUOT = 122 on Linux; `StorageFull` covers both on
        // recent std, the raw codes are a fallback.
        if source.kind() == io::ErrorKind::StorageFull
            || matches!(source.raw_os_error(), Some(28) | Some(122))
        {
            return ExportError::DiskFull { path };
        }
        match source.kind() {
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
                ExportError::NotWritable { path, source }
            }
            _ => ExportError::Io { op, path, source },
        }
    }

    /// True for [`ExportError::DiskFull`].
    pub fn is_disk_full(&self) -> bool {
        matches!(self, ExportError::DiskFull { .. })
    }

    /// True for [`ExportError::NotWritable`].
    pub fn is_unwritable(&self) -> bool {
        matches!(self, ExportError::NotWritable { .. })
    }
}
