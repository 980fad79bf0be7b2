//! Incremental Generation on LLaVA checkpoints (AMP §3.1.2, Algorithm 1): the
//! [`amp_data::FineTuner`] behind `amp generate --ig-base DIR`.
//!
//! Each cumulative subset [F1..Fi] trains a fresh LoRA adapter on the frozen base with `mdpo`'s
//! SFT trainer (masked NLL on the answers) and saves it in PEFT's format under
//! `<ig dir>/stage-i/adapter`; the subset's expert is the base with that adapter. A stage is keyed
//! by its records, the training settings and a hash of the base's weight files: a rerun reuses a
//! finished adapter with the same key, resumes an unfinished one from its newest `mdpo`
//! checkpoint, and retrains one whose key changed.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use amp_data::cli::IgArgs;
use amp_data::{AmpDataError, InstructionRecord};
use mllm::generation::GenerationConfig;
use serde::Serialize;

use crate::adapters::{CheckpointChat, LlavaChat};

/// What keys a stage besides its records (everything that changes the adapter).
#[derive(Debug, Clone, Serialize)]
struct StageSettings {
    epochs: usize,
    lr: f64,
    batch_size: usize,
    lora_r: i64,
    lora_alpha: f64,
    max_len: Option<usize>,
    seed: u64,
}

/// [`amp_data::FineTuner`]: LoRA SFT of a LLaVA checkpoint on each cumulative subset.
pub struct LoraFineTuner {
    base: PathBuf,
    out_root: PathBuf,
    settings: StageSettings,
    save_every: usize,
    decoding: GenerationConfig,
    /// Hash of the base checkpoint's config and weight files.
    base_fingerprint: String,
}

/// The files that define a checkpoint's weights: `config.json` and every `*.safetensors` /
/// `*.bin`, sorted by name.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, mdpo::MdpoError> {
    let rd = std::fs::read_dir(dir).map_err(|source| mdpo::MdpoError::Io { path: dir.into(), source })?;
    let mut files: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name == "config.json" || name.ends_with(".safetensors") || name.ends_with(".bin")
        })
        .collect();
    files.sort();
    Ok(files)
}

impl LoraFineTuner {
    /// A tuner of the checkpoint `base` writing its adapters under `out_root`; the tuned experts
    /// decode with `decoding`.
    pub fn new(base: &Path, out_root: &Path, ig: &IgArgs, decoding: GenerationConfig) -> Result<Self, mdpo::MdpoError> {
        let files = weight_files(base)?;
        let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
        let base_fingerprint = mdpo::fingerprint::files(&refs)?;
        Ok(Self {
            base: base.to_path_buf(),
            out_root: out_root.to_path_buf(),
            settings: StageSettings {
                epochs: ig.ig_epochs,
                lr: ig.ig_lr,
                batch_size: ig.ig_batch_size,
                lora_r: ig.ig_lora_r,
                lora_alpha: ig.ig_lora_alpha,
                max_len: ig.ig_max_len,
                seed: ig.ig_seed,
            },
            save_every: ig.ig_save_every.max(1),
            decoding,
            base_fingerprint,
        })
    }

    /// The directory of stage `stage` (1-based).
    pub fn stage_dir(&self, stage: usize) -> PathBuf {
        self.out_root.join(format!("stage-{stage}"))
    }

    fn key(&self, subset: &[InstructionRecord], stage: usize) -> String {
        let records: Vec<(&str, &mdpo::Conversation)> = subset.iter().map(|r| (r.id.as_str(), &r.conversations)).collect();
        crate::pipeline::stage::hash_key(&(stage, &records, &self.settings, &self.base_fingerprint))
    }

    /// Trains (or resumes) the adapter of one stage into `dir/adapter`.
    fn train(&self, subset: &[InstructionRecord], stage: usize, dir: &Path) -> Result<(), amp_data::BoxError> {
        let s = &self.settings;
        let lora = mllm::lora::LoraConfig { r: s.lora_r, alpha: s.lora_alpha, dropout: 0.0, ..Default::default() };
        // Dropout draws from libtorch's generator and the adapters from the workspace PRNG: seed both per stage.
        tch::manual_seed((s.seed + stage as u64) as i64);
        let mut policy = crate::adapters::llava_preference(&self.base, &lora, tch::Device::Cpu, tch::Kind::Float, s.seed.wrapping_add(stage as u64))?;
        policy.max_len = s.max_len;
        let examples: Vec<mdpo::PreferenceExample> = subset
            .iter()
            .map(|r| mdpo::PreferenceExample { id: r.id.clone(), image: Some(r.image.clone()), responses: vec![r.conversations.clone()] })
            .collect();
        let config = mdpo::MdpoConfig {
            lr: s.lr,
            epochs: s.epochs,
            batch_size: s.batch_size,
            warmup_steps: 0,
            seed: s.seed,
            grad_accum: 1,
            save_every: self.save_every,
            resume: true,
            output_dir: dir.join("run"),
            plots: false,
            ..Default::default()
        };
        let mut trainer = mdpo::Trainer::sft(policy, examples, config)?;
        trainer.train()?;
        Ok(trainer.policy().model.save_lora(&dir.join("adapter"))?)
    }
}

impl amp_data::FineTuner for LoraFineTuner {
    fn fine_tune(&self, subset: &[InstructionRecord], stage: usize) -> amp_data::Result<Arc<dyn amp_data::Generator>> {
        let dir = self.stage_dir(stage);
        let key = self.key(subset, stage);
        let (run_key, done_key) = (dir.join("run.key"), dir.join("done.key"));
        let read = |p: &Path| std::fs::read_to_string(p).map(|k| k.trim() == key).unwrap_or(false);
        if read(&done_key) && dir.join("adapter/adapter_model.safetensors").is_file() {
            eprintln!("ig stage {stage}: reusing the adapter in {}", dir.display());
        } else {
            if !read(&run_key) && dir.exists() {
                // Another subset, settings or base: start this stage over.
                std::fs::remove_dir_all(&dir).map_err(|e| AmpDataError::io(&dir, e))?;
            }
            std::fs::create_dir_all(&dir).map_err(|e| AmpDataError::io(&dir, e))?;
            std::fs::write(&run_key, &key).map_err(|e| AmpDataError::io(&run_key, e))?;
            eprintln!("ig stage {stage}: LoRA fine-tuning on {} records -> {}", subset.len(), dir.display());
            self.train(subset, stage, &dir).map_err(|e| AmpDataError::fine_tune(stage, e))?;
            let tmp = dir.join("done.key.tmp");
            std::fs::write(&tmp, &key).map_err(|e| AmpDataError::io(&tmp, e))?;
            std::fs::rename(&tmp, &done_key).map_err(|e| AmpDataError::io(&done_key, e))?;
        }
        let name = format!("ig-stage{stage}");
        let chat = CheckpointChat::load(&name, &self.base, self.decoding.clone())
            .and_then(|c| c.with_adapter(&dir.join("adapter")))
            .map_err(|e| AmpDataError::fine_tune(stage, e))?;
        Ok(Arc::new(LlavaChat::new(chat)))
    }
}
