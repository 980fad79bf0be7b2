//! The listwise family: Plackett–Luce over the DPO rewards `r_k = β(log π(y_k) − log π_ref(y_k))`,
//! `Σ_{t=0}^{K−2} [logsumexp(r_t, …, r_{K−1}) − r_t]` (Zhu et al.'s K-wise loss; PRO's stagewise
//! softmax when reference-free over mean log-probs). The anchor attaches to stage 0, the only stage
//! whose winner is y0.
use super::LossConfig;
use tch::Tensor;

/// One `[B]` term per stage `t = 0..K−1`.
pub(super) fn terms(ratio: &Tensor, anchor: &Tensor, k: usize, cfg: &LossConfig) -> Vec<Tensor> {
    let r = ratio * cfg.beta;
    (0..k - 1)
        .map(|t| {
            let tail = r.narrow(0, t as i64, (k - t) as i64);
            let term = tail.logsumexp([0i64].as_slice(), false) - r.get(t as i64);
            if t == 0 && cfg.anchor_weight != 0.0 {
                term + anchor * cfg.anchor_weight
            } else {
                term
            }
        })
        .collect()
}
