//! Metrics of a loss evaluation: reward accuracy and margin of every pair, per-level log-probs and
//! rewards, the anchor (TRL's `rewards/*` logs, generalised to K levels).
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

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

/// Batch metrics from policy scores and log-ratios (all `[K, B]`), one device sync.
pub(super) fn metrics_of(pi: &Tensor, ratio: &Tensor, beta: f64, batch: usize) -> LossMetrics {
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

