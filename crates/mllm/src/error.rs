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
    /// An encoded sequence is longer than the stated bound (the model's context, or the memory
    /// budget), found before anything is allocated for it (docs/reliability.md).
    #[error("{what}: {tokens} tokens, more than {bound}; {hint}")]
    SequenceTooLong {
        /// Which sequence (`example ID: response K`, `prompt N`).
        what: String,
        tokens: usize,
        /// The bound, in words (`the model's context of 4096 tokens (max_position_embeddings)`).
        bound: String,
        /// What to do (`pass --max-len N ...`).
        hint: String,
    },
    /// A token id outside the model's embedding table (a tokenizer that does not belong to the
    /// model): refused before the embedding lookup.
    #[error("{what}: token id {id} is outside the model's vocabulary 0..{vocab} (text_config.vocab_size); the tokenizer does not match the model")]
    TokenOutOfVocab { what: String, id: i64, vocab: i64 },
    /// Pixel values of a shape the vision tower cannot take.
    #[error("{what}: pixel values of shape {actual:?}, the vision tower takes [N, {channels}, {size}, {size}] (vision_config.image_size; check preprocessor_config.json's crop_size)")]
    PixelShape { what: String, actual: Vec<i64>, channels: i64, size: i64 },
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
}

pub type Result<T, E = MllmError> = std::result::Result<T, E>;
