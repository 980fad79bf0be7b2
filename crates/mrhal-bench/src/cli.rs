//! Command-line entry points (`amp bench answer|judge|score|compare`; the `amp` binary wires
//! them). Every command is resumable or idempotent and prints what is missing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use amp_chat::{ChatClient, ChatConfig};

use crate::answers::{
    generate_answers, generate_answers_sequential, llava_tasks, load_answers, mmhal_tasks, mrhal_tasks, pope_tasks,
    AnswerSummary, AnswerTask, Benchmark,
};
use crate::data::{
    load_llava_bench, load_llava_rules, load_mmhal, load_mrhal, load_pope, LlavaItem, MmhalItem, MrhalDialogue, PopeItem,
};
use crate::error::{BenchError, Result};
use crate::judge::Judge;
use crate::llm_judge::{JudgeParams, LlmJudge};
use crate::prompts::Template;
use crate::report::{bar_chart, default_metrics, markdown_table, read_results, write_results};
use crate::responder::{Decoding, OpenAiResponder, Responder};
use crate::runner::{judge_llava, judge_mmhal, judge_mrhal, score_llava, score_mmhal, score_mrhal, score_pope, JudgeSummary, RunResults};

/// Which benchmark and its files.
#[derive(clap::Args, Debug, Clone)]
pub struct DataArgs {
    /// Benchmark.
    #[arg(long, value_enum)]
    pub bench: Benchmark,
    /// Benchmark file(s): MRHal `eval_gt.json` or exported repack rows (JSON/JSONL); MMHal
    /// `response_template.json`; POPE `coco_pope_*.json` / `llava_pope_test.jsonl` (repeatable);
    /// LLaVA-Bench `qa90_questions.jsonl`.
    #[arg(long, required = true, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// POPE split for files whose records have no `category` and whose name has no split.
    #[arg(long)]
    pub pope_split: Option<String>,
    /// LLaVA-Bench reference answers (`qa90_gpt4_answer.jsonl`).
    #[arg(long)]
    pub llava_references: Option<PathBuf>,
    /// LLaVA-Bench captions and boxes (`caps_boxes_coco2014_val_80.jsonl`).
    #[arg(long)]
    pub llava_captions: Option<PathBuf>,
    /// Use only the first N items (smoke runs).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Answering: accept image paths outside the data root (`--images`, else the first data
    /// file's directory). Without it `..` escapes and absolute paths elsewhere are refused.
    #[arg(long)]
    pub allow_outside_root: bool,
}

impl DataArgs {
    /// The data root image files must stay under: `images`, else the first data file's directory.
    pub fn data_root(&self, images: Option<&Path>) -> amp_io::paths::DataRoot {
        let first = self.data.first().map(PathBuf::as_path).unwrap_or(Path::new("."));
        amp_io::paths::DataRoot::for_data_file(first, images, self.allow_outside_root)
    }
}

/// Loaded benchmark items.
#[derive(Debug, Clone)]
pub enum Loaded {
    /// MRHal-Bench.
    Mrhal(Vec<MrhalDialogue>),
    /// MMHal-Bench.
    Mmhal(Vec<MmhalItem>),
    /// POPE.
    Pope(Vec<PopeItem>),
    /// LLaVA-Bench.
    Llava(Vec<LlavaItem>),
}

impl Loaded {
    /// Answering tasks.
    pub fn tasks(&self) -> Vec<AnswerTask> {
        match self {
            Loaded::Mrhal(v) => mrhal_tasks(v),
            Loaded::Mmhal(v) => mmhal_tasks(v),
            Loaded::Pope(v) => pope_tasks(v),
            Loaded::Llava(v) => llava_tasks(v),
        }
    }
    /// Benchmark.
    pub fn bench(&self) -> Benchmark {
        match self {
            Loaded::Mrhal(_) => Benchmark::Mrhal,
            Loaded::Mmhal(_) => Benchmark::Mmhal,
            Loaded::Pope(_) => Benchmark::Pope,
            Loaded::Llava(_) => Benchmark::Llava,
        }
    }
}

fn one(data: &[PathBuf], bench: Benchmark) -> Result<&Path> {
    match data {
        [p] => Ok(p),
        _ => Err(BenchError::Invalid(format!("{bench} takes exactly one --data file, got {}", data.len()))),
    }
}

