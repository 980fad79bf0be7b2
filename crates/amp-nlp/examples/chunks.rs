//! Parses lines with the ported en_core_web_sm and prints each line's tokens (text/TAG/POS/dep
//! ->head) and longest noun chunks; reports the throughput on stderr.
//!
//! `cargo run --release -p amp-nlp --example chunks -- MODEL_DIR < texts.txt`
use std::io::BufRead;

fn main() {
    let dir = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("AMP_SPACY_MODEL").ok())
        .expect("usage: chunks MODEL_DIR < texts (or set AMP_SPACY_MODEL)");
    let nlp = amp_nlp::Pipeline::load(dir.as_ref()).unwrap_or_else(|e| panic!("{e}"));
    let quiet = std::env::var("QUIET").is_ok();
    let t = std::time::Instant::now();
    let (mut texts, mut tokens) = (0usize, 0usize);
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("stdin");
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if std::env::var("TOKENIZE_ONLY").is_ok() {
            texts += 1;
            tokens += nlp.tokenizer.tokenize(&line).len();
            continue;
        }
        let doc = nlp.parse(&line);
        texts += 1;
        tokens += doc.tokens.len();
        if quiet {
            continue;
        }
        let toks: Vec<String> = doc
            .tokens
            .iter()
            .map(|t| format!("{}/{}/{}/{}->{}", t.text, t.tag, t.pos, t.dep, t.head))
            .collect();
        println!("{}", toks.join(" "));
        let chunks: Vec<String> = doc
            .longest_noun_chunks()
            .iter()
            .map(|&(s, e)| doc.span_text(s, e))
            .collect();
        println!("  longest noun chunks: {chunks:?}");
    }
    let el = t.elapsed().as_secs_f64();
    eprintln!(
        "{texts} texts, {tokens} tokens in {el:.3} s: {:.0} texts/s, {:.0} tokens/s (one thread)",
        texts as f64 / el,
        tokens as f64 / el
    );
}
