//! Benchmark metrics (paper Eq. 8; docs/paper-notes.md §5–6). All functions take only the items that
//! were scored; missing items are counted elsewhere and never imputed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// MRHal-Bench metrics over dialogues (each a list of per-round 0–6 ratings).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MrhalMetrics {
    /// Dialogues scored.
    pub dialogues: usize,
    /// Rounds scored.
    pub rounds: usize,
    /// Σ_i Sum(r_i) / Σ_i Len(r_i): mean over all rounds pooled (Eq. 8, cumulative).
    pub cumulative_score: f64,
    /// Fraction of all rounds with rating < 3.
    pub cumulative_hallucination_rate: f64,
    /// (1/N) Σ_i mean(r_i): mean of per-dialogue means (Eq. 8, mean).
    pub mean_score: f64,
    /// Eq. 8 read literally: mean over dialogues of the fraction of that dialogue's rounds
    /// rated < 3.
    pub mean_hallucination_rate_paper: f64,
    /// What the reference code reports as "mean hallucination rate": the fraction of
    /// dialogues whose *mean* rating is < 3 (docs/paper-notes.md §5).
    pub mean_hallucination_rate_refcode: f64,
}

/// Computes [`MrhalMetrics`]; `None` when there is nothing to score.
pub fn mrhal_metrics(dialogues: &[Vec<u8>]) -> Option<MrhalMetrics> {
    let scored: Vec<&Vec<u8>> = dialogues.iter().filter(|d| !d.is_empty()).collect();
    if scored.is_empty() {
        return None;
    }
    let n = scored.len() as f64;
    let rounds: usize = scored.iter().map(|d| d.len()).sum();
    let total: f64 = scored.iter().flat_map(|d| d.iter()).map(|&r| f64::from(r)).sum();
    let halluc: usize = scored.iter().flat_map(|d| d.iter()).filter(|&&r| r < 3).count();
    let mut mean_sum = 0.0;
    let mut frac_sum = 0.0;
    let mut low_mean = 0usize;
    for d in &scored {
        let len = d.len() as f64;
        let m = d.iter().map(|&r| f64::from(r)).sum::<f64>() / len;
        mean_sum += m;
        frac_sum += d.iter().filter(|&&r| r < 3).count() as f64 / len;
        if m < 3.0 {
            low_mean += 1;
        }
    }
    Some(MrhalMetrics {
        dialogues: scored.len(),
        rounds,
        cumulative_score: total / rounds as f64,
        cumulative_hallucination_rate: halluc as f64 / rounds as f64,
        mean_score: mean_sum / n,
        mean_hallucination_rate_paper: frac_sum / n,
        mean_hallucination_rate_refcode: low_mean as f64 / n,
    })
}

/// MMHal-Bench metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MmhalMetrics {
    /// Answers scored.
    pub n: usize,
    /// Mean rating (0–6).
    pub average_score: f64,
    /// Fraction of ratings < 3.
    pub hallucination_rate: f64,
    /// Mean rating per question type (types with no scored answer are absent).
    pub per_type: BTreeMap<String, f64>,
}

/// Computes [`MmhalMetrics`] from `(question type, rating)` pairs.
pub fn mmhal_metrics(scores: &[(String, u8)]) -> Option<MmhalMetrics> {
    if scores.is_empty() {
        return None;
    }
    let n = scores.len() as f64;
    let mut by_type: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for (t, r) in scores {
        let e = by_type.entry(t.clone()).or_default();
        e.0 += f64::from(*r);
        e.1 += 1;
    }
    Some(MmhalMetrics {
        n: scores.len(),
        average_score: scores.iter().map(|(_, r)| f64::from(*r)).sum::<f64>() / n,
        hallucination_rate: scores.iter().filter(|(_, r)| *r < 3).count() as f64 / n,
        per_type: by_type.into_iter().map(|(k, (s, c))| (k, s / c as f64)).collect(),
    })
}

/// POPE answer parsing (LLaVA/AMP `eval_pope.py`, docs/paper-notes.md §6): keep the text before the
/// first '.', drop commas, split on single spaces; "No", "not" or "no" among the words means
/// "no", anything else "yes". Returns `true` for yes.
pub fn pope_parse_yes(answer: &str) -> bool {
    let first = answer.split('.').next().unwrap_or("");
    let cleaned = first.replace(',', "");
    !cleaned.split(' ').any(|w| w == "No" || w == "not" || w == "no")
}

/// POPE metrics of one split (positive class = "yes").
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PopeMetrics {
    /// Questions scored.
    pub n: usize,
    /// True positives.
    pub tp: usize,
    /// False positives.
    pub fp: usize,
    /// True negatives.
    pub tn: usize,
    /// False negatives.
    pub fn_: usize,
    /// (TP+TN)/N.
    pub accuracy: f64,
    /// TP/(TP+FP); `None` when the model never says yes.
    pub precision: Option<f64>,
    /// TP/(TP+FN); `None` when there are no positive labels.
    pub recall: Option<f64>,
    /// 2PR/(P+R); `None` when P or R is undefined or both are 0.
    pub f1: Option<f64>,
    /// Predicted-yes fraction (not the ground-truth one; docs/paper-notes.md §7).
    pub yes_ratio: f64,
}

/// Computes [`PopeMetrics`] from `(predicted yes, label yes)` pairs.
pub fn pope_metrics(pairs: &[(bool, bool)]) -> Option<PopeMetrics> {
    if pairs.is_empty() {
        return None;
    }
    let (mut tp, mut fp, mut tn, mut fn_) = (0, 0, 0, 0);
    for &(pred, label) in pairs {
        match (pred, label) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, false) => tn += 1,
            (false, true) => fn_ += 1,
        }
    }
    let n = pairs.len();
    let precision = (tp + fp > 0).then(|| tp as f64 / (tp + fp) as f64);
    let recall = (tp + fn_ > 0).then(|| tp as f64 / (tp + fn_) as f64);
    let f1 = match (precision, recall) {
        (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
        _ => None,
    };
    Some(PopeMetrics {
        n,
        tp,
        fp,
        tn,
        fn_,
        accuracy: (tp + tn) as f64 / n as f64,
        precision,
        recall,
        f1,
        yes_ratio: (tp + fp) as f64 / n as f64,
    })
}

/// LLaVA-Bench scores of one category.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LlavaCategory {
    /// Pairs scored.
    pub n: usize,
    /// Mean judge score of the reference answer (1–10).
    pub reference_mean: f64,
    /// Mean judge score of the model answer (1–10).
    pub model_mean: f64,
    /// model_mean / reference_mean × 100 (can exceed 100).
    pub relative: f64,
}

/// Per-category (and `"all"`) LLaVA-Bench relative scores from `(category, [ref, model])`.
pub fn llava_metrics(pairs: &[(String, [f64; 2])]) -> BTreeMap<String, LlavaCategory> {
    let mut groups: BTreeMap<String, Vec<[f64; 2]>> = BTreeMap::new();
    for (c, p) in pairs {
        groups.entry(c.clone()).or_default().push(*p);
        groups.entry("all".into()).or_default().push(*p);
    }
    groups
        .into_iter()
        .map(|(c, v)| {
            let n = v.len() as f64;
            let r = v.iter().map(|p| p[0]).sum::<f64>() / n;
            let m = v.iter().map(|p| p[1]).sum::<f64>() / n;
            (c, LlavaCategory { n: v.len(), reference_mean: r, model_mean: m, relative: m / r * 100.0 })
        })
        .collect()
}
