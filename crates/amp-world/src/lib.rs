//! amp-world: a seeded synthetic visual world for the AMP end-to-end demo.
//!
//! Real LLaVA checkpoints and benchmark images cannot be used here, so the demo runs the whole
//! AMP pipeline on a world whose truth is known:
//!
//! - [`scene`]: scenes of 2–9 objects (shape, colour, size, cell of a 3x3 grid) sampled from a
//!   [`WorldConfig`] with a per-scene deterministic RNG ([`rng`]); [`render`] draws them as small
//!   RGB images, sized so that hallucination is graded by model size (docs/demo.md).
//! - [`text`]: templated English: a detailed description (the standard response) and
//!   multi-round LLaVA dialogues over the six MRHal-Bench categories (docs/paper-notes.md §5).
//! - [`claims`] + [`judge`]: parse any answer back into claims, check them against the scene,
//!   count hallucinations and rate rounds 0–6 with the MRHal rubric; MRHal metrics (Eq. 8).
//! - [`pope`]: POPE existence probes with adversarial / popular / random negatives (§8).
//! - [`tokenizer`]: a byte-level BPE trained on the world's text (`tokenizer.json`).
//! - [`dataset`]: [`World`] writes everything in the real formats (LLaVA instruction JSON,
//!   MRHal `eval_gt.json`, `coco_pope_*.json` lines, PNG images, scene graphs).
//!
//! ```no_run
//! use amp_world::{World, WorldConfig};
//! let manifest = World::new(WorldConfig::small())?.write(std::path::Path::new("target/world"))?;
//! # Ok::<(), amp_world::WorldError>(())
//! ```
pub mod canonical;
pub mod claims;
pub mod config;
pub mod dataset;
pub mod error;
pub mod judge;
pub mod pope;
pub mod render;
pub mod rng;
pub mod scene;
pub mod text;
pub mod tokenizer;

pub use claims::{
    claim_stats, count_hallucinations, extract_claims, AttributeTally, CheckedClaim, Claim,
    ClaimStats, ObjRef,
};
pub use config::WorldConfig;
pub use dataset::{BenchRecord, InstructionRecord, Manifest, SceneIndex, Split, World};
pub use error::{Result, WorldError};
pub use judge::{judge_dialogue, judge_round, mrhal_metrics, MrhalMetrics, RoundJudgement};
pub use pope::{PopeObjects, PopeRecord};
pub use scene::{Cell, Colour, Object, Scene, SceneSpec, Shape, Size};
pub use text::{Category, Qa, Turn};

/// The version of the generated text: bumped whenever the same [`WorldConfig`] would write other
/// records (a cache keyed by the configuration alone would reuse a stale world). 2: canonical
/// existence rounds drawn yes/no independently instead of alternating within a dialogue.
pub const GENERATOR_VERSION: u32 = 2;
