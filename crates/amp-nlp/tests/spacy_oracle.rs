//! The ported pipeline against spaCy itself: `tests/oracles/gen_spacy.py` runs spaCy 3.8 with
//! en_core_web_sm 3.8.0 over amp-data's noun-chunk corpus (captions: the chunker's tuning set,
//! heldout, world: the demo world's text; plus amp-nlp's own edge cases, `tests/data/stress.txt`:
//! contractions, abbreviations, URLs, numbers, quotes, emoticons, unicode, odd whitespace) and records tokens, tags, POS, deps, heads, noun chunks
//! and the longest noun chunks (AMP §3.1.3). Here the Rust port parses the same texts from the same
//! model directory and is scored on token boundaries, tags and heads (issue 16's bar: >= 99%) and
//! on exact-match F1 of the longest noun chunks (issue 16's bar: >= 0.95).
//!
//! Needs `AMP_FIXTURES` (with `spacy/spacy.json`) and the model directory (`AMP_SPACY_MODEL`, as
//! exported by `scripts/setup.sh`); without them the test prints why it skipped.
use amp_nlp::{Doc, Pipeline};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;

fn inputs() -> Option<(Value, PathBuf)> {
    let Ok(fixtures) = std::env::var("AMP_FIXTURES") else {
        println!(
            "skipped: AMP_FIXTURES not set (run scripts/test.sh, which generates the spaCy oracle)"
        );
        return None;
    };
    let path = PathBuf::from(fixtures).join("spacy/spacy.json");
    let Ok(raw) = std::fs::read_to_string(&path) else {
        println!(
            "skipped: {} is missing (run `$AMP_PYTHON tests/oracles/gen_spacy.py $AMP_FIXTURES/spacy`)",
            path.display()
        );
        return None;
    };
    let Ok(model) = std::env::var("AMP_SPACY_MODEL") else {
        println!("skipped: AMP_SPACY_MODEL not set (source scripts/setup.sh: it points it at en_core_web_sm's directory)");
        return None;
    };
    let model = PathBuf::from(model);
    if !model.join("config.cfg").exists() {
        println!(
            "skipped: AMP_SPACY_MODEL={} has no config.cfg",
            model.display()
        );
        return None;
    }
    Some((serde_json::from_str(&raw).unwrap(), model))
}

#[derive(Default, Debug)]
struct Counts {
    docs: usize,
    docs_same_tokens: usize,
    tokens: usize,
    tokens_matched: usize,
    /// over docs with identical tokenisation
    compared: usize,
    tag: usize,
    pos: usize,
    head: usize,
    dep: usize,
    longest: Prf,
    plain: Prf,
}

#[derive(Default, Debug, Clone, Copy)]
struct Prf {
    gold: usize,
    pred: usize,
    hit: usize,
}

impl Prf {
    fn f1(&self) -> f64 {
        if self.gold + self.pred == 0 {
            return 1.0;
        }
        2.0 * self.hit as f64 / (self.gold + self.pred) as f64
    }
}

fn squeeze(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Exact matches between two multisets of chunk strings.
fn score(p: &mut Prf, gold: &[String], pred: &[String]) {
    let mut left: HashMap<&str, usize> = HashMap::new();
    for g in gold {
        *left.entry(g).or_default() += 1;
    }
    for x in pred {
        if let Some(n) = left.get_mut(x.as_str()) {
            if *n > 0 {
                *n -= 1;
                p.hit += 1;
            }
        }
    }
    p.gold += gold.len();
    p.pred += pred.len();
}

fn spans_text(text: &str, toks: &[Value], spans: &Value) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    spans
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let (a, b) = (
                s[0].as_u64().unwrap() as usize,
                s[1].as_u64().unwrap() as usize,
            );
            let start = toks[a]["idx"].as_u64().unwrap() as usize;
            let last = &toks[b - 1];
            let end = last["idx"].as_u64().unwrap() as usize
                + last["text"].as_str().unwrap().chars().count();
            squeeze(&chars[start..end].iter().collect::<String>())
        })
        .collect()
}

