//! Errors of the `mdpo` crate.
use std::path::PathBuf;

/// Everything that can go wrong while loading preference data or training.
#[derive(Debug, thiserror::Error)]
pub enum MdpoError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A data file is malformed; `location` names the record and field.
    #[error("{path}: {location}: {message}")]
    Data {
        path: PathBuf,
        location: String,
        message: String,
    },
    /// The model failed (encoding, forward pass, shapes).
    #[error("model: {0}")]
    Model(String),
    /// An error from libtorch.
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
    /// Invalid configuration.
    #[error("config: {0}")]
    Config(String),
    /// A reference-log-prob cache was computed for other weights, data or encoding.
    #[error(
        "{path}: stale reference cache: {field} differs (cache {cached}, now {current}); \
         delete the file or point `ref_cache` elsewhere to recompute"
    )]
    StaleCache {
        path: PathBuf,
        field: String,
        cached: String,
        current: String,
    },
    /// Too many optimizer steps had a non-finite loss or gradient.
    #[error("training stopped: {skipped} steps skipped for a non-finite loss or gradient (limit {limit}); last at step {step}")]
    NonFinite { skipped: usize, limit: usize, step: usize },
}

/// Result alias of the crate.
pub type Result<T, E = MdpoError> = std::result::Result<T, E>;
