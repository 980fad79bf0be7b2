//! What the demo measures and reports: per-model benchmark numbers, the experts' quality, stage
//! timings, and the whole [`DemoReport`] (written as `report/report.json` by [`super::report`]).
use super::{gates, ranking, stats, tower, DemoConfig};
use amp_data::pipeline as dp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The results row of the untouched base.
pub const BASE_ROW: &str = "base";
/// The results row of the SFT control (the anchor alone).
pub const CONTROL_ROW: &str = "sft-control";

/// Wall time of one stage (0 when skipped on resume; `previous_s` is what it took when it ran).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageTiming {
    pub stage: String,
    pub skipped: bool,
    pub wall_s: f64,
    pub previous_s: f64,
}

/// Benchmark numbers of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    pub model: String,
    pub mrhal: BTreeMap<String, f64>,
    pub pope: BTreeMap<String, f64>,
    /// Items without a verdict / answer (never imputed).
    pub missing: usize,
    /// Attribute accuracy of the objects the model names at a position in its benchmark answers
    /// ([`amp_world::AttributeTally`]): `located_claims`, `shape_accuracy`, `colour_accuracy`,
    /// `size_accuracy` (a key is absent when no claim names that attribute).
    #[serde(default)]
    pub grounding: BTreeMap<String, f64>,
    /// Per benchmark dialogue, per round: the rule judge's verdict and claim counts (for the
    /// paired bootstrap and the per-category rates).
    #[serde(default)]
    pub items: Vec<ItemScore>,
}

/// One benchmark dialogue's rounds as the rule judge saw them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemScore {
    pub id: String,
    pub rounds: Vec<RoundScore>,
}

/// One round: its MRHal category, whether it is hallucinated (rating < 3) and its claims.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundScore {
    pub category: String,
    pub hallucinated: bool,
    /// Checkable claims (true or false) and the false ones.
    pub claims: usize,
    pub hallucinated_claims: usize,
}

impl EvalResult {
    /// Per-item counts of `f(round) → (hits, total)`.
    pub fn counts(&self, f: impl Fn(&RoundScore) -> (f64, f64)) -> Vec<stats::Count> {
        self.items
            .iter()
            .map(|it| {
                it.rounds.iter().fold(stats::Count::default(), |c, r| {
                    let (h, t) = f(r);
                    stats::Count { hits: c.hits + h, total: c.total + t }
                })
            })
            .collect()
    }
    /// Hallucinated / checkable claims over the benchmark.
    pub fn claim_hallucination_rate(&self) -> f64 {
        stats::rate(&self.counts(claim_counts))
    }
}

/// Per-item counts of `f` summed over the runs of one variant (its seeds): the benchmark items
/// pooled over seeds, as the paired bootstrap against the control reads them.
pub fn pooled_counts<'a>(runs: impl IntoIterator<Item = &'a EvalResult>, f: fn(&RoundScore) -> (f64, f64)) -> Vec<stats::Count> {
    let mut acc: Vec<stats::Count> = Vec::new();
    for r in runs {
        let c = r.counts(f);
        if acc.is_empty() {
            acc = c;
        } else {
            for (a, b) in acc.iter_mut().zip(c) {
                a.hits += b.hits;
                a.total += b.total;
            }
        }
    }
    acc
}

/// A round's (hallucinated rounds, rounds).
pub fn round_counts(r: &RoundScore) -> (f64, f64) {
    (f64::from(u8::from(r.hallucinated)), 1.0)
}

/// A round's (hallucinated claims, checkable claims).
pub fn claim_counts(r: &RoundScore) -> (f64, f64) {
    (r.hallucinated_claims as f64, r.claims as f64)
}

/// One expert's quality (the MEG premise).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpertQuality {
    pub name: String,
    pub params: i64,
    pub eval: EvalResult,
}

/// A training curve: (step, loss, reward accuracy) per optimizer step.
pub type Curve = Vec<(usize, f64, Option<f64>)>;

/// What [`super::run_demo`] returns (also written as `report/report.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemoReport {
    pub run_dir: PathBuf,
    pub config: DemoConfig,
    pub seeds: Vec<u64>,
    pub stages: Vec<StageTiming>,
    pub experts: Vec<ExpertQuality>,
    /// Whether the experts' claim hallucination rate falls strictly with size.
    pub hallucination_falls_with_size: bool,
    /// Stage 0's held-out per-cell accuracy.
    #[serde(default)]
    pub tower: Option<tower::TowerReport>,
    /// The gates, computed before preference training.
    #[serde(default)]
    pub gates: Option<gates::Gates>,
    /// Per MDPO variant: gradient norms at the base of the anchor, the pair terms and the whole
    /// loss on one batch.
    #[serde(default)]
    pub anchor_gradients: BTreeMap<String, (f64, f64, f64)>,
    /// Per variant: paired-bootstrap intervals of its difference from the SFT control (MRHal
    /// round hallucination rate, claim hallucination rate), items pooled over seeds.
    #[serde(default)]
    pub intervals: BTreeMap<String, (stats::Interval, stats::Interval)>,
    pub dataset_stats: BTreeMap<String, dp::DatasetStats>,
    pub ranking: ranking::RankingQuality,
    /// variant → seed → results (the untouched base is the [`BASE_ROW`] row).
    pub results: BTreeMap<String, BTreeMap<u64, EvalResult>>,
    /// variant → seed → training curve (step, loss, reward accuracy).
    pub curves: BTreeMap<String, BTreeMap<u64, Curve>>,
    pub report_md: PathBuf,
    /// Wall time of this invocation.
    pub total_wall_s: f64,
    /// Sum of every stage's wall time when it (last) ran: the cost of the whole run from scratch.
    pub total_compute_s: f64,
}
