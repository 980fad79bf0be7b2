//! Data-parallel training throughput on CPU (docs/distributed.md): `amp train` on the tiny
//! llava-hf fixture with 1 rank (accumulation 2) and 2 ranks (`--nproc 2`, accumulation 1), the
//! same global batch of 2; prints samples/s (mean over steps 2..) and the time rank 0 spent in
//! the gradient all-reduce. Run it with `flock /tmp/amp-bench.lock cargo bench --bench dist_step`.
use std::path::{Path, PathBuf};
use std::process::Command;

fn conv(a1: &str) -> serde_json::Value {
    serde_json::json!([{"from": "human", "value": "<image>\nWhat is in the picture?"}, {"from": "gpt", "value": a1}])
}

fn run(bin: &str, model: &Path, data: &Path, out: &Path, extra: &[&str], steps: usize) -> (f64, Option<f64>) {
    let steps_s = steps.to_string();
    let mut args = vec![
        "train", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap(), "--levels", "3",
        "--max-steps", &steps_s, "--batch-size", "1", "--lora-r", "4", "--output-dir", out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = Command::new(bin).args(&args).output().expect("run amp");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let rows = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let sps: Vec<f64> = rows
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("samples_per_s").and_then(|x| x.as_f64()))
        .skip(1)
        .collect();
    let allreduce = err
        .lines()
        .find_map(|l| l.split("all-reduce ").nth(1))
        .and_then(|r| r.split(' ').next())
        .and_then(|x| x.parse().ok());
    (sps.iter().sum::<f64>() / sps.len().max(1) as f64, allreduce)
}

fn main() {
    let fixtures = std::env::var("AMP_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/oracle-fixtures")));
    let llava = fixtures.join("llava");
    assert!(llava.join("hf/config.json").exists(), "fixtures missing: run bash scripts/test.sh");
    let bin = std::env::var("AMP_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_amp").to_string());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d.json");
    let rows: Vec<_> = (0..16)
        .map(|i| {
            serde_json::json!({"id": format!("e{i}"), "image": "image.png",
                "output_1": conv("a red cat"), "output_2": conv("a cat and a dog"), "output_3": conv(&format!("three dogs {i}"))})
        })
        .collect();
    std::fs::write(&data, serde_json::to_string(&rows).unwrap()).unwrap();
    // the image in the data file's directory, its data root
    std::fs::copy(llava.join("image.png"), dir.path().join("image.png")).unwrap();
    let steps = 8;
    let model = llava.join("hf");
    let (one, _) = run(&bin, &model, &data, &dir.path().join("r1"), &["--grad-accum", "2"], steps);
    let (two, ar) = run(&bin, &model, &data, &dir.path().join("r2"), &["--grad-accum", "1", "--nproc", "2"], steps);
    println!("dist_step (tiny llava, K = 3, global batch 2, {steps} steps, CPU):");
    println!("  1 rank  x accumulation 2: {one:.2} samples/s");
    println!(
        "  2 ranks x accumulation 1: {two:.2} samples/s ({:.2}x), all-reduce {} s on rank 0",
        two / one,
        ar.map_or("?".into(), |a| format!("{a:.3}"))
    );
}