/// Loads the benchmark named by `args`.
pub fn load(args: &DataArgs) -> Result<Loaded> {
    let lim = |n: usize| args.limit.unwrap_or(n).min(n);
    Ok(match args.bench {
        Benchmark::Mrhal => {
            let mut v = load_mrhal(one(&args.data, args.bench)?)?;
            v.truncate(lim(v.len()));
            Loaded::Mrhal(v)
        }
        Benchmark::Mmhal => {
            let mut v = load_mmhal(one(&args.data, args.bench)?)?;
            v.truncate(lim(v.len()));
            Loaded::Mmhal(v)
        }
        Benchmark::Pope => {
            let mut v = Vec::new();
            for p in &args.data {
                v.extend(load_pope(p, args.pope_split.as_deref())?);
            }
            v.truncate(lim(v.len()));
            Loaded::Pope(v)
        }
        Benchmark::Llava => {
            let need = |o: &Option<PathBuf>, f: &str| {
                o.clone().ok_or_else(|| BenchError::Invalid(format!("llava needs --{f}")))
            };
            let mut v = load_llava_bench(
                one(&args.data, args.bench)?,
                &need(&args.llava_references, "llava-references")?,
                &need(&args.llava_captions, "llava-captions")?,
            )?;
            v.truncate(lim(v.len()));
            Loaded::Llava(v)
        }
    })
}

/// `answer`: generate answers with an OpenAI-compatible server.
#[derive(clap::Args, Debug, Clone)]
pub struct AnswerArgs {
    /// Benchmark and files.
    #[command(flatten)]
    pub data: DataArgs,
    /// The data root: image file names are relative to it and may not leave it (default: the
    /// data file's directory).
    #[arg(long, visible_alias = "image-root")]
    pub images: Option<PathBuf>,
    /// Answers file (JSONL; appended to and resumed).
    #[arg(long)]
    pub out: PathBuf,
    /// Server base URL (default: $OPENAI_BASE_URL, else the OpenAI API).
    #[arg(long)]
    pub base_url: Option<String>,
    /// Served model name.
    #[arg(long)]
    pub model: String,
    /// API key (default: $OPENAI_API_KEY, sent only to an https or loopback server).
    #[arg(long)]
    pub api_key: Option<String>,
    /// Send the key in this environment variable to the server (any scheme).
    #[arg(long)]
    pub api_key_env: Option<String>,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// top-p.
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Completion limit.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: u32,
    /// Seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Optional system prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Items answered concurrently.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 120.0)]
    pub timeout_s: f64,
    /// Retries per request.
    #[arg(long, default_value_t = 5)]
    pub max_retries: u32,
}

fn secs(s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| BenchError::Invalid(format!("invalid timeout {s}")))
}

fn print_answer_summary(s: &AnswerSummary, out: &Path) {
    eprintln!("answers: {} generated, {} already on disk -> {}", s.generated, s.resumed, out.display());
    if !s.failed.is_empty() {
        eprintln!("{} item(s) failed (rerun to retry):", s.failed.len());
        for (id, why) in s.failed.iter().take(20) {
            eprintln!("  {id}: {why}");
        }
    }
}

/// Runs `answer` with the OpenAI-compatible responder.
pub fn run_answer(args: &AnswerArgs) -> Result<AnswerSummary> {
    let _lock = amp_io::lock::OutputLock::file(&args.out)?;
    let loaded = load(&args.data)?;
    let mut cfg = ChatConfig::from_flags_or_env_keyed(
        args.base_url.clone(),
        args.model.clone(),
        args.api_key.clone(),
        args.api_key_env.as_deref(),
    )?;
    cfg.timeout = secs(args.timeout_s)?;
    cfg.max_retries = args.max_retries;
    cfg.concurrency = args.concurrency.max(1);
    let responder = OpenAiResponder {
        client: ChatClient::new(cfg)?,
        decoding: Decoding { temperature: args.temperature, top_p: args.top_p, max_tokens: args.max_tokens, seed: args.seed },
        system: args.system.clone(),
    };
    let root = args.data.data_root(args.images.as_deref());
    let s = generate_answers(&responder, loaded.bench(), &loaded.tasks(), &root, &args.out, args.concurrency)?;
    print_answer_summary(&s, &args.out);
    Ok(s)
}

/// Runs `answer` with any responder (e.g. a local `mllm` model), sequentially. `images` is the
/// data root (default: the data file's directory).
pub fn run_answer_with<R: Responder + ?Sized>(data: &DataArgs, images: Option<&Path>, out: &Path, responder: &R) -> Result<AnswerSummary> {
    let _lock = amp_io::lock::OutputLock::file(out)?;
    let loaded = load(data)?;
    let s = generate_answers_sequential(responder, loaded.bench(), &loaded.tasks(), &data.data_root(images), out)?;
    print_answer_summary(&s, out);
    Ok(s)
}

