//! [`WorldConfig`]: everything that defines a generated world, with presets.
use crate::error::{Result, WorldError};
use crate::pope::PopeObjects;
use crate::scene::{Colour, SceneSpec, Shape, Size};
use crate::text::Vocab;
use serde::{Deserialize, Serialize};

/// A world: scene distribution, rendering, text and split sizes. Same config → byte-identical
/// dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorldConfig {
    pub seed: u64,
    /// Image side in pixels (square RGB).
    pub image_size: u32,
    pub min_objects: usize,
    /// At most 9 (one object per cell of the 3x3 grid).
    pub max_objects: usize,
    /// How many of [`Shape::ALL`] are used (1–6).
    pub n_shapes: usize,
    /// How many of [`Colour::ALL`] are used (1–10).
    pub n_colours: usize,
    /// 2 (small, large) or 3 (small, medium, large).
    pub n_sizes: usize,
    /// Zipf exponent of the shape/colour prior (0 uniform; 0.5 and 1 are exact on every platform).
    pub skew: f64,
    /// Centre jitter inside a cell, as a fraction of the free space (0–1).
    pub jitter: f64,
    /// 4x4 supersampled anti-aliasing.
    pub anti_alias: bool,
    /// Scenes for instruction tuning (SFT of the experts).
    pub n_train: usize,
    /// Scenes for preference data (prompts + standard responses, MEG/IG input).
    pub n_pref: usize,
    /// MRHal-style benchmark dialogues.
    pub n_bench: usize,
    /// POPE images (each gives up to 3 yes + 3 no questions per split).
    pub n_pope: usize,
    /// Fraction of train / pref records that are single-round detailed descriptions; the rest
    /// are multi-round dialogues.
    pub description_fraction: f64,
    /// Rounds of a dialogue (inclusive range).
    pub min_rounds: usize,
    pub max_rounds: usize,
    /// Target vocabulary size of the BPE tokenizer (training stops earlier when every word of
    /// the corpus is one token).
    pub vocab_size: usize,
    /// Canonical text ([`crate::canonical`]): one phrasing per question type, single-round
    /// records are the caption, and `grounded_fraction` of the train/pref dialogue rounds read
    /// one cell (existence, "What is in the <cell>?", attribute by cell). The benchmark's
    /// dialogues keep the six MRHal categories (canonically phrased). Off by default; absent
    /// from the JSON when off, so older worlds keep their bytes.
    #[serde(default, skip_serializing_if = "is_false")]
    pub canonical: bool,
    /// See `canonical` (ignored without it).
    #[serde(default = "default_grounded", skip_serializing_if = "is_default_grounded")]
    pub grounded_fraction: f64,
    /// What existence questions name as the object (POPE's probes, and the canonical dialogues'
    /// existence rounds): a colour-shape pair (the default; absent from the JSON, so older
    /// worlds keep their bytes) or the shape alone, POPE's own form.
    #[serde(default, skip_serializing_if = "PopeObjects::is_default")]
    pub pope_objects: PopeObjects,
    /// The share of the grounded rounds (see `grounded_fraction`) that ask about existence; the
    /// other two grounded types split the rest. Default 1/3 (equal parts; absent from the JSON).
    #[serde(default = "equal_parts", skip_serializing_if = "is_equal_parts")]
    pub existence_share: f64,
}

