//! Model configurations parsed from Hugging Face `config.json` files (serde), with the defaults of
//! `transformers`' `LlamaConfig`, `CLIPVisionConfig` and `LlavaConfig`.
use crate::clip::{ClipActivation, ClipEncoderConfig};
use crate::error::{MllmError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

fn d_vocab() -> i64 { 32000 }
fn d_hidden() -> i64 { 4096 }
fn d_inter() -> i64 { 11008 }
fn d_layers() -> usize { 32 }
fn d_heads() -> i64 { 32 }
fn d_rms_eps() -> f64 { 1e-6 }
fn d_maxpos() -> i64 { 2048 }
fn d_bos() -> Option<i64> { Some(1) }
fn d_silu() -> String { "silu".into() }

/// One token id or a list of them (HF `eos_token_id` may be either).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(i64),
    Many(Vec<i64>),
}

impl TokenIds {
    /// The ids as a list.
    pub fn to_vec(&self) -> Vec<i64> {
        match self {
            Self::One(i) => vec![*i],
            Self::Many(v) => v.clone(),
        }
    }
}

/// RoPE parameters (`rope_parameters` in transformers ≥ 5, `rope_scaling` before).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RopeParameters {
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default, alias = "type")]
    pub rope_type: Option<String>,
}

/// HF `LlamaConfig` (the decoder of LLaVA-1.5: Vicuna-7B/13B).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    #[serde(default = "d_vocab")]
    pub vocab_size: i64,
    #[serde(default = "d_hidden")]
    pub hidden_size: i64,
    #[serde(default = "d_inter")]
    pub intermediate_size: i64,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: i64,
    #[serde(default)]
    pub num_key_value_heads: Option<i64>,
    #[serde(default)]
    pub head_dim: Option<i64>,
    #[serde(default = "d_rms_eps")]
    pub rms_norm_eps: f64,
    /// transformers < 5 spelling of the RoPE base.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_parameters: Option<RopeParameters>,
    #[serde(default)]
    pub rope_scaling: Option<RopeParameters>,
    #[serde(default = "d_maxpos")]
    pub max_position_embeddings: i64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "d_bos")]
    pub bos_token_id: Option<i64>,
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub pad_token_id: Option<i64>,
    #[serde(default = "d_silu")]
    pub hidden_act: String,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
}

impl LlamaConfig {
    /// Key/value heads (grouped-query attention); defaults to the number of heads.
    pub fn kv_heads(&self) -> i64 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
    /// Per-head dimension.
    pub fn head_dim(&self) -> i64 {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads)
    }
    /// The RoPE base θ (default 10000).
    pub fn rope_theta(&self) -> f64 {
        self.rope_parameters
            .as_ref()
            .and_then(|r| r.rope_theta)
            .or(self.rope_theta)
            .unwrap_or(10000.)
    }
    /// End-of-sequence ids (default `[2]`).
    pub fn eos_ids(&self) -> Vec<i64> {
        self.eos_token_id.as_ref().map(|e| e.to_vec()).unwrap_or_else(|| vec![2])
    }
    /// Check the sizes and supported options; errors name `path` and the field (`prefix` +
    /// name, e.g. `text_config.num_attention_heads`).
    pub fn validate(&self, path: &Path, prefix: &str) -> Result<()> {
        let c = Check { path, prefix };
        for r in [&self.rope_parameters, &self.rope_scaling].into_iter().flatten() {
            if let Some(t) = &r.rope_type {
                if t != "default" {
                    return c.fail("rope_parameters", format!("unsupported rope type `{t}` (only `default` RoPE is implemented)"));
                }
            }
        }
        if self.hidden_act != "silu" {
            return c.fail("hidden_act", format!("unsupported text hidden_act `{}` (LLaMA uses silu)", self.hidden_act));
        }
        c.size("vocab_size", self.vocab_size, MAX_VOCAB)?;
        c.size("hidden_size", self.hidden_size, MAX_WIDTH)?;
        c.size("intermediate_size", self.intermediate_size, MAX_WIDTH * 8)?;
        c.size("num_hidden_layers", self.num_hidden_layers as i64, MAX_LAYERS)?;
        c.size("num_attention_heads", self.num_attention_heads, MAX_WIDTH)?;
        c.size("num_key_value_heads", self.kv_heads(), MAX_WIDTH)?;
        c.size("max_position_embeddings", self.max_position_embeddings, MAX_POSITIONS)?;
        if self.num_attention_heads % self.kv_heads() != 0 {
            return c.fail(
                "num_key_value_heads",
                format!("{} does not divide num_attention_heads {}", self.kv_heads(), self.num_attention_heads),
            );
        }
        match self.head_dim {
            Some(d) => c.size("head_dim", d, MAX_WIDTH)?,
            None => c.divides("num_attention_heads", self.num_attention_heads, "hidden_size", self.hidden_size)?,
        }
        if self.head_dim() % 2 != 0 {
            return c.fail("head_dim", format!("{} must be even (RoPE rotates pairs)", self.head_dim()));
        }
        c.eps("rms_norm_eps", self.rms_norm_eps)?;
        if !(self.rope_theta() > 0. && self.rope_theta().is_finite()) {
            return c.fail("rope_theta", format!("must be positive, got {}", self.rope_theta()));
        }
        Ok(())
    }
}

