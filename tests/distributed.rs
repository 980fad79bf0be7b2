//! Data-parallel training over 2 real processes (`amp train --nproc 2`, c10d Gloo on 127.0.0.1)
//! against one process with the same global batch through gradient accumulation, on the tiny
//! llava-hf checkpoint of `tests/oracles/gen_llava.py` (docs/distributed.md):
//! world 2 × micro-batch 1 must give the weights of world 1 × micro-batch 1 × accumulation 2.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{conv, fixtures, in_data_root};


/// The `amp` binary; `AMP_TEST_BIN` overrides it (a copy, when a shared target directory may be
/// rebuilt by another checkout while the tests run).
fn amp(args: &[String]) {
    let bin = std::env::var("AMP_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_amp").to_string());
    let o = Command::new(bin).args(args).output().expect("run amp");
    assert!(o.status.success(), "amp {args:?}:\n{}", String::from_utf8_lossy(&o.stderr));
}



fn write_amp_file(path: &Path, image: &Path) {
    let image = &in_data_root(path, image);
    let answers = ["a red cat", "a blue dog", "two green birds", "a car", "one yellow box on a mat"];
    let rows: Vec<_> = answers
        .iter()
        .enumerate()
        .map(|(i, a)| {
            serde_json::json!({
                "id": format!("ex{i}"),
                "image": image,
                "output_1": conv(a, "red"),
                "output_2": conv("a cat and a dog", "blue"),
                "output_3": conv("three dogs on a car", &format!("green {i}")),
            })
        })
        .collect();
    std::fs::write(path, serde_json::to_string(&rows).unwrap()).unwrap();
}

fn write_sft_file(path: &Path, image: &Path) {
    let image = &in_data_root(path, image);
    let rows: Vec<_> = ["A red square on a table.", "A blue cup.", "Two green circles and a star."]
        .iter()
        .enumerate()
        .map(|(i, a)| {
            serde_json::json!({"id": format!("s{i}"), "image": image, "conversations": [
                {"from": "human", "value": "<image>\nDescribe the picture."},
                {"from": "gpt", "value": a}]})
        })
        .collect();
    std::fs::write(path, serde_json::to_string(&rows).unwrap()).unwrap();
}

fn adapter(run: &Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(run.join("adapter/adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let v = view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            (name, v)
        })
        .collect()
}

fn max_abs_diff(a: &BTreeMap<String, Vec<f32>>, b: &BTreeMap<String, Vec<f32>>) -> f32 {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    a.iter()
        .flat_map(|(k, x)| x.iter().zip(&b[k]).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f32::max)
}

fn max_abs(a: &BTreeMap<String, Vec<f32>>, part: &str) -> f32 {
    a.iter().filter(|(k, _)| k.contains(part)).flat_map(|(_, v)| v.iter().map(|x| x.abs())).fold(0.0, f32::max)
}

struct Job {
    cmd: &'static str,
    data: PathBuf,
    model: PathBuf,
}

impl Job {
    fn args(&self, run: &Path, steps: usize, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = [
            self.cmd, "--model", self.model.to_str().unwrap(), "--data", self.data.to_str().unwrap(),
            "--max-steps", &steps.to_string(), "--batch-size", "1", "--lora-r", "4", "--lr", "1e-2",
            "--warmup-steps", "0", "--output-dir", run.to_str().unwrap(), "--dist-timeout", "120",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if self.cmd == "train" {
            a.extend(["--levels", "3"].map(String::from));
        }
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }
}

fn check_world2_equals_accumulation2(cmd: &'static str) {
    world2_equals_accumulation2(cmd, &[], 1e-6);
}

/// World 2 × micro-batch 1 against world 1 × accumulation 2; `device` is appended to both
/// commands (e.g. `--device cuda`, which makes the two ranks an NCCL group).
fn world2_equals_accumulation2(cmd: &'static str, device: &[&str], tolerance: f32) {
    let llava = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.json");
    match cmd {
        "train" => write_amp_file(&data, &llava.join("image.png")),
        _ => write_sft_file(&data, &llava.join("image.png")),
    }
    let job = Job { cmd, data, model: llava.join("hf") };
    let (two, one) = (dir.path().join("two"), dir.path().join("one"));
    amp(&job.args(&two, 5, &[&["--nproc", "2", "--grad-accum", "1"], device].concat()));
    amp(&job.args(&one, 5, &[&["--grad-accum", "2"], device].concat()));
    let (a, b) = (adapter(&two), adapter(&one));
    // LoRA B starts at zero: the test compares trained weights, not two copies of the init.
    assert!(max_abs(&b, "lora_B") > 1e-3, "the adapters did not train");
    let d = max_abs_diff(&a, &b);
    eprintln!("{cmd} {device:?}: world 2 vs accumulation 2, max abs difference {d:e}");
    assert!(d <= tolerance, "{cmd}: world 2 vs accumulation 2 differ by {d}");
    // Rank 0 alone wrote the metrics: one row per step, the same losses.
    let rows = |run: &Path| std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let losses = |run: &Path| -> Vec<f64> {
        rows(run)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v.get("loss").and_then(|x| x.as_f64()))
            .collect()
    };
    let (la, lb) = (losses(&two), losses(&one));
    assert_eq!(la.len(), 5);
    assert!(la.iter().zip(&lb).all(|(x, y)| (x - y).abs() < tolerance as f64), "{la:?} vs {lb:?}");
}

