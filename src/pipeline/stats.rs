//! Spread over seeds: mean ± sample standard deviation.
use serde::{Deserialize, Serialize};

/// Mean and sample standard deviation (n − 1) of a set of runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub mean: f64,
    /// Sample standard deviation (0 for a single run).
    pub std: f64,
    pub n: usize,
}

impl Spread {
    /// `None` for an empty slice. Non-finite values are an error of the caller: they are kept and
    /// make the spread non-finite (never silently dropped).
    pub fn of(xs: &[f64]) -> Option<Spread> {
        if xs.is_empty() {
            return None;
        }
        let n = xs.len();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let std = if n > 1 {
            (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Some(Spread { mean, std, n })
    }

    /// `"0.123 ± 0.004"` with `digits` decimals.
    pub fn fmt(&self, digits: usize) -> String {
        format!("{:.*} ± {:.*}", digits, self.mean, digits, self.std)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_matches_hand_computed_values() {
        let s = Spread::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(s.mean, 2.5);
        // sample variance = (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3
        assert!((s.std - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(Spread::of(&[7.0]).unwrap().std, 0.0);
        assert!(Spread::of(&[]).is_none());
        assert_eq!(Spread { mean: 0.5, std: 0.25, n: 2 }.fmt(2), "0.50 ± 0.25");
    }
}

/// One benchmark item's counts for a ratio-of-sums rate (e.g. hallucinated rounds / rounds),
/// pooled over the seeds of a variant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Count {
    pub hits: f64,
    pub total: f64,
}

/// Σ hits / Σ total (NaN when empty).
pub fn rate(items: &[Count]) -> f64 {
    let (h, t) = items.iter().fold((0.0, 0.0), |(h, t), c| (h + c.hits, t + c.total));
    if t > 0.0 {
        h / t
    } else {
        f64::NAN
    }
}

/// A difference of rates with its paired-bootstrap percentile interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// rate(variant) − rate(control) on the full benchmark.
    pub diff: f64,
    pub lo: f64,
    pub hi: f64,
    pub level: f64,
    pub resamples: usize,
}

/// Paired bootstrap (Efron & Tibshirani ch. 16): resample the benchmark items with replacement
/// (the same items for both models) `resamples` times and take the `level` percentile interval
/// of rate(variant) − rate(control). `variant[i]` and `control[i]` are the same item. Seeded
/// with the run's generator: same seed, same interval.
pub fn paired_bootstrap(variant: &[Count], control: &[Count], resamples: usize, level: f64, seed: u64) -> Option<Interval> {
    let n = variant.len();
    if n == 0 || n != control.len() || resamples == 0 {
        return None;
    }
    let mut rng = amp_world::rng::Rng::keyed(&[seed, 0xB007]);
    let mut diffs = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        let (mut vh, mut vt, mut ch, mut ct) = (0.0, 0.0, 0.0, 0.0);
        for _ in 0..n {
            let i = rng.below(n);
            vh += variant[i].hits;
            vt += variant[i].total;
            ch += control[i].hits;
            ct += control[i].total;
        }
        if vt > 0.0 && ct > 0.0 {
            diffs.push(vh / vt - ch / ct);
        }
    }
    if diffs.is_empty() {
        return None;
    }
    diffs.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| diffs[((p * (diffs.len() - 1) as f64).round() as usize).min(diffs.len() - 1)];
    let a = (1.0 - level) / 2.0;
    Some(Interval { diff: rate(variant) - rate(control), lo: q(a), hi: q(1.0 - a), level, resamples })
}

/// The standard error of a rate over items, √(p(1 − p)/n) with n the pooled denominator.
pub fn binomial_se(items: &[Count]) -> f64 {
    let p = rate(items);
    let n: f64 = items.iter().map(|c| c.total).sum();
    (p * (1.0 - p) / n).sqrt()
}

#[cfg(test)]
mod bootstrap_tests {
    use super::*;

    #[test]
    fn identical_models_give_a_zero_interval_and_a_shift_is_found() {
        let c: Vec<Count> = (0..200).map(|i| Count { hits: (i % 3 == 0) as u8 as f64, total: 1.0 }).collect();
        let iv = paired_bootstrap(&c, &c, 500, 0.95, 1).unwrap();
        assert_eq!((iv.diff, iv.lo, iv.hi), (0.0, 0.0, 0.0));
        // The variant hallucinates on every item the control does, plus 40 more: +0.2.
        let v: Vec<Count> = c.iter().enumerate().map(|(i, x)| Count { hits: if i % 5 == 1 { 1.0 } else { x.hits }, ..*x }).collect();
        let iv = paired_bootstrap(&v, &c, 2000, 0.95, 1).unwrap();
        assert!((iv.diff - (rate(&v) - rate(&c))).abs() < 1e-12);
        assert!(iv.lo > 0.0 && iv.hi > iv.lo && iv.lo < iv.diff && iv.diff < iv.hi, "{iv:?}");
        // Seeded: the same interval again.
        assert_eq!(paired_bootstrap(&v, &c, 2000, 0.95, 1), Some(iv));
        // Ratio of sums, hand-computed.
        assert_eq!(rate(&[Count { hits: 1.0, total: 4.0 }, Count { hits: 2.0, total: 4.0 }]), 3.0 / 8.0);
        assert!((binomial_se(&c) - (rate(&c) * (1.0 - rate(&c)) / 200.0).sqrt()).abs() < 1e-15);
    }
}
