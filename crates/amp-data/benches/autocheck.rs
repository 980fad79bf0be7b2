//! Auto-check throughput: generated responses (~100 words) checked per second, with the real
//! all-MiniLM-L6-v2 as noun-chunk and sentence expert on the CPU.
//!
//!     cargo bench -p amp-data --bench autocheck            # AMP_BENCH_SAMPLES=67 by default
//!
//! The noun chunker is the auto-check's default ([`NounChunker::auto`]: the spaCy port when its
//! model is installed, else the rule chunker); the bench prints which. Prints responses/s for the
//! whole check and for the parts (tagging + chunking alone, for both chunkers; MiniLM embedding
//! alone), for one check per sample and for [`AutoChecker::check_batch`] over all
//! samples (texts de-duplicated across samples and length-bucketed). For each it prints the
//! executed/real token ratio (padding: the encoder runs `batch × longest` tokens per batch) and
//! the share of the machine's limit: a GEMM of MiniLM's shapes is timed in the same run, and the
//! limit is that rate divided by MiniLM's FLOPs per real token. The GEMM is timed both ways the
//! machine can run it on libtorch's n intra-op threads, one GEMM on all n threads and n
//! single-threaded GEMMs at once (how the MiniLM expert runs the auto-check's embedding calls,
//! data-parallel); the limit is the **higher** of the two rates, and both are printed. The check
//! as `amp check` runs it (blocks of `pipeline::CHECK_BLOCK` samples) is timed last, in
//! `AMP_BENCH_ROUNDS` rounds (default 3), each between two measurements of the GEMM rate: its
//! share of the limit is against the mean of those two, and the bench prints every round's share
//! and their median (the target: ≥ 80% with executed/real tokens ≤ 1.1).
//! `AMP_BENCH_CHUNKER=rules` measures the check with the rule chunker instead of the default;
//! `AMP_BENCH_TORCH_THREADS=n` sets libtorch's intra-op threads; `AMP_BENCH_SKIP_EMBED=1` skips the
//! embedding-only pass.
#[path = "../tests/common/minilm.rs"]
mod minilm;

use amp_data::autocheck::{AutoCheckConfig, AutoChecker, SentenceEmbedder};
use amp_data::chunker::Chunker;
use amp_data::{BrillTagger, NounChunker, TaggerMode};
use std::time::Instant;

const SUBJECTS: &[&str] = &[
    "a white motorhome",
    "a brown dog",
    "two young women",
    "an old man with a cane",
    "a red double-decker bus",
    "a small wooden boat",
    "three children",
    "a black cat",
    "a tall giraffe",
    "a yellow taxi",
    "a large pizza",
    "a group of cyclists",
    "a woman in a blue dress",
    "a stainless steel refrigerator",
    "a snowboarder",
];
const VERBS: &[&str] = &[
    "is parked on",
    "is standing next to",
    "is sitting on",
    "is walking along",
    "can be seen near",
    "is lying under",
    "is placed on top of",
    "is waiting beside",
    "is moving toward",
    "is leaning against",
];
const PLACES: &[&str] = &[
    "a busy street",
    "a green sofa",
    "the sandy beach",
    "a wooden table",
    "the snowy slope",
    "a narrow road",
    "the kitchen counter",
    "a large window",
    "the edge of a lake",
    "a brick wall",
    "a crowded market",
    "the entrance of a small cafe",
    "a tall tree",
    "the parking lot",
];
const TAILS: &[&str] = &[
    ", which is covered with leaves",
    " in the afternoon sun",
    " with a few clouds in the sky",
    ", and a bicycle is leaning nearby",
    " while people pass by",
    "",
];

struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

fn response(rng: &mut Lcg) -> String {
    let mut s = String::new();
    while s.split_whitespace().count() < 95 {
        let subj = SUBJECTS[rng.next(SUBJECTS.len())];
        let mut c = subj.chars();
        let subj = c.next().unwrap().to_uppercase().collect::<String>() + c.as_str();
        s.push_str(&format!(
            "{subj} {} {}{}. ",
            VERBS[rng.next(VERBS.len())],
            PLACES[rng.next(PLACES.len())],
            TAILS[rng.next(TAILS.len())]
        ));
    }
    s.trim_end().to_string()
}

