//! Command-line arguments for `amp train` (MDPO) and `amp sft`, and the one code path both take.
//!
//! The two commands differ only in data: which flags exist ([`TrainArgs`] adds the loss and level
//! flags), which file format is read (AMP's K-level format or LLaVA instructions), and which
//! objective runs ([`Task`]). Each turns into a [`Job`] (task, config, examples); the binary that
//! owns a concrete model builds the policy and calls [`Job::run`].
use crate::config::MdpoConfig;
use crate::data::{load_amp_file, load_sft_file, LoadOptions};
use crate::loss::{PairLoss, PairSet};
use crate::trainer::{Reference, Task, TrainSummary, Trainer};
use crate::{PreferenceExample, PreferenceModel, Result};
use std::path::PathBuf;

/// Flags shared by `train` and `sft`; each overrides the config file (`--config`) when given.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Training data (AMP format for `train`; LLaVA or AMP format for `sft`).
    #[arg(long)]
    pub data: PathBuf,
    /// JSON config file (an `MdpoConfig`); flags override its values.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The data root: relative image paths resolve against it, and paths that leave it (`..`,
    /// absolute paths elsewhere) are refused (default: the data file's directory).
    #[arg(long)]
    pub image_root: Option<PathBuf>,
    /// Read image paths outside the data root too.
    #[arg(long)]
    pub allow_outside_root: bool,
    /// Run directory (metrics.jsonl, checkpoints/, plots/, ref_logps.json).
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub max_steps: Option<usize>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub grad_accum: Option<usize>,
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    /// `constant` or `cosine`.
    #[arg(long)]
    pub schedule: Option<String>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Per-round token weight c (round r weighs 1 + c·r).
    #[arg(long)]
    pub round_weight: Option<f64>,
    #[arg(long)]
    pub save_every: Option<usize>,
    /// Start from scratch even if output_dir holds checkpoints (refused unless empty).
    #[arg(long)]
    pub no_resume: bool,
    /// Resume although a training setting differs from the checkpoint's (logged in
    /// metrics.jsonl); without it such a resume is refused, naming the setting.
    #[arg(long)]
    pub override_config: bool,
}

/// `amp train`: MDPO.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Number of levels K.
    #[arg(long)]
    pub levels: Option<usize>,
    #[arg(long)]
    pub beta: Option<f64>,
    /// Pair set: all, adjacent, top-vs-rest, or an explicit list like "0-1,1-2".
    #[arg(long)]
    pub pairs: Option<String>,
    /// Pair loss: sigmoid, hinge or ipo.
    #[arg(long)]
    pub loss: Option<String>,
    #[arg(long)]
    pub label_smoothing: Option<f64>,
    /// Anchor weight (0 = plain DPO on every pair).
    #[arg(long)]
    pub anchor_weight: Option<f64>,
    /// Levels per forward/backward chunk (bounded memory).
    #[arg(long)]
    pub level_chunk: Option<usize>,
    /// Reference-cache file.
    #[arg(long)]
    pub ref_cache: Option<PathBuf>,
}

/// `amp sft`.
#[derive(Debug, Clone, clap::Args)]
pub struct SftArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

fn bad(m: String) -> crate::MdpoError {
    crate::MdpoError::Config(m)
}

/// Parses `--pairs`.
pub fn parse_pairs(s: &str) -> Result<PairSet> {
    Ok(match s {
        "all" => PairSet::All,
        "adjacent" => PairSet::Adjacent,
        "top-vs-rest" | "top_vs_rest" => PairSet::TopVsRest,
        list => PairSet::Explicit(
            list.split(',')
                .map(|p| {
                    let (a, b) = p.trim().split_once('-').ok_or_else(|| bad(format!("pair {p:?}: expected i-j")))?;
                    let parse = |x: &str| x.trim().parse::<usize>().map_err(|_| bad(format!("pair {p:?}: expected i-j")));
                    Ok((parse(a)?, parse(b)?))
                })
                .collect::<Result<Vec<_>>>()?,
        ),
    })
}

impl CommonArgs {
    fn apply(&self, c: &mut MdpoConfig) -> Result<()> {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f.clone() { c.$f = v.into(); } )* };
        }
        set!(output_dir, lr, epochs, batch_size, grad_accum, warmup_steps, seed, round_weight, save_every);
        if self.max_steps.is_some() {
            c.max_steps = self.max_steps;
        }
        if let Some(s) = &self.schedule {
            c.schedule = serde_json::from_value(serde_json::Value::String(s.clone()))
                .map_err(|_| bad(format!("--schedule {s:?}: expected constant or cosine")))?;
        }
        if self.no_resume {
            c.resume = false;
        }
        if self.override_config {
            c.override_config = true;
        }
        Ok(())
    }

    fn base(&self) -> Result<MdpoConfig> {
        match &self.config {
            Some(p) => MdpoConfig::from_file(p),
            None => Ok(MdpoConfig::default()),
        }
    }
}

