//! Checkpoint loading at scale (issue "real scale", item 1; figures in docs/scale.md).
//!
//! `cargo bench -p mllm --bench load` generates (once) a LLaVA-shaped, sharded bf16 checkpoint of
//! ~1.69 GB with `tests/oracles/scale_checkpoint.py` (`$AMP_PYTHON`), then, each load in a fresh
//! process and alternating the two loaders on the same (page-cached) files, loads it into bf16 and
//! into f32 on the CPU with `Llava::load` and with `safetensors.torch.load_file`, and prints per
//! load: seconds, peak anonymous memory (RssAnon sampled every 2 ms) and its ratio to the model's
//! bytes in that dtype. For bf16, plain `load_file` returns tensors still backed by the mapped
//! file (nothing read yet); the time ratio compares with `load_file` + `clone()` per tensor, which
//! holds the weights in process memory as `Llava::load` does (f32: `load_file` + `float()`). `AMP_SCALE_DIR` picks the checkpoint directory (default
//! `target/scale-checkpoint`), `AMP_BENCH_REPEATS` the rounds (default 3).
use mllm::llava::{LoadOptions, Llava};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tch::{Device, Kind};

fn status_field(name: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// One load in this process; prints a JSON line like the Python baseline's.
fn child(dir: &Path, dtype: &str) {
    let kind = if dtype == "bf16" { Kind::BFloat16 } else { Kind::Float };
    let before = status_field("RssAnon:");
    let peak = Arc::new(AtomicU64::new(before));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(status_field("RssAnon:"), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        })
    };
    let t0 = Instant::now();
    let m = Llava::load(dir, LoadOptions { device: Device::Cpu, kind }).expect("load");
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    peak.fetch_max(status_field("RssAnon:"), Ordering::Relaxed);
    let bytes: usize = m.var_store().variables().values().map(|t| t.numel() * t.kind().elt_size_in_bytes()).sum();
    let cfg = mllm::config::LlavaConfig::from_dir(dir).unwrap();
    let t1 = Instant::now();
    let fp = Llava::checkpoint(dir, &cfg).unwrap().fingerprint();
    let fp_secs = t1.elapsed().as_secs_f64();
    println!(
        "{{\"loader\": \"mllm Llava::load\", \"dtype\": \"{dtype}\", \"seconds\": {secs}, \"peak_anon\": {}, \"anon_before\": {before}, \
         \"model_bytes\": {bytes}, \"vm_hwm\": {}, \"fingerprint_seconds\": {fp_secs}, \"fingerprint\": \"{}\"}}",
        peak.load(Ordering::Relaxed),
        status_field("VmHWM:"),
        &fp[..12]
    );
}

/// The reference-cache key of the loaded base, both ways: hashing every weight (before) and the
/// checkpoint fingerprint (`Llava::base_fingerprint`, files + sampled bytes).
fn fingerprints(dir: &Path) {
    let m = Llava::load(dir, LoadOptions { device: Device::Cpu, kind: Kind::BFloat16 }).expect("load");
    let t0 = Instant::now();
    mdpo::fingerprint::var_store(m.var_store(), true).unwrap();
    let full = t0.elapsed().as_secs_f64();
    let cfg = mllm::config::LlavaConfig::from_dir(dir).unwrap();
    let t1 = Instant::now();
    Llava::checkpoint(dir, &cfg).unwrap().fingerprint();
    let sampled = t1.elapsed().as_secs_f64();
    println!("{{\"full_hash_seconds\": {full}, \"checkpoint_fingerprint_seconds\": {sampled}}}");
}

fn run(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.output().expect("spawn");
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    let s = String::from_utf8_lossy(&out.stdout);
    let line = s.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no JSON from {cmd:?}: {s}"));
    serde_json::from_str(line).unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(Path::new(&args[i + 1]), &args[i + 2]);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--fingerprint") {
        fingerprints(Path::new(&args[i + 1]));
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = std::env::var_os("AMP_SCALE_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target/scale-checkpoint"));
    let python = std::env::var("AMP_PYTHON").expect("AMP_PYTHON (source scripts/setup.sh)");
    let script = root.join("tests/oracles/scale_checkpoint.py");
    if !dir.join("model.safetensors.index.json").exists() {
        eprintln!("generating {} (once)", dir.display());
        run(Command::new(&python).arg(&script).arg("make").arg(&dir));
    }
    // Warm the page cache so neither loader pays the first disk read.
    for f in std::fs::read_dir(&dir).unwrap().flatten() {
        let _ = std::io::copy(&mut std::fs::File::open(f.path()).unwrap(), &mut std::io::sink());
    }
    let repeats: usize = std::env::var("AMP_BENCH_REPEATS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let me = std::env::current_exe().unwrap();
    let gib = |b: f64| b / (1u64 << 30) as f64;
    println!("| round | dtype | loader | seconds | peak RssAnon GiB | model GiB | peak / model | time / materialised load_file |");
    println!("|---|---|---|---|---|---|---|---|");
    for round in 1..=repeats {
        for dtype in ["bf16", "f32"] {
            // bf16: load_file alone leaves the tensors backed by the mapped file (nothing read);
            // the materialised baseline (each tensor cloned) is what the ratio compares with.
            let lazy = (dtype == "bf16").then(|| run(Command::new(&python).arg(&script).arg("load").arg(&dir).arg("bf16")));
            let mode = if dtype == "bf16" { "bf16-copy" } else { "f32" };
            let py = run(Command::new(&python).arg(&script).arg("load").arg(&dir).arg(mode));
            let rs = run(Command::new(&me).arg("--child").arg(&dir).arg(dtype));
            let base = py["seconds"].as_f64().unwrap();
            for r in lazy.iter().chain([&py, &rs]) {
                let peak = r["peak_anon"].as_f64().unwrap();
                let model = r["model_bytes"].as_f64().unwrap();
                let secs = r["seconds"].as_f64().unwrap();
                println!(
                    "| {round} | {dtype} | {} | {secs:.2} | {:.3} | {:.3} | {:.3} | {:.2} |",
                    r["loader"].as_str().unwrap(),
                    gib(peak),
                    gib(model),
                    peak / model,
                    secs / base
                );
            }
            if round == 1 && dtype == "bf16" {
                let f = run(Command::new(&me).arg("--fingerprint").arg(&dir));
                eprintln!(
                    "reference-cache key of the bf16 base: hashing every weight {:.2} s, checkpoint fingerprint {:.3} s",
                    f["full_hash_seconds"].as_f64().unwrap(),
                    f["checkpoint_fingerprint_seconds"].as_f64().unwrap()
                );
            }
            if round == 1 {
                eprintln!(
                    "mllm {dtype}: anon before load {:.3} GiB, VmHWM {:.3} GiB, checkpoint fingerprint {:.3} s",
                    gib(rs["anon_before"].as_f64().unwrap()),
                    gib(rs["vm_hwm"].as_f64().unwrap()),
                    rs["fingerprint_seconds"].as_f64().unwrap()
                );
            }
        }
    }
}
