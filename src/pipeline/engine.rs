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
use crate::adapters::{BoxError, ChatModel, ChatRequest, LlavaChat};
use mdpo::{MdpoConfig, PreferenceExample, Reference, TrainSummary, Trainer};
use mllm::config::LlavaConfig;
use mllm::conversation::ChatTokenizer;
use mllm::generation::{GenerationConfig, Strategy};
use mllm::image_processor::ImageProcessor;
use mllm::llava::{Llava, LoadOptions};
use mllm::preference::LlavaPreference;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// A stage-0 vision tower to freeze into a model trained from scratch.
#[derive(Debug, Clone)]
pub struct FrozenTower {
    /// Its checkpoint directory ([`super::tower`]).
    pub dir: PathBuf,
    /// Feed the CLS token to the projector too (LLaVA's `full` feature selection): the tower
    /// was trained to summarise the image in it ([`super::TowerSpec::presence`]).
    pub cls: bool,
}

/// Where a model starts from.
#[derive(Debug, Clone)]
pub enum Init {
    /// Random weights of this architecture; the vision tower from the stage-0 checkpoint in
    /// `tower` when given (then frozen), else trained from scratch.
    Scratch { spec: ModelSpec, image_size: i64, vocab: i64, seed: i64, tower: Option<FrozenTower> },
    /// A model saved by this module (a llava-hf checkpoint directory).
    From(PathBuf),
}

/// Which weights a training run updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trainable {
    /// None (inference, references).
    Nothing,
    /// Every weight (experts trained from scratch without a stage-0 tower).
    All,
    /// Projector and language model; the vision tower frozen (LLaVA stage 1 and 2).
    AllButVision,
    /// The language model only (AMP's preference training, §4.1; the SFT control).
    LanguageModel,
}

/// The saved model of a run directory.
pub fn model_dir(run: &Path) -> PathBuf {
    run.join("model")
}

/// The system prompt of the demo's vicuna_v1 template. vicuna_v1's own 35-token system prompt
/// carries no information for these models and would cost a quarter of every training sequence
/// on a 2-core CPU; the template is otherwise unchanged (`USER: … ASSISTANT: …</s>`).
pub const SYSTEM: &str = "A chat about an image.";
const WEIGHTS: &str = "model.safetensors";

/// The `mllm` configuration of a demo architecture over amp-world's tokenizer (`<s>`=1,
/// `</s>`=2, `<image>`=3).
pub fn llava_config(s: &ModelSpec, image_size: i64, vocab: i64) -> LlavaConfig {
    let mut cfg = LlavaConfig::small(s.hidden, s.layers, vocab, image_size);
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
    pub llava: Llava,
    pub tok: ChatTokenizer,
    pub proc: ImageProcessor,
    /// The world's tokenizer file (copied into every saved checkpoint).
    pub tokenizer: PathBuf,
}

impl DemoModel {
    fn new(llava: Llava, tokenizer: &Path) -> Result<Self> {
        let cfg = &llava.cfg;
        let mut tok = ChatTokenizer::from_file(tokenizer, cfg.image_token_id, cfg.image_tokens() as usize, cfg.text.eos_ids())?;
        tok.system = SYSTEM.into();
        let proc = ImageProcessor::clip(cfg.vision.image_size as u32, mllm::config::AspectRatio::Pad);
        Ok(Self { llava, tok, proc, tokenizer: tokenizer.to_path_buf() })
    }

    /// Build (random) or load a model, with `trainable` weights requiring gradients.
    pub fn open(init: &Init, tokenizer: &Path, trainable: Trainable) -> Result<Self> {
        let llava = match init {
            Init::Scratch { spec, image_size, vocab, seed, tower } => {
                let mut cfg = llava_config(spec, *image_size, *vocab);
                if tower.as_ref().is_some_and(|t| t.cls) {
                    cfg.select_feature = mllm::config::SelectFeature::ClsPatch;
                }
                let m = Llava::random(&cfg, LoadOptions::default(), *seed);
                if let Some(t) = tower {
                    super::tower::load_into(&m, &t.dir)?;
                }
                m
            }
            Init::From(dir) => Llava::load(dir, LoadOptions::default())?,
        };
        for (name, t) in llava.var_store().variables() {
            let on = match trainable {
                Trainable::Nothing => false,
                Trainable::All => true,
                Trainable::AllButVision => !name.starts_with("vision_tower."),
                Trainable::LanguageModel => name.starts_with("language_model."),
            };
            let _ = t.set_requires_grad(on);
        }
        Self::new(llava, tokenizer)
    }

