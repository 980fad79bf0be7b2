//! The [`Judge`] trait and the strict parsers for judge outputs.
//!
//! A judge that fails (API error after retries, unparsable output) yields a [`JudgeFailure`]:
//! the item is **missing** — counted and reported, never scored as 0 or −1 (docs/paper-notes.md §7).

use serde::{Deserialize, Serialize};

use crate::data::{LlavaItem, MmhalItem, MrhalDialogue};

/// A judge's verdict on one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict<T> {
    /// The rating(s).
    pub value: T,
    /// The judge model *as returned by the server* (or the rule judge's name).
    pub judge_model: String,
    /// The judge's raw output (for audit).
    pub raw: String,
    /// sha256 of the prompt template used.
    pub prompt_hash: String,
}

/// Why an item has no verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum JudgeFailure {
    /// This judge cannot rate this benchmark.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The judge could not be reached (after retries).
    #[error("judge API failure: {0}")]
    Api(String),
    /// The judge answered but the output does not follow the required format.
    #[error("unparsable judge output: {reason}")]
    Parse {
        /// What is wrong.
        reason: String,
        /// The raw output.
        raw: String,
    },
}

/// Rates answers. Implemented by [`crate::llm_judge::LlmJudge`] and by non-LLM judges (the
/// demo's rule judge over a synthetic scene graph). Methods default to
/// [`JudgeFailure::Unsupported`], so a judge implements only what it can rate.
pub trait Judge: Sync {
    /// A short description (model or rule-set name) for logs.
    fn name(&self) -> String;

