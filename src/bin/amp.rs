//! The `amp` command-line interface: every stage of the AMP pipeline, on real data or on the
//! synthetic world, plus the end-to-end demo.
//!
//! ```text
//! amp demo     [--preset tiny|small|large]            the whole pipeline on the synthetic world
//! amp world    --out DIR [--preset small] [--seed N]  write a synthetic world data set
//! amp generate --input llava.json --out gen.jsonl --server-expert NAME=MODEL@URL ...   (MEG)
//! amp generate --input llava.json --out gen.jsonl --ig-base DIR --ig-subsets 3 --ig-sft sft.json   (IG)
//! amp check    --generated gen.jsonl --out-dir out/   auto-check re-ranking → AMP training file
//! amp check    --out-dir out/ --explain ID            one sample's chunks, matches and ranking
//! amp merge    --inputs out/checked-*.jsonl --out-dir out/
//! amp eval answer|judge|score|compare ...             MRHal-Bench, MMHal-Bench, POPE, LLaVA-Bench
//! ```
use std::path::PathBuf;
use std::process::ExitCode;

use amp::adapters::{BertEmbedder, CheckpointChat, ClipTextEmbedder, LlavaChat, RuleJudge};
use amp_data::SentenceEmbedder;
use anyhow::{anyhow, bail, Context as _};
use clap::{Parser, Subcommand};

/// amp: Automated Multi-level Preference for MLLMs (Zhang et al., NeurIPS 2024).
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The end-to-end demo: synthetic world → SFT → MEG/IG experts → auto-check → SFT/DPO/MDPO
    /// variants → MRHal-style and POPE evaluation → report.
    Demo(amp::pipeline::DemoArgs),
    /// Write a synthetic world data set (images, instruction data, MRHal-style and POPE sets,
    /// tokenizer).
    World(WorldArgs),
    /// Response generation over LLaVA instruction data (resumable, shardable): Multi-size Expert
    /// Generation (`--server-expert` / `--local-expert`, largest first) or Incremental Generation
    /// (`--ig-base DIR --ig-subsets N`: LoRA fine-tunes of DIR on N = K − 2 cumulative subsets of
    /// the fine-tuning data, the paper's §3.1.2 setting; each fine-tune's answers are one level).
    Generate(GenerateCmd),
    /// The auto-check (§3.1.3): re-rank generated responses, write the AMP training file and the
    /// per-sample diagnostics (`--explain ID` prints one sample's table).
    Check(CheckCmd),
    /// Merge the checked shards of a sharded run into the final files.
    Merge(amp_data::cli::MergeArgs),
    /// MDPO training (Eq. 7) of a LLaVA checkpoint with LoRA; the reference is the frozen base
    /// (adapters disabled), its log-probs cached on disk. Resumes from the newest checkpoint.
    Train(TrainCmd),
    /// Supervised fine-tuning (masked NLL on the answers) of a LLaVA checkpoint with LoRA.
    Sft(SftCmd),
    /// Benchmarks: generate answers, judge them, score, compare runs.
    #[command(subcommand)]
    Eval(EvalCmd),
}

#[derive(clap::Args)]
struct WorldArgs {
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// tiny | small | large.
    #[arg(long, default_value = "small")]
    preset: String,
    /// Seed (default: the preset's).
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(clap::Args)]
struct GenerateCmd {
    #[command(flatten)]
    args: amp_data::cli::GenerateArgs,
    /// An expert that is a LLaVA checkpoint on disk, `NAME=DIR` (run locally on the CPU with
    /// mllm); repeat it, largest model first. Use either local or server experts in one run, so
    /// the order (the initial ranking) is never ambiguous.
    #[arg(long = "local-expert")]
    local_experts: Vec<String>,
    #[command(flatten)]
    ig: amp_data::cli::IgArgs,
    #[command(flatten)]
    device: amp::model_args::DeviceArgs,
    /// With a single `--local-expert`: a LoRA adapter to apply to it.
    #[command(flatten)]
    adapter: amp::model_args::AdapterArgs,
}