    /// Save `llava` to `dir` as a llava-hf checkpoint directory ([`super::checkpoint`]).
    pub fn save_llava(llava: &Llava, tokenizer: &Path, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(super::io_err(dir))?;
        let tmp = dir.join("model.safetensors.tmp");
        let mut named: Vec<(String, Tensor)> =
            llava.var_store().variables().into_iter().map(|(n, t)| (n, t.detach().to_device(Device::Cpu))).collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        Tensor::write_safetensors(&named, &tmp).map_err(mllm::MllmError::from)?;
        super::checkpoint::write_configs(&llava.cfg, llava.cfg.vision.image_size as u32, tokenizer, dir)?;
        std::fs::rename(&tmp, dir.join(WEIGHTS)).map_err(super::io_err(dir))
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
    pub fn into_policy(self) -> (PathBuf, LlavaPreference) {
        (self.tokenizer, LlavaPreference::new(self.llava, self.tok, self.proc))
    }
}

fn save_policy(tokenizer: &Path, p: &LlavaPreference, dir: &Path) -> Result<()> {
    DemoModel::save_llava(&p.model, tokenizer, dir)
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
        group_by_length: spec.group_by_length,
        ..MdpoConfig::default()
    }
}

/// Supervised fine-tuning (mdpo's SFT trainer) of `init` on K = 1 `examples` with `spec`'s
/// cosine schedule; the trained model is saved to `model_dir(out)`. A vision tower trained from
/// scratch is trained with the model; a pre-trained one (stage 0, or a saved model's) stays
/// frozen, as LLaVA's CLIP does, and so does the projector unless `spec.train_projector`.
pub fn train_sft(stage: &str, init: &Init, tokenizer: &Path, examples: Vec<PreferenceExample>, spec: &TrainSpec, seed: u64, out: &Path) -> Result<TrainSummary> {
    let trainable = match init {
        Init::Scratch { tower: None, .. } => Trainable::All,
        _ if !spec.train_projector => Trainable::LanguageModel,
        _ => Trainable::AllButVision,
    };
    let (tok, policy) = DemoModel::open(init, tokenizer, trainable)?.into_policy();
    let mut trainer = Trainer::sft(policy, examples, train_config(spec, seed, out)).map_err(|e| blocked(stage, e))?;
    let s = trainer.train()?;
    save_policy(&tok, trainer.policy(), &model_dir(out))?;
    Ok(s)
}

/// The SFT control of the preference runs: the base's language model fine-tuned on the
/// standard responses alone (MDPO's anchor without its pair terms), with the preference runs'
/// optimiser settings (`config`: steps, batch, lr, constant schedule, clipping).
pub fn train_sft_control(stage: &str, base: &Path, tokenizer: &Path, examples: Vec<PreferenceExample>, config: MdpoConfig) -> Result<TrainSummary> {
    let out = config.output_dir.clone();
    let (tok, policy) = DemoModel::open(&Init::From(base.to_path_buf()), tokenizer, Trainable::LanguageModel)?.into_policy();
    let config = MdpoConfig { max_grad_norm: Some(1.0), schedule: mdpo::optim::Schedule::Constant, ..config };
    let mut trainer = Trainer::sft(policy, examples, config).map_err(|e| blocked(stage, e))?;
    let s = trainer.train()?;
    save_policy(&tok, trainer.policy(), &model_dir(&out))?;
    Ok(s)
}

