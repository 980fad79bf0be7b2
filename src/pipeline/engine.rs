//! The model operations of the demo: LLaVA-architecture models from `mllm` (CLIP-style ViT,
//! MLP projector, LLaMA decoder; vicuna_v1 template via [`mllm::conversation::ChatTokenizer`];
//! CLIP preprocessing via [`mllm::image_processor::ImageProcessor`]; batched decoding via
//! [`mllm::generation::generate`]), trained by `mdpo`'s [`Trainer`] (SFT and MDPO/DPO).
//!
//! Training uses `mllm`'s [`LlavaPreference`] (the [`mdpo::PreferenceModel`] of LLaVA). SFT trains
//! *all* weights (the vision tower is trained from scratch); MDPO/DPO fine-tune the language model
//! of the base (vision tower and projector frozen, as in AMP) against a frozen copy of the base
//! (the reference, its log-probs precomputed once).
use super::{DemoError, GenSpec, ModelSpec, Result, TrainSpec};
use crate::adapters::{ChatModel, ChatRequest, LlavaChat};
use mdpo::{MdpoConfig, PreferenceExample, Reference, TrainSummary, Trainer};
use mllm::config::LlavaConfig;
use mllm::conversation::ChatTokenizer;
use mllm::generation::{generate, GenerationConfig, Strategy};
use mllm::image_processor::ImageProcessor;
use mllm::llava::{Llava, LoadOptions};
use mllm::preference::LlavaPreference;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// Where a model starts from.
#[derive(Debug, Clone)]
pub enum Init {
    /// Random weights of this architecture (vision tower trained from scratch).
    Scratch { spec: ModelSpec, image_size: i64, vocab: i64, seed: i64 },
    /// A model saved by this module.
    From(PathBuf),
}

/// The saved model of a run directory.
pub fn model_dir(run: &Path) -> PathBuf {
    run.join("model")
}

/// What a saved model directory holds besides `model.safetensors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedModel {
    pub spec: ModelSpec,
    pub image_size: i64,
    pub vocab: i64,
}

const SAVED: &str = "demo_model.json";

/// The system prompt of the demo's vicuna_v1 template. vicuna_v1's own 35-token system prompt
/// carries no information for these models and would cost a quarter of every training sequence
/// on a 2-core CPU; the template is otherwise unchanged (`USER: … ASSISTANT: …</s>`).
pub const SYSTEM: &str = "A chat about an image.";
const WEIGHTS: &str = "model.safetensors";

/// The `mllm` configuration of a demo architecture over amp-world's tokenizer (`<s>`=1,
/// `</s>`=2, `<image>`=3).
pub fn llava_config(m: &SavedModel) -> LlavaConfig {
    let s = &m.spec;
    let mut cfg = LlavaConfig::small(s.hidden, s.layers, m.vocab, m.image_size);
    cfg.text.max_position_embeddings = 2048;
    cfg.vision.hidden_size = s.vision_hidden;
    cfg.vision.intermediate_size = 4 * s.vision_hidden;
    cfg.vision.num_hidden_layers = s.vision_layers;
    cfg.vision.num_attention_heads = (s.vision_hidden / 16).max(2);
    cfg.vision.patch_size = s.patch;
    // Tiny towers: the last layer's patch features (LLaVA-1.5 takes the penultimate of 24).
    cfg.select_layer = -1;
    cfg.image_token_id = amp_world::tokenizer::IMAGE_ID as i64;
    cfg
}

fn blocked(stage: &str, e: impl std::fmt::Display) -> DemoError {
    DemoError::Stage { stage: stage.to_string(), message: e.to_string() }
}

/// A model with its tokenizer and image processor.
pub struct DemoModel {
    pub saved: SavedModel,
    pub llava: Llava,
    pub tok: ChatTokenizer,
    pub proc: ImageProcessor,
}

impl DemoModel {
    fn new(saved: SavedModel, llava: Llava, tokenizer: &Path) -> Result<Self> {
        let cfg = &llava.cfg;
        let mut tok = ChatTokenizer::from_file(tokenizer, cfg.image_token_id, cfg.image_tokens() as usize, cfg.text.eos_ids())?;
        tok.system = SYSTEM.into();
        let proc = ImageProcessor::clip(saved.image_size as u32, mllm::config::AspectRatio::Pad);
        Ok(Self { saved, llava, tok, proc })
    }

