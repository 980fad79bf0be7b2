//! The gates a world must pass before preference training can test AMP's claim (docs/demo.md):
//! computed from the experts' benchmark answers and their answers to the preference prompts,
//! printed, and (for presets that enforce them) a failure of the job with the numbers.
//!
//! 1. Claim hallucination (hallucinated / checkable claims on the benchmark) falls strictly with
//!    expert size — the premise of Multi-size Expert Generation (paper §3.1).
//! 2. The base sits between 15% and 50% claim hallucination: room to improve, and a model that
//!    reads the image.
//! 3. Adjacent generated levels differ by at least 0.3 hallucinated claims per response (on the
//!    preference prompts): the levels are graded.
//! 4. Yes/no flips between adjacent levels (standard included) are balanced within 60/40: a
//!    preference pair must not teach "say yes" (or "no") instead of looking.
//! 5. Grounding: counted only over attribute words the question did not name, with the
//!    distribution of the shapes named (reported, not gated).
use amp_data::pipeline::GeneratedRow;
use amp_world::claims::{answer_yes_no, count_hallucinations};
use amp_world::{SceneIndex, Turn};
use serde::{Deserialize, Serialize};

/// Thresholds (the issue's, see the module docs).
pub const BASE_RANGE: (f64, f64) = (0.15, 0.50);
pub const MIN_GAP: f64 = 0.3;
pub const FLIP_BALANCE: f64 = 0.6;
/// Below this many flips a pair's balance is not judged (reported as such).
pub const MIN_FLIPS: usize = 10;

/// Yes/no disagreements between an upper and a lower level on the same yes/no rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flips {
    pub upper: String,
    pub lower: String,
    /// Rounds where the upper level says yes and the lower no.
    pub upper_yes: usize,
    /// Rounds where the upper level says no and the lower yes.
    pub upper_no: usize,
    pub balanced: bool,
}

impl Flips {
    /// Share of the flips where the upper level says yes (NaN without flips).
    pub fn yes_share(&self) -> f64 {
        let n = self.upper_yes + self.upper_no;
        if n == 0 {
            f64::NAN
        } else {
            self.upper_yes as f64 / n as f64
        }
    }
}

/// Every gate's numbers and verdict.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Gates {
    /// (expert, benchmark claim hallucination rate), largest expert first (NaN, `null` in JSON,
    /// for an expert without a checkable claim).
    #[serde(deserialize_with = "pairs_nan")]
    pub claim_hallucination: Vec<(String, f64)>,
    pub falls_with_size: bool,
    pub base: String,
    #[serde(deserialize_with = "f64_nan")]
    pub base_rate: f64,
    pub base_in_range: bool,
    /// (level, mean hallucinated claims per response on the preference prompts), in level order
    /// (the standard first).
    pub level_means: Vec<(String, f64)>,
    /// Differences of adjacent generated levels (lower minus upper).
    pub gaps: Vec<f64>,
    pub graded: bool,
    pub flips: Vec<Flips>,
    pub flips_balanced: bool,
    /// (level, share of the yes/no rounds answered as the standard answers, rounds answered),
    /// standard excluded: levels at chance here make every flip noise (reported, not gated).
    #[serde(default, deserialize_with = "triples_nan")]
    pub yes_no_accuracy: Vec<(String, f64, usize)>,
    /// (expert, [(shape, share of the shape words it used)]).
    pub shape_distribution: Vec<(String, Vec<(String, f64)>)>,
    pub passed: bool,
}

// serde_json writes NaN as null; read it back as NaN.
fn f64_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}
fn triples_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(String, f64, usize)>, D::Error> {
    let v: Vec<(String, Option<f64>, usize)> = Deserialize::deserialize(d)?;
    Ok(v.into_iter().map(|(a, b, c)| (a, b.unwrap_or(f64::NAN), c)).collect())
}
fn pairs_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(String, f64)>, D::Error> {
    let v: Vec<(String, Option<f64>)> = Deserialize::deserialize(d)?;
    Ok(v.into_iter().map(|(a, b)| (a, b.unwrap_or(f64::NAN))).collect())
}

