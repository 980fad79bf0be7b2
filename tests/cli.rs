//! The `amp` binary end to end on small inputs: `world`, then `train` (MDPO with LoRA) on the tiny
//! llava-hf checkpoint written by `tests/oracles/gen_llava.py`, resumed, and a bad data file.
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    let dir = std::env::var("AMP_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/oracle-fixtures")));
    let llava = dir.join("llava");
    assert!(
        llava.join("hf/config.json").exists(),
        "fixtures missing: run `bash scripts/test.sh` (or $AMP_PYTHON tests/oracles/gen_llava.py {})",
        llava.display()
    );
    llava
}

fn amp(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_amp")).args(args).output().expect("run amp")
}

fn conv(a1: &str, a2: &str) -> serde_json::Value {
    serde_json::json!([
        {"from": "human", "value": "<image>\nWhat is in the picture?"},
        {"from": "gpt", "value": a1},
        {"from": "human", "value": "What colour is it?"},
        {"from": "gpt", "value": a2},
    ])
}

fn write_amp_file(path: &Path, image: &Path, n: usize) {
    let rows: Vec<_> = (0..n)
        .map(|i| {
            serde_json::json!({
                "id": format!("ex{i}"),
                "image": image,
                "output_1": conv("a red cat", "red"),
                "output_2": conv("a cat and a dog", "blue"),
                "output_3": conv("three dogs on a car", "green"),
            })
        })
        .collect();
    std::fs::write(path, serde_json::to_string(&rows).unwrap()).unwrap();
}

#[test]
fn world_writes_every_file_the_pipeline_reads() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("w");
    let o = amp(&["world", "--preset", "tiny", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in ["world.json", "train.json", "pref.json", "eval_gt.json", "tokenizer.json", "scenes.json"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    for split in ["adversarial", "popular", "random"] {
        assert!(out.join(format!("pope/coco_pope_{split}.json")).is_file());
    }
}

#[test]
fn train_runs_mdpo_with_lora_saves_a_peft_adapter_and_resumes() {
    let llava = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("amp.json");
    write_amp_file(&data, &llava.join("image.png"), 4);
    let run = dir.path().join("run");
    let model = llava.join("hf");
    let args = [
        "train", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap(),
        "--levels", "3", "--max-steps", "3", "--batch-size", "2", "--lora-r", "4",
        "--output-dir", run.to_str().unwrap(), "--save-every", "1",
    ];
    let o = amp(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(run.join("adapter/adapter_model.safetensors").is_file());
    assert!(run.join("adapter/adapter_config.json").is_file());
    let rows = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(rows.lines().count(), 3, "one JSONL row per step");
    for png in ["loss.png", "accuracy.png", "margins.png", "logps.png"] {
        assert!(run.join("plots").join(png).is_file(), "{png} missing");
    }
    // A rerun resumes from the last checkpoint: no step is repeated.
    let o = amp(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(rows.lines().count(), 3, "resume repeated steps");
}

#[test]
fn train_names_the_file_and_record_of_bad_data() {
    let llava = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("amp.json");
    write_amp_file(&data, &llava.join("image.png"), 2);
    let o = amp(&[
        "train", "--model", llava.join("hf").to_str().unwrap(), "--data", data.to_str().unwrap(),
        "--levels", "4", "--output-dir", dir.path().join("run").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("amp.json") && err.contains("record 0") && err.contains("K = 4"), "{err}");
    // A missing image is named too.
    write_amp_file(&data, &dir.path().join("nope.png"), 1);
    let o = amp(&[
        "train", "--model", llava.join("hf").to_str().unwrap(), "--data", data.to_str().unwrap(),
        "--levels", "3", "--output-dir", dir.path().join("run2").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nope.png"), "{err}");
}

#[test]
fn generate_with_local_checkpoints_then_check_then_answer_locally() {
    let llava = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Instruction data in LLaVA's format: two records, one multi-round.
    let image = llava.join("image.png");
    let records = serde_json::json!([
        {"id": "a", "image": image, "conversations": [
            {"from": "human", "value": "<image>\nDescribe the picture."},
            {"from": "gpt", "value": "A red square sits on a white table next to a blue cup."}]},
        {"id": "b", "image": image, "conversations": [
            {"from": "human", "value": "<image>\nWhat is on the table?"},
            {"from": "gpt", "value": "A red square and a blue cup."},
            {"from": "human", "value": "What colour is the cup?"},
            {"from": "gpt", "value": "The cup is blue."}]},
    ]);
    let input = d.join("llava.json");
    std::fs::write(&input, records.to_string()).unwrap();
    let gen = d.join("gen.jsonl");
    let (big, small) = (format!("big={}", llava.join("hf").display()), format!("small={}", llava.join("hf_tied").display()));
    let mut gen_args = vec![
        "generate", "--input", input.to_str().unwrap(), "--out", gen.to_str().unwrap(), "--local-expert", &big,
        "--local-expert", &small, "--levels", "3", "--num-beams", "1", "--temperature", "0", "--max-new-tokens", "4",
    ];
    // The image lies outside the data file's directory (the data root): refused unless allowed
    // (docs/reliability.md).
    let o = amp(&gen_args);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("outside the data root"));
    gen_args.push("--allow-outside-root");
    let o = amp(&gen_args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: Vec<serde_json::Value> =
        std::fs::read_to_string(&gen).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        let sources: Vec<&str> = r["candidates"].as_array().unwrap().iter().map(|c| c["source"].as_str().unwrap()).collect();
        assert_eq!(sources, ["big", "small"], "initial rank follows the --local-expert order");
    }
    // A rerun generates nothing new.
    let o = amp(&gen_args);
    assert!(o.status.success());
    assert_eq!(std::fs::read_to_string(&gen).unwrap().lines().count(), 2);
    // Mixing local and server experts is refused.
    let mut mixed = gen_args.to_vec();
    mixed.extend(["--server-expert", "x=m@http://127.0.0.1:9/v1"]);
    let o = amp(&mixed);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("either --local-expert or --server-expert"));

    // The auto-check with the real MiniLM writes the AMP training file, standard response on top.
    let out = d.join("data");
    let o = amp(&["check", "--generated", gen.to_str().unwrap(), "--out-dir", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let amp_json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("amp.json")).unwrap()).unwrap();
    let first = &amp_json.as_array().unwrap()[0];
    assert_eq!(first["output_1"][1]["value"], "A red square sits on a white table next to a blue cup.");
    assert!(first.get("output_3").is_some() && first.get("output_4").is_none());

    // Answer an MRHal-style set with the local checkpoint: one answer per round, resumable.
    let world = d.join("w");
    assert!(amp(&["world", "--preset", "tiny", "--out", world.to_str().unwrap()]).status.success());
    let answers = d.join("answers.jsonl");
    let ans_args = [
        "eval", "answer-local", "--bench", "mrhal", "--data", world.join("eval_gt.json").to_str().unwrap().to_owned().leak(),
        "--images", world.join("images").to_str().unwrap().to_owned().leak(), "--out", answers.to_str().unwrap(),
        "--model", llava.join("hf").to_str().unwrap().to_owned().leak(), "--num-beams", "1", "--temperature", "0",
        "--max-new-tokens", "3", "--limit", "2",
    ];
    let o = amp(&ans_args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let n = std::fs::read_to_string(&answers).unwrap().lines().count();
    assert!(n >= 4, "two dialogues of at least two rounds: {n} answers");
    assert!(amp(&ans_args).status.success());
    assert_eq!(std::fs::read_to_string(&answers).unwrap().lines().count(), n, "rerun re-answered");
}
