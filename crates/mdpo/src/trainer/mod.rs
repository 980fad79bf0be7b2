//! The model-agnostic trainer: MDPO (any [`crate::loss`] variant) and SFT on the same machinery.
//!
//! One optimizer step ([`Trainer::step`]) takes the next `batch_size × grad_accum` examples of a
//! seeded per-epoch permutation, runs each micro-batch's forward and backward (module `micro`), clips
//! the gradient norm and applies AdamW; [`Trainer::train`] repeats it, checkpointing as it goes.
//!
//! * **Reference** ([`Reference`], module [`crate::reference`]): a frozen model, the policy with
//!   its adapters disabled, a precomputed cache file, or none (reference-free objectives).
//! * **Gradient accumulation**: every micro-batch's loss (a batch mean) is scaled by
//!   `B_micro / B_step`, so `grad_accum = 2, batch_size = 1` gives the gradients of one batch of 2.
//! * **Level chunking** (`level_chunk < K`): exact gradients with bounded memory (module `micro`).
//! * **Non-finite guard**: a step whose loss or gradient norm is not finite is skipped (no update,
//!   data still consumed, logged with the first such step's example ids); after
//!   `max_skipped_steps` such steps training stops, and a run whose every step, or whose last
//!   step, was skipped ends in [`MdpoError::NonFiniteRun`].
//! * **Out of memory**: a device allocation failure inside a micro-batch is returned as
//!   [`MdpoError::OutOfMemory`] (see [`crate::guard`]); lower the micro-batch and rerun.
//! * **Resumable** (module [`crate::checkpoint`]): the initial state is checkpointed before step 1
//!   and then every `save_every` steps. The data order is a seeded permutation per epoch and the
//!   torch RNG is re-seeded from `(seed, step, micro-batch, chunk)`, so a resumed run follows the
//!   uninterrupted trajectory bit for bit.
//! * **Data parallel** ([`Trainer::with_collective`], module [`crate::parallel`],
//!   docs/distributed.md): every rank takes its share of each global step, gradients are summed
//!   over the ranks in buckets, the skip decision and the clip use the global values, and rank 0
//!   alone writes checkpoints, metrics, plots and the reference cache.
mod build;
mod micro;

pub use crate::checkpoint::{NonFiniteStep, TrainState};
pub use crate::metrics::{read_metrics, StepLog};
pub use crate::reference::{CacheKey, Reference};

use crate::checkpoint::{self, Snapshot};
use crate::collective::{all_reduce_buckets, broadcast_buckets, Collective, SingleProcess, DEFAULT_BUCKET_BYTES};
use crate::parallel::{gather_metrics, rank_micro_batches, StepTotals};
use crate::config::MdpoConfig;
use crate::data::{fingerprint_examples, PreferenceExample};
use crate::guard::{catch_oom, Site};
use crate::loss::LossMetrics;
use crate::metrics::{progress, MetricsLog};
use crate::model::PreferenceModel;
use crate::optim::{learning_rate, AdamW};
use crate::reference::{self as refs, RefTable};
use crate::{MdpoError, Result};
use amp_io::rng::mix64;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::Tensor;

/// What [`Trainer::train`] returns.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub steps: usize,
    pub skipped: usize,
    pub last: Option<StepLog>,
    pub output_dir: PathBuf,
}

/// What is trained: a preference objective over K levels, or SFT on K = 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Preference,
    Sft,
}

/// The trainer. See the module docs.
pub struct Trainer<M: PreferenceModel> {
    cfg: MdpoConfig,
    task: Task,
    policy: M,
    reference: Reference<M>,
    ref_table: Option<RefTable>,
    examples: Vec<PreferenceExample>,
    opt: AdamW,
    state: TrainState,
    total_steps: usize,
    perm: (usize, Vec<usize>),
    metrics: Option<MetricsLog>,
    comm: Box<dyn Collective>,
    /// Seconds spent in the gradient all-reduce since the trainer was made.
    comm_secs: f64,
}