/// The default [`WorldConfig::existence_share`]: the three grounded types in equal parts.
pub const EQUAL_PARTS: f64 = 1.0 / 3.0;
fn equal_parts() -> f64 {
    EQUAL_PARTS
}
fn is_equal_parts(x: &f64) -> bool {
    *x == EQUAL_PARTS
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn default_grounded() -> f64 {
    0.6
}
fn is_default_grounded(x: &f64) -> bool {
    *x == default_grounded()
}

impl WorldConfig {
    /// For CI and unit tests: a handful of scenes, 32x32 images.
    pub fn tiny() -> Self {
        WorldConfig {
            seed: 0,
            image_size: 32,
            min_objects: 2,
            max_objects: 4,
            n_shapes: 4,
            n_colours: 6,
            n_sizes: 2,
            skew: 0.5,
            jitter: 0.5,
            anti_alias: true,
            n_train: 24,
            n_pref: 8,
            n_bench: 6,
            n_pope: 6,
            description_fraction: 0.5,
            min_rounds: 2,
            max_rounds: 4,
            vocab_size: 1000,
            canonical: false,
            grounded_fraction: default_grounded(),
            pope_objects: PopeObjects::ColourShape,
            existence_share: EQUAL_PARTS,
        }
    }
    /// The default demo world (sized so that hallucination is graded by model size; docs/demo.md).
    pub fn small() -> Self {
        WorldConfig {
            image_size: 48,
            min_objects: 2,
            max_objects: 5,
            n_shapes: 4,
            n_colours: 8,
            n_train: 6000,
            n_pref: 1000,
            n_bench: 105,
            n_pope: 500,
            ..Self::tiny()
        }
    }
    /// A harder, bigger world.
    pub fn large() -> Self {
        WorldConfig {
            // 96 px: a multiple of 3, so a 32 px ViT patch covers one grid cell.
            image_size: 96,
            min_objects: 2,
            max_objects: 7,
            n_shapes: 6,
            n_colours: 10,
            n_sizes: 3,
            n_train: 30000,
            n_pref: 4000,
            n_bench: 300,
            n_pope: 500,
            ..Self::small()
        }
    }
    /// A preset by name: "tiny", "small" or "large".
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "tiny" => Ok(Self::tiny()),
            "small" => Ok(Self::small()),
            "large" => Ok(Self::large()),
            other => Err(WorldError::Config {
                field: "preset",
                msg: format!("unknown preset `{other}` (expected tiny, small or large)"),
            }),
        }
    }

    /// Check ranges.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, msg: String| Err(WorldError::Config { field, msg });
        if !(16..=512).contains(&self.image_size) {
            return bad("image_size", format!("{} not in 16..=512", self.image_size));
        }
        if self.min_objects == 0 || self.min_objects > self.max_objects || self.max_objects > 9 {
            return bad(
                "max_objects",
                format!(
                    "need 1 <= min_objects ({}) <= max_objects ({}) <= 9",
                    self.min_objects, self.max_objects
                ),
            );
        }
        if !(1..=Shape::ALL.len()).contains(&self.n_shapes) {
            return bad("n_shapes", format!("{} not in 1..=6", self.n_shapes));
        }
        if !(1..=Colour::ALL.len()).contains(&self.n_colours) {
            return bad("n_colours", format!("{} not in 1..=10", self.n_colours));
        }
        if !(2..=3).contains(&self.n_sizes) {
            return bad("n_sizes", format!("{} not 2 or 3", self.n_sizes));
        }
        if !(0.0..=4.0).contains(&self.skew) {
            return bad("skew", format!("{} not in 0..=4", self.skew));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return bad("jitter", format!("{} not in 0..=1", self.jitter));
        }
        if !(0.0..=1.0).contains(&self.description_fraction) {
            return bad(
                "description_fraction",
                format!("{} not in 0..=1", self.description_fraction),
            );
        }
        if self.min_rounds == 0 || self.min_rounds > self.max_rounds || self.max_rounds > 6 {
            return bad(
                "max_rounds",
                format!(
                    "need 1 <= min_rounds ({}) <= max_rounds ({}) <= 6",
                    self.min_rounds, self.max_rounds
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.existence_share) {
            return bad("existence_share", format!("{} not in 0..=1", self.existence_share));
        }
        if !(0.0..=1.0).contains(&self.grounded_fraction) {
            return bad("grounded_fraction", format!("{} not in 0..=1", self.grounded_fraction));
        }
        if self.vocab_size < 300 {
            return bad(
                "vocab_size",
                format!("{} < 300 (256 bytes + specials + merges)", self.vocab_size),
            );
        }
        Ok(())
    }

    /// The scene distribution.
    pub fn scene_spec(&self) -> SceneSpec {
        SceneSpec {
            image_size: self.image_size,
            min_objects: self.min_objects,
            max_objects: self.max_objects,
            shapes: Shape::ALL[..self.n_shapes].to_vec(),
            colours: Colour::ALL[..self.n_colours].to_vec(),
            sizes: Size::set(self.n_sizes).to_vec(),
            skew: self.skew,
            jitter: self.jitter,
        }
    }

    /// The attribute values in use.
    pub fn vocab(&self) -> Vocab {
        let s = self.scene_spec();
        Vocab {
            shape_presence: s.shape_presence(),
            shapes: s.shapes,
            colours: s.colours,
            sizes: s.sizes,
            objects: self.pope_objects,
        }
    }
}

impl Default for WorldConfig {
    fn default() -> Self {
        Self::small()
    }
}
