//! Errors of the `amp-data` crate.
use std::path::PathBuf;

/// An implementer's own error behind one of this crate's traits ([`crate::Generator`],
/// [`crate::SentenceEmbedder`], [`crate::FineTuner`]), kept as the `source` of the crate's error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

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
    /// A generator (local model or chat server) failed on one record; `source` is the
    /// generator's own error (downcast it to tell, say, an out-of-memory from a bad input).
    #[error("generator {model}: record {record}: {source}")]
    Generation {
        model: String,
        record: String,
        #[source]
        source: BoxError,
    },
    /// A sentence embedder failed; `source` is the embedder's own error.
    #[error("embedder {embedder}: {source}")]
    Embedding {
        embedder: String,
        #[source]
        source: BoxError,
    },
    /// An embedder returned the wrong number of vectors.
    #[error("embedder {embedder}: {got} vectors for {want} texts")]
    EmbeddingCount {
        embedder: String,
        got: usize,
        want: usize,
    },
    /// Fine-tuning for Incremental Generation failed at a stage (1-based); `source` is the
    /// fine-tuner's own error.
    #[error("fine-tuning stage {stage}: {source}")]
    FineTune {
        stage: usize,
        #[source]
        source: BoxError,
    },
    /// Invalid configuration or command-line arguments.
    #[error("config: {0}")]
    Config(String),
    /// A JSONL file is malformed, truncated, empty or a JSON array (names file and line).
    #[error(transparent)]
    Jsonl(#[from] amp_io::jsonl::JsonlError),
    /// Another process is writing the same output.
    #[error(transparent)]
    Lock(#[from] amp_io::lock::LockError),
    /// The spaCy model directory of `--chunker spacy:DIR` could not be loaded (names the file and
    /// field).
    #[error("spaCy pipeline: {0}")]
    Nlp(#[from] amp_nlp::NlpError),
}

impl AmpDataError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        AmpDataError::Io {
            path: path.into(),
            source,
        }
    }

    /// A generator's failure on `record`, keeping its error as the source.
    pub fn generation(
        model: impl Into<String>,
        record: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        AmpDataError::Generation {
            model: model.into(),
            record: record.into(),
            source: source.into(),
        }
    }

    /// An embedder's failure, keeping its error as the source.
    pub fn embedding(embedder: impl Into<String>, source: impl Into<BoxError>) -> Self {
        AmpDataError::Embedding {
            embedder: embedder.into(),
            source: source.into(),
        }
    }

    /// A fine-tuner's failure at `stage`, keeping its error as the source.
    pub fn fine_tune(stage: usize, source: impl Into<BoxError>) -> Self {
        AmpDataError::FineTune {
            stage,
            source: source.into(),
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