/// The decoding flags as mllm's generation config: beams > 1 means beam search (the paper's
/// A.3.1 settings are effectively 4-beam search), else temperature > 0 samples, else greedy.
fn generation_config(d: &amp_data::cli::DecodingArgs, no_repeat_ngram_size: usize) -> mllm::generation::GenerationConfig {
    use mllm::generation::{GenerationConfig, Strategy};
    let strategy = if d.num_beams > 1 {
        Strategy::Beam { num_beams: d.num_beams, length_penalty: 1.0 }
    } else if d.temperature > 0.0 {
        Strategy::Sample { temperature: d.temperature as f64, top_p: 1.0, seed: 0 }
    } else {
        Strategy::Greedy
    };
    GenerationConfig {
        max_new_tokens: d.max_new_tokens,
        strategy,
        repetition_penalty: d.repetition_penalty as f64,
        no_repeat_ngram_size,
        ..GenerationConfig::default()
    }
}

fn local_expert(spec: &str, g: &GenerateCmd) -> anyhow::Result<amp_data::Expert> {
    let (name, dir) = spec
        .split_once('=')
        .filter(|(n, d)| !n.is_empty() && !d.is_empty())
        .ok_or_else(|| anyhow!("--local-expert {spec:?}: expected NAME=DIR"))?;
    if g.adapter.adapter.is_some() && g.local_experts.len() != 1 {
        bail!("--adapter applies to a single --local-expert; give one expert per run");
    }
    let opts = g.device.load_options()?;
    let chat = CheckpointChat::load_with(name, dir.as_ref(), generation_config(&g.args.decoding, 0), opts, &g.adapter)
        .with_context(|| format!("--local-expert {name}"))?;
    Ok(amp_data::Expert { name: name.to_string(), generator: std::sync::Arc::new(LlavaChat::new(chat)) })
}

#[derive(clap::Args)]
struct AnswerLocalArgs {
    #[command(flatten)]
    data: mrhal_bench::cli::DataArgs,
    /// The data root: relative image paths resolve against it and may not leave it (default:
    /// the data file's directory).
    #[arg(long, visible_alias = "image-root")]
    images: Option<PathBuf>,
    /// Answers JSONL (appended; a rerun answers only what is missing).
    #[arg(long)]
    out: PathBuf,
    /// The LLaVA checkpoint directory.
    #[arg(long)]
    model: PathBuf,
    /// Name recorded with the answers (default: the directory name).
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    decoding: amp_data::cli::DecodingArgs,
    /// MRHal-Bench's protocol uses 5.
    #[arg(long, default_value_t = 5)]
    no_repeat_ngram_size: usize,
    #[command(flatten)]
    device: amp::model_args::DeviceArgs,
    #[command(flatten)]
    adapter: amp::model_args::AdapterArgs,
}

#[derive(clap::Args)]
struct CheckCmd {
    #[command(flatten)]
    args: amp_data::cli::CheckArgs,
    /// The noun-chunk (local) expert: `minilm` (the real all-MiniLM-L6-v2 installed by
    /// scripts/setup.sh, the offline default), `bert:DIR` (any sentence-transformers BERT) or
    /// `clip:DIR` (a CLIP text model, the paper's choice: a local copy of
    /// openai/clip-vit-large-patch14-336, LLaVA-1.5's vision tower, with config.json,
    /// model.safetensors and tokenizer.json).
    #[arg(long, default_value = "minilm")]
    local_expert: String,
    /// The sentence (global) expert, same syntax.
    #[arg(long, default_value = "minilm")]
    global_expert: String,
    /// The text experts' device (they always compute in f32: the auto-check compares their
    /// cosine scores, and they are small; `--dtype` other than f32 is refused).
    #[command(flatten)]
    device: amp::model_args::DeviceArgs,
}

