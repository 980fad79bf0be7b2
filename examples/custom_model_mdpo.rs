//! Train a model that is *not* from `mllm` with the MDPO trainer, through `mdpo`'s public API only.
//!
//! The model is a tiny byte-level language model defined right here: the next byte is predicted
//! from an embedding of the previous two bytes plus a mean-pooled embedding of the prompt, through
//! a one-hidden-layer MLP. It implements [`mdpo::PreferenceModel`]; the data is a synthetic
//! K = 3 preference set (best answers use the first letters of the alphabet, worse levels drift
//! further down it), and the reward accuracy over all three pairs rises as MDPO trains.
//!
//! ```text
//! cargo run --release --example custom_model_mdpo -- --steps 60 --out runs/custom-mdpo
//! ```
//! Writes `metrics.jsonl`, `checkpoints/` and `plots/*.png` into `--out`. Data parallel
//! (docs/distributed.md): `--nproc 2` runs two local ranks over Gloo, each on `--batch-size ×
//! --grad-accum` examples per step; a torchrun environment (`RANK`, `WORLD_SIZE`, ...) is joined
//! as is.
use clap::Parser;
use mdpo::{
    trainer::Task,
    Conversation, MdpoConfig, PreferenceExample, PreferenceModel, Reference, ResponseLogps, Trainer, Turn,
};
use std::ops::Range;
use std::path::PathBuf;
use tch::{nn, nn::Module, Device, Kind, Tensor};

#[derive(Parser)]
struct Args {
    /// Optimizer steps.
    #[arg(long, default_value_t = 60)]
    steps: usize,
    /// Run directory (wiped first).
    #[arg(long, default_value = "runs/custom-mdpo")]
    out: PathBuf,
    /// Levels computed per forward/backward (exercise level chunking with 1).
    #[arg(long)]
    level_chunk: Option<usize>,
    /// Examples per micro-batch and rank.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Micro-batches per optimizer step and rank.
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Local data-parallel ranks (processes) to launch.
    #[arg(long, default_value_t = 1)]
    nproc: usize,
}

const DIM: i64 = 32;

/// The example's own model: a bigram-context MLP over bytes.
struct ByteMlp {
    vs: nn::VarStore,
    emb: nn::Embedding,
    hidden: nn::Linear,
    out: nn::Linear,
    round_weight: f64,
}

impl ByteMlp {
    fn new(seed: i64) -> Self {
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(Device::cuda_if_available());
        let root = vs.root();
        let emb = nn::embedding(&root / "emb", 256, DIM, Default::default());
        let hidden = nn::linear(&root / "hidden", 3 * DIM, 64, Default::default());
        let out = nn::linear(&root / "out", 64, 256, Default::default());
        Self { vs, emb, hidden, out, round_weight: 0.05 }
    }
}

/// One level of a batch: response tokens with their context, weight and example index.
struct Level {
    ctx: Tensor,    // [N, 2] previous two bytes
    next: Tensor,   // [N]
    weight: Tensor, // [N] 1 + c·round
    slot: Tensor,   // [N] example index
    prompt: Tensor, // [P] prompt bytes
    pslot: Tensor,  // [P] example index
}

struct Batch {
    levels: Vec<Level>,
    size: usize,
}

/// The model's own error: the trainer hands it back as the source of `MdpoError::Model`.
#[derive(Debug, thiserror::Error)]
enum ByteMlpError {
    #[error("level {0} is out of range")]
    Level(usize),
}

impl PreferenceModel for ByteMlp {
    type Batch = Batch;
    type Error = ByteMlpError;

    fn encode(&self, examples: &[PreferenceExample]) -> Result<Batch, ByteMlpError> {
        let dev = self.vs.device();
        let k = examples[0].levels();
        let mut levels = Vec::with_capacity(k);
        for l in 0..k {
            let (mut ctx, mut next, mut weight, mut slot, mut prompt, mut pslot) =
                (vec![], vec![], vec![], vec![], vec![], vec![]);
            for (b, ex) in examples.iter().enumerate() {
                let mut hist = [0i64; 2];
                let mut round = 0;
                for turn in &ex.responses[l] {
                    for &x in turn.value.as_bytes() {
                        if turn.from == "gpt" {
                            ctx.extend_from_slice(&hist);
                            next.push(x as i64);
                            weight.push(1.0 + self.round_weight * round as f64);
                            slot.push(b as i64);
                        } else {
                            prompt.push(x as i64);
                            pslot.push(b as i64);
                        }
                        hist = [hist[1], x as i64];
                    }
                    if turn.from == "gpt" {
                        round += 1;
                    }
                }
            }
            let n = next.len() as i64;
            levels.push(Level {
                ctx: Tensor::from_slice(&ctx).reshape([n, 2]).to_device(dev),
                next: Tensor::from_slice(&next).to_device(dev),
                weight: Tensor::from_slice(&weight).to_kind(Kind::Float).to_device(dev),
                slot: Tensor::from_slice(&slot).to_device(dev),
                prompt: Tensor::from_slice(&prompt).to_device(dev),
                pslot: Tensor::from_slice(&pslot).to_device(dev),
            });
        }
        Ok(Batch { levels, size: examples.len() })
    }

    fn batch_len(&self, batch: &Batch) -> usize {
        batch.size
    }

