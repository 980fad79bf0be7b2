//! Data parallelism for the trainer (docs/distributed.md): which micro-batches of a global step a
//! rank runs, and the step-level reductions that make every rank take the same decision.
//!
//! A global step takes `batch_size × grad_accum × world` examples of the epoch permutation, the
//! same on every rank (the order is a function of the global step, not of the world size). Its
//! micro-batches are numbered globally and rank `r` runs numbers `r·grad_accum ..
//! (r+1)·grad_accum`; each micro-batch's loss is scaled by `B_micro / B_global` and seeded by its
//! global number, so after summing the gradients over the ranks, `world 2 × accumulation 1`
//! computes what `world 1 × accumulation 2` computes.
use tch::{Device, Kind, Tensor};

use crate::collective::{all_gather_bytes, Collective, CollectiveError};
use crate::loss::LossMetrics;

/// The micro-batches (global number, example indices) that `rank` runs: the `per_rank`
/// consecutive ones starting at `rank · per_rank`. At the end of an epoch later ranks may get
/// fewer or none; they still join every collective.
pub fn rank_micro_batches(micro: &[Vec<usize>], rank: usize, per_rank: usize) -> Vec<(usize, Vec<usize>)> {
    let start = (rank * per_rank).min(micro.len());
    let end = (start + per_rank).min(micro.len());
    (start..end).map(|i| (i, micro[i].clone())).collect()
}

/// The scalar sums of a step, reduced over the ranks in one collective.
#[derive(Debug, Clone, PartialEq)]
pub struct StepTotals {
    /// Σ of the scaled micro-batch losses (preference) or of the NLL sums (SFT).
    pub loss: f64,
    pub tokens: f64,
    /// SFT: Σ of the response-token weights.
    pub weight: f64,
    /// Number of ranks that met a non-finite loss.
    pub non_finite: f64,
    /// Σ of the scaled per-level token log-probs.
    pub level_token_logps: Vec<f64>,
    /// Per trainable tensor, the number of ranks where it has a gradient (a tensor no rank's
    /// forward used keeps none, as in a single process).
    pub grads_defined: Vec<f64>,
}

impl StepTotals {
    /// Sum over the ranks (identity for one rank).
    pub fn all_reduce(self, comm: &dyn Collective) -> Result<Self, CollectiveError> {
        if comm.world_size() == 1 {
            return Ok(self);
        }
        let mut v = vec![self.loss, self.tokens, self.weight, self.non_finite];
        v.extend(&self.level_token_logps);
        v.extend(&self.grads_defined);
        let mut t = [Tensor::from_slice(&v)];
        comm.all_reduce_sum(&mut t)?;
        let v = Vec::<f64>::try_from(&t[0])?;
        let k = 4 + self.level_token_logps.len();
        Ok(Self {
            loss: v[0],
            tokens: v[1],
            weight: v[2],
            non_finite: v[3],
            level_token_logps: v[4..k].to_vec(),
            grads_defined: v[k..].to_vec(),
        })
    }
}

/// Every rank's per-micro-batch metrics, in rank order (what a single process would have merged).
pub fn gather_metrics(comm: &dyn Collective, parts: Vec<LossMetrics>) -> Result<Vec<LossMetrics>, CollectiveError> {
    if comm.world_size() == 1 {
        return Ok(parts);
    }
    let bytes = serde_json::to_vec(&parts).map_err(|e| CollectiveError::InvalidInput {
        rank: comm.rank(),
        op: crate::collective::CollectiveOp::AllReduce,
        message: format!("metrics do not serialise: {e}"),
    })?;
    let mut out = Vec::new();
    for (r, b) in all_gather_bytes(comm, &bytes)?.into_iter().enumerate() {
        let p: Vec<LossMetrics> = serde_json::from_slice(&b).map_err(|e| CollectiveError::InvalidInput {
            rank: comm.rank(),
            op: crate::collective::CollectiveOp::AllReduce,
            message: format!("rank {r}'s metrics do not parse: {e}"),
        })?;
        out.extend(p);
    }
    Ok(out)
}

/// Which blocks of `block` examples (out of `n`) `rank` computes in a split precompute: block
/// `b` goes to rank `b mod world`.
pub fn rank_blocks(n: usize, block: usize, rank: usize, world: usize) -> Vec<std::ops::Range<usize>> {
    (0..n.div_ceil(block.max(1)))
        .filter(|b| b % world == rank)
        .map(|b| b * block..((b + 1) * block).min(n))
        .collect()
}

/// Assemble `[n, k]` f64 tables from the rows each rank computed: every rank writes its rows
/// into zeros and the tables are summed (adding zeros is exact).
pub fn gather_rows(
    comm: &dyn Collective,
    n: usize,
    k: usize,
    rows: &[(usize, Vec<f64>, Vec<f64>)],
) -> Result<(Tensor, Tensor), CollectiveError> {
    let opts = (Kind::Double, Device::Cpu);
    let mut sum = vec![0.0; n * k];
    let mut weight = vec![0.0; n * k];
    for (i, s, w) in rows {
        sum[i * k..(i + 1) * k].copy_from_slice(s);
        weight[i * k..(i + 1) * k].copy_from_slice(w);
    }
    let mut t = [
        Tensor::from_slice(&sum).to_kind(opts.0).reshape([n as i64, k as i64]),
        Tensor::from_slice(&weight).to_kind(opts.0).reshape([n as i64, k as i64]),
    ];
    comm.all_reduce_sum(&mut t)?;
    let [s, w] = t;
    Ok((s, w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_split_a_global_step_into_consecutive_micro_batches() {
        let micro: Vec<Vec<usize>> = vec![vec![7], vec![3], vec![5], vec![1]];
        assert_eq!(rank_micro_batches(&micro, 0, 2), vec![(0, vec![7]), (1, vec![3])]);
        assert_eq!(rank_micro_batches(&micro, 1, 2), vec![(2, vec![5]), (3, vec![1])]);
        // The short last step of an epoch: rank 1 has nothing to do.
        assert_eq!(rank_micro_batches(&micro[..1], 1, 1), vec![]);
        // A world of one runs everything, as before.
        assert_eq!(rank_micro_batches(&micro, 0, 4).len(), 4);
    }

    #[test]
    fn precompute_blocks_cover_every_example_once() {
        let mut all: Vec<usize> = (0..3).flat_map(|r| rank_blocks(10, 3, r, 3)).flatten().collect();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(rank_blocks(10, 3, 1, 3), vec![3..6]);
    }

    #[test]
    fn a_world_of_one_reduces_nothing() {
        let t = StepTotals { loss: 1.5, tokens: 3.0, weight: 0.0, non_finite: 0.0, level_token_logps: vec![-1.0], grads_defined: vec![1.0] };
        assert_eq!(t.clone().all_reduce(&crate::SingleProcess).unwrap(), t);
        let (s, w) = gather_rows(&crate::SingleProcess, 2, 1, &[(1, vec![2.0], vec![4.0])]).unwrap();
        assert_eq!(Vec::<f64>::try_from(&s.reshape([-1])).unwrap(), vec![0.0, 2.0]);
        assert_eq!(Vec::<f64>::try_from(&w.reshape([-1])).unwrap(), vec![0.0, 4.0]);
    }
}
