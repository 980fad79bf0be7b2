//! The training configuration (TRL-style: a serde config struct, consumed by [`crate::Trainer`]).
use crate::loss::LossConfig;
use crate::optim::{AdamWConfig, Schedule};
use crate::{MdpoError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Everything that defines an MDPO (or SFT) run. Defaults follow the authors' training setup
/// (paper §4c and their `scripts/7b-v1.5/train_dpo.sh`): lr 5e-5 constant after 20 warmup steps,
/// β = 0.1, K = 4, max grad norm 0.3, weight decay 0, round weight 0.05, and a global batch of 16
/// (they ran 2 examples per GPU on 8 GPUs; here micro-batch 2 × 8 accumulation steps on one device,
/// the same gradients).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MdpoConfig {
    /// Number of levels K of every example (1 for SFT).
    pub levels: usize,
    /// The loss (MDPO by default).
    pub loss: LossConfig,
    /// Per-round token weight `c`: tokens of round r weigh `1 + c·r` (passed to the model via
    /// [`crate::PreferenceModel::set_round_weight`]).
    pub round_weight: f64,
    /// Peak learning rate.
    pub lr: f64,
    /// Schedule after warmup.
    pub schedule: Schedule,
    /// Linear warmup steps.
    pub warmup_steps: usize,
    /// AdamW hyper-parameters.
    pub adamw: AdamWConfig,
    /// Examples per micro-batch (one forward/backward). Default 2: the authors' per-GPU batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step; the loss is scaled so that `grad_accum × batch_size`
    /// micro-batches give the gradients of one batch of that size. Default 8, so the global batch
    /// `batch_size × grad_accum` is the authors' 16 (2 per GPU × 8 GPUs). To fit a smaller
    /// device, lower `batch_size` and raise `grad_accum` by the same factor.
    pub grad_accum: usize,
    /// Data-parallel ranks, each running `batch_size × grad_accum` examples per step (set by the
    /// trainer from its [`crate::Collective`]; not read from config files). docs/distributed.md.
    #[serde(skip_deserializing)]
    pub world_size: usize,
    /// Epochs (ignored when `max_steps` is set).
    pub epochs: usize,
    /// Total optimizer steps (overrides `epochs`).
    pub max_steps: Option<usize>,
    /// Clip the global gradient norm to this value (`None`: no clipping).
    pub max_grad_norm: Option<f64>,
    /// Compute at most this many levels per forward/backward (bounded memory for large K ×
    /// length; exact gradients, see [`crate::trainer`]). `None`: all K at once.
    pub level_chunk: Option<usize>,
    /// Seed of the data order and of the per-step torch RNG (dropout).
    pub seed: u64,
    /// Stop with an error after this many skipped (non-finite) steps.
    pub max_skipped_steps: usize,
    /// Checkpoint every N optimizer steps (0: only at the end).
    pub save_every: usize,
    /// Keep the newest N checkpoints (at least 1).
    pub keep_checkpoints: usize,
    /// Resume from the newest checkpoint in `output_dir` if there is one.
    pub resume: bool,
    /// Resume even though a training setting differs from the checkpoint's config (each change
    /// is logged as an `override_config` event in `metrics.jsonl`); without it such a resume is
    /// refused, naming the setting.
    pub override_config: bool,
    /// Run directory: `metrics.jsonl`, `checkpoints/`, plots, the reference cache.
    pub output_dir: PathBuf,
    /// Precompute the reference log-probs once (and cache them on disk) instead of running the
    /// reference model every step.
    pub precompute_reference: bool,
    /// Reference cache file (default `output_dir/ref_logps.json`).
    pub ref_cache: Option<PathBuf>,
    /// Batch size of the reference precomputation.
    pub ref_batch_size: usize,
    /// Use this fingerprint for the reference weights instead of hashing the VarStore.
    pub reference_fingerprint: Option<String>,
    /// Write PNG curves at the end of `train`.
    pub plots: bool,
    /// Length-grouped data order, as transformers' `group_by_length`: each epoch's shuffled order
    /// is cut into mega-batches of [`crate::trainer::MEGA_BATCH`] global batches, each sorted by
    /// length so that a batch's examples pad little, and the batches are shuffled again
    /// ([`crate::trainer::length_grouped_permutation`]). Default off.
    pub group_by_length: bool,
}

impl Default for MdpoConfig {
    fn default() -> Self {
        Self {
            levels: 4,
            world_size: 1,
            loss: LossConfig::mdpo(),
            round_weight: 0.05,
            lr: 5e-5,
            schedule: Schedule::Constant,
            warmup_steps: 20,
            adamw: AdamWConfig::default(),
            batch_size: 2,
            grad_accum: 8,
            epochs: 4,
            max_steps: None,
            max_grad_norm: Some(0.3),
            level_chunk: None,
            seed: 42,
            max_skipped_steps: 10,
            save_every: 500,
            keep_checkpoints: 2,
            resume: true,
            override_config: false,
            output_dir: PathBuf::from("runs/mdpo"),
            precompute_reference: true,
            ref_cache: None,
            ref_batch_size: 8,
            reference_fingerprint: None,
            plots: true,
            group_by_length: false,
        }
    }
}

impl MdpoConfig {
    /// Reads a JSON config file (unknown keys are an error).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| MdpoError::Io { path: path.into(), source })?;
        serde_json::from_str(&text).map_err(|e| MdpoError::Data {
            path: path.into(),
            location: format!("line {} column {}", e.line(), e.column()),
            message: e.to_string(),
        })
    }

    /// Examples per optimizer step: `batch_size × grad_accum × world_size`.
    pub fn global_batch(&self) -> usize {
        self.batch_size * self.grad_accum * self.world_size.max(1)
    }

    /// The reference cache path.
    pub fn ref_cache_path(&self) -> PathBuf {
        self.ref_cache.clone().unwrap_or_else(|| self.output_dir.join("ref_logps.json"))
    }

    /// Checks the values.
    pub fn validate(&self, preference: bool) -> Result<()> {
        let bad = |m: String| Err(MdpoError::Config(m));
        if preference {
            self.loss.validate(self.levels)?;
        } else if self.levels != 1 {
            return bad(format!("SFT trains on K = 1 examples, got levels = {}", self.levels));
        }
        if self.batch_size == 0 || self.grad_accum == 0 || self.ref_batch_size == 0 {
            return bad("batch_size, grad_accum and ref_batch_size must be >= 1".into());
        }
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return bad(format!("lr must be >= 0, got {}", self.lr));
        }
        if self.level_chunk == Some(0) {
            return bad("level_chunk must be >= 1".into());
        }
        if self.max_grad_norm.is_some_and(|n| n.is_nan() || n <= 0.0) {
            return bad("max_grad_norm must be > 0".into());
        }
        if !(self.round_weight.is_finite() && self.round_weight >= 0.0) {
            return bad(format!("round_weight must be >= 0, got {}", self.round_weight));
        }
        if self.max_steps.is_none() && self.epochs == 0 {
            return bad("set epochs >= 1 or max_steps".into());
        }
        Ok(())
    }
}
