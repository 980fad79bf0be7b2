//! The `amp` command-line interface: every stage of the AMP pipeline, on real data or on the
//! synthetic world, plus the end-to-end demo.
//!
//! ```text
//! amp demo     [--preset tiny|small|large]            the whole pipeline on the synthetic world
//! amp world    --out DIR [--preset small] [--seed N]  write a synthetic world data set
//! amp generate --input llava.json --out gen.jsonl --server-expert NAME=MODEL@URL ...   (MEG)
//! amp check    --generated gen.jsonl --out-dir out/   auto-check re-ranking → AMP training file
//! amp merge    --inputs out/checked-*.jsonl --out-dir out/
//! amp eval answer|judge|score|compare ...             MRHal-Bench, MMHal-Bench, POPE, LLaVA-Bench
//! ```
use std::path::PathBuf;
use std::process::ExitCode;

use amp::adapters::{BertEmbedder, CheckpointChat, ClipTextEmbedder, LlavaChat, RuleJudge};
use amp_data::SentenceEmbedder;
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
    /// Multi-size Expert Generation over LLaVA instruction data (resumable, shardable).
    Generate(GenerateCmd),
    /// The auto-check (§3.1.3): re-rank generated responses, write the AMP training file.
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

fn local_expert(spec: &str, d: &amp_data::cli::DecodingArgs) -> Result<amp_data::Expert, String> {
    let (name, dir) = spec
        .split_once('=')
        .filter(|(n, d)| !n.is_empty() && !d.is_empty())
        .ok_or_else(|| format!("--local-expert {spec:?}: expected NAME=DIR"))?;
    let chat = CheckpointChat::load(name, dir.as_ref(), generation_config(d, 0)).map_err(|e| format!("--local-expert {name}: {e}"))?;
    Ok(amp_data::Expert { name: name.to_string(), generator: std::sync::Arc::new(LlavaChat::new(chat)) })
}

#[derive(clap::Args)]
struct AnswerLocalArgs {
    #[command(flatten)]
    data: mrhal_bench::cli::DataArgs,
    /// Directory relative image paths are resolved against.
    #[arg(long)]
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
}

