//! `check` writes per-sample diagnostics (chunks, best matches, similarities, the ranking before
//! and after) and `check --explain ID` prints one; every figure is recomputed here from the
//! embedder itself, so a diagnostic that disagrees with the check fails.
mod common;

use amp_data::autocheck::SentenceEmbedder;
use amp_data::cli::{self, CheckArgs};
use amp_data::explain::SampleDiagnostics;
use amp_data::generate::{Expert, Generator};
use amp_data::pipeline::{self, Shard};
use amp_data::{load_llava, Result};
use clap::Parser;
use common::BagOfWords;
use mdpo::Turn;
use std::path::Path;
use std::sync::Arc;

/// TEST DOUBLE: answers every question with a fixed caption.
struct Fixed(&'static str, &'static str);

impl Generator for Fixed {
    fn name(&self) -> String {
        self.0.into()
    }
    fn respond(&self, _: &Path, _: &[Turn]) -> Result<String> {
        Ok(self.1.into())
    }
}

#[derive(Parser)]
enum Cmd {
    Check(CheckArgs),
}

fn check_args(args: &[&str]) -> CheckArgs {
    let Cmd::Check(a) = Cmd::try_parse_from(
        ["amp-data", "check"]
            .into_iter()
            .chain(args.iter().copied()),
    )
    .unwrap();
    a
}

fn cos(a: &str, b: &str) -> f32 {
    let v = BagOfWords.embed(&[a.to_string(), b.to_string()]).unwrap();
    v[0].iter().zip(&v[1]).map(|(x, y)| x * y).sum()
}

