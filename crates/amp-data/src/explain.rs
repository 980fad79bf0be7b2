//! Auto-check diagnostics a user can read (AMP §3.1.3): per sample, the noun chunks and
//! sentences of the standard response and of every generated response, each standard entry's
//! best match with its cosine similarity (Eq. 1) and whether it counts for Acc (Eq. 2), and the
//! ranking before and after the re-ranking with every response's Acc and score.
//!
//! [`crate::pipeline::finalize`] writes one [`SampleDiagnostics`] per line to `diagnostics.jsonl`
//! (input order); `amp check --explain ID` prints one of them with [`render`].
use crate::autocheck::{EntryMatch, MetricPart};
use crate::pipeline::CheckedRow;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// One standard chunk against one response: its best chunk (local metric) and the best sentence
/// for the chunk's sentence (global metric).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkMatch {
    pub standard_chunk: String,
    /// The response's chunk with the highest cosine (`None`: the response has no chunk).
    pub chunk: Option<String>,
    pub chunk_similarity: f32,
    /// `chunk_similarity > τ` (counts for the local Acc).
    pub chunk_matched: bool,
    pub standard_sentence: String,
    pub sentence: Option<String>,
    pub sentence_similarity: f32,
    /// `sentence_similarity > τ` (counts for the global Acc).
    pub sentence_matched: bool,
}

/// One generated response of a sample, in final order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseDiagnostics {
    pub source: String,
    /// Level before the check (1 = best generated; 0 is the standard).
    pub initial_rank: usize,
    /// Level after the check.
    pub final_rank: usize,
    /// Final Acc and score (mean of local and global); `None` when the check did not run.
    pub acc: Option<f32>,
    pub score: Option<f32>,
    pub local: Option<MetricPart>,
    pub global: Option<MetricPart>,
    /// The response's maximal noun chunks.
    pub chunks: Vec<String>,
    /// One entry per standard chunk (empty when the sample was not judged).
    pub matches: Vec<ChunkMatch>,
    /// How the expert decoded it, when reported.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub decoding: serde_json::Value,
}

/// One line of `diagnostics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleDiagnostics {
    pub id: String,
    pub index: usize,
    pub image: String,
    /// Whether the check judged the sample (the standard had chunks).
    pub checked: bool,
    pub changed: bool,
    pub ties: usize,
    pub standard_chunks: Vec<String>,
    /// The sentence of each standard chunk.
    pub standard_sentences: Vec<String>,
    /// Generated responses, final order (best first).
    pub responses: Vec<ResponseDiagnostics>,
}

impl crate::pipeline::Keyed for SampleDiagnostics {
    fn key(&self) -> &str {
        &self.id
    }
}

fn at(texts: &[String], m: &EntryMatch) -> Option<String> {
    m.best.and_then(|n| texts.get(n).cloned())
}

impl SampleDiagnostics {
    /// The diagnostics of a checked row.
    pub fn from_row(r: &CheckedRow) -> Self {
        let responses = r
            .responses
            .iter()
            .map(|x| {
                let matches = match &x.matches {
                    Some(m) => r
                        .standard_chunk_texts
                        .iter()
                        .enumerate()
                        .map(|(i, sc)| {
                            let (l, g) = (
                                m.local.get(i).copied().unwrap_or_default(),
                                m.global.get(i).copied().unwrap_or_default(),
                            );
                            ChunkMatch {
                                standard_chunk: sc.clone(),
                                chunk: at(&x.chunks, &l),
                                chunk_similarity: l.similarity,
                                chunk_matched: l.matched,
                                standard_sentence: r
                                    .standard_sentence_texts
                                    .get(i)
                                    .cloned()
                                    .unwrap_or_default(),
                                sentence: at(&x.sentences, &g),
                                sentence_similarity: g.similarity,
                                sentence_matched: g.matched,
                            }
                        })
                        .collect(),
                    None => Vec::new(),
                };
                ResponseDiagnostics {
                    source: x.source.clone(),
                    initial_rank: x.initial_rank,
                    final_rank: x.final_rank,
                    acc: x.check.map(|c| c.acc),
                    score: x.check.map(|c| c.score),
                    local: x.check.map(|c| c.local),
                    global: x.check.map(|c| c.global),
                    chunks: x.chunks.clone(),
                    matches,
                    decoding: x.decoding.clone(),
                }
            })
            .collect();
        SampleDiagnostics {
            id: r.id.clone(),
            index: r.index,
            image: r.image.clone(),
            checked: r.checked,
            changed: r.changed,
            ties: r.ties,
            standard_chunks: r.standard_chunk_texts.clone(),
            standard_sentences: r.standard_sentence_texts.clone(),
            responses,
        }
    }
}

