//! The end-to-end AMP demo ("main job") on amp-world's synthetic world, whose truth is known.
//!
//! Stages (each writes under the run directory and is skipped on rerun when its outputs exist
//! and its configuration key matches, see [`stage`]):
//!
//! 1. `world` — scenes, images, LLaVA instruction data, preference prompts, an MRHal-style
//!    benchmark, POPE probes and a BPE tokenizer ([`amp_world::World::write`]).
//! 2. `experts` — LLaVA-architecture models of several sizes trained from scratch (vision tower
//!    included) by `mdpo`'s SFT trainer; one of them is the *base* every variant starts from.
//! 3. `expert-eval` — every expert on the benchmark (rule judge): does hallucination fall with
//!    size, as Multi-size Expert Generation assumes?
//! 4. `ig` — Incremental Generation experts (`amp_data::generate::incremental_experts` with a
//!    [`crate::adapters`] fine-tuner).
//! 5. `generate` — every expert answers every preference prompt (`amp_data::pipeline::generate`).
//! 6. `check` — the auto-check with the real all-MiniLM-L6-v2 (`amp_data::pipeline::check`), and
//!    the initial (unchecked) ranking for the ablation.
//! 7. `datasets` — K-level AMP files per variant (`amp_data::pipeline::finalize`).
//! 8. `ranking` — fraction of wrongly ordered response pairs before/after the check, against the
//!    true number of hallucinated claims ([`ranking`]).
//! 9. `train` — per variant and seed, MDPO / DPO from the base (`mdpo::Trainer`).
//! 10. `eval` — MRHal-style benchmark (rule judge, cumulative/mean score and hallucination rate)
//!     and POPE (acc/F1/yes-ratio per split) through `mrhal_bench`'s harness.
//! 11. `report` — Markdown + PNG curves and bars, every number as mean ± std over the seeds.
pub mod checkpoint;
pub mod engine;
pub mod gates;
pub mod ranking;
pub mod report;
pub mod stage;
pub mod stats;
pub mod tower;

use crate::adapters::{BertEmbedder, LlavaChat, RuleJudge};
use amp_data::pipeline::{self as dp, CheckedRow, GeneratedRow, Shard};
use amp_data::{AutoCheckConfig, AutoChecker, Chunker, Expert};
use amp_world::{SceneIndex, World, WorldConfig};
use mdpo::loss::{LossConfig, PairSet};
use mdpo::{MdpoConfig, PreferenceExample};
use mrhal_bench::answers::{mrhal_tasks, pope_tasks};
use mrhal_bench::{Benchmark, RunResults};
use serde::{Deserialize, Serialize};
use stage::Stages;
pub use tower::TowerSpec;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

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
}

/// An optimisation schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSpec {
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_steps: usize,
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

fn bootstrap_default() -> usize {
    2000
}

/// An expert architecture. `patch` is the ViT patch size: the `small` and `large` worlds use one
/// patch per cell of the 3x3 grid (9 image tokens), which measured better grounding (and 4x
/// fewer image tokens) than 2x2 patches per cell.
fn spec(name: &str, hidden: i64, layers: usize, vision_hidden: i64, vision_layers: usize, patch: i64) -> ModelSpec {
    ModelSpec { name: name.into(), hidden, layers, vision_hidden, vision_layers, patch }
}

fn one() -> f64 {
    1.0
}

/// The variants: binary DPO (K = 2), MDPO for K = 3..=max_k, MDPO on adjacent pairs only; with
/// `ablations`, also MDPO on the initial (unchecked) ranking and MDPO on IG data.
fn variants(max_k: usize, ablations: bool) -> Vec<Variant> {
    variants_with(max_k, ablations, ablations)
}

/// [`variants`] with the two ablations chosen separately: MDPO on the unchecked ranking
/// (`initial`) and MDPO on IG data (`ig`).
fn variants_with(max_k: usize, initial: bool, ig: bool) -> Vec<Variant> {
    let v = |name: &str, levels, source, checked, loss| Variant {
        name: name.into(),
        levels,
        source,
        checked,
        loss,
        pool: vec![],
        kind: VariantKind::Preference,
    };
    let mut out = vec![v("dpo-k2", 2, Source::Meg, true, LossConfig::dpo())];
    for k in 3..=max_k {
        out.push(v(&format!("mdpo-k{k}"), k, Source::Meg, true, LossConfig::mdpo()));
    }
    let k4 = max_k.min(4);
    out.push(v(
        &format!("mdpo-k{k4}-adjacent"),
        k4,
        Source::Meg,
        true,
        LossConfig { pairs: PairSet::Adjacent, ..LossConfig::mdpo() },
    ));
    if initial {
        out.push(v(&format!("mdpo-k{k4}-initial"), k4, Source::Meg, false, LossConfig::mdpo()));
    }
    if ig {
        out.push(v(&format!("mdpo-ig-k{k4}"), k4, Source::Ig, true, LossConfig::mdpo()));
    }
    out
}

/// The variants of the grounded presets over a MEG pool listed largest first whose first
/// member is the base: the SFT control; DPO with K = 2 (standard vs the base's own answer);
/// MDPO with K = 2..=pool+1 adding experts by size; MDPO K = 4 on adjacent pairs and on the
/// unchecked ranking; DPO with the weakest expert as the loser (the old K = 2, an ablation).
fn grounded_variants(pool: &[&str]) -> Vec<Variant> {
    let names = |k: usize| pool[..k - 1].iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let v = |name: &str, levels: usize, checked, loss, pool: Vec<String>| Variant {
        name: name.into(),
        levels,
        source: Source::Meg,
        checked,
        loss,
        pool,
        kind: VariantKind::Preference,
    };
    let mut out = vec![Variant { kind: VariantKind::SftControl, ..v("sft-control", 1, true, LossConfig::mdpo(), vec![]) }];
    out.push(v("dpo-k2", 2, true, LossConfig::dpo(), names(2)));
    for k in 2..=pool.len() + 1 {
        out.push(v(&format!("mdpo-k{k}"), k, true, LossConfig::mdpo(), names(k)));
    }
    let k4 = (pool.len() + 1).min(4);
    out.push(v(&format!("mdpo-k{k4}-adjacent"), k4, true, LossConfig { pairs: PairSet::Adjacent, ..LossConfig::mdpo() }, names(k4)));
    out.push(v(&format!("mdpo-k{k4}-initial"), k4, false, LossConfig::mdpo(), names(k4)));
    out.push(v("dpo-k2-weakest", 2, true, LossConfig::dpo(), vec![pool[pool.len() - 1].to_string()]));
    out
}

