//! One micro-batch: encode, forward, loss, backward (gradients accumulate in the parameters).
//!
//! **Level chunking** (`level_chunk = c < K`): the MDPO loss couples all levels of an example, so
//! the levels cannot be back-propagated independently through the loss. The trainer (1) computes
//! the K levels' log-probs `s` in chunks of `c` without a graph, (2) evaluates the loss on a leaf
//! copy of `s` and gets `g = ∂L/∂s` (`[K, B]`, cheap), then (3) recomputes each chunk with a graph
//! and back-propagates the surrogate `Σ g ⊙ s_chunk`, whose gradient with respect to the weights
//! is exactly `Σ_k ∂L/∂s_k · ∂s_k/∂θ` (chain rule). Peak activation memory is that of `c` levels;
//! the price is one extra no-grad forward. The torch RNG is re-seeded identically before the two
//! passes of a chunk, so dropout masks agree.
use super::{Task, Trainer};
use crate::data::PreferenceExample;
use crate::loss::{preference_loss, scores, LossMetrics};
use crate::model::{PreferenceModel, ResponseLogps};
use crate::reference as refs;
use crate::{MdpoError, Result};
use amp_io::rng::mix64;
use std::ops::Range;
use tch::{Device, Kind, Tensor};

/// What a micro-batch contributes to its step.
pub(super) struct MicroResult {
    /// The micro-batch loss (a batch mean; SFT: the summed NLL), NaN or ±inf when not finite.
    pub loss: f64,
    pub tokens: f64,
    pub level_token_logps: Vec<f64>,
    pub metrics: Option<LossMetrics>,
    /// SFT: total token weight of the micro-batch.
    pub weight: f64,
}

/// The torch seed of a (seed, step, micro-batch, chunk) tuple: dropout masks depend on nothing
/// else, so a resumed run draws the same ones.
fn torch_seed(seed: u64, step: usize, micro: usize, chunk: usize) -> i64 {
    let s = [step, micro, chunk].iter().fold(mix64(seed), |h, &w| mix64(h ^ w as u64));
    (s >> 1) as i64
}

fn float_kind(t: &Tensor) -> Kind {
    if t.kind() == Kind::Double {
        Kind::Double
    } else {
        Kind::Float
    }
}

fn sum_f64(t: &Tensor) -> f64 {
    t.to_kind(Kind::Double).sum(Kind::Double).double_value(&[])
}

/// Mean per-token (weighted) log-prob of every level.
fn level_token(sum: &Tensor, weight: &Tensor) -> Vec<f64> {
    let m = (sum.detach().to_kind(Kind::Double) / weight.to_kind(Kind::Double).clamp_min(1e-8))
        .mean_dim([1i64].as_slice(), false, Kind::Double)
        .to_device(Device::Cpu);
    Vec::<f64>::try_from(m).unwrap_or_default()
}

impl<M: PreferenceModel> Trainer<M> {
    /// The level ranges computed per forward (`level_chunk`).
    pub(super) fn chunks(&self) -> Vec<Range<usize>> {
        let k = self.cfg.levels;
        let c = self.cfg.level_chunk.unwrap_or(k).clamp(1, k);
        (0..k).step_by(c).map(|s| s..(s + c).min(k)).collect()
    }

    /// Micro-batch `mi` (example indices `idx`) of the current step; its loss is scaled by `scale`.
    pub(super) fn micro_step(&self, idx: &[usize], mi: usize, scale: f64) -> Result<MicroResult> {
        let examples: Vec<PreferenceExample> = idx.iter().map(|&i| self.examples[i].clone()).collect();
        let batch = self.policy.encode(&examples).map_err(MdpoError::model)?;
        let bsz = self.policy.batch_len(&batch);
        if bsz != idx.len() {
            return Err(MdpoError::Shape(format!("encode returned a batch of {bsz}, expected {}", idx.len())));
        }
        match self.task {
            Task::Preference => self.preference_micro(&batch, idx, mi, scale),
            Task::Sft => self.sft_micro(&batch, mi),
        }
    }

