//! The CLIP text encoder: AMP's "noun chunk expert" (paper §3.1.3, step 3: every noun chunk is
//! encoded with the CLIP text encoder and compared by cosine similarity, Eq. 1–2). It is also the
//! most likely sentence expert (the paper names no other text encoder).
//!
//! [`ClipTextModel`] follows Hugging Face `CLIPTextModel` / `CLIPTextModelWithProjection` (keys
//! `text_model.embeddings.{token_embedding,position_embedding}.weight`,
//! `text_model.encoder.layers.N.*`, `text_model.final_layer_norm.*`, `text_projection.weight`) and
//! reuses the shared [`crate::clip::ClipEncoder`]. A full `CLIPModel` checkpoint (with
//! `vision_model.*`, `visual_projection.weight`, `logit_scale` and a nested `text_config`) loads
//! too; its vision half is skipped.
//!
//! The pooled output is the final-LayerNorm state at the EOS token, with HF's rule: when the
//! config's `eos_token_id` is 2 (legacy configs) the position is the argmax of the input ids,
//! otherwise the first position whose id is `eos_token_id` (0 when there is none).
use std::path::Path;

use serde::Deserialize;
use tch::{nn, Device, Kind, Tensor};

use crate::bert::read_json;
use crate::checkpoint::{Checkpoint, VarBuilder, Weights};
use crate::config::{Check, MAX_LAYERS, MAX_POSITIONS, MAX_VOCAB, MAX_WIDTH};
use crate::clip::{ClipActivation, ClipEncoder, ClipEncoderConfig, LayerNorm};
use crate::error::{MllmError, Result};
use crate::linear::Linear;
use crate::text_encoder::{TextBatch, TextEncoder, TextModel};

fn d_vocab() -> i64 {
    49408
}
fn d_hidden() -> i64 {
    512
}
fn d_intermediate() -> i64 {
    2048
}
fn d_layers() -> usize {
    12
}
fn d_heads() -> i64 {
    8
}
fn d_max_pos() -> i64 {
    77
}
fn d_eps() -> f64 {
    1e-5
}
fn d_eos() -> i64 {
    2
}
fn d_pad() -> i64 {
    1
}

/// `CLIPTextConfig` (the fields the encoder uses; defaults as in transformers).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ClipTextConfig {
    #[serde(default = "d_vocab")]
    pub vocab_size: i64,
    #[serde(default = "d_hidden")]
    pub hidden_size: i64,
    #[serde(default = "d_intermediate")]
    pub intermediate_size: i64,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: i64,
    #[serde(default = "d_max_pos")]
    pub max_position_embeddings: i64,
    #[serde(default)]
    pub hidden_act: ClipActivation,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    /// `2` selects HF's legacy pooling rule (argmax of the input ids).
    #[serde(default = "d_eos")]
    pub eos_token_id: i64,
    #[serde(default = "d_pad")]
    pub pad_token_id: i64,
    /// Width of `text_projection` (used only when the checkpoint has one).
    #[serde(default)]
    pub projection_dim: Option<i64>,
}

impl ClipTextConfig {
    /// Reads a `CLIPTextConfig` `config.json`, or the `text_config` of a `CLIPModel` one (whose
    /// top-level `projection_dim` then applies).
    pub fn from_file(path: &Path) -> Result<Self> {
        let v: serde_json::Value = read_json(path)?;
        let json_err = |source| MllmError::Json { path: path.to_path_buf(), source };
        let mut c: Self = match v.get("text_config") {
            Some(t) => {
                let mut c: Self = serde_json::from_value(t.clone()).map_err(json_err)?;
                if let Some(p) = v.get("projection_dim").and_then(|p| p.as_i64()) {
                    c.projection_dim = Some(p);
                }
                c
            }
            None => serde_json::from_value(v.clone()).map_err(json_err)?,
        };
        let prefix = if v.get("text_config").is_some() { "text_config." } else { "" };
        let check = Check { path, prefix };
        check.size("vocab_size", c.vocab_size, MAX_VOCAB)?;
        check.size("hidden_size", c.hidden_size, MAX_WIDTH)?;
        check.size("intermediate_size", c.intermediate_size, MAX_WIDTH * 8)?;
        check.size("num_hidden_layers", c.num_hidden_layers as i64, MAX_LAYERS)?;
        check.size("num_attention_heads", c.num_attention_heads, MAX_WIDTH)?;
        check.divides("num_attention_heads", c.num_attention_heads, "hidden_size", c.hidden_size)?;
        check.size("max_position_embeddings", c.max_position_embeddings, MAX_POSITIONS)?;
        check.eps("layer_norm_eps", c.layer_norm_eps)?;
        if let Some(p) = c.projection_dim.filter(|&p| p != 0) {
            check.size("projection_dim", p, MAX_WIDTH)?;
        }
        c.projection_dim = c.projection_dim.filter(|&p| p > 0);
        Ok(c)
    }