/// MDPO / DPO (mdpo's trainer) of the model in `base` (policy: the language model trainable, the
/// vision tower and projector frozen, as AMP does, §4.1) against the same model frozen
/// (reference, log-probs precomputed once); the policy is saved to
/// `model_dir(config.output_dir)`.
pub fn train_preference(stage: &str, base: &Path, tokenizer: &Path, examples: Vec<PreferenceExample>, config: MdpoConfig) -> Result<TrainSummary> {
    let out = config.output_dir.clone();
    let (tok, policy) = DemoModel::open(&Init::From(base.to_path_buf()), tokenizer, Trainable::LanguageModel)?.into_policy();
    let (_, reference) = DemoModel::open(&Init::From(base.to_path_buf()), tokenizer, Trainable::Nothing)?.into_policy();
    let config = MdpoConfig { max_grad_norm: Some(1.0), schedule: mdpo::optim::Schedule::Constant, ..config };
    let mut trainer = Trainer::new(policy, Reference::Model(reference), examples, config).map_err(|e| blocked(stage, e))?;
    let s = trainer.train()?;
    save_policy(&tok, trainer.policy(), &model_dir(&out))?;
    Ok(s)
}

/// Gradient norms at the base of the anchor and of the pair terms of MDPO on `examples` (one
/// batch, unclipped): `(‖∇ anchor‖, ‖∇ pairs‖, ‖∇ total‖)`. The anchor's gradient is the
/// difference of the loss with and without it (the loss is linear in the anchor weight).
/// `work` holds the two one-step trainers' state.
pub fn anchor_gradient_norms(base: &Path, tokenizer: &Path, examples: Vec<PreferenceExample>, config: MdpoConfig, work: &Path) -> Result<(f64, f64, f64)> {
    let grads = |anchor_weight: f64, dir: &Path| -> Result<Vec<Tensor>> {
        let (_, policy) = DemoModel::open(&Init::From(base.to_path_buf()), tokenizer, Trainable::LanguageModel)?.into_policy();
        let (_, reference) = DemoModel::open(&Init::From(base.to_path_buf()), tokenizer, Trainable::Nothing)?.into_policy();
        let cfg = MdpoConfig {
            max_grad_norm: None,
            max_steps: Some(1),
            resume: false,
            save_every: 0,
            output_dir: dir.to_path_buf(),
            loss: mdpo::loss::LossConfig { anchor_weight, ..config.loss.clone() },
            ..config.clone()
        };
        let mut t = Trainer::new(policy, Reference::Model(reference), examples.clone(), cfg)?;
        t.step()?;
        Ok(t.gradients().into_iter().map(|(_, g)| g.detach().copy()).collect())
    };
    if work.exists() {
        std::fs::remove_dir_all(work).map_err(super::io_err(work))?;
    }
    let total = grads(config.loss.anchor_weight, &work.join("total"))?;
    let pairs = grads(0.0, &work.join("pairs"))?;
    let norm = |v: &[Tensor]| v.iter().map(|g| g.square().sum(tch::Kind::Double).double_value(&[])).sum::<f64>().sqrt();
    let anchor: Vec<Tensor> = total.iter().zip(&pairs).map(|(t, p)| t - p).collect();
    Ok((norm(&anchor), norm(&pairs), norm(&total)))
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
    fn answer_batch(&mut self, reqs: &[ChatRequest]) -> std::result::Result<Vec<String>, BoxError> {
        let m = &self.model;
        crate::adapters::decode_batch(&m.llava, &m.tok, &m.proc, &self.config(), reqs)
    }
}

/// A [`LlavaChat`] (amp-data Generator + mrhal-bench Responder) over the model saved in `dir`.
pub fn chat(stage: &str, name: &str, dir: &Path, tokenizer: &Path, gen: &GenSpec) -> Result<LlavaChat<MllmChat>> {
    let model = DemoModel::open(&Init::From(dir.to_path_buf()), tokenizer, Trainable::Nothing).map_err(|e| blocked(stage, e))?;
    Ok(LlavaChat::new(MllmChat { name: name.to_string(), gen: gen.clone(), model }))
}
