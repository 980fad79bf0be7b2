//! Errors of the `mdpo` crate.
use std::path::PathBuf;

/// A boxed error of the model behind [`crate::PreferenceModel`], kept as the source of
/// [`MdpoError::Model`] so a caller can `downcast_ref` it back to the implementer's own type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong while loading preference data or training.
#[derive(Debug, thiserror::Error)]
pub enum MdpoError {
    /// A data-parallel collective failed (a rank died, a rendezvous or collective timed out).
    #[error("distributed: {0}")]
    Collective(#[from] crate::collective::CollectiveError),
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
    /// A file the trainer writes (checkpoint state, config, cache, metrics) could not be encoded.
    #[error("{path}: cannot encode JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The model failed (encoding, forward pass): the implementer's own error, kept as the source.
    #[error("model: {0}")]
    Model(#[source] BoxError),
    /// A chart could not be drawn.
    #[error("plot {path}: {message}")]
    Plot { path: PathBuf, message: String },
    /// Tensors of the wrong shape reached the loss or the trainer (a `PreferenceModel` contract
    /// violation).
    #[error("shape: {0}")]
    Shape(String),
    /// An error from libtorch.
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
    /// Invalid configuration.
    #[error("config: {0}")]
    Config(String),
    /// Resuming a run whose checkpoint was trained with other settings.
    #[error(
        "{checkpoint}: the run was trained with {field} = {saved}, the config now says {current}; \
         use the same settings, another output directory, or `override_config` (--override-config) \
         to continue with the new ones"
    )]
    ConfigChanged {
        checkpoint: PathBuf,
        field: String,
        saved: String,
        current: String,
    },
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
    /// The device ran out of memory inside a training step (or the reference precomputation).
    #[error(
        "out of memory in {stage} with a micro-batch of {micro_batch} example(s) (global batch {global_batch}): \
         lower --batch-size and raise --grad-accum to keep the global batch (the run resumes from its last \
         checkpoint with the new split), or enable --grad-checkpoint; libtorch said: {message}"
    )]
    OutOfMemory {
        stage: &'static str,
        micro_batch: usize,
        global_batch: usize,
        message: String,
    },
    /// Too many optimizer steps had a non-finite loss or gradient.
    #[error(
        "training stopped: {skipped} steps skipped for a non-finite loss or gradient (limit {limit}); last at step \
         {step}; the first was step {first_step}, examples {first_ids:?}"
    )]
    NonFinite { skipped: usize, limit: usize, step: usize, first_step: usize, first_ids: Vec<String> },
    /// The run ended without a usable model: every step was skipped, or the final loss is not
    /// finite. No adapter should be written from it.
    #[error(
        "training failed: {skipped} of {steps} steps skipped for a non-finite loss or gradient{last}; the first \
         was step {first_step}, examples {first_ids:?}",
        last = if *.last_skipped { ", including the last" } else { "" }
    )]
    NonFiniteRun { steps: usize, skipped: usize, last_skipped: bool, first_step: usize, first_ids: Vec<String> },
}

impl MdpoError {
    /// Wraps a model's error as [`MdpoError::Model`], keeping it as the source; an `MdpoError`
    /// returned by a model (`type Error = MdpoError`) passes through unwrapped.
    pub fn model<E: std::error::Error + Send + Sync + 'static>(e: E) -> Self {
        let boxed: BoxError = Box::new(e);
        match boxed.downcast::<MdpoError>() {
            Ok(e) => *e,
            Err(other) => MdpoError::Model(other),
        }
    }
}

/// Result alias of the crate.
pub type Result<T, E = MdpoError> = std::result::Result<T, E>;
