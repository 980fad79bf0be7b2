//! Errors of the `mllm` crate. Every variant that concerns a file names it; every variant that
//! concerns a tensor names its Hugging Face key.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum MllmError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: config: {message}")]
    Config { path: PathBuf, message: String },
    #[error("checkpoint {path}: missing tensor `{key}`")]
    MissingTensor { path: PathBuf, key: String },
    #[error("checkpoint {path}: unexpected tensor `{key}`")]
    UnexpectedTensor { path: PathBuf, key: String },
    #[error("checkpoint {path}: tensor `{key}` has shape {actual:?}, the model expects {expected:?}")]
    ShapeMismatch {
        path: PathBuf,
        key: String,
        expected: Vec<i64>,
        actual: Vec<i64>,
    },
    #[error("{path}: tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("image {path}: {message}")]
    Image { path: PathBuf, message: String },
    #[error("input: {0}")]
    Input(String),
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
}

pub type Result<T, E = MllmError> = std::result::Result<T, E>;