impl DemoConfig {
    /// The preset by name.
    pub fn preset(name: &str) -> Result<Self> {
        let world = WorldConfig::preset(name)?;
        Ok(match name {
            // The small preset's design at toy size (48 px: one 16 px patch per grid cell).
            "tiny" => DemoConfig {
                preset: name.into(),
                world: WorldConfig { n_train: 48, n_pref: 8, n_bench: 6, n_pope: 4, image_size: 48, canonical: true, ..world },
                experts: vec![spec("m48", 48, 1, 32, 1, 16), spec("s32", 32, 1, 32, 1, 16), spec("xs16", 16, 1, 32, 1, 16)],
                base: "m48".into(),
                sft: TrainSpec { steps: 12, batch_size: 8, lr: 3e-3, warmup_steps: 2 },
                ig_parts: 2,
                ig_pretrain_fraction: 0.25,
                ig_finetune_fraction: 1.0,
                gen: GenSpec { num_beams: 1, max_new_tokens: 24, repetition_penalty: 1.0, batch_size: 32 },
                pref: TrainSpec { steps: 4, batch_size: 4, lr: 5e-5, warmup_steps: 1 },
                beta: 0.1,
                variants: {
                    let mut v = grounded_variants(&["m48", "s32", "xs16"]);
                    v.push(Variant { name: "mdpo-ig-k3".into(), levels: 3, source: Source::Ig, pool: vec![], ..v[3].clone() });
                    v
                },
                tau: 0.85,
                tower: Some(TowerSpec { hidden: 32, layers: 1, steps: 20, batch_size: 16, lr: 2e-3 }),
                captions: Some(TrainSpec { steps: 6, batch_size: 8, lr: 3e-3, warmup_steps: 1 }),
                // Toy models cannot pass; the gates' computation is what the tiny run checks.
                enforce_gates: false,
                bootstrap: 200,
            },
            // Issue 14's design (docs/demo.md): a shared stage-0 tower, frozen; caption then
            // dialogue tuning on canonical text; experts graded by language-model size, the
            // largest the base; 500 benchmark dialogues (standard error of a rate ≤ 0.015).
            "small" => DemoConfig {
                preset: name.into(),
                world: WorldConfig { n_train: 3000, n_pref: 400, n_bench: 500, n_pope: 100, canonical: true, ..world },
                experts: vec![
                    spec("d96", 96, 2, 64, 2, 16),
                    spec("d64", 64, 2, 64, 2, 16),
                    spec("d48", 48, 1, 64, 2, 16),
                    spec("d32", 32, 1, 64, 2, 16),
                ],
                base: "d96".into(),
                sft: TrainSpec { steps: 600, batch_size: 32, lr: 2e-3, warmup_steps: 30 },
                ig_parts: 0,
                ig_pretrain_fraction: 0.2,
                ig_finetune_fraction: 0.5,
                gen: GenSpec { num_beams: 1, max_new_tokens: 80, repetition_penalty: 1.0, batch_size: 64 },
                pref: TrainSpec { steps: 60, batch_size: 8, lr: 5e-5, warmup_steps: 6 },
                beta: 0.1,
                variants: grounded_variants(&["d96", "d64", "d48", "d32"]),
                tau: 0.85,
                tower: Some(TowerSpec { hidden: 64, layers: 2, steps: 600, batch_size: 64, lr: 2e-3 }),
                captions: Some(TrainSpec { steps: 400, batch_size: 32, lr: 2e-3, warmup_steps: 20 }),
                enforce_gates: true,
                bootstrap: 2000,
            },
            _ => DemoConfig {
                preset: name.into(),
                world: WorldConfig { n_pref: 2000, n_pope: 300, ..world },
                experts: vec![
                    spec("d192", 192, 3, 96, 2, 32),
                    spec("d128", 128, 2, 64, 2, 32),
                    spec("d96", 96, 2, 64, 2, 32),
                    spec("d64", 64, 2, 64, 1, 32),
                ],
                base: "d96".into(),
                sft: TrainSpec { steps: 3000, batch_size: 32, lr: 1e-3, warmup_steps: 100 },
                ig_parts: 2,
                ig_pretrain_fraction: 0.2,
                ig_finetune_fraction: 1.0,
                gen: GenSpec { num_beams: 1, max_new_tokens: 128, repetition_penalty: 1.0, batch_size: 64 },
                pref: TrainSpec { steps: 600, batch_size: 8, lr: 5e-5, warmup_steps: 20 },
                beta: 0.1,
                variants: variants(5, true),
                tau: 0.85,
                tower: None,
                captions: None,
                enforce_gates: false,
                bootstrap: 2000,
            },
        })
    }

    /// Check the configuration.
    pub fn validate(&self) -> Result<()> {
        self.world.validate()?;
        if !self.experts.iter().any(|e| e.name == self.base) {
            return Err(DemoError::Config(format!("base `{}` is not one of the experts", self.base)));
        }
        for e in &self.experts {
            if e.patch <= 0 || self.world.image_size as i64 % e.patch != 0 {
                return Err(DemoError::Config(format!(
                    "expert {}: patch {} does not divide the image size {}",
                    e.name, e.patch, self.world.image_size
                )));
            }
        }
        if let Some(t) = &self.tower {
            for e in &self.experts {
                if (e.vision_hidden, e.vision_layers, e.patch * 3) != (t.hidden, t.layers, self.world.image_size as i64) {
                    return Err(DemoError::Config(format!(
                        "expert {}: the shared stage-0 tower is {}×{} with one patch per grid cell ({} px), the expert asks for {}×{} patch {}",
                        e.name, t.hidden, t.layers, self.world.image_size / 3, e.vision_hidden, e.vision_layers, e.patch
                    )));
                }
            }
        }
        for v in &self.variants {
            if v.kind == VariantKind::SftControl {
                continue;
            }
            if let Some(p) = v.pool.iter().find(|p| !self.experts.iter().any(|e| &e.name == *p)) {
                return Err(DemoError::Config(format!("variant {}: pool member `{p}` is not an expert", v.name)));
            }
            if !v.pool.is_empty() && v.pool.len() + 1 != v.levels {
                return Err(DemoError::Config(format!("variant {}: K = {} needs {} pool members, got {}", v.name, v.levels, v.levels - 1, v.pool.len())));
            }
            let pool = match v.source {
                Source::Meg => self.experts.len(),
                Source::Ig => self.ig_parts + 1,
            };
            if v.levels < 2 || v.levels - 1 > pool {
                return Err(DemoError::Config(format!(
                    "variant {}: K = {} needs {} generated responses, the {:?} pool has {pool}",
                    v.name,
                    v.levels,
                    v.levels.saturating_sub(1),
                    v.source
                )));
            }
            v.loss.validate(v.levels)?;
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------------
// Report data

/// Wall time of one stage (0 when skipped on resume; `previous_s` is what it took when it ran).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageTiming {
    pub stage: String,
    pub skipped: bool,
    pub wall_s: f64,
    pub previous_s: f64,
}

/// Benchmark numbers of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    pub model: String,
    pub mrhal: BTreeMap<String, f64>,
    pub pope: BTreeMap<String, f64>,
    /// Items without a verdict / answer (never imputed).
    pub missing: usize,
    /// Attribute accuracy of the objects the model names at a position in its benchmark answers
    /// ([`amp_world::AttributeTally`]): `located_claims`, `shape_accuracy`, `colour_accuracy`,
    /// `size_accuracy` (a key is absent when no claim names that attribute).
    #[serde(default)]
    pub grounding: BTreeMap<String, f64>,
    /// Per benchmark dialogue, per round: the rule judge's verdict and claim counts (for the
    /// paired bootstrap and the per-category rates).
    #[serde(default)]
    pub items: Vec<ItemScore>,
}

/// One benchmark dialogue's rounds as the rule judge saw them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemScore {
    pub id: String,
    pub rounds: Vec<RoundScore>,
}