    /// The settings recorded with every verdict (requested model, temperature, template
    /// hashes, ...). A verdict on disk is reused on resume only if these are unchanged.
    fn params(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// One 0–6 rating per round of an MRHal-Bench dialogue (MRHal rubric, docs/paper-notes.md §5);
    /// `answers[r]` is the model's answer to round r.
    fn rate_mrhal(&self, item: &MrhalDialogue, answers: &[String]) -> Result<Verdict<Vec<u8>>, JudgeFailure> {
        let _ = (item, answers);
        Err(JudgeFailure::Unsupported(format!("{} does not rate MRHal-Bench", self.name())))
    }

    /// A 0–6 rating of an MMHal-Bench answer.
    fn rate_mmhal(&self, item: &MmhalItem, answer: &str) -> Result<Verdict<u8>, JudgeFailure> {
        let _ = (item, answer);
        Err(JudgeFailure::Unsupported(format!("{} does not rate MMHal-Bench", self.name())))
    }

    /// LLaVA-Bench pair `[reference score, model score]`, each 1–10.
    fn rate_llava(&self, item: &LlavaItem, answer: &str) -> Result<Verdict<[f64; 2]>, JudgeFailure> {
        let _ = (item, answer);
        Err(JudgeFailure::Unsupported(format!("{} does not rate LLaVA-Bench", self.name())))
    }
}

fn parse_err(reason: impl Into<String>, raw: &str) -> JudgeFailure {
    JudgeFailure::Parse { reason: reason.into(), raw: raw.to_string() }
}

/// Byte offsets of every case-insensitive occurrence of `needle` (ASCII) in `hay`.
fn find_all_ci(hay: &str, needle: &str) -> Vec<usize> {
    let h = hay.as_bytes();
    let n = needle.as_bytes();
    if n.is_empty() || h.len() < n.len() {
        return vec![];
    }
    (0..=h.len() - n.len()).filter(|&i| h[i..i + n.len()].eq_ignore_ascii_case(n)).collect()
}

/// Parses `Ratings: [r1, r2, ...]`: exactly one such list, exactly `rounds` integers, each
/// 0..=6. Anything else (no list, two lists, N/A, 7, a wrong count) is a parse failure.
pub fn parse_mrhal_ratings(raw: &str, rounds: usize) -> Result<Vec<u8>, JudgeFailure> {
    let hits = find_all_ci(raw, "ratings:");
    if hits.len() != 1 {
        return Err(parse_err(format!("expected exactly one \"Ratings: [...]\", found {}", hits.len()), raw));
    }
    let rest = raw[hits[0] + "ratings:".len()..].trim_start();
    let Some(body) = rest.strip_prefix('[') else {
        return Err(parse_err("\"Ratings:\" is not followed by '['", raw));
    };
    let Some(end) = body.find(']') else {
        return Err(parse_err("unterminated ratings list", raw));
    };
    let mut out = Vec::new();
    for tok in body[..end].split(',') {
        let t = tok.trim();
        match t.parse::<u8>() {
            Ok(v) if v <= 6 => out.push(v),
            _ => return Err(parse_err(format!("rating {t:?} is not an integer in 0..=6"), raw)),
        }
    }
    if out.len() != rounds {
        return Err(parse_err(format!("{} ratings for {rounds} rounds", out.len()), raw));
    }
    Ok(out)
}

/// Parses MMHal's `rating: s`: exactly one occurrence, an integer 0..=6.
pub fn parse_mmhal_rating(raw: &str) -> Result<u8, JudgeFailure> {
    let hits = find_all_ci(raw, "rating:");
    if hits.len() != 1 {
        return Err(parse_err(format!("expected exactly one \"rating: s\", found {}", hits.len()), raw));
    }
    let rest = raw[hits[0] + "rating:".len()..].trim_start();
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let tail = rest[digits.len()..].chars().next();
    if matches!(tail, Some('.') if rest[digits.len() + 1..].starts_with(|c: char| c.is_ascii_digit())) {
        return Err(parse_err("rating is not an integer", raw));
    }
    match digits.parse::<u8>() {
        Ok(v) if v <= 6 => Ok(v),
        _ => Err(parse_err(format!("rating {digits:?} is not an integer in 0..=6"), raw)),
    }
}

/// Parses LLaVA-Bench's first line: exactly two numbers (comma or space separated), each in
/// 1..=10. Returns `[assistant 1 (reference), assistant 2 (model)]`.
pub fn parse_llava_scores(raw: &str) -> Result<[f64; 2], JudgeFailure> {
    let first = raw.trim_start().lines().next().unwrap_or("");
    let toks: Vec<&str> = first.split([',', ' ', '\t']).filter(|t| !t.is_empty()).collect();
    if toks.len() != 2 {
        return Err(parse_err(format!("first line has {} fields, expected two scores", toks.len()), raw));
    }
    let mut v = [0.0; 2];
    for (i, t) in toks.iter().enumerate() {
        match t.parse::<f64>() {
            Ok(x) if x.is_finite() && (1.0..=10.0).contains(&x) => v[i] = x,
            _ => return Err(parse_err(format!("score {t:?} is not a number in 1..=10"), raw)),
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mrhal_parsing_is_strict() {
        assert_eq!(parse_mrhal_ratings("Explanation...\nRatings: [5, 2, 6]", 3).unwrap(), vec![5, 2, 6]);
        assert_eq!(parse_mrhal_ratings("ratings:[0,1]", 2).unwrap(), vec![0, 1]);
        assert!(parse_mrhal_ratings("Ratings: [5, 2]", 3).is_err()); // wrong count
        assert!(parse_mrhal_ratings("Ratings: [5, N/A, 2]", 3).is_err()); // N/A is not 0
        assert!(parse_mrhal_ratings("Ratings: [7]", 1).is_err());
        assert!(parse_mrhal_ratings("Ratings: [1]\nRatings: [2]", 1).is_err());
        assert!(parse_mrhal_ratings("I rate it 5", 1).is_err());
        assert!(parse_mrhal_ratings("Ratings: [1.5]", 1).is_err());
    }

    #[test]
    fn mmhal_parsing_is_strict() {
        assert_eq!(parse_mmhal_rating("The answer is fine.\nRating: 4").unwrap(), 4);
        assert_eq!(parse_mmhal_rating("rating: 0\n").unwrap(), 0);
        assert!(parse_mmhal_rating("Rating: 4\nrating: 5").is_err());
        assert!(parse_mmhal_rating("no score").is_err());
        assert!(parse_mmhal_rating("Rating: 9").is_err());
        assert!(parse_mmhal_rating("Rating: 4.5").is_err());
        assert!(parse_mmhal_rating("Rating: -1").is_err());
    }

    #[test]
    fn llava_parsing_is_strict() {
        assert_eq!(parse_llava_scores("8 7\nAssistant 1 ...").unwrap(), [8.0, 7.0]);
        assert_eq!(parse_llava_scores("9, 6.5").unwrap(), [9.0, 6.5]);
        assert!(parse_llava_scores("Scores: 8 7").is_err());
        assert!(parse_llava_scores("8\n7").is_err());
        assert!(parse_llava_scores("8 11").is_err());
        assert!(parse_llava_scores("-1 -1").is_err());
    }
}
