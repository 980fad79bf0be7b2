//! The end-to-end AMP demo ("main job") on amp-world's synthetic world, whose truth is known.
//!
//! [`run_demo`] is the driver: it opens the run (the configuration, the run directory and the
//! stage cache, `run.rs`) and calls one function per stage, in order, each returning the typed
//! results the next one reads. Every stage writes under the run directory and is skipped on
//! rerun when its outputs exist and its configuration key matches, see [`stage`]. In order:
//!
//! 1. `world` (`run.rs`) — scenes, images, LLaVA instruction data, preference prompts, an
//!    MRHal-style benchmark, POPE probes and a BPE tokenizer ([`amp_world::World::write`]).
//! 2. `tower` (`experts.rs`) — stage 0: a vision tower trained on per-cell labels, frozen for
//!    every expert ([`tower`]).
//! 3. `expert <name> captions`, `expert <name>` (`experts.rs`) — LLaVA-architecture models of
//!    several sizes trained from scratch but for the tower by `mdpo`'s SFT trainer (LLaVA stage 1
//!    on captions, then stage 2 instruction tuning); one of them is the *base* every variant
//!    starts from.
//! 4. `eval expert-<name>` (`experts.rs`, `eval.rs`) — every expert on the benchmark (rule
//!    judge): does hallucination fall with size, as Multi-size Expert Generation assumes?
//! 5. `ig pretrain`, `ig fine-tune` (`experts.rs`) — Incremental Generation experts
//!    (`amp_data::generate::incremental_experts` with a [`crate::adapters`] fine-tuner).
//! 6. `generate meg|ig` (`preference.rs`) — every expert answers every preference prompt
//!    (`amp_data::pipeline::generate`).
//! 7. The gates (`preference.rs`, [`gates`]) — are the experts graded? Checked before any
//!    preference training.
//! 8. `check meg|ig` (`preference.rs`) — the auto-check with the real all-MiniLM-L6-v2
//!    (`amp_data::pipeline::check`), and the initial (unchecked) ranking for the ablation.
//! 9. `dataset <variant>` (`preference.rs`) — K-level AMP files per variant
//!    (`amp_data::pipeline::finalize`).
//! 10. `ranking` (`preference.rs`) — fraction of wrongly ordered response pairs before/after the
//!     check, against the true number of hallucinated claims ([`ranking`]).
//! 11. `anchor <variant>`, `train <variant> s<seed>` (`train.rs`) — per variant and seed, MDPO /
//!     DPO / the SFT control from the base (`mdpo::Trainer`).
//! 12. `eval <variant>-s<seed>` (`eval.rs`) — MRHal-style benchmark (rule judge, cumulative/mean
//!     score and hallucination rate) and POPE (acc/F1/yes-ratio per split) through
//!     `mrhal_bench`'s harness; then paired-bootstrap intervals against the SFT control.
//! 13. `report` (`run.rs`, [`report`]) — Markdown + PNG curves and bars, every number as
//!     mean ± std over the seeds.
pub mod checkpoint;
pub mod engine;
mod eval;
mod experts;
pub mod gates;
mod preference;
mod presets;
pub mod ranking;
pub mod report;
pub mod results;
mod run;
pub mod stage;
pub mod stats;
pub mod tower;
mod train;

pub use preference::{pick_levels, subset_rows};
pub use results::{
    claim_counts, round_counts, Curve, DemoReport, EvalResult, ExpertQuality, ItemScore, RoundScore, StageTiming, BASE_ROW, CONTROL_ROW,
};
pub use run::RunPaths;
pub(crate) use stage::fingerprint_dir;

use amp_world::WorldConfig;
use mdpo::loss::LossConfig;
use serde::{Deserialize, Serialize};
use run::DemoRun;
pub use tower::TowerSpec;
use std::path::{Path, PathBuf};

// ------------------------------------------------------------------------------------------------
// The driver

/// Run the whole demo (see the module docs): one function per stage, in order. Stages whose
/// outputs exist for the same configuration are skipped when `args.resume`.
pub fn run_demo(args: &DemoArgs) -> Result<DemoReport> {
    let mut run = DemoRun::open(args)?;
    let world = run::world_stage(&mut run)?;
    // The models the preference data comes from (LLaVA stages 0–2, AMP §3.1.1).
    let tower = experts::tower_stage(&mut run, &world)?;
    let sft_data = experts::expert_stages(&mut run, &world, &tower)?;
    let quality = experts::evaluate_experts(&mut run, &world)?;
    if args.experts_only {
        return Err(experts::stop_after_experts(&run.paths, &quality.experts));
    }
    // The preference data (AMP §3.1: MEG / IG generation, the gates, the auto-check of §3.1.3).
    let pools = preference::response_pools(&mut run, &world, &tower, &sft_data)?;
    let generated = preference::generate_stage(&mut run, &pools)?;
    let gate = preference::check_gates(&run, &world, &quality, &generated)?;
    let data = preference::preference_data(&mut run, &world, &generated)?;
    // Preference training and evaluation (AMP §3.2), then the report.
    let trained = train::train_variants(&mut run, &world, &quality)?;
    let intervals = train::control_intervals(&run.cfg, &trained.results);
    let report = DemoReport {
        run_dir: run.paths.root.clone(),
        config: run.cfg.clone(),
        seeds: run.seeds.clone(),
        stages: Vec::new(),
        experts: quality.experts,
        hallucination_falls_with_size: quality.hallucination_falls_with_size,
        tower: tower.report,
        gates: Some(gate),
        anchor_gradients: trained.anchor_gradients,
        intervals,
        dataset_stats: data.dataset_stats,
        ranking: data.ranking,
        results: trained.results,
        curves: trained.curves,
        report_md: run.paths.report().join("report.md"),
        total_wall_s: 0.0,
        total_compute_s: 0.0,
    };
    run::report_stage(&mut run, report)
}