/// Largest accepted vocabulary (2^24; the largest public tokenizers have ~2^18 entries).
pub const MAX_VOCAB: i64 = 1 << 24;
/// Largest accepted hidden size or head count (2^16).
pub const MAX_WIDTH: i64 = 1 << 16;
/// Largest accepted number of layers.
pub const MAX_LAYERS: i64 = 1024;
/// Largest accepted number of positions (2^20).
pub const MAX_POSITIONS: i64 = 1 << 20;
/// Largest accepted image side in pixels.
pub const MAX_IMAGE_SIZE: i64 = 16384;

/// Field checks for a config file: every error names the file and the field.
pub(crate) struct Check<'a> {
    pub path: &'a Path,
    /// Prepended to field names (`text_config.`, `vision_config.` or empty).
    pub prefix: &'a str,
}

impl Check<'_> {
    pub fn fail<T>(&self, field: &str, message: String) -> Result<T> {
        Err(MllmError::Config { path: self.path.into(), message: format!("`{}{field}`: {message}", self.prefix) })
    }
    /// `1 ≤ v ≤ max`.
    pub fn size(&self, field: &str, v: i64, max: i64) -> Result<()> {
        if v <= 0 {
            return self.fail(field, format!("must be positive, got {v}"));
        }
        if v > max {
            return self.fail(field, format!("{v} is larger than the supported maximum {max}"));
        }
        Ok(())
    }
    /// `d` (already checked positive) divides `n`.
    pub fn divides(&self, d_field: &str, d: i64, n_field: &str, n: i64) -> Result<()> {
        if d <= 0 || n % d != 0 {
            return self.fail(d_field, format!("{d} does not divide {}{n_field} {n}", self.prefix));
        }
        Ok(())
    }
    /// A positive, finite epsilon.
    pub fn eps(&self, field: &str, v: f64) -> Result<()> {
        if !(v > 0. && v.is_finite()) {
            return self.fail(field, format!("must be positive and finite, got {v}"));
        }
        Ok(())
    }
}

fn v_hidden() -> i64 { 768 }
fn v_inter() -> i64 { 3072 }
fn v_layers() -> usize { 12 }
fn v_heads() -> i64 { 12 }
fn v_channels() -> i64 { 3 }
fn v_image() -> i64 { 224 }
fn v_patch() -> i64 { 32 }
fn v_eps() -> f64 { 1e-5 }

/// HF `CLIPVisionConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipVisionConfig {
    #[serde(default = "v_hidden")]
    pub hidden_size: i64,
    #[serde(default = "v_inter")]
    pub intermediate_size: i64,
    #[serde(default = "v_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "v_heads")]
    pub num_attention_heads: i64,
    #[serde(default = "v_channels")]
    pub num_channels: i64,
    #[serde(default = "v_image")]
    pub image_size: i64,
    #[serde(default = "v_patch")]
    pub patch_size: i64,
    #[serde(default)]
    pub hidden_act: ClipActivation,
    #[serde(default = "v_eps")]
    pub layer_norm_eps: f64,
}