/// The encoder's batch size (mllm's `DEFAULT_BATCH_SIZE`): before `check_batch`, one call per
/// sample and expert, length-sorted by the encoder into batches of this size.
const ENCODER_BATCH: usize = 128;

/// Tokens the encoder executes for one call per sample: length-sorted batches padded to their
/// longest.
fn executed(mut lens: Vec<usize>) -> usize {
    lens.sort_unstable_by(|a, b| b.cmp(a));
    lens.chunks(ENCODER_BATCH).map(|c| c[0] * c.len()).sum()
}

/// Tokens executed by `check_batch`'s length buckets ([`amp_data::autocheck::embedding_batches`]).
fn executed_bucketed(lens: &[usize]) -> usize {
    amp_data::autocheck::embedding_batches(lens)
        .iter()
        .map(|b| b.iter().map(|&i| lens[i]).max().unwrap_or(0) * b.len())
        .sum()
}

/// MiniLM's feed-forward GEMM shape ([4096, 384] x [384, 1536]): FLOPs per product, and the
/// products timed per measurement.
const GEMM_FLOP: f64 = 2.0 * 4096.0 * 384.0 * 1536.0;
const GEMM_REPS: usize = 20;

/// The GEMM's operands, multiplied once (warm-up) on the calling thread's libtorch setting.
fn gemm_operands() -> (tch::Tensor, tch::Tensor) {
    use tch::{Kind, Tensor};
    let x = Tensor::randn([4096, 384], (Kind::Float, tch::Device::Cpu));
    let w = Tensor::randn([1536, 384], (Kind::Float, tch::Device::Cpu));
    let _ = x.matmul(&w.tr());
    (x, w)
}

/// Sustained GFLOP/s of the GEMM on libtorch's intra-op threads.
fn gemm_gflops() -> f64 {
    let (x, w) = gemm_operands();
    let t = Instant::now();
    for _ in 0..GEMM_REPS {
        let _ = x.matmul(&w.tr());
    }
    GEMM_FLOP * GEMM_REPS as f64 / t.elapsed().as_secs_f64() / 1e9
}

/// The same GEMM run data-parallel: one single-threaded GEMM per intra-op thread, all at once
/// (how the `mllm` experts run the auto-check's embedding calls on the CPU); total GFLOP/s. The
/// caller's thread setting is restored.
fn gemm_gflops_parallel() -> f64 {
    let threads = tch::get_num_threads();
    let t = std::sync::Mutex::new(None::<Instant>);
    let barrier = std::sync::Barrier::new(threads as usize);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                tch::set_num_threads(1);
                let (x, w) = gemm_operands();
                barrier.wait();
                t.lock().unwrap().get_or_insert_with(Instant::now);
                for _ in 0..GEMM_REPS {
                    let _ = x.matmul(&w.tr());
                }
            });
        }
    });
    tch::set_num_threads(threads);
    let dt = t
        .into_inner()
        .unwrap()
        .expect("one thread at least")
        .elapsed();
    GEMM_FLOP * (GEMM_REPS * threads as usize) as f64 / dt.as_secs_f64() / 1e9
}

/// The machine's GEMM limit: the higher of the two ways of running MiniLM's GEMM shape on its
/// intra-op threads, one GEMM on all of them ([`gemm_gflops`]) or one single-threaded GEMM per
/// thread at once ([`gemm_gflops_parallel`]). Returns (limit, intra-op, data-parallel).
fn gemm_limit() -> (f64, f64, f64) {
    let (a, b) = (gemm_gflops(), gemm_gflops_parallel());
    (a.max(b), a, b)
}

/// MiniLM-L6 (h = 384, ffn = 1536, 6 layers) FLOPs per token at sequence length `t`: the
/// projections and feed-forward GEMMs plus attention's two [t x t] products.
fn minilm_flops_per_token(t: f64) -> f64 {
    let (h, f, l) = (384.0, 1536.0, 6.0);
    l * (2.0 * (4.0 * h * h + 2.0 * h * f) + 4.0 * t * h)
}