/// One round: its MRHal category, whether it is hallucinated (rating < 3) and its claims.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundScore {
    pub category: String,
    pub hallucinated: bool,
    /// Checkable claims (true or false) and the false ones.
    pub claims: usize,
    pub hallucinated_claims: usize,
}

impl EvalResult {
    /// Per-item counts of `f(round) → (hits, total)`.
    pub fn counts(&self, f: impl Fn(&RoundScore) -> (f64, f64)) -> Vec<stats::Count> {
        self.items
            .iter()
            .map(|it| {
                it.rounds.iter().fold(stats::Count::default(), |c, r| {
                    let (h, t) = f(r);
                    stats::Count { hits: c.hits + h, total: c.total + t }
                })
            })
            .collect()
    }
    /// Hallucinated / checkable claims over the benchmark.
    pub fn claim_hallucination_rate(&self) -> f64 {
        stats::rate(&self.counts(claim_counts))
    }
}

/// A round's (hallucinated rounds, rounds).
pub fn round_counts(r: &RoundScore) -> (f64, f64) {
    (f64::from(u8::from(r.hallucinated)), 1.0)
}

/// A round's (hallucinated claims, checkable claims).
pub fn claim_counts(r: &RoundScore) -> (f64, f64) {
    (r.hallucinated_claims as f64, r.claims as f64)
}

/// One expert's quality (the MEG premise).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpertQuality {
    pub name: String,
    pub params: i64,
    pub eval: EvalResult,
}

/// A training curve: (step, loss, reward accuracy) per optimizer step.
pub type Curve = Vec<(usize, f64, Option<f64>)>;

/// What [`run_demo`] returns (also written as `report/report.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemoReport {
    pub run_dir: PathBuf,
    pub config: DemoConfig,
    pub seeds: Vec<u64>,
    pub stages: Vec<StageTiming>,
    pub experts: Vec<ExpertQuality>,
    /// Whether the experts' claim hallucination rate falls strictly with size.
    pub hallucination_falls_with_size: bool,
    /// Stage 0's held-out per-cell accuracy.
    #[serde(default)]
    pub tower: Option<tower::TowerReport>,
    /// The gates, computed before preference training.
    #[serde(default)]
    pub gates: Option<gates::Gates>,
    /// Per MDPO variant: gradient norms at the base of the anchor, the pair terms and the whole
    /// loss on one batch.
    #[serde(default)]
    pub anchor_gradients: BTreeMap<String, (f64, f64, f64)>,
    /// Per variant: paired-bootstrap intervals of its difference from the SFT control (MRHal
    /// round hallucination rate, claim hallucination rate), items pooled over seeds.
    #[serde(default)]
    pub intervals: BTreeMap<String, (stats::Interval, stats::Interval)>,
    pub dataset_stats: BTreeMap<String, dp::DatasetStats>,
    pub ranking: ranking::RankingQuality,
    /// variant → seed → results (the untouched base is the [`BASE_ROW`] row).
    pub results: BTreeMap<String, BTreeMap<u64, EvalResult>>,
    /// variant → seed → training curve (step, loss, reward accuracy).
    pub curves: BTreeMap<String, BTreeMap<u64, Curve>>,
    pub report_md: PathBuf,
    /// Wall time of this invocation.
    pub total_wall_s: f64,
    /// Sum of every stage's wall time when it (last) ran: the cost of the whole run from scratch.
    pub total_compute_s: f64,
}

// ------------------------------------------------------------------------------------------------
// The run

/// Paths of a run directory.
#[derive(Debug, Clone)]
pub struct RunPaths {
    pub root: PathBuf,
}

impl RunPaths {
    pub fn world(&self) -> PathBuf {
        self.root.join("world")
    }
    pub fn images(&self) -> PathBuf {
        self.world().join("images")
    }
    pub fn tokenizer(&self) -> PathBuf {
        self.world().join("tokenizer.json")
    }
    pub fn expert(&self, name: &str) -> PathBuf {
        self.root.join("models").join(name)
    }
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }
    pub fn train(&self, variant: &str, seed: u64) -> PathBuf {
        self.root.join("train").join(variant).join(format!("seed-{seed}"))
    }
    pub fn eval(&self, model: &str) -> PathBuf {
        self.root.join("eval").join(model)
    }
    pub fn report(&self) -> PathBuf {
        self.root.join("report")
    }
}

fn sft_examples(world: &Path, file: &str) -> Result<Vec<PreferenceExample>> {
    let opts = mdpo::data::LoadOptions { image_root: Some(world.join("images")), check_images: true, ..Default::default() };
    Ok(mdpo::data::load_sft_file(&world.join(file), &opts)?)
}

/// The results row of the untouched base.
pub const BASE_ROW: &str = "base";
/// The results row of the SFT control (the anchor alone).
pub const CONTROL_ROW: &str = "sft-control";