#[derive(clap::Args)]
struct CheckCmd {
    #[command(flatten)]
    args: amp_data::cli::CheckArgs,
    /// The noun-chunk (local) expert: `minilm` (the real all-MiniLM-L6-v2 installed by
    /// scripts/setup.sh), `bert:DIR` (any sentence-transformers BERT) or `clip:DIR` (a CLIP text
    /// model, the paper's choice).
    #[arg(long, default_value = "minilm")]
    local_expert: String,
    /// The sentence (global) expert, same syntax.
    #[arg(long, default_value = "minilm")]
    global_expert: String,
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
    #[arg(long)]
    max_len: Option<usize>,
    /// `cpu` or `cuda` (bf16 on CUDA).
    #[arg(long, default_value = "cpu")]
    device: String,
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
fn llava_policy(m: &ModelArgs) -> Result<mllm::preference::LlavaPreference, String> {
    use mllm::llava::{Llava, LoadOptions};
    let (device, kind) = match m.device.as_str() {
        "cpu" => (tch::Device::Cpu, tch::Kind::Float),
        // A data-parallel rank uses the GPU of its LOCAL_RANK (torchrun's convention).
        "cuda" if tch::Cuda::is_available() => (tch::Device::Cuda(local_rank()), tch::Kind::BFloat16),
        "cuda" => return Err("--device cuda: no CUDA device is available".into()),
        other => return Err(format!("--device {other:?}: expected cpu or cuda")),
    };
    let s = |e: mllm::MllmError| e.to_string();
    let mut llava = Llava::load(&m.model, LoadOptions { device, kind }).map_err(s)?;
    llava
        .add_lora(&mllm::lora::LoraConfig { r: m.lora_r, alpha: m.lora_alpha, dropout: m.lora_dropout, ..Default::default() })
        .map_err(s)?;
    let tokenizer = mllm::conversation::ChatTokenizer::from_model_dir(&m.model, &llava.cfg).map_err(s)?;
    let images = mllm::image_processor::ImageProcessor::from_dir(
        &m.model,
        llava.cfg.vision.image_size as u32,
        llava.cfg.image_aspect_ratio,
    )
    .map_err(s)?;
    let mut policy = mllm::preference::LlavaPreference::new(llava, tokenizer, images);
    policy.max_len = m.max_len;
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
) -> Result<(), String> {
    let timeout = std::time::Duration::from_secs(dist.dist_timeout);
    if dist.nproc > 1 && !mdpo_dist::is_launched_rank() {
        return mdpo_dist::launch_local(dist.nproc, timeout).map_err(|e| e.to_string());
    }
    let job = job().map_err(|e| e.to_string())?;
    let (name, out) = (job.name(), job.config.output_dir.clone());
    let backend = if model.device == "cuda" { mdpo_dist::Backend::Nccl } else { mdpo_dist::Backend::Gloo };
    let comm = mdpo_dist::connect_from_env(backend, timeout).map_err(|e| e.to_string())?;
    let main = comm.is_main();
    // The fresh LoRA A matrices are drawn from torch's generator: seed it from the run's seed so
    // a run is reproducible (and every rank draws what rank 0 broadcasts anyway).
    tch::manual_seed(job.config.seed as i64);
    let policy = llava_policy(model)?;
    let (summary, policy) =
        job.run_with(policy, mdpo::Reference::PolicyWithoutAdapters, comm).map_err(|e| e.to_string())?;
    if main {
        print_summary(name, &summary);
        save_adapter(&policy, &out)?;
    }
    Ok(())
}

/// Saves the trained adapters in PEFT's format next to the run's checkpoints.
fn save_adapter(policy: &mllm::preference::LlavaPreference, run_dir: &std::path::Path) -> Result<(), String> {
    let dir = run_dir.join("adapter");
    policy.model.save_lora(&dir).map_err(|e| e.to_string())?;
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

fn expert(spec: &str) -> Result<Box<dyn SentenceEmbedder>, String> {
    match spec.split_once(':') {
        None if spec == "minilm" => Ok(Box::new(BertEmbedder::minilm().map_err(|e| e.to_string())?)),
        Some(("bert", dir)) => Ok(Box::new(BertEmbedder::load(dir.as_ref()).map_err(|e| e.to_string())?)),
        Some(("clip", dir)) => Ok(Box::new(ClipTextEmbedder::load(dir.as_ref()).map_err(|e| e.to_string())?)),
        _ => Err(format!("expert {spec:?}: expected `minilm`, `bert:DIR` or `clip:DIR`")),
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    match cli.command {
        Command::Demo(args) => {
            let report = amp::pipeline::run_demo(&args).map_err(|e| s(&e))?;
            eprintln!("amp demo: report written to {}", report.report_md.display());
        }
        Command::World(a) => {
            let mut cfg = amp_world::WorldConfig::preset(&a.preset).map_err(|e| s(&e))?;
            if let Some(seed) = a.seed {
                cfg.seed = seed;
            }
            let world = amp_world::World::new(cfg).map_err(|e| s(&e))?;
            let m = world.write(&a.out).map_err(|e| s(&e))?;
            eprintln!("amp world: wrote {} ({:?}; vocabulary {})", a.out.display(), m.counts, m.vocab_size);
        }
        Command::Generate(g) => {
            if g.local_experts.is_empty() {
                amp_data::cli::run_generate(&g.args).map_err(|e| s(&e))?;
            } else {
                if !g.args.server_experts.is_empty() {
                    return Err("use either --local-expert or --server-expert in one run (their relative order would be ambiguous)".into());
                }
                let pool = g.local_experts.iter().map(|e| local_expert(e, &g.args.decoding)).collect::<Result<Vec<_>, _>>()?;
                amp_data::cli::run_generate_with(&g.args, pool).map_err(|e| s(&e))?;
            }
        }
        Command::Check(c) => {
            if c.args.skip_check {
                amp_data::cli::run_check(&c.args).map_err(|e| s(&e))?;
            } else {
                let local = expert(&c.local_expert)?;
                let global = if c.global_expert == c.local_expert { None } else { Some(expert(&c.global_expert)?) };
                let global: &dyn SentenceEmbedder = global.as_deref().unwrap_or(local.as_ref());
                amp_data::cli::run_check_with(&c.args, local.as_ref(), global).map_err(|e| s(&e))?;
            }
        }
        Command::Merge(a) => {
            amp_data::cli::run_merge(&a).map_err(|e| s(&e))?;
        }
        Command::Train(c) => train_command(&c.model, &c.dist, || c.args.job())?,
        Command::Sft(c) => train_command(&c.model, &c.dist, || c.args.job())?,
        Command::Eval(EvalCmd::Answer(a)) => {
            mrhal_bench::cli::run_answer(&a).map_err(|e| s(&e))?;
        }
        Command::Eval(EvalCmd::AnswerLocal(a)) => {
            let name = a.name.clone().unwrap_or_else(|| {
                a.model.file_name().and_then(|n| n.to_str()).unwrap_or("llava").to_string()
            });
            let chat = CheckpointChat::load(name, &a.model, generation_config(&a.decoding, a.no_repeat_ngram_size))
                .map_err(|e| s(&e))?;
            mrhal_bench::cli::run_answer_with(&a.data, a.images.as_deref(), &a.out, &LlavaChat::new(chat)).map_err(|e| s(&e))?;
        }
        Command::Eval(EvalCmd::Judge(a)) => {
            mrhal_bench::cli::run_judge(&a).map_err(|e| s(&e))?;
        }
        Command::Eval(EvalCmd::RuleJudge(a)) => {
            let judge = RuleJudge::open(&a.world).map_err(|e| s(&e))?;
            mrhal_bench::cli::run_judge_with(&a.data, &a.answers, &a.out, &judge, a.concurrency).map_err(|e| s(&e))?;
        }
        Command::Eval(EvalCmd::Score(a)) => {
            mrhal_bench::cli::run_score(&a).map_err(|e| s(&e))?;
        }
        Command::Eval(EvalCmd::Compare(a)) => {
            let table = mrhal_bench::cli::run_compare(&a).map_err(|e| s(&e))?;
            println!("{table}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("amp: error: {e}");
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
