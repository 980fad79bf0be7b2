//! LoRA: zero-init equals the base, merge equals the unmerged forward, the adapter switch gives
//! the base back, and adapters round-trip with Python PEFT in both directions.
mod common;
use common::*;
use mllm::llava::{LoadOptions, Llava};
use mllm::lora::LoraConfig;
use tch::Tensor;

fn setup() -> (Llava, Tensor, Tensor) {
    let m = Llava::load(&fixtures().join("hf"), LoadOptions::default()).unwrap();
    let o = oracle_json();
    let t = oracle_tensors();
    let ids = Tensor::from_slice(&ids(&o["train_ids"])).unsqueeze(0);
    (m, ids, t["pixel_values_pad"].shallow_clone())
}

fn randomize_b(m: &Llava, seed: i64) {
    tch::manual_seed(seed);
    tch::no_grad(|| {
        for (k, mut v) in m.lora_var_store().unwrap().variables() {
            if k.contains("lora_B") {
                v.copy_(&(Tensor::randn_like(&v) * 0.2));
            }
        }
    });
}

#[test]
fn zero_init_merge_and_switch() {
    let (mut m, ids, px) = setup();
    let base = tch::no_grad(|| m.forward(&ids, Some(&px), None)).unwrap();
    let cfg = LoraConfig { r: 4, alpha: 8., dropout: 0.1, ..Default::default() };
    m.add_lora(&cfg, 0).unwrap();
    let vars = m.lora_var_store().unwrap().variables();
    // 2 layers × 7 target modules × (A, B)
    assert_eq!(vars.len(), 28);
    assert!(vars.keys().all(|k| k.starts_with("base_model.model.model.language_model.layers.")));
    let zero = tch::no_grad(|| m.forward(&ids, Some(&px), None)).unwrap();
    assert_eq!(max_abs_diff(&zero, &base), 0.0, "B = 0 must give the base logits");
    randomize_b(&m, 11);
    let adapted = tch::no_grad(|| m.forward(&ids, Some(&px), None)).unwrap();
    assert!(max_abs_diff(&adapted, &base) > 1e-3, "adapters must change the logits");
    m.set_adapters_enabled(false).unwrap();
    let off = tch::no_grad(|| m.forward(&ids, Some(&px), None)).unwrap();
    assert_eq!(max_abs_diff(&off, &base), 0.0, "disabled adapters = base");
    m.set_adapters_enabled(true).unwrap();
    // gradients reach the adapters only
    let l = m.forward_t(&ids, Some(&px), None, true).unwrap().mean(tch::Kind::Float);
    l.backward();
    let vars = m.lora_var_store().unwrap().variables();
    assert!(vars.values().all(|v| v.grad().defined()));
    assert!(m.var_store().variables().values().all(|v| !v.requires_grad() && !v.grad().defined()), "the base is frozen");
    m.merge_lora();
    let merged = tch::no_grad(|| m.forward(&ids, Some(&px), None)).unwrap();
    let d = max_abs_diff(&merged, &adapted);
    assert!(d < 1e-4, "merged vs unmerged: {d}");
}

#[test]
fn peft_adapter_loads_in_rust() {
    let (mut m, ids, px) = setup();
    m.load_lora(&fixtures().join("peft_adapter")).unwrap();
    let want = &oracle_tensors()["peft_logits"];
    let got = tch::no_grad(|| m.forward(&ids, Some(&px), None)).unwrap();
    let d = max_abs_diff(&got, want);
    assert!(d <= 1e-4, "PEFT-written adapter: max |Δlogits| = {d}");
}

#[test]
fn rust_adapter_loads_in_peft_and_round_trips() {
    let (mut m, ids, px) = setup();
    m.add_lora(&LoraConfig { r: 4, alpha: 8., dropout: 0., ..Default::default() }, 0).unwrap();
    randomize_b(&m, 5);
    let ours = tch::no_grad(|| m.forward(&ids, Some(&px), None)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    m.save_lora(dir.path()).unwrap();
    // Rust round trip
    let (mut m2, _, _) = setup();
    m2.load_lora(dir.path()).unwrap();
    let back = tch::no_grad(|| m2.forward(&ids, Some(&px), None)).unwrap();
    assert!(max_abs_diff(&back, &ours) < 1e-6);
    // Python PEFT
    let Ok(py) = std::env::var("AMP_PYTHON") else {
        eprintln!("AMP_PYTHON not set: skipping the PEFT load check");
        return;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/oracles/check_peft.py");
    let out = std::process::Command::new(py).arg(script).arg(fixtures()).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "check_peft.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("lora tensors loaded: 28"), "{stdout}");
    let peft: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.path().join("peft_logits.safetensors")).unwrap().into_iter().collect();
    let d = max_abs_diff(&peft["logits"], &ours);
    assert!(d <= 1e-4, "our adapter loaded by PEFT: max |Δlogits| = {d}");
}

/// Issue: same seed, same adapter bytes; another seed, other bytes (the initial `lora_A` comes
/// from the workspace PRNG keyed by the run's seed, never torch's global generator).
#[test]
fn lora_init_follows_the_seed() {
    let save = |seed: u64, noise: i64| -> Vec<u8> {
        let (mut m, _, _) = setup();
        tch::manual_seed(noise); // the global generator must not matter
        m.add_lora(&LoraConfig { r: 4, alpha: 8., dropout: 0.1, ..Default::default() }, seed).unwrap();
        let dir = tempfile::tempdir().unwrap();
        m.save_lora(dir.path()).unwrap();
        std::fs::read(dir.path().join("adapter_model.safetensors")).unwrap()
    };
    let a = save(7, 1);
    assert_eq!(a, save(7, 2), "--seed 7 twice: byte-identical adapters");
    assert_ne!(a, save(8, 1), "--seed 7 vs 8 differ");
}