impl TrainArgs {
    /// The config file (or defaults) with the flags applied, validated.
    pub fn config(&self) -> Result<MdpoConfig> {
        let mut c = self.common.base()?;
        self.common.apply(&mut c)?;
        if let Some(k) = self.levels {
            c.levels = k;
        }
        if let Some(b) = self.beta {
            c.loss.beta = b;
        }
        if let Some(p) = &self.pairs {
            c.loss.pairs = parse_pairs(p)?;
        }
        if let Some(l) = &self.loss {
            c.loss.loss = match l.as_str() {
                "sigmoid" => PairLoss::Sigmoid,
                "hinge" => PairLoss::Hinge,
                "ipo" => PairLoss::Ipo,
                o => return Err(bad(format!("--loss {o:?}: expected sigmoid, hinge or ipo"))),
            };
        }
        if let Some(v) = self.label_smoothing {
            c.loss.label_smoothing = v;
        }
        if let Some(v) = self.anchor_weight {
            c.loss.anchor_weight = v;
        }
        if self.level_chunk.is_some() {
            c.level_chunk = self.level_chunk;
        }
        if self.ref_cache.is_some() {
            c.ref_cache = self.ref_cache.clone();
        }
        c.validate(true)?;
        Ok(c)
    }

    /// The config and the AMP-format data (K from the config).
    pub fn job(&self) -> Result<Job> {
        Job::load(Task::Preference, self.config()?, &self.common)
    }
}

impl SftArgs {
    /// The config file (or defaults) with the flags applied, validated, `levels = 1`.
    pub fn config(&self) -> Result<MdpoConfig> {
        let mut c = self.common.base()?;
        self.common.apply(&mut c)?;
        c.levels = 1;
        c.validate(false)?;
        Ok(c)
    }

    /// The config and the SFT data (LLaVA or AMP format, K = 1).
    pub fn job(&self) -> Result<Job> {
        Job::load(Task::Sft, self.config()?, &self.common)
    }
}

/// A parsed `train` or `sft` command: everything but the model.
#[derive(Debug, Clone)]
pub struct Job {
    pub task: Task,
    pub config: MdpoConfig,
    pub examples: Vec<PreferenceExample>,
}

impl Job {
    fn load(task: Task, config: MdpoConfig, common: &CommonArgs) -> Result<Self> {
        let opts = LoadOptions {
            levels: Some(config.levels),
            image_root: common.image_root.clone(),
            check_images: true,
            allow_outside_root: common.allow_outside_root,
        };
        let examples = match task {
            Task::Preference => load_amp_file(&common.data, &opts)?,
            Task::Sft => load_sft_file(&common.data, &opts)?,
        };
        Ok(Self { task, config, examples })
    }

    /// The command's name (`train` or `sft`).
    pub fn name(&self) -> &'static str {
        match self.task {
            Task::Preference => "train",
            Task::Sft => "sft",
        }
    }

    /// Prints the global batch, trains `policy` (the reference is unused for SFT) and returns the
    /// summary and the trained policy.
    pub fn run<M: PreferenceModel>(self, policy: M, reference: Reference<M>) -> Result<(TrainSummary, M)> {
        self.run_with(policy, reference, Box::new(crate::SingleProcess))
    }

    /// [`Self::run`] as one rank of a data-parallel job (docs/distributed.md); only rank 0 prints.
    pub fn run_with<M: PreferenceModel>(
        self,
        policy: M,
        reference: Reference<M>,
        comm: Box<dyn crate::Collective>,
    ) -> Result<(TrainSummary, M)> {
        let world = comm.world_size();
        let c = &self.config;
        if world == 1 {
            eprintln!(
                "amp {}: global batch {} = micro-batch {} × {} accumulation step(s) (--batch-size, --grad-accum)",
                self.name(),
                c.global_batch(),
                c.batch_size,
                c.grad_accum
            );
        } else if comm.is_main() {
            eprintln!(
                "amp {}: global batch {} = micro-batch {} × {} accumulation step(s) × {world} ranks (--batch-size, --grad-accum, --nproc)",
                self.name(),
                c.global_batch() * world,
                c.batch_size,
                c.grad_accum
            );
        }
        let name = self.name();
        let mut trainer = Trainer::with_collective(self.task, policy, reference, self.examples, self.config, comm)?;
        let summary = trainer.train()?;
        if world > 1 && trainer.rank().0 == 0 {
            eprintln!("amp {name}: all-reduce {:.3} s over {} step(s)", trainer.all_reduce_seconds(), summary.steps);
        }
        Ok((summary, trainer.into_policy()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        train: TrainArgs,
    }

    #[test]
    fn flags_override_defaults() {
        let cli = Cli::try_parse_from([
            "amp", "--data", "d.json", "--levels", "3", "--pairs", "0-1,1-2", "--beta", "0.2", "--anchor-weight", "0",
            "--schedule", "cosine", "--grad-accum", "2",
        ])
        .unwrap();
        let c = cli.train.config().unwrap();
        assert_eq!(c.levels, 3);
        assert_eq!(c.loss.pairs, PairSet::Explicit(vec![(0, 1), (1, 2)]));
        assert_eq!((c.loss.beta, c.loss.anchor_weight, c.grad_accum), (0.2, 0.0, 2));
        assert_eq!(c.schedule, crate::optim::Schedule::Cosine);
        let bad = Cli::try_parse_from(["amp", "--data", "d.json", "--levels", "3", "--pairs", "0-3"]).unwrap();
        assert!(bad.train.config().is_err());
        assert!(parse_pairs("0_1").is_err());
    }
}