/// The NCCL path on two GPUs (`scripts/gpu-check.sh`, step (d)): run with
/// `AMP_TEST_DEVICE=cuda` on a machine with at least two GPUs; elsewhere it says why it did not
/// run. f32 on the GPU: the per-example work is identical, only the order of the gradient sum
/// differs (NCCL's all-reduce vs accumulation), hence 1e-5 rather than 1e-6.
#[test]
fn nccl_world_2_matches_one_gpu_with_accumulation_2() {
    if std::env::var("AMP_TEST_DEVICE").as_deref() != Ok("cuda") {
        eprintln!("skipped: set AMP_TEST_DEVICE=cuda on a machine with two GPUs (scripts/gpu-check.sh)");
        return;
    }
    let gpus = tch::Cuda::device_count();
    assert!(gpus >= 2, "AMP_TEST_DEVICE=cuda asks for the NCCL check, but {gpus} GPU(s) are visible");
    for cmd in ["train", "sft"] {
        world2_equals_accumulation2(cmd, &["--device", "cuda", "--dtype", "f32"], 1e-5);
    }
}

#[test]
fn mdpo_world_2_matches_one_process_with_accumulation_2() {
    check_world2_equals_accumulation2("train");
}

#[test]
fn sft_world_2_matches_one_process_with_accumulation_2() {
    check_world2_equals_accumulation2("sft");
}

#[test]
fn a_two_rank_run_resumes_as_one_rank() {
    let llava = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.json");
    write_amp_file(&data, &llava.join("image.png"));
    let job = Job { cmd: "train", data, model: llava.join("hf") };
    let (whole, resumed) = (dir.path().join("whole"), dir.path().join("resumed"));
    amp(&job.args(&whole, 5, &["--nproc", "2", "--grad-accum", "1"]));
    // Interrupted after step 3 (its last checkpoint), then resumed by one rank with the same
    // global batch (max_steps differs, hence --override-config, which logs it).
    amp(&job.args(&resumed, 3, &["--nproc", "2", "--grad-accum", "1"]));
    amp(&job.args(&resumed, 5, &["--grad-accum", "2", "--override-config"]));
    let d = max_abs_diff(&adapter(&whole), &adapter(&resumed));
    assert!(d <= 1e-6, "resumed 2 -> 1 ranks differs by {d}");
}

fn trainable(run: &Path) -> BTreeMap<String, Vec<f32>> {
    let ckpts = run.join("checkpoints");
    let last = std::fs::read_dir(&ckpts)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("state.json").is_file())
        .max_by_key(|p| p.file_name().unwrap().to_string_lossy().trim_start_matches("step-").parse::<usize>().unwrap_or(0))
        .expect("a checkpoint");
    let bytes = std::fs::read(last.join("trainable.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| (n, v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()))
        .collect()
}

/// The custom text model of examples/custom_model_mdpo.rs (not from mllm): 2 ranks × micro 1
/// against 1 rank × micro 1 × accumulation 2, 5 MDPO steps.
#[test]
fn custom_model_world_2_matches_one_process_with_accumulation_2() {
    let example = std::env::var("AMP_TEST_EXAMPLE").map(PathBuf::from).unwrap_or_else(|_| {
        Path::new(env!("CARGO_BIN_EXE_amp")).parent().unwrap().join("examples/custom_model_mdpo")
    });
    assert!(example.is_file(), "{} missing: cargo test builds the examples", example.display());
    let dir = tempfile::tempdir().unwrap();
    let run = |out: &Path, extra: &[&str]| {
        let o = Command::new(&example)
            .args(["--steps", "5", "--batch-size", "1", "--out", out.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let (two, one) = (dir.path().join("two"), dir.path().join("one"));
    run(&two, &["--nproc", "2", "--grad-accum", "1"]);
    run(&one, &["--grad-accum", "2"]);
    let d = max_abs_diff(&trainable(&two), &trainable(&one));
    assert!(d <= 1e-6, "custom model: world 2 vs accumulation 2 differ by {d}");
    // The weights moved: the loss of step 5 is not that of step 1.
    let losses: Vec<f64> = std::fs::read_to_string(one.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("loss").and_then(|x| x.as_f64()))
        .collect();
    assert_eq!(losses.len(), 5);
    assert!((losses[0] - losses[4]).abs() > 1e-4, "the model did not train: {losses:?}");
}
