//! The CLIP text encoder: AMP's "noun chunk expert" (paper §3.1.3, step 3: every noun chunk is
//! encoded with the CLIP text encoder and compared by cosine similarity, Eq. 1–2). It is also the
//! inferred sentence expert (paper §3.1.3; docs/paper-notes.md §3).
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
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tch::{nn, Device, Kind, Tensor};
use tokenizers::Tokenizer;

use crate::bert::{
    configure_tokenizer, embed_dedup, l2_normalize, length_sorted_batches, load_tokenizer, read_json, tensor_rows,
    unsort_rows, Weights,
};
use crate::clip::{ClipActivation, ClipEncoder, ClipEncoderConfig, LayerNorm};
use crate::error::{MllmError, Result};
use crate::linear::Linear;

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
            None => serde_json::from_value(v).map_err(json_err)?,
        };
        if c.num_attention_heads <= 0 || c.hidden_size % c.num_attention_heads != 0 {
            return Err(MllmError::Config {
                path: path.to_path_buf(),
                message: format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    c.hidden_size, c.num_attention_heads
                ),
            });
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

impl ClipTextModel {
    /// Loads `weights` (safetensors, HF keys). `text_projection.weight` is loaded when present
    /// (`CLIPTextModelWithProjection`, `CLIPModel`); `vision_model.*`, `visual_projection.*`,
    /// `logit_scale` and `position_ids` buffers are skipped; any other extra tensor is an error.
    pub fn load(weights: &Path, config: ClipTextConfig, device: Device) -> Result<Self> {
        let mut w = Weights::load(weights, device)?;
        w.ignore(|k| {
            k.starts_with("vision_model.")
                || k.starts_with("visual_projection.")
                || k == "logit_scale"
                || k.ends_with("position_ids")
        });
        let mut vs = nn::VarStore::new(device);
        let root = vs.root();
        let tm = &root / "text_model";
        let h = config.hidden_size;
        let emb = &tm / "embeddings";
        let token_embedding = (&emb / "token_embedding").zeros_no_train("weight", &[config.vocab_size, h]);
        let position_embedding =
            (&emb / "position_embedding").zeros_no_train("weight", &[config.max_position_embeddings, h]);
        let encoder = ClipEncoder::new(&(&tm / "encoder"), &config.encoder());
        let final_layer_norm = LayerNorm::new(&(&tm / "final_layer_norm"), h, config.layer_norm_eps);
        let text_projection = if w.contains("text_projection.weight") {
            let p = config.projection_dim.unwrap_or(h);
            Some(Linear::new(&(&root / "text_projection"), h, p, false))
        } else {
            None
        };
        // Every variable must come from the checkpoint, with its shape.
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        tch::no_grad(|| -> Result<()> {
            for (name, mut var) in vars {
                let t = w.take(&name, &var.size())?;
                var.copy_(&t);
            }
            Ok(())
        })?;
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
        let causal = Tensor::full([t, t], f64::NEG_INFINITY, (Kind::Float, x.device())).triu(1);
        let h = self.encoder.forward(&x, Some(&causal.view([1, 1, t, t])));
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

/// CLIP text features for raw strings: tokenizer + [`ClipTextModel`], batched by length.
pub struct ClipTextEncoder {
    model: ClipTextModel,
    tokenizer: Tokenizer,
    tokenizer_path: PathBuf,
    max_length: usize,
    batch_size: usize,
    normalize: bool,
    device: Device,
}

impl std::fmt::Debug for ClipTextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTextEncoder")
            .field("config", &self.model.config)
            .field("projection", &self.model.has_projection())
            .field("max_length", &self.max_length)
            .field("batch_size", &self.batch_size)
            .field("normalize", &self.normalize)
            .field("device", &self.device)
            .finish()
    }
}

