//! # mdpo — Multi-level Direct Preference Optimization
//!
//! The learning algorithm of *Automated Multi-level Preference for MLLMs* (AMP, NeurIPS 2024, §4):
//! for K ranked responses `y0 > y1 > … > y(K-1)` to one prompt, MDPO sums the DPO loss over all
//! K(K−1)/2 pairs and, on every pair whose winner is the top response `y0`, adds the anchor
//! `log π_ref(y0) − log π_θ(y0)` that keeps the best answer's likelihood from falling (Eq. 5–7).
//!
//! The crate is model-agnostic: a model implements [`PreferenceModel`] (per-response weighted
//! log-probs for a batch of K-level examples) and gets the loss, the trainer, the reference-log-prob
//! cache and resumable checkpoints.
//!
//! * [`data`] — the AMP training format (`{image, output_1..output_K}`) and its validation.
//! * [`model`] — the [`PreferenceModel`] trait.
//! * [`loss`] — MDPO and its variants (adjacent / top-vs-rest / explicit pairs, DPO, IPO, hinge,
//!   cDPO, Plackett–Luce / PRO), with per-pair metrics.
//! * [`config`] — [`MdpoConfig`], the whole definition of a run.
//! * [`trainer`] — the [`Trainer`] (MDPO and SFT): the step and the loop.
//! * [`reference`](mod@reference) — where `log π_ref` comes from, and its cache with its key.
//! * [`checkpoint`] — atomic checkpoints and the checks a resume makes.
//! * [`metrics`] — `metrics.jsonl` and the PNG curves ([`plot`]).
//! * [`optim`] — AdamW with exact save/load, warmup + constant/cosine schedule.
//! * [`fingerprint`] — hashes for the reference cache key.
//! * [`guard`] — a device out-of-memory inside a step as a typed error.
//! * [`cli`] — clap arguments for `train` and `sft`, one code path for both.
//!
//! ```no_run
//! # fn demo<M: mdpo::PreferenceModel>(policy: M, reference: M) -> mdpo::Result<()> {
//! use mdpo::{data, MdpoConfig, Reference, Trainer};
//! let opts = data::LoadOptions { levels: Some(4), check_images: true, ..Default::default() };
//! let examples = data::load_amp_file("train.json".as_ref(), &opts)?;
//! let config = MdpoConfig { output_dir: "runs/amp".into(), ..MdpoConfig::default() };
//! let mut trainer = Trainer::new(policy, Reference::Model(reference), examples, config)?;
//! trainer.train()?;
//! # Ok(()) }
//! ```

pub mod checkpoint;
pub mod cli;
pub mod collective;
pub mod config;
pub mod data;
pub mod error;
pub mod fingerprint;
pub mod guard;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod parallel;
pub mod reference;
pub mod trainer;

pub use collective::{Collective, CollectiveError, SingleProcess};
pub use metrics::plot;

pub use config::MdpoConfig;
pub use data::{Conversation, PreferenceExample, Turn};
pub use error::{BoxError, MdpoError, Result};
pub use loss::{preference_loss, LossConfig, LossMetrics, PairMetrics};
pub use model::{PreferenceModel, ResponseLogps};
pub use trainer::{Reference, StepLog, Task, TrainState, TrainSummary, Trainer};
