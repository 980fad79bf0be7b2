//! The chunker's disagreements with spaCy's longest noun chunks (tests/spacy_chunks.rs), grouped
//! by kind, with both taggers' tags: the tool for tuning `np_tags` and the chunk grammar.
//!
//!     AMP_FIXTURES=... cargo run -p amp-data --example spacy_misses -- [SET] [KIND]
//!
//! SET is `captions`, `heldout` or `world` (default `captions`); KIND limits the listing to
//! `missed`, `false` or `boundary`. Each disagreement is classified on squeezed character spans:
//! a *boundary* error pairs a spaCy chunk with an overlapping chunk of ours; a *missed* chunk
//! overlaps none of ours, a *false* chunk none of spaCy's.
use amp_data::chunker::Chunker;
use amp_data::{BrillTagger, TaggerMode};
use serde_json::Value;
use std::collections::HashMap;

fn squeeze(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// `(start, end)` in the squeezed text of each span.
fn gold_spans(doc: &Value) -> Vec<(usize, usize, String)> {
    let text = doc["text"].as_str().unwrap();
    let toks = doc["tokens"].as_array().unwrap();
    doc["longest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sp| {
            let (s, e) = (
                sp[0].as_u64().unwrap() as usize,
                sp[1].as_u64().unwrap() as usize,
            );
            let a = toks[s]["idx"].as_u64().unwrap() as usize;
            let last = &toks[e - 1];
            let b = last["idx"].as_u64().unwrap() as usize + last["text"].as_str().unwrap().len();
            let sa = squeeze(&text[..a]).len();
            let t = squeeze(&text[a..b]);
            (sa, sa + t.len(), t)
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let set = args.first().map(String::as_str).unwrap_or("captions");
    let kind = args.get(1).cloned();
    let path = std::path::PathBuf::from(std::env::var("AMP_FIXTURES").expect("AMP_FIXTURES"))
        .join("spacy/spacy.json");
    let oracle: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let tagger = BrillTagger::from_installed(TaggerMode::Brill).unwrap();
    let chunker = Chunker::with_stop_list(tagger.clone(), Vec::<String>::new());
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let (mut tp, mut n_gold, mut n_pred) = (0usize, 0usize, 0usize);
    for doc in oracle["sets"][set].as_array().unwrap() {
        let text = doc["text"].as_str().unwrap();
        let sq = squeeze(text);
        let gold = gold_spans(doc);
        let mut from = 0;
        let pred: Vec<(usize, usize, String)> = chunker
            .chunk(text)
            .chunks
            .iter()
            .filter_map(|c| {
                let t = squeeze(&c.text);
                let k = sq[from..].find(&t)? + from;
                from = k;
                Some((k, k + t.len(), t))
            })
            .collect();
        let mut left: HashMap<&str, usize> = HashMap::new();
        for g in &gold {
            *left.entry(g.2.as_str()).or_default() += 1;
        }
        for p in &pred {
            if let Some(k) = left.get_mut(p.2.as_str()).filter(|k| **k > 0) {
                *k -= 1;
                tp += 1;
            }
        }
        n_gold += gold.len();
        n_pred += pred.len();
        let exact =
            |a: &(usize, usize, String), b: &(usize, usize, String)| a.0 == b.0 && a.1 == b.1;
        let overlap =
            |a: &(usize, usize, String), b: &(usize, usize, String)| a.0 < b.1 && b.0 < a.1;
        let mut lines = Vec::new();
        for g in &gold {
            if pred.iter().any(|p| exact(p, g)) {
                continue;
            }
            let ov: Vec<&String> = pred
                .iter()
                .filter(|p| overlap(p, g))
                .map(|p| &p.2)
                .collect();
            let k = if ov.is_empty() { "missed" } else { "boundary" };
            *counts.entry(k).or_default() += 1;
            lines.push((k, format!("spaCy {:?} ours {:?}", g.2, ov)));
        }
        for p in &pred {
            if gold.iter().any(|g| exact(p, g)) || gold.iter().any(|g| overlap(p, g)) {
                continue;
            }
            *counts.entry("false").or_default() += 1;
            lines.push(("false", format!("ours {:?}", p.2)));
        }
        let lines: Vec<_> = lines
            .into_iter()
            .filter(|(k, _)| kind.as_deref().is_none_or(|w| w == *k))
            .collect();
        if lines.is_empty() {
            continue;
        }
        println!("{text}");
        for (k, l) in lines {
            println!("  {k:>8}: {l}");
        }
        let spacy: Vec<String> = doc["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                format!(
                    "{}/{}",
                    t["text"].as_str().unwrap(),
                    t["tag"].as_str().unwrap()
                )
            })
            .collect();
        println!("     spaCy: {}", spacy.join(" "));
        for tokens in amp_data::tagger::tokenize(text) {
            let mut tags = tagger.tag_lexical(&tokens);
            amp_data::np_tags::retag(&tokens, &mut tags);
            let ours: Vec<String> = tokens
                .iter()
                .zip(&tags)
                .map(|(w, t)| format!("{w}/{t}"))
                .collect();
            println!("      ours: {}", ours.join(" "));
        }
    }
    let (p, r) = (tp as f64 / n_pred as f64, tp as f64 / n_gold as f64);
    println!(
        "{set}: P {p:.3} R {r:.3} F1 {:.3} (tp {tp}, spaCy {n_gold}, ours {n_pred}) {counts:?}",
        2.0 * p * r / (p + r)
    );
}