/// Run the whole demo (see the module docs). Stages whose outputs exist for the same
/// configuration are skipped when `args.resume`.
pub fn run_demo(args: &DemoArgs) -> Result<DemoReport> {
    let t0 = Instant::now();
    if args.threads > 0 {
        tch::set_num_threads(args.threads as i32);
    }
    if args.seeds.is_empty() {
        return Err(DemoError::Config("at least one seed".into()));
    }
    let cfg = match &args.config {
        Some(p) => read_json::<DemoConfig>(p)?,
        None => DemoConfig::preset(&args.preset)?,
    };
    cfg.validate()?;
    std::fs::create_dir_all(&args.out).map_err(io_err(&args.out))?;
    // Absolute paths: the data files written below name their images, and must still load when
    // the demo (or `amp train` on its data) runs from another directory.
    let paths = RunPaths { root: std::fs::canonicalize(&args.out).map_err(io_err(&args.out))? };
    write_json(&paths.root.join("config.json"), &cfg)?;
    let mut st = Stages::new(&paths.root, args.resume);

    // 1. World.
    let world = World::new(cfg.world.clone())?;
    st.run("world", &cfg.world, &[paths.world().join("world.json")], |_| {
        // The stage reruns only for another configuration: the old world goes (amp-world refuses
        // to overwrite a directory holding another config).
        if paths.world().join("world.json").exists() {
            std::fs::remove_dir_all(paths.world()).map_err(io_err(&paths.world()))?;
        }
        world.write(&paths.world())?;
        Ok(())
    })?;
    let scenes = SceneIndex::open(&paths.world())?;
    let judge = RuleJudge::new(scenes.clone());
    let vocab = tokenizers::Tokenizer::from_file(paths.tokenizer())
        .map_err(|e| stage_err("world", format!("{}: {e}", paths.tokenizer().display())))?
        .get_vocab_size(true) as i64;

    // 0. The shared vision tower (stage 0), frozen for every expert.
    let mut tower_report = None;
    let tower_dir = paths.root.join("models").join("tower");
    if let Some(t) = &cfg.tower {
        let key = (&cfg.world, t);
        st.run("tower", &key, &[tower_dir.join(tower::WEIGHTS)], |_| {
            let ids = |split: amp_world::Split| (0..world.len(split)).map(|i| World::id(split, i)).collect::<Vec<_>>();
            let r = tower::train(&paths.world(), &cfg.world, &scenes, &ids(amp_world::Split::Train), &ids(amp_world::Split::Bench), t, 7, &tower_dir)?;
            eprintln!(
                "[demo] stage-0 tower, held-out per-cell accuracy: occupancy {:.3}, shape {:.3}, colour {:.3}, size {:.3}, all three {:.3}",
                r.occupancy, r.shape, r.colour, r.size, r.all_attributes
            );
            Ok(())
        })?;
        tower_report = Some(read_json::<tower::TowerReport>(&tower_dir.join("tower_report.json"))?);
    }
    let tower_path = cfg.tower.as_ref().map(|_| tower_dir.clone());

    // 2. Experts: (stage 1, captions) then instruction tuning, from scratch but for the tower.
    let train = sft_examples(&paths.world(), "train.json")?;
    let captions = match cfg.captions {
        Some(_) => sft_examples(&paths.world(), amp_world::dataset::CAPTIONS)?,
        None => Vec::new(),
    };
    for (i, e) in cfg.experts.iter().enumerate() {
        let dir = paths.expert(&e.name);
        let scratch =
            engine::Init::Scratch { spec: e.clone(), image_size: cfg.world.image_size as i64, vocab, seed: 1000 + i as i64, tower: tower_path.clone() };
        let init = match &cfg.captions {
            Some(c) => {
                let cdir = dir.join("captions");
                let key = (&cfg.world, e, c, st.key_of("tower"));
                st.run(&format!("expert {} captions", e.name), &key, &[engine::model_dir(&cdir)], |name| {
                    stage::work_dir(&cdir, &key)?;
                    engine::train_sft(name, &scratch, &paths.tokenizer(), captions.clone(), c, 500 + i as u64, &cdir)?;
                    Ok(())
                })?;
                engine::Init::From(engine::model_dir(&cdir))
            }
            None => scratch,
        };
        let key = (&cfg.world, e, &cfg.sft, st.key_of("tower"), st.key_of(&format!("expert {} captions", e.name)));
        st.run(&format!("expert {}", e.name), &key, &[engine::model_dir(&dir)], |name| {
            // The work dir holds the trainer's checkpoints; the caption stage's model stays.
            let work = dir.join("sft");
            stage::work_dir(&work, &key)?;
            engine::train_sft(name, &init, &paths.tokenizer(), train.clone(), &cfg.sft, 1000 + i as u64, &work)?;
            let from = engine::model_dir(&work);
            let to = engine::model_dir(&dir);
            if to.exists() {
                std::fs::remove_dir_all(&to).map_err(io_err(&to))?;
            }
            std::fs::rename(&from, &to).map_err(io_err(&from))?;
            Ok(())
        })?;
    }

    // 3. Expert quality on the benchmark.
    let mut experts = Vec::new();
    for e in &cfg.experts {
        let dir = engine::model_dir(&paths.expert(&e.name));
        let r = evaluate(&mut st, &paths, &cfg, &judge, &scenes, &format!("expert-{}", e.name), &dir)?;
        experts.push(ExpertQuality { name: e.name.clone(), params: engine::param_count(&dir).unwrap_or(0), eval: r });
    }
    let rates: Vec<f64> = experts.iter().map(|e| e.eval.claim_hallucination_rate()).collect();
    let hallucination_falls_with_size = rates.windows(2).all(|w| w[0] < w[1]);
    if args.experts_only {
        let mut table = String::from("expert  params  MRHal score  MRHal hal. rate  claim hal. rate  shape/colour/size right  POPE acc (adv/pop/rand)\n");
        for e in &experts {
            let pope: Vec<String> = amp_world::pope::POPE_SPLITS
                .iter()
                .map(|s| format!("{:.3}", e.eval.pope.get(&format!("{s}/accuracy")).copied().unwrap_or(f64::NAN)))
                .collect();
            let g = |k: &str| e.eval.grounding.get(k).copied().unwrap_or(f64::NAN);
            table += &format!(
                "{}  {}  {:.3}  {:.3}  {:.3}  {:.2}/{:.2}/{:.2}  {}\n",
                e.name,
                e.params,
                e.eval.mrhal.get("cumulative_score").copied().unwrap_or(f64::NAN),
                e.eval.mrhal.get("cumulative_hallucination_rate").copied().unwrap_or(f64::NAN),
                e.eval.claim_hallucination_rate(),
                g("shape_accuracy"),
                g("colour_accuracy"),
                g("size_accuracy"),
                pope.join(" / ")
            );
        }
        let path = paths.root.join("experts.txt");
        std::fs::write(&path, &table).map_err(io_err(&path))?;
        eprint!("{table}");
        return Err(DemoError::Stopped { after: "experts".into(), path });
    }

    // 4. IG experts.
    let pref_records = amp_data::load_llava(&paths.world().join("pref.json"), Some(&paths.images()))?;
    let base_dir = engine::model_dir(&paths.expert(&cfg.base));
    let ig_dir = paths.root.join("models").join("ig");
    let mut ig_models: Vec<(String, PathBuf)> = Vec::new();
    if cfg.ig_parts > 0 {
        let n_pre = ((train.len() as f64) * cfg.ig_pretrain_fraction).round() as usize;
        let m0 = ig_dir.join("m0");
        let base_spec = cfg.experts.iter().find(|e| e.name == cfg.base).expect("validated").clone();
        let pre_steps = ((cfg.sft.steps as f64) * cfg.ig_pretrain_fraction).ceil() as usize;
        let pre_spec = TrainSpec { steps: pre_steps.max(1), ..cfg.sft.clone() };
        let key = (&cfg.world, &base_spec, &pre_spec, n_pre);
        st.run("ig pretrain", &key, &[engine::model_dir(&m0)], |name| {
            stage::work_dir(&m0, &key)?;
            let init = engine::Init::Scratch { spec: base_spec.clone(), image_size: cfg.world.image_size as i64, vocab, seed: 2000, tower: tower_path.clone() };
            engine::train_sft(name, &init, &paths.tokenizer(), train[..n_pre].to_vec(), &pre_spec, 2000, &m0)?;
            Ok(())
        })?;
        // Fine-tuning set F: the rest of the SFT data, as LLaVA records (Algorithm 1's input).
        let mut rest = amp_data::load_llava(&paths.world().join("train.json"), Some(&paths.images()))?.split_off(n_pre);
        rest.truncate(((rest.len() as f64) * cfg.ig_finetune_fraction).round() as usize);
        let tuner = crate::adapters::LlavaFineTuner {
            base: engine::model_dir(&m0),
            tokenizer: paths.tokenizer(),
            out_root: ig_dir.clone(),
            steps_per_record: cfg.sft.steps as f64 / train.len() as f64,
            spec: cfg.sft.clone(),
            gen: cfg.gen.clone(),
            resume: args.resume,
        };
        let base_expert = Expert {
            name: "ig-m0".into(),
            generator: Arc::new(engine::chat("ig", "ig-m0", &engine::model_dir(&m0), &paths.tokenizer(), &cfg.gen)?),
        };
        let t = Instant::now();
        let list = amp_data::generate::incremental_experts(base_expert, &tuner, &rest, cfg.ig_parts + 2)?;
        st.record("ig fine-tune", t.elapsed().as_secs_f64(), false);
        for (i, e) in list.iter().enumerate() {
            let dir = if i + 1 == list.len() { engine::model_dir(&m0) } else { engine::model_dir(&tuner.stage_dir(cfg.ig_parts - i)) };
            ig_models.push((e.name.clone(), dir));
        }
    }

    // 5. Generation on the preference prompts (MEG pool, then IG pool).
    let meg_models: Vec<(String, PathBuf)> =
        cfg.experts.iter().map(|e| (e.name.clone(), engine::model_dir(&paths.expert(&e.name)))).collect();
    let mut pools: Vec<(Source, Vec<(String, PathBuf)>)> = vec![(Source::Meg, meg_models)];
    if !ig_models.is_empty() {
        pools.push((Source::Ig, ig_models));
    }
    let mut generated: BTreeMap<String, Vec<GeneratedRow>> = BTreeMap::new();
    for (source, models) in &pools {
        let tag = format!("{source:?}").to_lowercase();
        let out = paths.data().join(&tag).join("generated.jsonl");
        // The models' weights (not only their names) key the stage: an IG chain fine-tuned on
        // other data must not reuse old answers.
        let key = (&cfg.world, &cfg.gen, models.iter().map(|m| (&m.0, fingerprint_dir(&m.1))).collect::<Vec<_>>());
        st.run(&format!("generate {tag}"), &key, std::slice::from_ref(&out), |name| {
            let _ = std::fs::remove_file(&out); // a stale file of another config
            let dialogues: Vec<(Arc<Vec<u8>>, Vec<String>)> = pref_records
                .iter()
                .map(|r| {
                    let img = std::fs::read(&r.image).map_err(io_err(&r.image))?;
                    Ok((Arc::new(img), r.conversations.iter().filter(|t| t.from == "human").map(|t| t.value.clone()).collect()))
                })
                .collect::<Result<_>>()?;
            let mut experts = Vec::new();
            for (m, dir) in models {
                let chat = engine::chat(name, m, dir, &paths.tokenizer(), &cfg.gen)?;
                chat.prefill(&dialogues, &format!("{tag} {m}")).map_err(|e| stage_err(name, e))?;
                experts.push(Expert { name: m.clone(), generator: Arc::new(chat) });
            }
            let experts = amp_data::generate::multi_size_experts(experts, None)?;
            dp::generate(&pref_records, &experts, &out, Shard::ALL, 1)?;
            Ok(())
        })?;
        generated.insert(tag, dp::load_rows(&out)?);
    }

    // Gates, before any preference training.
    let gates_path = paths.data().join("gates.json");
    let gate_pool: Vec<String> = cfg
        .variants
        .iter()
        .filter(|v| v.source == Source::Meg && v.kind == VariantKind::Preference && !v.pool.is_empty())
        .max_by_key(|v| v.levels)
        .map(|v| v.pool.clone())
        .unwrap_or_else(|| cfg.experts.iter().map(|e| e.name.clone()).collect());
    let expert_rates: Vec<(String, f64, Vec<(String, f64)>)> = experts
        .iter()
        .map(|e| {
            let dist = e
                .eval
                .grounding
                .iter()
                .filter_map(|(k, v)| k.strip_prefix("shape_share/").map(|s| (s.to_string(), *v)))
                .collect();
            (e.name.clone(), e.eval.claim_hallucination_rate(), dist)
        })
        .collect();
    let gate = gates::compute(&expert_rates, &cfg.base, &generated["meg"], &gate_pool, &scenes);
    write_json(&gates_path, &gate)?;
    let gate_text = gates::lines(&gate).join("\n");
    eprintln!("[demo] gates (before preference training):\n{gate_text}");
    if cfg.enforce_gates && !gate.passed {
        return Err(DemoError::Gates { path: gates_path, text: gate_text });
    }

    // 6. Auto-check (real MiniLM sentence expert for both the chunk and the sentence metric).
    let mut checked: BTreeMap<String, (Vec<CheckedRow>, Vec<CheckedRow>)> = BTreeMap::new();
    for (tag, rows) in &generated {
        let out = paths.data().join(tag).join("checked.jsonl");
        let out_init = paths.data().join(tag).join("initial.jsonl");
        let key = (st.key_of(&format!("generate {tag}")), cfg.tau);
        st.run(&format!("check {tag}"), &key, &[out.clone(), out_init.clone()], |_| {
            let _ = std::fs::remove_file(&out);
            let _ = std::fs::remove_file(&out_init);
            let minilm = BertEmbedder::minilm()?;
            let chunker = Chunker::new(amp_data::cli::load_tagger(None)?);
            let checker = AutoChecker::new(chunker, &minilm, &minilm, AutoCheckConfig { tau: cfg.tau });
            dp::check(rows, Some(&checker), &out, Shard::ALL, 1)?;
            dp::check::<&BertEmbedder, &BertEmbedder>(rows, None, &out_init, Shard::ALL, 1)?;
            Ok(())
        })?;
        checked.insert(tag.clone(), (dp::load_rows(&out)?, dp::load_rows(&out_init)?));
    }

    // 7. K-level datasets per variant.
    let mut dataset_stats = BTreeMap::new();
    for v in cfg.variants.iter().filter(|v| v.kind == VariantKind::Preference) {
        let tag = format!("{:?}", v.source).to_lowercase();
        let (chk, init) = &checked[&tag];
        let rows = if v.checked { chk } else { init };
        let dir = paths.data().join("variants").join(&v.name);
        let key = (st.key_of(&format!("check {tag}")), v.levels, v.checked, &v.pool);
        st.run(&format!("dataset {}", v.name), &key, &[dir.join("amp.json")], |_| {
            let sub = subset_rows(rows, v.levels, &v.pool);
            dp::finalize(sub, &dir)?;
            Ok(())
        })?;
        let s: dp::DatasetStats = read_json(&dir.join("stats.json"))?;
        dataset_stats.insert(v.name.clone(), s);
    }

    // 8. Ranking quality of the auto-check against the world's truth.
    let ranking_path = paths.data().join("ranking.json");
    st.run("ranking", &st.key_of("check meg"), std::slice::from_ref(&ranking_path), |_| {
        write_json(&ranking_path, &ranking::ranking_quality(&checked["meg"].0, &scenes))
    })?;
    let ranking: ranking::RankingQuality = read_json(&ranking_path)?;

    // 9–10. Training variants and evaluation.
    let mut results: BTreeMap<String, BTreeMap<u64, EvalResult>> = BTreeMap::new();
    let mut curves: BTreeMap<String, BTreeMap<u64, Curve>> = BTreeMap::new();
    let base_eval = experts.iter().find(|e| e.name == cfg.base).expect("validated").eval.clone();
    for &seed in &args.seeds {
        results.entry(BASE_ROW.into()).or_default().insert(seed, base_eval.clone());
    }
    let pref_standard = sft_examples(&paths.world(), "pref.json")?;
    let mut anchor_gradients = BTreeMap::new();
    for v in &cfg.variants {
        let data = paths.data().join("variants").join(&v.name).join("amp.json");
        if v.kind == VariantKind::Preference && v.loss.anchor_weight != 0.0 {
            // The anchor's share of the gradient at the base, on the first batch.
            let out = paths.data().join("anchor").join(format!("{}.json", v.name));
            let config = MdpoConfig {
                levels: v.levels,
                loss: LossConfig { beta: cfg.beta, ..v.loss.clone() },
                lr: cfg.pref.lr,
                batch_size: cfg.pref.batch_size,
                seed: 0,
                grad_accum: 1,
                plots: false,
                ..MdpoConfig::default()
            };
            let key = (st.key_of(&format!("dataset {}", v.name)), &config, st.key_of(&format!("expert {}", cfg.base)));
            st.run(&format!("anchor {}", v.name), &key, std::slice::from_ref(&out), |_| {
                let opts = mdpo::data::LoadOptions { levels: Some(v.levels), image_root: Some(paths.images()), check_images: true, allow_outside_root: false };
                let mut examples = mdpo::data::load_amp_file(&data, &opts)?;
                examples.truncate(cfg.pref.batch_size);
                let n = engine::anchor_gradient_norms(&base_dir, &paths.tokenizer(), examples, config.clone(), &paths.root.join("train").join("anchor-work"))?;
                write_json(&out, &n)
            })?;
            anchor_gradients.insert(v.name.clone(), read_json::<(f64, f64, f64)>(&out)?);
        }
        for &seed in &args.seeds {
            let run = paths.train(&v.name, seed);
            let config = MdpoConfig {
                levels: v.levels,
                loss: LossConfig { beta: cfg.beta, ..v.loss.clone() },
                lr: cfg.pref.lr,
                warmup_steps: cfg.pref.warmup_steps,
                batch_size: cfg.pref.batch_size,
                max_steps: Some(cfg.pref.steps),
                seed,
                grad_accum: 1,
                save_every: 0,
                keep_checkpoints: 1,
                resume: true,
                output_dir: run.clone(),
                plots: false,
                ..MdpoConfig::default()
            };
            let key = (st.key_of(&format!("dataset {}", v.name)), &config, st.key_of(&format!("expert {}", cfg.base)), v.kind);
            st.run(&format!("train {} s{seed}", v.name), &key, &[engine::model_dir(&run)], |name| {
                stage::work_dir(&run, &key)?;
                match v.kind {
                    VariantKind::SftControl => {
                        engine::train_sft_control(name, &base_dir, &paths.tokenizer(), pref_standard.clone(), config.clone())?;
                    }
                    VariantKind::Preference => {
                        let opts = mdpo::data::LoadOptions { levels: Some(v.levels), image_root: Some(paths.images()), check_images: true, allow_outside_root: false };
                        let examples = mdpo::data::load_amp_file(&data, &opts)?;
                        engine::train_preference(name, &base_dir, &paths.tokenizer(), examples, config.clone())?;
                    }
                }
                Ok(())
            })?;
            let rows = mdpo::trainer::read_metrics(&run.join("metrics.jsonl"))?;
            curves
                .entry(v.name.clone())
                .or_default()
                .insert(seed, rows.iter().map(|r| (r.step, r.loss, r.reward_accuracy)).collect());
            let r = evaluate(&mut st, &paths, &cfg, &judge, &scenes, &format!("{}-s{seed}", v.name), &engine::model_dir(&run))?;
            results.entry(v.name.clone()).or_default().insert(seed, r);
        }
    }

    // Paired-bootstrap intervals against the SFT control (items pooled over seeds).
    let mut intervals = BTreeMap::new();
    if let Some(control) = results.get(CONTROL_ROW) {
        let pooled = |runs: &BTreeMap<u64, EvalResult>, f: fn(&RoundScore) -> (f64, f64)| -> Vec<stats::Count> {
            let mut acc: Vec<stats::Count> = Vec::new();
            for r in runs.values() {
                let c = r.counts(f);
                if acc.is_empty() {
                    acc = c;
                } else {
                    for (a, b) in acc.iter_mut().zip(c) {
                        a.hits += b.hits;
                        a.total += b.total;
                    }
                }
            }
            acc
        };
        let (c_round, c_claim) = (pooled(control, round_counts), pooled(control, claim_counts));
        for (name, runs) in &results {
            let r = stats::paired_bootstrap(&pooled(runs, round_counts), &c_round, cfg.bootstrap, 0.95, cfg.world.seed);
            let c = stats::paired_bootstrap(&pooled(runs, claim_counts), &c_claim, cfg.bootstrap, 0.95, cfg.world.seed);
            if let (Some(r), Some(c)) = (r, c) {
                intervals.insert(name.clone(), (r, c));
            }
        }
    }

    // 11. Report.
    let mut report = DemoReport {
        run_dir: paths.root.clone(),
        config: cfg.clone(),
        seeds: args.seeds.clone(),
        stages: Vec::new(),
        experts,
        hallucination_falls_with_size,
        tower: tower_report,
        gates: Some(gate),
        anchor_gradients,
        intervals,
        dataset_stats,
        ranking,
        results,
        curves,
        report_md: paths.report().join("report.md"),
        total_wall_s: 0.0,
        total_compute_s: 0.0,
    };
    let t = Instant::now();
    report.stages = st.timings().to_vec();
    report.total_wall_s = t0.elapsed().as_secs_f64();
    report.total_compute_s = report.stages.iter().map(|t| t.previous_s).sum();
    report::write(&report, &paths.report())?;
    st.record("report", t.elapsed().as_secs_f64(), false);
    report.stages = st.timings().to_vec();
    report.total_wall_s = t0.elapsed().as_secs_f64();
    report.total_compute_s = report.stages.iter().map(|t| t.previous_s).sum();
    report::write(&report, &paths.report())?;
    Ok(report)
}