// ------------------------------------------------------------------------------------------------
// Errors and run-directory files

/// Errors of the demo. A stage that needs an API a crate does not provide yet fails with
/// [`DemoError::Blocked`], never with made-up output.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("stage {stage} is blocked: it needs {need}")]
    Blocked { stage: String, need: String },
    #[error("stage {stage}: {message}")]
    Stage { stage: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("config: {0}")]
    Config(String),
    /// The experts fail the gates (docs/demo.md): preference training could not test AMP's claim.
    #[error("the gates failed, so preference training would not test AMP's claim (see {path}):\n{text}")]
    Gates { path: PathBuf, text: String },
    /// `--experts-only`: the run stopped on purpose after the named stage.
    #[error("stopped after {after} as asked; see {path}")]
    Stopped { after: String, path: PathBuf },
    #[error(transparent)]
    World(#[from] amp_world::WorldError),
    #[error(transparent)]
    Data(#[from] amp_data::AmpDataError),
    #[error(transparent)]
    Mdpo(#[from] mdpo::MdpoError),
    #[error(transparent)]
    Bench(#[from] mrhal_bench::BenchError),
    #[error(transparent)]
    Mllm(#[from] mllm::MllmError),
}

pub type Result<T, E = DemoError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DemoError + '_ {
    move |source| DemoError::Io { path: path.to_path_buf(), source }
}

fn stage_err(stage: &str, e: impl std::fmt::Display) -> DemoError {
    DemoError::Stage { stage: stage.into(), message: e.to_string() }
}

/// Write pretty JSON atomically.
pub fn write_json<T: Serialize + ?Sized>(path: &Path, v: &T) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(io_err(d))?;
    }
    let tmp = path.with_extension("json.tmp");
    let s = serde_json::to_vec_pretty(v).map_err(|source| DemoError::Json { path: path.into(), source })?;
    std::fs::write(&tmp, s).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Read JSON, naming the file in errors.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let s = std::fs::read(path).map_err(io_err(path))?;
    serde_json::from_slice(&s).map_err(|source| DemoError::Json { path: path.into(), source })
}

/// A progress bar in the workspace's style.
pub fn progress_bar(len: u64, label: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{msg:>22} [{elapsed_precise}] {wide_bar} {pos}/{len} (eta {eta})") {
        pb.set_style(style);
    }
    pb.set_message(label.to_string());
    pb
}

// ------------------------------------------------------------------------------------------------
// Configuration

/// `amp demo`: the whole AMP pipeline on the synthetic world, with a report.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Preset: `tiny` (CI, a couple of minutes), `small` (default; ≤ 20 min on 2 CPU cores) or
    /// `large`.
    #[arg(long, default_value = "small", value_parser = ["tiny", "small", "large"])]
    pub preset: String,
    /// Seeds of the preference-training runs; every variant is trained once per seed and every
    /// number is reported as mean ± std over them.
    #[arg(long, value_delimiter = ',', default_values_t = vec![0u64, 1, 2])]
    pub seeds: Vec<u64>,
    /// Run directory (stage outputs, models, data, report).
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// Skip stages whose outputs exist for the same configuration (`--resume false` reruns all).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub resume: bool,
    /// Torch intra-op threads (0: leave libtorch's default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// A [`DemoConfig`] JSON file (e.g. a previous run's `config.json`, edited) used instead of
    /// `--preset`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Stop after the experts are trained and evaluated (prints their table; no report), to tune
    /// a world or expert sizes before the rest of the pipeline.
    #[arg(long, default_value_t = false)]
    pub experts_only: bool,
}

/// One model architecture (LLaVA: CLIP-style ViT, MLP projector, LLaMA decoder).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub name: String,
    /// Text hidden size and decoder layers.
    pub hidden: i64,
    pub layers: usize,
    /// Vision tower hidden size and layers.
    pub vision_hidden: i64,
    pub vision_layers: usize,
    /// ViT patch size (48 px / 16 = 9 image tokens, one per grid cell).
    pub patch: i64,
    /// Percent of the caption and dialogue schedules (steps and warm-up) this expert trains
    /// for; absent: 100. Experts may differ in training budget as well as size (AMP §3.1.1's
    /// experts differ in both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps_percent: Option<u32>,
}