fn measure(nlp: &Pipeline, docs: &[Value], show: usize) -> Counts {
    let mut c = Counts::default();
    let mut shown = 0;
    for d in docs {
        let text = d["text"].as_str().unwrap();
        let doc: Doc = nlp.parse(text);
        let gold = d["tokens"].as_array().unwrap();
        c.docs += 1;
        c.tokens += gold.len();
        let ours: HashMap<(usize, &str), usize> = doc
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| ((t.idx, t.text.as_str()), i))
            .collect();
        c.tokens_matched += gold
            .iter()
            .filter(|g| {
                ours.contains_key(&(
                    g["idx"].as_u64().unwrap() as usize,
                    g["text"].as_str().unwrap(),
                ))
            })
            .count();
        let same = gold.len() == doc.tokens.len()
            && gold.iter().zip(&doc.tokens).all(|(g, t)| {
                g["text"].as_str() == Some(t.text.as_str())
                    && g["idx"].as_u64() == Some(t.idx as u64)
            });
        if same {
            c.docs_same_tokens += 1;
            let mut diff = Vec::new();
            for (i, (g, t)) in gold.iter().zip(&doc.tokens).enumerate() {
                c.compared += 1;
                let tag = g["tag"].as_str() == Some(t.tag.as_str());
                let head = g["head"].as_u64() == Some(t.head as u64);
                c.tag += tag as usize;
                c.pos += (g["pos"].as_str() == Some(t.pos.as_str())) as usize;
                c.head += head as usize;
                c.dep += (g["dep"].as_str() == Some(t.dep.as_str())) as usize;
                if !tag || !head {
                    diff.push(format!(
                        "{i}:{} tag {}/{} head {}/{} dep {}/{}",
                        t.text, g["tag"], t.tag, g["head"], t.head, g["dep"], t.dep
                    ));
                }
            }
            if !diff.is_empty() && shown < show {
                shown += 1;
                println!("  {text}\n    {}", diff.join("\n    "));
            }
        } else if shown < show {
            shown += 1;
            let g: Vec<&str> = gold.iter().map(|g| g["text"].as_str().unwrap()).collect();
            let o: Vec<&str> = doc.tokens.iter().map(|t| t.text.as_str()).collect();
            println!("  tokens differ: {g:?}\n             ours {o:?}");
        }
        let want_longest = spans_text(text, gold, &d["longest"]);
        let want_plain = spans_text(text, gold, &d["noun_chunks"]);
        let got_longest: Vec<String> = doc
            .longest_noun_chunks()
            .iter()
            .map(|&(s, e)| squeeze(&doc.span_text(s, e)))
            .collect();
        let got_plain: Vec<String> = doc
            .noun_chunks()
            .iter()
            .map(|&(s, e)| squeeze(&doc.span_text(s, e)))
            .collect();
        score(&mut c.longest, &want_longest, &got_longest);
        score(&mut c.plain, &want_plain, &got_plain);
    }
    c
}

#[test]
fn port_agrees_with_spacy_on_the_corpus() {
    let Some((oracle, model)) = inputs() else {
        return;
    };
    let t0 = std::time::Instant::now();
    let nlp = Pipeline::load(&model).unwrap();
    println!(
        "oracle: spaCy {} {}; port loaded from {} in {:.2?}",
        oracle["spacy"],
        oracle["model"],
        model.display(),
        t0.elapsed()
    );
    let show: usize = std::env::var("AMP_NLP_SHOW")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // Floors just under the measured figures (all 1.0 at the commit that added them, see
    // docs/benchmarks.md "Noun chunks against spaCy"): identical tokens; tags, heads and labels may
    // lose about one token per set, the longest noun chunks' F1 about one chunk.
    let floors = [
        ("captions", 1.0, 0.999, 0.999, 0.995),
        ("heldout", 1.0, 0.999, 0.999, 0.995),
        ("world", 1.0, 0.999, 0.999, 0.995),
        ("stress", 1.0, 0.995, 0.995, 0.99),
    ];
    let mut failures = Vec::new();
    for (set, tok_floor, tag_floor, head_floor, f1_floor) in floors {
        let docs = oracle["sets"][set].as_array().unwrap();
        let t = std::time::Instant::now();
        let c = measure(&nlp, docs, show);
        let el = t.elapsed();
        let frac = |a: usize, b: usize| a as f64 / b.max(1) as f64;
        let tok = frac(c.tokens_matched, c.tokens);
        let (tag, head) = (frac(c.tag, c.compared), frac(c.head, c.compared));
        println!(
            "{set:>8} ({} texts, {} tokens, {:.0} texts/s): tokens {:.4} ({}/{} texts identical) | tag {:.4} pos {:.4} head {:.4} dep {:.4} | longest noun chunk F1 {:.4} (P {:.4} R {:.4}) | noun_chunks F1 {:.4}",
            c.docs,
            c.tokens,
            c.docs as f64 / el.as_secs_f64(),
            tok,
            c.docs_same_tokens,
            c.docs,
            tag,
            frac(c.pos, c.compared),
            head,
            frac(c.dep, c.compared),
            c.longest.f1(),
            frac(c.longest.hit, c.longest.pred),
            frac(c.longest.hit, c.longest.gold),
            c.plain.f1(),
        );
        let dep = frac(c.dep, c.compared);
        for (what, got, floor) in [
            ("tokens", tok, tok_floor),
            ("tags", tag, tag_floor),
            ("heads", head, head_floor),
            ("dep labels", dep, head_floor),
            ("longest noun chunk F1", c.longest.f1(), f1_floor),
            ("noun_chunks F1", c.plain.f1(), f1_floor),
        ] {
            if got < floor {
                failures.push(format!("{set}: {what} {got:.4} < {floor}"));
            }
        }
    }
    assert!(failures.is_empty(), "below the floors: {failures:?}");
}