/// The model flags shared by `train` and `sft`.
#[derive(clap::Args)]
struct ModelArgs {
    /// A LLaVA checkpoint directory (llava-hf or original LLaVA-1.5 layout) with tokenizer.json.
    #[arg(long)]
    model: PathBuf,
    /// LoRA rank (the paper: 64).
    #[arg(long, default_value_t = 64)]
    lora_r: i64,
    /// LoRA alpha (the authors' scripts: 16).
    #[arg(long, default_value_t = 16.0)]
    lora_alpha: f64,
    #[arg(long, default_value_t = 0.0)]
    lora_dropout: f64,
    /// Truncate encoded conversations to this many tokens (never inside the image span).
    /// Without it, a conversation longer than the model's context (max_position_embeddings) is
    /// refused before training starts.
    #[arg(long)]
    max_len: Option<usize>,
    /// Refuse a micro-batch whose estimated activation memory exceeds this many GiB (an upper
    /// bound: docs/reliability.md, "Sequence bounds"); default: only the context bound.
    #[arg(long, value_name = "GIB")]
    max_batch_memory: Option<f64>,
    #[command(flatten)]
    device: amp::model_args::DeviceArgs,
    /// Gradient checkpointing: recompute each decoder (and trained vision) layer in the backward
    /// pass instead of keeping its activations (exact gradients, about one more forward).
    /// Default: on for CUDA, off on the CPU.
    #[arg(long, overrides_with = "no_grad_checkpoint")]
    grad_checkpoint: bool,
    /// Turn gradient checkpointing off.
    #[arg(long)]
    no_grad_checkpoint: bool,
}

#[derive(clap::Args)]
struct TrainCmd {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    args: mdpo::cli::TrainArgs,
    #[command(flatten)]
    dist: DistArgs,
}

#[derive(clap::Args)]
struct SftCmd {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    args: mdpo::cli::SftArgs,
    #[command(flatten)]
    dist: DistArgs,
}

/// Data-parallel training (docs/distributed.md). A job started by torchrun or Slurm with
/// `RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT` set joins it without any flag.
#[derive(clap::Args)]
struct DistArgs {
    /// Run N local ranks (processes) of this command, each on `--batch-size × --grad-accum`
    /// examples per step (Gloo on CPU, NCCL on CUDA).
    #[arg(long, default_value_t = 1)]
    nproc: usize,
    /// Seconds a rendezvous or one collective may wait before every rank stops with an error.
    #[arg(long, default_value_t = 300)]
    dist_timeout: u64,
}

