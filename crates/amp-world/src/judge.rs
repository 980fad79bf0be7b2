//! A rule judge with the MRHal-Bench / MMHal-Bench 0–6 rubric (docs/paper-notes.md §5):
//! 6 very informative with good analysis, no hallucination; 5 very informative, no
//! hallucination; 4 somewhat informative, no hallucination; 3 not informative, no hallucination;
//! 2 very informative, with hallucination; 1 somewhat informative, with hallucination;
//! 0 not informative, with hallucination.
//!
//! Hallucination = at least one extracted claim contradicts the scene ([`crate::claims`]).
//! Informativeness = coverage of the standard answer's facts by the answer's true claims: each
//! claim is decomposed into atomic facts (an object's colour, its size, its cell, a count, a
//! relation between two resolved objects, a yes/no, ...), and coverage is the mean, over the
//! reference answer's claims, of the fraction of each claim's facts that the answer states. Ratings: no hallucination → 6 when coverage
//! ≥ 0.8 and the answer backs its answer with at least two true claims (e.g. "Yes, there is a
//! small blue square in the center."), 5 when coverage ≥ 0.8, 4 when ≥ 0.3, else 3; with
//! hallucination → 2 / 1 / 0 by the same coverage bands.
use crate::claims::{check_answer, CheckedClaim, Claim, Extreme, ObjRef, Rel};
use crate::scene::Scene;
use crate::text::Turn;
use serde::{Deserialize, Serialize};

/// Coverage at or above which an answer is "very informative".
pub const VERY_INFORMATIVE: f64 = 0.8;
/// Coverage at or above which an answer is "somewhat informative".
pub const SOMEWHAT_INFORMATIVE: f64 = 0.3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Field {
    Shape,
    Colour,
    Size,
    Row,
    Col,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Fact {
    /// Object i has a field (the value is implied by the object).
    Field(usize, Field),
    Exists(ObjRef),
    Count(ObjRef, usize),
    Rel(usize, usize, Rel),
    RelRaw(ObjRef, Rel, ObjRef),
    Extreme(Extreme, usize),
    YesNo(bool),
    Other(String),
}

fn object_facts(scene: &Scene, r: &ObjRef, out: &mut Vec<Fact>) {
    let idx = r.resolve(scene);
    if idx.len() == 1 {
        let i = idx[0];
        for (on, f) in [
            (r.shape.is_some(), Field::Shape),
            (r.colour.is_some(), Field::Colour),
            (r.size.is_some(), Field::Size),
            (r.row.is_some(), Field::Row),
            (r.col.is_some(), Field::Col),
        ] {
            if on {
                out.push(Fact::Field(i, f));
            }
        }
    } else {
        out.push(Fact::Exists(*r));
    }
}

fn unique(scene: &Scene, r: &ObjRef) -> Option<usize> {
    let idx = r.resolve(scene);
    (idx.len() == 1).then(|| idx[0])
}

fn facts(scene: &Scene, c: &Claim) -> Vec<Fact> {
    let mut out = Vec::new();
    match c {
        Claim::Exists(r) => object_facts(scene, r, &mut out),
        Claim::Absent(r) => out.push(Fact::Count(*r, 0)),
        Claim::Count(r, n) => out.push(Fact::Count(*r, *n)),
        Claim::Relation(a, rels, b) => {
            for &rel in rels {
                // Canonical direction: left-of and above.
                let (x, y, rel) = match rel {
                    Rel::RightOf => (b, a, Rel::LeftOf),
                    Rel::Below => (b, a, Rel::Above),
                    r => (a, b, r),
                };
                match (unique(scene, x), unique(scene, y)) {
                    (Some(i), Some(j)) => out.push(Fact::Rel(i, j, rel)),
                    _ => out.push(Fact::RelRaw(*x, rel, *y)),
                }
            }
        }
        Claim::Extreme(e, r) => match unique(scene, r) {
            Some(i) => out.push(Fact::Extreme(*e, i)),
            None => out.push(Fact::Other(format!("{c:?}"))),
        },
        Claim::YesNo(y) => out.push(Fact::YesNo(*y)),
        other => out.push(Fact::Other(format!("{other:?}"))),
    }
    out
}

/// The judge's verdict on one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundJudgement {
    /// 0–6 (MRHal rubric).
    pub rating: u8,
    /// Claims extracted from the answer, each with its truth.
    pub claims: Vec<CheckedClaim>,
    /// Number of claims contradicting the scene.
    pub hallucinations: usize,
    /// Mean fraction of the reference answer's claims (their facts) the answer states correctly.
    pub coverage: f64,
}