impl ClipTextEncoder {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from `dir`. Texts are
    /// truncated to `max_position_embeddings` tokens (77), `<|startoftext|>`/`<|endoftext|>`
    /// included (the tokenizer's post-processor adds them).
    pub fn load(dir: impl AsRef<Path>, device: Device) -> Result<Self> {
        let dir = dir.as_ref();
        let config = ClipTextConfig::from_file(&dir.join("config.json"))?;
        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer = load_tokenizer(&tokenizer_path)?;
        let max_length = config.max_position_embeddings as usize;
        configure_tokenizer(&mut tokenizer, &tokenizer_path, max_length)?;
        let model = ClipTextModel::load(&dir.join("model.safetensors"), config, device)?;
        Ok(Self {
            model,
            tokenizer,
            tokenizer_path,
            max_length,
            batch_size: crate::bert::DEFAULT_BATCH_SIZE,
            normalize: false,
            device,
        })
    }

    /// Texts per forward pass (after length sorting). Default 128, the fastest on CPU in
    /// `crates/mllm/BENCHMARKS-text.md`.
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// L2-normalise the features (off by default: HF's `get_text_features` is unnormalised;
    /// cosine similarities are the same either way).
    pub fn with_normalize(mut self, normalize: bool) -> Self {
        self.normalize = normalize;
        self
    }

    pub fn model(&self) -> &ClipTextModel {
        &self.model
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Feature width: `projection_dim` with a projection, else `hidden_size`.
    pub fn dim(&self) -> i64 {
        match &self.model.text_projection {
            Some(p) => p.dims().1,
            None => self.model.config.hidden_size,
        }
    }

    /// Token ids of each text (with `<|startoftext|>`/`<|endoftext|>`, truncated).
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        Ok(self.encode(texts)?.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    fn encode(&self, texts: &[&str]) -> Result<Vec<tokenizers::Encoding>> {
        self.tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| MllmError::Tokenizer { path: self.tokenizer_path.clone(), message: e.to_string() })
    }

    /// Text features [n, dim] in the order of `texts`: `text_embeds` when the checkpoint has a
    /// projection, else the pooled output. Repeated texts are encoded once; texts are
    /// length-sorted into batches, each right-padded to its longest text (the causal mask keeps
    /// padding out of the EOS state).
    pub fn embed(&self, texts: &[&str]) -> Result<Tensor> {
        embed_dedup(texts, self.device, |u| self.embed_unique(u))
    }

    fn embed_unique(&self, texts: &[&str]) -> Result<Tensor> {
        if texts.is_empty() {
            return Ok(Tensor::zeros([0, self.dim()], (Kind::Float, self.device)));
        }
        let ids: Vec<Vec<i64>> =
            self.encode(texts)?.iter().map(|e| e.get_ids().iter().map(|&i| i as i64).collect()).collect();
        if let Some((i, _)) = ids.iter().enumerate().find(|(_, s)| s.is_empty()) {
            return Err(MllmError::Input(format!("text {i} ({:?}) tokenizes to no tokens", texts[i])));
        }
        let lens: Vec<usize> = ids.iter().map(Vec::len).collect();
        let batches = length_sorted_batches(&lens, self.batch_size);
        let pad = self.model.config.pad_token_id;
        let rows = tch::no_grad(|| {
            batches
                .iter()
                .map(|batch| {
                    let t = batch.iter().map(|&i| lens[i]).max().unwrap_or(0);
                    let mut flat = vec![pad; batch.len() * t];
                    let mut pos = Vec::with_capacity(batch.len());
                    for (r, &i) in batch.iter().enumerate() {
                        flat[r * t..r * t + lens[i]].copy_from_slice(&ids[i]);
                        pos.push(self.model.config.eos_position(&ids[i]) as i64);
                    }
                    let x = Tensor::from_slice(&flat).view([batch.len() as i64, t as i64]).to_device(self.device);
                    let pos = Tensor::from_slice(&pos).to_device(self.device);
                    let hidden = self.model.hidden_states(&x);
                    let (pooled, proj) = self.model.pool(&hidden, &pos);
                    let f = proj.unwrap_or(pooled);
                    if self.normalize {
                        l2_normalize(&f)
                    } else {
                        f
                    }
                })
                .collect::<Vec<_>>()
        });
        Ok(unsort_rows(rows, &batches, self.device))
    }

    /// [`embed`](Self::embed) copied to host memory, one `Vec<f32>` per text.
    pub fn embed_vecs(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        tensor_rows(&self.embed(texts)?)
    }
}
