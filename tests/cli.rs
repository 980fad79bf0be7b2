//! The `amp` binary end to end on small inputs: `world`, then `train` (MDPO with LoRA) on the tiny
//! llava-hf checkpoint written by `tests/oracles/gen_llava.py`, resumed, and a bad data file.
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{fixtures, write_amp_file};


fn amp(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_amp")).args(args).output().expect("run amp")
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

/// `amp check --chunker auto` where the spaCy model cannot be found (no `$AMP_SPACY_MODEL`, no
/// data venv, another home): the check still runs, with the rule chunker, and says so on stderr.
#[test]
fn check_falls_back_to_the_rule_chunker_when_the_spacy_model_is_not_found() {
    let minilm = mllm::minilm_dir().expect("all-MiniLM-L6-v2 (scripts/setup.sh installs it)");
    let textblob = amp_data::BrillTagger::locate_resources().expect("textblob's lexicon (scripts/setup.sh installs it)");
    let d = tempfile::tempdir().unwrap();
    let conv = |a: &str| serde_json::json!([{"from": "human", "value": "<image>\nDescribe the picture."}, {"from": "gpt", "value": a}]);
    let rows: Vec<String> = (0..3)
        .map(|i| {
            serde_json::json!({"id": format!("r{i}"), "index": i, "image": format!("{i}.png"),
                "standard": conv("A red car is parked next to a tall tree."),
                "candidates": [{"source": "big", "conversation": conv("A blue boat is parked next to a tall tree.")},
                               {"source": "small", "conversation": conv("A red car is parked next to a tree.")}]})
            .to_string()
        })
        .collect();
    let gen = d.path().join("generated.jsonl");
    std::fs::write(&gen, rows.join("\n") + "\n").unwrap();
    let home = d.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let out = d.path().join("data");
    let o = Command::new(env!("CARGO_BIN_EXE_amp"))
        .args(["check", "--generated", gen.to_str().unwrap(), "--out-dir", out.to_str().unwrap(), "--chunker", "auto"])
        .args(["--textblob-dir", textblob.to_str().unwrap()])
        .env("HOME", &home)
        .env("AMP_SPACY_MODEL", "")
        .env("AMP_VENV", "")
        .env_remove("VIRTUAL_ENV")
        .env("AMP_MINILM_DIR", &minilm)
        .output()
        .expect("run amp");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("not found") && err.contains("using the rule chunker"), "{err}");
    let amp_json: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(out.join("amp.json")).unwrap()).unwrap();
    assert_eq!(amp_json.len(), 3);
    // the response naming the right objects ranks above the one naming a wrong one
    assert_eq!(amp_json[0]["output_2"][1]["value"], "A red car is parked next to a tree.");
}

/// Instruction data for the IG test: `n` one-round records on the fixture image.
fn write_ig_records(path: &Path, image: &Path, n: usize) {
    let recs: Vec<_> = (0..n)
        .map(|i| {
            serde_json::json!({"id": format!("r{i}"), "image": image, "conversations": [
                {"from": "human", "value": format!("<image>\nDescribe picture {i}.")},
                {"from": "gpt", "value": format!("A red square sits on a white table, picture {i}.")}]})
        })
        .collect();
    std::fs::write(path, serde_json::to_string(&recs).unwrap()).unwrap();
}

fn read_rows(p: &Path) -> Vec<serde_json::Value> {
    let mut rows: Vec<serde_json::Value> =
        std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    rows.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    rows
}

/// (source, conversation) of every candidate of every row: what a resumed run must reproduce.
fn answers(rows: &[serde_json::Value]) -> Vec<(String, String, serde_json::Value)> {
    rows.iter()
        .flat_map(|r| {
            r["candidates"].as_array().unwrap().iter().map(move |c| {
                (r["id"].as_str().unwrap().to_string(), c["source"].as_str().unwrap().to_string(), c["conversation"].clone())
            })
        })
        .collect()
}