/// Keep the generated responses of `pool` (expert names, best first) — or, with an empty pool,
/// `levels − 1` of them chosen by their *initial* rank as evenly spread over the pool as
/// possible ([`pick_levels`]) — and renumber the ranks. The check's verdict on each response
/// depends only on that response and the standard, so this equals checking the subset.
pub fn subset_rows(rows: &[CheckedRow], levels: usize, pool: &[String]) -> Vec<CheckedRow> {
    rows.iter()
        .map(|r| {
            let n = r.responses.len();
            let want = pick_levels(n, levels - 1);
            let mut row = r.clone();
            if pool.is_empty() {
                row.responses.retain(|x| want.contains(&(x.initial_rank - 1)));
            } else {
                row.responses.retain(|x| pool.contains(&x.source));
            }
            let mut by_init: Vec<usize> = row.responses.iter().map(|x| x.initial_rank).collect();
            by_init.sort_unstable();
            for (i, x) in row.responses.iter_mut().enumerate() {
                x.final_rank = i + 1;
                x.initial_rank = by_init.iter().position(|&k| k == x.initial_rank).expect("present") + 1;
            }
            row.changed = row.responses.iter().any(|x| x.final_rank != x.initial_rank);
            row
        })
        .collect()
}

/// `m` of `n` pool indices, evenly spread, always including the last (weakest); the first too
/// when `m ≥ 2`.
pub fn pick_levels(n: usize, m: usize) -> Vec<usize> {
    if m >= n {
        return (0..n).collect();
    }
    if m == 1 {
        return vec![n - 1];
    }
    let mut v: Vec<usize> = (0..m).map(|i| ((i as f64) * (n - 1) as f64 / (m - 1) as f64).round() as usize).collect();
    v.dedup();
    v
}

