//! The model-agnostic trainer: MDPO (any [`crate::loss`] variant) and SFT on the same machinery.
//!
//! * **Reference** ([`Reference`]): a separate frozen model of the same type, the policy with its
//!   adapters disabled, a precomputed cache file, or none (reference-free objectives). The
//!   reference always runs under `no_grad` in eval mode (no dropout) and its variables never reach
//!   the optimizer. By default its log-probs are computed once for the whole dataset and cached
//!   in `ref_cache` (JSON, f64, exact), keyed by the reference weights' fingerprint, the data
//!   fingerprint, the model's `encoding_fingerprint`, K and the round weight. A cache with another
//!   key is refused with [`MdpoError::StaleCache`] — never silently reused.
//! * **Gradient accumulation**: every micro-batch's loss (a batch mean) is scaled by
//!   `B_micro / B_step`, so `grad_accum = 2, batch_size = 1` gives the gradients of one batch of 2.
//! * **Level chunking** (`level_chunk = c < K`): the MDPO loss couples all levels of an example,
//!   so the levels cannot be back-propagated independently through the loss. The trainer
//!   (1) computes the K levels' log-probs `s` in chunks of `c` without a graph, (2) evaluates the
//!   loss on a leaf copy of `s` and gets `g = ∂L/∂s` (`[K, B]`, cheap), then (3) recomputes each
//!   chunk with a graph and back-propagates the surrogate `Σ g ⊙ s_chunk`, whose gradient with
//!   respect to the weights is exactly `Σ_k ∂L/∂s_k · ∂s_k/∂θ` (chain rule). Peak activation
//!   memory is that of `c` levels; the price is one extra no-grad forward. The torch RNG is
//!   re-seeded identically before the two passes of a chunk, so dropout masks agree.
//! * **Non-finite guard**: a step whose loss or gradient norm is not finite is skipped (no update,
//!   data still consumed, logged); after `max_skipped_steps` such steps training stops.
//! * **Resumable**: [`Trainer::save_checkpoint`] writes the trainable weights, AdamW moments,
//!   step, data cursor and skip count into `checkpoints/step-N` atomically (tmp dir, fsync,
//!   rename). The data order is a seeded permutation per epoch and the torch RNG is re-seeded from
//!   `(seed, step, micro-batch, chunk)`, so a resumed run follows the uninterrupted trajectory
//!   bit for bit.
use crate::config::MdpoConfig;
use crate::data::{fingerprint_examples, PreferenceExample};
use crate::loss::{preference_loss, scores, LossMetrics};
use crate::model::{PreferenceModel, ResponseLogps};
use crate::optim::{learning_rate, AdamW};
use crate::{MdpoError, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Where the reference log-probs come from.
pub enum Reference<M> {
    /// A separate frozen model of the same type (AMP: the base checkpoint loaded twice). It must
    /// have the policy's `encoding_fingerprint`; the policy's encoded batches are reused.
    Model(M),
    /// The policy itself with its adapters disabled (LoRA).
    PolicyWithoutAdapters,
    /// A cache file written by an earlier run for the reference whose weights have this
    /// fingerprint; the data and encoding must match too.
    Cached { path: PathBuf, weights_fingerprint: String },
    /// No reference (`log π_ref ≡ 0`); requires `loss.reference_free`.
    None,
}

/// The key of a reference cache file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheKey {
    pub format: u32,
    pub weights: String,
    pub data: String,
    pub encoding: String,
    pub round_weight: f64,
    pub levels: usize,
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    key: CacheKey,
    /// `[N][K]` summed weighted log-probs.
    sum: Vec<Vec<f64>>,
    /// `[N][K]` token weights.
    weight: Vec<Vec<f64>>,
}

/// Trainer progress: saved in every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps done (including skipped ones).
    pub step: usize,
    /// Data cursor: epoch and offset into that epoch's permutation.
    pub epoch: usize,
    pub offset: usize,
    /// Steps skipped by the non-finite guard.
    pub skipped: usize,
    /// AdamW's update count.
    pub adam_t: u64,
    /// Fingerprint of the training data (a checkpoint only resumes the same data).
    pub data: String,
    pub seed: u64,
}

/// One JSONL row of `metrics.jsonl`, written after every optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// The step number (1-based: the number of optimizer steps done after this one).
    pub step: usize,
    pub epoch: usize,
    /// The loss (MDPO) or the token-mean NLL (SFT); `null` in JSON when not finite.
    #[serde(with = "nan_as_null")]
    pub loss: f64,
    pub lr: f64,
    /// Global gradient norm before clipping; `null` in JSON when not finite.
    #[serde(with = "nan_as_null")]
    pub grad_norm: f64,
    /// Whether the non-finite guard skipped this step, and the total so far.
    pub skipped: bool,
    pub skipped_total: usize,
    pub examples: usize,
    /// Response tokens processed by the policy (all levels).
    pub tokens: f64,
    pub tokens_per_s: f64,
    pub samples_per_s: f64,
    /// Mean reward accuracy and margin over all pairs `i < j` (MDPO only).
    pub reward_accuracy: Option<f64>,
    pub reward_margin: Option<f64>,
    /// Mean per-token (weighted) policy log-prob of every level.
    pub level_token_logps: Vec<f64>,
    /// Per-pair and per-level metrics (MDPO only).
    pub metrics: Option<LossMetrics>,
}