/// The data order of `epoch` for this configuration and these examples: length-grouped or a
/// plain shuffle.
fn order_of(cfg: &MdpoConfig, examples: &[PreferenceExample], epoch: usize) -> Vec<usize> {
    if cfg.group_by_length {
        let lens: Vec<usize> = examples.iter().map(example_length).collect();
        length_grouped_permutation(&lens, cfg.global_batch(), cfg.seed, epoch)
    } else {
        epoch_permutation(examples.len(), cfg.seed, epoch)
    }
}

/// The data order of an epoch: a Fisher–Yates shuffle driven by SplitMix64 ([`mix64`]) of
/// `(seed, epoch)`.
pub fn epoch_permutation(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut state = mix64(seed ^ mix64(epoch as u64 + 1));
    for i in (1..n).rev() {
        state = mix64(state);
        let j = (state % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// Global batches per mega-batch of [`length_grouped_permutation`] (transformers' default).
pub const MEGA_BATCH: usize = 50;

/// The data order of an epoch grouped by length (`group_by_length`): the epoch's
/// [`epoch_permutation`] cut into mega-batches of `MEGA_BATCH × global_batch` examples, each
/// sorted longest first (ties by position, so the order is a pure function of the seed) and cut
/// into global batches; then the batches of each mega-batch are shuffled by a second seeded
/// Fisher–Yates, so that the steps do not run from long to short. Every example appears once.
pub fn length_grouped_permutation(lens: &[usize], global_batch: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let order = epoch_permutation(lens.len(), seed, epoch);
    let gb = global_batch.max(1);
    let mut out = Vec::with_capacity(order.len());
    for (m, mega) in order.chunks(MEGA_BATCH * gb).enumerate() {
        let mut mega = mega.to_vec();
        mega.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
        let batches: Vec<&[usize]> = mega.chunks(gb).collect();
        let shuffle = epoch_permutation(batches.len(), mix64(seed ^ 0x6c65_6e67_7468), epoch * 1_000_003 + m);
        out.extend(shuffle.into_iter().flat_map(|b| batches[b].iter().copied()));
    }
    out
}

/// The length [`length_grouped_permutation`] sorts by: characters of the longest of the
/// example's K conversations (the one its rows are padded to).
pub fn example_length(e: &PreferenceExample) -> usize {
    e.responses.iter().map(|c| c.iter().map(|t| t.value.len()).sum::<usize>()).max().unwrap_or(0)
}

impl<M: PreferenceModel> Trainer<M> {
    /// This process's rank and the world size (`(0, 1)` for a single process).
    pub fn rank(&self) -> (usize, usize) {
        (self.comm.rank(), self.comm.world_size())
    }

    /// Seconds spent summing gradients over the ranks since the trainer was made (0 for one rank).
    pub fn all_reduce_seconds(&self) -> f64 {
        self.comm_secs
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
        self.ref_table.as_ref().map(|t| &t.sum)
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

    /// The next step's micro-batches (example indices) and the data cursor after it.
    fn next_micro_batches(&mut self) -> (Vec<Vec<usize>>, (usize, usize)) {
        let n = self.examples.len();
        let (epoch, offset) = (self.state.epoch, self.state.offset);
        if self.perm.0 != epoch {
            self.perm = (epoch, order_of(&self.cfg, &self.examples, epoch));
        }
        let take = self.cfg.global_batch().min(n - offset);
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
        let (mut loss_total, mut tokens, mut sft_weight) = (0.0, 0.0, 0.0);
        let mut parts: Vec<LossMetrics> = Vec::new();
        let mut level_tok = vec![0.0; self.cfg.levels];
        let mut bad_ids: Option<Vec<String>> = None;
        let world = self.comm.world_size();
        for (mi, idx) in rank_micro_batches(&micro, self.comm.rank(), self.cfg.grad_accum) {
            let idx = &idx;
            let site = Site { stage: "a training step", micro_batch: idx.len(), global_batch: self.cfg.global_batch() };
            let scale = idx.len() as f64 / n_step as f64;
            let r = catch_oom(site, || self.micro_step(idx, mi, scale))?;
            tokens += r.tokens;
            for (a, b) in level_tok.iter_mut().zip(&r.level_token_logps) {
                *a += b * scale;
            }
            sft_weight += r.weight;
            parts.extend(r.metrics);
            if !r.loss.is_finite() {
                bad_ids = Some(idx.iter().map(|&i| self.examples[i].id.clone()).collect());
                break;
            }
            loss_total += if self.task == Task::Preference { r.loss * scale } else { r.loss };
        }
        if world > 1 {
            // One collective for the scalars: every rank then takes the same skip decision.
            let local = StepTotals {
                loss: loss_total,
                tokens,
                weight: sft_weight,
                non_finite: bad_ids.is_some() as u8 as f64,
                level_token_logps: level_tok,
                grads_defined: self.opt.params().iter().map(|p| p.grad().defined() as u8 as f64).collect(),
            };
            let g = local.all_reduce(self.comm.as_ref())?;
            (loss_total, tokens, sft_weight, level_tok) = (g.loss, g.tokens, g.weight, g.level_token_logps);
            if g.non_finite > 0.0 {
                bad_ids.get_or_insert_with(|| micro.iter().flatten().map(|&i| self.examples[i].id.clone()).collect());
            }
            parts = gather_metrics(self.comm.as_ref(), parts)?;
            if bad_ids.is_none() {
                let t = Instant::now();
                // A tensor with a gradient on some rank needs one here too (a rank without a
                // micro-batch at the end of an epoch): backward a zero through it.
                let used: Vec<bool> = g.grads_defined.iter().map(|&n| n > 0.0).collect();
                for (p, _) in self.opt.params().iter().zip(&used).filter(|(p, &u)| u && !p.grad().defined()) {
                    (p.sum(p.kind()) * 0.0).backward();
                }
                let mut grads: Vec<Tensor> =
                    self.opt.params().iter().zip(&used).filter(|(_, &u)| u).map(|(p, _)| p.grad()).collect();
                all_reduce_buckets(self.comm.as_ref(), &mut grads, DEFAULT_BUCKET_BYTES)?;
                self.comm_secs += t.elapsed().as_secs_f64();
            }
        }
        if self.task == Task::Sft && bad_ids.is_none() {
            // SFT: token-mean NLL over the whole optimizer step.
            self.opt.scale_grads(1.0 / sft_weight.max(1e-12));
            loss_total /= sft_weight.max(1e-12);
        }
        let loss_finite = bad_ids.is_none();
        let grad_norm = if loss_finite { self.opt.grad_norm() } else { f64::NAN };
        if bad_ids.is_none() && !grad_norm.is_finite() {
            bad_ids = Some(micro.iter().flatten().map(|&i| self.examples[i].id.clone()).collect());
        }
        let skip = bad_ids.is_some();
        if let Some(ids) = bad_ids {
            self.opt.zero_grad();
            self.state.skipped += 1;
            self.state.first_non_finite.get_or_insert(NonFiniteStep { step: self.state.step + 1, ids });
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
        self.state.last_skipped = skip;
        self.state.adam_t = self.opt.t;
        let epoch_done = self.state.epoch;
        (self.state.epoch, self.state.offset) = next_cursor;
        let elapsed = t0.elapsed().as_secs_f64().max(1e-9);
        let metrics = if skip { None } else { LossMetrics::merge(&parts) };
        let pair_mean = |f: fn(&crate::PairMetrics) -> f64| {
            metrics.as_ref().map(|m| m.pairs.iter().map(f).sum::<f64>() / m.pairs.len().max(1) as f64)
        };
        let log = StepLog {
            step: self.state.step,
            epoch: epoch_done,
            loss: if loss_finite { loss_total } else { f64::NAN },
            lr,
            grad_norm,
            skipped: skip,
            skipped_total: self.state.skipped,
            examples: n_step,
            tokens,
            tokens_per_s: tokens / elapsed,
            samples_per_s: n_step as f64 / elapsed,
            reward_accuracy: pair_mean(|p| p.accuracy),
            reward_margin: pair_mean(|p| p.margin),
            level_token_logps: if skip { Vec::new() } else { level_tok },
            metrics,
        };
        if let Some(m) = self.metrics.as_mut() {
            m.step(&log)?; // rank 0 only: the other ranks open no metrics file
        }
        if skip && self.state.skipped > self.cfg.max_skipped_steps {
            let first = self.state.first_non_finite.clone().unwrap_or(NonFiniteStep { step: self.state.step, ids: Vec::new() });
            return Err(MdpoError::NonFinite {
                skipped: self.state.skipped,
                limit: self.cfg.max_skipped_steps,
                step: self.state.step,
                first_step: first.step,
                first_ids: first.ids,
            });
        }
        Ok(log)
    }

    /// Runs to `total_steps` with a progress bar, checkpointing every `save_every` steps and at
    /// the end; then writes the PNG curves (if `plots`). A run whose every step, or whose last
    /// step, was skipped as non-finite ends in [`MdpoError::NonFiniteRun`] (after the final
    /// checkpoint and plots, so the failure can be inspected).
    pub fn train(&mut self) -> Result<TrainSummary> {
        let main = self.comm.is_main();
        let pb = if main { progress(self.total_steps as u64, "train") } else { indicatif::ProgressBar::hidden() };
        pb.set_position(self.state.step as u64);
        let mut last = None;
        while self.state.step < self.total_steps {
            let log = self.step()?;
            pb.set_position(log.step as u64);
            let acc = log.reward_accuracy.map(|a| format!(" acc {a:.3}")).unwrap_or_default();
            pb.set_message(format!("loss {:.4}{acc} lr {:.2e}", log.loss, log.lr));
            if main && self.cfg.save_every > 0 && self.state.step % self.cfg.save_every == 0 {
                self.save_checkpoint()?;
            }
            last = Some(log);
        }
        pb.finish_and_clear();
        if main {
            self.save_checkpoint()?;
        }
        // No rank reports success before rank 0's final checkpoint is on disk.
        self.comm.barrier()?;
        if main && self.cfg.plots {
            let rows = read_metrics(&self.cfg.output_dir.join("metrics.jsonl"))?;
            crate::metrics::plot::plot_run(&rows, &self.cfg.output_dir.join("plots"))?;
        }
        let s = &self.state;
        if s.step > 0 && (s.skipped == s.step || s.last_skipped) {
            let first = s.first_non_finite.clone().unwrap_or(NonFiniteStep { step: s.step, ids: Vec::new() });
            return Err(MdpoError::NonFiniteRun {
                steps: s.step,
                skipped: s.skipped,
                last_skipped: s.last_skipped,
                first_step: first.step,
                first_ids: first.ids,
            });
        }
        Ok(TrainSummary { steps: s.step, skipped: s.skipped, last, output_dir: self.cfg.output_dir.clone() })
    }

    /// The newest complete checkpoint in `output_dir/checkpoints`.
    pub fn latest_checkpoint(&self) -> Result<Option<PathBuf>> {
        checkpoint::latest(&self.cfg.output_dir)
    }

    /// Writes `checkpoints/step-N` atomically and prunes old checkpoints. Returns its path.
    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        checkpoint::save(&Snapshot { trainable: self.trainable(), optimizer: &self.opt, state: &self.state, config: &self.cfg })
    }

    /// Restores weights, optimizer, step, data cursor and skip count from a checkpoint directory
    /// and cuts `metrics.jsonl` back to its step. Refuses other data, another seed, or any changed
    /// training setting ([`checkpoint::config_changes`]) unless `override_config` is set, in
    /// which case the changes are logged as an `override_config` event in `metrics.jsonl`.
    pub fn load_checkpoint(&mut self, dir: &Path) -> Result<()> {
        let (state, changes) = checkpoint::check_resume(dir, &self.state.data, &self.cfg)?;
        checkpoint::load_weights(dir, self.trainable())?;
        self.opt.load(&dir.join("optimizer.safetensors"), state.adam_t)?;
        self.state = state;
        let mut log = MetricsLog::open(&self.cfg.output_dir, Some(self.state.step))?;
        if !changes.is_empty() {
            log.event("override_config", self.state.step, serde_json::json!({ "checkpoint": dir, "changes": changes }))?;
        }
        self.metrics = Some(log);
        Ok(())
    }
}
