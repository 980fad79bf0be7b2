//! Error type of the benchmark harness.

use std::path::PathBuf;

/// An implementer's own error behind [`crate::Responder`] (e.g. a model's out-of-memory or a chat
/// client's `ChatError`), boxed so it can be downcast.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Harness errors. Data errors name the file, the record and the field.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A file could not be read or written.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file is not valid JSON / JSONL at all.
    #[error("{path}: {reason}", path = path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong (with line number for JSONL).
        reason: String,
    },
    /// A record is missing a field or has the wrong type.
    #[error("{path}: record {record}: field `{field}`: {reason}", path = path.display())]
    Field {
        /// The file.
        path: PathBuf,
        /// The record (id when known, else its index/line).
        record: String,
        /// The field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// Inconsistent inputs (answers from another model in the same file, unknown ids, ...).
    #[error("{0}")]
    Invalid(String),
    /// The answering model failed.
    #[error("responder {responder}: item {item}: {reason}")]
    Responder {
        /// Responder name.
        responder: String,
        /// The item id.
        item: String,
        /// What failed.
        reason: String,
    },
    /// The chat client failed in a way that is not a per-item judge failure.
    #[error(transparent)]
    Chat(#[from] amp_chat::ChatError),
    /// Another process is writing the same output.
    #[error(transparent)]
    Lock(#[from] amp_io::lock::LockError),
    /// Plotting failed.
    #[error("chart {path}: {reason}", path = path.display())]
    Plot {
        /// The output file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

impl BenchError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BenchError::Io { path: path.into(), source }
    }
}

/// Result alias for this crate.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;
