//! The MDPO loss (AMP §3.2, Eq. 4–7) and the variants the paper ablates or compares with.
//!
//! Every function here works on per-response *scores* of shape `[K, B]`: row `k` holds the
//! (weighted) log-probability of level `k` of every example, level 0 being the best response.
//! Scores come from [`crate::ResponseLogps`] through [`LogpReduction`] (sum, as the paper and the
//! authors' code, or per-token mean).
//!
//! With `h_ij = (log π(y_i) − log π(y_j)) − (log π_ref(y_i) − log π_ref(y_j))` the pairwise terms are
//!
//! | [`PairLoss`] | term | source |
//! |---|---|---|
//! | `Sigmoid` | `−(1−ε)·log σ(β h) − ε·log σ(−β h)` | DPO (Eq. 4); ε > 0 is cDPO label smoothing |
//! | `Hinge` | `max(0, 1 − β h)` | SLiC / TRL `hinge` |
//! | `Ipo` | `(h − 1/(2β))²` | IPO / TRL `ipo` |
//!
//! and MDPO adds the anchor `w·(log π_ref(y0) − log π(y0))` to every pair whose winner is the top
//! response y0 (Eq. 6–7; `w = 1` in the paper). The paper's Eq. 7 *sums* the pair terms; the
//! authors' code (`models/dpo_trainer.py`) concatenates the per-pair losses and takes the *mean*,
//! i.e. per example `(1/P)·[Σ_{i<j} ℓ(h_ij) + (K−1)·(log π_ref(y0) − log π(y0))]` with
//! `P = K(K−1)/2`. [`PairReduction::Mean`] (the default) reproduces the code; `Sum` the printed
//! equation. Both are then averaged over the batch.
//!
//! * [`config`] — [`LossConfig`] and its choices; [`pairwise`] and [`listwise`] — the two
//!   families of terms; [`metrics`] — reward accuracy/margin per pair.
mod config;
mod listwise;
mod metrics;
mod pairwise;
#[cfg(test)]
mod tests;

pub use config::{LogpReduction, LossConfig, Objective, PairLoss, PairReduction, PairSet};
pub use metrics::{LossMetrics, PairMetrics};

use crate::{MdpoError, Result};
use tch::{Kind, Tensor};

/// The result of [`preference_loss`].
#[derive(Debug)]
pub struct LossOutput {
    /// Scalar loss: the mean of `per_example`.
    pub loss: Tensor,
    /// Loss of every example, `[B]`.
    pub per_example: Tensor,
    /// Metrics.
    pub metrics: LossMetrics,
}

/// Turns summed log-probs and token weights into scores according to `reduction`.
pub fn scores(sum: &Tensor, weight: &Tensor, reduction: LogpReduction) -> Tensor {
    match reduction {
        LogpReduction::Sum => sum.shallow_clone(),
        LogpReduction::Mean => sum / weight.to_kind(sum.kind()).clamp_min(1e-8),
    }
}

/// The preference loss on policy and reference scores, both `[K, B]` (see the module docs).
///
/// `reference` is ignored when `cfg.reference_free`. The returned loss is differentiable with
/// respect to `policy`.
pub fn preference_loss(policy: &Tensor, reference: &Tensor, cfg: &LossConfig) -> Result<LossOutput> {
    let size = policy.size();
    if size.len() != 2 {
        return Err(MdpoError::Shape(format!("policy scores must be [K, B], got {size:?}")));
    }
    let (k, b) = (size[0] as usize, size[1]);
    cfg.validate(k)?;
    let kind = if policy.kind() == Kind::Double { Kind::Double } else { Kind::Float };
    let pi = policy.to_kind(kind);
    let rf = if cfg.reference_free {
        pi.zeros_like()
    } else {
        if reference.size() != size {
            return Err(MdpoError::Shape(format!(
                "reference scores {:?} do not match policy scores {size:?}",
                reference.size()
            )));
        }
        reference.to_kind(kind).to_device(pi.device()).detach()
    };
    let ratio = &pi - &rf; // log π − log π_ref, [K, B]
    let anchor = -ratio.get(0); // log π_ref(y0) − log π(y0), [B]
    let terms = match cfg.objective {
        Objective::Pairwise => pairwise::terms(&ratio, &anchor, k, cfg)?,
        Objective::PlackettLuce => listwise::terms(&ratio, &anchor, k, cfg),
    };
    let stacked = Tensor::stack(&terms, 0); // [T, B]
    let per_example = match cfg.reduction {
        PairReduction::Mean => stacked.mean_dim([0i64].as_slice(), false, kind),
        PairReduction::Sum => stacked.sum_dim_intlist([0i64].as_slice(), false, kind),
    };
    let loss = per_example.mean(kind);
    let metrics = tch::no_grad(|| metrics::metrics_of(&pi.detach(), &ratio.detach(), cfg.beta, b as usize));
    Ok(LossOutput { loss, per_example, metrics })
}

