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
use crate::{MdpoError, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// The per-pair loss function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PairLoss {
    /// DPO's logistic loss (with optional cDPO label smoothing).
    #[default]
    Sigmoid,
    /// `relu(1 − β h)`.
    Hinge,
    /// `(h − 1/(2β))²`.
    Ipo,
}

/// Which ordered pairs `(winner, loser)` of levels enter the pairwise objective.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PairSet {
    /// All `K(K−1)/2` pairs `i < j` (MDPO, Eq. 5/7).
    #[default]
    All,
    /// Adjacent levels only: `(0,1), (1,2), …` (Table 4, "S>A & A>B & B>C").
    Adjacent,
    /// The top response against every other level: `(0,1), (0,2), …`.
    TopVsRest,
    /// An explicit list, e.g. `[[0,1],[1,2]]` for Table 4's "S>A & A>B". Winner index < loser
    /// index (level 0 is the best).
    Explicit(Vec<(usize, usize)>),
}

impl PairSet {
    /// The pairs for `k` levels, validated (`i < j < k`, no duplicates, at least one).
    pub fn pairs(&self, k: usize) -> Result<Vec<(usize, usize)>> {
        let pairs: Vec<(usize, usize)> = match self {
            PairSet::All => (0..k).flat_map(|i| (i + 1..k).map(move |j| (i, j))).collect(),
            PairSet::Adjacent => (1..k).map(|j| (j - 1, j)).collect(),
            PairSet::TopVsRest => (1..k).map(|j| (0, j)).collect(),
            PairSet::Explicit(p) => p.clone(),
        };
        if pairs.is_empty() {
            return Err(MdpoError::Config(format!("no preference pairs for K = {k} levels")));
        }
        for (n, &(i, j)) in pairs.iter().enumerate() {
            if i >= j || j >= k {
                return Err(MdpoError::Config(format!(
                    "pair {n} = ({i}, {j}): need winner < loser < K = {k} (level 0 is the best)"
                )));
            }
            if pairs[..n].contains(&(i, j)) {
                return Err(MdpoError::Config(format!("pair ({i}, {j}) is listed twice")));
            }
        }
        Ok(pairs)
    }
}

/// The ranking objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// A sum/mean of pairwise terms over [`LossConfig::pairs`] (MDPO, DPO, IPO, hinge).
    #[default]
    Pairwise,
    /// Listwise Plackett–Luce over the DPO rewards `r_k = β(log π(y_k) − log π_ref(y_k))`:
    /// `Σ_{t=0}^{K−2} [logsumexp(r_t, …, r_{K−1}) − r_t]` (Zhu et al.'s K-wise loss; with
    /// `reference_free = true` and `logp = mean` it is PRO's stagewise softmax with unit
    /// temperatures). The anchor attaches to stage 0, the only stage whose winner is y0.
    PlackettLuce,
}

/// How the per-example terms are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PairReduction {
    /// Mean over the terms (pairs, or Plackett–Luce stages): the authors' code.
    #[default]
    Mean,
    /// Sum over the terms: the paper's Eq. 7 as printed.
    Sum,
}

/// How a response's token log-probs become one score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogpReduction {
    /// `Σ_t w_t log π(y_t|…)` (the paper, `average_log_prob=False`).
    #[default]
    Sum,
    /// `Σ_t w_t log π(y_t|…) / Σ_t w_t` (length-normalised; IPO-as-in-TRL, SimPO, PRO).
    Mean,
}

/// The loss configuration. The default is MDPO exactly as the authors ran it: β = 0.1, sigmoid,
/// all pairs, anchor weight 1, mean over pairs, summed log-probs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    /// β of DPO (the authors' default, 0.1; the paper does not report it).
    pub beta: f64,
    /// Pairwise loss function.
    pub loss: PairLoss,
    /// Which pairs (for [`Objective::Pairwise`]).
    pub pairs: PairSet,
    /// Pairwise (MDPO) or listwise (Plackett–Luce / PRO).
    pub objective: Objective,
    /// cDPO label smoothing ε ∈ [0, 0.5), sigmoid loss only.
    pub label_smoothing: f64,
    /// Weight of the anchor `log π_ref(y0) − log π(y0)` (1 in MDPO, 0 for plain DPO).
    pub anchor_weight: f64,
    /// Mean or sum over the terms of one example.
    pub reduction: PairReduction,
    /// Sum or per-token mean of the log-probs.
    pub logp: LogpReduction,
    /// Ignore the reference (log π_ref ≡ 0): PRO / RRHF-style objectives.
    pub reference_free: bool,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self::mdpo()
    }
}