/// What [`Trainer::train`] returns.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub steps: usize,
    pub skipped: usize,
    pub last: Option<StepLog>,
    pub output_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Task {
    Preference,
    Sft,
}

/// The trainer. See the module docs.
pub struct Trainer<M: PreferenceModel> {
    cfg: MdpoConfig,
    task: Task,
    policy: M,
    reference: Reference<M>,
    /// Precomputed reference `[N, K]` sums and weights (CPU, f64).
    ref_table: Option<(Tensor, Tensor)>,
    examples: Vec<PreferenceExample>,
    opt: AdamW,
    state: TrainState,
    total_steps: usize,
    perm: (usize, Vec<usize>),
    metrics: Option<File>,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The torch seed for a (seed, step, micro-batch, chunk) tuple.
fn rng_seed(seed: u64, step: usize, micro: usize, chunk: usize) -> i64 {
    let s = splitmix(splitmix(splitmix(splitmix(seed) ^ step as u64) ^ micro as u64) ^ chunk as u64);
    (s >> 1) as i64
}

/// The data order of an epoch: a Fisher–Yates shuffle driven by splitmix64 of (seed, epoch).
pub fn epoch_permutation(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut state = splitmix(seed ^ splitmix(epoch as u64 + 1));
    for i in (1..n).rev() {
        state = splitmix(state);
        let j = (state % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

mod autocast_ffi {
    extern "C" {
        // at::autocast::set_autocast_dtype(c10::DeviceType, c10::ScalarType) from libtorch_cpu:
        // tch only exposes enabling autocast, whose CUDA default dtype is f16.
        #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
        pub fn set_autocast_dtype(device: i8, dtype: i8);
    }
}

/// Runs `f` under bf16 autocast when `enabled` and the model lives on CUDA.
fn with_autocast<T>(enabled: bool, device: Device, f: impl FnOnce() -> T) -> T {
    if enabled && device.is_cuda() {
        // SAFETY: plain enum arguments (CUDA = 1, BFloat16 = 15), a libtorch setter of a global.
        unsafe { autocast_ffi::set_autocast_dtype(1, 15) };
        tch::autocast(true, f)
    } else {
        f()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MdpoError + '_ {
    move |source| MdpoError::Io { path: path.to_path_buf(), source }
}

fn fsync(path: &Path) -> Result<()> {
    File::open(path).and_then(|f| f.sync_all()).map_err(io_err(path))
}

/// Writes `bytes` to `path` atomically (tmp file, fsync, rename).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

fn float_kind(t: &Tensor) -> Kind {
    if t.kind() == Kind::Double {
        Kind::Double
    } else {
        Kind::Float
    }
}

impl<M: PreferenceModel> Trainer<M> {
    /// An MDPO trainer. Precomputes (or loads, checking its key) the reference log-probs and
    /// resumes from the newest checkpoint in `output_dir` when `config.resume`.
    pub fn new(policy: M, reference: Reference<M>, examples: Vec<PreferenceExample>, config: MdpoConfig) -> Result<Self> {
        Self::build(policy, reference, examples, config, Task::Preference)
    }

    /// An SFT trainer (masked NLL on the response tokens, normalised by the total token weight of
    /// the optimizer step) on K = 1 examples; `config.levels` is set to 1 and `loss` is ignored.
    pub fn sft(policy: M, examples: Vec<PreferenceExample>, mut config: MdpoConfig) -> Result<Self> {
        config.levels = 1;
        Self::build(policy, Reference::None, examples, config, Task::Sft)
    }

    fn build(
        mut policy: M,
        reference: Reference<M>,
        examples: Vec<PreferenceExample>,
        cfg: MdpoConfig,
        task: Task,
    ) -> Result<Self> {
        cfg.validate(task == Task::Preference)?;
        if examples.is_empty() {
            return Err(MdpoError::Config("no training examples".into()));
        }
        if let Some((i, ex)) = examples.iter().enumerate().find(|(_, e)| e.levels() != cfg.levels) {
            return Err(MdpoError::Config(format!(
                "example {i} (id {}) has {} levels, the config says K = {}",
                ex.id,
                ex.levels(),
                cfg.levels
            )));
        }
        policy.set_round_weight(cfg.round_weight)?;
        let mut reference = reference;
        if let Reference::Model(r) = &mut reference {
            r.set_round_weight(cfg.round_weight)?;
            if r.encoding_fingerprint() != policy.encoding_fingerprint() {
                return Err(MdpoError::Config(
                    "the reference model encodes differently from the policy (encoding_fingerprint differs)".into(),
                ));
            }
        }
        if task == Task::Preference {
            match &reference {
                Reference::None if !cfg.loss.reference_free => {
                    return Err(MdpoError::Config("Reference::None needs loss.reference_free = true".into()))
                }
                Reference::Cached { .. } if !cfg.precompute_reference => {
                    return Err(MdpoError::Config("Reference::Cached needs precompute_reference = true".into()))
                }
                _ => {}
            }
        }
        let vs = policy.trainable_vars();
        let mut params: Vec<(String, Tensor)> =
            vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        if params.is_empty() {
            return Err(MdpoError::Config("the model has no trainable variables".into()));
        }
        let opt = AdamW::new(params, cfg.adamw.clone());
        let data = fingerprint_examples(&examples)?;
        let per_step = cfg.batch_size * cfg.grad_accum;
        let steps_per_epoch = examples.len().div_ceil(per_step);
        let total_steps = cfg.max_steps.unwrap_or(cfg.epochs * steps_per_epoch);
        let state = TrainState { step: 0, epoch: 0, offset: 0, skipped: 0, adam_t: 0, data, seed: cfg.seed };
        let perm = (0, epoch_permutation(examples.len(), cfg.seed, 0));
        let mut t = Self { cfg, task, policy, reference, ref_table: None, examples, opt, state, total_steps, perm, metrics: None };
        std::fs::create_dir_all(&t.cfg.output_dir).map_err(io_err(&t.cfg.output_dir))?;
        if t.task == Task::Preference && t.cfg.precompute_reference && !matches!(t.reference, Reference::None) {
            t.prepare_reference_cache()?;
        }
        let latest = t.latest_checkpoint()?;
        match latest {
            Some(dir) if t.cfg.resume => t.load_checkpoint(&dir)?,
            Some(dir) => {
                return Err(MdpoError::Config(format!(
                    "{} holds checkpoint {}: set resume = true or use another output_dir",
                    t.cfg.output_dir.display(),
                    dir.display()
                )))
            }
            None => t.open_metrics(false)?,
        }
        Ok(t)
    }

    /// The configuration.
    pub fn config(&self) -> &MdpoConfig {
        &self.cfg
    }
    /// The policy being trained.
    pub fn policy(&self) -> &M {
        &self.policy
    }
    /// Consumes the trainer, returning the policy.
    pub fn into_policy(self) -> M {
        self.policy
    }
    /// Progress (step, data cursor, skipped steps).
    pub fn state(&self) -> &TrainState {
        &self.state
    }
    /// Total optimizer steps of the run.
    pub fn total_steps(&self) -> usize {
        self.total_steps
    }
    /// The precomputed reference log-prob sums `[N, K]` (CPU, f64), if any.
    pub fn reference_logps(&self) -> Option<&Tensor> {
        self.ref_table.as_ref().map(|t| &t.0)
    }
    /// The trainable parameters (name, tensor), sorted by name.
    pub fn trainable(&self) -> Vec<(String, Tensor)> {
        self.opt.names().iter().cloned().zip(self.opt.params().iter().map(|t| t.shallow_clone())).collect()
    }

    /// The gradients of the trainable parameters left by the last [`Self::step`]: accumulated
    /// over its micro-batches, normalised (SFT) and clipped (if `max_grad_norm` is set). Zero
    /// after a skipped step.
    pub fn gradients(&self) -> Vec<(String, Tensor)> {
        self.trainable().into_iter().map(|(n, t)| (n, t.grad())).collect()
    }

    // ---------------------------------------------------------------- reference

    fn reference_weights_fingerprint(&self) -> Result<String> {
        if let Some(f) = &self.cfg.reference_fingerprint {
            return Ok(f.clone());
        }
        match &self.reference {
            Reference::Model(r) => r.weights_fingerprint(true),
            Reference::PolicyWithoutAdapters => self.policy.weights_fingerprint(false),
            Reference::Cached { weights_fingerprint, .. } => Ok(weights_fingerprint.clone()),
            Reference::None => Ok("none".into()),
        }
    }

    fn prepare_reference_cache(&mut self) -> Result<()> {
        let key = CacheKey {
            format: 1,
            weights: self.reference_weights_fingerprint()?,
            data: self.state.data.clone(),
            encoding: self.policy.encoding_fingerprint(),
            round_weight: self.cfg.round_weight,
            levels: self.cfg.levels,
        };
        let path = match &self.reference {
            Reference::Cached { path, .. } => path.clone(),
            _ => self.cfg.ref_cache_path(),
        };
        if path.exists() || matches!(self.reference, Reference::Cached { .. }) {
            let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
            let file: CacheFile = serde_json::from_str(&text).map_err(|e| MdpoError::Data {
                path: path.clone(),
                location: format!("line {} column {}", e.line(), e.column()),
                message: format!("not a reference cache: {e}"),
            })?;
            check_key(&path, &file.key, &key)?;
            let n = self.examples.len();
            if file.sum.len() != n || file.weight.len() != n || file.sum.iter().any(|r| r.len() != key.levels) {
                return Err(MdpoError::Data { path, location: "sum".into(), message: "wrong shape".into() });
            }
            let flat = |v: &Vec<Vec<f64>>| Tensor::from_slice(&v.concat()).reshape([n as i64, key.levels as i64]);
            self.ref_table = Some((flat(&file.sum), flat(&file.weight)));
            return Ok(());
        }
        // Compute once, in order, under no_grad in eval mode.
        let n = self.examples.len();
        let bs = self.cfg.ref_batch_size;
        let pb = progress(n as u64, "reference log-probs");
        let mut sums: Vec<Vec<f64>> = Vec::with_capacity(n);
        let mut weights: Vec<Vec<f64>> = Vec::with_capacity(n);
        for start in (0..n).step_by(bs) {
            let idx: Vec<usize> = (start..(start + bs).min(n)).collect();
            let examples: Vec<PreferenceExample> = idx.iter().map(|&i| self.examples[i].clone()).collect();
            let batch = self.policy.encode(&examples)?;
            let (s, w) = self.compute_reference(&batch)?;
            let s = s.to_kind(Kind::Double).to_device(Device::Cpu).transpose(0, 1).contiguous();
            let w = w.to_kind(Kind::Double).to_device(Device::Cpu).transpose(0, 1).contiguous();
            for b in 0..idx.len() as i64 {
                sums.push(Vec::<f64>::try_from(s.get(b)).map_err(MdpoError::Torch)?);
                weights.push(Vec::<f64>::try_from(w.get(b)).map_err(MdpoError::Torch)?);
            }
            pb.inc(idx.len() as u64);
        }
        pb.finish_and_clear();
        let file = CacheFile { key, sum: sums, weight: weights };
        let bytes = serde_json::to_vec(&file).map_err(|e| MdpoError::Model(e.to_string()))?;
        write_atomic(&path, &bytes)?;
        let flat = |v: &Vec<Vec<f64>>| Tensor::from_slice(&v.concat()).reshape([n as i64, self.cfg.levels as i64]);
        self.ref_table = Some((flat(&file.sum), flat(&file.weight)));
        Ok(())
    }

    fn chunks(&self) -> Vec<Range<usize>> {
        let k = self.cfg.levels;
        let c = self.cfg.level_chunk.unwrap_or(k).clamp(1, k);
        (0..k).step_by(c).map(|s| s..(s + c).min(k)).collect()
    }

    /// Reference `[K, B]` sums and weights for an encoded batch, computed now.
    fn compute_reference(&self, batch: &M::Batch) -> Result<(Tensor, Tensor)> {
        let chunks = self.chunks();
        let run = |m: &M| -> Result<(Tensor, Tensor)> {
            let mut s = Vec::new();
            let mut w = Vec::new();
            for r in chunks.iter() {
                let lp = tch::no_grad(|| {
                    with_autocast(self.cfg.bf16, self.policy.trainable_vars().device(), || {
                        m.response_logps(batch, r.clone(), false)
                    })
                })?;
                s.push(lp.sum.detach().to_kind(Kind::Double));
                w.push(lp.weight.detach().to_kind(Kind::Double));
            }
            Ok((Tensor::cat(&s, 0), Tensor::cat(&w, 0)))
        };
        match &self.reference {
            Reference::Model(r) => run(r),
            Reference::PolicyWithoutAdapters => {
                self.policy.set_adapters_enabled(false)?;
                let out = run(&self.policy);
                self.policy.set_adapters_enabled(true)?;
                out
            }
            Reference::Cached { .. } | Reference::None => {
                Err(MdpoError::Config("no reference model to compute log-probs with".into()))
            }
        }
    }

    /// Reference `[K, B]` sums and weights of the examples `idx`.
    fn reference_for(&self, batch: &M::Batch, idx: &[usize]) -> Result<Option<(Tensor, Tensor)>> {
        if let Some((s, w)) = &self.ref_table {
            let i = Tensor::from_slice(&idx.iter().map(|&i| i as i64).collect::<Vec<_>>());
            return Ok(Some((s.index_select(0, &i).transpose(0, 1), w.index_select(0, &i).transpose(0, 1))));
        }
        match self.reference {
            Reference::None => Ok(None),
            _ => self.compute_reference(batch).map(Some),
        }
    }

    // ---------------------------------------------------------------- steps

    fn next_micro_batches(&mut self) -> (Vec<Vec<usize>>, (usize, usize)) {
        let n = self.examples.len();
        let (epoch, offset) = (self.state.epoch, self.state.offset);
        if self.perm.0 != epoch {
            self.perm = (epoch, epoch_permutation(n, self.cfg.seed, epoch));
        }
        let take = (self.cfg.batch_size * self.cfg.grad_accum).min(n - offset);
        let idx = &self.perm.1[offset..offset + take];
        let micro = idx.chunks(self.cfg.batch_size).map(|c| c.to_vec()).collect();
        let next = if offset + take >= n { (epoch + 1, 0) } else { (epoch, offset + take) };
        (micro, next)
    }

    /// One optimizer step (all its micro-batches). Appends a row to `metrics.jsonl`.
    pub fn step(&mut self) -> Result<StepLog> {
        let t0 = Instant::now();
        let (micro, next_cursor) = self.next_micro_batches();
        let n_step: usize = micro.iter().map(|m| m.len()).sum();
        let lr = learning_rate(self.cfg.lr, self.cfg.schedule, self.cfg.warmup_steps, self.total_steps, self.state.step);
        self.opt.zero_grad();
        let mut finite = true;
        let mut loss_total = 0.0;
        let mut tokens = 0.0;
        let mut parts: Vec<LossMetrics> = Vec::new();
        let mut level_tok = vec![0.0; self.cfg.levels];
        let mut sft_weight = 0.0;
        for (mi, idx) in micro.iter().enumerate() {
            let examples: Vec<PreferenceExample> = idx.iter().map(|&i| self.examples[i].clone()).collect();
            let batch = self.policy.encode(&examples)?;
            let bsz = self.policy.batch_len(&batch);
            if bsz != idx.len() {
                return Err(MdpoError::Model(format!("encode returned a batch of {bsz}, expected {}", idx.len())));
            }
            let scale = idx.len() as f64 / n_step as f64;
            let r = match self.task {
                Task::Preference => self.preference_micro(&batch, idx, mi, scale)?,
                Task::Sft => self.sft_micro(&batch, mi)?,
            };
            tokens += r.tokens;
            for (a, b) in level_tok.iter_mut().zip(&r.level_token_logps) {
                *a += b * idx.len() as f64 / n_step as f64;
            }
            match r.loss {
                Some(l) if l.is_finite() => {
                    loss_total += match self.task {
                        Task::Preference => l * scale,
                        Task::Sft => l,
                    }
                }
                _ => finite = false,
            }
            sft_weight += r.weight;
            if let Some(m) = r.metrics {
                parts.push(m);
            }
            if !finite {
                break;
            }
        }
        if self.task == Task::Sft && finite {
            // SFT: token-mean NLL over the whole optimizer step.
            self.opt.scale_grads(1.0 / sft_weight.max(1e-12));
            loss_total /= sft_weight.max(1e-12);
        }
        let grad_norm = if finite { self.opt.grad_norm() } else { f64::NAN };
        let skip = !finite || !grad_norm.is_finite();
        if skip {
            self.opt.zero_grad();
            self.state.skipped += 1;
        } else {
            if let Some(max) = self.cfg.max_grad_norm {
                // torch.nn.utils.clip_grad_norm_
                let coef = (max / (grad_norm + 1e-6)).min(1.0);
                if coef < 1.0 {
                    self.opt.scale_grads(coef);
                }
            }
            self.opt.step(lr);
        }
        self.state.step += 1;
        self.state.adam_t = self.opt.t;
        let epoch_done = self.state.epoch;
        (self.state.epoch, self.state.offset) = next_cursor;
        let elapsed = t0.elapsed().as_secs_f64().max(1e-9);
        let metrics = if skip { None } else { LossMetrics::merge(&parts) };
        if skip {
            level_tok.clear();
        }
        let log = StepLog {
            step: self.state.step,
            epoch: epoch_done,
            loss: if finite { loss_total } else { f64::NAN },
            lr,
            grad_norm,
            skipped: skip,
            skipped_total: self.state.skipped,
            examples: n_step,
            tokens,
            tokens_per_s: tokens / elapsed,
            samples_per_s: n_step as f64 / elapsed,
            reward_accuracy: metrics
                .as_ref()
                .map(|m| m.pairs.iter().map(|p| p.accuracy).sum::<f64>() / m.pairs.len().max(1) as f64),
            reward_margin: metrics
                .as_ref()
                .map(|m| m.pairs.iter().map(|p| p.margin).sum::<f64>() / m.pairs.len().max(1) as f64),
            level_token_logps: level_tok,
            metrics,
        };
        self.write_metrics(&log)?;
        if skip && self.state.skipped > self.cfg.max_skipped_steps {
            return Err(MdpoError::NonFinite {
                skipped: self.state.skipped,
                limit: self.cfg.max_skipped_steps,
                step: self.state.step,
            });
        }
        Ok(log)
    }

    fn preference_micro(&self, batch: &M::Batch, idx: &[usize], mi: usize, scale: f64) -> Result<MicroResult> {
        let k = self.cfg.levels;
        let device = self.policy.trainable_vars().device();
        let reference = self.reference_for(batch, idx)?;
        let chunks = self.chunks();
        let lcfg = &self.cfg.loss;
        let step = self.state.step;
        let seed = self.cfg.seed;
        let forward = |r: Range<usize>| -> Result<ResponseLogps> {
            let lp = with_autocast(self.cfg.bf16, device, || self.policy.response_logps(batch, r.clone(), true))?;
            let size = lp.sum.size();
            if size != [r.len() as i64, idx.len() as i64] {
                return Err(MdpoError::Model(format!(
                    "response_logps({r:?}) returned {size:?}, expected [{}, {}]",
                    r.len(),
                    idx.len()
                )));
            }
            Ok(lp)
        };
        let ref_scores = |kind: Kind, dev: Device, weight_fallback: &Tensor| -> Tensor {
            match &reference {
                Some((s, w)) => scores(&s.to_kind(kind).to_device(dev), &w.to_kind(kind).to_device(dev), lcfg.logp),
                None => weight_fallback.zeros_like().to_kind(kind),
            }
        };
        let level_token = |sum: &Tensor, weight: &Tensor| -> Vec<f64> {
            let m = (sum.detach().to_kind(Kind::Double) / weight.to_kind(Kind::Double).clamp_min(1e-8))
                .mean_dim([1i64].as_slice(), false, Kind::Double)
                .to_device(Device::Cpu);
            Vec::<f64>::try_from(m).unwrap_or_default()
        };
        if chunks.len() == 1 && !self.policy.recomputes_activations() {
            tch::manual_seed(rng_seed(seed, step, mi, 0));
            let lp = forward(0..k)?;
            let kind = float_kind(&lp.sum);
            let sum = lp.sum.to_kind(kind);
            let weight = lp.weight.to_kind(kind);
            let pol = scores(&sum, &weight, lcfg.logp);
            let rf = ref_scores(kind, sum.device(), &weight);
            let out = preference_loss(&pol, &rf, lcfg)?;
            let l = out.loss.double_value(&[]);
            if l.is_finite() {
                (&out.loss * scale).backward();
            }
            return Ok(MicroResult {
                loss: Some(l),
                tokens: lp.tokens.to_kind(Kind::Double).sum(Kind::Double).double_value(&[]),
                level_token_logps: level_token(&sum, &weight),
                metrics: Some(out.metrics),
                weight: 0.0,
            });
        }
        // Pass 1: all levels without a graph, chunk by chunk.
        let mut sums = Vec::new();
        let mut weights = Vec::new();
        let mut tokens = 0.0;
        for (c, r) in chunks.iter().enumerate() {
            tch::manual_seed(rng_seed(seed, step, mi, c));
            let lp = tch::no_grad(|| forward(r.clone()))?;
            tokens += lp.tokens.to_kind(Kind::Double).sum(Kind::Double).double_value(&[]);
            sums.push(lp.sum.detach());
            weights.push(lp.weight.detach());
        }
        let kind = float_kind(&sums[0]);
        let sum = Tensor::cat(&sums, 0).to_kind(kind).detach().set_requires_grad(true);
        let weight = Tensor::cat(&weights, 0).to_kind(kind);
        let pol = scores(&sum, &weight, lcfg.logp);
        let rf = ref_scores(kind, sum.device(), &weight);
        let out = preference_loss(&pol, &rf, lcfg)?;
        let l = out.loss.double_value(&[]);
        if l.is_finite() {
            // g = ∂(scale·L)/∂s, [K, B]
            let g = Tensor::run_backward(&[&(&out.loss * scale)], &[&sum], false, false).remove(0);
            // Pass 2: recompute each chunk with a graph, back-propagate Σ g ⊙ s_chunk.
            for (c, r) in chunks.iter().enumerate() {
                tch::manual_seed(rng_seed(seed, step, mi, c));
                let gc = g.narrow(0, r.start as i64, r.len() as i64);
                self.policy.backward_logps(batch, r.clone(), true, &gc)?;
            }
        }
        Ok(MicroResult {
            loss: Some(l),
            tokens,
            level_token_logps: level_token(&sum, &weight),
            metrics: Some(out.metrics),
            weight: 0.0,
        })
    }

    fn sft_micro(&self, batch: &M::Batch, mi: usize) -> Result<MicroResult> {
        let device = self.policy.trainable_vars().device();
        let seed = rng_seed(self.cfg.seed, self.state.step, mi, 0);
        tch::manual_seed(seed);
        let recompute = self.policy.recomputes_activations();
        let lp = if recompute {
            tch::no_grad(|| with_autocast(self.cfg.bf16, device, || self.policy.response_logps(batch, 0..1, true)))?
        } else {
            with_autocast(self.cfg.bf16, device, || self.policy.response_logps(batch, 0..1, true))?
        };
        let kind = float_kind(&lp.sum);
        let nll = -lp.sum.to_kind(kind).sum(kind);
        let w = lp.weight.to_kind(Kind::Double).sum(Kind::Double).double_value(&[]);
        let l = nll.double_value(&[]);
        if l.is_finite() && recompute {
            // ∂(−Σ sum)/∂sum = −1; the model recomputes its activations layer by layer
            tch::manual_seed(seed);
            self.policy.backward_logps(batch, 0..1, true, &(-lp.sum.ones_like().to_kind(kind)))?;
        } else if l.is_finite() {
            nll.backward();
        }
        let tok = (lp.sum.detach().to_kind(Kind::Double) / lp.weight.to_kind(Kind::Double).clamp_min(1e-8))
            .mean(Kind::Double)
            .double_value(&[]);
        Ok(MicroResult {
            loss: Some(l),
            tokens: lp.tokens.to_kind(Kind::Double).sum(Kind::Double).double_value(&[]),
            level_token_logps: vec![tok],
            metrics: None,
            weight: w,
        })
    }

    /// Runs to `total_steps` with a progress bar, checkpointing every `save_every` steps and at
    /// the end; then writes the PNG curves (if `plots`).
    pub fn train(&mut self) -> Result<TrainSummary> {
        let pb = progress(self.total_steps as u64, "train");
        pb.set_position(self.state.step as u64);
        let mut last = None;
        while self.state.step < self.total_steps {
            let log = self.step()?;
            pb.set_position(log.step as u64);
            let acc = log.reward_accuracy.map(|a| format!(" acc {a:.3}")).unwrap_or_default();
            pb.set_message(format!("loss {:.4}{acc} lr {:.2e}", log.loss, log.lr));
            if self.cfg.save_every > 0 && self.state.step % self.cfg.save_every == 0 {
                self.save_checkpoint()?;
            }
            last = Some(log);
        }
        pb.finish_and_clear();
        self.save_checkpoint()?;
        if self.cfg.plots {
            let rows = read_metrics(&self.cfg.output_dir.join("metrics.jsonl"))?;
            crate::plot::plot_run(&rows, &self.cfg.output_dir.join("plots"))?;
        }
        Ok(TrainSummary {
            steps: self.state.step,
            skipped: self.state.skipped,
            last,
            output_dir: self.cfg.output_dir.clone(),
        })
    }

    // ---------------------------------------------------------------- checkpoints

    fn checkpoints_dir(&self) -> PathBuf {
        self.cfg.output_dir.join("checkpoints")
    }

    fn list_checkpoints(&self) -> Result<Vec<(usize, PathBuf)>> {
        let dir = self.checkpoints_dir();
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(&dir) else { return Ok(out) };
        for e in rd {
            let e = e.map_err(io_err(&dir))?;
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(n) = name.strip_prefix("step-").and_then(|n| n.parse::<usize>().ok()) {
                if e.path().join("state.json").is_file() {
                    out.push((n, e.path()));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// The newest complete checkpoint in `output_dir/checkpoints`.
    pub fn latest_checkpoint(&self) -> Result<Option<PathBuf>> {
        Ok(self.list_checkpoints()?.pop().map(|c| c.1))
    }

    /// Writes `checkpoints/step-N` atomically and prunes old checkpoints. Returns its path.
    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        let dir = self.checkpoints_dir();
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let fin = dir.join(format!("step-{:08}", self.state.step));
        if fin.join("state.json").is_file() {
            return Ok(fin);
        }
        let tmp = dir.join(format!(".tmp-step-{:08}-{}", self.state.step, std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        let weights: Vec<(String, Tensor)> =
            self.trainable().into_iter().map(|(n, t)| (n, t.detach().to_device(Device::Cpu))).collect();
        let wpath = tmp.join("trainable.safetensors");
        Tensor::write_safetensors(&weights, &wpath)?;
        let opath = tmp.join("optimizer.safetensors");
        self.opt.save(&opath)?;
        let spath = tmp.join("state.json");
        let state = serde_json::to_vec_pretty(&self.state).map_err(|e| MdpoError::Model(e.to_string()))?;
        std::fs::write(&spath, state).map_err(io_err(&spath))?;
        let cpath = tmp.join("config.json");
        let config = serde_json::to_vec_pretty(&self.cfg).map_err(|e| MdpoError::Model(e.to_string()))?;
        std::fs::write(&cpath, config).map_err(io_err(&cpath))?;
        for p in [&wpath, &opath, &spath, &cpath, &tmp] {
            fsync(p)?;
        }
        if fin.exists() {
            std::fs::remove_dir_all(&fin).map_err(io_err(&fin))?;
        }
        std::fs::rename(&tmp, &fin).map_err(io_err(&fin))?;
        fsync(&dir)?;
        let all = self.list_checkpoints()?;
        let keep = self.cfg.keep_checkpoints.max(1);
        for (_, p) in all.iter().take(all.len().saturating_sub(keep)) {
            std::fs::remove_dir_all(p).map_err(io_err(p))?;
        }
        Ok(fin)
    }

    /// Restores weights, optimizer, step, data cursor and skip count from a checkpoint directory
    /// and truncates `metrics.jsonl` to its step.
    pub fn load_checkpoint(&mut self, dir: &Path) -> Result<()> {
        let spath = dir.join("state.json");
        let text = std::fs::read_to_string(&spath).map_err(io_err(&spath))?;
        let state: TrainState = serde_json::from_str(&text).map_err(|e| MdpoError::Data {
            path: spath.clone(),
            location: "state".into(),
            message: e.to_string(),
        })?;
        if state.data != self.state.data {
            return Err(MdpoError::Config(format!(
                "{}: checkpoint was trained on other data (fingerprint {} ≠ {})",
                dir.display(),
                state.data,
                self.state.data
            )));
        }
        if state.seed != self.cfg.seed {
            return Err(MdpoError::Config(format!(
                "{}: checkpoint used seed {}, the config says {}",
                dir.display(),
                state.seed,
                self.cfg.seed
            )));
        }
        let wpath = dir.join("trainable.safetensors");
        let map: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&wpath)?.into_iter().collect();
        for (name, p) in self.trainable() {
            let src = map.get(&name).ok_or_else(|| MdpoError::Data {
                path: wpath.clone(),
                location: name.clone(),
                message: "trainable variable missing from the checkpoint".into(),
            })?;
            if src.size() != p.size() {
                return Err(MdpoError::Data {
                    path: wpath.clone(),
                    location: name,
                    message: format!("shape {:?}, expected {:?}", src.size(), p.size()),
                });
            }
            let mut p = p;
            tch::no_grad(|| p.copy_(src));
        }
        self.opt.load(&dir.join("optimizer.safetensors"), state.adam_t)?;
        self.state = state;
        self.open_metrics(true)?;
        Ok(())
    }

    fn open_metrics(&mut self, resume: bool) -> Result<()> {
        let path = self.cfg.output_dir.join("metrics.jsonl");
        if resume && path.exists() {
            // Keep the rows up to the checkpoint's step: nothing repeated, nothing lost.
            let rows = read_metrics(&path)?;
            let mut text = String::new();
            for r in rows.iter().filter(|r| r.step <= self.state.step) {
                text.push_str(&serde_json::to_string(r).map_err(|e| MdpoError::Model(e.to_string()))?);
                text.push('\n');
            }
            write_atomic(&path, text.as_bytes())?;
        } else {
            write_atomic(&path, b"")?;
        }
        let f = std::fs::OpenOptions::new().append(true).open(&path).map_err(io_err(&path))?;
        self.metrics = Some(f);
        Ok(())
    }

    fn write_metrics(&mut self, log: &StepLog) -> Result<()> {
        let path = self.cfg.output_dir.join("metrics.jsonl");
        if let Some(f) = self.metrics.as_mut() {
            let mut line = serde_json::to_string(log).map_err(|e| MdpoError::Model(e.to_string()))?;
            line.push('\n');
            f.write_all(line.as_bytes()).map_err(io_err(&path))?;
            f.flush().map_err(io_err(&path))?;
        }
        Ok(())
    }
}

mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

struct MicroResult {
    loss: Option<f64>,
    tokens: f64,
    level_token_logps: Vec<f64>,
    metrics: Option<LossMetrics>,
    /// SFT: total token weight of the micro-batch.
    weight: f64,
}

fn check_key(path: &Path, cached: &CacheKey, current: &CacheKey) -> Result<()> {
    let fields: [(&str, String, String); 6] = [
        ("format", cached.format.to_string(), current.format.to_string()),
        ("reference weights fingerprint", cached.weights.clone(), current.weights.clone()),
        ("data fingerprint", cached.data.clone(), current.data.clone()),
        ("encoding fingerprint", cached.encoding.clone(), current.encoding.clone()),
        ("round_weight", cached.round_weight.to_string(), current.round_weight.to_string()),
        ("levels", cached.levels.to_string(), current.levels.to_string()),
    ];
    for (field, a, b) in fields {
        if a != b {
            return Err(MdpoError::StaleCache { path: path.into(), field: field.into(), cached: a, current: b });
        }
    }
    Ok(())
}

/// Reads a `metrics.jsonl` file (blank lines skipped; a torn last line from a crash is ignored).
pub fn read_metrics(path: &Path) -> Result<Vec<StepLog>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(MdpoError::Io { path: path.into(), source: e }),
    };
    let lines: Vec<String> = std::io::BufReader::new(f).lines().collect::<std::io::Result<_>>().map_err(io_err(path))?;
    let mut out = Vec::new();
    let last = lines.len().saturating_sub(1);
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<StepLog>(line) {
            Ok(r) => out.push(r),
            Err(_) if i == last => {}
            Err(e) => {
                return Err(MdpoError::Data { path: path.into(), location: format!("line {}", i + 1), message: e.to_string() })
            }
        }
    }
    Ok(out)
}

fn progress(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} ({eta}) {msg}")
            .expect("valid template"),
    );
    pb.set_prefix(what.to_string());
    pb
}