fn main() {
    let n: usize = std::env::var("AMP_BENCH_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(67);
    if let Ok(l) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average before the run: {}", l.trim());
    }
    let tagger = match BrillTagger::from_installed(TaggerMode::Brill) {
        Ok(t) => t,
        Err(e) => {
            println!("autocheck bench cannot run: {e}");
            return;
        }
    };
    let (local, global) = match (minilm::MiniLm::load(), minilm::MiniLm::load()) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            println!("autocheck bench cannot run: real MiniLM expert unavailable: {e}");
            return;
        }
    };
    if let Some(t) = std::env::var("AMP_BENCH_TORCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        tch::set_num_threads(t);
    }
    let k = 4;
    let mut rng = Lcg(42);
    let samples: Vec<(Vec<String>, Vec<Vec<String>>)> = (0..n)
        .map(|_| {
            (
                vec![response(&mut rng)],
                (0..k - 1).map(|_| vec![response(&mut rng)]).collect(),
            )
        })
        .collect();
    let words: usize = samples
        .iter()
        .map(|(s, _)| s[0].split_whitespace().count())
        .sum();
    let responses = n * (k - 1);
    println!(
        "autocheck bench: {n} samples x K = {k} ({responses} generated responses, ~{} words each), torch threads {}, rayon threads {}",
        words / n,
        tch::get_num_threads(),
        rayon::current_num_threads()
    );
    let rules: NounChunker = Chunker::new(tagger).into();
    let chunker = match std::env::var("AMP_BENCH_CHUNKER").as_deref() {
        Ok("rules") => Ok(rules.clone()),
        _ => NounChunker::auto(None),
    };
    let chunker = match chunker {
        Ok(c) => c,
        Err(e) => {
            println!("autocheck bench cannot run: the default chunker does not load: {e}");
            return;
        }
    };
    println!(
        "noun chunker (the auto-check's default): {}",
        match &chunker {
            NounChunker::Spacy(c) => format!(
                "spaCy port, {} ({})",
                c.identity(),
                c.pipeline().dir.display()
            ),
            NounChunker::Rules(_) => format!("rules, {}", chunker.identity()),
        }
    );
    // tagging + chunking alone, one thread, each chunker (the default last)
    let mut chunkers = vec![("rules", rules)];
    if matches!(chunker, NounChunker::Spacy(_)) {
        chunkers.push(("spaCy port", chunker.clone()));
    }
    for (name, c) in &chunkers {
        let _ = c.chunk(&samples[0].0[0]); // warm-up
        let t = Instant::now();
        let mut chunks = 0;
        for (s, g) in &samples {
            for r in std::iter::once(s).chain(g.iter()) {
                chunks += r.iter().map(|t| c.chunk(t).chunks.len()).sum::<usize>();
            }
        }
        let dt = t.elapsed().as_secs_f64();
        println!(
            "tagging + chunking only ({name}, 1 thread): {:.1} responses/s ({} chunks, {:.1} per response)",
            (n * k) as f64 / dt,
            chunks,
            chunks as f64 / (n * k) as f64
        );
    }
    let checker = AutoChecker::new(chunker, local, global, AutoCheckConfig::default());
    // warm-up
    checker.check(&samples[0].0, &samples[0].1).unwrap();
    let t = Instant::now();
    let all: Vec<(&[String], &[Vec<String>])> = samples
        .iter()
        .map(|(s, g)| (s.as_slice(), g.as_slice()))
        .collect();
    let _ = checker.chunk_batch(&all);
    let dt = t.elapsed().as_secs_f64();
    println!(
        "tagging + chunking only (default chunker, as check_batch does it: distinct texts over rayon, {} threads): {:.1} responses/s",
        rayon::current_num_threads(),
        (n * k) as f64 / dt
    );

    // embedding volume of one pass: unique chunk texts and sentences per sample, and their tokens
    let (mut texts, mut chars) = (0usize, 0usize);
    let mut all_texts: Vec<String> = Vec::new();
    for (s, g) in &samples {
        let mut uniq = std::collections::BTreeSet::new();
        for r in std::iter::once(s).chain(g.iter()) {
            let c = checker.chunk_turns(r);
            for (i, ch) in c.chunks.iter().enumerate() {
                uniq.insert(ch.text.clone());
                uniq.insert(c.sentence_of(i).to_string());
            }
        }
        texts += uniq.len();
        chars += uniq.iter().map(|t| t.len()).sum::<usize>();
        all_texts.extend(uniq);
    }
    let t = Instant::now();
    let embed_only = std::env::var("AMP_BENCH_SKIP_EMBED").is_err();
    for batch in all_texts.chunks(64).filter(|_| embed_only) {
        amp_data::SentenceEmbedder::embed(&checker.local, batch).unwrap();
    }
    let dt = t.elapsed().as_secs_f64();
    if embed_only {
        println!(
        "MiniLM embedding only: {} unique texts ({:.0} per sample, {:.0} chars avg) in {:.2} s = {:.0} texts/s",
        texts,
        texts as f64 / n as f64,
        chars as f64 / texts as f64,
        dt,
        texts as f64 / dt
    );
    }

    // token accounting: real tokens of the unique texts, executed tokens per embedding call
    let per_sample_calls: Vec<(Vec<String>, Vec<String>)> = samples
        .iter()
        .map(|(s, g)| {
            let (mut l, mut gl) = (Vec::new(), Vec::new());
            for r in std::iter::once(s).chain(g.iter()) {
                let c = checker.chunk_turns(r);
                for (i, ch) in c.chunks.iter().enumerate() {
                    l.push(ch.text.clone());
                    gl.push(c.sentence_of(i).to_string());
                }
            }
            for v in [&mut l, &mut gl] {
                v.sort();
                v.dedup();
            }
            (l, gl)
        })
        .collect();
    let lens = |t: &[String]| {
        checker
            .local
            .token_lens(t)
            .expect("MiniLM reports token lengths")
    };
    let (mut real_ps, mut exec_ps) = (0usize, 0usize);
    for (l, g) in &per_sample_calls {
        for v in [l, g] {
            let ls = lens(v);
            real_ps += ls.iter().sum::<usize>();
            exec_ps += executed(ls);
        }
    }
    let mut run_l: Vec<String> = per_sample_calls
        .iter()
        .flat_map(|(l, _)| l.clone())
        .collect();
    let mut run_g: Vec<String> = per_sample_calls
        .iter()
        .flat_map(|(_, g)| g.clone())
        .collect();
    let (mut real_b, mut exec_b) = (0usize, 0usize);
    for v in [&mut run_l, &mut run_g] {
        v.sort();
        v.dedup();
        let ls = lens(v);
        real_b += ls.iter().sum::<usize>();
        exec_b += executed_bucketed(&ls);
    }
    // `amp check` (pipeline::check): check_batch on its blocks (CHECK_BLOCK samples, a short
    // tail joined to the block before)
    let block = amp_data::pipeline::CHECK_BLOCK;
    let (mut real_k, mut exec_k, mut n_k) = (0usize, 0usize, 0usize);
    for blk in amp_data::pipeline::check_blocks(&per_sample_calls) {
        for pick in [0, 1] {
            let mut v: Vec<String> = blk
                .iter()
                .flat_map(|(l, g)| if pick == 0 { l.clone() } else { g.clone() })
                .collect();
            v.sort();
            v.dedup();
            let ls = lens(&v);
            real_k += ls.iter().sum::<usize>();
            exec_k += executed_bucketed(&ls);
            n_k += v.len();
        }
    }
    let (gflops, gflops_intra, gflops_dp) = gemm_limit();
    // the limit: useful (real-token) FLOPs at the measured GEMM rate; attention at the mean length
    let n_ps: usize = per_sample_calls
        .iter()
        .map(|(l, g)| l.len() + g.len())
        .sum();
    let n_b = run_l.len() + run_g.len();
    let limit = |real: usize, n_texts: usize| {
        let flops = real as f64 * minilm_flops_per_token(real as f64 / n_texts.max(1) as f64);
        responses as f64 / (flops / (gflops * 1e9))
    };
    let (limit_ps, limit_b) = (limit(real_ps, n_ps), limit(real_b, n_b));
    let limit_k = limit(real_k, n_k);
    let t = tch::get_num_threads();
    println!(
        "GEMM limit: {gflops:.1} GFLOP/s, the higher of one GEMM on {t} torch threads ({gflops_intra:.1}) and {t} single-threaded GEMMs at once ({gflops_dp:.1}), [4096,384]x[384,1536]; MiniLM {:.1} MFLOP/token",
        minilm_flops_per_token(32.0) / 1e6
    );
    println!(
        "one check per sample: {real_ps} real tokens ({:.0} per response), executed/real {:.2}, limit {:.1} responses/s",
        real_ps as f64 / responses as f64,
        exec_ps as f64 / real_ps as f64,
        limit_ps
    );
    println!(
        "check_batch over the run: {real_b} real tokens ({:.0} per response), executed/real {:.2}, limit {:.1} responses/s",
        real_b as f64 / responses as f64,
        exec_b as f64 / real_b as f64,
        limit_b
    );

    println!(
        "check_batch in blocks of {block} samples, a short tail joined (amp check): {real_k} real tokens ({:.0} per response), executed/real {:.2}, limit {:.1} responses/s",
        real_k as f64 / responses as f64,
        exec_k as f64 / real_k as f64,
        limit_k
    );

    let t = Instant::now();
    for (s, g) in &samples {
        checker.check(s, g).unwrap();
    }
    let dt = t.elapsed().as_secs_f64();
    println!(
        "full auto-check, one check per sample: {:.1} generated responses/s ({:.3} s for {responses}) = {:.0}% of its limit",
        responses as f64 / dt,
        dt,
        100.0 * responses as f64 / dt / limit_ps
    );

    // the GEMM rate again, right before: on a shared machine the load drifts
    let (gflops_now, ..) = gemm_limit();
    let limit_b_now = limit_b * gflops_now / gflops;
    let t = Instant::now();
    let out = checker.check_batch(&samples).unwrap();
    let dt = t.elapsed().as_secs_f64();
    assert_eq!(out.len(), samples.len());
    println!(
        "full auto-check, check_batch over the run: {:.1} generated responses/s ({:.3} s for {responses}) = {:.0}% of the per-sample limit, {:.0}% of its own (GEMM re-measured just before: {gflops_now:.1} GFLOP/s, limit {limit_b_now:.1} responses/s: {:.0}%)",
        responses as f64 / dt,
        dt,
        100.0 * responses as f64 / dt / limit_ps,
        100.0 * responses as f64 / dt / limit_b,
        100.0 * responses as f64 / dt / limit_b_now
    );

    // `amp check`'s path, its blocks, in rounds: each timed between two measurements of the GEMM
    // rate, so that its share of the limit compares it with the machine as it was during that
    // round (on a shared machine the rate drifts by ±8% within a run)
    let rounds: usize = std::env::var("AMP_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let mut shares = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let (before, ..) = gemm_limit();
        let t = Instant::now();
        for blk in amp_data::pipeline::check_blocks(&samples) {
            checker.check_batch(blk).unwrap();
        }
        let dt = t.elapsed().as_secs_f64();
        let (after, ..) = gemm_limit();
        let rate = (before + after) / 2.0;
        let limit_round = limit_k * rate / gflops;
        let share = 100.0 * responses as f64 / dt / limit_round;
        shares.push(share);
        println!(
            "full auto-check, check_batch in blocks of {block}, a short tail joined (amp check), round {round}/{rounds}: {:.1} generated responses/s ({:.3} s for {responses}); GEMM {before:.1} before, {after:.1} after: limit {limit_round:.1} responses/s: {share:.0}%",
            responses as f64 / dt,
            dt,
        );
    }
    let mut sorted = shares.clone();
    sorted.sort_by(f64::total_cmp);
    let met = shares.iter().filter(|&&s| s >= 80.0).count();
    println!(
        "amp check's path: median {:.0}% of the GEMM limit over {rounds} rounds (lowest {:.0}%, highest {:.0}%); >= 80% in {met} of {rounds}; executed/real tokens {:.2}",
        sorted[sorted.len() / 2],
        sorted[0],
        sorted[sorted.len() - 1],
        exec_k as f64 / real_k as f64
    );
}