impl LossConfig {
    /// MDPO as the authors implemented it (Eq. 7 with their mean reduction).
    pub fn mdpo() -> Self {
        Self {
            beta: 0.1,
            loss: PairLoss::Sigmoid,
            pairs: PairSet::All,
            objective: Objective::Pairwise,
            label_smoothing: 0.0,
            anchor_weight: 1.0,
            reduction: PairReduction::Mean,
            logp: LogpReduction::Sum,
            reference_free: false,
        }
    }

    /// Plain (binary, for K = 2) DPO: MDPO without the anchor.
    pub fn dpo() -> Self {
        Self { anchor_weight: 0.0, ..Self::mdpo() }
    }

    /// IPO over all pairs with per-token mean log-probs (as TRL normalises IPO), no anchor.
    pub fn ipo(beta: f64) -> Self {
        Self { beta, loss: PairLoss::Ipo, logp: LogpReduction::Mean, anchor_weight: 0.0, ..Self::mdpo() }
    }

    /// PRO-style listwise objective: reference-free Plackett–Luce over mean log-probs plus the
    /// anchor (an SFT term on the best response).
    pub fn pro() -> Self {
        Self {
            beta: 1.0,
            objective: Objective::PlackettLuce,
            logp: LogpReduction::Mean,
            reference_free: true,
            ..Self::mdpo()
        }
    }

    /// Checks the values; `k` is the number of levels.
    pub fn validate(&self, k: usize) -> Result<()> {
        if k < 2 {
            return Err(MdpoError::Config(format!("a preference loss needs K >= 2 levels, got {k}")));
        }
        if !(self.beta.is_finite() && self.beta > 0.0) {
            return Err(MdpoError::Config(format!("beta must be > 0, got {}", self.beta)));
        }
        if !(0.0..0.5).contains(&self.label_smoothing) {
            return Err(MdpoError::Config(format!(
                "label_smoothing must lie in [0, 0.5), got {}",
                self.label_smoothing
            )));
        }
        if self.label_smoothing > 0.0 && (self.loss != PairLoss::Sigmoid || self.objective != Objective::Pairwise)
        {
            return Err(MdpoError::Config("label_smoothing applies to the pairwise sigmoid loss only".into()));
        }
        if !self.anchor_weight.is_finite() {
            return Err(MdpoError::Config("anchor_weight must be finite".into()));
        }
        if self.objective == Objective::Pairwise {
            self.pairs.pairs(k)?;
        }
        Ok(())
    }
}

/// Metrics of one pair `(winner, loser)`, averaged over the batch, rewards `r = β(log π − log π_ref)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairMetrics {
    pub winner: usize,
    pub loser: usize,
    /// Fraction of examples with `r_winner > r_loser`.
    pub accuracy: f64,
    /// Mean of `r_winner − r_loser`.
    pub margin: f64,
    /// Mean of `r_winner`.
    pub chosen_reward: f64,
    /// Mean of `r_loser`.
    pub rejected_reward: f64,
}

/// Batch-mean metrics of a loss evaluation (detached from the graph).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossMetrics {
    /// Every pair `i < j` of the K levels (all of them, whatever [`PairSet`] trains on).
    pub pairs: Vec<PairMetrics>,
    /// Mean policy score per level (the summed, or mean, log-prob).
    pub level_logps: Vec<f64>,
    /// Mean reward per level.
    pub level_rewards: Vec<f64>,
    /// Mean anchor `log π_ref(y0) − log π(y0)`.
    pub anchor: f64,
    /// Number of examples.
    pub batch: usize,
}

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