    /// Policy log-probs of `levels`, checked to be `[levels, B]`.
    fn forward(&self, batch: &M::Batch, levels: Range<usize>, b: usize) -> Result<ResponseLogps> {
        let lp = self.policy.response_logps(batch, levels.clone(), true).map_err(MdpoError::model)?;
        let size = lp.sum.size();
        if size != [levels.len() as i64, b as i64] {
            return Err(MdpoError::Shape(format!(
                "response_logps({levels:?}) returned {size:?}, expected [{}, {b}]",
                levels.len()
            )));
        }
        Ok(lp)
    }

    fn preference_micro(&self, batch: &M::Batch, idx: &[usize], mi: usize, scale: f64) -> Result<MicroResult> {
        let k = self.cfg.levels;
        let reference = match &self.ref_table {
            Some(t) => Some(t.rows(idx)),
            None if matches!(self.reference, refs::Reference::None) => None,
            None => Some(refs::compute(&self.policy, &self.reference, batch, &self.chunks())?),
        };
        let chunks = self.chunks();
        let lcfg = &self.cfg.loss;
        let (seed, step) = (self.cfg.seed, self.state.step);
        let ref_scores = |kind: Kind, dev: Device, weight_fallback: &Tensor| -> Tensor {
            match &reference {
                Some((s, w)) => scores(&s.to_kind(kind).to_device(dev), &w.to_kind(kind).to_device(dev), lcfg.logp),
                None => weight_fallback.zeros_like().to_kind(kind),
            }
        };
        if chunks.len() == 1 {
            tch::manual_seed(torch_seed(seed, step, mi, 0));
            let lp = self.forward(batch, 0..k, idx.len())?;
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
                loss: l,
                tokens: sum_f64(&lp.tokens),
                level_token_logps: level_token(&sum, &weight),
                metrics: Some(out.metrics),
                weight: 0.0,
            });
        }
        // Pass 1: all levels without a graph, chunk by chunk.
        let (mut sums, mut weights, mut tokens) = (Vec::new(), Vec::new(), 0.0);
        for (c, r) in chunks.iter().enumerate() {
            tch::manual_seed(torch_seed(seed, step, mi, c));
            let lp = tch::no_grad(|| self.forward(batch, r.clone(), idx.len()))?;
            tokens += sum_f64(&lp.tokens);
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
                tch::manual_seed(torch_seed(seed, step, mi, c));
                let lp = self.forward(batch, r.clone(), idx.len())?;
                let gc = g.narrow(0, r.start as i64, r.len() as i64);
                (lp.sum.to_kind(kind) * gc).sum(kind).backward();
            }
        }
        Ok(MicroResult {
            loss: l,
            tokens,
            level_token_logps: level_token(&sum, &weight),
            metrics: Some(out.metrics),
            weight: 0.0,
        })
    }

    fn sft_micro(&self, batch: &M::Batch, mi: usize) -> Result<MicroResult> {
        tch::manual_seed(torch_seed(self.cfg.seed, self.state.step, mi, 0));
        let lp = self.policy.response_logps(batch, 0..1, true).map_err(MdpoError::model)?;
        let kind = float_kind(&lp.sum);
        let nll = -lp.sum.to_kind(kind).sum(kind);
        let l = nll.double_value(&[]);
        if l.is_finite() {
            nll.backward();
        }
        let tok = (lp.sum.detach().to_kind(Kind::Double) / lp.weight.to_kind(Kind::Double).clamp_min(1e-8))
            .mean(Kind::Double)
            .double_value(&[]);
        Ok(MicroResult {
            loss: l,
            tokens: sum_f64(&lp.tokens),
            level_token_logps: vec![tok],
            metrics: None,
            weight: sum_f64(&lp.weight),
        })
    }
}
