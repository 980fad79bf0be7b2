//! bf16 without autocast: a bf16 base with f32 LoRA masters (cast to the activation dtype inside
//! the forward) gives logits close to f32 on the transformers fixtures and trains: a few MDPO
//! steps with finite losses, adapters and optimizer moments staying f32.
mod common;
use common::*;
use mdpo::{MdpoConfig, PreferenceExample, Reference, Trainer, Turn};
use mllm::config::LlavaConfig;
use mllm::conversation::ChatTokenizer;
use mllm::image_processor::ImageProcessor;
use mllm::llava::{LoadOptions, Llava};
use mllm::lora::LoraConfig;
use mllm::preference::LlavaPreference;
use tch::{Device, Kind, Tensor};

/// Tolerance of bf16 against f32, relative to the largest |logit|. bf16 keeps 8 significant bits
/// (unit roundoff u = 2⁻⁸ ≈ 3.9e-3 per rounding, u/2 on average); the fixture model rounds the
/// output of about 25 ops in sequence (two vision layers, the projector, two decoder layers, the
/// final norm and `lm_head`, each with several matmuls/norms), and through the residual stream
/// their errors add up, worst case linearly: ≈ 25 · u/2 ≈ 0.05 of the activation scale. Measured
/// on the fixtures: 0.029. A real mistake (a wrong cast, a skipped adapter) moves logits by O(1).
const BF16_REL_TOL: f64 = 0.05;

#[test]
fn bf16_logits_match_f32_on_the_fixtures() {
    let dir = fixtures().join("hf");
    let o = oracle_json();
    let t = oracle_tensors();
    let ids = Tensor::from_slice(&ids(&o["train_ids"])).unsqueeze(0);
    let px = &t["pixel_values_pad"];
    let mut logits = Vec::new();
    for kind in [Kind::Float, Kind::BFloat16] {
        let mut m = Llava::load(&dir, LoadOptions { device: Device::Cpu, kind }).unwrap();
        assert_eq!(m.kind(), kind);
        // the PEFT adapter of the fixtures, unmerged: exercises the f32-master → bf16 cast
        m.load_lora(&fixtures().join("peft_adapter")).unwrap();
        logits.push(tch::no_grad(|| m.forward(&ids, Some(px), None)).unwrap());
    }
    let (f, b) = (&logits[0], &logits[1]);
    assert_eq!(b.kind(), Kind::Float, "logits come back in f32");
    let scale = f.abs().max().double_value(&[]);
    let d = max_abs_diff(f, b);
    let top1 = f.argmax(-1, false).eq_tensor(&b.argmax(-1, false)).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
    eprintln!("bf16 vs f32: max |Δlogit| = {d:.4} (max |logit| {scale:.3}, rel {:.4}); top-1 agreement {top1:.3}", d / scale);
    assert!(d / scale <= BF16_REL_TOL, "bf16 logits differ by {d} (max |logit| {scale})");
    // and against transformers' f32 logits of the same adapter
    let want = &t["peft_logits"];
    assert!(max_abs_diff(b, want) / scale <= BF16_REL_TOL);
}

fn turn(from: &str, v: &str) -> Turn {
    Turn { from: from.into(), value: v.into() }
}

#[test]
fn bf16_lora_trains_without_autocast() {
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("img.png");
    image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([(x * 6) as u8, (y * 8) as u8, 77])).save(&img).unwrap();
    let ex: Vec<PreferenceExample> = (0..4)
        .map(|i| PreferenceExample {
            id: format!("{i}"),
            image: (i % 2 == 0).then(|| img.clone()),
            responses: ["A cat on a mat.", "A dog.", "Nothing at all", "Red"]
                .iter()
                .map(|a| {
                    let q = if i % 2 == 0 { "<image>\nWhat is shown?" } else { "Say something." };
                    vec![turn("human", q), turn("gpt", &format!("{a} {i}"))]
                })
                .collect(),
        })
        .collect();
    let cfg = LlavaConfig::tiny();
    for checkpoint in [false, true] {
        let model = Llava::random(&cfg, LoadOptions { device: Device::Cpu, kind: Kind::BFloat16 }, 3);
        let tok = ChatTokenizer::byte_level(cfg.image_tokens() as usize).unwrap();
        let mut pm = LlavaPreference::new(model, tok, ImageProcessor::clip(cfg.vision.image_size as u32, cfg.image_aspect_ratio));
        pm.grad_checkpoint = checkpoint;
        pm.model.add_lora(&LoraConfig { r: 4, alpha: 8., dropout: 0.1, ..Default::default() }, 7).unwrap();
        let out = tmp.path().join(format!("run-{checkpoint}"));
        let config = MdpoConfig {
            max_steps: Some(3),
            batch_size: 2,
            warmup_steps: 0,
            lr: 1e-2,
            output_dir: out.clone(),
            plots: false,
            grad_accum: 1,
            ..MdpoConfig::default()
        };
        let mut trainer = Trainer::new(pm, Reference::PolicyWithoutAdapters, ex.clone(), config).unwrap();
        let s = trainer.train().unwrap();
        assert_eq!((s.steps, s.skipped), (3, 0), "checkpoint={checkpoint}");
        let last = s.last.unwrap();
        assert!(last.loss.is_finite() && last.grad_norm.is_finite() && last.grad_norm > 0.);
        let vars = trainer.policy().model.lora_var_store().unwrap().variables();
        assert!(vars.values().all(|v| v.kind() == Kind::Float), "LoRA masters stay f32");
        let moved = vars.iter().filter(|(k, _)| k.contains("lora_B")).map(|(_, v)| v.abs().max().double_value(&[])).fold(0., f64::max);
        assert!(moved > 0., "lora_B moved from 0");
        // the AdamW moments of the newest checkpoint are f32
        let ck = std::fs::read_dir(out.join("checkpoints")).unwrap().map(|e| e.unwrap().path()).max().unwrap();
        let opt = Tensor::read_safetensors(ck.join("optimizer.safetensors")).unwrap();
        assert!(!opt.is_empty() && opt.iter().all(|(_, t)| t.kind() == Kind::Float), "optimizer state in f32");
        eprintln!("bf16 checkpoint={checkpoint}: last loss {:.4}, grad norm {:.4}", last.loss, last.grad_norm);
    }
}