    /// Build (random) or load a model; all weights trainable when `trainable`.
    pub fn open(init: &Init, tokenizer: &Path, trainable: bool) -> Result<Self> {
        let (saved, llava) = match init {
            Init::Scratch { spec, image_size, vocab, seed } => {
                let saved = SavedModel { spec: spec.clone(), image_size: *image_size, vocab: *vocab };
                let m = Llava::random(&llava_config(&saved), LoadOptions::default(), *seed);
                (saved, m)
            }
            Init::From(dir) => {
                let saved: SavedModel = super::read_json(&dir.join(SAVED))?;
                let m = Llava::load_with_config(dir, &llava_config(&saved), LoadOptions::default())?;
                (saved, m)
            }
        };
        if trainable {
            for (_, t) in llava.var_store().variables() {
                let _ = t.set_requires_grad(true);
            }
        }
        Self::new(saved, llava, tokenizer)
    }

    /// Save weights and architecture to `dir`.
    pub fn save_llava(saved: &SavedModel, llava: &Llava, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(super::io_err(dir))?;
        let tmp = dir.join("model.safetensors.tmp");
        let named: Vec<(String, Tensor)> =
            llava.var_store().variables().into_iter().map(|(n, t)| (n, t.detach().to_device(Device::Cpu))).collect();
        Tensor::write_safetensors(&named, &tmp).map_err(mllm::MllmError::from)?;
        std::fs::rename(&tmp, dir.join(WEIGHTS)).map_err(super::io_err(dir))?;
        super::write_json(&dir.join(SAVED), saved)
    }
}

/// Number of parameters of a saved model.
pub fn param_count(dir: &Path) -> Result<i64> {
    let t = mllm::checkpoint::read_all(&dir.join(WEIGHTS))?;
    Ok(t.values().map(|x| x.numel() as i64).sum())
}

// ------------------------------------------------------------------------------------------------
// PreferenceModel: mllm's LlavaPreference

impl DemoModel {
    /// `mllm`'s [`LlavaPreference`] (the [`mdpo::PreferenceModel`] of LLaVA) over this model.
    pub fn into_policy(self) -> (SavedModel, LlavaPreference) {
        (self.saved, LlavaPreference::new(self.llava, self.tok, self.proc))
    }
}

fn save_policy(saved: &SavedModel, p: &LlavaPreference, dir: &Path) -> Result<()> {
    DemoModel::save_llava(saved, &p.model, dir)
}

// ------------------------------------------------------------------------------------------------
// Training

fn train_config(spec: &TrainSpec, seed: u64, out: &Path) -> MdpoConfig {
    MdpoConfig {
        lr: spec.lr,
        warmup_steps: spec.warmup_steps,
        batch_size: spec.batch_size,
        max_steps: Some(spec.steps),
        max_grad_norm: Some(1.0),
        seed,
        grad_accum: 1,
        // Checkpoints every 100 steps: an interrupted expert resumes where it stopped.
        save_every: 100,
        keep_checkpoints: 1,
        resume: true,
        output_dir: out.to_path_buf(),
        plots: false,
        schedule: mdpo::optim::Schedule::Cosine,
        ..MdpoConfig::default()
    }
}

/// Supervised fine-tuning (mdpo's SFT trainer) of `init` on K = 1 `examples`; the trained model is
/// saved to `model_dir(out)`.
pub fn train_sft(stage: &str, init: &Init, tokenizer: &Path, examples: Vec<PreferenceExample>, spec: &TrainSpec, seed: u64, out: &Path) -> Result<TrainSummary> {
    let (saved, policy) = DemoModel::open(init, tokenizer, true)?.into_policy();
    let mut trainer = Trainer::sft(policy, examples, train_config(spec, seed, out)).map_err(|e| blocked(stage, e))?;
    let s = trainer.train()?;
    save_policy(&saved, trainer.policy(), &model_dir(out))?;
    Ok(s)
}