#[test]
fn generate_with_incremental_generation_makes_k_minus_2_levels_and_resumes_after_a_kill() {
    let llava = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("llava.json");
    write_ig_records(&input, &llava.join("image.png"), 8);
    let base = llava.join("hf");
    let args = |out: &Path| -> Vec<String> {
        [
            "generate", "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap(), "--ig-base",
            base.to_str().unwrap(), "--ig-subsets", "2", "--ig-fraction", "0.5", "--ig-lora-r", "4", "--ig-lora-alpha", "8",
            "--ig-batch-size", "1", "--ig-epochs", "3", "--ig-save-every", "1", "--ig-lr", "0.01", "--num-beams", "1",
            "--temperature", "0", "--max-new-tokens", "4", "--jobs", "1", "--allow-outside-root",
        ]
        .map(String::from)
        .to_vec()
    };
    // An uninterrupted run: F = the first 4 records in 2 cumulative subsets (2 and 4 records),
    // K = 4 levels = the standard, two fine-tunes (most data first) and the base.
    let a = dir.path().join("a/gen.jsonl");
    let o = Command::new(env!("CARGO_BIN_EXE_amp")).args(args(&a)).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows_a = read_rows(&a);
    assert_eq!(rows_a.iter().map(|r| r["id"].as_str().unwrap()).collect::<Vec<_>>(), ["r4", "r5", "r6", "r7"]);
    for r in &rows_a {
        let c = r["candidates"].as_array().unwrap();
        let sources: Vec<&str> = c.iter().map(|c| c["source"].as_str().unwrap()).collect();
        assert_eq!(sources, ["hf+sft2of2(4)", "hf+sft1of2(2)", "hf"], "K - 2 = 2 IG levels above the base");
        assert!(c[0]["decoding"]["adapter"].as_str().unwrap().ends_with("stage-2/adapter"));
        assert!(c[2]["decoding"]["adapter"].is_null(), "the base runs without an adapter");
    }
    let ig_a = dir.path().join("a/gen.jsonl.ig");
    let adapter = |root: &Path, s: usize| std::fs::read(root.join(format!("stage-{s}/adapter/adapter_model.safetensors"))).unwrap();
    assert_ne!(adapter(&ig_a, 1), adapter(&ig_a, 2), "the two subsets train different adapters");

    // The same run killed once stage 1 is done (stage 2 is training or the answers are being
    // written), then rerun: it reuses stage 1 and ends with the same adapters and answers.
    let b = dir.path().join("b/gen.jsonl");
    let ig_b = dir.path().join("b/gen.jsonl.ig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_amp"))
        .args(args(&b))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !ig_b.join("stage-1/done.key").exists() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before stage 1 was done");
        assert!(start.elapsed().as_secs() < 600, "stage 1 never finished");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run finished before the kill");
    assert!(!ig_b.join("stage-2/done.key").exists() || read_rows(&b).len() < 4, "nothing left to resume");
    let o = Command::new(env!("CARGO_BIN_EXE_amp")).args(args(&b)).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("ig stage 1: reusing the adapter"), "{err}");
    assert_eq!(adapter(&ig_a, 1), adapter(&ig_b, 1));
    assert_eq!(adapter(&ig_a, 2), adapter(&ig_b, 2), "the resumed stage 2 trains the same adapter");
    assert_eq!(answers(&read_rows(&b)), answers(&rows_a));
    // A third run has nothing to do.
    let o = Command::new(env!("CARGO_BIN_EXE_amp")).args(args(&b)).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ig stage 2: reusing the adapter") && err.contains("0 generated now"), "{err}");

    // K must be subsets + 2; IG needs its fine-tuning data.
    let mut bad = args(&dir.path().join("c/gen.jsonl"));
    bad.extend(["--levels", "5"].map(String::from));
    let o = Command::new(env!("CARGO_BIN_EXE_amp")).args(&bad).output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--ig-subsets 2 gives K = 4"));
    let mut bad = args(&dir.path().join("c/gen.jsonl"));
    let i = bad.iter().position(|a| a == "--ig-fraction").unwrap();
    bad.drain(i..i + 2);
    let o = Command::new(env!("CARGO_BIN_EXE_amp")).args(&bad).output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--ig-sft FILE"));
}

/// A copy of the tiny checkpoint whose `lm_head` is NaN: every MDPO step is non-finite.
fn nan_checkpoint(llava: &Path, dir: &Path) -> PathBuf {
    let out = dir.join("hf_nan");
    std::fs::create_dir_all(&out).unwrap();
    for e in std::fs::read_dir(llava.join("hf")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), out.join(e.file_name())).unwrap();
    }
    let path = out.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let t = &header["language_model.lm_head.weight"];
    assert_eq!(t["dtype"], "F32");
    let (a, b) = (t["data_offsets"][0].as_u64().unwrap() as usize, t["data_offsets"][1].as_u64().unwrap() as usize);
    for w in bytes[8 + n + a..8 + n + b].chunks_mut(4) {
        w.copy_from_slice(&f32::NAN.to_le_bytes());
    }
    std::fs::write(&path, bytes).unwrap();
    out
}

#[test]
fn train_on_nan_weights_fails_names_the_examples_and_writes_no_adapter() {
    let llava = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("amp.json");
    write_amp_file(&data, &llava.join("image.png"), 2);
    let model = nan_checkpoint(&llava, dir.path());
    let run = dir.path().join("run");
    let o = amp(&[
        "train", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap(), "--levels", "3",
        "--max-steps", "2", "--batch-size", "2", "--grad-accum", "1", "--lora-r", "4", "--output-dir",
        run.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("2 of 2 steps skipped") && err.contains("ex0") && err.contains("ex1"), "{err}");
    assert!(!run.join("adapter").exists(), "an adapter was written from a NaN run");
}

#[test]
fn train_resume_refuses_a_changed_setting_unless_overridden() {
    let llava = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("amp.json");
    write_amp_file(&data, &llava.join("image.png"), 2);
    let run = dir.path().join("run");
    let model = llava.join("hf");
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap(),
            "--levels", "3", "--batch-size", "2", "--grad-accum", "1", "--lora-r", "4",
            "--output-dir", run.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        amp(&args)
    };
    let o = train(&["--max-steps", "1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("global batch 2 = micro-batch 2"));
    let o = train(&["--max-steps", "1", "--lr", "1e-3"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("with lr = ") && err.contains("--override-config"), "{err}");
    let o = train(&["--lr", "1e-3", "--override-config", "--max-steps", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(log.contains("\"override_config\""), "{log}");
}
