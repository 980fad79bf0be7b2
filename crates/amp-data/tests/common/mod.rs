//! Test doubles shared by the integration tests.
#![allow(dead_code)]
pub mod minilm;
use amp_data::generate::{FineTuner, Generator};
use amp_data::{AmpDataError, InstructionRecord, Result, SentenceEmbedder};
use mdpo::Turn;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// TEST DOUBLE (not a real model): a deterministic "model" whose answer names the question and
/// its own name, so every (model, question, history) gives a distinct, reproducible answer.
pub struct ScriptedGen {
    pub name: String,
    /// Answers fail after this many calls (simulated interruption); `usize::MAX` = never.
    pub fail_after: usize,
    pub calls: AtomicUsize,
}

impl ScriptedGen {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            fail_after: usize::MAX,
            calls: AtomicUsize::new(0),
        }
    }
    pub fn failing_after(name: &str, n: usize) -> Self {
        Self {
            fail_after: n,
            ..Self::new(name)
        }
    }
}

impl Generator for ScriptedGen {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn respond(&self, image: &Path, history: &[Turn]) -> Result<String> {
        let c = self.calls.fetch_add(1, Ordering::SeqCst);
        if c >= self.fail_after {
            return Err(AmpDataError::Generation {
                model: self.name.clone(),
                record: image.display().to_string(),
                source: "simulated crash".into(),
            });
        }
        let q = &history.last().unwrap().value;
        Ok(format!(
            "{} sees a red car in {} (round {}): {}",
            self.name,
            image.file_name().unwrap().to_string_lossy(),
            history.len() / 2 + 1,
            q.replace("<image>\n", "")
        ))
    }
}

/// TEST DOUBLE (not a real sentence encoder): bag-of-words hashed into 512 dimensions,
/// L2-normalised. Similar word sets give similar vectors; it knows no synonyms.
pub struct BagOfWords;

impl SentenceEmbedder for BagOfWords {
    fn name(&self) -> String {
        "bag-of-words test double".into()
    }
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0f32; 512];
                for w in t
                    .to_lowercase()
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                {
                    let h = w.bytes().fold(1469598103934665603u64, |h, b| {
                        (h ^ b as u64).wrapping_mul(1099511628211)
                    });
                    v[(h % 512) as usize] += 1.0;
                }
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                v.iter().map(|x| x / n).collect()
            })
            .collect())
    }
}

/// TEST DOUBLE whose vectors depend on the embedding call they are computed in, as a real
/// encoder's do through float rounding (padding, GEMM shapes): [`BagOfWords`] plus a component
/// proportional to the number of texts in the call, exaggerated so that a different batching
/// changes the written scores.
pub struct BatchSensitive;

impl SentenceEmbedder for BatchSensitive {
    fn name(&self) -> String {
        "batch-sensitive test double".into()
    }
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let n = texts.len() as f32;
        Ok(BagOfWords
            .embed(texts)?
            .into_iter()
            .map(|mut v| {
                v.push(1e-3 * n);
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter().map(|x| x / norm).collect()
            })
            .collect())
    }
}

/// TEST DOUBLE fine-tuner: records subset sizes; the "tuned model" is a ScriptedGen.
#[derive(Default)]
pub struct RecordingTuner {
    pub sizes: std::sync::Mutex<Vec<(usize, usize)>>,
}

impl FineTuner for RecordingTuner {
    fn fine_tune(&self, subset: &[InstructionRecord], stage: usize) -> Result<Arc<dyn Generator>> {
        self.sizes.lock().unwrap().push((stage, subset.len()));
        Ok(Arc::new(ScriptedGen::new(&format!("tuned-{stage}"))))
    }
}

/// Writes `n` LLaVA records (multi-round for odd ids) with tiny image files into `dir`.
/// A valid 4x4 RGB PNG (the loaders decode image headers; the upload path decodes it fully).
pub const TINY_PNG: [u8; 73] = [
    137, 80, 78, 71, 13, 10, 26, 10, 0, 0, 0, 13, 73, 72, 68, 82, 0, 0, 0, 4, 0, 0, 0, 4, 8, 2, 0,
    0, 0, 38, 147, 9, 41, 0, 0, 0, 16, 73, 68, 65, 84, 120, 156, 99, 56, 33, 39, 7, 71, 12, 196,
    113, 0, 177, 99, 16, 65, 59, 75, 99, 130, 0, 0, 0, 0, 73, 69, 78, 68, 174, 66, 96, 130,
];

pub fn write_llava(dir: &Path, n: usize) -> PathBuf {
    std::fs::create_dir_all(dir.join("images")).unwrap();
    let mut recs = Vec::new();
    for i in 0..n {
        let img = format!("images/{i}.png");
        std::fs::write(dir.join(&img), TINY_PNG).unwrap();
        let mut conv = vec![
            serde_json::json!({"from": "human", "value": format!("<image>\nDescribe picture {i}.")}),
            serde_json::json!({"from": "gpt", "value": format!("A red car is parked near a tree. Picture {i}.")}),
        ];
        if i % 2 == 1 {
            conv.push(serde_json::json!({"from": "human", "value": "What color is the car?"}));
            conv.push(serde_json::json!({"from": "gpt", "value": "The car is red."}));
        }
        recs.push(
            serde_json::json!({"id": format!("rec-{i}"), "image": img, "conversations": conv}),
        );
    }
    let p = dir.join("llava.json");
    std::fs::write(&p, serde_json::to_string_pretty(&recs).unwrap()).unwrap();
    p
}
