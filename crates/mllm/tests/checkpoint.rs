//! The memory-mapped loader: dtype conversion on load, and the checkpoint fingerprint that keys the
//! frozen base for the reference cache (cheap, yet sensitive to a changed weight).
mod common;
use common::*;
use mllm::checkpoint::{Checkpoint, FINGERPRINT_WHOLE};
use mllm::llava::{LoadOptions, Llava};
use mllm::lora::LoraConfig;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
}

fn edit(file: &Path, f: impl Fn(&str, &Tensor) -> Option<Tensor>) {
    let v: Vec<(String, Tensor)> = Tensor::read_safetensors(file)
        .unwrap()
        .into_iter()
        .map(|(k, t)| {
            let n = f(&k, &t).unwrap_or(t);
            (k, n)
        })
        .collect();
    Tensor::write_safetensors(&v, file).unwrap();
}

#[test]
fn base_fingerprint_follows_the_files_and_a_changed_weight() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("hf");
    copy_dir(&fixtures().join("hf"), &d);
    let a = Llava::load(&d, LoadOptions::default()).unwrap().base_fingerprint().unwrap();
    assert!(a.starts_with("checkpoint:"), "{a}");
    assert_eq!(a, Llava::load(&d, LoadOptions::default()).unwrap().base_fingerprint().unwrap(), "stable");
    // The same files loaded in another kind score differently: another key.
    let bf = LoadOptions { device: Device::Cpu, kind: Kind::BFloat16 };
    assert_ne!(a, Llava::load(&d, bf).unwrap().base_fingerprint().unwrap());
    // One changed value in one tensor changes the key.
    let key = "language_model.model.layers.1.mlp.up_proj.weight";
    edit(&d.join("model.safetensors"), |k, t| {
        (k == key).then(|| {
            let t = t.copy();
            let _ = t.get(3).get(5).fill_(0.25);
            t
        })
    });
    let b = Llava::load(&d, LoadOptions::default()).unwrap().base_fingerprint().unwrap();
    assert_ne!(a, b, "a changed weight must change the fingerprint");
    // Merging an adapter into the base leaves the files behind: the weights are hashed instead.
    let mut m = Llava::load(&d, LoadOptions::default()).unwrap();
    m.add_lora(&LoraConfig { r: 2, alpha: 4., dropout: 0., ..Default::default() }, 0).unwrap();
    m.merge_lora();
    let c = m.base_fingerprint().unwrap();
    assert!(!c.starts_with("checkpoint:") && c != b, "{c}");
}

/// A checkpoint with one large tensor (sampled, not hashed whole) and one small one.
fn write_large(path: &Path, scale: f64, poke: Option<(i64, f64)>) {
    let n = (FINGERPRINT_WHOLE as i64) * 4; // f32: 16× the whole-hash threshold in bytes
    let big = Tensor::arange(n, (Kind::Float, Device::Cpu)).sin() * scale;
    if let Some((i, v)) = poke {
        let _ = big.get(i).fill_(v);
    }
    let small = Tensor::ones([7], (Kind::Float, Device::Cpu));
    Tensor::write_safetensors(&[("big", big), ("small", small)], path).unwrap();
}

fn fp(path: &Path) -> String {
    let files: Vec<PathBuf> = vec![path.into()];
    Checkpoint::open(path, &files, &|k| Some(k.to_string())).unwrap().fingerprint()
}

#[test]
fn sampled_fingerprint_sees_fine_tuned_and_edged_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("m.safetensors");
    write_large(&p, 1.0, None);
    let base = fp(&p);
    assert_eq!(base, fp(&p));
    // Every weight moved a little (what any fine-tune does).
    write_large(&p, 1.0 + 1e-6, None);
    assert_ne!(base, fp(&p));
    // A single value at the start or the end of the tensor (both inside sampled windows).
    let n = (FINGERPRINT_WHOLE as i64) * 4;
    for i in [0, n - 1] {
        write_large(&p, 1.0, Some((i, 7.0)));
        assert_ne!(base, fp(&p), "value {i}");
    }
}

#[test]
fn loads_in_the_requested_kind() {
    let d = fixtures().join("hf_sharded");
    let f32m = Llava::load(&d, LoadOptions::default()).unwrap();
    let bf = Llava::load(&d, LoadOptions { device: Device::Cpu, kind: Kind::BFloat16 }).unwrap();
    assert_eq!(bf.kind(), Kind::BFloat16);
    let a = f32m.var_store().variables();
    let b = bf.var_store().variables();
    assert_eq!(a.len(), b.len());
    for (k, t) in &a {
        let u = &b[k];
        assert_eq!(u.kind(), Kind::BFloat16, "{k}");
        assert!(!u.requires_grad(), "{k}: the base is frozen");
        // bf16 is f32 rounded to 8 mantissa bits: relative error ≤ 2^-8.
        let d = (t - u.to_kind(Kind::Float)).abs().max().double_value(&[]);
        assert!(d <= t.abs().max().double_value(&[]) * 2f64.powi(-8), "{k}: {d}");
    }
}