fn yes_no_answers(conv: &[mdpo::Turn]) -> Vec<Option<bool>> {
    conv.iter().filter(|t| t.from == "gpt").map(|t| answer_yes_no(&t.value)).collect()
}

fn to_world(c: &[mdpo::Turn]) -> Vec<Turn> {
    c.iter().map(|t| Turn { from: t.from.clone(), value: t.value.clone() }).collect()
}

/// Compute the gates. `experts` are (name, claim rate, shape distribution) largest first; `pool`
/// the generated levels in order (names of `rows`' candidate sources).
pub fn compute(experts: &[(String, f64, Vec<(String, f64)>)], base: &str, rows: &[GeneratedRow], pool: &[String], scenes: &SceneIndex) -> Gates {
    let mut g = Gates { base: base.into(), ..Gates::default() };
    g.claim_hallucination = experts.iter().map(|e| (e.0.clone(), e.1)).collect();
    g.shape_distribution = experts.iter().map(|e| (e.0.clone(), e.2.clone())).collect();
    g.falls_with_size = experts.windows(2).all(|w| w[0].1 < w[1].1);
    g.base_rate = experts.iter().find(|e| e.0 == base).map(|e| e.1).unwrap_or(f64::NAN);
    g.base_in_range = (BASE_RANGE.0..=BASE_RANGE.1).contains(&g.base_rate);

    // Levels: the standard, then the pool.
    let mut names = vec!["standard".to_string()];
    names.extend(pool.iter().cloned());
    let mut sums = vec![0.0; names.len()];
    let mut n = 0usize;
    let mut flips: Vec<(usize, usize)> = vec![(0, 0); names.len() - 1];
    let mut yes_no: Vec<(usize, usize)> = vec![(0, 0); names.len() - 1];
    for row in rows {
        let Some(scene) = scenes.get(&row.image) else { continue };
        let mut convs = vec![&row.standard];
        for p in pool {
            match row.candidates.iter().find(|c| &c.source == p) {
                Some(c) => convs.push(&c.conversation),
                None => break,
            }
        }
        if convs.len() != names.len() {
            continue;
        }
        n += 1;
        for (s, c) in sums.iter_mut().zip(&convs) {
            *s += count_hallucinations(scene, &to_world(c)) as f64;
        }
        let yn: Vec<Vec<Option<bool>>> = convs.iter().map(|c| yes_no_answers(c)).collect();
        // Level k + 1 against the standard (accuracy) and against level k (flips), on the
        // rounds the standard answers yes/no (the yes/no questions).
        for (k, (f, acc)) in flips.iter_mut().zip(yes_no.iter_mut()).enumerate() {
            for (r, truth) in yn[0].iter().enumerate() {
                let Some(t) = truth else { continue };
                let (upper, lower) = (yn[k].get(r).copied().flatten(), yn[k + 1].get(r).copied().flatten());
                if let Some(a) = lower {
                    acc.1 += 1;
                    acc.0 += usize::from(*t == a);
                }
                match (upper, lower) {
                    (Some(true), Some(false)) => f.0 += 1,
                    (Some(false), Some(true)) => f.1 += 1,
                    _ => {}
                }
            }
        }
    }
    g.level_means = names.iter().zip(&sums).map(|(a, s)| (a.clone(), s / n.max(1) as f64)).collect();
    g.gaps = g.level_means[1..].windows(2).map(|w| w[1].1 - w[0].1).collect();
    g.graded = !g.gaps.is_empty() && g.gaps.iter().all(|d| *d >= MIN_GAP);
    g.flips = flips
        .iter()
        .enumerate()
        .map(|(k, &(y, no))| {
            let mut f = Flips { upper: names[k].clone(), lower: names[k + 1].clone(), upper_yes: y, upper_no: no, balanced: true };
            if y + no >= MIN_FLIPS {
                let s = f.yes_share();
                f.balanced = (1.0 - FLIP_BALANCE..=FLIP_BALANCE).contains(&s);
            }
            f
        })
        .collect();
    g.flips_balanced = g.flips.iter().all(|f| f.balanced);
    g.yes_no_accuracy = names[1..]
        .iter()
        .zip(&yes_no)
        .map(|(n, &(right, all))| (n.clone(), if all == 0 { f64::NAN } else { right as f64 / all as f64 }, all))
        .collect();
    g.passed = g.falls_with_size && g.base_in_range && g.graded && g.flips_balanced;
    g
}