impl ModelSpec {
    /// `t` scaled to this expert's training budget ([`ModelSpec::steps_percent`]).
    pub fn schedule(&self, t: &TrainSpec) -> TrainSpec {
        match self.steps_percent {
            None | Some(100) => t.clone(),
            Some(p) => {
                let scale = |n: usize| ((n as u64 * p as u64).div_ceil(100)) as usize;
                TrainSpec { steps: scale(t.steps).max(1), warmup_steps: scale(t.warmup_steps), ..t.clone() }
            }
        }
    }
}

/// An optimisation schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSpec {
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_steps: usize,
    /// Train the projector along with the language model (when the vision tower is a frozen
    /// stage-0 tower). `false` keeps the projector at its random initialisation, a fixed random
    /// map of the tower's features: a projector trained with a language model that starts from
    /// scratch drops the feature directions the language model does not read yet, and the
    /// `small` preset's experts then never learned shape (docs/demo.md, "Why the projector is
    /// frozen"). Absent in older configs: `true`.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub train_projector: bool,
    /// Length-grouped batches (mdpo's `group_by_length`, as transformers'): examples of
    /// similar length share a batch, so little of a step is padding. Absent: `false`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub group_by_length: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// Decoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenSpec {
    pub num_beams: usize,
    pub max_new_tokens: usize,
    pub repetition_penalty: f32,
    /// Sequences per decode.
    pub batch_size: usize,
}

/// Where a variant's levels come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Multi-size experts.
    Meg,
    /// Incrementally fine-tuned models.
    Ig,
}

/// A preference-training variant (trained from the base once per seed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    pub name: String,
    /// Number of levels K (the standard response + K − 1 generated).
    pub levels: usize,
    pub source: Source,
    /// Auto-checked ranking (`false`: the initial MEG/IG order, Table 5's ablation).
    pub checked: bool,
    /// The loss (MDPO, DPO, adjacent pairs, ...).
    pub loss: LossConfig,
    /// The generated levels by expert name, best first (empty: `levels − 1` of the pool spread
    /// by [`pick_levels`]).
    #[serde(default)]
    pub pool: Vec<String>,
    /// Preference training, or the SFT control (the anchor alone: SFT of the base on the
    /// standard responses with the same steps and data).
    #[serde(default)]
    pub kind: VariantKind,
}

/// What a variant trains.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VariantKind {
    #[default]
    Preference,
    SftControl,
}

/// Everything that defines a demo run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemoConfig {
    pub preset: String,
    pub world: WorldConfig,
    /// The MEG pool, largest first.
    pub experts: Vec<ModelSpec>,
    /// Name of the expert every variant starts from (the "base" MLLM).
    pub base: String,
    /// SFT of the experts from scratch.
    pub sft: TrainSpec,
    /// Incremental Generation: K − 2 fine-tuning parts (0 disables IG). The pre-trained model M
    /// is the base architecture trained on the first `ig_pretrain_fraction` of the SFT data.
    pub ig_parts: usize,
    pub ig_pretrain_fraction: f64,
    /// The fine-tuning set F of IG (split into the `ig_parts` parts) is the next
    /// `ig_finetune_fraction` of the SFT data after the pre-training share (1.0: all the rest).
    #[serde(default = "one")]
    pub ig_finetune_fraction: f64,
    pub gen: GenSpec,
    /// Preference training.
    pub pref: TrainSpec,
    pub beta: f64,
    pub variants: Vec<Variant>,
    /// Auto-check threshold τ.
    pub tau: f32,
    /// Stage 0: a shared vision tower trained on per-cell labels, frozen for every expert
    /// ([`tower`]); `None`: each expert trains its own tower from scratch.
    #[serde(default)]
    pub tower: Option<TowerSpec>,
    /// Stage 1: caption (projector alignment) steps before the instruction tuning `sft`.
    #[serde(default)]
    pub captions: Option<TrainSpec>,
    /// Fail the job when the gates fail ([`gates`]); they are computed and reported either way.
    #[serde(default)]
    pub enforce_gates: bool,
    /// Paired-bootstrap resamples of the intervals against the SFT control.
    #[serde(default = "bootstrap_default")]
    pub bootstrap: usize,
}

impl DemoConfig {
    /// What identifies the world in a stage key: its configuration and the text generator's
    /// version ([`amp_world::GENERATOR_VERSION`]), so a changed generator cannot reuse a stale
    /// world or anything trained on it.
    pub(super) fn world_key(&self) -> (&WorldConfig, u32) {
        (&self.world, amp_world::GENERATOR_VERSION)
    }
}

fn bootstrap_default() -> usize {
    2000
}

fn one() -> f64 {
    1.0
}
