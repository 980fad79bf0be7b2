//! `scripts/gpu-check.sh` parts (b) and (c): a random-weight LLaVA built directly on the device
//! in bf16 — LLaVA-1.5-7B's exact shapes (`--shape 7b`: CLIP ViT-L/14-336, 576 image tokens,
//! 32 layers × 4096, vocab 32000) or a ~100M-parameter shape for the CPU (`--shape 100m`) — then
//! (b) an MDPO K = 4 step at micro-batch 2 with 300-token answers (`--answer-tokens`), LoRA r = 64 and gradient
//! checkpointing: seconds per step, peak memory, model FLOPs utilisation; (c) decode tokens/s
//! at batch 1 and 16. Prints Markdown table rows (`| check | value | note |`).
//!
//! ```text
//! cargo run --example gpu_check -- --shape 7b --device cuda
//! cargo run --example gpu_check -- --shape 100m --device cpu --steps 1 --warmup 0 --answer-tokens 100 --decode-tokens 2
//! ```
//!
//! Model FLOPs per step (the MFU numerator) count what a LoRA step must compute: the frozen
//! base's forward (2·N·T) and input-gradient backward (2·N·T) over the T language-model tokens
//! it runs (shared prefix once + K continuations), with N the decoder's matmul parameters
//! including `lm_head`, plus the vision tower's forward (2·N_vit·576 per image); attention
//! score FLOPs, the adapters' own FLOPs and checkpointing's recomputation are not counted.
use mdpo::{MdpoConfig, PreferenceExample, PreferenceModel, Reference, Trainer, Turn};
use mllm::config::LlavaConfig;
use mllm::conversation::ChatTokenizer;
use mllm::generation::{generate, GenerationConfig, Strategy};
use mllm::image_processor::ImageProcessor;
use mllm::llava::{Llava, LoadOptions};
use mllm::lora::LoraConfig;
use mllm::preference::LlavaPreference;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tch::{Device, Kind};

const K: usize = 4;
const MICRO_BATCH: usize = 2;

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn shape(name: &str) -> LlavaConfig {
    let mut c = LlavaConfig::small(4096, 32, 32000, 336);
    c.vision.hidden_size = 1024;
    c.vision.intermediate_size = 4096;
    c.vision.num_hidden_layers = 24;
    c.vision.num_attention_heads = 16;
    c.text.intermediate_size = 11008;
    c.text.num_attention_heads = 32;
    c.text.num_key_value_heads = Some(32);
    c.text.rms_norm_eps = 1e-5;
    if name == "100m" {
        c.text.hidden_size = 640;
        c.text.intermediate_size = 1728;
        c.text.num_hidden_layers = 8;
        c.text.num_attention_heads = 10;
        c.text.num_key_value_heads = Some(10);
        c.vision.hidden_size = 512;
        c.vision.intermediate_size = 2048;
        c.vision.num_hidden_layers = 6;
        c.vision.num_attention_heads = 8;
    }
    c
}

/// Peak memory in MiB while `f` runs: the device's used memory from `nvidia-smi` on CUDA, the
/// process's anonymous RSS on the CPU, sampled every 50 ms.
fn peak_mib<T>(device: Device, f: impl FnOnce() -> T) -> (T, f64) {
    let read = move || -> u64 {
        match device {
            Device::Cuda(n) => std::process::Command::new("nvidia-smi")
                .args(["--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", &n.to_string()])
                .output()
                .ok()
                .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<u64>().ok())
                .unwrap_or(0),
            _ => std::fs::read_to_string("/proc/self/status")
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |kib| kib / 1024),
        }
    };
    let peak = Arc::new(AtomicU64::new(read()));
    let stop = Arc::new(AtomicBool::new(false));
    let h = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(read(), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        })
    };
    let out = f();
    peak.fetch_max(read(), Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let _ = h.join();
    (out, peak.load(Ordering::Relaxed) as f64)
}

fn sync(device: Device) {
    if let Device::Cuda(n) = device {
        tch::Cuda::synchronize(n as i64);
    }
}

/// The card's dense bf16 peak in FLOP/s: `AMP_PEAK_TFLOPS`, else known NVIDIA cards by name.
fn peak_flops(device: Device) -> Option<(f64, String)> {
    if let Some(t) = std::env::var("AMP_PEAK_TFLOPS").ok().and_then(|s| s.parse::<f64>().ok()) {
        return Some((t * 1e12, format!("AMP_PEAK_TFLOPS={t}")));
    }
    let Device::Cuda(n) = device else { return None };
    let o = std::process::Command::new("nvidia-smi").args(["--query-gpu=name", "--format=csv,noheader", "-i", &n.to_string()]).output().ok()?;
    let name = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let tf = [("H200", 989.0), ("H100", 989.0), ("A100", 312.0), ("L40S", 362.0), ("A6000", 155.0)]
        .iter()
        .find(|(k, _)| name.contains(k))
        .map(|(_, v)| *v)?;
    Some((tf * 1e12, format!("{name}: {tf} TFLOP/s dense bf16")))
}