impl RoundJudgement {
    /// Rating < 3 (the MMHal/MRHal hallucination criterion).
    pub fn hallucinated(&self) -> bool {
        self.rating < 3
    }
}

/// Rate one round: `answer` to `question` about `scene`, with the standard answer `reference`
/// (the MRHal `revised` gpt turn). Without a reference only hallucination is judged and any
/// true claim counts as fully informative.
pub fn judge_round(
    scene: &Scene,
    question: &str,
    answer: &str,
    reference: Option<&str>,
) -> RoundJudgement {
    let claims = check_answer(scene, question, answer, reference);
    let hallucinations = claims.iter().filter(|c| c.truth == Some(false)).count();
    let mut ans_facts: Vec<Fact> = claims
        .iter()
        .filter(|c| c.truth == Some(true))
        .flat_map(|c| facts(scene, &c.claim))
        .collect();
    ans_facts.sort();
    ans_facts.dedup();
    let coverage = match reference {
        Some(r) => {
            // Mean over the reference's claims of the fraction of each claim's facts stated.
            let per_claim: Vec<f64> = check_answer(scene, question, r, Some(r))
                .iter()
                .filter(|c| c.truth != Some(false))
                .map(|c| {
                    let f = facts(scene, &c.claim);
                    f.iter().filter(|x| ans_facts.contains(x)).count() as f64
                        / f.len().max(1) as f64
                })
                .collect();
            if per_claim.is_empty() {
                (!ans_facts.is_empty()) as u8 as f64
            } else {
                per_claim.iter().sum::<f64>() / per_claim.len() as f64
            }
        }
        None => (!ans_facts.is_empty()) as u8 as f64,
    };
    let level = if coverage >= VERY_INFORMATIVE {
        2
    } else if coverage >= SOMEWHAT_INFORMATIVE {
        1
    } else {
        0
    };
    let rating = if hallucinations > 0 {
        level
    } else if level == 2 && claims.iter().filter(|c| c.truth == Some(true)).count() >= 2 {
        6
    } else {
        3 + level
    };
    RoundJudgement {
        rating,
        claims,
        hallucinations,
        coverage,
    }
}

/// Rate every round of a model's dialogue against the standard dialogue `reference` (the
/// MRHal `revised` list: alternating human / gpt turns). `answers[k]` is the model's answer to
/// the k-th human turn. Extra answers are ignored; missing ones are rated as empty answers.
pub fn judge_dialogue(
    scene: &Scene,
    reference: &[Turn],
    answers: &[String],
) -> Vec<RoundJudgement> {
    let mut out = Vec::new();
    let mut k = 0;
    for (i, t) in reference.iter().enumerate() {
        if t.from != "human" {
            continue;
        }
        let gt = reference
            .get(i + 1)
            .filter(|t| t.from == "gpt")
            .map(|t| t.value.as_str());
        let ans = answers.get(k).map(String::as_str).unwrap_or("");
        out.push(judge_round(scene, &t.value, ans, gt));
        k += 1;
    }
    out
}

/// MRHal-Bench metrics over dialogues (docs/paper-notes.md §5, as the authors' `summarize_gpt_mrhal.py`
/// computes them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MrhalMetrics {
    /// Mean over all round ratings.
    pub cumulative_score: f64,
    /// Fraction of rounds rated < 3.
    pub cumulative_hallucination_rate: f64,
    /// Mean over dialogues of the per-dialogue mean rating.
    pub mean_score: f64,
    /// Fraction of dialogues whose mean rating is < 3.
    pub mean_hallucination_rate: f64,
}

/// Aggregate per-dialogue ratings into the four MRHal-Bench numbers (Eq. 8).
pub fn mrhal_metrics(ratings: &[Vec<u8>]) -> MrhalMetrics {
    let all: Vec<f64> = ratings.iter().flatten().map(|&r| r as f64).collect();
    let n = all.len().max(1) as f64;
    let means: Vec<f64> = ratings
        .iter()
        .filter(|d| !d.is_empty())
        .map(|d| d.iter().map(|&r| r as f64).sum::<f64>() / d.len() as f64)
        .collect();
    let nd = means.len().max(1) as f64;
    MrhalMetrics {
        cumulative_score: all.iter().sum::<f64>() / n,
        cumulative_hallucination_rate: all.iter().filter(|&&r| r < 3.0).count() as f64 / n,
        mean_score: means.iter().sum::<f64>() / nd,
        mean_hallucination_rate: means.iter().filter(|&&m| m < 3.0).count() as f64 / nd,
    }
}