/// `judge`: rate answers with an LLM judge.
#[derive(clap::Args, Debug, Clone)]
pub struct JudgeArgs {
    /// Benchmark and files.
    #[command(flatten)]
    pub data: DataArgs,
    /// Answers file written by `answer`.
    #[arg(long)]
    pub answers: PathBuf,
    /// Judgments file (JSONL; appended to and resumed).
    #[arg(long)]
    pub out: PathBuf,
    /// Judge base URL (default: $OPENAI_BASE_URL, else the OpenAI API).
    #[arg(long)]
    pub judge_base_url: Option<String>,
    /// Judge model requested (the model *returned* is what gets recorded).
    #[arg(long)]
    pub judge_model: String,
    /// Judge API key (default: $OPENAI_API_KEY, sent only to an https or loopback server).
    #[arg(long)]
    pub judge_api_key: Option<String>,
    /// Send the key in this environment variable to the judge server (any scheme).
    #[arg(long)]
    pub judge_api_key_env: Option<String>,
    /// Judge requests in flight.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 60.0)]
    pub timeout_s: f64,
    /// Retries per request (408/409/429/5xx, timeouts, transport, malformed/empty bodies).
    #[arg(long, default_value_t = 5)]
    pub max_retries: u32,
    /// Response cache (JSONL); deterministic requests only.
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Judge prompt template file (JSON {system,user} or plain text) replacing the default.
    #[arg(long)]
    pub template: Option<PathBuf>,
    /// LLaVA-Bench `rule.json` (the original judging rules).
    #[arg(long)]
    pub llava_rules: Option<PathBuf>,
    /// Judge temperature. 0 keeps requests cacheable; LLaVA-Bench's original script uses 0.2
    /// (pass it for exact comparability; such requests are then not cached).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Judge completion limit.
    #[arg(long, default_value_t = 1024)]
    pub max_tokens: u32,
    /// Judge seed.
    #[arg(long)]
    pub seed: Option<u64>,
}

impl JudgeArgs {
    /// Builds the LLM judge these flags describe.
    pub fn build_judge(&self) -> Result<LlmJudge> {
        let mut cfg = ChatConfig::from_flags_or_env_keyed(
            self.judge_base_url.clone(),
            self.judge_model.clone(),
            self.judge_api_key.clone(),
            self.judge_api_key_env.as_deref(),
        )?;
        cfg.timeout = secs(self.timeout_s)?;
        cfg.max_retries = self.max_retries;
        cfg.concurrency = self.concurrency.max(1);
        cfg.cache_path = self.cache.clone();
        let mut judge = LlmJudge::new(ChatClient::new(cfg)?);
        judge.params = JudgeParams { temperature: self.temperature, max_tokens: self.max_tokens, seed: self.seed };
        if let Some(t) = &self.template {
            let t = Template::from_file(t)?;
            match self.data.bench {
                Benchmark::Mrhal => judge.mrhal = t,
                Benchmark::Mmhal => judge.mmhal = t,
                Benchmark::Llava => judge.llava = t,
                Benchmark::Pope => return Err(BenchError::Invalid("POPE has no judge; drop --template".into())),
            }
        }
        if let Some(r) = &self.llava_rules {
            judge.llava_rules = load_llava_rules(r)?;
        }
        Ok(judge)
    }
}

fn print_judge_summary(s: &JudgeSummary, out: &Path) {
    eprintln!("judge: {} judged, {} already on disk -> {}", s.judged, s.resumed, out.display());
    if !s.failed.is_empty() {
        eprintln!("{} item(s) MISSING after judge failures (rerun to retry):", s.failed.len());
        for (id, why) in s.failed.iter().take(20) {
            eprintln!("  {id}: {why}");
        }
    }
    if !s.no_answer.is_empty() {
        eprintln!("{} item(s) MISSING: no complete answer", s.no_answer.len());
    }
}

/// Runs `judge` with the LLM judge from the flags.
pub fn run_judge(args: &JudgeArgs) -> Result<JudgeSummary> {
    let judge = args.build_judge()?;
    let s = run_judge_with(&args.data, &args.answers, &args.out, &judge, args.concurrency)?;
    let st = judge.client.stats();
    eprintln!(
        "judge client: {} request(s), {} retr(ies), {} cache hit(s), {} failure(s)",
        st.requests, st.retries, st.cache_hits, st.failures
    );
    Ok(s)
}

