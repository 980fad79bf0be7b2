//! Errors of the `amp-data` crate.
use std::path::PathBuf;

/// Everything that can go wrong while building AMP preference data.
#[derive(Debug, thiserror::Error)]
pub enum AmpDataError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A data file is malformed; `record` names the record (its id or index) and field.
    #[error("{path}: {record}: {message}")]
    Data {
        path: PathBuf,
        record: String,
        message: String,
    },
    /// A tagger resource (textblob's `en-*.txt`) is missing or malformed.
    #[error("tagger resources: {0}")]
    Tagger(String),
    /// A generator (local model or chat server) failed on one record.
    #[error("generator {model}: record {record}: {message}")]
    Generation {
        model: String,
        record: String,
        message: String,
    },
    /// A sentence embedder failed.
    #[error("embedder: {0}")]
    Embedding(String),
    /// Fine-tuning for Incremental Generation failed.
    #[error("fine-tuning: {0}")]
    FineTune(String),
    /// Invalid configuration or command-line arguments.
    #[error("config: {0}")]
    Config(String),
    /// A JSONL file is malformed, truncated, empty or a JSON array (names file and line).
    #[error(transparent)]
    Jsonl(#[from] amp_io::jsonl::JsonlError),
    /// Another process is writing the same output.
    #[error(transparent)]
    Lock(#[from] amp_io::lock::LockError),
}

impl AmpDataError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        AmpDataError::Io {
            path: path.into(),
            source,
        }
    }

    /// A data error naming the file and the record.
    pub fn data(
        path: impl Into<PathBuf>,
        record: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        AmpDataError::Data {
            path: path.into(),
            record: record.into(),
            message: message.into(),
        }
    }
}

/// Result alias of the crate.
pub type Result<T, E = AmpDataError> = std::result::Result<T, E>;