/// The preference loss on policy and reference scores, both `[K, B]` (see the module docs).
///
/// `reference` is ignored when `cfg.reference_free`. The returned loss is differentiable with
/// respect to `policy`.
pub fn preference_loss(policy: &Tensor, reference: &Tensor, cfg: &LossConfig) -> Result<LossOutput> {
    let size = policy.size();
    if size.len() != 2 {
        return Err(MdpoError::Model(format!("policy scores must be [K, B], got {size:?}")));
    }
    let (k, b) = (size[0] as usize, size[1]);
    cfg.validate(k)?;
    let kind = if policy.kind() == Kind::Double { Kind::Double } else { Kind::Float };
    let pi = policy.to_kind(kind);
    let rf = if cfg.reference_free {
        pi.zeros_like()
    } else {
        if reference.size() != size {
            return Err(MdpoError::Model(format!(
                "reference scores {:?} do not match policy scores {size:?}",
                reference.size()
            )));
        }
        reference.to_kind(kind).to_device(pi.device()).detach()
    };
    let ratio = &pi - &rf; // log π − log π_ref, [K, B]
    let anchor = -ratio.get(0); // log π_ref(y0) − log π(y0), [B]
    let mut terms: Vec<Tensor> = Vec::new();
    match cfg.objective {
        Objective::Pairwise => {
            for (i, j) in cfg.pairs.pairs(k)? {
                let h = ratio.get(i as i64) - ratio.get(j as i64);
                let t = pair_term(&h, cfg);
                terms.push(if i == 0 && cfg.anchor_weight != 0.0 { t + &anchor * cfg.anchor_weight } else { t });
            }
        }
        Objective::PlackettLuce => {
            let r = &ratio * cfg.beta;
            for t in 0..k - 1 {
                let tail = r.narrow(0, t as i64, (k - t) as i64);
                let term = tail.logsumexp([0i64].as_slice(), false) - r.get(t as i64);
                terms.push(if t == 0 && cfg.anchor_weight != 0.0 { term + &anchor * cfg.anchor_weight } else { term });
            }
        }
    }
    let stacked = Tensor::stack(&terms, 0); // [T, B]
    let per_example = match cfg.reduction {
        PairReduction::Mean => stacked.mean_dim([0i64].as_slice(), false, kind),
        PairReduction::Sum => stacked.sum_dim_intlist([0i64].as_slice(), false, kind),
    };
    let loss = per_example.mean(kind);
    let metrics = tch::no_grad(|| metrics_of(&pi.detach(), &ratio.detach(), cfg.beta, b as usize));
    Ok(LossOutput { loss, per_example, metrics })
}

/// Batch metrics from policy scores and log-ratios (all `[K, B]`), one device sync.
fn metrics_of(pi: &Tensor, ratio: &Tensor, beta: f64, batch: usize) -> LossMetrics {
    let k = pi.size()[0];
    let r = (ratio * beta).to_kind(Kind::Double);
    let mut rows: Vec<Tensor> = Vec::new();
    let mut idx = Vec::new();
    for i in 0..k {
        for j in i + 1..k {
            let (ri, rj) = (r.get(i), r.get(j));
            rows.push(ri.gt_tensor(&rj).to_kind(Kind::Double).mean(Kind::Double));
            rows.push((&ri - &rj).mean(Kind::Double));
            rows.push(ri.mean(Kind::Double));
            rows.push(rj.mean(Kind::Double));
            idx.push((i as usize, j as usize));
        }
    }
    let lvl_logp = pi.to_kind(Kind::Double).mean_dim([1i64].as_slice(), false, Kind::Double);
    let lvl_rew = r.mean_dim([1i64].as_slice(), false, Kind::Double);
    let anchor = (-ratio.get(0)).to_kind(Kind::Double).mean(Kind::Double);
    rows.push(anchor);
    let all = Tensor::cat(
        &[Tensor::stack(&rows, 0), lvl_logp, lvl_rew],
        0,
    )
    .to_device(tch::Device::Cpu);
    let v: Vec<f64> = Vec::<f64>::try_from(&all).unwrap_or_default();
    let np = idx.len();
    let pairs = idx
        .iter()
        .enumerate()
        .map(|(n, &(winner, loser))| PairMetrics {
            winner,
            loser,
            accuracy: v[4 * n],
            margin: v[4 * n + 1],
            chosen_reward: v[4 * n + 2],
            rejected_reward: v[4 * n + 3],
        })
        .collect();
    let k = k as usize;
    let anchor = v[4 * np];
    let base = 4 * np + 1;
    LossMetrics {
        pairs,
        level_logps: v[base..base + k].to_vec(),
        level_rewards: v[base + k..base + 2 * k].to_vec(),
        anchor,
        batch,
    }
}