    fn encoder(&self) -> ClipEncoderConfig {
        ClipEncoderConfig {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_attention_heads: self.num_attention_heads,
            num_hidden_layers: self.num_hidden_layers,
            layer_norm_eps: self.layer_norm_eps,
            hidden_act: self.hidden_act,
        }
    }

    /// Position of the pooled (EOS) token in one unpadded id sequence, by HF's rule.
    pub fn eos_position(&self, ids: &[i64]) -> usize {
        if self.eos_token_id == 2 {
            // torch.argmax: the first maximal value.
            let max = ids.iter().copied().max().unwrap_or(0);
            ids.iter().position(|&i| i == max).unwrap_or(0)
        } else {
            ids.iter().position(|&i| i == self.eos_token_id).unwrap_or(0)
        }
    }
}

/// Outputs of [`ClipTextModel::forward`].
#[derive(Debug)]
pub struct ClipTextOutput {
    /// `[B, T, H]`, after `final_layer_norm`.
    pub last_hidden_state: Tensor,
    /// `[B, H]`: the state at each sequence's EOS token.
    pub pooler_output: Tensor,
    /// `[B, projection_dim]`: `text_projection(pooler_output)` when the checkpoint has one.
    pub text_embeds: Option<Tensor>,
}

/// Hugging Face `CLIPTextModel` (+ optional `text_projection`).
#[derive(Debug)]
pub struct ClipTextModel {
    token_embedding: Tensor,
    position_embedding: Tensor,
    encoder: ClipEncoder,
    final_layer_norm: LayerNorm,
    text_projection: Option<Linear>,
    config: ClipTextConfig,
    _vs: nn::VarStore,
}

// SAFETY: as for `BertModel` (bert.rs): the tensors (and the var store) are private and frozen
// at load, and the `&self` methods only read them to build new tensors, which libtorch supports
// from several threads at once.
unsafe impl Sync for ClipTextModel {}

impl ClipTextModel {
    /// Loads `weights` (safetensors, HF keys). `text_projection.weight` is loaded when present
    /// (`CLIPTextModelWithProjection`, `CLIPModel`); `vision_model.*`, `visual_projection.*`,
    /// `logit_scale` and `position_ids` buffers are skipped; any other extra tensor is an error.
    pub fn load(weights: &Path, config: ClipTextConfig, device: Device) -> Result<Self> {
        let rename = |k: &str| {
            let unused = k.starts_with("vision_model.")
                || k.starts_with("visual_projection.")
                || k == "logit_scale"
                || k.ends_with("position_ids");
            (!unused).then(|| k.to_string())
        };
        let ckpt = Checkpoint::open(weights, &[weights.to_path_buf()], &rename)?;
        let mut vs = nn::VarStore::new(device);
        let w = Weights::checkpoint(ckpt, Kind::Float);
        let root = VarBuilder::new(&vs, &w);
        let tm = &root / "text_model";
        let (h, init) = (config.hidden_size, nn::Init::Const(0.));
        let emb = &tm / "embeddings";
        let token_embedding = (&emb / "token_embedding").var("weight", &[config.vocab_size, h], init);
        let position_embedding = (&emb / "position_embedding").var("weight", &[config.max_position_embeddings, h], init);
        let encoder = ClipEncoder::new(&(&tm / "encoder"), &config.encoder());
        let final_layer_norm = LayerNorm::new(&(&tm / "final_layer_norm"), h, config.layer_norm_eps);
        let text_projection = root
            .contains("text_projection.weight")
            .then(|| Linear::new(&(&root / "text_projection"), h, config.projection_dim.unwrap_or(h), false));
        w.finish()?;
        vs.freeze();
        Ok(Self { token_embedding, position_embedding, encoder, final_layer_norm, text_projection, config, _vs: vs })
    }

    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// Whether `text_embeds` are produced.
    pub fn has_projection(&self) -> bool {
        self.text_projection.is_some()
    }