/// The tok2vec output itself: the oracle stores spaCy's `doc.tensor` for the first docs of each
/// set; the port's token vectors must match them to float32 rounding (the sums run in another
/// order than numpy's BLAS).
#[test]
fn tok2vec_matches_spacy_doc_tensor() {
    let Some((oracle, model)) = inputs() else {
        return;
    };
    let nlp = Pipeline::load(&model).unwrap();
    let mut worst = 0f32;
    let mut rows = 0;
    for set in ["captions", "heldout", "world"] {
        for d in oracle["sets"][set].as_array().unwrap() {
            let Some(tensor) = d.get("tensor").and_then(Value::as_array) else {
                continue;
            };
            let ours = nlp.tokvecs(d["text"].as_str().unwrap());
            assert_eq!(ours.len(), tensor.len(), "{}", d["text"]);
            for (o, t) in ours.iter().zip(tensor) {
                let t = t.as_array().unwrap();
                assert_eq!(o.len(), t.len());
                for (a, b) in o.iter().zip(t) {
                    worst = worst.max((a - b.as_f64().unwrap() as f32).abs());
                }
                rows += 1;
            }
        }
    }
    if rows == 0 {
        println!("skipped: the oracle fixture has no \"tensor\" (regenerate it with tests/oracles/gen_spacy.py)");
        return;
    }
    println!("tok2vec: {rows} token vectors, max |port - spaCy| = {worst:.2e}");
    assert!(
        worst < 1e-5,
        "tok2vec differs from spaCy's doc.tensor by {worst}"
    );
}

/// `parse_many` batches docs through tok2vec, the tagger and the parser's precomputation (thinc's
/// `with_array` layout: one padding block between docs); every doc must come out exactly as
/// `parse` gives it alone, empty and whitespace-only texts included.
#[test]
fn parse_many_gives_each_doc_as_parse_does() {
    let Some((oracle, model)) = inputs() else {
        return;
    };
    let nlp = Pipeline::load(&model).unwrap();
    let mut texts: Vec<&str> = Vec::new();
    for set in ["captions", "heldout", "world", "stress"] {
        for d in oracle["sets"][set].as_array().unwrap() {
            texts.push(d["text"].as_str().unwrap());
        }
    }
    assert!(
        texts.len() > 100,
        "the oracle corpus has {} texts",
        texts.len()
    );
    texts.insert(3, "");
    texts.insert(11, "  \n ");
    let alone: Vec<_> = texts.iter().map(|t| nlp.parse(t)).collect();
    for size in [2, 7, 64] {
        let batched: Vec<_> = texts.chunks(size).flat_map(|c| nlp.parse_many(c)).collect();
        assert_eq!(batched.len(), alone.len());
        for (i, (b, a)) in batched.iter().zip(&alone).enumerate() {
            assert!(
                b == a,
                "batch size {size}: text {i} ({:?}) parses differently",
                texts[i]
            );
        }
    }
}