fn local_rank() -> usize {
    std::env::var("LOCAL_RANK").ok().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Loads the LLaVA checkpoint with fresh LoRA adapters, ready for `mdpo`.
/// `seed` (the run's) fixes the adapters' initial values: same seed, same adapter bytes. A
/// data-parallel rank on CUDA uses the GPU of its `LOCAL_RANK` (torchrun's convention).
fn llava_policy(m: &ModelArgs, seed: u64) -> anyhow::Result<mllm::preference::LlavaPreference> {
    use mllm::llava::Llava;
    let mut opts = m.device.load_options()?;
    if opts.device.is_cuda() && mdpo_dist::is_launched_rank() {
        opts.device = tch::Device::Cuda(local_rank());
    }
    let mut llava = Llava::load(&m.model, opts).with_context(|| format!("--model {}", m.model.display()))?;
    llava.add_lora(&mllm::lora::LoraConfig { r: m.lora_r, alpha: m.lora_alpha, dropout: m.lora_dropout, ..Default::default() }, seed)?;
    let tokenizer = mllm::conversation::ChatTokenizer::from_model_dir(&m.model, &llava.cfg)?;
    let images = mllm::image_processor::ImageProcessor::from_dir(
        &m.model,
        llava.cfg.vision.image_size as u32,
        llava.cfg.image_aspect_ratio,
    )
    ?;
    let mut policy = mllm::preference::LlavaPreference::new(llava, tokenizer, images);
    policy.max_len = m.max_len;
    policy.memory_budget = match m.max_batch_memory {
        Some(g) if !(g.is_finite() && g > 0.) => anyhow::bail!("--max-batch-memory {g}: expected a positive number of GiB"),
        Some(g) => Some((g * (1u64 << 30) as f64) as u64),
        None => None,
    };
    policy.grad_checkpoint = if m.no_grad_checkpoint { false } else { m.grad_checkpoint || opts.device.is_cuda() };
    eprintln!(
        "amp: model on {:?} in {:?}; gradient checkpointing {}",
        opts.device,
        opts.kind,
        if policy.grad_checkpoint { "on" } else { "off" }
    );
    Ok(policy)
}

fn print_summary(what: &str, s: &mdpo::TrainSummary) {
    let last = s.last.as_ref();
    eprintln!(
        "amp {what}: {} step(s), {} skipped; last loss {}, reward accuracy {}; metrics, checkpoints and plots in {}",
        s.steps,
        s.skipped,
        last.map_or("n/a".into(), |l| format!("{:.4}", l.loss)),
        last.and_then(|l| l.reward_accuracy).map_or("n/a".into(), |a| format!("{a:.3}")),
        s.output_dir.display()
    );
}

/// `amp train` and `amp sft`: one path, the differences are in the [`mdpo::cli::Job`]. The LoRA
/// adapter is written only when training succeeded (a non-finite run is an error).
fn train_command(
    model: &ModelArgs,
    dist: &DistArgs,
    job: impl FnOnce() -> mdpo::Result<mdpo::cli::Job>,
) -> anyhow::Result<()> {
    let timeout = std::time::Duration::from_secs(dist.dist_timeout);
    if dist.nproc > 1 && !mdpo_dist::is_launched_rank() {
        mdpo_dist::launch_local(dist.nproc, timeout)?;
        return Ok(());
    }
    let job = job()?;
    let (name, out) = (job.name(), job.config.output_dir.clone());
    let backend = if model.device.device()?.is_cuda() { mdpo_dist::Backend::Nccl } else { mdpo_dist::Backend::Gloo };
    let comm = mdpo_dist::connect_from_env(backend, timeout)?;
    let main = comm.is_main();
    // Rank 0 alone writes the run directory, so it alone holds its lock.
    let _lock = if main { Some(lock_dir(&out)?) } else { None };
    let policy = llava_policy(model, job.config.seed)?;
    let (summary, policy) = job.run_with(policy, mdpo::Reference::PolicyWithoutAdapters, comm)?;
    if main {
        print_summary(name, &summary);
        save_adapter(&policy, &out)?;
    }
    Ok(())
}

/// Saves the trained adapters in PEFT's format next to the run's checkpoints.
fn save_adapter(policy: &mllm::preference::LlavaPreference, run_dir: &std::path::Path) -> anyhow::Result<()> {
    let dir = run_dir.join("adapter");
    policy.model.save_lora(&dir)?;
    eprintln!("amp: LoRA adapter (PEFT format) written to {}", dir.display());
    Ok(())
}

#[derive(Subcommand)]
enum EvalCmd {
    /// Answer a benchmark with an OpenAI-compatible server (the model's own answers are the history).
    Answer(mrhal_bench::cli::AnswerArgs),
    /// Answer a benchmark with a local LLaVA checkpoint (mllm on the CPU), same protocol.
    AnswerLocal(AnswerLocalArgs),
    /// Judge answers with an OpenAI-compatible LLM judge.
    Judge(mrhal_bench::cli::JudgeArgs),
    /// Judge answers on a synthetic world with its rule judge (ground-truth scene graphs, the
    /// MRHal 0–6 rubric); no API needed.
    RuleJudge(RuleJudgeArgs),
    /// Compute metrics and write the results JSON (+ PNG chart).
    Score(mrhal_bench::cli::ScoreArgs),
    /// A Markdown table comparing results files.
    Compare(mrhal_bench::cli::CompareArgs),
}

#[derive(clap::Args)]
struct RuleJudgeArgs {
    /// The world directory written by `amp world` (its `scenes.json` is the ground truth).
    #[arg(long)]
    world: PathBuf,
    #[command(flatten)]
    data: mrhal_bench::cli::DataArgs,
    /// Answers JSONL written by `amp eval answer`.
    #[arg(long)]
    answers: PathBuf,
    /// Judgments JSONL (appended; a rerun judges only what is missing).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
}

fn expert(spec: &str, device: &amp::model_args::DeviceArgs) -> anyhow::Result<Box<dyn SentenceEmbedder>> {
    if let Some(d) = &device.dtype {
        if device.kind()? != tch::Kind::Float {
            bail!("--dtype {d}: the auto-check's text experts run in f32");
        }
    }
    let dev = device.device()?;
    match spec.split_once(':') {
        None if spec == "minilm" => Ok(Box::new(BertEmbedder::minilm_on(dev)?)),
        Some(("bert", dir)) => Ok(Box::new(BertEmbedder::load_on(dir.as_ref(), dev)?)),
        Some(("clip", dir)) => Ok(Box::new(ClipTextEmbedder::load_on(dir.as_ref(), dev)?)),
        _ => Err(anyhow!("expert {spec:?}: expected `minilm`, `bert:DIR` or `clip:DIR`")),
    }
}

/// Exit status of `amp eval answer|answer-local|judge|rule-judge|score` when they finished and
/// wrote everything they could, but some items are missing (failed, unanswered, unjudged); a
/// rerun retries them. docs/reliability.md documents it.
const EXIT_INCOMPLETE: u8 = 3;

/// An evaluation that wrote everything it could but misses some items (exit status 3).
#[derive(Debug)]
struct Incomplete(String);

impl std::fmt::Display for Incomplete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Incomplete {}

/// One writer per output directory (docs/reliability.md): held until the command exits.
fn lock_dir(dir: &std::path::Path) -> anyhow::Result<amp_io::lock::OutputLock> {
    Ok(amp_io::lock::OutputLock::dir(dir)?)
}

fn incomplete(what: &str, missing: usize) -> anyhow::Result<()> {
    if missing == 0 {
        return Ok(());
    }
    Err(Incomplete(format!("{what}: {missing} item(s) missing (everything else is written); rerun to retry them")).into())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(args) => {
            let _lock = lock_dir(&args.out)?;
            let report = amp::pipeline::run_demo(&args)?;
            eprintln!("amp demo: report written to {}", report.report_md.display());
        }
        Command::World(a) => {
            let mut cfg = amp_world::WorldConfig::preset(&a.preset)?;
            if let Some(seed) = a.seed {
                cfg.seed = seed;
            }
            let world = amp_world::World::new(cfg)?;
            let m = world.write(&a.out)?;
            eprintln!("amp world: wrote {} ({:?}; vocabulary {})", a.out.display(), m.counts, m.vocab_size);
        }
        Command::Generate(g) => {
            if let Some(base) = &g.ig.ig_base {
                if !g.local_experts.is_empty() || !g.args.server_experts.is_empty() {
                    bail!("--ig-base makes the experts (the fine-tunes and the base); drop --local-expert / --server-expert");
                }
                let name = base.file_name().and_then(|n| n.to_str()).unwrap_or("base").to_string();
                let decoding = generation_config(&g.args.decoding, 0);
                let chat = CheckpointChat::load(&name, base, decoding.clone()).with_context(|| format!("--ig-base {}", base.display()))?;
                let base_expert = amp_data::Expert { name, generator: std::sync::Arc::new(LlavaChat::new(chat)) };
                let tuner = amp::ig::LoraFineTuner::new(base, &g.ig.dir(&g.args.out), &g.ig, decoding)
                    .with_context(|| format!("--ig-base {}", base.display()))?;
                amp_data::cli::run_generate_ig(&g.args, &g.ig, base_expert, &tuner)?;
            } else if g.local_experts.is_empty() {
                amp_data::cli::run_generate(&g.args)?;
            } else {
                if !g.args.server_experts.is_empty() {
                    bail!("use either --local-expert or --server-expert in one run (their relative order would be ambiguous)");
                }
                let pool = g.local_experts.iter().map(|e| local_expert(e, &g)).collect::<Result<Vec<_>, _>>()?;
                amp_data::cli::run_generate_with(&g.args, pool)?;
            }
        }
        Command::Check(c) => {
            // `--skip-check` needs no experts, nor does `--explain ID` alone.
            if c.args.skip_check || c.args.generated.is_empty() {
                amp_data::cli::run_check(&c.args)?;
            } else {
                let local = expert(&c.local_expert, &c.device).context("--local-expert")?;
                let global = if c.global_expert == c.local_expert { None } else { Some(expert(&c.global_expert, &c.device).context("--global-expert")?) };
                let global: &dyn SentenceEmbedder = global.as_deref().unwrap_or(local.as_ref());
                amp_data::cli::run_check_with(&c.args, local.as_ref(), global)?;
            }
        }
        Command::Merge(a) => {
            amp_data::cli::run_merge(&a)?;
        }
        Command::Train(c) => train_command(&c.model, &c.dist, || c.args.job())?,
        Command::Sft(c) => train_command(&c.model, &c.dist, || c.args.job())?,
        Command::Eval(EvalCmd::Answer(a)) => {
            let r = mrhal_bench::cli::run_answer(&a)?;
            incomplete("amp eval answer", r.failed.len())?;
        }
        Command::Eval(EvalCmd::AnswerLocal(a)) => {
            let name = a.name.clone().unwrap_or_else(|| {
                a.model.file_name().and_then(|n| n.to_str()).unwrap_or("llava").to_string()
            });
            let opts = a.device.load_options()?;
            let chat = CheckpointChat::load_with(name, &a.model, generation_config(&a.decoding, a.no_repeat_ngram_size), opts, &a.adapter)?;
            let r = mrhal_bench::cli::run_answer_with(&a.data, a.images.as_deref(), &a.out, &LlavaChat::new(chat))?;
            incomplete("amp eval answer-local", r.failed.len())?;
        }
        Command::Eval(EvalCmd::Judge(a)) => {
            let r = mrhal_bench::cli::run_judge(&a)?;
            incomplete("amp eval judge", r.failed.len() + r.no_answer.len())?;
        }
        Command::Eval(EvalCmd::RuleJudge(a)) => {
            let judge = RuleJudge::open(&a.world)?;
            let r = mrhal_bench::cli::run_judge_with(&a.data, &a.answers, &a.out, &judge, a.concurrency)?;
            incomplete("amp eval rule-judge", r.failed.len() + r.no_answer.len())?;
        }
        Command::Eval(EvalCmd::Score(a)) => {
            let r = mrhal_bench::cli::run_score(&a)?;
            incomplete("amp eval score", r.missing.total())?;
        }
        Command::Eval(EvalCmd::Compare(a)) => {
            let table = mrhal_bench::cli::run_compare(&a)?;
            println!("{table}");
        }
    }
    Ok(())
}

/// The error and its causes on one line, each cause once (the crates' messages often already
/// quote their source).
fn error_chain(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if !msg.contains(&c) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&c);
        }
    }
    msg
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<Incomplete>().is_some() => {
            eprintln!("amp: incomplete: {e}");
            ExitCode::from(EXIT_INCOMPLETE)
        }
        Err(e) => {
            eprintln!("amp: error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
