//! Samples/s of one K = 4 MDPO optimizer step on a tiny random LLaVA (`mllm`), four ways:
//!
//! * `naive`         — every response re-encodes its image; the reference model runs every step;
//! * `shared`        — each image encoded once per example and shared by its K responses;
//! * `shared+cached` — shared, and the reference log-probs precomputed once (cached on disk);
//! * `shared+prefix+cached` — as `shared+cached`, and each example's common prompt prefix
//!   (system prompt, image tokens, human turn) run through the language model once, the K
//!   continuations attending to its keys/values (`LlavaPreference::share_prefix`).
//!
//! The first three run with `share_prefix = false`.
//!
//! ```text
//! cargo bench --bench mdpo_step                 # both model sizes, CPU (or CUDA if present)
//! MDPO_BENCH_STEPS=20 cargo bench --bench mdpo_step
//! ```
//! Results are recorded in crates/mdpo/BENCHMARKS.md.
use mdpo::{MdpoConfig, PreferenceExample, Reference, Trainer, Turn};
use mllm::config::LlavaConfig;
use mllm::preference::LlavaPreference;
use std::path::Path;
use std::time::Instant;
use tch::Device;

const K: usize = 4;

fn examples(dir: &Path, n: usize) -> Vec<PreferenceExample> {
    (0..n)
        .map(|i| {
            let path = dir.join(format!("img{i}.png"));
            let img = image::RgbImage::from_fn(64, 64, |x, y| {
                image::Rgb([(x * 4 + i as u32) as u8, (y * 4) as u8, ((x + y) * 2) as u8])
            });
            img.save(&path).expect("write png");
            let prompt = "<image>\nDescribe the picture in detail.".to_string();
            let responses = (0..K)
                .map(|l| {
                    let answer = format!("Level {l} answer {i}: a {} scene with {} objects.", ["red", "blue", "green", "grey"][l], 3 + l);
                    vec![Turn { from: "human".into(), value: prompt.clone() }, Turn { from: "gpt".into(), value: answer }]
                })
                .collect();
            PreferenceExample { id: i.to_string(), image: Some(path), responses }
        })
        .collect()
}

/// The policy gets LoRA (r = 8, AMP's target modules, no dropout); the reference is the bare base.
fn model(cfg: &LlavaConfig, share: bool, prefix: bool, device: Device, lora: bool) -> LlavaPreference {
    let mut m = LlavaPreference::tiny_with(cfg, 0, device).expect("tiny llava");
    m.share_image_encoding = share;
    m.share_prefix = prefix;
    if lora {
        let lcfg = mllm::lora::LoraConfig { dropout: 0.0, ..Default::default() };
        m.model.add_lora(&lcfg).expect("lora");
    }
    m
}

/// Returns (samples/s over the measured steps, one-time reference precompute seconds).
fn run(cfg: &LlavaConfig, data: &[PreferenceExample], share: bool, prefix: bool, cached: bool, steps: usize, device: Device) -> (f64, f64) {
    let out = tempfile::tempdir().expect("tempdir");
    let config = MdpoConfig {
        levels: K,
        batch_size: 4,
        grad_accum: 1,
        max_steps: Some(steps + 2),
        precompute_reference: cached,
        save_every: 0,
        plots: false,
        output_dir: out.path().to_path_buf(),
        ..MdpoConfig::default()
    };
    let t0 = Instant::now();
    let mut trainer =
        Trainer::new(
            model(cfg, share, prefix, device, true),
            Reference::Model(model(cfg, share, prefix, device, false)),
            data.to_vec(),
            config,
        )
            .expect("trainer");
    let setup = t0.elapsed().as_secs_f64();
    for _ in 0..2 {
        trainer.step().expect("warmup step");
    }
    let t = Instant::now();
    let mut n = 0;
    for _ in 0..steps {
        n += trainer.step().expect("step").examples;
    }
    if device.is_cuda() {
        tch::Cuda::synchronize(0);
    }
    (n as f64 / t.elapsed().as_secs_f64(), setup)
}

fn main() {
    let steps: usize = std::env::var("MDPO_BENCH_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    if let Some(n) = std::env::var("MDPO_BENCH_THREADS").ok().and_then(|s| s.parse().ok()) {
        tch::set_num_threads(n);
    }
    let device = Device::cuda_if_available();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = examples(dir.path(), 16);
    let tiny = LlavaConfig::tiny();
    let mut heavy = LlavaConfig::small(64, 2, 260, 112);
    heavy.vision.hidden_size = 128;
    heavy.vision.intermediate_size = 512;
    heavy.vision.num_hidden_layers = 4;
    println!("device: {device:?}; K = {K}, batch 4, {steps} measured steps after 2 warmup steps");
    for (name, cfg) in [("tiny (28 px, 4 image tokens, vision 32x2)", &tiny), ("vision-heavy (112 px, 64 image tokens, vision 128x4)", &heavy)] {
        {
            use mdpo::PreferenceModel;
            let mut m = model(cfg, true, false, device, true);
            let t = Instant::now();
            for c in data.chunks(4) {
                m.encode(c).expect("encode");
            }
            let enc = t.elapsed().as_secs_f64() / 4.0;
            let b = m.encode(&data[..4]).expect("encode");
            println!("  [{name}] encode of a batch of 4: {enc:.3} s; rows of {} tokens", b.ids.size()[1]);
            for (i, prefix) in [false, true, false, true].into_iter().enumerate() {
                let warm = i >= 2;
                m.share_prefix = prefix;
                let t = Instant::now();
                let lp = tch::no_grad(|| m.response_logps(&b, 0..K, false)).expect("logps");
                let _ = lp.sum.sum(tch::Kind::Float).double_value(&[]);
                // (the first two calls are warmup)
                if warm {
                    println!("  [{name}] one no-grad K = {K} forward, share_prefix = {prefix}: {:.3} s", t.elapsed().as_secs_f64());
                }
            }
        }
        let (naive, _) = run(cfg, &data, false, false, false, steps, device);
        let (shared, _) = run(cfg, &data, true, false, false, steps, device);
        let (cached, setup) = run(cfg, &data, true, false, true, steps, device);
        let (prefix, psetup) = run(cfg, &data, true, true, true, steps, device);
        println!("{name}");
        println!("  naive          {naive:8.2} samples/s  (1.00x)");
        println!("  shared         {shared:8.2} samples/s  ({:.2}x)", shared / naive);
        println!("  shared+cached  {cached:8.2} samples/s  ({:.2}x)  [one-time reference precompute incl. setup: {setup:.2} s]", cached / naive);
        println!(
            "  shared+prefix+cached  {prefix:8.2} samples/s  ({:.2}x)  [one-time reference precompute incl. setup: {psetup:.2} s]",
            prefix / naive
        );
    }
}