/// Attribute accuracy of the located object claims in a model's MRHal answers (`answers`, the
/// harness's stored answers of `tasks`).
fn grounding(tasks: &[mrhal_bench::AnswerTask], answers: &mrhal_bench::AnswerSet, scenes: &SceneIndex) -> Result<BTreeMap<String, f64>> {
    let mut t = amp_world::AttributeTally::default();
    for task in tasks {
        let scene = scenes.get(&task.id).ok_or_else(|| stage_err("eval", format!("no scene for benchmark item {}", task.id)))?;
        let Some(item) = answers.items.get(&task.id) else { continue };
        for (q, a) in task.questions.iter().zip(&item.rounds) {
            if let Some(a) = a {
                t.add_answer(scene, Some(q), a);
            }
        }
    }
    let mut m = BTreeMap::from([("located_claims".to_string(), t.located as f64)]);
    for (k, v) in [("shape_accuracy", t.shape_accuracy()), ("colour_accuracy", t.colour_accuracy()), ("size_accuracy", t.size_accuracy())] {
        if v.is_finite() {
            m.insert(k.to_string(), v);
        }
    }
    for (shape, share) in t.shape_distribution() {
        m.insert(format!("shape_share/{}", shape.name()), share);
    }
    Ok(m)
}

/// The rule judge's per-round verdicts and claim counts of a model's benchmark answers
/// (`amp_world::judge_dialogue` against the standard dialogue; a missing answer is judged as an
/// empty one, as the harness's missing rounds are never scored as right).
fn item_scores(world: &Path, answers: &mrhal_bench::AnswerSet, scenes: &SceneIndex) -> Result<Vec<ItemScore>> {
    let recs: Vec<amp_world::BenchRecord> = amp_world::dataset::read_json(&world.join("eval_gt.json"))?;
    let mut out = Vec::with_capacity(recs.len());
    for rec in &recs {
        let scene = scenes.get(&rec.id).ok_or_else(|| stage_err("eval", format!("no scene for benchmark item {}", rec.id)))?;
        let ans: Vec<String> = answers
            .items
            .get(&rec.id)
            .map(|it| it.rounds.iter().map(|a| a.clone().unwrap_or_default()).collect())
            .unwrap_or_default();
        let rounds = amp_world::judge_dialogue(scene, &rec.revised, &ans)
            .iter()
            .enumerate()
            .map(|(k, j)| RoundScore {
                category: rec.label.get(k).cloned().unwrap_or_default(),
                hallucinated: j.hallucinated(),
                claims: j.claims.iter().filter(|c| c.truth.is_some()).count(),
                hallucinated_claims: j.hallucinations,
            })
            .collect();
        out.push(ItemScore { id: rec.id.clone(), rounds });
    }
    Ok(out)
}

