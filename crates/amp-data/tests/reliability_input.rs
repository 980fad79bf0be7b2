//! Issue 13, items 2 and 4 for the data pipeline: `amp check` never drops user input silently
//! (a truncated or newline-less last row, a JSON array, an empty file).
//! See docs/reliability.md.
use amp_data::cli::{self, CheckArgs};
use amp_data::pipeline::{Candidate, GeneratedRow};
use clap::Parser;
use mdpo::Turn;
use std::path::{Path, PathBuf};

#[derive(Parser)]
enum Cmd {
    Check(CheckArgs),
}

fn row(i: usize) -> GeneratedRow {
    let t = |f: &str, v: &str| Turn { from: f.into(), value: v.into() };
    GeneratedRow {
        id: format!("rec-{i}"),
        index: i,
        image: format!("images/{i}.png"),
        standard: vec![t("human", "<image>\nWhat is it?"), t("gpt", "A red car.")],
        candidates: vec![Candidate {
            source: "small".into(),
            conversation: vec![t("human", "<image>\nWhat is it?"), t("gpt", "A blue car.")],
            decoding: serde_json::Value::Null,
        }],
    }
}

/// Three generated rows, as `generate` writes them (one per line, each ending in a newline).
fn three_rows() -> String {
    (0..3).map(|i| serde_json::to_string(&row(i)).unwrap() + "\n").collect()
}

fn check(dir: &Path, generated: &Path) -> Result<usize, String> {
    let out = dir.join("out");
    let Cmd::Check(a) = Cmd::try_parse_from([
        "amp-data",
        "check",
        "--generated",
        generated.to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
        "--skip-check",
    ])
    .unwrap();
    cli::run_check(&a).map(|o| o.outputs.unwrap().stats.samples).map_err(|e| e.to_string())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_truncated_last_row_is_an_error_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let full = three_rows();
    let torn = &full[..full.len() - 20]; // the third row cut mid-record
    let p = write(dir.path(), "gen.jsonl", torn);
    let e = check(dir.path(), &p).expect_err("a truncated row must not be dropped silently");
    assert!(e.contains("gen.jsonl") && e.contains("line 3"), "{e}");
}

#[test]
fn a_complete_last_row_without_newline_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let full = three_rows();
    let p = write(dir.path(), "gen.jsonl", full.trim_end());
    assert_eq!(check(dir.path(), &p), Ok(3));
}

#[test]
fn a_json_array_is_refused_saying_what_was_expected() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<_> = (0..3).map(row).collect();
    // one line without a newline (what the issue saw: 0 samples, K = 0), and pretty-printed
    for text in [serde_json::to_string(&rows).unwrap(), serde_json::to_string_pretty(&rows).unwrap()] {
        let p = write(dir.path(), "gen.jsonl", &text);
        let e = check(dir.path(), &p).expect_err("an array must not give 0 samples");
        assert!(e.contains("gen.jsonl") && e.contains("JSON array") && e.contains("one JSON object per line"), "{e}");
        assert!(!dir.path().join("out/amp.json").exists(), "nothing is written for a refused input");
    }
}

#[test]
fn an_empty_input_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    for text in ["", "\n\n  \n"] {
        let p = write(dir.path(), "gen.jsonl", text);
        let e = check(dir.path(), &p).expect_err("an empty input must not write an empty amp.json");
        assert!(e.contains("gen.jsonl") && e.contains("empty"), "{e}");
    }
}

#[test]
fn a_malformed_middle_row_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let full = three_rows();
    let mut lines: Vec<&str> = full.lines().collect();
    lines[1] = "{\"id\": \"rec-1\", oops}";
    let p = write(dir.path(), "gen.jsonl", &(lines.join("\n") + "\n"));
    let e = check(dir.path(), &p).unwrap_err();
    assert!(e.contains("gen.jsonl") && e.contains("line 2"), "{e}");
}

