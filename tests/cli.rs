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
