//! `amp train` → `amp eval answer-local --adapter` / `amp generate --local-expert --adapter` on
//! the tiny llava-hf fixtures: a trained run evaluates in one command, the merged and unmerged
//! adapter answer token for token alike, the run's seed fixes the adapter bytes, and the shared
//! `--device`/`--dtype` flags are accepted (bf16 on the CPU) or refused with a named error.
mod common;
use common::{fixtures, write_amp_file};
use std::path::{Path, PathBuf};
use std::process::Command;

fn amp(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_amp")).args(args).output().expect("run amp")
}

fn ok(o: std::process::Output) -> std::process::Output {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

/// Trains 3 steps with a large learning rate (so the adapter really changes the model) and
/// returns the run directory.
fn train(d: &Path, name: &str, seed: &str, dropout: &str, extra: &[&str]) -> PathBuf {
    let llava = fixtures();
    let data = d.join("amp.json");
    write_amp_file(&data, &llava.join("image.png"), 4);
    let run = d.join(name);
    let mut args = vec![
        "train", "--model", llava.join("hf").to_str().unwrap().to_owned().leak(), "--data", data.to_str().unwrap().to_owned().leak(),
        "--levels", "3", "--max-steps", "3", "--batch-size", "2", "--lora-r", "4", "--lora-dropout", dropout, "--lr", "0.05",
        "--warmup-steps", "0", "--seed", seed, "--output-dir", run.to_str().unwrap().to_owned().leak(),
    ];
    args.extend(extra);
    ok(amp(&args));
    run
}

fn adapter_bytes(run: &Path) -> Vec<u8> {
    std::fs::read(run.join("adapter/adapter_model.safetensors")).unwrap()
}

#[test]
fn same_seed_same_adapter_bytes_other_seed_other_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let a = train(dir.path(), "a", "7", "0.1", &[]);
    let b = train(dir.path(), "b", "7", "0.1", &[]);
    let c = train(dir.path(), "c", "8", "0.1", &[]);
    assert_eq!(adapter_bytes(&a), adapter_bytes(&b), "--seed 7 twice");
    assert_ne!(adapter_bytes(&a), adapter_bytes(&c), "--seed 7 vs 8");
    // gradient checkpointing changes the memory, not the gradients: the first step's loss and
    // gradient norm agree (later steps diverge by AdamW's sign-like amplification of rounding
    // in near-zero gradient entries, so the adapters are not compared byte for byte; dropout
    // masks are drawn per layer under checkpointing, so compare without dropout)
    let p = train(dir.path(), "p", "7", "0", &["--no-grad-checkpoint"]);
    let q = train(dir.path(), "q", "7", "0", &["--grad-checkpoint"]);
    let first = |run: &Path| -> (f64, f64) {
        let m = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
        let row: serde_json::Value = serde_json::from_str(m.lines().next().unwrap()).unwrap();
        (row["loss"].as_f64().unwrap(), row["grad_norm"].as_f64().unwrap())
    };
    let ((lp, gp), (lq, gq)) = (first(&p), first(&q));
    assert!(gp > 0. && (lp - lq).abs() <= 1e-6 * lp.abs().max(1.), "loss {lp} vs {lq}");
    assert!((gp - gq).abs() <= 1e-5 * gp, "grad norm {gp} vs {gq}");
}

#[test]
fn a_trained_run_evaluates_in_one_command_merged_equals_unmerged() {
    let llava = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = train(d, "run", "7", "0.1", &[]);
    let adapter = run.join("adapter");
    let world = d.join("w");
    ok(amp(&["world", "--preset", "tiny", "--out", world.to_str().unwrap()]));
    let answer = |out: &str, extra: &[&str]| -> Vec<String> {
        let out = d.join(out);
        let mut args = vec![
            "eval", "answer-local", "--bench", "mrhal", "--data", world.join("eval_gt.json").to_str().unwrap().to_owned().leak(),
            "--images", world.join("images").to_str().unwrap().to_owned().leak(), "--out", out.to_str().unwrap().to_owned().leak(),
            "--model", llava.join("hf").to_str().unwrap().to_owned().leak(), "--num-beams", "1", "--temperature", "0",
            "--max-new-tokens", "6", "--limit", "2",
        ];
        args.extend(extra);
        ok(amp(&args));
        std::fs::read_to_string(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["answer"].to_string())
            .collect()
    };
    let a = adapter.to_str().unwrap();
    let unmerged = answer("unmerged.jsonl", &["--adapter", a]);
    let merged = answer("merged.jsonl", &["--adapter", a, "--merge-adapter"]);
    assert!(unmerged.len() >= 4, "{unmerged:?}");
    assert_eq!(unmerged, merged, "merged and unmerged adapters answer alike");
    // bf16 on the CPU through the shared flags
    let bf16 = answer("bf16.jsonl", &["--adapter", a, "--dtype", "bf16"]);
    assert_eq!(bf16.len(), unmerged.len());
    // named errors
    let o = amp(&["eval", "answer-local", "--bench", "mrhal", "--data", "x.json", "--out", "o.jsonl", "--model", "m", "--dtype", "int4"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--dtype \"int4\""));
    let o = amp(&["eval", "answer-local", "--bench", "mrhal", "--data", "x.json", "--out", "o.jsonl", "--model", "m", "--merge-adapter"]);
    assert!(!o.status.success(), "--merge-adapter needs --adapter");

    // generate --local-expert with the adapter, unmerged and merged: the same candidates
    let image = llava.join("image.png");
    let input = d.join("llava.json");
    let records = serde_json::json!([{"id": "a", "image": image, "conversations": [
        {"from": "human", "value": "<image>\nDescribe the picture."}, {"from": "gpt", "value": "A red square."}]}]);
    std::fs::write(&input, records.to_string()).unwrap();
    let expert = format!("tuned={}", llava.join("hf").display());
    let gen = |out: &str, extra: &[&str]| -> String {
        let out = d.join(out);
        let mut args = vec![
            "generate", "--input", input.to_str().unwrap().to_owned().leak(), "--out", out.to_str().unwrap().to_owned().leak(),
            "--local-expert", expert.as_str().to_owned().leak(), "--levels", "2", "--num-beams", "1", "--temperature", "0",
            "--max-new-tokens", "6", "--adapter", a, "--allow-outside-root",
        ];
        args.extend(extra);
        ok(amp(&args));
        let row: serde_json::Value = serde_json::from_str(std::fs::read_to_string(out).unwrap().lines().next().unwrap()).unwrap();
        // the answers (each candidate's decoding record names the adapter mode, so it differs)
        let answers: Vec<&serde_json::Value> = row["candidates"].as_array().unwrap().iter().map(|c| &c["conversation"]).collect();
        serde_json::to_string(&answers).unwrap()
    };
    assert_eq!(gen("g1.jsonl", &[]), gen("g2.jsonl", &["--merge-adapter"]));
}
