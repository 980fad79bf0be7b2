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
