//! The device checks of `scripts/gpu-check.sh` (a): on the device named by `AMP_TEST_DEVICE`
//! (`cpu`, the default, `cuda` or `cuda:N`): bf16 against f32 logits on the transformers
//! fixtures, f32 greedy generation token-identical to transformers, and a few MDPO and SFT
//! steps with LoRA in bf16 with gradient checkpointing. On the CPU they run in every
//! `cargo test`, so a lent GPU hour is spent measuring, not debugging.
mod common;
use common::*;
use mdpo::{MdpoConfig, PreferenceExample, Reference, Trainer, Turn};
use mllm::config::LlavaConfig;
use mllm::conversation::ChatTokenizer;
use mllm::generation::{generate, GenerationConfig, Strategy};
use mllm::image_processor::ImageProcessor;
use mllm::llava::{LoadOptions, Llava};
use mllm::lora::LoraConfig;
use mllm::preference::LlavaPreference;
use tch::{Device, Kind, Tensor};

fn device() -> Device {
    match std::env::var("AMP_TEST_DEVICE").as_deref() {
        Ok("cuda") => Device::Cuda(0),
        Ok(s) if s.starts_with("cuda:") => Device::Cuda(s[5..].parse().expect("AMP_TEST_DEVICE=cuda:N")),
        _ => Device::Cpu,
    }
}

/// bf16 tolerance relative to the largest |logit| (see tests/precision.rs for the derivation;
/// CUDA's bf16 GEMMs accumulate in f32 like the CPU's).
const BF16_REL_TOL: f64 = 0.05;

#[test]
fn device_bf16_logits_match_f32_and_greedy_matches_transformers() {
    let dev = device();
    let dir = fixtures().join("hf");
    let o = oracle_json();
    let t = oracle_tensors();
    let ids_t = Tensor::from_slice(&ids(&o["train_ids"])).unsqueeze(0).to_device(dev);
    let px = t["pixel_values_pad"].to_device(dev);
    let f = Llava::load(&dir, LoadOptions { device: dev, kind: Kind::Float }).unwrap();
    let b = Llava::load(&dir, LoadOptions { device: dev, kind: Kind::BFloat16 }).unwrap();
    let lf = tch::no_grad(|| f.forward(&ids_t, Some(&px), None)).unwrap().to_device(Device::Cpu);
    let lb = tch::no_grad(|| b.forward(&ids_t, Some(&px), None)).unwrap().to_device(Device::Cpu);
    let d = max_abs_diff(&lf, &t["logits"]);
    assert!(d <= 1e-4, "{dev:?} f32 vs transformers: {d}");
    let scale = lf.abs().max().double_value(&[]);
    let rel = max_abs_diff(&lf, &lb) / scale;
    eprintln!("{dev:?}: f32 vs transformers {d:.2e}; bf16 vs f32 {rel:.4} of max |logit|");
    assert!(rel <= BF16_REL_TOL, "{dev:?} bf16 vs f32: {rel}");
    let prompt = ids(&o["gen_ids"]);
    let cfg = GenerationConfig { max_new_tokens: 12, strategy: Strategy::Greedy, ..Default::default() };
    let g = generate(&f, std::slice::from_ref(&prompt), Some(&px), &cfg, None).unwrap();
    assert_eq!(g[0].ids, ids(&o["greedy"]), "{dev:?} greedy");
    let g = generate(&b, &[prompt.clone(), prompt], Some(&Tensor::cat(&[&px, &px], 0)), &cfg, None).unwrap();
    assert_eq!(g.len(), 2);
    assert_eq!(g[0].ids, g[1].ids, "{dev:?} bf16 batch rows agree");
}

fn turn(from: &str, v: &str) -> Turn {
    Turn { from: from.into(), value: v.into() }
}

#[test]
fn device_mdpo_and_sft_lora_steps_in_bf16_with_checkpointing() {
    let dev = device();
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("img.png");
    image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([(x * 6) as u8, (y * 8) as u8, 77])).save(&img).unwrap();
    let ex: Vec<PreferenceExample> = (0..4)
        .map(|i| PreferenceExample {
            id: format!("{i}"),
            image: Some(img.clone()),
            responses: ["A cat on a mat.", "A dog.", "Nothing at all", "Red"]
                .iter()
                .map(|a| vec![turn("human", "<image>\nWhat is shown?"), turn("gpt", &format!("{a} {i}"))])
                .collect(),
        })
        .collect();
    let cfg = LlavaConfig::tiny();
    let policy = || {
        let model = Llava::random(&cfg, LoadOptions { device: dev, kind: Kind::BFloat16 }, 3);
        let tok = ChatTokenizer::byte_level(cfg.image_tokens() as usize).unwrap();
        let mut pm = LlavaPreference::new(model, tok, ImageProcessor::clip(cfg.vision.image_size as u32, cfg.image_aspect_ratio));
        pm.grad_checkpoint = true;
        pm.model.add_lora(&LoraConfig { r: 4, alpha: 8., dropout: 0.05, ..Default::default() }, 7).unwrap();
        pm
    };
    let config = |name: &str, levels: usize| MdpoConfig {
        levels,
        max_steps: Some(3),
        batch_size: 2,
        warmup_steps: 0,
        lr: 1e-2,
        output_dir: tmp.path().join(name),
        plots: false,
        grad_accum: 1,
        ..MdpoConfig::default()
    };
    let mut t = Trainer::new(policy(), Reference::PolicyWithoutAdapters, ex.clone(), config("mdpo", 4)).unwrap();
    let s = t.train().unwrap();
    assert_eq!((s.steps, s.skipped), (3, 0), "{dev:?} MDPO");
    assert!(s.last.unwrap().loss.is_finite());
    let sft_ex: Vec<PreferenceExample> =
        ex.iter().map(|e| PreferenceExample { responses: vec![e.responses[0].clone()], ..e.clone() }).collect();
    let mut t = Trainer::sft(policy(), sft_ex, config("sft", 1)).unwrap();
    let s = t.train().unwrap();
    assert_eq!((s.steps, s.skipped), (3, 0), "{dev:?} SFT");
    assert!(s.last.unwrap().loss.is_finite());
}