/// MDPO / DPO (mdpo's trainer) of the model in `base` (policy: the language model trainable, the
/// vision tower and projector frozen) against the
/// same model frozen (reference, log-probs precomputed once); the policy is saved to
/// `model_dir(config.output_dir)`.
pub fn train_preference(stage: &str, base: &Path, tokenizer: &Path, examples: Vec<PreferenceExample>, config: MdpoConfig) -> Result<TrainSummary> {
    let out = config.output_dir.clone();
    let (saved, policy) = DemoModel::open(&Init::From(base.to_path_buf()), tokenizer, true)?.into_policy();
    // As AMP does (§4.1; its scripts freeze `mm_projector` and the CLIP tower): preference
    // training updates the language model only.
    for (name, t) in policy.model.var_store().variables() {
        if name.starts_with("vision_tower.") || name.starts_with("multi_modal_projector.") {
            let _ = t.set_requires_grad(false);
        }
    }
    let (_, reference) = DemoModel::open(&Init::From(base.to_path_buf()), tokenizer, false)?.into_policy();
    let config = MdpoConfig { max_grad_norm: Some(1.0), schedule: mdpo::optim::Schedule::Constant, ..config };
    let mut trainer = Trainer::new(policy, Reference::Model(reference), examples, config).map_err(|e| blocked(stage, e))?;
    let s = trainer.train()?;
    save_policy(&saved, trainer.policy(), &model_dir(&out))?;
    Ok(s)
}

// ------------------------------------------------------------------------------------------------
// Chat

/// Batched decoding of a saved model ([`ChatModel`] for [`LlavaChat`]).
pub struct MllmChat {
    name: String,
    gen: GenSpec,
    model: DemoModel,
}

impl MllmChat {
    fn config(&self) -> GenerationConfig {
        GenerationConfig {
            max_new_tokens: self.gen.max_new_tokens,
            strategy: if self.gen.num_beams > 1 {
                Strategy::Beam { num_beams: self.gen.num_beams, length_penalty: 1.0 }
            } else {
                Strategy::Greedy
            },
            repetition_penalty: self.gen.repetition_penalty as f64,
            ..GenerationConfig::default()
        }
    }
}

impl ChatModel for MllmChat {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn decoding(&self) -> serde_json::Value {
        serde_json::to_value(&self.gen).unwrap_or_default()
    }
    fn batch_size(&self) -> usize {
        // Beam search decodes one prompt at a time in mllm.
        if self.gen.num_beams > 1 {
            1
        } else {
            self.gen.batch_size
        }
    }
    fn answer_batch(&mut self, reqs: &[ChatRequest]) -> std::result::Result<Vec<String>, String> {
        let m = &self.model;
        let mut prompts = Vec::with_capacity(reqs.len());
        let mut px = Vec::with_capacity(reqs.len());
        for r in reqs {
            let mut turns: Vec<String> = r.turns.iter().map(|t| t.1.clone()).collect();
            if let Some(first) = turns.first_mut() {
                *first = format!("{}\n{first}", amp_world::text::IMAGE_TOKEN);
            }
            prompts.push(m.tok.encode(&turns, None).map_err(|e| e.to_string())?.ids);
            let img = image::load_from_memory(&r.image).map_err(|e| format!("image: {e}"))?.to_rgb8();
            px.push(m.proc.preprocess(&img));
        }
        let px = Tensor::stack(&px, 0);
        let cfg = self.config();
        let out = tch::no_grad(|| generate(&m.llava, &prompts, Some(&px), &cfg, Some(&m.tok))).map_err(|e| e.to_string())?;
        Ok(out.into_iter().map(|g| g.text.unwrap_or_default().trim().to_string()).collect())
    }
}

/// A [`LlavaChat`] (amp-data Generator + mrhal-bench Responder) over the model saved in `dir`.
pub fn chat(stage: &str, name: &str, dir: &Path, tokenizer: &Path, gen: &GenSpec) -> Result<LlavaChat<MllmChat>> {
    let model = DemoModel::open(&Init::From(dir.to_path_buf()), tokenizer, false).map_err(|e| blocked(stage, e))?;
    Ok(LlavaChat::new(MllmChat { name: name.to_string(), gen: gen.clone(), model }))
}
