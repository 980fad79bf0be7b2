//! Throughput of the auto-check's sentence expert (AMP §3.1.3): all-MiniLM-L6-v2 texts/s on CPU
//! for short noun chunks (3–8 words) and sentences (15–25 words) at batch sizes 32/64/128.
//!
//! Run: `source scripts/setup.sh && cargo bench -p mllm --bench text_experts`
//! (finds the model with `mllm::minilm_dir()`; `AMP_BENCH_THREADS=N` sets torch's intra-op threads).
use std::time::Instant;

use mllm::{minilm_dir, BertEncoder};
use tch::Device;

const WORDS: &[&str] = &[
    "a",
    "the",
    "white",
    "red",
    "small",
    "large",
    "wooden",
    "old",
    "young",
    "man",
    "woman",
    "dog",
    "cat",
    "table",
    "street",
    "building",
    "motorhome",
    "window",
    "umbrella",
    "frisbee",
    "park",
    "bicycle",
    "harbor",
    "boat",
    "kitchen",
    "fridge",
    "plate",
    "broccoli",
    "sidewalk",
    "mountain",
    "sky",
    "near",
    "next",
    "to",
    "on",
    "under",
    "with",
    "holding",
    "parked",
    "standing",
    "sitting",
    "playing",
    "green",
    "yellow",
    "blue",
    "black",
    "shirt",
    "dress",
    "traffic",
    "light",
    "intersection",
    "several",
    "two",
];

/// Deterministic xorshift texts of `lo..=hi` words.
fn texts(n: usize, lo: usize, hi: usize, seed: u64) -> Vec<String> {
    let mut s = seed;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    (0..n)
        .map(|_| {
            let len = lo + (next() as usize) % (hi - lo + 1);
            (0..len).map(|_| WORDS[(next() as usize) % WORDS.len()]).collect::<Vec<_>>().join(" ")
        })
        .collect()
}

fn main() {
    // `cargo bench` passes `--bench`; arguments are ignored.
    if let Some(n) = std::env::var("AMP_BENCH_THREADS").ok().and_then(|v| v.parse().ok()) {
        tch::set_num_threads(n);
    }
    let dir = minilm_dir().expect("all-MiniLM-L6-v2 not found: `source scripts/setup.sh` or set AMP_MINILM_DIR");
    println!("model: {}", dir.display());
    println!("torch intra-op threads: {}, device: cpu", tch::get_num_threads());
    let chunks = texts(1500, 3, 8, 0x9e37_79b9_7f4a_7c15);
    let sentences = texts(500, 15, 25, 0xd1b5_4a32_d192_ed03);
    println!("{:<26} {:>6} {:>10} {:>10} {:>14}", "texts", "batch", "texts/s", "ms/text", "tokenize-only/s");
    for (name, set) in [("chunks (3-8 words)", &chunks), ("sentences (15-25 words)", &sentences)] {
        let refs: Vec<&str> = set.iter().map(String::as_str).collect();
        for bs in [32usize, 64, 128, 256] {
            let enc = BertEncoder::load(&dir, Device::Cpu).expect("load MiniLM").with_batch_size(bs);
            let _ = enc.embed(&refs[..bs.min(refs.len())]).expect("warm-up");
            let t = Instant::now();
            let ids = enc.tokenize(&refs).expect("tokenize");
            let tok_rate = refs.len() as f64 / t.elapsed().as_secs_f64();
            let mean_tokens = ids.iter().map(Vec::len).sum::<usize>() as f64 / ids.len() as f64;
            // Best of 3 full passes (the machine is shared). All texts are distinct.
            let mut best = f64::INFINITY;
            for _ in 0..3 {
                let t = Instant::now();
                let e = enc.embed(&refs).expect("embed");
                assert_eq!(e.size()[0] as usize, refs.len());
                best = best.min(t.elapsed().as_secs_f64());
            }
            println!(
                "{:<26} {bs:>6} {:>10.0} {:>10.3} {:>14.0}   ({mean_tokens:.1} tokens/text)",
                name,
                refs.len() as f64 / best,
                1e3 * best / refs.len() as f64,
                tok_rate
            );
        }
    }
}