    /// `[B, T, H]` after the final LayerNorm, with the causal mask. Right padding never changes
    /// the states at or before a sequence's EOS token.
    pub fn hidden_states(&self, input_ids: &Tensor) -> Tensor {
        let t = input_ids.size()[1];
        let x = Tensor::embedding(&self.token_embedding, input_ids, -1, false, false)
            + self.position_embedding.narrow(0, 0, t).unsqueeze(0);
        let h = self.encoder.forward_causal(&x);
        self.final_layer_norm.forward(&h)
    }

    /// States at `positions` ([B], int64) of `hidden` ([B, T, H]), and their projection.
    fn pool(&self, hidden: &Tensor, positions: &Tensor) -> (Tensor, Option<Tensor>) {
        let b = hidden.size()[0];
        let rows = Tensor::arange(b, (Kind::Int64, hidden.device()));
        let pooled = hidden.index(&[Some(rows), Some(positions.shallow_clone())]);
        let proj = self.text_projection.as_ref().map(|p| p.forward(&pooled));
        (pooled, proj)
    }

    /// The forward pass of HF `CLIPTextModelWithProjection` on `input_ids` ([B, T], int64),
    /// pooling by HF's rule applied to the ids as given (padding included).
    pub fn forward(&self, input_ids: &Tensor) -> ClipTextOutput {
        let last_hidden_state = self.hidden_states(input_ids);
        let positions = if self.config.eos_token_id == 2 {
            input_ids.argmax(-1, false)
        } else {
            input_ids.eq(self.config.eos_token_id).to_kind(Kind::Int).argmax(-1, false)
        };
        let (pooler_output, text_embeds) = self.pool(&last_hidden_state, &positions);
        ClipTextOutput { last_hidden_state, pooler_output, text_embeds }
    }
}

impl TextModel for ClipTextModel {
    /// `projection_dim` with a projection, else `hidden_size`.
    fn dim(&self) -> i64 {
        match &self.text_projection {
            Some(p) => p.dims().1,
            None => self.config.hidden_size,
        }
    }
    fn pad_id(&self) -> i64 {
        self.config.pad_token_id
    }
    /// `text_embeds` when the checkpoint has a projection, else the pooled output; right padding
    /// is harmless (the causal mask keeps it out of the EOS state).
    fn embed_batch(&self, b: &TextBatch) -> Tensor {
        let pos: Vec<i64> = b
            .encodings
            .iter()
            .map(|e| self.config.eos_position(&e.get_ids().iter().map(|&i| i as i64).collect::<Vec<_>>()) as i64)
            .collect();
        let hidden = self.hidden_states(&b.ids);
        let (pooled, proj) = self.pool(&hidden, &Tensor::from_slice(&pos).to_device(hidden.device()));
        proj.unwrap_or(pooled)
    }
}

/// CLIP text features for raw strings: tokenizer + [`ClipTextModel`], batched by length.
pub type ClipTextEncoder = TextEncoder<ClipTextModel>;

impl TextEncoder<ClipTextModel> {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from `dir`. Texts are
    /// truncated to `max_position_embeddings` tokens (77), `<|startoftext|>`/`<|endoftext|>`
    /// included (the tokenizer's post-processor adds them). Features are unnormalised, as HF's
    /// `get_text_features` (cosine similarities are the same either way).
    pub fn load(dir: impl AsRef<Path>, device: Device) -> Result<Self> {
        let dir = dir.as_ref();
        let config = ClipTextConfig::from_file(&dir.join("config.json"))?;
        let tokenizer_path = dir.join("tokenizer.json");
        std::fs::metadata(&tokenizer_path).map_err(|source| MllmError::Io { path: tokenizer_path.clone(), source })?;
        let max_length = config.max_position_embeddings as usize;
        let model = ClipTextModel::load(&dir.join("model.safetensors"), config, device)?;
        TextEncoder::new(model, &tokenizer_path, |_| max_length, false, false, device)
    }
}
