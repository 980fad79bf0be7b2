//! The loss configuration: which pair loss, which pairs, which objective, which reductions.
use crate::{MdpoError, Result};
use serde::{Deserialize, Serialize};

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