impl LossMetrics {
    /// Size-weighted average of the metrics of several micro-batches.
    pub fn merge(parts: &[LossMetrics]) -> Option<LossMetrics> {
        let first = parts.first()?;
        let n: usize = parts.iter().map(|p| p.batch).sum();
        let w = |p: &LossMetrics| p.batch as f64 / n.max(1) as f64;
        let avg = |f: &dyn Fn(&LossMetrics) -> f64| parts.iter().map(|p| w(p) * f(p)).sum::<f64>();
        let pairs = (0..first.pairs.len())
            .map(|q| PairMetrics {
                winner: first.pairs[q].winner,
                loser: first.pairs[q].loser,
                accuracy: avg(&|p| p.pairs[q].accuracy),
                margin: avg(&|p| p.pairs[q].margin),
                chosen_reward: avg(&|p| p.pairs[q].chosen_reward),
                rejected_reward: avg(&|p| p.pairs[q].rejected_reward),
            })
            .collect();
        let k = first.level_logps.len();
        Some(LossMetrics {
            pairs,
            level_logps: (0..k).map(|l| avg(&|p| p.level_logps[l])).collect(),
            level_rewards: (0..k).map(|l| avg(&|p| p.level_rewards[l])).collect(),
            anchor: avg(&|p| p.anchor),
            batch: n,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f64], k: i64) -> Tensor {
        Tensor::from_slice(v).reshape([k, -1])
    }

    #[test]
    fn pair_sets() {
        assert_eq!(PairSet::All.pairs(3).unwrap(), vec![(0, 1), (0, 2), (1, 2)]);
        assert_eq!(PairSet::Adjacent.pairs(4).unwrap(), vec![(0, 1), (1, 2), (2, 3)]);
        assert_eq!(PairSet::TopVsRest.pairs(3).unwrap(), vec![(0, 1), (0, 2)]);
        assert!(PairSet::Explicit(vec![(1, 0)]).pairs(3).is_err());
        assert!(PairSet::Explicit(vec![(0, 3)]).pairs(3).is_err());
        assert!(PairSet::Explicit(vec![(0, 1), (0, 1)]).pairs(3).is_err());
        assert_eq!(PairSet::All.pairs(4).unwrap().len(), 6);
    }

    /// K = 4, B = 1, β = 0.1, worked by hand.
    ///
    /// policy    = [-10, -12, -15, -20], reference = [-11, -11, -13, -16]
    /// ratio ρ   = π − π_ref = [1, -1, -2, -4]
    /// h_ij = ρ_i − ρ_j : h01 = 2, h02 = 3, h03 = 5, h12 = 1, h13 = 3, h23 = 2
    /// −log σ(0.1·h) = softplus(−0.1·h):
    ///   h=1: ln(1+e^−0.1) = 0.6443966600735709
    ///   h=2: ln(1+e^−0.2) = 0.5981388693815918
    ///   h=3: ln(1+e^−0.3) = 0.5543552444685272
    ///   h=5: ln(1+e^−0.5) = 0.4740769841801067
    /// Σ over 6 pairs = 0.5981388693815918 + 0.5543552444685272 + 0.4740769841801067
    ///                + 0.6443966600735709 + 0.5543552444685272 + 0.5981388693815918
    ///                = 3.4234618719539156
    /// anchor = π_ref(y0) − π(y0) = −11 − (−10) = −1, added on the 3 pairs with winner 0 → −3
    /// Sum (Eq. 7)   = 3.4234618719539156 − 3 = 0.4234618719539156
    /// Mean (code)   = 0.4234618719539156 / 6 = 0.0705769786589859
    /// Gradient wrt π (mean): d/dπ_i of softplus(−0.1 h) = −0.1·σ(−0.1 h) for the winner,
    /// +0.1·σ(−0.1 h) for the loser; anchor adds −1 to π0 per winner-0 pair.
    ///   σ(−0.1)=0.47502081252106, σ(−0.2)=0.45016600268752, σ(−0.3)=0.42555748318834,
    ///   σ(−0.5)=0.37754066879815
    ///   dπ0 = [−0.1(0.45016600268752+0.42555748318834+0.37754066879815) − 3] / 6
    ///       = (−0.125326415467401 − 3)/6 = −0.5208877359112335
    ///   dπ3 = 0.1(0.37754066879815+0.42555748318834+0.45016600268752)/6 = 0.02088773591123350
    #[test]
    fn k4_by_hand() {
        let pi = t(&[-10.0, -12.0, -15.0, -20.0], 4).set_requires_grad(true);
        let rf = t(&[-11.0, -11.0, -13.0, -16.0], 4);
        let out = preference_loss(&pi, &rf, &LossConfig::mdpo()).unwrap();
        assert!((out.loss.double_value(&[]) - 0.0705769786589859).abs() < 1e-12);
        let sum_cfg = LossConfig { reduction: PairReduction::Sum, ..LossConfig::mdpo() };
        let s = preference_loss(&pi, &rf, &sum_cfg).unwrap().loss.double_value(&[]);
        assert!((s - 0.4234618719539156).abs() < 1e-12);
        let g = Tensor::run_backward(&[&out.loss], &[&pi], false, false);
        let g: Vec<f64> = Vec::try_from(g[0].flatten(0, -1)).unwrap();
        assert!((g[0] + 0.5208877359112335).abs() < 1e-12, "{g:?}");
        assert!((g[3] - 0.0208877359112335).abs() < 1e-12, "{g:?}");
        // all 6 pairs ordered correctly → accuracy 1, margin of (0,1) = 0.1·2
        let m = &out.metrics;
        assert_eq!(m.pairs.len(), 6);
        assert!(m.pairs.iter().all(|p| p.accuracy == 1.0));
        assert!((m.pairs[0].margin - 0.2).abs() < 1e-12);
        assert!((m.anchor + 1.0).abs() < 1e-12);
    }

    #[test]
    fn adjacent_and_explicit_subsets() {
        let pi = t(&[-10.0, -12.0, -15.0, -20.0], 4);
        let rf = t(&[-11.0, -11.0, -13.0, -16.0], 4);
        // Adjacent: (0,1) h=2, (1,2) h=1, (2,3) h=2; anchor on (0,1) only.
        let cfg = LossConfig { pairs: PairSet::Adjacent, ..LossConfig::mdpo() };
        let l = preference_loss(&pi, &rf, &cfg).unwrap().loss.double_value(&[]);
        let want = (0.5981388693815918 + 0.6443966600735709 + 0.5981388693815918 - 1.0) / 3.0;
        assert!((l - want).abs() < 1e-12);
        // Explicit S>A & A>B without anchor equals the mean of the two DPO terms.
        let cfg = LossConfig { pairs: PairSet::Explicit(vec![(0, 1), (1, 2)]), ..LossConfig::dpo() };
        let l = preference_loss(&pi, &rf, &cfg).unwrap().loss.double_value(&[]);
        assert!((l - (0.5981388693815918 + 0.6443966600735709) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn ipo_hinge_smoothing_pl() {
        let pi = t(&[-1.0, -2.0], 2);
        let rf = t(&[-1.5, -1.5], 2); // h = 0.5 - (-0.5) = 1
        let beta = 0.5;
        let ipo = LossConfig { beta, loss: PairLoss::Ipo, anchor_weight: 0.0, ..LossConfig::mdpo() };
        let l = preference_loss(&pi, &rf, &ipo).unwrap().loss.double_value(&[]);
        assert!((l - 0.0).abs() < 1e-12); // (1 − 1/(2·0.5))² = 0
        let hinge = LossConfig { beta, loss: PairLoss::Hinge, anchor_weight: 0.0, ..LossConfig::mdpo() };
        let l = preference_loss(&pi, &rf, &hinge).unwrap().loss.double_value(&[]);
        assert!((l - 0.5).abs() < 1e-12); // relu(1 − 0.5)
        let cdpo = LossConfig { beta, label_smoothing: 0.1, ..LossConfig::dpo() };
        let l = preference_loss(&pi, &rf, &cdpo).unwrap().loss.double_value(&[]);
        // 0.9·ln(1+e^−0.5) + 0.1·ln(1+e^0.5)
        let want = 0.9 * (1.0f64 + (-0.5f64).exp()).ln() + 0.1 * (1.0f64 + 0.5f64.exp()).ln();
        assert!((l - want).abs() < 1e-12);
        // Plackett–Luce with K = 2 equals the DPO sigmoid loss.
        let pl = LossConfig { beta, objective: Objective::PlackettLuce, ..LossConfig::dpo() };
        let a = preference_loss(&pi, &rf, &pl).unwrap().loss.double_value(&[]);
        let b = preference_loss(&pi, &rf, &LossConfig { beta, ..LossConfig::dpo() }).unwrap().loss.double_value(&[]);
        assert!((a - b).abs() < 1e-12);
        assert!(LossConfig { label_smoothing: 0.6, ..LossConfig::dpo() }.validate(2).is_err());
    }

    /// Plackett–Luce K = 3 by hand: r = β ρ with β = 1, ρ = [0, -1, -2]:
    /// stage 0: logsumexp(0,-1,-2) − 0 = ln(1 + e^−1 + e^−2) = 0.40760596444438
    /// stage 1: logsumexp(-1,-2) + 1 = ln(1 + e^−1) = 0.31326168751822
    #[test]
    fn plackett_luce_k3() {
        let pi = t(&[0.0, -1.0, -2.0], 3);
        let rf = pi.zeros_like();
        let cfg = LossConfig {
            beta: 1.0,
            objective: Objective::PlackettLuce,
            reduction: PairReduction::Sum,
            ..LossConfig::dpo()
        };
        let l = preference_loss(&pi, &rf, &cfg).unwrap().loss.double_value(&[]);
        assert!((l - (0.40760596444438 + 0.31326168751822)).abs() < 1e-12);
    }

    /// Central finite differences (f64) of every variant against autograd.
    #[test]
    fn gradients_match_finite_differences() {
        let k = 4;
        let b = 3;
        let base: Vec<f64> = (0..k * b).map(|i| -5.0 - ((i * 37 % 11) as f64) * 0.7).collect();
        let refv: Vec<f64> = (0..k * b).map(|i| -6.0 - ((i * 13 % 7) as f64) * 0.9).collect();
        let rf = t(&refv, k as i64);
        let cfgs = vec![
            LossConfig::mdpo(),
            LossConfig { reduction: PairReduction::Sum, ..LossConfig::mdpo() },
            LossConfig { pairs: PairSet::Adjacent, label_smoothing: 0.2, ..LossConfig::mdpo() },
            LossConfig { loss: PairLoss::Ipo, ..LossConfig::mdpo() },
            LossConfig { loss: PairLoss::Hinge, beta: 0.01, ..LossConfig::mdpo() },
            LossConfig { objective: Objective::PlackettLuce, ..LossConfig::mdpo() },
        ];
        for cfg in cfgs {
            let pi = t(&base, k as i64).set_requires_grad(true);
            let out = preference_loss(&pi, &rf, &cfg).unwrap();
            let g = Tensor::run_backward(&[&out.loss], &[&pi], false, false);
            let g: Vec<f64> = Vec::try_from(g[0].flatten(0, -1)).unwrap();
            let e = 1e-6;
            for n in 0..k * b {
                let mut p = base.clone();
                p[n] += e;
                let lp = preference_loss(&t(&p, k as i64), &rf, &cfg).unwrap().loss.double_value(&[]);
                p[n] -= 2.0 * e;
                let lm = preference_loss(&t(&p, k as i64), &rf, &cfg).unwrap().loss.double_value(&[]);
                let fd = (lp - lm) / (2.0 * e);
                assert!((fd - g[n]).abs() < 1e-7, "{cfg:?} coord {n}: fd {fd} vs autograd {}", g[n]);
            }
        }
    }
}
