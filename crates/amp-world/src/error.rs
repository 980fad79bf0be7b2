//! Errors of the synthetic world crate.
use std::path::PathBuf;

/// Everything that can go wrong while generating, writing or reading a world dataset.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    /// A file could not be read, written or renamed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON file could not be (de)serialised.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A PNG could not be encoded or decoded.
    #[error("{path}: image error: {source}")]
    Image {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    /// Training, saving or loading the tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A [`crate::WorldConfig`] field is out of range.
    #[error("invalid world config: field `{field}`: {msg}")]
    Config { field: &'static str, msg: String },
    /// A dataset directory already holds a world generated with another config.
    #[error("{path}: holds a world generated with a different config; use an empty directory")]
    ConfigMismatch { path: PathBuf },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, WorldError>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> WorldError {
    let path = path.into();
    move |source| WorldError::Io { path, source }
}