impl ClipVisionConfig {
    /// CLIP ViT-L/14 at 336 px, LLaVA-1.5's vision tower.
    pub fn clip_vit_large_patch14_336() -> Self {
        Self {
            hidden_size: 1024,
            intermediate_size: 4096,
            num_hidden_layers: 24,
            num_attention_heads: 16,
            num_channels: 3,
            image_size: 336,
            patch_size: 14,
            hidden_act: ClipActivation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }
    /// Check the sizes (positive, within bounds, heads dividing the width, the patch size
    /// dividing the image size); errors name `path` and `prefix` + field.
    pub fn validate(&self, path: &Path, prefix: &str) -> Result<()> {
        let c = Check { path, prefix };
        c.size("hidden_size", self.hidden_size, MAX_WIDTH)?;
        c.size("intermediate_size", self.intermediate_size, MAX_WIDTH * 8)?;
        c.size("num_hidden_layers", self.num_hidden_layers as i64, MAX_LAYERS)?;
        c.size("num_attention_heads", self.num_attention_heads, MAX_WIDTH)?;
        c.divides("num_attention_heads", self.num_attention_heads, "hidden_size", self.hidden_size)?;
        c.size("num_channels", self.num_channels, 64)?;
        c.size("image_size", self.image_size, MAX_IMAGE_SIZE)?;
        c.size("patch_size", self.patch_size, self.image_size)?;
        c.divides("patch_size", self.patch_size, "image_size", self.image_size)?;
        c.eps("layer_norm_eps", self.layer_norm_eps)
    }

    /// Number of patches (`(image_size / patch_size)²`).
    pub fn num_patches(&self) -> i64 {
        (self.image_size / self.patch_size).pow(2)
    }
    /// The encoder part.
    pub fn encoder(&self) -> ClipEncoderConfig {
        ClipEncoderConfig {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_attention_heads: self.num_attention_heads,
            num_hidden_layers: self.num_hidden_layers,
            layer_norm_eps: self.layer_norm_eps,
            hidden_act: self.hidden_act,
        }
    }
}

/// Which vision features LLaVA feeds to the projector (`mm_vision_select_feature` /
/// `vision_feature_select_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelectFeature {
    /// Patch tokens only (drop CLS): `patch` / `default`.
    Patch,
    /// CLS and patch tokens: `cls_patch` / `full`.
    ClsPatch,
}

impl SelectFeature {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "patch" | "default" => Some(Self::Patch),
            "cls_patch" | "full" => Some(Self::ClsPatch),
            _ => None,
        }
    }
}

/// The projector between the vision tower and the LLM (`mm_projector_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProjectorType {
    /// One linear layer.
    Linear,
    /// `mlp{N}x_gelu`: N linear layers with GELU between them (LLaVA-1.5: N = 2).
    MlpGelu(usize),
}

impl ProjectorType {
    /// Parse `linear` or `mlp{N}x_gelu`.
    pub fn parse(s: &str) -> Option<Self> {
        if s == "linear" {
            return Some(Self::Linear);
        }
        let n = s.strip_prefix("mlp")?.strip_suffix("x_gelu")?.parse().ok()?;
        (n >= 1).then_some(Self::MlpGelu(n))
    }
    /// Number of linear layers.
    pub fn depth(self) -> usize {
        match self {
            Self::Linear => 1,
            Self::MlpGelu(n) => n,
        }
    }
}

/// The on-disk layout a checkpoint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckpointLayout {
    /// `LlavaForConditionalGeneration` (llava-hf; `text_config`/`vision_config`).
    LlavaHf,
    /// The original LLaVA-1.5 `LlavaLlamaForCausalLM` (`mm_*` keys, `model.mm_projector.*`).
    Original,
}

/// How LLaVA shapes the image before the CLIP processor (`image_aspect_ratio`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AspectRatio {
    /// Pad to a square with the mean colour (LLaVA-1.5's `pad`).
    Pad,
    /// Plain CLIP processing (resize shortest edge, center crop).
    Square,
}

/// The complete runtime configuration of a LLaVA model.
#[derive(Debug, Clone, PartialEq)]
pub struct LlavaConfig {
    pub text: LlamaConfig,
    pub vision: ClipVisionConfig,
    pub projector: ProjectorType,
    pub projector_bias: bool,
    /// Index into the vision tower's hidden states (negative counts from the end; LLaVA-1.5: −2).
    pub select_layer: i64,
    pub select_feature: SelectFeature,
    /// The id marking image positions in `input_ids` (llava-hf: a vocabulary token, original
    /// LLaVA: the sentinel −200).
    pub image_token_id: i64,
    pub image_aspect_ratio: AspectRatio,
    pub mm_use_im_start_end: bool,
    pub layout: CheckpointLayout,
    /// For the original layout: the CLIP directory named by `mm_vision_tower`, if it exists.
    pub vision_tower_dir: Option<PathBuf>,
}