#[test]
fn diagnostics_agree_with_the_check_and_explain_prints_one_sample() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = common::write_llava(&d.join("data"), 3);
    // The weaker expert first: the check must swap them.
    let experts = vec![
        Expert {
            name: "first".into(),
            generator: Arc::new(Fixed("first", "A blue boat floats on a lake.")),
        },
        Expert {
            name: "second".into(),
            generator: Arc::new(Fixed("second", "A red car is parked near a green tree.")),
        },
    ];
    let gen = d.join("gen.jsonl");
    pipeline::generate(
        &load_llava(&input, None).unwrap(),
        &experts,
        &gen,
        Shard::ALL,
        1,
    )
    .unwrap();
    let out = d.join("out");
    let (gen_s, out_s) = (gen.to_str().unwrap(), out.to_str().unwrap());
    let o = cli::run_check_with(
        &check_args(&["--generated", gen_s, "--out-dir", out_s]),
        &BagOfWords,
        &BagOfWords,
    )
    .unwrap()
    .outputs
    .unwrap();
    assert_eq!(o.diagnostics_jsonl, out.join("diagnostics.jsonl"));
    let diags: Vec<SampleDiagnostics> = pipeline::load_rows(&o.diagnostics_jsonl).unwrap();
    assert_eq!(
        diags.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["rec-0", "rec-1", "rec-2"]
    );
    let meta: Vec<serde_json::Value> = std::fs::read_to_string(&o.meta_jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let tau = 0.85;
    for s in &diags {
        assert!(
            s.checked && s.changed,
            "{}: the car answer must move above the boat answer",
            s.id
        );
        assert!(!s.standard_chunks.is_empty());
        assert_eq!(s.standard_chunks.len(), s.standard_sentences.len());
        let order: Vec<(&str, usize, usize)> = s
            .responses
            .iter()
            .map(|r| (r.source.as_str(), r.initial_rank, r.final_rank))
            .collect();
        assert_eq!(order, [("second", 2, 1), ("first", 1, 2)]);
        for r in &s.responses {
            assert_eq!(r.matches.len(), s.standard_chunks.len());
            let (mut hit_l, mut sum_l, mut hit_g, mut sum_g) = (0usize, 0f64, 0usize, 0f64);
            for (m, std_chunk) in r.matches.iter().zip(&s.standard_chunks) {
                assert_eq!(&m.standard_chunk, std_chunk);
                // The reported best chunk is a chunk of the response and the maximum over them.
                let best = m.chunk.as_deref().unwrap();
                assert!(
                    r.chunks.iter().any(|c| c == best),
                    "{best:?} not among {:?}",
                    r.chunks
                );
                let all: Vec<f32> = r.chunks.iter().map(|c| cos(std_chunk, c)).collect();
                let max = all.iter().copied().fold(f32::MIN, f32::max);
                assert!((m.chunk_similarity - cos(std_chunk, best)).abs() < 1e-5);
                assert!(
                    (m.chunk_similarity - max).abs() < 1e-5,
                    "{} vs max {max}",
                    m.chunk_similarity
                );
                assert_eq!(m.chunk_matched, m.chunk_similarity > tau);
                let sent = m.sentence.as_deref().unwrap();
                assert!((m.sentence_similarity - cos(&m.standard_sentence, sent)).abs() < 1e-5);
                assert_eq!(m.sentence_matched, m.sentence_similarity > tau);
                hit_l += usize::from(m.chunk_matched);
                sum_l += m.chunk_similarity as f64;
                hit_g += usize::from(m.sentence_matched);
                sum_g += m.sentence_similarity as f64;
            }
            // Eq. 2 from the diagnostics reproduces the Acc and score the ranking used.
            let n = r.matches.len() as f32;
            let (local, global) = (r.local.unwrap(), r.global.unwrap());
            assert!(
                (local.acc - hit_l as f32 / n).abs() < 1e-6
                    && (global.acc - hit_g as f32 / n).abs() < 1e-6
            );
            assert!((local.score - (sum_l / n as f64) as f32).abs() < 1e-5);
            assert!((global.score - (sum_g / n as f64) as f32).abs() < 1e-5);
            assert!((r.acc.unwrap() - (local.acc + global.acc) / 2.0).abs() < 1e-6);
            let m = meta
                .iter()
                .find(|m| m["id"] == s.id.as_str() && m["source"] == r.source.as_str())
                .unwrap();
            assert!((m["acc"].as_f64().unwrap() as f32 - r.acc.unwrap()).abs() < 1e-6);
            assert_eq!(m["final_rank"], r.final_rank);
        }
        assert!(s.responses[0].acc > s.responses[1].acc);
    }

    // --explain alone reads the diagnostics and prints a table naming every piece.
    let table = cli::run_explain(&out, "rec-1").unwrap();
    let s1 = &diags[1];
    for needle in [
        "sample rec-1",
        "before (initial order)",
        "after (auto-check)",
        "response second (level 2 -> 1)",
    ] {
        assert!(table.contains(needle), "missing {needle:?} in\n{table}");
    }
    for c in &s1.standard_chunks {
        assert!(
            table.contains(c.as_str()),
            "standard chunk {c:?} missing in\n{table}"
        );
    }
    let line = table.lines().find(|l| l.starts_with("level 1")).unwrap();
    assert!(
        line.find("first").unwrap() < line.find("second").unwrap(),
        "{line}"
    );
    assert!(table.lines().all(|l| l.chars().count() <= 140), "{table}");
    let a = check_args(&["--out-dir", out_s, "--explain", "rec-1"]);
    assert!(a.generated.is_empty());
    cli::run_check(&a).unwrap();
    let e = cli::run_explain(&out, "nope").unwrap_err().to_string();
    assert!(e.contains("nope") && e.contains("diagnostics.jsonl"), "{e}");
    let e = cli::run_explain(&d.join("empty"), "rec-1")
        .unwrap_err()
        .to_string();
    assert!(e.contains("run `amp check`"), "{e}");
    // Neither --generated nor --explain: clap refuses.
    assert!(Cmd::try_parse_from(["amp-data", "check", "--out-dir", out_s]).is_err());
}