/// Shortens `s` to at most `w` characters (an ellipsis marks the cut).
fn fit(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(w.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn pad(s: &str, w: usize) -> String {
    let s = fit(s, w);
    let n = s.chars().count();
    format!("{s}{}", " ".repeat(w - n))
}

fn num(v: Option<f32>) -> String {
    v.map_or("-".into(), |x| format!("{x:.3}"))
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// One sample as a plain-text table for a terminal (columns cut to fit about 110 characters).
pub fn render(d: &SampleDiagnostics) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "sample {} (input position {}; image {})",
        d.id, d.index, d.image
    );
    let _ = writeln!(
        o,
        "judged by the auto-check: {}; ranking changed: {}; adjacent exact ties: {}",
        yes(d.checked),
        yes(d.changed),
        d.ties
    );
    let _ = writeln!(
        o,
        "\nstandard response: {} noun chunk(s)",
        d.standard_chunks.len()
    );
    for (i, c) in d.standard_chunks.iter().enumerate() {
        let s = d
            .standard_sentences
            .get(i)
            .map(String::as_str)
            .unwrap_or("");
        let _ = writeln!(o, "  S{:<3} {}  in \"{}\"", i + 1, pad(c, 32), fit(s, 64));
    }
    let mut initial: Vec<&ResponseDiagnostics> = d.responses.iter().collect();
    initial.sort_by_key(|r| r.initial_rank);
    let cell = |r: &ResponseDiagnostics| {
        format!(
            "{} Acc {} score {}",
            pad(&r.source, 16),
            num(r.acc),
            num(r.score)
        )
    };
    let _ = writeln!(
        o,
        "\nranking   {}  {}",
        pad("before (initial order)", 42),
        "after (auto-check)"
    );
    let _ = writeln!(o, "level 0   {}  standard", pad("standard", 42));
    for (k, (b, a)) in initial.iter().zip(&d.responses).enumerate() {
        let _ = writeln!(o, "level {:<3} {}  {}", k + 1, pad(&cell(b), 42), cell(a));
    }
    for r in &d.responses {
        let part = |p: Option<MetricPart>| {
            p.map_or("-".into(), |p| {
                format!("Acc {:.3} score {:.3}", p.acc, p.score)
            })
        };
        let _ = writeln!(
            o,
            "\nresponse {} (level {} -> {}): Acc {} score {} (local: {}; global: {}); {} noun chunk(s)",
            r.source,
            r.initial_rank,
            r.final_rank,
            num(r.acc),
            num(r.score),
            part(r.local),
            part(r.global),
            r.chunks.len()
        );
        if r.matches.is_empty() {
            let _ = writeln!(
                o,
                "  chunks: {}",
                if r.chunks.is_empty() {
                    "(none)".into()
                } else {
                    r.chunks.join(" | ")
                }
            );
            continue;
        }
        let _ = writeln!(
            o,
            "  {}  {}  {:>6} {:>5}  {:>12} {:>5}",
            pad("standard chunk", 30),
            pad("best chunk of the response", 30),
            "cos",
            "match",
            "sentence cos",
            "match"
        );
        for m in &r.matches {
            let _ = writeln!(
                o,
                "  {}  {}  {:>6.3} {:>5}  {:>12.3} {:>5}",
                pad(&m.standard_chunk, 30),
                pad(m.chunk.as_deref().unwrap_or("(no chunk)"), 30),
                m.chunk_similarity,
                yes(m.chunk_matched),
                m.sentence_similarity,
                yes(m.sentence_matched)
            );
        }
        let mut unpicked: Vec<&str> = Vec::new();
        for c in &r.chunks {
            let picked = r
                .matches
                .iter()
                .any(|m| m.chunk.as_deref() == Some(c.as_str()));
            if !picked && !unpicked.contains(&c.as_str()) {
                unpicked.push(c);
            }
        }
        if !unpicked.is_empty() {
            let _ = writeln!(
                o,
                "  chunks of the response no standard chunk matched best: {}",
                unpicked.join(" | ")
            );
        }
    }
    o
}