/// LLaVA's sentinel for image positions in the original code base (`IMAGE_TOKEN_INDEX`).
pub const ORIGINAL_IMAGE_TOKEN_INDEX: i64 = -200;

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let s = std::fs::read_to_string(path).map_err(|source| MllmError::Io { path: path.into(), source })?;
    serde_json::from_str(&s).map_err(|source| MllmError::Json { path: path.into(), source })
}

fn field<T: serde::de::DeserializeOwned>(path: &Path, v: &serde_json::Value, name: &str) -> Result<T> {
    serde_json::from_value(v.clone()).map_err(|e| MllmError::Config { path: path.into(), message: format!("`{name}`: {e}") })
}

impl LlavaConfig {
    /// Number of image tokens one image contributes to the sequence.
    pub fn image_tokens(&self) -> i64 {
        self.vision.num_patches() + if self.select_feature == SelectFeature::ClsPatch { 1 } else { 0 }
    }

    /// Check the whole configuration (text and vision sizes, the feature layer, the image token);
    /// errors name `path` (the `config.json`) and the field.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let (tp, vp) = match self.layout {
            CheckpointLayout::LlavaHf => ("text_config.", "vision_config."),
            CheckpointLayout::Original => ("", "vision_config."),
        };
        self.text.validate(path, tp)?;
        self.vision.validate(path, vp)?;
        let c = Check { path, prefix: "" };
        let n = self.vision.num_hidden_layers as i64;
        if !(-(n + 1)..=n).contains(&self.select_layer) {
            return c.fail("vision_feature_layer", format!("{} is out of range for {n} vision layers", self.select_layer));
        }
        if self.image_token_id >= self.text.vocab_size {
            return c.fail(
                "image_token_index",
                format!("{} is outside the vocabulary ({} tokens)", self.image_token_id, self.text.vocab_size),
            );
        }
        Ok(())
    }

    /// A tiny random-weight configuration (vision hidden 32, 2 layers, 28 px / patch 14 → 4 image
    /// tokens; text hidden 64, 2 layers, 4 heads / 2 KV heads, vocab 260, matching [`crate::conversation::ChatTokenizer::byte_level`]) for tests and benches.
    pub fn tiny() -> Self {
        Self::small(64, 2, 260, 28)
    }

    /// A small random-weight configuration with the given text hidden size, text layers,
    /// vocabulary and image size (patch 14, vision hidden 32, 2 vision layers).
    pub fn small(hidden: i64, layers: usize, vocab: i64, image_size: i64) -> Self {
        let heads = (hidden / 16).max(2);
        Self {
            text: LlamaConfig {
                vocab_size: vocab,
                hidden_size: hidden,
                intermediate_size: hidden * 2,
                num_hidden_layers: layers,
                num_attention_heads: heads,
                num_key_value_heads: Some(heads / 2),
                head_dim: None,
                rms_norm_eps: 1e-6,
                rope_theta: None,
                rope_parameters: None,
                rope_scaling: None,
                max_position_embeddings: 4096,
                tie_word_embeddings: false,
                bos_token_id: Some(1),
                eos_token_id: Some(TokenIds::One(2)),
                pad_token_id: None,
                hidden_act: "silu".into(),
                attention_bias: false,
                mlp_bias: false,
            },
            vision: ClipVisionConfig {
                hidden_size: 32,
                intermediate_size: 64,
                num_hidden_layers: 2,
                num_attention_heads: 4,
                num_channels: 3,
                image_size,
                patch_size: 14,
                hidden_act: ClipActivation::QuickGelu,
                layer_norm_eps: 1e-5,
            },
            projector: ProjectorType::MlpGelu(2),
            projector_bias: true,
            select_layer: -2,
            select_feature: SelectFeature::Patch,
            image_token_id: 259,
            image_aspect_ratio: AspectRatio::Pad,
            mm_use_im_start_end: false,
            layout: CheckpointLayout::LlavaHf,
            vision_tower_dir: None,
        }
    }

    /// Read `<dir>/config.json` in either layout. For the original layout the vision config comes
    /// from the CLIP directory named by `mm_vision_tower` (absolute, or relative to `dir`), or from
    /// a `vision_config` entry when the tower is embedded.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let v = read_json(&path)?;
        let cerr = |m: String| MllmError::Config { path: path.clone(), message: m };
        if let Some(tc) = v.get("text_config") {
            let text: LlamaConfig = field(&path, tc, "text_config")?;
            let vision: ClipVisionConfig =
                field(&path, v.get("vision_config").ok_or_else(|| cerr("missing `vision_config`".into()))?, "vision_config")?;
            let strategy = v.get("vision_feature_select_strategy").and_then(|s| s.as_str()).unwrap_or("default");
            let select_feature = SelectFeature::parse(strategy)
                .ok_or_else(|| cerr(format!("unknown vision_feature_select_strategy `{strategy}`")))?;
            let select_layer = match v.get("vision_feature_layer") {
                None => -2,
                Some(x) => x.as_i64().ok_or_else(|| cerr("vision_feature_layer must be an integer (multi-layer selection is not supported)".into()))?,
            };
            let act = v.get("projector_hidden_act").and_then(|s| s.as_str()).unwrap_or("gelu");
            if act != "gelu" {
                return Err(cerr(format!("unsupported projector_hidden_act `{act}`")));
            }
            let image_token_id = v
                .get("image_token_index")
                .or_else(|| v.get("image_token_id"))
                .and_then(|x| x.as_i64())
                .unwrap_or(32000);
            let mut text = text;
            // transformers ties the output embedding when either level says so.
            if v.get("tie_word_embeddings").and_then(|t| t.as_bool()) == Some(true) {
                text.tie_word_embeddings = true;
            }
            let cfg = Self {
                text,
                vision,
                projector: ProjectorType::MlpGelu(2),
                projector_bias: v.get("multimodal_projector_bias").and_then(|b| b.as_bool()).unwrap_or(true),
                select_layer,
                select_feature,
                image_token_id,
                image_aspect_ratio: AspectRatio::Pad,
                mm_use_im_start_end: false,
                layout: CheckpointLayout::LlavaHf,
                vision_tower_dir: None,
            };
            cfg.validate(&path)?;
            return Ok(cfg);
        }
        // Original LLaVA-1.5 layout: a LlamaConfig with mm_* fields.
        let text: LlamaConfig = field(&path, &v, "config")?;
        let s = |k: &str| v.get(k).and_then(|x| x.as_str());
        let projector_name = s("mm_projector_type").unwrap_or("linear");
        let projector =
            ProjectorType::parse(projector_name).ok_or_else(|| cerr(format!("unknown mm_projector_type `{projector_name}`")))?;
        let feat = s("mm_vision_select_feature").unwrap_or("patch");
        let select_feature = SelectFeature::parse(feat).ok_or_else(|| cerr(format!("unknown mm_vision_select_feature `{feat}`")))?;
        let select_layer = v.get("mm_vision_select_layer").and_then(|x| x.as_i64()).unwrap_or(-2);
        let image_aspect_ratio = match s("image_aspect_ratio").unwrap_or("square") {
            "pad" => AspectRatio::Pad,
            "square" | "resize" => AspectRatio::Square,
            other => return Err(cerr(format!("unsupported image_aspect_ratio `{other}`"))),
        };
        let mut vision_tower_dir = None;
        let vision: ClipVisionConfig = if let Some(vc) = v.get("vision_config") {
            field(&path, vc, "vision_config")?
        } else {
            let name = s("mm_vision_tower").ok_or_else(|| cerr("missing `mm_vision_tower` (and no `vision_config`)".into()))?;
            let p = PathBuf::from(name);
            let p = if p.is_absolute() { p } else { dir.join(p) };
            let cpath = p.join("config.json");
            if !cpath.exists() {
                return Err(cerr(format!("mm_vision_tower `{name}`: {} does not exist", cpath.display())));
            }
            let cv = read_json(&cpath)?;
            let vc = cv.get("vision_config").unwrap_or(&cv);
            vision_tower_dir = Some(p);
            let vision: ClipVisionConfig = field(&cpath, vc, "vision_config")?;
            vision.validate(&cpath, if cv.get("vision_config").is_some() { "vision_config." } else { "" })?;
            vision
        };
        let cfg = Self {
            text,
            vision,
            projector,
            projector_bias: true,
            select_layer,
            select_feature,
            image_token_id: v.get("image_token_index").and_then(|x| x.as_i64()).unwrap_or(ORIGINAL_IMAGE_TOKEN_INDEX),
            image_aspect_ratio,
            mm_use_im_start_end: v.get("mm_use_im_start_end").and_then(|b| b.as_bool()).unwrap_or(false),
            layout: CheckpointLayout::Original,
            vision_tower_dir,
        };
        cfg.validate(&path)?;
        Ok(cfg)
    }
}