/// Runs `judge` with any [`Judge`] (e.g. the demo's rule judge).
pub fn run_judge_with(data: &DataArgs, answers: &Path, out: &Path, judge: &dyn Judge, concurrency: usize) -> Result<JudgeSummary> {
    let _lock = amp_io::lock::OutputLock::file(out)?;
    let loaded = load(data)?;
    let set = load_answers(answers)?;
    let s = match &loaded {
        Loaded::Mrhal(v) => judge_mrhal(judge, v, &set, out, concurrency)?,
        Loaded::Mmhal(v) => judge_mmhal(judge, v, &set, out, concurrency)?,
        Loaded::Llava(v) => judge_llava(judge, v, &set, out, concurrency)?,
        Loaded::Pope(_) => return Err(BenchError::Invalid("POPE needs no judge: run `score` directly".into())),
    };
    print_judge_summary(&s, out);
    Ok(s)
}

/// `score`: compute metrics and write a results file.
#[derive(clap::Args, Debug, Clone)]
pub struct ScoreArgs {
    /// Benchmark and files.
    #[command(flatten)]
    pub data: DataArgs,
    /// Answers file.
    #[arg(long)]
    pub answers: PathBuf,
    /// Judgments file (not used for POPE).
    #[arg(long)]
    pub judgments: Option<PathBuf>,
    /// POPE label files (`coco_pope_{adversarial,popular,random}.json`) when --data has no labels.
    #[arg(long, num_args = 1..)]
    pub pope_labels: Vec<PathBuf>,
    /// Results file (JSON).
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs `score`.
pub fn run_score(args: &ScoreArgs) -> Result<RunResults> {
    let _lock = amp_io::lock::OutputLock::file(&args.out)?;
    let loaded = load(&args.data)?;
    let set = load_answers(&args.answers)?;
    let judgments = || {
        args.judgments
            .clone()
            .ok_or_else(|| BenchError::Invalid(format!("{} needs --judgments", args.data.bench)))
    };
    let r = match &loaded {
        Loaded::Mrhal(v) => score_mrhal(v, &set, &judgments()?)?,
        Loaded::Mmhal(v) => score_mmhal(v, &set, &judgments()?)?,
        Loaded::Llava(v) => score_llava(v, &set, &judgments()?)?,
        Loaded::Pope(v) => {
            let mut labels = Vec::new();
            for p in &args.pope_labels {
                labels.extend(load_pope(p, None)?);
            }
            score_pope(v, &labels, &set)?
        }
    };
    write_results(&args.out, &r)?;
    print!("{}", markdown_table(std::slice::from_ref(&r), None));
    if r.missing.total() > 0 {
        eprintln!(
            "{} of {} item(s) MISSING (no answer {}, judge failed {}, not judged {}, no label {}); metrics cover the other {}",
            r.missing.total(),
            r.items_total,
            r.missing.no_answer,
            r.missing.judge_failed,
            r.missing.not_judged,
            r.missing.no_label,
            r.items_scored
        );
    }
    Ok(r)
}

/// `compare`: Markdown table and PNG chart over results files.
#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// Results files written by `score`.
    #[arg(required = true, num_args = 1..)]
    pub results: Vec<PathBuf>,
    /// Write the Markdown table here (it is always printed).
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Write a PNG bar chart here.
    #[arg(long)]
    pub png: Option<PathBuf>,
    /// Metrics to show (default: each benchmark's headline metrics).
    #[arg(long, num_args = 1..)]
    pub metrics: Vec<String>,
    /// Chart title.
    #[arg(long, default_value = "Hallucination benchmarks")]
    pub title: String,
}

