//! Prefill latency and decode throughput of `mllm` vs transformers' `generate` on the same small
//! random LLaVA (CLIP 112 px → 64 image tokens, LLaMA hidden 256, 4 layers, GQA 8/4, vocab
//! 32000), CPU f32, greedy with a KV cache, EOS disabled.
//!
//!   cd /work/main && source scripts/setup.sh && cargo bench -p mllm --bench decode
//!
//! Knobs: BENCH_THREADS (default 1, applied to both sides), BENCH_NEW_TOKENS (64), BENCH_REPS (7),
//! BENCH_VOCAB (32000; at hidden 256 the 32000×256 lm_head is ~¾ of the weights and decoding is
//! bound by reading it), BENCH_BREAKDOWN=1 (also time a bare model step and the lm_head).
//! Each side reports its best (minimum) time over the repetitions: the build machine is shared,
//! and the minimum is the least disturbed measurement.
use mllm::generation::{generate, GenerationConfig};
use mllm::llava::{LoadOptions, Llava};
use std::time::Instant;
use tch::Tensor;

fn env(k: &str, d: usize) -> usize {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

fn main() {
    let threads = env("BENCH_THREADS", 1);
    let new_tokens = env("BENCH_NEW_TOKENS", 64);
    let reps = env("BENCH_REPS", 7);
    let vocab = env("BENCH_VOCAB", 32000);
    let py = std::env::var("AMP_PYTHON").expect("AMP_PYTHON must point at the oracle venv (source scripts/setup.sh)");
    let dir = tempfile::tempdir().expect("tempdir");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/decode_hf.py");
    let out = std::process::Command::new(py)
        .args([script, dir.path().to_str().unwrap(), &threads.to_string(), &new_tokens.to_string(), &reps.to_string(), &vocab.to_string()])
        .output()
        .expect("run decode_hf.py");
    assert!(out.status.success(), "decode_hf.py: {}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string();
    let hf: serde_json::Value = serde_json::from_str(&line).expect("json from decode_hf.py");

    tch::set_num_threads(threads as i32);
    let m = Llava::load(&dir.path().join("model"), LoadOptions::default()).expect("load");
    let prompt: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("prompt.json")).unwrap()).unwrap();
    let ids: Vec<i64> = prompt["ids"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
    let px: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.path().join("pixels.safetensors")).unwrap().into_iter().collect();
    let px = &px["pixel_values"];
    let cfg = |n| GenerationConfig { max_new_tokens: n, eos_ids: vec![-1], ..Default::default() };
    let run = |n| {
        let t = Instant::now();
        let g = generate(&m, std::slice::from_ref(&ids), Some(px), &cfg(n), None).unwrap();
        (t.elapsed().as_secs_f64(), g[0].ids.clone())
    };
    run(2);
    let (mut pre, mut full) = (vec![], vec![]);
    let mut toks = vec![];
    for _ in 0..reps {
        pre.push(run(1).0);
        let (t, g) = run(new_tokens + 1);
        full.push(t);
        toks = g;
    }
    pre.sort_by(f64::total_cmp);
    full.sort_by(f64::total_cmp);
    let (p, f) = (pre[0], full[0]);
    let ours_tps = new_tokens as f64 / (f - p);
    let hf_tps = hf["decode_tok_s"].as_f64().unwrap();
    let hf_pre = hf["prefill_ms"].as_f64().unwrap();
    let hf_toks: Vec<i64> = hf["tokens"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
    if std::env::var("BENCH_BREAKDOWN").is_ok() {
        tch::no_grad(|| {
            let ids_t = Tensor::from_slice(&ids).unsqueeze(0);
            let feats = m.encode_images(px, false).expect("pixels");
            let mut cache = m.new_cache();
            let e = m.embed(&ids_t, Some(&feats)).unwrap();
            let _ = m.hidden_from_embeds(&e, None, Some(&mut cache), false);
            let tok = Tensor::from_slice(&[5i64]).view([1, 1]);
            let t0 = Instant::now();
            for _ in 0..new_tokens {
                let e = m.embed(&tok, None).unwrap();
                let h = m.hidden_from_embeds(&e, None, Some(&mut cache), false);
                let _ = m.language_model.lm_head(&h, false);
            }
            let step = t0.elapsed().as_secs_f64() / new_tokens as f64;
            let h = Tensor::randn([1, 1, 256], tch::kind::FLOAT_CPU);
            let t0 = Instant::now();
            for _ in 0..new_tokens {
                let _ = m.language_model.lm_head(&h, false);
            }
            let head = t0.elapsed().as_secs_f64() / new_tokens as f64;
            println!("  breakdown: model step {:.2} ms (lm_head {:.2} ms)", step * 1e3, head * 1e3);
        });
    }
    println!("decode bench: vocab {vocab}, prompt {} tokens (64 image), {new_tokens} new tokens, {threads} thread(s), best of {reps}", ids.len());
    println!("  same greedy tokens as transformers: {}", toks == hf_toks);
    println!("  prefill   mllm {:8.2} ms   transformers {:8.2} ms   speed-up {:.2}x", p * 1e3, hf_pre, hf_pre / (p * 1e3));
    println!("  decode    mllm {:8.1} tok/s transformers {:8.1} tok/s speed-up {:.2}x", ours_tps, hf_tps, ours_tps / hf_tps);
}