    fn response_logps(&self, batch: &Batch, levels: Range<usize>, _train: bool) -> Result<ResponseLogps, ByteMlpError> {
        let dev = self.vs.device();
        let b = batch.size as i64;
        let zeros = |shape: &[i64]| Tensor::zeros(shape, (Kind::Float, dev));
        let (mut sums, mut weights, mut tokens) = (vec![], vec![], vec![]);
        for l in levels {
            let lv = batch.levels.get(l).ok_or(ByteMlpError::Level(l))?;
            let pooled = zeros(&[b, DIM]).index_add(0, &lv.pslot, &self.emb.forward(&lv.prompt));
            let count = zeros(&[b]).index_add(0, &lv.pslot, &lv.pslot.ones_like().to_kind(Kind::Float));
            let pooled = pooled / count.clamp_min(1.0).unsqueeze(1);
            let ctx = self.emb.forward(&lv.ctx).flatten(1, 2); // [N, 2·DIM]
            let h = Tensor::cat(&[ctx, pooled.index_select(0, &lv.slot)], 1);
            let logits = self.out.forward(&self.hidden.forward(&h).gelu("none"));
            let lp = logits.log_softmax(-1, Kind::Float).gather(1, &lv.next.unsqueeze(1), false).squeeze_dim(1);
            sums.push(zeros(&[b]).index_add(0, &lv.slot, &(lp * &lv.weight)));
            weights.push(zeros(&[b]).index_add(0, &lv.slot, &lv.weight));
            tokens.push(zeros(&[b]).index_add(0, &lv.slot, &lv.weight.ones_like()));
        }
        Ok(ResponseLogps { sum: Tensor::stack(&sums, 0), weight: Tensor::stack(&weights, 0), tokens: Tensor::stack(&tokens, 0) })
    }

    fn trainable_vars(&self) -> &nn::VarStore {
        &self.vs
    }

    fn encoding_fingerprint(&self) -> String {
        format!("example-byte-mlp-v1 round_weight={}", self.round_weight)
    }

    fn set_round_weight(&mut self, coef: f64) -> mdpo::Result<()> {
        self.round_weight = coef;
        Ok(())
    }
}

fn turn(from: &str, value: String) -> Turn {
    Turn { from: from.into(), value }
}

/// K = 3 levels per prompt: level l answers with 6 letters starting `2·l` places down the alphabet
/// (adjacent levels share 4 of their 6 letters).
fn synthetic(n: usize) -> Vec<PreferenceExample> {
    (0..n)
        .map(|i| {
            let prompt = format!("Describe item {i}.");
            let responses: Vec<Conversation> = (0..3)
                .map(|l| {
                    let answer: String =
                        (0..12).map(|t| (b'a' + (2 * l + (i * 3 + t * 5) % 6) as u8) as char).collect();
                    vec![turn("human", prompt.clone()), turn("gpt", answer)]
                })
                .collect();
            PreferenceExample { id: format!("ex{i}"), image: None, responses }
        })
        .collect()
}

fn main() -> mdpo::Result<()> {
    let args = Args::parse();
    let timeout = std::time::Duration::from_secs(120);
    if args.nproc > 1 && !mdpo_dist::is_launched_rank() {
        mdpo_dist::launch_local(args.nproc, timeout).map_err(|e| mdpo::MdpoError::Config(e.to_string()))?;
        return Ok(());
    }
    let comm = mdpo_dist::connect_from_env(mdpo_dist::Backend::Gloo, timeout)?;
    let main = comm.is_main();
    if main {
        let _ = std::fs::remove_dir_all(&args.out);
    }
    let policy = ByteMlp::new(0);
    let reference = ByteMlp::new(0); // same initial weights, frozen by the trainer
    let config = MdpoConfig {
        levels: 3,
        lr: 1e-3,
        warmup_steps: 5,
        batch_size: args.batch_size,
        grad_accum: args.grad_accum,
        max_steps: Some(args.steps),
        level_chunk: args.level_chunk,
        save_every: 20,
        output_dir: args.out.clone(),
        ..MdpoConfig::default()
    };
    let mut trainer =
        Trainer::with_collective(Task::Preference, policy, Reference::Model(reference), synthetic(64), config, comm)?;
    if !main {
        for _ in 0..args.steps {
            trainer.step()?;
        }
        return Ok(());
    }
    println!("step   loss    acc(y0>y1) acc(y0>y2) acc(y1>y2)  logp/token y0   y1     y2");
    for _ in 0..args.steps {
        let log = trainer.step()?;
        if log.step <= 4 || log.step % 5 == 0 {
            let m = log.metrics.as_ref().expect("MDPO metrics");
            let acc: Vec<String> = m.pairs.iter().map(|p| format!("{:>10.3}", p.accuracy)).collect();
            let lp: Vec<String> = log.level_token_logps.iter().map(|v| format!("{v:>6.2}")).collect();
            println!("{:>4} {:>7.4} {}   {}", log.step, log.loss, acc.join(" "), lp.join(" "));
        }
    }
    trainer.save_checkpoint()?;
    let rows = mdpo::trainer::read_metrics(&args.out.join("metrics.jsonl"))?;
    mdpo::plot::plot_run(&rows, &args.out.join("plots"))?;
    let first = rows.first().and_then(|r| r.reward_accuracy).unwrap_or(0.0);
    let last = rows.last().and_then(|r| r.reward_accuracy).unwrap_or(0.0);
    println!("mean reward accuracy: {first:.3} (step 1) -> {last:.3} (step {})", rows.len());
    println!("curves: {}", args.out.join("plots").display());
    Ok(())
}
