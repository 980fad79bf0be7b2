//! Judge prompt templates, written in this project's own words, carrying each benchmark's
//! rubric (docs/paper-notes.md §5: the 0–6 informativeness × hallucination scale; §6: LLaVA-Bench's
//! pair of 1–10 scores). For exact comparability with published numbers, load the original
//! prompt with [`Template::from_file`] (and LLaVA's `rule.json`).
//!
//! Placeholders are `{{name}}`; unknown names are left untouched.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{BenchError, Result};

/// A two-message prompt (system may be empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    /// System message.
    #[serde(default)]
    pub system: String,
    /// User message with `{{placeholders}}`.
    pub user: String,
}

/// The shared 0–6 rubric (docs/paper-notes.md §5).
pub const RUBRIC_0_6: &str = "\
6 = very informative, with good analysis or reasoning, and no hallucination
5 = very informative, no hallucination
4 = somewhat informative, no hallucination
3 = not informative, no hallucination
2 = very informative, but with hallucination
1 = somewhat informative, with hallucination
0 = not informative, with hallucination";

const JUDGE_SYSTEM: &str = "You check answers that an AI assistant gave about an image for hallucinations. \
You cannot see the image. Instead you are told which objects it contains and given a standard answer \
written by a person who saw it. Treat both as the truth.";

impl Template {
    /// Default MRHal-Bench template: one 0–6 rating per round, `Ratings: [r1, ...]`.
    /// Placeholders: `image_content`, `rounds`, `n_rounds`.
    pub fn mrhal_default() -> Self {
        Template {
            system: JUDGE_SYSTEM.into(),
            user: format!(
                "Below is a conversation of {{{{n_rounds}}}} round(s) between a user and an AI assistant about one image.\n\
For each round you get the user's question, the standard answer and the assistant's answer.\n\n\
Judge every round separately. An answer hallucinates when it states something about the image that \
the object list or the standard answer contradicts, or that goes beyond what they support (for example \
an object, colour, count or position that is not there). Informativeness is how much correct, relevant \
content the answer gives. Rate each round on this scale:\n{RUBRIC_0_6}\n\n\
Objects in the image: {{{{image_content}}}}\n\n{{{{rounds}}}}\
First explain your judgement of each round in a sentence or two. Then end with a single line in exactly \
this form, with one integer per round in round order and nothing else on the line:\n\
Ratings: [r1, r2, ...]"
            ),
        }
    }

    /// Default MMHal-Bench template: exactly one `Rating: s`.
    /// Placeholders: `image_content`, `question`, `gt_answer`, `answer`.
    pub fn mmhal_default() -> Self {
        Template {
            system: JUDGE_SYSTEM.into(),
            user: format!(
                "Judge the assistant's answer to a question about an image. An answer hallucinates when it \
states something about the image that the object list or the standard answer contradicts, or that goes \
beyond what they support. Informativeness is how much correct, relevant content the answer gives.\n\n\
Rate the answer on this scale:\n{RUBRIC_0_6}\n\n\
Objects in the image: {{{{image_content}}}}\n\n\
Question: {{{{question}}}}\n\n\
Standard answer: {{{{gt_answer}}}}\n\n\
Assistant's answer: {{{{answer}}}}\n\n\
Explain your judgement briefly, then end with one line in exactly this form (and use the word \
\"rating\" with a colon nowhere else):\nRating: s\nwhere s is a single integer from 0 to 6."
            ),
        }
    }

    /// Default LLaVA-Bench template (LLaVA's review layout). Placeholders: `context`,
    /// `question`, `role`, `reference`, `answer`, `rule`.
    pub fn llava_default() -> Self {
        Template {
            system: "You are an impartial and exact reviewer of answers to questions about images.".into(),
            user: "[Context]\n{{context}}\n\n[Question]\n{{question}}\n\n\
[{{role}} 1]\n{{reference}}\n\n[End of {{role}} 1]\n\n\
[{{role}} 2]\n{{answer}}\n\n[End of {{role}} 2]\n\n[System]\n{{rule}}\n\n"
                .into(),
        }
    }

    /// The default LLaVA-Bench rule (used when no `rule.json` is given).
    pub fn llava_default_rule() -> &'static str {
        "Please review how well the two AI assistants above answered the user's question about the image \
described by the context (captions and object boxes). Score the helpfulness, relevance, accuracy and \
level of detail of each answer on a scale of 1 to 10, where higher is better. On the first line write \
only the two scores, for Assistant 1 and Assistant 2, separated by a space. From the second line on, \
explain your scores. Be objective: the order in which the answers appear must not influence you."
    }

    /// Loads a user template: a JSON object `{"system": ..., "user": ...}`, or plain text used
    /// as the user message (with an empty system message).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| BenchError::io(path, e))?;
        if text.trim_start().starts_with('{') {
            return serde_json::from_str(&text).map_err(|e| BenchError::Parse {
                path: path.into(),
                reason: format!("template JSON must be {{\"system\": string, \"user\": string}}: {e}"),
            });
        }
        Ok(Template { system: String::new(), user: text })
    }

    /// sha256 (hex) of the template, plus any extra text that shapes the prompt (a rule).
    pub fn hash(&self, extra: &str) -> String {
        let mut h = Sha256::new();
        for part in [self.system.as_str(), "\0", self.user.as_str(), "\0", extra] {
            h.update(part.as_bytes());
        }
        hex::encode(h.finalize())
    }

    /// Fills the placeholders.
    pub fn render(&self, vars: &[(&str, &str)]) -> (String, String) {
        let fill = |t: &str| {
            let mut s = t.to_string();
            for (k, v) in vars {
                s = s.replace(&format!("{{{{{k}}}}}"), v);
            }
            s
        };
        (fill(&self.system), fill(&self.user))
    }
}

/// Formats the MRHal rounds block.
pub fn mrhal_rounds_block(questions: &[String], references: &[String], answers: &[String]) -> String {
    let mut s = String::new();
    for (i, ((q, r), a)) in questions.iter().zip(references).zip(answers).enumerate() {
        s.push_str(&format!(
            "Round {}\nQuestion: {q}\nStandard answer: {r}\nAssistant's answer: {a}\n\n",
            i + 1
        ));
    }
    s
}

/// Joins an object list for the prompt ("(not provided)" when empty).
pub fn content_list(items: &[String]) -> String {
    if items.is_empty() {
        "(not provided)".into()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_hashes() {
        let t = Template::mrhal_default();
        assert!(t.user.contains("{{rounds}}") && t.user.contains("Ratings: [r1, r2, ...]"));
        let block = mrhal_rounds_block(&["q1".into()], &["r1".into()], &["a1".into()]);
        let (_, u) = t.render(&[("n_rounds", "1"), ("image_content", "cat"), ("rounds", &block)]);
        assert!(u.contains("Objects in the image: cat"));
        assert!(u.contains("Round 1\nQuestion: q1\nStandard answer: r1\nAssistant's answer: a1"));
        assert!(!u.contains("{{"));
        assert_ne!(t.hash(""), Template::mmhal_default().hash(""));
        assert_ne!(t.hash(""), t.hash("x"));
        let (_, u) = Template::mmhal_default().render(&[("question", "Q?")]);
        assert!(u.contains("Question: Q?"));
        assert!(Template::llava_default().render(&[("role", "Assistant")]).1.contains("[End of Assistant 2]"));
    }
}