fn examples(dir: &std::path::Path, n: usize, answer: usize) -> Vec<PreferenceExample> {
    (0..n)
        .map(|i| {
            let path = dir.join(format!("img{i}.png"));
            image::RgbImage::from_fn(336, 336, |x, y| image::Rgb([(x + i as u32) as u8, y as u8, ((x ^ y) & 255) as u8])).save(&path).expect("png");
            let q = format!("<image>\nWhat is unusual about this picture, number {i:02}? Explain briefly.");
            let words = ["red", "blue", "green", "grey", "small", "large", "near", "far"];
            let responses = (0..K)
                .map(|l| {
                    let mut a = String::new();
                    let mut w = l + i;
                    while a.len() < answer {
                        a.push_str(words[w % words.len()]);
                        a.push(' ');
                        w += l + 1;
                    }
                    a.truncate(answer);
                    vec![Turn { from: "human".into(), value: q.clone() }, Turn { from: "gpt".into(), value: a }]
                })
                .collect();
            PreferenceExample { id: i.to_string(), image: Some(path), responses }
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let shape_name = flag(&args, "--shape").unwrap_or_else(|| "7b".into());
    let device = match flag(&args, "--device").as_deref() {
        Some("cpu") | None if !tch::Cuda::is_available() => Device::Cpu,
        Some("cpu") => Device::Cpu,
        Some(s) if s.starts_with("cuda:") => Device::Cuda(s[5..].parse().expect("cuda:N")),
        _ => Device::Cuda(0),
    };
    let steps: usize = flag(&args, "--steps").and_then(|s| s.parse().ok()).unwrap_or(3);
    let warmup: usize = flag(&args, "--warmup").and_then(|s| s.parse().ok()).unwrap_or(1);
    let answer: usize = flag(&args, "--answer-tokens").and_then(|s| s.parse().ok()).unwrap_or(300);
    let decode_tokens: i64 = flag(&args, "--decode-tokens").and_then(|s| s.parse().ok()).unwrap_or(64);
    let cfg = shape(&shape_name);
    let row = |check: &str, value: String, note: String| println!("| {check} | {value} | {note} |");

    // (b) the model, directly on the device in bf16
    let t0 = Instant::now();
    let model = Llava::random(&cfg, LoadOptions { device, kind: Kind::BFloat16 }, 0);
    sync(device);
    let count = |pred: &dyn Fn(&str) -> bool| -> i64 {
        model.var_store().variables().iter().filter(|(k, _)| pred(k)).map(|(_, v)| v.numel() as i64).sum()
    };
    let total = count(&|_| true);
    let n_vit = count(&|k| k.starts_with("vision_tower.") && k.contains(".layers."));
    let n_lm = count(&|k| k.starts_with("language_model.") && !k.contains("embed_tokens") && !k.contains("norm"));
    row("model", format!("{:.3} B parameters ({shape_name})", total as f64 / 1e9), format!("random weights, bf16 on {device:?}, built in {:.1} s", t0.elapsed().as_secs_f64()));
    let tok = ChatTokenizer::byte_level(cfg.image_tokens() as usize).expect("tokenizer");
    let images = ImageProcessor::clip(cfg.vision.image_size as u32, cfg.image_aspect_ratio);
    let mut pm = LlavaPreference::new(model, tok, images);
    pm.grad_checkpoint = true;
    pm.model.add_lora(&LoraConfig { r: 64, alpha: 16., dropout: 0.05, ..Default::default() }, 0).expect("lora");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = examples(dir.path(), MICRO_BATCH * (steps + warmup), answer);
    // language-model tokens a step runs: per example the shared prefix once + K continuations
    let b = pm.encode(&data[..1]).expect("encode");
    let t = b.ids.size()[1] as usize;
    let ids = Vec::<i64>::try_from(b.ids.to_device(Device::Cpu).flatten(0, -1)).expect("ids");
    let valid = Vec::<i64>::try_from(b.key_valid.to_device(Device::Cpu).flatten(0, -1)).expect("valid");
    let len: Vec<usize> = (0..K).map(|r| valid[r * t..(r + 1) * t].iter().sum::<i64>() as usize).collect();
    let p = (0..len[0]).take_while(|&j| (1..K).all(|r| ids[r * t + j] == ids[j])).count();
    let lm_tokens = MICRO_BATCH * (p + len.iter().map(|l| l - p).sum::<usize>());
    let flops = 4.0 * n_lm as f64 * lm_tokens as f64 + 2.0 * n_vit as f64 * (cfg.image_tokens() as usize * MICRO_BATCH) as f64;
    let out = dir.path().join("run");
    let config = MdpoConfig {
        levels: K,
        batch_size: MICRO_BATCH,
        max_steps: Some(steps + warmup),
        save_every: 0,
        plots: false,
        grad_accum: 1,
        ref_batch_size: MICRO_BATCH,
        output_dir: out,
        ..MdpoConfig::default()
    };
    let t0 = Instant::now();
    let mut trainer = Trainer::new(pm, Reference::PolicyWithoutAdapters, data, config).expect("trainer");
    sync(device);
    row("reference precompute", format!("{:.1} s", t0.elapsed().as_secs_f64()), format!("{} examples, cached once", MICRO_BATCH * (steps + warmup)));
    for _ in 0..warmup {
        trainer.step().expect("warmup step");
    }
    sync(device);
    let (secs, peak) = peak_mib(device, || {
        let t = Instant::now();
        for _ in 0..steps {
            let log = trainer.step().expect("step");
            assert!(log.loss.is_finite(), "non-finite loss");
        }
        sync(device);
        t.elapsed().as_secs_f64() / steps as f64
    });
    row(
        &format!("MDPO step (K = 4, micro-batch 2, {answer}-token answers, LoRA r 64, checkpointing)"),
        format!("{secs:.2} s"),
        format!("{lm_tokens} LM tokens/step (prefix {p}); {steps} step(s) after {warmup} warmup"),
    );
    let mem_what = if device.is_cuda() { "device memory used (nvidia-smi)" } else { "process anonymous RSS" };
    row("peak memory during the steps", format!("{:.2} GiB", peak / 1024.0), mem_what.into());
    match peak_flops(device) {
        Some((pf, what)) => row("model FLOPs utilisation", format!("{:.1}%", 100.0 * flops / secs / pf), format!("{:.2} TFLOP/step; {what}", flops / 1e12)),
        None => row("model FLOPs utilisation", "n/a".into(), format!("{:.2} TFLOP/step, {:.3} TFLOP/s achieved; no known peak (set AMP_PEAK_TFLOPS)", flops / 1e12, flops / secs / 1e12)),
    }

    // (c) decode: adapters merged, greedy; tokens/s from t(1 + n) − t(1) (prefill excluded)
    let mut pm = trainer.into_policy();
    pm.model.merge_lora();
    let with_image = device.is_cuda();
    let q = if with_image { "<image>\nDescribe the picture in detail." } else { "Describe a picture in detail." };
    let enc = pm.tokenizer.encode(&[q.to_string(), "x".to_string()], None).expect("prompt");
    let start = enc.response_mask.iter().position(|&m| m).unwrap_or(enc.ids.len());
    let prompt: Vec<i64> = enc.ids[..start].to_vec();
    let img = image::RgbImage::from_fn(336, 336, |x, y| image::Rgb([x as u8, y as u8, 128]));
    let px1 = pm.images.preprocess(&img).unsqueeze(0).to_device(device);
    for batch in [1usize, 16] {
        let prompts = vec![prompt.clone(); batch];
        let px = with_image.then(|| px1.repeat([batch as i64, 1, 1, 1]));
        let run = |n: i64| -> f64 {
            let cfg = GenerationConfig { max_new_tokens: n as usize, strategy: Strategy::Greedy, eos_ids: vec![-1], ..Default::default() };
            let t = Instant::now();
            let g = generate(&pm.model, &prompts, px.as_ref(), &cfg, None).expect("generate");
            sync(device);
            assert!(g.iter().all(|x| x.ids.len() as i64 == n), "generation stopped early");
            t.elapsed().as_secs_f64()
        };
        run(2); // warmup
        let t1 = run(1);
        let tn = run(1 + decode_tokens);
        let tps = (batch as i64 * decode_tokens) as f64 / (tn - t1).max(1e-9);
        row(
            &format!("decode, batch {batch}"),
            format!("{tps:.1} tokens/s"),
            format!("{} prompt tokens{}, {decode_tokens} new tokens per row, greedy, merged LoRA", prompt.len(), if with_image { " incl. 576 image tokens" } else { "" }),
        );
    }
}