/// The gates as text lines (printed before preference training and in the report).
pub fn lines(g: &Gates) -> Vec<String> {
    let ok = |b: bool| if b { "PASS" } else { "FAIL" };
    let mut v = Vec::new();
    v.push(format!(
        "[{}] claim hallucination falls strictly with size: {}",
        ok(g.falls_with_size),
        g.claim_hallucination.iter().map(|(n, r)| format!("{n} {r:.3}")).collect::<Vec<_>>().join(" > ")
    ));
    v.push(format!(
        "[{}] base {} claim hallucination {:.3} in [{:.2}, {:.2}]",
        ok(g.base_in_range),
        g.base,
        g.base_rate,
        BASE_RANGE.0,
        BASE_RANGE.1
    ));
    v.push(format!(
        "[{}] adjacent generated levels differ by ≥ {MIN_GAP} hallucinated claims per response: means {}; gaps {}",
        ok(g.graded),
        g.level_means.iter().map(|(n, m)| format!("{n} {m:.2}")).collect::<Vec<_>>().join(", "),
        g.gaps.iter().map(|d| format!("{d:+.2}")).collect::<Vec<_>>().join(", ")
    ));
    v.push(format!(
        "[{}] yes/no flips between adjacent levels within {:.0}/{:.0} (upper yes : upper no): {}",
        ok(g.flips_balanced),
        100.0 * FLIP_BALANCE,
        100.0 * (1.0 - FLIP_BALANCE),
        g.flips
            .iter()
            .map(|f| format!(
                "{}>{} {}:{}{}",
                f.upper,
                f.lower,
                f.upper_yes,
                f.upper_no,
                if f.upper_yes + f.upper_no < MIN_FLIPS { " (too few to judge)" } else if f.balanced { "" } else { " UNBALANCED" }
            ))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    v.push(format!(
        "[info] yes/no rounds answered as the standard does (0.5 = chance): {}",
        g.yes_no_accuracy.iter().map(|(n, a, k)| format!("{n} {a:.2} of {k}")).collect::<Vec<_>>().join(", ")
    ));
    v.push(format!(
        "[info] shapes named (attribute words not in the question): {}",
        g.shape_distribution
            .iter()
            .map(|(n, d)| format!("{n}: {}", d.iter().map(|(s, x)| format!("{s} {x:.2}")).collect::<Vec<_>>().join(" ")))
            .collect::<Vec<_>>()
            .join("; ")
    ));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_decide_each_gate() {
        let e = |n: &str, r| (n.to_string(), r, vec![("circle".to_string(), 1.0)]);
        let g = compute(&[e("a", 0.1), e("b", 0.2), e("c", 0.3)], "b", &[], &[], &SceneIndex::new(vec![]));
        assert!(g.falls_with_size && g.base_in_range);
        assert!(!g.graded, "no levels: not graded");
        assert!(!g.passed);
        let g = compute(&[e("a", 0.1), e("b", 0.6), e("c", 0.3)], "b", &[], &[], &SceneIndex::new(vec![]));
        assert!(!g.falls_with_size && !g.base_in_range);
        let f = Flips { upper: "s".into(), lower: "b".into(), upper_yes: 61, upper_no: 39, balanced: false };
        assert!((f.yes_share() - 0.61).abs() < 1e-12);
        assert!(lines(&g)[0].starts_with("[FAIL]"));
    }
}