/// Runs `compare`; returns the Markdown.
pub fn run_compare(args: &CompareArgs) -> Result<String> {
    let runs = args.results.iter().map(|p| read_results(p)).collect::<Result<Vec<_>>>()?;
    let metrics = (!args.metrics.is_empty()).then_some(args.metrics.as_slice());
    let md = markdown_table(&runs, metrics);
    print!("{md}");
    if let Some(p) = &args.markdown {
        std::fs::write(p, &md).map_err(|e| BenchError::io(p, e))?;
    }
    if let Some(p) = &args.png {
        let mut benches: Vec<Benchmark> = runs.iter().map(|r| r.benchmark).collect();
        benches.sort();
        benches.dedup();
        let mut pairs: Vec<(Benchmark, String)> = Vec::new();
        for &b in &benches {
            let ms = if args.metrics.is_empty() { default_metrics(b) } else { args.metrics.clone() };
            for m in ms {
                if runs.iter().any(|r| r.benchmark == b && r.metrics.contains_key(&m)) {
                    pairs.push((b, m));
                }
            }
        }
        bar_chart(p, &args.title, &runs, &pairs)?;
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(clap::Subcommand)]
    enum Cmd {
        Answer(AnswerArgs),
        Judge(JudgeArgs),
        Score(ScoreArgs),
        Compare(CompareArgs),
    }

    #[test]
    fn clap_definitions_are_consistent() {
        Cli::command().debug_assert();
        let c = Cli::try_parse_from([
            "x", "judge", "--bench", "mrhal", "--data", "gt.json", "--answers", "a.jsonl", "--out", "j.jsonl",
            "--judge-model", "gpt-4o", "--cache", "c.jsonl", "--concurrency", "3",
        ])
        .unwrap();
        match c.cmd {
            Cmd::Judge(j) => {
                assert_eq!(j.data.bench, Benchmark::Mrhal);
                assert_eq!(j.concurrency, 3);
                assert_eq!(j.temperature, 0.0);
            }
            _ => panic!("wrong subcommand"),
        }
        assert!(Cli::try_parse_from(["x", "score", "--bench", "pope", "--answers", "a", "--out", "o"]).is_err());
    }

    /// A valid 4x4 RGB PNG (answering decodes images before a responder sees them).
    const TINY_PNG: [u8; 73] = [
        137, 80, 78, 71, 13, 10, 26, 10, 0, 0, 0, 13, 73, 72, 68, 82, 0, 0, 0, 4, 0, 0, 0, 4, 8, 2, 0, 0, 0, 38, 147, 9, 41,
        0, 0, 0, 16, 73, 68, 65, 84, 120, 156, 99, 56, 33, 39, 7, 71, 12, 196, 113, 0, 177, 99, 16, 65, 59, 75, 99, 130,
        0, 0, 0, 0, 73, 69, 78, 68, 174, 66, 96, 130,
    ];

    #[test]
    fn score_and_compare_pope_end_to_end() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("coco_pope_random.json");
        std::fs::write(
            &data,
            "{\"question_id\":1,\"image\":\"a.png\",\"text\":\"Is there a cat?\",\"label\":\"yes\"}\n\
             {\"question_id\":2,\"image\":\"a.png\",\"text\":\"Is there a dog?\",\"label\":\"no\"}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("a.png"), TINY_PNG).unwrap();
        struct Yes;
        impl Responder for Yes {
            fn name(&self) -> String {
                "always-yes".into()
            }
            fn decoding(&self) -> serde_json::Value {
                serde_json::json!({"greedy": true})
            }
            fn respond(&self, image: &[u8], _: &[crate::responder::Turn]) -> std::result::Result<String, crate::BoxError> {
                assert_eq!(image, TINY_PNG);
                Ok("Yes, there is.".into())
            }
        }
        let d = DataArgs {
            bench: Benchmark::Pope,
            data: vec![data],
            pope_split: None,
            llava_references: None,
            llava_captions: None,
            limit: None,
            allow_outside_root: false,
        };
        let answers = dir.path().join("answers.jsonl");
        let s = run_answer_with(&d, Some(dir.path()), &answers, &Yes).unwrap();
        assert_eq!(s.generated, 2);
        let out = dir.path().join("results.json");
        let r = run_score(&ScoreArgs { data: d, answers, judgments: None, pope_labels: vec![], out: out.clone() }).unwrap();
        // always yes: TP 1, FP 1 -> acc 0.5, P 0.5, R 1, F1 2/3, yes-ratio 1
        assert_eq!(r.metrics["random/accuracy"], 0.5);
        assert_eq!(r.metrics["random/recall"], 1.0);
        assert!((r.metrics["random/f1"] - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(r.metrics["random/yes_ratio"], 1.0);
        let md = run_compare(&CompareArgs {
            results: vec![out],
            markdown: Some(dir.path().join("t.md")),
            png: Some(dir.path().join("c.png")),
            metrics: vec![],
            title: "POPE".into(),
        })
        .unwrap();
        assert!(md.contains("| always-yes | n/a | n/a | 0.667 | n/a | n/a | 0.500 | 1.000 | 2/2 | 0 | — |"), "{md}");
        assert!(dir.path().join("c.png").exists());
    }
}