/// Evaluate the model saved in `dir` on the benchmark and POPE through mrhal-bench's harness
/// (answers are written and resumed by the harness; the rule judge rates MRHal rounds).
fn evaluate(st: &mut Stages, paths: &RunPaths, cfg: &DemoConfig, judge: &RuleJudge, scenes: &SceneIndex, name: &str, dir: &Path) -> Result<EvalResult> {
    let out = paths.eval(name);
    let result = out.join("result.json");
    // "v3": results since the per-item scores and question-free grounding.
    let key = (fingerprint_dir(dir), &cfg.gen, &cfg.world, "v3");
    st.run(&format!("eval {name}"), &key, std::slice::from_ref(&result), |stage| {
        if out.exists() {
            std::fs::remove_dir_all(&out).map_err(io_err(&out))?;
        }
        std::fs::create_dir_all(&out).map_err(io_err(&out))?;
        let items = mrhal_bench::data::load_mrhal(&paths.world().join("eval_gt.json"))?;
        let mut pope_items = Vec::new();
        for split in amp_world::pope::POPE_SPLITS {
            pope_items.extend(mrhal_bench::data::load_pope(&paths.world().join(format!("pope/coco_pope_{split}.json")), Some(split))?);
        }
        let chat: LlavaChat<engine::MllmChat> = engine::chat(stage, name, dir, &paths.tokenizer(), &cfg.gen)?;
        // Batched answers first (memoised), then the harness's own resumable answer loop.
        let mtasks = mrhal_tasks(&items);
        let ptasks = pope_tasks(&pope_items);
        let mut dialogues = Vec::new();
        for t in mtasks.iter().chain(&ptasks) {
            dialogues.push((Arc::new(t.image.load(Some(&paths.images()))?), t.questions.clone()));
        }
        chat.prefill(&dialogues, &format!("eval {name}")).map_err(|e| stage_err(stage, e))?;
        let ma = out.join("mrhal_answers.jsonl");
        let pa = out.join("pope_answers.jsonl");
        let s1 = mrhal_bench::generate_answers_sequential(&chat, Benchmark::Mrhal, &mtasks, &amp_io::paths::DataRoot::new(paths.images(), false), &ma)?;
        let s2 = mrhal_bench::generate_answers_sequential(&chat, Benchmark::Pope, &ptasks, &amp_io::paths::DataRoot::new(paths.images(), false), &pa)?;
        if !s1.failed.is_empty() || !s2.failed.is_empty() {
            return Err(stage_err(stage, format!("answer generation failed for {:?}", [s1.failed, s2.failed].concat())));
        }
        let mset = mrhal_bench::load_answers(&ma)?;
        let jpath = out.join("mrhal_judgments.jsonl");
        mrhal_bench::runner::judge_mrhal(judge, &items, &mset, &jpath, 1)?;
        let mres: RunResults = mrhal_bench::runner::score_mrhal(&items, &mset, &jpath)?;
        let pset = mrhal_bench::load_answers(&pa)?;
        let pres: RunResults = mrhal_bench::runner::score_pope(&pope_items, &pope_items, &pset)?;
        mrhal_bench::report::write_results(&out.join("mrhal_results.json"), &mres)?;
        mrhal_bench::report::write_results(&out.join("pope_results.json"), &pres)?;
        let r = EvalResult {
            model: name.into(),
            mrhal: mres.metrics.clone(),
            pope: pres.metrics.clone(),
            missing: mres.missing.total() + pres.missing.total(),
            grounding: grounding(&mtasks, &mset, scenes)?,
            items: item_scores(&paths.world(), &mset, scenes)?,
        };
        write_json(&result, &r)
    })?;
    read_json(&result)
}

