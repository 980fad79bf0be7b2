//! `generate` with Incremental Generation (AMP §3.1.2, Algorithm 1): the flags and the run.
use super::{generate_records, GenerateArgs};
use crate::data::{load_llava_with, InstructionRecord, LoadOptions};
use crate::error::{AmpDataError, Result};
use crate::generate::Expert;
use crate::pipeline::RunSummary;
use std::path::{Path, PathBuf};

/// Incremental Generation flags (§3.1.2, Algorithm 1).
///
/// The paper's setting: the fine-tuning set F is split into **K − 2 equal parts**; the base model
/// M is fine-tuned on each cumulative subset [F1..Fi] (i = 1..K−2), and the responses rank
/// standard > M(F1..F_{K−2}) > … > M(F1) > M. The paper fine-tunes LLaVA-v1.5-7B on 30k, 60k
/// and 90k pairs (K − 2 = 3, so K = 5). Here each fine-tune trains a LoRA adapter on the
/// cumulative subset and its answers make one level.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct IgArgs {
    /// The pre-trained model M (a LLaVA checkpoint directory): turns on Incremental Generation.
    #[arg(long)]
    pub ig_base: Option<PathBuf>,
    /// Number of cumulative subsets, K − 2 (the paper: 3, i.e. K = 5); `--levels`, when given,
    /// must equal this + 2.
    #[arg(long, requires = "ig_base")]
    pub ig_subsets: Option<usize>,
    /// The fine-tuning set F as LLaVA JSON (default: the first `--ig-fraction` of `--input`,
    /// whose remaining records are then the preference prompts answered).
    #[arg(long, requires = "ig_base")]
    pub ig_sft: Option<PathBuf>,
    /// The share of the fine-tuning data used as F (its first records): of `--ig-sft` when
    /// given (default 1), else of `--input` (required then, in (0, 1)).
    #[arg(long, requires = "ig_base")]
    pub ig_fraction: Option<f64>,
    /// Where the adapters go, one directory per subset (default: `<out>.ig/` beside `--out`).
    /// A rerun reuses a finished adapter whose key (subset, settings, base weights) matches, and
    /// resumes an unfinished one from its newest checkpoint.
    /// Shards of one run share these adapters: let one shard finish its fine-tunes before
    /// starting the others (nothing locks the directory against two trainers at once).
    #[arg(long, requires = "ig_base")]
    pub ig_dir: Option<PathBuf>,
    /// Epochs over each cumulative subset (the same recipe for every subset, as in the paper).
    #[arg(long, default_value_t = 1)]
    pub ig_epochs: usize,
    #[arg(long, default_value_t = 2e-4)]
    pub ig_lr: f64,
    #[arg(long, default_value_t = 4)]
    pub ig_batch_size: usize,
    /// LoRA rank and alpha of the adapters (LLaVA-1.5's LoRA recipe, whose training details the
    /// paper follows: 128 / 256; its learning rate is the default of `--ig-lr`).
    #[arg(long, default_value_t = 128)]
    pub ig_lora_r: i64,
    #[arg(long, default_value_t = 256.0)]
    pub ig_lora_alpha: f64,
    /// Truncate encoded conversations to this many tokens while fine-tuning.
    #[arg(long)]
    pub ig_max_len: Option<usize>,
    /// Checkpoint every N optimizer steps (what a killed fine-tune resumes from).
    #[arg(long, default_value_t = 50)]
    pub ig_save_every: usize,
    #[arg(long, default_value_t = 42)]
    pub ig_seed: u64,
}

impl IgArgs {
    /// The adapters' directory for a run writing `out`.
    pub fn dir(&self, out: &Path) -> PathBuf {
        self.ig_dir.clone().unwrap_or_else(|| {
            let mut s = out.as_os_str().to_owned();
            s.push(".ig");
            PathBuf::from(s)
        })
    }

    /// The number of levels K of this run (`--ig-subsets` + 2, checked against `--levels`).
    pub fn levels(&self, levels: Option<usize>) -> Result<usize> {
        let k = match (self.ig_subsets, levels) {
            (Some(n), None) => n + 2,
            (None, Some(k)) => k,
            (Some(n), Some(k)) if n + 2 == k => k,
            (Some(n), Some(k)) => {
                return Err(AmpDataError::Config(format!(
                    "--ig-subsets {n} gives K = {} levels (standard, {n} fine-tuned models, base) but --levels says {k}",
                    n + 2
                )))
            }
            (None, None) => {
                return Err(AmpDataError::Config(
                    "Incremental Generation needs --ig-subsets N (K - 2; the paper: 3) or --levels K".into(),
                ))
            }
        };
        if k < 3 {
            return Err(AmpDataError::Config(format!(
                "Incremental Generation needs at least one subset (K >= 3), got K = {k}"
            )));
        }
        Ok(k)
    }

    /// Splits the data: (the fine-tuning set F, the preference prompts).
    pub fn split(
        &self,
        input: Vec<InstructionRecord>,
        input_path: &Path,
        opts: &LoadOptions,
    ) -> Result<(Vec<InstructionRecord>, Vec<InstructionRecord>)> {
        let take = |n: usize, f: f64, what: &str| -> Result<usize> {
            let m = (f * n as f64).round() as usize;
            if !(f > 0.0 && f <= 1.0) || m == 0 {
                return Err(AmpDataError::Config(format!(
                    "--ig-fraction {f}: must be in (0, 1] and keep at least one record of {what} ({n} records)"
                )));
            }
            Ok(m)
        };
        match &self.ig_sft {
            Some(p) => {
                let sft = load_llava_with(p, opts)?;
                let m = take(
                    sft.len(),
                    self.ig_fraction.unwrap_or(1.0),
                    &p.display().to_string(),
                )?;
                Ok((sft.into_iter().take(m).collect(), input))
            }
            None => {
                let f = self.ig_fraction.ok_or_else(|| {
                    AmpDataError::Config(
                        "Incremental Generation needs its fine-tuning data: --ig-sft FILE, or --ig-fraction F to use the first F of --input"
                            .into(),
                    )
                })?;
                let m = take(input.len(), f, &input_path.display().to_string())?;
                if m >= input.len() {
                    return Err(AmpDataError::Config(format!(
                        "--ig-fraction {f} leaves no preference prompts in {} ({} records)",
                        input_path.display(),
                        input.len()
                    )));
                }
                let mut sft = input;
                let prompts = sft.split_off(m);
                Ok((sft, prompts))
            }
        }
    }
}

/// `generate` with Incremental Generation: the K − 2 fine-tunes of `base` by `tuner` on the
/// cumulative subsets of F, then every expert (most data first, `base` last) answers the
/// preference prompts. Resumable: the tuner reuses finished fine-tunes, the rows file skips done
/// records.
pub fn run_generate_ig(
    args: &GenerateArgs,
    ig: &IgArgs,
    base: Expert,
    tuner: &dyn crate::generate::FineTuner,
) -> Result<RunSummary> {
    let levels = ig.levels(args.levels)?;
    let opts = LoadOptions { image_folder: args.image_folder.clone(), allow_outside_root: args.allow_outside_root };
    let input = load_llava_with(&args.input, &opts)?;
    let (sft, prompts) = ig.split(input, &args.input, &opts)?;
    let experts = crate::generate::incremental_experts(base, tuner, &sft, levels)?;
    eprintln!(
        "generate (IG): K = {levels}: {} fine-tuned experts on cumulative subsets of {} records, then the base; {} prompts",
        levels - 2,
        sft.len(),
        prompts.len()
    );
    generate_records(args, &prompts, &experts)
}
