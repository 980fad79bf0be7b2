//! The pairwise family (AMP §3.2, Eq. 4–7): a term per ordered pair `(i, j)` of levels, DPO's
//! logistic loss or its hinge / IPO variants, plus MDPO's anchor on pairs whose winner is y0.
use super::{LossConfig, PairLoss};
use crate::Result;
use tch::Tensor;

/// `ℓ(h)` for one pair, `h = ρ_i − ρ_j` with `ρ = log π − log π_ref` (see the table in
/// [`crate::loss`]).
fn pair_term(h: &Tensor, cfg: &LossConfig) -> Tensor {
    let b = cfg.beta;
    match cfg.loss {
        PairLoss::Sigmoid => {
            let eps = cfg.label_smoothing;
            let l = -(h * b).log_sigmoid() * (1.0 - eps);
            // (not `-=`: tch's compound assignment is in place and would break autograd)
            if eps > 0.0 {
                l - (h * (-b)).log_sigmoid() * eps
            } else {
                l
            }
        }
        PairLoss::Hinge => (-(h * b) + 1.0).relu(),
        PairLoss::Ipo => (h - 1.0 / (2.0 * b)).square(),
    }
}

/// One `[B]` term per pair of `cfg.pairs`; the anchor `w·(log π_ref(y0) − log π(y0))` is added to
/// every pair whose winner is level 0 (Eq. 6–7).
pub(super) fn terms(ratio: &Tensor, anchor: &Tensor, k: usize, cfg: &LossConfig) -> Result<Vec<Tensor>> {
    let mut terms = Vec::new();
    for (i, j) in cfg.pairs.pairs(k)? {
        let h = ratio.get(i as i64) - ratio.get(j as i64);
        let t = pair_term(&h, cfg);
        terms.push(if i == 0 && cfg.anchor_weight != 0.0 { t + anchor * cfg.anchor_weight } else { t });
    }
    Ok(terms)
}
