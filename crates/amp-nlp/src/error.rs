//! Typed errors: every failure names the model file and the field that was wrong.
use std::path::PathBuf;

/// An error loading or running the ported spaCy pipeline.
#[derive(Debug, thiserror::Error)]
pub enum NlpError {
    /// A model file could not be read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A model file is not valid MessagePack / JSON.
    #[error("{path}: not valid {format}: {msg}")]
    Decode {
        path: PathBuf,
        format: &'static str,
        msg: String,
    },
    /// A field is missing or has the wrong type or shape.
    #[error("{path}: field `{field}`: {msg}")]
    Field {
        path: PathBuf,
        field: String,
        msg: String,
    },
    /// A tokenizer or attribute-ruler regex does not compile.
    #[error("{path}: field `{field}`: regex does not compile: {msg}")]
    Regex {
        path: PathBuf,
        field: String,
        msg: String,
    },
    /// The model uses a feature this port does not implement.
    #[error("{path}: field `{field}`: unsupported: {what}")]
    Unsupported {
        path: PathBuf,
        field: String,
        what: String,
    },
}

pub type Result<T> = std::result::Result<T, NlpError>;

pub(crate) fn field_err(
    path: &std::path::Path,
    field: impl Into<String>,
    msg: impl Into<String>,
) -> NlpError {
    NlpError::Field {
        path: path.to_path_buf(),
        field: field.into(),
        msg: msg.into(),
    }
}

pub(crate) fn read_file(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| NlpError::Io {
        path: path.to_path_buf(),
        source,
    })
}