/// A cheap fingerprint of a saved model directory (file names, sizes and modification times).
pub(crate) fn fingerprint_dir(dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir).map(|rd| rd.flatten().collect()).unwrap_or_default();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        h.update(e.file_name().to_string_lossy().as_bytes());
        if let Ok(m) = e.metadata() {
            h.update(m.len().to_le_bytes());
            if let Ok(t) = m.modified().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).map_err(std::io::Error::other)) {
                h.update(t.as_nanos().to_le_bytes());
            }
        }
    }
    hex::encode(&h.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate() {
        for p in ["tiny", "small", "large"] {
            DemoConfig::preset(p).unwrap().validate().unwrap();
        }
        assert!(DemoConfig::preset("huge").is_err());
    }

    #[test]
    fn config_files_round_trip_and_patch_must_divide_the_image() {
        let cfg = DemoConfig::preset("small").unwrap();
        let back: DemoConfig = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
        let mut bad = cfg;
        bad.experts[1].patch = 10;
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("patch 10 does not divide the image size 48"), "{e}");
    }

    #[test]
    fn pools_pick_levels_by_expert_name_and_renumber_them() {
        let conv = |a: &str| serde_json::json!([{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": a}]);
        let resp = |src: &str, init: usize, fin: usize| {
            serde_json::json!({"source": src, "initial_rank": init, "final_rank": fin, "conversation": conv(src), "check": null})
        };
        // The check swapped d64 and d48.
        let row: CheckedRow = serde_json::from_value(serde_json::json!({
            "id": "x", "index": 0, "image": "x.png", "standard": conv("std"), "standard_chunks": 1, "checked": true,
            "changed": true, "ties": 0,
            "responses": [resp("d96", 1, 1), resp("d48", 3, 2), resp("d64", 2, 3), resp("d32", 4, 4)],
        }))
        .unwrap();
        let pool = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let k2 = subset_rows(std::slice::from_ref(&row), 2, &pool(&["d96"]));
        assert_eq!(k2[0].responses.len(), 1);
        assert_eq!((k2[0].responses[0].source.as_str(), k2[0].responses[0].initial_rank, k2[0].responses[0].final_rank), ("d96", 1, 1));
        assert!(!k2[0].changed);
        let k3 = subset_rows(std::slice::from_ref(&row), 3, &pool(&["d96", "d64"]));
        let got: Vec<(&str, usize, usize)> = k3[0].responses.iter().map(|x| (x.source.as_str(), x.initial_rank, x.final_rank)).collect();
        assert_eq!(got, vec![("d96", 1, 1), ("d64", 2, 2)]);
        let k4 = subset_rows(std::slice::from_ref(&row), 4, &pool(&["d96", "d64", "d48"]));
        let got: Vec<(&str, usize, usize)> = k4[0].responses.iter().map(|x| (x.source.as_str(), x.initial_rank, x.final_rank)).collect();
        assert_eq!(got, vec![("d96", 1, 1), ("d48", 3, 2), ("d64", 2, 3)]);
        assert!(k4[0].changed);
        // The small preset's variants: every pool starts with the base, K adds experts by size.
        let cfg = DemoConfig::preset("small").unwrap();
        let v = |n: &str| cfg.variants.iter().find(|v| v.name == n).unwrap().pool.clone();
        assert_eq!(v("dpo-k2"), pool(&["d96"]));
        assert_eq!(v("mdpo-k4"), pool(&["d96", "d64", "d48"]));
        assert_eq!(v("mdpo-k5"), pool(&["d96", "d64", "d48", "d32"]));
        assert_eq!(v("dpo-k2-weakest"), pool(&["d32"]));
        assert!(cfg.variants.iter().any(|v| v.kind == VariantKind::SftControl));
    }

    #[test]
    fn level_picks_are_spread_and_keep_the_weakest() {
        assert_eq!(pick_levels(4, 1), vec![3]);
        assert_eq!(pick_levels(4, 2), vec![0, 3]);
        assert_eq!(pick_levels(4, 3), vec![0, 2, 3]);
        assert_eq!(pick_levels(4, 4), vec![0, 1, 2, 3]);
        assert_eq!(pick_levels(3, 5), vec![0, 1, 2]);
    }
}
